"""NumPy ``.npz`` archives holding ``X`` and ``y``, read without ``np.load``.

Each array's ``.npy`` header is checked (dtype, shape, size; see
:mod:`portable_bp._safe_io.npz`) before its data is read, so a wrong dtype, a missing
sample axis, an empty array or a length mismatch is reported by name without reading
or allocating anything, and object arrays are never unpickled.
"""

from __future__ import annotations

import math

import numpy as np

from .._safe_io import NpzArchive, check_size, display_name, resolve_max_bytes
from ._targets import as_targets, check_finite


def read_npz(path, x_key: str = "X", y_key: str = "y", *,
             max_bytes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read ``X`` and ``y`` arrays from a NumPy ``.npz`` archive.

    ``X`` is returned as float64 with shape ``(n, features)`` (a 1-D ``X`` becomes one
    column, trailing dimensions are flattened) and must be finite; boolean ``y`` stays
    boolean (labels False/True), integer ``y`` becomes int64 class labels (exact: labels
    beyond int64 are refused), floating
    ``y`` stays float64 targets (finite). Both must hold booleans, integers or floats.
    ``max_bytes`` (default ``PORTABLE_BP_MAX_BYTES`` or 4 GiB) bounds the data read and
    the float64 ``X``.
    """
    X, y = _read(path, x_key, y_key, max_bytes)
    assert y is not None
    return X, y


def read_npz_features(path, x_key: str = "X", *, max_bytes: int | None = None) -> np.ndarray:
    """``X`` alone, read and checked as :func:`read_npz` reads it (data to predict on)."""
    return _read(path, x_key, None, max_bytes)[0]


def _read(path, x_key, y_key, max_bytes):
    name = display_name(path)
    limit = resolve_max_bytes(max_bytes)
    with NpzArchive(path, name, limit) as archive:
        if y_key is None:
            if not archive.has(x_key):
                raise ValueError(f"{name}: missing key {x_key!r} in .npz; keys present: {archive.keys}")
            with archive.member(x_key) as x_member:
                _check_x(name, x_key, x_member)
                check_size(8 * math.prod(x_member.shape), limit, name, f"{x_key!r} as float64")
                return _features(x_member.read(), name, x_key), None
        for key in (x_key, y_key):
            if not archive.has(key):
                raise ValueError(f"{name}: missing key {key!r} in .npz; keys present: {archive.keys}")
        with archive.member(x_key) as x_member, archive.member(y_key) as y_member:
            _check_headers(name, x_key, x_member, y_key, y_member)
            check_size(8 * math.prod(x_member.shape), limit, name, f"{x_key!r} as float64")
            X, y = x_member.read(), y_member.read()
    return _features(X, name, x_key), as_targets(y, f"{name}: {y_key!r}")


def _features(X, name, x_key):
    with np.errstate(over="ignore"):  # longdouble beyond float64 becomes inf, refused just below
        X = X.reshape(len(X), -1).astype(np.float64, copy=False)
    check_finite(X, f"{name}: {x_key!r}")
    return X


def _check_x(name, x_key, x) -> None:
    """The header checks of :func:`_check_headers` that concern ``X`` alone."""
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{name}: {x_key!r} has dtype {x.dtype}; X must hold booleans, integers or floats")
    if not x.shape:
        raise ValueError(f"{name}: {x_key!r} is a 0-d array (a single value); it needs a sample axis")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: {x_key!r} holds no samples (shape {x.shape})")
    if math.prod(x.shape[1:]) == 0:
        raise ValueError(f"{name}: {x_key!r} has no features (shape {x.shape})")


def _check_headers(name, x_key, x, y_key, y) -> None:
    """Refuse, from the headers alone, arrays that cannot be ``X`` and ``y``."""
    for key, member in ((x_key, x), (y_key, y)):
        if member.dtype.kind not in "biuf":
            raise ValueError(f"{name}: {key!r} has dtype {member.dtype}; X and y must hold booleans, "
                             "integers or floats")
        if not member.shape:
            raise ValueError(f"{name}: {key!r} is a 0-d array (a single value); it needs a sample "
                             "axis, one entry per sample")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: {x_key!r} holds no samples (shape {x.shape})")
    if math.prod(x.shape[1:]) == 0:
        raise ValueError(f"{name}: {x_key!r} has no features (shape {x.shape})")
    if math.prod(y.shape[1:]) == 0:
        raise ValueError(f"{name}: {y_key!r} has no target values per sample (shape {y.shape})")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"{name}: {x_key!r} has {x.shape[0]} samples but {y_key!r} has {y.shape[0]}")
