"""Host buffers for a transport that reads and writes host memory (MPI without CUDA).

MPI takes NumPy arrays as they are. Any other array goes through the network's backend,
which is the one place that knows how to move its arrays: ``backend.to_numpy`` (a view for
PyTorch on the CPU, a device-to-host copy for CuPy or torch on a GPU, a read-only view or
a copy for JAX and array-api-strict) and ``backend.asarray`` (back onto the device, sharing
the host memory where the library can). Host-side code: NumPy is what MPI reads.
"""

from __future__ import annotations

import numpy as np


def to_host(array, backend=None, *, copy: bool = False) -> np.ndarray:
    """A writable, C-contiguous host array with ``array``'s values: ``array`` itself when
    it is such a NumPy array (and ``copy`` is false), else a view or copy through
    ``backend``."""
    if isinstance(array, np.ndarray):
        host = array
    elif backend is None:
        raise TypeError(f"a communicator moves {type(array).__name__} arrays through their backend: "
                        f"pass backend= (the network's), or a NumPy array")
    else:
        host = backend.to_numpy(array)
    if copy or not (host.flags.writeable and host.flags.c_contiguous):
        host = np.array(host, order="C", copy=True)
    return host


def host_zeros(n: int) -> np.ndarray:
    """A float64 host buffer of ``n`` zeros (flags summed over the ranks)."""
    return np.zeros(n)


def host_values(values) -> np.ndarray:
    """A float64 host buffer holding ``values`` (the ranks' signal votes)."""
    return np.array(values, dtype=np.float64)


def checksum(array, backend=None) -> str:
    """A SHA-256 of ``array``'s bytes on the host, with its dtype and shape: equal only for
    the same values in the same order (the ranks' data must be identical, not similar)."""
    import hashlib

    host = np.ascontiguousarray(to_host(array, backend) if not isinstance(array, np.ndarray) else array)
    digest = hashlib.sha256(f"{host.dtype.str}{host.shape}".encode())
    digest.update(host.reshape(-1).view(np.uint8).data)
    return digest.hexdigest()[:16]


def from_host(host: np.ndarray, like, backend=None):
    """``host`` as an array of ``like``'s kind: itself for NumPy, else ``backend.asarray``
    (no copy where the library shares host memory: PyTorch on the CPU)."""
    if isinstance(like, np.ndarray) or backend is None:
        return host
    return backend.asarray(host)
