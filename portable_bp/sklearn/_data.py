"""Host-side plumbing between scikit-learn's inputs and a portable_bp Network.

* where an input lives: host data (NumPy, lists, sparse matrices, DataFrames) or, under
  ``array_api_dispatch``, an array of another library on some device, which then picks the
  backend (:func:`place_of`, :func:`backend_for`);
* rows of X as dense arrays on the network's device (:class:`Rows`): dense X is moved once
  and gathered there; sparse X stays on the host and is densified a batch at a time;
* outputs handed back in the caller's library (:func:`to_caller`).
"""

from __future__ import annotations

from typing import Any

import array_api_compat as compat
import numpy as np
import scipy.sparse as sp
from sklearn import get_config

from ..backends import get as get_backend
from ..backends import library_of

CHUNK_ROWS = 65536   # dense rows gathered (and handed to one net.fit call) at a time


class Place:
    """An input array's library, device and namespace (for non-NumPy inputs under
    array API dispatch)."""

    def __init__(self, X):
        self.library, self.device, self.xp = library_of(X), compat.device(X), compat.array_namespace(X)

    @property
    def key(self) -> tuple:
        """What fit records, to compare predict's inputs against."""
        return (self.library, str(self.device))


def dispatching() -> bool:
    return bool(get_config().get("array_api_dispatch", False))


def place_of(X) -> Place | None:
    """Where X lives when it should stay there: a non-NumPy array under array API
    dispatch; None for host data (or whenever dispatch is off)."""
    if not dispatching() or X is None or sp.issparse(X) or compat.is_numpy_array(X):
        return None
    return Place(X) if compat.is_array_api_obj(X) else None


def backend_spec_of(X) -> str:
    """The portable_bp backend spec for the library and device of array X."""
    lib, dev = library_of(X), compat.device(X)
    if lib == "torch":
        return "torch" if dev.type == "cpu" else f"torch:{dev}"
    if lib == "cupy":   # "cupy" is GPU 0: the same backend a user's backend="cupy" gets
        return "cupy" if dev.id == 0 else f"cupy:{dev.id}"
    if lib == "jax":
        return "jax" if dev.platform == "cpu" else f"jax:{dev.platform}:{dev.id}"
    if lib == "array_api_strict":
        import array_api_strict as xps

        for name in ("device1", "device2"):
            if dev == xps.Device(name):
                return f"array_api_strict:{name}"
        return "array_api_strict"
    raise TypeError(f"no portable_bp backend trains on {lib} arrays; pass NumPy data or use "
                    f"cupy, torch, jax or array_api_strict arrays")


def backend_for(place: Place | None, X, backend: str):
    """The Backend to train on: the input's own library and device under dispatch, else
    the ``backend`` parameter (``"auto"``: CuPy when a GPU answers, else NumPy)."""
    return get_backend(backend_spec_of(X) if place is not None else backend)


def float_dtypes(place: Place | None) -> tuple:
    """The float dtypes scikit-learn's validation may leave X in: float64 first (what
    everything else becomes), in the input's own namespace under dispatch."""
    if place is None:
        return (np.float64, np.float32)
    return (place.xp.float64, place.xp.float32)


def dtype_name(X, dtype) -> str:
    """The network's dtype: the ``dtype`` parameter, else X's (float32 stays float32,
    everything else is float64, as scikit-learn's validation leaves it)."""
    if dtype is not None:
        return dtype
    return "float32" if "float32" in str(getattr(X, "dtype", "")) else "float64"


def to_host(a):
    """An array of any library as NumPy (lists, Series and NumPy arrays pass through)."""
    if a is None or sp.issparse(a) or compat.is_numpy_array(a) or not compat.is_array_api_obj(a):
        return a
    if compat.is_cupy_array(a):
        return a.get()
    if compat.is_torch_array(a):
        return a.detach().cpu().numpy()
    return np.from_dlpack(compat.to_device(a, "cpu") if compat.is_jax_array(a) else a)


def take(X, idx):
    """Rows ``idx`` (host ints) of X: NumPy, sparse, or an array of another library."""
    if sp.issparse(X) or compat.is_numpy_array(X):
        return X[idx]
    xp = compat.array_namespace(X)
    return xp.take(X, xp.asarray(idx, device=compat.device(X)), axis=0)


def to_caller(net, A, place: Place | None):
    """A (an array of the network's backend) for the caller: left on the device when the
    input was an array of that library and device, NumPy for host inputs, and moved into
    the input's library and device otherwise."""
    if place is not None and net.backend.owns(A):
        return A
    host = net.backend.to_numpy(A)
    if place is None:
        return host
    return place.xp.asarray(host, device=place.device)


class Rows:
    """The rows of X as dense arrays on ``net``'s device. Dense X is checked and moved
    once; sparse X (CSR) stays on the host, each request densifying only its rows:
    ``sparse_rows`` at a time (a mini-batch) where no batch is given."""

    def __init__(self, net, X, sparse_rows=200):
        self.net, self.sparse = net, sp.issparse(X)
        self.X = X.tocsr() if self.sparse else net.features(X)
        self.n, self.sparse_rows = X.shape[0], sparse_rows

    def take(self, rows):
        """Rows ``rows`` (a slice or host ints) as a dense device array."""
        if self.sparse:
            return self.net.features(self.X[rows].toarray())
        return take_device(self.net, self.X, rows)

    def chunks(self, rows=None):
        """(start, stop) ranges covering every row, a chunk at a time."""
        size = rows or (self.sparse_rows if self.sparse else CHUNK_ROWS)
        return [(s, min(s + size, self.n)) for s in range(0, self.n, size)]


def outputs(net, X, sparse_rows=200):
    """The network's outputs for every row of X, on its device, in chunks of rows."""
    rows = Rows(net, X, sparse_rows)
    parts = [net.forward(rows.take(slice(s, e))) for s, e in rows.chunks()]
    return parts[0] if len(parts) == 1 else net.xp.concat(parts, axis=0)


def take_device(net, Z, rows):
    """Rows ``rows`` (slice or host ints) of a device array Z."""
    if isinstance(rows, slice):
        return Z[rows, ...]
    return net.xp.take(Z, net.backend.asarray(rows), axis=0)


def same_place_check(estimator, X, place: Place | None, method: str) -> None:
    """scikit-learn's rule under array API dispatch: predict's input must live where
    fit's did (host data counts as NumPy). A ValueError in scikit-learn's words otherwise."""
    if not dispatching():
        return
    fitted: Any = getattr(estimator, "_fit_place", None)
    got = None if place is None else place.key
    if fitted == got:
        return
    name = f"{type(estimator).__name__}.{method}()"
    if got is None:
        kind = "sparse array" if sp.issparse(X) else "array-like"
        detail = (f"Array namespace used during fit ({fitted[0]}) is not compatible with the "
                  f"{kind} input passed to {method}. Only the NumPy namespace is compatible "
                  f"with {kind} inputs.")
    elif fitted is None or fitted[0] != got[0]:
        detail = (f"Array namespaces used during fit ({'numpy' if fitted is None else fitted[0]}) "
                  f"and {method} ({got[0]}) differ.")
    else:
        detail = f"Devices used during fit ({fitted[1]}) and {method} ({got[1]}) differ."
    raise ValueError(f"Inputs passed to {name} must use the same namespace and the same device "
                     f"as those passed to fit(). {detail}")
