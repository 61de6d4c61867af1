"""Reading a run folder: the files that training writes and inference, export and experiments read.

Layout of a run folder::

    config.yaml            resolved config
    provenance.json        git SHA, package versions, data checksums
    encoder/               config.json + tokenizer files of the encoder (no weights)
    checkpoints/last.json  {"dir": "step-00000120", ...}: the newest complete checkpoint
    checkpoints/step-N/    model.safetensors (all weights) + train_state.pt (optimizer, RNG, ...)
    checkpoints/best/      model.safetensors of the best epoch by overall dev score
    metrics.jsonl, train.log, tensorboard/, curves.png, predictions/, summary.json
    <task>-confusion.png   dev confusion matrix of a task with more than 2 labels (SST)
    <task>-calibration.png dev calibration curve of a binary or 2-label task (QQP)
    <task>-scatter.png     dev predicted vs gold scores of a regression task (STS)
    mlflow.json            the MLflow run of output.report_to: mlflow (a resume continues it)

The data folder of an existing run is the one it was trained on, checked against its record:
``provenance.json`` records the data folder (``data_dir``, an absolute path) and the SHA-256 of
each data file (``data_sha256``: ``{file name as in the task's files: hex digest}``). Whatever
continues or re-reads a run (``train --resume``, ``evaluate``, ``ensemble``, the experiment
suite) gets its data folder from :func:`resolve_run_data_dir`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from .config import Config
from .data.batching import resolve_data_dir, sha256_file
from .errors import CheckpointError, DataChangedError
from .io import atomic_write_bytes, load_weights

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
TRAIN_STATE = "train_state.pt"
CHECKPOINT_FILES = ("model.safetensors", TRAIN_STATE)
ENCODER_FILES = ("config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


@dataclass
class Run:
    """What :func:`minbert.training.trainer.train` returns: the run folder and its summary (also
    in ``summary.json``)."""

    run_dir: Path
    summary: dict


def last_checkpoint(run_dir: Path, check_files: bool = True) -> Path | None:
    """The folder named by ``checkpoints/last.json``, or None if the run has none.

    Raises:
        CheckpointError: the pointer is unreadable, or (``check_files``) the folder lacks a file.
    """
    pointer = Path(run_dir) / "checkpoints" / "last.json"
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text())["dir"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise CheckpointError(f"{pointer}: unreadable checkpoint pointer") from None
    if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
        raise CheckpointError(f"{pointer}: unreadable checkpoint pointer (dir {name!r} is not a folder name)")
    folder = pointer.parent / name
    for f in CHECKPOINT_FILES if check_files else ():
        if not (folder / f).is_file():
            raise CheckpointError(f"{folder}: incomplete checkpoint (no {f})")
    return folder




def require_run_dir(run_dir: str | os.PathLike) -> Path:
    """Check that a folder holds a minbert run (a config and an encoder description).

    Raises:
        CheckpointError: it does not exist or is not a minbert run folder.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: no such run folder")
    if not (run_dir / CONFIG_FILE).is_file() or not (run_dir / "encoder" / "config.json").is_file():
        raise CheckpointError(f"{run_dir}: not a minbert run folder (no {CONFIG_FILE} or encoder/config.json)")
    return run_dir


def best_or_last_weights(run_dir: Path) -> Path:
    """The best checkpoint's weights, else the last checkpoint's.

    Raises:
        CheckpointError: the run has no checkpoint yet.
    """
    best = run_dir / "checkpoints" / "best" / "model.safetensors"
    if best.is_file():
        return best
    last = last_checkpoint(run_dir)
    if last is None:
        raise CheckpointError(f"{run_dir}: the run has no checkpoint yet")
    log.warning("%s: no best weights (checkpoints/best); using the last checkpoint, %s", run_dir, last.name)
    return last / "model.safetensors"


def copy_encoder_files(src: Path, dst: Path, write_config: Callable[[Path], None]) -> None:
    """Copy tokenizer files of an encoder folder into the run's ``encoder/`` and write its
    ``config.json`` through ``write_config``."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ENCODER_FILES[1:]:
        if (src / name).is_file():
            atomic_write_bytes(dst / name, (src / name).read_bytes())
    write_config(dst / "config.json")


def check_file_weights(model: torch.nn.Module, path: Path) -> dict:
    """Load weights from ``path`` into ``model`` after checking the exact key set and every
    shape (then ``strict=True``). Returns the file's metadata.

    Raises:
        CheckpointError: listing missing, unexpected and mis-shaped keys.
    """
    from .model.hf_folder import check_state_dict

    tensors, meta = load_weights(path)
    check_state_dict(model, tensors, source=str(path))
    model.load_state_dict(tensors, strict=True)
    return meta


PROVENANCE_FILE = "provenance.json"


def files_read(cfg: Config) -> list[str]:
    """The data files a run of ``cfg`` reads (each task's train and dev files, and its test file
    when ``output.test_predictions``), as named in the tasks' ``files`` (relative to the data
    folder, or absolute), sorted.

    Raises:
        ConfigError: an unknown task or a bad custom task definition.
    """
    from .tasks.table import task_table

    table = task_table(cfg)
    names = set()
    for name in cfg.tasks:
        for split, fname in table[name].files.items():
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
