"""Evaluation throughput: inputs/s of the evaluation forward (encoder + head) over all three dev
sets (SST, QQP, STS), without process start-up, for minbert and for the peer in one process.

minbert: ``MultitaskModel`` in eval mode with ``pack_eval`` (each batch packed on the device:
the varlen kernel that ``varlen_kernel: auto`` picks without dropout, no padding), bf16
autocast, ``predict_split`` as ``minbert evaluate`` runs it. The peer: ``transformers.BertModel``
(sdpa) under ``torch.compile`` (default mode) with the same weights and the same heads (our head
modules on its outputs), fed the same batches padded to the longest row. On CUDA minbert's
evaluation replays CUDA graphs of a bf16-weight copy of the model, as in training
(``--no-graphs``: op by op under autocast);
``--also-autocast`` adds ``minbert_autocast``, the graphs of the fp32 model under autocast.
Each side runs the dev sets twice to warm up (compile, capture), then ``--repeats`` timed
passes; the figure is the median. A bi-encoder pair counts as one input.

    python benchmarks/eval_throughput.py --data-dir DIR --encoder ENC --config configs/default.yaml \\
        --out reports/bench/eval_throughput.json
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_io import emit, machine  # noqa: E402
from minbert.config import load_config  # noqa: E402
from minbert.data.tokenizer import Tokenizer  # noqa: E402
from minbert.inference.evaluate import predict_split  # noqa: E402
from minbert.inference.graphs import GraphedForward  # noqa: E402
from minbert.model.bert import BertOutput  # noqa: E402
from minbert.model.multitask import build_model  # noqa: E402
from minbert.tasks.splits import load_splits  # noqa: E402
from minbert.tasks.table import task_table  # noqa: E402


class HFEncoder(nn.Module):
    """transformers.BertModel behind minbert's encoder call: (ids, mask, types) -> BertOutput."""

    def __init__(self, folder: str):
        super().__init__()
        import transformers

        self.bert = transformers.BertModel.from_pretrained(folder, attn_implementation="sdpa", dtype=torch.float32)
        self.config = self.bert.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor):
        out = self.bert(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
        return BertOutput(out.last_hidden_state, out.pooler_output)


WARMUP_PASSES = 2  # a shape's first pass runs op by op, its second is captured (CUDA graphs)


def timed(model, tasks, dev, device, amp: bool, pad_id: int, batch_size: int, repeats: int) -> list[float]:
    """Wall seconds of ``repeats`` passes over every dev set, after :data:`WARMUP_PASSES` warm-up passes."""
    times = []
    for i in range(repeats + WARMUP_PASSES):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for name, split in dev.items():
            predict_split(model, tasks[name], split, device, batch_size, amp, pad_id)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= WARMUP_PASSES:
            times.append(time.perf_counter() - t0)
    return times


def profiled_pass(model, tasks, dev, device, amp: bool, pad_id: int, batch_size: int) -> dict:
    """One pass over every dev set under ``torch.profiler``: wall ms, kernels, the top kernels and
    the device and host busy fractions (benchmarks/profile_step.py's ``summarize``)."""
    from torch.profiler import ProfilerActivity, profile

    from profile_step import summarize  # noqa: PLC0415 (a benchmark module beside this one)

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for name, split in dev.items():
            predict_split(model, tasks[name], split, device, batch_size, amp, pad_id)
        if device.type == "cuda":
            torch.cuda.synchronize()
        wall_us = (time.perf_counter() - t0) * 1e6
    return {"wall_ms": round(wall_us / 1e3, 1), **summarize(prof.events(), 1, wall_us, 12, device.type)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--encoder", required=True, help="a local Hugging Face BERT folder")
    ap.add_argument("--config", default="configs/default.yaml", help="the heads (their weights stay random)")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dev-limit", type=int, help="rows per dev set (a smoke run)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-graphs", action="store_true", help="minbert's evaluation op by op, without CUDA graphs")
    ap.add_argument("--also-autocast", action="store_true",
                    help="also minbert's graphs of the fp32-weight model under autocast (minbert_autocast)")
    ap.add_argument("--profile", action="store_true", help="then one more pass of each side under torch.profiler")
    ap.add_argument("--out")
    args = ap.parse_args()
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    overrides = [f"model.encoder={args.encoder}", f"model.attn_implementation={'sdpa' if cuda else 'eager'}"]
    if args.dev_limit:
        overrides += [f"tasks.{t}.dev_limit={args.dev_limit}" for t in ("sst", "qqp", "sts")]
        overrides += [f"tasks.{t}.train_limit=8" for t in ("sst", "qqp", "sts")]
    cfg = load_config(args.config, overrides)
    tasks = task_table(cfg)
    tok = Tokenizer(args.encoder, cfg.model.max_length)
    dev = load_splits(cfg, Path(args.data_dir), tok, tasks)["dev"]
    n_inputs = sum(len(s) for s in dev.values())
    torch.manual_seed(0)
    ours = build_model(cfg, args.encoder, tasks=tasks).to(device).eval()
    ours.pack_eval = True
    peer = copy.deepcopy(ours)
    peer.pack_eval = False
    peer.encoder = HFEncoder(args.encoder).to(device).eval()
    peer.encoder = torch.compile(peer.encoder)
    sides = [("minbert", ours), ("peer", peer)]
    if cuda and not args.no_graphs:  # as dev evaluation in training runs (train.cuda_graphs)
        ours.eval_graphs = GraphedForward(device, bf16_weights=True)
        if args.also_autocast:
            autocast_side = copy.copy(ours)  # the same modules and weights; its own graphs
            autocast_side.eval_graphs = GraphedForward(device)
            sides.append(("minbert_autocast", autocast_side))
    result = {}
    for name, model in sides:
        times = timed(model, tasks, dev, device, cuda, tok.pad_token_id, args.batch_size, args.repeats)
        result[f"{name}_pairs_per_s"] = round(n_inputs / statistics.median(times), 1)
        result[f"{name}_repeats_s"] = [round(t, 3) for t in times]
    # the same model on both sides: their outputs agree (within bf16 rounding on a GPU)
    diffs = [
        float(abs(predict_split(ours, tasks[n], s, device, args.batch_size, cuda, tok.pad_token_id).outputs
                  - predict_split(peer, tasks[n], s, device, args.batch_size, cuda, tok.pad_token_id).outputs).max())
        for n, s in dev.items()
    ]
    result["max_abs_output_diff"] = round(max(diffs), 5)
    if ours.eval_graphs is not None:
        result["minbert_graphs"] = ours.eval_graphs.stats()
    if args.profile:
        for name, model in sides:
            prof = profiled_pass(model, tasks, dev, device, cuda, tok.pad_token_id, args.batch_size)
            result[f"{name}_profile"] = prof
    emit({"machine": machine(), "inputs": n_inputs, "config": args.config, "eval": result}, args.out)


if __name__ == "__main__":
    main()
