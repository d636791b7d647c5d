"""Losses (E2 and friends) and the output-layer error term Δ(L) (E8, E11).

Every loss sums over the output units and averages over the m samples of the batch; the
functions here return the sum over the samples (training adds batch sums up on the
device and divides once per epoch), and the callers divide by m. With per-sample weights w
(``sample_weight``) the sum is Σ_i w_i ℓ_i and the callers divide by Σ_i w_i.
Values are computed from the logits u where that is the stable form (log-sum-exp for
cross-entropy, softplus for binary cross-entropy), so no log(0) or overflowing exp occurs.
Targets Z arrive as floats shaped like the output or, for cross-entropy, as integer class
labels of shape (m,): ``fit`` keeps labels as labels, so no (n_samples, n_classes) one-hot
array is ever made; the two helpers below read either form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import array_api_compat

from .activations import Activation, shifted_exp
from .scalars import typed


class Loss(NamedTuple):
    name: str
    total: Callable          # (xp, u, a, z, w=None) -> 0-d array: the loss summed over the samples
    output_delta: Callable   # (xp, u, a, z, activation, scale) -> Δ(L) times scale (1/m: the mean)
    fused_output: str | None = None  # output activation for which Δ(L) = (a - z)/m (E11)
    output: Callable | None = None   # (xp, u, z, w=None) -> (a, total) sharing work, for fused pairs
    default_output: str = "identity"  # the output activation a network gets by default


def weighted_sum(xp, values, w=None):
    """Σ of ``values`` (one row, or one entry, per sample), or Σ_i w_i (Σ of row i) with
    per-sample weights ``w`` (m,)."""
    if w is None:
        return xp.sum(values)
    if values.ndim == 2:
        values = xp.sum(values, axis=1)
    return xp.sum(values * w)


def target_rows(xp, z, a):
    """z as rows shaped like the outputs a: class labels (m,) become one-hot rows, made for
    this batch only."""
    if z.ndim == 2:
        return z
    classes = xp.arange(a.shape[1], dtype=z.dtype, device=array_api_compat.device(a))
    return xp.astype(z[:, None] == classes, a.dtype)


def target_sum(xp, z, s, w=None):
    """Σ_i Σ_k z_ik s_ik (weighted by w_i); for class labels Σ_i s_i,z_i, a gather of one
    entry per row instead of a product with one-hot rows."""
    if z.ndim == 2:
        return weighted_sum(xp, z * s, w)
    rows = xp.arange(s.shape[0], dtype=z.dtype, device=array_api_compat.device(s))
    return weighted_sum(xp, s[rows, z], w)


def mse(xp, u, a, z, w=None):
    """E2, summed over the batch: Σ_i ||a_i - z_i||² / 2 (divide by m for L)."""
    d = a - z
    return weighted_sum(xp, d * d, w) / 2


def mse_delta(xp, u, a, z, activation: Activation, scale):
    """E8: Δ(L) = (1/m) (a - z) ⊙ f'(u), with ``scale`` = 1/m; the factor f' through the
    activation's backward rule."""
    return activation.backward(xp, a, (a - z) * scale)


def log_softmax(xp, u):
    """log softmax(u) row-wise, as u - max - log Σ exp(u - max): finite for any finite u."""
    s, e = shifted_exp(xp, u)
    return s - xp.log(xp.sum(e, axis=-1, keepdims=True))


def cross_entropy(xp, u, a, z, w=None):
    """Σ_i Σ_k -z_ik log softmax(u_i)_k, with z one-hot (or probabilities, or labels); L is
    this / m."""
    return -target_sum(xp, z, log_softmax(xp, u), w)


def softmax_cross_entropy(xp, u, z, w=None):
    """Softmax outputs and the summed cross-entropy in one pass over the logits.

    With s = u - max(u) and S = Σ_k exp(s_k): a = exp(s)/S and, for rows of z summing
    to 1 (one-hot rows, probabilities, or labels), Σ_k -z_k log a_k = log S - Σ_k z_k s_k.
    One exp serves both.
    """
    s, e = shifted_exp(xp, u)
    row_sums = xp.sum(e, axis=-1, keepdims=True)
    return e / row_sums, weighted_sum(xp, xp.log(row_sums), w) - target_sum(xp, z, s, w)


def binary_cross_entropy(xp, u, a, z, w=None):
    """Σ_i Σ_k -[z log a + (1-z) log(1-a)], with a = sigmoid(u), computed as
    softplus(u) - z u = max(u, 0) - z u + log(1 + exp(-|u|)), which never takes log(0)."""
    return weighted_sum(xp, xp.maximum(u, typed(xp, 0.0, u)) - z * u + xp.log1p(xp.exp(-xp.abs(u))), w)


def poisson(xp, u, a, z, w=None):
    """Half the Poisson deviance, Σ_i Σ_k [z log(z/a) - z + a], with a = exp(u) (the log
    link) written as z log z - z u - z + exp(u) (z log z = 0 at z = 0): scikit-learn's
    ``loss="poisson"``. Its gradient in u is a - z, as for the fused pairs (E11)."""
    z_log_z = z * xp.log(xp.where(z > 0, z, xp.ones_like(z)))
    return weighted_sum(xp, z_log_z - z * u - z + a, w)


def fused_output_delta(xp, u, a, z, activation: Activation, scale):
    """E11: for softmax + cross-entropy, sigmoid + binary cross-entropy and exp + Poisson
    the two factors of E8 cancel to Δ(L) = (a - z)/m (``scale`` = 1/m, or w_i/Σw per row):
    cheaper, and stable where f' underflows. Class labels z become one-hot rows for this
    batch."""
    return (a - target_rows(xp, z, a)) * scale


LOSSES: dict[str, Loss] = {
    # regression: an identity output by default (as scikit-learn's MLPRegressor); the
    # derivation's network applies f at the output too: pass output_activation="sigmoid"
    "mse": Loss("mse", mse, mse_delta),
    "cross_entropy": Loss("cross_entropy", cross_entropy, fused_output_delta, fused_output="softmax",
                          output=softmax_cross_entropy, default_output="softmax"),
    "binary_cross_entropy": Loss("binary_cross_entropy", binary_cross_entropy, fused_output_delta,
                                 fused_output="sigmoid", default_output="sigmoid"),
    # counts and rates (z >= 0): an exp output, the log link of a Poisson regression
    "poisson": Loss("poisson", poisson, fused_output_delta, fused_output="exp", default_output="exp"),
}


def get_loss(name: str) -> Loss:
    if not isinstance(name, str):
        raise TypeError(f"loss must be a string, got {type(name).__name__}")
    loss = LOSSES.get(name)
    if loss is None:
        raise ValueError(f"loss must be one of {sorted(LOSSES)}, got {name!r}")
    return loss
