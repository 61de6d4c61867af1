"""Reading tabular data files: the cs224n task files, custom tasks' files and ``minbert predict --input``.

One reader, :func:`read_records`, serves every tabular file. Formats by suffix: ``.csv`` (comma),
``.tsv``/``.tab``/``.txt`` (tab), ``.jsonl``/``.ndjson`` (one JSON object per line; keys are the
column names). The cs224n files end in ``.csv`` but are tab-separated: they are read with
``fmt="tsv"``; their first column is an unnamed row index, and columns are found by header name,
so the malformed SST test header (an extra leading column) is read correctly.

**One record per physical line.** A line ends at LF, CRLF or a lone CR. A field holding a line
break is not supported (the cs224n files have none). Quotes are honoured within a line (csv
rules: a field starting with ``"`` is quoted, ``""`` inside it is one ``"``, so ``"a<TAB>b"`` is one
field holding a tab; a ``"`` inside an unquoted field is plain text). A field whose quotes do not
close on its own line, or text after a closing quote, makes that line a bad row
(``bad quoting``); the next line is read normally.

A UTF-8 byte order mark at the start of a file is dropped (all formats, the header included).
In CSV/TSV files the header is line 1; header names are stripped.

**Every data line is accounted for.** A data line is a physical line after the header (in JSONL,
any line) that is not empty once its line end is removed; an empty line is skipped and counted.
Each data line is either kept or reported as a bad row (:class:`BadRow`: file, 1-based physical
line, reason), so kept + bad = data lines; one summary line is logged per file,
``<file>: N data lines: K kept, B bad (+ E blank lines skipped)`` (INFO; WARNING when B > 0),
followed by the first 20 bad rows. With ``strict=True`` the first bad row raises
:class:`DataError`. A line of only spaces is a data line (and, in JSONL, a bad one).

Bad rows: bad quoting or JSON, a line that is not UTF-8 (JSONL), a JSON value that is not an
object or that names a key twice, a wrong number of fields, a missing or empty id, a missing or
non-string text, an empty text (unless ``keep_empty_text``), a missing or bad label.

An id that several kept rows share is kept in each and warned about once per file (the count of
such ids, the first of them and its first two lines).

Normalisation: ids, texts and labels are stripped of surrounding whitespace (:meth:`str.strip`);
nothing else changes. JSON numbers given as ids or labels are read as their text.

File-level problems always raise a one-line ``DataError``: a missing or empty file, an unknown
format, an unreadable header, one missing a column or naming a column that is read twice, a
CSV/TSV line that is not UTF-8 (its line is named), no usable row (the message gives the count
and the first bad row).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .batching import BadRow, RawSplit, require_file

log = logging.getLogger(__name__)

FORMATS = ("csv", "tsv", "jsonl")
_SUFFIX = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_SHOW_BAD = 20  # bad rows logged one by one per file
csv.field_size_limit(10_000_000)

# (line, row, reason): row is None for a bad row (reason given) and for a blank line (reason None)
_Item = tuple[int, dict | None, str | None]


def detect_format(path: str | os.PathLike, fmt: str = "auto") -> str:
    """``csv``, ``tsv`` or ``jsonl``: ``fmt`` itself, or (``auto``) from the file suffix.

    Raises:
        DataError: ``auto`` and the suffix is none of .csv, .tsv, .tab, .txt, .jsonl, .ndjson.
    """
    if fmt in FORMATS:
        return fmt
    if fmt != "auto":
        raise DataError(f"format {fmt!r} is not one of {['auto', *FORMATS]}")
    got = _SUFFIX.get(Path(path).suffix.lower())
    if got is None:
        raise DataError(
            f"{path}: cannot tell the format from the suffix {Path(path).suffix!r} (use .csv, .tsv or .jsonl)"
        )
    return got


def physical_lines(path: str | os.PathLike) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, bytes without the line end) per physical line of a file; LF, CRLF
    and a lone CR each end a line. A file ending in a line end has no empty last line."""
    n = 0
    with open(path, "rb") as fh:
        for piece in fh:  # split at LF
            ended = piece.endswith(b"\n")
            if ended:
                piece = piece[:-2] if piece.endswith(b"\r\n") else piece[:-1]
            parts = piece.split(b"\r")  # lone CRs
            if not ended and len(parts) > 1 and parts[-1] == b"":
                parts.pop()  # the file ends in a lone CR
            for part in parts:
                n += 1
                yield n, part


def _decode(raw: bytes, n: int) -> str:
    """A line as text; a BOM at the start of the file is dropped. Raises UnicodeDecodeError."""
    text = raw.decode("utf-8")
    return text[1:] if n == 1 and text.startswith("\ufeff") else text


def _delimited(path: Path, delimiter: str) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """(line, fields, reason) per physical line: fields None with a reason for a line that does
    not parse, fields None and reason None for an empty line.

    Raises:
        DataError: a line is not UTF-8 text.
    """
    for n, raw in physical_lines(path):
        try:
            text = _decode(raw, n)
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: line {n}: not UTF-8 text ({e.reason})") from None
        if not text:
            yield n, None, None
            continue
        try:
            yield n, next(csv.reader((text,), delimiter=delimiter, strict=True)), None
        except csv.Error as e:
            yield n, None, f"bad quoting ({e})"


def _table_rows(
    path: Path, delimiter: str, wanted: list[str], optional: set[str], fallbacks: dict[str, str]
) -> Iterator[_Item]:
    """Rows of a CSV/TSV file as ``{column: field}`` for the ``wanted`` columns (a column absent
    from the header is read from its fallback; ``optional`` ones may be absent altogether).

    Raises:
        DataError: the header cannot be read or lacks a wanted column; a line is not UTF-8.
    """
    lines = _delimited(path, delimiter)
    _, fields, reason = next(lines, (1, None, "the file is empty"))
    if fields is None:
        raise DataError(f"{path}: line 1: cannot read the header row ({reason or 'an empty line'})")
    header = [h.strip() for h in fields]
    col = {}
    for c in wanted:
        name = c if c in header else fallbacks.get(c)
        if header.count(name) > 1:
            raise DataError(f"{path}: line 1: the header names column {name!r} {header.count(name)} times")
        if name in header:
            col[c] = header.index(name)
        elif c not in optional:
            hint = ""
            if delimiter == "," and len(header) == 1 and "\t" in header[0]:
                hint = "; the file looks tab-separated: read it as TSV (minbert predict --input-format tsv)"
            raise DataError(f"{path}: line 1: header has no column {c!r} (header: {header}){hint}")
    for n, fields, reason in lines:
        if fields is None:
            yield n, None, reason
        elif len(fields) != len(header):
            yield n, None, f"expected {len(header)} fields, found {len(fields)}"
        else:
            yield n, {c: fields[i] for c, i in col.items()}, None


def _jsonl_rows(path: Path) -> Iterator[_Item]:
    """One JSON object per physical line (bad JSON, not UTF-8 or not an object: a bad row)."""
    for n, raw in physical_lines(path):
        try:
            text = _decode(raw, n)
        except UnicodeDecodeError as e:
            yield n, None, f"not UTF-8 text ({e.reason})"
            continue
        if not text:
            yield n, None, None
            continue
        try:
            obj = json.loads(text, object_pairs_hook=_unique_keys)
        except _Bad as e:
            yield n, None, str(e)
            continue
        except json.JSONDecodeError as e:
            yield n, None, f"not valid JSON ({e.msg})"
            continue
        except RecursionError:
            yield n, None, "JSON nested too deeply"
            continue
        if not isinstance(obj, dict):
            yield n, None, f"expected a JSON object, got {type(obj).__name__}"
            continue
        yield n, obj, None


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """A JSON object's dict, or _Bad where it names a key twice (json.loads would keep the last)."""
    obj = dict(pairs)
    if len(obj) < len(pairs):
        twice = next(k for i, (k, _) in enumerate(pairs) if any(k == j for j, _ in pairs[:i]))
        raise _Bad(f"key {twice!r} given twice in one object")
    return obj


def _as_text(value: object) -> str | None:
    """A field as a string: strings as they are, JSON numbers as their text, else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


class _Bad(Exception):
    """A row is bad; the message is the reason."""


@dataclass(frozen=True)
class _Spec:
    """What :func:`read_records` takes from each row (its arguments of the same names)."""

    text_columns: tuple[str, ...]
    label_column: str | None
    parse_label: Callable[[str], float | int] | None
    id_column: str | None
    id_optional: bool
    fallbacks: dict[str, str]
    keep_empty_text: bool


def _parse_row(row: dict, line: int, spec: _Spec) -> tuple[str, tuple[str, ...], object]:
    """(id, stripped texts, label value or None) of one row. Raises _Bad(reason)."""

    def get(c: str) -> object:
        return row[c] if c in row else row.get(spec.fallbacks.get(c, c))

    id_column = spec.id_column
    rid = str(line)
    if id_column and not (spec.id_optional and get(id_column) is None):
        rid = _field_text(get(id_column), "id", id_column, empty="empty")
    texts = []
    for c in spec.text_columns:
        t = get(c)
        if t is None:
            raise _Bad(f"missing text in column {c!r}")
        if not isinstance(t, str):
            raise _Bad(f"{c!r} is not a string")
        if not t.strip() and not spec.keep_empty_text:
            raise _Bad(f"empty text in column {c!r}")
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:  # a lone surrogate, e.g. "\ud800" in JSON
            raise _Bad(f"text in column {c!r} is not valid Unicode (a lone surrogate at character {e.start})") from None
        texts.append(t.strip())
    label = None
    c = spec.label_column
    if c:
        raw = _field_text(get(c), "label", c, empty="missing")
        try:
            label = spec.parse_label(raw)
        except ValueError as e:
            raise _Bad(f"bad label {raw!r} in column {c!r}: {e}") from None
    return rid, tuple(texts), label


def _field_text(value: object, what: str, column: str, empty: str) -> str:
    """A row's id or label (``what``) as stripped text.

    Raises:
        _Bad: ``missing <what>`` (absent or null), ``<empty> <what>`` (blank), or a JSON value
            that is neither a string nor a number.
    """
    text = _as_text(value)
    if text is None and value is not None:
        raise _Bad(f"{what} in column {column!r} is a JSON {_json_kind(value)}, not a string or number")
    if text is None or not text.strip():
        raise _Bad(f"{'missing' if value is None else empty} {what} in column {column!r}")
    return text.strip()


def _json_kind(value: object) -> str:
    """The JSON name of a parsed value's type (true/false: boolean)."""
    kinds = ((bool, "boolean"), (dict, "object"), (list, "array"), (str, "string"), (int | float, "number"))
    return next((name for t, name in kinds if isinstance(value, t)), type(value).__name__)


def _log_summary(path: Path, data_lines: int, kept: int, bad: list[BadRow], blank: int, empty_text: int) -> None:
    blanks = f" (+ {blank} blank line{'s' if blank != 1 else ''} skipped)" if blank else ""
    level = logging.WARNING if bad else logging.INFO
    log.log(level, "%s: %d data lines: %d kept, %d bad%s", path, data_lines, kept, len(bad), blanks)
    for b in bad[:_SHOW_BAD]:
        log.warning("skipped %s", b)
    if len(bad) > _SHOW_BAD:
        log.warning("... and %d more bad rows", len(bad) - _SHOW_BAD)
    if empty_text:
        log.warning(
            "%s: %d row(s) with an empty text are predicted from an empty input ([CLS] [SEP])", path, empty_text
        )


def _warn_repeated_ids(path: Path, ids: list[str], lines: list[int]) -> None:
    """One warning where kept rows share an id: how many ids, the first one and its first two lines."""
    first_line: dict[str, int] = {}
    repeated: dict[str, tuple[int, int]] = {}
    for rid, line in zip(ids, lines, strict=True):
        if rid in first_line:
            repeated.setdefault(rid, (first_line[rid], line))
        else:
            first_line[rid] = line
    if repeated:
        rid, (a, b) = next(iter(repeated.items()))
        log.warning("%s: %d id(s) appear on more than one row, all kept (the first: %r, lines %d and %d)",
                    path, len(repeated), rid, a, b)


def read_records(
    path: str | os.PathLike,
    text_columns: Sequence[str],
    label_column: str | None = None,
    parse_label: Callable[[str], float | int] | None = None,
    id_column: str | None = None,
    strict: bool = False,
    label_dtype: type[np.number] = np.int64,
    fmt: str = "auto",
    text_fallbacks: dict[str, str] | None = None,
    allow_empty: bool = False,
    id_optional: bool = False,
    keep_empty_text: bool = False,
) -> RawSplit:
    """Read a CSV, TSV or JSONL file into a :class:`RawSplit` (rules: the module docstring).

    Args:
        text_columns: the 1 or 2 text columns (keys of a JSONL object).
        label_column: the label column, or None for an unlabelled file.
        parse_label: maps the label's stripped text to a value; raises ``ValueError(reason)``.
        id_column: the id column, or None: each row's id is its line number.
        id_optional: a row (or a whole CSV/TSV file) without ``id_column`` gets its line number.
        fmt: ``auto`` (by suffix), ``csv``, ``tsv`` (the cs224n files) or ``jsonl``.
        text_fallbacks: ``{column: other}``: read ``other`` where ``column`` is absent.
        allow_empty: return an empty split instead of raising when no row is usable.
        keep_empty_text: keep a row whose text is empty or whitespace as ``""`` (file inference:
            every id gets a prediction) and log one warning with their count; else a bad row.

    Returns:
        RawSplit: ``ids`` (str), ``texts`` (tuples of 1 or 2 stripped strings), ``labels`` as a
        ``label_dtype`` array (None without ``label_column``), ``bad_rows``, ``data_lines``
        (= kept + bad) and ``blank_lines``.

    Raises:
        DataError: a file-level problem (module docstring), or (``strict``) any bad row.
    """
    path = Path(path)
    kind = detect_format(path, fmt)
    require_file(path)
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    fallbacks = dict(text_fallbacks or {})
    spec = _Spec(tuple(text_columns), label_column, parse_label, id_column, id_optional, fallbacks, keep_empty_text)
    if kind == "jsonl":
        rows = _jsonl_rows(path)
    else:
        wanted = [c for c in (id_column, *text_columns, label_column) if c]
        optional = {id_column} if id_optional else set()
        rows = _table_rows(path, "," if kind == "csv" else "\t", wanted, optional, fallbacks)
    ids, lines, texts, labels, bad = [], [], [], [], []
    data_lines = blank = empty_text = 0
    for line, row, reason in rows:
        if row is None and reason is None:
            blank += 1
            continue
        data_lines += 1
        try:
            if reason is not None:
                raise _Bad(reason)
            rid, tx, label = _parse_row(row, line, spec)
        except _Bad as e:
            b = BadRow(str(path), line, str(e))
            if strict:
                raise DataError(f"{b} (strict mode)") from None
            bad.append(b)
            continue
        ids.append(rid)
        lines.append(line)
        texts.append(tx)
        empty_text += not all(tx)
        if label_column:
            labels.append(label)
    if not ids and not allow_empty:  # one line: the count and the first bad row
        first = f"; the first: line {bad[0].line}: {bad[0].reason}" if bad else ""
        raise DataError(f"{path}: no usable rows ({len(bad)} bad of {data_lines} data lines{first})")
    _log_summary(path, data_lines, len(ids), bad, blank, empty_text)
    if id_column:
        _warn_repeated_ids(path, ids, lines)
    arr = np.asarray(labels, dtype=label_dtype) if label_column else None
    return RawSplit(str(path), ids, texts, arr, bad, data_lines=data_lines, blank_lines=blank)
