"""The GPU executors' bookkeeping, proved on the CPU: the step's constants made once (not a
new tensor per call, which CUDA-graph capture refuses), and the captured executor's replay
checked against an eager step and falling back to eager when a replay fails. The captured
step runs under stand-in captures whose ``replay`` runs the recorded body, as a CUDA graph
would (tests/test_gpu.py runs the real ones)."""

import contextlib

import numpy as np
import pytest
from test_executors import captured_with  # noqa: F401 (the shared fixture)

import portable_bp as pbp
from portable_bp import scalars
from portable_bp.train.captured import Captured


class ReplayCapture:
    """Records the step's body; ``replay`` runs it, or fails on replay number ``fail_at``,
    or runs it twice (``wrong``: a graph that computes something else)."""

    def __init__(self, fail_at=None, wrong=False):
        self.fail_at, self.wrong, self.recorded, self.replays = fail_at, wrong, 0, 0

    def warmup(self):
        return contextlib.nullcontext()

    def record(self, body):
        self.recorded += 1

        def replay():
            self.replays += 1
            if self.replays == self.fail_at:
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            body()
            if self.wrong:
                body()

        return type("Graph", (), {"replay": staticmethod(replay)})()


def fitted(spec="numpy", epochs=3, optimizer="adam", dtype="float64", dropout=0.0):
    rng = np.random.default_rng(0)
    X, y, w = rng.standard_normal((53, 5)), rng.integers(0, 3, 53), rng.random(53)
    net = pbp.Network([5, 8, 3], activation="relu", loss="cross_entropy", backend=spec, dtype=dtype, seed=0,
                      dropout=dropout)
    net.fit(X, y, epochs=epochs, batch_size=10, optimizer=optimizer, sample_weight=w)
    return net, [np.asarray(net.backend.to_numpy(a), dtype=np.float64) for p in net.params for a in p]


def max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


@pytest.mark.parametrize("fail_at", [1, 3])
def test_a_replay_that_fails_reruns_the_epoch_eagerly_and_the_next_fit_captures_again(captured_with, fail_at):
    """The first replay or a later one raising (after some replays already moved the
    parameters): the epoch runs again eagerly from its start, the results are eager's,
    and the next fit records again."""
    _, eager = fitted()
    capture = captured_with(ReplayCapture(fail_at=fail_at))
    with pytest.warns(RuntimeWarning, match="replaying the recorded step failed: RuntimeError: CUDA error"):
        net, fallback = fitted()
    assert max_diff(eager, fallback) == 0.0
    assert "illegal memory access" in net.backend.executor_failures.pop("graph")
    recorded = capture.recorded
    net, again = fitted()  # replays go on past fail_at: this fit's graph is used throughout
    assert capture.recorded == recorded + 1 and max_diff(eager, again) == 0.0
    assert net.backend.executor_failures == {}


def test_a_replay_that_computes_something_else_is_refused(captured_with):
    """The first replay of a recording is compared with the same batch run eagerly: a graph
    that steps twice is caught there, before its result is ever kept."""
    _, eager = fitted()
    captured_with(ReplayCapture(wrong=True))
    with pytest.warns(RuntimeWarning, match="first replay of the recorded step differs from the eager step"):
        net, fallback = fitted()
    assert max_diff(eager, fallback) == 0.0
    net.backend.executor_failures.clear()


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_the_first_replay_is_checked_once_per_recording(captured_with, monkeypatch, dropout):
    """With dropout too: the eager step it is checked against draws the same masks (the
    same step counter) as the replayed one."""
    proofs = []
    real = Captured._prove
    monkeypatch.setattr(Captured, "_prove", lambda self, *a: proofs.append(1) or real(self, *a))
    _, eager = fitted(epochs=4, dropout=dropout)
    capture = captured_with(ReplayCapture())
    net, graph = fitted(epochs=4, dropout=dropout)
    assert capture.recorded == 1 and len(proofs) == 1 and capture.replays == 4 * 4
    assert max_diff(eager, graph) == 0.0 and net.backend.executor_failures == {}


@pytest.mark.backends("torch", "numpy", "array_api_strict")
@pytest.mark.parametrize("activation, loss", [("relu", "cross_entropy"), ("sigmoid", "binary_cross_entropy")])
def test_the_steps_constants_are_made_once_not_per_call(xp_spec, monkeypatch, activation, loss):
    """array-api-compat's torch namespace turns a Python number given to maximum/minimum
    into a new tensor on the array's device (on CUDA a copy and a sync, refused inside a
    capture): after the first step no such conversion happens, and no new typed scalar is
    made, on the reference Ops (fused_kernels off) as on the backend's."""
    import array_api_compat.torch._aliases as torch_aliases

    conversions = []
    real = torch_aliases._scalar_to_tensor
    monkeypatch.setattr(torch_aliases, "_scalar_to_tensor",
                        lambda x, other: conversions.append(x) if isinstance(x, float) else real(x, other))
    rng = np.random.default_rng(1)
    X = rng.standard_normal((40, 4))
    Z = rng.integers(0, 2, 40) if loss == "cross_entropy" else (rng.random((40, 2)) > 0.5).astype(float)
    for fused in (True, False):
        net = pbp.Network([4, 6, 2], activation=activation, loss=loss, backend=xp_spec, seed=0)
        net.fused_kernels = fused
        net.fit(X, Z, epochs=1, batch_size=8)
        made = scalars.made_count()
        net.fit(X, Z, epochs=2, batch_size=8)
        assert scalars.made_count() == made
    assert conversions == []


def test_typed_scalars_are_one_array_per_dtype_and_device_and_python_numbers_where_compiled():
    import array_api_compat.numpy as xp

    a32, a64 = xp.ones(3, dtype=xp.float32), xp.ones(3, dtype=xp.float64)
    zero32 = scalars.typed(xp, 0.0, a32)
    assert zero32.dtype == xp.float32 and zero32.shape == () and float(zero32) == 0.0
    assert scalars.typed(xp, 0.0, a32 * 2) is zero32
    assert scalars.typed(xp, 0.0, a64) is not zero32 and scalars.typed(xp, 0.0, a64).dtype == xp.float64

    class Compiled:  # a namespace whose compiler folds numbers in (as JAX's backend declares)
        pass

    ns = Compiled()
    scalars.keep_python_scalars(ns)
    assert scalars.typed(ns, 0.0, a32) == 0.0 and isinstance(scalars.typed(ns, 0.0, a32), float)


# -- the captures' streams and pools, against stand-ins of torch.cuda and CuPy ----------------------
class Recorder:
    """A stand-in module: every name is a callable that logs (name, args, kwargs) and
    returns a context manager/object that logs entering too."""

    def __init__(self, log, prefix=""):
        self._log, self._prefix = log, prefix

    def __getattr__(self, name):
        log, full = self._log, self._prefix + name

        class Made(contextlib.AbstractContextManager):
            def __init__(self, *args, **kwargs):
                log.append((full, args, kwargs))
                self.ptr = len(log)

            def __enter__(self):
                log.append(("enter " + full, (), {}))
                return self

            def __exit__(self, *exc):
                log.append(("exit " + full, (), {}))
                return False

            def __getattr__(self, attr):
                return lambda *a, **k: log.append((f"{full}.{attr}", a, k))

        return Made


def test_torch_records_on_its_own_devices_stream_made_once():
    from portable_bp.backends.torch_ import TorchCapture

    log = []
    torch = type("torch", (), {"cuda": Recorder(log)})
    capture = TorchCapture(torch, "cuda:1")
    for _ in range(2):
        with capture.warmup():
            pass
        capture.record(lambda: log.append(("body", (), {})))
    streams = [entry for entry in log if entry[0] == "Stream"]
    assert streams == [("Stream", (), {"device": "cuda:1"})] * 2  # one side stream, one capture stream
    graphs = [entry for entry in log if entry[0] == "graph"]
    assert len(graphs) == 2 and all(kw["stream"] is not None for _, _, kw in graphs)
    assert graphs[0][2]["stream"] is graphs[1][2]["stream"] and graphs[0][2]["pool"] is graphs[1][2]["pool"]


def test_cupy_makes_its_capture_stream_and_pool_once_inside_the_device():
    from portable_bp.backends.cupy_capture import CupyCapture

    log = []
    cuda = Recorder(log)
    cupy = type("cupy", (), {"cuda": cuda})
    device = Recorder(log).Device(3)
    capture = CupyCapture(cupy, device, ops_factory=None)
    for _ in range(3):
        capture.record(lambda: log.append(("body", (), {})))
    names = [name for name, _, _ in log]
    assert names.count("MemoryAsyncPool") == 1 and names.count("Stream") == 1
    made = names.index("Stream")
    assert names[made - 1] == "enter Device" and names.index("exit Device") > names.index("MemoryAsyncPool")
    assert names.count("body") == 3 and names.count("Stream.begin_capture") == 3


@pytest.mark.backends("jax")
def test_jax_compiles_float32_products_at_full_precision(xp_spec):
    """jax:gpu's float32 products would be TF32 by JAX's default: every program the backend
    compiles is traced at 'highest' precision (lowered the same on the CPU, so checked here),
    and the user's own JAX code keeps its default."""
    import jax
    import jax.numpy as jnp

    backend = pbp.backends.get(xp_spec)
    a = jnp.ones((4, 4), dtype=jnp.float32)
    ours = backend.compile(lambda x, y: x @ y).lower(a, a).as_text()
    theirs = jax.jit(lambda x, y: x @ y).lower(a, a).as_text()
    assert "HIGHEST" in ours and "HIGHEST" not in theirs
    static = backend.compile(lambda x, size: x[:size] @ x, static_argnames=("size",))
    assert static(a, size=2).shape == (2, 4)


# -- NCCL: one GPU per process however the launcher shows them, one rank through NCCL too -----------
def nccl_fakes():
    from test_distributed_units import FAKE_MPI, FakeArray, FakeWorld, fake_cupy, fake_nccl

    return FAKE_MPI, FakeArray, FakeWorld, fake_cupy, fake_nccl


def test_each_process_takes_its_own_gpu_or_the_only_one_it_sees():
    from portable_bp.distributed.nccl import gpu_of

    assert [gpu_of(r, 4) for r in range(4)] == [0, 1, 2, 3]
    assert gpu_of(3, 1) == 0  # Slurm --gpus-per-task=1: each rank sees just its own GPU
    assert gpu_of(2, 2) is None and gpu_of(0, 0) is None


def test_a_rank_beyond_the_gpus_it_sees_uses_its_only_visible_one():
    from portable_bp.distributed.nccl import NCCL

    FAKE_MPI, _, FakeWorld, fake_cupy, fake_nccl = nccl_fakes()
    cupy = fake_cupy(gpus=1)
    comm = NCCL(FakeWorld(rank=3, size=4, local_rank=3), timeout=0, cupy=cupy, nccl=fake_nccl(), _mpi=FAKE_MPI)
    assert comm.device == 0 and comm.backend_spec == "cupy:0" and cupy.entered == [0]


def test_one_rank_sums_and_broadcasts_through_nccl():
    from portable_bp.distributed.nccl import NCCL

    FAKE_MPI, FakeArray, FakeWorld, fake_cupy, fake_nccl = nccl_fakes()
    nccl = fake_nccl()
    comm = NCCL(FakeWorld(rank=0, size=1), timeout=0, cupy=fake_cupy(), nccl=nccl, _mpi=FAKE_MPI)
    buf = FakeArray(np.ones(3, dtype=np.float32))
    assert comm.allreduce(buf) is buf and nccl.calls[-1][0] == "allReduce"
    comm.broadcast_arrays([buf])
    assert nccl.calls[-1][0] == "bcast"
    assert not comm.alone_runs_locally and pbp.distributed.base.Local().alone_runs_locally


def test_a_dead_peer_is_noticed_within_a_few_sums_not_at_the_epochs_end():
    """Sums that never finish (a peer died): once MAX_QUEUED are queued, the next allreduce
    waits for the oldest with the deadline and aborts NCCL and the job."""
    from portable_bp.distributed.nccl import MAX_QUEUED, NCCL

    FAKE_MPI, FakeArray, FakeWorld, fake_cupy, fake_nccl = nccl_fakes()
    nccl, world = fake_nccl(), FakeWorld(rank=0, size=2)
    comm = NCCL(world, timeout=0.05, cupy=fake_cupy(done=False), nccl=nccl, _mpi=FAKE_MPI)
    buf = FakeArray(np.ones(3, dtype=np.float32))
    for _ in range(MAX_QUEUED):
        comm.allreduce(buf)  # queued: returns at once
    with pytest.raises(SystemExit):
        comm.allreduce(buf)
    assert ("abort",) in nccl.calls and world.calls[-1] == ("Abort", 1)


def test_finished_sums_never_wait():
    from portable_bp.distributed.nccl import MAX_QUEUED, NCCL

    FAKE_MPI, FakeArray, FakeWorld, fake_cupy, fake_nccl = nccl_fakes()
    comm = NCCL(FakeWorld(rank=0, size=2), timeout=0.05, cupy=fake_cupy(), nccl=fake_nccl(), _mpi=FAKE_MPI)
    for _ in range(3 * MAX_QUEUED):
        comm.allreduce(FakeArray(np.ones(2, dtype=np.float32)))
    comm.wait()


def test_a_communicator_that_does_not_run_alone_locally_gets_the_data_parallel_executor_with_one_rank():
    """A one-GPU NCCL fit goes through the data-parallel executor and so through NCCL."""
    from portable_bp.distributed.base import Communicator
    from portable_bp.train.data_parallel import DataParallel
    from portable_bp.train.executors import executor_for

    seen = []

    class Alone(Communicator):
        alone_runs_locally = False

        def allreduce(self, buffer, backend=None):
            seen.append(buffer.shape)
            return buffer

    X, y = np.random.default_rng(0).standard_normal((20, 3)), np.arange(20) % 2
    for comm, calls in ((Communicator(), 0), (Alone(), 2 * 2)):
        seen.clear()
        net = pbp.Network([3, 4, 2], loss="cross_entropy", seed=0)
        net.fit(X, y, epochs=2, batch_size=10, comm=comm)
        assert len(seen) == calls
    assert isinstance(executor_for(net, pbp.optim.SGD(0.1), comm=Alone()), DataParallel)
    assert not isinstance(executor_for(net, pbp.optim.SGD(0.1), comm=Communicator()), DataParallel)


# -- the GPU tests' own logic, run here under the stand-in capture on NumPy ---------------------------
@pytest.fixture
def numpy_with_standin_capture(monkeypatch):
    """The NumPy backend preferring a captured executor whose graph replays the body."""
    from test_executors import StandInCapture

    backend = pbp.backends.get("numpy")
    monkeypatch.setattr(backend, "capture", StandInCapture())
    monkeypatch.setattr(backend, "executors", ("graph",))
    return backend


@pytest.mark.filterwarnings("error")
@pytest.mark.parametrize("optimizer, recordings", [("adam", 1), ("momentum", 2)])
def test_the_gpu_tests_counts_and_tolerances_hold_under_a_stand_in(numpy_with_standin_capture, optimizer,
                                                                   recordings):
    """tests/test_gpu.py's captured-vs-eager-vs-float64 test and its forced-failure test, on
    NumPy: the expected recording and replay counts and the tolerances are right, so on a
    GPU only a real difference can fail them."""
    import test_gpu

    for dtype in ("float64", "float32"):
        test_gpu.test_captured_equals_eager_equals_numpy_float64("numpy", dtype, optimizer, recordings)
    test_gpu.test_a_capture_that_cannot_be_made_falls_back_and_the_next_fit_captures("numpy")
    test_gpu.test_dropout_is_captured_too("numpy")


def test_a_capture_whose_ops_cannot_be_prepared_falls_back_naming_what_is_missing(captured_with):
    """CuPy's capture prepares Ops with cuBLAS called directly: no libcublas is a warning
    naming it and an eager fit, not an error out of fit."""
    class NoCublas(ReplayCapture):
        def prepare_ops(self, ops):
            raise OSError("libcublas not found: tried libcublas.so.12, libcublas.so.13")

    _, eager = fitted()
    capture = captured_with(NoCublas())
    with pytest.warns(RuntimeWarning, match="preparing the capture failed: OSError: libcublas not found"):
        net, fallback = fitted()
    assert max_diff(eager, fallback) == 0.0 and capture.recorded == 0
    net.backend.executor_failures.clear()


@pytest.mark.backends("numpy", "torch", "array_api_strict")
def test_clip_value_makes_no_array_per_step_and_clamps_like_torch(xp_spec, monkeypatch):
    """clip_value's bounds are typed scalars: array-api-compat's clip made both bounds into
    new arrays (and assigned through a boolean mask, a host sync on a GPU) at every step.
    The clamp itself is torch.nn.utils.clip_grad_value_'s."""
    calls = []
    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((40, 4)) * 50, rng.integers(0, 3, 40)
    net = pbp.Network([4, 6, 3], activation="relu", loss="cross_entropy", backend=xp_spec, seed=0)
    real = net.xp.clip
    monkeypatch.setattr(net.xp, "clip", lambda *a, **k: calls.append(1) or real(*a, **k))
    net.fit(X, y, epochs=2, batch_size=8, clip_value=0.05, lr=0.1)
    assert calls == []
    g = net.xp.asarray(np.array([-1.0, -0.01, 0.0, 0.02, 3.0, np.nan]))
    from portable_bp.ops import DenseGrad
    from portable_bp.transforms import ClipValue

    dW, _ = ClipValue(0.02).layer(net.ops, DenseGrad.of_arrays(g, g), None, None).arrays
    np.testing.assert_array_equal(np.asarray(net.backend.to_numpy(dW)), [-0.02, -0.01, 0.0, 0.02, 0.02, np.nan])
