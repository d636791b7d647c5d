"""Network: a fully connected net, its parameters on one backend, and backpropagation.

The forward pass keeps every layer's U and A; the backward pass walks them back with
E8 (or the fused E11) at the output and E9/E10 below. Nothing here imports an array
library: the namespace comes from the backend, resolved once per network.
"""

from __future__ import annotations

import os
from numbers import Integral, Real

from . import _inputs
from .activations import get_activation
from .backends import Backend, get as get_backend
from .init import DEFAULT_INIT, INITS, initial_weights
from .layers import backprop_delta, dense_descend, dense_forward, dense_grads
from .losses import get_loss


class Network:
    """A fully connected network trained by backpropagation.

    Parameters
    ----------
    sizes : list of int
        Units per layer, input first: ``[3, 4, 2]`` is the derivation's 3-4-2 network.
    activation : str
        Hidden-layer activation: sigmoid, tanh, relu, leaky_relu (slope 0.01) or identity.
    output_activation : str, optional
        Output-layer activation. Defaults to ``softmax`` for ``loss="cross_entropy"``,
        ``sigmoid`` for ``binary_cross_entropy`` and to ``activation`` otherwise.
    loss : str
        ``mse`` (E2), ``cross_entropy`` (softmax output) or ``binary_cross_entropy``
        (sigmoid output); each sums over outputs and averages over the batch.
    backend : str or Backend
        ``numpy``, ``cupy``, ``cupy:1``, ``torch``, ``torch:cuda:0``, ``jax``,
        ``array_api_strict`` or ``auto``.
    dtype : str
        ``float32`` (default) or ``float64``.
    seed : int, optional
        Seeds initial weights and batch order (drawn on the host: identical on every backend).
    init : str, optional
        ``normal`` (E13, N(0, sigma²)), ``xavier`` or ``he``. Default: ``he`` for relu and
        leaky_relu, ``xavier`` for sigmoid, tanh and identity.
    sigma : float
        Standard deviation for ``init="normal"``.
    """

    def __init__(self, sizes, *, activation="sigmoid", output_activation=None, loss="mse",
                 backend="numpy", dtype="float32", seed=None, init=None, sigma=0.1):
        self.sizes = _check_sizes(sizes)
        self._loss = get_loss(loss)
        self.loss = loss
        self._hidden = get_activation(activation, output=False, what="activation")
        if output_activation is None:
            output_activation = self._loss.fused_output or activation
        self._output = get_activation(output_activation, output=True, what="output_activation")
        if self._loss.fused_output and output_activation != self._loss.fused_output:
            raise ValueError(f"loss={loss!r} needs output_activation={self._loss.fused_output!r}, "
                             f"got {output_activation!r}")
        self.activation, self.output_activation = activation, output_activation
        if init is None:
            init = DEFAULT_INIT[activation]
        if init not in INITS:
            raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")
        if not isinstance(sigma, Real) or not sigma > 0:
            raise ValueError(f"sigma must be a positive number, got {sigma!r}")
        if seed is None:
            seed = int.from_bytes(os.urandom(4), "little")
        if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
        self.init, self.sigma, self.seed = init, float(sigma), int(seed)
        self.backend: Backend = get_backend(backend)
        self.dtype = dtype
        self._dt = self.backend.dtype(dtype)  # ValueError for unknown names
        self.xp = self.backend.xp
        self._acts = [self._hidden] * (len(self.sizes) - 2) + [self._output]
        weights = initial_weights(self.sizes, init, self.sigma, self.backend.rng(self.seed))
        with self.backend.activate():
            self._W = [self.backend.asarray(W, dtype) for W in weights]
            self._b = [self.xp.zeros(n, dtype=self._dt, device=self.backend.device)
                       for n in self.sizes[1:]]
        # Backends with fused kernels (CuPy's element-wise kernels; the one-call SGD step of
        # NumPy, CuPy and PyTorch, Backend.subtract_matmul) use them in the hot path; False
        # runs the Array API reference path there too (the tests compare the two).
        self.fused_kernels = True
        self.epochs_trained = 0       # maintained by fit(); saved in checkpoints
        self.optimizer_state = None   # (optimizer config, state) after fit(); saved in checkpoints
        self._compiled = {}           # backends that compile (JAX): training steps, evaluation

    # -- description -------------------------------------------------------------------
    def config(self) -> dict:
        """The constructor arguments that rebuild this architecture (checkpoints store it)."""
        return dict(sizes=list(self.sizes), activation=self.activation,
                    output_activation=self.output_activation, loss=self.loss,
                    dtype=self.dtype, seed=self.seed, init=self.init, sigma=self.sigma)

    def __repr__(self) -> str:
        return (f"Network({list(self.sizes)}, activation={self.activation!r}, "
                f"output_activation={self.output_activation!r}, loss={self.loss!r}, "
                f"backend={self.backend.spec!r}, dtype={self.dtype!r})")

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    @property
    def is_classifier(self) -> bool:
        return self.loss == "cross_entropy"

    # -- parameters ----------------------------------------------------------------------
    @property
    def params(self) -> list:
        """(W, b) per layer, arrays of the network's backend: W (n_out, n_in), b (n_out,)."""
        return list(zip(self._W, self._b))

    def set_params(self, params) -> None:
        """Replace every (W, b); NumPy arrays or array-likes are moved to the backend.

        All arrays are checked before any is assigned: a failure leaves the old ones.
        """
        if not isinstance(params, (list, tuple)) or len(params) != self.n_layers:
            got = len(params) if isinstance(params, (list, tuple)) else type(params).__name__
            raise ValueError(f"params must be a list of {self.n_layers} (W, b) pairs, got {got}")
        Ws, bs = [], []
        for l, pair in enumerate(params):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValueError(f"params[{l}] must be a (W, b) pair")
            n_out, n_in = self.sizes[l + 1], self.sizes[l]
            Ws.append(self._param(pair[0], (n_out, n_in), f"params[{l}] W"))
            bs.append(self._param(pair[1], (n_out,), f"params[{l}] b"))
        self._W, self._b = Ws, bs

    def _param(self, value, shape, what):
        arr = _inputs.to_backend(self.backend, value, self._dt, what)
        if tuple(arr.shape) != shape:
            raise ValueError(f"{what} must have shape {shape}, got {tuple(arr.shape)}")
        _inputs.check_finite(self.xp, arr, what)
        if self.backend.mutable:  # never alias the caller's memory: training writes in place
            arr = self.xp.asarray(arr, copy=True)  # (torch/strict wrap NumPy memory, no copy)
        return arr

    def to(self, backend=None, dtype=None) -> "Network":
        """The same network with copied parameters on another backend and/or dtype."""
        cfg = self.config()
        if dtype is not None:
            cfg["dtype"] = dtype
        net = Network(cfg.pop("sizes"), backend=backend or self.backend, **cfg)
        net.set_params([(self.backend.to_numpy(W), self.backend.to_numpy(b)) for W, b in self.params])
        net.epochs_trained = self.epochs_trained
        return net

    # -- the math ------------------------------------------------------------------------
    def _forward(self, X, Z=None, keep_u=False, params=None):
        """E7 layer by layer. Returns (As, U_L, total, Us): every activation A(0) = X ..
        A(L) (E9 needs only these), the output logits U(L), the loss summed over the
        batch when targets Z are given (else None) and, with ``keep_u``, every U(l).
        ``params`` (Ws, bs) stands in for the network's own (a compiled step passes them)."""
        xp, inplace, L = self.xp, self.backend.mutable, self.n_layers
        Ws, bs = params if params is not None else (self._W, self._b)
        fused = self._fused_kernels()
        As, Us = [X], []
        for l in range(L):
            act = self._acts[l]
            if fused and l < L - 1 and not keep_u and act.name in fused.activations:
                As.append(fused.bias_activation(As[-1] @ Ws[l].T, bs[l], act.name))
                continue
            U = dense_forward(As[-1], Ws[l], bs[l], inplace)
            if keep_u:
                Us.append(U)
            if l < L - 1:
                As.append(act.forward(xp, U))
        total = None
        if Z is None:
            As.append(self._output.forward(xp, U))
        elif self._loss.output is not None:  # softmax + cross-entropy share one exp
            pair = None
            if fused and Z.ndim == 1 and getattr(fused, "softmax_cross_entropy", None):
                pair = fused.softmax_cross_entropy(U, Z)  # None where the kernel cannot
            A, total = pair if pair is not None else self._loss.output(xp, U, Z)
            As.append(A)
        else:
            As.append(self._output.forward(xp, U))
            total = self._loss.total(xp, U, As[-1], Z)
        return As, U, total, Us

    def _grads(self, As, U_L, Z, Ws=None, scale=None, descend=None):
        """Backpropagation: Δ(L) by E8/E11, then E9 downwards; E10 gives each layer's grads.

        Consumes ``As``: each entry is dropped from the list once backprop has passed it, so
        a layer's activations are freed as its gradient takes their place (peak memory holds
        about two layers' activations fewer than keeping them all to the end). ``Ws`` stands
        in for the network's weights, as in :meth:`_forward`.

        ``scale`` is Δ(L)'s factor, 1/m (the batch mean) by default. Every gradient is linear
        in Δ(L), so plain SGD passes lr/m and receives lr·grad, saving its update a pass over
        every parameter.

        ``descend`` (plain SGD, ``scale`` = lr/m) is a pair (biases, :meth:`_descent_ops`),
        Ws being the weights: each layer then takes its step in place as
        soon as its Δ is known and the Δ below it has been computed from the old W, by
        :func:`~portable_bp.layers.dense_descend`, and nothing is returned. No weight gradient
        array is made where the backend's product takes the layer in one call."""
        xp, L = self.xp, self.n_layers
        Ws = self._W if Ws is None else Ws
        scale = 1.0 / Z.shape[0] if scale is None else scale
        fused = self._fused_kernels()
        if fused and self._loss.fused_output:
            delta = fused.output_delta(As[-1], Z, scale)
        else:
            delta = self._loss.output_delta(xp, U_L, As[-1], Z, self._output, scale)
        As[L] = None
        grads = [None] * L
        for l in range(L - 1, -1, -1):
            if descend is None:
                grads[l] = dense_grads(xp, delta, As[l])
            delta_l = delta
            if l:
                act = self._acts[l - 1]
                if fused and act.name in fused.activations:
                    delta = fused.activation_backward(As[l], delta @ Ws[l], act.name)
                else:
                    delta = backprop_delta(xp, delta, Ws[l], act, As[l])
            if descend is not None:  # after Δ(l-1): E9 needs the W of before the step
                dense_descend(xp, Ws[l], descend[0][l], delta_l, As[l], *descend[1])
            As[l] = None
        return None if descend is not None else grads

    def _fused_kernels(self):
        """The backend's fused kernels when it has them and they are switched on, else None."""
        return self.backend.fused if self.fused_kernels else None

    def _descent_ops(self):
        """(subtract_matmul, subtract_colsum): the backend's in-place W -= Dᵀ A and (or None)
        b -= Σ_rows D, when it has the first and fused kernels are on; else None."""
        if not self.fused_kernels or self.backend.subtract_matmul is None:
            return None
        return self.backend.subtract_matmul, self.backend.subtract_colsum

    # -- public computation --------------------------------------------------------------
    def _features(self, X):
        return _inputs.features(self.backend, X, self.sizes[0], self._dt)

    def _targets(self, Z, n):
        return _inputs.targets(self.backend, Z, n, self.sizes[-1], self.loss, self._dt)

    def forward(self, X):
        """Outputs A(L) for X of shape (n_samples, n_in), on the network's backend."""
        with self.backend.activate():
            return self._forward(self._features(X))[0][-1]

    def loss_and_grads(self, X, Z):
        """The batch loss as a Python float and (dW, db) per layer, shaped like ``params``."""
        with self.backend.activate():
            X = self._features(X)
            Z = self._targets(Z, X.shape[0])
            As, U_L, total, _ = self._forward(X, Z)
            grads = self._grads(As, U_L, Z)
            return float(total) / X.shape[0], grads

    # -- training and inference (implemented in train.py) --------------------------------
    def fit(self, X, Z, **kwargs):
        """Train by gradient descent (E12); see :func:`portable_bp.train.fit`."""
        from .train import fit

        return fit(self, X, Z, **kwargs)

    def predict(self, X, batch_size=None):
        """Outputs for X; class indices for cross-entropy networks."""
        from .train import predict

        return predict(self, X, batch_size=batch_size)

    def evaluate(self, X, Z, batch_size=None) -> dict:
        """``{"loss": ..., "accuracy": ...}`` (accuracy for classifiers) over the whole of X."""
        from .train import evaluate

        return evaluate(self, X, Z, batch_size=batch_size)

    def save(self, path) -> None:
        """Write a checkpoint (.npz, atomic); see :mod:`portable_bp.checkpoint`."""
        from .checkpoint import save

        save(self, path)


def _check_sizes(sizes) -> tuple:
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
        raise TypeError(f"sizes must be a list of layer widths like [3, 4, 2], got {sizes!r}")
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least an input and an output width, got {list(sizes)}")
    for n in sizes:
        if isinstance(n, bool) or not isinstance(n, Integral) or n < 1:
            raise ValueError(f"sizes must hold positive integers, got {list(sizes)}")
    return tuple(int(n) for n in sizes)
