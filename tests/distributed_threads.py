"""A communicator whose ranks are threads of the test process: the data-parallel logic
(parts, sums, agreement, checkpoints, errors) tested for any world size without MPI.

The sum adds the ranks' buffers in rank order on the host (through the same staging
helpers MPI uses); every rank gets the same result, as from MPI.
"""

from __future__ import annotations

import threading

from portable_bp.distributed.base import Communicator
from portable_bp.distributed.staging import from_host, to_host


class Group:
    """What the threads of one world share: a barrier and one slot per rank."""

    def __init__(self, size: int, timeout: float = 120.0):
        self.size = size
        self.barrier = threading.Barrier(size, timeout=timeout)
        self.slots = [None] * size
        self.aborted: list[tuple[int, str, int]] = []

    def exchange(self, rank: int, value) -> list:
        self.slots[rank] = value
        self.barrier.wait()
        values = list(self.slots)
        self.barrier.wait()
        return values


class ThreadComm(Communicator):
    def __init__(self, group: Group, rank: int):
        self.group, self.rank, self.size = group, rank, group.size
        self.calls = {"allreduce": 0, "barrier": 0}

    def allreduce(self, buffer, backend=None):
        self.calls["allreduce"] += 1
        parts = self.group.exchange(self.rank, to_host(buffer, backend, copy=True))
        total = parts[0].copy()
        for p in parts[1:]:
            total += p
        return from_host(total, buffer, backend)

    def broadcast_arrays(self, arrays, backend=None, root=0):
        hosts = self.group.exchange(self.rank, [to_host(a, backend, copy=True) for a in arrays])
        return [from_host(h.copy(), a, backend) for h, a in zip(hosts[root], arrays)]

    def broadcast_object(self, obj, root=0):
        return self.group.exchange(self.rank, obj)[root]

    def barrier(self):
        self.calls["barrier"] += 1
        self.group.exchange(self.rank, None)

    def abort(self, message, code=1, detail=""):
        self.group.aborted.append((self.rank, message, code))
        self.group.barrier.abort()  # the others stop waiting (BrokenBarrierError)


def run_ranks(size: int, fn, group: Group | None = None):
    """``fn(comm)`` on ``size`` threads, one rank each: (results, exceptions) by rank."""
    group = Group(size) if group is None else group
    results, errors = [None] * size, [None] * size

    def target(rank):
        try:
            results[rank] = fn(ThreadComm(group, rank))
        except BaseException as exc:  # noqa: BLE001 - handed to the test; an error one
            errors[rank] = exc       # rank meets alone reaches the others through abort()

    threads = [threading.Thread(target=target, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def run_ok(size: int, fn) -> list:
    """:func:`run_ranks`, re-raising the first rank's exception."""
    results, errors = run_ranks(size, fn)
    for exc in errors:
        if exc is not None:
            raise exc
    return results
