"""``python -m benchmarks.compare_commits``: portable_bp at two commits, timed side by side.

Two versions of one package cannot share a process (each registers its own backends), so
each runs in a worker process of its own (the package of that commit first on its path,
this checkout's ``benchmarks`` for the networks, data and the public ``fit`` call of
``harness.setup_pbp``). The parent sets both up with the same network, data and initial
weights, runs one warm-up epoch each, then alternates timed epochs (ABAB..., the order
swapped every round) and reports, per config and dtype, the median per-round ratio
base seconds / head seconds (above 1: head is faster) with its range. Only one worker
computes at a time, so on a 2-core machine they never compete for the cores.

    python -m benchmarks.compare_commits --base HEAD~3 --configs A,B,C,D --rounds 21
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from .__main__ import THREAD_VARS

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

WORKER = r"""
import os, sys, time, json
if os.environ.get("PBP_PIN"):
    os.sched_setaffinity(0, {int(os.environ["PBP_PIN"])})
from benchmarks import configs as C
from benchmarks.harness import setup_pbp
import portable_bp
run = None
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "setup":
        cfg, dtype, spec, steps = C.CONFIGS[cmd[1]], cmd[2], cmd[3], int(cmd[4])
        cfg = C.with_steps(cfg, steps)
        X, Y = C.make_data(cfg, dtype)
        run = setup_pbp(spec, cfg, dtype, X, Y, C.init_params(cfg, dtype))
        run()
        print(json.dumps({"ready": portable_bp.__file__}), flush=True)
    elif cmd[0] == "epoch":
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        print(json.dumps({"seconds": time.perf_counter() - t0, "cpu": time.process_time() - c0}), flush=True)
"""


def export(rev: str, into: str) -> str:
    """The package at ``rev`` unpacked into ``into`` (a folder to put first on the path)."""
    archive = subprocess.run(["git", "-C", REPO, "archive", rev, "portable_bp"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


def worker_env(package_root: str | None, threads: int) -> dict:
    """The environment of a process running one version of portable_bp: the package of
    ``package_root`` (None: this checkout's) first on its path, then this checkout (for
    ``benchmarks``), ``threads`` BLAS/OpenMP threads."""
    env = {**os.environ, **{var: str(threads) for var in THREAD_VARS}}
    paths = ([package_root] if package_root else []) + [REPO]
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def commit_parser(prog: str, doc: str, configs: str, dtypes: str) -> argparse.ArgumentParser:
    """The arguments every two-commit comparison takes: --base, --configs, --dtypes,
    --backend and --json."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="the commit to compare against (git rev)")
    p.add_argument("--configs", default=configs)
    p.add_argument("--dtypes", default=dtypes)
    p.add_argument("--backend", default="numpy", help="portable_bp backend spec (default numpy)")
    p.add_argument("--json", default=None, help="write the results here too")
    return p


class Worker:
    """A process running one version of portable_bp, one epoch per request."""

    def __init__(self, package_root: str | None, threads: int, pin: int | None = None):
        env = worker_env(package_root, threads)
        if pin is not None:
            env["PBP_PIN"] = str(pin)
        self.proc = subprocess.Popen([sys.executable, "-c", WORKER], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=tempfile.gettempdir())

    def ask(self, line: str) -> dict:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        if not reply:
            raise RuntimeError(f"worker died on {line!r}")
        return json.loads(reply)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


def compare(workers, cfg, dtype, spec, steps, rounds):
    """Median and range of base/head seconds per round, each side's median seconds, and the
    same ratio of CPU time (process time, all threads): on a shared VM whose speed swings,
    time stolen by neighbours counts in wall seconds but not in CPU seconds."""
    for w in workers.values():
        w.ask(f"setup {cfg} {dtype} {spec} {steps}")
    times = {name: [] for name in workers}
    cpu = {name: [] for name in workers}
    for r in range(rounds):
        for name in (list(workers) if r % 2 == 0 else list(workers)[::-1]):
            reply = workers[name].ask("epoch")
            times[name].append(reply["seconds"])
            cpu[name].append(reply["cpu"])
    ratios = [b / h for b, h in zip(times["base"], times["head"])]
    cpu_ratios = [b / h for b, h in zip(cpu["base"], cpu["head"])]
    return {"ratio": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
            "base_s": statistics.median(times["base"]), "head_s": statistics.median(times["head"]),
            "cpu_ratio": statistics.median(cpu_ratios), "cpu_min": min(cpu_ratios), "cpu_max": max(cpu_ratios),
            "ratios": ratios, "cpu_ratios": cpu_ratios}


def main(argv=None):
    p = commit_parser("python -m benchmarks.compare_commits", __doc__, "A,B,C,D", "float32,float64")
    p.add_argument("--rounds", type=int, default=21)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pin", type=int, default=None,
                   help="run both workers on this one CPU (with --threads 1: the least noise on a shared VM)")
    args = p.parse_args(argv)
    from . import configs as C

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        workers = {"base": Worker(export(args.base, tmp), args.threads, args.pin),
                   "head": Worker(None, args.threads, args.pin)}
        try:
            print(f"base {args.base} vs head (this checkout), {args.backend}, {args.rounds} rounds, "
                  f"{args.threads} thread(s){'' if args.pin is None else f', pinned to CPU {args.pin}'}; "
                  f"ratio = base s / head s per round (> 1: head faster)")
            for cfg in args.configs.split(","):
                for dtype in args.dtypes.split(","):
                    row = compare(workers, cfg, dtype, args.backend, C.CONFIGS[cfg].steps, args.rounds)
                    row.update(config=cfg, dtype=dtype)
                    results.append(row)
                    print(f"{cfg} {dtype}: median ratio {row['ratio']:.3f} (range {row['min']:.3f}-"
                          f"{row['max']:.3f}); CPU-time ratio {row['cpu_ratio']:.3f} (range "
                          f"{row['cpu_min']:.3f}-{row['cpu_max']:.3f}); base {row['base_s'] * 1e3:.1f} ms, "
                          f"head {row['head_s'] * 1e3:.1f} ms per epoch", flush=True)
        finally:
            for w in workers.values():
                w.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"base": args.base, "backend": args.backend, "rounds": args.rounds,
                       "results": results}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
