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
See docs/python.md.
"""
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
