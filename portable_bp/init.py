"""Initial weights (E13 and its refinements), drawn on the host and moved by the backend.

The Array API has no random numbers; drawing from one NumPy Generator seeded by ``seed``
gives bit-identical initial weights on every backend. Biases start at zero.
"""

from __future__ import annotations

import math

INITS = ("normal", "xavier", "he")



def init_scale(init: str, n_in: int, n_out: int, sigma: float) -> float:
    """Standard deviation of a layer's weights.

    ``normal``: E13, N(0, σ²) with the given σ. ``xavier``: σ = sqrt(2 / (n_in + n_out))
    (Glorot & Bengio, 2010). ``he``: σ = sqrt(2 / n_in) (He et al., 2015).
    """
    if init == "normal":
        return sigma
    if init == "xavier":
        return math.sqrt(2.0 / (n_in + n_out))
    if init == "he":
        return math.sqrt(2.0 / n_in)
    raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")


def initial_weights(sizes, init: str, sigma: float, rng) -> list:
    """Host float64 weight matrices, W of shape (n_out, n_in): one row per neuron."""
    return [rng.standard_normal((n_out, n_in)) * init_scale(init, n_in, n_out, sigma)
            for n_in, n_out in zip(sizes[:-1], sizes[1:])]
