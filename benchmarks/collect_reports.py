"""Merge the raw benchmark outputs in reports/bench/ into reports/encoder_throughput.json and the
``train_step``/``e2e`` parts of reports/speed.json (the ``cpu_predict`` part is written by
benchmarks/cpu_predict.py). Prints the batch-32 ratios ours / faster peer.

    python benchmarks/collect_reports.py
"""

from __future__ import annotations

import json
from pathlib import Path

REPORTS = Path(__file__).resolve().parents[1] / "reports"
BENCH = REPORTS / "bench"


def load_records() -> tuple[dict, list[dict]]:
    machine, records = {}, []
    mini = json.loads((BENCH / "minilm-l6-b8-b32-b128.json").read_text())
    machine = mini["machine"]
    records += mini["records"]
    records += [json.loads(line) for line in (BENCH / "bert-base-b8-b32.jsonl").read_text().splitlines() if line.strip()]
    records += json.loads((BENCH / "bert-base-b128.json").read_text())["records"]
    return machine, records


def main() -> None:
    machine, records = load_records()
    keys = ("config", "batch", "impl", "samples_per_s", "real_tokens_per_s", "peak_mem_gib")
    enc = {
        "machine": {"gpu": machine["gpu"], "torch": machine["torch"]},
        "note": "impl 'minbert' is our encoder in eager PyTorch; 'minbert-compile' is the same module after "
        "Module.compile(dynamic=True) (train.compile=on). bf16 autocast, fused torch AdamW, real SST batches.",
        "records": [{k: r[k] for k in keys} for r in records if r["batch"] == 32],
    }
    (REPORTS / "encoder_throughput.json").write_text(json.dumps(enc, indent=2) + "\n")

    speed_path = REPORTS / "speed.json"
    speed = json.loads(speed_path.read_text()) if speed_path.is_file() else {}
    speed["machine"] = {**speed.get("machine", {}), "gpu": machine["gpu"], "torch": machine["torch"]}
    speed["train_step"] = [{k: r[k] for k in (*keys, "mfu")} for r in records]
    main_run = json.loads((REPORTS / "main_run" / "summary.json").read_text())
    comp = json.loads((BENCH / "e2e-compile-seed0-summary.json").read_text())
    speed["e2e"] = {
        "preset": "configs/default.yaml",
        "wall_s_before": main_run["wall_s"],
        "wall_s_after": comp["wall_s"],
        "after_is": "train.compile=on (torch.compile of the encoder); slower end to end, so compile stays off by default",
        "dev_before": [main_run["dev"]],
        "dev_after": [comp["dev"]],
        "seeds_run": {"before": [0], "after": [0]},
    }
    speed_path.write_text(json.dumps(speed, indent=2) + "\n")

    for cfg in ("minilm-l6", "bert-base"):
        by = {r["impl"]: r["samples_per_s"] for r in records if r["config"] == cfg and r["batch"] == 32}
        peer = max(by["transformers-sdpa"], by["transformers-eager"])
        print(
            json.dumps(
                {
                    "config": cfg,
                    "batch": 32,
                    "minbert/peer": round(by["minbert"] / peer, 3),
                    "minbert-compile/peer": round(by["minbert-compile"] / peer, 3),
                }
            )
        )


if __name__ == "__main__":
    main()
