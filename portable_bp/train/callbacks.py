"""Callbacks: what ``fit`` does around its epochs, each in one small object.

A callback has any of ``on_train_begin(net)``, ``on_epoch_end(net, epoch, logs) -> stop?``
and ``on_train_end(net)`` (only when training ends normally), plus, optionally,
``check(metrics)``, called before training with the names ``fit`` will put in ``logs`` so
that a misspelled name fails at once, and ``close()``, called however ``fit`` ends. A plain
callable ``f(net, epoch, logs) -> stop?`` is an ``on_epoch_end``.

``fit`` itself keeps its history (:class:`History`), saves checkpoints
(:class:`Checkpoint`) and draws the progress bar (:class:`ProgressBar`) through this same
protocol.
"""

from __future__ import annotations

import os
import stat
import warnings

from .._validate import integer, number


class Callback:
    """Base class with every hook doing nothing."""

    def check(self, metrics) -> None:
        """Raise ValueError if this callback cannot work with these log names."""

    def on_train_begin(self, net) -> None:
        pass

    def on_epoch_end(self, net, epoch: int, logs: dict) -> bool | None:
        return None

    def on_train_end(self, net) -> None:
        pass

    def close(self) -> None:
        pass


class _Function(Callback):
    """A plain callable used as ``on_epoch_end``."""

    def __init__(self, fn):
        self.fn = fn

    def on_epoch_end(self, net, epoch, logs):
        return self.fn(net, epoch, logs)


def as_callback(cb) -> Callback:
    """``cb`` with every hook present (missing ones do nothing), or a TypeError."""
    if isinstance(cb, Callback):
        return cb
    hooks = ("check", "on_train_begin", "on_epoch_end", "on_train_end", "close")
    if any(callable(getattr(cb, h, None)) for h in hooks):
        return _Duck(cb)
    if callable(cb):
        return _Function(cb)
    raise TypeError(f"callbacks must hold callables or objects with on_epoch_end etc., got {type(cb).__name__}")


class _Duck(Callback):
    """An object with some of the hooks: the others do nothing."""

    def __init__(self, obj):
        self.obj = obj
        for hook in ("check", "on_train_begin", "on_epoch_end", "on_train_end", "close"):
            method = getattr(obj, hook, None)
            if callable(method):
                setattr(self, hook, method)


class History(Callback):
    """Per-epoch metrics of one ``fit`` call: ``history["loss"]``, ``["val_loss"]``, ...

    ``fit`` returns its own; pass one in ``callbacks`` too to keep what was recorded when
    ``fit`` raises (an interrupt, a divergence)."""

    def __init__(self):
        self.history: dict[str, list] = {}
        self.epochs: list[int] = []

    def on_epoch_end(self, net, epoch, logs):
        self.append(epoch, logs)

    def append(self, epoch: int, logs: dict) -> None:
        self.epochs.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self) -> str:
        last = {k: v[-1] for k, v in self.history.items() if v}
        return f"History(epochs={len(self.epochs)}, last={last})"


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs;
    with ``restore_best_weights`` the network ends with the parameters of its best epoch.

    A checkpoint of the fit stores its :meth:`state` (best value and epoch, epochs without
    improvement, the best parameters), and ``fit(..., resume=True)`` hands it back
    (:meth:`resume`): the patience goes on counting where the interrupted fit left it, so an
    interrupted and resumed fit stops at the epoch, with the weights, of one that ran through.
    """

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, mode="auto",
                 restore_best_weights=True):
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be a metric name, got {type(monitor).__name__}")
        self.patience = integer(patience, "patience")
        self.min_delta = abs(number(min_delta, "min_delta", lo=-float("inf")))
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
        self.monitor, self.mode = monitor, mode
        self.restore_best_weights = bool(restore_best_weights)

    def check(self, metrics):
        if self.monitor not in metrics:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which this fit does not "
                             f"produce (it has {sorted(metrics)}); pass validation_data for val_* metrics")

    best: float | None = None
    best_epoch: int | None = None
    wait = 0
    _best_params = None
    _resumed = None

    def state(self) -> dict:
        """What a checkpoint keeps of this stopper (its ``params`` are device arrays, or None)."""
        return {"monitor": self.monitor, "mode": self.mode, "best": self.best, "best_epoch": self.best_epoch,
                "wait": self.wait, "params": self._best_params}

    def resume(self, saved: dict, params) -> bool:
        """Continue from ``saved`` (a checkpoint's :meth:`state`; ``params``: its best weights
        on the network's backend) at the next ``on_train_begin``; False, and a fresh start,
        when it watched another metric or direction. Whether the patience is already spent."""
        if (saved["monitor"], saved["mode"]) != (self.monitor, self.mode):
            warnings.warn(f"EarlyStopping monitors {self.monitor!r} ({self.mode}) but the checkpoint's watched "
                          f"{saved['monitor']!r} ({saved['mode']}): its patience starts again", UserWarning,
                          stacklevel=2)
            return False
        self._resumed = (saved["best"], saved["best_epoch"], saved["wait"], params)
        return saved["best_epoch"] is not None and saved["wait"] >= self.patience

    def on_train_begin(self, net):
        self.best, self.best_epoch, self.wait, self._best_params = None, None, 0, None
        if self._resumed is not None:
            self.best, self.best_epoch, self.wait, params = self._resumed
            self._resumed = None
            if self.restore_best_weights and params is not None:
                self._best_params = [(net.xp.asarray(W, copy=True), net.xp.asarray(b, copy=True)) for W, b in params]

    def _improved(self, value) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, net, epoch, logs):
        value = logs[self.monitor]
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self._best_params = [(net.xp.asarray(W, copy=True), net.xp.asarray(b, copy=True))
                                     for W, b in net.params]
            return False
        self.wait += 1
        return self.wait >= self.patience

    def on_train_end(self, net):
        if self.restore_best_weights and self._best_params is not None:
            net.set_params(self._best_params, copy=False, check_finite=False)


def check_output_path(path, what: str) -> str:
    """``path`` as a string, if a file can be written there: its folder exists and is
    writable, and it is not a folder itself (nor an existing file we may not write). Called
    before any training, so that a bad path costs nothing."""
    path = os.fsdecode(os.fspath(path))
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(2, f"the folder for {what} does not exist", folder)
    if os.path.isdir(path):
        raise IsADirectoryError(21, f"{what} must name a file, not a folder", path)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(13, f"cannot write {what} into this folder", folder)
    if os.path.exists(path) and not stat.S_ISREG(os.stat(path).st_mode):
        raise ValueError(f"{what} {path!r} exists and is not a regular file (a pipe, device or socket): "
                         f"it would be refused when written; give a file name")
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise PermissionError(13, f"{what} exists and is read-only", path)
    return path


class Checkpoint(Callback):
    """Save the network (parameters, optimizer state, epoch count) to ``path`` after every
    epoch, atomically; the path is checked before training starts.

    With many ranks (``comm``), rank 0 alone checks the path and writes (the ranks hold
    the same state), and every rank waits for it, so that no rank is an epoch ahead of the
    file; a save that fails (a full disk) raises its error, naming the file, on every rank,
    so that the job ends with it rather than with an abort. ``run`` is recorded in the
    file's metadata (world size, global batch); ``data`` is stored with the network (see
    :func:`portable_bp.checkpoint.save`), and so is the history of the fit that writes it
    (``fit`` hands it over by :meth:`record`)."""

    def __init__(self, path, comm=None, run=None, data=None):
        self.comm, self.run, self.data = comm, run, data
        self.history: History | None = None
        self.stoppers: list[EarlyStopping] = []
        if comm is None or comm.rank == 0:
            self.path = check_output_path(path, "checkpoint")
        else:
            self.path = os.fsdecode(os.fspath(path))

    def bind(self, comm, run) -> None:
        """Write as rank ``comm.rank`` of ``comm.size`` (``fit`` tells every Checkpoint)."""
        self.comm, self.run = comm, run

    def record(self, history: History, stoppers=()) -> None:
        """Save ``history`` (the fit's, which it appends each epoch to before the callbacks
        run) and the state of the fit's ``stoppers`` (EarlyStopping callbacks, which run
        before any checkpoint) with every checkpoint."""
        self.history, self.stoppers = history, list(stoppers)

    def on_epoch_end(self, net, epoch, logs):
        from ..checkpoint import save
        from ..distributed.sync import together

        def write():
            if self.comm is None or self.comm.rank == 0:
                save(net, self.path, run=self.run, history=self.history, data=self.data,
                     early_stopping=[s.state() for s in self.stoppers])

        if self.comm is None:
            write()
        else:
            together(self.comm, write)


class ProgressBar(Callback):
    """A tqdm bar over epochs showing loss and accuracy, or one printed line per epoch;
    a resumed fit first says where it resumes."""

    def __init__(self, start: int, stop: int, resumed: bool = False):
        self.stop = stop
        if resumed:
            print(f"resumed at epoch {start} of {stop}" if start < stop else
                  f"already at {start} epochs: nothing to train")
        try:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=stop - start, unit="epoch", dynamic_ncols=True)
        except ImportError:
            self.bar = None

    def on_epoch_end(self, net, epoch, logs):
        shown = {k: f"{v:.4g}" for k, v in logs.items() if k != "time"}
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(1)
        else:
            print(f"epoch {epoch + 1}/{self.stop} " + " ".join(f"{k}={v}" for k, v in shown.items()))

    def close(self):
        if self.bar is not None:
            self.bar.close()
