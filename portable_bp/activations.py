"""Activation functions f and their backward rules (E1, E7, E8, E9), in a small table.

Each entry pairs ``forward(xp, u) -> a`` with ``backward(xp, u, a, g) -> g ⊙ f'(u)``: the
vector-Jacobian product that E8/E9 multiply by. For element-wise f that is ``g * f'(u)``,
with f' written from the already computed output ``a`` where it can be (sigmoid, tanh,
relu), so the backward pass needs nothing the forward pass did not keep. Softmax is a
whole-row function and is allowed only on the output layer.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

LEAKY_SLOPE = 0.01


class Activation(NamedTuple):
    name: str
    forward: Callable   # (xp, u) -> a
    backward: Callable  # (xp, u, a, g) -> g ⊙ f'(u)
    output_only: bool = False


def sigmoid(xp, u):
    """E1: f(u) = 1 / (1 + exp(-u)), written with exp(-|u|) so no exp ever overflows."""
    e = xp.exp(-xp.abs(u))
    r = 1.0 / (1.0 + e)
    return xp.where(u >= 0, r, e * r)


def sigmoid_backward(xp, u, a, g):
    """E3: f'(u) = f(u)(1 - f(u)), from the output a."""
    return g * (a * (1.0 - a))


def tanh(xp, u):
    return xp.tanh(u)


def tanh_backward(xp, u, a, g):
    """tanh'(u) = 1 - tanh(u)^2, from the output a."""
    return g * (1.0 - a * a)


def relu(xp, u):
    return xp.maximum(u, 0.0)


def relu_backward(xp, u, a, g):
    """relu'(u) = 1 where u > 0, else 0 (the subgradient 0 at the kink, like PyTorch)."""
    return xp.where(a > 0, g, 0.0)


def leaky_relu(xp, u):
    return xp.where(u > 0, u, LEAKY_SLOPE * u)


def leaky_relu_backward(xp, u, a, g):
    """leaky_relu'(u) = 1 where u > 0, else the slope 0.01."""
    return xp.where(u > 0, g, LEAKY_SLOPE * g)


def identity(xp, u):
    return u


def identity_backward(xp, u, a, g):
    return g


def softmax(xp, u):
    """Row-wise softmax, shifted by the row maximum so exp never overflows."""
    e = xp.exp(u - xp.max(u, axis=-1, keepdims=True))
    return e / xp.sum(e, axis=-1, keepdims=True)


def softmax_backward(xp, u, a, g):
    """Vector-Jacobian product of softmax: a ⊙ (g - Σ_k g_k a_k), row by row."""
    return a * (g - xp.sum(g * a, axis=-1, keepdims=True))


ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation("sigmoid", sigmoid, sigmoid_backward),
    "tanh": Activation("tanh", tanh, tanh_backward),
    "relu": Activation("relu", relu, relu_backward),
    "leaky_relu": Activation("leaky_relu", leaky_relu, leaky_relu_backward),
    "identity": Activation("identity", identity, identity_backward),
    "softmax": Activation("softmax", softmax, softmax_backward, output_only=True),
}


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
