"""``train.compile_options``: inductor's settings, checked against this torch when the config
loads, and handed to both compiles a run makes (the encoder's and our AdamW's master update).

That they arrive is seen through one setting with a visible effect: ``trace.enabled`` with
``trace.debug_dir`` makes inductor write each graph it compiles (not one it finds in its cache:
``fx_graph_cache`` off) into that folder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from minbert.config import compile_options, from_dict, load_config, to_dict
from minbert.errors import ConfigError
from minbert.training.optim import AdamW
from minbert.training.setup import setup_model
from minbert_testkit import slice_args
from test_resume import cli

TRACE = {"trace.enabled": True, "fx_graph_cache": False}  # a cached graph writes no trace


def test_sections_become_dotted_names_and_the_config_round_trips():
    cfg = load_config(None, ["train.compile=auto", "train.compile_options.triton.enable_pdl=true",
                             "train.compile_options.combo_kernels=true"])
    assert compile_options(cfg.train) == {"triton.enable_pdl": True, "combo_kernels": True}
    assert from_dict(yaml.safe_load(yaml.safe_dump(to_dict(cfg)))) == cfg
    assert compile_options(load_config(None, []).train) == {}


@pytest.mark.parametrize(("option", "message"), [
    ("combo_kernel=true", "torch .* has no such inductor setting"),  # a typo of combo_kernels
    ("triton.enable_pdll=true", "has no such inductor setting"),
    ("combo_kernels=3", r"expected a bool \(default False\), got 3"),
    ("max_autotune_gemm_backends=1", "expected a str"),
    ("multi_kernel_hints=1", "not settable here"),  # a list setting
])
def test_an_unknown_setting_or_a_value_of_the_wrong_type_is_refused(option, message):
    with pytest.raises(ConfigError, match=f"train.compile_options.*{message}"):
        load_config(None, ["train.compile=on", f"train.compile_options.{option}"])


def test_a_number_for_a_float_setting_and_any_scalar_where_the_default_is_none():
    from torch._inductor import config as inductor

    settings = inductor.get_config_copy()
    floats = [k for k, v in settings.items() if type(v) is float and "." not in k]
    nones = [k for k, v in settings.items() if v is None and "." not in k]
    cfg = load_config(None, ["train.compile=on", f"train.compile_options.{floats[0]}=2",
                             f"train.compile_options.{nones[0]}=x"])
    assert compile_options(cfg.train) == {floats[0]: 2, nones[0]: "x"}
    with pytest.raises(ConfigError, match="expected a float"):
        load_config(None, ["train.compile=on", f"train.compile_options.{floats[0]}=true"])


def test_options_with_compile_off_are_refused():
    with pytest.raises(ConfigError, match="train.compile is off"):
        load_config(None, ["train.compile_options.combo_kernels=true"])  # compile: off by default


def _traced(folder: Path) -> list[Path]:
    return sorted(folder.rglob("output_code.py"))


def test_the_encoders_compile_gets_the_options(tiny_encoder, tmp_path):
    cfg = load_config(None, [f"model.encoder={tiny_encoder}", "train.compile=on",
                             "train.compile_options.trace.enabled=true", "train.compile_options.fx_graph_cache=false",
                             f"train.compile_options.trace.debug_dir={tmp_path}"])
    model = setup_model(cfg, torch.device("cpu"), compile_encoder=True).model.eval()
    ids = torch.randint(5, 90, (2, 7))
    with torch.no_grad():
        model.encoder(ids, torch.ones_like(ids))
    assert _traced(tmp_path)  # without the options inductor writes no code there


def test_the_master_updates_compile_gets_the_options(tmp_path):
    """A fused AdamW with master weights compiles its update; given the options, it writes its
    trace, and its update is still the one without options (the same values)."""
    ps = [torch.nn.Parameter(torch.randn(4, 3).to(torch.bfloat16)) for _ in range(2)]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    traced = AdamW(ps, lr=1e-2, fused=True, master_weights=True,
                   compile_options={**TRACE, "trace.debug_dir": str(tmp_path)})
    plain = AdamW(twins, lr=1e-2, fused=True, master_weights=True)
    for p, q in zip(ps, twins, strict=True):
        p.grad = q.grad = torch.randn(4, 3).to(torch.bfloat16)
    traced.step()
    plain.step()
    assert _traced(tmp_path)
    for p, q in zip(ps, twins, strict=True):
        assert torch.equal(p, q) and not torch.equal(p.float(), q.grad.float())


def test_a_run_hands_them_to_its_update_and_says_the_encoder_is_not_compiled(tmp_path, tiny_encoder, data_dir):
    """``minbert train`` on a CPU with ``train.compile`` auto compiles no encoder (its log says so)
    but does compile the fused master update, with the options (its trace is written)."""
    run, traces = tmp_path / "run", tmp_path / "traces"
    cli("train", f"--data-dir={data_dir}", f"--run-dir={run}", f"--model.encoder={tiny_encoder}",
        *slice_args(16, 8, 8), "--train.max_steps=2", "--train.amp=bf16", "--optim.master_weights=true",
        "--optim.fused=on", "--train.compile=auto", "--train.compile_options.trace.enabled=true",
        "--train.compile_options.fx_graph_cache=false", f"--train.compile_options.trace.debug_dir={traces}",
        "--no-progress", cwd=tmp_path)
    assert _traced(traces)
    assert "train.compile_options: the encoder is not compiled here" in (run / "train.log").read_text()
