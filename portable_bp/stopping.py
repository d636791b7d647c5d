"""Signals as data: SIGINT and SIGTERM become "stop after this step", and the exit statuses.

A cluster scheduler sends SIGTERM (Slurm, then SIGKILL after a grace period); a user
presses Ctrl-C. Raising an exception wherever the signal lands loses work in two ways:
with many ranks, the one that raises leaves the others waiting in a sum (so the job had
to be aborted), and after training a raise in the held-out evaluation or the final save
lost the model. So, while :func:`deferred` is active, the handler only *records* the
signal; it is honoured where stopping is safe:

* with many ranks, at the next sum over the ranks (``Communicator.allreduce``: every
  step, and each check before training): every rank learns there that some rank was
  signalled (:func:`agree`) and raises the same :class:`Interrupted` at the same step,
  so nobody waits and nothing is aborted;
* after training, when the command has written what it has (:func:`raise_pending`).

Outside :func:`deferred` (one process while it trains: the network goes back to the end
of the last completed epoch, see ``fit``) the handler raises at once, as Python's own
SIGINT handler does. A second signal while one is pending raises at once too: a user
who presses Ctrl-C twice means it.

The exit statuses of the ``portable-bp`` command are defined here, once: 0 done,
:data:`EXIT_FAILED` (training diverged, a check failed), :data:`EXIT_USAGE` (bad input, a file or
environment problem, memory), 128 + the signal's number for an interrupt (130 for
SIGINT, 143 for SIGTERM, as a shell reports a process killed by it).
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + int(signal.SIGINT)   # 130
EXIT_TERMINATED = 128 + int(signal.SIGTERM)   # 143
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT (Ctrl-C) honoured: training stops. ``agreed`` is True when every rank
    raised it at the same step (so no rank is left waiting)."""

    signum = signal.SIGINT
    status = EXIT_INTERRUPTED

    def __init__(self, *args, agreed: bool = False):
        super().__init__(*args)
        self.agreed = agreed


class Terminated(Interrupted):
    """SIGTERM honoured (a scheduler's "stop now"): training stops as on Ctrl-C."""

    signum = signal.SIGTERM
    status = EXIT_TERMINATED


def for_signal(signum: int, agreed: bool = False) -> Interrupted:
    """The exception that honours ``signum``: :class:`Terminated` for SIGTERM, else
    :class:`Interrupted`."""
    return (Terminated if signum == signal.SIGTERM else Interrupted)(agreed=agreed)


def exit_status(exc: BaseException) -> int:
    """The command's exit status for an exception that ends it (see the module docstring)."""
    if isinstance(exc, Interrupted):
        return exc.status
    if isinstance(exc, KeyboardInterrupt):  # Python's own handler, or a caller's raise
        return EXIT_INTERRUPTED
    if isinstance(exc, SystemExit):
        return EXIT_OK if exc.code is None else exc.code if isinstance(exc.code, int) else EXIT_FAILED
    if isinstance(exc, FloatingPointError):  # TrainingDiverged (named so: this module imports no trainer)
        return EXIT_FAILED
    return EXIT_USAGE


class _Requests:
    """The process's recorded signals: the first pending one, and how deep in
    :func:`deferred` the main thread is."""

    def __init__(self):
        self.pending: int | None = None
        self.deferring = 0


_requests = _Requests()


def _handler(signum, frame):
    """Record the first signal while deferring; raise otherwise (a second one included)."""
    if _requests.deferring and _requests.pending is None:
        _requests.pending = signum  # honoured at the next sum over the ranks, or after the writes
        return
    _requests.pending = None
    raise for_signal(signum)


def pending() -> int | None:
    """The signal recorded and not yet honoured, or None."""
    return _requests.pending


def clear() -> None:
    """Forget a recorded signal (a test's, or one a caller has dealt with itself)."""
    _requests.pending = None


def raise_pending() -> None:
    """Raise the recorded signal's :class:`Interrupted` (and forget it), if there is one."""
    signum = _requests.pending
    if signum is not None:
        _requests.pending = None
        raise for_signal(signum)


def flags(rank: int = 0, size: int = 1) -> list[float]:
    """This process's vote for a sum over the ``size`` ranks: 1 (SIGINT) or 2 (SIGTERM)
    pending in its own slot ``rank``, 0 elsewhere, so the sum says who was signalled."""
    votes = [0.0] * size
    signum = _requests.pending
    if signum is not None:
        votes[rank] = 2.0 if signum == signal.SIGTERM else 1.0
    return votes


def agree(summed) -> None:
    """After the ranks summed their :func:`flags`: raise the same agreed
    :class:`Interrupted` on every rank when any rank was signalled (SIGTERM wins: the
    scheduler's kill follows it), naming the ranks that were."""
    signalled = [r for r, v in enumerate(summed) if v]
    if not signalled:
        return
    _requests.pending = None
    signum = signal.SIGTERM if any(v >= 2 for v in summed) else signal.SIGINT
    ranks = ", ".join(map(str, signalled))
    error = for_signal(signum, agreed=True)
    error.args = (f"{signal.Signals(signum).name} to rank{'s' if len(signalled) > 1 else ''} {ranks} "
                  f"of {len(summed)}",)
    raise error


class Ballots:
    """When a communicator's sums carry the ranks' :func:`flags` (a vote is a second, tiny
    sum beside the buffer's: cheap, not free): at the first sum, then every ``interval``
    sums, an interval rank 0 proposes at each vote (its ``flags`` slot ``size``: the sum
    then holds rank 0's number on every rank) so that votes come about every ``period``
    seconds: every step for a step of 0.1 s or more, every thousandth for a step of 0.1 ms.
    Every rank makes the same sums in the same order, so every rank votes at the same ones."""

    def __init__(self, period: float = 0.1, most: int = 1000):
        self.period, self.most = period, most
        self._left, self._calls, self._since = 1, 0, time.monotonic()

    def due(self) -> bool:
        """Called once per sum: whether this one carries a vote."""
        self._left -= 1
        self._calls += 1
        return self._left <= 0

    def votes(self, rank: int, size: int) -> list[float]:
        """This rank's ballot: :func:`flags` and, from rank 0, the next interval."""
        per_sum = (time.monotonic() - self._since) / max(self._calls, 1)
        proposal = max(1, min(self.most, int(self.period / per_sum))) if per_sum > 0 else self.most
        return flags(rank, size) + [float(proposal) if rank == 0 else 0.0]

    def counted(self, summed) -> None:
        """After the sum: the next vote's interval, then :func:`agree` on the signals."""
        self._left, self._calls, self._since = max(1, int(summed[-1])), 0, time.monotonic()
        agree(summed[:-1])


@contextlib.contextmanager
def handled():
    """SIGINT and SIGTERM go to this module's handler meanwhile (main thread only: Python
    runs handlers there; elsewhere this does nothing), except one the process was started
    ignoring (a background job's SIGINT stays ignored, as for any command). The previous
    handlers come back after, and what was recorded and not honoured is forgotten."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in SIGNALS if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _requests.pending = None


@contextlib.contextmanager
def deferred(active: bool = True):
    """Meanwhile (when ``active``) a first SIGINT or SIGTERM is recorded, not raised."""
    if not active:
        yield
        return
    _requests.deferring += 1
    try:
        yield
    finally:
        _requests.deferring -= 1


@contextlib.contextmanager
def immediate(active: bool = True):
    """Meanwhile (when ``active``) a signal raises where it lands, even inside
    :func:`deferred` (one process's training: ``fit`` then leaves the network at the last
    completed epoch); one recorded before is raised on entry."""
    if not active:
        yield
        return
    saved, _requests.deferring = _requests.deferring, 0
    try:
        raise_pending()
        yield
    finally:
        _requests.deferring = saved


@contextlib.contextmanager
def agreed_between_ranks(active: bool):
    """Around what many ranks do together (``fit`` with a communicator of several): a
    signal is recorded and honoured at the next sum, on every rank. Where SIGINT still has
    Python's own handler (a script run under ``mpiexec``), this module's takes its place
    meanwhile, so that Ctrl-C raises the same KeyboardInterrupt (:class:`Interrupted`) on
    every rank at one step instead of on one rank at any point; other handlers (the
    caller's, or SIGTERM's default: the process ends) are left as they are."""
    if not active:
        yield
        return
    previous = None
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
        previous = signal.signal(signal.SIGINT, _handler)
    try:
        with deferred():
            yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
