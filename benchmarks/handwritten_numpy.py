"""A plain hand-written MLP trainer over ``xp`` = numpy or cupy.

This is the "limit for that array library": what a competent engineer writes by hand for
one fixed network, with no framework in between. Vectorised over the batch, weights updated
in place, temporaries allocated the ordinary way; nothing artificially slow and nothing
clever beyond the obvious (in-place activation, a row index built once).

Layout: ``W[l]`` has shape (fan_out, fan_in), so the forward product is ``a @ W.T``,
the backward-data product ``delta @ W`` and the weight gradient ``delta.T @ a``.
"""

from __future__ import annotations


class HandwrittenMLP:
    def __init__(self, xp, params, activation: str, output_activation: str, lr: float):
        self.xp = xp
        self.W = [xp.asarray(W).copy() for W, _ in params]
        self.b = [xp.asarray(b).copy() for _, b in params]
        self.activation = activation
        self.output = output_activation  # "softmax" (+ cross-entropy) or "sigmoid" (+ MSE)
        self.lr = lr
        self._rows = None

    def _sigmoid(self, z):
        return 1.0 / (1.0 + self.xp.exp(-z))

    def step(self, x, y, want_loss: bool = False):
        """One SGD step on the batch (x, y); returns the batch loss if ``want_loss``."""
        xp, W, b = self.xp, self.W, self.b
        m = x.shape[0]
        last = len(W) - 1

        # forward: keep every layer's input for the backward pass
        acts = [x]
        a = x
        for l in range(last):
            z = a @ W[l].T
            z += b[l]
            a = xp.maximum(z, 0, out=z) if self.activation == "relu" else self._sigmoid(z)
            acts.append(a)
        z = a @ W[last].T
        z += b[last]

        # output layer and loss: delta = dL/dz of the last layer
        loss = None
        if self.output == "softmax":  # cross-entropy, mean over the batch
            z -= z.max(axis=1, keepdims=True)
            xp.exp(z, out=z)
            z /= z.sum(axis=1, keepdims=True)
            if self._rows is None or self._rows.shape[0] < m:
                self._rows = xp.arange(m)
            rows = self._rows[:m]
            if want_loss:
                loss = float(-xp.log(z[rows, y]).mean())
            delta = z
            delta[rows, y] -= 1.0
            delta *= 1.0 / m
        else:  # sigmoid output, L = 1/(2m) sum ||a - y||^2
            out = self._sigmoid(z)
            err = out - y
            if want_loss:
                loss = float(0.5 * (err * err).sum() / m)
            delta = err * out * (1.0 - out)
            delta *= 1.0 / m

        # backward, updating each layer once its delta for the layer below is computed
        for l in range(last, -1, -1):
            a_prev = acts[l]
            gW = delta.T @ a_prev
            gb = delta.sum(axis=0)
            if l > 0:
                delta = delta @ W[l]
                if self.activation == "relu":
                    delta *= a_prev > 0
                else:
                    delta *= a_prev * (1.0 - a_prev)
            W[l] -= self.lr * gW
            b[l] -= self.lr * gb
        return loss

    def run_epoch(self, X, Y, batch: int) -> None:
        for start in range(0, X.shape[0], batch):
            self.step(X[start:start + batch], Y[start:start + batch])
