"""Ops: the Array API reference of every primitive the training step calls.

The step (:mod:`portable_bp.step`) is written once, as the derivation reads; each line of it
calls one method here. This base class is the reference: plain Array API code, functional
(it returns new arrays and writes into none), so it runs on every namespace, JAX's
immutable arrays included. A backend speeds a primitive up by overriding it in a subclass
(Thinc's ``Ops``/``CupyOps`` pattern): :class:`InPlaceOps` writes into arrays it owns on
libraries whose arrays are mutable, and the NumPy, CuPy and PyTorch subclasses in
:mod:`portable_bp.backends` add kernels and one-call BLAS products. Every override is
compared with this reference when its backend is made (``backends._check``) and dropped if
it disagrees, so a speed-up can never change a result. The step always uses what a method
returns: whether it wrote in place is the Ops' business.

Which arguments an override may write into is part of the contract: the optimizer
primitives (:meth:`Ops.sgd_dense`, :meth:`Ops.subtract_product`,
:meth:`Ops.subtract_colsum`, :meth:`Ops.sgd`, :meth:`Ops.decay`, :meth:`Ops.momentum`,
:meth:`Ops.adam`, :meth:`Ops.rmsprop`) may
update the parameter and slot arrays they are given and may consume the gradient (``G``, or
a DenseGrad's ``delta``: the step's own temporaries, which it reads no more); every other
argument of every primitive is read-only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import array_api_compat

from . import counter_rng
from .activations import Activation
from .losses import Loss

Array = Any  # an array of whatever Array API namespace the Ops was made for

# The primitives, in the order the step uses them; the override check walks this list.
PRIMITIVES = ("rows", "affine", "affine_activation", "dropout_mask", "dropout", "activation", "output_loss",
              "output_delta", "backprop_delta", "dense_grads", "l2_grads", "sgd_dense", "subtract_product",
              "subtract_colsum", "sgd", "decay", "momentum", "adam", "rmsprop", "extremes", "finite_or_nan")


class DenseGrad:
    """E10's gradient of one dense layer, kept as its two factors:
    grad W = deltaᵀ inputs and grad b = Σ over the rows of delta.

    :meth:`Ops.dense_grads` multiplies them out; plain SGD instead hands the factors to
    :meth:`Ops.sgd_dense`, whose weight step a BLAS backend does as one multiply-accumulate
    call, so no weight-gradient array is ever made. A gradient that exists only as arrays
    (summed over processes, say) is made with :meth:`of_arrays`; ``arrays`` is then
    (dW, db) and the factors are None."""

    __slots__ = ("delta", "inputs")
    #: (dW, db) for a gradient made of arrays (:meth:`of_arrays`), else None
    arrays: tuple[Array, Array] | None = None

    def __init__(self, delta: Array, inputs: Array):
        self.delta, self.inputs = delta, inputs

    @classmethod
    def of_arrays(cls, dW: Array, db: Array) -> DenseGrad:
        return _ArrayGrad(dW, db)

    def __repr__(self) -> str:
        if self.arrays is not None:
            return f"DenseGrad(dW{tuple(self.arrays[0].shape)}, db{tuple(self.arrays[1].shape)})"
        return f"DenseGrad(delta{tuple(self.delta.shape)}, inputs{tuple(self.inputs.shape)})"


class _ArrayGrad(DenseGrad):
    """A :class:`DenseGrad` that exists only as arrays (``arrays`` is an instance slot here,
    so that the factor form, made twice per step, sets two attributes, not three)."""

    __slots__ = ("arrays",)

    def __init__(self, dW: Array, db: Array):
        super().__init__(None, None)
        self.arrays = (dW, db)


class Ops:
    """The reference implementation of every step primitive, on the namespace ``xp``."""

    name = "array-api"
    #: relative tolerance the override check allows in float32 for primitives with a matrix
    #: product (reduced-precision products such as TF32 raise it)
    matmul_float32_tolerance = 1e-4

    def __init__(self, xp: Any):
        self.xp = xp
        self.dropped: dict[str, str] = {}  # overrides the check refused: primitive -> why

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def overrides(self) -> list[str]:
        """The primitives this Ops computes its own way (after the check), in step order."""
        return [name for name in PRIMITIVES
                if getattr(getattr(self, name), "__func__", None) is not getattr(Ops, name)]

    # -- the batch ----------------------------------------------------------------------
    def rows(self, a: Array, start: Any, size: int) -> Array:
        """Rows start:start+size of ``a``, where ``start`` may be traced (inside a compiled
        epoch, which serves every batch with one program, slice bounds cannot be constants):
        a gather of those rows. The caller keeps ``0 <= start`` and ``start + size <= len(a)``:
        out of range the result is the library's (JAX's dynamic slice moves the start back,
        a gather raises or fills)."""
        index = self.xp.arange(size, device=array_api_compat.device(a)) + start
        return self.xp.take(a, index, axis=0)

    # -- forward (E7) ------------------------------------------------------------------
    def affine(self, A: Array, W: Array, b: Array) -> Array:
        """E7 before f: U = A Wᵀ + b, with b broadcast over the rows."""
        return A @ W.T + b

    def affine_activation(self, A: Array, W: Array, b: Array, f: Activation) -> Array:
        """E7: f(A Wᵀ + b)."""
        return self.activation(self.affine(A, W, b), f)

    # -- dropout (E14, E15) ------------------------------------------------------------
    def dropout_mask(self, seed: int, count: Any, layer: int, first_row: Any, like: Array, rate: float) -> Array:
        """E14's S(l) = M(l) / (1 − p) for activations shaped, typed and placed like
        ``like``: 1/(1 − rate) where a unit is kept, 0 where dropped, drawn by the
        counter-based generator (:mod:`portable_bp.counter_rng`), so the same (seed, step
        counter, layer, rows) gives the same mask on every backend."""
        xp, device = self.xp, array_api_compat.device(like)
        key = counter_rng.stream(xp, seed, count, layer)
        bits = counter_rng.uniform_bits(xp, key, first_row, tuple(like.shape), device)
        keep = bits >= counter_rng.keep_threshold(rate)
        return xp.astype(keep, like.dtype) * (1.0 / (1.0 - rate))

    def dropout(self, A: Array, S: Array) -> Array:
        """A ⊙ S: E14 on a hidden layer's activations, E15 on its Δ (neither written into:
        the activations before dropout are what f' is written from)."""
        return A * S

    def activation(self, U: Array, f: Activation) -> Array:
        """f(U): E7's f, which ``affine_activation`` and ``output_loss`` apply through here
        (a backend's own f then serves all three), and the output layer's activation when no
        loss is computed (prediction)."""
        return f.forward(self.xp, U)

    # -- loss (E2) and the output delta (E8, E11) ----------------------------------------
    def output_loss(self, U: Array, Z: Array, f: Activation, loss: Loss,
                    weights: Array | None = None) -> tuple[Array, Array]:
        """(A(L), the loss summed over the batch, or Σ_i w_i ℓ_i with per-sample
        ``weights``): softmax + cross-entropy share one exp."""
        if loss.output is not None:
            return loss.output(self.xp, U, Z, weights)
        A = self.activation(U, f)
        return A, loss.total(self.xp, U, A, Z, weights)

    def output_delta(self, U: Array, A: Array, Z: Array, f: Activation, loss: Loss,
                     scale: Any) -> Array:
        """Δ(L) times ``scale``: E8, or E11 for the fused pairs. ``scale`` is 1/m (the batch
        mean), or a column (m, 1) of w_i/Σw for per-sample weights."""
        return loss.output_delta(self.xp, U, A, Z, f, scale)

    # -- backprop (E9) and gradients (E10) -------------------------------------------------
    def backprop_delta(self, D: Array, W: Array, A: Array, f: Activation) -> Array:
        """E9: Δ(l) = (Δ(l+1) W(l+1)) ⊙ f'(U(l)), f' written from A(l) = f(U(l))."""
        return f.backward(self.xp, A, D @ W)

    def dense_grads(self, g: DenseGrad) -> tuple[Array, Array]:
        """E10 multiplied out: (Δᵀ A(l-1), Σ over the rows of Δ)."""
        if g.arrays is not None:
            return g.arrays
        return g.delta.T @ g.inputs, self.xp.sum(g.delta, axis=0)

    def l2_grads(self, g: DenseGrad, W: Array, c: Any) -> tuple[Array, Array]:
        """E16's gradient: (Δᵀ A + c·W, Σ_rows Δ), the product accumulated into c·W (one
        multiply-accumulate where the backend has one) when the gradient is still factors."""
        if g.arrays is not None:
            return g.arrays[0] + c * W, g.arrays[1]
        return self.subtract_product(c * W, g.delta, g.inputs, -1.0), self.xp.sum(g.delta, axis=0)

    # -- updates (E12 and the optimizers) --------------------------------------------------
    def sgd_dense(self, W: Array, b: Array, g: DenseGrad, lr: float) -> tuple[Array, Array]:
        """E12 for one dense layer from E10's factors: (W − lr·Δᵀ A, b − lr·Σ_rows Δ)."""
        if g.arrays is not None:
            return self.sgd(W, g.arrays[0], lr), self.sgd(b, g.arrays[1], lr)
        return self.subtract_product(W, g.delta, g.inputs, lr), self.subtract_colsum(b, g.delta, lr)

    def subtract_product(self, W: Array, D: Array, A: Array, alpha: float) -> Array:
        """W − alpha·Dᵀ A: E12 for a weight matrix from E10's factors (no gradient array
        where the backend has a multiply-accumulate product)."""
        return W - alpha * (D.T @ A)

    def subtract_colsum(self, b: Array, D: Array, alpha: float) -> Array:
        """b − alpha·Σ over the rows of D: E12 for a bias from E10's factor."""
        return b - alpha * self.xp.sum(D, axis=0)

    def sgd(self, P: Array, G: Array, lr: float) -> Array:
        """E12: P − lr·G."""
        return P - lr * G

    def decay(self, P: Array, factor: float) -> Array:
        """P · factor: decoupled weight decay (AdamW's P ← P − lr·λ·P, factor 1 − lr·λ)."""
        return P * factor

    def momentum(self, P: Array, G: Array, V: Array, lr: float, mu: float,
                 nesterov: bool) -> tuple[Array, Array]:
        """SGD with momentum, PyTorch's convention: V ← mu·V + G, then P steps along V, or
        along G + mu·V for Nesterov. Returns (P, V)."""
        V = mu * V + G
        return P - lr * (G + mu * V if nesterov else V), V

    def adam(self, P: Array, G: Array, M: Array, V: Array, step_size: float, eps_hat: float,
             b1: float, b2: float) -> tuple[Array, Array, Array]:
        """Adam's moving averages and step, with the bias corrections folded into
        ``step_size`` and ``eps_hat`` (computed on the host). Returns (P, M, V)."""
        M = b1 * M + (1 - b1) * G
        V = b2 * V + (1 - b2) * (G * G)
        return P - step_size * (M / (self.xp.sqrt(V) + eps_hat)), M, V

    def rmsprop(self, P: Array, G: Array, S: Array, M: Array, B: Array, lr: float, alpha: float, eps: float,
                mu: float, centered: bool) -> tuple[Array, Array, Array, Array]:
        """RMSprop as PyTorch defines it: S ← αS + (1−α)G²; with ``centered`` M ← αM + (1−α)G
        and the denominator √(S − M²) + eps, else √S + eps; with momentum mu,
        B ← mu·B + G/denominator and P ← P − lr·B, else P ← P − lr·G/denominator.
        Returns (P, S, M, B); M and B pass through unchanged when unused."""
        xp = self.xp
        S = alpha * S + (1 - alpha) * (G * G)
        if centered:
            M = alpha * M + (1 - alpha) * G
            denominator = xp.sqrt(S - M * M) + eps
        else:
            denominator = xp.sqrt(S) + eps
        if mu:
            B = mu * B + G / denominator
            return P - lr * B, S, M, B
        return P - lr * (G / denominator), S, M, B

    # -- the epoch's check -------------------------------------------------------------
    def extremes(self, arrays: Sequence[Array]) -> Array:
        """A device scalar: the largest magnitude among every array's largest and smallest
        element (0 when all are empty). It is finite exactly when every element of every
        array is (max and min propagate NaN; an inf is itself a max or a min), needs no
        temporary the size of the data, and unlike a sum cannot overflow for finite values:
        what fit reads once per epoch to know the parameters stayed finite, and what the
        input checks read to refuse NaN or inf."""
        xp = self.xp
        ends = [e for a in arrays if math.prod(a.shape) for e in (xp.max(a), xp.min(a))]
        if ends:
            return xp.max(xp.abs(xp.stack(ends)))
        return xp.zeros((), device=array_api_compat.device(arrays[0]) if arrays else None)

    def finite_or_nan(self, value: Array, arrays: Sequence[Array]) -> Array:
        """``value`` (a device scalar), made NaN when any element of ``arrays`` is not
        finite (0 · inf is NaN): fit's one read per epoch then says both the loss and
        whether the parameters and optimizer state stayed finite."""
        arrays = [a for a in arrays if math.prod(a.shape)]  # shapes are static, traced or not
        return value + 0.0 * self.extremes(arrays) if arrays else value


class InPlaceOps(Ops):
    """The same formulas written into arrays the step owns (fresh products, parameters and
    optimizer slots), for libraries whose arrays are mutable: NumPy, CuPy, PyTorch and
    array-api-strict. Fewer temporaries, and parameters keep their buffers."""

    name = "array-api-inplace"

    def affine(self, A, W, b):
        U = A @ W.T
        U += b
        return U

    def subtract_product(self, W, D, A, alpha):
        step = D.T @ A
        step *= alpha
        W -= step
        return W

    def subtract_colsum(self, b, D, alpha):
        step = self.xp.sum(D, axis=0)
        step *= alpha
        b -= step
        return b

    def sgd(self, P, G, lr):
        G *= lr
        P -= G
        return P

    def decay(self, P, factor):
        P *= factor
        return P

    def rmsprop(self, P, G, S, M, B, lr, alpha, eps, mu, centered):
        S *= alpha
        S += (1 - alpha) * (G * G)
        if centered:
            M *= alpha
            M += (1 - alpha) * G
            denominator = self.xp.sqrt(S - M * M)
        else:
            denominator = self.xp.sqrt(S)
        denominator += eps
        if mu:
            B *= mu
            B += G / denominator
            P -= lr * B
        else:
            G /= denominator
            G *= lr
            P -= G
        return P, S, M, B

    def momentum(self, P, G, V, lr, mu, nesterov):
        V *= mu
        V += G
        if nesterov:
            G += mu * V
            G *= lr
            P -= G
        else:
            P -= lr * V
        return P, V

    def adam(self, P, G, M, V, step_size, eps_hat, b1, b2):
        M *= b1
        M += (1 - b1) * G
        G *= G
        G *= 1 - b2
        V *= b2
        V += G
        step = self.xp.sqrt(V)
        step += eps_hat
        step = M / step
        step *= step_size
        P -= step
        return P, M, V
