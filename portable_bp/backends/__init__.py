"""The backend registry: ``get("cupy:1")``, ``available()``, ``register(name, factory)``.

A spec is ``name`` or ``name:device`` (``numpy``, ``cupy:1``, ``torch:cuda:0``, ``jax:gpu``,
``array_api_strict:device1``) or ``auto`` (CuPy when a GPU answers, else NumPy).
Backends load lazily: importing portable_bp imports no CuPy, PyTorch or JAX. A probe
(import plus a tiny real computation) runs once per spec; its failure is remembered and
re-raised with its reason.

Third parties add a backend with ``register(name, factory)`` or an entry point in the group
``portable_bp.backends`` whose object is such a factory: ``factory(device: str | None) -> Backend``.
"""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Callable
from importlib.metadata import EntryPoint

from ._base import DTYPES, Backend, BackendUnavailable

__all__ = ["Backend", "BackendUnavailable", "DTYPES", "get", "available", "known", "specs",
           "register", "unregister", "describe", "hot_path", "library_of"]

ENTRY_POINT_GROUP = "portable_bp.backends"

# name -> "module:function" (built in, imported on first use) or a callable (registered)
_FACTORIES: dict[str, str | Callable | EntryPoint] = {
    "numpy": "portable_bp.backends.numpy_:make",
    "array_api_strict": "portable_bp.backends.strict:make",
    "torch": "portable_bp.backends.torch_:make",
    "jax": "portable_bp.backends.jax_:make",
    "cupy": "portable_bp.backends.cupy_:make",
}
_BUILT_IN = dict(_FACTORIES)
_cache: dict[str, Backend | BackendUnavailable] = {}
# specs in _cache whose Ops are not checked yet: built by probe(), which only asks whether the
# backend runs here (listing what runs here built and checked every library: ~7 s with JAX)
_unchecked: set[str] = set()
_lock = threading.RLock()  # re-entrant: a factory may itself call get()
_entry_points_loaded = False


def register(name: str, factory: Callable, *, replace: bool = False) -> None:
    """Make ``factory(device) -> Backend`` available as backend ``name``."""
    if not isinstance(name, str) or not name or ":" in name or name == "auto":
        raise ValueError(f"backend name must be a non-empty string without ':' and not 'auto', got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory for backend {name!r} must be callable, got {type(factory).__name__}")
    _load_entry_points()
    if name in _FACTORIES and not replace:
        raise ValueError(f"backend {name!r} is already registered (pass replace=True to override)")
    with _lock:
        _FACTORIES[name] = factory
        _forget(name)


def unregister(name: str) -> None:
    """Forget backend ``name`` (one added by :func:`register`), and every backend made
    from it; a built-in name goes back to the built-in backend. KeyError if unknown."""
    with _lock:
        if name not in _FACTORIES:
            raise KeyError(f"no backend {name!r} is registered")
        if name in _BUILT_IN:
            _FACTORIES[name] = _BUILT_IN[name]
        else:
            del _FACTORIES[name]
        _forget(name)


def _forget(name: str) -> None:
    """Drop the cached backends made from ``name`` (under the lock)."""
    for spec in [s for s in _cache if s == name or s.startswith(name + ":")]:
        del _cache[spec]
        _unchecked.discard(spec)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        _FACTORIES.setdefault(ep.name, ep)  # imported only when first used


def known() -> list[str]:
    """Every backend name this installation knows, runnable here or not."""
    _load_entry_points()
    return list(_FACTORIES)


# the device variants of built-in backends worth listing beside their default spec, and
# which specs run on a GPU (before probing, which may not be possible here)
_VARIANTS = {"torch": ("torch:cuda",), "jax": ("jax:gpu",)}
_GPU = {"cupy", "torch:cuda", "jax:gpu"}


def specs() -> list[tuple[str, bool]]:
    """(spec, runs on a GPU) for every backend this installation knows and the device
    variants worth trying (``torch:cuda``), runnable here or not: what ``describe``
    reports and what the test suite parametrizes over."""
    out: list[tuple[str, bool]] = []
    for name in known():
        for spec in (name, *_VARIANTS.get(name, ())):
            out.append((spec, spec in _GPU))
    return out


def _split(spec: str) -> tuple[str, str | None]:
    name, _, device = spec.partition(":")
    return name, (device or None)


def _factory(name: str) -> Callable:
    entry = _FACTORIES[name]
    if isinstance(entry, str):
        module, _, func = entry.partition(":")
        return getattr(importlib.import_module(module), func)
    if isinstance(entry, EntryPoint):
        return entry.load()
    return entry


def get(spec: str | Backend = "numpy") -> Backend:
    """The Backend for ``spec``; raises ValueError for unknown names, BackendUnavailable
    (with the reason, the fix and the backends that do run here) for known ones that cannot
    run here. Listing those probes every backend once (see :func:`available`); code that
    handles the failure itself calls :func:`probe` instead."""
    try:
        return _get(spec)
    except BackendUnavailable as exc:
        raise BackendUnavailable(exc.name, exc.reason, exc.hint, runs_here=available()) from None


def _get(spec: str | Backend, checked: bool = True) -> Backend:
    """:func:`get` without the list of what runs here (what probe and auto build on); with
    ``checked=False`` the backend's Ops may not have passed their check yet (the next
    checked call runs it), for :func:`probe`, which only asks whether it runs."""
    if isinstance(spec, Backend):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"backend must be a name like 'numpy' or 'cupy:1', got {type(spec).__name__}")
    spec = spec.strip()
    if spec == "auto":
        return _auto()
    name, device = _split(spec)
    _load_entry_points()
    if name not in _FACTORIES:
        raise ValueError(f"unknown backend {spec!r}; known backends: {', '.join(sorted(_FACTORIES))} or 'auto'")
    with _lock:
        cached = _cache.get(spec)
        if cached is None:
            try:
                cached = _factory(name)(device)
                if not isinstance(cached, Backend):
                    raise TypeError(f"factory for backend {name!r} returned {type(cached).__name__}, not a Backend")
                _unchecked.add(spec)
            except BackendUnavailable as exc:
                cached = exc
            _cache[spec] = cached
        if checked and spec in _unchecked:
            _settle_ops(cached)  # type: ignore[arg-type]  # only backends are unchecked
            _unchecked.discard(spec)
    if isinstance(cached, BackendUnavailable):  # a fresh instance: a re-raised one keeps
        raise BackendUnavailable(cached.name, cached.reason, cached.hint)  # every traceback
    return cached


def kernels_off() -> bool:
    """``PORTABLE_BP_FUSED=0``: every backend made from now on runs the Array API reference
    Ops (no kernels, no one-call products), for debugging and comparisons."""
    return os.environ.get("PORTABLE_BP_FUSED") == "0"


def _settle_ops(backend: Backend) -> None:
    """The backend's Ops as it will be used: the reference when kernels are switched off,
    else its own with every override checked against the reference (``_check``)."""
    if kernels_off():
        backend.ops = backend.reference_ops
        return
    from ._check import checked

    with backend.activate():
        backend.ops = checked(backend.ops, backend.asarray, backend.to_numpy)


def _auto() -> Backend:
    try:
        return _get("cupy")
    except BackendUnavailable:
        return get("numpy")


def probe(spec: str) -> tuple[bool, str]:
    """(runs here, reason if not) for one spec, without raising. It builds the backend but
    leaves its Ops check to the first :func:`get` (the check drops an override, never the
    backend, so the answer is the same)."""
    try:
        _get(spec, checked=False)
        return True, ""
    except BackendUnavailable as exc:
        return False, exc.reason + (f" ({exc.hint})" if exc.hint else "")


def available() -> list[str]:
    """Backend specs that run on this machine, e.g. ``["numpy", "array_api_strict", "torch"]``.

    GPU specs appear as ``cupy`` and ``torch:cuda`` when a GPU answers.
    """
    return [spec for spec, _ in specs() if probe(spec)[0]]


def describe() -> list[dict]:
    """Every known backend: whether it runs here, its device, what its step adds to the
    Array API reference (see :func:`hot_path`), the overrides its check refused and why,
    and the reason when it does not run."""
    rows = []
    for spec, _ in specs():
        ok, reason = probe(spec)
        row = {"spec": spec, "available": ok, "reason": reason, "device": None, "version": None,
               "hot_path": None, "dropped": {}}
        if ok:
            b = get(spec)
            row.update(device=str(b.device), version=b.info.get("version"),
                       device_name=b.info.get("device_name", str(b.device)), hot_path=hot_path(b),
                       dropped=dict(b.ops.dropped))
        rows.append(row)
    return rows


def hot_path(backend: Backend) -> str:
    """What a backend's training step uses beyond the Array API reference, in brief: its
    Ops' name and how many primitives it overrides (each passed its check; the list is
    ``backend.ops.overrides()``), plus ``jit`` where the backend compiles the step;
    ``array-api`` when it adds nothing."""
    overrides = backend.ops.overrides()
    parts = [f"{backend.ops.name} ({len(overrides)} overrides)"] if overrides else []
    if backend.compile is not None:
        parts.append("jit")
    return "; ".join(parts) or "array-api"


def library_of(arr) -> str:
    """The name of the library an array belongs to (for error messages), importing none."""
    import array_api_compat as compat

    for lib, test in (("numpy", compat.is_numpy_array), ("cupy", compat.is_cupy_array),
                      ("torch", compat.is_torch_array), ("jax", compat.is_jax_array)):
        if test(arr):
            return lib
    return type(arr).__module__.split(".")[0]
