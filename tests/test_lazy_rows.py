"""The lazily applied AdamW of an embedding table (minbert.training.lazy_rows) against the dense
update (minbert.training.optim.master_update): the rows a step reads hold the dense values at
that step, and after a flush the whole table and its state do. The torch reference runs on CPU;
the Triton kernel runs compiled on CUDA, else under Triton's interpreter (conftest.py sets
TRITON_INTERPRET=1)."""

import functools

import pytest
import torch
from torch import nn

from minbert.training.lazy_rows import LazyRows, LazyRowsEmbedding, _launch, triton_block
from minbert.training.optim import master_update

V, H, PAD = 40, 12, 0  # H not a power of two: the kernel's block is masked
B1, B2, EPS, WD = 0.9, 0.999, 1e-6, 0.01


def _schedule(steps: int, seed: int = 0):
    """Per step: the token ids (repeats, the padding row, many rows never or rarely read), their
    gradient rows, and the step's lr (warm-up then decay, as a scheduler gives)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in range(steps):
        n = int(torch.randint(3, 10, (), generator=g))
        ids = torch.randint(0, V // 2 - 1, (n,), generator=g)  # rows V//2.. are never read
        ids[0] = PAD
        if s % 7 == 3:
            ids[1] = V // 2 - 1  # a row read now and then, after long gaps
        # multiples of 1/64: sums in any order are exact in fp32 (the kernel's accumulator adds by
        # atomics on a GPU), so the rounding of a row's gradient to bf16 is the dense one's
        grad = torch.randint(-64, 65, (n, H), generator=g) / 64
        lr = 1e-2 * min(1.0, (s + 1) / 3) * (1 - s / (2 * steps))
        out.append((ids, grad, lr))
    return out


def _dense(weight0: torch.Tensor, schedule, dtype=torch.bfloat16):
    """The dense update (working weights of ``dtype`` from fp32 masters; the gradient in that
    dtype), and the weight rows each step read."""
    master, m, v, w = weight0.clone(), torch.zeros(V, H), torch.zeros(V, H), weight0.to(dtype, copy=True)
    step, reads = torch.zeros(()), []
    for ids, grad, lr in schedule:
        reads.append(w[ids].clone())
        dense = torch.zeros(V, H).index_add_(0, ids, grad * (ids != PAD).unsqueeze(1)).to(dtype)
        master_update([master], [dense], [m], [v], [w], [step], lr, B1, B2, EPS, WD)
    return master, m, v, w, step, reads


def _lazy(weight0: torch.Tensor, schedule, kernel: bool = False, dtype=torch.bfloat16, dev: str = "cpu",
          flush_every: int = 5):
    """The lazy update through the torch reference or the kernel (on ``dev``; on the CPU under
    Triton's interpreter), a tick after every update: what :func:`_dense` returns, on the CPU,
    and the LazyRows."""
    master, w = weight0.to(dev, copy=True), weight0.to(dev, dtype, copy=True)
    m, v = torch.zeros(V, H, device=dev), torch.zeros(V, H, device=dev)
    rows = LazyRows(w, master, m, v, torch.zeros((), device=dev), (B1, B2), EPS, WD, PAD, flush_every=flush_every)
    if kernel:
        rows._run = functools.partial(_launch, rows)  # the kernel wherever it is (interpreted on a CPU)
    reads = []
    for ids, grad, lr in schedule:
        ids = ids.to(dev)
        rows.catch_up(ids)
        reads.append(w[ids].cpu())
        rows.accumulate(ids, grad.to(dev))
        rows.update(torch.tensor(lr, device=dev))
        rows.tick()
    last_flush = len(schedule) // flush_every * flush_every
    assert (rows.row_step[V // 2 :] == last_flush).all()  # never read: moved by the flushes only
    rows.flush()
    return master.cpu(), m.cpu(), v.cpu(), w.cpu(), rows.step.cpu(), reads, rows


def test_rows_read_and_the_flushed_table_equal_the_dense_update():
    """Every row a forward reads holds what the dense update would have given it by then, and
    after the flush the masters, moments and bf16 weights equal the dense ones (to fp32
    rounding); the accumulator is zero again."""
    schedule = _schedule(32)
    w0 = torch.randn(V, H, generator=torch.Generator().manual_seed(1))
    dm, dmm, dv, dw, dstep, dreads = _dense(w0, schedule)
    lm, lmm, lv, lw, lstep, lreads, rows = _lazy(w0, schedule)
    for step, (a, b) in enumerate(zip(lreads, dreads, strict=True)):
        torch.testing.assert_close(a.float(), b.float(), rtol=0, atol=1e-2, msg=f"step {step}")
    torch.testing.assert_close(lm, dm, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(lmm, dmm, rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(lv, dv, rtol=1e-5, atol=1e-12)
    assert float(lstep) == float(dstep) == len(schedule)
    assert (rows.row_step == len(schedule)).all() and not rows.acc.any()
    assert (lw.float() - dw.float()).abs().max() <= 2 ** -8 * dw.float().abs().max()  # bf16 of near-equal masters
    moved = (dm - w0).abs()
    assert moved[V // 2 :].min() > 0  # the rows never read moved too (decay, as in the dense update)
    assert moved[1 : V // 2].max() > 1e-3  # the rows read moved by about lr a step


def test_the_kernel_equals_the_reference():
    """The Triton kernel (claims by compare-and-swap, repeated ids, the padding row, catch-up
    across gaps, the lr history) gives the torch reference's values."""
    triton = pytest.importorskip("triton")
    from minbert.training.lazy_rows_triton import _rows_kernel

    if not torch.cuda.is_available() and type(_rows_kernel).__name__ != "InterpretedFunction":
        pytest.skip("triton was imported before TRITON_INTERPRET was set")
    del triton
    schedule = _schedule(12, seed=3)
    w0 = torch.randn(V, H, generator=torch.Generator().manual_seed(4))
    # bf16 working weights where the kernel is compiled; the interpreter rounds to bf16 its own way
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    ref = _lazy(w0, schedule, dtype=dtype)
    got = _lazy(w0, schedule, kernel=True, dtype=dtype, dev="cuda" if torch.cuda.is_available() else "cpu")
    for name, a, b, atol in zip(("master", "exp_avg", "exp_avg_sq"), got[:3], ref[:3], (1e-6, 1e-7, 1e-9),
                                strict=True):  # a few fp32 ulps: exp2/log2 against pow, FMA
        torch.testing.assert_close(a, b, rtol=1e-5, atol=atol, msg=name)
    assert torch.equal(got[6].row_step.cpu(), ref[6].row_step) and not got[6].acc.any()
    torch.testing.assert_close(got[6].lr_hist.cpu(), ref[6].lr_hist)
    assert torch.equal(got[3], got[0].to(dtype))  # the working weights: its masters rounded


def test_the_lookup_accumulates_its_gradient_and_leaves_the_weight_without_one():
    """Through autograd: the lookup's output is nn.Embedding's, the accumulator holds the dense
    gradient that nn.Embedding's backward gives (nothing for the padding row), and the weight gets
    no ``.grad``; its forward caught the read rows up (row_step) and kept the ids for update()."""
    emb = nn.Embedding(V, H, padding_idx=PAD)
    ref = nn.Embedding(V, H, padding_idx=PAD)
    ref.weight.data.copy_(emb.weight.data)
    st = {k: torch.zeros(V, H) for k in ("m", "v")}
    rows = LazyRows(emb.weight, emb.weight.detach().clone(), st["m"], st["v"], torch.zeros(()), (B1, B2), EPS, WD,
                    PAD)
    lookup = LazyRowsEmbedding(emb, rows)
    ids = torch.tensor([[3, PAD, 3], [7, 1, PAD]])
    coef = torch.randn(2, 3, H)
    out = lookup(ids)
    torch.testing.assert_close(out, ref(ids), rtol=0, atol=0)
    (out * coef).sum().backward()
    (ref(ids) * coef).sum().backward()
    assert emb.weight.grad is None
    torch.testing.assert_close(rows.acc, ref.weight.grad)
    assert rows.ids is not None and torch.equal(rows.ids, ids)
    rows.update(0.01)
    assert float(rows.step) == 1.0 and not rows.acc.any()
    assert torch.equal(rows.row_step[torch.tensor([PAD, 1, 3, 7])], torch.ones(4, dtype=torch.int32))
    assert rows.row_step.sum() == 4  # only the rows read were updated


def test_mistakes_are_refused():
    w = torch.zeros(V, H)
    with pytest.raises(ValueError, match="float32, shaped like"):
        LazyRows(w, w.clone(), torch.zeros(V, H + 1), w.clone(), torch.zeros(()), (B1, B2), EPS, WD, None)
    with pytest.raises(ValueError, match="flush_every must be at least 1"):
        LazyRows(w, w.clone(), w.clone(), w.clone(), torch.zeros(()), (B1, B2), EPS, WD, None, flush_every=0)
    rows = LazyRows(w, w.clone(), w.clone(), w.clone(), torch.zeros(()), (B1, B2), EPS, WD, None, flush_every=2)
    with pytest.raises(RuntimeError, match="no ids"):
        rows.update(0.1)
    ids = torch.tensor([1])
    for _ in range(3):  # no tick: row 2 falls three steps behind, more than the lr ring holds
        rows.catch_up(ids)
        rows.update(0.1)
    with pytest.raises(RuntimeError, match="3 steps behind, more than flush_every"):
        rows.catch_up(torch.tensor([2]))


@pytest.mark.parametrize("h, block", [(1, 1), (12, 16), (384, 512), (768, 1024), (1024, 1024)])
def test_triton_block_is_the_next_power_of_two(h, block):
    assert triton_block(h) == block


def test_the_kernel_leaves_out_of_range_ids_alone():
    """An id outside the table (a corrupt input) makes the kernel touch nothing for it, so that the
    lookup after it raises, instead of the kernel writing outside the table; the rows in range are
    still caught up."""
    pytest.importorskip("triton")
    from minbert.training.lazy_rows_triton import _rows_kernel

    if not torch.cuda.is_available() and type(_rows_kernel).__name__ != "InterpretedFunction":
        pytest.skip("triton was imported before TRITON_INTERPRET was set")
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    w = torch.randn(V, H, device=dev)
    rows = LazyRows(w, w.clone(), torch.zeros_like(w), torch.zeros_like(w), torch.zeros((), device=dev), (B1, B2),
                    EPS, WD, PAD)
    rows._run = functools.partial(_launch, rows)
    for _ in range(2):
        rows.catch_up(torch.tensor([1], device=dev))
        rows.update(0.01)
    before = [t.clone() for t in (rows.master, rows.exp_avg, rows.exp_avg_sq, rows.row_step)]
    rows.catch_up(torch.tensor([V, -1, 3, 10**6], device=dev))
    assert rows.row_step[3] == 2
    changed = (rows.master != before[0]).any(1).nonzero().flatten().tolist()
    assert changed == [3] and torch.equal(rows.exp_avg, before[1]) and torch.equal(rows.exp_avg_sq, before[2])
    assert torch.equal(rows.row_step[torch.arange(V, device=dev) != 3], before[3][torch.arange(V, device=dev) != 3])
