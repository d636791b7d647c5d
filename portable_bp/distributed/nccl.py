"""NCCL through CuPy: one GPU per process, gradients summed on the devices.

MPI starts the processes and carries what is small and rare (NCCL's unique id, Python
objects, the barrier); NCCL carries the arrays, in place, on the stream the step runs on,
so the sum is queued behind the gradients and the update behind the sum: no host
round trip, no synchronization per step. Rank r uses GPU ``local_rank`` (``cupy:<local
rank>``, :attr:`NCCL.backend_spec`): at most as many processes per machine as GPUs.

NCCL calls return before the sum is done, so the watchdog of :class:`~.mpi.MPI` cannot see
them wait; every sum records an event, and once more than ``MAX_QUEUED`` are queued the
oldest is polled with the same deadline, as :meth:`NCCL.wait` (called by the executor after
every epoch) polls the stream: past it NCCL and the job are aborted instead of hanging.

``cupy`` and ``nccl`` may be given (objects with CuPy's and ``cupy.cuda.nccl``'s names) so
that the logic is tested on machines without a GPU; by default they are imported here.
"""

from __future__ import annotations

import collections
import time

from .launch import DistributedError
from .mpi import MPI

#: how many sums may be queued on the GPU before the oldest is waited for (with the deadline)
MAX_QUEUED = 4


def gpu_of(local_rank: int, gpus: int) -> int | None:
    """The GPU of the process ``local_rank`` on a machine that shows it ``gpus`` GPUs: its own
    number among them, or the only one it sees (a launcher that gives each process one GPU,
    as Slurm's ``--gpus-per-task=1``); None when it has none of its own."""
    if local_rank < gpus:
        return local_rank
    return 0 if gpus == 1 else None


def nccl_available() -> bool:
    """Whether CuPy with NCCL can be imported (not whether a GPU answers)."""
    try:
        from cupy.cuda import nccl  # noqa: F401
    except Exception:  # noqa: BLE001 - any failure means "not available"
        return False
    return True


def _import_cupy():
    try:
        import cupy
        from cupy.cuda import nccl
    except ImportError as exc:
        raise ImportError(f'NCCL communication needs CuPy built with NCCL: pip install -e ".[cuda12]" '
                          f'(or ".[cuda13]") in the checkout: {exc}') from None
    return cupy, nccl


def _on_a_gpu(array) -> bool:
    """Whether ``array`` is a CuPy array (its memory has a device pointer)."""
    return hasattr(array, "data") and hasattr(array.data, "ptr")


class NCCL(MPI):
    """Every process started by ``mpiexec``, one GPU each, summing with NCCL.

    ``world`` and ``timeout`` as for :class:`~.mpi.MPI`. The network must be on
    :attr:`backend_spec` (``cupy:<local rank>``, or ``cupy:0`` where each process sees one GPU)."""

    alone_runs_locally = False  # one rank still sums through NCCL: a one-GPU run proves the path

    def __init__(self, world=None, *, timeout: float | None = None, cupy=None, nccl=None, _mpi=None):
        super().__init__(world, timeout=timeout, cuda_aware=False, _mpi=_mpi)
        if cupy is None or nccl is None:
            cupy, nccl = _import_cupy()
        self._cp, self._nccl = cupy, nccl
        gpus = cupy.cuda.runtime.getDeviceCount()
        device = gpu_of(self.local_rank, gpus)
        short = self._call("allreduce", self.world.allreduce, int(device is None))
        if short:  # on every rank, before any rank waits for NCCL's id
            raise DistributedError(f"{short} process(es) have no GPU of their own: NCCL uses one GPU "
                                   f"per process, and this machine shows {gpus} to each: start at most "
                                   f"{gpus} processes per machine, or give each its own GPU "
                                   f"(CUDA_VISIBLE_DEVICES, Slurm's --gpus-per-task=1)")
        self.device = device
        self.backend_spec = f"cupy:{self.device}"
        self._pending: collections.deque = collections.deque()  # events of the sums queued
        self._dtypes = {"float32": nccl.NCCL_FLOAT32, "float64": nccl.NCCL_FLOAT64}
        uid = nccl.get_unique_id() if self.rank == 0 else None
        uid = self.broadcast_object(uid)  # over MPI: NCCL's own bootstrap
        with cupy.cuda.Device(self.device):
            self.comm = nccl.NcclCommunicator(self.size, uid, self.rank)

    def _checked(self, buffer):
        """(its device pointer, its length, NCCL's dtype code) of a CuPy array on this
        rank's GPU, or a clear error: NCCL reads raw device memory."""
        device = getattr(getattr(buffer, "device", None), "id", self.device)
        if device != self.device:
            raise ValueError(f"rank {self.rank} sums on GPU {self.device}, but the buffer is on GPU "
                             f"{device}: put the network on backend {self.backend_spec!r}")
        code = self._dtypes.get(str(buffer.dtype))
        if code is None:
            raise TypeError(f"NCCL sums float32 or float64 buffers here, got {buffer.dtype}")
        return buffer.data.ptr, buffer.size, code

    def _stream(self) -> int:
        return self._cp.cuda.get_current_stream().ptr

    def allreduce(self, buffer, backend=None):
        """The sum over the ranks: CuPy buffers by NCCL on this rank's GPU (with one rank
        too, so that a one-GPU run goes through NCCL as a many-GPU one does); host buffers
        (NumPy: the set-up's error flags in ``sync.together``) over MPI, as
        :meth:`broadcast_arrays` sends host arrays. At most ``MAX_QUEUED`` sums are left
        queued: past that the oldest is waited for, with the deadline, so a dead peer is
        noticed within a few steps rather than at the epoch's end."""
        if not _on_a_gpu(buffer):
            return super().allreduce(buffer, backend)
        ptr, n, code = self._checked(buffer)
        self._raise_async_error()
        self.comm.allReduce(ptr, ptr, n, code, self._nccl.NCCL_SUM, self._stream())
        event = self._cp.cuda.Event(block=False, disable_timing=True)
        event.record(self._cp.cuda.get_current_stream())
        self._pending.append(event)
        while len(self._pending) > MAX_QUEUED:
            self._wait_until(self._pending.popleft(), "a queued NCCL sum")
        return buffer

    def broadcast_arrays(self, arrays, backend=None, root: int = 0) -> list:
        out = []
        for a in arrays:
            if not _on_a_gpu(a):
                out.extend(super().broadcast_arrays([a], backend, root))
                continue
            copy = a.copy()
            ptr, n, code = self._checked(copy)
            self.comm.bcast(ptr, n, code, root, self._stream())
            out.append(copy)
        return out

    def wait(self) -> None:
        """Poll the stream until the queued sums are done; past ``timeout`` seconds, abort.
        Then a pending SIGINT/SIGTERM on any rank stops every rank (:meth:`MPI.agree_on_stop`)."""
        self._wait_until(self._cp.cuda.get_current_stream(), "the GPU's queued NCCL sums")
        self._pending.clear()
        self.agree_on_stop()  # NCCL's sums carry no signal votes: the ranks agree once per epoch

    def _raise_async_error(self):
        error = getattr(self.comm, "check_async_error", None)
        if error is not None:
            error()  # raises on an NCCL error (a peer's connection lost)

    def _wait_until(self, work, what: str) -> None:
        """Poll ``work`` (a stream or an event: its ``done``) and NCCL's error state; past
        ``timeout`` seconds, abort NCCL and the job."""
        deadline = time.monotonic() + self.timeout if self.timeout > 0 else None
        while not work.done:
            self._raise_async_error()
            if deadline is not None and time.monotonic() > deadline:
                self.abort(f"{what} did not finish in {self.timeout:g} s: another rank has died or is "
                           f"stuck (PORTABLE_BP_COMM_TIMEOUT sets this limit)", 1)
            time.sleep(1e-4)

    def abort(self, message: str, code: int = 1, detail: str = "") -> None:
        """End NCCL (so that no kernel waits on a dead peer), then every rank."""
        if getattr(self, "comm", None) is not None:
            try:
                self.comm.abort()
            except Exception:  # noqa: BLE001 - the job ends next anyway
                pass
        super().abort(message, code, detail)

    def __repr__(self) -> str:
        return f"NCCL(rank={self.rank}, size={self.size}, device={self.device})"
