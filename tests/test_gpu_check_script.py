"""benchmarks/gpu_check.sh's own logic, without a GPU: its dry run lists the stages in the
order a lent GPU machine should spend its minutes on (correctness, then speed, then the
rest), each with a limit, within a budget under 9 minutes, writing to $OUT."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="needs bash and coreutils' timeout")


def run(*args, env_extra=None, tmp_path):
    env = {"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out"), **(env_extra or {})}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60)


def test_dry_run_orders_the_stages_and_keeps_to_the_budget(tmp_path):
    done = run("--dry-run", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    stages = re.findall(r"=== \[\d+s\] (\w+) \(limit (\d+)s\)", done.stdout)
    names = [name for name, _ in stages]
    assert names[:4] == ["setup", "smoke", "correctness", "speed"]
    assert {"gpu_tests", "nccl_one_rank", "bench_E", "sklearn"} <= set(names[4:])
    planned = sum(int(limit) for _, limit in stages)
    assert planned <= 530 < 9 * 60
    assert "tests/test_gpu.py" in done.stdout and "--configs B,D --dtypes float32 --rounds 3" in done.stdout
    assert "--target /tmp/site .whl/*.whl" in done.stdout  # the carried wheels, installed offline
    assert (tmp_path / "out" / "gpu_check.log").read_text().count("=== [") == len(stages) + 1


def test_a_smaller_budget_cuts_the_later_stages_limits(tmp_path):
    done = run("--dry-run", env_extra={"GPU_CHECK_BUDGET": "100"}, tmp_path=tmp_path)
    limits = [int(x) for x in re.findall(r"\(limit (-?\d+)s\)", done.stdout)]
    assert all(limit <= 100 for limit in limits)


def test_an_unknown_mode_is_refused(tmp_path):
    done = run("--fast", tmp_path=tmp_path)
    assert done.returncode == 2 and "usage: gpu_check.sh [--prepare | --dry-run]" in done.stderr
