"""The machine, the libraries and their thread pools, recorded with every run."""

from __future__ import annotations

import os
import platform
import sys

from .contenders import cupy_gpu, has, torch_cuda


def apply_threads(n, load=True):
    """Same thread count for every library: BLAS/OpenMP pools via threadpoolctl (the env
    vars were set before import by __main__), PyTorch's intra-op pool explicitly.
    With ``load`` False only libraries already imported are touched."""
    if "torch" in sys.modules or (load and has("torch")):
        import torch
        torch.set_num_threads(n)
    if load and has("sklearn"):
        import sklearn  # noqa: F401 - load its OpenMP runtime so threadpoolctl sees it
    if has("threadpoolctl"):
        from threadpoolctl import threadpool_limits
        threadpool_limits(limits=n)


def blas_info():
    if not has("threadpoolctl"):
        return []
    from threadpoolctl import threadpool_info
    return [{k: d.get(k) for k in ("user_api", "internal_api", "num_threads", "version",
                                   "threading_layer", "architecture", "filepath")}
            for d in threadpool_info()]


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpu_name():
    try:
        if not cupy_gpu():
            import cupy as cp
            return cp.cuda.runtime.getDeviceProperties(0)["name"].decode()
        if not torch_cuda():
            import torch
            return torch.cuda.get_device_name(0)
    except Exception:  # noqa: BLE001, S110 - a missing name is not worth failing the run
        pass
    return None


def versions():
    from importlib import metadata
    out = {"python": platform.python_version()}
    dists = ["numpy", "torch", "scikit-learn", "jax", "jaxlib", "threadpoolctl", "psutil",
             "array-api-compat", "portable_bp"]
    cupy_dists = metadata.packages_distributions().get("cupy", [])
    for d in dists + list(cupy_dists):
        try:
            out[d] = metadata.version(d)
        except metadata.PackageNotFoundError:
            pass
    mod = sys.modules.get("portable_bp")
    if mod is not None and getattr(mod, "__version__", None):
        out["portable_bp"] = mod.__version__
    return out


def machine(threads):
    from .__main__ import THREAD_VARS
    info = {"platform": platform.platform(), "cpu": cpu_model(), "logical_cpus": os.cpu_count(),
            "threads": threads, "thread_env": {v: os.environ.get(v) for v in THREAD_VARS}}
    if hasattr(os, "sched_getaffinity"):
        info["affinity"] = sorted(os.sched_getaffinity(0))
    try:
        with open("/proc/meminfo") as f:
            info["memory_mib"] = int(f.readline().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return info
