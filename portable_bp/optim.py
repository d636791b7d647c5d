"""Optimizers as small init/update pairs with explicit state (optax's shape), and schedules.

An optimizer works layer by layer, as the training step hands it each layer's gradient:

* ``state = opt.init(params)``: one state entry per layer, a dict of slot name -> (slot of
  W, slot of b) (``{}`` for plain SGD);
* ``hyper = opt.hyperparams(step, lr)``: the step's scalars, computed on the host in double
  precision (a compiled step would otherwise compute Adam's ``beta ** t`` in the network's
  dtype);
* ``(W, b), layer_state = opt.update(grad, layer_state, (W, b), ops=ops, **hyper)``: one
  layer's update from its gradient, a :class:`~portable_bp.ops.DenseGrad` (E10's factors;
  ``ops.dense_grads(grad)`` gives the arrays (dW, db)).

Every array operation goes through ``ops`` (:class:`~portable_bp.ops.Ops`), which decides
whether to write in place; the optimizers only use what it returns. A custom optimizer
subclasses :class:`Optimizer` (or provides the same three methods).

Learning-rate schedules are plain callables ``epoch -> lr``; :class:`StepLR` and
:class:`CosineLR` remember their arguments so that checkpoints can rebuild them.
"""

from __future__ import annotations

import math
from typing import Any

from ._validate import integer, number
from .ops import DenseGrad, Ops

#: every optimizer class that can be named (``fit(optimizer="adamw")``, the CLI, checkpoints),
#: by its ``name``: a subclass with a ``name`` and a ``default_lr`` registers itself
REGISTRY: dict[str, type[Optimizer]] = {}


class Optimizer:
    """The optimizer protocol, with defaults: ``hyperparams`` passes the learning rate on.

    A subclass that sets ``name`` and ``default_lr`` is registered under that name (and
    under each of its ``presets``: other names for configurations of it, as ``momentum``
    is SGD with momentum 0.9); its ``config()`` (constructor arguments as JSON) is what
    checkpoints store and :func:`optimizer_from_config` rebuilds it from."""

    name = "custom"
    slots: tuple[str, ...] = ()
    #: the learning rate the optimizer gets by name when none is given (also the CLI's)
    default_lr: float | None = None
    #: other names for configurations of this class: name -> (constructor arguments, lr)
    presets: dict[str, tuple[dict, float]] = {}

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in vars(cls) and cls.default_lr is not None:
            for name in (cls.name, *cls.presets):
                REGISTRY[name] = cls

    def __init__(self, lr: Any = None):
        self.lr = lr

    def init(self, params) -> list:
        """One state entry per layer: slot name -> (zeros like W, zeros like b)."""
        return [{name: (W * 0, b * 0) for name in self.slots} for W, b in params]

    def hyperparams(self, step: int, lr: float) -> dict:
        """Keyword arguments of :meth:`update` for the step after ``step`` steps."""
        return {"lr": lr}

    def hyperparams_for(self, first: int, steps: int, lr: float) -> dict:
        """The scalars of ``steps`` steps from step ``first`` at once (a compiled epoch takes
        them as arrays): a value the same for every step stays one number, one that changes
        is a list with a value per step."""
        return hyperparams_over(self, first, steps, lr)

    def update(self, grad: DenseGrad, state: dict, param: tuple, *, ops: Ops, **hyper) -> tuple:
        raise NotImplementedError

    def config(self) -> dict | None:
        """The constructor arguments as JSON-able values (checkpoints store them)."""
        return None


def hyperparams_over(optimizer, first: int, steps: int, lr: float) -> dict:
    """``optimizer.hyperparams_for(first, steps, lr)`` where it has one, else the same from
    its ``hyperparams``, step by step."""
    own = getattr(optimizer, "hyperparams_for", None)
    if own is not None and getattr(own, "__func__", None) is not Optimizer.hyperparams_for:
        return own(first, steps, lr)
    per_step = [optimizer.hyperparams(first + i, lr) for i in range(steps)]
    return {k: (per_step[0][k] if all(h[k] == per_step[0][k] for h in per_step) else
                [h[k] for h in per_step]) for k in per_step[0]}


def _with_weight_decay(grads, param, weight_decay):
    """g + weight_decay·p for each of (dW, db): L2 regularization added to the gradient."""
    if not weight_decay:
        return grads
    return tuple(g + weight_decay * p for g, p in zip(grads, param))


class SGD(Optimizer):
    """E12, W ← W − lr·g, with optional momentum (PyTorch's convention: v ← momentum·v + g;
    step along v, or g + momentum·v for Nesterov) and L2 weight decay (g ← g + wd·W)."""

    name = "sgd"
    default_lr = 0.1
    presets = {"momentum": ({"momentum": 0.9}, 0.05), "nesterov": ({"momentum": 0.9, "nesterov": True}, 0.05)}

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr if callable(lr) else number(lr, "lr", lo_open=True))
        self.momentum = number(momentum, "momentum", hi=1.0)
        self.nesterov = bool(nesterov)
        self.weight_decay = number(weight_decay, "weight_decay")
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.slots = ("velocity",) if self.momentum else ()
        self._hyper: dict = {}

    @property
    def plain(self) -> bool:
        """E12 as it stands: no momentum, no weight decay."""
        return not self.momentum and not self.weight_decay

    def config(self) -> dict:
        return dict(name=self.name, lr=_schedule_config(self.lr), momentum=self.momentum,
                    nesterov=self.nesterov, weight_decay=self.weight_decay)

    def hyperparams(self, step, lr):
        """``{"lr": lr}``, the same dict while lr stays the same (one fewer allocation per step)."""
        if self._hyper.get("lr") != lr:
            self._hyper = {"lr": lr}
        return self._hyper

    def hyperparams_for(self, first, steps, lr):
        return {"lr": lr}  # the same for every step of an epoch

    def update(self, grad, state, param, *, ops, lr):
        if self.plain:
            return ops.sgd_dense(param[0], param[1], grad, lr), state  # E12: W − lr·Δᵀ A(l-1), b − lr·Σ_rows Δ
        grads = _with_weight_decay(ops.dense_grads(grad), param, self.weight_decay)
        if not self.momentum:
            return tuple(ops.sgd(p, g, lr) for p, g in zip(param, grads)), state
        moved = [ops.momentum(p, g, v, lr, self.momentum, self.nesterov)
                 for p, g, v in zip(param, grads, state["velocity"])]
        return (moved[0][0], moved[1][0]), {"velocity": (moved[0][1], moved[1][1])}


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015) with bias correction; ``weight_decay`` adds L2 to the
    gradient as PyTorch's Adam does (not the decoupled AdamW)."""

    name = "adam"
    slots = ("m", "v")
    default_lr = 1e-3

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(lr if callable(lr) else number(lr, "lr", lo_open=True))
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (number(betas[0], "betas[0]", hi=1.0), number(betas[1], "betas[1]", hi=1.0))
        self.eps = number(eps, "eps", lo_open=True)
        self.weight_decay = number(weight_decay, "weight_decay")

    def config(self) -> dict:
        return dict(name=self.name, lr=_schedule_config(self.lr), betas=list(self.betas),
                    eps=self.eps, weight_decay=self.weight_decay)

    def hyperparams(self, step, lr):
        """The bias-corrected step size and eps of step ``step + 1``: Adam's
        lr·m̂/(√v̂ + eps) is step_size·m/(√v + eps_hat) with both corrections folded in."""
        b1, b2 = self.betas
        root = math.sqrt(1 - b2 ** (step + 1))
        return {"step_size": lr * root / (1 - b1 ** (step + 1)), "eps_hat": self.eps * root}

    def update(self, grad, state, param, *, ops, step_size, eps_hat):
        grads = _with_weight_decay(ops.dense_grads(grad), param, self.weight_decay)
        moved = [ops.adam(p, g, m, v, step_size, eps_hat, *self.betas)
                 for p, g, m, v in zip(param, grads, state["m"], state["v"])]
        return (moved[0][0], moved[1][0]), {"m": (moved[0][1], moved[1][1]),
                                            "v": (moved[0][2], moved[1][2])}


class AdamW(Adam):
    """AdamW as PyTorch defines it (Loshchilov & Hutter, 2019): the weight decay is
    decoupled from the gradient, P ← P·(1 − lr·weight_decay) before Adam's step, on every
    parameter (biases too, as ``torch.optim.AdamW(model.parameters())``)."""

    name = "adamw"
    default_lr = 1e-3

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01):
        super().__init__(lr, betas, eps, weight_decay)

    def hyperparams(self, step, lr):
        return {**super().hyperparams(step, lr), "keep": 1.0 - lr * self.weight_decay}

    def update(self, grad, state, param, *, ops, step_size, eps_hat, keep):
        param = tuple(ops.decay(p, keep) for p in param) if self.weight_decay else param
        moved = [ops.adam(p, g, m, v, step_size, eps_hat, *self.betas)
                 for p, g, m, v in zip(param, ops.dense_grads(grad), state["m"], state["v"])]
        return (moved[0][0], moved[1][0]), {"m": (moved[0][1], moved[1][1]),
                                            "v": (moved[0][2], moved[1][2])}


class RMSprop(Optimizer):
    """RMSprop as PyTorch defines it (``torch.optim.RMSprop``): a running mean of squared
    gradients (smoothing ``alpha``), optionally ``centered`` (divided by the variance's
    root instead), with optional ``momentum`` and L2 ``weight_decay`` added to the gradient."""

    name = "rmsprop"
    default_lr = 1e-2

    def __init__(self, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        super().__init__(lr if callable(lr) else number(lr, "lr", lo_open=True))
        self.alpha = number(alpha, "alpha", hi=1.0)
        self.eps = number(eps, "eps", lo_open=True)
        self.weight_decay = number(weight_decay, "weight_decay")
        self.momentum = number(momentum, "momentum", hi=1.0)
        self.centered = bool(centered)
        self.slots = ("square_avg",) + (("grad_avg",) if self.centered else ()) + \
            (("momentum_buffer",) if self.momentum else ())

    def config(self) -> dict:
        return dict(name=self.name, lr=_schedule_config(self.lr), alpha=self.alpha, eps=self.eps,
                    weight_decay=self.weight_decay, momentum=self.momentum, centered=self.centered)

    def update(self, grad, state, param, *, ops, lr):
        grads = _with_weight_decay(ops.dense_grads(grad), param, self.weight_decay)
        unused = (None, None)
        moved = [ops.rmsprop(p, g, s, m, b, lr, self.alpha, self.eps, self.momentum, self.centered)
                 for p, g, s, m, b in zip(param, grads, state["square_avg"], state.get("grad_avg", unused),
                                          state.get("momentum_buffer", unused))]
        new = {"square_avg": (moved[0][1], moved[1][1])}
        if self.centered:
            new["grad_avg"] = (moved[0][2], moved[1][2])
        if self.momentum:
            new["momentum_buffer"] = (moved[0][3], moved[1][3])
        return (moved[0][0], moved[1][0]), new


# -- optimizer state as checkpoints store it ----------------------------------------------
def flat_slots(state: list) -> dict:
    """Per-layer state -> {slot name: [slot of W0, of b0, of W1, of b1, ...]}."""
    names = state[0].keys() if state else ()
    return {name: [a for layer in state for a in layer[name]] for name in names}


def layer_state(optimizer, slots: dict, n_layers: int, what: str = "optimizer state") -> list:
    """{slot name: flat list} -> per-layer state, checked against ``optimizer``'s own slots
    (a renamed or foreign slot is a ValueError naming both sets, never a KeyError later)."""
    expected = set(getattr(optimizer, "slots", ()))
    if set(slots) != expected:
        raise ValueError(f"{what} has slots {sorted(slots)}, but {getattr(optimizer, 'name', 'the optimizer')} "
                         f"keeps {sorted(expected)}")
    for name, arrays in slots.items():
        if len(arrays) != 2 * n_layers:
            raise ValueError(f"{what}: slot {name!r} has {len(arrays)} arrays, expected {2 * n_layers}")
    return [{name: (arrays[2 * l], arrays[2 * l + 1]) for name, arrays in slots.items()}
            for l in range(n_layers)]


# -- learning-rate schedules -------------------------------------------------------------
class StepLR:
    """lr · gamma ** (epoch // step_size)."""

    def __init__(self, lr, step_size, gamma=0.1):
        self.lr = number(lr, "lr", lo_open=True)
        self.step_size = integer(step_size, "step_size", minimum=1)
        self.gamma = number(gamma, "gamma", lo_open=True)

    def __call__(self, epoch: int) -> float:
        return self.lr * self.gamma ** (epoch // self.step_size)

    def config(self) -> dict:
        return dict(schedule="step", lr=self.lr, step_size=self.step_size, gamma=self.gamma)


class CosineLR:
    """Cosine annealing from lr to min_lr over total_epochs, then min_lr."""

    def __init__(self, lr, total_epochs, min_lr=0.0):
        self.lr = number(lr, "lr", lo_open=True)
        self.total_epochs = integer(total_epochs, "total_epochs", minimum=1)
        self.min_lr = number(min_lr, "min_lr")

    def __call__(self, epoch: int) -> float:
        t = min(epoch, self.total_epochs) / self.total_epochs
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * t))

    def config(self) -> dict:
        return dict(schedule="cosine", lr=self.lr, total_epochs=self.total_epochs, min_lr=self.min_lr)


SCHEDULES = {"step": StepLR, "cosine": CosineLR}


def _schedule_config(lr):
    if not callable(lr):
        return lr
    if hasattr(lr, "config"):
        return lr.config()
    return None  # an arbitrary callable cannot be stored; a checkpoint then needs it again


def _schedule_from_config(cfg):
    if isinstance(cfg, dict):
        cfg = dict(cfg)
        return SCHEDULES[cfg.pop("schedule")](**cfg)
    return cfg


def learning_rate(optimizer, epoch: int):
    """The optimizer's learning rate for ``epoch`` as a Python float (None for custom
    optimizers without one). A schedule's value may be a NumPy scalar or 0-d array (a NumPy
    float64 would otherwise promote a float32 step to float64); anything but a finite number
    >= 0 is refused with the epoch named. Unlike a fixed lr, 0 is allowed: warm-ups start
    there and :class:`CosineLR` ends there."""
    lr = getattr(optimizer, "lr", None)
    if not callable(lr):
        return lr
    value = lr(epoch)
    if hasattr(value, "__float__") and not isinstance(value, bool):
        try:
            value = float(value)
        except (TypeError, ValueError):
            pass  # e.g. a 1-element array: refused below, by name
    return number(value, f"the learning-rate schedule's value for epoch {epoch}")


# -- names --------------------------------------------------------------------------------
def default_lr(name: str) -> float:
    """The learning rate the optimizer called ``name`` gets when none is given: rates that
    train the bundled examples well on standardized inputs."""
    cls = REGISTRY[name]
    rate = cls.presets[name][1] if name in cls.presets else cls.default_lr
    assert rate is not None  # only classes with a default_lr register
    return rate


def optimizer_names() -> tuple[str, ...]:
    """Every name :func:`get_optimizer` takes, in registration order."""
    return tuple(REGISTRY)


def default_lrs() -> dict[str, float]:
    """{name: default learning rate} for every named optimizer (the CLI's help shows it)."""
    return {name: default_lr(name) for name in REGISTRY}


PROTOCOL = ("init", "hyperparams", "update")


def get_optimizer(optimizer="sgd", lr=None, weight_decay=None):
    """An optimizer object from a name (see :func:`optimizer_names`: ``sgd``, ``momentum``,
    ``nesterov``, ``adam``, ``adamw``, ``rmsprop``) configured by ``lr`` and
    ``weight_decay`` (None: the class's default), or the object itself."""
    if not isinstance(optimizer, str):
        missing = [m for m in PROTOCOL if not callable(getattr(optimizer, m, None))]
        if missing:
            raise TypeError(f"optimizer must be a name or an object with {', '.join(PROTOCOL)} "
                            f"(subclass portable_bp.optim.Optimizer); {type(optimizer).__name__} "
                            f"lacks {', '.join(missing)}")
        if lr is not None:
            raise ValueError("lr configures optimizers given by name; set it on the optimizer object instead")
        return optimizer
    if optimizer not in REGISTRY:
        raise ValueError(f"optimizer must be one of {sorted(REGISTRY)} or an optimizer object, got {optimizer!r}")
    cls = REGISTRY[optimizer]
    kwargs = dict(cls.presets[optimizer][0]) if optimizer in cls.presets else {}
    if weight_decay is not None:
        kwargs["weight_decay"] = weight_decay
    return cls(default_lr(optimizer) if lr is None else lr, **kwargs)


def optimizer_from_config(cfg: dict):
    """Rebuild an optimizer from ``opt.config()`` (as stored in checkpoints)."""
    cfg = dict(cfg)
    name = cfg.pop("name", None)
    cls = REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None or name in cls.presets:
        raise ValueError(f"unknown optimizer {name!r} in config")
    cfg["lr"] = _schedule_from_config(cfg.get("lr"))
    if cfg["lr"] is None:
        raise ValueError("this optimizer used a custom learning-rate callable, which a checkpoint "
                         "cannot store; pass the optimizer object again")
    return cls(**cfg)
