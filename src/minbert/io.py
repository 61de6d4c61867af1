"""Atomic file writes and safetensors weights: the only way minbert writes a file.

Every file is written atomically: a temporary file in the same folder, ``fsync``, then
``os.replace`` (and an fsync of the folder). A crash mid-write leaves the previous file intact.
Weights are safetensors (no pickle, nothing executes on load).
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import CheckpointError

if TYPE_CHECKING:  # torch and safetensors load on first use: the CLI's light commands write files too
    import torch
    from matplotlib.figure import Figure

_UMASK = os.umask(0)
os.umask(_UMASK)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename). An
    OSError of making the temporary file names ``path`` (the file the user asked for)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from None
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


def atomic_write_file(path: str | os.PathLike, write: Callable[[Path], Any]) -> None:
    """Write ``path`` atomically through a library's own file writer: ``write(tmp)`` creates the
    file ``tmp`` inside a private temporary folder beside ``path`` (``.<name>.*.tmp/``, so that
    whatever temporary files the writer makes of its own stay inside it), which then gets the
    usual file mode, fsync, and is renamed to ``path``; the folder goes. What ``write`` raises
    propagates, the folder removed; a killed write leaves the folder, which
    :func:`minbert.training.checkpoint.clean_checkpoints` removes in a run folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    tmp = folder / path.name
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    folder.rmdir()
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


def atomic_write_png(path: str | os.PathLike, figure: Figure, tight: bool = False) -> None:
    """Render a matplotlib figure to PNG (Agg) and write it to ``path`` atomically; ``tight``: the
    image is the figure's drawn area (``bbox_inches="tight"``: a legend outside the axes is kept)."""
    buf = io.BytesIO()
    figure.savefig(buf, format="png", bbox_inches="tight" if tight else None)
    atomic_write_bytes(path, buf.getvalue())


def save_weights(path: str | os.PathLike, state_dict: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    """Save tensors as safetensors (atomically); ``metadata`` is stored as one JSON string
    under the key ``minbert``."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in state_dict.items()}
    meta = {"minbert": json.dumps(metadata or {})}
    atomic_write_file(path, lambda tmp: safetensors_save_file(tensors, tmp, meta))


def safetensors_save_file(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """``safetensors.torch.save_file``, which writes without holding the interpreter (its
    in-memory ``save`` holds it while it copies: ``benchmarks/checkpoint_writers.py``), with a
    failed write raised as the OSError it was (safetensors raises its own error type, with the
    OS error's number in the message)."""
    from safetensors.torch import save_file

    try:
        save_file(tensors, path, metadata=metadata)
    except Exception as e:
        found = re.search(r"\(os error (\d+)\)", str(e))
        if found is None or isinstance(e, OSError):
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code), str(path)) from None


def load_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Returns (tensors, metadata). Raises CheckpointError if missing or unreadable."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint file not found") from None
    from safetensors import safe_open
    from safetensors.torch import load as st_load

    try:
        tensors = st_load(data)

        with safe_open(str(path), "pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("minbert", "{}"))
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise CheckpointError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    return tensors, meta


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
