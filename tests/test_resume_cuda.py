"""A killed GPU run resumes: SIGKILL after a mid-epoch checkpoint of a run whose packed steps
are CUDA graphs with our fused AdamW update captured in them, then ``--resume``, ends where the
uninterrupted run ends.

Dropout is off (encoder and heads), so that no random draw enters the steps (capturing a graph
consumes random numbers). The resumed process runs each token bucket's first batch eagerly
again before capturing it, through the same kernels; on an H200 the two runs ended bit for bit
equal. The test allows 1e-6 of float rounding in the weights (the largest change in training is
about 7e-3). The optimizer's step counts, the schedule and the data streams must match exactly.
The test runs with master weights too (``optim.master_weights``: bf16 working weights, the fp32
masters' update captured in the graphs), under the same tolerance; their checkpoints must hold
fp32 weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from minbert.io import load_weights
from minbert.runs import last_checkpoint
from minbert.training.checkpoint import load_train_state
from test_resume import (
    EPOCHS,
    STEPS_PER_EPOCH,
    TASKS,
    assert_same_state,
    cli,
    kill_after_mid_epoch_checkpoint,
    train_args,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def cuda_args(encoder: Path, data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    args = [a for a in train_args(encoder, data_dir, run_dir) if a != "--train.device=cpu"]
    return [*args, *extra, "--train.device=cuda", "--optim.name=adamw",
            "--model.hidden_dropout_prob=0.0", "--model.attention_probs_dropout_prob=0.0",
            *(f"--tasks.{t}.dropout=0.0" for t in TASKS)]


@pytest.mark.parametrize("extra", [(), ("--optim.master_weights=true",)], ids=["fp32", "master-weights"])
def test_sigkill_then_resume_of_a_graphed_gpu_run_ends_where_the_uninterrupted_one_does(
    tmp_path, tiny_encoder, data_dir, extra
):
    encoder = tiny_encoder  # dropout is off through the run's options (cuda_args)
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    out = cli(*cuda_args(encoder, data_dir, run_a, *extra), cwd=tmp_path)
    assert "outside the step's graph" not in out.stderr  # the update is captured in the steps' graphs
    assert json.loads((run_a / "summary.json").read_text())["throughput"]["graphs"]["replays"] > 0
    kill_after_mid_epoch_checkpoint(cuda_args(encoder, data_dir, run_b, *extra), run_b, tmp_path / "b.log")
    assert not (run_b / "summary.json").exists()
    assert 0 < load_train_state(last_checkpoint(run_b))["loop"]["micro"] < STEPS_PER_EPOCH

    cli("train", "--resume", str(run_b), "--no-progress", cwd=tmp_path)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (run_a, run_b))
    assert sa["steps"] == sb["steps"] == EPOCHS * STEPS_PER_EPOCH
    assert sb["dev"] == pytest.approx(sa["dev"], abs=1e-4)
    la, lb = last_checkpoint(run_a), last_checkpoint(run_b)
    assert la.name == lb.name
    wa, _ = load_weights(la / "model.safetensors")
    wb, _ = load_weights(lb / "model.safetensors")
    init, _ = load_weights(encoder / "model.safetensors")
    moved = max((wa[k] - init[k.removeprefix("encoder.")]).abs().max().item()
                for k in wa if k.removeprefix("encoder.") in init)
    assert moved > 1e-3  # the runs trained: the comparison below is not of untouched weights
    for k in wa:
        assert wa[k].dtype == torch.float32, k  # with master weights too: checkpoints hold the masters
        torch.testing.assert_close(wb[k], wa[k], rtol=0, atol=1e-6, msg=k)
    sta, stb = load_train_state(la), load_train_state(lb)
    steps_a = [s["step"] for s in sta["optimizer"]["state"].values()]
    steps_b = [s["step"] for s in stb["optimizer"]["state"].values()]
    assert_same_state(steps_a, steps_b, "optimizer steps")
    assert_same_state(sta["scheduler"], stb["scheduler"], "scheduler")
    assert_same_state(sta["streams"], stb["streams"], "streams")
