"""One optimizer step of multi-task training: the losses of a micro-step, and the gradient work.

* :class:`TrainStep` -- every task's forward pass and loss of one micro-step in one call (the
  unit that ``DistributedDataParallel`` wraps);
* :class:`OptimizerStep` -- the micro-steps' forward + backward passes in one of three variants
  (CUDA-graphed, eager with PCGrad, eager), the gradient sync, clipping and the update;
* :func:`pcgrad_` -- gradient surgery between tasks (Yu et al. 2020).
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from ..config import RuntimeSettings, TrainConfig
from ..distributed import DistContext, all_reduce_mean, broadcast_tensors, to_device
from ..inference.evaluate import autocast_context, move
from ..model.multitask import MultitaskModel
from ..tasks.base import Task
from .cudagraph import GraphedSteps, norm_and_clip
from .optim import AdamW
from .regularize import smart_loss, symmetric_divergence

log = logging.getLogger(__name__)


def pcgrad_(task_grads: list[list[torch.Tensor | None]], seed: int) -> list[torch.Tensor | None]:
    """PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning", Algorithm 1): for
    each task i, for the other tasks j in random order, if g_i . g_j < 0 remove from g_i its
    component along g_j: g_i -= (g_i . g_j) / |g_j|^2 g_j (with the original g_j). Returns the sum
    of the projected gradients, per parameter. ``task_grads[i][k]`` is task i's gradient of
    parameter k (None if it does not reach it)."""
    n_tasks, n_params = len(task_grads), len(task_grads[0])
    some = next((g for grads in task_grads for g in grads if g is not None), None)
    device, dtype = (some.device, some.dtype) if some is not None else (torch.device("cpu"), torch.float32)
    flat = []
    for grads in task_grads:
        parts = []
        for k in range(n_params):
            g = grads[k]
            ref = next((tg[k] for tg in task_grads if tg[k] is not None), None)
            if ref is None:
                parts.append(torch.zeros(0, device=device, dtype=dtype))  # bf16 with optim.master_weights
            else:
                parts.append((g if g is not None else torch.zeros_like(ref)).reshape(-1))
        flat.append(torch.cat(parts))
    rng = np.random.default_rng(seed)
    projected = []
    for i in range(n_tasks):
        g = flat[i].clone()
        for j in rng.permutation(n_tasks):
            if j == i:
                continue
            dot = torch.dot(g, flat[j])
            if dot < 0:
                g -= dot / flat[j].pow(2).sum().clamp_min(1e-20) * flat[j]
        projected.append(g)
    total = torch.stack(projected).sum(0)
    out, offset = [], 0
    for k in range(n_params):
        ref = next((tg[k] for tg in task_grads if tg[k] is not None), None)
        if ref is None:
            out.append(None)
            continue
        out.append(total[offset : offset + ref.numel()].view_as(ref))
        offset += ref.numel()
    return out


def encoder_copies(tc: TrainConfig | None) -> int:
    """How many copies of each row one encoder pass of a step holds: 2 with R-Drop (its two
    dropout passes, :meth:`MultitaskModel.forward_copies`), else 1. Packed plans must match."""
    return 2 if tc is not None and tc.rdrop_alpha else 1


class StepLosses(NamedTuple):
    """total: () the weighted sum sum_t w_t L_t; per_task: (n_tasks,) the weighted losses w_t L_t
    (both keep their autograd graph)."""

    total: torch.Tensor
    per_task: torch.Tensor


class TrainStep(nn.Module):
    """Every task's forward pass and loss of one micro-step, in one ``forward`` call: the unit
    that ``DistributedDataParallel`` wraps, so one backward all-reduces the gradients of all
    tasks of the step together.

    Per task t: L_t is the task loss (with R-Drop, the mean over two dropout passes plus
    ``rdrop_alpha`` x their divergence; with SMART, plus ``smart_weight`` x the adversarial
    divergence; see :mod:`minbert.regularize`). The total is sum_t w_t L_t, or with uncertainty
    weighting sum_t exp(-s_t) w_t L_t + s_t (Kendall et al. 2018, Eq. 7 in the form of their
    code: s_t = log sigma_t^2)."""

    def __init__(
        self,
        model: MultitaskModel,
        tasks: dict[str, Task],
        weights: dict[str, float],
        device: torch.device,
        amp: bool,
        tc: TrainConfig | None = None,
    ):
        super().__init__()
        self.model, self.tasks, self.weights, self.device, self.amp = model, tasks, weights, device, amp
        self.tc = tc

    def task_loss(self, name: str, batch: dict, out: torch.Tensor, out2: torch.Tensor | None) -> torch.Tensor:
        """L_t of one task from its output ``out`` (and with R-Drop ``out2``, a second dropout
        pass); call under autocast."""
        task, tc = self.tasks[name], self.tc
        loss = task.loss(out, batch["labels"])
        if out2 is not None:
            loss = (loss + task.loss(out2, batch["labels"])) / 2
            loss = loss + tc.rdrop_alpha * symmetric_divergence(task.kind, out, out2)
        if tc is not None and tc.smart_weight:
            reg = smart_loss(self.model, name, task.kind, batch, out, tc.smart_sigma, tc.smart_eta, tc.smart_eps)
            loss = loss + tc.smart_weight * reg
        return loss

    def forward(
        self, batches: dict[str, dict], packing: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> StepLosses:
        """The step's losses. Padded (``packing`` None): one encoder pass per task. Packed (the
        step's plan, :func:`minbert.model.multitask.step_pack_plan`): one encoder pass over the
        real tokens of every task of the step. With R-Drop, each pass holds every row twice
        (:meth:`MultitaskModel.forward_copies`), and a packed plan must be made for two copies."""
        copies = encoder_copies(self.tc)
        losses = []
        with autocast_context(self.device, self.amp):
            if packing is not None:
                outs = self.model.forward_copies(batches, packing, copies)
            for name, batch in batches.items():
                if packing is None:
                    outs = self.model.forward_copies({name: batch}, None, copies)
                out, out2 = outs[0][name], (outs[1][name] if copies == 2 else None)
                losses.append(self.weights[name] * self.task_loss(name, batch, out, out2))
        total, log_vars = 0.0, self.model.loss_log_vars
        for name, loss in zip(batches, losses, strict=True):
            if log_vars is not None:
                s = log_vars[name]
                total = total + torch.exp(-s) * loss + s
            else:
                total = total + loss
        return StepLosses(total, torch.stack(losses))


def _task_step(step_fn: nn.Module, name: str):
    """One task's micro-step as ``GraphedSteps`` wants it: batch -> (loss, per-task loss)."""

    def fn(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        out = step_fn({name: batch})
        return out.total, out.per_task.detach()

    return fn


def _packed_step(step_fn: nn.Module, names: tuple[str, ...]):
    """A packed micro-step of all ``names`` as ``GraphedSteps`` wants it: the flat inputs
    ``{"task/key": tensor, "pack_index", "cu_seqlens"}`` -> (loss, per-task losses)."""

    def fn(inputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        batches = {n: {k[len(n) + 1 :]: v for k, v in inputs.items() if k.startswith(n + "/")} for n in names}
        out = step_fn(batches, (inputs["pack_index"], inputs["cu_seqlens"]))
        return out.total, out.per_task.detach()

    return fn


def find_nonfinite(names: list[str], values: list[float]) -> tuple[str, int] | None:
    """For one step's (per-task losses..., gradient norm): what is not finite, and the index of
    the task whose batch ids to report; None when all values are finite."""
    bad = [i for i, v in enumerate(values[:-1]) if not math.isfinite(v)]
    if bad:
        return f"task {names[bad[0]]}", bad[0]
    if not math.isfinite(values[-1]):
        return "gradient (all tasks' sum)", 0
    return None


@dataclass
class OptimizerStep:
    """The gradient work of one optimizer step over ``group_size`` micro-steps (gradient
    accumulation): per micro-step :meth:`backward`, then :meth:`gradients` (sync, clip), then
    :meth:`update` (or :meth:`discard` for a step skipped for a non-finite loss).

    Variants of :meth:`backward`: with ``graphs``, each task's forward + backward runs through
    :class:`GraphedSteps` (CUDA graphs, or eager into its flat gradient buffer for the flat
    all-reduce); without, eagerly with PCGrad (``pcgrad``) or plainly. Under DDP the gradients
    are all-reduced only by the last micro-step of a group; with ``flat_sync`` the flat buffer
    is averaged once in :meth:`gradients`.

    Args:
        step_fn: a :class:`TrainStep` (or DDP wrapping it): ``{task: batch} -> StepLosses``.
        params: the trainable parameters (what is clipped and what PCGrad projects).
        optimizer, scheduler: stepped by :meth:`update`.
        device: where the batches go.
        ctx: this process's place in a torchrun job.
        max_grad_norm: clip the gradients' global L2 norm to this (None: no clipping).
        pcgrad: project conflicting task gradients (seeded ``seed + step``).
        graphs: the fixed gradient buffers (CUDA graphs or flat sync), else None.
        flat_sync: average ``graphs.flat`` over the processes (one all-reduce per step).
    """

    step_fn: nn.Module
    params: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    device: torch.device
    ctx: DistContext = field(default_factory=DistContext)
    max_grad_norm: float | None = None
    pcgrad: bool = False
    seed: int = 0
    graphs: GraphedSteps | None = None
    flat_sync: bool = False
    task_steps: dict = field(default_factory=dict, repr=False)  # what the graphs capture: per task, or per step's tasks

    def backward(
        self, batches: dict[str, dict], *, first: bool, last: bool, group_size: int, step: int,
        packing: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Forward and backward of one micro-step: ``batches`` maps each task of the step to its
        collated batch (host tensors); 1 / ``group_size`` x the gradient of the total loss is
        added to the parameters' gradients. ``first``/``last``: the micro-step opens/closes its
        accumulation group; ``step``: optimizer steps done (PCGrad's seed); ``packing``: the
        step's pack plan (host tensors; one encoder pass for all tasks, one graph per step).
        Returns (n_tasks,) the weighted task losses w_t L_t, detached, on the device."""
        if self.graphs is not None:
            return self._graphed_backward(batches, first, group_size, packing)
        # gradients are all-reduced only on the last micro-step of an accumulation group
        sync = contextlib.nullcontext() if last or not self.ctx.enabled else self.step_fn.no_sync()
        with sync:
            moved = {n: move(b, self.device) for n, b in batches.items()}
            if packing is None:
                out = self.step_fn(moved)
            else:
                out = self.step_fn(moved, tuple(to_device(t, self.device) for t in packing))
            if self.pcgrad:
                self._pcgrad_backward(out, group_size, step)
            else:
                (out.total / group_size).backward()
        return out.per_task.detach()

    def _graphed_backward(
        self, batches: dict[str, dict], first: bool, group_size: int, packing: tuple[torch.Tensor, torch.Tensor] | None
    ) -> torch.Tensor:
        if first:
            self.graphs.zero_grad()
        inputs = {n: {k: v for k, v in b.items() if isinstance(v, torch.Tensor)} for n, b in batches.items()}
        if packing is not None:  # the whole step: one graph per token bucket
            key = tuple(batches)
            if key not in self.task_steps:
                self.task_steps[key] = _packed_step(self.step_fn, key)
            flat = {f"{n}/{k}": v for n, x in inputs.items() for k, v in x.items()}
            flat["pack_index"], flat["cu_seqlens"] = packing
            lrs = [g["lr"] for g in self.optimizer.param_groups] if self.graphs.updater is not None else None
            return self.graphs.run(key, self.task_steps[key], flat, 1.0 / group_size, lrs)
        for n in batches:
            if n not in self.task_steps:
                self.task_steps[n] = _task_step(self.step_fn, n)
        return torch.cat([self.graphs.run(n, self.task_steps[n], x, 1.0 / group_size) for n, x in inputs.items()])

    def _pcgrad_backward(self, out: StepLosses, group_size: int, step: int) -> None:
        task_grads = [
            torch.autograd.grad(loss, self.params, retain_graph=True, allow_unused=True) for loss in out.per_task
        ]
        for p, g in zip(self.params, pcgrad_(task_grads, seed=self.seed + step), strict=True):
            if g is not None:
                p.grad = g / group_size if p.grad is None else p.grad + g / group_size

    def gradients(self, per_task: torch.Tensor) -> torch.Tensor:
        """After a group's micro-steps: average the flat gradient buffer over the processes
        (``flat_sync``), hand the graphs' buffers to the optimizer, clip (a replayed one-graph
        step: done in the graph, :attr:`GraphedSteps.step_norm`). Returns (n_tasks + 1,)
        float32: ``per_task`` (the last micro-step's weighted losses) and the gradient norm
        before clipping (0 without trainable parameters; with the optimizer's ``rows``, the
        table's part too: :meth:`minbert.training.lazy_rows.LazyRows.grad_sq`)."""
        if self.flat_sync:
            all_reduce_mean(self.graphs.flat, self.ctx)  # one collective: every task's gradients of the step
        if self.graphs is not None and not self.graphs.step_updated:  # (updated: nothing reads them)
            self.graphs.expose_grads()
        if self.graphs is not None and self.graphs.step_norm is not None:  # clipped in the replayed graph
            grad_norm = self.graphs.step_norm
        elif self.params:
            grad_norm = norm_and_clip(self.params, self.max_grad_norm)
        else:
            grad_norm = torch.zeros((), device=self.device)
        rows = getattr(self.optimizer, "rows", None)  # an embedding whose gradient is not in .grad (no clipping)
        if rows is not None and (self.graphs is None or self.graphs.step_norm is None):
            grad_norm = rows.norm_with(grad_norm)
        return torch.cat([per_task.float(), grad_norm.float().reshape(1).to(per_task.device)])

    def update(self) -> None:
        """The optimizer and lr-schedule step (the optimizer's only where the replayed graph did
        not update the parameters itself, :attr:`GraphedSteps.step_updated`); clears eager
        gradients (the graphs' buffers are zeroed by the next group's first micro-step)."""
        if self.graphs is None or not self.graphs.step_updated:
            self.optimizer.step()
        elif isinstance(self.optimizer, AdamW):
            self.optimizer.replayed()  # (the embedding rows' periodic flush)
        self.scheduler.step()
        if self.graphs is None:
            self.optimizer.zero_grad(set_to_none=True)

    def discard(self) -> None:
        """Drop this step's gradients without an update (a skipped non-finite step)."""
        self.optimizer.zero_grad(set_to_none=True)
        if getattr(self.optimizer, "rows", None) is not None:  # the embedding rows' gradients
            self.optimizer.rows.discard()


def build_optimizer_step(
    model: MultitaskModel,
    tasks: dict[str, Task],
    weights: dict[str, float],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    device: torch.device,
    tc: TrainConfig,
    rt: RuntimeSettings,
    ctx: DistContext,
) -> OptimizerStep:
    """The step of a run: a :class:`TrainStep` over ``model``'s trainable parameters; under
    torchrun either wrapped by DDP or (``rt.flat_sync``) with rank 0's weights broadcast, as
    DDP's constructor would, for the flat gradient sync; with the fixed gradient buffers of
    :class:`GraphedSteps` for CUDA graphs or the flat sync (``direct`` when each optimizer step is
    one packed graph, which then also updates the parameters: :func:`graph_updater`)."""
    rows = getattr(optimizer, "rows", None)  # a table whose gradient is not in .grad: none to clip or buffer
    params = [p for p in model.parameters() if p.requires_grad and (rows is None or p is not rows.weight)]
    step_fn: nn.Module = TrainStep(model, tasks, weights, device, rt.amp, tc)
    if rt.flat_sync:
        broadcast_tensors(list(model.state_dict().values()), ctx)
    elif ctx.enabled:
        step_fn = _wrap_ddp(step_fn, tc, device)
    # one graph per optimizer step (packed, no accumulation, no flat sync): gradients stay where it writes them
    direct = rt.cuda_graphs and bool(rt.pack_multiple) and tc.grad_accum == 1 and not rt.flat_sync
    graphs = None
    if (rt.cuda_graphs or rt.flat_sync) and params:
        graphs = GraphedSteps(params, capture=rt.cuda_graphs, direct=direct, grad_norm=direct,
                              max_norm=tc.max_grad_norm, updater=graph_updater(optimizer, tc) if direct else None)
    if rows is not None and graphs is not None and graphs.capture and graphs.updater is None:
        raise RuntimeError("optim.embedding_rows: a CUDA graph must hold the rows' update (one graph per step)")
    return OptimizerStep(
        step_fn, params, optimizer, scheduler, device, ctx,
        max_grad_norm=tc.max_grad_norm, pcgrad=tc.pcgrad, seed=tc.seed, graphs=graphs, flat_sync=rt.flat_sync,
    )


def graph_updater(optimizer: torch.optim.Optimizer, tc: TrainConfig) -> AdamW | None:
    """The optimizer, when one-graph steps can capture its update: our fused AdamW under
    ``train.nonfinite=stop``. Otherwise None, with one log line saying why: other optimizers
    read host values that change between steps; ``nonfinite=skip`` must see a step's losses
    before its update, and the graph would have applied it already."""
    why = None
    if not (isinstance(optimizer, AdamW) and optimizer.fused):
        why = "the optimizer is not our fused AdamW (optim.name=adamw, optim.fused)"
    elif tc.nonfinite != "stop":
        why = "train.nonfinite=skip decides on a step's losses before its update"
    if why is not None:
        log.info("CUDA graphs: the optimizer update runs outside the step's graph: %s", why)
        return None
    return optimizer


def _wrap_ddp(step_fn: nn.Module, tc: TrainConfig, device: torch.device) -> nn.Module:
    """``step_fn`` in ``DistributedDataParallel``. Some parameters get no gradient in a step (the
    pooler unless a head pools with it; in sequential and sampled steps, the other tasks' heads).
    In the parallel routine the set is the same in every step: DDP's static-graph mode learns it
    in the first step and then skips the per-step search of the autograd graph; otherwise DDP
    must search. (Static-graph mode breaks with no_sync, hence not with gradient accumulation.)"""
    from torch.nn.parallel import DistributedDataParallel as DDP

    static = tc.routine == "parallel" and tc.grad_accum == 1
    return DDP(
        step_fn,
        device_ids=[device.index] if device.type == "cuda" else None,
        find_unused_parameters=not static,
        static_graph=static,
        gradient_as_bucket_view=True,  # gradients live in the all-reduce buckets: no copy
    )
