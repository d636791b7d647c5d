"""Behaviour fixed in portable_bp.datasets: argument checks, exact labels, non-finite values,
clear messages for malformed arrays, IDX intent in load_file, Standardizer overflow."""

import numpy as np
import pytest

from portable_bp import datasets as ds


# -- arguments -----------------------------------------------------------------------------------
@pytest.mark.parametrize("call, match", [
    (lambda: ds.spirals(n_classes=3.0), "n_classes must be an integer >= 2"),  # gave float64 labels
    (lambda: ds.spirals(n_classes=True), "n_classes must be an integer >= 2"),
    (lambda: ds.blobs(centers=2.5), "centers must be a positive integer"),
    (lambda: ds.blobs(n_features=0), "n_features must be a positive integer"),
    (lambda: ds.moons(noise=float("inf")), "noise must be a finite number >= 0"),
    (lambda: ds.sine(noise=float("nan")), "noise must be a finite number >= 0"),
    (lambda: ds.blobs(cluster_std=-0.5), "cluster_std must be a finite number >= 0"),
    (lambda: ds.xor(n_samples=0), "n_samples must be a positive integer"),
])
def test_generator_arguments_are_checked_by_one_helper(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_numpy_integers_are_counts():
    X, y = ds.spirals(n_samples=np.int64(30), n_classes=np.int32(3))
    assert X.shape == (30, 2) and y.dtype == np.int64 and set(y) == {0, 1, 2}
