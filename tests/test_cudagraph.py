"""The fast paths' correctness: bucket padding, CUDA-graph replay and torch.compile each give the
same numbers as the plain eager model. Graph tests need a CUDA device (run on the GPU machine)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from minbert.config import load_config
from minbert.data.batching import tokenize_split
from minbert.data.tokenizer import Tokenizer, pad_batch
from minbert.inference.graphs import StaticInputs
from minbert.model.bert import BertModel
from minbert.model.multitask import build_model
from minbert.tasks.base import get_task
from minbert.training.cudagraph import GraphedSteps, norm_and_clip
from minbert.training.step import TrainStep, _task_step

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def sst_rows(data_dir, tiny_encoder, n=24):
    tok = Tokenizer(tiny_encoder, 64)
    raw = get_task("sst").read(data_dir / "ids-sst-dev.csv", "dev").subset(n)
    return tok, tokenize_split(raw, tok, "single")


def test_pad_to_multiple_of_rounds_up_and_leaves_real_tokens_unchanged(data_dir, tiny_encoder):
    tok, split = sst_rows(data_dir, tiny_encoder)
    longest = pad_batch(split.input_ids, split.token_type_ids, tok.pad_token_id)
    bucket = pad_batch(split.input_ids, split.token_type_ids, tok.pad_token_id, pad_to_multiple_of=16)
    T, T16 = longest["input_ids"].shape[1], bucket["input_ids"].shape[1]
    assert T16 % 16 == 0 and T <= T16 < T + 16 and T16 > T  # real SST rows: longest is not a multiple
    assert torch.equal(bucket["input_ids"][:, :T], longest["input_ids"])
    assert int(bucket["attention_mask"][:, T:].sum()) == 0
    model = BertModel.from_pretrained(tiny_encoder).eval()
    with torch.no_grad():
        a = model(**longest)
        b = model(**bucket)
    m = longest["attention_mask"].bool()
    torch.testing.assert_close(b.last_hidden_state[:, :T][m], a.last_hidden_state[m], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(b.pooler_output, a.pooler_output, atol=1e-5, rtol=1e-5)


def test_graphs_need_cuda_parameters():
    with pytest.raises(ValueError, match="CUDA"):
        GraphedSteps([torch.nn.Parameter(torch.zeros(2))])
    with pytest.raises(ValueError, match="one dtype"):
        GraphedSteps(
            [torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))], capture=False
        )


def test_static_inputs_are_views_of_one_buffer_that_one_copy_fills():
    """A graph's inputs of mixed dtypes and shapes (0-d, empty, bool) live in one byte buffer, each
    starting 16-byte aligned (as Triton's kernels compiled ahead assume), start with the values
    given and take new values (non-contiguous host tensors too, strided ones included) by one
    copy of the whole buffer."""
    first = {"mask": torch.tensor([True, False, True]), "ids": torch.arange(6).view(2, 3),
             "cu": torch.tensor([0, 3, 5], dtype=torch.int32), "labels": torch.tensor([1.5, -2.0]),
             "scale": torch.tensor(0.25), "none": torch.zeros(0, 4, dtype=torch.int64)}
    static = StaticInputs(first, torch.device("cpu"))
    base = static.buffer.data_ptr()
    assert static.buffer.dtype == torch.uint8 and static.buffer.numel() == 16 + 48 + 16 + 16 + 16
    for k, t in static.tensors.items():
        offset = t.data_ptr() - base if t.numel() else 0  # (an empty tensor points nowhere)
        assert 0 <= offset <= static.buffer.numel() - t.numel() * t.element_size(), k
        assert offset % 16 == 0, k
        assert t.dtype == first[k].dtype and t.shape == first[k].shape and torch.equal(t, first[k]), k
    second = {"mask": torch.tensor([False, True, True]), "ids": torch.arange(12).view(3, 4)[:2, 1:],
              "cu": torch.tensor([0, 1, 5], dtype=torch.int32), "labels": torch.tensor([0.5, 9.0, 4.0])[::2],
              "scale": torch.tensor(-1.0), "none": torch.zeros(0, 4, dtype=torch.int64)}
    static.load(second)
    for k, t in static.tensors.items():
        assert torch.equal(t, second[k]), k
    assert static.buffer[16:64].view(torch.int64).tolist() == [1, 2, 3, 5, 6, 7]  # after the mask's 3 bytes + 13


def test_gradient_buffers_are_views_of_one_flat_tensor():
    # without capture (any device): eager steps accumulate into slices of GraphedSteps.flat, so
    # one all_reduce of .flat averages every gradient (train.grad_sync=flat)
    torch.manual_seed(0)
    lin, other = torch.nn.Linear(3, 2), torch.nn.Linear(3, 1)
    params = [*lin.parameters(), *other.parameters()]
    steps = GraphedSteps(params, capture=False)
    assert steps.flat.shape == (sum(p.numel() for p in params),)
    x = torch.randn(4, 3)

    def fn(batch):
        loss = lin(batch["x"]).square().mean()
        return loss, loss.detach()

    steps.zero_grad()
    steps.run("a", fn, {"x": x}, scale=0.5)
    steps.run("a", fn, {"x": x}, scale=0.5)  # seen twice: still eager (no capture)
    assert steps.stats() == {"captured": 0, "capture_s": 0.0, "replays": 0, "eager": 2}
    ref = torch.autograd.grad(lin(x).square().mean(), list(lin.parameters()))
    torch.testing.assert_close(steps.flat[: lin.weight.numel()], ref[0].flatten(), rtol=0, atol=1e-7)
    torch.testing.assert_close(steps.flat[lin.weight.numel(): 8], ref[1], rtol=0, atol=1e-7)
    assert int(steps.flat[8:].count_nonzero()) == 0  # `other` was not reached
    steps.flat.mul_(2.0)  # what an in-place all_reduce does: p.grad sees it
    steps.expose_grads()
    torch.testing.assert_close(lin.weight.grad, 2 * ref[0], rtol=0, atol=1e-7)
    assert other.weight.grad is None and other.bias.grad is None


def _model_and_batches(tiny_encoder, data_dir, device):
    cfg = load_config(None, [
        "tasks.sst.dropout=0.0", "tasks.qqp.dropout=0.0", "tasks.sts.dropout=0.0",
        "model.hidden_dropout_prob=0.0", "model.attention_probs_dropout_prob=0.0",
    ])
    model = build_model(cfg, tiny_encoder).to(device)
    tok = Tokenizer(tiny_encoder, 64)
    batches = {}
    for name, file in (("sst", "ids-sst-dev.csv"), ("sts", "sts-dev.csv")):
        task = get_task(name)
        split = tokenize_split(task.read(data_dir / file, "dev").subset(48), tok, task.input_kind("bi"))
        # two different batches of the same padded shape, so the second replays the graph
        rows = [np.arange(0, 8), np.arange(8, 16)]
        bs = [task.collate(split, r, tok.pad_token_id, pad_to_multiple_of=64) for r in rows]
        batches[name] = [{k: v for k, v in b.items() if isinstance(v, torch.Tensor)} for b in bs]
    tasks = {n: get_task(n) for n in batches}
    step = TrainStep(model, tasks, {"sst": 1.0, "sts": 0.5}, device, amp=False)
    return model, step, batches


def _eager_grads(model, step, batches, device):
    model.zero_grad(set_to_none=True)
    out = step({n: {k: v.to(device) for k, v in b.items()} for n, b in batches.items()})
    (out.total / 2).backward()
    grads = {n: (p.grad.clone() if p.grad is not None else None) for n, p in model.named_parameters()}
    return grads, out.per_task.detach()


@cuda
def test_graph_replay_gives_eager_gradients(tiny_encoder, data_dir):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda")
    model, step, batches = _model_and_batches(tiny_encoder, data_dir, device)
    named = list(model.named_parameters())
    graphs = GraphedSteps([p for _, p in named])
    for _ in range(2):  # first pass: each shape runs eagerly; second: captured, then replayed
        for which in range(2):  # two batches per shape: the second replay reads new inputs
            b = {n: v[which] for n, v in batches.items()}
            want, want_losses = _eager_grads(model, step, b, device)
            graphs.zero_grad()
            losses = torch.cat([graphs.run(n, _task_step(step, n), x, 0.5) for n, x in b.items()])
            graphs.expose_grads()
            torch.testing.assert_close(losses, want_losses, atol=1e-5, rtol=1e-5)
            for n, p in named:
                if want[n] is None:  # unreached (pooler, qqp head): no gradient, as in eager
                    assert p.grad is None, n
                else:
                    torch.testing.assert_close(p.grad, want[n], atol=1e-5, rtol=1e-4, msg=n)
    assert graphs.n_graphs == 2 and graphs.n_replays >= 3


@cuda
def test_direct_graphs_leave_eager_gradients_where_they_write_them(tiny_encoder, data_dir):
    """direct=True: one batch per optimizer step; the graphs share one memory pool and the
    optimizer reads each replay's own gradients. Shapes alternate (sst, sts, sst, ...), so a
    replay runs over memory that the other graph's gradients use: each step's gradients must still
    be its own, equal to eager backward's, with unreached parameters None."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda")
    model, step, batches = _model_and_batches(tiny_encoder, data_dir, device)
    named = list(model.named_parameters())
    graphs = GraphedSteps([p for _, p in named], direct=True)
    for rnd in range(3):  # round 0: each shape runs eagerly; then captured and replayed
        for which in range(2):
            for name in ("sst", "sts"):
                b = {name: batches[name][which]}
                want, want_losses = _eager_grads(model, step, b, device)
                graphs.zero_grad()
                losses = graphs.run(name, _task_step(step, name), b[name], 0.5)
                graphs.expose_grads()
                torch.testing.assert_close(losses, want_losses, atol=1e-5, rtol=1e-5)
                for i, (n, p) in enumerate(named):
                    if want[n] is None:
                        assert p.grad is None, n
                    else:
                        torch.testing.assert_close(p.grad, want[n], atol=1e-5, rtol=1e-4, msg=(rnd, name, n))
                        if rnd:  # a replay: the gradient is the graph's own, not the flat buffer
                            assert p.grad.data_ptr() != graphs.grads[i].data_ptr()
                with pytest.raises(RuntimeError, match="one batch per optimizer step"):
                    graphs.run(name, _task_step(step, name), b[name], 0.5)
    assert graphs.n_graphs == 2 and graphs.n_replays == 10  # round 0 replays its second batches


@pytest.mark.parametrize("max_norm", [None, 0.5, 100.0])
def test_norm_and_clip_is_clip_grad_norm_over_the_reached_parameters(max_norm):
    """What a one-graph step records after its backward: the global L2 norm of the gradients
    written (a parameter without one left out) and, with max_norm, the gradients scaled by
    min(1, max_norm / (norm + 1e-6)), computed here from the gradients by hand."""
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.zeros(s)) for s in ((3, 4), (4,), (2,))]
    grads = [torch.randn(3, 4), torch.randn(4), None]
    for p, g in zip(params, grads, strict=True):
        p.grad = None if g is None else g.clone()
    norm = norm_and_clip(params, max_norm)
    want = torch.cat([grads[0].flatten(), grads[1]]).square().sum().sqrt()
    torch.testing.assert_close(norm, want, rtol=1e-6, atol=0)
    scale = 1.0 if max_norm is None else min(1.0, max_norm / (float(want) + 1e-6))
    for p, g in zip(params[:2], grads[:2], strict=True):
        torch.testing.assert_close(p.grad, g * scale, rtol=1e-6, atol=1e-7)
    assert params[2].grad is None
    for p in params:
        p.grad = None
    assert float(norm_and_clip(params, max_norm)) == 0.0


@cuda
@pytest.mark.parametrize("max_norm", [None, 0.05])
def test_direct_graphs_clip_in_the_graph_as_eager_steps_do(tiny_encoder, data_dir, max_norm):
    """A replayed one-graph step's norm and clipped gradients equal clip_grad_norm_ after an
    eager backward of the same batch; the step's eager first sighting leaves the norm to the
    caller (step_norm None)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda")
    model, step, batches = _model_and_batches(tiny_encoder, data_dir, device)
    named = list(model.named_parameters())
    graphs = GraphedSteps([p for _, p in named], direct=True, grad_norm=True, max_norm=max_norm)
    for rnd in range(3):  # round 0: eager; then captured and replayed
        for which in range(2):
            b = {"sts": batches["sts"][which]}
            want, _ = _eager_grads(model, step, b, device)
            reached = [g for g in want.values() if g is not None]
            want_norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in reached]))
            scale = 1.0 if max_norm is None else min(1.0, max_norm / (float(want_norm) + 1e-6))
            graphs.zero_grad()
            graphs.run("sts", _task_step(step, "sts"), b["sts"], 0.5)
            graphs.expose_grads()
            if rnd == 0 and which == 0:
                assert graphs.step_norm is None
                continue
            torch.testing.assert_close(graphs.step_norm, want_norm, rtol=1e-4, atol=1e-6)
            for n, p in named:
                if want[n] is None:
                    assert p.grad is None, n
                else:
                    torch.testing.assert_close(p.grad, want[n] * scale, atol=1e-5, rtol=1e-4, msg=(rnd, n))
    assert graphs.n_graphs == 1


@cuda
@pytest.mark.parametrize("max_norm", [None, 0.5])
def test_direct_graphs_that_update_train_as_eager_steps_do(tiny_encoder, data_dir, max_norm):
    """GraphedSteps(updater=AdamW): a replayed step is forward, backward, clipping and our fused
    AdamW update in one graph, with each group's lr from the host at every step. Against a copy
    of the model trained eagerly (backward, clip_grad_norm_, AdamW.step) on the same batches and
    lrs: the same weights and optimizer state after every step. Tasks alternate, so the heads'
    step counts differ; the first sighting of each shape runs eagerly (step_updated False) and
    the caller's optimizer.step() updates."""
    import copy

    from minbert.training.optim import AdamW, param_groups

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    device = torch.device("cuda")
    model, step, batches = _model_and_batches(tiny_encoder, data_dir, device)
    ref_model = copy.deepcopy(model)
    ref_step = TrainStep(ref_model, step.tasks, step.weights, device, amp=False)
    opts = [AdamW(param_groups(m, 0.01, lr=2e-3, head_lr=5e-3), weight_decay=0.01, fused=True)
            for m in (model, ref_model)]
    base = [g["lr"] for g in opts[0].param_groups]
    params = [p for p in model.parameters() if p.requires_grad]
    graphs = GraphedSteps(params, direct=True, grad_norm=True, max_norm=max_norm, updater=opts[0])
    updated = []
    for k in range(10):
        name, which = ("sst", "sts")[k % 2], (k // 2) % 2
        for opt in opts:  # a warmup schedule; float32 values, as the graph reads them
            for g, lr in zip(opt.param_groups, base, strict=True):
                g["lr"] = float(torch.tensor(lr * (k + 1) / 10, dtype=torch.float32))
        graphs.zero_grad()
        graphs.run(name, _task_step(step, name), batches[name][which], 1.0, [g["lr"] for g in opts[0].param_groups])
        updated.append(graphs.step_updated)
        if not graphs.step_updated:
            graphs.expose_grads()
            norm_and_clip(params, max_norm)
            opts[0].step()
        ref_model.zero_grad(set_to_none=True)
        ref_step({name: {kk: v.to(device) for kk, v in batches[name][which].items()}}).total.backward()
        if max_norm is not None:
            torch.nn.utils.clip_grad_norm_([p for p in ref_model.parameters() if p.grad is not None], max_norm)
        opts[1].step()
        for (n, p), q in zip(model.named_parameters(), ref_model.parameters(), strict=True):
            torch.testing.assert_close(p, q, atol=2e-6, rtol=1e-5, msg=(k, n))
    assert updated == [False, False, True, True, True, True, True, True, True, True]
    for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
        a, b = opts[0].state.get(p, {}), opts[1].state.get(q, {})
        assert a.keys() == b.keys()
        if a:
            assert int(a["step"]) == int(b["step"])
            torch.testing.assert_close(a["exp_avg"], b["exp_avg"], atol=1e-6, rtol=1e-4)
    assert {int(opts[0].state[p]["step"]) for p in model.heads["sts"].parameters()} == {5}
    assert not any(p in opts[0].state for p in model.heads["qqp"].parameters())


@cuda
def test_graph_training_matches_eager_training(tiny_encoder, data_dir, tmp_path):
    """Whole runs: same data, dropout off, fp32: graphs on and off reach the same weights."""
    from minbert.training.trainer import train

    torch.backends.cuda.matmul.allow_tf32 = False
    common = [
        f"model.encoder={tiny_encoder}", "train.epochs=1", "train.max_steps=12", "train.amp=off", "train.device=cuda",
        "data.pad_to_multiple_of=32", "output.test_predictions=false", "output.plot=false", "output.report_to=none",
        "tasks.sst.batch_size=8", "tasks.qqp.batch_size=8", "tasks.sts.batch_size=8",
        "tasks.sst.dropout=0.0", "tasks.qqp.dropout=0.0", "tasks.sts.dropout=0.0",
        "model.hidden_dropout_prob=0.0", "model.attention_probs_dropout_prob=0.0",
    ]
    runs = []
    for name in ("on", "off"):
        cfg = load_config(None, [*common, f"train.cuda_graphs={name}"])
        runs.append(train(cfg, tmp_path / name, data_dir=data_dir, progress=False))
    from minbert.io import load_weights

    a, _ = load_weights(tmp_path / "on" / "checkpoints" / "best" / "model.safetensors")
    b, _ = load_weights(tmp_path / "off" / "checkpoints" / "best" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=2e-5, rtol=1e-4, msg=k)
    assert runs[0].summary["dev"] == pytest.approx(runs[1].summary["dev"], abs=1e-4)


@cuda
def test_packed_run_with_the_update_in_the_graph_matches_one_updating_from_the_host(
    tiny_encoder, data_dir, tmp_path, caplog
):
    """Whole packed bf16 runs with one graph per step, dropout off: the update captured in the
    graph (train.nonfinite=stop) and run from the host (nonfinite=skip, which keeps it outside,
    saying so in one log line) reach the same weights; the checkpoint's optimizer state counts
    the graph's updates in float32 step tensors."""
    import logging

    from minbert.io import load_weights
    from minbert.runs import last_checkpoint
    from minbert.training.checkpoint import load_train_state
    from minbert.training.trainer import train

    common = [
        f"model.encoder={tiny_encoder}", "train.epochs=1", "train.max_steps=12", "train.device=cuda",
        "output.test_predictions=false", "output.plot=false", "output.report_to=none", "train.checkpoint_every=6",
        "tasks.sst.batch_size=8", "tasks.qqp.batch_size=8", "tasks.sts.batch_size=8",
        "tasks.sst.dropout=0.0", "tasks.qqp.dropout=0.0", "tasks.sts.dropout=0.0",
        "model.hidden_dropout_prob=0.0", "model.attention_probs_dropout_prob=0.0", "optim.lr=1e-4",
    ]
    with caplog.at_level(logging.INFO, logger="minbert.training.step"):
        for nonfinite in ("stop", "skip"):
            cfg = load_config(None, [*common, f"train.nonfinite={nonfinite}"])
            run = train(cfg, tmp_path / nonfinite, data_dir=data_dir, progress=False)
            assert run.summary["steps"] == 12 and run.summary["throughput"]["graphs"]["replays"] > 0
    outside = [r.getMessage() for r in caplog.records if "outside the step's graph" in r.getMessage()]
    assert len(outside) == 1 and "nonfinite=skip" in outside[0]
    a, _ = load_weights(last_checkpoint(tmp_path / "stop") / "model.safetensors")
    b, _ = load_weights(last_checkpoint(tmp_path / "skip") / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4, msg=k)
    state = load_train_state(last_checkpoint(tmp_path / "stop"))["optimizer"]["state"]
    assert all(isinstance(s["step"], torch.Tensor) and s["step"].dtype == torch.float32 for s in state.values())
    assert max(float(s["step"]) for s in state.values()) == 12.0  # the graph's updates were counted
    assert all(float(s["exp_avg_sq"].abs().sum()) > 0 for s in state.values() if float(s["step"]) > 0)


def test_compiled_encoder_equals_eager(tiny_encoder):
    """torch.compile (train.compile=on) changes kernels, not results."""
    torch.manual_seed(0)
    model = BertModel.from_pretrained(tiny_encoder).eval()
    ids = torch.randint(1000, 2000, (3, 11))
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    with torch.no_grad():
        want = model(ids, mask)
        compiled = torch.compile(model, dynamic=True)
        got = compiled(ids, mask)
    torch.testing.assert_close(got.last_hidden_state, want.last_hidden_state, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.pooler_output, want.pooler_output, atol=1e-5, rtol=1e-5)
