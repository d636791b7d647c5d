"""Optimizers users write: the documented per-layer protocol (subclass
portable_bp.optim.Optimizer: init, hyperparams, update(grad, layer_state, (W, b), *, ops,
**hyper)), their state in checkpoints, and objects that do not follow it."""

import functools

import numpy as np
import pytest
from train_helpers import host_params, manual_fit, max_rel_diff, regression

import portable_bp as pbp
from portable_bp.optim import Optimizer


class HalfStep(Optimizer):
    """Plain SGD at a fixed rate, written by a user from the documented protocol: the
    gradient arrays from ``ops.dense_grads`` and new arrays returned."""

    name = "half-step"

    def __init__(self, rate=0.05):
        super().__init__(rate)

    def update(self, grad, state, param, *, ops, lr):
        dW, db = ops.dense_grads(grad)
        W, b = param
        return (W - lr * dW, b - lr * db), state


class Trace(Optimizer):
    """Heavy-ball momentum with its own slot name ("trace"): v <- 0.5 v + g, p <- p - lr v."""

    name = "trace"
    slots = ("trace",)

    def update(self, grad, state, param, *, ops, lr):
        grads = ops.dense_grads(grad)
        trace = tuple(0.5 * v + g for v, g in zip(state["trace"], grads))
        return tuple(p - lr * v for p, v in zip(param, trace)), {"trace": trace}


def relu_net(spec="numpy", seed=0):
    return pbp.Network([3, 8, 2], activation="relu", output_activation="identity", backend=spec,
                       dtype="float64", seed=seed)


@functools.cache
def sgd_loop():
    X, Z = regression(20)
    net = relu_net()
    manual_fit(net, X, Z, 0.05, 5, 2)
    return host_params(net)


@pytest.mark.dtypes("float64")
def test_a_custom_optimizer_with_the_documented_protocol_trains(xp_case):
    """On every backend (compiled by JAX like the built-in ones) it equals the loop."""
    X, Z = regression(20)
    net = relu_net(xp_case.spec)
    net.fit(X, Z, epochs=2, batch_size=5, optimizer=HalfStep(), shuffle=False)
    assert max_rel_diff(host_params(net), sgd_loop()) < 1e-12
    opt, state = net.optimizer_state
    assert isinstance(opt, HalfStep) and state == {"step": 8, "slots": {}}


def test_a_custom_slot_is_kept_saved_and_needs_the_optimizer_again_to_resume(tmp_path):
    """The default init gives zero slots named by ``slots``; fit keeps them per layer in
    optimizer_state; a checkpoint stores them, cannot rebuild the class (None), and a
    resume with the same optimizer continues exactly like an uninterrupted run."""
    X, Z = regression(20)
    straight = relu_net()
    straight.fit(X, Z, epochs=4, batch_size=5, optimizer=Trace(0.02), shuffle=False)
    first = relu_net()
    first.fit(X, Z, epochs=2, batch_size=5, optimizer=Trace(0.02), shuffle=False,
              checkpoint=tmp_path / "ck")
    opt, state = pbp.load(tmp_path / "ck").optimizer_state
    assert opt is None and state["step"] == 8 and len(state["slots"]["trace"]) == 4
    assert any(np.abs(a).max() > 0 for a in state["slots"]["trace"])
    with pytest.raises(ValueError, match="pass the same optimizer again"):
        relu_net().fit(X, Z, epochs=4, batch_size=5, checkpoint=tmp_path / "ck", resume=True)
    resumed = relu_net(seed=9)
    resumed.fit(X, Z, epochs=4, batch_size=5, optimizer=Trace(0.02), shuffle=False,
                checkpoint=tmp_path / "ck", resume=True)
    for a, b in zip(host_params(resumed), host_params(straight)):
        np.testing.assert_array_equal(a, b)


def test_the_old_protocol_is_refused_naming_what_is_missing():
    """The old whole-network protocol (init(params) -> {"step", "slots"}, update(params,
    grads, state, lr)) has no hyperparams: a TypeError that says what to subclass, before
    anything trains."""

    class OldStyle:
        def init(self, params):
            return {"step": 0, "slots": {}}

        def update(self, params, grads, state, lr):
            return [p - 0.05 * g for p, g in zip(params, grads)], state

    X, Z = regression(20)
    net = relu_net()
    before = host_params(net)
    with pytest.raises(TypeError, match=r"hyperparams.*portable_bp\.optim\.Optimizer|"
                                        r"portable_bp\.optim\.Optimizer.*hyperparams"):
        net.fit(X, Z, epochs=1, optimizer=OldStyle())
    assert max_rel_diff(host_params(net), before) == 0.0 and net.epochs_trained == 0


@pytest.mark.requires("mutable")
def test_training_a_copy_never_touches_the_original_or_the_callers_arrays(xp_spec):
    """Backends that update in place (torch and array-api-strict even wrap NumPy memory
    without copying): ``to`` and ``set_params`` must copy, or training would write into the
    original network's or the caller's arrays."""
    X, Z = np.ones((4, 2)), np.zeros((4, 1))
    net = pbp.Network([2, 3, 1], dtype="float32", seed=0)
    before = host_params(net)
    net.to(xp_spec).fit(X, Z, epochs=2, lr=0.5)
    for a, b in zip(before, host_params(net)):
        np.testing.assert_array_equal(a, b)
    W = np.ones((3, 2), np.float32)
    other = pbp.Network([2, 3, 1], backend=xp_spec, dtype="float32", seed=0)
    other.set_params([(W, np.zeros(3, np.float32)), (np.ones((1, 3), np.float32), np.zeros(1, np.float32))])
    other.fit(X, Z, epochs=2, lr=0.5)
    assert (W == 1).all() and not np.array_equal(host_params(other)[0], W)  # it trained
