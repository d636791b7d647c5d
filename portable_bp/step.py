"""The training step, written once: forward (E7), loss (E2), backprop (E8–E10), update (E12).

Every function here is a pure function of arrays (parameters, optimizer state, a batch) and
calls nothing but :class:`~portable_bp.ops.Ops` primitives, one per equation, so it reads as
the derivation does and runs unchanged on every backend; how it runs (op by op, or compiled
as one program by JAX) is the executor's business, how fast each primitive is the Ops'.

``params`` is a list of (W, b) per layer, W of shape (n_out, n_in): one row per neuron.
An optimizer's state is a list with one entry per layer (see :mod:`portable_bp.optim`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from .activations import Activation
from .losses import Loss
from .ops import Array, DenseGrad, Ops

Params = Sequence[tuple[Array, Array]]


class Spec(NamedTuple):
    """What the step needs to know about a network: each layer's activation f_1 .. f_L
    (the last is the output's) and the loss."""

    activations: tuple[Activation, ...]
    loss: Loss

    @property
    def output(self) -> Activation:
        return self.activations[-1]


def forward(spec: Spec, ops: Ops, params: Params, X: Array) -> tuple[list, Array]:
    """E7 through every layer: the activations A(0) = X .. A(L-1) that backprop needs, and
    the output layer's U(L) (its activation belongs with the loss, E2)."""
    As, last = [X], len(params) - 1
    for l in range(last):
        As.append(ops.affine_activation(As[l], *params[l], spec.activations[l]))  # E7: A(l) = f(A(l-1) W(l)ᵀ + b(l))
    return As, ops.affine(As[last], *params[last])                           # E7 at the output: U(L)


def outputs(spec: Spec, ops: Ops, params: Params, X: Array) -> Array:
    """The network's outputs A(L) for X."""
    return ops.activation(forward(spec, ops, params, X)[1], spec.output)


def loss_sum(spec: Spec, ops: Ops, params: Params, X: Array, Z: Array,
             weights: Array | None = None) -> tuple[Array, Array]:
    """(A(L), the loss summed over the rows of X, or weighted by ``weights``): E7 then E2."""
    return ops.output_loss(forward(spec, ops, params, X)[1], Z, spec.output, spec.loss, weights)


def mean_scale(xp: Any, X: Array, weights: Array | None):
    """The factor that makes a batch sum a mean: 1/m, or w_i/Σw per row (a column, so that
    it broadcasts over the outputs) with per-sample weights."""
    if weights is None:
        return 1.0 / X.shape[0]
    total = xp.sum(weights)
    total = xp.where(total > 0, total, xp.ones_like(total))  # a batch of zero weights: no step
    return xp.reshape(weights / total, (-1, 1))


def train_step(spec: Spec, ops: Ops, optimizer: Any, params: Params, state: list, X: Array,
               Z: Array, hyper: dict, weights: Array | None = None) -> tuple[list, list, Array]:
    """One step of gradient descent (E12) on the batch (X, Z), optionally with per-sample
    ``weights``: (new params, new optimizer state, the batch's summed loss on the device).

    Backprop walks down from the output. Each layer's update follows as soon as its
    gradient (E10) is known and the Δ below it has been computed from the weights as they
    were (E9): the same arithmetic as a whole backward pass followed by one update, but a
    layer's activations and Δ are let go as soon as they are passed. ``hyper`` holds the
    step's scalars, computed on the host by ``optimizer.hyperparams``."""
    As, U = forward(spec, ops, params, X)                                           # E7
    A_L, total = ops.output_loss(U, Z, spec.output, spec.loss, weights)              # E2
    delta = ops.output_delta(U, A_L, Z, spec.output, spec.loss, mean_scale(ops.xp, X, weights))  # E8/E11
    new_params, new_state = list(params), list(state)
    for l in range(len(params) - 1, -1, -1):
        A_prev, W = As.pop(), params[l][0]
        grad = DenseGrad(delta, A_prev)                         # E10: ∇W = Δᵀ A(l-1), ∇b = Σ_rows Δ
        if l:
            delta = ops.backprop_delta(delta, W, A_prev, spec.activations[l - 1])   # E9
        new_params[l], new_state[l] = optimizer.update(grad, state[l], params[l], ops=ops, **hyper)  # E12
    return new_params, new_state, total


def apply_updates(optimizer: Any, ops: Ops, params: Params, state: list, grads: Sequence,
                  hyper: dict) -> tuple[list, list]:
    """E12 for every layer from gradients already complete (``DenseGrad`` per layer): the
    second half of :func:`train_step`, for a caller that does something with all the
    gradients first (a communicator summing them over processes)."""
    new_params, new_state = list(params), list(state)
    for l, grad in enumerate(grads):
        new_params[l], new_state[l] = optimizer.update(grad, state[l], params[l], ops=ops, **hyper)  # E12
    return new_params, new_state


class Gradients:
    """An "optimizer" whose update leaves the parameters as they are and returns E10's
    gradient arrays as its state: :func:`train_step` with it computes the loss and every
    gradient by exactly the code that trains (``Network.loss_and_grads``, gradcheck)."""

    def init(self, params: Params) -> list:
        return [None] * len(params)

    def hyperparams(self, step: int, lr: float) -> dict:
        return {}

    def update(self, grad: DenseGrad, state: Any, param: tuple, *, ops: Ops) -> tuple:
        return param, ops.dense_grads(grad)


def loss_and_grads(spec: Spec, ops: Ops, params: Params, X: Array, Z: Array,
                   weights: Array | None = None) -> tuple[Array, list]:
    """The summed (or weighted) batch loss on the device and (dW, db) for every layer."""
    _, grads, total = train_step(spec, ops, Gradients(), params, [None] * len(params), X, Z, {}, weights)
    return total, grads
