"""Per-task plots of a run's dev predictions: the numbers drawn (calibration bins, confusion counts,
scatter points and Pearson r) against hand computations, then a tiny run whose PNGs hold what its
prediction files, the gold labels and the model's own probabilities say; a failing plot is one
warning and the run still finishes; ``output.plot: false`` draws nothing."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from minbert.config import from_dict
from minbert.tasks.base import get_task
from minbert.tasks.custom import build_custom_task
from minbert.training import task_plots
from minbert.training.task_plots import (
    calibration_bins,
    plot_calibration,
    plot_confusion,
    plot_file,
    plot_kind,
    plot_scatter,
    positive_probability,
)
from minbert.training.trainer import train
from minbert_testkit import NAMES, base_config, para_definition, para_dir

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DEV_ROWS = 48


def reference_bins(prob, gold, n=10) -> tuple[list[int], list[float | None], list[float | None]]:
    """Rows, mean probability and fraction of 1s per bin [k/n, (k+1)/n) (1.0 in the last), by a loop."""
    rows, sum_p, sum_y = [0] * n, [0.0] * n, [0.0] * n
    for p, y in zip(prob, gold, strict=True):
        k = min(int(p * n), n - 1)
        rows[k] += 1
        sum_p[k] += p
        sum_y[k] += y
    mean_p = [s / c if c else None for s, c in zip(sum_p, rows, strict=True)]
    return rows, mean_p, [s / c if c else None for s, c in zip(sum_y, rows, strict=True)]


def axes_by_gid(fig) -> dict:
    return {ax.get_gid(): ax for ax in fig.axes if ax.get_gid()}


def line(ax, gid: str):
    (found,) = [ln for ln in ax.get_lines() if ln.get_gid() == gid]
    return found


def check_calibration_figure(fig, prob, gold, tol: float = 1e-12) -> None:
    """The reliability line (non-empty bins), the bars and their labels equal :func:`reference_bins`
    (mean probabilities within ``tol``)."""
    rows, mean_p, frac = reference_bins(prob, gold)
    axes = axes_by_gid(fig)
    full = [k for k in range(10) if rows[k]]
    curve = line(axes["reliability"], "reliability")
    assert curve.get_xdata().tolist() == pytest.approx([mean_p[k] for k in full], abs=tol)
    assert curve.get_ydata().tolist() == pytest.approx([frac[k] for k in full], abs=1e-12)
    assert line(axes["reliability"], "diagonal").get_xydata().tolist() == [[0, 0], [1, 1]]
    bars = [p for p in axes["counts"].patches if p.get_gid() == "bin-count"]
    assert [b.get_height() for b in bars] == rows
    assert [b.get_x() + b.get_width() / 2 for b in bars] == pytest.approx([k / 10 + 0.05 for k in range(10)])
    assert [t.get_text() for t in axes["counts"].texts] == [str(r) for r in rows]


def custom(kind: str, **fields):
    """A custom task "mine" of ``kind`` (``fields``: label_names, num_labels or range)."""
    d = {"kind": kind, "files": {"train": "a.csv", "dev": "b.csv"}, "columns": {"text": "t", "label": "y"}, **fields}
    return build_custom_task("mine", from_dict({"custom_tasks": {"mine": d}}).custom_tasks["mine"])


# ----------------------------------------------------------------------------------------------
# the numbers


def test_calibration_bins_equal_a_count_by_hand():
    rng = np.random.default_rng(0)
    prob = rng.beta(0.6, 0.6, size=400)
    prob = np.concatenate([prob[(prob < 0.6) | (prob >= 0.7)], [0.0, 1.0, 1.0]])  # bin 0.6..0.7 empty
    gold = (rng.random(len(prob)) < prob).astype(int)
    bins = calibration_bins(prob, gold)
    rows, mean_p, frac = reference_bins(prob.tolist(), gold.tolist())
    assert rows[6] == 0 and rows[9] >= 2  # an empty bin; 1.0 falls in the last one
    assert bins.edges.tolist() == pytest.approx([k / 10 for k in range(11)])
    assert bins.counts.tolist() == rows
    assert [None if math.isnan(v) else v for v in bins.mean_prob] == pytest.approx(mean_p, abs=1e-12)
    assert [None if math.isnan(v) else v for v in bins.frac_pos] == pytest.approx(frac, abs=1e-12)


@pytest.mark.parametrize(
    "prob, gold, n_bins, message",
    [
        ([0.2, 0.5], [0], 10, "2,\\) probabilities but \\(1,\\) gold"),
        ([0.2, 1.5], [0, 1], 10, "lie in \\[0, 1\\]"),
        ([0.2, math.nan], [0, 1], 10, "lie in \\[0, 1\\]"),
        ([0.2, 0.5], [0, 2], 10, "0 or 1"),
        ([0.2, 0.5], [0, 1], 0, "0 bins"),
    ],
)
def test_calibration_bins_refuse_bad_input(prob, gold, n_bins, message):
    with pytest.raises(ValueError, match=message):
        calibration_bins(np.array(prob), np.array(gold), n_bins)


def test_positive_probability_of_logits():
    logits = np.array([-2.0, 0.0, 3.5], dtype=np.float32)
    assert positive_probability(get_task("qqp"), logits).tolist() == pytest.approx(
        [1 / (1 + math.exp(2.0)), 0.5, 1 / (1 + math.exp(-3.5))], rel=1e-7)
    pair = np.array([[1.0, 3.0], [0.5, -1.0]])
    two = custom("classification", label_names=["no", "yes"])
    assert positive_probability(two, pair).tolist() == pytest.approx(
        [math.exp(3) / (math.exp(1) + math.exp(3)), math.exp(-1) / (math.exp(0.5) + math.exp(-1))], rel=1e-12)
    with pytest.raises(ValueError, match="shape \\(2, 2\\)"):
        positive_probability(get_task("qqp"), pair)


def test_each_kind_of_task_gets_its_plot():
    three = custom("classification", num_labels=3)
    two = custom("classification", label_names=["no", "yes"])
    score = custom("regression", range=[0.0, 1.0])
    kinds = {t: plot_kind(t) for t in (get_task("sst"), get_task("qqp"), get_task("sts"), three, two, score)}
    assert list(kinds.values()) == ["confusion", "calibration", "scatter", "confusion", "calibration", "scatter"]
    assert [plot_file(t) for t in (get_task("sst"), two, score)] == [
        "sst-confusion.png", "mine-calibration.png", "mine-scatter.png"]
    # a confusion plot draws num_labels² cells: up to CONFUSION_MAX_LABELS labels, then none
    from minbert.tasks.metrics import CONFUSION_MAX_LABELS as most

    assert [plot_kind(custom("classification", num_labels=n)) for n in (most, most + 1)] == ["confusion", "none"]


# ----------------------------------------------------------------------------------------------
# the figures, from hand-made predictions


def test_confusion_figure_counts_gold_rows_by_predicted_columns():
    task = custom("classification", label_names=["low", "mid", "high"])
    gold = [0, 0, 0, 1, 1, 2, 2, 2, 2, 1]
    pred = [0, 1, 1, 1, 2, 2, 2, 0, 2, 1]
    fig = plot_confusion(task, np.array(pred), np.array(gold))
    (ax,) = [a for a in fig.axes if a.get_images()]
    counts = Counter(zip(gold, pred, strict=True))
    expected = [[counts[(g, p)] for p in range(3)] for g in range(3)]
    assert expected == [[1, 2, 0], [0, 2, 1], [1, 0, 3]]
    (image,) = ax.get_images()
    assert image.get_gid() == "confusion" and np.asarray(image.get_array()).tolist() == expected
    cells = {t.get_gid(): t.get_text() for t in ax.texts}
    assert cells == {f"count/{g}/{p}": str(expected[g][p]) for g in range(3) for p in range(3)}
    assert [t.get_text() for t in ax.get_xticklabels()] == ["low", "mid", "high"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["low", "mid", "high"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "gold")
    assert "accuracy 0.600" in ax.get_title()


def test_scatter_figure_points_identity_and_pearson():
    gold = np.array([0.0, 1.2, 2.5, 3.1, 4.8, 5.0])
    pred = np.array([0.4, 1.0, 2.9, 2.7, 4.1, 4.6])
    fig = plot_scatter(get_task("sts"), pred, gold)
    (ax,) = fig.axes
    (points,) = [c for c in ax.collections if c.get_gid() == "points"]
    assert np.asarray(points.get_offsets()).tolist() == np.column_stack([gold, pred]).tolist()  # x gold, y predicted
    assert line(ax, "identity").get_xydata().tolist() == [[0, 0], [5, 5]]
    r = stats.pearsonr(gold, pred)[0]
    assert f"Pearson r = {r:.3f}" in ax.get_title()
    assert f"Pearson r = {r:.3f}" in [t.get_text() for t in ax.get_legend().get_texts()][1]


@pytest.mark.parametrize(
    "pred, gold, why",
    [
        ([2.5, 2.5, 2.5, 2.5], [0.0, 1.0, 4.0, 5.0], "constant predictions"),
        ([0.5, 1.0, 3.0, 4.5], [2.0, 2.0, 2.0, 2.0], "constant gold labels"),
        ([3.0, 3.0, 3.0], [3.0, 3.0, 3.0], "constant predictions"),  # all equal: predictions named first
        ([1.5], [4.0], "one row"),
    ],
)
def test_scatter_of_an_undefined_pearson_says_so_and_shows_no_number(pred, gold, why):
    """The run's metric scores an undefined r 0.0; the plot must not print r = 0.000."""
    fig = plot_scatter(get_task("sts"), np.array(pred), np.array(gold))
    (ax,) = fig.axes
    legend = [t.get_text() for t in ax.get_legend().get_texts()][1]
    for text in (ax.get_title(), legend):
        assert f"Pearson r undefined ({why})" in text and "0.000" not in text, text
    (points,) = [c for c in ax.collections if c.get_gid() == "points"]
    assert np.asarray(points.get_offsets()).tolist() == np.column_stack([gold, pred]).tolist()


def test_calibration_figure_draws_the_bins():
    rng = np.random.default_rng(1)
    prob = rng.random(200) ** 2
    gold = (rng.random(200) < prob).astype(int)
    fig = plot_calibration(get_task("qqp"), prob, gold)
    check_calibration_figure(fig, prob.tolist(), gold.tolist())
    assert "P(is_duplicate = 1)" in axes_by_gid(fig)["reliability"].get_title()


# ----------------------------------------------------------------------------------------------
# a run


class ListHandler(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def tiny_config(tiny_encoder: Path, tmp_path_factory, tasks: tuple[str, ...]) -> dict:
    raw = base_config(tiny_encoder) | {"custom_tasks": {"para": para_definition(para_dir(tmp_path_factory))}}
    raw["output"] = {**raw["output"], "plot": True}
    small = {"train_limit": 16, "dev_limit": DEV_ROWS, "batch_size": 8}
    raw["tasks"] = {t: ({"batch_size": 8} if t == "para" else small) for t in tasks}
    return raw


@pytest.fixture(scope="module")
def plotted(tiny_encoder, data_dir, tmp_path_factory):
    """A run of sst, qqp, sts and the 2-label custom "para" with plots on; the figures it saved."""
    figures, write = {}, task_plots.atomic_write_png

    def spy(path, fig):
        figures[path.name] = fig
        write(path, fig)

    handler, logger = ListHandler(), logging.getLogger("minbert.training.reporting")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(task_plots, "atomic_write_png", spy)
            cfg = from_dict(tiny_config(tiny_encoder, tmp_path_factory, ("sst", "qqp", "sts", "para")))
            run = train(cfg, run_dir=tmp_path_factory.mktemp("plots") / "run", data_dir=data_dir, progress=False)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    return run.run_dir, figures, handler.messages


def prediction_file(path: Path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return {r[0]: r[1] for r in rows[1:]}


def gold_of(path: Path, column: str) -> dict[str, float]:
    """id -> label of a cs224n data file, by the csv module (tab-separated, columns by header)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    header = [h.strip() for h in rows[0]]
    i, j = header.index("id"), header.index(column)
    return {r[i].strip(): float(r[j]) for r in rows[1:] if len(r) > j and r[j].strip()}  # a row may lack its label


def texts_of(predictor, task: str, path: Path, ids: list[str]) -> list:
    raw = predictor.task(task).read(path, "dev")
    by_id = dict(zip(raw.ids, raw.texts, strict=True))
    return [tuple(by_id[i]) for i in ids]


def test_run_writes_a_png_per_task(plotted):
    run_dir, figures, messages = plotted
    names = ["sst-confusion.png", "qqp-calibration.png", "sts-scatter.png", "para-calibration.png"]
    assert sorted(figures) == sorted(names)
    assert sorted(p.name for p in run_dir.glob("*.png")) == sorted([*names, "curves.png"])
    for name in [*names, "curves.png"]:
        assert (run_dir / name).read_bytes()[:8] == PNG_MAGIC
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*png*"))
    (listing,) = [m for m in messages if m.startswith("run folder: ")]
    assert re.search(r"curves\.png, sst-confusion\.png, qqp-calibration\.png, sts-scatter\.png, "
                     r"para-calibration\.png, train\.log", listing), listing


def test_run_confusion_matrix_counts_the_prediction_file(plotted, data_dir):
    run_dir, figures, _ = plotted
    pred = prediction_file(run_dir / "predictions" / "sst-dev.csv")
    gold = gold_of(data_dir / "ids-sst-dev.csv", "sentiment")
    assert len(pred) == DEV_ROWS
    counts = Counter((int(gold[i]), int(v)) for i, v in pred.items())
    expected = [[counts[(g, p)] for p in range(5)] for g in range(5)]
    (ax,) = [a for a in figures["sst-confusion.png"].axes if a.get_images()]
    assert np.asarray(ax.get_images()[0].get_array()).tolist() == expected
    assert [t.get_text() for t in ax.get_yticklabels()] == list(get_task("sst").label_names)


def test_run_scatter_is_the_model_scores_against_gold(plotted, data_dir):
    from minbert.inference.predictor import load

    run_dir, figures, _ = plotted
    pred = prediction_file(run_dir / "predictions" / "sts-dev.csv")
    ids = list(pred)
    gold = gold_of(data_dir / "sts-dev.csv", "similarity")
    predictor = load(run_dir, device="cpu")
    scores = [o["score"] for o in predictor.predict("sts", texts_of(predictor, "sts", data_dir / "sts-dev.csv", ids))]
    assert [float(pred[i]) for i in ids] == pytest.approx(scores, abs=5.1e-5)  # the file holds 4 decimals
    (ax,) = figures["sts-scatter.png"].axes
    (points,) = [c for c in ax.collections if c.get_gid() == "points"]
    xy = np.asarray(points.get_offsets())
    assert xy[:, 0].tolist() == pytest.approx([gold[i] for i in ids], abs=1e-6)  # float32 labels
    assert xy[:, 1].tolist() == pytest.approx(scores, abs=1e-5)
    r = stats.pearsonr([gold[i] for i in ids], scores)[0]
    drawn = float(re.search(r"Pearson r = (-?[0-9.]+)", ax.get_title()).group(1))
    assert drawn == pytest.approx(r, abs=0.0015)


@pytest.mark.parametrize("task", ["qqp", "para"])
def test_run_calibration_bins_the_model_probabilities(plotted, data_dir, task):
    from minbert.inference.predictor import load

    run_dir, figures, _ = plotted
    pred = prediction_file(run_dir / "predictions" / f"{task}-dev.csv")
    ids = list(pred)
    predictor = load(run_dir, device="cpu")
    if task == "qqp":
        gold_by_id = gold_of(data_dir / "quora-dev.csv", "is_duplicate")
        outputs = predictor.predict("qqp", texts_of(predictor, "qqp", data_dir / "quora-dev.csv", ids))
        prob = [o["probability"] for o in outputs]
        labels = [int(pred[i]) for i in ids]
    else:
        dev_file = Path(predictor.task("para").files["dev"])  # JSONL, its last line broken on purpose
        records = [json.loads(ln) for ln in dev_file.read_text().splitlines() if ln.endswith("}")]
        gold_by_id = {r["uid"]: NAMES.index(r["verdict"]) for r in records}
        outputs = predictor.predict("para", texts_of(predictor, "para", dev_file, ids))
        prob = [o["probabilities"][1] for o in outputs]
        labels = [NAMES.index(pred[i]) for i in ids]
    assert len(ids) == (DEV_ROWS if task == "qqp" else 24)
    assert labels == [int(p > 0.5) for p in prob]  # the file's labels are these probabilities' side of 0.5
    # the model's float32 probabilities against the run's, computed in float64 from the logits
    check_calibration_figure(figures[f"{task}-calibration.png"], prob, [int(gold_by_id[i]) for i in ids], tol=1e-6)


def test_a_failing_plot_is_one_warning_and_the_run_finishes(tiny_encoder, data_dir, tmp_path_factory, monkeypatch,
                                                            caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no font\nfor this")

    monkeypatch.setattr(task_plots, "plot_confusion", broken)
    cfg = from_dict(tiny_config(tiny_encoder, tmp_path_factory, ("sst", "sts")))
    run_dir = tmp_path_factory.mktemp("broken-plot") / "run"
    with caplog.at_level(logging.WARNING, logger="minbert.training.task_plots"):
        train(cfg, run_dir=run_dir, data_dir=data_dir, progress=False)
    assert [r.getMessage() for r in caplog.records if r.name == "minbert.training.task_plots"] == [
        "sst-confusion.png not drawn: RuntimeError: no font for this"]
    assert json.loads((run_dir / "summary.json").read_text())["dev"]["sst_acc"] is not None
    assert sorted(p.name for p in run_dir.glob("*.png")) == ["curves.png", "sts-scatter.png"]


def test_no_plot_no_png(shared_run_dir):
    """The shared run trains with ``output.plot: false``."""
    assert (shared_run_dir / "summary.json").is_file()
    assert not list(shared_run_dir.rglob("*.png"))


def _items(tasks: dict, n: int = 40) -> dict[str, tuple]:
    """Random final dev predictions (values, outputs, gold) of each task, by its kind."""
    rng = np.random.default_rng(0)
    out = {}
    for name, task in tasks.items():
        if task.kind == "regression":
            gold = rng.uniform(0, 5, n)
            out[name] = (gold + rng.normal(0, 1, n), gold + rng.normal(0, 1, n), gold)
        elif task.kind == "binary":
            logits = rng.normal(0, 2, n)
            out[name] = ((logits > 0).astype(int), logits, rng.integers(0, 2, n))
        else:
            logits = rng.normal(0, 2, (n, task.num_outputs))
            out[name] = (logits.argmax(1), logits, rng.integers(0, task.num_outputs, n))
    return out


def _running_in_group(pgid: int) -> list[int]:
    """The processes of group ``pgid`` that are not zombies, from /proc (Linux)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after "pid (comm)": state ppid pgrp ...
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.skipif(not hasattr(os, "mkfifo") or not Path("/proc/self/stat").exists(), reason="needs Linux")
def test_a_stuck_plot_child_is_ended_with_its_workers(plotted, tmp_path):
    """A drawing worker that never finishes (curves.png from a metrics.jsonl that is a FIFO no one
    writes) does not hold the run: the wait times out, the child and its workers are killed as
    one process group, and the run draws its plots itself."""
    run_dir, _, _ = plotted
    stuck = tmp_path / "stuck"
    stuck.mkdir()
    (stuck / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    os.mkfifo(stuck / "metrics.jsonl")
    child = task_plots.start_plotter()
    deadline = time.monotonic() + 120
    while len(_running_in_group(child.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)  # until the child has forked its workers
    assert len(_running_in_group(child.pid)) >= 2
    task_plots.start_curves(child, stuck)
    time.sleep(1.0)  # a worker now waits on the FIFO
    t0 = time.monotonic()
    assert task_plots._plot_in_child(child, stuck, {}, timeout_s=2) is None
    assert time.monotonic() - t0 < 30 and child.returncode is not None
    deadline = time.monotonic() + 10
    while _running_in_group(child.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _running_in_group(child.pid) == []  # its workers are gone too


def test_the_plot_child_draws_what_this_process_draws(plotted, tmp_path, monkeypatch, caplog):
    """start_plotter's child (a GPU run's plots) reads the run's tasks from its config.yaml and
    draws, from the predictions write_run_plots sends it, the same files with the same pixels as
    this process; where the child fails, this process draws them; a child that never gets its
    predictions ends when its input closes."""
    import shutil

    from matplotlib.image import imread

    from minbert.config import load_config
    from minbert.tasks.table import task_table

    run_dir, _, _ = plotted
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    for png in copy.glob("*.png"):
        png.unlink()
    table = task_table(load_config(copy / "config.yaml"))
    tasks = {n: table[n] for n in ("sst", "qqp", "sts", "para")}
    items = _items(tasks)
    here = task_plots._write_plots(run_dir, tasks, items)  # (over the run's own PNGs)
    real_write = task_plots._write_plots
    monkeypatch.setattr(task_plots, "_write_plots", lambda *a: pytest.fail("drawn in this process"))
    child = task_plots.start_plotter()
    assert task_plots._plot_in_child(child, copy, items) == here and child.returncode == 0
    for name in here:
        assert np.array_equal(imread(copy / name), imread(run_dir / name)), name

    for png in copy.glob("*.png"):  # the curves begun early: drawn before the predictions come
        png.unlink()
    early = task_plots.start_plotter()
    task_plots.start_curves(early, copy)
    deadline = time.monotonic() + 120
    while not (copy / "curves.png").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p.name for p in copy.glob("*.png")] == ["curves.png"]
    assert task_plots._plot_in_child(early, copy, items) == here and early.returncode == 0
    for name in here:
        assert np.array_equal(imread(copy / name), imread(run_dir / name)), name

    monkeypatch.setattr(task_plots, "_write_plots", real_write)
    for png in copy.glob("*.png"):
        png.unlink()
    failing = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit('no display')"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with caplog.at_level(logging.DEBUG, logger="minbert.training.task_plots"):
        assert task_plots._plot_in_child(failing, copy, items) is None
    assert caplog.records[-1].getMessage() == "the plot process failed (1): no display; drawing here"
    assert not list(copy.glob("*.png"))
    orphan = task_plots.start_plotter()
    orphan.stdin.close()  # the run ended without sending
    assert orphan.wait(timeout=120) != 0 and not list(copy.glob("*.png"))
    stopped = task_plots.start_plotter()
    task_plots.stop_plotter(stopped)  # a run that failed: ended at once
    task_plots.stop_plotter(None)
    assert stopped.returncode not in (None, 0) and not list(copy.glob("*.png"))
