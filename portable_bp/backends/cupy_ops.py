"""CupyOps: the step's primitives on CUDA kernels and cuBLAS (``cupy_kernels``).

Each method maps one primitive onto a kernel: bias + activation (E7) and activation′ ⊙ Δ
(E9) as one pass each, softmax + cross-entropy for class labels as one kernel, the E11
output delta in one pass, the SGD and momentum updates in one pass, and plain SGD's steps
as one cuBLAS gemm (W −= lr·Dᵀ A, no gradient array) and one gemv (b −= lr·Σ_rows D). Where a
kernel does not apply (an activation or layout it was not written for) the in-place Array
API primitive serves. Every matrix product goes through ``matmul`` (CuPy's own, or cuBLAS
called directly for a step captured as a CUDA graph, where CuPy refuses its own). The
kernels and products are handed in, so this mapping is tested on any machine with
stand-ins; the backend's Ops check compares every method with the reference on the GPU
before it is used.
"""

from __future__ import annotations

import operator

from ..ops import InPlaceOps

TF32_TOLERANCE = 2e-2  # TF32 products round to ~1e-3 relative; a wrong layout is off by O(1)


class CupyOps(InPlaceOps):
    """In-place primitives on ``kernels`` (a ``cupy_kernels.Kernels``), products through
    ``matmul(A, B)`` (default: CuPy's), and cuBLAS calls ``gemm_subtract(W, D, A, alpha)``
    and ``gemv_subtract(b, D, alpha)`` (None where a layout does not suit it)."""

    name = "cupy"

    def __init__(self, xp, kernels, gemm_subtract, gemv_subtract, tf32=False, matmul=None):
        super().__init__(xp)
        self._kernels, self._gemm, self._gemv = kernels, gemm_subtract, gemv_subtract
        self._matmul = matmul or operator.matmul
        if tf32:
            self.matmul_float32_tolerance = TF32_TOLERANCE

    def affine(self, A, W, b):
        U = self._matmul(A, W.T)
        U += b
        return U

    def affine_activation(self, A, W, b, f):
        if f.name not in self._kernels.activations:
            return super().affine_activation(A, W, b, f)
        return self._kernels.bias_activation(self._matmul(A, W.T), b, f.name)

    def backprop_delta(self, D, W, A, f):
        if f.name not in self._kernels.activations:
            return f.backward(self.xp, A, self._matmul(D, W))
        return self._kernels.activation_backward(A, self._matmul(D, W), f.name)

    def dense_grads(self, g):
        if g.arrays is not None:
            return g.arrays
        return self._matmul(g.delta.T, g.inputs), self.xp.sum(g.delta, axis=0)

    def output_loss(self, U, Z, f, loss, weights=None):
        if loss.output is not None and Z.ndim == 1 and weights is None:
            pair = self._kernels.softmax_cross_entropy(U, Z)
            if pair is not None:
                return pair
        return super().output_loss(U, Z, f, loss, weights)

    def output_delta(self, U, A, Z, f, loss, scale):
        if loss.fused_output is None or not isinstance(scale, float):  # per-row weights: Array API
            return super().output_delta(U, A, Z, f, loss, scale)
        return self._kernels.output_delta(A, Z, scale)

    def subtract_product(self, W, D, A, alpha):
        return self._gemm(W, D, A, alpha)

    def subtract_colsum(self, b, D, alpha):
        out = self._gemv(b, D, alpha)
        return super().subtract_colsum(b, D, alpha) if out is None else out

    def sgd(self, P, G, lr):
        return self._kernels.sgd(P, G, lr)

    def momentum(self, P, G, V, lr, mu, nesterov):
        return self._kernels.momentum(P, G, V, lr, mu, nesterov)
