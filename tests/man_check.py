#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""man_check.py BUILD_DIR - every exported function has a manual page.

Checks, against independent sources rather than the generator's own list:
  - each `mring_*` symbol libmring.so exports (nm -D) has BUILD/man/man3/NAME.3,
    and each of those pages has NAME, SYNOPSIS (with the function's own
    prototype), DESCRIPTION, RETURN VALUE and SEE ALSO;
  - each function of include/mring.h has a section in docs/api.md;
  - mring(3) lists every page; mring(1) has a section per `mring help` command;
  - groff renders every page without a warning (-ww).
"""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
failures = []


def fail(msg):
    failures.append(msg)
    print("FAIL", msg)


def exported(build):
    lib = os.path.realpath(os.path.join(build, "libmring.so"))   # the current one
    out = subprocess.run(["nm", "-D", "--defined-only", lib],
                         capture_output=True, text=True, check=True).stdout
    names = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "T":
            names.add(parts[2].split("@")[0])
    return sorted(n for n in names if n.startswith("mring_"))


def main():
    build = sys.argv[1]
    man3 = os.path.join(build, "man", "man3")
    man1 = os.path.join(build, "man", "man1", "mring.1")
    syms = exported(build)
    if len(syms) < 20:
        fail("only %d exported mring_ symbols: %s" % (len(syms), syms))
    header = open(os.path.join(ROOT, "include", "mring.h")).read()
    api = open(os.path.join(ROOT, "docs", "api.md")).read()
    overview = open(os.path.join(man3, "mring.3")).read()
    for s in syms:
        page = os.path.join(man3, s + ".3")
        if not os.path.exists(page):
            fail("%s: exported, but no page %s" % (s, page))
            continue
        text = open(page).read()
        for sec in ("NAME", "SYNOPSIS", "DESCRIPTION", "RETURN VALUE", "SEE ALSO"):
            if not re.search(r"^\.SH %s$" % sec, text, re.M):
                fail("%s.3: no %s section" % (s, sec))
        if not re.search(r"\b%s\(" % s, text.split(".SH DESCRIPTION")[0]):
            fail("%s.3: the synopsis lacks its prototype" % s)
        if not re.search(r"^\.BR %s \(3\)$" % s, overview, re.M):
            fail("mring.3 does not list %s" % s)
        if not re.search(r"\b%s\b" % s, header):
            fail("%s: exported but not in mring.h" % s)
        if not re.search(r"^### .*`%s`" % s, api, re.M):
            fail("%s: no section in docs/api.md" % s)
    tool = os.path.join(build, "mring")
    cmds = re.findall(r"^  (\w+) ", subprocess.run([tool, "help"], capture_output=True,
                                                   text=True).stdout, re.M)
    page1 = open(man1).read()
    for c in cmds:
        if not re.search(r"^\.SS %s$" % c, page1, re.M):
            fail("mring.1: no section for `mring %s`" % c)
    if "serve" not in cmds or "drain" not in cmds:
        fail("mring help lists no drain/serve: %s" % cmds)
    pages = [man1] + [os.path.join(man3, f) for f in sorted(os.listdir(man3))]
    for p in pages:
        r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-z", p],
                           capture_output=True, text=True)
        if r.returncode != 0 or r.stderr.strip():
            fail("%s: groff: %s" % (p, r.stderr.strip()[:300]))
    print("%d exported functions, %d pages checked, %d problems"
          % (len(syms), len(pages), len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
