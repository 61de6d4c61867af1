"""The reference paper's experiment table as a suite of presets (``minbert suite``).

Every row of the paper's table is a preset ``configs/paper/expNN-<slug>.yaml`` (NN = the row,
1..14) that lists all of its hyperparameters. :func:`run_suite` trains the presets of a folder
one after the other, each in ``<runs_root>/<preset name>``, and after every row writes

* ``<report_dir>/paper_suite.json``: one record per row (ours, the paper's, the settings);
* ``<report_dir>/paper_suite.md``: the table in the paper's shape, ours beside the paper's,
  the caveats, and an analysis generated from the numbers;
* ``<report_dir>/paper_suite.png``: grouped bars, ours next to the paper's, per metric.

The suite runs in parts: rows whose results are already in the JSON are skipped, new results are
merged into it. A row whose run folder already holds a finished run of the same config is read
back instead of retrained; a killed row with a checkpoint of the same config is resumed (on the data
it was trained on, unless ``data_dir`` is given; a row whose data files changed is trained again).

Dependencies: a preset whose ``train.init_from`` ends in the name of another preset of the folder
(row 14: ``runs/paper/exp07-...``) initialises from that preset's run folder under this suite's
``runs_root``; that row runs first, in the same command, when its run folder has no weights yet.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

from ..config import Config, load_config, replace, resolve
from ..errors import ConfigError
from ..io import atomic_write_json, atomic_write_text
from ..runs import last_checkpoint
from .rows import METRICS, train_row

log = logging.getLogger(__name__)

LABELS = {"sst_acc": "SST acc", "qqp_acc": "QQP acc", "sts_pearson": "STS r", "overall": "overall"}
JSON_NAME, MD_NAME, PNG_NAME = "paper_suite.json", "paper_suite.md", "paper_suite.png"


@dataclass(frozen=True)
class PaperRow:
    """One row of the reference paper's table (dev-set numbers as published)."""

    description: str
    overall: float
    sst_acc: float
    qqp_acc: float
    sts_pearson: float
    batch_size: int
    optimizer: str  # as in our presets: adamw (ours), torch_adamw, lion

    def metrics(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in METRICS}

    def recomputed_overall(self) -> float:
        """The overall score recomputed from the three published parts (the paper rounds the
        parts, so this can differ from its overall in the third decimal)."""
        return overall_of(self.sst_acc, self.qqp_acc, self.sts_pearson)


PAPER: dict[int, PaperRow] = {
    1: PaperRow("Sequential, frozen", 0.465, 0.292, 0.624, -0.043, 40, "adamw"),
    2: PaperRow("Sequential, fine-tuned", 0.534, 0.459, 0.625, 0.037, 8, "adamw"),
    3: PaperRow("Parallel, frozen", 0.548, 0.351, 0.625, 0.337, 40, "adamw"),
    4: PaperRow("Parallel, fine-tuned", 0.602, 0.500, 0.625, 0.363, 8, "adamw"),
    5: PaperRow("Exp 4 + another course project's three-head architecture", 0.478, 0.190, 0.625, 0.236, 40, "adamw"),
    6: PaperRow("Exp 4 + custom SST and QQP heads", 0.684, 0.515, 0.841, 0.393, 40, "adamw"),
    7: PaperRow("Exp 6 + cosine STS head and AdamW", 0.731, 0.502, 0.865, 0.643, 8, "torch_adamw"),
    8: PaperRow("Exp 7 with lr 2e-5", 0.729, 0.491, 0.858, 0.672, 8, "torch_adamw"),
    9: PaperRow("Exp 7 + additional STS layers", 0.668, 0.488, 0.636, 0.761, 35, "torch_adamw"),
    10: PaperRow("Exp 6 with torch AdamW", 0.699, 0.526, 0.841, 0.457, 8, "torch_adamw"),
    11: PaperRow("Exp 6 with Lion", 0.643, 0.477, 0.778, 0.350, 64, "lion"),
    12: PaperRow("Exp 9 with Lion", 0.658, 0.488, 0.722, 0.525, 64, "lion"),
    13: PaperRow("Exp 7 with weighted loss", 0.714, 0.513, 0.862, 0.530, 8, "torch_adamw"),
    14: PaperRow("Exp 7 + surgical fine-tuning from exp 7's checkpoint", 0.725, 0.481, 0.862, 0.660, 8, "torch_adamw"),
}

# (title, from-row, to-row, what changes): the comparisons of the generated analysis
COMPARISONS: list[tuple[str, str, int, int]] = [
    ("Sequential vs parallel", "sequential -> parallel, frozen encoder", 1, 3),
    ("Sequential vs parallel", "sequential -> parallel, fine-tuned", 2, 4),
    ("Frozen vs fine-tuned", "frozen -> fine-tuned, sequential", 1, 2),
    ("Frozen vs fine-tuned", "frozen -> fine-tuned, parallel", 3, 4),
    ("Head choices", "baseline heads -> the other project's three heads (conv1d SST, MLP QQP, compress-expand STS)", 4, 5),
    ("Head choices", "baseline heads -> mean-pooled SST head and GELU |u-v| QQP head", 4, 6),
    ("Head choices", "baseline STS head -> cosine STS head (with torch AdamW, batch 8)", 6, 7),
    ("Head choices", "cosine STS head -> with additional STS layers (batch 35)", 7, 9),
    ("AdamW vs Lion", "our AdamW -> torch AdamW (exp 6 heads, batch 40 -> 8)", 6, 10),
    ("AdamW vs Lion", "our AdamW -> Lion (exp 6 heads, batch 40 -> 64)", 6, 11),
    ("AdamW vs Lion", "torch AdamW -> Lion (exp 9 heads, batch 35 -> 64)", 9, 12),
    ("Learning rate and loss weights", "lr 1e-5 -> 2e-5", 7, 8),
    ("Learning rate and loss weights", "equal -> weighted task losses", 7, 13),
    ("Surgical fine-tuning", "exp 7 -> exp 7 continued with the lower layers frozen", 7, 14),
]
TIE = 0.005  # |difference| below this counts as no clear difference


def overall_of(sst: float | None, qqp: float | None, sts_r: float | None) -> float | None:
    """(acc_SST + acc_QQP + (r_STS + 1) / 2) / 3; None if a part is missing."""
    if sst is None or qqp is None or sts_r is None:
        return None
    return (sst + qqp + (sts_r + 1.0) / 2.0) / 3.0


# ----------------------------------------------------------------------------------------------
# presets


def discover(preset_dir: str | Path) -> dict[int, Path]:
    """The presets ``expNN-*.yaml`` of a folder, by row number.

    Raises:
        ConfigError: no such folder, no preset, two presets for one row, or a row the paper lacks.
    """
    folder = Path(preset_dir)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such preset folder")
    found: dict[int, Path] = {}
    for path in sorted(folder.glob("exp*.yaml")):
        m = re.match(r"exp(\d+)\b", path.stem)
        if not m:
            continue
        exp = int(m.group(1))
        if exp not in PAPER:
            raise ConfigError(f"{path}: the paper's table has no row {exp} (rows 1..{max(PAPER)})")
        if exp in found:
            raise ConfigError(f"{path} and {found[exp]} are both presets of row {exp}")
        found[exp] = path
    if not found:
        raise ConfigError(f"{folder}: no presets (files named expNN-<name>.yaml)")
    return found


def parse_only(text: str | None) -> list[int] | None:
    """``"1,7,14"`` -> [1, 7, 14]; None -> None (every row). Raises ConfigError."""
    if text is None:
        return None
    try:
        rows = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise ConfigError(f"--only {text!r}: expected row numbers like 1,7,14") from None
    if not rows:
        raise ConfigError("--only: no rows given")
    return rows


def _dependency(cfg: Config, stems: dict[str, int]) -> int | None:
    """The row whose run this config initialises from (``train.init_from`` ending in a preset's name)."""
    if not cfg.train.init_from:
        return None
    return stems.get(Path(cfg.train.init_from).name)


def _order(rows: list[int], deps: dict[int, int | None]) -> list[int]:
    """Rows with each dependency first (stable otherwise). Raises ConfigError on a cycle."""
    out: list[int] = []
    visiting: set[int] = set()

    def visit(r: int) -> None:
        if r in out:
            return
        if r in visiting:
            raise ConfigError(f"presets initialise from each other in a cycle (row {r})")
        visiting.add(r)
        d = deps.get(r)
        if d is not None and d in rows:
            visit(d)
        visiting.discard(r)
        out.append(r)

    for r in rows:
        visit(r)
    return out


def _has_weights(run_dir: Path) -> bool:
    if (run_dir / "checkpoints" / "best" / "model.safetensors").is_file():
        return True
    try:
        return last_checkpoint(run_dir) is not None
    except Exception:
        return False


# ----------------------------------------------------------------------------------------------
# running


def _batch_size(cfg: Config) -> int:
    sizes = {t.batch_size for t in cfg.tasks.values()}
    return sizes.pop() if len(sizes) == 1 else max(sizes)


def _encoder_info(run_dir: Path, cfg: Config) -> dict:
    info = {"encoder": cfg.model.encoder}
    path = run_dir / "encoder" / "config.json"
    if path.is_file():
        c = json.loads(path.read_text())
        info["encoder_layers"] = c.get("num_hidden_layers")
        info["encoder_hidden"] = c.get("hidden_size")
    return info


def make_record(exp: int, name: str, cfg: Config, summary: dict, wall_s: float, run_dir: Path, overrides: list[str]) -> dict:
    """One row of ``paper_suite.json``."""
    cfg = resolve(cfg)
    paper = PAPER[exp]
    rec = {
        "exp": exp,
        "name": name,
        "description": paper.description,
        "dev": {k: summary["dev"].get(k) for k in METRICS},
        "paper": paper.metrics(),
        "paper_overall_recomputed": round(paper.recomputed_overall(), 4),
        "epochs": cfg.train.epochs,
        "epochs_run": summary.get("epochs_run"),
        "best_epoch": summary.get("best_epoch"),
        "batch_size": _batch_size(cfg),
        "batch_sizes": {t: c.batch_size for t, c in cfg.tasks.items()},
        "optimizer": cfg.optim.name,
        "lr": cfg.optim.lr,
        "mode": cfg.train.mode,
        "routine": cfg.train.routine,
        "heads": {t: c.head for t, c in cfg.tasks.items()},
        "wall_s": float(wall_s),
        "run_dir": str(run_dir),
        "overrides": list(overrides),
    }
    rec.update(_encoder_info(run_dir, cfg))
    return rec


def load_results(path: Path) -> dict[int, dict]:
    """The rows already in ``paper_suite.json`` (empty if there is none).

    Raises:
        ConfigError: the file exists but is not a list of row records.
    """
    if not path.is_file():
        return {}
    try:
        rows = json.loads(path.read_text())
        return {int(r["exp"]): r for r in rows}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise ConfigError(f"{path}: not a suite result file (a JSON list of rows with 'exp'); move it away") from None


NOTES_NAME = "paper_suite_notes.md"  # hand-written discussion, kept across regenerations


def write_reports(results: dict[int, dict], report_dir: Path) -> None:
    """Write the JSON (rows sorted by exp), the Markdown table and the PNG chart. A
    ``paper_suite_notes.md`` beside them (written by hand) is included as the discussion."""
    rows = [results[k] for k in sorted(results)]
    atomic_write_json(report_dir / JSON_NAME, rows)
    notes_path = report_dir / NOTES_NAME
    notes = notes_path.read_text() if notes_path.is_file() else None
    atomic_write_text(report_dir / MD_NAME, render_markdown(rows, notes))
    plot_suite(rows, report_dir / PNG_NAME)


def run_suite(
    preset_dir: str | Path,
    *,
    data_dir: str | None = None,
    runs_root: str | Path = "runs/paper",
    report_dir: str | Path = "reports",
    only: list[int] | None = None,
    overrides: list[str] = (),
    rerun: bool = False,
    progress: bool = True,
) -> list[dict]:
    """Run the presets of ``preset_dir`` (all rows, or ``only`` these) and write the reports.

    Rows already in ``<report_dir>/paper_suite.json`` are skipped (``rerun``: train them again);
    ``overrides`` (``--train.epochs=3``, ``--model.encoder=PATH``) apply to every row. A row that
    initialises from another row's run (row 14 from row 7) runs after it; that row is trained
    first if its run folder has no weights. Returns every row of the JSON, sorted.

    Raises:
        ConfigError (and the errors of :func:`minbert.training.trainer.train`).
    """
    presets = discover(preset_dir)
    runs_root, report_dir = Path(runs_root), Path(report_dir)
    overrides = list(overrides)
    cfgs = {exp: load_config(path, overrides) for exp, path in presets.items()}  # fail before training
    stems = {path.stem: exp for exp, path in presets.items()}
    deps = {exp: _dependency(cfg, stems) for exp, cfg in cfgs.items()}
    rows = sorted(presets) if only is None else list(dict.fromkeys(only))
    missing = [r for r in rows if r not in presets]
    if missing:
        raise ConfigError(f"--only: no preset for row(s) {missing} in {preset_dir} (have {sorted(presets)})")

    results = load_results(report_dir / JSON_NAME)
    todo = [r for r in rows if rerun or r not in results]
    for r in rows:
        if r not in todo:
            log.info("row %d: results already in %s; skipped", r, report_dir / JSON_NAME)
    # a dependency without weights is trained first (even if its results are in the JSON)
    changed = True
    while changed:
        changed = False
        for r in list(todo):
            d = deps[r]
            if d is not None and d not in todo and not _has_weights(runs_root / presets[d].stem):
                log.info("row %d initialises from row %d, whose run folder has no weights: running row %d first", r, d, d)
                todo.append(d)
                changed = True
    order = _order(todo, deps)

    for exp in order:
        path = presets[exp]
        cfg = cfgs[exp]
        run_dir = runs_root / path.stem
        d = deps[exp]
        if d is not None:
            cfg = replace(cfg, train=replace(cfg.train, init_from=str(runs_root / presets[d].stem)))
        paper = PAPER[exp]
        log.info("row %d (%s): %s -> %s", exp, paper.description, path, run_dir)
        summary, wall_s = train_row(cfg, run_dir, data_dir, progress, rerun)
        results[exp] = make_record(exp, path.stem, cfg, summary, wall_s, run_dir, overrides)
        write_reports(results, report_dir)
        log.info("row %d done: %s", exp, {k: results[exp]["dev"][k] for k in METRICS})
    write_reports(results, report_dir)
    return [results[k] for k in sorted(results)]


# ----------------------------------------------------------------------------------------------
# reports


def _f(v, nd: int = 3, sign: bool = False) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if sign and round(v, nd) == 0:
        return f"{0:.{nd}f}"  # not "-0.000"
    return f"{v:+.{nd}f}" if sign else f"{v:.{nd}f}"


def _encoder_text(rows: list[dict]) -> str:
    names = []
    for r in rows:
        enc = r.get("encoder", "default")
        label = "all-MiniLM-L6-v2 (the packaged default)" if enc == "default" else f"`{enc}`"
        if r.get("encoder_layers"):
            label += f", {r['encoder_layers']} layers, hidden {r['encoder_hidden']}"
        if label not in names:
            names.append(label)
    return "; ".join(names) if names else "all-MiniLM-L6-v2"


def _spearman(x: list[float], y: list[float]) -> float | None:
    import numpy as np
    from scipy import stats

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(stats.spearmanr(x, y)[0])


def _verdict(ours: float | None, paper: float | None) -> str:
    if ours is None or paper is None:
        return "n/a"
    if abs(ours) < TIE and abs(paper) < TIE:
        return "no clear difference in either"
    if abs(ours) < TIE:
        return "no clear difference here, the paper moved"
    if abs(paper) < TIE:
        return "the paper saw no clear difference"
    return "same direction as the paper" if (ours > 0) == (paper > 0) else "opposite to the paper"


def _delta(rows: dict[int, dict], a: int, b: int, key: str, source: str) -> float | None:
    va, vb = rows[a][source].get(key), rows[b][source].get(key)
    return None if va is None or vb is None else vb - va


def analysis(rows: list[dict]) -> list[str]:
    """Markdown lines: each comparison of :data:`COMPARISONS` whose two rows have results,
    computed from the numbers (ours and the paper's), then an overall comparison."""
    by = {r["exp"]: r for r in rows}
    lines: list[str] = []
    section = None
    for title, what, a, b in COMPARISONS:
        if a not in by or b not in by:
            continue
        if title != section:
            lines += ["", f"### {title}", ""]
            section = title
        ours = {k: _delta(by, a, b, k, "dev") for k in METRICS}
        paper = {k: _delta(by, a, b, k, "paper") for k in METRICS}
        parts = ", ".join(f"{LABELS[k]} {_f(ours[k], sign=True)}" for k in METRICS[:3])
        pparts = ", ".join(f"{LABELS[k]} {_f(paper[k], sign=True)}" for k in METRICS[:3])
        lines.append(
            f"- Exp {a} → {b} ({what}): overall {_f(by[a]['dev']['overall'])} → {_f(by[b]['dev']['overall'])}, "
            f"Δ {_f(ours['overall'], sign=True)} ({parts}); paper Δ {_f(paper['overall'], sign=True)} ({pparts}): "
            f"{_verdict(ours['overall'], paper['overall'])}."
        )
        # the metric that moved most, ours
        moved = [k for k in METRICS[:3] if ours[k] is not None]
        if moved:
            k = max(moved, key=lambda m: abs(ours[m]))
            if abs(ours[k]) >= TIE:
                lines[-1] += f" Largest change here: {LABELS[k]} {_f(ours[k], sign=True)} (paper {_f(paper[k], sign=True)})."
    if not lines:
        lines = ["", "No pair of rows compared in the paper has results yet."]
    done = [r for r in rows if r["dev"].get("overall") is not None]
    if done:
        best = max(done, key=lambda r: r["dev"]["overall"])
        pbest = max(done, key=lambda r: r["paper"]["overall"])
        gaps = [r["dev"]["overall"] - r["paper"]["overall"] for r in done]
        lines += ["", "### Overall", ""]
        lines.append(
            f"- Best row here: exp {best['exp']} ({best['description']}), overall {_f(best['dev']['overall'])}; "
            f"the paper's best of these rows: exp {pbest['exp']}, {_f(pbest['paper']['overall'])}."
        )
        lines.append(
            f"- Ours minus paper, overall: mean {_f(sum(gaps) / len(gaps), sign=True)} over {len(done)} row(s) "
            f"(from {_f(min(gaps), sign=True)} to {_f(max(gaps), sign=True)})."
        )
        for k in METRICS[:3]:
            g = [r["dev"][k] - r["paper"][k] for r in done if r["dev"].get(k) is not None]
            if g:
                lines.append(f"- {LABELS[k]}: ours minus paper, mean {_f(sum(g) / len(g), sign=True)}.")
        rho = _spearman([r["dev"]["overall"] for r in done], [r["paper"]["overall"] for r in done])
        if rho is not None:
            lines.append(f"- Rank agreement of the rows' overall scores with the paper's: Spearman ρ = {rho:.2f} over {len(done)} rows.")
    return lines


def render_markdown(rows: list[dict], notes: str | None = None) -> str:
    """``paper_suite.md``: every row of the paper's table, ours beside the paper's; ``notes``
    (Markdown) is the discussion placed before the generated row-by-row analysis."""
    by = {r["exp"]: r for r in rows}
    lines = [
        "# The reference paper's experiment table, reproduced",
        "",
        "Generated by `minbert suite` (`src/minbert/suite.py`) from `paper_suite.json`; presets in `configs/paper/`.",
        "",
        "**Not the paper's setup.** The paper fine-tuned bert-base (12 layers, hidden 768, 110M parameters) "
        "and trained QQP on the full 141k-pair training set. These runs use "
        f"{_encoder_text(rows)} and the course's 13.5k-pair QQP subset (`quora-train.csv`); "
        "SST-5 and STS-B are the same splits. All numbers are dev-set numbers; ours are from the best epoch "
        "by overall dev score. overall = (SST acc + QQP acc + (STS r + 1) / 2) / 3. The paper's overall is given "
        "as published and as recomputed from its three (rounded) parts.",
    ]
    ovr = sorted({o for r in rows for o in r.get("overrides", [])})
    if ovr:
        lines += ["", "Command-line overrides (every row run with them): " + " ".join(f"`{o}`" for o in ovr) + "."]
    lines += [
        "",
        "| # | experiment | optimizer | lr | batch | epochs | overall | SST acc | QQP acc | STS r "
        "| paper overall (published / recomputed) | paper SST | paper QQP | paper STS | Δ overall | wall |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for exp in sorted(PAPER):
        p = PAPER[exp]
        paper = f"{p.overall:.3f} / {p.recomputed_overall():.4f} | {p.sst_acc:.3f} | {p.qqp_acc:.3f} | {p.sts_pearson:.3f}"
        r = by.get(exp)
        if r is None:
            lines.append(f"| {exp} | {p.description} | {p.optimizer} | | {p.batch_size} | | not run | | | | {paper} | | |")
            continue
        d = r["dev"]
        delta = None if d.get("overall") is None else d["overall"] - p.overall
        epochs = f"{r['epochs']}" + (f" ({r['epochs_run']} run)" if r.get("epochs_run") not in (None, r["epochs"]) else "")
        lines.append(
            f"| {exp} | {p.description} | {r['optimizer']} | {r['lr']:.0e} | {r['batch_size']} | {epochs} | "
            f"**{_f(d.get('overall'))}** | {_f(d.get('sst_acc'))} | {_f(d.get('qqp_acc'))} | {_f(d.get('sts_pearson'))} | "
            f"{paper} | {_f(delta, sign=True)} | {_fmt_wall(r.get('wall_s'))} |"
        )
    total = sum(r.get("wall_s") or 0.0 for r in rows)
    lines += ["", f"{len(rows)} of {len(PAPER)} rows run; total wall time {_fmt_wall(total)}.", "", "![ours vs the paper](paper_suite.png)"]
    if notes:
        lines += ["", "## Discussion", "", notes.strip()]
    lines += ["", "## Row-by-row analysis", "", "_Generated from the numbers above (differences between rows, ours and the paper's); "
              f"|Δ| < {TIE} counts as no clear difference._"]
    lines += analysis(rows)
    return "\n".join(lines) + "\n"


def _fmt_wall(s) -> str:
    if s is None:
        return "n/a"
    s = float(s)
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.2f} h"


def plot_suite(rows: list[dict], path: Path) -> None:
    """Grouped bars per metric (overall, SST acc, QQP acc, STS r): ours and the paper's, per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    exps = sorted(PAPER)
    by = {r["exp"]: r for r in rows}
    fig, axes = plt.subplots(2, 2, figsize=(14, 8), sharex=True)
    x = np.arange(len(exps))
    w = 0.4
    for ax, key in zip(axes.flat, ("overall", "sst_acc", "qqp_acc", "sts_pearson")):
        paper = [getattr(PAPER[e], key) for e in exps]
        ours = [by[e]["dev"].get(key) if e in by else None for e in exps]
        ax.bar(x + w / 2, paper, w, label="paper (bert-base, full QQP)", color="#bbbbbb")
        xs = [xi - w / 2 for xi, v in zip(x, ours) if v is not None]
        ax.bar(xs, [v for v in ours if v is not None], w, label="ours", color="#1f77b4")
        ax.set_title(LABELS[key])
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xticks(x, [str(e) for e in exps])
        ax.grid(axis="y", alpha=0.3)
    axes[1, 0].set_xlabel("experiment (row of the paper's table)")
    axes[1, 1].set_xlabel("experiment (row of the paper's table)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=8)
    fig.suptitle(f"The paper's table, ours next to the paper's (dev); ours: {_encoder_text(rows).replace('`', '')}", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    tmp.replace(path)
