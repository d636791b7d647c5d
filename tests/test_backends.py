"""The backend registry: names, devices, probes, lazy loading and third-party backends."""

import subprocess
import sys

import numpy as np
import pytest

import portable_bp as pbp
from portable_bp import backends
from portable_bp.backends import Backend, BackendUnavailable


def test_import_loads_no_gpu_or_heavy_library():
    code = ("import sys, portable_bp as p; p.Network([2, 2], backend='numpy');"
            "print([m for m in ('cupy', 'torch', 'jax') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_core_modules_import_no_array_library():
    """Only portable_bp/backends/ and host-side I/O may name numpy, cupy, torch or jax."""
    import pathlib
    import re

    root = pathlib.Path(pbp.__file__).parent
    host_side = {"datasets.py", "checkpoint.py", "cli.py"}
    pattern = re.compile(r"^\s*(import|from)\s+(numpy|cupy|torch|jax)\b", re.M)
    offenders = [p.name for p in root.glob("*.py") if p.name not in host_side and pattern.search(p.read_text())]
    assert offenders == []


def test_available_lists_cpu_backends():
    names = backends.available()
    assert "numpy" in names and "array_api_strict" in names
    assert set(backends.known()) >= {"numpy", "cupy", "torch", "jax", "array_api_strict"}


def test_unknown_backend_lists_known_ones():
    with pytest.raises(ValueError, match=r"unknown backend 'mxnet'.*array_api_strict.*numpy.*'auto'"):
        backends.get("mxnet")
    with pytest.raises(TypeError):
        backends.get(3)


def test_get_is_cached_and_parses_devices():
    assert backends.get("numpy") is backends.get("numpy")
    b = backends.get("array_api_strict:device1")
    assert str(b.device).endswith("'device1')") and b.spec == "array_api_strict:device1"
    with pytest.raises(BackendUnavailable, match="unknown device 'nope'"):
        backends.get("array_api_strict:nope")
    with pytest.raises(BackendUnavailable, match="only the 'cpu' device"):
        backends.get("numpy:gpu")


def test_auto_falls_back_to_numpy_without_gpu():
    ok, _ = backends.probe("cupy")
    assert backends.get("auto").name == ("cupy" if ok else "numpy")


def test_unavailable_backend_says_why_and_how_to_fix():
    ok, reason = backends.probe("cupy")
    if ok:
        pytest.skip("a GPU is here")
    with pytest.raises(BackendUnavailable) as info:
        pbp.Network([2, 2], backend="cupy")
    msg = str(info.value)
    assert "cannot run here" in msg and reason.split(" (")[0] in msg and "pip install" in msg


def test_torch_cuda_unavailable_message():
    pytest.importorskip("torch")
    ok, _ = backends.probe("torch:cuda")
    if ok:
        pytest.skip("CUDA is here")
    with pytest.raises(BackendUnavailable, match="torch.*CUDA"):
        backends.get("torch:cuda:0")


def test_describe_reports_every_backend():
    rows = {r["spec"]: r for r in backends.describe()}
    assert rows["numpy"]["available"] and rows["numpy"]["device"] == "cpu"
    assert rows["numpy"]["hot_path"].startswith("fused")  # + ",gemm-sgd" with a bundled OpenBLAS
    assert rows["array_api_strict"]["hot_path"] == "array-api"
    for spec in ("cupy", "torch:cuda"):
        assert spec in rows
        if not rows[spec]["available"]:
            assert rows[spec]["reason"]


def _toy_factory(device):
    base = backends.get("numpy")
    return Backend(name="toy", xp=base.xp, device="cpu", spec="toy",
                   _to_numpy=np.asarray, _owns=lambda a: type(a) is np.ndarray)


def test_register_a_third_party_backend():
    backends.register("toy", _toy_factory)
    try:
        net = pbp.Network([2, 3, 1], backend="toy", dtype="float64", seed=0)
        assert net.backend.name == "toy" and "toy" in backends.available()
        ref = pbp.Network([2, 3, 1], backend="numpy", dtype="float64", seed=0)
        np.testing.assert_array_equal(net.forward([[1.0, 2.0]]), ref.forward([[1.0, 2.0]]))
        with pytest.raises(ValueError, match="already registered"):
            backends.register("toy", _toy_factory)
    finally:
        backends._FACTORIES.pop("toy", None)
        backends._cache.pop("toy", None)
    with pytest.raises(ValueError, match="backend name"):
        backends.register("a:b", _toy_factory)
    with pytest.raises(TypeError, match="callable"):
        backends.register("x", 3)


def test_entry_point_backends_are_found(tmp_path, monkeypatch):
    """A package declaring the entry-point group 'portable_bp.backends' is picked up lazily."""
    dist = tmp_path / "toybackend-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toybackend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[portable_bp.backends]\nepbackend = toyplugin:make\n")
    (tmp_path / "toyplugin.py").write_text(
        "import numpy as np\nfrom portable_bp.backends import Backend, get\n"
        "def make(device):\n    b = get('numpy')\n"
        "    return Backend(name='epbackend', xp=b.xp, device='cpu', spec='epbackend',"
        " _to_numpy=np.asarray, _owns=lambda a: type(a) is np.ndarray)\n")
    code = ("import sys, portable_bp as p; from portable_bp import backends as B;"
            "assert 'epbackend' in B.known(); assert 'toyplugin' not in sys.modules;"
            "n = p.Network([2, 1], backend='epbackend', seed=0); print(n.backend.name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={"PYTHONPATH": f"{tmp_path}:{':'.join(sys.path)}"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "epbackend"


def test_jax_float64_is_enabled_when_asked():
    pytest.importorskip("jax")
    net = pbp.Network([2, 2], backend="jax", dtype="float64", seed=0)
    assert str(net.params[0][0].dtype) == "float64"
    assert net.backend.mutable is False


def test_unavailable_backend_errors_do_not_accumulate_tracebacks():
    ok, _ = backends.probe("cupy")
    if ok:
        pytest.skip("a GPU is here")
    sizes = []
    for _ in range(3):
        try:
            backends.get("cupy")
        except BackendUnavailable as exc:
            tb, n = exc.__traceback__, 0
            while tb is not None:
                n, tb = n + 1, tb.tb_next
            sizes.append(n)
    assert sizes[0] == sizes[-1]


def test_hot_path_names_what_a_backend_adds():
    base = backends.get("numpy")
    plain = Backend(name="toy", xp=base.xp, device="cpu", spec="toy")
    assert backends.hot_path(plain) == "array-api"
    full = Backend(name="toy", xp=base.xp, device="cpu", spec="toy", fused=object(),
                   subtract_matmul=lambda W, D, A: W, subtract_colsum=lambda b, D: b,
                   compile=lambda f, **kw: f)
    assert backends.hot_path(full) == "fused,gemm-sgd,gemv-bias,jit"
    with_ce = Backend(name="toy", xp=base.xp, device="cpu", spec="toy", fused=base.fused)
    assert backends.hot_path(with_ce) == "fused,softmax-ce"
