"""What the launcher (``mpiexec``, ``srun``) says about this process, and communicators by name.

Launchers tell each process how many were started through environment variables before
any MPI library is loaded. Reading them lets ``auto`` choose between one process and
many without initializing MPI, and lets :class:`~portable_bp.distributed.MPI` tell a
world of 1 that was asked to be 4 (``mpiexec`` of one MPI, ``mpi4py`` built for another:
each process then believes it is alone and trains the whole model by itself) from a real
single process.
"""

from __future__ import annotations

import os

# (variable, launcher): the world size each launcher exports to the processes it starts
SIZE_VARIABLES = (
    ("OMPI_COMM_WORLD_SIZE", "Open MPI's mpiexec"),
    ("PMI_SIZE", "MPICH's / Intel MPI's mpiexec (or srun --mpi=pmi2)"),
    ("MV2_COMM_WORLD_SIZE", "MVAPICH's mpiexec"),
    ("PMIX_SIZE", "a PMIx launcher"),
)
CHOICES = ("none", "mpi", "nccl", "auto")


class DistributedError(RuntimeError):
    """Many processes cannot work together as started (the message says why and what to do)."""


def launcher_size(environ=None) -> tuple[int, str] | None:
    """(the number of processes the launcher started, the variable that says so), or None
    when no known launcher started this process. Slurm's step size counts only inside an
    ``srun`` step (a batch script's own process also sees SLURM_NTASKS)."""
    environ = os.environ if environ is None else environ
    for var, _ in SIZE_VARIABLES:
        value = environ.get(var, "")
        if value.isdigit():
            return int(value), var
    if environ.get("SLURM_STEP_ID", "").isdigit() and environ.get("SLURM_STEP_NUM_TASKS", "").isdigit():
        return int(environ["SLURM_STEP_NUM_TASKS"]), "SLURM_STEP_NUM_TASKS"
    return None


def check_world(size: int, library: str, environ=None) -> None:
    """A clear error when the launcher started more processes than MPI sees (or fewer)."""
    asked = launcher_size(environ)
    if asked is None or asked[0] == size:
        return
    n, var = asked
    who = dict(SIZE_VARIABLES).get(var, "srun")
    mine = library.strip().splitlines()[0] if library.strip() else "an unknown MPI"
    raise DistributedError(
        f"the launcher started {n} processes ({var}={n}, set by {who}), but mpi4py's MPI sees a "
        f"world of {size}: mpiexec and mpi4py belong to different MPI installations, so every "
        f"process would train alone. mpi4py uses {mine}. "
        f"Launch with that MPI's mpiexec (pip's mpich: the mpiexec next to this Python), or "
        f"build mpi4py against yours: pip install --no-binary mpi4py mpi4py")


def device_spec(spec: str, local_rank: int) -> str:
    """The backend spec one rank trains on: a GPU spec without a device index gets the
    GPU of the rank's local rank (one GPU per process); CPU specs stay as they are."""
    name, _, device = spec.partition(":")
    if name == "cupy" and not device:
        return f"cupy:{local_rank}"
    if name == "torch" and device == "cuda":
        return f"torch:cuda:{local_rank}"
    if name == "jax" and device == "gpu":
        return f"jax:gpu:{local_rank}"
    return spec
