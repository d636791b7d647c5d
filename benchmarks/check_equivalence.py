"""Do the contenders really do the same work? A small program (not a test).

From the shared initial weights, in float64, each trainer takes the first K SGD steps of a
config. The hand-written NumPy trainer's per-step loss must match PyTorch eager's, and the
weights after K steps must match across the hand-written trainer, PyTorch, JAX,
scikit-learn (identical network on B-D only) and portable_bp[numpy] when it is there.

    PYTHONPATH=. python -m benchmarks.check_equivalence [--config B] [--steps 10]
Exits 1 when a difference is above the tolerance.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from . import configs as C
from . import peers
from .handwritten_numpy import HandwrittenMLP
from .handwritten_tight import TightNumpyMLP

TOL = 1e-10  # float64, a few steps: only rounding-order differences are allowed


def torch_losses_and_weights(cfg, X, Y, params, steps):
    import torch
    run = peers.setup_torch(cfg, "float64", X, Y, params, C.LR, "cpu")
    model, loss_fn, opt = run.model, run.loss_fn, run.opt
    Xt, Yt, b, losses = torch.from_numpy(X), torch.from_numpy(Y), cfg.batch, []
    for k in range(steps):
        opt.zero_grad()
        loss = loss_fn(model(Xt[k * b:(k + 1) * b]), Yt[k * b:(k + 1) * b])
        loss.backward()
        opt.step()
        losses.append(loss.item())
    lins = [m for m in model if isinstance(m, torch.nn.Linear)]
    return losses, [(m.weight.detach().numpy(), m.bias.detach().numpy()) for m in lins]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="B")
    ap.add_argument("--steps", type=int, default=10)
    args = ap.parse_args(argv)
    cfg = C.with_steps(C.CONFIGS[args.config.upper()], args.steps)
    X, Y = C.make_data(cfg, "float64")
    params = C.init_params(cfg, "float64")
    b = cfg.batch
    print(f"{cfg.describe()}, float64, {args.steps} steps, lr {C.LR}")

    hand = HandwrittenMLP(np, params, cfg.activation, cfg.output_activation, C.LR)
    hand_losses = [hand.step(X[k * b:(k + 1) * b], Y[k * b:(k + 1) * b], want_loss=True)
                   for k in range(args.steps)]
    ref = list(zip(hand.W, hand.b))
    worst = 0.0

    def compare(name, weights, note=""):
        nonlocal worst
        d = max(max(np.abs(np.asarray(W) - W0).max(), np.abs(np.asarray(bb) - b0).max())
                for (W, bb), (W0, b0) in zip(weights, ref))
        if not note:
            worst = max(worst, d)
        print(f"  weights after {args.steps} steps, {name:<20} vs hand-written: max |diff| = {d:.2e} {note}")

    losses, w = torch_losses_and_weights(cfg, X, Y, params, args.steps)
    dl = max(abs(a - c) for a, c in zip(hand_losses, losses))
    worst = max(worst, dl)
    print("  step  hand-written loss      torch eager loss")
    for k, (a, c) in enumerate(zip(hand_losses, losses)):
        print(f"  {k:>4}  {a:.15f}  {c:.15f}")
    print(f"  loss trajectory max |diff| = {dl:.2e}")
    compare("torch eager", w)

    tight = TightNumpyMLP(params, cfg.activation, cfg.output_activation, C.LR, b)
    tight.run_epoch(X, Y, b)
    compare("numpy (tight)", list(zip(tight.W, tight.b)))

    try:
        for name, setup in (("jax jit", peers.setup_jax), ("jax scan epoch", peers.setup_jax_scan)):
            run = setup(cfg, "float64", X, Y, params, C.LR, "cpu")
            run()
            compare(name, [tuple(map(np.asarray, p)) for p in run.state["p"]])
    except ImportError as exc:
        print(f"  jax: skipped ({exc})")

    try:
        run = peers.setup_sklearn(cfg, "float64", X, Y, params, C.LR)
        run()
        m = run.model
        note = "" if cfg.loss == "cross_entropy" else "(not the same network on A: not checked)"
        compare("scikit-learn", [(W.T, bb) for W, bb in zip(m.coefs_, m.intercepts_)], note)
    except ImportError as exc:
        print(f"  scikit-learn: skipped ({exc})")

    import portable_bp as pbp

    for spec in ("numpy", "jax"):
        if not pbp.backends.probe(spec)[0]:
            print(f"  portable_bp[{spec}]: skipped ({pbp.backends.probe(spec)[1]})")
            continue
        net = pbp.Network(list(cfg.sizes), activation=cfg.activation,
                          output_activation=cfg.output_activation, loss=cfg.loss,
                          backend=spec, dtype="float64", seed=C.SEED)
        net.set_params(params)
        net.fit(X, Y, epochs=1, batch_size=b, optimizer="sgd", lr=C.LR, shuffle=False, progress=False)
        compare(f"portable_bp[{spec}]", [tuple(map(np.asarray, p)) for p in net.params])

    ok = worst <= TOL
    print(f"{'OK' if ok else 'MISMATCH'}: largest difference {worst:.2e} (tolerance {TOL:.0e})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
