"""What ``fit`` does with the other ranks outside the step: agree before training starts,
start from rank 0's state, read a checkpoint once, and never leave a rank waiting.

The rule behind every function here: a collective call must be reached by every rank, so
an error that one rank meets before a collective must become an error on every rank
(:func:`together`), and an error one rank meets during training, where the others are
already waiting in the next sum, must end the job (:func:`one_sided_errors_abort`).
Small host buffers (flags) come from :mod:`.staging`, the package's one host-side module.
"""

from __future__ import annotations

import builtins
import contextlib
import os
import traceback

from .. import stopping
from .staging import host_zeros

EVERY_RANK = "raised_on_every_rank"
"""The attribute set (True) on an error that every rank raises at the same point: the job
then ends on its own, with no abort."""


def on_every_rank(error: BaseException) -> BaseException:
    """``error``, marked as raised on every rank (see :data:`EVERY_RANK`)."""
    setattr(error, EVERY_RANK, True)
    return error


def _raise_everywhere(comm, error, failed: list[int]):
    """Raise ``error`` on the ranks that met it, and the same kind of error (its nearest
    builtin class), naming the first failing rank and the error's type, on the others."""
    first = failed[0]
    message = (_builtin_kind(error), type(error).__name__, str(error)) if comm.rank == first else None
    kind, name, text = comm.broadcast_object(message, root=first)
    if error is not None:
        raise on_every_rank(error)
    if kind == "KeyboardInterrupt":  # a rank interrupted for good (a second signal)
        kind_of = stopping.Terminated if name == "Terminated" else stopping.Interrupted
        raise on_every_rank(kind_of(f"rank {first} of {comm.size} was interrupted"))
    raise on_every_rank(getattr(builtins, kind)(f"rank {first} of {comm.size}: {name}: {text}"))


def _builtin_kind(error) -> str:
    """The name of the nearest builtin exception class of ``error`` (ValueError for a
    library's ValueError subclass): what the other ranks can raise without importing it."""
    for cls in type(error).__mro__:
        if getattr(builtins, cls.__name__, None) is cls and issubclass(cls, BaseException):
            return cls.__name__ if issubclass(cls, (Exception, KeyboardInterrupt)) else "RuntimeError"
    return "RuntimeError"


def together(comm, fn):
    """``fn()`` on every rank; when it raises on any rank (an interrupt or exit included),
    an error is raised on every rank (so that none goes on to a collective the others never
    reach, nor leaves them waiting in this one). A signal pending on any rank is honoured
    here too, on every rank (the flags' sum carries the ranks' votes)."""
    if comm.size == 1:
        return fn()
    result, error = None, None
    try:
        result = fn()
    except BaseException as exc:  # noqa: BLE001 - re-raised below, on every rank
        if getattr(exc, "agreed", False):  # already raised on every rank, at a sum inside fn
            raise
        error = exc
    flags = host_zeros(2 * comm.size)  # errors, then the ranks' pending signals
    flags[comm.rank] = error is not None
    flags[comm.size:] = stopping.flags(comm.rank, comm.size)
    flags = comm.allreduce(flags)
    failed = [r for r in range(comm.size) if flags[r]]
    if failed:
        _raise_everywhere(comm, error, failed)
    stopping.agree(list(flags[comm.size:]))
    return result


def first_difference(mine: dict, root: dict) -> str | None:
    """The first entry (in ``root``'s order) whose value differs, as "name: A (rank 0) vs
    B", or None when all agree."""
    for key in list(root) + [k for k in mine if k not in root]:
        if mine.get(key) != root.get(key):
            return f"{key}: {root.get(key)!r} on rank 0, {mine.get(key)!r} here"
    return None


def check_same(comm, what: str, values: dict) -> None:
    """A ValueError on every rank, naming the first entry that differs, when any rank's
    ``values`` (small picklable values: sizes, names, checksums) differ from rank 0's."""
    if comm.size == 1:
        return
    root = comm.broadcast_object(values)

    def compare():
        wrong = first_difference(values, root)
        if wrong:
            raise ValueError(f"rank {comm.rank}'s {what} differ from rank 0's: {wrong}. Every rank "
                             f"passes the same network, arguments and whole dataset (the same rows "
                             f"in the same order); each takes its own part of every global batch")
    together(comm, compare)


def is_collective(exc: BaseException, collective=()) -> bool:
    """Whether every rank raises ``exc`` at the same point: one of the ``collective``
    kinds, an agreed stop, an error :func:`together` raised everywhere, or an exit."""
    return (isinstance(exc, collective) or isinstance(exc, SystemExit) or getattr(exc, EVERY_RANK, False)
            or (isinstance(exc, stopping.Interrupted) and exc.agreed))


@contextlib.contextmanager
def one_sided_errors_abort(comm, collective=()):
    """Around whatever many ranks do together (checks, loading, training): an exception
    that only this rank raises (not :func:`is_collective`) ends the whole job through
    ``comm.abort``, after printing its traceback: the other ranks are waiting for this
    one in a sum and would wait forever. A signal is not such an exception: it is agreed
    at the next sum (:mod:`portable_bp.stopping`); an interrupt raised at once (a second
    Ctrl-C) is, with the exit status of that signal."""
    try:
        yield
    except BaseException as exc:
        if comm.size > 1 and not is_collective(exc, collective):
            comm.abort(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                       stopping.exit_status(exc) if isinstance(exc, KeyboardInterrupt) else 1,
                       detail=traceback.format_exc())
        raise


# -- the start state ----------------------------------------------------------------------
def broadcast_state(comm, backend, params, state, count: int, epoch: int, seed: int):
    """Rank 0's parameters, optimizer state (one dict of slot pairs per layer), step count,
    epoch and seed, on every rank: the ranks start equal and draw the same batch orders."""
    flat = [a for pair in params for a in pair]
    names = [list((layer or {}).keys()) for layer in state]
    flat += [a for layer, keys in zip(state, names) for k in keys for a in layer[k]]
    arrays = comm.broadcast_arrays(flat, backend=backend)
    count, epoch, seed = comm.broadcast_object((count, epoch, seed))
    n = 2 * len(params)
    new_params = [(arrays[i], arrays[i + 1]) for i in range(0, n, 2)]
    new_state: list = []
    at = n
    for layer, keys in zip(state, names):
        if layer is None:
            new_state.append(None)
            continue
        new_state.append({k: (arrays[at + 2 * i], arrays[at + 2 * i + 1]) for i, k in enumerate(keys)})
        at += 2 * len(keys)
    return new_params, new_state, count, epoch, seed


def read_on_root(comm, net, path):
    """``checkpoint.read_run(path, net)`` read by rank 0 alone (the file may exist only
    on its machine) and sent to every rank; None when rank 0 finds no file. An error
    reading it is raised on every rank."""
    from ..checkpoint import read_run

    saved, error, meta = None, None, None
    if comm.rank == 0:
        try:
            if os.path.exists(path):
                saved = read_run(path, net)
                meta = {k: v for k, v in saved.items() if k not in ("params", "slots")}
                meta["slot_names"] = None if saved["slots"] is None else list(saved["slots"])
        except Exception as exc:  # noqa: BLE001 - raised on every rank below
            error = exc
    status = comm.broadcast_object("error" if error is not None else "ok" if meta else "missing")
    if status == "error" or error is not None:
        _raise_everywhere(comm, error, [0])
    if status == "missing":
        return None
    meta = comm.broadcast_object(meta)
    return _received_run(comm, net, saved, meta)


def _received_run(comm, net, saved, meta) -> dict:
    """The checkpoint's arrays sent from rank 0 into arrays shaped like ``net``'s."""
    names = meta["slot_names"] or []
    if comm.rank == 0:
        flat = [a for pair in saved["params"] for a in pair] + [a for k in names for a in saved["slots"][k]]
    else:
        shapes = [tuple(a.shape) for pair in net.params for a in pair]
        xp, dev = net.xp, net.backend.device
        flat = [xp.zeros(s, dtype=net.array_dtype, device=dev) for s in shapes * (1 + len(names))]
    arrays = comm.broadcast_arrays(flat, backend=net.backend)
    n = 2 * net.n_layers
    run = dict(meta)
    run.pop("slot_names")
    run["params"] = [(arrays[i], arrays[i + 1]) for i in range(0, n, 2)]
    run["slots"] = None if meta["slot_names"] is None else {
        k: arrays[n * (1 + i):n * (2 + i)] for i, k in enumerate(names)}
    return run
