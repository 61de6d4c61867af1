"""The AdamW update alone, at bert-base size (109.5M parameters), as the train step runs it and
in layouts it could take: how far the update is from the memory bandwidth floor.

Each variant is captured in a CUDA graph and replayed (``bench_io.time_us``); the figure is
microseconds per update and the bandwidth it reaches, counting 7 x 4 bytes a parameter (read
parameter, gradient and both moments; write parameter and moments; 6 x 4 + 2 with bf16
gradients).

Variants:
  list        torch's fused AdamW kernel over the model's 199 parameter tensors (the shipped step)
  flat        the same kernel over one flat tensor of every parameter
  triton      overlap_step.py's Triton AdamW over the flat tensor, one program per 4,096 elements
  triton-bf16 the same reading bf16 gradients
  triton-pK   the Triton kernel with K programs in all, each looping over blocks (K SMs at most)

Prints one JSON object (and writes it to --out): {"machine": {...}, "records": [...]}.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import train_step as ts  # noqa: E402
from bench_io import emit, machine, time_us  # noqa: E402
from minbert.model.bert import BertConfig, BertModel  # noqa: E402
from overlap_step import _triton_adamw  # noqa: E402

BLOCK = 4096


def variant_fn(name: str, params: list[torch.Tensor]):
    """(the update as a no-argument function, bytes it moves) for variant ``name``."""
    dev = params[0].device
    n = sum(p.numel() for p in params)
    lr = torch.full((), 1e-5, device=dev)
    if name == "list":
        ps = [p.detach().clone() for p in params]
        gs, ms, vs = ([torch.randn_like(p) * 1e-3 for p in ps], [torch.zeros_like(p) for p in ps],
                      [torch.zeros_like(p) for p in ps])
        steps = [torch.zeros((), device=dev) for _ in ps]

        def fn():
            torch._foreach_add_(steps, 1.0)
            torch._fused_adamw_(ps, gs, ms, vs, [], steps, lr=lr, beta1=0.9, beta2=0.999, weight_decay=0.01,
                                eps=1e-6, amsgrad=False, maximize=False)

        return fn, 28 * n
    p = torch.randn(n, device=dev)
    g = torch.randn(n, device=dev, dtype=torch.bfloat16 if name.endswith("bf16") else torch.float32) * 1e-3
    m, v, step = torch.zeros_like(p), torch.zeros_like(p), torch.zeros((), device=dev)
    if name == "flat":
        def fn():
            step.add_(1.0)
            torch._fused_adamw_([p], [g], [m], [v], [], [step], lr=lr, beta1=0.9, beta2=0.999, weight_decay=0.01,
                                eps=1e-6, amsgrad=False, maximize=False)

        return fn, 28 * n
    kernel = _triton_adamw()
    grid = (int(name.split("-p")[1]),) if "-p" in name else (-(-n // BLOCK),)

    def fn():
        step.add_(1.0)
        kernel[grid](p, g, m, v, n, lr, step, 0.9, 0.999, 1e-6, 0.01, BLOCK=BLOCK, NPROG=grid[0])

    return fn, (26 if name.endswith("bf16") else 28) * n


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", default="list,flat,triton,triton-bf16,triton-p132,triton-p33")
    ap.add_argument("--replays", type=int, default=200)
    ap.add_argument("--out")
    args = ap.parse_args()
    model = BertModel(BertConfig(**ts.CONFIGS["bert-base"])).cuda()
    params = list(model.parameters())
    records = []
    for name in args.variants.split(","):
        fn, nbytes = variant_fn(name, params)
        us = time_us(fn, args.replays, 1, warmup=20)
        records.append({"variant": name, "n_params": sum(p.numel() for p in params), "us": round(us, 1),
                        "gbytes": round(nbytes / 1e9, 3), "tb_per_s": round(nbytes / us / 1e6, 2)})
        print(records[-1], file=sys.stderr, flush=True)
        torch.cuda.empty_cache()
    emit({"machine": machine(), "records": records}, args.out)


if __name__ == "__main__":
    main()
