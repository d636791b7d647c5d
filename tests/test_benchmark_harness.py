"""The benchmark's portable_bp contenders: ``SPEC+ref`` times the Array API reference path."""

import os
import sys
import types

import pytest

import portable_bp as pbp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # benchmarks/ is a program of the checkout, not an installed package
    sys.path.insert(0, REPO)
from benchmarks import configs as C  # noqa: E402
from benchmarks import harness  # noqa: E402


def test_ref_variant_runs_fit_with_the_kernels_off(monkeypatch):
    cfg = C.with_steps(C.CONFIGS["B"], 2)
    X, Y = C.make_data(cfg, "float32")
    params = C.init_params(cfg, "float32")
    contenders, skipped = harness.build_contenders(
        "cpu", cfg, "float32", X, Y, params, keep=lambda n: n.startswith("portable_bp"),
        pbp_specs=["numpy", "numpy+ref"])
    assert [c.name for c in contenders] == ["portable_bp[numpy]", "portable_bp[numpy+ref]"], skipped
    assert [c.libs for c in contenders] == [("portable_bp", "numpy")] * 2
    seen = []
    fit = pbp.Network.fit

    def recording(net, *args, **kwargs):
        seen.append(net.fused_kernels)
        return fit(net, *args, **kwargs)

    monkeypatch.setattr(pbp.Network, "fit", recording)
    for c in contenders:
        c.setup()()
    assert seen == [True, False]


def test_unknown_variant_is_refused_by_the_command_line():
    import pytest

    from benchmarks.__main__ import parse

    with pytest.raises(SystemExit):
        parse(["--pbp-backends", "numpy,numpy+foo"])
    assert parse(["--pbp-backends", "numpy,numpy+ref,jax+each"]).pbp_backends == ["numpy", "numpy+ref", "jax+each"]


def test_a_round_of_several_epochs_is_one_fit_and_each_variant_a_fit_per_epoch(monkeypatch):
    """Where a round times k epochs, portable_bp trains them as one ``fit(epochs=k)`` (one
    training run, as a user trains); its ``+each`` variant calls ``fit(epochs=1)`` k times;
    a contender without ``epochs`` (the hand-written loops) is called k times; every value
    is still the time of one epoch."""
    from benchmarks import timing

    cfg = C.with_steps(C.CONFIGS["A"], 4)
    X, Y = C.make_data(cfg, "float32")
    contenders, skipped = harness.build_contenders(
        "cpu", cfg, "float32", X, Y, C.init_params(cfg, "float32"),
        keep=lambda n: n.startswith("portable_bp") or n == "numpy (tight)", pbp_specs=["numpy", "numpy+each"])
    assert [c.name for c in contenders] == ["portable_bp[numpy]", "portable_bp[numpy+each]", "numpy (tight)"]
    epochs_per_fit = []
    fit = pbp.Network.fit
    monkeypatch.setattr(pbp.Network, "fit",
                        lambda net, *a, **k: epochs_per_fit.append(k["epochs"]) or fit(net, *a, **k))
    monkeypatch.setattr(timing, "epochs_per_round", lambda runs: 5)
    times, failed = timing.time_block(contenders, 2, lambda s: None)
    assert failed == {} and all(len(ts) == 2 for ts in times.values())
    # warm-up fits (one epoch each), then per round: one fit of 5 epochs and five of one,
    # in the round's rotated order
    assert sorted(epochs_per_fit) == sorted([1, 1] + [5, 1, 1, 1, 1, 1] * 2)


def test_gpu_profile_summary_counts_kernels_per_step_and_orders_by_time():
    from benchmarks.gpu_profile import summarise

    events = [("gemm", 30.0), ("relu", 5.0), ("gemm", 40.0), ("copy", 1.0), ("relu", 4.0)]
    s = summarise(events, wall_s=100e-6, steps=2, top=2)
    assert s["events_per_step"] == 2.5
    assert s["busy_ms"] == 0.08 and s["wall_ms"] == 0.1 and abs(s["busy_fraction"] - 0.8) < 1e-12
    assert s["top"] == [{"name": "gemm", "count": 2, "ms": 0.07}, {"name": "relu", "count": 2, "ms": 0.009}]


def test_gpu_profile_runs_on_the_cpu_and_writes_its_json(tmp_path):
    """``python -m benchmarks.gpu_profile --device cpu``: the same program on NumPy and CPU
    torch (the GPU run is the lent machine's), in a child process (it pins its CPUs)."""
    import json
    import subprocess

    import pytest

    pytest.importorskip("torch")
    out = tmp_path / "profile.json"
    run = subprocess.run([sys.executable, "-m", "benchmarks.gpu_profile", "--device", "cpu",
                          "--configs", "B", "--steps", "2", "--top", "3", "--cprofile",
                          "--json", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(out.read_text())
    assert set(report["B"]) == {"portable_bp[numpy]", "torch eager"}
    assert report["B"]["torch eager"]["events_per_step"] > 0
    assert "function calls" in report["B"]["portable_bp[numpy]"]["cprofile"]
    assert "ms/step" in run.stdout
    bad = subprocess.run([sys.executable, "-m", "benchmarks.gpu_profile", "--configs", "A"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown config" in bad.stderr


def test_rounds_of_short_epochs_repeat_the_epoch_for_every_contender_alike():
    """An epoch shorter than MIN_ROUND_S is timed several times per round (the same count
    for every contender, each value the time of one epoch); a long one once."""
    import time

    from benchmarks import timing

    calls = {"fast": 0, "slow": 0}

    def contender(name, seconds):
        def run():
            calls[name] += 1
            time.sleep(seconds)
        return types.SimpleNamespace(name=name, setup=lambda: run)

    times, failed = timing.time_block([contender("fast", 0.0), contender("slow", 0.0)], 2, lambda s: None)
    assert failed == {} and calls["fast"] == calls["slow"] > 2 * 2
    assert all(len(ts) == 2 for ts in times.values())
    calls.update(fast=0, slow=0)
    timing.time_block([contender("fast", timing.MIN_ROUND_S), contender("slow", timing.MIN_ROUND_S)], 2,
                      lambda s: None)
    assert calls == {"fast": 4, "slow": 4}  # warm-up, calibration, two rounds of one epoch


def test_compare_instructions_says_what_it_needs_before_running_anything(monkeypatch, capsys):
    """Without valgrind, or with no epoch to count, the instruction comparison stops with one
    usage line naming what is missing (exit 2), before it exports or runs a commit."""
    from benchmarks import compare_instructions

    monkeypatch.setattr(compare_instructions.shutil, "which", lambda name: None)
    with pytest.raises(SystemExit) as info:
        compare_instructions.main(["--base", "HEAD"])
    assert info.value.code == 2 and "valgrind is not on the PATH" in capsys.readouterr().err
    monkeypatch.setattr(compare_instructions.shutil, "which", lambda name: "/usr/bin/valgrind")
    with pytest.raises(SystemExit) as info:
        compare_instructions.main(["--base", "HEAD", "--epochs", "0"])
    assert info.value.code == 2 and "--epochs must be at least 1, got 0" in capsys.readouterr().err
