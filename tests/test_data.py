"""Reading the task files (real and synthetic bad input), checksums, and batching."""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from minbert.data.batching import (
    RawSplit,
    TaskStream,
    epoch_batches,
    eval_batches,
    verify_checksums,
)
from minbert.data.readers import read_records
from minbert.errors import DataError, MinbertError
from minbert.tasks.base import get_task

# headers of the cs224n layout: the first column is an unnamed row index
HEADERS = {
    "sst": ["", "id", "sentence", "sentiment"],
    "qqp": ["", "id", "sentence1", "sentence2", "is_duplicate"],
    "sts": ["", "id", "sentence1", "sentence2", "similarity"],
}


def write_file(path: Path, header: list[str], rows: list[str]) -> Path:
    """Write a header and raw (already tab-joined) data lines, each ended by a newline."""
    path.write_text("\t".join(header) + "\n" + "".join(r + "\n" for r in rows), encoding="utf-8")
    return path


def plain_rows(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh, delimiter="\t"))


# ----------------------------------------------------------------------------------------------
# real data


@pytest.fixture(scope="module")
def quora_dev(data_dir):
    return data_dir / "quora-dev.csv"


def test_real_quora_dev_reports_two_bad_rows(quora_dev, caplog):
    caplog.set_level(logging.WARNING, logger="minbert.data.readers")
    raw = get_task("qqp").read(quora_dev, "dev", strict=False)
    assert len(raw) == 20_212
    assert (raw.data_lines, raw.blank_lines) == (20_214, 0)
    assert f"{quora_dev}: 20214 data lines: 20212 kept, 2 bad\n" in caplog.text
    assert len(raw.ids) == len(raw.texts) == len(raw.labels) == 20_212
    assert [b.line for b in raw.bad_rows] == [2577, 14222]
    missing, empty = raw.bad_rows
    assert "missing label" in missing.reason and "is_duplicate" in missing.reason
    assert "empty text" in empty.reason
    for b in raw.bad_rows:
        assert b.path == str(quora_dev)
        assert str(b).startswith(f"{quora_dev}:{b.line}: ")
    # the bad rows are logged (file, line, reason), not dropped silently
    assert f"{quora_dev}:2577:" in caplog.text and f"{quora_dev}:14222:" in caplog.text
    assert raw.labels.dtype == np.int64 and set(np.unique(raw.labels)) <= {0, 1}
    # every kept row is a row of the file with the same texts
    rows = {r[1]: r for r in plain_rows(quora_dev)[1:] if len(r) == 5}
    for i in (0, 1, 2576, 10_000, len(raw) - 1):
        r = rows[raw.ids[i]]
        assert raw.texts[i] == (r[2].strip(), r[3].strip())
        assert raw.labels[i] == int(float(r[4]))


def test_real_quora_dev_strict_raises_at_first_bad_row(quora_dev):
    with pytest.raises(DataError) as ei:
        get_task("qqp").read(quora_dev, "dev", strict=True)
    msg = str(ei.value)
    assert str(quora_dev) in msg
    assert f"{quora_dev}:2577:" in msg
    assert "missing label" in msg
    assert "14222" not in msg


def test_real_sst_test_file_with_malformed_header(data_dir):
    path = data_dir / "ids-sst-test-student.csv"
    rows = plain_rows(path)
    header = rows[0]
    assert len(header) == 4 and header[2:] == ["id", "sentence"]  # the extra leading column
    raw = get_task("sst").read(path, "test")
    assert len(raw) == 2210 == len(rows) - 1
    assert raw.labels is None
    assert raw.bad_rows == []
    assert raw.ids == [r[2] for r in rows[1:]]
    assert raw.texts == [(r[3].strip(),) for r in rows[1:]]
    assert all(raw.ids) and all(t[0] for t in raw.texts)


def test_real_sts_labels_stay_floats(data_dir):
    path = data_dir / "sts-dev.csv"
    raw = get_task("sts").read(path, "dev")
    assert raw.labels.dtype == np.float32
    gold = {r[1]: float(r[4]) for r in plain_rows(path)[1:]}
    assert len(raw) == len(gold)
    got = dict(zip(raw.ids, raw.labels.tolist(), strict=True))
    for rid, value in gold.items():
        assert got[rid] == pytest.approx(value, abs=1e-6)
    # fractional scores survive: 3.8 is not rounded to 4 (or truncated to 3)
    ids_38 = [rid for rid, v in gold.items() if v == 3.8]
    assert ids_38, "sts-dev has rows scored 3.8"
    for rid in ids_38:
        assert got[rid] == pytest.approx(3.8, abs=1e-6)
    assert np.any(raw.labels != np.round(raw.labels))


def test_real_checksums_match(data_dir):
    names = sorted(p.name for p in data_dir.glob("*.csv"))
    assert verify_checksums(data_dir, names) == []


# ----------------------------------------------------------------------------------------------
# bad rows, table-driven: (task, bad line text, expected reason fragments)
#
# Each file has a good row on line 2, the bad row on line 3, and a good row on line 4.

SST_GOOD = ["0\tg1\tA fine film .\t3", "2\tg2\tDull and long .\t0"]
QQP_GOOD = ["0\tg1\tHow do I cook rice?\tWhat is the best way to cook rice?\t1.0", "2\tg2\tIs it?\tWhy?\t0.0"]
STS_GOOD = ["0\tg1\tA man plays a guitar.\tA man is playing guitar.\t4.6", "2\tg2\tA dog runs.\tA cat sleeps.\t0.4"]
GOOD = {"sst": SST_GOOD, "qqp": QQP_GOOD, "sts": STS_GOOD}

BAD_ROWS = [
    # empty / whitespace-only text
    ("sst", "1\tb\t\t2", ["empty text", "'sentence'"]),
    ("sst", "1\tb\t   \t2", ["empty text", "'sentence'"]),
    ("qqp", "1\tb\tWhat?\t\t1.0", ["empty text", "'sentence2'"]),
    ("sts", "1\tb\t \tA b.\t1.0", ["empty text", "'sentence1'"]),
    # missing label
    ("sst", "1\tb\tGood .\t", ["missing label", "'sentiment'"]),
    ("qqp", "1\tb\tWhat?\tWhy?\t", ["missing label", "'is_duplicate'"]),
    ("sts", "1\tb\tA a.\tA b.\t  ", ["missing label", "'similarity'"]),
    # non-numeric label
    ("sst", "1\tb\tGood .\tpositive", ["bad label 'positive'", "not a number"]),
    ("qqp", "1\tb\tWhat?\tWhy?\tyes", ["bad label 'yes'", "'is_duplicate'"]),
    ("sts", "1\tb\tA a.\tA b.\thigh", ["bad label 'high'", "not a number"]),
    # out-of-range or non-integer label
    ("sst", "1\tb\tGood .\t7", ["bad label '7'", "0..4"]),
    ("sst", "1\tb\tGood .\t-1", ["bad label '-1'", "0..4"]),
    ("sst", "1\tb\tGood .\t2.5", ["bad label '2.5'", "0..4"]),
    ("sst", "1\tb\tGood .\tinf", ["bad label 'inf'"]),
    ("sst", "1\tb\tGood .\tnan", ["bad label 'nan'"]),
    ("sts", "1\tb\tA a.\tA b.\t5.5", ["bad label '5.5'", "outside [0, 5]"]),
    ("sts", "1\tb\tA a.\tA b.\t-0.1", ["bad label '-0.1'", "outside [0, 5]"]),
    ("sts", "1\tb\tA a.\tA b.\tnan", ["bad label 'nan'"]),
    ("qqp", "1\tb\tWhat?\tWhy?\t2", ["bad label '2'", "0, 1"]),
    ("qqp", "1\tb\tWhat?\tWhy?\t0.5", ["bad label '0.5'"]),
    # wrong number of fields
    ("sst", "1\tb\tGood .\t2\textra", ["expected 4 fields, found 5"]),
    ("sst", "1\tb\tGood .", ["expected 4 fields, found 3"]),
    ("qqp", "1\tb\tWhat?\t1.0", ["expected 5 fields, found 4"]),
    # empty id
    ("sts", "1\t\tA a.\tA b.\t1.0", ["empty id"]),
    # bad quoting: a stray quote inside a quoted field, text after a closing quote
    ("sst", '1\tb\t"A "stray" quote"\t2', ["bad quoting"]),
    ("qqp", '1\tb\t"What?" really\tWhy?\t1.0', ["bad quoting"]),
]


def _case_id(case):
    task, line, reason = case
    return f"{task}-{reason[0].split()[0]}-{line.split(chr(9))[-1] or 'blank'}"


@pytest.mark.parametrize("task_name,bad_line,reasons", BAD_ROWS, ids=[_case_id(c) for c in BAD_ROWS])
def test_bad_row_reported_and_skipped(tmp_path, caplog, task_name, bad_line, reasons):
    task = get_task(task_name)
    good = GOOD[task_name]
    path = write_file(tmp_path / f"{task_name}-dev.csv", HEADERS[task_name], [good[0], bad_line, good[1]])
    caplog.set_level(logging.WARNING, logger="minbert.data.readers")

    raw = task.read(path, "dev")
    assert raw.ids == ["g1", "g2"]
    assert len(raw.texts) == len(raw.labels) == 2
    assert len(raw.bad_rows) == 1
    bad = raw.bad_rows[0]
    assert (bad.path, bad.line) == (str(path), 3)
    for frag in reasons:
        assert frag in bad.reason
    assert f"{path}:3:" in caplog.text

    # --strict: the first bad row is fatal, with file, line and reason
    with pytest.raises(DataError) as ei:
        task.read(path, "dev", strict=True)
    msg = str(ei.value)
    assert msg.startswith(f"{path}:3: ")
    for frag in reasons:
        assert frag in msg
    assert "\n" not in msg


def test_unterminated_quote_reported(tmp_path):
    # an unterminated quote is a bad row on its own line; the next line is read normally
    path = write_file(
        tmp_path / "sst.csv", HEADERS["sst"], [SST_GOOD[0], SST_GOOD[1], '9\tb\t"never closed\t2', "10\tc\tMore .\t1"]
    )
    raw = get_task("sst").read(path, "dev")
    assert raw.ids == ["g1", "g2", "c"]
    assert raw.texts[2] == ("More .",) and raw.labels.tolist() == [3, 0, 1]
    assert [(b.line, b.reason.split(" (")[0]) for b in raw.bad_rows] == [(4, "bad quoting")]


def test_one_record_per_physical_line(tmp_path):
    # quoted fields may hold tabs and quotes, not line breaks: a quote left open at the end of
    # its line makes that line bad, and the next physical line is a record of its own
    rows = [
        '0\tm1\t"Two\nlines\twith a tab and ""quotes"""\t1',  # lines 2-3: both bad
        '1\tq1\t"A tab\there and ""quotes"""\t4',  # line 4
        "1\tb\tGood .\t9",  # line 5: bad
        "2\tg2\tFine .\t2",  # line 6
        "3\tb2\t\t2",  # line 7: bad
    ]
    path = write_file(tmp_path / "sst.csv", HEADERS["sst"], rows)
    raw = get_task("sst").read(path, "dev")
    assert raw.ids == ["q1", "g2"]
    assert raw.texts[0] == ('A tab\there and "quotes"',)
    assert raw.labels.tolist() == [4, 2]
    assert [(b.line, b.reason.split(" (")[0]) for b in raw.bad_rows] == [
        (2, "bad quoting"),
        (3, "expected 4 fields, found 3"),
        (5, "bad label '9' in column 'sentiment': expected an integer 0..4"),
        (7, "empty text in column 'sentence'"),
    ]
    assert (raw.data_lines, raw.blank_lines) == (6, 0)
    with pytest.raises(DataError, match=r":2: bad quoting"):
        get_task("sst").read(path, "dev", strict=True)


def test_strict_false_keeps_good_rows_strict_true_stops(tmp_path):
    rows = ["0\tg1\tA .\t1", "1\tb1\tB .\t", "2\tg2\tC .\t2", "3\tb2\tD .\tx", "4\tg3\tE .\t3"]
    path = write_file(tmp_path / "sst.csv", HEADERS["sst"], rows)
    raw = get_task("sst").read(path, "dev", strict=False)
    assert raw.ids == ["g1", "g2", "g3"]
    assert raw.labels.tolist() == [1, 2, 3]
    assert [b.line for b in raw.bad_rows] == [3, 5]
    with pytest.raises(DataError) as ei:
        get_task("sst").read(path, "dev", strict=True)
    assert f"{path}:3:" in str(ei.value) and ":5:" not in str(ei.value)
    # a clean file reads the same with and without strict
    clean = write_file(tmp_path / "clean.csv", HEADERS["sst"], SST_GOOD)
    a, b = get_task("sst").read(clean, "dev"), get_task("sst").read(clean, "dev", strict=True)
    assert a.ids == b.ids and a.labels.tolist() == b.labels.tolist() and a.bad_rows == b.bad_rows == []


def test_integer_sts_labels_accepted_as_float(tmp_path):
    rows = ["0\ta\tA a.\tA b.\t3", "1\tb\tA c.\tA d.\t0", "2\tc\tA e.\tA f.\t5", "3\td\tA g.\tA h.\t2.25"]
    path = write_file(tmp_path / "sts.csv", HEADERS["sts"], rows)
    raw = get_task("sts").read(path, "dev")
    assert raw.bad_rows == []
    assert raw.labels.dtype == np.float32
    assert raw.labels.tolist() == [3.0, 0.0, 5.0, 2.25]


def test_qqp_labels_accept_int_and_float_spelling(tmp_path):
    rows = ["0\ta\tA?\tB?\t1", "1\tb\tC?\tD?\t0.0", "2\tc\tE?\tF?\t1.0", "3\td\tG?\tH?\t0"]
    path = write_file(tmp_path / "qqp.csv", HEADERS["qqp"], rows)
    raw = get_task("qqp").read(path, "dev")
    assert raw.labels.dtype == np.int64
    assert raw.labels.tolist() == [1, 0, 1, 0]


# ----------------------------------------------------------------------------------------------
# file-level problems: always a one-line DataError


def _one_line_error(fn) -> str:
    with pytest.raises(DataError) as ei:
        fn()
    msg = str(ei.value)
    assert "\n" not in msg
    assert isinstance(ei.value, MinbertError)
    return msg


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    msg = _one_line_error(lambda: get_task("sst").read(path, "dev"))
    assert str(path) in msg and "not found" in msg


@pytest.mark.parametrize("content", ["", "\n"], ids=["zero-bytes", "blank-line"])
def test_empty_file(tmp_path, content):
    path = tmp_path / "empty.csv"
    path.write_text(content)
    msg = _one_line_error(lambda: get_task("sst").read(path, "dev"))
    assert str(path) in msg
    assert "empty" in msg or "header" in msg


def test_header_only_file(tmp_path):
    path = write_file(tmp_path / "h.csv", HEADERS["sst"], [])
    msg = _one_line_error(lambda: get_task("sst").read(path, "dev"))
    assert str(path) in msg and "no usable rows" in msg


def test_all_rows_bad(tmp_path):
    path = write_file(tmp_path / "bad.csv", HEADERS["sst"], ["0\ta\t\t1", "1\tb\tX .\t"])
    msg = _one_line_error(lambda: get_task("sst").read(path, "dev"))
    assert str(path) in msg and "no usable rows" in msg and "2 bad" in msg


@pytest.mark.parametrize(
    "task_name,header,missing",
    [
        ("sst", ["", "id", "sentence"], "sentiment"),
        ("sst", ["", "id", "text", "sentiment"], "sentence"),
        ("qqp", ["", "id", "sentence1", "is_duplicate"], "sentence2"),
        ("sts", ["", "sentence1", "sentence2", "similarity"], "id"),
    ],
)
def test_header_missing_column(tmp_path, task_name, header, missing):
    rows = ["\t".join(["0"] + ["x"] * (len(header) - 1))]
    path = write_file(tmp_path / "f.csv", header, rows)
    msg = _one_line_error(lambda: get_task(task_name).read(path, "dev"))
    assert str(path) in msg and "line 1" in msg and repr(missing) in msg


def test_test_split_needs_no_label_column(tmp_path):
    path = write_file(tmp_path / "t.csv", ["", "id", "sentence1", "sentence2"], ["0\ta\tA?\tB?", "1\tb\tC?\tD?"])
    raw = get_task("sts").read(path, "test")
    assert raw.labels is None and raw.ids == ["a", "b"] and raw.texts == [("A?", "B?"), ("C?", "D?")]


def test_sst_labels_one_to_five(tmp_path):
    rows = [f"{i}\tid{i}\tSentence {i} .\t{label}" for i, label in enumerate([1, 2, 3, 4, 5, 3, 1])]
    path = write_file(tmp_path / "sst.csv", HEADERS["sst"], rows)
    msg = _one_line_error(lambda: get_task("sst").read(path, "dev"))
    assert str(path) in msg and "1..5" in msg and "0..4" in msg


def test_sst_some_labels_five(tmp_path):
    rows = [f"{i}\tid{i}\tSentence {i} .\t{label}" for i, label in enumerate([0, 2, 5, 4, 5])]
    path = write_file(tmp_path / "sst.csv", HEADERS["sst"], rows)
    msg = _one_line_error(lambda: get_task("sst").read(path, "dev"))
    assert str(path) in msg and "2 SST label(s) equal 5" in msg


@pytest.mark.parametrize("bad_line", [2, 3001])
def test_not_utf8_is_a_data_error_at_its_line(tmp_path, bad_line):
    # a line far into the file: the text layer decodes in chunks, the line must still be exact
    rows = [f"{i}\tid{i}\tSentence number {i} .\t1" for i in range(4000)]
    rows[bad_line - 2] = f"{bad_line}\tbad\tCaf\xe9 .\t1"
    path = tmp_path / "latin1.csv"
    path.write_bytes(("\t".join(HEADERS["sst"]) + "\n" + "\n".join(rows) + "\n").encode("latin-1"))
    msg = _one_line_error(lambda: get_task("sst").read(path, "dev"))
    assert msg.startswith(f"{path}: line {bad_line}: ") and "UTF-8" in msg


# ----------------------------------------------------------------------------------------------
# checksums


def test_checksum_mismatch_warns_not_raises(tmp_path, caplog):
    good = write_file(tmp_path / "ids-sst-dev.csv", HEADERS["sst"], SST_GOOD)
    changed = write_file(tmp_path / "ids-sst-train.csv", HEADERS["sst"], SST_GOOD)
    digest = hashlib.sha256(good.read_bytes()).hexdigest()
    (tmp_path / "SHA256SUMS").write_text(
        f"{digest}  ids-sst-dev.csv\n{'0' * 64}  ids-sst-train.csv\n{'1' * 64}  not-here.csv\n"
    )
    caplog.set_level(logging.WARNING, logger="minbert.data.batching")
    problems = verify_checksums(tmp_path, ["ids-sst-dev.csv", "ids-sst-train.csv", "not-here.csv"])
    assert len(problems) == 1
    assert str(changed) in problems[0] and "SHA-256" in problems[0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == problems
    # the changed file still reads
    assert get_task("sst").read(changed, "train").ids == ["g1", "g2"]


def test_checksums_without_sums_file(tmp_path):
    write_file(tmp_path / "ids-sst-dev.csv", HEADERS["sst"], SST_GOOD)
    assert verify_checksums(tmp_path, ["ids-sst-dev.csv"]) == []


# ----------------------------------------------------------------------------------------------
# batching


@pytest.fixture(scope="module")
def lengths():
    return np.random.default_rng(123).integers(3, 60, size=1003)


def _flat(batches):
    return np.concatenate(batches)


@pytest.mark.parametrize("bucket", [True, False])
@pytest.mark.parametrize("batch_size", [1, 16, 1003, 2000])
def test_epoch_batches_cover_every_index_once(lengths, bucket, batch_size):
    batches = epoch_batches(lengths, batch_size, seed=5, epoch=3, bucket_by_length=bucket)
    assert np.array_equal(np.sort(_flat(batches)), np.arange(len(lengths)))
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert len(batches) == -(-len(lengths) // batch_size)


@pytest.mark.parametrize("bucket", [True, False])
def test_epoch_batches_deterministic_and_vary(lengths, bucket):
    def run(seed, epoch):
        return [b.tolist() for b in epoch_batches(lengths, 16, seed, epoch, bucket)]

    assert run(0, 0) == run(0, 0)
    assert run(7, 4) == run(7, 4)
    assert run(0, 0) != run(0, 1)
    assert run(0, 1) != run(0, 2)
    assert run(0, 0) != run(1, 0)
    # different epochs also differ in which indices share a batch, not just in batch order
    first = {frozenset(b) for b in run(0, 0)}
    second = {frozenset(b) for b in run(0, 1)}
    assert first != second


def test_bucketing_reduces_padding(lengths):
    def padding(batches):
        return sum(int(lengths[b].max()) * len(b) - int(lengths[b].sum()) for b in batches)

    bucketed = epoch_batches(lengths, 16, 0, 0, bucket_by_length=True)
    plain = epoch_batches(lengths, 16, 0, 0, bucket_by_length=False)
    assert padding(bucketed) < padding(plain) / 2
    # the batches' order is shuffled: not sorted by length across the epoch
    maxima = [int(lengths[b].max()) for b in bucketed]
    assert maxima != sorted(maxima)


def test_task_stream_cycles_through_epochs(lengths):
    stream = TaskStream(lengths, 64, seed=3)
    n = len(stream)
    assert n == len(epoch_batches(lengths, 64, 3, 0))
    got = [stream.next().tolist() for _ in range(2 * n + 5)]
    expect = [b.tolist() for e in range(3) for b in epoch_batches(lengths, 64, 3, e)][: 2 * n + 5]
    assert got == expect
    assert stream.state_dict() == {"epoch": 2, "pos": 5, "batch_size": stream.batch_size}


@pytest.mark.parametrize("steps", [0, 7, 16, 17, 40])
def test_task_stream_state_dict_round_trip(lengths, steps):
    a = TaskStream(lengths, 64, seed=11, bucket_by_length=True)  # 16 batches per epoch
    for _ in range(steps):
        a.next()
    state = json.loads(json.dumps(a.state_dict()))  # survives a JSON checkpoint
    b = TaskStream(lengths, 64, seed=11, bucket_by_length=True)
    b.load_state_dict(state)
    for _ in range(3 * len(a)):
        assert np.array_equal(a.next(), b.next())
    assert a.state_dict() == b.state_dict()


@pytest.mark.parametrize("batch_size", [1, 7, 256, 5000])
def test_eval_batches_cover_every_row_once(lengths, batch_size):
    batches = eval_batches(lengths, batch_size)
    flat = _flat(batches)
    assert np.array_equal(np.sort(flat), np.arange(len(lengths)))
    assert all(1 <= len(b) <= batch_size for b in batches)
    assert np.all(np.diff(lengths[flat]) >= 0)  # sorted by length: least padding


def test_raw_split_subset():
    raw = RawSplit("p", ["a", "b", "c"], [("x",), ("y",), ("z",)], np.array([0, 1, 2]))
    sub = raw.subset(2)
    assert sub.ids == ["a", "b"] and sub.texts == [("x",), ("y",)] and sub.labels.tolist() == [0, 1]
    assert raw.subset(None) is raw and raw.subset(10) is raw


def test_read_records_direct(tmp_path):
    path = write_file(tmp_path / "x.csv", ["", "id", "sentence", "score"], ["0\ta\tHi .\t1.5"])
    raw = read_records(path, ["sentence"], "score", float, id_column="id", label_dtype=np.float64, fmt="tsv")
    assert raw.labels.dtype == np.float64 and raw.labels.tolist() == [1.5]


def test_task_stream_resumes_at_the_same_sample_offset_with_another_batch_size():
    # a state saved by 2 processes (global batch 2 x 8) continues in 1 process (batch 8)
    lengths = np.arange(160) % 17 + 3
    two = TaskStream(lengths, 16, seed=3)
    for _ in range(4):
        two.next()  # 64 samples consumed
    one = TaskStream(lengths, 8, seed=3)
    one.load_state_dict(two.state_dict())
    assert (one.epoch, one.pos) == (0, 8)  # 8 batches of 8 = the same 64 samples


def test_sst_phrases_from_trees(tmp_path):
    from minbert.data.batching import read_sst_phrases

    f = tmp_path / "trees.txt"
    f.write_text(
        "(3 (2 It) (4 (2 's) (4 (3 a) (4 lovely))))\n"
        "(1 (2 not (2 closed)\n"  # malformed: unbalanced
        "(0 (2 It) (0 bad))\n"
    )
    r = read_sst_phrases(f, exclude={"bad"})
    got = dict(zip((t[0] for t in r.texts), r.labels.tolist(), strict=True))
    # every node once, with its own label; "It" keeps its first label; excluded text left out
    assert got == {
        "It 's a lovely": 3, "'s a lovely": 4, "a lovely": 4, "lovely": 4, "a": 3, "'s": 2, "It": 2, "It bad": 0
    }
    assert [(b.line, "malformed tree" in b.reason) for b in r.bad_rows] == [(2, True)]
    with pytest.raises(DataError, match=r"trees.txt:2: malformed tree"):
        read_sst_phrases(f, strict=True)


def test_sst_phrases_report_bad_bytes_and_empty_nodes_and_parse_any_depth(tmp_path):
    """A line that is not UTF-8 and a node with no words are reported with their lines; a tree
    nested 5,000 deep parses (no recursion limit); the good trees around them are kept."""
    from minbert.data.batching import read_sst_phrases

    f = tmp_path / "trees.txt"
    deep = "(1 " * 5000 + "deep" + ")" * 5000
    f.write_bytes(b"(3 (2 caf\xe9) (3 ok))\n(2 )\n" + deep.encode() + b"\r(4 fine)\r\n(2 a) (3 b)\n")
    r = read_sst_phrases(f)  # \r and \r\n end lines too, as in text mode
    assert dict(zip((t[0] for t in r.texts), r.labels.tolist(), strict=True)) == {"deep": 1, "fine": 4}
    assert [(b.line, b.reason) for b in r.bad_rows] == [
        (1, "malformed tree (not UTF-8 text (byte 9: invalid continuation byte))"),
        (2, "malformed tree (a node with no words at token 3)"),
        (5, "malformed tree (text after the tree)"),
    ]


def test_real_sst_train_trees_hold_the_phrase_labels(data_dir):
    from minbert.data.batching import read_sst_phrases

    r = read_sst_phrases(data_dir.parent / "sst-trees" / "train.txt")
    assert not r.bad_rows and len(r) > 150_000
    assert set(r.labels.tolist()) == {0, 1, 2, 3, 4}


def test_phrases_join_sst_train_and_respect_train_limit(data_dir, tiny_encoder):
    """tasks.sst.phrases_file adds phrase rows to SST train only (dev untouched), and
    train_limit caps the phrases too."""
    from minbert.config import load_config, replace
    from minbert.data.tokenizer import Tokenizer
    from minbert.tasks.splits import load_splits

    trees = data_dir.parent / "sst-trees" / "train.txt"
    cfg = load_config(None, [
        f"tasks.sst.phrases_file={trees}", "tasks.sst.train_limit=40", "tasks.sst.dev_limit=30",
        "output.test_predictions=false",
    ])
    cfg = replace(cfg, tasks={"sst": cfg.tasks["sst"]})
    splits = load_splits(cfg, data_dir, Tokenizer(tiny_encoder, 64))
    train, dev = splits["train"]["sst"], splits["dev"]["sst"]
    assert len(dev) == 30
    phrase_ids = [i for i in train.ids if i.startswith("phrase-")]
    assert len(train) - len(phrase_ids) == 40 and len(phrase_ids) == 40


def test_evaluation_loads_no_train_file(data_dir, tiny_encoder, monkeypatch):
    """load_splits(splits=("dev", "test")) reads only those files, and the dev rows are the
    same as a full load's."""
    from minbert.config import load_config
    from minbert.data.tokenizer import Tokenizer
    from minbert.tasks.splits import load_splits
    from minbert.tasks.table import task_table

    cfg = load_config(None, [f"tasks.{t}.dev_limit=20" for t in ("sst", "qqp", "sts")])
    table = task_table(cfg)
    tok = Tokenizer(tiny_encoder, 64)
    full = load_splits(cfg, data_dir, tok, table)
    read = []
    def spy(original):
        def read_split(path, split, *args, **kwargs):
            read.append(split)
            return original(path, split, *args, **kwargs)

        return read_split

    for task in table.values():
        monkeypatch.setattr(task, "read", spy(task.read))
    part = load_splits(cfg, data_dir, tok, table, splits=("dev", "test"))
    assert sorted(set(read)) == ["dev", "test"] and part["train"] == {}
    for name in ("sst", "qqp", "sts"):
        assert part["dev"][name].ids == full["dev"][name].ids
    assert part["test"].keys() == full["test"].keys()


def test_train_limit_is_a_seeded_stratified_sample(data_dir, tiny_encoder, caplog):
    """The cs224n files are not in random order (the first 1,600 SST rows are about half class
    3): a limited slice keeps each label's share of the whole file within 2 points."""
    import logging

    from minbert.config import from_dict
    from minbert.data.tokenizer import Tokenizer
    from minbert.tasks.base import get_task
    from minbert.tasks.splits import load_splits

    whole = get_task("sst").read(data_dir / "ids-sst-train.csv", "train")
    share = np.bincount(whole.labels, minlength=5) / len(whole)
    cfg = from_dict({
        "model": {"encoder": str(tiny_encoder)},
        "tasks": {"sst": {"train_limit": 1600, "dev_limit": 300}},
        "output": {"test_predictions": False},
    })
    with caplog.at_level(logging.INFO, logger="minbert"):
        splits = load_splits(cfg, data_dir, Tokenizer(tiny_encoder, 64))
    part = splits["train"]["sst"]
    assert len(part) == 1600 and len(splits["dev"]["sst"]) == 300
    part_share = np.bincount(part.labels, minlength=5) / len(part)
    assert np.abs(part_share - share).max() <= 0.02, (part_share, share)
    first = np.bincount(whole.labels[:1600], minlength=5) / 1600
    assert np.abs(first - share).max() > 0.02  # the first rows are no sample: the test can fail
    assert "train_limit 1600: a random sample" in caplog.text and "stratified by label" in caplog.text
    # seeded: the same seed gives the same rows, another seed other rows
    again = whole.sample(1600, seed=0, stratify=True)
    other = whole.sample(1600, seed=1, stratify=True)
    assert again.ids == whole.sample(1600, seed=0, stratify=True).ids and again.ids != other.ids
    assert len(set(again.ids)) == 1600 and set(again.ids) <= set(whole.ids)


def test_sample_of_a_regression_split_is_uniform_and_exact(data_dir):
    from minbert.tasks.base import get_task

    whole = get_task("sts").read(data_dir / "sts-train.csv", "train")
    part = whole.sample(500, seed=3)
    index = {i: k for k, i in enumerate(whole.ids)}
    rows = [index[i] for i in part.ids]
    assert len(part) == 500 and rows == sorted(rows) and len(set(rows)) == 500
    assert np.allclose(part.labels, whole.labels[rows]) and [whole.texts[k] for k in rows] == part.texts
    assert whole.sample(None, seed=3) is whole and whole.sample(10**6, seed=3) is whole


def test_a_sums_file_that_is_not_utf8_or_holds_odd_lines_is_reported_not_raised(tmp_path, caplog):
    """verify_checksums: a SHA256SUMS of other bytes is not used (one warning); a line that is
    not '<64 hex> <file>' is skipped with its line number; the good lines still check the files."""
    import hashlib

    (tmp_path / "a.csv").write_text("x\n")
    good = hashlib.sha256(b"x\n").hexdigest()
    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{good.upper()}  a.csv\nnot a sum line\n{'0' * 64}  *b.csv\n")
    (tmp_path / "b.csv").write_text("y\n")
    with caplog.at_level(logging.WARNING, logger="minbert.data.batching"):
        problems = verify_checksums(tmp_path, ["a.csv", "b.csv"])
    assert problems == [f"{tmp_path / 'b.csv'}: SHA-256 does not match SHA256SUMS (file changed?)"]
    assert f"{sums}:2: not a '<sha256> <file>' line, skipped" in caplog.messages
    caplog.clear()
    sums.write_bytes(b"\xff\xfe" + good.encode() + b"  a.csv\n")
    with caplog.at_level(logging.WARNING, logger="minbert.data.batching"):
        assert verify_checksums(tmp_path, ["a.csv"]) == []
    assert caplog.messages == [f"{sums}: not UTF-8 text (byte 0: invalid start byte); no SHA-256 checked"]
