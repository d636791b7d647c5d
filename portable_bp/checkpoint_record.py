"""What a checkpoint records besides the network: history, early stopping, data description.

Split out of :mod:`portable_bp.checkpoint` (which describes the whole layout): each part is
written into the archive's arrays and metadata here, and read back and checked here, so
that a resumed fit continues exactly where the saved one was:

* the history (``meta["history"]``, ``history__epochs``, ``history__<name>``): every epoch's
  metrics, so that ``fit(..., resume=True)`` returns them all;
* each :class:`~portable_bp.train.EarlyStopping`'s state (``meta["early_stopping"]``, a list
  of ``{"monitor", "mode", "best", "best_epoch", "wait", "params"}``, and the best epoch's
  parameters as ``early<i>__W<l>``/``early<i>__b<l>`` when they are not the checkpoint's
  own), so that its patience goes on counting after a resume instead of starting again;
* the data description (``meta["data"]``, ``data__<name>``).

Host-side (NumPy only).
"""

from __future__ import annotations

import json
import math
import re
from numbers import Integral, Real

import numpy as np

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")  # history metrics and data arrays
MAX_META_BYTES = 4 << 20  # the JSON of any real network is a few kilobytes


def entry(npz, key, name, shape=None, dtype=None):
    """One entry, its header checked against ``shape`` and ``dtype`` (when given) before its
    data is read; ``meta`` must be a modest 0-d string."""
    with npz.member(key) as member:
        if key == "meta" and (member.shape != () or member.dtype.kind != "U"):
            raise ValueError(f"{name}: 'meta' must be a 0-d string array, got {member.dtype} of shape "
                             f"{member.shape}")
        if key == "meta" and member.nbytes > MAX_META_BYTES:
            raise ValueError(f"{name}: 'meta' holds {member.nbytes:,} bytes; metadata is never that large")
        if shape is not None and member.shape != shape:
            raise ValueError(f"{name}: array {key!r} has shape {member.shape}, expected {shape}")
        if dtype is not None and member.dtype.newbyteorder("=") != np.dtype(dtype):  # read byte-swapped
            raise ValueError(f"{name}: array {key!r} has dtype {member.dtype}, expected {dtype}")
        return member.read()


# -- writing -----------------------------------------------------------------------------
def history_arrays(history, arrays, epochs_trained: int) -> list[str]:
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
        if not isinstance(key, str) or not NAME.fullmatch(key) or len(values) != n:
            raise TypeError(f"history metric {key!r} must be a plain name with one value per epoch")
        arrays[f"history__{key}"] = np.asarray(values, dtype=np.float64)
        names.append(key)
    return names


def stopping_arrays(states, arrays, to_host, epochs_trained: int) -> list[dict]:
    """Early stoppers' states (:meth:`EarlyStopping.state`) into ``arrays`` (their best
    parameters through ``to_host``, unless the best epoch is the last: the checkpoint's own);
    the metadata entries."""
    entries = []
    for i, state in enumerate(states):
        params = state["params"]
        keep = params is not None and state["best_epoch"] != epochs_trained - 1
        if keep:
            for l, (W, b) in enumerate(params):
                arrays[f"early{i}__W{l}"], arrays[f"early{i}__b{l}"] = to_host(W), to_host(b)
        entries.append({**{k: v for k, v in state.items() if k != "params"}, "params": keep})
    return entries


def data_arrays(data, n_features: int, arrays) -> dict:
    """``data``'s vectors into ``arrays`` (checked: one float per feature); its JSON object."""
    if not isinstance(data, dict) or set(data) - {"meta", "arrays"}:
        raise TypeError("data must be {'meta': JSON object, 'arrays': {name: vector}}")
    try:
        meta = json.loads(json.dumps(data.get("meta") or {}))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"data['meta'] cannot be stored as JSON: {exc}") from None
    for key, vector in (data.get("arrays") or {}).items():
        vector = np.asarray(vector, dtype=np.float64)
        if not NAME.fullmatch(str(key)) or vector.shape != (n_features,):
            raise TypeError(f"data array {key!r} must be a named vector of {n_features} values, "
                            f"got shape {vector.shape}")
        arrays[f"data__{key}"] = vector
    return meta


# -- reading -----------------------------------------------------------------------------
def check_meta(meta, name) -> None:
    """The metadata of the parts recorded here, checked field by field."""
    history = meta.get("history", [])
    if not isinstance(history, list) or not all(isinstance(k, str) and NAME.fullmatch(k) for k in history):
        raise ValueError(f"{name}: metadata 'history' is malformed: {str(history)[:200]}")
    if not isinstance(meta.get("data", {}), dict):
        raise ValueError(f"{name}: metadata 'data' must be an object, got {str(meta['data'])[:200]}")
    stoppers = meta.get("early_stopping", [])
    if not isinstance(stoppers, list) or not all(_stopper_ok(s, meta["epochs_trained"]) for s in stoppers):
        raise ValueError(f"{name}: metadata 'early_stopping' is malformed: {str(stoppers)[:200]}")


def _stopper_ok(state, epochs_trained: int) -> bool:
    def count(v):
        return isinstance(v, Integral) and not isinstance(v, bool) and 0 <= v

    if not isinstance(state, dict) or not isinstance(state.get("monitor"), str) or state.get("mode") not in (
            "min", "max") or not count(state.get("wait")) or not isinstance(state.get("params"), bool):
        return False
    best, epoch = state.get("best"), state.get("best_epoch")
    if best is None or epoch is None:
        return best is None and epoch is None and not state["params"]
    return (isinstance(best, Real) and not isinstance(best, bool) and not math.isnan(best) and count(epoch)
            and epoch < epochs_trained)


def read_history(npz, meta, name) -> dict:
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
    epochs = entry(npz, "history__epochs", name, (n,), np.int64)
    if n and (epochs[0] < 0 or np.any(np.diff(epochs) <= 0) or epochs[-1] >= meta["epochs_trained"]):
        raise ValueError(f"{name}: 'history__epochs' must increase from 0 up to epochs_trained - 1")
    values = {}
    for key in names:
        if not npz.has(f"history__{key}"):
            raise ValueError(f"{name}: missing array 'history__{key}'")
        values[key] = entry(npz, f"history__{key}", name, (n,), np.float64).tolist()
    return {"epochs": epochs.tolist(), "values": values}


def read_stopping(npz, meta, name, shapes, dtype) -> list[dict]:
    """The early stoppers' states, each with ``params``: its best epoch's (W, b) pairs as
    host arrays, or None when they are the checkpoint's own (or it keeps none)."""
    states = []
    for i, state in enumerate(meta.get("early_stopping", [])):
        params = None
        if state["params"]:
            flat = []
            for key, shape in shapes:
                if not npz.has(f"early{i}__{key}"):
                    raise ValueError(f"{name}: missing array 'early{i}__{key}'")
                flat.append(entry(npz, f"early{i}__{key}", name, shape, dtype))
            params = list(zip(flat[0::2], flat[1::2]))
        states.append({**state, "params": params})
    return states


def read_data(npz, meta, name, n_features) -> dict | None:
    """The saved ``data`` object and its vectors (float64, one value per input feature)."""
    if "data" not in meta:
        return None
    arrays = {key.removeprefix("data__"): entry(npz, key, name, (n_features,), np.float64)
              for key in npz.keys if key.startswith("data__")}
    return {"meta": meta["data"], "arrays": arrays}
