"""Run folders and checkpoints.

Every file is written atomically: a temporary file in the same folder, ``fsync``, then
``os.replace`` (and an fsync of the folder). A crash mid-write leaves the previous file intact.

Layout of a run folder::

    config.yaml            resolved config
    provenance.json        git SHA, package versions, data checksums
    encoder/               config.json + tokenizer files of the encoder (no weights)
    checkpoints/last.json  {"dir": "step-00000120", ...}: the newest complete checkpoint
    checkpoints/step-N/    model.safetensors (all weights) + train_state.pt (optimizer, RNG, ...)
    checkpoints/.trash-*/  step folders being pruned (renamed first, then deleted)
    checkpoints/best/      model.safetensors of the best epoch by overall dev score
    metrics.jsonl, train.log, tensorboard/, curves.png, predictions/, summary.json

``train_state.pt`` holds only tensors and plain containers (dict, list, tuple, str, int, float,
bool, None) and is read with ``torch.load(weights_only=True)``: reading it never runs code.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import pickle
import re
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
TRAIN_STATE = "train_state.pt"
CHECKPOINT_FILES = ("model.safetensors", TRAIN_STATE)
_STEP_DIR = re.compile(r"step-(\d+)")
_PLAIN = (str, int, float, bool, type(None))
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


def check_plain(obj: Any, where: str = "train_state") -> None:
    """Check that ``obj`` holds only tensors and plain containers (dict with str/int keys, list,
    tuple, str, int, float, bool, None): what ``torch.load(weights_only=True)`` reads back.

    Raises:
        TypeError: naming the path of the first other object (a bug in the code that built it).
    """
    if isinstance(obj, torch.Tensor) or type(obj) in _PLAIN:
        return
    if type(obj) is dict:
        for k, v in obj.items():
            if type(k) not in (str, int):
                raise TypeError(f"{where}: key {k!r} of type {type(k).__name__} is not str or int")
            check_plain(v, f"{where}.{k}")
        return
    if type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where}: {type(obj).__module__}.{type(obj).__qualname__} is not a tensor or plain container")


def save_checkpoint(run_dir: Path, step: int, model_state: dict, train_state: dict, keep: int = 2) -> Path:
    """Write ``checkpoints/step-N/`` (weights + training state), then point ``last.json`` at it,
    then delete older step folders beyond ``keep``. The pointer is written last, so an
    interrupted save leaves the previous checkpoint as the one that resumes. A pruned folder is
    first renamed to ``.trash-*`` (atomic), so a kill while deleting never leaves a half-deleted
    ``step-N`` folder; :func:`clean_checkpoints` removes such leftovers.

    Raises:
        TypeError: ``train_state`` holds something other than tensors and plain containers.
        CheckpointError: the files cannot be written (disk full, no permission, ...); the
            previous checkpoint stays the one that resumes.
    """
    check_plain(train_state)
    ckpt_root = Path(run_dir) / "checkpoints"
    folder = ckpt_root / f"step-{step:08d}"
    buf = io.BytesIO()
    torch.save(train_state, buf)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(folder / "model.safetensors", model_state, {"step": step})
        atomic_write_bytes(folder / TRAIN_STATE, buf.getvalue())
        atomic_write_json(ckpt_root / "last.json", {"dir": folder.name, "step": step})
    except OSError as e:
        prev = last_checkpoint(run_dir, check_files=False)
        keep_msg = (
            f"the last checkpoint ({prev.name}) is intact; then resume with: minbert train --resume {run_dir}"
            if prev is not None else "the run has no earlier checkpoint"
        )
        raise CheckpointError(f"{folder}: cannot write the checkpoint: {os_reason(e)}; {keep_msg}") from None
    steps = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir())
    for old in steps[:-keep]:
        if old != folder:
            with contextlib.suppress(OSError):  # a folder that cannot be removed stays (as before)
                _remove_dir(old)
    return folder


def os_reason(e: OSError) -> str:
    """What an OSError means for the user, with what to do about it (one line)."""
    text = e.strerror or (str(e).strip().splitlines() or [type(e).__name__])[0]
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{text} (the disk is full: free space first)"
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"{text} (the folder must be writable by you)"
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"{text} (a file stands where a folder is needed)"
    return text


def _remove_dir(folder: Path) -> None:
    """Delete a folder without ever leaving it half-deleted under its own name: rename it to a
    ``.trash-*`` folder beside it (atomic), then delete that."""
    trash = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".trash-"))
    try:
        os.replace(folder, trash / folder.name)
    except OSError:
        trash.rmdir()
        raise
    shutil.rmtree(trash, ignore_errors=True)


def clean_checkpoints(run_dir: Path) -> list[str]:
    """Remove what a killed run can leave in ``checkpoints/``: ``.trash-*`` folders of an
    interrupted prune, temporary files of interrupted writes (``.*.tmp``), step folders newer
    than the one ``last.json`` names (written after it, never made the resume point), and older
    step folders that lack a file. The folder ``last.json`` names is never touched. Returns the
    names removed (paths relative to ``checkpoints/``).

    Raises:
        CheckpointError: ``last.json`` is unreadable.
    """
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    last = last_checkpoint(run_dir, check_files=False)
    last_step = int(_STEP_DIR.fullmatch(last.name).group(1)) if last and _STEP_DIR.fullmatch(last.name) else -1
    removed = []
    for p in sorted(root.iterdir()):
        m = _STEP_DIR.fullmatch(p.name)
        stale = p.is_dir() and (
            p.name.startswith(".trash-")
            or (m is not None and p != last
                and (int(m.group(1)) > last_step or not all((p / f).is_file() for f in CHECKPOINT_FILES)))
        )
        if stale:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    for tmp in sorted(root.rglob(".*.tmp")):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(str(tmp.relative_to(root)))
    return removed


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


def load_train_state(folder: Path) -> dict:
    """The training state of a checkpoint folder (optimizer, lr schedule, task streams, loop
    counters, RNG states), read with ``torch.load(weights_only=True)``: tensors and plain
    containers only, so nothing in the file can run code.

    Raises:
        CheckpointError: the file is missing or unreadable, or it holds Python objects that only
            pickle can rebuild (written by an older minbert, or planted: not resumable).
    """
    path = Path(folder) / TRAIN_STATE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint file not found") from None
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: holds Python objects that only pickle can load (the run folder was written by an older "
            "minbert, or is not trusted), so the run cannot be resumed; evaluate, predict and serve still work"
        ) from None
    except Exception as e:  # torch.load raises many types for a corrupt file
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{path}: unreadable ({type(e).__name__}: {first})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: unreadable (not a training state)")
    return state


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
