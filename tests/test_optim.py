"""Optimizers and learning-rate schedules: against torch.optim, on every backend, and their checks."""

import math

import numpy as np
import pytest

from portable_bp.backends import get as get_backend
from portable_bp.optim import SGD, Adam, CosineLR, StepLR, get_optimizer, optimizer_from_config

SHAPES = [(4, 3), (4,), (2, 4), (2,)]  # a 3-4-2 network's [W1, b1, W2, b2]
STEPS = 5
LRS = [0.1, 0.05, 0.2, 0.1, 0.03]  # a different lr per step, as a schedule would give


def sequences(seed=0):
    """Initial parameters and STEPS gradients per parameter: no zeros, varied magnitudes."""
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s) + 0.5 for s in SHAPES]
    grads = [[rng.standard_normal(s) * 10.0 ** rng.integers(-2, 2) for s in SHAPES] for _ in range(STEPS)]
    return params, grads


def torch_reference(torch, cls, kwargs, params, grads):
    """torch.optim on the same parameters and gradients; the parameters after each step."""
    ps = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in params]
    opt = cls(ps, lr=LRS[0], **kwargs)
    out = []
    for lr, gs in zip(LRS, grads):
        opt.param_groups[0]["lr"] = lr
        for p, g in zip(ps, gs):
            p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        out.append([p.detach().numpy().copy() for p in ps])
    return out


def run_ours(opt, backend, params, grads):
    """Our init/update on ``backend``; the parameters (on the host) after each step."""
    xp_params = [backend.asarray(p.copy(), "float64") for p in params]  # never write into ours
    state = opt.init(xp_params)
    out = []
    for lr, gs in zip(LRS, grads):
        before = list(xp_params)
        xp_grads = [backend.asarray(g, "float64") for g in gs]
        xp_params, state = opt.update(xp_params, xp_grads, state, lr, backend.mutable)
        if backend.mutable:  # updated in place: the same arrays come back
            assert all(a is b for a, b in zip(xp_params, before))
        else:  # rebound: new arrays, the old ones untouched
            assert all(a is not b for a, b in zip(xp_params, before))
        out.append([np.array(backend.to_numpy(p), dtype=np.float64, copy=True) for p in xp_params])
    assert state["step"] == STEPS
    return out


def assert_rel(actual, expected, rtol=1e-12):
    actual, expected = np.asarray(actual), np.asarray(expected)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(1.0, np.abs(expected).max()))


SGD_CASES = {
    "plain": {},
    "momentum": dict(momentum=0.9),
    "nesterov": dict(momentum=0.9, nesterov=True),
    "weight_decay": dict(weight_decay=0.01),
    "momentum_weight_decay": dict(momentum=0.5, weight_decay=0.1),
    "nesterov_weight_decay": dict(momentum=0.8, nesterov=True, weight_decay=0.05),
}
ADAM_CASES = {
    "default": {},
    "weight_decay": dict(weight_decay=0.01),
    "betas_eps": dict(betas=(0.8, 0.99), eps=1e-6),
    "betas_eps_weight_decay": dict(betas=(0.5, 0.9), eps=1e-3, weight_decay=0.1),
}


CASES = [("SGD", SGD, name) for name in SGD_CASES] + [("Adam", Adam, name) for name in ADAM_CASES]


@pytest.mark.parametrize("torch_name,ours,case", CASES, ids=[f"{t}-{c}" for t, _, c in CASES])
def test_optimizer_matches_torch(backend64, torch_name, ours, case):
    torch = pytest.importorskip("torch")
    params, grads = sequences(1 if ours is SGD else 2)
    kwargs = (SGD_CASES if ours is SGD else ADAM_CASES)[case]
    want = torch_reference(torch, getattr(torch.optim, torch_name), kwargs, params, grads)
    got = run_ours(ours(lr=LRS[0], **kwargs), get_backend(backend64), params, grads)
    for g, w in zip(got, want):
        for a, b in zip(g, w):
            assert_rel(a, b)


@pytest.mark.parametrize("opt", [SGD(0.1), SGD(0.1, momentum=0.9), SGD(0.1, momentum=0.9, nesterov=True),
                                 Adam(0.1, weight_decay=0.1)], ids=["sgd", "momentum", "nesterov", "adam"])
def test_immutable_update_leaves_inputs_alone_and_agrees_with_in_place(opt):
    """update(mutable=False) on NumPy arrays gives the in-place numbers without writing into
    the parameters, the gradients or the optimizer's slot arrays."""
    params, grads = sequences(3)
    p_in, p_im = [p.copy() for p in params], [p.copy() for p in params]
    s_in, s_im = opt.init(p_in), opt.init(p_im)
    for lr, gs in zip(LRS, grads):
        keep_p = [p.copy() for p in p_im]
        slots_before = {k: list(v) for k, v in s_im["slots"].items()}
        slots_copy = {k: [a.copy() for a in v] for k, v in s_im["slots"].items()}
        g_copy = [g.copy() for g in gs]
        p_in, s_in = opt.update(p_in, gs, s_in, lr, True)
        new, s_im = opt.update(p_im, gs, s_im, lr, False)
        for old, kept in zip(p_im, keep_p):
            np.testing.assert_array_equal(old, kept)
        for k, arrs in slots_before.items():
            for a, c in zip(arrs, slots_copy[k]):
                np.testing.assert_array_equal(a, c)
        for g, c in zip(gs, g_copy):
            np.testing.assert_array_equal(g, c)
        p_im = new
    for a, b in zip(p_in, p_im):
        assert_rel(a, b, 1e-15)


def test_sgd_first_steps_by_hand():
    """The SGD conventions spelled out: v <- mu v + g; nesterov steps along g + mu v."""
    p, g1, g2 = np.array([1.0]), np.array([0.5]), np.array([-1.0])
    opt = SGD(0.1, momentum=0.9)
    s = opt.init([p])
    (p,), s = opt.update([p], [g1], s, 0.1)
    assert p[0] == pytest.approx(1.0 - 0.1 * 0.5)
    (p,), s = opt.update([p], [g2], s, 0.1)
    assert p[0] == pytest.approx(0.95 - 0.1 * (0.9 * 0.5 - 1.0))
    p = np.array([1.0])
    opt = SGD(0.1, momentum=0.9, nesterov=True)
    s = opt.init([p])
    (p,), s = opt.update([p], [g1], s, 0.1)
    assert p[0] == pytest.approx(1.0 - 0.1 * (0.5 + 0.9 * 0.5))
    p = np.array([2.0])
    opt = SGD(0.1, weight_decay=0.5)
    (p,), _ = opt.update([p], [g1], opt.init([p]), 0.1)
    assert p[0] == pytest.approx(2.0 - 0.1 * (0.5 + 0.5 * 2.0))


def test_plain_sgd_takes_gradients_already_times_lr():
    """Plain SGD (only) accepts lr·g and subtracts it; fit uses that for plain SGD, and
    backprop then yields lr·g: the same step as the unscaled gradient times lr. (With fused
    kernels on, NumPy's plain SGD takes the one-call step instead: test_fused covers it.)"""
    import portable_bp as pbp
    from portable_bp import optim

    assert SGD(0.1).takes_lr_in_grads
    assert not SGD(0.1, momentum=0.9).takes_lr_in_grads
    assert not SGD(0.1, weight_decay=1e-4).takes_lr_in_grads
    p, g = np.array([1.0, 2.0]), np.array([0.25, -0.5])
    (p,), s = SGD(0.1).update([p], [0.1 * g], SGD(0.1).init([p]), 0.1, lr_in_grads=True)
    np.testing.assert_allclose(p, [1.0 - 0.025, 2.0 + 0.05], rtol=1e-15)
    assert s["step"] == 1
    with pytest.raises(ValueError, match="plain SGD"):
        SGD(0.1, momentum=0.9).update([p], [g], {"step": 0, "slots": {"velocity": [g * 0]}}, 0.1,
                                      lr_in_grads=True)

    seen = []
    update = optim.SGD.update

    def recording(self, *args, **kwargs):
        seen.append(kwargs.get("lr_in_grads", False))
        return update(self, *args, **kwargs)

    X, y = np.random.default_rng(0).standard_normal((8, 3)), np.arange(8) % 2
    nets = {}
    for name in ("sgd", "momentum"):
        net = pbp.Network([3, 4, 2], loss="cross_entropy", dtype="float64", seed=0)
        ref = pbp.Network([3, 4, 2], loss="cross_entropy", dtype="float64", seed=0)
        net.fused_kernels = False  # the Array API path, through SGD.update
        seen.clear()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(optim.SGD, "update", recording)
            net.fit(X, y, epochs=1, batch_size=4, optimizer=name, lr=0.3, shuffle=False)
        nets[name] = seen.copy()
        if name == "sgd":  # the same two steps by hand: E12 on loss_and_grads' mean gradients
            for start in (0, 4):
                _, grads = ref.loss_and_grads(X[start:start + 4], y[start:start + 4])
                ref.set_params([(W - 0.3 * dW, b - 0.3 * db) for (W, b), (dW, db) in zip(ref.params, grads)])
            for (W, b), (W2, b2) in zip(net.params, ref.params):
                np.testing.assert_allclose(W, W2, rtol=1e-13)
                np.testing.assert_allclose(b, b2, rtol=1e-13, atol=1e-16)
    assert nets == {"sgd": [True, True], "momentum": [False, False]}


def test_adam_first_step_is_lr_times_sign():
    """Bias correction makes Adam's first step lr * g / (|g| + eps) ~ lr * sign(g)."""
    p = np.array([1.0, -2.0, 3.0])
    g = np.array([1e-3, -50.0, 0.0])
    opt = Adam(0.01)
    (p,), s = opt.update([p], [g], opt.init([p]), 0.01)
    np.testing.assert_allclose(p, [1.0 - 0.01, -2.0 + 0.01, 3.0], rtol=1e-6)
    assert s["step"] == 1


# -- schedules -------------------------------------------------------------------------------
def test_step_lr_values():
    s = StepLR(0.1, step_size=3, gamma=0.5)
    assert [s(e) for e in range(8)] == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.025] * 2, rel=1e-15)
    assert StepLR(1.0, 1)(4) == pytest.approx(1e-4)  # default gamma 0.1


def test_cosine_lr_values():
    s = CosineLR(1.0, total_epochs=10, min_lr=0.1)
    assert s(0) == pytest.approx(1.0)
    assert s(5) == pytest.approx(0.55)
    assert s(10) == pytest.approx(0.1)
    assert s(25) == pytest.approx(0.1)  # flat after total_epochs
    for e in range(10):
        expected = 0.1 + 0.45 * (1 + math.cos(math.pi * e / 10))
        assert s(e) == pytest.approx(expected, rel=1e-14)
    values = [s(e) for e in range(11)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert CosineLR(0.5, 4)(4) == 0.0  # min_lr defaults to 0


@pytest.mark.parametrize("opt", [SGD(StepLR(0.1, 2, 0.5), momentum=0.9, nesterov=True, weight_decay=0.01),
                                 Adam(CosineLR(0.01, 7, 1e-4), betas=(0.8, 0.95), eps=1e-7),
                                 SGD(0.3), Adam(0.002, weight_decay=0.5)],
                         ids=["sgd-step", "adam-cosine", "sgd", "adam"])
def test_config_round_trip(opt):
    again = optimizer_from_config(opt.config())
    assert type(again) is type(opt) and again.config() == opt.config()
    if callable(opt.lr):
        assert [again.lr(e) for e in range(10)] == [opt.lr(e) for e in range(10)]


def test_custom_schedule_cannot_be_rebuilt_from_config():
    opt = SGD(lambda epoch: 0.1)
    assert opt.lr(3) == 0.1
    with pytest.raises(ValueError, match="custom learning-rate callable"):
        optimizer_from_config(opt.config())


# -- names ---------------------------------------------------------------------------------
def test_get_optimizer_by_name():
    assert isinstance(get_optimizer("sgd"), SGD) and get_optimizer("sgd").lr == 0.01
    assert get_optimizer("sgd").momentum == 0.0
    m = get_optimizer("momentum", 0.2)
    assert (m.lr, m.momentum, m.nesterov) == (0.2, 0.9, False)
    n = get_optimizer("nesterov")
    assert (n.momentum, n.nesterov) == (0.9, True)
    a = get_optimizer("adam")
    assert isinstance(a, Adam) and a.lr == 1e-3
    sched = StepLR(0.1, 2)
    assert get_optimizer("adam", sched).lr is sched
    obj = Adam(0.5)
    assert get_optimizer(obj) is obj


# -- bad arguments ---------------------------------------------------------------------------
@pytest.mark.parametrize("make,exc,words", [
    (lambda: SGD(lr=-1), ValueError, "lr"),
    (lambda: SGD(lr=0), ValueError, "lr"),
    (lambda: SGD(lr="0.1"), ValueError, "lr"),
    (lambda: SGD(lr=True), ValueError, "lr"),
    (lambda: SGD(lr=float("nan")), ValueError, "lr"),
    (lambda: SGD(momentum=1.5), ValueError, "momentum"),
    (lambda: SGD(momentum=1.0), ValueError, "momentum"),
    (lambda: SGD(momentum=-0.1), ValueError, "momentum"),
    (lambda: SGD(nesterov=True, momentum=0), ValueError, "nesterov"),
    (lambda: SGD(weight_decay=-1e-3), ValueError, "weight_decay"),
    (lambda: Adam(lr=-1e-3), ValueError, "lr"),
    (lambda: Adam(betas=(1.0, 0.9)), ValueError, r"betas\[0\]"),
    (lambda: Adam(betas=(0.9, 1.0)), ValueError, r"betas\[1\]"),
    (lambda: Adam(betas=(0.9, -0.1)), ValueError, r"betas\[1\]"),
    (lambda: Adam(betas=0.9), ValueError, "betas"),
    (lambda: Adam(betas=(0.9, 0.99, 0.999)), ValueError, "betas"),
    (lambda: Adam(eps=0), ValueError, "eps"),
    (lambda: Adam(weight_decay=-1), ValueError, "weight_decay"),
    (lambda: StepLR(0.1, step_size=0), ValueError, "step_size"),
    (lambda: StepLR(0.1, step_size=2.5), ValueError, "step_size"),
    (lambda: StepLR(0.1, step_size=2, gamma=0), ValueError, "gamma"),
    (lambda: StepLR(-0.1, step_size=2), ValueError, "lr"),
    (lambda: CosineLR(0.1, total_epochs=0), ValueError, "total_epochs"),
    (lambda: CosineLR(0.1, total_epochs=10, min_lr=-1), ValueError, "min_lr"),
    (lambda: get_optimizer("rmsprop"), ValueError, "rmsprop"),
    (lambda: get_optimizer(3), TypeError, "optimizer"),
    (lambda: get_optimizer(SGD(0.1), lr=0.2), ValueError, "lr"),
    (lambda: get_optimizer("sgd", lr=-0.5), ValueError, "lr"),
    (lambda: optimizer_from_config({"name": "rmsprop", "lr": 0.1}), ValueError, "rmsprop"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_arguments_name_the_problem(make, exc, words):
    with pytest.raises(exc, match=words):
        make()
