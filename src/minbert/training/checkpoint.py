"""Run folders and checkpoints.

Every file is written atomically: a temporary file in the same folder, ``fsync``, then
``os.replace`` (and an fsync of the folder). A crash mid-write leaves the previous file intact.

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

import io
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ..errors import CheckpointError

CONFIG_FILE = "config.yaml"
_UMASK = os.umask(0)
os.umask(_UMASK)
ENCODER_FILES = ("config.json", "tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def save_weights(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Save tensors as safetensors (atomically); ``metadata`` is stored as one JSON string
    under the key ``minbert``."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    meta = {"minbert": json.dumps(metadata or {})}
    atomic_write_bytes(path, st_save(tensors, metadata=meta))


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Returns (tensors, metadata). Raises CheckpointError if missing or unreadable."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint file not found") from None
    try:
        tensors = st_load(data)
        from safetensors import safe_open

        with safe_open(str(path), "pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("minbert", "{}"))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    return tensors, meta


def save_checkpoint(run_dir: Path, step: int, model_state: dict, train_state: dict, keep: int = 2) -> Path:
    """Write ``checkpoints/step-N/`` (weights + training state), then point ``last.json`` at it,
    then delete older step folders beyond ``keep``. The pointer is written last, so an
    interrupted save leaves the previous checkpoint as the one that resumes."""
    ckpt_root = Path(run_dir) / "checkpoints"
    folder = ckpt_root / f"step-{step:08d}"
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(folder / "model.safetensors", model_state, {"step": step})
    buf = io.BytesIO()
    torch.save(train_state, buf)
    atomic_write_bytes(folder / "train_state.pt", buf.getvalue())
    atomic_write_json(ckpt_root / "last.json", {"dir": folder.name, "step": step})
    steps = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir())
    for old in steps[:-keep]:
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


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


def load_train_state(folder: Path) -> dict:
    try:
        return torch.load(folder / "train_state.pt", map_location="cpu", weights_only=False)
    except Exception as e:  # torch.load raises many types for a corrupt file
        raise CheckpointError(f"{folder / 'train_state.pt'}: unreadable ({type(e).__name__}: {e})") from None


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
    from ..model.bert import check_state_dict

    tensors, meta = load_weights(path)
    check_state_dict(model, tensors, source=str(path))
    model.load_state_dict(tensors, strict=True)
    return meta
