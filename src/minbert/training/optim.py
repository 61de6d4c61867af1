"""Optimizers and learning-rate schedules.

* :class:`AdamW` -- written from its update equations (Loshchilov & Hutter 2019, "Decoupled
  Weight Decay Regularization", Algorithm 2, with Adam's bias correction, Kingma & Ba 2015):

      m_t = b1 m_{t-1} + (1 - b1) g_t            v_t = b2 v_{t-1} + (1 - b2) g_t^2
      m^_t = m_t / (1 - b1^t)                    v^_t = v_t / (1 - b2^t)
      theta_t = theta_{t-1} - lr * wd * theta_{t-1} - lr * m^_t / (sqrt(v^_t) + eps)

  With ``fused`` (``optim.fused``) each group's update is one call of torch's fused
  multi-tensor AdamW kernel (``torch._fused_adamw_``, the kernel behind
  ``torch.optim.AdamW(fused=True)``): the same equations in one pass over parameter, gradient and
  moments instead of eight, with v^ written as v / (sqrt(1 - b2^t))^2, so the results agree up
  to float rounding (tests/test_optim.py).

  With ``master_weights`` (``optim.master_weights``) the optimizer keeps an fp32 master copy of
  every parameter beside the moments, and the model trains bf16 working weights: each update
  applies the equations to the masters, from the bf16 gradients, and writes the working weights
  as the masters rounded (mixed-precision training with master weights: Micikevicius et al.
  2018, "Mixed Precision Training", Sec. 3.1). The forward then casts no weight and the backward
  writes bf16 gradients. On a CUDA device (``fused``) the update is one function compiled by
  inductor; :func:`attach_master_weights` casts the model and makes its ``state_dict`` hold the
  masters, so that checkpoints and exports keep fp32 weights.

* ``torch.optim.AdamW`` (fused per ``optim.fused``), name ``torch_adamw``.
* Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms") from the
  ``lion-pytorch`` package. Lion's update has unit size per coordinate, so the paper advises an
  lr 3-10x smaller than AdamW's and a weight decay 3-10x larger (same lr * wd product).

The lr schedules are in :mod:`minbert.training.lr_schedule`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..config import OptimConfig, use_fused_optimizer
from ..errors import ConfigError

if TYPE_CHECKING:
    from .lazy_rows import LazyRows

NO_DECAY = ("bias", "LayerNorm.weight", "LayerNorm.bias")


def layer_id(name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise lr decay: 0 for the embeddings, i + 1 for encoder layer
    i, ``num_layers + 1`` for the pooler and the task heads (everything above the encoder)."""
    if ".embeddings." in f".{name}":
        return 0
    marker = "encoder.layer."
    if marker in name:
        return int(name.split(marker, 1)[1].split(".", 1)[0]) + 1
    return num_layers + 1


def param_groups(
    model: nn.Module,
    weight_decay: float,
    lr: float | None = None,
    layer_decay: float = 1.0,
    head_lr: float | None = None,
) -> list[dict]:
    """Groups of trainable parameters.

    Weight decay: ``weight_decay`` except for biases, LayerNorm parameters and the uncertainty
    weighting's log-variances (0). With ``lr`` given, each group also gets its own lr:
    layer-wise lr decay (Howard & Ruder 2018; Clark et al. 2020) scales the lr of a parameter at
    depth d (:func:`layer_id`) by ``layer_decay ** (L + 1 - d)`` for an encoder of L layers, and
    parameters outside the encoder (the heads, the log-variances) use ``head_lr`` when given.
    Asserts that every trainable parameter is in exactly one group.
    """
    num_layers = sum(
        1 for n, _ in model.named_modules() if n.count("encoder.layer.") == 1 and n.split("encoder.layer.")[1].isdigit()
    )
    buckets: dict[tuple[float, float], list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        task_weight = name.startswith("loss_log_vars.")  # uncertainty weighting's s_t: not decayed
        wd = 0.0 if name.endswith(NO_DECAY) or "LayerNorm" in name or task_weight else weight_decay
        group_lr = None
        if lr is not None:
            if (name.startswith("heads.") or task_weight) and head_lr is not None:
                group_lr = head_lr
            else:
                group_lr = lr * layer_decay ** (num_layers + 1 - layer_id(name, num_layers))
        buckets.setdefault((wd, group_lr), []).append(p)
    trainable = [p for p in model.parameters() if p.requires_grad]
    ids = [id(p) for ps in buckets.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(trainable), "a parameter is in no group or in two"
    groups = []
    for (wd, group_lr), ps in sorted(buckets.items(), key=lambda kv: (-kv[0][0], kv[0][1] or 0.0)):
        g = {"params": ps, "weight_decay": wd}
        if group_lr is not None:
            g["lr"] = group_lr
        groups.append(g)
    return groups


class AdamW(torch.optim.Optimizer):
    """AdamW from its update equations (see the module docstring). Per-parameter state:
    ``step`` (a 0-d float32 tensor: on the parameter's device when ``fused``, else on the CPU,
    as in ``torch.optim.AdamW``), ``exp_avg`` and ``exp_avg_sq`` (same shape and dtype as the
    parameter). ``fused``: each update through torch's fused AdamW kernel (float parameters, on a
    device that has the kernel: CUDA or CPU), which reads ``step`` where it lives, so a fused
    update launches nothing from the host but its kernels and can be captured in a CUDA graph
    (:meth:`graph_update`). The state is the same either way, so a checkpoint resumes either way
    (integer step counts of older checkpoints included). ``rows`` (set by
    :func:`minbert.training.lazy_rows.attach_lazy_rows`): a word embedding whose update, applied
    to the rows its lookups read, ends every update (:meth:`step`, :meth:`graph_update`; a replayed
    one is counted by :meth:`replayed`); :meth:`state_dict` brings all its rows up first.
    ``compile_options``: inductor's settings (``torch.compile(options=...)``, dotted names) for
    the compiled update that ``fused`` with ``master_weights`` runs, and for ``rows``' step values."""

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        fused: bool = False,
        master_weights: bool = False,
        compile_options: dict[str, object] | None = None,
    ):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or weight_decay < 0:
            raise ConfigError(f"invalid AdamW hyperparameters lr={lr} betas={betas} eps={eps} wd={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.fused, self.master_weights = fused, master_weights
        # inductor's settings for the compiled master update (torch.compile options), hashable
        if any(isinstance(v, dict) for v in (compile_options or {}).values()):
            raise ValueError("AdamW: compile_options take dotted names (triton.enable_pdl), not sections")
        self.compile_options = tuple(sorted((compile_options or {}).items()))
        if master_weights:  # the masters are copies of the parameters as they are now (fp32)
            for group in self.param_groups:
                for p in group["params"]:
                    self.state_of(p)
        if master_weights and fused:  # each group's lr as the compiled update reads it (_master_group_update)
            self._lr_bufs = [torch.zeros((), device=g["params"][0].device) for g in self.param_groups]
        # an embedding table updated on the rows a step reads, after the groups, with group
        # rows_group's lr (minbert.training.lazy_rows.attach_lazy_rows), or None
        self.rows: LazyRows | None = None
        self.rows_group = 0

    def state_of(self, p: torch.Tensor) -> dict:
        """``p``'s state, created (step 0, zero moments) on first use."""
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device if self.fused else "cpu")
            dtype = torch.float32 if self.master_weights else p.dtype
            state["exp_avg"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
            if self.master_weights:
                state["master"] = p.detach().to(torch.float32, copy=True)
        return state

    def _with_grads(self, group: dict) -> tuple[list, list, list, list, list]:
        """(params, grads, exp_avgs, exp_avg_sqs, steps) of the group's parameters that have a
        gradient, their state created (one pass: this loop runs on the host at every step)."""
        params, grads, m, v, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state_of(p)
            params.append(p)
            grads.append(p.grad)
            m.append(state["exp_avg"])
            v.append(state["exp_avg_sq"])
            steps.append(state["step"])
        return params, grads, m, v, steps

    def load_state_dict(self, state_dict: dict) -> None:
        """``torch.optim.Optimizer.load_state_dict``, then every ``step`` as this optimizer keeps
        it (a 0-d float32 tensor where :meth:`_state` puts it, of its own: older checkpoints hold
        ints). Where a parameter already has a state tensor of the loaded one's shape, dtype and
        device, the values are copied into it, so that a CUDA graph that captured
        :meth:`graph_update` goes on updating the state this optimizer holds.

        Raises:
            ValueError: ``state_dict``'s parameter groups do not match this optimizer's.
        """
        held = {p: dict(state) for p, state in self.state.items()}  # the tensors a graph may have captured
        super().load_state_dict(state_dict)
        saved = state_dict["state"]
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        for p, i in zip((p for g in self.param_groups for p in g["params"]), ids, strict=True):
            if not self.master_weights:
                if p in self.state:  # (looking it up would create an entry: state_dict() would list it)
                    self.state[p].pop("master", None)  # saved with master weights: the parameters hold them
                continue
            state = self.state[p]
            if not state and p in held:  # not stepped when saved: the state held, whose master is
                self.state[p] = state = held[p]  # the weights loaded into the model (or the initial ones)
            # torch casts state to the parameter's dtype (bf16): the fp32 values again
            for k in ("exp_avg", "exp_avg_sq", "master"):
                if k in saved.get(i, {}):
                    state[k] = saved[i][k].to(device=p.device, dtype=torch.float32, copy=True)
            if "master" not in state:  # saved without master weights: the masters held, which
                state["master"] = held[p]["master"] if "master" in held.get(p, {}) else p.detach().float()
        for p, state in self.state.items():
            if "step" in state:
                where = p.device if self.fused else torch.device("cpu")
                state["step"] = torch.as_tensor(state["step"], dtype=torch.float32).to(where).clone()
            for k, old in held.get(p, {}).items():
                new = state.get(k)
                if isinstance(new, torch.Tensor) and (old.shape, old.dtype, old.device) == (
                    new.shape, new.dtype, new.device
                ):
                    state[k] = old.copy_(new)
        if self.rows is not None:  # every row at the loaded step
            self.rows.resync()

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One update of every parameter with a gradient. The equations are applied to all
        parameters of a group at once with ``torch._foreach_*`` (multi-tensor) ops: the same
        arithmetic as a per-parameter loop, with far fewer kernel launches on a GPU."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for i, group in enumerate(self.param_groups):
            if self.master_weights:
                self._master_group_update(i, group["lr"])
                continue
            if self.fused:
                self._fused_group_update(group, group["lr"])
                continue
            params, grads, m, v, steps = self._with_grads(group)
            if not params:
                continue
            torch._foreach_add_(steps, 1.0)
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            torch._foreach_lerp_(m, grads, 1 - b1)  # m = b1 m + (1 - b1) g
            torch._foreach_mul_(v, b2)
            torch._foreach_addcmul_(v, grads, grads, value=1 - b2)  # v = b2 v + (1 - b2) g^2
            if wd:
                torch._foreach_mul_(params, 1 - lr * wd)  # decoupled weight decay
            # parameters can have different step counts t (a head whose task skipped a step):
            # the bias correction is applied per distinct t (CPU tensors: reading them is cheap)
            by_t: dict[int, list[int]] = {}
            for i, t in enumerate(steps):
                by_t.setdefault(int(t), []).append(i)
            for t, idx in by_t.items():
                bc1, bc2 = 1 - b1**t, 1 - b2**t
                # theta -= lr * m^ / (sqrt(v^) + eps), with m^ = m / bc1 and v^ = v / bc2
                denom = torch._foreach_div([v[i] for i in idx], bc2)
                torch._foreach_sqrt_(denom)
                torch._foreach_add_(denom, eps)
                torch._foreach_addcdiv_([params[i] for i in idx], [m[i] for i in idx], denom, value=-lr / bc1)
        if self.rows is not None:
            self.rows.update(self.param_groups[self.rows_group]["lr"])
            self.rows.tick()
        return loss

    def replayed(self) -> None:
        """Count an update that a replayed CUDA graph made (:meth:`graph_update`): with ``rows``,
        its flush every so many updates (:meth:`minbert.training.lazy_rows.LazyRows.tick`)."""
        if self.rows is not None:
            self.rows.tick()

    def state_dict(self) -> dict:
        """``torch.optim.Optimizer.state_dict``; with ``rows``, every row brought up first."""
        if self.rows is not None:
            self.rows.flush()
        return super().state_dict()

    @torch.no_grad()
    def prepare_graph_update(self) -> None:
        """Create the state of every parameter that has a gradient now, outside any capture (a
        graph must not allocate or zero it at each replay). Call before capturing
        :meth:`graph_update`, with the gradients the graph will write already attached. With
        master weights (fused), also compile the update for those parameters, on zero gradients,
        and put their state and working weights back as they were."""
        for i, group in enumerate(self.param_groups):
            params, *_ = self._with_grads(group)
            if self.master_weights and self.fused and params:  # compile the update for these parameters now
                held = [(t, t.clone()) for p in params for t in self.state[p].values()]
                saved = [(p, p.grad) for p in params]
                for p in params:
                    p.grad = torch.zeros_like(p)  # fresh tensors, as the graph's own gradients
                self._master_group_update(i, self._lr_bufs[i])
                for t, copy in held:
                    t.copy_(copy)
                for p, grad in saved:
                    p.copy_(self.state[p]["master"])
                    p.grad = grad
        if self.rows is not None:
            self.rows.prepare_graph_update()

    @torch.no_grad()
    def graph_update(self, lrs: torch.Tensor) -> None:
        """The fused update of :meth:`step`, for capture in a CUDA graph: every device-side
        operation, no host sync and no host value that changes between steps. ``lrs``:
        (n_groups,) float32 on the parameters' device, group i's lr for this step (the host
        writes it before each replay). Which parameters are updated is fixed at capture: those
        whose ``p.grad`` is set then. Their state must exist (:meth:`prepare_graph_update`).

        Raises:
            RuntimeError: not ``fused``, or a parameter's state not created beforehand.
            ValueError: ``lrs`` does not hold one lr per group.
        """
        if not self.fused:
            raise RuntimeError("AdamW.graph_update needs the fused update (optim.fused)")
        if lrs.shape != (len(self.param_groups),):
            raise ValueError(f"AdamW.graph_update: lrs of shape {tuple(lrs.shape)}, not ({len(self.param_groups)},)")
        if any(p.grad is not None and not self.state[p] for g in self.param_groups for p in g["params"]):
            raise RuntimeError("AdamW.graph_update: call prepare_graph_update before the capture")
        for i, (group, lr) in enumerate(zip(self.param_groups, lrs, strict=True)):
            if self.master_weights:
                self._master_group_update(i, lr)
            else:
                self._fused_group_update(group, lr)
        if self.rows is not None:
            self.rows.update(lrs[self.rows_group])

    def _master_group_update(self, i: int, lr: float | torch.Tensor) -> None:
        """One AdamW update of the masters of group ``i``'s parameters that have a gradient, then
        the parameters (working weights) = the masters rounded (:func:`master_update`). Fused,
        the update is compiled and reads the lr from the group's own 0-d tensor, which ``lr`` (a
        float, or a 0-d tensor on the device) is written into: the compiled function sees the same
        tensor at its warm-up (:meth:`prepare_graph_update`), in a capture and in eager steps, so
        a new lr compiles nothing."""
        group = self.param_groups[i]
        params, grads, m, v, steps = self._with_grads(group)
        if not params:
            return
        update = master_update
        if self.fused:
            update = functools.partial(_compiled_master_update, self.compile_options)
            buf = self._lr_bufs[i]
            lr = buf.copy_(lr) if isinstance(lr, torch.Tensor) else buf.fill_(lr)
        b1, b2 = group["betas"]
        masters = [self.state[p]["master"] for p in params]
        update(masters, grads, m, v, params, steps, lr, b1, b2, group["eps"], group["weight_decay"])

    def _fused_group_update(self, group: dict, lr: float | torch.Tensor) -> None:
        """One AdamW update of the group's parameters that have a gradient: their step counts
        advanced, then torch's fused kernel in one call, which reads each t where it lives and
        applies decoupled weight decay, as our equations do. ``lr``: a float, or a 0-d float32
        tensor on the device (read by the kernel; what a CUDA graph needs)."""
        params, grads, m, v, steps = self._with_grads(group)
        if not params:
            return
        torch._foreach_add_(steps, 1.0)
        b1, b2 = group["betas"]
        torch._fused_adamw_(
            params, grads, m, v, [], steps, lr=lr, beta1=b1, beta2=b2, weight_decay=group["weight_decay"],
            eps=group["eps"], amsgrad=False, maximize=False,
        )


def master_update(
    masters: list[torch.Tensor], grads: list[torch.Tensor], m: list[torch.Tensor], v: list[torch.Tensor],
    params: list[torch.Tensor], steps: list[torch.Tensor], lr: float | torch.Tensor, b1: float, b2: float,
    eps: float, wd: float,
) -> None:
    """:class:`AdamW`'s equations on fp32 ``masters`` with their fp32 moments ``m`` and ``v``,
    from ``grads`` of any float dtype (upcast), each with its own step count in ``steps`` (0-d
    float32, advanced here), then ``params`` (the working weights, e.g. bf16) = the masters
    rounded. All lists align; ``lr``: a float or a 0-d float32 tensor. Written with
    ``torch._foreach_*`` ops, which inductor compiles into a few kernels for all tensors."""
    torch._foreach_add_(steps, 1.0)
    bc1 = torch._foreach_pow(b1, steps)  # b1^t, then -lr / (1 - b1^t)
    torch._foreach_mul_(bc1, -1.0)
    torch._foreach_add_(bc1, 1.0)
    step_size = torch._foreach_reciprocal(bc1)
    torch._foreach_mul_(step_size, -lr)
    bc2 = torch._foreach_pow(b2, steps)  # sqrt(1 - b2^t)
    torch._foreach_mul_(bc2, -1.0)
    torch._foreach_add_(bc2, 1.0)
    torch._foreach_sqrt_(bc2)
    g = [x.float() for x in grads]
    if wd:
        torch._foreach_mul_(masters, 1.0 - lr * wd)  # decoupled weight decay
    torch._foreach_lerp_(m, g, 1.0 - b1)
    torch._foreach_mul_(v, b2)
    torch._foreach_addcmul_(v, g, g, value=1.0 - b2)
    denom = torch._foreach_sqrt(v)
    torch._foreach_div_(denom, bc2)
    torch._foreach_add_(denom, eps)
    update = torch._foreach_div(m, denom)
    torch._foreach_mul_(update, step_size)
    torch._foreach_add_(masters, update)
    torch._foreach_copy_(params, masters)


MASTER_RECOMPILES = 256  # compiles of the master update allowed in a process (torch's default: 8)


@functools.cache
def _compiled(options: tuple[tuple[str, object], ...]) -> Callable[..., None]:
    """:func:`master_update` under ``torch.compile`` with inductor's settings ``options`` ((name,
    value) pairs), made at first use (torch.compile imports dynamo, about 2 s, which a run without
    master weights does not need)."""
    return torch.compile(master_update, fullgraph=True, dynamic=False, options=dict(options) or None)


def _compiled_master_update(options: tuple[tuple[str, object], ...], *args: object) -> None:
    """:func:`master_update` compiled by inductor with the settings ``options``. It compiles
    again for each parameter set (a group, the parameters a step reaches) and each set of
    hyperparameters (a tuning study's trials), more often than torch's default limit of 8 allows a
    function."""
    limits = {"recompile_limit": MASTER_RECOMPILES, "accumulated_recompile_limit": 4 * MASTER_RECOMPILES}
    with torch._dynamo.config.patch(**limits):
        _compiled(options)(*args)


def attach_master_weights(model: nn.Module, optimizer: AdamW, dtype: torch.dtype = torch.bfloat16) -> None:
    """Train ``model``'s optimized parameters as ``dtype`` working weights over ``optimizer``'s
    fp32 masters: the parameters are cast in place (the same ``nn.Parameter`` objects), and
    ``model.state_dict()`` holds the masters in their place (fp32), so that checkpoints, the best
    and averaged weights and exports keep full precision. Loading a state dict into ``model``
    (a resume, the best or averaged weights) sets the masters to its values and the parameters
    to those rounded to ``dtype``.

    Raises:
        ValueError: ``optimizer`` keeps no master weights.
    """
    if not getattr(optimizer, "master_weights", False):
        raise ValueError("attach_master_weights needs AdamW(master_weights=True)")
    trained = {p: optimizer.state[p]["master"] for g in optimizer.param_groups for p in g["params"]}
    masters = {n: trained[p] for n, p in model.named_parameters(remove_duplicate=False) if p in trained}
    for g in optimizer.param_groups:
        for p in g["params"]:
            p.data = p.data.to(dtype)

    def masters_in_place(module: nn.Module, state: dict, prefix: str, local_metadata: dict) -> None:  # noqa: ARG001
        for name, master in masters.items():
            if prefix + name in state:
                state[prefix + name] = master.detach()

    @torch.no_grad()
    def masters_from_loaded(module: nn.Module, state: dict, prefix: str, *args: object) -> None:  # noqa: ARG001
        for name, master in masters.items():
            value = state.get(prefix + name)
            if isinstance(value, torch.Tensor) and value.shape == master.shape:
                master.copy_(value)

    model.register_state_dict_post_hook(masters_in_place)
    model.register_load_state_dict_pre_hook(masters_from_loaded)


def build_optimizer(
    cfg: OptimConfig, params: Iterable, device: torch.device, model: nn.Module | None = None,
    compile_options: dict[str, object] | None = None,
) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.name`` (a :class:`minbert.config.OptimConfig`) for parameters
    on ``device`` (of ``model``, needed for the two options below); the AdamWs fused as
    :func:`minbert.config.use_fused_optimizer` says. With ``cfg.master_weights``, our AdamW keeps
    fp32 master weights and the model trains bf16 working weights (:func:`attach_master_weights`).
    With ``cfg.embedding_rows``, our AdamW updates the model's word embedding on the rows each step
    reads (:func:`minbert.training.lazy_rows.attach_lazy_rows`). ``compile_options``: inductor's
    settings for our AdamW's compiled update and the word-embedding rows' compiled step values
    (:func:`minbert.config_compile.compile_options`).

    Raises:
        ConfigError: an unknown name or invalid hyperparameters.
        ValueError: either option without ``model``.
    """
    if (cfg.master_weights or cfg.embedding_rows) and model is None:
        raise ValueError("build_optimizer: optim.master_weights and optim.embedding_rows need the model")
    fused = use_fused_optimizer(cfg, device.type)
    if cfg.name == "adamw":
        opt = AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, fused=fused,
                    master_weights=cfg.master_weights, compile_options=compile_options)
        if cfg.embedding_rows:  # before the master weights' hooks: a load brings the rows up first
            from .lazy_rows import attach_lazy_rows  # (imports dynamo: torch.compiler.disable)

            attach_lazy_rows(model, opt)
        if cfg.master_weights:
            attach_master_weights(model, opt)
        return opt
    if cfg.name == "torch_adamw":
        return torch.optim.AdamW(
            params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, fused=fused
        )
    if cfg.name == "lion":
        from lion_pytorch import Lion

        return Lion(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    raise ConfigError(f"optim.name {cfg.name!r} is not one of ['adamw', 'torch_adamw', 'lion']")
