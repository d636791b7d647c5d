"""The step's randomness and regularization on every backend and executor: dropout masks
bit-identical across libraries (and against a Python-integer reference of the hash),
training trajectories with dropout, L2 and clipping equal across backends, executors,
processes and resumes, and AdamW/RMSprop against ``torch.optim`` with schedules."""

import numpy as np
import pytest
from conftest import runs
from distributed_threads import run_ok
from test_executors import StandInCapture, captured_with  # noqa: F401 (a fixture)

import portable_bp as pbp
from portable_bp import counter_rng
from portable_bp.train.executors import Eager

CPU_BACKENDS = [s for s in ("numpy", "array_api_strict", "torch", "jax") if runs(s)]


def reference_bits(seed, count, layer, first_row, rows, units):
    """murmur3's fmix32 on Python integers (masked to 32 bits): the hash the generator
    writes on int32, computed without any array library."""
    def fmix(h):
        h &= 0xFFFFFFFF
        h ^= h >> 16
        h = (h * 0x85EBCA6B) & 0xFFFFFFFF
        h ^= h >> 13
        h = (h * 0xC2B2AE35) & 0xFFFFFFFF
        return h ^ (h >> 16)

    key = fmix(fmix(fmix(seed) ^ (count & 0xFFFFFFFF)) ^ (layer + 1))
    return np.array([[fmix((((first_row + r) * units + j) * 0x9E3779B9 + key) & 0xFFFFFFFF) >> 8
                      for j in range(units)] for r in range(rows)])


@pytest.mark.parametrize("spec", CPU_BACKENDS)
def test_the_same_seed_draws_the_same_mask_on_every_backend(spec):
    backend = pbp.backends.get(spec)
    xp = backend.xp
    like = xp.zeros((7, 9), dtype=backend.dtype("float64"), device=backend.device)
    for seed, count, layer, first_row in ((3, 0, 0, 0), (2**40 + 11, 2**33 + 5, 2, 4), (0, 17, 1, 1000)):
        mask = backend.to_numpy(backend.ops.dropout_mask(seed, count, layer, first_row, like, 0.4))
        kept = reference_bits(seed, count, layer, first_row, 7, 9) >= counter_rng.keep_threshold(0.4)
        np.testing.assert_array_equal(mask, kept / 0.6)
        on_device = backend.asarray(np.asarray(count, dtype=np.int64) % 2**32)  # a device counter (int64)
        for c, row in ((count, first_row), (on_device, backend.asarray(np.asarray(first_row)))):
            key = counter_rng.stream(xp, seed, c, layer)
            bits = backend.to_numpy(counter_rng.uniform_bits(xp, key, row, (7, 9), backend.device))
            np.testing.assert_array_equal(bits, reference_bits(seed, count, layer, first_row, 7, 9))


def data(n=45, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 5)), rng.integers(0, 3, n), rng.random(n) + 0.1


def trained(spec="numpy", executor="auto", epochs=3, optimizer="adam", weights=False, lr=0.01, **fit):
    """A dropout network fitted on 45 rows in batches of 8 (a ragged last batch), shuffled."""
    X, y, w = data()
    net = pbp.Network([5, 16, 12, 3], activation="relu", loss="cross_entropy", dtype="float64", seed=7,
                      dropout=[0.3, 0.2], backend=spec)
    net.executor = executor
    fit = {"l2": 0.01, "clip_norm": 1.0, **fit}
    history = net.fit(X, y, epochs=epochs, batch_size=8, optimizer=optimizer, lr=lr,
                      sample_weight=w if weights else None, **fit)
    return net, history


def params_of(net):
    return [net.backend.to_numpy(a) for pair in net.params for a in pair]


def assert_close(got, want, rtol=1e-10):
    for a, b in zip(params_of(got), params_of(want)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())


@pytest.fixture(scope="module")
def eager_numpy():
    return trained("numpy", "eager")


@pytest.mark.parametrize("spec", CPU_BACKENDS)
def test_training_with_dropout_is_the_same_on_every_backend(spec, eager_numpy):
    net, history = trained(spec)
    assert_close(net, eager_numpy[0])
    np.testing.assert_allclose(history.history["loss"], eager_numpy[1].history["loss"], rtol=1e-10)
    # and dropout mattered: without it the same run ends elsewhere
    if spec == "numpy":
        X, y, _ = data()
        plain = pbp.Network([5, 16, 12, 3], activation="relu", loss="cross_entropy", dtype="float64", seed=7)
        plain.fit(X, y, epochs=3, batch_size=8, optimizer="adam", lr=0.01, l2=0.01, clip_norm=1.0)
        assert not np.allclose(params_of(plain)[0], params_of(net)[0])


@pytest.mark.parametrize("executor", ["jit", "scan"], ids=["jax-jit", "jax-scan"])  # jax: its group (conftest)
def test_compiled_and_scanned_epochs_carry_the_counter(executor, eager_numpy):
    pytest.importorskip("jax")
    net, _ = trained("jax", executor)
    assert not net.backend.executor_failures
    assert_close(net, eager_numpy[0])


def test_a_captured_step_advances_the_counter_on_the_device(captured_with, eager_numpy):  # noqa: F811
    capture = captured_with(StandInCapture())
    net, _ = trained("numpy", "eager")
    assert capture.replays > 0
    assert_close(net, eager_numpy[0])


@pytest.mark.parametrize("optimizer", ["adamw", "rmsprop", "sgd"])
def test_many_ranks_draw_the_masks_of_one_process(optimizer):
    """2 ranks (threads), each on its part of every batch: its rows' masks in the whole
    batch, the transforms after the sum, so the result is one process's to rounding."""
    alone, _ = trained(optimizer=optimizer, weights=True)
    for net in run_ok(2, lambda comm: trained(optimizer=optimizer, weights=True, comm=comm)[0]):
        assert_close(net, alone, rtol=1e-11)


def test_resume_with_dropout_equals_an_uninterrupted_run_bit_for_bit(tmp_path):
    whole, _ = trained(epochs=4)
    X, y, _ = data()
    path = str(tmp_path / "ck.npz")
    first = pbp.Network([5, 16, 12, 3], activation="relu", loss="cross_entropy", dtype="float64", seed=7,
                        dropout=[0.3, 0.2])
    first.fit(X, y, epochs=2, batch_size=8, optimizer="adam", lr=0.01, l2=0.01, clip_norm=1.0, checkpoint=path)
    again = pbp.load(path)
    assert again.dropout == (0.3, 0.2)
    history = again.fit(X, y, epochs=4, batch_size=8, l2=0.01, clip_norm=1.0, checkpoint=path, resume=True)
    assert len(history.history["loss"]) == 4  # the checkpoint's two epochs, then the resumed two
    assert all(np.array_equal(a, b) for a, b in zip(params_of(again), params_of(whole)))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the divergence itself overflows
def test_the_divergence_replay_draws_the_same_masks():
    """A run that diverges is replayed batch by batch from the epoch's snapshot to find the
    last finite state; with the same masks that state is one the run itself passed through:
    the same bits as that many steps taken one by one by the eager step."""
    X, y, _ = data()
    X, Z = X * 30, np.eye(3)[y]
    make = dict(activation="relu", loss="mse", dtype="float64", seed=7, dropout=0.5)
    net = pbp.Network([5, 16, 3], **make)
    with pytest.raises(pbp.train.TrainingDiverged):
        net.fit(X, Z, epochs=30, batch_size=8, optimizer="sgd", lr=2.0, shuffle=False)
    steps = net.optimizer_state[1]["step"]
    assert steps > 0
    again = pbp.Network([5, 16, 3], **make)
    opt = pbp.optim.SGD(2.0)
    stepper = Eager(again, opt)
    params, state, data_ = again.params, opt.init(again.params), (again.features(X), again.targets(Z, 45), None)
    for count in range(steps):
        start = (count % 6) * 8
        params, state, _ = stepper.step(params, state, count, data_, None, start, min(start + 8, 45), 2.0)
    assert all(np.array_equal(np.asarray(a), b) for a, b in zip([a for p in params for a in p], params_of(net)))


# -- AdamW and RMSprop against torch.optim ------------------------------------------------
def torch_trajectory(torch, params, X, y, make_opt, epochs, batch, schedule):
    flat = [p for pair in params for p in pair]
    opt = make_opt(flat)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for _ in range(epochs):
        for s in range(0, len(X), batch):
            opt.zero_grad()
            a = torch.tanh(torch.tensor(X[s:s + batch]) @ params[0][0].T + params[0][1])
            loss = torch.nn.functional.cross_entropy(a @ params[1][0].T + params[1][1], torch.tensor(y[s:s + batch]))
            loss.backward()
            opt.step()
        if schedule:
            sched.step()
    return [p.detach().numpy() for p in flat]


@pytest.mark.parametrize("name,ours,theirs", [
    ("adamw", lambda lr: pbp.optim.AdamW(lr, weight_decay=0.1),
     lambda t, ps: t.optim.AdamW(ps, lr=0.05, weight_decay=0.1)),
    ("adamw-betas", lambda lr: pbp.optim.AdamW(lr, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.3),
     lambda t, ps: t.optim.AdamW(ps, lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.3)),
    ("rmsprop", lambda lr: pbp.optim.RMSprop(lr), lambda t, ps: t.optim.RMSprop(ps, lr=0.05)),
    ("rmsprop-centered-momentum", lambda lr: pbp.optim.RMSprop(lr, alpha=0.9, momentum=0.8, centered=True,
                                                               weight_decay=0.01),
     lambda t, ps: t.optim.RMSprop(ps, lr=0.05, alpha=0.9, momentum=0.8, centered=True, weight_decay=0.01)),
])
@pytest.mark.parametrize("schedule", [False, True])
def test_adamw_and_rmsprop_follow_torch_optim_for_50_steps(name, ours, theirs, schedule):
    torch = pytest.importorskip("torch")
    X, y, _ = data(n=50)
    net = pbp.Network([5, 7, 3], activation="tanh", loss="cross_entropy", dtype="float64", seed=2)
    params = [(torch.tensor(np.asarray(W), requires_grad=True), torch.tensor(np.asarray(b), requires_grad=True))
              for W, b in net.params]
    want = torch_trajectory(torch, params, X, y, lambda ps: theirs(torch, ps), epochs=10, batch=10,
                            schedule=schedule)
    lr = pbp.optim.StepLR(0.05, step_size=2, gamma=0.5) if schedule else 0.05
    net.fit(X, y, epochs=10, batch_size=10, shuffle=False, optimizer=ours(lr))
    for got, w in zip(params_of(net), want):
        np.testing.assert_allclose(got, w, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", ["adamw", "rmsprop"])
def test_new_optimizers_round_trip_through_checkpoints(name, tmp_path):
    X, y, _ = data()
    net = pbp.Network([5, 6, 3], loss="cross_entropy", dtype="float64", seed=1)
    opt = pbp.optim.RMSprop(0.01, momentum=0.5, centered=True) if name == "rmsprop" else pbp.optim.AdamW(0.01)
    net.fit(X, y, epochs=1, batch_size=8, optimizer=opt)
    net.save(tmp_path / "m.npz")
    back = pbp.load(tmp_path / "m.npz")
    saved_opt, state = back.optimizer_state
    assert type(saved_opt) is type(opt) and saved_opt.config() == opt.config()
    assert set(state["slots"]) == set(opt.slots)


def test_a_second_fit_draws_new_masks_and_its_resume_continues_them(tmp_path, monkeypatch):
    """fit(epochs=1) twice is not the same mask sequence twice: the network's steps so far
    key the next fit's masks (as PyTorch's generator moves on); the count is saved, so a
    resumed second fit equals an uninterrupted one."""
    X, y, _ = data()
    make = dict(activation="relu", loss="cross_entropy", dtype="float64", seed=7, dropout=0.5)
    net = pbp.Network([5, 16, 3], **make)
    drawn, original = [], net.ops.dropout_mask

    def spy(seed, count, *args):
        drawn.append(np.array(original(seed, count, *args)))
        return drawn[-1]

    monkeypatch.setattr(net.ops, "dropout_mask", spy)
    net.fit(X, y, epochs=1, batch_size=45)
    assert net.steps_trained == 1
    net.fit(X, y, epochs=1, batch_size=45)
    assert net.steps_trained == 2 and len(drawn) == 2
    assert not np.array_equal(drawn[0], drawn[1])  # both fits' step 0, other masks
    monkeypatch.undo()
    # a second fit resumed from its checkpoint continues its masks
    whole = pbp.Network([5, 16, 3], **make)
    whole.fit(X, y, epochs=2, batch_size=8)
    whole.fit(X, y, epochs=2, batch_size=8, optimizer="adam", lr=0.01)
    part = pbp.Network([5, 16, 3], **make)
    part.fit(X, y, epochs=2, batch_size=8)
    path = str(tmp_path / "ck.npz")
    part.fit(X, y, epochs=1, batch_size=8, optimizer="adam", lr=0.01, checkpoint=path)
    again = pbp.load(path)
    again.fit(X, y, epochs=4, batch_size=8, checkpoint=path, resume=True)
    assert again.steps_trained == whole.steps_trained
    assert all(np.array_equal(a, b) for a, b in zip(params_of(again), params_of(whole)))


def test_resuming_with_another_dropout_warns(tmp_path):
    X, y, _ = data()
    path = str(tmp_path / "ck.npz")
    pbp.Network([5, 16, 3], loss="cross_entropy", seed=7, dropout=0.5).fit(X, y, epochs=1, checkpoint=path)
    with pytest.warns(UserWarning, match=r"with dropout \[0.0\] instead of the saved \[0.5\]"):
        pbp.Network([5, 16, 3], loss="cross_entropy", seed=7).fit(X, y, epochs=2, checkpoint=path, resume=True)


@pytest.mark.parametrize("optimizer", ["adamw", "rmsprop", "rmsprop-centered"])
def test_new_optimizers_are_captured_in_place(optimizer, captured_with, monkeypatch):  # noqa: F811
    """AdamW and RMSprop update in place, so a captured step replays them (no fallback)."""
    opt = {"adamw": lambda: pbp.optim.AdamW(0.01),
           "rmsprop": lambda: pbp.optim.RMSprop(0.01),
           "rmsprop-centered": lambda: pbp.optim.RMSprop(0.01, momentum=0.5, centered=True)}[optimizer]
    capture = captured_with(StandInCapture())
    net, _ = trained("numpy", "eager", optimizer=opt(), lr=None)
    assert capture.replays > 0 and not net.backend.executor_failures
    monkeypatch.undo()
    want, _ = trained("numpy", "eager", optimizer=opt(), lr=None)
    assert_close(net, want)
