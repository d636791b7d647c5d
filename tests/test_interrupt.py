"""Ctrl-C during fit: the network is left at the end of the last completed epoch, with
parameters, optimizer state and epochs_trained consistent, so that saving it and resuming
gives exactly (bit for bit, float64) the run that was never interrupted.

The interrupt is raised by the executor's step at a chosen batch (train_helpers.fail_at_step)
or by a callback; 18 samples in batches of 6 make 3 steps per epoch (one batch shape: JAX
compiles one program per network and shape, seconds each)."""

import numpy as np
import pytest
from train_helpers import assert_same_state, classification, fail_at_step, state_of, step_by_step

import portable_bp as pbp
from portable_bp.train import Callback, History

STEPS_PER_EPOCH = 3
N = 18
FIT = dict(batch_size=6, shuffle=True)


def classifier(spec="numpy", seed=7):
    return pbp.Network([3, 5, 3], activation="tanh", loss="cross_entropy", backend=spec,
                       dtype="float64", seed=seed)


class States(Callback):
    """The network's whole state (train_helpers.state_of) at the end of every epoch."""

    def __init__(self):
        self.states = []

    def on_epoch_end(self, net, epoch, logs):
        self.states.append(state_of(net))


@pytest.mark.dtypes("float64")
@pytest.mark.parametrize("batch_in_epoch", [0, 2], ids=["first-batch", "mid-epoch"])
@pytest.mark.cases(lambda xp_case, batch_in_epoch: xp_case.spec != "jax" or batch_in_epoch != 0,
                   reason="jax compiles per network (seconds): its mid-epoch case runs the same path")
def test_an_interrupt_leaves_the_end_of_the_last_completed_epoch(xp_case, monkeypatch, batch_in_epoch):
    """Interrupted in epoch 2: the network holds exactly what it held at the end of epoch 1
    (parameters, Adam's moments, step count 6, epochs_trained 2), and a History passed in
    keeps the two completed epochs."""
    X, y = classification(N)
    net, states, history = classifier(xp_case.spec), States(), History()
    fail_at_step(monkeypatch, 2 * STEPS_PER_EPOCH + batch_in_epoch + 1)
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, y, epochs=4, optimizer="adam", lr=0.05, callbacks=[states, history], **FIT)
    assert len(states.states) == 2 and history.epochs == [0, 1]
    assert states.states[-1]["optimizer"][1] == 2 * STEPS_PER_EPOCH
    assert_same_state(net, states.states[-1])


@pytest.mark.dtypes("float64")
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.cases(lambda xp_case, optimizer: xp_case.spec == "numpy" or optimizer == "adam",
                   reason="every optimizer's state on NumPy; adam's (two slots) on the other backends")
def test_saving_after_an_interrupt_and_resuming_equals_the_uninterrupted_run(xp_case, monkeypatch,
                                                                             tmp_path, optimizer):
    """Interrupted mid-epoch 2, saved, resumed by a new network (another seed: the
    checkpoint's orders the batches) with the saved optimizer: bit for bit the 4-epoch run."""
    X, y = classification(N)
    step_by_step(monkeypatch)  # the interrupted run steps: so do the others (bit for bit)
    straight = classifier(xp_case.spec)
    straight.fit(X, y, epochs=4, optimizer=optimizer, lr=0.05, **FIT)
    interrupted = classifier(xp_case.spec)
    with monkeypatch.context() as failing:
        fail_at_step(failing, 2 * STEPS_PER_EPOCH + 2)
        with pytest.raises(KeyboardInterrupt):
            interrupted.fit(X, y, epochs=4, optimizer=optimizer, lr=0.05, **FIT)
    interrupted.save(tmp_path / "ck")
    resumed = classifier(xp_case.spec, seed=12345)
    h = resumed.fit(X, y, epochs=4, checkpoint=tmp_path / "ck", resume=True, **FIT)
    assert h.epochs == [2, 3]
    assert_same_state(resumed, state_of(straight))


def test_an_interrupt_from_a_callback_keeps_the_epoch_it_completed(tmp_path):
    """A KeyboardInterrupt raised by on_epoch_end of epoch 1 comes after that epoch ended:
    the network keeps it (epochs_trained 2) and resuming from a save is exact."""

    class CtrlC(Callback):
        def on_epoch_end(self, net, epoch, logs):
            if epoch == 1:
                raise KeyboardInterrupt

    X, y = classification(N)
    straight, states = classifier(), States()
    straight.fit(X, y, epochs=3, optimizer="momentum", callbacks=[states], **FIT)
    net = classifier()
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, y, epochs=3, optimizer="momentum", callbacks=[CtrlC()], **FIT)
    assert_same_state(net, states.states[1])
    net.save(tmp_path / "ck")
    resumed = classifier()
    resumed.fit(X, y, epochs=3, checkpoint=tmp_path / "ck", resume=True, **FIT)
    assert_same_state(resumed, state_of(straight))


def test_an_interrupt_in_a_second_fits_first_epoch_resumes_as_that_fit(monkeypatch, tmp_path):
    """A second fit (another optimizer) interrupted before its first epoch ends: the
    parameters and epoch count are those before it, and what is saved then resumes into
    exactly the uninterrupted second fit."""
    X, y = classification(N)
    straight = classifier()
    straight.fit(X, y, epochs=2, optimizer="adam", lr=0.05, **FIT)
    straight.fit(X, y, epochs=2, optimizer="nesterov", **FIT)
    net = classifier()
    net.fit(X, y, epochs=2, optimizer="adam", lr=0.05, **FIT)
    before = state_of(net)
    fail_at_step(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        net.fit(X, y, epochs=2, optimizer="nesterov", **FIT)
    monkeypatch.undo()
    after = state_of(net)
    assert after["epochs_trained"] == 2
    for a, b in zip(after["params"], before["params"]):
        np.testing.assert_array_equal(a, b)
    net.save(tmp_path / "ck")
    resumed = classifier()
    resumed.fit(X, y, epochs=4, checkpoint=tmp_path / "ck", resume=True, **FIT)
    assert_same_state(resumed, state_of(straight))


@pytest.mark.dtypes("float64")
def test_an_error_mid_epoch_also_leaves_the_end_of_the_last_completed_epoch(xp_case, monkeypatch):
    """Not only Ctrl-C: any exception out of a step (out of memory, a device error) must not
    leave the network half way through an epoch while epochs_trained says otherwise, nor
    in a state that depends on the backend (immutable JAX arrays vs in-place updates)."""
    X, y = classification(N)
    net, states = classifier(xp_case.spec), States()
    fail_at_step(monkeypatch, STEPS_PER_EPOCH + 3, exc=MemoryError)
    with pytest.raises(MemoryError):
        net.fit(X, y, epochs=3, optimizer="momentum", callbacks=[states], **FIT)
    assert_same_state(net, states.states[0], "after an error in epoch 1")
