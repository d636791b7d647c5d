"""Everything fit can check before training, it checks before its first step, and a fit
that raises then leaves the network exactly as it was: parameters, epochs_trained,
optimizer_state and seed (resume errors included)."""

import os
import stat

import numpy as np
import pytest
from train_helpers import assert_same_state, count_steps, regression, state_of

import portable_bp as pbp
from portable_bp.optim import SGD
from portable_bp.train import Callback, EarlyStopping

VAL = (np.zeros((4, 3)), np.zeros((4, 2)))


def bad_callback_check():
    class NeedsAuc(Callback):
        def check(self, metrics):
            raise ValueError(f"needs val_auc, fit logs {metrics}")

    return NeedsAuc()


def corrupt_checkpoint(tmp_path):
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not really a zip")
    return tmp_path / "junk.npz"


# kwargs (or a function of tmp_path giving them), the exception, a word its message names
BAD_FIT = {
    "epochs-negative": (dict(epochs=-1), ValueError, "epochs"),
    "epochs-float": (dict(epochs=2.5), ValueError, "epochs"),
    "epochs-bool": (dict(epochs=True), ValueError, "epochs"),
    "batch-zero": (dict(batch_size=0), ValueError, "batch_size"),
    "batch-negative": (dict(batch_size=-4), ValueError, "batch_size"),
    "batch-float": (dict(batch_size=2.5), ValueError, "batch_size"),
    "batch-bool": (dict(batch_size=True), ValueError, "batch_size"),
    "optimizer-name": (dict(optimizer="adagrad"), ValueError, "adagrad"),
    "optimizer-type": (dict(optimizer=3), TypeError, "optimizer"),
    "lr-with-object": (dict(optimizer=SGD(0.1), lr=0.1), ValueError, "lr"),
    "lr-negative": (dict(optimizer="sgd", lr=-0.1), ValueError, "lr"),
    "lr-inf": (dict(optimizer="adam", lr=float("inf")), ValueError, "lr"),
    "val-not-a-pair": (dict(validation_data=np.zeros((4, 3))), ValueError, "validation_data"),
    "val-one-item": (dict(validation_data=(np.zeros((4, 3)),)), ValueError, "validation_data"),
    "val-x-width": (dict(validation_data=(np.zeros((4, 5)), np.zeros((4, 2)))), ValueError, "X_val"),
    "val-z-length": (dict(validation_data=(np.zeros((4, 3)), np.zeros((3, 2)))), ValueError, "Z_val"),
    "val-x-nan": (dict(validation_data=(np.full((4, 3), np.nan), np.zeros((4, 2)))), ValueError, "X_val"),
    "val-batch-zero": (dict(validation_data=VAL, validation_batch_size=0), ValueError, "validation_batch_size"),
    "val-batch-float": (dict(validation_data=VAL, validation_batch_size=2.0), ValueError,
                        "validation_batch_size"),
    "val-batch-alone": (dict(validation_batch_size=-3), ValueError, "validation_batch_size"),
    "callbacks-none": (dict(callbacks=None), TypeError, "callbacks"),
    "callbacks-string": (dict(callbacks="history"), TypeError, "callbacks"),
    "callbacks-item": (dict(callbacks=[3]), TypeError, "callbacks"),
    "callback-check": (lambda tmp: dict(callbacks=[bad_callback_check()]), ValueError, "val_auc"),
    "monitor-misspelled": (dict(validation_data=VAL, callbacks=[EarlyStopping("val_los")]), ValueError,
                           "val_los"),
    "monitor-without-val": (dict(callbacks=[EarlyStopping("val_loss")]), ValueError, "val_loss"),
    "resume-no-path": (dict(resume=True), ValueError, "checkpoint"),
    "checkpoint-missing-folder": (lambda tmp: dict(checkpoint=tmp / "no" / "ck"), FileNotFoundError,
                                  "does not exist"),
    "checkpoint-is-a-folder": (lambda tmp: dict(checkpoint=tmp), IsADirectoryError, "folder"),
    "resume-corrupt-file": (lambda tmp: dict(checkpoint=corrupt_checkpoint(tmp), resume=True), ValueError,
                            "junk.npz"),
}


@pytest.mark.parametrize("name", list(BAD_FIT))
def test_a_bad_fit_argument_fails_before_the_first_step_and_changes_nothing(tmp_path, monkeypatch, name):
    """On a network that has trained before (so it has an optimizer state to lose)."""
    kwargs, exc, word = BAD_FIT[name]
    kwargs = kwargs(tmp_path) if callable(kwargs) else kwargs
    X, Z = regression(8)
    net = pbp.Network([3, 4, 2], dtype="float64", seed=0)
    net.fit(X, Z, epochs=1, optimizer="adam", batch_size=4)
    before, steps = state_of(net), count_steps(monkeypatch)
    with pytest.raises(exc, match=word):
        net.fit(X, Z, **kwargs)
    assert steps["steps"] == 0
    assert_same_state(net, before)


def test_a_failing_on_train_begin_or_interrupt_before_the_first_step_changes_nothing(tmp_path):
    """An error or a Ctrl-C in on_train_begin (before any step) leaves the network as it was."""
    X, Z = regression(8)
    net = pbp.Network([3, 4, 2], dtype="float64", seed=0)
    net.fit(X, Z, epochs=2, optimizer="momentum", batch_size=4)
    before = state_of(net)

    class Fails(Callback):
        def __init__(self, exc):
            self.exc = exc

        def on_train_begin(self, net):
            raise self.exc

    for exc in (RuntimeError("cannot open the log"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            net.fit(X, Z, epochs=3, optimizer="adam", callbacks=[Fails(exc)])
        assert_same_state(net, before, repr(exc))


def temporary_files(*folders):
    return [os.path.join(d, f) for top in folders for d, _, files in os.walk(top) for f in files
            if f.endswith(".tmp")]


def test_a_checkpoint_naming_a_folder_fails_at_once_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    """checkpoint=<a folder>: IsADirectoryError before any step, and no temporary file
    anywhere (a save attempted after an epoch would have had to clean one up)."""
    X, Z = regression(8)
    (tmp_path / "runs").mkdir()
    net, steps = pbp.Network([3, 4, 2], seed=0), count_steps(monkeypatch)
    with pytest.raises(IsADirectoryError, match="checkpoint must name a file"):
        net.fit(X, Z, epochs=2, checkpoint=tmp_path / "runs")
    assert steps["steps"] == 0 and net.epochs_trained == 0
    assert temporary_files(tmp_path) == [] and sorted(os.listdir(tmp_path / "runs")) == []


@pytest.fixture
def without_write_permission(monkeypatch):
    """``deny(path)`` takes write permission from a folder or file. Root ignores permission
    bits, so where the tests run as root os.access is made to honour them as it does for
    everyone else (the check itself is the library's; the OS's answer is emulated)."""
    denied = []

    def deny(path):
        mode = os.stat(path).st_mode
        denied.append((path, mode))
        os.chmod(path, mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))

    if os.geteuid() == 0:
        real = os.access

        def access(path, mode, *args, **kwargs):
            if mode & os.W_OK and any(os.path.samefile(path, p) for p, _ in denied if os.path.exists(path)):
                return False
            return real(path, mode, *args, **kwargs)

        monkeypatch.setattr(os, "access", access)
    yield deny
    for path, mode in reversed(denied):
        os.chmod(path, mode)


@pytest.mark.parametrize("what", ["folder", "file"])
def test_an_unwritable_checkpoint_fails_before_training(tmp_path, monkeypatch, without_write_permission, what):
    """A read-only folder, or a read-only existing checkpoint: PermissionError at once,
    nothing trained, the file untouched (not discovered after the first epoch)."""
    X, Z = regression(8)
    target = tmp_path / "ck"
    if what == "file":
        pbp.Network([3, 4, 2], seed=1).save(target)
        content = target.read_bytes()
        without_write_permission(target)
    else:
        without_write_permission(tmp_path)
    net, steps = pbp.Network([3, 4, 2], seed=0), count_steps(monkeypatch)
    before = state_of(net)
    with pytest.raises(PermissionError, match="read-only" if what == "file" else "cannot write"):
        net.fit(X, Z, epochs=2, checkpoint=target)
    assert steps["steps"] == 0
    assert_same_state(net, before)
    assert target.read_bytes() == content if what == "file" else not target.exists()
