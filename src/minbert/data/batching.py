"""Split types, the data folder and checksums, SST phrase trees, tokenising once, and batching.

The tabular task files are read by :func:`minbert.data.readers.read_records` (one record per
physical line, every data line kept or reported as a :class:`BadRow`).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from ..progress import progress_bar

if TYPE_CHECKING:
    from .tokenizer import Tokenizer

log = logging.getLogger(__name__)

DATA_DIR_ENV = "MINBERT_DATA_DIR"


@dataclass(frozen=True)
class BadRow:
    """A data line that was not kept: file, 1-based physical line (a header is line 1), reason."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class RawSplit:
    """One file's rows. ``labels`` is None for unlabelled (test) files. A split read from a table
    file also counts the file's data lines (kept + bad rows) and its skipped blank lines."""

    path: str
    ids: list[str]
    texts: list[tuple[str, ...]]  # one tuple of 1 or 2 texts per row
    labels: np.ndarray | None
    bad_rows: list[BadRow] = field(default_factory=list)
    data_lines: int | None = None  # None: not read from a table file (or since subset / changed)
    blank_lines: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    def swapped(self) -> RawSplit:
        """The same pairs as (b, a)."""
        return RawSplit(self.path, self.ids, [(t[1], t[0]) for t in self.texts], self.labels, self.bad_rows)

    def plus_swapped(self) -> RawSplit:
        """Every pair twice, as (a, b) and (b, a): data augmentation for symmetric pair tasks."""
        s = self.swapped()
        labels = None if self.labels is None else np.concatenate([self.labels, self.labels])
        return RawSplit(self.path, self.ids + s.ids, self.texts + s.texts, labels, self.bad_rows)

    def subset(self, n: int | None) -> RawSplit:
        """The first ``n`` rows (all of them for None or a larger ``n``)."""
        if n is None or n >= len(self.ids):
            return self
        return self.take(np.arange(n))

    def take(self, index: np.ndarray) -> RawSplit:
        """The rows at ``index`` (int array), in that order."""
        labels = None if self.labels is None else self.labels[index]
        return RawSplit(self.path, [self.ids[i] for i in index], [self.texts[i] for i in index], labels, self.bad_rows)

    def sample(self, n: int | None, seed: int, stratify: bool = False) -> RawSplit:
        """A seeded random sample of ``n`` rows, kept in file order (all rows for None or a
        larger ``n``). The files are not in random order, so the first ``n`` rows are no sample.

        ``stratify``: each label keeps its share of the rows (largest-remainder rounding), for
        classification labels; the rows within a label are drawn at random.

        Raises:
            ValueError: ``n`` < 1, or ``stratify`` on an unlabelled split.
        """
        if n is None or n >= len(self.ids):
            return self
        if n < 1:
            raise ValueError(f"a sample needs n >= 1, got {n}")
        rng = np.random.default_rng(seed)
        if not stratify:
            return self.take(np.sort(rng.choice(len(self.ids), size=n, replace=False)))
        if self.labels is None:
            raise ValueError(f"{self.path}: cannot stratify an unlabelled split")
        classes, inverse = np.unique(self.labels, return_inverse=True)
        counts = np.bincount(inverse, minlength=len(classes))
        quota = counts * n / len(self.ids)
        take = np.floor(quota).astype(int)
        # the rows left over go to the largest remainders (ties: the more frequent label first)
        order = np.lexsort((-counts, -(quota - take)))
        take[order[: n - take.sum()]] += 1
        picked = [rng.choice(np.flatnonzero(inverse == c), size=k, replace=False) for c, k in enumerate(take)]
        return self.take(np.sort(np.concatenate(picked)))


def resolve_data_dir(cli_dir: str | None = None, config_dir: str | None = None) -> Path:
    """``--data-dir``, else the config's ``data.dir``, else ``$MINBERT_DATA_DIR``.

    Raises:
        DataError: none is given, or the folder does not exist.
    """
    env = os.environ.get(DATA_DIR_ENV)
    chosen = cli_dir or config_dir or env
    if not chosen:
        raise DataError(f"no data folder: pass --data-dir or set {DATA_DIR_ENV} (e.g. ../shared/data/cs224n)")
    path = Path(chosen).expanduser()
    if not path.is_dir():
        source = "--data-dir" if cli_dir else "the config's data.dir" if config_dir else f"${DATA_DIR_ENV}"
        unused = f"; ${DATA_DIR_ENV} ({env}) is used only where the config sets no data.dir" if (
            config_dir and not cli_dir and env) else ""
        raise DataError(
            f"data folder {path} ({path.resolve()}, from {source}) does not exist: put the CS224N data files there, "
            f"or name their folder with --data-dir{unused} (README: The data)"
        )
    return path


def verify_checksums(folder: Path, names: Sequence[str]) -> list[str]:
    """Compare files with ``SHA256SUMS`` beside them (if present); returns mismatch messages and
    logs each as a warning. A sums file that is not UTF-8 is not used, and a line that is not
    ``<64 hex digits> <file>`` is skipped, each with a warning naming it."""
    sums = folder / "SHA256SUMS"
    if not sums.is_file():
        return []
    try:
        text = sums.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        log.warning("%s: not UTF-8 text (byte %d: %s); no SHA-256 checked", sums, e.start, e.reason)
        return []
    expected = {}
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if len(parts) == 2 and re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            expected[parts[1].lstrip("*")] = parts[0].lower()
        elif line.strip():
            log.warning("%s:%d: not a '<sha256> <file>' line, skipped", sums, n)
    problems = []
    for name in names:
        if name in expected and (folder / name).is_file():
            actual = sha256_file(folder / name)
            if actual != expected[name]:
                problems.append(f"{folder / name}: SHA-256 does not match SHA256SUMS (file changed?)")
    for p in problems:
        log.warning(p)
    return problems


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _parse_tree(line: str) -> list[tuple[int, str]]:
    """All (label, phrase) nodes of one PTB-style sentiment tree ``(3 (2 It) (4 ...))``, each
    after the nodes inside it (the root last); read with a stack, so any depth of nesting parses.
    Raises ValueError(reason) on a malformed tree: a missing or out-of-range label, a node with no
    words, unbalanced parentheses, text after the tree."""
    tokens = line.replace("(", " ( ").replace(")", " ) ").split()
    open_nodes: list[tuple[int, list[str]]] = []  # (label, the words so far) of each node not closed
    found: list[tuple[int, str]] = []
    i = 0
    while i < len(tokens):
        if tokens[i] == "(":
            if i + 1 >= len(tokens) or not tokens[i + 1].isdigit():
                raise ValueError(f"expected a 0..4 label at token {i + 2}")
            if not 0 <= int(tokens[i + 1]) <= 4:
                raise ValueError(f"label {tokens[i + 1]} outside 0..4")
            open_nodes.append((int(tokens[i + 1]), []))
            i += 2
            continue
        if not open_nodes:
            raise ValueError(f"expected '(' at token {i + 1}" if not found else "text after the tree")
        if tokens[i] == ")":
            label, words = open_nodes.pop()
            if not words:
                raise ValueError(f"a node with no words at token {i + 1}")
            found.append((label, " ".join(words)))
            if open_nodes:
                open_nodes[-1][1].extend(words)
            elif i + 1 < len(tokens):
                raise ValueError("text after the tree")
        else:
            open_nodes[-1][1].append(tokens[i])
        i += 1
    if open_nodes or not found:
        raise ValueError("unbalanced parentheses")
    return found


def require_file(path: Path) -> None:
    """Raises DataError: ``path`` is not a file (``file not found``, or ``is a folder, not a file``)."""
    if not path.is_file():
        raise DataError(f"{path}: {'is a folder, not a file' if path.is_dir() else 'file not found'}")


def read_sst_phrases(path: str | os.PathLike, strict: bool = False, exclude: set[str] = frozenset()) -> RawSplit:
    """Every labelled phrase of a Stanford Sentiment Treebank tree file (one tree per line;
    Socher et al. 2013) as extra SST training rows: distinct phrases, each with the label of its
    first occurrence, whole sentences included; phrases in ``exclude`` (e.g. dev sentences) are
    left out. Ids are ``phrase-<line>-<n>``. Malformed trees are reported with file and line and
    skipped (``strict``: raise DataError)."""
    path = Path(path)
    require_file(path)
    seen: set[str] = set(exclude)
    ids, texts, labels, bad = [], [], [], []
    for n, raw in enumerate(path.read_bytes().splitlines(), 1):  # \n, \r\n or \r, as text mode splits
        if not raw.strip():
            continue
        try:
            nodes = _parse_tree(raw.decode("utf-8"))
        except ValueError as e:  # UnicodeDecodeError is one
            why = f"not UTF-8 text (byte {e.start}: {e.reason})" if isinstance(e, UnicodeDecodeError) else e
            b = BadRow(str(path), n, f"malformed tree ({why})")
            if strict:
                raise DataError(f"{b} (strict mode)") from None
            bad.append(b)
            continue
        for k, (label, text) in enumerate(reversed(nodes)):  # root (the sentence) first
            if text not in seen:
                seen.add(text)
                ids.append(f"phrase-{n}-{k}")
                texts.append((text,))
                labels.append(label)
    if bad:
        log.warning("%s: skipped %d malformed tree(s)", path, len(bad))
        for b in bad[:20]:
            log.warning("  %s", b)
    if not ids:
        raise DataError(f"{path}: no phrases read")
    return RawSplit(str(path), ids, texts, np.asarray(labels, dtype=np.int64), bad)


def concat_splits(a: RawSplit, b: RawSplit) -> RawSplit:
    """Rows of ``a`` then ``b`` (labelled splits)."""
    labels = np.concatenate([a.labels, b.labels])
    return RawSplit(a.path, a.ids + b.ids, a.texts + b.texts, labels, a.bad_rows + b.bad_rows)


# ----------------------------------------------------------------------------------------------
# tokenised splits and batching


@dataclass
class TokenizedSplit:
    """A split tokenised once. ``input_ids[i]`` is example i's token list; for bi-encoder pairs
    ``input_ids_b`` holds sentence b. ``lengths`` (N,) int is what batching sorts by."""

    ids: list[str]
    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    input_ids_b: list[list[int]] | None
    labels: np.ndarray | None
    lengths: np.ndarray
    n_truncated: int = 0
    swapped: TokenizedSplit | None = None  # the pairs as (b, a), for symmetric prediction
    _matrices: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.ids)

    def token_matrix(self, column: str) -> tuple[np.ndarray, np.ndarray]:
        """``column``'s rows (``input_ids``, ``token_type_ids`` or ``input_ids_b``) as one (N, L)
        int64 matrix, right-padded with 0 to the longest row L, and the (N,) int64 row lengths;
        built at the first call and kept, so that a training batch is padded by indexing it
        (:func:`minbert.data.tokenizer.pad_rows`). The rows must not change afterwards."""
        if column not in self._matrices:
            rows = getattr(self, column)
            lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
            matrix = np.zeros((len(rows), int(lengths.max(initial=0))), dtype=np.int64)
            matrix[np.arange(matrix.shape[1])[None, :] < lengths[:, None]] = np.fromiter(
                itertools.chain.from_iterable(rows), dtype=np.int64, count=int(lengths.sum()))
            self._matrices[column] = (matrix, lengths)
        return self._matrices[column]


TOKENIZE_CHUNK = 1024  # rows per call of the tokenizer: one progress step


def tokenize_split(
    raw: RawSplit, tokenizer: Tokenizer, pair_input: str, progress: bool = False, desc: str = "tokenise"
) -> TokenizedSplit:
    """Tokenise a split for its input kind: ``single``, ``bi`` (a and b separately) or ``cross``
    (``[CLS] a [SEP] b [SEP]``), :data:`TOKENIZE_CHUNK` rows at a time, with a progress bar
    (``desc``, in rows) when ``progress``. Warns once with the number of truncated examples.

    Raises:
        ValueError: an unknown ``pair_input``.
    """
    if pair_input not in ("single", "bi", "cross"):
        raise ValueError(f"unknown pair_input {pair_input!r}")
    ids, types, ids_b, n_trunc = [], [], [] if pair_input == "bi" else None, 0
    with progress_bar(len(raw.texts), desc, progress, unit="row") as bar:
        for s in range(0, len(raw.texts), TOKENIZE_CHUNK):
            rows = raw.texts[s : s + TOKENIZE_CHUNK]
            a = [t[0] for t in rows]
            if pair_input == "cross":
                part, part_types, n = tokenizer.encode(a, [t[1] for t in rows])
            else:
                part, part_types, n = tokenizer.encode(a)
            if pair_input == "bi":
                part_b, _, n2 = tokenizer.encode([t[1] for t in rows])
                ids_b += part_b
                n += n2
            ids += part
            types += part_types
            n_trunc += n
            bar.update(len(rows))
    if pair_input == "bi":
        longer = (max(len(x), len(y)) for x, y in zip(ids, ids_b, strict=True))
        lengths = np.fromiter(longer, dtype=np.int64, count=len(ids))
    else:
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    if n_trunc:
        log.warning("%s: %d text(s) truncated to max_length=%d tokens", raw.path, n_trunc, tokenizer.max_length)
    tokenless = _tokenless_rows(raw.texts, ids, types, ids_b, pair_input)
    if tokenless:
        log.warning("%s: %d row(s) with a text that gives no token (only characters the tokenizer drops, such as "
                    "NUL or zero-width ones), kept as an empty input; the first: id %s", raw.path, len(tokenless),
                    raw.ids[tokenless[0]])
    return TokenizedSplit(raw.ids, ids, types, ids_b, raw.labels, lengths, n_trunc)


def _tokenless_rows(texts: list[tuple[str, ...]], ids: list[list[int]], types: list[list[int]],
                    ids_b: list[list[int]] | None, pair_input: str) -> list[int]:
    """The rows with a text that is not blank but gives no token: [CLS] [SEP] alone (single, and
    each side of bi), or an empty a or b in [CLS] a [SEP] b [SEP] (cross, by token type)."""
    out = []
    for i, tx in enumerate(texts):
        if pair_input == "cross":
            n_a = types[i].count(0) - 2
            counts = (n_a, len(types[i]) - n_a - 3)
        else:
            counts = (len(ids[i]) - 2,) + ((len(ids_b[i]) - 2,) if ids_b is not None else ())
        if any(t.strip() and n <= 0 for t, n in zip(tx, counts, strict=False)):
            out.append(i)
    return out


def epoch_batches(
    lengths: np.ndarray, batch_size: int, seed: int, epoch: int, bucket_by_length: bool = True
) -> list[np.ndarray]:
    """The batches (arrays of row indices) of one training epoch, a pure function of
    (seed, epoch): a shuffled order; with bucketing, chunks of 50 batches are sorted by length
    and cut into batches whose order is shuffled again, so padding is small but the data stays
    mixed."""
    n = len(lengths)
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    if not bucket_by_length:
        return [order[i : i + batch_size] for i in range(0, n, batch_size)]
    chunk = batch_size * 50
    batches = []
    for s in range(0, n, chunk):
        part = order[s : s + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    perm = rng.permutation(len(batches))
    return [batches[i] for i in perm]


def eval_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Batches for evaluation: sorted by length (least padding), every row exactly once."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


class TaskStream:
    """An endless stream of one task's training batches, cycling through epochs.

    The position is (epoch, index of the next batch): :meth:`state_dict` / :meth:`load_state_dict`
    restore it exactly, so a resumed run sees the same batches in the same order.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int, bucket_by_length: bool = True):
        self.lengths, self.batch_size, self.seed, self.bucket = lengths, batch_size, seed, bucket_by_length
        self.epoch, self.pos = 0, 0
        self._batches = epoch_batches(lengths, batch_size, seed, 0, bucket_by_length)

    def __len__(self) -> int:
        """Batches per pass over the data."""
        return len(self._batches)

    def next(self) -> np.ndarray:
        if self.pos >= len(self._batches):
            self.epoch, self.pos = self.epoch + 1, 0
            self._batches = epoch_batches(self.lengths, self.batch_size, self.seed, self.epoch, self.bucket)
        batch = self._batches[self.pos]
        self.pos += 1
        return batch

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict) -> None:
        """Restore a position. A state saved with another batch size (another number of
        data-parallel processes) continues at the same sample offset within its epoch."""
        self.epoch, self.pos = int(state["epoch"]), int(state["pos"])
        saved_bs = int(state.get("batch_size", self.batch_size))
        if saved_bs != self.batch_size:
            self.pos = self.pos * saved_bs // self.batch_size
        self._batches = epoch_batches(self.lengths, self.batch_size, self.seed, self.epoch, self.bucket)
