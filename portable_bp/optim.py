"""Optimizers as small init/update pairs with explicit state (in the manner of optax).

``state = opt.init(params)``; ``params, state = opt.update(params, grads, state, lr)``.
``params`` and ``grads`` are flat lists of arrays [W1, b1, W2, b2, ...]. The state is a
plain dict (a step count and lists of arrays), so a checkpoint can store it. On mutable
backends parameters and slots are updated in place; on JAX they are rebound.

Learning-rate schedules are plain callables ``epoch -> lr``; ``StepLR`` and ``CosineLR``
are provided, and remember their arguments so checkpoints can rebuild them.
"""

from __future__ import annotations

import math
from numbers import Real


def _check_rate(name, value, lo=0.0, hi=math.inf, lo_open=False):
    if isinstance(value, bool) or not isinstance(value, Real) or not (
            (value > lo if lo_open else value >= lo) and value < hi):
        bound = f"{'>' if lo_open else '>='} {lo}" + ("" if hi == math.inf else f" and < {hi}")
        raise ValueError(f"{name} must be a number {bound}, got {value!r}")
    return float(value)


def _axpy(y, x, alpha, mutable, consume_x=False):
    """y + alpha * x, written into y where the backend allows it (and, with ``consume_x``,
    scaling x in place instead of allocating alpha * x)."""
    if not mutable:
        return y + alpha * x
    if consume_x:
        x *= alpha
        y += x
    else:
        y += alpha * x
    return y


def _subtract(y, x):
    """y - x written into y."""
    y -= x
    return y


def _scale_add(y, beta, x, alpha, mutable):
    """beta * y + alpha * x, written into y where allowed (the moving averages of Adam)."""
    if mutable:
        y *= beta
        y += alpha * x
        return y
    return beta * y + alpha * x


class SGD:
    """E12, W <- W - lr * g, with optional momentum (PyTorch's convention:
    v <- momentum v + g; step along v, or g + momentum v for Nesterov) and L2 weight decay
    (g <- g + weight_decay * W)."""

    name = "sgd"

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.lr = lr if callable(lr) else _check_rate("lr", lr, lo_open=True)
        self.momentum = _check_rate("momentum", momentum, hi=1.0)
        self.nesterov = bool(nesterov)
        self.weight_decay = _check_rate("weight_decay", weight_decay)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")

    def config(self) -> dict:
        return dict(name=self.name, lr=_schedule_config(self.lr), momentum=self.momentum,
                    nesterov=self.nesterov, weight_decay=self.weight_decay)

    def init(self, params) -> dict:
        slots = {}
        if self.momentum:
            slots["velocity"] = [p * 0 for p in params]
        return {"step": 0, "slots": slots}

    def host_scalars(self, step, lr) -> dict:
        """Keyword arguments of :meth:`update` to compute on the host: none for SGD."""
        return {}

    @property
    def takes_lr_in_grads(self) -> bool:
        """Plain SGD's step is exactly -lr·g, so it can take gradients already multiplied
        by lr (backprop carries lr in Δ(L) at no cost) and update with one subtraction."""
        return not self.momentum and not self.weight_decay

    def update(self, params, grads, state, lr, mutable=True, kernels=None, consume_grads=False,
               lr_in_grads=False):
        """One step. ``kernels`` (a backend's fused ops, optional) does it in one pass per
        array; ``consume_grads`` lets it overwrite ``grads`` (fit's own temporaries);
        ``lr_in_grads`` (only where :attr:`takes_lr_in_grads`) says grads hold lr·g."""
        if lr_in_grads:
            if not self.takes_lr_in_grads:
                raise ValueError("lr_in_grads needs plain SGD (no momentum, no weight decay)")
            state["step"] += 1
            return [(_subtract(p, g) if mutable else p - g) for p, g in zip(params, grads)], state
        velocity = state["slots"].get("velocity")
        if kernels is not None and mutable and not self.weight_decay:
            for i, (p, g) in enumerate(zip(params, grads)):
                if velocity is None:
                    kernels.sgd(p, g, lr)
                else:
                    kernels.momentum(p, g, velocity[i], lr, self.momentum, self.nesterov)
            state["step"] += 1
            return list(params), state
        new = []
        for i, (p, g) in enumerate(zip(params, grads)):
            if self.weight_decay:
                g = g + self.weight_decay * p
            if velocity is not None:
                v = velocity[i] = _scale_add(velocity[i], self.momentum, g, 1.0, mutable)
                g = g + self.momentum * v if self.nesterov else v
                new.append(_axpy(p, g, -lr, mutable))
            else:
                new.append(_axpy(p, g, -lr, mutable, consume_grads and not self.weight_decay))
        state["step"] += 1
        return new, state


class Adam:
    """Adam (Kingma & Ba, 2015) with bias correction; ``weight_decay`` adds L2 to the
    gradient as PyTorch's Adam does (not the decoupled AdamW)."""

    name = "adam"

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.lr = lr if callable(lr) else _check_rate("lr", lr, lo_open=True)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"betas must be a pair (beta1, beta2), got {betas!r}")
        self.betas = (_check_rate("betas[0]", betas[0], hi=1.0), _check_rate("betas[1]", betas[1], hi=1.0))
        self.eps = _check_rate("eps", eps, lo_open=True)
        self.weight_decay = _check_rate("weight_decay", weight_decay)

    def config(self) -> dict:
        return dict(name=self.name, lr=_schedule_config(self.lr), betas=list(self.betas),
                    eps=self.eps, weight_decay=self.weight_decay)

    def init(self, params) -> dict:
        return {"step": 0, "slots": {"m": [p * 0 for p in params], "v": [p * 0 for p in params]}}

    def host_scalars(self, step, lr) -> dict:
        """The bias-corrected step size and eps of step ``step + 1``, in double precision on
        the host: a compiled step would otherwise compute beta ** t in the network's dtype."""
        b1, b2 = self.betas
        t = step + 1
        root = math.sqrt(1 - b2 ** t)
        return {"corrected": (lr * root / (1 - b1 ** t), self.eps * root)}  # eps on sqrt(v_hat), folded in

    def update(self, params, grads, state, lr, mutable=True, kernels=None, consume_grads=False,
               corrected=None):
        """One step; ``corrected`` is :meth:`host_scalars`' pair, computed here when not given."""
        if corrected is None:
            corrected = self.host_scalars(state["step"], lr)["corrected"]
        step_size, eps_hat = corrected
        b1, b2 = self.betas
        m, v = state["slots"]["m"], state["slots"]["v"]
        new = []
        xp = _namespace(params[0])  # for sqrt: resolved once per step, not per array
        for i, (p, g) in enumerate(zip(params, grads)):
            if self.weight_decay:
                g = g + self.weight_decay * p
            m[i] = _scale_add(m[i], b1, g, 1 - b1, mutable)
            v[i] = _scale_add(v[i], b2, g * g, 1 - b2, mutable)
            new.append(_axpy(p, m[i] / (xp.sqrt(v[i]) + eps_hat), -step_size, mutable, consume_x=True))
        state["step"] = state["step"] + 1
        return new, state


def _namespace(arr):
    import array_api_compat

    return array_api_compat.array_namespace(arr)


# -- learning-rate schedules -------------------------------------------------------------
class StepLR:
    """lr * gamma ** (epoch // step_size)."""

    def __init__(self, lr, step_size, gamma=0.1):
        self.lr = _check_rate("lr", lr, lo_open=True)
        if isinstance(step_size, bool) or not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"step_size must be a positive integer, got {step_size!r}")
        self.step_size, self.gamma = step_size, _check_rate("gamma", gamma, lo_open=True)

    def __call__(self, epoch: int) -> float:
        return self.lr * self.gamma ** (epoch // self.step_size)

    def config(self) -> dict:
        return dict(schedule="step", lr=self.lr, step_size=self.step_size, gamma=self.gamma)


class CosineLR:
    """Cosine annealing from lr to min_lr over total_epochs, then min_lr."""

    def __init__(self, lr, total_epochs, min_lr=0.0):
        self.lr = _check_rate("lr", lr, lo_open=True)
        if isinstance(total_epochs, bool) or not isinstance(total_epochs, int) or total_epochs < 1:
            raise ValueError(f"total_epochs must be a positive integer, got {total_epochs!r}")
        self.total_epochs, self.min_lr = total_epochs, _check_rate("min_lr", min_lr)

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


# -- names --------------------------------------------------------------------------------
DEFAULT_LR = {"sgd": 0.01, "momentum": 0.01, "nesterov": 0.01, "adam": 1e-3}


def get_optimizer(optimizer="sgd", lr=None, weight_decay=0.0):
    """An optimizer object from a name (``sgd``, ``momentum``, ``nesterov``, ``adam``)
    configured by ``lr`` and ``weight_decay``, or the object itself."""
    if hasattr(optimizer, "init") and hasattr(optimizer, "update"):
        if lr is not None:
            raise ValueError("lr configures optimizers given by name; set it on the optimizer object instead")
        return optimizer
    if not isinstance(optimizer, str):
        raise TypeError(f"optimizer must be a name or an object with init/update, got {type(optimizer).__name__}")
    if optimizer not in DEFAULT_LR:
        raise ValueError(f"optimizer must be one of {sorted(DEFAULT_LR)} or an optimizer object, got {optimizer!r}")
    lr = DEFAULT_LR[optimizer] if lr is None else lr
    if optimizer == "adam":
        return Adam(lr, weight_decay=weight_decay)
    return SGD(lr, momentum=0.0 if optimizer == "sgd" else 0.9, nesterov=optimizer == "nesterov",
               weight_decay=weight_decay)


def optimizer_from_config(cfg: dict):
    """Rebuild an optimizer from ``opt.config()`` (as stored in checkpoints)."""
    cfg = dict(cfg)
    name = cfg.pop("name")
    cfg["lr"] = _schedule_from_config(cfg["lr"])
    if cfg["lr"] is None:
        raise ValueError("this optimizer used a custom learning-rate callable, which a checkpoint "
                         "cannot store; pass the optimizer object again")
    cls = {"sgd": SGD, "adam": Adam}.get(name)
    if cls is None:
        raise ValueError(f"unknown optimizer {name!r} in config")
    return cls(**cfg)
