"""Every script in examples/ runs on the CPU and prints what it promises."""

import os
import re
import subprocess
import sys

import pytest
from conftest import probed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(REPO, "examples")


def run_example(name, *args, cwd=None):
    paths = [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    return subprocess.run([sys.executable, os.path.join(EXAMPLES, name), *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)


def number_after(label, text):
    m = re.search(re.escape(label) + r"\s*([0-9.eE+-]+)", text)
    assert m, f"{label!r} not in:\n{text}"
    return float(m.group(1))


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_seed_network_prints_the_explain_walk_through(backend, capsys):
    """The derivation's 3-4-2 example, checked OK, exactly as portable_bp.explain prints it
    (the code path of `portable-bp explain`)."""
    from portable_bp.explain import explain_seed_network

    r = run_example("seed_network.py", "--backend", backend)
    assert r.returncode == 0, r.stderr
    assert "W(1) (4x3)" in r.stdout and "dL/dW(2)" in r.stdout
    assert r.stdout.strip().endswith("OK")
    explain_seed_network(backend, 0)
    assert capsys.readouterr().out == r.stdout


def test_xor_full_batch():
    r = run_example("xor.py", "--backend", "numpy")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4/4 correct" in r.stdout
    assert r.stdout.count(" ok") == 4


def test_digits_reaches_97_percent():
    r = run_example("digits.py", "--backend", "numpy")
    assert r.returncode == 0, r.stderr
    assert number_after("test accuracy:", r.stdout) >= 0.97
    assert number_after("time:", r.stdout) < 60


def test_sine_regression():
    r = run_example("sine_regression.py", "--backend", "numpy")
    assert r.returncode == 0, r.stderr
    assert number_after("final test MSE:", r.stdout) < 0.03  # noise floor 0.01


def test_spirals_saves_the_decision_boundary(tmp_path):
    pytest.importorskip("matplotlib")
    r = run_example("spirals.py", "--backend", "numpy", "--out", str(tmp_path / "b.png"))
    assert r.returncode == 0, r.stderr
    assert number_after("test accuracy", r.stdout) >= 0.9
    assert (tmp_path / "b.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.skipif(probed("cupy")[0], reason="CuPy runs here: auto would take the GPU sizes")
def test_gpu_training_defaults_to_the_cpu_sizes_here_and_learns():
    """Without a GPU, the default (auto) trains on NumPy with the CPU sizes its docstring
    promises, and reaches a meaningful accuracy (the classes overlap: 0.86 is the bound)."""
    r = run_example("gpu_training.py")
    assert r.returncode == 0, r.stderr
    assert "backend: numpy" in r.stdout and "20000 training samples" in r.stdout
    assert number_after("throughput:", r.stdout.replace(",", "")) > 0
    assert number_after("test accuracy:", r.stdout) >= 0.75


@pytest.mark.jax_child
@pytest.mark.skipif(probed("cupy")[0], reason="CuPy runs here")
def test_gpu_training_on_a_gpu_backend_without_a_gpu_says_what_runs_here():
    r = run_example("gpu_training.py", "--backend", "cupy")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "cupy" in lines[0] and "Traceback" not in r.stderr
    assert "Backends that run here: numpy" in lines[0] and "--backend numpy" in lines[0]


def test_regularization_prints_the_four_settings():
    """examples/regularization.py: a row per setting with a held-out accuracy that learned
    something (10 classes: chance is 0.1), on a short run."""
    r = run_example("regularization.py", "--seeds", "2", "--epochs", "6", "--train", "200")
    assert r.returncode == 0, r.stderr
    for setting in ("none", "L2", "dropout", "L2 + dropout"):
        row = next(line for line in r.stdout.splitlines() if line.startswith(setting + " "))
        assert float(row.split()[-4]) > 0.3, row
