"""cuBLAS through its C API, for matrix products inside a CuPy stream capture.

CuPy refuses its own cuBLAS calls while a stream is being captured into a CUDA graph, but
cuBLAS called directly works there: our own handle, bound to the stream of each call, with
a workspace we allocate once (``cublasSetWorkspace``, set again after every change of
stream, which resets it: inside a capture cuBLAS may not allocate one itself). The library
is the one CuPy already loaded, of CuPy's own CUDA major version. One workspace serves the
handle's one stream at a time: the step's calls are queued on one stream (eager, or the
capture's), never on two at once.

Arrays are CuPy's, row-major. cuBLAS is column-major: a row-major matrix M (r x c, rows
``ld`` elements apart) is, to cuBLAS, the column-major Mᵀ (c x r, leading dimension ld), so
the row-major C = alpha·A B + beta·C is computed as the column-major Cᵀ = alpha·Bᵀ Aᵀ + beta·Cᵀ.
A transposed view (``W.T`` of a row-major W) is passed as W with the transpose flag.
"""

from __future__ import annotations

import ctypes
import glob
import os
import site
import sys

_NAMES = ("libcublas.so.12", "libcublas.so.13", "libcublas.so.11", "libcublas.so")
_N, _T = 0, 1                      # cublasOperation_t
_DEFAULT_MATH, _TF32_MATH = 0, 3   # cublasMath_t
WORKSPACE_BYTES = 32 << 20         # what cuBLAS asks for on Hopper


def _names(major):
    """The sonames to try, the one of CUDA ``major`` (CuPy's runtime) first: with a CUDA-13
    torch beside a CUDA-12 CuPy both are loaded, and only CuPy's may touch CuPy's memory."""
    first = () if major is None else (f"libcublas.so.{major}",)
    return first + tuple(n for n in _NAMES if n not in first)


def _site_folders():
    """Every folder Python imports packages from (where NVIDIA's wheels put ``nvidia/``)."""
    folders = list(site.getsitepackages()) + [site.getusersitepackages()] + sys.path
    return [f for f in dict.fromkeys(folders) if f and os.path.isdir(os.path.join(f, "nvidia"))]


def _candidates(major=None, folders=None):
    """Where libcublas may be: already loaded (by soname, CuPy's CUDA major first), then the
    NVIDIA wheels' folders (``nvidia/cublas/lib`` for CUDA 12, ``nvidia/cu13/lib`` for 13)."""
    names = _names(major)
    yield from names
    found = []
    for root in _site_folders() if folders is None else folders:
        for pattern in ("cublas", "cu*"):
            found += glob.glob(os.path.join(root, "nvidia", pattern, "lib", "libcublas.so*"))
    rank = {name: i for i, name in enumerate(names)}
    yield from sorted(dict.fromkeys(found), key=lambda p: (rank.get(os.path.basename(p), len(rank)), p))


def cuda_major(cupy):
    """The CUDA major version CuPy runs on (12, 13), or None when it cannot say."""
    try:
        return int(cupy.cuda.runtime.runtimeGetVersion()) // 1000
    except Exception:  # noqa: BLE001 - an old or odd CuPy: try every name
        return None


def load_library(major=None):
    """The libcublas CuPy loaded (RTLD_NOLOAD first: the same library, not a second copy)."""
    noload = getattr(os, "RTLD_NOLOAD", 0)
    tried = list(_candidates(major))
    for mode in (noload | os.RTLD_NOW, os.RTLD_NOW):
        for name in tried:
            try:
                return ctypes.CDLL(name, mode=mode)
            except OSError:
                continue
    raise OSError("libcublas not found: tried " + ", ".join(tried) + " (install the NVIDIA cuBLAS of "
                  "CuPy's CUDA: pip install nvidia-cublas-cu12, or cupy's [ctk] extra)")


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
        self.cupy, self.lib = cupy, lib or load_library(cuda_major(cupy))
        self.handle = ctypes.c_void_p()
        _check(self.lib.cublasCreate_v2(ctypes.byref(self.handle)), "create")
        self.workspace = cupy.empty(WORKSPACE_BYTES, dtype=cupy.uint8)
        self._stream = None  # the stream the handle is bound to
        self._set_workspace()
        _check(self.lib.cublasSetMathMode(self.handle, _TF32_MATH if tf32 else _DEFAULT_MATH), "math mode")
        self._gemm = {"f": (self.lib.cublasSgemm_v2, ctypes.c_float),
                      "d": (self.lib.cublasDgemm_v2, ctypes.c_double)}
        self._ones: dict = {}

    def _set_workspace(self):
        _check(self.lib.cublasSetWorkspace_v2(self.handle, ctypes.c_void_p(self.workspace.data.ptr),
                                              ctypes.c_size_t(WORKSPACE_BYTES)), "set workspace")

    def _bind(self, stream):
        """Run the next calls on ``stream`` (a pointer). cublasSetStream resets the workspace
        to cuBLAS's own pool (its documentation; PyTorch sets its workspace again after every
        SetStream): inside a capture cuBLAS would then allocate, so ours is set again. Both
        calls only when the stream changes."""
        if stream != self._stream:
            _check(self.lib.cublasSetStream_v2(self.handle, ctypes.c_void_p(stream)), "set stream")
            self._set_workspace()
            self._stream = stream

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
        self._bind(cupy.cuda.get_current_stream().ptr)
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
        key = (D.shape[0], D.dtype.char)
        ones = self._ones.get(key)
        if ones is None:  # made once (in the eager step before a recording), not per call
            ones = self._ones[key] = self.cupy.ones((D.shape[0], 1), dtype=D.dtype)
        self.gemm(D.T, ones, b.reshape(-1, 1), -alpha, 1.0)
        return b

    def close(self):
        if self.handle:
            self.lib.cublasDestroy_v2(self.handle)
            self.handle = ctypes.c_void_p()
