"""scikit-learn's own MLP tests, run against ours: the installed
``sklearn/neural_network/tests/test_mlp.py`` (it ships in the wheel), its one import line
of the estimators swapped for ``portable_bp.sklearn``, compiled and executed here, so that
pytest collects its tests as this module's. Every test that uses only public API runs; the
ones that read scikit-learn's private members are skipped, each with what it reads and
which of our tests checks the same behaviour. A scikit-learn release whose file no longer
has that import line, or that drops a skipped test, fails here rather than passing quietly.
"""

import os
import pathlib

import pytest

sklearn = pytest.importorskip("sklearn")

SOURCE = pathlib.Path(sklearn.__file__).parent / "neural_network" / "tests" / "test_mlp.py"
IMPORT = "from sklearn.neural_network import MLPClassifier, MLPRegressor\n"
OURS = "from portable_bp.sklearn import MLPClassifier, MLPRegressor\n"

# the tests that read scikit-learn's private members, and where we check the same thing
PRIVATE = {
    "test_gradient": "reads scikit-learn's private _loss_grad_lbfgs (its L-BFGS objective); ours is "
                     "checked against finite differences in test_sklearn_equivalence.py",
    "test_learning_rate_warmstart": "reads scikit-learn's private _optimizer.learning_rate; warm-started "
                                    "invscaling is compared step for step in test_sklearn_equivalence.py",
    "test_adaptive_learning_rate": "reads scikit-learn's private _optimizer.learning_rate; the adaptive "
                                   "schedule down to its stop is compared in test_sklearn_equivalence.py",
}


def _swapped_source() -> str:
    """The file's text with its estimator import replaced (the line count kept, so that
    tracebacks point at the right lines of scikit-learn's file)."""
    if not SOURCE.is_file():
        pytest.skip(f"this scikit-learn install has no tests ({SOURCE} is missing)", allow_module_level=True)
    text = SOURCE.read_text()
    assert text.count(IMPORT) == 1, f"{SOURCE} no longer imports the estimators with {IMPORT!r}"
    return text.replace(IMPORT, OURS)


exec(compile(_swapped_source(), str(SOURCE), "exec"))  # defines the test_* functions here

assert MLPClassifier.__module__.startswith("portable_bp.")  # noqa: F821 (defined by the exec)
for _name, _why in PRIVATE.items():
    assert _name in globals(), f"scikit-learn's test_mlp.py has no {_name} any more: update PRIVATE"
    globals()[_name] = pytest.mark.skip(reason=_why)(globals()[_name])


@pytest.fixture
def global_random_seed():
    """scikit-learn's fixture (its conftest.py): 42 unless SKLEARN_TESTS_GLOBAL_RANDOM_SEED
    names one seed."""
    seed = os.environ.get("SKLEARN_TESTS_GLOBAL_RANDOM_SEED", "42")
    return int(seed) if seed.isdigit() else 42
