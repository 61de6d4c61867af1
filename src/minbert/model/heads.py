"""Task heads and pooling.

A head maps encoder outputs to a task's raw output:

* single-sentence heads get one :class:`Encoded` and return logits (B, C);
* bi-encoder pair heads get two (sentence a and sentence b, encoded separately);
* cross-encoder pair heads get one :class:`Encoded` of ``[CLS] a [SEP] b [SEP]``.

Pair classification heads return one logit (B,) (the sigmoid lives in the loss and at
prediction time). Regression heads return a score (B,) already mapped to the task's range
(sigmoid-scaled; the cosine head maps cos linearly), so STS scores are always in [0, 5].

Heads are built by name through :func:`build_head`; an unknown name raises ``ConfigError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn

from ..errors import ConfigError

OutputRange = tuple[float, float] | None  # (low, high) of a regression output; None: unscaled


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


class OutputHead(nn.Module):
    """Base of the heads whose last layer has ``num_outputs`` units: :meth:`output` gives
    (B, C) logits as they are, a single output as (B,), scaled onto ``output_range`` when the
    task has one (:class:`ScaledOutput`). It adds no parameters (state_dict keys are the
    subclass's own)."""

    def __init__(self, num_outputs: int, output_range: tuple[float, float] | None):
        super().__init__()
        self.scale = ScaledOutput(output_range)
        self.num_outputs = num_outputs

    def output(self, out: torch.Tensor) -> torch.Tensor:
        """(B, C) last-layer outputs -> (B, C), or (B,) when C == 1, scaled (see the class)."""
        return self.scale(out.squeeze(-1) if self.num_outputs == 1 else out)


class LinearHead(OutputHead):
    """Single sentence: pool -> dropout -> Linear(H, C). The reference baseline SST head."""

    def __init__(
        self, hidden: int, num_outputs: int, pooling: str, dropout: float, output_range: OutputRange = None, **_
    ):
        super().__init__(num_outputs, output_range)
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, num_outputs)

    def forward(self, enc: Encoded) -> torch.Tensor:
        out = self.classifier(self.dropout(pool(enc, self.pooling)))  # (B, C)
        return self.output(out)


class AbsDiffHead(LinearHead):
    """Bi-encoder pair: |u - v| -> dropout -> Linear(H, 1) (the layers of :class:`LinearHead`).
    The reference baseline QQP/STS head."""

    def forward(self, a: Encoded, b: Encoded) -> torch.Tensor:
        u, v = pool(a, self.pooling), pool(b, self.pooling)  # (B, H) each
        out = self.classifier(self.dropout((u - v).abs()))
        return self.output(out)


# -- the heads of the reference paper's experiment table (configs/paper/, minbert.suite) --------


class MeanLinearHead(LinearHead):
    """Single sentence: mean over non-pad tokens (SBERT) -> dropout -> Linear(H, C), whatever
    ``pooling`` says. A named alias of ``baseline`` with ``pooling: mean``: the reference paper's
    custom SST head ("mean-pooled embedding -> linear", its exp 6 onwards)."""

    def __init__(
        self, hidden: int, num_outputs: int, pooling: str, dropout: float, output_range: OutputRange = None, **kw
    ):
        super().__init__(hidden, num_outputs, "mean", dropout, output_range, **kw)


class ConvHead(OutputHead):
    """Single sentence, n-gram features (Kim 2014, "Convolutional Neural Networks for Sentence
    Classification"): token states (B, T, H) -> Conv1d(H, hidden_size, kernel 3, zero padding 1)
    -> ReLU -> pooling of the feature map over the real tokens (``mean``: masked mean, ``cls``:
    the feature at [CLS]) -> dropout -> Linear(hidden_size, C).

    Padded positions are set to zero before the convolution (exactly what the convolution's own
    zero padding gives at a sequence's end) and are left out of the pooling, so a sentence's
    output does not depend on the padding its batch adds. The reference paper's exp 5 SST head
    (a head from "another course project", not described there; this is our reading)."""

    kernel_size = 3

    def __init__(
        self, hidden: int, num_outputs: int, pooling: str, dropout: float, output_range: OutputRange = None,
        hidden_size: int = 256, **_,
    ):
        super().__init__(num_outputs, output_range)
        if pooling not in ("mean", "cls"):
            raise ConfigError(
                f"head conv1d pools its own n-gram features: pooling must be 'mean' or 'cls', not {pooling!r}"
            )
        self.pooling = pooling
        self.conv = nn.Conv1d(hidden, hidden_size, self.kernel_size, padding=self.kernel_size // 2)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, num_outputs)

    def forward(self, enc: Encoded) -> torch.Tensor:
        real = enc.attention_mask.unsqueeze(-1).bool()  # (B, T, 1)
        zero = torch.zeros((), dtype=enc.last_hidden_state.dtype, device=real.device)
        x = torch.where(real, enc.last_hidden_state, zero)
        feats = torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)  # (B, T, hidden_size)
        pooled = pool(Encoded(feats, enc.attention_mask, enc.pooler_output), self.pooling)
        out = self.classifier(self.dropout(pooled))
        return self.output(out)


class PairMLPHead(OutputHead):
    """Bi-encoder pair: the pair features [u; v; |u - v|] (SBERT's classification objective,
    Reimers & Gurevych 2019) -> Linear(3H, hidden_size) -> ReLU -> Dropout -> Linear(hidden_size, C).
    The reference paper's exp 5 QQP head ("MLP on the pair features"; it does not list the
    features, we use SBERT's)."""

    def __init__(
        self, hidden: int, num_outputs: int, pooling: str, dropout: float, output_range: OutputRange = None,
        hidden_size: int = 256, **_,
    ):
        super().__init__(num_outputs, output_range)
        self.pooling = pooling
        self.mlp = nn.Sequential(
            nn.Linear(3 * hidden, hidden_size), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_size, num_outputs)
        )

    def forward(self, a: Encoded, b: Encoded) -> torch.Tensor:
        u, v = pool(a, self.pooling), pool(b, self.pooling)
        out = self.mlp(torch.cat([u, v, (u - v).abs()], dim=-1))
        return self.output(out)


class _GeluMLPHead(OutputHead):
    """Bi-encoder pair features of ``features`` blocks of H -> dropout -> Linear(features * H,
    hidden_size) -> GELU -> Linear(hidden_size, C); subclasses build the features in ``forward``."""

    features = 1

    def __init__(
        self, hidden: int, num_outputs: int, pooling: str, dropout: float, output_range: OutputRange = None,
        hidden_size: int = 256, **_,
    ):
        super().__init__(num_outputs, output_range)
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.mlp = nn.Sequential(
            nn.Linear(self.features * hidden, hidden_size), nn.GELU(), nn.Linear(hidden_size, num_outputs)
        )


class GeluAbsDiffHead(_GeluMLPHead):
    """Bi-encoder pair: |u - v| -> dropout -> Linear(H, hidden_size) -> GELU -> Linear(hidden_size, C).
    The reference paper's final QQP head (exp 6 onwards). The dropout on |u - v| is the
    baseline head's (``dropout: 0`` gives the paper's three layers exactly)."""

    def forward(self, a: Encoded, b: Encoded) -> torch.Tensor:
        u, v = pool(a, self.pooling), pool(b, self.pooling)
        out = self.mlp(self.dropout((u - v).abs()))
        return self.output(out)


class SbertHead(_GeluMLPHead):
    """Bi-encoder pair with SBERT's pair features (Reimers & Gurevych 2019, Sec. 3, plus the
    element-wise product of InferSent, Conneau et al. 2017): [u; v; |u - v|; u * v] (B, 4H) ->
    dropout -> Linear(4H, hidden_size) -> GELU -> Linear(hidden_size, C), scaled onto the task's
    range for regression."""

    features = 4

    def forward(self, a: Encoded, b: Encoded) -> torch.Tensor:
        u, v = pool(a, self.pooling), pool(b, self.pooling)  # (B, H) each
        # the product is clamped to +-1e18 so that huge activations cannot overflow it to inf
        # (real embeddings are orders of magnitude below; the clamp is then the identity)
        uv = (u * v).clamp(-1e18, 1e18)
        out = self.mlp(self.dropout(torch.cat([u, v, (u - v).abs(), uv], dim=-1)))  # (B, C)
        return self.output(out)


def cosine(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """cos(u, v) along the last dim, in float32 and clamped to [-1, 1]; 0 when either vector is
    zero. Each vector is first divided by its largest |coordinate|, so huge activations cannot
    overflow the squared norm."""

    def unit(x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        x = x / x.abs().amax(-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    return (unit(u) * unit(v)).sum(-1).clamp(-1.0, 1.0)


def _need_range(name: str, output_range: OutputRange) -> tuple[float, float]:
    if output_range is None:
        raise ConfigError(f"head {name} gives a similarity score: it needs a regression task (e.g. sts)")
    return output_range


class CompressExpandHead(nn.Module):
    """Bi-encoder pair, similarity score: each pooled embedding through the same bottleneck
    Linear(H, hidden_size) -> ReLU -> Dropout -> Linear(hidden_size, H), then cos(u', v'), then
    ``low + (high - low) * sigmoid(cos)`` (sigmoid x 5 for STS). The reference paper's exp 5 STS
    head, reproduced as described; note that sigmoid of a cosine confines the score to
    5 * [sigmoid(-1), sigmoid(1)] = [1.34, 3.66]."""

    def __init__(
        self, hidden: int, num_outputs: int, pooling: str, dropout: float, output_range: OutputRange = None,
        hidden_size: int = 256, **_,
    ):
        super().__init__()
        self.output_range = _need_range("compress_expand", output_range)
        self.pooling = pooling
        self.bottleneck = nn.Sequential(
            nn.Linear(hidden, hidden_size), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden_size, hidden)
        )
        self.scale = ScaledOutput(self.output_range)

    def forward(self, a: Encoded, b: Encoded) -> torch.Tensor:
        u, v = self.bottleneck(pool(a, self.pooling)), self.bottleneck(pool(b, self.pooling))
        return self.scale(cosine(u, v))


class CosineHead(nn.Module):
    """Bi-encoder pair, similarity score: the cosine of the pooled embeddings mapped linearly
    onto the task's range, ``low + (high - low) * (cos + 1) / 2`` (STS: cos -1 -> 0, 0 -> 2.5,
    1 -> 5). The reference paper's final STS head ("cosine similarity of the mean-pooled
    embeddings mapped to [0, 5]", exp 7 onwards; the paper does not give the map). We map
    linearly rather than 5 * relu(cos): the map is onto [0, 5] and has a gradient for cos < 0.

    ``head_layers`` k > 0 adds k blocks Dropout -> Linear(H, H) -> tanh, shared by both
    sentences, on each embedding before the cosine: the paper's "additional STS layers" (exp 9,
    12; it gives neither their number nor their activation). tanh rather than ReLU keeps
    negative coordinates, so the cosine can still reach -1 (after a ReLU every coordinate is
    >= 0, cos >= 0 and no score falls below 2.5). The Linear layers start as the identity, so
    training starts close to the plain cosine head. Without extra layers the head has no
    parameters and ``dropout`` is unused."""

    takes_head_layers = True

    def __init__(
        self, hidden: int, num_outputs: int, pooling: str, dropout: float, output_range: OutputRange = None,
        head_layers: int = 0, **_,
    ):
        super().__init__()
        self.output_range = _need_range("cosine", output_range)
        self.pooling = pooling
        blocks = []
        for _ in range(head_layers):
            linear = nn.Linear(hidden, hidden)
            with torch.no_grad():
                linear.weight.copy_(torch.eye(hidden))
                linear.bias.zero_()
            blocks += [nn.Dropout(dropout), linear, nn.Tanh()]
        self.layers = nn.Sequential(*blocks)

    def forward(self, a: Encoded, b: Encoded) -> torch.Tensor:
        u, v = self.layers(pool(a, self.pooling)), self.layers(pool(b, self.pooling))
        low, high = self.output_range
        return low + (high - low) * (cosine(u, v) + 1.0) / 2.0



class SbertCosineHead(CosineHead):
    """Bi-encoder pair, similarity score: the cosine itself regresses the gold score scaled onto
    [0, 1], ``low + (high - low) * cos`` (STS: cos 0 -> 0, cos 1 -> 5), as SBERT's
    CosineSimilarityLoss trains STS-B (Reimers & Gurevych 2019, Sec. 4.2). Sentence encoders
    trained that way (all-MiniLM-L6-v2) put unrelated sentences near cos 0, not -1, so this map
    keeps their geometry where ``cosine``'s (cos + 1) / 2 map pushes unrelated pairs towards -1.
    A negative cosine scores ``low`` (clipped, so the score stays in range; such a pair then
    gets no gradient). ``head_layers`` as for ``cosine``."""

    def forward(self, a: Encoded, b: Encoded) -> torch.Tensor:
        u, v = self.layers(pool(a, self.pooling)), self.layers(pool(b, self.pooling))
        low, high = self.output_range
        return low + (high - low) * cosine(u, v).clamp(min=0.0)  # (B,)


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
    ("bi", "sbert_cosine"): SbertCosineHead,
    ("bi", "sbert"): SbertHead,
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
    head_layers: int = 0,
) -> nn.Module:
    """Construct a head by (input kind, name). ``head_layers``: extra layers of the heads that
    take them (``cosine``); 0 for every other head.

    Raises:
        ConfigError: no head of that name exists for that input kind, or ``head_layers`` is
        negative or given to a head without extra layers.
    """
    factory = HEADS.get((input_kind, name))
    if factory is None:
        names = sorted(n for k, n in HEADS if k == input_kind)
        raise ConfigError(f"head {name!r} does not exist for {input_kind} input (choose from {names})")
    if pooling not in ("cls", "pooler", "mean"):
        raise ConfigError(f"pooling {pooling!r} is not one of ['cls', 'pooler', 'mean']")
    # which heads take extra layers is known here (a config's head_layers >= 0 and its pooling are
    # checked when it is loaded, minbert.config; these checks guard direct use)
    if head_layers < 0 or (head_layers and not getattr(factory, "takes_head_layers", False)):
        takes = sorted(f"{k}/{n}" for (k, n), f in HEADS.items() if getattr(f, "takes_head_layers", False))
        raise ConfigError(f"head_layers {head_layers}: must be 0 for head {name!r} (extra layers: {takes}, k >= 0)")
    return factory(
        hidden=hidden,
        num_outputs=num_outputs,
        pooling=pooling,
        dropout=dropout,
        output_range=output_range,
        hidden_size=hidden_size,
        head_layers=head_layers,
    )
