"""MLPRegressor: scikit-learn's multi-layer perceptron regressor, trained by portable_bp."""

from __future__ import annotations

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import column_or_1d, validate_data

from . import _data
from ._base import BaseMLP, _fit_context, keep_params
from ._params import PARAMS_DOC


class MLPRegressor(RegressorMixin, BaseMLP):
    __doc__ = f"""Multi-layer perceptron regressor: scikit-learn's ``MLPRegressor``,
    trained by portable_bp's backpropagation on NumPy, CuPy (GPU), PyTorch, JAX or
    array-api-strict.

    ``loss="squared_error"`` (identity output; ``loss_`` is half the squared error averaged
    over samples and outputs, as scikit-learn reports it) or ``"poisson"`` (exp output,
    half the Poisson deviance); any number of outputs.

    Parameters
    ----------
    loss : {{"squared_error", "poisson"}}, default="squared_error"
    {PARAMS_DOC}
    Attributes
    ----------
    loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_, t_,
    coefs_, intercepts_, n_features_in_, feature_names_in_, n_iter_, n_layers_, n_outputs_,
    out_activation_ : as scikit-learn's.
    """

    _parameter_constraints: dict = {**BaseMLP._parameter_constraints,
                                    "loss": [StrOptions({"squared_error", "poisson"})]}

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend="numpy", dtype=None):
        keep_params(self, locals())

    # -- targets ------------------------------------------------------------------------------
    def _validate_input(self, X, y, incremental, reset):
        """(X, the targets on the host as a float (n, n_outputs) array)."""
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             y_numeric=True, dtype=_data.float_dtypes(_data.place_of(X)), reset=reset)
        y = _data.to_host(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        Y = np.asarray(y, dtype=np.float64).reshape(y.shape[0], -1)
        if self.loss == "poisson" and (Y < 0).any():
            raise ValueError("Some value(s) of y are negative which is not allowed for Poisson regression.")
        return X, Y

    def _output_activation(self) -> str:
        return "exp" if self.loss == "poisson" else "identity"

    def _net_targets(self, Y):
        return Y

    def _loss_divisor(self) -> int:
        """scikit-learn reports half the squared error averaged over the outputs too (its
        gradient, and portable_bp's, sum over them)."""
        return self.n_outputs_ if self.out_activation_ == "identity" else 1

    def _validation_truth(self, Y):
        return Y.ravel() if Y.shape[1] == 1 else Y

    def _validation_score(self, net, val) -> float:
        """scikit-learn's early-stopping score: R² on the held-out part (NaN for non-finite
        predictions)."""
        pred = self._shape(net.backend.to_numpy(_data.outputs(net, val.rows.X, self._sparse_rows())))
        if not np.isfinite(pred).all():
            return np.nan
        return r2_score(val.y_true, pred, sample_weight=val.w)

    def _shape(self, A):
        return A[:, 0] if A.shape[1] == 1 else A

    # -- public API --------------------------------------------------------------------------
    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over X and y, continuing the fitted model."""
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X):
        """Predicted values, (n_samples,) for one output, else (n_samples, n_outputs)."""
        net, A, place = self._outputs(X, "predict")
        return _data.to_caller(net, self._shape(A), place)
