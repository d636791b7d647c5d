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

This module is host-side: it uses NumPy and the backend's own ``asarray``/``to_numpy``.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from numbers import Integral

import numpy as np

from ._safe_io import NpzArchive, atomic_write

FORMAT = "portable_bp-checkpoint"
VERSION = 1
ARCHITECTURE = ("sizes", "activation", "output_activation", "loss")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")  # history metrics and data arrays


# -- saving ------------------------------------------------------------------------------
def save(net, path, run=None, history=None, data=None) -> None:
    """Write ``net`` (parameters, epochs_trained, optimizer state) to ``path`` atomically;
    ``run`` (a JSON-able dict: world size, global batch of the fit writing it) goes into
    the metadata as ``run``, for the record: resuming does not need it. ``history`` (a
    :class:`~portable_bp.train.History`) is stored so that a resumed fit returns every
    epoch's metrics; ``data`` is ``{"meta": JSON object, "arrays": {name: vector}}``, each
    vector one float per input feature (a standardizer's mean and scale, say).

    An existing file keeps its permission bits; a read-only file, a directory or a
    non-regular file at ``path`` is refused before anything is written (see
    :func:`portable_bp._safe_io.atomic_write`).
    """
    path = os.fsdecode(os.fspath(path))
    arrays, meta = _host_contents(net)
    if run is not None:
        meta["run"] = dict(run)
    if history is not None and history.epochs:
        meta["history"] = _history_arrays(history, arrays, meta["epochs_trained"])
    if data is not None:
        meta["data"] = _data_arrays(data, net.sizes[0], arrays)
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


def _history_arrays(history, arrays, epochs_trained: int) -> list[str]:
    """The history's epochs and metrics into ``arrays``; the metric names, for the metadata.
    The epochs must increase and end before ``epochs_trained``, as loading checks."""
    n = len(history.epochs)
    epochs = np.asarray(history.epochs, dtype=np.int64)
    if epochs[0] < 0 or np.any(np.diff(epochs) <= 0) or epochs[-1] >= epochs_trained:
        raise ValueError(f"the history's epochs {history.epochs[:3]}...{history.epochs[-1]} must increase "
                         f"from 0 and end before the network's epochs_trained ({epochs_trained})")
    arrays["history__epochs"] = epochs
    names = []
    for key, values in history.history.items():
        if not isinstance(key, str) or not _NAME.fullmatch(key) or len(values) != n:
            raise TypeError(f"history metric {key!r} must be a plain name with one value per epoch")
        arrays[f"history__{key}"] = np.asarray(values, dtype=np.float64)
        names.append(key)
    return names


def _data_arrays(data, n_features: int, arrays) -> dict:
    """``data``'s vectors into ``arrays`` (checked: one float per feature); its JSON object."""
    if not isinstance(data, dict) or set(data) - {"meta", "arrays"}:
        raise TypeError("data must be {'meta': JSON object, 'arrays': {name: vector}}")
    try:
        meta = json.loads(json.dumps(data.get("meta") or {}))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"data['meta'] cannot be stored as JSON: {exc}") from None
    for key, vector in (data.get("arrays") or {}).items():
        vector = np.asarray(vector, dtype=np.float64)
        if not _NAME.fullmatch(str(key)) or vector.shape != (n_features,):
            raise TypeError(f"data array {key!r} must be a named vector of {n_features} values, "
                            f"got shape {vector.shape}")
        arrays[f"data__{key}"] = vector
    return meta


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
    run.update(seed=saved["seed"], init=saved["init"], sigma=saved["sigma"], history=ck["history"])
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
        meta = _parse_meta(_entry(npz, "meta", name), name)
        return _contents(npz, meta, name)


_MAX_META_BYTES = 4 << 20  # the JSON of any real network is a few kilobytes


def _entry(npz, key, name, shape=None, dtype=None):
    """One entry, its header checked against ``shape`` and ``dtype`` (when given) before its
    data is read; ``meta`` must be a modest 0-d string."""
    with npz.member(key) as member:
        if key == "meta" and (member.shape != () or member.dtype.kind != "U"):
            raise ValueError(f"{name}: 'meta' must be a 0-d string array, got {member.dtype} of shape "
                             f"{member.shape}")
        if key == "meta" and member.nbytes > _MAX_META_BYTES:
            raise ValueError(f"{name}: 'meta' holds {member.nbytes:,} bytes; metadata is never that large")
        if shape is not None and member.shape != shape:
            raise ValueError(f"{name}: array {key!r} has shape {member.shape}, expected {shape}")
        if dtype is not None and member.dtype.newbyteorder("=") != np.dtype(dtype):  # read byte-swapped
            raise ValueError(f"{name}: array {key!r} has dtype {member.dtype}, expected {dtype}")
        return member.read()


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
    history = meta.get("history", [])
    if not isinstance(history, list) or not all(isinstance(k, str) and _NAME.fullmatch(k) for k in history):
        raise ValueError(f"{name}: metadata 'history' is malformed: {str(history)[:200]}")
    if not isinstance(meta.get("data", {}), dict):
        raise ValueError(f"{name}: metadata 'data' must be an object, got {str(meta['data'])[:200]}")
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
        return _entry(npz, key, name, shape, dtype)

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
            "history": _history(npz, meta, name), "data": _data(npz, meta, name, sizes[0])}


def _history(npz, meta, name) -> dict:
    """The saved history as lists, checked: epochs increasing, below ``epochs_trained``,
    one value per epoch for every metric."""
    names = meta.get("history", [])
    if not names and not npz.has("history__epochs"):
        return {"epochs": [], "values": {}}
    if not npz.has("history__epochs"):
        raise ValueError(f"{name}: missing array 'history__epochs'")
    with npz.member("history__epochs") as member:
        if member.dtype != np.int64 or len(member.shape) != 1:
            raise ValueError(f"{name}: 'history__epochs' must be a 1-D int64 array")
        n = member.shape[0]
    epochs = _entry(npz, "history__epochs", name, (n,), np.int64)
    if n and (epochs[0] < 0 or np.any(np.diff(epochs) <= 0) or epochs[-1] >= meta["epochs_trained"]):
        raise ValueError(f"{name}: 'history__epochs' must increase from 0 up to epochs_trained - 1")
    values = {}
    for key in names:
        if not npz.has(f"history__{key}"):
            raise ValueError(f"{name}: missing array 'history__{key}'")
        values[key] = _entry(npz, f"history__{key}", name, (n,), np.float64).tolist()
    return {"epochs": epochs.tolist(), "values": values}


def _data(npz, meta, name, n_features) -> dict | None:
    """The saved ``data`` object and its vectors (float64, one value per input feature)."""
    if "data" not in meta:
        return None
    arrays = {key.removeprefix("data__"): _entry(npz, key, name, (n_features,), np.float64)
              for key in npz.keys if key.startswith("data__")}
    return {"meta": meta["data"], "arrays": arrays}
