"""CSV, TSV and whitespace-separated tables of numbers, streamed into float64 chunks.

The text is never held whole: it is decoded as it is read (through a byte limit, so a
gzip bomb or an endless file stops with a message), split into fields in bounded
batches by :mod:`._records`, and rows are parsed :data:`FIELDS_PER_CHUNK` fields at a
time into float64 chunks. Peak memory is therefore about twice the float64 table (the
chunks, then ``X`` and ``y``) plus about a megabyte, whatever the file's size or shape.
"""

from __future__ import annotations

import io
import numbers
from typing import Any, NamedTuple

import numpy as np

from .._safe_io import DataStream, LimitedReader, check_size, display_name, resolve_max_bytes
from ._records import Record, records
from ._targets import whole_numbers_as_labels

FIELDS_PER_CHUNK = 1 << 14
"""Fields parsed (and float64 values stored) together: 128 KiB of floats, about 1 MiB of
field strings waiting to be parsed; small against any table worth streaming."""
_PREVIEW = 20  # column names quoted in messages


def read_csv(path, target: int | str = -1, header: bool | str = "auto", delimiter: str | None = ",", *,
             max_bytes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a numeric table: one sample per row, one column is the target.

    Parameters
    ----------
    target : int or str
        Column holding ``y``: an index (negative counts from the end, the
        default ``-1`` is the last column) or a column name from the header
        (a name that appears more than once is refused as ambiguous).
    header : "auto", True or False
        Whether the first row holds column names. ``"auto"`` treats it as a
        header when any of its fields is not a number.
    delimiter : str or None
        Field separator, one character; ``None`` splits on runs of whitespace.
        Double quotes follow the csv module's rules in lines up to 1 Mi characters.
    max_bytes : int, optional
        Limit on the (decompressed) text and on the float64 table; default
        ``PORTABLE_BP_MAX_BYTES`` or 4 GiB.

    Blank lines are skipped; gzip-compressed files are read transparently; a UTF-8
    byte-order mark is ignored. Every value must be a finite number (NaN, inf and
    values beyond float64's range are refused with their line and column). ``y`` is
    int64 when every target value is a whole number below 2**53 in magnitude (class
    labels, exact), float64 otherwise (larger whole numbers cannot all be told apart
    in float64, so they stay regression targets rather than becoming wrong labels).

    Returns ``(X, y)``: ``X`` float64 ``(n, n_columns - 1)``, ``y`` ``(n,)``.
    """
    name = display_name(path)
    _check_arguments(target, header, delimiter)
    limit = resolve_max_bytes(max_bytes)
    with DataStream(path, name) as stream:
        text = io.TextIOWrapper(io.BufferedReader(LimitedReader(stream, limit)), encoding="utf-8-sig")
        try:
            rows = records(text, delimiter, name)
            first = next(rows, None)
            if first is None:
                raise ValueError(f"{name}: empty CSV file: no rows")
            layout = _first_record(first, header, target, name, limit)
            table = _Table(layout.width, limit, name, first[0])
            if layout.values is not None:
                table.add_values(first[0], layout.values)
            for record in rows:
                table.add_record(record)
            table.flush()
        except UnicodeDecodeError as exc:
            raise ValueError(f"{name}: not a UTF-8 text file: {exc}") from None
    if table.count == 0:
        raise ValueError(f"{name}: empty CSV file: no data rows")
    X, y = table.split(layout.column)
    return X, whole_numbers_as_labels(y)


def _check_arguments(target, header, delimiter) -> None:
    """Argument mistakes are reported before the file is opened, not after reading it."""
    if header not in ("auto", True, False):
        raise ValueError(f"header must be 'auto', True or False, got {header!r}")
    if delimiter is not None and not (isinstance(delimiter, str) and len(delimiter) == 1
                                      and delimiter not in '"\r\n'):
        raise ValueError(f"delimiter must be one character other than a quote or newline, or None "
                         f"for whitespace; got {delimiter!r}")
    if isinstance(target, bool) or not isinstance(target, (str, numbers.Integral)):
        raise TypeError(f"target must be a column index or name, got {target!r}")


class _Layout(NamedTuple):
    width: int
    column: int
    values: np.ndarray | None  # the first row's values when it is data, not a header


class _FirstRow:
    """What the first record says, gathered batch by batch: width, target-name matches, a
    preview of the names, and its values while it still looks like data."""

    def __init__(self, target, header, limit: int, name: str):
        self.target = target if isinstance(target, str) else None
        self.auto, self.as_data, self.limit, self.name = header == "auto", header is not True, limit, name
        self.width = 0
        self.matches: list[int] = []
        self.preview: list[str] = []
        self.values: Any = []  # None once the row turns out to be a header
        self.problem: tuple[int, str] | None = None

    def add(self, batch: list[str]) -> None:
        if self.target is not None and len(self.matches) < 2:
            self.matches += [self.width + i for i, f in enumerate(batch) if f.strip() == self.target]
        if len(self.preview) < _PREVIEW:
            self.preview += [f.strip() for f in batch[:_PREVIEW - len(self.preview)]]
        start, self.width = self.width, self.width + len(batch)
        if not self.as_data:
            return
        check_size(8 * self.width, self.limit, self.name, "the first row as float64")
        values, bad = _parse(batch)
        if bad and self.auto and any(batch[i].strip() for i in bad):
            self.as_data, self.values = False, None  # a non-empty non-number: a header row
            return
        if bad and self.problem is None:
            self.problem = (start + bad[0], batch[bad[0]])
        self.values.append(values)


def _first_record(record: Record, header, target, name: str, limit: int) -> _Layout:
    """The table's width and target column, and the first row's values unless it is a header."""
    line, batches = record
    first = _FirstRow(target, header, limit, name)
    for batch in batches:
        first.add(batch)
    if first.as_data and first.problem is not None:
        column, field = first.problem
        raise ValueError(f"{name}: non-numeric CSV value {field.strip()!r} on line {line}, "
                         f"column {column + 1}")
    column = _target_column(name, target, first, is_header=not first.as_data)
    values = np.concatenate(first.values) if first.as_data else None
    return _Layout(first.width, column, values)


def _target_column(name: str, target, first: _FirstRow, is_header: bool) -> int:
    """The target's index among ``first.width`` columns, by name (header only) or by index."""
    if isinstance(target, str):
        if not is_header:
            raise ValueError(f"{name}: target {target!r} is a column name but the CSV has no header row")
        if not first.matches:
            more = ", ..." if first.width > len(first.preview) else ""
            raise ValueError(f"{name}: no column named {target!r}; columns are {first.preview}{more}")
        if len(first.matches) > 1:
            raise ValueError(f"{name}: column name {target!r} appears more than once (columns "
                             f"{first.matches[0] + 1} and {first.matches[1] + 1}); give the target "
                             "as an index")
        return first.matches[0]
    if not -first.width <= target < first.width:
        raise ValueError(f"{name}: target column {target} out of range for {first.width} columns")
    return int(target) % first.width


def _parse(batch: list[str]) -> tuple[np.ndarray, list[int]]:
    """The fields as float64 (NaN where a field is not a number) and the indices of those fields."""
    try:
        return np.fromiter(map(float, batch), np.float64, len(batch)), []
    except ValueError:
        pass
    values, bad = np.empty(len(batch)), []
    for i, field in enumerate(batch):
        try:
            values[i] = float(field)
        except ValueError:
            values[i] = np.nan
            bad.append(i)
    return values, bad


class _Table:
    """Rows of floats in chunks of about FIELDS_PER_CHUNK values: memory grows with the
    data, and the whole table is never copied while it is being read.

    Rows that arrive as one batch of the right width (every line shorter than 1 Mi
    characters) are parsed a chunk at a time, one ``float`` call per field and one NumPy
    call per chunk; longer rows are parsed batch by batch into a chunk of their own.
    """

    def __init__(self, width: int, limit: int, name: str, first_line: int):
        self.width, self.limit, self.name, self.first_line = width, limit, name, first_line
        self.rows_per_chunk = max(1, FIELDS_PER_CHUNK // width)
        self.chunks: list = []  # (rows (k, width), their line numbers (k,))
        self.count = 0
        self._fields: list = []  # rows waiting to be parsed, and their line numbers
        self._lines: list[int] = []

    def add_values(self, line: int, values: np.ndarray) -> None:
        self._store(values.reshape(1, -1), [line])

    def add_record(self, record: Record) -> None:
        """Queue a one-batch row of the right width for parsing in bulk; parse anything else now."""
        line, batches = record
        if type(batches) is list and len(batches[0]) == self.width:
            self._fields += batches[0]
            self._lines.append(line)
            if len(self._lines) == self.rows_per_chunk:
                self.flush()
            return
        self.flush()
        row, column, batches = np.empty(self.width), 0, iter(batches)
        for batch in batches:
            if column + len(batch) > self.width:
                self._ragged(line, column + len(batch) + sum(len(more) for more in batches))
            values, bad = _parse(batch)
            if bad:
                self._non_numeric(line, column + bad[0], batch[bad[0]])
            row[column:column + len(batch)] = values
            column += len(batch)
        if column != self.width:
            self._ragged(line, column)
        self._store(row.reshape(1, -1), [line])

    def flush(self) -> None:
        """Parse the waiting rows into a chunk."""
        if not self._lines:
            return
        fields, lines = self._fields, self._lines
        self._fields, self._lines = [], []
        values, bad = _parse(fields)
        if bad:
            row, column = divmod(bad[0], self.width)
            self._non_numeric(lines[row], column, fields[bad[0]])
        self._store(values.reshape(len(lines), self.width), lines)

    def _store(self, rows: np.ndarray, lines) -> None:
        """Keep parsed rows after the checks that need them whole: width, byte limit, finiteness."""
        if self.width < 2:
            raise ValueError(f"{self.name}: CSV needs at least 2 columns (features and target), "
                             f"has {self.width}")
        check_size(8 * self.width * (self.count + len(rows)), self.limit, self.name, "the table as float64")
        finite = np.isfinite(rows)
        if not finite.all():
            r, c = np.argwhere(~finite)[0]
            raise ValueError(f"{self.name}: non-finite CSV value ({rows[r, c]}) on line {lines[r]}, "
                             f"column {c + 1}; NaN, inf and values beyond float64's range are refused")
        self.chunks.append(rows)
        self.count += len(rows)

    def _non_numeric(self, line: int, column: int, field: str):
        raise ValueError(f"{self.name}: non-numeric CSV value {field.strip()!r} on line {line}, "
                         f"column {column + 1}")

    def _ragged(self, line: int, fields: int):
        raise ValueError(f"{self.name}: ragged CSV: line {line} has {fields} fields, line "
                         f"{self.first_line} has {self.width}")

    def split(self, column: int) -> tuple[np.ndarray, np.ndarray]:
        """``X`` (every column but ``column``) and ``y``, freeing each chunk once copied."""
        X, y, start = np.empty((self.count, self.width - 1)), np.empty(self.count), 0
        self.chunks.reverse()
        while self.chunks:
            part = self.chunks.pop()
            stop = start + len(part)
            y[start:stop] = part[:, column]
            X[start:stop, :column] = part[:, :column]
            X[start:stop, column:] = part[:, column + 1:]
            start = stop
        return X, y
