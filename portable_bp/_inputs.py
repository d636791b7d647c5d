"""Turning user data into arrays on the network's device, with errors that name the problem.

Data may arrive as NumPy arrays or Python sequences (moved to the device: the usual way)
or as arrays already on the network's backend and device (used as they are). An array of
another library or device is refused with a TypeError naming both: never silently mixed,
never silently copied. Checks run with the backend's namespace, once per public call.
"""

from __future__ import annotations

import math

import array_api_compat

from .backends import library_of
from .backends._base import host_numeric


def to_backend(backend, data, dtype, what: str):
    """``data`` as an array of ``backend`` with dtype ``dtype`` (an xp dtype or None to keep).

    Every path checks the element type first: booleans, integers and real floats are
    numbers; complex, string, object and other dtypes are a TypeError naming ``what``
    (never a silent cast that drops an imaginary part or parses strings)."""
    if array_api_compat.is_numpy_array(data) or not array_api_compat.is_array_api_obj(data):
        return backend.asarray(host_numeric(data, what), dtype)  # NumPy arrays, sequences, scalars
    if backend.owns(data):
        _check_numeric(backend.xp, data, what)
        return backend.asarray(data, dtype)
    where = f"{library_of(data)} array on device {array_api_compat.device(data)}"
    raise TypeError(f"{what} is a {where}, but the network lives on backend {backend.spec!r} "
                    f"(device {backend.device}); move it first, e.g. with net.backend.asarray("
                    f"{what}) after converting to NumPy, or build the network on that backend")


def _check_numeric(xp, arr, what: str) -> None:
    """TypeError unless ``arr`` (an array of the namespace ``xp``) holds booleans, integers
    or real floats."""
    try:
        numeric = xp.isdtype(arr.dtype, ("bool", "integral", "real floating"))
    except (TypeError, ValueError):
        numeric = False
    if not numeric:
        raise TypeError(f"{what} must hold real numbers, got dtype {arr.dtype}")


def _all(xp, cond) -> bool:
    return bool(xp.all(cond))


def check_finite(xp, arr, what: str) -> None:
    """ValueError if ``arr`` holds NaN or inf.

    The largest and smallest elements are finite exactly when every element is (the
    standard's ``max``/``min`` propagate NaN; an inf is itself the max or the min). Two
    reductions: no temporary the size of the data, and nothing that can overflow (a sum of
    large finite float32 values would, and NumPy would warn)."""
    if array_api_compat.size(arr) == 0:
        return
    if not (math.isfinite(float(xp.max(arr))) and math.isfinite(float(xp.min(arr)))):
        raise ValueError(f"{what} contains NaN or inf; clean or impute the data first")


def check_finite_all(xp, arrays, what: str) -> None:
    """ValueError if any of ``arrays`` (one dtype) holds NaN or inf, read back in one go:
    the largest magnitude among every array's largest and smallest element."""
    extremes = [e for a in arrays if array_api_compat.size(a) for e in (xp.max(a), xp.min(a))]
    if extremes and not math.isfinite(float(xp.max(xp.abs(xp.stack(extremes))))):
        raise ValueError(f"{what} contain NaN or inf")


def features(backend, X, n_in: int, dtype, what: str = "X"):
    """X as an (n_samples, n_in) float array on the device, checked."""
    xp = backend.xp
    X = to_backend(backend, X, None, what)
    if X.ndim == 1 and n_in == 1:
        X = xp.reshape(X, (-1, 1))
    if X.ndim != 2:
        raise ValueError(f"{what} must be 2-D (n_samples, {n_in}), got shape {tuple(X.shape)}")
    if X.shape[0] == 0:
        raise ValueError(f"{what} is empty (0 samples); a batch needs at least one sample")
    if X.shape[1] != n_in:
        raise ValueError(f"{what} has {X.shape[1]} features but the network expects {n_in} "
                         f"(sizes[0]); shape given {tuple(X.shape)}")
    if X.dtype != dtype:
        X = xp.astype(X, dtype)
    check_finite(xp, X, what)
    return X


def targets(backend, Z, n_samples: int, n_out: int, loss: str, dtype, what: str = "Z"):
    """Z on the device, checked against the loss: an (n_samples, n_out) float array, or
    for ``cross_entropy`` possibly integer labels (n,) in [0, n_out), kept as labels (one
    index per sample, see :func:`labels`; the losses read them directly, so no (n, n_out)
    one-hot array is made). Rows of probabilities (n, n_out), such as one-hot rows, are
    accepted for ``cross_entropy`` too.
    """
    xp = backend.xp
    Z = to_backend(backend, Z, None, what)
    if Z.ndim == 0 or Z.ndim > 2:
        raise ValueError(f"{what} must be 1-D or 2-D, got shape {tuple(Z.shape)}")
    if Z.shape[0] != n_samples:
        raise ValueError(f"X and {what} have different lengths: {n_samples} and {Z.shape[0]} samples")
    if Z.shape[0] == 0:
        raise ValueError(f"{what} is empty (0 samples)")
    if loss == "cross_entropy" and Z.ndim == 1:
        return labels(xp, Z, n_out, what)
    if Z.ndim == 1:
        if n_out != 1:
            raise ValueError(f"{what} has shape {tuple(Z.shape)} but the network has {n_out} outputs; "
                             f"give {what} of shape (n_samples, {n_out})")
        Z = xp.reshape(Z, (-1, 1))
    if Z.shape[1] != n_out:
        kind = "one-hot rows of" if loss == "cross_entropy" else ""
        raise ValueError(f"{what} has {kind} width {Z.shape[1]} but the network has {n_out} outputs "
                         f"(sizes[-1])")
    Z = xp.astype(Z, dtype) if Z.dtype != dtype else Z
    check_finite(xp, Z, what)
    if loss == "cross_entropy":
        sums = xp.sum(Z, axis=1)
        if not (_all(xp, Z >= 0) and _all(xp, xp.abs(sums - 1.0) <= 1e-4)):
            raise ValueError(f"{what} rows for cross_entropy must be one-hot (or probabilities): "
                             f"non-negative and summing to 1; or pass integer labels of shape (n,)")
    elif loss == "binary_cross_entropy":
        if not (_all(xp, Z >= 0) and _all(xp, Z <= 1)):
            raise ValueError(f"{what} for binary_cross_entropy must lie in [0, 1]")
    elif loss == "poisson" and not _all(xp, Z >= 0):
        raise ValueError(f"{what} for poisson must be counts or rates >= 0")
    return Z


def sample_weights(backend, w, n_samples: int, dtype, what: str = "sample_weight"):
    """Per-sample weights as an (n_samples,) float array on the device: finite,
    non-negative, not all zero."""
    xp = backend.xp
    w = to_backend(backend, w, None, what)
    if w.ndim != 1 or w.shape[0] != n_samples:
        raise ValueError(f"{what} must have shape ({n_samples},), one weight per sample, got "
                         f"{tuple(w.shape)}")
    w = xp.astype(w, dtype) if w.dtype != dtype else w
    check_finite(xp, w, what)
    if float(xp.min(w)) < 0 or not float(xp.max(w)) > 0:
        raise ValueError(f"{what} must be non-negative and not all zero")
    return w


def labels(xp, y, n_classes: int, what: str = "Z"):
    """Integer class labels in [0, n_classes) in the namespace's index dtype (int64; int32
    on JAX without x64): a narrower type could overflow the row indices computed from it.
    Checked; float labels must be whole numbers."""
    if xp.isdtype(y.dtype, "real floating"):
        check_finite(xp, y, what)
        if not _all(xp, y == xp.round(y)):
            raise ValueError(f"{what} labels must be whole numbers (class indices), got fractional values")
    elif not xp.isdtype(y.dtype, "integral"):
        raise TypeError(f"{what} labels must be integers, got dtype {y.dtype}")
    lo, hi = int(xp.min(y)), int(xp.max(y))
    if lo < 0 or hi >= n_classes:
        raise ValueError(f"{what} labels must lie in [0, {n_classes}) for a network with {n_classes} "
                         f"outputs; got values from {lo} to {hi}")
    index = xp.__array_namespace_info__().default_dtypes()["indexing"]
    return y if y.dtype == index else xp.astype(y, index)
