"""The backend x dtype fixture every numerical test runs over.

Every known backend is listed at import time. Ones that cannot run here are skipped with
the probe's reason (shown by ``-ra``); GPU ones also carry the ``gpu`` marker, so
``-m gpu`` selects them and ``-m "not gpu"`` drops them. Tolerances come from one table.
"""

import numpy as np
import pytest

from portable_bp.backends import DTYPES, probe

CPU_SPECS = ["numpy", "array_api_strict", "torch", "jax"]
GPU_SPECS = ["cupy", "torch:cuda"]
# relative tolerance when two computations of the same quantity are compared
RTOL = {"float32": 2e-5, "float64": 1e-11}


def _marks(spec):
    """The gpu marker for GPU specs, and a skip with the probe's reason where it cannot run."""
    ok, reason = probe(spec)
    marks = [pytest.mark.gpu] if spec in GPU_SPECS else []
    if not ok:
        marks.append(pytest.mark.skip(reason=f"backend {spec} unavailable: {reason}"))
    return marks


def _cases(specs, dtypes=DTYPES):
    for spec in specs:
        marks = _marks(spec)
        for dtype in dtypes:
            yield pytest.param((spec, dtype), marks=marks, id=f"{spec}-{dtype}")


def spec_cases(specs):
    """pytest params over backend specs alone, marked and skipped like the fixture's cases."""
    return [pytest.param(spec, marks=_marks(spec), id=spec) for spec in specs]


BACKEND_DTYPE = list(_cases(CPU_SPECS + GPU_SPECS))
BACKEND_F64 = list(_cases(CPU_SPECS + GPU_SPECS, ("float64",)))


@pytest.fixture(params=BACKEND_DTYPE)
def backend_dtype(request):
    """(backend spec, dtype name) over every backend and dtype."""
    return request.param


@pytest.fixture(params=BACKEND_F64)
def backend64(request):
    """Backend spec, for float64-only checks (gradients against finite differences)."""
    return request.param[0]


def make_data(n, n_in, n_out, loss, seed=0):
    """(X, Z) for ``loss``: standard normal X; labels for cross-entropy, 0/1 targets for
    binary cross-entropy, uniform targets in [0, 1) for MSE."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_in))
    if loss == "cross_entropy":
        return X, rng.integers(0, n_out, n)
    if loss == "binary_cross_entropy":
        return X, (rng.random((n, n_out)) > 0.5).astype(float)
    return X, rng.random((n, n_out))


def to_np(net_or_backend, arr):
    backend = getattr(net_or_backend, "backend", net_or_backend)
    return np.asarray(backend.to_numpy(arr), dtype=np.float64)


def assert_close(actual, expected, dtype, scale=1.0):
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    tol = RTOL[dtype] * scale
    np.testing.assert_allclose(actual, expected, rtol=tol, atol=tol * max(1.0, np.abs(expected).max(initial=0)))
