"""fit / predict / evaluate (E12): against hand-written training loops, across backends,
with early stopping, callbacks, divergence and the no-host-sync promise of the hot loop."""

import collections
import math
import re
import warnings

import numpy as np
import pytest

import portable_bp as pbp
from conftest import assert_close, to_np
from portable_bp.backends import probe
from portable_bp.optim import SGD, Adam, CosineLR, StepLR
from portable_bp.train import EarlyStopping, History, TrainingDiverged


def regression(n, n_in=3, n_out=2, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, n_in)), rng.standard_normal((n, n_out))


def classification(n, n_in=3, n_classes=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, n_in)), rng.integers(0, n_classes, n)


def trim_jax(spec, dtype):
    """jax compiles afresh for each new network, shape and dtype (the training step, and
    every op run outside it): seconds per test. Its float32 path is the float64 code."""
    if spec == "jax" and dtype == "float32":
        pytest.skip("jax float32: same code path as jax float64 (tested); jax compiles per dtype")


def host_params(net):
    """Every parameter as a host float64 copy, flat: [W1, b1, W2, b2, ...]."""
    return [np.array(to_np(net, a), copy=True) for pair in net.params for a in pair]


def max_rel_diff(a, b):
    a, b = np.concatenate([x.ravel() for x in a]), np.concatenate([x.ravel() for x in b])
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def assert_params_close(net, expected, dtype="float64", scale=10):
    got = host_params(net)
    assert len(got) == len(expected)
    for g, w in zip(got, expected):
        assert_close(g, w, dtype, scale=scale)


def manual_sgd(net, X, Z, lr, batch_size, epochs, first_epoch=0, max_steps=None):
    """The reference: W -= lr dW over consecutive batches in order, using only the public
    ``loss_and_grads`` and ``set_params``. Returns each epoch's sample-weighted mean loss
    (the loss of each batch before its update) and the number of steps taken."""
    n = X.shape[0]
    bs = n if batch_size is None else batch_size
    losses, steps = [], 0
    for epoch in range(first_epoch, first_epoch + epochs):
        rate = lr(epoch) if callable(lr) else lr
        total = 0.0
        for s in range(0, n, bs):
            if max_steps is not None and steps == max_steps:
                return losses, steps
            loss, grads = net.loss_and_grads(X[s:s + bs], Z[s:s + bs])
            total += loss * X[s:s + bs].shape[0]
            net.set_params([(to_np(net, W) - rate * to_np(net, dW), to_np(net, b) - rate * to_np(net, db))
                            for (W, b), (dW, db) in zip(net.params, grads)])
            steps += 1
        losses.append(total / n)
    return losses, steps


# -- batch modes against the hand-written loop -------------------------------------------------
@pytest.mark.parametrize("batch_size,updates_per_epoch", [(None, 1), (1, 10), (4, 3), (10, 1), (50, 1)],
                         ids=["full", "single", "mini-ragged", "k=n", "k>n"])
def test_fit_equals_manual_loop(backend64, batch_size, updates_per_epoch):
    """None: one full-batch update per epoch; 1: one per sample; 4 on 10 samples: 4+4+2."""
    X, Z = regression(10)
    make = lambda: pbp.Network([3, 5, 2], activation="tanh", output_activation="identity",  # noqa: E731
                               backend=backend64, dtype="float64", seed=3)
    net, ref = make(), make()
    start = host_params(net)
    epochs = 3
    h = net.fit(X, Z, epochs=epochs, batch_size=batch_size, optimizer="sgd", lr=0.1, shuffle=False)
    want_losses, steps = manual_sgd(ref, X, Z, 0.1, batch_size, epochs)
    assert steps == epochs * updates_per_epoch
    assert net.optimizer_state[1]["step"] == epochs * updates_per_epoch  # updates fit made
    assert max_rel_diff(host_params(net), start) > 1e-3  # it did move
    assert_params_close(net, host_params(ref), scale=100)  # 1e-9 relative
    assert h.history["loss"] == pytest.approx(want_losses, rel=1e-10)


def test_full_batch_first_loss_is_the_initial_loss():
    X, Z = regression(12)
    net = pbp.Network([3, 4, 2], backend="numpy", dtype="float64", seed=0)
    loss0, _ = net.loss_and_grads(X, Z)
    h = net.fit(X, Z, epochs=2, batch_size=None, lr=0.5, shuffle=False)
    assert h.history["loss"][0] == pytest.approx(loss0, rel=1e-14)
    assert h.history["loss"][1] < loss0


def test_named_momentum_optimizers_match_optimizer_objects():
    """"momentum"/"nesterov" are SGD with momentum 0.9 (and Nesterov)."""
    X, y = classification(20)
    for name, opt in [("momentum", SGD(0.05, momentum=0.9)),
                      ("nesterov", SGD(0.05, momentum=0.9, nesterov=True)), ("adam", Adam(0.05))]:
        a = pbp.Network([3, 4, 3], loss="cross_entropy", dtype="float64", seed=2)
        b = pbp.Network([3, 4, 3], loss="cross_entropy", dtype="float64", seed=2)
        a.fit(X, y, epochs=2, batch_size=6, optimizer=name, lr=0.05)
        b.fit(X, y, epochs=2, batch_size=6, optimizer=opt)
        np.testing.assert_array_equal(np.concatenate([p.ravel() for p in host_params(a)]),
                                      np.concatenate([p.ravel() for p in host_params(b)]))


def test_shuffle_is_seeded_and_matters():
    X, Z = regression(20)
    runs = []
    for seed, shuffle in [(0, True), (0, True), (0, False)]:
        net = pbp.Network([3, 4, 2], dtype="float64", seed=seed)
        net.fit(X, Z, epochs=2, batch_size=5, lr=0.1, shuffle=shuffle)
        runs.append(host_params(net))
    assert max_rel_diff(runs[0], runs[1]) == 0.0  # same seed, same order
    assert max_rel_diff(runs[0], runs[2]) > 1e-6  # shuffling changed the order


# -- the same trajectory on every backend ------------------------------------------------------
@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adam"])
@pytest.mark.parametrize("spec", ["torch", "array_api_strict", "jax"])
def test_trajectory_is_the_same_on_every_backend(spec, optimizer):
    ok, reason = probe(spec)
    if not ok:
        pytest.skip(f"backend {spec} unavailable: {reason}")
    # 60 samples: 8 batches of 7 and one of 4 (jax compiles its step for both shapes)
    X, y = classification(60, seed=3)
    Xv, yv = classification(20, seed=4)
    results = {}
    for s in ("numpy", spec):
        net = pbp.Network([3, 5, 3], activation="tanh", loss="cross_entropy", backend=s,
                          dtype="float64", seed=7)
        h = net.fit(X, y, epochs=5, batch_size=7, optimizer=optimizer, lr=0.05, shuffle=True,
                    validation_data=(Xv, yv))
        results[s] = host_params(net), h.history
    (p_ref, h_ref), (p, h) = results["numpy"], results[spec]
    assert max_rel_diff(p, p_ref) < 1e-9
    for key in ("loss", "val_loss", "val_accuracy"):
        assert len(h[key]) == 5
        np.testing.assert_allclose(h[key], h_ref[key], rtol=1e-9, atol=0)


def test_a_backend_that_compiles_gets_the_whole_step_once_per_network_and_optimizer(monkeypatch):
    """Backend.compile receives the step as one pure function (JAX jits it); fitting again
    with another learning rate reuses it, a new optimizer configuration compiles anew, a
    custom optimizer is never compiled, and the trajectory equals the eager one's."""
    X, y = classification(30)

    def run(net, lrs, optimizer="sgd"):
        for lr in lrs:
            net.fit(X, y, epochs=2, batch_size=7, optimizer=optimizer, lr=lr, shuffle=True)
        return host_params(net)

    make = lambda: pbp.Network([3, 5, 3], activation="tanh", loss="cross_entropy",  # noqa: E731
                               dtype="float64", seed=2)
    eager = {opt: run(make(), [0.05, 0.02], opt) for opt in ("nesterov", "adam")}
    compiled = []

    def compile_(fn, static_argnames=()):
        compiled.append(fn)
        return fn

    monkeypatch.setattr(pbp.backends.get("numpy"), "compile", compile_)
    net = make()
    p = run(net, [0.05, 0.02], "nesterov")
    assert len(compiled) == 1, "a second fit (another lr) compiled the step again"
    np.testing.assert_allclose(np.concatenate([a.ravel() for a in p]),
                               np.concatenate([a.ravel() for a in eager["nesterov"]]), rtol=1e-12)
    np.testing.assert_allclose(np.concatenate([a.ravel() for a in run(make(), [0.05, 0.02], "adam")]),
                               np.concatenate([a.ravel() for a in eager["adam"]]), rtol=1e-12)
    assert len(compiled) == 2

    class Plain:
        def init(self, params):
            return {"step": 0, "slots": {}}

        def update(self, params, grads, state, lr):
            return [q - 0.01 * g for q, g in zip(params, grads)], state

    net.fit(X, y, epochs=1, optimizer=Plain())
    assert len(compiled) == 2, "a custom optimizer's update was compiled"


def test_jax_fit_runs_a_jitted_step():
    jax = pytest.importorskip("jax")
    X, y = classification(20)
    net = pbp.Network([3, 5, 3], activation="relu", loss="cross_entropy", backend="jax",
                      dtype="float64", seed=1)
    net.fit(X, y, epochs=2, batch_size=7, lr=0.1)
    net.fit(X, y, epochs=1, batch_size=7, lr=0.05)
    (step,) = [fn for key, fn in net._compiled.items() if key[0] == "step"]
    assert isinstance(step, type(jax.jit(lambda a: a)))
    assert isinstance(net.optimizer_state[1]["step"], int) and net.optimizer_state[1]["step"] == 3


# -- history and the epoch count ----------------------------------------------------------------
def test_history_and_epoch_count(backend_dtype):
    spec, dtype = backend_dtype
    trim_jax(spec, dtype)
    X, y = classification(20)
    Xv, yv = classification(20, seed=2)
    net = pbp.Network([3, 5, 3], activation="tanh", loss="cross_entropy", backend=spec, dtype=dtype, seed=0)
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
    ev = net.evaluate(Xv, yv)  # the last epoch's validation metrics are the final network's
    assert_close(h.history["val_loss"][-1], ev["loss"], dtype, scale=10)
    assert h.history["val_accuracy"][-1] == pytest.approx(ev["accuracy"])
    assert "History(epochs=3" in repr(h)

    h2 = net.fit(X, y, epochs=2, batch_size=7, lr=0.1)  # a second call continues the count
    assert h2.epochs == [3, 4] and net.epochs_trained == 5
    assert set(h2.history) == {"loss", "time"} and len(h2.history["loss"]) == 2
    h3 = net.fit(X, y, epochs=0)
    assert h3.epochs == [] and h3.history == {} and net.epochs_trained == 5


@pytest.mark.parametrize("loss,keys", [("mse", {"loss", "val_loss", "time"}),
                                       ("binary_cross_entropy", {"loss", "val_loss", "val_accuracy", "time"})])
def test_history_keys_of_other_losses(loss, keys):
    rng = np.random.default_rng(0)
    X, Z = rng.standard_normal((10, 3)), (rng.random((10, 2)) > 0.5).astype(float)
    net = pbp.Network([3, 4, 2], loss=loss, seed=0)
    h = net.fit(X, Z, epochs=2, batch_size=4, validation_data=(X, Z))
    assert set(h.history) == keys and all(len(v) == 2 for v in h.history.values())
    assert set(net.fit(X, Z, epochs=1).history) == {"loss", "time"}


# -- predict and evaluate -----------------------------------------------------------------------
def test_predict_class_indices_and_outputs(backend_dtype):
    spec, dtype = backend_dtype
    X, y = classification(20)
    clf = pbp.Network([3, 5, 3], activation="relu", loss="cross_entropy", backend=spec, dtype=dtype, seed=1)
    pred = clf.predict(X)
    assert clf.backend.owns(pred)
    host = np.asarray(clf.backend.to_numpy(pred))
    assert host.shape == (20,) and host.dtype.kind in "iu"
    probs = to_np(clf, clf.forward(X))
    np.testing.assert_array_equal(host, np.argmax(probs, axis=1))

    reg = pbp.Network([3, 5, 2], activation="tanh", output_activation="identity", backend=spec,
                      dtype=dtype, seed=1)
    out = reg.predict(X)
    assert tuple(out.shape) == (20, 2) and reg.backend.owns(out)
    assert_close(to_np(reg, out), to_np(reg, reg.forward(X)), dtype)


# regression test: predict, evaluate and the divergence replay once sliced X[s:s + bs] past
# the end of the array for a ragged last batch, which array_api_strict rejects (IndexError)
def test_predict_in_batches_equals_predict(backend_dtype):
    spec, dtype = backend_dtype
    trim_jax(spec, dtype)
    X, y = classification(20)
    clf = pbp.Network([3, 5, 3], activation="relu", loss="cross_entropy", backend=spec, dtype=dtype, seed=1)
    host = np.asarray(clf.backend.to_numpy(clf.predict(X)))
    sizes = (7,) if spec == "jax" else (7, 1, 20, 100)
    for bs in sizes:
        np.testing.assert_array_equal(np.asarray(clf.backend.to_numpy(clf.predict(X, batch_size=bs))), host)
    reg = pbp.Network([3, 5, 2], activation="tanh", output_activation="identity", backend=spec,
                      dtype=dtype, seed=1)
    out = to_np(reg, reg.predict(X))
    for bs in sizes:
        assert_close(to_np(reg, reg.predict(X, batch_size=bs)), out, dtype, scale=10)


def test_evaluate_full_and_batched_agree(backend_dtype):
    spec, dtype = backend_dtype
    trim_jax(spec, dtype)
    X, y = classification(20)
    net = pbp.Network([3, 5, 3], activation="relu", loss="cross_entropy", backend=spec, dtype=dtype, seed=1)
    full, batched = net.evaluate(X, y), net.evaluate(X, y, batch_size=7)  # 7 + 7 + 6
    assert set(full) == set(batched) == {"loss", "accuracy"}
    assert all(type(v) is float for v in (*full.values(), *batched.values()))
    assert_close(batched["loss"], full["loss"], dtype, scale=10)
    assert batched["accuracy"] == pytest.approx(full["accuracy"], rel=1e-6)
    pred = np.asarray(net.backend.to_numpy(net.predict(X)))
    assert full["accuracy"] == pytest.approx(np.mean(pred == y), rel=1e-6)
    assert_close(full["loss"], net.loss_and_grads(X, y)[0], dtype)

    reg = pbp.Network([3, 4, 2], output_activation="identity", backend=spec, dtype=dtype, seed=1)
    Xr, Zr = regression(20)
    ev = reg.evaluate(Xr, Zr)
    assert set(ev) == {"loss"}
    assert_close(reg.evaluate(Xr, Zr, batch_size=7)["loss"], ev["loss"], dtype, scale=10)


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


def test_integer_labels_on_jax_without_x64_warn_nothing():
    """JAX without x64 has int32 indices: labels are converted to the namespace's index
    dtype, not to int64 (which JAX would truncate with a warning on every call). Run in a
    fresh process: any float64 network made earlier in this one switches x64 on."""
    import subprocess
    import sys

    ok, reason = probe("jax")
    if not ok:
        pytest.skip(f"backend jax unavailable: {reason}")
    code = ("import numpy as np, portable_bp as pbp\n"
            "X = np.random.default_rng(0).standard_normal((40, 3))\n"
            "y = np.arange(40) % 3\n"
            "net = pbp.Network([3, 4, 3], activation='relu', loss='cross_entropy', backend='jax', seed=0)\n"
            "net.fit(X, y, epochs=2, batch_size=8, lr=0.1, validation_data=(X, y))\n"
            "print(net.evaluate(X, y.astype(np.int32))['accuracy'])\n")
    r = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


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
    assert max(peaks.values()) < X.nbytes // 8, peaks  # measured: 0.36 and 0.27 MiB
    validated = _fit_peak_bytes(X, y, shuffle=False, validation_data=(X, y))
    assert validated < X.nbytes // 2, validated  # measured: 2.9 MiB


# -- learning actually happens --------------------------------------------------------------------
@pytest.mark.parametrize("problem", ["blobs", "moons"])
def test_learns_small_problems(backend_dtype, problem):
    spec, dtype = backend_dtype
    if problem == "blobs":
        X, y = pbp.datasets.blobs(300, centers=3, seed=0)
        sizes, act, epochs, lr = [2, 16, 3], "relu", 15, 0.01
    else:
        X, y = pbp.datasets.moons(200, noise=0.1, seed=0)
        sizes, act, epochs, lr = [2, 16, 2], "tanh", 60, 0.02
    Xt, Xs, yt, ys = pbp.datasets.train_test_split(X, y, seed=0)
    net = pbp.Network(sizes, activation=act, loss="cross_entropy", backend=spec, dtype=dtype, seed=0)
    before = net.evaluate(Xs, ys)
    h = net.fit(Xt, yt, epochs=epochs, batch_size=16, optimizer="adam", lr=lr, validation_data=(Xs, ys))
    loss = h.history["loss"]
    assert loss[-1] < 0.3 * loss[0]
    assert h.history["val_loss"][-1] < before["loss"]
    after = net.evaluate(Xs, ys)
    assert after["accuracy"] > 0.9, after
    assert np.mean(np.asarray(net.backend.to_numpy(net.predict(Xs))) == ys) > 0.9


def test_xor_by_full_batch_gradient_descent():
    X, y = pbp.datasets.xor()
    net = pbp.Network([2, 4, 1], activation="sigmoid", loss="mse", backend="numpy", dtype="float64", seed=0)
    h = net.fit(X, y, epochs=2000, batch_size=None, optimizer="sgd", lr=2.0, shuffle=False)
    assert len(h.history["loss"]) == 2000
    assert h.history["loss"][-1] < 0.01 < h.history["loss"][0]
    out = to_np(net, net.predict(X)).ravel()
    np.testing.assert_array_equal(out > 0.5, y.ravel() > 0.5)
    assert np.all(np.abs(out - y.ravel()) < 0.2), out


# -- learning-rate schedules in fit --------------------------------------------------------------
@pytest.mark.parametrize("schedule", [StepLR(0.5, step_size=2, gamma=0.5), CosineLR(0.5, total_epochs=4, min_lr=0.05),
                                      lambda epoch: 0.1 * (epoch + 1)], ids=["step", "cosine", "callable"])
def test_fit_uses_the_schedule_per_epoch(schedule):
    X, Z = regression(8)
    make = lambda: pbp.Network([3, 4, 2], activation="tanh", dtype="float64", seed=5)  # noqa: E731
    net, ref = make(), make()
    h = net.fit(X, Z, epochs=5, batch_size=3, optimizer=SGD(schedule), shuffle=False)
    want, _ = manual_sgd(ref, X, Z, schedule, 3, 5)
    assert_params_close(net, host_params(ref), scale=100)
    assert h.history["loss"] == pytest.approx(want, rel=1e-10)
    # the schedule is a function of the absolute epoch: 3 + 2 epochs equal 5 for plain SGD
    split = make()
    split.fit(X, Z, epochs=3, batch_size=3, optimizer="sgd", lr=schedule, shuffle=False)
    split.fit(X, Z, epochs=2, batch_size=3, optimizer="sgd", lr=schedule, shuffle=False)
    assert max_rel_diff(host_params(split), host_params(net)) < 1e-12


@pytest.mark.parametrize("value", [-0.1, float("nan"), float("inf"), "0.1", None, True,
                                   np.array([0.1])],
                         ids=["negative", "nan", "inf", "str", "none", "bool", "1-element-array"])
def test_a_bad_scheduled_lr_names_the_epoch(value):
    X, Z = regression(8)
    net = pbp.Network([3, 4, 2], dtype="float64", seed=0)
    schedule = lambda epoch: 0.1 if epoch < 1 else value  # noqa: E731
    with pytest.raises(ValueError, match=r"schedule's value for epoch 1 must be a number >= 0"):
        net.fit(X, Z, epochs=3, batch_size=4, lr=schedule)
    assert net.epochs_trained == 1


def test_a_schedule_may_reach_zero():
    """A warm-up from 0 and CosineLR past total_epochs (min_lr=0) train: an epoch at lr 0
    leaves the parameters as they were."""
    X, Z = regression(8)
    net = pbp.Network([3, 4, 2], dtype="float64", seed=0)
    h = net.fit(X, Z, epochs=3, batch_size=4, lr=CosineLR(0.1, total_epochs=2))
    assert len(h.history["loss"]) == 3
    before = host_params(net)
    net.fit(X, Z, epochs=1, batch_size=4, lr=lambda epoch: 0.0)
    assert max_rel_diff(host_params(net), before) == 0.0


@pytest.mark.parametrize("spec", ["numpy", "torch", "array_api_strict"])
def test_a_numpy_scalar_schedule_keeps_float32(spec):
    """A schedule returning NumPy float64 scalars (or 0-d arrays) trains exactly like one
    returning Python floats: no promotion of the float32 step to float64."""
    ok, reason = probe(spec)
    if not ok:
        pytest.skip(f"backend {spec} unavailable: {reason}")
    X, y = classification(30)
    runs = []
    for schedule in (lambda e: 0.1 / (e + 1), lambda e: np.float64(0.1 / (e + 1)),
                     lambda e: np.asarray(0.1 / (e + 1))):
        net = pbp.Network([3, 5, 3], activation="relu", loss="cross_entropy", backend=spec, seed=1)
        for fused in (True, False):
            net.fused_kernels = fused
            net.fit(X, y, epochs=2, batch_size=7, lr=schedule)
        assert all(str(p.dtype).endswith("float32") for pair in net.params for p in pair)
        runs.append(host_params(net))
    assert max_rel_diff(runs[1], runs[0]) == 0.0
    assert max_rel_diff(runs[2], runs[0]) == 0.0


def test_schedule_sees_absolute_epochs():
    seen = []

    def lr(epoch):
        seen.append(epoch)
        return 0.01

    X, Z = regression(6)
    net = pbp.Network([3, 2], seed=0)
    net.fit(X, Z, epochs=3, batch_size=2, optimizer=SGD(lr))
    assert sorted(set(seen)) == [0, 1, 2]
    seen.clear()
    net.fit(X, Z, epochs=2, batch_size=2, optimizer=Adam(lr))
    assert sorted(set(seen)) == [3, 4]


# -- callbacks --------------------------------------------------------------------------------------
class Recorder:
    """Keeps a host copy of the parameters at the end of every epoch, and the hook order."""

    def __init__(self):
        self.params, self.events = [], []

    def on_train_begin(self, net):
        self.events.append("begin")

    def on_epoch_end(self, net, epoch, logs):
        self.events.append(("epoch", epoch, sorted(logs)))
        self.params.append(host_params(net))
        return False

    def on_train_end(self, net):
        self.events.append("end")


def overfit_case():
    """Training targets 2, validation targets 1: outputs rise from ~0 through 1 to 2, so the
    validation loss falls, bottoms out and rises again."""
    X = np.linspace(-1, 1, 8)[:, None]
    return X, np.full((8, 1), 2.0), np.full((8, 1), 1.0)


@pytest.mark.parametrize("restore", [True, False])
@pytest.mark.parametrize("patience", [1, 3])
def test_early_stopping(restore, patience):
    X, Z, Zv = overfit_case()
    net = pbp.Network([1, 4, 1], activation="tanh", output_activation="identity", dtype="float64", seed=0)
    es, rec = EarlyStopping(patience=patience, restore_best_weights=restore), Recorder()
    h = net.fit(X, Z, epochs=200, batch_size=None, lr=0.05, validation_data=(X, Zv), callbacks=[rec, es])
    val = h.history["val_loss"]
    best = int(np.argmin(val))
    assert 2 <= best and val[-1] > val[best]  # fell, then rose: a real early stop
    assert es.best_epoch == best and es.best == val[best]
    assert len(val) == best + patience + 1  # stopped after `patience` epochs without improvement
    assert net.epochs_trained == len(val)
    assert len(rec.params) == len(val)
    expected = rec.params[best] if restore else rec.params[-1]
    for got, want in zip(host_params(net), expected):
        np.testing.assert_array_equal(got, want)
    if restore:
        assert max_rel_diff(rec.params[-1], rec.params[best]) > 1e-6  # restoring changed something
        assert net.evaluate(X, Zv)["loss"] == pytest.approx(val[best], rel=1e-12)


def test_early_stopping_min_delta_mode_and_reuse():
    X, Z, Zv = overfit_case()
    net = pbp.Network([1, 4, 1], activation="tanh", output_activation="identity", dtype="float64", seed=0)
    es = EarlyStopping(patience=2, min_delta=1e9)  # nothing after the first epoch counts
    h = net.fit(X, Z, epochs=50, batch_size=None, lr=0.05, validation_data=(X, Zv), callbacks=[es])
    assert len(h.epochs) == 3 and es.best_epoch == 0
    assert EarlyStopping(monitor="val_accuracy").mode == "max"
    assert EarlyStopping(monitor="loss").mode == "min"
    # the same object in a second fit starts afresh (on_train_begin resets it)
    h2 = net.fit(X, Z, epochs=50, batch_size=None, lr=0.05, validation_data=(X, Zv), callbacks=[es])
    assert len(h2.epochs) == 3 and es.best_epoch == 3


def test_early_stopping_on_training_loss_never_stops_while_it_improves():
    X, Z, _ = overfit_case()
    net = pbp.Network([1, 4, 1], activation="tanh", output_activation="identity", dtype="float64", seed=0)
    h = net.fit(X, Z, epochs=20, batch_size=None, lr=0.05, callbacks=[EarlyStopping("loss", patience=1)])
    assert len(h.epochs) == 20


@pytest.mark.parametrize("monitor,with_val", [("val_loss", False), ("val_accuracy", True), ("accuracy", False)])
def test_early_stopping_on_a_missing_key_names_it(monitor, with_val):
    X, Z, Zv = overfit_case()
    net = pbp.Network([1, 4, 1], output_activation="identity", dtype="float64", seed=0)
    with pytest.raises(ValueError, match=monitor):
        net.fit(X, Z, epochs=3, validation_data=(X, Zv) if with_val else None,
                callbacks=[EarlyStopping(monitor=monitor)])


@pytest.mark.parametrize("kwargs,word", [(dict(patience=-1), "patience"), (dict(patience=1.5), "patience"),
                                         (dict(mode="sideways"), "mode")])
def test_early_stopping_bad_arguments(kwargs, word):
    with pytest.raises(ValueError, match=word):
        EarlyStopping(**kwargs)


def test_plain_callable_returning_true_stops():
    calls = []

    def stop_at_two(net, epoch, logs):
        calls.append((epoch, sorted(logs), net.epochs_trained))
        return epoch == 2

    X, Z = regression(10)
    net = pbp.Network([3, 4, 2], seed=0)
    h = net.fit(X, Z, epochs=10, batch_size=4, callbacks=[stop_at_two])
    assert h.epochs == [0, 1, 2] and net.epochs_trained == 3
    assert calls == [(e, ["loss", "time"], e + 1) for e in range(3)]


def test_callback_hooks_are_called_in_order():
    X, Z = regression(10)
    net = pbp.Network([3, 4, 2], seed=0)
    rec = Recorder()
    stop = lambda net, epoch, logs: None  # noqa: E731  (None: keep going)
    net.fit(X, Z, epochs=3, batch_size=4, callbacks=[rec, stop], validation_data=(X, Z))
    keys = ["loss", "time", "val_loss"]
    assert rec.events == ["begin", ("epoch", 0, keys), ("epoch", 1, keys), ("epoch", 2, keys), "end"]
    rec2 = Recorder()
    net.fit(X, Z, epochs=2, callbacks=(rec2,))
    assert [e[1] for e in rec2.events[1:-1]] == [3, 4]


def test_every_callback_sees_the_stopping_epoch():
    """One callback asking to stop does not skip the others' on_epoch_end for that epoch."""
    X, Z = regression(10)
    net = pbp.Network([3, 4, 2], seed=0)
    rec = Recorder()
    net.fit(X, Z, epochs=5, callbacks=[lambda n, e, l: e == 1, rec])
    assert [e[1] for e in rec.events[1:-1]] == [0, 1] and rec.events[-1] == "end"


def test_callback_without_on_epoch_end():
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


# -- divergence ----------------------------------------------------------------------------------
def relu_net(spec="numpy", seed=0, sizes=(3, 8, 2)):
    return pbp.Network(list(sizes), activation="relu", output_activation="identity", loss="mse",
                       backend=spec, dtype="float64", seed=seed)


def where_diverged(exc):
    m = re.search(r"epoch (\d+)\b.*batch (\d+)", str(exc))
    assert m, f"message names no epoch and batch: {exc}"
    return int(m.group(1)), int(m.group(2))


def test_divergence_names_the_batch_and_keeps_the_parameters_before_it(backend64):
    X, Z = regression(20)
    net = relu_net(backend64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy's overflow warnings are expected
        with pytest.raises(TrainingDiverged) as info:
            net.fit(X, Z, epochs=5, batch_size=4, optimizer="sgd", lr=1e6, shuffle=False)
        assert isinstance(info.value, FloatingPointError)
        epoch, batch = where_diverged(info.value)
        assert "lr=1000000.0" in str(info.value)
        assert (epoch, batch) != (0, 0)  # the first step's loss is finite: a real case
        got = host_params(net)
        assert all(np.isfinite(p).all() for p in got)
        ref = relu_net(backend64)
        _, steps = manual_sgd(ref, X, Z, 1e6, 4, epoch + 1, max_steps=epoch * 5 + batch)
    assert steps == epoch * 5 + batch
    for g, w in zip(got, host_params(ref)):
        assert_close(g, w, "float64", scale=100)
    assert net.epochs_trained == epoch  # the diverged epoch does not count


def test_divergence_in_a_ragged_last_batch(backend64):
    """6 samples in batches of 4 and 2: batch 0 makes the weights huge (finite), and the
    large inputs of batch 1 overflow its loss; the replay must reach the ragged batch."""
    rng = np.random.default_rng(1)
    X, Z = rng.standard_normal((6, 3)), rng.standard_normal((6, 2))
    X[4:] *= 1e10
    net = relu_net(backend64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(TrainingDiverged) as info:
            net.fit(X, Z, epochs=1, batch_size=4, lr=1e150, shuffle=False)
    assert where_diverged(info.value) == (0, 1)
    ref = relu_net(backend64)
    manual_sgd(ref, X, Z, 1e150, 4, 1, max_steps=1)
    for g, w in zip(host_params(net), host_params(ref)):
        assert np.isfinite(g).all()
        assert_close(g, w, "float64", scale=100)


def test_full_batch_divergence_keeps_the_last_finite_epoch():
    X, Z = regression(20)
    net, rec = relu_net(), Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(TrainingDiverged) as info:
            net.fit(X, Z, epochs=50, batch_size=None, lr=1e6, callbacks=[rec])
    epoch, batch = where_diverged(info.value)
    assert batch == 0 and epoch >= 1 and len(rec.params) == epoch == net.epochs_trained
    for got, want in zip(host_params(net), rec.params[-1]):
        np.testing.assert_array_equal(got, want)
    # on_train_end runs only when training ends normally: after a divergence no callback
    # (EarlyStopping restoring its best epoch, say) may replace the last finite parameters
    assert rec.events[-1] != "end" and rec.events[-1][0] == "epoch"


def test_early_stopping_does_not_override_the_divergence_rule():
    X, Z = regression(20)
    net, rec = relu_net(), Recorder()
    stopper = pbp.train.EarlyStopping(monitor="loss", patience=100, restore_best_weights=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(TrainingDiverged):
            net.fit(X, Z, epochs=50, batch_size=None, lr=1e6, callbacks=[rec, stopper])
    for got, want in zip(host_params(net), rec.params[-1]):  # the last finite epoch's
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("epochs", [1, 2])
def test_divergence_in_the_last_batch_of_an_epoch(epochs):
    X, Z = regression(20)
    X = 10 * X  # gradients ~10: lr * grad overflows to inf in the first (only) update
    net = relu_net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(TrainingDiverged):
            net.fit(X, Z, epochs=epochs, batch_size=None, lr=1e308)
    assert all(np.isfinite(p).all() for p in host_params(net))


def test_divergence_of_a_bias_alone():
    # inputs all zero: dW = delta^T X = 0, so only the bias moves, and overflows
    X, Z = np.zeros((4, 2)), np.full((4, 1), 10.0)
    net = pbp.Network([2, 1], activation="identity", dtype="float64", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(TrainingDiverged) as info:
            net.fit(X, Z, epochs=1, batch_size=2, lr=1e308, shuffle=False)
    assert all(np.isfinite(p).all() for p in host_params(net))
    assert where_diverged(info.value) == (0, 0)


# -- bad arguments ----------------------------------------------------------------------------------
BAD_FIT = [
    (dict(epochs=-1), ValueError, "epochs"),
    (dict(epochs=2.5), ValueError, "epochs"),
    (dict(epochs=True), ValueError, "epochs"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(batch_size=-4), ValueError, "batch_size"),
    (dict(batch_size=2.5), ValueError, "batch_size"),
    (dict(batch_size=True), ValueError, "batch_size"),
    (dict(optimizer="rmsprop"), ValueError, "rmsprop"),
    (dict(optimizer=3), TypeError, "optimizer"),
    (dict(optimizer=SGD(0.1), lr=0.1), ValueError, "lr"),
    (dict(optimizer="sgd", lr=-0.1), ValueError, "lr"),
    (dict(validation_data=np.zeros((4, 3))), ValueError, "validation_data"),
    (dict(validation_data=(np.zeros((4, 3)),)), ValueError, "validation_data"),
    (dict(validation_data=(np.zeros((4, 5)), np.zeros((4, 2)))), ValueError, "X_val"),
    (dict(validation_data=(np.zeros((4, 3)), np.zeros((3, 2)))), ValueError, "Z_val"),
    (dict(resume=True), ValueError, "checkpoint"),
    (dict(validation_data=(np.zeros((4, 3)), np.zeros((4, 2))), validation_batch_size=0),
     ValueError, "validation_batch_size"),
    (dict(validation_data=(np.zeros((4, 3)), np.zeros((4, 2))), validation_batch_size=2.0),
     ValueError, "validation_batch_size"),
    (dict(validation_batch_size=-3), ValueError, "validation_batch_size"),
]


@pytest.mark.parametrize("kwargs,exc,word", BAD_FIT, ids=[f"{sorted(k)[0]}-{i}" for i, (k, _, _) in enumerate(BAD_FIT)])
def test_bad_fit_arguments_name_the_problem_and_change_nothing(kwargs, exc, word):
    X, Z = regression(8)
    net = pbp.Network([3, 4, 2], dtype="float64", seed=0)
    before = host_params(net)
    with pytest.raises(exc, match=word):
        net.fit(X, Z, **kwargs)
    assert net.epochs_trained == 0
    assert max_rel_diff(host_params(net), before) == 0.0


@pytest.mark.parametrize("call", ["predict", "evaluate"])
def test_bad_inference_batch_size(call):
    X, Z = regression(8)
    net = pbp.Network([3, 4, 2], seed=0)
    args = (X,) if call == "predict" else (X, Z)
    with pytest.raises(ValueError, match="batch_size"):
        getattr(net, call)(*args, batch_size=0)


# -- the hot loop reads nothing back per batch -----------------------------------------------------
# What is counted: every call, on any torch tensor, of the methods through which a value
# reaches the host - item, tolist, numpy, cpu, __float__, __int__, __index__, __bool__ and
# __array__ - made from Python. (On a CPU tensor that is the only way a value can reach
# Python code; device-internal syncs inside single torch kernels are not visible here.)
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
    from portable_bp import train

    step = train._Trainer.step

    def reading_step(self, *args):
        loss = step(self, *args)
        float(loss)
        return loss

    monkeypatch.setattr(train._Trainer, "step", reading_step)
    assert _reads_during_fit(host_reads, 3, 3) - _reads_during_fit(host_reads, 3, None) == 3 * 19


def test_divergence_snapshot_stays_on_the_device(monkeypatch):
    """The epoch-start snapshot is a device copy: no host transfer per epoch (on a GPU a
    device-to-host copy of the model each epoch would cost more than the copy itself). A
    backend flagged as a GPU whose host transfer fails still trains, detects the
    divergence and restores the same parameters as the plain CPU run."""
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


def test_training_a_copy_never_touches_the_original_or_the_callers_arrays():
    pytest.importorskip("torch")
    X, Z = np.ones((4, 2)), np.zeros((4, 1))
    net = pbp.Network([2, 3, 1], dtype="float32", seed=0)
    before = host_params(net)
    for spec in ("torch", "array_api_strict"):  # both wrap NumPy memory without copying
        net.to(spec).fit(X, Z, epochs=2, lr=0.5)
        for a, b in zip(before, host_params(net)):
            np.testing.assert_array_equal(a, b)
    W = np.ones((3, 2), np.float32)
    tnet = pbp.Network([2, 3, 1], backend="torch", dtype="float32", seed=0)
    tnet.set_params([(W, np.zeros(3, np.float32)), (np.ones((1, 3), np.float32), np.zeros(1, np.float32))])
    tnet.fit(X, Z, epochs=2, lr=0.5)
    assert (W == 1).all()


def test_a_custom_optimizer_with_the_documented_protocol_trains():
    """update(params, grads, state, lr) returning new arrays, and no ``lr`` attribute."""

    class HalfStep:
        def init(self, params):
            return {"step": 0, "slots": {}}

        def update(self, params, grads, state, lr):
            state["step"] += 1
            return [p - 0.05 * g for p, g in zip(params, grads)], state

    X, Z = regression(20)
    net, ref = relu_net(), relu_net()
    net.fit(X, Z, epochs=2, batch_size=5, optimizer=HalfStep(), shuffle=False)
    ref.fit(X, Z, epochs=2, batch_size=5, optimizer="sgd", lr=0.05, shuffle=False)
    for a, b in zip(host_params(net), host_params(ref)):
        np.testing.assert_allclose(a, b, rtol=1e-12)


def test_resume_without_a_checkpoint_file_continues_the_epoch_count(tmp_path):
    X, Z = regression(20)
    net = relu_net()
    net.fit(X, Z, epochs=3, batch_size=5)
    h = net.fit(X, Z, epochs=5, batch_size=5, checkpoint=str(tmp_path / "new.npz"), resume=True)
    assert h.epochs == [3, 4] and net.epochs_trained == 5
