"""NumPy's own BLAS, for the one product NumPy cannot write in place: W <- W - Dᵀ A.

Plain SGD's step for a layer is W -= lr·Δᵀ A(l-1) (E10 and E12). Through NumPy that is a
matrix product into a fresh gradient array, then a pass reading it and W and writing W. BLAS
gemm does it in one call (C <- alpha·op(A)·op(B) + beta·C with alpha = -lr, beta = 1): no
gradient array, no separate pass (what it gains is measured in ``benchmarks/README.md``).

The library called is the one NumPy already loaded (its wheels ship OpenBLAS built with
64-bit integers and the ``scipy_`` symbol prefix), so it shares NumPy's thread pool and
thread settings. Anything else (MKL, Accelerate, a 32-bit-integer BLAS, no library found)
leaves :func:`find` returning None, and the caller keeps the plain NumPy path.

The same library's thread setting serves :class:`SerialProducts`: OpenBLAS splits every
product of more than 64³ multiply-adds between its threads, and a thread that the operating
system has not scheduled (another process busy on the cores) makes the call wait for it, a
scheduler time slice of milliseconds for microseconds of work. Small products therefore run
on one BLAS thread (why, and what it costs and saves: ``benchmarks/README.md``).
"""

from __future__ import annotations

import ctypes
import glob
import os
import threading
import weakref

import numpy as np

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
# symbol name patterns of 64-bit-integer CBLAS builds: NumPy's wheels, then plain OpenBLAS64
_SYMBOLS = ("scipy_cblas_{}gemm64_", "cblas_{}gemm64_")
# below this many weights the ctypes call's fixed cost exceeds the pass it saves
MIN_WEIGHTS = 1 << 15
# products of fewer multiply-adds (M·N·K) run on one BLAS thread; PORTABLE_BP_SERIAL_PRODUCTS
# overrides it (0: every product as the BLAS library decides)
SERIAL_PRODUCTS = 1 << 22
# products of fewer multiply-adds OpenBLAS runs on the calling thread by itself: its gemv
# (what a one-row product becomes) splits from m·n = 2304·GEMM_MULTITHREAD_THRESHOLD (4 in
# every build we know of), its gemm from 65536·4 multiply-adds; below the smaller, lowering
# the thread count would cost two library calls and a lock for nothing
NEVER_THREADED = 2304 * 4
SERIAL_PRODUCTS_ENV = "PORTABLE_BP_SERIAL_PRODUCTS"
# (get, set) thread-count symbols of the same builds as _SYMBOLS
_THREAD_SYMBOLS = (("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
                   ("openblas_get_num_threads64_", "openblas_set_num_threads64_"))


def _library_paths() -> list[str]:
    """The BLAS shared libraries that NumPy's wheels bundle (Linux/Windows, then macOS)."""
    root = os.path.dirname(np.__file__)
    paths = []
    for pattern in (os.path.join(root, os.pardir, "numpy.libs", "*openblas*"),
                    os.path.join(root, ".dylibs", "*openblas*")):
        paths += sorted(glob.glob(pattern))
    return paths


def _loaded(path: str):
    """The library at ``path`` if NumPy has already loaded it (the same handle, the same
    thread pool: loading another OpenBLAS would start a second pool fighting NumPy's for the
    cores), else None."""
    mode = getattr(os, "RTLD_NOLOAD", None)
    try:
        return ctypes.CDLL(path) if mode is None else ctypes.CDLL(path, mode=mode | os.RTLD_NOW)
    except OSError:
        return None


def _gemm_functions(path: str) -> dict | None:
    """{dtype: gemm} from the library at ``path``, or None when it has no 64-bit CBLAS gemm."""
    lib = _loaded(path)
    if lib is None:
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


class SerialProducts:
    """Products of fewer than ``below`` multiply-adds on one BLAS thread, larger ones as the
    library decides (see the module docstring).

    The thread count is the library's, for the whole process: it is lowered to 1 around a
    small product and put back after. Products of several Python threads may overlap (NumPy
    and ctypes release the GIL), so the first to enter saves the count and the last to leave
    restores it; a large product that overlaps a small one meanwhile runs on one thread.
    Products of fewer than ``above`` multiply-adds (:data:`NEVER_THREADED`) are left alone:
    the library keeps them on the calling thread by itself, and the lock and two thread-count
    calls would cost more than the tiniest networks' products (config A's: 12 multiply-adds).
    """

    def __init__(self, get_threads, set_threads, below: int = SERIAL_PRODUCTS, above: int = NEVER_THREADED):
        self.below, self.above = below, above
        self._get, self._set = get_threads, set_threads
        self._lock = threading.Lock()
        self._inside = 0
        self._saved = 1
        _LIVE.add(self)

    def _after_fork(self) -> None:
        """In a forked child only the forking thread lives on: a product another thread was
        running is not running there, so its lowered thread count is put back now, and the
        lock (perhaps held by a thread that is gone) is a new one."""
        self._lock = threading.Lock()
        if self._inside and self._saved > 1:
            self._set(self._saved)
        self._inside = 0

    def is_small(self, m: int, n: int, k: int) -> bool:
        """Whether an (m x k) by (k x n) product is lowered to one thread here: it is small,
        but not so small that the library would keep it on one thread anyway (``above``)."""
        return self.above <= m * n * k < self.below

    def call(self, fn, *args):
        """``fn(*args)`` with the library on one thread."""
        with self._lock:
            if self._inside == 0:
                self._saved = self._get()
                if self._saved > 1:
                    self._set(1)
            self._inside += 1
        try:
            return fn(*args)
        finally:
            with self._lock:
                self._inside -= 1
                if self._inside == 0 and self._saved > 1:
                    self._set(self._saved)

    def matmul(self, a, b):
        """``a @ b`` (2-D), on one thread when it is small."""
        if a.ndim == 2 == b.ndim and self.is_small(a.shape[0], b.shape[1], a.shape[1]):
            return self.call(np.matmul, a, b)
        return a @ b


_LIVE: weakref.WeakSet = weakref.WeakSet()


def _reset_after_fork() -> None:
    for serial in list(_LIVE):
        serial._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _thread_functions(path: str):
    """(get, set) of the library's thread count at ``path``, or None when it has neither."""
    lib = _loaded(path)
    for get_name, set_name in _THREAD_SYMBOLS if lib is not None else ():
        try:
            get_threads, set_threads = getattr(lib, get_name), getattr(lib, set_name)
        except AttributeError:
            continue
        get_threads.argtypes, get_threads.restype = [], ctypes.c_int
        set_threads.argtypes, set_threads.restype = [ctypes.c_int], None
        return get_threads, set_threads
    return None


def serial_below() -> int:
    """The multiply-adds below which a product runs on one thread: PORTABLE_BP_SERIAL_PRODUCTS
    (a whole number, 0 for none) or SERIAL_PRODUCTS."""
    text = os.environ.get(SERIAL_PRODUCTS_ENV, "").strip()
    if not text:
        return SERIAL_PRODUCTS
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{SERIAL_PRODUCTS_ENV} must be a whole number of multiply-adds >= 0 "
                         f"(0: leave every product to the BLAS library's threads), got {text!r}")
    return value


def find_serial(below: int | None = None) -> SerialProducts | None:
    """:class:`SerialProducts` over NumPy's own BLAS, or None where that library (or its
    thread setting) is not found or ``below`` (default :func:`serial_below`) is 0."""
    below = serial_below() if below is None else below
    for path in _library_paths() if below > 0 else ():
        functions = _thread_functions(path)
        if functions is not None:
            get_threads, set_threads = functions
            return SerialProducts(get_threads, set_threads, below=below)
    return None


def make_subtract_product(funcs: dict, min_weights: int = MIN_WEIGHTS, serial: SerialProducts | None = None):
    """``subtract_product(W, D, A, alpha)``: W <- W - alpha·Dᵀ A in place through ``funcs``
    (dtype -> gemm); layouts, dtypes and sizes BLAS cannot or should not take go through
    NumPy (a product, then a subtraction). Small products run on one thread through ``serial``."""

    def subtract_product(W, D, A, alpha):
        dt = W.dtype
        fn = funcs.get(dt)
        if (fn is None or W.size < min_weights or D.dtype != dt or A.dtype != dt
                or not W.flags.c_contiguous or not W.flags.writeable
                or not _rows_contiguous(D, dt.itemsize) or not _rows_contiguous(A, dt.itemsize)
                or D.shape[0] != A.shape[0] or W.shape != (D.shape[1], A.shape[1]) or D.shape[0] == 0
                or np.may_share_memory(W, D) or np.may_share_memory(W, A)):
            # small, odd layouts, dtypes or overlaps: the plain NumPy path
            step = D.T @ A if serial is None else serial.matmul(D.T, A)
            if alpha != 1.0:
                step *= alpha
            W -= step
            return W
        fo, fi = W.shape
        isz = dt.itemsize
        # row-major C (fo x fi) <- -alpha * Dᵀ (D is m x fo) @ A (m x fi) + 1 * C
        args = (_ROW_MAJOR, _TRANS, _NO_TRANS, fo, fi, D.shape[0], -alpha, D.ctypes.data,
                D.strides[0] // isz, A.ctypes.data, A.strides[0] // isz, 1.0, W.ctypes.data, fi)
        if serial is not None and serial.is_small(fo, fi, D.shape[0]):
            serial.call(fn, *args)
        else:
            fn(*args)
        return W

    return subtract_product


def find(serial: SerialProducts | None = None):
    """NumPy's BLAS as ``subtract_product(W, D, A, alpha)``, or None (see the module
    docstring); small products on one thread through ``serial``. Whether it computes the
    right thing is the backend's Ops check's job."""
    for path in _library_paths():
        funcs = _gemm_functions(path)
        if funcs is not None:
            return make_subtract_product(funcs, serial=serial)
    return None
