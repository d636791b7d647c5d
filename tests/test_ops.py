"""The Ops layer on every backend x dtype: each primitive of ``backend.ops`` (the library's
overrides, after their check) gives what ``backend.reference_ops`` (the Array API
reference) gives on the same inputs, keeps the dtype, and never writes into an argument the
contract makes read-only; the reference itself writes into none. Inputs cover every
activation and loss, class labels and one-hot rows, row slices of a wider batch, a column
slice, and a weight matrix at NumPy's BLAS threshold (32768 weights). The probes are this
file's own, not the check's (``backends/_check.py``), so the check is not its own oracle.

And the switch a user has: ``net.fused_kernels = False`` runs the reference and trains along
the same trajectory.
"""

import numpy as np
import pytest
from backend_facts import facts
from conftest import assert_close, make_data, runs, to_np

import portable_bp as pbp
from portable_bp.activations import ACTIVATIONS
from portable_bp.backends import numpy_blas
from portable_bp.losses import LOSSES
from portable_bp.ops import PRIMITIVES, DenseGrad, InPlaceOps, Ops

HIDDEN = [ACTIVATIONS[n] for n in ("sigmoid", "tanh", "relu", "leaky_relu", "identity")]
SOFTMAX, SIGMOID = ACTIVATIONS["softmax"], ACTIVATIONS["sigmoid"]
PRODUCTS = {"affine", "affine_activation", "backprop_delta", "dense_grads", "sgd_dense",
            "subtract_product"}
# (m, n_in, n_out): one row, small, and a layer of 128 x 256 = 32768 weights (NumPy's BLAS threshold)
SHAPES = [(1, 4, 3), (5, 7, 3), (16, 128, 256)]
assert 128 * 256 >= numpy_blas.MIN_WEIGHTS


class Rows:
    """A probe argument that is rows 2 .. m+2 of a wider (m + 5, n) array: a batch."""

    def __init__(self, wider):
        self.wider = wider


class Cols:
    """A probe argument that is columns 1 .. n+1 of an (m, n + 3) array: rows not contiguous."""

    def __init__(self, wider):
        self.wider = wider


class Grad:
    """A probe argument that is a DenseGrad of two probe arrays."""

    def __init__(self, delta, inputs):
        self.delta, self.inputs = delta, inputs


def normal(rng, *shape, scale=1.0):
    return rng.standard_normal(shape) * scale


def poisoned(a, bad):
    """A copy of ``a`` with its last element NaN or ±inf."""
    a = np.array(a, copy=True)
    a.reshape(-1)[-1] = bad
    return a


def layouts(rng, m, n):
    """An (m, n) argument three ways: contiguous, a row slice, a column slice."""
    return [normal(rng, m, n, scale=3.0), Rows(normal(rng, m + 5, n, scale=3.0)),
            Cols(normal(rng, m, n + 3, scale=3.0))]


def logits(rng, m, k):
    """Scale 2; the first row shifted by 500 (an unshifted exp overflows), the last nearly
    one-hot (x15)."""
    U = normal(rng, m, k, scale=2.0)
    U[0] += 500.0
    U[-1] *= 15.0
    return U


def targets(rng, m, k):
    """(U, Z, f, loss) for every loss; cross-entropy with labels and with one-hot rows."""
    labels = rng.integers(0, k, m)
    U = logits(rng, m, k)
    yield U, labels, SOFTMAX, LOSSES["cross_entropy"]
    yield U, np.eye(k)[labels], SOFTMAX, LOSSES["cross_entropy"]
    yield U / 50, (rng.random((m, k)) > 0.5) * 1.0, SIGMOID, LOSSES["binary_cross_entropy"]
    for f in HIDDEN + [SIGMOID, SOFTMAX]:
        yield U / 50, rng.random((m, k)), f, LOSSES["mse"]
    yield U / 50, rng.poisson(2.0, (m, k)) * 1.0, ACTIVATIONS["exp"], LOSSES["poisson"]


def probes(name, rng):
    """(arguments, indices the primitive may write into) for primitive ``name``."""
    for m, n_in, n_out in SHAPES:
        W, b = normal(rng, n_out, n_in, scale=0.5), normal(rng, n_out)
        for A in layouts(rng, m, n_in):
            D = normal(rng, m, n_out)
            if name == "affine":
                yield (A, W, b), ()
            elif name == "rows":  # a batch cut at a start that may be traced in a compiled epoch
                yield from (((arr, start, size), ()) for arr, n in ((A, m), (b, n_out), (D, m))
                            for start, size in ((0, n), (n - 1, 1), (n // 2, (n + 1) // 2)))
            elif name == "extremes":  # every array's largest and smallest element, one scalar
                yield ([W, b * 1e30, A, normal(rng, 0, n_out), D],), ()
                yield from ((([W, poisoned(D, bad)],), ()) for bad in (np.nan, np.inf, -np.inf))
            elif name == "finite_or_nan":  # the epoch's one read: the loss, NaN if anything is not finite
                yield (np.asarray(normal(rng, 1)[0] * 40), [W, b * 1e30, A, D]), ()
                yield from (((np.asarray(1.5), [poisoned(W, bad), b]), ()) for bad in (np.nan, np.inf, -np.inf))
            elif name == "affine_activation":
                yield from (((A, W, b, f), ()) for f in HIDDEN)
            elif name == "dense_grads":
                yield (Grad(D, A),), ()
            elif name == "sgd_dense":  # it may consume the gradient's delta (the step's temporary)
                yield (W.copy(), b.copy(), Grad(D, A), 0.3), (0, 1, 2)
            elif name == "subtract_product":
                yield from (((W.copy(), delta, A, 0.3), (0,)) for delta in (D, Cols(normal(rng, m, n_out + 3))))
            elif name == "subtract_colsum":
                yield from (((b.copy(), delta, 0.3), (0,)) for delta in (D, Rows(normal(rng, m + 5, n_out)),
                                                                         Cols(normal(rng, m, n_out + 3))))
        if name == "backprop_delta":
            for f in HIDDEN:
                A = f.forward(np, normal(rng, m, n_in, scale=3.0))
                yield (normal(rng, m, n_out), W, A, f), ()
        elif name == "activation":
            yield from (((logits(rng, m, n_out) / 50, f), ()) for f in HIDDEN + [SOFTMAX])
        elif name in ("output_loss", "output_delta"):
            for U, Z, f, loss in targets(rng, m, n_out if m > 5 else 3):
                w = rng.random(U.shape[0])
                if name == "output_loss":
                    yield (U, Z, f, loss), ()
                    yield (U, Z, f, loss, w), ()  # per-sample weights
                else:
                    A, _ = Ops(np).output_loss(U, Z, f, loss)
                    yield (U, A, Z, f, loss, 1.0 / U.shape[0]), ()
                    yield (U, A, Z, f, loss, (w / w.sum())[:, None]), ()  # w_i/Σw per row
        elif name in ("sgd", "momentum", "adam", "decay", "rmsprop", "dropout"):
            for shape in ((m, n_in), (n_out,)):
                P, G, M = normal(rng, *shape), normal(rng, *shape), normal(rng, *shape)
                V = np.abs(normal(rng, *shape))
                if name == "sgd":
                    yield (P, G, 0.3), (0, 1)
                elif name == "momentum":
                    yield from (((P, G, M, 0.3, 0.9, nesterov), (0, 1, 2)) for nesterov in (False, True))
                elif name == "decay":
                    yield (P, 0.97), (0,)
                elif name == "dropout":
                    yield (P, G), ()
                elif name == "rmsprop":  # PyTorch's: plain, and centered with momentum
                    yield (P, G, V + 1.0 + M * M, M, G * 0.5, 0.01, 0.99, 1e-8, 0.0, False), (0, 1, 2, 3, 4)
                    yield (P, G, V + 1.0 + M * M, M, G * 0.5, 0.01, 0.9, 1e-8, 0.8, True), (0, 1, 2, 3, 4)
                else:
                    yield (P, G, M, V, 0.01, 1e-8, 0.9, 0.999), (0, 1, 2, 3)
        elif name == "dropout_mask":  # the counter-based generator: integers, then a float mask
            yield (7, 2**33 + m, 1, 3, normal(rng, m, n_out), 0.25), ()
        elif name == "l2_grads":  # E16's gradient, accumulated into c·W
            yield (Grad(normal(rng, m, n_out), normal(rng, m, n_in)), normal(rng, n_out, n_in), 0.3), (0,)


def build(case, arg, bases):
    """A probe argument on the case's backend (float arrays in its dtype); every device
    array made is appended to ``bases`` (the wider arrays behind slices included)."""
    if isinstance(arg, Grad):
        return DenseGrad(build(case, arg.delta, bases), build(case, arg.inputs, bases))
    if isinstance(arg, list):
        return [build(case, a, bases) for a in arg]
    if isinstance(arg, (Rows, Cols)):
        wider = build(case, arg.wider, bases)
        return wider[2:-3, ...] if isinstance(arg, Rows) else wider[:, 1:-2]
    if isinstance(arg, np.ndarray):
        bases.append(case.asarray(arg))
        return bases[-1]
    return arg


def call(case, ops, name, args):
    """Run ``ops.<name>`` on fresh device copies of ``args``: (results as host float64
    arrays, their dtypes, the device arrays made, their host values before the call)."""
    bases = []
    device_args = [build(case, a, bases) for a in args]
    before = [np.array(case.backend.to_numpy(a), copy=True) for a in bases]
    out = getattr(ops, name)(*device_args)
    results = list(out) if isinstance(out, tuple) else [out]
    return [to_np(case.backend, r) for r in results], [str(r.dtype) for r in results], bases, before


def changed_arrays(case, bases, before, writable_bases):
    """The indices of device arrays (other than ``writable_bases``) whose values changed."""
    return [i for i, (a, b) in enumerate(zip(bases, before))
            if i not in writable_bases and not np.array_equal(case.backend.to_numpy(a), b, equal_nan=True)]


def writable_bases(args, writable):
    """Which of the device arrays made for ``args`` (in build order) may be written."""
    out, i = set(), 0
    for k, a in enumerate(args):
        n = 2 if isinstance(a, Grad) else (1 if isinstance(a, (np.ndarray, Rows, Cols)) else 0)
        n = len(a) if isinstance(a, list) else n
        if k in writable:
            out.update(range(i, i + n))
        i += n
    return out


def test_every_primitive_has_probes_here():
    """A primitive added to ops.PRIMITIVES without probes here would go untested."""
    rng = np.random.default_rng(0)
    assert all(next(probes(name, rng), None) is not None for name in PRIMITIVES)


@pytest.mark.parametrize("name", PRIMITIVES)
@pytest.mark.cases(lambda xp_case, name: not runs(xp_case.spec) or name in facts(xp_case.spec).overrides,
                   reason="the backend computes it by the reference itself")  # JAX: rows, extremes; ...
def test_override_equals_the_reference_and_keeps_read_only_arguments(xp_case, name):
    ops = xp_case.ops
    assert name in ops.overrides(), ops.dropped.get(name)  # as collection learned it (backend_facts)
    scale = 1.0
    if xp_case.dtype == "float32" and name in PRODUCTS:  # TF32 products (CuPy) are rounder
        scale = max(1.0, ops.matmul_float32_tolerance / Ops.matmul_float32_tolerance)
    rng = np.random.default_rng(PRIMITIVES.index(name))
    for n, (args, writable) in enumerate(probes(name, rng)):
        want, want_dtypes, _, _ = call(xp_case, xp_case.reference_ops, name, args)
        got, got_dtypes, bases, before = call(xp_case, ops, name, args)
        assert got_dtypes == want_dtypes, f"probe {n}"
        assert [g.shape for g in got] == [w.shape for w in want], f"probe {n}"
        for g, w in zip(got, want):
            assert_close(g, w, xp_case.dtype, scale)
        changed = changed_arrays(xp_case, bases, before, writable_bases(args, writable))
        assert changed == [], f"{type(ops).__name__}.{name} wrote into read-only arrays {changed} (probe {n})"


@pytest.mark.requires("mutable")
@pytest.mark.parametrize("name", PRIMITIVES)
def test_reference_writes_into_no_argument_and_keeps_the_dtype(xp_case, name):
    """The reference is functional: on libraries whose arrays can be written it leaves
    every argument as it was (the update primitives included), and float32 stays float32."""
    ref = xp_case.reference_ops
    assert type(ref) is Ops
    for n, (args, _) in enumerate(probes(name, np.random.default_rng(PRIMITIVES.index(name)))):
        _, dtypes, bases, before = call(xp_case, ref, name, args)
        assert changed_arrays(xp_case, bases, before, set()) == [], f"probe {n}"
        assert all(d.endswith(xp_case.dtype) for d in dtypes), (n, dtypes)


@pytest.mark.parametrize("name", ["sgd_dense", "subtract_product", "subtract_colsum", "sgd", "momentum", "adam"])
@pytest.mark.cases(lambda xp_case: not runs(xp_case.spec) or facts(xp_case.spec).in_place,
                   reason="the backend runs the functional reference Ops")
def test_in_place_ops_keep_the_parameter_buffers(xp_case, name):
    """InPlaceOps and its subclasses (NumPy, torch, CuPy, array-api-strict) write each
    update into the parameter they are given and return that array: the network's
    parameters keep their memory (the functional reference is checked above to write none)."""
    ops = xp_case.ops
    assert isinstance(ops, InPlaceOps)  # as collection learned it (backend_facts)
    args, _ = next(probes(name, np.random.default_rng(1)))
    bases = []
    device_args = [build(xp_case, a, bases) for a in args]
    out = getattr(ops, name)(*device_args)
    first = out[0] if isinstance(out, tuple) else out
    assert first is device_args[0]


# -- the user's switch: fused_kernels = False runs the reference ----------------------------
ACTS = ["sigmoid", "tanh", "relu", "leaky_relu", "identity"]


TOL = {"float32": 1e-5, "float64": 1e-12}  # as the first tests of the kernels had them


@pytest.mark.requires("overrides")
@pytest.mark.parametrize("loss", ["mse", "cross_entropy", "binary_cross_entropy", "poisson"])
@pytest.mark.parametrize("act", ACTS)
def test_network_results_equal_the_reference_path(xp_case, act, loss):
    """Loss, every gradient and the outputs of a network, with the backend's Ops and with
    the reference; hidden widths 9 (CuPy's element-wise kernels) and 16, 8 (its vectors)."""
    net = pbp.Network([6, 9, 16, 8, 4], activation=act, loss=loss, backend=xp_case.spec,
                      dtype=xp_case.dtype, seed=1)
    ref = net.to(xp_case.spec)
    ref.fused_kernels = False
    X, Z = make_data(33, 6, 4, loss)
    (l1, g1), (l2, g2) = net.loss_and_grads(X, Z), ref.loss_and_grads(X, Z)
    tol = TOL[xp_case.dtype]
    assert l1 == pytest.approx(l2, rel=tol)
    for a, b in zip([x for p in g1 for x in p], [x for p in g2 for x in p]):
        np.testing.assert_allclose(to_np(net, a), to_np(ref, b), rtol=tol, atol=tol)
    np.testing.assert_allclose(to_np(net, net.forward(X)), to_np(ref, ref.forward(X)), rtol=tol, atol=tol)


@pytest.mark.requires("mutable")
def test_plain_sgd_fit_takes_one_sgd_dense_call_per_layer_and_batch(xp_case, monkeypatch):
    """Plain SGD hands E10's factors to the backend's sgd_dense (its one-call step where it
    has one) once per layer and batch, and trains as the reference path does; the
    reference path and other optimizers never call it."""
    net = pbp.Network([8, 16, 12, 3], activation="tanh", loss="cross_entropy", backend=xp_case.spec,
                      dtype=xp_case.dtype, seed=5)
    ref = net.to(xp_case.spec)
    ref.fused_kernels = False
    ops, calls = net.backend.ops, []
    original = ops.sgd_dense
    monkeypatch.setattr(ops, "sgd_dense", lambda W, b, g, lr: calls.append(tuple(W.shape)) or original(W, b, g, lr))
    X, y = make_data(70, 8, 3, "cross_entropy")  # 4 batches of 16 and one of 6
    h1 = net.fit(X, y, epochs=2, batch_size=16, lr=0.1)
    assert len(calls) == 3 * 5 * 2 and calls[:3] == [(3, 12), (12, 16), (16, 8)]
    h2 = ref.fit(X, y, epochs=2, batch_size=16, lr=0.1)
    tol = TOL[xp_case.dtype] * 10
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=tol)
    for a, b in zip([x for p in net.params for x in p], [x for p in ref.params for x in p]):
        np.testing.assert_allclose(to_np(net, a), to_np(ref, b), rtol=tol, atol=tol)
    net.fit(X, y, epochs=1, batch_size=16, optimizer="momentum", lr=0.1)
    net.fit(X, y, epochs=1, batch_size=16, optimizer=pbp.optim.SGD(0.1, weight_decay=1e-3))
    assert len(calls) == 30


TRAJECTORIES = [("sgd", "cross_entropy"), ("momentum", "binary_cross_entropy"), ("nesterov", "mse"),
                ("adam", "cross_entropy")]


@pytest.mark.dtypes("float64")  # float32 trajectories part by rounding; float64 shows the same path
@pytest.mark.parametrize("optimizer,loss", TRAJECTORIES, ids=[o for o, _ in TRAJECTORIES])
@pytest.mark.cases(lambda xp_case, optimizer: not xp_case.spec.startswith("jax") or optimizer == "adam",
                   reason="jax overrides only rows and extremes: one optimizer shows its switch (each compiles anew)")
def test_reference_ops_train_along_the_same_trajectory(xp_case, optimizer, loss):
    """Three epochs of shuffled mini-batches with the backend's Ops and with
    ``fused_kernels = False`` (the reference): the same losses and parameters to 1e-12 and 1e-10
    (as the first test of the kernels had it; the brief asks 1e-9)."""
    net = pbp.Network([6, 12, 9, 3], activation="tanh", loss=loss, backend=xp_case.spec,
                      dtype="float64", seed=2)
    ref = net.to(xp_case.spec)
    ref.fused_kernels = False
    assert ref.ops is ref.backend.reference_ops and not ref.fused_kernels
    assert net.ops is net.backend.ops and net.fused_kernels
    X, Z = make_data(48, 6, 3, loss, seed=3)  # 3 full batches: one program on JAX
    h1 = net.fit(X, Z, epochs=3, batch_size=16, optimizer=optimizer, lr=0.05)
    h2 = ref.fit(X, Z, epochs=3, batch_size=16, optimizer=optimizer, lr=0.05)
    np.testing.assert_allclose(h1.history["loss"], h2.history["loss"], rtol=1e-12)
    for (W1, b1), (W2, b2) in zip(net.params, ref.params):
        for a, b in ((W1, W2), (b1, b2)):
            want = to_np(ref, b)
            np.testing.assert_allclose(to_np(net, a), want, rtol=1e-10, atol=1e-12)
    ref.fused_kernels = True
    assert ref.ops is ref.backend.ops


@pytest.mark.skip_backends("jax", reason="the switch is backend-independent; jax would compile twice")
def test_switching_kernels_off_during_fit_takes_effect_at_the_next_fit(xp_spec):
    """A callback that sets fused_kernels = False mid-fit does not disturb the running fit
    (it keeps the Ops it started with); the next fit runs the reference."""
    net = pbp.Network([6, 8, 3], loss="cross_entropy", backend=xp_spec, seed=0)
    X, y = make_data(40, 6, 3, "cross_entropy")
    seen = []

    def off(net, epoch, logs):
        seen.append(net.ops)
        net.fused_kernels = False

    h = net.fit(X, y, epochs=3, batch_size=8, lr=0.1, callbacks=[off])
    assert len(h.history["loss"]) == 3 and all(np.isfinite(h.history["loss"]))
    assert seen[0] is net.backend.ops and net.ops is net.backend.reference_ops
    assert np.isfinite(net.fit(X, y, epochs=1, batch_size=8, lr=0.1).history["loss"]).all()


def test_the_checks_of_empty_arrays_stay_on_their_device():
    """With nothing to check, finite_or_nan is the value itself and extremes a zero on the
    arrays' device (array-api-strict refuses to mix devices)."""
    xp = pytest.importorskip("array_api_strict")
    device = xp.Device("device1")
    value, empty = xp.asarray(2.5, device=device), xp.zeros((0, 3), device=device)
    out = Ops(xp).finite_or_nan(value, [empty])
    assert out.device == device and float(out) == 2.5
    zero = Ops(xp).extremes([empty])
    assert zero.device == device and float(zero) == 0.0
