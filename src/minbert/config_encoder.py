"""The values of an encoder's ``config.json`` (:class:`minbert.model.bert.BertConfig`, Hugging
Face's names) that this encoder can build."""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
# packed "sdpa" attention kernels (minbert.model.bert.varlen_attention)
VARLEN_KERNELS = ("auto", "efficient", "flash", "triton")
# an encoder's config.json (model.bert.BertConfig): (what a value must be, the test it passes)
_ENCODER_NUMBERS = {
    **{k: ("an integer >= 1", lambda v: isinstance(v, int) and v >= 1) for k in (
        "vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
        "max_position_embeddings", "type_vocab_size")},
    "pad_token_id": ("an integer >= 0", lambda v: isinstance(v, int) and v >= 0),
    "hidden_dropout_prob": ("a number in [0, 1)", lambda v: 0 <= v < 1),
    "attention_probs_dropout_prob": ("a number in [0, 1)", lambda v: 0 <= v < 1),
    "initializer_range": ("a number >= 0", lambda v: v >= 0),
    "layer_norm_eps": ("a number > 0", lambda v: v > 0),
}


def check_encoder_config(c: Any) -> None:
    """The values of a :class:`minbert.model.bert.BertConfig` (a Hugging Face ``config.json``)
    that this encoder can build. NaN fails every range.

    Raises:
        ConfigError: a value of the wrong type or out of range, ``hidden_size`` not a multiple of
            ``num_attention_heads``, ``pad_token_id`` >= ``vocab_size``, an unsupported
            ``hidden_act``, ``position_embedding_type``, ``attn_implementation`` or ``varlen_kernel``;
            a ``weight_grad_stream`` that is not a bool.
    """
    for name, (what, ok) in _ENCODER_NUMBERS.items():
        v = getattr(c, name)
        if isinstance(v, bool) or not isinstance(v, int | float) or not ok(v):
            raise ConfigError(f"{name} must be {what}, got {v!r}")
    if c.hidden_size % c.num_attention_heads:
        raise ConfigError(
            f"hidden_size {c.hidden_size} is not a multiple of num_attention_heads {c.num_attention_heads}"
        )
    if c.pad_token_id >= c.vocab_size:
        raise ConfigError(f"pad_token_id {c.pad_token_id} is not below vocab_size {c.vocab_size}")
    if c.hidden_act != "gelu":
        raise ConfigError(f"hidden_act {c.hidden_act!r} is not supported (only 'gelu', exact erf)")
    if c.position_embedding_type != "absolute":
        raise ConfigError(f"position_embedding_type {c.position_embedding_type!r} is not supported (only 'absolute')")
    if c.attn_implementation not in ATTN_IMPLEMENTATIONS:
        raise ConfigError(f"attn_implementation {c.attn_implementation!r} is not one of {ATTN_IMPLEMENTATIONS}")
    if c.varlen_kernel not in VARLEN_KERNELS:
        raise ConfigError(f"varlen_kernel {c.varlen_kernel!r} is not one of {VARLEN_KERNELS}")
    if not isinstance(c.weight_grad_stream, bool):
        raise ConfigError(f"weight_grad_stream must be true or false, got {c.weight_grad_stream!r}")
