"""Prediction and evaluation, in batches, with the sums kept on the device.

Both run the same forward pass as training (:mod:`portable_bp.step`), compiled where the
backend compiles (one program per network, kept in ``net.compiled``), over batches of rows so
that the activations alive are one batch's; loss and hit counts are summed on the device and
read back once at the end.
"""

from __future__ import annotations

import functools

from .. import step
from .._validate import integer
from .executors import batches


def check_batch_size(batch_size, n, what="batch_size", none_means="full batch"):
    """A positive batch size clamped to ``n``; None means all ``n`` rows."""
    if batch_size is None:
        return n
    try:
        return min(integer(batch_size, what, minimum=1), n)
    except ValueError:
        raise ValueError(f"{what} must be a positive integer or None ({none_means}), "
                         f"got {batch_size!r}") from None


def compiled(net, key, fn):
    """``fn`` compiled by the backend (JAX's jit) and kept on the network under ``key`` (with
    the Ops it runs), so that fitting or evaluating again reuses it; on eager backends ``fn``."""
    if net.backend.compile is None:
        return fn
    key = (key, id(net.ops))
    if key not in net.compiled:
        net.compiled[key] = net.backend.compile(fn)
    return net.compiled[key]


def _loss_and_hits(spec, ops, xp, counts_hits, params, X, Z, w):
    """The summed (or weighted) loss over X and, when ``counts_hits``, how many samples are
    right: the arg-max class for classifiers, every unit on the right side of 0.5 for binary
    outputs (an integer count, exact for any n; with weights, the weight of those right)."""
    A, total = step.loss_sum(spec, ops, params, X, Z, w)
    if not counts_hits:
        return total, None
    if spec.loss.name == "cross_entropy":
        hits = xp.argmax(A, axis=1) == (Z if Z.ndim == 1 else xp.argmax(Z, axis=1))
    else:
        hits = xp.all((A >= 0.5) == (Z >= 0.5), axis=1)
    if w is not None:
        return total, xp.sum(xp.astype(hits, w.dtype) * w)
    return total, xp.count_nonzero(hits)


def _sum(parts):
    total = None
    for part in parts:
        if part is not None:
            total = part if total is None else total + part
    return total


def metrics(net, X, Z, w=None, prefix="", batch_size=None) -> dict:
    """Loss and (for classifiers and binary cross-entropy) accuracy over X, weighted by ``w``
    when given, as Python floats from the values read back at the end."""
    counts_hits = net.loss in ("cross_entropy", "binary_cross_entropy")
    run = compiled(net, "metrics", functools.partial(_loss_and_hits, net.spec, net.ops, net.xp,
                                                     counts_hits))
    n = X.shape[0]
    parts = [run(net.params, X[s:t, ...], Z[s:t, ...], None if w is None else w[s:t])
             for s, t in batches(n, n if batch_size is None else batch_size)]
    weight = n if w is None else net.backend.to_float(net.xp.sum(w))
    out = {prefix + "loss": net.backend.to_float(_sum(p[0] for p in parts)) / weight}
    if counts_hits:
        out[prefix + "accuracy"] = net.backend.to_float(_sum(p[1] for p in parts)) / weight
    return out


def predict(net, X, batch_size=None):
    """Outputs for X (on the backend); class indices for cross-entropy networks."""
    with net.backend.activate():
        X = net.features(X)
        size = check_batch_size(batch_size, X.shape[0])
        run = compiled(net, "outputs", functools.partial(step.outputs, net.spec, net.ops))
        outs = [run(net.params, X[s:t, ...]) for s, t in batches(X.shape[0], size)]
        A = outs[0] if len(outs) == 1 else net.xp.concat(outs, axis=0)
        return net.xp.argmax(A, axis=1) if net.is_classifier else A


def evaluate(net, X, Z, batch_size=None, sample_weight=None) -> dict:
    """``{"loss": ..., "accuracy": ...}`` over all of X (accuracy for classifiers and binary
    cross-entropy), weighted by ``sample_weight`` when given, in batches of ``batch_size``
    rows (None: all at once)."""
    with net.backend.activate():
        X = net.features(X)
        Z = net.targets(Z, X.shape[0])
        w = None if sample_weight is None else net.sample_weights(sample_weight, X.shape[0])
        size = None if batch_size is None else check_batch_size(batch_size, X.shape[0])
        return metrics(net, X, Z, w, batch_size=size)
