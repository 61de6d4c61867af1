"""minbert tune (optuna study in SQLite, resumable), the epoch-end hook it prunes with, and
checkpoint averaging."""

from __future__ import annotations

import json

import pytest
import torch

from minbert.config import load_config
from minbert.errors import CheckpointError, ConfigError
from minbert.experiments.tune import Param, apply_params, tune
from minbert.io import load_weights
from minbert.training.trainer import train

optuna = pytest.importorskip("optuna")

N = 48


def tiny_cfg(tiny_encoder, *extra):
    return load_config(None, [
        f"model.encoder={tiny_encoder}", "train.device=cpu", "train.epochs=2", "optim.lr=1e-3",
        "output.test_predictions=false", "output.plot=false", "output.report_to=none",
        *[
            f"tasks.{t}.{k}={v}"
            for t in ("sst", "qqp", "sts") for k, v in (("train_limit", N), ("dev_limit", N), ("batch_size", 16))
        ],
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
    space = (
        Param("optim.lr", 1e-4, 1e-2, log=True), Param("tasks.*.dropout", 0.0, 0.3),
        Param("train.epochs", 1, 2, integer=True),
    )
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


SPACE = (Param("optim.lr", 1e-4, 1e-2, log=True), Param("tasks.*.dropout", 0.0, 0.3))


def test_tune_argument_mistakes_are_config_errors(tiny_encoder, data_dir, tmp_path):
    base = tiny_cfg(tiny_encoder, "train.epochs=1")
    (tmp_path / "afile").write_text("x")
    for kwargs, fragment in [
        (dict(n_trials=0), "--trials must be >= 1"),
        (dict(timeout=0.0), "--timeout must be a positive"),
        (dict(timeout=float("nan")), "--timeout must be a positive"),
        (dict(seed=-1), "--seed must be >= 0"),
    ]:
        with pytest.raises(ConfigError, match=fragment):
            tune(base, tmp_path / "s", data_dir=data_dir, space=SPACE, **kwargs)
    with pytest.raises(ConfigError, match="is a file"):
        tune(base, tmp_path / "afile", data_dir=data_dir, space=SPACE)
    with pytest.raises(CheckpointError, match="no-encoder"):  # checked before any study or trial folder is made
        tune(tiny_cfg(tmp_path / "no-encoder"), tmp_path / "s2", data_dir=data_dir, space=SPACE)
    assert not (tmp_path / "s2").exists() and not (tmp_path / "s").exists()


def test_a_resumed_study_keeps_its_base_config_and_samples_new_values(tiny_encoder, data_dir, tmp_path):
    base = tiny_cfg(tiny_encoder, "train.epochs=1")
    tune(base, tmp_path / "study", n_trials=1, data_dir=data_dir, space=SPACE)
    # same seed, resumed: the sampler is seeded past the trials already there, so trial 1 differs
    tune(base, tmp_path / "study", n_trials=2, data_dir=data_dir, space=SPACE)
    trials = json.loads((tmp_path / "study" / "trials.json").read_text())
    assert len(trials) == 2 and trials[0]["params"] != trials[1]["params"]
    # best.yaml is what the best trial trained (its own config.yaml)
    best = min(trials, key=lambda t: -t["value"])
    trial_config = tmp_path / "study" / f"trial-{best['number']:04d}" / "config.yaml"
    assert load_config(tmp_path / "study" / "best.yaml") == load_config(trial_config)
    # another base config in the same study folder: refused, naming what differs
    with pytest.raises(ConfigError, match=r"another base config \(differs in optim.weight_decay\)"):
        tune(tiny_cfg(tiny_encoder, "train.epochs=1", "optim.weight_decay=0.5"), tmp_path / "study", n_trials=3,
             data_dir=data_dir, space=SPACE)
    with pytest.raises(ConfigError, match="holds the study"):
        tune(tiny_cfg(tiny_encoder, "train.epochs=1", "name=other"), tmp_path / "study", n_trials=3, data_dir=data_dir,
             space=SPACE)
    assert len(json.loads((tmp_path / "study" / "trials.json").read_text())) == 2


def test_two_workers_started_together_share_one_study(tiny_encoder, data_dir, tmp_path):
    import os
    import subprocess
    import sys

    args = [sys.executable, "-m", "minbert", "tune", "--study-dir", str(tmp_path / "study"), "--trials", "2",
            "--data-dir", str(data_dir), f"--model.encoder={tiny_encoder}", "--train.device=cpu", "--train.epochs=1",
            "--output.test_predictions=false", "--output.plot=false", "--output.report_to=none",
            *[f"--tasks.{t}.{k}={v}" for t in ("sst", "qqp", "sts") for k, v in (("train_limit", N), ("dev_limit", N))]]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = [
        subprocess.Popen(
            [*args, "--seed", str(k)], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for k in (1, 2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    trials = json.loads((tmp_path / "study" / "trials.json").read_text())
    done = [t for t in trials if t["state"] in ("COMPLETE", "PRUNED")]
    # the study stops at 2; a worker may have started one more while the other finished
    assert 2 <= len(done) <= 3 and len({json.dumps(t["params"], sort_keys=True) for t in done}) == len(done)
