"""MLPClassifier: scikit-learn's multi-layer perceptron classifier, trained by portable_bp."""

from __future__ import annotations

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.metrics import accuracy_score
from sklearn.preprocessing import LabelBinarizer
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import _check_partial_fit_first_call, type_of_target, unique_labels
from sklearn.utils.validation import column_or_1d, validate_data

from . import _data
from ._base import BaseMLP, _fit_context, keep_params
from ._params import PARAMS_DOC


class MLPClassifier(ClassifierMixin, BaseMLP):
    __doc__ = f"""Multi-layer perceptron classifier: scikit-learn's ``MLPClassifier``,
    trained by portable_bp's backpropagation on NumPy, CuPy (GPU), PyTorch, JAX or
    array-api-strict.

    Log-loss with a softmax output for multiclass targets, a logistic output (binary
    cross-entropy) for binary and multilabel ones; solvers ``adam``, ``sgd`` and
    ``lbfgs`` as in scikit-learn.

    Parameters
    ----------
    {PARAMS_DOC}
    Attributes
    ----------
    classes_, loss_, best_loss_, loss_curve_, validation_scores_, best_validation_score_,
    t_, coefs_, intercepts_, n_features_in_, feature_names_in_, n_iter_, n_layers_,
    n_outputs_, out_activation_ : as scikit-learn's (``coefs_`` (n_in, n_out) per layer,
    NumPy arrays read from the network).
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 backend="numpy", dtype=None):
        keep_params(self, locals())

    # -- targets ------------------------------------------------------------------------------
    def _validate_input(self, X, y, incremental, reset):
        """(X, the binarized targets on the host as a boolean (n, n_outputs) array)."""
        X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], multi_output=True,
                             dtype=_data.float_dtypes(_data.place_of(X)), reset=reset)
        y = _data.to_host(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError(
                        "warm_start can only be used where `y` has the same classes as in the "
                        f"previous call to fit. Previously got {self.classes_}, `y` has {classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                                 f"{self.classes_}. 'y' has {classes}.")
        return X, self._label_binarizer.transform(y).astype(bool)

    def _output_activation(self) -> str:
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _net_targets(self, Y):
        """What the network trains on: class indices for softmax, 0/1 floats otherwise."""
        if self.out_activation_ == "softmax":
            return np.argmax(Y, axis=1)
        return Y.astype(np.float64)

    def _validation_truth(self, Y):
        return self._label_binarizer.inverse_transform(Y)

    def _validation_score(self, net, val) -> float:
        """scikit-learn's early-stopping score: accuracy on the held-out part."""
        proba = net.backend.to_numpy(_data.outputs(net, val.rows.X, self._sparse_rows()))
        return accuracy_score(val.y_true, self._decode(proba), sample_weight=val.w)

    def _decode(self, proba):
        """Class labels from host output probabilities."""
        return self._label_binarizer.inverse_transform(proba.ravel() if self.n_outputs_ == 1 else proba)

    # -- public API --------------------------------------------------------------------------
    @available_if(lambda est: est._check_solver())
    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over X and y, continuing the fitted model; ``classes`` (every label
        the model will ever see) is required on the first call."""
        if _check_partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            host_y = _data.to_host(y)
            if type_of_target(host_y).startswith("multilabel"):
                self._label_binarizer.fit(host_y)
            else:
                self._label_binarizer.fit(classes)
        return self._fit(X, y, sample_weight=sample_weight, incremental=True)

    def predict(self, X):
        """Predicted class labels (an indicator matrix for multilabel targets)."""
        net, A, place = self._outputs(X, "predict")
        labels = self._decode(net.backend.to_numpy(A))
        return labels if place is None else place.xp.asarray(labels, device=place.device)

    def predict_proba(self, X):
        """Probability of each class, in the order of ``classes_``."""
        net, A, place = self._outputs(X, "predict_proba")
        if self.n_outputs_ == 1:
            p = A[:, 0]
            A = net.xp.stack([1 - p, p], axis=1)
        return _data.to_caller(net, A, place)

    def predict_log_proba(self, X):
        """Log of :meth:`predict_proba`."""
        net, A, place = self._outputs(X, "predict_log_proba")
        if self.n_outputs_ == 1:
            p = A[:, 0]
            A = net.xp.stack([1 - p, p], axis=1)
        return _data.to_caller(net, net.xp.log(A), place)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags
