"""scikit-learn estimators backed by portable_bp: drop-in ``MLPClassifier`` and
``MLPRegressor`` with scikit-learn 1.9's parameters, attributes and behaviour, that also
train on a GPU (``backend="cupy"``) or, under ``sklearn.set_config(array_api_dispatch=True)``,
on the library and device of their input (CuPy, PyTorch)::

    from portable_bp.sklearn import MLPClassifier     # instead of sklearn.neural_network
    clf = MLPClassifier(hidden_layer_sizes=(256,), backend="cupy").fit(X, y)

Needs scikit-learn and SciPy: ``pip install "portable_bp[sklearn]"``.
"""

try:
    import scipy  # noqa: F401
    import sklearn  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(f'portable_bp.sklearn needs scikit-learn and SciPy ({exc}); install them '
                      f'with: pip install "portable_bp[sklearn]"') from exc

from .classifier import MLPClassifier
from .regressor import MLPRegressor

__all__ = ["MLPClassifier", "MLPRegressor"]
