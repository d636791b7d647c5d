"""``backends/cupy_kernels.py`` itself: its launches and cuBLAS calls on the CPU, against a
small stand-in ``cupy`` module, and its kernels on a GPU (``gpu`` marker; skipped with the
probe's reason where none answers).

The stand-in checks what CuPy would refuse or get wrong (kernel names, grid and block, the
order and types of the arguments, one dtype per type placeholder, the float/double source)
and runs the kernels' arithmetic from the formulas in NumPy, so that the module's real code
(layout tests, constants, the TF32 switch) runs here, and CupyOps over it passes the Ops
check with NumPy arrays.
"""

import importlib.util
import re
import sys
import types

import numpy as np
import pytest
from conftest import spec_cases

import portable_bp as pbp
from portable_bp.activations import ACTIVATIONS
from portable_bp.backends._check import checked
from portable_bp.backends.cupy_ops import CupyOps

ACTS = ["sigmoid", "tanh", "relu", "leaky_relu", "identity"]
XP = pbp.backends.get("numpy").xp


def _act(name):
    return ACTIVATIONS[name]


ELEMENTWISE = {  # name -> the kernel body, in NumPy, writing its outputs
    "pbp_output_delta": lambda a, z, s: (a - z) * s,
    "pbp_label_delta": lambda a, y, k, s: (a - (y == k)) * s,
}


class ElementwiseKernel:
    """cupy.ElementwiseKernel: checks the arguments against the declared parameters (outputs
    may be omitted; every argument of a placeholder type T or I shares one dtype)."""

    def __init__(self, in_params, out_params, body, name, preamble=""):
        self.params = [p.split() for p in (in_params + ", " + out_params).split(", ")]
        self.n_in, self.name = len(in_params.split(", ")), name

    def __call__(self, *args):
        assert len(args) in (self.n_in, len(self.params)), (self.name, len(args))
        bound = {}
        for (kind, _), arg in zip(self.params, args):
            if re.fullmatch("[A-Z]", kind):
                assert isinstance(arg, (np.ndarray, np.generic)), f"{self.name}: Python scalar for {kind}"
                assert bound.setdefault(kind, arg.dtype) == arg.dtype, f"{self.name}: mixed {kind}"
        if self.name.startswith("pbp_bias_"):
            b, U = args
            U[...] = _act(self.name[9:]).forward(np, U + b)
            return U
        if self.name.startswith("pbp_backward_"):
            A, G = args
            G[...] = _act(self.name[13:]).backward(np, A, G.copy())
            return G
        if self.name == "pbp_sgd":
            g, lr, p = args
            p -= lr * g
            return p
        if self.name == "pbp_momentum":
            g, lr, mu, nesterov, p, v = args
            v[...] = mu * v + g
            p -= lr * (g + mu * v if nesterov else v)
            return p, v
        return ELEMENTWISE[self.name](*args).astype(args[0].dtype)


class RawKernel:
    """cupy.RawKernel: checks each launch against the kernel's C signature and runs its
    arithmetic on the arguments it was given."""

    launches: list = []
    fail_compile = False

    def __init__(self, code, name):
        assert f"void {name}(" in code
        self.code, self.name = code, name

    def compile(self):
        if RawKernel.fail_compile:
            raise RuntimeError("nvrtc: compilation failed")

    def __call__(self, grid, block, args):
        RawKernel.launches.append(self.name)
        X = args[0]
        assert ("typedef float T;" in self.code) == (X.dtype == np.float32)
        if self.name == "pbp_softmax_ce":
            U, y, A, row_loss, k = args
            assert isinstance(k, np.int32) and k == U.shape[1] and y.dtype == np.int64
            assert grid == (U.shape[0],) and block[0] in (32, 64, 128, 256)
            assert block[0] >= min(k, 256) and (block[0] == 32 or block[0] // 2 < k)
            s = U - U.max(axis=1, keepdims=True)
            S = np.exp(s).sum(axis=1, keepdims=True)
            A[...], row_loss[...] = np.exp(s) / S, np.log(S[:, 0]) - s[np.arange(len(y)), y]
            return
        kind, act = self.name[4:-2].split("_", 1)
        width, n = 16 // X.itemsize, args[2]
        assert isinstance(n, np.uint32) and n * width == X.size
        assert block == (256,) and grid == (min(-(-int(n) // 256), 65535),)
        if kind == "bias":  # (U, B, n, cols): vector i takes bias vector i % cols
            U, B, _, cols = args
            assert isinstance(cols, np.uint32) and cols * width == B.size
            Uv = U.reshape(-1, width)
            Uv[...] = _act(act).forward(np, Uv + B.reshape(-1, width)[np.arange(n) % cols])
        else:  # (A, G, n)
            A, G, _ = args
            G[...] = _act(act).backward(np, A, G.copy())


def gemv(transa, alpha, a, x, beta, y):  # cupy.cublas.gemv: y <- alpha op(a) x + beta y, returns None
    y[...] = alpha * ((a.T if transa == "T" else a) @ x) + beta * y


def gemm(transa, transb, a, b, out=None, alpha=1.0, beta=0.0):  # cupy.cublas.gemm
    product = (a.T if transa == "T" else a) @ (b.T if transb == "T" else b)
    out[...] = alpha * product + beta * out
    return out


@pytest.fixture
def kernels(monkeypatch):
    """A private copy of cupy_kernels.py bound to the stand-in ``cupy`` (the real module,
    where a GPU test imported it, stays as it is)."""
    cublas = types.SimpleNamespace(gemv=gemv, gemm=gemm)
    device = types.SimpleNamespace(id=0)
    fake = types.SimpleNamespace(
        ElementwiseKernel=ElementwiseKernel, RawKernel=RawKernel, cublas=cublas, empty=np.empty,
        empty_like=np.empty_like, arange=np.arange, ones=np.ones,
        cuda=types.SimpleNamespace(Device=lambda: device, device=types.SimpleNamespace(get_cublas_handle=lambda: 7)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(sys.modules, "cupy.cublas", cublas)
    monkeypatch.setattr(RawKernel, "launches", [])
    path = pbp.backends.__path__[0] + "/cupy_kernels.py"
    spec = importlib.util.spec_from_file_location("portable_bp.backends._cupy_kernels_stand_in", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "_address", lambda X: X.__array_interface__["data"][0])
    return module


def test_cupy_ops_over_the_real_kernels_pass_the_ops_check(kernels):
    """Every launch path the check's probes reach (vector and element-wise kernels, labels
    and one-hot rows, softmax rows over one thread block, both cuBLAS calls) computes the
    reference's numbers."""
    ops = CupyOps(XP, kernels.Kernels(), kernels.gemm_subtract, kernels.gemv_subtract)
    assert checked(ops, np.asarray, np.asarray).dropped == {}
    assert {"pbp_softmax_ce", "pbp_bias_relu_v", "pbp_backward_tanh_v"} <= set(RawKernel.launches)


def test_softmax_ce_launches_one_block_per_row_and_refuses_other_layouts(kernels):
    k = kernels.Kernels()
    rng = np.random.default_rng(4)
    for dtype in (np.float32, np.float64):
        for cols in (1, 33, 300):
            U, y = (rng.standard_normal((6, cols)) * 3).astype(dtype), rng.integers(0, cols, 6)
            A, total = k.softmax_cross_entropy(U, y)
            assert A.dtype == dtype and A.shape == U.shape and np.ndim(total) == 0
    assert RawKernel.launches == ["pbp_softmax_ce"] * 6
    U, y = np.ones((6, 4)), np.zeros(6, dtype=np.int64)
    for bad in ((U[:, ::2], y), (U, y.astype(np.int32)), (U, y[:5]), (U.astype(np.float16), y),
                (U[:0], y[:0]), (U[None], y)):
        assert k.softmax_cross_entropy(*bad) is None
    assert len(RawKernel.launches) == 6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vector_kernels_run_only_on_aligned_contiguous_rows(kernels, dtype):
    """16-byte vector kernels for C-contiguous, 16-byte aligned rows whose length is a
    multiple of the vector width; the element-wise kernels for every other layout."""
    k, width = kernels.Kernels(), 16 // np.dtype(dtype).itemsize
    rng = np.random.default_rng(5)
    for name in ACTS:
        f = ACTIVATIONS[name]
        for cols, vector in ((3 * width, True), (3 * width + 1, False)):
            U, b = (rng.standard_normal((7, cols)) * 3).astype(dtype), rng.standard_normal(cols).astype(dtype)
            G = rng.standard_normal((7, cols)).astype(dtype)
            want_a = f.forward(np, U + b)
            want_g = f.backward(np, want_a, G.copy())
            RawKernel.launches.clear()
            assert k.bias_activation(U, b, name) is U and k.activation_backward(U, G, name) is G
            np.testing.assert_allclose(U, want_a, rtol=1e-6)
            np.testing.assert_allclose(G, want_g, rtol=1e-6)
            assert RawKernel.launches == ([f"pbp_bias_{name}_v", f"pbp_backward_{name}_v"] if vector else [])
    cols = 4 * width
    aligned = np.zeros(6 * cols + width, dtype=dtype)
    assert aligned.__array_interface__["data"][0] % 16 == 0
    layouts = {"misaligned": np.zeros(6 * cols + 1, dtype=dtype)[1:].reshape(6, cols),
               "not contiguous": np.zeros((6, 2 * cols), dtype=dtype)[:, ::2],
               "aligned": aligned[width:].reshape(6, cols)}
    for label, U in layouts.items():
        RawKernel.launches.clear()
        k.bias_activation(U, np.ones(cols, dtype=dtype), "relu")
        assert (RawKernel.launches == ["pbp_bias_relu_v"]) == (label == "aligned"), label
        np.testing.assert_array_equal(U, 1)


def test_vector_kernels_that_do_not_compile_leave_the_element_wise_kernels(kernels, monkeypatch):
    monkeypatch.setattr(RawKernel, "fail_compile", True)
    k = kernels.Kernels()
    U, b = np.arange(24, dtype=np.float32).reshape(3, 8), np.arange(8, dtype=np.float32)
    for _ in range(2):
        np.testing.assert_array_equal(k.bias_activation(U.copy(), b, "identity"), U + b)
    assert k._vectors == {("f", 0): None} and RawKernel.launches == []


def test_gemv_subtract_calls_cublas_with_its_signature_and_refuses_other_layouts(kernels):
    rng = np.random.default_rng(3)
    b, D = rng.standard_normal(5), rng.standard_normal((7, 9))
    want = b - 0.5 * D[:, :5].sum(axis=0)
    Dc = np.ascontiguousarray(D[:, :5])
    assert kernels.gemv_subtract(b, Dc, 0.5) is b
    np.testing.assert_allclose(b, want, rtol=1e-13)
    assert kernels.gemv_subtract(b, D[:, 2:7], 0.5) is None                      # D not contiguous
    assert kernels.gemv_subtract(np.zeros(10)[::2], Dc, 0.5) is None            # b not contiguous
    np.testing.assert_allclose(b, want, rtol=1e-13)
    ones = kernels._constant(np.ones, 7, Dc.dtype)
    kernels.gemv_subtract(b, Dc, 0.5)
    assert kernels._constant(np.ones, 7, Dc.dtype) is ones  # the ones are made once


def test_gemm_subtract_follows_cupys_tf32_setting(kernels, monkeypatch):
    """Under CUPY_TF32=1 CuPy's own float32 products run in TF32, but cupy.cublas.gemm calls
    cublasSgemm, which follows the cuBLAS handle's math mode: with ``tf32_products`` the
    step sets TF32 math for its float32 call only and restores the mode after, also when
    the call fails; float64 and tf32_products=False never touch it."""
    state = {"mode": 0, "seen": []}
    libs = types.ModuleType("cupy_backends.cuda.libs")
    libs.cublas = types.SimpleNamespace(CUBLAS_TF32_TENSOR_OP_MATH=3, getMathMode=lambda h: state["mode"],
                                        setMathMode=lambda h, mode: state.update(mode=mode))
    for name in ("cupy_backends", "cupy_backends.cuda"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "cupy_backends.cuda.libs", libs)

    def recording_gemm(*args, **kwargs):
        state["seen"].append((args[2].dtype, state["mode"]))
        if kwargs["out"].shape == (1, 1):
            raise RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED")
        return gemm(*args, **kwargs)

    monkeypatch.setattr(kernels.cupy.cublas, "gemm", recording_gemm)
    rng = np.random.default_rng(6)
    for tf32 in (True, False):
        for dtype in (np.float32, np.float64):
            W, D, A = (rng.standard_normal(s).astype(dtype) for s in ((3, 4), (5, 3), (5, 4)))
            want = W - 0.5 * D.T @ A
            assert kernels.gemm_subtract(W, D, A, 0.5, tf32_products=tf32) is W
            np.testing.assert_allclose(W, want, rtol=1e-5)
    assert state["seen"] == [(np.float32, 3), (np.float64, 0), (np.float32, 0), (np.float64, 0)]
    with pytest.raises(RuntimeError):
        kernels.gemm_subtract(*(np.ones(s, dtype=np.float32) for s in ((1, 1), (2, 1), (2, 1))), 1.0,
                              tf32_products=True)
    assert state["mode"] == 0 and state["seen"][-1] == (np.float32, 3)


def test_tf32_reads_cupys_compute_type(kernels, monkeypatch):
    linalg = types.SimpleNamespace(COMPUTE_TYPE_TF32=7, get_compute_type=lambda dt: compute["type"])
    core = types.ModuleType("cupy._core")
    core._routines_linalg = linalg
    monkeypatch.setitem(sys.modules, "cupy._core", core)
    monkeypatch.setitem(sys.modules, "cupy._core._routines_linalg", linalg)
    compute = {"type": 7}
    assert kernels.tf32() is True
    compute["type"] = 1
    assert kernels.tf32() is False
    monkeypatch.setitem(sys.modules, "cupy._core", None)  # a CuPy without the switch
    assert kernels.tf32() is False


# -- on a GPU --------------------------------------------------------------------------------
TOL = {"float32": 1e-5, "float64": 1e-12}


@pytest.mark.parametrize("spec", spec_cases(["cupy"]))
def test_cupy_backend_keeps_every_kernel_after_its_check(spec):
    """On the GPU every CupyOps override passes the check (else the hot path would quietly
    lose it; ``portable-bp backends`` would name it)."""
    ops = pbp.backends.get(spec).ops
    assert isinstance(ops, CupyOps) and ops.dropped == {}
    assert ops.overrides() == ["affine", "affine_activation", "output_loss", "output_delta", "backprop_delta",
                               "subtract_product", "subtract_colsum", "sgd", "momentum", "adam"]


@pytest.mark.parametrize("spec", spec_cases(["cupy"]))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cupy_vector_kernels_equal_the_element_wise_kernels(spec, dtype):
    """The 16-byte vector kernels against the one-element-per-thread kernels, on small rows,
    on (4096, 4096) and, for ReLU in float32, on more vectors than one grid covers (65535
    blocks of 256 threads: the grid-stride loop's second lap)."""
    import cupy

    be = pbp.backends.get(spec)
    k, tol = be.ops._kernels, TOL[dtype]
    with be.activate():
        cupy.random.seed(7)
        for act in ACTS:
            for m, cols in [(3, 4), (33, 128), (4096, 4096)] + [(16400, 4096)] * (act == "relu" and dtype == "float32"):
                U = cupy.random.standard_normal((m, cols), dtype=dtype) * 3
                b = cupy.random.standard_normal(cols, dtype=dtype)
                G = cupy.random.standard_normal((m, cols), dtype=dtype)
                want_a = k._bias_act[act](b, U.copy())
                want_g = k._act_backward[act](want_a, G.copy())
                assert k.bias_activation(U, b, act) is U and k.activation_backward(U, G, act) is G
                assert k._vectors[(np.dtype(dtype).char, cupy.cuda.Device().id)] is not None
                assert cupy.allclose(U, want_a, rtol=tol, atol=tol) and cupy.allclose(G, want_g, rtol=tol, atol=tol)
                del U, G, want_a, want_g


@pytest.mark.parametrize("spec", spec_cases(["cupy"]))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m,cols", [(1, 1), (5, 3), (33, 10), (7, 300), (4, 1000)])
def test_cupy_softmax_cross_entropy_kernel_equals_the_loss_table(spec, dtype, m, cols):
    """One block per row, several thread strides where a row is longer than 256, logits
    that overflow an unshifted exp."""
    from portable_bp import losses

    be = pbp.backends.get(spec)
    rng = np.random.default_rng(cols)
    u = rng.standard_normal((m, cols)) * 30
    u[0] += 800.0
    U, y = be.asarray(u, dtype), be.asarray(rng.integers(0, cols, m))
    with be.activate():
        A, total = be.ops._kernels.softmax_cross_entropy(U, y)
        want_A, want_total = losses.softmax_cross_entropy(be.xp, U, y)
    tol = TOL[dtype]
    np.testing.assert_allclose(be.to_numpy(A), be.to_numpy(want_A), rtol=tol, atol=tol)
    assert float(total) == pytest.approx(float(want_total), rel=tol, abs=tol)
    assert str(A.dtype) == dtype and tuple(A.shape) == (m, cols)
