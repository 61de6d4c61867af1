"""Variable-length softmax attention with dropout, as Triton kernels sized for short sentences.

FlashAttention-2 (Dao 2023, "FlashAttention-2: Faster Attention with Better Parallelism and Work
Partitioning", Algorithms 1 and 2) over packed sequences: tokens (N, nh, hs) with offsets
``cu_seqlens``; each sequence attends to itself only. The differences from the CUDA kernels that
SDPA offers are the tile size and the dropout mask:

* tiles of 32 queries by 32 keys, so that a 25-token sentence fills most of one tile instead of
  a fifth of FlashAttention-2's 128-key tile;
* the keep mask of attention dropout is a pure function of (seed, head, query token, key position,
  max_seqlen) drawn with Philox (``tl.randint4x``, eight 16-bit draws per call, as FlashAttention-2
  takes several 8-bit draws from one), so the backward kernels draw exactly the mask the forward
  applied; the seed is a one-element device tensor drawn from torch's generator, so each replay
  of a CUDA graph draws a new mask.

Forward: O = dropout(softmax(Q K^T / sqrt(hs))) V and the row log-sum-exp (Algorithm 1).
Backward: D = rowsum(dO * O), then dQ (one program per query tile) and dK, dV (one program per key
tile), each recomputing P from the log-sum-exp (Algorithm 2, split in two kernels so that no
atomics are needed: the gradients are deterministic).

Needs ``triton`` (shipped with CUDA builds of torch). The ops are ``torch.library`` custom ops,
opaque to ``torch.compile``. With ``TRITON_INTERPRET=1`` set before this module is imported the
kernels run on CPU tensors (Triton's interpreter; the tests use it).
"""

from __future__ import annotations

import json
import math
import sys

import torch
import triton
import triton.language as tl

BLOCK = 32  # query rows and key columns per tile (the default of triton_varlen_attention)


@triton.jit
def _dropout_keep(seed, h, tok, col0, rng_stride, drop_thr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The keep mask (BLOCK_M, BLOCK_N) of head h, query tokens tok (global, (BLOCK_M,)), key
    positions col0 .. col0 + BLOCK_N - 1 within the sequence (col0 a multiple of BLOCK_N).

    One Philox4x32-10 call (Salmon et al. 2011) per query and 8 keys gives four 32-bit words, eight
    16-bit numbers u; a key is kept where u >= drop_thr (drop probability drop_thr / 2^16). The
    Philox key is seed + h, the counter tok * rng_stride + key // 8 (rng_stride = ceil(max_seqlen / 8)
    groups per row)."""
    group = col0 // 8 + tl.arange(0, BLOCK_N // 8)  # 8 keys per Philox counter
    offs = (tok[:, None] * rng_stride + group[None, :]).to(tl.int32)  # (BLOCK_M, BLOCK_N / 8)
    r0, r1, r2, r3 = tl.randint4x(seed + h, offs)
    words = tl.reshape(tl.join(tl.join(r0, r1), tl.join(r2, r3)), (BLOCK_M, BLOCK_N // 2))  # key = 8g + 2w + half
    u16 = tl.reshape(tl.join(words & 0xFFFF, words >> 16), (BLOCK_M, BLOCK_N))
    return u16 >= drop_thr


@triton.jit
def _rows(X, tok, h, s_t, s_h, d, ok):
    """Rows tok (global token indices) of head h of an (N, nh, hs) tensor, zero where not ok."""
    return tl.load(X + tok[:, None] * s_t + h * s_h + d[None, :], mask=ok[:, None], other=0.0)


@triton.jit
def _store_rows(X, tok, h, s_t, s_h, d, ok, value):
    """Writes value (len(tok), hs) into rows tok of head h, where ok, in X's dtype."""
    tl.store(X + tok[:, None] * s_t + h * s_h + d[None, :], value.to(X.dtype.element_ty), mask=ok[:, None])


@triton.jit
def _probs(q, k, lse, sm_scale, row_ok, col_ok):
    """Softmax probabilities exp(q k^T * sm_scale - lse) of a (rows, keys) tile, zero outside the sequence."""
    p = tl.exp(tl.dot(q, tl.trans(k)) * sm_scale - lse[:, None])
    return tl.where(row_ok[:, None] & col_ok[None, :], p, 0.0)


@triton.jit(do_not_specialize=["N", "rng_stride"])  # one compile for every batch
def _fwd_kernel(Q, K, V, OUT, LSE, CU, SEED, sm_scale, drop_thr, keep_scale, N, rng_stride,
                s_qt, s_qh, s_kt, s_kh, s_vt, s_vh, s_ot, s_oh,
                HS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DROPOUT: tl.constexpr):
    pid_m, seq, h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start = tl.load(CU + seq)
    L = tl.load(CU + seq + 1) - start
    if pid_m * BLOCK_M >= L:
        return
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # query positions in the sequence
    d = tl.arange(0, HS)
    row_ok = rows < L
    q = _rows(Q, start + rows, h, s_qt, s_qh, d, row_ok)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)  # running row max
    l_i = tl.zeros((BLOCK_M,), tl.float32)  # running softmax denominator (before dropout)
    acc = tl.zeros((BLOCK_M, HS), tl.float32)
    if DROPOUT:
        seed = tl.load(SEED)
    for n0 in range(0, L, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < L
        k = _rows(K, start + cols, h, s_kt, s_kh, d, col_ok)
        v = _rows(V, start + cols, h, s_vt, s_vh, d, col_ok)
        s = tl.dot(q, tl.trans(k)) * sm_scale  # (BLOCK_M, BLOCK_N) fp32
        s = tl.where(col_ok[None, :], s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        if DROPOUT:
            keep = _dropout_keep(seed, h, start + rows, n0, rng_stride, drop_thr, BLOCK_M, BLOCK_N)
            p = tl.where(keep, p * keep_scale, 0.0)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    acc = acc / l_i[:, None]
    _store_rows(OUT, start + rows, h, s_ot, s_oh, d, row_ok, acc)
    tl.store(LSE + h * N + start + rows, m_i + tl.log(l_i), mask=row_ok)


@triton.jit(do_not_specialize=["N", "rng_stride"])  # one compile for every batch
def _bwd_dq_kernel(Q, K, V, OUT, DO, LSE, DELTA, DQ, CU, SEED, sm_scale, drop_thr, keep_scale, N, rng_stride,
                   s_qt, s_qh, s_kt, s_kh, s_vt, s_vh, s_ot, s_oh, s_dt, s_dh, s_gt, s_gh,
                   HS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DROPOUT: tl.constexpr):
    """dQ of one query tile; also writes D = rowsum(dO * O) for the dK, dV kernel."""
    m0, start, L, h = _this_tile(CU, BLOCK_M)
    if m0 >= L:
        return
    delta, tok, row_ok = _dq_tile(Q, K, V, OUT, DO, LSE, DQ, start, L, m0, h, SEED, sm_scale, drop_thr,
                                  keep_scale, N, rng_stride, s_qt, s_qh, s_kt, s_kh, s_vt, s_vh, s_ot, s_oh,
                                  s_dt, s_dh, s_gt, s_gh, HS, BLOCK_M, BLOCK_N, DROPOUT)
    tl.store(DELTA + h * N + tok, delta, mask=row_ok)


@triton.jit(do_not_specialize=["N", "rng_stride"])  # one compile for every batch
def _bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, CU, SEED, sm_scale, drop_thr, keep_scale, N, rng_stride,
                     s_qt, s_qh, s_kt, s_kh, s_vt, s_vh, s_dt, s_dh, s_gt, s_gh,
                     HS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DROPOUT: tl.constexpr):
    """dK and dV of one key tile, looping over the sequence's query tiles."""
    n0, start, L, h = _this_tile(CU, BLOCK_N)
    if n0 >= L:
        return
    _dkdv_tile(Q, K, V, DO, DO, LSE, DELTA, DK, DV, start, L, n0, h, SEED, sm_scale, drop_thr,
               keep_scale, N, rng_stride, s_qt, s_qh, s_kt, s_kh, s_vt, s_vh, s_dt, s_dh, s_dt, s_dh, s_gt, s_gh,
               HS, BLOCK_M, BLOCK_N, DROPOUT, False)


@triton.jit(do_not_specialize=["N", "rng_stride"])  # one compile for every batch
def _bwd_fused_kernel(Q, K, V, OUT, DO, LSE, DQ, DK, DV, CU, SEED, sm_scale, drop_thr, keep_scale, N, rng_stride,
                      s_qt, s_qh, s_kt, s_kh, s_vt, s_vh, s_ot, s_oh, s_dt, s_dh, s_gt, s_gh,
                      HS: tl.constexpr, BLOCK: tl.constexpr, DROPOUT: tl.constexpr):
    """The whole backward in one launch (grid: 2 x tiles, sequences, heads). A sequence of at most
    one tile is done by its first program, which computes P and dS once for dQ, dK and dV (the
    split kernels compute them once each). A longer one is done tile by tile as by the split
    kernels: the first half of the grid's tiles writes dK and dV, the second half dQ, with D
    computed from dO and OUT where it is needed, so that no program waits for another."""
    i, seq, h = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    start = tl.load(CU + seq)
    L = tl.load(CU + seq + 1) - start
    tiles = tl.num_programs(0) // 2
    if L <= BLOCK:
        if i == 0:
            seed = tl.load(SEED) if DROPOUT else 0
            d = tl.arange(0, HS)
            ok = tl.arange(0, BLOCK) < L
            tok = start + tl.arange(0, BLOCK)
            q, do, delta, lse = _query_rows(Q, DO, OUT, LSE, tok, h, N, d, ok, s_qt, s_qh, s_dt, s_dh, s_ot, s_oh)
            k = _rows(K, tok, h, s_kt, s_kh, d, ok)
            v = _rows(V, tok, h, s_vt, s_vh, d, ok)
            pd, ds = _pd_ds(q, k, v, do, lse, delta, seed, h, tok, 0, sm_scale, drop_thr, keep_scale, rng_stride,
                            ok, ok, BLOCK, BLOCK, DROPOUT)
            _store_rows(DV, tok, h, s_gt, s_gh, d, ok, tl.dot(tl.trans(pd.to(do.dtype)), do))
            _store_rows(DK, tok, h, s_gt, s_gh, d, ok, tl.dot(tl.trans(ds.to(q.dtype)), q) * sm_scale)
            _store_rows(DQ, tok, h, s_gt, s_gh, d, ok, tl.dot(ds.to(k.dtype), k) * sm_scale)
    elif i < tiles:
        if i * BLOCK < L:
            _dkdv_tile(Q, K, V, OUT, DO, LSE, LSE, DK, DV, start, L, i * BLOCK, h, SEED, sm_scale, drop_thr,
                       keep_scale, N, rng_stride, s_qt, s_qh, s_kt, s_kh, s_vt, s_vh, s_ot, s_oh, s_dt, s_dh,
                       s_gt, s_gh, HS, BLOCK, BLOCK, DROPOUT, True)
    elif (i - tiles) * BLOCK < L:
        _dq_tile(Q, K, V, OUT, DO, LSE, DQ, start, L, (i - tiles) * BLOCK, h, SEED, sm_scale, drop_thr, keep_scale,
                 N, rng_stride, s_qt, s_qh, s_kt, s_kh, s_vt, s_vh, s_ot, s_oh, s_dt, s_dh, s_gt, s_gh,
                 HS, BLOCK, BLOCK, DROPOUT)


# the backward kernels' tile functions (Triton looks them up when it compiles a kernel)


@triton.jit
def _this_tile(CU, BLOCK: tl.constexpr):
    """This program's tile of the split backward kernels (grid: tiles x sequences x heads): its
    first position in the sequence, the sequence's first token and length, and the head."""
    seq = tl.program_id(1)
    start = tl.load(CU + seq)
    return tl.program_id(0) * BLOCK, start, tl.load(CU + seq + 1) - start, tl.program_id(2)


@triton.jit
def _query_rows(Q, DO, OUT, LSE, tok, h, N, d, ok, s_qt, s_qh, s_dt, s_dh, s_ot, s_oh):
    """q, dO, D = rowsum(dO * O) (fp32) and the log-sum-exp of query tokens tok of head h."""
    q = _rows(Q, tok, h, s_qt, s_qh, d, ok)
    do = _rows(DO, tok, h, s_dt, s_dh, d, ok)
    o = _rows(OUT, tok, h, s_ot, s_oh, d, ok)
    return q, do, tl.sum(do.to(tl.float32) * o.to(tl.float32), 1), tl.load(LSE + h * N + tok, mask=ok, other=0.0)


@triton.jit
def _pd_ds(q, k, v, do, lse, delta, seed, h, tok, col0, sm_scale, drop_thr, keep_scale, rng_stride, row_ok, col_ok,
           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DROPOUT: tl.constexpr):
    """Of one (query tile, key tile): the probabilities as the forward dropped them (P * keep /
    (1 - p)), and dL/dS = P * (dP - D), the softmax backward of dL/dP (dropped as in the forward),
    with D = rowsum(dO * O) (Algorithm 2)."""
    p = _probs(q, k, lse, sm_scale, row_ok, col_ok)  # (BLOCK_M, BLOCK_N)
    dp = tl.dot(do, tl.trans(v))  # dL/d(dropped P)
    pd = p
    if DROPOUT:
        keep = _dropout_keep(seed, h, tok, col0, rng_stride, drop_thr, BLOCK_M, BLOCK_N)
        pd = tl.where(keep, p * keep_scale, 0.0)
        dp = tl.where(keep, dp * keep_scale, 0.0)
    return pd, p * (dp - delta[:, None])


@triton.jit
def _dq_tile(Q, K, V, OUT, DO, LSE, DQ, start, L, m0, h, SEED, sm_scale, drop_thr, keep_scale, N, rng_stride,
             s_qt, s_qh, s_kt, s_kh, s_vt, s_vh, s_ot, s_oh, s_dt, s_dh, s_gt, s_gh,
             HS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DROPOUT: tl.constexpr):
    """Writes dQ of the query tile at m0 of one sequence and head, looping over its key tiles;
    returns its D = rowsum(dO * O) (BLOCK_M,) and the tile's token indices."""
    seed = tl.load(SEED) if DROPOUT else 0
    rows = m0 + tl.arange(0, BLOCK_M)
    d = tl.arange(0, HS)
    row_ok = rows < L
    tok = start + rows
    q, do, delta, lse = _query_rows(Q, DO, OUT, LSE, tok, h, N, d, row_ok, s_qt, s_qh, s_dt, s_dh, s_ot, s_oh)
    dq = tl.zeros((BLOCK_M, HS), tl.float32)
    for n0 in range(0, L, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        col_ok = cols < L
        k = _rows(K, start + cols, h, s_kt, s_kh, d, col_ok)
        v = _rows(V, start + cols, h, s_vt, s_vh, d, col_ok)
        _, ds = _pd_ds(q, k, v, do, lse, delta, seed, h, tok, n0, sm_scale, drop_thr, keep_scale, rng_stride,
                       row_ok, col_ok, BLOCK_M, BLOCK_N, DROPOUT)
        dq += tl.dot(ds.to(k.dtype), k)
    _store_rows(DQ, tok, h, s_gt, s_gh, d, row_ok, dq * sm_scale)
    return delta, tok, row_ok


@triton.jit
def _dkdv_tile(Q, K, V, OUT, DO, LSE, DELTA, DK, DV, start, L, n0, h, SEED, sm_scale, drop_thr, keep_scale, N,
               rng_stride, s_qt, s_qh, s_kt, s_kh, s_vt, s_vh, s_ot, s_oh, s_dt, s_dh, s_gt, s_gh,
               HS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, DROPOUT: tl.constexpr,
               DELTA_FROM_OUT: tl.constexpr):
    """Writes dK and dV of the key tile at n0 of one sequence and head, looping over its query
    tiles; D read from DELTA, or with DELTA_FROM_OUT computed from dO and OUT."""
    seed = tl.load(SEED) if DROPOUT else 0
    cols = n0 + tl.arange(0, BLOCK_N)
    d = tl.arange(0, HS)
    col_ok = cols < L
    k = _rows(K, start + cols, h, s_kt, s_kh, d, col_ok)
    v = _rows(V, start + cols, h, s_vt, s_vh, d, col_ok)
    dk = tl.zeros((BLOCK_N, HS), tl.float32)
    dv = tl.zeros((BLOCK_N, HS), tl.float32)
    for m0 in range(0, L, BLOCK_M):
        rows = m0 + tl.arange(0, BLOCK_M)
        row_ok = rows < L
        tok = start + rows
        if DELTA_FROM_OUT:
            q, do, delta, lse = _query_rows(Q, DO, OUT, LSE, tok, h, N, d, row_ok, s_qt, s_qh, s_dt, s_dh, s_ot, s_oh)
        else:
            q = _rows(Q, tok, h, s_qt, s_qh, d, row_ok)
            do = _rows(DO, tok, h, s_dt, s_dh, d, row_ok)
            lse = tl.load(LSE + h * N + tok, mask=row_ok, other=0.0)
            delta = tl.load(DELTA + h * N + tok, mask=row_ok, other=0.0)
        pd, ds = _pd_ds(q, k, v, do, lse, delta, seed, h, tok, n0, sm_scale, drop_thr, keep_scale, rng_stride,
                        row_ok, col_ok, BLOCK_M, BLOCK_N, DROPOUT)
        dv += tl.dot(tl.trans(pd.to(do.dtype)), do)
        dk += tl.dot(tl.trans(ds.to(q.dtype)), q)
    _store_rows(DK, start + cols, h, s_gt, s_gh, d, col_ok, dk * sm_scale)
    _store_rows(DV, start + cols, h, s_gt, s_gh, d, col_ok, dv)


def _meta(
    q: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int, block: int, dropout_p: float
) -> tuple[tuple[int, int, int], tuple[float, int, float, int]]:
    """The launch grid (tiles, sequences, heads) and the kernels' (softmax scale, 16-bit drop
    threshold, keep scale, rng row stride: Philox counters per query, one per 8 keys)."""
    N, nh, hs = q.shape
    grid = (triton.cdiv(max(max_seqlen, 1), block), cu_seqlens.numel() - 1, nh)
    drop_thr = int(dropout_p * 65536)  # drop where a 16-bit draw is below it
    return grid, (1.0 / math.sqrt(hs), drop_thr, 65536 / (65536 - drop_thr), triton.cdiv(max(max_seqlen, 1), 8))


def _unit_last_stride(*ts: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The tensors with a last-dim stride of 1 (the kernels read rows as contiguous vectors)."""
    return tuple(t if t.stride(-1) == 1 else t.contiguous() for t in ts)


@torch.library.custom_op("minbert::varlen_attention_fwd", mutates_args=())
def varlen_attention_fwd(
    qkv: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int, dropout_p: float, seed: torch.Tensor, block: int,
    fused_backward: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward kernel: qkv (N, 3, nh, hs), each token's query, key and value -> (out (N, nh, hs)
    in qkv's dtype, log-sum-exp (nh, N) fp32), both contiguous. ``fused_backward``: the backward
    that autograd runs (:func:`varlen_attention_bwd`)."""
    N, _, nh, hs = qkv.shape
    q, k, v = _unit_last_stride(qkv)[0].unbind(1)  # (N, nh, hs) each, views
    out = torch.empty((N, nh, hs), dtype=qkv.dtype, device=qkv.device)
    lse = torch.empty((nh, N), dtype=torch.float32, device=qkv.device)
    grid, (scale, drop_thr, keep_scale, stride) = _meta(q, cu_seqlens, max_seqlen, block, dropout_p)
    _fwd_kernel[grid](q, k, v, out, lse, cu_seqlens, seed, scale, drop_thr, keep_scale, N, stride,
                      q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1),
                      out.stride(0), out.stride(1),
                      HS=hs, BLOCK_M=block, BLOCK_N=block, DROPOUT=drop_thr > 0)
    return out, lse


@varlen_attention_fwd.register_fake
def _(qkv, cu_seqlens, max_seqlen, dropout_p, seed, block, fused_backward=False):
    N, _, nh, hs = qkv.shape
    return qkv.new_empty((N, nh, hs)), qkv.new_empty((nh, N), dtype=torch.float32)  # contiguous, as the op's


@torch.library.custom_op("minbert::varlen_attention_bwd", mutates_args=())
def varlen_attention_bwd(
    do: torch.Tensor, qkv: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, cu_seqlens: torch.Tensor,
    max_seqlen: int, dropout_p: float, seed: torch.Tensor, block: int, fused: bool = False,
) -> torch.Tensor:
    """Backward kernels: dO (N, nh, hs) and the forward's tensors -> dqkv (N, 3, nh, hs), the
    gradients of q, k and v written side by side in one buffer, the layout of the q/k/v GEMM's
    output, so that no copy joins them. ``fused``: one launch (``_bwd_fused_kernel``: one program
    per sequence of one tile, else one per tile), instead of the dQ kernel and the dK, dV kernel."""
    kernels = ("fused",) if fused else ("dq", "dkdv")
    return _launch_bwd(do, qkv, out, lse, cu_seqlens, max_seqlen, dropout_p, seed, block, kernels)


def _launch_bwd(
    do: torch.Tensor, qkv: torch.Tensor, out: torch.Tensor, lse: torch.Tensor, cu_seqlens: torch.Tensor,
    max_seqlen: int, dropout_p: float, seed: torch.Tensor, block: int, kernels: tuple[str, ...] = ("dq", "dkdv"),
) -> torch.Tensor:
    """:func:`varlen_attention_bwd`'s launches: the dq kernel (which also writes delta, the
    row sums of dO * O that the dk/dv kernel reads) and the dk/dv kernel, or the ``fused`` one;
    ``kernels`` names the ones to launch (:func:`compile_kernels` compiles one alone)."""
    N, _, nh, hs = qkv.shape
    do, qkv = _unit_last_stride(do, qkv)
    q, k, v = qkv.unbind(1)  # (N, nh, hs) each, views
    dqkv = torch.empty((N, 3, nh, hs), dtype=qkv.dtype, device=qkv.device)
    dq, dk, dv = dqkv.unbind(1)  # views with one pair of strides, which the kernels take once
    grid, (scale, drop_thr, keep_scale, stride) = _meta(q, cu_seqlens, max_seqlen, block, dropout_p)
    strides = (q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1))
    meta = dict(HS=hs, BLOCK_M=block, BLOCK_N=block, DROPOUT=drop_thr > 0)
    if "fused" in kernels:
        _bwd_fused_kernel[(2 * grid[0], *grid[1:])](  # dK, dV tiles, then dQ tiles
            q, k, v, out, do, lse, dq, dk, dv, cu_seqlens, seed, scale, drop_thr, keep_scale, N, stride, *strides,
            out.stride(0), out.stride(1), do.stride(0), do.stride(1), dq.stride(0), dq.stride(1),
            HS=hs, BLOCK=block, DROPOUT=drop_thr > 0)
    if "dq" in kernels or "dkdv" in kernels:  # D: the dq kernel writes it, the dk/dv kernel reads it
        delta = torch.empty((nh, N), dtype=torch.float32, device=qkv.device)
    if "dq" in kernels:
        _bwd_dq_kernel[grid](q, k, v, out, do, lse, delta, dq, cu_seqlens, seed, scale, drop_thr, keep_scale, N,
                             stride, *strides, out.stride(0), out.stride(1), do.stride(0), do.stride(1),
                             dq.stride(0), dq.stride(1), **meta)
    if "dkdv" in kernels:
        _bwd_dkdv_kernel[grid](q, k, v, do, lse, delta, dk, dv, cu_seqlens, seed, scale, drop_thr, keep_scale, N,
                               stride, *strides, do.stride(0), do.stride(1), dk.stride(0), dk.stride(1), **meta)
    return dqkv


@varlen_attention_bwd.register_fake
def _(do, qkv, out, lse, cu_seqlens, max_seqlen, dropout_p, seed, block, fused=False):
    return qkv.new_empty(qkv.shape)  # contiguous, as the op's


def _setup_context(ctx, inputs, output) -> None:
    qkv, cu_seqlens, max_seqlen, dropout_p, seed, block, *fused = inputs
    out, lse = output
    ctx.save_for_backward(qkv, out, lse, cu_seqlens, seed)
    ctx.max_seqlen, ctx.dropout_p, ctx.block, ctx.fused = max_seqlen, dropout_p, block, bool(fused and fused[0])


def _backward(ctx, do: torch.Tensor, _dlse: torch.Tensor):
    qkv, out, lse, cu_seqlens, seed = ctx.saved_tensors
    dqkv = varlen_attention_bwd(do, qkv, out, lse, cu_seqlens, ctx.max_seqlen, ctx.dropout_p, seed, ctx.block,
                                ctx.fused)
    return dqkv, None, None, None, None, None, None


varlen_attention_fwd.register_autograd(_backward, setup_context=_setup_context)


def triton_varlen_attention(
    qkv: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int, dropout_p: float, block: int = BLOCK,
    fused_backward: bool = False,
) -> torch.Tensor:
    """Packed attention with dropout (differentiable).

    Args:
        qkv: (N, 3, nh, hs) each token's query, key and value, fp16/bf16 (fp32 under the
            interpreter), any strides (a last dim that is not contiguous is copied); hs a power
            of two >= 16. Its gradient comes back as one (N, 3, nh, hs) buffer.
        cu_seqlens: (S + 1,) int32 offsets; max_seqlen: >= the longest sequence (the grid has
            ceil(max_seqlen / block) query tiles per sequence; a shorter value leaves rows unwritten).
        dropout_p: attention-probability dropout in [0, 1), to a step of 2^-16 (floor(p 2^16) / 2^16;
            kept probabilities are scaled by the inverse of the exact keep rate); the mask's seed is
            drawn from torch's default generator of qkv's device (one int64 per call).
        block: rows and columns of a tile (a power of two >= 16).
        fused_backward: the backward as one launch (P and dS computed once where a sequence fits
            in one tile; a longer sequence's tiles as in the split kernels), instead of two.
    Returns:
        (N, nh, hs) in qkv's dtype, contiguous; rows past cu_seqlens[-1] are not written, nor are
        those rows of qkv's gradient (the backward leaves them as allocated): where that gradient
        reaches earlier layers, give cu_seqlens[-1] = N, as :mod:`minbert.model.packing` does.
    Raises:
        ValueError: dropout_p outside [0, 1).
    """
    if not 0 <= dropout_p < 1:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")
    if dropout_p > 0:
        seed = torch.randint(0, 2**62, (1,), device=qkv.device)
    else:
        seed = cu_seqlens  # not read without dropout
    return varlen_attention_fwd(qkv, cu_seqlens, max_seqlen, dropout_p, seed, block, fused_backward)[0]


# compile_kernels' parts: the kernels each compiles
PARTS = {"forward": ("fwd",), "backward": ("dq", "dkdv"), "backward-dq": ("dq",), "backward-dkdv": ("dkdv",),
         "backward-fused": ("fused",), "both": ("fwd", "dq", "dkdv")}


def compile_kernels(
    nh: int, hs: int, dropout_p: float, dtype: torch.dtype = torch.bfloat16, part: str = "both"
) -> None:
    """Compile the kernels that training with (nh heads of size hs, ``dropout_p``, ``dtype``)
    launches, or load them from Triton's cache (``TRITON_CACHE_DIR``, by default
    ``~/.triton/cache``): the ``forward`` kernel, the two ``backward`` kernels, one of them
    (``backward-dq``, ``backward-dkdv``: a process compiles its kernels one after the other, so
    that two processes compile the two at once), the one-kernel backward (``backward-fused``,
    :func:`varlen_attention_bwd`), or ``both`` (forward and the two backward), each run once on a tiny
    batch of contiguous (N, 3, nh, hs) q/k/v, the layout the encoder passes, so that the compiled
    variants are the ones a run looks up. Needs CUDA.

    Raises:
        ValueError: an unknown ``part`` (not a key of :data:`PARTS`).
    """
    if part not in PARTS:
        raise ValueError(f"part must be one of {', '.join(map(repr, PARTS))}, got {part!r}")
    kernels = PARTS[part]
    qkv = torch.randn(64, 3, nh, hs, device="cuda", dtype=dtype)
    out, do = (torch.randn(64, nh, hs, device="cuda", dtype=dtype) for _ in range(2))
    cu_seqlens = torch.tensor([0, 25, 64], dtype=torch.int32, device="cuda")
    seed = torch.randint(0, 2**62, (1,), device="cuda")
    if "fwd" in kernels:
        varlen_attention_fwd(qkv, cu_seqlens, 64, dropout_p, seed, BLOCK)
    if {"dq", "dkdv", "fused"} & set(kernels):
        lse = torch.randn(nh, 64, device="cuda")
        _launch_bwd(do, qkv, out, lse, cu_seqlens, 64, dropout_p, seed, BLOCK, kernels)
    torch.cuda.synchronize()


def compile_for_encoder(encoder: str, overrides: dict, dtype: torch.dtype, part: str) -> tuple | None:
    """What :mod:`minbert.training.kernel_compile`'s children run: where a packed training forward
    of ``encoder`` (a local Hugging Face BERT folder or ``"default"``) with the run's config
    ``overrides`` (:func:`minbert.config.encoder_overrides`) launches this kernel on this machine's
    CUDA device, :func:`compile_kernels` for it; returns its (nh, hs, dropout_p), or None where it
    does not launch (no CUDA device, no attention dropout, another ``varlen_kernel``, a head size
    the kernel does not tile). Raises what reading the encoder's ``config.json`` raises
    (CheckpointError, ConfigError)."""
    from .bert import BertConfig, pick_varlen_kernel
    from .hf_folder import resolve_encoder_path

    if not torch.cuda.is_available():
        return None
    c = BertConfig.from_json_file(resolve_encoder_path(encoder) / "config.json", **overrides)
    nh, p = c.num_attention_heads, c.attention_probs_dropout_prob
    hs = c.hidden_size // nh
    if c.attn_implementation != "sdpa" or pick_varlen_kernel(c.varlen_kernel, p, hs) != "triton":
        return None
    compile_kernels(nh, hs, p, dtype, part)
    return nh, hs, p


if __name__ == "__main__":  # a child of minbert.training.kernel_compile: encoder overrides-json dtype part
    encoder_arg, overrides_arg, dtype_arg, part_arg = sys.argv[1:5]
    compile_for_encoder(encoder_arg, json.loads(overrides_arg), getattr(torch, dtype_arg), part_arg)
