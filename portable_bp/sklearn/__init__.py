"""scikit-learn estimators backed by portable_bp: drop-in ``MLPClassifier`` and
``MLPRegressor`` with scikit-learn 1.9's parameters, attributes and behaviour, that also
train on a GPU (``backend="cupy"``) or, under ``sklearn.set_config(array_api_dispatch=True)``,
on the library and device of their input (CuPy, PyTorch)::

    from portable_bp.sklearn import MLPClassifier     # instead of sklearn.neural_network
    clf = MLPClassifier(hidden_layer_sizes=(256,), backend="cupy").fit(X, y)

Needs scikit-learn (>= 1.6) and SciPy: ``pip install -e ".[sklearn]"`` in the checkout.

What is scikit-learn's, exactly: the initial weights (drawn from ``random_state`` in its
order), the batch order, Adam (eps outside the bias correction), SGD momentum and Nesterov
(velocity carrying each step's rate), ``alpha`` (``alpha * W / sw`` per batch on weights
only, ``sw`` the batch's size or sample-weight sum: ragged last batches included), the
reported ``loss_`` (squared error averaged over outputs, plus the L2 term with the weights
each batch saw), the learning-rate schedules, ``tol``/``n_iter_no_change`` on the training
loss or the validation score (``early_stopping``: its split, stratified for single-output
classifiers, best parameters restored), ``ConvergenceWarning``, ``partial_fit``,
``warm_start``, and its validation and messages. In float64 the fitted attributes agree with
scikit-learn's to rounding (tests/test_sklearn_equivalence.py), and scikit-learn's own
``test_mlp.py`` passes against these estimators but for the three tests that read its
private members (tests/test_sklearn_upstream.py runs it with the import swapped).
``coefs_`` and ``intercepts_`` are plain lists of NumPy arrays as in scikit-learn (replace
an element, write into one or assign new lists: the next predict or fit uses them), and
``set_params`` (``activation`` included) takes effect at the next predict or fit.

Where it differs, knowingly:

* float32 runs in float32 throughout (scikit-learn's Adam makes float64 temporaries, and its
  L-BFGS switches to float64 weights): the same to float32 rounding, not bit for bit.
* L-BFGS packs the parameters in portable_bp's layout: the same objective and gradient,
  but rounding differs, and L-BFGS amplifies that after tens of iterations (another path to
  an optimum of the same quality).
* Log-loss is computed from the logits (scikit-learn clips probabilities at machine eps):
  ``loss_`` differs only for saturated outputs.
* A mini-batch whose sample weights are all zero takes no step (scikit-learn divides by
  zero and ends with NaN weights). A non-finite loss raises scikit-learn's "Solver produced
  non-finite parameter weights" ValueError at once, not after the last epoch. With
  ``early_stopping`` the fit goes on, as scikit-learn's does, to ``max_iter`` with NaN
  losses and validation scores and restores the best weights (and says so in a
  RuntimeWarning where scikit-learn's are NumPy's overflow warnings).
* ``MLPRegressor(solver="lbfgs")`` has no ``partial_fit`` (scikit-learn's regressor exposes
  one that runs a whole L-BFGS fit; its classifier has none, as here).
* ``hidden_layer_sizes`` holding a non-integer (``(10.5,)``, ``(True,)``) raises a
  TypeError naming it (scikit-learn's TypeError comes from deep inside NumPy).
* ``loss="poisson"`` refuses negative targets (scikit-learn trains to NaN).
"""

try:
    import scipy  # noqa: F401
    import sklearn  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(f'portable_bp.sklearn needs scikit-learn and SciPy ({exc}); install them '
                      f'with: pip install -e ".[sklearn]" in the checkout') from exc

from .classifier import MLPClassifier
from .regressor import MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor"]
