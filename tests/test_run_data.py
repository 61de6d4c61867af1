"""A run's own commands use its own data: ``train --resume``, ``evaluate``, ``ensemble``, the
Python API and the experiment suite take the data folder the run recorded in its
``provenance.json`` (unless ``--data-dir`` is given) and refuse data files whose SHA-256 differs
from the recorded sums (unless ``--allow-data-change``).

One tiny run (SST only, 24 train / 24 dev rows, the tiny random encoder) is trained once with a
relative ``data.dir`` ("data"); each test copies it with its data folder ("a") and sets up
another folder ("b") holding other SST rows under the same relative name, as in a working
directory the run was not made from.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import shutil
from pathlib import Path

import pytest

from minbert.cli import main
from minbert.config import from_dict, load_config
from minbert.errors import CheckpointError, DataChangedError
from minbert.runs import resolve_run_data_dir
from minbert.training.trainer import train

ROWS = 24
SST = ("ids-sst-train.csv", "ids-sst-dev.csv")


def write_slice(src: Path, dst: Path, start: int) -> Path:
    """The header and data lines ``start .. start + ROWS`` of the SST train and dev files."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in SST:
        lines = (src / name).read_text(encoding="utf-8").splitlines(keepends=True)
        (dst / name).write_text("".join(lines[:1] + lines[1 + start : 1 + start + ROWS]), encoding="utf-8")
    return dst


def file_ids(path: Path, delimiter: str = ",") -> list[str]:
    """The ``id`` column of a prediction file (or, with ``delimiter="\\t"``, of a data file)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter=delimiter))
    col = [h.strip() for h in rows[0]].index("id")
    return [r[col].strip() for r in rows[1:] if r]


def dev_prediction_ids(run_dir: Path) -> list[str]:
    return sorted(file_ids(run_dir / "predictions" / "sst-dev.csv"))


def data_ids(folder: Path) -> list[str]:
    return sorted(file_ids(folder / "ids-sst-dev.csv", "\t"))


def one_error_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0]


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_encoder, data_dir) -> Path:
    work = tmp_path_factory.mktemp("made")
    write_slice(data_dir, work / "data", 0)
    raw = {
        "model": {"encoder": str(tiny_encoder)},
        "data": {"dir": "data"},  # relative to the working directory
        "tasks": {"sst": {"batch_size": 8}},
        "train": {"epochs": 1, "device": "cpu", "seed": 0},
        "optim": {"lr": 1e-3},
        "output": {"report_to": "none", "plot": False, "test_predictions": False},
    }
    with contextlib.chdir(work):
        train(from_dict(raw), run_dir=work / "run", progress=False)
    return work


@pytest.fixture
def env(made, tmp_path, data_dir, monkeypatch) -> dict[str, Path]:
    """run: a copy of the run, made on a: a copy of its data folder; b: a working directory whose
    data/ (the config's relative data.dir) holds other SST rows; b is the working directory."""
    a = tmp_path / "a"
    shutil.copytree(made, a)
    prov_path = a / "run" / "provenance.json"
    prov = json.loads(prov_path.read_text())
    assert prov["data_dir"] == str((made / "data").resolve())
    assert sorted(prov["data_sha256"]) == sorted(SST)  # no test file in the folder: not recorded
    prov_path.write_text(json.dumps(prov | {"data_dir": str((a / "data").resolve())}))
    b = write_slice(data_dir, tmp_path / "b" / "data", ROWS).parent
    assert set(data_ids(a / "data")).isdisjoint(data_ids(b / "data"))
    monkeypatch.chdir(b)
    monkeypatch.delenv("MINBERT_DATA_DIR", raising=False)
    shutil.rmtree(a / "run" / "predictions")  # written again by whatever reads the data
    return {"run": a / "run", "a": a / "data", "b": b / "data", "tmp": tmp_path}


def change_dev_file(folder: Path) -> None:
    """Append one well-formed row, id ``added-row``."""
    with open(folder / "ids-sst-dev.csv", "a", encoding="utf-8") as fh:
        fh.write("999\tadded-row\ta new sentence .\t2\n")


def resume(run: Path, *extra: str) -> int:
    return main(["train", "--resume", str(run), "--no-progress", *extra])


# ----------------------------------------------------------------------------------------------
# train --resume


def test_resume_uses_the_recorded_folder_not_the_configs_relative_one(env):
    assert resume(env["run"]) == 0
    assert dev_prediction_ids(env["run"]) == data_ids(env["a"])


def test_resume_on_changed_data_is_one_line_naming_the_files(env, capsys):
    change_dev_file(env["a"])
    (env["a"] / "ids-sst-train.csv").unlink()
    assert resume(env["run"]) == 2
    assert one_error_line(capsys) == (
        f"error: {env['run']}: data changed since the run was made: ids-sst-dev.csv, ids-sst-train.csv (missing) "
        "(pass --allow-data-change to use it anyway)"
    )
    assert not (env["run"] / "predictions").exists()  # stopped before reading or writing anything


def test_resume_with_allow_data_change_goes_on(env, caplog):
    change_dev_file(env["a"])
    with caplog.at_level(logging.WARNING, logger="minbert"):
        assert resume(env["run"], "--allow-data-change") == 0
    assert "added-row" in dev_prediction_ids(env["run"])
    assert dev_prediction_ids(env["run"]) == data_ids(env["a"])
    assert [r.getMessage() for r in caplog.records if "data changed" in r.getMessage()] == [
        f"{env['run']}: data changed since the run was made: ids-sst-dev.csv (used anyway)"
    ]


def test_data_dir_wins_and_is_checked(env, capsys):
    # another folder with other data: refused, both files named
    assert resume(env["run"], f"--data-dir={env['b']}") == 2
    assert one_error_line(capsys) == (
        f"error: {env['run']}: data changed since the run was made: ids-sst-dev.csv, ids-sst-train.csv "
        "(pass --allow-data-change to use it anyway)"
    )
    # an identical copy elsewhere is used, though the recorded folder has changed since
    copy = shutil.copytree(env["a"], env["tmp"] / "copy" / "data")
    change_dev_file(env["a"])
    assert resume(env["run"], f"--data-dir={copy}") == 0
    assert dev_prediction_ids(env["run"]) == data_ids(copy)
    # and the other folder, when allowed
    assert resume(env["run"], f"--data-dir={env['b']}", "--allow-data-change") == 0
    assert dev_prediction_ids(env["run"]) == data_ids(env["b"])


def test_a_run_without_recorded_sums_warns_once_and_goes_on(env, caplog):
    prov_path = env["run"] / "provenance.json"
    prov = json.loads(prov_path.read_text())
    del prov["data_sha256"]
    prov_path.write_text(json.dumps(prov))
    change_dev_file(env["a"])
    with caplog.at_level(logging.WARNING, logger="minbert"):
        assert resume(env["run"]) == 0
    warned = [r.getMessage() for r in caplog.records if "no data checksums recorded" in r.getMessage()]
    assert len(warned) == 1 and str(env["a"]) in warned[0]
    assert dev_prediction_ids(env["run"]) == data_ids(env["a"])  # still the recorded folder


def test_a_gone_recorded_folder_falls_back_to_the_configs_and_is_checked(env, capsys, caplog):
    gone = env["a"].rename(env["a"].with_name("moved"))
    assert resume(env["run"]) == 2  # b/data (the config's, from here) holds other data
    assert "data changed since the run was made: ids-sst-dev.csv, ids-sst-train.csv" in one_error_line(capsys)
    shutil.rmtree(env["b"])
    shutil.copytree(gone, env["b"])  # the same data under the config's relative name
    with caplog.at_level(logging.WARNING, logger="minbert"):
        assert resume(env["run"]) == 0
    assert dev_prediction_ids(env["run"]) == data_ids(gone)
    assert any("is gone; using data" in r.getMessage() for r in caplog.records)


def test_an_unreadable_provenance_is_one_line(env, capsys):
    (env["run"] / "provenance.json").write_text("{not json")
    assert resume(env["run"]) == 2
    line = one_error_line(capsys)
    assert line.startswith(f"error: {env['run'] / 'provenance.json'}: cannot read it (")
    assert line.endswith("restore it, or delete it to skip the data check")


def test_allow_data_change_without_resume_is_refused(env, capsys):
    assert main(["train", "--config", str(env["run"] / "config.yaml"), "--allow-data-change"]) == 2
    assert one_error_line(capsys) == (
        "error: --allow-data-change goes with --resume (a new run records the data it is given)"
    )


def test_python_api_resume(env):
    run = train(env["run"] / "config.yaml", run_dir=env["run"], resume=True, progress=False)
    assert run.summary["dev"]["sst_acc"] is not None
    assert dev_prediction_ids(env["run"]) == data_ids(env["a"])
    change_dev_file(env["a"])
    with pytest.raises(DataChangedError) as info:
        train(env["run"] / "config.yaml", run_dir=env["run"], resume=True, progress=False)
    assert info.value.files == ["ids-sst-dev.csv"]
    train(env["run"] / "config.yaml", run_dir=env["run"], resume=True, progress=False, allow_data_change=True)
    assert "added-row" in dev_prediction_ids(env["run"])


# ----------------------------------------------------------------------------------------------
# evaluate, ensemble


def test_evaluate_follows_the_rule(env, capsys):
    assert main(["evaluate", str(env["run"]), "--device=cpu"]) == 0
    assert dev_prediction_ids(env["run"]) == data_ids(env["a"])
    assert json.loads((env["run"] / "eval.json").read_text())["dev"]["sst_acc"] is not None
    capsys.readouterr()
    change_dev_file(env["a"])
    assert main(["evaluate", str(env["run"]), "--device=cpu"]) == 2
    assert one_error_line(capsys) == (
        f"error: {env['run']}: data changed since the run was made: ids-sst-dev.csv "
        "(pass --allow-data-change to use it anyway)"
    )
    assert main(["evaluate", str(env["run"]), "--device=cpu", "--allow-data-change"]) == 0
    assert "added-row" in dev_prediction_ids(env["run"])


def test_ensemble_follows_the_rule(env, capsys):
    second = shutil.copytree(env["run"], env["tmp"] / "second")
    out = env["tmp"] / "ens"
    assert main(["ensemble", str(env["run"]), str(second), f"--out={out}", "--device=cpu"]) == 0
    assert sorted(file_ids(out / "predictions" / "sst-dev.csv")) == data_ids(env["a"])
    capsys.readouterr()
    change_dev_file(env["a"])
    assert main(["ensemble", str(env["run"]), str(second), f"--out={out}", "--device=cpu"]) == 2
    assert "data changed since the run was made: ids-sst-dev.csv" in one_error_line(capsys)
    assert main(["ensemble", str(env["run"]), str(second), f"--out={out}", "--device=cpu", "--allow-data-change"]) == 0
    assert "added-row" in file_ids(out / "predictions" / "sst-dev.csv")


# ----------------------------------------------------------------------------------------------
# the experiment suite (and the ablation chain, which trains its rows through it)


def test_suite_resumes_a_row_on_its_data_and_retrains_it_on_changed_data(env):
    from minbert.experiments.rows import train_row as _train_row

    (env["run"] / "summary.json").unlink()  # an unfinished row with a checkpoint: resumed
    cfg = load_config(env["run"] / "config.yaml")
    before = (env["run"] / "metrics.jsonl").read_text()
    _train_row(cfg, env["run"], None, False, False)
    assert dev_prediction_ids(env["run"]) == data_ids(env["a"])  # its recorded folder, not b/data
    assert (env["run"] / "metrics.jsonl").read_text() == before  # resumed: no step trained again
    (env["run"] / "summary.json").unlink()
    _train_row(cfg, env["run"], str(env["b"]), False, False)  # other data: the row is trained anew
    assert json.loads((env["run"] / "provenance.json").read_text())["data_dir"] == str(env["b"].resolve())
    assert dev_prediction_ids(env["run"]) == data_ids(env["b"])


# ----------------------------------------------------------------------------------------------
# the rule itself


def test_resolve_run_data_dir_without_a_usable_record(tmp_path, monkeypatch):
    """(The order recorded > config's, and --data-dir first: tests/test_cli.py.)"""
    given = tmp_path / "given"
    given.mkdir()
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MINBERT_DATA_DIR", str(given))
    (run / "provenance.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match="provenance.json: not a JSON object"):
        resolve_run_data_dir(run, load_config(None, []))
    (run / "provenance.json").write_text(json.dumps({"data_dir": 5, "data_sha256": "?"}))  # wrong types: no record
    assert resolve_run_data_dir(run, load_config(None, [])) == given  # no data.dir: $MINBERT_DATA_DIR
    (run / "provenance.json").unlink()  # e.g. an export folder
    assert resolve_run_data_dir(run, load_config(None, ["data.dir=given"])) == Path("given")


def test_a_new_run_checks_its_data_folder_before_making_a_run_folder_and_saves_it(env, capsys, monkeypatch):
    """A missing data folder is one line naming where it came from (and, where the config's
    data.dir hides $MINBERT_DATA_DIR, saying so), and no run folder is made; a run given
    --data-dir saves that folder as data.dir in its config.yaml."""
    cfg, new, nope = str(env["run"] / "config.yaml"), env["tmp"] / "new", env["tmp"] / "nope"
    assert main(["train", "--config", cfg, "--run-dir", str(new), "--data-dir", str(nope), "--no-progress"]) == 2
    assert one_error_line(capsys) == (f"error: data folder {nope} ({nope.resolve()}, from --data-dir) does not exist: "
                                      "put the CS224N data files there, or name their folder with --data-dir "
                                      "(README: The data)")
    monkeypatch.setenv("MINBERT_DATA_DIR", str(env["a"]))
    assert main(["train", "--config", cfg, "--run-dir", str(new), "--data.dir=missing", "--no-progress"]) == 2
    assert one_error_line(capsys).endswith(
        f"from the config's data.dir) does not exist: put the CS224N data files there, or name their folder with "
        f"--data-dir; $MINBERT_DATA_DIR ({env['a']}) is used only where the config sets no data.dir (README: The data)")
    assert not new.exists()
    assert main(["train", "--config", cfg, "--run-dir", str(new), "--data-dir", str(env["a"]), "--no-progress"]) == 0
    assert load_config(new / "config.yaml").data.dir == str(env["a"])
    assert dev_prediction_ids(new) == data_ids(env["a"])
