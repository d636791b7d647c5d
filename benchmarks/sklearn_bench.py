"""``python -m benchmarks.sklearn_bench``: fit time of portable_bp's scikit-learn estimator
against scikit-learn's own ``MLPClassifier``, same settings, same data.

Both contenders run the same public call a user makes, ``Estimator(**params).fit(X, y)``,
validation included, on the same synthetic data (Gaussian features, 10 classes from a
random linear map), same parameters (adam, fixed epochs: ``n_iter_no_change`` beyond
``max_iter``, so neither stops early) and, in float64, the same arithmetic step for step
(see tests/test_sklearn_equivalence.py). Method: one warm-up fit each on a slice, then
rounds with the order alternated; per contender the median and range of the wall time
and of the process CPU time (robust to other processes on a shared machine), and the
per-round ratio scikit-learn / portable_bp, medianed.

  --device cpu (default): numpy backend, 20,000 x 64, hidden (256, 256), batch 128,
      float32, 2 threads for both; target >= 1.5x.
  --device gpu: backend="cupy", 200,000 x 256, hidden (1024, 1024), batch 512, float32,
      against scikit-learn on every CPU core; target >= 20x. Skips, with the reason, where
      CuPy cannot use a GPU.
  --accuracy: accuracy / R² on scikit-learn's bundled data sets, both estimators at the
      same hyper-parameters, mean over seeds (float32: the two differ by rounding only).

The thread count is fixed before NumPy is imported (BLAS reads it once).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from .__main__ import fix_threads

SETTINGS = {
    "cpu": dict(n=20_000, d=64, hidden=(256, 256), batch=128, epochs=3, backend="numpy", target=1.5),
    "gpu": dict(n=200_000, d=256, hidden=(1024, 1024), batch=512, epochs=2, backend="cupy", target=20.0),
}
CLASSES = 10


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.sklearn_bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 5 cpu, 3 gpu)")
    p.add_argument("--epochs", type=int, default=None, help="epochs per fit (default 3 cpu, 2 gpu)")
    p.add_argument("--samples", type=int, default=None, help="rows of X (default 20,000 cpu, 200,000 gpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for both (default 2 on cpu; every core for scikit-learn on gpu)")
    p.add_argument("--json", default=None, help="also write the results to this file")
    p.add_argument("--accuracy", action="store_true",
                   help="compare accuracy / R² on scikit-learn's bundled data sets instead")
    p.add_argument("--seeds", type=int, default=5, help="seeds for --accuracy (default 5)")
    args = p.parse_args(argv)
    args.rounds = args.rounds or (5 if args.device == "cpu" else 3)
    if args.rounds < 1 or args.seeds < 1:
        p.error("--rounds and --seeds must be >= 1")
    return args


# -- timing ---------------------------------------------------------------------------------
def make_data(n, d, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    y = np.argmax(X[:, :16] @ rng.standard_normal((16, CLASSES)), axis=1)
    return X, y


def contenders(setting):
    """(name, estimator factory) for both, with the same parameters."""
    from sklearn.neural_network import MLPClassifier as SkMLP

    from portable_bp.sklearn import MLPClassifier

    params = dict(hidden_layer_sizes=setting["hidden"], batch_size=setting["batch"], solver="adam",
                  max_iter=setting["epochs"], n_iter_no_change=setting["epochs"] + 1, random_state=0)
    ours = f"portable_bp[{setting['backend']}]"
    return [(ours, lambda: MLPClassifier(backend=setting["backend"], **params)),
            ("scikit-learn", lambda: SkMLP(**params))]


def timed_fit(make, X, y):
    """(wall seconds, CPU seconds) of one fit."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        wall, cpu = time.perf_counter(), time.process_time()
        make().fit(X, y)
        return time.perf_counter() - wall, time.process_time() - cpu


def run_rounds(setting, rounds):
    X, y = make_data(setting["n"], setting["d"])
    entries = contenders(setting)
    for _, make in entries:  # warm-up: BLAS, CUDA context and kernels, allocator
        timed_fit(make, X[: 4 * setting["batch"]], y[: 4 * setting["batch"]])
    times = {name: [] for name, _ in entries}
    for r in range(rounds):
        for name, make in entries[::-1] if r % 2 else entries:
            times[name].append(timed_fit(make, X, y))
            print(f"  round {r + 1}: {name:<20} {times[name][-1][0]:8.3f} s wall  "
                  f"{times[name][-1][1]:8.3f} s cpu", flush=True)
    return times


def summarize(times, target):
    (ours, t_ours), (_, t_sk) = times.items()
    ratios = [sk[0] / us[0] for us, sk in zip(t_ours, t_sk)]
    cpu_ratios = [sk[1] / us[1] for us, sk in zip(t_ours, t_sk)]
    stats = {name: {"wall_median": statistics.median(t[0] for t in ts),
                    "wall_range": [min(t[0] for t in ts), max(t[0] for t in ts)],
                    "cpu_median": statistics.median(t[1] for t in ts)} for name, ts in times.items()}
    return {"contenders": stats, "speedup_median": statistics.median(ratios),
            "speedup_range": [min(ratios), max(ratios)], "cpu_speedup_median": statistics.median(cpu_ratios),
            "target": target, "met": statistics.median(ratios) >= target}


def print_summary(summary, setting):
    print(f"\nfit time, {setting['n']:,} x {setting['d']}, hidden {setting['hidden']}, batch "
          f"{setting['batch']}, adam, float32, {setting['epochs']} epochs")
    for name, s in summary["contenders"].items():
        lo, hi = s["wall_range"]
        print(f"  {name:<20} median {s['wall_median']:8.3f} s  [{lo:.3f} - {hi:.3f}]  "
              f"(cpu {s['cpu_median']:.3f} s)")
    lo, hi = summary["speedup_range"]
    print(f"  speed-up (scikit-learn / ours, per round): median {summary['speedup_median']:.2f}x "
          f"[{lo:.2f} - {hi:.2f}], CPU time {summary['cpu_speedup_median']:.2f}x; target >= "
          f"{summary['target']}x: {'met' if summary['met'] else 'NOT met'}")


def gpu_unavailable() -> str:
    """'' when portable_bp's cupy backend runs here, else why not."""
    from portable_bp.backends import probe

    ok, why = probe("cupy")
    return "" if ok else why


# -- accuracy -------------------------------------------------------------------------------
def accuracy_cases(quick=False):
    """(name, data loader, estimator kind, params): scikit-learn's bundled data sets (and its
    Friedman #1 generator: its only bundled regression sets are diabetes and the 20-sample
    linnerud), each with hyper-parameters that suit it."""
    from sklearn import datasets

    def friedman():
        return datasets.make_friedman1(n_samples=1000, noise=1.0, random_state=0)

    mlp = dict(hidden_layer_sizes=(32,), max_iter=30) if quick else dict(hidden_layer_sizes=(64,), max_iter=200)
    cases = [("digits", datasets.load_digits, "classifier", mlp),
             ("breast_cancer", datasets.load_breast_cancer, "classifier", mlp),
             ("diabetes", datasets.load_diabetes, "regressor",
              dict(hidden_layer_sizes=(16,), alpha=1.0, max_iter=100 if quick else 300)),
             ("digits (sgd)", datasets.load_digits, "classifier",
              dict(mlp, solver="sgd", learning_rate_init=0.01)),
             ("iris", datasets.load_iris, "classifier", dict(mlp, max_iter=300)),
             ("wine", datasets.load_wine, "classifier", dict(mlp, max_iter=300)),
             ("diabetes (early stop)", datasets.load_diabetes, "regressor",
              dict(hidden_layer_sizes=(32,), alpha=1.0, early_stopping=True)),
             ("friedman1", friedman, "regressor", dict(mlp, max_iter=300, learning_rate_init=0.003))]
    return cases[:3] if quick else cases


def accuracy_table(seeds, quick=False):
    """{data set: {"ours": mean score, "scikit-learn": mean score, "scores": [...]}}: held-out
    accuracy (classifiers) or R² (regressors), standardized float32 features, one split and
    one random_state per seed."""
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import train_test_split
    from sklearn.neural_network import MLPClassifier as SkC
    from sklearn.neural_network import MLPRegressor as SkR
    from sklearn.preprocessing import StandardScaler

    from portable_bp.sklearn import MLPClassifier, MLPRegressor

    out = {}
    for name, load, kind, params in accuracy_cases(quick):
        X, y = load() if load.__name__ == "friedman" else load(return_X_y=True)
        pair = (MLPClassifier, SkC) if kind == "classifier" else (MLPRegressor, SkR)
        scores = []
        for seed in range(seeds):
            Xa, Xb, ya, yb = train_test_split(X, y, test_size=0.25, random_state=seed)
            scaler = StandardScaler().fit(Xa)
            Xa, Xb = scaler.transform(Xa).astype(np.float32), scaler.transform(Xb).astype(np.float32)
            if kind == "regressor":   # targets standardized with the training part's statistics
                mean, std = ya.mean(0), ya.std(0)
                ya, yb = (ya - mean) / std, (yb - mean) / std
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                scores.append([cls(random_state=seed, **params).fit(Xa, ya).score(Xb, yb) for cls in pair])
        s = np.array(scores)
        out[name] = {"metric": "accuracy" if kind == "classifier" else "R2", "ours": float(s[:, 0].mean()),
                     "scikit-learn": float(s[:, 1].mean()), "scores": s.tolist()}
    return out


def print_accuracy(table, seeds):
    print(f"held-out score, mean over {seeds} seeds (float32, standardized features)")
    print(f"  {'data set':<22} {'metric':<9} {'portable_bp':>12} {'scikit-learn':>13} {'diff':>9}")
    for name, row in table.items():
        print(f"  {name:<22} {row['metric']:<9} {row['ours']:12.4f} {row['scikit-learn']:13.4f} "
              f"{row['ours'] - row['scikit-learn']:+9.4f}")


# -- main -----------------------------------------------------------------------------------
def main(argv=None):
    args = parse(argv)
    setting = dict(SETTINGS[args.device])
    setting["epochs"] = args.epochs or setting["epochs"]
    setting["n"] = args.samples or setting["n"]
    threads = args.threads or (2 if args.device == "cpu" else len(os.sched_getaffinity(0))
                               if hasattr(os, "sched_getaffinity") else os.cpu_count())
    fix_threads(threads, pin=True)
    if args.accuracy:
        table = accuracy_table(args.seeds)
        print_accuracy(table, args.seeds)
        result = {"accuracy": table, "seeds": args.seeds}
    else:
        if args.device == "gpu" and (why := gpu_unavailable()):
            print(f"skipped: --device gpu needs portable_bp's cupy backend: {why}")
            return 0
        print(f"{args.device}: {threads} threads, {args.rounds} rounds")
        summary = summarize(run_rounds(setting, args.rounds), setting["target"])
        print_summary(summary, setting)
        result = {"device": args.device, "threads": threads, "setting": setting, **summary}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
