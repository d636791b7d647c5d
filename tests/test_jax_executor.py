"""The compiled executor: a backend that compiles (JAX's jit) gets the training step as one
pure function, once per network and optimizer configuration, and trains exactly as the
eager executor does."""

import subprocess
import sys

import numpy as np
import pytest
from conftest import probed
from train_helpers import classification, flat, host_params

import portable_bp as pbp
from portable_bp.optim import Optimizer


class HalfStep(Optimizer):
    """A user's optimizer (the documented protocol): plain SGD at a fixed rate."""

    name = "half-step"

    def __init__(self):
        super().__init__(0.01)

    def update(self, grad, state, param, *, ops, lr):
        dW, db = ops.dense_grads(grad)
        return (param[0] - lr * dW, param[1] - lr * db), state


def test_a_backend_that_compiles_gets_the_whole_step_once_per_network_and_optimizer(monkeypatch):
    """Backend.compile receives the step as one pure function; fitting again with another
    learning rate reuses it (lr is an argument), a new optimizer configuration compiles
    anew, a custom optimizer object once, and the trajectory equals the eager one's."""
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
    np.testing.assert_allclose(flat(p), flat(eager["nesterov"]), rtol=1e-12)
    np.testing.assert_allclose(flat(run(make(), [0.05, 0.02], "adam")), flat(eager["adam"]), rtol=1e-12)
    assert len(compiled) == 2
    custom = HalfStep()
    net.fit(X, y, epochs=1, optimizer=custom)
    net.fit(X, y, epochs=1, optimizer=custom)
    assert len(compiled) == 3, "a custom optimizer object is compiled once, then reused"


def test_jax_fit_runs_a_jitted_step():
    """On JAX the epoch program kept in net.compiled (the scan executor: 21 samples in
    batches of 7, no ragged batch) is a jitted function, reused by a second fit with another
    lr; the step count is a host int carried across fits of one run."""
    jax = pytest.importorskip("jax")
    X, y = classification(21)
    net = pbp.Network([3, 5, 3], activation="relu", loss="cross_entropy", backend="jax",
                      dtype="float64", seed=1)
    net.fit(X, y, epochs=2, batch_size=7, lr=0.1)
    net.fit(X, y, epochs=1, batch_size=7, lr=0.05)
    (step,) = [fn for key, fn in net.compiled.items() if key[0] == "epoch"]
    assert isinstance(step, type(jax.jit(lambda a: a)))
    state = net.optimizer_state[1]
    assert isinstance(state["step"], int) and state["step"] == 3  # the second fit starts afresh


@pytest.mark.jax_child
def test_integer_labels_on_jax_without_x64_warn_nothing():
    """JAX without x64 has int32 indices: labels are converted to the namespace's index
    dtype, not to int64 (which JAX would truncate with a warning on every call); and
    JaxOps' overrides pass their check in float32 alone. Run in a fresh process: any
    float64 network made earlier in this one switches x64 on (and asked here, not built:
    the test's worker holds no JAX program yet, beside the child's ~0.4 GB)."""
    ok, reason = probed("jax")
    if not ok:
        pytest.skip(f"backend jax unavailable: {reason}")
    code = ("import numpy as np, portable_bp as pbp\n"
            "X = np.random.default_rng(0).standard_normal((40, 3))\n"
            "y = np.arange(40) % 3\n"
            "net = pbp.Network([3, 4, 3], activation='relu', loss='cross_entropy', backend='jax', seed=0)\n"
            "net.fit(X, y, epochs=2, batch_size=8, lr=0.1, validation_data=(X, y))\n"
            "print(net.evaluate(X, y.astype(np.int32))['accuracy'])\n"
            "ops = net.backend.ops\n"
            "assert ops.dropped == {}, ops.dropped\n"
            "assert ops.overrides() == ['rows', 'affine', 'activation', 'backprop_delta', 'extremes',\n"
            "                           'finite_or_nan'], ops.overrides()\n")
    r = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]


@pytest.mark.parametrize("sizes,dtype,unroll", [([3, 4, 2], "float64", 8), ([64, 512, 256, 10], "float64", 1),
                                               ([3, 4, 2], "float32", "1 on the CPU")])
def test_the_epoch_loop_is_unrolled_for_small_steps_only_and_trains_alike(monkeypatch, sizes, dtype, unroll):
    """A small network's epoch loop (few carried elements) is unrolled, a larger one's is
    not, nor the tiniest's on the CPU (config A in float32: 108 bytes carried, which XLA:CPU
    compiles into one kernel only when the loop is not unrolled); all give the eager
    executor's parameters."""
    jax = pytest.importorskip("jax")
    seen = []
    original = jax.lax.scan
    monkeypatch.setattr(jax.lax, "scan", lambda *a, **k: seen.append(k.get("unroll")) or original(*a, **k))
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((24, sizes[0])), rng.integers(0, sizes[-1], 24)
    nets = {}
    for executor in ("scan", "eager"):
        net = pbp.Network(sizes, activation="tanh", loss="cross_entropy", backend="jax", dtype=dtype, seed=3)
        net.executor = executor
        net.fit(X, y, epochs=2, batch_size=6, lr=0.1)
        nets[executor] = host_params(net)
    if unroll == "1 on the CPU":
        unroll = 1 if net.backend.device.platform == "cpu" else 8
    assert seen == [unroll]
    tol = 1e-12 if dtype == "float64" else 1e-5
    np.testing.assert_allclose(flat(nets["scan"]), flat(nets["eager"]), rtol=tol, atol=tol)


@pytest.mark.parametrize("n,separate_checks", [(24, 0), (26, 1)])
def test_the_scanned_epoch_checks_its_loss_in_its_own_program(monkeypatch, n, separate_checks):
    """The epoch's finiteness check (``ops.finite_or_nan``) runs inside the scanned epoch's
    program: no separate call when every batch is full, one after a ragged last batch (run
    by the per-step program). That the check still makes a diverged epoch's loss NaN is
    test_executors' divergence test under the scanned epoch."""
    pytest.importorskip("jax")
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((n, 3)), rng.integers(0, 2, n)
    net = pbp.Network([3, 4, 2], activation="tanh", loss="cross_entropy", backend="jax", dtype="float64", seed=3)
    net.fit(X, y, epochs=1, batch_size=6, lr=0.1)  # compiled and traced here
    calls = []
    original = type(net.backend.ops).finite_or_nan
    monkeypatch.setattr(type(net.backend.ops), "finite_or_nan", lambda *a: calls.append(1) or original(*a))
    net.fit(X, y, epochs=2, batch_size=6, lr=0.1)
    assert len(calls) == 2 * separate_checks
