"""NumPy on the CPU.

NumPy >= 2 is Array API compliant, so its own namespace is used, not array-api-compat's
wrappers. Two reductions are routed straight to their ufuncs: ``np.sum``/``np.max`` spend
~3 µs per call in Python dispatch before reaching ``np.add.reduce``/``np.maximum.reduce``,
which on small batches is a tenth of a training step. Same results, same signature.
NumPy 1.x goes through array-api-compat. The hot path's element-wise steps run in place
(``numpy_kernels``) and plain SGD's step W -= Dᵀ A calls the BLAS NumPy already loaded
(``numpy_blas``) when it is one we know how to call; the Array API code stays the reference.
"""

import types

import numpy as np

from . import numpy_blas, numpy_kernels
from ._base import Backend, BackendUnavailable, kernels_off


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
    fused_off = kernels_off()  # PORTABLE_BP_FUSED=0
    return Backend(
        name="numpy", xp=xp, device="cpu", spec="numpy",
        _to_numpy=np.asarray,
        _owns=lambda a: type(a) is np.ndarray,
        fused=None if fused_off else numpy_kernels.FusedOps(),
        subtract_matmul=None if fused_off else numpy_blas.find(),
        info={"version": np.__version__},
    )
