#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Randomized kill tests of `mring drain` over every sink and ring mode, and
a mutation pass over its state file.

tests/prod_sched.c follows a seeded schedule that sched() below recomputes:
metrics registered at the start and mid-run (up to ~240, with every flag
combination, weighted logs, names that need escaping, one reserved name),
epoch ends, and values that encode their metric and step
(k * 1e7 + step + 0.25 + 0.5 * rank, NaN and +-Inf at scheduled points).

test_kill_*: `mring drain --follow` to JSONL, CSV and TensorBoard at once
is SIGKILLed at random instants (some within its first milliseconds) and
restarted with the same arguments until it exits by itself; then every
output is checked against the schedule: no value twice, every key names
the metric its value encodes, values bit-exact (TensorBoard: float32),
epoch rows hold the exact reductions, a step's values in one row unless a
loss row falls inside it, and losses account for what is missing (WAIT:
nothing missing, no loss row).

test_state_fuzz_*: a few hundred deterministic mutations of a real drain
state file (half-drained run); `mring drain` on each must not crash, hang
or print sanitizer reports, must exit 0, 1 or 2 with one line on stderr
when not 0, and leave outputs that still parse when it exits 0.

Usage: e2e_drain_kill.py --mring PATH --producer PATH(prod_sched) [--only NAME]
Environment: MRING_KILL_SEEDS=N runs N seeds per kill case (default 1).
"""
import argparse
import contextlib
import csv
import io
import json
import math
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback

import e2e_common  # tests/, next to this file

ARGS = None
HERE = os.path.dirname(os.path.abspath(__file__))
SANITIZED = bool(os.environ.get("MRING_SANITIZE"))
MASK = (1 << 64) - 1
ON_STEP, ON_EPOCH, MEAN, SUM, MIN, MAX, BAR = 1, 2, 4, 8, 16, 32, 64
RESERVED = ("epoch", "step", "rank", "mring_lost")
NAME_FMT = ["m%03d", "train/m%03d", "val.m%03d", "m%03d-x y", "m%03d,c", 'm%03d"q', "m%03d:z"]


# ---- the schedule (mirror of tests/prod_sched.c) ----------------------------

class XorShift:
    def __init__(self, seed):
        self.x = (seed * 0x9E3779B97F4A7C15 + 1) & MASK or 1

    def next(self):
        x = self.x
        x ^= (x << 13) & MASK
        x ^= x >> 7
        x ^= (x << 17) & MASK
        self.x = x
        return x


def kind_flags(kind, red):
    if kind <= 2:
        return ON_STEP
    if kind <= 4:
        return ON_STEP | ON_EPOCH | MEAN
    if kind == 5:
        return ON_STEP | ON_EPOCH | (SUM, MIN, MAX)[red]
    return ON_EPOCH | (MEAN, MEAN, SUM, MIN, MAX)[kind - 5]


def neumaier(s, c, x):
    t = s + x
    if abs(s) >= abs(x):
        c += (s - t) + x
    else:
        c += (x - t) + s
    return t, c


class Acc:
    def __init__(self):
        self.count = 0
        self.weight = 0.0
        self.sum = 0.0
        self.comp = 0.0
        self.min = math.nan
        self.max = math.nan

    def add(self, flags, v, wt):
        if not math.isfinite(v):
            return
        self.count += 1
        self.weight += wt
        self.sum, self.comp = neumaier(self.sum, self.comp, v * wt if flags & MEAN else v)
        if not (v >= self.min):
            self.min = v
        if not (v <= self.max):
            self.max = v

    def reduce(self, flags):
        if not self.count:
            return math.nan
        total = self.sum + self.comp if math.isfinite(self.sum) else self.sum
        if flags & SUM:
            return total
        if flags & MIN:
            return self.min
        if flags & MAX:
            return self.max
        return total / self.weight if self.weight > 0 else math.nan


class Metric:
    pass


class Sched:
    """Everything prod_sched SEED STEPS (RANK) writes, in ring order.

    records: (kind, step, epoch, k, value) with kind 'S' (STEP), 'V'
    (VALUE), 'EV' (EPOCH_VALUE), 'EW' (EPOCH_WEIGHT), 'EE' (EPOCH_END)."""

    def __init__(self, seed, steps, rank=0):
        rng = XorShift(seed)
        nm = 40 + rng.next() % 200
        n0 = 2 + rng.next() % 6
        ms, regs = [], []
        for k in range(nm):
            m = Metric()
            m.k = k
            m.kind = rng.next() % 10
            m.p = 1 + rng.next() % 4
            bar = BAR if rng.next() % 5 == 0 else 0
            m.flags = kind_flags(m.kind, rng.next() % 3) | bar
            regs.append(rng.next() % steps if k >= n0 else 0)
            name = "step" if k == 1 else NAME_FMT[k % 7] % k
            both = (m.flags & ON_STEP) and (m.flags & ON_EPOCH)
            # a key every row has already becomes metric/KEY (docs/drain.md)
            m.step_key = name + ("_step" if both else "")
            m.epoch_key = name + ("_epoch" if both else "")
            m.step_key = ("metric/" if m.step_key in RESERVED else "") + m.step_key
            m.epoch_key = ("metric/" if m.epoch_key in RESERVED else "") + m.epoch_key
            ms.append(m)
        regs[n0:] = sorted(regs[n0:])
        for m, r in zip(ms, regs):
            m.reg = r
        self.metrics = ms
        self.keys = {}          # key -> (k, 'step' | 'epoch')
        for m in ms:
            if m.flags & ON_STEP:
                self.keys[m.step_key] = (m.k, "step")
            if m.flags & ON_EPOCH:
                self.keys[m.epoch_key] = (m.k, "epoch")
        self.rank = rank
        rec = []
        self.step_vals = {}     # (step, k) -> value (ON_STEP values only)
        self.step_logged = {}   # (step, k) -> value, also ON_EPOCH-only ones
        self.step_epoch = {}
        self.epoch_vals = {}    # (epoch, k) -> reduction
        self.epoch_weight = {}  # (epoch, k) -> weight record (MEAN)
        self.epoch_step = {}    # epoch -> its last step
        self.epoch_keys = {}    # epoch -> ks with an EPOCH_VALUE
        acc = [Acc() for _ in ms]
        epoch = nreg = 0
        for i in range(steps):
            while nreg < nm and ms[nreg].reg == i:
                nreg += 1
            rec.append(("S", i, epoch, -1, 0.0))
            self.step_epoch[i] = epoch
            for k in range(nreg):
                m = ms[k]
                if rng.next() % 4 >= m.p:
                    continue
                r = rng.next() % 89
                v = (math.nan, math.inf, -math.inf)[r] if r < 3 else \
                    k * 1e7 + i + 0.25 + 0.5 * rank
                wt = float(1 + (i + k + rank) % 4) if m.kind in (4, 6) else 1.0
                if m.flags & ON_EPOCH:
                    acc[k].add(m.flags, v, wt)
                self.step_logged[(i, k)] = v
                if m.flags & ON_STEP:
                    rec.append(("V", i, epoch, k, v))
                    self.step_vals[(i, k)] = v
            if rng.next() % 37 == 0:
                self.epoch_keys[epoch] = []
                for k in range(nreg):
                    m = ms[k]
                    if not m.flags & ON_EPOCH:
                        continue
                    val = acc[k].reduce(m.flags)
                    rec.append(("EV", i, epoch, k, val))
                    self.epoch_vals[(epoch, k)] = val
                    self.epoch_keys[epoch].append(k)
                    if m.flags & MEAN:
                        w = acc[k].weight if acc[k].count else 0.0
                        rec.append(("EW", i, epoch, k, w))
                        self.epoch_weight[(epoch, k)] = w
                rec.append(("EE", i, epoch, -1, 0.0))
                self.epoch_step[epoch] = i
                epoch += 1
                acc = [Acc() for _ in ms]
        self.records = rec
        self.index = {}         # ('s', step, k) / ('e', epoch, k) -> ring position
        pos = 0
        for kind, i, e, k, _ in rec:
            if kind == "V":
                self.index[("s", i, k)] = pos
            elif kind == "EV":
                self.index[("e", e, k)] = pos
            pos += 2 if kind == "S" else 1      # a STEP takes two ring slots
        self.nslots = pos
        self.invisible = pos - len(self.index)
        # OVERWRITE: an overrun counts every slot it passes, also the CTX
        # pairs the producer writes (at least half a ring apart) when a
        # step runs longer than half a ring; the model does not place them
        self.ctx_apart = 0


# ---- helpers ----------------------------------------------------------------

class Env(e2e_common.BaseEnv):
    """A private MRING_DIR and output directory for one case."""

    def __init__(self, name):
        super().__init__(name, "mring-kill")

    def producer(self, seg, seed, steps, mode, cap, step_us=0, rank=0, wait_drainer=0,
                 pause_at=0):
        p = subprocess.Popen([ARGS.producer, seg, str(seed), str(steps), mode, str(cap),
                              str(step_us), str(rank), str(wait_drainer), str(pause_at)],
                             env=self.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
        self.procs.append(p)
        line = p.stdout.readline().strip()
        assert line == "ready", "prod_sched: %r" % line
        return p

    def drain(self, *args):
        p = subprocess.Popen([ARGS.mring, "drain"] + list(args), env=self.env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def run(self, args, timeout):
        return subprocess.run([ARGS.mring] + list(args), env=self.env, capture_output=True,
                              text=True, timeout=timeout, errors="replace")


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def same_bits(a, b):
    if not isinstance(b, (int, float)) or isinstance(b, bool):
        return False
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    return struct.pack("<d", float(a)) == struct.pack("<d", float(b))


_TB = None


def tb_scalars(path):
    """[(step, tag, value)] in file order, through tests/tfevents_check.py
    (loaded once, in this process); raises AssertionError on any framing,
    CRC or protobuf error."""
    global _TB
    if _TB is None:
        sys.path.insert(0, HERE)
        import tfevents_check
        tmp = tempfile.mkdtemp(prefix="mring-kill-pb-")
        with contextlib.redirect_stdout(io.StringIO()):
            _TB = (tfevents_check, tfevents_check.load_pb(tmp))
    mod, pb = _TB
    with open(path, "rb") as f:
        buf = f.read()
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            mod.check(pb, buf, False)
    except SystemExit:
        raise AssertionError(err.getvalue().strip())
    except Exception as e:      # protobuf DecodeError and friends
        raise AssertionError("tfevents_check: %s: %s" % (type(e).__name__, e))
    lines = out.getvalue().splitlines()
    assert lines and lines[-1].startswith("records "), lines[-1:]
    res = []
    for line in lines[:-1]:
        step, rest = line.split(" ", 1)
        tag, val = rest.rsplit(" ", 1)
        res.append((int(step), tag, float(val)))
    return res


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f]


INT_KEYS = ("step", "epoch", "rank", "mring_lost")


def read_csv(path):
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            d = {}
            for k, v in r.items():
                if k is None:
                    raise AssertionError("csv: a row with more cells than the header: %r" % r)
                if v == "" or v is None:
                    continue
                d[k] = int(v) if k in INT_KEYS else float(v)
            rows.append(d)
    return rows


def tb_file(d):
    files = [f for f in os.listdir(d) if "tfevents" in f]
    assert len(files) == 1, files
    return os.path.join(d, files[0])


def tb_rows(scalars, nranks):
    """TensorBoard scalars as one-key rows, in file order, like JSONL rows."""
    rows = []
    for step, tag, val in scalars:
        r = {"step": step}
        if nranks > 1:
            m = re.match(r"rank(\d+)/(.*)$", tag)
            if m:
                r["rank"] = int(m.group(1))
                tag = m.group(2)
        if tag == "mring/lost":
            r["mring_lost"] = val
        else:
            r[tag] = val
        rows.append(r)
    return rows


class Failures:
    def __init__(self):
        self.cats = {}

    def add(self, cat, msg):
        self.cats.setdefault(cat, []).append(msg)

    def __bool__(self):
        return bool(self.cats)

    def report(self, head):
        lines = []
        for cat, msgs in sorted(self.cats.items()):
            lines.append("  %s [%s] %s%s" % (head, cat, msgs[0],
                                             "  (+%d more)" % (len(msgs) - 1) if len(msgs) > 1 else ""))
        return "\n".join(lines)


# ---- checking one sink's rows -----------------------------------------------

def decode(v, rank, f32_tol=False):
    """(k, step) a finite value encodes; f32_tol: v went through float32,
    whose unit in the last place is up to 256 here."""
    tol = abs(v) * 2.0 ** -23 if f32_tol else 0.0
    k = int((v + tol) // 1e7)
    return k, v - k * 1e7 - 0.25 - 0.5 * rank


def check_stream(F, sink, sc, rows, mode, every, lossless, exact_f32):
    """Check the rows of one rank (rank key already removed) against sc.

    rows: dicts in file order; TensorBoard gives one key per row and no
    epoch field.  Returns nothing; adds to F."""
    tb = exact_f32
    rank = sc.rank
    same = (lambda want, got: same_bits(f32(want), got)) if tb else same_bits
    seen_step, seen_epoch = {}, {}
    items = []          # accounting: ('v', pos, is_epoch) / ('l', count)
    lost_total = 0
    step_rows = {}      # step -> [row index in file order] (step rows)
    loss_at = []        # file-order indices of loss rows
    windows = {}        # (epoch, step) -> {k: value}  (--every)
    for ri, r in enumerate(rows):
        where = "%s row %d (step %s)" % (sink, ri, r.get("step"))
        if "mring_lost" in r:
            extra = [k for k in r if k not in INT_KEYS]
            if extra:
                F.add("loss-row", "%s: loss row with metric keys %s" % (where, extra[:3]))
            c = r["mring_lost"]
            if not (c >= 1 and c == int(c)):
                F.add("loss-row", "%s: mring_lost = %r" % (where, c))
                continue
            items.append(("l", int(c)))
            lost_total += int(c)
            loss_at.append(ri)
            continue
        keys = [k for k in r if k not in INT_KEYS]
        if not keys:
            F.add("empty-row", "%s: a row without metric keys: %s" % (where, r))
            continue
        kinds = set()
        for key in keys:
            if key not in sc.keys:
                F.add("unknown-key", "%s: key %r is no metric's key" % (where, key))
                continue
            kinds.add(sc.keys[key][1])
        keys = [k for k in keys if k in sc.keys]
        if len(kinds) > 1:
            F.add("mixed-row", "%s: step and epoch keys in one row: %s" % (where, keys[:6]))
            continue
        if not kinds:
            continue
        step = r.get("step")
        if "step" not in r:
            F.add("row-meta", "%s: no step in %s" % (where, r))
            continue
        if kinds == {"epoch"}:
            # epoch row: the epoch's last step, the exact reductions
            e = r.get("epoch")
            if e is None:       # TensorBoard: find the epoch by its last step
                cands = [ep for ep, s in sc.epoch_step.items() if s == step]
                e = cands[0] if len(cands) == 1 else None
            if e not in sc.epoch_step:
                F.add("row-meta", "%s: epoch row of epoch %s, which never ended" % (where, e))
                continue
            if sc.epoch_step[e] != step:
                F.add("row-meta", "%s: epoch %d row at step %s, its last step is %d"
                      % (where, e, step, sc.epoch_step[e]))
            for key in keys:
                k = sc.keys[key][0]
                if (e, k) not in sc.epoch_vals:
                    F.add("wrong-key", "%s: epoch key %r (metric %d) has no value in epoch %d"
                          % (where, key, k, e))
                    continue
                if (e, k) in seen_epoch:
                    F.add("duplicate", "%s: epoch %d key %r twice (first in row %d)"
                          % (where, e, key, seen_epoch[(e, k)]))
                    continue
                seen_epoch[(e, k)] = ri
                want = sc.epoch_vals[(e, k)]
                if not same(want, r[key]):
                    F.add("epoch-value", "%s: epoch %d %r = %r, want %r"
                          % (where, e, key, r[key], want))
                items.append(("v", sc.index[("e", e, k)], True))
            continue
        # step row
        if "epoch" in r and step in sc.step_epoch and r["epoch"] != sc.step_epoch[step]:
            F.add("row-meta", "%s: epoch %s, step %s is in epoch %d"
                  % (where, r["epoch"], step, sc.step_epoch[step]))
        if every:
            e = r.get("epoch", sc.step_epoch.get(step))
            if (e, step) in windows and not tb:
                F.add("duplicate", "%s: two window rows at step %s" % (where, step))
            win = windows.setdefault((e, step), {})
            for key in keys:
                k = sc.keys[key][0]
                if k in win:
                    F.add("duplicate", "%s: window key %r twice at step %s" % (where, key, step))
                win[k] = r[key]
            continue
        step_rows.setdefault(step, []).append(ri)
        for key in keys:
            k = sc.keys[key][0]
            v = r[key]
            if (step, k) in seen_step:
                F.add("duplicate", "%s: %r twice at step %s (first in row %d)"
                      % (where, key, step, seen_step[(step, k)]))
                continue
            seen_step[(step, k)] = ri
            want = sc.step_vals.get((step, k))
            if want is None:
                got = ""
                if isinstance(v, float) and math.isfinite(v):
                    got = " (the value %r is metric %d's at step %g)" % ((v,) + decode(v, rank))
                F.add("wrong-key", "%s: %r holds %r, but metric %d logged nothing at step %s%s"
                      % (where, key, v, k, step, got))
                continue
            if not same(want, v):
                cat = "value"
                if isinstance(v, float) and math.isfinite(v) and decode(v, rank, tb)[0] != k:
                    cat = "wrong-key"
                F.add(cat, "%s: %r = %r, want %r" % (where, key, v, want))
                continue
            items.append(("v", sc.index[("s", step, k)], False))
    # one row per step, unless a loss row falls inside the step
    if not every and not tb:
        for step, ris in sorted(step_rows.items()):
            for a, b in zip(ris, ris[1:]):
                if not any(a < li < b for li in loss_at):
                    F.add("split-row", "%s: step %d in rows %d and %d with no loss row between"
                          % (sink, step, a, b))
                    break
    if every:
        check_windows(F, sink, sc, windows, every, lost_total == 0, same, tb)
    # losses
    if lossless:
        if lost_total:
            F.add("lost-in-wait", "%s: %d records reported lost (mring_lost rows)" % (sink, lost_total))
        missing = [key for key in sc.index
                   if not (key[0] == "s" and every) and
                   ((key[0] == "s" and (key[1], key[2]) not in seen_step) or
                    (key[0] == "e" and (key[1], key[2]) not in seen_epoch))]
        if missing:
            F.add("missing", "%s: %d values missing, first %s" % (sink, len(missing),
                                                                 describe(sc, missing[:3])))
        return
    account(F, sink, sc, items, every, seen_step, seen_epoch)


def describe(sc, keys):
    out = []
    for kind, a, k in keys:
        m = sc.metrics[k]
        out.append("%s %d %r" % ("step" if kind == "s" else "epoch", a,
                                  m.step_key if kind == "s" else m.epoch_key))
    return ", ".join(out)


def account(F, sink, sc, items, every, seen_step, seen_epoch):
    """Every missing value lies in the span a loss row covers, and each loss
    count fits: at least the values missing there (at least their span for
    a lone loss row, losses being contiguous), at most every record there
    that is not in the output.  STEP, EPOCH_WEIGHT and EPOCH_END records
    are invisible in the outputs, so the total is checked as
    0 <= written - present - lost <= invisible records."""
    T = sc.nslots
    present = set()
    for it in items:
        if it[0] == "v":
            present.add(it[1])
    visible = {pos: key for key, pos in sc.index.items() if not (every and key[0] == "s")}
    invisible = T - len(visible)
    lost = sum(it[1] for it in items if it[0] == "l")
    n = len(items)
    lo = [-1] * n
    run = -1
    for i, it in enumerate(items):
        lo[i] = run
        if it[0] == "v":
            run = max(run, it[1])
    hi = [T] * n
    run = T
    for i in range(n - 1, -1, -1):
        hi[i] = run
        if items[i][0] == "v" and not items[i][2]:
            run = min(run, items[i][1])
    spans = []
    for i, it in enumerate(items):
        if it[0] == "l":
            if lo[i] >= hi[i]:
                F.add("loss-order", "%s: a loss row of %d after ring position %d but before %d"
                      % (sink, it[1], lo[i], hi[i]))
            spans.append([lo[i], hi[i], it[1], 1])
    spans.sort()
    clusters = []
    for s in spans:
        if clusters and s[0] < clusters[-1][1]:
            c = clusters[-1]
            c[1] = max(c[1], s[1])
            c[2] += s[2]
            c[3] += 1
        else:
            clusters.append(list(s))
    covered = set()
    for L, H, cnt, nrows in clusters:
        miss = [p for p in range(L + 1, H) if p in visible and p not in present]
        pres = sum(1 for p in range(L + 1, H) if p in present)
        covered.update(miss)
        room = (H - L - 1) - pres
        if sc.ctx_apart:
            room += 2 * ((H - L) // sc.ctx_apart + 1)
        if cnt < len(miss):
            F.add("loss-count", "%s: %d loss row(s) count %d between ring positions %d and %d, "
                  "but %d values are missing there, first %s"
                  % (sink, nrows, cnt, L, H, len(miss), describe(sc, [visible[p] for p in miss[:2]])))
        elif nrows == 1 and miss and miss[-1] - miss[0] + 1 > cnt:
            F.add("loss-count", "%s: a loss row of %d, but the values missing around it span %d "
                  "ring positions (%d..%d)" % (sink, cnt, miss[-1] - miss[0] + 1, miss[0], miss[-1]))
        if cnt > room:
            F.add("loss-count", "%s: loss rows count %d between ring positions %d and %d, "
                  "where only %d records are not in the output" % (sink, cnt, L, H, room))
    unacc = [p for p in visible if p not in present and p not in covered]
    if unacc:
        unacc.sort()
        F.add("unaccounted", "%s: %d values missing with no loss row around them, first %s "
              "(ring position %d)" % (sink, len(unacc), describe(sc, [visible[p] for p in unacc[:3]]),
                                      unacc[0]))
    kept = T - len(present) - lost
    ctx_slots = 2 * (T // sc.ctx_apart + 1) if sc.ctx_apart else 0
    if not (-ctx_slots <= kept <= invisible):
        F.add("loss-total", "%s: %d records written, %d values present, %d lost: %d left for "
              "the %d STEP/EPOCH_WEIGHT/EPOCH_END records" % (sink, T, len(present), lost, kept,
                                                              invisible))


def expected_windows(sc, every):
    """--every N: (epoch, last step) -> {k: mean of finite values}, and the
    steps each window covers."""
    wins, spans = {}, {}
    cur = None
    acc = {}
    last = None
    for kind, i, e, k, v in sc.records:
        if kind != "V":
            continue
        key = (e, i // every)
        if cur is not None and key != cur:
            wins[(cur[0], last)] = acc
            acc = {}
        cur = key
        last = i
        s, n, nf = acc.get(k, (0.0, 0, 0))
        if math.isfinite(v):
            acc[k] = (s + v, n + 1, nf)
        else:
            acc[k] = (s, n, nf + 1)
    if cur is not None:
        wins[(cur[0], last)] = acc
    out = {}
    for key, acc in wins.items():
        out[key] = {k: (s / n if n else math.nan) for k, (s, n, nf) in acc.items()}
    return out


def check_windows(F, sink, sc, got, every, exact, same, tb):
    want = expected_windows(sc, every)
    if exact:
        for key in sorted(set(want) - set(got))[:1]:
            F.add("window", "%s: no window row at epoch %d step %d" % ((sink,) + key))
        for key in sorted(set(got) - set(want))[:1]:
            F.add("window", "%s: a window row at epoch %s step %s, where no window ends"
                  % ((sink,) + key))
    for (e, step), vals in got.items():
        w = want.get((e, step))
        for k, v in vals.items():
            where = "%s window at step %s %r" % (sink, step, sc.metrics[k].step_key)
            tol = abs(v) * 2.0 ** -23 if tb and isinstance(v, float) and math.isfinite(v) else 0.0
            if isinstance(v, float) and math.isfinite(v) and decode(v, sc.rank, tb)[0] != k:
                F.add("wrong-key", "%s = %r: metric %d's value" % (where, v, decode(v, sc.rank, tb)[0]))
                continue
            if exact:
                if w is None or k not in w:
                    F.add("window", "%s: no such value in the window" % where)
                elif not same(w[k], v):
                    F.add("window", "%s = %r, want %r" % (where, v, w[k]))
            elif isinstance(v, float) and math.isfinite(v):
                s = decode(v, sc.rank, tb)[1]
                if not (step // every * every - 1e-6 - tol <= s <= step + 1e-6 + tol):
                    F.add("window", "%s = %r: a mean of steps outside the window" % (where, v))
        if exact and w is not None and set(vals) != set(w):
            F.add("window", "%s window at step %s: keys %d, want %d"
                  % (sink, step, len(vals), len(w)))


def expected_reduced(scs):
    """--reduce-ranks: epoch -> (step, {k: value}), folded as the drain does."""
    out = {}
    for e in scs[0].epoch_step:
        if not all(e in sc.epoch_step for sc in scs):
            continue
        vals = {}
        for k in scs[0].epoch_keys[e]:
            flags = scs[0].metrics[k].flags
            vw = w = s = 0.0
            mn = mx = math.nan
            n = 0
            for sc in scs:
                v = sc.epoch_vals[(e, k)]
                if math.isnan(v):
                    continue
                wt = sc.epoch_weight.get((e, k), 1.0)
                n += 1
                vw += v * wt
                w += wt
                s += v
                if not (v >= mn):
                    mn = v
                if not (v <= mx):
                    mx = v
            if not n:
                r = math.nan
            elif flags & SUM:
                r = s
            elif flags & MIN:
                r = mn
            elif flags & MAX:
                r = mx
            else:
                r = vw / w if w > 0 else math.nan
            vals[scs[0].metrics[k].epoch_key] = r
        out[e] = (max(sc.epoch_step[e] for sc in scs), vals)
    return out


def check_reduced(F, sink, scs, rows, exact_f32, lossless):
    same = (lambda want, got: same_bits(f32(want), got)) if exact_f32 else same_bits
    want = expected_reduced(scs)
    by_step = {}
    for st, vals in want.values():
        by_step[st] = vals
    seen = set()
    got_epochs = set()
    for ri, r in enumerate(rows):
        keys = [k for k in r if k not in INT_KEYS]
        where = "%s cross-rank row %d (step %s)" % (sink, ri, r.get("step"))
        if "mring_lost" in r:
            F.add("reduce", "%s: a loss row without rank" % where)
            continue
        e = r.get("epoch")
        if e is None:
            cands = [ep for ep, (st, _) in want.items() if st == r["step"]]
            e = cands[0] if cands else None
        if e not in want:
            F.add("reduce", "%s: epoch %s, not ended by every rank" % (where, e))
            continue
        got_epochs.add(e)
        st, vals = want[e]
        if r["step"] != st:
            F.add("reduce", "%s: step %d, want %d" % (where, r["step"], st))
        for key in keys:
            if (e, key) in seen:
                F.add("duplicate", "%s: cross-rank %r twice for epoch %d" % (where, key, e))
                continue
            seen.add((e, key))
            if key not in vals:
                F.add("reduce", "%s: key %r is not an epoch metric of epoch %d" % (where, key, e))
            elif not same(vals[key], r[key]) and not (not lossless and math.isnan(r[key])):
                F.add("reduce", "%s: epoch %d %r = %r, want %r" % (where, e, key, r[key], vals[key]))
    if lossless:
        miss = sorted(set(want) - got_epochs)
        if miss:
            F.add("reduce", "%s: no cross-rank row for epochs %s" % (sink, miss[:5]))
        for e in sorted(got_epochs):
            absent = [k for k in want[e][1] if (e, k) not in seen]
            if absent:
                F.add("reduce", "%s: cross-rank epoch %d lacks %s" % (sink, e, absent[:3]))
                break


def check_outputs(F, env, scs, mode, every, lossless, reduce):
    nranks = len(scs)
    sinks = []
    try:
        sinks.append(("jsonl", read_jsonl(env.path("out.jsonl")), False))
    except Exception as e:
        F.add("parse", "jsonl: %s: %s" % (type(e).__name__, e))
    try:
        sinks.append(("csv", read_csv(env.path("csv", "metrics.csv")), False))
    except Exception as e:
        F.add("parse", "csv: %s: %s" % (type(e).__name__, e))
    try:
        sinks.append(("tb", tb_rows(tb_scalars(tb_file(env.path("tb"))), nranks), True))
    except Exception as e:
        F.add("parse", "tensorboard: %s: %s" % (type(e).__name__, e))
    for name, rows, is_tb in sinks:
        if is_tb:
            seen = set()
            for r in rows:
                tag = [k for k in r if k not in ("step", "rank")][0]
                if tag == "mring_lost":
                    continue
                key = (r.get("rank"), tag, r["step"])
                if key in seen:
                    F.add("duplicate", "tb: (tag %r, step %d) written twice%s"
                          % (tag, r["step"], "" if r.get("rank") is None else
                             " (rank %d)" % r["rank"]))
                seen.add(key)
        for sc in scs:
            rank = sc.rank if nranks > 1 else None
            mine = []
            for r in rows:
                if r.get("rank") != rank:
                    continue
                mine.append({k: v for k, v in r.items() if k != "rank"})
            label = name if nranks == 1 else "%s rank %d" % (name, sc.rank)
            if nranks > 1 and not is_tb and any("rank" not in r for r in rows) and not reduce:
                F.add("row-meta", "%s: rows without rank with several segments" % name)
            check_stream(F, label, sc, mine, mode, every, lossless, is_tb)
        if reduce:
            check_reduced(F, name, scs, [r for r in rows if "rank" not in r], is_tb, lossless)


def state_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def drain_with_kills(env, args, rng, deadline_s, start_producers=None):
    """Run `mring drain ARGS` and SIGKILL it at random instants (a quarter
    of them within its first 4 ms), restarting it with the same arguments,
    until one run exits by itself.  start_producers() runs right after the
    first drainer started.  Returns (kills, returncode, stderr)."""
    kills = 0
    t0 = time.time()
    first = True
    state = args[args.index("--jsonl") + 1] + ".mring-state"
    stalled, last = 0, None
    while True:
        d = env.drain(*args)
        if first and start_producers:
            start_producers()
        first = False
        delay = rng.uniform(0, 0.004) if rng.random() < 0.25 else rng.uniform(0.004, 0.12)
        # A drainer that needs longer than the kills allow to reach a
        # commit (sanitized: ~200 ms when a CSV column appears and the
        # file is rewritten) would be killed forever: after 3 kills with
        # the state unchanged, the instants stretch until one commits.
        delay *= 2 ** min(max(stalled - 2, 0), 6)
        try:
            d.wait(timeout=delay)
            err = d.stderr.read()
            return kills, d.returncode, err
        except subprocess.TimeoutExpired:
            d.kill()
            d.wait()
            d.stderr.close()
            env.procs.remove(d)
            kills += 1
            now = state_bytes(state)
            stalled = stalled + 1 if now == last else 0
            last = now
        if time.time() - t0 > deadline_s:
            return kills, None, "still running after %d s and %d kills" % (deadline_s, kills)


# ---- kill cases --------------------------------------------------------------

CASES = {
    # name: mode, ranks, --every, steps, step_us, capacity (0: the whole run fits), kills
    "drop": ("drop", 1, 0, 1500, 250, 256, True),
    "drop_every": ("drop", 1, 10, 1500, 250, 1024, True),
    "overwrite": ("overwrite", 1, 0, 1500, 250, 256, True),
    "overwrite_every": ("overwrite", 1, 10, 1500, 250, 1024, True),
    "wait": ("wait", 1, 0, 1500, 250, 0, True),
    "wait_every": ("wait", 1, 10, 1500, 250, 0, True),
    # a ring far smaller than the run, a drainer never killed: WAIT waits
    "wait_small_ring": ("wait", 1, 0, 800, 0, 256, False),
    "reduce_ranks_wait": ("wait", 2, 0, 1200, 300, 0, True),
    "reduce_ranks_drop": ("drop", 2, 0, 1200, 300, 256, True),
}
SEEDS = {"drop": 101, "drop_every": 102, "overwrite": 201, "overwrite_every": 202,
         "wait": 301, "wait_every": 302, "wait_small_ring": 303,
         "reduce_ranks_wait": 401, "reduce_ranks_drop": 402}


def pow2_above(n):
    c = 8
    while c <= n:
        c *= 2
    return c


def run_kill_case(name, seed):
    mode, nranks, every, steps, step_us, cap, kills_on = CASES[name]
    if SANITIZED:
        steps = steps * 2 // 3
    scs = [Sched(seed, steps, rank) for rank in range(nranks)]
    if not cap:     # every record fits: WAIT never has to drop, drainer or not
        cap = pow2_above(max(sc.nslots for sc in scs) + 2)
    if mode == "overwrite":
        for sc in scs:
            sc.ctx_apart = cap // 2
    env = Env(name)
    F = Failures()
    try:
        segs = ["run"] if nranks == 1 else ["run-r%d" % r for r in range(nranks)]
        args = ["--jsonl", env.path("out.jsonl"), "--csv", env.path("csv"),
                "--tensorboard", env.path("tb"), "--follow", "--flush-ms", "5"]
        if every:
            args += ["--every", str(every)]
        if nranks > 1:
            args.append("--reduce-ranks")
        prods = []

        def start():
            for r, seg in enumerate(segs):
                prods.append(env.producer(seg, seed, steps, mode, cap, step_us, r,
                                          1 if mode == "wait" else 0))

        lossless = mode == "wait"
        # WAIT: the drainer is attached before the producers write: one
        # segment with --wait started first; several with producers that
        # wait for a drainer before their first step (--wait with several
        # names is test_kill_wait_named_segments)
        wait_first = mode == "wait" and nranks == 1
        if wait_first:
            args.append("--wait")
        else:
            start()
        rng = random.Random(seed)
        if kills_on:
            kills, rc, err = drain_with_kills(env, args + segs, rng, 150,
                                              start if wait_first else None)
        else:
            d = env.drain(*(args + segs))
            if wait_first:
                start()
            try:
                _, err = d.communicate(timeout=150)
                rc = d.returncode
            except subprocess.TimeoutExpired:
                d.kill()
                rc, err = None, "did not finish in 150 s"
            kills = 0
        for p in prods:
            try:
                prc = p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                prc = "hung"
            if prc != 0:
                F.add("producer", "prod_sched exited %s" % prc)
        if rc != 0:
            F.add("drain-exit", "the last drainer exited %s: %s"
                  % (rc, (err or "").strip().splitlines()[:2]))
        if kills_on and kills < 2:
            F.add("too-few-kills", "the drainer finished after %d kills" % kills)
        check_outputs(F, env, scs, mode, every, lossless, nranks > 1)
        try:
            lr = [r["mring_lost"] for r in read_jsonl(env.path("out.jsonl")) if "mring_lost" in r]
        except Exception:
            lr = []
        info = "%d kills, %d records/rank, capacity %d, %d loss rows (%d records)" \
            % (kills, len(scs[0].records), cap, len(lr), sum(lr))
    finally:
        env.close()
    return F, info


def kill_test(name):
    def fn():
        nseeds = int(os.environ.get("MRING_KILL_SEEDS", "1"))
        bad = []
        for j in range(nseeds):
            seed = SEEDS[name] + 1000 * j
            F, info = run_kill_case(name, seed)
            print("  %s seed %d: %s%s" % (name, seed, info, "" if not F else ": FAILED"),
                  flush=True)
            if F:
                bad.append(F.report("%s seed %d" % (name, seed)))
        assert not bad, "\n" + "\n".join(bad)
    return fn


for _n in CASES:
    globals()["test_kill_" + _n] = kill_test(_n)


# ---- state file mutations ---------------------------------------------------

GARBAGE = ["18446744073709551615", "18446744073709551616", "99999999999999999999999999",
           "-1", "-9223372036854775808", "9223372036854775807", "nan", "NaN", "inf",
           "-inf", "0x7fffffffffffffff", "0xffffffffffffffffff", "1e308", "0", "", "abc",
           "0x1p+99999", "-0x1p-1074", "4294967296", "2147483648", "65535", "65536",
           "1.5", "+7", " ", "0x", "%n%s%s"]
NUM_RE = re.compile(r"-?0x[0-9a-fA-F.]+p[+-]?\d+|-?\d+")


def mutations(base, rng, seg_paths, other_seg):
    """(label, bytes) pairs, deterministic for a given base and rng: about
    three hundred."""
    out = []
    lines = base.split(b"\n")
    if lines and lines[-1] == b"":
        lines = lines[:-1]

    def join(ls):
        return b"\n".join(ls) + b"\n"

    # the first line of each kind, and the first few lines
    kinds, picked = set(), []
    for i, ln in enumerate(lines):
        kind = ln.split(b" ", 1)[0]
        if i < 4 or kind not in kinds:
            picked.append(i)
        kinds.add(kind)
    offs, off = [], 0
    for ln in lines:
        offs.append(off)
        off += len(ln) + 1
    # truncation at line boundaries and in the middle of lines
    for i in picked:
        out.append(("truncate at line %d" % i, base[:offs[i]]))
        out.append(("truncate mid line %d" % i, base[:offs[i] + max(1, len(lines[i]) // 2)]))
    for j in range(10):
        k = rng.randrange(len(base))
        out.append(("truncate at byte %d" % k, base[:k]))
    out.append(("truncate last byte", base[:-1]))
    # deleted, duplicated, swapped lines; reordered
    for i in picked:
        out.append(("delete line %d" % i, join(lines[:i] + lines[i + 1:])))
        out.append(("duplicate line %d" % i, join(lines[:i + 1] + lines[i:])))
        if i + 1 < len(lines):
            out.append(("swap lines %d,%d" % (i, i + 1),
                        join(lines[:i] + [lines[i + 1], lines[i]] + lines[i + 2:])))
    out.append(("reverse lines", join(lines[:1] + lines[1:][::-1])))
    for j in range(3):
        ls = lines[1:]
        rng.shuffle(ls)
        out.append(("shuffle %d" % j, join(lines[:1] + ls)))
    # byte flips
    for j in range(50):
        b = bytearray(base)
        pos = rng.randrange(len(b))
        how = rng.choice([1, 2, 4, 8, 16, 32, 64, 128, 0xff, "nul", "nl", "sp"])
        if how == "nul":
            b[pos] = 0
        elif how == "nl":
            b[pos] = 10
        elif how == "sp":
            b[pos] = 32
        else:
            b[pos] ^= how
        out.append(("byte %d %s" % (pos, how), bytes(b)))
    # numbers replaced by garbage: every number of the picked lines (first
    # 12 of a line), then 60 more anywhere
    nums = []
    for i, ln in enumerate(lines):
        for m in list(NUM_RE.finditer(ln.decode("latin-1")))[:12]:
            nums.append((i, m))
    chosen = [x for x in nums if x[0] in picked and not lines[x[0]].startswith(b"extra")]
    rest = [x for x in nums if x not in chosen]
    chosen += rng.sample(rest, min(60, len(rest))) if not os.environ.get("MRING_FUZZ_ALL") \
        else rest
    for i, m in chosen:
        s = lines[i].decode("latin-1")
        g = rng.choice(GARBAGE)
        t = s[:m.start()] + g + s[m.end():]
        out.append(("line %d number %r -> %r" % (i, m.group(), g),
                    join(lines[:i] + [t.encode("latin-1")] + lines[i + 1:])))
    # very long lines
    out.append(("1 MB line", join(lines + [b"x" * (1 << 20)])))
    out.append(("1 MB line unterminated", join(lines) + b"segment " + b"9" * (1 << 20)))
    for i, ln in enumerate(lines):
        if i not in picked:
            continue
        if ln.startswith(b"extra "):
            out.append(("long extra %d" % i, join(lines[:i] + [b"extra " + b"a," * 50000]
                                                  + lines[i + 1:])))
        if ln.startswith(b"segment "):
            head = ln.rsplit(b" ", 1)[0]
            out.append(("long segment path %d" % i,
                        join(lines[:i] + [head + b" /" + b"p" * 5000] + lines[i + 1:])))
            out.append(("other segment %d" % i,
                        join(lines[:i] + [head + b" " + other_seg.encode()] + lines[i + 1:])))
            out.append(("other segment added %d" % i,
                        join(lines + [head + b" " + other_seg.encode()])))
        if ln.startswith(b"sink "):
            parts = ln.split(b" ", 3)
            size = int(parts[2])
            for sz in (0, size - 1, size + 1, size // 2):
                out.append(("sink size %d of %d, line %d" % (sz, size, i),
                            join(lines[:i] + [b" ".join(parts[:2] + [b"%d" % sz, parts[3]])]
                                 + lines[i + 1:])))
            out.append(("sink path long %d" % i,
                        join(lines[:i] + [b" ".join(parts[:3]) + b" /" + b"q" * 5000]
                             + lines[i + 1:])))
    # crafted lines in every format the state has
    seg = seg_paths[0].encode()
    crafted = [
        b"window 0 0 0 0 1 65534:0x1p+0:1:0 | " + seg,
        b"window 0 0 0 0 1 65535:0x1p+0:1:0 | " + seg,
        b"window 0 0 0 0 1 -1:0x1p+0:1:0 | " + seg,
        b"window 0 0 0 0 2 0:0x1p+0:1:0 | " + seg,
        b"window 0 0 0 0 70000 " + b" ".join(b"%d:0x1p+0:1:0" % i for i in range(70000)) +
        b" | " + seg,
        b"window 18446744073709551615 0 4294967295 0 1 3:nan:18446744073709551615:0 | " + seg,
        b"window 0 0 0 0 1 0:0x1p+0:0:0 | " + seg,
        b"window 0 0 0 0 0 | /nonexistent",
        b"row s 5 0 0 1 65534:0x1p+0 | " + seg,
        b"row e 5 0 0 1 -3:0x1p+0 | " + seg,
        b"row s 5 0 0 3 0:0x1p+0 0:0x1p+1 0:nan | " + seg,
        b"row s 5 0 0 2147483647 0:0x1p+0 | " + seg,
        b"row q 5 0 0 1 0:0x1p+0 | " + seg,
        b"row s 18446744073709551615 4294967295 -1 0 | " + seg,
        b"row s 5 0 0 70000 " + b" ".join(b"%d:0x1p+0" % (i % 3) for i in range(70000)) +
        b" | " + seg,
        b"xstash 65000 0x1p+0 | " + seg,
        b"xstash -5 0x1p+0 | " + seg,
        b"xstash 2147483647 nan | " + seg,
        b"xepoch 4294967295 18446744073709551615 -7",
        b"xepoch 0 5 2147483647",
        b"xepoch 0 5 1",
        b"xm 0 4 0x1p+0 0x0p+0 0x1p+0 nan nan 18446744073709551615 1 m004,c_epoch",
        b"xm 0 0 0x1p+0 0x1p+0 0x1p+0 0x1p+0 0x1p+0 1 0 " + b"n" * 200,
        b"xm 4294967295 64 inf -inf nan 0x1p+0 0x1p+0 1 7 x",
        b"xm 1 8 0x1p+0 0x1p+0 0x1p+0 0x1p+0 0x1p+0 1 0 ",
        b"x",
        b"segment 18446744073709551615 0 " + seg,
        b"segment 0 0 " + seg,
        b"sink jsonl 0 /nonexistent/x.jsonl",
        b"extra " + b"z" * 70000,
        b"extra",
        b"sink csv 18446744073709551615",
    ]
    for j, c in enumerate(crafted):
        out.append(("crafted line %d appended" % j, join(lines + [c])))
        out.append(("crafted line %d after magic" % j, join(lines[:1] + [c] + lines[1:])))
    # whole-file oddities
    out += [
        ("empty", b""),
        ("magic only", lines[0] + b"\n"),
        ("magic unterminated", lines[0]),
        ("magic v1", b"mring-drain-state 1\n" + join(lines[1:])),
        ("magic v3", b"mring-drain-state 3\n" + join(lines[1:])),
        ("magic suffix", lines[0] + b"xyz\n" + join(lines[1:])),
        ("CRLF", base.replace(b"\n", b"\r\n")),
        ("no final newline", base.rstrip(b"\n")),
        ("NUL inside", base[:len(base) // 2] + b"\0" + base[len(base) // 2:]),
        ("blank lines", base.replace(b"\n", b"\n\n")),
        ("binary", bytes(rng.randrange(256) for _ in range(4096))),
    ]
    return out


SAN_MARKS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer",
             "runtime error:", "ThreadSanitizer")


def check_outputs_parse(env, outdir):
    """What a drain that exited 0 left must parse."""
    p = os.path.join(outdir, "out.jsonl")
    with open(p, "rb") as f:
        for n, line in enumerate(f):
            try:
                json.loads(line)
            except Exception as e:
                raise AssertionError("JSONL line %d does not parse (%s): %r"
                                     % (n, e, line[:80]))
    read_csv(os.path.join(outdir, "csv", "metrics.csv"))
    # a TensorBoard output the state does not name is new: a second file
    for f in os.listdir(os.path.join(outdir, "tb")):
        if "tfevents" in f:
            tb_scalars(os.path.join(outdir, "tb", f))


def state_fuzz(reduce):
    env = Env("fuzz")
    try:
        seed, steps = (11, 300) if not reduce else (12, 300)
        segs = ["fz"] if not reduce else ["fz-r0", "fz-r1"]
        pauses = [150] if not reduce else [220, 90]
        if reduce:
            sc = Sched(seed, steps)
            assert any(pauses[1] <= s < pauses[0] for s in sc.epoch_step.values()), \
                "no epoch end between the pauses: no open cross-rank epoch in the state"
        prods = [env.producer(s, seed, steps, "wait", 16384, 0, r, 0, pauses[r])
                 for r, s in enumerate(segs)]
        for p in prods:
            assert p.stdout.readline().strip() == "paused"
        out = env.path("o")
        os.mkdir(out)
        args = ["drain", "--jsonl", os.path.join(out, "out.jsonl"), "--csv",
                os.path.join(out, "csv"), "--tensorboard", os.path.join(out, "tb")]
        args += ["--reduce-ranks"] if reduce else ["--every", "7"]
        args += segs
        r = env.run(args, 60)
        assert r.returncode == 0, r.stderr
        for p in prods:         # let them finish: the rest waits in the rings
            p.stdin.write("go\n")
            p.stdin.flush()
            assert p.wait(timeout=60) == 0
        other = env.producer("other", 3, 20, "drop", 64)
        assert other.wait(timeout=30) == 0
        state_path = os.path.join(out, "out.jsonl.mring-state")
        with open(state_path, "rb") as f:
            base = f.read()
        want = b"xepoch" if reduce else b"window"
        assert want in base, "the base state has no %s line:\n%s" % (want.decode(), base.decode())
        # pristine copies of the outputs and the segments, restored before each run
        shutil.copytree(out, env.path("pristine-o"))
        shutil.copytree(env.shm, env.path("pristine-shm"))
        seg_paths = [os.path.join(env.shm, s) for s in segs]
        muts = mutations(base, random.Random(5 if reduce else 4), seg_paths,
                         os.path.join(env.shm, "other"))
        problems = {}
        counts = {}
        slowest = [0.0, None]
        for label, data in muts:
            shutil.rmtree(out)
            shutil.copytree(env.path("pristine-o"), out)
            for s in os.listdir(env.path("pristine-shm")):
                shutil.copyfile(env.path("pristine-shm", s), os.path.join(env.shm, s))
            with open(state_path, "wb") as f:
                f.write(data)
            sym = None
            t0 = time.time()
            try:
                r = env.run(args, 30 if SANITIZED else 10)
                rc, err = r.returncode, r.stderr
            except subprocess.TimeoutExpired:
                rc, err = None, ""
                sym = "hang (timeout)"
            dt = time.time() - t0
            if dt > slowest[0]:
                slowest[:] = [dt, label]
            if sym:
                pass
            elif rc < 0:
                sym = "killed by signal %d" % -rc
            elif any(m in err for m in SAN_MARKS):
                sym = "sanitizer report: " + next(l for l in err.splitlines()
                                                   if any(m in l for m in SAN_MARKS))[:160]
            elif rc not in (0, 1, 2):
                sym = "exit %d" % rc
            elif rc != 0 and len(err.strip().splitlines()) != 1:
                sym = "exit %d with %d stderr lines" % (rc, len(err.strip().splitlines()))
            elif rc == 0:
                try:
                    check_outputs_parse(env, out)
                except Exception as e:
                    sym = "exit 0 but output broken: %s" % str(e).split("\n")[0][:160]
            counts[rc] = counts.get(rc, 0) + 1
            if sym:
                key = re.sub(r"\d+", "N", sym)[:90]
                problems.setdefault(key, []).append((label, sym, err.strip().splitlines()[:2]))
        print("  %d mutations: exit statuses %s; slowest %.2fs (%s)"
              % (len(muts), sorted(counts.items(), key=lambda x: str(x[0])), slowest[0],
                 slowest[1]))
        if problems:
            msg = []
            for key, lst in sorted(problems.items()):
                label, sym, err = lst[0]
                msg.append("  [%s] %d mutation(s), first: %s: %s; stderr %s"
                           % (key, len(lst), label, sym, err))
            raise AssertionError("\n" + "\n".join(msg))
    finally:
        env.close()


def test_state_fuzz_every():
    state_fuzz(False)


def test_state_fuzz_reduce_ranks():
    state_fuzz(True)


def test_kill_wait_named_segments():
    """`drain --wait A B` drains both A and B, with rank, however late B
    appears."""
    env = Env("waitall")
    try:
        out = env.path("out.jsonl")
        d = env.drain("--jsonl", out, "--wait", "--follow", "--flush-ms", "5", "wa", "wb")
        p = env.producer("wa", 5, 50, "wait", 4096, 0, 0)
        assert p.wait(timeout=30) == 0
        # a drain that took wa alone drains it and exits, or at least
        # writes its output; one that waits for wb does neither (the 2 s
        # bound only makes a wrong drain fail more reliably)
        t0 = time.time()
        while d.poll() is None and not os.path.exists(out) and time.time() - t0 < 2:
            time.sleep(0.01)
        p = env.producer("wb", 5, 50, "wait", 4096, 0, 1)
        assert p.wait(timeout=30) == 0
        try:
            _, err = d.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            d.kill()
            raise AssertionError("drain --wait --follow did not exit after both producers closed")
        assert d.returncode == 0, (d.returncode, err)
        rows = read_jsonl(out)
        ranks = sorted({r.get("rank") for r in rows}, key=str)
        assert ranks == [0, 1], "rows of ranks %s (None: no rank key); stderr %r" % (ranks, err)
    finally:
        env.close()


def test_kill_0_sched_matches_producer():
    """The Python schedule is the producer's: counts and last values agree
    with `mring stat` of a run nobody drained."""
    env = Env("sched")
    try:
        for seed in (1, 2, 3):
            p = env.producer("s%d" % seed, seed, 400, "wait", 1 << 17)
            assert p.wait(timeout=30) == 0
            sc = Sched(seed, 400)
            r = env.run(["stat", "s%d" % seed], 30)
            assert r.returncode == 0, r.stderr
            hdr = r.stdout.splitlines()[1]
            assert " written %d " % sc.nslots in hdr, (hdr, sc.nslots)
            lines = r.stdout.splitlines()
            head = [i for i, l in enumerate(lines) if l.split()[:2] == ["ID", "METRIC"]][0]
            nlines = [l for l in lines[head + 1:] if l.strip()]
            assert len(nlines) == len(sc.metrics), (len(nlines), len(sc.metrics))
    finally:
        env.close()


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--mring", required=True)
    ap.add_argument("--producer", required=True)
    ap.add_argument("--only")
    ARGS = ap.parse_args()
    tests = [(n, f) for n, f in sorted(globals().items())
             if n.startswith("test_") and (not ARGS.only or ARGS.only in n)]
    passed = failed = 0
    t00 = time.time()
    for name, fn in tests:
        t0 = time.time()
        try:
            fn()
            passed += 1
            print("PASS %s (%.2fs)" % (name, time.time() - t0), flush=True)
        except AssertionError as e:
            failed += 1
            print("FAIL %s (%.2fs): %s" % (name, time.time() - t0, e), flush=True)
        except Exception:
            failed += 1
            print("FAIL %s" % name, flush=True)
            traceback.print_exc()
    print("%d passed, %d failed (%.1fs)" % (passed, failed, time.time() - t00))
    return 1 if failed else 0


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    sys.exit(main())
