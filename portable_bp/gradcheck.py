"""Central finite differences: the independent check of backpropagation.

Works on any backend, immutable ones included: each parameter is perturbed by adding
eps times a one-hot array built with the Array API, not by writing into it.
"""

from __future__ import annotations

import math


def _norm(xp, a) -> float:
    return float(xp.sqrt(xp.sum(a * a)))


def numerical_grads(net, X, Z, eps: float = 1e-6):
    """dL/dθ for every parameter by (L(θ + eps e) - L(θ - eps e)) / (2 eps)."""
    xp = net.xp
    with net.backend.activate():
        X = net._features(X)
        Z = net._targets(Z, X.shape[0])

        def loss_at(Ws, bs):
            saved = net._W, net._b
            net._W, net._b = Ws, bs
            try:
                Us, As = net._forward(X)
                return float(net._loss_value(Us, As, Z))
            finally:
                net._W, net._b = saved

        grads = []
        for l in range(net.n_layers):
            pair = []
            for which in ("W", "b"):
                P = (net._W if which == "W" else net._b)[l]
                size = math.prod(P.shape)
                flat_index = xp.reshape(xp.arange(size, device=net.backend.device), P.shape)
                g = []
                for k in range(size):
                    e = xp.astype(flat_index == k, P.dtype) * eps
                    values = []
                    for sign in (1.0, -1.0):
                        Ws, bs = list(net._W), list(net._b)
                        (Ws if which == "W" else bs)[l] = P + sign * e
                        values.append(loss_at(Ws, bs))
                    g.append((values[0] - values[1]) / (2 * eps))
                pair.append(xp.reshape(xp.asarray(g, dtype=P.dtype, device=net.backend.device), P.shape))
            grads.append(tuple(pair))
        return grads


def gradcheck(net, X, Z, eps: float = 1e-6) -> float:
    """Max relative error of ``loss_and_grads`` against central finite differences.

    The check runs on a float64 copy of ``net`` (same backend), whatever its dtype. For each
    parameter array the error is ||g_backprop - g_numeric|| / (||g_backprop|| + ||g_numeric||)
    (0 when both vanish); the largest over all arrays is returned. Below 1e-7 is a pass.
    """
    net64 = net if net.dtype == "float64" else net.to(dtype="float64")
    xp = net64.xp
    _, analytic = net64.loss_and_grads(X, Z)
    numeric = numerical_grads(net64, X, Z, eps)
    worst = 0.0
    for pair_a, pair_n in zip(analytic, numeric):
        for a, n in zip(pair_a, pair_n):
            scale = _norm(xp, a) + _norm(xp, n)
            if scale > 0:
                worst = max(worst, _norm(xp, a - n) / scale)
    return worst
