"""The example, the benchmark program and the accuracy comparison around the estimators;
and the GPU backend (``gpu`` marker: skipped with the reason where CuPy cannot run)."""

import json
import os
import pickle
import re
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")
from conftest import probed  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # benchmarks/ is a program of the checkout, not an installed package
    sys.path.insert(0, ROOT)
from benchmarks import sklearn_bench  # noqa: E402

CUPY = probed("cupy")


def run(*args, timeout=300):
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=timeout)


def test_pipeline_example():
    r = run("examples/sklearn_pipeline.py", "--quick")
    assert r.returncode == 0, r.stderr[-3000:]
    accuracy = float(re.search(r"backend numpy: .* test accuracy: ([0-9.]+)", r.stdout).group(1))
    assert accuracy >= 0.9, r.stdout
    assert ("backend cupy:" in r.stdout) == CUPY[0]
    if not CUPY[0]:
        assert "cupy: skipped (no GPU here" in r.stdout


def test_benchmark_runs_small_and_skips_the_gpu_with_the_reason(tmp_path):
    out = tmp_path / "bench.json"
    r = run("-m", "benchmarks.sklearn_bench", "--samples", "600", "--epochs", "1", "--rounds", "1",
            "--threads", "1", "--json", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "speed-up (scikit-learn / ours, per round)" in r.stdout
    result = json.loads(out.read_text())
    assert set(result["contenders"]) == {"portable_bp[numpy]", "scikit-learn"} and result["speedup_median"] > 0
    if not CUPY[0]:
        r = run("-m", "benchmarks.sklearn_bench", "--device", "gpu")
        assert r.returncode == 0 and r.stdout.startswith("skipped: --device gpu needs"), r.stdout + r.stderr


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_scores_on_scikit_learns_data_sets_are_on_par():
    table = sklearn_bench.accuracy_table(seeds=2, quick=True)
    for name, row in table.items():
        assert abs(row["ours"] - row["scikit-learn"]) <= 0.02, (name, row)
        assert row["ours"] >= (0.9 if row["metric"] == "accuracy" else 0.3), (name, row)


@pytest.mark.gpu
@pytest.mark.skipif(not CUPY[0], reason=f"cupy cannot run here: {CUPY[1]}")
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_cupy_backend_takes_and_returns_numpy_and_pickles_to_numpy():
    from portable_bp.sklearn import MLPClassifier, MLPRegressor

    rng = np.random.RandomState(0)
    X = rng.standard_normal((500, 20)).astype(np.float32)
    y = (X[:, 0] + X[:, 1] > 0).astype(int) + (X[:, 2] > 1)
    params = dict(hidden_layer_sizes=(32,), max_iter=5, random_state=0)
    gpu = MLPClassifier(backend="cupy", **params).fit(X, y)
    cpu = MLPClassifier(**params).fit(X, y)
    assert gpu._network().backend.name == "cupy" and type(gpu.predict_proba(X)) is np.ndarray
    np.testing.assert_allclose(gpu.predict_proba(X), cpu.predict_proba(X), atol=1e-4)
    np.testing.assert_allclose(gpu.loss_curve_, cpu.loss_curve_, rtol=1e-4)
    again = pickle.loads(pickle.dumps(gpu))
    np.testing.assert_allclose(again.predict_proba(X), gpu.predict_proba(X), rtol=1e-6)
    for solver in ("sgd", "lbfgs"):
        reg = MLPRegressor(backend="cupy", solver=solver, **params).fit(X, X[:, :2] * 2)
        ref = MLPRegressor(solver=solver, **params).fit(X, X[:, :2] * 2)
        np.testing.assert_allclose(reg.predict(X), ref.predict(X), atol=1e-3)
