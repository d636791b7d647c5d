"""NumPy ``.npz`` archives holding ``X`` and ``y``."""

from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

from ._targets import as_targets


def read_npz(path, x_key="X", y_key="y"):
    """Read ``X`` and ``y`` arrays from a NumPy ``.npz`` archive.

    Loaded with ``allow_pickle=False``: an archive is data, and unpickling
    could run arbitrary code, so object arrays are rejected. ``X`` is
    returned as float64 with shape ``(n, features)`` (a 1-D ``X`` becomes one
    column, trailing dimensions are flattened); integer or boolean ``y``
    becomes int64 class labels, floating ``y`` stays float64 targets.
    """
    name = os.fspath(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{name}: cannot read as .npz: {exc}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise ValueError(f"{name}: a single .npy array, not an .npz archive")
    with archive:
        keys = list(archive.files)
        for key in (x_key, y_key):
            if key not in keys:
                raise ValueError(
                    f"{name}: missing key {key!r} in .npz; keys present: {keys}"
                )
        try:
            X, y = archive[x_key], archive[y_key]
        except ValueError as exc:
            if "pickle" not in str(exc):
                raise ValueError(f"{name}: corrupt array in .npz: {exc}") from exc
            raise ValueError(
                f"{name}: .npz holds object arrays, which need pickle; "
                "refusing to load them (save plain numeric arrays instead)"
            ) from exc
        except (OSError, zipfile.BadZipFile, zlib.error) as exc:
            raise ValueError(f"{name}: corrupt .npz archive: {exc}") from exc
    X, y = _as_features(name, X), as_targets(y, name)
    if len(X) != len(y):
        raise ValueError(f"{name}: {x_key!r} has {len(X)} samples but {y_key!r} has {len(y)}")
    return X, y


def _as_features(name, X):
    if X.ndim == 0 or not (X.dtype.kind in "biuf"):
        raise ValueError(
            f"{name}: X must be a numeric array with a sample axis, got "
            f"dtype {X.dtype} shape {X.shape}"
        )
    return X.reshape(len(X), -1).astype(np.float64)
