"""Opening data files and reading them in bounded pieces, gzip or not.

Nothing here reads "the whole file": a reader asks for at most the bytes a header has
declared (and already checked against the limit), in chunks of :data:`CHUNK`, and a
gzip stream is inflated only as far as those reads go. Trailing data is detected by
asking for one byte more than declared, never by inflating the rest.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import io
import os
import stat
import zlib
from typing import BinaryIO

from .limits import CHUNK, MAX_BYTES_ENV, Closing, Refused

GZIP_MAGIC = b"\x1f\x8b"


def display_name(path) -> str:
    """The path as messages show it (bytes paths decoded the way the OS would)."""
    return os.fsdecode(os.fspath(path))


def open_regular(path, label: str) -> BinaryIO:
    """Open ``path`` for binary reading, refusing anything but a regular file.

    A directory cannot be read, a FIFO would block until some writer appears and a
    device such as /dev/zero never ends, so they are refused before any read. The
    file is opened non-blocking (which changes nothing for a regular file) and checked
    with fstat on the open descriptor, so the check and the read see the same file.
    """
    flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # a UNIX socket cannot even be opened
            raise Refused(f"{label} is not a regular file (a pipe, device or socket); "
                          "give a file on disk") from None
        raise
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise Refused(f"{label} is a directory, not a data file")
        if not stat.S_ISREG(mode):
            raise Refused(f"{label} is not a regular file (a pipe, device or socket); "
                          "give a file on disk")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_up_to(read, nbytes: int, on_disk: bool = False) -> bytearray:
    """At most ``nbytes`` from ``read(n)``, fewer only at the end of the data.

    The buffer grows with what actually arrives, so a header that overstates the data
    costs no memory: only bytes that exist are ever held. ``on_disk=True`` promises that
    the bytes are stored uncompressed in the file (its size was checked); the buffer is
    then allocated once at its final size instead of growing.
    """
    if on_disk:
        buf = bytearray(nbytes)
        view, filled = memoryview(buf), 0
        while filled < nbytes:
            piece = read(min(CHUNK, nbytes - filled))
            if not piece:
                break
            view[filled:filled + len(piece)] = piece
            filled += len(piece)
        view.release()
        del buf[filled:]
        return buf
    buf = bytearray()
    while len(buf) < nbytes:
        piece = read(min(CHUNK, nbytes - len(buf)))
        if not piece:
            break
        buf += piece
    return buf


class DataStream(Closing):
    """A data file's bytes, inflated on the fly when it is gzip (detected by content).

    Compression is recognised by the gzip magic number, not the file name, so a ``.gz``
    that was already unpacked (or the reverse) still reads. Errors inside the gzip
    stream become :class:`Refused` naming the file.
    """

    def __init__(self, path, label: str):
        self.label = label
        self._file = open_regular(path, label)
        try:
            self.compressed = self._file.read(2) == GZIP_MAGIC
            self._file.seek(0)
            self.disk_size = os.fstat(self._file.fileno()).st_size
        except BaseException:
            self._file.close()
            raise
        self._stream = gzip.GzipFile(fileobj=self._file, mode="rb") if self.compressed else self._file

    def read(self, n: int) -> bytes:
        """At most ``n`` bytes (``n`` >= 0: never "the rest")."""
        with self.errors():
            return self._stream.read(n)

    def read_up_to(self, nbytes: int) -> bytearray:
        """At most ``nbytes``; allocated at once when the file is plain and that long."""
        on_disk = not self.compressed and nbytes <= self.disk_size
        return read_up_to(self.read, nbytes, on_disk)

    @contextlib.contextmanager
    def errors(self):
        """Turn a broken gzip stream into a message about this file."""
        try:
            yield
        except Refused:
            raise
        except (OSError, EOFError, zlib.error) as exc:
            if not self.compressed:
                raise
            raise Refused(f"{self.label}: corrupt gzip data: {exc}") from None

    def close(self) -> None:
        try:
            if self._stream is not self._file:
                self._stream.close()
        finally:
            self._file.close()


def peek(path, nbytes: int, label: str) -> bytes:
    """The first ``nbytes`` bytes of the (inflated) data: enough to recognise a format."""
    with DataStream(path, label) as stream:
        return bytes(stream.read_up_to(nbytes))


class LimitedReader(io.RawIOBase):
    """A raw stream over a :class:`DataStream` that refuses to deliver more than ``limit`` bytes.

    Text readers wrap it (``io.TextIOWrapper``) and read line by line; a gzip bomb or an
    endless file then stops at the limit with a message instead of filling memory.
    """

    def __init__(self, stream: DataStream, limit: int):
        super().__init__()
        self._stream, self._limit, self.delivered = stream, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        data = self._stream.read(len(view))
        self.delivered += len(data)
        if self.delivered > self._limit:
            raise Refused(f"{self._stream.label}: more than {self._limit:,} bytes of data (after "
                          f"decompression); raise the limit with max_bytes= or {MAX_BYTES_ENV}")
        view[:len(data)] = data
        return len(data)
