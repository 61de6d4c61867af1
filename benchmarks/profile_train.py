"""A profile of the trainer's own optimizer steps: what ``minbert train`` runs per step (collate,
pack plan, graph replay or eager pass, gradient norm, optimizer, loss bookkeeping), on a preset.

For each ``--variant NAME=OVERRIDES`` (dotted overrides, comma-separated; none for the preset as
it is) a :class:`minbert.training.trainer.Trainer` is set up in a temporary run folder, then
within its first epoch:

* ``--warmup`` optimizer steps (CUDA graphs captured);
* ``--timed`` steps timed without the profiler: ``ms_per_step`` (wall, device synchronised);
* ``--steps`` steps under ``torch.profiler``: the figures of ``profile_step.summarize`` (kernels
  per step, top kernels, device and host busy fractions) and ``top_host_ops``, the host
  operators with the most self time per step (where the host's time goes).

    python benchmarks/profile_train.py --config configs/default.yaml --data-dir DIR \\
        --variant shipped= --variant torch_adamw=optim.name=torch_adamw -- --model.encoder=ENC
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from bench_io import emit, machine  # noqa: E402
from minbert.config import load_config  # noqa: E402
from minbert.training.schedule import epoch_schedule  # noqa: E402
from minbert.training.trainer import Trainer  # noqa: E402
from profile_step import summarize  # noqa: E402


def run_variant(preset: str, overrides: list[str], data_dir: str, args: argparse.Namespace) -> dict:
    """One variant's figures (see the module docstring)."""
    cfg = load_config(preset, [*overrides, "output.report_to=[none]", "output.plot=false"])
    trainer = Trainer(cfg, Path(tempfile.mkdtemp(prefix="profile-train-")), data_dir)
    trainer.setup()
    schedule = epoch_schedule(trainer.cfg, trainer.streams, 0)
    if args.warmup + args.timed + args.steps > len(schedule):
        raise SystemExit(f"{len(schedule)} steps in an epoch: fewer than warmup + timed + steps")
    cuda = trainer.device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(trainer.device)) if cuda else (lambda: None)
    for _ in range(args.warmup):
        trainer.train_step(schedule, 0)
    sync()
    t0 = time.perf_counter()
    for _ in range(args.timed):
        trainer.train_step(schedule, 0)
    sync()
    ms = (time.perf_counter() - t0) / args.timed * 1e3
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(args.steps):
            trainer.train_step(schedule, 0)
        sync()
        wall_s = time.perf_counter() - t0
    host = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[: args.top]
    trainer.writer.wait()
    rt = trainer.rt
    return {
        "overrides": overrides, "ms_per_step": round(ms, 3),
        "profiled_ms_per_step": round(wall_s / args.steps * 1e3, 3),
        "packing": bool(rt.pack_multiple), "cuda_graphs": rt.cuda_graphs,
        "graphs": trainer.stepper.graphs.stats() if trainer.stepper.graphs is not None else None,
        **summarize(list(prof.events()), args.steps, wall_s * 1e6, args.top, trainer.device.type),
        "top_host_ops": [{"name": e.key[:100], "self_us_per_step": round(e.self_cpu_time_total / args.steps, 1),
                          "calls_per_step": round(e.count / args.steps, 1)} for e in host],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/default.yaml")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--variant", action="append", required=True, help="NAME=OVERRIDE,OVERRIDE,...")
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--timed", type=int, default=150)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--out")
    ap.add_argument("common", nargs="*", help="overrides for every variant (after --), e.g. --model.encoder=PATH")
    args = ap.parse_args()
    common = [a.removeprefix("--") for a in args.common]
    variants = {}
    for spec in args.variant:
        name, _, over = spec.partition("=")
        variants[name] = run_variant(args.config, [*common, *filter(None, over.split(","))], args.data_dir, args)
        print({name: {k: variants[name][k] for k in ("ms_per_step", "device_busy_fraction", "host_busy_fraction")}},
              file=sys.stderr, flush=True)
    emit({"machine": machine(), "preset": args.config, "variants": variants}, args.out)


if __name__ == "__main__":
    main()
