"""What fit returns and counts: a History of per-epoch metrics, and epochs_trained."""

import math

import numpy as np
import pytest
from conftest import assert_close
from train_helpers import ONLY_FLOAT64_ON_JAX, classification

import portable_bp as pbp
from portable_bp.train import History


@pytest.mark.skip_backends("jax-float32", reason=ONLY_FLOAT64_ON_JAX)
def test_history_and_epoch_count(xp_case):
    """Every epoch logs loss, val_loss, val_accuracy and time as Python floats; the last
    validation metrics are the final network's; a second fit continues the count."""
    X, y = classification(20)
    Xv, yv = classification(20, seed=2)
    net = pbp.Network([3, 5, 3], activation="tanh", loss="cross_entropy", backend=xp_case.spec,
                      dtype=xp_case.dtype, seed=0)
    assert net.epochs_trained == 0
    h = net.fit(X, y, epochs=3, batch_size=7, lr=0.1, validation_data=(Xv, yv))
    assert isinstance(h, History)
    assert set(h.history) == {"loss", "val_loss", "val_accuracy", "time"}
    assert all(len(v) == 3 for v in h.history.values())
    assert h.epochs == [0, 1, 2] and net.epochs_trained == 3
    for key in ("loss", "val_loss", "val_accuracy", "time"):
        assert all(type(v) is float and math.isfinite(v) for v in h.history[key]), key
    assert all(t >= 0 for t in h.history["time"])
    assert all(0 <= a <= 1 for a in h.history["val_accuracy"])
    ev = net.evaluate(Xv, yv)
    assert_close(h.history["val_loss"][-1], ev["loss"], xp_case.dtype, scale=10)
    assert h.history["val_accuracy"][-1] == pytest.approx(ev["accuracy"])
    assert "History(epochs=3" in repr(h)

    h2 = net.fit(X, y, epochs=2, batch_size=7, lr=0.1)
    assert h2.epochs == [3, 4] and net.epochs_trained == 5
    assert set(h2.history) == {"loss", "time"} and len(h2.history["loss"]) == 2
    h3 = net.fit(X, y, epochs=0)
    assert h3.epochs == [] and h3.history == {} and net.epochs_trained == 5


@pytest.mark.parametrize("loss,keys", [("mse", {"loss", "val_loss", "time"}),
                                       ("binary_cross_entropy", {"loss", "val_loss", "val_accuracy", "time"})])
def test_history_keys_of_other_losses(loss, keys):
    """mse logs no accuracy; binary cross-entropy does; no validation, no val_* keys."""
    rng = np.random.default_rng(0)
    X, Z = rng.standard_normal((10, 3)), (rng.random((10, 2)) > 0.5).astype(float)
    net = pbp.Network([3, 4, 2], loss=loss, seed=0)
    h = net.fit(X, Z, epochs=2, batch_size=4, validation_data=(X, Z))
    assert set(h.history) == keys and all(len(v) == 2 for v in h.history.values())
    assert set(net.fit(X, Z, epochs=1).history) == {"loss", "time"}


def test_a_history_passed_as_a_callback_records_the_same_epochs():
    """History is also a callback: the one passed in records what fit's own does."""
    X, y = classification(20)
    net = pbp.Network([3, 4, 3], loss="cross_entropy", dtype="float64", seed=0)
    mine = History()
    returned = net.fit(X, y, epochs=3, batch_size=8, callbacks=[mine], validation_data=(X, y))
    assert mine.epochs == returned.epochs == [0, 1, 2]
    assert mine.history == returned.history
