"""The command on boolean and multi-label targets, run in this process (``cli.main``).

Oracles: scikit-learn's ``LabelEncoder`` (the classes of boolean labels), ``type_of_target``
and ``accuracy_score`` (subset accuracy of a 2-D 0/1 target), the saved network computed
here, and onnxruntime for the exported graph.
"""

import csv

import numpy as np
import pytest

import portable_bp as pb
from portable_bp import checkpoint
from portable_bp.cli import main
from portable_bp.datasets import Standardizer, train_test_split


def cli(folder, monkeypatch, capsys, *args):
    """(exit status, stdout, stderr) of ``portable-bp ARGS`` run in ``folder``."""
    monkeypatch.chdir(folder)
    monkeypatch.delenv("PORTABLE_BP_DEBUG", raising=False)
    status = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def rows(text):
    return list(csv.reader(text.strip().splitlines()))


def by_hand(folder, X):
    """The saved network's outputs on ``X`` standardized with the stored statistics."""
    data = checkpoint.read_record(folder / "m.npz")["data"]["arrays"]
    net = pb.load(folder / "m.npz")
    return np.asarray(net.forward((X - data["mean"]) / data["scale"]), dtype=np.float64)


def features(n=60, seed=0):
    return np.random.default_rng(seed).normal(size=(n, 3))


def test_boolean_npz_labels_stay_booleans_through_train_predict_and_export(tmp_path, monkeypatch, capsys):
    from sklearn.preprocessing import LabelEncoder

    X = features()
    y = X[:, 0] + 0.3 * X[:, 1] > 0
    np.savez(tmp_path / "d.npz", X=X, y=y)
    status, out, err = cli(tmp_path, monkeypatch, capsys, "train", "--data", "d.npz", "--epochs", "3",
                           "--save", "m.npz")
    assert status == 0, err
    assert out.splitlines()[0].endswith("2 classes: False, True")
    stored = checkpoint.read_record(tmp_path / "m.npz")["data"]["meta"]["classes"]
    assert stored == LabelEncoder().fit(y).classes_.tolist() == [False, True]
    assert all(type(c) is bool for c in stored)

    np.savez(tmp_path / "new.npz", X=X[:8])
    status, out, err = cli(tmp_path, monkeypatch, capsys, "predict", "m.npz", "--data", "new.npz", "--proba")
    assert status == 0, err
    table = rows(out)
    assert table[0] == ["prediction", "proba_False", "proba_True"]
    expected = np.array(["False", "True"])[np.argmax(by_hand(tmp_path, X[:8]), axis=1)]
    assert [r[0] for r in table[1:]] == expected.tolist()

    ort = pytest.importorskip("onnxruntime")
    status, out, err = cli(tmp_path, monkeypatch, capsys, "export", "m.npz", "m.onnx")
    assert status == 0, err
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    label = session.run(["label"], {"X": X[:8].astype(np.float32)})[0]
    assert label.dtype == np.bool_ and label.astype(str).tolist() == expected.tolist()


def test_lowercase_true_false_in_a_csv_are_labels_as_written(tmp_path, monkeypatch, capsys):
    X = features(40)
    with open(tmp_path / "d.csv", "w", newline="") as f:
        csv.writer(f).writerows([["a", "b", "c", "ok"]] + [[*x, "true" if x[0] > 0 else "false"] for x in X])
    status, out, err = cli(tmp_path, monkeypatch, capsys, "train", "--data", "d.csv", "--epochs", "2",
                           "--save", "m.npz")
    assert status == 0, err
    assert out.splitlines()[0].endswith("2 classes: false, true")
    with open(tmp_path / "new.csv", "w", newline="") as f:
        csv.writer(f).writerows([["a", "b", "c"]] + X[:5].tolist())
    status, out, err = cli(tmp_path, monkeypatch, capsys, "predict", "m.npz", "--data", "new.csv")
    assert status == 0, err
    assert {r[0] for r in rows(out)[1:]} <= {"true", "false"} and rows(out)[0] == ["ok"]


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory):
    """A 2-D 0/1 target of three labels, one per feature's sign (its boolean twin too)."""
    X = features(80, seed=1)
    Y = (X > 0).astype(np.int64)
    folder = tmp_path_factory.mktemp("multilabel")
    np.savez(folder / "d.npz", X=X, y=Y)
    np.savez(folder / "b.npz", X=X, y=Y.astype(bool))
    return folder, X, Y


@pytest.mark.parametrize("args", [(), ("--task", "classify"), ("--loss", "binary_cross_entropy")],
                         ids=["auto", "classify", "by-loss"])
def test_a_multilabel_target_trains_a_multilabel_classifier_and_says_so(multilabel, monkeypatch, capsys, args):
    from sklearn.metrics import accuracy_score
    from sklearn.utils.multiclass import type_of_target

    folder, X, Y = multilabel
    assert type_of_target(Y) == "multilabel-indicator"
    status, out, err = cli(folder, monkeypatch, capsys, "train", "--data", "d.npz", "--epochs", "30",
                           "--save", "m.npz", *args)
    assert status == 0, err
    first = out.splitlines()[0]
    assert first.startswith("task: multilabel (") and "3 labels, one sigmoid output each, loss " \
        "binary_cross_entropy; accuracy is subset accuracy" in first
    assert "network 3-64-3 relu/sigmoid, loss binary_cross_entropy" in out
    reported = float(out.strip().splitlines()[-1].split("test subset accuracy: ")[1].split()[0])
    _, X_test, _, Y_test = train_test_split(X, Y, test_size=0.2, seed=0)
    scaler = Standardizer().fit(train_test_split(X, Y, test_size=0.2, seed=0)[0])
    net = pb.load(folder / "m.npz")
    predicted = (np.asarray(net.forward(scaler.transform(X_test))) > 0.5).astype(np.int64)
    assert reported == pytest.approx(accuracy_score(Y_test, predicted), abs=5e-4)  # subset accuracy
    status, out, err = cli(folder, monkeypatch, capsys, "evaluate", "m.npz", "--data", "d.npz")
    assert status == 0, err
    assert f"test subset accuracy: {reported:.3f} (n=16)" in out


def test_multilabel_predict_writes_a_column_per_label_and_export_agrees(multilabel, monkeypatch, capsys):
    folder, X, Y = multilabel
    for data, values in (("b.npz", ["False", "True"]), ("d.npz", ["0", "1"])):
        status, out, err = cli(folder, monkeypatch, capsys, "train", "--data", data, "--epochs", "5",
                               "--save", "m.npz", "--quiet")
        assert status == 0, err
        np.savez(folder / "new.npz", X=X[:10])
        status, out, err = cli(folder, monkeypatch, capsys, "predict", "m.npz", "--data", "new.npz", "--proba")
        assert status == 0, err
        table = rows(out)
        assert table[0] == ["label_0", "label_1", "label_2", "proba_label_0", "proba_label_1", "proba_label_2"]
        A = by_hand(folder, X[:10])
        expected = np.array(values)[(A > 0.5).astype(np.int64)]
        assert [r[:3] for r in table[1:]] == expected.tolist()
        np.testing.assert_allclose(np.array([r[3:] for r in table[1:]], float), A, rtol=1e-6, atol=1e-7)
        ort = pytest.importorskip("onnxruntime")
        status, out, err = cli(folder, monkeypatch, capsys, "export", "m.npz", "m.onnx")
        assert status == 0, err
        assert "label (N, 3)" in out
        session = ort.InferenceSession(str(folder / "m.onnx"), providers=["CPUExecutionProvider"])
        outputs, label = session.run(["outputs", "label"], {"X": X[:10].astype(np.float32)})
        np.testing.assert_allclose(outputs, A, rtol=1e-5, atol=1e-6)
        assert label.astype(str).tolist() == expected.tolist()


@pytest.mark.parametrize("Y, args, fragment", [
    (np.array([[0, 1], [1, 0]] * 10), ("--loss", "cross_entropy"), "not --loss cross_entropy"),
    (np.array([[-1, 1], [1, -1]] * 10), (), "holds -1, 1; give --task regress"),
], ids=["cross-entropy", "not-0-1"])
def test_multilabel_targets_the_command_cannot_train_are_one_line(tmp_path, monkeypatch, capsys, Y, args, fragment):
    np.savez(tmp_path / "d.npz", X=features(20), y=Y)
    status, out, err = cli(tmp_path, monkeypatch, capsys, "train", "--data", "d.npz", "--epochs", "1", *args)
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("portable-bp: error: ") and fragment in err


def test_a_multilabel_target_regresses_when_asked(multilabel, monkeypatch, capsys):
    folder, _, _ = multilabel
    status, out, err = cli(folder, monkeypatch, capsys, "train", "--data", "d.npz", "--epochs", "1",
                           "--task", "regress")
    assert status == 0, err
    assert out.splitlines()[0] == "task: regress (--task regress): 3 outputs, loss binary_cross_entropy"


def write_csv(path, header, rows_):
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header] + rows_)


@pytest.mark.parametrize("data, args, fragment", [
    ("t.csv", ("--test-size", "0.999"), "t.csv: --test-size 0.999 leaves an empty part with 60 samples"),
    ("t.csv", ("--test-size", "60"), "t.csv: --test-size 60 must leave both parts non-empty: use 1..59"),
    ("two.csv", ("--early-stopping", "2"), "--early-stopping's validation part (0.1) leaves an empty part"),
    ("rare.csv", ("--seed", "3"), "rare.csv: the training part holds a single class ('x'): every sample of 'y' "
                                  "went to the test part; give more samples of each class or a smaller --test-size"),
], ids=["test-size-fraction", "test-size-count", "implied-validation", "one-class-trained"])
def test_splits_that_leave_nothing_to_learn_are_one_line_naming_the_option(tmp_path, monkeypatch, capsys, data,
                                                                           args, fragment):
    X = features(60)
    write_csv(tmp_path / "t.csv", ["a", "b", "c", "t"], [[*x, "yn"[int(x[0] > 0)]] for x in X])
    write_csv(tmp_path / "two.csv", ["a", "t"], [[0, "x"], [1, "y"]])
    write_csv(tmp_path / "rare.csv", ["a", "b", "t"], [[i, i % 3, "x"] for i in range(9)] + [[9, 9, "y"]])
    status, out, err = cli(tmp_path, monkeypatch, capsys, "train", "--data", data, "--epochs", "1", "--quiet", *args)
    assert status == 2 and len(err.strip().splitlines()) == 1 and out == ""
    assert err.startswith("portable-bp: error: ") and fragment in err


@pytest.mark.parametrize("model, data, fragment", [
    ("b.npz", "d.npz", "d.npz: a classifier takes one label per sample, but the target has shape (80, 3)"),
    ("d.npz", "b1.npz", "b1.npz: a multi-label model needs a 2-D target, one 0/1 column per label; got shape (80,)"),
    ("d.npz", "d2.npz", "d2.npz: the target has 2 columns but m.npz has 3 outputs"),
    ("r.npz", "d.npz", "d.npz: the target has 3 columns but m.npz has 1 output;"),
], ids=["classifier-on-2d", "multilabel-on-1d", "multilabel-width", "regressor-width"])
def test_evaluate_on_a_target_of_another_shape_is_one_line(multilabel, monkeypatch, capsys, model, data, fragment):
    folder, X, Y = multilabel
    np.savez(folder / "b1.npz", X=X, y=Y[:, 0].astype(bool))
    np.savez(folder / "d2.npz", X=X, y=Y[:, :2])
    np.savez(folder / "r.npz", X=X, y=X[:, 0] + 0.5)
    train = {"b.npz": "b1.npz"}.get(model, model)
    status, out, err = cli(folder, monkeypatch, capsys, "train", "--data", train, "--epochs", "1", "--quiet",
                           "--save", "m.npz")
    assert status == 0, err
    status, out, err = cli(folder, monkeypatch, capsys, "evaluate", "m.npz", "--data", data)
    assert status == 2 and len(err.strip().splitlines()) == 1 and fragment in err, err


def test_a_model_trained_on_npz_takes_no_target_column_out_of_a_table(multilabel, monkeypatch, capsys):
    """Its --target (the default -1) named no column: a CSV one column too wide is refused,
    not read with its last column dropped."""
    folder, X, _ = multilabel
    status, out, err = cli(folder, monkeypatch, capsys, "train", "--data", "d.npz", "--epochs", "1", "--quiet",
                           "--save", "m.npz")
    assert status == 0, err
    write_csv(folder / "wide.csv", ["a", "b", "c", "d"], np.c_[X[:4], X[:4, 0]].tolist())
    status, out, err = cli(folder, monkeypatch, capsys, "predict", "m.npz", "--data", "wide.csv")
    assert status == 2 and "wide.csv has 4 columns but m.npz takes 3 features" in err


@pytest.mark.parametrize("args, fragment", [
    (("export", "m.npz", "./m.npz"), "the ONNX file './m.npz' is the model 'm.npz': writing it would destroy it"),
    (("predict", "m.npz", "--data", "d.csv", "--out", "m.npz"), "--out 'm.npz' is the model 'm.npz'"),
    (("predict", "m.npz", "--data", "d.csv", "--out", "d.csv"), "--out 'd.csv' is the --data file 'd.csv'"),
    (("train", "--data", "d.csv", "--save", "d.csv"), "--save 'd.csv' is the --data file 'd.csv'"),
    (("train", "--data", "d.csv", "--checkpoint", "d.csv"), "--checkpoint 'd.csv' is the --data file"),
], ids=["export-over-model", "predict-over-model", "predict-over-data", "save-over-data", "checkpoint-over-data"])
def test_an_output_that_is_an_input_is_refused_before_it_is_destroyed(tmp_path, monkeypatch, capsys, args, fragment):
    X = features(30)
    write_csv(tmp_path / "d.csv", ["a", "b", "c", "t"], [[*x, "yn"[int(x[0] > 0)]] for x in X])
    status, out, err = cli(tmp_path, monkeypatch, capsys, "train", "--data", "d.csv", "--epochs", "1", "--quiet",
                           "--save", "m.npz")
    assert status == 0, err
    before = {name: (tmp_path / name).read_bytes() for name in ("d.csv", "m.npz")}
    status, out, err = cli(tmp_path, monkeypatch, capsys, *args, *(("--epochs", "1") if args[0] == "train" else ()))
    assert status == 2 and len(err.strip().splitlines()) == 1 and fragment in err, err
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


def test_a_boolean_model_evaluates_a_table_that_writes_its_labels_as_text(tmp_path, monkeypatch, capsys):
    """True/False in a CSV are the booleans an NPZ-trained model holds (and 10 is 10); an
    unknown label is named."""
    from portable_bp.datasets.labels import codes_for

    X = features(60)
    y = X[:, 0] > 0
    np.savez(tmp_path / "d.npz", X=X, y=y)
    write_csv(tmp_path / "d.csv", ["a", "b", "c", "t"], [[*x, str(v)] for x, v in zip(X, y)])
    status, out, err = cli(tmp_path, monkeypatch, capsys, "train", "--data", "d.npz", "--epochs", "2", "--quiet",
                           "--save", "m.npz")
    assert status == 0, err
    on_npz = cli(tmp_path, monkeypatch, capsys, "evaluate", "m.npz", "--data", "d.npz")[1]
    status, on_csv, err = cli(tmp_path, monkeypatch, capsys, "evaluate", "m.npz", "--data", "d.csv")
    assert status == 0, err
    assert on_csv == on_npz  # the same test part, the same labels
    assert codes_for(np.array(["20", "9", "20"]), np.array([9, 10, 20]), "t").tolist() == [2, 0, 2]
    with pytest.raises(ValueError, match=r"t: label 'maybe' \(sample 1\) is not one of the model's classes "
                                         r"\['False', 'True'\]"):
        codes_for(np.array(["True", "maybe"]), np.array([False, True]), "t")


@pytest.fixture(scope="module")
def described(tmp_path_factory):
    """A folder holding d.csv and m.npz, a model trained on it with the command."""
    import os

    folder = tmp_path_factory.mktemp("described")
    X = features(30)
    write_csv(folder / "d.csv", ["a", "b", "c", "t"], [[*x, "yn"[int(x[0] > 0)]] for x in X])
    cwd = os.getcwd()
    os.chdir(folder)
    try:
        assert main(["train", "--data", "d.csv", "--epochs", "1", "--quiet", "--save", "m.npz"]) == 0
    finally:
        os.chdir(cwd)
    return folder


@pytest.mark.parametrize("change, fragment", [
    (lambda m, a: m.update(classes=["a"]), "a classify description with 1 class names for a cross_entropy network"),
    (lambda m, a: m.update(classes=[[1, 2], [3]]), "classes [[1, 2], [3]] (one kind of label"),
    (lambda m, a: m.update(classes=[1, "a"]), "classes [1, 'a'] (one kind of label"),
    (lambda m, a: m.update(task="multilabel"), "a multilabel description with 2 class names for a cross_entropy"),
    (lambda m, a: m.update(feature_names=["a"]), "feature names ['a'] for 3 inputs"),
    (lambda m, a: m.update(target={"x": 1}), "target {'x': 1}"),
    (lambda m, a: a.update(data__scale=np.zeros(3)), "a standardizer that is not finite or scales by 0 or less"),
], ids=["too-few-classes", "nested", "mixed", "task", "feature-names", "target", "zero-scale"])
@pytest.mark.parametrize("command", ["predict", "export", "evaluate"])
def test_a_stored_description_that_does_not_fit_the_network_is_one_line(described, monkeypatch, capsys, change,
                                                                         fragment, command):
    import json

    capsys.readouterr()
    with np.load(described / "m.npz") as f:
        arrays = {k: f[k] for k in f.files}
    meta = json.loads(str(arrays["meta"][()]))
    change(meta["data"], arrays)
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(described / "bad.npz", **arrays)
    args = {"predict": ("--data", "d.csv"), "export": ("bad.onnx",), "evaluate": ("--data", "d.csv")}[command]
    status, out, err = cli(described, monkeypatch, capsys, command, "bad.npz", *args)
    assert status == 2 and len(err.strip().splitlines()) == 1, err
    assert "bad.npz: the stored data description is malformed: " + fragment in err


def test_predict_to_a_pipe_whose_reader_has_gone_ends_quietly(described, monkeypatch, capsys):
    """``portable-bp predict ... | head``: no error line, the status a shell gives SIGPIPE."""
    import io
    import sys

    class GonePipe(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.chdir(described)
    monkeypatch.setattr(sys, "stdout", GonePipe())
    assert main(["predict", "m.npz", "--data", "d.csv"]) == 141
    assert capsys.readouterr().err == ""


def test_target_is_refused_where_there_is_no_column_to_pick(tmp_path, monkeypatch, capsys):
    """--target picks a CSV/TSV column: given with an NPZ file or a built-in dataset (whose
    targets are their own) it is one line naming the option, not silently ignored; a CSV
    still takes it, by index or name, and the default is the last column."""
    X, y = features(), np.arange(60) % 2
    np.savez(tmp_path / "d.npz", X=X, y=y)
    status, _, err = cli(tmp_path, monkeypatch, capsys, "train", "--data", "d.npz", "--target", "0",
                         "--epochs", "1")
    assert status == 2 and err.count("\n") == 1 and "--target" in err and "d.npz" in err
    status, _, err = cli(tmp_path, monkeypatch, capsys, "train", "--dataset", "moons", "--target", "1",
                         "--epochs", "1")
    assert status == 2 and err.count("\n") == 1 and "--target" in err and "moons" in err
    table = np.column_stack([y, X])
    np.savetxt(tmp_path / "d.csv", table, delimiter=",", header="label,a,b,c", comments="")
    for extra in (["--target", "0"], ["--target", "label"]):
        status, out, err = cli(tmp_path, monkeypatch, capsys, "train", "--data", "d.csv", *extra, "--epochs", "1")
        assert status == 0, err
        assert "2 classes" in out
    np.savetxt(tmp_path / "e.csv", np.column_stack([X, y]), delimiter=",")
    status, out, err = cli(tmp_path, monkeypatch, capsys, "train", "--data", "e.csv", "--epochs", "1")
    assert status == 0 and "2 classes" in out, err
