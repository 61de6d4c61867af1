"""Run configuration: frozen dataclasses loaded from YAML, with dotted overrides.

A config file mirrors :class:`Config`::

    model: {encoder: default, max_length: 128}
    tasks: {sst: {batch_size: 32}, qqp: {...}, sts: {...}}
    train: {routine: parallel, epochs: 10}
    optim: {name: adamw, lr: 1.0e-5}

Overrides use dotted keys, e.g. ``--optim.lr=2e-5`` or ``--tasks.sst.batch_size=8``; values are
parsed as YAML scalars. An unknown key, a wrong type, or a value outside its allowed set raises
:class:`ConfigError` naming the key. Code never mutates a config: use :func:`replace`. The
``custom_tasks`` sections are defined in :mod:`minbert.config_custom`.

Each field documents itself in ``metadata["help"]`` (one line): :mod:`minbert.config_doc` prints
a config with those lines as comments (``minbert config show``) and derives a JSON Schema from the
dataclasses (``minbert config schema``). :mod:`minbert.config_values` checks plain values against
the dataclasses' annotations (:func:`from_dict`), turns a config back into plain values
(:func:`to_dict`) and applies dotted overrides (:func:`apply_overrides`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config_custom import CustomTaskConfig
from .config_sections import (
    DataConfig,
    ModelConfig,
    OptimConfig,
    OutputConfig,
    Pooling,
    RuntimeSettings,
    TaskConfig,
    TrainConfig,
    _default_tasks,
)

__all__ = [
    "Config", "CustomTaskConfig", "DataConfig", "ModelConfig", "OptimConfig", "OutputConfig", "Pooling",
    "RuntimeSettings", "TaskConfig", "TrainConfig", "from_dict", "load_config", "replace", "resolve",
    "runtime_settings", "to_dict", "validate",
]
from .config_values import apply_overrides, build_value, legacy_tensorboard, safe_load_unique, to_dict, yaml_problem
from .errors import ConfigError

MAX_LR = 1e30  # the optimizers' float32 state overflows near 3.4e38


@dataclass(frozen=True)
class Config:
    """A run's configuration: the sections below, each a mapping."""

    name: str = field(default="run", metadata={"help": "run name (default: the config file's name without .yaml)"})
    model: ModelConfig = field(default_factory=ModelConfig, metadata={"help": "the encoder and its input"})
    tasks: dict[str, TaskConfig] = field(
        default_factory=_default_tasks, metadata={"help": "the tasks to train, by name (sst, qqp, sts, custom tasks)"}
    )
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "where the data is and how it is batched"})
    train: TrainConfig = field(default_factory=TrainConfig, metadata={"help": "the training loop"})
    optim: OptimConfig = field(default_factory=OptimConfig, metadata={"help": "optimizer and learning-rate schedule"})
    output: OutputConfig = field(default_factory=OutputConfig, metadata={"help": "what a run writes"})
    custom_tasks: dict[str, CustomTaskConfig] = field(
        default_factory=dict,
        metadata={"help": "tasks defined in the config, by name (each one trains when listed under tasks)"},
    )


def from_dict(raw: dict) -> Config:
    """Build a :class:`Config` from a plain dict. Raises :class:`ConfigError`.

    Run folders and exports written before ``output.report_to`` existed hold ``output.tensorboard``
    (a bool): it is read as ``report_to: [tensorboard]`` (true) or ``[none]`` (false).
    """
    raw = legacy_tensorboard(raw or {})
    if isinstance(raw, dict) and isinstance(raw.get("custom_tasks"), dict) and "tasks" not in raw:
        # no `tasks` section: the built-in three and every custom task train
        raw = {**raw, "tasks": {**{k: {} for k in _default_tasks()}, **{str(k): {} for k in raw["custom_tasks"]}}}
    return validate(build_value(Config, raw, ""))


def validate(cfg: Config) -> Config:
    """Check the ranges of values whose type alone does not make them valid; returns ``cfg``.

    Raises:
        ConfigError: ``tasks.<name>.train_limit`` or ``dev_limit`` below 1 (null means all rows),
            a number outside its range (:data:`_RANGES`), a ``name`` that is no folder name, an
            ``output.report_to`` list that is empty, repeats a name or combines none with a
            tracker, and what :func:`validate_training` refuses.
    """
    for name, tcfg in cfg.tasks.items():
        for key in ("train_limit", "dev_limit"):
            value = getattr(tcfg, key)
            if value is not None and value < 1:
                raise ConfigError(f"tasks.{name}.{key} must be >= 1 (or null for all rows), got {value}")
        _check_task_numbers(name, tcfg)
    _check_model_and_optim(cfg)
    _check_compile_options(cfg)
    _check_ranges(cfg)
    _check_report_to(cfg.output.report_to)
    validate_training(cfg)
    return cfg


def _check_task_numbers(name: str, tcfg: TaskConfig) -> None:
    """Batch size, head width, dropout and loss weight of one task.

    Raises:
        ConfigError: naming the key and the allowed range.
    """
    if tcfg.batch_size < 1 or tcfg.hidden_size < 1:
        key = "batch_size" if tcfg.batch_size < 1 else "hidden_size"
        raise ConfigError(f"tasks.{name}.{key} must be >= 1, got {getattr(tcfg, key)}")
    if not 0.0 <= tcfg.dropout < 1.0:
        raise ConfigError(f"tasks.{name}.dropout must be in [0, 1), got {tcfg.dropout}")
    if not (math.isfinite(tcfg.weight) and tcfg.weight >= 0.0):
        raise ConfigError(f"tasks.{name}.weight must be a finite number >= 0 (a loss multiplier), got {tcfg.weight}")


def _check_model_and_optim(cfg: Config) -> None:
    """The encoder's dropout overrides and the optimizer's combinations.

    Raises:
        ConfigError: naming the key and the allowed range.
    """
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        value = getattr(cfg.model, key)
        if value is not None and not 0.0 <= value < 1.0:
            raise ConfigError(f"model.{key} must be in [0, 1) (or null: the encoder's own), got {value}")
    if cfg.optim.fused == "on" and cfg.optim.name == "lion":
        raise ConfigError("optim.fused=on: lion has no fused kernel (use optim.fused=auto or off)")
    if cfg.optim.master_weights:
        why = [w for w, hit in (
            (f"optim.name=adamw (minbert's adamw keeps the master weights, not {cfg.optim.name})",
             cfg.optim.name != "adamw"),
            ("no frozen parameters (train.mode=finetune, train.freeze_layers=0: the model becomes bf16)",
             cfg.train.mode == "frozen" or cfg.train.freeze_layers != 0),
            ("train.smart_weight=0 (SMART's noise of about 1e-5 is below bf16's resolution of the embeddings)",
             cfg.train.smart_weight > 0),
        ) if hit]
        if why:
            raise ConfigError("optim.master_weights needs " + "; ".join(why))
    if cfg.optim.embedding_rows:  # its gradient is not in .grad: nothing may read or reduce .grad for it
        why = [w for w, hit in (
            (f"optim.name=adamw (not {cfg.optim.name})", cfg.optim.name != "adamw"),
            ("train.max_grad_norm=null (the table's gradient is not in the clipped norm)", cfg.train.max_grad_norm),
            ("train.pcgrad=false", cfg.train.pcgrad), ("train.smart_weight=0", cfg.train.smart_weight > 0),
            ("a trained word embedding (train.mode=finetune, train.freeze_layers=0)",
             cfg.train.mode == "frozen" or cfg.train.freeze_layers != 0),
        ) if hit]
        if why:
            raise ConfigError("optim.embedding_rows needs " + "; ".join(why))


def _check_compile_options(cfg: Config) -> None:
    """The form of ``train.compile_options``: each entry a value or a section of values (a
    section's setting as a section, ``triton: {enable_pdl: true}``, as a dotted override makes
    it), and something that compiles (what each name means is checked against torch when training
    starts: :func:`minbert.config_compile.compile_options`).

    Raises:
        ConfigError: naming the entry and the reason.
    """
    options = cfg.train.compile_options
    for key, value in options.items():
        where = f"train.compile_options.{key}"
        if value == {}:
            raise ConfigError(f"{where}: no value (null or an empty section)")
        if "." in key:
            head, _, rest = key.partition(".")
            raise ConfigError(f"{where}: a dotted name; write it as a section ({head}: {{{rest}: ...}})")
    o = cfg.optim
    if options and cfg.train.compile == "off" and not ((o.master_weights and o.fused != "off") or o.embedding_rows):
        raise ConfigError("train.compile_options: nothing compiles (train.compile is off; no fused "
                          "optim.master_weights update, no optim.embedding_rows)")


def _finite(lo: float, low_ok: bool = True, hi: float = math.inf) -> Any:
    """A test of one number: finite, above ``lo`` (or equal where ``low_ok``), at most ``hi``."""
    return lambda v: math.isfinite(v) and (v >= lo if low_ok else v > lo) and v <= hi


# (section, key, what the value must be, test): numbers whose type alone does not make them valid
_RANGES = (
    ("optim", "lr", f"a number in [0, {MAX_LR:g}] (or null)", _finite(0, True, MAX_LR)),
    ("optim", "head_lr", f"a number in [0, {MAX_LR:g}] (or null)", _finite(0, True, MAX_LR)),
    ("optim", "warmup_ratio", "in [0, 1]", _finite(0, True, 1)),
    ("train", "max_nonfinite_fraction", "in [0, 1] (a fraction of all optimizer steps)", _finite(0, True, 1)),
    ("train", "seed", "in 0..2**32 - 1 (numpy's seed range)", lambda v: 0 <= v < 2**32),
    ("train", "max_steps", ">= 1 (or null)", lambda v: v >= 1),
    ("train", "eval_every", ">= 0 (optimizer steps between dev evaluations; 0: epoch ends only)", lambda v: v >= 0),
    ("train", "max_grad_norm", "a finite number > 0 (or null: no clipping)", _finite(0, False)),
    ("train", "early_stopping_patience", ">= 1 (epochs without improvement; or null: never)", lambda v: v >= 1),
    ("train", "eval_batch_size", ">= 1", lambda v: v >= 1),
    ("train", "log_every", ">= 0 (0 and 1: every step)", lambda v: v >= 0),
    ("train", "checkpoint_every", ">= 0 (0: epoch ends only)", lambda v: v >= 0),
    ("train", "average_last", ">= 0 (0: off)", lambda v: v >= 0),
    *(("train", k, "a finite number >= 0", _finite(0))
      for k in ("smart_weight", "smart_sigma", "smart_eta", "smart_eps", "rdrop_alpha")),
    ("optim", "eps", "a finite number > 0", _finite(0, False)),
    ("optim", "weight_decay", "a finite number >= 0", _finite(0)),
    ("optim", "layer_lr_decay", "in (0, 1] (1.0: off)", _finite(0, False, 1)),
    ("optim", "betas", "two numbers in [0, 1)", lambda v: all(0 <= b < 1 for b in v)),
)


def _check_ranges(cfg: Config) -> None:
    """The numbers of :data:`_RANGES` (None passes: each of those keys that may be null means off).

    Raises:
        ConfigError: naming the key and what it must be (a NaN fails every test).
    """
    for section, key, what, ok in _RANGES:
        value = getattr(getattr(cfg, section), key)
        if value is not None and not ok(value):
            raise ConfigError(f"{section}.{key} must be {what}, got {value}")
    if cfg.name in ("", ".", "..") or any(c in cfg.name for c in "/\\\0"):
        raise ConfigError(f"name must be a folder name (the run folder runs/<name>: no / or \\), got {cfg.name!r}")


def _check_report_to(names: tuple[str, ...]) -> None:
    """``output.report_to``: the trackers a run reports to (each name once; its type allows only
    tensorboard, mlflow and none).

    Raises:
        ConfigError: an empty list, a name given twice, or none together with a tracker.
    """
    if not names:
        raise ConfigError("output.report_to: empty; give none for no experiment tracking")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"output.report_to: {', '.join(twice)} given more than once")
    if "none" in names and len(names) > 1:
        raise ConfigError(f"output.report_to: none cannot be combined with other trackers, got {', '.join(names)}")


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Load a YAML config file (or the defaults when ``path`` is None) and apply overrides.

    Raises:
        ConfigError: the file is missing or not YAML, a key is unknown, or a value has the wrong type.
    """
    raw: dict = {}
    if path is not None:
        path = Path(path)
        try:
            raw = safe_load_unique(path.read_text(encoding="utf-8")) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: config file not found") from None
        except UnicodeDecodeError as e:
            raise ConfigError(f"{path}: not UTF-8 text (byte {e.start}: {e.reason})") from None
        except RecursionError:
            raise ConfigError(f"{path}: not a config: nested too deeply") from None
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line = f"line {mark.line + 1}: " if mark else ""
            raise ConfigError(f"{path}: {line}{yaml_problem(e)}") from None
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: a config file must be a mapping of sections")
        raw.setdefault("name", path.stem)
    try:
        # an old file's output.tensorboard becomes report_to before the overrides, so that an
        # override of either key applies on top of it (the later one wins)
        raw = legacy_tensorboard(raw)
        for item in overrides:
            raw = legacy_tensorboard(apply_overrides(raw, [item]), replaces=True)
        return from_dict(raw)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None


def replace(cfg: Any, **changes) -> Any:
    """A copy of a frozen config with some fields changed (``dataclasses.replace``)."""
    return dataclasses.replace(cfg, **changes)


def full_dev(cfg: Config) -> Config:
    """The config with every task's ``dev_limit`` lifted: whole dev sets (``minbert evaluate --full``)."""
    tasks = {name: replace(tcfg, dev_limit=None) for name, tcfg in cfg.tasks.items()}
    return replace(cfg, tasks=tasks)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def resolve(cfg: Config) -> Config:
    """Fill in defaults that depend on other fields (a new Config; the input is unchanged):
    ``optim.lr`` None becomes 1e-5 in ``finetune`` mode and 1e-3 in ``frozen`` mode."""
    if cfg.optim.lr is None:
        lr = 1e-3 if cfg.train.mode == "frozen" else 1e-5
        cfg = replace(cfg, optim=replace(cfg.optim, lr=lr))
    return cfg


# rules of a training run: plain checks, and the settings that follow from config + device


def validate_training(cfg: Config) -> Config:
    """Check the training values that only the config decides; returns ``cfg``. Checks that need
    the encoder's own sizes stay where those sizes are known: ``model.max_length`` above the
    encoder's ``max_position_embeddings`` (:class:`minbert.data.tokenizer.Tokenizer`),
    ``train.freeze_layers`` above its number of layers (:func:`minbert.training.surgical.frozen_prefixes`),
    ``head_layers`` of a head that takes none (:func:`minbert.model.heads.build_head`).

    Raises:
        ConfigError: no task; ``train.epochs`` or ``train.grad_accum`` below 1;
            ``model.max_length`` below 3; ``train.freeze_layers`` below -1;
            ``tasks.<name>.head_layers`` below 0.
    """
    tc = cfg.train
    if not cfg.tasks:
        raise ConfigError("tasks: at least one task is needed")
    if tc.epochs < 1 or tc.grad_accum < 1:
        raise ConfigError("train.epochs and train.grad_accum must be >= 1")
    if cfg.model.max_length < 3:
        raise ConfigError(f"model.max_length {cfg.model.max_length} is too small (at least 3: [CLS] x [SEP])")
    if tc.freeze_layers < -1:
        raise ConfigError(f"train.freeze_layers {tc.freeze_layers}: must be -1 (embeddings only), 0 (nothing) or "
                          "k >= 1 (embeddings + the first k encoder layers)")
    for name, tcfg in cfg.tasks.items():
        if tcfg.head_layers < 0:
            raise ConfigError(f"tasks.{name}.head_layers {tcfg.head_layers}: must be >= 0 "
                              "(extra layers of the cosine head)")
    return cfg


def runtime_settings(cfg: Config, device_type: str, world_size: int = 1) -> RuntimeSettings:
    """Resolve the ``auto`` choices of ``cfg.train`` for a device type (``"cpu"``, ``"cuda"``, ...)
    and a number of processes: ``amp`` auto is bf16 on CUDA; ``compile`` auto is on on CUDA;
    ``cuda_graphs`` and ``grad_sync`` as :func:`use_cuda_graphs` and :func:`use_flat_sync` say;
    ``data.pad_to_multiple_of`` null is 16 with CUDA graphs (few batch shapes, few graphs), else 1.

    Raises:
        ConfigError: ``train.pcgrad`` with several processes or without the parallel routine;
            ``train.cuda_graphs=on`` where graphs cannot run; ``model.weight_grad_stream=on`` unpacked
            or off CUDA; ``optim.master_weights`` without bf16 amp or with several processes.
    """
    tc = cfg.train
    if tc.pcgrad and (tc.routine != "parallel" or world_size > 1):
        raise ConfigError(
            "train.pcgrad needs train.routine=parallel in a single process (it combines tasks' gradients of one step)"
        )
    amp = tc.amp == "bf16" or (tc.amp == "auto" and device_type == "cuda")
    compiled = tc.compile == "on" or (tc.compile == "auto" and device_type == "cuda")
    packed, note = use_packing(cfg, device_type, amp)
    # a compiled padded encoder sees a new T per batch; the packed one compiles once for every
    # token count (a symbolic N) and its kernels replay inside the graphs
    rows_apart = cfg.optim.embedding_rows and not (packed and tc.grad_accum == 1 and tc.nonfinite == "stop")
    graphs = use_cuda_graphs(tc, device_type, world_size, compiled and not packed, rows_apart)
    pad_multiple = cfg.data.pad_to_multiple_of or (16 if graphs else 1)
    if packed:  # the encoder sees only the real tokens: rows are padded to one length, packs come in buckets
        pad_multiple = cfg.model.max_length
    streams = packed and device_type == "cuda" and encoder_overrides(cfg)["weight_grad_stream"]
    if cfg.model.weight_grad_stream == "on" and not (packed and device_type == "cuda"):
        raise ConfigError("model.weight_grad_stream=on needs packed training on CUDA (model.packing); use auto or off")
    if cfg.optim.master_weights and (not amp or world_size > 1):
        raise ConfigError("optim.master_weights needs bf16 amp (train.amp=bf16, or auto on CUDA) in one process "
                          f"(got amp {'bf16' if amp else 'off'}, {world_size} processes)")
    _check_embedding_rows(cfg, device_type, world_size)
    return RuntimeSettings(amp, compiled, graphs, use_flat_sync(tc, world_size, graphs), pad_multiple,
                           PACK_MULTIPLE if packed else 0, note, cfg.optim.master_weights, streams)


def _check_embedding_rows(cfg: Config, device_type: str, world_size: int) -> None:
    """``optim.embedding_rows`` on this device (CUDA graphs: :func:`use_cuda_graphs`).

    Raises:
        ConfigError: several processes (no all-reduce of the table's gradient), an unfused AdamW on
            CUDA (its step count on the host).
    """
    if not cfg.optim.embedding_rows:
        return
    why = [w for w, hit in (
        ("one process", world_size > 1),
        ("optim.fused=on or auto on CUDA", device_type == "cuda" and not use_fused_optimizer(cfg.optim, device_type)),
    ) if hit]
    if why:
        raise ConfigError("optim.embedding_rows needs " + "; ".join(why))


def encoder_overrides(cfg: Config) -> dict:
    """The :class:`minbert.model.bert.BertConfig` fields that ``cfg.model`` sets over the encoder's
    ``config.json`` (where a value is null the file's stays); ``weight_grad_stream``: ``on``, or ``auto``
    with ``optim.master_weights`` (the step it was timed on), used on CUDA only (``linear_grads``)."""
    wgs = cfg.model.weight_grad_stream
    overrides = {"attn_implementation": cfg.model.attn_implementation, "varlen_kernel": cfg.model.varlen_kernel,
                 "weight_grad_stream": wgs == "on" or (wgs == "auto" and cfg.optim.master_weights)}
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if getattr(cfg.model, key) is not None:
            overrides[key] = getattr(cfg.model, key)
    return overrides


PACK_MULTIPLE = 64  # tokens: the smallest pack bucket (model.packing.token_bucket sizes the others)


def use_packing(cfg: Config, device_type: str, amp: bool) -> tuple[bool, str | None]:
    """Resolve ``model.packing``. ``auto`` is on with CUDA, bf16 autocast and ``sdpa`` attention (a
    varlen CUDA kernel, ``minbert.model.bert.varlen_attention``) where nothing blocks it. ``on`` also
    runs ``eager`` attention, the block-diagonal reference, on any device (its (N, N) scores over a
    whole step make it the reference, not a fast path). Returns (on, why auto is off on a CUDA device, or None).

    Raises:
        ConfigError: ``on`` where something blocks it, or with ``max_length`` < the smallest pack bucket.
    """
    sdpa, mode = cfg.model.attn_implementation == "sdpa", cfg.model.packing
    smart = ("train.smart_weight=0 (SMART perturbs the padded embeddings)", cfg.train.smart_weight > 0)
    bf16 = "train.amp=bf16 (the varlen kernels run in bf16)"
    if mode == "on":  # eager attention packs anywhere
        needs = [("a CUDA device or model.attn_implementation=eager", sdpa and device_type != "cuda"),
                 (bf16, sdpa and not amp)]
    else:
        needs = [("a CUDA device", device_type != "cuda"), (bf16, not amp),
                 ("model.attn_implementation=sdpa", not sdpa)]
    blockers = [why for why, hit in (*needs, smart) if hit]
    if mode == "on" and blockers:
        raise ConfigError(f"model.packing=on needs {', '.join(blockers)}; use auto or off")
    if mode != "off" and cfg.model.max_length < PACK_MULTIPLE:
        if mode == "on":
            raise ConfigError(f"model.packing=on needs model.max_length >= {PACK_MULTIPLE} (the filler of a pack)")
        return False, f"model.packing auto: off (model.max_length < {PACK_MULTIPLE})"
    if mode == "auto" and blockers:
        return False, (f"model.packing auto: off (needs {', '.join(blockers)})" if device_type == "cuda" else None)
    return mode != "off", None


def use_fused_optimizer(oc: OptimConfig, device_type: str) -> bool:
    """Whether the AdamW update runs as torch's fused kernel: ``optim.fused`` on, or auto on a CUDA
    device; never for lion (which has none)."""
    return oc.name != "lion" and (oc.fused == "on" or (oc.fused == "auto" and device_type == "cuda"))


def use_cuda_graphs(
    tc: TrainConfig, device_type: str, world_size: int, compiled: bool, rows_apart: bool = False
) -> bool:
    """Resolve ``train.cuda_graphs``: ``auto`` is on for CUDA training without ``compile``,
    PCGrad, (under torchrun, ``world_size`` > 1) ``train.grad_sync=ddp`` and ``rows_apart``:
    ``optim.embedding_rows`` where a step's graph would not hold the rows' update (its lookups are
    host state that a replay does not add to).

    Raises:
        ConfigError: ``on`` with CPU, compile, PCGrad, DDP gradient sync or ``rows_apart``.
    """
    blockers = [
        why
        for why, hit in (
            ("a CUDA device", device_type != "cuda"),
            ("train.grad_sync=flat or auto under torchrun (DDP's hooks cannot run in a graph)",
             world_size > 1 and tc.grad_sync == "ddp"),
            ("train.compile=off", compiled),
            ("train.pcgrad=false (it needs per-task gradients)", tc.pcgrad),
            ("with optim.embedding_rows, one graph per step with its update (model.packing, train.grad_accum=1, "
             "train.nonfinite=stop)", rows_apart),
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
