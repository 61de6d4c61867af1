"""Data parallelism on CPU with Gloo and 2 processes (torchrun), against one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from minbert.io import load_weights

B = 4  # per-rank batch


def common(tiny_encoder, data_dir, run_dir, batch, extra=()) -> list[str]:
    args = [
        "train",
        "--data-dir", str(data_dir),
        "--run-dir", str(run_dir),
        "--no-progress",
        f"--model.encoder={tiny_encoder}",
        "--model.hidden_dropout_prob=0.0",
        "--model.attention_probs_dropout_prob=0.0",
        "--train.device=cpu",
        "--train.epochs=1",
        "--output.report_to=none",
        "--output.plot=false",
        "--output.test_predictions=false",
        "--optim.lr=1e-3",
    ]
    for t in ("sst", "qqp", "sts"):
        args += [f"--tasks.{t}.batch_size={batch}", f"--tasks.{t}.train_limit=32", f"--tasks.{t}.dev_limit=50",
                 f"--tasks.{t}.dropout=0.0"]
    return args + list(extra)


def env() -> dict:
    e = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    e.pop("MINBERT_DATA_DIR", None)
    return e


def run_single(args, cwd) -> None:
    p = subprocess.run(
        [sys.executable, "-m", "minbert", *args], cwd=cwd, env=env(), capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr[-3000:]


def run_torchrun(args, cwd) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "minbert", *args
    ]
    p = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-4000:]
    return p


@pytest.fixture(scope="module")
def runs(tiny_encoder, data_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    one = root / "one"
    two = root / "two"
    run_single(common(tiny_encoder, data_dir, one, 2 * B, ["--train.max_steps=1"]), root)
    run_torchrun(common(tiny_encoder, data_dir, two, B, ["--train.max_steps=1"]), root)
    return one, two


def test_two_process_step_equals_one_process_double_batch(runs):
    one, two = runs
    w1, m1 = load_weights(one / "checkpoints" / "best" / "model.safetensors")
    w2, m2 = load_weights(two / "checkpoints" / "best" / "model.safetensors")
    assert m1["step"] == m2["step"] == 1
    assert set(w1) == set(w2)
    diffs = {k: (w1[k] - w2[k]).abs().max().item() for k in w1}
    assert max(diffs.values()) <= 1e-6, sorted(diffs.items(), key=lambda kv: -kv[1])[:5]



def test_the_step_changed_the_encoder(runs, tiny_encoder):
    # the equality above is between trained weights, not two untouched copies of the start
    from minbert.model.bert import BertModel

    start = BertModel.from_pretrained(tiny_encoder).state_dict()
    w2, _ = load_weights(runs[1] / "checkpoints" / "best" / "model.safetensors")
    moved = [k for k, v in start.items() if not torch.equal(v, w2[f"encoder.{k}"])]
    assert len(moved) > len(start) // 2


def test_only_rank0_writes_and_metrics_are_global(runs):
    one, two = runs
    lines = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "lr" in x]
    assert len(steps) == 1  # one record per step, not one per rank
    ref = [json.loads(x) for x in (one / "metrics.jsonl").read_text().splitlines() if "lr" in x]
    for k in ("loss/sst", "loss/qqp", "loss/sts"):
        # the logged loss is the mean over ranks = the loss over the global batch (equal halves)
        assert steps[0][k] == pytest.approx(ref[0][k], abs=1e-5)


def test_two_process_evaluation_equals_one_process(runs, data_dir):
    _, two = runs
    summary = json.loads((two / "summary.json").read_text())
    p = subprocess.run(
        [sys.executable, "-m", "minbert", "evaluate", str(two), "--data-dir", str(data_dir), "--device", "cpu"],
        env=env(), capture_output=True, text=True, timeout=300,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    single = json.loads((two / "eval.json").read_text())["dev"]
    for k, v in summary["dev_all"].items():
        assert single[k] == pytest.approx(v, abs=1e-6), k
    # the prediction files hold each dev id exactly once
    ids = [ln.split(",")[0] for ln in (two / "predictions" / "qqp-dev.csv").read_text().splitlines()[1:]]
    assert len(ids) == len(set(ids)) == 50


@pytest.mark.parametrize(
    "extra, atol",
    [
        # static-graph DDP (the parallel routine) over several steps; float32 sums in another order
        # stay within a few ulps (~1e-6) of one process
        (["--train.max_steps=3"], 2e-6),
        # gradient accumulation: all-reduce only on the last micro-step (no_sync), graph searched.
        # Summation order differs (2 halves of 2 micro-batches vs 2 micro-batches of 2B) and
        # Adam divides the gradient by its own running size, so rounding differences of
        # rarely-hit embedding rows grow to ~2e-6 after 2 steps at lr 1e-3
        (["--train.max_steps=2", "--train.grad_accum=2"], 5e-6),
        # the sampled routine: a different task (and unused heads) each step, DDP searches the graph
        (["--train.max_steps=4", "--train.routine=sampled"], 1e-6),
        # no DDP: one all_reduce of the flat gradient buffer per step (what CUDA graphs use)
        (["--train.max_steps=3", "--train.grad_sync=flat"], 2e-6),
        (["--train.max_steps=2", "--train.grad_accum=2", "--train.grad_sync=flat"], 5e-6),
        (["--train.max_steps=4", "--train.routine=sampled", "--train.grad_sync=flat"], 1e-6),
    ],
    ids=["parallel-static", "parallel-accum", "sampled", "flat", "flat-accum", "flat-sampled"],
)
def test_two_processes_equal_one_over_several_steps(extra, atol, tiny_encoder, data_dir, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    run_single(common(tiny_encoder, data_dir, one, 2 * B, extra), tmp_path)
    run_torchrun(common(tiny_encoder, data_dir, two, B, extra), tmp_path)
    w1, m1 = load_weights(one / "checkpoints" / "best" / "model.safetensors")
    w2, m2 = load_weights(two / "checkpoints" / "best" / "model.safetensors")
    assert m1["step"] == m2["step"] == int(extra[0].split("=")[1])
    diffs = {k: (w1[k] - w2[k]).abs().max().item() for k in w1}
    assert max(diffs.values()) <= atol, sorted(diffs.items(), key=lambda kv: -kv[1])[:5]


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA devices")
def test_two_gpus_with_cuda_graphs_equal_one_gpu_double_batch(tiny_encoder, data_dir, tmp_path):
    # NCCL, CUDA graphs, flat gradient sync (train.grad_sync=auto) against one GPU with graphs;
    # fp32 (amp off); 4 steps so that batch shapes recur and replay their graphs
    extra = ["--train.max_steps=4", "--train.amp=off", "--train.cuda_graphs=on", "--train.epochs=2"]
    one, two = tmp_path / "one", tmp_path / "two"

    def on_cuda(args):
        return [a.replace("--train.device=cpu", "--train.device=cuda") for a in args]

    run_single(on_cuda(common(tiny_encoder, data_dir, one, 2 * B, extra)), tmp_path)
    p = run_torchrun(on_cuda(common(tiny_encoder, data_dir, two, B, extra)), tmp_path)
    assert "gradient sync: flat all-reduce" in p.stderr and "CUDA graphs on" in p.stderr
    w1, _ = load_weights(one / "checkpoints" / "best" / "model.safetensors")
    w2, _ = load_weights(two / "checkpoints" / "best" / "model.safetensors")
    diffs = {k: (w1[k] - w2[k]).abs().max().item() for k in w1}
    assert max(diffs.values()) <= 1e-5, sorted(diffs.items(), key=lambda kv: -kv[1])[:5]
    summary = json.loads((two / "summary.json").read_text())
    assert summary["throughput"]["grad_sync"] == "flat" and summary["throughput"]["cuda_graphs"] is True


KILLER = """
import os, signal, sys
from pathlib import Path
import minbert.io as mio

real, seen = mio.atomic_write_bytes, [0]

def dying(path, data):
    # rank 0 dies while pointing last.json at the second checkpoint: the first one stays last
    if Path(path).name == "last.json" and os.environ.get("RANK") == "0":
        seen[0] += 1
        if seen[0] == 2:
            os.kill(os.getpid(), signal.SIGKILL)
    return real(path, data)

mio.atomic_write_bytes = dying  # last.json is written through atomic_write_json
from minbert.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def killed_run(tiny_encoder, data_dir, tmp_path_factory):
    """A 2-process run (4 steps per epoch, checkpoints every 2 steps) whose rank 0 was killed
    at step 4, and the same run uninterrupted."""
    root = tmp_path_factory.mktemp("ddp-resume")
    extra = ["--train.epochs=2", "--train.checkpoint_every=2", "--optim.schedule=linear", "--optim.warmup_ratio=0.0"]
    run_torchrun(common(tiny_encoder, data_dir, root / "ref", B, extra), root)
    killer = root / "killer.py"
    killer.write_text(KILLER)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(killer),
           *common(tiny_encoder, data_dir, root / "killed", B, extra)]
    p = subprocess.run(cmd, cwd=root, env=env(), capture_output=True, text=True, timeout=300)
    assert p.returncode != 0
    killed = root / "killed"
    assert not (killed / "summary.json").exists()
    assert json.loads((killed / "checkpoints" / "last.json").read_text())["step"] == 2
    return root, root / "ref", killed


def test_resume_with_the_same_world_size_is_bit_identical(killed_run):
    import shutil

    root, ref, killed = killed_run
    run = root / "same"
    shutil.copytree(killed, run)
    p = run_torchrun(["train", "--resume", str(run), "--no-progress"], root)
    assert "resumed" in p.stderr
    w_ref, m_ref = load_weights(ref / "checkpoints" / "best" / "model.safetensors")
    w, m = load_weights(run / "checkpoints" / "best" / "model.safetensors")
    assert m == m_ref and all(torch.equal(w[k], w_ref[k]) for k in w_ref)
    dev, dev_ref = (json.loads((d / "summary.json").read_text())["dev"] for d in (run, ref))
    assert dev == dev_ref


@pytest.mark.parametrize(
    "procs, steps",
    [
        # 2 steps of 2B rows per task were done (16 of the first epoch's 32 rows); 1 process
        # continues at row 16 with batch B: 4 more steps in epoch 1, 8 in epoch 2
        (1, 2 + 4 + 8),
        # 3 processes (global batch 3B = 12): row 16 rounds down to 12, micro-step 1 of 3;
        # 2 more steps in epoch 1 and 3 in epoch 2
        (3, 2 + 2 + 3),
    ],
)
def test_resume_with_another_world_size_continues_at_the_same_sample_offset(procs, steps, killed_run):
    import shutil

    root, ref, killed = killed_run
    run = root / f"procs{procs}"
    shutil.copytree(killed, run)
    resume = ["-m", "minbert", "train", "--resume", str(run), "--no-progress"]
    launcher = [] if procs == 1 else ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs)]
    p = subprocess.run(
        [sys.executable, *launcher, *resume], cwd=root, env=env(), capture_output=True, text=True, timeout=300
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"resuming a 2-process checkpoint with {procs} process(es)" in p.stderr
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == steps and summary["epochs_run"] == 2
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "lr" in r] == list(range(1, steps + 1))  # none repeated or skipped
    assert {r["epoch"] for r in records if "lr" in r} == {1, 2}  # both epochs trained to their end
    # the linear decay was rebuilt over the new total: it reaches 0 exactly at the last step
    # (each record's lr is the one for the next step)
    lrs = [r["lr"] for r in records if "lr" in r]
    assert lrs[-1] == 0.0 and lrs[-2] > 0.0
