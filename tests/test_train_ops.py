"""fused_linear: the same outputs and gradients as autograd through torch.cat of F.linear (fp64:
to rounding; bf16 autocast: the products of the bf16-rounded operands, accumulated in fp32 and
written in the parameters' dtype), None where a tensor needs no gradient; with compute_copies'
stacked one-copy casts, the very same values and gradients; compiled, the same gradients as eager."""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from minbert.model.bert import BertConfig, BertModel
from minbert.model.packing import pack
from minbert.model.train_ops import compute_copies, fused_linear, linear_grads_op, plain_groups

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def linears(sizes, k, dtype, device, bias=True, seed=0):
    torch.manual_seed(seed)
    return tuple(nn.Linear(k, n, bias=bias, dtype=dtype, device=device) for n in sizes)


def reference(x, ms):
    return torch.cat([F.linear(x, m.weight, m.bias) for m in ms], -1)


def grads_of(fn, x, ms, seed=3):
    """fn(x, ms) -> output; the output (detached) and the gradients of sum(out * g), with None
    where a tensor got none."""
    for m in ms:
        m.zero_grad(set_to_none=True)
    x.grad = None
    out = fn(x, ms)
    g = torch.Generator().manual_seed(seed)
    (out * torch.randn(out.shape, generator=g, dtype=out.dtype).to(out.device)).sum().backward()
    return [out.detach()], [x.grad] + [p.grad for m in ms for p in m.parameters()]


@pytest.mark.parametrize("sizes", [(7,), (5, 5, 5), (3, 9)])
@pytest.mark.parametrize("bias", [True, False])
def test_fp64_outputs_and_gradients_equal_autograd_through_f_linear(sizes, bias):
    ms = linears(sizes, 6, torch.float64, "cpu", bias)
    x = torch.randn(2, 4, 6, dtype=torch.float64, requires_grad=True)
    (o0, g0), (o1, g1) = grads_of(reference, x, ms), grads_of(fused_linear, x, ms)
    assert o1[0].shape == (2, 4, sum(sizes))
    for a, b in zip(o1 + g1, o0 + g0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_no_gradient_where_none_is_needed():
    ms = linears((4, 4), 3, torch.float32, "cpu")
    ms[0].weight.requires_grad_(False)
    ms[1].bias.requires_grad_(False)
    x = torch.randn(5, 3)  # no gradient wanted for the input
    y = fused_linear(x, ms)
    (y[:, :4].sum() + 2 * y[:, 4:].sum()).backward()
    assert ms[0].weight.grad is None and ms[1].bias.grad is None
    torch.testing.assert_close(ms[0].bias.grad, torch.full((4,), 5.0))  # d/db sum(xW^T + b) = rows
    torch.testing.assert_close(ms[1].weight.grad, 2 * x.sum(0).expand(4, 3))


def test_a_groups_gradients_are_row_blocks_of_one_product_not_copies():
    ms = linears((4, 4, 4), 3, torch.float32, "cpu")
    fused_linear(torch.randn(5, 3), ms).sum().backward()
    ptrs = {m.weight.grad.untyped_storage().data_ptr() for m in ms}
    assert len(ptrs) == 1 and all(m.weight.grad.is_contiguous() for m in ms)
    torch.testing.assert_close(ms[2].bias.grad, torch.full((4,), 5.0))


@pytest.mark.parametrize("device", DEVICES)
def test_under_bf16_autocast_the_gradients_are_the_fp32_products_of_the_rounded_operands(device):
    ms = linears((16, 16, 16), 32, torch.float32, device, seed=1)
    x = torch.randn(24, 32, device=device, requires_grad=True)  # fp32, as a LayerNorm's output under autocast
    g = torch.randn(24, 48, device=device).bfloat16()
    with torch.autocast(device, dtype=torch.bfloat16):
        y = fused_linear(x, ms)
    assert y.dtype == torch.bfloat16
    (y * g).float().sum().backward()
    x16 = x.detach().bfloat16().double()
    w16 = torch.cat([m.weight.detach() for m in ms]).bfloat16().double()
    g64 = g.double()
    assert x.grad.dtype == torch.float32 and all(p.grad.dtype == torch.float32 for m in ms for p in m.parameters())
    torch.testing.assert_close(x.grad.double(), g64 @ w16, rtol=1e-5, atol=1e-5)
    for i, m in enumerate(ms):
        gi = g64[:, 16 * i : 16 * (i + 1)]
        torch.testing.assert_close(m.weight.grad.double(), gi.t() @ x16, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(m.bias.grad.double(), gi.sum(0), rtol=1e-5, atol=1e-5)
    b16 = torch.cat([m.bias.detach() for m in ms]).bfloat16().double()  # the output: the bf16 product
    torch.testing.assert_close(y.double(), x16 @ w16.t() + b16, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("device", DEVICES)
def test_reading_compute_copies_gives_the_same_outputs_and_gradients_as_casting_per_node(device):
    groups = [linears((16, 8, 16), 32, torch.float32, device, seed=2), linears((8,), 32, torch.float32, device)]
    x = torch.randn(24, 32, device=device, requires_grad=True)
    gs = [torch.randn(24, n, device=device).bfloat16() for n in (40, 8)]
    results = []
    for with_copies in (False, True):
        for m in [m for grp in groups for m in grp]:
            m.zero_grad(set_to_none=True)
        x.grad = None
        with torch.autocast(device, dtype=torch.bfloat16):
            copies = compute_copies(groups, x) if with_copies else None
            outs = [fused_linear(x, grp, copies) for grp in groups]
        sum((o * g).float().sum() for o, g in zip(outs, gs, strict=True)).backward()
        results.append([o.detach() for o in outs] + [x.grad] + [p.grad for grp in groups for m in grp
                                                                for p in m.parameters()])
    assert len(copies.stacked) == 2
    for grp in groups:
        w, b = next(v for k, v in copies.stacked.items() if k[0] == id(grp[0].weight))
        assert torch.equal(w, torch.cat([m.weight.detach() for m in grp]).bfloat16())
        assert torch.equal(b, torch.cat([m.bias.detach() for m in grp]).bfloat16())
    for a, b in zip(*results, strict=True):
        assert torch.equal(a, b)


def test_no_stacked_copies_where_the_weights_are_in_the_compute_dtype():
    ms = linears((4,), 3, torch.float32, "cpu")
    assert compute_copies([ms], torch.randn(2, 3)).stacked == {}


def test_a_group_of_linears_with_and_without_bias_raises():
    ms = (nn.Linear(3, 2), nn.Linear(3, 2, bias=False))
    with pytest.raises(ValueError, match="bias in every linear"):
        fused_linear(torch.randn(2, 3), ms)
    with pytest.raises(ValueError, match="bias in every linear"):
        compute_copies([ms], torch.randn(2, 3))


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
@pytest.mark.parametrize("k, sizes, rows", [(0, (3,), 5), (4, (0, 3), 5), (4, (3,), 0)])
def test_zero_sized_features_and_rows_give_what_f_linear_gives(k, sizes, rows):
    ms = linears(sizes, k, torch.float64, "cpu")
    x = torch.randn(rows, k, dtype=torch.float64, requires_grad=True)
    (o0, g0), (o1, g1) = grads_of(reference, x, ms), grads_of(fused_linear, x, ms)
    for a, b in zip(o1 + g1, o0 + g0, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_a_node_no_loss_reads_gives_its_parameters_no_gradient():
    a, b = linears((3,), 2, torch.float64, "cpu"), linears((4,), 2, torch.float64, "cpu", seed=1)
    x = torch.randn(5, 2, dtype=torch.float64, requires_grad=True)
    fused_linear(x, a)
    gw = torch.autograd.grad(fused_linear(x, b).sum(), [x, a[0].weight, b[0].weight], allow_unused=True)
    assert gw[1] is None  # as through F.linear
    torch.testing.assert_close(gw[2], x.detach().sum(0).expand(4, 2))
    torch.testing.assert_close(gw[0], b[0].weight.detach().sum(0).expand(5, 2))


def test_the_output_takes_in_place_ops_and_a_second_derivative_raises():
    ms = linears((4, 2), 4, torch.float64, "cpu")
    x = torch.randn(2, 3, 4, dtype=torch.float64, requires_grad=True)
    (o0, g0) = grads_of(lambda x, ms: reference(x, ms).relu_(), x, ms)
    (o1, g1) = grads_of(lambda x, ms: fused_linear(x, ms).relu_(), x, ms)
    for a, b in zip(o1 + g1, o0 + g0, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    (gw,) = torch.autograd.grad(fused_linear(x, ms).pow(2).sum(), ms[0].weight, create_graph=True)
    with pytest.raises(RuntimeError, match="differentiate twice"):  # not a wrong second derivative
        gw.pow(2).sum().backward()


def test_float64_stays_float64_under_autocast_as_with_f_linear():
    ms = linears((4,), 4, torch.float64, "cpu")
    x = torch.randn(3, 4, dtype=torch.float64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours, ref = fused_linear(x, ms), F.linear(x, ms[0].weight, ms[0].bias)
        assert compute_copies([ms], x).stacked == {}
    assert ours.dtype == ref.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("side", [False, True])
@pytest.mark.parametrize("asks", [[True, True, True], [False, True, False], [True, False, True], [True, True, False]])
def test_the_backward_operator_matches_its_fake_and_its_hand_computed_products(asks, side, device):
    """With ``weight_grad_stream`` (side) on CUDA, dW and db run on a second stream: the same
    products, and done when the operator returns."""
    x2, g, w = (torch.randn(*s, device=device) for s in ((6, 4), (6, 5), (5, 4)))
    args = (x2, g, w, torch.float32, torch.float32, asks, side)
    torch.library.opcheck(linear_grads_op, args, test_utils=("test_schema", "test_faketensor"))
    want = [g @ w, g.t() @ x2, g.sum(0)]
    got = linear_grads_op(*args)
    assert len(got) == sum(asks)
    for a, b in zip(got, [t for t, keep in zip(want, asks, strict=True) if keep], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_weight_grad_stream_reaches_every_node_of_the_packed_step(monkeypatch):
    """BertConfig.weight_grad_stream goes through compute_copies' Copies to each fused_linear
    node's backward operator (on a CPU it then runs the products one after the other)."""
    from minbert.model import train_ops

    seen = []

    def spy(*args):
        seen.append(args[6])
        return linear_grads(*args)

    linear_grads = train_ops.linear_grads
    monkeypatch.setattr(train_ops, "linear_grads", spy)
    ids = torch.tensor([[5, 6, 7, 8, 0], [9, 10, 0, 0, 0]])
    packed = pack(ids, (ids > 0).long(), torch.zeros_like(ids), multiple_of=4)
    for flag in (False, True):
        torch.manual_seed(0)
        model = BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=32, attn_implementation="eager",
                                     weight_grad_stream=flag)).train()
        seen.clear()
        model.forward_packed(packed).last_hidden_state.sum().backward()
        assert seen == [flag] * 8  # 4 nodes per layer


def small_bert(dropout=0.0, weight_grad_stream=False):
    torch.manual_seed(0)
    return BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=32, attn_implementation="eager", hidden_dropout_prob=dropout,
                                attention_probs_dropout_prob=dropout, weight_grad_stream=weight_grad_stream)).train()


@pytest.mark.parametrize("weight_grad_stream", [False, True])
def test_the_compiled_packed_step_gives_the_eager_gradients(weight_grad_stream):
    """Under torch.compile the nodes' backward runs as minbert::linear_grads (its fake gives inductor
    the shapes), each call with the encoder's weight_grad_stream, and no graph makes ones; the
    gradients equal the eager step's to fp32 rounding."""
    model = small_bert(weight_grad_stream=weight_grad_stream)
    ids = torch.tensor([[5, 6, 7, 8, 0], [9, 10, 0, 0, 0], [11, 12, 13, 0, 0]])
    packed = pack(ids, (ids > 0).long(), torch.zeros_like(ids), multiple_of=4)

    def loss(p):
        out = model.forward_packed(p)
        return out.last_hidden_state.pow(2).mean() + out.pooler_output.mean()

    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    forward_code, backward_code = [], []

    def keep(codes):
        def compiler(gm, _inputs):
            codes.append(gm.code)
            return make_boxed_func(gm)

        return compiler

    backend = aot_autograd(fw_compiler=keep(forward_code), bw_compiler=keep(backward_code))
    grads = []
    for fn in (loss, torch.compile(loss, backend=backend)):
        model.zero_grad(set_to_none=True)
        fn(packed).backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    torch._dynamo.reset()
    calls = [c for code in backward_code for c in re.findall(r"minbert\.linear_grads\.default\((.*?)\);", code)]
    assert len(calls) == 8  # 4 nodes per layer
    # the op's last argument: True where the encoder asks for it (a default False is not written)
    assert [c.endswith("], True") for c in calls] == [weight_grad_stream] * 8
    # the bias gradients' ones are made in no step, forward or backward (train_ops.bias_ones)
    assert not [c for c in forward_code + backward_code if re.search(r"aten\.(new_ones|ones|full)\b", c)]
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def groups_of(model):
    return sum((layer.projection_groups() for layer in model.encoder.layer), [])


def batch():
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    mask = (ids > 0).long()
    return ids, mask, pack(ids, mask, torch.zeros_like(ids), multiple_of=4)


def packed_equals_padded(model, autocast=None):
    """The packed forward with gradients on (train_ops' nodes where they may run) equals the
    padded one on the real tokens, and so do the gradients of the same loss."""
    ids, mask, packed = batch()
    real = mask.bool()
    results = []
    padded, packed_fn = lambda: model(ids, mask).last_hidden_state[real], lambda: model.forward_packed(packed)
    for fn in (padded, lambda: packed_fn().last_hidden_state[:5]):
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
            out = fn().float()
        out.pow(2).sum().backward()
        results.append([out.detach()] + [q.grad for q in model.parameters() if q.requires_grad])
    for a, b in zip(*results, strict=True):
        tol = 2e-2 if autocast else 1e-5
        torch.testing.assert_close(a, b, rtol=tol, atol=tol)


def test_the_packed_forward_keeps_the_modules_own_calls_where_a_linear_is_hooked_or_parametrized():
    model = small_bert()
    ids, mask, packed = batch()
    assert plain_groups(groups_of(model)) and len(groups_of(model)) == 8
    query = model.encoder.layer[0].attention.self.query
    calls = []
    handle = query.register_forward_hook(lambda m, i, o: calls.append(o.shape))
    assert not plain_groups(groups_of(model))
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
    assert not plain_groups(groups_of(model))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the weight copies would be keyed by a stale tensor
        model.forward_packed(packed)
    torch.testing.assert_close(model.forward_packed(packed).last_hidden_state.detach(), want, rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")
@pytest.mark.parametrize("kind", ["backward", "backward_pre", "global_forward", "global_backward"])
def test_backward_and_global_module_hooks_still_fire_in_the_packed_step(kind):
    model = small_bert()
    value = model.encoder.layer[1].attention.self.value
    fired = []
    register = {"backward": lambda f: value.register_full_backward_hook(lambda *a: fired.append(1)),
                "backward_pre": lambda f: value.register_full_backward_pre_hook(lambda *a: fired.append(1)),
                "global_forward": nn.modules.module.register_module_forward_hook,
                "global_backward": nn.modules.module.register_module_full_backward_hook}[kind]
    handle = register(lambda m, *a: fired.append(1) if m is value else None)
    try:
        assert not plain_groups(groups_of(model))
        model.forward_packed(batch()[2]).last_hidden_state.sum().backward()
    finally:
        handle.remove()
    assert fired
    assert plain_groups(groups_of(model))


class LoraLinear(nn.Module):
    """A LoRA adapter as peft builds one: a module (no nn.Linear) around the base layer that shows
    its weight and bias."""

    def __init__(self, base: nn.Linear, r: int = 4):
        super().__init__()
        self.base_layer, self.in_features, self.out_features = base, base.in_features, base.out_features
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.normal_(self.lora_B.weight)

    weight = property(lambda self: self.base_layer.weight)
    bias = property(lambda self: self.base_layer.bias)

    def forward(self, x):
        return self.base_layer(x) + self.lora_B(self.lora_A(x))


def test_a_wrapped_projection_such_as_a_lora_adapter_keeps_its_own_call():
    model = small_bert()
    for layer in model.encoder.layer:
        layer.attention.self.query = LoraLinear(layer.attention.self.query)
    for name, q in model.named_parameters():
        q.requires_grad_("lora_" in name)
    assert not plain_groups(groups_of(model))
    packed_equals_padded(model)
    assert all(q.grad is not None for n, q in model.named_parameters() if "lora_" in n)


def test_a_weight_tied_across_layers_with_separate_biases_reads_its_own_bias():
    model = small_bert()
    first, second = (layer.attention.output.dense for layer in model.encoder.layer)
    second.weight = first.weight
    with torch.no_grad():
        first.bias.normal_()
        second.bias.normal_()
    packed_equals_padded(model, autocast=torch.bfloat16)


def test_the_packed_step_of_a_model_with_fused_qkv_uses_the_fused_projection():
    model = small_bert()
    ids, mask, packed = batch()
    want = model(ids, mask).last_hidden_state[mask.bool()].detach()
    for layer in model.encoder.layer:
        layer.attention.self.fuse_qkv()
    assert not plain_groups(groups_of(model))
    got = model.forward_packed(packed).last_hidden_state[:5]
    torch.testing.assert_close(got.detach(), want, rtol=1e-5, atol=1e-5)


def test_torch_func_and_forward_mode_ad_run_through_the_modules_own_calls():
    model = small_bert()
    _, _, packed = batch()
    params = {k: v.detach() for k, v in model.named_parameters()}

    def packed_loss(ps):
        with torch.nn.utils.stateless._reparametrize_module(model, ps):
            return model.forward_packed(packed).last_hidden_state.pow(2).sum()

    grads = torch.func.grad(packed_loss)(params)
    model.zero_grad(set_to_none=True)
    model.forward_packed(packed).last_hidden_state.pow(2).sum().backward()
    for name, q in model.named_parameters():  # the pooler is not in the loss: no gradient, or zeros
        torch.testing.assert_close(grads[name], torch.zeros_like(q) if q.grad is None else q.grad, rtol=1e-5, atol=1e-6)
    w = model.encoder.layer[0].attention.self.query.weight
    tangent = torch.randn_like(w)
    _, jvp = torch.func.jvp(lambda W: (packed_loss({**params, "encoder.layer.0.attention.self.query.weight": W}),),
                            (w.detach(),), (tangent,))
    eps = 1e-3
    plus = packed_loss({**params, "encoder.layer.0.attention.self.query.weight": w.detach() + eps * tangent})
    minus = packed_loss({**params, "encoder.layer.0.attention.self.query.weight": w.detach() - eps * tangent})
    torch.testing.assert_close(jvp[0], (plus - minus) / (2 * eps), rtol=1e-2, atol=1e-3)


def test_a_group_of_no_output_features_gives_what_f_linear_gives():
    ms = linears((0,), 4, torch.float64, "cpu")
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    (o0, g0), (o1, g1) = grads_of(reference, x, ms), grads_of(fused_linear, x, ms)
    for a, b in zip(o1 + g1, o0 + g0, strict=True):
        torch.testing.assert_close(a, b)


def test_bias_ones_are_views_of_blocks_grown_as_needed_and_never_released():
    """A graph captured with a view of a block reads its address at every replay: growing must
    not free the block before it."""
    import gc
    import weakref

    from minbert.model import train_ops

    dev, dt = torch.device("cpu"), torch.float64  # a dtype the nodes do not use here: no blocks yet
    train_ops._ONES.pop((dev, dt), None)
    a = train_ops.bias_ones(10, dt, dev)
    assert a.shape == (1, 10) and a.dtype == dt and torch.equal(a, torch.ones(1, 10, dtype=dt))
    assert train_ops.bias_ones(1024, dt, dev).data_ptr() == a.data_ptr()  # the first block: 1,024
    first = weakref.ref(train_ops._ONES[(dev, dt)][0])
    del a
    c = train_ops.bias_ones(1500, dt, dev)
    gc.collect()
    assert first() is not None and [b.shape[1] for b in train_ops._ONES[(dev, dt)]] == [1024, 2048]
    assert torch.equal(c, torch.ones(1, 1500, dtype=dt))
    assert train_ops.bias_ones(3, dt, dev).data_ptr() == c.data_ptr()  # the largest block from now on
    train_ops._ONES.pop((dev, dt))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bias_ones_grown_inside_a_cuda_graph_capture_are_not_kept():
    """A block made while a graph is captured is filled only when the graph replays: it must not
    serve later calls."""
    from minbert.model import train_ops

    dev, dt = torch.device("cuda", torch.cuda.current_device()), torch.float64
    train_ops._ONES.pop((dev, dt), None)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = train_ops.bias_ones(5000, dt, dev) * 2
    assert not train_ops._ONES[(dev, dt)]
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(out, torch.full((1, 5000), 2.0, dtype=dt, device=dev))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_graphed_backward_keeps_its_bias_gradient_after_the_ones_grow():
    """A backward captured on a side stream (as GraphedSteps captures) reads the kept block of
    ones; a later eager step with more tokens grows the blocks and memory is reused; replaying
    the graph still gives db = 1^T g."""
    from minbert.inference.graphs import capture

    dev = torch.device("cuda", torch.cuda.current_device())
    lin, x = nn.Linear(8, 4).to(dev), torch.randn(1000, 8, device=dev)

    def step(inputs):
        fused_linear(inputs, (lin,)).sum().backward()  # db = 1^T 1 = the rows, per output

    step(x)
    side, pool = torch.cuda.Stream(dev), torch.cuda.graph_pool_handle()
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):
        step(x)
    torch.cuda.current_stream(dev).wait_stream(side)
    lin.weight.grad = lin.bias.grad = None
    graph = torch.cuda.CUDAGraph()
    with capture(graph, side, pool):
        step(x)
    db = lin.bias.grad
    step(torch.randn(50_000, 8, device=dev))  # eager, more tokens: the blocks grow
    junk = [torch.full((1024,), 7.0, device=dev) for _ in range(64)]  # memory a freed block would give
    graph.replay()
    torch.cuda.synchronize()
    assert junk and torch.equal(db, torch.full((4,), 1000.0, device=dev))
