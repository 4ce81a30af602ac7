#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""End-to-end test of `mring top`, checked the way a person would see it.

`mring top` runs inside a detached tmux session of fixed size (a private
tmux server, `tmux -L mring-test-<pid>`) against live producers
(tests/prod_canary.c) in a private MRING_DIR; the test types keys with
send-keys and reads the screen with capture-pane.  Every wait is a bounded
poll on a condition, never a fixed sleep.

Usage: e2e_top.py --mring PATH --producer PATH
Standard library only; needs tmux.
"""
import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

import e2e_common  # tests/, next to this file

ARGS = None
# SGR with reverse video (7), then any further SGR sequences (a color)
REV = r"\x1b\[(?:\d+;)*7(?:;\d+)*m(?:\x1b\[[0-9;]*m)*"
COLS, ROWS = 160, 40
check = e2e_common.check


class Top:
    """A private MRING_DIR, producers, and `mring top` in tmux."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mring-e2e-top-")
        self.shm = os.path.join(self.dir, "shm")
        os.mkdir(self.shm)
        self.env = dict(os.environ, MRING_DIR=self.shm)
        self.sock = "mring-test-%d" % os.getpid()
        self.procs = {}

    def producer(self, seg, rank=0, step_us=2000, epoch_steps=50):
        p = subprocess.Popen([ARGS.producer, seg, "100000000", str(epoch_steps),
                              str(step_us), str(rank)],
                             env=self.env, stdout=subprocess.PIPE, text=True)
        line = p.stdout.readline().strip()
        assert line == "ready", "producer said %r" % line
        self.procs[seg] = p
        return p

    def tmux(self, *args, check_rc=True):
        r = subprocess.run(["tmux", "-L", self.sock] + list(args),
                           capture_output=True, text=True)
        if check_rc and r.returncode:
            raise RuntimeError("tmux %s: %s" % (" ".join(args), r.stderr.strip()))
        return r.stdout

    def start_top(self, *segargs, cols=None, rows=None):
        cmd = "env MRING_DIR=%s LANG=C.UTF-8 LC_ALL=C.UTF-8 %s top %s; echo TOP-EXIT=$?; " \
              "sleep 120" % (shlex.quote(self.shm), shlex.quote(ARGS.mring),
                             " ".join(shlex.quote(a) for a in segargs))
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", "top",
                  "-x", str(cols or COLS), "-y", str(rows or ROWS), cmd)
        # a fixed size even if a client ever attaches
        self.tmux("set-option", "-t", "top", "window-size", "manual", check_rc=False)

    def screen(self, escapes=False):
        a = ["capture-pane", "-p", "-t", "top"]
        if escapes:
            a.insert(2, "-e")
        return self.tmux(*a)

    def keys(self, *keys):
        self.tmux("send-keys", "-t", "top", *keys)

    def keys_literal(self, text):
        self.tmux("send-keys", "-t", "top", "-l", text)

    def wait(self, pred, timeout=10.0, escapes=False):
        """Poll the screen until pred(screen) is true; return the last screen
        and whether it became true."""
        end = time.monotonic() + timeout
        scr = ""
        while True:
            scr = self.screen(escapes)
            if pred(scr):
                return scr, True
            if time.monotonic() > end:
                return scr, False
            time.sleep(0.1)

    def close(self):
        self.tmux("kill-server", check_rc=False)
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except OSError:
                    pass
                p.kill()
            p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


SEG_COLS = ("SEGMENT", "STATE", "STEP", "EPOCH", "STEPS/S", "FILL", "DROPPED", "RANK",
            "PID", "RECS/S", "OVERWR", "RUN")


def seg_row(scr, seg):
    """The segment table row of seg as {column: text}, or None."""
    for line in scr.splitlines():
        f = line.split()
        if len(f) >= len(SEG_COLS) and f[0] == seg and f[2].isdigit():
            return dict(zip(SEG_COLS, f))
    return None


def seg_step(scr, seg):
    f = seg_row(scr, seg)
    return int(f["STEP"]) if f else None


def metric_rows(scr):
    """Names of the metric rows visible on the screen."""
    names = []
    for line in scr.splitlines():
        # METRIC LAST NONFIN EPOCH-NOW LAST-EPOCH COUNT MIN MAX RECENT
        m = re.match(r"^  (\S+)\s+(\S+)\s+\d+\s+\S+\s+\S+\s+\d+\s", line)
        if m and m.group(1) != "METRIC":
            names.append(m.group(1))
    return names


def metric_line(scr, name):
    for line in scr.splitlines():
        plain = re.sub(r"\x1b\[[0-9;]*m", "", line)
        if plain.startswith("  %s " % name):
            return line
    return None


def show(scr):
    return "\n--- screen ---\n%s\n--------------" % scr.rstrip()


def test_cli():
    env = dict(os.environ, MRING_DIR=tempfile.gettempdir())
    r = subprocess.run([ARGS.mring, "top", "--help"], capture_output=True, text=True, env=env)
    check("help exits 0", r.returncode == 0 and "usage: mring top" in r.stdout,
          "rc %d out %r" % (r.returncode, r.stdout))
    r = subprocess.run([ARGS.mring, "top", "--bogus"], capture_output=True, text=True, env=env)
    check("bad option: one-line error, exit 1",
          r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and not r.stdout,
          "rc %d err %r" % (r.returncode, r.stderr))
    r = subprocess.run([ARGS.mring, "top"], capture_output=True, text=True, env=env,
                       stdin=subprocess.DEVNULL, timeout=10)
    check("no terminal: error, exit 1", r.returncode == 1 and r.stderr.strip(),
          "rc %d err %r" % (r.returncode, r.stderr))


def test_live(t):
    t.producer("runA", rank=0)
    t.start_top()

    # What a person sees first: the run, its state, its metrics.
    scr, ok = t.wait(lambda s: seg_row(s, "runA") is not None and "alive" in s
                     and {"loss", "lr", "acc"} <= set(metric_rows(s)))
    check("shows run, alive and metrics", ok, show(scr))
    f = seg_row(scr, "runA")
    check("run name and rank", f is not None and f["RUN"] == "runA" and f["RANK"] == "0"
          and f["STATE"] == "alive", repr(f))

    s1 = seg_step(scr, "runA")
    scr, ok = t.wait(lambda s: (seg_step(s, "runA") or -1) > (s1 or 0))
    check("step increases between captures", ok and s1 is not None, show(scr))
    scr, ok = t.wait(lambda s: seg_row(s, "runA") is not None
                     and float(seg_row(s, "runA")["STEPS/S"]) > 0
                     and float(seg_row(s, "runA")["RECS/S"]) > 0)
    check("steps/s and records/s shown", ok, show(scr))

    # Values: the canary logs step*1000 + m + 0.25; last value of loss ends in .25.
    scr, ok = t.wait(lambda s: metric_line(s, "loss") is not None
                     and metric_line(s, "loss").split()[1].endswith(".25"))
    check("last value of loss exact", ok, show(scr))
    scr, ok = t.wait(lambda s: metric_line(s, "loss") is not None
                     and "@" in metric_line(s, "loss"))
    check("last completed epoch value shown", ok, show(scr))
    scr, ok = t.wait(lambda s: metric_line(s, "loss") is not None
                     and re.search("[\u2581-\u2588]{5,}", metric_line(s, "loss")))
    check("sparkline of recent values", ok, show(scr))

    # lr logs NaN every 7th step: its non-finite count is highlighted
    # (reverse video: SGR 7).
    def nonfinite_hl(s):
        line = metric_line(s, "lr")
        return line is not None and re.search(REV + r"\s*[1-9]\d*", line)
    scr, ok = t.wait(nonfinite_hl, escapes=True)
    check("non-finite count highlighted", ok, show(scr))
    scr, ok = t.wait(lambda s: metric_line(s, "loss") is not None
                     and not re.search(REV, metric_line(s, "loss")),
                     escapes=True)
    check("finite metric not highlighted", ok, show(scr))

    # 'a': progress-bar metrics only (the canary has none), then back.
    t.keys("a")
    scr, ok = t.wait(lambda s: "progress-bar only" in s and not metric_rows(s)
                     and "no progress-bar metric" in s)
    check("'a' shows only progress-bar metrics", ok, show(scr))
    t.keys("a")
    scr, ok = t.wait(lambda s: "view: all" in s and {"loss", "lr", "acc"} <= set(metric_rows(s)))
    check("'a' again shows all metrics", ok, show(scr))

    # '/' filter by name, Enter applies.
    t.keys("/")
    scr, ok = t.wait(lambda s: "filter>" in s)
    check("'/' opens the filter prompt", ok, show(scr))
    t.keys_literal("lo")
    t.keys("Enter")
    scr, ok = t.wait(lambda s: "filter: lo" in s and metric_rows(s) == ["loss"])
    check("filter 'lo' shows only loss", ok, show(scr))
    # Esc clears it.
    t.keys("/")
    t.wait(lambda s: "filter>" in s)
    t.keys("Escape")
    scr, ok = t.wait(lambda s: "filter: -" in s and "filter>" not in s
                     and {"loss", "lr", "acc"} <= set(metric_rows(s)))
    check("Esc clears the filter", ok, show(scr))

    # A new segment appears without a restart.
    t.producer("runB", rank=1)
    scr, ok = t.wait(lambda s: seg_row(s, "runB") is not None
                     and seg_row(s, "runB")["STATE"] == "alive"
                     and seg_row(s, "runB")["RANK"] == "1")
    check("new segment appears", ok, show(scr))
    scr, ok = t.wait(lambda s: "== runB" in s)
    check("new segment's metrics appear", ok, show(scr))

    # SIGSTOP: alive but no step: stale, within bounded polling.
    pb = t.procs["runB"]
    os.kill(pb.pid, signal.SIGSTOP)
    scr, ok = t.wait(lambda s: seg_row(s, "runB") is not None
                     and seg_row(s, "runB")["STATE"] == "stale", timeout=15)
    check("stopped producer shown stale", ok, show(scr))
    os.kill(pb.pid, signal.SIGCONT)
    scr, ok = t.wait(lambda s: seg_row(s, "runB") is not None
                     and seg_row(s, "runB")["STATE"] == "alive", timeout=10)
    check("continued producer alive again", ok, show(scr))

    # SIGKILL: crashed, and the view keeps refreshing.
    pa = t.procs["runA"]
    pa.kill()
    pa.wait()
    scr, ok = t.wait(lambda s: seg_row(s, "runA") is not None
                     and seg_row(s, "runA")["STATE"] == "crashed")
    check("killed producer shown crashed", ok, show(scr))
    b1 = seg_step(scr, "runB")
    scr, ok = t.wait(lambda s: (seg_step(s, "runB") or -1) > (b1 or 0)
                     and seg_row(s, "runA") is not None and seg_row(s, "runA")["STATE"] == "crashed")
    check("view keeps refreshing after a crash", ok and b1 is not None, show(scr))
    scr, ok = t.wait(lambda s: re.search(REV + "crashed", s)
                     is not None, escapes=True)
    check("crashed state highlighted", ok, show(scr))

    # A removed segment disappears.
    os.unlink(os.path.join(t.shm, "runA"))
    scr, ok = t.wait(lambda s: seg_row(s, "runA") is None and "== runA" not in s
                     and seg_row(s, "runB") is not None)
    check("removed segment disappears", ok, show(scr))

    # q quits with status 0.
    t.keys("q")
    scr, ok = t.wait(lambda s: "TOP-EXIT=" in s)
    check("'q' exits with status 0", ok and "TOP-EXIT=0" in scr, show(scr))


def test_glob(t):
    """Arguments select segments; a match created later appears."""
    t.producer("other", rank=0)
    t.start_top("job*")
    scr, ok = t.wait(lambda s: "no segment matches yet" in s)
    check("glob with no match waits", ok, show(scr))
    t.producer("job1", rank=3)
    scr, ok = t.wait(lambda s: seg_row(s, "job1") is not None
                     and seg_row(s, "job1")["RANK"] == "3")
    check("glob match appears", ok, show(scr))
    check("non-matching segment not shown", seg_row(scr, "other") is None, show(scr))
    t.procs["job1"].send_signal(signal.SIGKILL)
    scr, ok = t.wait(lambda s: seg_row(s, "job1") is not None
                     and seg_row(s, "job1")["STATE"] == "crashed")
    check("glob: crash shown", ok, show(scr))
    t.keys("q")
    scr, ok = t.wait(lambda s: "TOP-EXIT=" in s)
    check("glob: 'q' exits with status 0", ok and "TOP-EXIT=0" in scr, show(scr))


def test_80_columns(t):
    """A classic 80x24 terminal shows whether a run is healthy: the state,
    step, epoch, rate, fill and drops of each segment, and each metric's
    last value, non-finite count and epoch figures, nothing cut."""
    t.producer("runC", rank=0)
    t.start_top(cols=80, rows=24)

    def row(s, name):
        for line in s.splitlines():
            f = line.split()
            if f and f[0] == name:
                return f
        return None

    scr, ok = t.wait(lambda s: (row(s, "runC") or [""])[1:2] == ["alive"]
                     and row(s, "loss") is not None)
    check("80 columns: segment and metrics shown", ok, show(scr))
    head = [l for l in scr.splitlines() if l.startswith("SEGMENT")]
    check("80 columns: STATE .. DROPPED in the segment header",
          head and head[0].split()[:7] == ["SEGMENT", "STATE", "STEP", "EPOCH", "STEPS/S",
                                           "FILL", "DROPPED"], show(scr))
    f = row(scr, "runC")
    check("80 columns: the row's step, rate, fill and drops are whole",
          f is not None and len(f) >= 7 and f[2].isdigit() and f[5].endswith("%")
          and f[6].isdigit(), repr(f))
    mhead = [l for l in scr.splitlines() if l.strip().startswith("METRIC")]
    check("80 columns: LAST, NONFIN, EPOCH-NOW and LAST-EPOCH in the metric header",
          mhead and mhead[0].split()[:5] == ["METRIC", "LAST", "NONFIN", "EPOCH-NOW",
                                             "LAST-EPOCH"], show(scr))
    m = row(scr, "loss")
    check("80 columns: loss shows its last value and non-finite count",
          m is not None and len(m) >= 3 and m[1].endswith(".25") and m[2].isdigit(), repr(m))


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--mring", required=True)
    ap.add_argument("--producer", required=True)
    ARGS = ap.parse_args()
    if not shutil.which("tmux"):
        print("tmux not found")
        print("0 passed, 1 failed")
        return 1

    test_cli()
    for fn in (test_live, test_glob, test_80_columns):
        t = Top()
        try:
            fn(t)
        except Exception:
            traceback.print_exc()
            check(fn.__name__ + " ran to the end", False)
        finally:
            t.close()
    return e2e_common.checks_summary()


if __name__ == "__main__":
    sys.exit(main())
