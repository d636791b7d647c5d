"""Which optimizer a resumed fit continues with: the saved one by default; with ``lr=``
alone, the saved one at that rate; an optimizer given explicitly wins (a UserWarning when it
differs from the saved one, whose state is kept); state it cannot use, or a crafted file
whose slots do not belong to its optimizer, is a ValueError before anything changes."""

import json
import warnings

import numpy as np
import pytest
from conftest import to_np
from train_helpers import (
    HostOptimizer,
    assert_same_state,
    count_steps,
    epoch_order,
    host_params,
    max_rel_diff,
    state_of,
)

import portable_bp as pb
from portable_bp.optim import SGD, Adam

FIT = dict(batch_size=8, shuffle=True)


def data(n=40):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 3)), rng.integers(0, 3, n)


def small_net(seed=7):
    return pb.Network([3, 5, 3], loss="cross_entropy", dtype="float64", seed=seed)


def saved_run(tmp_path, optimizer, epochs=2):
    """A checkpoint after ``epochs`` epochs with ``optimizer``, and the network that wrote it."""
    X, Z = data()
    net = small_net()
    net.fit(X, Z, epochs=epochs, optimizer=optimizer, checkpoint=tmp_path / "ck", **FIT)
    return net, tmp_path / "ck"


def test_lr_alone_changes_only_the_learning_rate(tmp_path):
    """Saved Adam(0.05) resumed with lr=0.01: the same betas and eps, the saved moments and
    step count, at the new rate: bit for bit one Adam run whose schedule drops to 0.01
    after epoch 2."""
    X, Z = data()
    straight = small_net()
    straight.fit(X, Z, epochs=4, optimizer=Adam(lambda e: 0.05 if e < 2 else 0.01, betas=(0.8, 0.99)), **FIT)
    _, path = saved_run(tmp_path, Adam(0.05, betas=(0.8, 0.99)))
    resumed = small_net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a note that the rate differs is allowed
        resumed.fit(X, Z, epochs=4, lr=0.01, checkpoint=path, resume=True, **FIT)
    opt, state = resumed.optimizer_state
    assert opt.config() == {**Adam(0.01, betas=(0.8, 0.99)).config()}
    assert state["step"] == straight.optimizer_state[1]["step"] == 20
    for a, b in zip(host_params(resumed), host_params(straight)):
        np.testing.assert_array_equal(a, b)


def test_an_explicit_other_optimizer_wins_with_a_warning_and_keeps_the_saved_state(tmp_path):
    """Saved momentum, resumed with nesterov (the same velocity slot): a UserWarning naming
    both configs; nesterov continues from the saved velocity and step count, as the
    hand-written formulas do from the saved state."""
    X, Z = data()
    saver, path = saved_run(tmp_path, "momentum")
    velocity = [to_np(saver, a) for a in saver.optimizer_state[1]["slots"]["velocity"]]
    ref, host = pb.load(path), HostOptimizer("nesterov")  # before the resumed fit saves over it
    resumed = small_net(seed=3)
    with pytest.warns(UserWarning, match="'nesterov': True.*instead of the saved.*'nesterov': False"):
        resumed.fit(X, Z, epochs=3, optimizer="nesterov", checkpoint=path, resume=True, **FIT)
    opt, state = resumed.optimizer_state
    assert opt.config() == SGD(0.05, momentum=0.9, nesterov=True).config() and state["step"] == 15

    host.slots = [velocity, None]
    params = host_params(ref)
    for s in range(0, 40, 8):  # epoch 2, in the order the checkpoint's seed gives
        rows = epoch_order(ref, 2, 40)[s:s + 8]
        _, grads = ref.loss_and_grads(X[rows], Z[rows])
        params = host.step(params, [to_np(ref, g) for pair in grads for g in pair], 0.05)
        ref.set_params(list(zip(params[0::2], params[1::2])))
    assert max_rel_diff(host_params(resumed), params) < 1e-12


@pytest.mark.parametrize("saved,given,slots", [("adam", "momentum", (r"\['m', 'v'\]", r"\['velocity'\]")),
                                               ("momentum", "adam", (r"\['velocity'\]", r"\['m', 'v'\]")),
                                               ("adam", "sgd", (r"\['m', 'v'\]", r"\[\]"))])
def test_an_optimizer_that_cannot_use_the_saved_state_is_refused_before_anything_changes(
        tmp_path, monkeypatch, saved, given, slots):
    """A ValueError naming both slot sets, before any step; the network (parameters, epoch
    count, optimizer state, seed) and the checkpoint file stay as they were."""
    X, Z = data()
    _, path = saved_run(tmp_path, saved)
    file_before = path.read_bytes()
    net = small_net(seed=3)
    net.fit(X, Z, epochs=1, optimizer="nesterov", **FIT)
    before, steps = state_of(net), count_steps(monkeypatch)
    with pytest.raises(ValueError, match=f"{slots[0]}.*{slots[1]}"):
        net.fit(X, Z, epochs=4, optimizer=given, checkpoint=path, resume=True, **FIT)
    assert steps["steps"] == 0
    assert_same_state(net, before)
    assert path.read_bytes() == file_before


def craft(path, config=None, rename=None):
    """Rewrite a checkpoint's optimizer entry: another config, or a slot renamed."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays["meta"][()]))
    if config is not None:
        meta["optimizer"]["config"] = config
    if rename is not None:
        old, new = rename
        meta["optimizer"]["slots"][new] = meta["optimizer"]["slots"].pop(old)
        for key in [k for k in arrays if k.startswith(f"opt__{old}__")]:
            arrays[key.replace(f"opt__{old}__", f"opt__{new}__")] = arrays.pop(key)
    arrays["meta"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


@pytest.mark.parametrize("saved,changes,names", [
    ("adam", dict(rename=("v", "w")), r"\['m', 'w'\].*\['m', 'v'\]"),
    ("adam", dict(config=SGD(0.1, momentum=0.9).config()), r"\['m', 'v'\].*\['velocity'\]"),
    ("momentum", dict(config=Adam(0.1).config()), r"\['velocity'\].*\['m', 'v'\]"),
], ids=["renamed-slot", "adam-slots-under-sgd", "sgd-slots-under-adam"])
def test_a_crafted_checkpoint_with_foreign_slots_is_a_value_error(tmp_path, monkeypatch, saved, changes, names):
    """Slots that do not belong to the saved optimizer: load and resume both raise a
    ValueError naming the file and both slot sets (not a KeyError mid-training, not a
    silent resume with fresh state), and nothing changes."""
    X, Z = data()
    _, path = saved_run(tmp_path, saved)
    craft(path, **changes)
    with pytest.raises(ValueError, match=names) as info:
        pb.load(path)
    assert repr(str(path)) in str(info.value)
    net = small_net(seed=3)
    before, steps = state_of(net), count_steps(monkeypatch)
    with pytest.raises(ValueError, match=names):
        net.fit(X, Z, epochs=4, checkpoint=path, resume=True, **FIT)
    assert steps["steps"] == 0
    assert_same_state(net, before)
