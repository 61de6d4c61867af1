"""The packed train step with the optimizer update overlapped with the backward, against the
shipped step, in one process (bert-base-sized encoder, real SST batches, bf16).

The shipped step (``minbert-packed-compile`` of ``train_step.py``) compiles the whole step as one
graph, so autograd sees one backward node: every gradient is ready only when the whole backward
is done, and the fused AdamW update (memory-bound, about 0.9 ms at bert-base size) runs after it.
Here each encoder layer is compiled on its own, so that a layer's gradients are final as soon as
its backward node has run; a post-accumulate-grad hook then launches that layer's fused AdamW
update on a second CUDA stream, where it runs while the backward of the layers below goes on.
Both are captured in the one CUDA graph of the step (multi-stream capture: fork and join by
events).

Variants (``--variants``):
  whole            the shipped step: one compiled graph, update captured after the backward
  whole-noopt      the same without any optimizer update (forward and backward only)
  layers           each layer compiled on its own, update captured after the backward
  layers-overlap   each layer compiled on its own, each layer's update on a second stream
  layers-noopt     per-layer compile, no update
  whole-noopt-bf16 whole-noopt with the weights in bf16 (no weight casts; bf16 gradients)
  layers-overlap-tK  the same with a Triton AdamW kernel per tensor that runs K programs
  ...-prio         the step's stream at high priority (the update's at the default)
  peer             transformers + torch.compile(mode="reduce-overhead") (train_step.py's best peer)

Prints one JSON object (and writes it to --out): {"machine": {...}, "records": [...]}.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_step as ts  # noqa: E402
from bench_io import emit, machine  # noqa: E402
from minbert.model.bert import BertConfig, BertModel  # noqa: E402
from minbert.model.packing import PackedBatch  # noqa: E402
from minbert.model.train_ops import Copies, compute_copies, group_key  # noqa: E402
from minbert.training.cudagraph import GraphedSteps  # noqa: E402
from minbert.training.optim import AdamW  # noqa: E402


def _triton_adamw():
    """A Triton AdamW over one tensor with a fixed number of programs (each loops over blocks),
    so that the update holds only that many SMs while the backward runs beside it."""
    import triton
    import triton.language as tl

    @triton.jit
    def kernel(p_ptr, g_ptr, m_ptr, v_ptr, n, lr_ptr, step_ptr, b1, b2, eps, wd,
               BLOCK: tl.constexpr, NPROG: tl.constexpr):
        pid = tl.program_id(0)
        lr = tl.load(lr_ptr)
        t = tl.load(step_ptr)
        bc1 = 1.0 - tl.exp2(t * tl.log2(b1))
        bc2_sqrt = tl.sqrt(1.0 - tl.exp2(t * tl.log2(b2)))
        for start in range(pid * BLOCK, n, NPROG * BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < n
            p = tl.load(p_ptr + offs, mask=mask)
            g = tl.load(g_ptr + offs, mask=mask).to(tl.float32)
            m = tl.load(m_ptr + offs, mask=mask)
            v = tl.load(v_ptr + offs, mask=mask)
            p = p * (1.0 - lr * wd)
            m = m + (1.0 - b1) * (g - m)
            v = b2 * v + (1.0 - b2) * g * g
            p = p - (lr / bc1) * m / (tl.sqrt(v) / bc2_sqrt + eps)
            tl.store(p_ptr + offs, p, mask=mask)
            tl.store(m_ptr + offs, m, mask=mask)
            tl.store(v_ptr + offs, v, mask=mask)

    return kernel


class OverlappedUpdate:
    """Our fused AdamW update, one bucket of parameters at a time, launched on ``stream`` by a
    post-accumulate-grad hook as soon as the bucket's last gradient is accumulated; ``finish``
    launches what is left and joins the stream (the ``updater`` of GraphedSteps)."""

    def __init__(self, opt: AdamW, buckets: list[list[torch.nn.Parameter]], lr: float, programs: int = 0):
        self.opt, self.buckets, self.programs = opt, buckets, programs
        self.kernel = _triton_adamw() if programs else None
        self.stream = torch.cuda.Stream()
        self.lr = torch.full((), lr, device=buckets[0][0].device)
        self.bucket_of = {p: i for i, b in enumerate(buckets) for p in b}
        self.left = [len(b) for b in buckets]
        self.param_groups = opt.param_groups
        for b in buckets:
            for p in b:
                p.register_post_accumulate_grad_hook(self._hook)

    def _hook(self, p: torch.nn.Parameter) -> None:
        i = self.bucket_of[p]
        self.left[i] -= 1
        if self.left[i] == 0:
            self._launch(i)

    def _launch(self, i: int) -> None:
        ps = [p for p in self.buckets[i] if p.grad is not None]
        self.left[i] = len(self.buckets[i])
        if not ps:
            return
        cur = torch.cuda.current_stream()
        self.stream.wait_stream(cur)
        capturing = torch.cuda.is_current_stream_capturing()
        with torch.cuda.stream(self.stream):
            if not capturing:
                for p in ps:
                    p.grad.record_stream(self.stream)
            by_group: dict[int, list] = {}
            for p in ps:
                gi = next(k for k, g in enumerate(self.opt.param_groups) if any(q is p for q in g["params"]))
                by_group.setdefault(gi, []).append(p)
            for gi, gps in by_group.items():
                group = self.opt.param_groups[gi]
                st = [self.opt.state_of(p) for p in gps]
                steps = [s["step"] for s in st]
                torch._foreach_add_(steps, 1.0)
                b1, b2 = group["betas"]
                if self.kernel is not None:
                    for p, s in zip(gps, st, strict=True):
                        n = p.numel()
                        grid = (max(1, min(self.programs, -(-n // 4096))),)
                        self.kernel[grid](p, p.grad, s["exp_avg"], s["exp_avg_sq"], n, self.lr, s["step"], b1, b2,
                                          group["eps"], group["weight_decay"], BLOCK=4096, NPROG=grid[0])
                    continue
                torch._fused_adamw_(
                    gps, [p.grad for p in gps], [s["exp_avg"] for s in st], [s["exp_avg_sq"] for s in st], [], steps,
                    lr=self.lr, beta1=b1, beta2=b2, weight_decay=group["weight_decay"], eps=group["eps"],
                    amsgrad=False, maximize=False,
                )

    def prepare_graph_update(self) -> None:
        self.opt.prepare_graph_update()

    def graph_update(self, lrs: torch.Tensor) -> None:  # noqa: ARG002 (the probe's lr is fixed)
        self.finish()

    def finish(self) -> None:
        for i, n in enumerate(self.left):
            if n != len(self.buckets[i]):
                self._launch(i)
        torch.cuda.current_stream().wait_stream(self.stream)


class _PackedLayer(torch.nn.Module):
    """A layer's packed forward as its module's forward (what torch.compile of a module wants)."""

    def __init__(self, layer: torch.nn.Module):
        super().__init__()
        self.layer = layer

    def forward(self, x, cu_seqlens, max_seqlen, copies):  # noqa: ANN001, ANN201
        return self.layer.forward_packed(x, cu_seqlens, max_seqlen, copies)


def layerwise_loss_fn(model: BertModel, B: int, max_seqlen: int):
    """The packed loss of train_step.py with the embeddings and each layer compiled apart."""
    emb = torch.compile(model.embeddings, dynamic=True)
    layers = list(model.encoder.layer)
    fns = [torch.compile(_PackedLayer(layer), dynamic=True) for layer in layers]
    groups = [layer.projection_groups() for layer in layers]

    def loss_fn(b):
        p = PackedBatch(b["input_ids"], b["token_type_ids"], b["position_ids"], b["cu_seqlens"], max_seqlen, B)
        with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
            x = emb(p.input_ids, p.token_type_ids, p.position_ids)
            copies = compute_copies(sum(groups, []), x)
            for fn, gs in zip(fns, groups, strict=True):
                sub = Copies({group_key(g): copies.stacked[group_key(g)] for g in gs})
                x = fn(x, p.cu_seqlens, p.max_seqlen, sub)
            first = p.cu_seqlens[: p.num_real].long()
            pooled = torch.tanh(model.pooler.dense(x[first]))
            loss = x.float().pow(2).mean() + pooled.float().mean()
        return loss, loss.detach()

    return loss_fn


def prepare(variant: str, batches: list[dict], weight_grad_stream: bool = False):
    dev = torch.device("cuda")
    torch.manual_seed(0)
    config = BertConfig(**ts.CONFIGS["bert-base"], attn_implementation="sdpa", weight_grad_stream=weight_grad_stream)
    model = BertModel(config).to(dev).train()
    if variant.endswith("-bf16"):  # the weights in the compute dtype: no cast kernels in the step
        model = model.to(torch.bfloat16)
    opt = AdamW(model.parameters(), lr=1e-5, fused=True)
    params = list(model.parameters())
    B = batches[0]["input_ids"].shape[0]
    max_seqlen = 128
    gpu_batches = [{k: v.to(dev) for k, v in ts.packed_inputs(b, max_seqlen).items()} for b in batches]
    if variant.startswith("whole"):
        loss_fn = torch.compile(ts.packed_loss_fn(model, B, max_seqlen), dynamic=True)
    else:
        loss_fn = layerwise_loss_fn(model, B, max_seqlen)
    updater = None
    if variant in ("whole", "layers"):
        updater = opt
    elif variant.startswith("layers-overlap"):
        programs = int(variant.split("-t")[1].split("-")[0]) if "-t" in variant else 0
        buckets = [list(model.pooler.parameters())] + [list(m.parameters()) for m in reversed(model.encoder.layer)]
        buckets.append(list(model.embeddings.parameters()))
        updater = OverlappedUpdate(opt, buckets, 1e-5, programs)
    graphs = GraphedSteps(params, capture_after=0, direct=True, updater=updater)
    if variant.endswith("-prio"):  # the step's own kernels on a high-priority stream
        graphs.stream = torch.cuda.Stream(priority=-1)
    lrs = [g["lr"] for g in opt.param_groups]

    def step(b):
        graphs.zero_grad()
        graphs.run("step", loss_fn, b, 1.0, lrs if updater is not None else None)
        if updater is not None and not graphs.step_updated:
            if isinstance(updater, OverlappedUpdate):
                updater.finish()
            else:
                graphs.expose_grads()
                opt.step()

    return step, gpu_batches, sum(p.numel() for p in params), graphs


def bench(variant: str, batches: list[dict], warmup: int, steps: int, repeats: int, prepare_fn=prepare) -> dict:
    """One variant's record: the peer through train_step.bench, else ``prepare_fn(variant,
    batches)``'s step timed by train_step.time_steps."""
    if variant == "peer":
        return {**ts.bench("transformers-sdpa-ro", "bert-base", batches, warmup, steps, repeats), "variant": "peer"}
    t0 = time.perf_counter()
    step, gpu_batches, n_params, graphs = prepare_fn(variant, batches)
    times, _ = ts.time_steps(step, gpu_batches, warmup, steps, repeats)
    setup_s = time.perf_counter() - t0 - sum(times)
    B = batches[0]["input_ids"].shape[0]
    med = sorted(times)[repeats // 2]
    return {"variant": variant, "batch": B, "samples_per_s": round(steps * B / med, 1),
            "ms_per_step": round(1000 * med / steps, 3), "setup_s": round(setup_s, 1),
            "cuda_graphs": graphs.n_graphs, "eager_steps": graphs.n_eager, "n_params": n_params,
            "repeats_s": [round(t, 4) for t in times]}


VARIANTS = "whole,layers,layers-overlap,whole-noopt,layers-noopt,peer"


def main(default_variants: str = VARIANTS, prepare_fn=prepare, configure=None) -> None:
    """The command line of this script (and of master_weights_step.py, with its own variants and
    ``configure(variant)``, called before each variant, the peer included, runs)."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--encoder", required=True)
    ap.add_argument("--variants", default=default_variants)
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
            if configure is not None:
                configure(v)
            rec = bench(v, batches, args.warmup, args.steps, args.repeats, prepare_fn)
        except Exception as e:  # noqa: BLE001 (report and go on)
            rec = {"variant": v, "error": f"{type(e).__name__}: {e}"[:800]}
        torch._dynamo.reset()
        torch.cuda.empty_cache()
        print(json.dumps(rec), file=sys.stderr, flush=True)
        records.append(rec)
    emit({"machine": machine(), "records": records}, args.out)


if __name__ == "__main__":
    main()
