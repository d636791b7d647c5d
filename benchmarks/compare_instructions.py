"""``python -m benchmarks.compare_instructions``: instructions per epoch of portable_bp at two
commits, counted by Valgrind (callgrind), for the small configs whose step is mostly Python.

Why: on a shared 2-core VM, timings of a 30 µs step swing by ±50% from round to round,
and a 3% regression is lost in that noise. The number of instructions a process executes
does not depend on the neighbours: it is the same in every run. It is not time (a cache
miss costs more than an add), but for a step made of Python calls and tiny NumPy calls the
two move together (measured side by side in ``benchmarks/README.md``).

Method: for each commit, a child process sets up the config exactly as
``compare_commits`` does (the package of that commit first on its path, this checkout's
``benchmarks`` for network, data and the public ``fit`` call), runs one warm-up epoch,
then ``--epochs`` epochs; it runs twice under callgrind, with 0 and with ``--epochs``
epochs, and the difference divided by ``--epochs`` is one epoch's instructions, set-up and
imports excluded. One BLAS thread (a second thread's spinning would be counted) and a fixed
``PYTHONHASHSEED`` (with random string hashes, dict layouts and so the counts vary by about
±0.5% from run to run).

    python -m benchmarks.compare_instructions --base 0114a2d --configs A --epochs 4

Needs ``valgrind`` on the PATH; about a minute per config, dtype and commit (the program
runs some 50× slower under callgrind).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from .compare_commits import commit_parser, export, worker_env

CHILD = r"""
import sys
from benchmarks import configs as C
from benchmarks.harness import setup_pbp
cfg_name, dtype, spec, epochs = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
cfg = C.CONFIGS[cfg_name]
X, Y = C.make_data(cfg, dtype)
run = setup_pbp(spec, cfg, dtype, X, Y, C.init_params(cfg, dtype))
run()
for _ in range(epochs):
    run()
"""


def instructions(package_root: str | None, args: list[str]) -> int:
    """Instructions callgrind counts for the child with ``args``, the package of
    ``package_root`` (None: this checkout's) first on its path."""
    env = {**worker_env(package_root, threads=1),
           "PYTHONHASHSEED": "0"}  # string hashes (dict layouts) the same in every run
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/cg.out",
                              os.path.realpath(sys.executable), "-c", CHILD, *args],
                             capture_output=True, text=True, env=env, cwd=tmp, check=True)
    found = re.search(r"Collected\s*:\s*(\d+)", out.stderr)
    if found is None:
        raise RuntimeError(f"callgrind reported no count:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def per_epoch(package_root: str | None, cfg: str, dtype: str, spec: str, epochs: int) -> float:
    """One epoch's instructions: (count with ``epochs`` epochs − count with none) / epochs."""
    with_epochs = instructions(package_root, [cfg, dtype, spec, str(epochs)])
    without = instructions(package_root, [cfg, dtype, spec, "0"])
    return (with_epochs - without) / epochs


def main(argv=None):
    p = commit_parser("python -m benchmarks.compare_instructions", __doc__, "A", "float64")
    p.add_argument("--epochs", type=int, default=4, help="epochs counted (after one warm-up epoch)")
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None:
        p.error("valgrind is not on the PATH (apt install valgrind)")
    if args.epochs < 1:
        p.error(f"--epochs must be at least 1, got {args.epochs}")
    from . import configs as C

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        base_root = export(args.base, tmp)
        print(f"base {args.base} vs head (this checkout), {args.backend}, {args.epochs} epochs counted, "
              f"one BLAS thread; instructions per epoch (callgrind)")
        for cfg in args.configs.split(","):
            steps = C.CONFIGS[cfg].steps
            for dtype in args.dtypes.split(","):
                base = per_epoch(base_root, cfg, dtype, args.backend, args.epochs)
                head = per_epoch(None, cfg, dtype, args.backend, args.epochs)
                row = {"config": cfg, "dtype": dtype, "base": base, "head": head, "head_over_base": head / base,
                       "steps_per_epoch": steps}
                results.append(row)
                print(f"{cfg} {dtype}: base {base / 1e6:.1f} M, head {head / 1e6:.1f} M instructions per epoch "
                      f"({base / steps / 1e3:.1f} k and {head / steps / 1e3:.1f} k per step): "
                      f"head {100 * (head / base - 1):+.1f}%", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"base": args.base, "backend": args.backend, "epochs": args.epochs, "results": results}, f,
                      indent=1)


if __name__ == "__main__":
    main()
