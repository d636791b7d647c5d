"""Optimizers, layer by layer: against torch.optim on every backend x dtype, through both the
backend's checked Ops and its reference Ops, and their conventions by hand.

An optimizer receives each layer's gradient as E10's factors (``DenseGrad(delta, inputs)``:
grad W = deltaᵀ inputs, grad b = Σ_rows delta); torch.optim receives the same gradients
multiplied out in float64.
"""

import numpy as np
import pytest
from conftest import JAX_REPEATS, assert_close, make_data, to_np

import portable_bp as pbp
from portable_bp.ops import DenseGrad, Ops
from portable_bp.optim import SGD, Adam, get_optimizer

LAYERS = [(4, 3), (2, 4)]  # a 3-4-2 network: (n_out, n_in) per layer
STEPS, BATCH = 5, 6
LRS = [0.1, 0.05, 0.2, 0.1, 0.03]  # a different lr per step, as a schedule would give
SGD_CASES = {
    "plain": {}, "momentum": dict(momentum=0.9), "nesterov": dict(momentum=0.9, nesterov=True),
    "weight_decay": dict(weight_decay=0.01), "momentum_weight_decay": dict(momentum=0.5, weight_decay=0.1),
    "nesterov_weight_decay": dict(momentum=0.8, nesterov=True, weight_decay=0.05),
}
ADAM_CASES = {
    "default": {}, "weight_decay": dict(weight_decay=0.01), "betas_eps": dict(betas=(0.8, 0.99), eps=1e-6),
    "betas_eps_weight_decay": dict(betas=(0.5, 0.9), eps=1e-3, weight_decay=0.1),
}
CASES = [("SGD", name) for name in SGD_CASES] + [("Adam", name) for name in ADAM_CASES]
# JAX runs the reference Ops, as every backend's reference_ops case does; these reach each
# of its update primitives (sgd_dense; dense_grads, weight decay and momentum; adam)
JAX_CASES = {"plain", "nesterov_weight_decay", "betas_eps_weight_decay"}


def sequences(seed):
    """Initial (W, b) per layer and STEPS of (delta, inputs) factors per layer: no zeros,
    gradients of magnitudes from 1e-2 to 10."""
    rng = np.random.default_rng(seed)
    params = [(rng.standard_normal(s) + 0.5, rng.standard_normal(s[0]) + 0.5) for s in LAYERS]
    factors = [[(rng.standard_normal((BATCH, n_out)) * 10.0 ** rng.integers(-2, 2), rng.standard_normal((BATCH, n_in)))
                for n_out, n_in in LAYERS] for _ in range(STEPS)]
    return params, factors


def torch_reference(torch, name, kwargs, params, factors):
    """torch.optim on the multiplied-out gradients; the flat parameters after each step."""
    ps = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for pair in params for p in pair]
    opt = getattr(torch.optim, name)(ps, lr=LRS[0], **kwargs)
    out = []
    for lr, layers in zip(LRS, factors):
        opt.param_groups[0]["lr"] = lr
        grads = [g for delta, inputs in layers for g in (delta.T @ inputs, delta.sum(axis=0))]
        for p, g in zip(ps, grads):
            p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        out.append([p.detach().numpy().copy() for p in ps])
    return out


def run_ours(opt, case, ops, params, factors):
    """init, then hyperparams and one update per layer per step, as the training step calls
    them; the flat parameters (host float64) after each step. The inputs factor must come
    back unchanged (the contract: an update may write only into parameters, slots and the
    gradient, G or a DenseGrad's delta, which the step reads no more)."""
    params = [(case.asarray(W), case.asarray(b)) for W, b in params]
    state = opt.init(params)
    out = []
    for step, (lr, layers) in enumerate(zip(LRS, factors)):
        hyper = opt.hyperparams(step, lr)
        for l, (delta, inputs) in enumerate(layers):
            grad = DenseGrad(case.asarray(delta), case.asarray(inputs))
            params[l], state[l] = opt.update(grad, state[l], params[l], ops=ops, **hyper)
            assert_close(case.backend.to_numpy(grad.inputs), inputs, case.dtype)
        out.append([np.array(case.backend.to_numpy(p), dtype=np.float64) for pair in params for p in pair])
    return out


@pytest.mark.parametrize("which", ["ops", "reference_ops"])
@pytest.mark.parametrize("torch_name,case", CASES, ids=[f"{t}-{c}" for t, c in CASES])
@pytest.mark.skip_backends("jax-float32", reason=JAX_REPEATS)
@pytest.mark.cases(lambda xp_case, case: not xp_case.spec.startswith("jax") or case in JAX_CASES, reason=JAX_REPEATS)
def test_optimizer_matches_torch_optim(xp_case, which, torch_name, case):
    torch = pytest.importorskip("torch")
    ops = getattr(xp_case, which)
    if which == "reference_ops" and type(xp_case.ops) is Ops:
        pytest.skip(f"{xp_case.spec}'s Ops are the reference: the 'ops' case covers it")
    kwargs = (SGD_CASES if torch_name == "SGD" else ADAM_CASES)[case]
    params, factors = sequences(1 if torch_name == "SGD" else 2)
    want = torch_reference(torch, torch_name, kwargs, params, factors)
    opt = (SGD if torch_name == "SGD" else Adam)(lr=LRS[0], **kwargs)
    got = run_ours(opt, xp_case, ops, params, factors)
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            assert_close(a, b, xp_case.dtype, scale=0.1 if xp_case.dtype == "float64" else 1)  # 1e-12


@pytest.mark.requires("mutable")
@pytest.mark.parametrize("opt", [SGD(0.1), SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.1),
                                 Adam(0.1, weight_decay=0.1)], ids=["sgd", "nesterov", "adam"])
def test_reference_update_writes_into_nothing(xp_case, opt):
    """Through the reference Ops an update is functional: the parameters and slots it was
    given keep their values (on backends whose arrays could be written)."""
    (params, factors), ref = sequences(3), xp_case.reference_ops
    layer = (xp_case.asarray(params[0][0]), xp_case.asarray(params[0][1]))
    state = opt.init([layer])[0]
    for step, layers in enumerate(factors):
        before = [np.array(xp_case.backend.to_numpy(a), copy=True)
                  for a in [*layer, *(x for slot in state.values() for x in slot)]]
        grad = DenseGrad(*(xp_case.asarray(f) for f in layers[0]))
        new_layer, new_state = opt.update(grad, state, layer, ops=ref, **opt.hyperparams(step, 0.1))
        after = [xp_case.backend.to_numpy(a) for a in [*layer, *(x for slot in state.values() for x in slot)]]
        assert all(np.array_equal(a, b) for a, b in zip(after, before))
        layer, state = new_layer, new_state


# -- the conventions, by hand ---------------------------------------------------------------
def one_weight(opt, grads, case, w=1.0, ops=None):
    """A layer with one weight and one bias, both ``w``, on the case's backend, after an
    update per gradient in ``grads`` (a 1x1 delta against input 1: grad W = grad b = g);
    (W, b) as Python floats."""
    ops = ops or case.ops
    layer = (case.asarray(np.array([[w]])), case.asarray(np.array([w])))
    state = opt.init([layer])[0]
    for step, g in enumerate(grads):
        grad = DenseGrad(case.asarray(np.array([[g]])), case.asarray(np.array([[1.0]])))
        layer, state = opt.update(grad, state, layer, ops=ops, **opt.hyperparams(step, opt.lr))
    return float(to_np(case.backend, layer[0])[0, 0]), float(to_np(case.backend, layer[1])[0])


@pytest.mark.skip_backends("jax-float32", reason=JAX_REPEATS)
def test_sgd_first_steps_by_hand(xp_case):
    """v <- mu v + g; plain momentum steps along v, Nesterov along g + mu v; weight decay
    adds wd·p to g (PyTorch's conventions)."""
    assert one_weight(SGD(0.1, momentum=0.9), [0.5], xp_case) == pytest.approx((0.95, 0.95))
    W, b = one_weight(SGD(0.1, momentum=0.9), [0.5, -1.0], xp_case)
    assert W == pytest.approx(0.95 - 0.1 * (0.9 * 0.5 - 1.0)) and b == pytest.approx(W)
    nesterov = one_weight(SGD(0.1, momentum=0.9, nesterov=True), [0.5], xp_case)[0]
    assert nesterov == pytest.approx(1.0 - 0.1 * (0.5 + 0.9 * 0.5))
    decayed = one_weight(SGD(0.1, weight_decay=0.5), [0.5], xp_case, w=2.0)[0]
    assert decayed == pytest.approx(2.0 - 0.1 * (0.5 + 0.5 * 2.0))
    assert one_weight(SGD(0.1), [0.5, 0.25], xp_case) == pytest.approx((1.0 - 0.075, 1.0 - 0.075))


@pytest.mark.skip_backends("jax-float32", reason=JAX_REPEATS)
def test_adam_first_step_is_lr_times_sign(xp_case):
    """Bias correction makes Adam's first step lr·g/(|g| + eps) ≈ lr·sign(g)."""
    for g, want in ((1e-3, 1.0 - 0.01), (-50.0, 1.0 + 0.01), (0.0, 1.0)):
        assert one_weight(Adam(0.01), [g], xp_case)[0] == pytest.approx(want, rel=1e-6)


def test_adam_hyperparams_fold_the_bias_corrections_in_double_precision():
    opt = Adam(0.01, betas=(0.9, 0.999), eps=1e-8)
    for step in (0, 9, 999):
        t = step + 1
        hyper = opt.hyperparams(step, 0.01)
        assert hyper == pytest.approx({"step_size": 0.01 * np.sqrt(1 - 0.999 ** t) / (1 - 0.9 ** t),
                                       "eps_hat": 1e-8 * np.sqrt(1 - 0.999 ** t)}, rel=1e-15)
        assert all(type(v) is float for v in hyper.values())
    assert SGD(0.1).hyperparams(3, 0.05) == {"lr": 0.05}


class Recording(Ops):
    """The reference Ops, recording which primitives an update calls."""

    def __init__(self, xp):
        super().__init__(xp)
        self.calls = []

    def __getattribute__(self, name):
        if name in ("sgd_dense", "dense_grads", "sgd", "momentum", "adam"):
            object.__getattribute__(self, "calls").append(name)
        return object.__getattribute__(self, name)


@pytest.mark.parametrize("opt,calls", [
    (SGD(0.1), ["sgd_dense"]),  # E12 from the factors: no gradient array where BLAS can help
    (SGD(0.1, weight_decay=1e-3), ["dense_grads", "sgd", "sgd"]),
    (SGD(0.1, momentum=0.9), ["dense_grads", "momentum", "momentum"]),
    (Adam(0.1), ["dense_grads", "adam", "adam"]),
], ids=["plain", "weight_decay", "momentum", "adam"])
def test_each_optimizer_calls_its_primitives_once_per_layer(opt, calls):
    from conftest import Case

    ops = Recording(pbp.backends.get("numpy").xp)
    one_weight(opt, [0.5], Case("numpy", "float64"), ops=ops)
    assert ops.calls == calls


@pytest.mark.skip_backends("jax", reason=JAX_REPEATS)
def test_plain_sgd_fit_is_e12_on_the_mean_gradients(xp_spec):
    """Two unshuffled batches of plain SGD: each step is W − lr·∂L/∂W with the gradients
    loss_and_grads gives for that batch."""
    X, y = np.random.default_rng(0).standard_normal((8, 3)), np.arange(8) % 2
    net = pbp.Network([3, 4, 2], loss="cross_entropy", backend=xp_spec, dtype="float64", seed=0)
    ref = pbp.Network([3, 4, 2], loss="cross_entropy", dtype="float64", seed=0)
    net.fit(X, y, epochs=1, batch_size=4, optimizer="sgd", lr=0.3, shuffle=False)
    for start in (0, 4):
        _, grads = ref.loss_and_grads(X[start:start + 4], y[start:start + 4])
        ref.set_params([(W - 0.3 * dW, b - 0.3 * db) for (W, b), (dW, db) in zip(ref.params, grads)])
    for (W, b), (W2, b2) in zip(net.params, ref.params):
        np.testing.assert_allclose(to_np(net, W), W2, rtol=1e-13)
        np.testing.assert_allclose(to_np(net, b), b2, rtol=1e-13, atol=1e-16)


def test_a_subclass_keeps_its_own_update():
    """fit calls an SGD subclass's update (once per layer and batch), never a shortcut."""
    seen = []

    class Logged(SGD):
        def update(self, grad, state, param, *, ops, **hyper):
            seen.append(tuple(grad.delta.shape))
            return super().update(grad, state, param, ops=ops, **hyper)

    net = pbp.Network([4, 5, 2], loss="cross_entropy", backend="numpy", seed=0)
    X, y = make_data(12, 4, 2, "cross_entropy")
    net.fit(X, y, epochs=1, batch_size=4, optimizer=Logged(0.1))
    assert seen == [(4, 2), (4, 5)] * 3
    assert get_optimizer(Logged(0.1)).lr == 0.1
