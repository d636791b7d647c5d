"""The records of a delimited text stream, delivered field by field in bounded batches.

A CSV reader that builds a list of Python strings per field costs 15-20 times the
text, and per row is fine but per file or per giant line is not. Here the stream is
read one line at a time, and a line at most :data:`PIECE` characters long at a time:

* a line up to :data:`PIECE` characters is one batch of fields; if it contains a
  double quote (and a delimiter is set) it is split by the :mod:`csv` module, which
  may pull further lines for a quoted field with newlines (up to :data:`MAX_QUOTED`);
* a longer line is split piece by piece without quote handling, a partial last field
  carried to the next piece, so one row of a hundred million fields never exists as
  one list. No single field may exceed :data:`MAX_FIELD` characters (the csv module's
  own default limit).

Blank lines (nothing but whitespace and delimiters) are skipped, as the csv-based
reader always did. Line endings are ``\\n``, ``\\r\\n`` or ``\\r``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from itertools import chain
from typing import TextIO

PIECE = 1 << 20
"""Characters taken from a line at a time; shorter lines get full csv quoting rules."""
MAX_FIELD = 1 << 17
"""131072 characters: the csv module's default ``field_size_limit``."""
MAX_QUOTED = 1 << 22
"""Characters a quoted record (parsed whole by the csv module) may span, newlines included."""


Record = tuple[int, Iterable[list[str]]]
"""One non-blank record: ``(line, batches)``, the line it ends on and its fields in batches
(consume them in order). A line shorter than :data:`PIECE` comes as a list of one batch."""


def records(text: TextIO, delimiter: str | None, name: str) -> Iterator[Record]:
    """The non-blank records of ``text``; each record's batches must be consumed before the next.

    This loop runs once per line of a data file, so it stays plain: a line's fields are
    split once, and only a line whose first field is blank is checked field by field.
    """
    line = 0
    while True:
        piece = text.readline(PIECE)
        if not piece:
            return
        line += 1
        if piece[-1] == "\n" or len(piece) < PIECE:
            body = piece.removesuffix("\n")
            if delimiter is not None and '"' in body:
                fields, extra = _quoted(body, text, delimiter, name, line)
                line += extra
            else:
                fields = body.split(delimiter)
            if fields and (fields[0].strip() or any(field.strip() for field in fields)):
                yield line, [fields]
            continue
        record = _long_record(piece, text, delimiter, name, line)
        if record is not None:
            yield record
            for _ in record[1]:  # a consumer that stopped early must not desynchronise lines
                pass


def _quoted(body: str, text: TextIO, delimiter: str, name: str, line: int) -> tuple[list[str], int]:
    """Fields of a record with quotes, by csv's rules, and how many extra lines it spanned."""
    spanned = [0, len(body)]

    def lines():
        yield body + "\n"
        while True:
            more = text.readline(MAX_QUOTED)
            if not more:
                return
            spanned[0] += 1
            spanned[1] += len(more)
            if spanned[1] > MAX_QUOTED:
                raise ValueError(f"{name}: a quoted record starting on line {line} is still open after "
                                 f"{MAX_QUOTED:,} characters; unbalanced quotes?")
            yield more

    try:
        fields = next(csv.reader(lines(), delimiter=delimiter), [])
    except csv.Error as exc:
        raise ValueError(f"{name}: malformed CSV on line {line + spanned[0]}: {exc}") from None
    return fields, spanned[0]


def _long_record(first: str, text: TextIO, delimiter: str | None, name: str, line: int) -> Record | None:
    """A line longer than PIECE, streamed; None when it turns out blank."""
    pieces = _rest_of_line(first, text)
    empty_fields = 0
    for piece in pieces:
        content = piece.replace(delimiter, "") if delimiter is not None else piece
        if content.strip():
            batches = _field_batches(chain([piece], pieces), delimiter, name, line)
            leading = ([""] * min(PIECE, empty_fields - i) for i in range(0, empty_fields, PIECE))
            return line, chain(leading, batches)
        if delimiter is not None:
            empty_fields += piece.count(delimiter)  # fields before the first content are all empty
    return None


def _rest_of_line(first: str, text: TextIO) -> Iterator[str]:
    """``first`` and the following pieces of the same line, without its newline."""
    piece = first
    while True:
        if piece.endswith("\n"):
            yield piece[:-1]
            return
        yield piece
        if len(piece) < PIECE:
            return
        piece = text.readline(PIECE)
        if not piece:
            return


def _field_batches(pieces: Iterator[str], delimiter: str | None, name: str, line: int) -> Iterator[list[str]]:
    """Split a line's pieces into fields, carrying a field cut at a piece boundary forward."""
    carry = ""
    for piece in pieces:
        joined = carry + piece
        fields = joined.split(delimiter)
        ends_inside_field = delimiter is not None or not joined[-1:].isspace()
        carry = fields.pop() if fields and ends_inside_field else ""
        if len(carry) > MAX_FIELD:
            raise ValueError(f"{name}: field on line {line} is longer than {MAX_FIELD:,} characters")
        if fields:
            yield fields
    if carry or delimiter is not None:
        yield [carry]
