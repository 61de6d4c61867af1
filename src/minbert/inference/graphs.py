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
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Hashable
from typing import NamedTuple

import torch

from ..distributed import to_device

log = logging.getLogger(__name__)

EVAL_PAD_MULTIPLE = 32  # evaluation rows are padded to a multiple of this many tokens when graphed
EVAL_SMALLEST_BUCKET = 64  # the smallest pack bucket (tokens) of a graphed evaluation batch

# fn(inputs on the device) -> the output tensor
ForwardFn = Callable[[dict[str, torch.Tensor]], torch.Tensor]


class _Graph(NamedTuple):
    graph: torch.cuda.CUDAGraph
    inputs: dict[str, torch.Tensor]  # the static input tensors the graph reads
    output: torch.Tensor  # the static output the graph writes


class GraphedForward:
    """Replays an inference function as CUDA graphs, one per key and input shapes.

    Args:
        device: the CUDA device the inputs go to.
        capture_after: eager calls of a shape before it is captured (1: the second call of a
            shape is its first replay).

    Raises:
        ValueError: ``device`` is not a CUDA device.
    """

    def __init__(self, device: torch.device, capture_after: int = 1):
        if device.type != "cuda":
            raise ValueError(f"CUDA graphs need a CUDA device, got {device}")
        self.device, self.capture_after = device, capture_after
        self.pool = torch.cuda.graph_pool_handle()
        self._graphs: dict[Hashable, _Graph] = {}
        self._seen: Counter = Counter()
        self.n_replays = self.n_eager = 0
        self.capture_s = 0.0

    def stats(self) -> dict:
        """``{"captured", "capture_s", "replays", "eager"}``."""
        return {"captured": len(self._graphs), "capture_s": round(self.capture_s, 2), "replays": self.n_replays,
                "eager": self.n_eager}

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
        for name, t in inputs.items():  # via pinned memory: the host does not wait for the GPU
            graph.inputs[name].copy_(t.pin_memory() if t.device.type == "cpu" else t, non_blocking=True)
        graph.graph.replay()
        self.n_replays += 1
        return graph.output.clone()

    def _capture(self, full_key: Hashable, fn: ForwardFn, inputs: dict[str, torch.Tensor]) -> _Graph:
        t0 = time.perf_counter()
        static = {k: v.to(self.device, copy=True) for k, v in inputs.items()}
        side = torch.cuda.Stream(self.device)  # one warm-up call off the capture (PyTorch's rule)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            fn(static)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            output = fn(static)
        g = _Graph(graph, static, output)
        self._graphs[full_key] = g
        self.capture_s += time.perf_counter() - t0
        log.debug("captured evaluation graph %d for %s", len(self._graphs), full_key)
        return g
