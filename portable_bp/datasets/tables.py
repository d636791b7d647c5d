"""CSV and other delimited text tables of numbers."""

from __future__ import annotations

import csv
import io
import os

import numpy as np

from ._targets import integral_as_int
from .idx import _read_bytes


def read_csv(path, target=-1, header="auto", delimiter=","):
    """Read a numeric table: one sample per row, one column is the target.

    Parameters
    ----------
    target : int or str
        Column holding ``y``: an index (negative counts from the end, the
        default ``-1`` is the last column) or a column name from the header.
    header : "auto", True or False
        Whether the first row holds column names. ``"auto"`` treats it as a
        header when any of its fields is not a number.
    delimiter : str or None
        Field separator; ``None`` splits on runs of whitespace.

    Blank lines are skipped; gzip-compressed files are read transparently.
    ``y`` is int64 when every target value is a whole number (class labels),
    float64 otherwise.

    Returns ``(X, y)``: ``X`` float64 ``(n, n_columns - 1)``, ``y`` ``(n,)``.
    """
    name = os.fspath(path)
    if header not in ("auto", True, False):
        raise ValueError(f"header must be 'auto', True or False, got {header!r}")
    rows = _read_rows(path, delimiter)  # list of (line_number, fields)
    if not rows:
        raise ValueError(f"{name}: empty CSV file: no rows")

    first_line, first = rows[0]
    width = len(first)
    for line, fields in rows[1:]:
        if len(fields) != width:
            raise ValueError(
                f"{name}: ragged CSV: line {line} has {len(fields)} fields, "
                f"line {first_line} has {width}"
            )

    if header == "auto":
        # a header has a non-numeric name; an empty field is missing data, reported below
        header = any(field.strip() and not _is_number(field) for field in first)
    columns = [field.strip() for field in first] if header else None
    body = rows[1:] if header else rows
    if not body:
        raise ValueError(f"{name}: empty CSV file: no data rows")
    if width < 2:
        raise ValueError(
            f"{name}: CSV needs at least 2 columns (features and target), "
            f"has {width}"
        )

    table = np.empty((len(body), width), dtype=np.float64)
    for i, (line, fields) in enumerate(body):
        for j, field in enumerate(fields):
            try:
                table[i, j] = float(field)
            except ValueError:
                raise ValueError(
                    f"{name}: non-numeric CSV value {field.strip()!r} on "
                    f"line {line}, column {j + 1}"
                ) from None

    column = _target_column(name, target, columns, width)
    y = table[:, column]
    X = np.delete(table, column, axis=1)
    return X, integral_as_int(y)


def _read_rows(path, delimiter):
    """Return ``[(line_number, fields), ...]`` for the non-blank lines."""
    name = os.fspath(path)
    try:
        text = _read_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{name}: not a UTF-8 text file: {exc}") from exc
    if delimiter is None:
        lines = enumerate(text.splitlines(), start=1)
        return [(n, line.split()) for n, line in lines if line.strip()]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        return [
            (reader.line_num, fields)
            for fields in reader
            if any(field.strip() for field in fields)
        ]
    except csv.Error as exc:
        raise ValueError(f"{name}: malformed CSV: {exc}") from exc


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def _target_column(name, target, columns, width):
    if isinstance(target, str):
        if columns is None:
            raise ValueError(
                f"{name}: target {target!r} is a column name but the CSV has "
                "no header row"
            )
        if target not in columns:
            raise ValueError(
                f"{name}: no column named {target!r}; columns are {columns}"
            )
        return columns.index(target)
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise TypeError(f"target must be a column index or name, got {target!r}")
    if not -width <= target < width:
        raise ValueError(
            f"{name}: target column {target} out of range for {width} columns"
        )
    return int(target) % width
