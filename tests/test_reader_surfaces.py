"""Red-team pass over the readers' input surfaces: odd paths, compression variants, zip
corner cases, and what each one now does."""

import gzip
import io
import os
import zipfile

import numpy as np
import pytest
from _hostile import npy_header, raw_zip

import portable_bp as pb
from portable_bp import checkpoint
from portable_bp import datasets as ds


def csv_file(tmp_path, name="d.csv", text="a,b,label\n1,2,0\n3,4,1\n"):
    path = tmp_path / name
    path.write_text(text)
    return path


# -- paths -------------------------------------------------------------------------------------------
def test_bytes_and_pathlike_paths(tmp_path):
    path = csv_file(tmp_path)
    for form in (path, str(path), os.fsencode(path)):
        X, y = ds.load_file(form)
        assert X.shape == (2, 2) and y.tolist() == [0, 1]
    with pytest.raises(ValueError, match="non-numeric CSV value 'x'") as err:
        ds.read_csv(os.fsencode(csv_file(tmp_path, "bad.csv", "x,1\n")), header=False)
    assert str(tmp_path / "bad.csv") in str(err.value)  # decoded, not b'...'


def test_symlinks_to_data_files_are_followed_and_dangling_ones_are_missing(tmp_path):
    link = tmp_path / "link.csv"
    link.symlink_to(csv_file(tmp_path))
    assert ds.load_file(link)[0].shape == (2, 2)
    dangling = tmp_path / "dangling.csv"
    dangling.symlink_to(tmp_path / "nowhere.csv")
    with pytest.raises(FileNotFoundError):
        ds.load_file(dangling)


def test_a_unix_socket_is_not_a_data_file(tmp_path):
    import socket

    if not hasattr(socket, "AF_UNIX"):
        pytest.skip("no UNIX sockets here")
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(ValueError, match="not a regular file") as err:
            ds.load_file(path)
    assert str(path) in str(err.value)


def test_empty_files(tmp_path):
    with pytest.raises(ValueError, match="empty CSV file: no rows"):
        ds.load_file(csv_file(tmp_path, "empty.csv", ""))
    with pytest.raises(ValueError, match="not an IDX file: 0 bytes"):
        ds.load_file(csv_file(tmp_path, "empty.idx", ""), labels=tmp_path / "empty.idx")
    with pytest.raises(ValueError, match="not an .npz file"):
        ds.read_npz(csv_file(tmp_path, "empty.npz", ""))


def test_comma_joined_idx_paths_with_spaces_and_missing_parts(tmp_path):
    with pytest.raises(FileNotFoundError):
        ds.load_file(f"{tmp_path / 'img.idx'}, {tmp_path / 'lab.idx'}")


# -- compression ------------------------------------------------------------------------------------
def test_tsv_gz_uses_tabs(tmp_path):
    path = tmp_path / "d.tsv.gz"
    path.write_bytes(gzip.compress(b"a\tb\tlabel\n1\t\t0\n3\t4\t1\n"))  # an empty field must stay a field
    with pytest.raises(ValueError, match="non-numeric CSV value '' on line 2, column 2"):
        ds.load_file(path)


def test_multi_member_gzip_and_trailing_garbage(tmp_path):
    path = tmp_path / "d.csv.gz"
    path.write_bytes(gzip.compress(b"1,2,0\n") + gzip.compress(b"3,4,1\n"))
    assert ds.load_file(path)[1].tolist() == [0, 1]
    path.write_bytes(gzip.compress(b"1,2,0\n") + b"garbage")
    with pytest.raises(ValueError, match="corrupt gzip data"):
        ds.load_file(path)


def test_gzip_compressed_npz_is_named_as_such(tmp_path):
    buf = io.BytesIO()
    np.savez(buf, X=np.ones((2, 2)), y=np.zeros(2))
    path = tmp_path / "d.npz.gz"
    path.write_bytes(gzip.compress(buf.getvalue()))
    with pytest.raises(ValueError, match="it is gzip-compressed; unpack it first"):
        ds.load_file(path)


# -- zip corner cases ------------------------------------------------------------------------------------
def test_npz_entry_that_is_not_npy_and_explicit_npy_keys(tmp_path):
    path = tmp_path / "d.npz"
    path.write_bytes(raw_zip([{"name": "X", "data": b"plain bytes"}, {"name": "y.npy", "data": b""}]))
    with pytest.raises(ValueError, match="entry 'X' is not a .npy array"):
        ds.read_npz(path)
    np.savez(path, X=np.ones((2, 2)), y=np.zeros(2))
    assert ds.read_npz(path, x_key="X.npy", y_key="y.npy")[0].shape == (2, 2)


def test_empty_zip_archive(tmp_path):
    path = tmp_path / "d.npz"
    with zipfile.ZipFile(path, "w"):
        pass
    with pytest.raises(ValueError, match=r"missing key 'X' in .npz; keys present: \[\]"):
        ds.load_file(path)


def test_encrypted_entry_is_refused(tmp_path):
    data = bytearray(raw_zip([{"name": "X.npy", "data": npy_header("<f8", (1,)) + bytes(8)},
                              {"name": "y.npy", "data": npy_header("<f8", (1,)) + bytes(8)}]))
    for at in (i for i in range(len(data)) if data.startswith(b"PK\x03\x04", i) or data.startswith(b"PK\x01\x02", i)):
        data[at + (6 if data[at + 2] == 3 else 8)] |= 1  # general-purpose flag bit 0: encrypted
    path = tmp_path / "enc.npz"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="truncated or corrupt: entry 'X'.*encrypted"):
        ds.read_npz(path)


def test_npz_written_with_large_zip64_fields_reads(tmp_path):
    path = tmp_path / "z64.npz"
    with zipfile.ZipFile(path, "w") as z:
        for key, array in (("X", np.arange(6.0).reshape(3, 2)), ("y", np.arange(3))):
            with z.open(f"{key}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, array)
    X, y = ds.read_npz(path)
    assert X.tolist() == [[0, 1], [2, 3], [4, 5]] and y.tolist() == [0, 1, 2]


def test_checkpoint_path_forms(tmp_path):
    net = pb.Network([2, 2], loss="mse", dtype="float64", seed=0)
    checkpoint.save(net, os.fsencode(tmp_path / "ck"))
    assert checkpoint._read(os.fsencode(tmp_path / "ck"))["config"]["sizes"] == [2, 2]
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        net.save(tmp_path / "file" / "ck")
    assert sorted(os.listdir(tmp_path)) == ["ck", "file"]
