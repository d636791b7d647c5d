"""Every executor against eager: compiled per step and per epoch (JAX), captured graphs
(here with a stand-in capture that replays the recorded body, as a CUDA graph would), the
choice of executor, and the fall-back to eager when compiling or capturing fails."""

import contextlib
import warnings

import numpy as np
import pytest

import portable_bp as pbp
from portable_bp.train import executors, loop
from portable_bp.train.captured import Captured
from portable_bp.train.executors import Eager, ExecutorFailed
from portable_bp.transforms import NO_TRANSFORMS


class StandInCapture:
    """Records the step's body; ``replay`` runs it. Counts recordings and replays."""

    def __init__(self, fail=False):
        self.fail, self.recorded, self.replays = fail, 0, 0

    def warmup(self):
        return contextlib.nullcontext()

    def record(self, body):
        if self.fail:
            raise RuntimeError("operation not permitted when stream is capturing")
        self.recorded += 1

        def replay():
            self.replays += 1
            body()

        return type("Graph", (), {"replay": staticmethod(replay)})()


@pytest.fixture
def captured_with(monkeypatch):
    """Make fit use the Captured executor with a given stand-in capture."""
    def use(capture):
        monkeypatch.setattr(loop, "executor_for",
                            lambda net, opt, ops=None, name=None, transforms=NO_TRANSFORMS, **_:
                            Eager(net, opt, ops, transforms, _.get("offset", 0)) if name == "eager" else
                            Captured(net, opt, ops, transforms, _.get("offset", 0), capture=capture))
        return capture
    return use


def data(n=53, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 5)), rng.integers(0, 3, n), rng.random(n)


def trained(spec, executor="auto", optimizer="sgd", epochs=3, batch_size=10, shuffle=True, weights=False,
            lr=None, dtype="float64"):
    X, y, w = data()
    net = pbp.Network([5, 8, 3], activation="tanh", loss="cross_entropy", backend=spec, dtype=dtype, seed=0)
    net.executor = executor
    net.fit(X, y, epochs=epochs, batch_size=batch_size, optimizer=optimizer, shuffle=shuffle, lr=lr,
            sample_weight=w if weights else None)
    return net, [np.asarray(net.backend.to_numpy(a), dtype=np.float64) for p in net.params for a in p]


def max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(a, b))


_EAGER: dict = {}  # the eager trajectory each compiled executor is compared with, trained once


def trained_eagerly(spec, optimizer):
    """``trained(spec, "eager", optimizer)``'s parameters, computed once per process (a jit
    and a scan case compare with the same eager run; on JAX it dispatches op by op)."""
    if (spec, optimizer) not in _EAGER:
        _EAGER[spec, optimizer] = trained(spec, "eager", optimizer)[1]
    return _EAGER[spec, optimizer]


@pytest.mark.backends("jax")
@pytest.mark.parametrize("executor", ["jit", "scan"])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam"])
def test_compiled_executors_equal_eager(xp_spec, executor, optimizer):
    """Ragged last batch, shuffling and per-step Adam scalars included: < 1e-12 in float64."""
    eager = trained_eagerly(xp_spec, optimizer)
    net, other = trained(xp_spec, executor, optimizer)
    assert max_diff(eager, other) < 1e-12
    assert net.optimizer_state[1]["step"] == 3 * 6 and isinstance(net.optimizer_state[1]["step"], int)


@pytest.mark.backends("jax")
def test_scan_executor_with_sample_weights_and_no_shuffle(xp_spec):
    _, eager = trained(xp_spec, "eager", "adam", shuffle=False, weights=True)
    _, scan = trained(xp_spec, "scan", "adam", shuffle=False, weights=True)
    assert max_diff(eager, scan) < 1e-12


@pytest.mark.backends("numpy", "torch", "array_api_strict")
@pytest.mark.parametrize("optimizer", ["sgd", "nesterov", "adam"])
@pytest.mark.parametrize("weights", [False, True], ids=["unweighted", "weighted"])
def test_captured_executor_equals_eager(xp_spec, captured_with, optimizer, weights):
    """The recorded step gathers its own batch at a device-side start, reads per-step
    scalars by a device-side counter and sums the loss itself: the trajectory must be the
    eager one exactly, with one recording reused for every epoch."""
    _, eager = trained(xp_spec, "eager", optimizer, weights=weights)
    capture = captured_with(StandInCapture())
    _, graph = trained(xp_spec, "auto", optimizer, weights=weights)
    assert max_diff(eager, graph) == 0.0
    assert capture.recorded == 1 and capture.replays == 3 * (5 - 1)  # batch 0 and the ragged one are eager


@pytest.mark.backends("numpy")
def test_captured_executor_records_again_when_the_learning_rate_changes(xp_spec, captured_with):
    """A fixed-per-epoch scalar is a constant of the recording: a schedule's new lr means
    a new recording (at most once per epoch), and the numbers stay the eager ones."""
    X, y, _ = data()
    results = []
    for capture in (None, StandInCapture()):
        if capture is not None:
            captured_with(capture)
        net = pbp.Network([5, 8, 3], activation="tanh", loss="cross_entropy", dtype="float64", seed=0)
        net.fit(X, y, epochs=4, batch_size=10, optimizer=pbp.optim.SGD(pbp.optim.StepLR(0.1, 2, 0.5)))
        results.append([np.array(a) for p in net.params for a in p])
    assert capture.recorded == 2
    assert max_diff(*results) == 0.0


@pytest.mark.backends("numpy")
def test_a_capture_that_fails_falls_back_to_eager_once_and_says_why(xp_spec, captured_with):
    _, eager = trained(xp_spec, "eager", "momentum")
    captured_with(StandInCapture(fail=True))
    with pytest.warns(RuntimeWarning, match="graph executor failed .* running eagerly"):
        net, fallback = trained(xp_spec, "auto", "momentum")
    assert max_diff(eager, fallback) == 0.0
    assert "operation not permitted" in net.backend.executor_failures["graph"]
    net.backend.executor_failures.clear()


@pytest.mark.backends("numpy")
def test_reference_ops_cannot_be_captured_and_fall_back(xp_spec, captured_with):
    """The reference Ops update out of place: a recorded step could not be replayed, so
    the executor refuses before recording (and fit runs eagerly)."""
    captured_with(StandInCapture())
    X, y, _ = data()
    net = pbp.Network([5, 8, 3], activation="tanh", loss="cross_entropy", dtype="float64", seed=0)
    net.fused_kernels = False
    with pytest.warns(RuntimeWarning, match="do not update parameters in place"):
        net.fit(X, y, epochs=1, batch_size=10)
    net.backend.executor_failures.clear()


def test_executor_choice_environment_and_validation(monkeypatch):
    net = pbp.Network([2, 3, 1], seed=0)
    assert executors.chosen(net) == "eager"
    with pytest.raises(ValueError, match="executor must be one of"):
        net.executor = "fast"
    net.executor = "scan"
    with pytest.raises(ValueError, match="executor 'scan' is not available on backend 'numpy'"):
        executors.chosen(net)
    monkeypatch.setenv("PORTABLE_BP_EXECUTOR", "eager")
    assert executors.chosen(net) == "eager"


@pytest.mark.backends("jax")
def test_jax_prefers_the_scanned_epoch_and_the_environment_forces_eager(xp_spec, monkeypatch):
    net = pbp.Network([2, 3, 1], backend=xp_spec, seed=0)
    assert executors.chosen(net) == "scan" and executors.available(net.backend) == ["scan", "jit", "eager"]
    monkeypatch.setenv("PORTABLE_BP_EXECUTOR", "eager")
    assert executors.chosen(net) == "eager"


@pytest.mark.backends("jax")
def test_divergence_under_the_scanned_epoch_names_the_batch_and_keeps_a_finite_state(xp_spec):
    """The epoch is one program; the replay that finds the batch runs step by step, and
    the state kept is the eager executor's."""
    X, y, _ = data()
    kept = []
    for executor in ("eager", "scan"):
        net = pbp.Network([5, 8, 3], activation="relu", loss="cross_entropy", backend=xp_spec,
                          dtype="float64", seed=0)
        net.executor = executor
        with warnings.catch_warnings(), pytest.raises(pbp.train.TrainingDiverged) as info:
            warnings.simplefilter("ignore", RuntimeWarning)
            net.fit(X * 1e150, y, epochs=2, batch_size=10, lr=1e150)
        kept.append((str(info.value), [np.asarray(a) for p in net.params for a in p]))
        assert np.isfinite(net.evaluate(X, y)["loss"]) or "nothing before had a finite loss" in str(info.value)
    assert kept[0][0] == kept[1][0]
    assert max_diff(kept[0][1], kept[1][1]) == 0.0


def test_executor_failed_is_not_a_training_error():
    assert not issubclass(ExecutorFailed, FloatingPointError)
