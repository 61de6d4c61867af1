"""Metric functions and their degenerate-case rules: no crash, no NaN."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from scipy import stats

from minbert.tasks import metrics as M
from minbert.tasks.base import TASKS, get_task


@pytest.fixture
def warnings_log(caplog):
    caplog.set_level(logging.WARNING, logger="minbert.tasks.metrics")
    return caplog


def _warnings(caplog) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "minbert.tasks.metrics"
    ]


# ----------------------------------------------------------------------------------------------
# plain values


def test_accuracy_and_f1_values():
    pred = np.array([1, 0, 1, 1, 0, 0, 1])
    gold = np.array([1, 1, 1, 0, 0, 1, 0])
    assert M.accuracy(pred, gold) == pytest.approx(3 / 7)
    # tp = 2, fp = 2, fn = 2
    assert M.binary_f1(pred, gold) == pytest.approx(2 * 2 / (2 * 2 + 2 + 2))


def test_correlations_match_scipy():
    rng = np.random.default_rng(0)
    gold = rng.uniform(0, 5, 50)
    pred = gold ** 2 + rng.normal(0, 3, 50)  # monotone-ish, not linear: r != rho
    r, rho = M.pearson(pred, gold), M.spearman(pred, gold)
    assert r == pytest.approx(stats.pearsonr(pred, gold)[0], abs=1e-12)
    assert rho == pytest.approx(stats.spearmanr(pred, gold)[0], abs=1e-12)
    assert r != pytest.approx(rho, abs=1e-6)
    assert M.pearson(-pred, gold) == pytest.approx(-r, abs=1e-12)


def test_confusion_matrix_counts():
    gold = [0, 0, 1, 2, 2, 2]
    pred = [0, 1, 1, 2, 0, 2]
    assert M.confusion_matrix(np.array(pred), np.array(gold), 3) == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_macro_f1_values():
    # label 0: tp 1, 2 predicted, 1 gold -> 2/3; label 1: tp 1, 1 predicted, 3 gold -> 1/2;
    # label 2: predicted once, never gold -> 0; label 3: absent from both -> 0
    pred, gold = np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1])
    assert M.macro_f1(pred, gold, 4) == pytest.approx((2 / 3 + 1 / 2) / 4)
    assert M.macro_f1(gold, gold, 2) == 1.0
    assert M.macro_f1(np.array([]), np.array([]), 3) is None


def test_macro_f1_agrees_with_the_confusion_matrix_and_needs_no_square_of_the_labels():
    """Per-label counts (O(num_labels)), not a num_labels² matrix: equal to the F1s read off the
    confusion matrix; with 10^7 labels (a 10^14-cell matrix) it still returns, the absent labels
    scoring 0."""
    rng = np.random.default_rng(0)
    pred, gold = rng.integers(0, 7, 200), rng.integers(0, 7, 200)
    m = np.array(M.confusion_matrix(pred, gold, 7), dtype=np.float64)
    f1 = 2 * np.diag(m) / (m.sum(0) + m.sum(1))
    assert M.macro_f1(pred, gold, 7) == pytest.approx(f1.mean(), abs=1e-12)
    assert M.macro_f1(pred, gold, 10**7) == pytest.approx(f1.sum() / 10**7, rel=1e-12)


def test_a_task_of_many_labels_keeps_no_confusion_matrix():
    from minbert.config import from_dict
    from minbert.tasks.custom import build_custom_task

    def task(n):
        d = {"kind": "classification", "num_labels": n, "files": {"train": "t.csv", "dev": "d.csv"}}
        return build_custom_task("many", from_dict({"custom_tasks": {"many": d}}).custom_tasks["many"])

    pred, gold = np.array([0, 1, 1]), np.array([0, 1, 0])
    most = M.CONFUSION_MAX_LABELS
    small, large = task(most).metrics(pred, gold), task(most + 1).metrics(pred, gold)
    assert np.array(small["confusion"]).shape == (most, most) and large["confusion"] is None
    assert small["acc"] == large["acc"] == pytest.approx(2 / 3)
    from minbert.errors import ConfigError

    with pytest.raises(ConfigError, match=r"num_labels: at least 2 and at most 2\*\*31 - 1, got 2147483648"):
        task(2**31)  # label indices past int32, head sizes past what torch can count


def test_each_task_kind_reports_its_metric_set():
    """The built-in tasks and the custom ones that share their kind report the same metrics
    (a custom classification task adds macro F1), in this order."""
    from minbert.config import from_dict
    from minbert.tasks.custom import build_custom_task

    def custom(kind: str, **extra):
        d = {"kind": kind, "input": "single", "files": {"train": "a.csv", "dev": "a.csv"},
             "columns": {"text": "t", "label": "y"}, **extra}
        return build_custom_task("c", from_dict({"custom_tasks": {"c": d}}).custom_tasks["c"])

    pred, gold = np.array([0, 2, 1, 1]), np.array([0, 1, 1, 2])
    assert get_task("sst").metrics(pred, gold) == {"acc": 0.5, "confusion": [[1, 0, 0, 0, 0], [0, 1, 1, 0, 0],
                                                                             [0, 1, 0, 0, 0], [0] * 5, [0] * 5]}
    m = custom("classification", label_names=["a", "b", "c"]).metrics(pred, gold)
    assert list(m) == ["acc", "macro_f1", "confusion"]
    assert m["acc"] == 0.5 and m["confusion"] == [[1, 0, 0], [0, 1, 1], [0, 1, 0]]
    assert m["macro_f1"] == pytest.approx((1 + 1 / 2 + 0) / 3)
    assert list(get_task("qqp").metrics(np.array([1, 0]), np.array([1, 1]))) == ["acc", "f1"]
    scores, labels = np.array([0.5, 1.0, 2.0]), np.array([0.0, 1.0, 3.0])
    for task in (get_task("sts"), custom("regression", range=[0, 3])):
        assert list(task.metrics(scores, labels)) == ["pearson", "spearman"]
        assert task.metrics(scores, labels)["spearman"] == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------
# degenerate cases


@pytest.mark.parametrize("fn", [M.pearson, M.spearman], ids=["pearson", "spearman"])
@pytest.mark.parametrize(
    "pred,gold",
    [
        (np.full(10, 2.5), np.linspace(0, 5, 10)),  # constant predictions
        (np.linspace(0, 5, 10), np.full(10, 3.0)),  # constant labels
        (np.array([1.0]), np.array([4.0])),  # one row
    ],
    ids=["constant-pred", "constant-gold", "one-row"],
)
def test_undefined_correlation_is_zero_with_warning(fn, pred, gold, warnings_log):
    with np.errstate(all="raise"):
        value = fn(pred, gold)
    assert value == 0.0 and isinstance(value, float)
    msgs = _warnings(warnings_log)
    assert len(msgs) == 1 and "undefined" in msgs[0] and "0.0" in msgs[0]


def test_constant_sts_predictions_through_the_task(warnings_log):
    sts = get_task("sts")
    gold = np.linspace(0, 5, 20).astype(np.float32)
    m = sts.metrics(np.full(20, 3.1, dtype=np.float32), gold)
    assert m == {"pearson": 0.0, "spearman": 0.0}
    assert sts.primary(m) == 0.5
    msgs = _warnings(warnings_log)
    assert any("Pearson" in s for s in msgs) and any("Spearman" in s for s in msgs)


def test_non_finite_predictions_score_zero(warnings_log):
    pred = np.array([0.5, np.nan, 2.0, 4.0])
    gold = np.array([0.0, 1.0, 2.0, 3.0])
    for fn in (M.pearson, M.spearman):
        value = fn(pred, gold)
        assert value == 0.0 and not math.isnan(value)
    assert len(_warnings(warnings_log)) == 2


def test_valid_correlation_does_not_warn(warnings_log):
    assert M.pearson(np.array([1.0, 2.0, 4.0]), np.array([1.0, 3.0, 2.0])) == pytest.approx(
        stats.pearsonr([1.0, 2.0, 4.0], [1.0, 3.0, 2.0])[0]
    )
    assert _warnings(warnings_log) == []


@pytest.mark.parametrize("fn", [M.accuracy, M.binary_f1, M.pearson, M.spearman])
def test_empty_split_gives_none(fn):
    assert fn(np.array([]), np.array([])) is None


@pytest.mark.parametrize("name", sorted(TASKS))
def test_empty_split_task_metrics(name):
    task = get_task(name)
    empty = np.array([], dtype=task.label_dtype())
    m = task.metrics(empty, empty)
    assert m and all(v is None for v in m.values())
    assert task.primary(m) is None


# ----------------------------------------------------------------------------------------------
# overall score


def test_overall_of_three_tasks():
    scores = {
        "sst": get_task("sst").primary({"acc": 0.5, "confusion": None}),
        "qqp": get_task("qqp").primary({"acc": 0.8, "f1": 0.7}),
        "sts": get_task("sts").primary({"pearson": 0.6, "spearman": 0.55}),
    }
    assert scores["sts"] == pytest.approx(0.8)
    assert M.overall(scores) == pytest.approx((0.5 + 0.8 + 0.8) / 3)


def test_overall_skips_none_with_warning(warnings_log):
    value = M.overall({"sst": 0.5, "qqp": None, "sts": 0.8})
    assert value == pytest.approx((0.5 + 0.8) / 2)
    msgs = _warnings(warnings_log)
    assert len(msgs) == 1 and "qqp" in msgs[0] and "sst" not in msgs[0]


def test_overall_all_none_is_none_not_nan(warnings_log):
    value = M.overall({"sst": None, "qqp": None})
    assert value is None
    assert "qqp" in _warnings(warnings_log)[0] and "sst" in _warnings(warnings_log)[0]
    assert M.overall({}) is None


def test_overall_no_warning_when_complete(warnings_log):
    assert M.overall({"a": 0.25, "b": 0.75}) == pytest.approx(0.5)
    assert _warnings(warnings_log) == []


def test_overall_from_degenerate_task_metrics_is_finite(warnings_log):
    """Empty SST dev, constant STS predictions, NaN-free end to end."""
    empty = np.array([], dtype=np.int64)
    sst = get_task("sst").metrics(empty, empty)
    qqp = get_task("qqp").metrics(np.array([1, 0, 1]), np.array([1, 1, 1]))
    sts = get_task("sts").metrics(np.full(4, 2.0), np.array([0.0, 1.0, 2.0, 5.0]))
    scores = {n: get_task(n).primary(m) for n, m in (("sst", sst), ("qqp", qqp), ("sts", sts))}
    value = M.overall(scores)
    assert value is not None and math.isfinite(value)
    assert value == pytest.approx((2 / 3 + 0.5) / 2)
