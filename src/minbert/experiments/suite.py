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

The paper's published numbers and the rendering of the Markdown and PNG reports are in
:mod:`minbert.experiments.suite_report`.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from ..config import Config, load_config, replace, resolve
from ..config_compile import compile_options
from ..errors import ConfigError
from ..io import atomic_write_json, atomic_write_text
from ..runs import last_checkpoint
from .rows import METRICS, train_row
from .suite_report import PAPER, plot_suite, render_markdown

log = logging.getLogger(__name__)

JSON_NAME, MD_NAME, PNG_NAME = "paper_suite.json", "paper_suite.md", "paper_suite.png"


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


def make_record(
    exp: int, name: str, cfg: Config, summary: dict, wall_s: float, run_dir: Path, overrides: list[str]
) -> dict:
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
    for exp, cfg in cfgs.items():
        compile_options(cfg.train, str(presets[exp]))
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
                log.info(
                    "row %d initialises from row %d, whose run folder has no weights: running row %d first", r, d, d
                )
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

