"""The packed train step on bf16 working weights with fp32 master weights, against the shipped
step, in one process (bert-base-sized encoder, real SST batches).

The shipped step keeps the weights in fp32: every step casts them to bf16 for the GEMMs and
writes fp32 gradients, and AdamW updates the fp32 weights. Here the encoder's parameters are
bf16: the forward casts no weight for its GEMMs (autocast still runs LayerNorm in fp32, and the
query, key and value weights are concatenated at each step) and the backward writes bf16
gradients. AdamW keeps fp32 master copies with its moments, and after each update writes the
bf16 working weights from them (mixed-precision training with master weights: Micikevicius et
al. 2018, "Mixed Precision Training", Sec. 3.1). The update is one function compiled by inductor
(foreach kernels over the bf16 gradients, the fp32 masters and moments, and the bf16 weights),
captured in the step's CUDA graph like the shipped step's fused AdamW. One lr and one weight
decay for every parameter, and every parameter must have a gradient at each step (all do here).

Variants (``--variants``):
  whole    the shipped step (overlap_step.py's ``whole``)
  master   bf16 working weights, fp32 master weights updated by the compiled AdamW
  peer     transformers + torch.compile(mode="reduce-overhead")

Prints one JSON object (and writes it to --out): {"machine": {...}, "records": [...]}.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import overlap_step as ov  # noqa: E402
import train_step as ts  # noqa: E402
from bench_io import emit, machine  # noqa: E402
from minbert.model.bert import BertConfig, BertModel  # noqa: E402
from minbert.training.cudagraph import GraphedSteps  # noqa: E402


def adamw_master_update(master: list, grads: list, m: list, v: list, working: list, step: torch.Tensor,
                        lr: torch.Tensor, b1: float, b2: float, eps: float, wd: float) -> None:
    """One AdamW step (Loshchilov & Hutter 2019, decoupled weight decay; the equations of
    minbert.training.optim.AdamW) on the fp32 ``master`` tensors from the bf16 ``grads``, then
    ``working`` (bf16) = ``master`` rounded. ``step``: 0-d float32, advanced here; ``lr``: 0-d."""
    step.add_(1.0)
    bc1 = 1.0 - torch.pow(b1, step)
    bc2_sqrt = torch.sqrt(1.0 - torch.pow(b2, step))
    g = [x.float() for x in grads]
    if wd:
        torch._foreach_mul_(master, 1.0 - lr * wd)
    torch._foreach_lerp_(m, g, 1.0 - b1)
    torch._foreach_mul_(v, b2)
    torch._foreach_addcmul_(v, g, g, value=1.0 - b2)
    denom = torch._foreach_sqrt(v)
    torch._foreach_div_(denom, bc2_sqrt)
    torch._foreach_add_(denom, eps)
    upd = torch._foreach_div(m, denom)
    torch._foreach_mul_(upd, -lr / bc1)
    torch._foreach_add_(master, upd)
    torch._foreach_copy_(working, master)


class MasterWeightsAdamW:
    """AdamW over fp32 master copies of bf16 working parameters; a GraphedSteps updater."""

    def __init__(self, working: list[torch.nn.Parameter], lr: float, betas=(0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, compiled: bool = True):
        self.working = working
        self.master = [p.detach().float().clone() for p in working]
        self.m = [torch.zeros_like(p) for p in self.master]
        self.v = [torch.zeros_like(p) for p in self.master]
        dev = working[0].device
        self.step_t = torch.zeros((), device=dev)
        self.lr = torch.full((), lr, device=dev)
        self.hyper = (*betas, eps, weight_decay)
        self.param_groups = [{"lr": lr, "params": working}]
        self.fn = torch.compile(adamw_master_update, fullgraph=True, dynamic=False) if compiled else adamw_master_update

    def _run(self, grads: list[torch.Tensor]) -> None:
        self.fn(self.master, grads, self.m, self.v, self.working, self.step_t, self.lr, *self.hyper)

    @torch.no_grad()
    def prepare_graph_update(self) -> None:
        """Compile the update outside the capture, on fresh zero gradients (no aliasing, as the
        graph's own gradients), then undo its effect on the state."""
        saved = [t.clone() for t in (*self.master, *self.m, *self.v, self.step_t)]
        self._run([torch.zeros_like(p) for p in self.working])
        for t, s in zip((*self.master, *self.m, *self.v, self.step_t), saved, strict=True):
            t.copy_(s)
        torch._foreach_copy_(self.working, self.master)

    @torch.no_grad()
    def graph_update(self, lrs: torch.Tensor) -> None:
        self.lr.copy_(lrs[0])
        self._run([p.grad for p in self.working])

    @torch.no_grad()
    def step(self) -> None:
        """The update from the host (a step that ran eagerly).

        Raises:
            ValueError: a working parameter without a gradient."""
        if any(p.grad is None for p in self.working):
            raise ValueError("MasterWeightsAdamW updates every parameter: one has no gradient")
        self._run([p.grad.clone() for p in self.working])


def prepare(variant: str, batches: list[dict]):
    if variant == "whole":
        return ov.prepare("whole", batches)
    dev = torch.device("cuda")
    torch.manual_seed(0)
    model = BertModel(BertConfig(**ts.CONFIGS["bert-base"], attn_implementation="sdpa")).to(dev).train()
    work = copy.deepcopy(model).to(torch.bfloat16)
    del model  # the masters are the optimizer's own fp32 copies
    params = list(work.parameters())
    opt = MasterWeightsAdamW(params, lr=1e-5)
    B, max_seqlen = batches[0]["input_ids"].shape[0], 128
    gpu_batches = [{k: v.to(dev) for k, v in ts.packed_inputs(b, max_seqlen).items()} for b in batches]
    loss_fn = torch.compile(ts.packed_loss_fn(work, B, max_seqlen), dynamic=True)
    graphs = GraphedSteps(params, capture_after=0, direct=True, updater=opt)
    lrs = [opt.param_groups[0]["lr"]]

    def step(b):
        graphs.zero_grad()
        graphs.run("step", loss_fn, b, 1.0, lrs)
        if not graphs.step_updated:
            graphs.expose_grads()
            opt.step()

    return step, gpu_batches, sum(p.numel() for p in params), graphs


def bench(variant: str, batches: list[dict], warmup: int, steps: int, repeats: int) -> dict:
    if variant == "peer":
        return {**ts.bench("transformers-sdpa-ro", "bert-base", batches, warmup, steps, repeats), "variant": "peer"}
    t0 = time.perf_counter()
    step, gpu_batches, n_params, graphs = prepare(variant, batches)
    times, _ = ts.time_steps(step, gpu_batches, warmup, steps, repeats)
    B = batches[0]["input_ids"].shape[0]
    med = sorted(times)[repeats // 2]
    return {"variant": variant, "batch": B, "samples_per_s": round(steps * B / med, 1),
            "ms_per_step": round(1000 * med / steps, 3), "setup_s": round(time.perf_counter() - t0 - sum(times), 1),
            "cuda_graphs": graphs.n_graphs, "eager_steps": graphs.n_eager, "n_params": n_params,
            "repeats_s": [round(t, 4) for t in times]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--encoder", required=True)
    ap.add_argument("--variants", default="whole,master,peer")
    for name, default in (("batch", 32), ("warmup", 32), ("n-batches", 32), ("steps", 20), ("repeats", 5)):
        ap.add_argument(f"--{name}", type=int, default=default)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch._dynamo.config.recompile_limit = 64
    batches = ts.make_batches(Path(args.data_dir), args.encoder, args.batch, args.n_batches)
    records = []
    for v in args.variants.split(","):
        try:
            rec = bench(v, batches, args.warmup, args.steps, args.repeats)
        except Exception as e:  # noqa: BLE001 (report and go on)
            rec = {"variant": v, "error": f"{type(e).__name__}: {e}"[:800]}
        torch._dynamo.reset()
        torch.cuda.empty_cache()
        print(json.dumps(rec), file=sys.stderr, flush=True)
        records.append(rec)
    emit({"machine": machine(), "records": records}, args.out)


if __name__ == "__main__":
    main()
