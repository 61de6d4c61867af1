"""Reading user data files: CSV, TSV or JSONL with a column mapping.

Used by custom tasks (:mod:`minbert.custom`) and by ``minbert predict --input``. Like
:func:`minbert.data.batching.read_table`, a bad row (bad quoting or JSON, wrong number of fields, a
missing or empty text, a bad label) is reported with file, line (1-based physical line; a CSV
header is line 1) and reason, then skipped; with ``strict=True`` the first bad row raises
:class:`DataError`. File-level problems (missing or empty file, unknown format, a missing
column in the header, no usable row) always raise a one-line ``DataError``.

Formats by suffix: ``.csv`` (comma), ``.tsv``/``.tab``/``.txt`` (tab), ``.jsonl``/``.ndjson``
(one JSON object per line; keys are the column names; blank lines are ignored).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ..errors import DataError
from .batching import BadRow, RawSplit, _first_non_utf8_line

log = logging.getLogger(__name__)

FORMATS = ("csv", "tsv", "jsonl")
_SUFFIX = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".txt": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


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
        raise DataError(f"{path}: cannot tell the format from the suffix {Path(path).suffix!r} (use .csv, .tsv or .jsonl)")
    return got


def _delimited(path: Path, delimiter: str) -> Iterator[tuple[int, dict | None, str | None]]:
    """(line, {column: field}, error) per record; the first item is (1, header as a dict of
    name -> name, None)."""
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh, delimiter=delimiter, strict=True)
        header: list[str] | None = None
        prev = 0
        while True:
            start = prev + 1
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as e:
                prev = reader.line_num
                if header is None:
                    raise DataError(f"{path}: line 1: cannot read the header row ({e})") from None
                yield start, None, f"bad quoting ({e})"
                continue
            except UnicodeDecodeError as e:
                line = _first_non_utf8_line(path) or prev + 1
                raise DataError(f"{path}: line {line}: not UTF-8 text ({e.reason})") from None
            prev = reader.line_num
            if header is None:
                header = [h.strip() for h in row]
                yield start, {h: h for h in header}, None
                continue
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line
            if len(row) != len(header):
                yield start, None, f"expected {len(header)} fields, found {len(row)}"
                continue
            yield start, dict(zip(header, row)), None


def _jsonl(path: Path) -> Iterator[tuple[int, dict | None, str | None]]:
    with open(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield n, None, f"not UTF-8 text ({e.reason})"
                continue
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                yield n, None, f"not valid JSON ({e.msg})"
                continue
            if not isinstance(obj, dict):
                yield n, None, f"expected a JSON object, got {type(obj).__name__}"
                continue
            yield n, obj, None


def _as_text(value) -> str | None:
    """A field as a string: strings as they are, JSON numbers as their text, else None."""
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return None


def read_records(
    path: str | os.PathLike,
    text_columns: Sequence[str],
    label_column: str | None = None,
    parse_label: Callable[[str], float | int] | None = None,
    id_column: str | None = None,
    strict: bool = False,
    label_dtype=np.int64,
    fmt: str = "auto",
    text_fallbacks: dict[str, str] | None = None,
    allow_empty: bool = False,
    id_optional: bool = False,
    log_bad: bool = True,
) -> RawSplit:
    """Read a CSV, TSV or JSONL file into a :class:`RawSplit`.

    Args:
        text_columns: the 1 or 2 text columns (keys of a JSONL object).
        label_column: the label column, or None for an unlabelled file.
        parse_label: maps the label's text to a value; raises ``ValueError(reason)``.
        id_column: the id column, or None: each row's id is its line number.
        id_optional: a row (or a whole CSV/TSV file) without ``id_column`` gets its line number.
        fmt: ``auto`` (by suffix), ``csv``, ``tsv`` or ``jsonl``.
        text_fallbacks: ``{column: other}``: read ``other`` where ``column`` is absent.
        allow_empty: return an empty split instead of raising when no row is usable.
        log_bad: log the bad rows (up to 20) as warnings.

    Returns:
        RawSplit: ``ids`` (str), ``texts`` (tuples of 1 or 2 stripped strings), ``labels`` as a
        ``label_dtype`` array (None without ``label_column``), ``bad_rows``.

    Raises:
        DataError: the file is missing or empty, its format is unknown, a column is missing
        from a CSV/TSV header, no row is usable, or (``strict``) any row is bad.
    """
    path = Path(path)
    kind = detect_format(path, fmt)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    fallbacks = dict(text_fallbacks or {})
    wanted = [c for c in (None if id_optional else id_column, *text_columns, label_column) if c]
    ids, texts, labels, bad = [], [], [], []

    def reject(line: int, reason: str) -> None:
        b = BadRow(str(path), line, reason)
        if strict:
            raise DataError(f"{b} (strict mode)")
        bad.append(b)

    rows = _jsonl(path) if kind == "jsonl" else _delimited(path, "," if kind == "csv" else "\t")
    if kind != "jsonl":
        _, header, _ = next(rows, (1, None, None))
        if header is None:
            raise DataError(f"{path}: line 1: cannot read the header row")
        for c in wanted:
            if c not in header and not (c in fallbacks and fallbacks[c] in header):
                raise DataError(f"{path}: line 1: header has no column {c!r} (header: {list(header)})")
    for line, row, err in rows:
        if err is not None:
            reject(line, err)
            continue
        get = lambda c: row[c] if c in row else row.get(fallbacks.get(c, c))  # noqa: E731
        if id_column and id_optional and get(id_column) is None:
            rid = str(line)
        elif id_column:
            rid = _as_text(get(id_column))
            if rid is None or not rid.strip():
                reject(line, f"missing or empty {id_column!r}")
                continue
            rid = rid.strip()
        else:
            rid = str(line)
        tx = []
        for c in text_columns:
            t = get(c)
            if not isinstance(t, str) or not t.strip():
                tx = None
                reject(line, f"missing or empty {c!r}" if t is None or isinstance(t, str) else f"{c!r} is not a string")
                break
            tx.append(t.strip())
        if tx is None:
            continue
        if label_column:
            raw = _as_text(get(label_column))
            if raw is None or not raw.strip():
                reject(line, f"missing label in column {label_column!r}")
                continue
            raw = raw.strip()
            try:
                value = parse_label(raw)
            except ValueError as e:
                reject(line, f"bad label {raw!r} in column {label_column!r}: {e}")
                continue
            labels.append(value)
        ids.append(rid)
        texts.append(tuple(tx))
    if bad and log_bad:
        log.warning("%s: skipped %d bad row(s); kept %d", path, len(bad), len(ids))
        for b in bad[:20]:
            log.warning("  %s", b)
        if len(bad) > 20:
            log.warning("  ... and %d more", len(bad) - 20)
    if not ids and not allow_empty:
        raise DataError(f"{path}: no usable rows ({len(bad)} bad)")
    arr = np.asarray(labels, dtype=label_dtype) if label_column else None
    return RawSplit(str(path), ids, texts, arr, bad)
