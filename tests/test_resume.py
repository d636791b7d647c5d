"""fit(checkpoint=PATH, resume=True): continue a run from its checkpoint (parameters,
optimizer state, step and epoch counts, the seed that orders the batches) exactly as if it
had never stopped; start fresh when the file does not exist yet."""

import warnings

import numpy as np
import pytest
from train_helpers import assert_same_state, checkpoint_data, checkpoint_net, host_params, state_of

import portable_bp as pb
from portable_bp import checkpoint
from portable_bp.optim import SGD

data, small_net = checkpoint_data, checkpoint_net


@pytest.mark.parametrize("given", ["saved", "same"], ids=["saved-optimizer", "same-given-again"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("shuffle", [False, True])
def test_resume_equals_uninterrupted_run(tmp_path, optimizer, shuffle, given):
    """2 epochs, then a new network (another seed: the checkpoint's orders the batches)
    resumes to 4, with the saved optimizer (nothing given) or the same one given again:
    bit for bit the 4-epoch run, checkpoint file included, and no warning."""
    X, Z = data(n=50)
    kw = dict(batch_size=8, shuffle=shuffle)
    straight = small_net()
    straight.fit(X, Z, epochs=4, optimizer=optimizer, checkpoint=tmp_path / "a", **kw)
    small_net().fit(X, Z, epochs=2, optimizer=optimizer, checkpoint=tmp_path / "b", **kw)
    second = small_net(seed=12345)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = second.fit(X, Z, epochs=4, checkpoint=tmp_path / "b", resume=True,
                             optimizer=optimizer if given == "same" else None, **kw)
    assert history.epochs == [0, 1, 2, 3] and second.seed == straight.seed  # the checkpoint's epochs too
    assert_same_state(second, state_of(straight))
    assert_same_state(pb.load(tmp_path / "b"), state_of(straight))


def test_resume_without_a_file_starts_fresh_and_creates_it(tmp_path):
    """No file yet: a fresh run (the same as without resume) that writes the checkpoint;
    reading a missing file is a FileNotFoundError."""
    X, Z = data()
    a, b = small_net(), small_net()
    a.fit(X, Z, epochs=2, checkpoint=tmp_path / "new", resume=True)
    b.fit(X, Z, epochs=2)
    assert_same_state(a, state_of(b))
    assert pb.load(tmp_path / "new").epochs_trained == 2
    with pytest.raises(FileNotFoundError):
        checkpoint.read_run(tmp_path / "missing", small_net())


def test_resume_without_a_file_continues_the_epoch_count(tmp_path):
    """epochs is the total to reach: a network already at 3 trains 2 more to reach 5."""
    X, Z = data()
    net = small_net()
    net.fit(X, Z, epochs=3, batch_size=5)
    h = net.fit(X, Z, epochs=5, batch_size=5, checkpoint=str(tmp_path / "new.npz"), resume=True)
    assert h.epochs == [3, 4] and net.epochs_trained == 5


def test_resuming_a_finished_run_trains_nothing_and_takes_the_checkpoint(tmp_path, capsys):
    """epochs <= the saved count: no step, no epoch; the network holds the checkpoint, the
    History returned is the checkpoint's, and with progress the fit says it had nothing to do."""
    X, Z = data()
    done = small_net()
    straight = done.fit(X, Z, epochs=3, optimizer="adam", checkpoint=tmp_path / "ck")
    other = small_net(seed=1)
    capsys.readouterr()
    h = other.fit(X, Z, epochs=2, checkpoint=tmp_path / "ck", resume=True, progress=True)
    assert "already at 3 epochs: nothing to train" in capsys.readouterr().out
    assert h.epochs == [0, 1, 2] and h.history == straight.history
    assert_same_state(other, state_of(done))


def test_a_resumed_fit_returns_every_epoch_and_says_where_it_resumes(tmp_path, capsys):
    """3 epochs, then resumed to 5: the History holds the 5 epochs of the uninterrupted run
    (its losses bit for bit; the times are the runs' own), and progress says "resumed at
    epoch 3 of 5"."""
    X, Z = data()
    straight = small_net().fit(X, Z, epochs=5, optimizer="adam", batch_size=4)
    small_net().fit(X, Z, epochs=3, optimizer="adam", batch_size=4, checkpoint=tmp_path / "ck")
    capsys.readouterr()
    h = small_net(seed=7).fit(X, Z, epochs=5, batch_size=4, checkpoint=tmp_path / "ck", resume=True,
                              progress=True)
    assert "resumed at epoch 3 of 5" in capsys.readouterr().out
    assert h.epochs == [0, 1, 2, 3, 4] and set(h.history) == set(straight.history)
    assert h.history["loss"] == straight.history["loss"]
    assert pb.checkpoint.read_record(tmp_path / "ck")["history"]["values"]["loss"] == h.history["loss"]


def test_resume_from_a_checkpoint_without_optimizer_state(tmp_path):
    """A plain net.save() has no optimizer state: fit uses the optimizer given, fresh."""
    X, Z = data()
    small_net().save(tmp_path / "m")
    saved = checkpoint.read_run(tmp_path / "m", small_net())
    assert saved["optimizer"] is None and saved["slots"] is None and saved["step"] == 0
    resumed, direct = small_net(seed=3), small_net()
    resumed.fit(X, Z, epochs=2, optimizer="adam", checkpoint=tmp_path / "m", resume=True)
    direct.fit(X, Z, epochs=2, optimizer="adam")
    assert_same_state(resumed, state_of(direct))


def test_custom_lr_callable_needs_the_optimizer_again(tmp_path):
    """A learning-rate callable cannot be stored: the file keeps the state but no optimizer;
    resuming without one says to pass it again, one with other slots is refused naming
    both, and the same one again resumes exactly."""
    X, Z = data()
    make = lambda: SGD(lambda epoch: 0.1 / (1 + epoch), momentum=0.9)  # noqa: E731
    straight = small_net()
    straight.fit(X, Z, epochs=4, optimizer=make())
    small_net().fit(X, Z, epochs=2, optimizer=make(), checkpoint=tmp_path / "m")
    opt, state = pb.load(tmp_path / "m").optimizer_state
    assert opt is None and state["step"] == 4 and len(state["slots"]["velocity"]) == 4
    with pytest.raises(ValueError, match="pass the same optimizer again"):
        small_net().fit(X, Z, epochs=4, checkpoint=tmp_path / "m", resume=True)
    with pytest.raises(ValueError, match=r"\['velocity'\].*\['m', 'v'\]"):
        small_net().fit(X, Z, epochs=4, optimizer="adam", checkpoint=tmp_path / "m", resume=True)
    resumed = small_net()
    resumed.fit(X, Z, epochs=4, optimizer=make(), checkpoint=tmp_path / "m", resume=True)
    assert np.array_equal(np.concatenate([p.ravel() for p in host_params(resumed)]),
                          np.concatenate([p.ravel() for p in host_params(straight)]))


@pytest.mark.parametrize("change,key", [(dict(sizes=[3, 6, 3]), "sizes"),
                                        (dict(activation="tanh"), "activation"),
                                        (dict(loss="mse", output_activation="sigmoid"), "output_activation")])
def test_resume_refuses_another_architecture_and_changes_nothing(tmp_path, change, key):
    """read_run and fit refuse a checkpoint of another architecture, naming the setting;
    the network keeps everything (parameters, epochs, optimizer state, seed)."""
    X, Z = data()
    small_net().save(tmp_path / "m")
    cfg = {**dict(sizes=[3, 5, 3], activation="sigmoid", loss="cross_entropy"), **change}
    net = pb.Network(cfg.pop("sizes"), dtype="float64", seed=1, **cfg)
    before = state_of(net)
    with pytest.raises(ValueError, match=f"{key}=.*resume needs the same architecture"):
        checkpoint.read_run(tmp_path / "m", net)
    Zfit = Z if net.loss == "cross_entropy" else np.eye(3)[Z]
    with pytest.raises(ValueError, match=f"{key}=.*resume needs the same architecture"):
        net.fit(X[:, :3], Zfit, epochs=2, checkpoint=tmp_path / "m", resume=True)
    assert_same_state(net, before)
