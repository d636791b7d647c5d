"""Gradient transforms: what happens to the gradients between backprop and the update.

Backprop (:func:`portable_bp.step.backprop`) yields each layer's gradient (a
:class:`~portable_bp.ops.DenseGrad`) from the top down; a :class:`Chain` of transforms
maps that stream before the optimizer sees it, as optax's ``chain`` composes gradient
transformations. A transform is small and pure:

* ``layer(ops, grad, param, ctx) -> grad`` for transforms that look at one layer at a time
  (L2, value clipping): the step then still updates each layer as soon as its gradient is
  known, and plain SGD keeps its fused one-call update when the chain is empty;
* ``every_layer(ops, grads, params, ctx) -> grads`` for one that needs them all at once
  (global-norm clipping): the step then finishes backprop first and holds every layer's
  gradient (and Δ and input) at once — the memory of a separate backward pass;
* ``penalty(ops, params, ctx)``: what the transform adds to the batch's summed loss (L2's
  ½α‖W‖², E16), or None.

Transforms run on the whole batch's gradient: after the sum over processes in data
parallel, so a penalty or a norm is counted once. Every operation goes through ``ops.xp``
(Array API) or an Ops primitive; nothing here reads a value back to the host.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from ._validate import number
from .ops import DenseGrad, Ops
from .scalars import typed


def weight_sum(xp: Any, weights: Any) -> Any:
    """Σw on the device, or 1 when it is 0 (a batch that weighs nothing: its gradient is
    zero and no step is taken, instead of a division by zero)."""
    total = xp.sum(weights)
    return xp.where(total > 0, total, xp.ones_like(total))


def batch_weight(xp: Any, ctx: Any) -> Any:
    """What the batch's mean divides by: its size, its weight sum (:func:`weight_sum`), or
    the whole batch's as ``ctx.batch_weight`` says (a rank's part of a batch)."""
    if ctx.batch_weight is not None:
        return ctx.batch_weight
    return ctx.X.shape[0] if ctx.weights is None else weight_sum(xp, ctx.weights)


def squared_norm(xp: Any, W: Any) -> Any:
    """‖W‖², one pass over W (a dot product of its flattened self), on W's device."""
    flat = xp.reshape(W, (-1,))
    return xp.vecdot(flat, flat)


class Transform:
    """A gradient transform; the defaults change nothing."""

    name = "transform"
    needs_every_layer = False

    def layer(self, ops: Ops, grad: DenseGrad, param: tuple, ctx: Any) -> DenseGrad:
        return grad

    def every_layer(self, ops: Ops, grads: list, params: Any, ctx: Any) -> list:
        return [(l, self.layer(ops, g, params[l], ctx)) for l, g in grads]

    def penalty(self, ops: Ops, params: Any, ctx: Any) -> Any:
        return None

    def config(self) -> dict:
        return {"name": self.name}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


class L2(Transform):
    """L2 regularization as scikit-learn's ``alpha`` (E16): ½·α·‖W‖² added to the batch's
    summed loss (½·α·‖W‖²/m to its mean), biases excluded, so each weight gradient gets
    α·W/m, with m the batch's size or its sample-weight sum. Unlike an optimizer's
    ``weight_decay`` it is part of the loss, so it is reported in it and clipped with it."""

    name = "l2"

    def __init__(self, alpha: float):
        self.alpha = number(alpha, "l2")

    def layer(self, ops, grad, param, ctx):
        c = self.alpha / batch_weight(ops.xp, ctx)
        return DenseGrad.of_arrays(*ops.l2_grads(grad, param[0], c))      # E16: ∇W + α·W/m

    def penalty(self, ops, params, ctx):
        return (0.5 * self.alpha) * sum(squared_norm(ops.xp, W) for W, _ in params)  # E16: ½α‖W‖²

    def config(self):
        return {"name": self.name, "alpha": self.alpha}


class ClipValue(Transform):
    """Every gradient element clamped to [−value, value]
    (``torch.nn.utils.clip_grad_value_``)."""

    name = "clip_value"

    def __init__(self, value: float):
        self.value = number(value, "clip_value", lo_open=True)

    def layer(self, ops, grad, param, ctx):
        """min(max(g, −value), value) with typed scalars: the Array API ``clip`` of
        array-api-compat makes both bounds into new device arrays and assigns through a
        boolean mask at every call on NumPy and CuPy (a host sync on a GPU, refused inside a
        capture); NaN stays NaN either way."""
        xp = ops.xp
        return DenseGrad.of_arrays(*(xp.minimum(xp.maximum(g, typed(xp, -self.value, g)), typed(xp, self.value, g))
                                     for g in ops.dense_grads(grad)))

    def config(self):
        return {"name": self.name, "value": self.value}


class ClipNorm(Transform):
    """Every gradient scaled by min(1, max_norm / (‖g‖ + 1e-6)), ‖g‖ the L2 norm over all
    layers' weights and biases together (``torch.nn.utils.clip_grad_norm_``). It needs
    every layer's gradient before any update: the step finishes backprop first. The norm
    stays on the device; a NaN or inf norm makes the update NaN, which fit's once-per-epoch
    check reports as a divergence."""

    name = "clip_norm"
    needs_every_layer = True

    def __init__(self, max_norm: float):
        self.max_norm = number(max_norm, "clip_norm", lo_open=True)

    def every_layer(self, ops, grads, params, ctx):
        xp = ops.xp
        arrays = [(l, ops.dense_grads(g)) for l, g in grads]
        norms = [xp.linalg.vector_norm(a) for _, pair in arrays for a in pair]
        total = xp.linalg.vector_norm(xp.stack(norms))
        scale = xp.minimum(self.max_norm / (total + 1e-6), xp.ones_like(total))
        return [(l, DenseGrad.of_arrays(dW * scale, db * scale)) for l, (dW, db) in arrays]

    def config(self):
        return {"name": self.name, "max_norm": self.max_norm}


def _each_layer(transform: Transform, ops: Ops, grads: Iterable, params: Any, ctx: Any) -> Iterator:
    for l, grad in grads:
        yield l, transform.layer(ops, grad, params[l], ctx)


class Chain:
    """Transforms applied in order to the stream of (layer, gradient) pairs."""

    def __init__(self, *transforms: Transform):
        for t in transforms:
            if not isinstance(t, Transform):
                raise TypeError(f"transforms must be portable_bp.transforms.Transform objects, "
                                f"got {type(t).__name__}")
        self.transforms = tuple(transforms)

    def __bool__(self) -> bool:
        return bool(self.transforms)

    def __repr__(self) -> str:
        return f"Chain{self.transforms!r}"

    @property
    def needs_every_layer(self) -> bool:
        return any(t.needs_every_layer for t in self.transforms)

    def apply(self, ops: Ops, grads: Iterable, params: Any, ctx: Any) -> Iterable:
        """The transformed stream: lazy while every transform works layer by layer (the
        stream itself when the chain is empty)."""
        if not self.transforms:
            return grads
        for t in self.transforms:
            grads = t.every_layer(ops, list(grads), params, ctx) if t.needs_every_layer else \
                _each_layer(t, ops, grads, params, ctx)
        return grads

    def penalized(self, ops: Ops, total: Any, params: Any, ctx: Any) -> Any:
        """``total`` (a batch's summed loss) plus every transform's penalty."""
        if not self.transforms:
            return total
        for t in self.transforms:
            extra = t.penalty(ops, params, ctx)
            if extra is not None:
                total = total + extra
        return total

    def config(self) -> list:
        return [t.config() for t in self.transforms]

    def key(self) -> str:
        """What a compiled step depends on: the transforms and their settings."""
        return repr(self.config())


NO_TRANSFORMS = Chain()


def regularization(l2: float | None = None, clip_value: float | None = None,
                   clip_norm: float | None = None) -> Chain:
    """The chain ``fit`` builds from its arguments, in the order the gradient meets them:
    L2 first (it is part of the loss), then value clipping, then norm clipping (as in
    PyTorch, where the penalty is in the loss and clipping runs after ``backward``).

    ``l2`` adds ½·l2·‖W‖²/m to each batch's mean loss (scikit-learn's ``alpha``; biases
    excluded, m the batch's size or weight sum), so each weight gradient gets l2·W/m;
    ``clip_value`` clamps every gradient element to [−clip_value, clip_value];
    ``clip_norm`` scales the gradients so that their global L2 norm over all layers is at
    most ``clip_norm`` (the step then finishes backprop before updating, holding every
    layer's gradient at once). Dropout is the network's (``Network(dropout=...)``)."""
    chain: list[Transform] = []
    if l2 is not None and number(l2, "l2") > 0:
        chain.append(L2(l2))
    if clip_value is not None:
        chain.append(ClipValue(clip_value))
    if clip_norm is not None:
        chain.append(ClipNorm(clip_norm))
    return Chain(*chain)
