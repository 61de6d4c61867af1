"""``train.compile_options``: inductor's settings. Their form is checked with the config, their
meaning against the installed torch when training starts (:func:`compile_options`, by each
setting's declared type), and they reach every compile a run makes (the encoder's, our AdamW's
master update, the word-embedding rows' step values).

That they arrive is seen through one setting with a visible effect: ``trace.enabled`` with
``trace.debug_dir`` makes inductor write each graph it compiles (not one it finds in its cache:
``fx_graph_cache`` off) into that folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from minbert.config import from_dict, load_config, to_dict
from minbert.config_compile import compile_options
from minbert.errors import ConfigError
from minbert.model.packing import pack
from minbert.training.optim import AdamW
from minbert.training.setup import setup_model
from minbert_testkit import slice_args
from test_resume import cli, env

TRACE = {"trace.enabled": True, "fx_graph_cache": False}  # a cached graph writes no trace


def options(*items: str, compile: str = "on") -> dict:
    return compile_options(load_config(None, [f"train.compile={compile}", *items]).train)


def test_sections_become_dotted_names_and_the_config_round_trips():
    cfg = load_config(None, ["train.compile=auto", "train.compile_options.triton.enable_pdl=true",
                             "train.compile_options.combo_kernels=true"])
    assert compile_options(cfg.train) == {"triton.enable_pdl": True, "combo_kernels": True}
    assert from_dict(yaml.safe_load(yaml.safe_dump(to_dict(cfg)))) == cfg
    assert compile_options(load_config(None, []).train) == {}


@pytest.mark.parametrize(("option", "message"), [
    ("combo_kernel=true", "torch .* has no such public inductor setting"),  # a typo of combo_kernels
    ("triton.enable_pdll=true", "no such public inductor setting"),
    ("triton=true", "a section, not a setting: give its entries"),
    ("combo_kernels.x=true", "combo_kernels is a setting of type bool, not a section"),
    ("fx_passes_numeric_check.pre_grad=true", "is a setting of type dict, not a section"),
    ("TYPE_CHECKING=true", "no such public"),  # typing's, imported into inductor's config
    ("_collective.auto_select=true", "no such public"),  # private
    ("cpp.inject_relu_bug_TESTING_ONLY=x", "no such public"),
    ("combo_kernels=3", "expected true or false, got 3"),
    ("compile_threads=true", "expected an integer, got True"),  # int | None
    ("cpp.simdlen=abc", "expected an integer, got 'abc'"),
    ("max_autotune_gemm_backends=1", r"expected a string, got 1 \(quote it: a string\)"),
    ("cpu_backend=foo", r"expected one of \['cpp', 'triton'"),  # a Literal
    ("triton.multi_kernel=1.0", r"expected one of \[0, 1, 2, 3\], got 1.0"),  # a choice's own type
    ("cpu_gpu_bw=.nan", "expected a finite number"),
    (f"cpu_gpu_bw={10**400}", "expected a finite number"),  # too large for a float
    ("worker_log_path=x", "not settable here"),  # typed None alone
    ("post_grad_custom_post_pass=f", "not settable here"),  # a callable
    ("multi_kernel_hints=1", "not settable here"),  # a list
])
def test_an_unknown_setting_or_a_value_of_another_type_than_torch_declares_is_refused(option, message):
    with pytest.raises(ConfigError, match=f"train.compile_options.*{message}"):
        options(f"train.compile_options.{option}")


def test_what_torch_takes_is_taken_a_whole_number_for_a_float_made_a_float():
    got = options("train.compile_options.cpu_gpu_bw=2", "train.compile_options.trace.debug_dir=/tmp/x",
                  "train.compile_options.cpu_backend=triton", "train.compile_options.compile_threads=2")
    assert got == {"cpu_gpu_bw": 2.0, "trace.debug_dir": "/tmp/x", "cpu_backend": "triton", "compile_threads": 2}
    assert type(got["cpu_gpu_bw"]) is float
    torch.compile(lambda x: x + 1, options=got)  # torch checks each value's type here: none raises


@pytest.mark.parametrize(("item", "message"), [
    ("train.compile_options.combo_kernels=", "combo_kernels: no value"),  # null
    ("train.compile_options.triton={}", "triton: no value"),
    ("train.compile_options={triton.enable_pdl: true}",
     r"triton.enable_pdl: a dotted name; write it as a section \(triton: \{enable_pdl: ...\}\)"),
])
def test_the_form_is_checked_when_the_config_loads(item, message):
    with pytest.raises(ConfigError, match=f"train.compile_options.{message}"):
        load_config(None, ["train.compile=on", item])


def test_options_where_nothing_compiles_are_refused():
    with pytest.raises(ConfigError, match="nothing compiles"):
        load_config(None, ["train.compile_options.combo_kernels=true"])  # compile: off by default
    with pytest.raises(ConfigError, match="nothing compiles"):  # the unfused master update is not compiled
        load_config(None, ["train.compile_options.combo_kernels=true", "optim.master_weights=true", "optim.fused=off"])
    for extra in ("optim.master_weights=true", "optim.embedding_rows=true"):  # these compile their update
        assert options("train.compile_options.combo_kernels=true", extra, compile="off") == {"combo_kernels": True}


def test_a_run_with_options_torch_does_not_take_stops_before_its_folder_is_made(tmp_path, tiny_encoder, data_dir):
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "minbert", "train", f"--data-dir={data_dir}", f"--run-dir={run}",
         f"--model.encoder={tiny_encoder}", "--train.compile=on", "--train.compile_options.cpu_backend=foo"],
        cwd=tmp_path, env=env(False), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and not run.exists()
    assert proc.stderr.strip().splitlines()[-1].startswith("error: train.compile_options.cpu_backend: expected one of")


def test_adamw_takes_dotted_names_only():
    with pytest.raises(ValueError, match="dotted names"):
        AdamW([torch.nn.Parameter(torch.zeros(2))], compile_options={"triton": {"enable_pdl": True}})


def _traced(folder: Path) -> list[Path]:
    return sorted(folder.rglob("output_code.py"))


@pytest.mark.parametrize("packed", [False, True])
def test_the_encoders_compile_gets_the_options(tiny_encoder, tmp_path, packed):
    """The padded forward's compile, and the packed forward's (eager attention runs it on a CPU)."""
    cfg = load_config(None, [f"model.encoder={tiny_encoder}", "train.compile=on", "model.attn_implementation=eager",
                             "train.compile_options.trace.enabled=true", "train.compile_options.fx_graph_cache=false",
                             f"train.compile_options.trace.debug_dir={tmp_path}"])
    model = setup_model(cfg, torch.device("cpu"), compile_encoder=True, packed=packed).model.eval()
    ids = torch.randint(5, 90, (2, 7))
    with torch.no_grad():
        if packed:
            model.encoder.forward_packed(pack(ids, torch.ones_like(ids), torch.zeros_like(ids)))
        else:
            model.encoder(ids, torch.ones_like(ids))
    assert _traced(tmp_path)  # without the options inductor writes no code there


def test_the_master_updates_compile_gets_the_options(tmp_path):
    """A fused AdamW with master weights compiles its update; given the options, it writes its
    trace, and its update is still the one without options (the same values)."""
    ps = [torch.nn.Parameter(torch.randn(4, 3).to(torch.bfloat16)) for _ in range(2)]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in ps]
    before = [p.detach().clone() for p in ps]
    traced = AdamW(ps, lr=1e-2, fused=True, master_weights=True,
                   compile_options={**TRACE, "trace.debug_dir": str(tmp_path)})
    plain = AdamW(twins, lr=1e-2, fused=True, master_weights=True)
    for p, q in zip(ps, twins, strict=True):
        p.grad = q.grad = torch.randn(4, 3).to(torch.bfloat16)
    traced.step()
    plain.step()
    assert _traced(tmp_path)
    for p, q, p0 in zip(ps, twins, before, strict=True):
        assert torch.equal(p, q) and not torch.equal(p, p0)  # the same update, and one that moved the weights


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
    assert ("train.compile_options: the encoder is not compiled (train.compile=auto on cpu); they apply to the "
            "master-weights update") in (run / "train.log").read_text()


BAD = "train.compile_options.cpu_backend=foo"  # a form the config takes, a value this torch does not


def test_a_resumed_run_checks_its_config_file_and_names_it(tmp_path, shared_run_dir):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(shared_run_dir, run)
    cfg_file = run / "config.yaml"
    raw = yaml.safe_load(cfg_file.read_text())
    raw["train"].update(compile="on", compile_options={"cpu_backend": "foo"})
    cfg_file.write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, "-m", "minbert", "train", "--resume", str(run), "--no-progress"],
                          cwd=tmp_path, env=env(False), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {cfg_file}: train.compile_options.cpu_backend:")


def test_a_study_checks_them_before_its_folder_is_made(tmp_path, tiny_encoder, data_dir):
    from minbert.experiments.tune import Param, tune

    cfg = load_config(None, [f"model.encoder={tiny_encoder}", "train.compile=on", BAD])
    with pytest.raises(ConfigError, match="train.compile_options.cpu_backend: expected one of"):
        tune(cfg, tmp_path / "study", data_dir=data_dir, space=(Param("optim.lr", 1e-5, 1e-3, log=True),))
    assert not (tmp_path / "study").exists()


def test_an_ablation_checks_every_row_before_it_trains_one(tmp_path, tiny_encoder, data_dir):
    from minbert.experiments.ablation import run_ablation

    base = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"
    rows = [{"name": "a"}, {"name": "b", "parent": "a", "overrides": ["train.compile=on", BAD]}]
    (tmp_path / "ab.yaml").write_text(yaml.safe_dump({"base": str(base), "rows": rows}))
    with pytest.raises(ConfigError, match=r"ab.yaml: row 'b': train.compile_options.cpu_backend: expected one of"):
        run_ablation(tmp_path / "ab.yaml", tmp_path / "runs", tmp_path / "rep", data_dir=data_dir,
                     extra=[f"model.encoder={tiny_encoder}"])
    assert not (tmp_path / "runs").exists()
