"""The argument checks every generator and reader repeats, written once.

Counts must be true integers (``300.0`` is refused rather than silently truncated or,
worse, carried into labels as floats) and amounts of noise real numbers that are finite
and non-negative, so a typo fails at the call instead of producing NaN or inf data.
"""

from __future__ import annotations

import math
import numbers


def integer_at_least(name: str, value, minimum: int) -> int:
    """``value`` as an int, or a ValueError saying it must be an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return int(value)


def non_negative(name: str, value) -> float:
    """``value`` as a float, or a ValueError saying it must be a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            math.isfinite(value) and float(value) >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)

