# SPDX-License-Identifier: MIT
"""HF TrainerCallback-shaped and Lightning Logger-shaped adapters, driven
with duck-typed stand-ins (neither library is needed)."""
import types

import pytest

import mring
from mring.adapters import MringCallback, MringLogger, to_float


class Tensor0d:
    """Enough of a 0-d torch tensor: item(), numel(), __float__."""

    def __init__(self, v):
        self.v = v

    def item(self):
        return self.v

    def numel(self):
        return 1

    def __float__(self):
        return float(self.v)


def value_events(r):
    return [(e.metric, e.step, e.epoch, e.value) for e in r.read(max=10000)
            if e.kind == "value"]


def test_to_float():
    assert to_float(1) == 1.0 and to_float(True) == 1.0
    assert to_float(Tensor0d(2.5)) == 2.5
    assert to_float("x") is None and to_float(None) is None and to_float([1]) is None


def test_hf_callback_sequence():
    """Trainer.log -> on_log(args, state, control, logs) at state.global_step;
    on_epoch_end -> epoch rows (lightning-hf-logging.md §3.3, §3.5)."""
    cb = MringCallback("hf", capacity=1024, run="hf-run")
    args = types.SimpleNamespace(logging_steps=2)
    control = types.SimpleNamespace(should_log=False)
    state = types.SimpleNamespace(global_step=0, epoch=0.0, is_world_process_zero=True)
    cb.on_train_begin(args, state, control)
    steps_per_epoch = 4
    for epoch in range(2):
        cb.on_epoch_begin(args, state, control)
        for i in range(steps_per_epoch):
            cb.on_step_begin(args, state, control)
            state.global_step += 1
            state.epoch = epoch + (i + 1) / steps_per_epoch
            cb.on_step_end(args, state, control)
            if state.global_step % 2 == 0:
                logs = {"loss": 1.0 / state.global_step, "grad_norm": Tensor0d(0.5),
                        "learning_rate": 1e-3, "epoch": state.epoch,
                        "note": "not a number"}
                assert cb.on_log(args, state, control, logs=logs) is None
                # on_log flushes: monitors see the figures before the next step
                st = mring.Reader("hf").stats("loss")
                assert st["last"] == logs["loss"] and st["last_step"] == state.global_step
        cb.on_epoch_end(args, state, control)
    r = mring.Reader("hf")
    assert set(r.metrics()) == {"loss", "grad_norm", "learning_rate"}
    ev = value_events(r)
    assert [(s, e) for m, s, e, _ in ev if m == "loss"] == [(2, 0), (4, 0), (6, 1), (8, 1)]
    assert [v for m, _, _, v in ev if m == "grad_norm"] == [0.5] * 4
    ep = r.epoch("loss")
    assert ep["epoch"] == 1 and ep["value"] == pytest.approx((1 / 6 + 1 / 8) / 2)
    assert r.status()["epoch"] == 2 and r.status()["run"] == "hf-run"
    cb.on_log(args, state, control, logs=None)        # nothing to log
    cb.on_train_end(args, state, control)
    assert r.status()["closed"]


def test_hf_callback_ends_an_epoch_at_hfs_global_step():
    """logging_steps (3) need not divide the epoch (10 steps): the epoch
    still ends at global_step 10, so `mring drain --hf` sizes it as HF."""
    cb = MringCallback("hf-ep", capacity=1024)
    state = types.SimpleNamespace(global_step=0, epoch=0.0, is_world_process_zero=True)
    for gs in range(1, 11):
        state.global_step = gs
        if gs % 3 == 0:
            cb.on_log(None, state, None, logs={"loss": float(gs)})
    cb.on_epoch_end(None, state, None)
    r = mring.Reader("hf-ep")
    evs = [(e.kind, e.step) for e in r if e.kind in ("step", "epoch_end")]
    assert evs == [("step", 3), ("step", 6), ("step", 9), ("step", 10), ("epoch_end", 10)], evs
    cb.writer.close()


def test_hf_callback_with_open_writer_and_world_zero():
    w = mring.Writer("hf2", capacity=64)
    cb = MringCallback(w, world_zero_only=True, log_epoch=True)
    state = types.SimpleNamespace(global_step=3, epoch=0.5, is_world_process_zero=False)
    cb.on_log(None, state, None, logs={"loss": 1.0})
    state.is_world_process_zero = True
    cb.on_log(None, state, None, logs={"loss": 2.0, "epoch": 0.5})
    r = mring.Reader("hf2")
    assert value_events(r) == [("loss", 3, 0, 2.0), ("epoch", 3, 0, 0.5)]
    cb.on_train_end(None, state, None)
    assert not w.closed                       # not ours to close
    with pytest.raises(TypeError):
        MringCallback(w, capacity=64)
    w.close()


def test_lightning_logger_sequence():
    """The exact logger calls of lightning-hf-logging.md §1.7:
    log_every_n_steps=1, 2 batches, 2 epochs,
    self.log("foo", 0.0, on_step=True, on_epoch=True)."""
    lg = MringLogger("pl", capacity=1024, name="exp", version=3)
    assert lg.name == "exp" and lg.version == 3
    lg.log_hyperparams({"lr": 0.1})
    lg.log_hyperparams(types.SimpleNamespace(batch_size=8))
    assert lg.hparams == {"lr": 0.1, "batch_size": 8}
    foo = {0: 1.0, 1: 3.0, 2: 5.0, 3: 9.0}
    calls = [
        ({"foo_step": Tensor0d(foo[0]), "epoch": 0}, 0),
        ({"foo_step": Tensor0d(foo[1]), "epoch": 0}, 1),
        ({"foo_epoch": 2.0, "epoch": 0}, 1),
        ({"foo_step": foo[2], "epoch": 1}, 2),
        ({"foo_step": foo[3], "epoch": 1}, 3),
        ({"foo_epoch": 7.0, "epoch": 1}, 3),
    ]
    r = mring.Reader("pl")
    for metrics, step in calls:
        lg.log_metrics(metrics, step=step)
        lg.save()
        # log_metrics flushes: monitors see the value before the next step
        name = next(k for k in metrics if k != "epoch")
        assert r.stats(name)["last"] == float(metrics[name])
    ev = value_events(r)
    assert ev == [("foo_step", 0, 0, 1.0), ("foo_step", 1, 0, 3.0),
                  ("foo_epoch", 1, 0, 2.0), ("foo_step", 2, 1, 5.0),
                  ("foo_step", 3, 1, 9.0), ("foo_epoch", 3, 1, 7.0)]
    info = r.metrics()
    assert "epoch" not in info                # the epoch key is not a metric
    assert info["foo_step"]["on_epoch"] and not info["foo_epoch"]["on_epoch"]
    # epoch 0 was closed when epoch 1 began: mring's mean matches foo_epoch
    ep0 = r.epoch("foo_step")
    assert ep0["epoch"] == 0 and ep0["value"] == 2.0
    steps = [e.step for e in mring.Reader("pl").read(max=1000) if e.kind == "step"]
    assert steps == [0, 1, 2, 3]               # one step record per new step
    lg.finalize("success")
    ep1 = r.epoch("foo_step")
    assert ep1["epoch"] == 1 and ep1["value"] == 7.0
    s = r.status()
    assert s["closed"] and s["epoch"] == 2
    lg.finalize("success")                     # idempotent


def test_lightning_logger_eval_and_explicit_step():
    w = mring.Writer("pl2", capacity=256)
    lg = MringLogger(w)
    lg.log_metrics({"val_loss": 0.3}, step=0)   # eval step: no epoch key
    lg.log_metrics({"val_loss": 0.1, "epoch": 0}, step=5)
    lg.log_metrics({}, step=6)
    lg.finalize("success")
    assert not w.closed                          # not ours
    r = mring.Reader("pl2")
    assert r.epoch("val_loss")["value"] == pytest.approx(0.2)
    w.close()


def lightning_stand_in(monkeypatch, modname):
    """A module @modname whose Logger has the abstract interface of
    Lightning 2.x's lightning.pytorch.loggers.Logger (an ABC: abstract
    name and version properties, abstract log_metrics and log_hyperparams;
    root_dir, log_dir, save_dir, group_separator properties; log_graph,
    save, after_save_checkpoint; finalize calls save).  Instantiating a
    subclass that misses any abstract member raises TypeError, as with
    Lightning.  Lightning itself is not installable here."""
    import abc
    import sys

    class Logger(abc.ABC):
        @property
        @abc.abstractmethod
        def name(self): ...

        @property
        @abc.abstractmethod
        def version(self): ...

        @property
        def root_dir(self):
            return None

        @property
        def log_dir(self):
            return None

        @property
        def save_dir(self):
            return None

        @property
        def group_separator(self):
            return "/"

        @abc.abstractmethod
        def log_metrics(self, metrics, step=None): ...

        @abc.abstractmethod
        def log_hyperparams(self, params, *args, **kwargs): ...

        def log_graph(self, model, input_array=None):
            pass

        def save(self):
            pass

        def after_save_checkpoint(self, checkpoint_callback):
            pass

        def finalize(self, status):
            self.save()

    mod = types.ModuleType(modname)
    mod.Logger = Logger
    parts = modname.split(".")
    for i in range(1, len(parts)):
        monkeypatch.setitem(sys.modules, ".".join(parts[:i]),
                            types.ModuleType(".".join(parts[:i])))
    monkeypatch.setitem(sys.modules, modname, mod)
    return Logger


@pytest.mark.parametrize("modname", ["lightning.pytorch.loggers",
                                     "pytorch_lightning.loggers"])
def test_as_lightning_is_a_lightning_logger(monkeypatch, modname):
    Logger = lightning_stand_in(monkeypatch, modname)
    lg = MringLogger.as_lightning("pl3", capacity=256, name="exp", version=1)
    assert isinstance(lg, Logger) and isinstance(lg, MringLogger)
    # what the Trainer reads and calls on a logger
    assert (lg.name, lg.version, lg.save_dir, lg.log_dir, lg.group_separator) == \
        ("exp", 1, None, None, "/")
    lg.log_hyperparams({"lr": 0.1})
    lg.log_metrics({"loss_step": 2.0, "epoch": 0}, step=0)
    lg.log_metrics({"loss_step": 4.0, "epoch": 0}, step=1)
    lg.log_metrics({"loss_epoch": 3.0, "epoch": 0}, step=1)
    lg.after_save_checkpoint(None)
    lg.finalize("success")
    r = mring.Reader("pl3")
    assert value_events(r) == [("loss_step", 0, 0, 2.0), ("loss_step", 1, 0, 4.0),
                               ("loss_epoch", 1, 0, 3.0)]
    assert r.epoch("loss_step")["value"] == 3.0
    assert r.status()["closed"]


def test_as_lightning_without_lightning_is_the_plain_logger(monkeypatch):
    import sys
    for name in ("lightning", "lightning.pytorch", "lightning.pytorch.loggers",
                 "pytorch_lightning", "pytorch_lightning.loggers"):
        monkeypatch.setitem(sys.modules, name, None)   # import raises ImportError
    lg = MringLogger.as_lightning("pl4", capacity=256)
    assert type(lg) is MringLogger
    lg.finalize("success")


def test_lightning_log_hyperparams_and_hf_train_begin():
    with mring.Writer("hpl", capacity=256, replace=True) as w:
        r = mring.Reader("hpl")
        lg = MringLogger(w)
        lg.log_hyperparams(types.SimpleNamespace(lr=0.1, batch_size=32))
        lg.log_hyperparams({"optimizer": "adam"})
        assert r.hparams() == {"lr": 0.1, "batch_size": 32, "optimizer": "adam"}

        class Args:
            def to_dict(self):
                return {"learning_rate": 5e-5, "num_train_epochs": 3}

        class Config:
            def to_dict(self):
                return {"hidden_size": 768}

        cb = MringCallback(w)
        state = types.SimpleNamespace(global_step=0, is_world_process_zero=True)
        cb.on_train_begin(Args(), state, None, model=types.SimpleNamespace(config=Config()))
        assert r.hparams() == {"learning_rate": 5e-5, "num_train_epochs": 3,
                               "model_config": {"hidden_size": 768}}
        r.close()
