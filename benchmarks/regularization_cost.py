"""``python -m benchmarks.regularization_cost``: what dropout, L2 and clipping cost per step.

For each config (C and D by default, float32, NumPy unless ``--backend``), the plain SGD
epoch and the same epoch with each regularization are timed side by side in one process:
rounds alternate over the contenders (the order rotated every round), and the report is
the median of the per-round ratios ``regularized seconds / plain seconds`` with their
range (below the target is a pass). The networks share initial weights and data; the
regularized ones train the same batches. Targets (issue 19): dropout ≤ 1.3× on C and
≤ 1.15× on D; L2 and clipping ≤ 1.1× on D.

    python -m benchmarks.regularization_cost --configs C,D --rounds 11
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import portable_bp as pbp

from . import configs as C

SETTINGS = {"plain": ({}, {}), "dropout 0.5": ({"dropout": 0.5}, {}), "l2": ({}, {"l2": 1e-4}),
            "clip_norm": ({}, {"clip_norm": 1.0}), "clip_value": ({}, {"clip_value": 1.0}),
            "l2 + clip_norm": ({}, {"l2": 1e-4, "clip_norm": 1.0})}
TARGETS = {("C", "dropout 0.5"): 1.3, ("D", "dropout 0.5"): 1.15, ("D", "l2"): 1.1, ("D", "clip_norm"): 1.1,
           ("D", "clip_value"): 1.1}


def contender(cfg, dtype, backend, net_kw, fit_kw):
    """A closure that trains one epoch of ``cfg`` with these settings."""
    X, Y = C.make_data(cfg, dtype)
    params = C.init_params(cfg, dtype)
    net = pbp.Network(list(cfg.sizes), activation=cfg.activation, output_activation=cfg.output_activation,
                      loss=cfg.loss, backend=backend, dtype=dtype, seed=0, params=params, **net_kw)
    X, Y = net.features(X), net.targets(Y, X.shape[0])

    def epoch():
        net.fit(X, Y, epochs=1, batch_size=cfg.batch, optimizer="sgd", lr=0.01, shuffle=False, **fit_kw)
        net.backend.synchronize()
    return epoch


def measure(cfg, dtype, backend, rounds):
    runs = {name: contender(cfg, dtype, backend, *kw) for name, kw in SETTINGS.items()}
    for run in runs.values():
        run()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    names = list(runs)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - t0)
    ratios = {name: [t / p for t, p in zip(times[name], times["plain"])] for name in names if name != "plain"}
    return {"plain_median_s": statistics.median(times["plain"]),
            "ratios": {name: {"median": statistics.median(v), "min": min(v), "max": max(v)}
                       for name, v in ratios.items()}}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="C,D")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--backend", default="numpy")
    p.add_argument("--rounds", type=int, default=11)
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    out = {}
    for name in args.configs.split(","):
        cfg = C.CONFIGS[name]
        result = measure(cfg, args.dtype, args.backend, args.rounds)
        out[name] = result
        print(f"-- {cfg.describe()}, {args.dtype}, {args.backend}: plain epoch {result['plain_median_s']:.3f} s "
              f"(median of {args.rounds})")
        for setting, r in result["ratios"].items():
            target = TARGETS.get((name, setting))
            verdict = "" if target is None else f"  target <= {target}: {'met' if r['median'] <= target else 'MISSED'}"
            print(f"   {setting:<16} {r['median']:.3f}x plain  (range {r['min']:.3f}-{r['max']:.3f}){verdict}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
