"""Activation functions f and their backward rules (E1, E7, E8, E9), in a small table.

Each entry pairs ``forward(xp, u) -> a`` with ``backward(xp, a, g) -> g ⊙ f'(u)``: the
vector-Jacobian product that E8/E9 multiply by. Every f' here can be written from the
output a = f(u) alone (sigmoid a(1-a), tanh 1-a², the rectifiers' sign of a), so the
backward pass needs only the activations the forward pass keeps, not U. ``g`` is always
a temporary of the caller's (a fresh product or difference), so ``backward`` multiplies
it in place: ``g *= ...`` writes into it on mutable backends and rebinds on JAX. Softmax
is a whole-row function and exp (the Poisson output) overflows for large inputs: both are
allowed only on the output layer. A constant that meets an array in a function of two
arrays (``maximum``, ``minimum``) is a typed scalar (:func:`~portable_bp.scalars.typed`:
made once per dtype and device); the operators take Python numbers as they are.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from .scalars import typed

LEAKY_SLOPE = 0.01


class Activation(NamedTuple):
    """One row of the table: adding an activation is adding a row (the default initial
    weights and the Ops check's probes come from here)."""

    name: str
    forward: Callable   # (xp, u) -> a
    backward: Callable  # (xp, a, g) -> g ⊙ f'(u), with a = f(u)
    output_only: bool = False
    #: the initial weights that suit it as a hidden activation (portable_bp.init): He for
    #: the rectifiers, Glorot/Xavier for the saturating and linear ones
    default_init: str = "xavier"


def sigmoid(xp, u):
    """E1: f(u) = 1 / (1 + exp(-u)), as exp(min(u, 0)) / (1 + exp(-|u|)).

    Both exponents are <= 0, so nothing overflows, and both tails keep full relative
    precision; unlike a ``where`` over the two branches it runs without data-dependent
    branches (4x faster on large random arrays)."""
    return xp.exp(xp.minimum(u, typed(xp, 0.0, u))) / (1.0 + xp.exp(-xp.abs(u)))


def sigmoid_backward(xp, a, g):
    """E3: f'(u) = f(u)(1 - f(u)), from the output a."""
    g *= a * (1.0 - a)
    return g


def tanh(xp, u):
    return xp.tanh(u)


def tanh_backward(xp, a, g):
    """tanh'(u) = 1 - tanh(u)^2, from the output a."""
    g *= 1.0 - a * a
    return g


def relu(xp, u):
    return xp.maximum(u, typed(xp, 0.0, u))


def _positive(xp, a, dtype):
    """1.0 where a > 0, else 0.0: a mask to multiply by (``where`` with random signs is
    branchy and ~15x slower on large arrays)."""
    return xp.astype(a > 0, dtype)


def relu_backward(xp, a, g):
    """relu'(u) = 1 where u > 0, else 0 (the subgradient 0 at the kink, like PyTorch)."""
    g *= _positive(xp, a, g.dtype)
    return g


def leaky_relu(xp, u):
    """max(u, 0.01 u): the same as u for u > 0 and 0.01 u below, without a branch."""
    return xp.maximum(u, LEAKY_SLOPE * u)


def leaky_relu_backward(xp, a, g):
    """leaky_relu'(u) = 1 where u > 0 (equivalently a > 0), else the slope 0.01."""
    g *= _positive(xp, a, g.dtype) * (1.0 - LEAKY_SLOPE) + LEAKY_SLOPE
    return g


def identity(xp, u):
    return u


def identity_backward(xp, a, g):
    return g


def shifted_exp(xp, u):
    """s = u - max(u) per row, and exp(s): the overflow-free core of softmax and log-softmax."""
    s = u - xp.max(u, axis=-1, keepdims=True)
    return s, xp.exp(s)


def softmax(xp, u):
    """Row-wise softmax exp(u) / Σ exp(u), computed on shifted logits so exp never overflows."""
    e = shifted_exp(xp, u)[1]
    return e / xp.sum(e, axis=-1, keepdims=True)


def softmax_backward(xp, a, g):
    """Vector-Jacobian product of softmax: a ⊙ (g - Σ_k g_k a_k), row by row."""
    return a * (g - xp.sum(g * a, axis=-1, keepdims=True))


def exp(xp, u):
    """exp(u): the log link's inverse, for outputs that must be positive (Poisson)."""
    return xp.exp(u)


def exp_backward(xp, a, g):
    """exp'(u) = exp(u) = a."""
    g *= a
    return g


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation("sigmoid", sigmoid, sigmoid_backward),
    "tanh": Activation("tanh", tanh, tanh_backward),
    "relu": Activation("relu", relu, relu_backward, default_init="he"),
    "leaky_relu": Activation("leaky_relu", leaky_relu, leaky_relu_backward, default_init="he"),
    "identity": Activation("identity", identity, identity_backward),
    "softmax": Activation("softmax", softmax, softmax_backward, output_only=True),
    "exp": Activation("exp", exp, exp_backward, output_only=True),
}


def hidden_activations() -> list[Activation]:
    """Every activation a hidden layer may use, in table order."""
    return [a for a in ACTIVATIONS.values() if not a.output_only]


def get_activation(name: str, *, output: bool, what: str = "activation") -> Activation:
    """The table entry for ``name``, or a ValueError naming the argument and the choices."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a string, got {type(name).__name__}")
    act = ACTIVATIONS.get(name)
    if act is None:
        raise ValueError(f"{what} must be one of {sorted(ACTIVATIONS)}, got {name!r}")
    if act.output_only and not output:
        raise ValueError(f"{what}={name!r} is allowed only on the output layer (output_activation)")
    return act
