"""Data-parallel training: communicators at the step's gradient/update boundary.

A communicator is what ``fit(..., comm=...)`` talks to. Its interface, used by the
trainer (``portable_bp.train``):

* ``rank``, ``size``, ``local_rank``: this process among ``size`` (0 is the one that
  prints, shows progress and writes checkpoints);
* ``broadcast_arrays(arrays, root=0) -> list``: every rank gets root's values (parameters
  and optimizer state start equal; a resumed checkpoint is read once);
* ``broadcast_object(obj, root=0)``: small Python values (a resumed run's metadata);
* ``agree(flag: bool) -> bool``: rank 0's decision, on every rank (a callback's stop);
* ``barrier()``: wait for every rank (after rank 0 wrote a checkpoint);
* ``executor(net, optimizer) -> executor``: the executor that runs the step on this rank's
  part of each global batch and sums gradients and loss over the ranks (one buffer per step).

:class:`Local` is the communicator of one process: every call is the identity, and its
executor is the backend's own.
"""

from __future__ import annotations


class Local:
    """One process: nothing to communicate."""

    rank, size, local_rank = 0, 1, 0

    def broadcast_arrays(self, arrays, root: int = 0) -> list:
        return list(arrays)

    def broadcast_object(self, obj, root: int = 0):
        return obj

    def agree(self, flag: bool) -> bool:
        return bool(flag)

    def barrier(self) -> None:
        pass

    def executor(self, net, optimizer):
        from ..train.executors import executor_for

        return executor_for(net, optimizer)

    def __repr__(self) -> str:
        return "Local()"


__all__ = ["Local"]
