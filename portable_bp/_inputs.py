"""Turning user data into arrays on the network's device, with errors that name the problem.

Data may arrive as NumPy arrays or Python sequences (moved to the device: the usual way)
or as arrays already on the network's backend and device (used as they are). An array of
another library or device is refused with a TypeError naming both: never silently mixed,
never silently copied. Checks run with the backend's namespace, once per public call.
"""

from __future__ import annotations

import functools
import math
import os
import threading
import weakref
from collections import OrderedDict

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
        if dtype is None or data.dtype != dtype:  # already the float dtype asked for: numbers
            _check_numeric(backend.xp, data, what)
        return data if dtype is None or data.dtype == dtype else backend.asarray(data, dtype)
    where = f"{library_of(data)} array on device {array_api_compat.device(data)}"
    raise TypeError(f"{what} is a {where}, but the network lives on backend {backend.spec!r} "
                    f"(device {backend.device}); move it first, e.g. with net.backend.asarray("
                    f"{what}) after converting to NumPy, or build the network on that backend")


def _check_numeric(xp, arr, what: str) -> None:
    """TypeError unless ``arr`` (an array of the namespace ``xp``) holds booleans, integers
    or real floats."""
    if not _numeric(xp, arr.dtype):
        raise TypeError(f"{what} must hold real numbers, got dtype {arr.dtype}")


@functools.lru_cache(maxsize=64)
def _numeric(xp, dtype) -> bool:
    """Whether ``dtype`` of namespace ``xp`` is a boolean, integer or real float, asked once
    per dtype: JAX's ``isdtype`` builds its dtype sets at every call (~5 µs, several
    times that on a cold cache), which a ``fit(epochs=1)`` loop on a tiny network pays per
    call."""
    try:
        return bool(xp.isdtype(dtype, ("bool", "integral", "real floating")))
    except (TypeError, ValueError):
        return False


def _all(xp, cond) -> bool:
    return bool(xp.all(cond))


class _KnownFinite:
    """The last few immutable arrays (JAX's) found finite, held by weak reference.

    An immutable array cannot change, so a loop of ``fit(X, y, epochs=1)`` need not read
    the same data back at every call (on a small network that read costs more than the
    epoch's own overhead). A mutable array (NumPy, PyTorch, CuPy) may be written between
    calls and is checked every time. A freed array's id can be reused: its weak reference
    is then dead, and the new array is checked afresh. A JAX array that shares a buffer
    written elsewhere (``jax.dlpack``/``jnp.from_dlpack`` of a NumPy or PyTorch array) is
    taken as JAX takes it, unchanged: writing that buffer afterwards is undefined behaviour
    in JAX, and here it goes unseen by the next check (a NaN written there then shows as a
    divergence in ``fit``, or NaN outputs)."""

    SIZE = 16

    def __init__(self):
        self._refs: OrderedDict[int, weakref.ref] = OrderedDict()
        self._lock = threading.Lock()  # fits in several threads share it

    def __contains__(self, arr) -> bool:
        ref = self._refs.get(id(arr))
        return ref is not None and ref() is arr

    def add(self, arr) -> None:
        try:
            ref = weakref.ref(arr)
        except TypeError:  # an immutable array type without weak references: never remembered
            return
        with self._lock:
            self._refs[id(arr)] = ref
            self._refs.move_to_end(id(arr))
            while len(self._refs) > self.SIZE:
                self._refs.popitem(last=False)


_known_finite = _KnownFinite()


def check_finite(backend, arr, what: str) -> None:
    """ValueError if ``arr`` holds NaN or inf: one read of ``backend.ops.extremes`` (the
    largest magnitude among its largest and smallest element: no temporary the size of the
    data, nothing that can overflow, as a sum of large finite float32 values would)."""
    if not backend.mutable and arr in _known_finite:
        return
    if not math.isfinite(float(backend.ops.extremes([arr]))):
        raise ValueError(f"{what} contains NaN or inf; clean or impute the data first")
    if not backend.mutable:
        _known_finite.add(arr)


def check_finite_all(ops, arrays, what: str) -> None:
    """ValueError if any of ``arrays`` (one dtype) holds NaN or inf, read back in one go."""
    if not math.isfinite(float(ops.extremes(arrays))):
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
    check_finite(backend, X, what)
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
        return labels(backend, Z, n_out, what)
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
    check_finite(backend, Z, what)
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
    check_finite(backend, w, what)
    if float(xp.min(w)) < 0 or not float(xp.max(w)) > 0:
        raise ValueError(f"{what} must be non-negative and not all zero")
    return w


def labels(backend, y, n_classes: int, what: str = "Z"):
    """Integer class labels in [0, n_classes) in the namespace's index dtype (int64; int32
    on JAX without x64): a narrower type could overflow the row indices computed from it.
    Checked; float labels must be whole numbers."""
    xp = backend.xp
    if xp.isdtype(y.dtype, "real floating"):
        check_finite(backend, y, what)
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


# -- memory ------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def memory_limit() -> int | None:
    """The bytes of memory this process may use at most: the machine's physical memory,
    or its control group's limit (a container, a batch job) when that is lower (read once)."""
    limits = []
    try:
        limits.append(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, ValueError, OSError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < 1 << 60:
            limits.append(int(text))
    return min(limits) if limits else None


def check_fits(what: str, shape: tuple, itemsize: int, backend) -> None:
    """A MemoryError naming the array, its shape and the bytes it needs, when one array on
    a CPU backend needs more than the machine has (:func:`memory_limit`): said before
    anything is allocated, instead of a traceback from deep inside the array library."""
    nbytes = math.prod(shape) * itemsize
    limit = None if getattr(backend, "is_gpu", False) else memory_limit()
    if limit is not None and nbytes > limit:
        raise MemoryError(f"{what} of shape {tuple(shape)} needs {nbytes:,} bytes ({nbytes / 2**30:.1f} GiB), "
                          f"more than this machine's memory ({limit / 2**30:.1f} GiB)")


def memory_error(what: str, exc: MemoryError) -> MemoryError:
    """``exc`` (the array library's own, e.g. NumPy's "Unable to allocate ...") as a
    MemoryError that also names ``what`` was being allocated."""
    text = " ".join(str(exc).split()) or "out of memory"
    return MemoryError(f"{what}: {text}")
