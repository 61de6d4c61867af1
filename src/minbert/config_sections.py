"""The sections of a run configuration (``model``, ``tasks.<name>``, ``data``, ``train``,
``optim``, ``output``): frozen dataclasses, each field with a one-line help. :mod:`minbert.config`
assembles them into :class:`~minbert.config.Config`, loads them from YAML and holds every rule
about their values. Also :class:`RuntimeSettings`, what :func:`minbert.config.runtime_settings`
resolves for a run's device.

Imports the standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Pooling = Literal["cls", "pooler", "mean"]
# one of inductor's settings (torch._inductor.config), or a section of them (triton: {...})
InductorValue = bool | int | float | str


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
    packing: Literal["auto", "on", "off"] = field(
        default="auto",
        metadata={"help": "one encoder pass over the real tokens of all tasks of a step (auto: CUDA + bf16 + sdpa)"},
    )
    varlen_kernel: Literal["auto", "efficient", "flash", "triton"] = field(
        default="auto",
        metadata={"help": "packed sdpa attention's kernel (auto: efficient without attention dropout, else triton, "
                          "else flash)"},
    )
    weight_grad_stream: Literal["auto", "on", "off"] = field(
        default="auto",
        metadata={"help": "packed CUDA training: weight and bias gradients on a second CUDA stream (auto: with "
                          "optim.master_weights)"},
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
        default=None,
        metadata={"help": "train on a seeded random sample of N rows (by label for classification; null: all)"},
    )
    dev_limit: int | None = field(
        default=None,
        metadata={"help": "evaluate a seeded random sample of N dev rows, the same for every seed (null: all)"},
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
    # passed as torch.compile(options=...) to the encoder's compile and our AdamW's compiled update
    compile_options: dict[str, InductorValue | dict[str, InductorValue]] = field(
        default_factory=dict,
        metadata={"help": "inductor settings (torch._inductor.config names) for what compiles, e.g. "
                          "{triton: {enable_pdl: true}}"},
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
    fused: Literal["auto", "on", "off"] = field(
        default="auto",
        metadata={"help": "adamw, torch_adamw: each update as torch's fused AdamW kernel (auto: on CUDA)"},
    )
    master_weights: bool = field(
        default=False,
        metadata={"help": "adamw with bf16 amp: train bf16 weights over fp32 master copies kept by the optimizer"},
    )
    embedding_rows: bool = field(
        default=False,
        metadata={"help": "adamw: update each word-embedding row when a step next reads it (the same values; "
                          "no clipping)"},
    )


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
    plot: bool = field(
        default=True, metadata={"help": "write curves.png (training curves) and a plot per task of its dev predictions"}
    )
    # as transformers' TrainingArguments.report_to; a string is one name or several, comma-separated
    report_to: tuple[Literal["tensorboard", "mlflow", "none"], ...] = field(
        default=("tensorboard",),
        metadata={"help": "experiment trackers: tensorboard (tensorboard/), mlflow (minbert[mlflow]), or none"},
    )


@dataclass(frozen=True)
class RuntimeSettings:
    """What a training run does on its device, resolved from the config (:func:`runtime_settings`).

    amp: bf16 autocast; compile: ``torch.compile`` the encoder; cuda_graphs: replay steps as CUDA
    graphs; flat_sync: average gradients with one all-reduce of a flat buffer (torchrun, no DDP);
    pad_multiple: training batches are padded to a multiple of this many tokens; pack_multiple:
    with packing (``model.packing``), the smallest pack bucket in tokens (0: no packing);
    note: why ``model.packing=auto`` stayed off on a CUDA device (None otherwise);
    master_weights: bf16 working weights, fp32 masters (``optim.master_weights``); weight_grad_stream:
    the packed backward's dW and db on a second CUDA stream (``model.weight_grad_stream``)."""

    amp: bool
    compile: bool
    cuda_graphs: bool
    flat_sync: bool
    pad_multiple: int
    pack_multiple: int = 0
    note: str | None = None
    master_weights: bool = False
    weight_grad_stream: bool = False
