"""Optimizers by name and by config, learning-rate schedules, optimizer state as checkpoints
store it, and the errors that name the problem."""

import math

import numpy as np
import pytest

from portable_bp.optim import (
    SGD,
    Adam,
    AdamW,
    CosineLR,
    RMSprop,
    StepLR,
    default_lrs,
    flat_slots,
    get_optimizer,
    layer_state,
    learning_rate,
    optimizer_from_config,
    optimizer_names,
)


# -- schedules -------------------------------------------------------------------------------
def test_step_lr_values():
    s = StepLR(0.1, step_size=3, gamma=0.5)
    assert [s(e) for e in range(8)] == pytest.approx([0.1] * 3 + [0.05] * 3 + [0.025] * 2, rel=1e-15)
    assert StepLR(1.0, 1)(4) == pytest.approx(1e-4)  # default gamma 0.1


def test_cosine_lr_values():
    s = CosineLR(1.0, total_epochs=10, min_lr=0.1)
    assert (s(0), s(5), s(10), s(25)) == pytest.approx((1.0, 0.55, 0.1, 0.1))  # flat after the end
    for e in range(10):
        assert s(e) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * e / 10)), rel=1e-14)
    values = [s(e) for e in range(11)]
    assert all(a > b for a, b in zip(values, values[1:]))
    assert CosineLR(0.5, 4)(4) == 0.0  # min_lr defaults to 0


def test_learning_rate_reads_a_schedule_as_a_python_float():
    """A schedule's value may be a NumPy scalar or 0-d array (read as a float, so that a
    NumPy float64 cannot promote a float32 step); 0 is allowed (warm-ups, CosineLR's end);
    anything else is refused with the epoch named."""
    assert learning_rate(SGD(0.3), 5) == 0.3
    assert learning_rate(SGD(CosineLR(0.5, 4)), 4) == 0.0
    for value in (np.float64(0.25), np.float32(0.25), np.array(0.25)):
        got = learning_rate(SGD(lambda epoch: value), 2)
        assert type(got) is float and got == 0.25
    for bad in (-0.1, float("nan"), float("inf"), np.array([0.1]), "0.1", None, True):
        with pytest.raises(ValueError, match="learning-rate schedule's value for epoch 3"):
            learning_rate(SGD(lambda epoch: bad), 3)
    assert learning_rate(object(), 0) is None  # a custom optimizer without lr


# -- configs -----------------------------------------------------------------------------------
@pytest.mark.parametrize("opt", [SGD(StepLR(0.1, 2, 0.5), momentum=0.9, nesterov=True, weight_decay=0.01),
                                 Adam(CosineLR(0.01, 7, 1e-4), betas=(0.8, 0.95), eps=1e-7),
                                 SGD(0.3), Adam(0.002, weight_decay=0.5)],
                         ids=["sgd-step", "adam-cosine", "sgd", "adam"])
def test_config_round_trip(opt):
    again = optimizer_from_config(opt.config())
    assert type(again) is type(opt) and again.config() == opt.config() and again.slots == opt.slots
    if callable(opt.lr):
        assert [again.lr(e) for e in range(10)] == [opt.lr(e) for e in range(10)]


def test_custom_schedule_cannot_be_rebuilt_from_config():
    opt = SGD(lambda epoch: 0.1)
    assert opt.lr(3) == 0.1 and opt.config()["lr"] is None
    with pytest.raises(ValueError, match="custom learning-rate callable"):
        optimizer_from_config(opt.config())


# -- names -------------------------------------------------------------------------------------
def test_names_and_their_default_learning_rates():
    """One table (shared with the command line) gives each name's default lr."""
    OPTIMIZERS, DEFAULT_LR = optimizer_names(), default_lrs()
    assert OPTIMIZERS == ("sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop")
    assert DEFAULT_LR == {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adam": 1e-3, "adamw": 1e-3,
                          "rmsprop": 1e-2}
    for name in OPTIMIZERS:
        assert get_optimizer(name).lr == DEFAULT_LR[name]
    sgd, m, n, a = (get_optimizer(name) for name in OPTIMIZERS[:4])
    assert (type(sgd), sgd.momentum, sgd.nesterov, sgd.slots) == (SGD, 0.0, False, ())
    assert (m.momentum, m.nesterov, m.slots) == (0.9, False, ("velocity",))
    assert (n.momentum, n.nesterov) == (0.9, True)
    assert type(a) is Adam and a.slots == ("m", "v")
    assert get_optimizer("momentum", 0.2, weight_decay=0.01).config()["weight_decay"] == 0.01
    assert get_optimizer("momentum", 0.2).lr == 0.2
    sched = StepLR(0.1, 2)
    assert get_optimizer("adam", sched).lr is sched
    obj = Adam(0.5)
    assert get_optimizer(obj) is obj


def test_an_object_without_the_protocol_is_refused_by_name():
    class Half:
        def init(self, params):
            return [{} for _ in params]

    with pytest.raises(TypeError, match=r"Half lacks hyperparams, update"):
        get_optimizer(Half())

    class Whole(Half):
        def hyperparams(self, step, lr):
            return {}

        def update(self, grad, state, param, *, ops):
            return param, state

    assert isinstance(get_optimizer(Whole()), Whole)


# -- optimizer state as checkpoints store it -----------------------------------------------------
def _state(opt, n_layers=2):
    params = [(np.full((3, 2), l + 1.0), np.full(3, -(l + 1.0))) for l in range(n_layers)]
    return opt.init(params)


@pytest.mark.parametrize("opt", [SGD(0.1), SGD(0.1, momentum=0.9), Adam(0.1)], ids=["sgd", "momentum", "adam"])
def test_flat_slots_and_layer_state_round_trip(opt):
    state = _state(opt)
    flat = flat_slots(state)
    assert sorted(flat) == sorted(opt.slots) and all(len(v) == 4 for v in flat.values())
    again = layer_state(opt, flat, 2)
    assert len(again) == 2
    for layer, back in zip(state, again):
        assert list(layer) == list(back) and all(a is b for k in layer for a, b in zip(layer[k], back[k]))
    assert opt.init([]) == [] and flat_slots([]) == {}


def test_layer_state_refuses_foreign_slots_and_wrong_counts():
    flat = flat_slots(_state(Adam(0.1)))
    with pytest.raises(ValueError, match=r"saved state has slots \['m', 'v'\], but sgd keeps \['velocity'\]"):
        layer_state(SGD(0.1, momentum=0.9), flat, 2, "saved state")
    with pytest.raises(ValueError, match=r"has slots \['m', 'v'\], but sgd keeps \[\]"):
        layer_state(SGD(0.1), flat, 2)
    with pytest.raises(ValueError, match=r"slot 'm' has 4 arrays, expected 6"):
        layer_state(Adam(0.1), flat, 3)
    renamed = {"m": flat["m"], "w": flat["v"]}
    with pytest.raises(ValueError, match=r"\['m', 'w'\], but adam keeps \['m', 'v'\]"):
        layer_state(Adam(0.1), renamed, 2)


# -- bad arguments ---------------------------------------------------------------------------
@pytest.mark.parametrize("make,exc,words", [
    (lambda: SGD(lr=-1), ValueError, "lr must be a positive number"),
    (lambda: SGD(lr=0), ValueError, "lr"),
    (lambda: SGD(lr="0.1"), ValueError, "lr"),
    (lambda: SGD(lr=True), ValueError, "lr"),
    (lambda: SGD(lr=float("nan")), ValueError, r"lr must be a positive number \(finite\)"),
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
    (lambda: get_optimizer("adagrad"), ValueError, "adagrad"),
    (lambda: get_optimizer(3), TypeError, "optimizer must be a name or an object"),
    (lambda: get_optimizer(SGD(0.1), lr=0.2), ValueError, "lr"),
    (lambda: get_optimizer("sgd", lr=-0.5), ValueError, "lr"),
    (lambda: optimizer_from_config({"name": "adagrad", "lr": 0.1}), ValueError, "adagrad"),
        (lambda: optimizer_from_config({"name": "momentum", "lr": 0.1}), ValueError, "momentum"),
        (lambda: RMSprop(alpha=1.0), ValueError, "alpha"),
        (lambda: RMSprop(momentum=-0.1), ValueError, "momentum"),
        (lambda: AdamW(weight_decay=-0.01), ValueError, "weight_decay"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_bad_arguments_name_the_problem(make, exc, words):
    with pytest.raises(exc, match=words):
        make()
