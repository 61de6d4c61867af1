"""minbert.training.optim: AdamW vs torch.optim.AdamW, Lion's update rule, state_dict round-trips,
weight-decay parameter groups and the learning-rate schedules."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from minbert.config import OptimConfig
from minbert.model.bert import BertConfig, BertModel
from minbert.training.lr_schedule import build_scheduler
from minbert.training.optim import AdamW, build_optimizer, param_groups

CPU = torch.device("cpu")


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(8, 16)
        self.LayerNorm = nn.LayerNorm(16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.tanh(self.LayerNorm(self.fc1(x))))


def make_small(seed: int = 0) -> Small:
    torch.manual_seed(seed)
    m = Small()
    with torch.no_grad():  # non-trivial LayerNorm parameters
        m.LayerNorm.weight.add_(0.1 * torch.randn(16))
        m.LayerNorm.bias.add_(0.1 * torch.randn(16))
    return m


def max_param_diff(a: nn.Module, b: nn.Module) -> float:
    return max((p - q).abs().max().item() for p, q in zip(a.parameters(), b.parameters(), strict=True))


# ----------------------------------------------------------------------------------------------
# AdamW vs torch.optim.AdamW


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize(
    "lr,betas,eps,wd",
    [(1e-2, (0.9, 0.999), 1e-6, 0.1), (3e-3, (0.8, 0.95), 1e-8, 0.01)],
)
def test_adamw_matches_torch(lr, betas, eps, wd, fused):
    """Ours, from its equations or through the fused kernel, against torch's per-parameter loop."""
    ours_m = make_small()
    ref_m = copy.deepcopy(ours_m)
    start = copy.deepcopy(ours_m)
    ours = AdamW(param_groups(ours_m, wd), lr=lr, betas=betas, eps=eps, weight_decay=wd, fused=fused)
    ref = torch.optim.AdamW(param_groups(ref_m, wd), lr=lr, betas=betas, eps=eps, weight_decay=wd, foreach=False)
    gen = torch.Generator().manual_seed(1)
    skipped = ours_m.fc2.bias  # gets no gradient on two steps: its step count t lags behind
    for step in range(20):
        if step % 2 == 0:  # identical random gradients (scale varies per step)
            for p, q in zip(ours_m.parameters(), ref_m.parameters(), strict=True):
                g = torch.randn(p.shape, generator=gen) * (0.1 + step)
                p.grad, q.grad = g.clone(), g.clone()
                if p is skipped and step in (2, 6):
                    p.grad = q.grad = None
        else:  # identical losses on identical inputs
            x = torch.randn(5, 8, generator=gen)
            y = torch.randn(5, 4, generator=gen)
            for m in (ours_m, ref_m):
                m.zero_grad(set_to_none=True)
                nn.functional.mse_loss(m(x), y).backward()
        ours.step()
        ref.step()
    assert max_param_diff(ours_m, ref_m) <= 1e-6
    assert max_param_diff(ours_m, start) > 10 * lr  # the parameters really moved
    for p, q in zip(ours_m.parameters(), ref_m.parameters(), strict=True):
        so, sr = ours.state[p], ref.state[q]
        assert int(so["step"]) == int(sr["step"]) == (18 if p is skipped else 20)
        assert (so["exp_avg"] - sr["exp_avg"]).abs().max().item() <= 1e-6
        torch.testing.assert_close(so["exp_avg_sq"], sr["exp_avg_sq"], atol=1e-6, rtol=1e-6)  # v reaches ~1e2


def test_fused_and_written_out_adamw_agree_and_share_their_state():
    """The fused update equals the written-out one step for step, with step counts that differ
    between parameters, and a state saved by one resumes in the other."""
    a_m, b_m = make_small(), make_small()
    a = AdamW(param_groups(a_m, 0.1), lr=1e-2, weight_decay=0.1, fused=False)
    b = AdamW(param_groups(b_m, 0.1), lr=1e-2, weight_decay=0.1, fused=True)
    gen = torch.Generator().manual_seed(3)
    for step in range(12):
        if step == 6:  # swap: each optimizer continues from the other's state
            a_state, b_state = copy.deepcopy(a.state_dict()), copy.deepcopy(b.state_dict())
            a.load_state_dict(b_state)
            b.load_state_dict(a_state)
            a_m.load_state_dict(copy.deepcopy(b_m.state_dict()))
        for p, q in zip(a_m.parameters(), b_m.parameters(), strict=True):
            g = torch.randn(p.shape, generator=gen)
            p.grad, q.grad = g.clone(), g.clone()
            if p is a_m.fc1.bias and step % 3 == 0:
                p.grad = q.grad = None
        a.step()
        b.step()
        assert max_param_diff(a_m, b_m) <= 1e-6
    assert {int(s["step"]) for s in b.state.values()} == {12, 8}


def test_graph_update_equals_step_with_lrs_read_from_a_tensor():
    """AdamW.graph_update (the update a one-graph training step captures) is step() with group
    i's lr read from lrs[i]: two groups with their own lrs (changed every step, as a schedule
    does), a parameter without a gradient on some steps (its step count lags and its state is
    not created before its first gradient)."""
    a_m, b_m = make_small(), make_small()
    groups = lambda m: param_groups(m, 0.1, lr=1e-2, head_lr=3e-2)  # noqa: E731
    a = AdamW(groups(a_m), lr=1e-2, weight_decay=0.1, fused=True)
    b = AdamW(groups(b_m), lr=1e-2, weight_decay=0.1, fused=True)
    assert len(a.param_groups) == 2
    gen = torch.Generator().manual_seed(5)
    for step in range(8):
        for g_a, g_b in zip(a.param_groups, b.param_groups, strict=True):
            lr = g_a["lr"] * 0.9 if step else g_a["lr"]
            g_a["lr"] = g_b["lr"] = float(torch.tensor(lr, dtype=torch.float32))  # the same value as the tensor's
        for p, q in zip(a_m.parameters(), b_m.parameters(), strict=True):
            g = torch.randn(p.shape, generator=gen)
            p.grad, q.grad = g.clone(), g.clone()
            if p is a_m.fc2.bias and step in (0, 1, 5):
                p.grad = q.grad = None
        a.step()
        b.prepare_graph_update()
        b.graph_update(torch.tensor([g["lr"] for g in b.param_groups]))
        assert max_param_diff(a_m, b_m) == 0.0
    for p, q in zip(a_m.parameters(), b_m.parameters(), strict=True):
        assert torch.equal(a.state[p]["step"], b.state[q]["step"])
        assert torch.equal(a.state[p]["exp_avg_sq"], b.state[q]["exp_avg_sq"])
    assert int(b.state[b_m.fc2.bias]["step"]) == 5 and int(b.state[b_m.fc1.weight]["step"]) == 8


def test_graph_update_refuses_state_not_prepared_and_the_written_out_update():
    m = make_small()
    for p in m.parameters():
        p.grad = torch.ones_like(p)
    with pytest.raises(RuntimeError, match="prepare_graph_update"):
        AdamW(m.parameters(), fused=True).graph_update(torch.tensor([1e-3]))
    with pytest.raises(RuntimeError, match="fused"):
        AdamW(m.parameters(), fused=False).graph_update(torch.tensor([1e-3]))
    two = AdamW(param_groups(m, 0.1), fused=True)
    two.prepare_graph_update()
    before = [p.detach().clone() for p in m.parameters()]
    with pytest.raises(ValueError, match=r"lrs of shape \(1,\), not \(2,\)"):
        two.graph_update(torch.tensor([1e-3]))
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), before, strict=True))  # nothing applied


def test_load_state_dict_copies_into_the_state_a_graph_holds():
    """Loading into an optimizer whose parameters have state copies the values into the tensors
    it holds (a captured graph_update keeps updating them), and the step counts loaded into a
    fresh optimizer are its own: stepping it leaves the source's alone."""
    a_m = make_small()
    a = AdamW(param_groups(a_m, 0.1), lr=1e-2, weight_decay=0.1, fused=True)
    _train(a_m, a, torch.Generator().manual_seed(0), 4)
    saved = copy.deepcopy(a.state_dict())
    _train(a_m, a, torch.Generator().manual_seed(1), 2)
    held = {p: dict(s) for p, s in a.state.items()}
    a.load_state_dict(saved)
    for p, s in a.state.items():
        for k in ("step", "exp_avg", "exp_avg_sq"):
            assert s[k] is held[p][k], k
        assert int(s["step"]) == 4
    b_m = make_small()
    b = AdamW(param_groups(b_m, 0.1), lr=1e-2, weight_decay=0.1, fused=True)
    b.load_state_dict(a.state_dict())
    _train(b_m, b, torch.Generator().manual_seed(2), 1)
    assert {int(s["step"]) for s in a.state.values()} == {4}
    assert {int(s["step"]) for s in b.state.values()} == {5}


@pytest.mark.parametrize("fused", [False, True])
def test_integer_step_counts_of_older_checkpoints_resume(fused):
    """A state whose step counts are ints (as checkpoints written before they became tensors
    hold) resumes to the same parameters as the state it was written from."""
    a_m = make_small()
    a = AdamW(param_groups(a_m, 0.1), lr=1e-2, weight_decay=0.1, fused=fused)
    _train(a_m, a, torch.Generator().manual_seed(0), 3)
    old = copy.deepcopy(a.state_dict())
    for st in old["state"].values():
        st["step"] = int(st["step"])
    b_m = make_small(9)
    b_m.load_state_dict(a_m.state_dict())
    b = AdamW(param_groups(b_m, 0.1), lr=1e-2, weight_decay=0.1, fused=fused)
    b.load_state_dict(old)
    for st in b.state.values():
        assert st["step"].dtype == torch.float32 and st["step"].shape == () and int(st["step"]) == 3
    _train(a_m, a, torch.Generator().manual_seed(1), 3)
    _train(b_m, b, torch.Generator().manual_seed(1), 3)
    assert max_param_diff(a_m, b_m) == 0.0


def test_optim_fused_setting():
    def build(**kw):
        return build_optimizer(OptimConfig(lr=1e-3, **kw), [nn.Parameter(torch.zeros(2))], CPU)

    assert build(fused="on").fused and not build().fused  # auto: fused on CUDA only
    assert build(name="torch_adamw", fused="on").defaults["fused"]
    assert not build(name="torch_adamw").defaults["fused"]
    from minbert.config import load_config
    from minbert.errors import ConfigError

    with pytest.raises(ConfigError, match="optim.fused=on: lion has no fused kernel"):
        load_config(None, ["optim.name=lion", "optim.fused=on"])


def test_adamw_weight_decay_is_decoupled():
    """With a zero gradient the only change is p <- p * (1 - lr * wd)."""
    p = nn.Parameter(torch.randn(6))
    before = p.detach().clone()
    opt = AdamW([p], lr=0.1, weight_decay=0.5)
    p.grad = torch.zeros(6)
    opt.step()
    assert torch.allclose(p.detach(), before * (1 - 0.1 * 0.5), atol=1e-7, rtol=0)


# ----------------------------------------------------------------------------------------------
# Lion


def test_lion_two_steps_match_hand_computed():
    lr, b1, b2, wd = 1e-2, 0.9, 0.99, 0.1
    cfg = OptimConfig(name="lion", lr=lr, betas=(b1, b2), weight_decay=wd)
    gen = torch.Generator().manual_seed(0)
    p0 = torch.randn(64, generator=gen)
    g1 = torch.randn(64, generator=gen)
    # second gradient: small and opposite to g1 on half the coordinates, so that the momentum
    # decides the sign of the update there
    g2 = torch.randn(64, generator=gen)
    g2[:32] = -0.02 * g1[:32]
    p = nn.Parameter(p0.clone())
    opt = build_optimizer(cfg, [p], CPU)
    assert type(opt).__name__ == "Lion"

    exp_p, m = p0.clone(), torch.zeros(64)
    signs = []
    for g in (g1, g2):
        p.grad = g.clone()
        opt.step()
        c = b1 * m + (1 - b1) * g
        signs.append(torch.sign(c))
        exp_p = exp_p * (1 - lr * wd) - lr * torch.sign(c)
        m = b2 * m + (1 - b2) * g
        assert torch.allclose(p.detach(), exp_p, atol=1e-7, rtol=0)
        assert torch.allclose(opt.state[p]["exp_avg"], m, atol=1e-7, rtol=0)
    # the test really checks the momentum: on step 2 some update signs differ from sign(g2)
    assert (signs[1] != torch.sign(g2)).any()
    assert not torch.allclose(exp_p, p0 * (1 - lr * wd) ** 2 - lr * (torch.sign(g1) + torch.sign(g2)))


# ----------------------------------------------------------------------------------------------
# state_dict round-trip


def _train(model, opt, gen, steps):
    for _ in range(steps):
        x = torch.randn(7, 8, generator=gen)
        y = torch.randn(7, 4, generator=gen)
        opt.zero_grad(set_to_none=True)
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("name", ["adamw", "torch_adamw"])
def test_optimizer_state_dict_roundtrip(name, tmp_path):
    cfg = OptimConfig(name=name, lr=1e-2, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.05)
    model = make_small(0)
    opt = build_optimizer(cfg, param_groups(model, cfg.weight_decay), CPU)
    _train(model, opt, torch.Generator().manual_seed(0), 5)

    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "optim": opt.state_dict()}, path)
    saved = torch.load(path, weights_only=True)

    resumed = make_small(123)  # different init: everything must come from the checkpoint
    resumed.load_state_dict(saved["model"])
    opt2 = build_optimizer(cfg, param_groups(resumed, cfg.weight_decay), CPU)
    opt2.load_state_dict(saved["optim"])
    for p in resumed.parameters():
        assert int(opt2.state[p]["step"]) == 5

    # control: same weights, fresh optimizer state
    fresh = make_small(123)
    fresh.load_state_dict(saved["model"])
    opt3 = build_optimizer(cfg, param_groups(fresh, cfg.weight_decay), CPU)

    _train(model, opt, torch.Generator().manual_seed(1), 5)
    _train(resumed, opt2, torch.Generator().manual_seed(1), 5)
    _train(fresh, opt3, torch.Generator().manual_seed(1), 5)
    for p, q in zip(model.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    assert max_param_diff(model, fresh) > 1e-4  # the loaded state mattered


# ----------------------------------------------------------------------------------------------
# parameter groups


class WithFrozen(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = Small()
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)
        self.head = nn.Linear(4, 2, bias=False)


@pytest.mark.parametrize("wd", [0.01, 0.3])
def test_param_groups_small(wd):
    model = WithFrozen()
    groups = param_groups(model, wd)
    assert len(groups) == 2
    by_wd = {g["weight_decay"]: {id(p) for p in g["params"]} for g in groups}
    assert set(by_wd) == {wd, 0.0}
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[i] for i in by_wd[wd]} == {"body.fc1.weight", "body.fc2.weight", "head.weight"}
    assert {names[i] for i in by_wd[0.0]} == {
        "body.fc1.bias",
        "body.fc2.bias",
        "body.LayerNorm.weight",
        "body.LayerNorm.bias",
    }


def test_param_groups_bert():
    model = BertModel(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                 intermediate_size=32, max_position_embeddings=32))
    model.embeddings.word_embeddings.weight.requires_grad_(False)  # frozen: in no group
    wd = 0.02
    groups = param_groups(model, wd)
    all_ids = [id(p) for g in groups for p in g["params"]]
    assert len(all_ids) == len(set(all_ids))  # no parameter twice
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert set(all_ids) == trainable  # every trainable parameter, frozen ones excluded
    assert id(model.embeddings.word_embeddings.weight) not in set(all_ids)
    names = {id(p): n for n, p in model.named_parameters()}
    for g in groups:
        for p in g["params"]:
            n = names[id(p)]
            no_decay = n.endswith(".bias") or ".LayerNorm." in n
            assert g["weight_decay"] == (0.0 if no_decay else wd), n
    n_ln = sum(1 for n, _ in model.named_parameters() if "LayerNorm" in n)
    assert n_ln == 2 * (1 + 2 * 2)


def test_uncertainty_log_variances_use_the_head_lr_without_decay():
    from minbert.model.multitask import MultitaskModel

    enc = BertModel(BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=32))
    model = MultitaskModel(
        enc, {"a": nn.Linear(16, 2), "b": nn.Linear(16, 1)}, {"a": "single", "b": "single"}, uncertainty=True
    )
    groups = param_groups(model, 0.01, lr=1e-5, head_lr=1e-3)
    log_vars = {id(p) for p in model.loss_log_vars.values()}
    for g in groups:
        hit = log_vars & {id(p) for p in g["params"]}
        if hit:
            assert g["lr"] == 1e-3 and g["weight_decay"] == 0.0
            log_vars -= hit
    assert not log_vars  # both found


# ----------------------------------------------------------------------------------------------
# schedules


def _lrs(cfg, total_steps, n, base_lr=2.0):
    p = nn.Parameter(torch.zeros(1))
    opt = AdamW([p], lr=base_lr)
    sched = build_scheduler(cfg, opt, total_steps)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()  # no gradient: a no-op, keeps the scheduler's call order check quiet
        sched.step()
    return lrs


def _hf_lrs(schedule, warmup, total_steps, n, base_lr=2.0):
    """The lr before each of ``n`` optimizer steps under transformers' schedule of that name."""
    import transformers

    make = {
        "constant": lambda o: transformers.get_constant_schedule_with_warmup(o, warmup),
        "linear": lambda o: transformers.get_linear_schedule_with_warmup(o, warmup, total_steps),
        "cosine": lambda o: transformers.get_cosine_schedule_with_warmup(o, warmup, total_steps),
    }[schedule]
    p = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=base_lr)
    sched = make(opt)
    lrs = []
    for _ in range(n):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def _hf_trainer_warmup_steps(ratio, total_steps):
    """Warmup steps as the transformers Trainer computes them (TrainingArguments.get_warmup_steps,
    called on a stand-in for the arguments: building real ones needs `accelerate`)."""
    from types import SimpleNamespace

    import transformers
    from transformers import TrainingArguments

    if int(transformers.__version__.split(".")[0]) >= 5:  # a float warmup_steps < 1 is a ratio
        args = SimpleNamespace(warmup_steps=ratio, warmup_ratio=0.0)
    else:
        args = SimpleNamespace(warmup_steps=0, warmup_ratio=ratio)
    return TrainingArguments.get_warmup_steps(args, total_steps)


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
@pytest.mark.parametrize("ratio,warmup", [(0.0, 0), (0.1, 4), (0.5, 19)])  # ceil(3.7) = 4, ceil(18.5) = 19
def test_schedules_equal_transformers_step_for_step(schedule, ratio, warmup):
    total = 37
    assert _hf_trainer_warmup_steps(ratio, total) == warmup
    ours = _lrs(OptimConfig(schedule=schedule, warmup_ratio=ratio), total_steps=total, n=total + 3, base_lr=2.0)
    ref = _hf_lrs(schedule, warmup, total, n=total + 3, base_lr=2.0)
    assert ours == ref  # the same arithmetic: equal to the last bit
    assert ours[0] == (0.0 if warmup else 2.0)  # the first step of a warmup trains at lr 0
    if schedule != "constant":
        assert ours[total] == 0.0 and max(ours) == 2.0


@pytest.mark.parametrize("schedule,last_step", [("linear", 40), ("cosine", 40), ("linear", 3), ("cosine", 10)])
def test_schedule_started_after_some_steps_equals_one_stepped_there(schedule, last_step):
    """What a resume with another world size does: the schedule rebuilt to start at ``last_step``
    (in the warmup, at its last step, or in the decay) continues the same lr sequence."""
    cfg = OptimConfig(schedule=schedule, warmup_ratio=0.1)
    ref = _lrs(cfg, total_steps=100, n=last_step + 20, base_lr=2.0)
    p = nn.Parameter(torch.zeros(1))
    opt = AdamW([p], lr=2.0)
    opt.param_groups[0]["initial_lr"] = 2.0  # what a loaded checkpoint's optimizer state holds
    opt.param_groups[0]["lr"] = 123.0  # replaced by the schedule's value at last_step
    sched = build_scheduler(cfg, opt, 100, last_step=last_step)
    got = []
    for _ in range(20):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert got == pytest.approx(ref[last_step:], abs=0, rel=1e-12)
    assert got == pytest.approx(_hf_lrs(schedule, 10, 100, n=last_step + 20)[last_step:], abs=0, rel=1e-12)
    assert min(got) < max(got)  # the lr changes there (warmup or decay)


def test_linear_schedule_warmup_and_decay():
    cfg = OptimConfig(schedule="linear", warmup_ratio=0.1)
    lrs = _lrs(cfg, total_steps=100, n=103, base_lr=2.0)
    # warmup = ceil(0.1 * 100) = 10 steps: factor step / 10 (0 at the first step); then (100 - step) / 90
    expected = {
        0: 0.0,
        1: 2.0 * 1 / 10,
        4: 2.0 * 4 / 10,
        9: 2.0 * 9 / 10,
        10: 2.0 * 90 / 90,
        55: 2.0 * 45 / 90,
        99: 2.0 * 1 / 90,
        100: 0.0,
        102: 0.0,
    }
    for step, lr in expected.items():
        assert lrs[step] == pytest.approx(lr, abs=1e-12), step
    # monotone up during warmup, monotone down after
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:11], strict=True))
    assert all(a > b for a, b in zip(lrs[10:100], lrs[11:101], strict=True))


def test_linear_schedule_warmup_rounds_up():
    cfg = OptimConfig(schedule="linear", warmup_ratio=0.05)
    lrs = _lrs(cfg, total_steps=30, n=31, base_lr=1.0)
    # warmup = ceil(1.5) = 2
    assert lrs[0] == 0.0
    assert lrs[1] == pytest.approx(0.5)
    assert lrs[2] == pytest.approx(28 / 28)
    assert lrs[16] == pytest.approx(14 / 28)
    assert lrs[30] == pytest.approx(0.0)


def test_linear_schedule_without_warmup():
    cfg = OptimConfig(schedule="linear", warmup_ratio=0.0)
    lrs = _lrs(cfg, total_steps=40, n=41, base_lr=1.0)
    assert lrs[0] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(30 / 40)
    assert lrs[40] == pytest.approx(0.0)


def test_cosine_schedule_values():
    lrs = _lrs(OptimConfig(schedule="cosine", warmup_ratio=0.2), total_steps=50, n=51, base_lr=3.0)
    # warmup = 10 steps, then 3 * (1 + cos(pi * (step - 10) / 40)) / 2
    assert lrs[:10] == pytest.approx([3.0 * k / 10 for k in range(10)], abs=1e-12)
    assert lrs[10] == 3.0
    assert lrs[30] == pytest.approx(1.5, abs=1e-12)  # half way: cos(pi / 2) = 0
    assert lrs[20] == pytest.approx(3.0 * (1 + math.sqrt(0.5)) / 2, abs=1e-12)  # a quarter: cos(pi / 4)
    assert lrs[50] == pytest.approx(0.0, abs=1e-12)


def test_constant_schedule():
    lrs = _lrs(OptimConfig(schedule="constant", warmup_ratio=0.1), total_steps=50, n=50, base_lr=3.0)
    # warmup = 5 steps (step / 5, from 0), then the base lr
    assert lrs[:5] == pytest.approx([3.0 * k / 5 for k in range(5)])
    assert lrs[5:] == pytest.approx([3.0] * 45)
    assert _lrs(OptimConfig(schedule="constant"), total_steps=50, n=10, base_lr=3.0) == [3.0] * 10
    assert math.ceil(0.1 * 50) == 5


@pytest.mark.parametrize("ratio", [-0.1, 1.5, float("nan")])
def test_warmup_ratio_outside_0_1_is_a_config_error(ratio):
    from minbert.errors import ConfigError

    opt = AdamW([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ConfigError, match=r"optim\.warmup_ratio must be in \[0, 1\]"):
        build_scheduler(OptimConfig(schedule="linear", warmup_ratio=ratio), opt, 100)


def test_cosine_is_a_schedule_of_the_config():
    from minbert.config import load_config

    assert load_config(None, ["optim.schedule=cosine"]).optim.schedule == "cosine"


def test_layer_wise_lr_decay_and_head_lr(tiny_encoder):
    from minbert.config import load_config
    from minbert.model.multitask import build_model
    from minbert.training.optim import param_groups

    model = build_model(load_config(None, []), tiny_encoder)  # 2 encoder layers + 3 heads
    groups = param_groups(model, 0.01, lr=1e-4, layer_decay=0.5, head_lr=1e-3)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    # depth 0 embeddings, 1..L layers, L + 1 pooler; lr x 0.5^(L + 1 - depth) with L = 2
    assert lr_of[id(named["encoder.embeddings.word_embeddings.weight"])] == pytest.approx(1e-4 * 0.5**3)
    assert lr_of[id(named["encoder.encoder.layer.0.attention.self.query.weight"])] == pytest.approx(1e-4 * 0.5**2)
    assert lr_of[id(named["encoder.encoder.layer.1.output.dense.weight"])] == pytest.approx(1e-4 * 0.5)
    assert lr_of[id(named["encoder.pooler.dense.weight"])] == pytest.approx(1e-4)
    assert lr_of[id(named["heads.sst.classifier.weight"])] == pytest.approx(1e-3)
    assert sorted(lr_of) == sorted(id(p) for p in model.parameters())  # every parameter, once
    # without an lr the groups carry none (the optimizer's default applies)
    assert all("lr" not in g for g in param_groups(model, 0.01))
