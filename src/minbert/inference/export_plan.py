"""Which tasks of a run export to an ecosystem class, and why the others do not: the plan that
``minbert export`` (:mod:`minbert.inference.export`) writes from and the model card
(:mod:`minbert.inference.model_card`) describes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..config import Config, TaskConfig
from ..tasks.base import Task
from ..tasks.table import task_table

EXPORT_TASKS = "tasks"
TRANSFORMERS = "transformers"
SENTENCE_TRANSFORMERS = "sentence-transformers"
ST_POOLING = {"mean": "pooling_mode_mean_tokens", "cls": "pooling_mode_cls_token"}  # our pooling -> ST's flag


@dataclass(frozen=True)
class TaskExport:
    """How one task of a run is exported. ``library``: ``"transformers"`` (a
    ``BertForSequenceClassification`` folder), ``"sentence-transformers"`` (a
    ``SentenceTransformer`` folder), or None with ``reason`` saying why the task gets no folder."""

    name: str
    library: str | None
    reason: str | None = None

    @property
    def line(self) -> str:
        """One line for the log and the model card."""
        if self.library is None:
            return f"{self.name}: no task folder ({self.reason}; use minbert.load)"
        return f"{self.name}: {EXPORT_TASKS}/{self.name} ({self.library})"


def plan_task(name: str, tcfg: TaskConfig, task: Task) -> TaskExport:
    """Whether a task's head has an exact transformers / sentence-transformers equivalent."""
    kind, head = task.input_kind(tcfg.pair_input), tcfg.head
    if kind == "bi":
        if head not in ("cosine", "sbert_cosine"):
            return TaskExport(name, None, f"bi-encoder head {head!r} has no exact transformers equivalent")
        if tcfg.head_layers:
            why = f"head {head!r} with head_layers {tcfg.head_layers} has no exact sentence-transformers equivalent"
            return TaskExport(name, None, why)
        if tcfg.pooling not in ST_POOLING:
            return TaskExport(name, None, f"pooling {tcfg.pooling!r} has no sentence-transformers Pooling mode")
        return TaskExport(name, SENTENCE_TRANSFORMERS)  # the cosine is symmetric: symmetric_eval changes nothing
    if head != "baseline":
        return TaskExport(name, None, f"head {head!r} has no exact transformers equivalent")
    if tcfg.pooling != "pooler":
        why = f"head 'baseline' with pooling {tcfg.pooling!r}: BertForSequenceClassification reads the pooler output"
        return TaskExport(name, None, why)
    if kind == "cross" and tcfg.symmetric_eval:
        why = "symmetric_eval averages the outputs of (a, b) and (b, a); BertForSequenceClassification scores one order"
        return TaskExport(name, None, why)
    return TaskExport(name, TRANSFORMERS)


def plan_exports(cfg: Config, table: Mapping[str, Task] | None = None) -> dict[str, TaskExport]:
    """:func:`plan_task` for every task of ``cfg`` (in training order).

    Raises:
        ConfigError: an unknown task or a bad custom task definition.
    """
    table = task_table(cfg) if table is None else table
    return {name: plan_task(name, tcfg, table[name]) for name, tcfg in cfg.tasks.items()}


def label_names(task: Task) -> list[str]:
    """The names of a task's outputs as ``id2label`` gives them: the label names of a
    classification task (``LABEL_i`` without names), else the task's label column (the one
    output of a binary or regression task)."""
    if task.num_outputs == 1:
        return [task.label_column]
    return list(task.label_names) if task.label_names else [f"LABEL_{i}" for i in range(task.num_outputs)]
