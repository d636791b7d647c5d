"""The stochastic solvers' epoch loop, with scikit-learn's semantics (1.9,
``_fit_stochastic``): its batch order (the estimator's RandomState shuffles the sample
indices each epoch), its ``loss_`` (the mean of the batch losses plus the L2 term, the
squared error also averaged over outputs), its convergence rule on the training loss or,
with ``early_stopping``, on the validation score of a held-out split (stratified for
single-output classifiers, best parameters restored), its learning-rate schedules and its
ConvergenceWarning.

Each epoch hands its rows in the shuffled order, a chunk at a time (at most
``CHUNK_ROWS`` rows of dense X, one batch of sparse X), to the pre-checked entry point
(:class:`~portable_bp.train.checked.CheckedRun`: fit's executor and step, without fit's
per-call checks; the data were checked once per fit) with scikit-learn's optimizer, the
chunk's rates (learning rate, per-batch L2 scalars) and the solver's state
(``est._solver_state``: slots and step count), all passed in and handed back. Sample
weights are rescaled within each batch to sum to the batch's size: the gradient (each row
weighted by w_i / sum of the batch's w) is unchanged, and the chunk's mean loss becomes
scikit-learn's average of the batches' weighted means.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.base import is_classifier
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split

from ..train import TrainingDiverged
from ..train.checked import CheckedRun
from ..train.state import TrainState
from . import _data
from ._solvers import FRESH, SolverState, l2_loss, l2_restarted, make_optimizer, pass_rates

NON_FINITE = ("Solver produced non-finite parameter weights. The input data may contain "
              "large values and need to be preprocessed.")


class Part:
    """A training or validation part: its rows, device targets, host weights, and (for
    validation) the true values scikit-learn scores against."""

    def __init__(self, net, X, Z, w, y_true=None):
        self.rows, self.w, self.y_true = _data.Rows(net, X), w, y_true
        self.Z = net.targets(Z, self.rows.n)
        self.n = self.rows.n


def fit(est, net, X, Y, sw, incremental):
    """scikit-learn's ``_fit_stochastic`` on ``net`` (see the module docstring)."""
    if est.early_stopping and incremental:
        raise ValueError("partial_fit does not support early_stopping=True")
    if not incremental or getattr(est, "_optimizer", None) is None:
        est._optimizer, est._solver_state = make_optimizer(est), FRESH
    opt = est._optimizer = est._optimizer.for_alpha(est.alpha)
    train, val = _split(est, net, X, Y, sw)  # the data, checked and moved once per fit
    est._solver_state = SolverState(opt.adopt(est._solver_state.slots, net.params), est._solver_state.steps)
    run = CheckedRun(net, opt, count=est._solver_state.steps)
    batch_size = _batch_size(est.batch_size, train.n)
    order = np.arange(train.n, dtype=int)
    diverged = False
    try:
        est.n_iter_ = 0
        for _ in range(est.max_iter):
            if est.shuffle:
                order = shuffle_order(order, est._random_state)
            try:
                loss = np.nan if diverged else _epoch(est, net, run, train, order if est.shuffle else None,
                                                      batch_size)
            except TrainingDiverged as exc:
                loss, diverged = _diverged(est, net, exc), True
            if _after_epoch(est, net, opt, val, loss, train.n) or incremental:
                break
            if est.n_iter_ == est.max_iter:
                warnings.warn(f"Stochastic Optimizer: Maximum iterations ({est.max_iter}) reached and the "
                              "optimization hasn't converged yet.", ConvergenceWarning, stacklevel=3)
    except KeyboardInterrupt:
        warnings.warn("Training interrupted by user.", stacklevel=3)
    if est.early_stopping:
        net.set_params(est._best_params, check_finite=False)  # NaN ones fail fit's final check


def _diverged(est, net, exc) -> float:
    """A non-finite loss: scikit-learn's ValueError, or with ``early_stopping`` what
    scikit-learn 1.9 does: train on with non-finite weights (every later epoch's loss NaN,
    its validation score that of NaN outputs), then restore the best weights. The network
    is given NaN weights so that the scores are those; the epoch's loss is NaN."""
    if not est.early_stopping:
        raise ValueError(NON_FINITE) from exc
    warnings.warn(f"training diverged ({exc}); with early_stopping, as in scikit-learn, it goes on to "
                  f"max_iter with non-finite weights (NaN losses and validation scores) and the best "
                  f"weights are restored", RuntimeWarning, stacklevel=4)
    xp = net.xp
    net.set_params([(xp.full_like(W, xp.nan), xp.full_like(b, xp.nan)) for W, b in net.params],
                   check_finite=False)
    return np.nan


def _after_epoch(est, net, opt, val, loss, n) -> bool:
    """scikit-learn's bookkeeping after an epoch; True to stop."""
    est.n_iter_ += 1
    est.loss_ = loss = np.float64(loss)
    est.t_ += n
    est.loss_curve_.append(loss)
    if est.verbose:
        print(f"Iteration {est.n_iter_}, loss = {loss:.8f}")
    _update_no_improvement_count(est, net, val)
    opt.iteration_ends(est.t_)
    if est._no_improvement_count > est.n_iter_no_change:
        what = "Validation score" if est.early_stopping else "Training loss"
        msg = f"{what} did not improve more than tol={est.tol:f} for {est.n_iter_no_change} consecutive epochs."
        if opt.trigger_stopping(msg, est.verbose):
            return True
        est._no_improvement_count = 0
    return False


def _update_no_improvement_count(est, net, val) -> None:
    if est.early_stopping:
        score = est._validation_score(net, val)
        est.validation_scores_.append(score)
        if est.verbose:
            print(f"Validation score: {score:f}")
        if score < est.best_validation_score_ + est.tol:
            est._no_improvement_count += 1
        else:
            est._no_improvement_count = 0
        if score > est.best_validation_score_:
            est.best_validation_score_ = score
            est._best_params = _copy_params(net)
        return
    if est.loss_curve_[-1] > est.best_loss_ - est.tol:
        est._no_improvement_count += 1
    else:
        est._no_improvement_count = 0
    if est.loss_curve_[-1] < est.best_loss_:
        est.best_loss_ = est.loss_curve_[-1]


def _copy_params(net) -> list:
    xp = net.xp
    return [(xp.asarray(W, copy=True), xp.asarray(b, copy=True)) for W, b in net.params]


def _split(est, net, X, Y, sw):
    """(training part, validation part or None): scikit-learn's train_test_split with the
    estimator's RandomState, stratified for single-output classifiers."""
    if not est.early_stopping:
        return Part(net, X, est._net_targets(Y), sw), None
    stratify = Y if is_classifier(est) and est.n_outputs_ == 1 else None
    tr, va = train_test_split(np.arange(X.shape[0]), random_state=est._random_state,
                              test_size=est.validation_fraction, stratify=stratify)
    if va.shape[0] < 2:
        raise ValueError("The validation set is too small. Increase 'validation_fraction' "
                         "or the size of your dataset.")
    weights = (None, None) if sw is None else (sw[tr], sw[va])
    train = Part(net, _data.take(X, tr), est._net_targets(Y[tr]), weights[0])
    val = Part(net, _data.take(X, va), est._net_targets(Y[va]), weights[1],
               y_true=est._validation_truth(Y[va]))
    return train, val


def shuffle_order(order, random_state):
    """``sklearn.utils.shuffle(order, random_state=random_state)`` without its argument
    validation (a millisecond per epoch): the same draw, the same permutation."""
    perm = np.arange(order.shape[0])
    random_state.shuffle(perm)
    return order[perm]


def _batch_size(batch_size, n) -> int:
    if batch_size == "auto":
        return min(200, n)
    if batch_size > n:
        warnings.warn("Got `batch_size` less than 1 or larger than sample size. It is going "
                      "to be clipped", stacklevel=3)
    return int(np.clip(batch_size, 1, n))


def _batches(w, order, n, batch_size):
    """(sizes, weight sums, rescaled weights or None) of the epoch's batches, on the host."""
    sizes = np.diff(np.append(np.arange(0, n, batch_size), n))
    if w is None:
        return sizes, sizes.astype(float), None
    w = w if order is None else w[order]
    sums = np.add.reduceat(w, np.arange(0, n, batch_size))
    scale = np.divide(sizes, sums, out=np.zeros_like(sums), where=sums > 0)
    return sizes, sums, w * np.repeat(scale, sizes)


def _epoch(est, net, run, train, order, batch_size) -> float:
    """One epoch in chunks of whole batches through the pre-checked entry point
    (:class:`~portable_bp.train.checked.CheckedRun`), each chunk's rates handed to it with
    the chunk; scikit-learn's ``loss_`` for it. The weights and the solver's state
    (``est._solver_state``) are published after every chunk."""
    sizes, sums, w = _batches(train.w, order, train.n, batch_size)
    chunk = batch_size if train.rows.sparse else batch_size * max(1, _data.CHUNK_ROWS // batch_size)
    data_loss, reg = 0.0, 0.0
    params, (state, count) = net.params, est._solver_state
    for s in range(0, train.n, chunk):
        e = min(s + chunk, train.n)
        first, last = s // batch_size, -(-e // batch_size)
        if w is not None and not w[s:e].any():
            continue  # only zero weights: no step (scikit-learn divides by zero here)
        rows = slice(s, e) if order is None else order[s:e]
        weights = None if w is None else net.backend.asarray(w[s:e], net.dtype)
        data = (train.rows.take(rows), _data.take_device(net, train.Z, rows), weights)
        rates = pass_rates(run.optimizer.lr, est.alpha, count, sizes[first:last], sums[first:last])
        params, state, after, total = run.epoch(params, state, data, batch_size, rates, count)
        loss = float(net.ops.finite_or_nan(total, TrainState(params, state, 0, 0).arrays()))
        if not math.isfinite(loss):
            raise TrainingDiverged(f"the loss became {loss} in epoch {est.n_iter_ + 1}")
        net.restore_state(params=params, steps_trained=net.steps_trained + after - count)
        data_loss += (e - s) * loss / (e - s if w is None else float(w[s:e].sum()))
        reg += l2_loss(state)
        state, count = l2_restarted(state), after
        est._solver_state = SolverState(state, count)
    return (data_loss / est._loss_divisor() + reg) / train.n
