"""Training runs: PCGrad's routine check, swap augmentation, the trainer's phases (resume,
train.eval_every)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from minbert.config import load_config, replace
from minbert.errors import ConfigError


def test_pcgrad_requires_the_parallel_routine(tiny_encoder, data_dir, tmp_path):
    from minbert.training.trainer import train

    c = load_config(None, ["train.pcgrad=true", "train.routine=sequential", f"model.encoder={tiny_encoder}"])
    with pytest.raises(ConfigError, match="pcgrad"):
        train(c, run_dir=tmp_path / "r", data_dir=data_dir, progress=False)


def test_swap_augmentation_and_symmetric_prediction(tiny_encoder, data_dir):
    from minbert.data.tokenizer import Tokenizer
    from minbert.inference.evaluate import predict_split
    from minbert.model.multitask import build_model
    from minbert.tasks.base import get_task
    from minbert.tasks.splits import load_splits

    over = [f"model.encoder={tiny_encoder}", "tasks.sts.pair_input=cross", "tasks.sts.train_limit=10",
            "tasks.sts.dev_limit=12", "output.test_predictions=false"]
    plain = load_config(None, over)
    plain = replace(plain, tasks={"sts": plain.tasks["sts"]})
    aug = load_config(None, over + ["tasks.sts.augment_swap=true", "tasks.sts.symmetric_eval=true"])
    aug = replace(aug, tasks={"sts": aug.tasks["sts"]})
    tok = Tokenizer(tiny_encoder, 128, 128)
    d_plain, d_aug = load_splits(plain, data_dir, tok), load_splits(aug, data_dir, tok)
    tr_p, tr_a = d_plain["train"]["sts"], d_aug["train"]["sts"]
    assert len(tr_a) == 2 * len(tr_p) == 20
    # the second half holds the same pairs in the other order: [CLS] b [SEP] a [SEP]
    task = get_task("sts")
    raw = task.read(data_dir / "sts-train.csv", "train").sample(10, seed=plain.train.seed)  # the seeded train sample
    ids_ba, _, _ = tok.encode([t[1] for t in raw.texts], [t[0] for t in raw.texts])
    assert tr_a.input_ids[10:] == ids_ba and tr_a.input_ids[:10] == tr_p.input_ids
    np.testing.assert_array_equal(tr_a.labels[10:], tr_p.labels)

    torch.manual_seed(0)
    model = build_model(aug, tiny_encoder).eval()
    dev = d_aug["dev"]["sts"]
    sym = predict_split(model, task, dev, torch.device("cpu"))
    ab = predict_split(model, task, d_plain["dev"]["sts"], torch.device("cpu"))
    ba = predict_split(model, task, dev.swapped, torch.device("cpu"))
    np.testing.assert_allclose(sym.outputs, (ab.outputs + ba.outputs) / 2, atol=1e-6)
    assert np.abs(ab.outputs - ba.outputs).max() > 1e-4  # the orders really differ for a cross-encoder


# ----------------------------------------------------------------------------------------------
# the trainer's phases, alone, on a tiny run: 32 SST rows in batches of 8 = 4 steps per epoch


def sst_config(tiny_encoder, **train):
    from minbert.config import from_dict

    return from_dict({
        "model": {"encoder": str(tiny_encoder)},
        "tasks": {"sst": {"train_limit": 32, "dev_limit": 16, "batch_size": 8}},
        "train": {"device": "cpu", "seed": 3, "epochs": 2, **train},
        "optim": {"lr": 1e-3},
        "output": {"report_to": "none", "plot": False, "test_predictions": False},
    })


def records(run_dir):
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("every, expect", [
    (0, [(4, 1), (8, 2)]),  # epoch ends only
    (3, [(3, 0.75), (4, 1), (6, 1.5), (8, 2)]),  # and after steps 3 and 6
    (2, [(2, 0.5), (4, 1), (6, 1.5), (8, 2)]),  # steps 4 and 8 end an epoch: evaluated once
])
def test_eval_every_adds_dev_records_between_steps(every, expect, tiny_encoder, data_dir, tmp_path):
    from minbert.training.trainer import train

    run = train(sst_config(tiny_encoder, eval_every=every), tmp_path / "r", data_dir, progress=False)
    dev = [r for r in records(run.run_dir) if "dev" in r]
    assert [(r["step"], r["epoch"]) for r in dev] == expect
    assert all(set(r) == {"step", "epoch", "dev", "dev_detail"} and "sst_acc" in r["dev"] for r in dev)
    # the best model is chosen at epoch ends only
    assert run.summary["epochs_run"] == 2 and run.summary["best_epoch"] in (1, 2)
    seconds = run.summary["throughput"]
    assert len(seconds["epoch_train_s"]) == 2
    assert sum(seconds["epoch_train_s"]) == pytest.approx(seconds["train_s"], abs=0.02)
    # the set-up, the training and the epochs' ends are apart in the run's wall time (no attention
    # kernel compiles on a CPU: nothing waited for)
    assert len(seconds["epoch_end_s"]) == 2 and seconds["setup_s"] > 0
    assert seconds["kernel_wait_s"] == 0.0
    assert seconds["setup_s"] + seconds["train_s"] + sum(seconds["epoch_end_s"]) <= run.summary["wall_s"] + 0.05
    assert seconds["graphs"] is None  # no CUDA graphs, no flat sync on a CPU
    assert [r["step"] for r in records(run.run_dir) if "lr" in r] == list(range(1, 9))


def test_resume_phase_restores_counters_optimizer_schedule_streams_and_rng(tiny_encoder, data_dir, tmp_path):
    from minbert.training.trainer import Trainer

    cfg, run_dir = sst_config(tiny_encoder), tmp_path / "r"
    run_dir.mkdir()
    a = Trainer(cfg, run_dir, data_dir)
    a.setup()
    schedule = [("sst",)] * a.counts.micro_per_epoch
    assert (a.counts.micro_per_epoch, a.counts.opt_per_epoch, a.total_steps) == (4, 4, 8)
    for _ in range(3):
        assert a.train_step(schedule, 0) is True
    rng_at_checkpoint = torch.get_rng_state()
    a.save_checkpoint()
    a.metrics.close()
    a.writer.wait()  # written in the background
    with open(run_dir / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 4, "written after": "the checkpoint"}\n')
    torch.rand(100)  # move the RNG on

    b = Trainer(cfg, run_dir, data_dir, resume=True)
    b.setup()
    b.metrics.close()
    st = b.state
    assert (st.epoch, st.micro, st.step, st.skipped, st.world_size) == (0, 3, 3, 0, 1)
    assert b.scheduler.last_epoch == 3 and b.optimizer.state_dict()["state"][0]["step"] == 3
    for k, v in a.optimizer.state_dict()["state"].items():
        assert torch.equal(b.optimizer.state_dict()["state"][k]["exp_avg"], v["exp_avg"])
    assert b.streams["sst"].state_dict() == a.streams["sst"].state_dict()
    weights_a, weights_b = a.model.state_dict(), b.model.state_dict()
    assert list(weights_a) == list(weights_b) and all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)
    assert torch.equal(torch.get_rng_state(), rng_at_checkpoint)
    # metrics.jsonl is cut back to the checkpoint: the three step records
    assert [r["step"] for r in records(run_dir)] == [1, 2, 3]


def test_epoch_end_phase_keeps_the_best_and_stops_early(tiny_encoder, data_dir, tmp_path, monkeypatch):
    import minbert.training.trainer as trainer_module
    from minbert.io import load_weights
    from minbert.runs import last_checkpoint
    from minbert.training.checkpoint import load_train_state
    from minbert.training.trainer import Trainer

    write = trainer_module.write_checkpoint
    monkeypatch.setattr(trainer_module, "write_checkpoint", lambda *a, **k: (time.sleep(0.5), write(*a, **k))[1])
    calls, on_disk = [], []
    run_dir = tmp_path / "r"
    run_dir.mkdir()

    def hook(epoch, dev):  # the epoch's checkpoint and best weights are on disk when the hook runs
        calls.append((epoch, dev))
        on_disk.append((last_checkpoint(run_dir), (run_dir / "checkpoints" / "best" / "model.safetensors").exists()))

    cfg = sst_config(tiny_encoder, early_stopping_patience=1, epochs=3)
    t = Trainer(cfg, run_dir, data_dir, on_epoch_end=hook)
    t.setup()
    assert t.epoch_end(0) is False  # the first score is the best so far
    assert (t.state.epoch, t.state.best_epoch, t.state.bad_epochs) == (1, 1, 0)
    assert t.epoch_end(1) is True  # the same weights: no improvement, patience 1 is spent
    assert (t.state.epoch, t.state.best_epoch, t.state.bad_epochs) == (2, 1, 1)
    t.metrics.close()
    t.writer.wait()  # the checkpoints are written in the background
    assert [c[0] for c in calls] == [1, 2] and calls[0][1] == calls[1][1]
    assert on_disk == [(run_dir / "checkpoints" / "step-00000000", True)] * 2
    assert t.state.best == calls[0][1]["overall"]
    _, meta = load_weights(run_dir / "checkpoints" / "best" / "model.safetensors")
    assert meta["epoch"] == 1
    loop = load_train_state(run_dir / "checkpoints" / "step-00000000")["loop"]
    assert (loop["epoch"], loop["best_epoch"], loop["bad_epochs"], len(loop["history"])) == (2, 1, 1, 2)
    assert [(r["epoch"], r["dev"]) for r in records(run_dir)] == [(1, calls[0][1]), (2, calls[1][1])]
    # resumed from that epoch end (a run interrupted while it ended): the spent patience still stops
    # it, with epoch 3 of 3 untrained
    resumed = Trainer(cfg, run_dir, data_dir, resume=True)
    resumed.setup()
    resumed.train_epochs()
    assert resumed.state.epoch == 2 and resumed.state.step == 0 and resumed.throughput["epoch_train_s"] == []


def test_tensorboard_holds_the_learning_rate_and_gradient_norm_of_every_step(tiny_encoder, data_dir, tmp_path):
    """TensorBoard gets train/lr and train/grad_norm at each optimizer step, the values that
    metrics.jsonl records (and train/loss_<task>)."""
    import json

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from minbert.config import load_config
    from minbert.training.trainer import train

    over = [f"model.encoder={tiny_encoder}", "train.epochs=1", "train.log_every=1", "optim.lr=1e-3",
            "optim.schedule=linear", "optim.warmup_ratio=0.5", "output.plot=false", "output.test_predictions=false"]
    over += [f"tasks.{t}.{k}={v}" for t in ("sst", "qqp", "sts") for k, v in (("train_limit", 24), ("dev_limit", 8),
                                                                                ("batch_size", 8))]
    run = train(load_config(None, over), run_dir=tmp_path / "run", data_dir=data_dir, progress=False)
    steps = [json.loads(ln) for ln in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in steps if "lr" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    acc = EventAccumulator(str(run.run_dir / "tensorboard"))
    acc.Reload()
    for tag, key in (("train/lr", "lr"), ("train/grad_norm", "grad_norm"), ("train/loss_sst", "loss/sst")):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == [1, 2, 3], tag
        assert [e.value for e in events] == pytest.approx([r[key] for r in steps], rel=1e-6), tag
    # linear warmup over ceil(0.5 * 3) = 2 steps from 0, then decay: 0, 5e-4, 1e-3 before steps 1..3
    assert [r["lr"] for r in steps] == pytest.approx([5e-4, 1e-3, 0.0], abs=1e-12)
