"""scikit-learn's solvers on portable_bp: its Adam and SGD as portable_bp optimizer
objects (run by ``Network.fit``), and L-BFGS through ``scipy.optimize`` over
``Network.loss_and_grads``.

Conventions matched (scikit-learn 1.9, ``_stochastic_optimizers.py`` and ``_backprop``):

* L2: the gradient of each weight matrix gets ``alpha * W / sw`` with ``sw`` the batch's
  size (or its sample-weight sum); biases get none. Each step is told its batch's own
  ``alpha / sw`` (:meth:`SklearnOptimizer.begin`), so a ragged last batch and weighted
  batches decay exactly as in scikit-learn.
* Adam: ``W -= lr_t * m / (sqrt(v) + eps)`` with ``lr_t = lr * sqrt(1 - b2**t) / (1 - b1**t)``
  (eps outside the bias correction, unlike portable_bp's own Adam); ``t`` counts steps
  since the optimizer was made, across ``partial_fit`` calls.
* SGD momentum: ``v = mu * v - lr * g``, ``W += v`` (Nesterov: ``W += mu * v - lr * g``).
  The velocity carries the learning rate of each step, so a schedule that changes the rate
  changes only later steps, as in scikit-learn (PyTorch's convention would rescale it).
  This is portable_bp's momentum primitive fed ``lr * g`` with a unit rate.
* The optimizer state lives on the device and outlives each ``Network.fit`` call, as
  scikit-learn's ``_optimizer`` does across epochs and ``partial_fit`` calls.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from .. import step
from ..ops import DenseGrad, Ops
from ..optim import Optimizer
from ..transforms import L2, squared_norm

HOST_OPS = Ops(np)  # the reference primitives on the host, for L-BFGS's float64 vectors


class SklearnOptimizer(Optimizer):
    """State carried between ``Network.fit`` calls, the per-batch L2 decay, and the L2
    term of scikit-learn's reported loss.

    scikit-learn adds ``0.5 * alpha * sum(W**2) / sw`` to each batch's loss with the
    weights that batch saw; with ``alpha > 0`` each step adds that, times the batch's size,
    to a 0-d ``"l2"`` slot on the device (one pass over each W, as scikit-learn's own dot
    product), read and reset once per fit call (:meth:`take_l2`)."""

    base_slots: tuple[str, ...] = ()

    def __init__(self, lr, alpha):
        super().__init__(float(lr))
        self.alpha = float(alpha)
        self.steps = 0              # steps taken since this optimizer was made
        self.state = None           # per-layer slots, on self.backend; None: fresh zeros
        self.backend, self.dtype = None, None
        self._batches = ()

    @property  # read-only here: the l2 slot follows alpha
    def slots(self) -> tuple[str, ...]:  # type: ignore[override]
        return self.base_slots + (("l2",) if self.alpha else ())

    def set_alpha(self, alpha) -> None:
        """scikit-learn reads alpha afresh at every fit call; the l2 slot follows it."""
        self.alpha = float(alpha)
        if self.state is None:
            return
        if self.alpha and not self.base_slots:   # plain SGD: nothing else to keep
            self.state = None
            return
        self.state = [{name: layer[name] if name in layer else _zeros(layer[self.base_slots[0]])
                       for name in self.slots} for layer in self.state]

    # -- around each Network.fit call --------------------------------------------------
    def begin(self, sizes, sums) -> None:
        """The sizes and sample-weight sums of the batches of the next fit call, in order."""
        self._batches = [(float(n), float(sw)) for n, sw in zip(sizes, sums)]

    def init(self, params):
        if self.state is not None:
            return self.state
        state = super().init(params)
        for layer in state:
            if "l2" in layer:
                layer["l2"] = tuple(ops_sum(a) for a in layer["l2"])
        return state

    def keep(self, state, steps: int, net) -> None:
        """Keep the state a pass over a chunk left, and its ``steps``: the next pass (and
        the next ``partial_fit``) continues from them."""
        self.state = list(state)
        self.steps += steps
        self.backend, self.dtype = net.backend, net.dtype

    def take_l2(self) -> float:
        """The L2 loss terms accumulated since the last call (times each batch's size),
        one host read; the accumulators restart at zero."""
        if not self.alpha or self.state is None:
            return 0.0
        total = float(sum(layer["l2"][0] for layer in self.state))
        self.state = [{**layer, "l2": tuple(a * 0 for a in layer["l2"])} for layer in self.state]
        return total

    def l2_hyper(self, step: int) -> dict:
        """The step's ``alpha / sw`` (gradient) and ``0.5 * alpha * size / sw`` (loss)."""
        if not self.alpha:
            return {"decay": 0.0, "l2": 0.0}
        size, sw = self._batches[step]
        return {"decay": self.alpha / sw, "l2": 0.5 * self.alpha * size / sw} if sw > 0 else {"decay": 0.0, "l2": 0.0}

    # -- where the state lives -----------------------------------------------------------
    def move_to(self, backend, dtype) -> None:
        """Carry the state over to ``backend`` (from the host after unpickling, or from
        another backend after ``set_params(backend=...)``)."""
        if self.state is None or (self.backend is backend and self.dtype == dtype):
            return
        src = self.backend
        self.state = [{name: tuple(backend.asarray(host_array(src, a), dtype) for a in pair)
                       for name, pair in layer.items()} for layer in self.state]
        self.backend, self.dtype = backend, dtype

    def on_host(self) -> SklearnOptimizer:
        """A copy whose state is NumPy arrays (what pickling stores)."""
        clone = object.__new__(type(self))
        clone.__dict__.update(self.__dict__)
        if self.state is not None:
            clone.state = [{name: tuple(np.array(host_array(self.backend, a)) for a in pair)
                            for name, pair in layer.items()} for layer in self.state]
        clone.backend = None
        return clone

    def _gradient(self, grad, param, ops, decay):
        """(Δᵀ A + decay * W, Σ_rows Δ): the batch's gradients with scikit-learn's L2 on W,
        by the primitive the library's own L2 uses (``Ops.l2_grads``, E16)."""
        if not self.alpha:
            return ops.dense_grads(grad)
        return ops.l2_grads(grad, param[0], decay)

    def _l2(self, state, param, ops, l2) -> dict:
        """The new "l2" slot: its W part plus ``l2 * ‖W‖²`` of the weights before the step
        (``transforms.squared_norm``, as the library's L2 penalty)."""
        if not self.alpha:
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


def host_array(backend, a):
    """``a`` as a NumPy array: read back from ``backend``, or as it is when that is None."""
    return a if backend is None else backend.to_numpy(a)


def ops_sum(a):
    """A 0-d zero of ``a``'s library, dtype and device (the l2 accumulator)."""
    import array_api_compat

    return array_api_compat.array_namespace(a).sum(a * 0)


def _zeros(pair):
    """A fresh "l2" slot beside an existing slot pair (alpha turned on between calls)."""
    return tuple(ops_sum(a) for a in pair)


class SklearnAdam(SklearnOptimizer):
    """scikit-learn's Adam (see the module docstring)."""

    name = "sklearn-adam"
    base_slots = ("m", "v")

    def __init__(self, lr, beta_1, beta_2, epsilon, alpha):
        super().__init__(lr, alpha)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)

    def hyperparams(self, step, lr):
        t = self.steps + step + 1
        size = lr * math.sqrt(1 - self.beta_2 ** t) / (1 - self.beta_1 ** t)
        return {"step_size": size, "eps": self.epsilon, **self.l2_hyper(step)}

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

    def hyperparams(self, step, lr):
        return {"lr": lr, **self.l2_hyper(step)}

    def update(self, grad, state, param, *, ops, lr, decay, l2):
        if not self.alpha and not self.momentum:   # E12 as it stands: the one-call step
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
