"""Divergence: fit names the epoch and batch and leaves the network at the last state
(parameters, optimizer state and step count together) whose loss was finite:

* batch k's update made the state non-finite (its loss finite): the state before batch k;
* batch k's loss was not finite: the state before batch k - 1; for k = 0 the state before
  the previous epoch's last batch (epochs_trained = that epoch's index);
* batch 0 of a fit's first epoch: the state the fit started from.

Each case is built so that the batch and cause are known, and the kept state is compared
with the hand-written loop stopped after the same number of steps."""

import math
import warnings

import numpy as np
import pytest
from conftest import to_np
from train_helpers import (
    HostOptimizer,
    Recorder,
    host_params,
    manual_fit,
    max_rel_diff,
    overflow_expected,
    regression,
    where_diverged,
)

import portable_bp as pbp
from portable_bp.train import EarlyStopping, TrainingDiverged


def linear(spec="numpy", n_in=1, n_out=1, dtype="float64"):
    return pbp.Network([n_in, n_out], activation="identity", backend=spec, dtype=dtype, seed=0)


def diverge(net, X, Z, **kwargs):
    """fit, which must diverge; (epoch, batch, cause) and the message."""
    with overflow_expected(), pytest.raises(TrainingDiverged) as info:
        net.fit(X, Z, shuffle=False, **kwargs)
    assert isinstance(info.value, FloatingPointError)
    return where_diverged(info.value), str(info.value)


def assert_kept(net, X, Z, steps, batch_size, lr, optimizer="momentum", epochs_trained=0):
    """``net`` holds the loop's state after ``steps`` steps: parameters, optimizer step count
    and velocity slots; and the epoch count the rule gives."""
    ref, opt = linear(n_in=X.shape[1], n_out=Z.shape[1]), HostOptimizer(optimizer)
    with overflow_expected():
        manual_fit(ref, X, Z, lr, batch_size, 10, optimizer=opt, max_steps=steps)
    assert max_rel_diff(host_params(net), host_params(ref)) < 1e-12
    state = net.optimizer_state[1]
    assert state["step"] == steps and net.epochs_trained == epochs_trained
    if steps and optimizer == "momentum":
        velocity = [to_np(net, a) for a in state["slots"]["velocity"]]
        np.testing.assert_allclose(np.concatenate([v.ravel() for v in velocity]),
                                   np.concatenate([v.ravel() for v in opt.slots[0]]), rtol=1e-12)


@pytest.mark.dtypes("float64")
def test_an_update_that_overflows_keeps_the_state_before_that_batch(xp_case):
    """Zero inputs: only the bias moves. Batch 0 moves it to 1e8 (finite), batch 1 follows
    its velocity to 1.9e8, batch 2's loss is finite but its update overflows."""
    X, Z = np.zeros((6, 2)), np.array([[1e-300], [1e-300], [1e8], [1e8], [0.0], [0.0]])
    net = linear(xp_case.spec, n_in=2)
    (epoch, batch, cause), text = diverge(net, X, Z, epochs=2, batch_size=2, lr=1e308, optimizer="momentum")
    assert (epoch, batch, cause) == (0, 2, "update")
    assert "keeps the parameters and optimizer state from before batch 2" in text and "lr=1e+308" in text
    assert_kept(net, X, Z, steps=2, batch_size=2, lr=1e308)
    assert math.isfinite(net.evaluate(X, Z)["loss"])


@pytest.mark.dtypes("float64")
def test_a_non_finite_loss_keeps_the_state_before_the_previous_batch(xp_case):
    """Batch 2's inputs (1e200) overflow its loss: the state before it is not to blame but
    the rule keeps the state before batch 1, the last whose own batch loss was finite."""
    rng = np.random.default_rng(0)
    X, Z = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    X[4:] = 1e200
    net = linear(xp_case.spec, n_in=3, n_out=2)
    (epoch, batch, cause), text = diverge(net, X, Z, epochs=2, batch_size=2, lr=0.1, optimizer="momentum")
    assert (epoch, batch, cause) == (0, 2, "loss")
    assert "from before batch 1, the last with a finite loss" in text
    assert_kept(net, X, Z, steps=1, batch_size=2, lr=0.1)
    assert math.isfinite(net.evaluate(X[:4], Z[:4])["loss"])


@pytest.mark.dtypes("float64")
def test_a_non_finite_loss_in_batch_0_keeps_the_state_before_the_previous_epochs_last_batch(xp_case):
    """Epoch 0's last batch (inputs 1e100) throws the weight to ~1e190, still finite; epoch
    1's first batch overflows its loss. Kept: the state before epoch 0's last batch, one
    step in, with epochs_trained = 0."""
    X, Z = np.array([[0.5], [1.0], [1e100], [1e100]]), np.zeros((4, 1))
    net = linear(xp_case.spec)
    (epoch, batch, cause), text = diverge(net, X, Z, epochs=3, batch_size=2, lr=1e-10, optimizer="momentum")
    assert (epoch, batch, cause) == (1, 0, "loss")
    assert "before the last batch (1) of epoch 0" in text
    assert_kept(net, X, Z, steps=1, batch_size=2, lr=1e-10, epochs_trained=0)
    assert math.isfinite(net.evaluate(X, Z)["loss"])


def geometric(lr=300.0, optimizer="momentum"):
    """Full-batch descent on a line with a step far too long: the error grows ~300-fold per
    epoch until, around epoch 55, the loss overflows while the parameters are finite."""
    X, Z = np.ones((4, 1)), np.zeros((4, 1))
    net, rec = linear(), Recorder()
    (epoch, batch, cause), _ = diverge(net, X, Z, epochs=200, batch_size=None, lr=lr, optimizer=optimizer,
                                       callbacks=[rec])
    return net, rec, X, Z, epoch, batch, cause


def test_full_batch_divergence_keeps_the_end_of_the_epoch_before_the_last_finite_one():
    """One batch per epoch: epoch E's loss overflows, so the state kept is the one before
    epoch E-1's only batch, i.e. the end of epoch E-2 (the loss of E-1 was finite from it)."""
    net, rec, X, Z, epoch, batch, cause = geometric()
    assert batch == 0 and cause == "loss" and epoch >= 3
    assert net.epochs_trained == epoch - 1 == net.optimizer_state[1]["step"]
    for got, want in zip(host_params(net), rec.params[epoch - 2]):
        np.testing.assert_array_equal(got, want)
    assert math.isfinite(net.evaluate(X, Z)["loss"])


def test_resuming_from_the_kept_state_with_a_lower_lr_trains_on(tmp_path):
    """Saved where divergence left it (parameters, velocity, step) and resumed with lr=0.01,
    training continues: every epoch's loss finite and falling."""
    net, _, X, Z, epoch, _, _ = geometric()
    net.save(tmp_path / "kept")
    resumed = linear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a note that lr differs from the saved one
        h = resumed.fit(X, Z, epochs=epoch + 5, batch_size=None, lr=0.01, checkpoint=tmp_path / "kept",
                        resume=True, shuffle=False)
    assert h.epochs == list(range(epoch - 1, epoch + 5))
    losses = h.history["loss"]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]


@pytest.mark.dtypes("float64")
def test_adam_moments_reaching_inf_are_a_divergence(xp_case):
    """A gradient of 1e200 squares to inf in Adam's second moment; the step m/sqrt(v) is
    then 0, so parameters and loss stay finite while the optimizer state is ruined: a
    divergence, and the state before that batch (the start) is kept, slots finite."""
    net = linear(xp_case.spec)
    net.set_params([(np.zeros((1, 1)), np.zeros(1))])
    X, Z = np.full((2, 1), 1e200), np.ones((2, 1))
    (epoch, batch, cause), _ = diverge(net, X, Z, epochs=3, batch_size=None, optimizer="adam", lr=0.1)
    assert (epoch, batch, cause) == (0, 0, "update")
    assert net.epochs_trained == 0 and net.optimizer_state[1]["step"] == 0
    slots = net.optimizer_state[1]["slots"]
    assert all(np.isfinite(to_np(net, a)).all() for name in ("m", "v") for a in slots[name])


@pytest.mark.dtypes("float32")  # float32's overflow is the case; float64 sums stay far from it
def test_float32_parameters_near_the_largest_float_are_no_false_divergence(xp_case):
    """Dead ReLU units: first-layer weights -3e38 and output weights +-3e38 multiply zeros,
    so the loss is finite and those weights never move; their sums overflow float32 (to
    -inf and +inf), which a sum-based check would call a divergence."""
    net = pbp.Network([1, 4, 1], activation="relu", backend=xp_case.spec, dtype="float32", seed=0)
    W1, W2 = np.full((4, 1), -3e38, np.float32), np.array([[3e38, 3e38, -3e38, 3e38]], np.float32)
    net.set_params([(W1, np.zeros(4, np.float32)), (W2, np.zeros(1, np.float32))])
    h = net.fit(np.ones((8, 1)), np.ones((8, 1)), epochs=2, batch_size=4, optimizer="momentum", lr=0.1)
    assert net.epochs_trained == 2 and all(math.isfinite(v) for v in h.history["loss"])
    np.testing.assert_array_equal(host_params(net)[0], W1)
    np.testing.assert_array_equal(host_params(net)[2], W2)


def test_a_fit_whose_first_batch_diverges_keeps_the_state_it_started_from():
    """Nothing in this fit had a finite loss: the network keeps its parameters and epoch
    count from before the fit, and the message says so."""
    X, Z = regression(8)
    net = linear(n_in=3, n_out=2)
    net.fit(X, Z, epochs=2, batch_size=4, optimizer="momentum", lr=0.01)
    before = host_params(net)
    (epoch, batch, cause), text = diverge(net, X * 1e200, Z, epochs=3, batch_size=4, lr=0.01)
    assert (epoch, batch, cause) == (2, 0, "loss") and "nothing before had a finite loss" in text
    assert max_rel_diff(host_params(net), before) == 0.0 and net.epochs_trained == 2


def test_early_stopping_does_not_override_the_divergence_rule():
    """After a divergence no on_train_end runs: EarlyStopping does not swap in its best
    epoch's parameters over the kept state."""
    X, Z = np.ones((4, 1)), np.zeros((4, 1))
    net, rec = linear(), Recorder()
    stopper = EarlyStopping(monitor="loss", patience=1000, restore_best_weights=True)
    (epoch, _, _), _ = diverge(net, X, Z, epochs=200, batch_size=None, lr=300.0, optimizer="momentum",
                               callbacks=[rec, stopper])
    for got, want in zip(host_params(net), rec.params[epoch - 2]):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("epochs", [1, 2])
def test_divergence_in_the_last_batch_of_an_epoch(epochs):
    """The epoch's only update overflows: caught by the end-of-epoch check, not missed
    because each batch's loss is taken before its update."""
    X, Z = regression(20)
    net = pbp.Network([3, 8, 2], activation="relu", output_activation="identity", dtype="float64", seed=0)
    (epoch, batch, cause), _ = diverge(net, 10 * X, Z, epochs=epochs, batch_size=None, lr=1e308)
    assert (epoch, batch, cause) == (0, 0, "update")
    assert all(np.isfinite(p).all() for p in host_params(net)) and net.epochs_trained == 0
