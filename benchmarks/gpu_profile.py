"""``python -m benchmarks.gpu_profile``: where one training epoch's time goes, portable_bp
beside PyTorch eager, on the same network, data and weights as ``python -m benchmarks``.

For each config and contender it prints
  * the device work of one epoch, from ``torch.profiler`` (on a GPU it records every CUDA
    kernel of the process through CUPTI, CuPy's and cuBLAS's as well as torch's): kernels
    per SGD step, busy time against wall time, and the kernels taking most of the time;
  * with ``--cprofile``, the host side of portable_bp's ``fit``: the Python functions with
    the most time of their own, which is what bounds a launch-bound config such as B;
  * with ``--alloc`` (GPU), the device memory portable_bp's ``fit`` allocates, by Python
    line (CuPy's LineProfileHook): where a step's temporaries and copies come from.
Run it after the benchmark has said *how fast*; this says *why*. ``--device cpu`` runs the
same program on NumPy and CPU torch (operators instead of kernels), to check it anywhere.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import time
from collections import defaultdict

from .__main__ import fix_threads


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu_profile", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="B,E", help="comma list of B,C,D,E (default B,E)")
    p.add_argument("--device", choices=("gpu", "cpu"), default="gpu")
    p.add_argument("--steps", type=int, default=None,
                   help="SGD steps profiled per config (default: 64 for B-D, 8 for E)")
    p.add_argument("--top", type=int, default=10, help="kernels / functions listed per contender (default 10)")
    p.add_argument("--cprofile", action="store_true", help="also profile portable_bp's host side with cProfile")
    p.add_argument("--alloc", action="store_true", help="GPU: also list portable_bp's allocations by Python line")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)
    args.configs = [c.strip().upper() for c in args.configs.split(",") if c.strip()]
    bad = [c for c in args.configs if c not in "BCDE" or len(c) != 1]
    if bad or args.steps is not None and args.steps < 1 or args.top < 1:
        p.error(f"unknown config {bad}" if bad else "--steps and --top must be >= 1")
    return args


# the benchmark's own contenders (harness.build_contenders), by name: set up as it times them
PROFILED = {"gpu": ("portable_bp[cupy]", "torch eager cuda"), "cpu": ("portable_bp[numpy]", "torch eager")}


def contenders(device, cfg, X, Y, params):
    """{name: run_epoch} for the profiled contenders that can run here; a line for the rest."""
    from . import harness
    found, skipped = harness.build_contenders(device, cfg, "float32", X, Y, params,
                                              keep=lambda name: name in PROFILED[device])
    for name, why in skipped.items():
        print(f"-- {name}: skipped ({why})")
    return {c.name: c.setup() for c in found}


def device_work(run_epoch, device):
    """One profiled epoch: the device events (kernels and copies on a GPU, operators on the
    CPU) as (name, microseconds), and the epoch's wall time unprofiled (median of 3)."""
    import torch
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile
    walls = []
    for _ in range(3):
        t0 = time.perf_counter()
        run_epoch()
        walls.append(time.perf_counter() - t0)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device == "gpu" else [])
    with profile(activities=acts) as prof:
        run_epoch()
    if device == "gpu":
        torch.cuda.synchronize()
    want = DeviceType.CUDA if device == "gpu" else DeviceType.CPU
    events = []
    for e in prof.events():
        if e.device_type != want or (device == "cpu" and e.cpu_parent is not None):
            continue  # on the CPU keep top-level operators only, so nothing is counted twice
        events.append((e.name, e.time_range.end - e.time_range.start))
    return events, statistics.median(walls)


def summarise(events, wall_s, steps, top):
    per = defaultdict(lambda: [0, 0.0])
    for name, us in events:
        per[name][0] += 1
        per[name][1] += us
    busy = sum(us for _, us in events)
    rows = sorted(per.items(), key=lambda kv: -kv[1][1])[:top]
    return {"events_per_step": len(events) / steps, "busy_ms": busy / 1e3, "wall_ms": wall_s * 1e3,
            "busy_fraction": busy / 1e6 / wall_s if wall_s else None,
            "top": [{"name": n, "count": c, "ms": us / 1e3} for n, (c, us) in rows]}


def host_profile(run_epoch, top):
    prof = cProfile.Profile()
    prof.enable()
    run_epoch()
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def allocations(run_epoch, lines=60):
    """CuPy's per-line report of one epoch's device allocations (the first ``lines``)."""
    try:
        from cupy.cuda import memory_hooks
        hook = memory_hooks.LineProfileHook()
        with hook:
            run_epoch()
    except Exception as exc:  # noqa: BLE001 - a CuPy without the hook: say so, go on
        return f"(no allocation report: {type(exc).__name__}: {exc})"
    out = io.StringIO()
    hook.print_report(file=out)
    return "\n".join(out.getvalue().splitlines()[:lines])


def main(argv=None):
    args = parse(argv)
    fix_threads(2, pin=True)  # as the benchmark does, before NumPy or torch is imported
    from . import configs as C
    from . import harness
    if args.device == "gpu" and harness.gpu_available():
        print(f"GPU profile skipped: no GPU ({harness.gpu_available()})")
        return
    report = {}
    for cname in args.configs:
        cfg = C.CONFIGS[cname]
        steps = args.steps or (8 if cname == "E" else 64)
        cfg = C.with_steps(cfg, steps)
        X, Y = C.make_data(cfg, "float32")
        params = C.init_params(cfg, "float32")
        print(f"\n== {cfg.describe()}, float32, {steps} steps per profiled epoch ==")
        report[cname] = {}
        for name, run_epoch in contenders(args.device, cfg, X, Y, params).items():
            run_epoch()  # warm-up: kernel compilation, cuBLAS handles, pool growth
            s = summarise(*device_work(run_epoch, args.device), steps, args.top)
            report[cname][name] = s
            print(f"-- {name}: wall {s['wall_ms']:.2f} ms/epoch ({s['wall_ms'] / steps:.3f} ms/step), "
                  f"device busy {s['busy_ms']:.2f} ms ({s['busy_fraction']:.0%}), "
                  f"{s['events_per_step']:.1f} {'kernels+copies' if args.device == 'gpu' else 'operators'}/step")
            for r in s["top"]:
                print(f"   {r['ms']:9.3f} ms {r['count']:6d}x  {r['name'][:100]}")
            if args.cprofile and name.startswith("portable_bp"):
                text = host_profile(run_epoch, args.top)
                report[cname][name]["cprofile"] = text
                print(text)
            if args.alloc and args.device == "gpu" and name.startswith("portable_bp"):
                text = allocations(run_epoch)
                report[cname][name]["allocations"] = text
                print(text)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
