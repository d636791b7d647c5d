"""Peer libraries training the same network: PyTorch eager, scikit-learn, JAX (jit).

Each ``setup_*`` function puts the data and the shared initial weights where that library
trains, and returns ``run_epoch()``: one pass over the data in order, one SGD step per
batch, returning only when the device has finished (so a wall clock around it is honest).
Each is written the way that library's documentation teaches; none is tuned beyond that.
"""

from __future__ import annotations

import numpy as np

from .configs import Config


# --------------------------------------------------------------------------- PyTorch
def setup_torch(cfg: Config, dtype: str, X, Y, params, lr: float, device: str = "cpu"):
    """Eager PyTorch: nn.Linear layers, autograd, torch.optim.SGD (no compile)."""
    import torch
    from torch import nn

    tdt = getattr(torch, dtype)
    layers = []
    for i, (W, b) in enumerate(params):
        lin = nn.Linear(W.shape[1], W.shape[0], dtype=tdt, device=device)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(W))
            lin.bias.copy_(torch.from_numpy(b))
        layers.append(lin)
        if i < len(params) - 1:
            layers.append(nn.ReLU() if cfg.activation == "relu" else nn.Sigmoid())
    model = nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    Xt = torch.from_numpy(X).to(device)
    Yt = torch.from_numpy(Y).to(device)
    if cfg.loss == "cross_entropy":
        loss_fn = nn.functional.cross_entropy  # softmax + log-loss, mean over the batch
    else:
        def loss_fn(z, y):  # sigmoid output, 1/(2m) sum ||a - y||^2
            return ((torch.sigmoid(z) - y) ** 2).sum() / (2 * z.shape[0])
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    n, b = X.shape[0], cfg.batch

    def run_epoch():
        for s in range(0, n, b):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(Xt[s:s + b]), Yt[s:s + b])
            loss.backward()
            opt.step()
        sync()

    run_epoch.model = model  # for check_equivalence
    run_epoch.loss_fn = loss_fn
    run_epoch.opt = opt
    return run_epoch


# ---------------------------------------------------------------------- scikit-learn
SKLEARN_A_NOTE = ("scikit-learn on A is MLPRegressor (logistic hidden layer, IDENTITY output, "
                  "loss mean over outputs too): not the identical network, shown for scale only")


def setup_sklearn(cfg: Config, dtype: str, X, Y, params, lr: float):
    """MLPClassifier / MLPRegressor with plain SGD; one partial_fit call is one epoch.

    partial_fit is called once on the first batch to let scikit-learn build its arrays,
    then the shared initial weights are written into them in place (its optimiser holds
    references to those very arrays).
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    common = {"hidden_layer_sizes": cfg.sizes[1:-1], "solver": "sgd", "learning_rate": "constant",
              "learning_rate_init": lr, "momentum": 0.0, "nesterovs_momentum": False, "alpha": 0.0,
              "batch_size": cfg.batch, "shuffle": False, "max_iter": 1, "n_iter_no_change": 10**9,
              "random_state": 0}
    if cfg.loss == "cross_entropy":
        model = MLPClassifier(activation="relu" if cfg.activation == "relu" else "logistic", **common)
        model.partial_fit(X[:cfg.batch], Y[:cfg.batch], classes=np.arange(cfg.sizes[-1]))
    else:
        model = MLPRegressor(activation="logistic", **common)
        model.partial_fit(X[:cfg.batch], Y[:cfg.batch])
    for (W, b), coef, icpt in zip(params, model.coefs_, model.intercepts_):
        coef[...] = W.T
        icpt[...] = b
    warnings.filterwarnings("ignore", category=ConvergenceWarning)

    def run_epoch():
        model.partial_fit(X, Y)

    run_epoch.model = model
    return run_epoch


# ------------------------------------------------------------------------------ JAX
def import_jax(tf32: bool = False):
    """Import JAX with float64 allowed, and float32 matrix products in full precision on
    GPUs unless TF32 is asked for (JAX's GPU default would silently use TF32)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "highest")
    return jax


def _jax_loss(jax, jnp, cfg: Config):
    """The benchmark network's mean batch loss, written in JAX for jax.grad."""
    relu = cfg.activation == "relu"

    def loss(p, x, y):
        a = x
        for W, b in p[:-1]:
            z = a @ W.T + b
            a = jax.nn.relu(z) if relu else jax.nn.sigmoid(z)
        z = a @ p[-1][0].T + p[-1][1]
        if cfg.loss == "cross_entropy":
            logp = jax.nn.log_softmax(z, axis=1)
            return -jnp.take_along_axis(logp, y[:, None], axis=1).mean()
        return ((jax.nn.sigmoid(z) - y) ** 2).sum() / (2 * x.shape[0])

    return loss


def setup_jax(cfg: Config, dtype: str, X, Y, params, lr: float, platform: str = "cpu",
              tf32: bool = False):
    """A jit-compiled SGD step (grad of the loss + update); the batch is cut inside the
    compiled step so each step is one dispatch. The Python loop over steps stays, as the
    other contenders' does."""
    jax = import_jax(tf32)
    import jax.numpy as jnp

    dev = jax.devices(platform)[0]
    p = [(jax.device_put(W, dev), jax.device_put(b, dev)) for W, b in params]
    Xd, Yd = jax.device_put(X, dev), jax.device_put(Y, dev)
    b_ = cfg.batch

    loss = _jax_loss(jax, jnp, cfg)

    def step(p, X, Y, i):
        x = jax.lax.dynamic_slice_in_dim(X, i * b_, b_)
        y = jax.lax.dynamic_slice_in_dim(Y, i * b_, b_)
        g = jax.grad(loss)(p, x, y)
        return jax.tree.map(lambda w, gw: w - lr * gw, p, g)

    step = jax.jit(step, donate_argnums=(0,) if dev.platform != "cpu" else ())
    state = {"p": p}
    steps = X.shape[0] // b_

    def run_epoch():
        q = state["p"]
        for i in range(steps):
            q = step(q, Xd, Yd, i)
        jax.block_until_ready(q)
        state["p"] = q

    run_epoch.state = state
    run_epoch.loss = loss
    return run_epoch


def setup_jax_scan(cfg: Config, dtype: str, X, Y, params, lr: float, platform: str = "cpu",
                   tf32: bool = False):
    """The epoch as ONE compiled program: ``lax.scan`` over the batches pre-cut by
    ``reshape`` (steps, batch, ...), ``jax.grad`` of the loss and the SGD update in the body,
    the parameters donated on GPUs. The tightest loop a JAX user writes (slicing each batch
    at ``i * batch`` inside the body instead made A's epoch 5x slower on the CPU): the anchor
    for portable_bp's own scan executor."""
    jax = import_jax(tf32)
    import jax.numpy as jnp

    dev = jax.devices(platform)[0]
    p = [(jax.device_put(W, dev), jax.device_put(b, dev)) for W, b in params]
    Xd, Yd = jax.device_put(X, dev), jax.device_put(Y, dev)
    b_, steps = cfg.batch, X.shape[0] // cfg.batch

    loss = _jax_loss(jax, jnp, cfg)

    def epoch(p, X, Y):
        def body(q, batch):
            g = jax.grad(loss)(q, *batch)
            return jax.tree.map(lambda w, gw: w - lr * gw, q, g), None

        batches = (X[:steps * b_].reshape(steps, b_, *X.shape[1:]), Y[:steps * b_].reshape(steps, b_, *Y.shape[1:]))
        return jax.lax.scan(body, p, batches)[0]

    epoch = jax.jit(epoch, donate_argnums=(0,) if dev.platform != "cpu" else ())
    state = {"p": p}

    def run_epoch():
        state["p"] = epoch(state["p"], Xd, Yd)
        jax.block_until_ready(state["p"])

    run_epoch.state = state
    run_epoch.loss = loss
    return run_epoch


def setup_torch_graph(cfg: Config, dtype: str, X, Y, params, lr: float, device: str = "cuda"):
    """The PyTorch step (nn.Linear, autograd, torch.optim.SGD) captured ONCE as a CUDA graph,
    PyTorch's whole-network-capture recipe: static batch buffers, warm-up on a side stream
    (the weights it moved are put back), then per batch two copies into the static buffers
    and one replay. The anchor for portable_bp's captured executors on CUDA."""
    import torch

    run = setup_torch(cfg, dtype, X, Y, params, lr, device)
    model, loss_fn, opt = run.model, run.loss_fn, run.opt
    Xt, Yt = torch.from_numpy(X).to(device), torch.from_numpy(Y).to(device)
    b = cfg.batch
    static_x, static_y = Xt[:b].clone(), Yt[:b].clone()
    start = {k: v.clone() for k, v in model.state_dict().items()}

    def step():
        opt.zero_grad(set_to_none=False)
        loss_fn(model(static_x), static_y).backward()
        opt.step()

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    model.load_state_dict(start)  # the same starting weights as every other contender
    n = X.shape[0]

    def run_epoch():
        for s in range(0, n - b + 1, b):
            static_x.copy_(Xt[s:s + b])
            static_y.copy_(Yt[s:s + b])
            graph.replay()
        torch.cuda.synchronize()

    run_epoch.model = model
    return run_epoch
