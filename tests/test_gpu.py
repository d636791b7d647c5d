"""GPU-only checks: device selection, device mismatches, and training on the GPU. Skipped
with the probe's reason where no GPU answers (every test here carries the ``gpu`` marker).
Each Ops primitive against the reference on the GPU specs is in test_ops.py (the xp_case
fixture's GPU cases), the CUDA kernels themselves in test_cupy_kernels.py.

Warnings are errors here, and the captured executors are counted (recordings, replays) and
must leave ``executor_failures`` empty: a silent fallback to eager cannot pass."""

import contextlib

import numpy as np
import pytest
from conftest import GPU_SPECS, make_data, probed, spec_cases

import portable_bp as pbp
from portable_bp.train.eager import Eager

CUPY_OK, CUPY_WHY = probed("cupy")
TORCH_CUDA_OK, TORCH_CUDA_WHY = probed("torch:cuda")
JAX_GPU_OK, JAX_GPU_WHY = probed("jax:gpu")
needs_cupy = pytest.mark.skipif(not CUPY_OK, reason=f"cupy unavailable: {CUPY_WHY}")
pytestmark = [pytest.mark.gpu, pytest.mark.filterwarnings("error")]
needs_torch_cuda = pytest.mark.skipif(not TORCH_CUDA_OK, reason=f"torch:cuda unavailable: {TORCH_CUDA_WHY}")
CAPTURED = [pytest.param("cupy", marks=needs_cupy, id="cupy"),
            pytest.param("torch:cuda", marks=needs_torch_cuda, id="torch:cuda")]
RTOL = {"float64": 1e-10, "float32": 1e-4}
N, BATCH, EPOCHS = 203, 16, 4  # 12 full batches and a ragged one of 11


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


class Counting:
    """The backend's real capture, counting recordings and replays (and, with ``fail``,
    refusing the first recording as a capture that cannot be made would)."""

    def __init__(self, real, fail=False):
        self.real, self.fail, self.recorded, self.replays = real, fail, 0, 0

    def __getattr__(self, name):  # warmup, prepare_ops: the real capture's
        return getattr(self.real, name)

    def record(self, body):
        if self.fail:
            self.fail = False
            raise RuntimeError("forced: operation not permitted when stream is capturing")
        graph = self.real.record(body)
        self.recorded += 1
        counting = self

        class Replayed:
            def replay(self):
                counting.replays += 1
                graph.replay()

        return Replayed()


@contextlib.contextmanager
def counted(spec, fail=False):
    backend = pbp.backends.get(spec)
    real = backend.capture
    backend.capture = Counting(real, fail)
    try:
        yield backend.capture
    finally:
        backend.capture = real


def demanding_fit(spec, dtype, executor="auto", optimizer="adam", dropout=0.0):
    """An lr schedule, Adam (or momentum), shuffling, sample weights, a ragged last batch:
    (loss history, parameters as float64 host arrays, the network)."""
    rng = np.random.default_rng(11)
    X, y, w = rng.standard_normal((N, 12)), rng.integers(0, 4, N), rng.random(N) + 0.5
    net = pbp.Network([12, 32, 32, 4], activation="relu", loss="cross_entropy", backend=spec, dtype=dtype,
                      seed=12, dropout=dropout)
    net.executor = executor
    schedule = pbp.optim.StepLR(0.01, 2, 0.5)
    opt = pbp.optim.Adam(schedule) if optimizer == "adam" else pbp.optim.SGD(schedule, momentum=0.9)
    history = net.fit(X, y, epochs=EPOCHS, batch_size=BATCH, optimizer=opt, shuffle=True, sample_weight=w)
    params = [np.asarray(net.backend.to_numpy(a), dtype=np.float64) for p in net.params for a in p]
    return np.asarray(history.history["loss"]), params, net


def assert_close(got, want, rtol):
    (loss, params), (want_loss, want_params) = got, want
    np.testing.assert_allclose(loss, want_loss, rtol=rtol)
    for a, b in zip(params, want_params):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * float(np.abs(b).max()))


@pytest.mark.parametrize("spec", CAPTURED)
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("optimizer, recordings", [("adam", 1), ("momentum", 2)])
def test_captured_equals_eager_equals_numpy_float64(spec, dtype, optimizer, recordings):
    """Adam's per-step scalars are arrays read by the recorded counter (one recording per
    fit); momentum's lr is a constant of the recording (StepLR changes it once: two).
    Batch 0 and the ragged batch run eagerly, the 11 others replay."""
    reference = demanding_fit("numpy", "float64", "eager", optimizer)[:2]
    eager = demanding_fit(spec, dtype, "eager", optimizer)[:2]
    with counted(spec) as capture:
        loss, params, net = demanding_fit(spec, dtype, "auto", optimizer)
    assert net.backend.executor_failures == {}
    assert capture.recorded == recordings and capture.replays == EPOCHS * (N // BATCH - 1)
    assert_close((loss, params), eager, RTOL[dtype])
    assert_close((loss, params), reference, RTOL[dtype])


@pytest.mark.parametrize("spec", CAPTURED)
def test_dropout_is_captured_too(spec):
    """Dropout's masks come from a counter-based generator keyed on the step counter, which
    the recorded step reads from the device: its keys must be made without a host copy
    inside the capture (a Python int turned into a device array per call is one)."""
    eager = demanding_fit(spec, "float64", "eager", dropout=0.25)[:2]
    with counted(spec) as capture:
        loss, params, net = demanding_fit(spec, "float64", dropout=0.25)
    assert net.backend.executor_failures == {} and capture.recorded == 1
    assert_close((loss, params), eager, RTOL["float64"])


@pytest.mark.parametrize("spec", CAPTURED)
def test_a_capture_that_cannot_be_made_falls_back_and_the_next_fit_captures(spec):
    eager = demanding_fit(spec, "float64", "eager")[:2]
    with counted(spec, fail=True) as capture, pytest.warns(RuntimeWarning, match="forced: operation not permitted"):
        loss, params, net = demanding_fit(spec, "float64")
    assert capture.recorded == 0 and "forced" in net.backend.executor_failures.pop("graph")
    assert_close((loss, params), eager, RTOL["float64"])
    with counted(spec) as capture:
        loss, params, net = demanding_fit(spec, "float64")
    assert capture.recorded == 1 and capture.replays > 0 and net.backend.executor_failures == {}
    assert_close((loss, params), eager, RTOL["float64"])


@needs_torch_cuda
@pytest.mark.parametrize("activation, loss", [("relu", "cross_entropy"), ("sigmoid", "binary_cross_entropy")])
def test_an_eager_torch_cuda_epoch_never_synchronizes(activation, loss):
    """torch's sync-debug mode raises at any host synchronization: over one eager epoch
    (shuffled, weighted, Adam, ragged last batch) there is none; fit's one read per epoch
    comes after."""
    import torch

    rng = np.random.default_rng(13)
    X = rng.standard_normal((N, 12))
    Z = rng.integers(0, 4, N) if loss == "cross_entropy" else (rng.random((N, 4)) > 0.5).astype(float)
    net = pbp.Network([12, 32, 4], activation=activation, loss=loss, backend="torch:cuda", seed=14)
    net.fit(X, Z, epochs=1, batch_size=BATCH)  # set-up, typed scalars and optimizer state made
    be, opt = net.backend, pbp.optim.Adam(0.01)
    data = (be.asarray(X, net.dtype), be.asarray(Z, None if Z.ndim == 1 else net.dtype),
            be.asarray(rng.random(N), net.dtype))
    order = be.asarray(rng.permutation(N))
    state = opt.init(net.params)
    params, state, _, _ = Eager(net, opt).epoch(net.params, state, 0, data, order, BATCH, 0.01)  # warm
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        params, state, _, total = Eager(net, opt).epoch(params, state, 0, data, order, BATCH, 0.01)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert np.isfinite(float(total))


@pytest.mark.skipif(not JAX_GPU_OK, reason=f"jax:gpu unavailable: {JAX_GPU_WHY}")
def test_jax_gpu_float32_follows_numpy_float64_at_full_precision():
    """Products at 'highest' precision (not JAX's TF32 default): the float32 scanned epoch
    stays within float32 rounding (1e-4) of NumPy's float64 trajectory."""
    reference = demanding_fit("numpy", "float64", "eager")[:2]
    loss, params, net = demanding_fit("jax:gpu", "float32")
    assert net.backend.executor_failures == {} and any(key[0] == "epoch" for key in net.compiled)
    assert_close((loss, params), reference, RTOL["float32"])
