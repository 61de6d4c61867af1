"""Merge the raw benchmark outputs in reports/bench/ into reports/speed.json (``machine``,
``train_step``, ``train_step_packed``, ``e2e``, ``e2e_earlier`` and ``e2e_history``, ``profile`` (and
``profile_peer``, ``profile_history``, ``profile_history_s5``), ``profile_trainer``, ``eval``, ``varlen_attention``; the
``cpu_predict`` part is written by benchmarks/cpu_predict.py) and reports/encoder_throughput.json
(the batch-32 records). Prints the ratios ours / faster peer.

Inputs (see reports/bench/README.md for the commands that made them):
  bench/train_step-graphs.json      benchmarks/train_step.py, both configs, batches 8/32/128
  bench/e2e-after.json              benchmarks/e2e.py, this version, seeds 0 and 1
  bench/e2e-before-seed1.json       benchmarks/e2e.py, the version before (git e07e6ed), seed 1
  main_run/summary.json             the version before, seed 0 (reports/main_run)
  bench/train_step_peers.json       benchmarks/train_step.py with the two compiled peers
  bench/packed/                     benchmarks/train_step.py, packed implementations against the
                                    reduce-overhead peer (device-scripts/s4-call2.sh, s4-call4.sh);
                                    s5-call*: benchmarks/e2e.py, eval_throughput.py, profile_step.py
                                    profile_train.py (device-scripts/s5-call1.sh .. s5-call4.sh)
  bench/s6/, bench/s7/              s6-call2, s7-call*: benchmarks/e2e.py (both presets), eval_throughput.py
  bench/s8/                         s8-call1: e2e.py (both presets), eval_throughput.py (bf16-weight
                                    evaluation); s8-call2: train_step.py, packed + inductor against
                                    the reduce-overhead peer; s8-call3: profile_step.py, both sides
                                    (device-scripts/s8-call*.sh)
  bench/s9/                         s9-call2: attention_varlen.py (packed attention kernels); s9-call3:
                                    train_step.py (both varlen kernels, the peer), e2e.py (default);
                                    s9-call4: e2e.py (default), train_step.py (MiniLM-L6); s9-call5:
                                    attention_varlen.py --mask-check (device-scripts/s9-call*.sh)
  bench/s11/                        R-Drop in one pass, the kernel compiled in child processes: s11-call1
                                    (CUDA tests, cProfile of both presets), s11-call2 and s11-call3 (e2e.py,
                                    a phase-timed default run), s11-call4 (e2e.py of both presets against
                                    git cca93f7, an empty Triton cache per run) (device-scripts/s11-call*.sh)
  bench/s12/                        start-up and epoch-end costs: s12-call1 (profile_train.py, a phase-
                                    timed default run), s12-call2 to s12-call4 (CUDA tests; e2e.py against
                                    git f339081, an empty Triton cache per run; s12-call2 a phase-timed run)
                                    (device-scripts/s12-call*.sh)
  bench/e2e_calls.json              which e2e.py runs of the s12 and later calls go into e2e_history.packed
  bench/s13/                        fewer kernels per step: s13-call1 to s13-call4 (CUDA tests; profile_train.py
                                    and e2e.py against the previous commit, an empty Triton cache per run;
                                    s13-call2 embedding_backward.py) (device-scripts/s13-call*.sh)
  bench/s14/                        fused_linear: s14-call1 (profile_step.py, the s13 step), s14-call2 (the
                                    nodes under compile, one GEMM per projection: train_step.py, profile_step.py),
                                    s14-call3 (CUDA tests; the buffer-form copies, see bench/README.md), s14-call4
                                    (train_step.py, bert-base b32: this version with the peer, s14-call2's
                                    version, this version again) (device-scripts/s14-call*.sh)
  bench/s15/                        variants of the compiled step's bias gradients and weight copies
                                    (device-scripts/s15-call*.sh and .patch): train_step.py and
                                    profile_step.py, bert-base b32; s15-call1's default end to end
  bench/s17/                        a default run's start, epochs and end: run_phases.py (phases, a host
                                    cProfile), profile_train.py, e2e.py against git b5195b5, an empty Triton
                                    cache per run; s17-call4's default end to end (e2e) (device-scripts/s17-call*.sh)
  bench/s18/                        the optimizer update in the step's graph: s18-call1 (CUDA tests;
                                    train_step.py bert-base b32 with the update in and out of the graph
                                    and the peer; e2e.py of both presets, an empty Triton cache per run;
                                    profile_train.py), s18-call2 (train_step.py at the other sizes;
                                    profile_step.py, bert-base b32 and b128) (device-scripts/s18-call*.sh)
  bench/s19/                        the update beside the backward, the update alone, master weights
                                    (overlap_step.py, optimizer_update.py, master_weights_step.py)
  bench/s20/                        master weights through minbert train: s20-call1 (CUDA tests; e2e.py
                                    of both presets without and with optim.master_weights), s20-call2
                                    (master_weights_step.py with the peer in one process; best with
                                    our AdamW), s20-call3 (the CUDA test files), s20-call4
                                    (master_weights_step.py with coordinate-descent tuning, the peer
                                    in one process) (device-scripts/s20-call*.sh)
  bench/s21/                        inductor settings and the master update's compiles: s21-call1
                                    (master_weights_step.py: the peer, the master-weights step under
                                    several inductor settings, one process), s21-call2 and s21-call3
                                    (the shipped step at batch 32 and 128 with and without combo
                                    kernels and unsplit reductions; their CUDA tests and e2e.py
                                    failed), s21-call4 (e2e.py of both presets with master weights,
                                    the update as one compiled function for all groups, git 1759119)
                                    (device-scripts/s21-call*.sh)
  bench/s22/                        the bias gradients' ones kept in blocks (bias_ones): s22-call1 (the
                                    peer and the master-weights step, one process; a profile of the
                                    step with combo kernels and unsplit reductions), s22-call2 (the
                                    CUDA test files; the peer and that step), s22-call3 (e2e.py of both
                                    presets; the peer and that step with coordinate-descent tuning)
                                    (device-scripts/s22-call*.sh)
  bench/s23/                        start-up measured: s23-call1 (e2e.py of configs/default.yaml, the
                                    machine's first runs; seed 0 again under py-spy), s23-call2 (the
                                    compile children timed by s23-child-phases.py, twice; e2e.py of
                                    git 4670f93 against s23-call2-new.patch, not kept), s23-call3
                                    (master_weights_step.py at batch 128, the peer in one process)
                                    (device-scripts/s23-call*.sh)
  bench/s27/                        the word embedding's update on the rows a step reads:
                                    s27-call1 (CUDA tests of its kernel; attention_varlen.py with the
                                    tiled one-kernel backward, --mask-check; master_weights_step.py,
                                    knobs rows, pdl, fbwd) (device-scripts/s27-call*.sh)
  bench/s29/                        on an H100: s29-call1 (the CUDA tests of the rows' update in
                                    the trainer and the benchmark), s29-call3 (master_weights_step.py,
                                    the peer and every knob stacked, one process) (device-scripts/s29-call*.sh)
  bench/s26/                        the weight-gradient stream and the one-kernel attention backward:
                                    s26-call1 (CUDA tests; attention_varlen.py, --mask-check; the peer
                                    and the master-weights step), s26-call2 and s26-call3
                                    (master_weights_step.py, knobs wgs and fbwd) (device-scripts/s26-call*.sh)
  bench/s10/                        our Triton varlen kernel: s10-call1 (one Philox call per dropout
                                    draw) and s10-call2 (eight 16-bit draws per call):
                                    attention_varlen.py (timings, --mask-check), train_step.py
                                    (bert-base), e2e.py (default); s10-call3: e2e.py (best),
                                    train_step.py (MiniLM-L6), eval_throughput.py; s10-call4: e2e.py (best,
                                    an empty Triton cache) (device-scripts/s10-call*.sh)

    python benchmarks/collect_reports.py
"""

from __future__ import annotations

import json
import re
import statistics
from pathlib import Path

REPORTS = Path(__file__).resolve().parents[1] / "reports"
BENCH = REPORTS / "bench"
KEYS = ("config", "batch", "impl", "samples_per_s", "real_tokens_per_s", "mfu", "peak_mem_gib")
COMPILED_PEERS = ("transformers-sdpa-compile", "transformers-sdpa-ro")


def ratios(records: list[dict]) -> list[dict]:
    out = []
    for cfg in sorted({r["config"] for r in records}):
        for batch in sorted({r["batch"] for r in records if r["config"] == cfg}):
            by = {r["impl"]: r for r in records if r["config"] == cfg and r["batch"] == batch}
            peer = max(by["transformers-sdpa"]["samples_per_s"], by["transformers-eager"]["samples_per_s"])
            out.append({
                "config": cfg, "batch": batch,
                "minbert_over_peer": round(by["minbert"]["samples_per_s"] / peer, 2),
                "minbert_eager_over_peer": round(by["minbert-eager"]["samples_per_s"] / peer, 2),
                "mfu_minbert": by["minbert"]["mfu"],
                "mfu_peer": max(by["transformers-sdpa"]["mfu"], by["transformers-eager"]["mfu"]),
            })
    return out


def packed_records() -> list[dict]:
    """The packed train-step records and their peers, the latest run first where several measured
    one (the others go to ``earlier``): s18-call1's bert-base batch 32 and s18-call2's other sizes
    (the optimizer update in the step's graph; s18-call1's ``-hostopt`` record runs it from the
    host), s14-call4's bert-base batch 32 (fused_linear)
    and s14-call2's (the s13 step; its ``-nodes`` record, an intermediate version, is left out),
    s10-call3's and s10-call2's JSON files (varlen_kernel auto:
    our Triton kernel where attention dropout is on; their ``minbert-packed-compile-triton`` names it
    explicitly and is listed as ``minbert-packed-compile``), s10-call1's (its
    ``minbert-packed-compile-flash`` stays as it is), s9-call4's and s9-call3's JSON files (s9-call3's
    ``minbert-packed-compile-flash`` is the shipped step, FlashAttention's kernel where attention
    dropout is on, and is listed as ``minbert-packed-compile``; its ``minbert-packed-compile`` ran the
    memory-efficient kernel with dropout, which is not shipped and is left out), s8-call2's, the
    call-4 JSON files, the call-4 command output (its lines are cut at 160 characters: the
    complete fields before the cut are read), then the JSON lines of the call-2 logs."""
    out, earlier, seen = [], [], set()

    def add(rec: dict, source: str) -> None:
        key = (rec["config"], rec["batch"], rec["impl"])
        (earlier if key in seen else out).append(
            {**{k: rec[k] for k in KEYS if k in rec}, "source": f"reports/bench/{source}"})
        seen.add(key)

    for f in [BENCH / "s18" / "s18-call1-ts-bert-base-b32.json", *sorted((BENCH / "s18").glob("s18-call2-ts-*.json"))]:
        for rec in json.loads(f.read_text())["records"]:
            add(rec, f"s18/{f.name}")
    for name in ("s14-call4-ts-bert-base-b32.json", "s14-call2-ts-bert-base-b32.json"):  # fused_linear; s13's step
        for rec in json.loads((BENCH / "s14" / name).read_text())["records"]:
            if not rec["impl"].endswith("-nodes"):  # s14-call2's intermediate version (bench/README.md)
                add(rec, f"s14/{name}")
    for call in ("s10-call3", "s10-call2", "s10-call1"):  # varlen_kernel auto: triton when training
        for f in sorted((BENCH / "s10").glob(f"{call}-ts-*.json")):
            for rec in json.loads(f.read_text())["records"]:
                if rec["impl"] == "minbert-packed-compile-triton":
                    rec = {**rec, "impl": "minbert-packed-compile"}
                add(rec, f"s10/{f.name}")
    for f in sorted((BENCH / "s9").glob("s9-call4-ts-*.json")):  # varlen_kernel auto (flash when training)
        for rec in json.loads(f.read_text())["records"]:
            add(rec, f"s9/{f.name}")
    for f in sorted((BENCH / "s9").glob("s9-call3-ts-*.json")):
        for rec in json.loads(f.read_text())["records"]:
            if rec["impl"] == "minbert-packed-compile":  # the efficient kernel with dropout: not shipped
                continue  # (varlen_attention()["train_step_efficient_with_dropout"])
            if rec["impl"] == "minbert-packed-compile-flash":  # what auto runs when training
                rec = {**rec, "impl": "minbert-packed-compile"}
            add(rec, f"s9/{f.name}")
    for f in sorted((BENCH / "s8").glob("s8-call2-ts-*.json")):
        for rec in json.loads(f.read_text())["records"]:
            add(rec, f"s8/{f.name}")
    packed = BENCH / "packed"
    for f in sorted(packed.glob("call4-ts-*.json")):
        for rec in json.loads(f.read_text())["records"]:
            add(rec, f"packed/{f.name}")
    for line in (packed / "call4-output-tail.txt").read_text().splitlines():
        if line.startswith('{"config"'):
            fields = dict(re.findall(r'"(\w+)": ("[^"]*"|[-\d.]+),', line))  # complete fields only
            add({k: json.loads(v) for k, v in fields.items()}, "packed/call4-output-tail.txt")
    for f in sorted(packed.glob("call2-*.log")):
        for line in f.read_text().splitlines():
            if line.startswith("{"):
                add(json.loads(line), f"packed/{f.name}")
    return out, earlier


def e2e_runs(name: str, folder: str = "packed", tag: str = "") -> dict:
    """``{"wall_s": [per seed], "dev_overall": [per seed], ...}`` of one benchmarks/e2e.py output
    in bench/<folder>/ (wall_s: process start to the final predictions), with each run's summary
    (train seconds per epoch, CUDA graphs captured and their capture time) when it came back, as
    <call>-<preset><tag>-seed<N>-summary.json (tag: "-after", "-before" where one call ran both)."""
    d = json.loads((BENCH / folder / name).read_text())
    runs = sorted(d["runs"], key=lambda r: r["seed"])
    out = {"wall_s": [r["wall_s"] for r in runs], "dev_overall": [r["dev"]["overall"] for r in runs],
           "seeds": [r["seed"] for r in runs], "preset": d["preset"], "source": f"reports/bench/{folder}/{name}"}
    preset = Path(d["preset"]).stem
    prefix = name.split("e2e-")[0]  # the call's files: s5-callN-
    summaries = [BENCH / folder / f"{prefix}{preset}{tag}-seed{r['seed']}-summary.json" for r in runs]
    if all(f.is_file() for f in summaries):
        out["throughput"] = [json.loads(f.read_text())["throughput"] for f in summaries]
    return out


# the s12 and s13 calls' runs besides e2e, and the s12 version's e2e (bench/e2e_calls.json)
CALL_RUNS = json.loads((BENCH / "e2e_calls.json").read_text())["runs"]


def packed_e2e_history() -> list[dict]:
    """Earlier packed runs of configs/default.yaml on the way to the shipped step."""
    return [
        {**e2e_runs("s5-call1-e2e-default-packed.json"), "what": "one encoder pass per step, CUDA graphs per "
         "64-token bucket, checkpoints written in the training loop"},
        {**e2e_runs("s5-call1-e2e-default-compiled-cold-0.json"), "what": "the same with train.compile=on, "
         "empty inductor cache"},
        {**e2e_runs("s5-call1-e2e-default-compiled-cold-1.json"), "what": "the same with train.compile=on, "
         "empty inductor cache"},
        {**e2e_runs("s5-call1-e2e-default-compiled-warm-0.json"), "what": "train.compile=on, warm inductor cache"},
        {**e2e_runs("s5-call2-e2e-default-packed.json"), "what": "plus host copies through pinned memory and "
         "evaluation plans made on the host"},
        {**e2e_runs("s5-call3-e2e-default.json"), "what": "plus token buckets by size and checkpoints written "
         "in the background"},
        {**e2e_runs("s5-call4-e2e-default.json"), "what": "plus full weight snapshots for the background writes"},
        {**e2e_runs("s5-call3-e2e-best.json"), "what": "configs/best.yaml at the s5-call3 step"},
        {**e2e_runs("s6-call2-e2e-default.json", "s6"), "what": "plus graphed dev evaluation, fused AdamW and "
         "gradients left where the one-step graph writes them"},
        {**e2e_runs("s6-call2-e2e-best.json", "s6"), "what": "configs/best.yaml at the s6-call2 step"},
        {**e2e_runs("s7-call2-e2e-default.json", "s7"), "what": "plus the filler cut into pieces no longer "
         "than a row, pinned checkpoint snapshots, one TensorBoard event per step (a machine without "
         "bytecode caches)"},
        {**e2e_runs("s7-call2-e2e-best.json", "s7"), "what": "configs/best.yaml at the s7-call2 step"},
        {**e2e_runs("s8-call1-e2e-default.json", "s8"), "what": "plus graphed evaluation in bf16 weights, "
         "Python's and matplotlib's caches filled first"},
        {**e2e_runs("s9-call3-e2e-default.json", "s9"), "what": "packed attention on the memory-efficient kernel "
         "in training as well, with attention dropout: its backward's dropout mask is not its forward's "
         "(s9-call5-mask-check.json), dev overall fell by 0.03 to 0.04; not shipped"},
        {**e2e_runs("s9-call4-e2e-default.json", "s9"), "what": "varlen_kernel auto: the memory-efficient kernel "
         "in evaluation, FlashAttention-2's in training"},
        {**e2e_runs("s8-call1-e2e-best.json", "s8"), "what": "configs/best.yaml at the s8-call1 step "
         "(evaluation on FlashAttention-2's kernel)"},
        {**e2e_runs("s10-call1-e2e-default.json", "s10"), "what": "our Triton varlen kernel in training, one "
         "Philox call per dropout draw; an empty Triton cache for seed 0"},
        {**e2e_runs("s10-call3-e2e-best.json", "s10"), "what": "configs/best.yaml with our Triton kernel in "
         "training, on s10-call2's machine: the Triton cache already held the kernels (warm for both seeds)"},
        {**e2e_runs("s10-call2-e2e-default.json", "s10"), "what": "our Triton varlen kernel in training, eight "
         "16-bit dropout draws per Philox call; an empty Triton cache for seed 0"},
        {**e2e_runs("s10-call4-e2e-best.json", "s10"), "what": "configs/best.yaml at the s10-call2 step; an "
         "empty Triton cache for seed 0"},
        {**e2e_runs("s11-call2-e2e-default.json", "s11"), "what": "plus the Triton kernel compiled in one child "
         "process started after the model is built; an empty Triton cache for seed 0"},
        {**e2e_runs("s11-call2-e2e-best.json", "s11"), "what": "configs/best.yaml, plus R-Drop's two passes as "
         "one encoder pass and the one-child compile; an empty Triton cache for seed 0"},
        {**e2e_runs("s11-call3-e2e-default.json", "s11"), "what": "plus two compile children (forward, backward) "
         "started before the model is built, one CUDA-graph warm-up after the first capture (reverted); an "
         "empty Triton cache for seed 0"},
        {**e2e_runs("s11-call3-e2e-best.json", "s11"), "what": "configs/best.yaml as s11-call3's default; an "
         "empty Triton cache for seed 0"},
        {**e2e_runs("s11-call4-e2e-default-before.json", "s11", "-before"), "what": "the s10 step (git cca93f7) "
         "on s11-call4's machine, an empty Triton cache for each run: the 'before' of e2e.default"},
        {**e2e_runs("s11-call4-e2e-best-before.json", "s11", "-before"), "what": "configs/best.yaml at the s10 "
         "step (git cca93f7) on s11-call4's machine, an empty Triton cache for each run: the 'before' of e2e.best"},
        {**e2e_runs("s11-call4-e2e-default-after.json", "s11", "-after"), "what": "R-Drop in one pass, the kernel "
         "compiled by two children while the model and data load (git f339081); an empty Triton cache per run"},
        {**e2e_runs("s11-call4-e2e-best-after.json", "s11", "-after"), "what": "configs/best.yaml at git f339081 "
         "on s11-call4's machine; an empty Triton cache per run"},
        *({**e2e_runs(f"{r['call']}-e2e-{r['preset']}{r['tag']}.json", r["call"].split("-")[0], r["tag"]),
           "what": r["what"]} for r in CALL_RUNS),
    ]


def varlen_attention() -> dict:
    """The packed attention kernels on real sentence lengths (s10-call2 with our Triton kernel;
    earlier: s9-call2 with the binned and flex candidates, s10-call1 with the Triton kernel's first
    dropout draw; GPU time of CUDA-graph replays), the dropout-mask check (s10-call2) and the
    train steps that ran the memory-efficient kernel with attention dropout (s9-call3), which the
    mask check rules out; s26-call1: the same with the one-kernel backward (``triton-32-fused``),
    inputs as one (N, 3, nh, hs) tensor; s27-call1: its second version, which does a sequence longer
    than a tile tile by tile (``_tiled``)."""
    keep = ("case", "impl", "tokens", "sequences", "fwd_us_p0.0", "fwd_bwd_us_p0.0", "fwd_us_p0.1",
            "fwd_bwd_us_p0.1", "max_abs_diff_vs_flash")

    def records(folder: str, name: str) -> list[dict]:
        rows = json.loads((BENCH / folder / name).read_text())["records"]
        return [{**{k: r[k] for k in keep if k in r}, "source": f"reports/bench/{folder}/{name}"} for r in rows]

    kernels = records("s10", "s10-call2-attention.json")
    earlier = records("s9", "s9-call2-attention.json") + [
        r for r in records("s9", "s9-call2-attention-flex.json") if r["impl"] == "flex"]
    earlier += [{**r, "note": "one Philox call per dropout draw"}
                for r in records("s10", "s10-call1-attention.json") if r["impl"].startswith("triton")]
    wrong = [{**{k: r[k] for k in KEYS}, "impl": "minbert-packed-compile (memory-efficient kernel, with dropout)",
              "source": f"reports/bench/s9/{f.name}"}
             for f in sorted((BENCH / "s9").glob("s9-call3-ts-*.json"))
             for r in json.loads(f.read_text())["records"] if r["impl"] == "minbert-packed-compile"]
    mask = json.loads((BENCH / "s10" / "s10-call2-mask-check.json").read_text())["records"]
    mask_s26 = json.loads((BENCH / "s26" / "s26-call1-mask.json").read_text())["records"]
    mask_s27 = json.loads((BENCH / "s27" / "s27-call1-mask.json").read_text())["records"]
    return {"kernels": kernels, "kernels_earlier": earlier,
            "kernels_one_kernel_backward": records("s26", "s26-call1-attn.json"),
            "mask_check_one_kernel_backward": mask_s26,
            "kernels_one_kernel_backward_tiled": records("s27", "s27-call1-attn.json"),
            "mask_check_one_kernel_backward_tiled": mask_s27,
            "kernels_unit": "microseconds per call, one layer's attention (forward, forward + backward)",
            "mask_check": mask, "mask_check_source": "reports/bench/s10/s10-call2-mask-check.json",
            "train_step_efficient_with_dropout": wrong}


def profile(folder: str, name: str) -> dict:
    """The ``profile`` of one benchmarks/profile_step.py output in bench/<folder>/, with its source."""
    return {**json.loads((BENCH / folder / name).read_text())["profile"], "source": f"reports/bench/{folder}/{name}"}


def profiles() -> dict:
    """The shipped bert-base step's profiles (s18-call2: the optimizer update in the step's graph),
    the reduce-overhead peer's (s8-call3), the earlier steps' (s8-call3's own; s5-call1's,
    before the gradients stayed in place), and the master-weights step's at batch 32 with combo
    kernels and unsplit reductions (s22-call1, benchmarks/master_weights_step.py's
    ``master-combo-nosplit``)."""
    def both(folder: str, name: str) -> dict:
        return {f"bert-base-b{b}": profile(folder, name.format(b=b)) for b in (32, 128)}

    return {"profile": both("s18", "s18-call2-profile-bert-base-b{b}.json"),
            "profile_peer": both("s8", "s8-call3-profile-transformers-sdpa-ro-bert-base-b{b}.json"),
            "profile_history": both("s8", "s8-call3-profile-minbert-packed-compile-bert-base-b{b}.json"),
            "profile_history_s5": both("packed", "s5-call1-profile-bert-base-b{b}.json"),
            "profile_master": {"bert-base-b32": profile("s22", "s22-call1-profile-master-combo-nosplit.json")}}


def update_experiments() -> dict:
    """The optimizer update overlapped with the backward and the step without an update
    (benchmarks/overlap_step.py, s19-call1, s19-call2 and s19-call4), and the update alone
    (benchmarks/optimizer_update.py, s19-call3 and s19-call4); the step on bf16 working weights
    with fp32 master weights (benchmarks/master_weights_step.py, s19-call7; s20-call2 with the peer)."""
    def records(name: str) -> list[dict]:
        return variant_records(f"s19/{name}", ("samples_per_s", "ms_per_step", "batch"))

    alone = raw_records("s19/s19-call3-optimizer-update.json") + raw_records("s19/s19-call4-optimizer-update.json")
    master = log_records("s19/s19-call7-master-b32.log")  # the run stopped before its JSON file
    # s20-call2: the peer, the shipped step and AdamW(master_weights=True), all three in one process;
    # s20-call4: the peer, the master-weights step, and that step with coordinate-descent tuning
    master += raw_records("s20/s20-call2-master-b32.json") + raw_records("s20/s20-call4-master-cdt-b32.json")
    return {"master_weights_b32": master,
            "train_step_b32": records("s19-call1-overlap-b32.json") + records("s19-call2-overlap-b32.json")
            + records("s19-call4-overlap-b32.json"),
            "train_step_b128": records("s19-call1-overlap-b128.json"),
            "update_alone": alone}


def raw_records(name: str) -> list[dict]:
    """The records of bench/``name`` (one benchmark process), each with its ``source``; of a
    ``.log``, the records it printed (:func:`log_records`)."""
    if name.endswith(".log"):
        return log_records(name)
    return [{**r, "source": f"reports/bench/{name}"} for r in json.loads((BENCH / name).read_text())["records"]]


def log_records(name: str) -> list[dict]:
    """The records that one benchmark process printed to bench/``name`` (its log), each with its
    ``source``: for runs stopped before they wrote their JSON file."""
    return [{**json.loads(line), "source": f"reports/bench/{name}"}
            for line in (BENCH / name).read_text().splitlines() if line.startswith("{")]


def variant_records(name: str, keys: tuple[str, ...]) -> list[dict]:
    """:func:`raw_records` of bench/``name`` cut to ``keys`` (those a record has), its variant (or
    impl) and its source."""
    return [{**{k: r[k] for k in keys if k in r}, "variant": r.get("variant") or r["impl"], "source": r["source"]}
            for r in raw_records(name)]


def samples_per_s(name: str) -> dict[str, float]:
    """Samples/s by variant (or impl) of the records of bench/``name`` (one benchmark process)."""
    return {r["variant"]: r["samples_per_s"] for r in variant_records(name, ("samples_per_s",))}


def bert_base_b32_runs() -> list[dict]:
    """bert-base at batch 32: the shipped compiled packed step against the reduce-overhead peer,
    in one process, in each run of it since s14-call4 (the s15 runs timed variants): how the
    ratio moves with the machine."""
    out = []
    for name in ("s14/s14-call4-ts-bert-base-b32.json", "s18/s18-call1-ts-bert-base-b32.json",
                 "s19/s19-call1-overlap-b32.json", "s19/s19-call4-ts-bert-base-b32.json",
                 "s20/s20-call2-master-b32.json"):
        recs = samples_per_s(name)
        ours = recs.get("minbert-packed-compile", recs.get("whole"))
        peer = recs.get("transformers-sdpa-ro", recs.get("peer"))
        out.append({"minbert": ours, "peer": peer, "ratio": round(ours / peer, 2), "source": f"reports/bench/{name}"})
    return out


def master_weights_b32_runs() -> list[dict]:
    """bert-base at batch 32: the master-weights step (``master``, and its inductor-settings
    variants ``master-...``) against the reduce-overhead peer, in one process, in each run of both
    (benchmarks/master_weights_step.py). ``bias_ones``: the tree kept the bias gradients' ones in
    blocks (s22 on), else each step made them. Knobs wgs and fbwd (s26): the weight-gradient stream,
    the one-kernel attention backward; s29-call3: every knob that shortened the step at this batch
    stacked (wgs, rows, pdl, combo, nosplit, cdt), on an H100 (the others ran on H200s); that call
    ended at its time limit, so its records come from its log. ``gpu``: the card, where kept."""
    out = []
    for name in ("s20/s20-call2-master-b32.json", "s20/s20-call4-master-cdt-b32.json", "s21/s21-call1-knobs-b32.json",
                 "s22/s22-call1-knobs-b32.log", "s22/s22-call2-knobs-b32.json", "s22/s22-call3-knobs-b32.json",
                 *(f"s26/s26-call{i}-step-b32.json" for i in (1, 2, 3)), "s29/s29-call3-step-b32.log"):
        recs = samples_per_s(name)
        variants = {k: {"samples_per_s": v, "ratio": round(v / recs["peer"], 2)} for k, v in recs.items()
                    if k.startswith("master-")}
        run = {"master": recs["master"], "peer": recs["peer"], "ratio": round(recs["master"] / recs["peer"], 2)} \
            if "master" in recs else {"peer": recs["peer"]}
        out.append({**run, **({"variants": variants} if variants else {}),
                    "bias_ones": name[:4] in ("s22/", "s26/", "s29/"), "gpu": gpu_of(name),
                    "source": f"reports/bench/{name}"})
    return out


def gpu_of(name: str) -> str | None:
    """The card that ran bench/``name`` (its call's ``-gpu.txt``, nvidia-smi's CSV), where kept."""
    call = re.match(r"s\d+/s\d+-call\d+", name)
    f = BENCH / f"{call.group(0)}-gpu.txt" if call else None
    return f.read_text().splitlines()[1].split(",")[0].strip() if f and f.is_file() else None


def inductor_knobs() -> dict:
    """bert-base's packed step under inductor settings that cut kernels (benchmarks/master_weights_step.py,
    variants NAME-KNOB-...): the master-weights step at batch 32 with the peer (s21-call1), the
    shipped step at batch 32 (s21-call2) and 128 (s21-call3), each call one process; the
    master-weights step again with the bias gradients' ones kept in blocks, with the peer in each
    process (s22-call1 to s22-call3, one process each: ``master_b32_bias_ones``); the master-weights
    step at batch 128 with the peer (s23-call3, ``master_b128``); the master-weights step with the
    weight-gradient stream, then with the embedding rows' update, programmatic dependent launch or
    the one-kernel attention backward (s27-call1, no peer, ``master_b32_rows_pdl``; the run ended at
    its time limit before the shipped-step variants, so its records come from its log)."""
    def records(name: str) -> list[dict]:
        return variant_records(name, ("samples_per_s", "ms_per_step"))

    return {"master_b32": records("s21/s21-call1-knobs-b32.json"),
            "shipped_b32": records("s21/s21-call2-whole-knobs-b32.json"),
            "shipped_b128": records("s21/s21-call3-whole-knobs-b128.json"),
            "master_b32_bias_ones": [r for name in ("s22/s22-call1-knobs-b32.log", "s22/s22-call2-knobs-b32.json",
                                                    "s22/s22-call3-knobs-b32.json") for r in records(name)],
            "master_b128": records("s23/s23-call3-knobs-b128.json"),
            "master_b32_rows_pdl": records("s27/s27-call1-knobs-b32.log"),
            "knobs": {"combo": "combo_kernels=True", "nosplit": "split_reductions=False",
                      "agg": "aggressive_fusion=True", "cdt": "coordinate_descent_tuning=True",
                      "pdl": "triton.enable_pdl=True", "wgs": "the encoder's weight_grad_stream",
                      "fbwd": "our attention kernel's one-kernel backward",
                      "rows": "the word embedding's AdamW on the rows a step reads (training/lazy_rows.py)"}}


def compile_children(name: str) -> dict:
    """The three attention-kernel compile children of bench/``name`` (a JSON line per child from
    device-scripts/s23-child-phases.py, then the line of the whole: its start and end), started
    side by side with an empty Triton cache: each child's phases and the seconds until all ended."""
    lines = (BENCH / name).read_text().splitlines()
    children = [json.loads(line) for line in lines if line.startswith("{")]
    start, end = (float(x) for x in re.findall(r"\d+\.\d+", lines[-1]))
    return {"children": [{k: c[k] for k in ("part", "import_torch_s", "cuda_init_s", "import_kernel_s", "compile_s")}
                         for c in children],
            "all_done_s": round(end - start, 2), "source": f"reports/bench/{name}"}


def startup_trial() -> dict:
    """configs/default.yaml end to end, git 4670f93 against a version that imported torch._dynamo
    in a thread during the set-up and let the plot child draw while the test predictions were
    written (s23-call2-new.patch, not kept), four runs of two seeds in one call (base, new, new2,
    base2, in that order); before them, the compile children timed twice, the machine's first
    Triton compile and the one after it."""
    return {**{run: e2e_runs(f"s23-call2-e2e-default-{run}.json", "s23", f"-{run}")
               for run in ("base", "new", "new2", "base2")},
            "compile_children_first": compile_children("s23/s23-call2-children-first.jsonl"),
            "compile_children_second": compile_children("s23/s23-call2-children-second.jsonl"),
            "patch": "reports/bench/s23/s23-call2-new.patch"}


def master_weights_e2e() -> dict:
    """Both presets end to end without and with ``optim.master_weights`` (benchmarks/e2e.py, 2 seeds,
    an empty Triton cache per run; s20-call1, and s20-call2's best with our AdamW alone)."""
    return {"default": {"off": e2e_runs("s20-call1-e2e-default-base.json", "s20", "-base"),
                        "on": e2e_runs("s20-call1-e2e-default-master.json", "s20", "-master")},
            "best": {"off": e2e_runs("s20-call1-e2e-best-base.json", "s20", "-base"),
                     "off_adamw": e2e_runs("s20-call2-e2e-best-adamw.json", "s20", "-adamw"),
                     "on": e2e_runs("s20-call1-e2e-best-master.json", "s20", "-master")},
            "on_one_function": {
                "default": e2e_runs("s21-call4-e2e-default-master.json", "s21", "-master"),
                "best": e2e_runs("s21-call4-e2e-best-master.json", "s21", "-master")},
            "what": "off: the preset as shipped; off_adamw: best with optim.name=adamw; on: optim.master_weights=true "
            "(best: with optim.name=adamw), the update compiled once per group; on_one_function: the same, the update "
            "of all groups as one compiled function (git 1759119, not kept)"}


def embedding_rows_cpu() -> dict:
    """configs/default.yaml on this 2-core CPU, 40 optimizer steps (fp32), with the word
    embedding's dense update and with ``optim.embedding_rows``, alternating, three rounds
    (benchmarks/e2e.py ``--rounds 3``)."""
    src = "cpu/embedding_rows-default-40steps.json"
    runs = json.loads((BENCH / src).read_text())["runs"]
    out = {name: {"train_s": [round(r["throughput"]["train_s"], 2) for r in runs if r["name"] == name],
                  "samples_per_s": [r["throughput"]["samples_per_s"] for r in runs if r["name"] == name],
                  "dev_overall": [r["dev"]["overall"] for r in runs if r["name"] == name]}
           for name in ("dense", "rows")}
    return {**out, "source": f"reports/bench/{src}"}


def main() -> None:
    step = json.loads((BENCH / "train_step-graphs.json").read_text())
    records = step["records"]
    after = json.loads((BENCH / "e2e-after.json").read_text())
    before1 = json.loads((BENCH / "e2e-before-seed1.json").read_text())["runs"]
    before0 = json.loads((REPORTS / "main_run" / "summary.json").read_text())

    speed_path = REPORTS / "speed.json"
    speed = json.loads(speed_path.read_text()) if speed_path.is_file() else {}
    speed["machine"] = {
        "gpu": step["machine"]["gpu"],
        "torch": step["machine"]["torch"],
        "cpu": speed.get("machine", {}).get("cpu", "AMD EPYC (2 threads)"),
        "gpu_host": "2x H200 machine (nvidia-h200-x2), one GPU per job; the peers ran in the same process as ours",
    }
    # the three implementations compared; "minbert-eager" (our encoder op by op) stays in the raw
    # file, in encoder_throughput.json and in the ratios below
    speed["train_step"] = [{k: r[k] for k in KEYS} for r in records if r["impl"] != "minbert-eager"]
    speed["train_step_ratios"] = ratios(records)
    peers = json.loads((BENCH / "train_step_peers.json").read_text())["records"]
    speed["train_step"] += [{k: r[k] for k in KEYS} for r in peers if r["impl"] in COMPILED_PEERS]
    speed["train_step_packed"], speed["train_step_packed_earlier"] = packed_records()
    before = [
        {"seed": 0, "wall_s": before0["wall_s"], "dev": before0["dev"],
         "source": "reports/main_run/summary.json (wall_s from the CLI start)"},
        *({"seed": r["seed"], "wall_s": r["wall_s"], "dev": r["dev"], "source": "reports/bench/e2e-before-seed1.json"}
          for r in before1),
    ]
    after_runs = [{"seed": r["seed"], "wall_s": r["wall_s"], "dev": r["dev"]} for r in after["runs"]]
    speed.pop("e2e", None)
    speed["e2e_history"] = {
        "preset": "configs/default.yaml",
        "wall_s_before": round(statistics.fmean(r["wall_s"] for r in before), 2),
        "wall_s_after": round(statistics.fmean(r["wall_s"] for r in after_runs), 2),
        "dev_before": [r["dev"] for r in before],
        "dev_after": [r["dev"] for r in after_runs],
        "per_seed_before": before,
        "per_seed_after": after_runs,
        "before_is": "git e07e6ed: eager step, one host sync per step, batches padded to the longest",
        "after_is": "CUDA graphs per recurring batch shape (train.cuda_graphs=auto), batches padded to a multiple "
        "of 16, step losses synced every 50 steps; wall time of the whole command, process start to final predictions",
        "packed": packed_e2e_history(),
    }
    # the latest run of each preset, with Python's bytecode and matplotlib's font cache filled
    # beforehand, varlen_kernel auto (our Triton kernel in training), an empty Triton cache for every
    # run; the earlier versions' runs are in e2e_history.packed (s13-call1 to s13-call3: each change
    # against its predecessor on one machine; s13-call4's default; s15-call1's default, fused_linear).
    # default: s23-call1 (git 4670f93, the machine's first runs); best: s22-call3 (the bias gradients'
    # ones kept in blocks); default_warm: s17-call2 (git a475155) with the Triton cache its run
    # before filled. Earlier: default_s22 (s22-call3), s18-call1 (the optimizer
    # update in the step's graph, and s17's changes), default s17-call4 (git 85e4711), best s13-call4
    # (the version before fused_linear)
    speed["e2e"] = {"default": e2e_runs("s23-call1-e2e-default-base.json", "s23", "-base"),
                    "default_warm": {**e2e_runs("s17-call2-e2e-default-warm.json", "s17", "-warm"),
                                     "what": "git a475155, the Triton cache filled by the run before (both seeds)"},
                    "best": e2e_runs("s22-call3-e2e-best-ones.json", "s22", "-ones")}
    speed["e2e_earlier"] = {"default_s22": e2e_runs("s22-call3-e2e-default-ones.json", "s22", "-ones"),
                            "default": e2e_runs("s18-call1-e2e-default-after.json", "s18", "-after"),
                            "best": e2e_runs("s18-call1-e2e-best-after.json", "s18", "-after"),
                            "default_s17": e2e_runs("s17-call4-e2e-default-after.json", "s17", "-after"),
                            "best_s13": e2e_runs("s13-call4-e2e-best-after.json", "s13", "-after")}
    speed.update(profiles())
    speed["update_overlap"] = update_experiments()
    speed["bert_base_b32_runs"] = bert_base_b32_runs()
    speed["master_weights_e2e"] = master_weights_e2e()
    speed["master_weights_b32_runs"] = master_weights_b32_runs()
    speed["inductor_knobs"] = inductor_knobs()
    speed["startup_trial"] = startup_trial()
    speed["varlen_attention"] = varlen_attention()
    speed["embedding_rows_cpu"] = embedding_rows_cpu()
    trainer = json.loads((BENCH / "packed" / "s5-call4-profile-train-default.json").read_text())
    speed["profile_trainer"] = {**trainer["variants"], "preset": trainer["preset"],
                                "source": "reports/bench/packed/s5-call4-profile-train-default.json"}
    ev = json.loads((BENCH / "s10" / "s10-call3-eval_throughput.json").read_text())
    speed["eval"] = {**{k: ev["eval"][k] for k in ("minbert_pairs_per_s", "peer_pairs_per_s")},
                     "inputs": ev["inputs"], "graphs": ev["eval"]["minbert_graphs"],
                     "source": "reports/bench/s10/s10-call3-eval_throughput.json"}
    speed["eval_history"] = []
    for src, what in (("packed/s5-call3-eval_throughput.json", "packed, op by op"),
                      ("s6/s6-call2-eval_throughput.json", "packed, CUDA graphs"),
                      ("s7/s7-call1-eval_throughput.json", "packed, CUDA graphs (with a profile)"),
                      ("s7/s7-call2-eval_throughput.json", "packed, CUDA graphs, the filler in pieces"),
                      ("s8/s8-call1-eval_throughput.json", "graphs of a bf16-weight copy, FlashAttention-2's "
                       "kernel (with profiles)")):
        old = json.loads((BENCH / src).read_text())["eval"]
        speed["eval_history"].append({**{k: old[k] for k in ("minbert_pairs_per_s", "peer_pairs_per_s")},
                                      "what": what, "source": f"reports/bench/{src}"})
    speed_path.write_text(json.dumps(speed, indent=2) + "\n")

    enc = {
        "machine": {"gpu": step["machine"]["gpu"], "torch": step["machine"]["torch"]},
        "note": "batch 32 records of reports/bench/train_step-graphs.json. 'minbert': CUDA graphs per padded shape "
        "(what minbert train does on CUDA); 'minbert-eager': our encoder op by op. bf16 autocast, fused torch AdamW, "
        "real SST batches.",
        "records": [{k: r[k] for k in KEYS} for r in records if r["batch"] == 32],
    }
    (REPORTS / "encoder_throughput.json").write_text(json.dumps(enc, indent=2) + "\n")
    for r in speed["train_step_ratios"]:
        print(json.dumps(r))
    print(json.dumps({k: speed["e2e_history"][k] for k in ("wall_s_before", "wall_s_after")}))
    print(json.dumps(speed["e2e"]))
    print(json.dumps(speed["eval"]))


if __name__ == "__main__":
    main()
