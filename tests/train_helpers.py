"""Helpers shared by the fit tests: data, host copies of a network's state, the reference
training loop written with the public API only, and ways to stop a fit at a chosen batch.

The reference loop (:func:`manual_fit`) uses nothing of fit: each batch's gradient comes from
``Network.loss_and_grads`` and the new parameters, computed on the host in float64 by
:class:`HostOptimizer` (the optimizers' textbook formulas, PyTorch's conventions), go back
with ``Network.set_params``.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import warnings

import numpy as np
from conftest import assert_close, to_np

import portable_bp as pbp
from portable_bp.train import executors


# -- data ------------------------------------------------------------------------------------
def regression(n, n_in=3, n_out=2, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, n_in)), rng.standard_normal((n, n_out))


def classification(n, n_in=3, n_classes=3, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, n_in)), rng.integers(0, n_classes, n)


# -- a network's state on the host -------------------------------------------------------------
def host_params(net):
    """Every parameter as a host float64 copy, flat: [W0, b0, W1, b1, ...]."""
    return [np.array(to_np(net, a), copy=True) for pair in net.params for a in pair]


def flat(arrays):
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])


def max_rel_diff(a, b):
    a, b = flat(a), flat(b)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def assert_params_close(net, expected, dtype="float64", scale=100):
    got = host_params(net)
    assert len(got) == len(expected)
    for g, w in zip(got, expected):
        assert_close(g, w, dtype, scale=scale)


def state_of(net):
    """What a fit may change, as host copies: parameters, epoch count, seed and the
    optimizer state (its config, step count and slot arrays)."""
    opt_state = None
    if net.optimizer_state is not None:
        opt, state = net.optimizer_state
        config = opt.config() if opt is not None and hasattr(opt, "config") else type(opt).__name__
        slots = {k: [np.array(to_np(net, a), copy=True) for a in v] for k, v in state["slots"].items()}
        opt_state = (config, state["step"], slots)
    return {"params": host_params(net), "epochs_trained": net.epochs_trained, "seed": net.seed,
            "optimizer": opt_state}


def assert_same_state(net, expected, what=""):
    """``net`` holds exactly ``expected`` (from :func:`state_of`), bit for bit."""
    got = state_of(net)
    assert got["epochs_trained"] == expected["epochs_trained"], what
    assert got["seed"] == expected["seed"], what
    for a, b in zip(got["params"], expected["params"]):
        np.testing.assert_array_equal(a, b, err_msg=what)
    if expected["optimizer"] is None:
        assert got["optimizer"] is None, what
        return
    assert got["optimizer"] is not None, what
    (c0, s0, slots0), (c1, s1, slots1) = got["optimizer"], expected["optimizer"]
    assert (c0, s0, sorted(slots0)) == (c1, s1, sorted(slots1)), what
    for name in slots0:
        for a, b in zip(slots0[name], slots1[name]):
            np.testing.assert_array_equal(a, b, err_msg=f"{what} slot {name}")


# -- the reference loop --------------------------------------------------------------------------
class HostOptimizer:
    """The optimizers' formulas on host float64 arrays: SGD (E12), momentum and Nesterov
    (v <- mu v + g; step lr v, or lr (g + mu v)), Adam with bias correction; L2 weight decay
    adds wd * p to the gradient."""

    def __init__(self, name, momentum=0.9, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.name, self.mu, self.betas, self.eps, self.wd = name, momentum, betas, eps, weight_decay
        self.slots, self.t = None, 0

    def step(self, params, grads, lr):
        grads = [g + self.wd * p for p, g in zip(params, grads)]
        if self.slots is None:
            self.slots = [[np.zeros_like(p) for p in params] for _ in range(2)]
        if self.name == "sgd":
            return [p - lr * g for p, g in zip(params, grads)]
        if self.name in ("momentum", "nesterov"):
            v = self.slots[0] = [self.mu * v + g for v, g in zip(self.slots[0], grads)]
            if self.name == "nesterov":
                return [p - lr * (g + self.mu * u) for p, g, u in zip(params, grads, v)]
            return [p - lr * u for p, u in zip(params, v)]
        b1, b2 = self.betas
        self.t += 1
        m = self.slots[0] = [b1 * m + (1 - b1) * g for m, g in zip(self.slots[0], grads)]
        v = self.slots[1] = [b2 * v + (1 - b2) * g * g for v, g in zip(self.slots[1], grads)]
        return [p - lr * (mm / (1 - b1 ** self.t)) / (np.sqrt(vv / (1 - b2 ** self.t)) + self.eps)
                for p, mm, vv in zip(params, m, v)]


def epoch_order(net, epoch, n):
    """The batch order fit documents: one host permutation per epoch, seeded by the
    network's seed and the epoch (``Backend.rng``), the same on every backend."""
    return net.backend.rng([net.seed, epoch]).permutation(n)


def manual_fit(net, X, Z, lr, batch_size, epochs, optimizer="sgd", first_epoch=0, max_steps=None,
               shuffle=False):
    """Train ``net`` batch by batch with ``loss_and_grads`` and ``set_params`` only. ``lr``
    is a number or a schedule ``epoch -> lr``; ``optimizer`` a name or a HostOptimizer.
    Returns each epoch's sample-weighted mean loss (each batch's loss before its update)
    and the number of steps taken (stopping early after ``max_steps``)."""
    opt = HostOptimizer(optimizer) if isinstance(optimizer, str) else optimizer
    n = X.shape[0]
    size = n if batch_size is None else batch_size
    losses, steps = [], 0
    for epoch in range(first_epoch, first_epoch + epochs):
        rate = lr(epoch) if callable(lr) else lr
        order = epoch_order(net, epoch, n) if shuffle else np.arange(n)
        total = 0.0
        for s in range(0, n, size):
            if max_steps is not None and steps == max_steps:
                return losses, steps
            rows = order[s:s + size]
            loss, grads = net.loss_and_grads(X[rows], Z[rows])
            total += loss * len(rows)
            params = [to_np(net, p) for pair in net.params for p in pair]
            new = opt.step(params, [to_np(net, g) for pair in grads for g in pair], rate)
            net.set_params(list(zip(new[0::2], new[1::2])))
            steps += 1
        losses.append(total / n)
    return losses, steps


# -- callbacks -----------------------------------------------------------------------------------
class Recorder:
    """Keeps a host copy of the parameters at the end of every epoch, and every hook call."""

    def __init__(self):
        self.params, self.events = [], []

    def check(self, metrics):
        self.events.append(("check", sorted(metrics)))

    def on_train_begin(self, net):
        self.events.append("begin")

    def on_epoch_end(self, net, epoch, logs):
        self.events.append(("epoch", epoch, sorted(logs)))
        self.params.append(host_params(net))
        return False

    def on_train_end(self, net):
        self.events.append("end")

    def close(self):
        self.events.append("close")


# -- stopping a fit where a test wants it -----------------------------------------------------------
def step_by_step(monkeypatch):
    """Run the next fits' scanned epochs step by step through the compiled step: a scanned
    epoch is one program (an interrupt can only fall between epochs), so that a step can be
    counted and failed. XLA may round the unrolled scan differently from the single step in
    the last bit, so a bit-for-bit comparison with a stepped run steps every run."""
    monkeypatch.setattr(executors.Scanned, "epoch", executors.Eager.epoch)
    monkeypatch.delattr(executors.Scanned, "checked_epoch", raising=False)  # the loop then calls epoch


def fail_at_step(monkeypatch, step, exc=KeyboardInterrupt):
    """Make the ``step``-th training step of the next fits (counted from 1, over every
    executor) raise ``exc`` before it runs; returns the counter {"steps": calls so far}."""
    calls = {"steps": 0}
    step_by_step(monkeypatch)
    for cls in (executors.Eager, executors.Compiled):
        original = cls.__dict__["step"]

        def counted(self, *args, _original=original, **kwargs):
            calls["steps"] += 1
            if calls["steps"] == step:
                raise exc()
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "step", counted)
    return calls


def count_steps(monkeypatch):
    """Count the training steps of the next fits (none may be taken before the checks)."""
    return fail_at_step(monkeypatch, step=math.inf)


# -- divergence --------------------------------------------------------------------------------------
@contextlib.contextmanager
def overflow_expected():
    """NumPy's overflow warnings are what a diverging run is made of."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def where_diverged(exc):
    """(epoch, batch, "loss" or "update") from a TrainingDiverged message."""
    text = str(exc)
    m = re.search(r"diverged at epoch (\d+) \(0-based\), batch (\d+): the (loss|update) of batch", text)
    assert m, f"message names no epoch, batch and cause: {text}"
    return int(m.group(1)), int(m.group(2)), m.group(3)


# -- JAX -----------------------------------------------------------------------------------------------
# why a test leaves out the jax float32 case (``skip_backends("jax-float32", reason=...)``)
ONLY_FLOAT64_ON_JAX = "jax compiles per dtype and its float32 step is the same code as its float64 one, tested"


# -- checkpoints ------------------------------------------------------------------------------
def checkpoint_data(n=40, n_in=3, classes=3, seed=0):
    """A small classification set for the checkpoint and resume tests."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, n_in)), rng.integers(0, classes, n)


def checkpoint_net(**kw):
    """The 3-5-3 float64 classifier the checkpoint and resume tests save and load."""
    kw = {"loss": "cross_entropy", "dtype": "float64", "seed": 7, **kw}
    return pbp.Network([3, 5, 3], **kw)


def rewrite(path, **changes):
    """Copy a checkpoint's arrays, apply ``changes`` (None deletes a key), write it back."""
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    for k, v in changes.items():
        if v is None:
            arrays.pop(k)
        else:
            arrays[k] = v
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def meta_with(path, **fields):
    """The checkpoint's metadata with ``fields`` changed, as the array ``rewrite`` takes."""
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"][()]))
    meta.update(fields)
    return np.array(json.dumps(meta))
