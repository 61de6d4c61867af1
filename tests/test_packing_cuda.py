"""On a GPU: the packed encoder with each varlen kernel (memory-efficient, FlashAttention-2, ours)
equals the padded encoder with SDPA within bf16 tolerance, in outputs and gradients, and replays as
a CUDA graph."""

from __future__ import annotations

import pytest
import torch

from minbert.model.bert import BertConfig, BertModel
from minbert.model.packing import pack, unpack

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CFG = dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def batch(lengths, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, 30000, (len(lengths), T), generator=g)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids * mask, torch.zeros_like(ids), mask


def run(model, packed, ids, types, mask, multiple_of=64):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        if packed:  # a filler of up to multiple_of - 1 tokens, longer than a row when > T
            p = pack(ids, mask, types, multiple_of=multiple_of, max_seqlen=max(ids.shape[1], multiple_of))
            out = model.forward_packed(p)
            h = unpack(out.last_hidden_state.float(), p, ids.shape[1])[mask.bool()]
        else:
            out = model(ids, mask, types)
            h = out.last_hidden_state.float()[mask.bool()]
        loss = h.pow(2).mean() + out.pooler_output.float().mean()
    loss.backward()
    return h.detach(), out.pooler_output.float().detach(), {n: p.grad.float() for n, p in model.named_parameters()}


@pytest.mark.parametrize("kernel", ["efficient", "flash", "triton"])
@pytest.mark.parametrize("multiple_of", [64, 512])
def test_varlen_packed_equals_padded_sdpa(multiple_of, kernel):
    torch.manual_seed(0)
    model = BertModel(BertConfig(**CFG, attn_implementation="sdpa", varlen_kernel=kernel)).cuda().train()
    ids, types, mask = (t.cuda() for t in batch([37, 5, 120, 64, 1, 90], 128))
    h0, p0, g0 = run(model, False, ids, types, mask)
    h1, p1, g1 = run(model, True, ids, types, mask, multiple_of)
    assert h1.isfinite().all()
    torch.testing.assert_close(h1, h0, atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(p1, p0, atol=3e-2, rtol=3e-2)
    for n in g0:
        if n.endswith("key.bias"):  # softmax ignores a shift shared by all keys: its true gradient is 0
            continue
        cos = torch.nn.functional.cosine_similarity(g0[n].flatten(), g1[n].flatten(), dim=0)
        assert cos > 0.99, (n, cos.item())


def test_a_packed_run_with_one_graph_per_step_trains_as_the_padded_eager_run(tiny_encoder, data_dir, tmp_path):
    """Whole runs in fp32 with dropout off: every step's tasks packed into one encoder pass and
    replayed as one CUDA graph per token bucket (eager varlen attention, the reference kernel)
    against the padded run without graphs: the same weights and dev scores."""
    from minbert.config import load_config
    from minbert.io import load_weights
    from minbert.training.trainer import train

    torch.backends.cuda.matmul.allow_tf32 = False
    common = [
        f"model.encoder={tiny_encoder}", "train.epochs=2", "train.amp=off", "train.device=cuda",
        "model.attn_implementation=eager", "output.test_predictions=false", "output.plot=false",
        "output.report_to=none", "model.hidden_dropout_prob=0.0", "model.attention_probs_dropout_prob=0.0",
        *(f"tasks.{t}.{k}" for t in ("sst", "qqp", "sts") for k in ("batch_size=8", "dropout=0.0", "train_limit=64")),
    ]
    packed = train(load_config(None, [*common, "model.packing=on", "train.cuda_graphs=on"]), tmp_path / "p",
                   data_dir=data_dir, progress=False)
    padded = train(load_config(None, [*common, "model.packing=off", "train.cuda_graphs=off"]), tmp_path / "e",
                   data_dir=data_dir, progress=False)
    graphs = packed.summary["throughput"]["graphs"]
    assert graphs["captured"] >= 1 and graphs["replays"] >= 1
    assert graphs["replays"] + graphs["eager"] == packed.summary["steps"]  # one graph (or eager pass) per step
    a, _ = load_weights(tmp_path / "p" / "checkpoints" / "best" / "model.safetensors")
    b, _ = load_weights(tmp_path / "e" / "checkpoints" / "best" / "model.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=5e-5, rtol=1e-4, msg=k)
    assert packed.summary["dev"] == pytest.approx(padded.summary["dev"], abs=1e-4)


def packed_qkv(lengths, hs=32, nh=4, seed=0):
    """qkv (N, 3, nh, hs) bf16 on CUDA and its cu_seqlens."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    return torch.randn(sum(lengths), 3, nh, hs, device="cuda", dtype=torch.bfloat16, generator=g), cu


def test_the_varlen_kernels_agree_without_dropout():
    """At dropout 0 auto runs the memory-efficient kernel, and it gives flash's attention and the
    fp32 reference's within bf16 rounding."""
    from minbert.model.bert import varlen_attention

    qkv, cu = packed_qkv([37, 5, 120, 64, 1, 90])
    eff, fl, auto = (
        varlen_attention(qkv, cu, 128, 0.0, "sdpa", kern).float() for kern in ("efficient", "flash", "auto")
    )
    assert torch.equal(auto, eff)
    torch.testing.assert_close(eff, fl, atol=1e-2, rtol=1e-2)
    ref = varlen_attention(qkv.float(), cu, 128, 0.0, "eager")
    torch.testing.assert_close(eff, ref, atol=2e-2, rtol=2e-2)


def test_the_efficient_kernel_refuses_dropout():
    from minbert.errors import ConfigError
    from minbert.model.bert import varlen_attention

    qkv, cu = packed_qkv([7, 9])
    with pytest.raises(ConfigError, match="'efficient' runs at dropout 0 only"):
        varlen_attention(qkv, cu, 16, 0.1, "sdpa", "efficient")


@pytest.mark.parametrize("kernel", ["auto", "flash", "triton"])
def test_the_backward_drops_what_the_forward_dropped(kernel):
    """With q = k = 0 each sequence's softmax is uniform (1/L); with v[t] the one-hot of t's
    position, out[i, j] = keep[i, j] / ((1 - p) L) shows the forward's dropout mask, and with the
    output gradient dO[i] the one-hot of i's position, dV[j, i] = keep[i, j] / ((1 - p) L) shows the
    backward's. They must be the same mask, sequence by sequence."""
    from minbert.model.bert import pick_varlen_kernel, varlen_attention

    lengths, hs, nh = [5, 32, 7, 20, 1, 13], 32, 2
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    pos = torch.cat([torch.arange(n) for n in lengths]).cuda()
    onehot = torch.nn.functional.one_hot(pos, hs).to(torch.bfloat16)[:, None, :].expand(-1, nh, -1).contiguous()
    qkv = torch.stack((torch.zeros_like(onehot), torch.zeros_like(onehot), onehot), 1).requires_grad_()  # q = k = 0
    torch.manual_seed(0)
    out = varlen_attention(qkv, cu, 32, 0.5, "sdpa", kernel)
    out.backward(onehot)
    torch.manual_seed(0)
    with torch.no_grad():  # auto with dropout is the kernel it picks: the same mask from the same seed
        picked = pick_varlen_kernel(kernel, 0.5, hs)
        assert torch.equal(out, varlen_attention(qkv, cu, 32, 0.5, "sdpa", picked))
    kept = 0
    for a, b in zip(cu.tolist()[:-1], cu.tolist()[1:], strict=True):
        L = b - a
        fwd = out[a:b, :, :L] > 0  # (query, head, key)
        bwd = qkv.grad[a:b, 2, :, :L].permute(2, 1, 0) > 0  # dV[key, head, query] -> (query, head, key)
        assert torch.equal(fwd, bwd), (a, b)
        kept += int(fwd.sum())
    assert 0.4 < kept / (nh * sum(n * n for n in lengths)) < 0.6  # dropout at 0.5 did drop


@pytest.mark.parametrize("kernel", ["flash", "triton"])
def test_dropout_changes_at_every_graph_replay(kernel):
    """A CUDA graph of packed attention with dropout draws a new mask at every replay."""
    from minbert.model.bert import varlen_attention

    qkv, cu = packed_qkv([37, 5, 120, 64, 1, 90])
    plain = varlen_attention(qkv, cu, 128, 0.0, "sdpa")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        varlen_attention(qkv, cu, 128, 0.5, "sdpa", kernel)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = varlen_attention(qkv, cu, 128, 0.5, "sdpa", kernel)
    graph.replay()
    first = out.clone()
    graph.replay()
    assert not torch.equal(first, out)
    assert (first.float() - plain.float()).abs().max() > 0.1  # dropout at 0.5 moves it far from the undropped one


_TRAIN_A_PACKED_STEP = """
import torch
from minbert.model.bert import BertConfig, BertModel
from minbert.model.packing import pack
cfg = BertConfig(hidden_size=128, num_hidden_layers=1, num_attention_heads=4, intermediate_size=256,
                 attention_probs_dropout_prob=0.1)
model = BertModel(cfg).cuda().train()
mask = (torch.arange(40)[None, :] < torch.tensor([40, 17, 5])[:, None]).long().cuda()
ids = torch.randint(1, 1000, (3, 40), device="cuda") * mask
with torch.autocast("cuda", dtype=torch.bfloat16):
    out = model.forward_packed(pack(ids, mask, multiple_of=64, max_seqlen=64))
out.last_hidden_state.float().pow(2).mean().backward()
torch.cuda.synchronize()
"""


def test_the_background_compile_fills_the_cache_that_a_packed_step_reads(tmp_path, monkeypatch):
    """The kernel-compile children of a run whose encoder has 4 heads of 32 compile exactly the
    kernel variants that a packed training step of that shape (bf16 autocast, attention dropout)
    launches: a fresh process running that step afterwards finds all of them in Triton's cache
    and compiles nothing more."""
    import json
    import subprocess
    import sys

    pytest.importorskip("triton")
    from minbert.config import load_config
    from minbert.model.bert import BertConfig
    from minbert.training.kernel_compile import start_kernel_compile, wait_kernel_compile

    encoder = tmp_path / "encoder"
    encoder.mkdir()
    hf = BertConfig(hidden_size=128, num_hidden_layers=1, num_attention_heads=4, intermediate_size=256)
    (encoder / "config.json").write_text(json.dumps(hf.to_hf_dict()))
    cache = tmp_path / "triton"
    monkeypatch.setenv("TRITON_CACHE_DIR", str(cache))  # the children's cache
    children = start_kernel_compile(load_config(None, [f"model.encoder={encoder}"]), "cuda")
    assert len(children) == 3  # one child per kernel: forward, dQ, dK/dV
    wait_kernel_compile(children)
    assert [c.returncode for c in children] == [0, 0, 0]
    compiled = sorted(p.name for p in cache.iterdir())
    kernels = [n for n in compiled if any(f.suffix == ".cubin" for f in (cache / n).iterdir())]
    assert len(kernels) == 3  # forward, dQ, dK/dV
    step = subprocess.run([sys.executable, "-c", _TRAIN_A_PACKED_STEP], capture_output=True, text=True)
    assert step.returncode == 0, step.stderr[-2000:]
    assert sorted(p.name for p in cache.iterdir()) == compiled  # nothing compiled again


def test_the_weight_grad_stream_gives_the_serial_gradients_eager_compiled_and_graphed(monkeypatch):
    """``weight_grad_stream`` runs each projection's dW and db on a second stream beside its dx:
    the gradients of a packed bf16 step are the serial ones, run eagerly, compiled, and compiled
    inside our CUDA graphs as training runs it (GraphedSteps, the fork and the join captured;
    the gradients of the graph's third replay). Bit for bit, but for the embeddings' compiled
    gradients, whose scatter-add inductor lowers to atomics (an order of fp32 additions)."""
    from minbert.model import train_ops
    from minbert.model.packing import PackedBatch
    from minbert.training.cudagraph import GraphedSteps

    forks = []
    two_streams = train_ops._linear_grads_two_streams
    monkeypatch.setattr(train_ops, "_linear_grads_two_streams", lambda *a: forks.append(1) or two_streams(*a))
    ids, types, mask = (t.cuda() for t in batch([37, 5, 120, 64, 1, 90], 128))
    p = pack(ids, mask, types, multiple_of=64, max_seqlen=128)
    inputs = {"input_ids": p.input_ids, "token_type_ids": p.token_type_ids, "position_ids": p.position_ids,
              "cu_seqlens": p.cu_seqlens}
    got = {}
    for flag in (False, True):
        torch.manual_seed(0)
        model = BertModel(BertConfig(**CFG, attn_implementation="sdpa", weight_grad_stream=flag)).cuda().train()

        def loss_fn(b, model=model):
            packed = PackedBatch(b["input_ids"], b["token_type_ids"], b["position_ids"], b["cu_seqlens"],
                                 p.max_seqlen, p.num_real)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = model.forward_packed(packed)
                loss = out.last_hidden_state.float().pow(2).mean() + out.pooler_output.float().mean()
            return loss, loss.detach()

        compiled = torch.compile(loss_fn, dynamic=True)
        for mode, fn in (("eager", loss_fn), ("compiled", compiled)):
            model.zero_grad(set_to_none=True)
            fn(inputs)[0].backward()
            got[flag, mode] = {n: q.grad.clone() for n, q in model.named_parameters()}
        graphs = GraphedSteps(list(model.parameters()), capture_after=0, direct=True)
        for _ in range(3):  # captured at the first (after an eager run and the warm-up), replayed at each
            graphs.zero_grad()
            graphs.run("step", compiled, inputs)
            graphs.expose_grads()
        assert (graphs.stats()["captured"], graphs.stats()["replays"]) == (1, 3)
        got[flag, "graphed"] = {n: q.grad.clone() for n, q in model.named_parameters()}
        torch._dynamo.reset()
        assert bool(forks) == flag  # the two-stream products ran where the flag is on, only there
    for mode in ("eager", "compiled", "graphed"):
        for n, want in got[False, mode].items():
            if "embeddings" in n and mode != "eager":
                torch.testing.assert_close(got[True, mode][n], want, rtol=1e-5, atol=1e-6)
            else:
                assert torch.equal(got[True, mode][n], want), (mode, n)
    assert sum(g.abs().sum() for g in got[True, "graphed"].values()) > 0
