"""Master weights (``optim.master_weights``): our AdamW keeps fp32 masters and the model trains
bf16 working weights (minbert.training.optim.attach_master_weights).

The masters move as our AdamW moves fp32 parameters given the same gradients, written out and
fused (compiled) alike; the working weights are the masters rounded; the model's state dict holds
the masters and loading one sets them; the optimizer's state stays fp32 through a state-dict
round trip (torch would cast it to the parameters' bf16); the config refuses what cannot work;
a CPU run in bf16 with master weights, SIGKILLed after a mid-epoch checkpoint and resumed, is
bit-identical to the uninterrupted run, and its checkpoints hold fp32 weights.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from minbert.config import load_config, runtime_settings
from minbert.errors import ConfigError
from minbert.io import load_weights
from minbert.runs import last_checkpoint
from minbert.training.optim import AdamW, attach_master_weights
from test_resume import assert_identical_runs, cli, kill_after_mid_epoch_checkpoint, train_args


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 30), nn.LayerNorm(30), nn.Linear(30, 3))


def groups(m: nn.Module) -> list[dict]:
    return [{"params": [m[0].weight, m[2].weight], "weight_decay": 0.01},
            {"params": [m[0].bias, m[1].weight, m[1].bias, m[2].bias], "weight_decay": 0.0, "lr": 2e-3}]


@pytest.mark.parametrize("fused", [False, True])
def test_masters_move_as_adamw_moves_fp32_parameters(fused):
    """Two groups (own lr and weight decay), a parameter without a gradient at one step, and
    (fused) the compile warm-up of prepare_graph_update between steps, which must leave no trace,
    and eager steps (the groups' lrs from the host) between graph updates."""
    model, ref = small_model(), small_model()
    opt = AdamW(groups(model), lr=3e-3, fused=fused, master_weights=True)
    attach_master_weights(model, opt)
    ref_opt = AdamW(groups(ref), lr=3e-3)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    start = [opt.state[p]["master"].clone() for p in model.parameters()]
    g = torch.Generator().manual_seed(1)
    for i in range(5):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            model(torch.randn(8, 20, generator=g)).float().pow(2).mean().backward()
        for p, q in zip(model.parameters(), ref.parameters(), strict=True):
            q.grad = p.grad.float()
        if i == 3:
            model[2].bias.grad = ref[2].bias.grad = None
        if fused and i in (0, 2):
            opt.prepare_graph_update()
        opt.graph_update(torch.tensor([3e-3, 2e-3])) if fused and i != 1 else opt.step()  # fused: both ways
        ref_opt.step()
        model.zero_grad()
        ref.zero_grad()
    for p, q, s in zip(model.parameters(), ref.parameters(), start, strict=True):
        master = opt.state[p]["master"]
        assert master.dtype == torch.float32 and (master - s).abs().max() > 1e-3
        torch.testing.assert_close(master, q.detach(), rtol=1e-5, atol=1e-6)
        assert torch.equal(p.detach(), master.to(torch.bfloat16))
        assert int(opt.state[p]["step"]) == int(ref_opt.state[q]["step"])
    assert int(opt.state[model[2].bias]["step"]) == 4


def test_state_dict_round_trip_keeps_the_state_fp32():
    model = small_model()
    opt = AdamW(groups(model), lr=3e-3, master_weights=True)
    attach_master_weights(model, opt)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(8, 20)).float().sum().backward()
    opt.step()
    other = small_model(seed=5)
    opt2 = AdamW(groups(other), lr=3e-3, master_weights=True)
    attach_master_weights(other, opt2)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))
    for p, q in zip(model.parameters(), other.parameters(), strict=True):
        for key in ("master", "exp_avg", "exp_avg_sq"):
            assert opt2.state[q][key].dtype == torch.float32
            assert torch.equal(opt2.state[q][key], opt.state[p][key]), key


def test_model_state_dict_holds_the_masters_and_loading_sets_them():
    model = small_model()
    opt = AdamW(groups(model), lr=3e-3, master_weights=True)
    fp32 = {k: v.clone() for k, v in model.state_dict().items()}
    attach_master_weights(model, opt)
    state = model.state_dict()
    assert all(v.dtype == torch.float32 for v in state.values())
    assert all(torch.equal(state[k], fp32[k]) for k in fp32)  # not the bf16 working weights
    loaded = {k: v + 1e-3 * torch.randn_like(v) for k, v in fp32.items()}
    model.load_state_dict(loaded)
    for name, p in model.named_parameters():
        assert torch.equal(opt.state[p]["master"], loaded[name])
        assert torch.equal(p.detach(), loaded[name].to(torch.bfloat16))
    with pytest.raises(ValueError, match="master_weights=True"):
        attach_master_weights(small_model(), AdamW(small_model().parameters()))


def test_the_config_refuses_what_cannot_work():
    with pytest.raises(ConfigError, match="adamw keeps the master weights"):
        load_config(None, ["optim.master_weights=true", "optim.name=torch_adamw"])
    cfg = load_config(None, ["optim.master_weights=true"])
    with pytest.raises(ConfigError, match="needs bf16 amp"):
        runtime_settings(cfg, "cpu")  # amp auto: fp32 on a CPU
    bf16 = load_config(None, ["optim.master_weights=true", "train.amp=bf16"])
    with pytest.raises(ConfigError, match="2 processes"):
        runtime_settings(bf16, "cpu", world_size=2)
    assert runtime_settings(bf16, "cpu").master_weights
    assert not runtime_settings(load_config(None, ["train.amp=bf16"]), "cpu").master_weights


def test_a_killed_bf16_run_with_master_weights_resumes_bit_identical(tmp_path, tiny_encoder, data_dir):
    extra = ("--train.amp=bf16", "--optim.master_weights=true")
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    cli(*train_args(tiny_encoder, data_dir, run_a, *extra), cwd=tmp_path)
    kill_after_mid_epoch_checkpoint(train_args(tiny_encoder, data_dir, run_b, *extra), run_b, tmp_path / "b.log")
    cli("train", "--resume", str(run_b), "--no-progress", cwd=tmp_path)
    assert_identical_runs(run_a, run_b)
    weights, _ = load_weights(last_checkpoint(run_a) / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in weights.values())
    # the masters' precision: most trained weights are not bf16 values
    assert any((t != t.to(torch.bfloat16).float()).float().mean() > 0.5 for t in weights.values())


def test_the_config_refuses_frozen_parameters_and_smart():
    for extra in (["train.mode=frozen"], ["train.freeze_layers=1"], ["train.freeze_layers=-1"],
                  ["train.smart_weight=1.0"]):
        with pytest.raises(ConfigError, match="optim.master_weights needs"):
            load_config(None, ["optim.master_weights=true", *extra])


def test_the_compiled_update_may_compile_more_often_than_torch_allows_by_default(monkeypatch):
    """Each group, each set of parameters a step reaches and each tuning trial's hyperparameters
    compile it again: more than torch's default 8 (with fullgraph, one more would raise)."""
    from minbert.training import optim

    seen, before = [], torch._dynamo.config.recompile_limit
    monkeypatch.setattr(optim, "_compiled", lambda o: lambda *a: seen.append(torch._dynamo.config.recompile_limit))
    optim._compiled_master_update(())
    assert seen == [optim.MASTER_RECOMPILES] and optim.MASTER_RECOMPILES > 8
    assert torch._dynamo.config.recompile_limit == before  # for the update only


def test_importing_the_trainer_does_not_import_dynamo():
    """The compiled master update is made at first use: a run without it does not pay for
    importing torch._dynamo (about 2 s) at start."""
    import subprocess
    import sys

    code = "import sys, minbert.training.trainer; print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_resuming_across_master_weights_on_and_off():
    """State saved without master weights loads into an optimizer with them (the masters: the
    weights loaded into the model), and the other way round the masters are dropped."""
    plain, model = small_model(), small_model(seed=3)
    opt = AdamW(groups(plain), lr=3e-3)
    plain(torch.randn(8, 20)).sum().backward()
    plain[2].bias.grad = None  # a parameter not stepped when saved
    opt.step()
    mopt = AdamW(groups(model), lr=3e-3, master_weights=True)
    attach_master_weights(model, mopt)
    model.load_state_dict(plain.state_dict())
    mopt.load_state_dict(copy.deepcopy(opt.state_dict()))
    for p, q in zip(model.parameters(), plain.parameters(), strict=True):
        assert torch.equal(mopt.state[p]["master"], q.detach())  # fp32, not the bf16 working weight
        for key in ("exp_avg", "exp_avg_sq"):
            assert mopt.state[p][key].dtype == torch.float32
    assert int(mopt.state[model[2].bias]["step"]) == 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.randn(8, 20)).float().sum().backward()
    mopt.step()  # no KeyError: every parameter has its master
    back = small_model(seed=4)
    bopt = AdamW(groups(back), lr=3e-3)
    bopt.load_state_dict(copy.deepcopy(mopt.state_dict()))
    assert not any("master" in s for s in bopt.state.values())
    assert all(s["exp_avg"].dtype == torch.float32 for s in bopt.state.values() if s)


def test_pcgrad_with_master_weights_runs(tmp_path, tiny_encoder, data_dir):
    """PCGrad's flat gradients keep the gradients' dtype (bf16 here) where a parameter no task
    reaches stands in as an empty piece."""
    cli(*train_args(tiny_encoder, data_dir, tmp_path / "r", "--train.amp=bf16", "--optim.master_weights=true",
                    "--train.pcgrad=true", "--train.epochs=1"), cwd=tmp_path)
    weights, _ = load_weights(last_checkpoint(tmp_path / "r") / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in weights.values())
