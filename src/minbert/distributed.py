"""Data-parallel training over several processes with ``torch.distributed`` (launched by
``torchrun``): NCCL on CUDA, Gloo on CPU.

    torchrun --nproc-per-node 2 -m minbert train --config configs/default.yaml

Semantics (each a plain function of the rank and world size, so one GPU and N GPUs agree):

* every task stream yields *global* batches of ``world_size x tasks.<t>.batch_size`` rows, with the
  same shuffling, bucketing and cycling as one process with that batch size; rank r trains on
  the r-th contiguous slice (:func:`shard`). With equal slices, the all-reduced (averaged)
  gradient equals the gradient of one process on the whole global batch;
* gradients are all-reduced once per optimizer step, covering the summed losses of all tasks of
  that step: by ``DistributedDataParallel`` (``train.grad_sync=ddp``; one forward call computes
  every task's loss), or, with CUDA graphs (``flat``), by one ``all_reduce`` of the flat buffer
  that holds every gradient (:class:`minbert.training.cudagraph.GraphedSteps`), after the step's
  backward passes;
* evaluation runs rank r on eval batches r, r + N, ... and gathers the outputs, so each id is
  counted exactly once;
* only rank 0 writes logs, checkpoints, metrics and predictions.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
import torch.distributed as dist

from .errors import ConfigError

_T = TypeVar("_T")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str = "auto") -> DistContext:
    """Join the process group that ``torchrun`` describes in the environment (``WORLD_SIZE``,
    ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``); a single process returns rank 0
    of 1. Uses NCCL when training on CUDA, Gloo otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        if use_cuda:  # naming the device binds the NCCL communicator to it (no guessing by rank)
            dist.init_process_group("nccl", device_id=torch.device("cuda", local))
        else:
            dist.init_process_group("gloo")
    return DistContext(rank, world, local)


def shard(index: np.ndarray, ctx: DistContext) -> np.ndarray:
    """This rank's rows of a global batch: the ``rank``-th of ``world_size`` contiguous slices
    (sizes differ by at most one). A global batch with fewer rows than ranks is first extended
    by repeating its rows, so no rank gets an empty batch."""
    if not ctx.enabled:
        return index
    if len(index) < ctx.world_size:
        index = np.resize(index, ctx.world_size)
    return np.array_split(index, ctx.world_size)[ctx.rank]


def all_gather_objects(obj: object, ctx: DistContext) -> list:
    """Every rank's ``obj`` (pickled through ``torch.distributed.all_gather_object``)."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """The mean of ``t`` over ranks (in place)."""
    if ctx.enabled:
        dist.all_reduce(t)
        t /= ctx.world_size
    return t


def broadcast_tensors(tensors: list[torch.Tensor], ctx: DistContext) -> None:
    """Overwrite ``tensors`` (in place) with rank 0's values."""
    if ctx.enabled:
        for t in tensors:
            dist.broadcast(t, src=0)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def broadcast_object(obj: _T, ctx: DistContext) -> _T:
    """Rank 0's ``obj`` on every rank."""
    if not ctx.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device {name!r}: CUDA is not available on this machine")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ConfigError(f"train.device {name!r} is not a device name (auto, cpu, cuda, cuda:N)") from None


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device`` without blocking the host. A copy from pageable host memory to a CUDA
    device first waits for the device's stream (CUDA Runtime API, "API synchronization
    behavior"), so that the host could not prepare the next batch while the GPU runs this one; a
    host tensor bound for CUDA is therefore staged in pinned memory (PyTorch's caching host
    allocator keeps it alive until the copy is done)."""
    if device.type == "cuda" and t.device.type == "cpu":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)
