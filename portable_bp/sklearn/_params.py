"""The estimators' parameters: scikit-learn 1.9's MLP parameters with the same names,
defaults and constraints, plus ``backend`` and ``dtype``; and how their names map onto
portable_bp's activations and losses."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.utils._param_validation import Interval, Options, StrOptions

STOCHASTIC_SOLVERS = ("sgd", "adam")

# scikit-learn's constraints, checked at fit/partial_fit time by ``_fit_context``
CONSTRAINTS: dict = {
    "hidden_layer_sizes": ["array-like", Interval(Integral, 1, None, closed="left")],
    "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
    "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
    "alpha": [Interval(Real, 0, None, closed="left")],
    "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
    "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
    "learning_rate_init": [Interval(Real, 0, None, closed="neither")],
    "power_t": [Interval(Real, 0, None, closed="left")],
    "max_iter": [Interval(Integral, 1, None, closed="left")],
    "shuffle": ["boolean"],
    "random_state": ["random_state"],
    "tol": [Interval(Real, 0, None, closed="left")],
    "verbose": ["verbose"],
    "warm_start": ["boolean"],
    "momentum": [Interval(Real, 0, 1, closed="both")],
    "nesterovs_momentum": ["boolean"],
    "early_stopping": ["boolean"],
    "validation_fraction": [Interval(Real, 0, 1, closed="left")],
    "beta_1": [Interval(Real, 0, 1, closed="left")],
    "beta_2": [Interval(Real, 0, 1, closed="left")],
    "epsilon": [Interval(Real, 0, None, closed="neither")],
    "n_iter_no_change": [Interval(Integral, 1, None, closed="left"), Options(Real, {np.inf})],
    "max_fun": [Interval(Integral, 1, None, closed="left")],
    # ours: where to train (a portable_bp backend spec) and in which precision
    "backend": [str],
    "dtype": [None, StrOptions({"float32", "float64"})],
}

# scikit-learn's activation names -> portable_bp's
ACTIVATIONS = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu",
               "softmax": "softmax", "exp": "exp"}

# out_activation_ -> portable_bp loss (each pairs with its canonical link, delta = a - y)
LOSSES = {"identity": "mse", "exp": "poisson", "softmax": "cross_entropy",
          "logistic": "binary_cross_entropy"}

PARAMS_DOC = """
    Every parameter of scikit-learn 1.9's MLP has the same name, default and meaning
    (see its documentation): ``hidden_layer_sizes, activation, solver, alpha, batch_size,
    learning_rate, learning_rate_init, power_t, max_iter, shuffle, random_state, tol,
    verbose, warm_start, momentum, nesterovs_momentum, early_stopping, validation_fraction,
    beta_1, beta_2, epsilon, n_iter_no_change, max_fun``. Two are ours:

    backend : str, default="numpy"
        The portable_bp backend that trains and predicts: ``"numpy"``, ``"cupy"``,
        ``"cupy:1"``, ``"torch"``, ``"torch:cuda"``, ``"jax"``, ``"array_api_strict"`` or
        ``"auto"`` (CuPy when a GPU answers, else NumPy). Under
        ``sklearn.set_config(array_api_dispatch=True)`` an input array of another library
        (CuPy, PyTorch, ...) trains on that library and device instead, and predictions
        come back in it; NumPy, list, sparse and DataFrame inputs always get NumPy results.

    dtype : {None, "float32", "float64"}, default=None
        The network's precision. None follows the input as scikit-learn does: float32
        stays float32, everything else becomes float64.
"""


def hidden_sizes(hidden_layer_sizes) -> list[int]:
    """``hidden_layer_sizes`` as a list of ints (an int is one hidden layer), refused as
    scikit-learn refuses it: a ValueError for a size <= 0, a TypeError for a size that is
    not an integer (``10.5``, ``2.9``, ``True``, ``"3"``: scikit-learn fails on them when
    it allocates the layers; truncating them would train another architecture)."""
    sizes = list(hidden_layer_sizes) if hasattr(hidden_layer_sizes, "__iter__") else [hidden_layer_sizes]
    if any(isinstance(s, Real) and s <= 0 for s in sizes):
        raise ValueError(f"hidden_layer_sizes must be > 0, got {sizes}.")
    for size in sizes:
        if isinstance(size, (bool, np.bool_)) or not isinstance(size, Integral):
            raise TypeError(f"hidden_layer_sizes must hold integers (one per hidden layer), got "
                            f"{size!r} in {hidden_layer_sizes!r}")
    return [int(s) for s in sizes]
