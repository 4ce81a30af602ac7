#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""End-to-end tests of `mring drain`, `ls`, `stat` and `rm`.

A producer (tests/prod_canary.c) logs values the checker recomputes; the
drain tool writes JSONL/CSV/TensorBoard files; Python's json and csv
modules (and protobuf, in tfevents_check.py) read them back.  Runs under
/usr/bin/python3 with the standard library only (plus what
tfevents_check.py needs).

Usage: e2e_drain.py --mring PATH --producer PATH [--only NAME]
"""
import csv
import json
import math
import os
import random
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import urllib.request

import e2e_common  # tests/, next to this file

ARGS = None
HERE = os.path.dirname(os.path.abspath(__file__))


class Env(e2e_common.BaseEnv):
    """A private MRING_DIR and output directory for one test."""

    def __init__(self, name):
        super().__init__(name, "mring-e2e")

    def reap(self, p):
        """Wait for @p and close its pipes now: a long test that starts
        thousands of processes must not keep a pipe of each open."""
        p.wait()
        for f in (p.stdout, p.stderr):
            if f:
                f.close()
        self.procs.remove(p)

    def producer(self, seg, steps, epoch_steps, step_us, rank=0, cap=0, ranked=0):
        p = subprocess.Popen([ARGS.producer, seg, str(steps), str(epoch_steps),
                              str(step_us), str(rank), str(cap), str(ranked)],
                             env=self.env, stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline().strip() == "ready"
        self.procs.append(p)
        return p

    def script(self, seg, mode="drop", cap=1 << 16, max_metrics=0):
        p = Script(self, seg, mode, cap, max_metrics)
        self.procs.append(p.p)
        return p

    def mring(self, *args, **kw):
        return subprocess.run([ARGS.mring] + list(args), env=self.env,
                              capture_output=True, text=True, **kw)

    def drain(self, *args):
        p = subprocess.Popen([ARGS.mring, "drain"] + list(args), env=self.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p



def Script(env, seg, mode, cap, max_metrics, rank=0):
    return e2e_common.Script(ARGS.script, env, seg, mode, cap, max_metrics, rank)


def no_dup_keys(pairs):
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), "a key twice in one row: %s" % keys
    return dict(pairs)


def read_jsonl_strict(path):
    """Every row, refusing a row that holds a key twice (json.loads would
    keep the last one silently)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line, object_pairs_hook=no_dup_keys) for line in f]


def value(step, metric):
    if metric == 1 and step % 7 == 3:
        return float("nan")
    return step * 1000.0 + metric + 0.25


def expected_rows(steps, epoch_steps):
    """What the producer logged, as the drain must write it."""
    step_rows, epoch_rows = {}, {}
    loss = []
    for s in range(steps):
        e = s // epoch_steps if epoch_steps else 0
        step_rows[s] = {"loss_step": value(s, 0), "lr": value(s, 1), "epoch": e, "step": s}
        loss.append(value(s, 0))
        if epoch_steps and s % epoch_steps == epoch_steps - 1:
            epoch_rows[e] = {"loss_epoch": math.fsum(loss) / len(loss),
                             "acc": value(s, 2), "epoch": e, "step": s}
            loss = []
    return step_rows, epoch_rows


def same(a, b):
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-15, abs_tol=0)
    return a == b


def merge_rows(rows, rank=None):
    """Rows of one step may be split at a flush; no key may come twice."""
    steps, epochs, lost = {}, {}, 0
    for r in rows:
        if rank is not None and r.get("rank") != rank:
            continue
        r = {k: v for k, v in r.items() if k != "rank"}
        if "mring_lost" in r:
            lost += r["mring_lost"]
            continue
        is_epoch = any(k.endswith("_epoch") or k == "acc" for k in r)
        into = epochs.setdefault(r["epoch"], {}) if is_epoch else steps.setdefault(r["step"], {})
        for k, v in r.items():
            if k in ("epoch", "step"):
                assert into.get(k, v) == v, (k, into, r)
            else:
                assert k not in into, "key %s twice at %s" % (k, r)
            into[k] = v
    return steps, epochs, lost


def check_rows(rows, steps, epoch_steps, rank=None):
    got_steps, got_epochs, lost = merge_rows(rows, rank)
    want_steps, want_epochs = expected_rows(steps, epoch_steps)
    assert lost == 0, "lost %d" % lost
    assert sorted(got_steps) == sorted(want_steps), \
        "steps: missing %s extra %s" % (sorted(set(want_steps) - set(got_steps))[:5],
                                        sorted(set(got_steps) - set(want_steps))[:5])
    for s, want in want_steps.items():
        got = got_steps[s]
        assert set(got) == set(want), (s, got, want)
        for k in want:
            assert same(want[k], got[k]), (s, k, got[k], want[k])
    assert sorted(got_epochs) == sorted(want_epochs), (sorted(got_epochs), sorted(want_epochs))
    for e, want in want_epochs.items():
        got = got_epochs[e]
        assert set(got) == set(want), (e, got, want)
        for k in want:
            assert same(want[k], got[k]), (e, k, got[k], want[k])


def drain_with_kills(env, args, seed, min_kills, max_wait=0.25):
    """Run `mring drain --follow ARGS` and SIGKILL it at random instants,
    restarting it with the same arguments, until one run finishes."""
    rng = random.Random(seed)
    kills = 0
    while True:
        d = env.drain(*args)
        try:
            d.wait(timeout=rng.uniform(0.05, max_wait))
            break
        except subprocess.TimeoutExpired:
            d.kill()
            d.wait()
            kills += 1
    assert d.returncode == 0, d.stderr.read()
    assert kills >= min_kills, "the drainer finished too early to be killed (%d)" % kills


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


def read_csv(path):
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            d = {}
            for k, v in r.items():
                if v == "":
                    continue
                d[k] = int(v) if k in ("step", "epoch", "rank", "mring_lost") else float(v)
            rows.append(d)
    return rows


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def read_tfevents(path):
    """(step, tag) -> value, through the independent protobuf reader."""
    r = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "tfevents_check.py"), path],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1].startswith("records ") and lines[-1].endswith(" OK"), lines[-1]
    scalars = {}
    for line in lines[:-1]:
        step, tag, val = line.split(" ")
        key = (int(step), tag)
        assert key not in scalars, "(step, tag) %s written twice" % (key,)
        scalars[key] = float(val)
    return scalars


def check_tfevents(scalars, steps, epoch_steps):
    want_steps, want_epochs = expected_rows(steps, epoch_steps)
    want = {}
    for rows in (want_steps.values(), want_epochs.values()):
        for r in rows:
            for k, v in r.items():
                if k not in ("epoch", "step"):
                    want[(r["step"], k)] = f32(v)
    assert set(scalars) == set(want), (sorted(set(want) - set(scalars))[:5],
                                       sorted(set(scalars) - set(want))[:5])
    for key, v in want.items():
        assert same(v, scalars[key]), (key, scalars[key], v)


def tb_file(env):
    files = [f for f in os.listdir(env.path("tb")) if "tfevents" in f]
    assert len(files) == 1, files
    return env.path("tb", files[0])


# ---- tests ------------------------------------------------------------------

def test_all_sinks_agree_with_independent_readers(env):
    env.producer("run", 700, 100, 0).wait()
    r = env.mring("drain", "--jsonl", env.path("out.jsonl"), "--csv", env.path("csv"),
                  "--tensorboard", env.path("tb"), "run")
    assert r.returncode == 0, r.stderr
    check_rows(read_jsonl(env.path("out.jsonl")), 700, 100)
    check_rows(read_csv(env.path("csv", "metrics.csv")), 700, 100)
    check_tfevents(read_tfevents(tb_file(env)), 700, 100)


def test_killed_drainer_is_exact_in_every_sink(env):
    steps, ep = 5000, 400
    prod = env.producer("run", steps, ep, 100)
    drain_with_kills(env, ["--jsonl", env.path("out.jsonl"), "--csv", env.path("csv"),
                           "--tensorboard", env.path("tb"), "--follow", "--flush-ms", "5",
                           "run"], 11, 3)
    assert prod.wait() == 0
    check_rows(read_jsonl(env.path("out.jsonl")), steps, ep)
    check_rows(read_csv(env.path("csv", "metrics.csv")), steps, ep)
    check_tfevents(read_tfevents(tb_file(env)), steps, ep)


def expected_windows(steps, epoch_steps, every):
    """--every: per window of `every` steps (never across an epoch), the
    mean of each metric's finite values at the window's last step."""
    rows, win = {}, {}

    def close():
        if win:
            last = max(win["steps"])
            row = {"epoch": win["epoch"], "step": last}
            for k, vals in win["vals"].items():
                fin = [v for v in vals if not math.isnan(v)]
                row[k] = math.fsum(fin) / len(fin) if fin else float("nan")
            rows[last] = row
            win.clear()

    for s in range(steps):
        e = s // epoch_steps if epoch_steps else 0
        if win and (s // every != win["index"] or e != win["epoch"]):
            close()
        if not win:
            win.update(index=s // every, epoch=e, steps=[], vals={"loss_step": [], "lr": []})
        win["steps"].append(s)
        win["vals"]["loss_step"].append(value(s, 0))
        win["vals"]["lr"].append(value(s, 1))
        if epoch_steps and s % epoch_steps == epoch_steps - 1:
            close()
    close()
    return rows


def check_windows(rows, steps, epoch_steps, every):
    want = expected_windows(steps, epoch_steps, every)
    got = {r["step"]: r for r in rows if "loss_step" in r}
    assert len(got) == len([r for r in rows if "loss_step" in r]), "a window row twice"
    assert sorted(got) == sorted(want), (sorted(set(want) - set(got))[:5],
                                         sorted(set(got) - set(want))[:5])
    for st, w in want.items():
        assert set(got[st]) == set(w), (got[st], w)
        for k in w:
            assert math.isclose(w[k], got[st][k], rel_tol=1e-12) or same(w[k], got[st][k]), \
                (st, k, got[st][k], w[k])
    _, want_epochs = expected_rows(steps, epoch_steps)
    epochs = [r for r in rows if "loss_epoch" in r]
    assert len(epochs) == len(want_epochs), (len(epochs), len(want_epochs))


def test_every_n_steps_gives_window_means(env):
    # 7 does not divide the epoch of 100: windows are cut at epoch ends
    env.producer("run", 1000, 100, 0).wait()
    r = env.mring("drain", "--every", "7", "--jsonl", env.path("out.jsonl"), "run")
    assert r.returncode == 0, r.stderr
    check_windows(read_jsonl(env.path("out.jsonl")), 1000, 100, 7)
    r = env.mring("drain", "--every", "0", "--jsonl", env.path("x.jsonl"), "run")
    assert r.returncode == 1 and "--every" in r.stderr


def test_every_survives_kills_exactly(env):
    steps, ep, every = 4000, 1000, 50
    prod = env.producer("run", steps, ep, 100)
    drain_with_kills(env, ["--every", str(every), "--jsonl", env.path("out.jsonl"),
                           "--follow", "--flush-ms", "5", "run"], 5, 2, max_wait=0.2)
    assert prod.wait() == 0
    check_windows(read_jsonl(env.path("out.jsonl")), steps, ep, every)


def check_reduced(rows, steps, ep, nranks):
    reduced = [r for r in rows if "rank" not in r]
    per_rank = [r for r in rows if "rank" in r and "loss_epoch" in r]
    assert len(per_rank) == nranks * (steps // ep), len(per_rank)
    assert len(reduced) == steps // ep, [(r["epoch"], r["step"]) for r in reduced]
    for e, r in enumerate(sorted(reduced, key=lambda x: x["epoch"])):
        ss = range(e * ep, (e + 1) * ep)
        vw = math.fsum((value(s, 0) + 0.5 * k) * (k + 1) for k in range(nranks) for s in ss)
        w = math.fsum(k + 1 for k in range(nranks) for s in ss)
        assert r["epoch"] == e and r["step"] == (e + 1) * ep - 1, r
        assert math.isclose(r["loss_epoch"], vw / w, rel_tol=1e-13), (r, vw / w)
        assert r["acc"] == value((e + 1) * ep - 1, 2) + nranks - 1, r


def test_reduce_ranks_gives_exact_cross_rank_epoch_rows(env):
    steps, ep, nranks = 300, 100, 3
    prods = [env.producer("run-r%d" % r, steps, ep, 50, rank=r, ranked=1)
             for r in range(nranks)]
    d = env.drain("--reduce-ranks", "--jsonl", env.path("out.jsonl"), "--follow",
                  "--flush-ms", "5", "run-r*")
    for p in prods:
        assert p.wait() == 0
    _, err = d.communicate(timeout=30)
    assert d.returncode == 0, err
    check_reduced(read_jsonl(env.path("out.jsonl")), steps, ep, nranks)


def test_reduce_ranks_survives_kills_exactly(env):
    steps, ep, nranks = 3000, 100, 2
    prods = [env.producer("run-r%d" % r, steps, ep, 150, rank=r, ranked=1)
             for r in range(nranks)]
    drain_with_kills(env, ["--reduce-ranks", "--jsonl", env.path("out.jsonl"), "--follow",
                           "--flush-ms", "2", "run-r*"], 3, 2, max_wait=0.2)
    for p in prods:
        assert p.wait() == 0
    check_reduced(read_jsonl(env.path("out.jsonl")), steps, ep, nranks)


def proc_rss_kb(pid, field="VmRSS"):
    """VmRSS, or RssAnon: the heap and stacks alone, without the pages of
    mapped segments a reader touches as their rings fill."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def start_serve(env, *args):
    """`mring serve` on a free port; returns the process and host:port."""
    p = subprocess.Popen([ARGS.mring, "serve", "--listen", "127.0.0.1:0"] + list(args),
                         env=env.env, stderr=subprocess.PIPE, text=True)
    env.procs.append(p)
    m = re.search(r"listening on http://([0-9.]+:\d+)/metrics", p.stderr.readline())
    assert m, "mring serve did not start"
    # keep reading its stderr so that it never blocks writing there
    threading.Thread(target=p.stderr.read, daemon=True).start()
    return p, m.group(1)


def scrape(addr):
    with urllib.request.urlopen("http://%s/metrics" % addr, timeout=10) as r:
        assert r.status == 200
        return r.read().decode()


def serve_fds(env, pid):
    """(segments, others) among a process's descriptors, sockets left out:
    connection sockets come and go with scrapers, and segments with the
    churn (serve drops a removed one at its next discovery round)."""
    segs = others = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except FileNotFoundError:
            continue
        if target.startswith(env.shm + "/"):
            segs += 1
        elif target != env.shm and not target.startswith("socket:"):
            others += 1         # (discovery opens the directory itself briefly)
    return segs, others


def test_soak(env):
    """MRING_SOAK_SECONDS (default 60): a producer at a steady ~5 k steps/s,
    `mring drain --follow` to all three sinks SIGKILLed and restarted every
    0.5-2 s, `mring stat` observing all along, a long-lived `mring serve`
    scraped all along (it discovers and drops the churn), and short-lived
    segments created and removed beside it.  Then every row is checked, and
    neither the producer's nor mring serve's RSS and file descriptors may
    have grown."""
    seconds = float(os.environ.get("MRING_SOAK_SECONDS", "60"))
    steps = int(seconds * 5000)
    prod = env.producer("run", steps, 5000, 100)
    time.sleep(0.2)
    rss0 = proc_rss_kb(prod.pid)
    fds0 = len(os.listdir("/proc/%d/fd" % prod.pid))
    serve, addr = start_serve(env, "--interval", "0.1", "*")
    scrapes, serve_samples = 0, []
    rng = random.Random(1)
    args = ["--jsonl", env.path("out.jsonl"), "--csv", env.path("csv"),
            "--tensorboard", env.path("tb"), "--follow", "--flush-ms", "50", "run"]
    kills = churn = observed = 0
    rss1 = fds1 = None
    while True:
        d = env.drain(*args)
        deadline = time.time() + rng.uniform(0.5, 2.0)
        while time.time() < deadline and d.poll() is None:
            r = env.mring("stat", "run")
            assert r.returncode == 0, r.stderr
            observed += 1
            name = "churn-%d" % churn
            env.reap(env.producer(name, 10, 5, 0))
            assert env.mring("rm", "--force", name).returncode == 0   # never drained
            churn += 1
            body = scrape(addr)
            assert 'segment="run"' in body, body[:500]
            scrapes += 1
            # after a scrape has returned, no connection of ours is open
            serve_samples.append((proc_rss_kb(serve.pid, "RssAnon"),
                                  serve_fds(env, serve.pid)[1]))
            # sample only mid-run: a producer near its last step may be
            # exiting, closing its descriptors and unmapping as we look
            step = int(r.stdout.split("step ", 1)[1].split()[0])
            if step < steps * 0.9 and prod.poll() is None:
                rss1 = proc_rss_kb(prod.pid)
                fds1 = len(os.listdir("/proc/%d/fd" % prod.pid))
            time.sleep(0.05)
        if d.poll() is not None:
            break
        d.kill()
        env.reap(d)
        kills += 1
    assert d.returncode == 0, d.stderr.read()
    assert prod.wait() == 0
    assert serve.poll() is None, "mring serve died"
    # every churn segment was removed: serve must let go of all but "run"
    deadline = time.time() + 10
    while serve_fds(env, serve.pid)[0] != 1 and time.time() < deadline:
        time.sleep(0.05)
    assert serve_fds(env, serve.pid)[0] == 1, "serve holds removed segments"
    serve.send_signal(signal.SIGTERM)
    assert serve.wait(timeout=10) == 0
    # serve's memory settles once every connection thread's malloc arena
    # exists: compare the last sample with one a tenth into the run
    warm = serve_samples[len(serve_samples) // 10]
    last = serve_samples[-1]
    print("  soak: %.0f s, %d steps, %d drainer kills, %d observations, %d segments "
          "created and removed, %d scrapes; producer RSS %d -> %s KiB, fds %d -> %s; "
          "serve RssAnon %d -> %d -> %d KiB, other fds %d -> %d"
          % (seconds, steps, kills, observed, churn, scrapes, rss0, rss1, fds0, fds1,
             warm[0], serve_samples[len(serve_samples) // 2][0], last[0], warm[1],
             last[1]))
    check_rows(read_jsonl(env.path("out.jsonl")), steps, 5000)
    check_rows(read_csv(env.path("csv", "metrics.csv")), steps, 5000)
    check_tfevents(read_tfevents(tb_file(env)), steps, 5000)
    # under ThreadSanitizer RSS grows with TSan's own shadow and history of
    # the segment's pages as the ring fills; only other builds measure ours
    if "thread" not in os.environ.get("MRING_SANITIZE", ""):
        assert rss1 is None or rss1 <= rss0 + 64, (rss0, rss1)
    assert fds1 is None or fds1 == fds0, (fds0, fds1)
    assert not [f for f in os.listdir(env.shm) if f.startswith("churn-")]
    # sanitizers keep freed memory (ASan's quarantine) or shadow it (TSan);
    # there LeakSanitizer at serve's exit is the leak check
    if not os.environ.get("MRING_SANITIZE"):
        assert last[0] <= warm[0] + 1024, ("serve heap grew", warm, last)
    assert last[1] == warm[1], ("serve fds", warm, last)


def test_sigterm_flushes_and_a_restart_continues(env):
    prod = env.producer("run", 3000, 300, 200)
    d = env.drain("--jsonl", env.path("out.jsonl"), "--follow", "run")
    time.sleep(0.3)
    d.send_signal(signal.SIGTERM)
    _, err = d.communicate(timeout=10)
    assert d.returncode == 128 + signal.SIGTERM, (d.returncode, err)
    n = len(read_jsonl(env.path("out.jsonl")))
    assert n > 0, "nothing flushed at SIGTERM (default --flush-ms is 1 s)"
    r = env.mring("drain", "--jsonl", env.path("out.jsonl"), "--follow", "run")
    assert r.returncode == 0, r.stderr
    assert prod.wait() == 0
    check_rows(read_jsonl(env.path("out.jsonl")), 3000, 300)

def test_jsonl_rows_match_what_was_logged(env):
    env.producer("run", 1000, 100, 0).wait()
    r = env.mring("drain", "--jsonl", env.path("out.jsonl"), "run")
    assert r.returncode == 0, r.stderr
    assert "3000 events" not in r.stderr  # events include STEP and epoch records
    check_rows(read_jsonl(env.path("out.jsonl")), 1000, 100)
    # a second run with the same arguments adds nothing
    r = env.mring("drain", "--jsonl", env.path("out.jsonl"), "run")
    assert r.returncode == 0, r.stderr
    check_rows(read_jsonl(env.path("out.jsonl")), 1000, 100)


def test_killed_drainer_restarts_exactly_once(env):
    steps, ep = 6000, 500
    prod = env.producer("run", steps, ep, 100)
    out = env.path("out.jsonl")
    drain_with_kills(env, ["--jsonl", out, "--follow", "--flush-ms", "5", "run"], 7, 3)
    assert prod.wait() == 0
    check_rows(read_jsonl(out), steps, ep)


def test_follow_reports_a_crashed_producer(env):
    prod = env.producer("run", 10 ** 9, 0, 200)
    d = env.drain("--jsonl", env.path("out.jsonl"), "--follow", "--flush-ms", "10", "run")
    time.sleep(0.3)
    prod.send_signal(signal.SIGKILL)
    prod.wait()
    _, err = d.communicate(timeout=20)
    assert d.returncode == 3, (d.returncode, err)
    assert "crashed" in err, err
    rows = [r for r in read_jsonl(env.path("out.jsonl")) if "loss_step" in r]
    assert len(rows) > 10
    for r in rows:  # a step's row may be split at a flush; check what is there
        assert same(r["loss_step"], value(r["step"], 0)), r


def test_wait_starts_before_the_producer(env):
    d = env.drain("--jsonl", env.path("out.jsonl"), "--wait", "--follow", "run")
    time.sleep(0.3)
    env.producer("run", 300, 100, 0).wait()
    _, err = d.communicate(timeout=20)
    assert d.returncode == 0, err
    check_rows(read_jsonl(env.path("out.jsonl")), 300, 100)


def test_several_ranks_carry_rank(env):
    env.producer("run-r0", 200, 50, 0, rank=0).wait()
    env.producer("run-r1", 200, 50, 0, rank=1).wait()
    r = env.mring("drain", "--jsonl", env.path("out.jsonl"), "run-r*")
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(env.path("out.jsonl"))
    for rank in (0, 1):
        check_rows(rows, 200, 50, rank=rank)


def test_losses_become_rows(env):
    # capacity 64, nobody draining: most records are dropped
    env.producer("run", 100, 0, 0, cap=64).wait()
    r = env.mring("drain", "--jsonl", env.path("out.jsonl"), "run")
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(env.path("out.jsonl"))
    lost = sum(x.get("mring_lost", 0) for x in rows)
    n_values = sum(len([k for k in x if k not in ("epoch", "step", "mring_lost")]) for x in rows)
    n_steps = len({x["step"] for x in rows if "loss_step" in x})
    # 100 steps x (STEP of two slots + loss + lr); LOST counts slots
    assert n_values + 2 * n_steps + lost == 400, (n_values, n_steps, lost)
    assert "%d lost" % lost in r.stderr, r.stderr


def test_bad_command_lines_and_segments(env):
    r = env.mring("drain", "--help")
    assert r.returncode == 0 and "usage" in r.stdout
    r = env.mring("drain", "--jsonl", env.path("x"), "missing")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "missing" in r.stderr, r.stderr
    r = env.mring("drain", "run")
    assert r.returncode == 1 and "no output" in r.stderr
    r = env.mring("drain", "--flush-ms", "soon", "--jsonl", env.path("x"), "run")
    assert r.returncode == 1 and "--flush-ms" in r.stderr
    r = env.mring("nonsense")
    assert r.returncode == 1 and "unknown command" in r.stderr
    with open(os.path.join(env.shm, "junk"), "wb") as f:
        f.write(b"not a segment" * 400)
    r = env.mring("drain", "--jsonl", env.path("x"), "junk")
    assert r.returncode == 1 and "not an mring segment" in r.stderr, r.stderr
    r = env.mring("rm", "junk")
    assert r.returncode == 1 and "not an mring segment" in r.stderr, r.stderr
    assert os.path.exists(os.path.join(env.shm, "junk")), "rm must not remove a non-segment"
    r = env.mring("stat")
    assert r.returncode == 1 and "usage" in r.stderr
    r = env.mring("stat", "junk")
    assert r.returncode == 1 and "not an mring segment" in r.stderr, r.stderr
    r = env.mring("ls", "/nonexistent-dir")
    assert r.returncode == 1 and "No such file" in r.stderr, r.stderr


def test_drain_state_that_does_not_fit_is_refused(env):
    env.producer("run", 30, 10, 0).wait()
    out = env.path("out.jsonl")
    r = env.mring("drain", "--jsonl", out, "run")
    assert r.returncode == 0, r.stderr
    state = out + ".mring-state"
    # the state of other outputs
    r = env.mring("drain", "--csv", env.path("csv2"), "--state", state, "run")
    assert r.returncode == 1 and "an output (jsonl" in r.stderr, r.stderr
    # an --every window in the state, but no --every now
    env.producer("win", 25, 0, 0).wait()
    wout = env.path("win.jsonl")
    r = env.mring("drain", "--every", "10", "--jsonl", wout, "win")
    assert r.returncode == 0, r.stderr
    with open(wout + ".mring-state") as f:
        saved = f.read()
    with open(wout + ".mring-state", "w") as f:   # pretend the producer lives on
        f.write(saved + "window 2 24 0 0 1 0:0x1p+0:1:0 | %s\n" % os.path.join(env.shm, "win"))
    r = env.mring("drain", "--jsonl", wout, "win")
    assert r.returncode == 1 and "give --every" in r.stderr, r.stderr
    # a segment replaced since the state was written
    env.producer("run", 30, 10, 0).wait()        # MRING_CFG_REPLACE: a new segment
    r = env.mring("drain", "--jsonl", out, "run")
    assert r.returncode == 1 and "was replaced" in r.stderr, r.stderr
    # not a state file at all
    with open(state, "w") as f:
        f.write("hello\n")
    r = env.mring("drain", "--jsonl", out, "run")
    assert r.returncode == 1 and "not a drain state file" in r.stderr, r.stderr
    check_rows(read_jsonl(out), 30, 10)


def test_an_output_added_later_starts_at_the_drain_position(env):
    prod = env.producer("run", 400, 10, 1000)      # about 0.4 s of steps
    time.sleep(0.1)
    out = env.path("out.jsonl")
    r = env.mring("drain", "--jsonl", out, "run")   # mid-run: part of the rows
    assert r.returncode == 0, r.stderr
    first = len(read_jsonl(out))
    assert prod.wait() == 0
    # an existing file where the new output goes is never truncated
    os.makedirs(env.path("taken"))
    with open(env.path("taken", "metrics.csv"), "w") as f:
        f.write("precious\n")
    r = env.mring("drain", "--jsonl", out, "--csv", env.path("taken"), "run")
    assert r.returncode == 2 and "output exists" in r.stderr, r.stderr
    with open(env.path("taken", "metrics.csv")) as f:
        assert f.read() == "precious\n"
    assert len(read_jsonl(out)) == first
    # a new output gets exactly the rows the old ones get from now on
    r = env.mring("drain", "--jsonl", out, "--csv", env.path("csv"), "run")
    assert r.returncode == 0 and "new output" in r.stderr, r.stderr
    rows = read_jsonl(out)
    check_rows(rows, 400, 10)
    want, got = rows[first:], read_csv(env.path("csv", "metrics.csv"))
    assert len(got) == len(want), (first, len(rows), len(got))
    for g, w in zip(got, want):
        assert set(g) == set(w) and all(same(g[k], w[k]) for k in w), (g, w)
    # and from then on it is resumed like the others
    r = env.mring("drain", "--jsonl", out, "--csv", env.path("csv"), "run")
    assert r.returncode == 0 and "new output" not in r.stderr, r.stderr


def test_an_output_directory_that_is_a_file_is_named(env):
    env.producer("run", 10, 5, 0).wait()
    with open(env.path("f"), "w") as f:
        f.write("x\n")
    for opt in ("--csv", "--tensorboard"):
        r = env.mring("drain", opt, env.path("f"), "run")
        assert r.returncode == 2, (opt, r.returncode, r.stderr)
        assert r.stderr.count("\n") == 1 and opt in r.stderr and "not a directory" in r.stderr, r.stderr
    assert " read 0 " in env.mring("stat", "run").stdout


def test_unwritable_output_keeps_records_in_the_ring(env):
    env.producer("run", 50, 0, 0).wait()
    with open(env.path("a-file"), "w") as f:
        f.write("not a directory\n")
    r = env.mring("drain", "--jsonl", env.path("a-file", "out.jsonl"), "run")
    assert r.returncode == 2, r.stderr
    assert "Not a directory" in r.stderr and "a-file" in r.stderr, r.stderr
    st = env.mring("stat", "run").stdout
    assert " read 0 " in st, st
    r = env.mring("drain", "--jsonl", env.path("out.jsonl"), "run")
    assert r.returncode == 0
    check_rows(read_jsonl(env.path("out.jsonl")), 50, 0)


def test_full_output_disk_is_an_error_and_nothing_moves(env):
    small = env.path("small")
    os.mkdir(small)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", small]).returncode:
        print("  (skipped: cannot mount a small tmpfs)")
        return
    try:
        env.producer("run", 5000, 0, 0).wait()
        r = env.mring("drain", "--jsonl", os.path.join(small, "out.jsonl"), "run")
        assert r.returncode == 2, (r.returncode, r.stderr)
        assert "No space left" in r.stderr, r.stderr
        # the summary says what was committed: nothing
        assert "mring drain: 0 events, 0 rows" in r.stderr, r.stderr
        st = env.mring("stat", "run").stdout
        assert " read 0 " in st, st
    finally:
        subprocess.run(["umount", small])


def test_ls_stat_rm(env):
    live = env.producer("live", 10 ** 9, 0, 1000)
    env.producer("done", 10, 5, 0).wait()
    r = env.mring("ls")
    assert r.returncode == 0
    lines = {l.split()[0]: l.split() for l in r.stdout.splitlines()[1:]}
    assert lines["live"][1] == "alive" and lines["done"][1] == "closed", r.stdout
    r = env.mring("stat", "done")
    assert r.returncode == 0 and "loss" in r.stdout and "closed" in r.stdout, r.stdout
    r = env.mring("rm", "live")
    assert r.returncode == 1 and "alive" in r.stderr
    assert os.path.exists(os.path.join(env.shm, "live"))
    r = env.mring("rm", "done")                   # 40 records never drained
    assert r.returncode == 1 and "--force" in r.stderr, r.stderr
    r = env.mring("rm", "--force", "done")
    assert r.returncode == 0 and not os.path.exists(os.path.join(env.shm, "done"))
    live.kill()
    live.wait()
    r = env.mring("rm", "--force", "live")
    assert r.returncode == 0, r.stderr


# ---- issue 11: the drain's promises, each from a reproduced failure -----------

ROW_KEYS = ("step", "epoch", "rank", "mring_lost")


def script_value_id(step, v):
    """prod_script logs s * 1000 + id + 0.25: the metric id of a value."""
    return round(v - step * 1000 - 0.25)


def check_script_keys(rows, names, want):
    """Each value sits under its own metric's key, each (step, id) of
    @want exactly once, and nothing else."""
    seen = set()
    for r in rows:
        for k, v in r.items():
            if k in ROW_KEYS:
                continue
            i = script_value_id(r["step"], v)
            assert names.get(i) == k, "value %r of metric %s under key %r: %s" % (
                v, names.get(i), k, r)
            assert (r["step"], i) not in seen, "(step, metric) %s twice" % ((r["step"], i),)
            seen.add((r["step"], i))
    assert seen == want, (sorted(want - seen)[:5], sorted(seen - want)[:5])


def tb_rows(scalars):
    """(step, tag) -> value as rows of one step each, for check_script_keys."""
    rows = {}
    for (step, tag), v in scalars.items():
        rows.setdefault(step, {"step": step})[tag] = v
    return list(rows.values())


def first_line(pipe, seconds=20):
    """The next line on @pipe, or fail after @seconds (never hang)."""
    import select
    r, _, _ = select.select([pipe], [], [], seconds)
    assert r, "nothing said within %d s" % seconds
    return pipe.readline()


def segment_file(env, name):
    return os.path.join(env.shm, name)


def metric_slot_offset(path, mid):
    """The byte offset of metric @mid's slot (docs/segment-format.md)."""
    with open(path, "rb") as f:
        head = f.read(64)
    metrics_offset = struct.unpack_from("<Q", head, 40)[0]
    return metrics_offset + 512 * mid


def patch(path, off, data):
    with open(path, "r+b") as f:
        f.seek(off)
        old = f.read(len(data))
        f.seek(off)
        f.write(data)
    return old


def drained_all(env, seg):
    """The drain position has reached what the producer wrote."""
    st = env.mring("stat", seg).stdout
    written = re.search(r"written (\d+)", st)
    read = re.search(r"read (\d+)", st)
    return written and read and written.group(1) == read.group(1)


def test_metrics_registered_mid_run_keep_their_keys(env):
    # A new metric appears while a step row is being built, 300 times,
    # each after the drain has taken everything before it: its name table
    # grows under a half-built row every time.
    p = env.script("run", cap=1 << 20)
    names = {p.metric("loss", "step"): "loss"}
    d = env.drain("--jsonl", env.path("out.jsonl"), "--csv", env.path("csv"),
                  "--tensorboard", env.path("tb"), "--follow", "--flush-ms", "0", "run")
    p.do("steps 0 10 0")
    want = {(s, 0) for s in range(10)}
    for k in range(300):
        deadline = time.time() + 20
        while not drained_all(env, "run"):
            assert time.time() < deadline and d.poll() is None, "the drain stopped"
            time.sleep(0.001)
        mid = p.metric("eval/m%03d" % k)
        names[mid] = "eval/m%03d" % k
        p.do("steps %d %d 0 %d" % (10 + k, 11 + k, mid))
        want |= {(10 + k, 0), (10 + k, mid)}
    p.close()
    _, err = d.communicate(timeout=60)
    assert d.returncode == 0, err
    check_script_keys(read_jsonl_strict(env.path("out.jsonl")), names, want)
    check_script_keys(read_csv(env.path("csv", "metrics.csv")), names, want)
    check_script_keys(tb_rows(read_tfevents(tb_file(env))), names, want)


def test_every_resumes_with_an_epoch_end_first(env):
    p = env.script("run")
    p.metric("a")
    p.do("steps 0 5 0")
    out = env.path("out.jsonl")
    r = env.mring("drain", "--every", "10", "--jsonl", out, "run")
    assert r.returncode == 0, r.stderr          # the window stays open in the state
    p.do("epoch")
    p.close()
    r = env.mring("drain", "--every", "10", "--jsonl", out, "run")
    assert r.returncode == 0, (r.returncode, r.stderr)
    rows = read_jsonl_strict(out)
    assert rows == [{"a": math.fsum(s * 1000 + 0.25 for s in range(5)) / 5,
                     "epoch": 0, "step": 4}], rows


def test_a_record_that_fails_commits_nothing_past_it(env):
    p = env.script("run")
    p.metric("a")
    p.do("steps 0 50 0")
    p.metric("b")
    p.do("steps 50 100 0 1")
    p.close()
    seg = segment_file(env, "run")
    off = metric_slot_offset(seg, 1)
    good = patch(seg, off, b"B" * 64)            # metric b's name: no NUL, corrupt
    out = env.path("out.jsonl")
    r = env.mring("drain", "--jsonl", out, "run")
    assert r.returncode == 1 and "record" in r.stderr, (r.returncode, r.stderr)
    assert " read 0 " in env.mring("stat", "run").stdout
    patch(seg, off, good)                        # repaired: everything comes
    r = env.mring("drain", "--jsonl", out, "run")
    assert r.returncode == 0, r.stderr
    want = {(s, 0) for s in range(100)} | {(s, 1) for s in range(50, 100)}
    check_script_keys(read_jsonl_strict(out), {0: "a", 1: "b"}, want)


def test_overwritten_records_are_reported_after_a_restart(env):
    # A drain killed between its state rename and mring_commit(): the
    # state says 30, the library still says 0.  The producer then laps
    # the ring; the LOST range [0, 237) is partly (30) in the files.
    # Step i takes slots 3i, 3i+1 (STEP) and 3i+2 (its value).
    p = env.script("run", mode="overwrite", cap=64)
    p.metric("x")
    p.do("steps 0 10 0")                          # slots 0..29
    out = env.path("out.jsonl")
    r = env.mring("drain", "--jsonl", out, "run")
    assert r.returncode == 0, r.stderr
    seg = segment_file(env, "run")
    patch(seg, 384, struct.pack("<Q", 0))         # tail
    patch(seg, 408, struct.pack("<10Q", *[0] * 10))   # both drain position copies
    # slots 30..299; the ring keeps 236..299, where 236 is step 78's value
    # (no context without its STEP): lost to 237
    p.do("steps 10 100 0")
    p.close()
    r = env.mring("drain", "--jsonl", out, "run")
    assert r.returncode == 0, r.stderr
    rows = read_jsonl_strict(out)
    lost = sum(x.get("mring_lost", 0) for x in rows)
    steps = sorted(x["step"] for x in rows if "x" in x)
    assert lost == 237 - 30, (lost, r.stderr)
    assert steps == list(range(10)) + list(range(79, 100)), steps


def test_a_drain_killed_before_its_first_commit_resumes(env):
    p = env.script("run")
    p.metric("x")                                 # idle: nothing to commit yet
    args = ["--jsonl", env.path("out.jsonl"), "--csv", env.path("csv"),
            "--tensorboard", env.path("tb"), "--follow", "run"]
    for _ in range(3):
        d = env.drain(*args)
        deadline = time.time() + 20
        while not (os.path.exists(env.path("csv", "metrics.csv")) and
                   os.path.isdir(env.path("tb")) and os.listdir(env.path("tb"))):
            assert time.time() < deadline and d.poll() is None, d.stderr.read()
            time.sleep(0.005)
        d.kill()
        d.wait()
    d = env.drain(*args)
    p.do("steps 0 100 0")
    p.close()
    _, err = d.communicate(timeout=30)
    assert d.returncode == 0, (d.returncode, err)
    want = {(s, 0) for s in range(100)}
    check_script_keys(read_jsonl_strict(env.path("out.jsonl")), {0: "x"}, want)
    check_script_keys(read_csv(env.path("csv", "metrics.csv")), {0: "x"}, want)
    check_script_keys(tb_rows(read_tfevents(tb_file(env))), {0: "x"}, want)


def test_empty_outputs_without_a_state_are_taken(env):
    # killed after creating its files, before writing any state
    os.makedirs(env.path("csv"))
    open(env.path("out.jsonl"), "w").close()
    open(env.path("csv", "metrics.csv"), "w").close()
    p = env.script("run")
    p.metric("x")
    p.do("steps 0 10 0")
    p.close()
    r = env.mring("drain", "--jsonl", env.path("out.jsonl"), "--csv", env.path("csv"), "run")
    assert r.returncode == 0, r.stderr
    want = {(s, 0) for s in range(10)}
    check_script_keys(read_jsonl_strict(env.path("out.jsonl")), {0: "x"}, want)
    check_script_keys(read_csv(env.path("csv", "metrics.csv")), {0: "x"}, want)


def test_leftover_files_do_not_hang_the_drain(env):
    open(segment_file(env, "run-0"), "wb").close()            # killed before sizing
    with open(segment_file(env, "run-1"), "wb") as f:         # killed before magic
        f.write(b"\0" * 8192)
    p = env.script("run-2")
    p.metric("x")
    p.do("steps 0 10 0")
    p.close()
    r = env.mring("drain", "--jsonl", env.path("out.jsonl"), "run-*", timeout=60)
    assert r.returncode == 1, (r.returncode, r.stderr)
    assert "run-0" in r.stderr and "run-1" in r.stderr and "being created" in r.stderr, r.stderr
    check_script_keys(read_jsonl_strict(env.path("out.jsonl")), {0: "x"},
                      {(s, 0) for s in range(10)})


def test_names_that_collide_get_distinct_keys_in_every_sink(env):
    p = env.script("run")
    specs = [("loss", "step|epoch"), ("loss_step", "step"), ("step", "step"),
             ("epoch", "step"), ("loss_epoch", "step"), ("mring_lost", "step"),
             ("rank", "step"), ("metric/step", "step")]
    ids = [p.metric(n, f) for n, f in specs]
    p.do("steps 0 10 " + " ".join(map(str, ids)))
    p.do("epoch")
    p.close()
    r = env.mring("drain", "--jsonl", env.path("out.jsonl"), "--csv", env.path("csv"),
                  "--tensorboard", env.path("tb"), "run")
    assert r.returncode == 0, r.stderr
    mean0 = math.fsum(s * 1000 + 0.25 for s in range(10)) / 10

    def check(rows, what):
        keys = {}                                  # key -> metric ids seen under it
        epoch_rows = [x for x in rows if "loss_epoch" in x and x["loss_epoch"] == mean0]
        assert len(epoch_rows) == 1, (what, epoch_rows)
        for x in rows:
            if x is epoch_rows[0]:
                continue
            for k, v in x.items():
                if k not in ROW_KEYS:
                    keys.setdefault(k, set()).add(script_value_id(x["step"], v))
        assert all(len(v) == 1 for v in keys.values()), (what, keys)
        assert sorted(i for v in keys.values() for i in v) == sorted(ids), (what, keys)
        assert "loss_step" in keys and keys["loss_step"] == {ids[0]}, (what, keys)

    jrows = read_jsonl_strict(env.path("out.jsonl"))
    check(jrows, "jsonl")
    check(read_csv(env.path("csv", "metrics.csv")), "csv")
    check(tb_rows(read_tfevents(tb_file(env))), "tensorboard")


def test_a_csv_header_over_64_kib(env):
    p = env.script("run", max_metrics=2048)
    n = 1100
    long = "_" + "x" * 56
    names = {p.metric("m%04d%s" % (k, long)): "m%04d%s" % (k, long) for k in range(n)}
    for s in range(3):
        p.do("row %d 0 %d" % (s, n - 1))
    p.close()
    r = env.mring("drain", "--csv", env.path("csv"), "run")
    assert r.returncode == 0, r.stderr
    with open(env.path("csv", "metrics.csv")) as f:
        assert len(f.readline()) > 65536
    check_script_keys(read_csv(env.path("csv", "metrics.csv")), names,
                      {(s, k) for s in range(3) for k in range(n)})


def test_a_step_is_one_row_whatever_the_batches(env):
    p = env.script("run", cap=1 << 18)
    for name in ("a", "b"):
        p.metric(name)
    p.do("steps 0 20000 0 1")                     # 3 records a step: 59 read batches
    p.close()                                     # end in the middle of one
    out = env.path("out.jsonl")
    r = env.mring("drain", "--flush-ms", "0", "--jsonl", out, "run")
    assert r.returncode == 0, r.stderr
    rows = read_jsonl_strict(out)
    assert len(rows) == 20000, len(rows)
    assert all(set(x) == {"a", "b", "epoch", "step"} for x in rows)


def test_names_that_are_not_utf8_are_written_as_valid_text(env):
    p = env.script("run")
    p.metric("name")
    p.do("steps 0 3 0")
    p.close()
    seg = segment_file(env, "run")
    patch(seg, metric_slot_offset(seg, 0), b"bad\xff\xc3name\0")   # an untrusted segment
    r = env.mring("drain", "--jsonl", env.path("out.jsonl"), "--csv", env.path("csv"), "run")
    assert r.returncode == 0, r.stderr
    key = "bad\ufffd\ufffdname"
    want = {(s, 0) for s in range(3)}
    check_script_keys(read_jsonl_strict(env.path("out.jsonl")), {0: key}, want)
    with open(env.path("csv", "metrics.csv"), encoding="utf-8") as f:
        assert key in f.readline()


def test_the_state_temp_file_does_not_follow_a_symlink(env):
    env.producer("run", 20, 10, 0).wait()
    out = env.path("out.jsonl")
    victim = env.path("victim")
    with open(victim, "w") as f:
        f.write("precious\n")
    os.symlink(victim, out + ".mring-state.tmp")
    r = env.mring("drain", "--jsonl", out, "run")
    assert r.returncode == 0, r.stderr
    with open(victim) as f:
        assert f.read() == "precious\n"
    check_rows(read_jsonl(out), 20, 10)


def test_wait_attaches_to_a_segment_that_appears_and_then_loses_nothing(env):
    """A sidecar started first attaches to the segment when it appears;
    from then on a WAIT-mode producer flooding 8 times its ring loses
    nothing.  (Whether it attaches before the very first ring fills is a
    race against the producer's speed: docs/drain.md, --wait.)"""
    out = env.path("out.jsonl")
    d = env.drain("--jsonl", out, "--wait", "--follow", "run")
    assert "waiting for run" in first_line(d.stderr)   # said once, before it appears
    cap, steps = 1 << 14, 1 << 16                     # 131072 records, 8 rings
    p = Script(env, "run", "wait", cap, 0)
    a, b = p.metric("a"), p.metric("b")
    p.do("drainer")                                  # returns once it attached
    p.do("steps 0 %d %d %d" % (steps, a, b))
    p.close()
    _, err = d.communicate(timeout=120)
    assert d.returncode == 0, err
    assert " 0 lost" in err and "%d events" % (3 * steps) in err, err
    rows = read_jsonl(out)
    assert [r["step"] for r in rows] == list(range(steps)), len(rows)
    assert all(r["a"] == r["step"] * 1000 + a + 0.25 and r["b"] == r["step"] * 1000 + b + 0.25
               for r in rows), rows[:3]


def test_wait_follow_drains_the_next_run_not_the_finished_one(env):
    env.producer("run", 30, 10, 0).wait()
    r = env.mring("drain", "--jsonl", env.path("first.jsonl"), "run")
    assert r.returncode == 0, r.stderr
    out = env.path("second.jsonl")
    d = env.drain("--jsonl", out, "--wait", "--follow", "run")
    assert "finished run" in first_line(d.stderr)
    env.producer("run", 50, 10, 0).wait()        # the same name, replaced
    _, err = d.communicate(timeout=60)
    assert d.returncode == 0, err
    check_rows(read_jsonl(out), 50, 10)


def test_observe_exports_without_consuming(env):
    env.producer("run", 40, 10, 0).wait()
    r = env.mring("drain", "--jsonl", env.path("out.jsonl"), "run")
    assert r.returncode == 0, r.stderr
    before = env.mring("stat", "run").stdout.splitlines()[0]
    r = env.mring("drain", "--observe", "--csv", env.path("csv"), "run")
    assert r.returncode == 0 and "observed" in r.stderr, r.stderr
    assert env.mring("stat", "run").stdout.splitlines()[0] == before
    check_rows(read_csv(env.path("csv", "metrics.csv")), 40, 10)
    # a ring that wrapped: what is gone is a loss row, first
    p = env.script("small", mode="overwrite", cap=64)
    p.metric("x")
    # 300 slots (a STEP takes two), the last 64 kept: 236 is step 78's
    # value, which has no context without its STEP; step 79 starts at 237
    p.do("steps 0 100 0")
    p.close()
    r = env.mring("drain", "--observe", "--jsonl", env.path("small.jsonl"), "small")
    assert r.returncode == 0, r.stderr
    rows = read_jsonl(env.path("small.jsonl"))
    assert rows[0]["mring_lost"] == 237, rows[:2]
    assert [x["step"] for x in rows[1:]] == list(range(79, 100)), rows[1:3]


def tb_events(path):
    """[(step, tag, value)] in file order, repeats allowed (a rewind)."""
    r = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "tfevents_check.py"), path],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = []
    for line in r.stdout.splitlines()[:-1]:
        step, tag, val = line.split(" ")
        out.append((int(step), tag, float(val)))
    return out


def resumed_run(p, first, back, last, mark):
    """Steps [0, first), then the run resumes at @back and logs up to
    @last; the second attempt's values end in @mark."""
    p.do("steps 0 %d 0" % first)
    for s in range(back, last):
        p.do("step %d" % s)
        p.do("log 0 %s" % (s + mark))


def test_a_resumed_run_keeps_one_history(env):
    """A REWIND removes the rows of the voided steps from JSONL and CSV:
    each holds steps 0..end once, with the second attempt's values for
    the steps it logged again.  TensorBoard gets the new points after the
    old ones (it drops points of a lower step by itself)."""
    p = env.script("rw")
    p.metric("x")
    resumed_run(p, 10, 5, 8, 0.5)
    p.close()
    r = env.mring("drain", "--jsonl", env.path("rw.jsonl"), "--csv", env.path("csv"),
                  "--tensorboard", env.path("tb"), "--hf", env.path("hf"), "rw")
    assert r.returncode == 0, r.stderr
    assert "went back to step 5" in r.stderr and "are removed" in r.stderr, r.stderr
    want = [(s, s * 1000 + 0.25) for s in range(5)] + [(s, s + 0.5) for s in range(5, 8)]
    assert [(x["step"], x["x"]) for x in read_jsonl(env.path("rw.jsonl"))] == want
    assert [(x["step"], x["x"]) for x in read_csv(env.path("csv", "metrics.csv"))] == want
    with open(env.path("hf", "trainer_state.json")) as f:
        hist = json.load(f)["log_history"]
    assert [(x["step"], x["x"]) for x in hist if "x" in x] == want, hist
    tb = [(st, v) for st, tag, v in tb_events(tb_file(env)) if tag == "x"]
    assert tb == [(s, f32(s * 1000 + 0.25)) for s in range(10)] + \
        [(s, f32(s + 0.5)) for s in range(5, 8)], tb
    # the flight recorder's export counts a REWIND as one of the last steps
    r = env.mring("drain", "--observe", "--last-steps", "3", "--jsonl",
                  env.path("last.jsonl"), "rw")
    assert r.returncode == 0, r.stderr
    assert [x["step"] for x in read_jsonl(env.path("last.jsonl"))] == [5, 6, 7]


def test_on_rewind_keep_marks_the_rewind(env):
    p = env.script("rk")
    p.metric("x")
    resumed_run(p, 4, 2, 3, 0.5)
    p.close()
    r = env.mring("drain", "--on-rewind", "keep", "--jsonl", env.path("rk.jsonl"), "rk")
    assert r.returncode == 0 and "a mring_rewind row marks it" in r.stderr, r.stderr
    rows = [(x["step"], x.get("x"), x.get("mring_rewind"))
            for x in read_jsonl(env.path("rk.jsonl"))]
    assert rows == [(0, 0.25, None), (1, 1000.25, None), (2, 2000.25, None),
                    (3, 3000.25, None), (2, None, 2), (2, 2.5, None)], rows
    r = env.mring("drain", "--on-rewind", "sometimes", "--jsonl", env.path("x.jsonl"), "rk")
    assert r.returncode == 1 and "not remove or keep" in r.stderr, r.stderr
    r = env.mring("drain", "--last-steps", "3", "--jsonl", env.path("x.jsonl"), "rk")
    assert r.returncode == 1 and "--last-steps needs --observe" in r.stderr, r.stderr
    r = env.mring("drain", "--observe", "--last-steps", "0", "--jsonl", env.path("x.jsonl"),
                  "rk")
    assert r.returncode == 1 and "not a positive number of steps: 0" in r.stderr, r.stderr


def test_a_rewind_voids_only_its_ranks_rows(env):
    ps = []
    for rank in (0, 1):
        p = Script(env, "rr%d" % rank, "drop", 1 << 12, 0, rank=rank)
        env.procs.append(p.p)
        p.metric("x")
        ps.append(p)
    resumed_run(ps[1], 6, 2, 4, 0.5)	# rank 1 goes back to step 2
    ps[0].do("steps 0 6 0")
    for p in ps:
        p.close()
    r = env.mring("drain", "--jsonl", env.path("rr.jsonl"), "--csv", env.path("csv"),
                  "rr*")
    assert r.returncode == 0, r.stderr
    for rows in (read_jsonl(env.path("rr.jsonl")), read_csv(env.path("csv", "metrics.csv"))):
        got = sorted((x["rank"], x["step"], x["x"]) for x in rows)
        want = sorted([(0, s, s * 1000 + 0.25) for s in range(6)] +
                      [(1, s, s * 1000 + 0.25) for s in range(2)] +
                      [(1, s, s + 0.5) for s in range(2, 4)])
        assert got == want, got


def test_rewinds_survive_drainer_kills_exactly(env):
    """15 rewinds in one run, the drainer SIGKILLed at random instants
    (also inside the voiding of a rewind) and restarted until it finishes:
    JSONL and CSV end with every step once, with the value of the last
    attempt that logged it; so does the --hf trainer_state.json."""
    p = env.script("rwk", cap=1 << 20)
    p.metric("x")
    want, lines, start = {}, [], 0
    for attempt in range(15):
        for s in range(start, start + 3000):
            lines += ["step %d" % s, "log 0 %d" % (s * 1000 + attempt)]
            want[s] = s * 1000 + attempt
        start += 3000 - 1000		# the next attempt resumes 1000 steps back
    for k in range(0, len(lines), 1000):	# a pipe's worth of answers at a time
        p.p.stdin.write("\n".join(lines[k:k + 1000]) + "\n")
        p.p.stdin.flush()
        for _ in lines[k:k + 1000]:
            assert p.p.stdout.readline().startswith("ok")
    p.close()
    rng = random.Random(7)
    kills = recovered = 0
    for run in range(101):
        d = env.drain("--flush-ms", "2", "--jsonl", env.path("k.jsonl"), "--csv",
                      env.path("csv"), "--hf", env.path("hf"), "rwk")
        try:
            # kills at random instants, later and later (a slow build,
            # ASan's, must get somewhere too), then a run to the end
            rc = d.wait(timeout=rng.uniform(0.001, 0.03) * (1 + run / 30)
                        if run < 100 else 300)
        except subprocess.TimeoutExpired:
            d.kill()
            d.wait()
            kills += 1
            recovered += "a killed drainer had begun" in d.stderr.read()
            continue
        err = d.stderr.read()
        recovered += "a killed drainer had begun" in err
        assert rc == 0, err
        break
    else:
        assert False, "the drain never finished"
    print("  %d kills, %d inside the voiding of a rewind" % (kills, recovered))
    assert kills >= 3 and recovered >= 1, (kills, recovered)
    want = sorted(want.items())
    assert [(x["step"], x["x"]) for x in read_jsonl(env.path("k.jsonl"))] == want
    assert [(x["step"], x["x"]) for x in read_csv(env.path("csv", "metrics.csv"))] == want
    with open(env.path("hf", "trainer_state.json")) as f:
        hist = json.load(f)["log_history"]
    assert [(x["step"], x["x"]) for x in hist if "x" in x] == want
    assert [x["step"] for x in hist if "train_runtime" in x] == [want[-1][0]], hist[-2:]


def main():
    return e2e_common.main(globals(), Env, ["mring", "producer", "script"])


if __name__ == "__main__":
    sys.exit(main())
