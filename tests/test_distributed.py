"""Data-parallel training with ranks as threads of this process (``distributed_threads``):
what many ranks compute equals what one process computes, and the trainer's agreements
(start state, checks, stop, checkpoints, resume, errors) hold for any world size.

The same cases run under a real ``mpiexec`` in ``test_distributed_mpi.py``.
"""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from distributed_threads import Group, ThreadComm, run_ok, run_ranks
from distributed_worker import data, network, run_case

import portable_bp as pbp
from portable_bp.distributed import Local
from portable_bp.train.data_parallel import DataParallel, DataParallelCompiled, part
from portable_bp.train.executors import Eager, executor_for

RTOL = 1e-12  # float64: many ranks against one process

EQUAL_CASES = ["sgd", "momentum", "adam", "unshuffled", "weights", "empty_part", "batch_1", "full_batch"]


def assert_equal_to_rounding(result, expected, rtol=RTOL):
    for a, b in zip(result["params"], expected["params"]):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())
    np.testing.assert_allclose(result["loss"], expected["loss"], rtol=rtol)
    assert result["epochs"] == expected["epochs"]


def assert_bit_identical(result, expected):
    assert all(np.array_equal(a, b) for a, b in zip(result["params"], expected["params"]))
    assert np.array_equal(result["loss"], expected["loss"])
    assert result["epochs"] == expected["epochs"]


@pytest.mark.parametrize("n", [0, 1, 2, 5, 7, 16])
@pytest.mark.parametrize("parts", [1, 2, 3, 4])
def test_parts_are_numpy_array_split(n, parts):
    rows = np.arange(10, 10 + n)
    expected = [(int(p[0]), int(p[-1]) + 1) if len(p) else None for p in np.array_split(rows, parts)]
    for i, e in enumerate(expected):
        lo, hi = part(10, 10 + n, i, parts)
        assert (lo, hi) == e or (e is None and lo == hi)


@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("case", EQUAL_CASES)
def test_ranks_equal_one_process(case, size):
    """sgd, momentum and adam with shuffling, uneven parts, an empty part, weights: every
    rank ends with one process's parameters and losses (float64, 1e-12), all ranks alike."""
    alone = run_case(case)
    results = run_ok(size, lambda comm: run_case(case, comm))
    for r in results:
        assert_equal_to_rounding(r, alone)
        assert_bit_identical(r, results[0])


@pytest.mark.parametrize("case", ["det2", "det4", "det4_f64"])
def test_deterministic_is_bit_identical_for_any_world_size(case):
    """K fixed pieces, summed in their order: the same bits on 1, 2, 3 (not dividing K)
    and 4 ranks (float32 too, with and without weights)."""
    alone = run_case(case)
    for size in (2, 3, 4):
        for r in run_ok(size, lambda comm: run_case(case, comm)):
            assert_bit_identical(r, alone)


def test_deterministic_equals_the_plain_sum_to_rounding():
    assert_equal_to_rounding(run_case("det4_f64"), run_case("det4_f64", deterministic=None))


def test_one_process_keeps_its_own_executor():
    """Local (the default) runs the backend's executor: today's behaviour, bit for bit."""
    net = network()
    assert type(executor_for(net, None, comm=Local())) is Eager
    assert_bit_identical(run_case("adam", Local()), run_case("adam"))
    assert type(executor_for(net, None, comm=Local(), deterministic=2)) is DataParallel


@pytest.mark.parametrize("spec", ["torch", "array_api_strict"])
def test_other_eager_backends(spec):
    """PyTorch CPU tensors summed where they lie, array-api-strict through host copies;
    weights, and an empty part (21 rows in batches of 5)."""
    pytest.importorskip(spec)
    cases = {"c": (dict(backend=spec), dict(optimizer="momentum", batch_size=5, epochs=2), dict(n=21), True)}
    alone = run_case("c", cases=cases)
    for r in run_ok(2, lambda comm: run_case("c", comm, cases=cases)):
        assert_equal_to_rounding(r, alone)


def test_jax_runs_the_gradient_and_update_halves_compiled():
    pytest.importorskip("jax")
    cases = {"j": (dict(backend="jax"), dict(optimizer="adam", lr=0.01, batch_size=16, epochs=1),
                   dict(n=96), False)}
    alone = run_case("j", cases=cases)

    def fit(comm):
        net = network(backend="jax")
        executor = executor_for(net, __import__("portable_bp").optim.get_optimizer("adam", 0.01), comm=comm)
        assert isinstance(executor, DataParallelCompiled)
        kinds = {key[0] for key in net.compiled}
        assert {"data-parallel-gradients", "data-parallel-update"} <= kinds
        return run_case("j", comm, cases=cases)

    for r in run_ok(2, fit):
        assert_equal_to_rounding(r, alone)


def test_stop_is_rank_0s_decision_and_early_stopping_matches():
    """Rank 1's callback asks to stop after epoch 0 and is not heeded; rank 0's stop (or
    EarlyStopping's, on the same logs) ends every rank at the same epoch."""
    alone = run_case("early_stop")
    results = run_ok(2, lambda comm: run_case("early_stop", comm))
    assert 1 < alone["epochs"] <= 6
    for r in results:
        assert_equal_to_rounding(r, alone)


def test_divergence_is_raised_on_every_rank_at_once():
    alone = run_case("diverge")
    assert "diverged" in alone["error"]
    for r in run_ok(2, lambda comm: run_case("diverge", comm)):
        assert r["error"] == alone["error"]
        assert_equal_to_rounding(r, alone)


def test_parameters_start_as_rank_0s():
    X, y, _ = data()

    def fit(comm):
        net = network(seed=10 + comm.rank)  # different initial weights and batch orders
        net.fit(X, y, epochs=1, batch_size=16, comm=comm)
        return [np.array(a) for pair in net.params for a in pair], net.seed

    alone = network(seed=10)
    alone.fit(X, y, epochs=1, batch_size=16)
    (p0, s0), (p1, s1) = run_ok(2, fit)
    assert s0 == s1 == 10
    for a, b, c in zip(p0, p1, [a for pair in alone.params for a in pair]):
        assert np.array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=RTOL, atol=RTOL)


def test_rank_0_alone_writes_checkpoints_then_every_rank_waits(tmp_path):
    X, y, _ = data()
    path = tmp_path / "ck.npz"

    def fit(comm):  # rank 1's path is never checked nor written: only rank 0's counts
        ck = path if comm.rank == 0 else tmp_path / "missing-folder" / "ck.npz"
        network().fit(X, y, epochs=3, batch_size=16, checkpoint=ck, comm=comm)
        return pbp.load(path).epochs_trained  # every rank waited for the last epoch's file

    assert run_ok(2, fit) == [3, 3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]
    with np.load(path) as npz:
        meta = json.loads(str(npz["meta"]))
    assert meta["run"] == {"world_size": 2, "global_batch": 16, "deterministic": None}
    assert meta["epochs_trained"] == 3


@pytest.mark.parametrize("first,then", [(2, 1), (1, 3)])
def test_resume_on_another_world_size(tmp_path, first, then):
    """Two epochs on ``first`` ranks, two more resumed on ``then`` ranks: four epochs of
    one process (parameters, optimizer state, step count and batch order carry over)."""
    ck = str(tmp_path / "ck.npz")
    uninterrupted = run_case("adam", epochs=4)

    def world(size, fn):
        return [fn(None)] if size == 1 else run_ok(size, fn)

    world(first, lambda comm: run_case("adam", comm, epochs=2, checkpoint=ck))
    for r in world(then, lambda comm: run_case("adam", comm, epochs=4, checkpoint=ck, resume=True)):
        assert_equal_to_rounding(r, uninterrupted)  # the history: every epoch, the checkpoint's too


def test_resume_is_read_by_rank_0_and_its_errors_raised_everywhere(tmp_path):
    ck = tmp_path / "ck.npz"
    run_case("adam", epochs=2, checkpoint=str(ck))
    elsewhere = str(tmp_path / "not-on-this-machine.npz")

    def resume(comm):
        return run_case("adam", comm, epochs=3, checkpoint=str(ck) if comm.rank == 0 else elsewhere,
                        resume=True)

    r0, r1 = run_ok(2, resume)
    assert r0["epochs"] == r1["epochs"] == 3
    assert_bit_identical(r1, r0)
    ck.write_bytes(b"PK\x03\x04 not a zip")
    _, errors = run_ranks(2, resume)
    assert all(isinstance(e, ValueError) for e in errors)
    assert "corrupt" in str(errors[0]) and str(errors[1]).startswith("rank 0 of 2: ")


def test_a_check_failing_on_one_rank_fails_on_every_rank():
    X, y, _ = data()

    def fit(comm):
        network().fit(X, y, epochs=1, batch_size=0 if comm.rank == 1 else 16, comm=comm)

    _, errors = run_ranks(2, fit)
    assert isinstance(errors[1], ValueError) and "batch_size" in str(errors[1])
    assert isinstance(errors[0], ValueError) and str(errors[0]).startswith("rank 1 of 2: ValueError")


def _mismatch(what):
    """(network kwargs, fit kwargs, X, y, w) of rank 1 when it differs from rank 0 in ``what``."""
    X, y, w = data()
    net, fit = {}, {}
    if what == "hidden sizes":
        net = {"sizes": [5, 9, 3]}
    elif what == "dtype":
        net = {"dtype": "float32"}
    elif what == "optimizer":
        fit = {"optimizer": "adam"}
    elif what == "batch size":
        fit = {"batch_size": 17}
    elif what == "l2":
        fit = {"l2": 1e-4}
    elif what == "dropout":
        net = {"dropout": 0.5}
    elif what == "labels":
        y = y.copy()
        y[0] = (y[0] + 1) % 3
    elif what == "row order":
        order = np.roll(np.arange(len(y)), 1)
        X, y = X[order], y[order]
    elif what == "weights":
        w = w * 1.000001
    return net, fit, X, y, w


@pytest.mark.parametrize("what,named", [
    ("hidden sizes", "network sizes: [5, 8, 3] on rank 0, [5, 9, 3] here"),
    ("dtype", "network dtype: 'float64' on rank 0, 'float32' here"),
    ("optimizer", "optimizer: "),
    ("batch size", "batch_size: 16 on rank 0, 17 here"),
    ("l2", "transforms: "),
    ("dropout", "network dropout: [0.0] on rank 0, [0.5] here"),
    ("labels", "Z checksum"),
    ("row order", "X checksum"),
    ("weights", "sample_weight checksum"),
])
def test_ranks_that_differ_are_refused_on_every_rank_naming_the_first_difference(what, named):
    """Settings, architecture (a different size once made rank 1 fail in a broadcast, with
    MPI's "Message truncated", and rank 0 wait for its watchdog) and data: labels that
    differ in one row, the same rows in another order, weights off by 1e-6 (a sum over X
    and Z's shape let these train silently). Refused before any step, on every rank."""
    X0, y0, w0 = data()

    def fit(comm):
        net_kw, fit_kw, X, y, w = _mismatch(what) if comm.rank == 1 else ({}, {}, X0, y0, w0)
        sizes = net_kw.pop("sizes", [5, 8, 3])
        net = pbp.Network(sizes, activation="tanh", loss="cross_entropy", seed=1,
                          **{"dtype": "float64", **net_kw})
        net.fit(X, y, sample_weight=w, **{"epochs": 1, "batch_size": 16, **fit_kw}, comm=comm)

    group = Group(2, timeout=20)
    _, errors = run_ranks(2, fit, group)
    assert group.aborted == []
    assert all(isinstance(e, ValueError) for e in errors), errors
    assert "rank 1's network, data or settings differ from rank 0's: " + named in str(errors[1])
    assert str(errors[0]).startswith("rank 1 of 2: ValueError: rank 1's network, data or settings")


def test_another_seed_on_a_rank_is_not_a_difference():
    """Parameters and the batch order's seed start as rank 0's: ranks that drew other
    initial parameters (seed=None) train as one process."""
    X, y, _ = data()

    def fit(comm):
        net = network(seed=1 if comm.rank == 0 else 99)
        net.fit(X, y, epochs=1, batch_size=16, comm=comm)
        return net.params[0][0]

    W = run_ok(2, fit)
    np.testing.assert_array_equal(W[0], W[1])


def test_a_checkpoint_that_fails_on_rank_0_is_an_error_on_every_rank(tmp_path, monkeypatch):
    """A full disk under rank 0's checkpoint: the error, naming the file, on every rank
    (no abort), with both networks at the epoch that completed, so the command can still
    write its --save."""
    import errno

    from portable_bp import checkpoint

    X, y, _ = data()
    real = checkpoint.save
    calls = []

    def full_disk(net, path, run=None, **record):  # record: the history and data it keeps
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        real(net, path, run, **record)

    monkeypatch.setattr(checkpoint, "save", full_disk)

    def fit(comm):
        net = network()
        try:
            net.fit(X, y, epochs=4, batch_size=16, checkpoint=tmp_path / "ck.npz", comm=comm)
        except OSError as exc:
            return net.epochs_trained, exc
        return net.epochs_trained, None

    group = Group(2, timeout=20)
    results, errors = run_ranks(2, fit, group)
    assert errors == [None, None] and group.aborted == []
    (e0, err0), (e1, err1) = results
    assert e0 == e1 == 2
    assert err0.filename == str(tmp_path / "ck.npz") and "No space left" in str(err0)
    assert str(err1) == f"rank 0 of 2: OSError: {err0}"


def test_an_error_on_one_rank_aborts_the_job():
    """The other ranks wait for this one in the next sum: the job ends (MPI_Abort; here
    the threads' barrier breaks) with the error and its rank, instead of hanging."""
    X, y, _ = data()

    def fit(comm):
        def fail(net, epoch, logs):
            if comm.rank == 1 and epoch == 1:
                raise RuntimeError("on purpose")
        network().fit(X, y, epochs=5, batch_size=16, callbacks=[fail], comm=comm)

    group = Group(2)
    _, errors = run_ranks(2, fit, group)
    assert isinstance(errors[1], RuntimeError)
    assert isinstance(errors[0], threading.BrokenBarrierError)  # its wait was broken off
    assert group.aborted[0] == (1, "RuntimeError: on purpose", 1)  # the first to abort


@pytest.mark.parametrize("exc,code", [(KeyboardInterrupt(), 130), (MemoryError("big"), 1)])
def test_one_sided_errors_abort_with_the_clis_exit_status(exc, code):
    from portable_bp.distributed.sync import one_sided_errors_abort

    group = Group(2)
    comm = ThreadComm(group, 1)
    with pytest.raises(type(exc)):
        with one_sided_errors_abort(comm, collective=(ValueError,)):
            raise exc
    with pytest.raises(ValueError):
        with one_sided_errors_abort(comm, collective=(ValueError,)):
            raise ValueError("on every rank")
    assert [(r, c) for r, _, c in group.aborted] == [(1, code)]


def test_a_divergence_does_not_abort():
    group = Group(2)
    results, errors = run_ranks(2, lambda comm: run_case("diverge", comm), group)
    assert errors == [None, None] and group.aborted == []
