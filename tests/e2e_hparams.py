#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""End-to-end tests of the hyperparameters `mring drain` writes.

Producers are tests/prod_script.c processes (command `hparams JSON`);
independent readers check what the drain wrote:
  - DIR/hparams.yaml (--csv) with Debian's PyYAML: yaml.safe_load() must
    return exactly json.loads() of the text (same types, -0.0 kept);
  - FILE.hparams.json (--jsonl): the text as set, and a newline;
  - the TensorBoard event file with protobuf (tests/tfevents_check.py and
    tests/tb_min.proto): one _hparams_/session_start_info per distinct
    hparams, a session_end_info with STATUS_SUCCESS after a clean close and
    STATUS_FAILURE after a crash, also across drainer kills.

Usage: e2e_hparams.py --mring PATH --script PATH [--only NAME]
Needs python3-yaml, python3-protobuf, python3-crc32c, protobuf-compiler.
"""
import json
import math
import os
import random
import subprocess
import sys
import time

import yaml

import e2e_common  # tests/, next to this file

ARGS = None
HERE = os.path.dirname(os.path.abspath(__file__))


class Env(e2e_common.BaseEnv):
    """A private MRING_DIR and output directory for one test."""

    def __init__(self, name):
        super().__init__(name, "mring-hp")

    def script(self, seg, rank=0, mode="drop", cap=1 << 12):
        p = Script(self, seg, rank, mode, cap)
        self.procs.append(p.p)
        return p

    def drain(self, *args):
        p = subprocess.Popen([ARGS.mring, "drain"] + list(args), env=self.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        return p

    def run(self, *args, timeout=60):
        return subprocess.run([ARGS.mring, "drain"] + list(args), env=self.env,
                              capture_output=True, text=True, timeout=timeout)



def Script(env, seg, rank, mode, cap):
    return e2e_common.Script(ARGS.script, env, seg, mode, cap, rank=rank)


def same(a, b, where="$"):
    """Equal with the same types, down to the sign of a zero."""
    assert type(a) is type(b), "%s: %r (%s) vs %r (%s)" % (where, a, type(a).__name__,
                                                          b, type(b).__name__)
    if isinstance(a, dict):
        assert set(a) == set(b), "%s: keys %r vs %r" % (where, sorted(a), sorted(b))
        for k in a:
            same(a[k], b[k], "%s.%r" % (where, k))
    elif isinstance(a, list):
        assert len(a) == len(b), "%s: %d vs %d items" % (where, len(a), len(b))
        for i, (x, y) in enumerate(zip(a, b)):
            same(x, y, "%s[%d]" % (where, i))
    elif isinstance(a, float):
        assert (a == b and math.copysign(1, a) == math.copysign(1, b)) or \
            (math.isnan(a) and math.isnan(b)), "%s: %r vs %r" % (where, a, b)
    else:
        assert a == b, "%s: %r vs %r" % (where, a, b)


def check_yaml(path, text):
    with open(path) as f:      # the locale's encoding: the file is ASCII
        got = yaml.safe_load(f)
    with open(path, "rb") as f:
        assert all(c < 0x80 for c in f.read()), "hparams.yaml is not ASCII"
    same(got, json.loads(text))


def check_json_side(path, text):
    with open(path, encoding="utf-8") as f:
        assert f.read() == text + "\n"


def tb_file(d):
    files = [f for f in os.listdir(d) if "tfevents" in f]
    assert len(files) == 1, files
    return os.path.join(d, files[0])


def tb_hparams(d):
    """[(tag, dict)] of the hparams summaries, in file order."""
    r = subprocess.run(["/usr/bin/python3", os.path.join(HERE, "tfevents_check.py"),
                        "--hparams", tb_file(d)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = []
    for line in r.stdout.splitlines():
        if line.startswith("hparams "):
            _, tag, js = line.split(" ", 2)
            out.append((tag, json.loads(js)))
    return out


def flat_want(obj, prefix=""):
    """What the TensorBoard map must hold for @obj (docs/drain.md)."""
    out = {}
    for k, v in obj.items():
        key = prefix + "/" + k if prefix else k
        if isinstance(v, dict) and v:
            out.update(flat_want(v, key))
        else:
            out[key] = v
    return out


def surrogates_replaced(s):
    return "".join("\ufffd" if 0xd800 <= ord(c) < 0xe000 else c for c in s)


def check_tb_start(got, obj, start_count=1):
    """One session start holding @obj, flattened."""
    starts = [h for t, h in got if t.endswith("session_start_info")]
    assert len(starts) == start_count, "%d session starts: %r" % (len(starts), got)
    hp = starts[-1]["hparams"]
    want = flat_want(obj)
    assert set(hp) == {surrogates_replaced(k) for k in want}, (sorted(hp), sorted(want))
    for k, v in want.items():
        g = hp[surrogates_replaced(k)]
        if isinstance(v, bool) or v is None:
            assert g is v, (k, g, v)
        elif isinstance(v, int):
            assert g == float(v), (k, g, v)     # -0 may come as -0.0
        elif isinstance(v, float):
            same(g, v, k)
        elif isinstance(v, str):
            assert g == surrogates_replaced(v), (k, g, v)
        else:                       # arrays, {}: their JSON text
            same(json.loads(g), v, k)
    assert starts[-1]["start_time_secs"] > 1e9


def end_status(got):
    return [h["status"] for t, h in got if t.endswith("session_end_info")]


# -- the nasty object -----------------------------------------------------------

NASTY = ('{"lr": 1e-3, "wd": 1E3, "eps": 1e-8, "m": 0.9, "exp0": 0e0, "e2": 2E+5,'
         ' "tiny": 5e-324, "huge": 1.7976931348623157e308, "over": 1e400,'
         ' "big": 123456789012345678901234567890, "negbig": -98765432109876543210,'
         ' "zero": 0, "negzero_int": -0, "negzero": -0.0, "negzero_e": -0e0,'
         ' "int": 42, "neg": -7, "half": -0.5, "yes": "no", "on": "off", "Y": "n",'
         ' "null": "~", "~": null, "": "", "True": true, "false": false,'
         ' "1e3": "1e3", "0x10": "010", "1:20": "2001-12-14", ".inf": ".nan",'
         ' "<<": "=", "- a": "? b", ": c": "#d", "a: b": "a #b", "[x]": "{y}",'
         ' "&a": "*b", "!tag": "|", ">": "%", "@": "`", "\'q\'": "\\"dq\\"",'
         ' " lead": "trail ", "tab\\there": "nl\\nhere\\r\\n", "ctl": "\\u0000\\u0001\\u001f\\u007f",'
         ' "uni": "h\u00e9\u00e7 \u65e5\u672c \\u00e9", "nel": "\\u0085", "ls": "\\u2028\\u2029",'
         ' "bom": "\\ufeff", "c1": "\\u0080\\u009f", "fffe": "\\ufffe\\uffff",'
         ' "astral": "\\ud83d\\ude00 \U0001F600", "lone": "\\ud800 \\udfff",'
         ' "slash": "a\\/b\\\\c", "nested": {"a": {"b": {"c": [1, 2.5e-3, "x", null, true]}},'
         ' "empty": {}, "ea": [], "deep": [[[]], [{}], [{"k": [{"z": 1e2}]}]]},'
         ' "arr": [1, -0.0, 1e3, "yes", {"on": null}, [], {}], "ok_plain": "adam_w-1.5",'
         ' "k' + "x" * 1500 + '": "long key", "longval": "' + "v" * 3000 + '"}')


def run_nasty(env, text):
    seg = "nasty"
    p = env.script(seg)
    p.do("metric loss step")
    p.hparams(text)
    p.do("step 1")
    p.do("log 0 0.5")
    p.do("step 2")
    p.close()
    out = env.path("o")
    r = env.run("--csv", os.path.join(out, "csv"), "--jsonl", os.path.join(out, "o.jsonl"),
                "--tensorboard", os.path.join(out, "tb"), seg)
    assert r.returncode == 0, r.stderr
    return out


def test_nasty_object_round_trips(env):
    """yaml.safe_load(hparams.yaml) == json.loads(text), the JSON side file
    is the text, TensorBoard holds it flattened, with a SUCCESS end."""
    json.loads(NASTY)
    out = run_nasty(env, NASTY)
    check_yaml(os.path.join(out, "csv", "hparams.yaml"), NASTY)
    check_json_side(os.path.join(out, "o.jsonl.hparams.json"), NASTY)
    got = tb_hparams(os.path.join(out, "tb"))
    check_tb_start(got, json.loads(NASTY))
    assert end_status(got) == ["STATUS_SUCCESS"], got
    # metrics.csv is still what it was, next to it
    with open(os.path.join(out, "csv", "metrics.csv")) as f:
        assert f.read().splitlines()[0] == "epoch,loss,step"


# -- random objects ----------------------------------------------------------------

POOL = ["yes", "No", "ON", "off", "y", "N", "null", "Null", "~", "", "true", "False",
        "1e3", "1E-3", "0x1F", "0o17", "010", "0b11", "1_000", "1:20", "2001-12-14",
        "2001-12-14 21:59:43.10 -5", ".inf", "-.INF", ".NaN", "-", "- a", "?", "? x",
        ":", ": y", "a:b", "a: b", "#c", "a #b", "[x]", "{y}", "&a", "*b", "!t", "!!str",
        "|", ">", "%", "@", "`", "'", '"', "=", "<<", " ", " lead", "trail ", "a\tb",
        "line\nbreak", "cr\r", "\x00", "\x1b", "\x7f", "\u0080", "\u0085", "\u00a0",
        "\u00e9", "\u2028", "\u2029", "\ufeff", "\ufffd", "\ufffe", "\uffff",
        "\U0001F600", "\U0010FFFF", "\u65e5\u672c\u8a9e", "lr", "batch_size",
        "model.name", "a-b", "_", "_x", "x" * 1100, "\\", "\\n", "'quoted'"]

NUMS = ["0", "-0", "1", "-1", "42", "9007199254740993", "123456789012345678901234567890",
        "0.0", "-0.0", "0e0", "-0E+0", "1e3", "1E3", "1e-3", "1E+3", "2.5e10", "2.5E-10",
        "0.1", "1.5", "-1.5e-7", "5e-324", "4.9e-324", "2.2250738585072014e-308",
        "1.7976931348623157e308", "1e400", "-1e400", "1e-400", "3.14159265358979323846",
        "100000000000000000000000.0", "1.0000000000000002", "9.999999999999999e22"]


def json_str(rng, s):
    """@s as JSON text, escaping at random (and \\u-escaping some chars)."""
    out = ['"']
    for c in s:
        o = ord(c)
        if c in '"\\':
            out.append("\\" + c)
        elif o < 0x20 or rng.random() < 0.2:
            if o > 0xffff:
                o -= 0x10000
                out.append("\\u%04x\\u%04X" % (0xd800 + (o >> 10), 0xdc00 + (o & 0x3ff)))
            elif c == "\n" and rng.random() < 0.5:
                out.append("\\n")
            else:
                out.append("\\u%04x" % o)
        elif c == "/" and rng.random() < 0.5:
            out.append("\\/")
        else:
            out.append(c)
    if rng.random() < 0.05:
        out.append(rng.choice(["\\ud800", "\\udc00", "\\uDBFF"]))   # lone surrogate
    out.append('"')
    return "".join(out)


def gen(rng, depth):
    r = rng.random()
    if depth < 4 and r < 0.15:
        n = rng.randrange(0, 5)
        return "{" + ", ".join("%s: %s" % (json_str(rng, rng.choice(POOL) + str(i) * (i > 0)),
                                           gen(rng, depth + 1)) for i in range(n)) + "}"
    if depth < 4 and r < 0.25:
        return "[" + ",".join(gen(rng, depth + 1) for _ in range(rng.randrange(0, 4))) + "]"
    if r < 0.55:
        return rng.choice(NUMS)
    if r < 0.62:
        return rng.choice(["true", "false", "null"])
    return json_str(rng, rng.choice(POOL))


def test_random_objects_round_trip(env):
    """Random objects of nasty keys, strings and JSON number forms: YAML and
    the side file, drained one after the other from one producer."""
    rng = random.Random(15)
    seg = "rnd"
    p = env.script(seg)
    p.do("metric loss step")
    out = env.path("o")
    csvdir, jl = os.path.join(out, "csv"), os.path.join(out, "o.jsonl")
    for i in range(40):
        n = rng.randrange(1, 12)
        keys = rng.sample(POOL, n)
        text = "{" + ", ".join("%s: %s" % (json_str(rng, k), gen(rng, 1)) for k in keys) + "}"
        try:
            json.loads(text)
        except ValueError:
            continue
        p.hparams(text)
        p.do("step %d" % (i + 1))
        r = env.run("--csv", csvdir, "--jsonl", jl, seg)
        assert r.returncode == 0, r.stderr
        try:
            check_yaml(os.path.join(csvdir, "hparams.yaml"), text)
            check_json_side(jl + ".hparams.json", text)
        except Exception:
            print("object %d: %s" % (i, text[:2000]))
            raise
    p.close()


# -- end of the run -----------------------------------------------------------------

def test_crash_ends_the_session_with_failure(env):
    p = env.script("c")
    p.do("metric loss step")
    p.hparams('{"lr": 0.1, "opt": "sgd"}')
    p.do("step 1")
    p.do("log 0 1")
    p.do("step 2")
    p.crash()
    tb = env.path("tb")
    r = env.run("--tensorboard", tb, "--follow", "c")
    assert r.returncode == 3, (r.returncode, r.stderr)
    got = tb_hparams(tb)
    check_tb_start(got, {"lr": 0.1, "opt": "sgd"})
    assert end_status(got) == ["STATUS_FAILURE"], got
    # a second drain of the same run adds nothing
    r = env.run("--tensorboard", tb, "--follow", "c")
    assert r.returncode == 3, r.stderr
    assert tb_hparams(tb) == got


def test_live_run_has_no_end_yet(env):
    """A drain without --follow of a live producer writes the start only;
    the end comes with the drain that sees the producer gone."""
    p = env.script("l")
    p.hparams('{"a": 1}')
    tb = env.path("tb")
    r = env.run("--tensorboard", tb, "l")
    assert r.returncode == 0, r.stderr
    got = tb_hparams(tb)
    check_tb_start(got, {"a": 1})
    assert end_status(got) == [], got
    p.close()
    r = env.run("--tensorboard", tb, "l")
    assert r.returncode == 0, r.stderr
    got = tb_hparams(tb)
    check_tb_start(got, {"a": 1})
    assert end_status(got) == ["STATUS_SUCCESS"], got


def wait_for(pred, timeout=10):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_hparams_set_after_the_drain_started(env):
    """Set while the drain follows: picked up at a commit, and within
    about a second when the producer logs nothing more; a change is
    written again (a second session start)."""
    p = env.script("late")
    p.do("metric loss step")
    out = env.path("o")
    csvdir, jl, tb = os.path.join(out, "csv"), os.path.join(out, "o.jsonl"), os.path.join(out, "tb")
    d = env.drain("--csv", csvdir, "--jsonl", jl, "--tensorboard", tb, "--follow", "late")
    p.do("step 1")
    p.do("log 0 1")
    time.sleep(0.3)
    assert not os.path.exists(os.path.join(csvdir, "hparams.yaml"))
    first = '{"lr": 1e-4, "layers": [64, 64]}'
    p.hparams(first)         # and nothing else: the idle check finds them
    yml = os.path.join(csvdir, "hparams.yaml")
    assert wait_for(lambda: os.path.exists(yml), 5), "hparams.yaml not written while idle"
    check_yaml(yml, first)
    check_json_side(jl + ".hparams.json", first)
    second = '{"lr": 2e-4, "layers": [64, 64], "note": "changed"}'
    p.hparams(second)
    p.do("step 2")
    p.do("log 0 2")
    p.do("step 3")

    def has_second():
        try:
            with open(yml) as f:
                return yaml.safe_load(f) == json.loads(second)
        except OSError:
            return False
    assert wait_for(has_second, 5), "the change did not reach hparams.yaml"
    p.close()
    _, err = d.communicate(timeout=30)
    assert d.returncode == 0, err
    check_yaml(yml, second)
    check_json_side(jl + ".hparams.json", second)
    got = tb_hparams(tb)
    check_tb_start(got, json.loads(second), start_count=2)
    starts = [h for t, h in got if t.endswith("start_info")]
    same(starts[0]["hparams"]["lr"], 1e-4)
    assert end_status(got) == ["STATUS_SUCCESS"], got


def test_killed_drainer_writes_the_session_start_once(env):
    """SIGKILL the drainer at random instants while a producer logs and
    sets hparams; restarted each time with the same arguments.  The file
    holds one session start per distinct hparams and one end."""
    rng = random.Random(7)
    p = env.script("k", cap=1 << 16)     # never full: nothing is dropped
    p.do("metric loss step")
    out = env.path("o")
    args = ["--csv", os.path.join(out, "csv"), "--jsonl", os.path.join(out, "o.jsonl"),
            "--tensorboard", os.path.join(out, "tb"), "--follow", "--flush-ms", "0", "k"]
    texts = ['{"lr": %d.5e-3, "run": "k"}' % i for i in range(3)]
    step = 0
    for i in range(36):
        if i % 12 == 0:
            p.hparams(texts[i // 12])
        d = env.drain(*args)
        p.do("steps %d %d 0" % (step, step + 40))
        step += 40
        time.sleep(rng.random() * 0.05)
        d.kill()
        d.wait()
    p.close()
    r = env.run(*args)
    assert r.returncode == 0, r.stderr
    got = tb_hparams(os.path.join(out, "tb"))
    starts = [h["hparams"]["lr"] for t, h in got if t.endswith("start_info")]
    # each text once; a text whose drainer was killed before its commit
    # and that was replaced before the next commit may be missing
    assert len(starts) == len(set(starts)), starts
    assert starts and starts[-1] == 2.5e-3, starts
    assert end_status(got) == ["STATUS_SUCCESS"], got
    check_yaml(os.path.join(out, "csv", "hparams.yaml"), texts[-1])
    # restarting after the end adds nothing
    r = env.run(*args)
    assert r.returncode == 0, r.stderr
    assert tb_hparams(os.path.join(out, "tb")) == got


def test_killed_right_after_the_start_was_written(env):
    """Kill the drainer many times right after it starts (the session
    start goes out with its first commit): never two starts."""
    p = env.script("k2")
    p.hparams('{"x": 1}')
    out = env.path("tb")
    for i in range(30):
        d = env.drain("--tensorboard", out, "--follow", "k2")
        time.sleep(0.002 * (i % 10))
        d.kill()
        d.wait()
        files = os.listdir(out) if os.path.isdir(out) else []
        # at most one event file (and the state, and a state temp file
        # a kill left between its write and its rename)
        assert len([f for f in files if "tfevents" in f]) <= 1, files
        assert set(files) <= {f for f in files if "tfevents" in f} | \
            {".mring-drain-state", ".mring-drain-state.tmp"}, files
        if any("tfevents" in f for f in files):
            got = tb_hparams(out)
            assert len([1 for t, _ in got if t.endswith("start_info")]) <= 1, got
    p.close()
    r = env.run("--tensorboard", out, "--follow", "k2")
    assert r.returncode == 0, r.stderr
    got = tb_hparams(out)
    check_tb_start(got, {"x": 1})
    assert end_status(got) == ["STATUS_SUCCESS"], got


# -- several ranks -------------------------------------------------------------------

def test_lowest_rank_wins_and_a_difference_is_said_once(env):
    r1 = env.script("rk-b", rank=1)
    r0 = env.script("rk-a", rank=0)
    r2 = env.script("rk-c", rank=2)
    r1.hparams('{"who": "rank1"}')
    r2.hparams('{"who": "rank2"}')
    out = env.path("o")
    csvdir, tb = os.path.join(out, "csv"), os.path.join(out, "tb")
    r = env.run("--csv", csvdir, "--tensorboard", tb, "rk-*")
    assert r.returncode == 0, r.stderr
    check_yaml(os.path.join(csvdir, "hparams.yaml"), '{"who": "rank1"}')
    assert r.stderr.count("other hparams") == 1, r.stderr
    # rank 0 sets them later: its own, the same as rank 2's
    r0.hparams('{"who": "rank0"}')
    r = env.run("--csv", csvdir, "--tensorboard", tb, "rk-*")
    assert r.returncode == 0, r.stderr
    check_yaml(os.path.join(csvdir, "hparams.yaml"), '{"who": "rank0"}')
    assert r.stderr.count("other hparams") == 1, r.stderr
    for s in (r0, r1, r2):
        s.close()
    r = env.run("--csv", csvdir, "--tensorboard", tb, "rk-*")
    assert r.returncode == 0, r.stderr
    got = tb_hparams(tb)
    assert [h["hparams"]["who"] for t, h in got if t.endswith("start_info")] == \
        ["rank1", "rank0"], got
    assert end_status(got) == ["STATUS_SUCCESS"], got


def test_same_hparams_on_every_rank_say_nothing(env):
    a, b = env.script("sa", rank=0), env.script("sb", rank=1)
    a.hparams('{"lr": 1e-3}')
    b.hparams('{"lr": 1e-3}')
    a.close()
    b.crash()
    tb = env.path("tb")
    r = env.run("--tensorboard", tb, "--follow", "s?")
    assert r.returncode == 3, r.stderr
    assert "other hparams" not in r.stderr, r.stderr
    got = tb_hparams(tb)
    check_tb_start(got, {"lr": 1e-3})
    assert end_status(got) == ["STATUS_FAILURE"], got    # one rank crashed


# -- files -----------------------------------------------------------------------------

def test_symlinked_hparams_yaml_is_refused(env):
    p = env.script("sy")
    p.hparams('{"a": 1}')
    csvdir = env.path("csv")
    os.mkdir(csvdir)
    target = env.path("target")
    with open(target, "w") as f:
        f.write("keep\n")
    os.symlink(target, os.path.join(csvdir, "hparams.yaml"))
    r = env.run("--csv", csvdir, "sy")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "hparams" in r.stderr and "symbolic" in r.stderr, r.stderr
    with open(target) as f:
        assert f.read() == "keep\n"
    p.close()


def test_unchanged_side_files_are_not_rewritten(env):
    p = env.script("u")
    p.do("metric loss step")
    p.hparams('{"a": 1}')
    out = env.path("o")
    csvdir, jl = os.path.join(out, "csv"), os.path.join(out, "o.jsonl")
    r = env.run("--csv", csvdir, "--jsonl", jl, "u")
    assert r.returncode == 0, r.stderr
    ino = (os.stat(os.path.join(csvdir, "hparams.yaml")).st_ino,
           os.stat(jl + ".hparams.json").st_ino)
    p.do("step 1")
    p.do("log 0 1")
    p.do("step 2")
    p.close()
    r = env.run("--csv", csvdir, "--jsonl", jl, "u")
    assert r.returncode == 0, r.stderr
    assert ino == (os.stat(os.path.join(csvdir, "hparams.yaml")).st_ino,
                   os.stat(jl + ".hparams.json").st_ino)
    assert not [f for f in os.listdir(csvdir) if f.endswith(".tmp")]


def test_no_hparams_no_files(env):
    p = env.script("n")
    p.do("metric loss step")
    p.do("step 1")
    p.do("log 0 1")
    p.close()
    out = env.path("o")
    r = env.run("--csv", os.path.join(out, "csv"), "--jsonl", os.path.join(out, "o.jsonl"),
                "--tensorboard", os.path.join(out, "tb"), "n")
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(os.path.join(out, "csv", "hparams.yaml"))
    assert not os.path.exists(os.path.join(out, "o.jsonl.hparams.json"))
    assert tb_hparams(os.path.join(out, "tb")) == []
    with open(os.path.join(out, "o.jsonl.mring-state")) as f:
        assert "\nhparams " not in f.read()


def main():
    return e2e_common.main(globals(), Env, ["mring", "script"])


if __name__ == "__main__":
    sys.exit(main())
