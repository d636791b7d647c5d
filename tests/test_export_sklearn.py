"""The estimators' own ONNX export, checked by onnxruntime against predict and predict_proba."""

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from portable_bp.sklearn import MLPClassifier, MLPRegressor

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.filterwarnings(f"ignore::{ConvergenceWarning.__module__}.ConvergenceWarning")
RTOL = {"float32": 1e-5, "float64": 1e-12}


def run(est, X, tmp_path, **kw):
    est.export_onnx(tmp_path / "m.onnx", **kw)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"X": X})))


def close(a, b, dtype):
    np.testing.assert_allclose(a, b, rtol=RTOL[dtype], atol=RTOL[dtype] * float(np.max(np.abs(b))))


def data(n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 5))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["multiclass-text", "binary-int", "multilabel"])
def test_classifier_export_gives_predict_and_predict_proba(tmp_path, kind, dtype):
    X = data(200)
    if kind == "multiclass-text":
        y = np.array(["ant", "bee", "cat"])[np.argmax(X[:, :3], axis=1)]
    elif kind == "binary-int":
        y = np.where(X[:, 0] + X[:, 1] > 0, 7, -3)
    else:
        y = (X[:, :3] > 0).astype(int)
    est = MLPClassifier(hidden_layer_sizes=(8,), activation="tanh", max_iter=30, random_state=0, dtype=dtype).fit(X, y)
    for n in (1, 1000):
        Xn = data(n, seed=n).astype(dtype)
        got = run(est, Xn, tmp_path)
        assert got["label"].tolist() == est.predict(Xn).tolist()
        close(got["probabilities"], est.predict_proba(Xn), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("outputs", [1, 2])
def test_regressor_export_gives_predict(tmp_path, outputs, dtype):
    X = data(200)
    y = X[:, :outputs] * 2 + 1
    est = MLPRegressor(hidden_layer_sizes=(8, 6), activation="relu", max_iter=30, random_state=0, dtype=dtype)
    est.fit(X, y.ravel() if outputs == 1 else y)
    for n in (1, 1000):
        Xn = data(n, seed=n).astype(dtype)
        got = run(est, Xn, tmp_path)["predictions"]
        close(got.reshape(est.predict(Xn).shape), est.predict(Xn), dtype)


def test_an_unfitted_estimator_cannot_export(tmp_path):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        MLPClassifier().export_onnx(tmp_path / "m.onnx")
