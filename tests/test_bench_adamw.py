"""The Triton AdamW of benchmarks/overlap_step.py (timed by benchmarks/optimizer_update.py)
against torch's fused AdamW kernel: the benchmarks time an update that does the same arithmetic.
Runs under Triton's interpreter on CPU (conftest.py sets TRITON_INTERPRET=1), compiled on CUDA."""

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
