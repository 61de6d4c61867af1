"""shared_input_linear: the same outputs and gradients as autograd through F.linear (fp64: to
rounding; bf16 autocast: the products of the bf16-rounded operands, accumulated in fp32 and
written in the parameters' dtype), None where a tensor needs no gradient. embedding_lookup and
padded_lookup: F.embedding's outputs and gradients, padding rows included."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minbert.model.train_ops import SORTED_BACKWARD_MIN_IDS, embedding_lookup, padded_lookup, shared_input_linear

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def linears(sizes, k, dtype, device, bias=True, seed=0):
    torch.manual_seed(seed)
    return tuple(nn.Linear(k, n, bias=bias, dtype=dtype, device=device) for n in sizes)


@pytest.mark.parametrize("sizes", [(7,), (5, 5, 5), (3, 9)])
@pytest.mark.parametrize("bias", [True, False])
def test_fp64_outputs_and_gradients_equal_autograd_through_f_linear(sizes, bias):
    ms = linears(sizes, 6, torch.float64, "cpu", bias)
    x = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    gs = [torch.randn(2, 4, n, dtype=torch.float64) for n in sizes]
    results = []
    for ours in (False, True):
        for m in ms:
            m.zero_grad(set_to_none=True)
        x.grad = None
        outs = shared_input_linear(x, ms) if ours else tuple(F.linear(x, m.weight, m.bias) for m in ms)
        sum((o * g).sum() for o, g in zip(outs, gs, strict=True)).backward()
        params = [p.grad.clone() for m in ms for p in m.parameters()]
        results.append(([o.detach() for o in outs], x.grad.clone(), params))
    (o0, dx0, p0), (o1, dx1, p1) = results
    for a, b in zip(o1 + [dx1] + p1, o0 + [dx0] + p0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_no_gradient_where_none_is_needed():
    ms = linears((4, 4), 3, torch.float32, "cpu")
    ms[0].weight.requires_grad_(False)
    ms[1].bias.requires_grad_(False)
    x = torch.randn(5, 3)  # no gradient wanted for the input
    outs = shared_input_linear(x, ms)
    (outs[0].sum() + 2 * outs[1].sum()).backward()
    assert ms[0].weight.grad is None and ms[1].bias.grad is None
    torch.testing.assert_close(ms[0].bias.grad, torch.full((4,), 5.0))  # d/db sum(xW^T + b) = rows
    torch.testing.assert_close(ms[1].weight.grad, 2 * x.sum(0).expand(4, 3))


@pytest.mark.parametrize("device", DEVICES)
def test_under_bf16_autocast_the_gradients_are_the_fp32_products_of_the_rounded_operands(device):
    ms = linears((16, 16, 16), 32, torch.float32, device, seed=1)
    x = torch.randn(24, 32, device=device, requires_grad=True)  # fp32, as a LayerNorm's output under autocast
    gs = [torch.randn(24, 16, device=device).bfloat16() for _ in ms]
    with torch.autocast(device, dtype=torch.bfloat16):
        outs = shared_input_linear(x, ms)
    assert all(o.dtype == torch.bfloat16 for o in outs)
    sum((o * g).float().sum() for o, g in zip(outs, gs, strict=True)).backward()
    x16 = x.detach().bfloat16().double()
    w16 = [m.weight.detach().bfloat16().double() for m in ms]
    g64 = [g.double() for g in gs]
    assert x.grad.dtype == torch.float32 and all(p.grad.dtype == torch.float32 for m in ms for p in m.parameters())
    want_dx = sum(g @ w for g, w in zip(g64, w16, strict=True))
    torch.testing.assert_close(x.grad.double(), want_dx, rtol=1e-5, atol=1e-5)
    for m, g in zip(ms, g64, strict=True):
        torch.testing.assert_close(m.weight.grad.double(), g.t() @ x16, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(m.bias.grad.double(), g.sum(0), rtol=1e-5, atol=1e-5)
    for o, m, w in zip(outs, ms, w16, strict=True):  # the output: the bf16 product of the rounded operands
        want = x16 @ w.t() + m.bias.detach().bfloat16().double()
        torch.testing.assert_close(o.double(), want, rtol=2e-2, atol=2e-2)


def lookup_case(device, n, padding_idx, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 50, (n,), generator=g)
    ids[::7] = 0 if padding_idx is None else padding_idx  # the padding row, and repeats of every id
    weight = torch.randn(50, 8, generator=g, dtype=torch.float64)
    grad_out = torch.randn(n, 8, generator=g, dtype=torch.float64)
    return ids.to(device), weight.to(device).requires_grad_(), grad_out.to(device)


@pytest.mark.parametrize("padding_idx", [0, 3, None])
@pytest.mark.parametrize("shape", [(37,), (5, 9)])
def test_a_padded_lookup_equals_f_embedding_in_values_and_gradients(padding_idx, shape):
    n = shape[0] * (shape[1] if len(shape) > 1 else 1)
    ids, weight, grad_out = lookup_case("cpu", n, padding_idx)
    ids, grad_out = ids.view(shape), grad_out.view(*shape, 8)
    ours = padded_lookup(ids, weight, padding_idx, 200)
    (g_ours,) = torch.autograd.grad(ours, weight, grad_out)
    ref = F.embedding(ids, weight, padding_idx)
    (g_ref,) = torch.autograd.grad(ref, weight, grad_out)
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-12, atol=1e-12)
    if padding_idx is not None:
        assert g_ours[padding_idx].abs().max() == 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [100, SORTED_BACKWARD_MIN_IDS + 5])
def test_embedding_lookup_equals_f_embedding_on_every_device(device, n):
    ids, weight, grad_out = lookup_case(device, n, 0, seed=1)
    (g_ours,) = torch.autograd.grad(embedding_lookup(ids, weight, 0), weight, grad_out)
    (g_ref,) = torch.autograd.grad(F.embedding(ids, weight, 0), weight, grad_out)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-12, atol=1e-12)
