"""Reading a run folder: the files that training writes and inference, export and experiments read.

Layout of a run folder::

    config.yaml            resolved config
    provenance.json        git SHA, package versions, data checksums
    encoder/               config.json + tokenizer files of the encoder (no weights)
    checkpoints/last.json  {"dir": "step-00000120", ...}: the newest complete checkpoint
    checkpoints/step-N/    model.safetensors (all weights) + train_state.pt (optimizer, RNG, ...)
    checkpoints/best/      model.safetensors of the best epoch by overall dev score
    metrics.jsonl, train.log, tensorboard/, curves.png, predictions/, summary.json
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import torch

from .errors import CheckpointError
from .io import atomic_write_bytes, load_weights

CONFIG_FILE = "config.yaml"
ENCODER_FILES = ("config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def last_checkpoint(run_dir: Path) -> Path | None:
    """The folder named by ``checkpoints/last.json``, or None if the run has none."""
    pointer = Path(run_dir) / "checkpoints" / "last.json"
    if not pointer.is_file():
        return None
    try:
        name = json.loads(pointer.read_text())["dir"]
    except (json.JSONDecodeError, KeyError):
        raise CheckpointError(f"{pointer}: unreadable checkpoint pointer") from None
    folder = pointer.parent / name
    for f in ("model.safetensors", "train_state.pt"):
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
    from .model.bert import check_state_dict

    tensors, meta = load_weights(path)
    check_state_dict(model, tensors, source=str(path))
    model.load_state_dict(tensors, strict=True)
    return meta
