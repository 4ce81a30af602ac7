# SPDX-License-Identifier: MIT
"""Writer/Reader round trips, errors, conversions and epoch reductions."""
import errno
import gc
import math
import os
import subprocess
import sys

import pytest

import mring


class Scalar:
    """A 0-d-tensor look-alike: only __float__."""

    def __init__(self, v):
        self.v = v

    def __float__(self):
        return float(self.v)


class BadScalar:
    def __float__(self):
        raise ValueError("only one element tensors can be converted")


def values(events, name):
    return [(e.step, e.value) for e in events if e.kind == "value" and e.metric == name]


def test_round_trip(mring_dir):
    with mring.Writer("run", capacity=256, run="exp1", rank=3) as w:
        loss = w.metric("train/loss", on_step=True, on_epoch=True, reduce="mean",
                        prog_bar=True)
        assert loss.name == "train/loss" and loss.id == 0 and loss.writer is w
        for step in range(5):
            w.step(step)
            loss.log(float(step))
        r = mring.Reader("run")
        info = r.metrics()
        assert info["train/loss"]["on_step"] and info["train/loss"]["on_epoch"]
        assert info["train/loss"]["prog_bar"] and info["train/loss"]["reduce"] == "mean"
        evs = r.read(max=100)
        assert [e.kind for e in evs[:2]] == ["step", "value"]
        assert values(evs, "train/loss") == [(s, float(s)) for s in range(5)]
        # ring positions: a STEP takes two slots, a value one
        assert [e.seq for e in evs] == [3 * (i // 2) + 2 * (i % 2) for i in range(len(evs))]
        st = r.stats("train/loss")
        assert st["count"] == 4, "published once per step: the last step not yet"
        w.flush()
        st = r.stats("train/loss")
        assert st["count"] == 5 and st["value"] == 2.0 and st["last_step"] == 4
        assert r.stats(0) == st
        s = r.status()
        assert s["alive"] and not s["closed"] and s["run"] == "exp1" and s["rank"] == 3
        assert s["step"] == 4 and s["metrics"] == 1 and s["capacity"] == 256
        assert s["pid"] == os.getpid()
    assert w.closed
    assert r.status()["closed"] and not r.status()["alive"]
    r.close()
    assert os.path.exists(mring_dir / "run")


def test_iteration_and_events_are_tuples():
    w = mring.Writer("it", capacity=64)
    m = w.metric("x")
    w.step(7)
    m.log(1.5)
    r = mring.Reader("it")
    evs = list(r)
    assert list(r) == []          # drained what was ready; never blocks
    seq, kind, metric, step, epoch, wall_ns, value = evs[-1]
    assert (kind, metric, step, epoch, value) == ("value", "x", 7, 0, 1.5)
    assert wall_ns > 0
    m.log(2.5)
    assert [e.value for e in r] == [2.5]
    w.close()


def test_dict_log_with_step():
    w = mring.Writer("d", capacity=256)
    w.log({"loss": 0.51, "lr": 3e-4}, step=10)
    w.log({"loss": 0.49, "lr": 2e-4, "grad_norm": 1}, step=20)
    w.log({"loss": 0.40})        # no step: current step (20)
    r = mring.Reader("d")
    evs = r.read()
    assert [e.step for e in evs if e.kind == "step"] == [10, 20]
    assert values(evs, "loss") == [(10, 0.51), (20, 0.49), (20, 0.40)]
    assert values(evs, "grad_norm") == [(20, 1.0)]
    assert set(r.metrics()) == {"loss", "lr", "grad_norm"}
    assert r.metrics()["loss"]["on_epoch"]
    # the same step twice: one STEP record
    w.log({"lr": 1e-4}, step=20)
    assert [e.kind for e in r.read()] == ["value"]
    w.epoch_end()
    assert r.epoch("loss")["value"] == pytest.approx((0.51 + 0.49 + 0.40) / 3)
    assert r.read()[-1].kind == "epoch_end"
    # all or nothing: a bad value logs nothing
    with pytest.raises(TypeError):
        w.log({"loss": 1.0, "bad": "x"}, step=30)
    assert r.read() == [] and "bad" not in r.metrics()
    with pytest.raises(TypeError):
        w.log({"nested": {"a": 1.0}})
    with pytest.raises(TypeError):
        w.log([("loss", 1.0)])
    with pytest.raises(TypeError):
        w.log({1: 1.0})
    w.close()


def test_metric_registration_rules():
    w = mring.Writer("reg", capacity=64)
    a = w.metric("a", on_epoch=True)
    assert w.metric("a", on_epoch=True) is a
    with pytest.raises(ValueError):          # other flags
        w.metric("a", on_epoch=True, reduce="max")
    # each refusal names the rule the name breaks
    with pytest.raises(ValueError, match=r"^metric name '' must not be empty$"):
        w.metric("")
    with pytest.raises(ValueError, match=r"is 64 bytes in UTF-8; at most 63$"):
        w.metric("x" * 64)
    with pytest.raises(ValueError, match=r"is 64 bytes in UTF-8; at most 63$"):
        w.metric("é" * 32)                   # 32 characters, 64 bytes
    w.metric("x" * 63)
    with pytest.raises(ValueError, match=r"contains the control character U\+000A$"):
        w.metric("bad\nname")
    with pytest.raises(ValueError):
        w.metric("nul\0")
    with pytest.raises(ValueError):
        w.metric("b", on_epoch=True, reduce="median")
    with pytest.raises(ValueError):
        w.metric("b", on_step=False, on_epoch=False)
    with pytest.raises(ValueError):
        w.metric("b", reduce="max")          # reduction without on_epoch
    with pytest.raises(TypeError):
        w.metric(b"bytes")
    assert set(w.metrics) == {"a", "x" * 63}
    w.close()


def test_max_metrics():
    w = mring.Writer("mm", capacity=64, max_metrics=2)
    w.metric("a")
    w.metric("b")
    with pytest.raises(ValueError):
        w.metric("c")
    w.close()


def test_writer_open_errors(mring_dir):
    w = mring.Writer("busy", capacity=64)
    with pytest.raises(OSError) as ei:
        mring.Writer("busy", capacity=64)
    assert ei.value.errno in (errno.EBUSY, errno.EEXIST)
    w.close()
    with pytest.raises(OSError) as ei:        # producer gone: EEXIST
        mring.Writer("busy", capacity=64)
    assert ei.value.errno == errno.EEXIST
    assert isinstance(ei.value, FileExistsError)
    # the Python spelling of the option, not the C one
    assert "replace=True" in ei.value.strerror and "MRING_CFG" not in ei.value.strerror
    mring.Writer("busy", capacity=64, replace=True).close()
    # a file that is not a segment is said to be one, and never replaced
    notseg = os.path.join(mring_dir, "notes")
    with open(notseg, "w") as f:
        f.write("my notes\n")
    for replace in (False, True):
        with pytest.raises(FileExistsError) as ei:
            mring.Writer("notes", capacity=64, replace=replace)
        assert "notes is not an mring segment" in ei.value.strerror, ei.value.strerror
        assert "replace=True" not in ei.value.strerror
    assert open(notseg).read() == "my notes\n"
    with pytest.raises(ValueError, match=r"capacity must be a power of two from 8 to "
                       r"2\*\*32 ring slots \(got 1000\); 0 means 2\*\*20$"):
        mring.Writer("cap", capacity=1000)    # not a power of two
    with pytest.raises(ValueError, match=r"got 4\)"):
        mring.Writer("cap", capacity=4)
    with pytest.raises(ValueError, match=r"max_metrics must be at most 65535 \(got 70000\)"):
        mring.Writer("mm", max_metrics=70000)
    with pytest.raises(ValueError, match=r"mode must be permission bits within 0o777"):
        mring.Writer("mode", mode=0o4755)
    with pytest.raises(ValueError, match=r"run name must not be empty"):
        mring.Writer("run", run="")
    assert not os.path.exists(mring_dir / "cap"), "a refused Writer created its segment"
    with pytest.raises(ValueError):
        mring.Writer("of", on_full="block")
    with pytest.raises(OSError) as ei:
        mring.Writer(str(mring_dir / "no" / "such" / "dir"))
    assert ei.value.errno == errno.ENOENT
    assert ei.value.strerror == "no such directory %s" % (mring_dir / "no" / "such")
    with pytest.raises(OSError) as ei:
        mring.Reader("missing")
    assert ei.value.errno == errno.ENOENT
    assert ei.value.strerror == "no segment %s" % (mring_dir / "missing")
    assert ei.value.filename == "missing"
    with pytest.raises(FileNotFoundError) as ei:
        mring.Reader(str(mring_dir / "nodir" / "x"))
    assert ei.value.strerror == "no such directory %s" % (mring_dir / "nodir")
    with pytest.raises(OSError) as ei:
        mring.Writer("n" * 5000)
    assert ei.value.errno == errno.ENAMETOOLONG
    # a path object works too
    mring.Writer(mring_dir / "pathlike", capacity=64).close()


def test_closed_writer_and_reader():
    w = mring.Writer("closed", capacity=64)
    m = w.metric("x")
    w.close()
    w.close()                                 # idempotent
    for call in (lambda: m.log(1.0), lambda: m.log(1.0, weight=2.0),
                 lambda: w.step(1), lambda: w.epoch_end(),
                 lambda: w.log({"x": 1.0}), lambda: w.metric("y")):
        with pytest.raises(ValueError):
            call()
    r = mring.Reader("closed")
    r.close()
    with pytest.raises(ValueError):
        r.read()
    with pytest.raises(ValueError):
        r.status()


def test_metric_keeps_writer_alive(mring_dir):
    w = mring.Writer("alive", capacity=64)
    m = w.metric("x")
    del w
    gc.collect()
    m.log(1.0)                                # writer still open
    r = mring.Reader("alive")
    assert r.status()["alive"]
    del m
    gc.collect()                              # cycle collected: closed cleanly
    s = r.status()
    assert s["closed"] and not s["alive"]


def test_value_conversions():
    w = mring.Writer("conv", capacity=256)
    m = w.metric("v", on_epoch=True)
    w.step(1)
    m.log(1)                  # int
    m.log(True)               # bool
    m.log(Scalar(2.5))        # 0-d tensor look-alike
    m.log(2 ** 70)            # big int -> float
    for bad in ("1.0", None, b"x", [1.0], object()):
        with pytest.raises(TypeError):
            m.log(bad)
    with pytest.raises(ValueError):
        m.log(BadScalar())
    with pytest.raises(OverflowError):
        m.log(10 ** 400)
    with pytest.raises(TypeError):
        m.log()
    with pytest.raises(TypeError):
        m.log(1.0, 1.0, 1.0)
    with pytest.raises(TypeError):
        m.log(1.0, wieght=1.0)
    r = mring.Reader("conv")
    assert [v for _, v in values(r.read(), "v")] == [1.0, 1.0, 2.5, float(2 ** 70)]
    w.close()


def test_step_argument():
    w = mring.Writer("step", capacity=64)
    w.step(0)
    w.step(2 ** 64 - 1)
    w.step(5)
    with pytest.raises(ValueError):
        w.step(-1)
    with pytest.raises(TypeError):
        w.step(1.5)
    with pytest.raises(ValueError):
        w.log({"a": 1.0}, step=-2)
    assert w.current_step == 5
    w.close()


def test_nan_and_inf():
    w = mring.Writer("nan", capacity=64)
    m = w.metric("loss", on_epoch=True)
    w.step(0)
    m.log(1.0)
    m.log(float("nan"))
    m.log(float("inf"))
    m.log(3.0)
    w.flush()
    r = mring.Reader("nan")
    st = r.stats("loss")
    assert st["count"] == 2 and st["nonfinite"] == 2 and st["value"] == 2.0
    vals = [v for _, v in values(r.read(), "loss")]
    assert math.isnan(vals[1]) and math.isinf(vals[2])
    w.epoch_end()
    assert r.epoch("loss")["value"] == 2.0
    e = mring.Writer("empty", capacity=64)
    e.metric("x", on_epoch=True)
    re_ = mring.Reader("empty")
    assert math.isnan(re_.stats("x")["value"])
    e.close()
    w.close()


def test_epoch_reductions_weighted():
    w = mring.Writer("ep", capacity=1024)
    mean = w.metric("mean", on_epoch=True, reduce="mean")
    total = w.metric("sum", on_epoch=True, on_step=False, reduce="sum")
    lo = w.metric("min", on_epoch=True, reduce="min")
    hi = w.metric("max", on_epoch=True, reduce="max")
    r = mring.Reader("ep")
    assert r.epoch("mean") is None            # no completed epoch yet
    for step, (v, bs) in enumerate([(1.0, 10), (2.0, 30), (4.0, 60)]):
        w.step(step)
        for m in (mean, total, lo, hi):
            m.log(v, weight=bs)
    w.flush()
    assert r.stats("mean")["value"] == pytest.approx((10 + 60 + 240) / 100)
    assert r.stats("mean")["weight"] == 100.0
    w.epoch_end()
    assert r.epoch("mean")["value"] == pytest.approx(3.1)
    assert r.epoch("mean")["epoch"] == 0
    assert r.epoch("sum")["value"] == 7.0     # weight ignored
    assert r.epoch("min")["value"] == 1.0 and r.epoch("max")["value"] == 4.0
    assert r.stats("mean")["count"] == 0      # reset
    assert r.status()["epoch"] == 1
    evs = r.read(max=1000)
    assert not values(evs, "sum")             # on_step=False: not in the ring
    ev = {(e.kind, e.metric): e.value for e in evs if e.kind.startswith("epoch")}
    assert ev[("epoch_value", "mean")] == pytest.approx(3.1)
    assert ev[("epoch_weight", "mean")] == 100.0
    assert ("epoch_end", None) in ev
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError):
            mean.log(1.0, weight=bad)
    mean.log(value=2.0, weight=0.5)
    w.close()


def test_full_ring_drop_never_raises():
    w = mring.Writer("full", capacity=8, on_full="drop")
    m = w.metric("x")
    w.step(0)
    for i in range(100):
        assert m.log(float(i)) is None
    r = mring.Reader("full", observe=False)   # drainer
    s = r.status()
    assert s["dropped"] > 0 and s["on_full"] == "drop"
    evs = r.read()
    assert any(e.kind == "lost" for e in evs) or s["dropped"] > 0
    # once drained, logging resumes; the loss shows up in the stream
    m.log(1000.0)
    evs += r.read()
    assert any(e.kind == "lost" for e in evs)
    assert evs[-1].value == 1000.0
    w.close()


def test_overwrite_mode():
    w = mring.Writer("ow", capacity=8, on_full="overwrite")
    assert w.on_full == "overwrite"
    m = w.metric("x")
    for i in range(50):
        m.log(float(i))
    r = mring.Reader("ow")
    evs = r.read()
    assert evs and evs[-1].value == 49.0
    w.close()


def test_wait_mode_without_drainer_drops():
    w = mring.Writer("wait", capacity=8, on_full="wait")
    m = w.metric("x")
    for i in range(20):
        m.log(float(i))
        m.log(float(i), weight=1.0)
    w.log({"y": 1.0}, step=1)
    assert mring.Reader("wait").status()["dropped"] > 0
    w.close()


def test_drainer_exclusive_and_commit():
    w = mring.Writer("dr", capacity=64)
    m = w.metric("x")
    m.log(1.0)
    d = mring.Reader("dr", observe=False, autocommit=False)
    with pytest.raises(OSError) as ei:
        mring.Reader("dr", observe=False)
    assert ei.value.errno == errno.EBUSY
    assert len(d.read()) == 1
    d.close()                                 # not committed: delivered again
    with mring.Reader("dr", observe=False, autocommit=False) as d2:
        evs = d2.read()
        assert [e.value for e in evs] == [1.0]
        d2.commit()
    with mring.Reader("dr", observe=False) as d3:
        assert d3.read() == []
    w.close()


def test_reader_unknown_metric():
    w = mring.Writer("unk", capacity=64)
    w.metric("a")
    r = mring.Reader("unk")
    with pytest.raises(KeyError):
        r.stats("nope")
    with pytest.raises(KeyError):
        r.stats(5)
    w.metric("late")                           # registered after the reader opened
    assert r.stats("late")["count"] == 0
    w.close()


def test_forked_child_gets_runtime_error(tmp_path):
    code = r"""
import os, sys, mring
w = mring.Writer("fork", capacity=64)
m = w.metric("x")
pid = os.fork()
if pid == 0:
    rc = 0
    try:
        m.log(1.0)
        rc = 1
    except RuntimeError:
        pass
    try:
        w.step(1)
        rc = 1
    except RuntimeError:
        pass
    os._exit(rc)
_, status = os.waitpid(pid, 0)
m.log(2.0)
w.close()
sys.exit(os.waitstatus_to_exitcode(status))
"""
    env = dict(os.environ, MRING_DIR=str(tmp_path))
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)


def test_crash_is_not_closed(tmp_path):
    code = "import mring, os; w = mring.Writer('crash', capacity=64); " \
           "w.metric('x').log(1.0); os._exit(0)"
    env = dict(os.environ, MRING_DIR=str(tmp_path))
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    s = mring.Reader("crash").status()
    assert not s["alive"] and not s["closed"]


def test_strerror_and_constants():
    assert "ring full" in mring.strerror(-errno.ENOBUFS)
    assert mring.ON_STEP == 1 and mring.ON_EPOCH == 2 and mring.NAME_MAX == 63


def _patch(path, old, new):
    """Overwrite the one occurrence of @old in the file with @new (same length)."""
    assert len(old) == len(new)
    data = path.read_bytes()
    assert data.count(old) == 1
    with open(path, "r+b") as f:
        f.seek(data.index(old))
        f.write(new)


def test_foreign_bytes_in_names_never_raise(mring_dir):
    # what a producer other than this library (or a corrupt file) may hold:
    # readers treat every byte as untrusted and decode with "replace"
    with mring.Writer("foreign", capacity=64, run="RUNxxxxMARK") as w:
        w.step(0)
        w.metric("METRICxMARK").log(1.5)
    bad_run = b"RUN\xff\xed\xa0\x80MARK"        # stray byte, surrogate
    bad_name = b"METRIC\xc0\xafARK"             # overlong "/", same length
    _patch(mring_dir / "foreign", b"RUNxxxxMARK", bad_run)
    _patch(mring_dir / "foreign", b"METRICxMARK", bad_name)
    name = bad_name.decode("utf-8", "replace")
    assert "\ufffd" in name
    r = mring.Reader("foreign")
    assert r.status()["run"] == bad_run.decode("utf-8", "replace")
    assert list(r.metrics()) == [name]
    assert [e.metric for e in r.read() if e.kind == "value"] == [name]
    assert r.stats(name)["last"] == 1.5 and r.stats(0)["last"] == 1.5
    r.close()


def test_run_name_cut_inside_a_character_never_raises(mring_dir):
    # a segment written before run names were cut between characters
    with mring.Writer("cutrun", capacity=64, run="a" * 63):
        pass
    _patch(mring_dir / "cutrun", b"a" * 63 + b"\0", b"a" * 62 + b"\xc3\0")
    with mring.Reader("cutrun") as r:
        assert r.status()["run"] == "a" * 62 + "\ufffd"


def test_default_run_name_is_cut_between_characters(mring_dir):
    # 62 bytes, then a 2-byte character across the 63-byte limit
    with mring.Writer("a" * 62 + "\u00e9xyz", capacity=64):
        with mring.Reader("a" * 62 + "\u00e9xyz") as r:
            assert r.status()["run"] == "a" * 62


def test_hparams_round_trip_and_errors():
    with mring.Writer("hp", capacity=64, replace=True) as w:
        r = mring.Reader("hp")
        assert r.hparams() is None
        hp = {"lr": 3e-4, "layers": [12, 12], "name": "bert-é", "nested": {"a": None, "b": True}}
        w.hparams(hp)
        assert r.hparams() == hp
        # a Namespace member json cannot encode is stored as its str()
        w.hparams({"dtype": complex(1, 2)})
        assert r.hparams() == {"dtype": "(1+2j)"}
        w.hparams('{"from": "text"}')
        assert r.hparams() == {"from": "text"}
        for bad in ("[1, 2]", "{", "not json", '{"a": NaN}'):
            with pytest.raises(ValueError, match="not one JSON object"):
                w.hparams(bad)
        with pytest.raises(ValueError):
            w.hparams({"lr": float("nan")})          # JSON has no NaN
        with pytest.raises(ValueError, match="at most 65536"):
            w.hparams({"k": "x" * 70000})
        with pytest.raises(ValueError, match="not one JSON object"):
            w.hparams([1, 2])                        # a list is not an object
        assert r.hparams() == {"from": "text"}       # every refusal kept the last
        r.close()


def test_rewind_events():
    with mring.Writer("rw", capacity=256, replace=True) as w:
        r = mring.Reader("rw", observe=False)
        m = w.metric("loss", on_step=True)
        for s in range(5):
            w.step(s)
            m.log(float(s))
        w.step(2)                   # lower: the run resumed at step 2
        m.log(20.0)
        w.rewind(3)                 # explicit, as a new segment would
        evs = [(e.kind, e.step, e.value) for e in r.read()]
        assert evs[10:] == [("rewind", 2, 0.0), ("value", 2, 20.0), ("rewind", 3, 0.0)]
        assert w.current_step == 3
        r.close()
