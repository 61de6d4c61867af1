"""shared_input_linear: the same outputs and gradients as autograd through F.linear (fp64: to
rounding; bf16 autocast: the products of the bf16-rounded operands, accumulated in fp32 and
written in the parameters' dtype), None where a tensor needs no gradient; with compute_copies'
one-copy casts, the very same values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minbert.model.bert import BertConfig, BertModel
from minbert.model.packing import pack
from minbert.model.train_ops import compute_copies, plain_linears, shared_input_linear

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



@pytest.mark.parametrize("device", DEVICES)
def test_reading_compute_copies_gives_the_same_outputs_and_gradients_as_casting_per_node(device):
    ms = linears((16, 8, 16), 32, torch.float32, device, seed=2)
    x = torch.randn(24, 32, device=device, requires_grad=True)
    gs = [torch.randn(24, n, device=device).bfloat16() for n in (16, 8, 16)]
    results = []
    for with_copies in (False, True):
        for m in ms:
            m.zero_grad(set_to_none=True)
        x.grad = None
        with torch.autocast(device, dtype=torch.bfloat16):
            copies = compute_copies(list(ms), x) if with_copies else None
            outs = shared_input_linear(x, ms, copies)
        sum((o * g).float().sum() for o, g in zip(outs, gs, strict=True)).backward()
        results.append([o.detach() for o in outs] + [x.grad] + [p.grad for m in ms for p in m.parameters()])
    assert len(copies) == 6 and all(c.dtype == torch.bfloat16 for c in copies.values())
    for m in ms:
        assert torch.equal(copies[id(m.weight)], m.weight.detach().bfloat16())
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_no_compute_copies_where_the_weights_are_in_the_compute_dtype():
    ms = linears((4,), 3, torch.float32, "cpu")
    assert compute_copies(list(ms), torch.randn(2, 3)) == {}


def grads_of(fn, x, ms, seed=3):
    """fn(x, ms) -> outputs; the outputs (detached) and the gradients of sum(out * g), with None
    where a tensor got none."""
    for m in ms:
        m.zero_grad(set_to_none=True)
    x.grad = None
    outs = fn(x, ms)
    g = torch.Generator().manual_seed(seed)
    sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs).backward()
    return [o.detach() for o in outs], [x.grad] + [p.grad for m in ms for p in m.parameters()]


def reference(x, ms):
    return tuple(F.linear(x, m.weight, m.bias) for m in ms)


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
@pytest.mark.parametrize("k, sizes, rows", [(0, (3,), 5), (4, (0, 3), 5), (4, (3,), 0)])
def test_zero_sized_features_and_rows_give_what_f_linear_gives(k, sizes, rows):
    ms = linears(sizes, k, torch.float64, "cpu")
    x = torch.randn(rows, k, dtype=torch.float64, requires_grad=True)
    (o0, g0), (o1, g1) = grads_of(reference, x, ms), grads_of(shared_input_linear, x, ms)
    for a, b in zip(o1 + g1, o0 + g0, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_an_output_no_loss_reads_gives_its_parameters_no_gradient():
    ms = linears((3, 4), 2, torch.float64, "cpu")
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    outs = shared_input_linear(x, ms)
    gw = torch.autograd.grad(outs[1].sum(), [x, ms[0].weight, ms[1].weight], allow_unused=True)
    assert gw[1] is None  # as through F.linear
    torch.testing.assert_close(gw[2], x.detach().sum(0).expand(4, 2))
    torch.testing.assert_close(gw[0], ms[1].weight.detach().sum(0).expand(5, 2))


def test_outputs_take_in_place_ops_and_a_second_derivative_raises():
    ms = linears((4,), 4, torch.float64, "cpu")
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    (o0, g0) = grads_of(lambda x, ms: tuple(o.relu_() for o in reference(x, ms)), x, ms)
    (o1, g1) = grads_of(lambda x, ms: tuple(o.relu_() for o in shared_input_linear(x, ms)), x, ms)
    for a, b in zip(o1 + g1, o0 + g0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    (gw,) = torch.autograd.grad(shared_input_linear(x, ms)[0].pow(2).sum(), ms[0].weight, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):  # not a wrong second derivative
        gw.pow(2).sum().backward()


def test_float64_stays_float64_under_autocast_as_with_f_linear():
    ms = linears((4,), 4, torch.float64, "cpu")
    x = torch.randn(3, 4, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, ref = shared_input_linear(x, ms)[0], F.linear(x, ms[0].weight, ms[0].bias)
        assert compute_copies(list(ms), x) == {}
    assert ours.dtype == ref.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


def test_the_packed_forward_keeps_the_modules_own_calls_where_a_linear_is_hooked_or_parametrized():
    torch.manual_seed(0)
    model = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=32, attn_implementation="eager", hidden_dropout_prob=0.0,
                                 attention_probs_dropout_prob=0.0)).train()
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    mask = (ids > 0).long()
    packed = pack(ids, mask, torch.zeros_like(ids), multiple_of=4)
    assert len(plain_linears(model.encoder)) == 12
    query = model.encoder.layer[0].attention.self.query
    calls = []
    handle = query.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    assert plain_linears(model.encoder) is None
    model.forward_packed(packed).last_hidden_state.sum().backward()
    assert calls == [torch.Size([packed.input_ids.shape[0], 16])]  # nn.Linear.__call__ ran, with its hook
    handle.remove()

    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    want = model.forward_packed(packed).last_hidden_state.detach()
    with torch.no_grad():
        query.weight.mul_(0.5)
    nn.utils.parametrize.register_parametrization(query, "weight", Double())
    assert plain_linears(model.encoder) is None
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the weight copies would be keyed by a stale tensor
        model.forward_packed(packed)
    torch.testing.assert_close(model.forward_packed(packed).last_hidden_state.detach(), want, rtol=1e-5, atol=1e-5)
