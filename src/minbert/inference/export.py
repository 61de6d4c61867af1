"""Export a trained run as a Hugging Face BERT folder: ``minbert export RUN_DIR OUT``.

The export holds the fine-tuned encoder in Hugging Face layout, so that
``transformers.BertModel.from_pretrained(OUT)`` and ``AutoTokenizer.from_pretrained(OUT)`` load
it (same outputs as minbert's encoder), and the task heads in a minbert file beside it::

    OUT/config.json                  BertConfig of the encoder (model_type bert)
    OUT/model.safetensors            the encoder's weights (Hugging Face BertModel names)
    OUT/tokenizer.json, vocab.txt, tokenizer_config.json, special_tokens_map.json
    OUT/minbert_heads.safetensors    the task heads' weights (keys ``heads.<task>.*``)
    OUT/minbert_config.yaml          the run's config (tasks, heads, custom task definitions)

``minbert.load(OUT)`` loads an export like a run folder. Every file is written atomically;
``minbert_config.yaml`` is written last, so a folder without it is not an (complete) export.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch
from safetensors.torch import save as st_save

from ..config import Config, dump_yaml, load_config
from ..errors import CheckpointError
from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text, load_weights
from ..model.bert import check_state_dict, load_hf_state_dict
from ..model.multitask import MultitaskModel, build_model
from ..runs import CONFIG_FILE, ENCODER_FILES, best_or_last_weights, check_file_weights, require_run_dir

log = logging.getLogger(__name__)

EXPORT_HEADS = "minbert_heads.safetensors"
EXPORT_CONFIG = "minbert_config.yaml"


def is_export(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder written by :func:`export_run`."""
    p = Path(path)
    return (p / EXPORT_CONFIG).is_file() and (p / EXPORT_HEADS).is_file()


def _hf_safetensors(tensors: dict[str, torch.Tensor], extra: dict | None = None) -> bytes:
    """safetensors bytes with the ``{"format": "pt"}`` metadata that transformers requires."""
    meta = {"format": "pt"} | ({"minbert": json.dumps(extra)} if extra else {})
    return st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=meta)


def export_run(run_dir: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write the run's best weights (else its last checkpoint's) as an export folder ``out``.

    Returns:
        The export folder.

    Raises:
        CheckpointError: ``run_dir`` is not a run folder or has no checkpoint; ``out`` exists,
            is not empty and ``overwrite`` is False; ``out`` is a file.
    """
    run_dir = require_run_dir(run_dir)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"{out}: folder exists and is not empty; pass --overwrite to replace the export there")
    if out.resolve() == run_dir.resolve():
        raise CheckpointError(f"{out}: export into another folder than the run folder")
    cfg = load_config(run_dir / CONFIG_FILE)
    model = build_model(cfg, run_dir / "encoder", pretrained=False)
    weights = best_or_last_weights(run_dir)
    check_file_weights(model, weights)
    out.mkdir(parents=True, exist_ok=True)
    (out / EXPORT_CONFIG).unlink(missing_ok=True)  # the completion marker goes last
    atomic_write_json(out / "config.json", model.encoder.config.to_hf_dict())
    atomic_write_bytes(out / "model.safetensors", _hf_safetensors(model.encoder.state_dict()))
    for name in ENCODER_FILES[1:]:
        src = run_dir / "encoder" / name
        if src.is_file():
            atomic_write_bytes(out / name, src.read_bytes())
    heads = {f"heads.{k}": v for k, v in model.heads.state_dict().items()}
    atomic_write_bytes(out / EXPORT_HEADS, _hf_safetensors(heads, {"source_run": str(run_dir.resolve()), "weights": str(weights), "tasks": list(cfg.tasks)}))
    atomic_write_text(out / EXPORT_CONFIG, dump_yaml(cfg))
    log.info("exported %s (%s) to %s", run_dir, weights.relative_to(run_dir), out)
    return out


def load_export(folder: str | os.PathLike) -> tuple[Config, MultitaskModel]:
    """The config and the model (encoder + heads, float32, on the CPU) of an export folder.

    Raises:
        CheckpointError: not an export folder, or its weights do not match its config.
    """
    folder = Path(folder)
    if not is_export(folder):
        raise CheckpointError(f"{folder}: not a minbert export (no {EXPORT_CONFIG} or {EXPORT_HEADS})")
    cfg = load_config(folder / EXPORT_CONFIG)
    model = build_model(cfg, folder, pretrained=False)
    state = {f"encoder.{k}": v for k, v in load_hf_state_dict(folder).items()}
    heads, _ = load_weights(folder / EXPORT_HEADS)
    state.update(heads)
    check_state_dict(model, state, source=str(folder))
    model.load_state_dict(state, strict=True)
    return cfg, model
