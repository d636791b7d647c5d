"""Learning-rate schedules in fit: one value per absolute epoch, checked by name, read as a
Python float (no promotion of a float32 step), allowed to reach 0."""

import numpy as np
import pytest
from train_helpers import classification, host_params, manual_fit, max_rel_diff, regression

import portable_bp as pbp
from portable_bp.optim import SGD, Adam, CosineLR, StepLR


@pytest.mark.parametrize("schedule", [StepLR(0.5, step_size=2, gamma=0.5), CosineLR(0.5, total_epochs=4, min_lr=0.05),
                                      lambda epoch: 0.1 * (epoch + 1)], ids=["step", "cosine", "callable"])
def test_fit_uses_the_schedule_per_epoch(schedule):
    """The loop with lr(epoch) per epoch; and the schedule is a function of the absolute
    epoch: 3 + 2 epochs in two fits equal 5 in one for plain SGD."""
    X, Z = regression(8)
    make = lambda: pbp.Network([3, 4, 2], activation="tanh", dtype="float64", seed=5)  # noqa: E731
    net, ref = make(), make()
    h = net.fit(X, Z, epochs=5, batch_size=3, optimizer=SGD(schedule), shuffle=False)
    want, _ = manual_fit(ref, X, Z, schedule, 3, 5)
    assert max_rel_diff(host_params(net), host_params(ref)) < 1e-9
    assert h.history["loss"] == pytest.approx(want, rel=1e-10)
    split = make()
    split.fit(X, Z, epochs=3, batch_size=3, optimizer="sgd", lr=schedule, shuffle=False)
    split.fit(X, Z, epochs=2, batch_size=3, optimizer="sgd", lr=schedule, shuffle=False)
    assert max_rel_diff(host_params(split), host_params(net)) < 1e-12


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf"), "0.1", None, True, np.array([0.1])],
                         ids=["negative", "nan", "inf", "str", "none", "bool", "1-element-array"])
def test_a_bad_scheduled_lr_names_the_epoch(value):
    """Epoch 0 trains; epoch 1's value is refused by name, and the network keeps epoch 0."""
    X, Z = regression(8)
    net = pbp.Network([3, 4, 2], dtype="float64", seed=0)
    schedule = lambda epoch: 0.1 if epoch < 1 else value  # noqa: E731
    with pytest.raises(ValueError, match=r"schedule's value for epoch 1 must be a number >= 0"):
        net.fit(X, Z, epochs=3, batch_size=4, lr=schedule)
    assert net.epochs_trained == 1 and net.optimizer_state[1]["step"] == 2


def test_a_schedule_may_reach_zero():
    """A warm-up from 0 and CosineLR past total_epochs (min_lr=0) train: an epoch at lr 0
    leaves the parameters as they were."""
    X, Z = regression(8)
    net = pbp.Network([3, 4, 2], dtype="float64", seed=0)
    h = net.fit(X, Z, epochs=3, batch_size=4, lr=CosineLR(0.1, total_epochs=2))
    assert len(h.history["loss"]) == 3
    before = host_params(net)
    net.fit(X, Z, epochs=1, batch_size=4, lr=lambda epoch: 0.0)
    assert max_rel_diff(host_params(net), before) == 0.0


@pytest.mark.skip_backends("jax", reason="compiles 12 programs here (seconds); the lr reaches its "
                                         "step through the same learning_rate() as everywhere")
def test_a_numpy_scalar_schedule_keeps_float32(xp_spec):
    """A schedule returning NumPy float64 scalars (or 0-d arrays) trains exactly like one
    returning Python floats: no promotion of the float32 step to float64."""
    X, y = classification(30)
    runs = []
    for schedule in (lambda e: 0.1 / (e + 1), lambda e: np.float64(0.1 / (e + 1)),
                     lambda e: np.asarray(0.1 / (e + 1))):
        net = pbp.Network([3, 5, 3], activation="relu", loss="cross_entropy", backend=xp_spec, seed=1)
        for fused in (True, False):
            net.fused_kernels = fused
            net.fit(X, y, epochs=2, batch_size=7, lr=schedule)
        assert all(str(p.dtype).endswith("float32") for pair in net.params for p in pair)
        runs.append(host_params(net))
    assert max_rel_diff(runs[1], runs[0]) == 0.0
    assert max_rel_diff(runs[2], runs[0]) == 0.0


def test_schedule_sees_absolute_epochs():
    """A second fit asks the schedule for epochs 3 and 4, not 0 and 1 (SGD and Adam alike)."""
    seen = []

    def lr(epoch):
        seen.append(epoch)
        return 0.01

    X, Z = regression(6)
    net = pbp.Network([3, 2], seed=0)
    net.fit(X, Z, epochs=3, batch_size=2, optimizer=SGD(lr))
    assert sorted(set(seen)) == [0, 1, 2]
    seen.clear()
    net.fit(X, Z, epochs=2, batch_size=2, optimizer=Adam(lr))
    assert sorted(set(seen)) == [3, 4]
