"""The ``portable-bp`` command line: its arguments, their types and their help.

Every choice and default that the library also has comes from the library's own tables
(activations, losses, initializations, optimizers and their learning rates, dtypes), so
the command and the library cannot disagree. A bad value is one line on stderr and exit
status 2.
"""

from __future__ import annotations

import argparse
import math
import sys
import textwrap

from ._validate import integer, number
from .activations import ACTIVATIONS
from .backends import DTYPES
from .cli_train import DATASETS, PROG
from .datasets.labels import TASKS
from .distributed.launch import CHOICES as DISTRIBUTED
from .losses import LOSSES
from .optim import default_lrs, optimizer_names

HIDDEN_ACTIVATIONS = tuple(name for name, act in ACTIVATIONS.items() if not act.output_only)
OUTPUT_ACTIVATIONS = tuple(ACTIVATIONS)
LOSS_NAMES = tuple(LOSSES)
GRADCHECK_THRESHOLD = 1e-7
BENCH_HELP = ("Run the benchmark program (python -m benchmarks) with the remaining arguments. "
              "It lives in the source checkout, not in the installed package: run this from "
              "the repository's root.")


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error as one line and exit status 2."""

    def error(self, message):
        sys.stderr.write(f"{PROG}: error: {message} (see '{self.prog} --help')\n")
        sys.exit(2)


# -- argument types -----------------------------------------------------------------------
def _typed(parse, check, expected):
    """An argparse type: ``check(parse(text))`` (the library's validation helpers); errors
    name ``expected``."""
    def convert(text):
        try:
            return check(parse(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
    return convert


_positive_int = _typed(int, lambda v: integer(v, "value", minimum=1), "a positive integer")
_positive_float = _typed(float, lambda v: number(v, "value", lo_open=True), "a positive number")
_non_negative_float = _typed(float, lambda v: number(v, "value"), "a number >= 0")
_seed = _typed(int, lambda v: integer(v, "value"), "a non-negative integer")
_rate = _typed(float, lambda v: number(v, "value", hi=1.0), "a rate in [0, 1)")


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


def _fraction(text):
    """A fraction strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a fraction in (0, 1), got {text!r}")
    return value


def _target(text):
    """A CSV column: a number is an index (negative counts from the end), else a name."""
    try:
        return int(text)
    except ValueError:
        return text


# -- the parser ---------------------------------------------------------------------------
TRAIN_EPILOG = """\
Task: --task auto decides as scikit-learn's type_of_target, and the first line printed
says what it decided: labels that are text, booleans or whole numbers (10/20/30 too) are
classes, numbered in sorted order as scikit-learn's LabelEncoder does; a target with a
fraction is a regression. --task classify or regress overrides it (--loss cross_entropy
implies classify, the other losses regress). A 2-D 0/1 target (an NPZ y with one column
per label, "multilabel-indicator") is a multi-label classification: one sigmoid output
and binary cross-entropy per label, scored by subset accuracy; predict writes a column
per label (label_0, ...).

Data: the split into train and test parts is seeded (--seed; stratified by class for
classification); --validation-split F then takes the fraction F of the rest as a
validation part (--early-stopping without it takes 0.1, as scikit-learn does). The
features are standardized with the mean and standard deviation of the training part
only. The model file keeps the class names, the feature names and the standardizer, so
`portable-bp predict MODEL --data new.csv` and `portable-bp export MODEL model.onnx` need
nothing else; `portable-bp evaluate MODEL --dataset NAME` (or the same --data/--target)
re-creates the test part from the same data, the seed stored in the model and
--test-size. Give evaluate the --test-size you trained with.

The progress bar and --plot show the training loss and, with a validation part, the
validation loss and accuracy (val_*) after every epoch; the test part is scored once, at
the end. Synthetic datasets are generated with data seed 0 (xor: 400 noisy
corners; spirals: 600 points; moons: 400; sine: 400; blobs: 600 points in 4 clusters).
spirals needs more training than the defaults give: try --epochs 200. For regression the
loss is E2's halved squared error; the MSE printed is the plain mean squared error.

Nothing trained is lost: --save, --plot and --checkpoint are checked before training, and
on Ctrl-C (exit 130), SIGTERM (exit 143) or a divergence (exit 1) the model and plot of
the last completed epoch are still written (a signal after training waits for the writes;
with many processes every one stops at the same step); a --checkpoint that cannot be
written (a full disk) ends training with an error naming it, after --save is written.
--checkpoint saves after every epoch; --resume continues from it (the same command line
trains on to --epochs in total) and says where ("resumed at epoch 3 of 5"); the checkpoint
keeps the history, so --plot after a resume shows every epoch.

Many processes: mpiexec -n 4 portable-bp train --dataset digits --distributed mpi trains
one network with 4 processes (pip install -e ".[mpi]"), as one process would with
the same global --batch-size (to rounding); rank 0 prints and writes the outputs.

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
    p.add_argument("--target", type=_target, default=None, metavar="COLUMN",
                   help="CSV column holding y: an index (negative counts from the end) or a "
                        "header name (default: -1, the last column); only for a --data CSV/TSV "
                        "table (an NPZ's y is its 'y' array, IDX's the labels file)")
    p.add_argument("--test-size", type=_test_size, default=0.2, metavar="FRACTION",
                   help="held-out test part: a fraction in (0, 1) or a count (default: 0.2)")


def _add_backend_arg(p):
    p.add_argument("--backend", default="auto", metavar="SPEC",
                   help="numpy, cupy, cupy:1, torch, torch:cuda, jax, array_api_strict or auto "
                        "(default: auto = cupy when a GPU answers, else numpy); see "
                        f"'{PROG} backends'")


def _default_outputs():
    return ", ".join(f"{loss.default_output} for {name}" for name, loss in LOSSES.items())


def _add_network_args(p, hidden, activation):
    p.add_argument("--hidden", type=_positive_int, nargs="+", default=hidden, metavar="N",
                   help=f"hidden layer widths (default: {' '.join(map(str, hidden))})")
    p.add_argument("--activation", choices=HIDDEN_ACTIVATIONS, default=activation,
                   help=f"hidden activation (default: {activation})")
    p.add_argument("--output-activation", choices=OUTPUT_ACTIVATIONS, default=None,
                   help=f"default: {_default_outputs()}")


def _add_train(sub):
    t = sub.add_parser("train", help="train a network and report its test accuracy or MSE",
                       description=_wrap("Train a fully connected network by backpropagation and "
                                         "print its test accuracy (or MSE), training time and "
                                         "backend."),
                       epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_data_args(t)
    t.add_argument("--task", choices=TASKS, default="auto",
                   help="auto (default): as scikit-learn's type_of_target decides, said in the first "
                        "line printed; classify: class labels of any kind; regress: numbers")
    t.add_argument("--validation-split", type=_fraction, default=None, metavar="F",
                   help="hold out this fraction of the training part as validation, scored every "
                        "epoch (val_loss, val_accuracy)")
    t.add_argument("--early-stopping", type=_positive_int, default=None, metavar="PATIENCE",
                   help="stop when val_loss has not improved for PATIENCE epochs and keep the best "
                        "epoch's weights (validation part: --validation-split, default 0.1)")
    _add_network_args(t, [64], "relu")
    t.add_argument("--loss", choices=LOSS_NAMES, default=None,
                   help="default: cross_entropy to classify, binary_cross_entropy for a multi-label "
                        "target, mse to regress")
    t.add_argument("--optimizer", choices=optimizer_names(), default="momentum",
                   help="default: momentum (SGD with momentum 0.9)")
    t.add_argument("--lr", type=_positive_float, default=None,
                   help="learning rate (default: " + ", ".join(f"{k} {v:g}" for k, v in default_lrs().items()) + ")")
    t.add_argument("--weight-decay", type=_non_negative_float, default=None, metavar="WD",
                   help="the optimizer's weight decay: added to the gradient by sgd, momentum, nesterov, "
                        "adam and rmsprop, decoupled by adamw (default: 0; adamw 0.01)")
    t.add_argument("--dropout", type=_rate, nargs="+", default=[0.0], metavar="P",
                   help="dropout rate of the hidden layers while training: one for all, or one per "
                        "hidden layer (default: 0)")
    t.add_argument("--l2", type=_non_negative_float, default=0.0, metavar="ALPHA",
                   help="L2 regularization: 0.5*ALPHA*||W||^2/m added to each batch's loss, biases "
                        "excluded (scikit-learn's alpha; default: 0)")
    t.add_argument("--clip-norm", type=_positive_float, default=None, metavar="MAX",
                   help="scale the gradients so that their global L2 norm is at most MAX")
    t.add_argument("--clip-value", type=_positive_float, default=None, metavar="MAX",
                   help="clamp every gradient element to [-MAX, MAX]")
    t.add_argument("--epochs", type=_positive_int, default=30, help="default: 30")
    t.add_argument("--batch-size", type=_batch_size, default=32, metavar="N",
                   help="mini-batch size, or 'full' for full-batch gradient descent (default: 32)")
    t.add_argument("--dtype", choices=DTYPES, default="float32", help="default: float32")
    t.add_argument("--seed", type=_seed, default=0,
                   help="seeds the split, the initial weights and the batch order (default: 0)")
    _add_backend_arg(t)
    t.add_argument("--save", metavar="MODEL", default=None,
                   help="write the trained network to this checkpoint file (.npz)")
    t.add_argument("--checkpoint", metavar="FILE", default=None,
                   help="save the network and optimizer state here after every epoch")
    t.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint when it exists (up to --epochs in total)")
    t.add_argument("--plot", metavar="PNG", default=None,
                   help="save loss and accuracy per epoch as a PNG (needs matplotlib)")
    t.add_argument("--quiet", action="store_true", help="print only the final line")
    t.add_argument("--distributed", choices=DISTRIBUTED, default="none",
                   help="train with every process the launcher started: mpi (mpi4py), nccl (CuPy, "
                        "one GPU per process), auto (what the launcher's environment says; none "
                        "without a launcher) or none (default). --batch-size is then the global "
                        "batch, of which each process takes its part")


def _add_evaluate(sub):
    e = sub.add_parser("evaluate", help="report a saved model's loss and accuracy on the test part",
                       description=_wrap("Load a checkpoint and print its loss and accuracy (or "
                                         "MSE) on the test part of the data it was trained on. "
                                         "The split and standardization are re-created as 'train' "
                                         "made them: same data, the model's seed (or --seed) and "
                                         "--test-size."),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    e.add_argument("model", help="a checkpoint written by 'train --save'")
    _add_data_args(e)
    e.add_argument("--seed", type=_seed, default=None,
                   help="split seed (default: the seed stored in the model)")
    _add_backend_arg(e)


def _add_predict(sub):
    p = sub.add_parser("predict", help="predict with a saved model on new data, as CSV",
                       description=_wrap("Load a model saved by 'train --save' and write its predictions "
                                         "for new data as CSV, in the labels it was trained on. A CSV "
                                         "with a header is matched to the model's features by column "
                                         "name (any order; a target column, if present, is ignored; a "
                                         "missing or unknown column is an error); without a header, and "
                                         "for NPZ (its X) and IDX images, by position. Features are "
                                         "standardized as in training."),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a checkpoint written by 'train --save' (or Network.save)")
    p.add_argument("--data", metavar="FILE", required=True,
                   help="the samples: CSV/TSV, NPZ (array X) or IDX images")
    p.add_argument("--out", metavar="CSV", default=None,
                   help="write the predictions here (default: standard output)")
    p.add_argument("--proba", action="store_true",
                   help="classifiers: add one probability column per class (proba_<class>)")
    _add_backend_arg(p)


def _add_export(sub):
    x = sub.add_parser("export", help="write a saved model as ONNX (needs onnx)",
                       description=_wrap("Write a model saved by 'train --save' as an ONNX model: "
                                         "input X (N, features), standardized inside the graph when the "
                                         "model stores a standardizer; outputs 'outputs' (the network's "
                                         "last activations) and, for classifiers, 'label' (the class "
                                         "names). Standard operators only (Gemm and each activation's), "
                                         "opset 17, dynamic batch size. Needs the onnx package "
                                         "(pip install onnx, or the export extra)."),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    x.add_argument("model", help="a checkpoint written by 'train --save' (or Network.save)")
    x.add_argument("onnx", metavar="OUT.onnx", help="the ONNX file to write")
    x.add_argument("--dtype", choices=DTYPES, default=None, help="default: the model's")


def _add_checks(sub):
    sub.add_parser("backends", help="list every known backend and whether it runs here",
                   description="Every backend this installation knows: whether it runs on this "
                               "machine, its device and version, its hot path (the Ops it uses "
                               "and the step primitives they override, each checked against the "
                               "Array API reference; jit: a compiled step; array-api: none), the "
                               "overrides its check refused and why, and why not when it cannot run.")
    g = sub.add_parser("gradcheck", help="check backpropagation against finite differences",
                       description="Compare backpropagation's gradients with central finite "
                                   "differences on a small random network in float64. PASS "
                                   f"below a max relative error of {GRADCHECK_THRESHOLD:g}; "
                                   "exit status 1 on FAIL. Weights come from the network's "
                                   "initialization, biases from N(0, 0.1^2) (zero biases can put "
                                   "a ReLU exactly on its kink, where no gradient exists); inputs "
                                   "and targets are random, all drawn with --seed.")
    _add_network_args(g, [5, 5], "tanh")
    g.add_argument("--loss", choices=LOSS_NAMES, default="cross_entropy", help="default: cross_entropy")
    g.add_argument("--inputs", type=_positive_int, default=4, help="default: 4")
    g.add_argument("--outputs", type=_positive_int, default=3, help="default: 3")
    g.add_argument("--samples", type=_positive_int, default=8, help="default: 8")
    g.add_argument("--seed", type=_seed, default=0, help="default: 0")
    _add_backend_arg(g)
    x = sub.add_parser("explain", help="walk through the derivation's 3-4-2 example",
                       description="The derivation's 3-4-2 sigmoid network with the halved "
                                   "squared error, for one sample: prints u, y, h, the error "
                                   "terms δ and every gradient as the library computes them, and "
                                   "checks them against the element-wise formulas E3/E5 "
                                   "evaluated with plain Python loops.")
    x.add_argument("--seed", type=_seed, default=0, help="draws W, b, x and z (default: 0)")
    _add_backend_arg(x)
    sub.add_parser("bench", help="run the benchmarks (from a source checkout)", description=BENCH_HELP,
                   add_help=False)


def build_parser():
    from . import __version__

    parser = _Parser(prog=PROG, description="Exact, readable backpropagation on NumPy, CuPy, "
                     "PyTorch, JAX and array-api-strict: train, evaluate, predict with, export and check networks.",
                     epilog="Problems with the command line or the data exit with status 2 "
                            "and one line on stderr. PORTABLE_BP_DEBUG=1 shows tracebacks.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_train(sub)
    _add_evaluate(sub)
    _add_predict(sub)
    _add_export(sub)
    _add_checks(sub)
    return parser
