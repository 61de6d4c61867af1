"""Autograd nodes of the packed training step with fewer kernels (the padded path and
inference keep ``nn.Linear``, the reference).

``shared_input_linear(x, linears)`` computes y_i = x W_i^T + b_i (``torch.nn.functional.linear``)
for one or more ``nn.Linear`` that read the same input, as one autograd node:

* forward: x is cast to the compute dtype once (not once per projection, as autocast does);
* backward: dL/dx = sum_i g_i W_i is accumulated by the GEMMs themselves (``addmm``), in x's
  dtype, instead of one product per projection, one dtype cast each and the adds; dL/dW_i =
  g_i^T x and dL/db_i = 1^T g_i are written by GEMMs directly in the parameters' dtype (fp32
  accumulation, ``out_dtype``), instead of a bf16 product, a column reduction and two casts.

The compute dtype is autocast's where autocast is on for x's device, else the weights' dtype. In
fp32 every product is the plain one: the gradients equal autograd's through ``F.linear`` up to
the order of float additions (tests/test_train_ops.py).

``compute_copies(linears, x)`` casts every weight and bias of a step's projections to the
compute dtype at once, by one multi-tensor copy (``torch._foreach_copy_``), instead of one cast
kernel per tensor (72 for MiniLM-L6); ``shared_input_linear`` then reads those copies.
``plain_linears(module)`` says whether the nodes may stand in for a module's ``nn.Linear`` calls:
they skip ``nn.Linear.__call__``, so a subclass, a hook (pruning's mask, for one) or a
parametrization keeps the modules' own calls.

The node's backward runs once: a second derivative (``create_graph=True``) raises.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.autograd.function import once_differentiable
from torch.nn.utils import parametrize


def _compute_dtype(x: torch.Tensor, weight: torch.Tensor) -> torch.dtype:
    """Autocast's dtype where autocast is on for x's device and neither x nor the weight is
    float64 (autocast leaves float64 alone), else the weight's."""
    dev = x.device.type
    if torch.is_autocast_enabled(dev) and torch.float64 not in (x.dtype, weight.dtype):
        return torch.get_autocast_dtype(dev)
    return weight.dtype


def _mm(a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype, acc: torch.Tensor | None = None) -> torch.Tensor:
    """acc + a @ b (acc None: a @ b), in ``out_dtype``: a, b (M, K), (K, N) of one dtype; acc
    (M, N) in ``out_dtype``. Where the inputs have another dtype than ``out_dtype``, CUDA writes
    the fp32-accumulated product in ``out_dtype`` (``out_dtype=``); elsewhere the inputs are cast."""
    if a.dtype != out_dtype and a.is_cuda:
        if acc is None:
            return torch.mm(a, b, out_dtype=out_dtype)
        return torch.addmm(acc, a, b, out_dtype=out_dtype)
    a, b = a.to(out_dtype), b.to(out_dtype)
    return torch.mm(a, b) if acc is None else torch.addmm(acc, a, b)


class _SharedInputLinear(torch.autograd.Function):
    """Several linear projections of one input; see the module docstring.

    forward(x (..., K), compute dtype, copies, n, W_1 (N_1, K), ..., W_n, b_1 (N_1,) or None, ...,
    b_n) -> n outputs (..., N_i) in the compute dtype. ``copies``: the weights and biases already
    in the compute dtype (see :func:`compute_copies`), or None to cast them here. An output that
    no loss reads gives its parameters no gradient (None), as with ``F.linear``.
    """

    @staticmethod
    def forward(  # noqa: ANN205
        ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, dtype: torch.dtype,
        copies: dict[int, torch.Tensor] | None, n: int, *params: torch.Tensor | None,
    ):
        weights, biases = params[:n], params[n:]
        M, K = math.prod(x.shape[:-1]), x.shape[-1]
        x2 = x.reshape(M, K).to(dtype)  # (M, K), cast once
        if copies:
            ws, bs = [copies[id(w)] for w in weights], [None if b is None else copies[id(b)] for b in biases]
        else:
            ws, bs = [w.to(dtype) for w in weights], [None if b is None else b.to(dtype) for b in biases]
        outs = []
        for w, b in zip(ws, bs, strict=True):
            y = None if x.dim() == 2 else x2.new_empty(*x.shape[:-1], w.shape[0])  # (..., N_i)
            y2 = None if y is None else y.view(M, w.shape[0])  # written through: no output is a view
            y2 = torch.mm(x2, w.t(), out=y2) if b is None else torch.addmm(b, x2, w.t(), out=y2)  # (M, N_i)
            outs.append(y2 if y is None else y)
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(x2, *ws)
        ctx.meta = (x.shape, x.dtype, [w.dtype for w in weights], [b is not None for b in biases])
        return tuple(outs)

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx, *grads: torch.Tensor | None):  # noqa: ANN205
        x2, *ws = ctx.saved_tensors
        x_shape, x_dtype, w_dtypes, has_bias = ctx.meta
        n, M = len(ws), x2.shape[0]
        need = ctx.needs_input_grad
        gs = [None if g is None else g.reshape(M, w.shape[0]).to(x2.dtype) for g, w in zip(grads, ws, strict=True)]
        dx = None
        if need[0]:
            for g, w in zip(gs, ws, strict=True):
                dx = dx if g is None else _mm(g, w, x_dtype, dx)  # (M, K): sum_i g_i W_i
            dx = None if dx is None else dx.view(x_shape)
        dws, dbs = [], []
        ones = x2.new_ones(1, M) if any(need[4 + n + i] for i in range(n)) else None
        for i, (g, w_dtype) in enumerate(zip(gs, w_dtypes, strict=True)):
            dws.append(_mm(g.t(), x2, w_dtype) if need[4 + i] and g is not None else None)  # (N_i, K)
            db = _mm(ones, g, w_dtype)[0] if has_bias[i] and need[4 + n + i] and g is not None else None  # (N_i,)
            dbs.append(db)
        return (dx, None, None, None, *dws, *dbs)


def shared_input_linear(
    x: torch.Tensor, linears: tuple[nn.Linear, ...], copies: dict[int, torch.Tensor] | None = None
) -> tuple[torch.Tensor, ...]:
    """``tuple(F.linear(x, m.weight, m.bias) for m in linears)`` as one autograd node (see the
    module docstring): x (..., K) -> each (..., m.out_features), in the compute dtype (autocast's,
    else the weights'). ``copies``: :func:`compute_copies` of these linears (or more), whose
    tensors the forward reads instead of casting the parameters; the gradients go to the
    parameters."""
    weights = [m.weight for m in linears]
    dtype = _compute_dtype(x, weights[0])
    return _SharedInputLinear.apply(x, dtype, copies, len(linears), *weights, *[m.bias for m in linears])


def compute_copies(linears: list[nn.Linear], x: torch.Tensor) -> dict[int, torch.Tensor]:
    """The weights and biases of ``linears`` in the compute dtype of input ``x`` (autocast's on
    x's device, else the weights'), keyed by ``id(parameter)``, cast by one multi-tensor copy
    (``torch._foreach_copy_``); empty where they are in that dtype already. Detached: the
    gradients of :func:`shared_input_linear` go to the parameters themselves. The keys hold
    while the modules keep their parameters (see :func:`plain_linears`)."""
    params = [p for m in linears for p in (m.weight, m.bias) if p is not None]
    dtype = _compute_dtype(x, params[0])
    if all(p.dtype == dtype for p in params):
        return {}
    copies = [torch.empty_like(p, dtype=dtype) for p in params]
    torch._foreach_copy_(copies, [p.detach() for p in params])
    return {id(p): c for p, c in zip(params, copies, strict=True)}


def plain_linears(module: nn.Module) -> list[nn.Linear] | None:
    """The ``nn.Linear`` modules below ``module``, where every one is plain: no subclass, forward
    hook, forward pre-hook (as pruning's mask) or parametrization, whose effect the nodes would
    skip (a parametrized weight is also a new tensor at every access); None where any is not."""
    out = []
    for m in module.modules():
        if isinstance(m, nn.Linear):
            if type(m) is not nn.Linear or m._forward_hooks or m._forward_pre_hooks or parametrize.is_parametrized(m):
                return None
            out.append(m)
    return out
