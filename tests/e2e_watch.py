#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""End-to-end tests of `mring watch` with real processes and real signals.

Producers are tests/prod_script.c processes driven line by line (each
command is answered once done, so the test knows where a producer is);
`mring watch` runs as a child whose stdout is read line by line with the
arrival time of each line.  Every wait is a bounded wait on a condition
(a line, a file, a process exit), never a fixed sleep; where a test checks
that something does NOT happen, it waits for an event that comes after
the window in question (the producer's answer, the watcher's exit).

Usage: e2e_watch.py --mring PATH --script PATH [--only NAME]
Standard library only.
"""
import argparse
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback

import e2e_common  # tests/, next to this file

ARGS = None
check = e2e_common.check


FIELD = re.compile(r' ([a-z]+)=("(?:[^"\\]|\\.)*"|\S*)')


def parse_line(line):
    """An alert line as a dict: event, then the key=value fields."""
    event, _, rest = line.partition(" ")
    d = {"event": event}
    for k, v in FIELD.findall(" " + rest):
        if v.startswith('"'):
            v = re.sub(r'\\x([0-9a-f]{2})', lambda m: chr(int(m.group(1), 16)), v[1:-1])
            v = re.sub(r'\\(.)', r'\1', v)
        d[k] = v
    return d


class Producer:
    """A prod_script process: one segment, commands answered in order."""

    def __init__(self, env, seg, mode="drop", capacity=4096, run=None, rank=0):
        e = dict(env.env)
        if run:
            e["PROD_RUN"] = run
        e["PROD_RANK"] = str(rank)
        self.seg = seg
        self.path = os.path.join(env.shm, seg)
        self.p = subprocess.Popen([ARGS.script, seg, mode, str(capacity)], env=e,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.p.stdout.readline().strip()
        assert line == "ready", "producer said %r" % line
        env.procs.append(self.p)

    def send(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def answer(self):
        a = self.p.stdout.readline().strip()
        assert a.startswith("ok"), "producer answered %r" % a
        return a

    def cmd(self, line):
        self.send(line)
        return self.answer()

    def metric(self, name, flags="step"):
        return int(self.cmd("metric %s %s" % (name, flags)).split()[1])

    def crash(self):
        self.send("crash")
        self.p.wait(timeout=10)

    def close(self):
        self.send("close")
        self.p.wait(timeout=10)


class Watcher:
    """`mring watch` with its stdout lines collected as they arrive."""

    def __init__(self, env, *args, fd_limit=None):
        self.lines = []		# (arrival time.monotonic(), text)
        self.cv = threading.Condition()
        self.err_path = os.path.join(env.dir, "watch-%d.err" % len(env.procs))
        self.err = open(self.err_path, "w")
        limit = None
        if fd_limit:
            def limit():
                resource.setrlimit(resource.RLIMIT_NOFILE, (fd_limit, fd_limit))
        self.p = subprocess.Popen([ARGS.mring, "watch", "--interval", "0.05"] + list(args),
                                  env=env.env, stdout=subprocess.PIPE, stderr=self.err,
                                  text=True, bufsize=1, preexec_fn=limit)
        env.procs.append(self.p)
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            with self.cv:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self.cv.notify_all()
        with self.cv:
            self.cv.notify_all()

    def wait_for(self, pred, timeout=10):
        """The first parsed line (with its arrival time) that satisfies pred."""
        deadline = time.monotonic() + timeout
        with self.cv:
            while True:
                for t, text in self.lines:
                    d = parse_line(text)
                    if pred(d):
                        return t, d
                left = deadline - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and not self.t.is_alive()):
                    return None, None
                self.cv.wait(left)

    def alerts(self, **kw):
        with self.cv:
            out = [parse_line(x) for _, x in self.lines]
        return [d for d in out if all(d.get(k) == v for k, v in kw.items())]

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        rc = self.p.wait(timeout=30)
        self.t.join(timeout=10)
        self.err.close()
        return rc

    def stderr(self):
        if not self.err.closed:
            self.err.flush()
        with open(self.err_path) as f:
            return f.read()

    def wait_stderr(self, text, timeout=10):
        """Whether stderr says text within timeout (a slow watcher's poll)."""
        deadline = time.monotonic() + timeout
        while text not in self.stderr():
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True


class Env:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mring-e2e-watch-")
        self.shm = os.path.join(self.dir, "shm")
        os.mkdir(self.shm)
        self.env = dict(os.environ, MRING_DIR=self.shm)
        self.procs = []

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGCONT)
                except OSError:
                    pass
                p.kill()
                p.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def is_alert(rule, **kw):
    return lambda d: d["event"] == "alert" and d.get("rule") == rule and \
        all(d.get(k) == v for k, v in kw.items())


# ---- the tests ------------------------------------------------------------


def test_nan_at_step_1234(env):
    w = Watcher(env, "--nan", "--crash", "run*")
    p = Producer(env, "run-nan", capacity=1 << 14)
    loss = p.metric("loss", "step|epoch")
    p.cmd("metric lr step")
    p.cmd("steps 0 1234 %d 1" % loss)
    p.cmd("step 1234")
    p.cmd("log %d nan" % loss)
    t0 = time.monotonic()
    p.cmd("log 1 0.001")
    t, d = w.wait_for(is_alert("nan"), timeout=5)
    check("nan: reported", d is not None, w.stderr())
    if d:
        check("nan: names step 1234, metric loss, value nan",
              (d["step"], d["metric"], d["value"]) == ("1234", "loss", "nan"), d)
        check("nan: within 1 s (%.3f s)" % (t - t0), t - t0 < 1.0)
        check("nan: names segment, run, rank, pid",
              d["segment"] == p.path and d["run"] == "run-nan" and d["rank"] == "0" and
              d["pid"] == str(p.p.pid), d)
    # still NaN at the next steps: no second alert; finite: a clear; NaN: again
    p.cmd("step 1235")
    p.cmd("log %d nan" % loss)
    p.cmd("step 1236")
    p.cmd("log %d 0.5" % loss)
    _, c = w.wait_for(lambda d: d["event"] == "clear" and d["rule"] == "nan", timeout=5)
    check("nan: a finite value clears it, at its step", c is not None and c["step"] == "1236",
          c)
    p.cmd("step 1240")
    p.cmd("log %d -inf" % loss)
    _, d2 = w.wait_for(is_alert("nan", step="1240"), timeout=5)
    check("nan: alerts again after clearing, with -inf", d2 is not None and
          d2["value"] == "-inf", w.alerts())
    check("nan: one alert per condition", len(w.alerts(event="alert", rule="nan")) == 2,
          w.alerts())
    p.close()
    check("nan: no crash alert for a clean close", w.stop() == 0 and
          not w.alerts(rule="crash"), w.alerts())


def test_nan_epoch_only_metric_and_history(env):
    # a NaN logged before the watcher started: a run still going is
    # reported once (first step named), one that ended is not
    p = Producer(env, "hist", capacity=1 << 12)
    a = p.metric("a", "step")
    b = p.metric("b", "step")
    e = p.metric("e", "epoch")
    p.cmd("steps 0 10 %d %d" % (a, b))
    p.cmd("step 10")
    p.cmd("log %d nan" % a)
    p.cmd("log %d nan" % b)
    p.cmd("step 11")
    p.cmd("log %d nan" % a)
    p.cmd("log %d 1" % b)
    w = Watcher(env, "--nan", "hist")
    _, d = w.wait_for(is_alert("nan", metric="a"), timeout=5)
    check("nan history: a run still going is reported with its first step",
          d is not None and d["step"] == "10", w.alerts())
    # an epoch-only metric is not in the ring: the statistics say it
    p.cmd("step 12")
    p.cmd("log %d inf" % e)
    p.cmd("step 13")
    _, d = w.wait_for(is_alert("nan", metric="e"), timeout=5)
    check("nan: an ON_EPOCH-only metric is reported from the statistics",
          d is not None and "not in the ring" in d["detail"], w.alerts())
    p.close()
    w.stop()
    check("nan history: an ended run is not reported", not w.alerts(metric="b"), w.alerts())


def test_stall_sigstop_and_slow(env):
    # a file that is not a segment does not keep --until-done waiting
    with open(os.path.join(env.shm, "st-junk"), "w") as f:
        f.write("not a segment\n")
    w = Watcher(env, "--stall", "1", "--until-done", "st-*")
    fast = Producer(env, "st-stopped")
    fast.metric("loss")
    fast.send("paced 0 100000 5000 0")	# 5 ms per step for minutes
    slow = Producer(env, "st-slow")
    slow.metric("loss")
    slow.send("paced 0 8 400000 0")	# 0.4 s per step, 3.2 s: slow but steady
    # wait until the fast one visibly steps, then stop it
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = subprocess.run([ARGS.mring, "stat", "st-stopped"], env=env.env,
                             capture_output=True, text=True).stdout
        m = re.search(r"^step (\d+)", out, re.M)
        if m and int(m.group(1)) > 20:
            break
    os.kill(fast.p.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    t, d = w.wait_for(is_alert("stall", segment=fast.path), timeout=10)
    check("stall: a SIGSTOPped trainer is reported", d is not None, w.stderr())
    if d:
        check("stall: within the threshold + 1 s (%.2f s after SIGSTOP)" % (t - t0),
              t - t0 < 2.0)
        check("stall: metric is -, value is the seconds without a step",
              d["metric"] == "-" and 1.0 < float(d["value"]) < 2.0, d)
    os.kill(fast.p.pid, signal.SIGCONT)
    _, c = w.wait_for(lambda d: d["event"] == "clear" and d["rule"] == "stall", timeout=10)
    check("stall: SIGCONT clears it", c is not None, w.alerts())
    slow.answer()		# the slow trainer's 8 steps are done
    slow.close()
    os.kill(fast.p.pid, signal.SIGKILL)
    fast.p.wait()
    try:
        rc = w.p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        rc = "still running"
    w.stop()
    check("stall: --until-done exits 0 once every producer is gone", rc == 0, rc)
    check("stall: a slow but steady trainer is not reported",
          not w.alerts(segment=slow.path), w.alerts())


def test_straggler_of_four(env):
    w = Watcher(env, "--lag", "200", "--lag-factor", "3", "--crash", "rk*")
    ps = []
    for rank in range(4):
        p = Producer(env, "rk%d" % rank, capacity=1 << 14, run="job", rank=rank)
        p.metric("loss")
        ps.append(p)
    for rank, p in enumerate(ps):
        # rank 2 is slowed by usleep: 10 ms per step against 1 ms
        p.send("paced 0 3000 %d 0" % (10000 if rank == 2 else 1000))
    _, d = w.wait_for(is_alert("lag", rank="2"), timeout=20)
    check("lag: the slowed rank is named", d is not None, w.alerts())
    _, f = w.wait_for(lambda d: d["event"] == "alert" and d["rule"] == "lag" and
                      "times the other ranks" in d["detail"], timeout=20)
    check("lag-factor: the slowed rank is named", f is not None and f["rank"] == "2",
          w.alerts())
    for rank, p in enumerate(ps):
        if rank != 2:
            p.answer()
            p.close()
    others = [a for a in w.alerts(event="alert", rule="lag") if a["rank"] != "2"]
    check("lag: no other rank is named", not others, others)
    ps[2].p.kill()		# still stepping: killed mid-run
    ps[2].p.wait()
    _, c = w.wait_for(is_alert("crash", rank="2"), timeout=10)
    check("crash: reported, naming the rank", c is not None, w.alerts())
    w.stop()


def test_crash(env):
    w = Watcher(env, "--crash", "--json", "cr")
    p = Producer(env, "cr")
    p.metric("loss")
    p.cmd("steps 0 5 0")
    p.crash()
    _, _ = w.wait_for(lambda d: True, timeout=10)
    w.stop()
    lines = [json.loads(x) for _, x in w.lines]
    check("crash --json: one alert, valid JSON with the documented fields",
          len(lines) == 1 and lines[0]["event"] == "alert" and lines[0]["rule"] == "crash" and
          lines[0]["metric"] is None and lines[0]["step"] == 4 and
          lines[0]["value"] == "nan" and lines[0]["pid"] == p.p.pid, lines)


def test_exec_env_and_limit(env):
    out = os.path.join(env.dir, "exec")
    os.mkdir(out)
    cmd = 'env | grep "^MRING_ALERT_" | sort > %s/run.$$' % out
    w = Watcher(env, "--crash", "--exec", cmd, "--exec-limit", "2", "ex*")
    ps = []
    for i in range(5):
        p = Producer(env, "ex%d" % i, run="exr", rank=i)
        p.metric("loss")
        p.cmd("steps 0 %d 0" % (3 + i))
        ps.append(p)
    for p in ps:
        p.crash()
    for p in ps:
        w.wait_for(is_alert("crash", segment=p.path), timeout=10)
    # the runs that started have finished once the watcher ends (it waits)
    w.stop()
    runs = []
    for name in os.listdir(out):
        with open(os.path.join(out, name)) as f:
            runs.append(dict(x.split("=", 1) for x in f.read().splitlines()))
    check("exec: 5 alerts, exactly 2 runs (--exec-limit 2 per minute)",
          len(w.alerts(event="alert")) == 5 and len(runs) == 2, (len(runs), w.alerts()))
    # counted at most every 10 s and at the end: a slow watcher may say
    # 2 then 1
    not_run = sum(int(n) for n in re.findall(r"--exec: (\d+) alert\(s\) not run", w.stderr()))
    check("exec: the rest is counted on stderr", not_run == 3, w.stderr())
    if runs:
        r = runs[0]
        p = [x for x in ps if x.path == r.get("MRING_ALERT_SEGMENT")]
        check("exec: documented variables",
              set(r) >= {"MRING_ALERT_RULE", "MRING_ALERT_SEGMENT", "MRING_ALERT_RANK",
                         "MRING_ALERT_METRIC", "MRING_ALERT_STEP", "MRING_ALERT_VALUE"} and
              r["MRING_ALERT_RULE"] == "crash" and len(p) == 1 and
              r["MRING_ALERT_RANK"] == str(ps.index(p[0])) and
              r["MRING_ALERT_STEP"] == str(2 + ps.index(p[0])) and
              r["MRING_ALERT_METRIC"] == "" and r["MRING_ALERT_VALUE"] == "nan", r)


def test_exec_one_at_a_time(env):
    out = os.path.join(env.dir, "one")
    os.mkdir(out)
    # each run records its start and end; a run lasts 0.5 s
    cmd = ('echo "$(date +%%s%%N) start $MRING_ALERT_STEP" >> %s/log; sleep 0.5; '
           'echo "$(date +%%s%%N) end $MRING_ALERT_STEP" >> %s/log' % (out, out))
    w = Watcher(env, "--above", "x=10", "--exec", cmd, "--exec-limit", "100", "one")
    p = Producer(env, "one")
    x = p.metric("x")
    # five alert/clear cycles, each seen by the watcher before the next
    for i in range(5):
        p.cmd("step %d" % (2 * i))
        p.cmd("log %d 11" % x)
        p.cmd("flush")
        w.wait_for(is_alert("above", step=str(2 * i)), timeout=5)
        p.cmd("step %d" % (2 * i + 1))
        p.cmd("log %d 1" % x)
        p.cmd("flush")
        w.wait_for(lambda d, i=i: d["event"] == "clear" and d["step"] == str(2 * i + 1),
                   timeout=5)
    p.close()
    w.stop()
    with open(os.path.join(out, "log")) as f:
        ev = [x.split() for x in f.read().splitlines()]
    running, overlap = 0, False
    for _, what, _ in sorted(ev, key=lambda e: int(e[0])):
        running += 1 if what == "start" else -1
        overlap |= running > 1
    steps = [s for _, what, s in ev if what == "start"]
    check("exec: never two runs at once for one rule and segment", not overlap, ev)
    check("exec: the first alert and the latest waiting one ran (0 and 8)",
          steps == ["0", "8"], steps)


def test_signal_checks(env):
    w = Watcher(env, "--crash", "--above", "x=10", "--signal", "USR2", "sig*")
    p = Producer(env, "sig")
    x = p.metric("x")
    p.cmd("step 1")
    p.cmd("log %d 11" % x)
    p.cmd("flush")
    # prod_script does not handle SIGUSR2: the default action ends it
    rc = p.p.wait(timeout=10)
    check("signal: reaches the producer", rc == -signal.SIGUSR2, rc)
    _, d = w.wait_for(is_alert("crash"), timeout=10)
    check("signal: the crash that followed is not signalled (producer gone)",
          d is not None and "not signalling" in w.stderr() and
          "the producer is gone" in w.stderr(), w.stderr())
    w.stop()


def test_dump_flight_recorder(env):
    dump = os.path.join(env.dir, "dumps")
    w = Watcher(env, "--nan=loss", "--dump", dump, "--dump-steps", "50", "fr")
    # OVERWRITE mode, no drainer, a ring far smaller than the run
    p = Producer(env, "fr", mode="overwrite", capacity=1024)
    loss = p.metric("loss")
    acc = p.metric("acc")
    p.cmd("steps 0 5000 %d %d" % (loss, acc))
    p.cmd("step 5000")
    p.cmd("log %d nan" % loss)
    p.cmd("log %d 5000001.25" % acc)
    w.wait_for(is_alert("nan", step="5000"), timeout=5)
    deadline = time.monotonic() + 20
    files = []
    while time.monotonic() < deadline and not files:
        files = [f for f in os.listdir(dump) if f.endswith(".jsonl")] \
            if os.path.isdir(dump) else []
        if not files:
            time.sleep(0.02)
    p.close()
    w.stop()
    check("dump: one file, named SEGMENT.RULE.STEP.TIME.jsonl",
          len(files) == 1 and re.fullmatch(r"fr\.nan\.5000\.\d{8}T\d{6}Z\.jsonl", files[0]),
          files)
    if not files:
        return
    with open(os.path.join(dump, files[0])) as f:
        rows = [json.loads(x) for x in f]
    steps = [r["step"] for r in rows]
    check("dump: the last 50 steps, in order", steps == list(range(4951, 5001)), steps)
    exact = all(r["loss"] == r["step"] * 1000 + loss + 0.25 and
                r["acc"] == r["step"] * 1000 + acc + 0.25 for r in rows[:-1])
    last = rows[-1]
    check("dump: every value exactly as logged", exact and last["loss"] != last["loss"] and
          last["acc"] == 5000001.25, rows[-2:])


def test_corrupt_removed_and_100(env):
    w = Watcher(env, "--nan", "--crash", "many*")
    # one more, with too few descriptors for 100 segments (hard limit)
    few = Watcher(env, "--stall", "0.5", "many*", fd_limit=48)
    ps = [Producer(env, "many%03d" % i, capacity=256) for i in range(100)]
    for p in ps:
        p.metric("loss")
        p.cmd("steps 0 3 0")
    # a corrupt segment: a copy of a real one with its magic damaged, and
    # a file that is not a segment at all
    with open(ps[0].path, "rb") as f:
        data = bytearray(f.read())
    data[0] ^= 0xff
    with open(os.path.join(env.shm, "many-corrupt"), "wb") as f:
        f.write(data)
    with open(os.path.join(env.shm, "many-text"), "w") as f:
        f.write("hello\n")
    # one removed under the watcher while its producer lives: once the
    # watcher watches it (a slow, TSan, watcher may not have polled yet,
    # and a file gone before it was seen was never watched)
    check("100 segments: the one to remove is watched",
          w.wait_stderr("watching %s " % ps[1].path), w.stderr())
    os.unlink(ps[1].path)
    # NaN on every tenth of the others
    sick = ps[10::10]
    for p in sick:
        p.cmd("step 3")
        p.cmd("log 0 nan")
    for p in sick:
        _, d = w.wait_for(is_alert("nan", segment=p.path), timeout=10)
        check("100 segments: NaN in %s reported" % p.seg, d is not None and
              d["step"] == "3", w.alerts())
    ps[50].crash()
    _, d = w.wait_for(is_alert("crash", segment=ps[50].path), timeout=10)
    check("100 segments: a crash among them reported", d is not None, w.alerts())
    check("100 segments: the watcher still runs", w.p.poll() is None)
    # the producers idle: every segment few can watch stalls, once each
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and \
            len({a["segment"] for a in few.alerts(event="alert")}) < 20:
        few.wait_for(lambda d: False, timeout=0.1)
    # a watcher that forgot its segments alerted them again within
    # a few polls (21 times each in 5 s): give it 2 s to do so
    few.wait_for(lambda d: False, timeout=2)
    few.stop()
    # once per condition: per segment, alert and clear alternate (a
    # producer that steps clears its stall; a slow start may do that)
    seq, twice = {}, []
    for a in few.alerts(rule="stall"):
        if seq.get(a["segment"]) == a["event"]:
            twice.append(a)
        seq[a["segment"]] = a["event"]
    watched = [x.split()[3] for x in few.stderr().splitlines()
               if x.startswith("mring watch: watching ")]
    check("out of descriptors: segments watched once each, never forgotten, "
          "each stall alerted once", len(seq) >= 20 and not twice and
          len(watched) == len(set(watched)), (len(seq), twice[:2], len(watched)))
    check("out of descriptors: said once on stderr",
          few.stderr().count("not watched until descriptors are free") == 1, few.stderr())
    # the unlinked segment is noticed at a poll after the unlink: a slow
    # (TSan) watcher may not have polled again yet; wait for it, bounded
    w.wait_stderr("many001: removed")
    for p in ps:
        if p.p.poll() is None:
            p.close()
    rc = w.stop()
    err = w.stderr()
    check("100 segments: exits 0 on SIGTERM", rc == 0, rc)
    check("corrupt: reported once each on stderr, the rest watched",
          err.count("many-corrupt") == 1 and err.count("many-text") == 1, err)
    check("removed: said on stderr", "many001: removed" in err, err)
    check("100 segments: no alert on a healthy segment",
          {a["segment"] for a in w.alerts(event="alert")} ==
          {p.path for p in sick} | {ps[50].path}, w.alerts())


def test_restart_same_name(env):
    w = Watcher(env, "--nan", "--crash", "rs")
    p = Producer(env, "rs")
    p.metric("loss")
    p.cmd("steps 0 3 0")
    p.crash()
    w.wait_for(is_alert("crash"), timeout=10)
    # the run restarts under the same name (MRING_CFG_REPLACE)
    q = Producer(env, "rs")
    q.metric("loss")
    q.cmd("step 7")
    q.cmd("log 0 nan")
    _, d = w.wait_for(is_alert("nan"), timeout=10)
    check("restart: the new producer is watched", d is not None and d["step"] == "7" and
          d["pid"] == str(q.p.pid), w.alerts())
    q.close()
    w.stop()
    check("restart: said on stderr", "replaced" in w.stderr(), w.stderr())


def test_spike_below_and_exec_timeout(env):
    w = Watcher(env, "--spike", "loss=3", "--below", "acc=0.5", "--exec", "sleep 30",
                "--exec-timeout", "0.5", "sp")
    p = Producer(env, "sp")
    loss = p.metric("loss", "step|epoch|mean")
    acc = p.metric("acc", "step")
    for s in range(10):
        p.cmd("step %d" % s)
        p.cmd("log %d 1" % loss)
        p.cmd("log %d 0.9" % acc)
    p.cmd("step 10")
    p.cmd("log %d 20" % loss)	# epoch mean now 30/11: 7.3 times it
    p.cmd("log %d 0.25" % acc)
    p.cmd("flush")
    _, d = w.wait_for(is_alert("spike"), timeout=5)
    check("spike: last value above K times the running epoch mean",
          d is not None and d["metric"] == "loss" and d["step"] == "10" and
          d["value"] == "20", w.alerts())
    _, b = w.wait_for(is_alert("below"), timeout=5)
    check("below: reported with its value", b is not None and b["metric"] == "acc" and
          b["value"] == "0.25", w.alerts())
    p.cmd("step 11")
    p.cmd("log %d 1" % loss)
    p.cmd("flush")
    _, c = w.wait_for(lambda d: d["event"] == "clear" and d["rule"] == "spike", timeout=5)
    check("spike: clears when the value is back", c is not None, w.alerts())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "killed" not in w.stderr():
        time.sleep(0.05)
    check("exec: a run past --exec-timeout is killed", "still running after 0.5 s; killed"
          in w.stderr(), w.stderr())
    p.close()
    w.stop()


def test_exit_and_usage(env):
    w = Watcher(env, "--above", "loss=1", "--exit", "ex1")
    p = Producer(env, "ex1")
    p.metric("loss")
    p.cmd("step 1")
    p.cmd("log 0 2")
    p.cmd("flush")
    rc = w.p.wait(timeout=10)
    check("--exit: exits 4 at the first alert", rc == 4, rc)
    p.close()
    for args, what in ((["--stall", "x", "s"], "--stall: x"),
                       (["--above", "loss", "s"], "not METRIC=NUMBER"),
                       (["--spike", "loss=0", "s"], "K must be above 0"),
                       (["--signal", "NOPE", "s"], "not a signal"),
                       (["--nan"], "no SEGMENT"),
                       (["--nan=", "s"], "--nan: : no metric name"),
                       (["--lag-factor", "1", "s"], "must be above 1"),
                       (["--exec-limit", "0", "s"], "must be at least 1"),
                       (["--dump-steps", "0", "s"], "must be at least 1"),
                       (["--interval", "0", "s"], "not a number of seconds from 0.001"),
                       (["--exec-timeout", "-1", "s"], "not a number of seconds")):
        r = subprocess.run([ARGS.mring, "watch"] + args, env=env.env, capture_output=True,
                           text=True, timeout=10)
        check("usage: %s -> exit 1 and says why" % " ".join(args),
              r.returncode == 1 and what in r.stderr, r.stderr)


TESTS = [v for k, v in sorted(globals().items()) if k.startswith("test_")]


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--mring", required=True)
    ap.add_argument("--script", required=True)
    ap.add_argument("--only")
    ARGS = ap.parse_args()
    for t in TESTS:
        if ARGS.only and t.__name__ != ARGS.only:
            continue
        env = Env()
        try:
            t(env)
        except Exception:
            check(t.__name__, False, traceback.format_exc())
        finally:
            env.cleanup()
    return e2e_common.checks_summary()


if __name__ == "__main__":
    sys.exit(main())
