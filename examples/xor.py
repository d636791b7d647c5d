"""XOR with full-batch gradient descent: the classic problem that needs a hidden layer.

A 2-4-1 network with sigmoid units and the halved squared error of the derivation (E2),
trained on the four rows of the truth table with batch_size=None (every step uses all
samples: batch gradient descent, E12).

    python examples/xor.py --backend numpy
"""

import argparse
import sys

import portable_bp as pbp
from portable_bp import datasets


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="numpy", help="numpy, torch, jax, cupy, array_api_strict (default: numpy)")
    p.add_argument("--epochs", type=int, default=3000, help="full-batch steps (default: 3000)")
    p.add_argument("--lr", type=float, default=2.0, help="learning rate (default: 2.0)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    X, z = datasets.xor()  # (0,0), (0,1), (1,0), (1,1) -> 0, 1, 1, 0
    net = pbp.Network([2, 4, 1], activation="sigmoid", output_activation="sigmoid", loss="mse",
                      backend=args.backend, dtype="float64", seed=args.seed)
    history = net.fit(X, z, epochs=args.epochs, batch_size=None, optimizer="sgd", lr=args.lr,
                      shuffle=False)
    h = net.backend.to_numpy(net.forward(X))[:, 0]
    print(f"{net} after {args.epochs} full-batch steps: loss {history.history['loss'][-1]:.2e}")
    print("x1 x2 | target | output  predicted")
    correct = 0
    for (x1, x2), target, out in zip(X, z[:, 0], h):
        predicted = int(out >= 0.5)
        correct += predicted == target
        verdict = "ok" if predicted == target else "WRONG"
        print(f" {x1:.0f}  {x2:.0f} |   {target:.0f}    | {out:.4f}  {predicted} {verdict}")
    print(f"{correct}/4 correct")
    return 0 if correct == 4 else 1


if __name__ == "__main__":
    sys.exit(main())
