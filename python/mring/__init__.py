# SPDX-License-Identifier: MIT
"""mring - nanosecond metric logging through a shared-memory ring.

Writer side (the training process)::

    import mring
    with mring.Writer("myrun", capacity=1 << 16) as w:
        loss = w.metric("train/loss", on_step=True, on_epoch=True, prog_bar=True)
        for step in range(100):
            w.step(step)
            loss.log(0.5)                       # hot path, ~tens of ns
            w.log({"lr": 3e-4}, step=step)      # HF Trainer.log style
        w.epoch_end()

Reader side (any other process)::

    r = mring.Reader("myrun")                   # observer; observe=False drains
    r.metrics(); r.stats("train/loss"); r.epoch("train/loss"); r.status()
    for ev in r: ...                            # events ready now

A full ring never raises: in on_full="drop" mode the record is dropped and
counted (Reader.status()["dropped"], and a "lost" event in the stream).

Alerts from ``mring watch --signal USR1`` (docs/watch.md)::

    alert = mring.on_alert()                    # main thread, before the loop
    for step in ...:
        ...
        if alert.is_set():
            save_checkpoint(); break

See docs/python.md.
"""
import signal as _signal
import threading as _threading
import time as _time

from ._mring import (  # noqa: F401
    C_VERSION,
    MAX,
    MEAN,
    MIN,
    NAME_MAX,
    ON_EPOCH,
    ON_STEP,
    PROG_BAR,
    SUM,
    Event,
    Metric,
    Reader,
    Writer,
    strerror,
)

__version__ = "0.1.0"

__all__ = ["Writer", "Metric", "Reader", "Event", "follow", "strerror",
           "Alert", "on_alert",
           "ON_STEP", "ON_EPOCH", "MEAN", "SUM", "MIN", "MAX", "PROG_BAR",
           "NAME_MAX"]


def follow(reader, poll=0.05, max=1024, stop_when_closed=True):
    """Yield events of @reader as they come (blocking generator).

    Polls every @poll seconds when the ring is empty.  With
    @stop_when_closed, returns once the producer is gone (closed or
    crashed) and everything it wrote has been read.
    """
    while True:
        evs = reader.read(max=max)
        if evs:
            yield from evs
            continue
        if stop_when_closed and not reader.status()["alive"]:
            evs = reader.read(max=max)
            if not evs:
                return
            yield from evs
            continue
        _time.sleep(poll)


class Alert(_threading.Event):
    """A threading.Event that on_alert() sets when its signal arrives.

    ``is_set()``, ``wait(timeout=None)`` and ``clear()`` are Event's;
    ``count`` is the number of deliveries so far (clear() does not reset
    it) and ``signum`` the signal (a ``signal.Signals`` when it is one).

    The signal handler runs in the main thread between two bytecodes, so
    it may interrupt this object's own methods (``wait()``, ``clear()``)
    while they hold the Event's lock; the lock is therefore reentrant, and
    setting the flag from the handler never deadlocks.
    """

    def __init__(self, signum):
        super().__init__()
        # threading.Event uses Condition(Lock()); a handler calling set()
        # while the main thread is inside wait()/clear() would block on a
        # lock its own thread holds.  An RLock lets it through.
        if isinstance(getattr(self, "_cond", None), _threading.Condition):
            self._cond = _threading.Condition(_threading.RLock())
        try:
            signum = _signal.Signals(signum)
        except ValueError:
            pass
        self._signum = signum
        self._count = 0

    @property
    def signum(self):
        """The signal this alert is set by."""
        return self._signum

    @property
    def count(self):
        """How many times the signal has been delivered (never reset)."""
        return self._count

    def __repr__(self):
        name = getattr(self._signum, "name", self._signum)
        return (f"<mring.Alert {name} {'set' if self.is_set() else 'unset'}"
                f" count={self._count}>")


def on_alert(callback=None, signum=_signal.SIGUSR1):
    """Install a handler for @signum and return an Alert that it sets.

    ``mring watch --signal USR1 ... SEGMENT`` sends the signal to the
    producer of the segment an alert is about, and only after checking
    that the process is still that producer: alive and holding the
    segment's lock, of the watcher's user, started no later than the
    segment was created, with the segment file open (docs/watch.md,
    "Actions").  The intended pattern::

        alert = mring.on_alert()            # once, in the main thread
        for step in range(n):
            w.step(step)
            ...train...
            if alert.is_set():              # between two steps
                save_checkpoint(step)
                break

    Check the flag in the loop rather than checkpointing in @callback: a
    Python signal handler runs in the main thread between two bytecodes,
    in the middle of whatever the training step is doing (an optimizer
    update half applied, a Writer call, a lock held), so a checkpoint
    taken inside it can interleave with the step and save inconsistent
    state.

    @callback, if given, is called as ``callback(signum)`` from the handler
    (main thread, between bytecodes), after the flag is set; keep it short
    (print, write a marker).  An exception it raises propagates into the
    interrupted code, as KeyboardInterrupt does.

    A Python callable installed for @signum before (by signal.signal() or
    an earlier on_alert()) is chained: called as ``previous(signum,
    frame)`` after ours, also when @callback raises.  SIG_DFL and SIG_IGN
    are not (the default action of SIGUSR1 would kill the process), nor is
    a handler installed from C.

    Must be called from the main thread (Python runs signal handlers only
    there): ValueError otherwise.  A signal that cannot be caught (SIGKILL,
    SIGSTOP) is an OSError; an invalid number a ValueError.
    """
    if _threading.current_thread() is not _threading.main_thread():
        raise ValueError(
            "mring.on_alert() must be called from the main thread: Python "
            "runs signal handlers only there (called from thread "
            f"{_threading.current_thread().name!r})")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, not "
                        f"{type(callback).__name__}")
    alert = Alert(signum)
    # Looked up before installing, so that a signal delivered right after
    # signal.signal() returns is chained too.
    previous = _signal.getsignal(signum)
    if not callable(previous):
        previous = None

    def _handler(sig, frame):
        alert._count += 1
        alert.set()
        try:
            if callback is not None:
                callback(sig)
        finally:
            if previous is not None:
                previous(sig, frame)

    _signal.signal(signum, _handler)
    return alert
