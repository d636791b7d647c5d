"""array-api-strict, the reference implementation: it refuses anything outside the standard.

Running the whole suite on it proves the math uses nothing but the Array API (2024.12):
the reference Ops, and the in-place Ops that mutable libraries share.
Its extra devices (``device1``, ``device2``) let the tests check device mismatches on a CPU.
"""

import numpy as np

from ..ops import InPlaceOps
from ._base import Backend, BackendUnavailable

API_VERSION = "2024.12"


def make(device=None) -> Backend:
    try:
        import array_api_strict as xp
    except ImportError as exc:
        raise BackendUnavailable("array_api_strict", str(exc),
                                 'pip install -e ".[test]" in the checkout (or pip install array-api-strict)') from None
    from array_api_strict._array_object import Array

    xp.set_array_api_strict_flags(api_version=API_VERSION)
    name = device or "CPU_DEVICE"
    try:
        dev = xp.Device(name)
    except ValueError as exc:
        raise BackendUnavailable("array_api_strict", f"unknown device {name!r}: {exc}") from None
    spec = "array_api_strict" if device is None else f"array_api_strict:{device}"
    return Backend(
        name="array_api_strict", xp=xp, device=dev, spec=spec,
        _to_numpy=lambda a: np.from_dlpack(a).copy(),
        _owns=lambda a: isinstance(a, Array) and a.device == dev,
        ops=InPlaceOps(xp),
        info={"version": xp.__version__, "api_version": API_VERSION},
    )
