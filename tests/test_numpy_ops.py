"""NumPy's Ops: in-place kernels that give the activation and loss tables' bits, and plain
SGD's weight step as one call of NumPy's own BLAS (found in NumPy's wheels, refused when
absent, odd layouts through NumPy), so that a plain-SGD step makes no weight-gradient array.
"""

import tracemalloc

import numpy as np
import pytest
from conftest import make_data

import portable_bp as pbp
from portable_bp import losses, step
from portable_bp.activations import ACTIVATIONS
from portable_bp.backends import get, numpy_blas
from portable_bp.backends._check import checked
from portable_bp.backends.numpy_ops import ZERO_ROW_SIZE, NumpyOps
from portable_bp.ops import InPlaceOps, Ops
from portable_bp.optim import SGD

XP = get("numpy").xp
REF = Ops(XP)
ACTS = ["sigmoid", "tanh", "relu", "leaky_relu", "identity"]
BLAS = numpy_blas.find()
needs_blas = pytest.mark.skipif(BLAS is None, reason="this NumPy bundles no OpenBLAS (conda/MKL/Accelerate)")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(3, 4), (80, 64)])  # (m, n_out): below and above ZERO_ROW_SIZE
@pytest.mark.parametrize("act", ACTS)
def test_numpy_kernels_equal_the_activation_table_bit_for_bit(act, shape, dtype):
    """Same formulas, same order of operations: E7's and E9's in-place kernels give the
    bits of activations.py (through the reference Ops)."""
    assert (shape[0] * shape[1] < ZERO_ROW_SIZE) == (shape == (3, 4))
    ops, f = NumpyOps(XP), ACTIVATIONS[act]
    rng = np.random.default_rng(0)
    A, W = (3 * rng.standard_normal((shape[0], 5))).astype(dtype), rng.standard_normal((shape[1], 5)).astype(dtype)
    b, D = rng.standard_normal(shape[1]).astype(dtype), rng.standard_normal(shape).astype(dtype)
    got = ops.affine_activation(A, W, b, f)
    np.testing.assert_array_equal(got, REF.affine_activation(A, W, b, f))
    assert got.dtype == dtype
    W2 = rng.standard_normal((shape[1], shape[1])).astype(dtype)
    np.testing.assert_array_equal(ops.backprop_delta(D, W2, got, f), REF.backprop_delta(D, W2, got, f))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m,k", [(1, 1), (5, 3), (33, 10), (7, 300), (4, 1000)])
def test_numpy_softmax_cross_entropy_and_delta_equal_the_loss_table_bit_for_bit(m, k, dtype):
    """Labels: the in-place softmax + summed cross-entropy and E11's Δ equal losses.py's bits
    (logits large enough to overflow an unshifted exp); one-hot rows give the same Δ."""
    ops, f, ce = NumpyOps(XP), ACTIVATIONS["softmax"], losses.LOSSES["cross_entropy"]
    rng = np.random.default_rng(k)
    U = rng.standard_normal((m, k)) * 30
    U[0] += 800.0
    U, y = U.astype(dtype), rng.integers(0, k, m)
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow to 0 is fine
        A, total = ops.output_loss(U, y, f, ce)
    want_A, want_total = losses.softmax_cross_entropy(XP, U, y)
    np.testing.assert_array_equal(A, want_A)
    assert total == want_total and A.dtype == dtype and np.ndim(total) == 0
    for Z in (y, np.eye(k, dtype=dtype)[y]):
        np.testing.assert_array_equal(ops.output_delta(U, A, Z, f, ce, 1 / m),
                                      REF.output_delta(U, A, Z, f, ce, 1 / m))


# -- NumPy's own BLAS ---------------------------------------------------------------------
@needs_blas
def test_numpy_blas_is_found_in_numpys_wheels_and_used_by_the_numpy_backend():
    assert numpy_blas._library_paths()
    ops = get("numpy").ops
    assert ops.name == "numpy+blas" and ops.dropped == {}
    assert {"sgd_dense", "subtract_product"} <= set(ops.overrides())


def test_numpy_blas_is_refused_when_missing(monkeypatch):
    """No bundled library, one that cannot be loaded (or is not loaded already), one without
    a 64-bit-integer CBLAS gemm: find() returns None and the backend keeps NumPy's path."""
    assert numpy_blas._gemm_functions("libc.so.6") is None  # loaded, but no cblas_?gemm64_
    monkeypatch.setattr(numpy_blas, "_library_paths", lambda: [])
    assert numpy_blas.find() is None
    monkeypatch.setattr(numpy_blas, "_library_paths", lambda: ["/nonexistent/libopenblas.so"])
    assert numpy_blas.find() is None
    monkeypatch.setattr(numpy_blas, "_library_paths", lambda: ["libc.so.6"])
    assert numpy_blas.find() is None
    ops = NumpyOps(XP, numpy_blas.find())
    assert ops.name == "numpy" and checked(ops, np.asarray, np.asarray).dropped == {}


def _recording_blas(monkeypatch_calls):
    """make_subtract_product over the real gemm functions, recording each BLAS call."""
    funcs = numpy_blas._gemm_functions(numpy_blas._library_paths()[0])

    def recorder(fn):
        def call(*args):
            monkeypatch_calls.append(args[3:6])  # (n_out, n_in, m)
            return fn(*args)
        return call

    return numpy_blas.make_subtract_product({dt: recorder(fn) for dt, fn in funcs.items()}, min_weights=0)


@needs_blas
def test_numpy_blas_takes_odd_layouts_dtypes_and_overlaps_through_numpy():
    """Layouts BLAS cannot take, mixed dtypes, float16, overlapping memory and empty
    batches go through W -= alpha·Dᵀ A in NumPy, still in place; row slices of a wider
    array (leading dimension > row length) go to BLAS."""
    calls = []
    op = _recording_blas(calls)
    rng = np.random.default_rng(1)
    shared = rng.standard_normal((9, 6))
    cases = {
        "W transposed": (rng.standard_normal((6, 5)).T, rng.standard_normal((4, 5)), rng.standard_normal((4, 6))),
        "D column stride": (rng.standard_normal((5, 6)), rng.standard_normal((4, 10))[:, ::2],
                            rng.standard_normal((4, 6))),
        "mixed dtypes": (rng.standard_normal((5, 6)), rng.standard_normal((4, 5)).astype("float32"),
                         rng.standard_normal((4, 6))),
        "float16": tuple(rng.standard_normal(s).astype("float16") for s in ((5, 6), (4, 5), (4, 6))),
        "W read-only": (np.require(rng.standard_normal((5, 6)), requirements="C"),) + (
            rng.standard_normal((4, 5)), rng.standard_normal((4, 6))),
        "A overlaps W": (shared[:5], rng.standard_normal((4, 5)), shared[3:7]),
        "no rows": (rng.standard_normal((5, 6)), np.zeros((0, 5)), np.zeros((0, 6))),
        "rows of a wider array": (rng.standard_normal((5, 6)), rng.standard_normal((4, 8))[:, 1:6],
                                  rng.standard_normal((4, 9))[:, 1:7]),
    }
    cases["W read-only"][0].flags.writeable = False
    for what, (W, D, A) in cases.items():
        calls.clear()
        want = W - 0.5 * (D.astype(np.float64).T @ A.astype(np.float64))
        if what == "W read-only":  # BLAS would write through the pointer regardless
            before = W.copy()
            with pytest.raises(ValueError, match="read-only"):
                op(W, D, A, 0.5)
            assert calls == [] and np.array_equal(W, before)
            continue
        assert op(W, D, A, 0.5) is W, what
        np.testing.assert_allclose(W, want, rtol=1e-2 if W.dtype == np.float16 else 1e-6, err_msg=what)
        assert calls == ([(5, 6, 4)] if what == "rows of a wider array" else []), what


@needs_blas
def test_numpy_blas_is_skipped_below_its_size_threshold():
    calls = []
    funcs = numpy_blas._gemm_functions(numpy_blas._library_paths()[0])
    op = numpy_blas.make_subtract_product(
        {dt: (lambda fn: lambda *a: calls.append(a[3:6]) or fn(*a))(fn) for dt, fn in funcs.items()})
    rng = np.random.default_rng(2)
    for n_out, n_in in ((255, 128), (256, 128)):  # 32640 and 32768 = MIN_WEIGHTS weights
        W, D, A = rng.standard_normal((n_out, n_in)), rng.standard_normal((8, n_out)), rng.standard_normal((8, n_in))
        want = W - 0.25 * D.T @ A
        op(W, D, A, 0.25)
        np.testing.assert_allclose(W, want, rtol=1e-12, atol=1e-12)
    assert calls == [(256, 128, 8)]


def test_a_wrong_blas_is_caught_by_the_ops_check():
    """find() no longer checks the library itself: a gemm that is wrong only on the BLAS
    path (large layers) is dropped by the Ops check, with sgd_dense, which calls it too."""
    def wrong_when_large(W, D, A, alpha):
        W -= (alpha if W.size < numpy_blas.MIN_WEIGHTS else -alpha) * (D.T @ A)
        return W

    ops = checked(NumpyOps(XP, wrong_when_large), np.asarray, np.asarray)
    assert sorted(ops.dropped) == ["sgd_dense", "subtract_product"]
    assert ops.subtract_product.__func__ is InPlaceOps.subtract_product
    assert ops.sgd_dense.__func__ is Ops.sgd_dense


# -- plain SGD without a weight-gradient array ------------------------------------------------
@needs_blas
def test_plain_sgd_step_makes_no_weight_gradient_array():
    """One plain-SGD step (E10 + E12) on a 400-300-10 network with a batch of 8: NumPy's Ops
    allocate a few batch-sized arrays but nothing the size of a weight gradient (480 kB);
    the reference Ops make each gradient, and each new W."""
    sizes, X, y = [400, 300, 10], *make_data(8, 400, 10, "cross_entropy")
    net = pbp.Network(sizes, activation="relu", loss="cross_entropy", seed=0)
    X, y = net.features(X), net.targets(y, 8)
    peaks = {}
    for ops in (net.backend.ops, net.backend.reference_ops):
        params = [(W.copy(), b.copy()) for W, b in net.params]
        step.train_step(net.spec, ops, SGD(0.1), params, [{}, {}], step.Context(X, y), {"lr": 0.1})  # warm-up
        tracemalloc.start()
        step.train_step(net.spec, ops, SGD(0.1), params, [{}, {}], step.Context(X, y), {"lr": 0.1})
        peaks[ops is net.backend.ops] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    gradient = 400 * 300 * 4
    assert peaks[True] < 0.25 * gradient < gradient < peaks[False], peaks


@needs_blas
def test_plain_sgd_fit_holds_less_than_the_reference_fit():
    """The same measure over a whole epoch of fit (as the first test of the one-call step
    did): the reference path holds every layer's weight gradient in turn, NumPy's none."""
    sizes = [400, 300, 300, 10]
    X, y = make_data(64, 400, 10, "cross_entropy")
    peaks = {}
    for fused in (True, False):
        net = pbp.Network(sizes, activation="relu", loss="cross_entropy", backend="numpy", seed=0)
        net.fused_kernels = fused
        Xd = net.backend.asarray(X, "float32")
        net.fit(Xd, y, epochs=1, batch_size=64, lr=0.01)  # warm-up: caches
        tracemalloc.start()
        net.fit(Xd, y, epochs=1, batch_size=64, lr=0.01)
        peaks[fused] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    largest = 4 * 400 * 300  # float32 bytes of the largest weight gradient
    assert peaks[False] - peaks[True] > 0.75 * largest, peaks


@needs_blas
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_numpy_blas_step_in_fit_matches_the_reference(dtype):
    """Layers above the BLAS threshold fed the rows of a column-sliced X (BLAS's leading
    dimension wider than the row): the first layer's step reads X in place, and fit's
    trajectory equals the reference path's."""
    be = get("numpy")
    sizes = [200, 220, 160, 4]  # 44000 and 35200 weights: above numpy_blas.MIN_WEIGHTS
    wide, y = make_data(90, 260, 4, "cross_entropy", seed=6)
    X = be.asarray(wide, dtype)[:, 30:230]  # no copy: rows 260 elements apart, 200 used
    assert not X.flags.c_contiguous and numpy_blas._rows_contiguous(X, X.itemsize)
    net = pbp.Network(sizes, activation="relu", loss="cross_entropy", dtype=dtype, seed=6)
    ref = net.to("numpy")
    ref.fused_kernels = False
    strides = []
    original = be.ops._gemm_subtract
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(be.ops, "_gemm_subtract", lambda W, D, A, a: strides.append(A.strides[0] // A.itemsize)
                   or original(W, D, A, a))
        h1 = net.fit(X, y, epochs=2, batch_size=32, lr=0.05, shuffle=False)
    # the output layer (640 weights) is below the BLAS threshold (NumPy's own product); then
    # the hidden layer, and the first layer reading X in place
    assert strides[:2] == [220, 260]
    h2 = ref.fit(X, y, epochs=2, batch_size=32, lr=0.05, shuffle=False)
    tol = {"float32": 1e-4, "float64": 1e-11}[dtype]
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=tol)
    for (W1, b1), (W2, b2) in zip(net.params, ref.params):
        np.testing.assert_allclose(W1, W2, rtol=tol, atol=tol)
        np.testing.assert_allclose(b1, b2, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("out, loss", [("sigmoid", "mse"), ("identity", "mse"), ("softmax", "cross_entropy"),
                                       ("sigmoid", "binary_cross_entropy")])
def test_a_one_row_batch_delta_skips_the_unit_scale_and_keeps_the_reference_bits(out, loss, dtype):
    """A batch of one row has 1/m = 1.0: the output delta skips that multiplication (×1 is
    exact) and still gives the reference's bits, NaN and infinities included; a weighted
    column or another scale is still applied."""
    ops, f, lo = NumpyOps(XP), ACTIVATIONS[out], losses.LOSSES[loss]
    rng = np.random.default_rng(3)
    U = rng.standard_normal((1, 3)).astype(dtype)
    U[0, 0] = np.nan if out == "identity" else U[0, 0]
    Z = rng.integers(0, 3, 1) if loss == "cross_entropy" else (rng.random((1, 3)) > 0.5).astype(dtype)
    A = REF.activation(U, f)
    for scale in (1.0, 0.5, np.full((1, 1), 2.0, dtype=dtype)):
        got = ops.output_delta(U, A.copy(), Z, f, lo, scale)
        np.testing.assert_array_equal(got, REF.output_delta(U, A.copy(), Z, f, lo, scale))
        assert got.dtype == np.dtype(dtype)
