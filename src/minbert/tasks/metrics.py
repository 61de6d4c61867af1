"""Dev-set metrics, computed with numpy/scipy.

Degenerate cases never crash and never produce NaN:

* an empty split gives ``None`` for each of its metrics (and is left out of the overall score);
* constant predictions or labels make Pearson/Spearman undefined: they score 0.0, with a warning.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy import stats

log = logging.getLogger(__name__)


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float | None:
    """Fraction of exact matches, in [0, 1]; None if empty."""
    if len(gold) == 0:
        return None
    return float(np.mean(np.asarray(pred) == np.asarray(gold)))


def binary_f1(pred: np.ndarray, gold: np.ndarray) -> float | None:
    """F1 of the positive class (label 1), in [0, 1]; 0.0 when there are no true positives."""
    if len(gold) == 0:
        return None
    pred, gold = np.asarray(pred).astype(bool), np.asarray(gold).astype(bool)
    tp = float(np.sum(pred & gold))
    denom = float(np.sum(pred) + np.sum(gold))
    return 0.0 if denom == 0 else 2.0 * tp / denom


CONFUSION_MAX_LABELS = 50  # above: no confusion matrix in the summary and no confusion plot (num_labels² counts)


def confusion_matrix(pred: np.ndarray, gold: np.ndarray, num_labels: int) -> list[list[int]]:
    """Counts ``m[gold][pred]`` as a nested list (num_labels x num_labels)."""
    m = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(m, (np.asarray(gold, dtype=np.int64), np.asarray(pred, dtype=np.int64)), 1)
    return m.tolist()


def macro_f1(pred: np.ndarray, gold: np.ndarray, num_labels: int) -> float | None:
    """Unweighted mean over the labels of each label's F1 (a label absent from both predictions
    and gold scores 0); in [0, 1], None if empty."""
    if len(gold) == 0:
        return None
    pred, gold = np.asarray(pred, dtype=np.int64), np.asarray(gold, dtype=np.int64)
    tp = np.bincount(gold[pred == gold], minlength=num_labels).astype(np.float64)  # per label: O(num_labels)
    denom = np.bincount(pred, minlength=num_labels) + np.bincount(gold, minlength=num_labels)  # predicted + gold
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1.mean())


def correlation_undefined(pred: np.ndarray, gold: np.ndarray) -> str | None:
    """Why a correlation of ``pred`` and ``gold`` (N,) is undefined: "no rows", "one row",
    "constant predictions" or "constant gold labels" (checked in this order); None when it is defined."""
    pred, gold = np.asarray(pred, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    if len(gold) < 2:
        return "one row" if len(gold) else "no rows"
    if np.ptp(pred) == 0:
        return "constant predictions"
    return "constant gold labels" if np.ptp(gold) == 0 else None


def _correlation(
    fn: Callable[[np.ndarray, np.ndarray], Any], pred: np.ndarray, gold: np.ndarray, name: str
) -> float | None:
    if len(gold) == 0:
        return None
    pred, gold = np.asarray(pred, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    why = correlation_undefined(pred, gold)
    if why is not None:
        log.warning("%s is undefined (%s, n=%d); scoring it 0.0", name, why, len(gold))
        return 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = fn(pred, gold)[0]
    if not np.isfinite(r):
        log.warning("%s is not finite; scoring it 0.0", name)
        return 0.0
    return float(r)


def pearson(pred: np.ndarray, gold: np.ndarray) -> float | None:
    """Pearson r (scipy.stats.pearsonr), in [-1, 1]; 0.0 if undefined; None if empty."""
    return _correlation(stats.pearsonr, pred, gold, "Pearson r")


def spearman(pred: np.ndarray, gold: np.ndarray) -> float | None:
    """Spearman rho (scipy.stats.spearmanr), in [-1, 1]; 0.0 if undefined; None if empty."""
    return _correlation(stats.spearmanr, pred, gold, "Spearman rho")


def overall(primary_scores: dict[str, float | None]) -> float | None:
    """Mean of the tasks' primary scores in [0, 1] (accuracy, or (r + 1) / 2), skipping tasks
    whose score is None (empty split, with a warning). None when no task has a score.

    With SST, QQP and STS this is (acc_SST + acc_QQP + (r_STS + 1) / 2) / 3.
    """
    kept = {k: v for k, v in primary_scores.items() if v is not None}
    skipped = sorted(set(primary_scores) - set(kept))
    if skipped:
        log.warning("overall score leaves out %s (no dev rows)", ", ".join(skipped))
    if not kept:
        return None
    return float(np.mean(list(kept.values())))
