"""The math against its textbook form: the derivation's element-wise formulas E1, E3 and E5
written as loops, on every backend x dtype; and property-based checks of the stable
formulas (one-pass softmax + cross-entropy, sigmoid, binary cross-entropy) against their
definitions."""

import numpy as np
import pytest
from conftest import JAX_REPEATS, assert_close, to_np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import portable_bp as pbp
from portable_bp import activations as act
from portable_bp import losses
from portable_bp.backends import get

xp = get("numpy").xp


# -- the worked 3-4-2 example, element by element (E1, E3, E5) ------------------------
def _sig(u):
    return 1.0 / (1.0 + np.exp(-u))


def elementwise_342(W1, b1, W2, b2, x, z):
    """E1, E3, E5 with explicit loops, one sample, L = 1/2 ||h - z||^2."""
    y = [_sig(sum(W1[i][j] * x[j] for j in range(3)) + b1[i]) for i in range(4)]
    u2 = [sum(W2[k][i] * y[i] for i in range(4)) + b2[k] for k in range(2)]
    h = [_sig(u) for u in u2]
    e2 = [(h[k] - z[k]) * h[k] * (1 - h[k]) for k in range(2)]  # (f(u)-z) f'(u)
    dW2 = [[e2[i] * y[j] for j in range(4)] for i in range(2)]  # E3
    db2 = list(e2)
    dW1 = [[sum(e2[k] * W2[k][i] for k in range(2)) * y[i] * (1 - y[i]) * x[j] for j in range(3)]
           for i in range(4)]  # E5
    db1 = [sum(e2[k] * W2[k][i] for k in range(2)) * y[i] * (1 - y[i]) for i in range(4)]
    loss = 0.5 * sum((h[k] - z[k]) ** 2 for k in range(2))
    return loss, [np.array(dW1), np.array(db1), np.array(dW2), np.array(db2)], h


@pytest.mark.skip_backends("jax-float32", reason=JAX_REPEATS)
def test_worked_example_342_matches_the_elementwise_formulas(xp_case):
    """The derivation's sigmoid 3-4-2 network (sigmoid output, E2's squared error): the
    batch loss, every gradient and the outputs are the means of E1/E3/E5 per sample."""
    net = pbp.Network([3, 4, 2], activation="sigmoid", output_activation="sigmoid", loss="mse",
                      backend=xp_case.spec, dtype=xp_case.dtype, seed=0)
    assert [tuple(W.shape) for W, _ in net.params] == [(4, 3), (2, 4)]
    assert [tuple(b.shape) for _, b in net.params] == [(4,), (2,)]
    rng = np.random.default_rng(7)
    X, Z = rng.standard_normal((5, 3)), rng.random((5, 2))
    W1, b1, W2, b2 = (to_np(net, a) for pair in net.params for a in pair)
    b1, b2 = b1 + rng.standard_normal(4) * 0.1, b2 + rng.standard_normal(2) * 0.1  # nonzero biases
    net.set_params([(W1, b1), (W2, b2)])
    W1, b1, W2, b2 = (to_np(net, a) for pair in net.params for a in pair)  # as rounded to dtype
    loss, grads = net.loss_and_grads(X, Z)
    per_sample = [elementwise_342(W1, b1, W2, b2, X[i].astype(xp_case.dtype), Z[i]) for i in range(5)]
    assert isinstance(loss, float)
    assert_close(loss, np.mean([p[0] for p in per_sample]), xp_case.dtype, scale=10)
    for k, got in enumerate(a for pair in grads for a in pair):
        assert_close(to_np(net, got), np.mean([p[1][k] for p in per_sample], axis=0), xp_case.dtype, scale=10)
    assert_close(to_np(net, net.forward(X)), [p[2] for p in per_sample], xp_case.dtype, scale=10)


# -- the stable formulas against their definitions ------------------------------------------
logits = arrays(np.float64, st.tuples(st.integers(1, 6), st.integers(1, 5)),
                elements=st.floats(-700, 700, allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(logits, st.data())
def test_one_pass_softmax_cross_entropy_equals_the_definitions(u, data):
    """losses.softmax_cross_entropy (one shared exp) = softmax and -Σ z log softmax(u)."""
    labels = data.draw(arrays(np.int64, u.shape[0], elements=st.integers(0, u.shape[1] - 1)))
    z = np.eye(u.shape[1])[labels]
    a, total = losses.softmax_cross_entropy(xp, u, z)
    np.testing.assert_allclose(a, act.softmax(xp, u), rtol=1e-12, atol=1e-300)
    reference = -np.sum(z * losses.log_softmax(xp, u))
    assert total == pytest.approx(reference, rel=1e-10, abs=1e-10)
    np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-12)
    # class labels (what fit keeps) give the same loss, outputs and Δ(L) as one-hot rows
    a_l, total_l = losses.softmax_cross_entropy(xp, u, labels)
    np.testing.assert_array_equal(a_l, a)
    assert total_l == pytest.approx(total, rel=1e-12, abs=1e-12)
    assert losses.cross_entropy(xp, u, a, labels) == pytest.approx(reference, rel=1e-10, abs=1e-10)
    assert losses.cross_entropy(xp, u, a, z) == pytest.approx(reference, rel=1e-10, abs=1e-10)
    softmax = act.ACTIVATIONS["softmax"]
    np.testing.assert_array_equal(losses.fused_output_delta(xp, u, a, labels, softmax, 0.5),
                                  losses.fused_output_delta(xp, u, a, z, softmax, 0.5))


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(1, 50), elements=st.floats(-745, 745, allow_nan=False)))
def test_stable_sigmoid_equals_the_definition(u):
    """E1 in its overflow-free form equals 1/(1 + exp(-u)) computed in long double."""
    with np.errstate(over="ignore"):
        exact = (1 / (1 + np.exp(-u.astype(np.longdouble)))).astype(np.float64)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        got = act.sigmoid(xp, u)
    np.testing.assert_allclose(got, exact, rtol=1e-14, atol=1e-320)


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.tuples(st.integers(1, 4), st.integers(1, 4)),
              elements=st.floats(-15, 15, allow_nan=False)),
       st.data())
def test_stable_binary_cross_entropy_equals_the_definition(u, data):
    """The softplus form equals -[z log a + (1-z) log(1-a)]; |u| <= 15 keeps the naive
    long-double reference itself accurate (the extremes are covered in test_network.py)."""
    z = data.draw(arrays(np.float64, u.shape, elements=st.sampled_from([0.0, 1.0])))
    a = 1 / (1 + np.exp(-u.astype(np.longdouble)))
    reference = float(-np.sum(z * np.log(a) + (1 - z) * np.log1p(-a)))
    assert losses.binary_cross_entropy(xp, u, None, z) == pytest.approx(reference, rel=1e-9, abs=1e-12)
