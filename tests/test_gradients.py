"""Backpropagation's gradients against independent oracles, on every backend: central finite
differences (gradcheck) for every activation x loss at depths 1-4, PyTorch's autograd on
the same network written directly in torch, and the NumPy backend's reference numbers.
(The derivation's element-wise formulas E3/E5 are in test_math_properties.py.)"""

import numpy as np
import pytest
from conftest import JAX_REPEATS, assert_close, make_data, to_np

import portable_bp as pbp

HIDDEN = ["sigmoid", "tanh", "relu", "leaky_relu", "identity"]
# (loss, output activation): mse with every output, and the fused pairs (E11)
LOSS_OUTPUTS = [("mse", o) for o in HIDDEN + ["softmax"]] + [
    ("cross_entropy", "softmax"), ("binary_cross_entropy", "sigmoid"), ("poisson", "exp")]
JAX_LOSSES = [("mse", "sigmoid"), ("cross_entropy", "softmax"), ("binary_cross_entropy", "sigmoid")]
# depth 1 has no hidden layer, so the hidden activation only varies from depth 2 on
DEPTH_HIDDEN = [(1, "sigmoid")] + [(d, h) for d in (2, 3, 4) for h in HIDDEN]


def with_biases(net, seed):
    """Nonzero biases keep every unit off relu's kink at exactly 0 (a sample whose hidden
    units are all dead would otherwise give U = b = 0, where no derivative exists)."""
    rng = np.random.default_rng(seed)
    net.set_params([(to_np(net, W), rng.uniform(0.1, 0.5, b.shape[0])) for W, b in net.params])
    return net


# -- finite differences ----------------------------------------------------------------------
@pytest.mark.dtypes("float64")  # gradcheck works on a float64 copy: a float32 case repeats it
@pytest.mark.parametrize("depth,hidden", DEPTH_HIDDEN, ids=[f"depth{d}-{h}" for d, h in DEPTH_HIDDEN])
@pytest.mark.parametrize("loss,output", LOSS_OUTPUTS, ids=[f"{l}-{o}" for l, o in LOSS_OUTPUTS])
@pytest.mark.cases(lambda xp_case, depth, hidden, loss, output: not xp_case.spec.startswith("jax") or (
    (depth, hidden) == (2, "tanh") and (loss, output) in JAX_LOSSES), reason=JAX_REPEATS)
def test_gradcheck_every_activation_and_loss(xp_case, depth, hidden, loss, output):
    # jax: array_api_strict runs the same reference Ops at every depth
    sizes = [2] + [3] * (depth - 1) + [2]  # small: differences cost 4 losses per parameter
    net = pbp.Network(sizes, activation=hidden, output_activation=output, loss=loss,
                      backend=xp_case.spec, dtype="float64", seed=depth)
    X, Z = make_data(5, 2, 2, loss, seed=1)
    err = pbp.gradcheck(with_biases(net, depth), X, Z)
    assert err < 1e-7, f"relative error {err:.2e}"


def test_gradcheck_detects_a_wrong_gradient(monkeypatch):
    """The oracle can fail: E9 without its activation factor must be noticed."""
    net = pbp.Network([3, 5, 2], activation="tanh", backend="numpy", dtype="float64", seed=0)
    net.fused_kernels = False
    X, Z = make_data(4, 3, 2, "mse")
    assert pbp.gradcheck(net, X, Z) < 1e-7
    monkeypatch.setattr(net.ops, "backprop_delta", lambda D, W, A, f: D @ W)
    assert pbp.gradcheck(net, X, Z) > 1e-3


@pytest.mark.skip_backends("jax", reason=JAX_REPEATS)
def test_gradcheck_of_a_float32_network_runs_on_a_float64_copy(xp_spec):
    """float32 differences could not reach 1e-7; the network itself stays float32."""
    net = pbp.Network([3, 4, 2], backend=xp_spec, dtype="float32", seed=0)
    X, Z = make_data(4, 3, 2, "mse")
    assert pbp.gradcheck(net, X, Z) < 1e-7
    assert net.dtype == "float32" and net.params[0][0].dtype == net.backend.dtype("float32")


@pytest.mark.parametrize("eps", [0, -1e-4, float("inf"), float("nan")])
def test_gradcheck_refuses_a_bad_step(eps):
    net = pbp.Network([3, 2], backend="numpy", dtype="float64", seed=0)
    with pytest.raises(ValueError, match="eps must be a positive number"):
        pbp.gradcheck(net, *make_data(2, 3, 2, "mse"), eps=eps)


def test_numerical_gradients_of_a_quadratic_are_exact():
    """One identity layer, MSE, one sample x = 1: L = (w + b - z)²/2, so dL/dw = dL/db =
    w + b - z; fourth-order differences are exact on a quadratic (to rounding)."""
    from portable_bp.gradcheck import numerical_grads

    net = pbp.Network([1, 1], activation="identity", backend="numpy", dtype="float64", seed=0)
    net.set_params([(np.array([[0.75]]), np.array([0.5]))])
    (dW, db), = numerical_grads(net, np.array([[1.0]]), np.array([[2.0]]))
    assert dW[0, 0] == pytest.approx(-0.75, abs=1e-10) and db[0] == pytest.approx(-0.75, abs=1e-10)


# -- PyTorch autograd ---------------------------------------------------------------------------
def torch_loss_and_grads(torch, net, X, Z):
    """The same network written directly in PyTorch, differentiated by autograd."""
    F = torch.nn.functional
    params = [torch.tensor(to_np(net, a), dtype=torch.float64, requires_grad=True)
              for pair in net.params for a in pair]
    a = torch.tensor(X, dtype=torch.float64)
    acts = [net.activation] * (net.n_layers - 1) + [net.output_activation]
    for l, act in enumerate(acts):
        u = a @ params[2 * l].T + params[2 * l + 1]
        a = {"identity": lambda u: u, "softmax": lambda u: torch.softmax(u, dim=1),
             "leaky_relu": lambda u: F.leaky_relu(u, 0.01)}.get(act, getattr(torch, act, None))(u)
    m = X.shape[0]
    if net.loss == "mse":
        loss = ((a - torch.tensor(Z)) ** 2).sum() / (2 * m)
    elif net.loss == "cross_entropy":
        loss = F.cross_entropy(u, torch.tensor(Z, dtype=torch.long))
    elif net.loss == "poisson":  # half the Poisson deviance, with a = exp(u)
        z = torch.tensor(Z)
        loss = (torch.special.xlogy(z, z) - z * u - z + torch.exp(u)).sum() / m
    else:
        loss = F.binary_cross_entropy_with_logits(u, torch.tensor(Z), reduction="sum") / m
    loss.backward()
    return loss.item(), [p.grad.numpy() for p in params]


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("loss,output", LOSS_OUTPUTS, ids=[f"{l}-{o}" for l, o in LOSS_OUTPUTS])
@pytest.mark.skip_backends("jax-float32", reason=JAX_REPEATS)
@pytest.mark.cases(lambda xp_case, hidden: not xp_case.spec.startswith("jax") or hidden == "tanh", reason=JAX_REPEATS)
def test_matches_pytorch_autograd(xp_case, hidden, loss, output):
    torch = pytest.importorskip("torch")
    net = pbp.Network([5, 7, 6, 4], activation=hidden, output_activation=output, loss=loss,
                      backend=xp_case.spec, dtype=xp_case.dtype, seed=3)
    X, Z = make_data(9, 5, 4, loss, seed=4)
    want_loss, want = torch_loss_and_grads(torch, net, X.astype(xp_case.dtype).astype(float), Z)
    got_loss, grads = net.loss_and_grads(X, Z)
    assert isinstance(got_loss, float)
    assert_close(got_loss, want_loss, xp_case.dtype, scale=50)
    for g, w in zip([a for pair in grads for a in pair], want):
        assert_close(to_np(net, g), w, xp_case.dtype, scale=50)


# -- every backend against NumPy ---------------------------------------------------------------
@pytest.mark.parametrize("loss", ["cross_entropy", "mse"])
@pytest.mark.cases(lambda xp_case, loss: not xp_case.spec.startswith("jax") or loss != "mse", reason=JAX_REPEATS)
def test_backends_agree_with_numpy(xp_case, loss):
    X, Z = make_data(16, 8, 3, loss)
    ref = pbp.Network([8, 10, 3], activation="relu", loss=loss, backend="numpy", dtype=xp_case.dtype, seed=5)
    net = ref.to(xp_case.spec)
    assert net.backend is xp_case.backend
    l_ref, g_ref = ref.loss_and_grads(X, Z)
    l, g = net.loss_and_grads(X, Z)
    assert_close(l, l_ref, xp_case.dtype, scale=10)
    for a, b in zip([x for p in g for x in p], [x for p in g_ref for x in p]):
        assert_close(to_np(net, a), b, xp_case.dtype, scale=10)
    assert_close(to_np(net, net.forward(X)), ref.forward(X), xp_case.dtype, scale=10)
