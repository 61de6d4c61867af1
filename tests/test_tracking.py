"""Experiment tracking (``output.report_to``): the config key in its spellings and its mistakes,
TensorBoard's hparams record, and MLflow runs read back through ``MlflowClient`` from a SQLite
tracking store, compared with the run folder's own ``metrics.jsonl``, ``summary.json`` and config."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from minbert.cli import main
from minbert.config import from_dict, load_config, to_dict
from minbert.errors import ConfigError
from minbert_testkit import cli_train_args, slice_args

# ----------------------------------------------------------------------------------------------
# the config key


@pytest.mark.parametrize(
    "text,overrides,expect",
    [
        ("", [], ("tensorboard",)),
        ("output: {report_to: mlflow}\n", [], ("mlflow",)),
        ("output: {report_to: none}\n", [], ("none",)),
        ("output: {report_to: [tensorboard, mlflow]}\n", [], ("tensorboard", "mlflow")),
        ("output: {report_to: 'mlflow, tensorboard'}\n", [], ("mlflow", "tensorboard")),
        ("", ["output.report_to=tensorboard,mlflow"], ("tensorboard", "mlflow")),
        ("", ["--output.report_to=none"], ("none",)),
        ("", ["output.report_to=[mlflow]"], ("mlflow",)),
        ("output: {report_to: none}\n", ["output.report_to=mlflow"], ("mlflow",)),
        # run folders and exports written before report_to hold output.tensorboard
        ("output: {tensorboard: false}\n", [], ("none",)),
        ("output: {tensorboard: true, plot: false}\n", [], ("tensorboard",)),
    ],
)
def test_report_to_is_a_list_a_name_or_comma_separated_names(tmp_path, text, overrides, expect):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    cfg = load_config(path, [o.removeprefix("--") for o in overrides])
    assert cfg.output.report_to == expect
    assert from_dict(yaml.safe_load(yaml.safe_dump(to_dict(cfg)))).output.report_to == expect  # as saved in a run


@pytest.mark.parametrize(
    "override,message",
    [
        ("output.report_to=wandb", "output.report_to[0]: 'wandb' is not one of ['tensorboard', 'mlflow', 'none']"),
        ("output.report_to=tensorboard,wandb", "output.report_to[1]: 'wandb' is not one of ['tensorboard', 'mlflow',"),
        ("output.report_to=none,mlflow", "output.report_to: none cannot be combined with other trackers"),
        ("output.report_to=[mlflow, tensorboard, mlflow]", "output.report_to: mlflow given more than once"),
        ("output.report_to=[]", "output.report_to: empty; give none"),
        ("output.report_to=true", "output.report_to: expected a list of ['tensorboard', 'mlflow', 'none']"),
    ],
)
def test_report_to_mistakes_name_the_allowed_values(override, message):
    with pytest.raises(ConfigError) as ei:
        load_config(None, [override])
    assert str(ei.value).startswith(message)


@pytest.mark.parametrize("text", ["output: {tensorboard: true, report_to: [mlflow]}\n", "output: {tensorboard: 1}\n"])
def test_the_old_tensorboard_key_is_read_only_alone_and_as_a_bool(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="output.tensorboard: replaced by output.report_to"):
        load_config(path)


def test_config_show_and_schema_know_report_to(capsys):
    from minbert.config_doc import json_schema

    assert main(["config", "show", "--output.report_to=tensorboard,mlflow"]) == 0
    out = capsys.readouterr().out
    assert "\n  report_to: [tensorboard, mlflow]  # experiment trackers: " in out
    assert from_dict(yaml.safe_load(out)).output.report_to == ("tensorboard", "mlflow")
    v = jsonschema.Draft202012Validator(json_schema())
    assert json_schema()["$defs"]["OutputConfig"]["properties"]["report_to"]["default"] == ["tensorboard"]
    for good in (["mlflow"], ["tensorboard", "mlflow"], "none", "tensorboard, mlflow"):
        assert list(v.iter_errors({"output": {"report_to": good}})) == [], good
    for bad in (["wandb"], "wandb", "tensorboard,wandb", "", True):
        assert list(v.iter_errors({"output": {"report_to": bad}})) != [], bad


# ----------------------------------------------------------------------------------------------
# a run that reports to TensorBoard and MLflow


def records(run_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]


TINY = [*slice_args(32, 16, 8, ("sst",)), "--train.device=cpu", "--train.epochs=2", "--train.log_every=1",
        "--optim.lr=1e-3", "--output.plot=false", "--output.test_predictions=false"]  # 4 steps an epoch, sst only


def tiny_args(tiny_encoder, data_dir, run_dir, *extra: str) -> list[str]:
    """``minbert train`` of a 2-epoch sst-only run: 32 train rows in batches of 8, 16 dev rows."""
    return cli_train_args(tiny_encoder, data_dir, run_dir, *TINY, "--no-progress", *extra)


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> str:
    """A SQLite tracking store in tmp_path (MLflow keeps artifacts under the working directory's ./mlruns)."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return uri


@pytest.fixture
def tracked_run(tmp_path, tiny_encoder, data_dir, mlflow_store, capsys) -> Path:
    run_dir, config = tmp_path / "run", tmp_path / "tiny-tracked.yaml"  # the run's name: tiny-tracked
    config.write_text("train: {seed: 0}\n")
    code = main(tiny_args(tiny_encoder, data_dir, run_dir, f"--config={config}",
                          "--output.report_to=tensorboard,mlflow"))
    assert code == 0, capsys.readouterr().err
    return run_dir


def test_tensorboard_holds_the_hparams_and_the_final_dev_metrics(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    summary = json.loads((tracked_run / "summary.json").read_text())
    folder = tracked_run / "tensorboard"
    assert [p for p in folder.iterdir() if p.is_dir()] == []  # the run's own event file, no subfolder
    acc = EventAccumulator(str(folder))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    assert set(content) == {"_hparams_/experiment", "_hparams_/session_start_info", "_hparams_/session_end_info"}
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    hp = start.hparams
    assert hp["optim.lr"].number_value == pytest.approx(1e-3)
    assert hp["tasks.sst.batch_size"].number_value == 8 and hp["train.epochs"].number_value == 2
    assert hp["train.seed"].number_value == summary["config"]["train"]["seed"]
    assert hp["name"].string_value == "tiny-tracked" and hp["optim.betas"].string_value == "[0.9, 0.999]"
    assert hp["optim.head_lr"].string_value == "null"  # None as text
    assert hp["output.report_to"].string_value == '["tensorboard", "mlflow"]'
    assert {m.name.tag for m in experiment.metric_infos} == {f"hparam/{k}" for k in summary["dev_all"]}
    for key in ("sst_acc", "overall"):
        events = acc.Scalars(f"hparam/{key}")
        assert len(events) == 1 and events[0].step == summary["steps"] == 8
        assert events[0].value == pytest.approx(summary["dev_all"][key], abs=1e-6)


def test_mlflow_run_holds_params_dev_history_losses_and_the_summary(tracked_run, tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name("tiny-tracked")  # the config's name
    (run,) = client.search_runs([experiment.experiment_id])
    assert json.loads((tracked_run / "mlflow.json").read_text())["run_id"] == run.info.run_id
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    summary = json.loads((tracked_run / "summary.json").read_text())
    params = run.data.params
    assert float(params["optim.lr"]) == summary["config"]["optim"]["lr"] == 1e-3
    assert params["tasks.sst.batch_size"] == "8" and params["train.epochs"] == "2"
    assert params["output.report_to"] == '["tensorboard", "mlflow"]'
    # dev metrics per epoch (step = epoch), equal to metrics.jsonl's dev records
    dev = [r for r in records(tracked_run) if "dev" in r]
    assert [r["epoch"] for r in dev] == [1, 2]
    for key in ("sst_acc", "overall"):
        history = sorted(client.get_metric_history(run.info.run_id, f"dev/{key}"), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == [(r["epoch"], pytest.approx(r["dev"][key])) for r in dev]
    # the training loss and lr of every logged step
    steps = [r for r in records(tracked_run) if "lr" in r]
    assert [r["step"] for r in steps] == list(range(1, 9))
    for key, field in (("train/loss_sst", "loss/sst"), ("train/lr", "lr")):
        history = sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)
        assert [(m.step, m.value) for m in history] == [(r["step"], pytest.approx(r[field])) for r in steps]
    assert run.data.metrics["final/sst_acc"] == pytest.approx(summary["dev_all"]["sst_acc"])
    # the artifacts are the run folder's files
    names = sorted(a.path for a in client.list_artifacts(run.info.run_id))
    assert names == ["config.yaml", "summary.json"]
    got = client.download_artifacts(run.info.run_id, "summary.json", str(tmp_path / "dl"))
    assert json.loads(Path(got).read_text()) == summary
    got = client.download_artifacts(run.info.run_id, "config.yaml", str(tmp_path / "dl"))
    assert Path(got).read_text() == (tracked_run / "config.yaml").read_text()


def fail_after_the_first_epoch(tiny_encoder, data_dir, run_dir: Path, error: type = RuntimeError) -> None:
    """A 2-epoch run reporting to MLflow that raises ``error`` after its first epoch (and its
    checkpoint); a KeyboardInterrupt (Ctrl-C outside the loop's handler) leaves train as
    TrainingInterrupted."""
    from minbert.errors import TrainingInterrupted
    from minbert.training.trainer import train

    cfg = load_config(None, [a[2:] for a in TINY] + [f"model.encoder={tiny_encoder}", "output.report_to=mlflow"])

    def stop(epoch, dev):
        raise error("stop after the first epoch")

    expected = TrainingInterrupted if error is KeyboardInterrupt else error
    with pytest.raises(expected):
        train(cfg, run_dir, data_dir, progress=False, on_epoch_end=stop)


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failed_run_is_marked_failed_and_its_resume_continues_it(tmp_path, tiny_encoder, data_dir, mlflow_store,
                                                                   monkeypatch, error):
    from mlflow.tracking import MlflowClient

    from minbert.training.trainer import train

    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "resumed")
    fail_after_the_first_epoch(tiny_encoder, data_dir, tmp_path / "run", error)
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("resumed").experiment_id])
    assert run.info.status == "FAILED" and client.list_artifacts(run.info.run_id) == []
    assert [m.step for m in client.get_metric_history(run.info.run_id, "dev/sst_acc")] == [1]

    train(tmp_path / "run" / "config.yaml", tmp_path / "run", data_dir, resume=True, progress=False)
    (again,) = client.search_runs([client.get_experiment_by_name("resumed").experiment_id])
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    dev = [r for r in records(tmp_path / "run") if "dev" in r]
    history = sorted(client.get_metric_history(run.info.run_id, "dev/sst_acc"), key=lambda m: m.step)
    assert [(m.step, m.value) for m in history] == [(r["epoch"], pytest.approx(r["dev"]["sst_acc"])) for r in dev]
    assert [m.step for m in history] == [1, 2]


def test_report_to_mlflow_without_mlflow_is_one_line_before_the_run_starts(tmp_path, tiny_encoder, data_dir,
                                                                         monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # import mlflow fails, as when it is not installed
    run_dir = tmp_path / "run"
    code = main(tiny_args(tiny_encoder, data_dir, run_dir, "--output.report_to=tensorboard,mlflow"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err == 'error: output.report_to: mlflow is not installed; pip install "minbert[mlflow]"\n'
    assert not run_dir.exists()  # refused before a run folder is made


REPORT_TO_VALUES = [
    "none", "mlflow", "tensorboard, mlflow", " mlflow ,tensorboard ", ["none"], ["mlflow", "tensorboard"],  # accepted
    [], ["none", "none"], ["tensorboard", "tensorboard"], ["none", "mlflow"], ["mlflow", "none"],  # refused
    "none,mlflow", "mlflow, none", "tensorboard,tensorboard", "mlflow , mlflow", "tensorboard,mlflow,tensorboard",
    "none,none", "tensorboard,,mlflow", "mlflow,", "", "TensorBoard", 1, None, True, [["tensorboard"]],
    ["mlflow", None],
]


@pytest.mark.parametrize("value", REPORT_TO_VALUES, ids=repr)
def test_the_schema_accepts_exactly_the_report_to_values_that_load(value):
    from minbert.config_doc import json_schema

    raw = {"output": {"report_to": value}}
    try:
        from_dict(raw)
        loads = True
    except ConfigError:
        loads = False
    assert loads == (value in ("none", "mlflow", "tensorboard, mlflow", " mlflow ,tensorboard ", ["none"],
                               ["mlflow", "tensorboard"]))
    assert (list(jsonschema.Draft202012Validator(json_schema()).iter_errors(raw)) == []) == loads


@pytest.mark.parametrize("output", [{"tensorboard": True}, {"tensorboard": False, "plot": False},
                                    {"tensorboard": True, "report_to": "mlflow"}, {"tensorboard": "yes"}],
                         ids=repr)
def test_the_schema_accepts_the_old_tensorboard_key_as_load_does(output):
    from minbert.config_doc import json_schema

    loads = "report_to" not in output and isinstance(output["tensorboard"], bool)
    if loads:
        expect = ("tensorboard",) if output["tensorboard"] else ("none",)
        assert from_dict({"output": output}).output.report_to == expect
    else:
        with pytest.raises(ConfigError, match="output.tensorboard: replaced by output.report_to"):
            from_dict({"output": output})
    errors = list(jsonschema.Draft202012Validator(json_schema()).iter_errors({"output": output}))
    assert (errors == []) == loads


def test_an_old_run_config_takes_a_report_to_override(tmp_path):
    path = tmp_path / "config.yaml"  # a run folder written before report_to existed
    path.write_text("output: {tensorboard: true, plot: false}\n")
    cfg = load_config(path, ["output.report_to=mlflow"])
    assert cfg.output.report_to == ("mlflow",) and cfg.output.plot is False
    assert load_config(path, ["output.tensorboard=false"]).output.report_to == ("none",)


@pytest.fixture(params=["a file as folder", "unknown scheme", "no server", "a password"])
def broken_store(request, tmp_path, monkeypatch) -> str:
    """An MLFLOW_TRACKING_URI that MLflow cannot use: a database under a file, a scheme MLflow
    does not know, a server that is not there (asked once, without retries), a database server
    with a password (no driver, or no server). Returns the URI as the error shows it."""
    from minbert_testkit import free_port

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    port = free_port()
    uri = {"a file as folder": f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}", "unknown scheme": "bogus://store",
           "no server": f"http://127.0.0.1:{port}",
           "a password": f"postgresql://minbert:hunter2@127.0.0.1:{port}/runs"}[request.param]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    return uri.replace(":hunter2@", ":***@")  # the password is never shown


def test_an_unusable_mlflow_store_is_one_line_before_the_run_folder_is_touched(tmp_path, tiny_encoder, data_dir,
                                                                            broken_store, capsys):
    fresh, old = tmp_path / "fresh", tmp_path / "old"
    old.mkdir()
    (old / "config.yaml").write_text("name: old\n")  # a finished run that --overwrite would replace
    (old / "summary.json").write_text("{}")
    for run_dir, extra in ((fresh, ()), (old, ("--overwrite",))):
        code = main(tiny_args(tiny_encoder, data_dir, run_dir, "--output.report_to=tensorboard,mlflow", *extra))
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "hunter2" not in err, err
        assert err.startswith(f"error: output.report_to: mlflow: the tracking store {broken_store} cannot be used: ")
    assert not fresh.exists()  # nothing made
    assert sorted(p.name for p in old.iterdir()) == ["config.yaml", "summary.json"]  # nothing replaced


def test_a_resume_checks_the_mlflow_store_of_the_run_it_continues(tmp_path, broken_store, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("output: {report_to: mlflow}\n")
    (run_dir / "encoder").mkdir()
    (run_dir / "encoder" / "config.json").write_text("{}")  # a run folder as far as require_run_dir looks
    code = main(["train", "--resume", str(run_dir)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: output.report_to: mlflow: the tracking store {broken_store} cannot be used: ")


def test_a_resume_after_a_crash_keeps_one_tensorboard_point_per_step(tmp_path, tiny_encoder, data_dir, monkeypatch):
    """A crash after step 6 (checkpoint: the epoch end at step 4): the resumed run logs steps 5..8
    again, and TensorBoard shows each step once, with the resumed run's values."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from minbert.training.trainer import Trainer, train

    cfg = load_config(None, [a[2:] for a in TINY] + [f"model.encoder={tiny_encoder}", "output.report_to=tensorboard"])
    step = Trainer.train_step

    def crash_after_step_6(self, schedule, epoch):
        done = step(self, schedule, epoch)
        if self.state.step == 6:
            self.metrics.flush_steps()  # steps 5 and 6 are in tensorboard/ and metrics.jsonl
            raise RuntimeError("crash")
        return done

    monkeypatch.setattr(Trainer, "train_step", crash_after_step_6)
    with pytest.raises(RuntimeError, match="crash"):
        train(cfg, tmp_path / "run", data_dir, progress=False)
    monkeypatch.setattr(Trainer, "train_step", step)
    train(tmp_path / "run" / "config.yaml", tmp_path / "run", data_dir, resume=True, progress=False)
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    steps = [r for r in records(tmp_path / "run") if "lr" in r]  # metrics.jsonl: cut back to step 4 on resume
    assert [r["step"] for r in steps] == list(range(1, 9))
    for tag, field in (("train/loss_sst", "loss/sst"), ("train/lr", "lr")):
        events = acc.Scalars(tag)
        assert [(e.step, e.value) for e in events] == [(r["step"], pytest.approx(r[field])) for r in steps], tag
    assert [e.step for e in acc.Scalars("dev/sst_acc")] == [1, 2]


def test_a_deleted_mlflow_experiment_is_one_line_before_the_run_starts(tmp_path, tiny_encoder, data_dir, mlflow_store,
                                                                      capsys):
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    client.delete_experiment(client.create_experiment("tiny"))
    config, run_dir = tmp_path / "tiny.yaml", tmp_path / "run"  # the experiment: the config's name
    config.write_text("output: {report_to: mlflow}\n")
    capsys.readouterr()  # MLflow's log of making the database
    code = main(tiny_args(tiny_encoder, data_dir, run_dir, f"--config={config}"))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: output.report_to: mlflow: the experiment 'tiny' in {mlflow_store} is deleted; ")
    assert not run_dir.exists()


def test_a_resume_whose_mlflow_run_was_deleted_starts_a_new_one(tmp_path, tiny_encoder, data_dir, mlflow_store):
    from mlflow.tracking import MlflowClient

    from minbert.training.trainer import train

    fail_after_the_first_epoch(tiny_encoder, data_dir, tmp_path / "run")
    client = MlflowClient()
    (first,) = client.search_runs([client.get_experiment_by_name("run").experiment_id])
    client.delete_run(first.info.run_id)
    train(tmp_path / "run" / "config.yaml", tmp_path / "run", data_dir, resume=True, progress=False)
    (again,) = client.search_runs([client.get_experiment_by_name("run").experiment_id])  # active runs only
    assert again.info.run_id != first.info.run_id and again.info.status == "FINISHED"
    assert json.loads((tmp_path / "run" / "mlflow.json").read_text())["run_id"] == again.info.run_id
    assert [m.step for m in client.get_metric_history(again.info.run_id, "dev/sst_acc")] == [2]  # from the resume on
