"""Array API dispatch: under ``sklearn.set_config(array_api_dispatch=True)`` a PyTorch
(or array-api-strict) input trains on that library and device and predictions come back
in it; NumPy inputs keep NumPy results whatever the backend; scikit-learn's own array API
checks (``check_array_api_input`` and friends) pass. Dispatch needs SCIPY_ARRAY_API=1
before SciPy is imported, so this runs in one child process per module.

On a GPU machine the same runs with CuPy and torch:cuda inputs (``gpu`` marker)."""

import json
import os
import subprocess
import sys

import pytest

pytest.importorskip("sklearn")
from portable_bp.backends import probe  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the child (torch, SciPy and scikit-learn: ~0.37 GiB) runs once, on the worker that runs the
# group of large children (conftest), early, while the JAX worker is still small
pytestmark = pytest.mark.big_child

CHILD = r'''
import json, sys, warnings
warnings.simplefilter("ignore")
import numpy as np
import sklearn
from sklearn.utils.estimator_checks import _yield_array_api_checks
from portable_bp.sklearn import MLPClassifier, MLPRegressor
from portable_bp.backends import probe

results = {}
libs = json.loads(sys.argv[1])

def record(name, fn):
    try:
        fn()
        results[name] = "ok"
    except Exception as exc:
        kind = "skip" if type(exc).__name__ == "SkipTest" else "fail"
        results[name] = f"{kind}: {type(exc).__name__}: {str(exc)[:400]}"

# 1. scikit-learn's own array API checks
for est in (MLPClassifier(max_iter=5), MLPRegressor(max_iter=5)):
    for check in _yield_array_api_checks(est):
        key = type(est).__name__ + ":" + check.func.__name__ + ":" + json.dumps(
            {k: str(v) for k, v in sorted(check.keywords.items())})
        record(key, lambda: check(type(est).__name__, est))

# 2. where training happens and what comes back
rng = np.random.RandomState(0)
X = rng.standard_normal((80, 5)).astype(np.float32)
y = (X[:, 0] > 0).astype(np.int64)

def on(lib, device):
    if lib == "torch":
        import torch
        return lambda a: torch.asarray(a, device=device)
    if lib == "cupy":
        import cupy
        return lambda a: cupy.asarray(a)
    import array_api_strict as xps
    return lambda a: xps.asarray(a, device=xps.Device(device))

def follows_input(lib, device, spec):
    to = on(lib, device)
    with sklearn.config_context(array_api_dispatch=True):
        clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0).fit(to(X), to(y))
        assert clf._network().backend.spec == spec, clf._network().backend.spec
        for out in (clf.predict(to(X)), clf.predict_proba(to(X))):
            assert type(out) is type(to(X)) and str(out.device) == str(to(X).device), (type(out), out.device)
        assert isinstance(clf.score(to(X), to(y)), float)
        reg = MLPRegressor(hidden_layer_sizes=(8,), max_iter=3, random_state=0).fit(to(X), to(X[:, :2]))
        assert type(reg.predict(to(X))) is type(to(X))
    ref = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0).fit(X, y)
    with sklearn.config_context(array_api_dispatch=True):
        p = clf.predict_proba(to(X))
    host = np.asarray(p.cpu()) if lib == "torch" else (p.get() if lib == "cupy" else np.from_dlpack(p))
    np.testing.assert_allclose(host, ref.predict_proba(X), atol=2e-5)

def numpy_stays_numpy(backend):
    with sklearn.config_context(array_api_dispatch=True):
        clf = MLPClassifier(hidden_layer_sizes=(8,), max_iter=3, random_state=0, backend=backend).fit(X, y)
        assert clf._network().backend.spec.split(":")[0] == backend.split(":")[0]
        assert type(clf.predict_proba(X)) is np.ndarray and type(clf.predict(X)) is np.ndarray

for lib, device, spec in libs:
    if probe(spec)[0]:
        record(f"follows_input:{spec}", lambda: follows_input(lib, device, spec))
        record(f"numpy_stays_numpy:{spec}", lambda: numpy_stays_numpy(spec))
print("RESULTS" + json.dumps(results))
'''

CPU_LIBS = [("torch", "cpu", "torch"), ("array_api_strict", "CPU_DEVICE", "array_api_strict")]
GPU_LIBS = [("cupy", None, "cupy"), ("torch", "cuda:0", "torch:cuda:0")]
# needs the core to create biases on the backend's device (Network.__init__ makes them with
# xp.zeros(n) and no device=): a network on a non-default device cannot be built yet
NON_DEFAULT_DEVICE = "device1"


def run_child(libs):
    env = {**os.environ, "SCIPY_ARRAY_API": "1", "PYTHONPATH": ROOT}
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(libs)], capture_output=True,
                         text=True, env=env, timeout=600)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULTS")]
    assert line, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(line[0][len("RESULTS"):])


@pytest.fixture(scope="module")
def cpu_results():
    return run_child(CPU_LIBS)


def test_array_api_dispatch_on_cpu_libraries(cpu_results):
    failures = {k: v for k, v in cpu_results.items() if v.startswith("fail")
                and NON_DEFAULT_DEVICE not in k}
    assert not failures, json.dumps(failures, indent=1)
    ran = [k for k, v in cpu_results.items() if v == "ok"]
    assert any(k.startswith("follows_input:torch") for k in ran) or not probe("torch")[0]
    assert "follows_input:array_api_strict" in ran
    assert sum("check_array_api_input" in k for k in ran) >= 6, ran


def test_array_api_dispatch_on_a_non_default_device(cpu_results):
    """Inputs on array-api-strict's second device train there and predict there."""
    failures = {k: v for k, v in cpu_results.items() if v.startswith("fail") and NON_DEFAULT_DEVICE in k}
    assert not failures, json.dumps(failures, indent=1)


@pytest.mark.gpu
def test_array_api_dispatch_on_gpu_libraries():
    if not (probe("cupy")[0] or probe("torch:cuda")[0]):
        pytest.skip(f"no GPU library runs here: cupy: {probe('cupy')[1]}; torch:cuda: {probe('torch:cuda')[1]}")
    results = run_child(GPU_LIBS)
    failures = {k: v for k, v in results.items() if v.startswith("fail")}
    assert not failures, json.dumps(failures, indent=1)
