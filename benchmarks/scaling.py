"""``python -m benchmarks.scaling``: data-parallel throughput on N CPU processes.

For N in --ranks (default 1, 2, 4, 8, 16) and each network (D from configs.py, 784-1024-
1024-10 with 1.86M parameters and batch 512; M2, a deeper 2.0M-parameter net with batch 64,
where communication weighs more), it measures, in fresh processes:

* ``mpiexec -n N``: N ranks, one BLAS thread each, each pinned to its own CPU, training
  with ``portable_bp.distributed.MPI`` (the executor ``fit`` runs, timed epoch by epoch);
* strong scaling: the global batch fixed (the config's batch), so each rank gets 1/N of it;
  weak scaling: the batch per rank fixed (the global batch is N times the config's);
* against one process with N BLAS threads on N pinned CPUs and the same global batch;
* samples/s (median over rounds), and the communication share: the time ranks spend in
  the sum (waiting for the slowest rank included) over the epoch's time, mean over ranks;
* the allreduce alone, for buffers of 1 KiB to 64 MiB: seconds per call, and a fit of the
  ring model t = alpha + 2 (N-1)/N * bytes / beta (docs/scaling.md uses it).

Plain SGD, unshuffled, float32 by default: the arithmetic of ``python -m benchmarks``. N may
exceed the cores (MPICH oversubscribes; the numbers then say little): run it on a machine
with at least max(--ranks) cores. Results: a table, the weak-scaling target (efficiency
>= 0.8 at 8 ranks on D), and a JSON file in benchmarks/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import replace

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "BLIS_NUM_THREADS")
HERE = os.path.dirname(os.path.abspath(__file__))
TARGET = ("D", "weak", 8, 0.8)  # weak-scaling efficiency >= 0.8 at 8 ranks on D
SIZES = [2 ** k for k in range(8, 25, 2)]  # float32 elements: 1 KiB .. 64 MiB


def configs():
    from . import configs as C

    m2 = C.Config("M2", (256, 768, 768, 768, 768, 10), "relu", "softmax", "cross_entropy", 64, 32, 4)
    return {"D": C.CONFIGS["D"], "M2": m2}


# -- the worker: one training measurement, in its own process --------------------------------
def _pin(cpus: list[int]) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


def _limit_threads(n: int) -> None:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return  # the environment variables set by the driver already hold
    threadpool_limits(limits=n)


def _setup(args, comm):
    """(network, data on the device, optimizer) of the measurement."""
    import portable_bp as pbp

    from . import configs as C

    cfg = replace(configs()[args.config], batch=args.global_batch, steps=args.steps)
    X, Y = C.make_data(cfg, args.dtype)
    net = pbp.Network(list(cfg.sizes), activation=cfg.activation, output_activation=cfg.output_activation,
                      loss=cfg.loss, dtype=args.dtype, seed=C.SEED)
    net.set_params(C.init_params(cfg, args.dtype))
    data = (net.features(X), net.targets(Y, X.shape[0]), None)
    return net, data, pbp.optim.get_optimizer("sgd", C.LR)


def _timed_allreduce(comm, seconds: list):
    """``comm.allreduce`` with its time added to ``seconds[0]``."""
    inner = comm.allreduce

    def allreduce(buffer, backend=None):
        t0 = time.perf_counter()
        out = inner(buffer, backend)
        seconds[0] += time.perf_counter() - t0
        return out

    comm.allreduce = allreduce


def _per_rank_mean(comm, value: float) -> float:
    import numpy as np

    buf = comm.allreduce(np.array([value]))
    return float(buf[0]) / comm.size


def worker_train(args, comm) -> dict:
    """Warm-up epoch, then ``rounds`` timed epochs: samples/s and communication share."""
    from portable_bp.train.executors import executor_for

    from . import configs as C

    net, data, opt = _setup(args, comm)
    executor = executor_for(net, opt, comm=comm)
    in_sum = [0.0]
    _timed_allreduce(comm, in_sum)
    params, state, count = net.params, opt.init(net.params), 0
    walls, shares = [], []
    for r in range(args.rounds + 1):
        comm.barrier()
        in_sum[0], t0 = 0.0, time.perf_counter()
        params, state, count, total = executor.epoch(params, state, count, data, None,
                                                     args.global_batch, C.LR)
        float(total)
        wall = time.perf_counter() - t0
        if r:  # round 0 warms up (allocations, BLAS start-up)
            walls.append(wall)
            shares.append(_per_rank_mean(comm, in_sum[0] / wall))
    n = data[0].shape[0]
    return {"samples_per_s": n / statistics.median(walls), "comm_share": statistics.median(shares),
            "rounds_s": walls, "executor": executor.name}


def worker_allreduce(comm) -> list[dict]:
    """Seconds per in-place sum of a float32 buffer: the median of as many calls as fill
    about 0.2 s (3 to 200; rank 0 decides, so that every rank makes the same calls)."""
    import numpy as np

    def timed(buf):
        comm.barrier()
        t0 = time.perf_counter()
        comm.allreduce(buf)
        return time.perf_counter() - t0

    out = []
    for n in SIZES:
        buf = np.ones(n, dtype=np.float32)
        first = [timed(buf) for _ in range(3)]
        reps = comm.broadcast_object(int(min(200, max(3, 0.2 / max(statistics.median(first), 1e-9)))))
        times = [timed(buf) for _ in range(reps)]
        out.append({"bytes": 4 * n, "seconds": statistics.median(times)})
    return out


def worker(args) -> int:
    from portable_bp.distributed import MPI, Local

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if args.worker == "threads":
        comm = Local()
        if cpus and not args.no_pin:
            _pin(cpus[:args.threads])
        _limit_threads(args.threads)
    else:
        comm = MPI()
        if cpus and not args.no_pin:
            _pin([cpus[comm.local_rank % len(cpus)]])
        _limit_threads(1)
    result = worker_allreduce(comm) if args.worker == "allreduce" else worker_train(args, comm)
    if comm.rank == 0:
        print("RESULT " + json.dumps(result), flush=True)
    return 0


# -- the driver ------------------------------------------------------------------------------
def _mpiexec() -> str:
    near = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return near if os.path.exists(near) else "mpiexec"


def _run(cmd, threads: int, timeout: int):
    env = {**os.environ, **{v: str(threads) for v in THREAD_VARS}}
    env["PYTHONPATH"] = os.pathsep.join([os.path.dirname(HERE), env.get("PYTHONPATH", "")])
    proc = subprocess.run(cmd, cwd=os.path.dirname(HERE), env=env, capture_output=True, text=True,
                          timeout=timeout)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def measure(args, role: str, n: int, config: str = "D", global_batch: int = 0):
    me = [sys.executable, "-m", "benchmarks.scaling", "--worker", role, "--config", config,
          "--global-batch", str(global_batch), "--dtype", args.dtype, "--rounds", str(args.rounds),
          "--steps", str(args.steps.get(config, 8)), "--threads", str(n)]
    me += ["--no-pin"] if args.no_pin else []
    if role == "threads":
        return _run(me, n, args.timeout)
    return _run([_mpiexec(), "-n", str(n), *me], 1, args.timeout)


def ring_fit(points: list[dict], ranks: int) -> dict:
    """Least squares of t = alpha + 2 (p-1)/p * bytes / beta over the measured sizes."""
    import numpy as np

    x = np.array([2 * (ranks - 1) / ranks * p["bytes"] for p in points])
    t = np.array([p["seconds"] for p in points])
    slope, alpha = np.polyfit(x, t, 1)
    return {"alpha_s": float(max(alpha, 0.0)), "beta_bytes_per_s": float(1.0 / slope) if slope > 0 else None}


def run_all(args) -> dict:
    machine = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]}
    out = {"machine": machine,
           "dtype": args.dtype, "scaling": [], "allreduce": {}}
    cfgs = configs()
    for name in args.configs:
        base = cfgs[name].batch
        for mode in args.modes:
            for n in args.ranks:
                batch = base if mode == "strong" else base * n
                row = {"config": name, "mode": mode, "ranks": n, "global_batch": batch}
                row["dp"] = measure(args, "dp", n, name, batch)
                row["threads"] = measure(args, "threads", n, name, batch) if not args.no_threads else None
                out["scaling"].append(row)
                print(_row_text(row, out["scaling"]), flush=True)
    for n in (n for n in args.ranks if n > 1):
        points = measure(args, "allreduce", n)
        out["allreduce"][str(n)] = {"points": points, "fit": ring_fit(points, n)}
        fit = out["allreduce"][str(n)]["fit"]
        beta = fit["beta_bytes_per_s"]
        print(f"allreduce, {n} ranks: alpha {fit['alpha_s'] * 1e6:.1f} us, beta "
              f"{'-' if beta is None else f'{beta / 1e9:.2f} GB/s'}; "
              + ", ".join(f"{p['bytes'] // 1024} KiB {p['seconds'] * 1e3:.3f} ms" for p in points),
              flush=True)
    return out


# -- the model of docs/scaling.md ------------------------------------------------------------
# One H200 (benchmarks/README.md, float32): seconds per step at the measured samples/s; the
# interconnects are assumptions (typical nccl-tests bus bandwidths), not measured here.
H200_STEPS = {"E fp32": (37_801_994, 4096 / 227e3), "E tf32": (37_801_994, 4096 / 1.26e6),
              "D fp32": (1_863_690, 512 / 715e3)}
LINKS = {"nvlink": (5e-6, 360e9), "infiniband": (10e-6, 45e9)}  # (alpha s per hop, beta B/s)


def allreduce_seconds(p: int, nbytes: float, alpha: float, beta: float, tree: bool = False) -> float:
    """Ring: 2 (p-1) latency hops and 2 (p-1)/p of the buffer through the slowest link;
    ``tree``: the same bandwidth term with 2 log2(p) hops (NCCL's trees at scale)."""
    import math

    hops = 2 * math.log2(p) if tree else 2 * (p - 1)
    return hops * alpha + 2 * (p - 1) / p * nbytes / beta


def model(gpus=(8, 16, 32, 64, 128, 256, 512), per_node: int = 8) -> list[str]:
    """Weak scaling (each GPU keeps its batch) of the measured H200 steps: efficiency
    t / (t + allreduce), without overlap (as implemented: one sum after the backward pass)
    and with the sum overlapped with the backward pass (2/3 of the step's compute)."""
    lines = []
    for name, (params, step) in H200_STEPS.items():
        for p in gpus:
            alpha, beta = LINKS["nvlink" if p <= per_node else "infiniband"]
            ring = allreduce_seconds(p, 4 * params, alpha, beta)
            tree = allreduce_seconds(p, 4 * params, alpha, beta, tree=True)
            hidden = max(0.0, tree - 2 / 3 * step)
            lines.append(f"| {name} | {p} | {step * 1e3:.2f} | {ring * 1e3:.2f} | {tree * 1e3:.2f} | "
                         f"{step / (step + ring):.2f} | {step / (step + tree):.2f} | "
                         f"{step / (step + hidden):.2f} |")
    return lines


def _row_text(row, rows) -> str:
    one = next((r for r in rows if r["config"] == row["config"] and r["mode"] == row["mode"]
                and r["ranks"] == 1), None)
    dp = row["dp"]["samples_per_s"]
    eff = ""
    if one is not None:
        ideal = one["dp"]["samples_per_s"] * row["ranks"]
        eff = f" efficiency {dp / ideal:.2f}"
    threads = row["threads"]["samples_per_s"] if row["threads"] else None
    versus = (f" | 1 process x {row['ranks']} threads {threads:,.0f} (ranks/threads {dp / threads:.2f})"
              if threads else "")
    return (f"{row['config']} {row['mode']:6s} N={row['ranks']:2d} batch {row['global_batch']:5d}: "
            f"{dp:,.0f} samples/s{eff}, comm share {row['dp']['comm_share']:.2f}{versus}")


def targets(out) -> list[str]:
    name, mode, n, minimum = TARGET
    rows = {(r["config"], r["mode"], r["ranks"]): r["dp"]["samples_per_s"] for r in out["scaling"]}
    if (name, mode, n) not in rows or (name, mode, 1) not in rows:
        return [f"target weak efficiency >= {minimum} at {n} ranks on {name}: not measured "
                f"(--ranks lacks {n})"]
    eff = rows[(name, mode, n)] / (n * rows[(name, mode, 1)])
    return [f"target weak efficiency >= {minimum} at {n} ranks on {name}: {eff:.2f} "
            f"{'PASS' if eff >= minimum else 'MISS'}"]


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    ints = lambda s: [int(t) for t in s.split(",") if t.strip()]  # noqa: E731
    p.add_argument("--ranks", type=ints, default=[1, 2, 4, 8, 16], help="comma list (default 1,2,4,8,16)")
    p.add_argument("--configs", type=lambda s: s.upper().split(","), default=["D", "M2"])
    p.add_argument("--modes", type=lambda s: s.split(","), default=["strong", "weak"])
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--rounds", type=int, default=5, help="timed epochs (one more warms up)")
    p.add_argument("--steps", type=int, default=None, help="steps per epoch (default: D 8, M2 32)")
    p.add_argument("--no-threads", action="store_true", help="skip the one-process N-thread baseline")
    p.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    p.add_argument("--timeout", type=int, default=900, help="seconds per measurement")
    p.add_argument("--json", default=None,
                   help="output file (default benchmarks/results/scaling_<cpus>cpu.json)")
    p.add_argument("--model", action="store_true", help="print docs/scaling.md's model table and exit")
    p.add_argument("--worker", choices=("dp", "threads", "allreduce"), help=argparse.SUPPRESS)
    p.add_argument("--config", default="D", help=argparse.SUPPRESS)
    p.add_argument("--global-batch", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker is None:
        fixed = args.steps
        args.steps = {name: fixed or cfg.steps for name, cfg in configs().items()}
    return args


def main(argv=None) -> int:
    args = parse(argv)
    if args.worker:
        return worker(args)
    if args.model:
        print("| step | GPUs | compute ms | ring ms | tree ms | eff. ring | eff. tree "
              "| eff. tree + overlap |")
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(model()))
        return 0
    out = run_all(args)
    out["targets"] = targets(out)
    for line in out["targets"]:
        print(line)
    path = args.json or os.path.join(HERE, "results", f"scaling_{os.cpu_count()}cpu.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
