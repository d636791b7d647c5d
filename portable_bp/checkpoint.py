"""Checkpoints: one ``.npz`` file holding a network, its epoch count and its optimizer state.

Layout (format ``portable_bp-checkpoint``, version 1), all plain arrays so that loading
never unpickles anything (``allow_pickle=False``: a checkpoint cannot run code):

* ``meta``: a 0-d unicode array holding JSON: format, version, ``net.config()``,
  ``epochs_trained``, the backend spec it was saved from (informational only) and
  ``optimizer``: null, or ``{"config": opt.config() or null, "step": n, "slots": {name: count}}``.
* ``W0``, ``b0``, ``W1``, ...: the parameters, in the network's dtype.
* ``opt__<slot>__<i>``: optimizer slot arrays, one per parameter in the order W0, b0, W1, ...
* optional, the training history (what ``fit`` returned, over every epoch up to
  ``epochs_trained``, resumed runs included): ``meta["history"]`` lists the metric names,
  ``history__epochs`` (int64) the epochs and ``history__<name>`` (float64) each metric.
* optional, the state of each early stopper of the fit (best value and epoch, epochs
  without improvement, the best epoch's parameters): ``meta["early_stopping"]`` and
  ``early<i>__W<l>``, ``early<i>__b<l>``, so that a resumed fit continues their patience.
* optional, what the data needed before the network saw it (the command line's class
  names, feature names, standardizer): ``meta["data"]``, any JSON object, and
  ``data__<name>``: float64 vectors of one value per input feature.

The path is used exactly as given: ``save(net, "model")`` writes ``model``, not
``model.npz`` (unlike ``np.savez``), so ``load`` and ``fit(checkpoint=...)`` find it again.

Saving is atomic: the file is written to ``.<name>.<8 hex>.tmp`` in the same directory,
fsynced and renamed over the target. A process killed mid-save leaves the previous file
intact plus that one temporary file, which the next save to the same path removes.
Several processes saving to one path at once are not supported: the file then still holds
one complete checkpoint, but a save may fail. Re-saving keeps the file's permission bits;
a read-only file or a directory at the path is refused before anything is written.

Loading never trusts the file: every entry's ``.npy`` header is checked against the saved
config (shape, dtype) and against a byte limit (``PORTABLE_BP_MAX_BYTES``, default 4 GiB)
before its data is read, so a small hostile file cannot make ``load`` allocate gigabytes.

The optional parts are written and read by :mod:`.checkpoint_record`. This module is
host-side: it uses NumPy and the backend's own ``asarray``/``to_numpy``.
"""

from __future__ import annotations

import json
import os
import warnings
from numbers import Integral

import numpy as np

from . import checkpoint_record as record
from ._safe_io import NpzArchive, atomic_write

FORMAT = "portable_bp-checkpoint"
VERSION = 1
ARCHITECTURE = ("sizes", "activation", "output_activation", "loss")


# -- saving ------------------------------------------------------------------------------
def save(net, path, run=None, history=None, data=None, early_stopping=()) -> None:
    """Write ``net`` (parameters, epochs_trained, optimizer state) to ``path`` atomically;
    ``run`` (a JSON-able dict: world size, global batch of the fit writing it) goes into
    the metadata as ``run``, for the record: resuming does not need it. ``history`` (a
    :class:`~portable_bp.train.History`) is stored so that a resumed fit returns every
    epoch's metrics; ``data`` is ``{"meta": JSON object, "arrays": {name: vector}}``, each
    vector one float per input feature (a standardizer's mean and scale, say).
    ``early_stopping``: the states of a fit's :class:`~portable_bp.train.EarlyStopping`
    callbacks (their ``state()``), so that a resumed fit continues their patience.

    An existing file keeps its permission bits; a read-only file, a directory or a
    non-regular file at ``path`` is refused before anything is written (see
    :func:`portable_bp._safe_io.atomic_write`).
    """
    path = os.fsdecode(os.fspath(path))
    arrays, meta = _host_contents(net)
    if run is not None:
        meta["run"] = dict(run)
    if history is not None and history.epochs:
        meta["history"] = record.history_arrays(history, arrays, meta["epochs_trained"])
    if early_stopping:
        to_host = lambda a: np.asarray(net.backend.to_numpy(a), dtype=net.dtype)  # noqa: E731
        meta["early_stopping"] = record.stopping_arrays(early_stopping, arrays, to_host, meta["epochs_trained"])
    if data is not None:
        meta["data"] = record.data_arrays(data, net.sizes[0], arrays)
    arrays["meta"] = np.array(json.dumps(meta))  # 0-d '<U' array: no pickling on load
    # through a file object: numpy adds no ".npz" suffix
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _host_contents(net):
    """Every array as host NumPy (device-to-host copies happen before any file is opened)."""
    to_host = lambda a: np.asarray(net.backend.to_numpy(a), dtype=net.dtype)  # noqa: E731
    arrays = {}
    for l, (W, b) in enumerate(net.params):
        arrays[f"W{l}"], arrays[f"b{l}"] = to_host(W), to_host(b)
    optimizer = None
    if net.optimizer_state is not None:
        opt, state = net.optimizer_state
        if not (isinstance(state, dict) and isinstance(state.get("step"), Integral)
                and isinstance(state.get("slots"), dict)):
            raise TypeError("net.optimizer_state[1] must be {'step': int, 'slots': {name: [arrays]}}")
        config = opt.config() if hasattr(opt, "config") else None  # custom optimizers: None
        try:
            config = json.loads(json.dumps(config))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"the optimizer's config() cannot be stored as JSON: {exc}") from None
        shapes = [a.shape for a in arrays.values()]  # W0, b0, W1, ...: one slot array each
        counts = {}
        for slot, values in state["slots"].items():
            if not isinstance(slot, str) or not isinstance(values, (list, tuple)) or len(values) != len(shapes):
                raise TypeError(f"optimizer slot {slot!r} must be a name with one array per parameter")
            counts[slot] = len(values)
            for i, a in enumerate(values):
                arrays[f"opt__{slot}__{i}"] = to_host(a)
                if arrays[f"opt__{slot}__{i}"].shape != shapes[i]:
                    raise TypeError(f"optimizer slot {slot!r}[{i}] has shape {tuple(a.shape)}, "
                                    f"expected {shapes[i]}")
        optimizer = {"config": config, "step": int(state["step"]), "slots": counts}
    meta = {"format": FORMAT, "version": VERSION, "config": net.config(),
            "epochs_trained": int(net.epochs_trained), "steps_trained": int(net.steps_trained),
            "backend": net.backend.spec, "optimizer": optimizer}
    return arrays, meta


# -- loading -----------------------------------------------------------------------------
def read_network(path, make, backend=None, max_bytes=None):
    """The network saved in ``path``, made by ``make`` (the Network class, handed in so that
    this module needs no import of it) on ``backend`` (default ``"numpy"``), with its epoch
    count and optimizer state; ``portable_bp.load`` is this with the Network class."""
    from .backends import get as get_backend

    ck = _read(path, max_bytes=max_bytes)
    be = get_backend("numpy" if backend is None else backend)
    cfg = dict(ck["config"])
    try:
        net = make(cfg.pop("sizes"), backend=be, params=ck["params"], **cfg)
    except (TypeError, ValueError) as exc:  # the parameters' checks name "params"
        what = "bad parameters" if "params" in str(exc) else "the saved network config is invalid"
        raise ValueError(f"{_name(path)}: {what}: {exc}") from None
    saved = _saved_run(ck, path, net)
    net.restore_state(params=saved["params"], epochs_trained=saved["epochs_trained"],
                      steps_trained=ck["steps_trained"])
    if saved["slots"] is not None:
        net.restore_state(optimizer_state=(saved["optimizer"], {"step": saved["step"], "slots": saved["slots"]}))
    return net


def read_run(path, net) -> dict:
    """What ``fit(..., resume=True)`` continues from, read and checked without changing
    ``net``: ``params`` (validated arrays on ``net``'s backend), ``epochs_trained``,
    ``seed``/``init``/``sigma`` (the seed orders the batches, so a resumed run sees the same
    batches as an uninterrupted one), ``config`` of the saved optimizer (or None),
    ``optimizer`` rebuilt from it (None when the file cannot rebuild it), ``slots`` on the
    backend ({name: flat list}, or None when no optimizer state was saved) and ``step``.
    Raises ValueError when the file holds another architecture or inconsistent state."""
    ck = _read(path)
    saved, mine = ck["config"], net.config()
    for key in ARCHITECTURE:
        if saved[key] != mine[key]:
            raise ValueError(f"{_name(path)} holds a network with {key}={saved[key]!r}, but this "
                             f"network has {key}={mine[key]!r}; resume needs the same architecture")
    if saved.get("dropout", []) != mine["dropout"] and any(saved.get("dropout", []) + mine["dropout"]):
        warnings.warn(f"resuming from {_name(path)} with dropout {mine['dropout']} instead of the saved "
                      f"{saved.get('dropout', [])}: the masks and the trajectory differ from the saved run's",
                      UserWarning, stacklevel=5)
    run = _saved_run(ck, path, net)
    run.update(seed=saved["seed"], init=saved["init"], sigma=saved["sigma"], history=ck["history"],
               early_stopping=ck["early_stopping"])
    return run


def read_record(path, max_bytes=None) -> dict:
    """What a checkpoint records besides the network: ``history`` (``{"epochs": [...],
    "values": {name: [...]}}``, empty lists when none was saved) and ``data`` (``{"meta":
    ..., "arrays": {name: vector}}``, or None), read and checked as :func:`load` reads."""
    ck = _read(path, max_bytes=max_bytes)
    return {"history": ck["history"], "data": ck["data"]}


def _saved_run(ck, path, net) -> dict:
    """Parameters and optimizer state of a read checkpoint, on ``net``'s backend and
    checked: the parameters like any others, and the slots against the saved optimizer's
    own (a renamed or foreign slot is a ValueError, not a KeyError or a silent loss)."""
    from .optim import layer_state

    try:
        params = net.validate_params(ck["params"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{_name(path)}: bad parameters: {exc}") from None
    run = {"params": params, "epochs_trained": ck["epochs_trained"], "steps_trained": ck["steps_trained"],
           "config": None,
           "optimizer": None, "slots": None, "step": 0}
    if ck["optimizer"] is None:
        return run
    slots = {k: [net.backend.asarray(a, net.dtype) for a in v] for k, v in ck["slots"].items()}
    optimizer = _rebuild_optimizer(ck)
    if optimizer is not None:
        try:
            layer_state(optimizer, slots, net.n_layers)
        except ValueError as exc:
            raise ValueError(f"{_name(path)}: {exc}") from None
    run.update(config=ck["optimizer"]["config"], optimizer=optimizer, slots=slots,
               step=ck["optimizer"]["step"])
    return run


def _rebuild_optimizer(ck):
    """The saved optimizer, or None when its config cannot rebuild it."""
    from .optim import optimizer_from_config

    cfg = ck["optimizer"]["config"]
    if cfg is None or cfg.get("lr") is None:
        return None
    try:
        return optimizer_from_config(cfg)
    except (TypeError, ValueError, KeyError):
        return None  # a custom optimizer class with a config(): the caller must pass it again


# -- reading and checking ----------------------------------------------------------------
def _name(path):
    return repr(os.fsdecode(os.fspath(path)))


def _read(path, max_bytes=None) -> dict:
    """Everything in the file as host arrays and checked metadata, or a ValueError naming
    the file and the problem. A missing file raises FileNotFoundError.

    Each entry's ``.npy`` header is checked (dtype, shape, size against the zip directory
    and against ``max_bytes``, default ``PORTABLE_BP_MAX_BYTES`` or 4 GiB, for all
    entries together) before its data is read, and each entry is read once, straight into
    its final array: a hostile file is refused without allocating what it claims.
    """
    name = _name(path)
    with NpzArchive(path, name, max_bytes) as npz:
        if not npz.has("meta"):
            raise ValueError(f"{name} is not a portable_bp checkpoint: no 'meta' entry")
        meta = _parse_meta(record.entry(npz, "meta", name), name)
        return _contents(npz, meta, name)


def _parse_meta(arr, name) -> dict:
    """The metadata, checked field by field: every later use can then trust its types."""
    if arr.ndim != 0 or arr.dtype.kind != "U":
        raise ValueError(f"{name}: 'meta' must be a 0-d string array, got {arr.dtype} of shape {arr.shape}")
    try:
        meta = json.loads(str(arr[()]))
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested too deep
        raise ValueError(f"{name}: 'meta' is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else meta
        raise ValueError(f"{name} is not a portable_bp checkpoint (format {got!r}, expected {FORMAT!r})")
    version = meta.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{name}: unknown checkpoint format version {version!r}")
    if version > VERSION:
        raise ValueError(f"{name} has checkpoint format version {version}, newer than this "
                         f"portable_bp reads (up to {VERSION}); upgrade portable_bp")
    _need(meta, "config", dict, name)
    _need(meta["config"], "sizes", list, name)
    for key in ("activation", "output_activation", "loss", "dtype", "init"):
        _need(meta["config"], key, str, name)
    if meta["config"]["dtype"] not in ("float32", "float64"):
        raise ValueError(f"{name}: metadata 'dtype' is invalid: {meta['config']['dtype']!r}")
    _need(meta["config"], "seed", int, name)
    _need(meta["config"], "sigma", (int, float), name)
    _need(meta, "epochs_trained", int, name, nonneg=True)
    if "steps_trained" in meta:  # files before dropout's counter have none: their optimizer step stands in
        _need(meta, "steps_trained", int, name, nonneg=True)
    opt = meta.get("optimizer")
    if opt is not None:
        if not isinstance(opt, dict) or not isinstance(opt.get("slots"), dict) or not (
                opt.get("config") is None or isinstance(opt["config"], dict)):
            raise ValueError(f"{name}: metadata 'optimizer' is malformed: {opt!r}")
        _need(opt, "step", int, name, nonneg=True)
    record.check_meta(meta, name)
    return meta


def _need(d, key, types, name, nonneg=False):
    """One metadata field of the right type (bools are not ints), or a ValueError naming it."""
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, types) or (nonneg and value < 0):
        raise ValueError(f"{name}: metadata entry {key!r} is missing or invalid: {value!r}")


def _contents(npz, meta, name) -> dict:
    """Parameters and slot arrays read and checked against the saved config."""
    cfg = meta["config"]
    sizes, dtype = cfg["sizes"], cfg["dtype"]
    if len(sizes) < 2 or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in sizes):
        raise ValueError(f"{name}: metadata 'sizes' is invalid: {str(sizes)[:200]}")
    if 2 * (len(sizes) - 1) > len(npz.names):  # before a list of millions of expected shapes is built
        raise ValueError(f"{name}: metadata lists {len(sizes) - 1:,} layers, but the file has only "
                         f"{len(npz.names):,} entries")
    shapes = []
    for l in range(len(sizes) - 1):
        shapes += [(f"W{l}", (sizes[l + 1], sizes[l])), (f"b{l}", (sizes[l + 1],))]

    def array(key, shape):
        if not npz.has(key):
            raise ValueError(f"{name}: missing array {key!r}")
        return record.entry(npz, key, name, shape, dtype)

    flat = [array(key, shape) for key, shape in shapes]
    slots = {}
    if meta["optimizer"] is not None:
        for slot, count in meta["optimizer"]["slots"].items():
            if count != len(shapes):
                raise ValueError(f"{name}: optimizer slot {slot!r} has {count} arrays, expected "
                                 f"one per parameter ({len(shapes)})")
            slots[slot] = [array(f"opt__{slot}__{i}", shape) for i, (_, shape) in enumerate(shapes)]
    step = meta["optimizer"]["step"] if meta["optimizer"] is not None else 0
    return {"config": cfg, "epochs_trained": meta["epochs_trained"], "backend": meta.get("backend"),
            "steps_trained": meta.get("steps_trained", step),
            "optimizer": meta["optimizer"], "params": list(zip(flat[0::2], flat[1::2])), "slots": slots,
            "history": record.read_history(npz, meta, name), "data": record.read_data(npz, meta, name, sizes[0]),
            "early_stopping": record.read_stopping(npz, meta, name, shapes, dtype)}
