# SPDX-License-Identifier: MIT
"""Values still on a device: how ``m.log(cuda_tensor)`` never waits for the GPU.

Reading a GPU value (``loss.item()``, ``float(loss)``) makes the CPU wait
until the GPU has finished everything queued before it.  The binding
(python/_mring.c) hands every tensor that is not on the CPU to the
writer's Harvest instead of reading it:

- each tensor logged is copied on the device as float64 (float32 where
  the device has no float64; detached: no autograd; one small asynchronous
  kernel on the caller's stream), so that what is logged is its value at
  the log() call even if the caller changes it in place later;
- when the step ends (the next ``step()``, ``epoch_end()``, ``flush()`` or
  ``close()``), the Device starts moving them to the host: one stack per
  device, one ``non_blocking`` copy into pinned host memory, one CUDA
  event recorded on the current stream;
- the values enter the ring once that event has completed: checked
  without blocking at each later ``step()``; ``flush()``, ``epoch_end()``,
  ``close()`` and ``rewind()`` wait for it.

While the harvester holds anything, every step, value and epoch end of
the writer queues behind it (one FIFO), so the ring gets exactly the
order they were logged in: rows stay whole, each metric's values come in
step order, and each step keeps the wall time of its ``step()`` call
(mring_step_at()).  A Writer is single-producer, so the queue is emptied
by the training thread itself, never by a helper thread.

At most ``Writer(max_pending=8)`` steps wait for their device values at
once.  One more: ``on_full="wait"`` waits for the oldest; ``"drop"``
drops the new step's device values, counted as a full ring counts (a
LOST event where they would have been, ``status()["dropped"]``);
``"overwrite"`` drops the oldest pending step's, counted in
``Harvest.dropped`` only.

The Device interface (hold, start, done, wait, values) is all that
touches the device; tests replace it (``use_device``) to make values
arrive late.
"""
import collections as _collections
import time as _time

_STEP, _VAL, _DEV = 0, 1, 2

# a step's tensors are sent on in batches of at most this many, so that a
# loop logging tensors without ever calling step() still has bounded memory
BATCH_MAX = 1024

_device_factory = None


def use_device(factory):
    """Make every Harvest created from now on use ``factory()`` as its Device
    (None: the default, TorchDevice).  For tests."""
    global _device_factory
    _device_factory = factory


class TorchDevice:
    """The real device half, for CUDA (and, without events, CPU tensors
    routed here by tests).  Other devices (MPS, XLA) have no event this
    code knows: their values are read with a blocking copy when harvested,
    once per step instead of once per value."""

    def __init__(self):
        import torch
        self.torch = torch

    def hold(self, x):
        """A copy of the one-element tensor ``x`` as it is now, made on the
        device in the caller's stream order (nothing waits), and that stream."""
        torch = self.torch
        kind = x.device.type
        # float64 where the device has it (MPS has not)
        dtype = torch.float64 if kind in ("cuda", "cpu") else torch.float32
        copy = x.reshape(()).to(dtype, copy=True)
        return copy, (torch.cuda.current_stream(x.device) if kind == "cuda" else None)

    def start(self, held):
        """Begin moving the ``held`` values (hold()) to the host; a handle."""
        torch = self.torch
        groups = {}
        for i, (x, _) in enumerate(held):
            groups.setdefault(x.device, []).append(i)
        parts = []
        for dev, idx in groups.items():
            event = None
            if dev.type == "cuda":
                stream = torch.cuda.current_stream(dev)
                for i in idx:         # values copied on another stream
                    x, s = held[i]
                    if s is not None and s != stream:
                        stream.wait_stream(s)
                        x.record_stream(stream)
                vals = torch.stack([held[i][0] for i in idx])
                host = torch.empty(len(idx), dtype=vals.dtype, pin_memory=True)
                host.copy_(vals, non_blocking=True)
                event = torch.cuda.Event()
                event.record(stream)
            else:
                host = torch.stack([held[i][0] for i in idx])
            parts.append((idx, host, event))
        return parts

    def done(self, handle):
        """True once every value of ``handle`` is on the host (never blocks)."""
        return all(ev is None or ev.query() for _, _, ev in handle)

    def wait(self, handle):
        for _, _, ev in handle:
            if ev is not None:
                ev.synchronize()

    def values(self, handle, n):
        """The ``n`` values, as floats, in logging order (after done/wait)."""
        out = [0.0] * n
        for idx, host, _ in handle:
            if host.device.type != "cpu":
                host = host.cpu()
            for i, v in zip(idx, host.tolist()):
                out[i] = float(v)
        return out


class _Batch:
    __slots__ = ("tensors", "n", "handle", "values", "dropped")

    def __init__(self):
        self.tensors = []
        self.n = 0
        self.handle = None
        self.values = None
        self.dropped = False


class Harvest:
    """One per Writer, made by the binding when the first device tensor is
    logged; the binding passes the Writer to every call (the harvester
    keeps no reference to it: a Writer dropped without close() is still
    freed, and flushed first).  Called on the writer's thread only."""

    def __init__(self):
        self.device = _device_factory() if _device_factory else TorchDevice()
        self.ops = _collections.deque()
        self.batch = None            # the step under way's device tensors
        self.sealed = _collections.deque()   # started, not yet harvested
        self.dropped = 0             # device values dropped (max_pending)

    # -- from the binding --------------------------------------------
    @staticmethod
    def check(value):
        """What log() refuses of a device tensor, checked before anything
        of a w.log(dict) call is logged (metadata only: no sync)."""
        n = value.numel()
        if n != 1:
            raise ValueError("mring: log() takes a 0-d or 1-element tensor, not %d "
                             "elements" % n)
        if value.is_complex():
            raise TypeError("mring: a metric value must be a real number, not a complex "
                            "tensor")

    def log(self, w, mid, value, weight):
        if isinstance(value, float):
            self.ops.append((_VAL, mid, value, weight))
            return
        x = value.detach()
        self.check(x)
        # a copy on the device, in the caller's stream order: an in-place
        # change after this call (running sums) does not alter the value
        held = self.device.hold(x)
        b = self.batch
        if b is None:
            b = self.batch = _Batch()
        self.ops.append((_DEV, mid, b, len(b.tensors), weight))
        b.tensors.append(held)
        w._set_deferred(True)
        if len(b.tensors) >= BATCH_MAX:
            self._seal(w, True)
            self._harvest(w, False)

    def step(self, w, step):
        now = _time.time_ns()        # the call's time, not after a wait
        try:
            self._seal(w, True)
        finally:                     # the step happens even if its copy failed
            self.ops.append((_STEP, step, now))
        self._harvest(w, False)

    def flush(self, w):
        """Everything into the ring, waiting for the device if need be (the
        bound does not apply: everything is waited for now)."""
        self._seal(w, False)
        self._harvest(w, True)

    def poll(self, w):
        """What the device has finished, into the ring; never waits.  The
        step under way stays open."""
        self._harvest(w, False)

    # -- inside --------------------------------------------------------
    def _seal(self, w, bounded):
        """Send the open batch on (the step ended)."""
        b = self.batch
        if b is None:
            return
        self._harvest(w, False)      # what has arrived frees its place first
        if bounded and len(self.sealed) >= w.max_pending:
            if w.on_full == "wait":
                self._ready(self.sealed[0], True)   # waits for the oldest
                self._harvest(w, False)
            elif w.on_full == "drop":
                self._give_up(b)      # the new step's, as a full ring drops
                return
            else:                     # overwrite: the oldest waiting step's
                old = self.sealed.popleft()
                old.dropped = True
                old.handle = None
        try:
            handle = self.device.start(b.tensors)
        except BaseException:
            self._give_up(b)          # counted as dropped; the queue moves on
            raise
        self.batch = None
        b.n = len(b.tensors)
        b.handle = handle
        b.tensors = None
        self.sealed.append(b)

    def _give_up(self, b):
        self.batch = None
        b.n = len(b.tensors)
        b.tensors = None
        b.dropped = True

    def _ready(self, b, wait):
        """Batch @b's values are here (reading them if they just came)."""
        if b.values is not None or b.dropped:
            return True
        if b.handle is None:
            return False              # still open: its step has not ended
        if wait:
            self.device.wait(b.handle)
        elif not self.device.done(b.handle):
            return False
        b.values = self.device.values(b.handle, b.n)
        b.handle = None
        if self.sealed and self.sealed[0] is b:
            self.sealed.popleft()
        return True

    def _harvest(self, w, wait):
        """Emit the queue's head while it is ready; with @wait, wait for
        the device as long as anything is queued.  Each op leaves the
        queue before it is written, so an interrupt (Ctrl-C while a WAIT
        mode ring is full) never writes it twice."""
        ops = self.ops
        while ops:
            op = ops[0]
            if op[0] == _DEV:
                b = op[2]
                if not self._ready(b, wait):
                    break
                ops.popleft()
                if b.dropped:
                    self.dropped += 1
                    if w.on_full == "drop":
                        w._drop(1)
                else:
                    w._raw_log(op[1], b.values[op[3]], op[4])
            elif op[0] == _VAL:
                ops.popleft()
                w._raw_log(op[1], op[2], op[3])
            else:
                ops.popleft()
                w._raw_step(op[1], op[2])
        if not ops and self.batch is None:
            w._set_deferred(False)
