"""Values that are not real numbers are refused by name on every backend, NumPy included
(never silently cast: a complex array would lose its imaginary part, strings would be
parsed): complex, string and object arrays as X, Z, validation data or parameters are a
TypeError naming the argument. Infinite or zero numbers where a positive finite one is
needed (sigma, eps) are a ValueError naming the argument."""

import re

import numpy as np
import pytest

import portable_bp as pbp
from portable_bp.gradcheck import gradcheck, numerical_grads

BAD_ARRAYS = {
    "complex": lambda shape: np.ones(shape) + 1j,
    "string": lambda shape: np.full(shape, "1.0"),
    "object": lambda shape: np.full(shape, 1.0, dtype=object),
}


def net_on(spec, loss="mse"):
    return pbp.Network([3, 4, 2], loss=loss, backend=spec, dtype="float64", seed=0)


@pytest.mark.parametrize("kind", list(BAD_ARRAYS))
def test_non_real_data_is_a_type_error_naming_the_argument(xp_spec, kind):
    """X, Z, X_val, Z_val (fit, predict, evaluate) and each W and b of set_params."""
    bad = BAD_ARRAYS[kind]
    X, Z = np.ones((4, 3)), np.zeros((4, 2))
    net = net_on(xp_spec)
    calls = {
        "X": lambda: net.fit(bad((4, 3)), Z, epochs=1),
        "Z": lambda: net.fit(X, bad((4, 2)), epochs=1),
        "X_val": lambda: net.fit(X, Z, epochs=1, validation_data=(bad((4, 3)), Z)),
        "Z_val": lambda: net.fit(X, Z, epochs=1, validation_data=(X, bad((4, 2)))),
        "X ": lambda: net.predict(bad((4, 3))),
        "Z ": lambda: net.evaluate(X, bad((4, 2))),
        "params[0] W": lambda: net.set_params([(bad((4, 3)), np.zeros(4)), (np.zeros((2, 4)), np.zeros(2))]),
        "params[1] b": lambda: net.set_params([(np.zeros((4, 3)), np.zeros(4)), (np.zeros((2, 4)), bad((2,)))]),
    }
    for name, call in calls.items():
        with pytest.raises(TypeError, match="^" + re.escape(name.strip()) + r" .*dtype"):
            call()
    assert net.epochs_trained == 0


def test_non_real_labels_for_cross_entropy_are_a_type_error():
    """Labels (n,) for cross-entropy take the same path: complex, string, object refused."""
    clf = net_on("numpy", loss="cross_entropy")
    for bad in BAD_ARRAYS.values():
        with pytest.raises(TypeError, match=r"^Z .*dtype"):
            clf.fit(np.ones((4, 3)), bad((4,)), epochs=1)


@pytest.mark.skip_backends("numpy", reason="NumPy's own arrays are the cases above")
def test_complex_arrays_of_the_backend_itself_are_a_type_error(xp_spec):
    """A complex tensor/array of the network's own library is refused like a NumPy one."""
    net = net_on(xp_spec)
    xp = net.xp
    X = xp.asarray(np.ones((4, 3)) + 1j)
    with pytest.raises(TypeError, match=r"^X .*dtype"):
        net.fit(X, np.zeros((4, 2)), epochs=1)
    with pytest.raises(TypeError, match=r"^params\[0\] W .*dtype"):
        net.set_params([(xp.asarray(np.ones((4, 3)) + 1j), np.zeros(4)), (np.zeros((2, 4)), np.zeros(2))])


@pytest.mark.parametrize("sigma", [float("inf"), float("nan"), 0.0, -1.0])
def test_a_normal_init_needs_a_positive_finite_sigma(sigma):
    """sigma=inf would make every weight inf or NaN: refused when the network is made."""
    with pytest.raises(ValueError, match=r"sigma must be a positive number \(finite\)"):
        pbp.Network([3, 4, 2], init="normal", sigma=sigma)


@pytest.mark.parametrize("eps", [0, 0.0, -1e-4, float("inf"), float("nan")])
def test_gradcheck_needs_a_positive_finite_eps(eps):
    """eps=0 would divide by zero; negative, inf and NaN steps are meaningless: refused."""
    net = net_on("numpy")
    X, Z = np.ones((2, 3)), np.zeros((2, 2))
    with pytest.raises(ValueError, match=r"eps must be a positive number \(finite\)"):
        gradcheck(net, X, Z, eps=eps)
    with pytest.raises(ValueError, match=r"eps must be a positive number \(finite\)"):
        numerical_grads(net, X, Z, eps=eps)
