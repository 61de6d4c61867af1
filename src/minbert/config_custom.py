"""The ``custom_tasks`` sections of a run configuration: tasks defined in the config, without
code (:mod:`minbert.tasks.custom` builds them). :class:`minbert.config.Config` holds them by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class CustomColumnsConfig:
    """Column names of a custom task's data files (header names; keys for JSONL)."""

    text: str = field(default="sentence", metadata={"help": "the (first) text"})
    text_b: str | None = field(default=None, metadata={"help": "the second text of a pair task"})
    label: str = field(default="label", metadata={"help": "the label (not needed in the test file)"})
    id: str | None = field(default=None, metadata={"help": "the row id (null: rows are numbered by line)"})


@dataclass(frozen=True)
class CustomTaskConfig:
    """A task defined in the config, without code (see :mod:`minbert.tasks.custom`)."""

    kind: Literal["classification", "regression"] | None = field(
        default=None, metadata={"help": "required: classification or regression"}
    )
    input: Literal["single", "pair"] = field(default="single", metadata={"help": "one text (single) or two (pair)"})
    num_labels: int | None = field(
        default=None, metadata={"help": "classification: N labels 0..N-1 (or give label_names)"}
    )
    label_names: tuple[str, ...] | None = field(
        default=None, metadata={"help": "classification: the labels' names, in index order"}
    )
    range: tuple[float, float] | None = field(default=None, metadata={"help": "regression: [low, high] of the scores"})
    files: dict[str, str] = field(
        default_factory=dict, metadata={"help": "train, dev (and test): .csv, .tsv or .jsonl files"}
    )
    columns: CustomColumnsConfig = field(
        default_factory=CustomColumnsConfig, metadata={"help": "column names (header names; keys for JSONL)"}
    )
    format: Literal["auto", "csv", "tsv", "jsonl"] = field(
        default="auto", metadata={"help": "file format (auto: from the file suffix)"}
    )
