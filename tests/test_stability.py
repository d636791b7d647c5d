"""Numerical stability at the extremes, on every backend x dtype: no overflow warnings, no
NaN, and relative accuracy in the tails."""

import warnings

import numpy as np
import pytest
from conftest import assert_close, to_np

import portable_bp as pbp


def test_sigmoid_is_stable_and_accurate_at_extremes(xp_case):
    net = pbp.Network([1, 2], activation="identity", output_activation="sigmoid",
                      backend=xp_case.spec, dtype=xp_case.dtype, seed=0)
    net.set_params([(np.array([[1.0], [-1.0]]), np.zeros(2))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A = to_np(net, net.forward(np.array([[1000.0], [-1000.0], [0.0], [-30.0]])))
    np.testing.assert_allclose(A[:3], [[1, 0], [0, 1], [0.5, 0.5]], atol=0)
    assert_close(A[3, 0], 1 / (1 + np.exp(30.0)), xp_case.dtype, scale=10)  # relative accuracy in the tail


@pytest.mark.backends("jax", "jax:gpu")
def test_jax_sigmoid_with_one_exponential_gives_the_reference_bit_for_bit(xp_case):
    """JaxOps computes the sigmoid with one exponential (its numerator a select between 1
    and exp(-|u|)) where the reference computes exp(min(u, 0)) as a second one: the same
    bits, zeros, tails, overflowing inputs and NaN included, through every primitive that
    applies an activation; and the traced program has one exponential, not two."""
    import jax

    from portable_bp.activations import get_activation, sigmoid
    from portable_bp.losses import get_loss
    xp, ops, f = xp_case.xp, xp_case.ops, get_activation("sigmoid", output=True)
    host = np.concatenate([[0.0, -0.0, 1e-30, -1e-30, 88.0, -88.0, 1000.0, -1000.0, 700.0, -745.0, np.nan],
                           np.random.default_rng(0).standard_normal(997) * 12])
    U = xp_case.asarray(host.reshape(-1, 2))
    want = to_np(xp_case.backend, sigmoid(xp, U))
    W, b = xp_case.asarray(np.array([[1.0, -0.5], [0.25, 2.0]])), xp_case.asarray(np.array([0.5, -3.0]))
    pairs = {"activation": (ops.activation(U, f), want),
             "affine_activation": (ops.affine_activation(U, W, b, f), sigmoid(xp, ops.affine(U, W, b))),
             "output_loss": (ops.output_loss(U, U, f, get_loss("mse"))[0], want)}
    for name, (value, reference) in pairs.items():  # exact, NaN where NaN
        np.testing.assert_array_equal(to_np(xp_case.backend, value), to_np(xp_case.backend, reference), err_msg=name)
    assert np.isnan(want[5, 0]) and want[0, 0] == want[0, 1] == 0.5 and want[3, 0] == 1.0 and want[3, 1] == 0.0
    program = str(jax.make_jaxpr(lambda u: ops.activation(u, f))(U))
    assert program.count(" exp ") == 1, program


def test_softmax_cross_entropy_is_stable_for_huge_logits(xp_case):
    net = pbp.Network([2, 3], activation="identity", loss="cross_entropy", backend=xp_case.spec,
                      dtype=xp_case.dtype, seed=0)
    net.set_params([(np.array([[1e4, 0], [-1e4, 0], [0, 0]]), np.zeros(3))])
    X = np.array([[1.0, 0.0], [-1.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A = to_np(net, net.forward(X))
        loss, grads = net.loss_and_grads(X, np.array([1, 1]))
        onehot_loss, _ = net.loss_and_grads(X, np.eye(3)[[1, 1]])
    np.testing.assert_allclose(A, [[1, 0, 0], [0, 1, 0]], atol=1e-30)
    assert np.isfinite(loss) and loss == pytest.approx(1e4, rel=1e-6)  # -log softmax = 1e4 for sample 0
    assert onehot_loss == pytest.approx(loss, rel=1e-6)
    assert all(np.isfinite(to_np(net, g)).all() for p in grads for g in p)


def test_binary_cross_entropy_is_finite_for_saturated_outputs(xp_case):
    net = pbp.Network([1, 1], activation="identity", loss="binary_cross_entropy", backend=xp_case.spec,
                      dtype=xp_case.dtype, seed=0)
    net.set_params([(np.array([[1.0]]), np.zeros(1))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grads = net.loss_and_grads(np.array([[1000.0]]), np.array([[0.0]]))
    assert loss == pytest.approx(1000.0, rel=1e-6)  # -log(1 - sigmoid(1000)) = 1000
    assert to_np(net, grads[0][1])[0] == pytest.approx(1.0)  # E11: a - z = 1


def test_mse_delta_through_a_saturated_sigmoid_underflows_to_zero_not_nan(xp_case):
    """E8's f'(u) = a(1 - a) is 0 for a saturated sigmoid: the gradient vanishes (as it
    should, with this loss) but stays finite."""
    net = pbp.Network([1, 1], activation="identity", output_activation="sigmoid", backend=xp_case.spec,
                      dtype=xp_case.dtype, seed=0)
    net.set_params([(np.array([[1.0]]), np.zeros(1))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, ((dW, db),) = net.loss_and_grads(np.array([[1000.0]]), np.array([[0.0]]))
    assert loss == pytest.approx(0.5) and to_np(net, dW)[0, 0] == 0 and to_np(net, db)[0] == 0
