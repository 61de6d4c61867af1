"""Shared by the benchmark scripts: the machine description and the JSON output."""

from __future__ import annotations

import json
import platform
import statistics
from pathlib import Path

import torch


def machine() -> dict:
    """``{"gpu", "torch", "cpu"}`` of this process's machine (gpu None without CUDA)."""
    return {
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(),
    }


def emit(result: dict, out: str | None) -> None:
    """Print the result as indented JSON and, with ``out``, write it there too."""
    text = json.dumps(result, indent=2)
    print(text)
    if out:
        Path(out).write_text(text + "\n")


def replay_us(graph: torch.cuda.CUDAGraph, replays: int, warmup: int = 20) -> float:
    """Microseconds per replay of a captured CUDA graph: ``warmup`` replays, then ``replays``
    timed between two CUDA events."""
    for _ in range(warmup):
        graph.replay()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) * 1e3 / replays


def time_us(fn, iters: int, repeats: int, warmup: int = 0) -> float:
    """GPU microseconds per call: ``fn`` captured once as a CUDA graph (so that host launch time
    does not count), replayed ``iters`` times after ``warmup`` untimed replays; the median over
    ``repeats`` such timings."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return round(statistics.median(replay_us(g, iters, warmup=warmup) for _ in range(repeats)), 2)
