"""Loading a trained run for prediction: ``minbert.load(run_dir_or_export)`` returns a :class:`Predictor`.

It loads a run folder (its best checkpoint) or a folder written by ``minbert export``.

A predictor batches internally (sorted by length), runs under ``inference_mode`` on CPU or GPU,
and is safe to call from several threads (one lock around the forward passes).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import load_config
from ..data.batching import RawSplit, tokenize_split
from ..data.tokenizer import Tokenizer
from ..distributed import resolve_device
from ..errors import ConfigError, DataError, MinbertError
from ..model.heads import pool
from ..model.multitask import build_model
from ..progress import progress_bar
from ..runs import CONFIG_FILE, best_or_last_weights, check_file_weights, require_run_dir
from ..tasks.base import Task
from ..tasks.table import task_table
from .evaluate import predict_split

log = logging.getLogger(__name__)

CHUNK_BATCHES = 16  # batches per tokenise-and-predict step of :meth:`Predictor.outputs`


@dataclass(frozen=True)
class Sentiment:
    label: int  # 0..4
    name: str  # negative .. positive
    probabilities: tuple[float, ...]  # 5 values summing to 1


def _check_texts(texts: Iterable[object], what: str = "texts") -> list[str]:
    if isinstance(texts, str):
        raise MinbertError(f"{what}: expected a list of strings, got one string (wrap it in a list)")
    out = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise MinbertError(f"{what}[{i}]: expected a string, got {type(t).__name__}")
        if not t.strip():
            raise MinbertError(f"{what}[{i}]: empty or whitespace-only text")
        try:  # a lone surrogate ("\ud800", e.g. from JSON or undecodable bytes) reaches no tokenizer
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            msg = f"not valid Unicode text: a lone surrogate at character {e.start} (pass UTF-8 encodable text)"
            raise DataError(f"{what}[{i}]: {msg}") from None
        out.append(t.strip())
    return out


def _check_pairs(pairs: Iterable[object]) -> tuple[list[str], list[str]]:
    if isinstance(pairs, str):
        raise MinbertError("pairs: expected a list of (text, text) pairs, got one string")
    a, b = [], []
    for i, p in enumerate(pairs):
        if isinstance(p, str) or not hasattr(p, "__len__") or len(p) != 2:
            raise MinbertError(f"pairs[{i}]: expected a pair of two strings")
        a.append(p[0])
        b.append(p[1])
    return _check_texts(a, "pairs[*][0]"), _check_texts(b, "pairs[*][1]")


def quantize_dynamic_int8(model: torch.nn.Module, mode: str, device: torch.device) -> torch.nn.Module:
    """Dynamic int8 quantisation of every ``nn.Linear`` (weights int8, activations quantised per
    batch at run time, one weight scale per output channel; Jacob et al. 2018), for CPU
    inference, after fusing each layer's q/k/v
    projections into one (in place: the model is changed). It changes the outputs slightly:
    benchmarks/cpu_predict.py reports the SST dev accuracy delta.

    Raises:
        ConfigError: a mode other than "int8", or a non-CPU device.
    """
    if mode != "int8":
        raise ConfigError(f"quantize {mode!r}: only 'int8' is supported")
    if device.type != "cpu":
        raise ConfigError(f"quantize 'int8' runs on the CPU only, not on {device}")
    import warnings

    from torch.ao.quantization import quantize_dynamic

    from ..model.bert import BertSelfAttention

    for m in model.modules():  # one q/k/v projection: one activation quantisation, not three
        if isinstance(m, BertSelfAttention):
            m.fuse_qkv()
    with warnings.catch_warnings():
        # torch.ao.quantization is deprecated in favour of torchao (Deprecation/Future/UserWarning)
        warnings.simplefilter("ignore")
        # per output channel weight scales: the fused q/k/v weight keeps three rows' ranges apart
        from torch.ao.quantization import per_channel_dynamic_qconfig

        return quantize_dynamic(model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8)


class Predictor:
    """A trained multi-task model ready for prediction. Build with :func:`load`."""

    def __init__(self, run_dir: str | Path, device: str = "auto", batch_size: int = 64, quantize: str | None = None):
        from .export import is_export, load_export

        if batch_size < 1:
            raise ConfigError(f"batch_size {batch_size}: must be >= 1")
        self.device = resolve_device(device)
        if is_export(run_dir):  # a `minbert export` folder: encoder in HF layout + heads file
            run_dir = Path(run_dir)
            self.config, model = load_export(run_dir)
            encoder_dir = run_dir
        else:
            run_dir = require_run_dir(run_dir)
            self.config = load_config(run_dir / CONFIG_FILE)
            model = build_model(self.config, run_dir / "encoder", pretrained=False, tasks=task_table(self.config))
            check_file_weights(model, best_or_last_weights(run_dir))
            encoder_dir = run_dir / "encoder"
        self.run_dir = run_dir
        self.task_table = task_table(self.config)  # the model's own tasks, custom ones included
        self.model = model.to(self.device).eval()
        if quantize is not None:
            self.model = quantize_dynamic_int8(self.model, quantize, self.device)
        enc_cfg = model.encoder.config
        self.tokenizer = Tokenizer(encoder_dir, self.config.model.max_length, enc_cfg.max_position_embeddings)
        self.batch_size = batch_size
        self.amp = self.device.type == "cuda"
        self._lock = threading.Lock()

    @property
    def tasks(self) -> list[str]:
        """The names of the model's tasks, in training order."""
        return list(self.config.tasks)

    def task(self, name: str) -> Task:
        """The task object of one of the model's tasks.

        Raises:
            ConfigError: an unknown task, or one this model was not trained on.
        """
        if name not in self.task_table:
            raise ConfigError(f"unknown task {name!r} (this model has {self.tasks})")
        if name not in self.config.tasks:
            raise ConfigError(f"task {name!r} is not in this model (it has {self.tasks})")
        return self.task_table[name]

    def _raw(self, task: str, texts_a: Sequence[str], texts_b: Sequence[str] | None) -> RawSplit:
        if task not in self.config.tasks:
            raise MinbertError(f"task {task!r} is not in this model (it has {self.tasks})")
        rows = [(a,) for a in texts_a] if texts_b is None else list(zip(texts_a, texts_b, strict=True))
        return RawSplit("input", [str(i) for i in range(len(rows))], rows, None)

    def outputs(
        self, task: str, texts_a: Sequence[str], texts_b: Sequence[str] | None = None, progress: bool = False
    ) -> np.ndarray:
        """Raw outputs in input order: logits (N, C) / (N,) or scores (N,), float32.

        Rows are tokenised and run :data:`CHUNK_BATCHES` batches at a time (bounded memory for
        a large file); ``progress``: a bar over the rows, ``predict <task>``.
        """
        t = self.task(task)
        if t.pair and texts_b is None:
            raise MinbertError(f"task {task!r} takes sentence pairs")
        raw = self._raw(task, texts_a, texts_b if t.pair else None)
        if len(raw) == 0:
            return np.zeros((0, t.num_outputs) if t.num_outputs > 1 else (0,), dtype=np.float32)
        kind, chunk, parts = t.input_kind(self.config.tasks[task].pair_input), self.batch_size * CHUNK_BATCHES, []
        pad = self.tokenizer.pad_token_id
        with progress_bar(len(raw), f"predict {task}", progress, unit="row") as bar:
            for s in range(0, len(raw), chunk):
                split = tokenize_split(raw.take(np.arange(s, min(s + chunk, len(raw)))), self.tokenizer, kind)
                with self._lock:
                    p = predict_split(self.model, t, split, self.device, self.batch_size, self.amp, pad)
                parts.append(p.outputs)
                bar.update(len(split))
        return np.concatenate(parts)

    def predict(self, task: str, inputs: Sequence, progress: bool = False) -> list[dict]:
        """Predictions of any task of the model (built-in or custom), in input order.

        ``inputs``: texts for a single-sentence task, (text, text) pairs for a pair task. Per
        item: classification ``{"label": int, "name": str | None, "probabilities": [C floats]}``;
        binary ``{"label": 0 | 1, "probability": float}``; regression ``{"score": float}``.
        ``progress``: a progress bar over the inputs on stderr (for a large batch).

        Raises:
            MinbertError: unknown task, a task the model lacks, or malformed inputs.
        """
        t = self.task(task)
        if t.pair:
            a, b = _check_pairs(inputs)
            raw = torch.from_numpy(self.outputs(task, a, b, progress))
        else:
            raw = torch.from_numpy(self.outputs(task, _check_texts(inputs), progress=progress))
        if t.kind == "classification":
            probs = torch.softmax(raw, -1).numpy()
            names = t.label_names
            return [
                {
                    "label": int(p.argmax()), "name": names[int(p.argmax())] if names else None,
                    "probabilities": p.tolist(),
                }
                for p in probs
            ]
        if t.kind == "binary":
            return [{"label": int(x > 0), "probability": float(torch.sigmoid(x))} for x in raw]
        return [{"score": float(x)} for x in raw.numpy()]

    def sentiment(self, texts: Sequence[str]) -> list[Sentiment]:
        """Per text: label 0..4, its name, and the 5 class probabilities."""
        texts = _check_texts(texts)
        logits = self.outputs("sst", texts)
        probs = torch.softmax(torch.from_numpy(logits), -1).numpy()
        names = self.task("sst").label_names
        return [Sentiment(int(p.argmax()), names[int(p.argmax())], tuple(float(x) for x in p)) for p in probs]

    def paraphrase(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Probability that each pair is a paraphrase, (N,) float32 in [0, 1]."""
        a, b = _check_pairs(pairs)
        return torch.sigmoid(torch.from_numpy(self.outputs("qqp", a, b))).numpy()

    def similarity(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Similarity score of each pair, (N,) float32 on [0, 5]."""
        a, b = _check_pairs(pairs)
        return self.outputs("sts", a, b)

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], pooling: str = "mean") -> np.ndarray:
        """Sentence embeddings of the fine-tuned encoder, (N, H) float32."""
        texts = _check_texts(texts)
        H = self.model.encoder.config.hidden_size
        if not texts:
            return np.zeros((0, H), dtype=np.float32)
        out = np.zeros((len(texts), H), dtype=np.float32)
        ids, types, _ = self.tokenizer.encode(texts)
        order = np.argsort([len(x) for x in ids], kind="stable")
        from ..data.tokenizer import pad_batch

        with self._lock:
            for s in range(0, len(order), self.batch_size):
                index = order[s : s + self.batch_size]
                batch = pad_batch([ids[i] for i in index], [types[i] for i in index], self.tokenizer.pad_token_id)
                batch = {k: v.to(self.device) for k, v in batch.items()}
                enc = self.model.encode(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
                out[index] = pool(enc, pooling).float().cpu().numpy()
        return out


def load(run_dir: str | Path, device: str = "auto", batch_size: int = 64, quantize: str | None = None) -> Predictor:
    """Load a run folder (its best checkpoint, else its last) or a ``minbert export`` folder
    for prediction. ``device``: auto (CUDA if available), cpu, cuda, cuda:N; ``batch_size``:
    rows per forward pass; ``quantize``: "int8" for dynamic int8 Linear layers (CPU only).

    Raises:
        CheckpointError: the folder is neither a minbert run nor an export, has no checkpoint,
            or its weights do not match its config.
        ConfigError: a bad device, batch size or quantize mode.
    """
    return Predictor(run_dir, device=device, batch_size=batch_size, quantize=quantize)
