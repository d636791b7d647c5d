"""The estimators' shared base: fitting scikit-learn's way on a portable_bp Network.

The fitted model is a :class:`~portable_bp.Network` on the chosen backend (``_net``); it
is the one copy of the parameters while the estimator lives. ``coefs_`` and
``intercepts_`` read it in scikit-learn's orientation, (n_in, n_out) per layer, as NumPy
arrays (views of the network's own arrays on the numpy backend, copies from a GPU);
assigning them writes the network. Pickling stores NumPy arrays only (parameters,
optimizer state, best parameters) and the network's configuration; the network is rebuilt
on first use, on the backend it was trained on, or on NumPy (with a warning) where that
backend cannot run.
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
from . import _data, _stochastic
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
    # fitted state (set by fit, or by unpickling: then the network is rebuilt on first use)
    _net_config: Any
    _params_host: Any
    _best_params: Any

    # -- the fitted network --------------------------------------------------------------
    def __sklearn_is_fitted__(self) -> bool:
        return self.__dict__.get("_net") is not None or self.__dict__.get("_params_host") is not None

    def _network(self, backend=None, dtype=None) -> Network:
        """The fitted network, on ``backend`` and in ``dtype`` when given (moved there if
        it lives elsewhere), else where it is; rebuilt from the host after unpickling."""
        net = self.__dict__.get("_net")
        if net is not None and backend in (None, net.backend) and dtype in (None, net.dtype):
            return net
        src = None if net is None else net.backend
        params = self._host_pairs()
        config = dict(self._net_config if net is None else net.config())
        if dtype is not None:
            config["dtype"] = dtype
        new = Network(config.pop("sizes"), backend=backend or self._stored_backend(), **config)
        new.set_params([(np.ascontiguousarray(W), b) for W, b in params])
        if getattr(self, "_best_params", None) is not None:
            self._best_params = [(new.backend.asarray(host_array(src, W), new.dtype),
                                  new.backend.asarray(host_array(src, b), new.dtype)) for W, b in self._best_params]
        if getattr(self, "_optimizer", None) is not None:
            self._optimizer.move_to(new.backend, new.dtype)
        self._net, self._params_host, self._net_config = new, None, None
        return new

    def _stored_backend(self):
        """The backend a pickled estimator was trained on, or NumPy where it cannot run."""
        try:
            return get_backend(self._backend_spec)
        except BackendUnavailable as exc:
            warnings.warn(f"{type(self).__name__} was trained on backend {self._backend_spec!r}, "
                          f"which cannot run here ({exc.reason}); it runs on numpy instead",
                          UserWarning, stacklevel=4)
            return get_backend("numpy")

    def _host_pairs(self) -> list:
        """(W (n_out, n_in), b) per layer as NumPy arrays."""
        net = self.__dict__.get("_net")
        if net is None:
            return list(self._params_host or ())
        return [(net.backend.to_numpy(W), net.backend.to_numpy(b)) for W, b in net.params]

    @property
    def coefs_(self) -> list:
        """Weight matrices, (n_in, n_out) per layer, as NumPy arrays."""
        if not self.__sklearn_is_fitted__():
            raise AttributeError(f"{type(self).__name__!r} object has no attribute 'coefs_'")
        return [W.T for W, _ in self._host_pairs()]

    @coefs_.setter
    def coefs_(self, coefs):
        net = self._network()
        net.set_params([(np.ascontiguousarray(_data.to_host(c).T), b) for c, (_, b) in zip(coefs, net.params)])

    @property
    def intercepts_(self) -> list:
        """Bias vectors, one per layer, as NumPy arrays."""
        if not self.__sklearn_is_fitted__():
            raise AttributeError(f"{type(self).__name__!r} object has no attribute 'intercepts_'")
        return [b for _, b in self._host_pairs()]

    @intercepts_.setter
    def intercepts_(self, intercepts):
        net = self._network()
        net.set_params([(W, _data.to_host(b)) for (W, _), b in zip(net.params, intercepts)])

    # -- pickling: NumPy arrays only ---------------------------------------------------------
    def __getstate__(self):
        state = dict(super().__getstate__())
        net = state.pop("_net", None)
        if net is not None:
            state["_params_host"] = [(np.array(W), np.array(b)) for W, b in self._host_pairs()]
            state["_net_config"] = net.config()
            if state.get("_best_params") is not None:
                state["_best_params"] = [(np.array(net.backend.to_numpy(W)), np.array(net.backend.to_numpy(b)))
                                         for W, b in state["_best_params"]]
        if state.get("_optimizer") is not None:
            state["_optimizer"] = state["_optimizer"].on_host()
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._net = None

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
        first_pass = not self.__sklearn_is_fitted__() or (not self.warm_start and not incremental)
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
        if not _finite(net):
            raise ValueError(_stochastic.NON_FINITE)
        return self

    def _layer_units(self) -> list:
        pairs = self._network().params
        return [int(pairs[0][0].shape[1])] + [int(W.shape[0]) for W, _ in pairs]

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
        self._net, self._params_host, self._optimizer = net, None, None
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
