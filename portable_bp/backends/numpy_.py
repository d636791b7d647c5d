"""NumPy on the CPU. NumPy >= 2 is Array API compliant, so its own namespace is used
(no wrapper calls on the hot path); older NumPy goes through array-api-compat."""

import numpy as np

from ._base import Backend, BackendUnavailable


def make(device=None) -> Backend:
    if device not in (None, "cpu"):
        raise BackendUnavailable("numpy", f"NumPy has only the 'cpu' device, got {device!r}")
    if int(np.__version__.split(".")[0]) >= 2:
        xp = np
    else:  # pragma: no cover - numpy 1.x
        import array_api_compat.numpy as xp
    return Backend(
        name="numpy", xp=xp, device="cpu", spec="numpy", library="numpy",
        _to_numpy=np.asarray,
        _owns=lambda a: type(a) is np.ndarray,
        info={"version": np.__version__},
    )
