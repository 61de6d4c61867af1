"""Evaluation helpers: ensembling several runs (multi-seed prediction averaging)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from minbert.errors import DataError
from minbert.inference.evaluate import TaskPredictions, average_predictions
from minbert.tasks.base import get_task


def test_average_predictions_means_raw_outputs_then_predicts():
    sst = get_task("sst")
    a = TaskPredictions(["x", "y"], None, np.array([[2.0, 0, 0, 0, 0], [0, 0, 0, 0, 1.0]], dtype=np.float32))
    b = TaskPredictions(["x", "y"], None, np.array([[0, 3.0, 0, 0, 0], [0, 0, 0, 0, 3.0]], dtype=np.float32))
    avg = average_predictions(sst, [a, b])
    np.testing.assert_allclose(avg.outputs, [[1.0, 1.5, 0, 0, 0], [0, 0, 0, 0, 2.0]])
    assert avg.values.tolist() == [1, 4]
    with pytest.raises(DataError, match="predicted different rows"):
        average_predictions(sst, [a, TaskPredictions(["y", "x"], None, a.outputs)])


def test_ensemble_of_two_seeds(tiny_encoder, data_dir, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    common = ["--data-dir", str(data_dir), "--no-progress", f"--model.encoder={tiny_encoder}", "--train.epochs=1",
              "--output.report_to=none", "--output.plot=false", "--optim.lr=1e-3"]
    for t in ("sst", "qqp", "sts"):
        common += [f"--tasks.{t}.train_limit=32", f"--tasks.{t}.dev_limit=40", f"--tasks.{t}.batch_size=8"]
    runs = []
    for seed in (1, 2):
        run = tmp_path / f"seed{seed}"
        p = subprocess.run(
            [sys.executable, "-m", "minbert", "train", "--run-dir", str(run), f"--train.seed={seed}", *common],
            env=env, capture_output=True, text=True, timeout=300,
        )
        assert p.returncode == 0, p.stderr[-2000:]
        runs.append(run)
    out = tmp_path / "ens"
    p = subprocess.run(
        [sys.executable, "-m", "minbert", "ensemble", *map(str, runs), "--out", str(out), "--device", "cpu"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stderr[-2000:]
    ens = json.loads((out / "eval.json").read_text())

    # the same by hand: the two runs' STS scores on dev, averaged, against the labels
    from scipy import stats

    from minbert.inference.predictor import load

    raw = get_task("sts").read(data_dir / "sts-dev.csv", "dev").sample(40, seed=0)  # the dev sample of both seeds
    pairs = [(t[0], t[1]) for t in raw.texts]
    scores = np.mean([load(r, device="cpu").similarity(pairs) for r in runs], axis=0)
    assert ens["dev"]["sts_pearson"] == pytest.approx(stats.pearsonr(scores, raw.labels)[0], abs=1e-5)
    assert set(ens["members"]) == {str(r) for r in runs}
    rows = (out / "predictions" / "sts-test.csv").read_text().splitlines()
    assert rows[0] == "id,Predicted_Similarity" and len(rows) == 1 + 1725


def test_prediction_files_quote_ids_that_hold_commas_quotes_or_line_breaks(tmp_path):
    """Read back with the csv module, every id and value is the one written; the cs224n layout,
    which cannot quote, refuses such an id in one line and writes nothing."""
    import csv

    from minbert.inference.evaluate import write_predictions

    task = get_task("sst")
    ids = ['r100,"x"', "plain", "two\nlines", 'q"uote']
    pred = TaskPredictions(ids, np.array([0, 4, 2, 1]), np.zeros((4, 5), dtype=np.float32))
    write_predictions(tmp_path / "p.csv", task, pred)
    with open(tmp_path / "p.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["id", task.prediction_column], ['r100,"x"', "0"], ["plain", "4"], ["two\nlines", "2"],
                    ['q"uote', "1"]]
    with pytest.raises(DataError, match=r"cs224n layout cannot hold id 'r100,\"x\"'"):
        write_predictions(tmp_path / "c.csv", task, pred, fmt="cs224n")
    assert not (tmp_path / "c.csv").exists()


def test_ensemble_refuses_to_write_into_a_run_folder(shared_run_dir, tmp_path, capsys):
    """--out that is one of the members, or any run folder, would have its prediction files
    replaced: refused in one line before anything is read or written."""
    from minbert.cli import main

    before = {p: p.stat().st_mtime_ns for p in shared_run_dir.rglob("*") if p.is_file()}
    for out in (shared_run_dir, shared_run_dir / "."):
        assert main(["ensemble", str(shared_run_dir), str(shared_run_dir), "--out", str(out)]) == 2
        assert capsys.readouterr().err.strip() == (
            f"error: --out {out}: is a run folder, whose prediction files the ensemble's would replace; give a "
            "folder of its own")
    assert {p: p.stat().st_mtime_ns for p in shared_run_dir.rglob("*") if p.is_file()} == before
