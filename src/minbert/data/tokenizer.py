"""WordPiece tokenisation through the Hugging Face ``tokenizers`` library.

Reads ``tokenizer.json`` when the model folder has one, else builds the BERT WordPiece pipeline
from ``vocab.txt`` and ``tokenizer_config.json`` (lower-casing and accent stripping as the
checkpoint says). Encodes single sentences and pairs (``[CLS] a [SEP] b [SEP]`` with
``token_type_ids`` 0/1), truncates longest-first to ``max_length`` and leaves padding to
collate time (dynamic padding to the longest in the batch).
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.implementations import BertWordPieceTokenizer

from ..errors import CheckpointError, ConfigError
from ..model.hf_folder import resolve_encoder_path

log = logging.getLogger(__name__)


class Tokenizer:
    """A BERT WordPiece tokenizer.

    Args:
        folder: a Hugging Face model folder, or ``"default"``.
        max_length: tokens per encoded sequence, special tokens included.
        max_positions: the model's ``max_position_embeddings``; a larger ``max_length`` raises.

    Raises:
        ConfigError: ``max_length`` exceeds ``max_positions`` or is < 3.
        CheckpointError: the folder has neither ``tokenizer.json`` nor ``vocab.txt``.
    """

    def __init__(self, folder: str | Path = "default", max_length: int = 128, max_positions: int = 512):
        # the bound needs the encoder's size, so it is checked here; a config's max_length >= 3 is
        # checked when it is loaded (minbert.config.validate_training), this guards direct use
        if max_length > max_positions:
            raise ConfigError(
                f"model.max_length {max_length} exceeds the model's max_position_embeddings {max_positions}"
            )
        if max_length < 3:
            raise ConfigError(f"model.max_length {max_length} is too small (at least 3: [CLS] x [SEP])")
        folder = resolve_encoder_path(folder)
        self.max_length = max_length
        tj, vocab = folder / "tokenizer.json", folder / "vocab.txt"
        if tj.is_file():
            try:
                self._tok = HFTokenizer.from_file(str(tj))
            except Exception as e:  # tokenizers raises a bare Exception for a malformed file
                raise CheckpointError(f"{tj}: not a readable tokenizer file ({str(e).splitlines()[0]})") from None
        elif vocab.is_file():
            opts = {}
            cfg = folder / "tokenizer_config.json"
            if cfg.is_file():
                try:
                    opts = json.loads(cfg.read_text())
                except (ValueError, UnicodeDecodeError) as e:
                    raise CheckpointError(f"{cfg}: not valid JSON ({e})") from None
                if not isinstance(opts, dict):
                    raise CheckpointError(f"{cfg}: not a tokenizer config (a JSON object is expected)")
            lowercase = opts.get("do_lower_case", True)
            strip = opts.get("strip_accents")
            if not isinstance(lowercase, bool) or not isinstance(strip, bool | None):
                raise CheckpointError(f"{cfg}: do_lower_case must be true or false and strip_accents true, false or "
                                      f"null, got {lowercase!r} and {strip!r}")
            try:
                self._tok = BertWordPieceTokenizer(
                    str(vocab), lowercase=lowercase, strip_accents=lowercase if strip is None else strip
                )._tokenizer
            except Exception as e:  # tokenizers raises TypeError, Exception, ... for a bad vocabulary
                why = (str(e).splitlines() or [type(e).__name__])[0]
                raise CheckpointError(f"{vocab}: not a usable WordPiece vocabulary ({why})") from None
        else:
            raise CheckpointError(f"{folder}: neither tokenizer.json nor vocab.txt found")
        self._tok.no_padding()
        self._tok.enable_truncation(max_length=max_length, strategy="longest_first")
        self.pad_token_id = self._tok.token_to_id("[PAD]")
        if self.pad_token_id is None:
            raise CheckpointError(f"{folder}: vocabulary has no [PAD] token")
        self.vocab_size = self._tok.get_vocab_size()

    def encode(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None
    ) -> tuple[list[list[int]], list[list[int]], int]:
        """Encode sentences (or sentence pairs) without padding.

        Returns ``(input_ids, token_type_ids, n_truncated)``: two lists of per-example int lists
        and the number of examples that were cut to ``max_length``.
        """
        if pairs is None:
            encs = self._tok.encode_batch(list(texts))
        else:
            encs = self._tok.encode_batch(list(zip(texts, pairs, strict=True)))
        ids = [e.ids for e in encs]
        types = [e.type_ids for e in encs]
        n_trunc = sum(1 for e in encs if e.overflowing)
        return ids, types, n_trunc

    def __call__(self, texts: Sequence[str], pairs: Sequence[str] | None = None, warn_source: str = "input") -> dict:
        """Encode and pad to the longest; returns ``input_ids``, ``token_type_ids``,
        ``attention_mask`` as (B, T) int64 tensors. Warns once with the count of truncated texts."""
        ids, types, n_trunc = self.encode(texts, pairs)
        if n_trunc:
            log.warning(
                "%s: %d of %d texts were truncated to max_length=%d tokens", warn_source, n_trunc, len(ids),
                self.max_length,
            )
        return pad_batch(ids, types, self.pad_token_id)


def pad_batch(
    ids: Sequence[Sequence[int]], types: Sequence[Sequence[int]] | None, pad_id: int = 0, pad_to_multiple_of: int = 1
) -> dict:
    """Right-pad to the longest sequence, rounded up to a multiple of ``pad_to_multiple_of``.
    Returns (B, T) int64 tensors ``input_ids``, ``token_type_ids`` (all 0 when ``types`` is
    None) and ``attention_mask`` (1 on real tokens). Built in numpy with one scatter per tensor:
    this runs on the host in every training step."""
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    B, T, n = len(ids), int(lengths.max()), int(lengths.sum())
    T = -(-T // pad_to_multiple_of) * pad_to_multiple_of
    attention_mask = np.arange(T)[None, :] < lengths[:, None]  # (B, T) bool
    input_ids = np.full((B, T), pad_id, dtype=np.int64)
    input_ids[attention_mask] = np.fromiter(itertools.chain.from_iterable(ids), dtype=np.int64, count=n)
    token_type_ids = np.zeros((B, T), dtype=np.int64)
    if types is not None:
        token_type_ids[attention_mask] = np.fromiter(itertools.chain.from_iterable(types), dtype=np.int64, count=n)
    return {
        "input_ids": torch.from_numpy(input_ids),
        "token_type_ids": torch.from_numpy(token_type_ids),
        "attention_mask": torch.from_numpy(attention_mask.astype(np.int64)),
    }


def padded_length(longest: int, pad_to_multiple_of: int = 1) -> int:
    """``longest`` rounded up to a multiple of ``pad_to_multiple_of``: a batch's T."""
    return -(-longest // pad_to_multiple_of) * pad_to_multiple_of


def pad_rows(
    matrix: np.ndarray, lengths: np.ndarray, index: np.ndarray, T: int, pad_id: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``index`` of a right-padded token ``matrix`` (N, L) int64 with row ``lengths`` (N,)
    (:meth:`minbert.data.batching.TokenizedSplit.token_matrix`), padded or cut to T columns (T at
    least the longest of these rows), as :func:`pad_batch` pads their lists: returns (B, T) int64
    with ``pad_id`` after each row's tokens, and the (B, T) bool mask of real tokens. A few numpy
    operations per batch, where :func:`pad_batch` walks every token in Python."""
    lens = lengths[index]
    mask = np.arange(T)[None, :] < lens[:, None]  # (B, T) bool
    out = np.full((len(index), T), pad_id, dtype=np.int64)
    w = min(T, matrix.shape[1])
    out[:, :w] = matrix[index, :w]
    if pad_id != 0:
        out[~mask] = pad_id  # (the matrix holds 0 after each row)
    return out, mask
