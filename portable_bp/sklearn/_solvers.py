"""scikit-learn's solvers on portable_bp: its Adam and SGD as portable_bp optimizer
objects (run by the pre-checked entry point, :class:`~portable_bp.train.checked.CheckedRun`),
and L-BFGS through ``scipy.optimize`` over the step's ``loss_and_grads``.

Conventions matched (scikit-learn 1.9, ``_stochastic_optimizers.py`` and ``_backprop``):

* L2: the gradient of each weight matrix gets ``alpha * W / sw`` with ``sw`` the batch's
  size (or its sample-weight sum); biases get none. Each pass is handed its batches' own
  ``alpha / sw`` with its learning rate (:class:`PassRates`), so a ragged last batch and
  weighted batches decay exactly as in scikit-learn.
* Adam: ``W -= lr_t * m / (sqrt(v) + eps)`` with ``lr_t = lr * sqrt(1 - b2**t) / (1 - b1**t)``
  (eps outside the bias correction, unlike portable_bp's own Adam); ``t`` counts steps
  since the optimizer was made, across ``partial_fit`` calls (the step count the run is
  given, :attr:`SolverState.steps`).
* SGD momentum: ``v = mu * v - lr * g``, ``W += v`` (Nesterov: ``W += mu * v - lr * g``).
  The velocity carries the learning rate of each step, so a schedule that changes the rate
  changes only later steps, as in scikit-learn (PyTorch's convention would rescale it).
  This is portable_bp's momentum primitive fed ``lr * g`` with a unit rate.
* The optimizer state is data the caller holds (:class:`SolverState`, on the device),
  kept by the estimator between fit calls as scikit-learn's ``_optimizer`` keeps its own.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import NamedTuple

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from .. import step
from ..ops import DenseGrad, Ops
from ..optim import Optimizer
from ..transforms import L2, squared_norm

HOST_OPS = Ops(np)  # the reference primitives on the host, for L-BFGS's float64 vectors


class PassRates(NamedTuple):
    """The scalars of one pass over a chunk of batches, handed to the run together with the
    pass (as portable_bp's own optimizers are handed their learning rate), so that nothing
    has to be told to the optimizer beforehand: scikit-learn's current learning rate, the
    optimizer's step count at the pass's first batch (Adam's t − 1), and for each batch
    the L2 scalars: α/sw (the gradient's) and ½·α·size/sw (the reported loss's), with sw
    the batch's size or sample-weight sum."""

    lr: float
    first: int
    decay: tuple[float, ...]
    l2: tuple[float, ...]

    def at(self, step: int) -> dict:
        """``decay`` and ``l2`` of the pass's batch taken as optimizer step ``step``."""
        i = step - self.first
        return {"decay": self.decay[i], "l2": self.l2[i]}


def pass_rates(lr: float, alpha: float, first: int, sizes, sums) -> PassRates:
    """:class:`PassRates` for batches of these sizes and sample-weight sums; a batch that
    weighs nothing gets no L2 (scikit-learn would divide by zero)."""
    alpha = float(alpha)
    pairs = [(alpha / sw, 0.5 * alpha * n / sw) if sw > 0 else (0.0, 0.0)
             for n, sw in zip(map(float, sizes), map(float, sums))]
    return PassRates(float(lr), int(first), tuple(d for d, _ in pairs), tuple(r for _, r in pairs))


class SolverState(NamedTuple):
    """What a stochastic solver carries from one fit call to the next besides the weights,
    as scikit-learn's ``_optimizer`` does across epochs and ``partial_fit`` calls: each
    layer's optimizer slots (None before the first pass; on the network's device, or NumPy
    arrays in a pickle) and the optimizer steps taken since it was made."""

    slots: list | None
    steps: int

    def converted(self, convert) -> SolverState:
        """The same state with every slot array replaced by ``convert(array)`` (to the host
        for pickling, to another backend or dtype)."""
        if self.slots is None:
            return self
        return SolverState([{name: tuple(convert(a) for a in pair) for name, pair in layer.items()}
                            for layer in self.slots], self.steps)


FRESH = SolverState(None, 0)


class SklearnOptimizer(Optimizer):
    """scikit-learn's optimizers as ordinary portable_bp optimizers: ``init``, then
    ``hyperparams(step, rates)`` and ``update`` per step, with ``rates`` the pass's
    :class:`PassRates`; the state is the caller's (:class:`SolverState`), nothing is kept
    here but the configuration and the schedule's current learning rate (``lr``, changed by
    scikit-learn's ``iteration_ends``/``trigger_stopping`` between epochs, as its own
    optimizers change theirs).

    With ``alpha > 0`` every layer has an "l2" slot, a 0-d accumulator on the device of
    scikit-learn's L2 loss term: each step adds ``½·α·‖W‖²·size/sw`` of the weights it saw
    (one pass over each W, as scikit-learn's own dot product), so the pass's loss needs no
    read per batch; :func:`l2_loss` reads it, :func:`l2_restarted` zeroes it."""

    base_slots: tuple[str, ...] = ()

    def __init__(self, lr, alpha):
        super().__init__(float(lr))
        self.penalized = float(alpha) > 0

    @property  # read-only here: the l2 slot follows alpha
    def slots(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.base_slots + (("l2",) if self.penalized else ())

    def for_alpha(self, alpha) -> SklearnOptimizer:
        """This optimizer, or a copy of it (schedule included) whose slots follow ``alpha``:
        scikit-learn reads alpha afresh at every fit call."""
        if (float(alpha) > 0) == self.penalized:
            return self
        clone = copy.copy(self)
        clone.penalized = not self.penalized
        return clone

    def init(self, params):
        state = super().init(params)
        for layer in state:
            if "l2" in layer:
                layer["l2"] = tuple(_zero_like(a) for a in layer["l2"])
        return state

    def adopt(self, state: list | None, params) -> list:
        """``state`` (this solver's, perhaps kept by a copy with another alpha) with exactly
        this optimizer's slots: a fresh accumulator where the l2 slot is new, none where
        alpha went back to 0; :meth:`init` when there is no state yet."""
        if state is None:
            return self.init(params)
        return [{name: layer[name] if name in layer else tuple(_zero_like(a) for a in param)
                 for name in self.slots} for layer, param in zip(state, params)]

    def _gradient(self, grad, param, ops, decay):
        """(Δᵀ A + decay * W, Σ_rows Δ): the batch's gradients with scikit-learn's L2 on W,
        by the primitive the library's own L2 uses (``Ops.l2_grads``, E16)."""
        if not self.penalized:
            return ops.dense_grads(grad)
        return ops.l2_grads(grad, param[0], decay)

    def _l2(self, state, param, ops, l2) -> dict:
        """The new "l2" slot: its W part plus ``l2 * ‖W‖²`` of the weights before the step
        (``transforms.squared_norm``, as the library's L2 penalty)."""
        if not self.penalized:
            return {}
        acc, other = state["l2"]
        return {"l2": (acc + l2 * squared_norm(ops.xp, param[0]), other)}

    # -- scikit-learn's schedule hooks -----------------------------------------------------
    def iteration_ends(self, time_step: int) -> None:
        pass

    def trigger_stopping(self, msg: str, verbose) -> bool:
        if verbose:
            print(msg + " Stopping.")
        return True


def l2_loss(state: list) -> float:
    """The L2 loss terms the state's accumulators gathered (0 without them): one host read."""
    if not state or "l2" not in state[0]:
        return 0.0
    return float(sum(layer["l2"][0] for layer in state))


def l2_restarted(state: list) -> list:
    """``state`` with its L2 accumulators back at zero."""
    if not state or "l2" not in state[0]:
        return state
    return [{**layer, "l2": tuple(a * 0 for a in layer["l2"])} for layer in state]


def host_array(backend, a):
    """``a`` as a NumPy array: read back from ``backend``, or as it is when that is None."""
    return a if backend is None else backend.to_numpy(a)


def _zero_like(a):
    """A 0-d zero of ``a``'s library, dtype and device (an l2 accumulator)."""
    import array_api_compat

    return array_api_compat.array_namespace(a).sum(a * 0)


class SklearnAdam(SklearnOptimizer):
    """scikit-learn's Adam (see the module docstring)."""

    name = "sklearn-adam"
    base_slots = ("m", "v")

    def __init__(self, lr, beta_1, beta_2, epsilon, alpha):
        super().__init__(lr, alpha)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def hyperparams(self, step, rates):
        t = step + 1
        size = rates.lr * math.sqrt(1 - self.beta_2 ** t) / (1 - self.beta_1 ** t)
        return {"step_size": size, "eps": self.epsilon, **rates.at(step)}

    def update(self, grad, state, param, *, ops, step_size, eps, decay, l2):
        extra = self._l2(state, param, ops, l2)
        moved = [ops.adam(p, g, m, v, step_size, eps, self.beta_1, self.beta_2)
                 for p, g, m, v in zip(param, self._gradient(grad, param, ops, decay),
                                       state["m"], state["v"])]
        return ((moved[0][0], moved[1][0]),
                {"m": (moved[0][1], moved[1][1]), "v": (moved[0][2], moved[1][2]), **extra})


class SklearnSGD(SklearnOptimizer):
    """scikit-learn's SGD with momentum and its learning-rate schedules."""

    name = "sklearn-sgd"

    def __init__(self, lr, schedule, momentum, nesterov, power_t, alpha):
        super().__init__(lr, alpha)
        self.learning_rate_init, self.schedule = float(lr), schedule
        self.momentum, self.nesterov, self.power_t = float(momentum), bool(nesterov), float(power_t)
        self.base_slots = ("velocity",) if self.momentum > 0 else ()

    def hyperparams(self, step, rates):
        return {"lr": rates.lr, **rates.at(step)}

    def update(self, grad, state, param, *, ops, lr, decay, l2):
        if not self.penalized and not self.momentum:   # E12 as it stands: the one-call step
            return ops.sgd_dense(*param, grad, lr), state
        extra = self._l2(state, param, ops, l2)
        dW, db = self._gradient(grad, param, ops, decay)
        steps = (lr * dW, lr * db)
        if not self.momentum:
            return tuple(ops.sgd(p, s, 1.0) for p, s in zip(param, steps)), extra
        moved = [ops.momentum(p, s, v, 1.0, self.momentum, self.nesterov)
                 for p, s, v in zip(param, steps, state["velocity"])]
        return (moved[0][0], moved[1][0]), {"velocity": (moved[0][1], moved[1][1]), **extra}

    def iteration_ends(self, time_step):
        if self.schedule == "invscaling":
            self.lr = self.learning_rate_init / (time_step + 1) ** self.power_t

    def trigger_stopping(self, msg, verbose):
        if self.schedule != "adaptive":
            return super().trigger_stopping(msg, verbose)
        if self.lr <= 1e-6:
            if verbose:
                print(msg + " Learning rate too small. Stopping.")
            return True
        self.lr /= 5.0
        if verbose:
            print(msg + f" Setting learning rate to {self.lr:f}")
        return False


def make_optimizer(est):
    """scikit-learn's optimizer for the estimator's solver and parameters."""
    if est.solver == "sgd":
        return SklearnSGD(est.learning_rate_init, est.learning_rate, est.momentum,
                          est.nesterovs_momentum, est.power_t, est.alpha)
    return SklearnAdam(est.learning_rate_init, est.beta_1, est.beta_2, est.epsilon, est.alpha)


# -- L-BFGS ---------------------------------------------------------------------------------
class Objective:
    """scikit-learn's L-BFGS objective over a flat float64 vector of every W (portable_bp's
    (n_out, n_in) layout) then every b: the mean loss over the data plus
    ``0.5 * alpha * sum(W**2) / sw``, and its gradient. Each evaluation copies the vector to
    the device and the gradient back (one round trip per evaluation)."""

    def __init__(self, net, rows, Z, w, alpha, loss_divisor):
        self.net, self.rows, self.Z, self.w, self.alpha = net, rows, Z, w, float(alpha)
        self.total = float(rows.n if w is None else w.sum())
        self.loss_divisor = loss_divisor  # squared_error: mean over outputs (its loss only)
        self.shapes = [tuple(W.shape) for W, _ in net.params] + [tuple(b.shape) for _, b in net.params]
        self._chunks = self._weighted_chunks()

    def _weighted_chunks(self) -> list:
        """(start, stop, device weights or None, the chunk's weight, its device weight sum)
        of every chunk that weighs something: the weights are checked and moved once, not
        at each of L-BFGS's evaluations (the rows and targets were checked already)."""
        chunks = []
        for s, e in self.rows.chunks():
            w = None if self.w is None else self.w[s:e]
            weight = float(e - s if w is None else w.sum())
            if weight == 0:
                continue
            if w is not None:
                w = self.net.sample_weights(w, e - s)
            chunks.append((s, e, w, weight, float(e - s if w is None else self.net.xp.sum(w))))
        return chunks

    def pack(self, params) -> np.ndarray:
        """Every W then every b as one float64 vector (device arrays read back; host ones as they are)."""
        def to_np(a):
            return a if isinstance(a, np.ndarray) else self.net.backend.to_numpy(a)

        arrays = [to_np(W) for W, _ in params] + [to_np(b) for _, b in params]
        return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])

    def unpack(self, x) -> list:
        arrays, start = [], 0
        for shape in self.shapes:
            size = math.prod(shape)
            arrays.append(x[start:start + size].reshape(shape))
            start += size
        L = len(self.shapes) // 2
        return list(zip(arrays[:L], arrays[L:]))

    def __call__(self, x):
        """The loss and gradient at ``x``, the L2 term (E16) by the library's own
        :class:`~portable_bp.transforms.L2`, on the host in float64."""
        params = self.unpack(x)
        self.net.set_params(params, check_finite=False)
        loss, grads = self._data_loss_and_grads()
        ops, l2 = HOST_OPS, L2(self.alpha)
        loss = loss / self.loss_divisor + float(l2.penalty(ops, params, None)) / self.total
        ctx = step.Context(None, None, batch_weight=self.total)
        grads = [l2.layer(ops, DenseGrad.of_arrays(np.asarray(dW, dtype=np.float64), np.asarray(db, dtype=np.float64)),
                          param, ctx).arrays for (dW, db), param in zip(self.host(grads), params)]
        return loss, self.pack(grads)

    def host(self, grads) -> list:
        to_np = self.net.backend.to_numpy
        return [(to_np(dW), to_np(db)) for dW, db in grads]

    def _data_loss_and_grads(self):
        """The weighted mean loss over every row and its gradients, chunk by chunk."""
        net, loss, grads = self.net, 0.0, None
        for s, e, w, weight, w_total in self._chunks:
            with net.backend.activate():
                total, g = step.loss_and_grads(net.spec, net.ops, net.params,
                                               step.Context(self.rows.take(slice(s, e)), self.Z[s:e, ...], w))
            part = float(total) / w_total
            share = weight / self.total
            loss += part * share
            g = [(dW * share, db * share) for dW, db in g]
            grads = g if grads is None else [(a + c, b + d) for (a, b), (c, d) in zip(grads, g)]
        return loss, grads


def fit_lbfgs(est, net, rows, Z, w, loss_divisor):
    """Minimize with scipy's L-BFGS-B as scikit-learn does (maxfun, maxiter, gtol=tol);
    leaves the solution in ``net`` and sets ``n_iter_`` and ``loss_``."""
    import scipy.optimize

    objective = Objective(net, rows, Z, w, est.alpha, loss_divisor)
    result = scipy.optimize.minimize(
        objective, objective.pack(net.params), method="L-BFGS-B", jac=True,
        options={"maxfun": est.max_fun, "maxiter": est.max_iter, "gtol": est.tol})
    est.n_iter_ = _lbfgs_iterations(result, est.max_iter)
    est.loss_ = np.float64(result.fun)
    net.set_params(objective.unpack(result.x), check_finite=False)


def _lbfgs_iterations(result, max_iter) -> int:
    """The iteration count, with scikit-learn's ConvergenceWarning when L-BFGS stopped
    short of convergence."""
    n_iter = min(result.nit, max_iter)
    if result.status != 0:
        msg = (f"lbfgs failed to converge after {n_iter} iteration(s) (status={result.status}):\n"
               f"{result.message}\n")
        if n_iter == max_iter:
            msg += f"\nIncrease the number of iterations to improve the convergence (max_iter={max_iter})."
        msg += ("\nYou might also want to scale the data as shown in:\n"
                "    https://scikit-learn.org/stable/modules/preprocessing.html")
        warnings.warn(msg, ConvergenceWarning, stacklevel=3)
    return n_iter
