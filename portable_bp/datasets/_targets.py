"""Values as readers return them, exact or refused.

* Boolean labels stay booleans (the user's False/True, not 0/1). Integer class labels
  are int64 and keep their exact values: an integer array that does not
  fit int64 (uint64 above 2**63 - 1) is refused rather than wrapped (it became -1).
* Whole-number float targets (CSV) become labels only below 2**53 in magnitude. From
  2**53 on, float64 no longer holds every integer (a CSV "9007199254740993" reads as
  9007199254740992), and past 2**63 a cast to int64 wraps (1e19 and 2e19 both became
  -9223372036854775808, merging two classes). Such targets stay float64: regression
  targets with their exact float values.
* Features and float targets must be finite: NaN, inf and values that overflow float64
  are refused with the position of the first one, since training would only turn them
  into NaN losses far from their cause.
"""

from __future__ import annotations

import numpy as np

LABEL_LIMIT = 2**53
"""Whole-number floats below this magnitude are exact integers, so they can be labels."""


def non_finite_message(values: np.ndarray, where: str, axes=("sample", "feature")) -> str | None:
    """A message locating the first NaN/inf in ``values`` (float), or None when all are finite."""
    finite = np.isfinite(values)
    if finite.all():
        return None
    first = tuple(int(i) for i in np.unravel_index(int(np.argmin(finite)), values.shape))
    if len(first) == len(axes):
        place = ", ".join(f"{axis} {i}" for axis, i in zip(axes, first))
    else:
        place = f"index {first}"
    return (f"{where} holds a non-finite value ({values[first]}) at {place}; NaN, inf and values "
            "beyond float64's range are refused")


def check_finite(values: np.ndarray, where: str, axes=("sample", "feature")) -> None:
    """A ValueError locating the first NaN/inf in ``values``, if there is one."""
    message = non_finite_message(values, where, axes)
    if message:
        raise ValueError(message)


def whole_numbers_as_labels(y: np.ndarray) -> np.ndarray:
    """float64 targets that are all whole numbers of magnitude < 2**53 as int64 labels; else ``y``."""
    if y.size and np.all(np.abs(y) < LABEL_LIMIT) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    return y


def as_targets(y: np.ndarray, where: str) -> np.ndarray:
    """Boolean targets stay booleans (labels False/True, as scikit-learn's ``LabelEncoder``
    keeps them), integer targets -> int64 labels (exact), floating targets -> finite float64."""
    if y.dtype.kind == "b":
        return y.astype(np.bool_, copy=False)
    if y.dtype.kind in "iu":
        if y.dtype.kind == "u" and y.dtype.itemsize == 8 and y.size and y.max() > np.iinfo(np.int64).max:
            raise ValueError(f"{where} holds label {int(y.max())}, beyond int64's range; "
                             "labels must fit int64 (renumber the classes)")
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        with np.errstate(over="ignore"):  # longdouble beyond float64 becomes inf, refused below
            y = y.astype(np.float64, copy=False)
        check_finite(y, where, ("sample",) if y.ndim == 1 else ("sample", "column"))
        return y
    raise ValueError(f"{where} has dtype {y.dtype}; targets must be booleans, integers or floats")
