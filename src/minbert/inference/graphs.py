"""CUDA graphs of the evaluation forward: one graph per recurring batch shape.

Dev evaluation runs the same batches after every epoch. Packed (``model.packing``), one batch of
a few thousand tokens is a hundred or so small kernels, and launching them one by one takes the
host longer than the GPU takes to run them. A CUDA graph records the kernels of one batch's
forward once and replays them with one launch (NVIDIA, CUDA C++ Programming Guide, "CUDA Graphs";
PyTorch ``torch.cuda.graph``). Batches come in few shapes because the evaluation pads rows to a
multiple of :data:`EVAL_PAD_MULTIPLE` tokens and rounds each pack up to a token bucket
(:func:`minbert.model.packing.token_bucket`); a shape is captured the second time it is seen.

All graphs share one memory pool. That is safe here because each replay's output is copied out
before the next replay, every graph reads its inputs from its own tensors outside the pool, and
the graphs run one after another on one stream. The weights are read where they are, so a graph
sees every in-place update of the parameters (training steps, loaded best weights).

With ``bf16_weights`` the graphs run a copy of the model whose encoder holds bf16 weights and runs
without autocast (:func:`bf16_copy`), refreshed from the model's weights before each split
(:meth:`GraphedForward.runner`). Under autocast the same forward casts every weight to bf16 at
every call, runs LayerNorm in fp32 and keeps the residual stream in fp32, and these casts, fp32
LayerNorms and fp32 adds took about a third of the kernel time of a packed evaluation pass. The
heads keep their fp32 weights and get the encoder's states as float32, as under autocast.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterator
from itertools import chain
from typing import NamedTuple

import torch
from torch import nn

from ..distributed import to_device

log = logging.getLogger(__name__)

EVAL_PAD_MULTIPLE = 32  # evaluation rows are padded to a multiple of this many tokens when graphed
EVAL_SMALLEST_BUCKET = 64  # the smallest pack bucket (tokens) of a graphed evaluation batch

# fn(inputs on the device) -> the output tensor
ForwardFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]


@contextlib.contextmanager
def capture(graph: torch.cuda.CUDAGraph, stream: torch.cuda.Stream, pool: tuple | None = None) -> Iterator[None]:
    """Capture the CUDA work of the ``with`` block into ``graph`` on ``stream`` (in the memory
    ``pool``, a :func:`torch.cuda.graph_pool_handle`): ``torch.cuda.graph``, whose every capture
    hands each free block of the caching allocators, device and pinned host memory, back to the
    driver (``torch.cuda.empty_cache()``, ``torch._C._host_emptyCache()``), after which the steps
    allocate them again through synchronous driver calls; a run captures a graph per token
    bucket, tens of them. Here the pinned host blocks stay, and the device blocks stay while the
    device has a quarter of its memory free and more free than cached: a capture cannot return
    cached blocks to the driver when it runs short, so where memory is tight they go first, as
    there. The device is synchronised first, as there.
    Graphs that share a ``pool`` must be captured on one ``stream``: the caching allocator reuses
    a block only on the stream that allocated it, so a new stream per capture would give every
    graph memory of its own.

    Raises:
        RuntimeError: what ``CUDAGraph.capture_begin`` / ``capture_end`` raise (work that cannot
            be captured).
    """
    device = stream.device
    torch.cuda.synchronize(device)
    free, total = torch.cuda.mem_get_info(device)
    if free < max(torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device), total // 4):
        torch.cuda.empty_cache()
    with torch.cuda.stream(stream):
        graph.capture_begin(pool=pool)
        try:
            yield
        finally:
            graph.capture_end()


class StaticInputs:
    """The input tensors that a graph reads, as views of one device buffer, so that a replay's
    host inputs reach the device in one transfer: they are gathered (one ``torch.cat``) into one
    pinned buffer from PyTorch's caching host allocator, which reuses a block only once the copy
    that reads it has run, and copied without making the host wait (``non_blocking``). A replay
    of a packed training step reads about 20 small tensors, and a pinned copy plus a transfer
    each cost the host more time than the GPU spends on them.

    Each tensor starts at a multiple of :data:`ALIGN` bytes, as a tensor of its own would: Triton
    specialises a kernel on whether its pointers are 16-byte aligned, and the kernels compiled
    ahead (:mod:`minbert.training.kernel_compile`) assume they are.

    Args:
        inputs: name -> tensor (any device): the names, shapes, dtypes and first values.
        device: where the buffer lives.
    """

    ALIGN = 16

    def __init__(self, inputs: dict[str, torch.Tensor], device: torch.device):
        self.names = list(inputs)
        self.tensors: dict[str, torch.Tensor] = {}
        gaps: list[int] = []  # the zero bytes after each tensor, up to the next aligned start
        offsets, n = [], 0
        for t in inputs.values():
            size = t.numel() * t.element_size()
            offsets.append(n)
            gaps.append(-size % self.ALIGN)
            n += size + gaps[-1]
        self.buffer = torch.empty(n, dtype=torch.uint8, device=device)  # (bytes,)
        for k, t, a in zip(self.names, inputs.values(), offsets, strict=True):
            self.tensors[k] = self.buffer[a : a + t.numel() * t.element_size()].view(t.dtype).view(t.shape)
        zeros = torch.zeros(self.ALIGN, dtype=torch.uint8)
        self._gaps = [zeros[:g] if g else None for g in gaps]
        self.load(inputs)

    def load(self, inputs: dict[str, torch.Tensor]) -> None:
        """Copy ``inputs`` into the tensors: host tensors in one transfer through a pinned
        buffer, device tensors each by itself. They must have the names, shapes and dtypes given
        at construction (the graphs key on them; not checked here, on the host's hot path)."""
        if any(t.device.type != "cpu" for t in inputs.values()):
            for k, t in inputs.items():
                self.tensors[k].copy_(t, non_blocking=True)
            return
        if not self.buffer.numel():
            return
        parts = []
        for k, gap in zip(self.names, self._gaps, strict=True):
            parts.append(inputs[k].reshape(-1).contiguous().view(torch.uint8))
            if gap is not None:
                parts.append(gap)
        pinned = torch.empty(self.buffer.numel(), dtype=torch.uint8, pin_memory=self.buffer.is_cuda)
        torch.cat(parts, out=pinned)
        self.buffer.copy_(pinned, non_blocking=True)


class _Graph(NamedTuple):
    graph: torch.cuda.CUDAGraph
    inputs: StaticInputs  # the input tensors the graph reads
    output: torch.Tensor  # the static output the graph writes


class GraphedForward:
    """Replays an inference function as CUDA graphs, one per key and input shapes.

    Args:
        device: the CUDA device the inputs go to.
        capture_after: eager calls of a shape before it is captured (1: the second call of a
            shape is its first replay).
        bf16_weights: :meth:`runner` gives a bf16-weight copy of the model (:func:`bf16_copy`);
            for models evaluated under bf16 autocast.

    Raises:
        ValueError: ``device`` is not a CUDA device.
    """

    def __init__(self, device: torch.device, capture_after: int = 1, bf16_weights: bool = False):
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, got {device}")
        self.device, self.capture_after, self.bf16_weights = device, capture_after, bf16_weights
        self._copy: tuple[nn.Module, nn.Module] | None = None  # bf16_weights: (source model, its copy)
        self.pool = torch.cuda.graph_pool_handle()
        self.stream = torch.cuda.Stream(device)  # every warm-up and capture
        self._graphs: dict[Hashable, _Graph] = {}
        self._seen: Counter = Counter()
        self.n_replays = self.n_eager = 0
        self.capture_s = 0.0

    def stats(self) -> dict:
        """``{"captured", "capture_s", "replays", "eager"}``."""
        return {"captured": len(self._graphs), "capture_s": round(self.capture_s, 2), "replays": self.n_replays,
                "eager": self.n_eager}

    def runner(self, model: nn.Module) -> nn.Module:
        """The module the graphs' functions should run for ``model``: ``model`` itself, or with
        ``bf16_weights`` its bf16 copy, made at the first call and refreshed from ``model``'s
        current weights at every call (one cast-and-copy pass; the graphs read the copy's
        weights where they are). Call once per split, before running its batches. A model that
        :func:`bf16_copy` cannot copy is run itself, with one log line saying why.

        Raises:
            ValueError: with ``bf16_weights``, a different model than at the first call (the
                graphs were captured on the first model's copy).
        """
        if not self.bf16_weights:
            return model
        if self._copy is None:
            try:
                self._copy = (model, bf16_copy(model))
            except ValueError as e:
                log.info("graphed evaluation runs the model under autocast, not a bf16 copy: %s", e)
                self.bf16_weights = False
                return model
        source, shadow = self._copy
        if source is not model:
            raise ValueError("GraphedForward(bf16_weights=True) serves the one model it was first given")
        refresh_copy(shadow, model)
        return shadow

    def __call__(self, key: Hashable, fn: ForwardFn, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """``fn(inputs)`` with ``inputs`` (host or device tensors) on the device, replayed from a
        graph once this key and these shapes have been seen ``capture_after`` times. Returns a
        new tensor on the device (call under ``torch.inference_mode``)."""
        full_key = (key, tuple((k, tuple(v.shape), v.dtype) for k, v in inputs.items()))
        graph = self._graphs.get(full_key)
        if graph is None:
            if self._seen[full_key] < self.capture_after:
                self._seen[full_key] += 1
                self.n_eager += 1
                return fn({k: to_device(v, self.device) for k, v in inputs.items()})
            graph = self._capture(full_key, fn, inputs)
        graph.inputs.load(inputs)
        graph.graph.replay()
        self.n_replays += 1
        return graph.output.clone()

    def _capture(self, full_key: Hashable, fn: ForwardFn, inputs: dict[str, torch.Tensor]) -> _Graph:
        t0 = time.perf_counter()
        static = StaticInputs(inputs, self.device)
        side = self.stream  # one warm-up call off the capture (PyTorch's rule)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            fn(static.tensors)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with capture(graph, side, self.pool):  # on the warm-up's stream
            output = fn(static.tensors)
        g = _Graph(graph, static, output)
        self._graphs[full_key] = g
        self.capture_s += time.perf_counter() - t0
        log.debug("captured evaluation graph %d for %s", len(self._graphs), full_key)
        return g


class Bf16Encoder(nn.Module):
    """An encoder with bf16 weights that runs without autocast and returns float32 states, as
    the autocast encoder does (its last LayerNorm runs in fp32 there). Wraps a
    :class:`minbert.model.bert.BertModel` (``inner``) with both of its forwards."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.inner = encoder.to(torch.bfloat16)
        self.config = encoder.config

    def forward(self, *args, **kwargs):  # noqa: ANN002, ANN003, ANN201  (BertModel.forward's)
        return self._float_outputs(self.inner, *args, **kwargs)

    def forward_packed(self, packed):  # noqa: ANN001, ANN201  (BertModel.forward_packed's)
        return self._float_outputs(self.inner.forward_packed, packed)

    def _float_outputs(self, fn, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        with torch.autocast(self.inner.embeddings.word_embeddings.weight.device.type, enabled=False):
            out = fn(*args, **kwargs)
        return type(out)(*(t.float() for t in out))


def bf16_copy(model: nn.Module) -> nn.Module:
    """A copy of a :class:`minbert.model.multitask.MultitaskModel` for inference whose
    ``encoder`` is a :class:`Bf16Encoder` (bf16 weights, no autocast inside); the heads keep
    fp32 weights. No gradients are tracked. Its ``eval_graphs`` is None.

    The copy holds the model's current weights (the encoder's cast to bf16); it is made outside
    inference mode (even when called inside it), so that :func:`refresh_copy` can update it anywhere.

    Raises:
        ValueError: the encoder was compiled in place (``train.compile``): the copy would keep
            calling the compiled original; or a head shares a parameter with the encoder (it
            would turn bf16 in the head too).
    """
    encoder = model.encoder
    if "forward_packed" in vars(encoder) or "forward" in vars(encoder) or hasattr(encoder, "_orig_mod"):
        raise ValueError("bf16_copy needs an encoder that was not compiled in place")
    in_encoder = {id(p) for p in encoder.parameters()}
    outside = (p for n, p in model.named_parameters(remove_duplicate=False) if not n.startswith("encoder."))
    if any(id(p) in in_encoder for p in outside):
        raise ValueError("bf16_copy needs heads that share no parameter with the encoder")
    memo = {id(getattr(model, "eval_graphs", None)): None}
    with torch.inference_mode(False), torch.no_grad():
        shadow = copy.deepcopy(model, memo)
        shadow.encoder = Bf16Encoder(shadow.encoder)
        shadow.eval().requires_grad_(False)
    return shadow


def _float_tensors(module: nn.Module) -> tuple[list[str], list[torch.Tensor]]:
    """Names (a :class:`Bf16Encoder`'s ``encoder.inner.`` read as ``encoder.``) and tensors of
    ``module``'s floating-point parameters and buffers, in registration order."""
    named = [(n, t) for n, t in chain(module.named_parameters(), module.named_buffers()) if t.is_floating_point()]
    names = ["encoder." + n[len("encoder.inner."):] if n.startswith("encoder.inner.") else n for n, _ in named]
    return names, [t for _, t in named]


@torch.no_grad()
def refresh_copy(shadow: nn.Module, model: nn.Module) -> None:
    """Copy ``model``'s floating-point parameters and buffers into ``shadow``'s (same modules in
    the same order, as :func:`bf16_copy` makes them), cast to each of ``shadow``'s dtypes.

    Raises:
        ValueError: the two hold different names or shapes of tensors.
    """
    model.state_dict()  # what brings lazily updated weights up before they are read (optim.embedding_rows)
    (dst_names, dst), (src_names, src) = _float_tensors(shadow), _float_tensors(model)
    if dst_names != src_names or any(d.shape != s.shape for d, s in zip(dst, src, strict=True)):
        raise ValueError("the copy's tensors do not match the model's")
    torch._foreach_copy_(dst, [s.detach() for s in src])
