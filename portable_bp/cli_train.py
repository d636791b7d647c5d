"""The ``train`` and ``evaluate`` commands: data preparation, training, saving, plotting.

Host-side (NumPy is allowed here): data is loaded, split and standardized on the host,
then handed to the network's backend. Nothing trained is lost to a bad path or an
interrupt: every output path is checked before training, and on Ctrl-C or SIGTERM (or a
divergence) the model and plot of the last completed epoch are still written.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import sys
import time
import warnings

import numpy as np

PROG = "portable-bp"
DATASETS = ("digits", "xor", "spirals", "moons", "sine", "blobs")


# -- data ---------------------------------------------------------------------------------
def load_dataset(name):
    """``(X, y)`` on the host for one of :data:`DATASETS` (synthetic ones use data seed 0)."""
    from . import datasets as ds

    if name == "digits":
        return ds.digits()
    if name == "xor":  # noisy corners, enough of them to split; labels 0/1 as classes
        X, y = ds.xor(n_samples=400, noise=0.15, seed=0)
        return X, y[:, 0].astype("int64")
    if name == "spirals":
        return ds.spirals(n_samples=600, noise=0.05, seed=0)
    if name == "moons":
        return ds.moons(n_samples=400, noise=0.1, seed=0)
    if name == "sine":
        return ds.sine(n_samples=400, noise=0.1, seed=0)
    if name == "blobs":
        return ds.blobs(n_samples=600, n_features=2, centers=4, cluster_std=1.5, seed=0)
    raise ValueError(f"unknown dataset {name!r}; choose from {', '.join(DATASETS)}")


def held_out_metrics(net, data):
    """Loss plus accuracy (classifiers) or MSE (regression) on the test part."""
    out = dict(net.evaluate(data.X_test, data.y_test))
    if "accuracy" not in out:
        pred = net.backend.to_numpy(net.predict(data.X_test))
        out["mse"] = float(np.mean((np.asarray(pred, dtype=np.float64) - data.y_test) ** 2))
    return out


def metric_text(metrics, n, task=None):
    """The held-out metric; a multi-label task's accuracy is subset accuracy (every label right)."""
    if "accuracy" in metrics:
        subset = "subset " if task is not None and task.kind == "multilabel" else ""
        return f"test {subset}accuracy: {metrics['accuracy']:.3f} (n={n})"
    return f"test MSE: {metrics['mse']:.4g} (n={n})"


# -- outputs ------------------------------------------------------------------------------
def check_outputs(args):
    """Every file the run will write, checked before any data is loaded or step taken."""
    from .train.callbacks import check_output_path

    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError('--plot needs matplotlib: pip install -e ".[plot]" in the checkout') from None
    from .cli_data import check_not_an_input

    for flag, path in (("--plot", args.plot), ("--save", args.save), ("--checkpoint", args.checkpoint)):
        if path:
            check_output_path(path, flag)
            check_not_an_input(path, flag, [("--data file", args.data)])


def plot_history(history, path, title=""):
    """Save loss (train and validation) and validation accuracy per epoch as a PNG, with
    matplotlib's Agg canvas (no display, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    h = history.history
    epochs = [e + 1 for e in history.epochs]
    has_acc = "val_accuracy" in h
    fig = Figure(figsize=(10 if has_acc else 5.5, 4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if has_acc else 1, squeeze=False)[0]
    axes[0].plot(epochs, h.get("loss", []), label="train")
    if "val_loss" in h:
        axes[0].plot(epochs, h["val_loss"], label="validation")
    axes[0].set(xlabel="epoch", ylabel="loss", title="loss per epoch")
    axes[0].legend()
    if has_acc:
        axes[1].plot(epochs, h["val_accuracy"], label="validation", color="C1")
        axes[1].set(xlabel="epoch", ylabel="accuracy", title="validation accuracy per epoch")
        axes[1].legend()
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100, format="png")


def evaluate_hint(args, source):
    """The evaluate command that re-creates this run's test part."""
    words = [PROG, "evaluate", args.save]
    words += ["--data", args.data] if args.data else ["--dataset", source]
    if args.data and args.target is not None:
        words += ["--target", str(args.target)]
    if args.test_size != 0.2:
        words += ["--test-size", str(args.test_size)]
    return shlex.join(words)


def _write_outputs(args, net, history, source, prep):
    """The model (with its history and data description) and the plot, as far as training got."""
    from .checkpoint import save

    if args.save:
        save(net, args.save, history=history, data=prep.to_data())
        print(f"saved model to {args.save} (epoch {net.epochs_trained}; evaluate: "
              f"{evaluate_hint(args, source)})")
    if args.plot and history.epochs:
        plot_history(history, args.plot, title=f"{source}: {'-'.join(map(str, net.sizes))} {args.activation}")
        print(f"saved plot to {args.plot}")


# -- commands ------------------------------------------------------------------------------
def _network(args, data, loss, backend):
    from .network import Network

    return Network([data.X_train.shape[1], *args.hidden, data.n_out], activation=args.activation,
                   output_activation=args.output_activation, loss=loss, backend=backend,
                   dtype=args.dtype, seed=args.seed,
                   dropout=args.dropout[0] if len(args.dropout) == 1 else args.dropout)


def _describe(args, net, data, opt, task, source, comm):
    from .cli_data import task_line

    bs = "full" if args.batch_size is None else args.batch_size
    if comm.size > 1:
        bs = f"{bs} (global: {comm.size} processes, {type(comm).__name__}, each its part)"
    kind = "classes" if net.loss == "cross_entropy" else "labels" if task.kind == "multilabel" else "outputs"
    val = "" if data.X_val is None else f"{len(data.X_val)} validation / "
    print(task_line(task, data.n_out))
    print(f"{source.name}: {len(data.X_train)} train / {val}{len(data.X_test)} test samples, "
          f"{data.X_train.shape[1]} features, {data.n_out} {kind}")
    print(f"network {'-'.join(map(str, net.sizes))} {net.activation}/{net.output_activation}, loss "
          f"{net.loss}, {args.optimizer} lr={opt.lr:g}, batch {bs}, {args.epochs} epochs, "
          f"{args.dtype} on {net.backend.spec}{_regularization_text(args)}")


def _regularization_text(args) -> str:
    """The regularization asked for, as the description line's tail ('' for none)."""
    parts = [f"dropout {'/'.join(f'{p:g}' for p in args.dropout)}" if any(args.dropout) else "",
             f"l2 {args.l2:g}" if args.l2 else "",
             f"clip-value {args.clip_value:g}" if args.clip_value is not None else "",
             f"clip-norm {args.clip_norm:g}" if args.clip_norm is not None else ""]
    parts = [p for p in parts if p]
    return f", {', '.join(parts)}" if parts else ""


def _communicator(args, backend):
    """(the communicator of ``--distributed``, the backend this process trains on: a GPU
    spec without a device index gets the GPU of the process's local rank)."""
    from .backends import get
    from .distributed import NCCL, device_spec
    from .distributed import get as get_comm

    comm = get_comm(args.distributed, gpu=backend.is_gpu and backend.name == "cupy")
    if comm.size == 1:
        return comm, backend
    if isinstance(comm, NCCL):
        if backend.name != "cupy":
            raise ValueError(f"--distributed nccl sums CuPy arrays: use --backend cupy (not {backend.spec})")
        spec = comm.backend_spec
    else:
        spec = device_spec(backend.spec, comm.local_rank)
    return comm, backend if spec == backend.spec else get(spec)


@contextlib.contextmanager
def _rank_output(comm):
    """Only rank 0 prints. The others' output goes nowhere, and an error they share with
    rank 0 (``fit`` raises its errors on every rank) ends them with the exit status
    ``main`` gives it (:func:`portable_bp.stopping.exit_status`), silently: rank 0 says it once."""
    from . import stopping

    if comm.rank == 0:
        yield
        return
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            yield
        except SystemExit:
            raise
        except BaseException as exc:  # noqa: BLE001 - rank 0 reports it
            raise SystemExit(stopping.exit_status(exc)) from None


def cmd_train(args, backend):
    """Train a network on a dataset or a file; print the test metric, time and backend.
    With ``--distributed``, every process started by the launcher runs this, with the same
    data; rank 0 prints and writes the outputs. A SIGINT or SIGTERM is honoured where it
    loses nothing (:mod:`portable_bp.stopping`): with many processes every one of them
    stops at the same step, and the outputs are written before the command exits 130/143."""
    from . import stopping
    from .distributed import DistributedError
    from .distributed.sync import one_sided_errors_abort

    if args.resume and not args.checkpoint:
        raise ValueError("--resume continues from --checkpoint FILE: give both")
    try:
        comm, backend = _communicator(args, backend)
    except DistributedError as exc:
        sys.stderr.write(f"{PROG}: error: {' '.join(str(exc).split())}\n")
        return stopping.EXIT_USAGE
    with _rank_output(comm), one_sided_errors_abort(comm), stopping.deferred(comm.size > 1):
        return _train(args, backend, comm)


def _validation_split(args):
    """--validation-split, or scikit-learn's validation_fraction 0.1 for --early-stopping."""
    if args.validation_split is None and args.early_stopping is not None:
        return 0.1
    return args.validation_split


def _load(args):
    """(prepared data, task, source, preprocessing) of the run."""
    from .cli_data import Preprocessing, decide_task, load_source, prepare

    try:
        source = load_source(args, load_dataset)
    except MemoryError as exc:
        from ._inputs import memory_error

        raise memory_error(f"loading {args.data or args.dataset}", exc) from None
    task = decide_task(source.y, args.task, args.loss, source.name)
    implied = None if args.validation_split is not None else "--early-stopping's validation part (0.1)"
    data = prepare(source.X, source.y, task, args.seed, args.test_size, source.name, _validation_split(args),
                   validation_option=implied)
    return data, task, source, Preprocessing.of(task, source, data.scaler)


class _Run:
    """What a run's outputs are made of: its data, source, data description and callbacks
    (the History callback, EarlyStopping or None, the Checkpoint or None)."""

    def __init__(self, args, comm, data, source, prep, task):
        from .train import EarlyStopping, History
        from .train.callbacks import Checkpoint

        self.data, self.source, self.prep, self.task = data, source, prep, task
        self.history = History()
        self.stopper = None if args.early_stopping is None else EarlyStopping("val_loss",
                                                                              patience=args.early_stopping)
        self.checkpoint = None if not args.checkpoint else Checkpoint(args.checkpoint, comm=comm,
                                                                      data=prep.to_data())

    def whole_history(self):
        """Every epoch so far: the fit's own history (a resumed checkpoint's epochs too) once
        the fit has handed it to the checkpoint, else the callback's."""
        if self.checkpoint is not None and self.checkpoint.history is not None:
            return self.checkpoint.history
        return self.history


def _early_stop_line(stopper, net, epochs):
    if stopper is None or stopper.best_epoch is None or net.epochs_trained >= epochs:
        return
    print(f"early stopping: val_loss did not improve for {stopper.patience} epochs; stopped after epoch "
          f"{net.epochs_trained}, keeping epoch {stopper.best_epoch + 1}'s weights (val_loss {stopper.best:.4g})")


def _on_rank_0(comm, fn):
    """``fn()`` on rank 0 while the other ranks wait (an error there, a full disk, is then
    raised on every rank); a signal meanwhile is kept for later."""
    from . import stopping
    from .distributed.sync import together

    with stopping.deferred():
        together(comm, lambda: fn() if comm.rank == 0 else None)


def _written(args, net, run, comm):
    """The outputs, written by rank 0 (:func:`_on_rank_0`)."""
    _on_rank_0(comm, lambda: _write_outputs(args, net, run.whole_history(), run.source.name, run.prep))


def _finish(args, net, run, history, elapsed, comm):
    """Rank 0's end of a run: the held-out metric, the outputs, the summary line."""
    if not args.quiet:
        _early_stop_line(run.stopper, net, args.epochs)
    metrics = held_out_metrics(net, run.data)
    _write_outputs(args, net, history, run.source.name, run.prep)
    ranks = f" x {comm.size} processes" if comm.size > 1 else ""
    print(f"{metric_text(metrics, len(run.data.X_test), run.task)} | time: {elapsed:.1f} s | "
          f"backend: {net.backend.spec}{ranks}")


def _fit(args, net, opt, run, comm):
    """``net.fit`` (its History: every epoch, a resumed checkpoint's too); when it raises
    after training began, the outputs are written first."""
    from . import stopping
    from .train import TrainingDiverged

    data = run.data
    validation = None if data.X_val is None else (data.X_val, data.y_val)
    try:
        with stopping.immediate(comm.size == 1):  # ...but stops one process's training at once
            return net.fit(data.X_train, data.y_train, epochs=args.epochs, batch_size=args.batch_size,
                           optimizer=opt, validation_data=validation, progress=not args.quiet,
                           callbacks=[run.history] + ([run.stopper] if run.stopper else []),
                           checkpoint=run.checkpoint, resume=args.resume, comm=comm, l2=args.l2,
                           clip_norm=args.clip_norm, clip_value=args.clip_value)
    except (KeyboardInterrupt, TrainingDiverged, Exception) as exc:
        # an interrupt or a divergence: the last completed (or finite) epoch; another error
        # after an epoch completed (a full disk under --checkpoint): what was trained
        if isinstance(exc, (KeyboardInterrupt, TrainingDiverged)) or run.whole_history().epochs:
            _written(args, net, run, comm)
        raise


def _train(args, backend, comm):
    from . import stopping
    from .distributed.sync import together
    from .optim import get_optimizer

    together(comm, lambda: check_outputs(args) if comm.rank == 0 else None)  # only rank 0 writes
    data, task, source, prep = together(comm, lambda: _load(args))
    net = together(comm, lambda: _network(args, data, task.loss, backend))
    opt = get_optimizer(args.optimizer, args.lr, args.weight_decay)
    if not args.quiet:
        _describe(args, net, data, opt, task, source, comm)
    run, t0 = together(comm, lambda: _Run(args, comm, data, source, prep, task)), time.perf_counter()
    with stopping.deferred():  # from here, a signal waits for the writes...
        history = _fit(args, net, opt, run, comm)
        net.backend.synchronize()
        elapsed = time.perf_counter() - t0
        _on_rank_0(comm, lambda: _finish(args, net, run, history, elapsed, comm))
    stopping.raise_pending()
    return stopping.EXIT_OK


def _stored_task(net, prep, path):
    """The task of a saved model: its stored one, or for an older file, from its loss
    (class labels then index the outputs, as that portable-bp trained them)."""
    from .cli_data import Task

    if prep is not None:
        return Task(prep.task, net.loss, prep.classes, "stored")  # multilabel: its indicator values
    if net.is_classifier:
        return Task("classify", net.loss, np.arange(net.sizes[-1]), f"{path}: its outputs' indices")
    return Task("regress", net.loss, None, "stored")


def cmd_evaluate(args, backend):
    """Re-create a training run's test part and report the saved model's loss on it."""
    from . import load
    from .checkpoint import read_record
    from .cli_data import Preprocessing, load_source, prepare

    net = load(args.model, backend=backend)
    prep = Preprocessing.from_record(read_record(args.model), args.model, net)
    source = load_source(args, load_dataset)
    if source.X.shape[1] != net.sizes[0]:
        raise ValueError(f"{args.model} expects {net.sizes[0]} input features but {source.name} has "
                         f"{source.X.shape[1]}; evaluate a model on the data it was trained on")
    if prep is not None and prep.feature_names and source.feature_names not in (None, prep.feature_names):
        raise ValueError(f"{source.name}: columns {source.feature_names} are not the model's "
                         f"{prep.feature_names}; evaluate a model on the data it was trained on")
    seed = net.seed if args.seed is None else args.seed
    task = _stored_task(net, prep, args.model)
    data = prepare(source.X, source.y, task, seed, args.test_size, source.name,
                   scaler=None if prep is None else prep.standardizer())
    if data.n_out != net.sizes[-1]:
        outputs = f"{net.sizes[-1]} output{'s' if net.sizes[-1] > 1 else ''}"
        raise ValueError(f"{source.name}: the target has {data.n_out} columns but {args.model} has {outputs}; "
                         f"evaluate a model on the data it was trained on")
    metrics = held_out_metrics(net, data)
    print(f"test loss: {metrics['loss']:.4g} | {metric_text(metrics, len(data.X_test), task)} "
          f"| backend: {backend.spec}")
    return 0
