"""CSV, TSV and whitespace-separated tables of numbers, streamed into float64 chunks.

The text is never held whole: it is decoded as it is read (through a byte limit, so a
gzip bomb or an endless file stops with a message), split into fields in bounded
batches by :mod:`._records`, and rows are parsed :data:`FIELDS_PER_CHUNK` fields at a
time into float64 chunks. Peak memory is therefore about twice the float64 table (the
chunks, then ``X`` and ``y``) plus about a megabyte, whatever the file's size or shape.

The target column may hold text (``setosa``, ``True``): class labels, kept as text (one
small integer per row while reading, each distinct label once); other columns hold numbers.
"""

from __future__ import annotations

import io
import numbers
from typing import NamedTuple

import numpy as np

from .._safe_io import DataStream, LimitedReader, check_size, display_name, resolve_max_bytes
from ._records import Record, records
from ._targets import whole_numbers_as_labels
from .labels import label_text

FIELDS_PER_CHUNK = 1 << 14
"""Fields parsed (and float64 values stored) together: 128 KiB of floats, about 1 MiB of
field strings waiting to be parsed; small against any table worth streaming."""
_PREVIEW = 20  # column names quoted in messages


class Table(NamedTuple):
    """A table as read: features, the target column (None without one), and the names."""

    X: np.ndarray
    y: np.ndarray | None
    feature_names: list[str] | None  # from the header row; None without one
    target_name: str | None  # the target column's header name; None without a header or target


def read_csv(path, target: int | str = -1, header: bool | str = "auto", delimiter: str | None = ",", *,
             max_bytes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Read a table: one sample per row, one column is the target.

    Parameters
    ----------
    target : int or str
        Column holding ``y``: an index (negative counts from the end, the
        default ``-1`` is the last column) or a column name from the header
        (a name that appears more than once is refused as ambiguous).
    header : "auto", True or False
        Whether the first row holds column names. ``"auto"`` treats it as a
        header when any of its fields other than the target's is not a number
        (so a headerless file whose labels are words is read as data).
    delimiter : str or None
        Field separator, one character; ``None`` splits on runs of whitespace.
        Double quotes follow the csv module's rules in lines up to 1 Mi characters.
    max_bytes : int, optional
        Limit on the (decompressed) text and on the float64 table; default
        ``PORTABLE_BP_MAX_BYTES`` or 4 GiB.

    Blank lines are skipped; gzip-compressed files are read transparently; a UTF-8
    byte-order mark is ignored. Every feature value must be a finite number (NaN, inf and
    values beyond float64's range are refused with their line and column). ``y`` is
    int64 when every target value is a whole number below 2**53 in magnitude (class
    labels, exact), float64 when every one is a number (larger whole numbers cannot all
    be told apart in float64, so they stay regression targets rather than becoming wrong
    labels), and text (a NumPy unicode array) when any is not a number: class labels as
    written, numbers in their shortest form (``1.0`` is ``1``). An empty one is refused.

    Returns ``(X, y)``: ``X`` float64 ``(n, n_columns - 1)``, ``y`` ``(n,)``.
    """
    if target is None:
        raise TypeError("target must be a column index or name, got None (read_table reads none)")
    table = read_table(path, target, header, delimiter, max_bytes=max_bytes)
    assert table.y is not None
    return table.X, table.y


def read_table(path, target: int | str | None = -1, header: bool | str = "auto", delimiter: str | None = ",",
               *, max_bytes: int | None = None, empty_labels: bool = False) -> Table:
    """:func:`read_csv` with the column names: a :class:`Table`. ``target=None`` reads every
    column as a feature (``y`` is then None), as for data to predict on; ``empty_labels``
    lets target fields be empty (a target column to be ignored)."""
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
            layout = _first_record(first, header, target, name, limit, empty_labels)
            table = _Table(layout.width, layout.column, limit, name, first[0], layout.names, empty_labels)
            if layout.values is not None:
                table.add_values(first[0], layout.values, layout.label)
            for record in rows:
                table.add_record(record)
            table.flush()
        except UnicodeDecodeError as exc:
            raise ValueError(f"{name}: not a UTF-8 text file: {exc}") from None
    if table.count == 0:
        raise ValueError(f"{name}: empty CSV file: no data rows")
    (X, y), names = table.split(), layout.names
    if names is None or layout.column is None:
        return Table(X, y, names, None)
    return Table(X, y, names[:layout.column] + names[layout.column + 1:], names[layout.column])


def read_header(path, delimiter: str | None = ",", *, target: int | None = None,
                max_bytes: int | None = None) -> tuple[list[str] | None, int]:
    """The first row's names when it is a header (any field but the ``target`` column's is
    not a number), else None, and the table's width: what to match columns by before reading."""
    name = display_name(path)
    _check_arguments(None, "auto", delimiter)
    with DataStream(path, name) as stream:
        text = io.TextIOWrapper(io.BufferedReader(LimitedReader(stream, resolve_max_bytes(max_bytes))),
                                encoding="utf-8-sig")
        try:
            first = next(records(text, delimiter, name), None)
            if first is None:
                raise ValueError(f"{name}: empty CSV file: no rows")
            row = _FirstRow(None, "auto", resolve_max_bytes(max_bytes), name)
            for batch in first[1]:
                row.add(batch)
        except UnicodeDecodeError as exc:
            raise ValueError(f"{name}: not a UTF-8 text file: {exc}") from None
    column = None if target is None or not -row.width <= target < row.width else target % row.width
    return (row.names if row.is_header(column) else None), row.width


def _check_arguments(target, header, delimiter) -> None:
    """Argument mistakes are reported before the file is opened, not after reading it."""
    if header not in ("auto", True, False):
        raise ValueError(f"header must be 'auto', True or False, got {header!r}")
    if delimiter is not None and not (isinstance(delimiter, str) and len(delimiter) == 1
                                      and delimiter not in '"\r\n'):
        raise ValueError(f"delimiter must be one character other than a quote or newline, or None "
                         f"for whitespace; got {delimiter!r}")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (str, numbers.Integral))):
        raise TypeError(f"target must be a column index or name, got {target!r}")


class _Layout(NamedTuple):
    width: int
    column: int | None  # the target's index, None without a target
    values: np.ndarray | None  # the first row's values when it is data, not a header
    label: str | None  # the first row's target when it is data and not a number
    names: list[str] | None  # the header's names, None without a header


class _FirstRow:
    """What the first record says, gathered batch by batch: width, target-name matches, its
    fields (the names, if it is a header), its values and where it holds text."""

    def __init__(self, target, header, limit: int, name: str):
        self.target = target if isinstance(target, str) else None
        self.header, self.limit, self.name = header, limit, name
        self.width = 0
        self.matches: list[int] = []
        self.names: list[str] = []
        self.values: list = []
        self.text: list[int] = []  # the first two columns holding a non-empty non-number
        self.problem: tuple[int, str] | None = None  # the first field that is not a number

    def add(self, batch: list[str]) -> None:
        if self.target is not None and len(self.matches) < 2:
            self.matches += [self.width + i for i, f in enumerate(batch) if f.strip() == self.target]
        self.names += [f.strip() for f in batch]
        start, self.width = self.width, self.width + len(batch)
        if self.header is True:
            return
        check_size(8 * self.width, self.limit, self.name, "the first row as float64")
        values, bad = _parse(batch)
        self.text += [start + i for i in bad if batch[i].strip()][:2 - len(self.text)]
        if bad and self.problem is None:
            self.problem = (start + bad[0], batch[bad[0]])
        self.values.append(values)

    def is_header(self, column: int | None) -> bool:
        """True, False, or for "auto" whether any field but the target's is text."""
        if self.header != "auto":
            return bool(self.header)
        if column is None:
            return bool(self.text)
        return any(c != column for c in self.text)


def _first_record(record: Record, header, target, name: str, limit: int, empty_labels: bool) -> _Layout:
    """The table's width and target column, the header's names or the first row's values."""
    line, batches = record
    first = _FirstRow(target, header, limit, name)
    for batch in batches:
        first.add(batch)
    by_index = None if isinstance(target, str) or target is None else _index_column(name, target, first.width)
    is_header = first.is_header(by_index) if not isinstance(target, str) else first.is_header(None)
    column = _name_column(name, target, first, is_header) if isinstance(target, str) else by_index
    if is_header:
        return _Layout(first.width, column, None, None, first.names)
    label = None
    if first.problem is not None:
        at, field = first.problem
        if at != column:
            raise ValueError(f"{name}: non-numeric CSV value {field.strip()!r} on line {line}, "
                             f"column {at + 1}")
        label = _label(field, name, line, at, empty_labels)
    values = np.concatenate(first.values)
    if label is not None:
        values[column] = 0.0
    return _Layout(first.width, column, values, label, None)


def _index_column(name: str, target: int, width: int) -> int:
    if not -width <= target < width:
        raise ValueError(f"{name}: target column {target} out of range for {width} columns")
    return int(target) % width


def _name_column(name: str, target: str, first: _FirstRow, is_header: bool) -> int:
    """The target's index among ``first.width`` columns, by its name in the header."""
    if not is_header:
        raise ValueError(f"{name}: target {target!r} is a column name but the CSV has no header row")
    if not first.matches:
        more = ", ..." if first.width > _PREVIEW else ""
        raise ValueError(f"{name}: no column named {target!r}; columns are {first.names[:_PREVIEW]}{more}")
    if len(first.matches) > 1:
        raise ValueError(f"{name}: column name {target!r} appears more than once (columns "
                         f"{first.matches[0] + 1} and {first.matches[1] + 1}); give the target "
                         "as an index")
    return first.matches[0]


def _label(field: str, name: str, line: int, column: int, empty_ok: bool = False) -> str:
    """A target field that is not a number: a class label, unless it is empty."""
    label = field.strip()
    if not label and not empty_ok:
        raise ValueError(f"{name}: missing target value on line {line}, column {column + 1}")
    return label


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
    call per chunk; longer rows are parsed batch by batch into a chunk of their own. A
    target field that is not a number is a text label: its cell holds 0 and the chunk
    keeps (row, label code) for it, each distinct label stored once in ``labels``.
    """

    def __init__(self, width: int, column: int | None, limit: int, name: str, first_line: int,
                 names: list[str] | None = None, empty_labels: bool = False):
        self.width, self.column, self.limit, self.name = width, column, limit, name
        self.first_line, self.names, self.empty_labels = first_line, names, empty_labels
        self.rows_per_chunk = max(1, FIELDS_PER_CHUNK // width)
        self.chunks: list = []  # rows (k, width)
        self.texts: list = []  # per chunk: None, or (rows, codes) of its text labels
        self.labels: dict[str, int] = {}
        self.count = 0
        self._fields: list = []  # rows waiting to be parsed, and their line numbers
        self._lines: list[int] = []

    def add_values(self, line: int, values: np.ndarray, label: str | None) -> None:
        texts = None if label is None else ([0], [self._code(label)])
        self._store(values.reshape(1, -1), [line], texts)

    def _code(self, label: str) -> int:  # each distinct label stored once
        return self.labels.setdefault(label, len(self.labels))

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
        row, column, batches, texts = np.empty(self.width), 0, iter(batches), None
        for batch in batches:
            if column + len(batch) > self.width:
                self._ragged(line, column + len(batch) + sum(len(more) for more in batches))
            values, bad = _parse(batch)
            for i in bad:
                if column + i != self.column:
                    self._non_numeric(line, column + i, batch[i])
                label = _label(batch[i], self.name, line, column + i, self.empty_labels)
                values[i], texts = 0.0, ([0], [self._code(label)])
            row[column:column + len(batch)] = values
            column += len(batch)
        if column != self.width:
            self._ragged(line, column)
        self._store(row.reshape(1, -1), [line], texts)

    def flush(self) -> None:
        """Parse the waiting rows into a chunk."""
        if not self._lines:
            return
        fields, lines = self._fields, self._lines
        self._fields, self._lines = [], []
        values, bad = _parse(fields)
        rows, codes = [], []
        for at in bad:
            row, column = divmod(at, self.width)
            if column != self.column:
                self._non_numeric(lines[row], column, fields[at])
            rows.append(row)
            codes.append(self._code(_label(fields[at], self.name, lines[row], column, self.empty_labels)))
            values[at] = 0.0
        self._store(values.reshape(len(lines), self.width), lines, (rows, codes) if rows else None)

    def _store(self, rows: np.ndarray, lines, texts) -> None:
        """Keep parsed rows after the checks that need them whole: width, byte limit, finiteness."""
        if self.width < (1 if self.column is None else 2):
            raise ValueError(f"{self.name}: CSV needs at least 2 columns (features and target), "
                             f"has {self.width}")
        check_size(8 * self.width * (self.count + len(rows)), self.limit, self.name, "the table as float64")
        finite = np.isfinite(rows)
        if not finite.all():
            r, c = np.argwhere(~finite)[0]
            raise ValueError(f"{self.name}: non-finite CSV value ({rows[r, c]}) on line {lines[r]}, "
                             f"{self._column(c)}; NaN, inf and values beyond float64's range are refused")
        self.chunks.append(rows)
        self.texts.append(None if texts is None else (np.asarray(texts[0], np.int64),
                                                      np.asarray(texts[1], np.int64)))
        self.count += len(rows)

    def _column(self, column: int) -> str:
        """"column 3", with its header name when there is one: "column 3 ('petal_width')"."""
        return f"column {column + 1}" + (f" ({self.names[column]!r})" if self.names else "")

    def _non_numeric(self, line: int, column: int, field: str):
        raise ValueError(f"{self.name}: non-numeric CSV value {field.strip()!r} on line {line}, "
                         f"{self._column(column)}")

    def _ragged(self, line: int, fields: int):
        raise ValueError(f"{self.name}: ragged CSV: line {line} has {fields} fields, line "
                         f"{self.first_line} has {self.width}")

    def split(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``X`` (every column but the target's) and ``y``, freeing each chunk once copied."""
        column = self.column
        if column is None:
            X = np.concatenate(self.chunks) if len(self.chunks) > 1 else self.chunks[0]
            self.chunks = []
            return X, None
        X, y, start = np.empty((self.count, self.width - 1)), np.empty(self.count), 0
        text_rows, text_codes = [], []
        for part, texts in zip(self._drain(), self.texts):
            stop = start + len(part)
            y[start:stop] = part[:, column]
            X[start:stop, :column] = part[:, :column]
            X[start:stop, column:] = part[:, column + 1:]
            if texts is not None:
                text_rows.append(texts[0] + start)
                text_codes.append(texts[1])
            start = stop
        if not text_rows:
            return X, whole_numbers_as_labels(y)
        return X, _as_text(y, np.concatenate(text_rows), np.concatenate(text_codes), list(self.labels))

    def _drain(self):
        """The chunks in order, each let go once handed out."""
        self.chunks.reverse()
        while self.chunks:
            yield self.chunks.pop()


def _as_text(y: np.ndarray, rows: np.ndarray, codes: np.ndarray, labels: list[str]) -> np.ndarray:
    """The target as text labels: the text ones as written, the numbers in their shortest
    form (whole numbers without a fraction: ``1.0`` and ``1`` are one class, ``1``)."""
    is_text = np.zeros(len(y), bool)
    is_text[rows] = True
    numbers, where = np.unique(y[~is_text], return_inverse=True)
    texts = [label_text(v) for v in numbers.tolist()]
    out = np.empty(len(y), dtype=f"<U{max(len(t) for t in labels + texts)}")
    out[rows] = np.asarray(labels)[codes]
    if texts:
        out[~is_text] = np.asarray(texts)[where.reshape(-1)]
    return out
