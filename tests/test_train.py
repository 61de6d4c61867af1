"""Training routines: schedules, the sampled routine's task proportions, PCGrad, grad accumulation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minbert.config import load_config, replace
from minbert.data.batching import TaskStream
from minbert.errors import ConfigError
from minbert.training.trainer import epoch_schedule, pcgrad_, task_probabilities

SIZES = {"sst": 267, "qqp": 423, "sts": 189}  # batches per pass (batch 32 on the real sets)


def streams(sizes=SIZES, batch=1):
    return {n: TaskStream(np.ones(k * batch, dtype=np.int64), batch, seed=0) for n, k in sizes.items()}


def cfg(**train):
    return load_config(None, [f"train.{k}={v}" for k, v in train.items()])


def test_parallel_and_sequential_schedules():
    s = streams()
    par = epoch_schedule(cfg(routine="parallel"), s)
    assert len(par) == 423 and all(step == ("sst", "qqp", "sts") for step in par)
    seq = epoch_schedule(cfg(routine="sequential"), s)
    assert [t for (t,) in seq] == ["sst"] * 267 + ["qqp"] * 423 + ["sts"] * 189


@pytest.mark.parametrize("schedule", ["proportional", "sqrt", "annealed", "round_robin"])
def test_sampled_schedule_gives_the_stated_proportions(schedule):
    n = np.array(list(SIZES.values()), dtype=float)
    expected_first = {
        "proportional": n / n.sum(),
        "sqrt": np.sqrt(n) / np.sqrt(n).sum(),
        "annealed": n / n.sum(),  # alpha = 1 in the first epoch
        "round_robin": np.ones(3) / 3,
    }[schedule]
    c = cfg(routine="sampled", sampling=schedule, epochs=5)
    counts = np.zeros(3)
    steps = 0
    big = streams({k: v * 20 for k, v in SIZES.items()})  # 20x longer epochs: ~17,580 draws
    sched = epoch_schedule(c, big, epoch=0)
    for (t,) in sched:
        counts[list(SIZES).index(t)] += 1
        steps += 1
    assert steps == 20 * sum(SIZES.values())
    # multinomial standard error at this size is < 0.004
    np.testing.assert_allclose(counts / steps, expected_first, atol=0.012)
    if schedule == "round_robin":
        assert [t for (t,) in sched[:6]] == ["sst", "qqp", "sts"] * 2


def test_annealed_moves_from_proportional_to_near_uniform():
    n = np.array(list(SIZES.values()), dtype=float)
    first = task_probabilities(SIZES, "annealed", 0, 5)
    last = task_probabilities(SIZES, "annealed", 4, 5)
    np.testing.assert_allclose(list(first.values()), n / n.sum())
    w = n**0.2  # alpha = 1 - 0.8 in the last epoch
    np.testing.assert_allclose(list(last.values()), w / w.sum())


def test_sampled_schedule_is_a_function_of_seed_and_epoch():
    c = cfg(routine="sampled", sampling="sqrt")
    assert epoch_schedule(c, streams(), 3) == epoch_schedule(c, streams(), 3)
    assert epoch_schedule(c, streams(), 3) != epoch_schedule(c, streams(), 4)


def test_unknown_sampling_is_a_config_error():
    with pytest.raises(ConfigError, match="train.sampling"):
        load_config(None, ["train.sampling=uniformish"])


def test_pcgrad_projects_conflicting_gradients():
    # two tasks, one shared 2-d parameter: g1 = (1, 0), g2 = (-1, 1) conflict (dot = -1)
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    (total,) = pcgrad_([[g1], [g2]], seed=0)
    # g1' = g1 - (g1.g2)/|g2|^2 g2 = (1,0) + 0.5(-1,1) = (0.5, 0.5)
    # g2' = g2 - (g2.g1)/|g1|^2 g1 = (-1,1) + (1,0) = (0, 1)
    torch.testing.assert_close(total, torch.tensor([0.5, 1.5]))
    # each projected gradient no longer conflicts with the other task's original gradient
    assert torch.dot(torch.tensor([0.5, 0.5]), g2) >= 0 and torch.dot(torch.tensor([0.0, 1.0]), g1) >= 0


def test_pcgrad_leaves_agreeing_gradients_and_task_specific_parameters_alone():
    shared1, shared2 = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.1])  # dot > 0
    head1 = torch.tensor([3.0])
    out = pcgrad_([[shared1, head1, None], [shared2, None, None]], seed=0)
    torch.testing.assert_close(out[0], shared1 + shared2)
    torch.testing.assert_close(out[1], head1)
    assert out[2] is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pcgrad_on_cuda_with_a_parameter_no_task_reaches():
    # (a parameter without any gradient used to become a CPU tensor in the concatenation)
    dev = torch.device("cuda")
    g1, g2 = torch.tensor([1.0, 0.0], device=dev), torch.tensor([-1.0, 1.0], device=dev)
    out = pcgrad_([[g1, None], [g2, None]], seed=0)
    torch.testing.assert_close(out[0], torch.tensor([0.5, 1.5], device=dev))
    assert out[1] is None


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

    over = [f"model.encoder={tiny_encoder}", "tasks.sts.pair_input=cross", "tasks.sts.train_limit=10", "tasks.sts.dev_limit=12",
            "output.test_predictions=false"]
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
    raw = task.read(data_dir / "sts-train.csv", "train").subset(10)
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
