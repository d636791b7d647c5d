"""benchmarks/suite_memory.py, the suite's memory meter: it sums the resident memory of a
command's whole process tree, grandchildren included, and keeps the largest sum."""

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # benchmarks/ is a program of the checkout, not an installed package
    sys.path.insert(0, REPO)
from benchmarks import suite_memory  # noqa: E402

# a child that holds 48 MiB, touched, and starts a grandchild that holds 32 MiB, both for a second (the
# child alone, interpreter included, stays under the 80 MiB the sum must reach; kept small, as it
# runs beside the suite's workers)
HOLD = "import time; b = bytearray({mib} * 2**20); b[::4096] = b'x' * len(b[::4096]); {then}time.sleep(1.0)"
GRANDCHILD = HOLD.format(mib=32, then="")
CHILD = HOLD.format(mib=48, then=f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', {GRANDCHILD!r}]); ")


def test_the_peak_sums_the_command_and_its_descendants():
    status, peak, at_peak, wall = suite_memory.watch([sys.executable, "-c", CHILD], interval=0.05)
    assert status == 0 and wall >= 1.0
    assert peak >= 80 * 2**20, peak / 2**20
    assert len(at_peak) == 2 and peak == sum(rss for rss, _, _ in at_peak)


def test_the_exit_status_is_the_commands_and_a_bad_interval_is_refused(capsys):
    assert suite_memory.main(["--interval", "0.05", "--", sys.executable, "-c", "raise SystemExit(3)"]) == 3
    assert "peak memory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        suite_memory.main(["--interval", "0", "--", sys.executable, "-c", "pass"])
    assert "--interval must be positive, got 0.0" in capsys.readouterr().err
