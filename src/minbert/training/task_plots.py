"""A run's per-task plots of its final dev predictions, drawn at the end of training when
``output.plot`` is true (beside ``curves.png``, see :mod:`minbert.training.plots`).

The numbers are those of ``predictions/<task>-dev.csv`` (the same predictions of the same weights)
against the dev split's gold labels; one PNG per task, by its kind (:func:`plot_kind`):

* ``<task>-confusion.png``: classification with more than 2 labels (SST-5): counts of gold (rows)
  × predicted (columns) label, from :func:`minbert.tasks.metrics.confusion_matrix`; image gid
  ``confusion``, cell texts ``count/<gold>/<pred>``;
* ``<task>-scatter.png``: regression (STS): predicted (y) vs gold (x) score, one point per row
  (gid ``points``), the y = x line (gid ``identity``) and the Pearson r
  (:func:`minbert.tasks.metrics.pearson`) in the title and the legend, or why it is undefined
  (one row, constant predictions or gold labels: :func:`minbert.tasks.metrics.correlation_undefined`);
* ``<task>-calibration.png``: binary tasks (QQP) and 2-label classification: the reliability
  curve of the predicted probability of label 1 (sigmoid of the logit, or softmax of the two
  logits) in :data:`N_BINS` equal-width bins (:func:`calibration_bins`): mean probability (x) vs
  fraction of label 1 (y) of each non-empty bin (gid ``reliability``, axes gid ``reliability``),
  the diagonal (gid ``diagonal``), and the rows per bin as bars below (gid ``bin-count``, axes gid
  ``counts``).

:func:`write_run_plots` draws ``curves.png`` and these; a plot that fails is logged as one warning
line and the others are still drawn: drawing never fails a finished run.
"""

from __future__ import annotations

import functools
import json
import logging
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import expit, softmax

from ..io import atomic_write_png
from ..tasks import metrics as M
from ..tasks.base import Task
from .children import end_child, last_error_line
from .plots import PNG_NAME, plot_curves

if TYPE_CHECKING:
    from multiprocessing.pool import AsyncResult, Pool

    from matplotlib.figure import Figure

    from ..data.batching import TokenizedSplit
    from ..inference.evaluate import EvalResult

log = logging.getLogger(__name__)

N_BINS = 10


def plot_kind(task: Task) -> str:
    """``scatter`` (regression), ``calibration`` (binary, or classification with 2 labels),
    ``confusion`` (classification with more labels, up to ``metrics.CONFUSION_MAX_LABELS``) or
    ``none`` (more labels than that: no plot)."""
    if task.kind == "regression":
        return "scatter"
    if task.kind == "binary" or task.num_outputs == 2:
        return "calibration"
    return "confusion" if task.num_outputs <= M.CONFUSION_MAX_LABELS else "none"


def plot_file(task: Task) -> str:
    """The PNG's name in the run folder: ``<task>-<plot_kind>.png``."""
    return f"{task.name}-{plot_kind(task)}.png"


def positive_probability(task: Task, outputs: np.ndarray) -> np.ndarray:
    """P(label 1), (N,) float64 in [0, 1], from a binary task's logits (N,) (sigmoid) or a 2-label
    classification task's logits (N, 2) (softmax).

    Raises:
        ValueError: the outputs are not of that shape.
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    if task.kind == "binary" and outputs.ndim == 1:
        return expit(outputs)
    if task.kind == "classification" and outputs.ndim == 2 and outputs.shape[1] == 2:
        return softmax(outputs, axis=1)[:, 1]
    raise ValueError(f"task {task.name}: no probability of label 1 in outputs of shape {outputs.shape}")


@dataclass(frozen=True)
class CalibrationBins:
    """Per bin b of ``edges[b] <= p < edges[b + 1]`` (the last bin includes 1.0): ``counts`` (B,)
    int64 rows, ``mean_prob`` (B,) their mean probability, ``frac_pos`` (B,) their fraction of
    label 1 (both float64, NaN for an empty bin)."""

    edges: np.ndarray
    counts: np.ndarray
    mean_prob: np.ndarray
    frac_pos: np.ndarray


def calibration_bins(prob: np.ndarray, gold: np.ndarray, n_bins: int = N_BINS) -> CalibrationBins:
    """The reliability diagram's numbers of probabilities ``prob`` (N,) in [0, 1] of label 1 and
    gold labels ``gold`` (N,) in {0, 1}, in ``n_bins`` equal-width bins of [0, 1] (numpy.histogram).

    Raises:
        ValueError: ``n_bins`` < 1, lengths differ, a probability outside [0, 1] (or NaN), or a
            gold label other than 0 and 1.
    """
    prob, gold = np.asarray(prob, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    if n_bins < 1:
        raise ValueError(f"calibration: {n_bins} bins; need at least 1")
    if prob.shape != gold.shape or prob.ndim != 1:
        raise ValueError(f"calibration: {prob.shape} probabilities but {gold.shape} gold labels")
    if not ((prob >= 0) & (prob <= 1)).all():
        raise ValueError("calibration: probabilities must lie in [0, 1]")
    if not np.isin(gold, (0, 1)).all():
        raise ValueError("calibration: gold labels must be 0 or 1")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    counts = np.histogram(prob, edges)[0]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_prob = np.histogram(prob, edges, weights=prob)[0] / counts
        frac_pos = np.histogram(prob, edges, weights=gold)[0] / counts
    return CalibrationBins(edges, counts.astype(np.int64), mean_prob, frac_pos)


def _label_names(task: Task) -> list[str]:
    names = task.label_names or ()
    return [str(names[i]) if i < len(names) else str(i) for i in range(task.num_outputs)]


def plot_confusion(task: Task, pred: np.ndarray, gold: np.ndarray) -> Figure:
    """Counts of gold (rows) × predicted (columns) labels of ``pred``, ``gold`` (N,) ints, with the
    label names on the axes and the count in each cell."""
    from matplotlib.figure import Figure

    m = np.asarray(M.confusion_matrix(pred, gold, task.num_outputs))
    names = _label_names(task)
    size = 2.5 + 0.75 * task.num_outputs
    fig = Figure(figsize=(size + 1.2, size), dpi=110)
    ax = fig.subplots()
    image = ax.imshow(m, cmap="Blues", vmin=0, gid="confusion")
    for i, j in np.ndindex(m.shape):
        color = "white" if m[i, j] > m.max() / 2 else "black"
        ax.text(j, i, str(m[i, j]), ha="center", va="center", color=color, fontsize=9, gid=f"count/{i}/{j}")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted", ylabel="gold")
    acc = M.accuracy(pred, gold)
    ax.set_title(f"{task.name} dev: {len(gold)} rows, accuracy {acc:.3f}", fontsize=10)
    fig.colorbar(image, ax=ax, label="rows")
    fig.tight_layout()
    return fig


def plot_scatter(task: Task, pred: np.ndarray, gold: np.ndarray) -> Figure:
    """Predicted (y) vs gold (x) scores, ``pred``, ``gold`` (N,) floats, with the y = x line over
    the task's range and the Pearson r (or why it is undefined) in the title and the legend."""
    from matplotlib.figure import Figure

    pred, gold = np.asarray(pred, dtype=np.float64), np.asarray(gold, dtype=np.float64)
    why = M.correlation_undefined(pred, gold)  # (the metric scores it 0.0, which is no correlation to show)
    r_text = f"Pearson r undefined ({why})" if why else f"Pearson r = {M.pearson(pred, gold):.3f}"
    lo, hi = task.output_range or (float(min(pred.min(), gold.min())), float(max(pred.max(), gold.max())))
    fig = Figure(figsize=(5.2, 5.2), dpi=110)
    ax = fig.subplots()
    ax.plot([lo, hi], [lo, hi], color="0.5", ls="--", lw=1, label="y = x", gid="identity")
    alpha = 0.7 if len(gold) <= 200 else 0.35
    ax.scatter(gold, pred, s=12, alpha=alpha, color="C0", edgecolors="none", label=f"rows ({r_text})", gid="points")
    pad = 0.03 * (hi - lo)
    ax.set(xlim=(lo - pad, hi + pad), ylim=(lo - pad, hi + pad), xlabel="gold score", ylabel="predicted score")
    ax.set_aspect("equal")
    ax.grid(alpha=0.25)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title(f"{task.name} dev: {len(gold)} rows, {r_text}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_calibration(task: Task, prob: np.ndarray, gold: np.ndarray) -> Figure:
    """Reliability curve of ``prob`` (N,) = P(label 1) against ``gold`` (N,) in {0, 1}
    (:func:`calibration_bins`), the diagonal, and the rows per bin below."""
    from matplotlib.figure import Figure

    bins = calibration_bins(prob, gold)
    positive = _label_names(task)[1] if task.label_names else f"{task.label_column} = 1"
    full = bins.counts > 0
    fig = Figure(figsize=(5.4, 6.4), dpi=110)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    top.plot([0, 1], [0, 1], color="0.5", ls="--", lw=1, label="perfectly calibrated", gid="diagonal")
    top.plot(bins.mean_prob[full], bins.frac_pos[full], marker="o", color="C0", lw=1.8,
             label=f"{N_BINS} equal-width bins", gid="reliability")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel=f"observed fraction of {positive}", gid="reliability")
    top.set_title(f"{task.name} dev: {len(gold)} rows, calibration of P({positive})", fontsize=10)
    top.legend(loc="upper left", fontsize=8)
    top.grid(alpha=0.25)
    centers = (bins.edges[:-1] + bins.edges[1:]) / 2
    bars = bottom.bar(centers, bins.counts, width=np.diff(bins.edges) * 0.9, color="C0", alpha=0.6, gid="bin-count")
    bottom.bar_label(bars, fontsize=7)
    bottom.set(xlabel=f"mean predicted probability of {positive}", ylabel="rows", gid="counts")
    bottom.set_ylim(0, max(1, int(bins.counts.max())) * 1.25)
    fig.tight_layout()
    return fig


def draw_task_plot(task: Task, values: np.ndarray, outputs: np.ndarray, gold: np.ndarray) -> Figure:
    """The figure of :func:`plot_kind` for one task's dev predictions: ``values`` (N,) as in the
    prediction file (labels or scores), ``outputs`` the raw model outputs (logits (N,) or (N, C),
    or scores (N,)), ``gold`` (N,) the gold labels."""
    kind = plot_kind(task)
    if kind == "scatter":
        return plot_scatter(task, values, gold)
    if kind == "calibration":
        return plot_calibration(task, positive_probability(task, outputs), gold)
    return plot_confusion(task, values, gold)


def _draw_and_save(task: Task, values: np.ndarray, outputs: np.ndarray, gold: np.ndarray, path: Path) -> None:
    atomic_write_png(path, draw_task_plot(task, values, outputs, gold))


def write_run_plots(
    run_dir: Path, tasks: dict[str, Task], dev: dict[str, TokenizedSplit], result: EvalResult,
    plotter: subprocess.Popen | None = None,
) -> list[str]:
    """Draw ``curves.png`` and each task's :func:`plot_file` in ``run_dir`` from ``result`` (the
    final dev evaluation, whose predictions are ``predictions/<task>-dev.csv``) and the gold labels
    of the ``dev`` splits; returns the names of the files written. A task without labelled dev rows,
    or of plot kind ``none``, gets no plot; a plot that raises is logged as one warning and skipped. With ``plotter``
    (:func:`start_plotter`) the child draws them; where it fails, this process does."""
    items = {}
    for name, p in result.predictions.items():
        gold = dev[name].labels if name in dev else None
        if gold is not None and len(gold) and plot_kind(tasks[name]) != "none":
            items[name] = (np.asarray(p.values), np.asarray(p.outputs), np.asarray(gold))
    written = _plot_in_child(plotter, run_dir, items) if plotter is not None else None
    return written if written is not None else _write_plots(run_dir, tasks, items)


Job = tuple[str, Callable[[], None]]  # (file name, draws and saves it)


def _draw_curves(run_dir: Path) -> None:
    plot_curves(run_dir)  # (a worker returns nothing: the figure stays in its process)


def _curves_job(run_dir: Path) -> Job:
    return PNG_NAME, functools.partial(_draw_curves, run_dir)


def _task_jobs(run_dir: Path, tasks: dict[str, Task], items: dict[str, tuple]) -> list[Job]:
    """The plot of each task of ``items`` (name -> (values, outputs, gold))."""
    jobs = []
    for name, (values, outputs, gold) in items.items():
        path = run_dir / plot_file(tasks[name])
        jobs.append((path.name, functools.partial(_draw_and_save, tasks[name], values, outputs, gold, path)))
    return jobs


def _write_plots(run_dir: Path, tasks: dict[str, Task], items: dict[str, tuple]) -> list[str]:
    """``curves.png`` and the plot of each task of ``items`` (name -> (values, outputs, gold)), one
    after the other in this process."""
    return _collect([(name, job, None) for name, job in [_curves_job(run_dir), *_task_jobs(run_dir, tasks, items)]])


def _collect(started: list[tuple[str, Callable[[], None], AsyncResult | None]], timeout_s: float = 100.0,
             ) -> list[str]:
    """The names of the files that the jobs wrote, in order. A job's pending result (a worker
    draws it) is waited for; without one the job runs here. A job that raises is logged as one
    warning: a plot is never worth a finished run."""
    written = []
    for file_name, job, pending in started:
        try:
            pending.get(timeout_s) if pending is not None else job()
            written.append(file_name)
        except Exception as e:
            reason = " ".join(str(e).split()) or "no message"
            log.warning("%s not drawn: %s: %s", file_name, type(e).__name__, reason)
    return written


def start_plotter() -> subprocess.Popen | None:
    """A child process (this module run as a script) that imports matplotlib, draws a first figure
    and forks its drawing workers now, while the run trains, then waits for :func:`start_curves`
    and :func:`write_run_plots`: the plots at the end of a run then cost their drawing only (the
    imports took 0.6 s of a GPU run's end, and on a fresh machine matplotlib first builds its font
    cache), and the workers draw the figures side by side. The child reads the run's tasks from
    its ``config.yaml``. None where no child can start. A child whose parent ends without sending
    the predictions exits when its input closes. The child leads a process group of its own, so
    that :func:`stop_plotter` ends its workers with it (POSIX)."""
    try:
        return subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
    except OSError as e:
        log.debug("plots are drawn in this process: %s", e)
        return None


def start_curves(plotter: subprocess.Popen | None, run_dir: Path) -> None:
    """Let :func:`start_plotter`'s child begin ``curves.png`` now (``metrics.jsonl`` is complete
    once training has ended), while this process writes the final predictions. Where the child
    cannot take it, :func:`write_run_plots` draws everything in this process, as always."""
    if plotter is None or plotter.stdin is None:
        return
    try:
        plotter.stdin.write(json.dumps({"run_dir": str(run_dir)}) + "\n")
        plotter.stdin.flush()
    except (OSError, ValueError) as e:  # a child that has died: a broken pipe
        log.debug("the plot process takes no curves (%s)", type(e).__name__)


def stop_plotter(child: subprocess.Popen | None) -> None:
    """End :func:`start_plotter`'s child without plots (a run that failed or was stopped)."""
    end_child(child)


def _plot_in_child(child: subprocess.Popen, run_dir: Path, items: dict[str, tuple],
                   timeout_s: float = 120.0) -> list[str] | None:
    """Send ``items`` to :func:`start_plotter`'s child and wait for its list of written files;
    None where it fails or times out (its last error line is logged at debug level)."""
    payload = {"run_dir": str(run_dir),
               "items": {n: [v.tolist(), o.tolist(), g.tolist()] for n, (v, o, g) in items.items()}}
    try:
        out, err = child.communicate(json.dumps(payload) + "\n", timeout=timeout_s)
    except (subprocess.TimeoutExpired, OSError, ValueError) as e:
        end_child(child)
        log.debug("the plot process failed (%s): drawing here", type(e).__name__)
        return None
    if child.returncode:
        log.debug("the plot process failed (%s): %s; drawing here", child.returncode, last_error_line(err))
        return None
    for line in err.splitlines():  # its own warnings (a plot not drawn), as this process would log them
        log.warning("%s", line)
    return json.loads(out)


def _worker_pool() -> Pool | None:
    """Up to 4 forked processes that draw one figure each, side by side (Linux with 2 or more
    cores: forked workers start at once and share the imports); None: draw one after the other."""
    import multiprocessing
    import os

    n = min(4, os.cpu_count() or 1)
    if sys.platform != "linux" or n < 2:
        return None
    return multiprocessing.get_context("fork").Pool(n)


def _child_main() -> None:
    """:func:`start_plotter`'s child: warm up, fork the workers, then read messages of one line
    each: ``{"run_dir"}`` (:func:`start_curves`) starts ``curves.png``; ``{"run_dir", "items"}``
    (the predictions) starts the task plots (and the curves, if not yet started), waits for them
    all and prints the names of the files written as JSON. The warnings of plots not drawn go to
    stderr, one per line. Input that closes before the predictions came exits with status 1."""
    import io

    from matplotlib.figure import Figure

    from ..config import load_config
    from ..runs import CONFIG_FILE
    from ..tasks.table import task_table

    warm = Figure(figsize=(1, 1))
    warm.subplots().set_title("0.5")
    warm.savefig(io.BytesIO(), format="png")  # fonts, the Agg canvas, the PNG writer
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(handler)
    log.propagate = False
    pool = _worker_pool()
    started: list[tuple[str, Callable[[], None], AsyncResult | None]] = []
    curves_dir = None
    for line in sys.stdin:
        msg = json.loads(line)
        run_dir = Path(msg["run_dir"])
        jobs = [] if run_dir == curves_dir else [_curves_job(run_dir)]
        if jobs:  # (curves begun for another folder are not this run's)
            started, curves_dir = [j for j in started if j[0] != PNG_NAME], run_dir
        if "items" in msg:
            tasks = task_table(load_config(run_dir / CONFIG_FILE))
            items = {n: tuple(np.asarray(x) for x in parts) for n, parts in msg["items"].items()}
            jobs += _task_jobs(run_dir, tasks, items)
        started += [(name, job, pool.apply_async(job) if pool is not None else None) for name, job in jobs]
        if "items" in msg:
            print(json.dumps(_collect(started)), flush=True)
            return
    sys.exit("no predictions came: no plots")


if __name__ == "__main__":
    _child_main()
