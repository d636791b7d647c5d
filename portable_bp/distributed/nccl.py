"""NCCL through CuPy: one GPU per process, gradients summed on the devices.

MPI starts the processes and carries what is small and rare (NCCL's unique id, Python
objects, the barrier); NCCL carries the arrays, in place, on the stream the step runs on,
so the sum is queued behind the gradients and the update behind the sum: no host
round trip, no synchronization per step. Rank r uses GPU ``local_rank`` (``cupy:<local
rank>``, :attr:`NCCL.backend_spec`): at most as many processes per machine as GPUs.

NCCL calls return before the sum is done, so the watchdog of :class:`~.mpi.MPI` cannot see
them wait; :meth:`NCCL.wait` (called by the executor after every epoch) polls the stream
with the same deadline and, past it, aborts NCCL and the job instead of hanging at the
epoch's loss read.

``cupy`` and ``nccl`` may be given (objects with CuPy's and ``cupy.cuda.nccl``'s names) so
that the logic is tested on machines without a GPU; by default they are imported here.
"""

from __future__ import annotations

import time

from .launch import DistributedError
from .mpi import MPI


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
        raise ImportError(f'NCCL communication needs CuPy built with NCCL: pip install '
                          f'"portable_bp[cuda12]" (or cuda13): {exc}') from None
    return cupy, nccl


def _on_a_gpu(array) -> bool:
    """Whether ``array`` is a CuPy array (its memory has a device pointer)."""
    return hasattr(array, "data") and hasattr(array.data, "ptr")


class NCCL(MPI):
    """Every process started by ``mpiexec``, one GPU each, summing with NCCL.

    ``world`` and ``timeout`` as for :class:`~.mpi.MPI`. The network must be on
    ``cupy:<local rank>`` (:attr:`backend_spec`)."""

    def __init__(self, world=None, *, timeout: float | None = None, cupy=None, nccl=None, _mpi=None):
        super().__init__(world, timeout=timeout, cuda_aware=False, _mpi=_mpi)
        if cupy is None or nccl is None:
            cupy, nccl = _import_cupy()
        self._cp, self._nccl = cupy, nccl
        gpus = cupy.cuda.runtime.getDeviceCount()
        short = self._call("allreduce", self.world.allreduce, int(self.local_rank >= gpus))
        if short:  # on every rank, before any rank waits for NCCL's id
            raise DistributedError(f"{short} process(es) have no GPU of their own: NCCL uses one GPU "
                                   f"per process, and this machine has {gpus}: start at most {gpus} "
                                   f"processes per machine")
        self.device = self.local_rank
        self.backend_spec = f"cupy:{self.device}"
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
        """The sum over the ranks: CuPy buffers by NCCL on this rank's GPU; host buffers
        (NumPy: the set-up's error flags in ``sync.together``) over MPI, as
        :meth:`broadcast_arrays` sends host arrays."""
        if self.size == 1:
            return buffer
        if not _on_a_gpu(buffer):
            return super().allreduce(buffer, backend)
        ptr, n, code = self._checked(buffer)
        self.comm.allReduce(ptr, ptr, n, code, self._nccl.NCCL_SUM, self._stream())
        return buffer

    def broadcast_arrays(self, arrays, backend=None, root: int = 0) -> list:
        out = []
        for a in arrays:
            if not _on_a_gpu(a):
                out.extend(super().broadcast_arrays([a], backend, root))
                continue
            copy = a.copy()
            ptr, n, code = self._checked(copy)
            if self.size > 1:
                self.comm.bcast(ptr, n, code, root, self._stream())
            out.append(copy)
        return out

    def wait(self) -> None:
        """Poll the stream until the queued sums are done; past ``timeout`` seconds, abort.
        Then a pending SIGINT/SIGTERM on any rank stops every rank (:meth:`MPI.agree_on_stop`)."""
        stream = self._cp.cuda.get_current_stream()
        deadline = time.monotonic() + self.timeout if self.timeout > 0 else None
        while not stream.done:
            error = getattr(self.comm, "check_async_error", None)
            if error is not None:
                error()  # raises on an NCCL error (a peer's connection lost)
            if deadline is not None and time.monotonic() > deadline:
                self.abort(f"the GPU's queued NCCL sums did not finish in {self.timeout:g} s: another "
                           f"rank has died or is stuck (PORTABLE_BP_COMM_TIMEOUT sets this limit)", 1)
            time.sleep(1e-4)
        self.agree_on_stop()  # NCCL's sums carry no signal votes: the ranks agree once per epoch

    def abort(self, message: str, code: int = 1, detail: str = "") -> None:
        """End NCCL (so that no kernel waits on a dead peer), then every rank."""
        if self.size > 1 and getattr(self, "comm", None) is not None:
            try:
                self.comm.abort()
            except Exception:  # noqa: BLE001 - the job ends next anyway
                pass
        super().abort(message, code, detail)

    def __repr__(self) -> str:
        return f"NCCL(rank={self.rank}, size={self.size}, device={self.device})"
