"""The estimators' shared base: fitting scikit-learn's way on a portable_bp Network.

``coefs_`` and ``intercepts_`` are scikit-learn's plain lists of NumPy arrays, (n_in,
n_out) weights and biases per layer, and they are the truth: replacing an element, writing
into one or assigning the lists takes effect at the next predict or fit, as in
scikit-learn. The :class:`~portable_bp.Network` that computes (``_net``, on the chosen
backend) is built from them and kept while it still is what they, ``activation`` and
``out_activation_`` say (see :mod:`._weights`); a fit hands its result back out as new
lists (views of the network's arrays on the numpy backend, host copies elsewhere).
Pickling stores NumPy arrays only (those lists, optimizer state, best parameters); the
network is rebuilt on first use, on the backend it was trained on, or on NumPy (with a
warning) where that backend cannot run.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils import check_random_state
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from ..backends import BackendUnavailable
from ..backends import get as get_backend
from ..network import Network
from . import _data, _stochastic, _weights
from ._params import ACTIVATIONS, CONSTRAINTS, LOSSES, STOCHASTIC_SOLVERS, hidden_sizes
from ._solvers import fit_lbfgs, host_array


def keep_params(estimator, arguments: dict) -> None:
    """Store every constructor argument under its own name, as scikit-learn requires of
    ``__init__`` (``arguments`` is the constructor's ``locals()``; nothing is validated
    here: that happens at ``fit``)."""
    for name, value in arguments.items():
        if name not in ("self", "__class__"):
            setattr(estimator, name, value)


class BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share; not to be used directly."""

    _parameter_constraints: dict = dict(CONSTRAINTS)
    # fitted state besides scikit-learn's attributes: the network coefs_ and intercepts_
    # were handed out of or built into (None after unpickling: rebuilt on first use)
    _best_params: Any
    # the stochastic solvers' optimizer and its state between fit calls (_solvers.SolverState)
    _optimizer: Any
    _solver_state: Any

    # -- the fitted network --------------------------------------------------------------
    def _network(self, backend=None, dtype=None) -> Network:
        """The network that predicts and trains: the cached one while it still is what
        ``coefs_``, ``intercepts_``, ``activation`` and ``out_activation_`` say (and on
        ``backend``, in ``dtype``, when given), else one built from them anew (so that
        ``mlp.coefs_[0] = W`` or ``set_params(activation="tanh")`` take effect at the next
        predict or fit, as in scikit-learn, which reads them at every call)."""
        net, handout = self.__dict__.get("_net"), self.__dict__.get("_handout")
        if net is None or handout is None or not handout.current(self.coefs_, self.intercepts_):
            return self._rebuild(None, backend, dtype)
        if ((net.activation, net.output_activation) == self._functions()
                and backend in (None, net.backend) and dtype in (None, net.dtype)):
            return net
        return self._rebuild(net, backend, dtype)

    def _functions(self) -> tuple[str, str]:
        """portable_bp's names of the hidden and output activations the estimator says."""
        return ACTIVATIONS[self.activation], ACTIVATIONS[self.out_activation_]

    def _rebuild(self, source, backend, dtype) -> Network:
        """A network with the estimator's activations on ``backend`` in ``dtype`` (by
        default where and as the cached one was), its parameters those of ``source`` (a
        network still in step with the lists: on the same device, adopted as they are)
        or else read from ``coefs_`` and ``intercepts_``."""
        old = self.__dict__.get("_net")
        backend = backend or (old.backend if old is not None else self._stored_backend())
        dtype = dtype or (old.dtype if old is not None else _weights.list_dtype(self.coefs_))
        if source is None:
            params = _weights.network_params(self.coefs_, self.intercepts_, dtype)
        elif source.backend is backend and source.dtype == dtype:
            params = source.params
        else:
            params = [(host_array(source.backend, W), host_array(source.backend, b)) for W, b in source.params]
        hidden, output = self._functions()
        new = Network(_weights.layer_units(params), activation=hidden, output_activation=output,
                      loss=LOSSES[self.out_activation_], backend=backend, dtype=dtype, seed=0, params=params)
        self._move_state(old, new)
        self._net, self._handout = new, _weights.Handout(self.coefs_, self.intercepts_, new)
        return new

    def _move_state(self, old, new) -> None:
        """Carry the best parameters (early stopping) and the optimizer state to the new
        network's backend and dtype (from the host after unpickling)."""
        if old is not None and old.backend is new.backend and old.dtype == new.dtype:
            return
        src = None if old is None else old.backend
        if getattr(self, "_best_params", None) is not None:
            self._best_params = [(new.backend.asarray(host_array(src, W), new.dtype),
                                  new.backend.asarray(host_array(src, b), new.dtype)) for W, b in self._best_params]
        if getattr(self, "_solver_state", None) is not None:
            self._solver_state = self._solver_state.converted(
                lambda a: new.backend.asarray(host_array(src, a), new.dtype))

    def _publish(self, net) -> None:
        """``coefs_`` and ``intercepts_`` from the network a fit left (views of its arrays on
        the numpy backend, host copies elsewhere), and that network as the cached one."""
        self.coefs_, self.intercepts_ = _weights.hand_out(net)
        self._net, self._handout = net, _weights.Handout(self.coefs_, self.intercepts_, net)

    def _stored_backend(self):
        """The backend the estimator was trained on (or, before any fit, its ``backend``),
        or NumPy where that cannot run (an estimator unpickled elsewhere)."""
        spec = getattr(self, "_backend_spec", None) or self.backend
        try:
            return get_backend(spec)
        except BackendUnavailable as exc:
            warnings.warn(f"{type(self).__name__} was trained on backend {spec!r}, "
                          f"which cannot run here ({exc.reason}); it runs on numpy instead",
                          UserWarning, stacklevel=5)
            return get_backend("numpy")

    # -- pickling: NumPy arrays only ---------------------------------------------------------
    def __getstate__(self):
        """``coefs_`` and ``intercepts_`` are NumPy arrays already; the best parameters and
        the optimizer state are read back to the host; the network is rebuilt on first use."""
        state = dict(super().__getstate__())
        net = state.pop("_net", None)
        state.pop("_handout", None)
        if net is not None and state.get("_best_params") is not None:
            state["_best_params"] = [(np.array(net.backend.to_numpy(W)), np.array(net.backend.to_numpy(b)))
                                     for W, b in state["_best_params"]]
        if net is not None and state.get("_solver_state") is not None:
            state["_solver_state"] = state["_solver_state"].converted(lambda a: np.array(net.backend.to_numpy(a)))
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._net, self._handout = None, None

    # -- fitting ----------------------------------------------------------------------------
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the network to X and y (class labels or real targets), optionally weighting
        each sample; returns the fitted estimator."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=False)

    def _check_solver(self) -> bool:
        if self.solver not in STOCHASTIC_SOLVERS:
            raise AttributeError("partial_fit is only available for stochastic optimizers. "
                                 f"{self.solver} is not stochastic.")
        return True

    def _fit(self, X, y, sample_weight=None, incremental=False):
        hidden = hidden_sizes(self.hidden_layer_sizes)
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        place = _data.place_of(X)
        X, Y = self._validate_input(X, y, incremental, reset=first_pass)
        sw = self._sample_weight(sample_weight, X)
        layer_units = [X.shape[1], *hidden, Y.shape[1]]
        if not first_pass and layer_units != self._layer_units():
            raise ValueError(f"warm_start and partial_fit need the same layer sizes as the fitted "
                             f"network: {self._layer_units()}, got {layer_units}")
        self.n_outputs_ = Y.shape[1]
        self._random_state = check_random_state(self.random_state)
        backend = _data.backend_for(place, X, self.backend)
        if first_pass:
            self._initialize(layer_units, backend, _data.dtype_name(X, self.dtype))
        net = self._network(backend, self.dtype)
        self._fit_place, self._backend_spec = (None if place is None else place.key), net.backend.spec
        if self.solver in STOCHASTIC_SOLVERS:
            _stochastic.fit(self, net, X, Y, sw, incremental)
        else:
            rows = _data.Rows(net, X, self._sparse_rows())
            fit_lbfgs(self, net, rows, net.targets(self._net_targets(Y), rows.n), sw, self._loss_divisor())
        self._publish(net)
        if not _finite(net):
            raise ValueError(_stochastic.NON_FINITE)
        return self

    def _layer_units(self) -> list:
        """The layer sizes ``coefs_`` holds."""
        shapes = [np.shape(c) for c in self.coefs_]
        if not shapes or any(len(shape) != 2 for shape in shapes):
            raise ValueError(f"coefs_ must hold one (n_in, n_out) array per layer, got shapes {shapes}")
        return [int(shapes[0][0])] + [int(shape[1]) for shape in shapes]

    def _sample_weight(self, sample_weight, X):
        """scikit-learn's validation of sample_weight, as a host float64 array (or None)."""
        if sample_weight is None:
            return None
        proxy = np.broadcast_to(np.float64(0), (X.shape[0], 1))
        return np.asarray(_check_sample_weight(_data.to_host(sample_weight), proxy, dtype=np.float64))

    def _initialize(self, layer_units, backend, dtype):
        """A fresh network with scikit-learn's initial weights and fresh bookkeeping."""
        self.n_iter_, self.t_ = 0, 0
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._output_activation()
        net = Network(layer_units, activation=ACTIVATIONS[self.activation],
                      output_activation=ACTIVATIONS[self.out_activation_],
                      loss=LOSSES[self.out_activation_], backend=backend, dtype=dtype, seed=0,
                      params=self._glorot(layer_units, dtype))
        self._publish(net)
        self._optimizer, self._solver_state = None, None
        self._best_params = _stochastic._copy_params(net)
        if self.solver in STOCHASTIC_SOLVERS:
            self.loss_curve_ = []
            self._no_improvement_count = 0
            if self.early_stopping:
                self.validation_scores_, self.best_validation_score_, self.best_loss_ = [], -np.inf, None
            else:
                self.best_loss_, self.validation_scores_, self.best_validation_score_ = np.inf, None, None

    def _glorot(self, layer_units, dtype) -> list:
        """scikit-learn's initialization, drawn from the estimator's RandomState in its
        order (so one random_state gives its initial weights): U(-r, r) for weights and
        biases, r = sqrt(6 / (fan_in + fan_out)) (2 instead of 6 for logistic)."""
        factor = 2.0 if self.activation == "logistic" else 6.0
        params = []
        for fan_in, fan_out in zip(layer_units[:-1], layer_units[1:]):
            bound = np.sqrt(factor / (fan_in + fan_out))
            coef = self._random_state.uniform(-bound, bound, (fan_in, fan_out))
            intercept = self._random_state.uniform(-bound, bound, fan_out)
            # C order: a transposed view would make every element-wise step strided
            params.append((np.ascontiguousarray(coef.astype(dtype).T), intercept.astype(dtype)))
        return params

    def _loss_divisor(self) -> int:
        """What scikit-learn's reported loss divides portable_bp's by (1: the same)."""
        return 1

    # -- prediction ---------------------------------------------------------------------------
    def _outputs(self, X, method):
        """(network, its outputs for X on the device, where X lived)."""
        check_is_fitted(self)
        place = _data.place_of(X)
        _data.same_place_check(self, X, place, method)
        X = validate_data(self, X, accept_sparse=["csr", "csc"], reset=False)
        net = self._network()
        return net, _data.outputs(net, X, self._sparse_rows()), place

    def export_onnx(self, path, *, dtype: str | None = None) -> None:
        """Write the fitted estimator as an ONNX model whose outputs are what ``predict``
        returns (``label`` for a classifier, in ``classes_``; ``predictions`` for a regressor)
        and ``predict_proba`` (``probabilities``); standard operators, dynamic batch size,
        float32 or float64 (default: the fitted network's). Needs the onnx package
        (``pip install onnx``); see :mod:`portable_bp.export`."""
        from .. import export

        check_is_fitted(self)
        names = getattr(self, "feature_names_in_", None)
        model = export.estimator_model(self._network(), classes=getattr(self, "classes_", None), dtype=dtype,
                                       feature_names=None if names is None else [str(n) for n in names])
        export.save_model(model, path)

    def _sparse_rows(self) -> int:
        """Rows of sparse X densified at a time where no mini-batch is set (predict,
        lbfgs): the batch size, 200 for "auto"."""
        return 200 if self.batch_size == "auto" else int(self.batch_size)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        tags.array_api_support = True
        return tags


def _finite(net) -> bool:
    """Every parameter finite (max |.| of each array; NaN propagates through max)."""
    xp = net.xp
    tops = [xp.max(xp.abs(a)) for pair in net.params for a in pair]
    return math.isfinite(float(xp.max(xp.stack(tops))))
