"""A profile of one train-step implementation of ``benchmarks/train_step.py`` with
``torch.profiler``: kernels per step, the time share of the top kernels, how busy the GPU is, and
how much of the wall time the host spends launching.

After ``--warmup`` steps (graphs captured, kernels compiled), ``--steps`` steps run under the
profiler. From its events:

* ``kernels_per_step``: device kernels (CUDA) or operators (CPU) per step;
* ``top_kernels``: the ``--top`` kernels by total device time, each with its share of all kernel time;
* ``device_busy_fraction``: the union of the kernels' intervals over the profiled wall time (1 - idle);
* ``host_busy_fraction``: the union of the top-level host operators' intervals over that time
  (launches, graph replays and Python-visible work; the rest is the host waiting or idle);
* ``achieved_tokens_per_s`` and, with ``--bytes-per-token``, an estimate of the achieved memory
  bandwidth (bytes moved per token x tokens/s; an estimate from a byte count, not a counter).

    python benchmarks/profile_step.py --data-dir DIR --encoder ENC --config bert-base --batch 32 \\
        --impl minbert-packed-compile --out reports/bench/profile-bert-base-b32.json

``--impl`` also takes the steps of ``benchmarks/master_weights_step.py`` (bert-base on CUDA):
``whole`` and ``master``, each with its inductor settings (``master-combo-nosplit``, say).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_io import emit, machine  # noqa: E402
from train_step import CONFIGS, make_batches, prepare  # noqa: E402


def prepare_step(impl: str, config: str, batches: list[dict], device: torch.device):
    """``train_step.prepare``'s (step, batches, real_tokens, n_params, graphs) for ``impl``: one of
    train_step.py's implementations, or a step of master_weights_step.py (``whole...``,
    ``master...``; bert-base on CUDA only).

    Raises:
        ValueError: a master_weights_step.py step for another config or device."""
    if impl.split("-")[0] not in ("whole", "master"):
        return prepare(impl, config, batches, device)
    if config != "bert-base" or device.type != "cuda":
        raise ValueError(f"--impl {impl} (benchmarks/master_weights_step.py) runs bert-base on CUDA only")
    import master_weights_step

    step, gpu_batches, n_params, graphs = master_weights_step.prepare(impl, batches)
    return step, gpu_batches, lambda b: int(b["real_tokens"]), n_params, graphs


def union_length(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by (start, end) intervals (overlaps counted once), in their unit."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


CATEGORIES = (  # (category, substrings of kernel names), first match wins
    ("optimizer", ("multi_tensor_apply", "FusedOptimizer", "adam")),
    ("attention", ("_fwd_kernel", "_bwd_dq_kernel", "_bwd_dkdv_kernel", "flash", "fmha", "attention")),
    ("gemm", ("nvjet", "gemm", "cutlass", "sm90_xmma", "cublas")),
    ("fused elementwise/reduction (inductor)", ("triton_",)),
    ("copy/fill", ("copy", "fill", "elementwise_kernel", "CatArrayBatched", "Memset", "Memcpy")),
)


def categories(by_name: dict[str, float], steps: int) -> dict[str, dict]:
    """Kernel time per step and kernel names by category (:data:`CATEGORIES`; the rest "other")."""
    out: dict[str, dict] = {}
    for name, us in by_name.items():
        cat = next((c for c, keys in CATEGORIES if any(k.lower() in name.lower() for k in keys)), "other")
        d = out.setdefault(cat, {"us_per_step": 0.0, "names": 0})
        d["us_per_step"] += us / steps
        d["names"] += 1
    return {c: {"us_per_step": round(d["us_per_step"], 1), "names": d["names"]} for c, d in out.items()}


def summarize(events: list, steps: int, wall_us: float, top: int, device: str) -> dict:
    """The profile's figures from ``prof.events()`` (times in microseconds)."""
    kernels = [e for e in events if e.device_type.name == ("CUDA" if device == "cuda" else "CPU")
               and not getattr(e, "is_user_annotation", False)]  # a range such as Optimizer.step is no kernel
    by_name: dict[str, float] = {}
    calls: dict[str, int] = {}
    for e in kernels:
        by_name[e.name] = by_name.get(e.name, 0.0) + e.time_range.elapsed_us()
        calls[e.name] = calls.get(e.name, 0) + 1
    all_kernel_us = sum(by_name.values()) or 1.0
    ranked = sorted(by_name.items(), key=lambda kv: -kv[1])[:top]
    host = [e for e in events if e.device_type.name == "CPU" and e.cpu_parent is None]
    return {
        "kernels_per_step": round(len(kernels) / steps, 1),
        "top_kernels": [{"name": n[:120], "share": round(t / all_kernel_us, 4), "us_per_step": round(t / steps, 1),
                         "calls_per_step": round(calls[n] / steps, 1)}
                        for n, t in ranked],
        "categories": categories(by_name, steps),
        "device_busy_fraction": round(union_length([(e.time_range.start, e.time_range.end) for e in kernels])
                                      / wall_us, 4) if device == "cuda" else None,
        "host_busy_fraction": round(union_length([(e.time_range.start, e.time_range.end) for e in host]) / wall_us, 4),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--encoder", default="default")
    ap.add_argument("--config", default="bert-base", choices=sorted(CONFIGS))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--impl", default="minbert-packed-compile")
    ap.add_argument("--warmup", type=int, default=32)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--n-batches", type=int, default=32)
    ap.add_argument("--top", type=int, default=10)
    ap.add_argument("--bytes-per-token", type=float, help="bytes one token's step moves (for the bandwidth estimate)")
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"], help="cpu: a smoke run of the script")
    ap.add_argument("--out")
    args = ap.parse_args()
    batches = make_batches(Path(args.data_dir), args.encoder, args.batch, args.n_batches)
    step, gpu_batches, real_tokens, _, _ = prepare_step(args.impl, args.config, batches, torch.device(args.device))
    for i in range(args.warmup):
        step(gpu_batches[i % len(gpu_batches)])
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    sync()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    chunk = [gpu_batches[(args.warmup + j) % len(gpu_batches)] for j in range(args.steps)]
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for b in chunk:
            step(b)
        sync()
        wall_s = time.perf_counter() - t0
    tokens = sum(real_tokens(b) for b in chunk)
    rec = {
        "config": args.config, "batch": args.batch, "impl": args.impl, "steps": args.steps, "wall_s": round(wall_s, 4),
        "achieved_tokens_per_s": round(tokens / wall_s, 1),
        **summarize(list(prof.events()), args.steps, wall_s * 1e6, args.top, args.device),
    }
    if args.bytes_per_token:
        rec["achieved_bytes_per_s_estimate"] = round(args.bytes_per_token * tokens / wall_s, 1)
    emit({"machine": machine(), "profile": rec}, args.out)


if __name__ == "__main__":
    main()
