"""Random numbers for the step, from a counter: the same bits on every backend.

The Array API has no random numbers, and the libraries' own generators differ (and
cannot be replayed inside a captured graph or a scanned epoch without carrying their
state). The step's randomness (dropout masks) is therefore a pure function of integers:
the network's seed, the step counter, the layer and each element's position, hashed by
murmur3's 32-bit finalizer (``fmix32``). It is written on ``int32`` with exact integer
operations only, so NumPy, CuPy, PyTorch, JAX and array-api-strict give the same bits:

* multiplication wraps modulo 2³² (two's complement) on every library;
* a logical right shift is an arithmetic shift followed by a mask (PyTorch has no
  unsigned 32-bit shifts on the CPU; JAX without x64 has no int64);
* constants above 2³¹ are written as their signed 32-bit values.

The same (seed, counter, layer, row) gives the same mask however the step runs: eagerly,
compiled, scanned (the counter is carried), replayed from a CUDA graph (the counter lives
on the device), resumed from a checkpoint (the counter is saved) or replayed after a
divergence; and one process or many, since a rank's part of a batch hashes its rows'
positions in the whole batch.
"""

from __future__ import annotations

from typing import Any

Array = Any

C1 = 0x85EBCA6B - (1 << 32)  # murmur3 fmix32's multipliers, as signed 32-bit integers
C2 = 0xC2B2AE35 - (1 << 32)
GOLDEN = 0x9E3779B9 - (1 << 32)  # an odd constant: multiplying by it permutes the integers mod 2³²
BITS = 24  # a uniform draw is 24 bits: exact in float32, and compared as an integer


def wrap32(value: int) -> int:
    """A Python integer reduced modulo 2³² to the signed 32-bit range."""
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _shift_right(h: Array, s: int) -> Array:
    """The logical right shift of an int32 array: arithmetic shift, then the high bits cleared."""
    return (h >> s) & ((1 << (32 - s)) - 1)


def fmix32(h: Array) -> Array:
    """murmur3's finalizer on int32 (wrapping): every input bit flips each output bit with
    probability about ½, and it is a bijection, so distinct counters never collide."""
    h = h ^ _shift_right(h, 16)
    h = h * C1
    h = h ^ _shift_right(h, 13)
    h = h * C2
    return h ^ _shift_right(h, 16)


def fmix32_int(h: int) -> int:
    """:func:`fmix32` on a Python integer (unsigned arithmetic masked to 32 bits), wrapped
    to the signed range: the keys' scalar part is hashed on the host, so that no host
    integer becomes a device array inside a captured graph."""
    h &= 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    return wrap32(h ^ (h >> 16))


def as_int32(xp: Any, value: Any) -> Array:
    """An integer array of any width (a traced scan index, a device counter) as a
    one-element int32 array. One element, not 0-d: NumPy turns 0-d results into scalars,
    whose multiplication warns on the wrap-around the hash relies on."""
    return xp.reshape(xp.astype(value, xp.int32), (1,))


def stream(xp: Any, seed: int, count: Any, layer: int) -> Any:
    """The int32 key of one (seed, step counter, layer): three chained hashes, so that
    neighbouring counters or layers give unrelated streams. A Python int when ``count`` is
    one; a one-element int32 array when it is an array (traced or on the device)."""
    key = fmix32_int(wrap32(seed))
    if isinstance(count, int):
        return fmix32_int(fmix32_int(key ^ wrap32(count)) ^ (layer + 1))
    return fmix32(fmix32(as_int32(xp, count) ^ key) ^ (layer + 1))


def uniform_bits(xp: Any, key: Any, first_row: Any, shape: tuple[int, int], device: Any) -> Array:
    """A (rows, units) int32 array of uniform integers in [0, 2²⁴): element (r, j) hashes its
    position ((first_row + r)·units + j) in the whole batch with ``key``."""
    rows, units = shape
    first = wrap32(first_row) if isinstance(first_row, int) else as_int32(xp, first_row)
    r = xp.reshape(xp.arange(rows, dtype=xp.int32, device=device) + first, (-1, 1))
    j = xp.reshape(xp.arange(units, dtype=xp.int32, device=device), (1, -1))
    index = r * units + j
    return _shift_right(fmix32(index * GOLDEN + key), 32 - BITS)


def keep_threshold(rate: float) -> int:
    """The integer a 24-bit draw must reach to keep a unit: P(keep) = 1 − rate, to 2⁻²⁴."""
    return round(rate * (1 << BITS))

