"""Where the wall time of a ``minbert train`` run goes: the command run in this process, its phases
time-stamped.

``minbert.cli.main`` runs with the arguments after ``--``, as the ``minbert`` command does: the
CLI starts the attention-kernel compile children before it imports torch, and the process ends
through ``os._exit``. The trainer's phases are wrapped once the CLI has started those children
(so that the trainer is imported where the command imports it): each call of a *phase* is
recorded with its start and end, each call of a *repeated* function (per epoch or per step) adds
to a sum. A thread per compile child records when it exits. Times are seconds since this
script's first line ran (the interpreter's own start, about 0.05 s, comes before it).

Prints one JSON object and writes it to ``--out``: ``{"machine", "argv", "phases": [{"name",
"start_s", "end_s"}], "sums": {name: {"s", "calls"}}, "children": [{"exit_s", "returncode"}],
"cli_clock_s": the CLI's start (minbert.STARTED_AT), "main_returned_s", "exit_code"}``. ``--sum
MODULE:NAME`` sums one more function's calls; ``--profile FILE`` writes the main thread's cProfile
(the top functions by own and by cumulative time) to FILE.

    python benchmarks/run_phases.py --out phases.json -- train --config configs/default.yaml \\
        --run-dir /tmp/run --overwrite --no-progress --data-dir DIR --model.encoder=PATH
"""

from __future__ import annotations

import time

T0 = time.time()

import argparse  # noqa: E402
import cProfile  # noqa: E402
import functools  # noqa: E402
import io  # noqa: E402
import os  # noqa: E402
import pstats  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import minbert  # noqa: E402
import minbert.training.kernel_compile as kc  # noqa: E402

PHASES: list[dict] = []
SUMS: dict = defaultdict(lambda: {"s": 0.0, "calls": 0})
CHILDREN: list[dict] = []

# (module, attribute) of the trainer's phases (each call recorded) and repeated calls (summed)
PHASE_NAMES = [
    ("minbert.training.trainer", n) for n in (
        "setup_model", "load_splits", "write_run_files", "task_streams", "build_optimizer",
        "build_optimizer_step", "wait_kernel_compile", "check_file_weights", "write_run_predictions",
        "run_summary", "write_run_plots", "write_model_card", "log_run_end")
] + [("minbert.training.trainer", f"Trainer.{n}") for n in ("setup", "train_epochs", "finish")] + [
    ("minbert.training.trainer", "MetricsLog.__init__"), ("minbert.training.trainer", "MetricsLog.end"),
    ("minbert.training.trainer", "DevEvaluator.__init__"), ("minbert.training.trainer", "GraphedForward.__init__"),
]
REPEATED_NAMES = [
    ("minbert.training.trainer", n) for n in (
        "Trainer.train_step", "Trainer.epoch_end", "Trainer.save_checkpoint", "Trainer._end_epoch_training",
        "BackgroundWriter.snapshot", "BackgroundWriter.wait", "write_checkpoint")
] + [("minbert.training.evaluation", n) for n in ("DevEvaluator.evaluate", "save_best_weights")]


def now() -> float:
    return round(time.time() - T0, 4)


def wrap(module: object, dotted: str, repeated: bool) -> None:
    """Replace ``module.<dotted>`` (a function, or ``Class.method``) by a timing wrapper."""
    owner, name = module, dotted
    if "." in dotted:
        cls, name = dotted.split(".")
        owner = getattr(module, cls)
    fn = getattr(owner, name)

    @functools.wraps(fn)
    def timed(*a, **k):
        t = time.time()
        try:
            return fn(*a, **k)
        finally:
            if repeated:
                SUMS[dotted]["s"] += time.time() - t
                SUMS[dotted]["calls"] += 1
            else:
                PHASES.append({"name": dotted, "start_s": round(t - T0, 4), "end_s": now()})

    setattr(owner, name, timed)


def watch_children(children: list | None) -> None:
    """A daemon thread per compile child that records when it exits."""
    def watch(proc) -> None:
        code = proc.wait()
        CHILDREN.append({"exit_s": now(), "returncode": code})

    for proc in children or []:
        threading.Thread(target=watch, args=(proc,), daemon=True).start()


def start_early_then_wrap(original):
    """The CLI's ``start_early``, then the trainer imported and wrapped (what the command does next)."""
    def start_early(cfg):
        t = time.time()
        children = original(cfg)
        PHASES.append({"name": "start_early", "start_s": round(t - T0, 4), "end_s": now()})
        watch_children(children)
        t = time.time()
        import importlib

        for names, repeated in ((PHASE_NAMES, False), (REPEATED_NAMES, True)):
            for mod, dotted in names:
                wrap(importlib.import_module(mod), dotted, repeated)
        PHASES.append({"name": "import trainer", "start_s": round(t - T0, 4), "end_s": now()})
        return children

    return start_early


def write_profile(profiler: cProfile.Profile, path: str, top: int = 70) -> None:
    """The main thread's cProfile as text: the ``top`` functions by own time, then by cumulative time."""
    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf).strip_dirs()
    for key in ("tottime", "cumulative"):
        stats.sort_stats(key).print_stats(top)
    Path(path).write_text(buf.getvalue(), encoding="utf-8")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    ap.add_argument("--sum", action="append", default=[], metavar="MODULE:NAME",
                    help="also sum the calls of this function or Class.method (repeatable)")
    ap.add_argument("--profile", metavar="FILE", help="cProfile the main thread; its top functions to FILE (text)")
    ap.add_argument("argv", nargs=argparse.REMAINDER, help="-- then the minbert command's arguments")
    args = ap.parse_args()
    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    REPEATED_NAMES.extend(tuple(x.split(":", 1)) for x in args.sum)
    kc.start_early = start_early_then_wrap(kc.start_early)
    from minbert.cli import main as cli_main

    profiler = cProfile.Profile() if args.profile else None
    if profiler is not None:
        profiler.enable()
    code = cli_main(argv)
    if profiler is not None:
        profiler.disable()
        write_profile(profiler, args.profile)
    result = {"argv": argv, "cli_clock_s": round(minbert.STARTED_AT - T0, 4), "main_returned_s": now(),
              "exit_code": code, "phases": sorted(PHASES, key=lambda p: p["start_s"]),
              "sums": {k: {"s": round(v["s"], 4), "calls": v["calls"]} for k, v in sorted(SUMS.items())},
              "children": CHILDREN}
    from bench_io import emit, machine

    result = {"machine": machine(), **result}
    emit(result, args.out)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # as the minbert command ends


if __name__ == "__main__":
    main()
