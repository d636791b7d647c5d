"""Data-parallel training: communicators at the step's gradient/update boundary.

``fit(net, X, Z, comm=MPI())`` trains one network with many processes: every process
holds the whole dataset and draws the same batch order, takes its part of each global
batch of ``batch_size`` rows, and the gradients and summed loss of the parts travel in one
flat buffer per step, summed over the processes; every process then applies the same
update. The result is one process's training on the same global batches (to rounding;
bit for bit with ``deterministic=K``). See ``docs/scaling.md`` for what it costs.

A communicator is what ``fit`` talks to (:class:`~.base.Communicator`):

* ``rank``, ``size``, ``local_rank``: this process among ``size`` (rank 0 prints, shows
  progress and writes checkpoints; ``local_rank`` picks the GPU);
* ``allreduce(buffer, backend=None)``: the in-place sum of a flat buffer over the ranks;
* ``broadcast_arrays(arrays, backend=None, root=0)``, ``broadcast_object(obj, root=0)``:
  rank 0's start state and resumed checkpoint on every rank;
* ``agree(flag)``: rank 0's decision on every rank (a callback's stop); ``barrier()``;
* ``wait()``: queued communication done; ``abort(message, code)``: end every rank;
* ``executor(net, optimizer, deterministic=None)``: the executor ``fit`` runs.

Communicators: :class:`Local` (one process, the default), :class:`MPI` (mpi4py; CPU
buffers directly, GPU buffers through the host unless the MPI is CUDA-aware),
:class:`NCCL` (CuPy, one GPU per process), and :func:`get` by name (``none``, ``mpi``,
``nccl``, ``auto``: the launcher's environment decides). The transports are imported
when a communicator is made, never by ``import portable_bp``.
"""

from __future__ import annotations

from .base import Communicator, Local
from .launch import CHOICES, DistributedError, device_spec, launcher_size
from .mpi import MPI
from .nccl import NCCL, nccl_available

__all__ = ["Communicator", "Local", "MPI", "NCCL", "get", "CHOICES", "DistributedError",
           "device_spec", "launcher_size", "DataParallel", "DataParallelCompiled"]


def get(name: str = "auto", *, gpu: bool = False, **options):
    """A communicator by name: ``none`` (one process), ``mpi``, ``nccl``, or ``auto``: one
    process unless a launcher started several, then NCCL when ``gpu`` (the network is on
    CuPy) and CuPy has NCCL, else MPI. ``options`` go to the communicator's constructor."""
    if name not in CHOICES:
        raise ValueError(f"distributed must be one of {', '.join(CHOICES)}, got {name!r}")
    if name == "auto":
        asked = launcher_size()
        if asked is None or asked[0] <= 1:
            return Local()
        name = "nccl" if gpu and nccl_available() else "mpi"
    if name == "none":
        return Local()
    return MPI(**options) if name == "mpi" else NCCL(**options)


def __getattr__(name):
    # the executors import the trainer, which imports this package: load them on first use
    if name in ("DataParallel", "DataParallelCompiled"):
        from . import executor

        return getattr(executor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
