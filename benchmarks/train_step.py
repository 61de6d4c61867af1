"""Train-step throughput: minbert's encoder vs Hugging Face ``transformers.BertModel``, in one
process, on identical batches of real SST sentences padded to the longest in the batch.

Each step: bf16 autocast forward, a scalar loss on ``last_hidden_state`` and ``pooler_output``,
backward, fused ``torch.optim.AdamW`` step. After ``--warmup`` steps, ``--repeats`` timings of
``--steps`` steps each; the figure is the median.

Implementations: ``minbert`` is what ``minbert train`` does on CUDA: batches padded further to a
multiple of 16 tokens (a few shapes), forward + backward replayed as one CUDA graph per shape
(minbert.training.cudagraph.GraphedSteps), the optimizer outside the graph. ``minbert-eager`` is the same
encoder run op by op on the peer's batches. ``minbert-packed`` packs each batch's real tokens into
one row (no padding; minbert.model.packing) rounded up to a multiple of 64 tokens with a filler
sequence, runs attention with the varlen kernel ``BertConfig.varlen_kernel="auto"`` picks
(BertModel.forward_packed; a ``-flash`` or ``-triton`` suffix, e.g. ``minbert-packed-compile-flash``,
asks for FlashAttention-2's kernel or ours explicitly) and
replays forward + backward and our fused AdamW update (minbert.training.optim.AdamW, the same
equations and kernel as ``torch.optim.AdamW(fused=True)``) as CUDA graphs, one per token count
(``GraphedSteps(direct=True, updater=...)``, as in training; a ``-hostopt`` suffix runs the update
from the host after the replay, on the gradients where the graph wrote them); ``minbert-packed-compile`` is the
same step compiled by inductor (fused elementwise kernels) inside our CUDA graphs, and
``minbert-packed-ro`` the packed step under ``torch.compile(mode="reduce-overhead")``.
``transformers-sdpa``/``-eager`` get the batches padded to the longest, as a user would give
them. ``transformers-sdpa-compile`` is the same model
under ``torch.compile`` (default mode, inductor's fusions) and ``transformers-sdpa-ro`` under
``torch.compile(mode="reduce-overhead")`` (inductor plus CUDA graphs): the strongest peer a user
gets with one line. Both get the batches padded to a multiple of 16 tokens, as ours are, so that
they see as few shapes as we do. The default warm-up (64 steps) is one pass
over the 64 distinct batches, so every graph is captured before timing. Weights are random (speed does not depend on
them). MFU = 6 * n_params * real_tokens_per_s / 989e12 (H100/H200 dense bf16 datasheet peak;
all parameters counted, attention FLOPs excluded).

Prints one JSON object (and writes it to --out): {"machine": {...}, "records": [...]}.

    python benchmarks/train_step.py --data-dir DIR --configs minilm-l6,bert-base --batches 8,32,128
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_io import emit, machine  # noqa: E402
from minbert.data.tokenizer import Tokenizer, pad_batch  # noqa: E402
from minbert.model.bert import BertConfig, BertModel  # noqa: E402
from minbert.model.packing import PackedBatch, pack  # noqa: E402
from minbert.tasks.base import get_task  # noqa: E402
from minbert.training.cudagraph import GraphedSteps  # noqa: E402
from minbert.training.optim import AdamW  # noqa: E402

CONFIGS = {
    "minilm-l6": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}
PEAK_BF16 = 989e12


def make_batches(data_dir: Path, encoder: str, batch: int, n: int) -> list[dict]:
    raw = get_task("sst").read(data_dir / "ids-sst-train.csv", "train")
    tok = Tokenizer(encoder, 128)
    ids, types, _ = tok.encode([t[0] for t in raw.texts])
    out = []
    for i in range(n):
        s = (i * batch) % (len(ids) - batch)
        out.append(pad_batch(ids[s : s + batch], types[s : s + batch], tok.pad_token_id))
    return out


def build(impl: str, cfg: dict, attn: str = "sdpa", kernel: str = "auto"):
    if impl.startswith("minbert"):
        model = BertModel(BertConfig(**cfg, attn_implementation=attn, varlen_kernel=kernel))
        if impl == "minbert-compile":  # not in the default list: compile was no win end to end
            model.compile(dynamic=True)
        return model
    import transformers

    hf_cfg = transformers.BertConfig(**cfg)
    hf_cfg._attn_implementation = impl.split("-")[1]
    return transformers.BertModel(hf_cfg)


COMPILE_MODES = {"transformers-sdpa-compile": "default", "transformers-sdpa-ro": "reduce-overhead"}
PACK_MULTIPLE = 64


def packed_inputs(b: dict, max_seqlen: int) -> dict:
    p = pack(b["input_ids"], b["attention_mask"], b["token_type_ids"], PACK_MULTIPLE, max_seqlen)
    return {"input_ids": p.input_ids, "token_type_ids": p.token_type_ids, "position_ids": p.position_ids,
            "cu_seqlens": p.cu_seqlens, "real_tokens": b["attention_mask"].sum()}


def packed_loss_fn(model, B: int, max_seqlen: int, device_type: str = "cuda"):
    def loss_fn(b):
        p = PackedBatch(b["input_ids"], b["token_type_ids"], b["position_ids"], b["cu_seqlens"], max_seqlen, B)
        with torch.autocast(device_type, dtype=torch.bfloat16, cache_enabled=False):
            out = model.forward_packed(p)
            loss = out.last_hidden_state.float().pow(2).mean() + out.pooler_output.float().mean()
        return loss, loss.detach()

    return loss_fn


def prepare(impl: str, cfg_name: str, batches: list[dict], device: torch.device):
    """The implementation's train step on ``device``: (step(batch), the batches as it reads them,
    real_tokens(batch), n_params, graphs or None). On a CPU (a smoke run of the scripts) our
    encoder uses eager attention and nothing is captured."""
    cuda = device.type == "cuda"
    torch.manual_seed(0)
    host_update = impl.endswith("-hostopt")  # the optimizer outside the packed step's graph
    impl = impl.removesuffix("-hostopt")
    kernel = next((k for k in ("flash", "triton") if impl.endswith(f"-{k}")), "auto")  # packed attention's kernel
    impl = impl.removesuffix(f"-{kernel}")  # otherwise the same step
    model = build(impl, CONFIGS[cfg_name], "sdpa" if cuda else "eager", kernel).to(device).train()
    packed = impl.startswith("minbert-packed")
    if packed:  # ours, as minbert train runs it (torch's fused kernel, one call per step)
        opt = AdamW(model.parameters(), lr=1e-5, fused=cuda)
    else:
        opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=cuda)
    params = list(model.parameters())
    if impl in COMPILE_MODES:
        model = torch.compile(model, mode=COMPILE_MODES[impl])
    gpu_batches = [{k: v.to(device) for k, v in b.items()} for b in batches]

    def loss_fn(b):
        with torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False):
            out = model(
                input_ids=b["input_ids"], attention_mask=b["attention_mask"], token_type_ids=b["token_type_ids"]
            )
            loss = out.last_hidden_state.float().pow(2).mean() + out.pooler_output.float().mean()
        return loss, loss.detach()

    B = batches[0]["input_ids"].shape[0]
    if packed:
        max_seqlen = max(128, PACK_MULTIPLE)
        gpu_batches = [{k: v.to(device) for k, v in packed_inputs(b, max_seqlen).items()} for b in batches]
        loss_fn = packed_loss_fn(model, B, max_seqlen, device.type)
        if impl == "minbert-packed-compile":  # one compile for every token count (symbolic N)
            loss_fn = torch.compile(loss_fn, dynamic=True)
        elif impl == "minbert-packed-ro":
            loss_fn = torch.compile(loss_fn, mode="reduce-overhead", dynamic=True)
    graphed = ("minbert", "minbert-packed", "minbert-packed-compile")
    # packed: one graph per step, its gradients read where it writes them (as minbert train does)
    updater = opt if packed and not host_update else None
    graphs = GraphedSteps(params, capture_after=0, direct=packed, updater=updater) if impl in graphed and cuda else None
    lrs = [g["lr"] for g in opt.param_groups]
    if not packed and (impl in graphed or impl in COMPILE_MODES):  # pad T to a multiple of 16 (same real tokens)
        gpu_batches = [
            {k: torch.nn.functional.pad(v, (0, -v.shape[1] % 16)) for k, v in b.items()} for b in gpu_batches
        ]

    def step(b):
        if graphs is not None:
            graphs.zero_grad()
            graphs.run("step", loss_fn, b, 1.0, lrs if graphs.updater is not None else None)
            if not graphs.step_updated:
                graphs.expose_grads()
                opt.step()
            return
        loss, _ = loss_fn(b)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def real_tokens(b) -> int:
        return int(b["real_tokens"] if packed else b["attention_mask"].sum())

    return step, gpu_batches, real_tokens, sum(p.numel() for p in params), graphs


def time_steps(step, gpu_batches: list[dict], warmup: int, steps: int, repeats: int) -> tuple[list, list]:
    """``warmup`` calls of ``step`` on the batches in turn, then ``repeats`` timings (wall
    seconds, between two device syncs) of the next ``steps`` batches each. Returns (the timings,
    the batches of each)."""
    for i in range(warmup):
        step(gpu_batches[i % len(gpu_batches)])
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    times, chunks = [], []
    for r in range(repeats):
        chunks.append([gpu_batches[(warmup + r * steps + j) % len(gpu_batches)] for j in range(steps)])
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for b in chunks[-1]:
            step(b)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return times, chunks


def bench(impl: str, cfg_name: str, batches: list[dict], warmup: int, steps: int, repeats: int) -> dict:
    step, gpu_batches, real_tokens, n_params, graphs = prepare(impl, cfg_name, batches, torch.device("cuda"))
    B = batches[0]["input_ids"].shape[0]
    times, chunks = time_steps(step, gpu_batches, warmup, steps, repeats)
    tokens = [sum(real_tokens(b) for b in chunk) for chunk in chunks]
    i = sorted(range(repeats), key=lambda j: times[j])[repeats // 2]
    tok_s = tokens[i] / times[i]
    rec = {
        "config": cfg_name,
        "batch": B,
        "impl": impl,
        "samples_per_s": round(steps * B / times[i], 1),
        "real_tokens_per_s": round(tok_s, 1),
        "mfu": round(6 * n_params * tok_s / PEAK_BF16, 4),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 3),
        "n_params": n_params,
        "warmup_steps": warmup,
        "cuda_graphs": graphs.n_graphs if graphs is not None else 0,
        "repeats_s": [round(t, 4) for t in times],
    }
    return rec


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--encoder", default="default", help="folder with the tokenizer")
    ap.add_argument("--configs", default="minilm-l6,bert-base")
    ap.add_argument("--batches", default="32")
    ap.add_argument(
        "--impls",
        default="minbert,minbert-eager,transformers-sdpa,transformers-eager,transformers-sdpa-compile,transformers-sdpa-ro",
    )
    ap.add_argument("--warmup", type=int, default=64)
    ap.add_argument("--n-batches", type=int, default=64, help="distinct batches cycled through")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch._dynamo.config.recompile_limit = 64  # the padded peers see one shape per batch length
    records = []
    for cfg_name in args.configs.split(","):
        for B in map(int, args.batches.split(",")):
            batches = make_batches(Path(args.data_dir), args.encoder, B, args.n_batches)
            for impl in args.impls.split(","):
                rec = bench(impl, cfg_name, batches, args.warmup, args.steps, args.repeats)
                torch._dynamo.reset()  # each compiled peer starts from a clean compile cache
                torch.cuda.empty_cache()
                print(json.dumps(rec), file=sys.stderr, flush=True)
                records.append(rec)
    result = {
        "machine": machine(),
        "records": records,
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
