"""Child process of the memory pass: one epoch of one contender, then its peaks as JSON.

Usage (by harness.measure_memory): python -m benchmarks.memory_child
    DEVICE CONFIG STEPS DTYPE NAME THREADS TF32 [PBP_SPEC]

The contender's libraries are imported (and a GPU context started) first, and the data made,
so that the baseline holds everything but the contender's own setup and training. Then the
kernel's high-water mark is reset (Linux /proc/self/clear_refs) and read again after the
epoch: their difference is the peak RSS growth caused by setup + one epoch. Where the reset
is not possible, ru_maxrss is used instead and the result is marked approximate.
"""

from __future__ import annotations

import json
import resource
import sys


def status_kib(field):
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return status_kib("VmHWM") is not None
    except OSError:
        return False


def prime(lib, device):
    """Import ``lib`` and start its runtime (thread pool; GPU context and allocator) before
    the baseline, so that the growth measured is what training allocates, not start-up."""
    if lib == "portable_bp":
        import portable_bp  # noqa: F401
    elif lib == "sklearn":
        import sklearn.neural_network  # noqa: F401
    elif lib == "torch":
        import torch
        # one tiny SGD step: starts the thread pool and loads what torch.optim imports lazily
        # (about 70 MiB of code), one-time costs that do not depend on the network
        lin = torch.nn.Linear(2, 2)
        lin(torch.ones(1, 2)).sum().backward()
        torch.optim.SGD(lin.parameters(), lr=0.1).step()
        if device == "gpu":
            torch.zeros(1, device="cuda")
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
    elif lib == "cupy" and device == "gpu":
        import cupy as cp
        float((cp.ones((2, 2), dtype=cp.float32) @ cp.ones((2, 2), dtype=cp.float32)).sum())
        cp.get_default_memory_pool().free_all_blocks()
    elif lib == "jax":
        from .peers import import_jax
        jax = import_jax()
        x = jax.device_put(1.0, jax.devices("gpu" if device == "gpu" else "cpu")[0])
        jax.jit(jax.grad(lambda v: v * v))(x).block_until_ready()  # load the compiler


def track_cupy_peak():
    """CuPy's pool keeps no high-water mark of the bytes in use (``total_bytes`` is what the
    pool holds, freed blocks included): route every allocation through the pool and record
    ``used_bytes`` after it. Returns a one-element list holding the peak."""
    import cupy as cp
    pool = cp.get_default_memory_pool()
    peak = [pool.used_bytes()]

    def malloc(size):
        mem = pool.malloc(size)
        used = pool.used_bytes()
        if used > peak[0]:
            peak[0] = used
        return mem

    cp.cuda.set_allocator(malloc)
    return peak


def gpu_bytes(lib, cupy_peak=None):
    """(peak bytes in use, bytes the allocator held at its peak) on the GPU."""
    if lib == "cupy":
        import cupy as cp
        held = cp.get_default_memory_pool().total_bytes()
        return (cupy_peak[0] if cupy_peak else held), held
    if lib == "torch":
        import torch
        return torch.cuda.max_memory_allocated(), torch.cuda.max_memory_reserved()
    if lib == "jax":
        import jax
        stats = jax.devices("gpu")[0].memory_stats() or {}
        return stats.get("peak_bytes_in_use"), stats.get("bytes_reserved")
    return None, None


def main(argv):
    device, cname, steps, dtype, name, threads, tf32 = argv[:7]
    pbp_specs = argv[7:] or None
    from .__main__ import fix_threads
    fix_threads(int(threads), True)
    from . import configs as C
    from . import harness

    cfg = C.with_steps(C.CONFIGS[cname], int(steps))
    X, Y = C.make_data(cfg, dtype)
    params = C.init_params(cfg, dtype)
    contenders, skipped = harness.build_contenders(device, cfg, dtype, X, Y, params, tf32 == "1",
                                                   keep=lambda n: n == name, pbp_specs=pbp_specs)
    found = [c for c in contenders if c.name == name]
    if not found:
        raise SystemExit(f"no contender {name!r} here: {skipped.get(name, 'unknown name')}")
    c = found[0]
    for lib in c.libs:
        prime(lib, device)
    harness.apply_threads(int(threads), load=False)
    cupy_peak = track_cupy_peak() if c.gpu_lib == "cupy" else None
    exact = reset_peak()
    base_kib = status_kib("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    run_epoch = c.setup()
    run_epoch()
    peak_kib = status_kib("VmHWM") if exact else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    used, held = gpu_bytes(c.gpu_lib, cupy_peak) if c.gpu_lib else (None, None)
    mib = lambda b: None if b is None else b / 2**20  # noqa: E731
    print(json.dumps({"rss_growth_mib": max(0, peak_kib - base_kib) / 1024,
                      "rss_peak_mib": peak_kib / 1024, "rss_exact": exact,
                      "gpu_mib": mib(used), "gpu_held_mib": mib(held)}))


if __name__ == "__main__":
    main(sys.argv[1:])
