#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""bench/watch.py - the benchmark of `mring watch` (docs/watch.md).

Usage: /usr/bin/python3 bench/watch.py [--mring PATH] [--producer PATH]
                                       [--reps N] [--quick] [--no-pin]
                                       [--only producer|cpu|latency]...

Three measurements, each against the real watcher and producers of
bench/bench_watch_prod.c (built next to the tool: `cmake --build DIR
--target bench_watch_prod`; built there by this script if missing):

 1. producer  What a watcher costs the producer.  `bench_watch_prod flat`
    logs flat out, mring_step + 16 ON_STEP values per step, OVERWRITE mode
    (never waits, every value is written; no drainer), default 2^20 ring,
    for a fixed number of steps (calibrated to about 2 s; --quick 0.4 s),
    timed by the producer itself (CLOCK_MONOTONIC around the loop only).
    Two configurations, alternated ABBA over --reps repetitions: no
    watcher, and `mring watch --nan --stall 5 --above 'm*=1e300'
    --interval 0.1 SEG` started (and settled) before the loop begins.
    Reported: ns per value (loop time / (steps * 16), the step amortized
    in it), medians with min and max, the ratio of medians and the median
    [min-max] of the per-repetition ratios; the watcher's own CPU use
    during the loop.  Then the same in one producer run and one watcher
    (1b): the loop is cut into chunks of about 0.15 s (--quick 0.08 s),
    8 x --reps pairs of them (at least 20; --quick 10), each timed alone,
    with the watcher SIGSTOPped or running (SIGCONT) in ABBA order; the same
    process, ring and pages on both sides, so less noise than separate runs.
    Goal: no measurable difference (ratio of medians <= 1.03 counts as met).
 2. cpu  The watcher's CPU use, % of one core: one process holding 64
    writers (8 runs x 8 ranks, 2^16-slot rings, OVERWRITE), each writer
    stepping 100 steps/s with 8 values per step (one ON_STEP|ON_EPOCH);
    `mring watch --nan --stall 10 --lag 100 --crash --interval 0.1
    'DIR/w-*'` (a glob, expanded again at every poll).  After 1 s of
    warm-up, the watcher's on-CPU time (/proc/PID/task/*/schedstat, all
    threads; utime+stime ticks as a cross-check) over 10 s (--quick 3 s).
    Also with the same 64 segments idle: "stalled" (producers alive, not
    stepping: the stall rule fires for each of them 10 s after their last
    step) and "closed" (cleanly closed, files still there).  The three
    configurations rotate over the repetitions (--quick: one repetition).
    Goal: under 1 % with 64 stepping segments.
 3. latency  Event to alert: `bench_watch_prod nan` steps every 1 ms and,
    20 times (--quick 6), at random gaps, logs a NaN as "loss" and prints
    CLOCK_REALTIME read right after that mring_log returned; `mring watch
    --nan --interval I SEG` for I = 0.1 and 0.01.  The watcher's stdout is
    read unbuffered by a thread here; each line is stamped with
    time.time_ns() when its read returned.  Reported: arrival - log (ms),
    median, p90, min, max; also the watcher's own `time=` field - log
    (millisecond resolution), and any NaN without its alert, or alert whose
    step is not the NaN's step.  Goal: max <= interval + 20 ms.

Producer and watcher are pinned to two different CPUs (the first two this
process may use) unless --no-pin.  Segments go into a private MRING_DIR (a
fresh directory in /dev/shm, or $TMPDIR if there is none) that is removed
at the end, with every process this script started, also on failure.

Output: one table, a list of problems (anything a run did that it should
not have: a watcher that exited non-zero, an unexpected alert, a missed
NaN), then, as the last line, one JSON object with every figure
(`tail -n 1`).  Exit status: 0; 1 if a
run was invalid (a figure is missing or a problem was found); 2 bad usage or
no `mring watch`.  Goals that are missed do not change the exit status.
"""
import argparse
import datetime
import glob
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROCS = []          # every Proc started, stopped in the end whatever happens
PROBLEMS = []       # what went wrong, printed before the JSON line
NOTES = []          # what the watcher said on stderr, etc.
ARGS = None
CPU_PROD = CPU_WATCH = None
VALUES = 16         # values per step in the producer-cost runs


def problem(msg):
    PROBLEMS.append(msg)
    print("  problem: " + msg, file=sys.stderr, flush=True)


def progress(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes

class Proc:
    """A child process; reader threads collect its stdout and stderr lines,
    each stamped with time.time_ns() when the read that completed it
    returned."""

    def __init__(self, name, argv, env, cpu=None, stdin=True):
        self.name = name
        self.argv = argv
        self.out = []
        self.err = []
        self.eof = {"out": False, "err": False}
        self.cv = threading.Condition()
        pre = None
        if cpu is not None:
            pre = lambda: os.sched_setaffinity(0, {cpu})   # noqa: E731
        self.p = subprocess.Popen(argv, env=env, bufsize=0, preexec_fn=pre,
                                  stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.pid = self.p.pid
        PROCS.append(self)
        self.threads = [threading.Thread(target=self._read, args=(self.p.stdout, "out"), daemon=True),
                        threading.Thread(target=self._read, args=(self.p.stderr, "err"), daemon=True)]
        for t in self.threads:
            t.start()

    def _read(self, f, which):
        fd = f.fileno()
        lst = self.out if which == "out" else self.err
        buf = b""
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            t = time.time_ns()
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            if lines:
                with self.cv:
                    lst.extend((t, ln.decode("utf-8", "replace")) for ln in lines)
                    self.cv.notify_all()
        with self.cv:
            if buf:
                lst.append((time.time_ns(), buf.decode("utf-8", "replace")))
            self.eof[which] = True
            self.cv.notify_all()

    def wait_line(self, pred, timeout, which="out", start=0):
        """The first line at index >= start that pred accepts: (index,
        time_ns, line), or None after timeout seconds or at EOF."""
        lst = self.out if which == "out" else self.err
        end = time.monotonic() + timeout
        i = start
        with self.cv:
            while True:
                while i < len(lst):
                    if pred(lst[i][1]):
                        return i, lst[i][0], lst[i][1]
                    i += 1
                left = end - time.monotonic()
                if left <= 0 or self.eof[which]:
                    return None
                self.cv.wait(left)

    def expect(self, word, timeout, start=0):
        r = self.wait_line(lambda ln: ln.split(" ", 1)[0] == word, timeout, start=start)
        if r is None:
            self.p.poll()
            raise RuntimeError("%s: no '%s' line within %g s (exit status %s; stderr: %s)"
                               % (self.name, word, timeout, self.p.returncode, self.stderr_text()))
        return r

    def send(self, text):
        self.p.stdin.write(text.encode())

    def close_stdin(self):
        if self.p.stdin and not self.p.stdin.closed:
            try:
                self.p.stdin.close()
            except OSError:
                pass

    def alive(self):
        return self.p.poll() is None

    def stderr_text(self, n=5):
        with self.cv:
            lines = [ln for _, ln in self.err[:n]]
        return " | ".join(lines) if lines else "(empty)"

    def cpu_ns(self):
        """On-CPU ns of all threads (schedstat), or None."""
        total = 0
        try:
            for f in glob.glob("/proc/%d/task/*/schedstat" % self.pid):
                with open(f) as fh:
                    total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return total

    def cpu_ticks(self):
        """utime + stime in clock ticks, or None."""
        try:
            with open("/proc/%d/stat" % self.pid) as fh:
                f = fh.read().rsplit(")", 1)[1].split()
            return int(f[11]) + int(f[12])
        except (OSError, ValueError, IndexError):
            return None

    def status(self, key):
        try:
            with open("/proc/%d/status" % self.pid) as fh:
                for ln in fh:
                    if ln.startswith(key + ":"):
                        return int(ln.split()[1])
        except (OSError, ValueError):
            pass
        return None

    def stop(self, sig=signal.SIGTERM, timeout=5.0):
        """Signal (if still running) and reap; SIGKILL after timeout.
        Returns the exit status (negative: killed by that signal)."""
        self.close_stdin()
        if self.p.poll() is None and sig is not None:
            try:
                self.p.send_signal(sig)
            except ProcessLookupError:
                pass
        try:
            self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            problem("%s (pid %d) did not exit within %g s of signal %s: killed"
                    % (self.name, self.pid, timeout, sig))
            self.p.kill()
            self.p.wait()
        for t in self.threads:
            t.join(2)
        return self.p.returncode


def stop_all():
    for pr in PROCS:
        if pr.p.poll() is None:
            pr.close_stdin()
            try:
                pr.p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    end = time.monotonic() + 3
    for pr in PROCS:
        try:
            pr.p.wait(max(0.05, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            pr.p.kill()
            pr.p.wait()


# ---------------------------------------------------------------- helpers

FIELD = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_event(line):
    """An `alert ...` or `clear ...` line as a dict (event, rule, segment,
    ..., unquoted), or None."""
    head, _, rest = line.partition(" ")
    if head not in ("alert", "clear"):
        return None
    d = {"event": head}
    for k, v in FIELD.findall(rest):
        if v.startswith('"'):
            v = re.sub(r'\\x([0-9a-fA-F]{2})|\\(.)',
                       lambda m: chr(int(m.group(1), 16)) if m.group(1) else m.group(2), v[1:-1])
        d[k] = v
    return d


def iso_ns(s):
    """`2026-12-03T12:00:01.250Z` -> ns since the epoch, or None."""
    try:
        dt = datetime.datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ")
    except (TypeError, ValueError):
        return None
    dt = dt.replace(tzinfo=datetime.timezone.utc)
    return int(dt.timestamp()) * 10**9 + dt.microsecond * 1000


def med(v):
    return statistics.median(v) if v else None


def pct(v, p):
    if not v:
        return None
    s = sorted(v)
    return s[min(len(s) - 1, max(0, int(round(p / 100.0 * (len(s) - 1)))))]


def summary(v):
    if not v:
        return None
    return {"median": med(v), "min": min(v), "max": max(v), "n": len(v)}


def watch_argv(rules, interval, segs):
    return [ARGS.mring, "watch"] + rules + ["--interval", str(interval)] + segs


def mapped(pid, prefix):
    """How many files under prefix the process has mapped."""
    files = set()
    try:
        with open("/proc/%d/maps" % pid) as fh:
            for ln in fh:
                f = ln.split(None, 5)
                if len(f) == 6 and f[5].startswith(prefix):
                    files.add(f[5].rstrip("\n"))
    except OSError:
        pass
    return len(files)


def start_watcher(name, rules, interval, segs, env, settle, expect=1, prefix=None):
    """Start the watcher and let it attach: wait until it has mapped
    `expect` segments under prefix (up to 3 s), then `settle` seconds."""
    w = Proc(name, watch_argv(rules, interval, segs), env, cpu=CPU_WATCH, stdin=False)
    prefix = prefix or os.path.dirname(segs[0]) + "/"
    end = time.monotonic() + 3
    n = 0
    while time.monotonic() < end and w.alive():
        n = mapped(w.pid, prefix)
        if n >= expect:
            break
        time.sleep(0.01)
    else:
        if w.alive():
            NOTES.append("%s: after 3 s the watcher had mapped %d of %d segments" % (name, n, expect))
    time.sleep(settle)
    if not w.alive():
        raise RuntimeError("%s exited at start with status %s: %s"
                           % (" ".join(w.argv), w.p.returncode, w.stderr_text()))
    return w


def end_watcher(w, what, allowed_rules=()):
    """SIGTERM the watcher; check it exits 0 and raised only allowed
    alerts.  Returns the parsed events as (arrival time_ns, line, dict)."""
    rc = w.stop()
    if rc != 0:
        problem("%s: watcher exit status %s after SIGTERM (expected 0); stderr: %s"
                % (what, rc, w.stderr_text()))
    events = []
    for t, ln in w.out:
        ev = parse_event(ln)
        if ev is None:
            problem("%s: watcher stdout line is neither alert nor clear: %r" % (what, ln))
            continue
        events.append((t, ln, ev))
        if ev["event"] == "alert" and ev.get("rule") not in allowed_rules:
            problem("%s: unexpected alert: %s" % (what, ln))
    return events


def note_stderr(what, w):
    with w.cv:
        lines = [ln for _, ln in w.err]
    if lines:
        shown = lines[:4] + (["... (%d lines in all)" % len(lines)] if len(lines) > 4 else [])
        NOTES.append("%s: watcher stderr: %s" % (what, " | ".join(shown)))


# ---------------------------------------------------------------- 1. producer

def flat_run(ctx, steps, with_watch, tag):
    seg = os.path.join(ctx["shm"], "flat-" + tag)
    prod = Proc("bench_watch_prod flat", [ARGS.producer, "flat", seg, str(steps), str(VALUES),
                                          "overwrite", "0"], ctx["env"], cpu=CPU_PROD)
    w = None
    try:
        prod.expect("ready", 20)
        if with_watch:
            w = start_watcher("watch (producer cost)",
                              ["--nan", "--stall", "5", "--above", "m*=1e300"], 0.1, [seg],
                              ctx["env"], 0.5)
        else:
            time.sleep(0.5)
        c0, t0 = (w.cpu_ns() if w else None), time.monotonic()
        prod.send("go\n")
        _, _, line = prod.expect("result", 600)
        c1, t1 = (w.cpu_ns() if w else None), time.monotonic()
        r = dict(kv.split("=") for kv in line.split()[1:])
        r = {k: int(v) for k, v in r.items()}
        rc = prod.stop(None, 30)
        if rc != 0:
            problem("flat %s: producer exit status %s" % (tag, rc))
        if r["errors"] or r["ok"] != r["values"]:
            problem("flat %s: producer: %s" % (tag, line))
        res = {"ns_per_value": r["ns"] / r["values"], "loop_s": r["ns"] / 1e9}
        if w:
            time.sleep(0.3)     # let it see the clean close
            if c0 is not None and c1 is not None:
                res["watch_cpu_pct"] = 100.0 * (c1 - c0) / 1e9 / (t1 - t0)
            end_watcher(w, "producer cost, rep " + tag)
            if "watch_note" not in ctx:
                ctx["watch_note"] = True
                note_stderr("producer cost (flat, 2^20 ring lapped)", w)
        return res
    finally:
        for pr in (w, prod):
            if pr and pr.alive():
                pr.stop()
        try:
            os.unlink(seg)
        except OSError:
            pass


def bench_producer(ctx):
    target = 0.4 if ARGS.quick else 2.0
    progress("1. producer cost: calibrating ...")
    cal = flat_run(ctx, 200000, False, "cal")
    ns_step = cal["ns_per_value"] * VALUES
    steps = max(10000, int(target * 1e9 / ns_step) // 1000 * 1000)
    none, watch, cpu, ratios = [], [], [], []
    for rep in range(ARGS.reps):
        order = (False, True) if rep % 2 == 0 else (True, False)
        got = {}
        for ww in order:
            tag = "%d-%s" % (rep, "watch" if ww else "none")
            progress("1. producer cost: rep %d/%d, %s, %d steps ..."
                     % (rep + 1, ARGS.reps, "watcher" if ww else "no watcher", steps))
            got[ww] = flat_run(ctx, steps, ww, tag)
        none.append(got[False]["ns_per_value"])
        watch.append(got[True]["ns_per_value"])
        ratios.append(got[True]["ns_per_value"] / got[False]["ns_per_value"])
        if "watch_cpu_pct" in got[True]:
            cpu.append(got[True]["watch_cpu_pct"])
    paired = bench_paired(ctx, steps / (steps * VALUES * med(none) / 1e9))
    return {"steps": steps, "values_per_step": VALUES, "none": summary(none),
            "watch": summary(watch), "ratio_of_medians": med(watch) / med(none),
            "paired_ratio": summary(ratios), "watcher_cpu_pct": summary(cpu),
            "loop_s": steps * VALUES * med(none) / 1e9, "paired": paired}


def proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def bench_paired(ctx, steps_per_s):
    """One producer, one watcher; chunks alternate between the watcher
    SIGSTOPped and running (ABBA), so the producer, its ring and its pages
    are the same on both sides."""
    pairs = 10 if ARGS.quick else max(20, 8 * ARGS.reps)
    chunk_s = 0.08 if ARGS.quick else 0.15
    chunk = max(1000, int(chunk_s * steps_per_s))
    nchunks = 2 * pairs
    seg = os.path.join(ctx["shm"], "paired")
    prod = Proc("bench_watch_prod flat (paired)",
                [ARGS.producer, "flat", seg, str(chunk * nchunks), str(VALUES), "overwrite", "0",
                 str(nchunks)], ctx["env"], cpu=CPU_PROD)
    w = None
    try:
        prod.expect("ready", 20)
        w = start_watcher("watch (paired)", ["--nan", "--stall", "5", "--above", "m*=1e300"], 0.1,
                          [seg], ctx["env"], 0.3)
        got = {True: [], False: []}
        idx = 0
        progress("1b. producer cost, watcher running vs SIGSTOPped: %d chunks of %d steps ..."
                 % (nchunks, chunk))
        for i in range(pairs):
            for running in ((True, False) if i % 2 == 0 else (False, True)):
                if running:
                    os.kill(w.pid, signal.SIGCONT)
                else:
                    os.kill(w.pid, signal.SIGSTOP)
                    end = time.monotonic() + 2
                    while proc_state(w.pid) != "T" and time.monotonic() < end:
                        time.sleep(0.005)
                time.sleep(0.03)
                prod.send("go\n")
                idx, _, line = prod.expect("chunk", 120, idx)
                idx += 1
                got[running].append(int(line.split("ns=")[1]) / (chunk * VALUES))
        os.kill(w.pid, signal.SIGCONT)
        prod.expect("result", 30)
        rc = prod.stop(None, 30)
        if rc != 0:
            problem("paired: producer exit status %s" % rc)
        time.sleep(0.2)
        end_watcher(w, "paired")
        ratios = [a / b for a, b in zip(got[True], got[False])]
        return {"chunk_steps": chunk, "pairs": pairs, "stopped": summary(got[False]),
                "running": summary(got[True]),
                "ratio_of_medians": med(got[True]) / med(got[False]),
                "paired_ratio": summary(ratios)}
    finally:
        for pr in (w, prod):
            if pr and pr.alive():
                if pr is w:
                    os.kill(w.pid, signal.SIGCONT)
                pr.stop()
        try:
            os.unlink(seg)
        except OSError:
            pass


# ---------------------------------------------------------------- 2. cpu

NSEG, NRUNS, RATE, NVAL = 64, 8, 100, 8
CPU_RULES = ["--nan", "--stall", "10", "--lag", "100", "--crash"]


def cpu_run(ctx, mode, tag, seconds, warm):
    d = os.path.join(ctx["shm"], "cpu-" + tag)
    os.mkdir(d)
    env = dict(ctx["env"], MRING_DIR=d)
    prod = Proc("bench_watch_prod many", [ARGS.producer, "many", str(NSEG), str(NRUNS), str(RATE),
                                          str(NVAL), mode, "65536"], env, cpu=CPU_PROD)
    w = None
    try:
        prod.expect("ready", 30)
        w = start_watcher("watch (cpu %s)" % mode, CPU_RULES, 0.1, [os.path.join(d, "w-*")], env,
                          warm, expect=NSEG)
        c0, k0, v0, t0 = w.cpu_ns(), w.cpu_ticks(), w.status("voluntary_ctxt_switches"), time.monotonic()
        time.sleep(seconds)
        c1, k1, v1, t1 = w.cpu_ns(), w.cpu_ticks(), w.status("voluntary_ctxt_switches"), time.monotonic()
        rss, hwm = w.status("VmRSS"), w.status("VmHWM")
        if not w.alive():
            raise RuntimeError("watcher (cpu %s) exited with status %s: %s"
                               % (tag, w.p.returncode, w.stderr_text()))
        t_end = time.time_ns()
        allowed = ("stall",) if mode == "stall" else ()
        events = end_watcher(w, "cpu %s" % tag, allowed)
        alerts = [e for t, _, e in events if e["event"] == "alert" and t <= t_end]
        wall = t1 - t0
        res = {"pct": 100.0 * (c1 - c0) / 1e9 / wall if c0 is not None else None,
               "pct_ticks": (100.0 * (k1 - k0) / os.sysconf("SC_CLK_TCK") / wall
                             if k0 is not None else None),
               "cpu_s": (c1 - c0) / 1e9 if c0 is not None else None, "wall_s": wall,
               "wakeups_per_s": (v1 - v0) / wall if v0 is not None else None,
               "rss_kib": rss, "hwm_kib": hwm, "alerts": len(alerts),
               "alert_rules": sorted(set(e.get("rule") for e in alerts))}
        if mode not in ctx.setdefault("cpu_note", set()):
            ctx["cpu_note"].add(mode)
            note_stderr("cpu, 64 segments %s" % mode, w)
        return res
    finally:
        for pr in (w, prod):
            if pr and pr.alive():
                pr.stop()
        shutil.rmtree(d, ignore_errors=True)


CPU_MODES = [("step", "64 segments stepping 100/s, 8 values"),
             ("stall", "64 segments alive, not stepping"),
             ("close", "64 segments closed")]


def bench_cpu(ctx):
    seconds = 3.0 if ARGS.quick else 10.0
    warm = 1.0
    reps = 1 if ARGS.quick else ARGS.reps
    runs = {m: [] for m, _ in CPU_MODES}
    for rep in range(reps):
        k = rep % len(CPU_MODES)
        for mode, _ in CPU_MODES[k:] + CPU_MODES[:k]:
            progress("2. watcher cpu: rep %d/%d, %s, %g s ..." % (rep + 1, reps, mode, seconds))
            runs[mode].append(cpu_run(ctx, mode, "%d-%s" % (rep, mode), seconds, warm))
    out = {"seconds_per_rep": seconds, "reps": reps}
    for mode, _ in CPU_MODES:
        r = runs[mode]
        p = [x["pct"] for x in r if x["pct"] is not None]
        out[mode] = {
            "pct": summary(p),
            "pct_overall": (100.0 * sum(x["cpu_s"] for x in r) / sum(x["wall_s"] for x in r)
                            if p else None),
            "pct_ticks": summary([x["pct_ticks"] for x in r if x["pct_ticks"] is not None]),
            "wakeups_per_s": med([x["wakeups_per_s"] for x in r if x["wakeups_per_s"] is not None]),
            "rss_kib": max((x["rss_kib"] or 0) for x in r),
            "hwm_kib": max((x["hwm_kib"] or 0) for x in r),
            "alerts": [x["alerts"] for x in r],
            "alert_rules": sorted(set(y for x in r for y in x["alert_rules"]))}
    return out


# ---------------------------------------------------------------- 3. latency

def latency_run(ctx, interval, count):
    tag = ("%g" % interval).replace(".", "_")
    seg = os.path.join(ctx["shm"], "lat-" + tag)
    gmin = 3 * interval * 1000 + 50
    gmax = gmin + max(2 * interval * 1000, 50)
    prod = Proc("bench_watch_prod nan", [ARGS.producer, "nan", seg, str(count), "1000",
                                         "%g" % gmin, "%g" % gmax, str(os.getpid())],
                ctx["env"], cpu=CPU_PROD)
    w = None
    try:
        prod.expect("ready", 20)
        w = start_watcher("watch (latency %g)" % interval, ["--nan"], interval, [seg], ctx["env"],
                          max(0.3, 5 * interval))
        prod.send("go\n")
        prod.expect("done", count * gmax / 1000.0 + 30)
        time.sleep(3 * interval + 0.3)
        events = end_watcher(w, "latency %g" % interval, ("nan",))
        rc = prod.stop(None, 10)
        if rc != 0:
            problem("latency %g: producer exit status %s" % (interval, rc))
        nans = []
        for _, ln in prod.out:
            f = ln.split()
            if f and f[0] == "nan":
                nans.append((int(f[1]), int(f[2])))
        alerts, clears = [], 0
        for t, ln, ev in events:
            if ev.get("rule") != "nan":
                continue
            if ev["event"] == "clear":
                clears += 1
                continue
            if ev.get("metric") != "loss":
                problem("latency %g: alert on metric %r: %s" % (interval, ev.get("metric"), ln))
                continue
            alerts.append((t, ev, ln))
        lat, det, wrong, missed, used = [], [], 0, 0, set()
        for i, (step, tlog) in enumerate(nans):
            tnext = nans[i + 1][1] if i + 1 < len(nans) else None
            hit = None
            for j, (t, ev, ln) in enumerate(alerts):
                if j not in used and ev.get("step") == str(step):
                    hit = j
                    break
            if hit is None:     # the alert of this NaN, under another step?
                for j, (t, ev, ln) in enumerate(alerts):
                    if j not in used and t >= tlog and (tnext is None or t < tnext):
                        hit = j
                        wrong += 1
                        problem("latency %g: NaN at step %d: alert names another step: %s"
                                % (interval, step, ln))
                        break
            if hit is None:
                missed += 1
                problem("latency %g: NaN at step %d: no alert" % (interval, step))
                continue
            used.add(hit)
            t, ev, _ = alerts[hit]
            lat.append((t - tlog) / 1e6)
            tw = iso_ns(ev.get("time"))
            if tw is not None:
                det.append((tw - tlog) / 1e6)
        for j, (t, ev, ln) in enumerate(alerts):
            if j not in used:
                problem("latency %g: alert for no NaN: %s" % (interval, ln))
        if clears != len(used):
            problem("latency %g: %d clear lines for %d alerts (docs/watch.md: a clear once "
                    "the metric logs a finite value again)" % (interval, clears, len(used)))
        if len(nans) != count:
            problem("latency %g: producer logged %d NaNs, expected %d" % (interval, len(nans), count))
        if interval not in ctx.setdefault("lat_note", set()):
            ctx["lat_note"].add(interval)
            note_stderr("latency --interval %g" % interval, w)
            if alerts:
                NOTES.append("latency --interval %g: first alert line: %s" % (interval, alerts[0][2]))
        return {"interval_s": interval, "n": len(nans), "alerts": len(alerts), "clears": clears,
                "missed": missed, "wrong_step": wrong,
                "arrival_ms": dict(summary(lat) or {}, p90=pct(lat, 90)) if lat else None,
                "watcher_time_ms": dict(summary(det) or {}, p90=pct(det, 90)) if det else None,
                "samples_ms": [round(x, 3) for x in lat]}
    finally:
        for pr in (w, prod):
            if pr and pr.alive():
                pr.stop()
        try:
            os.unlink(seg)
        except OSError:
            pass


def bench_latency(ctx):
    count = 6 if ARGS.quick else 20
    out = {}
    for iv in (0.1, 0.01):
        progress("3. event to alert: --interval %g, %d NaNs ..." % (iv, count))
        out["%g" % iv] = latency_run(ctx, iv, count)
    return out


# ---------------------------------------------------------------- output

def f(v, nd=2):
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1000:
        return "%.0f" % v
    if a >= 100:
        return "%.1f" % v
    if a >= 10:
        return "%.2f" % v
    return "%.*f" % (nd + 1 if a < 1 else nd, v)


def row(key, name, s, unit, target="-", status="-", note=""):
    s = s or {}
    print("%-5s %-50s %9s %9s %9s %-6s %-20s %-7s %s"
          % (key, name, f(s.get("median")), f(s.get("min")), f(s.get("max")), unit, target,
             status, note))


def describe(path):
    """The commit (and dirtiness of src/ include/) of the tree a tool was built from."""
    d = os.path.dirname(os.path.abspath(path))
    src = None
    try:
        with open(os.path.join(d, "CMakeCache.txt")) as fh:
            for ln in fh:
                if ln.startswith("CMAKE_HOME_DIRECTORY:INTERNAL="):
                    src = ln.split("=", 1)[1].strip()
    except OSError:
        pass
    src = src or d
    try:
        rev = subprocess.run(["git", "-C", src, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", src, "status", "--short", "--", "src", "include"],
                               capture_output=True, text=True).stdout.strip()
        return "commit %s%s" % (rev, " + uncommitted changes under src/ include/" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "not in git"


def report(res, t_start, load0):
    model = "?"
    try:
        with open("/proc/cpuinfo") as fh:
            for ln in fh:
                if ln.startswith("model name"):
                    model = ln.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    with open("/proc/loadavg") as fh:
        load1 = " ".join(fh.read().split()[:3])
    print()
    print("mring watch benchmark, started %s, took %d s"
          % (datetime.datetime.fromtimestamp(t_start, datetime.timezone.utc)
             .strftime("%Y-%m-%d %H:%M:%S UTC"), time.time() - t_start))
    print("machine: %s; nproc %d; kernel %s; load average %s at start, %s at end"
          % (model, os.cpu_count(), os.uname().release, load0, load1))
    built = datetime.datetime.fromtimestamp(os.stat(ARGS.mring).st_mtime, datetime.timezone.utc)
    print("tool: %s (built %s; its source tree now: %s); producer: %s"
          % (ARGS.mring, built.strftime("%Y-%m-%d %H:%M UTC"), describe(ARGS.mring), ARGS.producer))
    print("cpus: producer %s, watcher %s; --reps %d%s"
          % (CPU_PROD if CPU_PROD is not None else "any", CPU_WATCH if CPU_WATCH is not None else "any",
             ARGS.reps, " --quick" if ARGS.quick else ""))
    print("figures: median, min, max over the repetitions (section 3: over the NaNs)")
    print()
    hdr = "%-5s %-50s %9s %9s %9s %-6s %-20s %-7s %s" % ("#", "case", "median", "min", "max",
                                                         "unit", "target", "status", "note")
    print(hdr)
    print(re.sub(".", "-", hdr))
    p = res.get("producer")
    if p:
        print("  1. producer cost: step + %d ON_STEP values, OVERWRITE, 2^20 ring, %d steps "
              "(%.1f s) per run" % (p["values_per_step"], p["steps"], p["loop_s"]))
        row("1.1", "ns per value, no watcher", p["none"], "ns", note="%d reps" % p["none"]["n"])
        row("1.2", "ns per value, watch --nan --stall 5 --above", p["watch"], "ns",
            note="--interval 0.1, started before the loop")
        r = p["ratio_of_medians"]
        row("1.3", "ratio watch / none, per rep", p["paired_ratio"], "x", "no measurable diff.",
            "met" if r <= 1.03 else "MISSED", "ratio of medians %.3f (met: <= 1.03)" % r)
        row("1.4", "watcher CPU during the flat run", p["watcher_cpu_pct"], "%core",
            note="2^20 ring lapped every ~%.0f ms"
            % (2**20 / (VALUES + 2) / (p["steps"] / p["loop_s"]) * 1e3) if p["loop_s"] else "")
        q = p["paired"]
        print("  1b. the same, in one producer run: chunks of %d steps, the watcher SIGSTOPped or "
              "running, alternating" % q["chunk_steps"])
        row("1.5", "ns per value, watcher SIGSTOPped", q["stopped"], "ns",
            note="%d chunks" % q["stopped"]["n"])
        row("1.6", "ns per value, watcher running", q["running"], "ns",
            note="%d chunks" % q["running"]["n"])
        r = q["ratio_of_medians"]
        row("1.7", "ratio running / stopped, per pair", q["paired_ratio"], "x",
            "no measurable diff.", "met" if r <= 1.03 else "MISSED",
            "ratio of medians %.3f (met: <= 1.03)" % r)
    c = res.get("cpu")
    if c:
        print("  2. watcher CPU, --nan --stall 10 --lag 100 --crash --interval 0.1 "
              "'DIR/w-*', %g s per rep after 1 s warm-up" % c["seconds_per_rep"])
        for i, (mode, desc) in enumerate(CPU_MODES):
            m = c[mode]
            target, status = ("< 1 %", ("met" if m["pct"] and m["pct"]["median"] < 1 else "MISSED")) \
                if mode == "step" else ("-", "-")
            row("2.%d" % (i + 1), desc, m["pct"], "%core", target, status,
                "overall %s %%, ticks %s %%; %s wakeups/s; RSS %s KiB; alerts %s%s"
                % (f(m["pct_overall"]), f((m["pct_ticks"] or {}).get("median")),
                   f(m["wakeups_per_s"], 1), m["rss_kib"], "/".join(map(str, m["alerts"])),
                   " (%s)" % ",".join(m["alert_rules"]) if m["alert_rules"] else ""))
    lt = res.get("latency")
    if lt:
        print("  3. event to alert: NaN logged (CLOCK_REALTIME after mring_log) -> alert line "
              "read here")
        k = 1
        for key, l in lt.items():
            iv = l["interval_s"]
            a = l["arrival_ms"]
            ok = a is not None and a["max"] <= iv * 1000 + 20 and not l["missed"]
            row("3.%d" % k, "arrival - log, --interval %s" % key, a, "ms",
                "max <= %g ms" % (iv * 1000 + 20), "met" if ok else "MISSED",
                "p90 %s ms; %d NaNs, %d alerts, %d clears, %d missed, %d wrong step"
                % (f((a or {}).get("p90")), l["n"], l["alerts"], l["clears"], l["missed"],
                   l["wrong_step"]))
            row("3.%d" % (k + 1), "watcher's time= - log, --interval %s" % key,
                l["watcher_time_ms"], "ms", note="time= has ms resolution")
            k += 2
    print()
    for n in NOTES:
        print("note: " + n)
    if PROBLEMS:
        print("problems (%d):" % len(PROBLEMS))
        for pr in PROBLEMS:
            print("  " + pr)
    else:
        print("problems: none")


# ---------------------------------------------------------------- main

def find_tool():
    for d in ("build-rel", "build"):
        p = os.path.join(ROOT, d, "mring")
        if os.access(p, os.X_OK):
            return p
    return None


def find_producer():
    d = os.path.dirname(os.path.abspath(ARGS.mring))
    p = os.path.join(d, "bench_watch_prod")
    if os.access(p, os.X_OK):
        return p
    if os.path.exists(os.path.join(d, "CMakeCache.txt")):
        progress("building bench_watch_prod in %s ..." % d)
        r = subprocess.run(["cmake", "--build", d, "--target", "bench_watch_prod"],
                           capture_output=True, text=True)
        if r.returncode != 0:   # a build dir configured before the target existed
            subprocess.run(["cmake", d], capture_output=True)
            r = subprocess.run(["cmake", "--build", d, "--target", "bench_watch_prod"],
                               capture_output=True, text=True)
        if r.returncode == 0 and os.access(p, os.X_OK):
            return p
        progress(r.stdout[-2000:] + r.stderr[-2000:])
    return None


def main():
    global ARGS, CPU_PROD, CPU_WATCH
    ap = argparse.ArgumentParser(description="benchmark of `mring watch` (see the docstring)")
    ap.add_argument("--mring", help="the tool (default build-rel/mring or build/mring)")
    ap.add_argument("--producer", help="bench_watch_prod (default: next to the tool)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 5; --quick 2)")
    ap.add_argument("--quick", action="store_true", help="short runs (CI smoke, under 60 s)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin producer and watcher")
    ap.add_argument("--only", action="append", choices=("producer", "cpu", "latency"),
                    help="run only this part (repeatable)")
    ARGS = ap.parse_args()
    if ARGS.reps is None:
        ARGS.reps = 2 if ARGS.quick else 5
    if ARGS.reps < 1:
        ap.error("--reps must be at least 1")
    ARGS.mring = ARGS.mring or find_tool()
    if not ARGS.mring or not os.access(ARGS.mring, os.X_OK):
        print("watch.py: no mring tool (build one, or give --mring PATH)", file=sys.stderr)
        return 2
    ARGS.mring = os.path.abspath(ARGS.mring)
    h = subprocess.run([ARGS.mring, "watch", "--help"], capture_output=True, text=True)
    if h.returncode != 0:
        print("watch.py: `%s watch --help` failed (exit status %d): %s"
              % (ARGS.mring, h.returncode, (h.stderr or h.stdout).strip().splitlines()[:1]),
              file=sys.stderr)
        return 2
    ARGS.producer = ARGS.producer or find_producer()
    if not ARGS.producer or not os.access(ARGS.producer, os.X_OK):
        print("watch.py: no bench_watch_prod (cmake --build BUILD --target bench_watch_prod, "
              "or --producer PATH)", file=sys.stderr)
        return 2
    ARGS.producer = os.path.abspath(ARGS.producer)
    cpus = sorted(os.sched_getaffinity(0))
    if not ARGS.no_pin and len(cpus) >= 2:
        CPU_PROD, CPU_WATCH = cpus[0], cpus[1]
    parts = ARGS.only or ["producer", "cpu", "latency"]

    def on_signal(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    t_start = time.time()
    with open("/proc/loadavg") as fh:
        load0 = " ".join(fh.read().split()[:3])
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    shm = tempfile.mkdtemp(prefix="mring-watch-bench.", dir=base)
    ctx = {"shm": shm, "env": dict(os.environ, MRING_DIR=shm)}
    res = {}
    failed = False
    try:
        for part, fn in (("producer", bench_producer), ("cpu", bench_cpu), ("latency", bench_latency)):
            if part in parts:
                try:
                    res[part] = fn(ctx)
                except RuntimeError as e:
                    failed = True
                    problem("%s: %s" % (part, e))
    except KeyboardInterrupt as e:
        failed = True
        problem("interrupted (%s)" % (e or "SIGINT"))
    finally:
        stop_all()
        shutil.rmtree(shm, ignore_errors=True)
    report(res, t_start, load0)
    valid = not failed and not PROBLEMS and all(p in res for p in parts)
    summary_json = {"bench": "mring-watch", "tool": ARGS.mring, "tool_source": describe(ARGS.mring),
                    "reps": ARGS.reps, "quick": ARGS.quick, "valid": valid,
                    "problems": len(PROBLEMS), **res}
    print(json.dumps(summary_json, separators=(",", ":")))
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main())
