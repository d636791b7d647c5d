"""The estimators' scikit-learn API beyond the common checks: attributes, targets of every
kind, sparse X densified a batch at a time, DataFrames, dtypes, backends, pickling with
NumPy arrays only, clone/get_params, and scikit-learn's own messages for bad input."""

import io
import pickle
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")
import scipy.sparse as sp  # noqa: E402
from sklearn.base import clone, is_classifier  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkRegressor  # noqa: E402
from sklearn.utils._param_validation import InvalidParameterError  # noqa: E402

from portable_bp.backends import probe  # noqa: E402
from portable_bp.sklearn import MLPClassifier, MLPRegressor, _stochastic  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

RNG = np.random.RandomState(1)
X = RNG.standard_normal((90, 4))
Y3 = np.array(["a", "b", "c"])[RNG.randint(0, 3, 90)]
YR = X @ RNG.standard_normal((4, 2))
ROOT = __file__.rsplit("/tests/", 1)[0]


def small(cls, **kw):
    return cls(**{"hidden_layer_sizes": (6,), "max_iter": 5, "random_state": 0, **kw})


def test_parameters_are_scikit_learns_plus_backend_and_dtype():
    for ours, theirs in ((MLPClassifier(), SkClassifier()), (MLPRegressor(), SkRegressor())):
        mine = ours.get_params()
        assert mine.pop("backend") == "numpy" and mine.pop("dtype") is None
        assert mine == theirs.get_params()
    est = clone(MLPClassifier(alpha=0.3, backend="torch", dtype="float32"))
    assert (est.alpha, est.backend, est.dtype) == (0.3, "torch", "float32")
    assert est.set_params(solver="sgd") is est and est.solver == "sgd"


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_fitted_attributes(solver):
    clf = small(MLPClassifier, solver=solver, hidden_layer_sizes=(6, 5)).fit(X, Y3)
    assert [c.shape for c in clf.coefs_] == [(4, 6), (6, 5), (5, 3)]
    assert [b.shape for b in clf.intercepts_] == [(6,), (5,), (3,)]
    assert all(isinstance(a, np.ndarray) for a in clf.coefs_ + clf.intercepts_)
    assert (clf.n_layers_, clf.n_outputs_, clf.out_activation_, clf.n_features_in_) == (4, 3, "softmax", 4)
    assert list(clf.classes_) == ["a", "b", "c"] and clf.n_iter_ >= 1 and clf.t_ >= 0
    assert isinstance(clf.loss_, float) and not hasattr(clf, "feature_names_in_")
    if solver == "adam":
        assert len(clf.loss_curve_) == clf.n_iter_ and clf.best_loss_ == min(clf.loss_curve_)
        assert clf.validation_scores_ is None and clf.best_validation_score_ is None
    stopped = small(MLPClassifier, early_stopping=True).fit(X, Y3)
    assert len(stopped.validation_scores_) == stopped.n_iter_ and stopped.best_loss_ is None
    assert stopped.best_validation_score_ == max(stopped.validation_scores_)


@pytest.mark.parametrize("y, out, proba_shape", [
    (Y3, "softmax", (90, 3)),
    (Y3 == "a", "logistic", (90, 2)),
    (np.stack([Y3 == "a", Y3 == "b"], axis=1).astype(int), "logistic", (90, 2)),
    (RNG.randint(5, 8, 90), "softmax", (90, 3)),
])
def test_classification_targets(y, out, proba_shape):
    clf = small(MLPClassifier).fit(X, y)
    assert clf.out_activation_ == out
    proba = clf.predict_proba(X)
    assert proba.shape == proba_shape and np.allclose(np.exp(clf.predict_log_proba(X)), proba)
    assert clf.predict(X).shape == np.asarray(y).shape and set(np.unique(clf.predict(X))) <= set(np.unique(y))
    assert 0 <= clf.score(X, y) <= 1


def test_regression_targets():
    reg = small(MLPRegressor).fit(X, YR)
    assert reg.predict(X).shape == (90, 2) and reg.out_activation_ == "identity"
    assert small(MLPRegressor).fit(X, YR[:, 0]).predict(X).shape == (90,)
    pois = small(MLPRegressor, loss="poisson").fit(X, np.abs(YR[:, 0]))
    assert pois.out_activation_ == "exp" and (pois.predict(X) > 0).all()


def test_coefs_assignment_writes_the_network():
    reg = small(MLPRegressor).fit(X, YR)
    reg.coefs_ = [np.zeros_like(c) for c in reg.coefs_]
    reg.intercepts_ = [np.full_like(b, 2.0) for b in reg.intercepts_]
    np.testing.assert_allclose(reg.predict(X), 2.0)


def test_sparse_x_is_densified_a_batch_at_a_time(monkeypatch):
    shapes = []
    real = sp.csr_array.toarray

    def recording(self, *args, **kwargs):
        if self.shape[1] == X.shape[1]:   # X's rows (the label binarizer densifies Y)
            shapes.append(self.shape[0])
        return real(self, *args, **kwargs)

    monkeypatch.setattr(sp.csr_array, "toarray", recording)
    Xs = sp.csr_array(np.where(np.abs(X) > 1, X, 0.0))
    for solver in ("adam", "lbfgs"):
        clf = small(MLPClassifier, solver=solver, batch_size=16).fit(Xs, Y3)
        clf.predict_proba(Xs)
    assert shapes and max(shapes) == 16, shapes
    monkeypatch.undo()
    dense = small(MLPClassifier, batch_size=16).fit(Xs.toarray(), Y3)
    np.testing.assert_allclose(small(MLPClassifier, batch_size=16).fit(Xs, Y3).coefs_[0], dense.coefs_[0])


def test_dataframes_record_and_check_feature_names():
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(X, columns=["w", "x", "y", "z"])
    clf = small(MLPClassifier).fit(df, pd.Series(Y3))
    assert list(clf.feature_names_in_) == ["w", "x", "y", "z"]
    np.testing.assert_array_equal(clf.predict(df), clf.predict(X))
    with pytest.raises(ValueError, match="feature names should match"):
        clf.predict(df.rename(columns={"w": "v"}))


@pytest.mark.parametrize("X_dtype, dtype, expected", [
    (np.float32, None, np.float32), (np.float64, None, np.float64), (np.int64, None, np.float64),
    (np.float32, "float64", np.float64), (np.float64, "float32", np.float32)])
def test_dtype_follows_the_input_or_the_parameter(X_dtype, dtype, expected):
    clf = small(MLPClassifier, dtype=dtype).fit((X * 3).astype(X_dtype), Y3)
    assert clf.coefs_[0].dtype == expected and clf.predict_proba(X.astype(X_dtype)).dtype == expected


@pytest.mark.parametrize("backend", ["torch", "array_api_strict", "jax"])
def test_other_backends_take_and_return_numpy(backend):
    ok, why = probe(backend)
    if not ok:
        pytest.skip(why)
    ref = small(MLPClassifier).fit(X, Y3)
    clf = small(MLPClassifier, backend=backend).fit(X, Y3)
    assert clf._network().backend.name == backend
    proba = clf.predict_proba(X)
    assert type(proba) is np.ndarray and type(clf.predict(X)) is np.ndarray
    np.testing.assert_allclose(proba, ref.predict_proba(X), rtol=1e-9)


def classes_in_pickle(blob) -> set:
    """The modules of every class a pickle refers to."""
    seen = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            seen.add(module.split(".")[0])
            return super().find_class(module, name)

    Recorder(io.BytesIO(blob)).load()
    return seen


@pytest.mark.parametrize("backend", ["array_api_strict", "torch"])
def test_pickle_holds_numpy_only_and_resumes_exactly(backend):
    if not probe(backend)[0]:
        pytest.skip(probe(backend)[1])
    est = small(MLPRegressor, solver="sgd", backend=backend).fit(X, YR)
    blob = pickle.dumps(est)
    assert classes_in_pickle(blob) <= {"numpy", "portable_bp", "sklearn", "builtins", "copyreg",
                                       "_codecs", "collections"}, classes_in_pickle(blob)
    again = pickle.loads(blob)
    np.testing.assert_array_equal(again.predict(X), est.predict(X))
    est.partial_fit(X, YR)
    again.partial_fit(X, YR)   # the optimizer state (velocities) came along
    np.testing.assert_array_equal(again.predict(X), est.predict(X))


@pytest.mark.jax_child
def test_unpickles_where_the_training_library_is_missing(tmp_path):
    if not probe("torch")[0]:
        pytest.skip("torch not available")
    est = small(MLPClassifier, backend="torch").fit(X, Y3)
    (tmp_path / "est.pkl").write_bytes(pickle.dumps(est))
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "expected.npy", est.predict_proba(X))
    script = (
        "import sys, pickle, warnings, numpy as np\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ImportError('no torch on this machine')\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        f"p = {str(tmp_path)!r}\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    warnings.simplefilter('always')\n"
        "    est = pickle.loads(open(p + '/est.pkl', 'rb').read())\n"
        "    got = est.predict_proba(np.load(p + '/X.npy'))\n"
        "assert any('runs on numpy instead' in str(x.message) for x in w), [str(x.message) for x in w]\n"
        "np.testing.assert_allclose(got, np.load(p + '/expected.npy'), rtol=1e-12)\n"
        "print('ok', est._network().backend.spec)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={"PYTHONPATH": ROOT, "PATH": ""}, timeout=120)
    assert out.returncode == 0 and "ok numpy" in out.stdout, out.stderr[-2000:]


def test_import_error_names_the_extra():
    script = ("import sys; sys.modules['sklearn'] = None\n"
              "try:\n    import portable_bp.sklearn\nexcept ImportError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={"PYTHONPATH": ROOT, "PATH": ""}, timeout=120)
    assert 'pip install -e ".[sklearn]" in the checkout' in out.stdout, out.stdout + out.stderr


@pytest.mark.parametrize("bad, message", [
    (np.nan, "Input X contains NaN"), (np.inf, "Input X contains infinity")])
def test_non_finite_x_is_scikit_learns_message(bad, message):
    Xb = X.copy()
    Xb[3, 1] = bad
    for est in (small(MLPClassifier), small(MLPRegressor)):
        with pytest.raises(ValueError, match=message):
            est.fit(Xb, Y3 if is_classifier(est) else YR)


def test_bad_input_messages():
    clf = small(MLPClassifier).fit(X, Y3)
    with pytest.raises(ValueError, match="X has 3 features, but MLPClassifier is expecting 4"):
        clf.predict(X[:, :3])
    with pytest.raises(ValueError, match="classes must be passed on the first call to partial_fit"):
        small(MLPClassifier).partial_fit(X, Y3)
    part = small(MLPClassifier).partial_fit(X, Y3, classes=["a", "b", "c"])
    with pytest.raises(ValueError, match="is not the same as on last call to partial_fit"):
        part.partial_fit(X, Y3, classes=["a", "b", "d"])
    with pytest.raises(ValueError, match="`y` has classes not in `self.classes_`"):
        part.partial_fit(X, np.where(Y3 == "a", "z", Y3))
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping=True"):
        small(MLPClassifier, early_stopping=True).partial_fit(X, Y3, classes=["a", "b", "c"])
    assert not hasattr(MLPRegressor(solver="lbfgs"), "partial_fit")
    with pytest.raises(AttributeError, match="has no attribute 'partial_fit'") as info:
        MLPClassifier(solver="lbfgs").partial_fit(X, Y3)
    assert "lbfgs is not stochastic" in str(info.value.__cause__)
    with pytest.raises(ValueError, match="negative which is not allowed for Poisson"):
        small(MLPRegressor, loss="poisson").fit(X, YR[:, 0])
    with pytest.raises(ValueError, match="validation set is too small"):
        small(MLPClassifier, early_stopping=True, validation_fraction=0.01).fit(X[:20], Y3[:20])
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        small(MLPClassifier, backend="nope").fit(X, Y3)


@pytest.mark.parametrize("params, match", [
    (dict(activation="softmax"), "The 'activation' parameter of MLPClassifier must be"),
    (dict(batch_size=0), "The 'batch_size' parameter"), (dict(dtype="float16"), "The 'dtype' parameter"),
    (dict(momentum=1.5), "The 'momentum' parameter"), (dict(backend=3), "The 'backend' parameter")])
def test_invalid_parameters_fail_at_fit(params, match):
    est = MLPClassifier(**params)   # constructing never validates
    with pytest.raises(InvalidParameterError, match=match):
        est.fit(X, Y3)


def test_verbose_prints_scikit_learns_lines(capsys):
    small(MLPClassifier, verbose=True, early_stopping=True, max_iter=2).fit(X, Y3)
    out = capsys.readouterr().out
    assert "Iteration 1, loss = " in out and "Validation score: " in out


def test_keyboard_interrupt_stops_with_scikit_learns_warning(monkeypatch):
    real, calls = _stochastic.CheckedRun.epoch, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(_stochastic.CheckedRun, "epoch", interrupted)
    with pytest.warns(UserWarning, match="Training interrupted by user"):
        clf = small(MLPClassifier, max_iter=10).fit(X, Y3)
    assert clf.n_iter_ == 2 and np.isfinite(clf.predict_proba(X)).all()


def test_warm_start_needs_the_same_layers_and_may_move_backends():
    clf = small(MLPClassifier, warm_start=True).fit(X, Y3)
    with pytest.raises(ValueError, match="same layer sizes"):
        clf.set_params(hidden_layer_sizes=(7,)).fit(X, Y3)
    ref = small(MLPClassifier, warm_start=True).fit(X, Y3).fit(X, Y3)
    moved = small(MLPClassifier, warm_start=True).fit(X, Y3)
    moved.set_params(backend="array_api_strict").fit(X, Y3)
    assert moved._network().backend.name == "array_api_strict"
    np.testing.assert_allclose(moved.predict_proba(X), ref.predict_proba(X), rtol=1e-12)
