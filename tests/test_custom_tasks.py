"""Custom tasks from the config (minbert.custom): a small pair-classification task (tests/minbert_testkit.py)
in CSV (train), JSONL (dev) and TSV (test), trained with the built-in tasks and alone."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from minbert.config import from_dict, load_config
from minbert.data.readers import read_records
from minbert.errors import ConfigError, DataError
from minbert.inference.predictor import load
from minbert.tasks.base import TASKS
from minbert.tasks.custom import build_custom_task
from minbert.tasks.metrics import macro_f1
from minbert.tasks.table import task_table
from minbert.training.trainer import train
from minbert_testkit import (
    NAMES,
    base_config,
    pair_rows,
    para_definition,
    para_dir,
    shared_run,
)


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    return para_dir(tmp_path_factory)


def definition(task_dir: Path) -> dict:
    return para_definition(task_dir)


@pytest.fixture(scope="module")
def joint_run(tiny_encoder, data_dir, tmp_path_factory):
    """The custom task trained alongside the built-in three (the session's shared run)."""
    return shared_run(tiny_encoder, data_dir, tmp_path_factory)


def test_no_tasks_section_trains_the_builtins_and_every_custom_task(task_dir):
    cfg = from_dict({"custom_tasks": {"para": definition(task_dir)}})
    assert list(cfg.tasks) == ["sst", "qqp", "sts", "para"]
    cfg = from_dict({"custom_tasks": {"para": definition(task_dir)}, "tasks": {"para": {}}})
    assert list(cfg.tasks) == ["para"]


def read_pred(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    assert lines[0] == "id,Predicted"
    return dict(ln.split(",") for ln in lines[1:])


def test_joint_run_metrics_match_the_prediction_files(joint_run, task_dir):
    run_dir, summary = joint_run.run_dir, joint_run.summary
    assert set(summary["dev"]) == {"sst_acc", "qqp_acc", "sts_pearson", "para_acc", "overall"}
    dev = {r["uid"]: r["verdict"] for r in map(json.loads, (task_dir / "dev.jsonl").read_text().splitlines()[:24])}
    pred = read_pred(run_dir / "predictions" / "para-dev.csv")
    assert set(pred) == set(dev) and set(pred.values()) <= set(NAMES)
    acc = np.mean([pred[i] == dev[i] for i in dev])
    assert summary["dev"]["para_acc"] == pytest.approx(acc, abs=1e-12)
    gold = np.array([NAMES.index(dev[i]) for i in dev])
    guess = np.array([NAMES.index(pred[i]) for i in dev])
    assert summary["dev_all"]["para_macro_f1"] == pytest.approx(macro_f1(guess, gold, 2), abs=1e-12)
    primaries = [summary["dev"]["sst_acc"], summary["dev"]["qqp_acc"], (summary["dev"]["sts_pearson"] + 1) / 2, acc]
    assert summary["dev"]["overall"] == pytest.approx(np.mean(primaries), abs=1e-9)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["custom_tasks"]["para"]["label_names"] == NAMES


def test_predictor_reloads_the_custom_task(joint_run, task_dir):
    pred = load(joint_run.run_dir, device="cpu")  # registers the identical definition again: no error
    pairs = [("the red car", "the red car"), ("a big tree", "the slow dog ran")]
    out = pred.predict("para", pairs)
    raw = pred.outputs("para", [a for a, _ in pairs], [b for _, b in pairs])
    probs = np.exp(raw) / np.exp(raw).sum(-1, keepdims=True)
    for o, p in zip(out, probs, strict=True):
        assert o["label"] == int(p.argmax()) and o["name"] == NAMES[o["label"]]
        np.testing.assert_allclose(o["probabilities"], p, atol=1e-6)


def test_evaluate_in_a_new_process_reproduces_the_summary(joint_run, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "minbert", "evaluate", str(joint_run.run_dir), "--device=cpu"],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    flat = json.loads(proc.stdout.strip().splitlines()[-1])
    for k, v in joint_run.summary["dev_all"].items():
        assert flat[k] == pytest.approx(v, abs=1e-9), k


def test_custom_task_alone(task_dir, tiny_encoder, data_dir, tmp_path):
    raw = base_config(tiny_encoder) | {
        "custom_tasks": {"para": definition(task_dir)}, "tasks": {"para": {"batch_size": 8, "train_limit": 16}}
    }
    run = train(from_dict(raw), run_dir=tmp_path / "alone", data_dir=data_dir, progress=False)
    assert set(run.summary["dev_all"]) == {"para_acc", "para_macro_f1", "overall"}
    assert run.summary["dev"]["overall"] == run.summary["dev"]["para_acc"] and run.summary["steps"] == 2
    assert sorted(p.name for p in (run.run_dir / "predictions").iterdir()) == ["para-dev.csv"]
    assert len(read_pred(run.run_dir / "predictions" / "para-dev.csv")) == 24


def test_bad_rows_are_reported_with_file_line_and_reason(task_dir, caplog):
    task = build_custom_task("para", from_dict({"custom_tasks": {"para": definition(task_dir)}}).custom_tasks["para"])
    with caplog.at_level(logging.WARNING, logger="minbert"):
        raw = task.read(task_dir / "train.csv", "train")
    assert len(raw) == 49 and raw.labels[-1] == 1 and raw.ids[-1] == "ok-index"
    assert [str(b) for b in raw.bad_rows] == [
        f"{task_dir / 'train.csv'}:50: empty text in column 'second'",
        f"{task_dir / 'train.csv'}:51: bad label 'maybe' in column 'verdict': expected one of ['different', 'same'] "
        "or an integer 0..1",
    ]
    assert f"{task_dir / 'train.csv'}:51: bad label 'maybe'" in caplog.text
    dev = task.read(task_dir / "dev.jsonl", "dev")
    assert len(dev) == 24 and [str(b) for b in dev.bad_rows] == [
        f"{task_dir / 'dev.jsonl'}:25: not valid JSON (Expecting property name enclosed in double quotes)"
    ]
    with pytest.raises(DataError, match=r"train.csv:50: empty text in column 'second' \(strict mode\)"):
        task.read(task_dir / "train.csv", "train", strict=True)
    test = task.read(task_dir / "test.tsv", "test")
    assert test.labels is None and len(test) == 8 and test.texts[0][0] == pair_rows(8, 3)[0][1]


def test_json_values_of_the_wrong_kind_are_named_in_the_bad_row_reason(task_dir, tmp_path):
    task = build_custom_task("para", from_dict({"custom_tasks": {"para": definition(task_dir)}}).custom_tasks["para"])
    path = tmp_path / "kinds.jsonl"
    rows = [
        {"uid": "a", "first": "x", "second": "y", "verdict": "same"},
        {"uid": "b", "first": "x", "second": "y", "verdict": True},
        {"uid": ["c"], "first": "x", "second": "y", "verdict": "same"},
        {"uid": "d", "first": "x", "second": "y", "verdict": {"v": 1}},
        {"uid": "e", "first": "x", "second": "y"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    got = task.read(path, "dev")
    assert got.ids == ["a"] and [str(b) for b in got.bad_rows] == [
        f"{path}:2: label in column 'verdict' is a JSON boolean, not a string or number",
        f"{path}:3: id in column 'uid' is a JSON array, not a string or number",
        f"{path}:4: label in column 'verdict' is a JSON object, not a string or number",
        f"{path}:5: missing label in column 'verdict'",
    ]


def test_regression_task_reads_a_range(tmp_path):
    (tmp_path / "r.jsonl").write_text(
        '{"t": "a", "y": 0.5}\n{"t": "b", "y": 3}\n{"t": "c", "y": 1.5}\n{"t": 7, "y": 1}\n'
    )
    rate = {"kind": "regression", "range": [0, 1], "files": {"train": "r.jsonl", "dev": "r.jsonl"},
            "columns": {"text": "t", "label": "y"}}
    d = from_dict({"custom_tasks": {"rate": rate}}).custom_tasks["rate"]
    task = build_custom_task("rate", d)
    raw = task.read(tmp_path / "r.jsonl", "train")
    assert raw.ids == ["1"] and raw.labels.tolist() == [0.5] and raw.labels.dtype == np.float32
    assert [b.reason for b in raw.bad_rows] == [
        "bad label '3' in column 'y': outside [0, 1]", "bad label '1.5' in column 'y': outside [0, 1]",
        "'t' is not a string",
    ]
    assert task.output_range == (0.0, 1.0) and task.kind == "regression" and not task.pair


@pytest.mark.parametrize(
    "change, message",
    [
        ({"kind": None}, "custom_tasks.para.kind is required"),
        ({"kind": "ranking"}, "custom_tasks.para.kind: 'ranking' is not one of"),
        ({"input": "single"}, "custom_tasks.para.columns.text_b is set but input is 'single'"),
        ({"label_names": None}, "custom_tasks.para: a classification task needs label_names or num_labels"),
        ({"label_names": ["x"]}, "custom_tasks.para.label_names: at least 2 distinct names"),
        ({"range": [0, 1]}, "custom_tasks.para.range is for regression tasks"),
        ({"files": {"train": "a.csv"}}, "custom_tasks.para.files.dev is required"),
        ({"files": {"train": "a.csv", "dev": "b.csv", "valid": "c.csv"}},
         "custom_tasks.para.files.valid: splits are train, dev and test"),
        ({"colour": "red"}, "unknown config key custom_tasks.para.colour"),
    ],
)
def test_invalid_definitions_are_config_errors(task_dir, change, message):
    d = {**definition(task_dir), **change}
    with pytest.raises(ConfigError) as e:
        task_table(from_dict({"custom_tasks": {"para": d}}))
    assert message in str(e.value)


def test_each_run_has_its_own_task_table(task_dir):
    """Custom tasks never enter the global registry: two configs that define 'para' differently
    get their own definitions side by side in one process."""
    cfg = from_dict({"custom_tasks": {"para": definition(task_dir)}})
    other = from_dict({"custom_tasks": {"para": {**definition(task_dir), "label_names": ["no", "yes"]}}})
    first, second = task_table(cfg), task_table(other)
    assert first["para"].definition == cfg.custom_tasks["para"] and first["para"].label_names == ("different", "same")
    assert second["para"].label_names == ("no", "yes")
    assert "para" not in TASKS and first["sst"] is TASKS["sst"] is second["sst"]
    with pytest.raises(ConfigError, match="'sst' is a built-in task"):
        task_table(from_dict({"custom_tasks": {"sst": definition(task_dir)}}))


def test_config_file_round_trip(task_dir, tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"custom_tasks": {"para": definition(task_dir)}, "tasks": {"para": {}}}))
    cfg = load_config(path)
    assert list(cfg.tasks) == ["para"] and cfg.custom_tasks["para"].label_names == ("different", "same")
    from minbert.config import dump_yaml

    (tmp_path / "again.yaml").write_text(dump_yaml(cfg))
    assert load_config(tmp_path / "again.yaml") == cfg


def test_read_records_file_errors(tmp_path):
    (tmp_path / "x.parquet").write_text("x")
    with pytest.raises(DataError, match=r"cannot tell the format from the suffix '.parquet'"):
        read_records(tmp_path / "x.parquet", ["a"])
    (tmp_path / "h.csv").write_text("id,text\n1,hello\n")
    with pytest.raises(DataError, match=r"h.csv: line 1: header has no column 'sentence'"):
        read_records(tmp_path / "h.csv", ["sentence"])


def test_cli_predict_input_with_the_custom_tasks_columns(joint_run, task_dir, tmp_path, capsys, caplog):
    from minbert.cli import main

    src = tmp_path / "in.tsv"
    src.write_text(
        "uid\tfirst\tsecond\nq1\tthe red car\tthe red car\nq2\tonly one\t\nq3\ta big tree\tthe slow dog\nq4\tx\n"
    )
    out = tmp_path / "out.csv"
    code = main([
        "predict", str(joint_run.run_dir), "--task=para", f"--input={src}", f"--output={out}", "--device=cpu",
        "--no-progress",
    ])
    err = capsys.readouterr().err
    assert code == 0, err
    assert f"skipped {src}:5: expected 3 fields, found 2" in caplog.text
    assert f"{src}: 4 data lines: 3 kept, 1 bad" in caplog.text
    got = read_pred(out)
    pred = load(joint_run.run_dir, device="cpu")
    want = pred.predict("para", [("the red car", "the red car"), ("a big tree", "the slow dog")])
    # an empty second text is predicted from the empty input, not dropped
    empty = int(pred.outputs("para", ["only one"], [""]).argmax(-1)[0])
    assert got == {"q1": want[0]["name"], "q2": NAMES[empty], "q3": want[1]["name"]}


def test_a_custom_task_must_be_defined_in_the_config_that_trains_it(task_dir):
    task_table(from_dict({"custom_tasks": {"para": definition(task_dir)}}))  # another run's definition
    with pytest.raises(ConfigError, match=r"tasks.para: unknown task .*define your own under custom_tasks"):
        task_table(from_dict({"tasks": {"para": {}}}))


def test_train_with_a_bad_definition_is_one_line_exit_2(task_dir, tiny_encoder, data_dir, tmp_path, capsys):
    from minbert.cli import main

    cfg = tmp_path / "bad.yaml"
    d = {**definition(task_dir), "label_names": None, "num_labels": 1}
    cfg.write_text(
        yaml.safe_dump({"custom_tasks": {"odd": d}, "tasks": {"odd": {}}, "model": {"encoder": str(tiny_encoder)}})
    )
    code = main(
        ["train", "--config", str(cfg), "--data-dir", str(data_dir), "--run-dir", str(tmp_path / "r"), "--no-progress"]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: custom_tasks.odd.num_labels: at least 2 and at most 2**31 - 1, got 1"]


def test_a_head_too_large_to_allocate_is_one_line_exit_2(task_dir, tiny_encoder, data_dir, tmp_path, capsys):
    """num_labels of 10^9: the head's weight (10^9 x hidden floats, terabytes) cannot be allocated;
    the run stops with one line naming the task, not an allocator traceback."""
    from minbert.cli import main

    cfg = tmp_path / "huge.yaml"
    d = {**definition(task_dir), "label_names": None, "num_labels": 10**9}
    cfg.write_text(
        yaml.safe_dump({"custom_tasks": {"huge": d}, "tasks": {"huge": {}}, "model": {"encoder": str(tiny_encoder)}})
    )
    code = main(
        ["train", "--config", str(cfg), "--data-dir", str(data_dir), "--run-dir", str(tmp_path / "r"), "--no-progress"]
    )
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if ln.startswith("error: ")]
    hidden = json.loads((tiny_encoder / "config.json").read_text())["hidden_size"]
    assert code == 2 and err == [f"error: tasks.huge: its head (1000000000 outputs from {hidden} features) does not "
                                 "fit in memory; check num_labels or label_names"]
