"""The training step, written once: forward (E7, dropout E14), loss (E2, L2 E16), backprop
(E8–E10, E15), the gradient transforms (L2, clipping) and the update (E12).

Every function here is a pure function of arrays (parameters, optimizer state, a batch) and
calls nothing but :class:`~portable_bp.ops.Ops` primitives, one per equation, so it reads as
the derivation does and runs unchanged on every backend; how it runs (op by op, or compiled
as one program by JAX) is the executor's business, how fast each primitive is the Ops'.

``params`` is a list of (W, b) per layer, W of shape (n_out, n_in): one row per neuron.
An optimizer's state is a list with one entry per layer (see :mod:`portable_bp.optim`).
What a step needs beyond parameters and state travels in its :class:`Context`: the batch,
the step counter and the random key (see :mod:`portable_bp.counter_rng`).

The step grows by composition, not by flags (optax's ``chain`` is the model)::

    loss, grads = loss_and_backprop(spec, ops, params, ctx)  # E7-E11: per-layer gradients
    grads = transforms.apply(ops, grads, params, ctx)         # L2 (E16), clipping
    params, state = optimizer.update(grad, state, param, ...) # E12, layer by layer

Backprop yields each layer's gradient as soon as it is known (E10), after the Δ below it
has been computed from the weights as they were (E9), so an update that writes into W(l)
cannot change what the layers below see. While every transform works layer by layer, the
update follows each gradient at once and a layer's activations and Δ are let go as they
pass (plain SGD never even makes the weight-gradient array: ``Ops.sgd_dense``). A
transform that needs every layer (global-norm clipping) makes the step finish backprop
first: it then holds every layer's Δ, input and gradient at once, as a separate backward
pass and update would.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from .activations import Activation
from .losses import Loss
from .ops import Array, DenseGrad, Ops
from .transforms import NO_TRANSFORMS, Chain, weight_sum

Params = Sequence[tuple[Array, Array]]


class Spec(NamedTuple):
    """What the step needs to know about a network: each layer's activation f_1 .. f_L
    (the last is the output's), the loss, and the dropout rate of each hidden layer (empty:
    none)."""

    activations: tuple[Activation, ...]
    loss: Loss
    dropout: tuple[float, ...] = ()

    @property
    def output(self) -> Activation:
        return self.activations[-1]


class Context(NamedTuple):
    """What one training step needs beyond parameters and optimizer state, as one record
    every executor builds and passes: the batch (X, Z, per-sample weights or None), the
    step counter (a Python int, a traced index inside a scanned epoch, or a device counter
    inside a captured graph) and the seed, which together key the step's random numbers;
    ``first_row``, the position of X's first row in the whole batch (a rank's part of it
    in data parallel: its dropout masks are then the rows' masks in the whole batch), and
    ``batch_weight``, the whole batch's size or weight sum (None: X's own), which L2 divides by;
    ``training``: False computes the loss and gradients as evaluation would (no dropout)."""

    X: Array
    Z: Array
    weights: Array | None = None
    count: Any = 0
    seed: int = 0
    first_row: Any = 0
    batch_weight: Any = None
    training: bool = True

    @classmethod
    def of(cls, X: Array, Z: Array, weights: Array | None, count: Any, seed: int) -> Context:
        """A training step's context (the executors' per-step constructor: NamedTuple's
        keyword handling costs a microsecond a step on the tiniest networks)."""
        return tuple.__new__(cls, (X, Z, weights, count, seed, 0, None, True))


class Forward(NamedTuple):
    """E7 through the hidden layers: ``inputs`` are A(0) = X .. A(L-1) as the next layer
    takes them (after dropout, E14), ``outputs`` the hidden layers' f(U(l)) before it (f'
    is written from them), ``masks`` each hidden layer's S(l) or None (both None without
    dropout: the outputs are the inputs), ``U`` the output layer's U(L)."""

    inputs: list
    outputs: list | None
    masks: list | None
    U: Array


def dropout_mask(spec: Spec, ops: Ops, ctx: Any, l: int, like: Array) -> Array | None:
    """S(l) for hidden layer ``l`` (E14), or None where its rate is 0."""
    rate = spec.dropout[l]
    return ops.dropout_mask(ctx.seed, ctx.count, l, ctx.first_row, like, rate) if rate else None


def forward(spec: Spec, ops: Ops, params: Params, X: Array, ctx: Context | None = None) -> Forward:
    """E7 through every layer, with dropout (E14) on the hidden layers when training
    (``ctx`` given, and training): what backprop needs, and the output layer's U(L) (its
    activation belongs with the loss, E2). Without dropout the hidden layers' outputs are
    the next layers' inputs, and ``outputs``/``masks`` are None."""
    dropping = spec.dropout and ctx is not None and ctx.training
    inputs, last = [X], len(params) - 1
    outputs: list | None = [] if dropping else None
    masks: list | None = [] if dropping else None
    for l in range(last):
        W, b = params[l]
        A = ops.affine_activation(inputs[l], W, b, spec.activations[l])        # E7: A(l) = f(A(l-1) W(l)ᵀ + b(l))
        if dropping:
            S = dropout_mask(spec, ops, ctx, l, A)                               # E14: S(l) = M(l) / (1 − p_l)
            outputs.append(A)  # type: ignore[union-attr]
            masks.append(S)  # type: ignore[union-attr]
            A = A if S is None else ops.dropout(A, S)                           # E14: A(l) ⊙ S(l)
        inputs.append(A)
    W, b = params[last]
    U = ops.affine(inputs[last], W, b)                                          # E7 at the output: U(L)
    return tuple.__new__(Forward, (inputs, outputs, masks, U))


def outputs(spec: Spec, ops: Ops, params: Params, X: Array) -> Array:
    """The network's outputs A(L) for X (no dropout: prediction)."""
    return ops.activation(forward(spec, ops, params, X).U, spec.output)


def loss_sum(spec: Spec, ops: Ops, params: Params, X: Array, Z: Array,
             weights: Array | None = None) -> tuple[Array, Array]:
    """(A(L), the loss summed over the rows of X, or weighted by ``weights``): E7 then E2."""
    return ops.output_loss(forward(spec, ops, params, X).U, Z, spec.output, spec.loss, weights)


def mean_scale(xp: Any, X: Array, weights: Array | None):
    """The factor that makes a batch sum a mean: 1/m, or w_i/Σw per row (a column, so that
    it broadcasts over the outputs) with per-sample weights."""
    if weights is None:
        return 1.0 / X.shape[0]
    return xp.reshape(weights / weight_sum(xp, weights), (-1, 1))


def backprop(spec: Spec, ops: Ops, params: Params, fwd: Forward, delta: Array) -> Iterator[tuple[int, DenseGrad]]:
    """E9 and E10 from the output down, given Δ(L): yields (l, layer l's gradient), each
    once the Δ below it has been computed from W(l) as it was, so the consumer may update
    W(l) in place. Each layer's input, activation and mask are let go as it passes."""
    inputs, outputs, masks = fwd.inputs, fwd.outputs, fwd.masks
    for l in range(len(params) - 1, -1, -1):
        A_prev = inputs.pop()
        grad = DenseGrad(delta, A_prev)                                       # E10: ∇W = Δᵀ A(l-1), ∇b = Σ_rows Δ
        if l:
            A, S = (A_prev, None) if outputs is None else (outputs.pop(), masks.pop())  # type: ignore[union-attr]
            delta = ops.backprop_delta(delta, params[l][0], A, spec.activations[l - 1])   # E9
            if S is not None:
                delta = ops.dropout(delta, S)                                          # E15: Δ(l) ⊙ S(l)
        yield l, grad


def loss_and_backprop(spec: Spec, ops: Ops, params: Params, ctx: Context,
                      transforms: Chain = NO_TRANSFORMS) -> tuple[Array, Iterable[tuple[int, DenseGrad]]]:
    """The batch's summed (or weighted) loss on the device, with the transforms' penalties
    (E16), and its gradients layer by layer from the top, transformed: E7 to E11, lazily."""
    X, Z, w, f, loss = ctx.X, ctx.Z, ctx.weights, spec.activations[-1], spec.loss   # (each field read once)
    fwd = forward(spec, ops, params, X, ctx)                                           # E7, E14
    A_L, total = ops.output_loss(fwd.U, Z, f, loss, w)                                 # E2
    total = transforms.penalized(ops, total, params, ctx)                              # E16: + ½α‖W‖²
    delta = ops.output_delta(fwd.U, A_L, Z, f, loss, mean_scale(ops.xp, X, w))         # E8/E11
    grads = backprop(spec, ops, params, fwd, delta)                                    # E9, E10
    return total, transforms.apply(ops, grads, params, ctx)                            # E16, clipping


def train_step(spec: Spec, ops: Ops, optimizer: Any, params: Params, state: list, ctx: Context,
               hyper: dict, transforms: Chain = NO_TRANSFORMS) -> tuple[list, list, Array]:
    """One step of gradient descent (E12) on the batch of ``ctx``: (new params, new optimizer
    state, the batch's summed loss on the device). ``hyper`` holds the optimizer's scalars
    for this step, computed on the host by ``optimizer.hyperparams``."""
    total, grads = loss_and_backprop(spec, ops, params, ctx, transforms)               # E7–E11, E16
    new_params, new_state = list(params), list(state)
    for l, grad in grads:
        new_params[l], new_state[l] = optimizer.update(grad, state[l], params[l], ops=ops, **hyper)  # E12
    return new_params, new_state, total


def apply_updates(optimizer: Any, ops: Ops, params: Params, state: list, grads: Sequence, hyper: dict,
                  ctx: Context | None = None, transforms: Chain = NO_TRANSFORMS) -> tuple[list, list]:
    """E12 for every layer from gradients already complete (``DenseGrad`` per layer, summed
    over processes, say), after the transforms: the second half of :func:`train_step`."""
    new_params, new_state = list(params), list(state)
    for l, grad in transforms.apply(ops, enumerate(grads), params, ctx):
        new_params[l], new_state[l] = optimizer.update(grad, state[l], params[l], ops=ops, **hyper)  # E12
    return new_params, new_state


def loss_and_grads(spec: Spec, ops: Ops, params: Params, ctx: Context,
                   transforms: Chain = NO_TRANSFORMS) -> tuple[Array, list]:
    """The summed (or weighted) batch loss on the device and (dW, db) for every layer, by
    the code that trains (``Network.loss_and_grads``, gradcheck, data parallel)."""
    total, grads = loss_and_backprop(spec, ops, params, ctx, transforms)
    by_layer = {l: ops.dense_grads(grad) for l, grad in grads}  # each multiplied out as it passes
    return total, [by_layer[l] for l in range(len(params))]
