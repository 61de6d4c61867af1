"""The packed train step on bf16 working weights with fp32 master weights, against the shipped
step, in one process (bert-base-sized encoder, real SST batches).

The shipped step keeps the weights in fp32: every step casts them to bf16 for the GEMMs and
writes fp32 gradients, and AdamW updates the fp32 weights. Here the encoder's parameters are
bf16: the forward casts no weight for its GEMMs (autocast still runs LayerNorm in fp32, and the
query, key and value weights are concatenated at each step) and the backward writes bf16
gradients. Our AdamW keeps fp32 master copies with its moments, and after each update writes the
bf16 working weights from them (``AdamW(master_weights=True)``, :func:`attach_master_weights`,
``optim.master_weights`` in training; mixed-precision training with master weights: Micikevicius
et al. 2018, "Mixed Precision Training", Sec. 3.1). On CUDA the update is one function compiled
by inductor (:func:`minbert.training.optim.master_update`: foreach kernels over the bf16
gradients, the fp32 masters and moments, and the bf16 weights), captured in the step's CUDA graph
like the shipped step's fused AdamW.

Variants (``--variants``):
  whole    the shipped step (overlap_step.py's ``whole``)
  master   bf16 working weights, fp32 master weights updated by our compiled AdamW
  whole-KNOB[-KNOB...], master-KNOB[-KNOB...]  the step with inductor settings changed (each
           variant sets every knob below before it compiles, to its own value or to inductor's
           default):
           cdt      coordinate-descent tuning of the Triton kernels' launch configurations
                    (``coordinate_descent_tuning``)
           combo    independent kernels combined into one launch (``combo_kernels``)
           nosplit  reductions not split into a partial and a final kernel (``split_reductions``
                    off: the LayerNorm and bias column sums over the step's tokens)
           agg      fusion of kernels that share no input (``aggressive_fusion``)
           pdl      programmatic dependent launch on Hopper: each Triton kernel may start while the
                    one before it ends, and waits inside for its inputs (``triton.enable_pdl``)
           wgs      not inductor's: the encoder's ``weight_grad_stream`` (each projection's weight
                    and bias gradients on a second CUDA stream beside its input gradient;
                    :mod:`minbert.model.train_ops`; in training on by default with
                    ``optim.master_weights``)
           rows     not inductor's: the word embedding's AdamW applied to the rows a step reads
                    (:mod:`minbert.training.lazy_rows`; no dense gradient or update of the table;
                    in training ``optim.embedding_rows``)
           fbwd     not inductor's: our attention kernel's backward as one kernel per step and layer
                    (``fused_backward`` of :func:`minbert.model.varlen_triton.triton_varlen_attention`,
                    patched in for this variant)
  peer     transformers + torch.compile(mode="reduce-overhead"), under inductor's defaults (the
           records of s21 and s22 listed it first, when it ran under the settings that the
           variant before it left)

Prints one JSON object (and writes it to --out): {"machine": {...}, "records": [...]}.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import torch
import torch._inductor.config

sys.path.insert(0, str(Path(__file__).resolve().parent))

import minbert.model.bert as bert_module  # noqa: E402
import overlap_step as ov  # noqa: E402
import train_step as ts  # noqa: E402
from minbert.model.bert import BertConfig, BertModel  # noqa: E402
from minbert.training.cudagraph import GraphedSteps  # noqa: E402
from minbert.training.lazy_rows import attach_lazy_rows  # noqa: E402
from minbert.training.optim import AdamW, attach_master_weights  # noqa: E402

KNOBS = {"cdt": ("coordinate_descent_tuning", True), "combo": ("combo_kernels", True),
         "nosplit": ("split_reductions", False), "agg": ("aggressive_fusion", True),
         "pdl": ("triton.enable_pdl", True)}
MODEL_KNOBS = {"wgs", "fbwd", "rows"}  # the encoder's, not inductor's
_OUR_KERNEL = bert_module._import_triton_kernel


MISSING = object()  # a setting this torch does not have


def get_setting(name: str):
    """Inductor's setting ``name`` (dotted for a sub-section: ``triton.enable_pdl``); MISSING where
    this torch has no such setting or section."""
    section, _, key = name.rpartition(".")
    holder = getattr(torch._inductor.config, section, MISSING) if section else torch._inductor.config
    return MISSING if holder is MISSING else getattr(holder, key, MISSING)


def set_setting(name: str, value) -> None:
    section, _, key = name.rpartition(".")
    setattr(getattr(torch._inductor.config, section) if section else torch._inductor.config, key, value)


DEFAULTS = {name: get_setting(name) for name, _ in KNOBS.values()}


def set_knobs(variant: str) -> None:
    """Inductor's settings for ``variant``: the knobs its name lists after the step's name, the
    others at their defaults (``peer``: all at their defaults); and our attention kernel's
    backward, one kernel with ``fbwd``, else the two kernels.

    Raises:
        ValueError: an unknown knob in the name."""
    chosen = [k for k in variant.split("-")[1:] if k not in MODEL_KNOBS]
    unknown = set(chosen) - set(KNOBS)
    if unknown:
        raise ValueError(f"unknown inductor knob(s) {sorted(unknown)} in {variant!r}; known: {sorted(KNOBS)}")
    missing = [KNOBS[k][0] for k in chosen if DEFAULTS[KNOBS[k][0]] is MISSING]
    if missing:
        raise ValueError(f"{variant!r}: this torch ({torch.__version__}) has no inductor setting {missing}")
    for name, default in DEFAULTS.items():
        if default is not MISSING:
            set_setting(name, default)
    for knob in chosen:
        set_setting(*KNOBS[knob])
    fused = "fbwd" in variant.split("-")[1:]  # the attention kernel the next compile bakes in
    bert_module._import_triton_kernel = _fused_backward_kernel if fused else _OUR_KERNEL


def _fused_backward_kernel(requested: str):
    """bert._import_triton_kernel with the one-kernel backward (knob fbwd; compiled into the step)."""
    kernel = _OUR_KERNEL(requested)
    return None if kernel is None else functools.partial(kernel, fused_backward=True)


def graphed_params(model: torch.nn.Module, rows) -> list[torch.nn.Parameter]:  # noqa: ANN001
    """The parameters whose gradients the step's graphs hold: all but the rows' table (``rows``, a
    :class:`~minbert.training.lazy_rows.LazyRows` or None), as the trainer's step does. Its gradient
    is the rows' accumulator; a buffer would give it a zero ``.grad``, and AdamW the dense update too."""
    return [p for p in model.parameters() if rows is None or p is not rows.weight]


def prepare(variant: str, batches: list[dict]):
    set_knobs(variant)
    kind = variant.split("-")[0]
    if kind not in ("whole", "master"):
        raise ValueError(f"unknown variant {variant!r}")
    knobs = set(variant.split("-")[1:])
    wgs = "wgs" in knobs
    if kind == "whole":
        if "rows" in knobs:
            raise ValueError("the rows knob goes with the master-weights step (master-rows)")
        return ov.prepare("whole", batches, weight_grad_stream=wgs)
    dev = torch.device("cuda")
    torch.manual_seed(0)
    config = BertConfig(**ts.CONFIGS["bert-base"], attn_implementation="sdpa", weight_grad_stream=wgs)
    model = BertModel(config).to(dev).train()
    opt = AdamW(model.parameters(), lr=1e-5, fused=True, master_weights=True)
    rows = attach_lazy_rows(model, opt) if "rows" in knobs else None  # the word embedding's update on the
    # rows a step reads (optim.embedding_rows; before the master weights, as build_optimizer does)
    attach_master_weights(model, opt)  # the parameters now bf16, the masters fp32 in opt's state
    params = graphed_params(model, rows)
    B, max_seqlen = batches[0]["input_ids"].shape[0], 128
    gpu_batches = [{k: v.to(dev) for k, v in ts.packed_inputs(b, max_seqlen).items()} for b in batches]
    loss_fn = torch.compile(ts.packed_loss_fn(model, B, max_seqlen), dynamic=True)
    graphs = GraphedSteps(params, capture_after=0, direct=True, updater=opt)
    lrs = [g["lr"] for g in opt.param_groups]

    def step(b):
        graphs.zero_grad()
        graphs.run("step", loss_fn, b, 1.0, lrs)
        if not graphs.step_updated:
            graphs.expose_grads()
            opt.step()
        else:
            opt.replayed()  # with rows: every 16 updates, a flush of the whole table

    return step, gpu_batches, sum(p.numel() for p in model.parameters()), graphs


if __name__ == "__main__":
    ov.main("whole,master,peer", prepare, configure=set_knobs)
