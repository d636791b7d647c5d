"""Bundled and synthetic data sets: small, seeded, no download.

Each generator returns ``(X, y)`` with ``X`` float64 ``(n, features)``; labels are int64
``(n,)`` for the classification problems and targets float64 for the regression ones.
The same seed always gives the same data, so examples and tests are reproducible.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from ._checks import integer_at_least, non_negative


def digits() -> tuple[np.ndarray, np.ndarray]:
    """Return scikit-learn's bundled 8x8 handwritten digits (no download).

    1797 samples, 64 pixel features scaled from 0..16 to [0, 1], labels 0..9.

    Returns ``(X, y)`` with ``X`` float64 ``(1797, 64)`` and ``y`` int64
    ``(1797,)``. The data is the file scikit-learn ships (an optional dependency), read
    where it lies in the installed package without importing scikit-learn: its import
    (SciPy's statistics among it) took ~1.1 s, three quarters of the main command's time.
    Where that file is not found, ``sklearn.datasets.load_digits`` reads it.
    """
    table = _bundled_digits()
    if table is not None:
        return table[:, :-1] / 16.0, table[:, -1].astype(np.int64)
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:  # pragma: no cover - depends on environment
        raise ImportError(
            "digits() needs scikit-learn, which ships the data set: "
            'pip install -e ".[datasets]" in the checkout (or pip install scikit-learn)'
        ) from exc
    bunch = load_digits()
    X = np.asarray(bunch.data, dtype=np.float64) / 16.0
    y = np.asarray(bunch.target, dtype=np.int64)
    return X, y


def _bundled_digits() -> np.ndarray | None:
    """The rows of scikit-learn's bundled file (64 pixels, then the label), or None where
    the file is not found or not as expected (``load_digits`` then reads it its own way)."""
    path = _bundled_digits_file()
    if path is None:
        return None
    try:
        table = np.loadtxt(path, delimiter=",")
    except (OSError, ValueError):
        return None
    return table if table.shape == (1797, 65) else None


def _bundled_digits_file() -> str | None:
    """The path of scikit-learn's ``datasets/data/digits.csv.gz``, found without importing
    scikit-learn (its package spec names its folder), or None."""
    try:
        spec = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = os.path.join(folder, "datasets", "data", "digits.csv.gz")
        if os.path.isfile(path):
            return path
    return None


def xor(n_samples: int | None = None, noise: float = 0.0, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Return the XOR problem, the classic test that a hidden layer is needed.

    With ``n_samples=None`` (default) this is the 4-row truth table, in the
    order (0,0), (0,1), (1,0), (1,1). With an integer ``n_samples`` the
    corners are drawn at random, so larger, noisy versions can be made.
    ``noise`` is the standard deviation of Gaussian noise added to ``X``.

    Returns ``(X, y)``: ``X`` float64 ``(n, 2)`` and ``y`` float64 ``(n, 1)``
    holding 0.0 / 1.0, ready as targets for a single sigmoid output.
    """
    rng = np.random.default_rng(seed)
    noise = non_negative("noise", noise)
    if n_samples is None:
        corners = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
    else:
        n_samples = integer_at_least("n_samples", n_samples, 1)
        corners = rng.integers(0, 2, size=(n_samples, 2)).astype(np.float64)
    y = np.logical_xor(corners[:, 0], corners[:, 1]).astype(np.float64)
    X = corners + noise * rng.standard_normal(corners.shape)
    return X, y[:, None]


def spirals(n_samples: int = 300, n_classes: int = 2, noise: float = 0.1,
            seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Return ``n_classes`` interleaved spiral arms in the plane.

    A small problem that a linear model cannot solve but a two-layer MLP can.
    Points are spread evenly over the classes (labels cycle 0, 1, ...).
    Each arm turns 1.5 times around the origin, radius growing from 0 to 1;
    ``noise`` is the standard deviation of Gaussian noise added to ``X``.

    Returns ``(X, y)``: ``X`` float64 ``(n, 2)``, ``y`` int64 ``(n,)`` in
    ``0..n_classes-1``.
    """
    n_samples = integer_at_least("n_samples", n_samples, 1)
    noise = non_negative("noise", noise)
    n_classes = integer_at_least("n_classes", n_classes, 2)
    rng = np.random.default_rng(seed)
    y = np.arange(n_samples, dtype=np.int64) % n_classes
    radius = rng.uniform(0.0, 1.0, n_samples)
    angle = 3.0 * np.pi * radius + 2.0 * np.pi * y / n_classes
    X = radius[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    X += noise * rng.standard_normal(X.shape)
    return X, y


def moons(n_samples: int = 200, noise: float = 0.1, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Return two interleaving half circles (the "two moons" problem).

    Class 0 is the upper arc of the unit circle, class 1 the lower arc
    shifted to (1, 0.5); labels alternate 0, 1, ... ``noise`` is the
    standard deviation of Gaussian noise added to ``X``.

    Returns ``(X, y)``: ``X`` float64 ``(n, 2)``, ``y`` int64 ``(n,)`` in {0, 1}.
    """
    n_samples = integer_at_least("n_samples", n_samples, 1)
    noise = non_negative("noise", noise)
    rng = np.random.default_rng(seed)
    y = np.arange(n_samples, dtype=np.int64) % 2
    theta = rng.uniform(0.0, np.pi, n_samples)
    upper = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    lower = np.stack([1.0 - np.cos(theta), 0.5 - np.sin(theta)], axis=1)
    X = np.where(y[:, None] == 0, upper, lower)
    X += noise * rng.standard_normal(X.shape)
    return X, y


def sine(n_samples: int = 200, noise: float = 0.1, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Return a 1-D regression problem: ``y = sin(x) + noise``.

    ``x`` is drawn uniformly from [-pi, pi]; ``noise`` is the standard
    deviation of the Gaussian noise added to ``y``.

    Returns ``(X, y)``: ``X`` float64 ``(n, 1)``, ``y`` float64 ``(n, 1)``.
    """
    n_samples = integer_at_least("n_samples", n_samples, 1)
    noise = non_negative("noise", noise)
    rng = np.random.default_rng(seed)
    X = rng.uniform(-np.pi, np.pi, size=(n_samples, 1))
    y = np.sin(X) + noise * rng.standard_normal(X.shape)
    return X, y


def blobs(n_samples: int = 300, n_features: int = 2, centers=3, cluster_std: float = 1.0,
          seed=0) -> tuple[np.ndarray, np.ndarray]:
    """Return isotropic Gaussian clusters, one class per cluster.

    ``centers`` is either a number of clusters (their centres are drawn
    uniformly from the box [-10, 10] in each feature) or an array of
    shape ``(k, n_features)`` giving them. Points are spread evenly over the
    clusters (labels cycle 0, 1, ...).

    Returns ``(X, y)``: ``X`` float64 ``(n, n_features)``, ``y`` int64
    ``(n,)`` in ``0..k-1``.
    """
    n_samples = integer_at_least("n_samples", n_samples, 1)
    cluster_std = non_negative("cluster_std", cluster_std)
    rng = np.random.default_rng(seed)
    if np.ndim(centers) == 0:
        k = integer_at_least("centers", centers, 1)
        n_features = integer_at_least("n_features", n_features, 1)
        centers = rng.uniform(-10.0, 10.0, size=(k, n_features))
    else:
        centers = np.asarray(centers, dtype=np.float64)
        if centers.ndim != 2 or centers.shape[1] != n_features:
            raise ValueError(
                f"centers must have shape (k, n_features={n_features}), "
                f"got {centers.shape}"
            )
    y = np.arange(n_samples, dtype=np.int64) % len(centers)
    X = centers[y] + cluster_std * rng.standard_normal((n_samples, n_features))
    return X, y
