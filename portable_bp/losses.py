"""Losses (E2 and friends) and the output-layer error term Δ(L) (E8, E11).

Every loss sums over the output units and averages over the m samples of the batch; the
functions here return the sum over the samples (training adds batch sums up on the
device and divides once per epoch), and the callers divide by m.
Values are computed from the logits u where that is the stable form (log-sum-exp for
cross-entropy, softplus for binary cross-entropy), so no log(0) or overflowing exp occurs.
Targets Z arrive as floats shaped like the output or, for cross-entropy, as integer class
labels of shape (m,): ``fit`` keeps labels as labels, so no (n_samples, n_classes) one-hot
array is ever made; the two helpers below read either form.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import array_api_compat

from .activations import Activation, shifted_exp


class Loss(NamedTuple):
    name: str
    total: Callable          # (xp, u, a, z) -> 0-d array: the loss summed over the m samples
    output_delta: Callable   # (xp, u, a, z, activation, scale) -> Δ(L) times scale (1/m: the mean)
    fused_output: str | None = None  # output activation for which Δ(L) = (a - z)/m (E11)
    output: Callable | None = None   # (xp, u, z) -> (a, total) sharing work, for fused pairs
    default_output: str = "identity"  # the output activation a network gets by default


def target_rows(xp, z, a):
    """z as rows shaped like the outputs a: class labels (m,) become one-hot rows, made for
    this batch only."""
    if z.ndim == 2:
        return z
    classes = xp.arange(a.shape[1], dtype=z.dtype, device=array_api_compat.device(a))
    return xp.astype(z[:, None] == classes, a.dtype)


def target_sum(xp, z, s):
    """Σ_i Σ_k z_ik s_ik; for class labels Σ_i s_i,z_i, a gather of one entry per row
    instead of a product with one-hot rows."""
    if z.ndim == 2:
        return xp.sum(z * s)
    rows = xp.arange(s.shape[0], dtype=z.dtype, device=array_api_compat.device(s))
    return xp.sum(s[rows, z])


def mse(xp, u, a, z):
    """E2, summed over the batch: Σ_i ||a_i - z_i||² / 2 (divide by m for L)."""
    d = a - z
    return xp.sum(d * d) / 2


def mse_delta(xp, u, a, z, activation: Activation, scale):
    """E8: Δ(L) = (1/m) (a - z) ⊙ f'(u), with ``scale`` = 1/m; the factor f' through the
    activation's backward rule."""
    return activation.backward(xp, a, (a - z) * scale)


def log_softmax(xp, u):
    """log softmax(u) row-wise, as u - max - log Σ exp(u - max): finite for any finite u."""
    s, e = shifted_exp(xp, u)
    return s - xp.log(xp.sum(e, axis=-1, keepdims=True))


def cross_entropy(xp, u, a, z):
    """Σ_i Σ_k -z_ik log softmax(u_i)_k, with z one-hot (or probabilities, or labels); L is
    this / m."""
    return -target_sum(xp, z, log_softmax(xp, u))


def softmax_cross_entropy(xp, u, z):
    """Softmax outputs and the summed cross-entropy in one pass over the logits.

    With s = u - max(u) and S = Σ_k exp(s_k): a = exp(s)/S and, for rows of z summing
    to 1 (one-hot rows, probabilities, or labels), Σ_k -z_k log a_k = log S - Σ_k z_k s_k.
    One exp serves both.
    """
    s, e = shifted_exp(xp, u)
    row_sums = xp.sum(e, axis=-1, keepdims=True)
    return e / row_sums, xp.sum(xp.log(row_sums)) - target_sum(xp, z, s)


def binary_cross_entropy(xp, u, a, z):
    """Σ_i Σ_k -[z log a + (1-z) log(1-a)], with a = sigmoid(u), computed as
    softplus(u) - z u = max(u, 0) - z u + log(1 + exp(-|u|)), which never takes log(0)."""
    return xp.sum(xp.maximum(u, 0.0) - z * u + xp.log1p(xp.exp(-xp.abs(u))))


def fused_output_delta(xp, u, a, z, activation: Activation, scale):
    """E11: for softmax + cross-entropy and sigmoid + binary cross-entropy the two factors
    of E8 cancel to Δ(L) = (a - z)/m (``scale`` = 1/m): cheaper, and stable where f'
    underflows. Class labels z become one-hot rows for this batch."""
    return (a - target_rows(xp, z, a)) * scale


LOSSES: dict[str, Loss] = {
    # regression: an identity output by default (as scikit-learn's MLPRegressor); the
    # derivation's network applies f at the output too: pass output_activation="sigmoid"
    "mse": Loss("mse", mse, mse_delta),
    "cross_entropy": Loss("cross_entropy", cross_entropy, fused_output_delta, fused_output="softmax",
                          output=softmax_cross_entropy, default_output="softmax"),
    "binary_cross_entropy": Loss("binary_cross_entropy", binary_cross_entropy, fused_output_delta,
                                 fused_output="sigmoid", default_output="sigmoid"),
}


def get_loss(name: str) -> Loss:
    if not isinstance(name, str):
        raise TypeError(f"loss must be a string, got {type(name).__name__}")
    loss = LOSSES.get(name)
    if loss is None:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    return loss
