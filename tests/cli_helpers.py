"""Running the ``portable-bp`` command as users run it (``python -m portable_bp`` in a
subprocess, this checkout first on the path), and what its output must look like."""

import contextlib
import os
import re
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FINAL_LINE = re.compile(r"^test accuracy: (\d\.\d{3}) \(n=(\d+)\) \| time: \d+\.\d s \| backend: \S+$")


def cli_env():
    """The environment for the command: this checkout first on PYTHONPATH, no debug tracebacks."""
    paths = [REPO] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    env.pop("PORTABLE_BP_DEBUG", None)
    return env


def run_cli(*args, cwd=None, prelude=None):
    """Run the command; ``prelude`` is Python run first in the same process (to hide a module)."""
    if prelude is None:
        cmd = [sys.executable, "-m", "portable_bp", *args]
    else:
        code = f"{prelude}\nimport sys\nfrom portable_bp.cli import main\nsys.exit(main(sys.argv[1:]))"
        cmd = [sys.executable, "-c", code, *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), cwd=cwd, timeout=300)


def assert_one_line_error(result, *fragments):
    """Exit status 2, exactly one line on stderr starting 'portable-bp: error:', no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("portable-bp: error: "), lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def final_accuracy(stdout):
    match = FINAL_LINE.match(stdout.strip().splitlines()[-1])
    assert match, stdout
    return float(match.group(1)), int(match.group(2))


@contextlib.contextmanager
def full_disk(folder):
    """A 64 KiB tmpfs mounted at ``folder`` (created), already full; skips the test unless
    this process may mount one (root)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    os.makedirs(folder)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with open(os.path.join(folder, "filler"), "wb") as f:
            try:
                f.write(b"\0" * (1 << 20))
            except OSError:
                pass
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)
