"""Runs shared by the experiment commands (``minbert suite``, ``ablate``, ``tune``).

:func:`train_row` trains a config in a run folder, or reads back a finished run of the same
config there (resuming an unfinished one with a checkpoint); :data:`METRICS` are the dev numbers
the suite and ablation reports show.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from ..config import Config, from_dict, load_config, resolve, to_dict
from ..errors import ConfigError, DataChangedError
from ..runs import CONFIG_FILE, last_checkpoint, resolve_run_data_dir

log = logging.getLogger(__name__)

METRICS = ("sst_acc", "qqp_acc", "sts_pearson", "overall")


def jsonable(obj: Any) -> Any:
    """``obj`` as JSON reads it back (tuples become lists, keys strings): how stored configs compare."""
    return json.loads(json.dumps(obj))


def _comparable(d: dict) -> dict:
    """A plain config as runs compare it: without its ``data.dir`` (a run saves the folder it was
    given there, and the data itself is compared by its SHA-256 sums,
    :func:`minbert.runs.resolve_run_data_dir`), and without ``model.weight_grad_stream``, which
    changes where gradients are computed, not their values (a run saved before its default
    became ``auto`` holds ``false``)."""
    out = {**d, "data": {**d["data"], "dir": None}} if isinstance(d.get("data"), dict) else d
    model = d.get("model")
    if not isinstance(model, dict) or model.get("weight_grad_stream") not in (True, False, "auto", "on", "off"):
        return out  # a value no version wrote stays, and does not match
    return {**out, "model": {**model, "weight_grad_stream": None}}


def same_config(stored: Any, want: dict) -> bool:
    """Whether a finished run's stored config is ``want``, but for ``data.dir`` and
    ``model.weight_grad_stream`` (:func:`_comparable`). The stored one is
    read through the current schema first, so a run made before a config key existed counts as
    that key's default (new keys default to the old behaviour); a key the schema no longer has,
    or an unreadable config, is a mismatch."""
    if not isinstance(stored, dict):
        return False
    if _comparable(stored) == _comparable(want):
        return True
    try:
        return _comparable(jsonable(to_dict(resolve(from_dict(stored))))) == _comparable(want)
    except (ConfigError, TypeError, ValueError, KeyError):
        return False


def train_row(
    cfg: Config, run_dir: Path, data_dir: str | Path | None, progress: bool, rerun: bool
) -> tuple[dict, float]:
    """Train one config in ``run_dir`` (or read back / resume a run of the same config). Returns
    (summary, wall_s), wall_s in seconds."""
    from ..training.trainer import train

    want = jsonable(to_dict(resolve(cfg)))
    summary_path = run_dir / "summary.json"
    if not rerun and summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        if same_config(summary.get("config"), want):
            log.info("%s: a finished run of this config is there; reading its results", run_dir)
            return summary, float(summary.get("wall_s", 0.0))
    resume = False
    if not rerun and (run_dir / CONFIG_FILE).is_file():
        try:
            same = same_config(jsonable(to_dict(load_config(run_dir / CONFIG_FILE))), want)
            resume = same and last_checkpoint(run_dir) is not None
        except Exception as e:  # an unreadable leftover folder is retrained
            log.warning("%s: %s; retraining", run_dir, e)
    if resume:
        try:  # a checkpoint made on other data is not continued: the row is trained again
            resolve_run_data_dir(run_dir, cfg, data_dir)
        except DataChangedError as e:
            log.warning(
                "%s: data changed since the run was made (%s); training the row again", run_dir, ", ".join(e.files)
            )
            resume = False
    if (run_dir / CONFIG_FILE).is_file() and not resume:
        log.warning("%s: replacing the run there (another config, or unfinished without a checkpoint)", run_dir)
    t0 = time.time()
    if resume:
        log.info("%s: resuming the unfinished run of this config", run_dir)
        run = train(cfg, run_dir=run_dir, data_dir=data_dir, resume=True, progress=progress)
    else:
        run = train(cfg, run_dir=run_dir, data_dir=data_dir, overwrite=True, progress=progress, t_start=t0)
    return run.summary, round(time.time() - t0, 2)
