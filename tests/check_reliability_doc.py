#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Keep docs/reliability.md section 8 (the table of faults tried) honest:

  - every test a row names exists (Test(suite, name) in a .c file, a
    top-level def name( in a .py file);
  - every test of the fault suites (the C files below) has a row, so a
    new fault test cannot go unreported and a removed one cannot stay
    reported.

Run by ctest (reliability_doc)."""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FAULT_SUITES = ["test_crash.c", "test_stress.c", "test_corrupt.c",
                "test_security.c", "test_testpoints.c", "test_threads.c"]


def table_refs(doc):
    """{(file, test)} named in the rows of section 8."""
    sec = doc.split("\n## 8.", 1)[1].split("\n## ", 1)[0]
    refs = set()
    for line in sec.splitlines():
        if not line.startswith("| "):
            continue
        cell = line.split("|")[2]
        current = None
        for m in re.finditer(r"`(tests/[\w/.]+)?::(\w+)`", cell):
            current = m.group(1) or current
            if current is None:
                raise SystemExit("row names ::%s without a file: %s" % (m.group(2), line))
            refs.add((current, m.group(2)))
    return refs


def tests_in(path):
    with open(os.path.join(ROOT, path)) as f:
        src = f.read()
    if path.endswith(".c"):
        return set(re.findall(r"^(?:Parameterized)?Test\(\s*\w+\s*,\s*(\w+)", src, re.M))
    return set(re.findall(r"^def (\w+)\(", src, re.M))


def main():
    with open(os.path.join(ROOT, "docs", "reliability.md")) as f:
        refs = table_refs(f.read())
    bad = []
    for path, name in sorted(refs):
        if not os.path.exists(os.path.join(ROOT, path)):
            bad.append("%s: no such file" % path)
        elif name not in tests_in(path):
            bad.append("%s::%s: no such test" % (path, name))
    for suite in FAULT_SUITES:
        path = "tests/" + suite
        for name in sorted(tests_in(path)):
            if (path, name) not in refs:
                bad.append("%s::%s: a fault test without a row in reliability.md §8"
                           % (path, name))
    for b in bad:
        print("FAIL", b)
    print("%d rows' tests checked, %d problems" % (len(refs), len(bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
