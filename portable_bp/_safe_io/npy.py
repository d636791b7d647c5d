"""The ``.npy`` header, parsed and checked before a single data byte is read.

``np.load`` trusts the header: it allocates whatever shape it names (a 100-byte file
can ask for 74.5 GiB) and unpickles object arrays when allowed to. Here the header is
read with a size cap, evaluated as a plain literal, and reduced to a dtype and shape
that callers compare with what they expect; only then is the data read, into exactly
the declared number of bytes.
"""

from __future__ import annotations

import ast
import math
import re
import struct
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from .limits import Refused

MAGIC = b"\x93NUMPY"
MAX_HEADER_BYTES = 10_000
"""NumPy's own default cap (``max_header_size``): its writer never needs more for plain arrays."""
MAX_DIMS = 32
"""The fewest dimensions any supported NumPy allows (1.x); more cannot be an array here."""

_VERSIONS = {1: ("<H", "latin1"), 2: ("<I", "latin1"), 3: ("<I", "utf8")}
_DESCR = re.compile(r"[<>|=]?[biufcmMOSUV]\d{0,12}(\[\d{0,6}[a-zA-Z]{1,2}\])?")


class NpyHeader(NamedTuple):
    """What a ``.npy`` header declares, already checked to be a plain array."""

    dtype: np.dtype
    shape: tuple
    fortran_order: bool
    header_bytes: int  # magic, version, length field and header text

    @property
    def n_items(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.n_items * self.dtype.itemsize


def read_npy_header(read: Callable[[int], bytes], where: str) -> NpyHeader | None:
    """Parse the header at the start of ``read``'s stream; None when it is not ``.npy`` data."""
    prefix = read(8)
    if len(prefix) < 8 or prefix[:6] != MAGIC:
        return None
    major, minor = prefix[6], prefix[7]
    if major not in _VERSIONS:
        raise Refused(f"{where}: unsupported .npy format version {major}.{minor}")
    length_format, encoding = _VERSIONS[major]
    length_field = read(struct.calcsize(length_format))
    if len(length_field) < struct.calcsize(length_format):
        raise Refused(f"{where} is truncated or corrupt: the .npy header is cut short")
    (length,) = struct.unpack(length_format, length_field)
    if length > MAX_HEADER_BYTES:
        raise Refused(f"{where}: .npy header of {length:,} bytes is longer than the "
                      f"{MAX_HEADER_BYTES:,} a plain array needs")
    text = read(length)
    if len(text) < length:
        raise Refused(f"{where} is truncated or corrupt: the .npy header is cut short")
    fields = _header_fields(text, encoding, where)
    dtype = _plain_dtype(fields["descr"], where)
    shape = _shape(fields["shape"], where)
    if not isinstance(fields["fortran_order"], bool):
        raise Refused(f"{where}: .npy header has fortran_order={fields['fortran_order']!r}, not True/False")
    return NpyHeader(dtype, shape, fields["fortran_order"], len(prefix) + len(length_field) + length)


def _header_fields(text: bytes, encoding: str, where: str) -> dict:
    """The header's dict literal, evaluated without running anything (``ast.literal_eval``)."""
    try:
        fields = ast.literal_eval(text.decode(encoding))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError, UnicodeDecodeError):
        fields = None
    if not isinstance(fields, dict) or set(fields) != {"descr", "fortran_order", "shape"}:
        raise Refused(f"{where}: not a valid .npy header: {text[:200]!r}")
    return fields


def _plain_dtype(descr, where: str) -> np.dtype:
    """A dtype with fixed-size, pickle-free elements: numbers, booleans, strings.

    Only the form NumPy writes for a plain array (``dtype.str``: byte order, kind code,
    size, datetime unit) reaches ``np.dtype``; its mini-language for structured and
    sub-array types, and deprecated aliases, never see hostile text.
    """
    if not isinstance(descr, str):
        raise Refused(f"{where} is a structured array (fields {str(descr)[:100]}); only plain arrays are read")
    try:
        if not _DESCR.fullmatch(descr):
            raise TypeError(descr)
        dtype = np.dtype(descr)
    except (TypeError, ValueError, OverflowError):
        raise Refused(f"{where}: .npy header names an unknown dtype {descr[:100]!r}") from None
    if dtype.hasobject:
        raise Refused(f"{where} is an object array (pickled Python objects); portable_bp never "
                      "unpickles file contents (save plain numeric arrays instead)")
    if dtype.kind == "V" or dtype.fields is not None or dtype.subdtype is not None:
        raise Refused(f"{where} has a structured or raw dtype {descr[:100]!r}; only plain arrays are read")
    if dtype.itemsize == 0:
        raise Refused(f"{where} has zero-sized elements (dtype {descr[:100]!r})")
    return dtype


def _shape(shape, where: str) -> tuple:
    """Non-negative Python ints only (no bools, no more than MAX_DIMS): sizes are then exact."""
    if not (isinstance(shape, tuple) and len(shape) <= MAX_DIMS and all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape)):
        raise Refused(f"{where}: .npy header has an invalid shape {str(shape)[:200]}")
    return shape


def array_from_bytes(data: bytearray, header: NpyHeader, where: str) -> np.ndarray:
    """The array ``header`` describes, viewing ``data`` (no copy) in native byte order.

    Byte-swapping happens in place; boolean bytes other than 0 and 1 are refused, since
    NumPy would otherwise carry them on as "true" values that compare and sum wrongly.
    """
    flat = np.frombuffer(data, dtype=header.dtype, count=header.n_items)
    if not header.dtype.isnative:
        flat = flat.byteswap(inplace=True).view(header.dtype.newbyteorder("="))
    if header.dtype.kind == "b" and flat.size and flat.view(np.uint8).max() > 1:
        raise Refused(f"{where}: boolean array holds bytes other than 0 and 1")
    if header.fortran_order:
        return flat.reshape(header.shape[::-1]).T
    return flat.reshape(header.shape)
