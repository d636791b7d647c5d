"""The backend registry: names, devices, probes, lazy loading, third-party backends, and
what it reports (specs, available, describe, hot_path)."""

import subprocess
import sys

import numpy as np
import pytest

import portable_bp as pbp
from portable_bp import backends
from portable_bp.backends import Backend, BackendUnavailable
from portable_bp.ops import InPlaceOps, Ops

# what runs here is listed by building every backend (available(), describe(), and the
# message of every get() that fails): on the worker that holds JAX (conftest)
pytestmark = pytest.mark.every_backend


def test_import_loads_no_gpu_or_heavy_library():
    code = ("import sys, portable_bp as p; p.Network([2, 2], backend='numpy');"
            "print([m for m in ('cupy', 'torch', 'jax') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_core_modules_import_no_array_library():
    """Only portable_bp/backends/ and the modules that say they are host-side (file I/O, the
    command line, the printed walk-through) may name numpy, cupy, torch or jax; the train
    package included."""
    import pathlib
    import re

    root = pathlib.Path(pbp.__file__).parent
    # host side: files, the command line (its tables, predictions and ONNX export), the walk-through
    host_side = {"checkpoint.py", "checkpoint_record.py", "cli.py", "cli_train.py", "cli_data.py", "cli_predict.py",
                 "export.py", "explain.py"}
    # file readers, bounded I/O, the scikit-learn adapter, host staging of communication
    host_packages = {"datasets", "_safe_io", "sklearn", "distributed"}
    pattern = re.compile(r"^\s*(import|from)\s+(numpy|cupy|torch|jax)\b", re.M)
    modules = [p for p in root.rglob("*.py") if "backends" not in p.parts]
    assert any(p.parent.name == "train" for p in modules)
    offenders = [str(p.relative_to(root)) for p in modules
                 if p.name not in host_side and not host_packages & set(p.relative_to(root).parts)
                 and pattern.search(p.read_text())]
    assert offenders == []


def test_specs_available_and_known():
    """specs(): every known backend and the device variants worth trying, with whether
    they run on a GPU (what the test fixture parametrizes over); available(): those that
    run here."""
    specs = dict(backends.specs())
    assert specs["numpy"] is False and specs["array_api_strict"] is False and specs["jax"] is False
    assert specs["cupy"] is True and specs["torch:cuda"] is True and specs["torch"] is False
    assert set(backends.known()) >= {"numpy", "cupy", "torch", "jax", "array_api_strict"}
    assert set(backends.known()) <= set(specs)
    names = backends.available()
    assert "numpy" in names and "array_api_strict" in names
    assert names == [spec for spec in specs if backends.probe(spec)[0]]


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
    # and what can run instead: every backend that runs here, in the order `available` gives
    runs_here = backends.available()
    assert "numpy" in runs_here and "cupy" not in runs_here and info.value.runs_here == tuple(runs_here)
    assert msg.endswith(f". Backends that run here: {', '.join(runs_here)}")


def test_probe_and_auto_do_not_list_what_runs_here(monkeypatch):
    """Code that handles the failure itself (probe, auto, a fall-back) gets the reason alone:
    listing what runs here probes every backend, which it has no need of."""
    calls = []
    monkeypatch.setattr(backends, "available", lambda: calls.append(1) or ["numpy"])
    backends.register("flaky2", lambda device: (_ for _ in ()).throw(BackendUnavailable("flaky2", "gone")))
    try:
        assert backends.probe("flaky2") == (False, "gone") and calls == []
        with pytest.raises(BackendUnavailable, match=r"^backend 'flaky2' cannot run here: gone. "
                                                    r"Backends that run here: numpy$"):
            backends.get("flaky2")
        assert calls == [1]
    finally:
        backends.unregister("flaky2")


def test_torch_cuda_unavailable_message():
    pytest.importorskip("torch")
    ok, _ = backends.probe("torch:cuda")
    if ok:
        pytest.skip("CUDA is here")
    with pytest.raises(BackendUnavailable, match="torch.*CUDA"):
        backends.get("torch:cuda:0")


def test_describe_reports_every_backend():
    rows = {r["spec"]: r for r in backends.describe()}
    assert list(rows) == [spec for spec, _ in backends.specs()]
    for spec, row in rows.items():
        assert set(row) >= {"spec", "available", "reason", "device", "version", "hot_path", "dropped"}
        if row["available"]:
            be = backends.get(spec)
            assert row["hot_path"] == backends.hot_path(be) and row["dropped"] == be.ops.dropped == {}
            assert row["device"] == str(be.device) and row["reason"] == ""
        else:
            assert row["reason"] == backends.probe(spec)[1] != "" and row["hot_path"] is None
    numpy_ops = backends.get("numpy").ops
    assert rows["numpy"]["device"] == "cpu"
    assert rows["numpy"]["hot_path"] == f"{numpy_ops.name} ({len(numpy_ops.overrides())} overrides)"
    assert rows["array_api_strict"]["hot_path"] == "array-api-inplace (8 overrides)"


def _toy_factory(device):
    base = backends.get("numpy")
    return Backend(name="toy", xp=base.xp, device="cpu", spec="toy",
                   _to_numpy=np.asarray, _owns=lambda a: type(a) is np.ndarray)


def test_register_a_third_party_backend(registered_backend):
    registered_backend("toy", _toy_factory)
    net = pbp.Network([2, 3, 1], backend="toy", dtype="float64", seed=0)
    assert net.backend.name == "toy" and "toy" in backends.available() and ("toy", False) in backends.specs()
    assert type(net.ops) is Ops and backends.hot_path(net.backend) == "array-api"
    ref = pbp.Network([2, 3, 1], backend="numpy", dtype="float64", seed=0)
    np.testing.assert_array_equal(net.forward([[1.0, 2.0]]), ref.forward([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="already registered"):
        backends.register("toy", _toy_factory)
    first = backends.get("toy")
    backends.register("toy", _toy_factory, replace=True)  # replacing drops the cached instance
    assert backends.get("toy") is not first and backends.get("toy") is backends.get("toy")
    for name in ("a:b", "", "auto"):
        with pytest.raises(ValueError, match="backend name"):
            backends.register(name, _toy_factory)
    with pytest.raises(TypeError, match="callable"):
        backends.register("x", 3)


def test_a_factory_that_fails_or_returns_something_else(registered_backend):
    def unavailable(device):
        raise BackendUnavailable("flaky", "no such hardware", "buy some")

    registered_backend("flaky", unavailable)
    assert backends.probe("flaky") == (False, "no such hardware (buy some)")
    assert "flaky" not in backends.available()
    with pytest.raises(BackendUnavailable, match="backend 'flaky' cannot run here: no such hardware. To fix: buy some"):
        pbp.Network([2, 1], backend="flaky")
    registered_backend("notabackend", lambda device: object())
    with pytest.raises(TypeError, match="factory for backend 'notabackend' returned object, not a Backend"):
        backends.get("notabackend")


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
    """The Ops' name and its number of overrides, plus jit where the step is compiled;
    array-api when the backend adds nothing to the reference."""
    xp = backends.get("numpy").xp
    assert backends.hot_path(Backend(name="toy", xp=xp, device="cpu", spec="toy")) == "array-api"
    jit = Backend(name="toy", xp=xp, device="cpu", spec="toy", compile=lambda f, **kw: f)
    assert backends.hot_path(jit) == "jit"
    in_place = Backend(name="toy", xp=xp, device="cpu", spec="toy", ops=InPlaceOps(xp))
    assert backends.hot_path(in_place) == "array-api-inplace (8 overrides)"
    both = Backend(name="toy", xp=xp, device="cpu", spec="toy", ops=InPlaceOps(xp), compile=lambda f, **kw: f)
    assert backends.hot_path(both) == "array-api-inplace (8 overrides); jit"
    assert backends.hot_path(backends.get("numpy")).startswith(("numpy+blas (", "numpy ("))


def test_a_backend_without_ops_gets_the_reference():
    xp = backends.get("numpy").xp
    be = Backend(name="toy", xp=xp, device="cpu", spec="toy")
    assert type(be.ops) is Ops and be.ops.xp is xp
    assert be.reference_ops is be.reference_ops and be.reference_ops is not be.ops


def test_library_of_names_an_arrays_library():
    assert backends.library_of(np.ones(2)) == "numpy"
    assert backends.library_of(backends.get("array_api_strict").asarray([1.0])) == "array_api_strict"
    torch = pytest.importorskip("torch")
    assert backends.library_of(torch.ones(2)) == "torch"


def test_unregister_forgets_a_registered_backend():
    made = []

    def factory(device):
        made.append(device)
        return backends.get("numpy")

    backends.register("mine", factory)
    assert backends.get("mine") is backends.get("numpy") and made == [None]
    backends.unregister("mine")
    with pytest.raises(ValueError, match="unknown backend 'mine'"):
        backends.get("mine")
    with pytest.raises(KeyError, match="no backend 'mine'"):
        backends.unregister("mine")


def test_to_float_reads_a_scalar_exactly_on_every_backend(xp_case):
    """``Backend.to_float`` (fit's one read per epoch, the loss) is the value as a Python
    float, NaN and infinities included, whichever route the library takes to the host."""
    for value in (0.1234567890123, -2.5e-30, float("inf"), float("nan")):
        arr = xp_case.xp.sum(xp_case.asarray([value]))
        got = xp_case.backend.to_float(arr)
        want = float(np.asarray(xp_case.backend.to_numpy(arr)))
        assert type(got) is float and (got == want or (np.isnan(got) and np.isnan(want)))
        assert got == (float(np.float32(value)) if xp_case.dtype == "float32" else value) or np.isnan(value)


def test_jax_moves_host_data_as_a_copy_without_compiling():
    """Host data reaches JAX by a transfer of a copy: no program compiled per new shape and
    dtype (``jnp.asarray(host, device=...)`` compiles two), and the caller's array can be
    written afterwards without the backend's array changing; ``copy`` compiles none either."""
    jax = pytest.importorskip("jax")
    if not backends.probe("jax")[0]:
        pytest.skip(backends.probe("jax")[1])
    backend = backends.get("jax")
    compiled, listening = [], [True]

    def listener(event, duration, **kwargs):
        if listening[0] and event.endswith("backend_compile_duration"):
            compiled.append(kwargs.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listener)
    try:
        for n in (3, 5, 6, 11):  # (n, 13): shapes no other test moves (were their programs
            # already compiled, the old route would compile nothing here either)
            buffer = np.empty(n * 13 + 16, np.float32)  # float32 at a 64-byte boundary: what
            start = (-buffer.ctypes.data % 64) // 4     # device_put would wrap without a copy
            host = buffer[start:start + n * 13].reshape(n, 13)
            host[...] = 1.5
            moved = [backend.asarray(host, "float32"), backend.asarray(host), backend.asarray(np.arange(n)),
                     backend.asarray(host.tolist(), backend.dtype("float32"))]
            copied = backend.copy(moved[0])
            host[0, 0] = 99.0
            assert [backend.to_numpy(a)[0, 0] for a in moved[:2] + moved[3:] + [copied]] == [1.5] * 4
            canonical = jax.dtypes.canonicalize_dtype  # int64 and float64 as x64 has them
            assert [a.dtype for a in moved] == [backend.dtype("float32"), canonical(np.float32),
                                                canonical(np.int64), backend.dtype("float32")]
            assert all(backend.owns(a) for a in moved + [copied])
    finally:
        listening[0] = False
    assert compiled == []


def test_probing_leaves_the_ops_check_to_the_first_get(registered_backend):
    """Whether a backend runs here (probe, available, the list in an error) builds it but
    checks none of its Ops: that check (seconds for JAX and torch) runs once, at the first
    get, and still drops an override that disagrees."""
    calls = []

    class Disagreeing(Ops):
        def sgd(self, P, G, lr):
            calls.append(lr)
            return super().sgd(P, G, lr) + 1.0

    xp = backends.get("numpy").xp
    registered_backend("unchecked", lambda device: Backend(name="unchecked", xp=xp, device="cpu", spec="unchecked",
                                                           ops=Disagreeing(xp)))
    def missing(device):
        raise BackendUnavailable("missing", "no such hardware")

    registered_backend("missing", missing)
    assert backends.probe("unchecked") == (True, "") and "unchecked" in backends.available()
    with pytest.raises(BackendUnavailable, match="Backends that run here: .*unchecked"):
        backends.get("missing")
    assert calls == []
    backend = backends.get("unchecked")
    assert calls and "Disagreeing.sgd" in backend.ops.dropped["sgd"] and "sgd" not in backend.ops.overrides()
    checked = len(calls)
    assert backends.get("unchecked") is backend and len(calls) == checked
