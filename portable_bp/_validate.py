"""Argument checks shared by the whole package, with messages that name the argument.

A bool is an ``int`` to Python, but ``epochs=True`` is always a mistake, so every integer
check here refuses it; NumPy integer and float scalars are accepted (and returned as Python
numbers). Each check returns the value converted, so a caller writes one line.
"""

from __future__ import annotations

import math
from numbers import Integral, Real


def integer(value, name: str, minimum: int = 0) -> int:
    """``value`` as an int >= ``minimum``, or a ValueError naming ``name``."""
    if type(value) is int and value >= minimum:  # the common case, without the ABC check
        return value
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        kind = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum,
                                                                           f"an integer >= {minimum}")
        raise ValueError(f"{name} must be {kind}, got {value!r}")
    return int(value)


def number(value, name: str, lo: float = 0.0, hi: float = math.inf, *, lo_open: bool = False,
           hi_open: bool = True) -> float:
    """``value`` as a finite float in the range given (by default ``[0, inf)``), or a
    ValueError naming ``name`` and the range."""
    inside = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if inside:
        x = float(value)
        inside = (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)
    if not inside:
        if lo == 0 and hi == math.inf:
            kind = "a positive number" if lo_open else "a number >= 0"
        else:
            kind = f"a number {'>' if lo_open else '>='} {lo:g}"
            if hi != math.inf:
                kind += f" and {'<' if hi_open else '<='} {hi:g}"
        raise ValueError(f"{name} must be {kind} (finite), got {value!r}")
    return float(value)


def choice(value, name: str, choices) -> str:
    """``value`` when it is one of ``choices`` (strings), else a TypeError or ValueError
    naming ``name`` and the choices."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {sorted(choices)}, got {type(value).__name__}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")
    return value
