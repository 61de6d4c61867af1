"""The tabular reader (minbert.data.readers): one record per physical line, every data line kept
or reported, BOMs dropped, and file inference (test splits, ``predict --input``) that never
drops an id. Property tests write files with stray quotes, tabs, LF/CRLF/CR line ends, a BOM and
empty fields, and check every line's fate against what was written."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minbert.cli import main
from minbert.data.readers import physical_lines, read_records
from minbert.errors import DataError
from minbert.tasks.base import get_task
from minbert_testkit import base_config, shared_run

PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)

# characters of generated texts: quotes, both delimiters, and characters that other line
# splitters (str.splitlines) take for line ends; never CR or LF (a field cannot hold a line break)
CHARS = st.sampled_from(list('ab Z"\t,é\x0c\x1c\x85\u2028'))
TEXT = st.text(CHARS, max_size=8)
WORD = st.text(st.sampled_from(list("abcxyz")), min_size=1, max_size=4)
ENDS = st.sampled_from(["\n", "\r\n", "\r"])


@dataclass
class Line:
    """One generated physical line and what the reader must make of it."""

    text: str  # without its line end
    end: str  # "\n", "\r\n", "\r" or "" (the last line, unterminated)
    keep: tuple | None = None  # (id, texts, label) expected for a kept row; None: bad (or blank)


def quote(field: str, delim: str, force: bool) -> str:
    """A field as a csv writer would write it on one line (quoted when it must be, or forced)."""
    if force or delim in field or field.startswith('"'):
        return '"' + field.replace('"', '""') + '"'
    return field


@st.composite
def table_line(draw, i: int, delim: str, labelled: bool, keep_empty: bool) -> Line:
    """A data line of the table layout [index, id, a, b, (label)]: well formed, or broken in
    one of several ways (stray quotes, a wrong field count, empty fields)."""
    rid = f"r{i}"
    texts = [draw(TEXT), draw(TEXT)]
    label = draw(st.sampled_from(["0", "1.5", " 4 ", "5.0", "", "x", "7"])) if labelled else None
    kind = draw(st.sampled_from(
        ["good", "good", "good", "unclosed", "after_quote", "inner_quote", "fields", "spaces", "no_id"]
    ))
    fields = [draw(st.sampled_from(["", str(i)])), draw(st.sampled_from([rid, f" {rid} "]))]
    fields += [quote(t, delim, draw(st.booleans())) for t in texts]
    if labelled:
        fields.append(quote(label, delim, draw(st.booleans())))
    k = 2 + draw(st.integers(0, 1))  # the text field to break
    if kind == "unclosed":  # an opening quote never closed on this line (the rest may hold tabs)
        fields[k] = '"' + draw(TEXT).replace('"', "")
        # no quote after it: a later quote could close it and leave a line that parses
        fields[k + 1 :] = [f.replace('"', "") for f in fields[k + 1 :]]
    elif kind == "after_quote":  # text after a closing quote
        fields[k] = '"' + texts[k - 2].replace('"', '""') + '"' + draw(WORD)
    elif kind == "inner_quote":  # a quote inside an unquoted field is plain text
        texts[k - 2] = draw(WORD) + '"' + draw(WORD)
        fields[k] = texts[k - 2]
    elif kind == "fields":
        fields.append(draw(WORD))
    elif kind == "no_id":
        fields[1] = draw(st.sampled_from(["", "  "]))
    text = "   " if kind == "spaces" else delim.join(fields)
    line = Line(text, draw(ENDS))
    if kind in ("good", "inner_quote"):
        stripped = tuple(t.strip() for t in texts)
        value = None
        if labelled:
            try:
                value = float(label)
            except ValueError:
                value = None
        ok_label = not labelled or (value is not None and 0 <= value <= 5)
        if ok_label and (keep_empty or all(stripped)):
            line.keep = (rid, stripped, value)
    return line


@st.composite
def table_file(draw, delim: str, labelled: bool, keep_empty: bool) -> tuple[str, list[Line]]:
    """(header, lines): 0-12 data lines and blank lines in random order and line ends."""
    n = draw(st.integers(0, 12))
    lines = [draw(table_line(i, delim, labelled, keep_empty)) for i in range(n)]
    for _ in range(draw(st.integers(0, 3))):
        lines.insert(draw(st.integers(0, len(lines))), Line("", draw(ENDS)))
    header = delim.join(["", "id", "a", "b"] + (["y"] if labelled else []))
    return header, lines


def write_lines(path: Path, header: str | None, lines: list[Line], bom: bool, last_end: bool) -> None:
    """Write the lines as UTF-8; a CR followed by a blank line's LF would read as one CRLF, so
    such a blank line is ended by CRLF."""
    out, prev = ["\ufeff" if bom else ""], "\n"
    if header is not None:
        out.append(header + "\n")
    for j, ln in enumerate(lines):
        end = ln.end if (j < len(lines) - 1 or last_end or not ln.text) else ""
        if prev == "\r" and not ln.text and end == "\n":
            end = "\r\n"
        out.append(ln.text + end)
        prev = end
    path.write_bytes("".join(out).encode("utf-8"))


def check(raw_or_error, lines: list[Line], first_line: int, labelled: bool) -> None:
    """kept + bad = data lines; the kept rows are exactly the well-formed ones, as written."""
    data = [(first_line + j, ln) for j, ln in enumerate(lines) if ln.text]
    kept = [(n, ln.keep) for n, ln in data if ln.keep is not None]
    if not kept:
        assert isinstance(raw_or_error, DataError)
        assert "no usable rows" in str(raw_or_error) or (not lines and "file is empty" in str(raw_or_error))
        return
    raw = raw_or_error
    assert not isinstance(raw, Exception), raw
    assert raw.data_lines == len(data) == len(raw) + len(raw.bad_rows)
    assert raw.blank_lines == len(lines) - len(data)
    assert [b.line for b in raw.bad_rows] == [n for n, ln in data if ln.keep is None]
    assert raw.ids == [k[0] for _, k in kept]
    assert raw.texts == [k[1] for _, k in kept]
    if labelled:
        np.testing.assert_allclose(raw.labels, [k[2] for _, k in kept], rtol=0, atol=1e-6)
    else:
        assert raw.labels is None


def attempt(fn):
    try:
        return fn()
    except DataError as e:
        return e


@PROPERTY
@given(data=table_file("\t", True, False), bom=st.booleans(), last_end=st.booleans())
def test_property_tsv_cs224n_layout_dev(tmp_path, data, bom, last_end):
    header, lines = data
    path = tmp_path / "sts-dev.csv"
    header = header.replace("\ty", "\tsimilarity").replace("\ta\tb", "\tsentence1\tsentence2")
    write_lines(path, header, lines, bom, last_end)
    check(attempt(lambda: get_task("sts").read(path, "dev")), lines, 2, True)


@PROPERTY
@given(data=table_file("\t", False, True), bom=st.booleans(), last_end=st.booleans())
def test_property_tsv_cs224n_layout_test_split_keeps_empty_text(tmp_path, data, bom, last_end):
    header, lines = data
    path = tmp_path / "sts-test-student.csv"
    write_lines(path, header.replace("\ta\tb", "\tsentence1\tsentence2"), lines, bom, last_end)
    check(attempt(lambda: get_task("sts").read(path, "test")), lines, 2, False)


@PROPERTY
@given(data=table_file(",", True, False), bom=st.booleans(), last_end=st.booleans())
def test_property_csv(tmp_path, data, bom, last_end):
    header, lines = data
    path = tmp_path / "f.csv"
    write_lines(path, header, lines, bom, last_end)
    check(attempt(lambda: read_records(path, ["a", "b"], "y", _score, id_column="id", label_dtype=np.float64)),
          lines, 2, True)


def _score(raw: str) -> float:
    value = float(raw)
    if not 0 <= value <= 5:
        raise ValueError("outside [0, 5]")
    return value


@st.composite
def jsonl_line(draw, i: int) -> Line:
    """A JSON object line (texts may hold quotes, tabs, escaped line breaks), or a broken one."""
    rid = f"j{i}"
    a, b = draw(st.text(st.sampled_from(list('ab "\t\r\n\\é\u2028')), max_size=8)), draw(TEXT)
    label = draw(st.sampled_from([0, 2.5, "4", " 1 ", 9, None]))
    obj = {"id": draw(st.sampled_from([rid, f" {rid} "])), "a": a, "b": b}
    if label is not None:
        obj["y"] = label
    kind = draw(st.sampled_from(
        ["good", "good", "good", "stray_start", "stray_end", "cut", "list", "spaces", "b_missing", "b_number"]
    ))
    if kind == "b_missing":
        del obj["b"]
    elif kind == "b_number":
        obj["b"] = 3
    text = json.dumps(obj, ensure_ascii=draw(st.booleans()))
    if kind == "stray_start":
        text = '{"' + text[1:]
    elif kind == "stray_end":
        text += '"'
    elif kind == "cut":
        text = text[: draw(st.integers(1, len(text) - 1))]
    elif kind == "list":
        text = json.dumps([rid, a])
    elif kind == "spaces":
        text = " \t "
    line = Line(text, draw(ENDS))
    value = None if label is None else float(label)
    if kind == "good" and value is not None and 0 <= value <= 5 and a.strip() and b.strip():
        line.keep = (rid, (a.strip(), b.strip()), value)
    return line


@st.composite
def jsonl_file(draw) -> list[Line]:
    lines = [draw(jsonl_line(i)) for i in range(draw(st.integers(0, 12)))]
    for _ in range(draw(st.integers(0, 3))):
        lines.insert(draw(st.integers(0, len(lines))), Line("", draw(ENDS)))
    return lines


@PROPERTY
@given(lines=jsonl_file(), bom=st.booleans(), last_end=st.booleans())
def test_property_jsonl(tmp_path, lines, bom, last_end):
    path = tmp_path / "f.jsonl"
    write_lines(path, None, lines, bom, last_end)
    check(attempt(lambda: read_records(path, ["a", "b"], "y", _score, id_column="id", label_dtype=np.float64)),
          lines, 1, True)


# ----------------------------------------------------------------------------------------------
# line ends, BOM


def test_physical_lines_end_at_lf_crlf_and_lone_cr_only(tmp_path):
    path = tmp_path / "x.txt"
    path.write_bytes(b"a\nb\r\nc\rd\r\r\ne\x0cf\xe2\x80\xa8g\xc2\x85h\n\ni\r")
    assert list(physical_lines(path)) == [
        (1, b"a"), (2, b"b"), (3, b"c"), (4, b"d"), (5, b""), (6, "e\x0cf\u2028g\x85h".encode()), (7, b""), (8, b"i"),
    ]


@pytest.mark.parametrize("suffix", ["csv", "tsv", "jsonl"])
def test_a_bom_is_dropped(tmp_path, suffix):
    path = tmp_path / f"in.{suffix}"
    rows = [("u1", "first text"), ("u2", "second text")]
    if suffix == "jsonl":
        body = "".join(json.dumps({"id": i, "sentence": t}) + "\n" for i, t in rows)
    else:
        d = "," if suffix == "csv" else "\t"
        body = f"id{d}sentence\n" + "".join(f"{i}{d}{t}\n" for i, t in rows)
    path.write_bytes(b"\xef\xbb\xbf" + body.encode())
    raw = read_records(path, ["sentence"], id_column="id")
    assert raw.ids == ["u1", "u2"] and raw.texts == [("first text",), ("second text",)] and raw.bad_rows == []


# ----------------------------------------------------------------------------------------------
# real data: a stray quote in the middle of a copy of quora-dev


def test_unclosed_quote_in_a_copy_of_real_quora_dev(data_dir, tmp_path, caplog):
    original = (data_dir / "quora-dev.csv").read_text(encoding="utf-8").split("\n")[:401]  # header + 400 rows
    fields = original[199].split("\t")  # line 200
    assert '"' not in fields[2]
    fields[2] = '"' + fields[2]  # an opening quote never closed
    copy = tmp_path / "quora-dev.csv"
    copy.write_text("\n".join(original[:199] + ["\t".join(fields)] + original[200:]) + "\n", encoding="utf-8")
    caplog.set_level(logging.INFO, logger="minbert.data.readers")
    raw = get_task("qqp").read(copy, "dev")
    assert [(b.line, b.reason.split(" (")[0]) for b in raw.bad_rows] == [(200, "bad quoting")]
    assert len(raw) == 399 and raw.data_lines == 400
    assert f"{copy}: 400 data lines: 399 kept, 1 bad\n" in caplog.text
    # the kept rows are the original rows (read line by line by the csv module), in order
    want = [next(csv.reader([ln], delimiter="\t")) for n, ln in enumerate(original[1:], 2) if n != 200]
    assert raw.ids == [r[1] for r in want]
    assert raw.texts == [(r[2].strip(), r[3].strip()) for r in want]
    assert raw.labels.tolist() == [int(float(r[4])) for r in want]


def test_empty_text_is_kept_in_test_splits_only(tmp_path, caplog):
    header = "\tid\tsentence\n"
    (tmp_path / "t.csv").write_text(header + "0\ta\tFine .\n1\tb\t\n2\tc\t   \n")
    caplog.set_level(logging.WARNING, logger="minbert.data.readers")
    raw = get_task("sst").read(tmp_path / "t.csv", "test")
    assert raw.ids == ["a", "b", "c"] and raw.texts == [("Fine .",), ("",), ("",)] and raw.bad_rows == []
    assert f"{tmp_path / 't.csv'}: 2 row(s) with an empty text are predicted from an empty input" in caplog.text
    (tmp_path / "d.csv").write_text("\tid\tsentence\tsentiment\n0\ta\tFine .\t1\n1\tb\t \t2\n")
    dev = get_task("sst").read(tmp_path / "d.csv", "dev")
    assert dev.ids == ["a"] and [(b.line, b.reason) for b in dev.bad_rows] == [(3, "empty text in column 'sentence'")]


def test_blank_lines_are_counted(tmp_path, caplog):
    path = tmp_path / "x.tsv"
    path.write_bytes(b"id\tsentence\r\n\r\na\tone\r\n\rb\ttwo\n\n")
    caplog.set_level(logging.INFO, logger="minbert.data.readers")
    raw = read_records(path, ["sentence"], id_column="id")
    assert raw.ids == ["a", "b"] and (raw.data_lines, raw.blank_lines) == (2, 3)
    assert f"{path}: 2 data lines: 2 kept, 0 bad (+ 3 blank lines skipped)" in caplog.text


# ----------------------------------------------------------------------------------------------
# the command line on the tiny encoder


@pytest.fixture(scope="module")
def run(tiny_encoder, data_dir, tmp_path_factory):
    return shared_run(tiny_encoder, data_dir, tmp_path_factory)


def predict_file(run_dir: Path, task: str, src: Path, out: Path) -> list[list[str]]:
    code = main([
        "predict", str(run_dir), f"--task={task}", f"--input={src}", f"--output={out}", "--device=cpu", "--no-progress"
    ])
    assert code == 0
    lines = out.read_text().splitlines()
    return [ln.split(",") for ln in lines]


def sentiment_values(run_dir: Path, texts: list[str]) -> list[str]:
    from minbert.inference.predictor import load

    return [str(int(v)) for v in load(run_dir, device="cpu").outputs("sst", texts).argmax(-1)]


def test_predict_input_with_an_unclosed_quote_loses_no_other_row(run, tmp_path, caplog):
    src = tmp_path / "in.csv"
    src.write_text(
        'id,sentence\nr1,a fine film\nr2,"an unclosed quote\nr3,dull and long\nr4,"quoted, with a comma"\nr5,just ok\n'
    )
    rows = predict_file(run.run_dir, "sst", src, tmp_path / "out.csv")
    texts = ["a fine film", "dull and long", "quoted, with a comma", "just ok"]
    want = [[i, v] for i, v in zip(["r1", "r3", "r4", "r5"], sentiment_values(run.run_dir, texts), strict=True)]
    assert rows == [["id", "Predicted_Sentiment"]] + want
    assert f"skipped {src}:3: bad quoting" in caplog.text
    assert f"{src}: 5 data lines: 4 kept, 1 bad" in caplog.text


@pytest.mark.parametrize("suffix", ["csv", "jsonl"])
def test_predict_input_with_a_bom_keeps_its_ids(run, tmp_path, suffix):
    src = tmp_path / f"in.{suffix}"
    if suffix == "csv":
        body = "id,sentence\nx7,a fine film\nx9,dull\n"
    else:
        body = '{"id": "x7", "sentence": "a fine film"}\n{"id": "x9", "sentence": "dull"}\n'
    src.write_bytes(b"\xef\xbb\xbf" + body.encode())
    rows = predict_file(run.run_dir, "sst", src, tmp_path / "out.csv")
    want = sentiment_values(run.run_dir, ["a fine film", "dull"])
    assert rows == [["id", "Predicted_Sentiment"], ["x7", want[0]], ["x9", want[1]]]


def test_predict_input_predicts_empty_texts(run, tmp_path, caplog):
    src = tmp_path / "in.tsv"
    src.write_text("id\tsentence1\tsentence2\np1\tA man sings.\tA man sings.\np2\t\tA dog.\np3\t \t\n")
    rows = predict_file(run.run_dir, "qqp", src, tmp_path / "out.csv")
    from minbert.inference.predictor import load

    raw = load(run.run_dir, device="cpu").outputs("qqp", ["A man sings.", "", ""], ["A man sings.", "A dog.", ""])
    want = [[i, str(int(v > 0))] for i, v in zip(["p1", "p2", "p3"], raw, strict=True)]
    assert rows == [["id", "Predicted_Is_Paraphrase"]] + want
    assert f"{src}: 2 row(s) with an empty text are predicted from an empty input" in caplog.text


def test_predict_input_without_a_usable_row_is_one_line_exit_2(run, tmp_path, capsys):
    src = tmp_path / "in.csv"
    src.write_text('id,sentence\nr1,"never closed\n\nr2,a,b\n')
    code = main(["predict", str(run.run_dir), "--task=sst", f"--input={src}", "--device=cpu", "--no-progress"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {src}: no usable rows (2 bad of 2 data lines; the first: line 2: bad quoting (unexpected end of data))"
    ]


def test_predict_input_that_is_a_folder_is_one_line_exit_2(run, tmp_path, capsys):
    folder = tmp_path / "dd.csv"
    folder.mkdir()
    code = main(["predict", str(run.run_dir), "--task=sst", f"--input={folder}", "--device=cpu", "--no-progress"])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {folder}: is a folder, not a file"]


def test_a_run_without_best_weights_predicts_from_its_last_checkpoint_and_says_so(run, tmp_path, caplog):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run.run_dir, copy)
    shutil.rmtree(copy / "checkpoints" / "best")
    src = tmp_path / "in.csv"
    src.write_text("id,sentence\nr1,a fine film\n")
    with caplog.at_level(logging.WARNING, logger="minbert"):
        rows = predict_file(copy, "sst", src, tmp_path / "out.csv")
    assert [r[0] for r in rows[1:]] == ["r1"]
    last = json.loads((copy / "checkpoints" / "last.json").read_text())["dir"]
    assert f"{copy}: no best weights (checkpoints/best); using the last checkpoint, {last}" in caplog.text


def test_training_predicts_every_test_id_even_with_empty_text(tiny_encoder, data_dir, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    for name in ("ids-sst-train.csv", "ids-sst-dev.csv"):
        (data / name).symlink_to(data_dir / name)
    (data / "ids-sst-test-student.csv").write_text(
        "0\t\tid\tsentence\n1\t0.0\tt1\tA fine film .\n2\t1.0\tt2\t\n3\t2.0\tt3\t  \n4\t3.0\tt4\tDull .\n"
    )
    cfg = base_config(tiny_encoder)
    cfg["output"] = {**cfg["output"], "test_predictions": True}
    cfg["tasks"] = {"sst": {"train_limit": 8, "dev_limit": 8, "batch_size": 8}}
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    code = main(["train", "--config", str(tmp_path / "c.yaml"), "--data-dir", str(data),
                 "--run-dir", str(tmp_path / "r"), "--no-progress", "--train.max_steps=1"])
    assert code == 0
    lines = (tmp_path / "r" / "predictions" / "sst-test.csv").read_text().splitlines()
    want = sentiment_values(tmp_path / "r", ["A fine film .", "", "", "Dull ."])
    assert lines == ["id,Predicted_Sentiment"] + [
        f"{i},{v}" for i, v in zip(["t1", "t2", "t3", "t4"], want, strict=True)
    ]


def test_a_lone_surrogate_in_a_jsonl_text_is_a_bad_row_not_a_crash(tmp_path):
    """JSON may escape a lone surrogate ("\\ud800"): that line is a reported bad row, the others are
    kept, and the tokenizer never sees it."""
    from minbert.data.readers import read_records

    path = tmp_path / "in.jsonl"
    lines = [
        '{"id": "a", "sentence": "fine"}',
        '{"id": "b", "sentence": "\\ud800 hi"}',
        '{"id": "c", "sentence": "ok"}',
    ]
    path.write_text("\n".join(lines) + "\n")
    raw = read_records(path, ["sentence"], id_column="id")
    assert raw.ids == ["a", "c"] and [b.line for b in raw.bad_rows] == [2]
    assert "not valid Unicode" in raw.bad_rows[0].reason


@pytest.mark.parametrize("suffix, sep", [(".csv", ","), (".tsv", "\t")])
def test_a_header_that_names_a_read_column_twice_is_one_line(tmp_path, suffix, sep):
    """Which of two 'sentence' columns holds the text is not ours to guess: a DataError naming the
    column; a repeated column that is not read does not matter."""
    f = tmp_path / f"in{suffix}"
    f.write_text(sep.join(["id", "sentence", "sentence"]) + "\n" + sep.join(["a", "x", "y"]) + "\n")
    with pytest.raises(DataError) as ei:
        read_records(f, ["sentence"], id_column="id")
    assert str(ei.value) == f"{f}: line 1: the header names column 'sentence' 2 times"
    f.write_text(sep.join(["id", "sentence", "note", "note"]) + "\n" + sep.join(["a", "x", "1", "2"]) + "\n")
    assert read_records(f, ["sentence"], id_column="id").texts == [("x",)]


def test_a_jsonl_object_with_a_key_twice_is_a_bad_row(tmp_path, caplog):
    f = tmp_path / "in.jsonl"
    f.write_text('{"id": "a", "sentence": "x", "sentence": "y"}\n{"id": "b", "sentence": "z"}\n')
    with caplog.at_level(logging.INFO):
        raw = read_records(f, ["sentence"], id_column="id")
    assert raw.ids == ["b"]
    assert [(b.line, b.reason) for b in raw.bad_rows] == [(1, "key 'sentence' given twice in one object")]


def test_ids_on_several_rows_are_kept_and_warned_about_once(tmp_path, caplog):
    f = tmp_path / "in.tsv"
    rows = ["id\tsentence", "a\tone", "b\ttwo", "a\tthree", "c\tfour", "b\tfive", "a\tsix"]
    f.write_text("\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING):
        raw = read_records(f, ["sentence"], id_column="id")
    assert raw.ids == ["a", "b", "a", "c", "b", "a"]  # every row kept
    warned = [r.getMessage() for r in caplog.records if "more than one row" in r.getMessage()]
    assert warned == [f"{f}: 2 id(s) appear on more than one row, all kept (the first: 'a', lines 2 and 4)"]
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        read_records(f, ["sentence"])  # no id column: ids are line numbers, never repeated
    assert not [r for r in caplog.records if "more than one row" in r.getMessage()]
