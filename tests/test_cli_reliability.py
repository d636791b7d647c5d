"""Nothing trained is lost by ``portable-bp train``: every output path is checked before
training; Ctrl-C (exit 130) and SIGTERM (exit 143) write the model and plot of the last
completed epoch; ``--checkpoint F --resume`` continues a run; a divergence (exit 1) still
writes the model of the last finite state.

Runs are small (blobs, 16 hidden units, --quiet); the reference runs that the
interrupted ones are compared with go through ``cli.main`` in this process."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, cli_env, run_cli

import portable_bp as pbp
from portable_bp.cli import main

TRAIN = ["train", "--dataset", "blobs", "--hidden", "16", "--backend", "numpy", "--quiet"]

# Root ignores permission bits: make os.access honour them in the command's process, as
# it does for everyone else (the check is the command's; the OS's answer is emulated).
HONOUR_PERMISSIONS = """
import os
_access = os.access
def _honouring(path, mode, *args, **kwargs):
    if mode & os.W_OK and os.path.exists(path) and not os.stat(path).st_mode & 0o222:
        return False
    return _access(path, mode, *args, **kwargs)
os.access = _honouring
"""


def same_model(a, b):
    """Two checkpoints hold the same network, bit for bit, and the same epoch count."""
    na, nb = pbp.load(a), pbp.load(b)
    assert na.epochs_trained == nb.epochs_trained
    for (Wa, ba), (Wb, bb) in zip(na.params, nb.params):
        np.testing.assert_array_equal(Wa, Wb)
        np.testing.assert_array_equal(ba, bb)


@pytest.mark.parametrize("flag,path,fragment", [
    ("--save", "missing/m.npz", "does not exist"),
    ("--plot", "missing/p.png", "does not exist"),
    ("--checkpoint", "missing/ck.npz", "does not exist"),
    ("--save", ".", "must name a file"),
    ("--checkpoint", ".", "must name a file"),
    ("--save", "locked/m.npz", "cannot write"),
])
def test_every_output_path_is_checked_before_training(tmp_path, flag, path, fragment):
    """A bad --save, --plot or --checkpoint fails at once: exit 2, one line, nothing printed
    (the run's description comes before training), no file written."""
    (tmp_path / "locked").mkdir()
    os.chmod(tmp_path / "locked", 0o555)
    try:
        r = run_cli(*TRAIN[:-1], "--epochs", "500", flag, path, cwd=tmp_path,
                    prelude=HONOUR_PERMISSIONS if os.geteuid() == 0 else "")
    finally:
        os.chmod(tmp_path / "locked", 0o755)
    assert_one_line_error(r, flag, fragment)
    assert r.stdout == ""
    assert sorted(os.listdir(tmp_path)) == ["locked"] and os.listdir(tmp_path / "locked") == []


def start_and_signal(tmp_path, sig, *extra):
    """Start a long training run, send ``sig`` once its first checkpoint exists (an epoch
    has completed), and return the finished process's (returncode, stdout, stderr)."""
    # A process started in the background by a non-interactive shell (a CI job, nohup ... &)
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler: the
    # command is run as from a terminal, with Python's own SIGINT handler, whatever ours is.
    code = ("import signal, sys\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "from portable_bp.cli import main\nsys.exit(main(sys.argv[1:]))")
    args = [sys.executable, "-c", code, *TRAIN, "--epochs", "100000", "--checkpoint", "ck.npz", *extra]
    proc = subprocess.Popen(args, cwd=tmp_path, env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "ck.npz").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no epoch completed in 120 s"
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def saved_epoch(stdout, name="m.npz"):
    line = next(x for x in stdout.splitlines() if x.startswith(f"saved model to {name} (epoch "))
    return int(line.split("(epoch ")[1].split(";")[0])


def test_ctrl_c_writes_the_model_and_plot_of_the_last_completed_epoch(tmp_path, capsys):
    """Exit 130 after writing m.npz (loadable, epochs_trained as announced) and the plot;
    the model is bit for bit the same command run for that many epochs."""
    pytest.importorskip("matplotlib")
    rc, out, err = start_and_signal(tmp_path, signal.SIGINT, "--save", "m.npz", "--plot", "p.png")
    assert rc == 130, (out, err)
    assert err.strip().splitlines()[-1] == "portable-bp: interrupted" and "Traceback" not in err
    epochs = saved_epoch(out)
    assert epochs >= 1 and pbp.load(tmp_path / "m.npz").epochs_trained == epochs
    assert (tmp_path / "p.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main([*TRAIN, "--epochs", str(epochs), "--save", str(tmp_path / "ref.npz")]) == 0
    same_model(tmp_path / "m.npz", tmp_path / "ref.npz")


def test_sigterm_exits_143_and_resume_continues_the_run(tmp_path, capsys):
    """SIGTERM: exit 143 with the model written. Then the same command with --resume and
    two more epochs trains on from the checkpoint: bit for bit the run never stopped."""
    rc, out, err = start_and_signal(tmp_path, signal.SIGTERM, "--save", "m.npz")
    assert rc == 143, (out, err)
    assert err.strip().splitlines()[-1] == "portable-bp: terminated"
    assert pbp.load(tmp_path / "m.npz").epochs_trained == saved_epoch(out)
    total = pbp.load(tmp_path / "ck.npz").epochs_trained + 2
    r = run_cli(*TRAIN, "--epochs", str(total), "--checkpoint", "ck.npz", "--resume", "--save", "r.npz",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert pbp.load(tmp_path / "r.npz").epochs_trained == total
    assert main([*TRAIN, "--epochs", str(total), "--save", str(tmp_path / "ref.npz")]) == 0
    same_model(tmp_path / "r.npz", tmp_path / "ref.npz")


def test_a_divergence_exits_1_and_still_writes_the_last_finite_model(tmp_path):
    """A huge --lr: one error line naming the epoch, batch and lr, exit 1, and m.npz holds
    the state the library kept (finite, with the announced epoch count)."""
    r = run_cli("train", "--dataset", "sine", "--lr", "1e30", "--epochs", "5", "--save", "m.npz", "--quiet",
                cwd=tmp_path)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("portable-bp: error: training diverged at epoch ")
    assert "lr=1e+30" in lines[0]
    net = pbp.load(tmp_path / "m.npz")  # loading checks that every parameter is finite
    assert net.epochs_trained == saved_epoch(r.stdout)
    X, y = pbp.datasets.sine(n_samples=400, noise=0.1, seed=0)
    assert np.isfinite(net.evaluate(X, y.reshape(-1, 1))["loss"])
