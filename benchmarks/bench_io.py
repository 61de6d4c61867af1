"""Shared by the benchmark scripts: the machine description and the JSON output."""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch


def machine() -> dict:
    """``{"gpu", "torch", "cpu"}`` of this process's machine (gpu None without CUDA)."""
    return {
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }


def emit(result: dict, out: str | None) -> None:
    """Print the result as indented JSON and, with ``out``, write it there too."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
