"""Atomic file replacement: a reader sees the old file or the new one, never half of either.

The new content goes to ``.<name>.<8 hex>.tmp`` in the target's own folder (a rename is
only atomic within one file system), is fsynced, then renamed over the target; the
folder is fsynced so the rename itself survives a crash. A process killed mid-write
leaves the previous file plus that one temporary file, which the next write to the
same path removes.

Before any temporary file exists the target is checked: a path naming a directory, or
something that is not a regular file, is refused, as is a target the user may not
write (a read-only file stays read-only rather than being silently replaced). An
existing file's permission bits carry over to the new one, so re-saving a private
0600 file does not publish it as 0644.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import stat
from collections.abc import Callable
from typing import BinaryIO


def atomic_write(path, write: Callable[[BinaryIO], None]) -> None:
    """Replace ``path`` with what ``write(file)`` writes, or leave it exactly as it was.
    An OSError of the writing (a full disk: ``[Errno 28]``) names ``path``."""
    path = os.fsdecode(os.fspath(path))
    mode = _checked_target(path)
    folder, name = os.path.split(os.path.abspath(path))
    remove_stale_temps(folder, name)
    tmp, fd = create_temp(folder, name)
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is not None:
                _keep_mode(tmp, mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.remove(tmp)
        except OSError:
            pass
        if isinstance(exc, OSError) and exc.filename is None:  # ENOSPC from a write names no file
            raise type(exc)(exc.errno, exc.strerror or str(exc), path) from exc
        raise
    fsync_dir(folder)


def _keep_mode(tmp: str, mode: int) -> None:
    """Give the new file the old one's bits before any data is written (a private file never
    shows its contents); best effort, since some file systems (FAT, some network mounts)
    have no modes to set."""
    try:
        os.chmod(tmp, mode)
    except OSError:
        pass


def _checked_target(path: str) -> int | None:
    """The existing target's permission bits (None for a new file), or an error naming it."""
    if path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)):
        raise IsADirectoryError(errno.EISDIR, "the path names a directory; give a file name", path)
    try:
        st = os.stat(path)  # follows a symlink: its target's mode is what the user sees
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory; give a file name inside it", path)
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path!r} is not a regular file (a pipe, device or socket); "
                         "refusing to replace it")
    if not st.st_mode & stat.S_IWUSR or not os.access(path, os.W_OK):
        raise PermissionError(errno.EACCES, "is read-only; refusing to replace it (make it "
                              "writable, or write elsewhere)", path)
    return stat.S_IMODE(st.st_mode) & 0o777


def temp_pattern(name: str) -> re.Pattern:
    """The names of this target's temporary files, and only those (other files are left alone)."""
    return re.compile(re.escape(f".{name}.") + r"[0-9a-f]{8}\.tmp")


def create_temp(folder: str, name: str) -> tuple[str, int]:
    """A new ``.<name>.<8 hex>.tmp`` next to the target, opened exclusively (mode 0666 & ~umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            return tmp, os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue


def remove_stale_temps(folder: str, name: str) -> None:
    """Delete temporary files left by earlier writes to this path that were killed mid-write."""
    pattern = temp_pattern(name)
    try:
        entries = os.listdir(folder)
    except OSError:
        return
    for entry in entries:
        if pattern.fullmatch(entry):
            try:
                os.remove(os.path.join(folder, entry))
            except OSError:
                pass


def fsync_dir(folder: str) -> None:
    """Make the rename itself durable (POSIX); best effort elsewhere."""
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
