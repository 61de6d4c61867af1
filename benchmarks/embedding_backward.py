"""The word-embedding lookup's forward + backward on a GPU, replayed as a CUDA graph: microseconds
per replay for the packed step's token counts, by implementation.

* ``torch``: ``F.embedding`` (its backward: a kernel with hidden_size / 32 blocks up to 3,072
  indices, a sort and segment sums above);
* ``pad-3073``: the ids padded with ``padding_idx`` to 3,073 (the sort path), the rows sliced
  back;
* ``sorted-cumsum``: a backward of our own (sort, fp64 prefix sums, one write per row), kept here
  as another alternative.

Neither alternative went into the model: at the packed step's 800 to 3,000 tokens torch's own
backward was the fastest or equal (``reports/bench/s13/s13-call2-embedding_backward.json``).

Each gradient is checked against ``torch``'s (``max_abs_diff``).

    python benchmarks/embedding_backward.py --out reports/bench/embedding_backward.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_io import emit, machine, replay_us  # noqa: E402

SORTED_MIN_IDS = 3073  # torch's CUDA embedding backward sorts the ids above 3,072


def padded_lookup(ids: torch.Tensor, weight: torch.Tensor, padding_idx: int) -> torch.Tensor:
    """F.embedding of ids (N,) padded with padding_idx to SORTED_MIN_IDS, the padding sliced off."""
    n = ids.numel()
    if n >= SORTED_MIN_IDS:
        return F.embedding(ids, weight, padding_idx)
    padded = F.pad(ids, (0, SORTED_MIN_IDS - n), value=padding_idx)
    return F.embedding(padded, weight, padding_idx)[:n]


class _SortedCumsum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, ids, weight, padding_idx):  # noqa: ANN001, ANN205
        ctx.save_for_backward(ids)
        ctx.meta = (weight.shape, weight.dtype, padding_idx)
        return F.embedding(ids, weight, padding_idx)

    @staticmethod
    def backward(ctx, g):  # noqa: ANN001, ANN205
        (ids,) = ctx.saved_tensors
        (V, H), dtype, pad = ctx.meta
        s, order = torch.sort(ids.reshape(-1), stable=True)
        cs = F.pad(g.reshape(-1, H)[order].double().cumsum(0), (0, 0, 1, 0))  # (N + 1, H), row 0 = 0
        start = torch.searchsorted(s, s)
        end = torch.searchsorted(s, s, right=True)
        total = (cs[end] - cs[start]).to(dtype)  # every row of a segment holds its sum
        out = torch.zeros(V, H, dtype=dtype, device=g.device)
        out[s] = total  # equal values where ids repeat
        out[pad] = 0
        return None, out, None


def variant(name: str, ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    if name == "torch":
        return F.embedding(ids, weight, padding_idx=0)
    if name == "pad-3073":
        return padded_lookup(ids, weight, 0)
    return _SortedCumsum.apply(ids, weight, 0)


def time_variant(name: str, n: int, hidden: int, vocab: int, replays: int) -> tuple[float, torch.Tensor]:
    g = torch.Generator(device="cuda").manual_seed(n)
    ids = torch.randint(0, vocab, (n,), device="cuda", generator=g)
    ids[:: 97] = 0  # some padding tokens
    ids[1::5] = ids[0::5][: ids[1::5].numel()]  # repeats
    weight = torch.randn(vocab, hidden, device="cuda", requires_grad=True)
    grad_out = torch.randn(n, hidden, device="cuda", generator=g)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            (grad,) = torch.autograd.grad(variant(name, ids, weight), weight, grad_out)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        (grad,) = torch.autograd.grad(variant(name, ids, weight), weight, grad_out)
    return replay_us(graph, replays), grad.clone()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", default="800,1600,2400,3000,4000")
    ap.add_argument("--hidden", default="384,768")
    ap.add_argument("--vocab", type=int, default=30522)
    ap.add_argument("--replays", type=int, default=300)
    ap.add_argument("--out")
    args = ap.parse_args()
    rows = []
    for hidden in map(int, args.hidden.split(",")):
        for n in map(int, args.tokens.split(",")):
            ref = None
            for name in ("torch", "pad-3073", "sorted-cumsum"):
                us, grad = time_variant(name, n, hidden, args.vocab, args.replays)
                ref = grad if ref is None else ref
                diff = (grad - ref).abs().max().item()
                rows.append({"tokens": n, "hidden_size": hidden, "impl": name, "us_per_replay": round(us, 1),
                             "max_abs_diff": diff})
                print(rows[-1], file=sys.stderr)
    emit({"machine": machine(), "vocab_size": args.vocab, "replays": args.replays, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
