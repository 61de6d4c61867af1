"""Experiment trackers of a run (``output.report_to``), as plain functions and one class that
:class:`minbert.training.reporting.MetricsLog` calls: the hyperparameters as a flat dict
(:func:`flat_params`), TensorBoard's hparams summary (:func:`write_hparams`) and MLflow runs
(:class:`MlflowRun`, with the optional ``mlflow`` package: ``pip install "minbert[mlflow]"``).

An MLflow run goes to the tracking URI of ``MLFLOW_TRACKING_URI`` (MLflow's default without it),
in the experiment ``MLFLOW_EXPERIMENT_NAME`` or else the config's ``name``. It holds the flat
config as params; the tensorboard tags as metrics (``train/lr``, ``train/grad_norm``,
``train/loss_<task>`` at optimizer steps, ``dev/<metric>`` with the epoch as step,
``dev_steps/<metric>`` for ``train.eval_every``) and ``final/<metric>`` (``summary.json``'s
``dev_all``); ``summary.json``, ``config.yaml`` and ``curves.png`` as artifacts. ``mlflow.json``
in the run folder names the MLflow run, so that a resumed run continues it.
:func:`check_mlflow_store` opens the store before a run folder is made, replaced or continued,
so that a store that cannot be used is one ``ConfigError`` line. Sources: MLflow's
``MlflowClient`` API; TensorBoard's hparams plugin through ``torch.utils.tensorboard.summary.hparams``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from ..io import atomic_write_json

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

log = logging.getLogger(__name__)

MLFLOW_FILE = "mlflow.json"  # in the run folder: {"tracking_uri", "experiment_id", "run_id"}
ARTIFACTS = ("summary.json", "config.yaml", "curves.png")  # logged to an MLflow run when they exist
_MLFLOW_KEY = re.compile(r"[^\w\-. /]")  # what MLflow refuses in a param or metric name
_URI_PASSWORD = re.compile(r"(://[^/:@\s]*:)[^/\s]*@")  # scheme://user:PASSWORD@host


def require_trackers(report_to: tuple[str, ...]) -> None:
    """Check, before a run starts, that the packages of ``output.report_to`` are installed.

    Raises:
        ConfigError: mlflow is listed but not installed (the message names the extra to install).
    """
    if "mlflow" in report_to and importlib.util.find_spec("mlflow") is None:
        raise ConfigError('output.report_to: mlflow is not installed; pip install "minbert[mlflow]"')


def experiment_name(config_name: str) -> str:
    """The MLflow experiment of a run: ``MLFLOW_EXPERIMENT_NAME``, else the config's ``name``."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or config_name


def check_mlflow_store(report_to: tuple[str, ...], config_name: str) -> None:
    """Check, before a run folder is made, replaced or continued, that the MLflow tracking store
    (``MLFLOW_TRACKING_URI``, else MLflow's default) can be used: it opens, and it has (or
    takes) the run's experiment. Does nothing unless ``report_to`` lists mlflow.

    Raises:
        ConfigError: one line naming the tracking URI and MLflow's reason (a malformed or
            unknown URI, a database that cannot be opened or written, a server that does not
            answer, a missing database driver).
    """
    if "mlflow" not in report_to:
        return
    require_trackers(report_to)
    import mlflow
    from mlflow.tracking import MlflowClient

    uri, name = "?", experiment_name(config_name)
    try:
        uri = mlflow.get_tracking_uri()
        client = MlflowClient()
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            client.create_experiment(name)
    except Exception as e:  # whatever fails here is the store's: its URI, server, driver or permissions
        reason = _hide_password(([ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__])[0])
        raise ConfigError(
            f"output.report_to: mlflow: the tracking store {_hide_password(uri)} cannot be used: {reason}"
        ) from None
    if experiment is not None and experiment.lifecycle_stage != "active":  # MLflow refuses runs in it
        raise ConfigError(
            f"output.report_to: mlflow: the experiment {name!r} in {_hide_password(uri)} is deleted; "
            f"restore it (mlflow experiments restore --experiment-id {experiment.experiment_id}) or set "
            "MLFLOW_EXPERIMENT_NAME to another name"
        )


def _hide_password(text: str) -> str:
    """``text`` with the password of each URI in it (``scheme://user:PASSWORD@host``) as ``***``."""
    return _URI_PASSWORD.sub(r"\1***@", text)


def flat_params(config: dict) -> dict[str, int | float | bool | str]:
    """The plain config dict (:func:`minbert.config.to_dict`) as one level of dotted keys
    (``optim.lr``, ``tasks.sst.batch_size``); numbers, bools and strings as they are, lists as
    JSON text, None as ``"null"``, an empty mapping as ``"{}"``."""
    return dict(_flat_items(config, ""))


def _flat_items(node: Any, prefix: str) -> Iterator[tuple[str, int | float | bool | str]]:
    """The (dotted key, value) pairs of :func:`flat_params` under ``prefix``."""
    if isinstance(node, dict) and node:
        for k, v in node.items():
            yield from _flat_items(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(node, (dict, list, tuple)) or node is None:
        yield prefix, json.dumps(node)
    else:
        yield prefix, node


def numeric(metrics: dict) -> dict[str, float]:
    """The entries of ``metrics`` whose values are numbers (None, a task without dev rows, left out)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def write_scalars(writer: SummaryWriter, scalars: dict[str, float], step: int) -> None:
    """Several scalars at one step as ONE TensorBoard event (a ``Summary`` with one
    ``simple_value`` per tag, as ``SummaryWriter.add_scalar`` writes each): TensorBoard reads the
    same points, and a training step's five scalars cost one event instead of five. Nothing is
    written for an empty ``scalars``. ``writer`` must be open (``file_writer`` is None once closed)."""
    if not scalars:
        return
    from tensorboard.compat.proto.summary_pb2 import Summary

    values = [Summary.Value(tag=tag, simple_value=float(v)) for tag, v in scalars.items()]
    writer.file_writer.add_summary(Summary(value=values), step)


def write_hparams(writer: SummaryWriter, summary: dict) -> None:
    """TensorBoard's hparams record of a finished run, in the writer's own event file: the
    hyperparameters (:func:`flat_params` of ``summary["config"]``) and the final dev metrics
    (``summary["dev_all"]``) as ``hparam/<metric>`` scalars at the run's last step."""
    from torch.utils.tensorboard.summary import hparams

    metrics = {f"hparam/{k}": v for k, v in numeric(summary["dev_all"]).items()}
    for proto in hparams(flat_params(summary["config"]), metrics):  # experiment, session start, session end
        writer.file_writer.add_summary(proto)
    for tag, value in metrics.items():
        writer.add_scalar(tag, value, summary["steps"])


class MlflowRun:
    """One MLflow run of a training run (main process only), through ``MlflowClient``.

    Args:
        config: the resolved config as a plain dict (logged as params; its ``name`` is the
            experiment unless ``MLFLOW_EXPERIMENT_NAME`` is set).
        run_dir: the run folder (the MLflow run's name; ``mlflow.json`` and the artifacts).
        resume: continue the MLflow run that ``mlflow.json`` names, when the tracking store still
            has it (else a new run is started).

    Raises:
        mlflow.exceptions.MlflowException: the tracking store cannot be reached or written.
    """

    def __init__(self, config: dict, run_dir: Path, resume: bool = False):
        import mlflow
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        self.client, self.run_dir = MlflowClient(), run_dir
        self.run_id = self._previous_run() if resume else None
        if self.run_id is not None:
            self.client.update_run(self.run_id, status="RUNNING")
            log.info("mlflow: continuing run %s", self.run_id)
            return
        name = experiment_name(config["name"])
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
        run = self.client.create_run(experiment_id, run_name=run_dir.name,
                                     tags={"minbert.run_dir": str(run_dir.resolve())})
        self.run_id = run.info.run_id
        params = [Param(_MLFLOW_KEY.sub("_", k), str(v)) for k, v in flat_params(config).items()]
        self.client.log_batch(self.run_id, params=params)
        uri = mlflow.get_tracking_uri()
        atomic_write_json(run_dir / MLFLOW_FILE, {"tracking_uri": uri, "experiment_id": experiment_id,
                                                  "run_id": self.run_id})
        log.info("mlflow: run %s in experiment %r at %s", self.run_id, name, uri)

    def _previous_run(self) -> str | None:
        """The id of the run that ``mlflow.json`` names, if this tracking store has it (not deleted)."""
        from mlflow.exceptions import MlflowException

        try:
            run_id = json.loads((self.run_dir / MLFLOW_FILE).read_text())["run_id"]
            active = self.client.get_run(run_id).info.lifecycle_stage == "active"  # a deleted run takes no metrics
        except (OSError, ValueError, KeyError, TypeError, MlflowException):
            return None
        return run_id if active else None

    def log_metrics(self, rows: list[tuple[dict, int]]) -> None:
        """Log ``(metrics, step)`` rows in one request; values that are not numbers are left out."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(_MLFLOW_KEY.sub("_", k), v, now, step) for values, step in rows
                 for k, v in numeric(values).items()]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def end(self, summary: dict | None) -> None:
        """End the run: with the ``summary`` of a finished run, log its final dev metrics
        (``final/<metric>``) and the artifacts, and mark it FINISHED; with None (an exception or
        an interrupt ended training) mark it FAILED."""
        status = "FAILED"
        try:
            if summary is not None:
                self.log_metrics([({f"final/{k}": v for k, v in summary["dev_all"].items()}, summary["steps"])])
                for name in ARTIFACTS:
                    if (self.run_dir / name).is_file():
                        self.client.log_artifact(self.run_id, str(self.run_dir / name))
                status = "FINISHED"
        finally:
            self.client.set_terminated(self.run_id, status=status)
