"""The benchmark's portable_bp contenders: ``SPEC+ref`` times the Array API reference path."""

import os
import sys

import portable_bp as pbp

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:  # benchmarks/ is a program of the checkout, not an installed package
    sys.path.insert(0, REPO)
from benchmarks import configs as C, harness  # noqa: E402


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
    assert parse(["--pbp-backends", "numpy,numpy+ref"]).pbp_backends == ["numpy", "numpy+ref"]
