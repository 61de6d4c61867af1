"""What a training run writes about itself: ``metrics.jsonl`` and the experiment trackers of
``output.report_to`` (:class:`MetricsLog`; TensorBoard here, MLflow in
:mod:`minbert.training.tracking`), trimming the metrics on resume, ``provenance.json``, the
``summary.json`` dict, log formatting.

``metrics.jsonl`` holds one JSON record per line:

* a training step: ``step``, ``epoch`` (1-based), ``lr``, ``grad_norm`` (before clipping) and
  ``loss/<task>`` (unweighted) for the tasks of the step's last micro-step;
* a skipped step (``train.nonfinite=skip``): ``step``, ``skipped`` (what was not finite), ``ids``;
* a dev evaluation: ``step``, ``epoch``, ``dev`` (flat metrics), ``dev_detail`` (per task). At an
  epoch end ``epoch`` is the epoch's number; for the evaluations of ``train.eval_every`` within an
  epoch it is the epochs done so far as a fraction (e.g. 0.5 halfway through the first).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..config import Config, to_dict
from ..data.batching import sha256_file
from ..distributed import DistContext, all_reduce_mean
from ..errors import NonFiniteLossError
from ..inference.evaluate import EvalResult
from ..io import atomic_write_bytes
from ..tasks.base import Task
from .step import find_nonfinite
from .tracking import MlflowRun, write_hparams, write_scalars

log = logging.getLogger(__name__)


class MetricsLog:
    """The run's ``metrics.jsonl`` (opened for appending) and its trackers (``output.report_to``):
    a tensorboard writer (``tensorboard/``), an MLflow run. Only the main process writes: the
    others append to ``os.devnull`` and have no trackers, but take part in :meth:`flush_steps`'s
    all-reduce. :meth:`close` closes ``metrics.jsonl``; :meth:`end` ends the trackers.

    Step records wait, with their losses on the device, until :meth:`flush_steps` (one host sync
    per ``train.log_every`` steps), which also raises on a non-finite loss.

    Args:
        run_dir: the run folder.
        ctx: this process's place in a torchrun job.
        weights: each task's loss weight w_t (records hold the unweighted losses L_t).
        cfg: the run's resolved config (its ``output.report_to``; MLflow's params).
        resume: a resumed run (its MLflow run continues, see :class:`MlflowRun`).
        step: the optimizer step training continues from (a resume's checkpoint): TensorBoard
            hides the events that a crashed run logged after it (``purge_step``); MLflow keeps
            them (its metric history is append-only), so those steps have two points there.

    Raises:
        mlflow.exceptions.MlflowException: the MLflow tracking store cannot be reached or written.
    """

    def __init__(self, run_dir: Path, ctx: DistContext, weights: dict[str, float], cfg: Config, resume: bool = False,
                 step: int = 0):
        self.run_dir, self.ctx, self.weights = run_dir, ctx, weights
        self.writer, self.mlflow = None, None
        report_to = cfg.output.report_to if ctx.is_main else ()
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=step + 1 if resume else None)
        if "mlflow" in report_to:
            self.mlflow = MlflowRun(to_dict(cfg), run_dir, resume)
        self.fh = open(run_dir / "metrics.jsonl" if ctx.is_main else os.devnull, "a")  # closed by close()
        # (record, task names, batch ids per task, (n_tasks + 1,) losses and gradient norm on the device)
        self.pending: list[tuple[dict, list[str], list, torch.Tensor]] = []
        self.progress: tqdm | None = None  # a progress bar whose postfix shows the latest losses

    def append(self, record: dict) -> None:
        """Write one record now."""
        self.fh.write(json.dumps(record) + "\n")

    def add_step(self, record: dict, names: list[str], ids: list, values: torch.Tensor) -> None:
        """Queue a training step's record; ``values`` (n_tasks + 1,): the weighted losses w_t L_t
        of ``names`` and the gradient norm (see :meth:`minbert.training.step.OptimizerStep.gradients`)."""
        self.pending.append((record, names, ids, values))

    def flush_steps(self) -> None:
        """Write the queued step records (averaged over the processes: a collective call).

        Raises:
            NonFiniteLossError: a queued loss or gradient norm is not finite (``train.nonfinite=stop``).
        """
        if not self.pending:
            return
        tracked = []  # (metrics, step) for MLflow
        rows = all_reduce_mean(torch.stack([p[3] for p in self.pending]), self.ctx).tolist()
        for (record, names, ids, _), values in zip(self.pending, rows, strict=True):
            bad = find_nonfinite(names, values)
            if bad is not None:
                self.pending.clear()
                raise NonFiniteLossError(
                    f"non-finite loss at step {record['step']} (epoch {record['epoch']}), {bad[0]}, batch ids "
                    f"{ids[bad[1]]}"
                )
            # logged unweighted: L_t = (w_t L_t) / w_t
            w = self.weights
            loss_vals = {n: v / w[n] if w[n] else v for n, v in zip(names, values[:-1], strict=True)}
            record.update(grad_norm=values[-1], **{f"loss/{n}": v for n, v in loss_vals.items()})
            self.append(record)
            scalars = {f"train/loss_{n}": v for n, v in loss_vals.items()} | {"train/grad_norm": values[-1]}
            scalars |= {"train/lr": record["lr"]} if "lr" in record else {}
            if self.writer is not None:
                write_scalars(self.writer, scalars, record["step"])
            tracked.append((scalars, record["step"]))
            if self.progress is not None:
                self.progress.set_postfix({n: f"{v:.3f}" for n, v in loss_vals.items()}, refresh=False)
        self.pending.clear()
        if self.mlflow is not None:
            self.mlflow.log_metrics(tracked)

    def log_dev(self, record: dict, flat: dict, tag: str, x: int) -> None:
        """Write a dev record now, and each metric of ``flat`` that is not None to the trackers as
        ``<tag>/<metric>`` at ``x``."""
        self.append(record)
        if self.writer is not None:
            write_scalars(self.writer, {f"{tag}/{k}": v for k, v in flat.items() if v is not None}, x)
        if self.mlflow is not None:
            self.mlflow.log_metrics([({f"{tag}/{k}": v for k, v in flat.items()}, x)])

    def sync(self) -> int:
        """Flush the file to the OS; returns its size in bytes (what a resume keeps)."""
        self.fh.flush()
        return os.fstat(self.fh.fileno()).st_size

    def close(self) -> None:
        """Close ``metrics.jsonl`` (the trackers stay open for :meth:`end`)."""
        self.fh.close()
        if self.writer is not None:
            self.writer.flush()

    def end(self, summary: dict | None) -> None:
        """End the trackers (once; later calls do nothing). With the ``summary.json`` dict of a
        finished run: tensorboard's hparams (:func:`write_hparams`), the MLflow run's final
        metrics and artifacts, status FINISHED; with None (training raised or was interrupted):
        the MLflow run's status FAILED."""
        writer, run, self.writer, self.mlflow = self.writer, self.mlflow, None, None
        try:
            if writer is not None:
                if summary is not None:
                    write_hparams(writer, summary)
                writer.close()
        finally:
            if run is not None:
                run.end(summary)


def trim_metrics(path: Path, step: int, size: int | None = None) -> None:
    """On resume: drop metric lines written after the checkpoint we resume from: cut the file to
    ``size``, its length when the checkpoint was taken; for checkpoints that lack it, keep the
    whole lines up to ``step`` (a torn last line is a process killed in a buffer flush; a line
    that is not a JSON record is dropped with a warning naming it). Bytes are kept as they are."""
    if not path.is_file():
        return
    if size is not None:
        atomic_write_bytes(path, path.read_bytes()[:size])
        return
    kept = []
    for n, ln in enumerate(path.read_bytes().splitlines(), 1):
        try:
            rec = json.loads(ln) if ln.strip() else None
        except ValueError:  # not UTF-8 or not JSON: torn by a kill after the checkpoint, or damaged
            log.warning("%s:%d: not a JSON record, dropped on resume", path, n)
            continue
        if isinstance(rec, dict) and rec.get("step", 0) <= step:
            kept.append(ln)
    atomic_write_bytes(path, b"".join(ln + b"\n" for ln in kept))


def provenance(cfg: Config, data_dir: Path, tasks: dict[str, Task]) -> dict:
    """``provenance.json``: versions (minbert, its git commit if any, Python, torch, tokenizers,
    numpy), the CUDA device, the data folder and the SHA-256 of each data file the tasks read,
    and the command line."""

    def git_sha() -> str | None:
        try:
            return subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
            ).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            return None

    import tokenizers

    files = sorted({f for t in cfg.tasks for f in tasks[t].files.values()})
    return {
        "minbert": __version__,
        "git_sha": git_sha(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "data_dir": str(data_dir.resolve()),
        "data_sha256": {f: sha256_file(data_dir / f) for f in files if (data_dir / f).is_file()},
        "command": sys.argv,
    }


def run_summary(
    cfg: Config,
    tasks: dict[str, Task],
    final: EvalResult,
    *,
    best_epoch: int | None,
    average: dict | None,
    throughput: dict,
    epochs_run: int,
    steps: int,
    wall_s: float,
) -> dict:
    """``summary.json``: the final model's dev metrics (``dev``: the headline numbers and
    ``overall``; ``dev_all``: every flat metric), ``best_epoch``, ``checkpoint_average`` (None, or
    ``epochs``, ``dev`` and ``chosen``), ``throughput`` (training examples, seconds, examples per
    second, processes, CUDA graphs, gradient sync), ``epochs_run``, ``steps``, ``wall_s`` (seconds),
    ``dev_limits`` (``{task: rows}`` for tasks scored on a seeded sample of their dev set; empty
    when every dev set was scored whole) and the ``config``. ``throughput`` holds ``train_samples``,
    ``train_s``, ``epoch_train_s`` (seconds per epoch, a resumed run's from the resume on),
    ``epoch_end_s`` (seconds of each epoch's end, likewise: dev evaluation, the checkpoint handed to
    the background writer, whose disk write overlaps what follows unless an ``on_epoch_end`` hook
    waits for it, and the hook), ``setup_s`` (from the run's start, the command's start under the
    CLI, else the ``t_start`` given or the trainer's creation, to the first step) and
    ``kernel_wait_s`` (of ``setup_s``, the wait for the attention kernel's compile),
    ``processes``, ``cuda_graphs``, ``grad_sync``, ``graphs`` (:meth:`GraphedSteps.stats`, or None)
    and ``eval_graphs`` (the dev evaluation's :meth:`GraphedForward.stats`, or None)."""
    flat = final.flat()
    samples_per_s = round(throughput["train_samples"] / max(throughput["train_s"], 1e-9), 1)
    return {
        "dev": {k: flat.get(k) for k in ("sst_acc", "qqp_acc", "sts_pearson", *custom_headlines(cfg, tasks))}
        | {"overall": final.overall},
        "dev_all": flat,
        "best_epoch": best_epoch,
        "checkpoint_average": average,
        "throughput": {
            "train_samples": throughput["train_samples"],
            "train_s": throughput["train_s"],
            "samples_per_s": samples_per_s,
            **{k: throughput.get(k) for k in ("epoch_train_s", "epoch_end_s", "setup_s", "kernel_wait_s",
                                            "processes", "cuda_graphs", "grad_sync", "graphs", "eval_graphs")},
        },
        "epochs_run": epochs_run,
        "steps": steps,
        "wall_s": wall_s,
        "dev_limits": {n: t.dev_limit for n, t in cfg.tasks.items() if t.dev_limit is not None},
        "config": to_dict(cfg),
    }


def custom_headlines(cfg: Config, tasks: dict[str, Task]) -> list[str]:
    """The primary-metric keys (``<task>_acc`` / ``<task>_pearson``) of the custom tasks trained."""
    from ..tasks.custom import headline_key

    return [headline_key(tasks[n]) for n in cfg.tasks if n in cfg.custom_tasks]


def format_metrics(flat: dict) -> str:
    """``key=value`` pairs for the log, floats with 4 decimals."""
    return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in flat.items())


def log_run_end(run_dir: Path, summary: dict, cfg: Config, tasks: dict[str, Task]) -> None:
    """The end of a run in the log: time and best epoch, the headline dev scores, the run folder's files."""
    from .task_plots import plot_file

    log.info("done in %.1f s; best epoch %s: %s", summary["wall_s"], summary.get("best_epoch"),
             format_metrics(summary["dev"]))
    if summary["dev_limits"]:
        log.info("scored on seeded dev samples of %s rows; `minbert evaluate %s --full` scores the whole dev sets",
                 summary["dev_limits"], run_dir)
    log.info("dev: %s", scores_line(summary["dev"], cfg))
    files = ("summary.json", "predictions/", "curves.png", *map(plot_file, tasks.values()), "tensorboard/",
             "train.log", "README.md")
    log.info("run folder: %s (%s)", run_dir, ", ".join(f for f in files if (run_dir / f).exists()))


def scores_line(dev: dict, cfg: Config) -> str:
    """The headline scores of ``summary["dev"]`` for people: ``SST acc 0.412 · ... · overall 0.693``
    (built-in tasks in capitals, custom ones by name, Pearson as r; n/a for a task without dev rows)."""
    parts = []
    for key, v in dev.items():
        task, _, metric = key.rpartition("_")
        if key != "overall" and task not in cfg.tasks:
            continue  # a built-in task this run did not train
        name = task if task in cfg.custom_tasks else task.upper()
        name = "overall" if key == "overall" else f"{name} {'r' if metric == 'pearson' else metric}"
        parts.append(f"{name} {v:.3f}" if isinstance(v, float) else f"{name} n/a")
    return " · ".join(parts)
