"""The benchmarks' own AdamW updates against the shipped ones, so that they time the same
arithmetic: the Triton AdamW of benchmarks/overlap_step.py (timed by
benchmarks/optimizer_update.py) against torch's fused kernel, under Triton's interpreter on CPU
(conftest.py sets TRITON_INTERPRET=1) and compiled on CUDA; the master-weights update of
benchmarks/master_weights_step.py against minbert.training.optim.AdamW."""

import sys
from pathlib import Path

import pytest
import torch

triton = pytest.importorskip("triton")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from overlap_step import _triton_adamw  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.mark.parametrize("grad_dtype", [torch.float32, torch.bfloat16])
def test_triton_adamw_equals_torch_fused(grad_dtype):
    kernel = _triton_adamw()
    if DEV == "cpu" and type(kernel).__name__ != "InterpretedFunction":
        pytest.skip("triton was imported before TRITON_INTERPRET was set")
    g = torch.Generator().manual_seed(0)
    n, block, programs = 1000, 64, 3  # 16 blocks over 3 programs: each loops; the last block partial
    p = torch.randn(n, generator=g).to(DEV)
    m, v, t = torch.zeros_like(p), torch.zeros_like(p), torch.zeros((), device=DEV)
    p0, p_ref, m_ref, v_ref, t_ref = p.clone(), p.clone(), m.clone(), v.clone(), t.clone()
    lr = torch.full((), 3e-3, device=DEV)
    for _ in range(4):
        grad = (torch.randn(n, generator=g) * 0.1).to(DEV, grad_dtype)
        t += 1
        t_ref += 1
        kernel[(programs,)](p, grad, m, v, n, lr, t, 0.9, 0.999, 1e-6, 0.01, BLOCK=block, NPROG=programs)
        torch._fused_adamw_([p_ref], [grad.float()], [m_ref], [v_ref], [], [t_ref], lr=3e-3, beta1=0.9, beta2=0.999,
                            weight_decay=0.01, eps=1e-6, amsgrad=False, maximize=False)
    torch.testing.assert_close(m, m_ref, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(v, v_ref, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(p, p_ref, rtol=1e-5, atol=1e-6)
    assert (p - p0).abs().mean() > 2e-3  # the update moved p: about lr a step (Adam), over 4 steps


@pytest.mark.parametrize("compiled", [False, True])
def test_master_weights_update_is_our_adamw_on_fp32_copies(compiled):
    """benchmarks/master_weights_step.py's update: fp32 master weights move as our AdamW moves
    fp32 parameters given the same (bf16) gradients, at the lr handed to ``graph_update``; the
    bf16 working weights are the masters rounded; the compile warm-up (prepare_graph_update),
    called again after some steps, leaves masters, moments and step count as they were."""
    from master_weights_step import MasterWeightsAdamW
    from minbert.training.optim import AdamW

    g = torch.Generator().manual_seed(0)
    shapes = [(30, 20), (20,), (7, 5, 3)]
    work = [torch.nn.Parameter(torch.randn(s, generator=g).to(DEV, torch.bfloat16)) for s in shapes]
    ref = [torch.nn.Parameter(p.detach().float().clone()) for p in work]
    opt = MasterWeightsAdamW(work, lr=1.0, weight_decay=0.01, compiled=compiled)  # the lr comes with each step
    ref_opt = AdamW(ref, lr=3e-3, weight_decay=0.01, eps=1e-6)
    start = [m.clone() for m in opt.master]
    for i in range(4):
        if i in (0, 2):  # a warm-up before a capture: no trace in the state
            before = [t.clone() for t in (*opt.master, *opt.m, *opt.v, opt.step_t)]
            opt.prepare_graph_update()
            for t, b in zip((*opt.master, *opt.m, *opt.v, opt.step_t), before, strict=True):
                assert torch.equal(t, b)
        grads = [(torch.randn(s, generator=g) * 0.1).to(DEV, torch.bfloat16) for s in shapes]
        for p, q, gr in zip(work, ref, grads, strict=True):
            p.grad, q.grad = gr, gr.float()
        opt.graph_update(torch.tensor([3e-3], device=DEV))
        ref_opt.step()
    assert float(opt.step_t) == 4
    assert min((m - s).abs().mean().item() for m, s in zip(opt.master, start, strict=True)) > 2e-3  # they moved
    for w, m, q in zip(work, opt.master, ref, strict=True):
        torch.testing.assert_close(m, q.detach(), rtol=1e-6, atol=1e-6)
        assert torch.equal(w.detach(), m.to(torch.bfloat16))
