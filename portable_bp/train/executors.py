"""Executors: how the training step runs, one batch at a time or a whole epoch.

The step itself (:func:`portable_bp.step.train_step`) is one pure function of arrays. An
executor feeds it batches:

* :class:`Eager` calls it op by op (NumPy, PyTorch, CuPy, array-api-strict; any backend);
* :class:`Compiled` hands it to the backend's compiler (``Backend.compile``: JAX's jit) and
  calls the program once per batch;
* :class:`Scanned` compiles the whole epoch as one program, a loop over its batches
  (``Backend.loop``: JAX's ``lax.scan``), with the batch order gathered inside;
* ``"graph"``: the step captured once and replayed per batch (CUDA graphs), provided by
  the backend (``Backend.capture``).

Every executor returns the epoch's summed loss as a device scalar: nothing is read back per
batch. The optimizer's scalars for each step (``hyperparams``) are computed on the host
from the step count, which the executor carries as a Python integer.

Which one runs: ``net.executor`` (``"auto"``: the first of ``Backend.executors`` that this
backend has; or a name), overridden for every network by ``PORTABLE_BP_EXECUTOR`` (e.g.
``eager``, to debug). An executor that fails to compile or capture raises
:class:`ExecutorFailed`; fit then falls back to eager for that network, once, and says why.
"""

from __future__ import annotations

import functools
import os

from .. import step
from ..counter_rng import wrap32
from ..optim import hyperparams_over
from ..transforms import NO_TRANSFORMS
from .captured import Captured
from .eager import Eager, ExecutorFailed, batches, gather, optimizer_key
from .state import TrainState

__all__ = ["Eager", "Compiled", "Scanned", "Captured", "ExecutorFailed", "batches", "gather",
           "available", "chosen", "executor_for"]


class Compiled(Eager):
    """The step compiled by the backend (``Backend.compile``: JAX's jit) and called per batch.

    One program per network, Ops, optimizer configuration (the learning rate apart: it is
    an argument, not a constant) and batch size; kept on the network (``net.compiled``) so
    that fitting again reuses it."""

    name = "jit"

    def __init__(self, net, optimizer, ops=None, transforms=NO_TRANSFORMS, offset=0):
        super().__init__(net, optimizer, ops, transforms, offset)
        self.net = net
        self._config = optimizer_key(optimizer)

    def _compiled(self, kind, fn, static):
        """The program of this ``kind`` ("step", "epoch") for this network, Ops, optimizer
        configuration, transforms and seed (the random key's), compiled on first use and
        kept on the network."""
        key = (kind, type(self.optimizer).__name__, self._config, id(self.ops), self.transforms.key(),
               self.seed, self.spec)
        if key not in self.net.compiled:
            self.net.compiled[key] = self.net.backend.compile(fn, static_argnames=static)
        return self.net.compiled[key]

    @functools.cached_property
    def _step_program(self):
        """The compiled step, looked up once per fit (a scanned epoch never asks for it)."""
        return self._compiled("step", functools.partial(_gathered_step, self.spec, self.ops, self.optimizer,
                                                        self.transforms, self.seed), ("size",))

    def step(self, params, state, count, data, order, start, stop, lr):
        return self._step_program(params, state, data, order, start, wrap32(self.offset + count),
                                  self.optimizer.hyperparams(count, lr), size=stop - start)


def _gathered_step(spec, ops, optimizer, transforms, seed, params, state, data, order, start, count, hyper, size):
    """:func:`gather` and the step as one pure function (what :class:`Compiled` compiles);
    ``count`` (the step counter, wrapped to 32 bits) is an argument, not a constant."""
    X, Z, w = gather(ops, data, order, start, size)
    ctx = step.Context.of(X, Z, w, count, seed)
    return step.train_step(spec, ops, optimizer, params, state, ctx, hyper, transforms)


class Scanned(Compiled):
    """Every full batch of the epoch as one compiled loop (``Backend.loop``, JAX's
    ``lax.scan``), the ragged last batch by the per-step program. One program per network,
    Ops, optimizer configuration, batch size and number of full batches; the step scalars
    of the whole epoch are computed on the host and passed in as arrays."""

    name = "scan"

    def __init__(self, net, optimizer, ops=None, transforms=NO_TRANSFORMS, offset=0):
        super().__init__(net, optimizer, ops, transforms, offset)
        self.dtype = net.array_dtype

    @functools.cached_property
    def _epoch_program(self):
        """The compiled epoch, looked up once per fit (its key was rebuilt every epoch);
        jit specialises it on its static ``size`` and ``steps``."""
        return self._compiled("epoch", functools.partial(_scanned_epoch, self.xp, self.net.backend.loop, self.spec,
                                                         self.ops, self.optimizer, self.transforms, self.seed),
                              ("size", "steps"))

    def _hypers(self, count, steps, lr):
        """The epoch's step scalars: ({name: number} the same for every step,
        {name: array of a value per step})."""
        values = hyperparams_over(self.optimizer, count, steps, lr)
        fixed = {k: v for k, v in values.items() if not isinstance(v, list)}
        varying = {k: self.xp.asarray(v, dtype=self.dtype) for k, v in values.items() if isinstance(v, list)}
        return fixed, varying

    def epoch(self, params, state, count, data, order, batch_size, lr):
        return self._run(params, state, count, data, order, batch_size, lr)[:4]

    def checked_epoch(self, params, state, count, data, order, batch_size, lr):
        """:meth:`epoch` with its summed loss made NaN by any non-finite parameter or slot
        (``ops.finite_or_nan``), checked inside the epoch's program when there is no ragged
        last batch: one call fewer per epoch (on config A, a tenth of the epoch's time)."""
        params, state, count, total, checked = self._run(params, state, count, data, order, batch_size, lr)
        if checked is None:
            checked = self.ops.finite_or_nan(total, TrainState(params, state, count, 0).arrays())
        return params, state, count, checked

    def _run(self, params, state, count, data, order, batch_size, lr):
        """(params, state, count, summed loss, the loss checked or None after a ragged batch)."""
        n = data[0].shape[0]
        steps = n // batch_size
        total = checked = None
        if steps:
            fixed, varying = self._hypers(count, steps, lr)
            first = wrap32(self.offset + count)  # the random numbers' step counter
            params, state, total, checked = self._epoch_program(params, state, data, order, first, fixed, varying,
                                                                size=batch_size, steps=steps)
            count += steps
        if n % batch_size:
            params, state, loss = self.step(params, state, count, data, order, steps * batch_size, n, lr)
            count += 1
            total, checked = (loss if total is None else total + loss), None
        return params, state, count, total, checked


def _scanned_epoch(xp, loop, spec, ops, optimizer, transforms, seed, params, state, data, order, first, fixed,
                   varying, size, steps):
    """``steps`` batches of ``size`` rows as one loop: (params, state, summed loss, the
    loss made NaN by any non-finite parameter or slot). The batch's index is carried by
    the loop (counted, not sliced out of an ``arange`` at every step: config A's epoch ran
    faster); the step counter is ``first`` (the epoch's first step, wrapped to 32 bits)
    plus that index."""
    def body(carry, per_step):
        params, state, total, index = carry
        X, Z, w = gather(ops, data, order, index * size, size)
        ctx = step.Context.of(X, Z, w, first + index, seed)
        params, state, loss = step.train_step(spec, ops, optimizer, params, state, ctx,
                                              {**fixed, **per_step}, transforms)
        return (params, state, total + loss, index + 1), None

    zero, first_index = xp.zeros((), dtype=data[0].dtype), xp.arange(1)[0]  # arange's integer dtype
    (params, state, total, _), _ = loop(body, (params, state, zero, first_index), varying, steps)
    return params, state, total, ops.finite_or_nan(total, TrainState(params, state, 0, 0).arrays())


EXECUTORS = {"eager": Eager, "jit": Compiled, "scan": Scanned, "graph": Captured}
ENVIRONMENT = "PORTABLE_BP_EXECUTOR"


def available(backend) -> list[str]:
    """The executors this backend has, in its order of preference (``Backend.executors``,
    else captured, scanned, compiled), eager always last."""
    have = {"eager": True, "jit": backend.compile is not None,
            "scan": backend.compile is not None and backend.loop is not None,
            "graph": backend.capture is not None}
    order = backend.executors or ("graph", "scan", "jit")
    return [name for name in (*order, "eager") if have.get(name)]


def chosen(net) -> str:
    """The executor ``fit`` runs for ``net``: the environment's, or ``net.executor``, or
    (``auto``) the backend's first."""
    name = os.environ.get(ENVIRONMENT) or net.executor
    have = available(net.backend)
    if name == "auto":
        return have[0]
    if name not in have:
        raise ValueError(f"executor {name!r} is not available on backend {net.backend.spec!r} "
                         f"(it has {', '.join(have)})")
    return name


def executor_for(net, optimizer, *, comm=None, deterministic: int | None = None, name: str | None = None,
                 transforms=NO_TRANSFORMS, ops=None, offset: int = 0) -> Eager:
    """The executor of a fit, chosen here and only here. One process (``comm`` None or of
    size 1, unless it asks to communicate alone: NCCL) without ``deterministic`` pieces: the
    one called ``name`` (default: :func:`chosen`). Otherwise the data-parallel one (every
    global batch split over the ranks of ``comm``, or into K fixed pieces, which must be the
    same arithmetic for any world size): its compiled halves where the backend compiles and the chosen executor is
    not eager, op by op otherwise (captured halves for CUDA graphs: see docs/scaling.md)."""
    if (comm is None or (comm.size == 1 and comm.alone_runs_locally)) and not deterministic:
        return EXECUTORS[name or chosen(net)](net, optimizer, ops, transforms, offset)
    from .data_parallel import DataParallel, DataParallelCompiled

    eager = (name or chosen(net)) == "eager" or net.backend.compile is None
    return (DataParallel if eager else DataParallelCompiled)(net, optimizer, comm, deterministic, ops, transforms,
                                                             offset)
