"""``.npz`` archives read entry by entry, each header checked before its data.

Checks, in the order they happen:

* the file is a regular file with a zip signature;
* the zip central directory is at most :data:`MAX_DIRECTORY_BYTES` (zipfile turns every
  entry into Python objects, a few hundred bytes each, before anyone can look at them);
* an entry is named once, stored or deflated (what NumPy writes; bzip2 and lzma inflate
  without a bound per call, so they are refused), and starts with a valid ``.npy``
  header that the caller can inspect (:class:`Member`) before asking for the data;
* the zip directory's size for the entry matches what the header declares, the data
  fits the remaining byte budget, and exactly that many bytes are inflated, plus one to
  catch trailing data (zipfile stops at the directory's size, so a directory that lies
  cannot make it inflate more; the CRC check then fails).
"""

from __future__ import annotations

import contextlib
import os
import struct
import zipfile
import zlib

import numpy as np

from .limits import MAX_BYTES_ENV, Closing, Refused, resolve_max_bytes
from .npy import MAGIC, NpyHeader, array_from_bytes, read_npy_header
from .streams import GZIP_MAGIC, open_regular, read_up_to

ZIP_SIGNATURES = (b"PK\x03\x04", b"PK\x05\x06")  # a local file header / an empty archive
MAX_DIRECTORY_BYTES = 4 << 20
"""4 MiB of central directory: tens of thousands of entries, far more than any checkpoint.
Must stay above :data:`CHUNK`, so that no data read looks like a directory read."""
_READABLE_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


@contextlib.contextmanager
def zip_errors(label: str, key: str | None = None):
    """Turn whatever zipfile, zlib or a damaged stream raise into a message about the file."""
    try:
        yield
    except Refused:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError,
            ValueError, OverflowError, struct.error, KeyError, IndexError) as exc:
        entry = f"entry {key!r}: " if key is not None else ""
        raise Refused(f"{label} is truncated or corrupt: {entry}{type(exc).__name__}: {exc}") from None


class _CappedReads:
    """The archive file, as zipfile sees it: one read may not exceed ``cap`` bytes.

    zipfile reads the whole central directory with a single ``read(size)``; every other
    read it makes is a header or one of our :data:`CHUNK`-sized data reads. Capping the
    size of one read therefore caps the directory before zipfile parses it.
    """

    def __init__(self, file, cap: int, label: str):
        self._file, self._cap, self._label = file, cap, label

    def read(self, n: int = -1) -> bytes:
        if n is not None and n > self._cap:
            raise Refused(f"{self._label}: zip directory of {n:,} bytes is larger than the "
                          f"{self._cap:,} an .npz needs (too many entries)")
        return self._file.read(n)

    def __getattr__(self, name):
        return getattr(self._file, name)


def _what_it_is(head: bytes) -> str:
    """Why the first bytes are not a zip archive, in words a user can act on."""
    if head == MAGIC:
        return "it is a single .npy array"
    if head.startswith(GZIP_MAGIC):
        return "it is gzip-compressed; unpack it first, an .npz is a zip archive"
    return "no zip signature"


class NpzArchive(Closing):
    """An ``.npz`` file opened for checked reading; use as a context manager.

    ``label`` is how messages name the file; ``max_bytes`` (see :mod:`.limits`) is the
    budget for all entries read through this object together.
    """

    def __init__(self, path, label: str, max_bytes: int | None = None):
        self.label = label
        self.limit = self.remaining = resolve_max_bytes(max_bytes)
        self._file = open_regular(path, label)
        try:
            self.disk_size = os.fstat(self._file.fileno()).st_size
            head = self._file.read(len(MAGIC))
            if head[:4] not in ZIP_SIGNATURES:
                raise Refused(f"{label} is not an .npz file ({_what_it_is(head)})")
            self._file.seek(0)
            with zip_errors(label):
                self._zip = zipfile.ZipFile(_CappedReads(self._file, MAX_DIRECTORY_BYTES, label))
        except BaseException:
            self._file.close()
            raise
        self.names = self._zip.namelist()
        self.keys = [n.removesuffix(".npy") for n in self.names]  # as np.load lists them
        self._by_name: dict[str, list] = {}  # one lookup per entry read: a checkpoint reads every entry
        for info in self._zip.infolist():
            self._by_name.setdefault(info.filename, []).append(info)

    def has(self, key: str) -> bool:
        """Whether ``key`` or ``key.npy`` is an entry (as ``np.load`` looks keys up)."""
        return key in self._by_name or key + ".npy" in self._by_name

    def member(self, key: str) -> Member:
        """The entry ``key`` (``key`` or ``key.npy`` in the zip) with its header read."""
        found = self._by_name.get(key, []) + self._by_name.get(key + ".npy", [])
        if not found:
            raise Refused(f"{self.label}: no entry {key!r}")
        if len(found) > 1:
            raise Refused(f"{self.label}: entry {key!r} is stored {len(found)} times; refusing to guess")
        return Member(self, key, found[0])

    def _spend(self, nbytes: int, where: str, header: NpyHeader) -> None:
        """Charge an entry's data to the archive's budget before it is read."""
        if nbytes > self.remaining:
            raise Refused(f"{where} holds {nbytes:,} bytes (shape {header.shape}, {header.dtype}), more "
                          f"than the {self.remaining:,} left of the {self.limit:,}-byte limit (raise "
                          f"it with max_bytes= or the {MAX_BYTES_ENV} environment variable)")
        self.remaining -= nbytes

    def close(self) -> None:
        try:
            self._zip.close()
        finally:
            self._file.close()


class Member(Closing):
    """One entry: ``shape``, ``dtype`` and ``nbytes`` from its header; :meth:`read` for the data.

    Callers compare the header with what they expect before reading, so a wrong shape or
    dtype is reported without inflating anything. Use as a context manager.
    """

    def __init__(self, archive: NpzArchive, key: str, info: zipfile.ZipInfo):
        self._archive, self._info = archive, info
        self.where = f"{archive.label}: entry {key!r}"
        if info.compress_type not in _READABLE_METHODS:
            raise Refused(f"{self.where} uses zip compression method {info.compress_type}; only "
                          "stored and deflated entries (what NumPy writes) are read")
        with zip_errors(archive.label, key):
            self._stream = archive._zip.open(info)
            try:
                header = read_npy_header(self._stream.read, self.where)
            except BaseException:
                self._stream.close()
                raise
        if header is None:
            self._stream.close()
            raise Refused(f"{self.where} is not a .npy array")
        self.header, self._key = header, key
        self.shape, self.dtype, self.nbytes = header.shape, header.dtype, header.nbytes

    def read(self) -> np.ndarray:
        """The data, in native byte order, after the size checks; each entry is read once."""
        header, info = self.header, self._info
        declared = header.header_bytes + header.nbytes
        if info.file_size != declared:
            raise Refused(f"{self._archive.label} is truncated or corrupt: entry {self._key!r}: the zip "
                          f"directory gives it {info.file_size:,} bytes, its .npy header {declared:,}")
        self._archive._spend(header.nbytes, self.where, header)
        with zip_errors(self._archive.label, self._key):
            data = read_up_to(self._stream.read, header.nbytes, self._stored_in_file())
            extra = self._stream.read(1) if len(data) == header.nbytes else b""
        if len(data) < header.nbytes or extra:
            which = "more" if extra else "fewer"
            raise Refused(f"{self._archive.label} is truncated or corrupt: entry {self._key!r} holds "
                          f"{which} bytes than its header declares")
        return array_from_bytes(data, header, self.where)

    def _stored_in_file(self) -> bool:
        """Whether the entry's bytes lie uncompressed inside the archive (so they exist)."""
        info = self._info
        return (info.compress_type == zipfile.ZIP_STORED and info.compress_size == info.file_size
                and info.header_offset + info.compress_size <= self._archive.disk_size)

    def close(self) -> None:
        self._stream.close()
