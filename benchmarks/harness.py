"""Contender list, interleaved timing, statistics, memory pass, table, targets and JSON.

Method (why each step is there):
  * every contender is set up once per (config, dtype) with its data already where it
    trains, so host-to-device transfer is not timed;
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
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from . import configs as C
from .handwritten_numpy import HandwrittenMLP

# portable_bp backends timed by default per section (--pbp-backends picks others, e.g. jax:cpu)
PBP_SPECS = {"cpu": ("numpy", "torch"), "gpu": ("cupy", "torch:cuda")}
REFERENCE = {"cpu": "portable_bp[numpy]", "gpu": "portable_bp[cupy]"}


@dataclass
class Contender:
    name: str
    setup: Callable[[], Callable[[], None]]  # returns run_epoch()
    libs: tuple = ()         # imported (GPU context started) before a memory baseline
    gpu_lib: str | None = None  # whose allocator to read for GPU memory: cupy, torch, jax
    note: str = ""


# ----------------------------------------------------------------------------- probing
def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


_gpu_cache: dict[str, str] = {}


def cupy_gpu() -> str:
    """'' when CuPy can compute on a GPU, else why not."""
    if "cupy" not in _gpu_cache:
        reason = ""
        if not has("cupy"):
            reason = "cupy not installed"
        else:
            try:
                import cupy as cp
                float((cp.ones((2, 2), dtype=cp.float32) @ cp.ones((2, 2), dtype=cp.float32)).sum())
            except Exception as exc:  # noqa: BLE001
                reason = f"cupy cannot use a GPU: {type(exc).__name__}: {exc}"
        _gpu_cache["cupy"] = reason
    return _gpu_cache["cupy"]


def torch_cuda() -> str:
    if "torch" not in _gpu_cache:
        reason = "torch not installed" if not has("torch") else ""
        if not reason:
            import torch
            if not torch.cuda.is_available():
                reason = f"torch {torch.__version__} sees no CUDA device"
        _gpu_cache["torch"] = reason
    return _gpu_cache["torch"]


def jax_gpu() -> str:
    if "jax" not in _gpu_cache:
        reason = "jax not installed" if not has("jax") else ""
        if not reason:
            import jax
            try:
                jax.devices("gpu")
            except RuntimeError as exc:
                reason = f"jax has no GPU: {exc}"
        _gpu_cache["jax"] = reason
    return _gpu_cache["jax"]


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
            if not hasattr(pbp, "Network") or not hasattr(pbp, "backends"):
                raise ImportError("portable_bp has no Network/backends yet")
            if hasattr(pbp.backends, "probe"):
                ok, reason = pbp.backends.probe(spec)
            else:
                pbp.backends.get(spec)
                ok, reason = True, ""
            _pbp_cache[spec] = "" if ok else (reason or "unavailable")
        except Exception as exc:  # noqa: BLE001 - anything means "cannot run here"
            _pbp_cache[spec] = f"{type(exc).__name__}: {exc}"
    return _pbp_cache[spec]


# -------------------------------------------------------------------------- contenders
def setup_pbp(spec, cfg, dtype, X, Y, params=None, tf32=False):
    """The whole public training call, one epoch per fit(): what a user would time.

    ``spec`` is a backend spec, or one with ``+ref`` appended (``numpy+ref``): the same
    network with ``fused_kernels = False``, the Array API reference path, to measure what
    the backend's kernels and one-call SGD step gain."""
    import portable_bp as pbp
    spec, _, variant = spec.partition("+")
    if variant not in ("", "ref"):
        raise ValueError(f"unknown portable_bp variant {'+' + variant!r}: the only one is +ref")
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
    if params is not None and hasattr(net, "set_params"):
        net.set_params(params)  # the same starting weights as the other contenders
    if variant == "ref":
        net.fused_kernels = False
    kw = {"epochs": 1, "batch_size": cfg.batch, "optimizer": "sgd", "lr": C.LR, "shuffle": False,
          "progress": False}

    def run_epoch():
        net.fit(Xd, Yd, **kw)
        be.synchronize()

    return run_epoch


def setup_handwritten(xp_name, cfg, dtype, X, Y, params):
    if xp_name == "cupy":
        import cupy as xp
        sync = xp.cuda.Device().synchronize
    else:
        xp, sync = np, (lambda: None)
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
        add("torch eager", installed("torch"),
            lambda: peers.setup_torch(cfg, dtype, X, Y, params, C.LR, "cpu"), ("torch",))
        add("scikit-learn", installed("sklearn"),
            lambda: peers.setup_sklearn(cfg, dtype, X, Y, params, C.LR), ("sklearn",),
            note=peers.SKLEARN_A_NOTE if cfg.loss == "mse" else "")
        add("jax jit", installed("jax"),
            lambda: peers.setup_jax(cfg, dtype, X, Y, params, C.LR, "cpu"), ("jax",))
        add("matmul bound", lambda: "", lambda: setup_bound("numpy", cfg, dtype))
    else:
        add("cupy (hand-written)", cupy_gpu,
            lambda: setup_handwritten("cupy", cfg, dtype, X, Y, params), ("cupy",), "cupy")
        add("torch eager cuda", torch_cuda,
            lambda: peers.setup_torch(cfg, dtype, X, Y, params, C.LR, "cuda"), ("torch",), "torch")
        add("jax jit gpu", jax_gpu,
            lambda: peers.setup_jax(cfg, dtype, X, Y, params, C.LR, "gpu", tf32), ("jax",), "jax")
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


# ------------------------------------------------------------------------------ timing
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


# ------------------------------------------------------------------------------ memory
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


# ------------------------------------------------------------------------------- output
def fmt_rate(v):
    return f"{v:,.0f}" if v >= 100 else f"{v:,.1f}"


def fmt_mem(m):
    if not m:
        return ""
    if "error" in m:
        return "err"
    s = f"{m['rss_growth_mib']:.0f}"
    s = f"{m['rss_growth_mib']:.1f}" if m["rss_growth_mib"] < 10 else s
    if m.get("gpu_mib") is not None:
        s += f" / {m['gpu_mib']:.0f}"
    return s


HEADER = (f"{'cfg':<3} {'dtype':<7} {'contender':<22} {'median samples/s':>17} "
          f"{'min - max':>23} {'ref/X':>6}  {'peak MiB'}")


def table_rows(block, reference):
    rows = []
    for name, r in block["contenders"].items():
        ratio = "ref" if name == reference else (f"{r['ratio']:.2f}" if "ratio" in r else "n/a")
        mark = " *" if r.get("note") else ""
        rows.append(f"{block['config']:<3} {block['dtype']:<7} {name + mark:<22} "
                    f"{fmt_rate(r['median']):>17} "
                    f"{fmt_rate(r['min']) + ' - ' + fmt_rate(r['max']):>23} {ratio:>6}  "
                    f"{fmt_mem(r.get('memory'))}")
    for name, why in block["skipped"].items():
        rows.append(f"{block['config']:<3} {block['dtype']:<7} {name:<22} skipped: {why}")
    return rows


# Targets from the issue: (section, versus, {config: minimum ratio}), float32, reference
# backend numpy (CPU) or cupy (GPU). ratio = portable_bp samples/s / X samples/s.
TARGETS = [
    ("cpu", "numpy (hand-written)", {"A": 0.5, "B": 0.75, "C": 0.9, "D": 0.95}),
    ("cpu", "torch eager", {"A": 5, "B": 2, "C": 1.15, "D": 0.95}),
    ("cpu", "scikit-learn", {"A": 1.5, "B": 1.5, "C": 1.3, "D": 1.1}),
    ("cpu", "matmul bound", {"C": 0.75, "D": 0.9}),
    ("gpu", "torch eager cuda", {"B": 1.0, "C": 1.0, "D": 1.0, "E": 1.0}),
    ("gpu", "matmul bound", {"E": 0.85}),
]


# peak memory: portable_bp's / the peer's, at most this (CPU: RSS growth; GPU: peak in use)
MEMORY_TARGETS = [
    ("cpu", "torch eager", "rss_growth_mib", {"A": 1.0, "B": 1.0, "C": 1.0, "D": 1.0}),
    ("gpu", "torch eager cuda", "gpu_mib", {"B": 1.1, "C": 1.1, "D": 1.1, "E": 1.1}),
]


def check_targets(device, blocks, reference=None):
    out = []
    for dev, versus, key, wanted in MEMORY_TARGETS:
        if dev != device or reference is None:
            continue
        for cfg, maximum in wanted.items():
            block = next((b for b in blocks if b["config"] == cfg and b["dtype"] == "float32"), None)
            if block is None:
                continue
            mine = (block["contenders"].get(reference, {}).get("memory") or {}).get(key)
            theirs = (block["contenders"].get(versus, {}).get("memory") or {}).get(key)
            if mine is None or theirs is None:
                continue  # memory pass off, or an error (shown in the table)
            ratio = mine / theirs if theirs > 0 else None
            status = "n/a" if ratio is None else ("PASS" if ratio <= maximum else "MISS")
            out.append({"versus": f"{versus} (peak memory)", "config": cfg, "maximum": maximum,
                        "ratio": ratio, "status": status})
    for dev, versus, wanted in TARGETS:
        if dev != device:
            continue
        for cfg, minimum in wanted.items():
            block = next((b for b in blocks if b["config"] == cfg and b["dtype"] == "float32"), None)
            if block is None:
                continue
            row = (block or {}).get("contenders", {}).get(versus, {})
            ratio = row.get("ratio")
            status = "n/a" if ratio is None else ("PASS" if ratio >= minimum else "MISS")
            out.append({"versus": versus, "config": cfg, "minimum": minimum,
                        "ratio": ratio, "status": status})
    return out


# ------------------------------------------------------------------------ environment
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


# -------------------------------------------------------------------------------- run
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
    reference = REFERENCE[device]
    pbp_specs = [s for s in (args.pbp_backends or []) if ("cupy" in s or "cuda" in s or "gpu" in s)
                 == (device == "gpu")] or None
    if pbp_specs:  # plain "jax" would follow JAX's default device, the GPU when there is one
        pbp_specs = ["jax:cpu" if s == "jax" else s for s in pbp_specs]
    cfg_names = args.configs or (["A", "B", "C", "D"] if device == "cpu" else ["B", "C", "D", "E"])
    dtypes = args.dtypes or (["float32", "float64"] if device == "cpu" else ["float32"])
    name = gpu_name() if device == "gpu" else None
    log(f"\n=== {device.upper()}{': ' + name if name else ''}  threads={args.threads}  "
        f"rounds={args.rounds}  reference={reference} ===")
    blocks, printed_header = [], False
    for cname in cfg_names:
        cfg = C.CONFIGS[cname]
        if cfg.gpu_only and device == "cpu":
            log(f"config {cname} is GPU only: skipped on the CPU")
            continue
        full = cfg.gpu_steps if device == "gpu" and cfg.gpu_steps else cfg.steps
        steps = args.steps or (cfg.quick_steps if args.quick else full)
        cfg = C.with_steps(cfg, steps)
        for dtype in dtypes:
            X, Y = C.make_data(cfg, dtype)
            params = C.init_params(cfg, dtype)
            contenders, skipped = build_contenders(device, cfg, dtype, X, Y, params, args.tf32_child,
                                                   name_filter(args.contenders, [reference]), pbp_specs)
            log(f"-- {cfg.describe()}, {dtype}, {cfg.n_samples} samples/epoch: "
                f"{len(contenders)} contenders")
            times, failed = time_block(contenders, args.rounds, log)
            skipped.update({n: f"failed: {why}" for n, why in failed.items()})
            stats = summarise(times, cfg.n_samples, reference)
            for c in contenders:
                if c.name in stats and c.note:
                    stats[c.name]["note"] = c.note
            block = {"config": cname, "dtype": dtype, "sizes": list(cfg.sizes), "batch": cfg.batch,
                     "steps": cfg.steps, "n_samples": cfg.n_samples, "contenders": stats,
                     "skipped": skipped}
            if args.memory:
                for c in contenders:
                    if c.name in stats:
                        stats[c.name]["memory"] = measure_memory(device, cfg, dtype, c.name,
                                                                 args.threads, args.tf32_child)
            if not printed_header:
                log(HEADER)
                printed_header = True
            for row in table_rows(block, reference):
                log(row)
            blocks.append(block)
            del X, Y, params
            gc.collect()
    notes = sorted({r["note"] for b in blocks for r in b["contenders"].values() if r.get("note")})
    for note in notes:
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
        log(f"\nTargets ({device.upper()}, float32, {reference} / X):")
        for t in targets:
            ratio = "n/a" if t["ratio"] is None else f"{t['ratio']:.3f}"
            bound = f">= {t['minimum']:<5}" if "minimum" in t else f"<= {t['maximum']:<5}"
            log(f"  vs {t['versus']:<36} {t['config']}  {bound} got {ratio:>6}  {t['status']}")
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
    log(f"{'cfg':<3} {'contender':<22} {'fp32 samples/s':>15} {'tf32 samples/s':>15} {'speed-up':>9} {'ref/X tf32':>11}")
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
                   "ratio": "median over rounds of (reference samples/s / X samples/s)"},
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
