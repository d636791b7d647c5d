"""CUDA kernels and cuBLAS calls for the CuPy backend's Ops (``cupy_ops.CupyOps``).

Each kernel does in one pass over device memory what the Array API reference path does in
two to five (each of which reads and writes the whole array). They compute the same
formulas as ``activations.py``, ``losses.py`` and ``ops.py``; the backend's Ops check
compares every primitive built on them with the reference before it is used. Kernels
compile on first use (CuPy caches them on disk).
"""

from __future__ import annotations

import cupy
import numpy

# Softmax + cross-entropy for class labels, one thread block per row: the row's max, the
# shifted exponentials and their sum (two shared-memory reductions), the outputs, and the
# row's loss log S - s[y] (as losses.softmax_cross_entropy). One launch where the Array API
# path takes about ten. blockDim is a power of two <= 256; T, EXP and LOG are defined per dtype.
_SOFTMAX_CE = r"""
extern "C" __global__ void pbp_softmax_ce(const T* u, const long long* y, T* a,
                                          T* row_loss, const int k) {
    __shared__ T buf[256];
    const int t = threadIdx.x;
    const long long row = blockIdx.x;
    const T* ur = u + row * k;
    T* ar = a + row * k;
    T m = ur[0];
    for (int j = t; j < k; j += blockDim.x) m = ur[j] > m ? ur[j] : m;
    buf[t] = m;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {
        if (t < h && buf[t + h] > buf[t]) buf[t] = buf[t + h];
        __syncthreads();
    }
    m = buf[0];
    __syncthreads();
    T sum = 0;
    for (int j = t; j < k; j += blockDim.x) {
        const T e = EXP(ur[j] - m);
        ar[j] = e;
        sum += e;
    }
    buf[t] = sum;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h >>= 1) {
        if (t < h) buf[t] += buf[t + h];
        __syncthreads();
    }
    const T S = buf[0];
    for (int j = t; j < k; j += blockDim.x) ar[j] = ar[j] / S;
    if (t == 0) row_loss[row] = LOG(S) - (ur[y[row]] - m);
}
"""
_PRELUDE = {"f": "typedef float T;\n#define EXP expf\n#define LOG logf\n",
            "d": "typedef double T;\n#define EXP exp\n#define LOG log\n"}

# f(u) and f'(u) written from a = f(u), as in activations.py: one table for both kernel
# families below. T is the element type; EXP, TANH and FABS its functions (_MATH, _PRELUDE).
_ACTIVATIONS = {
    "sigmoid": ("EXP(u < (T)0 ? u : (T)0) / ((T)1 + EXP(-FABS(u)))", "a * ((T)1 - a)"),
    "tanh": ("TANH(u)", "(T)1 - a * a"),
    "relu": ("u > (T)0 ? u : (T)0", "(a > (T)0 ? (T)1 : (T)0)"),
    "leaky_relu": ("u > (T)0 ? u : (T)0.01 * u", "(a > (T)0 ? (T)1 : (T)0.01)"),
    "identity": ("u", "(T)1"),
}
_MATH = "#define EXP exp\n#define TANH tanh\n#define FABS fabs\n"  # CuPy's overloads, any T

# The same two passes over 16-byte vectors (4 floats or 2 doubles: V, its fields listed by
# EACH), for C-contiguous rows whose length is a multiple of the vector width: CuPy's
# ElementwiseKernel moves one element per thread, and its broadcast indexing (the bias
# over the rows) costs about twice the memory time these take. The bias vector of a
# vector i is b[i % cols]. n (vectors) < 2**31, so the unsigned index cannot wrap.
_VECTOR_PRELUDE = {
    "f": "typedef float T;\nstruct alignas(16) V { T x, y, z, w; };\n"
         "#define EACH(M) M(x) M(y) M(z) M(w)\n#define EXP expf\n#define TANH tanhf\n#define FABS fabsf\n",
    "d": "typedef double T;\nstruct alignas(16) V { T x, y; };\n"
         "#define EACH(M) M(x) M(y)\n#define EXP exp\n#define TANH tanh\n#define FABS fabs\n",
}
_VECTOR_KERNELS = r"""
extern "C" __global__ void pbp_bias_{name}_v(V* __restrict__ U, const V* __restrict__ B,
                                             const unsigned int n, const unsigned int cols) {{
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {{
        V v = U[i];
        const V c = B[i % cols];
#define ONE(f) {{ const T u = v.f + c.f; v.f = {forward}; }}
        EACH(ONE)
#undef ONE
        U[i] = v;
    }}
}}
extern "C" __global__ void pbp_backward_{name}_v(const V* __restrict__ A, V* __restrict__ G,
                                                 const unsigned int n) {{
    for (unsigned int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {{
        const V y = A[i];
        V g = G[i];
#define ONE(f) {{ const T a = y.f; g.f = g.f * ({derivative}); }}
        EACH(ONE)
#undef ONE
        G[i] = g;
    }}
}}
"""
_VECTOR_BLOCK = 256


def _vector_source(code):
    """Both vector kernels of every activation for one dtype ('f' or 'd'): one compilation."""
    return _VECTOR_PRELUDE[code] + "".join(
        _VECTOR_KERNELS.format(name=name, forward=forward, derivative=derivative)
        for name, (forward, derivative) in _ACTIVATIONS.items())


_CONSTANTS: dict = {}


def _constant(make, n, dtype):
    """``make(n, dtype=dtype)`` (cupy.arange, cupy.ones) on the current device, made once per
    (function, length, dtype, device): the column indices labels compare with, the ones the
    bias step multiplies by."""
    key = (make, n, dtype, cupy.cuda.Device().id)
    value = _CONSTANTS.get(key)
    if value is None:
        value = _CONSTANTS[key] = make(n, dtype=dtype)
    return value


class Kernels:
    """Every kernel and cuBLAS call CupyOps uses, compiled on first use.

    Methods return None where a kernel does not apply (a layout or dtype it was not
    written for): the caller then takes its Array API path."""

    activations = frozenset(_ACTIVATIONS)

    def __init__(self):
        self._bias_act = {
            name: cupy.ElementwiseKernel("T b", "T a", f"T u = a + b; a = {forward}",
                                         f"pbp_bias_{name}", preamble=_MATH)
            for name, (forward, _) in _ACTIVATIONS.items()}
        self._act_backward = {
            name: cupy.ElementwiseKernel("T a", "T g", f"g = g * ({derivative})",
                                         f"pbp_backward_{name}", preamble=_MATH)
            for name, (_, derivative) in _ACTIVATIONS.items()}
        self._vectors = {}  # (dtype char, device id) -> {kernel name: RawKernel}, or None
        self._output_delta = cupy.ElementwiseKernel(
            "T a, T z, T scale", "T d", "d = (a - z) * scale", "pbp_output_delta")
        # class labels y (m, 1) against the row 0 .. k-1 (k,): broadcast to (m, k)
        self._label_delta = cupy.ElementwiseKernel(
            "T a, I y, I k, T scale", "T d", "d = (a - (y == k ? (T)1 : (T)0)) * scale",
            "pbp_label_delta")
        self._sgd = cupy.ElementwiseKernel(
            "T g, T lr", "T p", "p -= lr * g", "pbp_sgd")
        self._momentum = cupy.ElementwiseKernel(
            "T g, T lr, T mu, bool nesterov", "T p, T v",
            "v = mu * v + g; p -= lr * (nesterov ? g + mu * v : v)", "pbp_momentum")
        self._softmax_ce = {code: cupy.RawKernel(_PRELUDE[code] + _SOFTMAX_CE, "pbp_softmax_ce")
                            for code in _PRELUDE}

    def softmax_cross_entropy(self, U, y):
        """Softmax outputs and the summed cross-entropy for class labels ``y`` (m,) in one
        kernel launch (plus the sum of the row losses): (A, total), or None."""
        kernel = self._softmax_ce.get(U.dtype.char)
        if (kernel is None or U.ndim != 2 or y.ndim != 1 or y.shape[0] != U.shape[0]
                or y.dtype != numpy.int64 or not U.flags.c_contiguous
                or not y.flags.c_contiguous or U.shape[0] == 0 or U.shape[1] == 0):
            return None
        m, k = U.shape
        block = 32
        while block < k and block < 256:
            block *= 2
        A = cupy.empty_like(U)
        row_loss = cupy.empty(m, dtype=U.dtype)
        kernel((m,), (block,), (U, y, A, row_loss, numpy.int32(k)))
        return A, row_loss.sum()

    def bias_activation(self, U, b, name):
        """E7's bias and f in one pass, in place: U <- f(U + b); returns U (now A)."""
        kernels = self._vector_kernels(U, b)
        if kernels is None:
            return self._bias_act[name](b, U)
        width = 16 // U.itemsize
        self._launch(kernels[f"pbp_bias_{name}_v"], U.size // width,
                     (U, b, numpy.uint32(U.size // width), numpy.uint32(U.shape[1] // width)))
        return U

    def activation_backward(self, A, G, name):
        """E9's ⊙ f'(U) in place: G <- G ⊙ f'(U), with f' written from A."""
        kernels = self._vector_kernels(G, A) if A.shape == G.shape else None
        if kernels is None:
            return self._act_backward[name](A, G)
        n = G.size // (16 // G.itemsize)
        self._launch(kernels[f"pbp_backward_{name}_v"], n, (A, G, numpy.uint32(n)))
        return G

    @staticmethod
    def _launch(kernel, n, args):
        kernel((min(-(-n // _VECTOR_BLOCK), 65535),), (_VECTOR_BLOCK,), args)

    def _vector_kernels(self, X, v):
        """The vector kernels for X's dtype when X (m, k) and v (k,) or (m, k) are laid out
        for them (C-contiguous, 16-byte aligned, k a multiple of the vector width) and they
        compile on this device; else None (the element-wise kernels serve)."""
        code = X.dtype.char
        if (code not in _VECTOR_PRELUDE or X.ndim != 2 or v.dtype != X.dtype or X.size == 0
                or not X.flags.c_contiguous or not v.flags.c_contiguous or v.shape[-1] != X.shape[1]
                or X.shape[1] % (16 // X.itemsize) or X.size // (16 // X.itemsize) >= 2**31
                or _address(X) % 16 or _address(v) % 16):
            return None
        key = (code, cupy.cuda.Device().id)
        if key not in self._vectors:
            source = _vector_source(code)
            try:
                kernels = {f"pbp_{kind}_{name}_v": cupy.RawKernel(source, f"pbp_{kind}_{name}_v")
                           for kind in ("bias", "backward") for name in _ACTIVATIONS}
                for kernel in kernels.values():
                    kernel.compile()
            except Exception:  # noqa: BLE001 - NVRTC cannot build them here
                kernels = None
            self._vectors[key] = kernels
        return self._vectors[key]

    def output_delta(self, A, Z, scale):
        """E11: Δ(L) = (A - Z)·scale in one pass; Z one-hot rows or class labels (m,),
        compared with each column index in the same pass."""
        if Z.ndim == 1:
            return self._label_delta(A, Z[:, None], _constant(cupy.arange, A.shape[1], Z.dtype),
                                     A.dtype.type(scale))
        return self._output_delta(A, Z, A.dtype.type(scale))

    def sgd(self, P, G, lr):
        """E12 in place: P <- P - lr G."""
        self._sgd(G, P.dtype.type(lr), P)
        return P

    def momentum(self, P, G, V, lr, mu, nesterov):
        """SGD with (Nesterov) momentum, both updates in one pass."""
        self._momentum(G, P.dtype.type(lr), P.dtype.type(mu), bool(nesterov), P, V)
        return P, V


def _address(X):
    """Where X's first element lies in device memory (the vector kernels need 16-byte
    alignment)."""
    return X.data.ptr


def gemv_subtract(b, D, alpha):
    """b <- b - alpha·Σ_rows D in place: one cuBLAS gemv, Dᵀ times a cached vector of ones
    (beta = 1); None for layouts it was not written for."""
    if not (D.ndim == 2 and D.flags.c_contiguous and b.flags.c_contiguous):
        return None
    import cupy.cublas  # noqa: F401 - the submodule is not imported by ``import cupy``

    ones = _constant(cupy.ones, D.shape[0], D.dtype)
    cupy.cublas.gemv("T", -alpha, D, ones, 1.0, b)  # (transa, alpha, a, x, beta, y)
    return b


def gemm_subtract(W, D, A, alpha, tf32_products=False):
    """W <- W - alpha·Dᵀ A in place: one cuBLAS gemm (beta = 1), no gradient array.
    ``tf32_products``: CuPy multiplies float32 in TF32 (``CUPY_TF32``, see :func:`tf32`);
    cupy.cublas.gemm calls cublasSgemm, which follows the cuBLAS handle's math mode, not
    CuPy's setting, so then the mode is set for this call and put back after."""
    import cupy.cublas  # noqa: F401

    if W.dtype != numpy.float32 or not tf32_products:
        return cupy.cublas.gemm("T", "N", D, A, out=W, alpha=-alpha, beta=1.0)
    from cupy_backends.cuda.libs import cublas

    handle = cupy.cuda.device.get_cublas_handle()
    mode = cublas.getMathMode(handle)
    cublas.setMathMode(handle, getattr(cublas, "CUBLAS_TF32_TENSOR_OP_MATH", 3))
    try:
        return cupy.cublas.gemm("T", "N", D, A, out=W, alpha=-alpha, beta=1.0)
    finally:
        cublas.setMathMode(handle, mode)


def tf32() -> bool:
    """Whether CuPy multiplies float32 matrices in TF32 on the current device (it reads
    ``CUPY_TF32`` once, at its first float32 product, or here)."""
    try:
        from cupy._core import _routines_linalg as linalg

        return linalg.get_compute_type(numpy.float32) == getattr(linalg, "COMPUTE_TYPE_TF32", 7)
    except Exception:  # noqa: BLE001 - a CuPy without this switch: float32 stays float32
        return False
