"""Training (E12): batching, shuffling, the optimizer step, validation, callbacks, history.

The hot loop keeps everything on the device: the data is moved there once, each epoch's
batch order is one host permutation (seeded by the network's seed and the epoch, so every
backend and every resumed run sees the same order), and the epoch loss is summed on the
device and read back once per epoch, never per batch.
"""

from __future__ import annotations

import functools
import math
import time
from numbers import Integral

from . import _inputs
from .optim import SGD, Adam, _check_rate, get_optimizer


class TrainingDiverged(FloatingPointError):
    """The loss became NaN or inf; the network keeps its last finite parameters."""


class History:
    """Per-epoch metrics of one ``fit`` call: ``history["loss"]``, ``["val_loss"]``, ..."""

    def __init__(self):
        self.history: dict[str, list] = {}
        self.epochs: list[int] = []

    def append(self, epoch: int, logs: dict) -> None:
        self.epochs.append(epoch)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)

    def __repr__(self) -> str:
        last = {k: v[-1] for k, v in self.history.items() if v}
        return f"History(epochs={len(self.epochs)}, last={last})"


class EarlyStopping:
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs;
    with ``restore_best_weights`` the network ends with the parameters of its best epoch."""

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, mode="auto",
                 restore_best_weights=True):
        if isinstance(patience, bool) or not isinstance(patience, Integral) or patience < 0:
            raise ValueError(f"patience must be a non-negative integer, got {patience!r}")
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min', 'max' or 'auto', got {mode!r}")
        self.monitor, self.patience, self.min_delta, self.mode = monitor, patience, abs(min_delta), mode
        self.restore_best_weights = restore_best_weights

    def on_train_begin(self, net):
        self.best, self.best_epoch, self.wait, self._best_params = None, None, 0, None

    def _improved(self, value) -> bool:
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, net, epoch, logs) -> bool:
        if self.monitor not in logs:
            raise ValueError(f"EarlyStopping monitors {self.monitor!r}, which this fit does not "
                             f"produce (it has {sorted(logs)}); pass validation_data for val_* metrics")
        value = logs[self.monitor]
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self._best_params = _copy_params(net)
            return False
        self.wait += 1
        return self.wait >= self.patience

    def on_train_end(self, net):
        if self.restore_best_weights and self._best_params is not None:
            net._W, net._b = self._best_params


class _Snapshot:
    """Parameters and optimizer state at an epoch's start, to fall back on if it diverges.

    A copy on the same device (immutable JAX arrays are their own snapshot): one copy per
    epoch, never per batch, and no host transfer, which on a GPU would cost more than the
    copy (a device-to-host round of the whole model per epoch). Its memory (one model, plus
    the optimizer's slots) is largely offset by the backward pass, which frees each layer's
    activations as it passes them.
    """

    def __init__(self, net, state):
        if net.backend.mutable:
            keep = lambda a: net.xp.asarray(a, copy=True)  # noqa: E731
        else:
            keep = lambda a: a  # noqa: E731
        self.W, self.b = [keep(W) for W in net._W], [keep(v) for v in net._b]
        self.step = state["step"]
        self.slots = {k: [keep(a) for a in v] for k, v in state["slots"].items()}

    def restore(self, net, trainer):
        net._W, net._b = list(self.W), list(self.b)
        trainer.state = {"step": self.step,
                         "slots": {k: list(v) for k, v in self.slots.items()}}


def _copy_params(net):
    xp = net.xp
    return [xp.asarray(W, copy=True) for W in net._W], [xp.asarray(b, copy=True) for b in net._b]


def _check_batch_size(batch_size, n, what="batch_size", none_means="full batch"):
    if batch_size is None:
        return n
    if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
        raise ValueError(f"{what} must be a positive integer or None ({none_means}), "
                         f"got {batch_size!r}")
    return min(int(batch_size), n)


def _batches(n, batch_size):
    """(start, stop) of each batch; the last one may be shorter (stop is clamped: the Array
    API does not promise out-of-range slice stops)."""
    return [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]


def _check_epochs(epochs):
    if isinstance(epochs, bool) or not isinstance(epochs, Integral) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer, got {epochs!r}")
    return int(epochs)


class _Trainer:
    """One fit's step function, with the network, optimizer and namespace bound once.

    The step is written as a pure function of arrays (parameters, optimizer state, batch,
    lr) so that a backend that compiles (JAX) can run it as one program; eager backends
    call it as it is, updating in place. The documented optimizer protocol is
    ``update(params, grads, state, lr)``; the built-in optimizers also take the backend's
    mutability, its fused kernels, leave to overwrite the gradients (this step's
    temporaries) and scalars computed on the host in double precision.
    """

    def __init__(self, net, opt, state):
        self.net, self.opt, self.state = net, opt, state
        self.xp, self.mutable = net.xp, net.backend.mutable
        self.builtin = isinstance(opt, (SGD, Adam))
        self.compiled = self.builtin and net.backend.compile is not None
        # plain SGD exactly (a subclass's update() would be bypassed); the one-call products
        # are fetched once: a callback switching fused_kernels off mid-fit switches the
        # element-wise kernels off at the next step, these at the next fit (the numbers agree)
        descent_ops = (net._descent_ops() if type(opt) is SGD and opt.takes_lr_in_grads
                       and self.mutable else None)
        if self.compiled:
            self._step = _compiled_step(net, opt)
        elif descent_ops is not None:
            self._step = functools.partial(_descent_step, net, descent_ops)
        else:
            kwargs = (_update_kwargs(opt, self.mutable, net._fused_kernels())
                      if self.builtin else {})
            self._step = functools.partial(_pure_step, net, opt, kwargs)

    def step(self, X, Z, order, start, stop, lr):
        """One E12 update on rows start:stop of (X, Z), or of their permutation ``order``;
        returns the batch's summed loss as a device scalar."""
        net, count = self.net, self.state["step"]
        scalars = self.opt.host_scalars(count, lr) if self.builtin else {}
        Ws, bs, self.state, total = self._step(net._W, net._b, self.state, X, Z, order, start,
                                               lr, scalars, size=stop - start)
        if self.compiled:  # the compiled step returns the count as a device integer
            self.state["step"] = count + 1
        net._W, net._b = list(Ws), list(bs)  # the same arrays when updated in place
        return total

    def epoch(self, X, Z, order, batch_size, lr):
        """All batches of one epoch; the summed loss stays on the device."""
        total = None
        for start, stop in _batches(X.shape[0], batch_size):
            loss = self.step(X, Z, order, start, stop, lr)
            total = loss if total is None else total + loss
        return total / X.shape[0]


def _pure_step(net, opt, update_kwargs, Ws, bs, state, X, Z, order, start, lr, scalars, size):
    """Forward, backprop and the optimizer's update on one batch (:func:`_batch`):
    (new Ws, new bs, new state, batch loss)."""
    Xb, Zb = _batch(net.xp, X, Z, order, start, size)
    As, U_L, total, _ = net._forward(Xb, Zb, params=(Ws, bs))
    grads = net._grads(As, U_L, Zb, Ws, lr / size if update_kwargs.get("lr_in_grads") else None)
    flat_p, flat_g = [], []
    for W, b, (dW, db) in zip(Ws, bs, grads):
        flat_p += (W, b)
        flat_g += (dW, db)
    new, state = opt.update(flat_p, flat_g, state, lr, **update_kwargs, **scalars)
    return new[0::2], new[1::2], state, total


def _descent_step(net, descent_ops, Ws, bs, state, X, Z, order, start, lr, scalars, size):
    """Plain SGD's step where the backend multiplies and accumulates in place
    (``Backend.subtract_matmul``): backprop takes each layer's step W -= lr·Δᵀ A(l-1) itself,
    so no gradient array is made and no update pass follows. The same E12 step as
    :func:`_pure_step` with :class:`~portable_bp.optim.SGD` (lr-scaled gradients), in place."""
    Xb, Zb = _batch(net.xp, X, Z, order, start, size)
    As, U_L, total, _ = net._forward(Xb, Zb, params=(Ws, bs))
    net._grads(As, U_L, Zb, Ws, lr / size, descend=(bs, descent_ops))
    state["step"] += 1  # what SGD.update counts
    return Ws, bs, state, total


def _update_kwargs(opt, mutable, kernels):
    """What the built-in optimizers take beyond update(params, grads, state, lr)."""
    kwargs = {"mutable": mutable, "kernels": kernels, "consume_grads": True}
    if getattr(opt, "takes_lr_in_grads", False):
        kwargs["lr_in_grads"] = True
    return kwargs


def _batch(xp, X, Z, order, start, size):
    """Rows start:start+size of (X, Z), or of their permutation ``order`` (the epoch's
    shuffle). Shuffled batches gather just their own rows, so shuffling never copies the
    dataset (which on a GPU would double the memory it takes). Unshuffled ones are views
    when ``start`` is a number; inside a compiled step, where it is traced (an argument, so
    that one program serves every batch), a gather, since slice bounds must be constants
    there."""
    if isinstance(start, Integral):
        if order is None:
            return X[start:start + size, ...], Z[start:start + size, ...]
        rows = order[start:start + size]
    else:
        rows = xp.arange(size) + start
        if order is not None:
            rows = xp.take(order, rows)
    return xp.take(X, rows, axis=0), xp.take(Z, rows, axis=0)


def _compiled(net, key, fn, static_argnames=()):
    """``fn`` compiled by the backend (JAX's jit), kept on the network under ``key`` so that
    fitting or evaluating again reuses it instead of compiling anew; on eager backends
    ``fn`` itself."""
    if net.backend.compile is None:
        return fn
    if key not in net._compiled:
        net._compiled[key] = net.backend.compile(fn, static_argnames=static_argnames)
    return net._compiled[key]


def _compiled_step(net, opt):
    """The training step compiled once per optimizer configuration. The learning rate is not
    part of the key: it is an argument, not a constant of the program."""
    config = {k: v for k, v in opt.config().items() if k != "lr"}
    key = ("step", type(opt).__name__, repr(sorted(config.items())))
    kwargs = _update_kwargs(opt, False, None)
    return _compiled(net, key, functools.partial(_pure_step, net, opt, kwargs), ("size",))


def _metrics(net, X, Z, prefix="", batch_size=None):
    """Loss and (for classifiers and BCE) accuracy over X as Python floats. Taken over
    batches of ``batch_size`` rows (all of X when None), so the activations alive are one
    batch's; the sums stay on the device and are read back at the end (two values)."""
    run = _compiled(net, "metrics", functools.partial(_loss_and_hits, net))
    n = X.shape[0]
    total = hits = None
    for s, t in _batches(n, n if batch_size is None else batch_size):
        part, part_hits = run(net._W, net._b, X[s:t, ...], Z[s:t, ...])
        total = part if total is None else total + part
        if part_hits is not None:
            hits = part_hits if hits is None else hits + part_hits
    out = {prefix + "loss": float(total) / n}
    if hits is not None:
        out[prefix + "accuracy"] = int(hits) / n
    return out


def _loss_and_hits(net, Ws, bs, X, Z):
    """The summed loss over X and, for classifiers and BCE, the number of correct samples
    (device scalars)."""
    As, _, total, _ = net._forward(X, Z, params=(Ws, bs))
    if net.is_classifier or net.loss == "binary_cross_entropy":
        return total, _hits(net.xp, net, As[-1], Z)
    return total, None


def _outputs(net, Ws, bs, X):
    """A(L) for X."""
    return net._forward(X, params=(Ws, bs))[0][-1]


def _hits(xp, net, A, Z):
    """How many rows of A are right: the arg-max class for classifiers, every unit on the
    right side of 0.5 for binary outputs (an integer count: exact for any n)."""
    if net.is_classifier:
        hits = xp.argmax(A, axis=1) == (Z if Z.ndim == 1 else xp.argmax(Z, axis=1))
    else:
        hits = xp.all((A >= 0.5) == (Z >= 0.5), axis=1)
    return xp.count_nonzero(hits)


def fit(net, X, Z, *, epochs=1, batch_size=32, optimizer="sgd", lr=None, shuffle=True,
        validation_data=None, validation_batch_size=None, progress=False, callbacks=(),
        checkpoint=None, resume=False):
    """Train ``net`` by gradient descent (E12) and return a :class:`History`.

    batch_size: None for full-batch gradient descent, 1 for single-sample SGD, k for
    mini-batches. optimizer: ``"sgd"``, ``"momentum"``, ``"nesterov"``, ``"adam"`` (with
    ``lr``, a float or a schedule ``epoch -> lr``) or an object from :mod:`portable_bp.optim`.
    Each call starts a fresh optimizer state unless ``resume=True`` finds ``checkpoint``.
    checkpoint: a path saved (atomically) at the end of every epoch. resume: restore
    parameters, optimizer state and epoch count from ``checkpoint`` when it exists; then
    ``epochs`` is the total to reach. Callbacks are objects with ``on_train_begin(net)``,
    ``on_epoch_end(net, epoch, logs) -> stop?`` and ``on_train_end(net)`` (each optional),
    or plain callables ``f(net, epoch, logs) -> stop?``.
    validation_data: (X_val, Z_val), scored after every epoch in batches of
    ``validation_batch_size`` rows (default: the training batch size, at least 1024).
    Shuffling gathers each batch's rows, and integer labels stay labels (one index per
    sample): once X and Z are on the device (in the network's dtype), fit holds one batch's
    worth of arrays more, never a shuffled or one-hot copy of the dataset.
    A NaN/inf loss raises :class:`TrainingDiverged` naming the epoch and batch; the network
    keeps the parameters it had before that batch. For that, fit keeps a copy of the
    parameters and optimizer state from the start of the current epoch, on the device.
    """
    epochs = _check_epochs(epochs)
    opt = get_optimizer(optimizer, lr)
    xp, backend = net.xp, net.backend
    with backend.activate():
        X = net._features(X)
        Z = net._targets(Z, X.shape[0])
        n = X.shape[0]
        bs = _check_batch_size(batch_size, n)
        val = None
        val_bs = (max(bs, 1024) if validation_batch_size is None else
                  _check_batch_size(validation_batch_size, math.inf, "validation_batch_size",
                                    "the training batch size, at least 1024"))
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (X_val, Z_val)")
            Xv = _inputs.features(backend, validation_data[0], net.sizes[0], net._dt, "X_val")
            val = (Xv, _inputs.targets(backend, validation_data[1], Xv.shape[0], net.sizes[-1],
                                       net.loss, net._dt, "Z_val"))
        start_epoch, state = net.epochs_trained, None
        if resume:
            if checkpoint is None:
                raise ValueError("resume=True needs checkpoint=PATH")
            from .checkpoint import restore_into

            restored = restore_into(net, checkpoint, opt)  # None when the file does not exist yet
            if restored is not None:
                opt, state = restored
                start_epoch = net.epochs_trained
        else:
            epochs = start_epoch + epochs
        if state is None:
            state = opt.init([p for pair in net.params for p in pair])
        trainer = _Trainer(net, opt, state)
        callbacks = list(callbacks or ())
        for cb in callbacks:
            getattr(cb, "on_train_begin", lambda net: None)(net)
        history = History()
        bar = _progress(progress, start_epoch, epochs)
        try:
            for epoch in range(start_epoch, epochs):
                t0 = time.perf_counter()
                lr_now = getattr(opt, "lr", None)  # custom optimizers may keep their own
                if callable(lr_now):
                    lr_now = _scheduled_lr(lr_now, epoch)
                order = None
                if shuffle:
                    perm = backend.rng([net.seed, epoch]).permutation(n)
                    order = backend.asarray(perm)
                snapshot = _Snapshot(net, trainer.state)
                epoch_loss = trainer.epoch(X, Z, order, bs, lr_now)
                # one host read per epoch: the loss, made NaN if any parameter is non-finite
                # (each batch's loss is taken before its update, so the last update of the
                # epoch would otherwise go unchecked)
                loss = float(epoch_loss + 0.0 * _params_sum(net))
                if not math.isfinite(loss):
                    _locate_divergence(net, trainer, snapshot, X, Z, order, bs, lr_now, epoch)
                logs = {"loss": loss}
                if val is not None:
                    logs.update(_metrics(net, *val, prefix="val_", batch_size=val_bs))
                logs["time"] = time.perf_counter() - t0
                net.epochs_trained = epoch + 1
                net.optimizer_state = (opt, trainer.state)
                history.append(epoch, logs)
                if checkpoint is not None:
                    from .checkpoint import save

                    save(net, checkpoint)
                if bar is not None:
                    bar.update(epoch, logs)
                stop = False
                for cb in callbacks:
                    hook = getattr(cb, "on_epoch_end", None) or (cb if callable(cb) else None)
                    if hook is not None:
                        stop = bool(hook(net, epoch, logs)) or stop
                if stop:
                    break
        finally:
            if bar is not None:
                bar.close()
        # not on an exception: after a divergence the network keeps the parameters from
        # before the offending batch, not (say) EarlyStopping's best ones
        for cb in callbacks:
            getattr(cb, "on_train_end", lambda net: None)(net)
    return history


def _scheduled_lr(schedule, epoch):
    """The schedule's learning rate for ``epoch`` as a Python float. NumPy scalars and 0-d
    arrays are read (a NumPy float64 would otherwise promote a float32 step to float64);
    anything but a finite number >= 0 is refused with the epoch named. Unlike a fixed lr,
    0 is allowed: warm-ups start there and ``CosineLR`` ends there."""
    value = schedule(epoch)
    if hasattr(value, "__float__") and not isinstance(value, bool):
        try:
            value = float(value)
        except (TypeError, ValueError):
            pass  # e.g. a 1-element array: refused below, by name
    return _check_rate(f"the learning-rate schedule's value for epoch {epoch}", value)


def _params_sum(net):
    """Σ of every parameter (a device scalar): non-finite exactly when some parameter is."""
    xp = net.xp
    total = None
    for P in net._W + net._b:
        s = xp.sum(P)
        total = s if total is None else total + s
    return total


def _locate_divergence(net, trainer, snapshot, X, Z, order, bs, lr, epoch):
    """Replay the epoch from its start, one checked batch at a time, to name the batch whose
    loss or update became non-finite and leave the parameters as they were just before it."""
    snapshot.restore(net, trainer)
    for batch, (start, stop) in enumerate(_batches(X.shape[0], bs)):
        before = _Snapshot(net, trainer.state)
        loss = float(trainer.step(X, Z, order, start, stop, lr)) / (stop - start)
        params_finite = math.isfinite(float(_params_sum(net)))
        if not (math.isfinite(loss) and params_finite):
            before.restore(net, trainer)
            what = (f"the loss became {loss}" if not math.isfinite(loss)
                    else f"its update made the parameters non-finite (batch loss {loss:.4g})")
            raise TrainingDiverged(f"training diverged at epoch {epoch} (0-based), batch {batch}: "
                                   f"{what}; the network keeps the parameters from before that "
                                   f"batch. Lower the learning rate (lr={lr}).")
    raise TrainingDiverged(f"training diverged in epoch {epoch} but replaying it stayed finite")


class _progress:
    """A tqdm bar over epochs showing loss and accuracy, or one printed line per epoch."""

    def __new__(cls, enabled, start, stop):
        if not enabled:
            return None
        return super().__new__(cls)

    def __init__(self, enabled, start, stop):
        try:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=stop - start, unit="epoch", dynamic_ncols=True)
        except ImportError:
            self.bar = None
        self.stop = stop

    def update(self, epoch, logs):
        shown = {k: f"{v:.4g}" for k, v in logs.items() if k != "time"}
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(1)
        else:
            print(f"epoch {epoch + 1}/{self.stop} " + " ".join(f"{k}={v}" for k, v in shown.items()))

    def close(self):
        if self.bar is not None:
            self.bar.close()


def predict(net, X, batch_size=None):
    """Outputs for X (on the backend); class indices for cross-entropy networks."""
    with net.backend.activate():
        X = net._features(X)
        bs = _check_batch_size(batch_size, X.shape[0])
        xp = net.xp
        run = _compiled(net, "outputs", functools.partial(_outputs, net))
        outs = [run(net._W, net._b, X[s:t, ...]) for s, t in _batches(X.shape[0], bs)]
        A = outs[0] if len(outs) == 1 else xp.concat(outs, axis=0)
        return xp.argmax(A, axis=1) if net.is_classifier else A


def evaluate(net, X, Z, batch_size=None) -> dict:
    """``{"loss": ..., "accuracy": ...}`` over all of X (accuracy for classifiers and BCE),
    in batches of ``batch_size`` rows (None: all at once)."""
    with net.backend.activate():
        X = net._features(X)
        Z = net._targets(Z, X.shape[0])
        bs = None if batch_size is None else _check_batch_size(batch_size, X.shape[0])
        return _metrics(net, X, Z, batch_size=bs)
