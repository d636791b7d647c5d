"""The tightest hand-written NumPy trainer we know how to write: the CPU anchor.

Everything a step touches is allocated once, for the batch size, before the first step:
each layer's pre-activation/activation buffer, each delta, each weight and bias gradient,
and the scratch arrays of the activations. The step then only calls NumPy functions with
``out=`` into those buffers, on views of the data: no allocation, no temporaries, no
Python object per step beyond NumPy's own call overhead. It trains exactly the network of
:class:`~benchmarks.handwritten_numpy.HandwrittenMLP` (same math, same order of the SGD
updates), so the two give the same trajectory; this one is what "a competent engineer
shaving every microsecond off a NumPy loop" writes, which is what config A (single-sample
SGD, all overhead) must be measured against.
"""

from __future__ import annotations

import numpy as np


class TightNumpyMLP:
    def __init__(self, params, activation: str, output_activation: str, lr: float, batch: int):
        self.W = [np.array(W, copy=True) for W, _ in params]
        self.b = [np.array(b, copy=True) for _, b in params]
        self.relu = activation == "relu"
        self.softmax = output_activation == "softmax"
        self.lr, self.batch = lr, batch
        dt = self.W[0].dtype
        widths = [W.shape[0] for W in self.W]
        self.a = [np.empty((batch, n), dt) for n in widths]       # activations (last: outputs)
        self.d = [np.empty((batch, n), dt) for n in widths]       # deltas
        self.t = [np.empty((batch, n), dt) for n in widths]       # scratch per layer
        self.gW = [np.empty_like(W) for W in self.W]
        self.gb = [np.empty_like(b) for b in self.b]
        self.mx = np.empty((batch, 1), dt)
        self.rows = np.arange(batch)

    def _sigmoid(self, z, out):
        """1 / (1 + exp(-z)) written into ``out`` (z may be out)."""
        np.negative(z, out=out)
        np.exp(out, out=out)
        out += 1.0
        np.reciprocal(out, out=out)

    def _forward(self, x, m):
        a_prev, last = x, len(self.W) - 1
        for l, (W, b) in enumerate(zip(self.W, self.b)):
            z = self.a[l][:m]
            np.matmul(a_prev, W.T, out=z)
            z += b
            if l < last:
                if self.relu:
                    np.maximum(z, 0.0, out=z)
                else:
                    self._sigmoid(z, z)
            a_prev = z
        return a_prev

    def _output_delta(self, z, y, m):
        """z (the last layer's pre-activation, in place) -> Δ(L) in self.d[-1]."""
        d = self.d[-1][:m]
        if self.softmax:
            mx = self.mx[:m]
            np.max(z, axis=1, keepdims=True, out=mx)
            z -= mx
            np.exp(z, out=z)
            np.sum(z, axis=1, keepdims=True, out=mx)
            np.divide(z, mx, out=d)
            d[self.rows[:m], y] -= 1.0
        else:
            out, t = self.t[-1][:m], self.a[-1][:m]
            self._sigmoid(z, out)
            np.subtract(out, y, out=d)       # a - y
            np.subtract(1.0, out, out=t)     # 1 - a
            t *= out
            d *= t
        d *= 1.0 / m
        return d

    def step(self, x, y):
        m = x.shape[0]
        d = self._output_delta(self._forward(x, m), y, m)
        for l in range(len(self.W) - 1, -1, -1):
            a_prev = x if l == 0 else self.a[l - 1][:m]
            np.matmul(d.T, a_prev, out=self.gW[l])
            np.sum(d, axis=0, out=self.gb[l])
            if l:
                nd, t = self.d[l - 1][:m], self.t[l - 1][:m]
                np.matmul(d, self.W[l], out=nd)
                if self.relu:
                    np.greater(a_prev, 0.0, out=t)
                else:
                    np.subtract(1.0, a_prev, out=t)
                    t *= a_prev
                nd *= t
                d = nd
            self.gW[l] *= self.lr
            self.W[l] -= self.gW[l]
            self.gb[l] *= self.lr
            self.b[l] -= self.gb[l]

    def run_epoch(self, X, Y, batch: int) -> None:
        for start in range(0, X.shape[0], batch):
            self.step(X[start:start + batch], Y[start:start + batch])
