"""``fit``: the epoch loop (E12 over the data, epoch after epoch).

The hot loop keeps everything on the device: the data is moved there once, each epoch's
batch order is one host permutation (seeded by the network's seed and the epoch, so every
backend and every resumed run sees the same order), the executor runs the epoch's steps,
and one value is read back per epoch: the loss, made NaN by any non-finite parameter or
optimizer slot. Then the state is handed to the network, validation data is scored and the
callbacks run.

Many processes (``fit(comm=...)``, a communicator of :mod:`portable_bp.distributed`):
each process is started with the same data and arguments; ``batch_size`` is then the
global batch, of which each rank takes its part; gradients and loss are summed over the ranks
every step, so the result is one process's (to rounding). Parameters start as rank 0's;
only rank 0 shows progress and writes checkpoints; a callback's stop is rank 0's.
Divergence is raised on every rank at once; any other exception on one rank ends the
whole job (MPI abort), since the others wait for it. Ranks whose network, settings or
data differ (a checksum of X, Z and the weights) are refused before the first step, on
every rank, naming the first difference. A SIGINT (and a SIGTERM where the caller
installed :mod:`portable_bp.stopping`'s handler, as the command does) on any rank
raises the same KeyboardInterrupt on every rank at one step (within about 0.1 s or a
step), with no abort. ``deterministic=K`` splits every global batch into K fixed pieces
summed in a fixed order: bit-identical results for any number of ranks (K times the
communication).
"""

from __future__ import annotations

import math
import time
import warnings

from .. import stopping
from ..distributed.base import Local
from ..distributed.sync import one_sided_errors_abort
from ..optim import learning_rate
from ..transforms import regularization
from .callbacks import History, ProgressBar
from .divergence import TrainingDiverged, locate
from .executors import ExecutorFailed, executor_for
from .inference import metrics
from .setup import Plan, prepare, user_callbacks
from .state import Snapshots, TrainState


class Run:
    """One fit in progress: the plan, the executor and the state it advances."""

    def __init__(self, net, plan: Plan):
        self.net, self.plan, self.xp = net, plan, net.xp
        self.data, self.batch_size = plan.data, plan.batch_size
        self.n = plan.data[0].shape[0]
        self.executor = self.executor_for(eager=False)
        self.progress = any(isinstance(cb, ProgressBar) for cb in plan.callbacks)
        self.state: TrainState = plan.start
        self.snapshots = Snapshots(net.ops, net.backend.mutable)

    def order(self, epoch):
        """The epoch's batch order on the device, or None without shuffling."""
        if not self.plan.shuffle:
            return None
        return self.net.backend.asarray(self.net.backend.rng([self.net.seed, epoch]).permutation(self.n))

    def lr(self, epoch):
        return learning_rate(self.plan.optimizer, epoch)

    def batch_weight(self, start, stop, order):
        """What a batch's summed loss is divided by for its mean: its size, or its weights'
        sum (a host read: only the divergence replay asks, batch by batch)."""
        w = self.data[2]
        if w is None:
            return stop - start
        rows = slice(start, stop) if order is None else self.net.backend.to_numpy(order)[start:stop]
        return float(self.net.backend.to_numpy(w)[rows].sum()) or 1.0

    def adopt(self, state: TrainState) -> None:
        """Continue from ``state`` and hand it to the network."""
        self.state = state
        state.publish(self.net, self.plan.optimizer)

    def train_epoch(self, epoch: int) -> float:
        """Train one epoch; its mean loss, after the one host read. On a divergence the
        network is left at the last finite state (:func:`locate`); on an interrupt (or any
        other exception) before the epoch's state is wholly handed to the network, at the
        start of this epoch: both consistent with ``epochs_trained``."""
        self.snapshots.take(self.state)
        s, order, lr = self.state, self.order(epoch), self.lr(epoch)
        try:
            params, state, count, total = self.checked_epoch(s, order, lr)
            done = TrainState(params, state, count, epoch + 1, s.offset)
            loss = self.net.backend.to_float(total) / self.plan.total_weight
            if not math.isfinite(loss):
                locate(self, epoch)  # leaves the network at the last finite state and raises
            done.publish(self.net, self.plan.optimizer)
            self.state = done
        except ExecutorFailed as exc:
            self.fall_back(exc)
            self.state = self.snapshots.restore(self.snapshots.current)
            return self.train_epoch(epoch)
        except TrainingDiverged:
            raise
        except BaseException:
            self.adopt(self.snapshots.restore(self.snapshots.current))
            raise
        return loss

    def checked_epoch(self, s: TrainState, order, lr):
        """The executor's epoch from ``s``: (params, state, count, summed loss made NaN by
        any non-finite parameter or optimizer slot: ``ops.finite_or_nan``). An executor that
        can check inside its own epoch program says so with a ``checked_epoch`` method."""
        own = getattr(self.executor, "checked_epoch", None)
        if own is not None:
            return own(s.params, s.state, s.count, self.data, order, self.batch_size, lr)
        params, state, count, total = self.executor.epoch(s.params, s.state, s.count, self.data, order,
                                                          self.batch_size, lr)
        return params, state, count, self.net.ops.finite_or_nan(total, TrainState(params, state, count, 0).arrays())

    def fall_back(self, exc: ExecutorFailed) -> None:
        """Run op by op from now on, and say why: on the backend (``portable-bp backends``),
        as a warning, and on the progress output."""
        name = self.executor.name
        self.net.backend.executor_failures[name] = str(exc)
        message = f"the {name} executor failed on {self.net.backend.spec} ({exc}); running eagerly"
        warnings.warn(message, RuntimeWarning, stacklevel=2)
        if self.progress:
            print(message)
        self.executor = self.executor_for(eager=True)

    def executor_for(self, eager: bool):
        """The executor of this fit (:func:`~portable_bp.train.executors.executor_for`), or
        its eager form after a compiled or captured one failed."""
        plan = self.plan
        return executor_for(self.net, plan.optimizer, comm=plan.comm, deterministic=plan.deterministic,
                            name="eager" if eager else None, transforms=plan.transforms,
                            offset=plan.start.offset)

    def logs(self, epoch: int, started: float) -> dict:
        logs = {"loss": self.train_epoch(epoch)}
        if self.plan.validation is not None:
            Xv, Zv, wv = self.plan.validation
            logs.update(metrics(self.net, Xv, Zv, wv, prefix="val_",
                                batch_size=self.plan.validation_batch_size))
        logs["time"] = time.perf_counter() - started
        return logs


def _stop_requested(callbacks, net, epoch, logs, comm) -> bool:
    """Whether a callback asks to stop; with many ranks, rank 0's answer, on every rank."""
    stop = False
    for cb in callbacks:
        stop = bool(cb.on_epoch_end(net, epoch, logs)) or stop  # every callback runs
    return comm.agree(stop)


def fit(net, X, Z, *, epochs=1, batch_size=32, optimizer=None, lr=None, shuffle=True,
        validation_data=None, validation_batch_size=None, progress=False, callbacks=(),
        checkpoint=None, resume=False, sample_weight=None, comm=None, deterministic=None, l2=None,
        clip_norm=None, clip_value=None) -> History:
    """Train ``net`` by gradient descent (E12) and return a :class:`History`.

    batch_size: None for full-batch gradient descent, 1 for single-sample SGD, k for
    mini-batches. optimizer: a name of :func:`portable_bp.optim.optimizer_names` (default
    ``"sgd"``; with ``lr``, a float or a schedule ``epoch -> lr``) or an optimizer object.
    Each call starts a fresh optimizer state unless ``resume=True`` finds ``checkpoint``.
    l2 (scikit-learn's alpha), clip_value, clip_norm (PyTorch's): see
    :func:`portable_bp.transforms.regularization`.

    checkpoint: a path saved (atomically) at the end of every epoch, with the history so far
    (or a :class:`~portable_bp.train.callbacks.Checkpoint`, to store ``data`` with it too).
    resume: continue from ``checkpoint`` when it exists (parameters, optimizer state, epoch
    count, history); ``epochs`` is then the total to reach, and the History returned holds
    every epoch since the first, the checkpoint's included. With ``progress`` it says where
    it resumes ("resumed at epoch 3 of 5", "already at 5 epochs: nothing to train").
    Resuming uses the saved optimizer; an ``optimizer`` or ``lr`` given as well wins (with a
    warning when it differs), and optimizer state it cannot use is an error.

    callbacks: :class:`~portable_bp.train.callbacks.Callback` objects (or objects with some
    of its hooks, or callables ``f(net, epoch, logs) -> stop?``). validation_data:
    (X_val, Z_val) or (X_val, Z_val, sample_weight_val), scored after every epoch in batches
    of ``validation_batch_size`` rows (default: the training batch size, at least 1024).
    sample_weight: non-negative weights, one per sample: each batch's loss is then
    Σ w_i ℓ_i / Σ w_i (its gradient likewise), as scikit-learn's and PyTorch's weighted
    losses are.

    Everything is checked before the first step: a fit that raises then leaves the network
    unchanged. Beyond the data, fit holds a batch's worth of arrays and two copies of the
    parameters and optimizer state (the starts of this epoch and the previous one).

    A NaN/inf loss raises :class:`TrainingDiverged` naming the epoch and batch; the network
    keeps the last parameters and optimizer state whose loss was finite. An interrupt
    (KeyboardInterrupt) during an epoch leaves the network at the end of the last completed
    epoch, so that saving and resuming is exact.

    comm, deterministic: many processes (a communicator of :mod:`portable_bp.distributed`);
    see this module's docstring for what is guaranteed.
    """
    with net.backend.activate():
        hooks = user_callbacks(callbacks)
        plan = None
        ranks = Local() if comm is None else comm
        try:  # with many ranks: the checks too, since the others wait in each check's sum
            with one_sided_errors_abort(ranks, collective=(TrainingDiverged,)), \
                    stopping.agreed_between_ranks(ranks.size > 1):
                plan = prepare(net, X, Z, epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr,
                               shuffle=shuffle, validation_data=validation_data,
                               validation_batch_size=validation_batch_size,
                               progress_bar=ProgressBar if progress else None, callbacks=hooks,
                               checkpoint=checkpoint, resume=resume, sample_weight=sample_weight,
                               comm=comm, deterministic=deterministic,
                               transforms=regularization(l2, clip_value, clip_norm))
                return _train(net, plan)
        finally:  # however fit ends, every callback closes, last
            for cb in plan.callbacks if plan is not None else hooks:
                cb.close()


def _train(net, plan: Plan) -> History:
    before = net.training_state()
    history, run = plan.history, None  # a resumed run's history goes on
    try:
        if plan.restored:  # a resumed run's seed, init and sigma
            net.restore_state(**plan.restored)
        for cb in plan.callbacks:
            cb.on_train_begin(net)
        run = Run(net, plan)
        for epoch in range(plan.start.epoch, plan.stop):
            logs = run.logs(epoch, time.perf_counter())
            history.append(epoch, logs)
            if _stop_requested(plan.callbacks, net, epoch, logs, plan.comm):
                break
    except BaseException:
        if run is None or run.state is plan.start:  # no step taken: leave the network as it was
            net.restore_state(**before)
        raise
    if plan.restored and plan.start.epoch == plan.stop:  # a resumed run that was already done
        plan.start.publish(net, plan.optimizer)
    # not on an exception: after a divergence the network keeps the last finite state, not
    # (say) EarlyStopping's best one
    for cb in plan.callbacks:
        cb.on_train_end(net)
    return history
