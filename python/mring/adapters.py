# SPDX-License-Identifier: MIT
"""Adapters for Hugging Face Trainer and PyTorch Lightning.

Neither library is imported: both classes are duck-typed, so they work with
the real frameworks and with plain test doubles alike.

    from mring.adapters import MringCallback, MringLogger
    trainer = transformers.Trainer(..., callbacks=[MringCallback("hf-run")])
    trainer = lightning.Trainer(..., logger=MringLogger("pl-run"))

(Lightning 2.x checks loggers with isinstance(); use
``MringLogger.as_lightning(...)`` there, which builds a subclass of
``lightning.pytorch.loggers.Logger`` when Lightning is importable.)
"""
import numbers

from ._mring import Writer

__all__ = ["MringCallback", "MringLogger", "to_float"]


def to_float(value):
    """float(value) for numbers and 0-d tensors; None for anything else
    (strings, None, lists, multi-element tensors)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, (str, bytes, dict, list, tuple)) or value is None:
        return None
    item = getattr(value, "item", None)
    try:
        if item is not None and getattr(value, "numel", lambda: 1)() == 1:
            return float(item())
        return float(value)
    except (TypeError, ValueError, RuntimeError):
        return None


def _on_device(value):
    """A one-element torch tensor off the CPU: passed through as it is, so
    that nothing waits for the device (the Writer harvests it later)."""
    try:
        return value.is_cpu is False and value.numel() == 1
    except (AttributeError, TypeError, RuntimeError):
        return False


def _scalars(metrics, skip=()):
    out = {}
    for k, v in metrics.items():
        if k in skip:
            continue
        f = v if _on_device(v) else to_float(v)
        if f is not None:
            out[str(k)] = f
    return out


def _writer(writer, kwargs):
    """(Writer, owned): accept an open Writer or a path to open."""
    if isinstance(writer, Writer):
        if kwargs:
            raise TypeError("writer options given with an open Writer")
        return writer, False
    return Writer(writer, **kwargs), True


class MringCallback:
    """A ``transformers.TrainerCallback``-shaped callback.

    on_log(args, state, control, logs) logs every numeric entry of ``logs``
    at ``state.global_step`` (HF's x-axis; ``epoch`` is the fractional
    epoch and is not logged as a metric unless ``log_epoch=True``).
    Metrics are registered on first use as on_step + on_epoch (mean), so
    on_epoch_end closes the mring epoch and publishes the epoch means.
    on_train_end closes the Writer if the callback opened it.

    @writer: an open mring.Writer, or a path/name to open with
    @writer_kwargs (capacity=, on_full=, run=, rank=, replace=).
    @world_zero_only: log only where state.is_world_process_zero is true.
    """

    def __init__(self, writer, *, log_epoch=False, world_zero_only=False,
                 **writer_kwargs):
        self._writer_arg = writer
        self._writer_kwargs = writer_kwargs
        self._w = None
        self._owned = False
        self.log_epoch = log_epoch
        self.world_zero_only = world_zero_only
        if isinstance(writer, Writer):
            self._w, self._owned = _writer(writer, writer_kwargs)

    @property
    def writer(self):
        if self._w is None:  # opened lazily: only on ranks that log
            self._w, self._owned = _writer(self._writer_arg, self._writer_kwargs)
        return self._w

    def _active(self, state):
        return not self.world_zero_only or getattr(state, "is_world_process_zero", True)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not self._active(state):
            return None
        skip = () if self.log_epoch else ("epoch",)
        values = _scalars(logs, skip)
        if values:
            self.writer.log(values, step=int(getattr(state, "global_step", 0) or 0))
            # every logging_steps, not per step: show monitors at once
            # (without waiting for values still on the device)
            self.writer.flush(wait=False)
        return None

    def on_epoch_end(self, args, state, control, **kwargs):
        if self._active(state):
            w = self.writer
            # the epoch ends at HF's global_step, which on_log may not have
            # reached (logging_steps need not divide the epoch): step there,
            # so that `mring drain --hf` sizes the epoch as HF does
            gs = int(getattr(state, "global_step", 0) or 0)
            if gs > w.current_step:
                w.step(gs)
            w.epoch_end()
        return None

    def on_train_end(self, args, state, control, **kwargs):
        if self._owned and self._w is not None:
            self._w.close()
        return None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        """Store the training arguments and the model's config as the run's
        hyperparameters, as the Trainer's own integrations do: the
        arguments' to_dict() (or vars()), plus "model_config" when the
        model has a config with to_dict()."""
        if not self._active(state):
            return None
        hp = {}
        if args is not None:
            hp.update(args.to_dict() if hasattr(args, "to_dict") else vars(args))
        config = getattr(model, "config", None)
        if config is not None and hasattr(config, "to_dict"):
            hp["model_config"] = config.to_dict()
        if hp:
            self.writer.hparams(hp)
        return None

    def _noop(self, args, state, control, **kwargs):
        return None

    # every other TrainerCallback event: nothing to do
    on_init_end = on_epoch_begin = _noop
    on_step_begin = on_pre_optimizer_step = on_optimizer_step = _noop
    on_substep_end = on_step_end = on_evaluate = on_predict = _noop
    on_save = on_prediction_step = _noop


class MringLogger:
    """A Lightning ``Logger``-shaped logger (name, version, log_metrics,
    log_hyperparams, save, finalize).

    Lightning calls ``log_metrics(metrics, step)`` with ``step`` =
    ``_batches_that_stepped`` and, when the user did not pass a step, an
    ``"epoch"`` key = trainer.current_epoch (lightning-hf-logging.md §1.7).
    This logger:
      - takes ``epoch`` as the epoch number, not as a metric: when it
        grows, the mring epoch is closed (epoch_end()) as many times as
        needed, so mring's epochs follow Lightning's;
      - calls step(step) when the step changes (the epoch-level values
        Lightning sends share the last step's x-coordinate);
      - registers ``*_epoch`` names (already reduced by Lightning) as
        on_step only, every other name as on_step + on_epoch (mean);
      - finalize(status) closes the last epoch if values were logged in it
        and closes the Writer if the logger opened it.
    save() is a no-op: every value is in shared memory the moment it is
    logged.
    """

    def __init__(self, writer, *, name="mring", version=0, **writer_kwargs):
        self._w, self._owned = _writer(writer, writer_kwargs)
        self._name = name
        self._version = version
        self._epoch = 0
        self._dirty = False
        self.hparams = {}

    # -- Logger properties ------------------------------------------
    @property
    def name(self):
        return self._name

    @property
    def version(self):
        return self._version

    @property
    def experiment(self):
        return self._w

    @property
    def writer(self):
        return self._w

    root_dir = None
    log_dir = None
    save_dir = None
    group_separator = "/"

    # -- Logger methods ----------------------------------------------
    def log_metrics(self, metrics, step=None):
        w = self._w
        metrics = dict(metrics)
        epoch = metrics.pop("epoch", None)
        if epoch is not None:
            e = to_float(epoch)
            if e is not None:
                while self._epoch < int(e):
                    w.epoch_end()
                    self._epoch += 1
                    self._dirty = False
        values = _scalars(metrics)
        for k in values:
            if k not in w.metrics:
                if k.endswith("_epoch"):
                    w.metric(k, on_step=True)
                else:
                    w.metric(k, on_step=True, on_epoch=True, reduce="mean")
        if values:
            w.log(values, step=None if step is None else int(step))
            w.flush(wait=False)   # every log_every_n_steps; never waits for a GPU
            self._dirty = True

    def log_hyperparams(self, params, *args, **kwargs):
        """Lightning's log_hyperparams(params): a dict or a Namespace.  The
        union of every call is stored in the segment (Writer.hparams), so
        `mring drain --csv` writes hparams.yaml as CSVLogger does."""
        if params is None:
            return
        if not isinstance(params, dict):
            params = vars(params) if hasattr(params, "__dict__") else dict(params)
        self.hparams.update(params)
        self._w.hparams(self.hparams)

    def log_graph(self, model, input_array=None):
        return None

    def save(self):
        return None

    def after_save_checkpoint(self, checkpoint_callback):
        return None

    def finalize(self, status):
        if self._w.closed:
            return
        if self._dirty:
            self._w.epoch_end()
            self._epoch += 1
            self._dirty = False
        if self._owned:
            self._w.close()

    @classmethod
    def as_lightning(cls, writer, **kwargs):
        """An instance that is also a ``lightning.pytorch.loggers.Logger``
        (or ``pytorch_lightning.loggers.Logger``) when one is importable."""
        base = None
        for modname in ("lightning.pytorch.loggers", "pytorch_lightning.loggers"):
            try:
                mod = __import__(modname, fromlist=["Logger"])
                base = mod.Logger
                break
            except ImportError:
                continue
        if base is None:
            return cls(writer, **kwargs)
        sub = type("MringLightningLogger", (cls, base), {})
        obj = sub.__new__(sub)
        base.__init__(obj)
        cls.__init__(obj, writer, **kwargs)
        return obj
