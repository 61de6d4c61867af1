"""minbert tune (optuna study in SQLite, resumable), the epoch-end hook it prunes with, and
checkpoint averaging."""

from __future__ import annotations

import json

import pytest
import torch

from minbert.checkpoint import load_weights
from minbert.config import load_config
from minbert.errors import ConfigError
from minbert.train import train
from minbert.tune import Param, apply_params, tune

optuna = pytest.importorskip("optuna")

N = 48


def tiny_cfg(tiny_encoder, *extra):
    return load_config(None, [
        f"model.encoder={tiny_encoder}", "train.device=cpu", "train.epochs=2", "optim.lr=1e-3",
        "output.test_predictions=false", "output.plot=false", "output.tensorboard=false",
        *[f"tasks.{t}.{k}={v}" for t in ("sst", "qqp", "sts") for k, v in (("train_limit", N), ("dev_limit", N), ("batch_size", 16))],
        *extra,
    ])


def test_apply_params_sets_dotted_and_wildcard_keys(tiny_encoder):
    cfg = apply_params(tiny_cfg(tiny_encoder), {"optim.lr": 3e-4, "tasks.*.dropout": 0.05})
    assert cfg.optim.lr == 3e-4 and all(t.dropout == 0.05 for t in cfg.tasks.values())
    with pytest.raises(ConfigError, match="optim.nope"):
        apply_params(cfg, {"optim.nope": 1.0})


def test_epoch_hook_can_stop_training(tiny_encoder, data_dir, tmp_path):
    seen = []

    class Stop(Exception):
        pass

    def hook(epoch, dev):
        seen.append((epoch, dev["overall"]))
        raise Stop

    with pytest.raises(Stop):
        train(tiny_cfg(tiny_encoder), tmp_path / "run", data_dir=data_dir, progress=False, on_epoch_end=hook)
    assert [e for e, _ in seen] == [1] and 0.0 <= seen[0][1] <= 1.0
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines if "dev" in r] == [1]


def test_tune_study_is_saved_and_resumes(tiny_encoder, data_dir, tmp_path):
    space = (Param("optim.lr", 1e-4, 1e-2, log=True), Param("tasks.*.dropout", 0.0, 0.3), Param("train.epochs", 1, 2, integer=True))
    base = tiny_cfg(tiny_encoder, "train.epochs=1")
    first = tune(base, tmp_path / "study", n_trials=2, data_dir=data_dir, space=space)
    trials = json.loads((tmp_path / "study" / "trials.json").read_text())
    assert len(trials) == 2 and all(t["state"] == "COMPLETE" for t in trials)
    assert first["best_value"] == max(t["value"] for t in trials)
    assert first["best_value"] == trials[first["best_trial"]]["dev"]["overall"]
    best = load_config(tmp_path / "study" / "best.yaml")
    assert best.optim.lr == pytest.approx(first["best_params"]["optim.lr"])
    assert all(isinstance(t["params"]["train.epochs"], int) and 1 <= t["params"]["train.epochs"] <= 2 for t in trials)
    assert best.train.epochs == first["best_params"]["train.epochs"]
    assert all(t["epochs_reported"] == t["params"]["train.epochs"] for t in trials)  # each trial ran its own length
    # same command again: the study is complete, nothing runs; asking for more adds trials
    again = tune(base, tmp_path / "study", n_trials=2, data_dir=data_dir, space=space)
    assert again == first
    more = tune(base, tmp_path / "study", n_trials=3, data_dir=data_dir, space=space)
    assert more["n_trials"] == 3 and (tmp_path / "study" / "trial-0002" / "summary.json").is_file()


def test_checkpoint_average_is_the_mean_of_the_last_epochs(tiny_encoder, data_dir, tmp_path):
    run = train(tiny_cfg(tiny_encoder, "train.average_last=2"), tmp_path / "run", data_dir=data_dir, progress=False)
    avg = run.summary["checkpoint_average"]
    assert avg["epochs"] == 2 and 0.0 <= avg["dev"]["overall"] <= 1.0
    steps = sorted((tmp_path / "run" / "checkpoints").glob("step-*"))
    assert len(steps) == 2  # the end of epochs 1 and 2
    states = [load_weights(s / "model.safetensors")[0] for s in steps]
    if avg["chosen"]:
        got, _ = load_weights(tmp_path / "run" / "checkpoints" / "average" / "model.safetensors")
        for k, v in got.items():
            torch.testing.assert_close(v, (states[0][k] + states[1][k]) / 2, atol=1e-6, rtol=1e-6, msg=k)
        assert run.summary["dev"]["overall"] == pytest.approx(avg["dev"]["overall"])
    else:
        hist = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
        best = max(r["dev"]["overall"] for r in hist if "dev" in r)
        assert avg["dev"]["overall"] <= best and run.summary["dev"]["overall"] == pytest.approx(best)
