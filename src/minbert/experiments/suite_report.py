"""The reference paper's table (:data:`PAPER`) and the reports that set a suite's results beside it
(:mod:`minbert.experiments.suite` writes them): the Markdown table with its generated analysis
(:func:`render_markdown`) and the grouped bar chart (:func:`plot_suite`).

A result row is a record of ``paper_suite.json`` (:func:`minbert.experiments.suite.make_record`):
``exp``, ``description``, ``dev`` and ``paper`` (the metrics of :data:`~minbert.experiments.rows.METRICS`),
the settings, ``wall_s``, ``overrides`` and the encoder's size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from .rows import METRICS

LABELS = {"sst_acc": "SST acc", "qqp_acc": "QQP acc", "sts_pearson": "STS r", "overall": "overall"}



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
    ("Head choices",
     "baseline heads -> the other project's three heads (conv1d SST, MLP QQP, compress-expand STS)", 4, 5),
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


def _f(v: float | None, nd: int = 3, sign: bool = False) -> str:
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
                lines[-1] += (
                    f" Largest change here: {LABELS[k]} {_f(ours[k], sign=True)} (paper {_f(paper[k], sign=True)})."
                )
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
            lines.append(
                f"- Rank agreement of the rows' overall scores with the paper's: Spearman ρ = {rho:.2f} over "
                f"{len(done)} rows."
            )
    return lines


def render_markdown(rows: list[dict], notes: str | None = None) -> str:
    """``paper_suite.md``: every row of the paper's table, ours beside the paper's; ``notes``
    (Markdown) is the discussion placed before the generated row-by-row analysis."""
    by = {r["exp"]: r for r in rows}
    lines = [
        "# The reference paper's experiment table, reproduced",
        "",
        "Generated by `minbert suite` (`src/minbert/experiments/suite.py`) from `paper_suite.json`; "
        "presets in `configs/paper/`.",
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
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for exp in sorted(PAPER):
        p = PAPER[exp]
        paper = (
            f"{p.overall:.3f} / {p.recomputed_overall():.4f} | {p.sst_acc:.3f} | {p.qqp_acc:.3f} | {p.sts_pearson:.3f}"
        )
        r = by.get(exp)
        if r is None:
            lines.append(
                f"| {exp} | {p.description} | {p.optimizer} | | {p.batch_size} | | not run | | | | {paper} | | |"
            )
            continue
        d = r["dev"]
        delta = None if d.get("overall") is None else d["overall"] - p.overall
        ran = r.get("epochs_run")
        epochs = f"{r['epochs']}" + (f" ({ran} run)" if ran not in (None, r["epochs"]) else "")
        lines.append(
            f"| {exp} | {p.description} | {r['optimizer']} | {r['lr']:.0e} | {r['batch_size']} | {epochs} | "
            f"**{_f(d.get('overall'))}** | {_f(d.get('sst_acc'))} | {_f(d.get('qqp_acc'))} | "
            f"{_f(d.get('sts_pearson'))} | "
            f"{paper} | {_f(delta, sign=True)} | {_fmt_wall(r.get('wall_s'))} |"
        )
    total = sum(r.get("wall_s") or 0.0 for r in rows)
    lines += [
        "", f"{len(rows)} of {len(PAPER)} rows run; total wall time {_fmt_wall(total)}.", "",
        "![ours vs the paper](paper_suite.png)",
    ]
    if notes:
        lines += ["", "## Discussion", "", notes.strip()]
    lines += [
        "", "## Row-by-row analysis", "",
        "_Generated from the numbers above (differences between rows, ours and the paper's); "
        f"|Δ| < {TIE} counts as no clear difference._",
    ]
    lines += analysis(rows)
    return "\n".join(lines) + "\n"


def _fmt_wall(s: float | None) -> str:
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
    for ax, key in zip(axes.flat, ("overall", "sst_acc", "qqp_acc", "sts_pearson"), strict=True):
        paper = [getattr(PAPER[e], key) for e in exps]
        ours = [by[e]["dev"].get(key) if e in by else None for e in exps]
        ax.bar(x + w / 2, paper, w, label="paper (bert-base, full QQP)", color="#bbbbbb")
        xs = [xi - w / 2 for xi, v in zip(x, ours, strict=True) if v is not None]
        ax.bar(xs, [v for v in ours if v is not None], w, label="ours", color="#1f77b4")
        ax.set_title(LABELS[key])
        ax.axhline(0, color="black", linewidth=0.5)
        ax.set_xticks(x, [str(e) for e in exps])
        ax.grid(axis="y", alpha=0.3)
    axes[1, 0].set_xlabel("experiment (row of the paper's table)")
    axes[1, 1].set_xlabel("experiment (row of the paper's table)")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", fontsize=8)
    fig.suptitle(
        f"The paper's table, ours next to the paper's (dev); ours: {_encoder_text(rows).replace('`', '')}", fontsize=10
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    tmp.replace(path)
