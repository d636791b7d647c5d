"""The one check every Ops override passes before a backend is handed out.

For each primitive an Ops subclass overrides (``Ops.overrides``), the override runs on
probe inputs on the backend's device, in float32 and float64, and its results are compared
with the reference :class:`~portable_bp.ops.Ops` run by NumPy in float64 on the host, from
the same rounded inputs. The probes cover every activation and loss, class labels and
one-hot rows, and the layouts the step produces: contiguous arrays, row slices of a wider
array (batches), a column slice (an odd layout an override must still get right), and sizes
on both sides of the thresholds where overrides change method (NumPy's BLAS call, CuPy's
vector kernels, softmax rows longer than a thread block). Arguments an override must not
write into are checked unchanged.

An override that raises or disagrees is replaced by the next implementation up its class
hierarchy that passes (ending at the reference, which needs no check), and the reason is
kept in ``ops.dropped`` for ``portable-bp backends``.
"""

from __future__ import annotations

import math
import types

import numpy as np

from ..activations import ACTIVATIONS, hidden_activations
from ..losses import LOSSES
from ..ops import DenseGrad, Ops

DTYPES = ("float32", "float64")
TOLERANCE = {"float32": 1e-5, "float64": 1e-11}
# primitives whose float32 results go through a matrix product (TF32 may round them)
WITH_PRODUCT = {"affine", "affine_activation", "backprop_delta", "dense_grads", "sgd_dense",
                "subtract_product", "l2_grads"}
# primitives that reference implementations build from others: checked after those, so a
# faulty building block is replaced before the composite that calls it is judged
COMPOSITE = {"affine_activation", "output_loss", "sgd_dense", "finite_or_nan", "l2_grads"}
HIDDEN = hidden_activations()


class View:
    """A probe argument that is ``array[key]`` on the device: a slice of a wider array."""

    def __init__(self, array, key):
        self.array, self.key = array, key


class Many:
    """A probe argument that is a list of probe arrays."""

    def __init__(self, *arrays):
        self.arrays = arrays


class Grad:
    """A probe argument that is a DenseGrad of two probe arrays (its factors), or of the
    arrays (dW, db) themselves."""

    def __init__(self, delta, inputs, dW=None, db=None):
        self.delta, self.inputs, self.dW, self.db = delta, inputs, dW, db


def _normal(rng, shape, scale=1.0):
    return rng.standard_normal(shape) * scale


def _layouts(rng, m, n_in):
    """A (m, n_in) input as a contiguous array, a row slice of a wider batch, and a column
    slice (rows not contiguous)."""
    return [_normal(rng, (m, n_in), 3.0),
            View(_normal(rng, (m + 4, n_in), 3.0), (slice(2, m + 2), ...)),
            View(_normal(rng, (m, n_in + 3), 3.0), (slice(None), slice(1, n_in + 1)))]


def _affine_cases(rng, with_activation):
    shapes = [(5, 7, 8), (7, 5, 3), (64, 96, 72)]  # the last is past NumPy's 4096-element path
    for m, n_in, n_out in shapes:
        for A in _layouts(rng, m, n_in):
            W, b = _normal(rng, (n_out, n_in), 0.5), _normal(rng, n_out)
            if not with_activation:
                yield (A, W, b), ()
                continue
            for f in HIDDEN:
                yield (A, W, b, f), ()


def _logits(rng, m, k):
    """Logits of scale 2 (every term of a softmax row matters), one row at scale 30 (nearly
    one-hot), one shifted by 500 (exp would overflow unshifted), and one whose maximum
    stands 100 above the rest at a column no thread block starts at (a row maximum taken
    from part of the row would overflow exp there)."""
    U = _normal(rng, (m, k), 2.0)
    U[0] += 500.0
    U[1] *= 15
    U[2, 37 % k] += 100.0
    return U


def _target_cases(rng):
    """(U, Z, f, loss) for every loss, with labels and one-hot rows for cross-entropy."""
    for m, k in ((5, 3), (7, 300), (6, 8)):
        U = _logits(rng, m, k)
        labels = rng.integers(0, k, m)
        yield U, labels, ACTIVATIONS["softmax"], LOSSES["cross_entropy"]
        yield U, np.eye(k)[labels], ACTIVATIONS["softmax"], LOSSES["cross_entropy"]
        yield U / 50, (rng.random((m, k)) > 0.5) * 1.0, ACTIVATIONS["sigmoid"], LOSSES["binary_cross_entropy"]
        for f in (ACTIVATIONS["identity"], ACTIVATIONS["sigmoid"], ACTIVATIONS["tanh"]):
            yield U / 50, rng.random((m, k)), f, LOSSES["mse"]
        yield U / 50, rng.poisson(2.0, (m, k)) * 1.0, ACTIVATIONS["exp"], LOSSES["poisson"]


def _output_delta_cases(rng):
    """Every loss with the batch mean's 1/m, and with per-sample weights' column w/Σw."""
    for U, Z, f, loss in _target_cases(rng):
        A, _ = Ops(np).output_loss(U, Z, f, loss)
        yield (U, A, Z, f, loss, 1.0 / U.shape[0]), ()
        w = rng.random(U.shape[0])
        yield (U, A, Z, f, loss, (w / w.sum())[:, None]), ()


def _backprop_cases(rng):
    for m, n_out, n_in in ((5, 3, 8), (64, 72, 96)):
        for f in HIDDEN:
            A = f.forward(np, _normal(rng, (m, n_in), 3.0))
            yield (_normal(rng, (m, n_out)), _normal(rng, (n_out, n_in)), A, f), ()


def _factor_cases(rng):
    """(W or b, D, A) with W (n_out, n_in) on both sides of NumPy's BLAS threshold (32768
    weights), A as each layout and D contiguous or a column slice."""
    for m, n_in, n_out in ((6, 5, 7), (6, 128, 256)):
        for A in _layouts(rng, m, n_in):
            for D in (_normal(rng, (m, n_out)), View(_normal(rng, (m, n_out + 2)), (slice(None), slice(1, n_out + 1)))):
                yield _normal(rng, (n_out, n_in)), D, A


def _update_cases(rng):
    for shape in ((7, 5), (6,), (64, 72)):
        yield _normal(rng, shape), _normal(rng, shape), _normal(rng, shape), np.abs(_normal(rng, shape))


NON_FINITE = (math.nan, math.inf, -math.inf)


def _poisoned(a, index, value):
    """``a`` with one element set to ``value`` (NaN or ±inf)."""
    a[index] = value
    return a


def _cases(name, rng):
    """Probe argument lists for primitive ``name``, with the indices it may write into."""
    if name == "rows":
        for a in (_normal(rng, (9, 4)), _normal(rng, 9), rng.integers(0, 5, 9),
                  View(_normal(rng, (9, 6)), (slice(None), slice(1, 5)))):
            for start, size in ((0, 9), (2, 3), (8, 1)):
                yield (a, start, size), ()
    elif name == "extremes":
        yield (Many(_normal(rng, (4, 3)), _normal(rng, 4), _normal(rng, (2, 4)) * 1e30, _normal(rng, 2)),), ()
        yield (Many(_normal(rng, (0, 3)), -np.abs(_normal(rng, 5)) - 2.0),), ()
        yield (Many(),), ()
        for bad in NON_FINITE:  # one bad element among finite ones must show
            yield (Many(_normal(rng, (4, 3)), _poisoned(_normal(rng, 5), 3, bad)),), ()
    elif name == "finite_or_nan":
        yield (np.asarray(2.5), Many(_normal(rng, (4, 3)), _normal(rng, 4) * 1e30)), ()
        yield (np.asarray(-7.0), Many(_normal(rng, (0, 3)), _normal(rng, 5))), ()
        for bad in NON_FINITE:
            yield (np.asarray(1.5), Many(_poisoned(_normal(rng, (3, 2)), (2, 1), bad), _normal(rng, 4))), ()
    elif name in ("affine", "affine_activation"):
        yield from _affine_cases(rng, name == "affine_activation")
    elif name == "activation":
        for f in HIDDEN + [ACTIVATIONS["softmax"], ACTIVATIONS["exp"]]:
            yield (_logits(rng, 6, 8) / 50, f), ()
    elif name == "output_loss":
        for U, Z, f, loss in _target_cases(rng):
            yield (U, Z, f, loss), ()
            yield (U, Z, f, loss, rng.random(U.shape[0])), ()
    elif name == "output_delta":
        yield from _output_delta_cases(rng)
    elif name == "backprop_delta":
        yield from _backprop_cases(rng)
    elif name == "dense_grads":
        for _, D, A in _factor_cases(rng):
            yield (Grad(D, A),), ()
        yield (Grad(None, None, _normal(rng, (4, 3)), _normal(rng, 4)),), ()
    elif name == "sgd_dense":
        for W, D, A in _factor_cases(rng):
            yield (W, W[:, 0] * 2, Grad(D, A), 0.3), (0, 1, 2)  # the delta may be consumed
        yield (_normal(rng, (4, 3)), _normal(rng, 4), Grad(None, None, _normal(rng, (4, 3)), _normal(rng, 4)),
               0.3), (0, 1, 2)
    elif name == "subtract_product":
        for W, D, A in _factor_cases(rng):
            yield (W, D, A, 0.3), (0,)
    elif name == "subtract_colsum":
        for W, D, _ in _factor_cases(rng):
            yield (W[:, 0], D, 0.3), (0,)
    elif name == "sgd":
        for P, G, _, _ in _update_cases(rng):
            yield (P, G, 0.3), (0, 1)
    elif name == "momentum":
        for P, G, V, _ in _update_cases(rng):
            for nesterov in (False, True):
                yield (P, G, V, 0.3, 0.9, nesterov), (0, 1, 2)
    elif name == "adam":
        for P, G, M, V in _update_cases(rng):
            yield (P, G, M, V, 0.01, 1e-8, 0.9, 0.999), (0, 1, 2, 3)
    else:
        yield from _regularization_cases(name, rng)


def _regularization_cases(name, rng):
    """Probes of the dropout, L2, decoupled-decay and RMSprop primitives."""
    if name == "dropout_mask":
        for seed, count, layer, first_row, shape, rate in ((7, 0, 0, 0, (5, 8), 0.5), (2**40, 3, 2, 6, (3, 300), 0.1),
                                                            (0, 2**31 + 5, 1, 0, (64, 72), 0.9)):
            yield (seed, count, layer, first_row, _normal(rng, shape), rate), ()
    elif name == "dropout":
        for P, G, _, _ in _update_cases(rng):
            yield (P, G), ()
    elif name == "l2_grads":
        for W, D, A in _factor_cases(rng):
            yield (Grad(D, A), W, 0.3), (0,)
        yield (Grad(None, None, _normal(rng, (4, 3)), _normal(rng, 4)), _normal(rng, (4, 3)), 0.3), (0,)
    elif name == "decay":
        for P, _, _, _ in _update_cases(rng):
            yield (P, 0.97), (0,)
    elif name == "rmsprop":
        for P, G, M, V in _update_cases(rng):
            for mu, centered in ((0.0, False), (0.9, True)):
                yield (P, G, V + 1.0 + M * M, M, G * 0.5, 0.01, 0.99, 1e-8, mu, centered), (0, 1, 2, 3, 4)


def _build(arg, dtype, to_device):
    """A probe argument made concrete: float arrays rounded to ``dtype`` and moved."""
    if isinstance(arg, View):
        return _build(arg.array, dtype, to_device)[arg.key]
    if isinstance(arg, Many):
        return [_build(a, dtype, to_device) for a in arg.arrays]
    if isinstance(arg, Grad) and arg.dW is not None:
        return DenseGrad.of_arrays(_build(arg.dW, dtype, to_device), _build(arg.db, dtype, to_device))
    if isinstance(arg, Grad):
        return DenseGrad(_build(arg.delta, dtype, to_device), _build(arg.inputs, dtype, to_device))
    if isinstance(arg, np.ndarray):
        return to_device(arg.astype(dtype) if arg.dtype.kind == "f" else arg.astype(np.int64))
    return arg


def _rounded(arg, dtype):
    """The host float64 version of a probe argument, from its values rounded to ``dtype``."""
    if isinstance(arg, View):
        return View(_rounded(arg.array, dtype), arg.key)
    if isinstance(arg, Many):
        return Many(*(_rounded(a, dtype) for a in arg.arrays))
    if isinstance(arg, Grad):
        return Grad(*(_rounded(a, dtype) for a in (arg.delta, arg.inputs, arg.dW, arg.db)))
    if isinstance(arg, np.ndarray) and arg.dtype.kind == "f":
        return arg.astype(dtype).astype(np.float64)
    return arg


def _results(value):
    return list(value) if isinstance(value, tuple) else [value]


def _disagreement(method, name, dtype, args, writable, to_device, to_host, tolerance):
    """Why ``method`` disagrees with the reference on one probe, or ''."""
    host = [_rounded(a, dtype) for a in args]
    with np.errstate(all="ignore"):  # NaN and inf probes: expected, not worth a warning
        want = _results(getattr(Ops(np), name)(*[_build(a, np.float64, np.asarray) for a in host]))
    device_args = [_build(a, dtype, to_device) for a in args]
    kept = {i: np.array(to_host(a), copy=True) for i, a in enumerate(device_args)
            if i not in writable and hasattr(a, "shape")}
    with np.errstate(all="ignore"):
        got = _results(method(*device_args))
    if len(got) != len(want):
        return f"returned {len(got)} values, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        g = np.asarray(to_host(g), dtype=np.float64)
        if g.shape != w.shape:
            return f"result {i} has shape {g.shape}, expected {w.shape}"
        error = _relative_error(g, w)
        if not error <= tolerance:
            return f"{dtype}: result {i} differs from the reference by {error:.2g} (tolerance {tolerance:g})"
    for i, before in kept.items():
        if not np.array_equal(np.asarray(to_host(device_args[i])), before, equal_nan=True):
            return f"{dtype}: wrote into its read-only argument {i}"
    return ""


def _relative_error(got, want) -> float:
    """Largest difference relative to the reference's largest magnitude, over the finite
    elements; inf unless the non-finite elements are the same, in place and kind (NaN,
    +inf, -inf): a check of finiteness must say NaN or inf exactly where the reference does."""
    finite = np.isfinite(want)
    if not np.array_equal(np.isfinite(got), finite) or not np.array_equal(got[~finite], want[~finite],
                                                                          equal_nan=True):
        return math.inf
    g, w = got[finite], want[finite]
    return float(np.max(np.abs(g - w), initial=0.0)) / max(1.0, float(np.max(np.abs(w), initial=0.0)))


def held_dtypes(to_device, to_host) -> list[str]:
    """The probe dtypes the backend holds as they are (JAX keeps float64 only once
    ``jax_enable_x64`` is on; until then it would round the float64 probes to float32)."""
    return [d for d in DTYPES if str(np.asarray(to_host(to_device(np.zeros(1, d)))).dtype) == d]


def disagreement(ops, method, name, to_device, to_host) -> str:
    """Why ``method`` (a bound implementation of primitive ``name``) fails its probes, or ''."""
    dtypes = held_dtypes(to_device, to_host)
    if not dtypes:
        return f"the backend holds none of the probe dtypes {', '.join(DTYPES)}"
    for dtype in dtypes:
        tolerance = TOLERANCE[dtype]
        if dtype == "float32" and name in WITH_PRODUCT:
            tolerance = max(tolerance, ops.matmul_float32_tolerance)
        for args, writable in _cases(name, np.random.default_rng(0)):
            try:
                why = _disagreement(method, name, dtype, args, writable, to_device, to_host, tolerance)
            except Exception as exc:  # noqa: BLE001 - an override that cannot run is not used
                why = f"{dtype}: raised {type(exc).__name__}: {exc}"
            if why:
                return why
    return ""


def checked(ops, to_device, to_host):
    """``ops`` with every override that fails its probes replaced (see the module
    docstring); ``to_device``/``to_host`` move NumPy arrays to the backend and back."""
    for name in sorted(ops.overrides(), key=lambda n: n in COMPOSITE):
        reasons = []
        for cls in type(ops).__mro__:
            if name not in vars(cls) or cls is Ops:
                continue
            method = types.MethodType(vars(cls)[name], ops)
            why = disagreement(ops, method, name, to_device, to_host)
            if not why:
                break
            reasons.append(f"{cls.__name__}.{name}: {why}")
        else:
            method = types.MethodType(vars(Ops)[name], ops)
        if reasons:
            setattr(ops, name, method)
            ops.dropped[name] = "; ".join(reasons)
    return ops
