"""Fused element-wise CUDA kernels for the CuPy backend's hot path.

Each kernel does in one pass over device memory what the Array API reference path does in
two to five (each of which reads and writes the whole array). They compute the same
formulas as ``activations.py``, ``losses.py`` and ``optim.py``; the GPU tests check both
paths agree. Kernels compile on first use (CuPy caches them on disk).
"""

from __future__ import annotations

import cupy

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


class FusedOps:
    """The kernels the network and the optimizers use when the backend offers them."""

    activations = frozenset(_FORWARD)

    def __init__(self):
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
        self._classes: dict = {}
        self._sgd = cupy.ElementwiseKernel(
            "T g, T lr", "T p", "p -= lr * g", "pbp_sgd")
        self._momentum = cupy.ElementwiseKernel(
            "T g, T lr, T mu, bool nesterov", "T p, T v",
            "v = mu * v + g; p -= lr * (nesterov ? g + mu * v : v)", "pbp_momentum")

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
            return self._label_delta(A, Z[:, None], self._class_row(A.shape[1], Z.dtype),
                                     A.dtype.type(scale))
        return self._output_delta(A, Z, A.dtype.type(scale))

    def _class_row(self, k, dtype):
        """0 .. k-1 on the current device, cached."""
        key = (k, dtype, cupy.cuda.Device().id)
        row = self._classes.get(key)
        if row is None:
            row = self._classes[key] = cupy.arange(k, dtype=dtype)
        return row

    def sgd(self, P, G, lr):
        """E12 in place: P <- P - lr G."""
        self._sgd(G, P.dtype.type(lr), P)

    def momentum(self, P, G, V, lr, mu, nesterov):
        """SGD with (Nesterov) momentum, both updates in one pass."""
        self._momentum(G, P.dtype.type(lr), P.dtype.type(mu), bool(nesterov), P, V)


def _gemm_subtract(W, D, A):
    """W <- W - Dᵀ A in place: one cuBLAS gemm (alpha = -1, beta = 1), no gradient array."""
    return cupy.cublas.gemm("T", "N", D, A, out=W, alpha=-1.0, beta=1.0)


def subtract_matmul(device):
    """:func:`_gemm_subtract` when it agrees with W - Dᵀ A computed on the host in float64
    (``_base.subtract_matmul_agrees``), else None: the backend then keeps the Array API path.
    The float32 tolerance admits TF32 (``CUPY_TF32=1``, ~1e-3 relative)."""
    from ._base import subtract_matmul_agrees

    try:
        import cupy.cublas  # noqa: F401 - the submodule is not imported by ``import cupy``

        with device:
            ok = subtract_matmul_agrees(_gemm_subtract, cupy.asarray, cupy.asnumpy, float32_tol=2e-2)
    except Exception:  # noqa: BLE001 - no cuBLAS gemm we can call: the plain path is used
        return None
    return _gemm_subtract if ok else None
