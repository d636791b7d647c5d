"""Targets as readers return them: int64 class labels or float64 regression targets."""

from __future__ import annotations

import numpy as np


def integral_as_int(y):
    """Whole-number targets are class labels: return them as int64."""
    if np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    return y


def as_targets(y, name=None):
    """Integer/bool targets -> int64 labels, floating targets -> float64."""
    if y.dtype.kind in "biu":
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        return y.astype(np.float64)
    where = f"{name}: " if name else ""
    raise ValueError(f"{where}y must be numeric, got dtype {y.dtype}")
