"""The derivation's 3-4-2 example, computed by the library and checked by hand.

``portable-bp explain`` and ``examples/seed_network.py`` print the forward values, error
terms and gradients of the derivation's sigmoid network for one sample, as portable_bp
computes them, and compare each with the element-wise formulas E1, E3 and E5 evaluated by
plain Python loops over nested lists (:func:`seed_network_by_loops`): an independent check
that the matrix code is the derivation.

Host-side module: it prints, so it reads arrays back with NumPy.
"""

from __future__ import annotations

import math

import numpy as np

from . import step
from .network import Network

#: the largest |library - loops| difference accepted (float64)
EXPLAIN_TOLERANCE = 1e-12


def _sigmoid(u):
    return 1.0 / (1.0 + math.exp(-u))


def seed_network_by_loops(W1, b1, W2, b2, x, z, s=None, alpha=0.0):
    """The 3-4-2 network of the derivation for one sample, with plain Python loops over
    nested lists: E1 forward, E2 loss, E3 output-layer and E5 hidden-layer gradients; with
    a dropout mask ``s`` on the hidden layer (E14: y_i s_i goes up, E15: s_i comes down)
    and L2 ``alpha`` (E16: ½α Σ W² added to L, α W to each weight gradient).

    Independent of the library's matrix code; returns a dict of nested lists.
    """
    n_in, n_hid, n_out = len(x), len(b1), len(b2)
    s = [1.0] * n_hid if s is None else list(s)
    u1 = [sum(W1[i][j] * x[j] for j in range(n_in)) + b1[i] for i in range(n_hid)]
    y = [_sigmoid(u) for u in u1]
    yd = [y[i] * s[i] for i in range(n_hid)]                # E14: what the output layer sees
    u2 = [sum(W2[k][i] * yd[i] for i in range(n_hid)) + b2[k] for k in range(n_out)]
    h = [_sigmoid(u) for u in u2]
    squares = sum(w * w for W in (W1, W2) for row in W for w in row)
    loss = 0.5 * sum((h[k] - z[k]) ** 2 for k in range(n_out)) + 0.5 * alpha * squares
    fp1 = [_sigmoid(u) * (1.0 - _sigmoid(u)) for u in u1]   # f'(u(1)_i)
    fp2 = [_sigmoid(u) * (1.0 - _sigmoid(u)) for u in u2]   # f'(u(2)_k)
    # E3: dL/dW(2)_ij = (f(u(2)_i) - z_i) f'(u(2)_i) y_j ; dL/db(2)_i likewise without y_j
    dW2 = [[(h[i] - z[i]) * fp2[i] * yd[j] + alpha * W2[i][j] for j in range(n_hid)] for i in range(n_out)]
    db2 = [(h[i] - z[i]) * fp2[i] for i in range(n_out)]
    # E5: dL/dW(1)_ij = sum_k (f(u(2)_k) - z_k) f'(u(2)_k) W(2)_ki f'(u(1)_i) x_j
    db1 = [sum((h[k] - z[k]) * fp2[k] * W2[k][i] * s[i] * fp1[i] for k in range(n_out))
           for i in range(n_hid)]
    dW1 = [[sum((h[k] - z[k]) * fp2[k] * W2[k][i] * s[i] * fp1[i] * x[j] for k in range(n_out))
            + alpha * W1[i][j] for j in range(n_in)] for i in range(n_hid)]
    return {"u1": u1, "y": y, "u2": u2, "h": h, "loss": loss, "delta2": db2, "delta1": db1,
            "dW2": dW2, "db2": db2, "dW1": dW1, "db1": db1}


def seed_network(backend="numpy", seed=0, sigma=0.5):
    """The derivation's 3-4-2 sigmoid/MSE network on ``backend`` in float64, one sample.

    Weights and biases are drawn from N(0, sigma²) (E13) with ``seed``; so are the input x,
    and the label z is drawn uniformly from [0, 1]². Returns ``(net, x, z)`` on the host.
    """
    net = Network([3, 4, 2], activation="sigmoid", output_activation="sigmoid", loss="mse",
                  backend=backend, dtype="float64", seed=seed, init="normal", sigma=sigma)
    rng = np.random.default_rng([seed, 342])
    params = [(net.backend.to_numpy(W), rng.normal(0.0, sigma, size=n)) for (W, _), n in
              zip(net.params, net.sizes[1:])]
    net.set_params(params)
    x = rng.normal(0.0, 1.0, size=3)
    z = rng.uniform(0.0, 1.0, size=2)
    return net, x, z


def explain_seed_network(backend="numpy", seed=0, out=print):
    """Print the 3-4-2 network's forward values, error terms and gradients as the library
    computes them, check each against :func:`seed_network_by_loops`; return the max difference."""
    net, x, z = seed_network(backend, seed)
    be = net.backend
    to_host = lambda a: np.asarray(be.to_numpy(a), dtype=np.float64)  # noqa: E731
    (W1, b1), (W2, b2) = [(to_host(W), to_host(b)) for W, b in net.params]
    with be.activate():  # the library's own forward pass (E7): A(0) = x, A(1) = y, U(2)
        X = net.features(x[None, :])
        fwd = step.forward(net.spec, net.ops, net.params, X)
        As, u2 = fwd.inputs, fwd.U
        u1 = net.ops.affine(X, *net.params[0])  # U(1), which the forward pass applies f to
        h = net.ops.activation(u2, net.spec.output)
    loss, grads = net.loss_and_grads(x[None, :], z[None, :])
    (dW1, db1), (dW2, db2) = [(to_host(dW), to_host(db)) for dW, db in grads]
    lib = {"u1": to_host(u1)[0], "y": to_host(As[1])[0], "u2": to_host(u2)[0],
           "h": to_host(h)[0], "loss": loss,
           # E10 with one sample: dL/db(l) = δ(l), so the bias gradients are the error terms
           "delta2": db2, "delta1": db1, "dW2": dW2, "db2": db2, "dW1": dW1, "db1": db1}
    ref = seed_network_by_loops(W1.tolist(), b1.tolist(), W2.tolist(), b2.tolist(), x.tolist(), z.tolist())

    def show(label, value):
        text = np.array2string(np.asarray(value), precision=6, suppress_small=False,
                               floatmode="fixed", sign=" ")
        pad = " " * (len(label) + 5)
        out(f"  {label} = " + text.replace("\n", "\n" + pad))

    out("The derivation's 3-4-2 network: sigmoid f, loss L = 1/2 ||h - z||^2 (E2), one sample,")
    out(f"float64 on {be.spec}; W, b ~ N(0, 0.5^2) (E13), x ~ N(0, 1), z ~ U(0, 1), seed {seed}.")
    out("Parameters (each row of W is one neuron's weights):")
    for label, value in (("W(1) (4x3)", W1), ("b(1)", b1), ("W(2) (2x4)", W2), ("b(2)", b2)):
        show(label, value)
    out("Sample:")
    show("x", x)
    show("z", z)
    out("Forward (E1), as the library computes it:")
    show("u(1) = W(1) x + b(1)", lib["u1"])
    show("y = f(u(1))", lib["y"])
    show("u(2) = W(2) y + b(2)", lib["u2"])
    show("h = f(u(2))", lib["h"])
    out(f"  L = {lib['loss']:.10f}")
    out("Error terms δ(l) = dL/du(l):")
    show("δ(2) = (h - z) ⊙ f'(u(2))  (E8)", lib["delta2"])
    show("δ(1) = W(2)^T δ(2) ⊙ f'(u(1))  (E9)", lib["delta1"])
    out("Gradients (E4/E6 = E10):")
    show("dL/dW(2) = δ(2) y^T (2x4)", dW2)
    show("dL/db(2) = δ(2)", db2)
    show("dL/dW(1) = δ(1) x^T (4x3)", dW1)
    show("dL/db(1) = δ(1)", db1)
    worst = 0.0
    for key in ref:
        diff = np.max(np.abs(np.asarray(lib[key], dtype=np.float64) - np.asarray(ref[key])))
        worst = max(worst, float(diff))
    verdict = "OK" if worst <= EXPLAIN_TOLERANCE else "MISMATCH"
    out("Check: the same quantities by the element-wise formulas E1, E3 and E5, with Python loops:")
    out(f"  max |library - loops| over u, y, h, L, δ, dW, db = {worst:.3e} "
        f"(tolerance {EXPLAIN_TOLERANCE:g}): {verdict}")
    return max(worst, explain_regularized(net, x, z, show, out))


def explain_regularized(net, x, z, show, out, rate=0.5, alpha=0.1) -> float:
    """The same sample through the same weights with dropout ``rate`` on the hidden layer
    (the mask of training step 0) and L2 ``alpha``: the library's loss and gradients against
    the loops with that mask; returns the max difference."""
    be = net.backend
    cfg = {k: v for k, v in net.config().items() if k not in ("sizes", "dropout")}
    dropped = Network(net.sizes, backend=be, params=net.params, dropout=rate, **cfg)
    like = be.xp.zeros((1, net.sizes[1]), dtype=net.array_dtype, device=be.device)
    s = be.to_numpy(dropped.ops.dropout_mask(dropped.seed, 0, 0, 0, like, rate))[0]
    loss, grads = dropped.loss_and_grads(x[None, :], z[None, :], l2=alpha, training_step=0)
    (dW1, db1), (dW2, db2) = [(be.to_numpy(dW), be.to_numpy(db)) for dW, db in grads]
    (W1, b1), (W2, b2) = [(be.to_numpy(W).tolist(), be.to_numpy(b).tolist()) for W, b in net.params]
    ref = seed_network_by_loops(W1, b1, W2, b2, x.tolist(), z.tolist(), s.tolist(), alpha)
    out(f"With dropout p = {rate:g} on the hidden layer (the mask of training step 0) and L2 α = {alpha:g}:")
    show("s = M / (1 - p)  (E14)", s)
    out(f"  L + ½α‖W‖² = {loss:.10f}  (E16)")
    show("δ(1) = W(2)^T δ(2) ⊙ s ⊙ f'(u(1))  (E15)", db1)
    show("dL/dW(1) = δ(1) x^T + α W(1)  (E16)", dW1)
    lib = {"loss": loss, "dW1": dW1, "db1": db1, "dW2": dW2, "db2": db2}
    worst = max(float(np.max(np.abs(np.asarray(lib[k], dtype=np.float64) - np.asarray(ref[k])))) for k in lib)
    verdict = "OK" if worst <= EXPLAIN_TOLERANCE else "MISMATCH"
    out(f"  max |library - loops| over L, dW, db = {worst:.3e} (tolerance {EXPLAIN_TOLERANCE:g}): {verdict}")
    return worst
