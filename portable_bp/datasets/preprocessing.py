"""Host-side preprocessing: reproducible train/test splits and standardization."""

from __future__ import annotations

import math

import numpy as np

from ._targets import check_finite


def train_test_split(X, y, test_size: float = 0.2, seed=0,
                     stratify=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split ``X`` and ``y`` into shuffled train and test parts, reproducibly.

    ``test_size`` is a fraction in (0, 1) (the test count is rounded up, and
    at least one sample stays in training) or an integer count in
    ``1..n-1``. ``stratify`` is an array of class labels (usually ``y``):
    each class then keeps its share in both parts, so small classes are not
    lost from the test set by chance.

    Returns ``X_train, X_test, y_train, y_test``.
    """
    X, y = np.asarray(X), np.asarray(y)
    n = len(X)
    if len(y) != n:
        raise ValueError(f"X and y have different lengths: {n} and {len(y)}")
    n_test = _test_count(test_size, n)
    rng = np.random.default_rng(seed)
    if stratify is None:
        order = rng.permutation(n)
        test, train = order[:n_test], order[n_test:]
    else:
        test, train = _stratified_indices(np.asarray(stratify), n, n_test, rng)
    return X[train], X[test], y[train], y[test]


def _test_count(test_size, n):
    """The number of test samples: a fraction is rounded up, and both parts must be non-empty."""
    if isinstance(test_size, bool):
        raise TypeError("test_size must be a float fraction or an int count")
    if isinstance(test_size, (int, np.integer)):
        count = int(test_size)
        if not 1 <= count <= n - 1:
            raise ValueError(
                f"test_size={count} must leave both parts non-empty: "
                f"use 1..{n - 1} for {n} samples"
            )
        return count
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1) or an int, got {test_size!r}")
    count = math.ceil(test_size * n)
    if not 1 <= count <= n - 1:
        raise ValueError(
            f"test_size={test_size} leaves an empty part with {n} samples"
        )
    return count


def _stratified_indices(labels, n, n_test, rng):
    """Per-class test counts by largest remainder, then shuffle each part."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or len(labels) != n:
        raise ValueError(
            f"stratify must be {n} class labels, shape ({n},), "
            f"got shape {labels.shape}"
        )
    classes, codes, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        lonely = classes[np.argmin(counts)]
        raise ValueError(
            f"cannot stratify: class {lonely!r} has only 1 sample; "
            "every class needs at least 2"
        )
    quota = counts * n_test / n
    per_class = np.floor(quota).astype(np.int64)
    short = n_test - per_class.sum()
    per_class[np.argsort(-(quota - per_class), kind="stable")[:short]] += 1
    test, train = [], []
    for k in range(len(classes)):
        members = rng.permutation(np.flatnonzero(codes == k))
        test.append(members[: per_class[k]])
        train.append(members[per_class[k]:])
    return rng.permutation(np.concatenate(test)), rng.permutation(np.concatenate(train))


class Standardizer:
    """Rescale each feature to zero mean and unit variance.

    Fit on the training part only, then transform train and test with the
    same ``mean_`` and ``scale_``, so nothing about the test data leaks into
    training. A constant feature (standard deviation zero, up to rounding)
    gets ``scale_ = 1`` so it is centred rather than divided by zero.
    Inputs must be finite, and a result that overflows float64 is an error
    naming the feature(s), never a silent inf or 0.0.
    """

    def __init__(self):
        self.mean_ = None
        self.scale_ = None

    def fit(self, X) -> Standardizer:
        """Learn per-feature mean and standard deviation from ``X``; return self.

        ``X`` must be finite. Statistics that overflow float64 when computed directly
        (values near 1e308: their squares, or their sum, are inf) are recomputed on the
        feature divided by its largest magnitude, so they come out finite and exact to
        rounding, instead of a scale of inf that turned every value into 0.0.
        """
        X = self._as_2d(X)
        if len(X) == 0:
            raise ValueError("Standardizer.fit needs at least one sample, got 0")
        check_finite(X, "Standardizer.fit: X")
        with np.errstate(over="ignore", invalid="ignore"):
            mean, std = X.mean(axis=0), X.std(axis=0)
        overflowed = ~(np.isfinite(mean) & np.isfinite(std))
        if overflowed.any():
            mean[overflowed], std[overflowed] = _scaled_stats(X[:, overflowed])
        tiny = 10 * np.finfo(np.float64).eps * np.maximum(np.abs(mean), 1.0)
        self.mean_ = mean
        self.scale_ = np.where(std <= tiny, 1.0, std)
        return self

    def transform(self, X) -> np.ndarray:
        """Return ``(X - mean_) / scale_`` as float64 (an overflow is an error naming the feature)."""
        X = self._checked(X, "transform")
        with np.errstate(over="ignore", invalid="ignore"):
            return _finite_result((X - self.mean_) / self.scale_, "transform")

    def fit_transform(self, X) -> np.ndarray:
        """Fit on ``X`` and return it transformed."""
        return self.fit(X).transform(X)

    def inverse_transform(self, X) -> np.ndarray:
        """Undo :meth:`transform`: return ``X * scale_ + mean_``."""
        X = self._checked(X, "inverse_transform")
        with np.errstate(over="ignore", invalid="ignore"):
            return _finite_result(X * self.scale_ + self.mean_, "inverse_transform")

    @property
    def n_features_in_(self) -> int | None:
        """Number of features seen by :meth:`fit` (None before)."""
        return None if self.mean_ is None else len(self.mean_)

    def _checked(self, X, method):
        if self.mean_ is None:
            raise ValueError(
                f"Standardizer.{method} called before fit: call fit(X_train) first"
            )
        X = self._as_2d(X)
        if X.shape[1] != len(self.mean_):
            raise ValueError(
                f"X has {X.shape[1]} features, but the Standardizer was fitted "
                f"with {len(self.mean_)} features"
            )
        check_finite(X, f"Standardizer.{method}: X")
        return X

    @staticmethod
    def _as_2d(X):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(
                f"expected a 2-D array (n_samples, n_features), got shape {X.shape}"
            )
        return X

    def __repr__(self):
        state = "unfitted" if self.mean_ is None else f"{self.n_features_in_} features"
        return f"Standardizer({state})"


def _scaled_stats(columns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of finite columns whose direct computation overflows."""
    peak = np.max(np.abs(columns), axis=0)
    scaled = columns / peak
    return scaled.mean(axis=0) * peak, scaled.std(axis=0) * peak


def _finite_result(Z: np.ndarray, method: str) -> np.ndarray:
    """``Z`` computed from finite inputs: non-finite entries can only be float64 overflow."""
    finite = np.isfinite(Z)
    if not finite.all():
        features = np.flatnonzero(~finite.all(axis=0))
        raise ValueError(f"Standardizer.{method} overflows float64 in feature(s) {features[:10].tolist()}: "
                         "the values are too far from the training data's mean for its scale")
    return Z
