"""Interleaved timing, per-round ratios, and the memory pass.

Method (why each step is there):
  * one warm-up epoch per contender (JIT compilation, BLAS/cuBLAS initialisation, allocator
    growth) is run and not recorded;
  * then R rounds; in each round every contender trains one epoch, in an order rotated by
    one each round, so slow drifts of the machine (clock, heat, neighbours) hit all alike;
  * where the fastest contender's epoch is shorter than ``MIN_ROUND_S``, a round trains
    the same number of epochs for every contender, enough that the fastest one's round lasts
    that long: a round of one sub-millisecond epoch (config A on JAX) measures the cold
    caches the round's ``gc.collect()`` leaves behind (every contender's first call after it
    ran 2-3x slower than the next) and the host's bursts more than the epoch. A contender
    whose ``run_epoch`` has an ``epochs(k)`` method trains them as one run of k epochs
    (portable_bp: one ``fit(epochs=k)``, as a user trains for many epochs); the others call
    their epoch k times (the hand-written loops, and portable_bp's ``+each`` variant: a
    loop of ``fit(epochs=1)``);
  * GPU contenders synchronise before returning, so the wall clock covers the device work;
  * the ratio "reference / X" is taken per round (both measured seconds apart) and then
    the median over rounds is reported, which cancels most of the drift;
  * peak memory comes from a separate pass, one fresh child process per contender, since
    a process's peak RSS cannot be attributed once several contenders have run in it.
"""

from __future__ import annotations

import gc
import json
import math
import os
import statistics
import subprocess
import sys
import time

from .contenders import _gpu_cache

# the shortest round timed: shorter epochs are repeated within a round (see the docstring)
MIN_ROUND_S = 0.05


def epochs_per_round(runs) -> int:
    """How many epochs each round times (the same for every contender): enough that the
    fastest contender's round lasts ``MIN_ROUND_S``, judged from one more epoch of each."""
    fastest = math.inf
    for run in runs.values():
        t0 = time.perf_counter()
        run()
        fastest = min(fastest, time.perf_counter() - t0)
    return max(1, min(1000, math.ceil(MIN_ROUND_S / max(fastest, 1e-9))))


def time_block(contenders, rounds, log):
    """Set up, warm up, then time ``rounds`` interleaved rounds per contender (each one
    epoch, or :func:`epochs_per_round` of them).

    Returns ({name: [seconds per epoch, one value per round]}, {name: failure reason})."""
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
    repeat = epochs_per_round(runs) if runs else 1
    if repeat > 1:
        log(f"    {repeat} epochs per round (one epoch is under {MIN_ROUND_S * 1e3:.0f} ms): portable_bp trains "
            f"them as one fit(epochs={repeat}), +each as {repeat} fits, the others as {repeat} epoch calls")
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)] if names else []
        for n in order:
            if n in failed:
                continue
            gc.collect()
            try:
                many = getattr(runs[n], "epochs", None) if repeat > 1 else None
                t0 = time.perf_counter()
                if many is not None:
                    many(repeat)  # one training run of that many epochs (portable_bp's fit)
                else:
                    for _ in range(repeat):
                        runs[n]()
                times[n].append((time.perf_counter() - t0) / repeat)
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
