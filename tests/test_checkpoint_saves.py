"""Checkpoint saves are atomic: a failed, killed or interrupted save leaves the previous
file intact (plus at most one temporary file, removed by the next save), and a save touches
nothing else in the folder."""

import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from train_helpers import checkpoint_net

import portable_bp as pb
from portable_bp import checkpoint

REPO = Path(__file__).resolve().parents[1]


small_net = checkpoint_net


def assert_same_params(a, b):
    for (Wa, ba), (Wb, bb) in zip(a.params, b.params):
        np.testing.assert_array_equal(a.backend.to_numpy(Wa), b.backend.to_numpy(Wb))
        np.testing.assert_array_equal(a.backend.to_numpy(ba), b.backend.to_numpy(bb))


def temps(folder):
    return sorted(p.name for p in Path(folder).iterdir() if p.name.endswith(".tmp"))


def test_failed_save_keeps_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "m"
    old = small_net()
    old.save(path)

    def half_written(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.np, "savez", half_written)
    with pytest.raises(OSError, match="disk full"):
        small_net(seed=99).save(path)
    monkeypatch.undo()
    assert os.listdir(tmp_path) == ["m"]
    assert_same_params(pb.load(path), old)


CHILD = textwrap.dedent("""
    import os, sys
    import numpy as np
    import portable_bp as pb
    from portable_bp import checkpoint

    path, mode = sys.argv[1], sys.argv[2]
    net = pb.Network([600, 600, 10], dtype="float64", seed=0)   # about 3 MB of parameters
    shapes = [(W.shape, b.shape) for W, b in net.params]
    if mode == "die-before-rename":  # a kill after the data is written, before os.replace
        os.replace = lambda *a: os._exit(9)
    version = 0
    while True:
        version += 1
        net.set_params([(np.full(s, float(version)), np.full(t, float(version))) for s, t in shapes])
        net.epochs_trained = version
        checkpoint.save(net, path)
        print(version, flush=True)
""")


def child(path, mode="loop"):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(path), mode], env=env,
                            stdout=subprocess.PIPE, text=True)


def check_valid_version(path, saved):
    net = pb.load(path)
    v = net.epochs_trained
    assert v in saved, (v, saved)
    for W, b in net.params:
        assert np.all(W == v) and np.all(b == v)
    return v


def test_kill_mid_save_leaves_a_valid_file(tmp_path):
    path = tmp_path / "ck"
    rng = random.Random(1234)
    mid_save = 0  # kills that caught a save with its temporary file open
    for _ in range(12):
        if mid_save == 3:
            break
        proc = child(path)
        saved = {int(proc.stdout.readline())}  # one complete save of this run
        time.sleep(rng.uniform(0.0, 0.3))
        proc.kill()
        out, _ = proc.communicate()
        saved.update(int(line) for line in out.split())
        saved.add(max(saved) + 1)  # the save in flight may have completed its rename
        check_valid_version(path, saved)
        left = temps(tmp_path)
        assert len(left) <= 1, left  # at most the one killed mid-write: the next save removes it
        assert all(name.startswith(".ck.") for name in left)
        assert set(os.listdir(tmp_path)) == {"ck", *left}
        mid_save += bool(left)
    assert mid_save >= 1, "no kill landed inside a save; the test proved nothing"


def test_killed_before_rename_leaves_old_file_and_one_temp(tmp_path):
    path = tmp_path / "ck"
    old = small_net()
    old.save(path)
    for _ in range(2):  # two crashed saves: still one temp file, since each save cleans up
        proc = child(path, "die-before-rename")
        assert proc.wait(timeout=60) == 9
        proc.stdout.close()
        assert_same_params(pb.load(path), old)
        (left,) = temps(tmp_path)
        assert left.startswith(".ck.") and left.endswith(".tmp")
    old.save(path)
    assert os.listdir(tmp_path) == ["ck"]


def test_save_leaves_other_files_alone(tmp_path):
    for name in ["ck.npz", ".ck.npz.0123abcd.tmp", ".ck.tmp", ".other.0123abcd.tmp", ".ck.0123abcd.tmp.x"]:
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / ".ck.0123abcd.tmp").write_bytes(b"stale")
    small_net().save(tmp_path / "ck")
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["ck", "ck.npz", ".ck.npz.0123abcd.tmp", ".ck.tmp", ".other.0123abcd.tmp", ".ck.0123abcd.tmp.x"])
