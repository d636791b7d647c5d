"""Data-parallel training under a real ``mpiexec`` with 2 ranks (CPU CI: 2 cores, so never
more), each run in a subprocess with a timeout: 2 ranks = 1 process, ``deterministic=K``
bit-identical for 1 and 2 ranks, checkpoints and resume across world sizes, the command
line, and ranks that die, raise or hang. Skipped, with the reason, without ``mpiexec`` or
mpi4py (``pip install -e ".[mpi]"``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from distributed_worker import CASES, load_results, run_case
from test_distributed import assert_bit_identical, assert_equal_to_rounding

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# pip's mpich puts its mpiexec next to the Python that mpi4py runs in: prefer that one
_NEXT_TO_PYTHON = os.path.join(os.path.dirname(sys.executable), "mpiexec")
MPIEXEC = _NEXT_TO_PYTHON if os.path.exists(_NEXT_TO_PYTHON) else shutil.which("mpiexec")

pytestmark = [
    pytest.mark.mpi,
    pytest.mark.skipif(importlib.util.find_spec("mpi4py") is None,
                       reason='mpi4py is not installed: pip install -e ".[mpi]"'),
    pytest.mark.skipif(MPIEXEC is None, reason='no mpiexec on PATH: pip install -e ".[mpi]"'),
]


def _env(**extra):
    """One BLAS thread per rank (2 ranks, 2 cores), the repository and the tests importable,
    and a bounded wait for a peer."""
    path = os.pathsep.join([ROOT, os.path.join(ROOT, "tests"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1", "PORTABLE_BP_COMM_TIMEOUT": "60", **extra}


def mpirun(n, *args, timeout=120, **env):
    """``mpiexec -n n python -m args...``: (return code, stdout, stderr, seconds)."""
    t0 = time.monotonic()
    proc = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, "-m", *args], cwd=ROOT, env=_env(**env),
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every case on 1 rank and on 2 ranks under mpiexec; the 2-rank run also writes a
    checkpoint and resumes one written by this process alone."""
    out = {n: tmp_path_factory.mktemp(f"ranks{n}") for n in (1, 2)}
    run_case("adam", epochs=2, checkpoint=str(out[2] / "ckpt_alone.npz"))
    for n in (1, 2):
        rc, stdout, stderr, _ = mpirun(n, "distributed_worker", "train", str(out[n]))
        assert rc == 0, stderr[-3000:]
    return {n: [load_results(out[n] / f"train.rank{r}.npz") for r in range(n)] for n in (1, 2)}, out


PLAIN = [c for c in CASES if not c.startswith("det")]


@pytest.mark.parametrize("case", PLAIN)
def test_two_ranks_equal_one_process(runs, case):
    """sgd, momentum, adam (shuffled), uneven and empty parts, weights, early stopping,
    divergence: both ranks end as one process does (float64, 1e-12), alike to the bit."""
    (results, _), alone = runs, run_case(case)
    r0, r1 = (results[2][rank][case] for rank in range(2))
    assert_equal_to_rounding(r0, alone)
    assert_bit_identical(r1, r0)
    assert str(r0["error"]) == str(r1["error"]) == alone["error"]


@pytest.mark.parametrize("case", [c for c in CASES if c.startswith("det")])
def test_deterministic_is_bit_identical_on_1_and_2_ranks(runs, case):
    (results, _) = runs
    for r in results[2]:
        assert_bit_identical(r[case], results[1][0][case])


def test_a_checkpoint_of_2_ranks_resumes_alone_and_one_of_1_on_2_ranks(runs):
    (results, out), uninterrupted = runs, run_case("adam", epochs=4)
    path = out[2] / "ckpt_2.npz"
    with np.load(path) as npz:
        assert json.loads(str(npz["meta"]))["run"] == {"world_size": 2, "global_batch": 16,
                                                       "deterministic": None}
    resumed_alone = run_case("adam", epochs=4, checkpoint=str(path), resume=True)
    # a resumed fit returns every epoch's loss, the checkpoint's two included
    assert_equal_to_rounding(resumed_alone, uninterrupted)
    for r in results[2]:
        assert_equal_to_rounding(r["ckpt_resume"], uninterrupted)


def test_command_line_on_2_ranks(tmp_path, capsys):
    """The README's command (digits): one process prints; its accuracy and saved model are
    one process's."""
    from portable_bp.cli import main

    args = ["train", "--dataset", "digits", "--epochs", "3", "--quiet"]
    rc, stdout, stderr, _ = mpirun(2, "portable_bp", *args, "--distributed", "mpi", "--save",
                                   str(tmp_path / "two.npz"))
    assert rc == 0, stderr[-3000:]
    assert stdout.count("test accuracy") == 1 and "x 2 processes" in stdout
    assert main([*args, "--save", str(tmp_path / "one.npz")]) == 0

    def accuracy(text):
        return next(line for line in text.splitlines() if "test accuracy" in line).split(" | ")[0]

    assert accuracy(stdout) == accuracy(capsys.readouterr().out)
    with np.load(tmp_path / "two.npz") as a, np.load(tmp_path / "one.npz") as b:
        for key in (k for k in a.files if k not in ("meta", "history__time")):  # time: each run's own
            np.testing.assert_allclose(a[key], b[key], rtol=1e-5, atol=1e-6)  # float32 training


def test_auto_reads_the_launcher_and_checkpoints_are_written_once(tmp_path):
    ck = tmp_path / "ck.npz"
    rc, stdout, stderr, _ = mpirun(2, "portable_bp", "train", "--dataset", "xor", "--epochs", "2",
                                   "--quiet", "--distributed", "auto", "--checkpoint", str(ck))
    assert rc == 0, stderr[-3000:]
    assert "x 2 processes" in stdout and sorted(os.listdir(tmp_path)) == ["ck.npz"]


def test_mpiexec_and_mpi4py_of_different_mpis_is_a_clear_error():
    """Another MPI's mpiexec leaves mpi4py's MPI with a world of 1 in every process."""
    proc = subprocess.run([sys.executable, "-m", "portable_bp", "train", "--dataset", "xor",
                           "--distributed", "mpi"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=_env(OMPI_COMM_WORLD_SIZE="4"))
    assert proc.returncode == 2
    assert "started 4 processes" in proc.stderr and "different MPI installations" in proc.stderr


@pytest.mark.parametrize("how,expected", [
    ("die", ""),  # SIGKILL: the launcher ends the job
    ("raise", "rank 1 of 2: error: ValueError: rank 1 fails on purpose; aborting all 2 ranks"),
    ("hang", "no answer from the other ranks for 3 s"),
])
def test_a_rank_that_fails_ends_the_job_in_bounded_time(how, expected):
    rc, stdout, stderr, seconds = mpirun(2, "distributed_worker", how, "unused", timeout=90,
                                         PORTABLE_BP_COMM_TIMEOUT="3")
    assert rc != 0 and "training finished" not in stdout
    assert expected in stderr
    assert seconds < 60
