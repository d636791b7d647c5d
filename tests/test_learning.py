"""Training learns: small classification problems on every backend and dtype, XOR by full
batch gradient descent, and regression with the default (identity) output for mse."""

import numpy as np
import pytest
from conftest import to_np
from train_helpers import ONLY_FLOAT64_ON_JAX

import portable_bp as pbp


@pytest.mark.parametrize("problem", ["blobs", "moons"])
@pytest.mark.skip_backends("jax-float32", reason=ONLY_FLOAT64_ON_JAX)
@pytest.mark.cases(lambda xp_case, problem: xp_case.spec != "jax" or problem != "moons",
                   reason="jax compiles per network (seconds): blobs shows it learns; its steps equal "
                          "NumPy's to 1e-9 (test_fit)")
def test_learns_small_problems(xp_case, problem):
    """Adam on blobs and moons reaches > 90% held-out accuracy on every backend and dtype."""
    if problem == "blobs":
        X, y = pbp.datasets.blobs(300, centers=3, seed=0)
        sizes, act, epochs, lr = [2, 16, 3], "relu", 15, 0.01
    else:
        X, y = pbp.datasets.moons(200, noise=0.1, seed=0)
        sizes, act, epochs, lr = [2, 16, 2], "tanh", 60, 0.02
    Xt, Xs, yt, ys = pbp.datasets.train_test_split(X, y, seed=0)
    net = pbp.Network(sizes, activation=act, loss="cross_entropy", backend=xp_case.spec,
                      dtype=xp_case.dtype, seed=0)
    before = net.evaluate(Xs, ys)
    h = net.fit(Xt, yt, epochs=epochs, batch_size=16, optimizer="adam", lr=lr, validation_data=(Xs, ys))
    loss = h.history["loss"]
    assert loss[-1] < 0.3 * loss[0]
    assert h.history["val_loss"][-1] < before["loss"]
    after = net.evaluate(Xs, ys)
    assert after["accuracy"] > 0.9, after
    assert np.mean(np.asarray(net.backend.to_numpy(net.predict(Xs))) == ys) > 0.9


def test_xor_by_full_batch_gradient_descent():
    """The derivation's setting (sigmoid, E2, full batch) solves XOR: all four rows right."""
    X, y = pbp.datasets.xor()
    net = pbp.Network([2, 4, 1], activation="sigmoid", output_activation="sigmoid", loss="mse",
                      backend="numpy", dtype="float64", seed=0)
    h = net.fit(X, y, epochs=2000, batch_size=None, optimizer="sgd", lr=2.0, shuffle=False)
    assert len(h.history["loss"]) == 2000
    assert h.history["loss"][-1] < 0.01 < h.history["loss"][0]
    out = to_np(net, net.predict(X)).ravel()
    np.testing.assert_array_equal(out > 0.5, y.ravel() > 0.5)
    assert np.all(np.abs(out - y.ravel()) < 0.2), out


def test_mse_networks_regress_with_an_identity_output_by_default():
    """loss="mse" without output_activation is a regressor: an identity output that can
    reach targets outside the hidden activation's range (here -3..3 with sigmoid hidden
    units, which an output sigmoid could never produce)."""
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (200, 1))
    Z = 3 * np.sin(3 * X)
    net = pbp.Network([1, 16, 1], activation="sigmoid", dtype="float64", seed=0)
    assert net.output_activation == "identity"
    net.fit(X, Z, epochs=150, batch_size=16, optimizer="adam", lr=0.02)
    pred = to_np(net, net.predict(X))
    assert pred.min() < -2 and pred.max() > 2
    assert np.mean((pred - Z) ** 2) < 0.1
