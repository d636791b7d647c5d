"""JaxOps: the reference Ops for JAX's immutable arrays, with two calls made cheap.

Inside a compiled step JAX fuses the reference formulas by itself, so the step's
primitives stay the reference's. Two things are different on JAX:

* ``rows``: a batch cut out at a traced start. The reference gathers the rows by index
  (``take`` over ``arange + start``); XLA on the CPU does that gather row by row, where
  ``lax.dynamic_slice`` copies one contiguous block (on config B it was the difference
  between the scanned epoch and a hand-written ``lax.scan`` loop).
* ``extremes`` and ``finite_or_nan``: the checks fit reads once per epoch (and the input
  checks once per array). Called eagerly, each of their reductions is a separate dispatch
  (tens of microseconds each on a CPU); compiled with ``jax.jit`` each is one call, and
  one program per set of array shapes.
"""

from __future__ import annotations

from ..ops import Ops


class JaxOps(Ops):
    """The reference Ops with ``rows`` as a dynamic slice and the checks compiled."""

    name = "jax"

    def __init__(self, xp, jax):
        super().__init__(xp)
        self._dynamic_slice = jax.lax.dynamic_slice_in_dim
        self._compiled_extremes = jax.jit(super().extremes)
        self._compiled_finite_or_nan = jax.jit(super().finite_or_nan)

    def rows(self, a, start, size):
        return self._dynamic_slice(a, start, size, axis=0)

    def extremes(self, arrays):
        return self._compiled_extremes(list(arrays))

    def finite_or_nan(self, value, arrays):
        return self._compiled_finite_or_nan(value, list(arrays))
