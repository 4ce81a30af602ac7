#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Every link in README.md and docs/*.md resolves inside the repository,
and no document points at a file outside it (an absolute path, or a
relative one that climbs out of the tree).  External URLs are allowed.
"""
import glob
import os
import re
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
# paths in backticks that look like files of ours or of someone's machine
PATHISH = re.compile(r"`(/(?:work|home|root|tmp/[^`]*shared)[^`]*|\.\./[^`]*)`")


def main():
    bad = []
    docs = [os.path.join(ROOT, "README.md")] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
    for doc in docs:
        text = open(doc).read()
        rel = os.path.relpath(doc, ROOT)
        for m in LINK.finditer(text):
            target = m.group(1).split("#")[0]
            if not target or re.match(r"[a-z]+://|mailto:", target):
                continue
            path = os.path.normpath(os.path.join(os.path.dirname(doc), target))
            if not path.startswith(ROOT + os.sep):
                bad.append("%s: link %s leaves the repository" % (rel, m.group(1)))
            elif not os.path.exists(path):
                bad.append("%s: link %s: no such file" % (rel, m.group(1)))
        for m in PATHISH.finditer(text):
            bad.append("%s: %s points outside the repository" % (rel, m.group(1)))
    for b in bad:
        print(b)
    print("%d documents, %s" % (len(docs), "all links resolve" if not bad else "%d bad" % len(bad)))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
