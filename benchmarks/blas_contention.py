"""``python -m benchmarks.blas_contention``: a float32 ``GridSearchCV`` of portable_bp's
``MLPClassifier`` against scikit-learn's, on cores that other processes keep busy.

Why: OpenBLAS splits every product of more than 64³ multiply-adds between its threads. When
more threads want the cores than there are cores, the thread it handed half the product to
may not be running, and the call waits for the scheduler to give it a time slice:
milliseconds, for a product of tens of microseconds. A small network's training step makes
hundreds of such calls per second, so a grid search slows down many times over; the waiting
threads also spin, which shows as CPU time. The NumPy backend runs products below
``numpy_blas.SERIAL_PRODUCTS`` multiply-adds on one BLAS thread
(``PORTABLE_BP_SERIAL_PRODUCTS`` changes the threshold, 0 switches it off).

Contenders, each in a fresh process per round (the thread settings are read at import),
in alternating order:
  portable_bp           our estimator as shipped
  portable_bp, off      the same with PORTABLE_BP_SERIAL_PRODUCTS=0 (every product threaded
                        as OpenBLAS decides: what the estimator did before)
  scikit-learn          sklearn.neural_network.MLPClassifier
``--one-thread`` adds both with OPENBLAS_NUM_THREADS=1. The load is ``--busy`` processes
spinning in a Python loop (default: one per core), started before the first round and
stopped after the last. Reported: per contender the median and range of wall and CPU time,
and per round the ratio of each to portable_bp's wall time. On a machine that other people
also use, the load is theirs plus ours: the table states the load average seen.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD_CODE = "while True:\n    pass\n"
OURS = "portable_bp"


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.blas_contention", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--busy", type=int, default=os.cpu_count() or 2,
                   help="busy-loop processes loading the cores (default: one per core; 0: no load)")
    p.add_argument("--rounds", type=int, default=3, help="rounds, each running every contender once (default 3)")
    p.add_argument("--epochs", type=int, default=20, help="epochs per fit (max_iter; default 20)")
    p.add_argument("--hidden", type=int, default=100, help="units of the one hidden layer (default 100)")
    p.add_argument("--one-thread", action="store_true", help="also run both with OPENBLAS_NUM_THREADS=1")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # one timed grid search, in a fresh process
    args = p.parse_args(argv)
    if args.busy < 0 or args.rounds < 1 or args.epochs < 1 or args.hidden < 1:
        p.error("--busy must be >= 0 and --rounds, --epochs, --hidden >= 1")
    return args


def grid_search(which: str, hidden: int, epochs: int) -> dict:
    """One timed float32 GridSearchCV on scikit-learn's digits: 2 alphas x 3 folds + the refit."""
    import warnings

    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV

    if which == "scikit-learn":
        from sklearn.neural_network import MLPClassifier
    else:
        from portable_bp.sklearn import MLPClassifier
    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    estimator = MLPClassifier(hidden_layer_sizes=(hidden,), max_iter=epochs, tol=0.0,
                              n_iter_no_change=epochs + 1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wall, cpu = time.perf_counter(), time.process_time()
        search = GridSearchCV(estimator, {"alpha": [1e-4, 1e-2]}, cv=3).fit(X, y)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"wall": wall, "cpu": cpu, "best_score": float(search.best_score_)}


def contenders(one_thread: bool) -> list[tuple[str, str, dict]]:
    """(name, child's estimator, environment changes)."""
    runs = [(OURS, OURS, {}), (f"{OURS}, off", OURS, {"PORTABLE_BP_SERIAL_PRODUCTS": "0"}),
            ("scikit-learn", "scikit-learn", {})]
    if one_thread:
        one = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
        runs += [(f"{OURS}, 1 thread", OURS, one), ("scikit-learn, 1 thread", "scikit-learn", one)]
    return runs


def run_child(which: str, env_changes: dict, args) -> dict:
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    path = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    env = {**os.environ, **env_changes, "PYTHONPATH": path}
    cmd = [sys.executable, "-m", "benchmarks.blas_contention", "--child", which,
           "--hidden", str(args.hidden), "--epochs", str(args.epochs)]
    out = subprocess.run(cmd, env=env, cwd=root, capture_output=True, text=True, check=True, timeout=3600)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_rounds(args) -> dict:
    runs = contenders(args.one_thread)
    busy = [subprocess.Popen([sys.executable, "-c", CHILD_CODE]) for _ in range(args.busy)]
    times: dict = {name: [] for name, _, _ in runs}
    loads = []
    try:
        time.sleep(1.0 if busy else 0.0)  # let the load start
        for r in range(args.rounds):
            for name, which, env in runs[::-1] if r % 2 else runs:
                times[name].append(run_child(which, env, args))
                loads.append(os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan"))
                t = times[name][-1]
                print(f"  round {r + 1}: {name:<24} {t['wall']:8.2f} s wall {t['cpu']:8.2f} s cpu  "
                      f"score {t['best_score']:.3f}  load {loads[-1]:.1f}", flush=True)
    finally:
        for p in busy:
            p.terminate()
        for p in busy:
            p.wait()
    return {"times": times, "load_average": [min(loads), max(loads)]}


def summarize(result: dict) -> dict:
    times = result["times"]
    ours = [t["wall"] for t in times[OURS]]
    out = {}
    for name, ts in times.items():
        walls, cpus = [t["wall"] for t in ts], [t["cpu"] for t in ts]
        ratios = [w / o for w, o in zip(walls, ours)]
        out[name] = {"wall_median": statistics.median(walls), "wall_range": [min(walls), max(walls)],
                     "cpu_median": statistics.median(cpus), "ratio_to_ours_median": statistics.median(ratios),
                     "ratio_range": [min(ratios), max(ratios)]}
    return out


def print_summary(summary: dict, result: dict, args) -> None:
    lo, hi = result["load_average"]
    print(f"\nfloat32 GridSearchCV (digits, hidden ({args.hidden},), 2 alphas x 3 folds + refit, "
          f"{args.epochs} epochs), {args.busy} busy processes, {os.cpu_count()} cores, "
          f"1-minute load average {lo:.1f}-{hi:.1f}")
    for name, s in summary.items():
        w0, w1 = s["wall_range"]
        r0, r1 = s["ratio_range"]
        print(f"  {name:<24} wall median {s['wall_median']:7.2f} s [{w0:.2f}-{w1:.2f}]  cpu {s['cpu_median']:7.2f} s"
              f"  / {OURS}: {s['ratio_to_ours_median']:5.2f}x [{r0:.2f}-{r1:.2f}]")


def main(argv=None):
    args = parse(argv)
    if args.child:
        print(json.dumps(grid_search(args.child, args.hidden, args.epochs)))
        return 0
    result = run_rounds(args)
    summary = summarize(result)
    print_summary(summary, result, args)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, **result, "busy": args.busy, "epochs": args.epochs,
                       "hidden": args.hidden}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
