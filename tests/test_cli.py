"""The ``portable-bp`` command, run as users run it: ``python -m portable_bp`` in a subprocess."""

import math
import re
import struct

import numpy as np
import pytest
from backend_facts import facts
from cli_helpers import REPO, assert_one_line_error, final_accuracy, run_cli
from conftest import probed

CUPY_OK, CUPY_REASON = probed("cupy")


# -- help and version ---------------------------------------------------------------------
@pytest.mark.parametrize("sub", ["", "train", "evaluate", "predict", "export", "backends", "gradcheck", "explain"])
def test_help_for_every_subcommand(sub):
    """--help works for the command and every subcommand (exit 0, a usage line)."""
    r = run_cli(*([sub] if sub else []), "--help")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("usage: portable-bp"), r.stdout
    if sub == "train":
        assert "--dataset" in r.stdout and "evaluate" in r.stdout  # the split/scaler note


def test_train_help_shows_the_librarys_tables():
    """Choices and defaults come from the library: hidden and output activations, losses
    with their default outputs, optimizers with their default learning rates."""
    from portable_bp.activations import ACTIVATIONS
    from portable_bp.losses import LOSSES
    from portable_bp.optim import default_lrs
    DEFAULT_LR = default_lrs()

    r = run_cli("train", "--help")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())

    def choices(flag):
        return re.search(re.escape(flag) + r" \{([^}]*)\}", text).group(1).split(",")

    assert choices("--activation") == [n for n, a in ACTIVATIONS.items() if not a.output_only]
    assert choices("--output-activation") == list(ACTIVATIONS)
    assert choices("--loss") == list(LOSSES)
    assert choices("--optimizer") == list(DEFAULT_LR)
    assert "(default: " + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_LR.items()) + ")" in text
    assert "default: " + ", ".join(f"{loss.default_output} for {name}" for name, loss in LOSSES.items()) in text


def test_version():
    r = run_cli("--version")
    assert r.returncode == 0
    assert re.fullmatch(r"portable-bp \d+\.\d+\.\d+\S*", r.stdout.strip())


def test_bench_help_outside_a_checkout(tmp_path):
    r = run_cli("bench", "--help", cwd=tmp_path)
    assert r.returncode == 0 and "source checkout" in r.stdout


def test_bench_outside_a_checkout_says_so(tmp_path):
    assert_one_line_error(run_cli("bench", cwd=tmp_path), "source checkout")


def test_bench_passes_arguments_to_the_benchmarks(tmp_path):
    r = run_cli("bench", "--help", cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert "benchmarks" in r.stdout


# -- train and evaluate -------------------------------------------------------------------
def test_train_defaults_to_digits_and_quiet_prints_the_final_line_alone(tmp_path):
    """Without --dataset: digits (360 test images); --quiet prints only the final line."""
    r = run_cli("train", "--epochs", "2", "--hidden", "32", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == 1
    accuracy, n = final_accuracy(r.stdout)
    assert n == 360 and accuracy > 0.9


def test_the_main_job_reaches_97_percent(tmp_path):
    """README command 1: `portable-bp train --dataset digits --hidden 256`, on the CPU."""
    r = run_cli("train", "--dataset", "digits", "--hidden", "256", "--backend", "numpy", "--quiet",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    accuracy, n = final_accuracy(r.stdout)
    assert n == 360 and accuracy >= 0.97, r.stdout


def test_train_save_then_evaluate_reproduces_the_test_accuracy(tmp_path):
    """evaluate re-creates the run's test part from the data, the saved seed and the split,
    on any backend: the same accuracy as train printed."""
    r = run_cli("train", "--dataset", "blobs", "--epochs", "3", "--seed", "3", "--backend", "numpy",
                "--save", "m.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    accuracy, n = final_accuracy(r.stdout)
    assert (tmp_path / "m.npz").is_file()
    assert "saved model to m.npz" in r.stdout
    for backend in ("numpy", "array_api_strict"):
        e = run_cli("evaluate", "m.npz", "--dataset", "blobs", "--backend", backend, cwd=tmp_path)
        assert e.returncode == 0, e.stderr
        m = re.fullmatch(r"test loss: (\S+) \| test accuracy: (\d\.\d{3}) \(n=(\d+)\) \| backend: (\S+)",
                         e.stdout.strip())
        assert m, e.stdout
        assert math.isfinite(float(m.group(1)))
        assert (float(m.group(2)), int(m.group(3)), m.group(4)) == (accuracy, n, backend)


def test_evaluate_on_other_data_is_one_clear_line(tmp_path):
    """A model evaluated on data with another number of features: one error line saying so."""
    r = run_cli("train", "--dataset", "sine", "--epochs", "1", "--quiet", "--save", "m.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert_one_line_error(run_cli("evaluate", "m.npz", "--dataset", "moons", cwd=tmp_path),
                          "1 input features")


def test_train_regression_uses_the_librarys_defaults_and_prints_test_mse(tmp_path):
    """A continuous target: loss mse with the library's default output for it (identity) and
    the optimizer's default learning rate from the library's table."""
    from portable_bp.losses import LOSSES
    from portable_bp.optim import default_lrs
    DEFAULT_LR = default_lrs()

    r = run_cli("train", "--dataset", "sine", "--epochs", "5", "--backend", "numpy", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == ("task: regress (auto: the target is continuous, as scikit-learn's type_of_target says): "
                        "1 output, loss mse")
    assert f"relu/{LOSSES['mse'].default_output}, loss mse, momentum lr={DEFAULT_LR['momentum']:g}," in lines[2]
    m = re.fullmatch(r"test MSE: (\S+) \(n=80\) \| time: \d+\.\d s \| backend: numpy", lines[-1])
    assert m and float(m.group(1)) < 0.5, r.stdout


def test_train_on_a_users_csv_with_a_named_or_numbered_target(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 3))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    rows = ["label,a,b,c"] + [f"{t},{a:.5f},{b:.5f},{c:.5f}" for t, (a, b, c) in zip(y, X)]
    (tmp_path / "data.csv").write_text("\n".join(rows) + "\n")
    for target in ("label", "0"):
        r = run_cli("train", "--data", "data.csv", "--target", target, "--epochs", "20", "--quiet",
                    cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        accuracy, n = final_accuracy(r.stdout)
        assert n == 40 and accuracy >= 0.85


def test_train_on_idx_pair_and_npz_files(tmp_path):
    rng = np.random.default_rng(0)
    n = 120
    labels = np.arange(n, dtype=np.uint8) % 2
    images = rng.integers(0, 60, size=(n, 4, 4), dtype=np.uint8)
    images[labels == 1, :2, :] += 150  # class 1: bright top half
    (tmp_path / "img.idx").write_bytes(b"\x00\x00\x08\x03" + struct.pack(">3I", n, 4, 4) + images.tobytes())
    (tmp_path / "lab.idx").write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", n) + labels.tobytes())
    np.savez(tmp_path / "d.npz", X=images.reshape(n, -1).astype(float), y=labels.astype(np.int64))
    for data in ("img.idx,lab.idx", "d.npz"):
        r = run_cli("train", "--data", data, "--epochs", "10", "--quiet", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        accuracy, count = final_accuracy(r.stdout)
        assert count == 24 and accuracy >= 0.9


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    r = run_cli("train", "--dataset", "blobs", "--epochs", "2", "--quiet", "--plot", "curves.png", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_without_matplotlib_is_a_clear_error(tmp_path):
    r = run_cli("train", "--epochs", "1", "--plot", "curves.png", cwd=tmp_path,
                prelude="import sys; sys.modules['matplotlib'] = None")
    assert_one_line_error(r, "matplotlib", 'pip install -e ".[plot]"')
    assert not (tmp_path / "curves.png").exists()


# -- other subcommands --------------------------------------------------------------------
def backends_table(stdout):
    """{spec: {column: cell}} from the table (columns found by the header's titles), the
    "SPEC overrides: ..." lines and the "auto selects:" line."""
    lines = stdout.splitlines()
    header = lines[0]
    titles = ["backend", "runs here", "device", "version", "hot path", "reason it cannot run"]
    starts = [header.index(t) for t in titles]
    rows, overrides, auto = {}, {}, None
    for line in lines[1:]:
        m = re.fullmatch(r"(\S+) overrides: (.*)", line)
        if m:
            overrides[m.group(1)] = m.group(2)
        elif line.startswith("auto selects: "):
            auto = line.split(": ", 1)[1]
        elif line.strip() and "override failed its check" not in line:
            cells = [line[a:b].strip() for a, b in zip(starts, starts[1:] + [None])]
            rows[cells[0]] = dict(zip(titles, cells))
    return rows, overrides, auto


@pytest.mark.jax_child
def test_backends_table_matches_the_registry():
    """One row per known backend (runs here, hot path as backends.hot_path gives it, a reason
    where it cannot run), one "SPEC overrides:" line per runnable backend listing exactly its
    Ops overrides, and the backend auto selects: against the registry's answers as the
    process that learned them for collection had them (conftest's backend facts), so this
    worker builds no backend beside the command's ~0.5 GB."""
    from portable_bp.backends import get, specs

    r = run_cli("backends")
    assert r.returncode == 0, r.stderr
    rows, overrides, auto = backends_table(r.stdout)
    assert sorted(rows) == sorted(spec for spec, _ in specs())
    for spec, row in rows.items():
        ok, _ = probed(spec)
        assert row["runs here"] == ("yes" if ok else "no"), row
        if ok:
            names = facts(spec).overrides
            assert row["hot path"] == facts(spec).hot_path and row["reason it cannot run"] == "-"
            assert overrides[spec] == (", ".join(names) or "none (the Array API reference)")
        else:
            assert spec not in overrides and row["reason it cannot run"] not in ("", "-")
    assert rows["numpy"]["hot path"].startswith("numpy") and "jit" in rows.get("jax", {"hot path": "jit"})["hot path"]
    assert auto == get("auto").spec


@pytest.mark.parametrize("args", [(), ("--activation", "relu", "--loss", "mse"),
                                  ("--backend", "array_api_strict", "--loss", "binary_cross_entropy")])
def test_gradcheck_passes(args):
    """Backprop against finite differences on the CLI's random networks: PASS below 1e-7."""
    r = run_cli("gradcheck", "--hidden", "5", "5", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"max relative error: (\S+) \(threshold 1e-07\): PASS", r.stdout)
    assert m and float(m.group(1)) < 1e-7


def test_explain_checks_the_seed_network():
    """explain prints the 3-4-2 walk-through (weights, u, δ, gradients) and ends with OK."""
    r = run_cli("explain", "--backend", "numpy")
    assert r.returncode == 0, r.stderr
    for text in ("W(1) (4x3)", "W(2) (2x4)", "u(1)", "δ(2)", "δ(1)", "dL/dW(1)", "dL/db(2)"):
        assert text in r.stdout
    assert r.stdout.strip().endswith("OK")


def test_the_loop_formulas_match_finite_differences():
    """explain's reference (E3/E5 by loops) is itself right: compare with its own loss."""
    from portable_bp.explain import seed_network_by_loops

    rng = np.random.default_rng(1)
    W1, b1, W2, b2 = (rng.normal(0, 0.7, s).tolist() for s in ((4, 3), 4, (2, 4), 2))
    x, z = rng.normal(size=3).tolist(), rng.uniform(size=2).tolist()
    ref = seed_network_by_loops(W1, b1, W2, b2, x, z)
    eps = 1e-6
    for name, P, grad in (("W1", W1, ref["dW1"]), ("W2", W2, ref["dW2"])):
        for i in range(len(P)):
            for j in range(len(P[i])):
                old = P[i][j]
                P[i][j] = old + eps
                up = seed_network_by_loops(W1, b1, W2, b2, x, z)["loss"]
                P[i][j] = old - eps
                down = seed_network_by_loops(W1, b1, W2, b2, x, z)["loss"]
                P[i][j] = old
                assert abs((up - down) / (2 * eps) - grad[i][j]) < 1e-8, (name, i, j)
    for P, grad in ((b1, ref["db1"]), (b2, ref["db2"])):
        for i in range(len(P)):
            old = P[i]
            P[i] = old + eps
            up = seed_network_by_loops(W1, b1, W2, b2, x, z)["loss"]
            P[i] = old - eps
            down = seed_network_by_loops(W1, b1, W2, b2, x, z)["loss"]
            P[i] = old
            assert abs((up - down) / (2 * eps) - grad[i]) < 1e-8


# -- errors: exit 2, one line -------------------------------------------------------------
def test_unknown_flag_is_one_line():
    r = run_cli("train", "--bogus")
    assert_one_line_error(r, "--bogus")
    assert r.stdout == ""


@pytest.mark.parametrize("args, fragment", [
    (("train", "--hidden", "0"), "--hidden"),
    (("train", "--lr", "-1"), "--lr"),
    (("train", "--epochs", "two"), "--epochs"),
    (("train", "--backend", "nope"), "unknown backend 'nope'"),
    (("train", "--data", "missing.csv"), "missing.csv"),
    (("train", "--dtype", "float16"), "float16"),
    (("train", "--test-size", "1.5"), "--test-size"),
    (("train", "--dataset", "mnist"), "--dataset"),
    (("train", "--dataset", "digits", "--data", "x.csv"), "not allowed"),
    (("train", "--save", "no/such/folder/m.npz"), "does not exist"),
    (("train", "--dataset", "xor", "--resume", "--epochs", "1"), "--checkpoint"),
    (("evaluate", "missing.npz"), "missing.npz"),
    (("gradcheck", "--samples", "0"), "--samples"),
    (("nope",), "invalid choice"),
    ((), "required"),
])
def test_bad_values_are_one_line(tmp_path, args, fragment):
    """Every bad flag value or path: exit 2, one line naming the problem, no traceback."""
    assert_one_line_error(run_cli(*args, cwd=tmp_path), fragment)


def test_bad_file_contents_are_one_line(tmp_path):
    (tmp_path / "bad.csv").write_text("a,b,label\n1,2,0\n3,oops,1\n")
    assert_one_line_error(run_cli("train", "--data", "bad.csv", cwd=tmp_path), "bad.csv", "oops")


def test_continuous_target_with_cross_entropy_is_one_line(tmp_path):
    (tmp_path / "r.csv").write_text("".join(f"{i},{i * 0.37:.3f}\n" for i in range(20)))
    assert_one_line_error(run_cli("train", "--data", "r.csv", "--loss", "cross_entropy", cwd=tmp_path),
                          "--loss mse")


@pytest.mark.jax_child
@pytest.mark.skipif(CUPY_OK, reason="CuPy runs here")
def test_cupy_without_a_gpu_is_one_line_with_the_reason(tmp_path):
    line = assert_one_line_error(run_cli("train", "--backend", "cupy", cwd=tmp_path), "cupy")
    assert "cannot run here" in line and "Backends that run here: numpy, array_api_strict" in line
