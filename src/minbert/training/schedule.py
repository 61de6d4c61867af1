"""Which tasks train at each micro-step of an epoch: a pure function of (config, epoch).

Routines: ``parallel`` (every task at every step), ``sequential`` (all batches of one task, then
the next), ``sampled`` (one task per step, drawn by ``train.sampling``).
"""

from __future__ import annotations

import numpy as np

from ..config import Config
from ..data.batching import TaskStream
from ..errors import ConfigError


def task_probabilities(sizes: dict[str, int], schedule: str, epoch: int, epochs: int) -> dict[str, float]:
    """Sampling probability of each task for the ``sampled`` routine (Stickland & Murray 2019,
    "BERT and PALs", section 4): ``proportional`` p_t ∝ N_t, ``sqrt`` p_t ∝ sqrt(N_t),
    ``annealed`` p_t ∝ N_t^alpha with alpha = 1 - 0.8 (e - 1) / (E - 1) for epoch e of E (from
    proportional towards uniform), ``round_robin`` uniform (and drawn in turn, not at random).
    ``sizes`` are batches per pass over each task's data."""
    n = np.array([sizes[t] for t in sizes], dtype=np.float64)
    if schedule == "proportional":
        w = n
    elif schedule == "sqrt":
        w = np.sqrt(n)
    elif schedule == "annealed":
        w = n ** (1.0 - 0.8 * epoch / max(1, epochs - 1))
    elif schedule == "round_robin":
        w = np.ones_like(n)
    else:
        choices = ["round_robin", "proportional", "sqrt", "annealed"]
        raise ConfigError(f"train.sampling {schedule!r} is not one of {choices}")
    return dict(zip(sizes, (w / w.sum()).tolist(), strict=True))


def epoch_schedule(cfg: Config, streams: dict[str, TaskStream], epoch: int = 0) -> list[tuple[str, ...]]:
    """The tasks trained at each micro-step of one epoch: a pure function of (config, epoch).

    ``parallel``: every task at every step, as many steps as the largest task has batches;
    ``sequential``: all batches of one task, then the next; ``sampled``: one task per step,
    drawn by ``train.sampling``, as many steps as all tasks have batches together."""
    names = list(streams)
    if cfg.train.routine == "parallel":
        return [tuple(names)] * max(len(s) for s in streams.values())
    if cfg.train.routine == "sequential":
        return [(n,) for n in names for _ in range(len(streams[n]))]
    total = sum(len(s) for s in streams.values())
    if cfg.train.sampling == "round_robin":
        return [(names[i % len(names)],) for i in range(total)]
    p = task_probabilities({n: len(streams[n]) for n in names}, cfg.train.sampling, epoch, cfg.train.epochs)
    rng = np.random.default_rng([cfg.train.seed, epoch, 7])
    draws = rng.choice(len(names), size=total, p=[p[n] for n in names])
    return [(names[i],) for i in draws]

