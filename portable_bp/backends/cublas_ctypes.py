"""cuBLAS through its C API, for matrix products inside a CuPy stream capture.

CuPy refuses its own cuBLAS calls while a stream is being captured into a CUDA graph, but
cuBLAS called directly works there: our own handle, bound to the stream of each call, with
a workspace we allocate once (``cublasSetWorkspace``: inside a capture cuBLAS may not
allocate one itself). The library is the one CuPy already loaded.

Arrays are CuPy's, row-major. cuBLAS is column-major: a row-major matrix M (r x c, rows
``ld`` elements apart) is, to cuBLAS, the column-major Mᵀ (c x r, leading dimension ld), so
the row-major C = alpha·A B + beta·C is computed as the column-major Cᵀ = alpha·Bᵀ Aᵀ + beta·Cᵀ.
A transposed view (``W.T`` of a row-major W) is passed as W with the transpose flag.
"""

from __future__ import annotations

import ctypes
import glob
import os

_NAMES = ("libcublas.so.13", "libcublas.so.12", "libcublas.so.11", "libcublas.so")
_N, _T = 0, 1                      # cublasOperation_t
_DEFAULT_MATH, _TF32_MATH = 0, 3   # cublasMath_t
WORKSPACE_BYTES = 32 << 20         # what cuBLAS asks for on Hopper


def _candidates():
    """Where libcublas may be: already loaded (by name), then the NVIDIA wheels' folders."""
    yield from _NAMES
    for root in {os.path.dirname(os.path.dirname(p)) for p in glob.glob("/usr/local/lib/python*/*-packages/nvidia")}:
        yield from sorted(glob.glob(os.path.join(root, "nvidia", "cu*", "lib", "libcublas.so*")))
        yield from sorted(glob.glob(os.path.join(root, "nvidia", "cublas", "lib", "libcublas.so*")))


def load_library():
    """The libcublas CuPy loaded (RTLD_NOLOAD first: the same library, not a second copy)."""
    noload = getattr(os, "RTLD_NOLOAD", 0)
    for mode in (noload | os.RTLD_NOW, os.RTLD_NOW):
        for name in _candidates():
            try:
                return ctypes.CDLL(name, mode=mode)
            except OSError:
                continue
    raise OSError("libcublas not found (looked for " + ", ".join(_NAMES) + ")")


def _check(status, what):
    if status != 0:
        raise RuntimeError(f"cuBLAS {what} failed with status {status}")


def operand(M):
    """(transpose flag, leading dimension) of a 2-D row-major matrix or a transposed view
    of one (as cuBLAS sees its memory), or None for any other layout."""
    s0, s1 = M.strides
    rows, cols = M.shape
    size = M.itemsize
    if s1 == size and s0 % size == 0 and s0 // size >= max(cols, 1):
        return _N, s0 // size
    if s0 == size and s1 % size == 0 and s1 // size >= max(rows, 1):
        return _T, s1 // size
    return None


def plan(A, B, C):
    """The cublas<t>gemm arguments (transa, transb, m, n, k, lda-side operand, ldb-side
    operand, ldc) that compute the row-major C = A B: column-major Cᵀ = Bᵀ Aᵀ, so B's memory
    is cuBLAS's first operand and A's its second. None where a layout does not fit (the
    caller copies that operand into a contiguous one)."""
    a, b, c = operand(A), operand(B), operand(C)
    if a is None or b is None or c is None or c[0] != _N:
        return None
    return {"transa": b[0], "transb": a[0], "m": C.shape[1], "n": C.shape[0], "k": A.shape[1],
            "first": B, "lda": b[1], "second": A, "ldb": a[1], "ldc": c[1]}


class Cublas:
    """One cuBLAS handle with its workspace; ``gemm`` is row-major C = alpha·A B + beta·C."""

    def __init__(self, cupy, lib=None, tf32=False):
        self.cupy, self.lib = cupy, lib or load_library()
        self.handle = ctypes.c_void_p()
        _check(self.lib.cublasCreate_v2(ctypes.byref(self.handle)), "create")
        self.workspace = cupy.empty(WORKSPACE_BYTES, dtype=cupy.uint8)
        _check(self.lib.cublasSetWorkspace_v2(self.handle, ctypes.c_void_p(self.workspace.data.ptr),
                                              ctypes.c_size_t(WORKSPACE_BYTES)), "set workspace")
        _check(self.lib.cublasSetMathMode(self.handle, _TF32_MATH if tf32 else _DEFAULT_MATH), "math mode")
        self._gemm = {"f": (self.lib.cublasSgemm_v2, ctypes.c_float),
                      "d": (self.lib.cublasDgemm_v2, ctypes.c_double)}

    def gemm(self, A, B, C, alpha=1.0, beta=0.0):
        """C <- alpha·A B + beta·C (row-major, C contiguous rows), on the current stream.
        Operands of other layouts are copied into contiguous ones first."""
        cupy = self.cupy
        fn, scalar = self._gemm[C.dtype.char]
        if operand(A) is None:
            A = cupy.ascontiguousarray(A)
        if operand(B) is None:
            B = cupy.ascontiguousarray(B)
        p = plan(A, B, C)
        if p is None:
            raise ValueError("gemm writes only into row-contiguous outputs")
        _check(self.lib.cublasSetStream_v2(self.handle, ctypes.c_void_p(cupy.cuda.get_current_stream().ptr)),
               "set stream")
        _check(fn(self.handle, p["transa"], p["transb"], p["m"], p["n"], p["k"], ctypes.byref(scalar(alpha)),
                  ctypes.c_void_p(p["first"].data.ptr), p["lda"], ctypes.c_void_p(p["second"].data.ptr),
                  p["ldb"], ctypes.byref(scalar(beta)), ctypes.c_void_p(C.data.ptr), p["ldc"]), "gemm")
        return C

    def matmul(self, A, B):
        """A new row-major A B."""
        C = self.cupy.empty((A.shape[0], B.shape[1]), dtype=A.dtype)
        return self.gemm(A, B, C)

    def gemm_subtract(self, W, D, A, alpha):
        """W <- W - alpha·Dᵀ A in place."""
        return self.gemm(D.T, A, W, -alpha, 1.0)

    def gemv_subtract(self, b, D, alpha):
        """b <- b - alpha·Σ_rows D in place (Dᵀ times a vector of ones, as a gemm)."""
        ones = self.cupy.ones((D.shape[0], 1), dtype=D.dtype)
        self.gemm(D.T, ones, b.reshape(-1, 1), -alpha, 1.0)
        return b

    def close(self):
        if self.handle:
            self.lib.cublasDestroy_v2(self.handle)
            self.handle = ctypes.c_void_p()
