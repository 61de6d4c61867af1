"""AdamW with master weights on an embedding table's rows, each row's updates applied when the
row is next read.

A word embedding's gradient is zero in every row that a step's tokens do not look up: at BERT's
30,522 x 768 and batch 32, over 98% of the rows. The dense update still reads and writes every
row of the weight, its fp32 master and both moments at every step (28 bytes a parameter: 0.66 GB
for BERT's table), and the backward writes a dense fp32 gradient and its bf16 copy. Here each
row's state is kept at the step it was last brought to (``row_step``), and:

* before a step's forward, :meth:`LazyRows.catch_up` brings the rows that its tokens read to the
  current step: the AdamW updates with a zero gradient that the dense update applied to them
  meanwhile, one step at a time, each with its own step's lr, step size lr / (1 - b1^t) and
  sqrt(1 - b2^t), which :meth:`LazyRows.update` records in a ring (``hist``) as the dense update
  computes them (torch's pow of the step count);
* the backward adds the looked-up rows' gradients into an fp32 accumulator, zero elsewhere
  (:meth:`LazyRows.accumulate`), instead of writing a dense gradient (the update reads each row
  rounded to the weight's dtype, as the dense gradient is);
* :meth:`LazyRows.update` applies the step's AdamW update to the rows of every lookup since the
  last update (a zero-gradient update to a looked-up row whose gradient is zero, the padding
  row's, as the dense update does) and zeroes their accumulator rows; a step with no lookup still
  counts;
* :meth:`LazyRows.flush` brings every row to the current step (before weights or optimizer state
  are read: a checkpoint, an evaluation, the end of training), and :meth:`LazyRows.tick`, called
  after every update, does so every ``flush_every`` updates. That bounds the zero-gradient steps
  a catch-up applies, so a step's row work stays small whatever the data (a token first read
  after 5,000 steps would otherwise take 5,000 steps' arithmetic in one program), and the ring
  holds ``flush_every + 1`` steps.

So every row goes through the sequence of updates that the dense AdamW applies
(:func:`minbert.training.optim.master_update`: decoupled weight decay, m = lerp(m, g, 1 - b1),
v = b2 v + (1 - b2) g^2, p -= lr / (1 - b1^t) m / (sqrt(v) / sqrt(1 - b2^t) + eps); Loshchilov &
Hutter 2019, Alg. 2), in the same order: the values equal the dense update's up to the rounding
of fp32 operations (which the compilers may fuse differently). This is not the "lazy Adam" of
TensorFlow Addons, which skips the zero-gradient updates and so changes the optimizer.

On CUDA the row work is one Triton kernel launch per call (a program per looked-up token; the
first program to claim a row by an atomic compare-and-swap on ``row_step`` does it), captured in
a CUDA graph like any kernel: it reads the step count and the ring from device memory. Elsewhere
the same equations run as torch operations on the distinct rows (the reference the tests compare
the kernel with).
"""

from __future__ import annotations

import copy
import functools
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from .optim import AdamW


def _adamw_rows(p, m, v, g, lr, step_size, bc2, b1: float, b2: float, eps: float, wd: float):  # noqa: ANN001, ANN202
    """One AdamW step of fp32 rows ``p`` (masters), ``m``, ``v`` with gradient ``g`` (0 or a
    tensor), at ``lr`` with that step's ``step_size`` = -lr / (1 - b1^t) and ``bc2`` =
    sqrt(1 - b2^t) (tensors broadcastable to the rows: :func:`_step_scalars`), in
    :func:`minbert.training.optim.master_update`'s order. Returns the new (p, m, v)."""
    p = p * (1.0 - lr * wd)
    m = torch.lerp(m, torch.zeros_like(m) if isinstance(g, float) else g, 1.0 - b1)
    v = v * b2 + (1.0 - b2) * (g * g)
    return p + m / (torch.sqrt(v) / bc2 + eps) * step_size, m, v


def _step_scalars(hist: torch.Tensor, step: torch.Tensor, lr: torch.Tensor, b1: float, b2: float) -> None:
    """Record the coming step's (lr, step size, sqrt(1 - b2^t)) in row (step + 1) % R of the
    ring ``hist`` ((R, 3) float32), computed as :func:`minbert.training.optim.master_update`
    computes them (torch's pow of the step count, on the device)."""
    t = step + 1.0
    step_size = torch.reciprocal(1.0 - torch.pow(b1, t)) * -lr
    bc2 = torch.sqrt(1.0 - torch.pow(b2, t))
    hist.index_copy_(0, torch.remainder(t, hist.shape[0]).long().view(1), torch.stack([lr, step_size, bc2]).view(1, 3))


@functools.cache
def _compiled_step_scalars(options: tuple = ()):  # noqa: ANN202
    """:func:`_step_scalars` under ``torch.compile`` (one kernel on CUDA instead of eight), with
    inductor's settings ``options`` ((name, value) pairs)."""
    return torch.compile(_step_scalars, fullgraph=True, dynamic=False, options=dict(options) or None)


class LazyRows:
    """The lazily applied AdamW of one embedding table (see the module docstring).

    Args:
        weight: (V, H) the table's parameter (the working weights, any float dtype), contiguous.
        master, exp_avg, exp_avg_sq: (V, H) float32, contiguous, its AdamW state (master weights
            and moments; e.g. :class:`minbert.training.optim.AdamW` ``master_weights`` state).
        step: () float32 on the table's device, the number of updates applied (AdamW's ``step``
            state); advanced by :meth:`update`. Every row is taken to be at this step.
        betas, eps, weight_decay: AdamW's hyperparameters.
        padding_idx: the row whose lookups get no gradient (``nn.Embedding``'s), or None.
        flush_every: :meth:`tick` flushes after this many updates (at least 1). No row may fall
            further behind: the ring of per-step values holds ``flush_every + 1`` steps. The torch
            reference raises if one does; the kernel cannot, so call :meth:`tick` after every
            update.
        backend: ``kernel`` (the Triton kernel; on a CPU only under Triton's interpreter),
            ``torch`` (the reference) or ``auto`` (the kernel on CUDA, else the reference).

    The table's gradient lives in the accumulator, not in ``weight.grad``: a global gradient norm
    over ``.grad`` leaves it out (:meth:`norm_with` adds it), and clipping cannot reach it (this is
    for steps without clipping).

    Raises:
        ValueError: tensors of mismatched shapes, devices or dtypes, or not contiguous.
    """

    def __init__(
        self, weight: torch.Tensor, master: torch.Tensor, exp_avg: torch.Tensor, exp_avg_sq: torch.Tensor,
        step: torch.Tensor, betas: tuple[float, float], eps: float, weight_decay: float, padding_idx: int | None,
        flush_every: int = 16, backend: str = "auto",
    ):
        state = (master, exp_avg, exp_avg_sq)
        if weight.dim() != 2 or any(s.shape != weight.shape or s.dtype != torch.float32 for s in state):
            raise ValueError("LazyRows: master, exp_avg and exp_avg_sq must be float32, shaped like the (V, H) weight")
        if any(t.device != weight.device for t in (*state, step)) or step.shape != ():
            raise ValueError("LazyRows: every tensor on the weight's device, step a 0-d tensor")
        if not all(t.is_contiguous() for t in (weight, *state)):
            raise ValueError("LazyRows: the weight and its state must be contiguous (the kernel indexes row * H)")
        if flush_every < 1:
            raise ValueError(f"LazyRows: flush_every must be at least 1, got {flush_every}")
        if backend not in ("auto", "kernel", "torch"):
            raise ValueError(f"LazyRows: backend must be auto, kernel or torch, got {backend!r}")
        self.backend = backend
        self.weight, self.master, self.exp_avg, self.exp_avg_sq, self.step = weight, master, exp_avg, exp_avg_sq, step
        self.b1, self.b2 = (float(b) for b in betas)
        self.eps, self.wd, self.padding_idx = float(eps), float(weight_decay), padding_idx
        V, dev = weight.shape[0], weight.device
        self.row_step = torch.full((V,), int(step.item()), dtype=torch.int32, device=dev)  # the step each row is at
        self.acc = torch.zeros(weight.shape, dtype=torch.float32, device=dev)  # the step's gradient rows
        # hist[j % (flush_every + 1)]: step j's (lr, step size, sqrt(1 - b2^j)), for the steps a
        # row can be behind by
        self.hist = torch.zeros((flush_every + 1, 3), dtype=torch.float32, device=dev)
        self.flush_every, self._updates, self._warm = flush_every, 0, False
        self._lr = torch.zeros((), dtype=torch.float32, device=dev)  # the step's lr, as the ring's function reads it
        self.pending: list[torch.Tensor] = []  # the ids looked up with gradients since the last update
        self.compile_options: tuple = ()  # inductor's settings for the compiled step values (the optimizer's)

    def resync(self) -> None:
        """Take every row to be at ``step`` and drop any gradient not yet applied (after loading a
        flushed state into the tensors)."""
        self.row_step.fill_(int(self.step.item()))
        self.acc.zero_()
        self.pending = []

    @torch.no_grad()
    def catch_up(self, ids: torch.Tensor, pending: bool = True) -> None:
        """Bring the rows that ``ids`` (int64 token ids of any shape, repeats allowed) look up to
        the current step; with ``pending``, the next :meth:`update` updates them too (a lookup
        whose backward will add gradients; every lookup between two updates is kept)."""
        if pending:
            self.pending.append(ids)
        self._run(ids, False)

    @torch.no_grad()
    def accumulate(self, ids: torch.Tensor, grad: torch.Tensor) -> None:
        """Add the lookup's gradient ``grad`` ((N, H), any float dtype) into the rows ``ids``
        of the accumulator (the padding row's lookups add nothing, as ``nn.Embedding``'s)."""
        g = grad.reshape(-1, self.acc.shape[1]).float()
        if self.padding_idx is not None:
            g = g * (ids.reshape(-1, 1) != self.padding_idx)
        # (on CUDA by atomics: a row's repeats add in any order, so runs differ in the last bits, as
        # with inductor's compiled embedding backward; index_put_ with accumulate sorts, but checks
        # the ids' range on the host, which a graph capture does not allow)
        self.acc.index_add_(0, ids.reshape(-1), g)

    @torch.no_grad()
    def update(self, lr: float | torch.Tensor, ids: torch.Tensor | None = None) -> None:
        """One AdamW update (step count + 1, at ``lr``: a float or a 0-d float32 device tensor) of
        the rows of every lookup since the last update and of ``ids``, from the accumulated
        gradient, whose rows are then zero. Rows behind the current step are brought to it
        first. With no rows at all, the step still counts (its lr is recorded)."""
        # one tensor for every lr (a float, a view into a graph's lrs): one compile of the function
        self._lr.copy_(lr.reshape(())) if isinstance(lr, torch.Tensor) else self._lr.fill_(float(lr))
        record = _compiled_step_scalars(self.compile_options) if self.acc.device.type == "cuda" else _step_scalars
        record(self.hist, self.step, self._lr, self.b1, self.b2)
        for each in self.pending + ([] if ids is None else [ids]):
            self._run(each, True)
        self.pending = []
        self.step.add_(1.0)

    @torch.no_grad()
    def prepare_graph_update(self) -> None:
        """Before a CUDA graph captures :meth:`update`: compile what it compiles, outside the
        capture (the step values on copies of the ring; the kernel on an id outside the table,
        which it leaves alone), and drop what the warm-up runs before a capture left (their
        lookups' ids and accumulated gradients)."""
        if self.acc.device.type == "cuda" and not self._warm:
            record = _compiled_step_scalars(self.compile_options)
            record(self.hist.clone(), self.step.clone(), self._lr, self.b1, self.b2)
            if self.backend != "torch":  # the update's kernel too (the forward's runs before any capture), on
                outside = torch.full((1,), self.acc.shape[0], device=self.acc.device)  # an id it leaves alone
                _launch(self, outside, True)
            torch.cuda.synchronize(self.acc.device)
            self._warm = True
        self.acc.zero_()
        self.pending = []

    @torch.no_grad()
    def grad_sq(self) -> torch.Tensor:
        """() float32: the squared L2 norm of the gradient the next update applies, the dense
        gradient's (the accumulated rows of the lookups since the last update, each row once,
        rounded to the weight's dtype). Shapes fixed by the lookups (a sort, no unique), so a CUDA
        graph can capture it."""
        if not self.pending:
            return torch.zeros((), device=self.acc.device)
        ids = torch.cat([i.reshape(-1) for i in self.pending]).sort().values
        first = torch.ones_like(ids, dtype=torch.bool)
        first[1:] = ids[1:] != ids[:-1]
        g = self.acc.index_select(0, ids).to(self.weight.dtype).float()
        return (g.square().sum(1) * first).sum()

    def norm_with(self, norm: torch.Tensor) -> torch.Tensor:
        """() float32: the global L2 norm of the gradients whose norm without the table is
        ``norm`` (sqrt(norm^2 + :meth:`grad_sq`))."""
        return (norm.float().square() + self.grad_sq()).sqrt()

    @torch.no_grad()
    def discard(self) -> None:
        """Drop the gradients of the lookups since the last update, which then updates none of
        them (a step skipped for a non-finite loss)."""
        for ids in self.pending:
            self.acc.index_fill_(0, ids.reshape(-1), 0.0)
        self.pending = []

    def tick(self) -> None:
        """Count one update (made by :meth:`update`, eager or replayed in a CUDA graph); every
        ``flush_every`` updates, :meth:`flush`. Call it after every update."""
        self._updates += 1
        if self._updates % self.flush_every == 0:
            self.flush()

    @torch.no_grad()
    def flush(self) -> None:
        """Bring every row to the current step (the state the dense update would hold)."""
        self._run(_all_rows(self.acc.shape[0], self.acc.device), False)

    def _run(self, ids: torch.Tensor, update: bool) -> None:
        ids = ids.reshape(-1).contiguous()
        if ids.numel() == 0:
            return
        if self.backend == "kernel" or (self.backend == "auto" and ids.device.type == "cuda"):
            _launch(self, ids, update)
        else:
            self._reference(ids, update)

    def _reference(self, ids: torch.Tensor, update: bool) -> None:
        """The kernel's work as torch operations on the distinct rows (CPU).

        Raises:
            RuntimeError: a row more than ``flush_every`` steps behind (:meth:`tick` not called).
            IndexError: an id outside the table.
        """
        if ((ids < 0) | (ids >= self.acc.shape[0])).any():
            raise IndexError(f"LazyRows: token ids outside the table's {self.acc.shape[0]} rows")
        rows = torch.unique(ids)
        t = int(self.step.item())
        target = t + 1 if update else t
        old = self.row_step[rows]
        rows, old = rows[old < target], old[old < target]
        if rows.numel() == 0:
            return
        if t - int(old.min()) > self.flush_every:
            raise RuntimeError(f"LazyRows: a row is {t - int(old.min())} steps behind, more than flush_every "
                               f"({self.flush_every}): call tick() after every update")
        R = self.hist.shape[0]
        p, m, v = self.master[rows], self.exp_avg[rows], self.exp_avg_sq[rows]
        for j in range(int(old.min()) + 1, t + 1):  # the zero-gradient steps, row by row from its own
            behind = (old < j).unsqueeze(1)
            p2, m2, v2 = _adamw_rows(p, m, v, 0.0, *self.hist[j % R], self.b1, self.b2, self.eps, self.wd)
            p, m, v = torch.where(behind, p2, p), torch.where(behind, m2, m), torch.where(behind, v2, v)
        if update:
            g = self.acc[rows].to(self.weight.dtype).float()  # the dense gradient's dtype is the weight's
            self.acc[rows] = 0.0
            p, m, v = _adamw_rows(p, m, v, g, *self.hist[(t + 1) % R], self.b1, self.b2, self.eps, self.wd)
        self.master[rows], self.exp_avg[rows], self.exp_avg_sq[rows] = p, m, v
        self.weight.data[rows] = p.to(self.weight.dtype)
        self.row_step[rows] = target


@functools.cache
def _all_rows(n: int, device: torch.device) -> torch.Tensor:
    return torch.arange(n, device=device)


class _Lookup(torch.autograd.Function):
    """The table's lookup: rows caught up before, gradient rows accumulated after (no dense
    gradient: the weight's ``.grad`` stays None)."""

    @staticmethod
    def forward(ctx, ids, weight, rows, padding_idx, pending):  # noqa: ANN001, ANN205
        rows.catch_up(ids, pending)
        ctx.ids, ctx.rows = ids, rows
        return nn.functional.embedding(ids, weight, padding_idx)

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        ctx.rows.accumulate(ctx.ids, grad)
        return None, None, None, None, None


class LazyRowsEmbedding(nn.Module):
    """An ``nn.Embedding``'s lookup whose table AdamW updates through :class:`LazyRows`: it holds
    the same parameter (``weight``, so state_dict keys do not change). Runs outside
    ``torch.compile`` (a compiled function calls it as a break in its graph), so that its row
    work stays in place on the state tensors. A deep copy of it (of a model holding it: an
    evaluation copy) is a plain ``nn.Embedding`` with every row brought up, which no update reaches."""

    def __init__(self, embedding: nn.Embedding, rows: LazyRows):
        super().__init__()
        self.weight, self.padding_idx, self.rows = embedding.weight, embedding.padding_idx, rows

    def __deepcopy__(self, memo: dict) -> nn.Embedding:
        self.rows.flush()
        plain = nn.Embedding(*self.weight.shape, padding_idx=self.padding_idx, device="meta")
        plain.weight = copy.deepcopy(self.weight, memo)
        return plain

    @torch.compiler.disable
    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: (...) int64. Returns (..., H) in the weight's dtype. A lookup without gradients
        (evaluation) catches its rows up but leaves them out of the next update."""
        pending = torch.is_grad_enabled() and self.weight.requires_grad
        return _Lookup.apply(ids, self.weight, self.rows, self.padding_idx, pending)


def _launch(rows: LazyRows, ids: torch.Tensor, update: bool) -> None:
    import triton

    from .lazy_rows_triton import _rows_kernel

    V, H = rows.acc.shape
    _rows_kernel[(ids.numel(),)](
        ids, rows.row_step, rows.step, rows.master, rows.exp_avg, rows.exp_avg_sq, rows.weight, rows.acc, rows.hist,
        rows.hist.shape[0], V, H, rows.b2, 1.0 - rows.b1, 1.0 - rows.b2, rows.eps, rows.wd, UPDATE=update,
        BLOCK=triton.next_power_of_2(H),  # one row per program
    )


def attach_lazy_rows(model: nn.Module, optimizer: AdamW, flush_every: int = 16) -> LazyRows:
    """Train ``model``'s word embedding (its one ``nn.Embedding`` named
    ``...embeddings.word_embeddings``) through :class:`LazyRows`, on ``optimizer``'s AdamW state
    for it (its fp32 masters with ``master_weights``, else the weight itself, which must then be
    float32):

    * its lookup becomes a :class:`LazyRowsEmbedding` (state_dict keys unchanged), so its weight
      gets no ``.grad`` and the groups' update skips it;
    * ``optimizer.rows`` is the :class:`LazyRows`: every update of the optimizer, eager or captured
      (:meth:`~minbert.training.optim.AdamW.graph_update`), ends with the rows' update, at the lr
      of the table's group;
    * before anything reads the weights or the state, every row is brought up: a ``state_dict`` of
      the model or of any module that holds the table, and of the optimizer; a deep copy (its
      lookup is then a plain ``nn.Embedding``). So is it before a load into the model or any
      module that holds the table, whose values are then current with moments brought up too
      (call this before :func:`~minbert.training.optim.attach_master_weights`, whose load hook
      writes the masters); after a load into the optimizer every row is taken to be at its loaded
      step.

    Returns the :class:`LazyRows`.

    Raises:
        ValueError: no such embedding or several; it is frozen or in none of ``optimizer``'s
            groups; its state not float32 or not on its device (an unfused AdamW's step count
            lives on the host).
    """
    found = [(n, m) for n, m in model.named_modules()
             if n.endswith("embeddings.word_embeddings") and isinstance(m, nn.Embedding)]
    if len(found) != 1:
        raise ValueError(f"attach_lazy_rows: {len(found)} word embeddings (…embeddings.word_embeddings) in the model")
    name, emb = found[0]
    weight = emb.weight
    group = next((i for i, g in enumerate(optimizer.param_groups) if any(q is weight for q in g["params"])), None)
    if group is None or not weight.requires_grad:
        raise ValueError(f"attach_lazy_rows: {name}.weight is not trained by the optimizer")
    st, g = optimizer.state_of(weight), optimizer.param_groups[group]
    master = st["master"] if optimizer.master_weights else weight.detach()
    rows = LazyRows(weight, master, st["exp_avg"], st["exp_avg_sq"], st["step"], g["betas"], g["eps"],
                    g["weight_decay"], emb.padding_idx, flush_every)
    parent, _, attr = name.rpartition(".")
    lookup = LazyRowsEmbedding(emb, rows)
    setattr(model.get_submodule(parent), attr, lookup)
    lookup.register_state_dict_pre_hook(lambda *_: rows.flush())  # runs for any module above it too
    # before a load the rows are brought up: the model's hook runs before the masters' (a load
    # into the model); the lookup's for a load into any module above it (a no-op after the first)
    model.register_load_state_dict_pre_hook(lambda *_: rows.flush())
    lookup.register_load_state_dict_pre_hook(lambda *_: rows.flush())
    optimizer.rows, optimizer.rows_group, rows.compile_options = rows, group, optimizer.compile_options
    return rows
