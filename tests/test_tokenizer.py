"""minbert.data.tokenizer: parity with transformers.BertTokenizerFast on the real dev files,
vocab.txt-only folders, truncation reporting and dynamic padding."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from minbert.data.tokenizer import Tokenizer
from minbert.errors import ConfigError
from minbert.model.hf_folder import resolve_encoder_path
from minbert.tasks.base import get_task

MAX_LEN = 128


@pytest.fixture(scope="module")
def folder() -> Path:
    return resolve_encoder_path("default")


@pytest.fixture(scope="module")
def sst_sentences(data_dir) -> list[str]:
    raw = get_task("sst").read(data_dir / "ids-sst-dev.csv", "dev")
    assert len(raw) > 1000 and all(len(t) == 1 for t in raw.texts)
    return [t[0] for t in raw.texts]


@pytest.fixture(scope="module")
def sts_pairs(data_dir) -> tuple[list[str], list[str]]:
    raw = get_task("sts").read(data_dir / "sts-dev.csv", "dev")
    assert len(raw) > 800 and all(len(t) == 2 for t in raw.texts)
    return [t[0] for t in raw.texts], [t[1] for t in raw.texts]


@pytest.fixture(scope="module")
def hf_tok(folder):
    transformers = pytest.importorskip("transformers")
    return transformers.BertTokenizerFast.from_pretrained(str(folder))


@pytest.fixture(scope="module")
def tok(folder) -> Tokenizer:
    return Tokenizer(folder, max_length=MAX_LEN)


def hf_n_longer(hf_tok, texts, pairs=None, max_length=MAX_LEN) -> int:
    """How many examples HF encodes to more than max_length tokens without truncation."""
    enc = hf_tok(texts, pairs, truncation=False)["input_ids"] if pairs else hf_tok(texts, truncation=False)["input_ids"]
    return sum(len(x) > max_length for x in enc)


# ----------------------------------------------------------------------------------------------
# parity with transformers


def test_sst_dev_parity(tok, hf_tok, sst_sentences):
    ids, types, n_trunc = tok.encode(sst_sentences)
    ref = hf_tok(sst_sentences, truncation=True, max_length=MAX_LEN, padding=False)
    assert len(ids) == len(sst_sentences)
    assert ids == ref["input_ids"]
    assert types == ref["token_type_ids"]
    assert all(set(t) == {0} for t in types)
    assert n_trunc == hf_n_longer(hf_tok, sst_sentences)


def test_sts_dev_pair_parity(tok, hf_tok, sts_pairs):
    a, b = sts_pairs
    ids, types, n_trunc = tok.encode(a, b)
    ref = hf_tok(a, b, truncation=True, max_length=MAX_LEN, padding=False)
    assert len(ids) == len(a)
    assert ids == ref["input_ids"]
    assert types == ref["token_type_ids"]
    assert all(set(t) == {0, 1} for t in types)
    assert n_trunc == hf_n_longer(hf_tok, a, b)


def test_parity_when_truncating(folder, hf_tok, sst_sentences, sts_pairs):
    """At a short max_length most dev examples are cut: the cut (longest-first for pairs) and
    the reported count both match transformers."""
    L = 24
    short = Tokenizer(folder, max_length=L)
    ids, types, n = short.encode(sst_sentences)
    ref = hf_tok(sst_sentences, truncation=True, max_length=L)
    assert ids == ref["input_ids"] and types == ref["token_type_ids"]
    assert n == hf_n_longer(hf_tok, sst_sentences, max_length=L) > 100
    a, b = sts_pairs
    ids, types, n = short.encode(a, b)
    ref = hf_tok(a, b, truncation=True, max_length=L)
    assert ids == ref["input_ids"] and types == ref["token_type_ids"]
    assert n == hf_n_longer(hf_tok, a, b, max_length=L) > 100


def test_vocab_txt_only_folder_matches_tokenizer_json(folder, tok, tmp_path, sst_sentences, sts_pairs):
    vocab_only = tmp_path / "vocab-only"
    vocab_only.mkdir()
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(folder / name, vocab_only / name)
    assert not (vocab_only / "tokenizer.json").exists()
    vt = Tokenizer(vocab_only, max_length=MAX_LEN)
    assert vt.pad_token_id == tok.pad_token_id
    assert vt.vocab_size == tok.vocab_size
    assert vt.encode(sst_sentences) == tok.encode(sst_sentences)
    a, b = sts_pairs
    assert vt.encode(a, b) == tok.encode(a, b)


# ----------------------------------------------------------------------------------------------
# limits, truncation, padding


def test_max_length_above_max_positions_raises(folder):
    with pytest.raises(ConfigError, match="max_position"):
        Tokenizer(folder, max_length=513, max_positions=512)
    with pytest.raises(ConfigError):
        Tokenizer(folder, max_length=65, max_positions=64)
    assert Tokenizer(folder, max_length=64, max_positions=64).max_length == 64


LONG = "the cat sat on the mat and then it went to sleep for a very long time"
SHORT = "a dog"


def test_truncation_count_reported(folder):
    t = Tokenizer(folder, max_length=8)
    ids, types, n = t.encode([LONG, SHORT, LONG + " again"])
    assert n == 2
    assert [len(x) for x in ids] == [8, 4, 8]
    cls, sep = ids[1][0], ids[1][-1]
    assert all(x[0] == cls and x[-1] == sep for x in ids)
    # pairs: one pair overflows, one does not
    ids, types, n = t.encode([LONG, SHORT], [SHORT, "cat"])
    assert n == 1
    assert len(ids[0]) == 8 and types[0].count(1) == 3  # the short second segment is kept whole
    assert len(ids[1]) == 6


def test_call_warns_once_with_count(folder, caplog):
    t = Tokenizer(folder, max_length=8)
    with caplog.at_level(logging.WARNING, logger="minbert.data.tokenizer"):
        t([LONG, SHORT, LONG, SHORT, LONG], warn_source="train")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "minbert.data.tokenizer"]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "3 of 5" in msg and "train" in msg and "8" in msg
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="minbert.data.tokenizer"):
        t([SHORT, "cat"])
    assert not [r for r in caplog.records if r.name == "minbert.data.tokenizer"]


def test_dynamic_padding(tok):
    texts = [SHORT, LONG, "one two three"]
    ids, types, _ = tok.encode(texts)
    lengths = [len(x) for x in ids]
    batch = tok(texts)
    B, T = batch["input_ids"].shape
    assert (B, T) == (3, max(lengths))  # padded to the longest in the batch, not to max_length
    assert T < MAX_LEN
    for key in ("input_ids", "token_type_ids", "attention_mask"):
        assert batch[key].shape == (B, T)
    assert batch["attention_mask"].sum(1).tolist() == lengths
    for i, n in enumerate(lengths):
        assert batch["input_ids"][i, :n].tolist() == ids[i]
        assert batch["attention_mask"][i, :n].tolist() == [1] * n
        assert batch["attention_mask"][i, n:].tolist() == [0] * (T - n)
        assert batch["input_ids"][i, n:].tolist() == [tok.pad_token_id] * (T - n)
        assert batch["token_type_ids"][i, n:].tolist() == [0] * (T - n)


def test_dynamic_padding_pairs(tok):
    a, b = [SHORT, LONG], [LONG, "cat"]
    ids, types, _ = tok.encode(a, b)
    batch = tok(a, b)
    T = max(len(x) for x in ids)
    assert batch["input_ids"].shape == (2, T)
    for i in range(2):
        n = len(ids[i])
        assert batch["input_ids"][i, :n].tolist() == ids[i]
        assert batch["token_type_ids"][i, :n].tolist() == types[i]
        assert batch["attention_mask"][i].tolist() == [1] * n + [0] * (T - n)


@pytest.mark.parametrize("name, text", [("tokenizer.json", "{not json"), ("tokenizer_config.json", "{not json")])
def test_a_corrupt_tokenizer_file_is_one_checkpoint_error(folder, tmp_path, name, text):
    """A damaged tokenizer file in a run's encoder folder: a CheckpointError naming the file (one
    `error:` line in the CLI), not the tokenizers library's bare exception."""
    import shutil

    from minbert.errors import CheckpointError

    bad = tmp_path / "enc"
    shutil.copytree(folder, bad)
    if name == "tokenizer_config.json":  # read only when there is no tokenizer.json
        (bad / "tokenizer.json").unlink()
    (bad / name).write_text(text)
    with pytest.raises(CheckpointError, match=rf"{name}: not"):
        Tokenizer(bad, 64)


@pytest.mark.parametrize("pair_input, rows, want", [
    ("single", [("good film",), ("\u200b\u200b",), ("\x00",), ("\u00ad",), ("",), ("  ",)], ["b", "c", "d"]),
    ("bi", [("a b", "\u200b"), ("\u200b", "c d"), ("x", "y"), ("", "y")], ["a", "b"]),
    ("cross", [("a b", "\u200b"), ("\u200b", "c d"), ("x", "y"), ("", "y")], ["a", "b"]),
])
def test_a_text_that_gives_no_token_is_kept_and_reported(tok, caplog, pair_input, rows, want):
    """NUL, zero-width and soft-hyphen characters are dropped by the tokenizer: such a row is kept
    as an empty input and counted in one warning; blank texts (reported by the reader) are not."""
    from minbert.data.batching import RawSplit, tokenize_split

    ids = [chr(ord("a") + i) for i in range(len(rows))]
    with caplog.at_level(logging.WARNING):
        out = tokenize_split(RawSplit("f.tsv", ids, rows, None, []), tok, pair_input)
    assert out.ids == ids  # every row kept
    lines = [r.getMessage() for r in caplog.records if "gives no token" in r.getMessage()]
    assert lines == [f"f.tsv: {len(want)} row(s) with a text that gives no token (only characters the tokenizer "
                     f"drops, such as NUL or zero-width ones), kept as an empty input; the first: id {want[0]}"]
