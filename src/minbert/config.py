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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from .config_custom import CustomTaskConfig
from .config_values import apply_overrides, build_value, to_dict
from .errors import ConfigError

Pooling = Literal["cls", "pooler", "mean"]


@dataclass(frozen=True)
class ModelConfig:
    """The encoder and its input."""

    encoder: str = field(
        default="default", metadata={"help": "default (the packaged all-MiniLM-L6-v2) or a local HF BERT folder"}
    )
    max_length: int = field(default=128, metadata={"help": "tokens per sequence (a pair: both sentences together)"})
    attn_implementation: Literal["sdpa", "eager"] = field(
        default="sdpa", metadata={"help": "attention: sdpa (torch scaled_dot_product_attention) or eager (written out)"}
    )
    hidden_dropout_prob: float | None = field(
        default=None, metadata={"help": "dropout on the encoder's hidden states (null: keep the checkpoint's value)"}
    )
    attention_probs_dropout_prob: float | None = field(
        default=None, metadata={"help": "dropout on the attention probabilities (null: keep the checkpoint's value)"}
    )


@dataclass(frozen=True)
class TaskConfig:
    """One task's head and training options (the task itself is defined in :mod:`minbert.tasks`)."""

    head: str = field(
        default="baseline",
        metadata={"help": "head: baseline; single: conv1d, mean; bi pairs: mlp, gelu, compress_expand, cosine, sbert, "
                  "sbert_cosine"},
    )
    pooling: Pooling = field(default="cls", metadata={"help": "sentence vector: [CLS], the pooler output or the mean"})
    pair_input: Literal["bi", "cross"] = field(
        default="bi", metadata={"help": "pair tasks: encode a and b apart (bi), or together as [CLS] a [SEP] b (cross)"}
    )
    dropout: float = field(default=0.3, metadata={"help": "dropout probability in the head"})
    batch_size: int = field(default=32, metadata={"help": "training rows per batch (per process under torchrun)"})
    weight: float = field(default=1.0, metadata={"help": "multiplier of this task's loss in the total"})
    # use a seeded random sample of N training rows (stratified by label for classification;
    # seed train.seed), and of N phrases with phrases_file
    train_limit: int | None = field(
        default=None, metadata={"help": "train on a seeded random sample of N rows (stratified by label; null: all)"}
    )
    dev_limit: int | None = field(
        default=None, metadata={"help": "evaluate a seeded random sample of N dev rows (null: all)"}
    )
    hidden_size: int = field(
        default=256, metadata={"help": "hidden width of heads that have one (conv1d, mlp, gelu, compress_expand)"}
    )
    # head cosine: k extra Linear(H, H) + tanh layers on each embedding before the similarity
    # (the reference paper's "additional STS layers", its exp 9 and 12); 0 for every other head
    head_layers: int = field(
        default=0, metadata={"help": "head cosine: extra Linear + tanh layers on each embedding (0 for other heads)"}
    )
    augment_swap: bool = field(default=False, metadata={"help": "pair tasks: also train on every pair as (b, a)"})
    phrases_file: str | None = field(
        default=None, metadata={"help": "sst: a PTB sentiment tree file whose labelled phrases are extra train rows"}
    )
    symmetric_eval: bool = field(
        default=False, metadata={"help": "pair tasks: average the outputs of (a, b) and (b, a) at prediction"}
    )


def _default_tasks() -> dict[str, TaskConfig]:
    return {"sst": TaskConfig(), "qqp": TaskConfig(), "sts": TaskConfig()}


@dataclass(frozen=True)
class DataConfig:
    """Where the data is and how it is batched."""

    dir: str | None = field(
        default=None, metadata={"help": "data folder when --data-dir is not given (null: $MINBERT_DATA_DIR)"}
    )
    strict: bool = field(default=False, metadata={"help": "any bad data row is fatal (else reported and skipped)"})
    bucket_by_length: bool = field(
        default=True, metadata={"help": "batches of similar length (in a shuffled order of buckets)"}
    )
    # training batches are padded to a multiple of this many tokens (None: 16 when CUDA graphs
    # are on, which keeps the number of batch shapes, hence of graphs, small; else 1)
    pad_to_multiple_of: int | None = field(
        default=None,
        metadata={"help": "pad training batches to a multiple of N tokens (null: 16 with CUDA graphs, else 1)"},
    )


@dataclass(frozen=True)
class TrainConfig:
    """The training loop."""

    routine: Literal["parallel", "sequential", "sampled"] = field(
        default="parallel",
        metadata={"help": "each step: a batch of every task (parallel), one task after another (sequential), or one "
                  "drawn task (sampled)"},
    )
    # sampled routine: each step trains one task drawn by this schedule (Stickland & Murray 2019)
    sampling: Literal["round_robin", "proportional", "sqrt", "annealed"] = field(
        default="sqrt", metadata={"help": "sampled routine: how each step's task is drawn (Stickland & Murray 2019)"}
    )
    pcgrad: bool = field(
        default=False, metadata={"help": "project conflicting task gradients (Yu et al. 2020); parallel routine only"}
    )
    mode: Literal["finetune", "frozen"] = field(
        default="finetune", metadata={"help": "train every parameter (finetune), or the heads only (frozen)"}
    )
    epochs: int = field(default=10, metadata={"help": "passes over the training data"})
    seed: int = field(default=0, metadata={"help": "seed of the initialisation, data order, dropout and samples"})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches whose gradients make one optimizer step"})
    max_grad_norm: float | None = field(
        default=None, metadata={"help": "clip the gradients' global L2 norm to this (null: no clipping)"}
    )
    amp: Literal["auto", "bf16", "off"] = field(
        default="auto", metadata={"help": "mixed precision (auto: bf16 autocast on CUDA, fp32 on CPU)"}
    )
    early_stopping_patience: int | None = field(
        default=None, metadata={"help": "stop after N epochs without overall-dev improvement (null: never)"}
    )
    checkpoint_every: int = field(
        default=0, metadata={"help": "optimizer steps between checkpoints (0: epoch ends only)"}
    )
    nonfinite: Literal["stop", "skip"] = field(
        default="stop", metadata={"help": "on a non-finite loss or gradient: stop the run, or skip the batch"}
    )
    max_nonfinite_fraction: float = field(
        default=0.01,
        metadata={"help": "nonfinite=skip: more skipped steps than this fraction of all optimizer steps stops the run"},
    )
    max_steps: int | None = field(
        default=None, metadata={"help": "stop after this many optimizer steps (debugging, smoke tests; null: no limit)"}
    )
    eval_every: int = field(
        default=0,
        metadata={"help": "optimizer steps between extra dev evaluations, logged only; the best model is chosen at "
                          "epoch ends (0: epoch ends only)"},
    )
    eval_batch_size: int = field(default=256, metadata={"help": "rows per batch at evaluation and prediction"})
    compile: Literal["auto", "on", "off"] = field(
        default="off", metadata={"help": "torch.compile the encoder (auto: on CUDA only)"}
    )
    # replay each recurring batch shape's forward+backward as a CUDA graph (minbert.cudagraph).
    # auto: on for CUDA training without compile and PCGrad; on: raise if unsupported
    cuda_graphs: Literal["auto", "on", "off"] = field(
        default="auto", metadata={"help": "replay each batch shape's forward+backward as a CUDA graph (on: raise if "
                                          "unsupported)"}
    )
    # how several processes (torchrun) average gradients: ddp (DistributedDataParallel: bucketed
    # all-reduces overlapped with backward), flat (one all_reduce of one flat gradient buffer
    # after the step's backward passes; what CUDA graphs need), auto (flat with graphs, else ddp)
    grad_sync: Literal["auto", "ddp", "flat"] = field(
        default="auto",
        metadata={"help": "torchrun gradient averaging: ddp, flat (one buffer) or auto (flat with graphs)"},
    )
    log_every: int = field(
        default=50, metadata={"help": "optimizer steps between host syncs that write the step losses"}
    )
    # task weighting: fixed (tasks.*.weight) or learned homoscedastic uncertainty (Kendall et
    # al. 2018): sum_t exp(-s_t) w_t L_t + s_t, one learned log-variance s_t per task
    loss_weighting: Literal["fixed", "uncertainty"] = field(
        default="fixed", metadata={"help": "task loss weights: fixed (tasks.*.weight) or learned uncertainty"}
    )
    # SMART adversarial smoothness (Jiang et al. 2020; minbert.regularize): lambda_s, noise std,
    # ascent step, l-inf radius on the word embeddings. 0 turns it off
    smart_weight: float = field(
        default=0.0, metadata={"help": "SMART adversarial smoothness weight lambda_s (Jiang et al. 2020); 0: off"}
    )
    smart_sigma: float = field(default=1.0e-5, metadata={"help": "SMART: std of the initial embedding noise"})
    smart_eta: float = field(default=1.0e-3, metadata={"help": "SMART: step size of the noise's ascent"})
    smart_eps: float = field(default=1.0e-5, metadata={"help": "SMART: l-inf radius of the noise"})
    rdrop_alpha: float = field(
        default=0.0, metadata={"help": "R-Drop (Liang et al. 2021): weight of the two-pass divergence; 0: off"}
    )
    # checkpoint averaging: also evaluate the mean of the last k epochs' weights (0: off); the
    # final model is the average when its dev overall beats the best single epoch
    average_last: int = field(
        default=0, metadata={"help": "also evaluate the mean of the last k epochs' weights (0: off)"}
    )
    # surgical fine-tuning (Lee et al. 2023, "Surgical Fine-Tuning Improves Adaptation to
    # Distribution Shifts"): 0 trains everything; k >= 1 freezes the embeddings and encoder
    # layers 0..k-1; -1 freezes the embeddings only (see minbert.surgical)
    freeze_layers: int = field(
        default=0, metadata={"help": "k >= 1: freeze the embeddings and layers 0..k-1; -1: the embeddings; 0: none"}
    )
    # a run folder whose best weights (else last checkpoint's) initialise the whole model before
    # training; its heads must match this config's exactly (checked key by key and shape by shape)
    init_from: str | None = field(
        default=None, metadata={"help": "a run folder whose best (else last) weights initialise the whole model"}
    )


@dataclass(frozen=True)
class OptimConfig:
    """Optimizer and learning-rate schedule."""

    name: Literal["adamw", "torch_adamw", "lion"] = field(
        default="adamw", metadata={"help": "adamw (minbert's, from its equations), torch_adamw (fused on CUDA), lion"}
    )
    lr: float | None = field(
        default=None, metadata={"help": "peak learning rate (null: 1e-5 for finetune, 1e-3 for frozen)"}
    )
    betas: tuple[float, float] = field(default=(0.9, 0.999), metadata={"help": "Adam's / Lion's (beta1, beta2)"})
    eps: float = field(default=1e-6, metadata={"help": "Adam's epsilon"})
    weight_decay: float = field(
        default=0.0, metadata={"help": "decoupled weight decay (biases and LayerNorm: none)"}
    )
    # the lr multiplier per optimizer step, as transformers' get_{constant,linear,cosine}_schedule_with_warmup
    schedule: Literal["constant", "linear", "cosine"] = field(
        default="constant", metadata={"help": "after the warmup: constant, linear decay to 0, or cosine decay to 0"}
    )
    warmup_ratio: float = field(
        default=0.0, metadata={"help": "fraction of all steps in linear warmup from 0 (ceil(ratio * steps) steps)"}
    )
    layer_lr_decay: float = field(
        default=1.0, metadata={"help": "lr x decay^(L + 1 - depth) per encoder layer (1.0: off)"}
    )
    head_lr: float | None = field(default=None, metadata={"help": "lr of the task heads (null: optim.lr)"})


@dataclass(frozen=True)
class OutputConfig:
    """What a run writes."""

    dir: str | None = field(
        default=None, metadata={"help": "run folder when --run-dir is not given (null: runs/<name>)"}
    )
    format: Literal["default", "cs224n"] = field(
        default="default", metadata={"help": "prediction files' layout (cs224n: the course leaderboard's)"}
    )
    test_predictions: bool = field(default=True, metadata={"help": "write predictions for the test splits"})
    plot: bool = field(default=True, metadata={"help": "write curves.png (training curves)"})
    tensorboard: bool = field(default=True, metadata={"help": "write TensorBoard logs"})


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
    # tasks defined in the config (minbert.custom); each one trains when listed under `tasks`
    # (a config with custom_tasks but no `tasks` section trains sst, qqp, sts and every custom task)
    custom_tasks: dict[str, CustomTaskConfig] = field(
        default_factory=dict,
        metadata={"help": "tasks defined in the config, by name (each one trains when listed under tasks)"},
    )


# ----------------------------------------------------------------------------------------------


def from_dict(raw: dict) -> Config:
    """Build a :class:`Config` from a plain dict. Raises :class:`ConfigError`."""
    raw = raw or {}
    if isinstance(raw, dict) and isinstance(raw.get("custom_tasks"), dict) and "tasks" not in raw:
        # no `tasks` section: the built-in three and every custom task train
        raw = {**raw, "tasks": {**{k: {} for k in _default_tasks()}, **{str(k): {} for k in raw["custom_tasks"]}}}
    return validate(build_value(Config, raw, ""))


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
        raise ConfigError(
            f"train.max_nonfinite_fraction must be in [0, 1] (a fraction of all optimizer steps), got {fraction}"
        )
    validate_training(cfg)
    return cfg


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


def full_dev(cfg: Config) -> Config:
    """The config with every task's ``dev_limit`` lifted (``minbert evaluate --full``): scores on
    whole dev sets."""
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
