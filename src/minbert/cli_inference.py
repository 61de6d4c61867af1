"""The commands of the ``minbert`` command line that load a trained run and predict with it:
``evaluate`` (dev metrics and prediction files again), ``ensemble`` (several runs averaged) and
``predict`` (one text or pair, or a file of them). :mod:`minbert.cli` parses the arguments.

Imports only the standard library at module level: ``minbert --help`` loads this module and must
not import torch.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .inference.predictor import Predictor
    from .tasks.base import Task

log = logging.getLogger("minbert")


def cmd_evaluate(args: argparse.Namespace, extra: list[str]) -> int:
    """Predict dev and test of a run again from its best weights; write eval.json and the
    prediction files into the run folder, print the dev metrics as JSON."""
    from .config import full_dev
    from .inference.evaluate import write_run_predictions
    from .inference.predictor import load
    from .io import atomic_write_json
    from .runs import resolve_run_data_dir
    from .tasks.splits import load_splits

    if extra:
        raise ConfigError(f"unrecognised argument {extra[0]!r}")
    pred = load(args.run_dir, device=args.device)
    cfg = full_dev(pred.config) if args.full else pred.config
    limits = {n: t.dev_limit for n, t in cfg.tasks.items() if t.dev_limit is not None}
    if limits:
        log.info("dev scores on seeded samples of %s rows (--full: the whole dev sets)", limits)
    data_dir = resolve_run_data_dir(pred.run_dir, cfg, args.data_dir, args.allow_data_change)
    progress = not args.no_progress
    data = load_splits(cfg, data_dir, pred.tokenizer, pred.task_table, progress=progress, splits=("dev", "test"))
    tasks = {n: pred.task(n) for n in cfg.tasks}
    log.info("predicting dev and test of %s", pred.run_dir)
    model, pad = pred.model, pred.tokenizer.pad_token_id
    result = write_run_predictions(model, tasks, data, pred.run_dir, cfg, pred.device, pred.amp, pad, None, progress)
    flat = result.flat()
    atomic_write_json(pred.run_dir / "eval.json", {"dev": flat, "dev_detail": result.metrics, "dev_limits": limits})
    print(json.dumps(flat))
    return 0


def cmd_ensemble(args: argparse.Namespace, extra: list[str]) -> int:
    """Average the raw outputs of several runs (e.g. seeds) on dev and test; write metrics and
    prediction files into --out."""
    from .inference.evaluate import (
        average_predictions,
        predict_split,
        score_predictions,
        write_predictions,
    )
    from .inference.predictor import load
    from .io import atomic_write_json
    from .runs import CONFIG_FILE, resolve_run_data_dir
    from .tasks.splits import load_splits

    if extra:
        raise ConfigError(f"unrecognised argument {extra[0]!r}")
    if len(args.run_dirs) < 2:
        raise ConfigError("ensemble needs at least two run folders")
    out_dir = Path(args.out)
    if (out_dir / CONFIG_FILE).is_file() or any(out_dir.resolve() == Path(r).resolve() for r in args.run_dirs):
        raise ConfigError(f"--out {out_dir}: is a run folder, whose prediction files the ensemble's would replace; "
                          "give a folder of its own")
    members, per_run = [], {}
    task_names = None
    for run_dir in args.run_dirs:
        pred = load(run_dir, device=args.device)
        names = list(pred.config.tasks)
        if task_names is not None and names != task_names:
            raise ConfigError(f"{run_dir}: tasks {names} differ from {task_names}; ensemble runs of the same tasks")
        task_names = names
        data_dir = resolve_run_data_dir(pred.run_dir, pred.config, args.data_dir, args.allow_data_change)
        progress, bs, pad = not args.no_progress, pred.config.train.eval_batch_size, pred.tokenizer.pad_token_id
        data = load_splits(pred.config, data_dir, pred.tokenizer, pred.task_table, progress, ("dev", "test"))
        tasks = {n: pred.task(n) for n in names}
        out = {  # a bar per run, split and task: "<run folder name> dev sst"
            split: {
                n: predict_split(pred.model, tasks[n], d, pred.device, bs, pred.amp, pad, progress=progress,
                                 desc=f"{Path(run_dir).name} {split} {n}")
                for n, d in data[split].items()
            }
            for split in ("dev", "test")
        }
        per_run[str(run_dir)] = score_predictions(tasks, data["dev"], out["dev"]).flat()
        members.append(out)
        log.info("%s: %s", run_dir, per_run[str(run_dir)])
    for split in ("dev", "test"):
        for n in members[0][split]:
            avg = average_predictions(tasks[n], [m[split][n] for m in members])
            write_predictions(out_dir / "predictions" / f"{n}-{split}.csv", tasks[n], avg, args.format)
            members[0][split][n] = avg
    result = score_predictions(tasks, data["dev"], members[0]["dev"]).flat()
    atomic_write_json(out_dir / "eval.json", {"dev": result, "members": per_run})
    print(json.dumps(result))
    return 0


def _read_input(
    path: Path, pair: bool, task: Task | None = None, fmt: str = "auto"
) -> tuple[list[str], list[str], list[str] | None, list[str]]:
    """Read a .csv/.tsv/.jsonl prediction input (``fmt``: ``auto`` by suffix, or ``csv``,
    ``tsv``, ``jsonl``): ids, a-texts, b-texts, and bad-row messages
    (``file:line: reason``; those rows are skipped and logged, see :mod:`minbert.data.readers`).
    Text columns: ``sentence`` (or ``text``), or ``sentence1`` and ``sentence2`` for pairs; a
    custom ``task`` uses its own columns (and the generic names where those are absent). Ids:
    the ``id`` column, else the line number. An empty or whitespace text is kept as ``""``, so
    that every id gets a prediction (from an empty input).

    Raises:
        DataError: missing or empty file, unknown suffix, a header without the text columns,
            or no usable row.
    """
    from .data.readers import read_records

    cols = ("sentence1", "sentence2") if pair else ("sentence",)
    fallbacks = {} if pair else {"sentence": "text"}
    id_column = "id"
    if task is not None and getattr(task, "definition", None) is not None:  # a custom task
        fallbacks = {c: g for c, g in zip(task.text_columns, cols, strict=True) if c != g}
        cols, id_column = task.text_columns, task.id_column or "id"
    raw = read_records(
        path, cols, text_fallbacks=fallbacks, id_column=id_column, id_optional=True, keep_empty_text=True, fmt=fmt
    )
    a = [t[0] for t in raw.texts]
    b = [t[1] for t in raw.texts] if pair else None
    return raw.ids, a, b, [str(x) for x in raw.bad_rows]


def cmd_predict(args: argparse.Namespace, extra: list[str]) -> int:
    """Predict ``--text`` (one JSON line on stdout) or every row of ``--input`` (a CSV of id and
    prediction, to ``--output`` or stdout)."""
    from .inference.predictor import load
    from .io import atomic_write_text

    if extra:
        raise ConfigError(f"unrecognised argument {extra[0]!r}")
    if (args.text is None) == (args.input is None):
        raise ConfigError("give exactly one of --text or --input")
    if args.output and Path(args.output).is_dir():
        raise ConfigError(f"--output {args.output}: is a folder; give a file name")
    if args.output and args.input and Path(args.output).resolve() == Path(args.input).resolve():
        raise ConfigError(f"--output {args.output}: is the --input file; give another file name")
    pred = load(args.run_dir, device=args.device, batch_size=args.batch_size, quantize=args.quantize)
    task = pred.task(args.task)  # an unknown task, or one the model lacks: ConfigError
    if args.text is not None:
        texts = args.text
        if task.pair and len(texts) != 2:
            raise ConfigError(f"--task {args.task} takes a pair: --text \"first\" \"second\"")
        if not task.pair and len(texts) != 1:
            raise ConfigError(f"--task {args.task} takes one --text")
        if any(not t.strip() for t in texts):
            raise ConfigError("--text: empty or whitespace-only text")
        for t in texts:
            try:  # bytes that are not UTF-8 reach argv as lone surrogates
                t.encode("utf-8")
            except UnicodeEncodeError:
                raise ConfigError("--text: not valid UTF-8 text (pass text in the terminal's UTF-8 encoding)") from None
        out = _predict_values(pred, task, [texts[0]], [texts[1]] if task.pair else None)
        print(json.dumps(out[0]))
        return 0
    ids, a, b, _ = _read_input(Path(args.input), task.pair, task, args.input_format)  # bad rows are logged
    import torch

    from .inference.evaluate import check_finite

    raw = pred.outputs(task.name, a, b, progress=not args.no_progress)  # a bar over the rows
    check_finite(task.name, raw, ids)  # NaN or inf outputs: one error line, no file
    values = task.predict(torch.from_numpy(raw))
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", task.prediction_column])
    writer.writerows((i, task.format_value(v)) for i, v in zip(ids, values, strict=True))
    lines = buf.getvalue().rstrip("\n").split("\n")
    if args.output:
        atomic_write_text(args.output, "\n".join(lines) + "\n")
        log.info("wrote %d predictions to %s", len(ids), args.output)
    else:
        sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _predict_values(
    pred: Predictor, task: Task, a: list[str], b: list[str] | None, ids: list[str] | None = None
) -> list[dict]:
    """Predicted label (classification: with its probabilities and name; binary: with P(1)) or
    score (regression) of each text or pair.

    Raises:
        NonFiniteOutputError: the model's outputs are NaN or infinite.
    """
    import numpy as np
    import torch

    from .inference.evaluate import check_finite

    raw = pred.outputs(task.name, a, b)
    check_finite(task.name, raw, ids)
    values = task.predict(torch.from_numpy(raw))
    out = []
    for v, r in zip(values, raw, strict=True):
        key = "score" if task.kind == "regression" else "label"  # the server's and minbert.load's names
        rec = {key: v.item() if hasattr(v, "item") else v}
        if task.kind == "classification":
            rec["probabilities"] = torch.softmax(torch.from_numpy(np.asarray(r)), -1).tolist()
            if task.label_names:
                rec["name"] = task.label_names[int(v)]
        elif task.kind == "binary":
            rec["probability"] = float(torch.sigmoid(torch.tensor(float(r))))
        out.append(rec)
    return out
