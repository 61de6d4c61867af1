"""Packed (variable-length) attention kernels on real sentence lengths: forward and forward +
backward time of one layer's attention, in one process, on the same packed (N, 3, nh, hs) q/k/v
tensor, the layout of the encoder's one q/k/v GEMM. Forward + backward therefore includes, for the
kernels that take q, k and v apart, the copy that joins their three gradients; ours writes them
into one buffer.

The packed encoder (``BertModel.forward_packed``) runs attention over N tokens laid end to end,
each sequence attending to itself (offsets ``cu_seqlens``). SST and QQP sentences are short (about
15 to 30 tokens), so the kernel's tiling decides how much of its work is masked out. Candidates,
all bf16 on CUDA:

* ``flash``: FlashAttention-2's varlen kernel (``aten._flash_attention_forward``; what
  ``attn_implementation="sdpa"`` runs today), one 128-row tile per sequence and head;
* ``efficient``: the memory-efficient (xFormers / CUTLASS) kernel with ``cu_seqlens``
  (``aten._efficient_attention_forward``), 64-row tiles;
* ``triton-B``: ours (:mod:`minbert.model.varlen_triton`), FlashAttention-2 in Triton with B-row
  tiles and a dropout mask that the backward redraws;
* ``triton-B-fused``: the same forward, and the backward as one kernel with one program per
  sequence and head (``fused_backward``) instead of a dQ and a dK, dV kernel with one program per tile;
* ``cudnn``: cuDNN's attention with ragged offsets (``aten._cudnn_attention_forward``), where the
  installed cuDNN supports it (not in the default list: on torch 2.11 each eager call took tens
  of milliseconds);
* ``binned-K``: whole sequences laid greedily, in order, into bins of K tokens (where no sequence
  is longer than K); one dense
  ``scaled_dot_product_attention`` over (bins, nh, K, hs) with a block-diagonal boolean mask (the
  memory-efficient kernel), the gather into bins and the scatter back included;
* ``flex``: ``torch.nn.attention.flex_attention`` (compiled) with a document mask. It has no
  attention-probability dropout, so it is timed at dropout 0 only.

``binned-K-attn`` times the masked attention of ``binned-K`` alone, as if the packed layout were
already laid out in bins (its output is not in packed order, so it has no difference from flash).

Each record: GPU microseconds per call (each call captured as a CUDA graph and replayed: median of
``--repeats`` timings of ``--iters`` replays, CUDA events), for the forward alone and for forward +
backward, at dropout 0 and at ``--dropout``; and the largest absolute difference of the output
from ``flash`` at dropout 0. ``--mask-check`` instead checks, for flash, efficient, triton-32 and
triton-32-fused, that the backward drops the same attention probabilities as the forward
(:func:`dropout_mask_check`).

    python benchmarks/attention_varlen.py --data-dir DIR --encoder ENC --out attention.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_io import emit, machine, time_us  # noqa: E402
from minbert.data.tokenizer import Tokenizer  # noqa: E402
from minbert.model.varlen_triton import triton_varlen_attention  # noqa: E402
from minbert.tasks.base import get_task  # noqa: E402

SHAPES = {"minilm-l6": (12, 32), "bert-base": (12, 64)}  # (heads, head size)


def sentence_lengths(data_dir: Path, encoder: str) -> dict[str, list[int]]:
    """Token counts (with [CLS] and [SEP]) of SST's sentences and QQP's first questions, in file order."""
    tok = Tokenizer(encoder, 128)
    sst = get_task("sst").read(data_dir / "ids-sst-train.csv", "train")
    qqp = get_task("qqp").read(data_dir / "quora-train.csv", "train")
    return {
        "sst": [len(x) for x in tok.encode([t[0] for t in sst.texts])[0]],
        "qqp": [len(x) for x in tok.encode([t[0] for t in qqp.texts])[0]],
    }


def bins(lengths: list[int], K: int) -> list[list[int]]:
    """Greedy in-order bin packing: the sequence indices of each bin of at most K tokens."""
    out, cur, used = [], [], 0
    for i, n in enumerate(lengths):
        if cur and used + n > K:
            out.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += n
    out.append(cur)
    return out


def binned_layout(lengths: list[int], K: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(slot_of_token (N,), token_of_slot (nb*K,) with N for empty slots, mask (nb, 1, K, K) bool)."""
    starts = [0]
    for n in lengths:
        starts.append(starts[-1] + n)
    groups = bins(lengths, K)
    slot_of_token = torch.empty(starts[-1], dtype=torch.long)
    token_of_slot = torch.full((len(groups) * K,), starts[-1], dtype=torch.long)
    seg = torch.full((len(groups), K), -1, dtype=torch.long)
    for b, g in enumerate(groups):
        pos = 0
        for i in g:
            n = lengths[i]
            slots = torch.arange(b * K + pos, b * K + pos + n)
            slot_of_token[starts[i] : starts[i] + n] = slots
            token_of_slot[slots] = torch.arange(starts[i], starts[i] + n)
            seg[b, pos : pos + n] = i
            pos += n
    eye = torch.eye(K, dtype=torch.bool)[None]
    mask = ((seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] >= 0)) | eye  # empty slots see themselves
    return slot_of_token.to(device), token_of_slot.to(device), mask[:, None].to(device)


def candidates(lengths: list[int], device: torch.device, nh: int, hs: int, with_flex: bool) -> dict:
    """name -> f(qkv, dropout_p) over a packed (N, 3, nh, hs) tensor (``flex`` compiles, so only on request)."""
    cu = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32, device=device)
    mx = max(lengths)
    N = int(cu[-1])

    def flash(qkv, p):
        q, k, v = qkv.unbind(1)
        return torch.ops.aten._flash_attention_forward(q, k, v, cu, cu, mx, mx, p, False, False)[0]

    def efficient(qkv, p):
        q, k, v = qkv.unbind(1)
        args = (q[None], k[None], v[None], None, cu, cu, mx, mx, p, 0, True)  # (1, N, nh, hs) each
        return torch.ops.aten._efficient_attention_forward(*args)[0][0]

    def cudnn(qkv, p):
        q, k, v = qkv.unbind(1)
        return torch.ops.aten._cudnn_attention_forward(q, k, v, None, cu, cu, mx, mx, True, p, False, False)[0]

    out = {"flash": flash, "efficient": efficient, "cudnn": cudnn}
    for block in (16, 32, 64):

        for fused in (False, True):

            def ours(qkv, p, block=block, fused=fused):
                return triton_varlen_attention(qkv, cu, mx, p, block, fused)

            out[f"triton-{block}" + ("-fused" if fused else "")] = ours
    for K in (k for k in (64, 128) if k >= mx):  # a bin holds whole sequences
        slot_of_token, token_of_slot, mask = binned_layout(lengths, K, device)
        nb = mask.shape[0]

        def binned(qkv, p, token_of_slot=token_of_slot, slot_of_token=slot_of_token, mask=mask, nb=nb, K=K):
            qkv = qkv.transpose(0, 1).reshape(3, N, nh * hs)
            qkv = F.pad(qkv, (0, 0, 0, 1))[:, token_of_slot]  # (3, nb*K, C); empty slots read the zero row
            qkv = qkv.view(3, nb, K, nh, hs).transpose(2, 3)  # (3, nb, nh, K, hs)
            y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask, dropout_p=p)  # (nb, nh, K, hs)
            return y.transpose(1, 2).reshape(nb * K, nh, hs)[slot_of_token]  # (N, nh, hs)

        def binned_attn(qkv, p, mask=mask, nb=nb, K=K):
            qkv = F.pad(qkv.transpose(0, 1), (0, 0, 0, 0, 0, nb * K - N)).view(3, nb, K, nh, hs).transpose(2, 3)
            y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask, dropout_p=p)  # (nb, nh, K, hs)
            return y.transpose(1, 2).reshape(nb * K, nh, hs)[:N]

        out[f"binned-{K}"] = binned
        out[f"binned-{K}-attn"] = binned_attn
    if not with_flex:
        return out
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        seg = torch.repeat_interleave(torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device))
        block_mask = create_block_mask(lambda b, h, qi, ki: seg[qi] == seg[ki], None, None, N, N, device=device)
        flex_c = torch.compile(flex_attention, dynamic=False)

        def flex(qkv, p):  # no dropout: measure() times it at p = 0 only
            q, k, v = qkv.unbind(1)
            y = flex_c(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], block_mask=block_mask)
            return y[0].transpose(0, 1)

        out["flex"] = flex
    except Exception as e:  # noqa: BLE001 -- a missing candidate is reported, not fatal
        print(f"flex unavailable: {type(e).__name__}: {e}", file=sys.stderr)
    return out


def measure(
    name: str, lengths: list[int], nh: int, hs: int, dropout: float, iters: int, repeats: int, impls: set[str]
) -> list[dict]:
    device = torch.device("cuda")
    N = sum(lengths)
    g = torch.Generator(device=device).manual_seed(0)
    qkv = torch.randn(N, 3, nh, hs, device=device, dtype=torch.bfloat16, generator=g)
    grad = torch.randn(N, nh, hs, device=device, dtype=torch.bfloat16, generator=g)
    qkv_g = qkv.clone().requires_grad_()
    fns = candidates(lengths, device, nh, hs, "flex" in impls)
    ref = fns["flash"](qkv, 0.0).float()
    recs = []
    for impl, f in fns.items():
        if impl not in impls:
            continue
        rec = {"case": name, "impl": impl, "heads": nh, "head_size": hs, "tokens": N, "sequences": len(lengths)}
        try:
            with torch.no_grad():
                y = f(qkv, 0.0)
            if not impl.endswith("-attn"):
                rec["max_abs_diff_vs_flash"] = round(float((y.float() - ref).abs().max()), 5)
            for p in (0.0,) if impl == "flex" else (0.0, dropout):

                def fwd(f=f, p=p):
                    with torch.no_grad():
                        f(qkv, p)

                def fwd_bwd(f=f, p=p):
                    qkv_g.grad = None
                    f(qkv_g, p).backward(grad)

                rec[f"fwd_us_p{p}"] = time_us(fwd, iters, repeats)
                rec[f"fwd_bwd_us_p{p}"] = time_us(fwd_bwd, iters, repeats)
        except Exception as e:  # noqa: BLE001 -- a kernel this build lacks is recorded, not fatal
            rec["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        print(rec, file=sys.stderr, flush=True)
        recs.append(rec)
    return recs


def dropout_mask_check(
    kernel: str, lengths: list[int], p: float = 0.5, nh: int = 2, hs: int = 32, device: str = "cuda"
) -> dict:
    """Does the backward drop the same attention probabilities as the forward?

    With q = k = 0 every sequence's softmax is uniform, 1/L. With v[t] the one-hot of t's position
    in its sequence, the forward output reads the kept entries of the dropout mask: out[i, j] =
    keep[i, j] / ((1 - p) L). With the output gradient dO[i] the one-hot of i's position, dV[j, d] =
    keep[start + d, j] / ((1 - p) L) reads the mask the backward used. Returns the fraction of the
    (head, query, key) pairs within sequences where the two masks differ (0 for a kernel that
    replays its forward's mask)."""
    device = torch.device(device)
    assert max(lengths) <= hs
    cu = torch.tensor([0] + list(torch.tensor(lengths).cumsum(0)), dtype=torch.int32, device=device)
    N = int(cu[-1])
    pos = torch.cat([torch.arange(n) for n in lengths]).to(device)  # (N,) position within its sequence
    onehot = F.one_hot(pos, hs).to(torch.bfloat16)[:, None, :].expand(N, nh, hs).contiguous()  # (N, nh, hs)
    zero = torch.zeros_like(onehot)
    qkv = torch.stack((zero, zero, onehot), 1).requires_grad_()  # q = k = 0, v one-hot: (N, 3, nh, hs)
    fns = candidates(lengths, device, nh, hs, with_flex=False)
    out = fns[kernel](qkv, p)
    out.backward(onehot)
    differ, kept, total = 0, 0, 0
    for a, b in zip(cu.tolist()[:-1], cu.tolist()[1:], strict=True):
        L = b - a
        fwd = out[a:b, :, :L].float() > 0  # (L queries, nh, L keys)
        bwd = qkv.grad[a:b, 2, :, :L].float().permute(2, 1, 0) > 0  # dV[key, h, query] -> (query, nh, key)
        differ += int((fwd != bwd).sum())
        kept += int(fwd.sum())
        total += fwd.numel()
    return {"check": "dropout_mask", "impl": kernel, "dropout_p": p, "lengths": lengths,
            "kept_fraction_fwd": round(kept / total, 4),
            "mask_disagree_fraction": round(differ / total, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", help="the course data (not needed with --mask-check)")
    ap.add_argument("--encoder", help="a tokenizer folder, tokenizer.json (not needed with --mask-check)")
    ap.add_argument("--configs", default="bert-base,minilm-l6")
    ap.add_argument("--batches", default="32,128", help="sequences per packed batch")
    ap.add_argument("--impls", default="flash,efficient,triton-16,triton-32,triton-64,binned-64,binned-128")
    ap.add_argument("--dropout", type=float, default=0.1)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mask-check", action="store_true",
                    help="only the dropout-mask check (flash, efficient, triton-32 and triton-32-fused)")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.mask_check:
        cases = ([16], [16, 12, 16, 9], [5, 32, 7, 20, 1, 13])
        kernels = ("flash", "efficient", "triton-32", "triton-32-fused")
        recs = [dropout_mask_check(kern, lengths) for kern in kernels for lengths in cases]
        emit({"machine": machine(), "records": recs}, args.out)
        return
    if not (args.data_dir and args.encoder):
        ap.error("--data-dir and --encoder are needed for the timings")
    torch._dynamo.config.cache_size_limit = 64  # flex compiles once per token count
    impls = set(args.impls.split(","))
    lens = sentence_lengths(Path(args.data_dir), args.encoder)
    records = []
    for cfg in args.configs.split(","):
        nh, hs = SHAPES[cfg]
        for B in (int(b) for b in args.batches.split(",")):
            cases = {f"{cfg}-sst-b{B}": lens["sst"][:B], f"{cfg}-qqp-b{B}": lens["qqp"][: 2 * B]}
            for name, lengths in cases.items():
                records += measure(name, lengths, nh, hs, args.dropout, args.iters, args.repeats, impls)
    emit({"machine": machine(), "records": records}, args.out)


if __name__ == "__main__":
    main()
