"""The scikit-learn adapter trains through the pre-checked entry point: the data are checked
and moved once per fit, the public ``Network.fit`` is never called per chunk, and alpha is
the library's own L2."""

import numpy as np
import pytest

import portable_bp as pbp
from portable_bp.sklearn import MLPClassifier, MLPRegressor
from portable_bp.train import checked


# max_iter is cut short on purpose: its ConvergenceWarning, left to reach the xdist controller, would
# make that process import scikit-learn to rebuild the warning (~0.1 GB held to the end of the run)
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("Est", [MLPClassifier, MLPRegressor])
def test_no_public_fit_and_one_check_per_fit(Est, monkeypatch):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((300, 4)), rng.integers(0, 3, 300)
    monkeypatch.setattr(pbp.Network, "fit", lambda *a, **k: pytest.fail("the public fit was called"))
    checks, passes = [], []
    features, epoch = pbp.Network.features, checked.CheckedRun.epoch
    monkeypatch.setattr(pbp.Network, "features", lambda self, X, what="X": checks.append(X.shape) or
                        features(self, X, what))
    monkeypatch.setattr(checked.CheckedRun, "epoch", lambda self, *a: passes.append(1) or epoch(self, *a))
    est = Est(hidden_layer_sizes=(8,), max_iter=3, batch_size=16, alpha=0.01, solver="adam", random_state=0,
              n_iter_no_change=100, tol=0).fit(X, y if Est is MLPClassifier else y * 1.0)
    assert est.n_iter_ == 3
    assert checks.count((300, 4)) == 1  # the training rows: checked once for 3 epochs
    assert len(passes) == 3  # one pass per epoch (300 rows: one chunk)


@pytest.mark.parametrize("solver", ["adam", "sgd"])
def test_alpha_changed_between_partial_fits_matches_scikit_learn_step_for_step(solver):
    """The solver's state is data the estimator holds and hands to each pass: switching L2
    on, changing it and switching it off between ``partial_fit`` calls keeps the optimizer's
    slots and step count (Adam's t) exactly as scikit-learn keeps its ``_optimizer``."""
    from sklearn.neural_network import MLPClassifier as SkClassifier

    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((50, 4)), rng.integers(0, 3, 50)
    w = rng.uniform(0.2, 3.0, 50)
    params = dict(hidden_layer_sizes=(6,), solver=solver, batch_size=16, random_state=0, learning_rate_init=0.05)
    ours, theirs = MLPClassifier(**params), SkClassifier(**params)
    for alpha in (0.0, 0.5, 0.1, 0.0, 0.3):
        for est in (ours, theirs):
            est.set_params(alpha=alpha).partial_fit(X, y, classes=[0, 1, 2], sample_weight=w)
        np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=1e-10)
        for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    assert ours._solver_state.steps == 5 * 4  # 4 batches per call


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_the_optimizer_keeps_no_arrays_and_its_scalars_are_a_function_of_what_it_is_given():
    """No hidden call order: the optimizer holds its configuration only (no slots, no step
    count, no batch table), and ``hyperparams`` depends on nothing but its arguments."""
    from portable_bp.sklearn._solvers import pass_rates

    rng = np.random.default_rng(2)
    X, y = rng.standard_normal((40, 3)), rng.integers(0, 2, 40)
    est = MLPClassifier(hidden_layer_sizes=(5,), alpha=0.2, batch_size=8, max_iter=2, random_state=0).fit(X, y)
    opt = est._optimizer
    assert all(isinstance(v, (int, float, bool, str)) or (isinstance(v, tuple) and all(isinstance(n, str) for n in v))
               for v in vars(opt).values()), vars(opt)
    rates = pass_rates(0.01, 0.2, 7, [8, 8, 3], [8.0, 4.0, 0.0])
    later, earlier = opt.hyperparams(9, rates), opt.hyperparams(7, rates)  # any order, same answers
    assert opt.hyperparams(7, rates) == earlier and opt.hyperparams(9, rates) == later
    assert earlier["decay"] == 0.2 / 8 and opt.hyperparams(8, rates)["decay"] == 0.2 / 4
    assert later["decay"] == 0.0 and later["l2"] == 0.0  # a batch that weighs nothing: no L2
    assert est._solver_state.steps == 2 * 5
