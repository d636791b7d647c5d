"""The step recorded once and replayed per batch: CUDA graphs (torch:cuda, CuPy).

A captured step runs without Python: one replay per batch. What changes between batches
must therefore live on the device, at addresses fixed when the step was recorded:

* parameters and optimizer slots: the Ops update them in place (checked after capture: an
  update that made new arrays cannot be replayed);
* the batch: the step gathers its own rows from the data and the epoch's order (a static
  buffer the order is copied into once per epoch) at a start index and step counter that
  the recorded step itself advances; the step count that keys the dropout masks is the
  epoch's first count (a static buffer, set once per epoch) plus that counter;
* the optimizer's scalars: those fixed for the epoch (SGD's lr) are constants of the
  recording (a new lr records again: once per epoch at most); those that change every step
  (Adam's bias corrections) are an array of one value per step, copied in once per epoch
  and indexed by the step counter;
* the loss: added by the recorded step to a static sum, read once per epoch.

The first batch runs eagerly (it is the warm-up the capture needs), the batches after it
replay, and a ragged last batch runs eagerly. The backend provides ``Backend.capture``:
``capture.warmup()`` (a context for that first, eager step: a side stream on CUDA) and
``capture.record(body) -> graph`` (``graph.replay()`` runs the recorded ``body``); anything
failing while recording or replaying is :class:`~portable_bp.train.executors.ExecutorFailed`,
and fit runs that epoch again eagerly (from the state it started from) and falls back to eager.
The first replay of every recording is checked against the same batch run eagerly on copies
(one extra step and one host read per recording): a recording that computes anything else
is refused the same way, so a capture can be slower than hoped but never wrong.
"""

from __future__ import annotations

from .. import step
from ..counter_rng import wrap32
from ..optim import hyperparams_over
from ..transforms import NO_TRANSFORMS
from .eager import Eager, ExecutorFailed, gather
from .state import TrainState

#: how far (relative to each array's largest magnitude) the first replay may be from the
#: eager step it is checked against: cuBLAS may pick another algorithm inside a capture
REPLAY_RTOL = {"float32": 1e-4, "float64": 1e-10}


class _Recording:
    """One captured step and the static buffers it reads and writes."""

    def __init__(self, xp, device, data, size, shuffled, varying_keys, steps, dtype):
        n = data[0].shape[0]
        self.order = xp.zeros(n, dtype=xp.int64, device=device) if shuffled else None
        self.start = xp.zeros((), dtype=xp.int64, device=device)
        self.counter = xp.zeros((), dtype=xp.int64, device=device)
        self.base = xp.zeros((), dtype=xp.int64, device=device)
        self.loss_sum = xp.zeros((), dtype=dtype, device=device)
        self.values = {k: xp.zeros(steps, dtype=dtype, device=device) for k in varying_keys}
        self.size, self.graph = size, None
        self.proven = False  # whether its first replay matched an eager step

    def begin_epoch(self, xp, order, varying, first, base):
        """Point the recording at this epoch: its order, its per-step scalars, the batch
        after the ``first`` ones run eagerly, and the step count ``base`` of its first batch
        (wrapped to 32 bits: the counter-based generator keys on 32 bits)."""
        self.base[...] = base
        if self.order is not None:
            self.order[...] = order
        for k, v in varying.items():
            self.values[k][: v.shape[0]] = v
        self.start[...] = first * self.size
        self.counter[...] = first
        self.loss_sum[...] = 0


class Captured(Eager):
    """The step captured by the backend (``Backend.capture``) and replayed per batch."""

    name = "graph"

    def __init__(self, net, optimizer, ops=None, transforms=NO_TRANSFORMS, offset=0, capture=None):
        super().__init__(net, optimizer, ops, transforms, offset)
        self.capture = capture or net.backend.capture
        self._unusable = None  # why this capture cannot be used (fit then runs eagerly)
        prepare = getattr(self.capture, "prepare_ops", None)
        if prepare is not None:  # products the capture can record (CuPy: cuBLAS called directly)
            try:
                self.ops = prepare(self.ops)
            except Exception as exc:  # noqa: BLE001 - no libcublas, a handle refused: eager instead
                self._unusable = f"preparing the capture failed: {type(exc).__name__}: {exc}"
        self.device, self.dtype = net.backend.device, net.array_dtype
        self._recording = None
        self._key = None

    def _body(self, rec, params, state, data, fixed):
        """The step as recorded: gather, train_step, advance the counters, add the loss."""
        xp, size = self.xp, rec.size

        def body():
            X, Z, w = gather(self.ops, data, rec.order, rec.start, size)
            one = xp.reshape(rec.counter, (1,))
            hyper = {**fixed, **{k: xp.reshape(xp.take(v, one), ()) for k, v in rec.values.items()}}
            ctx = step.Context.of(X, Z, w, rec.base + rec.counter, self.seed)
            new_params, new_state, loss = step.train_step(self.spec, self.ops, self.optimizer, params,
                                                          state, ctx, hyper, self.transforms)
            rec.start += size
            rec.counter += 1
            rec.loss_sum += loss
            return new_params, new_state

        return body

    def _record(self, params, state, data, size, fixed, varying, shuffled, steps):
        """A new recording for these arrays and scalars (the first batch already ran)."""
        self._recording = None  # let the old graph and its pool go first
        rec = _Recording(self.xp, self.device, data, size, shuffled, list(varying), steps, self.dtype)
        body = self._body(rec, params, state, data, fixed)
        try:
            rec.graph = self.capture.record(body)
        except Exception as exc:  # noqa: BLE001 - any capture failure: run eagerly instead
            raise ExecutorFailed(f"capturing the step failed: {type(exc).__name__}: {exc}") from exc
        return rec

    def _eager_second_step(self, params, state, count, data, order, batch_size, lr):
        """What the first replay must produce: the epoch's second batch run eagerly on
        copies of the parameters and optimizer state (once per recording)."""
        copy = TrainState(params, state, count, 0).copy(self.ops)
        new_params, new_state, loss = super().step(copy.params, copy.state, count + 1, data, order,
                                                   batch_size, 2 * batch_size, lr)
        return _arrays(new_params, new_state), loss

    def _prove(self, rec, params, state, expected):
        """Compare the first replay with the eager step (one host read per recording); a
        recording that computes something else is never used (fit falls back to eager)."""
        xp, (arrays, loss) = self.xp, expected
        got = _arrays(params, state) + [rec.loss_sum]
        want = arrays + [loss]
        gaps = [xp.max(xp.abs(a - b)) / (xp.max(xp.abs(b)) + 1e-30) for a, b in zip(got, want)]
        gap = float(xp.max(xp.stack(gaps)))
        if not gap <= REPLAY_RTOL["float32" if self.dtype == xp.float32 else "float64"]:  # NaN fails too
            raise ExecutorFailed(f"the first replay of the recorded step differs from the eager step "
                                 f"(largest relative difference {gap:.3g})")
        rec.proven = True

    def _key_of(self, params, state, data, size, fixed, varying, shuffled):
        arrays = _arrays(params, state) + [d for d in data if d is not None]
        return (size, tuple(sorted(fixed.items())), tuple(sorted(varying)), shuffled,
                tuple(id(a) for a in arrays))

    def epoch(self, params, state, count, data, order, batch_size, lr):
        if self._unusable is not None:
            raise ExecutorFailed(self._unusable)
        n = data[0].shape[0]
        steps = n // batch_size
        if steps < 2:  # nothing to replay
            return super().epoch(params, state, count, data, order, batch_size, lr)
        values = hyperparams_over(self.optimizer, count, steps, lr)
        fixed = {k: v for k, v in values.items() if not isinstance(v, list)}
        varying = {k: self.xp.asarray(v, dtype=self.dtype, device=self.device)
                   for k, v in values.items() if isinstance(v, list)}
        key = self._key_of(params, state, data, batch_size, fixed, varying, order is not None)
        before = _arrays(params, state)
        with self.capture.warmup():
            params, state, total = super().step(params, state, count, data, order, 0, batch_size, lr)
        if key != self._key or self._recording is None:
            if any(a is not b for a, b in zip(before, _arrays(params, state))):
                raise ExecutorFailed(f"{self.ops.name} Ops do not update parameters in place, so a "
                                     f"recorded step could not be replayed")
            self._recording, self._key = self._record(params, state, data, batch_size, fixed, varying,
                                                      order is not None, steps), key
        rec = self._recording
        rec.begin_epoch(self.xp, order, varying, first=1, base=wrap32(self.offset + count))
        expected = None if rec.proven else self._eager_second_step(params, state, count, data, order,
                                                                  batch_size, lr)
        try:
            for i in range(steps - 1):
                rec.graph.replay()
                if i == 0 and expected is not None:
                    self._prove(rec, params, state, expected)
        except ExecutorFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - a replay that fails: the epoch again, eagerly
            raise ExecutorFailed(f"replaying the recorded step failed: {type(exc).__name__}: {exc}") from exc
        total = total + rec.loss_sum
        count += steps
        if n % batch_size:
            params, state, loss = super().step(params, state, count, data, order, steps * batch_size, n, lr)
            count += 1
            total = total + loss
        return params, state, count, total


def _arrays(params, state) -> list:
    """Every parameter and optimizer-slot array, in a fixed order."""
    return [a for pair in params for a in pair] + [a for layer in state for s in layer.values() for a in s]
