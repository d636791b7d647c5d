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


def peer_weights(cfg, X, Y, params):
    """(name, weights after one epoch, note) of every other contender that runs here."""
    b = cfg.batch
    tight = TightNumpyMLP(params, cfg.activation, cfg.output_activation, C.LR, b)
    tight.run_epoch(X, Y, b)
    yield "numpy (tight)", list(zip(tight.W, tight.b)), ""
    try:
        for name, setup in (("jax jit", peers.setup_jax), ("jax scan epoch", peers.setup_jax_scan)):
            run = setup(cfg, "float64", X, Y, params, C.LR, "cpu")
            run()
            yield name, [tuple(map(np.asarray, p)) for p in run.state["p"]], ""
    except ImportError as exc:
        print(f"  jax: skipped ({exc})")
    try:
        run = peers.setup_sklearn(cfg, "float64", X, Y, params, C.LR)
        run()
        note = "" if cfg.loss == "cross_entropy" else "(not the same network on A: not checked)"
        yield "scikit-learn", [(W.T, bb) for W, bb in zip(run.model.coefs_, run.model.intercepts_)], note
    except ImportError as exc:
        print(f"  scikit-learn: skipped ({exc})")
    yield from pbp_weights(cfg, X, Y, params)


def pbp_weights(cfg, X, Y, params):
    """portable_bp's public fit on its NumPy and JAX backends."""
    import portable_bp as pbp

    for spec in ("numpy", "jax"):
        ok, reason = pbp.backends.probe(spec)
        if not ok:
            print(f"  portable_bp[{spec}]: skipped ({reason})")
            continue
        net = pbp.Network(list(cfg.sizes), activation=cfg.activation,
                          output_activation=cfg.output_activation, loss=cfg.loss,
                          backend=spec, dtype="float64", seed=C.SEED)
        net.set_params(params)
        net.fit(X, Y, epochs=1, batch_size=cfg.batch, optimizer="sgd", lr=C.LR, shuffle=False, progress=False)
        yield f"portable_bp[{spec}]", [tuple(map(np.asarray, p)) for p in net.params], ""


def loss_trajectories(hand_losses, losses):
    """The largest per-step difference of the two loss trajectories, printed step by step."""
    print("  step  hand-written loss      torch eager loss")
    for k, (a, c) in enumerate(zip(hand_losses, losses)):
        print(f"  {k:>4}  {a:.15f}  {c:.15f}")
    dl = max(abs(a - c) for a, c in zip(hand_losses, losses))
    print(f"  loss trajectory max |diff| = {dl:.2e}")
    return dl


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
    losses, w = torch_losses_and_weights(cfg, X, Y, params, args.steps)
    worst = loss_trajectories(hand_losses, losses)
    for name, weights, note in [("torch eager", w, ""), *peer_weights(cfg, X, Y, params)]:
        d = max(max(np.abs(np.asarray(W) - W0).max(), np.abs(np.asarray(bb) - b0).max())
                for (W, bb), (W0, b0) in zip(weights, ref))
        worst = worst if note else max(worst, d)
        print(f"  weights after {args.steps} steps, {name:<20} vs hand-written: max |diff| = {d:.2e} {note}")
    ok = worst <= TOL
    print(f"{'OK' if ok else 'MISMATCH'}: largest difference {worst:.2e} (tolerance {TOL:.0e})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
