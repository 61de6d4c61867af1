"""One optimizer step (minbert.training.step): PCGrad, and OptimizerStep's gradient accumulation,
clipping, update and discard, checked by hand on a two-parameter model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from minbert.training.step import OptimizerStep, StepLosses, find_nonfinite, pcgrad_


def test_pcgrad_projects_conflicting_gradients():
    # two tasks, one shared 2-d parameter: g1 = (1, 0), g2 = (-1, 1) conflict (dot = -1)
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])
    (total,) = pcgrad_([[g1], [g2]], seed=0)
    # g1' = g1 - (g1.g2)/|g2|^2 g2 = (1,0) + 0.5(-1,1) = (0.5, 0.5)
    # g2' = g2 - (g2.g1)/|g1|^2 g1 = (-1,1) + (1,0) = (0, 1)
    torch.testing.assert_close(total, torch.tensor([0.5, 1.5]))
    # each projected gradient no longer conflicts with the other task's original gradient
    assert torch.dot(torch.tensor([0.5, 0.5]), g2) >= 0 and torch.dot(torch.tensor([0.0, 1.0]), g1) >= 0


def test_pcgrad_leaves_agreeing_gradients_and_task_specific_parameters_alone():
    shared1, shared2 = torch.tensor([1.0, 2.0]), torch.tensor([0.5, 0.1])  # dot > 0
    head1 = torch.tensor([3.0])
    out = pcgrad_([[shared1, head1, None], [shared2, None, None]], seed=0)
    torch.testing.assert_close(out[0], shared1 + shared2)
    torch.testing.assert_close(out[1], head1)
    assert out[2] is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pcgrad_on_cuda_with_a_parameter_no_task_reaches():
    # (a parameter without any gradient used to become a CPU tensor in the concatenation)
    dev = torch.device("cuda")
    g1, g2 = torch.tensor([1.0, 0.0], device=dev), torch.tensor([-1.0, 1.0], device=dev)
    out = pcgrad_([[g1, None], [g2, None]], seed=0)
    torch.testing.assert_close(out[0], torch.tensor([0.5, 1.5], device=dev))
    assert out[1] is None


class Quadratic(nn.Module):
    """Per task t: L_t = mean((x . w - y)^2) over the batch's rows; total = sum_t L_t."""

    def __init__(self, w: list[float]):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, batches: dict[str, dict]) -> StepLosses:
        per_task = torch.stack([((b["x"] @ self.w - b["y"]) ** 2).mean() for b in batches.values()])
        return StepLosses(per_task.sum(), per_task)


class Linear(nn.Module):
    """Per task t: L_t = w . g_t, so the task's gradient is g_t."""

    def __init__(self, w: list[float]):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w))

    def forward(self, batches: dict[str, dict]) -> StepLosses:
        per_task = torch.stack([(self.w * b["g"]).sum() for b in batches.values()])
        return StepLosses(per_task.sum(), per_task)


def stepper(model: nn.Module, lr: float = 0.1, **kw) -> OptimizerStep:
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))  # lr, lr/2, lr/3, ...
    return OptimizerStep(model, list(model.parameters()), opt, sched, torch.device("cpu"), **kw)


# w = (1, -2); batch 1: x = (1, 0), y = 0 -> L = w0^2 = 1, grad (2 w0, 0) = (2, 0);
# batch 2: x = (0, 1), y = 0 -> L = w1^2 = 4, grad (0, 2 w1) = (0, -4).
# Accumulated over a group of 2 (each scaled by 1/2): g = (1, -2), |g| = sqrt(5).
B1 = {"sst": {"x": torch.tensor([[1.0, 0.0]]), "y": torch.tensor([0.0])}}
B2 = {"sst": {"x": torch.tensor([[0.0, 1.0]]), "y": torch.tensor([0.0])}}


def test_two_accumulated_micro_steps_then_an_sgd_update():
    model = Quadratic([1.0, -2.0])
    s = stepper(model)
    s.backward(B1, first=True, last=False, group_size=2, step=0)
    torch.testing.assert_close(model.w.grad, torch.tensor([1.0, 0.0]))  # half of (2, 0)
    per_task = s.backward(B2, first=False, last=True, group_size=2, step=0)
    torch.testing.assert_close(model.w.grad, torch.tensor([1.0, -2.0]))
    values = s.gradients(per_task)
    # the last micro-step's loss (4) and the norm of the accumulated gradient, before clipping
    torch.testing.assert_close(values, torch.tensor([4.0, math.sqrt(5.0)]))
    s.update()
    torch.testing.assert_close(model.w.detach(), torch.tensor([1.0 - 0.1 * 1.0, -2.0 - 0.1 * -2.0]))  # (0.9, -1.8)
    assert model.w.grad is None  # cleared for the next group
    assert s.scheduler.get_last_lr() == [pytest.approx(0.05)]  # the schedule moved one step: lr / 2


def test_clipping_scales_the_gradient_to_max_norm_and_reports_the_norm_before():
    model = Quadratic([1.0, -2.0])
    s = stepper(model, max_grad_norm=1.0)
    s.backward(B1, first=True, last=False, group_size=2, step=0)
    values = s.gradients(s.backward(B2, first=False, last=True, group_size=2, step=0))
    assert values[-1].item() == pytest.approx(math.sqrt(5.0))
    s.update()
    r5 = math.sqrt(5.0)
    torch.testing.assert_close(model.w.detach(), torch.tensor([1.0 - 0.1 / r5, -2.0 + 0.2 / r5]))


def test_pcgrad_step_applies_the_projected_sum():
    # g_a = (1, 0) and g_b = (-1, 1) conflict: PCGrad's sum is (0.5, 1.5) (see the pcgrad_ tests)
    model = Linear([0.0, 0.0])
    s = stepper(model, lr=1.0, pcgrad=True)
    batches = {"a": {"g": torch.tensor([1.0, 0.0])}, "b": {"g": torch.tensor([-1.0, 1.0])}}
    per_task = s.backward(batches, first=True, last=True, group_size=1, step=0)
    torch.testing.assert_close(model.w.grad, torch.tensor([0.5, 1.5]))
    torch.testing.assert_close(s.gradients(per_task), torch.tensor([0.0, 0.0, math.sqrt(0.25 + 2.25)]))
    s.update()
    torch.testing.assert_close(model.w.detach(), torch.tensor([-0.5, -1.5]))
    # without PCGrad the plain sum (0, 1) is applied
    plain = Linear([0.0, 0.0])
    p = stepper(plain, lr=1.0)
    p.backward(batches, first=True, last=True, group_size=1, step=0)
    torch.testing.assert_close(plain.w.grad, torch.tensor([0.0, 1.0]))


def test_discard_drops_the_gradients_and_leaves_weights_and_schedule():
    model = Quadratic([1.0, -2.0])
    s = stepper(model)
    s.gradients(s.backward(B1, first=True, last=True, group_size=1, step=0))
    s.discard()
    assert model.w.grad is None
    torch.testing.assert_close(model.w.detach(), torch.tensor([1.0, -2.0]))
    assert s.scheduler.get_last_lr() == [pytest.approx(0.1)]


def test_find_nonfinite_names_the_task_or_the_gradient():
    assert find_nonfinite(["sst", "qqp"], [1.0, float("nan"), 2.0]) == ("task qqp", 1)
    assert find_nonfinite(["sst", "qqp"], [float("inf"), float("nan"), 2.0]) == ("task sst", 0)
    assert find_nonfinite(["sst", "qqp"], [1.0, 2.0, float("inf")]) == ("gradient (all tasks' sum)", 0)
    assert find_nonfinite(["sst", "qqp"], [1.0, 2.0, 3.0]) is None


def test_graph_updater_only_for_our_fused_adamw_under_nonfinite_stop(caplog):
    """Which optimizer a one-graph step may capture: our fused AdamW with train.nonfinite=stop;
    otherwise None and one log line naming the reason."""
    import logging

    from minbert.config import load_config
    from minbert.training.optim import AdamW
    from minbert.training.step import graph_updater

    params = [nn.Parameter(torch.zeros(3))]
    stop, skip = (load_config(None, [f"train.nonfinite={v}"]).train for v in ("stop", "skip"))
    ours = AdamW(params, fused=True)
    with caplog.at_level(logging.INFO, logger="minbert.training.step"):
        assert graph_updater(ours, stop) is ours
        assert not caplog.records
        assert graph_updater(AdamW(params, fused=False), stop) is None
        assert graph_updater(torch.optim.AdamW(params, fused=True), stop) is None
        assert graph_updater(ours, skip) is None
    reasons = [r.getMessage() for r in caplog.records]
    assert len(reasons) == 3 and all("outside the step's graph" in m for m in reasons)
    assert "optim.fused" in reasons[0] and "optim.fused" in reasons[1] and "nonfinite=skip" in reasons[2]
