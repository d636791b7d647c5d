"""Callbacks: the order of their hooks (check before training, close however fit ends,
on_train_end only when it ends normally), stopping, and EarlyStopping."""

import numpy as np
import pytest
from train_helpers import Recorder, fail_at_step, host_params, max_rel_diff, overflow_expected, regression

import portable_bp as pbp
from portable_bp.train import Callback, EarlyStopping, TrainingDiverged


def overfit_case():
    """Training targets 2, validation targets 1: outputs rise from ~0 through 1 to 2, so the
    validation loss falls, bottoms out and rises again."""
    X = np.linspace(-1, 1, 8)[:, None]
    return X, np.full((8, 1), 2.0), np.full((8, 1), 1.0)


def small_net(**kw):
    return pbp.Network([1, 4, 1], activation="tanh", dtype="float64", seed=0, **kw)


# -- hooks ---------------------------------------------------------------------------------------
def test_callback_hooks_are_called_in_order():
    """check (with the metric names) before anything, begin, one on_epoch_end per epoch with
    the logs, end, then close: the clean-up comes last (a logger may close its file there,
    after on_train_end has written its summary). A second fit continues the epoch numbers."""
    X, Z = regression(10)
    net = pbp.Network([3, 4, 2], seed=0)
    rec = Recorder()
    net.fit(X, Z, epochs=3, batch_size=4, callbacks=[rec, lambda net, epoch, logs: None],
            validation_data=(X, Z))
    keys = ["loss", "time", "val_loss"]
    assert rec.events == [("check", keys), "begin", ("epoch", 0, keys), ("epoch", 1, keys),
                          ("epoch", 2, keys), "end", "close"]
    rec2 = Recorder()
    net.fit(X, Z, epochs=2, callbacks=(rec2,))
    assert [e[1] for e in rec2.events if e[0] == "epoch"] == [3, 4]


def test_plain_callable_returning_true_stops():
    """A plain callable is an on_epoch_end; True stops after that epoch, which counts."""
    calls = []

    def stop_at_two(net, epoch, logs):
        calls.append((epoch, sorted(logs), net.epochs_trained))
        return epoch == 2

    X, Z = regression(10)
    net = pbp.Network([3, 4, 2], seed=0)
    h = net.fit(X, Z, epochs=10, batch_size=4, callbacks=[stop_at_two])
    assert h.epochs == [0, 1, 2] and net.epochs_trained == 3
    assert calls == [(e, ["loss", "time"], e + 1) for e in range(3)]


def test_every_callback_sees_the_stopping_epoch():
    """One callback asking to stop does not skip the others' on_epoch_end for that epoch."""
    X, Z = regression(10)
    rec = Recorder()
    pbp.Network([3, 4, 2], seed=0).fit(X, Z, epochs=5, callbacks=[lambda net, epoch, logs: epoch == 1, rec])
    assert [e[1] for e in rec.events if e[0] == "epoch"] == [0, 1] and "end" in rec.events


def test_callback_with_only_some_hooks():
    """An object with only some hooks gets those called and the others skipped."""
    class OnlyEnds:
        def __init__(self):
            self.events = []

        def on_train_begin(self, net):
            self.events.append("begin")

        def on_train_end(self, net):
            self.events.append("end")

    X, Z = regression(10)
    cb = OnlyEnds()
    pbp.Network([3, 4, 2], seed=0).fit(X, Z, epochs=2, callbacks=[cb])
    assert cb.events == ["begin", "end"]


def test_close_runs_however_fit_ends_and_on_train_end_only_when_it_ends_normally(monkeypatch):
    """An interrupt, a divergence, an error in a callback: close runs, on_train_end does not
    (it could replace the parameters fit leaves, e.g. EarlyStopping restoring its best)."""
    X, Z = regression(10)

    class Raises(Callback):
        def on_epoch_end(self, net, epoch, logs):
            raise RuntimeError("callback failed")

    rec = Recorder()
    with pytest.raises(RuntimeError, match="callback failed"):
        pbp.Network([3, 4, 2], seed=0).fit(X, Z, epochs=3, callbacks=[rec, Raises()])
    assert rec.events[-1] == "close" and "end" not in rec.events

    rec = Recorder()
    with overflow_expected(), pytest.raises(TrainingDiverged):
        pbp.Network([3, 4, 2], activation="identity", dtype="float64", seed=0).fit(
            X * 1e200, Z, epochs=3, callbacks=[rec])
    assert rec.events[-1] == "close" and "end" not in rec.events

    rec = Recorder()
    fail_at_step(monkeypatch, 5)
    with pytest.raises(KeyboardInterrupt):
        pbp.Network([3, 4, 2], seed=0).fit(X, Z, epochs=3, batch_size=4, callbacks=[rec])
    assert rec.events[-1] == "close" and "end" not in rec.events
    assert [e[1] for e in rec.events if e[0] == "epoch"] == [0]


def test_a_failing_check_stops_fit_before_any_other_hook_and_close_still_runs():
    """check runs before training; when it refuses, no other hook runs but close, which is
    called however fit ends (a callback may hold an open file from its constructor)."""
    class Picky(Recorder):
        def check(self, metrics):
            super().check(metrics)
            raise ValueError("this callback needs val_auc")

    X, Z = regression(10)
    net, rec = pbp.Network([3, 4, 2], dtype="float64", seed=0), Picky()
    before = host_params(net)
    with pytest.raises(ValueError, match="val_auc"):
        net.fit(X, Z, epochs=2, callbacks=[rec])
    assert max_rel_diff(host_params(net), before) == 0.0 and net.epochs_trained == 0
    assert rec.events == [("check", ["loss", "time"]), "close"]


# -- EarlyStopping ----------------------------------------------------------------------------------
@pytest.mark.parametrize("restore", [True, False])
@pytest.mark.parametrize("patience", [1, 3])
def test_early_stopping(restore, patience):
    """Stops `patience` epochs after the best validation loss; with restore_best_weights the
    network ends with exactly the best epoch's parameters, else with the last epoch's."""
    X, Z, Zv = overfit_case()
    net = small_net()
    es, rec = EarlyStopping(patience=patience, restore_best_weights=restore), Recorder()
    h = net.fit(X, Z, epochs=200, batch_size=None, lr=0.05, validation_data=(X, Zv), callbacks=[rec, es])
    val = h.history["val_loss"]
    best = int(np.argmin(val))
    assert 2 <= best and val[-1] > val[best]  # fell, then rose: a real early stop
    assert es.best_epoch == best and es.best == val[best]
    assert len(val) == best + patience + 1  # stopped after `patience` epochs without improvement
    assert net.epochs_trained == len(val) == len(rec.params)
    expected = rec.params[best] if restore else rec.params[-1]
    for got, want in zip(host_params(net), expected):
        np.testing.assert_array_equal(got, want)
    if restore:
        assert max_rel_diff(rec.params[-1], rec.params[best]) > 1e-6  # restoring changed something
        assert net.evaluate(X, Zv)["loss"] == pytest.approx(val[best], rel=1e-12)


def test_early_stopping_min_delta_mode_and_reuse():
    """min_delta sets what counts as an improvement; mode follows the metric's name; the
    same object starts afresh in a second fit."""
    X, Z, Zv = overfit_case()
    net = small_net()
    es = EarlyStopping(patience=2, min_delta=1e9)  # nothing after the first epoch counts
    h = net.fit(X, Z, epochs=50, batch_size=None, lr=0.05, validation_data=(X, Zv), callbacks=[es])
    assert len(h.epochs) == 3 and es.best_epoch == 0
    assert EarlyStopping(monitor="val_accuracy").mode == "max"
    assert EarlyStopping(monitor="loss").mode == "min"
    # the same object in a second fit starts afresh (on_train_begin resets it)
    h2 = net.fit(X, Z, epochs=50, batch_size=None, lr=0.05, validation_data=(X, Zv), callbacks=[es])
    assert len(h2.epochs) == 3 and es.best_epoch == 3


def test_early_stopping_on_training_loss_never_stops_while_it_improves():
    """Monitoring the training loss of a run that keeps improving never stops it."""
    X, Z, _ = overfit_case()
    h = small_net().fit(X, Z, epochs=20, batch_size=None, lr=0.05,
                        callbacks=[EarlyStopping("loss", patience=1)])
    assert len(h.epochs) == 20


@pytest.mark.parametrize("monitor,with_val", [("val_loss", False), ("val_accuracy", True),
                                              ("accuracy", False), ("val_los", True)])
def test_early_stopping_on_a_missing_metric_fails_before_training(monitor, with_val):
    """A misspelled or absent monitor is a ValueError naming it, before the first step."""
    X, Z, Zv = overfit_case()
    net = small_net()
    before = host_params(net)
    with pytest.raises(ValueError, match=monitor):
        net.fit(X, Z, epochs=3, validation_data=(X, Zv) if with_val else None,
                callbacks=[EarlyStopping(monitor=monitor)])
    assert net.epochs_trained == 0 and max_rel_diff(host_params(net), before) == 0.0


@pytest.mark.parametrize("kwargs,exc,word", [(dict(patience=-1), ValueError, "patience"),
                                             (dict(patience=1.5), ValueError, "patience"),
                                             (dict(mode="sideways"), ValueError, "mode"),
                                             (dict(monitor=3), TypeError, "monitor")])
def test_early_stopping_bad_arguments(kwargs, exc, word):
    """Bad patience, mode or monitor are refused by name when the callback is made."""
    with pytest.raises(exc, match=word):
        EarlyStopping(**kwargs)
