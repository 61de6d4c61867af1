"""Reading a run's data: each task's train, dev and test files, read and tokenised once."""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from pathlib import Path

from ..config import Config
from ..data.batching import TokenizedSplit, concat_splits, read_sst_phrases, tokenize_split, verify_checksums
from ..data.tokenizer import Tokenizer
from ..errors import ConfigError
from .base import Task
from .table import task_table

log = logging.getLogger(__name__)

DEV_SAMPLE_SEED = 0  # the seed of every dev_limit sample, whatever train.seed is


def load_splits(
    cfg: Config, data_dir: Path, tokenizer: Tokenizer, tasks: Mapping[str, Task] | None = None, progress: bool = False,
    splits: Collection[str] = ("train", "dev", "test"),
) -> dict[str, dict[str, TokenizedSplit]]:
    """Read and tokenise (once) each task's train, dev and test files: ``{split: {task: data}}``.

    ``tasks``: the run's task table (built from ``cfg`` when not given). ``progress``: a progress
    bar per file while it is tokenised (``tokenise <task> <split>``). ``splits``: the splits to
    read (evaluation needs no train files); the others stay empty.

    Raises:
        DataError: a missing file, a checksum mismatch, or a bad row with ``data.strict``.
        ConfigError: a phrases file on a task that is not sentence classification.
    """
    tasks = task_table(cfg) if tasks is None else tasks
    out: dict[str, dict[str, TokenizedSplit]] = {"train": {}, "dev": {}, "test": {}}
    names = [f for t in cfg.tasks for f in tasks[t].files.values()]
    verify_checksums(data_dir, names)
    for name, tcfg in cfg.tasks.items():
        task = tasks[name]
        kind = task.input_kind(tcfg.pair_input)
        for split, fname in task.files.items():
            if split not in splits or (split == "test" and not cfg.output.test_predictions):
                continue
            raw = task.read(data_dir / fname, split, strict=cfg.data.strict)
            limit = {"train": tcfg.train_limit, "dev": tcfg.dev_limit}.get(split)
            if limit is not None and limit < len(raw):
                stratify = task.kind != "regression"
                # train rows follow train.seed; the dev sample is the same for every seed, so that
                # runs of several seeds score (and ensemble over) the same dev rows
                seed = cfg.train.seed if split == "train" else DEV_SAMPLE_SEED
                raw = raw.sample(limit, seed=seed, stratify=stratify)
                log.info(
                    "%s: %s_limit %d: a random sample of the %s rows (seed %d%s)", name, split, limit, split,
                    seed, ", stratified by label" if stratify else "",
                )
            if task.pair and split == "train" and tcfg.augment_swap:
                raw = raw.plus_swapped()
            if split == "train" and tcfg.phrases_file:
                if task.pair or task.kind != "classification":
                    raise ConfigError(f"tasks.{name}.phrases_file: phrases are sentence-classification data")
                # no dev sentence enters training, and train sentences are not added twice
                dev = task.read(data_dir / task.files["dev"], "dev") if "dev" in task.files else None
                known = {t[0] for t in raw.texts} | {t[0] for t in (dev.texts if dev else [])}
                extra = read_sst_phrases(tcfg.phrases_file, cfg.data.strict, known)
                extra = extra.sample(tcfg.train_limit, seed=cfg.train.seed, stratify=True)
                log.info("%s: %d phrases from %s added to %d train rows", name, len(extra), tcfg.phrases_file, len(raw))
                raw = concat_splits(raw, extra)
            desc = f"tokenise {name} {split}"
            out[split][name] = tokenize_split(raw, tokenizer, kind, progress, desc)
            if task.pair and split != "train" and tcfg.symmetric_eval:
                out[split][name].swapped = tokenize_split(raw.swapped(), tokenizer, kind, progress, f"{desc} (b, a)")
        counts = [f"{len(out[sp][name])} {sp}" for sp in ("train", "dev") if name in out[sp]]
        log.info("%s: %s rows", name, " / ".join(counts) or "no")
    return out
