"""The Triton kernel of :mod:`minbert.training.lazy_rows` (imported where it runs: on CUDA, or
under Triton's interpreter with ``TRITON_INTERPRET=1``)."""

from __future__ import annotations

import triton
import triton.language as tl


@triton.jit
def _adamw(p, m, v, g, lr, step_size, bc2, b2, omb1, omb2, eps, wd):
    """One AdamW step of fp32 row blocks, with that step's lr, step size and sqrt(1 - b2^t)
    (``lazy_rows._step_scalars``), in ``master_update``'s order (see ``lazy_rows._adamw_rows``).
    ``omb1``, ``omb2``: 1 - b1 and 1 - b2 worked out in float64 on the host and rounded once, as
    ``master_update``'s Python floats are (1 - b2 in fp32 from b2 rounded to fp32 is 1.3e-5 off
    for b2 = 0.999). The square root and divisions are IEEE round-to-nearest (``sqrt_rn``,
    ``div_rn``), as torch's are; Triton's plain ones are approximate."""
    p = p * (1.0 - lr * wd)
    m = m + omb1 * (g - m)
    v = v * b2 + omb2 * (g * g)
    return p + tl.div_rn(m, tl.div_rn(tl.sqrt_rn(v), bc2) + eps) * step_size, m, v


@triton.jit
def _rows_kernel(ids_ptr, row_step_ptr, step_ptr, master_ptr, m_ptr, v_ptr, w_ptr, acc_ptr, hist_ptr,
                 R, V, H, b2, omb1, omb2, eps, wd, UPDATE: tl.constexpr, BLOCK: tl.constexpr):
    """Program i: the row ids[i]. With ``UPDATE`` the target is the step count + 1 (this step's
    update from the accumulated gradient), else the step count (catch up). The first program to
    move ``row_step[row]`` from below the target to it (compare-and-swap) brings the row there:
    the zero-gradient steps it missed, then with ``UPDATE`` the step's own; step j's lr, step size
    and sqrt(1 - b2^j) are row j % R of the (R, 3) ring ``hist``. An id outside [0, V) touches
    nothing (the lookup after the kernel raises on it)."""
    i = tl.program_id(0)
    row = tl.load(ids_ptr + i).to(tl.int64)
    t = tl.load(step_ptr).to(tl.int32)
    target = t + 1 if UPDATE else t
    inside = (row >= 0) & (row < V)
    old = tl.load(row_step_ptr + row, mask=inside, other=target)
    if old < target:
        if tl.atomic_cas(row_step_ptr + row, old, target) == old:
            offs = tl.arange(0, BLOCK)
            mask = offs < H
            base = row * H
            p = tl.load(master_ptr + base + offs, mask=mask)
            m = tl.load(m_ptr + base + offs, mask=mask)
            v = tl.load(v_ptr + base + offs, mask=mask)
            for j in range(old + 1, t + 1):
                h = hist_ptr + (j % R) * 3
                p, m, v = _adamw(p, m, v, 0.0, tl.load(h), tl.load(h + 1), tl.load(h + 2), b2, omb1, omb2, eps, wd)
            if UPDATE:
                g = tl.load(acc_ptr + base + offs, mask=mask)
                tl.store(acc_ptr + base + offs, tl.zeros_like(g), mask=mask)
                g = g.to(w_ptr.dtype.element_ty).to(tl.float32)  # the dense gradient's dtype is the weight's
                h = hist_ptr + ((t + 1) % R) * 3
                p, m, v = _adamw(p, m, v, g, tl.load(h), tl.load(h + 1), tl.load(h + 2), b2, omb1, omb2, eps, wd)
            tl.store(master_ptr + base + offs, p, mask=mask)
            tl.store(m_ptr + base + offs, m, mask=mask)
            tl.store(v_ptr + base + offs, v, mask=mask)
            tl.store(w_ptr + base + offs, p.to(w_ptr.dtype.element_ty), mask=mask)
