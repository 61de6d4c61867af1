"""Compiling our Triton attention kernel in child processes while a run starts.

Triton compiles a kernel at its first launch, in Python: about 2 to 4 s of a first run's epoch 1
(``docs/performance.md``). Where training may launch our kernel (packed ``sdpa`` attention on
CUDA), :func:`start_kernel_compile` starts three children that run
:mod:`minbert.model.varlen_triton` as a script, one for each of its kernels (forward, the
backward's dq, the backward's dk and dv), since a process compiles one kernel after the other.
Each child reads the encoder's ``config.json`` with the run's overrides, decides as the model
will (:func:`minbert.model.varlen_triton.compile_for_encoder`: no CUDA device, no attention
dropout, another kernel: it exits at once) and fills Triton's on-disk cache, where the
run's first launch then finds the kernels. :func:`wait_kernel_compile` waits for them before the
first step. A child that fails costs nothing but its time: the run compiles the kernels itself.

This module imports no torch, so that ``minbert train`` can start the children before it imports
torch itself (:func:`start_early`): the children's own start then overlaps the run's imports.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

from ..config import Config, encoder_overrides, runtime_settings
from ..errors import ConfigError
from .children import end_child, last_error_line

log = logging.getLogger(__name__)

CHILD_MODULE = "minbert.model.varlen_triton"


def child_args(cfg: Config, device_type: str, world_size: int = 1) -> list[list[str]]:
    """The children's command lines (parts forward, backward-dq, backward-dkdv: one kernel each)
    for a run of ``cfg`` on ``device_type``, or none where training never launches our kernel:
    not CUDA, padded (``model.packing``), or not ``sdpa`` attention. What the encoder decides
    (dropout, head size, ``varlen_kernel``) the children decide themselves. Raises ConfigError as
    :func:`minbert.config.runtime_settings`."""
    if device_type != "cuda" or cfg.model.attn_implementation != "sdpa":
        return []
    rt = runtime_settings(cfg, device_type, world_size)
    if not rt.pack_multiple:
        return []
    dtype = "bfloat16" if rt.amp else "float16"
    base = [sys.executable, "-m", CHILD_MODULE, str(cfg.model.encoder), json.dumps(encoder_overrides(cfg)), dtype]
    return [[*base, part] for part in ("forward", "backward-dq", "backward-dkdv")]


def start_kernel_compile(cfg: Config, device_type: str, world_size: int = 1,
                         local_rank: int = 0) -> list[subprocess.Popen]:
    """Start the children of :func:`child_args` on a machine's first process (``local_rank`` 0:
    one cache per machine); none where a child cannot start (the run then compiles the kernel
    at its first launch, as without them). Pass the result to :func:`wait_kernel_compile`."""
    children = []
    if local_rank != 0:
        return children
    try:
        for args in child_args(cfg, device_type, world_size):
            children.append(subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
    except OSError as e:
        log.debug("no background compile of the attention kernel: %s", e)
    return children


def start_early(cfg: Config) -> list[subprocess.Popen] | None:
    """:func:`start_kernel_compile` before the device is known (``minbert train``, before it
    imports torch): on CUDA where ``train.device`` names it or, with ``auto``, where an NVIDIA
    driver is loaded (:func:`nvidia_driver_loaded`); under torchrun on local rank 0 only (one
    cache per machine). A guess that is wrong costs only the children's time: without a CUDA
    device they exit at once. None where it started none: the run then decides on its device.
    Stop them with :func:`stop_kernel_compile` where the run does not get to wait for them."""
    device, env = cfg.train.device, os.environ
    if device == "cpu" or (device == "auto" and not nvidia_driver_loaded()):
        return None
    try:
        started = start_kernel_compile(cfg, "cuda", int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))
    except (ConfigError, ValueError):  # the run reports a bad setting (or torchrun's environment) itself
        return None
    return started or None


def nvidia_driver_loaded(proc: Path = Path("/proc/driver/nvidia/version")) -> bool:
    """Whether this (Linux) machine has the NVIDIA kernel driver loaded, without importing torch."""
    return proc.is_file()


def stop_kernel_compile(children: list[subprocess.Popen] | None) -> None:
    """Kill the children that still run (a run that failed before it waited for them)."""
    for proc in children or []:
        end_child(proc)


def wait_kernel_compile(children: list[subprocess.Popen], timeout_s: float = 300.0) -> float:
    """Wait for the children (killed after ``timeout_s``); a failed child costs nothing but its
    time: the first launch then compiles its kernels in this process. Returns the seconds waited
    (rounded to 0.01 s)."""
    t0 = time.perf_counter()
    for proc in children:
        try:
            _, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode:
            log.debug("a background compile of the attention kernel failed (%s): %s", proc.returncode,
                      last_error_line(err))
    return round(time.perf_counter() - t0, 2)
