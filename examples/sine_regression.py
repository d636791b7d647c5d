"""Regression with the halved squared error: learn y = sin(x) from 400 noisy samples.

A 1-32-32-1 network with tanh hidden units and an identity output, trained with Adam on a
seeded 80/20 split. The targets carry Gaussian noise of standard deviation 0.1, so a test
MSE near 0.01 is as good as any model can do.

    python examples/sine_regression.py --backend numpy
"""

import argparse
import sys

import numpy as np

import portable_bp as pbp
from portable_bp import datasets


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="numpy", help="numpy, torch, jax, cupy, array_api_strict (default: numpy)")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    X, y = datasets.sine(n_samples=400, noise=0.1, seed=args.seed)
    X_train, X_test, y_train, y_test = datasets.train_test_split(X, y, test_size=0.2, seed=args.seed)
    scaler = datasets.Standardizer().fit(X_train)
    X_train_s, X_test_s = scaler.transform(X_train), scaler.transform(X_test)

    net = pbp.Network([1, 32, 32, 1], activation="tanh", output_activation="identity", loss="mse",
                      backend=args.backend, seed=args.seed)
    history = net.fit(X_train_s, y_train, epochs=args.epochs, batch_size=32, optimizer="adam", lr=0.01)
    pred = np.asarray(net.backend.to_numpy(net.forward(X_test_s)), dtype=np.float64)
    mse = float(np.mean((pred - y_test) ** 2))
    print(f"{net}: final training loss {history.history['loss'][-1]:.4f} (E2, halved)")
    print("   x      sin(x)   predicted")
    for i in np.argsort(X_test[:, 0])[:: len(X_test) // 8]:
        print(f"{X_test[i, 0]:6.2f}  {np.sin(X_test[i, 0]):7.3f}  {pred[i, 0]:7.3f}")
    print(f"final test MSE: {mse:.4f} (n={len(X_test)}; noise floor 0.01)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
