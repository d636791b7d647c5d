"""scikit-learn's own estimator test suite (parametrize_with_checks) on both estimators,
numpy backend, with the check instances scikit-learn itself uses for its MLP: max_iter=100,
and for check_sample_weight_equivalence_on_dense_data solver="lbfgs" (classifier) or
solver="sgd", tol=1e-2, random_state=42 (regressor). No expected failures: scikit-learn
declares none for its MLP. Its array API checks need SCIPY_ARRAY_API=1 before SciPy is
imported: they run in a child process in test_sklearn_dispatch.py, and are not generated
here, where every one of them could only skip."""

import pytest

pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from portable_bp.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

# scikit-learn's PER_ESTIMATOR_CHECK_PARAMS for its MLP (sklearn/utils/_test_common)
CHECK_PARAMS = {
    MLPClassifier: {"check_sample_weight_equivalence_on_dense_data": dict(solver="lbfgs")},
    MLPRegressor: {"check_sample_weight_equivalence_on_dense_data":
                   dict(solver="sgd", tol=1e-2, random_state=42)},
}


def check_name(check) -> str:
    return getattr(check, "func", check).__name__


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.cases(lambda check: not check_name(check).startswith("check_array_api"),
                   reason="array API checks run in test_sklearn_dispatch.py's child (SCIPY_ARRAY_API=1)")
@parametrize_with_checks([MLPClassifier(max_iter=100), MLPRegressor(max_iter=100)])
def test_sklearn_estimator_checks(estimator, check):
    name = check_name(check)
    params = CHECK_PARAMS[type(estimator)].get(name)
    if params:  # on a clone: parametrize_with_checks hands every check the same instance
        estimator = clone(estimator).set_params(**params)
    check(estimator)
