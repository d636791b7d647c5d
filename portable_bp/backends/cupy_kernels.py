"""Fused element-wise CUDA kernels for the CuPy backend's hot path.

Each kernel does in one pass over device memory what the Array API reference path does in
two to five (each of which reads and writes the whole array). They compute the same
formulas as ``activations.py``, ``losses.py`` and ``optim.py``; the GPU tests check both
paths agree. Kernels compile on first use (CuPy caches them on disk).
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

# f(u) and f'(u) written from a = f(u), as in activations.py; T is the array's type
_FORWARD = {
    "sigmoid": "a = exp(u < (T)0 ? u : (T)0) / ((T)1 + exp(-fabs(u)))",
    "tanh": "a = tanh(u)",
    "relu": "a = u > (T)0 ? u : (T)0",
    "leaky_relu": "a = u > (T)0 ? u : (T)0.01 * u",
    "identity": "a = u",
}
_DERIVATIVE = {
    "sigmoid": "a * ((T)1 - a)",
    "tanh": "(T)1 - a * a",
    "relu": "(a > (T)0 ? (T)1 : (T)0)",
    "leaky_relu": "(a > (T)0 ? (T)1 : (T)0.01)",
    "identity": "(T)1",
}


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


class FusedOps:
    """The kernels the network and the optimizers use when the backend offers them.

    ``device``: the GPU on which the softmax + cross-entropy kernel is checked once against
    a float64 host computation (it is switched off, leaving the Array API path, if it does
    not compile or does not agree)."""

    activations = frozenset(_FORWARD)

    def __init__(self, device=None):
        self._bias_act = {
            name: cupy.ElementwiseKernel("T b", "T a", "T u = a + b; " + body, f"pbp_bias_{name}")
            for name, body in _FORWARD.items()}
        self._act_backward = {
            name: cupy.ElementwiseKernel("T a", "T g", f"g = g * ({d})", f"pbp_backward_{name}")
            for name, d in _DERIVATIVE.items()}
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
        if device is not None:
            with device:
                if not _softmax_ce_agrees(self):
                    self.softmax_cross_entropy = None

    def softmax_cross_entropy(self, U, y):
        """Softmax outputs and the summed cross-entropy for class labels ``y`` (m,) in one
        kernel launch (plus the sum of the row losses): (A, total), or None where the kernel
        does not apply (a layout or dtype it was not written for)."""
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
        return self._bias_act[name](b, U)

    def activation_backward(self, A, G, name):
        """E9's ⊙ f'(U) in place: G <- G ⊙ f'(U), with f' written from A."""
        return self._act_backward[name](A, G)

    def output_delta(self, A, Z, scale):
        """E11: Δ(L) = (A - Z) * scale (1/m, or lr/m) in one pass; Z one-hot rows or class
        labels (m,), compared with each column index in the same pass."""
        if Z.ndim == 1:
            return self._label_delta(A, Z[:, None], _constant(cupy.arange, A.shape[1], Z.dtype),
                                     A.dtype.type(scale))
        return self._output_delta(A, Z, A.dtype.type(scale))

    def sgd(self, P, G, lr):
        """E12 in place: P <- P - lr G."""
        self._sgd(G, P.dtype.type(lr), P)

    def momentum(self, P, G, V, lr, mu, nesterov):
        """SGD with (Nesterov) momentum, both updates in one pass."""
        self._momentum(G, P.dtype.type(lr), P.dtype.type(mu), bool(nesterov), P, V)


def _softmax_ce_agrees(ops) -> bool:
    """The softmax + cross-entropy kernel against float64 NumPy on rows that exercise it:
    one and several thread-block strides (k = 3, 300), both dtypes, logits of scale 2 (so
    that every thread's part of the row sum matters: at scale 30 a row's softmax is nearly
    one-hot and a lost partial sum would pass), one row at scale 30 and one shifted by 500."""
    try:
        rng = numpy.random.default_rng(0)
        for dtype, tol in ((numpy.float32, 1e-5), (numpy.float64, 1e-12)):
            for m, k in ((5, 3), (7, 300)):
                u = rng.standard_normal((m, k)) * 2
                u[0, :] += 500.0
                u[1, :] *= 15
                u = u.astype(dtype).astype(numpy.float64)  # the reference sees the same inputs
                y = rng.integers(0, k, m)
                s = u - u.max(axis=1, keepdims=True)
                e = numpy.exp(s)
                want_a = e / e.sum(axis=1, keepdims=True)
                want_total = numpy.sum(numpy.log(e.sum(axis=1))) - s[numpy.arange(m), y].sum()
                A, total = ops.softmax_cross_entropy(cupy.asarray(u, dtype=dtype), cupy.asarray(y))
                if not (numpy.allclose(cupy.asnumpy(A), want_a, rtol=tol, atol=tol)
                        and abs(float(total) - want_total) <= tol * max(1.0, abs(want_total))):
                    return False
        return True
    except Exception:  # noqa: BLE001 - does not compile or launch here: the plain path is used
        return False


def subtract_colsum(device):
    """b <- b - Σ_rows D in place as one cuBLAS gemv (Dᵀ times a cached vector of ones,
    alpha = -1, beta = 1) instead of a sum and a subtraction, when it agrees with the host
    computation (``_base.subtract_colsum_agrees``); else None."""
    from ._base import subtract_colsum_agrees

    return _if_it_agrees(_gemv_subtract, subtract_colsum_agrees, device)


def _gemv_subtract(b, D):
    """b <- b - Σ_rows D in place: one cuBLAS gemv, Dᵀ times a cached vector of ones."""
    if not (D.ndim == 2 and D.flags.c_contiguous and b.flags.c_contiguous):
        b -= D.sum(axis=0)  # a layout the gemv was not checked with
        return b
    ones = _constant(cupy.ones, D.shape[0], D.dtype)
    cupy.cublas.gemv("T", -1.0, D, ones, 1.0, b)  # (transa, alpha, a, x, beta, y)
    return b


def _if_it_agrees(op, agrees, device, **kwargs):
    """``op`` when ``agrees(op, ...)`` (a ``_base`` self-check against a host computation)
    passes on ``device``, else None: the backend then keeps the Array API path. cuBLAS
    calls that cannot be made count as disagreeing."""
    try:
        import cupy.cublas  # noqa: F401 - the submodule is not imported by ``import cupy``

        with device:
            ok = agrees(op, cupy.asarray, cupy.asnumpy, **kwargs)
    except Exception:  # noqa: BLE001 - no cuBLAS we can call: the plain path is used
        return None
    return op if ok else None


def _gemm_subtract(W, D, A):
    """W <- W - Dᵀ A in place: one cuBLAS gemm (alpha = -1, beta = 1), no gradient array."""
    return cupy.cublas.gemm("T", "N", D, A, out=W, alpha=-1.0, beta=1.0)


def subtract_matmul(device):
    """:func:`_gemm_subtract` when it agrees with W - Dᵀ A computed on the host in float64
    (``_base.subtract_matmul_agrees``), else None: the backend then keeps the Array API path.
    The float32 tolerance admits TF32 (``CUPY_TF32=1``, ~1e-3 relative)."""
    from ._base import subtract_matmul_agrees

    return _if_it_agrees(_gemm_subtract, subtract_matmul_agrees, device, float32_tol=2e-2)
