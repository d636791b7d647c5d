"""Behaviour fixed in portable_bp.datasets: argument checks, exact labels, non-finite values,
clear messages for malformed arrays, IDX intent in load_file, Standardizer overflow."""

import numpy as np
import pytest

from portable_bp import datasets as ds


# -- arguments -----------------------------------------------------------------------------------
@pytest.mark.parametrize("call, match", [
    (lambda: ds.spirals(n_classes=3.0), "n_classes must be an integer >= 2"),  # gave float64 labels
    (lambda: ds.spirals(n_classes=True), "n_classes must be an integer >= 2"),
    (lambda: ds.blobs(centers=2.5), "centers must be a positive integer"),
    (lambda: ds.blobs(n_features=0), "n_features must be a positive integer"),
    (lambda: ds.moons(noise=float("inf")), "noise must be a finite number >= 0"),
    (lambda: ds.sine(noise=float("nan")), "noise must be a finite number >= 0"),
    (lambda: ds.blobs(cluster_std=-0.5), "cluster_std must be a finite number >= 0"),
    (lambda: ds.xor(n_samples=0), "n_samples must be a positive integer"),
])
def test_generator_arguments_are_checked_by_one_helper(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_numpy_integers_are_counts():
    X, y = ds.spirals(n_samples=np.int64(30), n_classes=np.int32(3))
    assert X.shape == (30, 2) and y.dtype == np.int64 and set(y) == {0, 1, 2}


# -- exact labels ------------------------------------------------------------------------------
def test_csv_whole_numbers_beyond_2_53_stay_float_targets(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("x,t\n1,1e19\n2,2e19\n3,1e19\n")
    y = ds.read_csv(path)[1]
    assert y.dtype == np.float64 and y.tolist() == [1e19, 2e19, 1e19]  # were both -2**63
    path.write_text("x,t\n1,9007199254740993\n2,3\n")  # 2**53 + 1 reads as 2**53
    assert ds.read_csv(path)[1].dtype == np.float64
    path.write_text("x,t\n1,9007199254740991\n2,-9007199254740991\n")  # 2**53 - 1: exact
    y = ds.read_csv(path)[1]
    assert y.dtype == np.int64 and y.tolist() == [2**53 - 1, -(2**53 - 1)]


def test_npz_integer_labels_keep_their_values_or_are_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.ones((3, 2)), y=np.array([0, 2**64 - 1, 5], np.uint64))
    with pytest.raises(ValueError, match=r"d\.npz: 'y' holds label 18446744073709551615, beyond int64"):
        ds.read_npz(path)
    np.savez(path, X=np.ones((3, 2)), y=np.array([0, 2**63 - 1, 5], np.uint64))
    assert ds.read_npz(path)[1].tolist() == [0, 2**63 - 1, 5]
    np.savez(path, X=np.ones((3, 2)), y=np.array([-128, 0, 127], np.int8))
    assert ds.read_npz(path)[1].tolist() == [-128, 0, 127]
    np.savez(path, X=np.ones((3, 2)), y=np.array([True, False, True]))
    y = ds.read_npz(path)[1]
    assert y.dtype == np.bool_ and y.tolist() == [True, False, True]  # the user's labels, as LabelEncoder keeps them


# -- non-finite values ------------------------------------------------------------------------------
@pytest.mark.parametrize("value, shown", [("nan", "nan"), ("inf", "inf"), ("-Infinity", "-inf"),
                                          ("1e400", "inf"), ("-1e999", "-inf")])
def test_csv_non_finite_values_are_refused_with_line_and_column(tmp_path, value, shown):
    path = tmp_path / "t.csv"
    path.write_text(f"a,b,label\n1,2,0\n3,{value},1\n")
    with pytest.raises(ValueError, match=rf"t\.csv: non-finite CSV value \({shown}\) on line 3, column 2"):
        ds.read_csv(path)
    path.write_text(f"1,2,0\n3,4,{value}\n")
    with pytest.raises(ValueError, match=r"on line 2, column 3"):
        ds.read_csv(path)


@pytest.mark.parametrize("key", ["X", "y"])
def test_npz_non_finite_values_are_refused_naming_the_array(tmp_path, key):
    arrays = {"X": np.ones((4, 3)), "y": np.zeros(4)}
    arrays[key][2] = np.nan
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match=rf"d\.npz: '{key}' holds a non-finite value \(nan\) at sample 2"):
        ds.read_npz(path)


def test_npz_float16_and_longdouble_overflow_is_refused(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, X=np.array([[1.0], [np.finfo(np.longdouble).max]], np.longdouble), y=np.zeros(2))
    if np.finfo(np.longdouble).max > np.finfo(np.float64).max:
        with pytest.raises(ValueError, match="non-finite value"):
            ds.read_npz(path)
    np.savez(path, X=np.array([[1.0], [2.0]], np.float16), y=np.zeros(2))
    assert ds.read_npz(path)[0].tolist() == [[1.0], [2.0]]


# -- malformed NPZ arrays, named before their data is read -----------------------------------------
@pytest.mark.parametrize("X", [np.ones((3, 2), np.complex128), np.array([["a", "b"]] * 3),
                               np.array([b"ab"] * 3), np.zeros(3, "datetime64[s]"),
                               np.zeros(3, "timedelta64[s]"), np.zeros(3, [("a", "f8"), ("b", "i4")]),
                               np.zeros(3, "V8")],
                         ids=["complex", "unicode", "bytes", "datetime", "timedelta", "structured", "void"])
def test_npz_x_of_a_non_numeric_dtype_is_refused_by_name(tmp_path, X):
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=np.zeros(3))
    with pytest.raises(ValueError, match=r"d\.npz.*'X'") as err:
        ds.read_npz(path)
    assert "dtype" in str(err.value) or "structured" in str(err.value)
    np.savez(path, X=np.zeros((3, 2)), y=X)
    with pytest.raises(ValueError, match=r"d\.npz.*'y'"):
        ds.read_npz(path)


@pytest.mark.parametrize("X, y, match", [
    (np.ones((3, 2)), np.array(1.0), r"'y' is a 0-d array \(a single value\); it needs a sample axis"),
    (np.array(1.0), np.zeros(3), r"'X' is a 0-d array"),
    (np.ones((0, 3)), np.zeros(0), r"'X' holds no samples \(shape \(0, 3\)\)"),
    (np.ones((3, 0)), np.zeros(3), r"'X' has no features \(shape \(3, 0\)\)"),
    (np.ones((3, 2, 0)), np.zeros(3), r"'X' has no features \(shape \(3, 2, 0\)\)"),
    (np.ones((3, 2)), np.zeros((3, 0)), r"'y' has no target values per sample"),
    (np.ones((3, 2)), np.zeros(4), r"'X' has 3 samples but 'y' has 4"),
])
def test_npz_shape_problems_are_named(tmp_path, X, y, match):
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=y)
    with pytest.raises(ValueError, match=r"d\.npz: " + match):
        ds.read_npz(path)


def test_npz_x_in_fortran_order_and_big_endian(tmp_path):
    X = np.asfortranarray(np.arange(12.0).reshape(4, 3)).astype(">f4")
    path = tmp_path / "d.npz"
    np.savez(path, X=X, y=np.arange(4).astype(">i2"))
    Xb, yb = ds.read_npz(path)
    np.testing.assert_array_equal(Xb, np.arange(12.0).reshape(4, 3))
    assert yb.tolist() == [0, 1, 2, 3] and yb.dtype == np.int64


def test_npz_compressed_and_single_npy(tmp_path):
    path = tmp_path / "d.npz"
    np.savez_compressed(path, X=np.ones((5, 2)), y=np.arange(5))
    assert ds.read_npz(path)[1].tolist() == [0, 1, 2, 3, 4]
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(ValueError, match="not an .npz file .it is a single .npy array"):
        ds.read_npz(tmp_path / "a.npy")


# -- IDX ------------------------------------------------------------------------------------------
def idx_file(path, code, shape, data=b"", compress=False):
    import gzip
    import struct

    raw = struct.pack(">BBBB", 0, 0, code, len(shape)) + struct.pack(f">{len(shape)}I", *shape) + data
    path.write_bytes(gzip.compress(raw) if compress else raw)
    return path


def test_idx_with_255_dimensions_or_a_zero_dimension(tmp_path):
    path = idx_file(tmp_path / "a.idx", 0x08, (1,) * 255)
    with pytest.raises(ValueError, match="255 dimensions, more than the 32"):
        ds.read_idx(path)
    path = idx_file(tmp_path / "b.idx", 0x08, (0, 28, 28))
    assert ds.read_idx(path).shape == (0, 28, 28)
    labels = idx_file(tmp_path / "l.idx", 0x08, (0,))
    with pytest.raises(ValueError, match=r"b\.idx: no data: images of shape \(0, 28, 28\)"):
        ds.load_idx_pair(path, labels)
    path = idx_file(tmp_path / "c.idx", 0x08, (2, 0))
    labels = idx_file(tmp_path / "l2.idx", 0x08, (2,), b"\x00\x01")
    with pytest.raises(ValueError, match=r"no data: images of shape \(2, 0\)"):
        ds.load_idx_pair(path, labels)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_float_images_must_be_finite(tmp_path, compress):
    images = np.array([[1.0, np.inf], [0.5, 0.25]], ">f8")
    path = idx_file(tmp_path / "f.idx", 0x0E, (2, 2), images.tobytes(), compress)
    labels = idx_file(tmp_path / "l.idx", 0x08, (2,), b"\x00\x01")
    with pytest.raises(ValueError, match=r"f\.idx holds a non-finite value \(inf\) at image 0, pixel 1"):
        ds.load_idx_pair(path, labels)


def test_idx_pair_limit_covers_both_files(tmp_path):
    images = idx_file(tmp_path / "i.idx", 0x08, (10, 4), bytes(40))
    labels = idx_file(tmp_path / "l.idx", 0x08, (10,), bytes(10))
    X = ds.load_idx_pair(images, labels, max_bytes=8 * 40)[0]  # X as float64 is the largest part
    assert X.shape == (10, 4)
    with pytest.raises(ValueError, match=r"l\.idx: IDX data of shape \(10,\) \(uint8\) needs 10 bytes"):
        ds.load_idx_pair(images, labels, max_bytes=45)
    with pytest.raises(ValueError, match="the float64 feature matrix needs 320 bytes"):
        ds.load_idx_pair(images, labels, max_bytes=319)


def test_idx_gzip_trailing_data_and_truncation(tmp_path):
    path = idx_file(tmp_path / "t.idx.gz", 0x08, (3,), b"\x01\x02\x03\x04", compress=True)
    with pytest.raises(ValueError, match="longer than header says"):
        ds.read_idx(path)
    path = idx_file(tmp_path / "s.idx.gz", 0x0B, (3,), b"\x00\x01\x00", compress=True)
    with pytest.raises(ValueError, match=r"truncated IDX data: header says shape \(3,\) \(6 bytes of int16\)"):
        ds.read_idx(path)


# -- load_file: an IDX file that is broken is reported as IDX, not as a text table -----------------
@pytest.mark.parametrize("name, content, match", [
    ("train-labels.idx1-ubyte", b"\x01\x00\x08\x01\x00\x00\x00\x01\x07", "not an IDX file: bad magic number"),
    ("labels.idx", b"1,2\n3,4\n", "not an IDX file: bad magic number 0x312c320a"),
    ("t10k-images-idx3-ubyte.gz", b"\x00\x00\x0a\x01\x00\x00\x00\x01\x07", "unknown dtype code 0x0A"),
    ("data.bin", b"\x00\x00\x08\x00", "number of dimensions is 0"),
    ("data.bin", b"\x00\x00\x7f\x01rest", "unknown dtype code 0x7F"),
], ids=["ubyte-name", "idx-name-text", "gz-name", "zero-dims", "zero-bytes-start"])
def test_load_file_reports_a_broken_idx_file_as_idx(tmp_path, name, content, match):
    import gzip

    path = tmp_path / name
    path.write_bytes(gzip.compress(content) if name.endswith(".gz") else content)
    with pytest.raises(ValueError, match=match) as err:
        ds.load_file(path, labels=path)
    assert str(path) in str(err.value) and "text table" not in str(err.value)


def test_load_file_passes_max_bytes_on(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("1,2,0\n3,4,1\n" * 100)
    assert ds.load_file(path, max_bytes=10_000)[0].shape == (200, 2)
    with pytest.raises(ValueError, match="more than 1,000 bytes"):
        ds.load_file(path, max_bytes=1000)


# -- CSV surfaces --------------------------------------------------------------------------------------
@pytest.mark.parametrize("content", [
    b"\xef\xbb\xbfa,b,label\n1,2,0\n3,4,1\n",           # UTF-8 byte-order mark
    b"a,b,label\r\n1,2,0\r\n3,4,1\r\n",                  # CRLF
    b"a,b,label\r1,2,0\r3,4,1",                          # old Mac CR, no final newline
    b'"a","b, with a comma","label"\n1,2,0\n"3","4",1\n',  # quoted names and values
    b'"a","b\nover two lines","label"\n1,2,0\n3,4,1\n',  # a quoted newline in a name
    b",,\n  \na,b,label\n\n,,,\n1,2,0\n \t \n3,4,1\n\n",   # blank lines of all kinds
], ids=["bom", "crlf", "cr", "quoted", "quoted-newline", "blank-lines"])
def test_csv_text_variants(tmp_path, content):
    path = tmp_path / "t.csv"
    path.write_bytes(content)
    X, y = ds.read_csv(path, target="label")
    np.testing.assert_array_equal(X, [[1, 2], [3, 4]])
    assert y.tolist() == [0, 1]


def test_csv_line_numbers_count_every_physical_line(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b'"a","b\nc",label\r\n\r\n1,2,0\r\n3,x,1\r\n')
    with pytest.raises(ValueError, match="non-numeric CSV value 'x' on line 5, column 2"):
        ds.read_csv(path)


def test_csv_duplicate_header_names(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,a,label\n1,2,0\n3,4,1\n")
    with pytest.raises(ValueError, match=r"column name 'a' appears more than once \(columns 1 and 2\)"):
        ds.read_csv(path, target="a")
    assert ds.read_csv(path, target="label")[1].tolist() == [0, 1]
    assert ds.read_csv(path, target=1)[1].tolist() == [2, 4]


@pytest.mark.parametrize("delimiter", ["", ";;", '"', "\n", "\r"])
def test_csv_delimiter_must_be_one_ordinary_character(tmp_path, delimiter):
    path = tmp_path / "t.csv"
    path.write_text("1;2\n")
    with pytest.raises(ValueError, match="delimiter must be one character"):
        ds.read_csv(path, delimiter=delimiter)


@pytest.mark.parametrize("target", [1.0, None, True, [1]])
def test_csv_target_type_is_checked_before_reading(tmp_path, target):
    with pytest.raises(TypeError, match="target must be a column index or name"):
        ds.read_csv(tmp_path / "never-read.csv", target=target)


def test_csv_rows_longer_than_a_piece_are_streamed(tmp_path):
    from portable_bp.datasets._records import PIECE

    width = PIECE // 3  # each data line is about 2 * PIECE characters
    data = np.arange(3 * width).reshape(3, width) % 97
    path = tmp_path / "wide.csv"
    with open(path, "w") as f:
        f.write(",".join(f"c{i}" for i in range(width)) + "\n")
        f.write("," * (PIECE + 10) + "\n")  # a long blank line is still blank
        f.writelines(",".join(map(str, row)) + "\n" for row in data)
    X, y = ds.read_csv(path, target="c5")
    np.testing.assert_array_equal(y, data[:, 5])
    np.testing.assert_array_equal(X, np.delete(data, 5, axis=1))
    with open(path, "a") as f:
        f.write(",".join(["1"] * (width + 3)) + "\n")
    with pytest.raises(ValueError, match=f"ragged CSV: line 6 has {width + 3} fields, line 1 has {width}"):
        ds.read_csv(path)


def test_csv_non_utf8_text(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes("a,b\n1,2\n".encode("utf-16"))
    with pytest.raises(ValueError, match=r"t\.csv: not a UTF-8 text file"):
        ds.read_csv(path)


def test_csv_quote_left_open_is_bounded(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('a,"b\n' + "1,2\n" * (2 << 20))  # 8 MB swallowed by one quoted field
    with pytest.raises(ValueError, match="field larger than field limit"):
        ds.read_csv(path)  # the csv module's own limit on one field
    path.write_text('a,"b\n",' + '"c\n",' * (1 << 20) + "d\n")  # one record of small quoted fields
    with pytest.raises(ValueError, match="quoted record starting on line 1 is still open after 4,194,304"):
        ds.read_csv(path)


# -- Standardizer ------------------------------------------------------------------------------------
def test_standardizer_with_values_near_the_float64_limit():
    X = np.array([[1.0, 2.0], [1e308, 3.0], [5.0, 4.0], [-1e308, 5.0]])
    scaler = ds.Standardizer().fit(X)
    assert np.all(np.isfinite(scaler.scale_)) and np.all(np.isfinite(scaler.mean_))
    Z = scaler.transform(X)
    assert np.all(np.isfinite(Z)) and np.count_nonzero(Z[:, 0]) == 4  # was scale inf, every value 0.0
    np.testing.assert_allclose(Z[:, 0].std(), 1.0)
    np.testing.assert_allclose(scaler.scale_[1], X[:, 1].std())  # ordinary features as before


def test_standardizer_overflow_is_an_error_naming_the_feature():
    scaler = ds.Standardizer().fit(np.array([[0.0, -1e308], [1.0, -0.9e308]]))
    with pytest.raises(ValueError, match=r"transform overflows float64 in feature\(s\) \[1\]"):
        scaler.transform(np.array([[0.5, 1.7e308]]))  # 1.7e308 - (-0.95e308) is beyond float64
    big = ds.Standardizer().fit(np.array([[0.0], [1e300]]))
    with pytest.raises(ValueError, match=r"inverse_transform overflows float64 in feature\(s\) \[0\]"):
        big.inverse_transform(np.array([[1e10]]))


@pytest.mark.parametrize("method", ["fit", "transform", "inverse_transform"])
def test_standardizer_refuses_non_finite_input(method):
    scaler = ds.Standardizer().fit(np.ones((3, 2)))
    X = np.array([[1.0, 2.0], [np.nan, 1.0]])
    with pytest.raises(ValueError, match=rf"Standardizer.{method}: X holds a non-finite value \(nan\) at "
                                         r"sample 1, feature 0"):
        getattr(scaler, method)(X)
