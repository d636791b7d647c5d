"""The one check every Ops override passes (``backends._check.checked``) can fail, and says so.

Ops subclasses with one deliberately wrong override each: a transposed product, a wrong
activation derivative, one that raises, one that writes into a read-only input, one that
loses precision. The check must replace exactly that override, by the next class up its
MRO that passes (else the reference), keep the reason in ``ops.dropped``, and the registry,
``backends.describe()`` and ``portable-bp backends`` must report it. ``PORTABLE_BP_FUSED=0``
hands out the reference Ops instead.
"""

import importlib

import numpy as np
import pytest
from conftest import make_data

import portable_bp as pbp
from portable_bp import backends
from portable_bp.backends import Backend, numpy_blas
from portable_bp.backends._check import checked, disagreement
from portable_bp.backends.numpy_ops import NumpyOps
from portable_bp.ops import InPlaceOps, Ops

XP = backends.get("numpy").xp


class TransposedGrads(NumpyOps):
    """dense_grads returns Aᵀ Δ, the transpose of E10's Δᵀ A (no error raised)."""

    def dense_grads(self, g):
        return g.inputs.T @ g.delta, np.add.reduce(g.delta, axis=0)


class WrongTanhDerivative(NumpyOps):
    """backprop_delta multiplies by 1 - a for tanh (its derivative is 1 - a²)."""

    def backprop_delta(self, D, W, A, f):
        if f.name != "tanh":
            return super().backprop_delta(D, W, A, f)
        G = D @ W
        G *= 1.0 - A
        return G


class RaisingSgd(NumpyOps):
    def sgd(self, P, G, lr):
        raise RuntimeError("kernel launch failed")


class DeltaInOutputs(NumpyOps):
    """output_delta right in value, but computed in A's memory (A is read-only)."""

    def output_delta(self, U, A, Z, f, loss, scale):
        if loss.fused_output is None or Z.ndim == 1:
            return super().output_delta(U, A, Z, f, loss, scale)
        A -= Z
        A *= scale
        return A


class HalfPrecisionAdam(NumpyOps):
    """Adam's step computed in float16: right to three digits, wrong for the check."""

    def adam(self, P, G, M, V, step_size, eps_hat, b1, b2):
        P, M, V = Ops.adam(self, P, G, M, V, step_size, eps_hat, b1, b2)
        return P.astype(np.float16).astype(P.dtype), M, V


class NanBlindExtremes(NumpyOps):
    """extremes through nanmax/nanmin: right for finite data and inf, blind to a NaN."""

    def extremes(self, arrays):
        ends = [f(a) for a in arrays if a.size for f in (np.nanmax, np.nanmin)]
        return np.max(np.abs(ends)) if ends else np.asarray(0.0)


FAULTS = [  # (class, primitive, what replaces it, words of the reason)
    (TransposedGrads, "dense_grads", NumpyOps, "has shape"),
    (WrongTanhDerivative, "backprop_delta", NumpyOps, "differs from the reference"),
    (RaisingSgd, "sgd", InPlaceOps, "raised RuntimeError: kernel launch failed"),
    (DeltaInOutputs, "output_delta", NumpyOps, "wrote into its read-only argument 1"),
    (HalfPrecisionAdam, "adam", InPlaceOps, "float32: result 0 differs"),
    (NanBlindExtremes, "extremes", Ops, "differs from the reference by inf"),
]


def make(cls):
    return cls(XP, numpy_blas.find())


@pytest.mark.parametrize("cls,name,replacement,words", FAULTS, ids=[f[1] for f in FAULTS])
def test_a_wrong_override_is_replaced_by_the_next_class_that_passes(cls, name, replacement, words):
    ops = make(cls)
    others = [n for n in make(NumpyOps).overrides() if n != name]
    assert checked(ops, np.asarray, np.asarray) is ops
    assert list(ops.dropped) == [name]
    assert ops.dropped[name].startswith(f"{cls.__name__}.{name}: ") and words in ops.dropped[name]
    assert getattr(ops, name).__func__ is vars(replacement)[name]
    assert all(getattr(ops, n).__func__ is getattr(NumpyOps, n) for n in others)  # the rest kept


class SgdSignFlipped(InPlaceOps):
    def sgd(self, P, G, lr):
        P += lr * G
        return P

    def affine_activation(self, A, W, b, f):  # forgets the bias
        return f.forward(self.xp, A @ W.T)


class AlsoRaising(SgdSignFlipped):
    def sgd(self, P, G, lr):
        raise ValueError("no")

    def affine_activation(self, A, W, b, f):
        raise ValueError("no")


def test_every_failing_class_is_skipped_down_to_one_that_passes_or_the_reference():
    """Each failing class's reason is kept, most derived first; sgd falls to InPlaceOps'
    (which passes), affine_activation (which InPlaceOps does not define) to the reference."""
    ops = checked(AlsoRaising(XP), np.asarray, np.asarray)
    assert ops.sgd.__func__ is InPlaceOps.sgd
    assert ops.affine_activation.__func__ is Ops.affine_activation
    for name in ("sgd", "affine_activation"):
        reasons = ops.dropped[name].split("; ")
        assert [r.split(":")[0] for r in reasons] == [f"AlsoRaising.{name}", f"SgdSignFlipped.{name}"]
    assert sorted(ops.dropped) == ["affine_activation", "sgd"]


def test_checked_ops_compute_the_reference_after_a_drop():
    """After the check, the network trains with what replaced the faulty override."""
    ops = checked(make(WrongTanhDerivative), np.asarray, np.asarray)
    D, W = np.ones((4, 3)), np.full((3, 5), 0.5)
    A = np.tanh(np.linspace(-2, 2, 20).reshape(4, 5))
    f = pbp.activations.ACTIVATIONS["tanh"]
    np.testing.assert_array_equal(ops.backprop_delta(D, W, A, f), Ops(XP).backprop_delta(D, W, A, f))


def test_disagreement_is_empty_for_a_correct_method_and_names_the_fault():
    ops = make(NumpyOps)
    assert disagreement(ops, ops.backprop_delta, "backprop_delta", np.asarray, np.asarray) == ""
    wrong = make(WrongTanhDerivative)
    why = disagreement(wrong, wrong.backprop_delta, "backprop_delta", np.asarray, np.asarray)
    assert why.startswith("float32: result 0 differs from the reference by")


def test_ops_without_overrides_pass_unchanged():
    ops = Ops(XP)
    assert checked(ops, np.asarray, np.asarray) is ops and ops.dropped == {} and ops.overrides() == []


# -- end to end: the registry checks what it hands out and reports it ------------------------
def _faulty_numpy(device=None):
    base = backends.get("numpy")
    return Backend(name="faulty", xp=base.xp, device="cpu", spec="faulty", _to_numpy=np.asarray,
                   _owns=lambda a: type(a) is np.ndarray, ops=make(WrongTanhDerivative))


@pytest.mark.every_backend
def test_registry_describe_and_cli_report_a_dropped_override(registered_backend, capsys):
    name = registered_backend("faulty_numpy", _faulty_numpy)
    be = backends.get(name)
    assert list(be.ops.dropped) == ["backprop_delta"]
    assert be.ops.backprop_delta.__func__ is NumpyOps.backprop_delta  # still an override: NumpyOps'
    assert backends.hot_path(be) == f"numpy+blas ({len(make(NumpyOps).overrides())} overrides)"
    row = {r["spec"]: r for r in backends.describe()}[name]
    assert row["available"] and row["dropped"] == be.ops.dropped
    from portable_bp.cli import main

    assert main(["backends"]) == 0
    out = capsys.readouterr().out
    assert f"{name}: its backprop_delta override failed its check and is not used: WrongTanhDerivative" in out
    net = pbp.Network([3, 5, 5, 2], activation="tanh", backend=name, dtype="float64", seed=0)
    ref = pbp.Network([3, 5, 5, 2], activation="tanh", backend="numpy", dtype="float64", seed=0)
    ref.fused_kernels = False
    X, Z = make_data(6, 3, 2, "mse")
    for (a, b), (c, d) in zip(net.loss_and_grads(X, Z)[1], ref.loss_and_grads(X, Z)[1]):
        np.testing.assert_allclose(a, c, rtol=1e-12), np.testing.assert_allclose(b, d, rtol=1e-12)


MODULES = {"numpy": "numpy_", "torch": "torch_", "jax": "jax_", "array_api_strict": "strict",
           "cupy": "cupy_"}


# its JAX case builds two JAX backends, each with its Ops check (~0.7 GB at its peak)
@pytest.mark.jax_fresh
def test_fused_off_environment_hands_out_the_reference_ops(xp_spec, registered_backend, monkeypatch):
    """PORTABLE_BP_FUSED=0 (read when a backend is made): the registry's backend runs
    ``reference_ops``; without it (or with another value) the backend's own Ops."""
    lib, _, device = xp_spec.partition(":")
    make_backend = importlib.import_module(f"portable_bp.backends.{MODULES[lib]}").make
    for value, off in (("0", True), ("1", False), (None, False)):
        if value is None:
            monkeypatch.delenv("PORTABLE_BP_FUSED", raising=False)
        else:
            monkeypatch.setenv("PORTABLE_BP_FUSED", value)
        assert backends.kernels_off() is off
        name = registered_backend(f"fresh_{lib}_{value}", make_backend)
        be = backends.get(f"{name}:{device}" if device else name)
        assert (be.ops is be.reference_ops) is off
        if off:
            assert be.ops.overrides() == [] and backends.hot_path(be) in ("array-api", "jit")
            net = pbp.Network([3, 2], backend=be, seed=0)
            assert net.ops is be.reference_ops and not net.fused_kernels
        else:
            assert type(be.ops) is type(backends.get(xp_spec).ops)


def test_probes_run_only_in_the_dtypes_the_backend_holds():
    """JAX without x64 rounds float64 to float32: its overrides are probed in float32 only,
    not dropped for a float64 'error' that is the rounding itself."""
    from portable_bp.backends._check import held_dtypes

    def to_float32_device(a):
        return a.astype(np.float32) if a.dtype == np.float64 else a

    assert held_dtypes(np.asarray, np.asarray) == ["float32", "float64"]
    assert held_dtypes(to_float32_device, np.asarray) == ["float32"]
    ops = make(NumpyOps)
    assert checked(ops, to_float32_device, np.asarray).dropped == {}


class OwnFiniteOrNan(NumpyOps):
    """A correct finite_or_nan override (the reference's formula, as its own method)."""

    def finite_or_nan(self, value, arrays):
        return Ops.finite_or_nan(self, value, arrays)


def test_the_non_finite_probes_drop_no_correct_override_even_with_warnings_as_errors():
    """0 · inf in the NaN and inf probes warns in NumPy; under ``-W error`` that warning
    must not pass for a fault of the override."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ops = checked(make(OwnFiniteOrNan), np.asarray, np.asarray)
    assert ops.dropped == {} and "finite_or_nan" in ops.overrides()
