"""Losses (E2 and friends) and the output-layer error term Δ(L) (E8, E11).

Every loss sums over the output units and averages over the m samples of the batch.
Values are computed from the logits u where that is the stable form (log-sum-exp for
cross-entropy, softplus for binary cross-entropy), so no log(0) or overflowing exp occurs.
Targets Z arrive already as floats shaped like the output (labels are one-hot by then).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

from .activations import Activation


class Loss(NamedTuple):
    name: str
    value: Callable          # (xp, u, a, z) -> 0-d array, the batch mean
    output_delta: Callable   # (xp, u, a, z, activation) -> Δ(L), already divided by m
    fused_output: str | None = None  # output activation for which Δ(L) = (a - z)/m (E11)


def mse(xp, u, a, z):
    """E2: L = 1/(2m) Σ_i ||a_i - z_i||²."""
    d = a - z
    return xp.sum(d * d) / (2 * d.shape[0])


def mse_delta(xp, u, a, z, activation: Activation):
    """E8: Δ(L) = (1/m) (a - z) ⊙ f'(u); the factor f' through the activation's backward rule."""
    return activation.backward(xp, u, a, (a - z) / a.shape[0])


def log_softmax(xp, u):
    """log softmax(u) row-wise, as u - max - log Σ exp(u - max): finite for any finite u."""
    s = u - xp.max(u, axis=-1, keepdims=True)
    return s - xp.log(xp.sum(xp.exp(s), axis=-1, keepdims=True))


def cross_entropy(xp, u, a, z):
    """L = -(1/m) Σ_i Σ_k z_ik log softmax(u_i)_k, with z one-hot (or probabilities)."""
    return -xp.sum(z * log_softmax(xp, u)) / u.shape[0]


def binary_cross_entropy(xp, u, a, z):
    """L = -(1/m) Σ_i Σ_k [z log a + (1-z) log(1-a)], with a = sigmoid(u), computed as
    softplus(u) - z u = max(u, 0) - z u + log(1 + exp(-|u|)), which never takes log(0)."""
    return xp.sum(xp.maximum(u, 0.0) - z * u + xp.log1p(xp.exp(-xp.abs(u)))) / u.shape[0]


def fused_output_delta(xp, u, a, z, activation: Activation):
    """E11: for softmax + cross-entropy and sigmoid + binary cross-entropy the two factors
    of E8 cancel to Δ(L) = (a - z)/m: cheaper, and stable where f' underflows."""
    return (a - z) / a.shape[0]


LOSSES: dict[str, Loss] = {
    "mse": Loss("mse", mse, mse_delta),
    "cross_entropy": Loss("cross_entropy", cross_entropy, fused_output_delta, fused_output="softmax"),
    "binary_cross_entropy": Loss("binary_cross_entropy", binary_cross_entropy, fused_output_delta,
                                 fused_output="sigmoid"),
}


def get_loss(name: str) -> Loss:
    if not isinstance(name, str):
        raise TypeError(f"loss must be a string, got {type(name).__name__}")
    loss = LOSSES.get(name)
    if loss is None:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    return loss
