"""Writing and reading the training state of a run (``checkpoints/step-N/``).

The run-folder layout and the readers that inference shares live in :mod:`minbert.runs`;
atomic writes in :mod:`minbert.io`.
"""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import torch

from ..errors import CheckpointError
from ..io import atomic_write_bytes, atomic_write_json, save_weights


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


def load_train_state(folder: Path) -> dict:
    try:
        return torch.load(folder / "train_state.pt", map_location="cpu", weights_only=False)
    except Exception as e:  # torch.load raises many types for a corrupt file
        raise CheckpointError(f"{folder / 'train_state.pt'}: unreadable ({type(e).__name__}: {e})") from None


