"""How much a reader may take in, and the one exception every refused file raises.

A file can declare far more data than it holds, or than the machine has: an IDX or
``.npy`` header names a shape, a zip directory names sizes, a gzip stream inflates
to whatever it likes. Every reader in portable_bp compares such declarations (and the
bytes it actually inflates) with one limit before it allocates or inflates anything,
so a small hostile file cannot make the process allocate gigabytes.

The limit is ``max_bytes=`` where a reader takes it, else the environment variable
``PORTABLE_BP_MAX_BYTES`` (a whole number of bytes), else :data:`DEFAULT_MAX_BYTES`.
"""

from __future__ import annotations

import numbers
import os

DEFAULT_MAX_BYTES = 4 << 30
"""4 GiB: more than any data set or checkpoint this library is meant for fits in memory
twice over, yet far less than a declared (100000, 100000) float64 array."""

MAX_BYTES_ENV = "PORTABLE_BP_MAX_BYTES"

CHUNK = 1 << 18
"""Bytes read (or inflated) per call (256 KiB, as NumPy reads): bounds every temporary buffer."""


class Refused(ValueError):
    """A file refused as unreadable or unsafe; the message names the file (and the entry).

    A ValueError, like every other problem with a file's contents, so callers need one
    ``except``. Readers re-raise it untouched while they turn library errors (zipfile,
    zlib, gzip) into messages about the file.
    """


def resolve_max_bytes(max_bytes: int | None = None) -> int:
    """The limit in force: ``max_bytes`` when given, else the environment, else the default."""
    if max_bytes is None:
        raw = os.environ.get(MAX_BYTES_ENV, "").strip()
        if not raw:
            return DEFAULT_MAX_BYTES
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"{MAX_BYTES_ENV}={raw!r} is not a whole number of bytes") from None
        if value < 1:
            raise ValueError(f"{MAX_BYTES_ENV} must be a positive number of bytes, got {value}")
        return value
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, numbers.Integral) or max_bytes < 1:
        raise ValueError(f"max_bytes must be a positive integer (bytes), got {max_bytes!r}")
    return int(max_bytes)


def check_size(nbytes: int, limit: int, where: str, what: str) -> None:
    """Refuse ``what`` at ``where`` before allocating it when it needs more than ``limit`` bytes."""
    if nbytes > limit:
        raise Refused(f"{where}: {what} needs {nbytes:,} bytes, more than the limit of {limit:,} "
                      f"(raise it with max_bytes= or the {MAX_BYTES_ENV} environment variable)")


class Closing:
    """``with`` for the readers here: leaving the block closes them."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

