#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""The README's snippets work as a newcomer pastes them, twice in a row:
the C block of "Quick start" is compiled (with stand-ins for
train_batch() and current_lr()) against the library and run; the Python
block of "## Python" is run with the binding when it is importable.

Usage: readme_check.py --include DIR --lib PATH(libmring.a) [--python PY] [--cflags F]
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def block(text, after, lang):
    i = text.index(after)
    m = re.compile(r"```%s\n(.*?)```" % lang, re.S).search(text, i)
    assert m, "no %s block after %r" % (lang, after)
    return m.group(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--include", required=True)
    ap.add_argument("--lib", required=True)
    ap.add_argument("--python")
    ap.add_argument("--cflags", default="", help="e.g. -fsanitize=address (as the library)")
    a = ap.parse_args()
    text = open(os.path.join(HERE, "..", "README.md")).read()
    c = block(text, "## Quick start", "c")
    includes = "".join(l + "\n" for l in c.splitlines() if l.startswith("#include"))
    body = "".join(l + "\n" for l in c.splitlines() if not l.startswith("#include"))
    prog = (includes + "#include <stdint.h>\n"
            "static double train_batch(void) { static double v; return v += 0.5; }\n"
            "static double current_lr(void) { return 1e-3; }\n"
            "int main(void)\n{\n" + body + "return 0;\n}\n")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "app.c")
        with open(src, "w") as f:
            f.write(prog)
        exe = os.path.join(tmp, "app")
        r = subprocess.run(["cc", "-std=c11", "-Wall", "-Werror"] + a.cflags.split() +
                           ["-I", a.include, src, a.lib, "-lpthread", "-lm", "-o", exe],
                           capture_output=True, text=True)
        assert r.returncode == 0, "the README's C block does not compile:\n" + r.stderr + prog
        env = dict(os.environ, MRING_DIR=tmp)
        for run in (1, 2):
            r = subprocess.run([exe], env=env, capture_output=True, text=True, timeout=60)
            assert r.returncode == 0, "C block, run %d: exit %d %s" % (run, r.returncode, r.stderr)
        assert os.path.exists(os.path.join(tmp, "my-run")), "no segment my-run"
        print("README C block: compiles, runs twice")
        if a.python:
            py = block(text, "## Python", "python")
            for run in (1, 2):
                r = subprocess.run([a.python, "-c", py], env=env, capture_output=True,
                                   text=True, timeout=60)
                if run == 1 and "No module named 'mring'" in r.stderr:
                    print("README Python block: skipped (mring not importable by %s)" % a.python)
                    break
                assert r.returncode == 0, "Python block, run %d:\n%s" % (run, r.stderr)
            else:
                print("README Python block: runs twice")
    return 0


if __name__ == "__main__":
    sys.exit(main())
