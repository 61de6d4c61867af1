"""The paper's experiment table: the presets in configs/paper/ and ``minbert suite``.

The suite runs on verbatim copies of presets 7 and 14 with a tiny random 4-layer encoder, one
epoch and 16-row data slices (command-line overrides, which apply to every row)."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import make_tiny_encoder
from minbert.cli import main
from minbert.config import load_config
from minbert.experiments.suite_report import PAPER, analysis, overall_of, render_markdown
from minbert.model.multitask import build_model

REPO = Path(__file__).resolve().parents[1]
PRESETS = REPO / "configs" / "paper"
TASKS = ("sst", "qqp", "sts")

# the paper's table as given in issue 6: overall, SST, QQP, STS, batch size
ISSUE_TABLE = {
    1: (0.465, 0.292, 0.624, -0.043, 40),
    2: (0.534, 0.459, 0.625, 0.037, 8),
    3: (0.548, 0.351, 0.625, 0.337, 40),
    4: (0.602, 0.500, 0.625, 0.363, 8),
    5: (0.478, 0.190, 0.625, 0.236, 40),
    6: (0.684, 0.515, 0.841, 0.393, 40),
    7: (0.731, 0.502, 0.865, 0.643, 8),
    8: (0.729, 0.491, 0.858, 0.672, 8),
    9: (0.668, 0.488, 0.636, 0.761, 35),
    10: (0.699, 0.526, 0.841, 0.457, 8),
    11: (0.643, 0.477, 0.778, 0.350, 64),
    12: (0.658, 0.488, 0.722, 0.525, 64),
    13: (0.714, 0.513, 0.862, 0.530, 8),
    14: (0.725, 0.481, 0.862, 0.660, 8),
}
OPTIMIZER = {
    **{r: "adamw" for r in range(1, 7)}, **{r: "torch_adamw" for r in (7, 8, 9, 10, 13, 14)}, 11: "lion", 12: "lion"
}
ROW7, ROW14 = "exp07-cosine-sts-torch-adamw", "exp14-surgical"


def preset_files() -> dict[int, Path]:
    out = {}
    for p in sorted(PRESETS.glob("exp*.yaml")):
        out[int(re.match(r"exp(\d+)-", p.name).group(1))] = p
    return out


# ----------------------------------------------------------------------------------------------
# the presets


def test_one_preset_per_row_and_the_paper_table():
    assert sorted(preset_files()) == list(range(1, 15))
    assert sorted(PAPER) == list(range(1, 15))
    for exp, (overall, sst, qqp, sts, bs) in ISSUE_TABLE.items():
        p = PAPER[exp]
        published = (p.overall, p.sst_acc, p.qqp_acc, p.sts_pearson, p.batch_size, p.optimizer)
        assert published == (overall, sst, qqp, sts, bs, OPTIMIZER[exp])
    assert PAPER[7].recomputed_overall() == pytest.approx(0.7295, abs=1e-4)


HYPERPARAMETERS = {
    "model": {"encoder", "max_length"},
    "train": {
        "routine", "mode", "epochs", "seed", "grad_accum", "max_grad_norm", "early_stopping_patience", "freeze_layers",
        "init_from",
    },
    "optim": {"name", "lr", "betas", "eps", "weight_decay", "schedule", "warmup_ratio", "layer_lr_decay", "head_lr"},
}
TASK_HYPERPARAMETERS = {
    "head", "pooling", "pair_input", "dropout", "hidden_size", "head_layers", "batch_size", "weight"
}


@pytest.mark.parametrize("exp", range(1, 15))
def test_preset_lists_every_hyperparameter_and_matches_the_row(exp, tiny_encoder):
    path = preset_files()[exp]
    raw = yaml.safe_load(path.read_text())
    for section, keys in HYPERPARAMETERS.items():
        assert keys <= set(raw[section]), f"{path.name}: {section} lacks {keys - set(raw[section])}"
    assert set(raw["tasks"]) == set(TASKS)
    for t in TASKS:
        assert TASK_HYPERPARAMETERS <= set(raw["tasks"][t]), f"{path.name}: tasks.{t}"
    cfg = load_config(path)
    assert cfg.name == path.stem
    assert cfg.train.epochs == 10
    assert {c.batch_size for c in cfg.tasks.values()} == {ISSUE_TABLE[exp][4]}
    assert cfg.optim.name == OPTIMIZER[exp]
    assert cfg.optim.weight_decay == 0.0
    assert cfg.train.routine == ("sequential" if exp in (1, 2) else "parallel")
    assert cfg.train.mode == ("frozen" if exp in (1, 3) else "finetune")
    if cfg.optim.name == "lion":
        assert cfg.optim.betas == (0.9, 0.99)
        assert cfg.optim.lr == (1e-4 if cfg.train.mode == "frozen" else 1e-6)
    else:
        assert cfg.optim.betas == (0.9, 0.999) and cfg.optim.eps == 1e-6
        assert cfg.optim.lr == (1e-3 if cfg.train.mode == "frozen" else 2e-5 if exp == 8 else 1e-5)
    heads = {t: c.head for t, c in cfg.tasks.items()}
    if exp <= 4:
        assert set(heads.values()) == {"baseline"}
    if exp == 5:
        assert heads == {"sst": "conv1d", "qqp": "mlp", "sts": "compress_expand"}
    if exp >= 6:
        assert heads["sst"] == "mean" and heads["qqp"] == "gelu"
        assert heads["sts"] == ("baseline" if exp in (6, 10, 11) else "cosine")
    assert (cfg.tasks["sts"].head_layers > 0) == (exp in (9, 12))
    assert (len({c.weight for c in cfg.tasks.values()}) > 1) == (exp == 13)
    assert (cfg.train.freeze_layers > 0) == (exp == 14)
    if exp == 14:
        assert Path(cfg.train.init_from).name == ROW7
    else:
        assert cfg.train.init_from is None
    # where the paper is silent, the choice is written in the preset as a comment
    comments = "\n".join(ln for ln in path.read_text().splitlines() if ln.lstrip().startswith("#"))
    choices = {
        5: ["conv1d", "mlp", "compress_expand"],
        9: ["head_layers: 2"],
        12: ["head_layers: 2"],
        13: ["sst 1.0, qqp 2.0, sts 0.5"],
        14: ["freeze_layers 3", "10 epochs"],
    }
    for text in choices.get(exp, []):
        assert text in comments, f"{path.name}: no comment on {text!r}"
    if exp == 13:
        assert {t: c.weight for t, c in cfg.tasks.items()} == {"sst": 1.0, "qqp": 2.0, "sts": 0.5}
    if exp in (9, 12):
        assert cfg.tasks["sts"].head_layers == 2
    # every preset builds (head names, pooling and head options are valid)
    model = build_model(cfg, tiny_encoder, pretrained=False)
    assert set(model.heads) == set(TASKS)


# ----------------------------------------------------------------------------------------------
# the analysis, from numbers


def fake_row(exp: int, overall: float, sst: float, qqp: float) -> dict:
    sts = 2 * (3 * overall - sst - qqp) - 1  # so that overall is exact
    return {"exp": exp, "description": PAPER[exp].description,
            "dev": {"sst_acc": sst, "qqp_acc": qqp, "sts_pearson": sts, "overall": overall},
            "paper": PAPER[exp].metrics(), "epochs": 10, "batch_size": 8, "optimizer": "adamw", "lr": 1e-5,
            "wall_s": 90.0}


def test_analysis_is_computed_from_the_results():
    # parallel better than sequential by 0.100 (the paper: +0.083)
    up = "\n".join(analysis([fake_row(1, 0.400, 0.30, 0.60), fake_row(3, 0.500, 0.40, 0.62)]))
    assert "Exp 1 → 3" in up and "Δ +0.100" in up and "paper Δ +0.083" in up
    assert "same direction as the paper" in up
    assert "SST acc +0.100, QQP acc +0.020" in up
    # the other way round
    down = "\n".join(analysis([fake_row(1, 0.500, 0.40, 0.62), fake_row(3, 0.400, 0.30, 0.60)]))
    assert "Δ -0.100" in down and "opposite to the paper" in down
    # Lion vs AdamW and surgical rows get their own sections, only when both rows exist
    lion = "\n".join(analysis([fake_row(6, 0.650, 0.5, 0.8), fake_row(11, 0.652, 0.5, 0.8)]))
    assert "### AdamW vs Lion" in lion and "Exp 6 → 11" in lion and "Δ +0.002" in lion
    assert "no clear difference here, the paper moved" in lion  # paper: 0.643 - 0.684 = -0.041
    assert "Surgical" not in lion and "Exp 1 → 3" not in lion
    # the overall comparison: mean gap to the paper
    gaps = [(0.650 - 0.684), (0.652 - 0.643)]
    assert f"mean {sum(gaps) / 2:+.3f} over 2 row(s)" in lion


def test_markdown_table_shape():
    rows = [fake_row(7, 0.7123, 0.5, 0.85)]
    md = render_markdown(rows)
    table = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert len(table) == 2 + 14  # header, separator, one line per row of the paper
    assert {len(ln.strip().strip("|").split("|")) for ln in table} == {16}  # same number of cells everywhere
    row7 = next(ln for ln in table if ln.startswith("| 7 |"))
    assert "**0.712**" in row7 and "0.731 / 0.7295" in row7 and "-0.019" in row7 and "1.5 min" in row7
    assert sum("not run" in ln for ln in table) == 13
    assert "bert-base" in md and "13.5k" in md and "141k" in md and "## Row-by-row analysis" in md
    assert "## Discussion" not in md
    noted = render_markdown(rows, "Parallel beats sequential here too.")
    discussion = noted.index("Parallel beats sequential here too.")
    assert noted.index("## Discussion") < discussion < noted.index("## Row-by-row")


# ----------------------------------------------------------------------------------------------
# the suite, end to end


def cli(*args: str, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "minbert", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def ok(proc):
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def suite_env(tmp_path_factory, data_dir):
    work = tmp_path_factory.mktemp("suite")
    encoder = make_tiny_encoder(work / "tiny4", num_hidden_layers=4)  # row 14 freezes 3 layers
    presets = work / "presets"
    presets.mkdir()
    for name in (ROW7, ROW14):
        shutil.copy(PRESETS / f"{name}.yaml", presets / f"{name}.yaml")  # verbatim copies
    overrides = [f"--model.encoder={encoder}", "--train.epochs=1", "--train.device=cpu", "--output.report_to=none",
                 "--output.plot=false", "--output.test_predictions=false"]
    overrides += [f"--tasks.{t}.{k}=16" for t in TASKS for k in ("train_limit", "dev_limit")]

    def args(runs: str, *extra: str) -> list[str]:
        return ["suite", str(presets), f"--data-dir={data_dir}", f"--runs-root={work / runs}",
                f"--report-dir={work / ('reports-' + runs)}", "--no-progress", *overrides, *extra]

    return work, encoder, args


@pytest.fixture(scope="module")
def two_parts(suite_env):
    """The suite in two parts: ``--only 7``, then every preset (row 7 skipped, row 14 run)."""
    work, encoder, args = suite_env
    first = ok(cli(*args("runs", "--only", "7"), cwd=work))
    reports = work / "reports-runs"
    after_first = json.loads((reports / "paper_suite.json").read_text())
    second = ok(cli(*args("runs"), cwd=work))
    return work, encoder, reports, after_first, first, second


def test_first_part_wrote_row_7_only(two_parts):
    work, _, reports, after_first, first, _ = two_parts
    assert [r["exp"] for r in after_first] == [7]
    assert json.loads(first.stdout.strip().splitlines()[-1])["rows"] == [7]
    assert "row 14" not in first.stderr  # row 14 was neither run nor needed


def test_json_rows(two_parts):
    work, encoder, reports, _, _, second = two_parts
    rows = json.loads((reports / "paper_suite.json").read_text())
    assert [r["exp"] for r in rows] == [7, 14]
    assert json.loads(second.stdout.strip().splitlines()[-1])["rows"] == [7, 14]
    for r in rows:
        exp = r["exp"]
        assert r["name"] == (ROW7 if exp == 7 else ROW14)
        assert set(r["dev"]) == set(r["paper"]) == {"sst_acc", "qqp_acc", "sts_pearson", "overall"}
        paper = r["paper"]
        assert (paper["overall"], paper["sst_acc"], paper["qqp_acc"], paper["sts_pearson"]) == ISSUE_TABLE[exp][:4]
        assert r["epochs"] == 1  # the override reached every row
        assert r["batch_size"] == 8 and r["optimizer"] == "torch_adamw" and r["lr"] == 1e-5
        assert isinstance(r["wall_s"], float) and r["wall_s"] > 0
        d = r["dev"]
        assert all(isinstance(v, float) and math.isfinite(v) for v in d.values())
        assert d["overall"] == pytest.approx(overall_of(d["sst_acc"], d["qqp_acc"], d["sts_pearson"]))
        summary = json.loads((work / "runs" / r["name"] / "summary.json").read_text())
        assert d == summary["dev"]
        assert summary["config"]["train"]["epochs"] == 1
        assert summary["config"]["model"]["encoder"] == str(encoder)
    assert rows[0]["paper_overall_recomputed"] == 0.7295


def test_row_14_initialises_from_row_7_and_freezes_3_layers(two_parts):
    work, encoder, _, _, _, second = two_parts
    run7, run14 = work / "runs" / ROW7, work / "runs" / ROW14
    cfg14 = load_config(run14 / "config.yaml")
    assert cfg14.train.init_from == str(run7) and cfg14.train.freeze_layers == 3
    best7 = run7 / "checkpoints" / "best" / "model.safetensors"
    assert f"initialised the model from {best7}" in (run14 / "train.log").read_text()
    w7 = load_file(str(run7 / "checkpoints" / "best" / "model.safetensors"))
    w14 = load_file(str(run14 / "checkpoints" / "best" / "model.safetensors"))
    orig = load_file(str(encoder / "model.safetensors"))
    assert set(w7) == set(w14)
    frozen_prefixes = ("encoder.embeddings.", *(f"encoder.encoder.layer.{i}." for i in range(3)))
    frozen = [k for k in w14 if k.startswith(frozen_prefixes)]
    # (the attention key bias has no gradient: softmax ignores a shift shared by a query's scores,
    # so only rounding moves it; it is left out)
    trained = [k for k in w14 if k.startswith("encoder.encoder.layer.3.") and not k.endswith("key.bias")]
    assert frozen and trained
    for k in frozen:  # row 7's trained weights, unchanged by row 14
        assert torch.equal(w14[k], w7[k]), k
        if k.endswith("dense.weight"):
            assert not torch.equal(w7[k], orig[k[len("encoder."):]]), f"row 7 did not train {k}"
    for k in trained:  # row 14 trained on from row 7's weights
        assert not torch.equal(w14[k], w7[k]), k
        assert (w14[k] - w7[k]).abs().max() < 1e-3  # a couple of lr-1e-5 steps away, not a fresh start
    # the heads started from row 7's too
    for k in (k for k in w7 if k.startswith("heads.")):
        assert (w14[k] - w7[k]).abs().max() < 1e-3, k
    # row 7 ran before row 14 in the same command
    assert "row 7: results already in" in second.stderr


def test_markdown_and_png(two_parts):
    _, _, reports, _, _, _ = two_parts
    rows = {r["exp"]: r for r in json.loads((reports / "paper_suite.json").read_text())}
    md = (reports / "paper_suite.md").read_text()
    for exp in (7, 14):
        line = next(ln for ln in md.splitlines() if ln.startswith(f"| {exp} |"))
        assert f"**{rows[exp]['dev']['overall']:.3f}**" in line
        assert f"{ISSUE_TABLE[exp][0]:.3f} / {PAPER[exp].recomputed_overall():.4f}" in line
    assert sum("not run" in ln for ln in md.splitlines()) == 12
    assert "tiny4`, 4 layers, hidden 32" in md  # the encoder actually used
    assert "--train.epochs=1" in md
    delta = rows[14]["dev"]["overall"] - rows[7]["dev"]["overall"]
    surgical = next(ln for ln in md.splitlines() if ln.startswith("- Exp 7 → 14"))
    expected = "0.000" if round(delta, 3) == 0 else f"{delta:+.3f}"
    assert f"Δ {expected} (" in surgical and "paper Δ -0.006" in surgical
    png = (reports / "paper_suite.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    import matplotlib.image

    img = matplotlib.image.imread(str(reports / "paper_suite.png"))
    assert img.shape[0] == 800 and img.shape[1] == 1400


def run_in_process(args: list[str], caplog) -> str:
    """``minbert ARGS`` through :func:`minbert.cli.main` (no interpreter start-up); returns the log."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="minbert"):
        assert main(args) == 0, caplog.text
    return caplog.text


def test_skip_and_merge(two_parts, suite_env, caplog):
    work, encoder, reports, _, _, _ = two_parts
    _, _, args = suite_env
    path = reports / "paper_suite.json"
    rows = json.loads(path.read_text())
    # a row from an earlier part of the suite (not among these presets) must survive a merge
    extra = dict(
        rows[0], exp=3, name="exp03-parallel-frozen", description=PAPER[3].description, paper=PAPER[3].metrics()
    )
    path.write_text(json.dumps([extra] + rows))
    stamps = {p: p.stat().st_mtime_ns for p in (work / "runs").rglob("*") if p.is_file()}
    log = run_in_process(args("runs"), caplog)
    assert "row 7: results already in" in log and "row 14: results already in" in log
    assert {p: p.stat().st_mtime_ns for p in (work / "runs").rglob("*") if p.is_file()} == stamps  # nothing retrained
    merged = json.loads(path.read_text())
    assert [r["exp"] for r in merged] == [3, 7, 14]
    assert merged[1:] == rows and merged[0] == extra
    assert "| 3 | Parallel, frozen |" in (reports / "paper_suite.md").read_text()
    # a row whose results left the JSON but whose finished run is there is read back, not retrained
    path.write_text(json.dumps([merged[0], merged[2]]))
    log = run_in_process(args("runs"), caplog)
    assert "a finished run of this config is there" in log
    assert {p: p.stat().st_mtime_ns for p in (work / "runs").rglob("*") if p.is_file()} == stamps
    again = json.loads(path.read_text())
    assert [r["exp"] for r in again] == [3, 7, 14] and again[1]["dev"] == rows[0]["dev"]
    # a row killed after its last checkpoint (no summary.json) is resumed, not started again
    path.write_text(json.dumps([again[0], again[2]]))
    (work / "runs" / ROW7 / "summary.json").unlink()
    best = work / "runs" / ROW7 / "checkpoints" / "best" / "model.safetensors"
    best_stamp = best.stat().st_mtime_ns
    log = run_in_process(args("runs"), caplog)
    assert "resuming the unfinished run of this config" in log
    assert best.stat().st_mtime_ns == best_stamp  # no epoch was trained again
    final = json.loads(path.read_text())
    assert [r["exp"] for r in final] == [3, 7, 14]
    assert final[1]["dev"] == pytest.approx(rows[0]["dev"], abs=1e-6)
    assert json.loads((work / "runs" / ROW7 / "summary.json").read_text())["dev"] == final[1]["dev"]


def test_only_14_runs_row_7_first(suite_env, caplog):
    """With no run of row 7 yet, ``--only 14`` trains row 7 first, in the same command."""
    work, _, args = suite_env
    log = run_in_process(args("fresh", "--only", "14"), caplog)
    assert "running row 7 first" in log
    assert log.index("row 7 (") < log.index("row 14 (")
    rows = json.loads((work / "reports-fresh" / "paper_suite.json").read_text())
    assert [r["exp"] for r in rows] == [7, 14]
    assert load_config(work / "fresh" / ROW14 / "config.yaml").train.init_from == str(work / "fresh" / ROW7)


@pytest.mark.parametrize(
    "extra,fragment",
    [
        (["--only", "99"], "no preset for row(s) [99]"), (["--only", "x"], "--only 'x'"),
        (["--train.nope=1"], "unknown config key train.nope"),
    ],
)
def test_suite_mistakes_are_one_line_errors(suite_env, extra, fragment, capsys, tmp_path):
    work, _, args = suite_env
    code = main(args("mistake", *extra))
    err = capsys.readouterr().err
    assert code == 2
    errors = [ln for ln in err.strip().splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and fragment in errors[0], err
    assert not (work / "mistake").exists()


def test_a_run_from_before_a_new_config_key_still_counts_as_the_same_config():
    import copy

    from minbert.config import load_config, resolve, to_dict
    from minbert.experiments.rows import jsonable as _jsonable
    from minbert.experiments.rows import same_config as _same_config

    want = _jsonable(to_dict(resolve(load_config(None, []))))
    older = copy.deepcopy(want)
    del older["train"]["grad_sync"]  # a summary written before train.grad_sync existed
    assert older != want and _same_config(older, want)
    changed = copy.deepcopy(older)
    changed["train"]["epochs"] = want["train"]["epochs"] + 1
    assert not _same_config(changed, want)
    unknown = copy.deepcopy(want)
    unknown["train"]["no_such_key"] = 1  # a key this version does not have
    assert not _same_config(unknown, want) and not _same_config(None, want)
    # model.weight_grad_stream moves gradient work between CUDA streams, same values: a run saved
    # when it was a bool (false by default) is the same config as one of today's default, auto
    assert want["model"]["weight_grad_stream"] == "auto"
    for saved in (False, True, "off"):
        stored = copy.deepcopy(want)
        stored["model"]["weight_grad_stream"] = saved
        assert _same_config(stored, want), saved
    for bad in ("garbage", 7, [1]):  # a value no version wrote is a mismatch, not ignored
        stored = copy.deepcopy(want)
        stored["model"]["weight_grad_stream"] = bad
        assert not _same_config(stored, want), bad
    other_dropout = copy.deepcopy(want)
    other_dropout["model"]["hidden_dropout_prob"] = 0.3  # the rest of model still counts
    assert not _same_config(other_dropout, want)
