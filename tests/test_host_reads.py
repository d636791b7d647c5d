"""The hot loop reads nothing back per batch: at most one host read per epoch (the loss)
without validation, three with it (val loss and accuracy), plus a constant per fit.

What is counted: every call, on any torch tensor, of the methods through which a value
reaches the host - item, tolist, numpy, cpu, __float__, __int__, __index__, __bool__ and
__array__ - made from Python. (On a CPU tensor that is the only way a value can reach
Python code; device-internal syncs inside single torch kernels are not visible here.)
"""

import collections
import warnings

import numpy as np
import pytest
from train_helpers import classification, host_params

import portable_bp as pbp
from portable_bp.train import TrainingDiverged, executors

HOST_READS = ["item", "tolist", "numpy", "cpu", "__float__", "__int__", "__index__", "__bool__", "__array__"]


@pytest.fixture
def host_reads(monkeypatch):
    torch = pytest.importorskip("torch")
    counts = collections.Counter()
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _name=name, _original=original, **kwargs):
            counts[_name] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


def _reads_during_fit(counts, epochs, batch_size, n=60, optimizer="sgd", val=False, **kw):
    X, y = classification(n)
    net = pbp.Network([3, 5, 3], activation="relu", loss="cross_entropy", backend="torch",
                      dtype="float64", seed=0)
    counts.clear()
    net.fit(X, y, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=0.01,
            validation_data=(X, y) if val else None, **kw)
    return sum(counts.values())


@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adam"])
@pytest.mark.parametrize("val", [False, True], ids=["no-val", "val"])
def test_no_host_read_per_batch(host_reads, optimizer, val):
    """20 batches per epoch cost as many host reads as 1; at most 1 per epoch (3 with
    validation) plus a constant per fit (the input checks)."""
    # 60 samples: batch_size 3 gives 20 batches per epoch, None gives 1
    one = _reads_during_fit(host_reads, 1, 3, optimizer=optimizer, val=val)
    many_batches = _reads_during_fit(host_reads, 3, 3, optimizer=optimizer, val=val)
    one_batch = _reads_during_fit(host_reads, 3, None, optimizer=optimizer, val=val)
    per_epoch = (many_batches - one) / 2
    assert many_batches == one_batch, "host reads depend on the number of batches"
    assert per_epoch <= (3 if val else 1), f"{per_epoch} host reads per epoch"  # loss (+ val loss, acc)
    assert one <= 12, f"{one} host reads for a one-epoch fit"  # input checks: a constant per fit
    assert many_batches <= 3 * (3 if val else 1) + 12


def test_host_read_counter_sees_a_per_batch_read(host_reads, monkeypatch):
    """The oracle can fail: a step that reads its loss back every batch is caught."""
    step = executors.Eager.step

    def reading_step(self, *args):
        params, state, loss = step(self, *args)
        float(loss)
        return params, state, loss

    monkeypatch.setattr(executors.Eager, "step", reading_step)
    assert _reads_during_fit(host_reads, 3, 3) - _reads_during_fit(host_reads, 3, None) == 3 * 19


def test_divergence_snapshot_stays_on_the_device(monkeypatch):
    """The epoch-start snapshots are device copies: no host transfer per epoch (on a GPU a
    device-to-host copy of the model each epoch would cost more than the copy itself). A
    backend flagged as a GPU whose host transfer fails still trains, detects the
    divergence and keeps the same parameters as the plain CPU run."""
    X, Z = np.zeros((4, 2)), np.full((4, 1), 10.0)
    results = []
    for is_gpu in (False, True):
        net = pbp.Network([2, 1], activation="identity", dtype="float64", seed=0)
        if is_gpu:
            monkeypatch.setattr(net.backend, "is_gpu", True)

            def no_transfer(a):
                raise AssertionError("device-to-host transfer during fit")

            monkeypatch.setattr(net.backend, "_to_numpy", no_transfer)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            with pytest.raises(TrainingDiverged):
                net.fit(X, Z, epochs=3, batch_size=2, lr=1e308, shuffle=False, optimizer="momentum")
        monkeypatch.undo()
        results.append(host_params(net))
    for a, b in zip(*results):
        assert np.isfinite(a).all()
        np.testing.assert_array_equal(a, b)
