"""Bring your own task: tasks defined in the config's ``custom_tasks`` section, without code.

::

    custom_tasks:
      paraphrase_de:
        kind: classification          # or regression
        input: pair                   # or single
        label_names: [different, same]  # or num_labels: 2 (labels 0..N-1)
        # range: [0, 1]               # regression: the scores' [low, high]
        files: {train: my/train.csv, dev: my/dev.jsonl, test: my/test.tsv}   # test is optional
        columns: {text: s1, text_b: s2, label: label, id: id}               # id optional
    tasks:                            # what trains: built-in and custom tasks by name
      sst: {}
      paraphrase_de: {batch_size: 16, pair_input: bi}

Files are CSV, TSV or JSONL (by suffix, or ``format``), relative to the data folder or
absolute. Classification labels are given by name (``label_names``) or index 0..N-1; the
prediction files hold names when the task has them. A classification task trains with
cross-entropy and is scored by accuracy (also macro F1 and a confusion matrix); a regression
task trains with MSE on a head whose output is sigmoid-scaled onto ``range`` and is scored by
Pearson r (also Spearman). Its primary score joins ``overall`` like the built-in tasks'.

:func:`build_custom_task` checks one definition and builds its task. A config's custom tasks never
enter the registry of built-in tasks: :func:`minbert.tasks.table.task_table` gives each run (or
loaded model) a task table of its own.
"""

from __future__ import annotations

import re

import numpy as np

from ..config import CustomTaskConfig
from ..errors import ConfigError
from .base import ClassificationTask, RegressionTask, Task

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_SPLITS = ("train", "dev", "test")
MAX_LABELS = 2**31 - 1  # num_labels: label indices fit in int32, and the head's size stays countable


class _CustomTask(Task):
    """A task read from CSV/TSV/JSONL with a column mapping (see the module docstring)."""

    def __init__(self, name: str, definition: CustomTaskConfig):
        cols = definition.columns
        self.name = name
        self.definition = definition
        self.pair = definition.input == "pair"
        self.files = dict(definition.files)
        self.text_columns = (cols.text, cols.text_b) if self.pair else (cols.text,)
        self.label_column = cols.label
        self.id_column = cols.id
        self.file_format = definition.format
        self.prediction_column = "Predicted"


class CustomClassificationTask(_CustomTask, ClassificationTask):
    """N-label classification of one text or a pair: logits (B, N), cross-entropy, accuracy
    (also macro F1 and a confusion matrix); labels by name or index."""

    reports_macro_f1 = True

    def __init__(self, name: str, definition: CustomTaskConfig):
        super().__init__(name, definition)
        self.label_names = definition.label_names
        self.num_outputs = len(definition.label_names) if definition.label_names else definition.num_labels
        self._index = {n: i for i, n in enumerate(self.label_names or ())}

    def parse_label(self, raw: str) -> int:
        """A label name, or an index 0..N-1 (``"2"`` or ``"2.0"``). Raises ValueError(reason)."""
        if raw in self._index:
            return self._index[raw]
        try:
            value = float(raw)
        except ValueError:
            value = None
        if value is None or not np.isfinite(value) or value != int(value) or not 0 <= value < self.num_outputs:
            names = f"one of {list(self.label_names)} or " if self.label_names else ""
            raise ValueError(f"expected {names}an integer 0..{self.num_outputs - 1}")
        return int(value)

    def format_value(self, v: float | np.number) -> str:
        return self.label_names[int(v)] if self.label_names else str(int(v))


class CustomRegressionTask(_CustomTask, RegressionTask):
    """Regression of one text or a pair onto ``range``: a score (B,), MSE, Pearson r."""

    def __init__(self, name: str, definition: CustomTaskConfig):
        super().__init__(name, definition)
        self.output_range = (float(definition.range[0]), float(definition.range[1]))


def build_custom_task(name: str, d: CustomTaskConfig) -> _CustomTask:
    """Check one ``custom_tasks`` entry and build its task.

    Raises:
        ConfigError: naming the key (``custom_tasks.<name>.<key>``) and the problem.
    """
    where = f"custom_tasks.{name}"
    if not _NAME.fullmatch(name):
        raise ConfigError(f"{where}: a task name is letters, digits and '_', starting with a letter")
    if d.kind is None:
        raise ConfigError(f"{where}.kind is required: 'classification' or 'regression'")
    cols = d.columns
    if d.input == "pair" and not cols.text_b:
        raise ConfigError(f"{where}.columns.text_b is required for input 'pair' (the second text's column)")
    if d.input == "single" and cols.text_b:
        raise ConfigError(f"{where}.columns.text_b is set but input is 'single' (set input: pair)")
    names = [c for c in (cols.text, cols.text_b, cols.label, cols.id) if c]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}.columns: one column serves two roles ({names})")
    unknown = sorted(set(d.files) - set(_SPLITS))
    if unknown:
        raise ConfigError(f"{where}.files.{unknown[0]}: splits are train, dev and test")
    for split in ("train", "dev"):
        if split not in d.files:
            raise ConfigError(f"{where}.files.{split} is required (test is optional)")
    if d.kind == "classification":
        if d.range is not None:
            raise ConfigError(f"{where}.range is for regression tasks")
        if d.label_names is None and d.num_labels is None:
            raise ConfigError(f"{where}: a classification task needs label_names or num_labels")
        if d.label_names is not None:
            if len(d.label_names) < 2 or len(set(d.label_names)) != len(d.label_names):
                raise ConfigError(f"{where}.label_names: at least 2 distinct names")
            if d.num_labels is not None and d.num_labels != len(d.label_names):
                raise ConfigError(f"{where}: num_labels {d.num_labels} but {len(d.label_names)} label_names")
        elif not 2 <= d.num_labels <= MAX_LABELS:
            raise ConfigError(f"{where}.num_labels: at least 2 and at most 2**31 - 1, got {d.num_labels}")
        return CustomClassificationTask(name, d)
    if d.label_names is not None or d.num_labels is not None:
        raise ConfigError(f"{where}: label_names and num_labels are for classification tasks")
    if d.range is None:
        raise ConfigError(f"{where}.range is required for regression: [low, high]")
    if not (np.isfinite(d.range).all() and d.range[0] < d.range[1]):
        raise ConfigError(f"{where}.range: expected low < high, got {list(d.range)}")
    return CustomRegressionTask(name, d)


def headline_key(task: Task) -> str:
    """The ``<task>_<metric>`` key of a task's primary metric in :meth:`EvalResult.flat`."""
    return f"{task.name}_{'pearson' if task.kind == 'regression' else 'acc'}"


__all__ = [
    "CustomClassificationTask",
    "CustomRegressionTask",
    "build_custom_task",
    "headline_key",
]
