"""Export a trained run as Hugging Face folders: ``minbert export RUN_DIR OUT``.

The export holds the fine-tuned encoder in Hugging Face layout, so that
``transformers.BertModel.from_pretrained(OUT)`` and ``AutoTokenizer.from_pretrained(OUT)`` load
it (same outputs as minbert's encoder), the task heads in a minbert file beside it, and one
self-contained folder per task whose head has an exact equivalent in the ecosystem::

    OUT/config.json                  BertConfig of the encoder (model_type bert)
    OUT/model.safetensors            the encoder's weights (Hugging Face BertModel names)
    OUT/tokenizer.json, vocab.txt, tokenizer_config.json, special_tokens_map.json
    OUT/minbert_heads.safetensors    the task heads' weights (keys ``heads.<task>.*``)
    OUT/README.md                    model card (scores, data SHA-256 sums, how to load)
    OUT/tasks/<task>/                encoder + head as a transformers or sentence-transformers model
    OUT/minbert_config.yaml          the run's config (tasks, heads, custom task definitions)

A task folder is written only where the head maps exactly
(:func:`minbert.inference.export_plan.plan_exports`):

* head ``baseline`` with ``pooling: pooler`` on one sentence or a cross-encoder pair (dropout,
  then Linear on BERT's pooler output) is ``BertForSequenceClassification`` (keys ``bert.*`` and
  ``classifier.*``): several labels are softmax logits (``single_label_classification``); the one
  logit of a binary task is its log-odds (``multi_label_classification``, so that
  ``pipeline("text-classification")`` and ``CrossEncoder`` apply a sigmoid); the one output of a
  regression task is the logit ``z`` of ``low + (high - low) * sigmoid(z)`` (``regression``;
  ``CrossEncoder`` applies the sigmoid, named in config.json). Pair folders load as
  ``sentence_transformers.CrossEncoder`` too;
* a bi-encoder ``cosine`` or ``sbert_cosine`` head (no extra layers, ``mean`` or ``cls``
  pooling) is a ``SentenceTransformer`` folder: Transformer, Pooling, Normalize.

Every other head gets no task folder (and one log line saying why): no folder ever loads with a
randomly initialised head. ``minbert.load(OUT)`` loads an export like a run folder. Every file is
written atomically, each task folder is swapped in whole, and ``minbert_config.yaml`` is written
last, so a folder without it is not an (complete) export.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save as st_save
from tqdm.auto import tqdm

from ..config import Config, dump_yaml, load_config
from ..errors import CheckpointError
from ..io import atomic_write_bytes, load_weights
from ..model.hf_folder import check_state_dict, load_hf_state_dict
from ..model.multitask import MultitaskModel, build_model
from ..runs import CONFIG_FILE, ENCODER_FILES, best_or_last_weights, check_file_weights, require_run_dir
from ..tasks.base import Task
from ..tasks.table import task_table
from .export_plan import (  # noqa: F401  (plan_task, TaskExport: part of this module's interface)
    EXPORT_TASKS,
    SENTENCE_TRANSFORMERS,
    ST_POOLING,
    TRANSFORMERS,
    TaskExport,
    label_names,
    plan_exports,
    plan_task,
)
from .model_card import render_model_card

log = logging.getLogger(__name__)

EXPORT_HEADS = "minbert_heads.safetensors"
EXPORT_CONFIG = "minbert_config.yaml"
SIGMOID = "torch.nn.modules.activation.Sigmoid"
_ST_POOLING_MODES = (*ST_POOLING.values(), "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens")

Files = dict[str, Callable[[], bytes]]  # path in a folder -> its contents, made when written


def is_export(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder written by :func:`export_run`."""
    p = Path(path)
    return (p / EXPORT_CONFIG).is_file() and (p / EXPORT_HEADS).is_file()


def _hf_safetensors(tensors: dict[str, torch.Tensor], extra: dict | None = None) -> bytes:
    """safetensors bytes with the ``{"format": "pt"}`` metadata that transformers requires."""
    meta = {"format": "pt"} | ({"minbert": json.dumps(extra)} if extra else {})
    return st_save({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, metadata=meta)


def _json(obj: object) -> Callable[[], bytes]:
    return lambda: (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def problem_type(task: Task) -> str:
    """transformers' ``problem_type`` whose loss is the task's (BCE with logits for binary tasks)."""
    return {"classification": "single_label_classification", "binary": "multi_label_classification"}.get(
        task.kind, "regression"
    )


def _tokenizer_files(encoder_dir: Path, max_length: int) -> Files:
    """The tokenizer files, ``tokenizer_config.json`` with ``model_max_length`` = the run's
    ``model.max_length`` (transformers and sentence-transformers then truncate as minbert does).

    Raises:
        CheckpointError: ``tokenizer_config.json`` is not a JSON object.
    """
    files: Files = {}
    for name in ENCODER_FILES[1:]:
        src = encoder_dir / name
        if src.is_file() and name != "tokenizer_config.json":
            files[name] = src.read_bytes
    tok_cfg: dict = {}
    src = encoder_dir / "tokenizer_config.json"
    if src.is_file():
        try:
            tok_cfg = json.loads(src.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise CheckpointError(f"{src}: not valid JSON ({e}); restore the encoder's tokenizer_config.json") from None
        if not isinstance(tok_cfg, dict):
            raise CheckpointError(f"{src}: not a JSON object; restore the encoder's tokenizer_config.json")
    files["tokenizer_config.json"] = _json(tok_cfg | {"model_max_length": max_length})
    return files


def _classifier_files(model: MultitaskModel, cfg: Config, name: str, task: Task) -> Files:
    """config.json and model.safetensors of a ``BertForSequenceClassification`` folder."""
    names = label_names(task)
    hf = model.encoder.config.to_hf_dict() | {
        "architectures": ["BertForSequenceClassification"],
        "num_labels": len(names),
        "id2label": {str(i): n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)},
        "problem_type": problem_type(task),
        "classifier_dropout": cfg.tasks[name].dropout,
    }
    if task.pair and task.num_outputs == 1:  # CrossEncoder's activation, named rather than defaulted
        hf["sentence_transformers"] = {"activation_fn": SIGMOID}
    head = model.heads[name].classifier

    def weights() -> bytes:
        tensors = {f"bert.{k}": v for k, v in model.encoder.state_dict().items()}
        return _hf_safetensors(tensors | {"classifier.weight": head.weight, "classifier.bias": head.bias})

    return {"config.json": _json(hf), "model.safetensors": weights}


def _sentence_transformer_files(model: MultitaskModel, cfg: Config, name: str) -> Files:
    """The files of a ``SentenceTransformer`` folder (Transformer -> Pooling -> Normalize), in the
    layout that sentence-transformers 2.x to 6.x read."""
    pooling = cfg.tasks[name].pooling
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    pool_cfg = {"word_embedding_dimension": model.encoder.config.hidden_size}
    pool_cfg |= {mode: mode == ST_POOLING[pooling] for mode in _ST_POOLING_MODES}
    st_cfg = {"prompts": {}, "default_prompt_name": None, "similarity_fn_name": "cosine",
              "model_type": "SentenceTransformer"}
    return {
        "config.json": _json(model.encoder.config.to_hf_dict()),
        "model.safetensors": lambda: _hf_safetensors(model.encoder.state_dict()),
        "modules.json": _json(modules),
        "sentence_bert_config.json": _json({"max_seq_length": cfg.model.max_length, "do_lower_case": False}),
        "config_sentence_transformers.json": _json(st_cfg),
        "1_Pooling/config.json": _json(pool_cfg),
    }


def _write_folder(final: Path, files: Files, bar: tqdm) -> None:
    """Write ``files`` into a new folder beside ``final``, then swap it in for ``final``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex[:12]}.tmp"
    tmp.mkdir()
    old = None
    try:
        for rel, make in files.items():
            atomic_write_bytes(tmp / rel, make())
            bar.update()
        if final.exists() or final.is_symlink():
            old = final.parent / f".{final.name}.{uuid.uuid4().hex[:12]}.old"
            os.replace(final, old)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        _remove(old)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _check_out(run_dir: Path, out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"{out}: folder exists and is not empty; pass --overwrite to replace the export there")
    if out.resolve() == run_dir.resolve() or (out / CONFIG_FILE).is_file():
        raise CheckpointError(f"{out}: is a run folder; export into a folder of its own")


def export_run(
    run_dir: str | os.PathLike, out: str | os.PathLike, overwrite: bool = False, progress: bool = True
) -> Path:
    """Write the run's best weights (else its last checkpoint's) as an export folder ``out``, with
    one folder per exactly exportable task under ``out/tasks`` (see the module docstring) and a
    model card (README.md) in ``out`` and in every task folder. ``progress``: a progress bar over
    the files written, shown once the export has taken a second or more.

    Returns:
        The export folder.

    Raises:
        CheckpointError: ``run_dir`` is not a run folder or has no checkpoint; the weights hold
            NaN or infinity; ``out`` exists, is not empty and ``overwrite`` is False; ``out`` is a
            file; the run's tokenizer config is not JSON.
    """

    run_dir = require_run_dir(run_dir)
    out = Path(out)
    _check_out(run_dir, out, overwrite)
    cfg = load_config(run_dir / CONFIG_FILE)
    table = task_table(cfg)
    model = build_model(cfg, run_dir / "encoder", pretrained=False, tasks=table)
    weights = best_or_last_weights(run_dir)
    check_file_weights(model, weights)
    _check_finite(model, weights)
    plans = plan_exports(cfg, table)
    encoder_dir = run_dir / "encoder"
    top: Files = {"config.json": _json(model.encoder.config.to_hf_dict()),
                  "model.safetensors": lambda: _hf_safetensors(model.encoder.state_dict())}
    top |= {name: (encoder_dir / name).read_bytes for name in ENCODER_FILES[1:] if (encoder_dir / name).is_file()}
    heads = {f"heads.{k}": v for k, v in model.heads.state_dict().items()}
    meta = {"source_run": str(run_dir.resolve()), "weights": str(weights), "tasks": list(cfg.tasks)}
    top[EXPORT_HEADS] = lambda: _hf_safetensors(heads, meta)
    folders: dict[str, Files] = {}
    for name, plan in plans.items():
        log.info("%s", plan.line)
        if plan.library == TRANSFORMERS:
            files = _classifier_files(model, cfg, name, table[name])
        elif plan.library == SENTENCE_TRANSFORMERS:
            files = _sentence_transformer_files(model, cfg, name)
        else:
            continue
        card = render_model_card(run_dir, export=out, task=name, weights=weights.relative_to(run_dir))
        folders[name] = files | _tokenizer_files(encoder_dir, cfg.model.max_length) | {"README.md": card.encode}
    card = render_model_card(run_dir, export=out, weights=weights.relative_to(run_dir))
    total = len(top) + sum(map(len, folders.values())) + 2
    out.mkdir(parents=True, exist_ok=True)
    (out / EXPORT_CONFIG).unlink(missing_ok=True)  # the completion marker goes last
    with tqdm(total=total, desc=f"export {out.name}", unit="file", delay=1.0, disable=not progress) as bar:
        for name, make in top.items():
            atomic_write_bytes(out / name, make())
            bar.update()
        _replace_task_folders(out / EXPORT_TASKS, folders, bar)
        atomic_write_bytes(out / "README.md", card.encode("utf-8"))
        atomic_write_bytes(out / EXPORT_CONFIG, dump_yaml(cfg).encode("utf-8"))
        bar.update(2)
    log.info("exported %s (%s) to %s", run_dir, weights.relative_to(run_dir), out)
    return out


def _check_finite(model: MultitaskModel, weights: Path) -> None:
    """Raises CheckpointError where a floating-point tensor of the loaded weights holds NaN or
    infinity (a run that diverged): an export of them would only predict NaN."""
    bad = [k for k, t in model.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"{weights}: {len(bad)} weight tensor(s) hold NaN or infinity (the first: {bad[0]}); "
                              "nothing was exported")


def _replace_task_folders(tasks_dir: Path, folders: dict[str, Files], bar: tqdm) -> None:
    """Write each task folder (swapped in whole) and remove what an earlier export left in
    ``tasks_dir`` that this one does not write (``tasks_dir`` itself when no task is exported)."""
    if tasks_dir.is_symlink() or (tasks_dir.exists() and not tasks_dir.is_dir()):
        _remove(tasks_dir)  # never write through a link
    for name, files in folders.items():
        _write_folder(tasks_dir / name, files, bar)
    if tasks_dir.is_dir():
        for entry in tasks_dir.iterdir():
            if entry.name not in folders:
                _remove(entry)
        if not folders:
            tasks_dir.rmdir()


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
