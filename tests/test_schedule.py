"""Epoch schedules of the routines and the sampled routine's task proportions (minbert.training.schedule)."""

from __future__ import annotations

import numpy as np
import pytest

from minbert.config import load_config
from minbert.data.batching import TaskStream
from minbert.errors import ConfigError
from minbert.training.schedule import epoch_schedule, task_probabilities

SIZES = {"sst": 267, "qqp": 423, "sts": 189}  # batches per pass (batch 32 on the real sets)


def streams(sizes=SIZES, batch=1):
    return {n: TaskStream(np.ones(k * batch, dtype=np.int64), batch, seed=0) for n, k in sizes.items()}


def cfg(**train):
    return load_config(None, [f"train.{k}={v}" for k, v in train.items()])


def test_parallel_and_sequential_schedules():
    s = streams()
    par = epoch_schedule(cfg(routine="parallel"), s)
    assert len(par) == 423 and all(step == ("sst", "qqp", "sts") for step in par)
    seq = epoch_schedule(cfg(routine="sequential"), s)
    assert [t for (t,) in seq] == ["sst"] * 267 + ["qqp"] * 423 + ["sts"] * 189


@pytest.mark.parametrize("schedule", ["proportional", "sqrt", "annealed", "round_robin"])
def test_sampled_schedule_gives_the_stated_proportions(schedule):
    n = np.array(list(SIZES.values()), dtype=float)
    expected_first = {
        "proportional": n / n.sum(),
        "sqrt": np.sqrt(n) / np.sqrt(n).sum(),
        "annealed": n / n.sum(),  # alpha = 1 in the first epoch
        "round_robin": np.ones(3) / 3,
    }[schedule]
    c = cfg(routine="sampled", sampling=schedule, epochs=5)
    counts = np.zeros(3)
    steps = 0
    big = streams({k: v * 20 for k, v in SIZES.items()})  # 20x longer epochs: ~17,580 draws
    sched = epoch_schedule(c, big, epoch=0)
    for (t,) in sched:
        counts[list(SIZES).index(t)] += 1
        steps += 1
    assert steps == 20 * sum(SIZES.values())
    # multinomial standard error at this size is < 0.004
    np.testing.assert_allclose(counts / steps, expected_first, atol=0.012)
    if schedule == "round_robin":
        assert [t for (t,) in sched[:6]] == ["sst", "qqp", "sts"] * 2


def test_annealed_moves_from_proportional_to_near_uniform():
    n = np.array(list(SIZES.values()), dtype=float)
    first = task_probabilities(SIZES, "annealed", 0, 5)
    last = task_probabilities(SIZES, "annealed", 4, 5)
    np.testing.assert_allclose(list(first.values()), n / n.sum())
    w = n**0.2  # alpha = 1 - 0.8 in the last epoch
    np.testing.assert_allclose(list(last.values()), w / w.sum())


def test_sampled_schedule_is_a_function_of_seed_and_epoch():
    c = cfg(routine="sampled", sampling="sqrt")
    assert epoch_schedule(c, streams(), 3) == epoch_schedule(c, streams(), 3)
    assert epoch_schedule(c, streams(), 3) != epoch_schedule(c, streams(), 4)


def test_unknown_sampling_is_a_config_error():
    with pytest.raises(ConfigError, match="train.sampling"):
        load_config(None, ["train.sampling=uniformish"])
