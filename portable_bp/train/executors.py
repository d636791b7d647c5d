"""Executors: how the training step runs, one batch at a time or a whole epoch.

The step itself (:func:`portable_bp.step.train_step`) is one pure function of arrays. An
executor feeds it batches: :class:`Eager` calls it op by op (NumPy, PyTorch, CuPy,
array-api-strict); :class:`Compiled` hands it to the backend's compiler once per network,
optimizer configuration and batch size (JAX's ``jit``) and calls the program per batch.
Both return the epoch's summed loss as a device scalar: nothing is read back per batch.

The optimizer's scalars for each step (:meth:`hyperparams`) are computed here, on the
host, from the step count, which the executor carries as a Python integer.
"""

from __future__ import annotations

import functools

from .. import step


def batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each batch; the last one may be shorter (stop is clamped: the Array
    API does not promise out-of-range slice stops)."""
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def gather(xp, data, order, start, size):
    """Rows start:start+size of each array of ``data`` (X, Z and the sample weights or
    None), or of their permutation ``order`` (the epoch's shuffle). Shuffled batches gather
    just their own rows, so shuffling never copies the dataset. Unshuffled ones are views
    when ``start`` is a number; inside a compiled step, where it is traced (so that one
    program serves every batch), a gather, since slice bounds must be constants there."""
    if isinstance(start, int) and order is None:
        return tuple(None if a is None else a[start:start + size, ...] for a in data)
    if isinstance(start, int):
        rows = order[start:start + size]
    else:
        rows = xp.arange(size) + start
        if order is not None:
            rows = xp.take(order, rows)
    return tuple(None if a is None else xp.take(a, rows, axis=0) for a in data)


class Eager:
    """The step called as it is, batch after batch."""

    name = "eager"

    def __init__(self, net, optimizer, ops=None):
        self.xp, self.spec, self.optimizer = net.xp, net.spec, optimizer
        self.ops = net.ops if ops is None else ops

    def step(self, params, state, count, data, order, start, stop, lr):
        """One step on rows start:stop (of ``order``) of ``data`` (X, Z, weights or None):
        (params, state, the batch's summed loss)."""
        X, Z, w = gather(self.xp, data, order, start, stop - start)
        return step.train_step(self.spec, self.ops, self.optimizer, params, state, X, Z,
                               self.optimizer.hyperparams(count, lr), w)

    def epoch(self, params, state, count, data, order, batch_size, lr):
        """Every batch of one epoch: (params, state, step count, summed loss on the device)."""
        total = None
        for start, stop in batches(data[0].shape[0], batch_size):
            params, state, loss = self.step(params, state, count, data, order, start, stop, lr)
            count += 1
            total = loss if total is None else total + loss
        return params, state, count, total


class Compiled(Eager):
    """The step compiled by the backend (``Backend.compile``: JAX's jit) and called per batch.

    One program per network, Ops, optimizer configuration (the learning rate apart: it is
    an argument, not a constant) and batch size; kept on the network (``net.compiled``) so
    that fitting again reuses it."""

    name = "jit"

    def __init__(self, net, optimizer, ops=None):
        super().__init__(net, optimizer, ops)
        config = optimizer.config() if hasattr(optimizer, "config") else None
        config = {k: v for k, v in (config or {"id": id(optimizer)}).items() if k != "lr"}
        key = ("step", type(optimizer).__name__, repr(sorted(config.items())), id(self.ops))
        if key not in net.compiled:
            fn = functools.partial(_gathered_step, self.xp, self.spec, self.ops, optimizer)
            net.compiled[key] = net.backend.compile(fn, static_argnames=("size",))
        self._program = net.compiled[key]

    def step(self, params, state, count, data, order, start, stop, lr):
        return self._program(params, state, data, order, start, self.optimizer.hyperparams(count, lr),
                             size=stop - start)


def _gathered_step(xp, spec, ops, optimizer, params, state, data, order, start, hyper, size):
    """:func:`gather` and the step as one pure function (what :class:`Compiled` compiles)."""
    X, Z, w = gather(xp, data, order, start, size)
    return step.train_step(spec, ops, optimizer, params, state, X, Z, hyper, w)


def executor_for(net, optimizer, ops=None) -> Eager:
    """The backend's executor: compiled where the backend compiles pure functions."""
    return (Eager if net.backend.compile is None else Compiled)(net, optimizer, ops)
