"""The GPU executors' bookkeeping, proved on the CPU: the step's constants made once (not a
new tensor per call, which CUDA-graph capture refuses), and the captured executor's replay
checked against an eager step and falling back to eager when a replay fails. The captured
step runs under stand-in captures whose ``replay`` runs the recorded body, as a CUDA graph
would (tests/test_gpu.py runs the real ones)."""

import contextlib

import numpy as np
import pytest

import portable_bp as pbp
from portable_bp import scalars
from portable_bp.train import loop
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


@pytest.fixture
def captured_with(monkeypatch):
    def use(capture):
        monkeypatch.setattr(loop, "executor_for",
                            lambda net, opt, ops=None, name=None: Captured(net, opt, ops, capture=capture))
        return capture
    return use


def fitted(spec="numpy", epochs=3, optimizer="adam", dtype="float64"):
    rng = np.random.default_rng(0)
    X, y, w = rng.standard_normal((53, 5)), rng.integers(0, 3, 53), rng.random(53)
    net = pbp.Network([5, 8, 3], activation="relu", loss="cross_entropy", backend=spec, dtype=dtype, seed=0)
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


def test_the_first_replay_is_checked_once_per_recording(captured_with, monkeypatch):
    proofs = []
    real = Captured._prove
    monkeypatch.setattr(Captured, "_prove", lambda self, *a: proofs.append(1) or real(self, *a))
    capture = captured_with(ReplayCapture())
    fitted(epochs=4)
    assert capture.recorded == 1 and len(proofs) == 1 and capture.replays == 4 * 4


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
