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


def packed(lengths, nh=2, hs=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEV)
    q, k, v = (torch.randn(sum(lengths), nh, hs, generator=g).to(DEV, DTYPE).requires_grad_() for _ in range(3))
    return q, k, v, cu, max(lengths)


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


@pytest.mark.parametrize("hs, block", [(32, 32), (64, 32), (64, 16), (32, 64)])
def test_matches_the_eager_reference_without_dropout(hs, block):
    q, k, v, cu, mx = packed(LENGTHS, hs=hs)
    out = triton_varlen_attention(q, k, v, cu, mx, 0.0, block)
    ref = reference(q, k, v, cu)
    assert out.dtype == DTYPE and out.shape == q.shape
    torch.testing.assert_close(out.float(), ref, atol=TOL, rtol=TOL)
    for got, want in zip(grads(out, (q, k, v)), grads(ref, (q, k, v)), strict=True):
        torch.testing.assert_close(got.float(), want.float(), atol=4 * TOL, rtol=4 * TOL)


def layouts(q, k, v):
    """Other layouts of the same values: column blocks of one (N, 3C) tensor (the fused QKV
    projection's split), head-major (nh, N, hs) storage, and a last dim with stride 2."""
    N, nh, hs = q.shape
    qkv = torch.cat([t.detach().reshape(N, nh * hs) for t in (q, k, v)], dim=1)  # (N, 3C)
    split = tuple(t.view(N, nh, hs) for t in qkv.split(nh * hs, dim=1))
    head_major = tuple(t.detach().transpose(0, 1).contiguous().transpose(0, 1) for t in (q, k, v))
    spaced = tuple(torch.stack([t.detach(), t.detach()], dim=-1).flatten(-2)[..., ::2] for t in (q, k, v))
    assert split[0].stride(0) == 3 * nh * hs and head_major[0].stride(1) == N * hs and spaced[0].stride(-1) == 2
    return {"split": split, "head_major": head_major, "spaced": spaced}


@pytest.mark.parametrize("layout", ["split", "head_major", "spaced"])
def test_any_input_layout_gives_the_same_output_and_gradients(layout):
    q, k, v, cu, mx = packed(LENGTHS)
    want = triton_varlen_attention(q, k, v, cu, mx, 0.0)
    want_grads = grads(want, (q, k, v))
    others = tuple(t.requires_grad_() for t in layouts(q, k, v)[layout])
    got = triton_varlen_attention(*others, cu, mx, 0.0)
    assert got.is_contiguous()
    torch.testing.assert_close(got, want, atol=0, rtol=0)
    for g, w in zip(grads(got, others), want_grads, strict=True):
        torch.testing.assert_close(g, w, atol=0, rtol=0)


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_the_custom_ops_pass_opcheck_with_head_major_inputs(dropout):
    """torch.library.opcheck: schema, fake (shape and stride) functions against the real ops, and
    the autograd registration, on inputs whose storage is head-major."""
    q, k, v, cu, mx = packed([5, 33, 20])
    hq, hk, hv = (t.requires_grad_() for t in layouts(q, k, v)["head_major"])
    seed = torch.tensor([99], device=DEV)
    torch.library.opcheck(varlen_attention_fwd, (hq, hk, hv, cu, mx, dropout, seed, 32))


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5])
def test_dropout_outside_its_range_raises(p):
    q, k, v, cu, mx = packed([5])
    with pytest.raises(ValueError, match="dropout_p must be in"):
        triton_varlen_attention(q, k, v, cu, mx, p)


def dropout_mask(lengths, nh, p, seed, block):
    """The keep mask the forward applies, read out as in attention_varlen --mask-check: with
    q = k = 0 every probability of a row is 1/L, and v one-hot in the key position makes output
    [i, j] = keep[i, j] / (L (1 - p))."""
    hs = 128
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int32, device=DEV)
    z = torch.zeros(sum(lengths), nh, hs, device=DEV, dtype=DTYPE)
    v = torch.cat([torch.eye(L, hs, device=DEV, dtype=DTYPE)[:, None, :].expand(L, nh, hs) for L in lengths])
    out = varlen_attention_fwd(z, z, v.contiguous(), cu, max(lengths), p, seed, block)[0].float()
    masks = []
    for i, L in enumerate(lengths):
        o = out[cu[i]:cu[i + 1], :, :L].transpose(0, 1)  # (nh, L, L)
        assert torch.all((o == 0) | ((o - 1 / (L * (1 - p))).abs() < 2e-2 / L)), "not a scaled 0/1 mask"
        masks.append(o > 0)
    return masks


@pytest.mark.parametrize("block", [32, 64])
def test_dropout_forward_and_backward_use_one_mask(block):
    """With a fixed seed tensor the mask depends on (head, query, key) only: read it out with
    one-hot values, then forward and backward of random inputs equal the eager reference with
    that mask applied, which holds only if the backward kernels redraw the forward's mask."""
    p, seed = 0.3, torch.tensor([1234], device=DEV)
    lengths = [n for n in LENGTHS if n > 0]
    q, k, v, cu, mx = packed(lengths)
    keep = dropout_mask(lengths, q.shape[1], p, seed, block)
    share = torch.cat([m.flatten() for m in keep]).float().mean().item()
    assert 0.6 < share < 0.8  # 1 - p, over about 13,000 draws
    out = varlen_attention_fwd(q, k, v, cu, mx, p, seed, block)[0]
    ref = reference(q, k, v, cu, keep, p)
    torch.testing.assert_close(out.float(), ref, atol=TOL, rtol=TOL)
    for got, want in zip(grads(out, (q, k, v)), grads(ref, (q, k, v)), strict=True):
        torch.testing.assert_close(got.float(), want.float(), atol=4 * TOL, rtol=4 * TOL)


def test_dropout_draws_a_new_mask_per_call_from_torchs_generator():
    q, k, v, cu, mx = packed(LENGTHS)
    torch.manual_seed(7)
    a = triton_varlen_attention(q, k, v, cu, mx, 0.1)
    b = triton_varlen_attention(q, k, v, cu, mx, 0.1)
    torch.manual_seed(7)
    c = triton_varlen_attention(q, k, v, cu, mx, 0.1)
    assert not torch.equal(a, b)
    torch.testing.assert_close(a, c, atol=0, rtol=0)


def test_varlen_attention_routes_to_it_on_cuda_only():
    """varlen_attention(kernel='triton') is this kernel on CUDA, and refuses other devices."""
    q, k, v, cu, mx = packed(LENGTHS)
    if not CUDA:
        with pytest.raises(Exception, match="on CUDA in fp16/bf16 only"):
            varlen_attention(q, k, v, cu, mx, 0.0, "sdpa", "triton")
        return
    torch.testing.assert_close(varlen_attention(q, k, v, cu, mx, 0.0, "sdpa", "triton"),
                               triton_varlen_attention(q, k, v, cu, mx, 0.0), atol=0, rtol=0)


def test_compile_kernels_refuses_an_unknown_part():
    parts = "'forward', 'backward', 'backward-dq', 'backward-dkdv', 'both'"
    with pytest.raises(ValueError, match=f"part must be one of {parts}, got 'sideways'"):
        compile_kernels(4, 32, 0.1, part="sideways")
