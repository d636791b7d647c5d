"""NumPy on the CPU.

NumPy >= 2 is Array API compliant, so its own namespace is used, not array-api-compat's
wrappers. Two reductions are routed straight to their ufuncs: ``np.sum``/``np.max`` spend
microseconds per call in Python dispatch before reaching ``np.add.reduce``/
``np.maximum.reduce``, which on small batches is a noticeable part of a training step. Same
results, same signature. NumPy 1.x goes through array-api-compat. The step's primitives
run in place, with plain SGD's weight step in one call of NumPy's own BLAS and small
products on one BLAS thread (:class:`~portable_bp.backends.numpy_ops.NumpyOps`).
"""

import types

import numpy as np

from ..scalars import keep_python_scalars
from . import numpy_blas
from ._base import Backend, BackendUnavailable
from .numpy_ops import NumpyOps


def _sum(x, /, *, axis=None, dtype=None, keepdims=False):
    return np.add.reduce(x, axis=axis, dtype=dtype, keepdims=keepdims)


def _max(x, /, *, axis=None, keepdims=False):
    return np.maximum.reduce(x, axis=axis, keepdims=keepdims)


class _NumPy(types.SimpleNamespace):
    """NumPy's own namespace with the two fast reductions; every other name is looked up
    in numpy on first use and then kept (no import of numpy's lazy submodules up front)."""

    def __getattr__(self, name):
        value = getattr(np, name)
        setattr(self, name, value)
        return value


def namespace():
    return _NumPy(sum=_sum, max=_max, __name__="numpy")


def make(device=None) -> Backend:
    if device not in (None, "cpu"):
        raise BackendUnavailable("numpy", f"NumPy has only the 'cpu' device, got {device!r}")
    if int(np.__version__.split(".")[0]) >= 2:
        xp = namespace()
    else:  # pragma: no cover - numpy 1.x
        import array_api_compat.numpy as xp
    # NumPy keeps an array's dtype against a Python number (NEP 50) and has no device to
    # copy one to: the step's constants stay numbers, without a lookup per call (scalars.py)
    keep_python_scalars(xp)
    serial = numpy_blas.find_serial()
    return Backend(
        name="numpy", xp=xp, device="cpu", spec="numpy",
        _to_numpy=np.asarray,
        _owns=lambda a: type(a) is np.ndarray,
        _copy=lambda a: np.array(a, order="C", copy=True),
        ops=NumpyOps(xp, numpy_blas.find(serial), serial),
        info={"version": np.__version__},
    )
