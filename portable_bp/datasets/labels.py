"""What a target column is, and class labels of any kind as class indices.

:func:`target_type` decides as scikit-learn's ``sklearn.utils.multiclass.type_of_target``
does for the arrays readers return (numbers, booleans, text), so that the command line's
``--task auto`` and a scikit-learn user agree on what is a classification problem.
:func:`encode_labels` numbers the classes as ``LabelEncoder`` does: the sorted distinct
labels are the classes, and each label becomes its index among them, so class 0 of a
portable_bp model is ``classes_[0]`` of a scikit-learn one. Host-side (NumPy only).
"""

from __future__ import annotations

import numpy as np

TASKS = ("auto", "classify", "regress")


def _integral(values: np.ndarray) -> bool:
    """Whether every value is a whole number (text and booleans count as labels)."""
    if values.dtype.kind in "biuUSO":
        return True
    return bool(np.all(np.isfinite(values)) and np.all(values == np.round(values)))


def target_type(y) -> str:
    """``binary``, ``multiclass``, ``continuous``, ``multilabel-indicator``,
    ``multiclass-multioutput`` or ``continuous-multioutput``, as ``type_of_target`` says.

    Any whole numbers are classes (10/20/30 is multiclass), a float that is not whole makes
    the target continuous, and one or two distinct labels are ``binary``. A 2-D target with
    one column is read as 1-D; with more, two or fewer distinct whole values make it a
    multilabel indicator."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim not in (1, 2):
        raise ValueError(f"targets must be 1-D or 2-D, got shape {y.shape}")
    whole = _integral(y)
    if y.ndim == 2:
        if whole and len(np.unique(y)) < 3:
            return "multilabel-indicator"
        return "multiclass-multioutput" if whole else "continuous-multioutput"
    if not whole:
        return "continuous"
    return "multiclass" if len(np.unique(y)) > 2 else "binary"


def encode_labels(y) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, codes)``: the sorted distinct labels and each label's index among them
    (int64), as ``LabelEncoder().fit(y)`` gives ``classes_`` and ``transform(y)``."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"class labels must be 1-D, one per sample, got shape {y.shape}")
    classes, codes = np.unique(y, return_inverse=True)
    return classes, codes.reshape(-1).astype(np.int64)


def codes_for(y, classes, where: str) -> np.ndarray:
    """The index of each label of ``y`` among ``classes`` (a model's), or a ValueError naming
    the first label the model has never seen."""
    y, classes = np.asarray(y), np.asarray(classes)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if classes.dtype.kind in "US" and y.dtype.kind not in "US":
        y = np.array([label_text(v) for v in y.tolist()])  # numbers in a text-label column
    elif y.dtype.kind in "US" and classes.dtype.kind not in "US":  # "True" in a table, True in the model
        return _codes_by_text(y, classes, where)
    codes = np.searchsorted(classes, y)
    codes = np.minimum(codes, len(classes) - 1)
    unknown = classes[codes] != y
    if np.any(unknown):
        first = int(np.argmax(unknown))
        raise ValueError(f"{where}: label {label_text(y[first])!r} (sample {first}) is not one of the "
                         f"model's classes {[label_text(c) for c in classes[:10]]}"
                         f"{' ...' if len(classes) > 10 else ''}")
    return codes.astype(np.int64)


def _codes_by_text(y: np.ndarray, classes: np.ndarray, where: str) -> np.ndarray:
    """:func:`codes_for` for text labels and a model whose classes are numbers or booleans:
    each label matched to a class as the user would write it (``True``, ``10``)."""
    index = {label_text(c): i for i, c in enumerate(classes.tolist())}
    distinct, where_in = np.unique(y, return_inverse=True)
    for label in distinct.tolist():
        if label not in index:
            first = int(np.argmax(y == label))
            raise ValueError(f"{where}: label {label!r} (sample {first}) is not one of the model's classes "
                             f"{list(index)[:10]}{' ...' if len(index) > 10 else ''}")
    return np.asarray([index[label] for label in distinct.tolist()], np.int64)[where_in.reshape(-1)]


def label_text(value) -> str:
    """A label as a user wrote it: ``setosa``, ``10``, ``True``, ``0.5``."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
