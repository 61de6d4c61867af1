"""Autograd nodes of the packed training step with fewer kernels (the padded path and
inference keep ``nn.Linear``, the reference).

``fused_linear(x, linears)`` computes [y_1 | ... | y_n], y_i = x W_i^T + b_i
(``torch.nn.functional.linear``), for one or more ``nn.Linear`` that read the same input, as one
autograd node whose products are single GEMMs on the stacked weights W = [W_1; ...; W_n]
(sum N_i, K) and biases b = [b_1 | ... | b_n]:

* forward: x is cast to the compute dtype once and y = x W^T + b is one GEMM (for BERT's query,
  key and value: one GEMM of 3H columns instead of three of H);
* backward, from g = dL/dy (M, sum N_i): dL/dx = g W is one GEMM (the sum over projections is
  the GEMM's own reduction), written in x's dtype; dL/dW = g^T x and dL/db = 1^T g are GEMMs that
  write fp32 accumulations directly in the parameters' dtype (``out_dtype``), instead of a bf16
  product, a column reduction and two casts per parameter. dW_i and db_i are row blocks (views)
  of the stacked results.

The compute dtype is autocast's where autocast is on for x's device, else the weights'. In fp32
every product is the plain one: the gradients equal autograd's through ``F.linear`` up to the
order of float additions (tests/test_train_ops.py).

``compute_copies(groups, x)`` casts the weights and biases of a step's projection groups to the
compute dtype into stacked buffers, eager by one multi-tensor copy (``torch._foreach_copy_``)
and compiled by one ``torch.cat`` per group, instead of one cast kernel per tensor; the nodes
then read those. The bias gradients' 1^T is a view of ones kept between steps (:func:`bias_ones`),
made in no step: under ``torch.compile`` the backward would otherwise make them again for each
node.
``plain_groups(groups)`` says whether the nodes may stand in for the modules' ``nn.Linear``
calls: they skip ``nn.Linear.__call__``, so a subclass or wrapper (a LoRA adapter),
a hook (pruning's mask, for one) or a parametrization keeps the modules' own calls, as do
``torch.func`` transforms and forward-mode AD, which the node does not implement.

Under ``torch.compile`` the backward's GEMMs run as one opaque operator
(``minbert::linear_grads``), so that inductor neither re-derives them nor casts their fp32
outputs. The node's backward runs once: a second derivative (``create_graph=True``) raises.

With ``Copies.weight_grad_stream`` (CUDA) the backward's dW and db GEMMs run on a second CUDA
stream while dx = g W runs on the current one: the two depend on g only, and at a few hundred
tokens each fills a fraction of the GPU's SMs. The current stream waits for the second before the
operator returns, so every tensor it reads or writes is done with when it returns (inside a CUDA
graph capture too: the fork and the join are captured). The values are those of the serial
products.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import nn
from torch.autograd import forward_ad
from torch.autograd.function import once_differentiable
from torch.nn.modules import module
from torch.nn.utils import parametrize


def _compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """Autocast's dtype where autocast is on for x's device and neither x nor the weight is
    float64 (autocast leaves float64 alone), else the weight's."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev) and torch.float64 not in (x.dtype, weight.dtype):
        return torch.get_autocast_dtype(dev)
    return weight.dtype


def _mm(a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype, out: torch.Tensor | None = None) -> torch.Tensor:
    """a @ b in ``out_dtype``, written into ``out`` (M, N) where given: a (M, K), b (K, N) of one
    dtype. Where that is not ``out_dtype``, CUDA writes the fp32-accumulated product in
    ``out_dtype`` (``out_dtype=``); elsewhere the inputs are cast."""
    if a.dtype != out_dtype and a.is_cuda:
        return torch.mm(a, b, out_dtype=out_dtype, out=out)
    return torch.mm(a.to(out_dtype), b.to(out_dtype), out=out)


class Copies(NamedTuple):
    """What :func:`compute_copies` gives the nodes of one forward."""

    stacked: dict[tuple[int, ...], tuple[torch.Tensor, torch.Tensor | None]]  # group key -> (W, b)
    weight_grad_stream: bool = False  # dW, db on a second CUDA stream beside dx (module docstring)


_ONES: dict[tuple[torch.device, torch.dtype], list[torch.Tensor]] = {}  # bias_ones' blocks, largest last


def bias_ones(m: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(1, m) ones in ``dtype`` on ``device``, the 1^T of the bias gradients 1^T g: a view of the
    largest block of ones kept for the device and dtype, so that a step makes none. A block too
    short for m is followed by a new one (at least 1,024, m and twice the last), and no block is
    ever released: a CUDA graph captured with a view of one reads its address at every replay.
    Inside a CUDA graph capture a block that would have to grow is made for that call only,
    since its fill runs at the graph's replays, not now."""
    blocks = _ONES.setdefault((device, dtype), [])
    if blocks and blocks[-1].shape[1] >= m:
        return blocks[-1][:, :m]
    block = torch.ones(1, max(m, 1024, 2 * blocks[-1].shape[1] if blocks else 0), dtype=dtype, device=device)
    if device.type != "cuda" or not _capturing(device):
        blocks.append(block)
    return block[:, :m]


def group_key(linears: tuple[nn.Linear, ...]) -> tuple[int, ...]:
    """The key of a projection group in :attr:`Copies.stacked`: its weights' and biases' ids (a
    weight may be tied across groups whose biases differ)."""
    return tuple(id(p) for m in linears for p in (m.weight, m.bias))


def _capturing(device: torch.device) -> bool:
    """Whether ``device``'s current stream is capturing a CUDA graph."""
    with torch.cuda.device(device):
        return torch.cuda.is_current_stream_capturing()


def linear_grads(
    x2: torch.Tensor, g: torch.Tensor, w: torch.Tensor, dx_dtype: torch.dtype, w_dtype: torch.dtype,
    asks: list[bool], weight_grad_stream: bool = False,
) -> list[torch.Tensor]:
    """The products of :func:`fused_linear`'s backward: x2 (M, K), g (M, N) and w (N, K) in the
    compute dtype; ``asks``: [dx, dW, db] wanted. Returns those asked for, in that order:
    dx = g W (M, K) in ``dx_dtype``; dW = g^T x2 (N, K) and db = 1^T g (N,) in ``w_dtype``, 1^T
    from :func:`bias_ones`. ``weight_grad_stream``: on CUDA, with dx and dW or db asked for, dW and
    db run on a second stream beside dx (:func:`_side_stream`; the same values)."""
    if weight_grad_stream and g.is_cuda and asks[0] and (asks[1] or asks[2]):
        return _linear_grads_two_streams(x2, g, w, dx_dtype, w_dtype, asks)
    out = [_mm(g, w, dx_dtype)] if asks[0] else []
    if asks[1]:
        out.append(_mm(g.t(), x2, w_dtype))
    if asks[2]:
        out.append(_mm(bias_ones(g.shape[0], g.dtype, g.device), g, w_dtype)[0])
    return out


_SIDE_STREAMS: dict[torch.device, torch.cuda.Stream] = {}  # per device, made once


def _side_stream(device: torch.device) -> torch.cuda.Stream:
    """The second stream of :func:`linear_grads` on ``device``, made on first use and kept, so that
    cuBLAS makes its workspace for it once (per stream, lazily) rather than at every call. At
    priority -1: torch hands out priority-0 streams from a small round-robin pool, from which a
    CUDA graph's capture stream comes too, and the two must differ for the work to overlap (in a
    captured graph the fork and the join are edges; the streams themselves are not replayed)."""
    if device not in _SIDE_STREAMS:
        _SIDE_STREAMS[device] = torch.cuda.Stream(device, priority=-1)
    return _SIDE_STREAMS[device]


def _linear_grads_two_streams(
    x2: torch.Tensor, g: torch.Tensor, w: torch.Tensor, dx_dtype: torch.dtype, w_dtype: torch.dtype,
    asks: list[bool],
) -> list[torch.Tensor]:
    """:func:`linear_grads` with dW and db on the second stream. Their outputs (and the ones) are
    made on the current stream before the fork, so that the caching allocator sees them as its
    own; the join before the return (also when a product raises) orders every later use and free
    after the second stream's work."""
    main, side = torch.cuda.current_stream(g.device), _side_stream(g.device)
    dw = g.new_empty(w.shape, dtype=w_dtype) if asks[1] else None  # (N, K)
    db = g.new_empty((1, w.shape[0]), dtype=w_dtype) if asks[2] else None  # (1, N)
    ones = bias_ones(g.shape[0], g.dtype, g.device) if asks[2] else None  # (1, M)
    side.wait_stream(main)
    try:
        with torch.cuda.stream(side):
            if dw is not None:
                _mm(g.t(), x2, w_dtype, out=dw)
            if db is not None:
                _mm(ones, g, w_dtype, out=db)
        dx = _mm(g, w, dx_dtype)  # (M, K), on the current stream beside them
    finally:
        main.wait_stream(side)
    return [dx] + [t for t in (dw, None if db is None else db[0]) if t is not None]


linear_grads_op = torch.library.custom_op("minbert::linear_grads", linear_grads, mutates_args=())


@linear_grads_op.register_fake
def _(x2, g, w, dx_dtype, w_dtype, asks, weight_grad_stream=False):  # noqa: ANN001, ANN202
    shapes = [(x2.shape, dx_dtype), (w.shape, w_dtype), ((w.shape[0],), w_dtype)]
    return [x2.new_empty(s, dtype=d) for (s, d), a in zip(shapes, asks, strict=True) if a]


class _FusedLinear(torch.autograd.Function):
    """Projections of one input as one node; see the module docstring.

    forward(x (..., K), compute dtype, stacked (W, b) in the compute dtype or None (cast and
    stack here), weight_grad_stream (:attr:`Copies.weight_grad_stream`), n, W_1 (N_1, K), ...,
    W_n, b_1 (N_1,) or None, ..., b_n) -> (..., sum N_i) in the compute dtype. Biases are all
    given or all None.
    """

    @staticmethod
    def forward(  # noqa: ANN205
        ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, dtype: torch.dtype,
        stacked: tuple[torch.Tensor, torch.Tensor | None] | None, weight_grad_stream: bool, n: int,
        *params: torch.Tensor | None,
    ):
        weights, biases = params[:n], params[n:]
        M, K = math.prod(x.shape[:-1]), x.shape[-1]
        x2 = x.reshape(M, K).to(dtype)  # (M, K), cast once
        if stacked is None:  # one linear in its dtype: no copy
            w = weights[0].to(dtype) if n == 1 else torch.cat([p.to(dtype) for p in weights])  # (N, K)
            b = biases[0] if biases[0] is None or n == 1 else torch.cat(biases)
            b = None if b is None else b.to(dtype)  # (N,)
        else:
            w, b = stacked
        y = x2.new_empty(*x.shape[:-1], w.shape[0])  # (..., N): written through, so that it is no view
        y2 = y.view(M, w.shape[0])
        torch.mm(x2, w.t(), out=y2) if b is None else torch.addmm(b, x2, w.t(), out=y2)  # (M, N)
        ctx.save_for_backward(x2, w)
        ctx.meta = (x.shape, x.dtype, weights[0].dtype, [p.shape[0] for p in weights], biases[0] is not None,
                    weight_grad_stream)
        return y

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, g: torch.Tensor):  # noqa: ANN205
        x2, w = ctx.saved_tensors
        x_shape, x_dtype, w_dtype, sizes, has_bias, side = ctx.meta
        n, need = len(sizes), ctx.needs_input_grad[5:]  # the W_i's and b_i's
        need_x, need_w, need_b = ctx.needs_input_grad[0], any(need[:n]), has_bias and any(need[n:])
        g2 = g.reshape(x2.shape[0], w.shape[0]).to(x2.dtype)  # (M, N)
        # compiled: one opaque operator, so that inductor keeps the fp32 outputs of the GEMMs
        products = linear_grads_op if torch.compiler.is_compiling() else linear_grads
        out = iter(products(x2, g2, w, x_dtype, w_dtype, [need_x, need_w, need_b], side))
        dx = next(out).view(x_shape) if need_x else None
        dws = next(out).split(sizes) if need_w else [None] * n  # row blocks: views, no copies
        dbs = next(out).split(sizes) if need_b else [None] * n
        dws = [d if need[i] else None for i, d in enumerate(dws)]
        dbs = [d if need[n + i] else None for i, d in enumerate(dbs)]
        return (dx, None, None, None, None, *dws, *dbs)


def fused_linear(x: torch.Tensor, linears: tuple[nn.Linear, ...], copies: Copies | None = None) -> torch.Tensor:
    """``torch.cat([F.linear(x, m.weight, m.bias) for m in linears], -1)`` as one autograd node
    (see the module docstring): x (..., K) -> (..., sum m.out_features), in the compute dtype
    (autocast's, else the weights'). ``copies``: :func:`compute_copies` of a list of groups that
    holds this one, whose stacked tensors the forward reads instead of casting the parameters;
    the gradients go to the parameters.

    Raises:
        ValueError: some of the linears have a bias and some have none."""
    weights, biases = [m.weight for m in linears], [m.bias for m in linears]
    if len({b is None for b in biases}) > 1:
        raise ValueError("fused_linear needs a bias in every linear or in none")
    stacked = None if copies is None else copies.stacked.get(group_key(linears))
    side = copies is not None and copies.weight_grad_stream
    return _FusedLinear.apply(x, _compute_dtype(x, weights[0]), stacked, side, len(linears), *weights, *biases)


def compute_copies(groups: list[tuple[nn.Linear, ...]], x: torch.Tensor, weight_grad_stream: bool = False) -> Copies:
    """The weights and biases of each group of ``linears`` stacked in the compute dtype of input
    ``x`` (autocast's on x's device, else the weights'), keyed by :func:`group_key`, written by one
    multi-tensor copy (``torch._foreach_copy_``) into one buffer (compiled: one ``torch.cat`` per
    group); none where the weights are in that dtype already (the nodes then stack them
    themselves). Detached: the gradients of :func:`fused_linear` go to the parameters
    themselves. The keys hold while the modules keep their parameters (see
    :func:`plain_groups`). ``weight_grad_stream``: the nodes' dW and db on a second CUDA stream
    (:attr:`Copies.weight_grad_stream`).

    Raises:
        ValueError: a group where some linears have a bias and some have none."""
    if any(len({m.bias is None for m in grp}) > 1 for grp in groups):
        raise ValueError("compute_copies needs a bias in every linear of a group or in none")
    params = [p for grp in groups for p in [m.weight for m in grp] + [m.bias for m in grp] if p is not None]
    dtype = _compute_dtype(x, params[0])
    if all(p.dtype == dtype for p in params):
        return Copies({}, weight_grad_stream)
    # compiled: one cat per group, which inductor fuses with its casts; the one-buffer form below
    # compiles to one gather kernel of about 3 ms a step (bert-base; docs/performance.md)
    if torch.compiler.is_compiling():
        return Copies({group_key(grp): (torch.cat([m.weight.detach().to(dtype) for m in grp]),
                                        None if grp[0].bias is None else
                                        torch.cat([m.bias.detach().to(dtype) for m in grp])) for grp in groups},
                      weight_grad_stream)
    # eager: one multi-tensor copy into one buffer, whose views are the stacked tensors
    buf = x.new_empty(sum(p.numel() for p in params), dtype=dtype)  # each group's W_1..W_n, then b_1..b_n
    dst = [v.view(p.shape) for v, p in zip(buf.split([p.numel() for p in params]), params, strict=True)]
    torch._foreach_copy_(dst, [p.detach() for p in params])
    stacked, at = {}, 0
    for grp in groups:
        N, K = sum(m.out_features for m in grp), grp[0].in_features
        w = buf[at : at + N * K].view(N, K)  # (N, K)
        at += N * K
        b = None if grp[0].bias is None else buf[at : at + N]  # (N,)
        at += 0 if b is None else N
        stacked[group_key(grp)] = (w, b)
    return Copies(stacked, weight_grad_stream)


def plain_groups(groups: list[tuple[nn.Module | None, ...]]) -> bool:
    """Whether :func:`fused_linear` may stand in for these modules' calls: it skips
    ``nn.Linear.__call__``, so every module must be a plain ``nn.Linear`` (the type itself, not a
    subclass or a wrapper such as a LoRA adapter), with no forward or backward hook of its own or
    global, and no parametrization (a parametrized weight is also a new tensor at every access);
    and no ``torch.func`` transform or forward-mode AD level may be active (the node has neither
    ``setup_context`` nor ``jvp``). None in a group (a module that is gone) is not plain."""
    if torch._C._are_functorch_transforms_active() or forward_ad._current_level >= 0:
        return False
    if any(getattr(module, h) for h in _GLOBAL_HOOKS):
        return False
    return all(type(m) is nn.Linear and not parametrize.is_parametrized(m)
               and not any(getattr(m, h) for h in _MODULE_HOOKS) for grp in groups for m in grp)


_MODULE_HOOKS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks")
_GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                 "_global_backward_pre_hooks")
