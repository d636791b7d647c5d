"""Tests for portable_bp.datasets' preprocessing: the seeded (stratified) split and the
Standardizer."""

import numpy as np
import pytest

from portable_bp import datasets as ds

# --------------------------------------------------------------------------
# train_test_split
# --------------------------------------------------------------------------


def test_split_shapes_and_determinism():
    X = np.arange(50, dtype=float).reshape(25, 2)
    y = np.arange(25)
    a = ds.train_test_split(X, y, test_size=0.2, seed=7)
    b = ds.train_test_split(X, y, test_size=0.2, seed=7)
    c = ds.train_test_split(X, y, test_size=0.2, seed=8)
    X_train, X_test, y_train, y_test = a
    assert X_train.shape == (20, 2) and X_test.shape == (5, 2)
    for left, right in zip(a, b):
        np.testing.assert_array_equal(left, right)
    assert not np.array_equal(a[3], c[3])
    # rows stay paired and nothing is lost or duplicated
    np.testing.assert_array_equal(X_test[:, 0] / 2, y_test)
    assert sorted(np.concatenate([y_train, y_test])) == list(range(25))


def test_split_int_test_size():
    X, y = np.zeros((10, 1)), np.arange(10)
    assert len(ds.train_test_split(X, y, test_size=3)[1]) == 3


def test_split_stratify_keeps_class_shares():
    y = np.array([0] * 80 + [1] * 20)
    X = np.arange(100, dtype=float)[:, None]
    _, _, y_train, y_test = ds.train_test_split(X, y, test_size=0.25, seed=1, stratify=y)
    assert len(y_test) == 25
    assert np.sum(y_test == 1) == 5 and np.sum(y_train == 1) == 15
    again = ds.train_test_split(X, y, test_size=0.25, seed=1, stratify=y)[3]
    np.testing.assert_array_equal(y_test, again)


def test_split_stratify_column_labels():
    X, y = ds.xor(n_samples=40, seed=0)
    _, _, y_train, y_test = ds.train_test_split(X, y, test_size=0.5, stratify=y)
    assert y_test.shape == (20, 1)
    assert abs(y_test.mean() - y.mean()) <= 1 / 20


@pytest.mark.parametrize("kwargs, message", [
    (dict(test_size=0.0), r"\(0, 1\)"),
    (dict(test_size=1.0), r"\(0, 1\)"),
    (dict(test_size=10), "non-empty"),
    (dict(test_size=0), "non-empty"),
    (dict(stratify=np.array([0] * 9 + [1])), "only 1 sample"),
    (dict(stratify=np.zeros(3)), "stratify"),
])
def test_split_errors(kwargs, message):
    X, y = np.zeros((10, 2)), np.zeros(10)
    with pytest.raises(ValueError, match=message):
        ds.train_test_split(X, y, **kwargs)


def test_split_length_mismatch():
    with pytest.raises(ValueError, match="10 and 9"):
        ds.train_test_split(np.zeros((10, 2)), np.zeros(9))


# --------------------------------------------------------------------------
# Standardizer
# --------------------------------------------------------------------------


def test_standardizer_fits_on_train_only():
    rng = np.random.default_rng(0)
    X_train = rng.normal(5.0, 3.0, size=(200, 3))
    X_test = X_train[:10] + 100.0
    scaler = ds.Standardizer().fit(X_train)
    np.testing.assert_allclose(scaler.mean_, X_train.mean(axis=0))
    np.testing.assert_allclose(scaler.scale_, X_train.std(axis=0))
    Z = scaler.transform(X_train)
    np.testing.assert_allclose(Z.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(Z.std(axis=0), 1)
    # the test part is scaled with the training statistics, not its own
    np.testing.assert_allclose(scaler.transform(X_test), (X_test - scaler.mean_) / scaler.scale_)
    np.testing.assert_allclose(scaler.inverse_transform(scaler.transform(X_test)), X_test)


def test_standardizer_constant_feature():
    X = np.array([[1.0, 0.1], [2.0, 0.1], [3.0, 0.1]])
    Z = ds.Standardizer().fit_transform(X)
    assert np.all(np.isfinite(Z))
    np.testing.assert_allclose(Z[:, 1], 0, atol=1e-12)


def test_standardizer_errors():
    scaler = ds.Standardizer()
    with pytest.raises(ValueError, match="before fit"):
        scaler.transform(np.zeros((2, 2)))
    scaler.fit(np.ones((4, 3)))
    with pytest.raises(ValueError, match="2 features.*fitted with 3"):
        scaler.transform(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="2-D"):
        scaler.transform(np.zeros(3))
    with pytest.raises(ValueError, match="at least one sample"):
        ds.Standardizer().fit(np.zeros((0, 3)))


def test_csv_first_row_with_an_empty_field_is_data_not_a_header(tmp_path):
    p = tmp_path / "gap.csv"
    p.write_text("1,2,,0\n4,5,6,1\n")
    with pytest.raises(ValueError, match=r"gap\.csv.*non-numeric CSV value '' on line 1"):
        ds.read_csv(p)


def test_npz_with_x_and_y_of_different_lengths_names_the_file(tmp_path):
    p = tmp_path / "mismatch.npz"
    np.savez(p, X=np.ones((10, 2)), y=np.ones(8))
    with pytest.raises(ValueError, match=r"mismatch\.npz: 'X' has 10 samples but 'y' has 8"):
        ds.read_npz(p)


@pytest.mark.parametrize("make", [ds.spirals, ds.moons, ds.sine, ds.blobs])
def test_fractional_sample_counts_are_refused(make):
    with pytest.raises(ValueError, match="n_samples must be a positive integer"):
        make(n_samples=300.0)
