"""Same meaning as scikit-learn: in float64 our estimators follow scikit-learn 1.9's MLP
step for step (its initial weights, batch order, Adam/SGD conventions, L2 term, reported
loss, schedules, early stopping, sample weights, partial_fit and warm_start), so their
fitted attributes agree to rounding. L-BFGS agrees for a few iterations (it amplifies
rounding differences later: the same optimum, another path)."""

import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")
import scipy.sparse as sp  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkRegressor  # noqa: E402

from portable_bp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402
from portable_bp.sklearn._stochastic import shuffle_order  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

RNG = np.random.RandomState(0)
X = RNG.standard_normal((60, 5))
TARGETS = {
    "multiclass": RNG.randint(0, 3, 60),
    "binary": np.where(X[:, 0] + 0.3 * RNG.standard_normal(60) > 0, "yes", "no"),
    "multilabel": (X[:, :3] + 0.5 * RNG.standard_normal((60, 3)) > 0).astype(int),
    "regression": X @ RNG.standard_normal(5) + 0.1 * RNG.standard_normal(60),
    "multioutput": X @ RNG.standard_normal((5, 2)),
    "poisson": RNG.poisson(np.exp(0.3 * X[:, 0])).astype(float),
}
WEIGHTS = RNG.uniform(0.2, 3.0, 60)

CONFIGS = {
    "adam": dict(max_iter=15),
    "adam-l2-ragged": dict(max_iter=10, alpha=0.5, batch_size=16, shuffle=False),
    "sgd-nesterov": dict(solver="sgd", learning_rate_init=0.05, max_iter=12),
    "sgd-invscaling": dict(solver="sgd", learning_rate="invscaling", learning_rate_init=0.1,
                           power_t=0.3, momentum=0.5, nesterovs_momentum=False, max_iter=12),
    "sgd-adaptive": dict(solver="sgd", learning_rate="adaptive", learning_rate_init=0.05,
                         tol=0.05, n_iter_no_change=1, max_iter=25, alpha=0.01),
    "sgd-plain": dict(solver="sgd", momentum=0.0, alpha=0.0, learning_rate_init=0.05,
                      batch_size=25, max_iter=10),
    "early-stopping": dict(early_stopping=True, validation_fraction=0.2, n_iter_no_change=3,
                           tol=1e-2, max_iter=40),
    "converges": dict(tol=0.5, n_iter_no_change=2, max_iter=50),
    "lbfgs": dict(solver="lbfgs", max_iter=8),
}
ATTRS = ("n_iter_", "t_", "loss_", "best_loss_", "loss_curve_", "validation_scores_",
         "best_validation_score_", "n_layers_", "n_outputs_", "out_activation_")


def pair(kind, **params):
    """(ours, scikit-learn's) with the same parameters."""
    params = dict(hidden_layer_sizes=(7, 4), random_state=3, **params)
    ours, theirs = (MLPRegressor, SkRegressor) if kind in ("regression", "multioutput", "poisson") \
        else (MLPClassifier, SkClassifier)
    if kind == "poisson":
        params["loss"] = "poisson"
    return ours(**params), theirs(**params)


def assert_same(ours, theirs, Xp=X, rtol=1e-7):
    for name in ATTRS:
        a, b = getattr(ours, name, None), getattr(theirs, name, None)
        assert (a is None) == (b is None), name
        if isinstance(b, (list, float, np.floating)) and b is not None:
            np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-12, err_msg=name)
        elif b is not None:
            assert a == b, name
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=rtol, atol=1e-10)
    if hasattr(theirs, "predict_proba"):
        np.testing.assert_array_equal(ours.predict(Xp), theirs.predict(Xp))
        np.testing.assert_allclose(ours.predict_proba(Xp), theirs.predict_proba(Xp), rtol=rtol, atol=1e-12)
        np.testing.assert_array_equal(ours.classes_, theirs.classes_)
    else:
        np.testing.assert_allclose(ours.predict(Xp), theirs.predict(Xp), rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("kind", ["multiclass", "multioutput"])
def test_same_trajectory_as_scikit_learn(kind, config):
    ours, theirs = pair(kind, **CONFIGS[config])
    assert_same(ours.fit(X, TARGETS[kind]), theirs.fit(X, TARGETS[kind]))


@pytest.mark.parametrize("kind", ["binary", "multilabel", "regression", "poisson"])
@pytest.mark.parametrize("config", ["adam", "sgd-nesterov", "early-stopping"])
def test_every_target_type(kind, config):
    ours, theirs = pair(kind, **CONFIGS[config])
    assert_same(ours.fit(X, TARGETS[kind]), theirs.fit(X, TARGETS[kind]))


@pytest.mark.parametrize("config", ["adam-l2-ragged", "sgd-nesterov", "early-stopping", "lbfgs"])
@pytest.mark.parametrize("kind", ["multiclass", "regression"])
def test_sample_weight(kind, config):
    ours, theirs = pair(kind, **CONFIGS[config])
    w = WEIGHTS.copy()
    w[:5] = 0.0
    assert_same(ours.fit(X, TARGETS[kind], sample_weight=w), theirs.fit(X, TARGETS[kind], sample_weight=w))


@pytest.mark.parametrize("kind", ["multiclass", "regression"])
def test_sparse_input(kind):
    ours, theirs = pair(kind, **CONFIGS["adam-l2-ragged"])
    Xs = sp.csr_array(np.where(X > 0.5, X, 0.0))
    assert_same(ours.fit(Xs, TARGETS[kind]), theirs.fit(Xs, TARGETS[kind]), Xp=Xs)


@pytest.mark.parametrize("kind", ["multiclass", "regression"])
def test_partial_fit_sequence(kind):
    ours, theirs = pair(kind, solver="sgd", learning_rate_init=0.05, batch_size=20)
    extra = {"classes": np.unique(TARGETS[kind])} if kind == "multiclass" else {}
    for start in (0, 20, 40, 0):
        rows = slice(start, start + 30)
        ours.partial_fit(X[rows], TARGETS[kind][rows], **extra)
        theirs.partial_fit(X[rows], TARGETS[kind][rows], **extra)
        assert_same(ours, theirs)


@pytest.mark.parametrize("params", [dict(max_iter=5), dict(solver="sgd", learning_rate="invscaling", power_t=0.25,
                                                          max_iter=1)])
def test_warm_start_continues_like_scikit_learn(params):
    """The optimizer (and an invscaling rate, a function of t_) continues across fits."""
    ours, theirs = pair("multiclass", warm_start=True, **params)
    for _ in range(3):
        ours.fit(X, TARGETS["multiclass"])
        theirs.fit(X, TARGETS["multiclass"])
    assert_same(ours, theirs)


def test_float32_stays_close():
    X32 = X.astype(np.float32)
    ours, theirs = pair("multiclass", max_iter=10)
    ours.fit(X32, TARGETS["multiclass"])
    theirs.fit(X32, TARGETS["multiclass"])
    assert ours.coefs_[0].dtype == np.float32 and ours.predict_proba(X32).dtype == np.float32
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-4)
    np.testing.assert_allclose(ours.predict_proba(X32), theirs.predict_proba(X32), atol=1e-4)


def test_convergence_warning_and_tol_stop_match():
    for config, warns in (("adam", True), ("converges", False)):
        ours, theirs = pair("multiclass", **CONFIGS[config])
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            ours.fit(X, TARGETS["multiclass"])
        assert any(issubclass(w.category, ConvergenceWarning) for w in got) == warns
        assert ours.n_iter_ == theirs.fit(X, TARGETS["multiclass"]).n_iter_


def test_shuffle_order_is_scikit_learns():
    from sklearn.utils import shuffle

    a, b = np.random.RandomState(5), np.random.RandomState(5)
    order_a = order_b = np.arange(17)
    for _ in range(3):
        order_a, order_b = shuffle_order(order_a, a), shuffle(order_b, random_state=b)
        np.testing.assert_array_equal(order_a, order_b)


@pytest.mark.filterwarnings("ignore:overflow encountered", "ignore:invalid value encountered")
def test_a_diverging_fit_with_early_stopping_finishes_as_scikit_learns():
    """scikit-learn 1.9 trains on with non-finite weights (NaN validation scores) to
    max_iter and restores the best weights; without early stopping both raise."""
    params = dict(hidden_layer_sizes=(20,), activation="identity", solver="sgd", learning_rate_init=1.0,
                  max_iter=12, early_stopping=True, random_state=0)
    y = 3 * X[:, 0] + 5
    with pytest.warns(RuntimeWarning, match="training diverged"):
        ours = MLPRegressor(**params).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        theirs = SkRegressor(**params).fit(X, y)
        assert np.isnan(theirs.validation_scores_[-1])
        assert_same(ours, theirs)
        for est in (MLPRegressor(**{**params, "early_stopping": False}),
                    SkRegressor(**{**params, "early_stopping": False})):
            with pytest.raises(ValueError, match="Solver produced non-finite parameter weights"):
                est.fit(X, y)


@pytest.mark.parametrize("kind", ["multiclass", "regression"])
def test_set_params_takes_effect_at_the_next_predict_and_fit(kind):
    """scikit-learn reads ``activation`` at every predict and fit: a fitted estimator given
    another one predicts with it, and warm-starts with it."""
    ours, theirs = pair(kind, max_iter=5, warm_start=True)
    ours.fit(X, TARGETS[kind])
    theirs.fit(X, TARGETS[kind])
    for est in (ours, theirs):
        est.set_params(activation="tanh")
    assert_same(ours, theirs)
    assert_same(ours.fit(X, TARGETS[kind]), theirs.fit(X, TARGETS[kind]))
    for est in (ours, theirs):
        est.set_params(activation="logistic", alpha=0.3, learning_rate_init=0.01)
    assert_same(ours.fit(X, TARGETS[kind]), theirs.fit(X, TARGETS[kind]))


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_coefs_and_intercepts_are_lists_as_scikit_learns(backend):
    """Replacing an element, writing into one, or assigning new lists changes what the
    estimator predicts and continues from, on any backend, as in scikit-learn."""
    ours, theirs = pair("multiclass", max_iter=4, warm_start=True)
    ours.set_params(backend=backend)
    ours.fit(X, TARGETS["multiclass"])
    theirs.fit(X, TARGETS["multiclass"])
    rng = np.random.RandomState(7)
    edits = [
        lambda est: est.coefs_.__setitem__(0, rng.standard_normal(est.coefs_[0].shape)),
        lambda est: est.coefs_[1].__setitem__((0, 0), 3.0),
        lambda est: est.intercepts_[2].__imul__(-2.0),
        lambda est: setattr(est, "intercepts_", [b + 0.5 for b in est.intercepts_]),
    ]
    for edit in edits:
        state = rng.get_state()
        edit(ours)
        rng.set_state(state)
        edit(theirs)
        assert_same(ours, theirs)
    assert_same(ours.fit(X, TARGETS["multiclass"]), theirs.fit(X, TARGETS["multiclass"]))


def test_coefs_assigned_before_partial_fit_are_the_start():
    params = dict(solver="sgd", hidden_layer_sizes=(3,), learning_rate_init=0.1, momentum=0.0, random_state=0)
    rng = np.random.RandomState(2)
    start = ([rng.standard_normal((5, 3)), rng.standard_normal((3, 3))],
             [rng.standard_normal(3), rng.standard_normal(3)])
    fitted = []
    for cls in (MLPClassifier, SkClassifier):
        est = cls(**params)
        est.coefs_, est.intercepts_ = [c.copy() for c in start[0]], [b.copy() for b in start[1]]
        est.n_outputs_, est.n_layers_, est.out_activation_, est.n_features_in_ = 3, 3, "softmax", 5
        est.t_, est.n_iter_, est.best_loss_, est.loss_curve_, est._no_improvement_count = 0, 0, np.inf, [], 0
        fitted.append(est.partial_fit(X, TARGETS["multiclass"], classes=[0, 1, 2]))
    assert_same(*fitted)


@pytest.mark.parametrize("sizes", [(10.5,), (True,), (2.9, 3), (3.0,), ("3",), (0,), (-1.5,)])
def test_bad_hidden_layer_sizes_raise_as_scikit_learns(sizes):
    errors = []
    for cls in (MLPClassifier, SkClassifier):
        with pytest.raises((TypeError, ValueError)) as info:
            cls(hidden_layer_sizes=sizes, max_iter=2).fit(X, TARGETS["multiclass"])
        errors.append(info)
    ours, theirs = errors[0].type, errors[1].type
    assert ours in (TypeError, ValueError) and issubclass(theirs, ours), (ours, theirs)  # "3": UFuncNoLoopError
    assert "hidden_layer_sizes" in str(errors[0].value)


@pytest.mark.parametrize("config", ["adam", "lbfgs", "early-stopping"])
def test_reported_numbers_have_scikit_learns_types(config):
    ours, theirs = pair("multiclass", **CONFIGS[config])
    ours.fit(X, TARGETS["multiclass"])
    theirs.fit(X, TARGETS["multiclass"])
    for name in ("loss_", "best_loss_", "best_validation_score_"):
        assert type(getattr(ours, name, None)) is type(getattr(theirs, name, None)), name
    for name in ("loss_curve_", "validation_scores_"):
        a, b = getattr(ours, name, None), getattr(theirs, name, None)
        assert type(a) is type(b) and [type(v) for v in a or ()] == [type(v) for v in b or ()], name


def test_adaptive_rate_runs_down_to_its_stop_as_scikit_learns():
    """scikit-learn's test_adaptive_learning_rate, compared: the rate is divided by 5 at
    each plateau until it is below 1e-6, then training stops."""
    Xa, ya = np.array([[3.0, 2.0], [1.0, 6.0]]), np.array([1, 0])
    params = dict(tol=0.5, max_iter=3000, solver="sgd", learning_rate="adaptive", random_state=1)
    ours, theirs = MLPClassifier(**params).fit(Xa, ya), SkClassifier(**params).fit(Xa, ya)
    assert ours.n_iter_ == theirs.n_iter_ < 3000
    assert_same(ours, theirs, Xp=Xa)


@pytest.mark.parametrize("n_labels", [2, 3])
@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
def test_lbfgs_objective_gradient_is_the_finite_difference_one(activation, n_labels):
    """scikit-learn's test_gradient on our L-BFGS objective (the loss with its L2 term, in
    our parameter layout): the analytic gradient equals central differences."""
    from portable_bp.sklearn import _data
    from portable_bp.sklearn._solvers import Objective

    rs = np.random.RandomState(42)
    Xg, yg = rs.rand(5, 10), 1 + np.mod(np.arange(5) + 1, n_labels)
    est = MLPClassifier(activation=activation, hidden_layer_sizes=10, solver="lbfgs", alpha=1e-5, max_iter=1,
                        random_state=1).fit(Xg, yg)
    net = est._network()
    rows = _data.Rows(net, Xg)
    Z = net.targets(est._net_targets(est._label_binarizer.transform(yg)), rows.n)
    objective = Objective(net, rows, Z, None, est.alpha, 1)
    theta = objective.pack(net.params)
    _, grad = objective(theta)
    eps, numeric = 1e-5, np.empty_like(theta)
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = eps
        numeric[i] = (objective(theta + step)[0] - objective(theta - step)[0]) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-5, atol=1e-7)
