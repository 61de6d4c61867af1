"""The multi-task model: one shared BERT encoder and one head per task."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..config import encoder_overrides
from ..errors import ConfigError, out_of_memory
from .bert import BertConfig, BertModel
from .heads import Encoded
from .packing import PackedBatch, pack_plan, plan_max_seqlen, token_bucket

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
        # evaluation (predict_split) packs each batch as training does (model.packing)
        self.pack_eval = False
        # with pack_eval on CUDA: a minbert.inference.graphs.GraphedForward that replays it (None: op by op)
        self.eval_graphs = None
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
        padded path leaves values there that every head masks out)."""
        if packing is None:
            out = self.encoder(input_ids, attention_mask, token_type_ids)
            return Encoded(out.last_hidden_state, attention_mask, out.pooler_output)
        pack_index, cu_seqlens = packing
        B, T = input_ids.shape
        positions = torch.arange(T, device=input_ids.device).expand(B, T)

        def gather(t: torch.Tensor) -> torch.Tensor:  # (B, T) -> (N,); the filler reads a spare 0
            return torch.cat([t.reshape(-1), t.new_zeros(1)])[pack_index]

        # the longest sequence: a row (T) or a piece of the filler, no longer (pack_plan)
        packed = PackedBatch(gather(input_ids), gather(token_type_ids), gather(positions), cu_seqlens,
                             plan_max_seqlen(T), B)
        out = self.encoder.forward_packed(packed)
        x = out.last_hidden_state  # (N, H)
        h = x.new_zeros(B * T + 1, x.shape[-1]).index_put((pack_index,), x)  # the filler lands in the spare row
        return Encoded(h[:-1].view(B, T, -1), attention_mask, out.pooler_output)

    def forward(self, task: str, batch: dict) -> torch.Tensor:
        """One task's output for its collated ``batch`` (padded layout)."""
        return self.forward_step({task: batch})[task]

    def forward_step(
        self, batches: Mapping[str, dict], packing: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """Every task's output of one step from ONE encoder pass over all their rows: the rows of
        each task (:func:`encoder_rows`) are stacked in ``batches``' order, encoded together, and
        split back to the heads. All batches must share one padded length T (with packing, rows
        are padded to ``model.max_length``).

        ``packing``: the step's plan (:func:`step_pack_plan`) over the stacked rows; the encoder
        then runs on their real tokens only, as one packed row (see :meth:`encode`).

        Raises:
            RuntimeError: batches of different T (from ``torch.cat``).
        """
        return self.forward_copies(batches, packing, 1)[0]

    def forward_copies(
        self, batches: Mapping[str, dict], packing: tuple[torch.Tensor, torch.Tensor] | None = None, copies: int = 1
    ) -> list[dict[str, torch.Tensor]]:
        """:meth:`forward_step` for ``copies`` dropout passes at once: the stacked rows are
        repeated ``copies`` times and encoded in ONE pass, so each copy of a row draws its own
        dropout masks (R-Drop's two passes, Liang et al. 2021, Sec. 2.1, without a second pass's
        kernels). Returns one ``{task: output}`` per copy. ``packing``: the plan of
        :func:`step_pack_plan` with the same ``copies``.

        Raises:
            RuntimeError: batches of different T (from ``torch.cat``).
        """
        rows = [encoder_rows(b) for b in batches.values()] * copies
        ids, mask, types = (torch.cat(t) if len(rows) > 1 else t[0] for t in zip(*rows, strict=True))
        enc = self.encode(ids, mask, types, packing)  # (copies x sum of rows, T, H)
        outs, start = [{} for _ in range(copies)], 0
        for i, ((task, batch), (task_ids, _, _)) in enumerate(zip(list(batches.items()) * copies, rows, strict=True)):
            e = Encoded(*(t[start : start + task_ids.shape[0]] for t in enc))
            start += task_ids.shape[0]
            out = outs[i // len(batches)]
            if self.input_kinds[task] == "bi":  # the a rows, then the b rows
                B = batch["input_ids"].shape[0]
                out[task] = self.heads[task](Encoded(*(t[:B] for t in e)), Encoded(*(t[B:] for t in e)))
            else:
                out[task] = self.heads[task](e)
        return outs


def encoder_rows(batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The encoder's input rows of one collated batch: ``input_ids``, ``attention_mask`` and
    ``token_type_ids``, each (B', T) int64: the batch's B rows, or for bi-encoder pairs (a batch
    with ``input_ids_b``; collate pads both halves to one T) the a rows then the b rows, B' = 2B."""
    keys = ("input_ids", "attention_mask", "token_type_ids")
    if "input_ids_b" in batch:
        return tuple(torch.cat([batch[k], batch[k + "_b"]]) for k in keys)
    return tuple(batch[k] for k in keys)


def step_pack_plan(
    batches: Mapping[str, dict], smallest: int, largest: int, copies: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """The packed layout of one step (``model.packing``): :func:`minbert.model.packing.pack_plan`
    of every task's encoder rows stacked in ``batches``' order, ``copies`` times over, as
    :meth:`MultitaskModel.forward_copies` stacks them. Returns ``pack_index`` (N,) int64 and
    ``cu_seqlens`` (rows + 1 + k,) int32 (k the filler's pieces,
    :func:`minbert.model.packing.filler_pieces`), N the step's n real tokens plus the filler,
    rounded up to a multiple of ``token_bucket(n + 1, smallest, largest)``: the step's shape is
    one of a few buckets, whatever the mix of its tasks' lengths (``smallest`` and ``largest``
    bound the bucket; callers pass the encoder's ``max_position_embeddings`` as ``largest``).

    Raises:
        ValueError: see ``pack_plan`` (rows not right-padded or empty).
    """
    mask = torch.cat([encoder_rows(b)[1] for b in batches.values()] * copies)
    return pack_plan(mask, token_bucket(int(mask.sum()) + 1, smallest, largest))


def build_model(
    cfg: Config, encoder_dir: str | Path, pretrained: bool = True, tasks: Mapping[str, Task] | None = None
) -> MultitaskModel:
    """The shared encoder (pretrained weights, or just its architecture) plus one head per task
    of ``cfg.tasks``. ``tasks``: the run's task table (:func:`minbert.tasks.task_table`), built
    from ``cfg`` when not given.

    Raises:
        ConfigError: an unknown task, a bad custom task or head setting, a head too large to allocate.
        CheckpointError: the encoder folder cannot be read.
    """
    if tasks is None:
        from ..tasks.table import task_table

        tasks = task_table(cfg)
    overrides = encoder_overrides(cfg)
    if pretrained:
        encoder = BertModel.from_pretrained(encoder_dir, **overrides)
    else:
        encoder = BertModel(BertConfig.from_json_file(Path(encoder_dir) / "config.json", **overrides))
    hidden = encoder.config.hidden_size
    heads, kinds = {}, {}
    for name, tcfg in cfg.tasks.items():
        task = tasks[name]
        try:
            heads[name] = task.build_head(tcfg, hidden)
        except RuntimeError as e:  # torch's allocators raise RuntimeError (OutOfMemoryError on CUDA)
            if out_of_memory(e) is None:
                raise
            raise ConfigError(f"tasks.{name}: its head ({task.num_outputs} outputs from {hidden} features) does not "
                              "fit in memory; check num_labels or label_names") from None
        kinds[name] = task.input_kind(tcfg.pair_input)
    return MultitaskModel(encoder, heads, kinds, uncertainty=cfg.train.loss_weighting == "uncertainty")
