"""Network: the derivation's formulas, against independent oracles, on every backend."""

import itertools
import warnings

import numpy as np
import pytest

import portable_bp as pbp
from conftest import assert_close, make_data, to_np

HIDDEN = ["sigmoid", "tanh", "relu", "leaky_relu", "identity"]
# (loss, output activation) pairs: mse with every output, and the fused pairs (E11)
LOSS_OUTPUTS = [("mse", o) for o in HIDDEN + ["softmax"]] + [
    ("cross_entropy", "softmax"), ("binary_cross_entropy", "sigmoid")]


def data(n, n_in, n_out, loss, seed=1):
    return make_data(n, n_in, n_out, loss, seed)


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
    return loss, [np.array(dW1), np.array(db1), np.array(dW2), np.array(db2)]


def test_worked_example_342_matches_elementwise_formulas(backend_dtype):
    spec, dtype = backend_dtype
    net = pbp.Network([3, 4, 2], activation="sigmoid", loss="mse", backend=spec, dtype=dtype, seed=0)
    assert [tuple(W.shape) for W, _ in net.params] == [(4, 3), (2, 4)]
    assert [tuple(b.shape) for _, b in net.params] == [(4,), (2,)]
    rng = np.random.default_rng(7)
    X, Z = rng.standard_normal((5, 3)), rng.random((5, 2))
    W1, b1, W2, b2 = (to_np(net, a) for pair in net.params for a in pair)
    b1, b2 = b1 + rng.standard_normal(4) * 0.1, b2 + rng.standard_normal(2) * 0.1  # nonzero biases
    net.set_params([(W1, b1), (W2, b2)])
    loss, grads = net.loss_and_grads(X, Z)
    # E2: the batch loss and gradient are the means of the per-sample ones
    per_sample = [elementwise_342(W1, b1, W2, b2, X[i], Z[i]) for i in range(5)]
    expected_loss = np.mean([p[0] for p in per_sample])
    expected = [np.mean([p[1][k] for p in per_sample], axis=0) for k in range(4)]
    assert isinstance(loss, float)
    assert_close(loss, expected_loss, dtype, scale=10)
    for got, want in zip([a for pair in grads for a in pair], expected):
        assert_close(to_np(net, got), want, dtype, scale=10)


# -- finite differences for every activation x loss, depths 1-4 ------------------------
# depth 1 has no hidden layer, so the hidden activation only varies from depth 2 on
DEPTH_HIDDEN = [(1, "sigmoid")] + [(d, h) for d in (2, 3, 4) for h in HIDDEN]


@pytest.mark.parametrize("depth,hidden", DEPTH_HIDDEN)
@pytest.mark.parametrize("loss,output", LOSS_OUTPUTS)
def test_gradcheck_every_activation_and_loss(backend64, depth, hidden, loss, output):
    if backend64 == "jax" and depth != 2:
        pytest.skip("jax runs eagerly op by op here; depth 2 covers it, the other depths run elsewhere")
    sizes = [3] + [4] * (depth - 1) + [3]
    net = pbp.Network(sizes, activation=hidden, output_activation=output, loss=loss,
                      backend=backend64, dtype="float64", seed=depth)
    X, Z = data(6, 3, 3, loss)
    # nonzero biases keep every unit off relu's kink at exactly 0 (a sample whose hidden
    # units are all dead would otherwise give U = b = 0, where no derivative exists)
    rng = np.random.default_rng(depth)
    net.set_params([(to_np(net, W), rng.uniform(0.1, 0.5, b.shape[0])) for W, b in net.params])
    err = pbp.gradcheck(net, X, Z)
    assert err < 1e-7, f"relative error {err:.2e}"


def test_gradcheck_detects_a_wrong_gradient(monkeypatch):
    """The oracle can fail: break E9's activation factor and gradcheck must notice."""
    net = pbp.Network([3, 5, 2], activation="tanh", backend="numpy", dtype="float64", seed=0)
    net.fused_kernels = False  # the Array API path, where backprop_delta is called
    X, Z = data(4, 3, 2, "mse")
    assert pbp.gradcheck(net, X, Z) < 1e-7
    import portable_bp.network as network_mod

    monkeypatch.setattr(network_mod, "backprop_delta", lambda xp, d, W, act, A: d @ W)
    assert pbp.gradcheck(net, X, Z) > 1e-3


def test_gradcheck_of_float32_network_runs_in_float64():
    net = pbp.Network([3, 4, 2], backend="numpy", dtype="float32", seed=0)
    X, Z = data(4, 3, 2, "mse")
    assert pbp.gradcheck(net, X, Z) < 1e-7
    assert net.dtype == "float32"


# -- PyTorch autograd as a second oracle --------------------------------------------------
TORCH_ACT = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu", "identity": None,
             "leaky_relu": "leaky_relu", "softmax": "softmax"}


def torch_loss_and_grads(torch, net, X, Z):
    """The same network written directly in PyTorch, differentiated by autograd."""
    F = torch.nn.functional
    params = [torch.tensor(to_np(net, a), dtype=torch.float64, requires_grad=True)
              for pair in net.params for a in pair]
    a = torch.tensor(X, dtype=torch.float64)
    acts = [net.activation] * (net.n_layers - 1) + [net.output_activation]
    for l, act in enumerate(acts):
        u = a @ params[2 * l].T + params[2 * l + 1]
        if act == "identity":
            a = u
        elif act == "softmax":
            a = torch.softmax(u, dim=1)
        elif act == "leaky_relu":
            a = F.leaky_relu(u, 0.01)
        else:
            a = getattr(torch, act)(u)
    m = X.shape[0]
    if net.loss == "mse":
        loss = ((a - torch.tensor(Z)) ** 2).sum() / (2 * m)
    elif net.loss == "cross_entropy":
        loss = F.cross_entropy(u, torch.tensor(Z, dtype=torch.long))
    else:
        loss = F.binary_cross_entropy_with_logits(u, torch.tensor(Z), reduction="sum") / m
    loss.backward()
    return loss.item(), [p.grad.numpy() for p in params]


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("loss,output", LOSS_OUTPUTS)
def test_matches_pytorch_autograd(backend_dtype, hidden, loss, output):
    torch = pytest.importorskip("torch")
    spec, dtype = backend_dtype
    net = pbp.Network([5, 7, 6, 4], activation=hidden, output_activation=output, loss=loss,
                      backend=spec, dtype=dtype, seed=3)
    X, Z = data(9, 5, 4, loss, seed=4)
    want_loss, want = torch_loss_and_grads(torch, net, X.astype(dtype).astype(float), Z)
    got_loss, grads = net.loss_and_grads(X, Z)
    assert_close(got_loss, want_loss, dtype, scale=50)
    for g, w in zip([a for pair in grads for a in pair], want):
        assert_close(to_np(net, g), w, dtype, scale=50)


def test_backends_agree(backend_dtype):
    spec, dtype = backend_dtype
    X, Z = data(16, 8, 3, "cross_entropy")
    ref = pbp.Network([8, 10, 3], activation="relu", loss="cross_entropy", backend="numpy",
                      dtype=dtype, seed=5)
    net = ref.to(spec)
    assert net.backend.spec.startswith(spec.split(":")[0])
    l_ref, g_ref = ref.loss_and_grads(X, Z)
    l, g = net.loss_and_grads(X, Z)
    assert_close(l, l_ref, dtype, scale=10)
    for a, b in zip([x for p in g for x in p], [x for p in g_ref for x in p]):
        assert_close(to_np(net, a), to_np(ref, b), dtype, scale=10)
    assert_close(to_np(net, net.forward(X)), to_np(ref, ref.forward(X)), dtype, scale=10)


def test_same_seed_gives_bit_identical_initial_weights(backend_dtype):
    spec, dtype = backend_dtype
    a = pbp.Network([6, 5, 2], backend=spec, dtype=dtype, seed=11)
    b = pbp.Network([6, 5, 2], backend="numpy", dtype=dtype, seed=11)
    for (Wa, ba), (Wb, bb) in zip(a.params, b.params):
        assert np.array_equal(a.backend.to_numpy(Wa), b.backend.to_numpy(Wb))
        assert np.array_equal(a.backend.to_numpy(ba), np.zeros_like(b.backend.to_numpy(bb)))
    c = pbp.Network([6, 5, 2], backend="numpy", dtype=dtype, seed=12)
    assert not np.array_equal(c.backend.to_numpy(c.params[0][0]), b.backend.to_numpy(b.params[0][0]))


def test_params_live_on_the_backend(backend_dtype):
    spec, dtype = backend_dtype
    net = pbp.Network([3, 4, 2], backend=spec, dtype=dtype, seed=0)
    for W, b in net.params:
        assert net.backend.owns(W) and net.backend.owns(b)
        assert W.dtype == net.backend.dtype(dtype)
    A = net.forward(np.ones((2, 3)))
    assert net.backend.owns(A) and tuple(A.shape) == (2, 2)
    _, grads = net.loss_and_grads(np.ones((2, 3)), np.zeros((2, 2)))
    assert all(net.backend.owns(g) for pair in grads for g in pair)


# -- numerical stability -------------------------------------------------------------------
def test_sigmoid_and_softmax_are_stable_at_extremes(backend_dtype):
    spec, dtype = backend_dtype
    net = pbp.Network([1, 2], activation="identity", output_activation="sigmoid",
                      backend=spec, dtype=dtype, seed=0)
    net.set_params([(np.array([[1.0], [-1.0]]), np.zeros(2))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A = to_np(net, net.forward(np.array([[1000.0], [-1000.0], [0.0], [-30.0]])))
    np.testing.assert_allclose(A[:3], [[1, 0], [0, 1], [0.5, 0.5]], atol=0)
    assert_close(A[3, 0], 1 / (1 + np.exp(30.0)), dtype, scale=10)  # relative accuracy in the tail

    net = pbp.Network([2, 3], activation="identity", loss="cross_entropy", backend=spec,
                      dtype=dtype, seed=0)
    net.set_params([(np.array([[1e4, 0], [-1e4, 0], [0, 0]]), np.zeros(3))])
    X = np.array([[1.0, 0.0], [-1.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        A = to_np(net, net.forward(X))
        loss, grads = net.loss_and_grads(X, np.array([1, 1]))
    np.testing.assert_allclose(A, [[1, 0, 0], [0, 1, 0]], atol=1e-30)
    assert np.isfinite(loss) and loss == pytest.approx(1e4, rel=1e-6)  # -log softmax = 1e4
    assert all(np.isfinite(to_np(net, g)).all() for p in grads for g in p)


def test_binary_cross_entropy_is_finite_for_saturated_outputs(backend_dtype):
    spec, dtype = backend_dtype
    net = pbp.Network([1, 1], activation="identity", loss="binary_cross_entropy", backend=spec,
                      dtype=dtype, seed=0)
    net.set_params([(np.array([[1.0]]), np.zeros(1))])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, grads = net.loss_and_grads(np.array([[1000.0]]), np.array([[0.0]]))
    assert loss == pytest.approx(1000.0, rel=1e-6)  # -log(1 - sigmoid(1000)) = 1000
    assert to_np(net, grads[0][1])[0] == pytest.approx(1.0)


# -- the API's small promises ----------------------------------------------------------------
@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_backprop_frees_each_layers_activations_as_it_passes_them(activation):
    """Peak memory of one backward pass, measured by tracemalloc on NumPy (which frees an
    array as soon as its last reference goes, like a GPU memory pool): beyond the gradients
    themselves, at most four to five activation-sized arrays are alive at once. Keeping every
    layer's activations to the end of the pass needs six on this 3-hidden-layer network."""
    import tracemalloc

    sizes, m = [64, 512, 512, 512, 10], 256
    X, y = data(m, 64, 10, "cross_entropy")
    X = X.astype(np.float32)
    net = pbp.Network(sizes, activation=activation, loss="cross_entropy", seed=0)
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


def test_defaults():
    net = pbp.Network([2, 3, 2], seed=0)
    assert (net.activation, net.output_activation, net.loss, net.dtype) == ("sigmoid", "sigmoid", "mse", "float32")
    assert net.backend.name == "numpy" and net.init == "xavier"
    ce = pbp.Network([2, 3, 2], activation="relu", loss="cross_entropy", seed=0)
    assert ce.output_activation == "softmax" and ce.init == "he"
    assert pbp.Network([2, 1], loss="binary_cross_entropy").output_activation == "sigmoid"


@pytest.mark.parametrize("init,expected_std", [("normal", 0.05), ("xavier", np.sqrt(2 / 600)),
                                               ("he", np.sqrt(2 / 400))])
def test_initialisation_scales(init, expected_std):
    net = pbp.Network([400, 200], init=init, sigma=0.05, backend="numpy", dtype="float64", seed=0)
    W, b = net.params[0]
    assert np.std(W) == pytest.approx(expected_std, rel=0.02)
    assert np.all(b == 0)


def test_set_params_accepts_lists_and_does_not_alias(backend_dtype):
    spec, dtype = backend_dtype
    net = pbp.Network([2, 2], backend=spec, dtype=dtype, seed=0)
    net.set_params([([[1, 2], [3, 4]], [0.5, -0.5])])
    W, b = net.params[0]
    assert to_np(net, W).tolist() == [[1, 2], [3, 4]] and to_np(net, b).tolist() == [0.5, -0.5]
    host = np.eye(2)
    if spec == "numpy":
        net.set_params([(host, np.zeros(2))])
        host[0, 0] = 99
        assert to_np(net, net.params[0][0])[0, 0] == 1


def test_to_copies_between_backends(backend_dtype):
    spec, dtype = backend_dtype
    net = pbp.Network([3, 4, 2], backend="numpy", dtype="float64", seed=0)
    other = net.to(spec, dtype=dtype)
    assert other.backend.spec.split(":")[0] == spec.split(":")[0] and other.dtype == dtype
    for (W, _), (W2, _) in zip(net.params, other.params):
        assert_close(to_np(other, W2), W, dtype)
    assert other.config() | {"dtype": "float64"} == net.config()


def test_repr_and_config():
    net = pbp.Network([3, 4, 2], seed=1)
    assert "Network([3, 4, 2]" in repr(net) and "numpy" in repr(net)
    assert pbp.Network(**net.config()).config() == net.config()
