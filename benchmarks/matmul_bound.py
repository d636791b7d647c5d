"""The matrix products of a training step alone, as a lower bound on the step's time.

Per layer l with input A_l (batch x fan_in), weights W_l (fan_out x fan_in) and output
delta D_l (batch x fan_out), a step needs the forward product ``A_l @ W_l.T``, the weight
gradient ``D_l.T @ A_l`` and, for every layer but the first, the backward-data product
``D_l @ W_l``. They are run back to back into preallocated outputs, with nothing else in
between, for as many steps as an epoch has. No trainer can do the same step in less time
with the same library's matrix product, so "trainer samples/s / bound samples/s" is the
fraction of the possible that a trainer reaches.
"""

from __future__ import annotations

import numpy as np

from .configs import Config


def setup_bound(xp, cfg: Config, dtype: str, steps: int, sync=lambda: None, seed: int = 0):
    rng = np.random.default_rng(seed)
    b = cfg.batch

    def rand(*shape):
        return xp.asarray(rng.standard_normal(shape).astype(dtype))

    layers = []
    for fan_in, fan_out in zip(cfg.sizes[:-1], cfg.sizes[1:]):
        A, W, D = rand(b, fan_in), rand(fan_out, fan_in), rand(b, fan_out)
        out = (xp.empty((b, fan_out), dtype=dtype), xp.empty((fan_out, fan_in), dtype=dtype),
               xp.empty((b, fan_in), dtype=dtype))
        layers.append((A, W, D, out))
    matmul = xp.matmul

    def run_epoch():
        for _ in range(steps):
            for A, W, _D, (U, _G, _E) in layers:          # forward
                matmul(A, W.T, out=U)
            for l in range(len(layers) - 1, -1, -1):   # backward
                A, W, D, (U, G, E) = layers[l]
                matmul(D.T, A, out=G)
                if l > 0:
                    matmul(D, W, out=E)
        sync()

    return run_epoch
