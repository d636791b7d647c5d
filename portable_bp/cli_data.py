"""The command line's data: loading, the task, class labels, the split and the standardizer.

A run's data goes through the same steps in ``train``, ``evaluate`` and ``predict``:

* the task (``--task auto`` decides as scikit-learn's ``type_of_target``: any labels that
  are text, booleans or whole numbers are classes; a float that is not whole makes it a
  regression); the first line ``train`` prints says which and why;
* a 2-D 0/1 target (``multilabel-indicator``) is a multi-label classification: one
  sigmoid output and binary cross-entropy per column, accuracy as scikit-learn's
  ``accuracy_score`` gives it for such targets (subset accuracy: every label right);
* class labels of any kind are numbered as scikit-learn's ``LabelEncoder`` numbers them
  (sorted), so class names, not indices, go into the model file and every output;
* the split: the test part (seeded, stratified by class where every class has two samples),
  then, with ``--validation-split``, a validation part from what is left; the standardizer
  is fitted on the training part alone.

:class:`Preprocessing` is what the model file keeps of it (task, class names, feature and
target names, the standardizer), so that ``predict`` and ``export`` need only the model.
Host-side (NumPy is allowed here).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .datasets.labels import codes_for, label_text, target_type

MAX_CLASSES = 1000  # --task auto: more whole-number "labels" than this is almost surely a quantity
CLASSIFY_TYPES = ("binary", "multiclass")


class Source(NamedTuple):
    """Loaded data: features, raw targets, where they came from and the header's names."""

    X: np.ndarray
    y: np.ndarray
    name: str
    feature_names: list[str] | None
    target: Any  # the target column's header name, else the --target index; None for datasets


def load_source(args, datasets) -> Source:
    """``--data FILE`` (with ``--target``) or ``--dataset NAME`` (default digits)."""
    if args.data:
        from .datasets import load_table
        from .datasets.files import is_text_table

        text = is_text_table(args.data)
        if args.target is not None and not text:
            raise ValueError(f"--target picks a column of a CSV/TSV table; {args.data!r} is an NPZ or IDX file, "
                             f"whose targets are its 'y' array or labels file: leave --target out")
        column = -1 if args.target is None else args.target
        table = load_table(args.data, target=column)
        assert table.y is not None
        target = table.target_name if table.target_name is not None else column
        if not text:  # NPZ or IDX: no target column for predict to drop
            target = None
        return Source(table.X, table.y, args.data, table.feature_names, target)
    if args.target is not None:
        raise ValueError(f"--target picks a column of a --data table; --dataset "
                         f"{args.dataset or 'digits'} has its own targets: leave --target out")
    name = args.dataset or "digits"
    X, y = datasets(name)
    return Source(X, y, name, None, None)


def check_not_an_input(path, flag: str, inputs) -> None:
    """A ValueError when the output ``path`` of ``flag`` is one of the command's input files
    (``(what, path)`` pairs; an IDX pair ``images,labels`` counts as both): writing it would
    destroy the input (``export m.npz m.npz`` replaced the model with its ONNX graph)."""
    import os

    if not path or not os.path.exists(path):
        return
    for what, given in inputs:
        names = [given] if not given or os.path.exists(given) else [p.strip() for p in str(given).split(",")]
        for name in names:
            if name and os.path.exists(name) and os.path.samefile(path, name):
                raise ValueError(f"{flag} {os.fsdecode(path)!r} is the {what} {os.fsdecode(name)!r}: writing it "
                                 f"would destroy it; give another file name")


class Task(NamedTuple):
    """What a run learns: ``kind`` classify, multilabel or regress, the loss, the class
    names (a multi-label task's: its two indicator values; None to regress), and why (for
    the first line printed)."""

    kind: str
    loss: str
    classes: np.ndarray | None
    reason: str


def _classes(y, source: str, why: str, guard: bool) -> np.ndarray:
    kind = target_type(y)
    if kind == "continuous":
        sample = next(v for v in np.asarray(y).ravel().tolist() if float(v) != round(float(v)))
        raise ValueError(f"{source}: the target is continuous (values like {sample!r}), not class labels "
                         f"({why}); use --task regress (--loss mse) for regression")
    if kind not in CLASSIFY_TYPES:
        raise ValueError(f"{source}: a classifier needs one label per sample, but the target is {kind} "
                         f"(shape {np.shape(y)}); use --task regress")
    classes = np.unique(np.asarray(y).reshape(len(y)))
    if len(classes) < 2:
        raise ValueError(f"{source}: the target holds a single class ({label_text(classes[0])!r}); "
                         "a classifier needs at least 2")
    if guard and len(classes) > MAX_CLASSES:
        raise ValueError(f"{source}: the target holds {len(classes)} distinct whole numbers: scikit-learn's "
                         f"type_of_target calls that multiclass, but so many classes is almost surely a "
                         f"quantity; give --task regress (or --task classify to train {len(classes)} classes)")
    return classes


def _multilabel(y, loss, source: str, why: str) -> Task:
    """A 2-D 0/1 target: one sigmoid output per column, binary cross-entropy, each column a
    label (the indicator values as the user wrote them: 0/1 or False/True)."""
    if loss not in (None, "binary_cross_entropy"):
        raise ValueError(f"{source}: the target is multilabel-indicator (a 0/1 column per label); a multi-label "
                         f"classifier trains with --loss binary_cross_entropy, not --loss {loss} "
                         f"(or give --task regress)")
    y = np.asarray(y)
    values = np.unique(y)
    if y.dtype.kind == "b":
        return Task("multilabel", "binary_cross_entropy", np.asarray([False, True]), why)
    if not set(values.tolist()) <= {0, 1}:
        raise ValueError(f"{source}: a multi-label target holds 0/1 indicators, but this one holds "
                         f"{', '.join(label_text(v) for v in values)}; give --task regress")
    return Task("multilabel", "binary_cross_entropy", np.asarray([0, 1]), why)


def decide_task(y, task: str, loss: str | None, source: str) -> Task:
    """The task of ``--task`` and ``--loss`` (see the module docstring), checked against
    the target: a ValueError naming the option when they cannot go together. A 2-D 0/1
    target (scikit-learn's multilabel-indicator) is a multi-label classification under
    ``auto`` (unless ``--loss`` names a regression loss) and ``classify``."""
    kind = target_type(y)
    if task == "auto" and loss is not None:
        if kind == "multilabel-indicator" and loss == "binary_cross_entropy":
            return _multilabel(y, loss, source, f"--loss {loss}: the target is {kind}")
        task, why = ("classify" if loss == "cross_entropy" else "regress"), f"--loss {loss}"
    elif task == "auto":
        task = "classify" if kind in CLASSIFY_TYPES + ("multilabel-indicator",) else "regress"
        why = f"auto: the target is {kind}, as scikit-learn's type_of_target says"
    else:
        why = f"--task {task}"
    if task == "classify" and kind == "multilabel-indicator":
        return _multilabel(y, loss, source, why)
    if task == "classify":
        if loss not in (None, "cross_entropy"):
            raise ValueError(f"--task classify trains with the cross_entropy loss, not --loss {loss}")
        return Task("classify", "cross_entropy", _classes(y, source, why, guard=why.startswith("auto")), why)
    if loss == "cross_entropy":
        raise ValueError("--task regress cannot train with --loss cross_entropy; use mse, poisson or "
                         "binary_cross_entropy")
    if np.asarray(y).dtype.kind in "US":
        raise ValueError(f"{source}: the target holds text labels ({label_text(np.asarray(y).ravel()[0])!r}); "
                         f"regression needs numbers: use --task classify")
    if loss is None:
        loss = "binary_cross_entropy" if kind == "multilabel-indicator" else "mse"
    return Task("regress", loss, None, why)


def task_line(task: Task, n_out: int) -> str:
    """The first line ``train`` prints: the task, why, and the classes or outputs."""
    if task.kind == "multilabel":
        return (f"task: multilabel ({task.reason}): {n_out} labels, one sigmoid output each, loss "
                f"binary_cross_entropy; accuracy is subset accuracy (every label of a sample right)")
    if task.classes is None:
        return f"task: regress ({task.reason}): {n_out} output{'s' if n_out > 1 else ''}, loss {task.loss}"
    names = ", ".join(label_text(c) for c in task.classes[:10]) + (", ..." if len(task.classes) > 10 else "")
    return f"task: classify ({task.reason}): {len(task.classes)} classes: {names}"


def encode_targets(task: Task, y, source: str) -> tuple[np.ndarray, int]:
    """``(targets, n_outputs)``: class indices for a classifier (by its classes), float
    columns otherwise (0/1 indicators for a multi-label task)."""
    if task.kind == "multilabel":
        return _indicators(y, task, source)
    if task.classes is not None:
        if np.ndim(y) == 2 and np.shape(y)[1] > 1 or np.ndim(y) > 2:
            raise ValueError(f"{source}: a classifier takes one label per sample, but the target has shape "
                             f"{np.shape(y)}")
        return codes_for(y, task.classes, source), len(task.classes)
    y = np.asarray(y).astype(np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if y.ndim != 2:
        raise ValueError(f"{source}: targets must be 1-D or 2-D, got shape {y.shape}")
    return y, y.shape[1]


def _indicators(y, task: Task, source: str) -> tuple[np.ndarray, int]:
    """A multi-label target as float 0/1 columns, checked against the task's indicator values."""
    y, values = np.asarray(y), np.asarray([0, 1]) if task.classes is None else task.classes
    if y.ndim != 2 or y.shape[1] < 2:
        raise ValueError(f"{source}: a multi-label model needs a 2-D target, one 0/1 column per label; got "
                         f"shape {y.shape}")
    positive = y == values[1]
    if not np.all(positive | (y == values[0])):
        bad = y[~(positive | (y == values[0]))][0]
        raise ValueError(f"{source}: label value {label_text(bad)!r} is not one of the model's indicator values "
                         f"{', '.join(label_text(c) for c in values)}")
    return positive.astype(np.float64), y.shape[1]


class Prepared(NamedTuple):
    """The parts of one run, standardized: train, validation (None without one) and test."""

    X_train: np.ndarray
    y_train: np.ndarray
    X_val: np.ndarray | None
    y_val: np.ndarray | None
    X_test: np.ndarray
    y_test: np.ndarray
    n_out: int
    scaler: Any


def _split(X, y, size, seed, stratified: bool):
    from .datasets import train_test_split

    stratify = None
    if stratified:
        counts = np.bincount(y)
        if counts[counts > 0].min() >= 2:  # stratifying needs two samples of every class
            stratify = y
    return train_test_split(X, y, test_size=size, seed=seed, stratify=stratify)


def validation_count(fraction: float, n_train: int, option: str | None = None) -> int:
    """The validation samples ``fraction`` takes from ``n_train``, or a ValueError naming
    the option (``--validation-split F``, or what implied it) when a part would be empty."""
    n_val = math.ceil(fraction * n_train)
    if not 1 <= n_val < n_train:
        raise ValueError(f"{option or f'--validation-split {fraction:g}'} leaves an empty part: {n_val} of the "
                         f"{n_train} training samples would be validation")
    return n_val


def _test_split(X, y, test_size, seed, classify: bool, source: str):
    """The test part taken off; a test size that leaves a part empty is named as ``--test-size``."""
    try:
        return _split(X, y, test_size, seed, classify)
    except ValueError as exc:  # train_test_split's "test_size=0.999 leaves an empty part ..."
        if not str(exc).startswith("test_size="):
            raise
        raise ValueError(f"{source}: --test-size {test_size} {str(exc).split(' ', 1)[1]}") from None


def _check_training_classes(y_train, task: Task, source: str, validated: bool) -> None:
    """A classifier's training part must hold two classes, or nothing can be learned."""
    present = np.unique(y_train)
    if task.kind == "classify" and task.classes is not None and len(present) < 2:
        rare = [label_text(c) for i, c in enumerate(task.classes) if i not in present]
        parts, options = ("test and validation parts", "--test-size or --validation-split") if validated else (
            "test part", "--test-size")
        raise ValueError(f"{source}: the training part holds a single class "
                         f"({label_text(task.classes[present[0]])!r}): every sample of "
                         f"{', '.join(map(repr, rare[:5]))} went to the {parts}; give more samples of each "
                         f"class or a smaller {options}")


def prepare(X, y, task: Task, seed, test_size, source: str, validation_split=None, scaler=None,
            validation_option: str | None = None) -> Prepared:
    """Split (see the module docstring) and standardize with the training part's statistics,
    or with ``scaler`` (a model's). Deterministic: ``evaluate`` re-creates the test part.
    ``validation_option`` names what asked for the validation part in messages."""
    from .datasets import Standardizer

    y, n_out = encode_targets(task, y, source)
    classify = task.kind == "classify"
    X_train, X_test, y_train, y_test = _test_split(X, y, test_size, seed, classify, source)
    X_val = y_val = None
    if validation_split is not None:
        n_val = validation_count(validation_split, len(X_train), validation_option)
        X_train, X_val, y_train, y_val = _split(X_train, y_train, n_val, (seed, 1), classify)
    if scaler is None:  # training, not evaluating
        _check_training_classes(y_train, task, source, X_val is not None)
        scaler = Standardizer().fit(X_train)
    scale = scaler.transform
    return Prepared(scale(X_train), y_train, None if X_val is None else scale(X_val), y_val, scale(X_test),
                    y_test, n_out, scaler)


class Preprocessing(NamedTuple):
    """What a model file keeps of its data (``checkpoint`` ``data``), for predict and export."""

    task: str
    classes: np.ndarray | None
    feature_names: list[str] | None
    target: Any  # a header name, a column index, or None
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def of(cls, task: Task, source: Source, scaler) -> Preprocessing:
        return cls(task.kind, task.classes, source.feature_names, source.target, scaler.mean_, scaler.scale_)

    def to_data(self) -> dict:
        """The ``data`` argument of :func:`portable_bp.checkpoint.save`."""
        classes = None if self.classes is None else self.classes.tolist()
        return {"meta": {"task": self.task, "classes": classes, "feature_names": self.feature_names,
                         "target": self.target},
                "arrays": {"mean": self.mean, "scale": self.scale}}

    @classmethod
    def from_record(cls, record: dict, path: str, net) -> Preprocessing | None:
        """What ``train --save`` stored in ``path`` with ``net``; None for a file without it
        (a network saved from Python, or by an older portable-bp). A description that does
        not fit the network (class names for other outputs, say) is a ValueError naming it."""
        data = record.get("data")
        if not data or "mean" not in data["arrays"] or "scale" not in data["arrays"]:
            return None
        meta, mean, scale = data["meta"], data["arrays"]["mean"], data["arrays"]["scale"]
        problem = _record_problem(meta, net) or (None if np.all(np.isfinite(mean)) and np.all(np.isfinite(scale))
                                                 and np.all(scale > 0) else "a standardizer that is not finite "
                                                 "or scales by 0 or less")
        if problem:
            raise ValueError(f"{path}: the stored data description is malformed: {problem}")
        classes = meta.get("classes")
        return cls(meta["task"], None if classes is None else np.asarray(classes), meta.get("feature_names"),
                   meta.get("target"), mean, scale)

    def standardizer(self):
        from .datasets import Standardizer

        scaler = Standardizer()
        scaler.mean_, scaler.scale_ = np.asarray(self.mean), np.asarray(self.scale)
        return scaler


def _record_problem(meta: dict, net) -> str | None:
    """What is wrong with a stored data description for ``net``, or None."""
    task, classes, names, target = (meta.get(k) for k in ("task", "classes", "feature_names", "target"))
    n_out = net.sizes[-1]
    if task not in ("classify", "regress", "multilabel"):
        return f"task {task!r}"
    if classes is not None and not (isinstance(classes, list) and classes and len({type(c) for c in classes}) == 1
                                    and type(classes[0]) in (str, int, bool, float)):
        return f"classes {str(classes)[:100]} (one kind of label: text, numbers or booleans)"
    expected = {"classify": n_out if net.is_classifier else -1, "multilabel": 2 if net.loss ==
                "binary_cross_entropy" else -1, "regress": None}[task]
    if (classes is None and expected is not None) or (classes is not None and len(classes) != expected):
        return (f"a {task} description with {'no' if classes is None else len(classes)} class names for a "
                f"{net.loss} network with {n_out} outputs")
    if names is not None and not (isinstance(names, list) and len(names) == net.sizes[0]
                                  and all(isinstance(n, str) for n in names)):
        return f"feature names {str(names)[:100]} for {net.sizes[0]} inputs"
    if target is not None and (isinstance(target, bool) or not isinstance(target, (str, int))):
        return f"target {target!r}"
    return None
