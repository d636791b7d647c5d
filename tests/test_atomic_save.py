"""Checkpoint saving over existing files: permission bits kept, read-only targets and
directories refused before any temporary file exists."""

import os
import stat

import numpy as np
import pytest

import portable_bp as pb
from portable_bp import checkpoint

pytestmark = pytest.mark.skipif(os.name != "posix", reason="POSIX only: setrlimit, FIFOs, mode bits")


def small_net(seed=7):
    return pb.Network([3, 5, 3], loss="cross_entropy", dtype="float64", seed=seed)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("bits", [0o600, 0o640, 0o644, 0o660, 0o700], ids=oct)
def test_resaving_keeps_the_permission_bits(tmp_path, bits):
    path = tmp_path / "ck"
    small_net().save(path)
    os.chmod(path, bits)
    small_net(seed=8).save(path)
    assert mode(path) == bits
    np.testing.assert_array_equal(pb.load(path).params[0][0], small_net(seed=8).params[0][0])


def test_a_new_file_gets_the_umask_default(tmp_path):
    old = os.umask(0o027)
    try:
        small_net().save(tmp_path / "ck")
    finally:
        os.umask(old)
    assert mode(tmp_path / "ck") == 0o640


@pytest.mark.parametrize("bits", [0o400, 0o444, 0o040], ids=oct)
def test_a_read_only_checkpoint_is_refused_before_writing(tmp_path, bits):
    path = tmp_path / "ck"
    small_net().save(path)
    before = path.read_bytes()
    os.chmod(path, bits)
    try:
        with pytest.raises(PermissionError, match="read-only") as err:
            small_net(seed=8).save(path)
        assert str(path) in str(err.value)
        assert path.read_bytes() == before and mode(path) == bits
        assert os.listdir(tmp_path) == ["ck"]  # no temporary file was made
    finally:
        os.chmod(path, 0o600)


def test_a_directory_is_refused_before_a_temporary_file_exists(tmp_path):
    target = tmp_path / "models"
    target.mkdir()
    with pytest.raises(IsADirectoryError) as err:
        small_net().save(target)
    assert str(target) in str(err.value)
    assert os.listdir(tmp_path) == ["models"] and os.listdir(target) == []

    with pytest.raises(IsADirectoryError):  # a trailing separator names a directory
        small_net().save(str(tmp_path / "new") + os.sep)
    assert os.listdir(tmp_path) == ["models"]


def test_a_fifo_is_refused_not_replaced(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="not a regular file") as err:
        small_net().save(fifo)
    assert repr(str(fifo)) in str(err.value)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode) and os.listdir(tmp_path) == ["fifo"]


def test_saving_over_a_symlink_keeps_the_target_mode_and_replaces_the_link(tmp_path):
    real = tmp_path / "real"
    small_net().save(real)
    os.chmod(real, 0o600)
    link = tmp_path / "link"
    link.symlink_to(real)
    small_net(seed=8).save(link)
    assert not link.is_symlink() and mode(link) == 0o600  # as before: the link is replaced
    assert pb.load(real).config()["seed"] == 7 and pb.load(link).config()["seed"] == 8


def test_missing_folder_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        checkpoint.save(small_net(), tmp_path / "no" / "such" / "ck")


def test_a_file_system_without_modes_does_not_stop_a_save(tmp_path, monkeypatch):
    path = tmp_path / "ck"
    small_net().save(path)

    def no_modes(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")  # what FAT or some mounts answer

    monkeypatch.setattr(os, "chmod", no_modes)
    small_net(seed=8).save(path)
    monkeypatch.undo()
    assert pb.load(path).config()["seed"] == 8 and os.listdir(tmp_path) == ["ck"]
