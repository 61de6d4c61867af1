"""The packed (variable-length) token layout: a batch of S sequences laid end to end in one row
of N tokens, with no padding between them.

This is the layout of FlashAttention's variable-length kernels (Dao 2023, "FlashAttention-2",
Sec. 3; ``cu_seqlens`` as in its ``flash_attn_varlen_func``): every matmul of the encoder runs on
the N real tokens instead of B x T padded ones, and attention keeps each sequence to itself
through the offsets ``cu_seqlens``. :meth:`minbert.model.bert.BertModel.forward_packed` reads it.

A packed batch may end with filler tokens (padding), so that N is a multiple of a bucket size:
batches then come in a few shapes, which CUDA graphs and compiled kernels need. The filler is one
sequence of its own (:func:`pack`) or a few (:func:`pack_plan`, which keeps each piece no longer
than a row); it attends only to itself, and ``num_real`` says where the real sequences end.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class PackedBatch(NamedTuple):
    """S sequences (the real ones, then the filler's) packed into N tokens.

    input_ids:      (N,) int64, the tokens of sequence i at ``cu_seqlens[i]:cu_seqlens[i + 1]``.
    token_type_ids: (N,) int64.
    position_ids:   (N,) int64, 0..len-1 within each sequence.
    cu_seqlens:     (S + 1,) int32, the sequences' offsets: 0, len_0, len_0 + len_1, ..., N.
    max_seqlen:     int, at least the longest sequence (the kernels size their grid by it).
    num_real:       int, the real sequences are the first ``num_real``; a filler follows when
                    ``num_real < S``.
    """

    input_ids: torch.Tensor
    token_type_ids: torch.Tensor
    position_ids: torch.Tensor
    cu_seqlens: torch.Tensor
    max_seqlen: int
    num_real: int


def _real_lengths(attention_mask: torch.Tensor, caller: str) -> torch.Tensor:
    """(B,) int64 real tokens per row of a right-padded (B, T) ``attention_mask``.

    Raises:
        ValueError: a row that is not 1s then 0s, or an empty row (no [CLS]: no pooled output).
    """
    keep = attention_mask.bool()
    lengths = keep.sum(1)
    if not torch.equal(keep, torch.arange(keep.shape[1], device=keep.device)[None, :] < lengths[:, None]):
        raise ValueError(f"{caller} needs right-padded rows: each attention_mask row must be 1s then 0s")
    empty = torch.nonzero(lengths == 0).flatten().tolist()
    if empty:
        raise ValueError(
            f"row {empty[0]} of attention_mask is empty: a sequence needs at least one token ([CLS]) to be packed"
        )
    return lengths


def pack(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    token_type_ids: torch.Tensor | None = None,
    multiple_of: int = 1,
    max_seqlen: int | None = None,
    pad_token_id: int = 0,
) -> PackedBatch:
    """Pack a right-padded batch: the tokens where ``attention_mask`` is 1, sequence by sequence.

    Args:
        input_ids, token_type_ids: (B, T) of any integer dtype, any strides (token types default
            to zeros); packed as int64.
        attention_mask: (B, T), 1 on real tokens; each row's real tokens come first (right
            padding), at least one per row.
        multiple_of: N is rounded up to a multiple of this with one filler sequence of
            ``pad_token_id`` (none when it already is a multiple), of up to ``multiple_of - 1``
            tokens.
        max_seqlen: the longest sequence the kernels should expect (default: T), at least the
            longest real sequence and ``multiple_of - 1`` (the longest filler).
    Returns:
        the :class:`PackedBatch`, on the inputs' device (this reads the lengths on the host).
    Raises:
        ValueError: an input that is not (B, T); a row whose mask is not 1s then 0s, or is
            empty; ``multiple_of`` < 1; a ``max_seqlen`` below the longest sequence or the
            longest filler (whatever the batch, so that the bucket sizes fail at once).
    """
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    if input_ids.ndim != 2:
        raise ValueError(f"pack: input_ids of shape {tuple(input_ids.shape)}; expected (B, T)")
    for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if t.shape != input_ids.shape:
            raise ValueError(f"pack: {name} of shape {tuple(t.shape)}, input_ids of {tuple(input_ids.shape)}")
    B, T = input_ids.shape
    if multiple_of < 1:
        raise ValueError(f"multiple_of {multiple_of}: must be >= 1")
    lengths = _real_lengths(attention_mask, "pack")
    max_seqlen = T if max_seqlen is None else max_seqlen
    longest = int(lengths.max()) if B else 0
    if max_seqlen < longest:
        raise ValueError(f"max_seqlen {max_seqlen} < the longest sequence, {longest} tokens")
    if multiple_of - 1 > max_seqlen:
        raise ValueError(
            f"multiple_of {multiple_of} needs fillers of up to {multiple_of - 1} tokens, more than max_seqlen "
            f"{max_seqlen}: lower multiple_of"
        )
    n = int(lengths.sum())
    fill = -n % multiple_of
    keep = attention_mask.bool()
    positions = torch.arange(T, device=input_ids.device).expand(B, T)
    parts = [input_ids[keep].long(), token_type_ids[keep].long(), positions[keep]]
    seqlens = lengths.tolist() + ([fill] if fill else [])
    if fill:
        parts = [
            torch.cat([parts[0], parts[0].new_full((fill,), pad_token_id)]),
            torch.cat([parts[1], parts[1].new_zeros(fill)]),
            torch.cat([parts[2], torch.arange(fill, device=input_ids.device)]),
        ]
    cu = torch.tensor([0] + seqlens, dtype=torch.int64).cumsum(0).to(torch.int32).to(input_ids.device)
    return PackedBatch(*parts, cu, max_seqlen, B)


def unpack(x: torch.Tensor, packed: PackedBatch, T: int) -> torch.Tensor:
    """The real sequences of packed states back in padded layout.

    Args:
        x: (N, ...) per-token values of ``packed``.
        T: the padded length (>= the longest real sequence).
    Returns:
        (num_real, T, ...) with zeros after each sequence's end.
    """
    cu = packed.cu_seqlens.tolist()
    out = x.new_zeros((packed.num_real, T, *x.shape[1:]))
    for i in range(packed.num_real):
        out[i, : cu[i + 1] - cu[i]] = x[cu[i] : cu[i + 1]]
    return out


def segment_ids(cu_seqlens: torch.Tensor, n: int) -> torch.Tensor:
    """(N,) int64: the index of the sequence each of the ``n`` packed tokens belongs to."""
    return torch.searchsorted(cu_seqlens[1:].to(torch.int64), torch.arange(n, device=cu_seqlens.device), right=True)


def token_bucket(n: int, smallest: int, largest: int) -> int:
    """The bucket size for a pack of ``n`` tokens: an eighth of the largest power of two <= ``n``,
    clamped to ``smallest``..``largest``. A pack rounded up to a multiple of it comes in one of
    eight sizes per doubling of ``n``, with a filler of at most ~1/8 of its tokens (above
    8 x ``smallest``): a run whose steps hold very different token counts (length-bucketed
    batches) sees few shapes, so few CUDA graphs. Monotone in ``n``."""
    return min(largest, max(smallest, (1 << (max(n, 1).bit_length() - 1)) // 8))


def plan_max_seqlen(T: int) -> int:
    """The longest sequence of a :func:`pack_plan` over rows of T tokens: a row, or a piece of
    the filler (at most ``max(T, 2)`` tokens). The kernels' ``max_seqlen``: FlashAttention sizes
    its grid by it, one block of queries (128 rows) per started 128 tokens, per sequence and head."""
    return max(T, 2)


def filler_pieces(multiple_of: int, T: int) -> int:
    """How many sequences :func:`pack_plan`'s filler is cut into: the fewest k for which a filler
    of k..``multiple_of + k - 1`` tokens, cut into k near-equal pieces, has none longer than
    :func:`plan_max_seqlen` (k >= (multiple_of - 1) / (cap - 1)). One long filler would set
    ``max_seqlen`` for every sequence of the pack, and with it the kernels' grid."""
    cap = plan_max_seqlen(T)
    return max(1, -(-(multiple_of - 1) // (cap - 1)))


def pack_plan(attention_mask: torch.Tensor, multiple_of: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each token of a right-padded batch goes in the packed layout, so that the device
    packs with fixed shapes (a gather) and unpacks with a scatter (see
    :meth:`minbert.model.multitask.MultitaskModel.encode`).

    The B sequences are followed by a filler cut into k = :func:`filler_pieces` sequences of at
    least one token each, so that N, the packed length, is the real token count plus k rounded up
    to a multiple of ``multiple_of``. No sequence is longer than :func:`plan_max_seqlen` (T, or 2
    for T = 1), whatever ``multiple_of``.

    Args:
        attention_mask: (B, T), 1 on real tokens, right-padded, at least one per row.
        multiple_of: the bucket size, >= 1.
    Returns (on ``attention_mask``'s device; reading the lengths syncs with it):
        pack_index: (N,) int64, the flat position ``row * T + col`` of each packed token; the
            filler's tokens point at B * T, one spare slot after the batch;
        cu_seqlens: (B + 1 + k,) int32, the offsets of the B sequences and the filler's pieces.
    Raises:
        ValueError: ``multiple_of`` < 1, or a row that is not right-padded or is empty.
    """
    B, T = attention_mask.shape
    if multiple_of < 1:
        raise ValueError(f"multiple_of {multiple_of}: must be >= 1")
    lengths = _real_lengths(attention_mask, "pack_plan")
    keep = attention_mask.bool()
    n = int(lengths.sum())
    k = filler_pieces(multiple_of, T)
    N = -(-(n + k) // multiple_of) * multiple_of
    dev = attention_mask.device
    index = torch.cat([torch.nonzero(keep.reshape(-1)).squeeze(1), torch.full((N - n,), B * T, device=dev)])
    pieces = (N - n) // k + (torch.arange(k, device=dev) < (N - n) % k)  # (k,) each >= 1, sum N - n
    cu = torch.cat([torch.zeros(1, dtype=torch.int64, device=dev), lengths.cumsum(0), n + pieces.cumsum(0)])
    return index, cu.to(torch.int32)
