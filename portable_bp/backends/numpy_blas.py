"""NumPy's own BLAS, for the one product NumPy cannot write in place: W <- W - Dᵀ A.

Plain SGD's step for a layer is W -= lr·Δᵀ A(l-1) (E10 and E12). Through NumPy that is a
matrix product into a fresh gradient array, then a pass reading it and W and writing W. BLAS
gemm does it in one call (C <- alpha·op(A)·op(B) + beta·C with alpha = -lr, beta = 1): no
gradient array, no separate pass (what it gains is measured in ``benchmarks/README.md``).

The library called is the one NumPy already loaded (its wheels ship OpenBLAS built with
64-bit integers and the ``scipy_`` symbol prefix), so it shares NumPy's thread pool and
thread settings. Anything else (MKL, Accelerate, a 32-bit-integer BLAS, no library found)
leaves :func:`find` returning None, and the caller keeps the plain NumPy path.
"""

from __future__ import annotations

import ctypes
import glob
import os

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
# symbol name patterns of 64-bit-integer CBLAS builds: NumPy's wheels, then plain OpenBLAS64
_SYMBOLS = ("scipy_cblas_{}gemm64_", "cblas_{}gemm64_")
# below this many weights the ctypes call's fixed cost exceeds the pass it saves
MIN_WEIGHTS = 1 << 15


def _library_paths() -> list[str]:
    """The BLAS shared libraries that NumPy's wheels bundle (Linux/Windows, then macOS)."""
    root = os.path.dirname(np.__file__)
    paths = []
    for pattern in (os.path.join(root, os.pardir, "numpy.libs", "*openblas*"),
                    os.path.join(root, ".dylibs", "*openblas*")):
        paths += sorted(glob.glob(pattern))
    return paths


def _gemm_functions(path: str) -> dict | None:
    """{dtype: gemm} from the library at ``path``, or None when it has no 64-bit CBLAS gemm."""
    # only a library NumPy has already loaded: the same handle, the same thread pool (loading
    # another OpenBLAS would start a second pool fighting NumPy's for the cores)
    mode = getattr(os, "RTLD_NOLOAD", None)
    try:
        lib = ctypes.CDLL(path) if mode is None else ctypes.CDLL(path, mode=mode | os.RTLD_NOW)
    except OSError:
        return None
    for pattern in _SYMBOLS:
        try:
            funcs = {dt: getattr(lib, pattern.format(char)) for dt, char in
                     ((np.dtype(np.float32), "s"), (np.dtype(np.float64), "d"))}
        except AttributeError:
            continue
        for dt, fn in funcs.items():
            scalar = ctypes.c_float if dt == np.float32 else ctypes.c_double
            i64, ptr = ctypes.c_int64, ctypes.c_void_p
            fn.argtypes = [ctypes.c_int] * 3 + [i64] * 3 + [scalar, ptr, i64, ptr, i64, scalar, ptr, i64]
            fn.restype = None
        return funcs
    return None


def _rows_contiguous(a, itemsize) -> bool:
    """A 2-D array whose rows are contiguous (a slice of rows is): BLAS needs only the row
    stride (its leading dimension)."""
    s0, s1 = a.strides
    return s1 == itemsize and s0 > 0 and s0 % itemsize == 0 and s0 // itemsize >= a.shape[1]


def make_subtract_product(funcs: dict, min_weights: int = MIN_WEIGHTS):
    """``subtract_product(W, D, A, alpha)``: W <- W - alpha·Dᵀ A in place through ``funcs``
    (dtype -> gemm); layouts, dtypes and sizes BLAS cannot or should not take go through
    NumPy (a product, then a subtraction)."""

    def subtract_product(W, D, A, alpha):
        dt = W.dtype
        fn = funcs.get(dt)
        if (fn is None or W.size < min_weights or D.dtype != dt or A.dtype != dt
                or not W.flags.c_contiguous or not W.flags.writeable
                or not _rows_contiguous(D, dt.itemsize) or not _rows_contiguous(A, dt.itemsize)
                or D.shape[0] != A.shape[0] or W.shape != (D.shape[1], A.shape[1]) or D.shape[0] == 0
                or np.may_share_memory(W, D) or np.may_share_memory(W, A)):
            step = D.T @ A  # small, odd layouts, dtypes or overlaps: the plain NumPy path
            if alpha != 1.0:
                step *= alpha
            W -= step
            return W
        fo, fi = W.shape
        isz = dt.itemsize
        # row-major C (fo x fi) <- -alpha * Dᵀ (D is m x fo) @ A (m x fi) + 1 * C
        fn(_ROW_MAJOR, _TRANS, _NO_TRANS, fo, fi, D.shape[0], -alpha, D.ctypes.data,
           D.strides[0] // isz, A.ctypes.data, A.strides[0] // isz, 1.0, W.ctypes.data, fi)
        return W

    return subtract_product


def find():
    """NumPy's BLAS as ``subtract_product(W, D, A, alpha)``, or None (see the module
    docstring). Whether it computes the right thing is the backend's Ops check's job."""
    for path in _library_paths():
        funcs = _gemm_functions(path)
        if funcs is not None:
            return make_subtract_product(funcs)
    return None
