"""The command on people's tables: labels of any kind, the task, predict, export, validation,
early stopping and resuming, run as users run them (``python -m portable_bp`` in a subprocess).

Oracles: scikit-learn's ``type_of_target`` and ``LabelEncoder`` for the task and the class
order, the saved network computed in this process for predictions, onnxruntime for export.
"""

import ast
import csv
import re
import struct

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, final_accuracy, run_cli

import portable_bp as pb
from portable_bp import checkpoint

SPECIES = np.array(["setosa", "versicolor", "virginica"])
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


def table(path, header, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        if header:
            writer.writerow(header)
        writer.writerows(rows)


def flowers(n=150, seed=0):
    """Three well separated classes in four features (iris-like), labels as text."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    X = rng.normal(size=(n, 4)) * 0.4 + y[:, None] * np.array([1.0, -0.5, 2.0, 1.0]) + 5
    return X, y


def read_csv(path_or_text, text=False):
    lines = (path_or_text if text else open(path_or_text).read()).strip().splitlines()
    return list(csv.reader(lines))


@pytest.fixture(scope="module")
def flower_model(tmp_path_factory):
    """A model trained on a CSV whose label column (not the last) holds text."""
    folder = tmp_path_factory.mktemp("flowers")
    X, y = flowers()
    table(folder / "iris.csv", ["sepal_length", "sepal_width", "species", "petal_length", "petal_width"],
          [[*x[:2], SPECIES[t], *x[2:]] for x, t in zip(X.round(3), y)])
    r = run_cli("train", "--data", "iris.csv", "--target", "species", "--epochs", "15", "--backend", "numpy",
                "--save", "m.npz", cwd=folder)
    assert r.returncode == 0, r.stderr
    return folder, r.stdout


def test_text_labels_train_and_the_first_line_says_the_task(flower_model):
    folder, stdout = flower_model
    lines = stdout.splitlines()
    assert lines[0] == ("task: classify (auto: the target is multiclass, as scikit-learn's type_of_target says): "
                        "3 classes: setosa, versicolor, virginica")
    assert "4-64-3" in stdout
    accuracy, n = final_accuracy(stdout)
    assert n == 30 and accuracy >= 0.9


def test_the_model_file_keeps_classes_features_and_standardizer(flower_model):
    from sklearn.preprocessing import LabelEncoder

    folder, _ = flower_model
    data = checkpoint.read_record(folder / "m.npz")["data"]
    assert data["meta"]["classes"] == LabelEncoder().fit(SPECIES[flowers()[1]]).classes_.tolist()
    assert data["meta"]["feature_names"] == FEATURES and data["meta"]["target"] == "species"
    assert data["arrays"]["mean"].shape == (4,) and np.all(data["arrays"]["scale"] > 0)


def predicted_by_hand(folder, X):
    """The saved network on standardized features, computed here: (labels, probabilities)."""
    net = pb.load(folder / "m.npz")
    data = checkpoint.read_record(folder / "m.npz")["data"]
    A = np.asarray(net.forward((X - data["arrays"]["mean"]) / data["arrays"]["scale"]))
    return np.asarray(data["meta"]["classes"])[np.argmax(A, axis=1)], A


def test_predict_matches_columns_by_name_and_speaks_the_labels(flower_model):
    """Columns reordered and the target column present: matched by name, target ignored;
    the labels and probabilities are the saved network's on the standardized features."""
    folder, _ = flower_model
    X, y = flowers(12, seed=5)
    order = [3, 0, 2, 1]
    table(folder / "new.csv", ["species"] + [FEATURES[i] for i in order],
          [["?" if i % 2 else ""] + list(x[order]) for i, x in enumerate(X)])  # unknown labels: ignored
    r = run_cli("predict", "m.npz", "--data", "new.csv", "--proba", cwd=folder)
    assert r.returncode == 0, r.stderr
    rows = read_csv(r.stdout, text=True)
    assert rows[0] == ["species", "proba_setosa", "proba_versicolor", "proba_virginica"]
    labels, A = predicted_by_hand(folder, X)
    assert [row[0] for row in rows[1:]] == labels.tolist()
    np.testing.assert_allclose(np.array([row[1:] for row in rows[1:]], float), A, rtol=1e-6, atol=1e-7)
    assert (labels == SPECIES[y]).mean() >= 0.9


def test_predict_writes_out_and_reads_npz_and_idx(flower_model):
    folder, _ = flower_model
    X = flowers(6, seed=7)[0]
    np.savez(folder / "new.npz", X=X)
    images = np.round(X * 10).astype(">i4")  # IDX int32 images (n, 4): features as given
    (folder / "new.idx").write_bytes(b"\x00\x00\x0c\x02" + struct.pack(">2I", 6, 4) + images.tobytes())
    labels = predicted_by_hand(folder, X)[0].tolist()
    r = run_cli("predict", "m.npz", "--data", "new.npz", "--out", "p.csv", cwd=folder)
    assert r.returncode == 0, r.stderr
    assert "wrote 6 predictions" in r.stdout
    assert [row[0] for row in read_csv(folder / "p.csv")] == ["species"] + labels
    r = run_cli("predict", "m.npz", "--data", "new.idx", cwd=folder)
    assert r.returncode == 0, r.stderr
    assert [row[0] for row in read_csv(r.stdout, text=True)[1:]] == predicted_by_hand(folder, images / 1.0)[0].tolist()


@pytest.mark.parametrize("header, rows, fragment", [
    (["sepal_length", "sepal_width", "petal_length"], [[1, 2, 3]], "missing feature column 'petal_width'"),
    (FEATURES + ["colour"], [[1, 2, 3, 4, 5]], "column 'colour' is not one of"),
    (FEATURES, [[1, 2, 3, 4], [1, "red", 3, 4]], "'red' on line 3, column 2 ('sepal_width')"),
    (FEATURES, [[1, 2, "nan", 4]], "column 3 ('petal_length')"),
    (FEATURES[:2] + FEATURES[:2], [[1, 2, 3, 4]], "'sepal_length' appears more than once"),
    (None, [[1, 2, 3]], "3 columns but m.npz takes 4 features"),
], ids=["missing", "extra", "text", "nan", "duplicate", "width"])
def test_predict_refuses_tables_that_do_not_fit_in_one_line(flower_model, header, rows, fragment):
    folder, _ = flower_model
    table(folder / "bad.csv", header, rows)
    assert_one_line_error(run_cli("predict", "m.npz", "--data", "bad.csv", "--out", "never.csv", cwd=folder),
                          fragment)
    assert not (folder / "never.csv").exists()


def test_export_equals_predict_on_raw_features(flower_model):
    """The ONNX graph standardizes inside: onnxruntime on raw features gives predict's
    labels and (float32) probabilities."""
    ort = pytest.importorskip("onnxruntime")
    folder, _ = flower_model
    r = run_cli("export", "m.npz", "m.onnx", cwd=folder)
    assert r.returncode == 0, r.stderr
    assert "input X (N, 4) float32" in r.stdout
    X = flowers(40, seed=9)[0]
    session = ort.InferenceSession(str(folder / "m.onnx"), providers=["CPUExecutionProvider"])
    outputs, label = session.run(["outputs", "label"], {"X": X.astype(np.float32)})
    labels, A = predicted_by_hand(folder, X)
    assert label.tolist() == labels.tolist()
    np.testing.assert_allclose(outputs, A, rtol=1e-5, atol=1e-6)


def test_export_of_an_activation_without_an_onnx_operator_is_one_line(tmp_path, monkeypatch):
    from portable_bp import activations

    prelude = ("from portable_bp import activations as a\n"
               "a.ACTIVATIONS['cube'] = a.Activation('cube', lambda xp, u: u ** 3, lambda xp, v, g: g, True)")
    cube = activations.Activation("cube", lambda xp, u: u ** 3, lambda xp, a, g: g, True)
    monkeypatch.setitem(activations.ACTIVATIONS, "cube", cube)
    pb.Network([2, 3, 1], output_activation="cube").save(tmp_path / "m.npz")
    r = run_cli("export", "m.npz", "m.onnx", cwd=tmp_path, prelude=prelude)
    assert_one_line_error(r, "output activation 'cube' has no ONNX operator")
    assert not (tmp_path / "m.onnx").exists()


def test_whole_number_labels_are_classes_not_indices(tmp_path):
    """10/20/30 is three classes (not 31 outputs), and predictions say 10, 20, 30."""
    X, y = flowers(90)
    table(tmp_path / "d.csv", FEATURES + ["grade"], [[*x, 10 * (t + 1)] for x, t in zip(X, y)])
    r = run_cli("train", "--data", "d.csv", "--epochs", "10", "--save", "m.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "3 classes: 10, 20, 30" in r.stdout.splitlines()[0] and "4-64-3 " in r.stdout
    table(tmp_path / "new.csv", FEATURES, X[:9])
    p = run_cli("predict", "m.npz", "--data", "new.csv", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert {row[0] for row in read_csv(p.stdout, text=True)[1:]} <= {"10", "20", "30"}


@pytest.mark.parametrize("labels, args, fragment", [
    (["True", "False"], (), "2 classes: False, True"),
    ([0.5, 1.25], (), "task: regress (auto: the target is continuous"),
    ([0, 1], ("--task", "regress"), "task: regress (--task regress)"),
    ([0.5, 1.25], ("--loss", "mse"), "task: regress (--loss mse)"),
], ids=["booleans", "continuous", "forced-regress", "by-loss"])
def test_the_task_is_decided_and_said_first(tmp_path, labels, args, fragment):
    X = np.random.default_rng(0).normal(size=(40, 2))
    table(tmp_path / "d.csv", ["a", "b", "t"], [[*x, labels[i % 2]] for i, x in enumerate(X)])
    r = run_cli("train", "--data", "d.csv", "--epochs", "1", *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].startswith("task: ") and fragment in r.stdout.splitlines()[0]


@pytest.mark.parametrize("labels, args, fragment", [
    (["a", "a"], (), "single class ('a')"),
    ([0.5, 1.25], ("--task", "classify"), "use --task regress"),
    (["a", "b"], ("--task", "regress"), "text labels ('a')"),
    ([0, 1], ("--task", "classify", "--loss", "mse"), "--task classify trains with the cross_entropy loss"),
    ([0, 1], ("--validation-split", "0"), "--validation-split"),
    ([0, 1], ("--validation-split", "1"), "--validation-split"),
    ([0, 1], ("--validation-split", "half"), "--validation-split"),
    ([0, 1], ("--validation-split", "0.999"), "--validation-split 0.999 leaves an empty part"),
    ([0, 1], ("--early-stopping", "0"), "--early-stopping"),
], ids=["one-class", "continuous-classify", "text-regress", "classify-mse", "split-0", "split-1", "split-text",
        "split-empty", "patience-0"])
def test_bad_labels_and_options_are_one_line(tmp_path, labels, args, fragment):
    X = np.random.default_rng(0).normal(size=(40, 2))
    table(tmp_path / "d.csv", ["a", "b", "t"], [[*x, labels[i % 2]] for i, x in enumerate(X)])
    assert_one_line_error(run_cli("train", "--data", "d.csv", "--epochs", "1", *args, cwd=tmp_path), fragment)


NO_TQDM = "import sys; sys.modules['tqdm'] = None; sys.modules['tqdm.auto'] = None"


def test_lines_name_validation_and_never_call_the_test_part_validation(tmp_path):
    """Without a validation part the epoch lines show the training loss only; with one they
    show val_loss and val_accuracy, and the data line counts the three parts."""
    r = run_cli("train", "--dataset", "blobs", "--epochs", "2", cwd=tmp_path, prelude=NO_TQDM)
    assert r.returncode == 0, r.stderr
    epochs = [line for line in r.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2 and all("val_" not in line for line in epochs)
    r = run_cli("train", "--dataset", "blobs", "--epochs", "2", "--validation-split", "0.25", cwd=tmp_path,
                prelude=NO_TQDM)
    assert r.returncode == 0, r.stderr
    assert "blobs: 360 train / 120 validation / 120 test samples" in r.stdout
    epochs = [line for line in r.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2 and all(re.search(r"val_loss=\S+ val_accuracy=\S+", line) for line in epochs)


def test_early_stopping_stops_and_keeps_the_best_epoch(tmp_path):
    r = run_cli("train", "--dataset", "blobs", "--epochs", "300", "--early-stopping", "2", "--save", "m.npz",
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "blobs: 432 train / 48 validation / 120 test samples" in r.stdout  # 0.1 of the training part
    match = re.search(r"early stopping: val_loss did not improve for 2 epochs; stopped after epoch (\d+), "
                      r"keeping epoch (\d+)'s weights", r.stdout)
    assert match and int(match.group(1)) == int(match.group(2)) + 2 < 300
    history = checkpoint.read_record(tmp_path / "m.npz")["history"]
    val = history["values"]["val_loss"]
    assert len(val) == int(match.group(1)) and int(np.argmin(val)) + 1 == int(match.group(2))


def test_resume_says_where_and_keeps_every_epoch_of_history(tmp_path):
    pytest.importorskip("matplotlib")
    base = ("train", "--dataset", "blobs", "--checkpoint", "ck.npz", "--validation-split", "0.2")
    r = run_cli(*base, "--epochs", "3", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    spy = ("import portable_bp.cli_train as c\n_plot = c.plot_history\n"
           "def plot_history(history, path, title=''):\n"
           "    open('plotted.txt', 'w').write(repr((history.epochs, history.history['val_loss'])))\n"
           "    _plot(history, path, title)\n"
           "c.plot_history = plot_history")
    r = run_cli(*base, "--epochs", "5", "--resume", "--save", "m.npz", "--plot", "p.png", cwd=tmp_path,
                prelude=spy)
    assert r.returncode == 0, r.stderr
    assert "resumed at epoch 3 of 5" in r.stdout
    epochs, val_loss = ast.literal_eval((tmp_path / "plotted.txt").read_text())  # what --plot drew
    assert epochs == [0, 1, 2, 3, 4] and len(val_loss) == 5
    for path in ("ck.npz", "m.npz"):  # the plot is drawn from this same history
        history = checkpoint.read_record(tmp_path / path)["history"]
        assert history["epochs"] == [0, 1, 2, 3, 4] and set(history["values"]) >= {"loss", "val_loss"}
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    r = run_cli(*base, "--epochs", "5", "--resume", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "already at 5 epochs: nothing to train" in r.stdout


def test_evaluate_recreates_the_test_part_of_a_run_with_a_validation_part(tmp_path):
    """The test part is held out before the validation part, and the model stores its
    standardizer: evaluate reports the accuracy train printed."""
    r = run_cli("train", "--dataset", "moons", "--epochs", "3", "--validation-split", "0.3", "--save", "m.npz",
                "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    accuracy, n = final_accuracy(r.stdout)
    e = run_cli("evaluate", "m.npz", "--dataset", "moons", cwd=tmp_path)
    assert e.returncode == 0, e.stderr
    assert f"test accuracy: {accuracy:.3f} (n={n})" in e.stdout


def test_a_model_saved_from_python_predicts_with_its_output_indices(tmp_path):
    """No stored data description: features as given, classes are output indices."""
    net = pb.Network([2, 4, 3], loss="cross_entropy", seed=0)
    net.save(tmp_path / "m.npz")
    X = np.random.default_rng(0).normal(size=(5, 2))
    np.savez(tmp_path / "x.npz", X=X)
    r = run_cli("predict", "m.npz", "--data", "x.npz", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rows = read_csv(r.stdout, text=True)
    assert rows[0] == ["prediction"]
    assert [int(row[0]) for row in rows[1:]] == np.argmax(np.asarray(net.forward(X)), axis=1).tolist()
    assert_one_line_error(run_cli("predict", "m.npz", "--data", "x.npz", "--proba", "--out", "no/such/p.csv",
                                  cwd=tmp_path), "does not exist")


def test_a_headerless_table_with_text_labels_trains_and_predicts_every_row(tmp_path):
    """No header, labels as words in the last column: the first row is data, in train and in
    predict (where the target column, present or not, is told by the model's column count)."""
    X, y = flowers(60)
    rows = [[*x, SPECIES[t]] for x, t in zip(X.round(3), y)]
    table(tmp_path / "d.csv", None, rows)
    r = run_cli("train", "--data", "d.csv", "--epochs", "10", "--save", "m.npz", "--quiet", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    table(tmp_path / "with.csv", None, rows[:5])
    table(tmp_path / "without.csv", None, [row[:4] for row in rows[:5]])
    expected = predicted_by_hand(tmp_path, X[:5].round(3))[0].tolist()
    for name in ("with.csv", "without.csv"):
        p = run_cli("predict", "m.npz", "--data", name, cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        assert [row[0] for row in read_csv(p.stdout, text=True)] == ["prediction"] + expected
