"""``python -m benchmarks``: training throughput of portable_bp against its peers.

The thread count is fixed here, before NumPy, PyTorch or JAX is imported: BLAS and OpenMP
runtimes read their environment variables once, at load. With ``--threads N`` below the
number of usable CPUs the process is also pinned to N CPUs, so that no library (XLA's own
pool included, which ignores these variables) can use more cores than the others.
"""

from __future__ import annotations

import argparse
import os
import sys

from . import PBP_VARIANTS

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS", "BLIS_NUM_THREADS")


def csv(text):
    return [t.strip() for t in text.split(",") if t.strip()]


def parse(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", type=lambda s: [c.upper() for c in csv(s)], default=None,
                   help="comma list of A,B,C,D,E (default: A-D on cpu, B-E on gpu)")
    p.add_argument("--dtypes", type=csv, default=None,
                   help="comma list (default: float32,float64 on cpu, float32 on gpu)")
    p.add_argument("--rounds", type=int, default=None, help="timed rounds (default 7; 2 with --quick)")
    p.add_argument("--steps", type=int, default=None,
                   help="SGD steps per epoch (= per round) for every config, instead of each config's own")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for every library (default 2)")
    p.add_argument("--no-pin", action="store_true", help="do not pin the process to --threads CPUs")
    p.add_argument("--device", choices=("cpu", "gpu", "all"), default="cpu")
    p.add_argument("--contenders", type=csv, default=None,
                   help="keep only contenders whose name contains one of these (case-insensitive); "
                        "the reference portable_bp[numpy|cupy] is always kept")
    p.add_argument("--pbp-backends", type=csv, default=None,
                   help="portable_bp backends to time (default: numpy,torch on cpu; cupy,torch:cuda on gpu; "
                        "add e.g. jax:cpu or jax:gpu; SPEC+ref, e.g. numpy+ref, times the Array API "
                        "reference path, without the backend's kernels; SPEC+each, e.g. jax+each, one fit "
                        "call per epoch where a round times several epochs, instead of one fit for them)")
    p.add_argument("--json", default=None,
                   help="output file (default benchmarks/results/latest_<device>.json; "
                        "quick_<device>.json with --quick)")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: short epochs, 2 rounds, float32 only, no memory pass")
    p.add_argument("--no-memory", dest="memory", action="store_false",
                   help="skip the peak-memory pass (one child process per contender)")
    p.add_argument("--tf32", action="store_true",
                   help="GPU: also run the float32 GPU contenders with TF32 matrix products, report speed-up")
    p.add_argument("--tf32-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick:
        args.rounds = args.rounds or 2
        args.dtypes = args.dtypes or ["float32"]
        args.memory = False
    args.rounds = args.rounds or 7
    if args.threads < 1 or args.rounds < 1:
        p.error("--threads and --rounds must be >= 1")
    bad = [c for c in (args.configs or []) if c not in "ABCDE" or len(c) != 1]
    bad += [d for d in (args.dtypes or []) if d not in ("float32", "float64")]
    if bad:
        p.error(f"unknown config/dtype: {bad}")
    bad = [s for s in (args.pbp_backends or []) if s.partition("+")[2] not in PBP_VARIANTS]
    if bad:
        p.error(f"unknown portable_bp variant in --pbp-backends {bad}: the suffixes are +ref and +each")
    if args.json is None:
        here = os.path.dirname(os.path.abspath(__file__))
        args.json = os.path.join(here, "results", f"{'quick' if args.quick else 'latest'}_{args.device}.json")
    return args


def fix_threads(n, pin):
    for var in THREAD_VARS:
        os.environ[var] = str(n)
    # JAX on a GPU would otherwise grab 75% of the GPU's memory at start-up
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    if n == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false").strip()
    if pin and hasattr(os, "sched_setaffinity"):
        cpus = sorted(os.sched_getaffinity(0))
        if n < len(cpus):
            os.sched_setaffinity(0, cpus[:n])


def main(argv=None):
    args = parse(argv)
    fix_threads(args.threads, not args.no_pin)
    if not args.tf32_child and os.environ.pop("CUPY_TF32", None) not in (None, "0"):
        print("note: CUPY_TF32 ignored; use --tf32 for the TF32 comparison")
    from . import harness  # imports NumPy: only now
    harness.main(args)


if __name__ == "__main__":
    sys.exit(main())
