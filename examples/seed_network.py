"""The derivation's 3-4-2 network (sigmoid, halved squared error) for one sample.

Prints W(1) (4x3), W(2) (2x4), the forward values u, y, h, the error terms δ and every
gradient as portable_bp computes them, then checks each against the element-wise formulas
E3 and E5 evaluated with plain Python loops. This is the same code path as
``portable-bp explain``.

    python examples/seed_network.py --backend numpy
"""

import argparse
import sys

from portable_bp.explain import EXPLAIN_TOLERANCE, explain_seed_network


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="numpy", help="numpy, torch, jax, cupy, array_api_strict (default: numpy)")
    p.add_argument("--seed", type=int, default=0, help="draws W, b, x and z (default: 0)")
    args = p.parse_args()
    worst = explain_seed_network(args.backend, args.seed)
    return 0 if worst <= EXPLAIN_TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
