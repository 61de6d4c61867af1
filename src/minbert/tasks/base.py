"""The task registry.

A task says what its data looks like (files, columns, labels), and gives its head, loss,
metrics, prediction format and collate. Tasks are registered once with :func:`register_task`,
which raises on a duplicate name. The built-in tasks:

=====  ==========================================  ===================  ==============
name   kind                                        loss                 primary metric
=====  ==========================================  ===================  ==============
sst    5-class sentence classification (SST-5)     cross-entropy        accuracy
qqp    binary pair classification (Quora QP)       BCE with logits      accuracy
sts    pair regression on [0, 5] (STS-B)           MSE                  Pearson r
=====  ==========================================  ===================  ==============
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..data.batching import RawSplit, TokenizedSplit
from ..data.readers import read_records
from ..data.tokenizer import pad_rows, padded_length
from ..errors import ConfigError, DataError
from ..model.heads import build_head
from . import metrics as M

if TYPE_CHECKING:
    from ..config import TaskConfig

log = logging.getLogger(__name__)

TASKS: dict[str, Task] = {}

_Registered = TypeVar("_Registered", bound="Task | type[Task]")


def register_task(obj: _Registered) -> _Registered:
    """Class decorator (or plain call on an instance): add a task to :data:`TASKS`.

    Raises:
        ValueError: a task of that name is already registered.
    """
    task = obj() if isinstance(obj, type) else obj
    if task.name in TASKS:
        raise ValueError(f"task {task.name!r} is already registered")
    TASKS[task.name] = task
    return obj


def get_task(name: str) -> Task:
    """Raises ConfigError for an unknown task name."""
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"unknown task {name!r} (registered: {sorted(TASKS)})") from None


class Task:
    """Base class. Subclasses set the class attributes and implement loss/predict/metrics."""

    name: str
    kind: str  # "classification" | "binary" | "regression"
    pair: bool = False
    num_outputs: int = 1
    output_range: tuple[float, float] | None = None
    files: dict[str, str] = {}  # split -> file name in the data folder
    text_columns: tuple[str, ...] = ("sentence",)
    label_column: str = "label"
    id_column: str = "id"
    file_format: str = "tsv"  # of the split files: tsv (the cs224n layout), csv, jsonl or auto (by suffix)
    prediction_column: str = "Predicted"
    cs224n_column: str | None = None  # header spelling of the course leaderboard file
    label_names: tuple[str, ...] | None = None

    # -- data ----------------------------------------------------------------------------------
    def parse_label(self, raw: str) -> int | float:
        raise NotImplementedError

    def check_labels(self, labels: np.ndarray, path: str) -> None:
        """File-level label checks; raise DataError with a one-line reason."""

    def label_dtype(self) -> type[np.number]:
        return np.float32 if self.kind == "regression" else np.int64

    def read(self, path: str | os.PathLike, split: str, strict: bool = False) -> RawSplit:
        """Read one split file in ``file_format``. The test split has no labels (none are read), and
        a test row with an empty text is kept (predicted from an empty input)."""
        labelled = split != "test"
        raw = read_records(
            path,
            self.text_columns,
            self.label_column if labelled else None,
            self.parse_label if labelled else None,
            id_column=self.id_column,
            strict=strict,
            label_dtype=self.label_dtype(),
            fmt=self.file_format,
            keep_empty_text=not labelled,
        )
        if raw.labels is not None:
            self.check_labels(raw.labels, raw.path)
        return raw

    def input_kind(self, pair_input: str) -> str:
        """"single" for sentence tasks; "bi" or "cross" (the config's choice) for pair tasks."""
        if not self.pair:
            return "single"
        if pair_input not in ("bi", "cross"):
            raise ConfigError(f"tasks.{self.name}.pair_input {pair_input!r} is not one of ['bi', 'cross']")
        return pair_input

    # -- model ---------------------------------------------------------------------------------
    def build_head(self, cfg: TaskConfig, hidden: int) -> nn.Module:
        """The head for this task's config (a :class:`minbert.config.TaskConfig`)."""
        return build_head(
            self.input_kind(cfg.pair_input),
            cfg.head,
            hidden=hidden,
            num_outputs=self.num_outputs,
            pooling=cfg.pooling,
            dropout=cfg.dropout,
            output_range=self.output_range,
            hidden_size=cfg.hidden_size,
            head_layers=cfg.head_layers,
        )

    def collate(
        self, split: TokenizedSplit, index: np.ndarray, pad_id: int = 0, pad_to_multiple_of: int = 1
    ) -> dict:
        """A batch dict: ``ids`` (list of str), ``input_ids``/``token_type_ids``/
        ``attention_mask`` (B, T) int64, T the longest row rounded up to a multiple of
        ``pad_to_multiple_of``; for bi-encoder pairs also ``input_ids_b``/``attention_mask_b``/
        ``token_type_ids_b`` padded to the same T; ``labels`` (B,) if labelled (int64 for
        classification, float32 otherwise). (With ``model.packing`` the trainer packs a whole
        step's batches together: :func:`minbert.model.multitask.step_pack_plan`.)

        Raises:
            TypeError: ``index`` holds something other than integers (a boolean mask, floats).
        """
        index = np.asarray(index)
        if index.size and index.dtype.kind not in "iu":
            raise TypeError(f"collate: row indices must be integers, got {index.dtype}")
        index = index.astype(np.int64, copy=False)
        a, a_lengths = split.token_matrix("input_ids")
        longest = int(a_lengths[index].max(initial=0))
        if split.input_ids_b is not None:  # both sentences to one T, each alone: token types all 0
            b, b_lengths = split.token_matrix("input_ids_b")
            T = padded_length(max(longest, int(b_lengths[index].max(initial=0))), pad_to_multiple_of)
            batch = {}
            for suffix, (m, lengths) in (("", (a, a_lengths)), ("_b", (b, b_lengths))):
                ids, mask = pad_rows(m, lengths, index, T, pad_id)
                batch |= {f"input_ids{suffix}": torch.from_numpy(ids),
                          f"attention_mask{suffix}": torch.from_numpy(mask.astype(np.int64)),
                          f"token_type_ids{suffix}": torch.zeros(ids.shape, dtype=torch.int64)}
        else:
            T = padded_length(longest, pad_to_multiple_of)
            ids, mask = pad_rows(a, a_lengths, index, T, pad_id)
            types = pad_rows(*split.token_matrix("token_type_ids"), index, T)[0]
            batch = {"input_ids": torch.from_numpy(ids), "token_type_ids": torch.from_numpy(types),
                     "attention_mask": torch.from_numpy(mask.astype(np.int64))}
        batch["ids"] = [split.ids[i] for i in index]
        if split.labels is not None:
            batch["labels"] = torch.from_numpy(split.labels[index])
        return batch

    def loss(self, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, output: torch.Tensor) -> np.ndarray:
        """Model output -> the values written to prediction files."""
        raise NotImplementedError

    def metrics(self, pred: np.ndarray, gold: np.ndarray) -> dict:
        raise NotImplementedError

    def primary(self, m: dict) -> float | None:
        """This task's contribution to the overall score, in [0, 1] (None when undefined)."""
        raise NotImplementedError

    def format_value(self, v: float | np.number) -> str:
        return str(int(v)) if self.kind != "regression" else f"{float(v):.4f}"


class ClassificationTask(Task):
    """N-label classification: logits (B, N), cross-entropy, scored by accuracy and a confusion
    matrix (and macro F1 when ``reports_macro_f1``)."""

    kind = "classification"
    reports_macro_f1 = False

    def parse_label(self, raw: str) -> int:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("not a number") from None
        if not np.isfinite(value) or value != int(value):
            raise ValueError("not an integer")
        if not 0 <= value < self.num_outputs:
            raise ValueError(f"outside 0..{self.num_outputs - 1}")
        return int(value)

    def loss(self, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output.float(), labels)

    def predict(self, output: torch.Tensor) -> np.ndarray:
        return output.argmax(-1).cpu().numpy()

    def metrics(self, pred: np.ndarray, gold: np.ndarray) -> dict:
        m = {"acc": M.accuracy(pred, gold)}
        if self.reports_macro_f1:
            m["macro_f1"] = M.macro_f1(pred, gold, self.num_outputs)
        small = self.num_outputs <= M.CONFUSION_MAX_LABELS
        m["confusion"] = M.confusion_matrix(pred, gold, self.num_outputs) if len(gold) and small else None
        return m

    def primary(self, m: dict) -> float | None:
        return m["acc"]


class BinaryPairTask(Task):
    kind = "binary"
    pair = True

    def parse_label(self, raw: str) -> int:
        if raw in ("0", "0.0"):
            return 0
        if raw in ("1", "1.0"):
            return 1
        raise ValueError("expected 0, 1, 0.0 or 1.0")

    def loss(self, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(output.float(), labels.float())

    def predict(self, output: torch.Tensor) -> np.ndarray:
        return (output > 0).long().cpu().numpy()

    def metrics(self, pred: np.ndarray, gold: np.ndarray) -> dict:
        return {"acc": M.accuracy(pred, gold), "f1": M.binary_f1(pred, gold)}

    def primary(self, m: dict) -> float | None:
        return m["acc"]


class RegressionTask(Task):
    """Regression onto ``output_range`` (low, high): a score (B,) that the head maps into the range,
    MSE, scored by Pearson r (and Spearman rho)."""

    kind = "regression"

    def parse_label(self, raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("not a number") from None
        low, high = self.output_range
        if not np.isfinite(value) or not low <= value <= high:
            raise ValueError(f"outside [{low:g}, {high:g}]")
        return value

    def loss(self, output: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(output.float(), labels.float())

    def predict(self, output: torch.Tensor) -> np.ndarray:
        return output.float().cpu().numpy()

    def metrics(self, pred: np.ndarray, gold: np.ndarray) -> dict:
        return {"pearson": M.pearson(pred, gold), "spearman": M.spearman(pred, gold)}

    def primary(self, m: dict) -> float | None:
        return None if m["pearson"] is None else (m["pearson"] + 1.0) / 2.0


class RegressionPairTask(RegressionTask):
    pair = True


# ----------------------------------------------------------------------------------------------
# built-in tasks


@register_task
class SST(ClassificationTask):
    """SST-5 sentiment (Socher et al. 2013): 5 classes, 0 = negative .. 4 = positive."""

    name = "sst"
    num_outputs = 5
    files = {"train": "ids-sst-train.csv", "dev": "ids-sst-dev.csv", "test": "ids-sst-test-student.csv"}
    text_columns = ("sentence",)
    label_column = "sentiment"
    prediction_column = "Predicted_Sentiment"
    cs224n_column = "Predicted_Sentiment"
    label_names = ("negative", "somewhat negative", "neutral", "somewhat positive", "positive")

    def parse_label(self, raw: str) -> int:
        # accept 5 here so that a 1..5 file gets the file-level message below, not 1000 row errors
        try:
            value = float(raw)
        except ValueError:
            raise ValueError("not a number") from None
        if not np.isfinite(value) or value != int(value) or not 0 <= value <= 5:
            raise ValueError("expected an integer 0..4")
        return int(value)

    def check_labels(self, labels: np.ndarray, path: str) -> None:
        if len(labels) and labels.max() == 5:
            if labels.min() >= 1:
                raise DataError(
                    f"{path}: SST labels run 1..5 but minbert expects 0..4 (subtract 1 from every label)"
                )
            bad = int(np.sum(labels == 5))
            raise DataError(f"{path}: {bad} SST label(s) equal 5; labels must be 0..4")


@register_task
class QQP(BinaryPairTask):
    """Quora Question Pairs paraphrase detection: 1 = duplicate."""

    name = "qqp"
    files = {"train": "quora-train.csv", "dev": "quora-dev.csv"}
    text_columns = ("sentence1", "sentence2")
    label_column = "is_duplicate"
    prediction_column = "Predicted_Is_Paraphrase"
    cs224n_column = "Predicted_Is_Paraphrase"


@register_task
class STS(RegressionPairTask):
    """STS-B semantic textual similarity (Cer et al. 2017): a float score on [0, 5]."""

    name = "sts"
    output_range = (0.0, 5.0)
    files = {"train": "sts-train.csv", "dev": "sts-dev.csv", "test": "sts-test-student.csv"}
    text_columns = ("sentence1", "sentence2")
    label_column = "similarity"
    prediction_column = "Predicted_Similarity"
    cs224n_column = "Predicted_Similiary"  # sic: the course leaderboard's spelling
