"""predict and evaluate (in batches of any size: the same answers as all at once), validation
scored in batches during fit, and fit's memory: a batch's worth, not a copy of the data."""

import numpy as np
import pytest
from conftest import assert_close, to_np
from train_helpers import ONLY_FLOAT64_ON_JAX, classification, regression

import portable_bp as pbp

# batch sizes: ragged (7 + 7 + 6), single rows, exactly n, more than n
SIZES = (7, 1, 20, 100)


def classifier(case):
    return pbp.Network([3, 5, 3], activation="relu", loss="cross_entropy", backend=case.spec,
                       dtype=case.dtype, seed=1)


# regression test: predict, evaluate and the divergence replay once sliced X[s:s + bs] past
# the end of the array for a ragged last batch, which array_api_strict rejects (IndexError)
@pytest.mark.skip_backends("jax-float32", reason=ONLY_FLOAT64_ON_JAX)
def test_classifier_predict_and_evaluate_in_batches(xp_case):
    """Class indices on the backend (the arg-max of forward), the same in batches of any size;
    evaluate's loss and accuracy the same in batches as whole, Python floats, the accuracy
    that of predict and the loss that of loss_and_grads."""
    X, y = classification(20)
    clf = classifier(xp_case)
    pred = clf.predict(X)
    assert clf.backend.owns(pred)
    host = np.asarray(clf.backend.to_numpy(pred))
    assert host.shape == (20,) and host.dtype.kind in "iu"
    np.testing.assert_array_equal(host, np.argmax(to_np(clf, clf.forward(X)), axis=1))
    sizes = (7,) if xp_case.spec == "jax" else SIZES  # jax compiles per batch shape
    for bs in sizes:
        np.testing.assert_array_equal(np.asarray(clf.backend.to_numpy(clf.predict(X, batch_size=bs))), host)
    full = clf.evaluate(X, y)
    assert set(full) == {"loss", "accuracy"} and all(type(v) is float for v in full.values())
    assert full["accuracy"] == pytest.approx(np.mean(host == y), rel=1e-12)
    assert_close(full["loss"], clf.loss_and_grads(X, y)[0], xp_case.dtype)
    for bs in sizes:
        batched = clf.evaluate(X, y, batch_size=bs)
        assert_close(batched["loss"], full["loss"], xp_case.dtype, scale=10)
        assert batched["accuracy"] == full["accuracy"]


@pytest.mark.skip_backends("jax", reason="jax compiles per network and batch shape (seconds each); "
                                         "its inference programs run in the classifier test")
def test_regressor_predict_and_evaluate_in_batches(xp_case):
    """Outputs (n, n_out) on the backend, equal to forward, in batches too; evaluate has a
    loss and no accuracy for mse."""
    X, Z = regression(20)
    reg = pbp.Network([3, 5, 2], activation="tanh", output_activation="identity", backend=xp_case.spec,
                      dtype=xp_case.dtype, seed=1)
    out = reg.predict(X)
    assert tuple(out.shape) == (20, 2) and reg.backend.owns(out)
    assert_close(to_np(reg, out), to_np(reg, reg.forward(X)), xp_case.dtype)
    ev = reg.evaluate(X, Z)
    assert set(ev) == {"loss"}
    for bs in SIZES:
        assert_close(to_np(reg, reg.predict(X, batch_size=bs)), to_np(reg, out), xp_case.dtype, scale=10)
        assert_close(reg.evaluate(X, Z, batch_size=bs)["loss"], ev["loss"], xp_case.dtype, scale=10)


@pytest.mark.parametrize("call", ["predict", "evaluate"])
@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_bad_inference_batch_size_names_it(call, bad):
    """predict and evaluate refuse a batch size that is not a positive integer, by name."""
    X, Z = regression(8)
    net = pbp.Network([3, 4, 2], seed=0)
    args = (X,) if call == "predict" else (X, Z)
    with pytest.raises(ValueError, match="batch_size"):
        getattr(net, call)(*args, batch_size=bad)


@pytest.mark.parametrize("val_bs", [None, 1, 7, 1000])
def test_validation_in_batches_gives_the_whole_set_metrics(val_bs):
    """fit scores validation data in batches (bounded memory); the metrics are those of the
    whole set at once, and the accuracy is an exact fraction."""
    X, y = classification(40)
    Xv, yv = classification(23, seed=9)
    net = pbp.Network([3, 6, 3], activation="relu", loss="cross_entropy", dtype="float64", seed=3)
    h = net.fit(X, y, epochs=1, batch_size=5, lr=0.1, validation_data=(Xv, yv),
                validation_batch_size=val_bs)
    whole = net.evaluate(Xv, yv)
    assert h.history["val_loss"][0] == pytest.approx(whole["loss"], rel=1e-12)
    hits = int(np.sum(np.asarray(net.predict(Xv)) == yv))
    assert h.history["val_accuracy"][0] == hits / 23 == whole["accuracy"]


def _fit_peak_bytes(X, y, **kwargs):
    """tracemalloc's peak (bytes NumPy allocated) during a one-epoch fit on NumPy, after a
    warm-up fit has filled the backend's caches."""
    import tracemalloc

    net = pbp.Network([X.shape[1], 64, int(y.max()) + 1], activation="relu",
                      loss="cross_entropy", seed=0)
    net.fit(X[:64], y[:64], epochs=1, batch_size=32, lr=0.01)
    tracemalloc.start()
    try:
        net.fit(X, y, epochs=1, batch_size=32, lr=0.01, **kwargs)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_fit_holds_a_batch_not_a_copy_of_the_data():
    """Beyond the data, fit's memory is a batch's worth: shuffling gathers each batch's rows
    (it used to copy the shuffled dataset, 8 MiB here) and integer labels stay labels (a
    one-hot array would be 5 MiB here). Validation runs in batches of 1024 rows by default:
    ~3 MiB of logits and softmax temporaries, where one pass over 8000 rows held ~22 MiB."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((8000, 256), dtype=np.float32)  # 8 MiB
    y = rng.integers(0, 160, 8000)                          # 160 classes: one-hot 5 MiB
    peaks = {"shuffled": _fit_peak_bytes(X, y, shuffle=True),
             "in order": _fit_peak_bytes(X, y, shuffle=False)}
    assert max(peaks.values()) < X.nbytes // 8, peaks
    validated = _fit_peak_bytes(X, y, shuffle=False, validation_data=(X, y))
    assert validated < X.nbytes // 2, validated
