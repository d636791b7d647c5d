"""Central finite differences: the independent check of backpropagation.

Works on any backend, immutable ones included: each parameter is perturbed by adding
eps times a one-hot array built with the Array API, not by writing into it. The loss is
computed by the same forward pass as training (:func:`portable_bp.step.loss_and_backprop`),
with the same dropout masks (``training_step``) and L2 term (``l2``) when asked.
"""

from __future__ import annotations

import math

from . import step
from ._validate import number
from .transforms import regularization


def _norm(xp, a) -> float:
    return float(xp.sqrt(xp.sum(a * a)))


# Fourth-order central differences: f'(0) ≈ Σ c_k f(k h) / h. With h = 1e-4 the
# truncation error (~h^4) and the round-off (~1e-16 / h) both stay near 1e-12, which
# second-order differences (error ~h^2 + 1e-16/h >= 1e-11) cannot reach.
STENCIL = ((2.0, -1 / 12), (1.0, 8 / 12), (-1.0, -8 / 12), (-2.0, 1 / 12))


def _derivative(loss_at, params, l, which, P, e, eps):
    """dL/dθ along the one-hot direction ``e`` of parameter ``which`` of layer ``l``."""
    total = 0.0
    for shift, weight in STENCIL:
        moved = list(params)
        W, b = moved[l]
        moved[l] = (W + shift * e, b) if which == 0 else (W, b + shift * e)
        total += weight * loss_at(moved)
    return total / eps


def numerical_grads(net, X, Z, eps: float = 1e-4, *, l2=None, training_step=None):
    """dL/dθ for every parameter by fourth-order central differences with step ``eps``
    (of the loss with ``l2``'s term, under the dropout masks of ``training_step``)."""
    eps = number(eps, "eps", lo_open=True)
    xp, device = net.xp, net.backend.device
    transforms = regularization(l2)
    with net.backend.activate():
        X = net.features(X)
        ctx = net.step_context(X, net.targets(Z, X.shape[0]), None, training_step)
        params = net.params

        def loss_at(candidate):
            total, _ = step.loss_and_backprop(net.spec, net.ops, candidate, ctx, transforms)  # backprop not run
            return float(total) / X.shape[0]

        grads = []
        for l, pair in enumerate(params):
            out = []
            for which, P in enumerate(pair):
                size = math.prod(P.shape)
                flat_index = xp.reshape(xp.arange(size, device=device), P.shape)
                g = [_derivative(loss_at, params, l, which, P, xp.astype(flat_index == k, P.dtype) * eps, eps)
                     for k in range(size)]
                out.append(xp.reshape(xp.asarray(g, dtype=P.dtype, device=device), P.shape))
            grads.append(tuple(out))
        return grads


def gradcheck(net, X, Z, eps: float = 1e-4, *, l2=None, training_step=None) -> float:
    """Max relative error of ``loss_and_grads`` against central finite differences.

    The check runs on a float64 copy of ``net`` (same backend), whatever its dtype. For each
    parameter array the error is ||g_backprop - g_numeric|| / (||g_backprop|| + ||g_numeric||)
    (0 when both vanish); the largest over all arrays is returned. Below 1e-7 is a pass.
    ``l2`` and ``training_step`` check the regularized loss's gradients: with fit's L2 term
    and with the dropout masks of that training step (fixed while the parameters move).
    """
    eps = number(eps, "eps", lo_open=True)
    net64 = net if net.dtype == "float64" else net.to(dtype="float64")
    xp = net64.xp
    _, analytic = net64.loss_and_grads(X, Z, l2=l2, training_step=training_step)
    numeric = numerical_grads(net64, X, Z, eps, l2=l2, training_step=training_step)
    worst = 0.0
    for pair_a, pair_n in zip(analytic, numeric):
        for a, n in zip(pair_a, pair_n):
            scale = _norm(xp, a) + _norm(xp, n)
            if scale > 0:
                worst = max(worst, _norm(xp, a - n) / scale)
    return worst
