"""The multi-task model: one shared BERT encoder and one head per task."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .bert import BertConfig, BertModel
from .heads import Encoded
from .packing import PackedBatch, pack_plan

if TYPE_CHECKING:
    from ..config import Config
    from ..tasks.base import Task


class MultitaskModel(nn.Module):
    """A shared BERT encoder plus one head per task (an ``nn.ModuleDict``).

    ``model(task, batch)`` returns that task's output: logits (B, C) for multi-class tasks, one
    logit (B,) for binary tasks, a score (B,) in the task's range for regression tasks.
    ``input_kinds`` maps each task to "single", "bi" or "cross".
    """

    def __init__(
        self, encoder: nn.Module, heads: dict[str, nn.Module], input_kinds: dict[str, str], uncertainty: bool = False
    ):
        super().__init__()
        self.encoder = encoder
        self.heads = nn.ModuleDict(heads)
        self.input_kinds = dict(input_kinds)
        # evaluation packs each batch on the device (model.packing in training; see encode)
        self.pack_eval = False
        # learned per-task log-variances s_t for uncertainty weighting (Kendall et al. 2018)
        self.loss_log_vars = (
            nn.ParameterDict({name: nn.Parameter(torch.zeros(())) for name in heads}) if uncertainty else None
        )

    def encode(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor,
        packing: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> Encoded:
        """The encoder's outputs for (B, T) int64 ``input_ids``, ``attention_mask`` (1 = token) and
        ``token_type_ids``: hidden states (B, T, H), the mask, and the pooler output (B, H).

        ``packing``: (``pack_index``, ``cu_seqlens``) of :func:`minbert.model.packing.pack_plan`.
        The encoder then runs on the real tokens only (:meth:`BertModel.forward_packed`): they are
        gathered into one row, and their states scattered back to (B, T, H), zeros at padding (the
        padded path leaves values there that every head masks out). With ``pack_eval`` set, a
        batch without a plan is packed here in eval mode (the plan made from a host copy of the
        mask: one sync per batch; shapes vary, which evaluation does not mind)."""
        if packing is None and self.pack_eval and not self.training:
            packing = tuple(t.to(attention_mask.device) for t in pack_plan(attention_mask.cpu(), 1))
        if packing is None:
            out = self.encoder(input_ids, attention_mask, token_type_ids)
            return Encoded(out.last_hidden_state, attention_mask, out.pooler_output)
        pack_index, cu_seqlens = packing
        B, T = input_ids.shape
        positions = torch.arange(T, device=input_ids.device).expand(B, T)

        def gather(t: torch.Tensor) -> torch.Tensor:  # (B, T) -> (N,); the filler reads a spare 0
            return torch.cat([t.reshape(-1), t.new_zeros(1)])[pack_index]

        packed = PackedBatch(gather(input_ids), gather(token_type_ids), gather(positions), cu_seqlens, T, B)
        out = self.encoder.forward_packed(packed)
        x = out.last_hidden_state  # (N, H)
        h = x.new_zeros(B * T + 1, x.shape[-1]).index_put((pack_index,), x)  # the filler lands in the spare row
        return Encoded(h[:-1].view(B, T, -1), attention_mask, out.pooler_output)

    def forward(self, task: str, batch: dict) -> torch.Tensor:
        kind = self.input_kinds[task]
        packing = (batch["pack_index"], batch["cu_seqlens"]) if "pack_index" in batch else None
        if kind == "bi":
            B = batch["input_ids"].shape[0]
            # a and b are padded to the same T by collate: one encoder call for both halves
            enc = self.encode(
                torch.cat([batch["input_ids"], batch["input_ids_b"]]),  # (2B, T)
                torch.cat([batch["attention_mask"], batch["attention_mask_b"]]),
                torch.cat([batch["token_type_ids"], batch["token_type_ids_b"]]),
                packing,
            )
            a = Encoded(*(t[:B] for t in enc))
            b = Encoded(*(t[B:] for t in enc))
            return self.heads[task](a, b)
        enc = self.encode(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"], packing)
        return self.heads[task](enc)


def build_model(
    cfg: Config, encoder_dir: str | Path, pretrained: bool = True, tasks: Mapping[str, Task] | None = None
) -> MultitaskModel:
    """The shared encoder (pretrained weights, or just its architecture) plus one head per task
    of ``cfg.tasks``. ``tasks``: the run's task table (:func:`minbert.tasks.task_table`), built
    from ``cfg`` when not given.

    Raises:
        ConfigError: an unknown task, a bad custom task or head setting.
        CheckpointError: the encoder folder cannot be read.
    """
    if tasks is None:
        from ..tasks.table import task_table

        tasks = task_table(cfg)
    overrides = {"attn_implementation": cfg.model.attn_implementation}
    for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
        if getattr(cfg.model, key) is not None:
            overrides[key] = getattr(cfg.model, key)
    if pretrained:
        encoder = BertModel.from_pretrained(encoder_dir, **overrides)
    else:
        encoder = BertModel(BertConfig.from_json_file(Path(encoder_dir) / "config.json", **overrides))
    hidden = encoder.config.hidden_size
    heads, kinds = {}, {}
    for name, tcfg in cfg.tasks.items():
        task = tasks[name]
        heads[name] = task.build_head(tcfg, hidden)
        kinds[name] = task.input_kind(tcfg.pair_input)
    return MultitaskModel(encoder, heads, kinds, uncertainty=cfg.train.loss_weighting == "uncertainty")
