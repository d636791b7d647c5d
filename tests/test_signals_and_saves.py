"""The saves that must happen, in one process: a signal after training (during the
held-out evaluation, during the final save) still writes the model; the exit statuses and
the signal handling of :mod:`portable_bp.stopping`; a full disk under ``--checkpoint``
names the file and still writes ``--save``; paths that are pipes or devices are refused
before the first step; memory errors are one line naming the array and the bytes;
big-endian checkpoints load; ``Network(params=...)`` owns copies; the watchdog's
environment variable is checked."""

from __future__ import annotations

import errno
import os
import signal

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, full_disk, run_cli
from train_helpers import classification

import portable_bp as pbp
from portable_bp import stopping

TRAIN = ["train", "--dataset", "blobs", "--hidden", "16", "--backend", "numpy", "--quiet", "--epochs", "3"]

SIGNAL_IN = {
    # the held-out evaluation after the last epoch
    "evaluation": """
import os, signal
from portable_bp import cli_train
_metrics = cli_train.held_out_metrics
def _signalled(net, data):
    os.kill(os.getpid(), signal.SIGTERM)
    return _metrics(net, data)
cli_train.held_out_metrics = _signalled
""",
    # the final save, while the file is being written
    "save": """
import os, signal
from portable_bp import checkpoint
_atomic = checkpoint.atomic_write
def _signalled(path, write):
    def written(f):
        os.kill(os.getpid(), signal.SIGTERM)
        write(f)
    _atomic(path, written)
checkpoint.atomic_write = _signalled
""",
}


@pytest.mark.parametrize("window", sorted(SIGNAL_IN))
def test_sigterm_after_training_still_writes_the_model(tmp_path, window):
    """SIGTERM in the held-out evaluation or in the final save: the model is written (the
    save completes: the new file, never half of one), then exit 143. Before: 'terminated'
    and no model (the handler covered only fit)."""
    (tmp_path / "m.npz").write_bytes(b"an older file")
    r = run_cli(*TRAIN, "--save", "m.npz", cwd=tmp_path, prelude=SIGNAL_IN[window])
    assert r.returncode == 143, (r.stdout, r.stderr)
    assert r.stderr.strip().splitlines()[-1] == "portable-bp: terminated" and "Traceback" not in r.stderr
    assert "saved model to m.npz (epoch 3;" in r.stdout
    assert pbp.load(tmp_path / "m.npz").epochs_trained == 3
    assert sorted(os.listdir(tmp_path)) == ["m.npz"]  # no temporary file left


# -- the signal handling itself ------------------------------------------------------
@pytest.fixture
def sigint_as_from_a_terminal():
    """SIGINT raising KeyboardInterrupt, as in a process started from a terminal: a test run
    started as a background job (``python -m pytest &``) inherits SIGINT ignored, which
    stopping.handled rightly leaves ignored (see the test with SIG_IGN below)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.usefixtures("sigint_as_from_a_terminal")
def test_a_deferred_signal_is_recorded_and_a_second_one_raises():
    with stopping.handled():
        with stopping.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            assert stopping.pending() == signal.SIGTERM  # recorded, not raised
            with pytest.raises(stopping.Interrupted):  # Ctrl-C twice: the user means it
                os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(stopping.Terminated) as raised:  # not deferred: raised where it lands
            os.kill(os.getpid(), signal.SIGTERM)
        assert not raised.value.agreed
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_agreed_votes_raise_the_same_interrupt_and_sigterm_wins():
    with stopping.handled():
        assert stopping.flags(1, 3) == [0.0, 0.0, 0.0]
        stopping.agree([0.0, 0.0])  # nobody signalled: nothing happens
        with pytest.raises(stopping.Terminated) as raised:
            stopping.agree([1.0, 2.0, 0.0])
        assert raised.value.agreed and str(raised.value) == "SIGTERM to ranks 0, 1 of 3"
        with pytest.raises(stopping.Interrupted) as raised:
            stopping.agree([0.0, 1.0])
        assert type(raised.value) is stopping.Interrupted and str(raised.value) == "SIGINT to rank 1 of 2"
        with stopping.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            assert stopping.flags(1, 3) == [0.0, 2.0, 0.0]
            stopping.clear()


@pytest.mark.parametrize("exc,status", [
    (stopping.Terminated(), 143), (stopping.Interrupted(), 130), (KeyboardInterrupt(), 130),
    (pbp.train.TrainingDiverged("x"), 1), (ValueError("x"), 2), (MemoryError("x"), 2), (OSError("x"), 2),
])
def test_the_exit_statuses_are_defined_once(exc, status):
    assert stopping.exit_status(exc) == status


# -- a full disk ---------------------------------------------------------------------
def test_a_write_that_fills_the_disk_names_the_file(tmp_path):
    """``[Errno 28] No space left on device`` named no file: the save now names it."""
    from portable_bp._safe_io import atomic_write

    def full(f):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as raised:
        atomic_write(tmp_path / "ck.npz", full)
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == str(tmp_path / "ck.npz")
    assert os.listdir(tmp_path) == []


@pytest.fixture
def full(tmp_path):
    with full_disk(tmp_path / "full") as folder:
        yield folder


def test_checkpoint_on_a_full_disk_names_the_file_and_still_writes_save(tmp_path, full):
    """Before: '[Errno 28] No space left on device', exit 2, and --save never written."""
    ck = full / "ck.npz"
    r = run_cli(*TRAIN, "--checkpoint", str(ck), "--save", "m.npz", cwd=tmp_path)
    line = assert_one_line_error(r, "No space left on device")
    assert str(ck) in line
    assert pbp.load(tmp_path / "m.npz").epochs_trained == 1  # the epoch the checkpoint followed
    assert "saved model to m.npz (epoch 1;" in r.stdout


# -- paths that are not files ---------------------------------------------------------
@pytest.fixture
def fifo(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes here")
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("where", ["fifo", "/dev/null"])
def test_fit_refuses_a_pipe_or_device_checkpoint_before_the_first_step(fifo, where):
    """Before: accepted by the checks, refused after epoch 1."""
    path = fifo if where == "fifo" else "/dev/null"
    X, y = classification(12)
    net = pbp.Network([3, 4, 3], loss="cross_entropy", dtype="float64", seed=0)
    before = [np.array(W) for W, _ in net.params]
    with pytest.raises(ValueError, match="not a regular file"):
        net.fit(X, y, epochs=2, checkpoint=path)
    assert net.epochs_trained == 0 and all(np.array_equal(a, W) for a, (W, _) in zip(before, net.params))


@pytest.mark.parametrize("flag", ["--save", "--checkpoint", "--plot"])
def test_the_command_refuses_a_pipe_for_any_output_before_training(tmp_path, fifo, flag):
    r = run_cli(*TRAIN, flag, str(fifo), cwd=tmp_path)
    assert_one_line_error(r, flag, "not a regular file")
    assert r.stdout == ""


# -- memory ---------------------------------------------------------------------------
def test_a_network_larger_than_the_machine_is_a_memory_error_naming_the_array():
    """Before: a 31-38 line _ArrayMemoryError traceback from inside NumPy (or the machine
    thrashing): now refused before anything is allocated."""
    with pytest.raises(MemoryError, match=r"W1 \(1000000 x 1000000, float32\).*4,000,000,000,000 bytes"):
        pbp.Network([4, 1000000, 1000000, 3])


def test_the_command_reports_memory_errors_in_one_line(tmp_path):
    r = run_cli("train", "--dataset", "xor", "--hidden", "1000000", "1000000", "--epochs", "1", cwd=tmp_path)
    assert_one_line_error(r, "W1 (1000000 x 1000000, float32)", "4,000,000,000,000 bytes")


def test_data_too_large_to_load_is_one_line_naming_the_file(tmp_path):
    """NumPy's own MemoryError while reading the data (a table of millions of columns),
    named: exit 2, no traceback."""
    prelude = ("import numpy as np\nfrom portable_bp import cli_data\n"
               "cli_data.load_source = lambda args, datasets: np.empty((10**7, 10**7))\n")
    r = run_cli("train", "--data", "wide.csv", "--epochs", "1", cwd=tmp_path, prelude=prelude)
    assert_one_line_error(r, "loading wide.csv: Unable to allocate")


# -- big-endian checkpoints -----------------------------------------------------------
def test_a_big_endian_checkpoint_loads_and_resumes(tmp_path):
    """What np.savez writes on a big-endian machine ('>f4'): refused before."""
    X, y = classification(12)
    net = pbp.Network([3, 4, 3], loss="cross_entropy", seed=0)
    net.fit(X, y, epochs=2, optimizer="adam", batch_size=4)
    net.save(tmp_path / "little.npz")
    with np.load(tmp_path / "little.npz") as npz:
        swapped = {k: (npz[k] if k == "meta" else npz[k].astype(npz[k].dtype.newbyteorder(">")))
                   for k in npz.files}
    assert swapped["W0"].dtype.str == ">f4"
    np.savez(tmp_path / "big.npz", **swapped)
    loaded = pbp.load(tmp_path / "big.npz")
    for (Wa, ba), (Wb, bb) in zip(loaded.params, net.params):
        np.testing.assert_array_equal(Wa, Wb)
        np.testing.assert_array_equal(ba, bb)
    again = pbp.Network([3, 4, 3], loss="cross_entropy", seed=0)
    assert again.fit(X, y, epochs=3, checkpoint=tmp_path / "big.npz", resume=True, batch_size=4).epochs == [2]


# -- the caller's arrays ---------------------------------------------------------------
def test_a_network_given_params_owns_copies():
    """Before: fit trained inside the caller's W0, and a read-only W0 failed at the first
    step with NumPy's 'output array is read-only'."""
    rng = np.random.default_rng(0)
    W0, b0 = rng.standard_normal((5, 3)).astype(np.float32), np.zeros(5, np.float32)
    W1, b1 = rng.standard_normal((3, 5)).astype(np.float32), np.zeros(3, np.float32)
    W1.flags.writeable = False
    kept = [a.copy() for a in (W0, b0, W1, b1)]
    net = pbp.Network([3, 5, 3], loss="cross_entropy", params=[(W0, b0), (W1, b1)])
    X, y = classification(12)
    net.fit(X, y, epochs=2, optimizer="momentum", batch_size=4)
    for given, before in zip((W0, b0, W1, b1), kept):
        np.testing.assert_array_equal(given, before)
    assert not np.array_equal(net.params[0][0], W0)


# -- PORTABLE_BP_COMM_TIMEOUT ----------------------------------------------------------
@pytest.mark.parametrize("value", ["nan", "-1", "abc", "inf", "-0.5"])
def test_the_watchdogs_variable_is_refused_naming_it(monkeypatch, value):
    """nan or a negative value switched the hang watchdog off; 'abc' said only "could not
    convert string to float"."""
    from portable_bp.distributed.mpi import comm_timeout

    with pytest.raises(ValueError, match=f"PORTABLE_BP_COMM_TIMEOUT must be a number of seconds >= 0.*{value!r}"):
        comm_timeout({"PORTABLE_BP_COMM_TIMEOUT": value})


@pytest.mark.parametrize("value,seconds", [("0", 0.0), ("2.5", 2.5), ("", 600.0), (None, 600.0)])
def test_the_watchdogs_variable_accepts_seconds(value, seconds):
    from portable_bp.distributed.mpi import comm_timeout

    assert comm_timeout({} if value is None else {"PORTABLE_BP_COMM_TIMEOUT": value}) == seconds


def test_mpi_reads_the_checked_variable(monkeypatch):
    """The communicator itself refuses it (``fit(comm=MPI())`` and the command)."""
    from test_distributed_units import FAKE_MPI, FakeWorld

    from portable_bp.distributed import MPI

    monkeypatch.setenv("PORTABLE_BP_COMM_TIMEOUT", "nan")
    with pytest.raises(ValueError, match="PORTABLE_BP_COMM_TIMEOUT"):
        MPI(FakeWorld(), _mpi=FAKE_MPI)
    with pytest.raises(ValueError, match="timeout must be"):
        MPI(FakeWorld(), timeout=-1, _mpi=FAKE_MPI)


@pytest.mark.usefixtures("sigint_as_from_a_terminal")
def test_one_process_training_stops_at_once_even_when_writes_are_deferred():
    """The command defers signals from training on, but one process's training is stopped
    where the signal lands (fit then keeps the last completed epoch); one recorded just
    before training starts is raised as it starts."""
    with stopping.handled(), stopping.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(stopping.Terminated):
            with stopping.immediate():
                pass
        with stopping.immediate(), pytest.raises(stopping.Interrupted):
            os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # deferred again
        assert stopping.pending() == signal.SIGINT


def test_ballots_vote_at_the_first_sum_then_at_rank_0s_interval():
    """Every rank votes at the same sums: the first, then every k-th, k being rank 0's
    proposal (about 0.1 s of sums, 1 to 1000), carried in the vote itself."""
    ballots = stopping.Ballots(period=0.1, most=1000)
    assert ballots.due()
    ballot = ballots.votes(0, 2)
    assert ballot[:2] == [0.0, 0.0] and 1 <= ballot[2] <= 1000
    assert stopping.Ballots().votes(1, 2)[2] == 0.0  # only rank 0 proposes
    ballots.counted([0.0, 0.0, 3.0])
    assert [ballots.due() for _ in range(3)] == [False, False, True]
    slow = stopping.Ballots(period=0.0)  # sums slower than the period: a vote at every one
    slow.due()
    assert slow.votes(0, 1)[1] == 1.0


def test_mpi_sums_carry_a_signal_to_every_rank_as_one_agreed_stop():
    """A SIGTERM pending on this rank (rank 1 of 2): the sum completes, then the same
    agreed Terminated is raised, naming the rank (the fake world doubles every sum)."""
    from test_distributed_units import FAKE_MPI, FakeWorld

    from portable_bp.distributed import MPI

    comm = MPI(FakeWorld(rank=1, size=2, local_rank=1), timeout=0, _mpi=FAKE_MPI)
    buf = np.ones(3)
    with stopping.handled(), stopping.deferred():
        assert comm.allreduce(buf) is buf  # nothing pending: a plain sum (rank 0 of the fake
        # world proposes 0, so the next sum votes again)
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(stopping.Terminated) as raised:
            comm.allreduce(buf)
        assert raised.value.agreed and str(raised.value) == "SIGTERM to rank 1 of 2"
        assert buf.tolist() == [4.0, 4.0, 4.0] and stopping.pending() is None


def test_a_signal_the_process_ignores_stays_ignored():
    """A background job starts with SIGINT ignored: the command keeps it so."""
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with stopping.handled():
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
