"""The data-parallel executor: the step's two halves with one sum over the ranks between.

Every rank holds the whole dataset and draws the same batch order, so every rank knows
every global batch. It takes its own part of each (``numpy.array_split``'s split: parts
differ by at most a row, and a part may be empty), computes that part's gradients and
summed loss by the code that trains (:func:`portable_bp.step.loss_and_grads`, the step's
own backprop), scales the gradients so that the parts add up to
the global batch's mean (m_r / M, or the part's share of the batch's weight), and packs
them with the loss into ONE flat buffer. The communicator sums that buffer over the ranks;
then :func:`portable_bp.step.apply_updates` updates every layer from the sum. Every rank
takes the same number of steps (empty parts send zeros), so nobody waits forever, and
every rank gets the same sum, so parameters stay equal without being sent again. The
gradient transforms (L2, clipping) and their loss penalties run after the sum, on the
whole batch's gradient; a part's dropout masks are its rows' masks in the whole batch
(the context's ``first_row``), so many ranks draw what one process draws.

``deterministic=K`` splits every global batch into K fixed pieces instead of one part per
rank; a rank fills the slots of its pieces in a buffer of K slots (zeros elsewhere), the
sum over ranks then holds every piece exactly (x + 0 = x), and the pieces are added in
their fixed order. The arithmetic is then the same for any number of ranks: results are
bit-identical for 1, 2, ... K ranks (K slots travel instead of one: K times the bytes).

:class:`DataParallelCompiled` is the same for a backend that compiles (JAX): the gradient
half and the update half are each one compiled program, the sum runs between them.

Note for the captured executors (CUDA graphs on CuPy and torch:cuda, being written): split
the same way. Capture :func:`scaled_gradients` (up to the flat buffer) as one graph and
:func:`summed_update` as another, and launch ``comm.allreduce`` between the replays; NCCL
runs on the capture stream and may itself be captured (one graph per step), MPI through
host staging is a host call and stays outside. See docs/scaling.md.
"""

from __future__ import annotations

import functools
import math

from .. import step
from ..counter_rng import wrap32
from ..ops import DenseGrad
from ..transforms import NO_TRANSFORMS, weight_sum
from .eager import Eager, gather, optimizer_key


def part(start: int, stop: int, index: int, parts: int) -> tuple[int, int]:
    """Rows [lo, hi) of the ``index``-th of ``parts`` pieces of [start, stop), as
    ``numpy.array_split`` cuts them: the first (stop - start) % parts pieces one row longer."""
    q, r = divmod(stop - start, parts)
    lo = start + index * q + min(index, r)
    return lo, lo + q + (1 if index < r else 0)


def layer_shapes(params) -> list[tuple[tuple, tuple]]:
    return [(tuple(W.shape), tuple(b.shape)) for W, b in params]


def buffer_length(shapes) -> int:
    """Every gradient element, then one for the summed loss."""
    return sum(math.prod(sW) + math.prod(sb) for sW, sb in shapes) + 1


def weight_share(ops, w_part, data, order, start, total):
    """The part's share Σ_part w / Σ_batch w of its global batch's weight (0 when the
    batch weighs nothing: one process then takes no step either); ``w_part`` is the part's
    gathered weights. Every rank can compute it: it has every row's weight."""
    return ops.xp.sum(w_part) / batch_weight(ops, data, order, start, total)


def scaled_gradients(xp, spec, ops, seed, params, data, order, lo, start, count, size, total):
    """The flat buffer of rows lo:lo+size (of ``order``) of the global batch
    start:start+total: each layer's dW then db, scaled so that the parts of a batch add up
    to its mean gradient, then the part's summed (or weighted) loss. A pure function: the
    eager executor calls it, the compiled one compiles it (``size`` and ``total`` static)."""
    X, Z, w = gather(ops, data, order, lo, size)
    loss, grads = step.loss_and_grads(spec, ops, params, step.Context(X, Z, w, count, seed, lo - start))
    share = size / total if w is None else weight_share(ops, w, data, order, start, total)
    flat = [xp.reshape(g, (-1,)) * share for pair in grads for g in pair]
    return xp.concat(flat + [xp.reshape(loss, (1,))])


def positive_zeros(xp, flat):
    """``flat`` with -0.0 made +0.0: a piece that other ranks add zeros to must not
    depend on whether they did (-0.0 + 0.0 is +0.0)."""
    return xp.where(flat == 0, xp.zeros_like(flat), flat)


def fixed_order_sum(xp, flat, pieces: int, length: int):
    """The K slots of a deterministic buffer added in their order, 0 first."""
    total = flat[:length]
    for k in range(1, pieces):
        total = total + flat[k * length:(k + 1) * length]
    return total


def unpack(xp, flat, shapes) -> tuple[list, object]:
    """A summed buffer -> (a DenseGrad per layer, views into the buffer where the library
    has views; the summed loss)."""
    grads, at = [], 0
    for sW, sb in shapes:
        nW, nb = math.prod(sW), math.prod(sb)
        grads.append(DenseGrad.of_arrays(xp.reshape(flat[at:at + nW], sW), flat[at + nW:at + nW + nb]))
        at += nW + nb
    return grads, flat[at]


def batch_weight(ops, data, order, start, total):
    """The whole batch's weight sum (its size without sample weights), what L2 divides by:
    every rank can compute it, it has every row's weight."""
    if data[2] is None:
        return total
    (w_batch,) = gather(ops, (data[2],), order, start, total)
    return weight_sum(ops.xp, w_batch)


def summed_update(xp, optimizer, transforms, ops, shapes, pieces, params, state, flat, hyper, ctx):
    """The update half: (params, state, the global batch's summed loss) from the summed
    buffer, after the transforms (``ctx`` carries the step count and the batch's weight).
    A pure function, compiled as the second program on JAX. The optimizer may consume the
    gradients (write into the buffer): it is this step's own."""
    if pieces:
        flat = fixed_order_sum(xp, flat, pieces, buffer_length(shapes))
    grads, loss = unpack(xp, flat, shapes)
    loss = transforms.penalized(ops, loss, params, ctx)                      # E16, once per batch
    params, state = step.apply_updates(optimizer, ops, params, state, grads, hyper, ctx, transforms)
    return params, state, loss


class DataParallel(Eager):
    """The step on this rank's part of every global batch, gradients and loss summed over
    the ranks by ``comm`` (one buffer per step), then the same update on every rank."""

    name = "data-parallel"

    def __init__(self, net, optimizer, comm, deterministic: int | None = None, ops=None,
                 transforms=NO_TRANSFORMS, offset=0):
        super().__init__(net, optimizer, ops, transforms, offset)
        self.comm, self.backend, self.pieces = comm, net.backend, deterministic
        self.shapes = layer_shapes(net.params)
        self.length = buffer_length(self.shapes)
        self._dtype = net.array_dtype
        self._zeros = None

    def step(self, params, state, count, data, order, start, stop, lr):
        """One global batch, rows start:stop: (params, state, the batch's summed loss),
        the same on every rank."""
        flat = self.comm.allreduce(self.local_buffer(params, data, order, count, start, stop), self.backend)
        weight = batch_weight(self.ops, data, order, start, stop - start) if self.transforms else None
        ctx = step.Context(None, None, None, wrap32(self.offset + count), wrap32(self.seed), 0, weight)
        return self.apply(params, state, flat, self.optimizer.hyperparams(count, lr), ctx)

    def epoch(self, params, state, count, data, order, batch_size, lr):
        out = super().epoch(params, state, count, data, order, batch_size, lr)
        self.comm.wait()  # a dead peer becomes an error here, not a hang at the loss read
        return out

    def local_buffer(self, params, data, order, count, start, stop):
        """What this rank adds to the sum: its part's buffer, or (deterministic) K slots,
        its pieces' buffers in theirs and zeros in the others'."""
        rank, size = self.comm.rank, self.comm.size
        if not self.pieces:
            lo, hi = part(start, stop, rank, size)
            return self.gradients(params, data, order, count, lo, hi, start, stop)
        first, last = part(0, self.pieces, rank, size)
        slots = []
        for k in range(self.pieces):
            if first <= k < last:
                lo, hi = part(start, stop, k, self.pieces)
                piece = self.gradients(params, data, order, count, lo, hi, start, stop)
                slots.append(positive_zeros(self.xp, piece))
            else:
                slots.append(self.zeros())
        return self.xp.concat(slots)

    def gradients(self, params, data, order, count, lo, hi, start, stop):
        """The buffer of rows lo:hi of the batch start:stop (zeros for no rows)."""
        if hi == lo:
            return self.zeros()
        return scaled_gradients(self.xp, self.spec, self.ops, self.seed, params, data, order, lo, start,
                                wrap32(self.offset + count), hi - lo, stop - start)

    def apply(self, params, state, flat, hyper, ctx):
        return summed_update(self.xp, self.optimizer, self.transforms, self.ops, self.shapes, self.pieces,
                             params, state, flat, hyper, ctx)

    def zeros(self):
        """A zero buffer (kept: it is only ever copied into a concatenation, or sent)."""
        if self._zeros is None or not self.pieces:
            self._zeros = self.xp.zeros((self.length,), dtype=self._dtype, device=self.backend.device)
        return self._zeros


class DataParallelCompiled(DataParallel):
    """:class:`DataParallel` on a backend that compiles pure functions (JAX's jit): the
    gradient half is one program (per part size and batch size: they fix the shapes), the
    update half another (per optimizer configuration), the sum over ranks runs between
    them. Both programs are kept on the network (``net.compiled``) for the next fit."""

    name = "data-parallel-jit"

    def __init__(self, net, optimizer, comm, deterministic=None, ops=None, transforms=NO_TRANSFORMS, offset=0):
        super().__init__(net, optimizer, comm, deterministic, ops, transforms, offset)
        grad_key = ("data-parallel-gradients", id(self.ops), self.seed, self.spec)
        update_key = ("data-parallel-update", type(optimizer).__name__, optimizer_key(optimizer),
                      id(self.ops), tuple(self.shapes), deterministic, transforms.key())
        if grad_key not in net.compiled:
            fn = functools.partial(scaled_gradients, self.xp, self.spec, self.ops, self.seed)
            net.compiled[grad_key] = net.backend.compile(fn, static_argnames=("size", "total"))
        if update_key not in net.compiled:
            fn = functools.partial(summed_update, self.xp, optimizer, transforms, self.ops, self.shapes,
                                   deterministic)
            net.compiled[update_key] = net.backend.compile(fn)
        self._gradients, self._update = net.compiled[grad_key], net.compiled[update_key]

    def gradients(self, params, data, order, count, lo, hi, start, stop):
        if hi == lo:
            return self.zeros()
        return self._gradients(params, data, order, lo, start, wrap32(self.offset + count), size=hi - lo,
                               total=stop - start)

    def apply(self, params, state, flat, hyper, ctx):
        return self._update(params, state, flat, hyper, ctx)
