"""Network: a fully connected net, its parameters on one backend, and what it can do.

The network is a façade: it validates what it is given, holds the parameters and hands
them to the pure functions that compute (:mod:`portable_bp.step` for the math,
:mod:`portable_bp.train` for fitting and inference, :mod:`portable_bp.checkpoint` for
files). Nothing here imports an array library: the namespace comes from the backend.
"""

from __future__ import annotations

import os
from typing import Any

from . import _inputs, checkpoint, step
from ._validate import choice, integer, number
from .activations import get_activation
from .backends import Backend
from .backends import get as get_backend
from .init import INITS, initial_weights
from .losses import get_loss
from .ops import Ops
from .transforms import regularization

# what restore_state checks of each field it is given (made once: it runs every epoch)
_STATE_CHECKS = {"epochs_trained": lambda v: integer(v, "epochs_trained"),
                 "steps_trained": lambda v: integer(v, "steps_trained"), "seed": lambda v: integer(v, "seed"),
                 "init": lambda v: choice(v, "init", INITS), "sigma": lambda v: number(v, "sigma", lo_open=True),
                 "optimizer_state": lambda v: v}


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
        ``sigmoid`` for ``binary_cross_entropy`` and ``identity`` for ``mse`` (a regression
        output; the derivation's 3-4-2 network passes ``"sigmoid"``).
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
    params : list of (W, b), optional
        Starting parameters instead of drawn ones (checked and copied as :meth:`set_params`
        does: training never writes into the caller's arrays; nothing is drawn, so loading
        a checkpoint holds no second set of weights).
    dropout : float or list of float, optional
        Inverted dropout on the hidden layers while training (E14): each hidden unit is
        zeroed with probability ``dropout`` and the kept ones scaled by 1/(1 − dropout), so
        ``forward``, ``predict`` and ``evaluate`` use every unit unscaled. One rate for every
        hidden layer, or one per hidden layer; each in [0, 1). The masks come from a
        counter-based generator keyed by ``seed``, the step count and the layer: the same
        on every backend and executor, and again after a resume.
    """

    def __init__(self, sizes, *, activation="sigmoid", output_activation=None, loss="mse",
                 backend="numpy", dtype="float32", seed=None, init=None, sigma=0.1, params=None,
                 dropout=0.0):
        self.sizes = _check_sizes(sizes)
        self.dropout = _check_dropout(dropout, len(self.sizes) - 2)
        loss_fn = get_loss(loss)
        hidden = get_activation(activation, output=False, what="activation")
        if output_activation is None:
            output_activation = loss_fn.default_output
        output = get_activation(output_activation, output=True, what="output_activation")
        if loss_fn.fused_output and output_activation != loss_fn.fused_output:
            raise ValueError(f"loss={loss!r} needs output_activation={loss_fn.fused_output!r}, "
                             f"got {output_activation!r}")
        self.loss, self.activation, self.output_activation = loss, activation, output_activation
        self.init = choice(hidden.default_init if init is None else init, "init", INITS)
        self.sigma = number(sigma, "sigma", lo_open=True)
        self.seed = integer(int.from_bytes(os.urandom(4), "little") if seed is None else seed, "seed")
        self.backend: Backend = get_backend(backend)
        self.dtype = dtype
        self.xp = self.backend.xp
        #: what the step needs to know: each layer's activation and the loss
        self.spec = step.Spec((hidden,) * (len(self.sizes) - 2) + (output,), loss_fn,
                              self.dropout if any(self.dropout) else ())
        self._dt = self.backend.dtype(dtype)  # ValueError for unknown names
        self._params = self._initial_params(params)
        self._ops = self.backend.ops
        self.epochs_trained = 0       # maintained by fit(); saved in checkpoints
        self.steps_trained = 0        # steps of every fit so far: keys the next fit's dropout masks
        self.optimizer_state = None   # (optimizer, {"step": n, "slots": ...}) after fit()
        self.compiled: dict = {}      # compiled programs (JAX) by purpose, reused across calls
        self.executor = "auto"        # how fit runs the step: see portable_bp.train.executors

    def _initial_params(self, params) -> list:
        """Drawn parameters, or copies of the given ones (the network owns its arrays:
        training never writes into the caller's). One that cannot fit in memory is a
        MemoryError naming it, before anything is allocated."""
        itemsize = 8 if self.dtype == "float64" else 4
        for l, (n_in, n_out) in enumerate(zip(self.sizes[:-1], self.sizes[1:])):
            _inputs.check_fits(f"the weights W{l} ({n_out} x {n_in}, {self.dtype})", (n_out, n_in), itemsize,
                               self.backend)
        if params is not None:
            return self.validate_params(params, copy=True)
        try:
            weights = initial_weights(self.sizes, self.init, self.sigma, self.backend.rng(self.seed))
            zeros = [self.xp.zeros(n, dtype=self._dt, device=self.backend.device) for n in self.sizes[1:]]
        except MemoryError as exc:
            raise _inputs.memory_error(f"the initial parameters of {'-'.join(map(str, self.sizes))}", exc) from None
        return self.validate_params(list(zip(weights, zeros)), copy=False)

    # -- description -------------------------------------------------------------------
    def config(self) -> dict:
        """The constructor arguments that rebuild this architecture (checkpoints store it)."""
        return dict(sizes=list(self.sizes), activation=self.activation,
                    output_activation=self.output_activation, loss=self.loss,
                    dtype=self.dtype, seed=self.seed, init=self.init, sigma=self.sigma,
                    dropout=list(self.dropout))

    def __repr__(self) -> str:
        dropout = f", dropout={list(self.dropout)}" if any(self.dropout) else ""
        return (f"Network({list(self.sizes)}, activation={self.activation!r}, "
                f"output_activation={self.output_activation!r}, loss={self.loss!r}, "
                f"backend={self.backend.spec!r}, dtype={self.dtype!r}{dropout})")

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    @property
    def is_classifier(self) -> bool:
        return self.loss == "cross_entropy"

    @property
    def array_dtype(self):
        """The backend namespace's dtype object for :attr:`dtype`."""
        return self._dt

    # -- how the math runs ------------------------------------------------------------------
    @property
    def ops(self) -> Ops:
        """The primitives the step calls: the backend's (kernels, one-call products) or,
        with ``fused_kernels = False``, the Array API reference."""
        return self._ops

    @property
    def executor(self) -> str:
        """How ``fit`` runs the step: ``"auto"`` (the backend's best: a whole-epoch program
        on JAX, captured graphs on CUDA, else op by op), ``"eager"`` (op by op, for
        debugging), ``"jit"``, ``"scan"`` or ``"graph"`` where the backend has them. The
        environment variable ``PORTABLE_BP_EXECUTOR`` overrides it for every network."""
        return self._executor

    @executor.setter
    def executor(self, name: str) -> None:
        self._executor = choice(name, "executor", ("auto", "eager", "jit", "scan", "graph"))

    @property
    def fused_kernels(self) -> bool:
        """False runs the Array API reference Ops instead of the backend's overrides (the
        tests compare the two); takes effect at the next call."""
        return self._ops is not self.backend.reference_ops

    @fused_kernels.setter
    def fused_kernels(self, on: bool) -> None:
        self._ops = self.backend.ops if on else self.backend.reference_ops

    # -- parameters ----------------------------------------------------------------------
    @property
    def params(self) -> list:
        """(W, b) per layer, arrays of the network's backend: W (n_out, n_in), b (n_out,)."""
        return list(self._params)

    def set_params(self, params, *, copy: bool = True, check_finite: bool = True) -> None:
        """Replace every (W, b); NumPy arrays or array-likes are moved to the backend.

        All arrays are checked (shape, numeric dtype, device, and finite values unless
        ``check_finite=False``) before any is assigned: a failure leaves the old ones.
        ``copy=False`` adopts arrays already on this backend in the network's dtype as they
        are (training hands over the arrays it made); by default the network keeps copies, so
        that training never writes into the caller's memory."""
        self._params = self.validate_params(params, copy=copy, check_finite=check_finite)

    def validate_params(self, params, *, copy: bool = True, check_finite: bool = True) -> list:
        """``params`` checked and moved as :meth:`set_params` does, without assigning them."""
        if not isinstance(params, (list, tuple)) or len(params) != self.n_layers:
            got = len(params) if isinstance(params, (list, tuple)) else type(params).__name__
            raise ValueError(f"params must be a list of {self.n_layers} (W, b) pairs, got {got}")
        checked = []
        for l, pair in enumerate(params):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise ValueError(f"params[{l}] must be a (W, b) pair")
            n_out, n_in = self.sizes[l + 1], self.sizes[l]
            checked.append((self._param(pair[0], (n_out, n_in), l, "W", copy),
                            self._param(pair[1], (n_out,), l, "b", copy)))
        if check_finite:
            _inputs.check_finite_all(self.backend.ops, [a for pair in checked for a in pair], "params")
        return checked

    def _param(self, value, shape, layer, name, copy):
        """One W or b (``params[layer] name``), checked and moved; its name is written out
        only for an error (training hands its arrays back through here every epoch)."""
        if not copy and self.backend.owns(value) and value.dtype == self._dt:
            arr = value  # training's own arrays, handed back every epoch: the one check that applies
        else:
            arr = _inputs.to_backend(self.backend, value, self._dt, f"params[{layer}] {name}")
        if tuple(arr.shape) != shape:
            raise ValueError(f"params[{layer}] {name} must have shape {shape}, got {tuple(arr.shape)}")
        if copy and self.backend.mutable:  # torch and strict wrap NumPy memory without copying
            arr = self.backend.copy(arr)  # row-major: a transposed W would make every pass strided
        return arr

    # -- training state: written here only --------------------------------------------------
    _UNSET: Any = object()

    def training_state(self) -> dict:
        """What training changes: parameters, epochs and steps trained, optimizer state and
        the run's identity (seed, init, sigma), as keyword arguments of :meth:`restore_state`
        (fit takes it before training, to put back on a failure)."""
        return dict(params=self.params, epochs_trained=self.epochs_trained, steps_trained=self.steps_trained,
                    optimizer_state=self.optimizer_state, seed=self.seed, init=self.init, sigma=self.sigma)

    def restore_state(self, *, params=_UNSET, epochs_trained=_UNSET, steps_trained=_UNSET, optimizer_state=_UNSET,
                      seed=_UNSET, init=_UNSET, sigma=_UNSET) -> None:
        """Set what training and checkpoints hand the network (each only when given):
        ``params`` adopted as they are (already checked and on this backend: training's own
        arrays, or a checkpoint's validated ones), the epoch and step counts,
        ``optimizer_state`` (``(optimizer, {"step": n, "slots": ...})`` or None) and a
        resumed run's seed, init and sigma. Everything is checked before anything is set.
        The one way the trainer, checkpoints and the scikit-learn adapter write a network's
        fields."""
        given = (("epochs_trained", epochs_trained), ("steps_trained", steps_trained),
                 ("optimizer_state", optimizer_state), ("seed", seed), ("init", init), ("sigma", sigma))
        checked = [(key, _STATE_CHECKS[key](value)) for key, value in given if value is not self._UNSET]
        if params is not self._UNSET:
            self.set_params(params, copy=False, check_finite=False)  # checks shapes first, assigns last
        for key, value in checked:
            setattr(self, key, value)

    def to(self, backend=None, dtype=None) -> Network:
        """The same network with copied parameters on another backend and/or dtype."""
        cfg = self.config()
        if dtype is not None:
            cfg["dtype"] = dtype
        net = Network(cfg.pop("sizes"), backend=backend or self.backend, **cfg)
        net.set_params([(self.backend.to_numpy(W), self.backend.to_numpy(b)) for W, b in self.params])
        net.restore_state(epochs_trained=self.epochs_trained, steps_trained=self.steps_trained)
        return net

    # -- computation ---------------------------------------------------------------------
    def features(self, X, what: str = "X"):
        """X checked and moved: an (n_samples, n_in) array on the device, in :attr:`dtype`."""
        return _inputs.features(self.backend, X, self.sizes[0], self._dt, what)

    def targets(self, Z, n_samples: int, what: str = "Z"):
        """Z checked against the loss and moved (see :func:`portable_bp._inputs.targets`)."""
        return _inputs.targets(self.backend, Z, n_samples, self.sizes[-1], self.loss, self._dt, what)

    def sample_weights(self, w, n_samples: int, what: str = "sample_weight"):
        """Per-sample weights checked and moved: (n_samples,), finite, >= 0, not all zero."""
        return _inputs.sample_weights(self.backend, w, n_samples, self._dt, what)

    def forward(self, X):
        """Outputs A(L) for X of shape (n_samples, n_in), on the network's backend."""
        with self.backend.activate():
            return step.outputs(self.spec, self._ops, self._params, self.features(X))

    def loss_and_grads(self, X, Z, sample_weight=None, *, l2=None, training_step=None):
        """The batch loss as a Python float and (dW, db) per layer, shaped like ``params``;
        with ``sample_weight`` the loss is Σ w_i ℓ_i / Σ w_i. ``l2`` adds fit's L2 term (E16)
        to both; ``training_step`` computes them as training step number ``training_step``
        would, with that step's dropout masks (by default none: evaluation mode)."""
        with self.backend.activate():
            X = self.features(X)
            w = None if sample_weight is None else self.sample_weights(sample_weight, X.shape[0])
            total, grads = step.loss_and_grads(self.spec, self._ops, self._params,
                                               self.step_context(X, self.targets(Z, X.shape[0]), w, training_step),
                                               regularization(l2))
            return float(total) / (X.shape[0] if w is None else float(self.xp.sum(w))), grads

    def step_context(self, X, Z, w=None, training_step=None) -> step.Context:
        """The step's context for a batch already checked and moved: the network's seed and
        the step counter ``training_step`` (dropout on), or evaluation mode (no dropout)."""
        if training_step is None:
            return step.Context(X, Z, w, 0, self.seed, training=False)
        return step.Context(X, Z, w, integer(training_step, "training_step"), self.seed)

    def fit(self, X, Z, **kwargs) -> Any:
        """Train by gradient descent (E12); see :func:`portable_bp.train.fit`."""
        from .train import fit

        return fit(self, X, Z, **kwargs)

    def predict(self, X, batch_size=None):
        """Outputs for X; class indices for cross-entropy networks."""
        from .train import predict

        return predict(self, X, batch_size=batch_size)

    def evaluate(self, X, Z, batch_size=None, sample_weight=None) -> dict:
        """``{"loss": ..., "accuracy": ...}`` (accuracy for classifiers) over the whole of X,
        weighted by ``sample_weight`` when given."""
        from .train import evaluate

        return evaluate(self, X, Z, batch_size=batch_size, sample_weight=sample_weight)

    def save(self, path) -> None:
        """Write a checkpoint (.npz, atomic); see :mod:`portable_bp.checkpoint`."""
        checkpoint.save(self, path)

    def export_onnx(self, path, *, dtype: str | None = None, classes=None) -> None:
        """Write the network as an ONNX model (standard operators, dynamic batch size, float32
        or float64; ``classes`` names a classifier's ``label`` output); see
        :mod:`portable_bp.export`. Needs the onnx package (``pip install onnx``)."""
        from . import export

        export.save_model(export.network_model(self, dtype=dtype, classes=classes), path)


def load(path, backend=None, *, max_bytes=None) -> Network:
    """A Network rebuilt from a checkpoint written by :meth:`Network.save`, on ``backend``
    (default ``"numpy"``: the saved spec is informational, since the saving machine's GPU
    or library may not exist here).

    ``optimizer_state`` is ``(optimizer, state)`` when one was saved; the optimizer is None
    when the file cannot rebuild it (a custom optimizer class or learning-rate callable):
    pass that optimizer again to ``fit``. ``max_bytes`` bounds what is read (default
    ``PORTABLE_BP_MAX_BYTES``, else 4 GiB): a larger file is a ValueError."""
    return checkpoint.read_network(path, Network, backend, max_bytes)


def _check_dropout(dropout, n_hidden: int) -> tuple[float, ...]:
    """One rate in [0, 1) per hidden layer, from one rate or a list of them; a ValueError
    naming the value otherwise (a rate for the output layer included)."""
    if isinstance(dropout, (list, tuple)):
        if len(dropout) != n_hidden:
            raise ValueError(f"dropout must be one rate or one per hidden layer ({n_hidden}); got {len(dropout)} "
                             f"rates {list(dropout)} (the output layer takes no dropout)")
        rates = list(dropout)
    else:
        rates = [dropout] * n_hidden
        if n_hidden == 0:
            number(dropout, "dropout", hi=1.0)
            if dropout:
                raise ValueError(f"dropout={dropout!r} needs a hidden layer: the output layer takes no dropout")
    return tuple(number(r, "dropout", hi=1.0) for r in rates)


def _check_sizes(sizes) -> tuple:
    if isinstance(sizes, (str, bytes)) or not hasattr(sizes, "__len__"):
        raise TypeError(f"sizes must be a list of layer widths like [3, 4, 2], got {sizes!r}")
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least an input and an output width, got {list(sizes)}")
    try:
        return tuple(integer(n, "sizes", minimum=1) for n in sizes)
    except ValueError:
        raise ValueError(f"sizes must hold positive integers, got {list(sizes)}") from None
