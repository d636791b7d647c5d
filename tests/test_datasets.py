"""Tests for portable_bp.datasets: generators and file readers (the split and scaling are in
test_preprocessing.py)."""

import gzip
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from portable_bp import datasets as ds
from portable_bp.datasets import synthetic

# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

_IDX_CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B,
              np.int32: 0x0C, np.float32: 0x0D, np.float64: 0x0E}


def idx_bytes(array):
    """Encode ``array`` as an IDX file, written here independently of the reader."""
    array = np.asarray(array)
    code = _IDX_CODES[array.dtype.type]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write(path, data, compress=False):
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


# --------------------------------------------------------------------------
# Synthetic datasets
# --------------------------------------------------------------------------

CLASSIFIERS = [
    (ds.spirals, dict(n_samples=90, n_classes=3), 3, 2),
    (ds.moons, dict(n_samples=50), 2, 2),
    (ds.blobs, dict(n_samples=60, n_features=4, centers=5), 5, 4),
]


@pytest.mark.parametrize("make, kwargs, n_classes, n_features", CLASSIFIERS)
def test_classification_generators_shapes_and_labels(make, kwargs, n_classes, n_features):
    X, y = make(**kwargs)
    n = kwargs["n_samples"]
    assert X.shape == (n, n_features) and X.dtype == np.float64
    assert y.shape == (n,) and y.dtype == np.int64
    assert set(np.unique(y)) == set(range(n_classes))
    assert np.all(np.isfinite(X))


@pytest.mark.parametrize("make", [ds.spirals, ds.moons, ds.blobs, ds.sine])
def test_generators_deterministic_per_seed(make):
    X1, y1 = make(n_samples=40, seed=3)
    X2, y2 = make(n_samples=40, seed=3)
    X3, _ = make(n_samples=40, seed=4)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(X1, X3)


def test_xor_truth_table():
    X, y = ds.xor()
    np.testing.assert_array_equal(X, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(y, [[0], [1], [1], [0]])
    assert X.dtype == y.dtype == np.float64


def test_xor_noisy_many_samples():
    X, y = ds.xor(n_samples=200, noise=0.05, seed=1)
    assert X.shape == (200, 2) and y.shape == (200, 1)
    corners = np.round(X)
    np.testing.assert_array_equal(y[:, 0], corners[:, 0] != corners[:, 1])
    assert not np.array_equal(X, ds.xor(n_samples=200, noise=0.05, seed=2)[0])


def test_sine_regression():
    X, y = ds.sine(n_samples=100, noise=0.0)
    assert X.shape == y.shape == (100, 1) and y.dtype == np.float64
    assert X.min() >= -np.pi and X.max() <= np.pi
    np.testing.assert_allclose(y, np.sin(X))


def test_blobs_explicit_centers():
    centers = np.array([[0.0, 0.0], [100.0, 100.0]])
    X, y = ds.blobs(n_samples=20, centers=centers, cluster_std=0.1)
    np.testing.assert_allclose(X[y == 1].mean(axis=0), [100, 100], atol=1)
    with pytest.raises(ValueError, match="shape"):
        ds.blobs(centers=centers, n_features=3)


@pytest.mark.parametrize("call", [
    lambda: ds.moons(n_samples=0),
    lambda: ds.sine(n_samples=2.5),
    lambda: ds.spirals(n_classes=1),
    lambda: ds.moons(noise=-1),
])
def test_generator_argument_errors(call):
    with pytest.raises(ValueError):
        call()


@pytest.mark.parametrize("route", ["file", "no file", "another file"])
def test_digits(route, monkeypatch, tmp_path):
    """The bundled file read directly and scikit-learn's own loader (where the file is not
    found, or not as expected) give scikit-learn's digits exactly, scaled to [0, 1]."""
    datasets = pytest.importorskip("sklearn.datasets")
    if route == "no file":
        monkeypatch.setattr(synthetic, "_bundled_digits_file", lambda: None)
    elif route == "another file":
        (tmp_path / "digits.csv").write_text("pixel_0,label\n0,1\n")
        monkeypatch.setattr(synthetic, "_bundled_digits_file", lambda: str(tmp_path / "digits.csv"))
    else:
        assert synthetic._bundled_digits() is not None
    X, y = ds.digits()
    assert X.shape == (1797, 64) and X.dtype == np.float64
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0.0 and X.max() == 1.0
    assert set(np.unique(y)) == set(range(10))
    bunch = datasets.load_digits()
    assert np.array_equal(X, bunch.data / 16.0) and np.array_equal(y, bunch.target)


def test_digits_does_not_import_sklearn():
    """Reading the digits leaves scikit-learn unimported (its import is most of the main
    command's start-up)."""
    pytest.importorskip("sklearn")
    code = ("import sys; import portable_bp.datasets as ds; X, y = ds.digits(); assert X.shape == (1797, 64); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sklearn', 'scipy')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


# --------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.float32, np.float64])
def test_idx_round_trip(tmp_path, compress, dtype):
    array = (np.arange(24).reshape(2, 3, 4) * 3).astype(dtype)
    path = write(tmp_path / "a.idx", idx_bytes(array), compress)
    back = ds.read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_idx_gzip_detected_by_content_not_extension(tmp_path):
    array = np.arange(5, dtype=np.uint8)
    plain_named_gz = write(tmp_path / "labels.gz", idx_bytes(array))
    gz_named_plain = write(tmp_path / "labels.idx", idx_bytes(array), compress=True)
    np.testing.assert_array_equal(ds.read_idx(plain_named_gz), array)
    np.testing.assert_array_equal(ds.read_idx(gz_named_plain), array)


def test_idx_truncated(tmp_path):
    data = idx_bytes(np.zeros((3, 4), np.uint8))
    path = write(tmp_path / "short.idx", data[:-1])
    with pytest.raises(ValueError, match="truncated") as err:
        ds.read_idx(path)
    assert str(path) in str(err.value)


def test_idx_truncated_header(tmp_path):
    path = write(tmp_path / "head.idx", bytes([0, 0, 0x08, 3, 0, 0, 0, 1]))
    with pytest.raises(ValueError, match="truncated IDX header") as err:
        ds.read_idx(path)
    assert str(path) in str(err.value)


def test_idx_trailing_bytes(tmp_path):
    path = write(tmp_path / "long.idx", idx_bytes(np.zeros(3, np.uint8)) + b"\0")
    with pytest.raises(ValueError, match="longer than header") as err:
        ds.read_idx(path)
    assert str(path) in str(err.value)


def test_idx_bad_magic(tmp_path):
    path = write(tmp_path / "magic.idx", b"\x01\x00\x08\x01\x00\x00\x00\x01\x07")
    with pytest.raises(ValueError, match="magic") as err:
        ds.read_idx(path)
    assert str(path) in str(err.value)


def test_idx_unknown_dtype_code(tmp_path):
    path = write(tmp_path / "code.idx", b"\x00\x00\x0a\x01\x00\x00\x00\x01\x07")
    with pytest.raises(ValueError, match="unknown dtype code 0x0A") as err:
        ds.read_idx(path)
    assert str(path) in str(err.value)


def test_idx_corrupt_gzip(tmp_path):
    good = gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8)))
    path = write(tmp_path / "bad.gz", good[:-10])
    with pytest.raises(ValueError, match="gzip") as err:
        ds.read_idx(path)
    assert str(path) in str(err.value)


def test_load_idx_pair(tmp_path):
    images = np.arange(3 * 2 * 2, dtype=np.uint8).reshape(3, 2, 2) * 20
    labels = np.array([0, 7, 9], dtype=np.uint8)
    ipath = write(tmp_path / "img.idx3-ubyte", idx_bytes(images), compress=True)
    lpath = write(tmp_path / "lab.idx1-ubyte", idx_bytes(labels))
    X, y = ds.load_idx_pair(ipath, lpath)
    assert X.shape == (3, 4) and X.dtype == np.float64
    np.testing.assert_allclose(X, images.reshape(3, 4) / 255.0)
    assert y.dtype == np.int64
    np.testing.assert_array_equal(y, labels)

    short = write(tmp_path / "short-labels.idx", idx_bytes(labels[:2]))
    with pytest.raises(ValueError, match="3 images but .* 2 labels"):
        ds.load_idx_pair(ipath, short)


# --------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------


def test_csv_with_header_auto_and_named_target(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,label,b\n1.5,0,2\n\n3,1,4\n")
    X, y = ds.read_csv(path)  # header auto-detected, last column is target
    np.testing.assert_array_equal(X, [[1.5, 0], [3, 1]])
    np.testing.assert_array_equal(y, [2, 4])
    assert y.dtype == np.int64

    X, y = ds.read_csv(path, target="label")
    np.testing.assert_array_equal(X, [[1.5, 2], [3, 4]])
    np.testing.assert_array_equal(y, [0, 1])

    with pytest.raises(ValueError, match="no column named 'nope'"):
        ds.read_csv(path, target="nope")


def test_csv_without_header_float_target(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("1,2,0.5\n3,4,1.25\n")
    X, y = ds.read_csv(path, header=False)
    assert X.shape == (2, 2) and X.dtype == np.float64
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, [0.5, 1.25])
    X, y = ds.read_csv(path, target=0)
    np.testing.assert_array_equal(y, [1, 3])
    np.testing.assert_array_equal(X, [[2, 0.5], [4, 1.25]])


def test_csv_header_true_forces_first_row(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("10,20\n1,0\n2,1\n")
    X, y = ds.read_csv(path, header=True)
    assert X.shape == (2, 1)
    X, y = ds.read_csv(path, target="20", header=True)
    np.testing.assert_array_equal(y, [0, 1])


def test_csv_whitespace_delimiter(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("1 2   3\n4\t5 6\n")
    X, y = ds.read_csv(path, delimiter=None)
    np.testing.assert_array_equal(X, [[1, 2], [4, 5]])


def test_csv_ragged_names_line(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("x,y,t\n1,2,0\n\n3,4\n")
    with pytest.raises(ValueError, match="ragged CSV: line 4 has 2 fields") as err:
        ds.read_csv(path)
    assert str(path) in str(err.value)


def test_csv_non_numeric_value(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("x,t\n1,0\nabc,1\n")
    with pytest.raises(ValueError, match="non-numeric CSV value 'abc' on line 3") as err:
        ds.read_csv(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("text", ["", "\n\n", "a,b,c\n"])
def test_csv_empty(tmp_path, text):
    path = tmp_path / "empty.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match="empty CSV") as err:
        ds.read_csv(path)
    assert str(path) in str(err.value)


def test_csv_single_column_and_name_without_header(tmp_path):
    path = tmp_path / "one.csv"
    path.write_text("1\n2\n")
    with pytest.raises(ValueError, match="at least 2 columns"):
        ds.read_csv(path)
    path.write_text("1,2\n3,4\n")
    with pytest.raises(ValueError, match="no header row"):
        ds.read_csv(path, target="label")
    with pytest.raises(ValueError, match="out of range"):
        ds.read_csv(path, target=5)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        ds.read_csv(tmp_path / "nope.csv")
    with pytest.raises(FileNotFoundError):
        ds.load_file(tmp_path / "nope.npz")


# --------------------------------------------------------------------------
# NPZ
# --------------------------------------------------------------------------


def test_npz_round_trip(tmp_path):
    path = tmp_path / "d.npz"
    X = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    np.savez(path, X=X, y=np.array([0, 1, 1, 0], dtype=np.uint8), feats=X)
    Xb, yb = ds.read_npz(path)
    assert Xb.shape == (4, 6) and Xb.dtype == np.float64
    assert yb.dtype == np.int64
    Xc, yc = ds.read_npz(path, x_key="feats", y_key="X")
    assert yc.dtype == np.float64 and yc.shape == (4, 2, 3)


def test_npz_missing_key(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, data=np.zeros((2, 2)), y=np.zeros(2))
    with pytest.raises(ValueError, match=r"missing key 'X'.*\['data', 'y'\]") as err:
        ds.read_npz(path)
    assert str(path) in str(err.value)


def test_npz_object_arrays_rejected(tmp_path):
    path = tmp_path / "obj.npz"
    np.savez(path, X=np.array([{"a": 1}, None], dtype=object), y=np.zeros(2))
    with pytest.raises(ValueError, match="pickle") as err:
        ds.read_npz(path)
    assert str(path) in str(err.value)


def test_npz_not_an_archive(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(b"PK\x03\x04 this is not really a zip")
    with pytest.raises(ValueError) as err:
        ds.read_npz(path)
    assert str(path) in str(err.value)


# --------------------------------------------------------------------------
# load_file dispatcher
# --------------------------------------------------------------------------


def test_load_file_dispatches_by_content(tmp_path):
    npz = tmp_path / "data.bin"  # extension deliberately uninformative
    with open(npz, "wb") as fh:
        np.savez(fh, X=np.ones((3, 2)), y=np.array([0, 1, 2]))
    X, y = ds.load_file(npz)
    assert X.shape == (3, 2) and y.dtype == np.int64

    csv = tmp_path / "data.csv"
    csv.write_text("f1,f2,label\n0.5,1,0\n1.5,2,1\n")
    X, y = ds.load_file(csv)
    np.testing.assert_array_equal(y, [0, 1])

    tsv = tmp_path / "data.tsv"
    tsv.write_text("0.5\t1\t0\n1.5\t2\t1\n")
    assert ds.load_file(tsv)[0].shape == (2, 2)

    txt = tmp_path / "data.txt"
    txt.write_text("0.5 1 0\n1.5 2 1\n")
    assert ds.load_file(txt)[0].shape == (2, 2)

    gz_csv = write(tmp_path / "data.csv.gz", b"1,2,0\n3,4,1\n", compress=True)
    assert ds.load_file(gz_csv)[0].shape == (2, 2)


def test_load_file_idx_pair_forms(tmp_path):
    images = np.arange(8, dtype=np.uint8).reshape(2, 2, 2)
    ipath = write(tmp_path / "img-ubyte.gz", idx_bytes(images), compress=True)
    lpath = write(tmp_path / "lab-ubyte", idx_bytes(np.array([3, 4], np.uint8)))
    X1, y1 = ds.load_file(ipath, labels=lpath)
    X2, y2 = ds.load_file(f"{ipath},{lpath}")
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, [3, 4])
    with pytest.raises(ValueError, match="labels file") as err:
        ds.load_file(ipath)
    assert str(ipath) in str(err.value)


def test_load_file_labels_only_for_idx(tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("1,0\n2,1\n")
    with pytest.raises(ValueError, match="only used with IDX"):
        ds.load_file(csv, labels=csv)
