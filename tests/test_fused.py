"""The hot path's backend kernels against the Array API reference path.

Two kinds: element-wise kernels (``Backend.fused``: NumPy's in-place ufuncs, CuPy's CUDA
kernels) and plain SGD's one-call step W -= Dᵀ A (``Backend.subtract_matmul``: NumPy's own
BLAS, PyTorch's ``addmm_``, cuBLAS). Each must give the numbers of the reference path
(``net.fused_kernels = False``), and fit must really take it. GPU cases carry the ``gpu``
marker and skip with the probe's reason where no GPU answers.
"""

import tracemalloc

import numpy as np
import pytest

import portable_bp as pbp
from portable_bp.activations import ACTIVATIONS
from portable_bp.backends import numpy_blas, probe

from conftest import make_data, spec_cases

ACTS = ["sigmoid", "tanh", "relu", "leaky_relu", "identity"]


FUSED_SPECS = spec_cases(["numpy", "cupy"])                           # element-wise kernels
PRODUCT_SPECS = spec_cases(["numpy", "torch", "cupy", "torch:cuda"])  # subtract_matmul
TOL = {"float32": 1e-5, "float64": 1e-12}


def _np(backend, a):
    return np.asarray(backend.to_numpy(a), dtype=np.float64)


def _product_backend(spec):
    """The backend, skipping where it has no one-call product (a NumPy without a bundled
    OpenBLAS: conda/MKL or Accelerate builds keep the two-step path)."""
    be = pbp.backends.get(spec)
    if be.subtract_matmul is None:
        pytest.skip(f"{spec} has no one-call SGD product here (no bundled OpenBLAS)")
    return be


# -- element-wise kernels ---------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 4), (80, 64)])  # below and above the zero-row size
@pytest.mark.parametrize("act", ACTS)
def test_numpy_kernels_equal_the_activation_table_bit_for_bit(act, shape):
    """Same formulas, same order of operations: the in-place versions give the same bits."""
    be = pbp.backends.get("numpy")
    rng = np.random.default_rng(0)
    for dtype in ("float32", "float64"):
        U = (3 * rng.standard_normal(shape)).astype(dtype)
        b = rng.standard_normal(shape[1]).astype(dtype)
        G = rng.standard_normal(shape).astype(dtype)
        ref = ACTIVATIONS[act]
        want_a = ref.forward(be.xp, U + b)
        got_a = be.fused.bias_activation(U.copy(), b, act)
        np.testing.assert_array_equal(got_a, want_a)
        want_g = ref.backward(be.xp, want_a, G.copy())
        np.testing.assert_array_equal(be.fused.activation_backward(want_a, G.copy(), act), want_g)


@pytest.mark.parametrize("spec", FUSED_SPECS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("loss", ["mse", "cross_entropy", "binary_cross_entropy"])
@pytest.mark.parametrize("hidden", [(9, 7), (16, 8)])  # CuPy: element-wise and vector kernels
def test_fused_kernels_equal_reference_path(spec, dtype, act, loss, hidden):
    net = pbp.Network([6, *hidden, 4], activation=act, loss=loss, backend=spec, dtype=dtype, seed=1)
    assert net.backend.fused is not None
    ref = net.to(spec)
    ref.fused_kernels = False
    X, Z = make_data(33, 6, 4, loss)
    l1, g1 = net.loss_and_grads(X, Z)
    l2, g2 = ref.loss_and_grads(X, Z)
    tol = TOL[dtype]
    assert l1 == pytest.approx(l2, rel=tol)
    for a, b in zip([x for p in g1 for x in p], [x for p in g2 for x in p]):
        np.testing.assert_allclose(_np(net.backend, a), _np(ref.backend, b), rtol=tol, atol=tol)
    np.testing.assert_allclose(_np(net.backend, net.forward(X)), _np(ref.backend, ref.forward(X)),
                               rtol=tol, atol=tol)


@pytest.mark.parametrize("spec", spec_cases(["cupy"]))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cupy_vector_kernels_pass_their_check_and_equal_the_element_wise_kernels(spec, dtype):
    """On the GPU: the 16-byte vector kernels pass their first-use check (else the hot path
    would quietly lose them) and equal the one-element-per-thread kernels, on small rows,
    on config E's (4096, 4096) and, for ReLU in float32, on more vectors than one grid
    covers (65535 blocks of 256 threads: the grid-stride loop's second lap)."""
    import cupy

    be = pbp.backends.get(spec)
    ops = be.fused
    tol = TOL[dtype]
    with be.activate():
        cupy.random.seed(7)
        for act in ACTS:
            shapes = [(3, 4), (33, 128), (4096, 4096)]
            if act == "relu" and dtype == "float32":
                shapes.append((16400, 4096))
            for m, k in shapes:
                U = cupy.random.standard_normal((m, k), dtype=dtype) * 3
                b = cupy.random.standard_normal(k, dtype=dtype)
                G = cupy.random.standard_normal((m, k), dtype=dtype)
                want_a = ops._bias_act[act](b, U.copy())
                want_g = ops._act_backward[act](want_a, G.copy())
                got_a = ops.bias_activation(U, b, act)
                got_g = ops.activation_backward(got_a, G, act)
                assert ops._vectors[(np.dtype(dtype).char, cupy.cuda.Device().id)] is not None
                assert got_a is U and got_g is G
                assert cupy.allclose(got_a, want_a, rtol=tol, atol=tol)
                assert cupy.allclose(got_g, want_g, rtol=tol, atol=tol)
                del U, G, want_a, want_g


@pytest.mark.parametrize("spec", FUSED_SPECS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m,k", [(1, 1), (5, 3), (33, 10), (7, 300), (4, 1000)])
def test_fused_softmax_cross_entropy_equals_the_loss_table(spec, dtype, m, k):
    """The backend's softmax + cross-entropy for labels (NumPy: in place, bit for bit;
    CuPy: one kernel, several thread strides where k > 256) against losses.py, with
    logits large enough to overflow an unshifted exp."""
    from portable_bp import losses

    be = pbp.backends.get(spec)
    if be.fused.softmax_cross_entropy is None:
        pytest.skip(f"{spec}: the fused softmax + cross-entropy failed its start-up check")
    rng = np.random.default_rng(k)
    u = rng.standard_normal((m, k)) * 30
    u[0] += 800.0
    U = be.asarray(u, dtype)
    y = be.asarray(rng.integers(0, k, m), None)
    with be.activate():
        A, total = be.fused.softmax_cross_entropy(U, y)
        want_A, want_total = losses.softmax_cross_entropy(be.xp, U, y)
    if spec == "numpy":
        np.testing.assert_array_equal(A, want_A)
        assert total == want_total
    else:
        tol = TOL[dtype]
        np.testing.assert_allclose(_np(be, A), _np(be, want_A), rtol=tol, atol=tol)
        assert float(total) == pytest.approx(float(want_total), rel=tol, abs=tol)
    assert str(A.dtype).endswith(dtype)
    assert tuple(A.shape) == (m, k) and np.ndim(be.to_numpy(total)) == 0


def _cupy_kernels_on_a_stand_in(monkeypatch):
    """A private copy of ``backends/cupy_kernels.py`` bound to a NumPy stand-in for the
    ``cupy`` module (its ``cublas.gemv`` and ``gemm`` with CuPy's signatures), so that the CuPy start-up
    checks and wrappers run on the CPU; the real module, where a GPU test imported it,
    stays as it is, in sys.modules and on the package."""
    import importlib.util
    import sys
    import types

    def gemv(transa, alpha, a, x, beta, y):  # cupy.cublas.gemv: y <- alpha op(a) x + beta y
        y[...] = alpha * ((a.T if transa == "T" else a) @ x) + beta * y

    def gemm(transa, transb, a, b, out=None, alpha=1.0, beta=0.0):  # cupy.cublas.gemm
        product = (a.T if transa == "T" else a) @ (b.T if transb == "T" else b)
        if out is None:
            return alpha * product
        out[...] = alpha * product + beta * out
        return out

    launches = []

    class RawKernel:  # runs the kernel's arithmetic with the launch's own arguments
        def __init__(self, code, name):
            self.code, self.name = code, name

        def __call__(self, grid, block, args):
            assert f"void {self.name}(" in self.code
            launches.append(self.name)
            if self.name == "pbp_softmax_ce":
                U, y, A, row_loss, k = args
                assert isinstance(k, np.int32) and k == U.shape[1]
                assert grid == (U.shape[0],) and block[0] in (32, 64, 128, 256)
                assert ("typedef float T;" in self.code) == (U.dtype == np.float32)
                A[...], row_loss[...] = _simulated_softmax_ce_rows(U, y, block[0])
                return
            kind, act = self.name[len("pbp_"):-len("_v")].split("_", 1)
            X, n = args[0], args[2]
            width = 16 // X.itemsize
            assert ("typedef float T;" in self.code) == (X.dtype == np.float32)
            assert isinstance(n, np.uint32) and n * width == X.size
            assert block == (256,) and grid == (min(-(-int(n) // 256), 65535),)
            if kind == "bias":  # (U, B, n, cols): vector i takes bias vector i % cols
                U, B, _, cols = args
                assert isinstance(cols, np.uint32) and cols * width == B.size
                Uv, Bv = U.reshape(-1, width), B.reshape(-1, width)
                Uv[...] = ACTIVATIONS[act].forward(np, Uv + Bv[np.arange(n) % cols])
            else:  # (A, G, n)
                A, G, _ = args
                Gv = G.reshape(-1, width)
                Gv[...] = ACTIVATIONS[act].backward(np, A.reshape(-1, width), Gv.copy())

    class ElementwiseKernel:  # the one-element-per-thread kernels, by name
        def __init__(self, in_params, out_params, body, name, preamble=""):
            self.name = name

        def __call__(self, *args):
            if self.name.startswith("pbp_bias_"):
                b, U = args
                U[...] = ACTIVATIONS[self.name[len("pbp_bias_"):]].forward(np, U + b)
                return U
            if self.name.startswith("pbp_backward_"):
                A, G = args
                G[...] = ACTIVATIONS[self.name[len("pbp_backward_"):]].backward(np, A, G.copy())
                return G
            raise NotImplementedError(self.name)

    cublas = types.SimpleNamespace(gemv=gemv, gemm=gemm)
    fake = types.SimpleNamespace(asarray=lambda a, dtype=None: np.asarray(a, dtype=dtype),
                                 asnumpy=np.asarray, ones=np.ones, cublas=cublas,
                                 empty=np.empty, empty_like=np.empty_like, arange=np.arange,
                                 RawKernel=RawKernel, ElementwiseKernel=ElementwiseKernel,
                                 cuda=types.SimpleNamespace(Device=lambda: types.SimpleNamespace(id=0)))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setitem(sys.modules, "cupy.cublas", cublas)
    path = pbp.backends.__path__[0] + "/cupy_kernels.py"
    spec = importlib.util.spec_from_file_location("portable_bp.backends._cupy_kernels_on_a_stand_in", path)
    kernels = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(kernels)
    monkeypatch.setattr(kernels, "_address", lambda X: X.__array_interface__["data"][0])
    kernels.launches = launches  # the RawKernels launched, by name
    return kernels


def test_cupy_one_call_steps_pass_their_checks_with_cupys_cublas_signatures(monkeypatch):
    """The CuPy steps call cupy.cublas.gemm(transa, transb, a, b, out, alpha, beta) and
    gemv(transa, alpha, a, x, beta, y) (which returns nothing) correctly: with stand-ins of
    those signatures both pass their start-up checks, and the bias step updates b in place,
    also on a column slice (the non-contiguous fallback)."""
    import contextlib

    kernels = _cupy_kernels_on_a_stand_in(monkeypatch)
    assert kernels.subtract_matmul(contextlib.nullcontext()) is not None
    op = kernels.subtract_colsum(contextlib.nullcontext())
    assert op is not None
    rng = np.random.default_rng(3)
    b, D = rng.standard_normal(5), rng.standard_normal((7, 9))
    want = b - D[:, 2:7].sum(axis=0) - D[:, :5].sum(axis=0)
    out = op(b, np.ascontiguousarray(D[:, 2:7]))
    assert out is b
    op(b, D[:, :5])
    np.testing.assert_allclose(b, want, rtol=1e-12)


def test_cupy_softmax_ce_wrapper_launches_the_kernel_as_written(monkeypatch):
    """FusedOps' wrapper around the CUDA kernel, on the CPU: a stand-in RawKernel checks
    the launch (grid of one block per row, a power-of-two block, the arguments in the
    kernel's order and types, the float/double source) and runs the kernel's arithmetic;
    the start-up check passes and the result equals losses.py. Layouts the kernel was not
    written for get None (the Array API path)."""
    import contextlib

    from portable_bp import losses

    kernels = _cupy_kernels_on_a_stand_in(monkeypatch)
    ops = kernels.FusedOps(contextlib.nullcontext())
    assert ops.softmax_cross_entropy is not None  # passed its start-up check
    xp = pbp.backends.get("numpy").xp
    rng = np.random.default_rng(4)
    for dtype in (np.float32, np.float64):
        U = (rng.standard_normal((6, 300)) * 3).astype(dtype)
        y = rng.integers(0, 300, 6)
        A, total = ops.softmax_cross_entropy(U, y)
        want_A, want_total = losses.softmax_cross_entropy(xp, U, y)
        np.testing.assert_allclose(A, want_A, rtol=1e-5)
        assert total == pytest.approx(want_total, rel=1e-5)
    assert ops.softmax_cross_entropy(U[:, ::2], y) is None               # not contiguous
    assert ops.softmax_cross_entropy(U, y.astype(np.int32)) is None      # not int64
    assert ops.softmax_cross_entropy(U, y[:5]) is None                   # labels for 5 rows
    assert ops.softmax_cross_entropy(U.astype(np.float16), y) is None    # no kernel


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cupy_vector_kernels_launch_as_written_and_keep_the_plain_kernels_for_other_layouts(
        monkeypatch, dtype):
    """FusedOps' 16-byte vector kernels (bias + f, ⊙ f'), on the CPU: a stand-in RawKernel
    checks each launch (kernel name, grid, vector counts as uint32, the float/double source)
    and runs the kernel's arithmetic. They pass their first-use check, give activations.py's
    numbers, and are launched only for C-contiguous, 16-byte aligned rows whose length is a
    multiple of the vector width; other layouts take the element-wise kernels."""
    import contextlib

    kernels = _cupy_kernels_on_a_stand_in(monkeypatch)
    ops = kernels.FusedOps(contextlib.nullcontext())
    rng = np.random.default_rng(5)
    width = 16 // np.dtype(dtype).itemsize
    ops.bias_activation(np.zeros((2, width), dtype=dtype), np.zeros(width, dtype=dtype), "relu")
    assert ops._vectors[(np.dtype(dtype).char, 0)] is not None  # passed its first-use check
    for name in ACTS:
        f = ACTIVATIONS[name]
        for k, vector in ((3 * width, True), (3 * width + 1, False)):
            U, b = (rng.standard_normal((7, k)) * 3).astype(dtype), rng.standard_normal(k).astype(dtype)
            G = rng.standard_normal((7, k)).astype(dtype)
            want_a = f.forward(np, U + b)
            want_g = f.backward(np, want_a, G.copy())
            del kernels.launches[:]
            A = ops.bias_activation(U, b, name)
            assert A is U
            np.testing.assert_allclose(A, want_a, rtol=1e-6)
            assert ops.activation_backward(A, G, name) is G
            np.testing.assert_allclose(G, want_g, rtol=1e-6)
            assert kernels.launches == ([f"pbp_bias_{name}_v", f"pbp_backward_{name}_v"] if vector else [])
    assert list(ops._vectors) == [(np.dtype(dtype).char, 0)]  # checked once, for this dtype
    k = 4 * width
    aligned = np.zeros(6 * k + width, dtype=dtype)  # NumPy aligns data to 16 bytes or more
    assert aligned.__array_interface__["data"][0] % 16 == 0
    layouts = {"misaligned": np.zeros(6 * k + 1, dtype=dtype)[1:].reshape(6, k),
               "not contiguous": np.zeros((6, 2 * k), dtype=dtype)[:, ::2],
               "aligned": aligned[width:].reshape(6, k)}
    for label, U in layouts.items():
        del kernels.launches[:]
        ops.bias_activation(U, np.ones(k, dtype=dtype), "relu")
        assert (kernels.launches == ["pbp_bias_relu_v"]) == (label == "aligned"), label
        np.testing.assert_array_equal(U, 1)


@pytest.mark.parametrize("fault", ["wrong column", "raises"])
def test_cupy_vector_kernels_are_refused_when_their_check_fails(monkeypatch, fault):
    """A vector kernel that indexes the bias wrongly, or that does not compile, fails its
    first-use check: the element-wise kernels do the work, for that dtype, from then on."""
    import contextlib

    kernels = _cupy_kernels_on_a_stand_in(monkeypatch)
    ops = kernels.FusedOps(contextlib.nullcontext())
    real = ops._launch

    def faulty(kernel, n, args):
        if fault == "raises":
            raise RuntimeError("nvrtc: compilation failed")
        if kernel.name.startswith("pbp_bias_"):
            U, B, n32, cols = args
            args = (U, B[::-1].copy(), n32, cols)  # the bias vectors in the wrong columns
        real(kernel, n, args)

    monkeypatch.setattr(ops, "_launch", faulty)
    U, b = np.arange(24, dtype=np.float32).reshape(3, 8), np.arange(8, dtype=np.float32)
    A = ops.bias_activation(U.copy(), b, "identity")
    np.testing.assert_array_equal(A, U + b)
    assert ops._vectors == {("f", 0): None}


def test_cupy_gemm_step_follows_cupys_tf32_setting(monkeypatch):
    """Under CUPY_TF32=1 CuPy's own float32 products run in TF32, but cupy.cublas.gemm calls
    cublasSgemm, which follows the cuBLAS handle's math mode: the step sets TF32 math for
    its float32 call only and restores the mode after, also when the call fails; without
    TF32 the plain step is taken. (Stand-ins for CuPy's cublas module and switch.)"""
    import contextlib
    import sys
    import types

    kernels = _cupy_kernels_on_a_stand_in(monkeypatch)
    state = {"mode": 0, "seen": []}
    libs = types.ModuleType("cupy_backends.cuda.libs")
    libs.cublas = types.SimpleNamespace(
        CUBLAS_TF32_TENSOR_OP_MATH=3, getMathMode=lambda h: state["mode"],
        setMathMode=lambda h, mode: state.update(mode=mode))
    for name, module in (("cupy_backends", types.ModuleType("cupy_backends")),
                         ("cupy_backends.cuda", types.ModuleType("cupy_backends.cuda")),
                         ("cupy_backends.cuda.libs", libs)):
        monkeypatch.setitem(sys.modules, name, module)
    kernels.cupy.cuda.device = types.SimpleNamespace(get_cublas_handle=lambda: 7)
    gemm = kernels.cupy.cublas.gemm

    def recording_gemm(*args, **kwargs):
        state["seen"].append((args[2].dtype, state["mode"]))
        if kwargs["out"].shape == (1, 1):
            raise RuntimeError("CUBLAS_STATUS_EXECUTION_FAILED")
        return gemm(*args, **kwargs)

    monkeypatch.setattr(kernels.cupy.cublas, "gemm", recording_gemm)
    monkeypatch.setattr(kernels, "_tf32", lambda: True)
    op = kernels.subtract_matmul(contextlib.nullcontext())
    assert op is kernels._gemm_subtract_tf32  # passed the start-up check
    state["seen"].clear()
    rng = np.random.default_rng(6)
    for dtype in (np.float32, np.float64):
        W, D, A = (rng.standard_normal(s).astype(dtype) for s in ((3, 4), (5, 3), (5, 4)))
        want = W - D.T @ A
        op(W, D, A)
        np.testing.assert_allclose(W, want, rtol=1e-5)
    assert state["seen"] == [(np.float32, 3), (np.float64, 0)] and state["mode"] == 0
    with pytest.raises(RuntimeError):
        op(*(np.ones(s, dtype=np.float32) for s in ((1, 1), (2, 1), (2, 1))))
    assert state["mode"] == 0
    monkeypatch.setattr(kernels, "_tf32", lambda: False)
    assert kernels.subtract_matmul(contextlib.nullcontext()) is kernels._gemm_subtract


def _simulated_softmax_ce(bug=None):
    """The CUDA kernel's arithmetic in NumPy, in the input's dtype, thread by thread
    (blockDim as the kernel picks it); ``bug`` injects what a faulty reduction would do."""
    def run(U, y):
        block = 32
        while block < U.shape[1] and block < 256:
            block *= 2
        A, losses = _simulated_softmax_ce_rows(U, y, block, bug)
        return A, losses.sum(dtype=U.dtype)
    return run


def _simulated_softmax_ce_rows(U, y, block, bug=None):
    """(A, each row's loss) as the kernel computes them with ``block`` threads per row."""
    with np.errstate(all="ignore"):  # the faulty variants overflow
        m, k = U.shape
        threads = np.arange(k) % block
        A = np.empty_like(U)
        losses = np.empty(m, dtype=U.dtype)
        for r in range(m):
            u = U[r]
            mx = u[threads == 0].max() if bug == "thread-0 max" else u.max()
            e = np.exp(u - mx)
            partial = np.array([e[threads == t].sum(dtype=U.dtype) for t in range(block)])
            if bug == "lost partial sum":
                partial = partial[:-1]
            if bug == "lost upper half":
                partial = partial[:block // 2]
            S = partial.sum(dtype=U.dtype)
            A[r] = e / S
            losses[r] = np.log(S) - (u[y[r]] - mx)
        return A, losses


@pytest.mark.parametrize("bug", [None, "lost partial sum", "lost upper half", "thread-0 max",
                                 "raises"])
def test_cupy_softmax_ce_start_up_check_accepts_the_kernel_and_catches_faults(monkeypatch, bug):
    """The CuPy kernel's start-up check, run on the CPU against a NumPy simulation of the
    kernel (a stand-in cupy module): the kernel's own float32 rounding passes, and a
    reduction that drops a thread's partial sum or takes the wrong max, or a kernel that
    fails to launch, is refused (the backend then keeps the Array API path)."""
    import types

    kernels = _cupy_kernels_on_a_stand_in(monkeypatch)

    def failing(U, y):
        raise RuntimeError("nvrtc: compilation failed")

    ops = types.SimpleNamespace(
        softmax_cross_entropy=failing if bug == "raises" else _simulated_softmax_ce(bug))
    assert kernels._softmax_ce_agrees(ops) is (bug is None)


def test_forward_takes_the_fused_softmax_cross_entropy_for_labels_only(monkeypatch):
    net = pbp.Network([4, 6, 3], activation="relu", loss="cross_entropy", seed=0)
    calls = []
    original = net.backend.fused.softmax_cross_entropy
    monkeypatch.setattr(net.backend.fused, "softmax_cross_entropy",
                        lambda U, y: calls.append(y.shape) or original(U, y))
    X, y = make_data(10, 4, 3, "cross_entropy")
    net.loss_and_grads(X, y)
    assert calls == [(10,)]
    net.loss_and_grads(X, np.eye(3)[y])  # one-hot rows: the Array API path
    net.fused_kernels = False
    net.loss_and_grads(X, y)
    assert calls == [(10,)]


@pytest.mark.parametrize("spec", FUSED_SPECS)
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam"])
def test_fused_training_equals_reference_training(spec, optimizer):
    net = pbp.Network([8, 16, 3], activation="relu", loss="cross_entropy", backend=spec,
                      dtype="float64", seed=2)
    ref = net.to(spec)
    ref.fused_kernels = False
    X, y = make_data(100, 8, 3, "cross_entropy")
    h1 = net.fit(X, y, epochs=3, batch_size=16, optimizer=optimizer, lr=0.05)
    h2 = ref.fit(X, y, epochs=3, batch_size=16, optimizer=optimizer, lr=0.05)
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=1e-12)
    for (W1, _), (W2, _) in zip(net.params, ref.params):
        np.testing.assert_allclose(_np(net.backend, W1), _np(ref.backend, W2), rtol=1e-10, atol=1e-12)


def test_numpy_sgd_and_momentum_kernels_equal_the_optimizer():
    """The optimizer kernels (reached by direct update(..., kernels=...) calls) against the
    Array API update, for SGD, momentum and Nesterov."""
    from portable_bp.optim import SGD

    ops = pbp.backends.get("numpy").fused
    rng = np.random.default_rng(3)
    for momentum, nesterov in ((0.0, False), (0.9, False), (0.9, True)):
        opt = SGD(0.1, momentum=momentum, nesterov=nesterov)
        params = [rng.standard_normal((4, 3)), rng.standard_normal(4)]
        a, b = [p.copy() for p in params], [p.copy() for p in params]
        sa, sb = opt.init(a), opt.init(b)
        for _ in range(3):
            grads = [rng.standard_normal(p.shape) for p in params]
            a, sa = opt.update(a, [g.copy() for g in grads], sa, 0.1, kernels=ops)
            b, sb = opt.update(b, [g.copy() for g in grads], sb, 0.1)
        for x, y in zip(a, b):
            np.testing.assert_allclose(x, y, rtol=1e-15, atol=1e-15)


# -- plain SGD's one-call step ----------------------------------------------------------
@pytest.mark.parametrize("spec", PRODUCT_SPECS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(7, 5, 6), (300, 200, 64)])  # (n_out, n_in, batch)
def test_subtract_matmul_is_w_minus_dt_a_in_place(spec, dtype, shape):
    be = _product_backend(spec)
    n_out, n_in, m = shape
    rng = np.random.default_rng(0)
    W = rng.standard_normal((n_out, n_in)).astype(dtype)
    D = rng.standard_normal((m, n_out)).astype(dtype)
    A = rng.standard_normal((m + 3, n_in + 5)).astype(dtype)
    want = W - D.T @ A[2:m + 2, 1:n_in + 1]
    Wd, Dd, Ad = be.asarray(W), be.asarray(D), be.asarray(A)
    # rows of a wider array, as fit's batches of a column-sliced X are: leading dimension > n_in
    out = be.subtract_matmul(Wd, Dd, Ad[2:m + 2, 1:n_in + 1])
    assert out is Wd or out.data_ptr() == Wd.data_ptr()  # in place (torch returns the tensor)
    tol = TOL[dtype] * 10
    np.testing.assert_allclose(_np(be, Wd), want, rtol=tol, atol=tol * np.abs(want).max())


COLSUM_SPECS = spec_cases(["torch", "cupy", "torch:cuda"])  # subtract_colsum


@pytest.mark.parametrize("spec", COLSUM_SPECS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(1, 3), (16, 12), (512, 1024)])  # (batch, n_out)
def test_subtract_colsum_is_b_minus_row_sums_in_place(spec, dtype, shape):
    be = pbp.backends.get(spec)
    assert be.subtract_colsum is not None  # passed its start-up check
    rng = np.random.default_rng(2)
    b, D = rng.standard_normal(shape[1]).astype(dtype), rng.standard_normal(shape).astype(dtype)
    want = b - 2 * D.astype(np.float64).sum(axis=0)
    bd = be.asarray(b.copy())  # (torch on the CPU shares NumPy's memory)
    for _ in range(2):  # the second call reuses the cached ones
        be.subtract_colsum(bd, be.asarray(D))
    tol = TOL[dtype] * 10
    np.testing.assert_allclose(_np(be, bd), want, rtol=tol, atol=tol * np.sqrt(shape[0]))


def test_subtract_colsum_start_up_check_refuses_wrong_ops():
    from portable_bp.backends._base import subtract_colsum_agrees

    def right(b, D):
        b -= D.sum(axis=0)
        return b

    def not_in_place(b, D):
        return b - D.sum(axis=0)

    def wrong_axis(b, D):
        b -= D[:, :1].sum() * 0 + D.sum(axis=0)[::-1]
        return b

    def raises(b, D):
        raise RuntimeError("cuBLAS: not initialized")

    assert subtract_colsum_agrees(right)
    for op in (not_in_place, wrong_axis, raises, lambda b, D: b):
        assert not subtract_colsum_agrees(op), op


def test_numpy_blas_takes_odd_layouts_and_dtypes_through_numpy():
    """Layouts BLAS cannot take directly fall back to W -= D.T @ A, still in place."""
    op = numpy_blas.make_subtract_matmul(numpy_blas._gemm_functions(numpy_blas._library_paths()[0]),
                                         min_weights=0) if numpy_blas._library_paths() else None
    if op is None:
        pytest.skip("this NumPy bundles no OpenBLAS")
    rng = np.random.default_rng(1)
    cases = {
        "W transposed (not C-contiguous)": (rng.standard_normal((6, 5)).T, rng.standard_normal((4, 5)),
                                             rng.standard_normal((4, 6))),
        "D with a column stride": (rng.standard_normal((5, 6)), rng.standard_normal((4, 10))[:, ::2],
                                    rng.standard_normal((4, 6))),
        "mixed dtypes": (rng.standard_normal((5, 6)), rng.standard_normal((4, 5)).astype("float32"),
                         rng.standard_normal((4, 6))),
        "float16": tuple(rng.standard_normal(s).astype("float16") for s in ((5, 6), (4, 5), (4, 6))),
    }
    for what, (W, D, A) in cases.items():
        want = W - D.T @ A
        got = op(W, D, A)
        assert got is W, what
        np.testing.assert_allclose(W, want, rtol=1e-3 if W.dtype == np.float16 else 1e-6, err_msg=what)


def test_numpy_blas_is_found_in_numpy_wheels():
    if not numpy_blas._library_paths():
        pytest.skip("this NumPy bundles no OpenBLAS (a conda/MKL/Accelerate build): the plain path runs")
    assert numpy_blas.find() is not None
    assert pbp.backends.get("numpy").subtract_matmul is not None


def test_numpy_blas_is_refused_when_missing_or_wrong(monkeypatch):
    monkeypatch.setattr(numpy_blas, "_library_paths", lambda: [])
    assert numpy_blas.find() is None
    monkeypatch.setattr(numpy_blas, "_library_paths", lambda: ["/nonexistent/libopenblas.so"])
    assert numpy_blas.find() is None  # cannot be loaded
    # a library whose gemm computes something else fails the self-check
    monkeypatch.setattr(numpy_blas, "_gemm_functions",
                        lambda path: {np.dtype(np.float32): lambda *a: None, np.dtype(np.float64): lambda *a: None})
    assert numpy_blas.find() is None


@pytest.mark.parametrize("name", ["numpy", "torch"])
def test_fused_environment_switch_turns_the_kernels_off(monkeypatch, name):
    import importlib

    if not probe(name)[0]:
        pytest.skip(f"{name} unavailable")
    mod = importlib.import_module(f"portable_bp.backends.{name}_")
    default = mod.make()
    monkeypatch.setenv("PORTABLE_BP_FUSED", "0")
    be = mod.make()
    assert be.fused is None and be.subtract_matmul is None
    assert name != "torch" or default.subtract_matmul is not None
    assert name != "numpy" or default.fused is not None


@pytest.mark.parametrize("spec", PRODUCT_SPECS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_plain_sgd_fit_takes_the_one_call_step_and_matches_the_reference(monkeypatch, spec, dtype):
    """fit with plain SGD calls subtract_matmul once per layer and batch (no gradient array
    is made) and trains exactly as the reference path does; other optimizers never call it."""
    _product_backend(spec)
    net = pbp.Network([8, 16, 12, 3], activation="tanh", loss="cross_entropy", backend=spec,
                      dtype=dtype, seed=5)
    ref = net.to(spec)
    ref.fused_kernels = False
    X, y = make_data(70, 8, 3, "cross_entropy")  # 70 = 4 batches of 16 and one of 6
    calls = []
    original = net.backend.subtract_matmul

    def counting(W, D, A):
        calls.append((tuple(W.shape), tuple(D.shape), tuple(A.shape)))
        return original(W, D, A)

    monkeypatch.setattr(net.backend, "subtract_matmul", counting)
    colsum_calls = []
    if net.backend.subtract_colsum is not None:  # torch, cupy: the bias step in one call too
        original_colsum = net.backend.subtract_colsum
        monkeypatch.setattr(net.backend, "subtract_colsum",
                            lambda b, D: colsum_calls.append(tuple(D.shape)) or original_colsum(b, D))
    h1 = net.fit(X, y, epochs=2, batch_size=16, lr=0.1)
    assert len(calls) == 3 * 5 * 2
    assert len(colsum_calls) == (0 if spec == "numpy" else 3 * 5 * 2)
    assert calls[:3] == [((3, 12), (16, 3), (16, 12)), ((12, 16), (16, 12), (16, 16)), ((16, 8), (16, 16), (16, 8))]
    assert ref.backend.subtract_matmul is counting  # the same (cached) backend: the switch is per network
    h2 = ref.fit(X, y, epochs=2, batch_size=16, lr=0.1)
    assert len(calls) == 30  # fused_kernels=False: the Array API path
    tol = TOL[dtype] * 10
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=tol)
    for (W1, b1), (W2, b2) in zip(net.params, ref.params):
        np.testing.assert_allclose(_np(net.backend, W1), _np(ref.backend, W2), rtol=tol, atol=tol)
        np.testing.assert_allclose(_np(net.backend, b1), _np(ref.backend, b2), rtol=tol, atol=tol)
    net.fit(X, y, epochs=1, batch_size=16, optimizer="momentum", lr=0.1)
    net.fit(X, y, epochs=1, batch_size=16, optimizer=pbp.optim.SGD(0.1, weight_decay=1e-3))
    assert len(calls) == 30


def test_sgd_subclass_keeps_its_own_update():
    """A subclass of SGD may change update(); fit must call it rather than the one-call step."""
    seen = []

    class Logged(pbp.optim.SGD):
        def update(self, *args, **kwargs):
            seen.append(1)
            return super().update(*args, **kwargs)

    net = pbp.Network([4, 5, 2], loss="cross_entropy", backend="numpy", seed=0)
    X, y = make_data(12, 4, 2, "cross_entropy")
    net.fit(X, y, epochs=1, batch_size=4, optimizer=Logged(0.1))
    assert len(seen) == 3


def test_one_call_step_makes_no_gradient_arrays():
    """Peak memory of a plain-SGD epoch on NumPy: the reference path holds every layer's
    weight gradient at the end of backprop; the one-call step holds none of them."""
    if pbp.backends.get("numpy").subtract_matmul is None:
        pytest.skip("no BLAS one-call step with this NumPy")
    sizes = [400, 300, 300, 10]
    X, y = make_data(64, 400, 10, "cross_entropy")
    peaks = {}
    for fused in (True, False):
        net = pbp.Network(sizes, activation="relu", loss="cross_entropy", backend="numpy", seed=0)
        net.fused_kernels = fused
        Xd = net.backend.asarray(X, "float32")
        net.fit(Xd, y, epochs=1, batch_size=64, lr=0.01)  # warm-up: caches, one-hot
        tracemalloc.start()
        net.fit(Xd, y, epochs=1, batch_size=64, lr=0.01)
        peaks[fused] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    weights = sum(4 * a * b for a, b in zip(sizes[:-1], sizes[1:]))  # float32 bytes
    assert peaks[False] - peaks[True] > 0.75 * weights, peaks  # measured: 0.85


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_blas_step_in_fit_matches_the_reference(dtype):
    """Layers large enough for the BLAS call itself (not the small-layer fallback), fed the
    rows of a column-sliced X (BLAS leading dimension wider than the row): fit's trajectory
    equals the reference path's."""
    be = _product_backend("numpy")
    sizes = [200, 220, 160, 4]  # 44000 and 35200 weights: above numpy_blas.MIN_WEIGHTS
    assert sizes[0] * sizes[1] >= numpy_blas.MIN_WEIGHTS and sizes[1] * sizes[2] >= numpy_blas.MIN_WEIGHTS
    wide, y = make_data(90, 260, 4, "cross_entropy", seed=6)
    X = be.asarray(wide, dtype)[:, 30:230]  # no copy: rows 1040 (2080) bytes apart, 200 used
    assert not X.flags.c_contiguous and numpy_blas._rows_contiguous(X, X.itemsize)  # BLAS takes it
    net = pbp.Network(sizes, activation="relu", loss="cross_entropy", dtype=dtype, seed=6)
    ref = net.to("numpy")
    ref.fused_kernels = False
    calls, original = [], be.subtract_matmul

    def counting(W, D, A):
        calls.append(A.strides[0] // A.itemsize)
        return original(W, D, A)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(be, "subtract_matmul", counting)
        h1 = net.fit(X, y, epochs=2, batch_size=32, lr=0.05, shuffle=False)
    assert calls[:3] == [160, 220, 260]  # the first layer reads X in place
    h2 = ref.fit(X, y, epochs=2, batch_size=32, lr=0.05, shuffle=False)
    tol = TOL[dtype] * 10
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=tol)
    for (W1, b1), (W2, b2) in zip(net.params, ref.params):
        np.testing.assert_allclose(W1, W2, rtol=tol, atol=tol)
        np.testing.assert_allclose(b1, b2, rtol=tol, atol=tol)


def test_switching_kernels_off_during_fit_takes_effect_at_the_next_fit():
    """A callback that sets fused_kernels = False mid-fit must not break the running fit."""
    net = pbp.Network([6, 8, 3], loss="cross_entropy", backend="numpy", seed=0)
    X, y = make_data(40, 6, 3, "cross_entropy")

    def off(net, epoch, logs):
        net.fused_kernels = False

    h = net.fit(X, y, epochs=3, batch_size=8, lr=0.1, callbacks=[off])
    assert len(h.history["loss"]) == 3 and all(np.isfinite(h.history["loss"]))
    net.fit(X, y, epochs=1, batch_size=8, lr=0.1)
