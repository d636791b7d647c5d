"""The Backend object: everything that knows which array library and device we are on.

The math modules never import an array library; they receive ``xp`` (an Array API
namespace) from a Backend. A Backend only *creates* arrays (from host data, or initial
weights drawn on the host) and moves them back; it also answers "is this array mine?".
This is the only place outside the per-library modules that names NumPy, and only for
host-side work (the random generator, host buffers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..ops import Ops

DTYPES = ("float32", "float64")


class BackendUnavailable(RuntimeError):
    """A known backend that cannot run on this machine; the message says why, how to fix it
    and, when ``runs_here`` is given, which backends do run here."""

    def __init__(self, name: str, reason: str, hint: str = "", runs_here: Sequence[str] | None = None):
        self.name, self.reason, self.hint = name, reason, hint
        self.runs_here = None if runs_here is None else tuple(runs_here)
        msg = f"backend {name!r} cannot run here: {reason}"
        if hint:
            msg += f". To fix: {hint}"
        if self.runs_here is not None:
            msg += f". Backends that run here: {', '.join(self.runs_here) or 'none'}"
        super().__init__(msg)


@dataclass(eq=False)
class Backend:
    """One array library on one device.

    ``xp`` is the Array API namespace the math uses; ``device`` is passed to every array
    creation; ``mutable`` says whether the library's arrays can be written in place (NumPy,
    CuPy, PyTorch, array-api-strict) or not (JAX): arrays handed in by a caller are then
    copied, so that training never writes into the caller's memory.
    """

    name: str
    xp: Any
    device: Any
    spec: str
    mutable: bool = True
    is_gpu: bool = False
    _to_numpy: Callable[[Any], np.ndarray] = np.asarray
    _to_float: Callable[[Any], float] = float
    _synchronize: Callable[[], None] = lambda: None
    _owns: Callable[[Any], bool] = lambda a: False
    _context: Callable[[], Any] = contextlib.nullcontext
    _enable_float64: Callable[[], None] = lambda: None
    # a copy in C (row-major) order, where the library has layouts: a transposed or
    # column-major array handed in would otherwise make every step's element-wise pass strided
    _copy: Callable[[Any], Any] | None = None
    # (host NumPy array, NumPy dtype asked for or None) -> a copy on the device in that dtype,
    # where the namespace's own ``asarray(..., device=)`` does more than a transfer (JAX
    # compiles a conversion program for every new shape there: ~30 ms, at every batch shape)
    _from_host: Callable[[np.ndarray, Any], Any] | None = None
    # optional compile(fn, static_argnames=()) -> compiled fn, for pure functions of arrays
    # (JAX's jit; the named arguments are compile-time constants); None on eager libraries
    compile: Callable[..., Callable] | None = None
    # optional loop(body, carry, xs, length) -> (carry, ys) usable inside a compiled function
    # (JAX's lax.scan): ``length`` iterations, each given its slice of xs (which may hold no
    # arrays); a whole epoch then runs as one program
    loop: Callable[..., Any] | None = None
    # optional step capture (CUDA graphs): capture.warmup() is a context for the eager step
    # before recording, capture.record(body) -> graph with replay() (train.captured)
    capture: Any = None
    # the executors to prefer, best first ("scan", "jit", "graph"); eager is always possible
    executors: tuple = ()
    # the step primitives (portable_bp.ops): the library's overrides, checked against the
    # Array API reference when the registry hands the backend out; never None
    ops: Ops = None  # type: ignore[assignment]  # set in __post_init__ when not given
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.ops is None:
            self.ops = Ops(self.xp)
        self._reference_ops: Ops | None = None
        #: executors that failed to compile or capture here: name -> why (fit fell back to eager)
        self.executor_failures: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"Backend({self.spec!r}, device={self.device!r})"

    @property
    def reference_ops(self) -> Ops:
        """The Array API reference of every primitive on this backend's namespace (what
        ``ops`` is checked against, and what ``Network.fused_kernels = False`` runs)."""
        if self._reference_ops is None:
            self._reference_ops = Ops(self.xp)
        return self._reference_ops

    # -- dtypes ------------------------------------------------------------------------
    def dtype(self, name: str):
        """The namespace's dtype object for ``"float32"`` or ``"float64"``."""
        if name not in DTYPES:
            raise ValueError(f"dtype must be one of {list(DTYPES)}, got {name!r}")
        if name == "float64":
            self._enable_float64()
        return getattr(self.xp, name)

    # -- moving data -------------------------------------------------------------------
    def asarray(self, data, dtype=None):
        """Host data (NumPy array, sequence, scalar) -> an array on this backend's device.

        Arrays of this backend pass through (cast to ``dtype`` when given).
        """
        if self.owns(data):
            arr = data
            if dtype is not None:
                dt = self.dtype(dtype) if isinstance(dtype, str) else dtype
                if arr.dtype != dt:
                    arr = self.xp.astype(arr, dt)
            return arr
        host = np.asarray(data)
        if self._from_host is not None:  # it casts as it copies: one copy
            wanted = self.dtype(dtype) if isinstance(dtype, str) else dtype
            with self.activate():
                return self._from_host(host, None if wanted is None else np.dtype(wanted))
        if isinstance(dtype, str):
            host = host.astype(dtype, copy=False)
            dtype = self.dtype(dtype)
        with self.activate():
            return self.xp.asarray(host, dtype=dtype, device=self.device)

    def to_numpy(self, arr) -> np.ndarray:
        """A host NumPy array with the values of ``arr`` (a device-to-host transfer on a GPU).

        On CPU backends it may share memory with ``arr``: copy it before writing to it."""
        return self._to_numpy(arr)

    def to_float(self, scalar) -> float:
        """The value of a 0-d array as a Python float: the one host read of an epoch (the
        loss), by the library's cheapest route to the host."""
        return self._to_float(scalar)

    def copy(self, arr):
        """A copy of ``arr`` (an array of this backend) that nothing else shares, in row-major
        order where the library has layouts."""
        if self._copy is not None:
            return self._copy(arr)
        return self.xp.asarray(arr, copy=True)

    def owns(self, arr) -> bool:
        """True when ``arr`` is an array of this library on this device."""
        return self._owns(arr)

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU): needed before reading a clock."""
        self._synchronize()

    def activate(self):
        """Context in which this backend's device is current (CuPy's multi-GPU needs it)."""
        return self._context()

    # -- randomness --------------------------------------------------------------------
    @staticmethod
    def rng(seed) -> np.random.Generator:
        """The host generator for initial weights and batch order.

        The Array API has no random numbers, so every backend draws on the host from the
        same NumPy Generator: one seed gives bit-identical weights and batch orders everywhere.
        """
        return np.random.default_rng(seed)


def host_numeric(data, what: str) -> np.ndarray:
    """``data`` as a host NumPy array of numbers, or a TypeError naming ``what``."""
    try:
        host = np.asarray(data)
    except (ValueError, TypeError) as exc:  # ragged nested lists, odd objects
        raise TypeError(f"{what} must be a numeric array or sequence: {exc}") from None
    if host.dtype.kind not in "biuf":
        raise TypeError(f"{what} must hold real numbers, got dtype {host.dtype}")
    return host
