"""Build reports/distributed.json from the run summaries in reports/bench/distributed/.

Each record is one `minbert train --config configs/default.yaml` run (single process, or
`torchrun --standalone --nproc-per-node 2`), read from its summary.json: samples/s over the
training time (evaluation excluded; includes epoch 1's CUDA-graph captures), the gradient sync
and graph mode, and the dev scores where the run trained the real encoder to the end (the
bert-base-sized runs are random weights, throughput only). Scaling = 2-GPU samples/s over 1-GPU
samples/s of the same config and step mode.

    python benchmarks/collect_distributed.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_io import emit  # noqa: E402

REPORTS = Path(__file__).resolve().parents[1] / "reports"
RUNS = REPORTS / "bench" / "distributed"

# (summary file, what the run was); the earlier version's runs (s2) stay for the record
MANIFEST = [
    ("minilm-1gpu-graphs-s3-summary.json", "this version"),
    ("minilm-2gpu-graphs-s3-summary.json", "this version"),
    ("bert-1gpu-graphs-s3-summary.json", "this version"),
    ("bert-2gpu-graphs-s3-summary.json", "this version"),
    ("bert-2gpu-ddp-s3-summary.json", "this version"),
    ("minilm-1gpu-graphs-summary.json", "earlier version, s2"),
    ("bert-1gpu-eager-summary.json", "earlier version, s2"),
    ("bert-1gpu-graphs-summary.json", "earlier version, s2"),
    ("bert-2gpu-summary.json", "earlier version, s2 (DDP before static-graph mode)"),
]


STATUS_PARTIAL = (
    "partial: only the earlier version's runs (s2) (DDP op by op without static-graph mode; the MiniLM 2-GPU "
    "full run was cut by its time limit at epoch 6, dev overall 0.642 then, so it is not listed). This version's "
    "2-GPU runs (CUDA graphs with the flat gradient all-reduce, reports/bench/device-scripts/s3-call4.sh) have not "
    "run: no 2-GPU machine was available for the s3 calls"
)


def record(path: Path, version: str) -> dict:
    s = json.loads(path.read_text())
    cfg, tp = s["config"], s["throughput"]
    gpus = tp.get("processes", 1)
    graphs = bool(tp.get("cuda_graphs"))
    sync = tp.get("grad_sync") or ("ddp" if gpus > 1 else None)
    step = "CUDA graphs" if graphs else "op by op"
    mode = f"single process, {step}" if gpus == 1 else f"torchrun {gpus} processes (NCCL), {step}, gradient sync {sync}"
    random_weights = "random" in cfg["model"]["encoder"]
    finished = cfg["train"]["max_steps"] is None and s.get("epochs_run") == cfg["train"]["epochs"]
    return {
        "preset": "configs/default.yaml",
        "config": "bert-base" if random_weights else "minilm-l6",
        "gpus": gpus,
        "per_gpu_batch": cfg["tasks"]["sst"]["batch_size"],
        "samples_per_s": tp["samples_per_s"],
        "dev": (
            None if random_weights or not finished
            else {k: s["dev"][k] for k in ("sst_acc", "qqp_acc", "sts_pearson", "overall")}
        ),
        "mode": mode,
        "cuda_graphs": graphs,
        "grad_sync": sync,
        "steps": s["steps"],
        "train_s": round(tp["train_s"], 1),
        "version": version,
        "run": str(path.relative_to(REPORTS.parent)),
    }


def main() -> None:
    records = [record(RUNS / f, v) for f, v in MANIFEST if (RUNS / f).is_file()]
    scaling = []
    for r2 in records:
        if r2["gpus"] < 2:
            continue
        for r1 in records:
            same = r1["config"] == r2["config"] and r1["cuda_graphs"] == r2["cuda_graphs"]
            if r1["gpus"] == 1 and same and r1["version"].split(" (")[0] == r2["version"].split(" (")[0]:
                speedup = r2["samples_per_s"] / r1["samples_per_s"]
                scaling.append({
                    "config": r2["config"], "version": r2["version"], "cuda_graphs": r2["cuda_graphs"],
                    "grad_sync": r2["grad_sync"],
                    "gpus": r2["gpus"], "speedup": round(speedup, 2), "efficiency": round(speedup / r2["gpus"], 2),
                })
    have_current = any(r["version"] == "this version" and r["gpus"] > 1 for r in records)
    out = {
        "machine": "nvidia-h200-x2: 2x NVIDIA H200 (NVLink), torch 2.11.0+cu130, NCCL_NVLS_ENABLE=0",
        "status": "complete" if have_current else STATUS_PARTIAL,
        "target": {"config": "bert-base", "gpus": 2, "speedup": 1.8},
        "scaling": scaling,
        "records": records,
    }
    emit(out, str(REPORTS / "distributed.json"))


if __name__ == "__main__":
    main()
