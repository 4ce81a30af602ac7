# SPDX-License-Identifier: MIT
"""The runner shared by tests/e2e_drain.py, e2e_hparams.py and e2e_tool.py:
command line, one fresh environment per test, PASS/FAIL lines and the
exit status."""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback


def main(namespace, make_env, required):
    """Run every test_* function of @namespace (a module's globals()),
    each with make_env(short name), closed afterwards.  The command line
    takes --OPT PATH for each name in @required, and --only SUBSTRING;
    the parsed arguments become the module's ARGS.  Returns 1 if any
    test failed, else 0."""
    ap = argparse.ArgumentParser()
    for opt in required:
        ap.add_argument("--" + opt, required=True)
    ap.add_argument("--only")
    args = namespace["ARGS"] = ap.parse_args()
    tests = [(n, f) for n, f in sorted(namespace.items())
             if n.startswith("test_") and callable(f) and
             (not args.only or args.only in n)]
    passed = failed = 0
    for name, fn in tests:
        env = make_env(name[5:20])
        t0 = time.time()
        try:
            fn(env)
            passed += 1
            print("PASS %s (%.2fs)" % (name, time.time() - t0), flush=True)
        except Exception:
            failed += 1
            print("FAIL %s" % name, flush=True)
            traceback.print_exc()
        finally:
            env.close()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


class BaseEnv:
    """A private MRING_DIR (shm/) and output directory for one test, and
    the processes it started, killed and reaped by close()."""

    def __init__(self, name, prefix="mring-e2e"):
        self.dir = tempfile.mkdtemp(prefix="%s-%s-" % (prefix, name))
        self.shm = os.path.join(self.dir, "shm")
        os.mkdir(self.shm)
        self.env = dict(os.environ, MRING_DIR=self.shm)
        self.procs = []

    def path(self, *p):
        return os.path.join(self.dir, *p)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            for f in (p.stdin, p.stdout, p.stderr):
                if f:
                    f.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class Script:
    """tests/prod_script.c: one exact sequence of records, command by
    command; each call returns once the producer has done it."""

    def __init__(self, path, env, seg, mode="drop", cap=1 << 12, max_metrics=0, rank=0):
        self.p = subprocess.Popen([path, seg, mode, str(cap), str(max_metrics)],
                                  env=dict(env.env, PROD_RANK=str(rank)),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.p.stdout.readline().strip() == "ready"

    def do(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()
        got = self.p.stdout.readline().strip()
        assert got.startswith("ok"), (line[:200], got)
        return int(got.split()[1]) if got != "ok" else None

    def metric(self, name, flags="step"):
        return self.do("metric %s %s" % (name, flags))

    def hparams(self, text):
        self.do("hparams " + text)

    def close(self):
        self.p.stdin.write("close\n")
        self.p.stdin.close()
        assert self.p.wait() == 0

    def crash(self):
        self.p.stdin.write("crash\n")
        self.p.stdin.close()
        assert self.p.wait() == -signal.SIGKILL


# Check-style tests (e2e_top.py, e2e_watch.py): many named checks per test.
PASSED = []
FAILED = []


def check(name, cond, detail=""):
    """Record and print one named check; returns @cond."""
    if cond:
        PASSED.append(name)
        print("ok   %s" % name)
    else:
        FAILED.append(name)
        print("FAIL %s %s" % (name, detail))
    sys.stdout.flush()
    return cond


def checks_summary():
    """The closing line of a check-style test; its exit status."""
    print("%d passed, %d failed" % (len(PASSED), len(FAILED)))
    return 1 if FAILED else 0
