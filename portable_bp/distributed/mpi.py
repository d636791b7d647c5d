"""MPI through mpi4py: processes started by ``mpiexec``, on CPUs or GPUs.

Buffers: NumPy arrays and PyTorch CPU tensors are summed where they lie; GPU arrays are
staged through the host (``backend.to_numpy``/``asarray``) unless the MPI is CUDA-aware
(``cuda_aware=True`` or ``PORTABLE_BP_MPI_CUDA_AWARE=1``: mpi4py then hands CuPy's device
pointer to MPI, after the stream is synchronized, since MPI knows nothing of streams).

Nothing may hang. A process that dies is noticed by the launcher, which ends the others.
A process that raises where the others do not is ended by ``fit`` through :meth:`abort`
(``MPI_Abort`` ends every rank). A rank that is alive but never arrives (stuck, or in a
different collective through a bug) is caught by a watchdog: a collective that waits
longer than ``timeout`` seconds (``PORTABLE_BP_COMM_TIMEOUT``, default 600) prints which
one and aborts the job. mpi4py releases the GIL while MPI waits, so the watchdog thread
runs, and mpi4py asks for ``MPI_THREAD_MULTIPLE``, so it may call ``MPI_Abort``.

Signals are not errors: the sums (:meth:`MPI.allreduce`) carry, beside the buffer, a
second tiny sum of each rank's pending SIGINT/SIGTERM (:mod:`portable_bp.stopping`),
started before the buffer's and finished after it: every step's, or every k-th step's for
steps much shorter than 0.1 s (:class:`~portable_bp.stopping.Ballots`), so a signal is
honoured within about 0.1 s plus a step. When any rank was signalled, every rank raises
the same interrupt after that sum: the ranks stop at the same step, nobody is aborted.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
import time

from .. import stopping
from .base import Communicator
from .launch import check_world
from .staging import from_host, host_values, to_host

DEFAULT_TIMEOUT = 600.0


def _import_mpi():
    try:
        from mpi4py import MPI as mpi
    except ImportError as exc:
        raise ImportError(f'MPI communication needs mpi4py: pip install -e ".[mpi]" in the checkout '
                          f'(mpi4py and the mpich it can run with): {exc}') from None
    return mpi


class Watchdog:
    """Ends the job when one collective call has waited ``timeout`` seconds: a peer that
    is alive but not coming would otherwise keep every rank waiting forever. One thread
    per communicator; entering and leaving a wait is two assignments."""

    def __init__(self, timeout: float, abort):
        self.timeout, self._abort = timeout, abort
        self._deadline: float | None = None
        self._what = ""
        threading.Thread(target=self._watch, name="portable_bp-comm-watchdog", daemon=True).start()

    @contextlib.contextmanager
    def waiting(self, what: str):
        self._what, self._deadline = what, time.monotonic() + self.timeout
        try:
            yield
        finally:
            self._deadline = None

    def _watch(self):
        while True:
            time.sleep(min(1.0, self.timeout / 4))
            deadline = self._deadline
            if deadline is not None and time.monotonic() > deadline:
                self._abort(f"no answer from the other ranks for {self.timeout:g} s in {self._what}: "
                            f"another rank has died, is stuck or runs other steps "
                            f"(PORTABLE_BP_COMM_TIMEOUT sets this limit)", 1)
                return


TIMEOUT_VARIABLE = "PORTABLE_BP_COMM_TIMEOUT"


def checked_timeout(value, what: str) -> float:
    """``value`` as seconds: a finite number >= 0 (0 turns the watchdog off); anything else
    (nan, a negative or infinite number, text) would switch the guard off silently."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = math.nan
    if isinstance(value, bool) or not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{what} must be a number of seconds >= 0 (0 turns the hang watchdog off), "
                         f"got {value!r}")
    return seconds


def comm_timeout(environ=None) -> float:
    """The watchdog's limit from ``PORTABLE_BP_COMM_TIMEOUT`` (default 600 s), checked."""
    environ = os.environ if environ is None else environ
    value = environ.get(TIMEOUT_VARIABLE)
    if value is None or value.strip() == "":
        return DEFAULT_TIMEOUT
    return checked_timeout(value.strip(), TIMEOUT_VARIABLE)


class MPI(Communicator):
    """Every process started by ``mpiexec`` (``MPI.COMM_WORLD``, or the communicator
    ``world`` of mpi4py) trains the network together with the others.

    ``timeout``: seconds a collective may wait before the job is aborted (0 turns the
    watchdog off). ``cuda_aware``: hand GPU buffers to MPI directly (default: the
    ``PORTABLE_BP_MPI_CUDA_AWARE`` environment variable; else staging through the host)."""

    def __init__(self, world=None, *, timeout: float | None = None, cuda_aware: bool | None = None,
                 _mpi=None):
        self._mpi = _import_mpi() if _mpi is None else _mpi
        self.world = self._mpi.COMM_WORLD if world is None else world
        self.rank, self.size = self.world.Get_rank(), self.world.Get_size()
        if world is None:
            check_world(self.size, self._mpi.Get_library_version())
        self.local_rank = self._local_rank()
        timeout = comm_timeout() if timeout is None else checked_timeout(timeout, "timeout")
        if cuda_aware is None:
            cuda_aware = os.environ.get("PORTABLE_BP_MPI_CUDA_AWARE", "") not in ("", "0")
        self.timeout, self.cuda_aware = float(timeout), bool(cuda_aware)
        self._watchdog = Watchdog(self.timeout, self.abort) if self.size > 1 and self.timeout > 0 else None
        self._ballots = stopping.Ballots()

    def _local_rank(self) -> int:
        """This rank among those sharing its machine's memory (MPI-3's split by type)."""
        node = self.world.Split_type(self._mpi.COMM_TYPE_SHARED, key=self.rank)
        try:
            return node.Get_rank()
        finally:
            node.Free()

    def _call(self, what: str, fn, *args):
        """A blocking MPI call under the watchdog."""
        if self._watchdog is None:
            return fn(*args)
        with self._watchdog.waiting(what):
            return fn(*args)

    # -- the interface ------------------------------------------------------------------
    def allreduce(self, buffer, backend=None):
        """The sum of ``buffer``; then, when any rank has a pending signal, the same
        :class:`~portable_bp.stopping.Interrupted` on every rank (see the module docstring)."""
        if self.size == 1:
            return buffer
        mpi = self._mpi
        votes, request = None, None
        if self._ballots.due():
            votes = host_values(self._ballots.votes(self.rank, self.size))
            request = self.world.Iallreduce(mpi.IN_PLACE, votes, mpi.SUM)
        if self.cuda_aware and backend is not None and backend.is_gpu:
            backend.synchronize()  # MPI reads device memory outside the library's stream
            self._call("allreduce", self.world.Allreduce, mpi.IN_PLACE, buffer, mpi.SUM)
            out = buffer
        else:
            host = to_host(buffer, backend)
            self._call("allreduce", self.world.Allreduce, mpi.IN_PLACE, host, mpi.SUM)
            out = buffer if host is buffer else from_host(host, buffer, backend)
        if request is not None:
            self._call("allreduce", request.Wait)
            self._ballots.counted(votes)
        return out

    def agree_on_stop(self) -> None:
        """One sum of the ranks' pending signals alone (where no buffer is summed: the end
        of an NCCL epoch), raising as :meth:`allreduce` does."""
        if self.size > 1:
            votes = host_values(stopping.flags(self.rank, self.size))
            self._call("allreduce", self.world.Allreduce, self._mpi.IN_PLACE, votes, self._mpi.SUM)
            stopping.agree(votes)

    def broadcast_arrays(self, arrays, backend=None, root: int = 0) -> list:
        out = []
        for a in arrays:
            host = to_host(a, backend, copy=True)
            if self.size > 1:
                self._call("broadcast", self.world.Bcast, host, root)
            out.append(from_host(host, a, backend))
        return out

    def broadcast_object(self, obj, root: int = 0):
        if self.size == 1:
            return obj
        return self._call("broadcast", self.world.bcast, obj, root)

    def barrier(self) -> None:
        if self.size > 1:
            self._call("barrier", self.world.Barrier)

    def abort(self, message: str, code: int = 1, detail: str = "") -> None:
        """Print why (the line first: it is what must survive the job's end), then end
        every rank of the job (``MPI_Abort``)."""
        if self.size == 1:
            return
        sys.stderr.write(f"portable-bp: rank {self.rank} of {self.size}: error: {message}; "
                         f"aborting all {self.size} ranks\n{detail}")
        sys.stderr.flush()
        time.sleep(0.5)  # let the launcher forward the message before it ends the job
        self.world.Abort(code)
        os._exit(code)  # Abort does not return; should it, this process ends anyway

    def __repr__(self) -> str:
        return f"MPI(rank={self.rank}, size={self.size}, local_rank={self.local_rank})"
