"""The scikit-learn adapter trains through the pre-checked entry point: the data are checked
and moved once per fit, the public ``Network.fit`` is never called per chunk, and alpha is
the library's own L2."""

import numpy as np
import pytest

import portable_bp as pbp
from portable_bp.sklearn import MLPClassifier, MLPRegressor
from portable_bp.train import checked


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
