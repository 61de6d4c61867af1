"""Evaluation: run a model over splits and compute metrics. :func:`evaluate` is pure (it
writes nothing); :func:`write_predictions` is for its caller.

Primary metrics: SST accuracy, QQP accuracy, STS Pearson r, and
overall = (acc_SST + acc_QQP + (r_STS + 1) / 2) / 3. Also QQP F1, STS Spearman, SST confusion.
"""

from __future__ import annotations

import contextlib
import csv
import io
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import torch

from ..config import Config
from ..data.batching import TokenizedSplit, eval_batches
from ..distributed import DistContext, all_gather_objects, to_device
from ..errors import DataError, NonFiniteOutputError
from ..io import atomic_write_text
from ..model.multitask import step_pack_plan
from ..progress import progress_bar, tqdm
from ..tasks import metrics as M
from ..tasks.base import Task
from .graphs import EVAL_PAD_MULTIPLE, EVAL_SMALLEST_BUCKET


@dataclass
class TaskPredictions:
    ids: list[str]
    values: np.ndarray  # what goes into the prediction file (int labels or float scores)
    outputs: np.ndarray  # raw model outputs (logits or scores), float32


@dataclass
class EvalResult:
    metrics: dict[str, dict]  # task -> metric name -> value (None for an empty split)
    overall: float | None
    predictions: dict[str, TaskPredictions]

    def flat(self) -> dict[str, float | None]:
        """The headline numbers: ``sst_acc``, ``qqp_acc``, ``sts_pearson`` (for built-in tasks),
        ``<task>_<metric>`` for the rest, and ``overall``."""
        out = {}
        for task, m in self.metrics.items():
            for k, v in m.items():
                if k != "confusion":
                    out[f"{task}_{k}"] = v
        out["overall"] = self.overall
        return out


def autocast_context(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when ``amp``; else a context that does nothing."""
    if amp and device.type == "cuda":
        # no weight-cast cache: each weight is cast once per forward anyway, and CUDA-graph
        # capture needs it off
        return torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


def move(batch: dict, device: torch.device) -> dict:
    """A collated batch with its tensors on ``device`` (copies that do not block the host)."""
    return {k: (to_device(v, device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}


@torch.inference_mode()
def predict_split(
    model: torch.nn.Module,
    task: Task,
    split: TokenizedSplit,
    device: torch.device,
    batch_size: int = 256,
    amp: bool = False,
    pad_id: int = 0,
    ctx: DistContext = DistContext(),  # noqa: B008  (a frozen dataclass: one shared default is safe)
    progress: bool = False,
    desc: str | None = None,
) -> TaskPredictions:
    """Model outputs for every row of a split, in the split's row order. Batches are sorted by
    length (least padding) and run under ``inference_mode``. Under data parallelism (``ctx``),
    rank r runs batches r, r + N, ... and the outputs of all ranks are gathered, so every rank
    returns every row exactly once. A split with a ``swapped`` twin (pairs as (b, a)) gets the
    mean of both orders' raw outputs. ``progress``: a bar over this rank's batches (both orders),
    labelled ``desc`` (default: the task's name), on the main process only."""
    parts = [replace(split, swapped=None), split.swapped] if split.swapped is not None else [split]
    batches = [eval_batches(p.lengths, batch_size)[ctx.rank :: ctx.world_size] for p in parts]
    with progress_bar(sum(map(len, batches)), desc or task.name, progress and ctx.is_main) as bar:
        raws = [
            _predict_batches(model, task, p, b, device, amp, pad_id, ctx, bar)
            for p, b in zip(parts, batches, strict=True)
        ]
    raw = raws[0] if len(raws) == 1 else (raws[0] + raws[1]) / 2
    return TaskPredictions(list(split.ids), task.predict(raw), raw.numpy())


def _predict_batches(
    model: torch.nn.Module, task: Task, split: TokenizedSplit, batches: list[np.ndarray], device: torch.device,
    amp: bool, pad_id: int, ctx: DistContext, bar: tqdm,
) -> torch.Tensor:
    """Raw outputs (N, C) or (N,) float32 on the host, in row order, of the rows in ``batches``
    (this rank's), gathered over ranks; ``bar`` advances by one per batch."""
    was_training = model.training
    model.eval()
    order, chunks = [], []
    pack = getattr(model, "pack_eval", False)  # packed as in training (model.packing), plan made on the host
    graphs = getattr(model, "eval_graphs", None) if pack and device.type == "cuda" else None
    runner = graphs.runner(model) if graphs is not None else model  # the model, or its bf16-weight copy
    for index in batches:
        if graphs is not None:  # few shapes: rows padded to a multiple, packs rounded to a bucket
            host = task.collate(split, index, pad_id, EVAL_PAD_MULTIPLE)
            buckets = (EVAL_SMALLEST_BUCKET, model.encoder.config.max_position_embeddings)
            inputs = {k: v for k, v in host.items() if isinstance(v, torch.Tensor) and k != "labels"}
            inputs["pack_index"], inputs["cu_seqlens"] = step_pack_plan({task.name: host}, *buckets)
            out = graphs(task.name, partial(_packed_forward, runner, task.name, device, amp), inputs)
        else:
            host = task.collate(split, index, pad_id)
            batch = move(host, device)
            with autocast_context(device, amp):
                if pack:
                    plan = tuple(to_device(t, device) for t in step_pack_plan({task.name: host}, 1, 1))
                    out = model.forward_step({task.name: batch}, plan)[task.name]
                else:
                    out = model(task.name, batch)
        chunks.append(out.float())
        order.append(index)
        bar.update(1)
    model.train(was_training)
    shape = (0, task.num_outputs) if task.num_outputs > 1 else (0,)
    raw = torch.cat(chunks).cpu() if chunks else torch.zeros(shape)
    index = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
    if ctx.enabled:
        parts = all_gather_objects((index, raw.numpy()), ctx)
        index = np.concatenate([p[0] for p in parts])
        raw = torch.from_numpy(np.concatenate([p[1].reshape((-1, *shape[1:])) for p in parts]))
    if len(index):
        raw = raw[torch.from_numpy(np.argsort(index, kind="stable"))]
    return raw


def _packed_forward(
    model: torch.nn.Module, name: str, device: torch.device, amp: bool, inputs: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Task ``name``'s packed forward on device ``inputs``: the batch's tensors plus its plan
    (``pack_index``, ``cu_seqlens``). Returns its raw output, float32 (what a graph replays)."""
    batch = {k: v for k, v in inputs.items() if k not in ("pack_index", "cu_seqlens")}
    with autocast_context(device, amp):
        out = model.forward_step({name: batch}, (inputs["pack_index"], inputs["cu_seqlens"]))[name]
    return out.float()


def evaluate(
    model: torch.nn.Module,
    tasks: dict[str, Task],
    splits: dict[str, TokenizedSplit],
    device: torch.device,
    batch_size: int = 256,
    amp: bool = False,
    pad_id: int = 0,
    ctx: DistContext = DistContext(),  # noqa: B008  (a frozen dataclass: one shared default is safe)
    progress: bool = False,
    split_name: str = "dev",
) -> EvalResult:
    """Predict every labelled split and compute each task's metrics and the overall score.
    Writes nothing. With ``ctx`` the work is sharded over ranks and every rank gets the result.
    ``progress``: a bar per task, ``<split_name> <task>`` (e.g. ``dev sst``)."""
    preds = {
        name: predict_split(
            model, tasks[name], split, device, batch_size, amp, pad_id, ctx, progress, f"{split_name} {name}"
        )
        for name, split in splits.items()
    }
    return score_predictions(tasks, splits, preds)


def check_finite(task_name: str, outputs: np.ndarray, ids: list[str] | None = None) -> None:
    """Check a model's raw outputs, (N,) or (N, C) floats, one row per example.

    Raises:
        NonFiniteOutputError: a row holds NaN or inf (the message names the count and the first
            row's id, or its 1-based number when ``ids`` is None).
    """
    outputs = np.asarray(outputs)
    if outputs.size == 0:
        return
    bad = np.flatnonzero(~np.isfinite(outputs.reshape(outputs.shape[0], -1)).all(axis=1))
    if len(bad):
        first = f"id {ids[bad[0]]}" if ids is not None else f"row {bad[0] + 1}"
        raise NonFiniteOutputError(
            f"task {task_name}: the model's outputs are NaN or infinite for {len(bad)} of {outputs.shape[0]} rows "
            f"(first: {first}); its weights are broken (a diverged run?), so no predictions are written"
        )


def write_predictions(path: Path, task: Task, pred: TaskPredictions, fmt: str = "default") -> None:
    """Write one prediction file atomically.

    ``default``: CSV (RFC 4180 quoting, by :mod:`csv`) with header ``id,<prediction_column>``.
    ``cs224n``: the course leaderboard layout, header ``id \\t <column> `` and rows
    ``<id> , <value>``, which has no quoting.

    Raises:
        NonFiniteOutputError: an output or a value is NaN or infinite (nothing is written).
        DataError: ``cs224n`` with an id or value holding a comma or a line break, which that
            layout cannot hold (nothing is written).
    """
    check_finite(task.name, pred.outputs, pred.ids)
    check_finite(task.name, np.asarray(pred.values, dtype=np.float64), pred.ids)
    rows = [(str(i), task.format_value(v)) for i, v in zip(pred.ids, pred.values, strict=True)]
    if fmt == "cs224n":
        bad = next((r for r in rows if any(c in f for f in r for c in ",\r\n")), None)
        if bad is not None:
            raise DataError(f"{path}: task {task.name}: the cs224n layout cannot hold id {bad[0]!r} with value "
                            f"{bad[1]!r} (a comma or line break); use output.format=default")
        lines = [f"id \t {task.cs224n_column or task.prediction_column} "] + [f"{i} , {v}" for i, v in rows]
        atomic_write_text(path, "\n".join(lines) + "\n")
        return
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows([("id", task.prediction_column), *rows])
    atomic_write_text(path, buf.getvalue())


def average_predictions(task: Task, members: list[TaskPredictions]) -> TaskPredictions:
    """Ensemble of several models' predictions of one split: the mean of their raw outputs
    (logits, or scores), then the task's prediction rule. Multi-seed averaging for ensembles.

    Raises:
        ValueError: no members.
        DataError: the members do not cover the same ids in the same order (runs whose configs
            sample other dev rows, e.g. another ``dev_limit``).
    """
    if not members:
        raise ValueError("no predictions to average")
    for m in members[1:]:
        if m.ids != members[0].ids:
            raise DataError(
                f"task {task.name}: the runs predicted different rows ({len(members[0].ids)} and {len(m.ids)}; "
                "another dev_limit?); ensemble runs whose configs read the same rows"
            )
    mean = np.mean([m.outputs for m in members], axis=0).astype(np.float32)
    return TaskPredictions(list(members[0].ids), task.predict(torch.from_numpy(mean)), mean)


def score_predictions(
    tasks: dict[str, Task], splits: dict[str, TokenizedSplit], preds: dict[str, TaskPredictions]
) -> EvalResult:
    """Metrics of given predictions against the splits' labels (what :func:`evaluate` computes
    after predicting)."""
    metrics, primary = {}, {}
    for name, split in splits.items():
        gold = split.labels if split.labels is not None else np.zeros(0)
        m = tasks[name].metrics(preds[name].values, gold)
        metrics[name], primary[name] = m, tasks[name].primary(m)
    return EvalResult(metrics, M.overall(primary), preds)


def write_run_predictions(
    model: torch.nn.Module, tasks: dict[str, Task], data: dict[str, dict[str, TokenizedSplit]], run_dir: Path,
    cfg: Config, device: torch.device, amp: bool, pad_id: int, dev_result: EvalResult | None = None,
    progress: bool = False,
) -> EvalResult:
    """Dev metrics and dev + test prediction files of the current weights (``data``: split name
    -> task -> split; ``dev`` and ``test`` are used). ``dev_result``:
    the dev evaluation of these same weights, if already computed (saves a pass over dev).
    ``progress``: a bar per task and split (``dev sst``, ``test sst``, ...)."""
    bs = cfg.train.eval_batch_size
    result = dev_result or evaluate(model, tasks, data["dev"], device, bs, amp, pad_id, progress=progress)
    pred_dir = run_dir / "predictions"
    pred_dir.mkdir(exist_ok=True)
    for name, p in result.predictions.items():
        write_predictions(pred_dir / f"{name}-dev.csv", tasks[name], p, cfg.output.format)
    for name, split in data["test"].items():
        p = predict_split(model, tasks[name], split, device, bs, amp, pad_id, progress=progress, desc=f"test {name}")
        write_predictions(pred_dir / f"{name}-test.csv", tasks[name], p, cfg.output.format)
    return result
