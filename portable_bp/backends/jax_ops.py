"""JaxOps: the reference Ops for JAX's immutable arrays, with a few calls made cheap.

Inside a compiled step JAX fuses the reference formulas by itself, so the step's
primitives stay the reference's. Four things are different on JAX:

* ``rows``: a batch cut out at a traced start. The reference gathers the rows by index
  (``take`` over ``arange + start``); XLA on the CPU does that gather row by row, where
  ``lax.dynamic_slice`` copies one contiguous block (on config B it was the difference
  between the scanned epoch and a hand-written ``lax.scan`` loop).
* ``extremes`` and ``finite_or_nan``: the checks fit reads once per epoch (and the input
  checks once per array). Called eagerly, each of their reductions is a separate dispatch
  (tens of microseconds each on a CPU); compiled with ``jax.jit`` each is one call, and
  one program per set of array shapes.
* ``affine`` and ``backprop_delta`` on the tiniest layers (at most ``SMALL_PRODUCT``
  multiply-adds, config A's 3-4-2 at batch 1): A Wᵀ and Δ W as broadcast products summed
  over the shared axis, not matrix products. XLA:CPU keeps a ``dot`` there and, to give
  it the layout it wants, copies Wᵀ out at every step; those copies alone pushed config
  A's scanned epoch past the size under which XLA:CPU compiles a whole small loop into
  one kernel (``xla_cpu_small_while_loop_byte_threshold``, 1 KiB read and written per
  iteration): each step then ran as a dozen separately dispatched pieces, about 5x slower
  (benchmarks/README.md, "Small steps on the CPU"). The backward product Δ W kept a
  ``dot`` and a copy of W per step too. The sum of a handful of products is the same
  arithmetic in another order (float32 rounding apart).
* the sigmoid (``activation``, through which the reference's ``affine_activation`` and
  ``output_loss`` apply f) with one exponential: the reference's exp(min(u, 0)) /
  (1 + exp(-|u|)) computes two, but exp(min(u, 0)) is 1 for u >= 0 and exp(-|u|)
  otherwise, so with e = exp(-|u|) the numerator is a select between 1 and e: the same
  bits. XLA's select is a vector blend; NumPy's and torch's ``where`` on the CPU branch
  per element, which made the reference slower on random signs, so it stays the
  two-exponential form.
"""

from __future__ import annotations

from ..activations import sigmoid
from ..ops import Ops

# multiply-adds of A Wᵀ (rows × outputs × inputs) up to which ``affine`` is a broadcast
# product and a sum: far under any size where a matrix product's blocking pays
SMALL_PRODUCT = 1024


def sigmoid_one_exponential(xp, u):
    """activations.sigmoid's exp(min(u, 0)) / (1 + exp(-|u|)) with the numerator a select
    between 1 and e = exp(-|u|) (exp(min(u, 0)) is one of them): the same bits."""
    e = xp.exp(-xp.abs(u))
    return xp.where(u >= 0.0, 1.0, e) / (1.0 + e)


# the activations JaxOps computes its own way, by the reference function they replace
_FORWARD = {sigmoid: sigmoid_one_exponential}


class JaxOps(Ops):
    """The reference Ops with ``rows`` as a dynamic slice, the checks compiled, the
    tiniest ``affine`` and ``backprop_delta`` without a matrix product and the sigmoid with
    one exponential."""

    name = "jax"

    def __init__(self, xp, jax):
        super().__init__(xp)
        self._dynamic_slice = jax.lax.dynamic_slice_in_dim
        self._compiled_extremes = jax.jit(super().extremes)
        self._compiled_finite_or_nan = jax.jit(super().finite_or_nan)

    def rows(self, a, start, size):
        return self._dynamic_slice(a, start, size, axis=0)

    def affine(self, A, W, b):
        if A.shape[0] * W.shape[0] * W.shape[1] > SMALL_PRODUCT:
            return super().affine(A, W, b)
        return self.xp.sum(A[:, None, :] * W[None, :, :], axis=-1) + b

    def activation(self, U, f):
        """f(U), with JaxOps' own forward function where it has one (``_FORWARD``): the
        reference's ``affine_activation`` and ``output_loss`` apply f through here."""
        forward = _FORWARD.get(f.forward, f.forward)
        return forward(self.xp, U)

    def backprop_delta(self, D, W, A, f):
        if D.shape[0] * W.shape[0] * W.shape[1] > SMALL_PRODUCT:
            return super().backprop_delta(D, W, A, f)
        return f.backward(self.xp, A, self.xp.sum(D[:, :, None] * W[None, :, :], axis=1))

    def extremes(self, arrays):
        return self._compiled_extremes(list(arrays))

    def finite_or_nan(self, value, arrays):
        return self._compiled_finite_or_nan(value, list(arrays))
