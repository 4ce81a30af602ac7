# SPDX-License-Identifier: MIT
"""csv_check.py FILE - read an mring metrics.csv with Python's csv module
and print it in a canonical form, for tests/test_sink_csv.c to compare
with expectations it computes itself.

Output: the header as a JSON list, then one JSON object per row with
sorted keys, empty cells left out.  Integer columns (epoch, step, rank,
mring_lost) are JSON integers; every other cell is read with float() and
printed as the 16 hex digits of its IEEE-754 bits, so the comparison is
exact (NaN, -0.0 and subnormals included).

It also checks the shape (exit 1, message on stderr): newline-terminated
LF lines, unique header cells in code-point order with epoch and step,
and exactly one cell per column in every row.

Run it with Debian's /usr/bin/python3: only the standard library is used.
"""
import csv
import json
import re
import struct
import sys

INT_COLS = ("epoch", "step", "rank", "mring_lost")
INT_RE = re.compile(r"[0-9]+\Z")


def fail(msg):
    sys.stderr.write("csv_check: %s\n" % msg)
    sys.exit(1)


def bits(cell):
    return "%016x" % struct.unpack("<Q", struct.pack("<d", float(cell)))[0]


def main():
    if len(sys.argv) != 2:
        fail("usage: csv_check.py FILE")
    with open(sys.argv[1], "rb") as f:
        raw = f.read()
    if not raw:
        fail("empty file")
    if not raw.endswith(b"\n"):
        fail("last line not terminated")
    if b"\r" in raw:
        fail("CR in file")
    with open(sys.argv[1], newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, strict=True))
    header, rows = rows[0], rows[1:]
    if len(set(header)) != len(header) or header != sorted(header):
        fail("header not unique and sorted: %r" % header)
    if "epoch" not in header or "step" not in header:
        fail("no epoch/step column")
    print(json.dumps(header))
    for n, row in enumerate(rows, 2):
        if len(row) != len(header):
            fail("line %d: %d cells for %d columns" % (n, len(row), len(header)))
        out = {}
        for key, cell in zip(header, row):
            if cell == "":
                continue
            if key in INT_COLS:
                if not INT_RE.match(cell):
                    fail("line %d: %s=%r is not an integer" % (n, key, cell))
                out[key] = int(cell)
            else:
                out[key] = bits(cell)
        for key in ("epoch", "step"):
            if key not in out:
                fail("line %d: no %s" % (n, key))
        print(json.dumps(out, sort_keys=True))


if __name__ == "__main__":
    main()
