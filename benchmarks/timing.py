"""Interleaved timing, per-round ratios, and the memory pass.

Method (why each step is there):
  * one warm-up epoch per contender (JIT compilation, BLAS/cuBLAS initialisation, allocator
    growth) is run and not recorded;
  * then R rounds; in each round every contender trains one epoch, in an order rotated by
    one each round, so slow drifts of the machine (clock, heat, neighbours) hit all alike;
  * GPU contenders synchronise before returning, so the wall clock covers the device work;
  * the ratio "reference / X" is taken per round (both measured seconds apart) and then
    the median over rounds is reported, which cancels most of the drift;
  * peak memory comes from a separate pass, one fresh child process per contender, since
    a process's peak RSS cannot be attributed once several contenders have run in it.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import subprocess
import sys
import time

from .contenders import _gpu_cache


def time_block(contenders, rounds, log):
    """Set up, warm up, then time ``rounds`` interleaved epochs per contender.

    Returns ({name: [seconds per round]}, {name: failure reason})."""
    runs, failed, prep = {}, {}, {}
    for c in contenders:
        try:
            t0 = time.perf_counter()
            runs[c.name] = c.setup()
            runs[c.name]()  # warm-up epoch, not recorded
            prep[c.name] = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - a broken contender must not stop the others
            failed[c.name] = f"{type(exc).__name__}: {exc}"
            runs.pop(c.name, None)
            log(f"    {c.name}: failed in setup/warm-up: {failed[c.name]}")
    names = list(runs)
    times = {n: [] for n in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)] if names else []
        for n in order:
            if n in failed:
                continue
            gc.collect()
            try:
                t0 = time.perf_counter()
                runs[n]()
                times[n].append(time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001
                failed[n] = f"{type(exc).__name__}: {exc}"
                log(f"    {n}: failed while timed: {failed[n]}")
    runs.clear()
    release_gpu_memory()
    if os.environ.get("BENCH_VERBOSE"):
        log("    setup + warm-up s: " + ", ".join(f"{n} {t:.2f}" for n, t in prep.items()))
    return {n: t for n, t in times.items() if n not in failed}, failed


def release_gpu_memory():
    """Give cached GPU blocks back between blocks, so the next contenders start alike."""
    gc.collect()
    if "cupy" in sys.modules and not _gpu_cache.get("cupy", "x"):
        sys.modules["cupy"].get_default_memory_pool().free_all_blocks()
    if "torch" in sys.modules and not _gpu_cache.get("torch", "x"):
        sys.modules["torch"].cuda.empty_cache()


def summarise(times, n_samples, reference):
    """Per contender: samples/s median/min/max and the per-round ratio reference/X."""
    out = {}
    ref = times.get(reference)
    for name, ts in times.items():
        sps = [n_samples / t for t in ts]
        row = {"seconds": ts, "samples_per_s": sps,
               "median": statistics.median(sps), "min": min(sps), "max": max(sps)}
        if ref:
            ratios = [t / rt for t, rt in zip(ts, ref)]  # = ref samples/s / X samples/s
            row["ratio_per_round"] = ratios
            row["ratio"] = statistics.median(ratios)
        out[name] = row
    return out


def measure_memory(device, cfg, dtype, name, threads, tf32=False, timeout=600):
    """Run one epoch of one contender in a fresh child process and read its peaks."""
    cmd = [sys.executable, "-m", "benchmarks.memory_child", device, cfg.name, str(cfg.steps),
           dtype, name, str(threads), "1" if tf32 else "0"]
    if name.startswith("portable_bp["):
        spec = name[len("portable_bp["):-1]
        cmd.append(f"{spec}:cpu" if spec == "jax" else spec)
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False,
                           cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        line = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
        if p.returncode or not line:
            return {"error": (p.stderr.strip().splitlines() or ["no output"])[-1]}
        return json.loads(line[-1])
    except subprocess.TimeoutExpired:
        return {"error": "timed out"}
