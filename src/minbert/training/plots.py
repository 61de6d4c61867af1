"""A run's training curves, ``curves.png``, drawn from its ``metrics.jsonl``.

Panels, all over the optimizer step (the same x range, so a dev evaluation lines up with the
loss at that step; dotted lines mark the end of each epoch when there are several):

* training loss per task: every step's loss (thin, light) and its trailing moving average over
  :func:`smoothing_window` steps (the window is named in the legend);
* dev accuracy (``<task>_acc``) and the overall score at each evaluation, on 0..1;
* dev Pearson r (``<task>_pearson``), on 0..1, or on -1..1 when a value is negative.

Each dev series ends with its last value written beside it, so a single evaluation (a one-epoch
run) is a labelled point. Lines carry gids (``loss-raw/<task>``, ``loss-avg/<task>``,
``dev/<metric>``) and axes gids (``loss``, ``dev-acc``, ``dev-r``) by which tests find them.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..io import atomic_write_png

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PNG_NAME = "curves.png"


def smoothing_window(n: int) -> int:
    """Steps in the moving average of a loss curve of ``n`` points: max(5, n // 20)."""
    return max(5, n // 20)


def moving_average(y: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean, (N,) -> (N,) float64: ``out[i] = mean(y[max(0, i - window + 1) : i + 1])``
    (the first ``window - 1`` values average the fewer points there are).

    Raises:
        ValueError: ``window`` < 1.
    """
    if window < 1:
        raise ValueError(f"moving average window {window}: must be >= 1")
    y = np.asarray(y, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(y)])
    end = np.arange(1, len(y) + 1)
    start = np.maximum(0, end - window)
    return (c[end] - c[start]) / (end - start)


def read_metrics(path: Path) -> tuple[list[dict], list[dict]]:
    """The step records (those with an ``lr``) and the dev records (a ``dev`` dict and a ``step``)
    of a ``metrics.jsonl``. Lines that are not JSON objects (a torn last line) are skipped."""
    steps, dev = [], []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("step"), int | float):
            continue
        if isinstance(rec.get("dev"), dict):
            dev.append(rec)
        elif "lr" in rec:
            steps.append(rec)
    return steps, dev


def _value(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) else None


def _series(records: list[dict], get: Callable[[dict], Any]) -> tuple[np.ndarray, np.ndarray]:
    pts = [(r["step"], y) for r in records if (y := _value(get(r))) is not None]
    return np.array([p[0] for p in pts], dtype=np.float64), np.array([p[1] for p in pts], dtype=np.float64)


def _plot_loss(ax: Axes, steps: list[dict], colors: dict[str, str]) -> None:
    keys = list(dict.fromkeys(k for r in steps for k in r if k.startswith("loss/")))  # in training order
    smoothed = False
    for k in keys:
        task = k[len("loss/") :]
        x, y = _series(steps, lambda r, k=k: r.get(k))
        w = smoothing_window(len(y))
        if len(y) > w:  # enough points for the average to say more than the points themselves
            ax.plot(x, y, color=colors[task], lw=0.7, alpha=0.3, gid=f"loss-raw/{task}", label="_nolegend_")
            ax.plot(x, moving_average(y, w), color=colors[task], lw=1.8, gid=f"loss-avg/{task}",
                    label=f"{task} (mean of last {w} steps)")
            smoothed = True
        else:
            ax.plot(x, y, color=colors[task], lw=1.2, marker=".", gid=f"loss-raw/{task}", label=f"{task} (per step)")
    if smoothed:
        ax.plot([], [], color="0.5", lw=0.7, alpha=0.5, label="per step (thin)")
    if not keys:
        ax.text(0.5, 0.5, "no training steps logged", transform=ax.transAxes, ha="center", va="center", color="0.4")
    ax.set(ylabel="training loss", title="Training loss")
    ax.set_ylim(bottom=0)
    if keys:
        _legend_below(ax)


def _legend_below(ax: Axes) -> None:
    """The legend under the panel: inside, it would hide curves or the values written at their ends."""
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)


def _label_ends(ax: Axes, ends: list[tuple[float, float, str]], x_pad: float, y_range: float) -> None:
    """Write each series' last value beside its last point, nudged apart so labels do not overlap."""
    gap, placed = 0.06 * y_range, []
    for x, y, color in sorted(ends, key=lambda e: e[1]):
        ty = max(y, placed[-1] + gap) if placed else y
        placed.append(ty)
        ax.text(x + x_pad, ty, f"{y:.3f}", color=color, fontsize=8, va="center", ha="left", gid="dev-value")


def _plot_dev(ax: Axes, dev: list[dict], keys: list[str], colors: dict[str, str], x_pad: float, signed: bool) -> None:
    """One dev panel: a line with markers per metric key; y on 0..1, or on -1..1 when ``signed``
    and some value is negative."""
    ends, negative = [], False
    for k in keys:
        x, y = _series(dev, lambda r, k=k: r["dev"].get(k))
        if not len(x):
            continue
        task, _, metric = k.rpartition("_")
        color = colors.get(task, "black")
        label = "overall" if k == "overall" else f"{task} {'r' if metric == 'pearson' else metric}"
        style = {"lw": 2.2, "ls": "--"} if k == "overall" else {"lw": 1.5}
        ax.plot(x, y, marker="o", ms=5, color=color, label=label, gid=f"dev/{k}", clip_on=False, **style)
        ends.append((x[-1], y[-1], color))
        negative = negative or bool((y < 0).any())
    lo = -1.0 if signed and negative else 0.0
    ax.set_ylim(lo, 1.0)
    if lo < 0:
        ax.axhline(0.0, color="0.7", lw=0.8)
    _label_ends(ax, ends, x_pad, 1.0 - lo)
    if ends:
        _legend_below(ax)
    else:
        ax.text(0.5, 0.5, "no dev evaluation yet", transform=ax.transAxes, ha="center", va="center", color="0.4")


def plot_curves(run_dir: str | Path) -> Figure:
    """Draw ``run_dir/curves.png`` (written atomically) from ``run_dir/metrics.jsonl`` and return
    the :class:`matplotlib.figure.Figure` (closed to pyplot: nothing global is touched).

    Raises:
        FileNotFoundError: the run folder has no ``metrics.jsonl``.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    run_dir = Path(run_dir)
    steps, dev = read_metrics(run_dir / "metrics.jsonl")
    dev_keys = list(dict.fromkeys(k for r in dev for k in r["dev"] if k.endswith(("_acc", "_pearson"))))
    acc_keys = [k for k in dev_keys if k.endswith("_acc")] + ["overall"]
    r_keys = [k for k in dev_keys if k.endswith("_pearson")]
    tasks = [k[len("loss/") :] for r in steps for k in r if k.startswith("loss/")]
    tasks = list(dict.fromkeys(tasks + [k.rpartition("_")[0] for k in dev_keys]))  # training order
    colors = {t: f"C{i % 10}" for i, t in enumerate(tasks)}  # a task has one colour in every panel
    x_max = max([1.0] + [float(r["step"]) for r in steps + dev])
    last_step: dict[int, float] = {}
    for r in steps:
        if isinstance(r.get("epoch"), int):
            last_step[r["epoch"]] = max(last_step.get(r["epoch"], 0.0), float(r["step"]))
    epoch_ends = [last_step[e] for e in sorted(last_step)[:-1]]

    fig = Figure(figsize=(5.2 * (3 if r_keys else 2), 4.8), dpi=110)
    axes = fig.subplots(1, 3 if r_keys else 2, squeeze=False)[0]
    _plot_loss(axes[0], steps, colors)
    _plot_dev(axes[1], dev, acc_keys, colors, 0.015 * x_max, signed=False)
    axes[1].set(ylabel="accuracy / overall score", title="Dev accuracy and overall score")
    if r_keys:
        _plot_dev(axes[2], dev, r_keys, colors, 0.015 * x_max, signed=True)
        axes[2].set(ylabel="Pearson r", title="Dev correlation")
    for ax, gid in zip(axes, ("loss", "dev-acc", "dev-r"), strict=False):
        ax.set_gid(gid)
        ax.set_xlim(0, x_max * 1.12)  # the same steps in every panel, with room for the values
        ax.set_xlabel("optimizer step" + (" (dotted: end of an epoch)" if epoch_ends else ""))
        ax.grid(alpha=0.25)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))  # whole steps
        for x in epoch_ends:
            ax.axvline(x, color="0.6", ls=":", lw=1)
    fig.suptitle(run_dir.name, fontsize=10)
    fig.tight_layout()
    atomic_write_png(run_dir / PNG_NAME, fig)
    return fig
