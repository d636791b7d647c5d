"""The Backend object: everything that knows which array library and device we are on.

The math modules never import an array library; they receive ``xp`` (an Array API
namespace) from a Backend. A Backend only *creates* arrays (from host data, or initial
weights drawn on the host) and moves them back; it also answers "is this array mine?".
This is the only place outside the per-library modules that names NumPy, and only for
host-side work (the random generator, host buffers).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

DTYPES = ("float32", "float64")


class BackendUnavailable(RuntimeError):
    """A known backend that cannot run on this machine; the message says why and how to fix it."""

    def __init__(self, name: str, reason: str, hint: str = ""):
        self.name, self.reason, self.hint = name, reason, hint
        msg = f"backend {name!r} cannot run here: {reason}"
        if hint:
            msg += f". To fix: {hint}"
        super().__init__(msg)


@dataclass(eq=False)
class Backend:
    """One array library on one device.

    ``xp`` is the Array API namespace the math uses; ``device`` is passed to every array
    creation; ``mutable`` says, once for the backend, whether parameters are updated in
    place (NumPy, CuPy, PyTorch) or rebound (JAX).
    """

    name: str
    xp: Any
    device: Any
    spec: str
    mutable: bool = True
    is_gpu: bool = False
    _to_numpy: Callable[[Any], np.ndarray] = np.asarray
    _synchronize: Callable[[], None] = lambda: None
    _owns: Callable[[Any], bool] = lambda a: False
    _context: Callable[[], Any] = contextlib.nullcontext
    _enable_float64: Callable[[], None] = lambda: None
    fused: Any = None  # optional hot-path kernels (CuPy, NumPy); None: the Array API reference path
    # optional compile(fn, static_argnames=()) -> compiled fn, for pure functions of arrays
    # (JAX's jit; the named arguments are compile-time constants); None on eager libraries
    compile: Callable[..., Callable] | None = None
    # optional subtract_matmul(W, D, A): W <- W - Dᵀ A in place, one multiply-accumulate
    # matrix product (BLAS gemm with beta = 1); plain SGD then takes its step without making
    # a gradient array. None: the Array API path (a product, then a subtraction)
    subtract_matmul: Callable[[Any, Any, Any], Any] | None = None
    # optional subtract_colsum(b, D): b <- b - Σ over the rows of D, in place, in one call
    # (BLAS gemv against a vector of ones, beta = 1): plain SGD's bias step. None: a sum,
    # then a subtraction (two kernel launches on a GPU instead of one)
    subtract_colsum: Callable[[Any, Any], Any] | None = None
    info: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Backend({self.spec!r}, device={self.device!r})"

    # -- dtypes ------------------------------------------------------------------------
    def dtype(self, name: str):
        """The namespace's dtype object for ``"float32"`` or ``"float64"``."""
        if name not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {name!r}")
        if name == "float64":
            self._enable_float64()
        return getattr(self.xp, name)

    # -- moving data -------------------------------------------------------------------
    def asarray(self, data, dtype=None):
        """Host data (NumPy array, sequence, scalar) -> an array on this backend's device.

        Arrays of this backend pass through (cast to ``dtype`` when given).
        """
        if self.owns(data):
            arr = data
            if dtype is not None:
                dt = self.dtype(dtype) if isinstance(dtype, str) else dtype
                if arr.dtype != dt:
                    arr = self.xp.astype(arr, dt)
            return arr
        host = np.asarray(data)
        if isinstance(dtype, str):
            host = host.astype(dtype, copy=False)
            dtype = self.dtype(dtype)
        with self.activate():
            return self.xp.asarray(host, dtype=dtype, device=self.device)

    def to_numpy(self, arr) -> np.ndarray:
        """A host NumPy array with the values of ``arr`` (a device-to-host transfer on a GPU).

        On CPU backends it may share memory with ``arr``: copy it before writing to it."""
        return self._to_numpy(arr)

    def owns(self, arr) -> bool:
        """True when ``arr`` is an array of this library on this device."""
        return self._owns(arr)

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU): needed before reading a clock."""
        self._synchronize()

    def activate(self):
        """Context in which this backend's device is current (CuPy's multi-GPU needs it)."""
        return self._context()

    # -- randomness --------------------------------------------------------------------
    @staticmethod
    def rng(seed) -> np.random.Generator:
        """The host generator for initial weights and batch order.

        The Array API has no random numbers, so every backend draws on the host from the
        same NumPy Generator: one seed gives bit-identical weights and batch orders everywhere.
        """
        return np.random.default_rng(seed)


def kernels_off() -> bool:
    """``PORTABLE_BP_FUSED=0``: every backend made from now on keeps the Array API path (no
    element-wise kernels, no one-call SGD products), for debugging and comparisons."""
    return os.environ.get("PORTABLE_BP_FUSED") == "0"


def subtract_matmul_agrees(op, to_device=lambda a: a, to_host=np.asarray, float32_tol=1e-4) -> bool:
    """True when a backend's ``subtract_matmul`` (W <- W - Dᵀ A, in place) matches W - Dᵀ A
    computed on the host in float64, for both dtypes, with inputs sliced by rows and by
    columns (leading dimensions wider than the row, as fit's batches can have). Backends run
    it once when they are made and keep their plain path when it fails or raises.
    ``float32_tol`` may admit reduced-precision products (TF32: ~1e-3 relative); a wrong
    transpose or layout is off by O(1)."""
    rng = np.random.default_rng(0)
    W, D, A = rng.standard_normal((7, 5)), rng.standard_normal((6, 9)), rng.standard_normal((9, 8))
    want = W - D[:, 1:8].T @ A[2:8, :5]
    for dt, tol in (("float32", float32_tol), ("float64", 1e-12)):
        Wd, Dd, Ad = (to_device(x.astype(dt)) for x in (W, D, A))
        try:
            got = to_host(op(Wd, Dd[:, 1:8], Ad[2:8, :5]))
        except Exception:  # noqa: BLE001 - a product that cannot be called is not used
            return False
        if not np.allclose(got, want, rtol=tol, atol=tol):
            return False
    return True


def subtract_colsum_agrees(op, to_device=lambda a: a, to_host=np.asarray) -> bool:
    """True when a backend's ``subtract_colsum`` (b <- b - Σ_rows D, in place) matches the
    float64 host computation for both dtypes, on a contiguous D, a single row, and a column
    slice of a wider array (not contiguous); checked once when the backend is made, like
    :func:`subtract_matmul_agrees`."""
    rng = np.random.default_rng(1)
    b, D = rng.standard_normal(6), rng.standard_normal((9, 8))
    for dt, tol in (("float32", 1e-5), ("float64", 1e-12)):
        wide = to_device(D.astype(dt))
        cases = ((D[:, 2:], to_device(np.ascontiguousarray(D[:, 2:].astype(dt)))),
                 (D[3:4, 2:], to_device(np.ascontiguousarray(D[3:4, 2:].astype(dt)))),
                 (D[:, 1:7], wide[:, 1:7]))
        for want_rows, Dd in cases:
            bd = to_device(b.astype(dt))
            try:
                got = to_host(op(bd, Dd))
                kept = to_host(bd)
            except Exception:  # noqa: BLE001 - an op that cannot be called is not used
                return False
            want = b - want_rows.sum(axis=0)
            if not (np.allclose(got, want, rtol=tol, atol=tol)
                    and np.allclose(kept, want, rtol=tol, atol=tol)):
                return False
    return True


def host_numeric(data, what: str) -> np.ndarray:
    """``data`` as a host NumPy array of numbers, or a TypeError naming ``what``."""
    try:
        host = np.asarray(data)
    except (ValueError, TypeError) as exc:  # ragged nested lists, odd objects
        raise TypeError(f"{what} must be a numeric array or sequence: {exc}") from None
    if host.dtype.kind not in "biuf":
        raise TypeError(f"{what} must hold numbers, got dtype {host.dtype}")
    return host
