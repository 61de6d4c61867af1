"""The data folder of an existing run: the one it was trained on, checked against its record.

A run folder's ``provenance.json`` records the data folder (``data_dir``, an absolute path) and the
SHA-256 of each data file (``data_sha256``: ``{file name as in the task's files: hex digest}``).
Whatever continues or re-reads a run (``train --resume``, ``evaluate``, ``ensemble``, the
experiment suite) gets its data folder from :func:`resolve_run_data_dir`.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .config import Config
from .data.batching import resolve_data_dir, sha256_file
from .errors import CheckpointError, DataChangedError

log = logging.getLogger(__name__)

PROVENANCE_FILE = "provenance.json"


def files_read(cfg: Config) -> list[str]:
    """The data files a run of ``cfg`` reads (each task's train and dev files, and its test file
    when ``output.test_predictions``), as named in the tasks' ``files`` (relative to the data
    folder, or absolute), sorted. Registers the config's custom tasks first.

    Raises:
        ConfigError: an unknown task or a bad custom task definition.
    """
    from .tasks.base import get_task
    from .tasks.custom import register_custom_tasks

    register_custom_tasks(cfg)
    names = set()
    for name in cfg.tasks:
        for split, fname in get_task(name).files.items():
            if split != "test" or cfg.output.test_predictions:
                names.add(fname)
    return sorted(names)


def _read_provenance(run_dir: Path) -> dict | None:
    """The run's provenance record, or None when it has none (e.g. a ``minbert export`` folder).

    Raises:
        CheckpointError: the file is there but is not a JSON object.
    """
    path = run_dir / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        prov = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        msg = f"{path}: cannot read it ({e}); restore it, or delete it to skip the data check"
        raise CheckpointError(msg) from None
    if not isinstance(prov, dict):
        raise CheckpointError(f"{path}: not a JSON object; restore it, or delete it to skip the data check")
    return prov


def changed_files(folder: Path, recorded: dict, names: list[str]) -> list[str]:
    """Which of ``names`` differ in ``folder`` from their ``recorded`` SHA-256 (hex strings):
    ``"name"`` for a changed file, ``"name (missing)"`` for one not in the folder. Names without
    a recorded sum are not compared."""
    out = []
    for name in names:
        if name not in recorded:
            continue
        path = folder / name
        if not path.is_file():
            out.append(f"{name} (missing)")
        elif sha256_file(path) != recorded[name]:
            out.append(name)
    return out


def resolve_run_data_dir(
    run_dir: str | Path, cfg: Config, cli_dir: str | Path | None = None, allow_change: bool = False
) -> Path:
    """The data folder for an existing run, checked against the run's record.

    The folder: ``cli_dir`` when given; else the folder recorded in ``RUN/provenance.json``; else
    (no record, or the recorded folder is gone) the config's ``data.dir``, else
    ``$MINBERT_DATA_DIR``. The SHA-256 of each file the run reads (:func:`files_read`) is then
    compared with the recorded one. A run without recorded sums is used with a warning.

    Args:
        run_dir: the run folder. cfg: its config. cli_dir: ``--data-dir``.
        allow_change: on a mismatch, warn and go on instead of raising.

    Returns:
        The data folder.

    Raises:
        DataChangedError: a file differs from its recorded sum or is missing (not with ``allow_change``).
        DataError: no folder is given anywhere, or the chosen one does not exist.
        CheckpointError: ``provenance.json`` is unreadable.
    """
    run_dir = Path(run_dir)
    prov = _read_provenance(run_dir) or {}
    recorded_dir = prov.get("data_dir") if isinstance(prov.get("data_dir"), str) else None
    if cli_dir:
        folder = resolve_data_dir(str(cli_dir), None)
    elif recorded_dir and Path(recorded_dir).is_dir():
        folder = Path(recorded_dir)
    else:
        folder = resolve_data_dir(None, cfg.data.dir)
        if recorded_dir:
            log.warning("%s: the data folder it was made with, %s, is gone; using %s", run_dir, recorded_dir, folder)
    sums = prov.get("data_sha256")
    if not isinstance(sums, dict):
        log.warning("%s: no data checksums recorded (a run made before they were); %s not checked", run_dir, folder)
        return folder
    changed = changed_files(folder, sums, files_read(cfg))
    if changed:
        if not allow_change:
            raise DataChangedError(
                f"{run_dir}: data changed since the run was made: {', '.join(changed)} "
                "(pass --allow-data-change to use it anyway)",
                changed,
            )
        log.warning("%s: data changed since the run was made: %s (used anyway)", run_dir, ", ".join(changed))
    return folder
