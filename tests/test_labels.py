"""Targets as scikit-learn reads them: ``target_type`` against ``type_of_target``,
``encode_labels`` against ``LabelEncoder``, and text labels in a CSV's target column."""

import numpy as np
import pytest
from sklearn.preprocessing import LabelEncoder
from sklearn.utils.multiclass import type_of_target

import portable_bp.datasets as ds
from portable_bp.datasets.labels import codes_for

TARGETS = {
    "ints-3": np.array([10, 20, 30, 10]),
    "ints-2": np.array([1, 0, 1]),
    "one-class": np.array([7, 7, 7]),
    "negative": np.array([-1, 1, -1]),
    "whole-floats": np.array([1.0, 2.0, 3.0]),
    "floats": np.array([0.5, 1.0, 2.0]),
    "text": np.array(["setosa", "virginica", "versicolor"]),
    "text-2": np.array(["yes", "no"]),
    "bools": np.array([True, False, True]),
    "column": np.array([[0.5], [1.5]]),
    "int-column": np.array([[1], [2], [3]]),
    "indicator": np.array([[0, 1], [1, 1], [0, 0]]),
    "multiclass-multioutput": np.array([[0, 1], [2, 1], [0, 3]]),
    "continuous-multioutput": np.array([[0.5, 1.0], [2.0, 3.25]]),
}


@pytest.mark.parametrize("name", TARGETS)
def test_target_type_is_scikit_learns(name):
    assert ds.target_type(TARGETS[name]) == type_of_target(TARGETS[name])


@pytest.mark.parametrize("name", ["ints-3", "negative", "whole-floats", "floats", "text", "bools"])
def test_encode_labels_is_label_encoders(name):
    y = TARGETS[name]
    classes, codes = ds.encode_labels(y)
    encoder = LabelEncoder().fit(y)
    np.testing.assert_array_equal(classes, encoder.classes_)
    np.testing.assert_array_equal(codes, encoder.transform(y))
    np.testing.assert_array_equal(codes_for(y, classes, "y"), codes)


def test_a_label_the_model_never_saw_is_named():
    with pytest.raises(ValueError, match=r"y: label 'dog' \(sample 1\) is not one of the model's classes"):
        codes_for(np.array(["cat", "dog"]), np.array(["cat", "emu"]), "y")
    with pytest.raises(ValueError, match="label '4' "):
        codes_for(np.array([1, 4]), np.array([1, 2, 3]), "y")


def test_text_labels_in_the_target_column(tmp_path):
    """Text anywhere in the target column makes the column text labels; numbers among them
    keep their shortest form; features stay numbers; the names come with read_table."""
    path = tmp_path / "t.csv"
    path.write_text("a,kind,b\n1,cat,2\n3,1.0,4\n5,dog,6\n7,2.5,8\n")
    X, y = ds.read_csv(path, target="kind")
    np.testing.assert_array_equal(X, [[1, 2], [3, 4], [5, 6], [7, 8]])
    assert y.dtype.kind == "U" and y.tolist() == ["cat", "1", "dog", "2.5"]
    t = ds.read_table(path, target="kind")
    assert t.feature_names == ["a", "b"] and t.target_name == "kind"


def test_a_headerless_file_whose_labels_are_words_is_data(tmp_path):
    """header="auto": only the target column holds text, so the first row is data."""
    path = tmp_path / "iris.csv"
    path.write_text("5.1,3.5,setosa\n6.2,2.9,virginica\n")
    X, y = ds.read_csv(path)
    assert X.shape == (2, 2) and y.tolist() == ["setosa", "virginica"]
    assert ds.read_table(path).feature_names is None


def test_text_labels_across_chunks_and_long_rows(tmp_path, monkeypatch):
    """Labels in several parsed chunks, and in rows parsed batch by batch, keep their rows."""
    from portable_bp.datasets import tables

    monkeypatch.setattr(tables, "FIELDS_PER_CHUNK", 9)  # 3 rows of 3 fields per chunk
    rows = [f"{i},{i * 2},{'odd' if i % 2 else i}" for i in range(20)]
    path = tmp_path / "t.csv"
    path.write_text("\n".join(rows) + "\n")
    X, y = ds.read_csv(path)
    assert X[:, 0].tolist() == list(range(20))
    assert y.tolist() == ["odd" if i % 2 else str(i) for i in range(20)]


@pytest.mark.parametrize("text, match", [
    ("a,t\n1,x\n2,\n", r"missing target value on line 3, column 2"),
    ("a,t\nq,x\n", r"non-numeric CSV value 'q' on line 2, column 1 \('a'\)"),
])
def test_empty_labels_and_text_features_are_refused(tmp_path, text, match):
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=match):
        ds.read_csv(path)


def test_read_table_without_target_and_load_table_for_prediction(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1,2\n3,4\n")
    t = ds.read_table(path, target=None)
    assert t.y is None and t.feature_names == ["a", "b"] and t.X.tolist() == [[1, 2], [3, 4]]
    np.savez(tmp_path / "x.npz", X=np.ones((3, 2)))
    t = ds.load_table(tmp_path / "x.npz", target=None)
    assert t.y is None and t.X.shape == (3, 2)
