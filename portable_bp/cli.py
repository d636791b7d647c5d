"""The ``portable-bp`` command: train, evaluate, backends, gradcheck, explain, bench.

Every subcommand is a small function over parsed arguments. Problems the user can fix
(a bad flag or value, a missing file, a backend that cannot run here) end the command with
exit status 2 and one line on stderr, ``portable-bp: error: ...``, never a traceback; set
``PORTABLE_BP_DEBUG=1`` to see the traceback instead.

This module is host-side (NumPy is allowed here): data is loaded, split and standardized
on the host, then handed to the network's backend.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import subprocess
import sys
import textwrap
import time
import warnings

PROG = "portable-bp"
DATASETS = ("digits", "xor", "spirals", "moons", "sine", "blobs")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")
ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "identity")
OUTPUT_ACTIVATIONS = ACTIVATIONS + ("softmax",)
LOSSES = ("mse", "cross_entropy", "binary_cross_entropy")
# Learning rates the command uses when --lr is not given (the library's own defaults are
# more cautious); with these the default digits run reaches about 97-98% test accuracy.
DEFAULT_LR = {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adam": 0.002}
MAX_CLASSES = 1000  # more integer "labels" than this is almost surely a regression target
EXPLAIN_TOLERANCE = 1e-12
GRADCHECK_THRESHOLD = 1e-7


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit status 2."""

    def error(self, message):
        sys.stderr.write(f"{PROG}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


# -- argument types -----------------------------------------------------------------------
def _number(parse, ok, expected):
    """An argparse type: ``parse(text)``, which must satisfy ``ok``; errors name ``expected``."""
    def convert(text):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}")
        return value
    return convert


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_positive_float = _number(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
_non_negative_float = _number(float, lambda v: v >= 0 and math.isfinite(v), "a number >= 0")
_seed = _number(int, lambda v: v >= 0, "a non-negative integer")


def _batch_size(text):
    """A positive integer, or ``full`` for full-batch gradient descent (None)."""
    if text.strip().lower() == "full":
        return None
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'full', got {text!r}") from None


def _test_size(text):
    """A fraction in (0, 1) or a whole number of test samples."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1) or a count, got {text!r}") from None
    if 0 < value < 1:
        return value
    if value >= 1 and value.is_integer():
        return int(value)
    raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1) or a whole count >= 1, got {text!r}")


def _target(text):
    """A CSV column: a number is an index (negative counts from the end), else a name."""
    try:
        return int(text)
    except ValueError:
        return text


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


def default_output_activation(loss):
    return {"cross_entropy": "softmax", "binary_cross_entropy": "sigmoid"}.get(loss, "identity")


def _targets_for(loss, y, source):
    """``(y, n_outputs)``: class indices for cross_entropy, float columns otherwise."""
    import numpy as np

    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1 and loss == "cross_entropy":
        y = y[:, 0]
    if loss == "cross_entropy":
        if y.ndim != 1:
            raise ValueError(f"{source}: cross_entropy needs one class label per sample, "
                             f"got targets of shape {y.shape}")
        if y.dtype.kind == "f":
            if not (np.all(np.isfinite(y)) and np.all(y == np.round(y))):
                raise ValueError(f"{source}: the target is continuous, not class labels; "
                                 f"use --loss mse for regression")
        y = y.astype(np.int64)
        if y.min() < 0:  # e.g. -1/+1 labels: number the classes 0..k-1 in sorted order
            y = np.unique(y, return_inverse=True)[1].reshape(-1).astype(np.int64)
        n_classes = int(y.max()) + 1
        if n_classes > MAX_CLASSES:
            raise ValueError(f"{source}: the target has labels up to {n_classes - 1}, too many "
                             f"classes; if it is a quantity, use --loss mse for regression")
        if n_classes < 2:
            raise ValueError(f"{source}: the target holds a single class; nothing to learn")
        return y, n_classes
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
    import numpy as np

    from .datasets import Standardizer, train_test_split

    y, n_out = _targets_for(loss, y, source)
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
    import numpy as np

    out = dict(net.evaluate(data.X_test, data.y_test))
    if "accuracy" not in out:
        pred = net.backend.to_numpy(net.predict(data.X_test))
        out["mse"] = float(np.mean((np.asarray(pred, dtype=np.float64) - data.y_test) ** 2))
    return out


def _metric_text(metrics, n):
    if "accuracy" in metrics:
        return f"test accuracy: {metrics['accuracy']:.3f} (n={n})"
    return f"test MSE: {metrics['mse']:.4g} (n={n})"


# -- backends -----------------------------------------------------------------------------
def _backend(spec):
    """The Backend for ``spec`` (errors surface before any data is loaded)."""
    from .backends import get

    return get(spec)


# -- train --------------------------------------------------------------------------------
def _optimizer(name, lr, weight_decay):
    """The named optimizer, with the command's own default learning rates."""
    from .optim import get_optimizer

    return get_optimizer(name, DEFAULT_LR[name] if lr is None else lr, weight_decay)


def _check_output_path(path, flag):
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(2, f"folder for {flag} does not exist", folder)
    if os.path.isdir(path):
        raise IsADirectoryError(21, f"{flag} must name a file, not a folder", path)


def _need_matplotlib():
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ImportError('--plot needs matplotlib: pip install "portable_bp[plot]"') from None


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
    axes[0].plot(epochs, h["loss"], label="train")
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


def _evaluate_hint(args, source):
    """The evaluate command that re-creates this run's test part."""
    words = [PROG, "evaluate", args.save]
    words += ["--data", args.data] if args.data else ["--dataset", source]
    if args.data and args.target != -1:
        words += ["--target", str(args.target)]
    if args.test_size != 0.2:
        words += ["--test-size", str(args.test_size)]
    return shlex.join(words)


def cmd_train(args):
    """Train a network on a dataset or a file; print the test metric, time and backend."""
    from .network import Network

    backend = _backend(args.backend)
    if args.plot:
        _need_matplotlib()
        _check_output_path(args.plot, "--plot")
    if args.save:
        _check_output_path(args.save, "--save")
    X, y, source = load_data(args)
    loss = args.loss or default_loss(y)
    data = prepare(X, y, loss, args.seed, args.test_size, source)
    out_act = args.output_activation or default_output_activation(loss)
    net = Network([data.X_train.shape[1], *args.hidden, data.n_out], activation=args.activation,
                  output_activation=out_act, loss=loss, backend=backend, dtype=args.dtype,
                  seed=args.seed)
    opt = _optimizer(args.optimizer, args.lr, args.weight_decay)
    if not args.quiet:
        bs = "full" if args.batch_size is None else args.batch_size
        print(f"{source}: {len(data.X_train)} train / {len(data.X_test)} test samples, "
              f"{X.shape[1]} features, {data.n_out} {'classes' if loss == 'cross_entropy' else 'outputs'}")
        print(f"network {'-'.join(map(str, net.sizes))} {args.activation}/{out_act}, loss {loss}, "
              f"{args.optimizer} lr={opt.lr:g}, batch {bs}, {args.epochs} epochs, "
              f"{args.dtype} on {backend.spec}")
    t0 = time.perf_counter()
    history = net.fit(data.X_train, data.y_train, epochs=args.epochs, batch_size=args.batch_size,
                      optimizer=opt, validation_data=(data.X_test, data.y_test),
                      progress=not args.quiet)
    net.backend.synchronize()
    elapsed = time.perf_counter() - t0
    metrics = held_out_metrics(net, data)
    if args.save:
        net.save(args.save)
        print(f"saved model to {args.save} (evaluate: {_evaluate_hint(args, source)})")
    if args.plot:
        plot_history(history, args.plot, title=f"{source}: {'-'.join(map(str, net.sizes))} {args.activation}")
        print(f"saved plot to {args.plot}")
    print(f"{_metric_text(metrics, len(data.X_test))} | time: {elapsed:.1f} s | backend: {backend.spec}")
    return 0


# -- evaluate -----------------------------------------------------------------------------
def cmd_evaluate(args):
    """Re-create a training run's test part and report the saved model's loss on it."""
    from . import load

    backend = _backend(args.backend)
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
    print(f"test loss: {metrics['loss']:.4g} | {_metric_text(metrics, len(data.X_test))} "
          f"| backend: {backend.spec}")
    return 0


# -- backends -----------------------------------------------------------------------------
def cmd_backends(args):
    """A table of every known backend: does it run here, on which device, and if not, why."""
    from .backends import describe, get

    rows = [("backend", "runs here", "device", "version", "hot path", "reason it cannot run")]
    for r in describe():
        rows.append((r["spec"], "yes" if r["available"] else "no",
                     r.get("device_name") or r["device"] or "-", r["version"] or "-",
                     r.get("hot_path") or "-", " ".join(r["reason"].split()) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row[:5], widths)) + "  " + row[5])
    print(f"auto selects: {get('auto').spec}")
    return 0


# -- gradcheck ----------------------------------------------------------------------------
def cmd_gradcheck(args):
    """Backpropagation against central differences on a small random network (float64)."""
    import numpy as np

    from .gradcheck import gradcheck
    from .network import Network

    backend = _backend(args.backend)
    net = Network([args.inputs, *args.hidden, args.outputs], activation=args.activation,
                  output_activation=args.output_activation, loss=args.loss, backend=backend,
                  dtype="float64", seed=args.seed)
    rng = np.random.default_rng(args.seed)
    # Non-zero biases: with zero biases a ReLU unit whose inputs are all zero sits exactly
    # on its kink, where finite differences and the subgradient rightly disagree.
    net.set_params([(backend.to_numpy(W), rng.normal(0.0, 0.1, size=n))
                    for (W, _), n in zip(net.params, net.sizes[1:])])
    X = rng.standard_normal((args.samples, args.inputs))
    if args.loss == "cross_entropy":
        Z = rng.integers(0, args.outputs, size=args.samples)
    elif args.loss == "binary_cross_entropy":
        Z = rng.uniform(0.0, 1.0, size=(args.samples, args.outputs))
    else:
        Z = rng.standard_normal((args.samples, args.outputs))
    error = gradcheck(net, X, Z)
    ok = error < GRADCHECK_THRESHOLD
    print(f"network {'-'.join(map(str, net.sizes))} {net.activation}/{net.output_activation}, "
          f"loss {net.loss}, float64 on {backend.spec}, {args.samples} samples (seed {args.seed})")
    print(f"max relative error: {error:.3e} (threshold {GRADCHECK_THRESHOLD:g}): "
          f"{'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


# -- explain ------------------------------------------------------------------------------
def _sigmoid(u):
    return 1.0 / (1.0 + math.exp(-u))


def seed_network_by_loops(W1, b1, W2, b2, x, z):
    """The 3-4-2 network of the derivation for one sample, with plain Python loops over
    nested lists: E1 forward, E2 loss, E3 output-layer and E5 hidden-layer gradients.

    Independent of the library's matrix code; returns a dict of nested lists.
    """
    n_in, n_hid, n_out = len(x), len(b1), len(b2)
    u1 = [sum(W1[i][j] * x[j] for j in range(n_in)) + b1[i] for i in range(n_hid)]
    y = [_sigmoid(u) for u in u1]
    u2 = [sum(W2[k][i] * y[i] for i in range(n_hid)) + b2[k] for k in range(n_out)]
    h = [_sigmoid(u) for u in u2]
    loss = 0.5 * sum((h[k] - z[k]) ** 2 for k in range(n_out))
    fp1 = [_sigmoid(u) * (1.0 - _sigmoid(u)) for u in u1]   # f'(u(1)_i)
    fp2 = [_sigmoid(u) * (1.0 - _sigmoid(u)) for u in u2]   # f'(u(2)_k)
    # E3: dL/dW(2)_ij = (f(u(2)_i) - z_i) f'(u(2)_i) y_j ; dL/db(2)_i likewise without y_j
    dW2 = [[(h[i] - z[i]) * fp2[i] * y[j] for j in range(n_hid)] for i in range(n_out)]
    db2 = [(h[i] - z[i]) * fp2[i] for i in range(n_out)]
    # E5: dL/dW(1)_ij = sum_k (f(u(2)_k) - z_k) f'(u(2)_k) W(2)_ki f'(u(1)_i) x_j
    db1 = [sum((h[k] - z[k]) * fp2[k] * W2[k][i] * fp1[i] for k in range(n_out))
           for i in range(n_hid)]
    dW1 = [[sum((h[k] - z[k]) * fp2[k] * W2[k][i] * fp1[i] * x[j] for k in range(n_out))
            for j in range(n_in)] for i in range(n_hid)]
    return {"u1": u1, "y": y, "u2": u2, "h": h, "loss": loss, "delta2": db2, "delta1": db1,
            "dW2": dW2, "db2": db2, "dW1": dW1, "db1": db1}


def seed_network(backend="numpy", seed=0, sigma=0.5):
    """The derivation's 3-4-2 sigmoid/MSE network on ``backend`` in float64, one sample.

    Weights and biases are drawn from N(0, sigma²) (E13) with ``seed``; so are the input x,
    and the label z is drawn uniformly from [0, 1]². Returns ``(net, x, z)`` on the host.
    """
    import numpy as np

    from .network import Network

    net = Network([3, 4, 2], activation="sigmoid", loss="mse", backend=backend, dtype="float64",
                  seed=seed, init="normal", sigma=sigma)
    rng = np.random.default_rng([seed, 342])
    params = [(net.backend.to_numpy(W), rng.normal(0.0, sigma, size=n)) for (W, _), n in
              zip(net.params, net.sizes[1:])]
    net.set_params(params)
    x = rng.normal(0.0, 1.0, size=3)
    z = rng.uniform(0.0, 1.0, size=2)
    return net, x, z


def explain_seed_network(backend="numpy", seed=0, out=print):
    """Print the 3-4-2 network's forward values, error terms and gradients as the library
    computes them, check each against :func:`seed_network_by_loops`; return the max difference."""
    import numpy as np

    net, x, z = seed_network(backend, seed)
    be = net.backend
    to_host = lambda a: np.asarray(be.to_numpy(a), dtype=np.float64)  # noqa: E731
    (W1, b1), (W2, b2) = [(to_host(W), to_host(b)) for W, b in net.params]
    with be.activate():  # the library's own forward pass, keeping u(l) and a(l) (E7)
        As, _, _, Us = net._forward(net._features(x[None, :]), keep_u=True)
    loss, grads = net.loss_and_grads(x[None, :], z[None, :])
    (dW1, db1), (dW2, db2) = [(to_host(dW), to_host(db)) for dW, db in grads]
    lib = {"u1": to_host(Us[0])[0], "y": to_host(As[1])[0], "u2": to_host(Us[1])[0],
           "h": to_host(As[2])[0], "loss": loss,
           # E10 with one sample: dL/db(l) = δ(l), so the bias gradients are the error terms
           "delta2": db2, "delta1": db1, "dW2": dW2, "db2": db2, "dW1": dW1, "db1": db1}
    ref = seed_network_by_loops(W1.tolist(), b1.tolist(), W2.tolist(), b2.tolist(), x.tolist(), z.tolist())

    def show(label, value):
        text = np.array2string(np.asarray(value), precision=6, suppress_small=False,
                               floatmode="fixed", sign=" ")
        pad = " " * (len(label) + 5)
        out(f"  {label} = " + text.replace("\n", "\n" + pad))

    out(f"The derivation's 3-4-2 network: sigmoid f, loss L = 1/2 ||h - z||^2 (E2), one sample,")
    out(f"float64 on {be.spec}; W, b ~ N(0, 0.5^2) (E13), x ~ N(0, 1), z ~ U(0, 1), seed {seed}.")
    out("Parameters (each row of W is one neuron's weights):")
    show("W(1) (4x3)", W1); show("b(1)", b1); show("W(2) (2x4)", W2); show("b(2)", b2)
    out("Sample:")
    show("x", x); show("z", z)
    out("Forward (E1), as the library computes it:")
    show("u(1) = W(1) x + b(1)", lib["u1"]); show("y = f(u(1))", lib["y"])
    show("u(2) = W(2) y + b(2)", lib["u2"]); show("h = f(u(2))", lib["h"])
    out(f"  L = {lib['loss']:.10f}")
    out("Error terms δ(l) = dL/du(l):")
    show("δ(2) = (h - z) ⊙ f'(u(2))  (E8)", lib["delta2"])
    show("δ(1) = W(2)^T δ(2) ⊙ f'(u(1))  (E9)", lib["delta1"])
    out("Gradients (E4/E6 = E10):")
    show("dL/dW(2) = δ(2) y^T (2x4)", dW2); show("dL/db(2) = δ(2)", db2)
    show("dL/dW(1) = δ(1) x^T (4x3)", dW1); show("dL/db(1) = δ(1)", db1)
    worst = 0.0
    for key in ref:
        diff = np.max(np.abs(np.asarray(lib[key], dtype=np.float64) - np.asarray(ref[key])))
        worst = max(worst, float(diff))
    verdict = "OK" if worst <= EXPLAIN_TOLERANCE else "MISMATCH"
    out("Check: the same quantities by the element-wise formulas E1, E3 and E5, with Python loops:")
    out(f"  max |library - loops| over u, y, h, L, δ, dW, db = {worst:.3e} "
        f"(tolerance {EXPLAIN_TOLERANCE:g}): {verdict}")
    return worst


def cmd_explain(args):
    """Walk through the derivation's 3-4-2 example and check the library against E3/E5."""
    worst = explain_seed_network(_backend(args.backend), args.seed)
    return 0 if worst <= EXPLAIN_TOLERANCE else 1


# -- bench --------------------------------------------------------------------------------
def _benchmarks_here():
    return os.path.isfile(os.path.join(os.getcwd(), "benchmarks", "__main__.py"))


BENCH_HELP = ("Run the benchmark program (python -m benchmarks) with the remaining arguments. "
              "It lives in the source checkout, not in the installed package: run this from "
              "the repository's root.")


def cmd_bench(rest):
    """``python -m benchmarks ARGS`` from the current folder, if it is a source checkout."""
    if not _benchmarks_here():
        if any(a in ("-h", "--help") for a in rest):
            print(f"usage: {PROG} bench [ARGS ...]\n\n{BENCH_HELP}")
            return 0
        sys.stderr.write(f"{PROG}: error: bench runs from a source checkout of portable_bp: cd to "
                         f"the repository root (the folder holding benchmarks/) and run it again\n")
        return 2
    return subprocess.call([sys.executable, "-m", "benchmarks", *rest], cwd=os.getcwd())


# -- parser -------------------------------------------------------------------------------
TRAIN_EPILOG = """\
Data: the split into train and test parts is seeded (--seed; stratified by class for
classification) and the features are standardized with the mean and standard deviation
of the training part only. Nothing besides the model needs saving: the split and the
standardizer are deterministic, so `portable-bp evaluate MODEL --dataset NAME` (or the
same --data/--target) re-creates them from the same data, the seed stored in the model
and --test-size. Give evaluate the --test-size you trained with.

The test part is evaluated after every epoch for the progress bar and --plot; it never
influences training. Synthetic datasets are generated with data seed 0 (xor: 400 noisy
corners; spirals: 600 points; moons: 400; sine: 400; blobs: 600 points in 4 clusters).
spirals needs more training than the defaults give: try --epochs 200. For regression the
loss is E2's halved squared error; the MSE printed is the plain mean squared error.

Example: portable-bp train --dataset digits --hidden 256 --epochs 30 --save model.npz
"""


def _wrap(text):
    return textwrap.fill(text, width=88)


def _add_data_args(p):
    src = p.add_mutually_exclusive_group()
    src.add_argument("--dataset", choices=DATASETS, default=None,
                     help="a built-in dataset (default: digits)")
    src.add_argument("--data", metavar="FILE", default=None,
                     help="your own data: CSV/TSV (one sample per row), NPZ (arrays X and y) or "
                          "IDX given as 'images,labels'")
    p.add_argument("--target", type=_target, default=-1, metavar="COLUMN",
                   help="CSV column holding y: an index (negative counts from the end) or a "
                        "header name (default: -1, the last column)")
    p.add_argument("--test-size", type=_test_size, default=0.2, metavar="FRACTION",
                   help="held-out test part: a fraction in (0, 1) or a count (default: 0.2)")


def _add_backend_arg(p):
    p.add_argument("--backend", default="auto", metavar="SPEC",
                   help="numpy, cupy, cupy:1, torch, torch:cuda, jax, array_api_strict or auto "
                        "(default: auto = cupy when a GPU answers, else numpy); see "
                        f"'{PROG} backends'")


def build_parser():
    from . import __version__

    parser = _Parser(prog=PROG, description="Exact, readable backpropagation on NumPy, CuPy, "
                     "PyTorch, JAX and array-api-strict: train, evaluate and check networks.",
                     epilog="Problems with the command line or the data exit with status 2 "
                            "and one line on stderr. PORTABLE_BP_DEBUG=1 shows tracebacks.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    fmt = argparse.RawDescriptionHelpFormatter

    t = sub.add_parser("train", help="train a network and report its test accuracy or MSE",
                       description=_wrap("Train a fully connected network by backpropagation and "
                                         "print its test accuracy (or MSE), training time and "
                                         "backend."),
                       epilog=TRAIN_EPILOG, formatter_class=fmt)
    _add_data_args(t)
    t.add_argument("--hidden", type=_positive_int, nargs="+", default=[64], metavar="N",
                   help="hidden layer widths (default: 64)")
    t.add_argument("--activation", choices=ACTIVATIONS, default="relu",
                   help="hidden activation (default: relu)")
    t.add_argument("--output-activation", choices=OUTPUT_ACTIVATIONS, default=None,
                   help="default: softmax for cross_entropy, sigmoid for binary_cross_entropy, "
                        "identity for mse")
    t.add_argument("--loss", choices=LOSSES, default=None,
                   help="default: cross_entropy for integer class labels, mse for continuous targets")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default="momentum",
                   help="default: momentum (SGD with momentum 0.9)")
    t.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default: " + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")")
    t.add_argument("--weight-decay", type=_non_negative_float, default=0.0, metavar="L2",
                   help="L2 penalty added to the gradient (default: 0)")
    t.add_argument("--epochs", type=_positive_int, default=30, help="default: 30")
    t.add_argument("--batch-size", type=_batch_size, default=32, metavar="N",
                   help="mini-batch size, or 'full' for full-batch gradient descent (default: 32)")
    t.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="default: float32")
    t.add_argument("--seed", type=_seed, default=0,
                   help="seeds the split, the initial weights and the batch order (default: 0)")
    _add_backend_arg(t)
    t.add_argument("--save", metavar="MODEL", default=None,
                   help="write the trained network to this checkpoint file (.npz)")
    t.add_argument("--plot", metavar="PNG", default=None,
                   help="save loss and accuracy per epoch as a PNG (needs matplotlib)")
    t.add_argument("--quiet", action="store_true", help="print only the final line")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="report a saved model's loss and accuracy on the test part",
                       description=_wrap("Load a checkpoint and print its loss and accuracy (or "
                                         "MSE) on the test part of the data it was trained on. "
                                         "The split and standardization are re-created as 'train' "
                                         "made them: same data, the model's seed (or --seed) and "
                                         "--test-size."),
                       formatter_class=fmt)
    e.add_argument("model", help="a checkpoint written by 'train --save'")
    _add_data_args(e)
    e.add_argument("--seed", type=_seed, default=None,
                   help="split seed (default: the seed stored in the model)")
    _add_backend_arg(e)
    e.set_defaults(func=cmd_evaluate)

    b = sub.add_parser("backends", help="list every known backend and whether it runs here",
                       description="Every backend this installation knows: whether it runs on "
                                   "this machine, its device and version, what its training step "
                                   "adds to the Array API code (fused: element-wise kernels; "
                                   "softmax-ce: softmax + cross-entropy for labels as one call; "
                                   "gemm-sgd: plain SGD's weight step as one in-place BLAS product; "
                                   "gemv-bias: its bias step as one call; jit: "
                                   "a compiled step; array-api: none), and why not when it cannot.")
    b.set_defaults(func=cmd_backends)

    g = sub.add_parser("gradcheck", help="check backpropagation against finite differences",
                       description="Compare backpropagation's gradients with central finite "
                                   "differences on a small random network in float64. PASS "
                                   f"below a max relative error of {GRADCHECK_THRESHOLD:g}; "
                                   "exit status 1 on FAIL. Weights come from the network's "
                                   "initialization, biases from N(0, 0.1^2) (zero biases can put "
                                   "a ReLU exactly on its kink, where no gradient exists); inputs "
                                   "and targets are random, all drawn with --seed.")
    g.add_argument("--hidden", type=_positive_int, nargs="+", default=[5, 5], metavar="N",
                   help="hidden widths (default: 5 5)")
    g.add_argument("--activation", choices=ACTIVATIONS, default="tanh", help="default: tanh")
    g.add_argument("--output-activation", choices=OUTPUT_ACTIVATIONS, default=None,
                   help="default: the one the loss needs, else the hidden activation")
    g.add_argument("--loss", choices=LOSSES, default="cross_entropy", help="default: cross_entropy")
    g.add_argument("--inputs", type=_positive_int, default=4, help="default: 4")
    g.add_argument("--outputs", type=_positive_int, default=3, help="default: 3")
    g.add_argument("--samples", type=_positive_int, default=8, help="default: 8")
    g.add_argument("--seed", type=_seed, default=0, help="default: 0")
    _add_backend_arg(g)
    g.set_defaults(func=cmd_gradcheck)

    x = sub.add_parser("explain", help="walk through the derivation's 3-4-2 example",
                       description="The derivation's 3-4-2 sigmoid network with the halved "
                                   "squared error, for one sample: prints u, y, h, the error "
                                   "terms δ and every gradient as the library computes them, and "
                                   "checks them against the element-wise formulas E3/E5 "
                                   "evaluated with plain Python loops.")
    x.add_argument("--seed", type=_seed, default=0, help="draws W, b, x and z (default: 0)")
    _add_backend_arg(x)
    x.set_defaults(func=cmd_explain)

    sub.add_parser("bench", help="run the benchmarks (from a source checkout)", description=BENCH_HELP,
                   add_help=False)
    return parser


# -- main ---------------------------------------------------------------------------------
def _one_line(exc):
    if isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror or exc}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def main(argv=None) -> int:
    """Entry point of ``portable-bp`` and ``python -m portable_bp``; returns the exit status."""
    from .backends import BackendUnavailable
    from .train import TrainingDiverged

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        return cmd_bench(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            # A diverging run is reported once, by TrainingDiverged, not by NumPy's warnings.
            warnings.filterwarnings("ignore", r"(overflow|invalid value|divide by zero) encountered",
                                    RuntimeWarning)
            return args.func(args)
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG}: interrupted\n")
        return 130
    except TrainingDiverged as exc:
        if os.environ.get("PORTABLE_BP_DEBUG"):
            raise
        sys.stderr.write(f"{PROG}: error: {_one_line(exc)}\n")
        return 1
    except (ValueError, TypeError, OSError, ImportError, BackendUnavailable) as exc:
        if os.environ.get("PORTABLE_BP_DEBUG"):
            raise
        sys.stderr.write(f"{PROG}: error: {_one_line(exc)}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
