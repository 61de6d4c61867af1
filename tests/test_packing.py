"""The packed layout: pack/unpack keep every real token, and BertModel.forward_packed (eager
varlen reference on CPU) equals the padded forward token for token, in outputs and gradients, in
fp32; the CUDA varlen kernels refuse devices and dtypes they cannot run on. The CUDA kernel is
compared with the padded forward in tests/test_packing_cuda.py (GPU only)."""

from __future__ import annotations

import logging
import sys

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from minbert.errors import ConfigError
from minbert.model import bert
from minbert.model.bert import BertModel, pick_varlen_kernel, triton_unsuitable, varlen_attention
from minbert.model.packing import pack, pack_plan, segment_ids, unpack


def padded_batch(lengths, T, vocab=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    B = len(lengths)
    ids = torch.randint(1, vocab, (B, T), generator=g)
    types = torch.randint(0, 2, (B, T), generator=g)
    mask = (torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]).long()
    return ids * mask, types * mask, mask


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 12), min_size=1, max_size=6),
    extra=st.integers(0, 3),
    multiple_of=st.integers(1, 8),
)
def test_pack_keeps_every_token_and_unpack_restores_it(lengths, extra, multiple_of):
    T = max(lengths) + extra
    ids, types, mask = padded_batch(lengths, T)
    p = pack(ids, mask, types, multiple_of=multiple_of, max_seqlen=T + multiple_of)
    n = sum(lengths)
    N = p.input_ids.shape[0]
    assert N % multiple_of == 0 and n <= N < n + multiple_of  # at most one filler, shorter than the bucket
    assert p.num_real == len(lengths)
    assert p.cu_seqlens.dtype == torch.int32 and p.cu_seqlens[-1].item() == N
    assert p.cu_seqlens[: len(lengths) + 1].tolist() == [sum(lengths[:i]) for i in range(len(lengths) + 1)]
    assert len(p.cu_seqlens) == len(lengths) + 1 + (N > n)
    assert torch.equal(unpack(p.input_ids, p, T), ids) and torch.equal(unpack(p.token_type_ids, p, T), types)
    # positions restart at 0 in every sequence, the filler's included
    seg = segment_ids(p.cu_seqlens, N)
    starts = p.cu_seqlens.long()[seg]
    assert torch.equal(p.position_ids, torch.arange(N) - starts)
    assert (p.input_ids[n:] == 0).all()


def test_pack_rejects_left_padding_and_a_filler_longer_than_max_seqlen():
    ids, types, mask = padded_batch([3, 2], 4)
    with pytest.raises(ValueError, match="right-padded"):
        pack(ids, mask.flip(1), types)
    with pytest.raises(ValueError, match="more than max_seqlen 4"):
        pack(ids, mask, types, multiple_of=64, max_seqlen=4)


@pytest.fixture(scope="module")
def model(tiny_encoder):
    torch.manual_seed(0)
    return BertModel.from_pretrained(tiny_encoder, attn_implementation="eager").eval()


@pytest.mark.parametrize("multiple_of", [1, 16])
def test_forward_packed_equals_padded_forward(model, multiple_of):
    lengths = [9, 3, 14, 1, 6]
    ids, types, mask = padded_batch(lengths, 16, seed=1)
    want = model(ids, mask, types)
    p = pack(ids, mask, types, multiple_of=multiple_of)
    got = model.forward_packed(p)
    assert got.last_hidden_state.shape == (p.input_ids.shape[0], model.config.hidden_size)
    real = mask.bool()
    torch.testing.assert_close(unpack(got.last_hidden_state, p, 16)[real], want.last_hidden_state[real],
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.pooler_output, want.pooler_output, atol=1e-5, rtol=1e-5)


def test_forward_packed_gradients_equal_padded_gradients(model):
    lengths = [5, 11, 2]
    ids, types, mask = padded_batch(lengths, 12, seed=2)
    real = mask.bool()
    grads = []
    for packed in (False, True):
        model.zero_grad(set_to_none=True)
        if packed:
            p = pack(ids, mask, types, multiple_of=8)
            out = model.forward_packed(p)
            h = out.last_hidden_state[: sum(lengths)]
        else:
            out = model(ids, mask, types)
            h = out.last_hidden_state[real]
        loss = h.pow(2).mean() + out.pooler_output.sum()
        loss.backward()
        grads.append({n: q.grad.clone() for n, q in model.named_parameters() if q.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) == len(list(model.parameters()))
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-5, rtol=1e-4, msg=name)
    model.zero_grad(set_to_none=True)


def test_eager_varlen_attention_is_per_sequence_softmax():
    """Each sequence attends to itself only: equal to plain attention run sequence by sequence."""
    torch.manual_seed(3)
    lengths = [4, 1, 7]
    N, nh, hs = sum(lengths), 2, 8
    q, k, v = (torch.randn(N, nh, hs) for _ in range(3))
    cu = torch.tensor([0, 4, 5, 12], dtype=torch.int32)
    got = varlen_attention(torch.stack((q, k, v), 1), cu, 7, 0.0, "eager")
    for a, b in zip(cu.tolist(), cu.tolist()[1:], strict=False):
        qs, ks, vs = (t[a:b].transpose(0, 1) for t in (q, k, v))  # (nh, L, hs)
        want = torch.softmax(qs @ ks.transpose(-1, -2) / hs**0.5, dim=-1) @ vs
        torch.testing.assert_close(got[a:b], want.transpose(0, 1))


@pytest.mark.parametrize("kernel", ["auto", "efficient", "flash", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sdpa_varlen_refuses_cpu(kernel, dtype):
    if kernel == "triton" and triton_unsuitable(16):
        pytest.skip(triton_unsuitable(16))
    qkv = torch.randn(5, 3, 2, 16, dtype=dtype)
    cu = torch.tensor([0, 5], dtype=torch.int32)
    with pytest.raises(ConfigError, match="CUDA in fp16/bf16"):
        varlen_attention(qkv, cu, 5, 0.0, "sdpa", kernel)


@pytest.mark.parametrize("dropout", [0.1, 1e-6])
def test_sdpa_varlen_refuses_the_efficient_kernel_with_dropout(dropout):
    """The efficient kernel's backward does not drop what its forward dropped (see
    benchmarks/attention_varlen.py --mask-check): it runs at dropout 0 only, on any device's check."""
    qkv = torch.randn(5, 3, 2, 8)
    cu = torch.tensor([0, 5], dtype=torch.int32)
    with pytest.raises(ConfigError, match=rf"varlen_kernel 'efficient' with attention dropout {dropout}: .*dropout 0"):
        varlen_attention(qkv, cu, 5, dropout, "sdpa", "efficient")


@pytest.mark.parametrize("kernel, dropout", [("Flash", 0.0), ("", 0.1), ("cudnn", 0.0)])
def test_sdpa_varlen_refuses_an_unknown_kernel(kernel, dropout):
    qkv = torch.randn(5, 3, 2, 8)
    cu = torch.tensor([0, 5], dtype=torch.int32)
    with pytest.raises(ConfigError, match=rf"varlen_kernel '{kernel}' is not one of 'auto', 'efficient', 'flash'"):
        varlen_attention(qkv, cu, 5, dropout, "sdpa", kernel)


@pytest.mark.skipif(not bert._TRITON_INSTALLED, reason="needs the triton package")
def test_a_triton_that_does_not_import_falls_back_under_auto_and_raises_when_asked_for(monkeypatch, caplog):
    """Installed but broken: auto logs one line and takes FlashAttention-2's kernel (here the CPU
    check then refuses it); an explicit 'triton' raises ConfigError."""
    monkeypatch.setitem(sys.modules, "minbert.model.varlen_triton", None)  # import -> ImportError
    qkv = torch.randn(5, 3, 2, 16)
    cu = torch.tensor([0, 5], dtype=torch.int32)
    bert._log_once.cache_clear()
    with caplog.at_level(logging.INFO, logger="minbert.model.bert"):
        with pytest.raises(ConfigError, match="on CUDA in fp16/bf16 only"):
            varlen_attention(qkv, cu, 5, 0.1, "sdpa", "auto")
    assert [r.getMessage()[:80] for r in caplog.records] == [
        "varlen_kernel auto: FlashAttention-2's kernel with dropout ('triton' cannot run: triton does not import"[:80]]
    with pytest.raises(ConfigError, match="varlen_kernel 'triton' cannot run: triton does not import"):
        varlen_attention(qkv, cu, 5, 0.1, "sdpa", "triton")


def test_auto_picks_the_kernel_by_dropout_and_head_size(caplog):
    """auto: the efficient kernel without dropout; with dropout ours where Triton imports and the
    head size is a power of two in [16, 128], else FlashAttention-2's, saying why in one line."""
    ours = "flash" if triton_unsuitable(64) else "triton"
    assert [pick_varlen_kernel("auto", p, 64) for p in (0.0, 0.1)] == ["efficient", ours]
    bert._log_once.cache_clear()
    with caplog.at_level(logging.INFO, logger="minbert.model.bert"):
        assert pick_varlen_kernel("auto", 0.1, 48) == "flash"
        assert pick_varlen_kernel("auto", 0.1, 48) == "flash"
    assert [r.getMessage() for r in caplog.records].count(
        f"varlen_kernel auto: FlashAttention-2's kernel with dropout ('triton' cannot run: {triton_unsuitable(48)})"
    ) == 1  # once per process
    assert pick_varlen_kernel("flash", 0.1, 48) == "flash"


@pytest.mark.parametrize("hs", [8, 48, 256])
def test_the_triton_kernel_refuses_head_sizes_it_does_not_tile(hs):
    if bert._TRITON_INSTALLED:
        assert triton_unsuitable(hs) == f"head size {hs} is not a power of two in [16, 128]"
    with pytest.raises(ConfigError, match=r"varlen_kernel 'triton' cannot run: (head size|the triton package)"):
        pick_varlen_kernel("triton", 0.1, hs)


def test_forward_packed_checks_max_seqlen(model):
    ids, types, mask = padded_batch([3], 4)
    p = pack(ids, mask, types)._replace(max_seqlen=model.config.max_position_embeddings + 1)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model.forward_packed(p)


# ----------------------------------------------------------------------------------------------
# edge cases: what pack refuses, and where forward_packed still equals the padded forward


@pytest.mark.parametrize("lengths, row", [([3, 0, 2], 1), ([3, 2, 0], 2), ([0, 0], 0), ([0], 0)])
def test_pack_refuses_an_empty_sequence(lengths, row):
    """An empty row has no [CLS]: no pooled output can exist for it (and its offset would point at
    the next sequence's first token, or past the end)."""
    ids, types, mask = padded_batch(lengths, 4)
    with pytest.raises(ValueError, match=rf"row {row} of attention_mask is empty"):
        pack(ids, mask, types)
    with pytest.raises(ValueError, match=rf"row {row} of attention_mask is empty"):
        pack_plan(mask, 2)


def test_pack_refuses_a_max_seqlen_below_the_longest_sequence():
    """The varlen kernels size their grids by max_seqlen: a longer sequence would be cut short."""
    ids, types, mask = padded_batch([5, 2], 6)
    with pytest.raises(ValueError, match="max_seqlen 3 < the longest sequence, 5 tokens"):
        pack(ids, mask, types, max_seqlen=3)
    assert pack(ids, mask, types, max_seqlen=5).max_seqlen == 5


def test_pack_refuses_a_multiple_whose_filler_may_not_fit_whatever_the_batch():
    """Whether a filler fits must not depend on the batch: [3, 1] needs 12 filler tokens with
    multiple_of 16 and would pass with max_seqlen 12, but [3, 2] (11) and [2, 1] (13) decide otherwise."""
    message = "multiple_of 16 needs fillers of up to 15 tokens, more than max_seqlen 12"
    for lengths in ([3, 1], [3, 2], [2, 1]):
        ids, types, mask = padded_batch(lengths, 6)
        with pytest.raises(ValueError, match=message):
            pack(ids, mask, types, multiple_of=16, max_seqlen=12)
    assert pack(ids, mask, types, multiple_of=13, max_seqlen=12).input_ids.shape == (13,)


@pytest.mark.parametrize(
    "shapes, message",
    [(((2, 5), (2, 4), (2, 5)), "attention_mask"), (((2, 5), (2, 5), (2, 4)), "token_type_ids"),
     (((5,), (5,), (5,)), "input_ids")],
)
def test_pack_names_an_input_of_the_wrong_shape(shapes, message):
    ids, mask, types = (torch.ones(s, dtype=torch.int64) for s in shapes)
    with pytest.raises(ValueError, match=rf"{message} of shape"):
        pack(ids, mask, types)


@pytest.mark.parametrize(
    "lengths, T, multiple_of, dtype, strided",
    [
        ([1, 1, 1], 3, 1, torch.int64, False),  # one token per row
        ([1, 1], 1, 1, torch.int64, False),  # T = 1
        ([1, 1, 1], 1, 2, torch.int64, False),  # T = 1 and a filler of 1
        ([3, 5, 2], 6, 4, torch.int32, False),  # int32 in, int64 out
        ([4, 6, 1, 2], 6, 4, torch.int64, True),  # non-contiguous inputs
    ],
)
def test_forward_packed_equals_padded_forward_at_the_edges(model, lengths, T, multiple_of, dtype, strided):
    ids, types, mask = padded_batch(lengths, T, seed=4)
    inputs = [ids.to(dtype), mask.to(dtype), types.to(dtype)]
    if strided:  # the same values, laid out column-major
        inputs = [x.t().contiguous().t() for x in inputs]
        assert not inputs[0].is_contiguous()
    p = pack(*inputs, multiple_of=multiple_of)
    assert all(t.dtype == torch.int64 for t in (p.input_ids, p.token_type_ids, p.position_ids))
    assert p.input_ids.shape[0] % multiple_of == 0 and p.num_real == len(lengths)
    with torch.no_grad():
        got, want = model.forward_packed(p), model(ids, mask, types)
    real = mask.bool()
    torch.testing.assert_close(unpack(got.last_hidden_state, p, T)[real], want.last_hidden_state[real],
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.pooler_output, want.pooler_output, atol=1e-5, rtol=1e-5)


def _encoder_folders(tmp_path):
    """A small encoder's config.json (4 heads of 32: our kernel tiles them) and a wide one (head
    size 48: FlashAttention-2's kernel)."""
    import json

    encoder, wide = tmp_path / "encoder", tmp_path / "wide"
    hf = bert.BertConfig(hidden_size=128, num_hidden_layers=1, num_attention_heads=4, intermediate_size=256)
    for folder, hidden in ((encoder, 128), (wide, 192)):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps({**hf.to_hf_dict(), "hidden_size": hidden}))
    return encoder, wide


def test_the_kernel_compile_children_start_where_training_may_launch_our_kernel(monkeypatch, tmp_path):
    """child_args: three children (forward, backward-dq, backward-dkdv) for CUDA, packed sdpa attention, with the
    encoder, the run's encoder overrides and the autocast dtype; none elsewhere. start_early
    (before the device is known) starts them where train.device or a loaded NVIDIA driver says
    CUDA, on a machine's first process only, and leaves a bad setting to the run."""
    import json

    from minbert.config import load_config
    from minbert.training import kernel_compile as kc

    encoder, _ = _encoder_folders(tmp_path)

    def cfg(*overrides):
        return load_config(None, [f"model.encoder={encoder}", *overrides])

    args = kc.child_args(cfg(), "cuda")
    assert [a[-1] for a in args] == ["forward", "backward-dq", "backward-dkdv"]
    assert args[0][:4] == [sys.executable, "-m", "minbert.model.varlen_triton", str(encoder)]
    want = {"attn_implementation": "sdpa", "varlen_kernel": "auto", "weight_grad_stream": False}
    assert json.loads(args[0][4]) == want
    assert args[0][5] == "bfloat16"
    over = kc.child_args(cfg("model.attention_probs_dropout_prob=0.2", "train.amp=off", "model.packing=on",
                             "model.attn_implementation=eager"), "cuda")
    assert over == []  # eager attention: the reference, never our kernel
    assert kc.child_args(cfg(), "cpu") == []
    assert kc.child_args(cfg("model.packing=off"), "cuda") == []  # padded: SDPA's own kernels
    assert json.loads(kc.child_args(cfg("model.attention_probs_dropout_prob=0.2"), "cuda")[0][4])[
        "attention_probs_dropout_prob"] == 0.2

    started, driver_loaded = [], kc.nvidia_driver_loaded
    monkeypatch.setattr(kc.subprocess, "Popen", lambda a, **k: started.append(a) or a[-1])
    monkeypatch.setattr(kc, "nvidia_driver_loaded", lambda: False)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert kc.start_early(cfg()) is None  # auto without a driver: the run decides on its device
    assert kc.start_early(cfg("train.device=cpu")) is None
    assert kc.start_early(cfg("train.device=cuda")) == ["forward", "backward-dq", "backward-dkdv"]
    monkeypatch.setattr(kc, "nvidia_driver_loaded", lambda: True)
    assert kc.start_early(cfg()) == ["forward", "backward-dq", "backward-dkdv"]
    assert started == args * 2
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert kc.start_early(cfg()) is None  # one cache per machine: local rank 0 compiles
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert kc.start_early(cfg("train.pcgrad=true")) is None  # the run reports that it cannot run
    monkeypatch.delenv("WORLD_SIZE")
    assert kc.start_early(cfg("model.packing=off")) is None
    assert not driver_loaded(tmp_path / "no-such-file") and driver_loaded(encoder / "config.json")


@pytest.mark.skipif(not bert._TRITON_INSTALLED, reason="needs triton")
def test_a_kernel_compile_child_compiles_exactly_where_the_packed_forward_picks_our_kernel(monkeypatch, tmp_path):
    """compile_for_encoder (the child's work) compiles for (nh, hs, p, dtype) read from the
    encoder's config.json with the run's overrides where varlen_kernel resolves to triton, and
    nowhere else; it reads nothing without a CUDA device. A child started with child_args' command
    line on this machine exits cleanly."""
    import subprocess

    from minbert.config import encoder_overrides, load_config
    from minbert.errors import CheckpointError
    from minbert.model import varlen_triton
    from minbert.training.kernel_compile import child_args

    encoder, wide = _encoder_folders(tmp_path)
    compiled = []
    monkeypatch.setattr(varlen_triton, "compile_kernels", lambda *a: compiled.append(a))
    monkeypatch.setattr(varlen_triton.torch.cuda, "is_available", lambda: True)

    def run(*overrides, folder=encoder, dtype=torch.bfloat16):
        cfg = load_config(None, [f"model.encoder={folder}", *overrides])
        return varlen_triton.compile_for_encoder(str(folder), encoder_overrides(cfg), dtype, "forward")

    assert run() == (4, 32, 0.1) and compiled == [(4, 32, 0.1, torch.bfloat16, "forward")]
    assert run("model.attention_probs_dropout_prob=0.2", dtype=torch.float16) == (4, 32, 0.2)
    assert compiled[-1] == (4, 32, 0.2, torch.float16, "forward")
    compiled.clear()
    assert run("model.attention_probs_dropout_prob=0.0") is None  # auto takes the efficient kernel
    assert run("model.varlen_kernel=flash") is None
    assert run("model.attn_implementation=eager") is None
    assert run(folder=wide) is None
    with pytest.raises(CheckpointError):
        run(folder=tmp_path / "missing")
    monkeypatch.setattr(varlen_triton.torch.cuda, "is_available", lambda: False)
    assert run(folder=tmp_path / "missing") is None  # no CUDA: nothing read
    assert compiled == []
    if not torch.cuda.is_available():
        args = child_args(load_config(None, [f"model.encoder={encoder}"]), "cuda")[0]
        child = subprocess.run(args, capture_output=True, text=True, timeout=120)
        assert (child.returncode, child.stderr) == (0, "")


def test_waiting_for_the_kernel_compile_never_fails_the_run(caplog):
    """A child that fails is logged at debug level; one that hangs is killed at the timeout."""
    import subprocess
    import time

    from minbert.training.kernel_compile import stop_kernel_compile, wait_kernel_compile

    assert wait_kernel_compile([]) == 0.0  # nothing to wait for
    failing = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit('no GPU here')"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with caplog.at_level(logging.DEBUG, logger="minbert.training.kernel_compile"):
        wait_kernel_compile([failing])
    assert failing.returncode == 1
    assert caplog.records[-1].getMessage().endswith("failed (1): no GPU here")
    hanging = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.perf_counter()
    waited = wait_kernel_compile([hanging], timeout_s=0.5)  # the seconds waited, the timeout included
    assert 0.5 <= waited <= time.perf_counter() - t0 + 0.01
    assert time.perf_counter() - t0 < 30 and hanging.returncode not in (None, 0)
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stop_kernel_compile(None)
    stop_kernel_compile([failing, running])  # a run that ends before it waits: the rest are killed
    assert running.returncode not in (None, 0) and failing.returncode == 1


@pytest.mark.parametrize(("mode", "master", "flag"), [("auto", False, False), ("auto", True, True), ("on", False, True),
                                                      ("off", True, False)])
def test_the_run_configs_weight_grad_stream_reaches_the_built_encoder(tmp_path, mode, master, flag):
    """model.weight_grad_stream reaches the encoder the trainer builds (build_model): on, or auto
    with master weights (linear_grads uses it on CUDA tensors only), and never its config.json."""
    from minbert.config import load_config
    from minbert.model.multitask import build_model

    encoder, _ = _encoder_folders(tmp_path)
    cfg = load_config(None, [f"model.encoder={encoder}", f"model.weight_grad_stream={mode}",
                             f"optim.master_weights={str(master).lower()}", "tasks={sst: {}}"])
    model = build_model(cfg, encoder, pretrained=False)
    assert model.encoder.config.weight_grad_stream is flag
    assert "weight_grad_stream" not in model.encoder.config.to_hf_dict()
