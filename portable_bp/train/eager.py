"""The eager executor: the training step called as it is, batch after batch, and the batch
gathering every executor shares (see :mod:`portable_bp.train.executors` for the others)."""

from __future__ import annotations

from .. import step
from ..transforms import NO_TRANSFORMS


def optimizer_key(optimizer) -> str:
    """What a compiled program depends on of ``optimizer``: its configuration without the
    learning rate (an argument, not a constant), or its identity when it has none."""
    config = optimizer.config() if hasattr(optimizer, "config") else None
    return repr(sorted({k: v for k, v in (config or {"id": id(optimizer)}).items() if k != "lr"}.items()))


class ExecutorFailed(RuntimeError):
    """Compiling or capturing the step failed (not a training error): fall back to eager."""


def batches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """(start, stop) of each batch; the last one may be shorter (stop is clamped: the Array
    API does not promise out-of-range slice stops)."""
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def gather(ops, data, order, start, size):
    """Rows start:start+size of each array of ``data`` (X, Z and the sample weights or
    None), or of their permutation ``order`` (the epoch's shuffle). Shuffled batches gather
    just their own rows, so shuffling never copies the dataset. Unshuffled ones are views
    when ``start`` is a number; inside a compiled step, where it is traced (so that one
    program serves every batch), ``ops.rows`` (slice bounds must be constants there)."""
    if isinstance(start, int) and order is None:  # the common case, written out: it runs per step
        X, Z, w = data
        stop = start + size
        return X[start:stop, ...], Z[start:stop, ...], None if w is None else w[start:stop]
    if order is None:
        return tuple(None if a is None else ops.rows(a, start, size) for a in data)
    rows = order[start:start + size] if isinstance(start, int) else ops.rows(order, start, size)
    return tuple(None if a is None else ops.xp.take(a, rows, axis=0) for a in data)


class Eager:
    """The step called as it is, batch after batch. ``transforms`` (a
    :class:`~portable_bp.transforms.Chain`) map the gradients before ``optimizer`` sees
    them; the step's random key is the network's seed and the step count."""

    name = "eager"

    def __init__(self, net, optimizer, ops=None, transforms=NO_TRANSFORMS, offset=0):
        self.xp, self.spec, self.optimizer, self.transforms = net.xp, net.spec, optimizer, transforms
        self.ops = net.ops if ops is None else ops
        self.seed = net.seed
        #: steps the network took before this fit's optimizer count 0 (earlier fits): the
        #: random numbers are keyed by offset + count, so a second fit draws new masks
        self.offset = offset

    def step(self, params, state, count, data, order, start, stop, lr):
        """One step on rows start:stop (of ``order``) of ``data`` (X, Z, weights or None):
        (params, state, the batch's summed loss). ``count`` is the step counter: it keys
        the step's random numbers and the optimizer's scalars."""
        X, Z, w = gather(self.ops, data, order, start, stop - start)
        ctx = step.Context.of(X, Z, w, self.offset + count, self.seed)
        return step.train_step(self.spec, self.ops, self.optimizer, params, state, ctx,
                               self.optimizer.hyperparams(count, lr), self.transforms)

    def epoch(self, params, state, count, data, order, batch_size, lr):
        """Every batch of one epoch: (params, state, step count, summed loss on the device)."""
        total = None
        for start, stop in batches(data[0].shape[0], batch_size):
            params, state, loss = self.step(params, state, count, data, order, start, stop, lr)
            count += 1
            total = loss if total is None else total + loss
        return params, state, count, total
