"""Everything ``fit`` checks before it trains, and what it trains with.

:func:`prepare` reads and checks every argument (data, sizes, optimizer, callbacks and
their log names, output paths, the checkpoint to resume from) and returns a :class:`Plan`,
changing nothing: a fit that raises before its first step leaves the network as it was.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from typing import Any

from .._validate import integer
from ..optim import get_optimizer, layer_state, optimizer_from_config
from ..transforms import NO_TRANSFORMS, Chain
from .callbacks import Callback, Checkpoint, EarlyStopping, History, as_callback
from .inference import check_batch_size
from .state import TrainState


@dataclass
class Plan:
    """A checked fit: data on the device (X, Z, sample weights or None) and the total
    weight an epoch's loss is divided by, sizes, optimizer, where training starts and stops,
    the callbacks, and what a resumed checkpoint sets on the network."""

    data: tuple
    total_weight: float
    batch_size: int
    validation: tuple | None
    validation_batch_size: int
    optimizer: object
    start: TrainState
    stop: int
    shuffle: bool
    callbacks: list[Callback]
    restored: dict = field(default_factory=dict)  # seed, init, sigma of a resumed checkpoint
    history: History = field(default_factory=History)  # a resumed checkpoint's, then this fit's epochs
    comm: Any = None  # the communicator (portable_bp.distributed); Local for one process
    deterministic: int | None = None  # K fixed pieces per global batch, or None
    transforms: Chain = NO_TRANSFORMS  # the gradient transforms (L2, clipping)


def metric_names(net, validation) -> list[str]:
    """The names each epoch's logs will hold."""
    names = ["loss", "time"]
    if validation is not None:
        names.append("val_loss")
        if net.loss in ("cross_entropy", "binary_cross_entropy"):
            names.append("val_accuracy")
    return names


def _validation(net, validation_data, batch_size, validation_batch_size):
    if validation_batch_size is None:
        size = max(batch_size, 1024)
    else:
        size = check_batch_size(validation_batch_size, float("inf"), "validation_batch_size",
                                "the training batch size, at least 1024")
    if validation_data is None:
        return None, size
    if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
        raise ValueError("validation_data must be a pair (X_val, Z_val) or a triple "
                         "(X_val, Z_val, sample_weight_val)")
    Xv = net.features(validation_data[0], "X_val")
    Zv = net.targets(validation_data[1], Xv.shape[0], "Z_val")
    wv = (net.sample_weights(validation_data[2], Xv.shape[0], "sample_weight_val")
          if len(validation_data) == 3 else None)
    return (Xv, Zv, wv), size


def _config(optimizer):
    """An optimizer's config as JSON would store it (lists, not tuples), or None."""
    cfg = optimizer.config() if callable(getattr(optimizer, "config", None)) else None
    return None if cfg is None else json.loads(json.dumps(cfg))


def _resumed_optimizer(optimizer, lr, saved, path):
    """The optimizer to continue with. Given neither ``optimizer`` nor ``lr``, the saved one.
    Given only ``lr``, the saved one with that learning rate. Given ``optimizer``, that one:
    the caller's choice wins (``_start`` warns when it differs from the saved one and refuses
    saved state it cannot use)."""
    if optimizer is None and saved["config"] is not None and saved["optimizer"] is not None:
        if lr is None:
            return saved["optimizer"]
        optimizer = optimizer_from_config({**saved["config"], "lr": lr})
        lr = None
    if optimizer is None and saved["slots"] is not None:
        raise ValueError(f"{path!r} holds optimizer state of {saved['config'] or 'a custom optimizer'}, "
                         f"which the file cannot rebuild (custom learning-rate callable or optimizer "
                         f"class); pass the same optimizer again")
    return get_optimizer("sgd" if optimizer is None else optimizer, lr)


def _read_saved(net, checkpoint, comm):
    """What ``resume`` continues from, or None without a file: read by rank 0 alone and
    sent to the others when there are several (the file may be on rank 0's machine only)."""
    if comm.size > 1:
        from ..distributed.sync import read_on_root

        return read_on_root(comm, net, checkpoint)
    if not os.path.exists(checkpoint):
        return None
    from ..checkpoint import read_run

    return read_run(checkpoint, net)


def _start(net, optimizer, lr, epochs, checkpoint, resume, comm):
    """(optimizer, the TrainState training starts from, the epoch it stops at, restored, the
    history so far and the early stoppers' states: the checkpoint's when resuming)."""
    if isinstance(checkpoint, Checkpoint):
        checkpoint = checkpoint.path
    if resume:
        if checkpoint is None:
            raise ValueError("resume=True needs checkpoint=PATH")
        saved = _read_saved(net, checkpoint, comm)
        if saved is not None:
            path = os.fsdecode(os.fspath(checkpoint))
            opt = _resumed_optimizer(optimizer, lr, saved, path)
            state = (opt.init(saved["params"]) if saved["slots"] is None else
                     layer_state(opt, saved["slots"], net.n_layers, f"the optimizer state in {path!r}"))
            if saved["slots"] is not None and saved["config"] not in (None, _config(opt)):
                warnings.warn(f"resuming from {path!r} with optimizer {_config(opt)} instead of the "
                              f"saved {saved['config']}; the saved optimizer state is kept",
                              UserWarning, stacklevel=7)
            offset = max(0, saved["steps_trained"] - saved["step"])
            start = TrainState(saved["params"], state, saved["step"], saved["epochs_trained"], offset)
            restored = {k: saved[k] for k in ("seed", "init", "sigma")}
            return (opt, start, max(epochs, start.epoch), restored, _saved_history(saved),
                    saved.get("early_stopping") or [])
    opt = get_optimizer("sgd" if optimizer is None else optimizer, lr)
    params = net.params
    start = TrainState(params, opt.init(params), 0, net.epochs_trained, net.steps_trained)
    return opt, start, start.epoch + epochs if not resume else max(epochs, start.epoch), {}, History(), []


def _saved_history(saved) -> History:
    """The history a checkpoint holds (empty for a file written without one)."""
    history = History()
    recorded = saved.get("history") or {"epochs": [], "values": {}}
    for i, epoch in enumerate(recorded["epochs"]):
        history.append(epoch, {key: values[i] for key, values in recorded["values"].items()})
    return history


def _resume_stoppers(net, stoppers, saved, start) -> bool:
    """Hand each EarlyStopping the state the checkpoint kept of the one at its place (in
    the order of ``callbacks``), its best weights on the backend (the checkpoint's own when
    its best epoch was the last); whether one of them had already stopped the fit."""
    spent = False
    for stopper, state in zip(stoppers, saved):
        params = state["params"]
        if params is None:  # not kept apart: the checkpoint's own, when its last epoch was the best
            params = start.params if state["best_epoch"] == start.epoch - 1 else None
        else:
            params = net.validate_params(params)
        spent = stopper.resume(state, params) or spent
    return spent


def user_callbacks(callbacks) -> list[Callback]:
    """The ``callbacks`` argument as Callback objects, or a TypeError."""
    if callbacks is None or isinstance(callbacks, (str, bytes)) or not hasattr(callbacks, "__iter__"):
        raise TypeError(f"callbacks must be a list, got {type(callbacks).__name__}")
    return [as_callback(cb) for cb in callbacks]


def _same_start(net, comm, start, restored):
    """Rank 0's start state and seed on every rank (parameters start equal, batch orders
    are drawn alike), as (start, restored); the network itself is not changed."""
    from ..distributed.sync import broadcast_state

    params, state, count, epoch, seed = broadcast_state(comm, net.backend, start.params, start.state,
                                                        start.count, start.epoch,
                                                        restored.get("seed", net.seed))
    if seed != restored.get("seed", net.seed):
        restored = {**restored, "seed": seed}
    return TrainState(params, state, count, epoch, start.offset), restored


def _optimizer_key(optimizer, lr):
    """What the ``optimizer`` and ``lr`` arguments ask for, comparable across processes."""
    try:
        opt = get_optimizer("sgd" if optimizer is None else optimizer, lr)
    except (TypeError, ValueError) as exc:  # refused on every rank alike by _start
        return f"invalid: {exc}"
    return _config(opt) or type(opt).__name__


def _fingerprint(net, data, size, epochs, shuffle, deterministic, optimizer, lr, validation, transforms) -> dict:
    """What every rank must have alike, in the order a difference is reported: the
    architecture, dtype and backend, the optimizer and settings, then the data's shapes,
    dtypes and checksums (the same rows in the same order). Rank 0's seed and initial
    parameters are sent to the others, so those may differ."""
    from ..distributed.staging import checksum

    arch = {k: v for k, v in net.config().items() if k not in ("seed", "init", "sigma")}
    found = {f"network {k}": v for k, v in arch.items()}
    found.update({"backend": net.backend.name, "optimizer": _optimizer_key(optimizer, lr),
                  "transforms": transforms.config(), "batch_size": size, "epochs": epochs, "shuffle": bool(shuffle),
                  "deterministic": deterministic, "steps trained": net.steps_trained})
    for name, a in zip(("X", "Z", "sample_weight"), data):
        found[f"{name} shape"] = None if a is None else tuple(a.shape)
        found[f"{name} dtype"] = None if a is None else str(a.dtype)
    found["validation shapes"] = None if validation is None else [
        None if a is None else tuple(a.shape) for a in validation]
    for name, a in zip(("X", "Z", "sample_weight"), data):
        found[f"{name} checksum"] = None if a is None else checksum(a, net.backend)
    return found


def _checked(net, X, Z, epochs, batch_size, validation_data, validation_batch_size, callbacks,
             checkpoint, sample_weight, comm, deterministic):
    """Every argument that one rank can check alone: (data, total weight, batch size,
    validation, its batch size, callbacks, epochs). Only rank 0 writes checkpoints, so
    only rank 0 checks the path. ``callbacks`` are Callback objects (``user_callbacks``)."""
    epochs = integer(epochs, "epochs")
    if deterministic is not None:
        integer(deterministic, "deterministic", minimum=1)
    X = net.features(X)
    Z = net.targets(Z, X.shape[0])
    w = None if sample_weight is None else net.sample_weights(sample_weight, X.shape[0])
    total_weight = X.shape[0] if w is None else float(net.xp.sum(w))
    size = check_batch_size(batch_size, X.shape[0])
    validation, val_size = _validation(net, validation_data, size, validation_batch_size)
    hooks = list(callbacks)
    run = {"world_size": comm.size, "global_batch": size, "deterministic": deterministic}
    if checkpoint is not None:  # its run is bound below, as any Checkpoint's
        hooks.append(checkpoint if isinstance(checkpoint, Checkpoint) else Checkpoint(checkpoint, comm=comm))
    # checkpoints last: each saves the epoch as every other callback (EarlyStopping) has seen it
    hooks = [cb for cb in hooks if not isinstance(cb, Checkpoint)] + [cb for cb in hooks if isinstance(cb, Checkpoint)]
    for cb in hooks:
        if isinstance(cb, Checkpoint):
            cb.bind(comm, run)
    names = metric_names(net, validation)
    for cb in hooks:
        cb.check(names)
    return (X, Z, w), total_weight, size, validation, val_size, hooks, epochs


def prepare(net, X, Z, *, epochs, batch_size, optimizer, lr, shuffle, validation_data,
            validation_batch_size, progress_bar, callbacks, checkpoint, resume, sample_weight,
            comm=None, deterministic=None, transforms=NO_TRANSFORMS) -> Plan:
    """Every argument of ``fit`` checked, nothing changed (see the module docstring).

    With many ranks (``comm``) a check that fails on one rank fails on every rank, the
    data and settings must be alike on every rank, and the start state is rank 0's."""
    from ..distributed.base import Local
    from ..distributed.sync import check_same, together

    comm = Local() if comm is None else comm
    data, total_weight, size, validation, val_size, hooks, epochs = together(comm, lambda: _checked(
        net, X, Z, epochs, batch_size, validation_data, validation_batch_size, callbacks, checkpoint,
        sample_weight, comm, deterministic))
    if comm.size > 1:  # before any message whose size depends on the network or the data
        check_same(comm, "network, data or settings", _fingerprint(
            net, data, size, epochs, shuffle, deterministic, optimizer, lr, validation, transforms))
    opt, start, stop, restored, history, stopping = together(comm, lambda: _start(net, optimizer, lr, epochs,
                                                                                  checkpoint, resume, comm))
    if comm.size > 1:
        start, restored = _same_start(net, comm, start, restored)
    stoppers = [cb for cb in hooks if isinstance(cb, EarlyStopping)]
    if _resume_stoppers(net, stoppers, stopping, start):
        stop = start.epoch  # the interrupted fit's patience was already spent: nothing to train
    for cb in hooks:
        if isinstance(cb, Checkpoint):
            cb.record(history, stoppers)
    if progress_bar is not None and comm.rank == 0:
        hooks.append(progress_bar(start.epoch, stop, resumed=bool(restored)))
    return Plan(data, total_weight, size, validation, val_size, opt, start, stop, bool(shuffle),
                hooks, restored=restored, comm=comm, deterministic=deterministic, transforms=transforms,
                history=history)
