"""The packed (variable-length) token layout: a batch of S sequences laid end to end in one row
of N tokens, with no padding between them.

This is the layout of FlashAttention's variable-length kernels (Dao 2023, "FlashAttention-2",
Sec. 3; ``cu_seqlens`` as in its ``flash_attn_varlen_func``): every matmul of the encoder runs on
the N real tokens instead of B x T padded ones, and attention keeps each sequence to itself
through the offsets ``cu_seqlens``. :meth:`minbert.model.bert.BertModel.forward_packed` reads it.

A packed batch may end with one filler sequence of padding tokens, so that N is a multiple of a
bucket size: batches then come in a few shapes, which CUDA graphs and compiled kernels need.
The filler is a sequence of its own (it attends only to itself) and ``num_real`` says where the
real sequences end.
"""

from __future__ import annotations

from typing import NamedTuple

import torch


class PackedBatch(NamedTuple):
    """S sequences (the real ones, then at most one filler) packed into N tokens.

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

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PackedBatch:
        """The same batch with its tensors on ``device``."""
        t = [x.to(device, non_blocking=non_blocking) for x in self[:4]]
        return PackedBatch(*t, self.max_seqlen, self.num_real)


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
        input_ids, token_type_ids: (B, T) int64 (token types default to zeros).
        attention_mask: (B, T), 1 on real tokens; each row's real tokens come first (right padding).
        multiple_of: N is rounded up to a multiple of this with one filler sequence of
            ``pad_token_id`` (none when it already is a multiple).
        max_seqlen: the longest sequence the kernels should expect (default: T); the filler
            must fit it.
    Returns:
        the :class:`PackedBatch`, on the inputs' device (this reads the lengths on the host).
    Raises:
        ValueError: a row whose mask is not 1s then 0s; ``multiple_of`` < 1; a filler longer
            than ``max_seqlen``.
    """
    B, T = input_ids.shape
    if multiple_of < 1:
        raise ValueError(f"multiple_of {multiple_of}: must be >= 1")
    if token_type_ids is None:
        token_type_ids = torch.zeros_like(input_ids)
    keep = attention_mask.bool()
    lengths = keep.sum(1)  # (B,)
    if not torch.equal(keep, torch.arange(T, device=keep.device)[None, :] < lengths[:, None]):
        raise ValueError("pack needs right-padded rows: each attention_mask row must be 1s then 0s")
    max_seqlen = T if max_seqlen is None else max_seqlen
    n = int(lengths.sum())
    fill = -n % multiple_of
    if fill > max_seqlen:
        raise ValueError(f"a filler of {fill} tokens does not fit max_seqlen {max_seqlen}: lower multiple_of")
    positions = torch.arange(T, device=input_ids.device).expand(B, T)
    parts = [input_ids[keep], token_type_ids[keep], positions[keep]]
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


def pack_plan(attention_mask: torch.Tensor, multiple_of: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each token of a right-padded batch goes in the packed layout, so that the device
    packs with fixed shapes (a gather) and unpacks with a scatter (see
    :meth:`minbert.model.multitask.MultitaskModel.encode`).

    The B sequences are followed by a filler of 1..``multiple_of`` tokens, so that N, the packed
    length, is the real token count plus one rounded up to a multiple of ``multiple_of``.

    Args:
        attention_mask: (B, T), 1 on real tokens, right-padded.
        multiple_of: the bucket size, <= T (the filler is a sequence of at most T tokens).
    Returns:
        pack_index: (N,) int64, the flat position ``row * T + col`` of each packed token; the
            filler's tokens point at B * T, one spare slot after the batch;
        cu_seqlens: (B + 2,) int32, the offsets of the B sequences and the filler.
    Raises:
        ValueError: ``multiple_of`` outside 1..T, or a row that is not right-padded.
    """
    B, T = attention_mask.shape
    if not 1 <= multiple_of <= T:
        raise ValueError(f"multiple_of {multiple_of}: must be in 1..T ({T})")
    keep = attention_mask.bool()
    lengths = keep.sum(1)
    if not torch.equal(keep, torch.arange(T)[None, :] < lengths[:, None]):
        raise ValueError("pack_plan needs right-padded rows: each attention_mask row must be 1s then 0s")
    n = int(lengths.sum())
    N = -(-(n + 1) // multiple_of) * multiple_of
    index = torch.cat([torch.nonzero(keep.reshape(-1)).squeeze(1), torch.full((N - n,), B * T)])
    cu = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0), torch.tensor([N])]).to(torch.int32)
    return index, cu
