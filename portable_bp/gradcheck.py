"""Central finite differences: the independent check of backpropagation.

Works on any backend, immutable ones included: each parameter is perturbed by adding
eps times a one-hot array built with the Array API, not by writing into it.
"""

from __future__ import annotations

import math


def _norm(xp, a) -> float:
    return float(xp.sqrt(xp.sum(a * a)))


# Fourth-order central differences: f'(0) ≈ Σ c_k f(k h) / h. With h = 1e-4 the
# truncation error (~h^4) and the round-off (~1e-16 / h) both stay near 1e-12, which
# second-order differences (error ~h^2 + 1e-16/h >= 1e-11) cannot reach.
STENCIL = ((2.0, -1 / 12), (1.0, 8 / 12), (-1.0, -8 / 12), (-2.0, 1 / 12))


def numerical_grads(net, X, Z, eps: float = 1e-4):
    """dL/dθ for every parameter by fourth-order central differences with step ``eps``."""
    xp = net.xp
    with net.backend.activate():
        X = net._features(X)
        Z = net._targets(Z, X.shape[0])

        def loss_at(Ws, bs):
            saved = net._W, net._b
            net._W, net._b = Ws, bs
            try:
                return float(net._forward(X, Z)[2]) / X.shape[0]
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
                    total = 0.0
                    for shift, weight in STENCIL:
                        Ws, bs = list(net._W), list(net._b)
                        (Ws if which == "W" else bs)[l] = P + shift * e
                        total += weight * loss_at(Ws, bs)
                    g.append(total / eps)
                pair.append(xp.reshape(xp.asarray(g, dtype=P.dtype, device=net.backend.device), P.shape))
            grads.append(tuple(pair))
        return grads


def gradcheck(net, X, Z, eps: float = 1e-4) -> float:
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
