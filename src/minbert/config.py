"""Run configuration: frozen dataclasses loaded from YAML, with dotted overrides.

A config file mirrors :class:`Config`::

    model: {encoder: default, max_length: 128}
    tasks: {sst: {batch_size: 32}, qqp: {...}, sts: {...}}
    train: {routine: parallel, epochs: 10}
    optim: {name: adamw, lr: 1.0e-5}

Overrides use dotted keys, e.g. ``--optim.lr=2e-5`` or ``--tasks.sst.batch_size=8``; values are
parsed as YAML scalars. An unknown key, a wrong type, or a value outside its allowed set raises
:class:`ConfigError` naming the key. Code never mutates a config: use :func:`replace`.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from .errors import ConfigError

Pooling = Literal["cls", "pooler", "mean"]

# YAML 1.1 (PyYAML) reads 1e-5 (no dot) as a string; accept it where a number is expected
_EXP_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


@dataclass(frozen=True)
class ModelConfig:
    encoder: str = "default"  # "default" (packaged all-MiniLM-L6-v2) or a local HF BERT folder
    max_length: int = 128  # tokens per sequence (pair: both sentences together)
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    hidden_dropout_prob: float | None = None  # None: keep the checkpoint's value
    attention_probs_dropout_prob: float | None = None  # None: keep the checkpoint's value


@dataclass(frozen=True)
class TaskConfig:
    """One task's head and training options (the task itself is defined in :mod:`minbert.tasks`)."""

    head: str = "baseline"
    pooling: Pooling = "cls"
    pair_input: Literal["bi", "cross"] = "bi"  # pair tasks: encode a and b apart, or together
    dropout: float = 0.3
    batch_size: int = 32
    weight: float = 1.0  # multiplier of this task's loss in the total
    # use a seeded random sample of N training rows (stratified by label for classification;
    # seed train.seed), and of N phrases with phrases_file
    train_limit: int | None = None
    dev_limit: int | None = None  # evaluate a seeded random sample of N dev rows (likewise)
    hidden_size: int = 256  # hidden width of heads that have one (conv1d, mlp, gelu, compress_expand)
    # head cosine: k extra Linear(H, H) + tanh layers on each embedding before the similarity
    # (the reference paper's "additional STS layers", its exp 9 and 12); 0 for every other head
    head_layers: int = 0
    augment_swap: bool = False  # pair tasks: also train on every pair as (b, a)
    phrases_file: str | None = None  # sst: a PTB sentiment tree file whose phrases are extra train rows
    symmetric_eval: bool = False  # pair tasks: average the outputs of (a, b) and (b, a) at prediction


def _default_tasks() -> dict[str, TaskConfig]:
    return {"sst": TaskConfig(), "qqp": TaskConfig(), "sts": TaskConfig()}


@dataclass(frozen=True)
class DataConfig:
    dir: str | None = None  # None: --data-dir, else $MINBERT_DATA_DIR
    strict: bool = False  # any bad row is fatal
    bucket_by_length: bool = True  # batches of similar length (shuffled order of buckets)
    # training batches are padded to a multiple of this many tokens (None: 16 when CUDA graphs
    # are on, which keeps the number of batch shapes, hence of graphs, small; else 1)
    pad_to_multiple_of: int | None = None


@dataclass(frozen=True)
class TrainConfig:
    routine: Literal["parallel", "sequential", "sampled"] = "parallel"
    # sampled routine: each step trains one task drawn by this schedule (Stickland & Murray 2019)
    sampling: Literal["round_robin", "proportional", "sqrt", "annealed"] = "sqrt"
    pcgrad: bool = False  # project conflicting task gradients (Yu et al. 2020); parallel routine only
    mode: Literal["finetune", "frozen"] = "finetune"
    epochs: int = 10
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    grad_accum: int = 1
    max_grad_norm: float | None = None
    amp: Literal["auto", "bf16", "off"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    early_stopping_patience: int | None = None  # epochs without overall-dev improvement
    checkpoint_every: int = 0  # optimizer steps between checkpoints (0: epoch ends only)
    nonfinite: Literal["stop", "skip"] = "stop"
    # nonfinite=skip: more skipped steps than this fraction of all optimizer steps stops the run
    # (NonFiniteLossError, as nonfinite=stop does)
    max_nonfinite_fraction: float = 0.01
    max_steps: int | None = None  # stop after this many optimizer steps (debugging, smoke tests)
    # optimizer steps between extra dev evaluations (0: at epoch ends only); they are logged
    # (metrics.jsonl, tensorboard) but the best model is still chosen at epoch ends only
    eval_every: int = 0
    eval_batch_size: int = 256
    compile: Literal["auto", "on", "off"] = "off"  # torch.compile the encoder (auto: on CUDA only)
    # replay each recurring batch shape's forward+backward as a CUDA graph (minbert.cudagraph).
    # auto: on for CUDA training without compile and PCGrad; on: raise if unsupported
    cuda_graphs: Literal["auto", "on", "off"] = "auto"
    # how several processes (torchrun) average gradients: ddp (DistributedDataParallel: bucketed
    # all-reduces overlapped with backward), flat (one all_reduce of one flat gradient buffer
    # after the step's backward passes; what CUDA graphs need), auto (flat with graphs, else ddp)
    grad_sync: Literal["auto", "ddp", "flat"] = "auto"
    log_every: int = 50  # optimizer steps between host syncs that write the step losses
    # task weighting: fixed (tasks.*.weight) or learned homoscedastic uncertainty (Kendall et
    # al. 2018): sum_t exp(-s_t) w_t L_t + s_t, one learned log-variance s_t per task
    loss_weighting: Literal["fixed", "uncertainty"] = "fixed"
    # SMART adversarial smoothness (Jiang et al. 2020; minbert.regularize): lambda_s, noise std,
    # ascent step, l-inf radius on the word embeddings. 0 turns it off
    smart_weight: float = 0.0
    smart_sigma: float = 1.0e-5
    smart_eta: float = 1.0e-3
    smart_eps: float = 1.0e-5
    rdrop_alpha: float = 0.0  # R-Drop (Liang et al. 2021): weight of the two-pass divergence; 0: off
    # checkpoint averaging: also evaluate the mean of the last k epochs' weights (0: off); the
    # final model is the average when its dev overall beats the best single epoch
    average_last: int = 0
    # surgical fine-tuning (Lee et al. 2023, "Surgical Fine-Tuning Improves Adaptation to
    # Distribution Shifts"): 0 trains everything; k >= 1 freezes the embeddings and encoder
    # layers 0..k-1; -1 freezes the embeddings only (see minbert.surgical)
    freeze_layers: int = 0
    # a run folder whose best weights (else last checkpoint's) initialise the whole model before
    # training; its heads must match this config's exactly (checked key by key and shape by shape)
    init_from: str | None = None


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["adamw", "torch_adamw", "lion"] = "adamw"
    lr: float | None = None  # None: 1e-5 for finetune, 1e-3 for frozen (the reference defaults)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-6
    weight_decay: float = 0.0
    schedule: Literal["constant", "linear"] = "constant"
    warmup_ratio: float = 0.0  # fraction of all steps spent in linear warmup
    layer_lr_decay: float = 1.0  # lr x decay^(L + 1 - depth) per encoder layer (1.0: off)
    head_lr: float | None = None  # lr of the task heads (None: optim.lr)


@dataclass(frozen=True)
class OutputConfig:
    dir: str | None = None  # run folder; None: runs/<config name>
    format: Literal["default", "cs224n"] = "default"
    test_predictions: bool = True
    plot: bool = True
    tensorboard: bool = True


@dataclass(frozen=True)
class CustomColumnsConfig:
    """Column names of a custom task's data files (header names; keys for JSONL)."""

    text: str = "sentence"  # the (first) text
    text_b: str | None = None  # the second text of a pair task
    label: str = "label"  # not needed in the test file
    id: str | None = None  # None: rows are numbered (line numbers)


@dataclass(frozen=True)
class CustomTaskConfig:
    """A task defined in the config, without code (see :mod:`minbert.custom`)."""

    kind: Literal["classification", "regression"] | None = None  # required
    input: Literal["single", "pair"] = "single"
    num_labels: int | None = None  # classification: N labels 0..N-1 (or give label_names)
    label_names: tuple[str, ...] | None = None  # classification: the labels' names, index order
    range: tuple[float, float] | None = None  # regression: [low, high] of the scores
    files: dict[str, str] = field(default_factory=dict)  # train, dev (and test): .csv/.tsv/.jsonl
    columns: CustomColumnsConfig = field(default_factory=CustomColumnsConfig)
    format: Literal["auto", "csv", "tsv", "jsonl"] = "auto"  # auto: from the file suffix


@dataclass(frozen=True)
class Config:
    name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    tasks: dict[str, TaskConfig] = field(default_factory=_default_tasks)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    # tasks defined in the config (minbert.custom); each one trains when listed under `tasks`
    # (a config with custom_tasks but no `tasks` section trains sst, qqp, sts and every custom task)
    custom_tasks: dict[str, CustomTaskConfig] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------


def _build(tp: Any, value: Any, where: str) -> Any:
    """Check ``value`` against the type annotation ``tp`` and build dataclasses from dicts."""
    origin = get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        hints = typing.get_type_hints(tp)
        names = {f.name for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - names)
        if unknown:
            prefix = f"{where}." if where else ""
            raise ConfigError(f"unknown config key {prefix}{unknown[0]} (allowed: {', '.join(sorted(names))})")
        kwargs = {k: _build(hints[k], v, f"{where}.{k}" if where else k) for k, v in value.items()}
        return tp(**kwargs)
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _build(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")
    if origin is Literal:
        if isinstance(value, bool) and ("on" if value else "off") in get_args(tp):
            value = "on" if value else "off"  # YAML 1.1 reads on/off as booleans
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if origin is dict:
        _, vt = get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {str(k): _build(vt, v if v is not None else {}, f"{where}.{k}") for k, v in value.items()}
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:  # tuple[X, ...]: a list of any length
            if not isinstance(value, (list, tuple)):
                raise ConfigError(f"{where}: expected a list, got {value!r}")
            return tuple(_build(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{where}: expected a list of {len(args)} values, got {value!r}")
        return tuple(_build(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is float:
        if isinstance(value, str) and _EXP_NUMBER.fullmatch(value.strip()):
            value = float(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp} at {where}")  # a bug in this module


def to_dict(cfg: Any) -> Any:
    """A plain (YAML-serialisable) dict of a config."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, dict):
        return {k: to_dict(v) for k, v in cfg.items()}
    if isinstance(cfg, tuple):
        return [to_dict(v) for v in cfg]
    return cfg


def from_dict(raw: dict) -> Config:
    """Build a :class:`Config` from a plain dict. Raises :class:`ConfigError`."""
    raw = raw or {}
    if isinstance(raw, dict) and isinstance(raw.get("custom_tasks"), dict) and "tasks" not in raw:
        # no `tasks` section: the built-in three and every custom task train
        raw = {**raw, "tasks": {**{k: {} for k in _default_tasks()}, **{str(k): {} for k in raw["custom_tasks"]}}}
    return validate(_build(Config, raw, ""))


def validate(cfg: Config) -> Config:
    """Check the ranges of values whose type alone does not make them valid; returns ``cfg``.

    Raises:
        ConfigError: ``tasks.<name>.train_limit`` or ``dev_limit`` below 1 (null means all rows),
            ``train.max_nonfinite_fraction`` outside [0, 1], and what :func:`validate_training` refuses.
    """
    for name, tcfg in cfg.tasks.items():
        for key in ("train_limit", "dev_limit"):
            value = getattr(tcfg, key)
            if value is not None and value < 1:
                raise ConfigError(f"tasks.{name}.{key} must be >= 1 (or null for all rows), got {value}")
    fraction = cfg.train.max_nonfinite_fraction
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"train.max_nonfinite_fraction must be in [0, 1] (a fraction of all optimizer steps), got {fraction}")
    validate_training(cfg)
    return cfg


def _parse_override(item: str) -> tuple[list[str], Any]:
    item = item[2:] if item.startswith("--") else item
    if "=" not in item:
        raise ConfigError(f"override {item!r}: expected --key.sub=value")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text != "" else None
    except yaml.YAMLError:
        value = text
    return key.split("."), value


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Return a copy of ``raw`` with dotted overrides (``optim.lr=2e-5``) applied."""
    import copy

    out = copy.deepcopy(raw) if raw else {}
    for item in overrides:
        path, value = _parse_override(item)
        node = out
        for p in path[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {'.'.join(path)}: {p} is not a section")
            node = nxt
        node[path[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Load a YAML config file (or the defaults when ``path`` is None) and apply overrides.

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown, or a value has the wrong type.
    """
    raw: dict = {}
    if path is not None:
        path = Path(path)
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f"line {mark.line + 1}: " if mark else ""
            raise ConfigError(f"{path}: {line}not valid YAML") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a config file must be a mapping of sections")
        raw.setdefault("name", path.stem)
    try:
        return from_dict(apply_overrides(raw, list(overrides)))
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def replace(cfg: Any, **changes) -> Any:
    """A copy of a frozen config with some fields changed (``dataclasses.replace``)."""
    return dataclasses.replace(cfg, **changes)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def resolve(cfg: Config) -> Config:
    """Fill in defaults that depend on other fields (a new Config; the input is unchanged):
    ``optim.lr`` None becomes 1e-5 in ``finetune`` mode and 1e-3 in ``frozen`` mode."""
    if cfg.optim.lr is None:
        lr = 1e-3 if cfg.train.mode == "frozen" else 1e-5
        cfg = replace(cfg, optim=replace(cfg.optim, lr=lr))
    return cfg


# ----------------------------------------------------------------------------------------------
# rules of a training run: plain checks, and the settings that follow from config + device


def validate_training(cfg: Config) -> Config:
    """Check the training values that only the config decides; returns ``cfg``. Checks that need
    the encoder's own sizes stay where those sizes are known: ``model.max_length`` above the
    encoder's ``max_position_embeddings`` (:class:`minbert.data.tokenizer.Tokenizer`),
    ``train.freeze_layers`` above its number of layers (:func:`minbert.training.surgical.frozen_prefixes`),
    ``head_layers`` of a head that takes none (:func:`minbert.model.heads.build_head`).

    Raises:
        ConfigError: no task; ``train.epochs`` or ``train.grad_accum`` below 1; ``train.seed``
            below 0; ``train.max_steps`` below 1; ``train.eval_every`` below 0; ``model.max_length``
            below 3; ``train.freeze_layers`` below -1; ``tasks.<name>.head_layers`` below 0.
    """
    tc = cfg.train
    if not cfg.tasks:
        raise ConfigError("tasks: at least one task is needed")
    if tc.epochs < 1 or tc.grad_accum < 1:
        raise ConfigError("train.epochs and train.grad_accum must be >= 1")
    if tc.seed < 0:
        raise ConfigError(f"train.seed must be >= 0, got {tc.seed}")
    if tc.max_steps is not None and tc.max_steps < 1:
        raise ConfigError(f"train.max_steps must be >= 1 (or null), got {tc.max_steps}")
    if tc.eval_every < 0:
        raise ConfigError(
            f"train.eval_every must be >= 0 (optimizer steps between dev evaluations; 0: epoch ends only), "
            f"got {tc.eval_every}"
        )
    if cfg.model.max_length < 3:
        raise ConfigError(f"model.max_length {cfg.model.max_length} is too small (at least 3: [CLS] x [SEP])")
    if tc.freeze_layers < -1:
        raise ConfigError(
            f"train.freeze_layers {tc.freeze_layers}: must be -1 (embeddings only), 0 (nothing) or k >= 1 "
            "(embeddings + the first k encoder layers)"
        )
    for name, tcfg in cfg.tasks.items():
        if tcfg.head_layers < 0:
            raise ConfigError(
                f"tasks.{name}.head_layers {tcfg.head_layers}: must be >= 0 (extra layers of the cosine head)"
            )
    return cfg


@dataclass(frozen=True)
class RuntimeSettings:
    """What a training run does on its device, resolved from the config (:func:`runtime_settings`).

    amp: bf16 autocast; compile: ``torch.compile`` the encoder; cuda_graphs: replay steps as CUDA
    graphs; flat_sync: average gradients with one all-reduce of a flat buffer (torchrun, no DDP);
    pad_multiple: training batches are padded to a multiple of this many tokens."""

    amp: bool
    compile: bool
    cuda_graphs: bool
    flat_sync: bool
    pad_multiple: int


def runtime_settings(cfg: Config, device_type: str, world_size: int = 1) -> RuntimeSettings:
    """Resolve the ``auto`` choices of ``cfg.train`` for a device type (``"cpu"``, ``"cuda"``, ...)
    and a number of processes: ``amp`` auto is bf16 on CUDA; ``compile`` auto is on on CUDA;
    ``cuda_graphs`` and ``grad_sync`` as :func:`use_cuda_graphs` and :func:`use_flat_sync` say;
    ``data.pad_to_multiple_of`` null is 16 with CUDA graphs (few batch shapes, few graphs), else 1.

    Raises:
        ConfigError: ``train.pcgrad`` with several processes or without the parallel routine;
            ``train.cuda_graphs=on`` where graphs cannot run.
    """
    tc = cfg.train
    if tc.pcgrad and (tc.routine != "parallel" or world_size > 1):
        raise ConfigError(
            "train.pcgrad needs train.routine=parallel in a single process (it combines tasks' gradients of one step)"
        )
    amp = tc.amp == "bf16" or (tc.amp == "auto" and device_type == "cuda")
    compiled = tc.compile == "on" or (tc.compile == "auto" and device_type == "cuda")
    graphs = use_cuda_graphs(tc, device_type, world_size, compiled)
    pad_multiple = cfg.data.pad_to_multiple_of or (16 if graphs else 1)
    return RuntimeSettings(amp, compiled, graphs, use_flat_sync(tc, world_size, graphs), pad_multiple)


def use_cuda_graphs(tc: TrainConfig, device_type: str, world_size: int, compiled: bool) -> bool:
    """Resolve ``train.cuda_graphs``: ``auto`` is on for CUDA training without ``compile``,
    PCGrad and (under torchrun, ``world_size`` > 1) ``train.grad_sync=ddp``.

    Raises:
        ConfigError: ``on`` with CPU, compile, PCGrad or DDP gradient sync.
    """
    blockers = [
        why
        for why, hit in (
            ("a CUDA device", device_type != "cuda"),
            ("train.grad_sync=flat or auto under torchrun (DDP's hooks cannot run in a graph)",
             world_size > 1 and tc.grad_sync == "ddp"),
            ("train.compile=off", compiled),
            ("train.pcgrad=false (it needs per-task gradients)", tc.pcgrad),
        )
        if hit
    ]
    if tc.cuda_graphs == "on" and blockers:
        raise ConfigError(f"train.cuda_graphs=on needs {', '.join(blockers)}; use auto or off")
    return tc.cuda_graphs == "on" or (tc.cuda_graphs == "auto" and not blockers)


def use_flat_sync(tc: TrainConfig, world_size: int, graphs: bool) -> bool:
    """Resolve ``train.grad_sync`` for a torchrun job (``world_size`` > 1): one all-reduce of the
    flat gradient buffer (``flat``, and ``auto`` with CUDA graphs) instead of DDP. False in one process."""
    return world_size > 1 and (tc.grad_sync == "flat" or (tc.grad_sync == "auto" and graphs))
