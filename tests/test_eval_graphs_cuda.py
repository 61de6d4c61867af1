"""On a GPU: dev evaluation replayed as CUDA graphs (minbert.inference.graphs) gives the outputs
of the same packed evaluation run op by op, and follows in-place weight updates; with
``bf16_weights`` (a bf16 copy of the model, refreshed per split) within bf16 rounding of them."""

from __future__ import annotations

import pytest
import torch

from minbert.config import load_config
from minbert.data.tokenizer import Tokenizer
from minbert.inference.evaluate import predict_split
from minbert.inference.graphs import GraphedForward
from minbert.model.multitask import build_model
from minbert.tasks.splits import load_splits
from minbert.tasks.table import task_table

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("attn,amp,bf16", [("eager", False, False), ("sdpa", True, False), ("sdpa", True, True)])
def test_graphed_evaluation_equals_op_by_op(tiny_encoder, data_dir, attn, amp, bf16):
    limits = [f"tasks.{t}.{k}" for t in ("sst", "qqp", "sts") for k in ("train_limit=8", "dev_limit=300")]
    cfg = load_config(None, [f"model.encoder={tiny_encoder}", f"model.attn_implementation={attn}", *limits])
    tasks = task_table(cfg)
    tok = Tokenizer(str(tiny_encoder), cfg.model.max_length)
    dev = load_splits(cfg, data_dir, tok, tasks)["dev"]
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = build_model(cfg, str(tiny_encoder), tasks=tasks).to(device).eval()
    model.pack_eval = True
    graphs = GraphedForward(device, bf16_weights=bf16)

    def outputs(with_graphs: bool) -> dict:
        model.eval_graphs = graphs if with_graphs else None
        return {n: predict_split(model, tasks[n], s, device, 64, amp, tok.pad_token_id).outputs for n, s in dev.items()}

    tol = dict(atol=5e-2, rtol=5e-2) if bf16 else dict(atol=3e-2, rtol=3e-2) if amp else dict(atol=1e-5, rtol=1e-5)
    ref = outputs(False)
    if bf16:  # the graphs ran the bf16 copy: other roundings than autocast's
        got = outputs(True)
        assert graphs._copy is not None and graphs._copy[0] is model
        assert any(not torch.equal(torch.from_numpy(got[n]), torch.from_numpy(ref[n])) for n in ref)
        graphs = GraphedForward(device, bf16_weights=bf16)  # the loop below counts from a fresh one
    for i in range(3):  # each shape: seen once op by op, then captured and replayed
        got = outputs(True)
        for n in ref:
            torch.testing.assert_close(torch.from_numpy(got[n]), torch.from_numpy(ref[n]), **tol, msg=n)
        if i == 0:
            first = graphs.stats()
            n_batches = first["eager"] + first["replays"]
    stats = graphs.stats()
    assert stats["eager"] == first["eager"] >= 1  # no shape runs op by op after its first pass
    assert stats["replays"] == first["replays"] + 2 * n_batches  # every batch of the later passes replays
    assert 1 <= stats["captured"] <= first["eager"]

    with torch.no_grad():  # the graphs read the weights where they are
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    ref2 = outputs(False)
    got2 = outputs(True)
    for n in ref2:
        assert not torch.allclose(torch.from_numpy(ref2[n]), torch.from_numpy(ref[n]), atol=1e-3)
        torch.testing.assert_close(torch.from_numpy(got2[n]), torch.from_numpy(ref2[n]), **tol, msg=n)
    assert graphs.stats()["eager"] == first["eager"]
    if bf16:  # the copy was refreshed from the perturbed weights
        shadow = graphs._copy[1]
        assert torch.equal(shadow.encoder.inner.embeddings.word_embeddings.weight,
                           model.encoder.embeddings.word_embeddings.weight.detach().bfloat16())
    if bf16:
        with pytest.raises(ValueError, match="one model"):
            graphs.runner(build_model(cfg, str(tiny_encoder), tasks=tasks).to(device))


def test_bf16_graphs_fall_back_to_the_model_for_a_shared_parameter(tiny_encoder, caplog):
    cfg = load_config(None, [f"model.encoder={tiny_encoder}", "model.attn_implementation=sdpa"])
    model = build_model(cfg, str(tiny_encoder), tasks=task_table(cfg)).to("cuda").eval()
    head = next(m for m in model.heads["sst"].modules() if isinstance(m, torch.nn.Linear))
    head.bias = model.encoder.pooler.dense.bias
    graphs = GraphedForward(torch.device("cuda"), bf16_weights=True)
    with caplog.at_level("INFO", logger="minbert.inference.graphs"):
        assert graphs.runner(model) is model
    assert "share no parameter" in caplog.text and not graphs.bf16_weights


def test_graphs_of_one_pool_reuse_its_memory():
    """Graphs captured into one pool on one stream reuse the pool's freed blocks: six graphs of
    the same work take about the memory of one, not six times it (a new capture stream per graph
    would give each its own)."""
    graphs = GraphedForward(torch.device("cuda"), capture_after=0)
    x = torch.randn(2048, 2048, device="cuda")

    def work(inputs: dict) -> torch.Tensor:  # a 16 MiB temporary per call, freed inside the graph
        return (inputs["x"] @ inputs["x"]).relu().sum(0)

    torch.cuda.synchronize()
    start = torch.cuda.memory_reserved()
    with torch.inference_mode():
        graphs("k0", work, {"x": x})
        one = torch.cuda.memory_reserved() - start
        for k in range(1, 6):
            graphs(f"k{k}", work, {"x": x})
    six = torch.cuda.memory_reserved() - start
    assert graphs.stats()["captured"] == 6 and one > 0
    assert six < 2 * one, (one, six)
