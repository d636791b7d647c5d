"""NumpyOps: the step's primitives written in place with NumPy's ``out=``, and its own BLAS.

NumPy cannot fuse operations the way CuPy's kernels do, but it can write into an array it
already holds (``out=``) instead of allocating the temporaries the Array API path makes,
and it can skip the float copy of a boolean mask that the standard's type rules require.
One trick is specific to NumPy: ``maximum``/``minimum`` against a scalar take a slow loop,
so on large arrays they compare with a cached row of zeros (on tiny ones the broadcast
costs more than it saves). Plain SGD's weight step W −= lr·Δᵀ A is one BLAS gemm through
:mod:`numpy_blas` where NumPy's own OpenBLAS is found, and every product small enough that
OpenBLAS's threads cost more than they share runs on one thread
(:class:`numpy_blas.SerialProducts`). The formulas are those of
``activations.py`` and ``losses.py``, in the same order of operations; the backend's Ops
check compares every method here with the reference before it is used.
"""

from __future__ import annotations

import math

import numpy as np

from .. import counter_rng
from ..activations import LEAKY_SLOPE
from ..ops import InPlaceOps
from . import numpy_blas

ZERO_ROW_SIZE = 4096  # from this many elements on, compare with a cached zero row


class NumpyOps(InPlaceOps):
    """In-place NumPy versions of the primitives the step calls most."""

    name = "numpy"

    def __init__(self, xp, gemm_subtract=None, serial=None):
        super().__init__(xp)
        self._constants: dict = {}
        self._gemm_subtract = gemm_subtract  # NumPy's BLAS gemm, where numpy_blas found it
        # layers of this many weights take plain SGD's step through it (never, without it)
        self._gemm_from = math.inf if gemm_subtract is None else numpy_blas.MIN_WEIGHTS
        self._serial = serial  # numpy_blas.SerialProducts: small products on one BLAS thread
        # a layer's three products (E7, E9, E10) each take rows · W.size multiply-adds (len()
        # is the rows: no shape tuple made); under this many the library keeps a product on
        # one thread itself and NumPy's @ is called
        self._threaded_from = math.inf if serial is None else serial.above
        if gemm_subtract is not None:
            self.name = "numpy+blas"

    def _matmul(self, a, b):
        """a @ b (2-D) on one BLAS thread: a product the library might split (see the
        module docstring). The callers test :meth:`_small` first, inline: on the tiniest
        networks a call per product costs more than the product."""
        return self._serial.matmul(a, b)

    def _constant(self, make, n, dtype):
        """``make(n, dtype=dtype)`` (np.zeros, np.arange), made once per (function, n, dtype)."""
        key = (make, n, dtype)
        value = self._constants.get(key)
        if value is None:
            value = self._constants[key] = make(n, dtype=dtype)
        return value

    def _zero(self, U):
        """0 to compare U with: a cached row of zeros for large U, the scalar for small."""
        return 0.0 if U.size < ZERO_ROW_SIZE else self._constant(np.zeros, U.shape[-1], U.dtype)

    def affine(self, A, W, b):
        """U = A Wᵀ, then U ← U + b in U's own memory."""
        U = A @ W.T if len(A) * W.size < self._threaded_from else self._matmul(A, W.T)
        U += b
        return U

    def affine_activation(self, A, W, b, f):
        """E7 in place: U = A Wᵀ, then U ← f(U + b) in U's own memory."""
        if f.name not in _FORWARD:
            return super().affine_activation(A, W, b, f)
        U = A @ W.T if len(A) * W.size < self._threaded_from else self._matmul(A, W.T)
        U += b
        _FORWARD[f.name](self, U)
        return U

    def backprop_delta(self, D, W, A, f):
        """E9 in place: G = D W, then G ← G ⊙ f'(U) in G's own memory, f' written from A."""
        if f.name not in _BACKWARD:
            return super().backprop_delta(D, W, A, f)
        G = D @ W if len(D) * W.size < self._threaded_from else self._matmul(D, W)
        _BACKWARD[f.name](A, G)
        return G

    def dense_grads(self, g):
        """E10's (Δᵀ A, Σ_rows Δ)."""
        if g.arrays is not None:
            return g.arrays
        D, A = g.delta, g.inputs
        dW = D.T @ A if D.shape[0] * D.shape[1] * A.shape[1] < self._threaded_from else self._matmul(D.T, A)
        return dW, np.add.reduce(D, axis=0)

    def sgd_dense(self, W, b, g, lr):
        """Both E12 steps from one scaled copy of Δ (lr·Δ has fewer elements than Δᵀ A
        whenever the batch is smaller than the layer's input): W −= (lr·Δ)ᵀ A (one gemm
        where NumPy's BLAS is found), b −= Σ_rows lr·Δ."""
        if g.arrays is not None:
            return super().sgd_dense(W, b, g, lr)
        scaled = g.delta  # the step's own temporary, done with once E9 has used it: consumed
        scaled *= lr
        rows = len(scaled)
        if W.size < self._gemm_from:  # small layers: NumPy's product costs less than a ctypes call
            W -= scaled.T @ g.inputs if rows * W.size < self._threaded_from else self._matmul(scaled.T, g.inputs)
        else:
            W = self._gemm_subtract(W, scaled, g.inputs, 1.0)
        b -= scaled[0] if rows == 1 else np.add.reduce(scaled, axis=0)  # one row: itself
        return W, b

    def subtract_product(self, W, D, A, alpha):
        """W ← W − alpha·Dᵀ A as one BLAS gemm (beta = 1): no gradient array, no second pass."""
        if self._gemm_subtract is None:
            return super().subtract_product(W, D, A, alpha)
        return self._gemm_subtract(W, D, A, alpha)

    def output_delta(self, U, A, Z, f, loss, scale):
        """E11 (a - z)·scale with one temporary; class labels enter as a boolean one-hot
        mask (A - True is A - 1.0: no float copy). E8 for the squared error: (a - z)·scale,
        then ⊙ f' in place."""
        fused = loss.fused_output is not None
        if not fused and (loss.name != "mse" or f.name not in _BACKWARD):
            return super().output_delta(U, A, Z, f, loss, scale)
        if fused and Z.ndim == 1:
            Z = Z[:, None] == self._constant(np.arange, A.shape[1], Z.dtype)  # column indices
        D = A - Z
        if not (isinstance(scale, float) and scale == 1.0):  # a one-row batch's 1/m: ×1 is exact, skipped
            D *= scale
        if not fused:
            _BACKWARD[f.name](A, D)
        return D

    def dropout_mask(self, seed, count, layer, first_row, like, rate):
        """E14's mask exactly as the reference draws it (:mod:`counter_rng`), the hash's
        passes written into one int32 buffer (``out=``: no temporary per operation) and the
        comparison straight into the float mask."""
        rows, units = like.shape
        key = counter_rng.stream(np, seed, count, layer)
        h = np.arange(rows, dtype=np.int32)
        h += counter_rng.wrap32(first_row) if isinstance(first_row, int) else counter_rng.as_int32(np, first_row)
        h *= np.int32(units)
        h = np.add(h[:, None], self._constant(np.arange, units, np.int32))
        h *= np.int32(counter_rng.GOLDEN)
        h += key
        _fmix32_in_place(h, np.empty_like(h))
        np.right_shift(h, 32 - counter_rng.BITS, out=h)
        np.bitwise_and(h, (1 << counter_rng.BITS) - 1, out=h)
        mask = np.greater_equal(h, counter_rng.keep_threshold(rate))
        return np.multiply(mask, like.dtype.type(1.0 / (1.0 - rate)), dtype=like.dtype)

    def output_loss(self, U, Z, f, loss, weights=None):
        """Softmax and the summed cross-entropy for class labels as ``losses`` computes them
        (same operations, same order), with exp and the division in place; E2's halved
        squared error as one dot product of the differences."""
        if loss.name == "mse" and weights is None:
            A = self.activation(U, f)
            d = A - Z
            return A, np.vdot(d, d) * 0.5
        if loss.output is None or Z.ndim != 1 or weights is not None:
            return super().output_loss(U, Z, f, loss, weights)
        s = U - np.maximum.reduce(U, axis=-1, keepdims=True)
        rows = self._constant(np.arange, U.shape[0], Z.dtype)
        picked = np.add.reduce(s[rows, Z], axis=None)
        np.exp(s, out=s)
        row_sums = np.add.reduce(s, axis=-1, keepdims=True)
        s /= row_sums
        return s, np.add.reduce(np.log(row_sums), axis=None) - picked


def _fmix32_in_place(h, t):
    """counter_rng.fmix32 written into ``h`` (int32, wrapping), ``t`` a scratch buffer."""
    for shift, multiplier in ((16, counter_rng.C1), (13, counter_rng.C2), (16, None)):
        np.right_shift(h, shift, out=t)
        np.bitwise_and(t, (1 << (32 - shift)) - 1, out=t)
        np.bitwise_xor(h, t, out=h)
        if multiplier is not None:
            h *= np.int32(multiplier)


def _relu(ops, U):
    np.maximum(U, ops._zero(U), out=U)


def _leaky_relu(ops, U):
    np.maximum(U, LEAKY_SLOPE * U, out=U)


def _tanh(ops, U):
    np.tanh(U, out=U)


def _sigmoid(ops, U):
    """exp(min(u, 0)) / (1 + exp(-|u|)), as activations.sigmoid."""
    t = np.abs(U)
    np.negative(t, out=t)
    np.exp(t, out=t)
    t += 1.0
    np.minimum(U, 0.0 if U.size < ZERO_ROW_SIZE else ops._zero(U), out=U)  # ops._zero, inline
    np.exp(U, out=U)
    U /= t


def _identity(ops, U):
    pass


def _relu_backward(A, G):
    np.multiply(G, A > 0, out=G)  # bool mask: 1 or 0, no float copy of it


def _leaky_relu_backward(A, G):
    slope = (A > 0).astype(G.dtype)
    slope *= 1.0 - LEAKY_SLOPE
    slope += LEAKY_SLOPE
    G *= slope


def _sigmoid_backward(A, G):
    t = np.subtract(1.0, A)
    t *= A
    G *= t


def _tanh_backward(A, G):
    t = A * A
    np.subtract(1.0, t, out=t)
    G *= t


def _identity_backward(A, G):
    pass


_FORWARD = {"relu": _relu, "leaky_relu": _leaky_relu, "tanh": _tanh, "sigmoid": _sigmoid,
            "identity": _identity}
_BACKWARD = {"relu": _relu_backward, "leaky_relu": _leaky_relu_backward, "tanh": _tanh_backward,
             "sigmoid": _sigmoid_backward, "identity": _identity_backward}
