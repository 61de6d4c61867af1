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

* ``torch.optim.AdamW`` (fused per ``optim.fused``), name ``torch_adamw``.
* Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms") from the
  ``lion-pytorch`` package. Lion's update has unit size per coordinate, so the paper advises an
  lr 3-10x smaller than AdamW's and a weight decay 3-10x larger (same lr * wd product).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ..config import OptimConfig, use_fused_optimizer
from ..errors import ConfigError

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
    (integer step counts of older checkpoints included)."""

    def __init__(
        self,
        params: Iterable,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        fused: bool = False,
    ):
        if lr < 0 or eps < 0 or not (0 <= betas[0] < 1 and 0 <= betas[1] < 1) or weight_decay < 0:
            raise ConfigError(f"invalid AdamW hyperparameters lr={lr} betas={betas} eps={eps} wd={weight_decay}")
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))
        self.fused = fused

    def _state(self, p: torch.Tensor) -> dict:
        """``p``'s state, created (step 0, zero moments) on first use."""
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device if self.fused else "cpu")
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    def _with_grads(self, group: dict) -> tuple[list, list, list, list, list]:
        """(params, grads, exp_avgs, exp_avg_sqs, steps) of the group's parameters that have a
        gradient, their state created (one pass: this loop runs on the host at every step)."""
        params, grads, m, v, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self._state(p)
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

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One update of every parameter with a gradient. The equations are applied to all
        parameters of a group at once with ``torch._foreach_*`` (multi-tensor) ops: the same
        arithmetic as a per-parameter loop, with far fewer kernel launches on a GPU."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
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
        return loss

    def prepare_graph_update(self) -> None:
        """Create the state of every parameter that has a gradient now, outside any capture (a
        graph must not allocate or zero it at each replay). Call before capturing
        :meth:`graph_update`, with the gradients the graph will write already attached."""
        for group in self.param_groups:
            self._with_grads(group)

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
        for group, lr in zip(self.param_groups, lrs, strict=True):
            self._fused_group_update(group, lr)

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


def build_optimizer(cfg: OptimConfig, params: Iterable, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer named by ``cfg.name`` (a :class:`minbert.config.OptimConfig`) for parameters
    on ``device``; the AdamWs fused as :func:`minbert.config.use_fused_optimizer` says.

    Raises:
        ConfigError: an unknown name or invalid hyperparameters.
    """
    fused = use_fused_optimizer(cfg, device.type)
    if cfg.name == "adamw":
        return AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, fused=fused)
    if cfg.name == "torch_adamw":
        return torch.optim.AdamW(
            params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay, fused=fused
        )
    if cfg.name == "lion":
        from lion_pytorch import Lion

        return Lion(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    raise ConfigError(f"optim.name {cfg.name!r} is not one of ['adamw', 'torch_adamw', 'lion']")


def warmup_steps(warmup_ratio: float, total_steps: int) -> int:
    """Optimizer steps of warmup: ``ceil(total_steps * warmup_ratio)``, as the Hugging Face
    Trainer counts them (``TrainingArguments.get_warmup_steps``).

    Raises:
        ConfigError: ``warmup_ratio`` outside [0, 1].
    """
    if not 0.0 <= warmup_ratio <= 1.0:
        raise ConfigError(f"optim.warmup_ratio must be in [0, 1] (a fraction of all steps), got {warmup_ratio}")
    return math.ceil(total_steps * warmup_ratio)


def lr_factor(schedule: str, step: int, warmup: int, total_steps: int) -> float:
    """The lr multiplier after ``step`` optimizer steps (the one step ``step + 1`` uses), equal to
    ``transformers``' ``get_{constant,linear,cosine}_schedule_with_warmup``: ``step / warmup``
    during the warmup (0 at the first step), then 1 (constant), ``(total - step) / (total - warmup)``
    floored at 0 (linear), or ``(1 + cos(pi * progress)) / 2`` over ``progress = (step - warmup) /
    (total - warmup)`` (cosine, half a period, 0 at ``total_steps``)."""
    if step < warmup:
        return float(step) / float(max(1, warmup))
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return max(0.0, float(total_steps - step) / float(max(1, total_steps - warmup)))
    if schedule == "cosine":
        progress = float(step - warmup) / float(max(1, total_steps - warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))
    raise ConfigError(f"optim.schedule {schedule!r} is not one of ['constant', 'linear', 'cosine']")


def build_scheduler(
    cfg: OptimConfig, optimizer: torch.optim.Optimizer, total_steps: int, last_step: int = 0
) -> torch.optim.lr_scheduler.LambdaLR:
    """The lr schedule of ``cfg`` (a :class:`minbert.config.OptimConfig`) over ``total_steps``
    optimizer steps: :func:`lr_factor` with :func:`warmup_steps` of warmup, step for step equal to
    ``transformers.get_{constant,linear,cosine}_schedule_with_warmup``. ``last_step`` > 0 starts
    the schedule after that many steps (the optimizer's groups must hold ``initial_lr``, as after
    loading a checkpoint's optimizer state): the next step's lr is ``initial_lr * lr_factor(last_step)``.

    Raises:
        ConfigError: an unknown schedule or a warmup ratio outside [0, 1].
    """
    warmup = warmup_steps(cfg.warmup_ratio, total_steps)
    lr_factor(cfg.schedule, total_steps, warmup, total_steps)  # an unknown name fails here, not at a step

    def factor(step: int) -> float:
        return lr_factor(cfg.schedule, step, warmup, total_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor, last_epoch=last_step - 1 if last_step > 0 else -1)
