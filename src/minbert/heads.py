"""Task heads and pooling.

A head maps encoder outputs to a task's raw output:

* single-sentence heads get one :class:`Encoded` and return logits (B, C);
* bi-encoder pair heads get two (sentence a and sentence b, encoded separately);
* cross-encoder pair heads get one :class:`Encoded` of ``[CLS] a [SEP] b [SEP]``.

Pair classification heads return one logit (B,) (the sigmoid lives in the loss and at
prediction time). Regression heads return a score (B,) already mapped to the task's range
(sigmoid-scaled), so STS scores are always in [0, 5].

Heads are built by name through :func:`build_head`; an unknown name raises ``ConfigError``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import nn

from .errors import ConfigError


class Encoded(NamedTuple):
    """Encoder outputs for one batch of sequences.

    last_hidden_state: (B, T, H) float; attention_mask: (B, T) int (1 = real token);
    pooler_output: (B, H) float.
    """

    last_hidden_state: torch.Tensor
    attention_mask: torch.Tensor
    pooler_output: torch.Tensor


def pool(enc: Encoded, how: str) -> torch.Tensor:
    """Sentence embedding (B, H).

    ``cls``: the [CLS] hidden state; ``pooler``: BERT's tanh pooler over [CLS];
    ``mean``: the mean over non-pad tokens (SBERT, Reimers & Gurevych 2019).
    """
    if how == "cls":
        return enc.last_hidden_state[:, 0]
    if how == "pooler":
        return enc.pooler_output
    if how == "mean":
        m = enc.attention_mask.unsqueeze(-1).to(enc.last_hidden_state.dtype)  # (B, T, 1)
        return (enc.last_hidden_state * m).sum(1) / m.sum(1).clamp_min(1.0)
    raise ConfigError(f"pooling {how!r} is not one of ['cls', 'pooler', 'mean']")


class ScaledOutput(nn.Module):
    """Maps an unbounded score to [low, high] with ``low + (high - low) * sigmoid(x)``; the
    identity for classification heads (``low is None``)."""

    def __init__(self, output_range: tuple[float, float] | None):
        super().__init__()
        self.output_range = output_range

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.output_range is None:
            return x
        low, high = self.output_range
        return low + (high - low) * torch.sigmoid(x)


class LinearHead(nn.Module):
    """Single sentence: pool -> dropout -> Linear(H, C). The reference baseline SST head."""

    def __init__(self, hidden: int, num_outputs: int, pooling: str, dropout: float, output_range=None, **_):
        super().__init__()
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_outputs)
        self.scale = ScaledOutput(output_range)
        self.num_outputs = num_outputs

    def forward(self, enc: Encoded) -> torch.Tensor:
        out = self.classifier(self.dropout(pool(enc, self.pooling)))  # (B, C)
        return self.scale(out.squeeze(-1) if self.num_outputs == 1 else out)


class AbsDiffHead(nn.Module):
    """Bi-encoder pair: |u - v| -> dropout -> Linear(H, 1). The reference baseline QQP/STS head."""

    def __init__(self, hidden: int, num_outputs: int, pooling: str, dropout: float, output_range=None, **_):
        super().__init__()
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_outputs)
        self.scale = ScaledOutput(output_range)
        self.num_outputs = num_outputs

    def forward(self, a: Encoded, b: Encoded) -> torch.Tensor:
        u, v = pool(a, self.pooling), pool(b, self.pooling)  # (B, H) each
        out = self.classifier(self.dropout((u - v).abs()))
        return self.scale(out.squeeze(-1) if self.num_outputs == 1 else out)


HeadFactory = Callable[..., nn.Module]

# (input kind, head name) -> constructor. Input kinds: "single", "bi", "cross".
# conv1d .. cosine: the heads of the reference paper's experiment table (configs/paper/).
HEADS: dict[tuple[str, str], HeadFactory] = {
    ("single", "baseline"): LinearHead,
    ("cross", "baseline"): LinearHead,
    ("bi", "baseline"): AbsDiffHead,
    ("single", "conv1d"): ConvHead,
    ("single", "mean"): MeanLinearHead,
    ("bi", "mlp"): PairMLPHead,
    ("bi", "gelu"): GeluAbsDiffHead,
    ("bi", "compress_expand"): CompressExpandHead,
    ("bi", "cosine"): CosineHead,
}


def build_head(
    input_kind: str,
    name: str,
    *,
    hidden: int,
    num_outputs: int,
    pooling: str,
    dropout: float,
    output_range: tuple[float, float] | None = None,
    hidden_size: int = 256,
) -> nn.Module:
    """Construct a head by (input kind, name).

    Raises:
        ConfigError: no head of that name exists for that input kind.
    """
    factory = HEADS.get((input_kind, name))
    if factory is None:
        names = sorted(n for k, n in HEADS if k == input_kind)
        raise ConfigError(f"head {name!r} does not exist for {input_kind} input (choose from {names})")
    if pooling not in ("cls", "pooler", "mean"):
        raise ConfigError(f"pooling {pooling!r} is not one of ['cls', 'pooler', 'mean']")
    return factory(
        hidden=hidden,
        num_outputs=num_outputs,
        pooling=pooling,
        dropout=dropout,
        output_range=output_range,
        hidden_size=hidden_size,
    )



class MultitaskModel(nn.Module):
    """A shared BERT encoder plus one head per task (an ``nn.ModuleDict``).

    ``model(task, batch)`` returns that task's output: logits (B, C) for multi-class tasks, one
    logit (B,) for binary tasks, a score (B,) in the task's range for regression tasks.
    ``input_kinds`` maps each task to "single", "bi" or "cross".
    """

    def __init__(self, encoder: nn.Module, heads: dict[str, nn.Module], input_kinds: dict[str, str]):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)
        self.input_kinds = dict(input_kinds)

    def encode(self, input_ids, attention_mask, token_type_ids) -> Encoded:
        out = self.encoder(input_ids, attention_mask, token_type_ids)
        return Encoded(out.last_hidden_state, attention_mask, out.pooler_output)

    def forward(self, task: str, batch: dict) -> torch.Tensor:
        kind = self.input_kinds[task]
        if kind == "bi":
            B = batch["input_ids"].shape[0]
            # a and b are padded to the same T by collate: one encoder call for both halves
            enc = self.encode(
                torch.cat([batch["input_ids"], batch["input_ids_b"]]),  # (2B, T)
                torch.cat([batch["attention_mask"], batch["attention_mask_b"]]),
                torch.cat([batch["token_type_ids"], batch["token_type_ids_b"]]),
            )
            a = Encoded(*(t[:B] for t in enc))
            b = Encoded(*(t[B:] for t in enc))
            return self.heads[task](a, b)
        enc = self.encode(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        return self.heads[task](enc)
