"""The Triton varlen attention kernels (minbert.model.varlen_triton) against the eager reference.

On a CUDA machine the kernels run compiled, in bf16; elsewhere under Triton's interpreter
(TRITON_INTERPRET=1, which conftest.py sets before anything imports triton), in fp32 on CPU.
Skipped where triton is not installed.
"""

import pytest
import torch

triton = pytest.importorskip("triton")

from minbert.model.bert import varlen_attention  # noqa: E402
from minbert.model.varlen_triton import (  # noqa: E402
    _fwd_kernel,
    compile_kernels,
    triton_varlen_attention,
    varlen_attention_fwd,
)

CUDA = torch.cuda.is_available()
DEV, DTYPE, TOL = ("cuda", torch.bfloat16, 2e-2) if CUDA else ("cpu", torch.float32, 2e-5)
if not CUDA and any(type(f).__name__ != "InterpretedFunction" for f in (_fwd_kernel, triton.language.zeros)):
    pytest.skip("triton was imported before TRITON_INTERPRET was set", allow_module_level=True)
if not CUDA and tuple(int(x) for x in triton.__version__.split(".")[:2]) < (3, 9):
    pytest.skip("Triton's interpreter before 3.9 fails on numpy 2.4 (int() of a 1-element array)",
                allow_module_level=True)

# one token; a tile exactly; across tile edges; an empty sequence; two full tiles and a piece
LENGTHS = [5, 32, 1, 33, 0, 70, 20]


@pytest.fixture(autouse=True)
def nan_filled_empty_tensors():
    """torch.empty gives NaN (deterministic mode's fill_uninitialized_memory), so that a row a
    kernel leaves unwritten fails a test instead of holding an earlier run's values."""
    before = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    yield
    torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def packed(lengths, nh=2, hs=32, seed=0):
    """qkv (N, 3, nh, hs), a leaf (the q/k/v GEMM's output layout); cu_seqlens; max_seqlen."""
    g = torch.Generator().manual_seed(seed)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEV)
    qkv = torch.randn(sum(lengths), 3, nh, hs, generator=g).to(DEV, DTYPE).requires_grad_()
    return qkv, cu, max(lengths)


def grads(out, inputs, seed=1):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(DEV, DTYPE)
    return torch.autograd.grad(out, inputs, g)


def reference(q, k, v, cu, keep=None, p=0.0):
    """Eager attention in fp32, each sequence over itself, with an explicit keep mask (S entries of
    (nh, L, L)) scaled by 1 / (1 - p)."""
    outs = []
    for i in range(cu.numel() - 1):
        a, b = cu[i].item(), cu[i + 1].item()
        qs, ks, vs = (t[a:b].float().transpose(0, 1) for t in (q, k, v))  # (nh, L, hs)
        att = torch.softmax(qs @ ks.transpose(1, 2) / qs.shape[-1] ** 0.5, dim=-1)
        if keep is not None:
            att = att * keep[i].to(att) / (1 - p)
        outs.append((att @ vs).transpose(0, 1))
    return torch.cat(outs)


@pytest.mark.parametrize("fused", [False, True], ids=["split-backward", "fused-backward"])
@pytest.mark.parametrize("hs, block", [(32, 32), (64, 32), (64, 16), (32, 64)])
def test_matches_the_eager_reference_without_dropout(hs, block, fused):
    """LENGTHS has sequences of one tile or less and of two and three tiles (block 32; more at
    16), which the fused backward handles by its two paths."""
    qkv, cu, mx = packed(LENGTHS, hs=hs)
    out = triton_varlen_attention(qkv, cu, mx, 0.0, block, fused)
    ref = reference(*qkv.unbind(1), cu)
    assert out.dtype == DTYPE and out.shape == qkv[:, 0].shape
    torch.testing.assert_close(out.float(), ref, atol=TOL, rtol=TOL)
    (got,), (want,) = grads(out, (qkv,)), grads(ref, (qkv,))
    assert got.shape == qkv.shape and got.is_contiguous()  # one buffer, the q/k/v GEMM's layout
    torch.testing.assert_close(got.float(), want.float(), atol=4 * TOL, rtol=4 * TOL)


def layouts(qkv):
    """Other layouts of the same (N, 3, nh, hs) values: q, k, v each contiguous, stacked on a
    first dim ((3, N, nh, hs) storage), head-major ((3, nh, N, hs) storage), and a last dim with
    stride 2."""
    N, _, nh, hs = qkv.shape
    t = qkv.detach()
    stacked = t.transpose(0, 1).contiguous().transpose(0, 1)
    head_major = t.permute(1, 2, 0, 3).contiguous().permute(2, 0, 1, 3)
    spaced = torch.stack([t, t], dim=-1).flatten(-2)[..., ::2]
    assert stacked.stride(1) == N * nh * hs and head_major.stride(2) == N * hs and spaced.stride(-1) == 2
    return {"stacked": stacked, "head_major": head_major, "spaced": spaced}


@pytest.mark.parametrize("layout", ["stacked", "head_major", "spaced"])
def test_any_input_layout_gives_the_same_output_and_gradients(layout):
    qkv, cu, mx = packed(LENGTHS)
    want = triton_varlen_attention(qkv, cu, mx, 0.0)
    (want_grad,) = grads(want, (qkv,))
    other = layouts(qkv)[layout].requires_grad_()
    got = triton_varlen_attention(other, cu, mx, 0.0)
    assert got.is_contiguous()
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    torch.testing.assert_close(grads(got, (other,))[0], want_grad, atol=0, rtol=0)


@pytest.mark.parametrize("fused", [False, True], ids=["split-backward", "fused-backward"])
@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_the_custom_ops_pass_opcheck_with_head_major_inputs(dropout, fused):
    """torch.library.opcheck: schema, fake (shape and stride) functions against the real ops, and
    the autograd registration, on inputs whose storage is head-major."""
    qkv, cu, mx = packed([5, 33, 20])
    head_major = layouts(qkv)["head_major"].requires_grad_()
    seed = torch.tensor([99], device=DEV)
    torch.library.opcheck(varlen_attention_fwd, (head_major, cu, mx, dropout, seed, 32, fused))


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5])
def test_dropout_outside_its_range_raises(p):
    qkv, cu, mx = packed([5])
    with pytest.raises(ValueError, match="dropout_p must be in"):
        triton_varlen_attention(qkv, cu, mx, p)


def dropout_mask(lengths, nh, p, seed, block):
    """The keep mask the forward applies, read out as in attention_varlen --mask-check: with
    q = k = 0 every probability of a row is 1/L, and v one-hot in the key position makes output
    [i, j] = keep[i, j] / (L (1 - p))."""
    hs = 128
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEV)
    z = torch.zeros(sum(lengths), nh, hs, device=DEV, dtype=DTYPE)
    v = torch.cat([torch.eye(L, hs, device=DEV, dtype=DTYPE)[:, None, :].expand(L, nh, hs) for L in lengths])
    out = varlen_attention_fwd(torch.stack((z, z, v), 1), cu, max(lengths), p, seed, block)[0].float()
    masks = []
    for i, L in enumerate(lengths):
        o = out[cu[i]:cu[i + 1], :, :L].transpose(0, 1)  # (nh, L, L)
        assert torch.all((o == 0) | ((o - 1 / (L * (1 - p))).abs() < 2e-2 / L)), "not a scaled 0/1 mask"
        masks.append(o > 0)
    return masks


@pytest.mark.parametrize("fused", [False, True], ids=["split-backward", "fused-backward"])
@pytest.mark.parametrize("block", [32, 64])
def test_dropout_forward_and_backward_use_one_mask(block, fused):
    """With a fixed seed tensor the mask depends on (head, query, key) only: read it out with
    one-hot values, then forward and backward of random inputs equal the eager reference with
    that mask applied, which holds only if the backward kernels redraw the forward's mask."""
    p, seed = 0.3, torch.tensor([1234], device=DEV)
    lengths = [n for n in LENGTHS if n > 0]
    qkv, cu, mx = packed(lengths)
    keep = dropout_mask(lengths, qkv.shape[2], p, seed, block)
    share = torch.cat([m.flatten() for m in keep]).float().mean().item()
    assert 0.6 < share < 0.8  # 1 - p, over about 13,000 draws
    out = varlen_attention_fwd(qkv, cu, mx, p, seed, block, fused)[0]
    ref = reference(*qkv.unbind(1), cu, keep, p)
    torch.testing.assert_close(out.float(), ref, atol=TOL, rtol=TOL)
    (got,), (want,) = grads(out, (qkv,)), grads(ref, (qkv,))
    torch.testing.assert_close(got.float(), want.float(), atol=4 * TOL, rtol=4 * TOL)


def test_dropout_draws_a_new_mask_per_call_from_torchs_generator():
    qkv, cu, mx = packed(LENGTHS)
    torch.manual_seed(7)
    a = triton_varlen_attention(qkv, cu, mx, 0.1)
    b = triton_varlen_attention(qkv, cu, mx, 0.1)
    torch.manual_seed(7)
    c = triton_varlen_attention(qkv, cu, mx, 0.1)
    assert not torch.equal(a, b)
    torch.testing.assert_close(a, c, atol=0, rtol=0)


def test_varlen_attention_routes_to_it_on_cuda_only():
    """varlen_attention(kernel='triton') is this kernel on CUDA, and refuses other devices."""
    qkv, cu, mx = packed(LENGTHS)
    if not CUDA:
        with pytest.raises(Exception, match="on CUDA in fp16/bf16 only"):
            varlen_attention(qkv, cu, mx, 0.0, "sdpa", "triton")
        return
    torch.testing.assert_close(varlen_attention(qkv, cu, mx, 0.0, "sdpa", "triton"),
                               triton_varlen_attention(qkv, cu, mx, 0.0), atol=0, rtol=0)


def test_the_encoders_packed_step_feeds_the_kernel_one_qkv_tensor_and_joins_no_gradients(monkeypatch):
    """A packed training forward and backward of the encoder with this kernel in place of its
    attention equals the eager reference, and its autograd graph has no node that splits the q/k/v
    GEMM's output or joins the three gradients (the kernel's backward writes them in one buffer)."""
    from minbert.model import bert
    from minbert.model.packing import pack

    torch.manual_seed(0)
    cfg = bert.BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                          attn_implementation="eager")
    model = bert.BertModel(cfg).to(DEV, DTYPE)
    lengths = [5, 33, 1, 20]
    ids = torch.randint(1, 100, (len(lengths), max(lengths)), device=DEV)
    packed = pack(ids, (torch.arange(max(lengths), device=DEV)[None] < torch.tensor(lengths, device=DEV)[:, None]))

    def step():
        model.zero_grad(set_to_none=True)
        out = model.forward_packed(packed)
        loss = (out.last_hidden_state.float() ** 2).mean() + out.pooler_output.float().sum()
        loss.backward()
        nodes, todo = set(), [loss.grad_fn]
        while todo:
            fn = todo.pop()
            if fn is not None and fn not in nodes:
                nodes.add(fn)
                todo.extend(n for n, _ in fn.next_functions)
        return out.last_hidden_state.detach().float(), [p.grad.float() for p in model.parameters()], nodes

    want, want_grads, _ = step()
    monkeypatch.setattr(bert, "varlen_attention", lambda qkv, cu, mx, p, impl, kernel: triton_varlen_attention(
        qkv, cu, mx, p))
    got, got_grads, nodes = step()
    assert not {type(n).__name__ for n in nodes} & {"UnbindBackward0", "SplitWithSizesBackward0", "CatBackward0",
                                                     "StackBackward0"}
    torch.testing.assert_close(got, want, atol=TOL, rtol=TOL)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, atol=4 * TOL, rtol=4 * TOL)


def test_compile_kernels_refuses_an_unknown_part():
    parts = "'forward', 'backward', 'backward-dq', 'backward-dkdv', 'backward-fused', 'both'"
    with pytest.raises(ValueError, match=f"part must be one of {parts}, got 'sideways'"):
        compile_kernels(4, 32, 0.1, part="sideways")
