"""Two interleaved spirals, and a picture of the decision boundary the network learned.

A problem no linear model solves: a 2-64-64-2 ReLU network trained with Adam separates the
arms. The plot (--out, default spirals.png) shows the predicted class over the plane with
the training and test points on top. Needs matplotlib (pip install -e ".[plot]" in the
checkout, or pip install matplotlib).

    python examples/spirals.py --backend numpy --out spirals.png
"""

import argparse
import sys

import numpy as np

import portable_bp as pbp
from portable_bp import datasets


def plot_boundary(net, scaler, X_train, y_train, X_test, y_test, path, accuracy):
    """Predict a 200x200 grid over the data's box and save it with the points as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lo, hi = np.min(X_train, axis=0) - 0.2, np.max(X_train, axis=0) + 0.2
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    classes = net.backend.to_numpy(net.predict(scaler.transform(grid))).reshape(gx.shape)

    fig = Figure(figsize=(6, 6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.contourf(gx, gy, classes, levels=np.arange(-0.5, classes.max() + 1), cmap="coolwarm", alpha=0.3)
    ax.scatter(X_train[:, 0], X_train[:, 1], c=y_train, cmap="coolwarm", s=12, edgecolors="none", label="train")
    ax.scatter(X_test[:, 0], X_test[:, 1], c=y_test, cmap="coolwarm", s=30, marker="x", label="test")
    ax.set(title=f"spirals: test accuracy {accuracy:.3f}", xlabel="x1", ylabel="x2", aspect="equal")
    ax.legend(loc="upper right")
    fig.savefig(path, dpi=100)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="numpy", help="numpy, torch, jax, cupy, array_api_strict (default: numpy)")
    p.add_argument("--out", default="spirals.png", help="where to save the plot (default: spirals.png)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        sys.exit('spirals.py: error: the plot needs matplotlib: pip install -e ".[plot]" in the checkout')

    X, y = datasets.spirals(n_samples=600, noise=0.05, seed=args.seed)
    X_train, X_test, y_train, y_test = datasets.train_test_split(X, y, test_size=0.2, seed=args.seed,
                                                                 stratify=y)
    scaler = datasets.Standardizer().fit(X_train)
    net = pbp.Network([2, 64, 64, 2], activation="relu", loss="cross_entropy", backend=args.backend,
                      seed=args.seed)
    net.fit(scaler.transform(X_train), y_train, epochs=args.epochs, batch_size=32, optimizer="adam", lr=0.01)
    accuracy = net.evaluate(scaler.transform(X_test), y_test)["accuracy"]
    plot_boundary(net, scaler, X_train, y_train, X_test, y_test, args.out, accuracy)
    print(f"{net}: test accuracy {accuracy:.3f} (n={len(X_test)})")
    print(f"saved decision boundary to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
