"""The communicator interface, with the answers of a single process as its defaults.

Everything the trainer asks of the other processes goes through these few methods, so a
new transport (MPI, NCCL, a test's threads) only implements them; the step, the Ops and
the optimizers never see a communicator.
"""

from __future__ import annotations


class Communicator:
    """``size`` processes training one network; this one is ``rank`` (0 prints, shows
    progress and writes checkpoints) and ``local_rank`` on its machine (which GPU it uses).

    The defaults are those of one process: every collective is the identity."""

    rank, size, local_rank = 0, 1, 0
    #: with one rank, fit runs the backend's own executor, as without a communicator; a
    #: transport whose single-rank path is worth running (NCCL) says False
    alone_runs_locally = True

    def allreduce(self, buffer, backend=None):
        """The element-wise sum of ``buffer`` (a flat array) over every rank, in place where
        the buffer's memory allows; always use the returned array. ``backend`` (the
        network's) moves a buffer that is not a host NumPy array to the host and back."""
        return buffer

    def broadcast_arrays(self, arrays, backend=None, root: int = 0) -> list:
        """New arrays holding ``root``'s values of ``arrays`` (same shapes on every rank);
        the given arrays are never written into."""
        return list(arrays)

    def broadcast_object(self, obj, root: int = 0):
        """``root``'s ``obj`` (a small picklable Python value) on every rank."""
        return obj

    def agree(self, flag: bool) -> bool:
        """Rank 0's decision on every rank (a callback's stop), so that all stop together."""
        return bool(self.broadcast_object(bool(flag)))

    def barrier(self) -> None:
        """Return when every rank has called it (after rank 0 wrote a checkpoint)."""

    def wait(self) -> None:
        """Return when this rank's queued communication is done (NCCL runs on a stream);
        a communicator that waits with a deadline turns a dead peer into an error here."""

    def abort(self, message: str, code: int = 1, detail: str = "") -> None:
        """End every rank (the others may be waiting for this one in a collective), after
        printing ``message`` and ``detail`` (a traceback). One process has nobody waiting:
        nothing to do, the caller's exception propagates."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"


class Local(Communicator):
    """One process: nothing to communicate (``fit``'s default)."""

    def __repr__(self) -> str:
        return "Local()"
