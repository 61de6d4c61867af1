"""End-to-end smoke tests of the ``minbert`` command line on a slice of the real cs224n data,
with the tiny random encoder of ``conftest.tiny_encoder``.

One training run (module fixture, 3 epochs) is shared by most tests; each runs the real
entry point (``python -m minbert``) in a subprocess. User mistakes are checked through
:func:`minbert.cli.main` in-process (same code path, no interpreter start-up) and once through
a subprocess.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from minbert.cli import main
from minbert.tasks.base import get_task

REPO = Path(__file__).resolve().parents[1]

TASKS = ("sst", "qqp", "sts")
N = 64  # train and dev rows per task
SLICE = [f"--tasks.{t}.{k}={v}" for t in TASKS for k, v in (("train_limit", N), ("dev_limit", N), ("batch_size", 8))]

# prediction file -> (data file, dev slice?, header column)
PRED_FILES = {
    "sst-dev.csv": ("ids-sst-dev.csv", True, "Predicted_Sentiment"),
    "sst-test.csv": ("ids-sst-test-student.csv", False, "Predicted_Sentiment"),
    "qqp-dev.csv": ("quora-dev.csv", True, "Predicted_Is_Paraphrase"),
    "sts-dev.csv": ("sts-dev.csv", True, "Predicted_Similarity"),
    "sts-test.csv": ("sts-test-student.csv", False, "Predicted_Similarity"),
}


def cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m minbert ARGS`` with one intra-op thread (fast and reproducible on 2 cores)."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "minbert", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    return proc


def train_args(tiny_encoder: Path, data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "train",
        f"--data-dir={data_dir}",
        f"--run-dir={run_dir}",
        f"--model.encoder={tiny_encoder}",
        *SLICE,
        "--train.device=cpu",
        "--output.report_to=none",
        "--no-progress",
        *extra,
    ]


def file_ids(path: Path) -> list[str]:
    """The ids of a cs224n data file, read independently of minbert (csv module, column by name)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    col = [h.strip() for h in rows[0]].index("id")
    return [r[col].strip() for r in rows[1:] if r]


def read_predictions(path: Path) -> tuple[str, list[tuple[str, str]]]:
    lines = path.read_text().splitlines()
    return lines[0], [tuple(ln.split(",")) for ln in lines[1:]]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_encoder, data_dir):
    """A 3-epoch run with an lr high enough for the tiny model to learn."""
    work = tmp_path_factory.mktemp("cli")
    run_dir = work / "run"
    proc = ok(cli(*train_args(tiny_encoder, data_dir, run_dir, "--train.epochs=3", "--optim.lr=1e-3"), cwd=work))
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out["run_dir"]) == run_dir
    return run_dir


# ----------------------------------------------------------------------------------------------
# train


def test_run_folder_is_complete(run):
    for rel in (
        "config.yaml",
        "provenance.json",
        "encoder/config.json",
        "checkpoints/best/model.safetensors",
        "checkpoints/last.json",
        "metrics.jsonl",
        "curves.png",
        "summary.json",
    ):
        assert (run / rel).is_file(), f"missing {rel}"
        assert (run / rel).stat().st_size > 0, f"empty {rel}"
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # no temp files of the atomic writes are left behind
    assert not [p for p in run.rglob("*.tmp")]


def test_training_loss_decreases(run):
    per_epoch = defaultdict(list)
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "lr" in rec:  # a training step record
            losses = [v for k, v in rec.items() if k.startswith("loss/")]
            assert sorted(k[5:] for k in rec if k.startswith("loss/")) == sorted(TASKS)
            assert all(math.isfinite(v) for v in losses)
            per_epoch[rec["epoch"]].append(sum(losses))
    assert sorted(per_epoch) == [1, 2, 3]
    assert len({len(v) for v in per_epoch.values()}) == 1  # same number of steps every epoch
    mean = {e: sum(v) / len(v) for e, v in per_epoch.items()}
    assert mean[3] < mean[1], mean


def test_summary_metrics_are_finite_and_in_range(run):
    summary = json.loads((run / "summary.json").read_text())
    dev = summary["dev"]
    assert set(dev) == {"sst_acc", "qqp_acc", "sts_pearson", "overall"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in dev.values()), dev
    assert 0 <= dev["sst_acc"] <= 1 and 0 <= dev["qqp_acc"] <= 1
    assert -1 <= dev["sts_pearson"] <= 1
    assert 0 <= dev["overall"] <= 1
    assert dev["overall"] == pytest.approx((dev["sst_acc"] + dev["qqp_acc"] + (dev["sts_pearson"] + 1) / 2) / 3)
    assert summary["epochs_run"] == 3 and 1 <= summary["best_epoch"] <= 3
    assert summary["dev_limits"] == {"sst": N, "qqp": N, "sts": N}  # scored on dev samples, and it says so
    assert summary["steps"] == 3 * N // 8


@pytest.mark.parametrize("name", sorted(PRED_FILES))
def test_prediction_file(run, data_dir, name):
    data_file, is_dev, column = PRED_FILES[name]
    header, rows = read_predictions(run / "predictions" / name)
    assert header == f"id,{column}"
    expected = file_ids(data_dir / data_file)
    if is_dev:  # dev_limit N: the seeded sample that training evaluates on (train.seed 0)
        task = get_task(name.split("-")[0])
        raw = task.read(data_dir / data_file, "dev").sample(N, seed=0, stratify=task.kind != "regression")
        expected = raw.ids
        assert len(expected) == N and set(expected) <= set(file_ids(data_dir / data_file))
    ids = [r[0] for r in rows]
    assert all(len(r) == 2 for r in rows)
    assert Counter(ids) == Counter(expected)  # exactly one row per input id
    assert len(ids) == len(set(ids))
    values = [r[1] for r in rows]
    if name.startswith("sst"):
        assert {int(v) for v in values} <= set(range(5)) and all(re.fullmatch(r"\d", v) for v in values)
    elif name.startswith("qqp"):
        assert set(values) <= {"0", "1"}
    else:
        assert all(math.isfinite(float(v)) and 0.0 <= float(v) <= 5.0 for v in values)


# ----------------------------------------------------------------------------------------------
# evaluate, predict


def test_evaluate_reproduces_summary(run, tmp_path):
    summary = json.loads((run / "summary.json").read_text())
    # no --data-dir: the data folder recorded in provenance.json is used
    proc = ok(cli("evaluate", str(run), "--device=cpu", cwd=tmp_path))
    flat = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(flat) == set(summary["dev_all"])
    for k, v in summary["dev_all"].items():
        assert flat[k] == pytest.approx(v, rel=1e-6, abs=1e-9), k
    assert json.loads((run / "eval.json").read_text())["dev"] == flat


def test_evaluate_full_scores_the_whole_dev_sets(run, tmp_path, data_dir):
    """The run evaluated seeded samples of N dev rows; --full scores every dev row, and its dev
    accuracy is recomputed here from the prediction file against the gold labels."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    proc = ok(cli("evaluate", str(copy), "--device=cpu", "--full", cwd=tmp_path))
    flat = json.loads(proc.stdout.strip().splitlines()[-1])
    sst = get_task("sst").read(data_dir / "ids-sst-dev.csv", "dev")
    header, rows = read_predictions(copy / "predictions" / "sst-dev.csv")
    assert len(rows) == len(sst) == 1101 and [r[0] for r in rows] == sst.ids
    gold = dict(zip(sst.ids, sst.labels.tolist(), strict=True))
    acc = sum(int(v) == gold[i] for i, v in rows) / len(rows)
    assert flat["sst_acc"] == pytest.approx(acc, abs=1e-12)
    assert len(read_predictions(copy / "predictions" / "qqp-dev.csv")[1]) == 20212
    assert json.loads((copy / "eval.json").read_text())["dev_limits"] == {}
    proc = ok(cli("evaluate", str(copy), "--device=cpu", cwd=tmp_path))  # without --full: the samples again
    assert json.loads((copy / "eval.json").read_text())["dev_limits"] == {"sst": N, "qqp": N, "sts": N}
    assert "dev scores on seeded samples" in proc.stderr


def test_predict_text(run, tmp_path):
    # block-buffered stdout (PYTHONUNBUFFERED unset): the entry point flushes it before os._exit
    proc = ok(cli("predict", str(run), "--task=sst", "--text", "a fine film", "--device=cpu", cwd=tmp_path,
                  env={"PYTHONUNBUFFERED": ""}))
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert isinstance(out["label"], int) and 0 <= out["label"] <= 4
    assert len(out["probabilities"]) == 5 and sum(out["probabilities"]) == pytest.approx(1.0, abs=1e-5)
    assert out["probabilities"].index(max(out["probabilities"])) == out["label"]
    assert isinstance(out["name"], str)


def test_predict_text_pairs_use_the_servers_names(run):
    """A pair's label (binary: with P(1), the label its threshold gives) or score (regression),
    equal to what minbert.load returns for the same pair."""
    import minbert
    from minbert.cli_inference import _predict_values

    model = minbert.load(run, device="cpu")
    a, b = ["How do I learn Python?"], ["What is the best way to learn Python?"]
    pairs = list(zip(a, b, strict=True))
    (qqp,) = _predict_values(model, model.task("qqp"), a, b)
    assert set(qqp) == {"label", "probability"} and qqp["label"] == int(qqp["probability"] > 0.5)
    assert qqp["probability"] == pytest.approx(float(model.paraphrase(pairs)[0]), abs=1e-6)
    (sts,) = _predict_values(model, model.task("sts"), a, b)
    assert set(sts) == {"score"} and sts["score"] == pytest.approx(float(model.similarity(pairs)[0]), abs=1e-5)


def test_predict_input_file_reports_bad_rows(run, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text('id,sentence\nr1,a fine film\nr2,\nr3,"a dull, long film"\nr4,   \nr5,just ok\nr6,"a", b\n')
    dst = tmp_path / "out.csv"
    proc = ok(cli("predict", str(run), "--task=sst", f"--input={src}", f"--output={dst}", "--device=cpu", cwd=tmp_path))
    header, rows = read_predictions(dst)
    assert header == "id,Predicted_Sentiment"
    # empty and whitespace texts are predicted (from the empty input), not dropped
    assert [r[0] for r in rows] == ["r1", "r2", "r3", "r4", "r5"]
    assert all(r[1] in {"0", "1", "2", "3", "4"} for r in rows)
    assert rows[1][1] == rows[3][1]  # both are the empty input
    assert f"{src}: 2 row(s) with an empty text are predicted from an empty input" in proc.stderr
    # the bad row is reported by physical line (the header is line 1)
    assert f"{src}:7: expected 2 fields, found 3" in proc.stderr
    assert f"{src}: 6 data lines: 5 kept, 1 bad" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cs224n_format(tmp_path, tiny_encoder, data_dir):
    run = tmp_path / "run"
    ok(cli(*train_args(tiny_encoder, data_dir, run, "--train.epochs=1", "--train.max_steps=1", "--output.plot=false",
                       "--output.format=cs224n"), cwd=tmp_path))
    headers = {
        "sst-dev.csv": "id \t Predicted_Sentiment ",
        "sst-test.csv": "id \t Predicted_Sentiment ",
        "qqp-dev.csv": "id \t Predicted_Is_Paraphrase ",
        "sts-dev.csv": "id \t Predicted_Similiary ",  # sic: the course leaderboard's spelling
        "sts-test.csv": "id \t Predicted_Similiary ",
    }
    for name, header in headers.items():
        lines = (run / "predictions" / name).read_text().splitlines()
        assert lines[0] == header, name
        data_file, is_dev, _ = PRED_FILES[name]
        expected = file_ids(data_dir / data_file)
        assert len(lines) - 1 == (N if is_dev else len(expected)), name
        for ln in lines[1:]:
            m = re.fullmatch(r"(\S+) , (\S+)", ln)
            assert m, f"{name}: bad row {ln!r}"
            float(m.group(2))
        if is_dev:  # the seeded dev sample (train.seed 0)
            task = get_task(name.split("-")[0])
            expected = task.read(data_dir / data_file, "dev").sample(N, seed=0, stratify=task.kind != "regression").ids
        assert Counter(re.fullmatch(r"(\S+) , \S+", ln).group(1) for ln in lines[1:]) == Counter(expected)


# ----------------------------------------------------------------------------------------------
# user mistakes: exit code 2, one "error: ..." line, no traceback


def _not_a_run(tmp_path: Path) -> Path:
    folder = tmp_path / "not-a-run"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello\n")
    return folder


def _new_run(*extra: str) -> Callable[[Path, Path, Path, Path], list[str]]:
    """(run, tmp_path, tiny_encoder, data_dir) -> the arguments of a new run in tmp_path/r with ``extra``."""
    return lambda run, tmp, enc, data: train_args(enc, data, tmp / "r", *extra)


# case -> (arguments from (run, tmp_path, tiny_encoder, data_dir), a fragment of the message)
MISTAKES = {
    "unknown key": (_new_run("--optim.nope=1"), "unknown config key optim.nope"),
    "wrong type": (_new_run("--train.epochs=many"), "train.epochs: expected an integer"),
    "bad choice": (_new_run("--train.routine=random"), "train.routine"),
    "run exists": (lambda run, tmp, enc, data: train_args(enc, data, run, "--train.epochs=1"), "already holds a run"),
    "evaluate non-run": (lambda run, tmp, enc, data: ["evaluate", str(_not_a_run(tmp))], "not a minbert run folder"),
    "evaluate missing": (lambda run, tmp, enc, data: ["evaluate", str(tmp / "nowhere")], "no such run folder"),
    "resume non-run": (
        lambda run, tmp, enc, data: ["train", "--resume", str(_not_a_run(tmp))], "not a minbert run folder"
    ),
    "resume with overrides": (
        lambda run, tmp, enc, data: ["train", "--resume", str(run), "--optim.lr=0.1"],
        "--resume continues a run",
    ),
    "missing data dir": (lambda run, tmp, enc, data: train_args(enc, tmp / "no-data", tmp / "r"), "does not exist"),
    "predict unknown task": (
        lambda run, tmp, enc, data: ["predict", str(run), "--task=nli", "--text", "x"],
        "unknown task 'nli'",
    ),
    "predict empty text": (lambda run, tmp, enc, data: ["predict", str(run), "--task=sst", "--text", "  "], "empty"),
    "negative seed": (_new_run("--train.seed=-1"), "train.seed must be in 0..2**32 - 1"),
    "zero max_steps": (_new_run("--train.max_steps=0"), "train.max_steps must be >= 1"),
    "tune no trials": (
        lambda run, tmp, enc, data: ["tune", "--study-dir", str(tmp / "s"), "--trials", "0"], "--trials must be >= 1"
    ),
    "ablate report-only without runs": (
        lambda run, tmp, enc, data: ["ablate", str(REPO / "configs" / "beyond" / "ablation.yaml"), "--report-only",
                                     "--runs-root", str(tmp / "nowhere"), "--report-dir", str(tmp / "rep")],
        "no finished runs",
    ),
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_user_mistake_is_one_line_exit_2(case, run, tmp_path, tiny_encoder, data_dir, capsys):
    make_args, fragment = MISTAKES[case]
    args = make_args(run, tmp_path, tiny_encoder, data_dir)
    before = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert fragment in lines[0]
    # the existing run is untouched
    assert {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()} == before


def test_user_mistake_through_the_real_entry_point(run, tmp_path, tiny_encoder, data_dir):
    for args, fragment in (
        (train_args(tiny_encoder, data_dir, tmp_path / "r", "--optim.nope=1"), "unknown config key optim.nope"),
        (train_args(tiny_encoder, data_dir, run), "already holds a run"),
    ):
        proc = cli(*args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "Traceback" not in proc.stderr
        errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error: ")]
        assert len(errors) == 1 and fragment in errors[0], proc.stderr
        assert proc.stderr.strip().splitlines()[-1] == errors[0]


def test_predict_input_without_the_text_columns_is_a_one_line_error(tmp_path, capsys):
    from minbert.cli_inference import _read_input
    from minbert.errors import DataError

    f = tmp_path / "pairs.csv"
    f.write_text("id,foo,bar\n1,a,b\n")
    with pytest.raises(DataError, match=r"pairs.csv: line 1: header has no column 'sentence1'"):
        _read_input(f, pair=True)
    g = tmp_path / "texts.csv"
    g.write_text("id,text\n1,a fine film\n")
    ids, a, b, bad = _read_input(g, pair=False)  # a 'text' column is accepted for single sentences
    assert (ids, a, b, bad) == (["1"], ["a fine film"], None, [])


def test_predict_reads_the_course_files_as_tsv(data_dir):
    """The course's test files are tab-separated but named .csv: --input-format tsv reads every
    row (ids and sentences as the file holds them); by suffix, the error says what to do."""
    import csv

    from minbert.cli_inference import _read_input
    from minbert.errors import DataError

    f = data_dir / "ids-sst-test-student.csv"
    with pytest.raises(DataError, match=r"looks tab-separated.*--input-format tsv"):
        _read_input(f, pair=False)
    ids, a, b, bad = _read_input(f, pair=False, fmt="tsv")
    with f.open(newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert bad == [] and b is None and len(ids) == len(rows) > 2000
    assert ids == [r["id"].strip() for r in rows] and a == [r["sentence"].strip() for r in rows]


def test_a_run_uses_its_recorded_data_folder_over_the_configs(tmp_path, data_dir, monkeypatch):
    from minbert.config import load_config
    from minbert.runs import resolve_run_data_dir

    here = tmp_path / "here"
    (here / "cs224n").mkdir(parents=True)  # the config's relative data.dir exists from here
    monkeypatch.chdir(here)
    monkeypatch.delenv("MINBERT_DATA_DIR", raising=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "provenance.json").write_text(json.dumps({"data_dir": str(Path(data_dir).resolve())}))
    relative = load_config(None, ["data.dir=cs224n"])
    assert resolve_run_data_dir(run, relative) == Path(data_dir).resolve()  # the recorded folder wins
    assert resolve_run_data_dir(run, relative, str(tmp_path)) == tmp_path  # --data-dir always wins
    (run / "provenance.json").write_text(json.dumps({"data_dir": str(tmp_path / "gone")}))
    assert resolve_run_data_dir(run, relative) == Path("cs224n")  # the recorded one is gone: the config's


@pytest.mark.parametrize(
    "argv, message",
    [
        (["bogus"], "error: minbert: argument command: invalid choice: 'bogus'"),
        (["predict"], "error: minbert predict: the following arguments are required: run_dir, --task"),
        (["serve", "run", "--port", "abc"], "error: minbert serve: argument --port: invalid int value: 'abc'"),
        (["predict", "run", "--task", "sst", "--quantize", "int4"], "error: minbert predict: argument --quantize"),
    ],
)
def test_argument_mistakes_are_one_line_exit_2(argv, message, capsys):
    from minbert.cli import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith(message), err


def test_train_hands_its_early_kernel_compile_to_the_run_and_stops_it_when_the_run_fails(monkeypatch, tmp_path,
                                                                                        capsys):
    """``minbert train`` starts the attention-kernel compile before it imports torch and passes
    the children to the run; where the run fails before it waited for them, they are killed."""
    from minbert.errors import CheckpointError
    from minbert.training import kernel_compile, trainer

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], stderr=subprocess.PIPE, text=True)
    seen = {}

    def failing_train(cfg, **kwargs):
        seen.update(kwargs)
        raise CheckpointError("the run folder is not writable")

    monkeypatch.setattr(kernel_compile, "start_early", lambda cfg: [child])
    monkeypatch.setattr(trainer, "train", failing_train)
    assert main(["train", "--config", str(REPO / "configs" / "quick.yaml"), "--run-dir", str(tmp_path / "r")]) == 2
    assert seen["compiling"] == [child] and child.returncode not in (None, 0)
    assert capsys.readouterr().err.strip() == "error: the run folder is not writable"



def test_a_failed_allocation_is_one_line_exit_2_and_other_runtime_errors_keep_their_traceback(monkeypatch, tmp_path,
                                                                                             capsys):
    """A run that asks for more memory than there is (here a real CPU allocation of a petabyte,
    then a CUDA out-of-memory error with torch's two-line text) ends with one ``error:`` line
    giving the allocator's first line and what to lower; a RuntimeError of any other kind is a bug
    and propagates."""
    import torch

    from minbert.training import trainer

    def petabyte(cfg, **kwargs):
        torch.empty(10**15, dtype=torch.uint8)

    def cuda_oom(cfg, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB.\nIf reserved but unallocated")

    quick = Path(__file__).parents[1] / "configs/quick.yaml"
    argv = ["train", "--config", str(quick), "--run-dir", str(tmp_path / "r")]
    for fn, first in ((petabyte, "DefaultCPUAllocator: can't allocate memory"),
                      (cuda_oom, "CUDA out of memory. Tried to allocate 20.00 GiB.")):
        monkeypatch.setattr(trainer, "train", fn)
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: out of memory: ") and first in err[0], err
        assert "tasks.NAME.batch_size" in err[0] and "If reserved" not in err[0]

    def bug(cfg, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(trainer, "train", bug)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        main(argv)
