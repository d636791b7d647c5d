"""Host-side file input and output that hostile or careless files cannot subvert.

Shared by :mod:`portable_bp.datasets` and :mod:`portable_bp.checkpoint`:

* :mod:`.limits`: the byte limit (``max_bytes=``, ``PORTABLE_BP_MAX_BYTES``, default
  4 GiB) and :class:`Refused`, the ValueError every refused file raises;
* :mod:`.streams`: regular files only, gzip inflated in bounded pieces;
* :mod:`.npy` and :mod:`.npz`: ``.npz`` entries whose ``.npy`` headers are parsed and
  checked before their data is read (never ``np.load``, never pickle);
* :mod:`.atomic`: atomic replacement of a file, keeping its permission bits.

Everything here uses NumPy on the host only; no array backend is imported.
"""

from .atomic import atomic_write
from .limits import CHUNK, DEFAULT_MAX_BYTES, MAX_BYTES_ENV, Refused, check_size, resolve_max_bytes
from .npy import NpyHeader
from .npz import MAX_DIRECTORY_BYTES, Member, NpzArchive
from .streams import DataStream, LimitedReader, display_name, open_regular, peek, read_up_to

__all__ = [
    "CHUNK", "DEFAULT_MAX_BYTES", "MAX_BYTES_ENV", "MAX_DIRECTORY_BYTES", "DataStream", "LimitedReader",
    "Member", "NpyHeader", "NpzArchive", "Refused", "atomic_write", "check_size", "display_name",
    "open_regular", "peek", "read_up_to", "resolve_max_bytes",
]
