"""The benchmark run: every config and dtype on a device, the TF32 pass, the JSON report.

The pieces: :mod:`.contenders` (who trains, and whether they can run here), :mod:`.timing`
(interleaved rounds, per-round ratios, the memory pass), :mod:`.report` (table and
targets), :mod:`.environment` (machine, versions, thread pools).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import time

from . import configs as C
from .contenders import REFERENCE, build_contenders, gpu_available, has, name_filter, setup_pbp  # noqa: F401
from .environment import apply_threads, blas_info, gpu_name, machine, versions
from .report import HEADER, check_targets, fmt_rate, table_rows
from .timing import MIN_ROUND_S, measure_memory, summarise, time_block


def _pbp_specs(device, args):
    """The portable_bp backends asked for in this section (None: the defaults)."""
    specs = [s for s in (args.pbp_backends or []) if ("cupy" in s or "cuda" in s or "gpu" in s)
             == (device == "gpu")] or None
    if specs:  # plain "jax" would follow JAX's default device, the GPU when there is one
        specs = ["jax:cpu" if s == "jax" else s for s in specs]
    return specs


def _time_config(device, args, cfg, dtype, reference, pbp_specs, log):
    """One block: every contender of one config and dtype, timed (and its memory)."""
    X, Y = C.make_data(cfg, dtype)
    params = C.init_params(cfg, dtype)
    contenders, skipped = build_contenders(device, cfg, dtype, X, Y, params, args.tf32_child,
                                           name_filter(args.contenders, [reference]), pbp_specs)
    log(f"-- {cfg.describe()}, {dtype}, {cfg.n_samples} samples/epoch: {len(contenders)} contenders")
    times, failed = time_block(contenders, args.rounds, log)
    skipped.update({n: f"failed: {why}" for n, why in failed.items()})
    stats = summarise(times, cfg.n_samples, reference)
    for c in contenders:
        if c.name in stats and c.note:
            stats[c.name]["note"] = c.note
        if c.name in stats and args.memory:
            stats[c.name]["memory"] = measure_memory(device, cfg, dtype, c.name, args.threads, args.tf32_child)
    del X, Y, params
    gc.collect()
    return {"config": cfg.name, "dtype": dtype, "sizes": list(cfg.sizes), "batch": cfg.batch,
            "steps": cfg.steps, "n_samples": cfg.n_samples, "contenders": stats, "skipped": skipped}


def _configs(device, args, log):
    """The configs of this section with their epoch lengths."""
    for cname in args.configs or (["A", "B", "C", "D"] if device == "cpu" else ["B", "C", "D", "E"]):
        cfg = C.CONFIGS[cname]
        if cfg.gpu_only and device == "cpu":
            log(f"config {cname} is GPU only: skipped on the CPU")
            continue
        full = cfg.gpu_steps if device == "gpu" and cfg.gpu_steps else cfg.steps
        yield C.with_steps(cfg, args.steps or (cfg.quick_steps if args.quick else full))


def _footnotes(device, args, blocks, reference, log):
    """What the table's columns mean, and the targets' check."""
    for note in sorted({r["note"] for b in blocks for r in b["contenders"].values() if r.get("note")}):
        log(f"  * {note}")
    log(f"  matmul bound = the step's matrix products alone, with {'CuPy/cuBLAS' if device == 'gpu' else 'NumPy/BLAS'}"
        " (a contender using another GEMM library can exceed it)")
    if args.memory:
        log("  peak MiB = growth of peak RSS during setup + one epoch, in a fresh process (host)"
            + (" / GPU memory: peak bytes in use (CuPy: tracked at every pool allocation; torch:"
               " max_memory_allocated; JAX: peak_bytes_in_use), data included; the JSON also holds"
               " what each allocator held (CuPy pool total, torch max_memory_reserved)"
               if device == "gpu" else ""))
    targets = check_targets(device, blocks, reference)
    if targets:
        log(f"\nTargets ({device.upper()}, float32, {reference} / X, or the pair named):")
        for t in targets:
            ratio = "n/a" if t["ratio"] is None else f"{t['ratio']:.3f}"
            bound = f">= {t['minimum']:<5}" if "minimum" in t else f"<= {t['maximum']:<5}"
            log(f"  vs {t['versus']:<52} {t['config']}  {bound} got {ratio:>6}  {t['status']}")
    return targets


def run_section(device, args, log=print):
    """Time every config and dtype on one device; returns the section's JSON dict."""
    if device == "gpu":
        why = gpu_available()
        if why:
            log(f"GPU section skipped: no GPU ({why})")
            return {"device": "gpu", "skipped": why}
        if has("torch"):
            import torch
            torch.set_float32_matmul_precision("high" if args.tf32_child else "highest")
    apply_threads(args.threads)
    reference, pbp_specs = REFERENCE[device], _pbp_specs(device, args)
    dtypes = args.dtypes or (["float32", "float64"] if device == "cpu" else ["float32"])
    name = gpu_name() if device == "gpu" else None
    log(f"\n=== {device.upper()}{': ' + name if name else ''}  threads={args.threads}  "
        f"rounds={args.rounds}  reference={reference} ===")
    blocks = []
    for cfg in _configs(device, args, log):
        for dtype in dtypes:
            blocks.append(_time_config(device, args, cfg, dtype, reference, pbp_specs, log))
            if len(blocks) == 1:
                log(HEADER)
            for row in table_rows(blocks[-1], reference):
                log(row)
    targets = _footnotes(device, args, blocks, reference, log)
    section = {"device": device, "reference": reference, "gpu": name, "threads": args.threads,
               "rounds": args.rounds, "blocks": blocks, "targets": targets}
    if device == "gpu" and args.tf32 and not args.tf32_child:
        section["tf32"] = run_tf32(args, blocks, log)
    return section


def run_tf32(args, blocks, log):
    """Re-run the float32 GPU contenders in a child with TF32 matrix products allowed
    (CuPy reads CUPY_TF32 at its first float32 matmul, so it needs a fresh process)."""
    import tempfile
    cfgs = sorted({b["config"] for b in blocks if b["dtype"] == "float32"})
    if not cfgs:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tf32.json")
        cmd = [sys.executable, "-m", "benchmarks", "--device", "gpu", "--dtypes", "float32",
               "--configs", ",".join(cfgs), "--rounds", str(args.rounds), "--threads",
               str(args.threads), "--no-memory", "--tf32-child", "--json", path]
        if args.steps:
            cmd += ["--steps", str(args.steps)]
        if args.quick:
            cmd += ["--quick"]
        if args.contenders:
            cmd += ["--contenders", ",".join(args.contenders)]
        if args.pbp_backends:
            cmd += ["--pbp-backends", ",".join(args.pbp_backends)]
        log("\n--- TF32 pass (child process with CUPY_TF32=1, torch/jax TF32 allowed) ---")
        env = dict(os.environ, CUPY_TF32="1")
        p = subprocess.run(cmd, env=env, text=True, capture_output=True, check=False,
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        if p.returncode or not os.path.exists(path):
            log(f"TF32 pass failed: {p.stderr.strip()[-2000:]}")
            return {"error": p.stderr.strip()[-2000:]}
        with open(path) as f:
            child = json.load(f)
    tf_blocks = child["sections"][0].get("blocks", [])
    out = []
    log(f"{'cfg':<3} {'contender':<22} {'fp32 samples/s':>15} {'tf32 samples/s':>15} "
        f"{'speed-up':>9} {'ref/X tf32':>11}")
    for tb in tf_blocks:
        base = next((b for b in blocks if b["config"] == tb["config"] and b["dtype"] == "float32"), None)
        for name, r in tb["contenders"].items():
            b = (base or {}).get("contenders", {}).get(name)
            speedup = r["median"] / b["median"] if b else None
            out.append({"config": tb["config"], "contender": name, "tf32_median": r["median"],
                        "fp32_median": b["median"] if b else None, "speedup": speedup,
                        "ratio_tf32": r.get("ratio"), "seconds": r["seconds"]})
            fp32 = fmt_rate(b["median"]) if b else "n/a"
            up = f"{speedup:.2f}x" if speedup else "n/a"
            ratio = f"{r['ratio']:.2f}" if "ratio" in r else "n/a"
            log(f"{tb['config']:<3} {name:<22} {fp32:>15} {fmt_rate(r['median']):>15} {up:>9} {ratio:>11}")
    return {"results": out, "child_targets": child["sections"][0].get("targets")}


def main(args):
    started = time.time()
    devices = ["cpu", "gpu"] if args.device == "all" else [args.device]
    sections = [run_section(d, args) for d in devices]
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "argv": sys.argv[1:],
        "method": {"lr": C.LR, "optimizer": "sgd (no momentum)", "shuffle": False,
                   "warmup_epochs": 1, "rounds": args.rounds, "interleaved": "rotated each round",
                   "ratio": "median over rounds of (reference samples/s / X samples/s)",
                   "epochs_per_round": "1, or as many as make the fastest contender's round last "
                                       f"{MIN_ROUND_S} s; portable_bp trains a round's epochs as one "
                                       "fit(epochs=k), its +each variant as k fits of one epoch, the "
                                       "others call their epoch k times"},
        "machine": machine(args.threads),
        "versions": versions(),
        "blas": blas_info(),
        "sections": sections,
        "wall_seconds": time.time() - started,
    }
    print(f"\nthreads: {args.threads}; CPU: {report['machine']['cpu']} "
          f"({report['machine']['logical_cpus']} logical, affinity "
          f"{report['machine'].get('affinity')})")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()))
    for d in report["blas"]:
        print(f"  {d['internal_api']} {d['version']} ({d['user_api']}): {d['num_threads']} threads, "
              f"{os.path.basename(d['filepath'] or '')}")
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(report, f, indent=1)
    print(f"wrote {args.json} ({report['wall_seconds']:.0f} s)")
    return report
