"""Learning-rate schedules, step for step equal to ``transformers``'
``get_{constant,linear,cosine}_schedule_with_warmup``, with the warmup counted as the Hugging
Face Trainer counts it."""

from __future__ import annotations

import math

import torch

from ..config import OptimConfig
from ..errors import ConfigError


def warmup_steps(warmup_ratio: float, total_steps: int) -> int:
    """Optimizer steps of warmup: ``ceil(total_steps * warmup_ratio)``, as the Hugging Face
    Trainer counts them (``TrainingArguments.get_warmup_steps``).

    Raises:
        ConfigError: ``warmup_ratio`` outside [0, 1].
    """
    if not 0.0 <= warmup_ratio <= 1.0:
        raise ConfigError(f"optim.warmup_ratio must be in [0, 1] (a fraction of all steps), got {warmup_ratio}")
    return math.ceil(total_steps * warmup_ratio)


def lr_factor(schedule: str, step: int, warmup: int, total_steps: int) -> float:
    """The lr multiplier after ``step`` optimizer steps (the one step ``step + 1`` uses), equal to
    ``transformers``' ``get_{constant,linear,cosine}_schedule_with_warmup``: ``step / warmup``
    during the warmup (0 at the first step), then 1 (constant), ``(total - step) / (total - warmup)``
    floored at 0 (linear), or ``(1 + cos(pi * progress)) / 2`` over ``progress = (step - warmup) /
    (total - warmup)`` (cosine, half a period, 0 at ``total_steps``)."""
    if step < warmup:
        return float(step) / float(max(1, warmup))
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return max(0.0, float(total_steps - step) / float(max(1, total_steps - warmup)))
    if schedule == "cosine":
        progress = float(step - warmup) / float(max(1, total_steps - warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))
    raise ConfigError(f"optim.schedule {schedule!r} is not one of ['constant', 'linear', 'cosine']")


def build_scheduler(
    cfg: OptimConfig, optimizer: torch.optim.Optimizer, total_steps: int, last_step: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """The lr schedule of ``cfg`` (a :class:`minbert.config.OptimConfig`) over ``total_steps``
    optimizer steps: :func:`lr_factor` with :func:`warmup_steps` of warmup, step for step equal to
    ``transformers.get_{constant,linear,cosine}_schedule_with_warmup``. ``last_step`` > 0 starts
    the schedule after that many steps (the optimizer's groups must hold ``initial_lr``, as after
    loading a checkpoint's optimizer state): the next step's lr is ``initial_lr * lr_factor(last_step)``.

    Raises:
        ConfigError: an unknown schedule or a warmup ratio outside [0, 1].
    """
    warmup = warmup_steps(cfg.warmup_ratio, total_steps)
    lr_factor(cfg.schedule, total_steps, warmup, total_steps)  # an unknown name fails here, not at a step

    def factor(step: int) -> float:
        return lr_factor(cfg.schedule, step, warmup, total_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=last_step - 1 if last_step > 0 else -1)
