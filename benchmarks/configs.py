"""The benchmark networks (A-E), their synthetic data and their shared initial weights.

Every contender trains the same network on the same data with the same update rule
(plain SGD, no momentum, no shuffling), so all of them do identical arithmetic and only
the speed of doing it differs. Data and weights are drawn once on the host from seeded
NumPy Generators; each contender then copies them to where it trains.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

LR = 0.01
SEED = 0


@dataclass(frozen=True)
class Config:
    name: str
    sizes: tuple[int, ...]
    activation: str          # hidden layers: "relu" or "sigmoid"
    output_activation: str   # "softmax" or "sigmoid"
    loss: str                # "cross_entropy" or "mse" (halved, mean over the batch)
    batch: int
    steps: int               # SGD steps per epoch (one timed round)
    quick_steps: int         # steps per epoch under --quick
    gpu_only: bool = False
    gpu_steps: int | None = None  # steps per epoch on the GPU, when not ``steps``

    @property
    def n_samples(self) -> int:
        return self.batch * self.steps

    def describe(self) -> str:
        return (f"{self.name}: {'-'.join(map(str, self.sizes))} {self.activation}/"
                f"{self.output_activation} {self.loss}, batch {self.batch}")


# Steps per epoch are picked so that one round takes roughly 0.2-1 s for the typical
# contender on 2 CPU cores (E: on one GPU). Shorter rounds are at the mercy of the host's
# bursts: with 80 ms rounds B's per-round ratio to the hand-written trainer ranged 0.44-1.49
# within one run, so B and C run 4x and 2x the steps they first had on the CPU. On the GPU
# they keep the first counts (256, 64): launch-bound eager contenders do B at ~30k samples/s
# there, and gpu_check.sh must fit in 6 minutes.
CONFIGS = {
    "A": Config("A", (3, 4, 2), "sigmoid", "sigmoid", "mse", 1, 2048, 256),
    "B": Config("B", (64, 128, 128, 10), "relu", "softmax", "cross_entropy", 32, 1024, 32,
                gpu_steps=256),
    "C": Config("C", (784, 256, 256, 10), "relu", "softmax", "cross_entropy", 128, 128, 8,
                gpu_steps=64),
    "D": Config("D", (784, 1024, 1024, 10), "relu", "softmax", "cross_entropy", 512, 8, 2),
    "E": Config("E", (1024, 4096, 4096, 4096, 10), "relu", "softmax", "cross_entropy", 4096, 16, 4,
                gpu_only=True),
}


def with_steps(cfg: Config, steps: int) -> Config:
    """The same network with a different epoch length."""
    from dataclasses import replace

    return replace(cfg, steps=max(1, int(steps)))


def make_data(cfg: Config, dtype: str, seed: int = SEED):
    """(X, Y) on the host: X standard normal; Y integer labels for cross-entropy, or a
    one-hot float target (of a random label) for the MSE network."""
    rng = np.random.default_rng(seed)
    n, d, k = cfg.n_samples, cfg.sizes[0], cfg.sizes[-1]
    X = rng.standard_normal((n, d), dtype=np.float64).astype(dtype)
    labels = rng.integers(0, k, size=n)
    if cfg.loss == "cross_entropy":
        return X, labels.astype(np.int64)
    return X, np.eye(k, dtype=dtype)[labels]


def init_params(cfg: Config, dtype: str, seed: int = SEED):
    """[(W, b), ...] with W of shape (fan_out, fan_in): He-scaled normal weights for ReLU,
    Xavier-scaled for sigmoid, zero biases. Contenders that accept weights start from these."""
    rng = np.random.default_rng(seed + 1)
    gain = 2.0 if cfg.activation == "relu" else 1.0
    params = []
    for fan_in, fan_out in zip(cfg.sizes[:-1], cfg.sizes[1:]):
        W = rng.standard_normal((fan_out, fan_in)) * np.sqrt(gain / fan_in)
        params.append((W.astype(dtype), np.zeros(fan_out, dtype=dtype)))
    return params
