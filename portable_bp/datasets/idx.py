"""IDX files (MNIST and friends), plain or gzip-compressed, read header first.

Layout: two zero bytes, a type-code byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C
int32, 0x0D float32, 0x0E float64), a byte giving the number of dimensions, that many
big-endian uint32 sizes, then the data, big-endian, C order.

The header says exactly how many data bytes follow. That number is checked against the
byte limit first; then exactly that many bytes are read (a gzip stream is inflated no
further) and one more is asked for, to catch trailing data. A 4 MB gzip file whose
header declares 10 bytes is refused after inflating 11 bytes, not 8.5 GB.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from .._safe_io import DataStream, check_size, display_name, resolve_max_bytes
from .._safe_io.npy import MAX_DIMS
from ._targets import as_targets, check_finite

# IDX type codes -> big-endian NumPy dtypes (http://yann.lecun.com/exdb/mnist/).
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path, *, max_bytes: int | None = None) -> np.ndarray:
    """Read an IDX file, plain or gzip-compressed (detected by content, not name).

    The data length must match the header exactly. ``max_bytes`` caps the data the
    header may declare (default: ``PORTABLE_BP_MAX_BYTES`` or 4 GiB); it is checked
    before anything is read. Returns the array with its stored element type, in native
    byte order.
    """
    name = display_name(path)
    limit = resolve_max_bytes(max_bytes)
    with DataStream(path, name) as stream:
        dtype, shape, header_size = _read_header(stream, name)
        expected = math.prod(shape) * dtype.itemsize
        check_size(expected, limit, name, f"IDX data of shape {shape} ({dtype.name})")
        if not stream.compressed:
            _check_disk_size(name, stream.disk_size - header_size, expected, shape, dtype)
        data = stream.read_up_to(expected)
        more = stream.read(1) if len(data) == expected else b""
    if len(data) < expected:
        raise ValueError(f"{name}: truncated IDX data: header says shape {shape} ({expected} bytes "
                         f"of {dtype.name}), file has {len(data)} bytes")
    if more:
        raise ValueError(f"{name}: IDX data longer than header says: shape {shape} needs {expected} "
                         "bytes, the (decompressed) file holds more")
    array = np.frombuffer(data, dtype=dtype).reshape(shape)
    return array.byteswap(inplace=True).view(dtype.newbyteorder("=")) if not dtype.isnative else array


def _read_header(stream: DataStream, name: str) -> tuple[np.dtype, tuple, int]:
    """``(dtype, shape, header bytes)`` from the magic number and the dimension sizes."""
    magic = bytes(stream.read_up_to(4))
    if len(magic) < 4:
        raise ValueError(f"{name}: not an IDX file: {len(magic)} bytes, shorter than the 4-byte "
                         "magic number")
    if magic[0] != 0 or magic[1] != 0:
        raise ValueError(f"{name}: not an IDX file: bad magic number 0x{magic.hex()} (the first "
                         "two bytes must be zero)")
    code, ndim = magic[2], magic[3]
    if code not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise ValueError(f"{name}: bad IDX magic number 0x{magic.hex()}: unknown dtype code "
                         f"0x{code:02X} (known: {known})")
    if ndim == 0:
        raise ValueError(f"{name}: bad IDX header: number of dimensions is 0")
    if ndim > MAX_DIMS:
        raise ValueError(f"{name}: bad IDX header: {ndim} dimensions, more than the {MAX_DIMS} "
                         "an array may have")
    sizes = bytes(stream.read_up_to(4 * ndim))
    if len(sizes) < 4 * ndim:
        raise ValueError(f"{name}: truncated IDX header: {ndim} dimensions need {4 + 4 * ndim} "
                         f"header bytes, file has {4 + len(sizes)}")
    return _IDX_DTYPES[code], struct.unpack(f">{ndim}I", sizes), 4 + 4 * ndim


def _check_disk_size(name, actual, expected, shape, dtype) -> None:
    """For a plain file the size on disk already says whether the data is all there."""
    if actual < expected:
        raise ValueError(f"{name}: truncated IDX data: header says shape {shape} ({expected} bytes "
                         f"of {dtype.name}), file has {actual} bytes")
    if actual > expected:
        raise ValueError(f"{name}: IDX data longer than header says: shape {shape} needs {expected} "
                         f"bytes, file has {actual}")


def load_idx_pair(images_path, labels_path, *,
                  max_bytes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load an IDX images file and its IDX labels file as ``(X, y)``.

    Images of shape ``(n, d1, d2, ...)`` are flattened to ``(n, d1*d2*...)`` float64;
    uint8 pixels are scaled to [0, 1] by dividing by 255, other types are converted as
    they are (and must be finite). Labels must be 1-D with the same ``n``; integer
    labels become int64 (classes), float labels float64 (regression targets).
    ``max_bytes`` bounds the two files' data together and the float64 ``X``.
    """
    limit = resolve_max_bytes(max_bytes)
    images = read_idx(images_path, max_bytes=limit)
    labels = read_idx(labels_path, max_bytes=max(1, limit - images.nbytes))
    images_name, labels_name = display_name(images_path), display_name(labels_path)
    if labels.ndim != 1:
        raise ValueError(f"{labels_name}: IDX labels must be 1-D, got shape {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{images_name} has {len(images)} images but {labels_name} has "
                         f"{len(labels)} labels")
    return idx_features(images, images_name, limit), as_targets(labels, labels_name)


def idx_features(images: np.ndarray, images_name: str, limit: int) -> np.ndarray:
    """IDX images as the float64 feature matrix: flattened, uint8 pixels scaled to [0, 1]."""
    if images.ndim < 1 or len(images) == 0 or images[0].size == 0:
        raise ValueError(f"{images_name}: no data: images of shape {images.shape}")
    check_size(8 * images.size, limit, images_name, "the float64 feature matrix")
    X = images.reshape(len(images), -1).astype(np.float64)
    if images.dtype == np.uint8:
        X /= 255.0
    check_finite(X, images_name, ("image", "pixel"))
    return X


def looks_like_idx(head: bytes) -> bool:
    """Whether the first four bytes are a valid IDX magic number (zero, zero, code, ndim)."""
    return (
        len(head) >= 4 and head[0] == 0 and head[1] == 0
        and head[2] in _IDX_DTYPES and head[3] >= 1
    )
