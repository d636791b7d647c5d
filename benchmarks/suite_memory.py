"""``python -m benchmarks.suite_memory [-- COMMAND ...]``: the wall time and peak memory of a
command and every process it starts, as benchmarks/README.md measures the test suite
(issue 20, item 5). COMMAND defaults to ``python -m pytest -q -p no:cacheprovider``.

The memory is the sum of the resident sets of the command's process and all its
descendants (for the suite: pytest, its xdist workers, the tests' subprocesses), sampled
every ``--interval`` seconds; the peak is the largest sum seen, printed with the processes
that made it up. Resident sets count shared library pages once per process, as ``ps`` and
``top`` do. The command's own output goes where it would; the summary goes to stderr last.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

import psutil

DEFAULT = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]


def parse(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.suite_memory", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--interval", type=float, default=0.5, help="seconds between samples (default 0.5)")
    p.add_argument("command", nargs="*", help="the command to run (after --)")
    args = p.parse_args(argv)
    if args.interval <= 0:
        p.error(f"--interval must be positive, got {args.interval}")
    return args


def sample(root: psutil.Process) -> list[tuple[int, int, str]]:
    """(resident bytes, pid, command line) of ``root`` and every descendant still alive."""
    rows = []
    for proc in [root, *root.children(recursive=True)]:
        try:
            rows.append((proc.memory_info().rss, proc.pid, " ".join(proc.cmdline())))
        except psutil.Error:  # ended between the listing and the read
            continue
    return rows


def watch(command: list[str], interval: float) -> tuple[int, float, list, float]:
    """Run ``command``; (its exit status, the peak summed bytes, the processes at the peak,
    the wall seconds)."""
    start = time.perf_counter()
    child = subprocess.Popen(command)
    root = psutil.Process(child.pid)
    peak, at_peak = 0, []
    while child.poll() is None:
        try:
            rows = sample(root)
        except psutil.NoSuchProcess:  # the command ended
            break
        total = sum(r for r, _, _ in rows)
        if total > peak:
            peak, at_peak = total, rows
        time.sleep(interval)
    status = child.wait()
    return status, peak, sorted(at_peak, reverse=True), time.perf_counter() - start


def main(argv=None) -> int:
    args = parse(argv)
    status, peak, at_peak, wall = watch(args.command or DEFAULT, args.interval)
    print(f"wall {wall:.1f} s, exit status {status}; peak memory {peak / 2**30:.3f} GiB ({peak / 1e9:.3f} GB), "
          f"summed over {len(at_peak)} processes:", file=sys.stderr)
    for rss, pid, cmd in at_peak:
        print(f"  {rss / 2**20:8.0f} MiB  {pid:>7}  {cmd[:100]}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
