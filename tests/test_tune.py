"""minbert tune (optuna study in SQLite, resumable), the epoch-end hook it prunes with, and
checkpoint averaging."""

from __future__ import annotations

import json

import numpy as np
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


# ----------------------------------------------------------------------------------------------
# the study's plots


def study_of(values: list[float], n_params: int = 2, pruned: bool = True) -> optuna.Study:
    """An in-memory study: one complete trial per value (params from a seeded generator), then a
    pruned and a failed trial."""
    import random

    from optuna.distributions import FloatDistribution

    rng = random.Random(0)
    names = ["optim.lr", "tasks.*.dropout", "optim.warmup_ratio"][:n_params]
    dist = {k: FloatDistribution(0.0, 1.0) for k in names}
    study = optuna.create_study(direction="maximize")
    for v in values:
        study.add_trial(optuna.trial.create_trial(params={k: rng.random() for k in names}, distributions=dist, value=v))
    if pruned:
        study.add_trial(optuna.trial.create_trial(params={k: 0.5 for k in names}, distributions=dist,
                                                  state=optuna.trial.TrialState.PRUNED, intermediate_values={1: 0.1}))
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    return study


def spy_figures(monkeypatch) -> dict:
    from minbert.experiments import tune as tune_module

    figures, write = {}, tune_module.atomic_write_png

    def spy(path, fig, tight=False):
        figures[path.name] = fig
        write(path, fig, tight)

    monkeypatch.setattr(tune_module, "atomic_write_png", spy)
    return figures


def test_study_plots_show_the_trials_values_and_importances(tmp_path, monkeypatch):
    import matplotlib
    import matplotlib.pyplot as plt

    from minbert.experiments.tune import write_study_plots

    values = [0.52, 0.61, 0.58, 0.70, 0.66, 0.69]
    study = study_of(values)
    figures = spy_figures(monkeypatch)
    def style() -> dict:  # the settings but the backend (the plots choose Agg)
        return {k: v for k, v in matplotlib.rcParams.items() if not k.startswith("backend")}

    before = style()
    open_before = plt.get_fignums()
    assert write_study_plots(study, tmp_path) == ["history.png", "importances.png"]
    for name in ("history.png", "importances.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # history: one point per complete trial (trial number, value); the best-so-far line
    (ax,) = figures["history.png"].axes
    (points,) = [c for c in ax.collections if len(c.get_offsets())]
    assert np.asarray(points.get_offsets()).tolist() == [[i, v] for i, v in enumerate(values)]
    best = [ln for ln in ax.get_lines() if ln.get_label() == "Best Value"][0]
    assert best.get_ydata()[: len(values)].tolist() == [max(values[: i + 1]) for i in range(len(values))]
    # importances: a bar per parameter, as long as fANOVA (seed 0) says
    (ax,) = figures["importances.png"].axes
    widths = {t.get_text(): p.get_width() for t, p in zip(ax.get_yticklabels(), ax.patches, strict=True)}
    expected = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    assert set(widths) == {"optim.lr", "tasks.*.dropout"}
    assert widths == pytest.approx(expected)
    assert style() == before  # optuna's ggplot style does not leak
    assert plt.get_fignums() == open_before  # its pyplot figures are closed


@pytest.mark.parametrize(
    "values, n_params, written, lines",
    [
        ([0.5], 2, ["history.png"], ["importances.png not drawn: importances need 2 complete trials and 2 parameters "
                                     "(have 1 and 2)"]),
        ([0.5, 0.6, 0.7], 1, ["history.png"], ["importances.png not drawn: importances need 2 complete trials and "
                                               "2 parameters (have 3 and 1)"]),
        ([], 2, [], ["history.png not drawn: no complete trial yet",
                     "importances.png not drawn: importances need 2 complete trials and 2 parameters (have 0 and 0)"]),
    ],
)
def test_study_plots_skip_what_says_nothing(tmp_path, caplog, values, n_params, written, lines):
    import logging

    from minbert.experiments.tune import write_study_plots

    with caplog.at_level(logging.INFO, logger="minbert.experiments.tune"):
        assert write_study_plots(study_of(values, n_params), tmp_path) == written
    assert [r.getMessage() for r in caplog.records if r.name == "minbert.experiments.tune"] == lines
    assert sorted(p.name for p in tmp_path.glob("*.png")) == written


@pytest.mark.parametrize("plot", [True, False])
def test_tune_draws_the_study_when_output_plot_is_on(tiny_encoder, data_dir, tmp_path, monkeypatch, plot):
    """Trials scored without training (the objective replaced): the plots follow ``output.plot``."""
    from minbert.experiments import tune as tune_module

    def objective(trial, *, cfg, space, study_dir, data_dir):
        x = [trial.suggest_float(p.key, p.low, p.high, log=p.log) for p in space]
        return x[0] * 10 + x[1]

    monkeypatch.setattr(tune_module, "_objective", objective)
    space = (Param("optim.lr", 1e-4, 1e-2, log=True), Param("tasks.*.dropout", 0.0, 0.3))
    figures = spy_figures(monkeypatch)
    tune(tiny_cfg(tiny_encoder, f"output.plot={str(plot).lower()}"), tmp_path, n_trials=3, data_dir=data_dir,
         space=space)
    values = [t["value"] for t in json.loads((tmp_path / "trials.json").read_text())]
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == (["history.png", "importances.png"] if plot else [])
    if plot:
        (points,) = [c for c in figures["history.png"].axes[0].collections if len(c.get_offsets())]
        assert np.asarray(points.get_offsets())[:, 1].tolist() == values
