"""A scikit-learn Pipeline + GridSearchCV on the digits, with portable_bp's MLPClassifier.

The estimator is a drop-in for scikit-learn's: the only change to a scikit-learn script is
the import (and, to train on a GPU, ``backend="cupy"``). The search below scales the
features, tries two network widths and two L2 strengths with 3-fold cross-validation,
refits the best and scores it on a held-out quarter. Then, when a GPU is there, the same
search runs again with ``backend="cupy"`` and both are printed side by side.

    python examples/sklearn_pipeline.py                # numpy, then cupy when a GPU answers
    python examples/sklearn_pipeline.py --backend torch --quick
"""

import argparse
import time
import warnings

from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from portable_bp.backends import probe
from portable_bp.sklearn import MLPClassifier  # was: from sklearn.neural_network import MLPClassifier


def search(backend, X_train, y_train, X_test, y_test, quick):
    """Grid search on ``backend``: (best parameters, CV accuracy, test accuracy, seconds)."""
    pipe = Pipeline([("scale", StandardScaler()),
                     ("mlp", MLPClassifier(max_iter=15 if quick else 60, random_state=0, backend=backend))])
    grid = {"mlp__hidden_layer_sizes": [(64,), (128,)], "mlp__alpha": [1e-4] if quick else [1e-4, 1e-2]}
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gs = GridSearchCV(pipe, grid, cv=3).fit(X_train, y_train)
    seconds = time.perf_counter() - start
    return gs.best_params_, gs.best_score_, gs.score(X_test, y_test), seconds


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="numpy",
                   help="numpy, torch, jax, array_api_strict, cupy, auto (default: numpy)")
    p.add_argument("--quick", action="store_true", help="a smaller grid and fewer epochs")
    args = p.parse_args()
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, stratify=y, random_state=0)
    backends = [args.backend]
    gpu_ok, why = probe("cupy")
    if args.backend != "cupy":
        if gpu_ok:
            backends.append("cupy")
        else:
            print(f"cupy: skipped (no GPU here: {why})")
    for backend in backends:
        best, cv, test, seconds = search(backend, X_train, y_train, X_test, y_test, args.quick)
        print(f"backend {backend}: best {best} | cv accuracy {cv:.3f} | test accuracy: {test:.3f} | "
              f"time: {seconds:.1f} s")


if __name__ == "__main__":
    main()
