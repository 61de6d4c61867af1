"""End-to-end wall time of ``minbert train`` runs: from the start of the command (a fresh Python
process) to the final predictions, compile and CUDA-graph capture included.

Each ``--run NAME=SRC`` runs ``python -m minbert train PRESET`` with ``PYTHONPATH=SRC`` (a
``src`` folder: this checkout's, or an older version's exported with ``git archive``), once per
seed, one after the other; ``--set NAME:KEY=VALUE`` adds a config override to run NAME's
commands only (two runs of one ``src`` that differ in one option); ``--rounds N`` repeats the
whole sequence N times, so that the runs being compared alternate. Prints one JSON object and
writes it to ``--out``: ``{"preset", "machine", "runs": [{"name", "seed", "round", "wall_s",
"dev": {...}, "summary_wall_s", "throughput"}]}`` (``throughput``: the run's ``summary.json``'s).

    python benchmarks/e2e.py --preset configs/default.yaml --seeds 0,1 --run after=src \\
        --run before=/tmp/before/src -- --data-dir DIR --model.encoder=PATH
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_io import emit, machine


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="configs/default.yaml")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--run", action="append", required=True, help="NAME=SRC_DIR")
    ap.add_argument("--set", action="append", default=[], help="NAME:KEY=VALUE, an override for run NAME only")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out")
    ap.add_argument("--keep", help="folder for the run folders (default: a temporary one)")
    ap.add_argument("--fresh-triton-cache", action="store_true",
                    help="give every run an empty TRITON_CACHE_DIR (each run compiles its Triton kernels, as a first "
                         "run does); default: the environment's cache, which the first run fills")
    ap.add_argument("extra", nargs="*", help="arguments passed to minbert train (after --)")
    args = ap.parse_args()
    base = Path(args.keep or tempfile.mkdtemp(prefix="e2e-"))
    runs = []
    own: dict[str, list[str]] = {}
    for item in args.set:
        name, override = item.split(":", 1)
        own.setdefault(name, []).append(f"--{override}")
    for rnd, spec, seed in ((r, x, s) for r in range(args.rounds) for x in args.run for s in args.seeds.split(",")):
        name, src = spec.split("=", 1)
        seed = int(seed)
        run_dir = base / f"{name}-seed{seed}"
        cmd = [sys.executable, "-m", "minbert", "train", "--config", args.preset, "--run-dir", str(run_dir),
               "--overwrite", "--no-progress", f"--train.seed={seed}", *args.extra, *own.get(name, [])]
        env = {**os.environ, "PYTHONPATH": str(Path(src).resolve()), "PYTHONUNBUFFERED": "1"}
        if args.fresh_triton_cache:
            env["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"triton-{name}-seed{seed}-")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        (base / f"{name}-seed{seed}.log").write_text(proc.stdout + proc.stderr)
        rec = {"name": name, "seed": seed, "round": rnd, "wall_s": round(wall, 2), "returncode": proc.returncode,
               "triton_cache": "empty" if args.fresh_triton_cache else "environment"}
        if proc.returncode == 0:
            summary = json.loads((run_dir / "summary.json").read_text())
            rec.update(dev=summary["dev"], summary_wall_s=summary["wall_s"], best_epoch=summary["best_epoch"],
                       throughput=summary.get("throughput"))
        else:
            rec["stderr_tail"] = proc.stderr[-2000:]
        print(json.dumps(rec), file=sys.stderr, flush=True)
        runs.append(rec)
    result = {
        "preset": args.preset,
        "machine": machine(),
        "extra_args": args.extra,
        "own_args": own,
        "runs": runs,
    }
    emit(result, args.out)


if __name__ == "__main__":
    main()
