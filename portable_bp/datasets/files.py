"""``load_file``: one entry point that recognises a data file by its content."""

from __future__ import annotations

import os
import re

import numpy as np

from .._safe_io import display_name, peek, resolve_max_bytes
from .._safe_io.npz import ZIP_SIGNATURES
from .idx import idx_features, load_idx_pair, looks_like_idx, read_idx
from .npz import read_npz, read_npz_features
from .tables import Table, read_header, read_table

_IDX_NAME = re.compile(r"(\.idx\d*|-ubyte)(\.gz)?$", re.IGNORECASE)


def load_file(path, labels=None, *, target: int | str = -1, header: bool | str = "auto",
              delimiter: str | None = None, x_key: str = "X", y_key: str = "y",
              max_bytes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Load ``(X, y)`` from a local file, choosing the reader by content.

    * NPZ (zip archive): :func:`read_npz` with ``x_key`` / ``y_key``.
    * IDX (header of two zero bytes, a known type code and a dimension
      count; plain or gzip): :func:`load_idx_pair`. IDX keeps images and
      labels in two files, so give the labels file as ``labels=`` or join
      the two paths with a comma: ``"train-images.idx3-ubyte,train-labels.idx1-ubyte"``.
      A file that was evidently meant as IDX (its name ends in ``.idx``, ``.idx3``,
      ``-ubyte``, optionally ``.gz``, or it starts with two zero bytes, which no text
      does) but has a bad header gets the IDX reader's message, not a CSV one.
    * anything else is read as a text table by :func:`read_csv` with
      ``target`` and ``header``. ``delimiter=None`` picks one: tab for
      ``.tsv`` (or ``.tsv.gz``), comma when the first non-blank line has one, otherwise runs
      of whitespace.

    ``labels`` is only meaningful for IDX; giving it for another format is
    an error rather than being silently ignored. ``max_bytes`` is passed to the
    reader (default ``PORTABLE_BP_MAX_BYTES`` or 4 GiB).
    """
    table = load_table(path, labels, target=target, header=header, delimiter=delimiter, x_key=x_key,
                       y_key=y_key, max_bytes=max_bytes)
    assert table.y is not None
    return table.X, table.y


def load_table(path, labels=None, *, target: int | str | None = -1, header: bool | str = "auto",
               delimiter: str | None = None, x_key: str = "X", y_key: str = "y",
               max_bytes: int | None = None, empty_labels: bool = False) -> Table:
    """:func:`load_file`'s data as a :class:`~portable_bp.datasets.tables.Table`, with the
    header's column names for a text table (None for NPZ and IDX). ``target=None`` reads
    features only, as for data to predict on: every column of a text table, the NPZ's
    ``x_key`` alone, IDX images without a labels file (one given is ignored). ``empty_labels``:
    see :func:`~portable_bp.datasets.tables.read_table`."""
    if labels is None and isinstance(path, str) and "," in path \
            and not os.path.exists(path):
        path, labels = (part.strip() for part in path.split(",", 1))
    name = display_name(path)
    limit = resolve_max_bytes(max_bytes)
    head = peek(path, 4, name)

    if head in ZIP_SIGNATURES:
        _no_labels_file(name, labels, "an .npz archive")
        if target is None:
            return Table(read_npz_features(path, x_key=x_key, max_bytes=limit), None, None, None)
        return Table(*read_npz(path, x_key=x_key, y_key=y_key, max_bytes=limit), None, None)
    if looks_like_idx(head) or _IDX_NAME.search(name) or head[:2] == b"\0\0":
        if not looks_like_idx(head):
            read_idx(path, max_bytes=limit)  # raises: says what is wrong with the header
        if target is None:
            return Table(idx_features(read_idx(path, max_bytes=limit), name, limit), None, None, None)
        if labels is None:
            raise ValueError(
                f"{name}: IDX file holds only images or only labels; pass "
                "the labels file too (labels=... or 'images,labels')"
            )
        return Table(*load_idx_pair(path, labels, max_bytes=limit), None, None)
    _no_labels_file(name, labels, "a text table")
    if delimiter is None:
        delimiter = _guess_delimiter(path, name)
    return read_table(path, target=target, header=header, delimiter=delimiter, max_bytes=limit,
                      empty_labels=empty_labels)


def table_header(path, *, target: int | None = None,
                 max_bytes: int | None = None) -> tuple[list[str] | None, int] | None:
    """A text table's header names (None when its first row is data) and its width; None
    for an NPZ or IDX file. The first row is a header when any field but the ``target``
    column's (an index, if given) is not a number."""
    if not is_text_table(path):
        return None
    name = display_name(path)
    return read_header(path, _guess_delimiter(path, name), target=target, max_bytes=resolve_max_bytes(max_bytes))


def is_text_table(path) -> bool:
    """Whether :func:`load_table` reads ``path`` as a text table (not NPZ, not IDX: those have
    no columns to name or index), by the same signs it uses."""
    if isinstance(path, str) and "," in path and not os.path.exists(path):
        return False  # "images,labels": an IDX pair
    head = peek(path, 4, display_name(path))
    return not (head in ZIP_SIGNATURES or looks_like_idx(head) or _IDX_NAME.search(display_name(path))
                or head[:2] == b"\0\0")


def _no_labels_file(name, labels, kind):
    """A labels file given for a format that does not use one is an error, not ignored."""
    if labels is not None:
        raise ValueError(
            f"{name}: a separate labels file ({display_name(labels)}) is only "
            f"used with IDX images, but this file is {kind}"
        )


def _guess_delimiter(path, name):
    """Tab for .tsv(.gz); else comma if the first non-blank line has one, else whitespace."""
    if name.lower().removesuffix(".gz").endswith(".tsv"):
        return "\t"
    try:
        text = peek(path, 65536, name).decode("utf-8-sig", errors="replace")
    except ValueError:
        return ","  # let read_csv report the problem
    for line in text.splitlines():
        if line.strip():
            return "," if "," in line else None
    return ","
