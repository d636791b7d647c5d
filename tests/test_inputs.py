"""Bad input gets a ValueError/TypeError naming the argument, the value and what was expected."""

import warnings

import numpy as np
import pytest
from conftest import JAX_REPEATS, to_np

import portable_bp as pbp
from portable_bp.ops import Ops


@pytest.fixture
def net(xp_case):
    return pbp.Network([3, 4, 2], activation="tanh", loss="mse", backend=xp_case.spec, dtype=xp_case.dtype, seed=0)


@pytest.fixture
def clf(xp_case):
    return pbp.Network([3, 4, 3], activation="relu", loss="cross_entropy", backend=xp_case.spec,
                       dtype=xp_case.dtype, seed=0)


X3 = np.ones((5, 3))


@pytest.mark.parametrize("X,match", [
    (np.ones((5, 4)), r"X has 4 features but the network expects 3"),
    (np.ones((0, 3)), r"X is empty"),
    (np.ones((2, 3, 1)), r"X must be 2-D"),
    (np.array([[1.0, np.nan, 0.0]]), r"X contains NaN or inf"),
    (np.array([[1.0, np.inf, 0.0]]), r"X contains NaN or inf"),
    (np.array([[1.0, 2.0, 0.0], [0.0, -np.inf, 1.0]]), r"X contains NaN or inf"),
    (np.array([[np.inf, -np.inf, 0.0]]), r"X contains NaN or inf"),
])
def test_bad_X(net, X, match):
    with pytest.raises(ValueError, match=match):
        net.forward(X)
    with pytest.raises(ValueError, match=match):
        net.loss_and_grads(X, np.zeros((len(X), 2)))


def test_large_finite_data_passes_the_finite_checks_without_a_warning(xp_spec):
    """float32 values near its maximum are finite data: the checks must neither refuse them
    nor warn (a sum over them overflows; warnings-as-errors would turn that into a crash)."""
    from portable_bp import _inputs

    be = pbp.backends.get(xp_spec)
    big = be.asarray(np.full((64, 3), 3e38), "float32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _inputs.check_finite(be, big, "X")
        _inputs.check_finite_all(be.ops, [big, -big], "params")
    bad = be.asarray(np.array([3e38, np.nan, -3e38]), "float32")
    with pytest.raises(ValueError, match="X contains NaN or inf"):
        _inputs.check_finite(be, bad, "X")
    with pytest.raises(ValueError, match="params contain NaN or inf"):
        _inputs.check_finite_all(be.ops, [big, bad], "params")


def test_immutable_jax_arrays_found_finite_are_not_read_again_but_mutable_ones_are(monkeypatch):
    """JAX's arrays cannot change: a second fit on the same X and y reads neither back
    again. A NumPy array can: poisoned in place between two fits, the second refuses it."""
    pytest.importorskip("jax")
    be = pbp.backends.get("jax")
    X = be.asarray(np.random.default_rng(0).standard_normal((12, 3)), "float32")
    y = be.asarray(np.ones((12, 2)), "float32")
    net = pbp.Network([3, 4, 2], backend="jax", seed=0)
    net.fit(X, y, epochs=1, batch_size=4, lr=0.1)
    checked = []
    original = be.ops.extremes
    monkeypatch.setattr(be.ops, "extremes", lambda arrays: checked.append(len(arrays)) or original(arrays))
    net.fit(X, y, epochs=1, batch_size=4, lr=0.1)
    assert checked == [], "the same immutable X and y were checked again"
    fresh = be.asarray(np.full((12, 3), np.nan), "float32")
    with pytest.raises(ValueError, match="X contains NaN or inf"):
        net.fit(fresh, y, epochs=1, batch_size=4, lr=0.1)
    assert checked, "a new array was not checked through ops.extremes"

    Xn = np.random.default_rng(0).standard_normal((12, 3))
    numpy_net = pbp.Network([3, 4, 2], seed=0)
    numpy_net.fit(Xn, np.ones((12, 2)), epochs=1, batch_size=4, lr=0.1)
    Xd = numpy_net.backend.asarray(Xn, "float32")
    numpy_net.fit(Xd, np.ones((12, 2)), epochs=1, batch_size=4, lr=0.1)
    Xd[3, 1] = np.inf
    with pytest.raises(ValueError, match="X contains NaN or inf"):
        numpy_net.fit(Xd, np.ones((12, 2)), epochs=1, batch_size=4, lr=0.1)


class Item:
    """A weakly referenceable stand-in for an immutable array."""


def test_a_freed_array_whose_id_is_reused_is_not_taken_for_it():
    """The known-finite set holds weak references: once an array is freed, another object
    at the same address (CPython reuses it at once) is not taken for it."""
    from portable_bp._inputs import _KnownFinite

    known, first = _KnownFinite(), Item()
    known.add(first)
    address = id(first)
    assert first in known
    del first
    alive = [Item() for _ in range(1000)]
    reused = [item for item in alive if id(item) == address]
    if not reused:
        pytest.skip("this interpreter did not reuse the freed address")
    assert reused[0] not in known


def test_the_known_finite_set_keeps_the_last_16_and_skips_what_cannot_be_weakly_referenced():
    from portable_bp._inputs import _KnownFinite

    known, items = _KnownFinite(), [Item() for _ in range(_KnownFinite.SIZE + 1)]
    for item in items:
        known.add(item)
    assert items[0] not in known and all(item in known for item in items[1:])
    known.add(3.5)  # a float has no weak references: not remembered, no error
    assert 3.5 not in known and items[1] in known


NOT_REAL = {  # CHANGED: never silently cast (the NumPy backend used to)
    "complex": np.ones((5, 3)) + 1j, "strings": np.full((5, 3), "a"), "objects": np.full((5, 3), None),
    "datetimes": np.full((5, 3), np.datetime64("2020-01-01")), "string lists": [["a", "b", "c"]] * 5,
}


@pytest.mark.parametrize("kind", NOT_REAL)
def test_non_real_data_is_a_type_error_naming_the_argument(net, kind):
    value = NOT_REAL[kind]
    with pytest.raises(TypeError, match="X must hold real numbers"):
        net.forward(value)
    with pytest.raises(TypeError, match="Z must hold real numbers"):
        net.loss_and_grads(np.ones((5, 3)), value if kind == "string lists" else np.asarray(value)[:, :2])
    with pytest.raises(TypeError, match=r"params\[0\] W must hold real numbers"):
        net.set_params([(np.asarray(value)[:4], np.zeros(4)), (np.zeros((2, 4)), np.zeros(2))])
    with pytest.raises(TypeError, match="X_val must hold real numbers"):
        net.fit(np.ones((5, 3)), np.zeros((5, 2)), validation_data=(value, np.zeros((5, 2))))


def test_complex_arrays_of_the_backend_itself_are_refused(xp_case, net):
    value = xp_case.backend.asarray(np.ones((5, 3)) + 1j)
    assert net.backend.owns(value)
    with pytest.raises(TypeError, match=r"X must hold (real )?numbers, got dtype .*complex"):
        net.forward(value)


def test_ragged_data_is_a_type_error(net):
    with pytest.raises(TypeError, match="X must be a numeric array or sequence"):
        net.forward([[1.0, 2.0, 3.0], [1.0]])


@pytest.mark.parametrize("Z,match", [
    (np.zeros((4, 2)), r"X and Z have different lengths: 5 and 4"),
    (np.zeros((5, 3)), r"Z has\s+width 3 but the network has 2 outputs"),
    (np.zeros(5), r"Z has shape \(5,\) but the network has 2 outputs"),
    (np.full((5, 2), np.nan), r"Z contains NaN or inf"),
])
def test_bad_targets(net, Z, match):
    with pytest.raises(ValueError, match=match):
        net.loss_and_grads(X3, Z)


@pytest.mark.parametrize("Z,match", [
    (np.array([0, 1, 2, 3, 0]), r"labels must lie in \[0, 3\).*from 0 to 3"),
    (np.array([0, -1, 2, 1, 0]), r"labels must lie in \[0, 3\).*from -1 to 2"),
    (np.array([0.5, 1, 2, 1, 0]), r"labels must be whole numbers"),
    (np.eye(4)[[0, 1, 2, 3, 0]], r"one-hot rows of width 4 but the network has 3 outputs"),
    (np.full((5, 3), 0.5), r"one-hot \(or probabilities\)"),
])
def test_bad_labels(clf, Z, match):
    with pytest.raises(ValueError, match=match):
        clf.loss_and_grads(X3, Z)


@pytest.mark.parametrize("label_dtype", ["uint8", "int32", "int64", "float64"])
@pytest.mark.parametrize("fused", [True, False], ids=["ops", "reference"])
@pytest.mark.skip_backends("jax-float32", reason=JAX_REPEATS)
@pytest.mark.cases(lambda xp_case, label_dtype: not xp_case.spec.startswith("jax")
                   or label_dtype not in ("int32", "int64"), reason=JAX_REPEATS)  # uint8, float64 labels show it
def test_one_hot_and_integer_labels_agree(clf, label_dtype, fused):
    """Labels of any integer type (or whole floats) are read as labels all the way (the
    loss gathers one entry per row, Δ(L) compares with the column index), and give what
    one-hot rows give, through the backend's Ops and the reference."""
    if not fused and type(clf.backend.ops) is Ops:
        pytest.skip(f"{clf.backend.spec}'s Ops are the reference: the 'ops' case covers it")
    clf.fused_kernels = fused
    X = np.random.default_rng(0).standard_normal((7, 3))
    y = np.array([0, 2, 1, 1, 0, 2, 2])
    l1, g1 = clf.loss_and_grads(X, y.astype(label_dtype))
    l2, g2 = clf.loss_and_grads(X, np.eye(3)[y])
    assert l1 == pytest.approx(l2, rel=1e-6)
    for (dW1, db1), (dW2, db2) in zip(g1, g2):
        np.testing.assert_allclose(to_np(clf, dW1), to_np(clf, dW2), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(to_np(clf, db1), to_np(clf, db2), rtol=1e-6, atol=1e-7)
    ev1, ev2 = clf.evaluate(X, y.astype(label_dtype)), clf.evaluate(X, np.eye(3)[y])
    assert ev1["accuracy"] == ev2["accuracy"]
    assert ev1["loss"] == pytest.approx(ev2["loss"], rel=1e-6)


def test_binary_cross_entropy_targets_in_unit_interval():
    net = pbp.Network([3, 2], loss="binary_cross_entropy", seed=0)
    with pytest.raises(ValueError, match=r"binary_cross_entropy must lie in \[0, 1\]"):
        net.loss_and_grads(X3, np.full((5, 2), 2.0))


@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(activation="swish"), ValueError, r"activation must be one of .*got 'swish'"),
    (dict(activation="softmax"), ValueError, r"only on the output layer"),
    (dict(output_activation="gelu"), ValueError, r"output_activation must be one of .*'gelu'"),
    (dict(loss="hinge"), ValueError, r"loss must be one of .*got 'hinge'"),
    (dict(loss="cross_entropy", output_activation="sigmoid"), ValueError,
     r"loss='cross_entropy' needs output_activation='softmax'"),
    (dict(loss="binary_cross_entropy", output_activation="tanh"), ValueError,
     r"needs output_activation='sigmoid'"),
    (dict(init="uniform"), ValueError, r"init must be one of .*'uniform'"),
    (dict(dtype="float16"), ValueError, r"dtype must be one of \['float32', 'float64'\], got 'float16'"),
    (dict(backend="tensorflow"), ValueError, r"unknown backend 'tensorflow'; known backends: .*numpy"),
    (dict(seed=-1), ValueError, r"seed must be a non-negative integer"),
    (dict(sigma=0), ValueError, r"sigma must be a positive number"),
    (dict(activation=3), TypeError, r"activation must be a string"),
])
def test_bad_constructor_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        pbp.Network([3, 4, 2], **kwargs)


@pytest.mark.parametrize("sizes,exc", [([3], ValueError), ([3, 0, 2], ValueError), ([3, 2.5], ValueError),
                                       ("3,2", TypeError), (3, TypeError), ([3, True], ValueError)])
def test_bad_sizes(sizes, exc):
    with pytest.raises(exc, match="sizes"):
        pbp.Network(sizes)


def test_failed_set_params_changes_nothing(net):
    before = [to_np(net, a) for p in net.params for a in p]
    good_W0 = np.full((4, 3), 7.0)
    bad = [
        [(good_W0, np.zeros(4)), (np.zeros((2, 5)), np.zeros(2))],      # wrong shape in layer 1
        [(good_W0, np.zeros(4)), (np.full((2, 4), np.nan), np.zeros(2))],  # NaN in layer 1
        [(good_W0, np.zeros(4))],                                         # too few layers
        [(good_W0, np.zeros(4)), (np.zeros((2, 4)), ["a", "b"])],        # not numbers
    ]
    for params in bad:
        with pytest.raises((ValueError, TypeError), match=r"params"):
            net.set_params(params)
        assert all(np.array_equal(a, b) for a, b in zip(before, [to_np(net, a) for p in net.params for a in p]))


def test_array_of_another_device_is_refused_by_name():
    """array_api_strict's second device stands in for 'a GPU array given to a CPU network'."""
    import array_api_strict as xps

    net = pbp.Network([3, 2], backend="array_api_strict", dtype="float64", seed=0)
    other = xps.asarray(np.ones((2, 3)), device=xps.Device("device1"))
    with pytest.raises(TypeError, match=r"X is a array_api_strict array on device .*device1.*"
                                        r"network lives on backend 'array_api_strict'"):
        net.forward(other)
    with pytest.raises(TypeError, match=r"params\[0\] W is a array_api_strict array on device"):
        net.set_params([(xps.ones((2, 3), device=xps.Device("device1")), np.zeros(2))])
    net1 = pbp.Network([3, 2], backend="array_api_strict:device1", dtype="float64", seed=0)
    A = net1.forward(other)  # the array's own device is accepted as is
    assert A.device == xps.Device("device1")


def test_array_of_another_library_is_refused_by_name():
    torch = pytest.importorskip("torch")
    net = pbp.Network([3, 2], backend="numpy", seed=0)
    with pytest.raises(TypeError, match=r"X is a torch array on device cpu.*backend 'numpy'"):
        net.forward(torch.ones(2, 3))
    tnet = pbp.Network([3, 2], backend="torch", seed=0)
    assert tuple(tnet.forward(np.ones((2, 3))).shape) == (2, 2)  # NumPy is host data: moved
