"""GPU-only checks: device selection, device mismatches, and training on the GPU. Skipped
with the probe's reason where no GPU answers (every test here carries the ``gpu`` marker).
Each Ops primitive against the reference on the GPU specs is in test_ops.py (the xp_case
fixture's GPU cases), the CUDA kernels themselves in test_cupy_kernels.py."""

import numpy as np
import pytest
from conftest import GPU_SPECS, make_data, spec_cases

import portable_bp as pbp
from portable_bp.backends import probe

CUPY_OK, CUPY_WHY = probe("cupy")
TORCH_CUDA_OK, TORCH_CUDA_WHY = probe("torch:cuda")
JAX_GPU_OK, JAX_GPU_WHY = probe("jax:gpu")
needs_cupy = pytest.mark.skipif(not CUPY_OK, reason=f"cupy unavailable: {CUPY_WHY}")
pytestmark = pytest.mark.gpu


@pytest.mark.parametrize("spec", spec_cases(GPU_SPECS))
def test_every_gpu_override_passes_its_check(spec):
    """On the GPU nothing is dropped: a dropped override would quietly slow the hot path."""
    ops = pbp.backends.get(spec).ops
    assert ops.overrides() and ops.dropped == {}


@needs_cupy
def test_cupy_matches_numpy_training_trajectory():
    X, y = make_data(200, 10, 4, "cross_entropy", seed=3)
    a = pbp.Network([10, 32, 4], activation="tanh", loss="cross_entropy", backend="numpy", dtype="float64", seed=4)
    b = a.to("cupy")
    ha = a.fit(X, y, epochs=5, batch_size=32, optimizer="adam", lr=0.01)
    hb = b.fit(X, y, epochs=5, batch_size=32, optimizer="adam", lr=0.01)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-9)


@needs_cupy
def test_cupy_device_index_and_mismatch():
    import cupy

    net = pbp.Network([3, 2], backend="cupy:0", seed=0)
    assert net.backend.spec == "cupy:0" and net.params[0][0].device.id == 0
    count = cupy.cuda.runtime.getDeviceCount()
    with pytest.raises(pbp.backends.BackendUnavailable, match=f"no GPU {count}"):
        pbp.backends.get(f"cupy:{count}")
    host_net = pbp.Network([3, 2], backend="numpy", seed=0)
    with pytest.raises(TypeError, match=r"X is a cupy array on device .*backend 'numpy'"):
        host_net.forward(cupy.ones((2, 3)))
    assert tuple(net.forward(cupy.ones((2, 3), dtype=cupy.float32)).shape) == (2, 2)


@needs_cupy
def test_auto_picks_cupy_with_a_gpu():
    assert pbp.backends.get("auto").name == "cupy"


@needs_cupy
def test_digits_train_on_cupy_reaches_97_percent():
    X, y = pbp.datasets.digits()
    Xtr, Xte, ytr, yte = pbp.datasets.train_test_split(X, y, seed=0)
    sc = pbp.datasets.Standardizer().fit(Xtr)
    net = pbp.Network([64, 128, 10], activation="relu", loss="cross_entropy", backend="cupy", seed=0)
    net.fit(sc.transform(Xtr), ytr, epochs=30, batch_size=32, optimizer="momentum", lr=0.05)
    assert net.evaluate(sc.transform(Xte), yte)["accuracy"] >= 0.96


@pytest.mark.skipif(not TORCH_CUDA_OK, reason=f"torch:cuda unavailable: {TORCH_CUDA_WHY}")
def test_torch_cuda_trains_and_matches_cpu():
    X, y = make_data(128, 10, 3, "cross_entropy", seed=5)
    a = pbp.Network([10, 16, 3], activation="relu", loss="cross_entropy", backend="torch", dtype="float64", seed=6)
    b = a.to("torch:cuda:0")
    assert str(b.params[0][0].device) == "cuda:0"
    ha = a.fit(X, y, epochs=3, batch_size=16)
    hb = b.fit(X, y, epochs=3, batch_size=16)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-9)


@pytest.mark.skipif(not JAX_GPU_OK, reason=f"jax:gpu unavailable: {JAX_GPU_WHY}")
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_jax_gpu_compiled_step_matches_numpy(optimizer):
    """The jitted training step on a GPU: the same trajectory as NumPy's eager one."""
    X, y = make_data(128, 10, 3, "cross_entropy", seed=7)
    a = pbp.Network([10, 16, 3], activation="tanh", loss="cross_entropy", dtype="float64", seed=8)
    b = a.to("jax:gpu")
    ha = a.fit(X, y, epochs=3, batch_size=20, optimizer=optimizer, lr=0.05)
    hb = b.fit(X, y, epochs=3, batch_size=20, optimizer=optimizer, lr=0.05)
    assert any(key[0] == "step" for key in b.compiled)
    np.testing.assert_allclose(ha.history["loss"], hb.history["loss"], rtol=1e-9)
    for (W, v), (W2, v2) in zip(a.params, b.params):
        np.testing.assert_allclose(W, b.backend.to_numpy(W2), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(v, b.backend.to_numpy(v2), rtol=1e-9, atol=1e-12)
