"""The lazily applied AdamW of an embedding table (minbert.training.lazy_rows) against the dense
update (minbert.training.optim.master_update): the rows a step reads hold the dense values at
that step, and after a flush the whole table and its state do. The torch reference runs on CPU;
the Triton kernel runs compiled on CUDA, else under Triton's interpreter (conftest.py sets
TRITON_INTERPRET=1)."""

import pytest
import torch
from torch import nn

from minbert.training.lazy_rows import LazyRows, LazyRowsEmbedding
from minbert.training.optim import master_update

V, H, PAD = 40, 12, 0  # H not a power of two: the kernel's block is masked
B1, B2, EPS, WD = 0.9, 0.999, 1e-6, 0.01


def _schedule(steps: int, seed: int = 0):
    """Per step: the token ids (the padding row, one row read twice, many rows never or rarely
    read), their gradient rows (normal: their bf16 rounding matters; a row's two rows add up to
    the same fp32 value in either order, as the kernel's atomics may add them), and the step's lr
    (warm-up then decay, as a scheduler gives)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for s in range(steps):
        n = int(torch.randint(4, 10, (), generator=g))
        ids = torch.randperm(V // 2 - 1, generator=g)[:n]  # rows V//2 - 1.. are never read here
        ids[0], ids[1] = PAD, ids[2]
        if s % 7 == 3:
            ids[3] = V // 2 - 1  # a row read now and then, after long gaps
        grad = torch.randn(n, H, generator=g)
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
    rows = LazyRows(w, master, m, v, torch.zeros((), device=dev), (B1, B2), EPS, WD, PAD, flush_every=flush_every,
                    backend="kernel" if kernel else "torch")  # the kernel: interpreted on a CPU
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
    # 16-bit working weights, so that the gradient's rounding to them counts: bf16 where the kernel
    # is compiled; fp16 under the interpreter, which rounds to bf16 its own way but to fp16 as torch
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float16
    ref = _lazy(w0, schedule, dtype=dtype)
    got = _lazy(w0, schedule, kernel=True, dtype=dtype, dev="cuda" if torch.cuda.is_available() else "cpu")
    for name, a, b, atol in zip(("master", "exp_avg", "exp_avg_sq"), got[:3], ref[:3], (1e-6, 1e-7, 1e-9),
                                strict=True):  # a few fp32 ulps: exp2/log2 against pow, FMA
        torch.testing.assert_close(a, b, rtol=1e-5, atol=atol, msg=name)
    assert torch.equal(got[6].row_step.cpu(), ref[6].row_step) and not got[6].acc.any()
    torch.testing.assert_close(got[6].hist.cpu(), ref[6].hist)
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
    assert len(rows.pending) == 1 and torch.equal(rows.pending[0], ids)
    with torch.no_grad():
        lookup(torch.tensor([5]))  # an evaluation's lookup: caught up, not updated
    assert len(rows.pending) == 1
    rows.update(0.01)
    assert float(rows.step) == 1.0 and not rows.acc.any() and rows.pending == []
    assert torch.equal(rows.row_step[torch.tensor([PAD, 1, 3, 7])], torch.ones(4, dtype=torch.int32))
    assert rows.row_step.sum() == 4  # only the rows read were updated


def test_mistakes_are_refused():
    w = torch.zeros(V, H)
    with pytest.raises(ValueError, match="float32, shaped like"):
        LazyRows(w, w.clone(), torch.zeros(V, H + 1), w.clone(), torch.zeros(()), (B1, B2), EPS, WD, None)
    with pytest.raises(ValueError, match="flush_every must be at least 1"):
        LazyRows(w, w.clone(), w.clone(), w.clone(), torch.zeros(()), (B1, B2), EPS, WD, None, flush_every=0)
    with pytest.raises(ValueError, match="backend must be auto, kernel or torch"):
        LazyRows(w, w.clone(), w.clone(), w.clone(), torch.zeros(()), (B1, B2), EPS, WD, None, backend="cuda")
    with pytest.raises(ValueError, match="contiguous"):
        LazyRows(w, w.clone(), w.t().contiguous().t(), w.clone(), torch.zeros(()), (B1, B2), EPS, WD, None)
    rows = LazyRows(w, w.clone(), w.clone(), w.clone(), torch.zeros(()), (B1, B2), EPS, WD, None, flush_every=2)
    ids = torch.tensor([1])
    for _ in range(3):  # no tick: row 2 falls three steps behind, more than the lr ring holds
        rows.catch_up(ids)
        rows.update(0.1)
    with pytest.raises(RuntimeError, match="3 steps behind, more than flush_every"):
        rows.catch_up(torch.tensor([2]))


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
                    EPS, WD, PAD, backend="kernel")
    for _ in range(2):
        rows.catch_up(torch.tensor([1], device=dev))
        rows.update(0.01)
    before = [t.clone() for t in (rows.master, rows.exp_avg, rows.exp_avg_sq, rows.row_step)]
    rows.catch_up(torch.tensor([V, -1, 3, 10**6], device=dev))
    assert rows.row_step[3] == 2
    changed = (rows.master != before[0]).any(1).nonzero().flatten().tolist()
    assert changed == [3] and torch.equal(rows.exp_avg, before[1]) and torch.equal(rows.exp_avg_sq, before[2])
    assert torch.equal(rows.row_step[torch.arange(V, device=dev) != 3], before[3][torch.arange(V, device=dev) != 3])


def _steps_both_ways(steps, kernel: bool, catch_up: bool = True):
    """Each step: its lookups ((ids, grad) pairs, any number, none included) and lr. The dense
    update and the lazy one (its catch-ups skipped with ``catch_up`` False: update() alone brings
    rows up), then flushed; returns both (master, exp_avg, exp_avg_sq) and the LazyRows."""
    dev = "cuda" if kernel and torch.cuda.is_available() else "cpu"
    w0 = torch.randn(V, H, generator=torch.Generator().manual_seed(7))
    master, m, v, w = w0.clone(), torch.zeros(V, H), torch.zeros(V, H), w0.to(torch.float32, copy=True)
    step = torch.zeros(())
    lm, lw = w0.to(dev, copy=True), w0.to(dev, copy=True)
    rows = LazyRows(lw, lm, torch.zeros(V, H, device=dev), torch.zeros(V, H, device=dev), torch.zeros((), device=dev),
                    (B1, B2), EPS, WD, PAD, flush_every=3, backend="kernel" if kernel else "torch")
    for lookups, lr in steps:
        dense = torch.zeros(V, H)
        for ids, grad in lookups:
            dense.index_add_(0, ids, grad * (ids != PAD).unsqueeze(1))
            rows.catch_up(ids.to(dev)) if catch_up else rows.pending.append(ids.to(dev))
            rows.accumulate(ids.to(dev), grad.to(dev))
        master_update([master], [dense], [m], [v], [w], [step], lr, B1, B2, EPS, WD)
        rows.update(lr)
        rows.tick()
    rows.flush()
    return (master, m, v), tuple(t.cpu() for t in (rows.master, rows.exp_avg, rows.exp_avg_sq)), rows


def _assert_equal_states(dense, lazy):
    for name, a, b, atol in zip(("master", "exp_avg", "exp_avg_sq"), lazy, dense, (1e-6, 1e-7, 1e-9), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=atol, msg=name)


def _kernel_or_skip(kernel: bool) -> None:
    if kernel:
        pytest.importorskip("triton")
        from minbert.training.lazy_rows_triton import _rows_kernel

        if not torch.cuda.is_available() and type(_rows_kernel).__name__ != "InterpretedFunction":
            pytest.skip("triton was imported before TRITON_INTERPRET was set")


@pytest.mark.parametrize("kernel", [False, True])
def test_a_step_without_lookups_still_counts_with_its_own_lr(kernel):
    """An update with no rows to update (no lookup since the last) still advances the step and
    records its lr, which the rows caught up later go through (at 5x the others' lr here)."""
    _kernel_or_skip(kernel)
    g = torch.Generator().manual_seed(1)
    a, b = torch.tensor([1, 2]), torch.tensor([2, 3])
    steps = [([(a, torch.randn(2, H, generator=g))], 0.01), ([], 0.05), ([(b, torch.randn(2, H, generator=g))], 0.01),
             ([], 0.02)]
    dense, lazy, rows = _steps_both_ways(steps, kernel)
    _assert_equal_states(dense, lazy)
    assert float(rows.step) == 4


@pytest.mark.parametrize("kernel", [False, True])
def test_several_lookups_before_one_update_all_get_their_update(kernel):
    """Two lookups (two tasks' batches, or an extra forward) between two updates: the update
    reaches the rows of both, each with the sum of its gradients."""
    _kernel_or_skip(kernel)
    g = torch.Generator().manual_seed(2)
    steps = [([(torch.tensor([1, 2, 5]), torch.randn(3, H, generator=g)),
               (torch.tensor([3, 4, 5]), torch.randn(3, H, generator=g))], 0.01) for _ in range(4)]
    dense, lazy, rows = _steps_both_ways(steps, kernel)
    _assert_equal_states(dense, lazy)
    assert not rows.acc.any() and rows.pending == []


@pytest.mark.parametrize("kernel", [False, True])
def test_an_update_alone_brings_rows_that_are_behind_up_first(kernel):
    """update() on rows that no catch-up brought to the current step (read two steps before)
    applies the steps they missed, then the step's own."""
    _kernel_or_skip(kernel)
    g = torch.Generator().manual_seed(3)
    steps = [([(torch.tensor([1 + (s % 3), 9]), torch.randn(2, H, generator=g))], 0.01 * (1 + s)) for s in range(6)]
    dense, lazy, _ = _steps_both_ways(steps, kernel, catch_up=False)
    _assert_equal_states(dense, lazy)


def test_the_kernel_reads_strided_ids():
    """ids that are a strided view (every other token) reach the right rows."""
    _kernel_or_skip(True)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    w = torch.randn(V, H, device=dev)
    rows = LazyRows(w, w.clone(), torch.zeros_like(w), torch.zeros_like(w), torch.zeros((), device=dev), (B1, B2),
                    EPS, WD, PAD, backend="kernel")
    for _ in range(2):
        rows.update(0.01, ids=torch.tensor([4], device=dev))
    ids = torch.tensor([1, 9, 2, 9, 3, 9], device=dev)[::2]  # 1, 2, 3
    rows.catch_up(ids)
    assert rows.row_step[torch.tensor([1, 2, 3, 9])].tolist() == [2, 2, 2, 0]


def test_prepare_drops_warm_up_work_and_resync_takes_rows_to_the_step():
    """What warm-up runs before a graph capture leave (ids, accumulated gradient) is dropped and
    the recorded steps are kept; after loading a state at step 5, resync takes every row there."""
    w = torch.randn(V, H)
    rows = LazyRows(w, w.clone(), torch.zeros_like(w), torch.zeros_like(w), torch.zeros(()), (B1, B2), EPS, WD, PAD)
    rows.catch_up(torch.tensor([1, 2]))
    rows.update(0.01)
    hist = rows.hist.clone()
    rows.catch_up(torch.tensor([3]))
    rows.accumulate(torch.tensor([3]), torch.ones(1, H))
    rows.prepare_graph_update()
    assert rows.pending == [] and not rows.acc.any() and torch.equal(rows.hist, hist)
    rows.step.fill_(5.0)
    rows.resync()
    assert (rows.row_step == 5).all()


def test_an_update_with_ids_keeps_the_pending_lookups_and_resync_drops_gradients():
    """update(lr, ids=...) updates the given rows and those of the lookups since the last update
    (their gradients applied now, not later); resync after a load drops gradients not applied."""
    w = torch.randn(V, H)
    rows = LazyRows(w, w.clone(), torch.zeros_like(w), torch.zeros_like(w), torch.zeros(()), (B1, B2), EPS, WD, PAD)
    rows.catch_up(torch.tensor([1]))
    rows.accumulate(torch.tensor([1]), torch.ones(1, H))
    rows.update(0.01, ids=torch.tensor([2]))
    assert rows.row_step[torch.tensor([1, 2, 3])].tolist() == [1, 1, 0] and not rows.acc.any()
    rows.catch_up(torch.tensor([3]))
    rows.accumulate(torch.tensor([3]), torch.ones(1, H))
    rows.resync()
    assert not rows.acc.any() and rows.pending == []
    with pytest.raises(IndexError, match="outside the table's 40 rows"):
        rows.catch_up(torch.tensor([-1]))
