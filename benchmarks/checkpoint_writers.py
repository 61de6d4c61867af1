"""How much each way of writing a checkpoint holds the interpreter: a second thread counts in a
loop while one writer runs, and its rate is compared with its rate alone. A writer that holds
the interpreter while it copies slows a training loop on the main thread the same way (the
background checkpoint writes of ``minbert.training.checkpoint.BackgroundWriter``).

Writers, on ``--mb`` MiB of float32 tensors of 4 MiB each:
  safetensors-bytes   ``safetensors.torch.save`` (bytes in memory, then written)
  safetensors-file    ``safetensors.torch.save_file`` (what ``minbert.io.save_weights`` uses,
                      inside the private folder of ``minbert.io.atomic_write_file``)
  torch-bytesio       ``torch.save`` into an ``io.BytesIO``, then written
  torch-file          ``torch.save`` to a path (a failed write is a RuntimeError without errno)
  torch-fileobj       ``torch.save`` into a Python file object (``minbert.training.checkpoint.
                      torch_save_file``: how ``train_state.pt`` is written)

    python benchmarks/checkpoint_writers.py --mb 360 --out reports/bench/s12/checkpoint_writers-cpu.json
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from safetensors.torch import save, save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from bench_io import emit, machine  # noqa: E402
from minbert.training.checkpoint import torch_save_file  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=int, default=360)
    ap.add_argument("--out")
    args = ap.parse_args()
    tensors = {f"w{i}": torch.randn(1024, 1024) for i in range(args.mb // 4)}
    folder = Path(tempfile.mkdtemp(prefix="writers-"))
    writers = {
        "safetensors-bytes": lambda: (folder / "a.st").write_bytes(save(tensors)),
        "safetensors-file": lambda: save_file(tensors, folder / "b.st"),
        "torch-bytesio": lambda: (folder / "c.pt").write_bytes(_torch_bytes(tensors)),
        "torch-file": lambda: torch.save(tensors, folder / "d.pt"),
        "torch-fileobj": lambda: torch_save_file(tensors, folder / "e.pt"),
    }
    count, stop = [0], threading.Event()

    def spin() -> None:
        while not stop.is_set():
            count[0] += 1

    thread = threading.Thread(target=spin, daemon=True)
    thread.start()
    time.sleep(0.2)
    c0, t0 = count[0], time.perf_counter()
    time.sleep(0.5)
    free_rate = (count[0] - c0) / (time.perf_counter() - t0)
    results = {}
    for name, write in writers.items():
        c0, t0 = count[0], time.perf_counter()
        write()
        seconds = time.perf_counter() - t0
        results[name] = {"seconds": round(seconds, 3),
                         "other_thread_rate": round((count[0] - c0) / seconds / free_rate, 3)}
    stop.set()
    emit({"machine": machine(), "mib": args.mb, "writers": results}, args.out)


def _torch_bytes(tensors: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(tensors, buf)
    return buf.getvalue()


if __name__ == "__main__":
    main()
