"""The training loop's counters (what a checkpoint holds as ``loop``) and the epoch-end rule
that keeps the best model."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field


@dataclass
class LoopState:
    """The training loop's counters: what a checkpoint holds as ``loop`` (plain values only)."""

    epoch: int = 0  # epochs finished
    micro: int = 0  # micro-steps done in the current epoch
    step: int = 0  # optimizer steps done
    best: float | None = None  # the best epoch-end overall dev score (-inf: a run without overall)
    best_epoch: int | None = None  # its epoch (1-based)
    bad_epochs: int = 0  # epoch ends since the best one
    history: list[dict] = field(default_factory=list)  # per epoch end: epoch, step and the flat dev metrics
    skipped: int = 0  # optimizer steps skipped for a non-finite loss (train.nonfinite=skip)
    world_size: int = 1  # processes of the run that wrote it
    metrics_bytes: int | None = None  # metrics.jsonl's size at the checkpoint (what a resume keeps)

    @classmethod
    def from_dict(cls, loop: dict) -> LoopState:
        """The state of a checkpoint's ``loop`` dict (keys it lacks keep their defaults).

        Raises:
            ValueError: a counter that is not an integer >= 0 (``world_size`` >= 1), a ``best`` that
                is not a number, a ``history`` that is not a list of dicts.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        state = cls(**{k: v for k, v in loop.items() if k in names})
        for key in ("epoch", "micro", "step", "bad_epochs", "skipped", "world_size", "best_epoch", "metrics_bytes"):
            v, low = getattr(state, key), 1 if key == "world_size" else 0
            if v is None and key in ("best_epoch", "metrics_bytes"):  # may be null
                continue
            if type(v) is not int or v < low:
                raise ValueError(f"loop.{key} is {v!r}, not an integer >= {low}")
        if not (state.best is None or type(state.best) in (int, float)) or not (
                isinstance(state.history, list) and all(isinstance(h, dict) for h in state.history)):
            raise ValueError("loop.best is not a number or loop.history is not a list of records")
        return state

    def to_dict(self) -> dict:
        """A plain dict (a deep copy) for the checkpoint."""
        return dataclasses.asdict(self)

    def patience_spent(self, patience: int | None) -> bool:
        """Whether early stopping ends the training: ``patience`` (``train.early_stopping_patience``;
        None: never) epoch ends in a row without a new best."""
        return patience is not None and self.bad_epochs >= patience


def track_best(state: LoopState, overall: float | None, epoch: int) -> bool:
    """Epoch-end best-model tracking on ``state``: when ``overall`` (None counts as -inf) beats
    ``state.best`` (or is the first score), it becomes the best, of epoch ``epoch`` (1-based), and
    ``bad_epochs`` restarts at 0: returns True; else ``bad_epochs`` grows by one: returns False."""
    score = overall if overall is not None else -math.inf
    if state.best is None or score > state.best:
        state.best, state.best_epoch, state.bad_epochs = score, epoch, 0
        return True
    state.bad_epochs += 1
    return False
