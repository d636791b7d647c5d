"""IDX files (MNIST and friends), plain or gzip-compressed."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib

import numpy as np

from ._targets import as_targets

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
    return X, as_targets(labels)


def looks_like_idx(head):
    return (
        len(head) >= 4 and head[0] == 0 and head[1] == 0
        and head[2] in _IDX_DTYPES and head[3] >= 1
    )
