"""Model cards: a README.md with Hugging Face model-card metadata for a run folder, an export
folder and each of its task folders.

The card is generated from the run's ``config.yaml``, ``summary.json`` (dev scores) and
``provenance.json`` (training command, git SHA, data SHA-256 sums). It starts with a YAML block
(``base_model``, ``license`` where the base encoder's own card names one, ``library_name``,
``pipeline_tag``, ``tags``, ``datasets``, ``metrics``, ``model-index`` with the dev scores, and a
``minbert`` block: run name, weights, command, git SHA, data sums, the headline dev scores),
then says what the model is, its scores, how to load it (minbert, transformers,
sentence-transformers), how it was trained, on which data, and its intended use and limits.

A run without ``summary.json`` or ``provenance.json`` (an unfinished or older run) gets a card
without scores or sums; such a file that is not a JSON object is left out with a warning.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..config import Config, load_config
from ..errors import CheckpointError, ConfigError
from ..io import atomic_write_text
from ..model.hf_folder import DEFAULT_ENCODER, resolve_encoder_path
from ..runs import CONFIG_FILE, PROVENANCE_FILE, best_or_last_weights
from ..tasks.base import Task
from ..tasks.table import task_table
from .export_plan import EXPORT_TASKS, SENTENCE_TRANSFORMERS, TRANSFORMERS, TaskExport, label_names, plan_exports

log = logging.getLogger(__name__)

CARD_FILE = "README.md"
DEFAULT_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # the packaged "default" encoder
# the public releases of the built-in tasks' data (the CS224N splits are drawn from them)
HUB_DATASETS = {"sst": ("stanfordnlp/sst", None), "qqp": ("nyu-mll/glue", "qqp"), "sts": ("nyu-mll/glue", "stsb")}
DATASET_NAMES = {"sst": "SST-5 (Stanford Sentiment Treebank)", "qqp": "Quora Question Pairs",
                 "sts": "STS-B (Semantic Textual Similarity Benchmark)"}
METRICS = {"acc": ("accuracy", "accuracy"), "f1": ("f1", "F1"), "macro_f1": ("f1", "macro F1"),
           "pearson": ("pearsonr", "Pearson r"), "spearman": ("spearmanr", "Spearman rho")}
MINBERT_CALLS = {"sst": "sentiment(texts)", "qqp": "paraphrase(pairs)", "sts": "similarity(pairs)"}


@dataclass(frozen=True)
class _Run:
    dir: Path
    cfg: Config
    table: dict[str, Task]
    plans: dict[str, TaskExport]
    summary: dict
    prov: dict


def _read_json(path: Path) -> dict:
    """A JSON object file; {} when it is missing, and (with a warning) when it is not one."""
    if not path.is_file():
        return {}
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        log.warning("%s: cannot read it (%s); the model card leaves it out", path, e)
        return {}
    if not isinstance(obj, dict):
        log.warning("%s: not a JSON object; the model card leaves it out", path)
        return {}
    return obj


def _read_run(run_dir: Path) -> _Run:
    cfg = load_config(run_dir / CONFIG_FILE)
    table = task_table(cfg)
    return _Run(run_dir, cfg, table, plan_exports(cfg, table), _read_json(run_dir / "summary.json"),
                _read_json(run_dir / PROVENANCE_FILE))


def _number(v: object) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _cell(text: object) -> str:
    """Text for one markdown table cell or heading: one line, no column breaks."""
    return re.sub(r"\s+", " ", str(text)).replace("|", "\\|").strip()


def _code(text: str, lang: str = "") -> str:
    """A fenced code block whose fence no backtick run in ``text`` closes."""
    fence = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return f"{fence}{lang}\n{text.rstrip()}\n{fence}"


def _base_model(cfg: Config) -> str:
    return DEFAULT_BASE_MODEL if cfg.model.encoder == DEFAULT_ENCODER else cfg.model.encoder


def _license(cfg: Config) -> str | None:
    """The ``license`` of the base encoder's own model card, when it is here and names one."""
    try:
        text = (resolve_encoder_path(cfg.model.encoder) / CARD_FILE).read_text(encoding="utf-8")
        meta = yaml.safe_load(text.split("---", 2)[1]) if text.startswith("---") else None
    except (CheckpointError, OSError, UnicodeDecodeError, IndexError, yaml.YAMLError):
        return None
    lic = meta.get("license") if isinstance(meta, dict) else None
    return lic if isinstance(lic, str) and lic.strip() else None


def _dev(run: _Run, tasks: list[str], whole: bool) -> dict:
    """The summary's headline dev scores (``dev``): all of them, or those of ``tasks``."""
    dev = run.summary.get("dev")
    if not isinstance(dev, dict):
        return {}
    return dict(dev) if whole else {k: v for k, v in dev.items() if any(k.startswith(f"{t}_") for t in tasks)}


def _scores(run: _Run, task: str) -> list[tuple[str, float]]:
    """(metric key, value) of one task's finite dev scores in the summary (``dev_all``)."""
    dev = run.summary.get("dev_all")
    dev = dev if isinstance(dev, dict) else {}
    return [(m, v) for m in METRICS if (v := _number(dev.get(f"{task}_{m}"))) is not None]


def _model_index(run: _Run, tasks: list[str]) -> list[dict]:
    results = []
    for t in tasks:
        scores = _scores(run, t)
        if not scores:
            continue
        task = run.table[t]
        kind = "sentence-similarity" if task.kind == "regression" and task.pair else "text-classification"
        hub, config = HUB_DATASETS.get(t, (t, None))
        sample = (run.summary.get("dev_limits") or {}).get(t)
        split = f"dev split, a seeded sample of {sample} rows" if sample else "dev split"
        dataset = {"name": f"{DATASET_NAMES.get(t, t)}, {split}", "type": hub, "split": "dev"}
        if config:
            dataset["config"] = config
        metrics = [{"type": METRICS[m][0], "value": v, "name": f"dev {METRICS[m][1]}"} for m, v in scores]
        results.append({"task": {"type": kind, "name": t}, "dataset": dataset, "metrics": metrics})
    return [{"name": run.cfg.name, "results": results}] if results else []


def _data_sums(run: _Run, tasks: list[str]) -> dict[str, str]:
    sums = run.prov.get("data_sha256")
    if not isinstance(sums, dict):
        return {}
    files = {f for t in tasks for f in run.table[t].files.values()}
    return {f: h for f, h in sums.items() if f in files}


def _command(run: _Run) -> str | None:
    """The training command as a user types it: the recorded argv, with minbert's own entry point
    (``.../bin/minbert`` or ``python -m minbert``'s ``__main__.py``) shown as ``minbert``."""
    cmd = run.prov.get("command")
    if isinstance(cmd, list) and cmd:
        words = [str(c) for c in cmd]
        entry = Path(words[0])
        if entry.name == "minbert" or (entry.name == "__main__.py" and entry.parent.name == "minbert"):
            words[0] = "minbert"
        return shlex.join(words)
    return cmd if isinstance(cmd, str) and cmd else None


def _metadata(run: _Run, tasks: list[str], scope: str, weights: str | None) -> dict:
    """The YAML block: ``scope`` "run", "export" or the library of a task folder."""
    library = {"run": "minbert", "export": TRANSFORMERS}.get(scope, scope)
    meta: dict = {"base_model": _base_model(run.cfg)}
    if lic := _license(run.cfg):
        meta["license"] = lic
    meta["library_name"] = library
    if scope in (TRANSFORMERS, SENTENCE_TRANSFORMERS):
        meta["pipeline_tag"] = "sentence-similarity" if scope == SENTENCE_TRANSFORMERS else "text-classification"
    tags = ["minbert", "bert", *tasks]
    if scope == SENTENCE_TRANSFORMERS:
        tags += ["sentence-transformers", "sentence-similarity", "feature-extraction"]
    elif scope == TRANSFORMERS:
        tags += ["text-classification"] + (["cross-encoder"] if run.table[tasks[0]].pair else [])
    meta["tags"] = list(dict.fromkeys(tags))
    if datasets := list(dict.fromkeys(HUB_DATASETS[t][0] for t in tasks if t in HUB_DATASETS)):
        meta["datasets"] = datasets
    if metrics := list(dict.fromkeys(METRICS[m][0] for t in tasks for m, _ in _scores(run, t))):
        meta["metrics"] = metrics
    if model_index := _model_index(run, tasks):
        meta["model-index"] = model_index
    meta["minbert"] = {
        "run": run.cfg.name,
        "weights": weights,
        "command": _command(run),
        "git_sha": run.prov.get("git_sha"),
        "data_sha256": _data_sums(run, tasks),
        "dev": _dev(run, tasks, whole=scope in ("run", "export")),
    }
    return meta


def _output_note(run: _Run, name: str) -> str:
    """What a task folder's outputs are, and the map back to minbert's outputs."""
    task, tcfg, plan = run.table[name], run.cfg.tasks[name], run.plans[name]
    rng = task.output_range
    low_high = f"{rng[0]:g} + ({rng[1]:g} - {rng[0]:g})" if rng else ""
    if plan.library == SENTENCE_TRANSFORMERS:
        cos = "(cos + 1) / 2" if tcfg.head == "cosine" else "max(cos, 0)"
        return (f"Unit-length {tcfg.pooling}-pooled embeddings; the {name} score of a pair is "
                f"`{low_high} * {cos}`, cos the cosine of the two embeddings (`model.similarity_pairwise`).")
    if task.kind == "classification":
        names = ", ".join(label_names(task))
        return f"{task.num_outputs} logits; their softmax gives the label probabilities ({names})."
    if task.kind == "binary":
        return (f"One logit z (`num_labels` 1, `problem_type` multi_label_classification): the probability that "
                f"{task.label_column} = 1 is `sigmoid(z)`, the activation that `pipeline` and `CrossEncoder` apply.")
    ce = "`CrossEncoder.predict` (its activation is Sigmoid, set in config.json) and " if task.pair else ""
    return (f"One logit z (`problem_type` regression); the score is `{low_high} * sigmoid(z)` on "
            f"[{rng[0]:g}, {rng[1]:g}]: {ce}`pipeline(..., function_to_apply=\"sigmoid\")` return p = `sigmoid(z)`, "
            f"and the score is `{low_high} * p`.")


def _task_snippet(run: _Run, name: str, path: Path) -> str:
    """Loading code of one task folder, down to minbert's output."""
    task, tcfg, p = run.table[name], run.cfg.tasks[name], repr(str(path))
    same = f"# = minbert's {MINBERT_CALLS.get(name, f'predict({name!r}, ...)')}"
    low, high = task.output_range or (0.0, 1.0)
    scale = f"{low:g} + ({high:g} - {low:g})"
    if run.plans[name].library == SENTENCE_TRANSFORMERS:
        cos = "(cos + 1) / 2" if tcfg.head == "cosine" else "cos.clamp(min=0)"
        lines = ["from sentence_transformers import SentenceTransformer", "", f"model = SentenceTransformer({p})",
                 'u = model.encode(["A man is playing a guitar."])', 'v = model.encode(["A man plays the guitar."])',
                 "cos = model.similarity_pairwise(u, v)", f"score = {scale} * {cos}  {same}"]
        return _code("\n".join(lines), "python")
    fn = ', function_to_apply="sigmoid"' if task.kind == "regression" else ""
    lines = []
    if task.pair:
        args = "pairs, apply_softmax=True" if task.num_outputs > 1 else "pairs"
        tail = "" if task.kind == "regression" else f"  {same}"
        lines += ["from sentence_transformers import CrossEncoder", "", f"model = CrossEncoder({p})",
                  'pairs = [("A man is playing a guitar.", "A man plays the guitar.")]',
                  f"p = model.predict({args}){tail}"]
        if task.kind == "regression":
            lines.append(f"score = {scale} * p  {same}")
        lines.append("")
        inputs = '[{"text": "A man is playing a guitar.", "text_pair": "A man plays the guitar."}]'
    else:
        inputs = '["a gorgeous, witty film"]'
    lines += ["from transformers import pipeline", "",
              f'classify = pipeline("text-classification", model={p}, top_k=None{fn})',
              f"out = classify({inputs}, truncation=True)"]
    if task.kind == "regression":
        lines.append(f'score = {scale} * out[0][0]["score"]  {same}')
    return _code("\n".join(lines), "python")


def _usage(run: _Run, tasks: list[str], scope: str, where: Path) -> list[str]:
    """The "How to load" section."""
    out = ["## How to load", ""]
    if scope in (TRANSFORMERS, SENTENCE_TRANSFORMERS):
        name = tasks[0]
        out += [_output_note(run, name), "", _task_snippet(run, name, where), ""]
        unit = {"single": "each text", "bi": "each sentence", "cross": "both texts of a pair together"}[
            run.table[name].input_kind(run.cfg.tasks[name].pair_input)]
        out += ["Inputs are truncated to the run's `model.max_length` "
                f"({run.cfg.model.max_length} tokens, {unit}) as minbert does.", ""]
        return out
    call = "\n".join(f"model.{MINBERT_CALLS.get(t, f'predict({t!r}, inputs)')}" for t in tasks)
    out += [_code(f"import minbert\n\nmodel = minbert.load({repr(str(where))})\n{call}\n"
                  "model.embed(texts, pooling=\"mean\")", "python"), ""]
    if scope == "export":
        p = repr(str(where))
        out += ["The fine-tuned encoder alone (no heads):", "",
                _code(f"from transformers import AutoModel, AutoTokenizer\n\nencoder = AutoModel.from_pretrained({p})\n"
                      f"tokenizer = AutoTokenizer.from_pretrained({p})", "python"), "",
                "### Task folders", "",
                f"Each `{EXPORT_TASKS}/<task>` folder is a complete model (encoder, head, tokenizer, card) for "
                "transformers or sentence-transformers; a head without an exact equivalent gets none.", ""]
    else:
        out += [f"`minbert export {shlex.quote(str(where))} OUT` writes a Hugging Face folder, and one folder per task "
                "whose head maps exactly onto transformers or sentence-transformers:", ""]
    for t in tasks:
        plan = run.plans[t]
        if plan.library and scope == "export":
            out += [f"#### `{EXPORT_TASKS}/{t}` ({plan.library})", "", _output_note(run, t), "",
                    _task_snippet(run, t, where / EXPORT_TASKS / t), ""]
        elif plan.library:
            out.append(f"- {t}: `OUT/{EXPORT_TASKS}/{t}` ({plan.library})")
    out += [f"- {_cell(run.plans[t].line)}" for t in tasks if run.plans[t].library is None]
    return out + [""]


def _tables(run: _Run, tasks: list[str]) -> list[str]:
    """The tasks, their heads and dev scores."""
    out = ["## Tasks and dev scores", "", "| task | kind | head | pooling | input | dev |", "|---|---|---|---|---|---|"]
    for t in tasks:
        task, tc = run.table[t], run.cfg.tasks[t]
        scores = ", ".join(f"{METRICS[m][1]} {v:.4f}" for m, v in _scores(run, t)) or "not recorded"
        row = (t, task.kind, tc.head, tc.pooling, task.input_kind(tc.pair_input), scores)
        out.append("| " + " | ".join(_cell(c) for c in row) + " |")
    overall = _number(run.summary.get("dev", {}).get("overall")) if isinstance(run.summary.get("dev"), dict) else None
    if overall is not None and len(tasks) > 1:
        out += ["", f"Overall dev score (the mean of the tasks' scores on [0, 1]): {overall:.4f}."]
    return out + [""]


def _training(run: _Run, tasks: list[str], weights: str | None) -> list[str]:
    cfg, s = run.cfg, run.summary
    out = ["## Training", ""]
    cmd = _command(run)
    out += ["Command:", "", _code(cmd, "bash"), ""] if cmd else ["The training command was not recorded.", ""]
    lr = "default" if cfg.optim.lr is None else f"{cfg.optim.lr:g}"
    out.append(f"- Base encoder: `{_cell(_base_model(cfg))}`; routine {cfg.train.routine}, "
               f"{cfg.train.epochs} epoch(s), optimiser {cfg.optim.name} (lr {lr}, schedule {cfg.optim.schedule}), "
               f"seed {cfg.train.seed}")
    if weights:
        out.append(f"- Weights: `{_cell(weights)}`")
    if s:
        out.append(f"- Best epoch {_cell(s.get('best_epoch'))}, {_cell(s.get('steps'))} optimizer steps, "
                   f"{_cell(s.get('wall_s'))} s")
    versions = ", ".join(f"{k} {_cell(run.prov[k])}" for k in ("minbert", "torch", "python") if run.prov.get(k))
    if versions or run.prov.get("git_sha"):
        out.append(f"- {versions}; git {_cell(run.prov.get('git_sha') or 'unknown')}")
    out += ["", "## Data", ""]
    sums = _data_sums(run, tasks)
    if sums:
        out += ["SHA-256 of the data files the run read:", "", "| file | SHA-256 |", "|---|---|"]
        out += [f"| {_cell(f)} | `{_cell(h)}` |" for f, h in sums.items()]
    else:
        out.append("The data files' SHA-256 sums were not recorded.")
    names = [f"{t}: {DATASET_NAMES[t]}" for t in tasks if t in DATASET_NAMES]
    if names:
        out += ["", f"The CS224N course splits of {'; '.join(names)}."]
    return out + [""]


def _limits(run: _Run, tasks: list[str]) -> list[str]:
    public = [DATASET_NAMES[t] for t in tasks if t in DATASET_NAMES]
    terms = f" ({', '.join(public)})" if public else ""
    return [
        "## Intended use and limits", "",
        f"For research and teaching: {', '.join(tasks)} on English text like the training data, and the fine-tuned "
        "encoder as a starting point for further fine-tuning.", "",
        "- Scored on the dev splits only (the test labels are not public); other domains and languages are untested.",
        *[f"- {t}: scored on a seeded sample of {n} dev rows, not the whole dev split (`minbert evaluate RUN --full`)."
          for t, n in (run.summary.get("dev_limits") or {}).items() if t in tasks],
        f"- Inputs longer than {run.cfg.model.max_length} tokens (a cross-encoder pair: both texts together) "
        "are truncated.",
        "- Not evaluated for bias or robustness: do not base decisions about people on its outputs.",
        f"- The data sets carry their own terms of use{terms}.", "",
    ]


def render_model_card(
    run_dir: str | os.PathLike, export: str | os.PathLike | None = None, task: str | None = None,
    weights: str | os.PathLike | None = None,
) -> str:
    """The README.md text of a run folder (``export`` None), of an export folder ``export``, or of
    its folder ``export/tasks/<task>``. ``weights``: the weights file the model holds.

    Raises:
        ConfigError: the run's config is unreadable or invalid, or ``task`` is not one of its tasks
            or gets no task folder.
        ValueError: ``task`` without ``export``.
    """
    run_dir = Path(run_dir)
    run = _read_run(run_dir)
    if task is not None and export is None:
        raise ValueError("a task folder's card needs the export folder")
    if task is not None and (task not in run.plans or run.plans[task].library is None):
        raise ConfigError(f"task {task!r}: no task folder in an export of {run_dir}")
    tasks = [task] if task else list(run.cfg.tasks)
    scope = "run" if export is None else (run.plans[task].library if task else "export")
    where = run_dir if export is None else (Path(export) / EXPORT_TASKS / task if task else Path(export))
    weights = str(weights) if weights is not None else None
    front = yaml.safe_dump(_metadata(run, tasks, scope, weights), sort_keys=False, allow_unicode=True)
    what = {"run": "A minbert run folder", "export": "A minbert export"}.get(
        scope, f"The {task} task of a minbert run as a {scope} model"
    )
    title = _cell(f"{run.cfg.name}: {task}" if task else run.cfg.name) or "minbert model"
    lines = [f"# {title}", "",
             f"{what}: a BERT encoder fine-tuned with minbert on {', '.join(run.cfg.tasks)} at once (multi-task), "
             f"from `{_cell(_base_model(run.cfg))}`.", ""]
    lines += _tables(run, tasks) + _usage(run, tasks, scope, where)
    lines += _training(run, tasks, weights) + _limits(run, tasks)
    return f"---\n{front}---\n\n" + "\n".join(lines).rstrip() + "\n"


def write_model_card(run_dir: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the model card (README.md, atomically) of a run folder (``out`` None: into the run
    folder) or of an export of it in ``out``. Returns the card's path.

    Raises:
        ConfigError: the run's config is unreadable or invalid.
    """
    run_dir = Path(run_dir)
    try:
        weights = best_or_last_weights(run_dir).relative_to(run_dir)
    except CheckpointError:  # a run without a checkpoint yet
        weights = None
    path = (run_dir if out is None else Path(out)) / CARD_FILE
    atomic_write_text(path, render_model_card(run_dir, export=out, weights=weights))
    return path
