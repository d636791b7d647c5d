"""Property-based checks of the stable formulas against their textbook definitions."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from portable_bp import activations as act
from portable_bp import losses
from portable_bp.backends import get

xp = get("numpy").xp
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
