"""The contenders: who trains the benchmark networks, and whether they can run here.

Every contender is set up once per (config, dtype) with its data already where it trains
(host-to-device transfer is not timed) and returns ``run_epoch()``. portable_bp is timed
through its public ``fit`` call (:func:`setup_pbp`): everything a user pays for.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import PBP_VARIANTS
from . import configs as C
from .handwritten_numpy import HandwrittenMLP
from .handwritten_tight import TightNumpyMLP

PBP_SPECS = {"cpu": ("numpy", "torch", "jax:cpu"), "gpu": ("cupy", "torch:cuda", "jax:gpu")}
REFERENCE = {"cpu": "portable_bp[numpy]", "gpu": "portable_bp[cupy]"}


@dataclass
class Contender:
    name: str
    setup: Callable[[], Callable[[], None]]  # returns run_epoch()
    libs: tuple = ()         # imported (GPU context started) before a memory baseline
    gpu_lib: str | None = None  # whose allocator to read for GPU memory: cupy, torch, jax
    note: str = ""


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _gpu_reason(library: str, probe) -> str:
    """'' when ``library`` is installed and ``probe()`` (its import and a GPU call) raises
    nothing, else why not; asked once per process."""
    if library not in _gpu_cache:
        reason = f"{library} not installed" if not has(library) else ""
        if not reason:
            try:
                reason = probe()
            except Exception as exc:  # noqa: BLE001 - any failure means: no GPU for it
                reason = f"{library} cannot use a GPU: {type(exc).__name__}: {exc}"
        _gpu_cache[library] = reason
    return _gpu_cache[library]


_gpu_cache: dict[str, str] = {}


def _cupy_probe() -> str:
    import cupy as cp
    float((cp.ones((2, 2), dtype=cp.float32) @ cp.ones((2, 2), dtype=cp.float32)).sum())
    return ""


def _torch_probe() -> str:
    import torch
    return "" if torch.cuda.is_available() else f"torch {torch.__version__} sees no CUDA device"


def _jax_probe() -> str:
    import jax
    jax.devices("gpu")
    return ""


def cupy_gpu() -> str:
    """'' when CuPy can compute on a GPU, else why not."""
    return _gpu_reason("cupy", _cupy_probe)


def torch_cuda() -> str:
    """'' when PyTorch sees a CUDA device, else why not."""
    return _gpu_reason("torch", _torch_probe)


def jax_gpu() -> str:
    """'' when JAX has a GPU device, else why not."""
    return _gpu_reason("jax", _jax_probe)


def gpu_available() -> str:
    """'' when some GPU library works here, else the reasons."""
    reasons = [cupy_gpu(), torch_cuda()]
    return "" if "" in reasons else "; ".join(reasons)


_pbp_cache: dict[str, str] = {}


def pbp_probe(spec: str) -> str:
    """'' when portable_bp can train on backend ``spec`` here, else why not."""
    if spec not in _pbp_cache:
        try:
            import portable_bp as pbp

            ok, reason = pbp.backends.probe(spec)
            _pbp_cache[spec] = "" if ok else (reason or "unavailable")
        except Exception as exc:  # noqa: BLE001 - anything means "cannot run here"
            _pbp_cache[spec] = f"{type(exc).__name__}: {exc}"
    return _pbp_cache[spec]


def setup_pbp(spec, cfg, dtype, X, Y, params=None, tf32=False):
    """The whole public training call, ``fit``: what a user would time.

    Where a round times several epochs (epochs shorter than ``timing.MIN_ROUND_S``), they are
    one training run, ``fit(epochs=k)`` (the returned callable's ``epochs(k)``), as a user
    trains for many epochs; the hand-written contenders call their epoch k times.

    ``spec`` is a backend spec, or one with a variant appended: ``+ref`` (``numpy+ref``) the
    same network with ``fused_kernels = False``, the Array API reference path, to measure
    what the backend's kernels and one-call SGD step gain; ``+each`` one ``fit(epochs=1)``
    call per epoch even then (what fit's fixed cost per call weighs)."""
    import portable_bp as pbp
    spec, _, variant = spec.partition("+")
    if variant not in PBP_VARIANTS:
        raise ValueError(f"unknown portable_bp variant {'+' + variant!r}: the variants are +ref and +each")
    if spec.startswith("jax"):
        from .peers import import_jax
        import_jax(tf32)  # same float64 / matmul-precision settings as the JAX peer
    be = pbp.backends.get(spec)
    Xd = be.asarray(X, dtype=dtype)
    Yd = be.asarray(Y) if Y.dtype.kind == "i" else be.asarray(Y, dtype=dtype)
    be.synchronize()
    net = pbp.Network(list(cfg.sizes), activation=cfg.activation,
                      output_activation=cfg.output_activation, loss=cfg.loss,
                      backend=spec, dtype=dtype, seed=C.SEED)
    if params is not None:
        net.set_params(params)  # the same starting weights as the other contenders
    if variant == "ref":
        net.fused_kernels = False
    kw = {"epochs": 1, "batch_size": cfg.batch, "optimizer": "sgd", "lr": C.LR, "shuffle": False,
          "progress": False}

    def run_epoch():
        net.fit(Xd, Yd, **kw)
        be.synchronize()

    def run_epochs(k):
        net.fit(Xd, Yd, **{**kw, "epochs": k})
        be.synchronize()

    if variant != "each":
        run_epoch.epochs = run_epochs
    return run_epoch


def setup_handwritten(xp_name, cfg, dtype, X, Y, params, tight=False):
    """The plain hand-written trainer (NumPy or CuPy), or with ``tight`` the tightest NumPy
    one (preallocated buffers, ``out=`` everywhere, no per-step allocation:
    ``handwritten_tight``)."""
    if xp_name == "cupy":
        import cupy as xp
        sync = xp.cuda.Device().synchronize
    else:
        xp, sync = np, (lambda: None)
    if tight:
        net = TightNumpyMLP(params, cfg.activation, cfg.output_activation, C.LR, cfg.batch)
    else:
        net = HandwrittenMLP(xp, params, cfg.activation, cfg.output_activation, C.LR)
    Xd, Yd = xp.asarray(X), xp.asarray(Y)
    sync()

    def run_epoch():
        net.run_epoch(Xd, Yd, cfg.batch)
        sync()

    return run_epoch


def setup_bound(xp_name, cfg, dtype):
    from .matmul_bound import setup_bound as _setup
    if xp_name == "cupy":
        import cupy as xp
        return _setup(xp, cfg, dtype, cfg.steps, sync=xp.cuda.Device().synchronize)
    return _setup(np, cfg, dtype, cfg.steps)


def build_contenders(device, cfg, dtype, X, Y, params, tf32=False, keep=lambda name: True,
                     pbp_specs=None):
    """([Contender], {name: reason skipped}) for one section, config and dtype.

    Availability is probed (which imports the library) only for names that ``keep``
    accepts, so a filtered run or a memory child loads only what it uses."""
    from . import peers

    out, skipped = [], {}

    def add(name, probe, setup, libs=(), gpu_lib=None, note=""):
        if not keep(name):
            return
        reason = probe()
        if reason:
            skipped[name] = reason
        else:
            out.append(Contender(name, setup, libs, gpu_lib, note))

    def installed(module):
        return lambda: "" if has(module) else f"{module} not installed"

    for spec in pbp_specs or PBP_SPECS[device]:
        base = spec.partition("+")[0]  # numpy+ref: numpy's backend, kernels off
        lib = base.split(":")[0]
        add(f"portable_bp[{spec.replace(':cpu', '')}]", lambda s=base: pbp_probe(s),
            lambda s=spec: setup_pbp(s, cfg, dtype, X, Y, params, tf32),
            ("portable_bp", lib), lib if device == "gpu" else None)
    if device == "cpu":
        add("numpy (hand-written)", lambda: "",
            lambda: setup_handwritten("numpy", cfg, dtype, X, Y, params))
        add("numpy (tight)", lambda: "",
            lambda: setup_handwritten("numpy", cfg, dtype, X, Y, params, tight=True))
        add("torch eager", installed("torch"),
            lambda: peers.setup_torch(cfg, dtype, X, Y, params, C.LR, "cpu"), ("torch",))
        add("scikit-learn", installed("sklearn"),
            lambda: peers.setup_sklearn(cfg, dtype, X, Y, params, C.LR), ("sklearn",),
            note=peers.SKLEARN_A_NOTE if cfg.loss == "mse" else "")
        add("jax jit", installed("jax"),
            lambda: peers.setup_jax(cfg, dtype, X, Y, params, C.LR, "cpu"), ("jax",))
        add("jax scan epoch", installed("jax"),
            lambda: peers.setup_jax_scan(cfg, dtype, X, Y, params, C.LR, "cpu"), ("jax",))
        add("matmul bound", lambda: "", lambda: setup_bound("numpy", cfg, dtype))
    else:
        add("cupy (hand-written)", cupy_gpu,
            lambda: setup_handwritten("cupy", cfg, dtype, X, Y, params), ("cupy",), "cupy")
        add("torch eager cuda", torch_cuda,
            lambda: peers.setup_torch(cfg, dtype, X, Y, params, C.LR, "cuda"), ("torch",), "torch")
        add("torch cuda graph", torch_cuda,
            lambda: peers.setup_torch_graph(cfg, dtype, X, Y, params, C.LR, "cuda"), ("torch",), "torch")
        add("jax jit gpu", jax_gpu,
            lambda: peers.setup_jax(cfg, dtype, X, Y, params, C.LR, "gpu", tf32), ("jax",), "jax")
        add("jax scan epoch gpu", jax_gpu,
            lambda: peers.setup_jax_scan(cfg, dtype, X, Y, params, C.LR, "gpu", tf32), ("jax",), "jax")
        add("matmul bound", cupy_gpu, lambda: setup_bound("cupy", cfg, dtype), ("cupy",), "cupy")
    return out, skipped


def name_filter(patterns, always=()):
    """A predicate keeping names that contain one of ``patterns`` (case-insensitive), and
    the names in ``always`` (the reference, so that ratios can still be computed)."""
    if not patterns:
        return lambda name: True
    aliases = {"sklearn": "scikit-learn", "handwritten": "hand-written"}
    pats = [aliases.get(p.lower(), p.lower()) for p in patterns]
    return lambda name: name in always or any(p in name.lower() for p in pats)
