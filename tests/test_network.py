"""The Network façade: defaults, initial weights, parameters on the backend (set, validated,
copied, moved), the Ops it runs, what fit leaves on it, and the memory one backward pass
holds."""

import tracemalloc

import numpy as np
import pytest
from conftest import JAX_REPEATS, assert_close, make_data, to_np

import portable_bp as pbp
from portable_bp.ops import Ops


def test_defaults():
    """CHANGED: mse without output_activation is a regression output (identity), as
    scikit-learn's MLPRegressor; cross-entropy gets softmax, BCE sigmoid."""
    net = pbp.Network([2, 3, 2], seed=0)
    assert (net.activation, net.output_activation, net.loss, net.dtype) == ("sigmoid", "identity", "mse", "float32")
    assert net.backend.name == "numpy" and net.init == "xavier" and net.sigma == 0.1
    assert [f.name for f in net.spec.activations] == ["sigmoid", "identity"] and net.spec.loss.name == "mse"
    ce = pbp.Network([2, 3, 2], activation="relu", loss="cross_entropy", seed=0)
    assert ce.output_activation == "softmax" and ce.init == "he" and ce.is_classifier
    assert pbp.Network([2, 1], loss="binary_cross_entropy").output_activation == "sigmoid"
    assert pbp.Network([2, 3, 1], output_activation="sigmoid").spec.output.name == "sigmoid"
    assert isinstance(pbp.Network([2, 1]).seed, int)  # drawn when not given, and kept


@pytest.mark.skip_backends("jax-float32", reason=JAX_REPEATS)
def test_identity_output_is_a_regression(xp_case):
    """With the default identity output, MSE's gradient at the output is (a - z)/m: a
    target outside [0, 1] is reachable (a sigmoid output could not fit it)."""
    net = pbp.Network([1, 1], backend=xp_case.spec, dtype=xp_case.dtype, seed=0)
    net.set_params([(np.array([[2.0]]), np.array([0.5]))])
    X, Z = np.array([[1.0], [3.0]]), np.array([[10.0], [-4.0]])
    loss, ((dW, db),) = net.loss_and_grads(X, Z)
    a = np.array([2.5, 6.5])
    assert_close(loss, ((a - Z[:, 0]) ** 2).sum() / 4, xp_case.dtype)
    assert_close(to_np(net, dW), [[((a - Z[:, 0]) * X[:, 0]).mean()]], xp_case.dtype)
    assert_close(to_np(net, db), [(a - Z[:, 0]).mean()], xp_case.dtype)


@pytest.mark.parametrize("init,expected_std", [("normal", 0.05), ("xavier", np.sqrt(2 / 600)),
                                               ("he", np.sqrt(2 / 400))])
def test_initialisation_scales(init, expected_std):
    net = pbp.Network([400, 200], init=init, sigma=0.05, backend="numpy", dtype="float64", seed=0)
    W, b = net.params[0]
    assert np.std(W) == pytest.approx(expected_std, rel=0.02) and abs(np.mean(W)) < 0.1 * expected_std
    assert np.all(b == 0)


def test_same_seed_gives_bit_identical_initial_weights(xp_case):
    a = pbp.Network([6, 5, 2], backend=xp_case.spec, dtype=xp_case.dtype, seed=11)
    b = pbp.Network([6, 5, 2], backend="numpy", dtype=xp_case.dtype, seed=11)
    for (Wa, ba), (Wb, _) in zip(a.params, b.params):
        assert np.array_equal(a.backend.to_numpy(Wa), Wb)
        assert np.array_equal(a.backend.to_numpy(ba), np.zeros(Wb.shape[0]))
    c = pbp.Network([6, 5, 2], backend="numpy", dtype=xp_case.dtype, seed=12)
    assert not np.array_equal(c.params[0][0], b.params[0][0])


def test_params_and_results_live_on_the_backend(xp_case):
    net = pbp.Network([3, 4, 2], backend=xp_case.spec, dtype=xp_case.dtype, seed=0)
    assert net.array_dtype == xp_case.backend.dtype(xp_case.dtype)
    for W, b in net.params:
        assert net.backend.owns(W) and net.backend.owns(b) and W.dtype == b.dtype == net.array_dtype
    A = net.forward(np.ones((2, 3)))
    assert net.backend.owns(A) and tuple(A.shape) == (2, 2) and A.dtype == net.array_dtype
    _, grads = net.loss_and_grads(np.ones((2, 3)), np.zeros((2, 2)))
    assert all(net.backend.owns(g) and g.dtype == net.array_dtype for pair in grads for g in pair)
    X, Z = net.features(np.ones((2, 3))), net.targets(np.zeros((2, 2)), 2)
    assert all(net.backend.owns(a) and a.dtype == net.array_dtype for a in (X, Z))


def test_set_params_copies_unless_told_and_checks_before_assigning(xp_case):
    net = pbp.Network([2, 2], backend=xp_case.spec, dtype=xp_case.dtype, seed=0)
    net.set_params([([[1, 2], [3, 4]], [0.5, -0.5])])  # nested lists are array-likes
    W, b = net.params[0]
    assert to_np(net, W).tolist() == [[1, 2], [3, 4]] and to_np(net, b).tolist() == [0.5, -0.5]
    host = np.eye(2, dtype=xp_case.dtype)
    net.set_params([(host, np.zeros(2))])
    host[0, 0] = 99  # torch and strict may wrap NumPy memory: the network keeps a copy
    assert to_np(net, net.params[0][0])[0, 0] == 1
    own = (xp_case.asarray(np.full((2, 2), 3.0)), xp_case.asarray(np.ones(2)))
    net.set_params([own], copy=False)
    assert net.params[0][0] is own[0] and net.params[0][1] is own[1]  # adopted as they are
    checked = net.validate_params([(np.full((2, 2), 5.0), np.zeros(2))])
    assert to_np(net, checked[0][0])[0, 0] == 5 and net.params[0][0] is own[0]  # nothing assigned
    with pytest.raises(ValueError, match="params contain NaN or inf"):
        net.set_params([(np.full((2, 2), np.nan), np.zeros(2))])
    net.set_params([(np.full((2, 2), np.nan), np.zeros(2))], check_finite=False)
    assert np.isnan(to_np(net, net.params[0][0])).all()


def test_adopting_without_a_copy_still_takes_array_likes_and_refuses_bad_ones(xp_case):
    """``set_params(copy=False)`` and ``restore_state(params=...)`` adopt the backend's own
    arrays as they are, but still move array-likes (nested lists) and refuse what holds no
    numbers with a TypeError naming the parameter: an object that is not the backend's is
    never asked for its dtype first. Building a network (which adopts its initial
    parameters this way) warns of nothing, not even array_api_strict's dtype comparisons."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net = pbp.Network([2, 1], backend=xp_case.spec, dtype=xp_case.dtype, seed=0)
    net.restore_state(params=[([[1.0, 2.0]], [0.0])])
    net.set_params([([[3.0, 4.0]], [1.0])], copy=False)
    assert to_np(net, net.params[0][0]).tolist() == [[3.0, 4.0]] and to_np(net, net.params[0][1]).tolist() == [1.0]
    with pytest.raises(TypeError, match=r"params\[0\] W must hold real numbers"):
        net.set_params([("abc", [0.0])], copy=False)
    with pytest.raises(TypeError, match=r"params\[0\] W"):
        net.restore_state(params=[(None, [0.0])])
    assert to_np(net, net.params[0][0]).tolist() == [[3.0, 4.0]]  # nothing half-applied


def test_a_network_can_be_built_on_a_non_default_device():
    """array_api_strict's second device stands in for a second GPU (cupy:1, torch:cuda):
    every parameter, the zero biases included, must be made on the network's device."""
    net = pbp.Network([3, 2], backend="array_api_strict:device1", dtype="float64", seed=0)
    assert all(str(a.device).endswith("'device1')") for pair in net.params for a in pair)
    assert str(net.forward(np.ones((2, 3))).device).endswith("'device1')")


def test_params_is_a_new_list_each_time():
    net = pbp.Network([2, 3, 1], seed=0)
    params = net.params
    params.clear()
    assert len(net.params) == 2


def test_to_copies_between_backends_and_dtypes(xp_case):
    net = pbp.Network([3, 4, 2], backend="numpy", dtype="float64", seed=0)
    net.epochs_trained = 4
    other = net.to(xp_case.spec, dtype=xp_case.dtype)
    assert other.backend is xp_case.backend and other.dtype == xp_case.dtype and other.epochs_trained == 4
    for (W, b), (W2, b2) in zip(net.params, other.params):
        assert_close(to_np(other, W2), W, xp_case.dtype)
        assert_close(to_np(other, b2), b, xp_case.dtype)
    assert other.config() | {"dtype": "float64"} == net.config()
    other.set_params([(np.zeros((4, 3)), np.zeros(4)), (np.zeros((2, 4)), np.zeros(2))])
    assert np.abs(net.params[0][0]).sum() > 0  # a copy, not a view of the original


def test_fused_kernels_switch_picks_the_ops(xp_spec):
    net = pbp.Network([3, 2], backend=xp_spec, seed=0)
    assert net.ops is net.backend.ops and net.fused_kernels
    net.fused_kernels = False
    assert net.ops is net.backend.reference_ops and not net.fused_kernels
    assert type(net.ops) is Ops
    net.fused_kernels = True
    assert net.ops is net.backend.ops


def test_fit_leaves_its_state_on_the_network():
    net = pbp.Network([3, 4, 2], loss="cross_entropy", seed=0)
    X, y = make_data(12, 3, 2, "cross_entropy")
    assert net.epochs_trained == 0 and net.optimizer_state is None
    net.fit(X, y, epochs=2, batch_size=4, optimizer="adam", lr=0.01)
    opt, state = net.optimizer_state
    assert net.epochs_trained == 2 and opt.name == "adam" and state["step"] == 6
    assert sorted(state["slots"]) == ["m", "v"] and len(state["slots"]["m"]) == 4
    assert [tuple(a.shape) for a in state["slots"]["v"]] == [(4, 3), (4,), (2, 4), (2,)]


@pytest.mark.backends("jax")
def test_compiled_programs_are_kept_on_the_network(xp_spec):
    """JAX: fit compiles its epoch program (the scan executor; no ragged batch here, so no
    per-step program) once per optimizer configuration and keeps it in ``net.compiled``;
    fitting again reuses it."""
    net = pbp.Network([3, 4, 2], loss="cross_entropy", backend=xp_spec, seed=0)
    X, y = make_data(8, 3, 2, "cross_entropy")
    net.fit(X, y, epochs=1, batch_size=4, optimizer="sgd", lr=0.1)
    programs = dict(net.compiled)
    assert len(programs) == 1 and next(iter(programs))[0] == "epoch"
    net.fit(X, y, epochs=1, batch_size=4, optimizer="sgd", lr=0.05)  # lr is an argument
    assert net.compiled == programs


def test_repr_and_config():
    net = pbp.Network([3, 4, 2], seed=1)
    assert repr(net) == ("Network([3, 4, 2], activation='sigmoid', output_activation='identity', "
                         "loss='mse', backend='numpy', dtype='float32')")
    assert pbp.Network(**net.config()).config() == net.config()
    assert net.n_layers == 2 and not net.is_classifier


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_backprop_frees_each_layers_activations_as_it_passes_them(activation):
    """Peak memory of one backward pass, measured by tracemalloc on NumPy (which frees an
    array as soon as its last reference goes, like a GPU memory pool): beyond the gradients
    themselves, at most five activation-sized arrays are alive at once. Keeping every
    layer's activations to the end of the pass needs six on this 3-hidden-layer network."""
    sizes, m = [64, 512, 512, 512, 10], 256
    X, y = make_data(m, 64, 10, "cross_entropy")
    net = pbp.Network(sizes, activation=activation, loss="cross_entropy", seed=0)
    X = net.features(X.astype(np.float32))
    net.loss_and_grads(X, y)  # warm-up: one-time allocations (caches, lazy imports)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        _, grads = net.loss_and_grads(X, y)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    grad_bytes = sum(dW.nbytes + db.nbytes for dW, db in grads)
    layer = m * 512 * 4  # one hidden layer's activations, float32
    assert peak <= grad_bytes + 5 * layer, f"{(peak - grad_bytes) / layer:.2f} layers alive"
