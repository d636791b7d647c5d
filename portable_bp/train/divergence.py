"""What happens when a loss or a parameter becomes NaN or inf.

The epoch's one host read (its loss, made NaN by any non-finite parameter or optimizer
slot) tells that something went wrong, not where. The epoch is then replayed from the
snapshot of its start, one checked batch at a time, to find the first batch k whose loss
was not finite, or whose update made the state non-finite. The network is left with the
last state whose loss was finite:

* the update of batch k made the state non-finite (its loss was finite): the state before
  batch k;
* the loss of batch k was not finite, so the state before it is already ruined: the state
  before batch k - 1, whose loss was finite; for k = 0, the state before the previous
  epoch's last batch (replayed from that epoch's snapshot);
* batch 0 of the first epoch of this fit: nothing finite came before it; the network keeps
  the state training started from, and the message says so.

Optimizer state and step count go with the parameters, so saving and resuming from there
continues from a finite loss (with a lower learning rate, as the message advises).
"""

from __future__ import annotations

import math

from .executors import batches
from .state import TrainState


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or inf; the network keeps the last state whose loss was finite."""


def _replay(run, start: TrainState, epoch: int, n_steps: int) -> TrainState:
    """``start`` advanced by the first ``n_steps`` batches of ``epoch`` (unchecked)."""
    state = run.snapshots.restore(start)
    order, lr = run.order(epoch), run.lr(epoch)
    for begin, stop in batches(run.n, run.batch_size)[:n_steps]:
        state.params, state.state, _ = run.executor.step(state.params, state.state, state.count,
                                                         run.data, order, begin, stop, lr)
        state.count += 1
    return state


def _first_bad_batch(run, epoch: int):
    """(k, loss of batch k, whether the loss was the problem) for the first batch of
    ``epoch`` whose loss or update is not finite, replaying from the epoch's snapshot."""
    state = run.snapshots.restore(run.snapshots.current)
    order, lr = run.order(epoch), run.lr(epoch)
    for k, (begin, stop) in enumerate(batches(run.n, run.batch_size)):
        state.params, state.state, total = run.executor.step(state.params, state.state, state.count,
                                                             run.data, order, begin, stop, lr)
        state.count += 1
        loss = float(total) / run.batch_weight(begin, stop, order)
        if not math.isfinite(loss):
            return k, loss, True
        if not math.isfinite(float(run.net.ops.extremes(state.arrays()))):
            return k, loss, False
    return None, math.nan, False


def locate(run, epoch: int) -> None:
    """Find where ``epoch`` diverged, leave the network at the last finite state, raise."""
    k, loss, loss_bad = _first_bad_batch(run, epoch)
    snaps = run.snapshots
    if k is None:
        kept, where = snaps.restore(snaps.current), f"the start of epoch {epoch}"
    elif not loss_bad:
        kept, where = _replay(run, snaps.current, epoch, k), f"before batch {k}"
        what = f"the update of batch {k} made the parameters non-finite (batch loss {loss:.4g})"
    elif k > 0:
        kept, where = _replay(run, snaps.current, epoch, k - 1), f"before batch {k - 1}"
        what = f"the loss of batch {k} became {loss}"
    elif snaps.previous is not None:
        last = len(batches(run.n, run.batch_size)) - 1
        kept = _replay(run, snaps.previous, epoch - 1, last)
        where = f"before the last batch ({last}) of epoch {epoch - 1}"
        what = f"the loss of batch 0 became {loss}"
    else:
        kept, where = snaps.restore(snaps.current), None
        what = f"the loss of batch 0 became {loss} at the parameters training started from"
    run.adopt(kept)
    if k is None:
        raise TrainingDiverged(f"training diverged in epoch {epoch} but replaying it stayed finite "
                               f"(a non-deterministic step?); the network keeps {where}")
    kept_text = ("the network keeps them: nothing before had a finite loss" if where is None else
                 f"the network keeps the parameters and optimizer state from {where}, the last "
                 f"with a finite loss")
    raise TrainingDiverged(f"training diverged at epoch {epoch} (0-based), batch {k}: {what}; "
                           f"{kept_text}. Lower the learning rate (lr={run.lr(epoch)}).")
