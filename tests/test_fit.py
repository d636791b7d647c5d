"""fit against the hand-written loop (train_helpers.manual_fit: loss_and_grads + set_params)
on every backend: every batch mode, every optimizer, shuffled orders, and one trajectory
everywhere, with the backends' Ops overrides on and off. The loop's results are backend
independent (host float64 formulas), so each is computed once, on NumPy."""

import functools

import numpy as np
import pytest
from conftest import to_np
from train_helpers import (
    HostOptimizer,
    classification,
    epoch_order,
    host_params,
    manual_fit,
    max_rel_diff,
    regression,
)

import portable_bp as pbp
from portable_bp.optim import SGD, Adam, AdamW, Optimizer, RMSprop, default_lrs, optimizer_names

DEFAULT_LR, OPTIMIZERS = default_lrs(), optimizer_names()


def tanh_regressor(spec, seed=3, sizes=(3, 5, 2)):
    return pbp.Network(list(sizes), activation="tanh", output_activation="identity", backend=spec,
                       dtype="float64", seed=seed)


def classifier(spec):
    return pbp.Network([3, 5, 3], activation="tanh", loss="cross_entropy", backend=spec,
                       dtype="float64", seed=2)


def use_ops(net, fused):
    """Switch the net to its backend's overrides (fused) or to the Array API reference."""
    if not fused and not net.backend.ops.overrides():
        pytest.skip(f"{net.backend.spec} overrides nothing: its Ops are the reference")
    net.fused_kernels = fused
    return net


FUSED = pytest.mark.parametrize("fused", [True, False], ids=["overrides", "reference-ops"])
OPTIMIZER_CASES = {  # fit's optimizer, and the loop's formulas with the same settings
    "sgd": (lambda: SGD(0.05), lambda: HostOptimizer("sgd")),
    "momentum": (lambda: SGD(0.05, momentum=0.9), lambda: HostOptimizer("momentum")),
    "nesterov": (lambda: SGD(0.05, momentum=0.9, nesterov=True), lambda: HostOptimizer("nesterov")),
    "adam": (lambda: Adam(0.05), lambda: HostOptimizer("adam")),
    "momentum+wd": (lambda: SGD(0.05, momentum=0.5, weight_decay=0.1),
                    lambda: HostOptimizer("momentum", momentum=0.5, weight_decay=0.1)),
    "adam+wd": (lambda: Adam(0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1),
                lambda: HostOptimizer("adam", betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
}


@functools.cache
def regression_loop(batch_size, optimizer="sgd", shuffle=False):
    """(params, per-epoch losses, steps) of the loop: 3 epochs of the tanh regressor."""
    X, Z = regression(20 if shuffle else 10)
    net = tanh_regressor("numpy", seed=4 if shuffle else 3)
    losses, steps = manual_fit(net, X, Z, 0.05 if shuffle else 0.1, batch_size, 3,
                               optimizer=optimizer, shuffle=shuffle)
    return host_params(net), losses, steps


@functools.cache
def classifier_loop(optimizer):
    X, y = classification(10)
    net = classifier("numpy")
    losses, steps = manual_fit(net, X, y, 0.05, 4, 3, optimizer=OPTIMIZER_CASES[optimizer][1]())
    return host_params(net), losses, steps


# -- batch modes ---------------------------------------------------------------------------------
@pytest.mark.dtypes("float64")
@FUSED
@pytest.mark.parametrize("batch_size,updates_per_epoch", [(None, 1), (1, 10), (4, 3), (10, 1), (50, 1)],
                         ids=["full", "single-sample", "ragged-mini", "k=n", "k>n"])
@pytest.mark.cases(lambda xp_case, batch_size: xp_case.spec != "jax" or batch_size not in (1, 10, 50),
                   reason="jax compiles a program per batch shape (seconds each): the full and ragged "
                          "cases run its compiled step; these repeat the same code")
def test_fit_equals_the_hand_written_loop_in_every_batch_mode(xp_case, fused, batch_size, updates_per_epoch):
    """None: one full-batch update per epoch; 1: one per sample; 4 on 10 samples: 4+4+2;
    a batch larger than the data is the full batch. Parameters agree to 1e-9 relative,
    the per-epoch losses to 1e-10, and the step count is the number of updates."""
    X, Z = regression(10)
    net = use_ops(tanh_regressor(xp_case.spec), fused)
    start = host_params(net)
    h = net.fit(X, Z, epochs=3, batch_size=batch_size, optimizer="sgd", lr=0.1, shuffle=False)
    want_params, want_losses, steps = regression_loop(batch_size)
    assert steps == 3 * updates_per_epoch == net.optimizer_state[1]["step"]
    assert max_rel_diff(host_params(net), start) > 1e-3  # it did move
    assert max_rel_diff(host_params(net), want_params) < 1e-9
    assert h.history["loss"] == pytest.approx(want_losses, rel=1e-10)


def test_full_batch_first_loss_is_the_initial_loss():
    """Each batch's loss is taken before its update: full batch, epoch 0 reports L(start)."""
    X, Z = regression(12)
    net = pbp.Network([3, 4, 2], backend="numpy", dtype="float64", seed=0)
    loss0, _ = net.loss_and_grads(X, Z)
    h = net.fit(X, Z, epochs=2, batch_size=None, lr=0.5, shuffle=False)
    assert h.history["loss"][0] == pytest.approx(loss0, rel=1e-14)
    assert h.history["loss"][1] < loss0


# -- optimizers ----------------------------------------------------------------------------------
@pytest.mark.dtypes("float64")
@FUSED
@pytest.mark.parametrize("name", list(OPTIMIZER_CASES))
@pytest.mark.cases(lambda xp_case, name: xp_case.spec != "jax" or name == "adam+wd",
                   reason="jax compiles per optimizer (seconds): it runs the reference Ops, whose "
                          "formulas the eager reference-ops cases test; adam+wd here, adam below")
def test_every_optimizer_equals_its_formulas(xp_case, fused, name):
    """Per-layer updates inside the step give the same trajectory as the textbook formula
    applied to all gradients at once (E9 uses each W from before its update)."""
    X, y = classification(10)
    net = use_ops(classifier(xp_case.spec), fused)
    h = net.fit(X, y, epochs=3, batch_size=4, optimizer=OPTIMIZER_CASES[name][0](), shuffle=False)
    want_params, want_losses, steps = classifier_loop(name)
    assert net.optimizer_state[1]["step"] == steps == 9
    assert max_rel_diff(host_params(net), want_params) < 1e-9
    assert h.history["loss"] == pytest.approx(want_losses, rel=1e-10)


def test_named_optimizers_use_the_shared_default_learning_rates():
    """optimizer=NAME without lr is the optimizer object with DEFAULT_LR[NAME] (the table
    the command line shows too); no optimizer at all is "sgd"."""
    assert DEFAULT_LR == {"sgd": 0.1, "momentum": 0.05, "nesterov": 0.05, "adam": 1e-3, "adamw": 1e-3,
                          "rmsprop": 1e-2}
    assert OPTIMIZERS == tuple(DEFAULT_LR)
    X, y = classification(20)
    objects = {"sgd": SGD(0.1), "momentum": SGD(0.05, momentum=0.9),
               "nesterov": SGD(0.05, momentum=0.9, nesterov=True), "adam": Adam(1e-3),
               "adamw": AdamW(1e-3), "rmsprop": RMSprop(1e-2)}
    for name in (*OPTIMIZERS, None):
        a = pbp.Network([3, 4, 3], loss="cross_entropy", dtype="float64", seed=2)
        b = pbp.Network([3, 4, 3], loss="cross_entropy", dtype="float64", seed=2)
        a.fit(X, y, epochs=2, batch_size=6, optimizer=name)
        b.fit(X, y, epochs=2, batch_size=6, optimizer=objects[name or "sgd"])
        assert a.optimizer_state[0].config() == objects[name or "sgd"].config()
        np.testing.assert_array_equal(np.concatenate([p.ravel() for p in host_params(a)]),
                                      np.concatenate([p.ravel() for p in host_params(b)]))


# -- shuffling -----------------------------------------------------------------------------------
def test_shuffle_is_seeded_and_matters():
    """The same seed gives the same batch order (bit-identical runs); shuffle=False another."""
    X, Z = regression(20)
    runs = []
    for shuffle in (True, True, False):
        net = pbp.Network([3, 4, 2], dtype="float64", seed=0)
        net.fit(X, Z, epochs=2, batch_size=5, lr=0.1, shuffle=shuffle)
        runs.append(host_params(net))
    assert max_rel_diff(runs[0], runs[1]) == 0.0  # same seed, same order
    assert max_rel_diff(runs[0], runs[2]) > 1e-6  # shuffling changed the order


@pytest.mark.dtypes("float64")
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.skip_backends("jax", reason="jax: its shuffled trajectory is compared with NumPy's (adam) below")
def test_shuffled_fit_equals_the_loop_in_the_documented_order(xp_case, optimizer):
    """Shuffled batches (7 + 7 + 6 rows) are the rows of one seeded host permutation per
    epoch, gathered on the device: the same trajectory as the loop over that order."""
    X, Z = regression(20)
    net = tanh_regressor(xp_case.spec, seed=4)
    h = net.fit(X, Z, epochs=3, batch_size=7, optimizer=optimizer, lr=0.05, shuffle=True)
    want_params, want_losses, _ = regression_loop(7, optimizer, shuffle=True)
    assert max_rel_diff(host_params(net), want_params) < 1e-9
    assert h.history["loss"] == pytest.approx(want_losses, rel=1e-10)


class RecordingSGD(Optimizer):
    """Plain SGD that keeps the first layer's input batches (E10's A(0): the batch's X)."""

    name = "recording-sgd"

    def __init__(self, backend):
        super().__init__(0.01)
        self.backend, self.batches = backend, []

    def update(self, grad, state, param, *, ops, lr):
        if param[0].shape[1] == 1:  # the first layer: W (n_hidden, 1)
            self.batches.append(np.asarray(self.backend.to_numpy(grad.inputs))[:, 0].astype(int))
        return ops.sgd_dense(*param, grad, lr), state


@pytest.mark.skip_backends("jax", reason="a compiled step's batch is traced, not readable; jax's "
                                         "order is covered by the equal trajectories below")
def test_shuffled_batches_hold_every_sample_once_in_the_same_order_on_every_backend(xp_spec):
    """Each epoch's batches (5+5+5+5+3) hold every sample once, in the documented order, which
    changes between epochs and is the same on every backend as on NumPy."""
    X, Z = np.arange(23.0)[:, None], np.zeros((23, 1))  # row i holds i
    orders = {}
    for spec in ("numpy", xp_spec):
        net = pbp.Network([1, 3, 1], backend=spec, dtype="float64", seed=5)
        opt = RecordingSGD(net.backend)
        net.fit(X, Z, epochs=3, batch_size=5, optimizer=opt, shuffle=True)
        assert [len(b) for b in opt.batches] == [5, 5, 5, 5, 3] * 3
        orders[spec] = np.concatenate(opt.batches).reshape(3, 23)
    for epoch, order in enumerate(orders[xp_spec]):
        assert sorted(order) == list(range(23))  # every sample once per epoch
        np.testing.assert_array_equal(order, epoch_order(net, epoch, 23))
    assert not np.array_equal(orders[xp_spec][0], orders[xp_spec][1])
    np.testing.assert_array_equal(orders[xp_spec], orders["numpy"])


# -- one trajectory on every backend ------------------------------------------------------------
@functools.cache
def _numpy_run(optimizer):
    return _classifier_run("numpy", optimizer, fused=True)


def _classifier_run(spec, optimizer, fused):
    # 60 samples in batches of 7: 8 of 7 and one of 4 (jax compiles its step for both shapes)
    X, y = classification(60, seed=3)
    Xv, yv = classification(20, seed=4)
    net = pbp.Network([3, 5, 3], activation="tanh", loss="cross_entropy", backend=spec,
                      dtype="float64", seed=7)
    use_ops(net, fused)
    h = net.fit(X, y, epochs=5, batch_size=7, optimizer=optimizer, lr=0.05, shuffle=True,
                validation_data=(Xv, yv))
    return host_params(net), h.history, [to_np(net, a) for a in net.optimizer_state[1]["slots"].get("m", [])]


@FUSED
@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adam"])
@pytest.mark.cases(lambda xp_spec, optimizer: xp_spec != "jax" or optimizer == "adam",
                   reason="jax compiles per optimizer (seconds): its sgd step is compared with the "
                          "loop above; nesterov is the reference Ops' formula, tested eagerly")
def test_trajectory_is_the_same_on_every_backend(xp_spec, optimizer, fused):
    """float64, shuffled, with validation: parameters, optimizer state and every logged
    metric agree with NumPy's to 1e-9 relative, with the overrides on or off."""
    p_ref, h_ref, m_ref = _numpy_run(optimizer)
    p, h, m = _classifier_run(xp_spec, optimizer, fused)
    assert max_rel_diff(p, p_ref) < 1e-9
    if m_ref:
        assert max_rel_diff(m, m_ref) < 1e-9
    for key in ("loss", "val_loss", "val_accuracy"):
        assert len(h[key]) == 5
        np.testing.assert_allclose(h[key], h_ref[key], rtol=1e-9, atol=0)
