"""Typed scalars: the step's constants as 0-d arrays, made once per dtype and device.

Why: a line such as relu's ``xp.maximum(u, 0)`` hands a Python number to a function of two
arrays. array-api-compat's torch namespace turns that number into a new tensor on ``u``'s
device at every call: on CUDA a host-to-device copy and a stream synchronization per
activation, which CUDA-graph capture refuses outright (the captured step then falls back to
eager). ``typed(xp, 0.0, u)`` is that number as a 0-d array of ``u``'s dtype on ``u``'s
device, made the first time it is asked for (in the eager step before any recording) and
reused ever after: an ordinary device operand, on every namespace, with the value unchanged.

Namespaces whose steps are compiled (JAX) keep the Python number: inside a traced function
a 0-d array made there would be a tracer of that one trace, which must not outlive it, and
the compiler folds the number into the program once anyway. A backend says so with
:func:`keep_python_scalars`.
"""

from __future__ import annotations

from typing import Any

import array_api_compat

_MADE: dict[tuple, Any] = {}
_PYTHON_SCALARS: set[int] = set()  # id() of namespaces whose numbers stay Python numbers


def keep_python_scalars(xp: Any) -> None:
    """Let ``typed`` hand ``xp``'s functions the Python number itself (compiled namespaces)."""
    _PYTHON_SCALARS.add(id(xp))


def typed(xp: Any, value: float, like: Any) -> Any:
    """``value`` as a 0-d array of ``like``'s dtype on ``like``'s device (made once, then
    the same array every call), or the Python number on a namespace that keeps them."""
    if id(xp) in _PYTHON_SCALARS:
        return value
    device = getattr(like, "device", None)  # the standard's attribute: cheaper than asking compat
    if device is None:
        device = array_api_compat.device(like)
    key = (id(xp), value, like.dtype, device)
    try:
        return _MADE[key]
    except KeyError:
        made = _MADE[key] = xp.asarray(value, dtype=like.dtype, device=device)
        return made
    except TypeError:  # a device object that cannot be hashed: by its repr
        return _made_for_unhashable(xp, value, like, device)


def _made_for_unhashable(xp: Any, value: float, like: Any, device: Any) -> Any:
    key = (id(xp), value, like.dtype, repr(device))
    made = _MADE.get(key)
    if made is None:
        made = _MADE[key] = xp.asarray(value, dtype=like.dtype, device=device)
    return made


def made_count() -> int:
    """How many typed scalars exist (what the tests read: calls after the first make none)."""
    return len(_MADE)
