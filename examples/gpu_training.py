"""Training throughput on a GPU: a large synthetic classification problem, in samples/s.

The data (Gaussian clusters, one per class, overlapping) are made on the host, moved to the
device once, and then trained on in mini-batches; the clock is read only after
``net.backend.synchronize()``, since GPU work is queued and finishes later than the Python
call that started it. The first epoch includes one-time costs (kernel compilation, cuBLAS
start-up) and is reported apart from the steady state.

    python examples/gpu_training.py                      # auto: CuPy on the first GPU, else NumPy
    python examples/gpu_training.py --backend torch:cuda
    python examples/gpu_training.py --backend numpy      # on a CPU: the CPU sizes, about 0.8 accuracy

The sizes default to the device: on a GPU 200,000 samples, hidden 1024-1024, batch 1024, 3
epochs; on a CPU 20,000 samples, hidden 128-128, batch 128, 3 epochs (about 20 seconds on
two cores). The classes overlap: the nearest true cluster centre classifies about 86% of
the points right, which bounds what any model reaches.
"""

import argparse
import sys
import time

import numpy as np

import portable_bp as pbp
from portable_bp.backends import BackendUnavailable


def make_data(n, features, classes, seed):
    """n points in `features` dimensions around `classes` random centres, with noise wide
    enough that the clusters overlap; every feature has unit variance (float32 host arrays)."""
    rng = np.random.default_rng(seed)
    noise = 6.0
    centers = rng.standard_normal((classes, features), dtype=np.float32)
    y = rng.integers(0, classes, size=n)
    X = centers[y] + noise * rng.standard_normal((n, features), dtype=np.float32)
    return X / np.float32(np.sqrt(1.0 + noise**2)), y


class EpochClock:
    """A fit callback: synchronize the device at the end of each epoch, then read the clock."""

    def __init__(self, net):
        self.net, self.marks = net, []

    def start(self):
        self.net.backend.synchronize()
        self.marks = [time.perf_counter()]

    def __call__(self, net, epoch, logs):
        net.backend.synchronize()
        self.marks.append(time.perf_counter())
        return False

    @property
    def durations(self):
        return [b - a for a, b in zip(self.marks, self.marks[1:])]


SIZES = {  # (samples, hidden, batch size, epochs) by device
    "gpu": (200_000, [1024, 1024], 1024, 3),
    "cpu": (20_000, [128, 128], 128, 3),
}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backend", default="auto",
                   help="auto, cupy, cupy:1, torch:cuda, jax:gpu, numpy, ... (default: auto, a GPU if one answers)")
    p.add_argument("--samples", type=int, default=None, help="default 200,000 on a GPU, 20,000 on a CPU")
    p.add_argument("--features", type=int, default=256)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--hidden", type=int, nargs="+", default=None, help="default 1024 1024 on a GPU, 128 128 on a CPU")
    p.add_argument("--epochs", type=int, default=None, help="default 3")
    p.add_argument("--batch-size", type=int, default=None, help="default 1024 on a GPU, 128 on a CPU")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    try:
        backend = pbp.backends.get(args.backend)
    except (BackendUnavailable, ValueError) as exc:
        print(f"gpu_training.py: error: {' '.join(str(exc).split())} "
              f"(on a CPU: --backend numpy, with the CPU sizes by default)", file=sys.stderr)
        return 2
    samples, hidden, batch_size, epochs = SIZES["gpu" if backend.is_gpu else "cpu"]
    args.samples = samples if args.samples is None else args.samples
    args.hidden = hidden if args.hidden is None else args.hidden
    args.batch_size = batch_size if args.batch_size is None else args.batch_size
    args.epochs = epochs if args.epochs is None else args.epochs

    X, y = make_data(args.samples + args.samples // 10, args.features, args.classes, args.seed)
    n = args.samples
    net = pbp.Network([args.features, *args.hidden, args.classes], activation="relu",
                      loss="cross_entropy", backend=backend, dtype=args.dtype, seed=args.seed)
    # Move the data to the device once, so that the timed epochs measure training alone.
    X_train, y_train = backend.asarray(X[:n], args.dtype), backend.asarray(y[:n])
    X_test, y_test = backend.asarray(X[n:], args.dtype), backend.asarray(y[n:])
    device = backend.info.get("device_name", backend.device)
    print(f"{net} on {device}")
    print(f"{n} training samples x {args.features} features, batch {args.batch_size}, "
          f"{args.epochs} epochs, SGD + momentum")

    clock = EpochClock(net)
    clock.start()
    history = net.fit(X_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                      optimizer="momentum", lr=0.01, callbacks=[clock])
    for epoch, (seconds, loss) in enumerate(zip(clock.durations, history.history["loss"]), start=1):
        note = " (includes warm-up)" if epoch == 1 and args.epochs > 1 else ""
        print(f"epoch {epoch}: loss {loss:.4f}, {seconds:.3f} s, {n / seconds:,.0f} samples/s{note}")
    steady = clock.durations[1:] or clock.durations
    which = {1: "epoch 1, with warm-up", 2: "epoch 2"}.get(len(clock.durations), f"epochs 2-{len(clock.durations)}")
    print(f"throughput: {n * len(steady) / sum(steady):,.0f} samples/s ({which}) | backend: {backend.spec}")
    result = net.evaluate(X_test, y_test)
    print(f"test accuracy: {result['accuracy']:.3f} (n={len(y) - n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
