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
MAX_CLASSES = 1000  # more integer "labels" than this is almost surely a regression target


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


def load_data(args):
    """``(X, y, description)`` from ``--data FILE`` or ``--dataset NAME`` (default digits)."""
    if args.data:
        from .datasets import load_file

        X, y = load_file(args.data, target=args.target)
        return X, y, args.data
    name = args.dataset or "digits"
    X, y = load_dataset(name)
    return X, y, name


def default_loss(y):
    """cross_entropy for integer labels (classification), mse for anything else."""
    return "cross_entropy" if y.dtype.kind in "biu" else "mse"


def _class_labels(y, source):
    """Integer class labels 0..k-1 and k, from whole-number targets."""
    if y.ndim != 1:
        raise ValueError(f"{source}: cross_entropy needs one class label per sample, "
                         f"got targets of shape {y.shape}")
    if y.dtype.kind == "f" and not (np.all(np.isfinite(y)) and np.all(y == np.round(y))):
        raise ValueError(f"{source}: the target is continuous, not class labels; "
                         f"use --loss mse for regression")
    if y.dtype.kind == "f" and np.max(np.abs(y)) >= 2.0 ** 53:
        raise ValueError(f"{source}: target values reach {np.max(np.abs(y)):.3g}, beyond the whole "
                         f"numbers a float holds exactly: not class labels; use --loss mse")
    if y.min() < 0:  # e.g. -1/+1 labels: number the classes 0..k-1 in sorted order
        y = np.unique(y, return_inverse=True)[1].reshape(-1)
    n_classes = int(y.max()) + 1
    if n_classes > MAX_CLASSES:
        raise ValueError(f"{source}: the target has labels up to {n_classes - 1}, too many "
                         f"classes; if it is a quantity, use --loss mse for regression")
    y = y.astype(np.int64)
    if n_classes < 2:
        raise ValueError(f"{source}: the target holds a single class; nothing to learn")
    return y, n_classes


def targets_for(loss, y, source):
    """``(y, n_outputs)``: class indices for cross_entropy, float columns otherwise."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1 and loss == "cross_entropy":
        y = y[:, 0]
    if loss == "cross_entropy":
        return _class_labels(y, source)
    y = y.astype(np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise ValueError(f"{source}: targets must be 1-D or 2-D, got shape {y.shape}")
    return y, y.shape[1]


class Prepared:
    """The split, standardized data of one run: X_train, X_test, y_train, y_test, n_out."""

    def __init__(self, X_train, X_test, y_train, y_test, n_out, scaler):
        self.X_train, self.X_test, self.y_train, self.y_test = X_train, X_test, y_train, y_test
        self.n_out, self.scaler = n_out, scaler


def prepare(X, y, loss, seed, test_size, source="data"):
    """Split (seeded; stratified by class for classification when every class has two
    samples) and standardize with statistics of the training part only. Deterministic:
    ``evaluate`` calls it again to re-create the test part of a training run."""
    from .datasets import Standardizer, train_test_split

    y, n_out = targets_for(loss, y, source)
    stratify = None
    if loss == "cross_entropy":
        counts = np.bincount(y)
        if counts[counts > 0].min() >= 2:  # stratifying needs two samples of every class
            stratify = y
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=test_size, seed=seed,
                                                        stratify=stratify)
    scaler = Standardizer().fit(X_train)
    return Prepared(scaler.transform(X_train), scaler.transform(X_test), y_train, y_test, n_out, scaler)


def held_out_metrics(net, data):
    """Loss plus accuracy (classifiers) or MSE (regression) on the test part."""
    out = dict(net.evaluate(data.X_test, data.y_test))
    if "accuracy" not in out:
        pred = net.backend.to_numpy(net.predict(data.X_test))
        out["mse"] = float(np.mean((np.asarray(pred, dtype=np.float64) - data.y_test) ** 2))
    return out


def metric_text(metrics, n):
    if "accuracy" in metrics:
        return f"test accuracy: {metrics['accuracy']:.3f} (n={n})"
    return f"test MSE: {metrics['mse']:.4g} (n={n})"


# -- outputs ------------------------------------------------------------------------------
def check_outputs(args):
    """Every file the run will write, checked before any data is loaded or step taken."""
    from .train.callbacks import check_output_path

    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise ImportError('--plot needs matplotlib: pip install "portable_bp[plot]"') from None
    for flag, path in (("--plot", args.plot), ("--save", args.save), ("--checkpoint", args.checkpoint)):
        if path:
            check_output_path(path, flag)


def plot_history(history, path, title=""):
    """Save loss (train and test) and test accuracy per epoch as a PNG, with matplotlib's
    Agg canvas (no display, no pyplot state)."""
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
        axes[0].plot(epochs, h["val_loss"], label="test")
    axes[0].set(xlabel="epoch", ylabel="loss", title="loss per epoch")
    axes[0].legend()
    if has_acc:
        axes[1].plot(epochs, h["val_accuracy"], label="test", color="C1")
        axes[1].set(xlabel="epoch", ylabel="accuracy", title="test accuracy per epoch")
        axes[1].legend()
    if title:
        fig.suptitle(title)
    fig.savefig(path, dpi=100, format="png")


def evaluate_hint(args, source):
    """The evaluate command that re-creates this run's test part."""
    words = [PROG, "evaluate", args.save]
    words += ["--data", args.data] if args.data else ["--dataset", source]
    if args.data and args.target != -1:
        words += ["--target", str(args.target)]
    if args.test_size != 0.2:
        words += ["--test-size", str(args.test_size)]
    return shlex.join(words)


def _write_outputs(args, net, history, source):
    """The model and the plot, as far as training got."""
    if args.save:
        net.save(args.save)
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


def _describe(args, net, data, opt, source, n_features, comm):
    bs = "full" if args.batch_size is None else args.batch_size
    if comm.size > 1:
        bs = f"{bs} (global: {comm.size} processes, {type(comm).__name__}, each its part)"
    kind = "classes" if net.loss == "cross_entropy" else "outputs"
    print(f"{source}: {len(data.X_train)} train / {len(data.X_test)} test samples, "
          f"{n_features} features, {data.n_out} {kind}")
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


def _load(args):
    """(prepared data, loss, source, number of features) of the run."""
    try:
        X, y, source = load_data(args)
    except MemoryError as exc:
        from ._inputs import memory_error

        raise memory_error(f"loading {args.data or args.dataset}", exc) from None
    loss = args.loss or default_loss(y)
    return prepare(X, y, loss, args.seed, args.test_size, source), loss, source, X.shape[1]


def _on_rank_0(comm, fn):
    """``fn()`` on rank 0 while the other ranks wait (an error there, a full disk, is then
    raised on every rank); a signal meanwhile is kept for later."""
    from . import stopping
    from .distributed.sync import together

    with stopping.deferred():
        together(comm, lambda: fn() if comm.rank == 0 else None)


def _written(args, net, history, source, comm):
    """The outputs, written by rank 0 (:func:`_on_rank_0`)."""
    _on_rank_0(comm, lambda: _write_outputs(args, net, history, source))


def _finish(args, net, data, history, source, elapsed, comm):
    """Rank 0's end of a run: the held-out metric, the outputs, the summary line."""
    metrics = held_out_metrics(net, data)
    _write_outputs(args, net, history, source)
    ranks = f" x {comm.size} processes" if comm.size > 1 else ""
    print(f"{metric_text(metrics, len(data.X_test))} | time: {elapsed:.1f} s | "
          f"backend: {net.backend.spec}{ranks}")


def _fit(args, net, data, opt, history, source, comm):
    """``net.fit``; when it raises after training began, the outputs are written first."""
    from . import stopping
    from .train import TrainingDiverged

    try:
        with stopping.immediate(comm.size == 1):  # ...but stops one process's training at once
            net.fit(data.X_train, data.y_train, epochs=args.epochs, batch_size=args.batch_size,
                    optimizer=opt, validation_data=(data.X_test, data.y_test), progress=not args.quiet,
                    callbacks=[history], checkpoint=args.checkpoint, resume=args.resume, comm=comm,
                    l2=args.l2, clip_norm=args.clip_norm, clip_value=args.clip_value)
    except (KeyboardInterrupt, TrainingDiverged, Exception) as exc:
        # an interrupt or a divergence: the last completed (or finite) epoch; another error
        # after an epoch completed (a full disk under --checkpoint): what was trained
        if isinstance(exc, (KeyboardInterrupt, TrainingDiverged)) or history.epochs:
            _written(args, net, history, source, comm)
        raise


def _train(args, backend, comm):
    from . import stopping
    from .distributed.sync import together
    from .optim import get_optimizer
    from .train import History

    together(comm, lambda: check_outputs(args) if comm.rank == 0 else None)  # only rank 0 writes
    data, loss, source, n_features = together(comm, lambda: _load(args))
    net = together(comm, lambda: _network(args, data, loss, backend))
    opt = get_optimizer(args.optimizer, args.lr, args.weight_decay)
    if not args.quiet:
        _describe(args, net, data, opt, source, n_features, comm)
    history, t0 = History(), time.perf_counter()
    with stopping.deferred():  # from here, a signal waits for the writes...
        _fit(args, net, data, opt, history, source, comm)
        net.backend.synchronize()
        elapsed = time.perf_counter() - t0
        _on_rank_0(comm, lambda: _finish(args, net, data, history, source, elapsed, comm))
    stopping.raise_pending()
    return stopping.EXIT_OK


def cmd_evaluate(args, backend):
    """Re-create a training run's test part and report the saved model's loss on it."""
    from . import load

    net = load(args.model, backend=backend)
    X, y, source = load_data(args)
    if X.shape[1] != net.sizes[0]:
        raise ValueError(f"{args.model} expects {net.sizes[0]} input features but {source} has "
                         f"{X.shape[1]}; evaluate a model on the data it was trained on")
    seed = net.seed if args.seed is None else args.seed
    data = prepare(X, y, net.loss, seed, args.test_size, source)
    if data.n_out > net.sizes[-1]:
        raise ValueError(f"{source} has {data.n_out} classes but {args.model} has only "
                         f"{net.sizes[-1]} outputs")
    metrics = held_out_metrics(net, data)
    print(f"test loss: {metrics['loss']:.4g} | {metric_text(metrics, len(data.X_test))} "
          f"| backend: {backend.spec}")
    return 0
