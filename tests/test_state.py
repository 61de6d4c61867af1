"""The training loop's counters and the epoch-end best-model rule (minbert.training.state)."""

from __future__ import annotations

import math

from minbert.training.state import LoopState, track_best


def test_track_best_keeps_the_first_highest_score_and_counts_bad_epochs():
    st = LoopState()
    seen = []
    for epoch, overall in enumerate([0.5, 0.4, None, 0.5, 0.7], start=1):
        seen.append((track_best(st, overall, epoch), st.best, st.best_epoch, st.bad_epochs))
    assert seen == [
        (True, 0.5, 1, 0),
        (False, 0.5, 1, 1),
        (False, 0.5, 1, 2),  # no overall counts as -inf
        (False, 0.5, 1, 3),  # a tie is no improvement
        (True, 0.7, 5, 0),
    ]


def test_a_run_without_overall_keeps_its_first_epoch():
    st = LoopState()
    assert track_best(st, None, 1) is True and st.best == -math.inf and st.best_epoch == 1
    assert track_best(st, None, 2) is False and st.best_epoch == 1 and st.bad_epochs == 1


def test_loop_state_round_trip_and_older_checkpoints():
    st = LoopState(epoch=2, micro=3, step=11, best=0.25, best_epoch=1, bad_epochs=1,
                   history=[{"epoch": 1, "step": 8, "overall": 0.25}], skipped=1, world_size=2, metrics_bytes=77)
    d = st.to_dict()
    assert list(d) == ["epoch", "micro", "step", "best", "best_epoch", "bad_epochs", "history", "skipped",
                       "world_size", "metrics_bytes"]
    assert LoopState.from_dict(d) == st
    d["history"][0]["overall"] = 9.0  # a deep copy: the state is untouched
    assert st.history[0]["overall"] == 0.25
    # a checkpoint written before world_size and metrics_bytes were recorded
    old = LoopState.from_dict({"epoch": 1, "micro": 0, "step": 4, "best": 0.1, "best_epoch": 1, "bad_epochs": 0,
                               "history": [], "skipped": 0})
    assert (old.step, old.world_size, old.metrics_bytes) == (4, 1, None)
