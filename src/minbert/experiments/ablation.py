"""Ablation tables (``minbert ablate``): a chain of configs, each one change on top of its parent.

An ablation file (YAML) names a base preset, overrides common to every row, and the rows::

    base: ../paper/exp07-cosine-sts-torch-adamw.yaml   # relative to the ablation file
    common: ["train.epochs=5"]
    rows:
      - {name: exp07, change: "the paper's best preset", overrides: []}
      - {name: cross, parent: exp07, change: "cross-encoder QQP and STS", source: "...",
         overrides: ["tasks.qqp.pair_input=cross", ...]}
    final: {row: auto, seeds: [0, 1, 2], preset: configs/best.yaml}
    # row auto: the row with the best dev overall; preset (optional): the named preset file
    # that holds the final row's config, reported as the best configuration; all keys optional

A row's config is the base, then ``common``, then the overrides of its ancestors from the root
down, then its own. Rows are independent runs (``--only`` splits them over machines or GPUs);
a finished run of the same config is read back, not retrained. ``--final`` trains the final
row once per seed. The report (``beyond.json`` / ``beyond.md`` by default) gives each row's dev
SST / QQP / STS / overall, its difference from its parent, and the final row's mean and
standard deviation over seeds; ``NAME-best.yaml`` beside it is the final row's resolved config
and ``NAME.png`` a bar chart of each row's difference from its parent (:func:`plot_ablation`).
``final.preset`` is a label for the report (the path, as users type it, of the preset that holds
the final row's config); it is not read.
Rows run on other machines merge through the report: a row with no finished run under the runs
root keeps its record from the report already in the report folder, when its config is the same
(the same base preset, common overrides and chain of parents and overrides; see
:mod:`minbert.experiments.ablation_merge`); likewise the final row's seeds.
The JSON has ``rows[i].{name, preset, seeds, dev}`` (``preset``: ``FILE#row``) and
``best.{preset, seeds, dev_mean, dev_std}``; ``NAME_notes.md`` in the report folder, written by
hand, is included in the markdown as the discussion.
"""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from ..config import Config, dump_yaml, load_config, resolve
from ..config_compile import compile_options
from ..config_values import safe_load_unique
from ..errors import ConfigError
from ..io import atomic_write_json, atomic_write_png, atomic_write_text
from .ablation_merge import base_digest, is_number, kept_final, kept_row, previous_report
from .rows import METRICS, train_row

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    name: str
    change: str
    overrides: tuple[str, ...] = ()
    parent: str | None = None
    source: str = ""


@dataclass(frozen=True)
class Ablation:
    path: Path
    base: Path
    common: tuple[str, ...]
    rows: dict[str, Row] = field(default_factory=dict)
    final_row: str = "auto"
    seeds: tuple[int, ...] = (0, 1, 2)
    final_preset: str | None = None  # the preset file that holds the final row's config

    def chain(self, name: str) -> list[Row]:
        """The row and its ancestors, root first."""
        out, seen = [], set()
        while name is not None:
            if name in seen:
                raise ConfigError(f"{self.path}: rows form a cycle at {name!r}")
            seen.add(name)
            out.append(self.rows[name])
            name = self.rows[name].parent
        return out[::-1]

    def config(self, name: str, extra: list[str] = (), seed: int | None = None) -> Config:
        overrides = [*self.common, *(o for r in self.chain(name) for o in r.overrides), *extra]
        if seed is not None:
            overrides.append(f"train.seed={seed}")
        return load_config(self.base, overrides)


def load_ablation(path: str | Path) -> Ablation:
    """Read and check an ablation file.

    Raises:
        ConfigError: unreadable YAML, a missing base, a duplicate or unknown row/parent, or a
            row whose config does not load (unknown key, bad value).
    """
    path = Path(path)
    try:
        raw = safe_load_unique(path.read_text())  # a key given twice raises
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: {e}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("rows"), list) or "base" not in raw:
        raise ConfigError(f"{path}: needs 'base' and a list 'rows'")
    unknown = set(raw) - {"base", "common", "rows", "final"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)}")
    base = (path.parent / raw["base"]).resolve()
    if not base.is_file():
        raise ConfigError(f"{path}: base preset {base} not found")
    def str_list(value: object, where: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{path}: {where}: expected a list of overrides like [optim.lr=2e-5], got {value!r}")
        return tuple(value)

    rows: dict[str, Row] = {}
    for i, r in enumerate(raw["rows"]):
        where = f"row {i + 1}"
        if not isinstance(r, dict):
            raise ConfigError(
                f"{path}: {where}: expected a mapping with 'name' (and change, parent, overrides, source), got {r!r}"
            )
        bad = sorted(map(str, set(r) - {"name", "change", "overrides", "parent", "source"}))
        if bad:
            raise ConfigError(
                f"{path}: {where}: unknown key(s) {bad} (allowed: name, change, parent, overrides, source)"
            )
        if not isinstance(r.get("name"), str) or not r["name"]:
            raise ConfigError(f"{path}: {where}: needs a 'name' (a string)")
        name = r["name"]
        if name in (".", "..") or any(c in name for c in "/\\\0"):
            raise ConfigError(f"{path}: {where}: name {name!r} must be a folder name (the row's run folder)")
        if name in rows:
            raise ConfigError(f"{path}: row {name!r} is defined twice")
        parent = r.get("parent")
        if parent is not None and (not isinstance(parent, str) or parent not in rows):
            raise ConfigError(f"{path}: row {name!r}: parent {parent!r} must be an earlier row")
        overrides = str_list(r.get("overrides"), f"row {name!r}: overrides")
        rows[name] = Row(name, str(r.get("change", "")), overrides, parent, str(r.get("source", "")))
    final = raw.get("final")
    final = {} if final is None else final
    if not isinstance(final, dict):
        raise ConfigError(f"{path}: final: expected a mapping (keys row, seeds, preset; each optional), got {final!r}")
    unknown_final = sorted(set(final) - {"row", "seeds", "preset"})
    if unknown_final:
        raise ConfigError(f"{path}: final: unknown key(s) {unknown_final} (known: row, seeds, preset)")
    if "row" in final and not isinstance(final["row"], str):
        raise ConfigError(f"{path}: final.row: expected a row name or 'auto', got {final['row']!r}")
    seeds = final.get("seeds", [0, 1, 2])
    if (
        not isinstance(seeds, list) or not seeds
        or not all(isinstance(x, int) and not isinstance(x, bool) and x >= 0 for x in seeds)
        or len(set(seeds)) != len(seeds)
    ):
        raise ConfigError(f"{path}: final.seeds: expected a list of distinct integers >= 0, got {seeds!r}")
    common = str_list(raw.get("common"), "common")
    preset = final.get("preset")
    if preset is not None and (not isinstance(preset, str) or not preset.strip()):
        raise ConfigError(f"{path}: final.preset: expected a file path, got {preset!r}")
    ab = Ablation(path, base, common, rows, str(final.get("row", "auto")), tuple(seeds), preset)
    if ab.final_row != "auto" and ab.final_row not in rows:
        raise ConfigError(f"{path}: final row {ab.final_row!r} is not a row")
    for name in rows:
        try:
            ab.config(name)  # every row's config must load
        except ConfigError as e:
            raise ConfigError(f"{path}: row {name!r}: {e}") from None
    return ab


def _summary(run_dir: Path) -> dict | None:
    p = run_dir / "summary.json"
    return json.loads(p.read_text()) if p.is_file() else None


def final_row(ab: Ablation, runs_root: Path) -> str:
    """The named final row, or (``auto``) the finished row with the best dev overall."""
    if ab.final_row != "auto":
        return ab.final_row
    scored = [
        (s["dev"]["overall"], n) for n in ab.rows if (s := _summary(runs_root / n)) and s["dev"]["overall"] is not None
    ]
    if not scored:
        raise ConfigError("final row 'auto': no finished row to choose from; run the rows first")
    return max(scored)[1]


def run_ablation(
    path: str | Path,
    runs_root: str | Path,
    report_dir: str | Path,
    data_dir: str | Path | None = None,
    only: list[str] | None = None,
    final: bool = False,
    extra: list[str] = (),
    progress: bool = False,
    report_name: str = "beyond",
    seeds: list[int] | None = None,
    report_only: bool = False,
) -> dict:
    """Train the rows (``only``: some of them; ``final``: the final row once per seed; with
    ``report_only`` nothing), then write the report from every finished run under
    ``runs_root``. Returns the report dict.

    Raises:
        ConfigError: a bad ablation file; ``final`` with ``only``; ``seeds`` without ``final``;
            ``report_only`` with either, or with no finished run under ``runs_root``; an
            ``only`` row that is not in the file; ``report_dir`` is a file.
    """
    if report_only and (final or only):
        raise ConfigError("--report-only trains nothing; do not combine it with --final or --only")
    if final and only:
        raise ConfigError("--final trains the final row; do not combine it with --only")
    if seeds is not None and not final:
        raise ConfigError("--seeds goes with --final (the seeds of the final row)")
    ab = load_ablation(path)
    runs_root, report_dir = Path(runs_root), Path(report_dir)
    if only:
        missing = [n for n in only if n not in ab.rows]
        if missing:
            raise ConfigError(f"--only: no row(s) {missing} in {ab.path} (rows: {list(ab.rows)})")
    if final:
        name = final_row(ab, runs_root)
        compile_options(ab.config(name, list(extra)).train, f"{ab.path}: row {name!r}")
        for seed in seeds if seeds is not None else ab.seeds:
            log.info("final row %s, seed %d", name, seed)
            train_row(ab.config(name, list(extra), seed), runs_root / f"final-seed{seed}", data_dir, progress, False)
    elif not report_only:
        for name in only or list(ab.rows):  # inductor settings this torch does not take fail before any training
            compile_options(ab.config(name, list(extra)).train, f"{ab.path}: row {name!r}")
        for name in only or list(ab.rows):
            log.info("row %s: %s", name, ab.rows[name].change)
            train_row(ab.config(name, list(extra)), runs_root / name, data_dir, progress, False)
    report = build_report(ab, runs_root, previous_report(report_dir / f"{report_name}.json"))
    if report_only and not any(r["dev"] for r in report["rows"]) and report["final"] is None:
        raise ConfigError(f"--report-only: no finished runs of {ab.path.name}'s rows under {runs_root}")
    if report_dir.exists() and not report_dir.is_dir():
        raise ConfigError(f"--report-dir {report_dir} is a file, not a folder")
    report_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(report_dir / f"{report_name}.json", report)
    notes = report_dir / f"{report_name}_notes.md"
    markdown = render_markdown(report, notes.read_text() if notes.is_file() else None)
    atomic_write_text(report_dir / f"{report_name}.md", markdown)
    try:
        atomic_write_png(report_dir / f"{report_name}.png", plot_ablation(report))
    except Exception as e:  # a chart is never worth the report
        log.warning("%s.png not drawn: %s: %s", report_name, type(e).__name__, " ".join(str(e).split()))
    if report["final"] is not None:
        best_cfg = resolve(ab.config(report["final"]["row"], list(extra)))
        atomic_write_text(report_dir / f"{report_name}-best.yaml", dump_yaml(best_cfg))
    return report


def _row_record(ab: Ablation, name: str, s: dict | None) -> dict:
    """Row ``name``'s record: what the ablation file says of it, and the numbers of its run's
    ``summary.json`` ``s`` (None: not run)."""
    row = ab.rows[name]
    rec = {
        "name": name, "preset": f"{_shown(ab.path)}#{name}", "seeds": 1 if s else 0,
        "parent": row.parent, "change": row.change, "source": row.source, "overrides": list(row.overrides),
        "dev": {k: s["dev"].get(k) for k in METRICS} if s else None,
        "best_epoch": s.get("best_epoch") if s else None,
        "steps": s.get("steps") if s else None,
        "epochs": s["config"]["train"]["epochs"] if s else None,
        "wall_s": s.get("wall_s") if s else None,
    }
    if s and s.get("epochs_run"):
        rec["steps_per_epoch"] = round(s["steps"] / s["epochs_run"])
    return rec


def _final(ab: Ablation, runs_root: Path, previous: dict, digest: str) -> dict | None:
    """The final row's record: its seeds' runs under ``runs_root``, else the earlier report's
    (:func:`~minbert.experiments.ablation_merge.kept_final`); None when neither has one."""
    per_seed = [(int(d.name.removeprefix("final-seed")), s) for d in sorted(runs_root.glob("final-seed*"))
                if (s := _summary(d))]
    name = final_row(ab, runs_root) if per_seed else None
    if not per_seed and (kept := kept_final(previous, ab, digest)) is not None:
        name, per_seed = kept
    if not per_seed:
        return None
    final = {"row": name, "seeds": [sd for sd, _ in per_seed], "per_seed": [s["dev"] for _, s in per_seed]}
    for k in METRICS:
        vals = [s["dev"][k] for _, s in per_seed if s["dev"].get(k) is not None]
        final[f"{k}_mean"] = statistics.fmean(vals) if vals else None
        final[f"{k}_std"] = statistics.stdev(vals) if len(vals) > 1 else None
    return final


def build_report(ab: Ablation, runs_root: Path, previous: dict | None = None) -> dict:
    """The report dict from the finished runs under ``runs_root``; rows and final seeds with no
    run there keep their records from ``previous`` (an earlier report) when their config is the
    same (:mod:`minbert.experiments.ablation_merge`: never one whose config changed; an earlier
    report of any shape or types is read without raising)."""
    previous = previous if isinstance(previous, dict) else {}
    digest = base_digest(ab.base)
    rows = []
    for name in ab.rows:
        s = _summary(runs_root / name)
        rec = _row_record(ab, name, s)
        if s is None and (kept := kept_row(previous, ab, name, digest)) is not None:
            rec = {k: v for k, v in {**rec, **kept}.items() if k != "steps_per_epoch" or v is not None}
        rows.append(rec)
    by = {r["name"]: r for r in rows}
    for r in rows:
        mine, theirs = (r["dev"] or {}).get("overall"), ((by.get(r["parent"]) or {}).get("dev") or {}).get("overall")
        r["delta_overall"] = round(mine - theirs, 4) if is_number(mine) and is_number(theirs) else None
    final = _final(ab, runs_root, previous, digest)
    best = None
    if final:
        best = {
            "preset": ab.final_preset or f"{_shown(ab.path)}#{final['row']}",
            "row": final["row"],
            "seeds": final["seeds"],
            "dev_mean": {k: final[f"{k}_mean"] for k in METRICS},
            "dev_std": {k: final[f"{k}_std"] for k in METRICS},
        }
    return {
        "ablation": str(ab.path.name), "base": ab.base.name, "base_sha256": digest, "common": list(ab.common),
        "rows": rows, "final": final, "best": best,
    }


def _shown(path: Path) -> str:
    """``path`` relative to the working directory when it is below it (how users name it)."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _f(v: float | None, nd: int = 3, sign: bool = False) -> str:
    if v is None:
        return "–"
    return f"{v:+.{nd}f}" if sign else f"{v:.{nd}f}"


def _cell(text: str) -> str:
    """``text`` safe inside a markdown table cell (a ``|`` would end the cell)."""
    return text.replace("|", "\\|")


def render_markdown(report: dict, notes: str | None = None) -> str:
    lines = [
        f"# Ablation: {report['ablation']} (base preset {report['base']}; every row: "
        f"{' '.join(report['common']) or 'as the preset'})",
        "",
        "Dev scores of one run per row (seed 0). Each row is its parent plus one change; "
        "Δ is the overall score minus the parent's.",
        "",
        "| row | parent | change | SST acc | QQP acc | STS r | overall | Δ | steps/epoch × epochs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        d = r["dev"] or {}
        spe = f"{r.get('steps_per_epoch', '–')} × {r['epochs']}" if r["dev"] else "not run"
        lines.append(
            f"| {r['name']} | {r['parent'] or ''} | {_cell(r['change'])} | {_f(d.get('sst_acc'))} | "
            f"{_f(d.get('qqp_acc'))} | {_f(d.get('sts_pearson'))} | {_f(d.get('overall'))} | "
            f"{_f(r['delta_overall'], sign=True)} | {spe} |"
        )
    f = report["final"]
    if f:
        lines += [
            "",
            f"## Final configuration: row `{f['row']}`, seeds {f['seeds']}",
            "",
            "| | SST acc | QQP acc | STS r | overall |",
            "|---|---|---|---|---|",
            "| mean ± std | " + " | ".join(f"{_f(f[k + '_mean'])} ± {_f(f[k + '_std'])}" for k in METRICS) + " |",
        ]
        for sd, dev in zip(f["seeds"], f["per_seed"], strict=True):
            lines.append(f"| seed {sd} | " + " | ".join(_f(dev.get(k)) for k in METRICS) + " |")
    if notes:
        lines += ["", "## Discussion", "", notes.strip()]
    sources = [r for r in report["rows"] if r["source"]]
    if sources:
        lines += ["", "## Sources", ""] + [f"- **{r['name']}**: {r['source']}" for r in sources]
    return "\n".join(lines) + "\n"


def plot_ablation(report: dict) -> Figure:
    """Horizontal bars of each row's Δ dev overall against its parent (``delta_overall`` of
    ``report["rows"]``; rows without one are left out), in the report's order from the top: gains
    in green, losses in red, the value beside each bar, the row names on the y axis. Each bar's
    gid is ``delta/<row name>``. Returns the figure (nothing global is touched)."""
    from matplotlib.figure import Figure

    rows = [(r["name"], float(r["delta_overall"])) for r in report["rows"] if r.get("delta_overall") is not None]
    fig = Figure(figsize=(8.0, 1.6 + 0.34 * max(len(rows), 2)), dpi=110)
    ax = fig.subplots()
    if rows:
        deltas = [d for _, d in rows]
        bars = ax.barh(range(len(rows)), deltas, height=0.7, color=["#2ca02c" if d >= 0 else "#d62728" for d in deltas])
        for bar, (name, _) in zip(bars, rows, strict=True):
            bar.set_gid(f"delta/{name}")
        ax.bar_label(bars, labels=[f"{d:+.3f}" for d in deltas], padding=3, fontsize=8)
        ax.set_yticks(range(len(rows)), [name for name, _ in rows])
        ax.invert_yaxis()  # the first row on top, as in the table
        reach = max(abs(d) for d in deltas) or 0.01
        ax.set_xlim(-1.3 * reach, 1.3 * reach)  # room for the values on both sides
    else:
        ax.set_yticks([])
        ax.text(0.5, 0.5, "no row and its parent have both run yet", transform=ax.transAxes, ha="center",
                va="center", color="0.4")
    ax.axvline(0.0, color="0.3", lw=0.8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_xlabel("Δ dev overall against the parent row (green: better, red: worse)")
    ax.set_title(f"Ablation {report.get('ablation', '')}: each row against its parent", fontsize=10)
    fig.tight_layout()
    return fig
