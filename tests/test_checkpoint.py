"""Tests for portable_bp.checkpoint: round trips and hostile files (atomic saves:
test_checkpoint_saves.py; resuming a run from a checkpoint: test_resume.py,
test_resume_optimizer.py)."""

import json
import os
import random
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from train_helpers import checkpoint_data, checkpoint_net, meta_with, rewrite

import portable_bp as pb
from portable_bp import checkpoint
from portable_bp.backends import probe
from portable_bp.optim import SGD

REPO = Path(__file__).resolve().parents[1]


data, small_net = checkpoint_data, checkpoint_net


def host_params(net):
    return [(net.backend.to_numpy(W), net.backend.to_numpy(b)) for W, b in net.params]


def assert_same_params(a, b):
    for (Wa, ba), (Wb, bb) in zip(host_params(a), host_params(b)):
        np.testing.assert_array_equal(Wa, Wb)
        np.testing.assert_array_equal(ba, bb)


def temps(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.endswith(".tmp"))


# -- round trips -------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_numpy(tmp_path, dtype):
    X, Z = data()
    net = small_net(dtype=dtype)
    net.fit(X, Z, epochs=2, optimizer="momentum")
    path = tmp_path / "model.npz"
    net.save(path)
    back = pb.load(path)
    assert back.config() == net.config()
    assert back.backend.spec == "numpy" and back.epochs_trained == 2
    assert_same_params(back, net)
    for W, b in back.params:
        assert W.dtype == np.dtype(dtype) and b.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.forward(X), net.forward(X))


def test_path_is_used_exactly(tmp_path):
    """save("model") writes "model" (numpy's savez would write "model.npz")."""
    net = small_net()
    checkpoint.save(net, str(tmp_path / "model"))
    assert sorted(os.listdir(tmp_path)) == ["model"]
    assert_same_params(pb.load(str(tmp_path / "model")), net)


def test_metadata_is_a_plain_string(tmp_path):
    net = small_net()
    net.save(tmp_path / "m")
    with np.load(tmp_path / "m", allow_pickle=False) as npz:
        assert npz["meta"].dtype.kind == "U" and npz["meta"].ndim == 0
        meta = json.loads(str(npz["meta"][()]))
        assert sorted(npz.files) == ["W0", "W1", "b0", "b1", "meta"]
    assert meta["format"] == "portable_bp-checkpoint" and meta["version"] == 1
    assert meta["config"] == net.config() and meta["backend"] == "numpy"
    assert meta["epochs_trained"] == 0 and meta["optimizer"] is None


@pytest.mark.parametrize("spec", ["array_api_strict", "torch"])
def test_load_on_other_backends(tmp_path, spec):
    ok, reason = probe(spec)
    if not ok:
        pytest.skip(reason)
    X, Z = data()
    net = small_net()
    net.fit(X, Z, epochs=2, optimizer="adam")
    net.save(tmp_path / "m")
    back = pb.load(tmp_path / "m", backend=spec)
    assert back.backend.spec == spec
    assert_same_params(back, net)
    # identical to the original network moved to that backend; equal to rounding with NumPy
    moved = net.to(spec)
    out = back.backend.to_numpy(back.forward(X))
    np.testing.assert_array_equal(out, moved.backend.to_numpy(moved.forward(X)))
    np.testing.assert_allclose(out, net.forward(X), rtol=1e-12, atol=1e-14)
    opt, state = back.optimizer_state
    assert state["step"] == net.optimizer_state[1]["step"]
    assert all(back.backend.owns(a) for a in state["slots"]["m"] + state["slots"]["v"])


@pytest.mark.parametrize("optimizer,slots", [("momentum", ["velocity"]), ("nesterov", ["velocity"]),
                                             ("adam", ["m", "v"]), ("sgd", [])])
def test_optimizer_state_round_trips(tmp_path, optimizer, slots):
    X, Z = data()
    net = small_net()
    net.fit(X, Z, epochs=3, batch_size=8, optimizer=optimizer)
    net.save(tmp_path / "m")
    back = pb.load(tmp_path / "m")
    (opt0, s0), (opt1, s1) = net.optimizer_state, back.optimizer_state
    assert type(opt1) is type(opt0) and opt1.config() == opt0.config()
    assert s1["step"] == s0["step"] == 15 and sorted(s1["slots"]) == slots
    for name in slots:
        for a, b in zip(s0["slots"][name], s1["slots"][name]):
            np.testing.assert_array_equal(a, b)
            assert b.dtype == np.float64


def test_schedule_round_trips(tmp_path):
    X, Z = data()
    net = small_net()
    net.fit(X, Z, epochs=2, optimizer=SGD(pb.optim.StepLR(0.1, step_size=2), momentum=0.5))
    net.save(tmp_path / "m")
    opt = pb.load(tmp_path / "m").optimizer_state[0]
    assert isinstance(opt.lr, pb.optim.StepLR) and opt.config() == net.optimizer_state[0].config()


# -- hostile and broken files ---------------------------------------------------------------
@pytest.fixture
def good(tmp_path):
    X, Z = data()
    net = small_net()
    net.fit(X, Z, epochs=1, optimizer="adam")
    path = tmp_path / "good"
    net.save(path)
    return path


def expect_error(path, match):
    with pytest.raises(ValueError, match=match) as info:
        pb.load(path)
    assert repr(str(path)) in str(info.value)  # the message names the file
    with pytest.raises(ValueError, match=match):
        checkpoint.read_run(path, small_net())


@pytest.mark.parametrize("content", [b"", b"hello world", bytes(np.random.default_rng(0).integers(0, 256, 5000,
                                                                                              dtype=np.uint8))])
def test_random_bytes(tmp_path, content):
    path = tmp_path / "junk"
    path.write_bytes(content)
    expect_error(path, "not an .npz file")


def test_npy_file_is_not_npz(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.zeros(3))
    expect_error(path, "not an .npz file")


@pytest.mark.parametrize("fraction", [0.01, 0.3, 0.5, 0.9, 0.999])
def test_truncated(tmp_path, good, fraction):
    raw = good.read_bytes()
    path = tmp_path / "cut"
    path.write_bytes(raw[:max(2, int(len(raw) * fraction))])
    expect_error(path, "truncated or corrupt")


def test_flipped_byte_in_an_array(tmp_path, good):
    raw = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as z:
        info = z.getinfo("W0.npy")
    raw[info.header_offset + 30 + len("W0.npy") + 200] ^= 0xFF  # inside W0's stored data
    path = tmp_path / "flipped"
    path.write_bytes(bytes(raw))
    expect_error(path, "truncated or corrupt")


def test_random_damage_never_escapes_as_another_error(tmp_path, good):
    """Flipped bytes and cuts: a ValueError naming the file, or (damage in bytes zip ignores)
    exactly the saved contents; never another exception, never silently different numbers."""
    raw, want = good.read_bytes(), pb.load(good)
    rng = random.Random(0)
    path = tmp_path / "damaged"
    for _ in range(300):
        b = bytearray(raw)
        for _ in range(rng.choice([1, 3, 10])):
            b[rng.randrange(len(b))] = rng.randrange(256)
        path.write_bytes(bytes(b[:rng.randrange(len(b))] if rng.random() < 0.2 else b))
        try:
            got = pb.load(path)
        except ValueError as exc:
            assert repr(str(path)) in str(exc)
            continue
        assert got.config() == want.config() and got.epochs_trained == want.epochs_trained
        assert_same_params(got, want)


def test_someone_elses_npz(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, weights=np.ones(3), labels=np.arange(4))
    expect_error(path, "not a portable_bp checkpoint: no 'meta' entry")


def test_zip_that_is_not_npz(tmp_path):
    path = tmp_path / "a.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "hello")
    expect_error(path, "no 'meta' entry")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("meta", '{"format": "portable_bp-checkpoint"}')
    expect_error(path, "'meta' is not a .npy array")


@pytest.mark.parametrize("changes,match", [
    (dict(version=2), "format version 2, newer than this portable_bp reads"),
    (dict(version="1"), "unknown checkpoint format version"),
    (dict(format="keras"), "not a portable_bp checkpoint .format 'keras'"),
    (dict(epochs_trained=-1), "'epochs_trained' is missing or invalid"),
    (dict(config={"sizes": [3, 5, 3]}), "metadata entry 'activation' is missing"),
])
def test_tampered_metadata(good, changes, match):
    rewrite(good, meta=meta_with(good, **changes))
    expect_error(good, match)


def test_meta_not_json_or_not_string(good):
    rewrite(good, meta=np.array("{not json"))
    expect_error(good, "'meta' is not valid JSON")
    rewrite(good, meta=np.arange(3))
    expect_error(good, "'meta' must be a 0-d string array")


@pytest.mark.parametrize("changes,match", [
    (dict(W1=None), "missing array 'W1'"),
    (dict(b0=np.zeros(4)), r"array 'b0' has shape \(4,\), expected \(5,\)"),
    (dict(W0=np.zeros((5, 3), np.float32)), "array 'W0' has dtype float32, expected float64"),
    (dict(opt__m__2=None), "missing array 'opt__m__2'"),
    (dict(opt__v__0=np.zeros((3, 5))), r"'opt__v__0' has shape \(3, 5\), expected \(5, 3\)"),
    (dict(W0=np.full((5, 3), np.nan)), "bad parameters: .*NaN"),
])
def test_bad_arrays(good, changes, match):
    rewrite(good, **changes)
    expect_error(good, match)


class Boom:
    """Unpickling this would create a file: the test checks that never happens."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


@pytest.mark.parametrize("key", ["W0", "meta"])
def test_object_arrays_are_never_unpickled(tmp_path, good, key):
    target = tmp_path / "pwned"
    obj = np.empty((5, 3) if key == "W0" else (), dtype=object)
    obj[...] = Boom(str(target))
    with np.load(good, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays[key] = obj
    with open(good, "wb") as f:
        np.savez(f, **arrays)  # numpy pickles object arrays when saving
    expect_error(good, f"entry '{key}' is an object array")
    assert not target.exists()


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        pb.load(tmp_path / "nope")


def test_checkpoint_imports_no_array_library():
    code = ("import sys; import portable_bp.checkpoint; "
            "print([m for m in ('torch', 'jax', 'cupy') if m in sys.modules])")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
