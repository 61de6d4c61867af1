"""CUDA graphs for training steps: one graph per recurring batch shape.

A training step of a small encoder at batch 32 is bound by kernel-launch overhead, not by
arithmetic: forward plus backward of a 6-layer BERT is several hundred kernels, and the host
needs a few microseconds to launch each, longer than most of them run on an H200. A CUDA graph
records the kernels of one forward + backward once and replays them with a single launch
(NVIDIA, CUDA C++ Programming Guide, "CUDA Graphs"; PyTorch ``torch.cuda.graph``, "whole network
capture").

Graphs replay fixed shapes into fixed memory, so:

* batches are padded to a multiple of a few tokens (``data.pad_to_multiple_of``), which leaves a
  handful of shapes per task; a shape is captured the second time it is seen (one-off shapes,
  such as an epoch's last partial batch, run eagerly);
* inputs are copied into the graph's own input tensors before each replay, all in one transfer
  (:class:`minbert.inference.graphs.StaticInputs`);
* every gradient lives in one fixed buffer per parameter, which eager backward passes and every
  graph accumulate into (``p.grad`` is that buffer). The buffers are views into one flat tensor
  (:attr:`GraphedSteps.flat`), so several processes average all gradients with one
  ``all_reduce`` (``train.grad_sync=flat``; DDP's hooks cannot run inside a graph);
* the optimizer runs outside the graphs, on the accumulated buffers. Parameters that no task of
  the step reached get ``p.grad = None`` for the optimizer, as in eager training, so their
  optimizer state does not move (:meth:`GraphedSteps.expose_grads`). One-graph steps
  (``direct``) may capture the optimizer update too (``updater``): a replay is then the whole
  step, forward to updated weights, and the host hands it only the inputs and this step's lrs.

With ``direct`` (one graph per optimizer step: packed steps without gradient accumulation or the
flat all-reduce) nothing accumulates: a graph's backward writes fresh gradients into its own
memory, and the optimizer reads them there. That saves zeroing the flat buffer and adding into
it, two passes over every gradient per step. The graphs then share one memory pool, which is
safe because a replay's gradients and value are used up (optimizer step, copy) before the next
replay, and the inputs live outside the pool.

Dropout inside a graph draws fresh random numbers at every replay (PyTorch registers the CUDA
generator with the graph). Capturing consumes random numbers, so a run with graphs is not
bit-identical to one without, and a resumed run is not bit-identical to an uninterrupted one.
Nor are two runs on CUDA bit-identical wherever a token's repeats in a batch add their gradients
by atomics, in an order that varies: the embeddings' backward under ``torch.compile`` (inductor
lowers it to a scatter-add with atomic adds) and the accumulator of ``optim.embedding_rows``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Hashable
from typing import NamedTuple, Protocol

import torch
from torch import nn

from ..distributed import to_device
from ..inference.graphs import StaticInputs, capture

log = logging.getLogger(__name__)

# fn(inputs) -> (loss to back-propagate (), value to return, detached)
StepFn = Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]]
LR_INPUT = "__lr__"  # the graph input that holds a captured update's lrs


class GraphUpdater(Protocol):
    """An optimizer whose update can be captured (e.g. :class:`minbert.training.optim.AdamW`
    fused): ``prepare_graph_update()`` creates the state of the parameters that have a gradient,
    outside the capture; ``graph_update(lrs)`` is the update with group i's lr read from
    ``lrs[i]``, a device tensor, so that the host sets it before each replay."""

    param_groups: list[dict]

    def prepare_graph_update(self) -> None: ...

    def graph_update(self, lrs: torch.Tensor) -> None: ...


def norm_and_clip(params: list[nn.Parameter], max_norm: float | None) -> torch.Tensor:
    """() float32: the global L2 norm of the gradients of ``params`` (those whose ``p.grad`` is
    not None), which are then clipped to ``max_norm`` by ``torch.nn.utils.clip_grad_norm_`` (None:
    the norm only, no pass that scales every gradient by 1); 0 on the parameters' device without
    any gradient. Inside a capture, its kernels become part of the graph (no host sync)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device if params else None)
    if max_norm is None:
        return torch.nn.utils.get_total_norm(grads)
    return torch.nn.utils.clip_grad_norm_(params, max_norm)


class _Graph(NamedTuple):
    graph: torch.cuda.CUDAGraph
    inputs: StaticInputs  # the input tensors the graph reads
    scale: torch.Tensor  # () float32: the loss multiplier (1 / accumulation steps)
    value: torch.Tensor  # the static output the graph writes
    touched: frozenset[int]  # indices of the parameters that get a gradient
    grads: list[torch.Tensor | None] | None  # direct: where the graph writes each gradient
    norm: torch.Tensor | None  # direct with grad_norm: () the gradients' global L2 norm, before clipping


class GraphedSteps:
    """Forward + backward of one batch as CUDA graphs, accumulating into fixed gradient buffers.

    Usage per optimizer step: :meth:`zero_grad`, then :meth:`run` once per batch (task), then
    :meth:`expose_grads`, then clip and ``optimizer.step()`` (with ``updater``: only when
    :attr:`step_updated` is False, i.e. the step ran eagerly).

    Args:
        params: the trainable parameters, all on one CUDA device.
        capture_after: how many eager sightings of a shape come before it is captured (1: the
            second batch of a shape is the first replay; 0: capture at once).
        warmup: eager iterations on the capture stream before the first capture (PyTorch's rule:
            lazily initialised state, such as cuBLAS's workspace for that stream, is not
            captured). Later captures skip them: they reuse that stream, and their own shape has
            run eagerly before (``capture_after``, or the eager run that learns what it touches).
        capture: False never captures: every batch runs eagerly into the flat buffers (any
            device; the flat gradient all-reduce without graphs, ``train.grad_sync=flat``).
        direct: a graph's gradients stay where its backward writes them (see the module
            docstring); then :meth:`run` may be called once per optimizer step.
        grad_norm: with ``direct``, each graph also computes the global L2 norm of the
            gradients it writes and clips them to ``max_norm`` (``torch.nn.utils.clip_grad_norm_``;
            None: the norm only), so that a replayed step hands the optimizer clipped gradients
            and :attr:`step_norm` without launching those kernels one by one (about 0.6 ms of
            host time a step of the default preset).
        max_norm: see ``grad_norm``.
        updater: with ``direct``, the optimizer whose update each graph captures after the
            backward (and the clipping); :meth:`run` then needs ``lrs``. Eager steps (shapes
            not captured yet) leave the update to the caller: see :attr:`step_updated`. The
            graphs hold the optimizer's state tensors: it must keep them (our AdamW's
            ``load_state_dict`` copies into them).

    Raises:
        ValueError: no parameters; parameters on several devices or of several dtypes; with
            ``capture``, a parameter not on a CUDA device.
    """

    def __init__(
        self, params: list[nn.Parameter], capture_after: int = 1, warmup: int = 2, capture: bool = True,
        direct: bool = False, grad_norm: bool = False, max_norm: float | None = None,
        updater: GraphUpdater | None = None,
    ):
        if not params:
            raise ValueError("GraphedSteps needs trainable parameters")
        if capture and any(p.device.type != "cuda" for p in params):
            raise ValueError("CUDA graphs need trainable parameters on a CUDA device")
        if len({p.device for p in params}) > 1 or len({p.dtype for p in params}) > 1:
            raise ValueError("GraphedSteps needs all trainable parameters on one device with one dtype")
        self.params = list(params)
        self.device = self.params[0].device
        self.capture_after, self.warmup = capture_after, warmup
        self.capture, self.direct = capture, direct
        self.grad_norm, self.max_norm = grad_norm and direct, max_norm
        self.updater = updater if direct and capture else None
        self.step_updated = False  # the replayed graph has updated the parameters
        self.step_norm: torch.Tensor | None = None  # the replayed graph's norm (its gradients clipped), else None
        self.pool = torch.cuda.graph_pool_handle() if capture and direct else None
        self.stream = torch.cuda.Stream(self.device) if capture else None  # every warm-up and capture
        self._step_grads: list[torch.Tensor | None] | None = None  # direct: the replayed graph's gradients
        self._step_runs = 0
        # (P,) the flat gradient buffer; self.grads[i] is parameter i's slice, shaped like it
        self.flat = torch.zeros(sum(p.numel() for p in self.params), dtype=self.params[0].dtype, device=self.device)
        offsets = torch.tensor([0] + [p.numel() for p in self.params]).cumsum(0).tolist()
        self.grads = [self.flat[a:b].view_as(p) for a, b, p in zip(offsets, offsets[1:], self.params, strict=False)]
        self._graphs: dict[Hashable, _Graph] = {}
        self._seen: Counter = Counter()
        self._touched_by_key: dict[Hashable, frozenset[int]] = {}
        self._step_touched: set[int] = set()
        self.n_replays = self.n_eager = 0
        self.capture_s = 0.0  # host seconds spent in warm-up + capture
        self._attach()

    def _attach(self) -> None:
        for p, g in zip(self.params, self.grads, strict=True):
            p.grad = g

    @property
    def n_graphs(self) -> int:
        return len(self._graphs)

    def stats(self) -> dict:
        """``{"captured", "capture_s", "replays", "eager"}``: graphs captured, seconds spent
        capturing them (warm-up included), batches replayed and batches run eagerly."""
        return {"captured": self.n_graphs, "capture_s": round(self.capture_s, 2), "replays": self.n_replays,
                "eager": self.n_eager}

    def zero_grad(self) -> None:
        """Zero every gradient buffer (one kernel on the flat buffer) and attach them as
        ``p.grad``; direct: nothing to zero or attach (an eager step zeroes and attaches them
        itself, and :meth:`expose_grads` sets every ``p.grad``)."""
        if not self.direct:
            self.flat.zero_()
            self._attach()
        self._step_touched = set()
        self._step_grads, self._step_runs, self.step_norm = None, 0, None
        self.step_updated = False

    def expose_grads(self) -> None:
        """Before the optimizer: ``p.grad`` is the gradient for parameters that this step's
        batches reached (its buffer, or direct, where the replayed graph wrote it), ``None`` for
        the others (e.g. the heads of tasks not in the step)."""
        grads = self._step_grads if self._step_grads is not None else self.grads
        for i, (p, g) in enumerate(zip(self.params, grads, strict=True)):
            p.grad = g if i in self._step_touched else None

    def run(
        self, key: Hashable, fn: StepFn, inputs: dict[str, torch.Tensor], scale: float = 1.0,
        lrs: list[float] | None = None,
    ) -> torch.Tensor:
        """Forward and backward of ``fn`` on ``inputs`` (host or device tensors), adding
        ``scale`` x the gradient of its loss into the buffers; with ``updater``, a replay also
        updates the parameters with the optimizer's group lrs ``lrs`` (required then). Returns
        ``fn``'s value (a new tensor on the device). ``key`` names ``fn``: batches with the same
        key, input names, shapes and dtypes share a graph.

        Raises:
            RuntimeError: ``direct`` and a second batch in one optimizer step; from the updater,
                its own errors at capture (:meth:`minbert.training.optim.AdamW.graph_update`).
            ValueError: an ``updater`` and no ``lrs``.
        """
        if self.direct:
            if self._step_runs:
                raise RuntimeError("GraphedSteps(direct=True) runs one batch per optimizer step")
            self._step_runs = 1
        if self.updater is not None:
            if lrs is None:
                raise ValueError("GraphedSteps(updater=...) needs this step's lrs")
            inputs = {**inputs, LR_INPUT: torch.tensor(lrs, dtype=torch.float32)}
        full_key = (key, tuple((k, tuple(v.shape), v.dtype) for k, v in inputs.items()))
        graph = self._graphs.get(full_key)
        if graph is None:
            if self._touched_by_key.get(full_key) == frozenset():
                return self._eager(full_key, fn, inputs, scale)  # nothing to train: no graph needed
            if self.capture and self._seen[full_key] >= self.capture_after:
                graph = self._capture(full_key, fn, inputs)
            if graph is None:
                self._seen[full_key] += 1
                return self._eager(full_key, fn, inputs, scale)
        graph.inputs.load(inputs)  # one transfer; the host does not wait for the GPU
        graph.scale.fill_(scale)
        graph.graph.replay()
        self._step_touched |= graph.touched
        self._step_grads, self.step_norm = graph.grads, graph.norm
        self.step_updated = self.updater is not None  # every graph ends with the update then
        self.n_replays += 1
        return graph.value.clone()

    def _eager(self, full_key: Hashable, fn: StepFn, inputs: dict[str, torch.Tensor], scale: float) -> torch.Tensor:
        if self.direct:  # the step's only batch: it alone fills the buffers
            self.flat.zero_()
        for p in self.params:
            p.grad = None  # which parameters this fn reaches is read off the fresh gradients
        inputs = {k: to_device(v, self.device) for k, v in inputs.items() if k != LR_INPUT}
        loss, value = fn(inputs)
        if loss.requires_grad:  # False when no trainable parameter is reached (e.g. a frozen
            (loss * scale).backward()  # encoder under a parameter-free cosine head)
        touched = frozenset(i for i, p in enumerate(self.params) if p.grad is not None)
        if touched:
            idx = sorted(touched)
            torch._foreach_add_([self.grads[i] for i in idx], [self.params[i].grad for i in idx])
        self._attach()
        self._touched_by_key[full_key] = touched
        self._step_touched |= touched
        self.n_eager += 1
        return value.detach()

    def _capture(self, full_key: Hashable, fn: StepFn, inputs: dict[str, torch.Tensor]) -> _Graph | None:
        t0 = time.perf_counter()
        try:
            return self._warm_up_and_capture(full_key, fn, inputs)
        finally:
            self.capture_s += time.perf_counter() - t0

    def _warm_up_and_capture(self, full_key: Hashable, fn: StepFn, inputs: dict[str, torch.Tensor]) -> _Graph | None:
        if full_key not in self._touched_by_key:  # capture_after=0: learn it from one eager run
            saved = self.flat.clone()
            step_touched = set(self._step_touched)
            self._eager(full_key, fn, inputs, 1.0)
            self.n_eager -= 1
            self._step_touched = step_touched
            self.flat.copy_(saved)
            if not self._touched_by_key[full_key]:
                return None
        saved = self.flat.clone()  # warm-up adds into the buffers: restored below
        static_inputs = StaticInputs(inputs, self.device)
        static = {k: v for k, v in static_inputs.tensors.items() if k != LR_INPUT}
        scale = torch.ones((), device=self.device)
        side = self.stream
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(0 if self._graphs else self.warmup):
                loss, _ = fn(static)
                (loss * scale).backward()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self._attach()
        if self.updater is not None:  # the state of what the graph updates, created outside it
            touched = self._touched_by_key[full_key]
            for i, p in enumerate(self.params):
                p.grad = self.grads[i] if i in touched else None
            self.updater.prepare_graph_update()
        if self.direct:  # the backward in the graph writes fresh gradients, in the shared pool
            for p in self.params:
                p.grad = None
        graph = torch.cuda.CUDAGraph()
        with capture(graph, side, self.pool):  # on the warm-up's stream
            loss, value = fn(static)
            (loss * scale).backward()
            norm = norm_and_clip(self.params, self.max_norm) if self.grad_norm else None
            rows = getattr(self.updater, "rows", None)  # an embedding whose gradient is not in .grad
            if norm is not None and rows is not None:
                norm = rows.norm_with(norm)
            if self.updater is not None:
                self.updater.graph_update(static_inputs.tensors[LR_INPUT])
        grads = [p.grad for p in self.params] if self.direct else None
        self.flat.copy_(saved)
        self._attach()
        g = _Graph(graph, static_inputs, scale, value.detach(), self._touched_by_key[full_key], grads, norm)
        self._graphs[full_key] = g
        log.debug("captured CUDA graph %d for %s", len(self._graphs), full_key)
        return g
