"""Small datasets, local-file readers and host-side preprocessing.

Everything here runs on the host with NumPy only: data is loaded, split and
standardized once, then handed to whichever array backend trains on it. The
functions return plain ``numpy.ndarray`` objects:

* ``X`` is always ``float64`` with shape ``(n_samples, n_features)``;
* ``y`` is ``int64`` class labels with shape ``(n_samples,)`` for
  classification, or ``float64`` targets (``(n_samples, k)`` or
  ``(n_samples,)``) for regression.

Contents
--------
Bundled / synthetic data (seeded, no download):
    :func:`digits`, :func:`xor`, :func:`spirals`, :func:`moons`,
    :func:`sine`, :func:`blobs`.
Local files:
    :func:`read_idx` (MNIST IDX, plain or gzip), :func:`load_idx_pair`,
    :func:`read_csv`, :func:`read_npz`, and the dispatcher :func:`load_file`
    used by the command line's ``--data FILE``.
Preprocessing:
    :func:`train_test_split` and :class:`Standardizer`.

A file that cannot be read as asked raises ``ValueError`` whose message
starts with the file's path and then says what is wrong with it; a missing
file raises the usual ``FileNotFoundError``.
"""

from __future__ import annotations

import csv
import gzip
import io
import math
import numbers
import os
import struct
import zipfile
import zlib

import numpy as np

__all__ = [
    "digits",
    "xor",
    "spirals",
    "moons",
    "sine",
    "blobs",
    "read_idx",
    "load_idx_pair",
    "read_csv",
    "read_npz",
    "load_file",
    "train_test_split",
    "Standardizer",
]


# --------------------------------------------------------------------------
# Bundled and synthetic datasets
# --------------------------------------------------------------------------


def digits():
    """Return scikit-learn's bundled 8x8 handwritten digits (no download).

    1797 samples, 64 pixel features scaled from 0..16 to [0, 1], labels 0..9.

    Returns ``(X, y)`` with ``X`` float64 ``(1797, 64)`` and ``y`` int64
    ``(1797,)``. scikit-learn is imported here, not at module import, because
    it is an optional dependency.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise ImportError(
            "digits() needs scikit-learn, which ships the data set: "
            'pip install "portable_bp[datasets]"'
        ) from exc
    bunch = load_digits()
    X = np.asarray(bunch.data, dtype=np.float64) / 16.0
    y = np.asarray(bunch.target, dtype=np.int64)
    return X, y


def xor(n_samples=None, noise=0.0, seed=0):
    """Return the XOR problem, the classic test that a hidden layer is needed.

    With ``n_samples=None`` (default) this is the 4-row truth table, in the
    order (0,0), (0,1), (1,0), (1,1). With an integer ``n_samples`` the
    corners are drawn at random, so larger, noisy versions can be made.
    ``noise`` is the standard deviation of Gaussian noise added to ``X``.

    Returns ``(X, y)``: ``X`` float64 ``(n, 2)`` and ``y`` float64 ``(n, 1)``
    holding 0.0 / 1.0, ready as targets for a single sigmoid output.
    """
    rng = np.random.default_rng(seed)
    _check_non_negative("noise", noise)
    if n_samples is None:
        corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    else:
        _check_n_samples(n_samples)
        corners = rng.integers(0, 2, size=(n_samples, 2)).astype(np.float64)
    y = np.logical_xor(corners[:, 0], corners[:, 1]).astype(np.float64)
    X = corners + noise * rng.standard_normal(corners.shape)
    return X, y[:, None]


def spirals(n_samples=300, n_classes=2, noise=0.1, seed=0):
    """Return ``n_classes`` interleaved spiral arms in the plane.

    A small problem that a linear model cannot solve but a two-layer MLP can.
    Points are spread evenly over the classes (labels cycle 0, 1, ...).
    Each arm turns 1.5 times around the origin, radius growing from 0 to 1;
    ``noise`` is the standard deviation of Gaussian noise added to ``X``.

    Returns ``(X, y)``: ``X`` float64 ``(n, 2)``, ``y`` int64 ``(n,)`` in
    ``0..n_classes-1``.
    """
    _check_n_samples(n_samples)
    _check_non_negative("noise", noise)
    if int(n_classes) != n_classes or n_classes < 2:
        raise ValueError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    rng = np.random.default_rng(seed)
    y = np.arange(n_samples, dtype=np.int64) % n_classes
    radius = rng.uniform(0.0, 1.0, n_samples)
    angle = 3.0 * np.pi * radius + 2.0 * np.pi * y / n_classes
    X = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    X += noise * rng.standard_normal(X.shape)
    return X, y


def moons(n_samples=200, noise=0.1, seed=0):
    """Return two interleaving half circles (the "two moons" problem).

    Class 0 is the upper arc of the unit circle, class 1 the lower arc
    shifted to (1, 0.5); labels alternate 0, 1, ... ``noise`` is the
    standard deviation of Gaussian noise added to ``X``.

    Returns ``(X, y)``: ``X`` float64 ``(n, 2)``, ``y`` int64 ``(n,)`` in {0, 1}.
    """
    _check_n_samples(n_samples)
    _check_non_negative("noise", noise)
    rng = np.random.default_rng(seed)
    y = np.arange(n_samples, dtype=np.int64) % 2
    theta = rng.uniform(0.0, np.pi, n_samples)
    upper = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    lower = np.stack([1.0 - np.cos(theta), 0.5 - np.sin(theta)], axis=1)
    X = np.where(y[:, None] == 0, upper, lower)
    X += noise * rng.standard_normal(X.shape)
    return X, y


def sine(n_samples=200, noise=0.1, seed=0):
    """Return a 1-D regression problem: ``y = sin(x) + noise``.

    ``x`` is drawn uniformly from [-pi, pi]; ``noise`` is the standard
    deviation of the Gaussian noise added to ``y``.

    Returns ``(X, y)``: ``X`` float64 ``(n, 1)``, ``y`` float64 ``(n, 1)``.
    """
    _check_n_samples(n_samples)
    _check_non_negative("noise", noise)
    rng = np.random.default_rng(seed)
    X = rng.uniform(-np.pi, np.pi, size=(n_samples, 1))
    y = np.sin(X) + noise * rng.standard_normal(X.shape)
    return X, y


def blobs(n_samples=300, n_features=2, centers=3, cluster_std=1.0, seed=0):
    """Return isotropic Gaussian clusters, one class per cluster.

    ``centers`` is either a number of clusters (their centres are drawn
    uniformly from the box [-10, 10] in each feature) or an array of
    shape ``(k, n_features)`` giving them. Points are spread evenly over the
    clusters (labels cycle 0, 1, ...).

    Returns ``(X, y)``: ``X`` float64 ``(n, n_features)``, ``y`` int64
    ``(n,)`` in ``0..k-1``.
    """
    _check_n_samples(n_samples)
    _check_non_negative("cluster_std", cluster_std)
    rng = np.random.default_rng(seed)
    if np.ndim(centers) == 0:
        if int(centers) != centers or centers < 1:
            raise ValueError(f"centers must be an integer >= 1, got {centers!r}")
        _check_n_samples(n_features, name="n_features")
        centers = rng.uniform(-10.0, 10.0, size=(int(centers), n_features))
    else:
        centers = np.asarray(centers, dtype=np.float64)
        if centers.ndim != 2 or centers.shape[1] != n_features:
            raise ValueError(
                f"centers must have shape (k, n_features={n_features}), "
                f"got {centers.shape}"
            )
    y = np.arange(n_samples, dtype=np.int64) % len(centers)
    X = centers[y] + cluster_std * rng.standard_normal((n_samples, n_features))
    return X, y


def _check_n_samples(value, name="n_samples"):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_non_negative(name, value):
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")


# --------------------------------------------------------------------------
# IDX files (MNIST and friends)
# --------------------------------------------------------------------------

# IDX type codes -> big-endian NumPy dtypes (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path, limit=-1):
    """Return the file's bytes (at most ``limit``), gunzipped when needed.

    Compression is detected from content (the gzip magic 0x1f8b), not from
    the file name, so a ``.gz`` that was already unpacked (or vice versa)
    still loads.
    """
    with open(path, "rb") as fh:
        compressed = fh.read(2) == _GZIP_MAGIC
        fh.seek(0)
        if not compressed:
            return fh.read(limit)
        try:
            with gzip.GzipFile(fileobj=fh) as unpacked:
                return unpacked.read(limit)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(
                f"{os.fspath(path)}: corrupt gzip data: {exc}"
            ) from exc


def read_idx(path):
    """Read an IDX file (the MNIST format), plain or gzip-compressed.

    Layout: two zero bytes, a type-code byte (0x08 uint8, 0x09 int8,
    0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), a byte giving the
    number of dimensions, that many big-endian uint32 sizes, then the data,
    big-endian, C order. The data length must match the header exactly.

    Returns the array with its stored element type, in native byte order.
    """
    name = os.fspath(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(
            f"{name}: not an IDX file: {len(data)} bytes, shorter than the "
            "4-byte magic number"
        )
    if data[0] != 0 or data[1] != 0:
        raise ValueError(
            f"{name}: not an IDX file: bad magic number 0x{data[:4].hex()} "
            "(the first two bytes must be zero)"
        )
    code, ndim = data[2], data[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise ValueError(
            f"{name}: bad IDX magic number 0x{data[:4].hex()}: unknown dtype "
            f"code 0x{code:02X} (known: {known})"
        )
    if ndim == 0:
        raise ValueError(f"{name}: bad IDX header: number of dimensions is 0")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(
            f"{name}: truncated IDX header: {ndim} dimensions need "
            f"{header_size} header bytes, file has {len(data)}"
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    dtype = _IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    actual = len(data) - header_size
    if actual < expected:
        raise ValueError(
            f"{name}: truncated IDX data: header says shape {shape} "
            f"({expected} bytes of {dtype.name}), file has {actual} bytes"
        )
    if actual > expected:
        raise ValueError(
            f"{name}: IDX data longer than header says: shape {shape} needs "
            f"{expected} bytes, file has {actual}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def load_idx_pair(images_path, labels_path):
    """Load an IDX images file and its IDX labels file as ``(X, y)``.

    Images of shape ``(n, d1, d2, ...)`` are flattened to
    ``(n, d1*d2*...)`` float64; uint8 pixels are scaled to [0, 1] by
    dividing by 255, other types are converted as they are. Labels must be
    1-D with the same ``n``; integer labels become int64 (classes), float
    labels float64 (regression targets).
    """
    images = read_idx(images_path)
    labels = read_idx(labels_path)
    if labels.ndim != 1:
        raise ValueError(
            f"{os.fspath(labels_path)}: IDX labels must be 1-D, got shape "
            f"{labels.shape}"
        )
    if len(images) != len(labels):
        raise ValueError(
            f"{os.fspath(images_path)} has {len(images)} images but "
            f"{os.fspath(labels_path)} has {len(labels)} labels"
        )
    X = images.reshape(len(images), -1).astype(np.float64)
    if images.dtype == np.uint8:
        X /= 255.0
    return X, _as_targets(labels)


def _looks_like_idx(head):
    return (
        len(head) >= 4 and head[0] == 0 and head[1] == 0
        and head[2] in _IDX_DTYPES and head[3] >= 1
    )


# --------------------------------------------------------------------------
# CSV / text tables
# --------------------------------------------------------------------------


def read_csv(path, target=-1, header="auto", delimiter=","):
    """Read a numeric table: one sample per row, one column is the target.

    Parameters
    ----------
    target : int or str
        Column holding ``y``: an index (negative counts from the end, the
        default ``-1`` is the last column) or a column name from the header.
    header : "auto", True or False
        Whether the first row holds column names. ``"auto"`` treats it as a
        header when any of its fields is not a number.
    delimiter : str or None
        Field separator; ``None`` splits on runs of whitespace.

    Blank lines are skipped; gzip-compressed files are read transparently.
    ``y`` is int64 when every target value is a whole number (class labels),
    float64 otherwise.

    Returns ``(X, y)``: ``X`` float64 ``(n, n_columns - 1)``, ``y`` ``(n,)``.
    """
    name = os.fspath(path)
    if header not in ("auto", True, False):
        raise ValueError(f"header must be 'auto', True or False, got {header!r}")
    rows = _read_rows(path, delimiter)  # list of (line_number, fields)
    if not rows:
        raise ValueError(f"{name}: empty CSV file: no rows")

    first_line, first = rows[0]
    width = len(first)
    for line, fields in rows[1:]:
        if len(fields) != width:
            raise ValueError(
                f"{name}: ragged CSV: line {line} has {len(fields)} fields, "
                f"line {first_line} has {width}"
            )

    if header == "auto":
        # a header has a non-numeric name; an empty field is missing data, reported below
        header = any(field.strip() and not _is_number(field) for field in first)
    columns = [field.strip() for field in first] if header else None
    body = rows[1:] if header else rows
    if not body:
        raise ValueError(f"{name}: empty CSV file: no data rows")
    if width < 2:
        raise ValueError(
            f"{name}: CSV needs at least 2 columns (features and target), "
            f"has {width}"
        )

    table = np.empty((len(body), width), dtype=np.float64)
    for i, (line, fields) in enumerate(body):
        for j, field in enumerate(fields):
            try:
                table[i, j] = float(field)
            except ValueError:
                raise ValueError(
                    f"{name}: non-numeric CSV value {field.strip()!r} on "
                    f"line {line}, column {j + 1}"
                ) from None

    column = _target_column(name, target, columns, width)
    y = table[:, column]
    X = np.delete(table, column, axis=1)
    return X, _integral_as_int(y)


def _read_rows(path, delimiter):
    """Return ``[(line_number, fields), ...]`` for the non-blank lines."""
    name = os.fspath(path)
    try:
        text = _read_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}: not a UTF-8 text file: {exc}") from exc
    if delimiter is None:
        lines = enumerate(text.splitlines(), start=1)
        return [(n, line.split()) for n, line in lines if line.strip()]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        return [
            (reader.line_num, fields)
            for fields in reader
            if any(field.strip() for field in fields)
        ]
    except csv.Error as exc:
        raise ValueError(f"{name}: malformed CSV: {exc}") from exc


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _target_column(name, target, columns, width):
    if isinstance(target, str):
        if columns is None:
            raise ValueError(
                f"{name}: target {target!r} is a column name but the CSV has "
                "no header row"
            )
        if target not in columns:
            raise ValueError(
                f"{name}: no column named {target!r}; columns are {columns}"
            )
        return columns.index(target)
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise TypeError(f"target must be a column index or name, got {target!r}")
    if not -width <= target < width:
        raise ValueError(
            f"{name}: target column {target} out of range for {width} columns"
        )
    return int(target) % width


def _integral_as_int(y):
    """Whole-number targets are class labels: return them as int64."""
    if np.all(np.isfinite(y)) and np.all(y == np.round(y)):
        return y.astype(np.int64)
    return y


# --------------------------------------------------------------------------
# NPZ archives
# --------------------------------------------------------------------------


def read_npz(path, x_key="X", y_key="y"):
    """Read ``X`` and ``y`` arrays from a NumPy ``.npz`` archive.

    Loaded with ``allow_pickle=False``: an archive is data, and unpickling
    could run arbitrary code, so object arrays are rejected. ``X`` is
    returned as float64 with shape ``(n, features)`` (a 1-D ``X`` becomes one
    column, trailing dimensions are flattened); integer or boolean ``y``
    becomes int64 class labels, floating ``y`` stays float64 targets.
    """
    name = os.fspath(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{name}: cannot read as .npz: {exc}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{name}: a single .npy array, not an .npz archive")
    with archive:
        keys = list(archive.files)
        for key in (x_key, y_key):
            if key not in keys:
                raise ValueError(
                    f"{name}: missing key {key!r} in .npz; keys present: {keys}"
                )
        try:
            X, y = archive[x_key], archive[y_key]
        except ValueError as exc:
            if "pickle" not in str(exc):
                raise ValueError(f"{name}: corrupt array in .npz: {exc}") from exc
            raise ValueError(
                f"{name}: .npz holds object arrays, which need pickle; "
                "refusing to load them (save plain numeric arrays instead)"
            ) from exc
        except (OSError, zipfile.BadZipFile, zlib.error) as exc:
            raise ValueError(f"{name}: corrupt .npz archive: {exc}") from exc
    X, y = _as_features(name, X), _as_targets(y, name)
    if len(X) != len(y):
        raise ValueError(f"{name}: {x_key!r} has {len(X)} samples but {y_key!r} has {len(y)}")
    return X, y


def _as_features(name, X):
    if X.ndim == 0 or not (X.dtype.kind in "biuf"):
        raise ValueError(
            f"{name}: X must be a numeric array with a sample axis, got "
            f"dtype {X.dtype} shape {X.shape}"
        )
    return X.reshape(len(X), -1).astype(np.float64)


def _as_targets(y, name=None):
    """Integer/bool targets -> int64 labels, floating targets -> float64."""
    if y.dtype.kind in "biu":
        return y.astype(np.int64)
    if y.dtype.kind == "f":
        return y.astype(np.float64)
    where = f"{name}: " if name else ""
    raise ValueError(f"{where}y must be numeric, got dtype {y.dtype}")


# --------------------------------------------------------------------------
# Dispatcher used by the CLI
# --------------------------------------------------------------------------


def load_file(path, labels=None, *, target=-1, header="auto", delimiter=None,
              x_key="X", y_key="y"):
    """Load ``(X, y)`` from a local file, choosing the reader by content.

    * NPZ (zip archive): :func:`read_npz` with ``x_key`` / ``y_key``.
    * IDX (header of two zero bytes, a known type code and a dimension
      count; plain or gzip): :func:`load_idx_pair`. IDX keeps images and
      labels in two files, so give the labels file as ``labels=`` or join
      the two paths with a comma: ``"train-images.idx3-ubyte,train-labels.idx1-ubyte"``.
    * anything else is read as a text table by :func:`read_csv` with
      ``target`` and ``header``. ``delimiter=None`` picks one: tab for
      ``.tsv``, comma when the first non-blank line has one, otherwise runs
      of whitespace.

    ``labels`` is only meaningful for IDX; giving it for another format is
    an error rather than being silently ignored.
    """
    if labels is None and isinstance(path, str) and "," in path \
            and not os.path.exists(path):
        path, labels = (part.strip() for part in path.split(",", 1))
    name = os.fspath(path)
    head = _read_bytes(path, limit=4)

    if head in (b"PK\x03\x04", b"PK\x05\x06"):  # zip: local file / empty archive
        _no_labels_file(name, labels, "an .npz archive")
        return read_npz(path, x_key=x_key, y_key=y_key)
    if _looks_like_idx(head):
        if labels is None:
            raise ValueError(
                f"{name}: IDX file holds only images or only labels; pass "
                "the labels file too (labels=... or 'images,labels')"
            )
        return load_idx_pair(path, labels)
    _no_labels_file(name, labels, "a text table")
    if delimiter is None:
        delimiter = _guess_delimiter(path)
    return read_csv(path, target=target, header=header, delimiter=delimiter)


def _no_labels_file(name, labels, kind):
    if labels is not None:
        raise ValueError(
            f"{name}: a separate labels file ({os.fspath(labels)}) is only "
            f"used with IDX images, but this file is {kind}"
        )


def _guess_delimiter(path):
    if os.fspath(path).lower().endswith(".tsv"):
        return "\t"
    try:
        text = _read_bytes(path, limit=65536).decode("utf-8-sig", errors="replace")
    except ValueError:
        return ","  # let read_csv report the problem
    for line in text.splitlines():
        if line.strip():
            return "," if "," in line else None
    return ","


# --------------------------------------------------------------------------
# Splitting and scaling
# --------------------------------------------------------------------------


def train_test_split(X, y, test_size=0.2, seed=0, stratify=None):
    """Split ``X`` and ``y`` into shuffled train and test parts, reproducibly.

    ``test_size`` is a fraction in (0, 1) (the test count is rounded up, and
    at least one sample stays in training) or an integer count in
    ``1..n-1``. ``stratify`` is an array of class labels (usually ``y``):
    each class then keeps its share in both parts, so small classes are not
    lost from the test set by chance.

    Returns ``X_train, X_test, y_train, y_test``.
    """
    X, y = np.asarray(X), np.asarray(y)
    n = len(X)
    if len(y) != n:
        raise ValueError(f"X and y have different lengths: {n} and {len(y)}")
    n_test = _test_count(test_size, n)
    rng = np.random.default_rng(seed)
    if stratify is None:
        order = rng.permutation(n)
        test, train = order[:n_test], order[n_test:]
    else:
        test, train = _stratified_indices(np.asarray(stratify), n, n_test, rng)
    return X[train], X[test], y[train], y[test]


def _test_count(test_size, n):
    if isinstance(test_size, bool):
        raise TypeError("test_size must be a float fraction or an int count")
    if isinstance(test_size, (int, np.integer)):
        count = int(test_size)
        if not 1 <= count <= n - 1:
            raise ValueError(
                f"test_size={count} must leave both parts non-empty: "
                f"use 1..{n - 1} for {n} samples"
            )
        return count
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1) or an int, got {test_size!r}")
    count = math.ceil(test_size * n)
    if not 1 <= count <= n - 1:
        raise ValueError(
            f"test_size={test_size} leaves an empty part with {n} samples"
        )
    return count


def _stratified_indices(labels, n, n_test, rng):
    """Per-class test counts by largest remainder, then shuffle each part."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(
            f"stratify must be {n} class labels, shape ({n},), "
            f"got shape {labels.shape}"
        )
    classes, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        lonely = classes[np.argmin(counts)]
        raise ValueError(
            f"cannot stratify: class {lonely!r} has only 1 sample; "
            "every class needs at least 2"
        )
    quota = counts * n_test / n
    per_class = np.floor(quota).astype(np.int64)
    short = n_test - per_class.sum()
    per_class[np.argsort(-(quota - per_class), kind="stable")[:short]] += 1
    test, train = [], []
    for k in range(len(classes)):
        members = rng.permutation(np.flatnonzero(codes == k))
        test.append(members[: per_class[k]])
        train.append(members[per_class[k]:])
    return rng.permutation(np.concatenate(test)), rng.permutation(np.concatenate(train))


class Standardizer:
    """Rescale each feature to zero mean and unit variance.

    Fit on the training part only, then transform train and test with the
    same ``mean_`` and ``scale_``, so nothing about the test data leaks into
    training. A constant feature (standard deviation zero, up to rounding)
    gets ``scale_ = 1`` so it is centred rather than divided by zero.
    """

    def __init__(self):
        self.mean_ = None
        self.scale_ = None

    def fit(self, X):
        """Learn per-feature mean and standard deviation from ``X``; return self."""
        X = self._as_2d(X)
        if len(X) == 0:
            raise ValueError("Standardizer.fit needs at least one sample, got 0")
        mean = X.mean(axis=0)
        std = X.std(axis=0)
        tiny = 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)
        self.mean_ = mean
        self.scale_ = np.where(std <= tiny, 1.0, std)
        return self

    def transform(self, X):
        """Return ``(X - mean_) / scale_`` as float64."""
        X = self._checked(X, "transform")
        return (X - self.mean_) / self.scale_

    def fit_transform(self, X):
        """Fit on ``X`` and return it transformed."""
        return self.fit(X).transform(X)

    def inverse_transform(self, X):
        """Undo :meth:`transform`: return ``X * scale_ + mean_``."""
        X = self._checked(X, "inverse_transform")
        return X * self.scale_ + self.mean_

    @property
    def n_features_in_(self):
        return None if self.mean_ is None else len(self.mean_)

    def _checked(self, X, method):
        if self.mean_ is None:
            raise ValueError(
                f"Standardizer.{method} called before fit: call fit(X_train) first"
            )
        X = self._as_2d(X)
        if X.shape[1] != len(self.mean_):
            raise ValueError(
                f"X has {X.shape[1]} features, but the Standardizer was fitted "
                f"with {len(self.mean_)} features"
            )
        return X

    @staticmethod
    def _as_2d(X):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(
                f"expected a 2-D array (n_samples, n_features), got shape {X.shape}"
            )
        return X

    def __repr__(self):
        state = "unfitted" if self.mean_ is None else f"{self.n_features_in_} features"
        return f"Standardizer({state})"
