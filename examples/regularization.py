"""Does regularization help a network that overfits? Digits from a few hundred samples.

scikit-learn's bundled 8x8 digits (no download): a stratified split keeps only
``--train`` images for training (300 by default, of 1,797) and scores on the rest. A wide
64-128-128-10 ReLU network trained for many epochs memorizes 300 images (its training loss
goes to about 0), so held-out accuracy measures how well it generalizes. Four settings, each trained from the same
initial weights and batch order for each of ``--seeds`` seeds:

* none: plain Adam;
* L2: ``l2=`` (scikit-learn's alpha: ½·α·‖W‖²/m added to each batch's loss);
* dropout: ``Network(dropout=...)`` on both hidden layers;
* both.

The table prints the mean and spread of the held-out accuracy and the final training
loss; whatever it shows is the result (regularization is not promised to help everywhere).

    python examples/regularization.py --backend numpy
"""

import argparse
import statistics
import time

import numpy as np

import portable_bp as pbp
from portable_bp import datasets

SETTINGS = {"none": dict(), "L2": dict(l2=0.3), "dropout": dict(dropout=0.5),
            "L2 + dropout": dict(l2=0.3, dropout=0.5)}


def digits_split(n_train, seed):
    """A stratified split: ``n_train`` standardized training images, the rest held out."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, train_size=n_train, stratify=y, random_state=seed)
    scaler = datasets.Standardizer().fit(Xtr)
    return scaler.transform(Xtr), ytr, scaler.transform(Xte), yte


def run(setting, seed, args):
    Xtr, ytr, Xte, yte = digits_split(args.train, seed)
    net = pbp.Network([64, 128, 128, 10], activation="relu", loss="cross_entropy", backend=args.backend,
                      seed=seed, dropout=setting.get("dropout", 0.0))
    history = net.fit(Xtr, ytr, epochs=args.epochs, batch_size=32, optimizer="adam", lr=1e-3,
                      l2=setting.get("l2"))
    return net.evaluate(Xte, yte)["accuracy"], history.history["loss"][-1]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="numpy", help="numpy, torch, jax, cupy, array_api_strict (default: numpy)")
    p.add_argument("--train", type=int, default=300, help="training images (default: 300)")
    p.add_argument("--epochs", type=int, default=40, help="default: 40")
    p.add_argument("--seeds", type=int, default=5, help="default: 5")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    print(f"digits, {args.train} training images, the rest held out; 64-128-128-10 relu, adam, "
          f"{args.epochs} epochs; {args.seeds} seeds on {args.backend}")
    print(f"{'setting':<14} {'held-out accuracy':>22} {'final train loss':>17}")
    for name, setting in SETTINGS.items():
        results = [run(setting, seed, args) for seed in range(args.seeds)]
        acc = [a for a, _ in results]
        spread = statistics.stdev(acc) if len(acc) > 1 else 0.0
        loss = float(np.mean([l for _, l in results]))
        print(f"{name:<14} {statistics.mean(acc):>14.4f} ± {spread:.4f} {loss:>17.4f}")
    print(f"time: {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
