# SPDX-License-Identifier: MIT
"""Tensors logged without waiting for the device (python/mring/_device.py).

This machine has no GPU.  CPU tensors are routed through the device path
(mring._mring._route_all_tensors), and a test double replaces the device
half: its "copies" complete only when the test says so, as a GPU's would
complete later, and it fails the test if a value is read before its copy
completed without a wait (a host sync) having been asked for.
"""
import gc
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

torch = pytest.importorskip("torch")

import mring  # noqa: E402
import mring._device as device  # noqa: E402
from mring import _mring  # noqa: E402
from mring.adapters import MringCallback, MringLogger  # noqa: E402


class LateDevice:
    """Copies complete only when complete() says so; waits are counted."""

    def __init__(self):
        self.inner = device.TorchDevice()
        self.started = []          # handles, oldest first
        self.done_upto = 0         # handles [0, done_upto) have completed
        self.waits = 0

    def hold(self, x):
        return self.inner.hold(x)

    def start(self, tensors):
        h = {"i": len(self.started), "inner": self.inner.start(tensors)}
        self.started.append(h)
        return h

    def complete(self, n=None):
        self.done_upto = len(self.started) if n is None else self.done_upto + n

    def done(self, h):
        return h["i"] < self.done_upto

    def wait(self, h):
        self.waits += 1
        self.done_upto = max(self.done_upto, h["i"] + 1)

    def values(self, h, n):
        assert h["i"] < self.done_upto, "a value read before its copy completed"
        return self.inner.values(h["inner"], n)


@pytest.fixture
def late():
    dev = LateDevice()
    device.use_device(lambda: dev)
    _mring._route_all_tensors(True)
    yield dev
    _mring._route_all_tensors(False)
    device.use_device(None)


def events(name):
    with mring.Reader(name) as r:
        return [(e.kind, e.metric, e.step, e.epoch, e.value, e.wall_ns) for e in r]


def values(evs, metric):
    return [(e[2], e[4]) for e in evs if e[0] == "value" and e[1] == metric]


def test_values_wait_for_the_device_and_keep_their_step_and_time(late):
    w = mring.Writer("d1", capacity=1 << 12, max_pending=16)
    loss = w.metric("loss")
    lr = w.metric("lr")
    times = {}
    for s in range(10):
        t0 = time.time_ns()
        w.step(s)
        times[s] = (t0, time.time_ns())
        loss.log(torch.tensor(s + 0.5))
        lr.log(0.01 * s)                    # a float behind it waits its turn
        assert w.current_step == s
    # nothing waited for the device, and nothing of the run is in the ring
    assert late.waits == 0
    # step 0 went straight in (nothing was waiting yet); no value is in
    evs = events("d1")
    assert [e[2] for e in evs if e[0] == "step"] == [0]
    assert [e for e in evs if e[0] == "value"] == []
    late.complete(4)                        # steps 0..3 copied
    w.step(10)
    evs = events("d1")
    assert values(evs, "loss") == [(s, s + 0.5) for s in range(4)]
    assert values(evs, "lr") == [(s, 0.01 * s) for s in range(4)]
    late.complete()
    w.flush()
    evs = events("d1")
    assert values(evs, "loss") == [(s, s + 0.5) for s in range(10)]
    assert values(evs, "lr") == [(s, 0.01 * s) for s in range(10)]
    # each step record has the wall time of its step() call, not of the harvest
    steps = [(e[2], e[5]) for e in evs if e[0] == "step"]
    assert [s for s, _ in steps] == list(range(11))
    for s, wall in steps[:10]:
        assert times[s][0] <= wall <= times[s][1], (s, wall, times[s])
    # the ring's order is the logging order: step, loss, lr, step, ...
    kinds = [(e[0], e[1]) for e in evs if e[0] in ("value", "step")][:6]
    assert kinds == [("step", None), ("value", "loss"), ("value", "lr")] * 2
    w.close()


def test_epoch_end_flushes_so_the_epoch_gets_its_values(late):
    w = mring.Writer("d2", capacity=1 << 12)
    loss = w.metric("loss", on_step=True, on_epoch=True)
    for s in range(6):
        w.step(s)
        loss.log(torch.tensor(float(s)))
    w.epoch_end()                           # waits: the epoch's values are in
    assert late.waits >= 1
    w.step(6)
    loss.log(torch.tensor(100.0))
    late.complete()
    w.close()
    evs = events("d2")
    ep = [(e[0], e[3], e[4]) for e in evs if e[0] in ("epoch_value", "epoch_end")]
    assert ep[0] == ("epoch_value", 0, sum(range(6)) / 6), ep
    assert values(evs, "loss")[-1] == (6, 100.0)
    # value records of epoch 0 all come before its end
    end = next(i for i, e in enumerate(evs) if e[0] == "epoch_end")
    assert [e[4] for e in evs[:end] if e[0] == "value"] == [float(s) for s in range(6)]


def test_dict_log_and_step_argument(late):
    w = mring.Writer("d3", capacity=1 << 12)
    for s in range(3):
        w.log({"loss": torch.tensor([s + 0.25]), "lr": 1e-3, "gn": torch.tensor(2.0 * s)},
              step=s)
    late.complete()
    w.close()
    evs = events("d3")
    assert values(evs, "loss") == [(s, s + 0.25) for s in range(3)]
    assert values(evs, "lr") == [(s, 1e-3) for s in range(3)]
    assert values(evs, "gn") == [(s, 2.0 * s) for s in range(3)]


def test_max_pending_wait_waits_for_the_oldest_only(late):
    w = mring.Writer("d4", capacity=1 << 12, on_full="wait", max_pending=2)
    m = w.metric("x")
    for s in range(6):
        w.step(s)
        m.log(torch.tensor(float(s)))
    # sealing step s's values (at step s+1) with 2 waiting: one wait each
    assert late.waits == 3, late.waits
    late.complete()
    w.close()
    assert values(events("d4"), "x") == [(s, float(s)) for s in range(6)]


def test_max_pending_drop_counts_what_it_drops(late):
    w = mring.Writer("d5", capacity=1 << 12, on_full="drop", max_pending=2)
    m = w.metric("x")
    f = w.metric("f")
    for s in range(6):
        w.step(s)
        m.log(torch.tensor(float(s)))
        f.log(float(s))
    w.step(6)
    late.complete()
    w.close()
    evs = events("d5")
    # steps 0 and 1 waited; 2..5 came with two waiting: dropped, counted
    assert values(evs, "x") == [(0, 0.0), (1, 1.0)]
    assert values(evs, "f") == [(s, float(s)) for s in range(6)]
    assert sum(e[4] for e in evs if e[0] == "lost") == 4
    assert w.closed
    with mring.Reader("d5") as r:
        assert r.status()["dropped"] == 4


def test_max_pending_overwrite_drops_the_oldest(late):
    w = mring.Writer("d6", capacity=1 << 12, on_full="overwrite", max_pending=2)
    m = w.metric("x")
    for s in range(5):
        w.step(s)
        m.log(torch.tensor(float(s)))
    late.complete()
    w.close()               # close() waits for all, beyond the bound
    assert values(events("d6"), "x") == [(2, 2.0), (3, 3.0), (4, 4.0)]


def test_a_crash_loses_only_the_steps_still_on_the_device(tmp_path):
    code = textwrap.dedent("""
        import os, signal, sys, torch, mring, mring._device as device
        from mring import _mring
        sys.path.insert(0, %r)
        from test_device import LateDevice
        dev = LateDevice()
        device.use_device(lambda: dev)
        _mring._route_all_tensors(True)
        w = mring.Writer("crash", capacity=1 << 12)
        m = w.metric("x")
        c = w.metric("c")
        for s in range(10):
            if s == 7:
                dev.complete()          # the copies started: steps 0..5 (step
                                        # 6's starts at step(7)); 6.. in flight
            w.step(s)
            m.log(torch.tensor(float(s)))
            c.log(float(s))
        os.kill(os.getpid(), signal.SIGKILL)
    """ % os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([sys.executable, "-c", code], env=dict(os.environ))
    assert p.returncode == -signal.SIGKILL
    evs = events("crash")
    assert values(evs, "x") == [(s, float(s)) for s in range(6)]
    # the CPU values of the steps still in flight waited behind them
    assert values(evs, "c") == [(s, float(s)) for s in range(6)]


def test_tensors_without_steps_are_sent_on_in_bounded_batches(late):
    w = mring.Writer("d12", capacity=1 << 14, on_full="wait", max_pending=2)
    m = w.metric("x")
    w.step(0)
    n = 4 * device.BATCH_MAX + 10
    for i in range(n):
        m.log(torch.tensor(float(i)))
    # four full batches went on; the bound made the third and fourth wait
    assert len(late.started) == 4 and late.waits == 2, (len(late.started), late.waits)
    late.complete()
    w.close()
    assert [v for _, v in values(events("d12"), "x")] == [float(i) for i in range(n)]


def test_cpu_tensors_and_numbers_take_the_direct_path():
    w = mring.Writer("d7", capacity=1 << 12)
    m = w.metric("x")
    t = torch.tensor(1.5, requires_grad=True) * 2
    for s in range(3):
        w.step(s)
        m.log(t)                            # a CPU tensor: read at once
        m.log(2)
    w.flush()
    assert values(events("d7"), "x") == [(s, v) for s in range(3) for v in (3.0, 2.0)]
    w.close()


def test_bad_tensors_are_refused_and_nothing_is_logged(late):
    w = mring.Writer("d8", capacity=1 << 12)
    m = w.metric("x")
    w.step(0)
    with pytest.raises(ValueError, match="0-d or 1-element"):
        m.log(torch.tensor([1.0, 2.0]))
    with pytest.raises(TypeError, match="complex"):
        m.log(torch.tensor(1 + 2j))
    with pytest.raises(TypeError, match="weight must be a number"):
        m.log(1.0, weight=torch.tensor(2.0))
    m.log(torch.tensor(7.0))
    w.close()
    assert values(events("d8"), "x") == [(0, 7.0)]


def test_the_value_is_the_one_at_the_log_call(late):
    w = mring.Writer("d11", capacity=1 << 12)
    m = w.metric("x")
    running = torch.zeros(())
    for s in range(3):
        w.step(s)
        running.add_(1.0)
        m.log(running)                      # then changed in place
    running.add_(100.0)
    late.complete()
    w.close()
    assert values(events("d11"), "x") == [(0, 1.0), (1, 2.0), (2, 3.0)]


def test_max_pending_out_of_range_is_refused():
    for bad in (0, -1, (1 << 20) + 1):
        with pytest.raises(ValueError, match=r"max_pending must be in \[1, 2\*\*20\], "
                           r"not %d$" % bad):
            mring.Writer("mp", capacity=1 << 12, max_pending=bad)
    with mring.Writer("mp", capacity=1 << 12, max_pending=1 << 20) as w:
        assert w.max_pending == 1 << 20


def test_autograd_is_detached(late):
    w = mring.Writer("d9", capacity=1 << 12)
    m = w.metric("x")
    p = torch.tensor(3.0, requires_grad=True)
    loss = p * p
    w.step(0)
    m.log(loss)
    loss.backward()                          # the graph is still the caller's
    assert p.grad.item() == 6.0
    w.close()
    assert values(events("d9"), "x") == [(0, 9.0)]


def test_adapters_pass_device_tensors_through(late):
    class DevT(torch.Tensor):
        """A tensor that says it is on a device and must never be read."""
        @property
        def is_cpu(self):
            return False

        def item(self):
            raise AssertionError("item() on a device tensor: a host sync")

        def __float__(self):
            raise AssertionError("float() on a device tensor: a host sync")

    t = torch.tensor(0.75).as_subclass(DevT)
    cb = MringCallback("hf-dev")
    state = type("S", (), {"global_step": 5, "is_world_process_zero": True})()
    cb.on_log(None, state, None, logs={"loss": t, "learning_rate": 1e-4})
    lg = MringLogger("pl-dev")
    lg.log_metrics({"train_loss": t}, step=3)
    late.complete()
    cb.writer.close()
    lg.finalize("success")
    assert values(events("hf-dev"), "loss") == [(5, 0.75)]
    assert values(events("pl-dev"), "train_loss") == [(3, 0.75)]


def test_torch_compile_sees_one_graph_break():
    if not hasattr(torch, "compile"):
        pytest.skip("torch %s has no torch.compile (Debian 12 ships 1.13); "
                    "docs/python.md says log() is a graph break" % torch.__version__)
    w = mring.Writer("d10", capacity=1 << 12)
    m = w.metric("x")

    @torch.compile
    def f(x):
        y = x * 2
        m.log(y.sum())
        return y + 1

    w.step(0)
    out = f(torch.ones(3))
    assert out.tolist() == [3.0, 3.0, 3.0]
    w.close()
    assert values(events("d10"), "x") == [(0, 6.0)]


# -- found in review: each of these failed before its fix ----------------

def test_a_value_replaced_in_the_dict_by_a_later_conversion_is_safe(late):
    w = mring.Writer("r1", capacity=1 << 12)
    d = {}

    class Evil:
        def __float__(self):
            d["a"] = 5.0            # drops the dict's reference to the tensor
            return 1.0

    d["a"] = torch.tensor(3.0) + 0
    d["b"] = Evil()
    w.log(d, step=0)
    late.complete()
    w.close()
    evs = events("r1")
    assert values(evs, "a") == [(0, 3.0)] and values(evs, "b") == [(0, 1.0)]


def test_a_failed_copy_is_counted_and_the_queue_moves_on(late):
    w = mring.Writer("r2", capacity=1 << 12)
    m = w.metric("x")
    f = w.metric("f")
    start = late.start
    fail = [True]

    def start_once_failing(tensors):
        if fail[0]:
            fail[0] = False
            raise RuntimeError("CUDA out of memory (simulated)")
        return start(tensors)

    late.start = start_once_failing
    w.step(0)
    m.log(torch.tensor(0.0))
    f.log(0.0)
    with pytest.raises(RuntimeError, match="simulated"):
        w.step(1)
    m.log(torch.tensor(1.0))
    f.log(1.0)
    late.complete()
    w.epoch_end()
    w.close()
    evs = events("r2")
    assert values(evs, "x") == [(1, 1.0)]          # step 0's copy failed
    assert values(evs, "f") == [(0, 0.0), (1, 1.0)]
    assert sum(e[4] for e in evs if e[0] == "lost") == 1
    assert [e[0] for e in evs].count("epoch_end") == 1


def test_the_bound_counts_only_what_has_not_arrived(late):
    for mode in ("drop", "overwrite", "wait"):
        w = mring.Writer("r3" + mode, capacity=1 << 12, on_full=mode, max_pending=1)
        m = w.metric("x")
        before = late.waits
        for s in range(6):
            w.step(s)
            m.log(torch.tensor(float(s)))
            late.complete()          # the device keeps up, one step behind
        waits = late.waits - before
        w.close()
        assert values(events("r3" + mode), "x") == [(s, float(s)) for s in range(6)], mode
        assert waits == 0, (mode, waits)


def test_flush_and_epoch_end_wait_beyond_the_bound(late):
    w = mring.Writer("r4", capacity=1 << 12, on_full="drop", max_pending=2)
    m = w.metric("x", on_step=True, on_epoch=True)
    for s in range(2):
        w.step(s)
        m.log(torch.tensor(float(s)))
    w.step(2)
    m.log(torch.tensor(2.0))             # two wait, the third is open
    w.epoch_end()                        # waits for all three
    w.close()
    evs = events("r4")
    assert values(evs, "x") == [(0, 0.0), (1, 1.0), (2, 2.0)]
    assert [e[4] for e in evs if e[0] == "epoch_value"] == [1.0]
    assert not any(e[0] == "lost" for e in evs)


def test_a_writer_dropped_without_close_is_flushed_and_closed(late):
    w = mring.Writer("r5", capacity=1 << 12)
    m = w.metric("x")
    f = w.metric("f")
    for s in range(3):
        w.step(s)
        m.log(torch.tensor(float(s)))
        f.log(float(s))
    late.complete()
    del w, m, f
    gc.collect()                         # (metrics and writer refer to each other)
    with mring.Reader("r5") as r:
        st = r.status()
        assert st["closed"] and not st["alive"], st
    evs = events("r5")
    assert values(evs, "x") == [(s, float(s)) for s in range(3)]
    assert values(evs, "f") == [(s, float(s)) for s in range(3)]


def test_a_bad_tensor_in_a_dict_logs_nothing(late):
    w = mring.Writer("r6", capacity=1 << 12)
    with pytest.raises(ValueError, match="0-d or 1-element"):
        w.log({"a": 1.0, "b": torch.tensor([1.0, 2.0])}, step=5)
    with pytest.raises(TypeError, match="complex"):
        w.log({"a": 1.0, "b": torch.tensor(1 + 1j)}, step=5)
    w.close()
    evs = events("r6")
    assert not any(e[0] in ("step", "value") for e in evs), evs


def test_a_step_keeps_its_call_time_when_the_bound_makes_it_wait(late):
    w = mring.Writer("r7", capacity=1 << 12, on_full="wait", max_pending=1)
    m = w.metric("x")
    wait = late.wait

    def slow_wait(h):
        time.sleep(0.2)
        wait(h)

    late.wait = slow_wait
    w.step(0)
    m.log(torch.tensor(0.0))
    w.step(1)
    m.log(torch.tensor(1.0))
    t0 = time.time_ns()
    w.step(2)                            # waits for step 0's copy
    assert time.time_ns() - t0 >= 0.2e9
    late.complete()
    w.close()
    wall = {e[2]: e[5] for e in events("r7") if e[0] == "step"}
    assert t0 <= wall[2] <= t0 + 0.1e9, (wall[2] - t0) / 1e9


def test_torch_imported_after_the_first_log_is_still_seen(tmp_path):
    """The binding looks for torch in sys.modules only when it changed
    size: a tensor logged after a late `import torch` still takes the
    device path."""
    code = textwrap.dedent("""
        import sys
        import mring
        assert "torch" not in sys.modules
        w = mring.Writer("late-import", capacity=1 << 12)
        m = w.metric("x")

        class F:
            def __float__(self):
                return 2.5

        w.step(0)
        m.log(F())                              # torch not imported yet
        import torch
        import mring._device as device
        from mring import _mring
        sys.path.insert(0, %r)
        from test_device import LateDevice
        dev = LateDevice()
        device.use_device(lambda: dev)
        _mring._route_all_tensors(True)
        m.log(torch.tensor(3.5))
        assert len(dev.started) == 0 and dev.waits == 0
        w.close()                               # waits for it
        assert dev.waits == 1, dev.waits
    """ % os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([sys.executable, "-c", code], env=dict(os.environ),
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert values(events("late-import"), "x") == [(0, 2.5), (0, 3.5)]
