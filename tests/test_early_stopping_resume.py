"""Early stopping across a resume: the patience, the best value and epoch, and the best
weights live in the checkpoint, so a fit interrupted and resumed stops where one that ran
through stops, with the same weights. The oracle is the uninterrupted fit itself."""

import json
import re

import numpy as np
import pytest

import portable_bp as pb
from portable_bp import checkpoint
from portable_bp.cli import main
from portable_bp.train import EarlyStopping


def problem():
    rng = np.random.default_rng(0)
    X, Xv = rng.normal(size=(200, 4)), rng.normal(size=(60, 4))
    return X, (X[:, 0] + X[:, 1] ** 2 > 0.5).astype(int), Xv, (Xv[:, 0] + Xv[:, 1] ** 2 > 0.5).astype(int)


def fit(path, epochs, resume=False, comm=None, **stopping):
    X, y, Xv, yv = problem()
    net = pb.Network([4, 16, 2], activation="tanh", loss="cross_entropy", seed=1)
    stopper = EarlyStopping(patience=3, **stopping)
    history = net.fit(X, y, epochs=epochs, batch_size=16, optimizer="sgd", lr=0.5, validation_data=(Xv, yv),
                      callbacks=[stopper], checkpoint=path, resume=resume, comm=comm)
    return net, history, stopper


@pytest.fixture(scope="module")
def through(tmp_path_factory):
    """The fit that ran through: it stops at epoch 17, its best epoch 14 (index 13)."""
    net, history, stopper = fit(tmp_path_factory.mktemp("through") / "c.npz", 200)
    assert net.epochs_trained < 200 and stopper.best_epoch == net.epochs_trained - 1 - 3
    return net, history, stopper


@pytest.mark.parametrize("first", [14, 15, 16, 17], ids=lambda k: f"interrupted-after-{k}")
def test_a_resumed_fit_stops_where_the_uninterrupted_one_stops(tmp_path, through, first):
    """Interrupted with 0, 1, 2 or all 3 epochs of patience spent: the resumed fit stops at
    the same epoch, reports the same best and ends with the same (best) weights."""
    net, history, stopper = through
    path = tmp_path / "c.npz"
    fit(path, first)
    resumed, resumed_history, resumed_stopper = fit(path, 200, resume=True)
    assert resumed.epochs_trained == net.epochs_trained
    assert resumed_history.epochs == history.epochs
    assert resumed_history.history["val_loss"] == history.history["val_loss"]
    assert (resumed_stopper.best, resumed_stopper.best_epoch, resumed_stopper.wait) == (
        stopper.best, stopper.best_epoch, stopper.wait)
    for (W, b), (W0, b0) in zip(resumed.params, net.params):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)


def test_two_ranks_resume_the_patience_that_rank_0_alone_read(tmp_path, through):
    """The checkpoint exists on rank 0's machine only: the other rank gets the stopper's
    state and best weights from it, and both stop where one process stops."""
    from distributed_threads import run_ok

    net, history, stopper = through
    fit(tmp_path / "c.npz", 15)

    def resumed(comm):
        path = tmp_path / ("c.npz" if comm.rank == 0 else "elsewhere.npz")
        resumed_net, _, resumed_stopper = fit(path, 200, resume=True, comm=comm)
        return resumed_net, resumed_stopper

    for resumed_net, resumed_stopper in run_ok(2, resumed):
        assert resumed_net.epochs_trained == net.epochs_trained and resumed_stopper.best_epoch == stopper.best_epoch
        for (W, b), (W0, b0) in zip(resumed_net.params, net.params):
            np.testing.assert_allclose(W, W0, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(b, b0, rtol=1e-12, atol=1e-14)


def test_the_checkpoint_keeps_the_best_weights_apart_only_when_they_are_not_its_own(tmp_path, through):
    net, history, stopper = through
    path = tmp_path / "c.npz"
    fit(path, 15)  # best epoch 13 (index), the checkpoint's last is 14: the best weights are kept apart
    with np.load(path) as f:
        meta = json.loads(str(f["meta"][()]))
        assert meta["early_stopping"] == [{"monitor": "val_loss", "mode": "min", "best": stopper.best,
                                           "best_epoch": stopper.best_epoch, "wait": 1, "params": True}]
        np.testing.assert_array_equal(f["early0__W0"], net.params[0][0])
    fit(path, 14)  # its last epoch is the best: nothing kept apart
    with np.load(path) as f:
        assert "early0__W0" not in f.files and json.loads(str(f["meta"][()]))["early_stopping"][0]["wait"] == 0


def test_a_stopper_watching_another_metric_starts_again_with_a_warning(tmp_path):
    path = tmp_path / "c.npz"
    fit(path, 15)
    with pytest.warns(UserWarning, match="its patience starts again"):
        _, _, stopper = fit(path, 16, resume=True, monitor="val_accuracy")
    assert stopper.best_epoch == 15


def test_a_malformed_early_stopping_record_is_refused(tmp_path):
    path = tmp_path / "c.npz"
    fit(path, 15)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"][()]))
    meta["early_stopping"][0]["wait"] = -1
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="metadata 'early_stopping' is malformed"):
        pb.load(path)


def cli(folder, monkeypatch, capsys, *args):
    monkeypatch.chdir(folder)
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    assert status == 0, err
    return out


def test_the_command_resumed_stops_with_the_same_epochs_and_best(tmp_path, monkeypatch, capsys):
    common = ("train", "--dataset", "blobs", "--early-stopping", "2", "--checkpoint", "c.npz", "--save", "m.npz")
    through = cli(tmp_path, monkeypatch, capsys, *common, "--epochs", "300")
    line = re.search(r"early stopping: .*", through).group(0)
    stopped = int(re.search(r"stopped after epoch (\d+)", line).group(1))
    assert stopped < 300
    (tmp_path / "c.npz").unlink()
    cli(tmp_path, monkeypatch, capsys, *common, "--epochs", str(stopped - 1))
    resumed = cli(tmp_path, monkeypatch, capsys, *common, "--epochs", "300", "--resume")
    assert f"resumed at epoch {stopped - 1} of 300" in resumed
    assert re.search(r"early stopping: .*", resumed).group(0) == line
    record = checkpoint.read_record(tmp_path / "m.npz")["history"]
    assert record["epochs"] == list(range(stopped))
