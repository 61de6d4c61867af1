"""The word embedding's AdamW applied to the rows each step reads, in training
(``optim.embedding_rows``; :func:`minbert.training.lazy_rows.attach_lazy_rows`).

A CPU run on a slice of the real data, with fp32 weights and with bf16 master weights, ends with
the weights and optimizer state of the same run with the dense update, to well under one step's
size; a killed run resumes bit-identical; a skipped non-finite step leaves no gradient in the
table; a model's state dict holds every row brought up, and a load is not altered by rows still
behind; the config refuses what cannot work. The same comparison on CUDA, with packing and one
graph per step whose capture holds the rows' update, runs where a GPU is present.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from minbert.cli import main
from minbert.config import OptimConfig, load_config, runtime_settings
from minbert.errors import ConfigError
from minbert.io import load_weights
from minbert.runs import last_checkpoint
from minbert.training.checkpoint import load_train_state
from minbert.training.lazy_rows import LazyRowsEmbedding, attach_lazy_rows
from minbert.training.optim import AdamW, attach_master_weights, build_optimizer
from test_resume import _nan_on_call, assert_identical_runs, cli, kill_after_mid_epoch_checkpoint, train_args

LR = 1e-3  # train_args' optim.lr: Adam moves a weight by about this much a step
TABLE = "encoder.embeddings.word_embeddings.weight"
ROWS = ("--optim.embedding_rows=true",)
MODES = {"fp32": (), "master": ("--train.amp=bf16", "--optim.master_weights=true")}


def _table_state(run) -> dict:
    """The table's AdamW state in the run's last checkpoint (its index: the word embedding's
    parameter is the first of the model's, hence of the first group that holds it)."""
    opt = load_train_state(last_checkpoint(run))["optimizer"]
    first = next(i for g in opt["param_groups"] for i in g["params"])
    return opt["state"][first]


@pytest.fixture(scope="module", params=sorted(MODES))
def two_runs(request, tmp_path_factory, tiny_encoder, data_dir):
    """(mode, the run with the dense update, the run with the rows' update)."""
    work = tmp_path_factory.mktemp(f"rows-{request.param}")
    extra = (*MODES[request.param], "--train.log_every=1")
    cli(*train_args(tiny_encoder, data_dir, work / "dense", *extra), cwd=work)
    cli(*train_args(tiny_encoder, data_dir, work / "rows", *extra, *ROWS), cwd=work)
    return request.param, work / "dense", work / "rows"


def test_a_run_trains_as_with_the_dense_update(two_runs, tiny_encoder):
    """16 steps, a flush at the 16th: the checkpoint of step 12 (the two last are kept) was
    written with rows behind, so it holds what the flush before a state dict brought up.

    fp32: within 1% of one step's size. bf16 (master weights) only within a few steps' size: on
    a CPU, torch's embedding backward sums a token's repeats in bf16 (a frequent token's gradient
    loses precision), the accumulator in fp32, and the bf16 working weights spread that difference
    through the network. The step's arithmetic in bf16 is the next test's."""
    mode, dense, rows = two_runs
    for step in (12, 16):
        a, _ = load_weights(dense / "checkpoints" / f"step-{step:08d}" / "model.safetensors")
        b, _ = load_weights(rows / "checkpoints" / f"step-{step:08d}" / "model.safetensors")
        worst = max((a[k] - b[k]).abs().max().item() for k in a)
        assert worst < (LR / 100 if mode == "fp32" else 8 * LR), (step, worst)
    init, _ = load_weights(tiny_encoder / "model.safetensors")
    start = next(v for k, v in init.items() if k.endswith("word_embeddings.weight"))
    assert (a[TABLE] - start).abs().max() > LR  # the table trained
    sa, sb = _table_state(dense), _table_state(rows)
    assert float(sa["step"]) == float(sb["step"]) == 16
    for key in ("exp_avg", "exp_avg_sq") if mode == "fp32" else ():
        assert sa[key].shape == a[TABLE].shape and sa[key].abs().max() > 0
        torch.testing.assert_close(sb[key], sa[key], rtol=1e-2, atol=1e-3 * sa[key].abs().max().item())
    da, db = (json.loads((r / "summary.json").read_text())["dev"] for r in (dense, rows))
    assert abs(da["overall"] - db["overall"]) < 0.02
    if mode == "fp32":  # the logged gradient norm holds the table's part (not in .grad)
        na, nb = ([json.loads(ln)["grad_norm"] for ln in (r / "metrics.jsonl").read_text().splitlines()
                   if '"grad_norm"' in ln] for r in (dense, rows))
        assert len(na) == 16 and nb == pytest.approx(na, rel=1e-4)


def test_a_killed_run_resumes_bit_identical(two_runs, tmp_path, tiny_encoder, data_dir):
    mode, _, rows = two_runs
    if mode != "master":
        pytest.skip("one mode is enough: the resume reads the same hooks")
    run_b = tmp_path / "b"
    args = train_args(tiny_encoder, data_dir, run_b, *MODES[mode], *ROWS)
    kill_after_mid_epoch_checkpoint(args, run_b, tmp_path / "b.log")
    cli("train", "--resume", str(run_b), "--no-progress", cwd=tmp_path)
    assert_identical_runs(rows, run_b)


def test_a_skipped_step_leaves_no_gradient_in_the_table(monkeypatch, tmp_path, tiny_encoder, data_dir, capsys):
    """Step 3's sts loss is NaN, so is its gradient: kept in the accumulator, the next update
    would write NaN into the rows that step read."""
    _nan_on_call(monkeypatch, "sts", 3)
    args = [f"--tasks.{t}.train_limit=32" for t in ("sst", "qqp", "sts")] + [
        "--train.epochs=1", "--train.nonfinite=skip", "--train.max_nonfinite_fraction=0.5"]
    assert main(train_args(tiny_encoder, data_dir, tmp_path / "run", *args, *ROWS)) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["steps"] == 3  # of 4
    weights, _ = load_weights(last_checkpoint(tmp_path / "run") / "model.safetensors")
    assert torch.isfinite(weights[TABLE]).all()


class Tiny(nn.Module):
    """A word embedding under the name attach_lazy_rows looks for, and a head."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embeddings = nn.Module()
        self.embeddings.word_embeddings = nn.Embedding(40, 8, padding_idx=0)
        self.out = nn.Linear(8, 1)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(self.embeddings.word_embeddings(ids)).pow(2).mean()


def _train(model: nn.Module, opt: AdamW, steps: range) -> None:
    for s in steps:
        ids = torch.arange(1 + s, 9 + s).reshape(2, 4) % 40  # rows 1-8, 2-9, ...: most fall behind
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=opt.master_weights):
            model(ids).float().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


@pytest.mark.parametrize("master", [False, True])
def test_state_dicts_bring_the_rows_up_and_a_load_is_kept_as_loaded(master):
    dense, lazy = Tiny(), Tiny()
    opts = [AdamW(m.parameters(), lr=1e-2, weight_decay=0.1, master_weights=master) for m in (dense, lazy)]
    rows = attach_lazy_rows(lazy, opts[1])
    if master:
        for m, o in zip((dense, lazy), opts, strict=True):
            attach_master_weights(m, o)
    assert isinstance(lazy.embeddings.word_embeddings, LazyRowsEmbedding) and opts[1].rows is rows
    for m, o in zip((dense, lazy), opts, strict=True):
        _train(m, o, range(5))
    assert bool((rows.row_step < 5).any())  # rows behind: not flushed since
    key = "embeddings.word_embeddings.weight"
    saved = lazy.state_dict()  # brings them up
    assert bool((rows.row_step == 5).all())
    torch.testing.assert_close(saved[key], dense.state_dict()[key], rtol=0, atol=1e-6)
    sd_dense, sd_lazy = opts[0].state_dict(), opts[1].state_dict()
    p = 0  # the table: the model's first parameter
    for k in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(sd_lazy["state"][p][k], sd_dense["state"][p][k], rtol=0, atol=1e-7)
    saved = {k: v.clone() for k, v in saved.items()}
    for m, o in zip((dense, lazy), opts, strict=True):
        _train(m, o, range(5, 8))
    assert bool((rows.row_step < 8).any())  # rows behind again
    lazy.load_state_dict(saved)  # brings them up first: moments as the dense update's
    now = lazy.state_dict()[key]
    assert torch.equal(now, saved[key])  # and no catch-up applied on top of the loaded values
    moments = opts[0].state_dict()["state"][p]
    for k in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(opts[1].state_dict()["state"][p][k], moments[k], rtol=0, atol=1e-7)


def test_grad_sq_is_the_dense_gradients_squared_norm():
    """Two lookups before one update, repeated ids and the padding id among them."""
    dense, lazy = Tiny(), Tiny()
    opt = AdamW(lazy.parameters(), lr=1e-2)
    rows = attach_lazy_rows(lazy, opt)
    assert float(rows.grad_sq()) == 0.0
    ids = [torch.tensor([[3, 3, 0, 7], [7, 1, 3, 0]]), torch.tensor([[7, 9, 9, 2]])]
    for m in (dense, lazy):
        sum(m(i) for i in ids).backward()
    want = dense.embeddings.word_embeddings.weight.grad.square().sum()
    torch.testing.assert_close(rows.grad_sq(), want, rtol=1e-6, atol=0)
    opt.step()
    assert float(rows.grad_sq()) == 0.0  # nothing pending after the update


def test_a_load_into_a_module_holding_the_table_is_kept_as_loaded():
    model = Tiny()
    opt = AdamW(model.parameters(), lr=1e-2)
    rows = attach_lazy_rows(model, opt)
    _train(model, opt, range(5))
    saved = {k: v.clone() for k, v in model.embeddings.state_dict().items()}
    _train(model, opt, range(5, 8))
    assert bool((rows.row_step < 8).any())
    model.embeddings.load_state_dict(saved)  # not the model: its hook does not run
    assert torch.equal(model.state_dict()["embeddings.word_embeddings.weight"], saved["word_embeddings.weight"])


def test_the_evaluation_copy_holds_every_row_brought_up_and_follows_training(tiny_encoder):
    """The bf16 copy that graphed evaluation runs: made by a deep copy, its lookup a plain
    embedding holding the rows brought up, and refreshed from the model's rows brought up."""
    from minbert.inference.graphs import bf16_copy, refresh_copy
    from minbert.model.multitask import build_model
    from minbert.tasks.table import task_table

    cfg = load_config(None, [f"model.encoder={tiny_encoder}", "optim.embedding_rows=true", "optim.lr=1e-2"])
    torch.manual_seed(0)
    model = build_model(cfg, str(tiny_encoder), tasks=task_table(cfg))
    opt = build_optimizer(cfg.optim, model.parameters(), torch.device("cpu"), model)
    g = torch.Generator().manual_seed(1)

    def train(n: int) -> None:
        for _ in range(n):
            ids = torch.randint(5, 40, (4, 10), generator=g)
            batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "token_type_ids": torch.zeros_like(ids)}
            model("sst", batch).float().pow(2).mean().backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

    train(5)
    shadow = bf16_copy(model)
    copied = shadow.encoder.inner.embeddings.word_embeddings
    assert type(copied) is nn.Embedding and copied.padding_idx == model.encoder.embeddings.word_embeddings.padding_idx
    assert torch.equal(copied.weight, model.state_dict()[TABLE].to(torch.bfloat16))
    train(10)  # rows the copy's evaluation does not read fall behind
    assert bool((opt.rows.row_step < 15).any())
    refresh_copy(shadow, model)
    assert torch.equal(copied.weight, model.state_dict()[TABLE].to(torch.bfloat16))
    assert copied.weight.data_ptr() != model.encoder.embeddings.word_embeddings.weight.data_ptr()


def test_build_optimizer_attaches_the_rows_before_the_master_weights():
    """Else the masters' load hook would write the loaded values first and the rows' flush would
    then apply the steps missed by rows behind on top of them."""
    model = Tiny()
    cfg = OptimConfig(lr=1e-2, master_weights=True, embedding_rows=True)
    opt = build_optimizer(cfg, model.parameters(), torch.device("cpu"), model)
    _train(model, opt, range(5))
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, opt, range(5, 8))
    assert bool((opt.rows.row_step < 8).any())
    model.load_state_dict(saved)
    key = "embeddings.word_embeddings.weight"
    assert torch.equal(model.state_dict()[key], saved[key])
    assert torch.equal(model.embeddings.word_embeddings.weight, saved[key].to(torch.bfloat16))
    with pytest.raises(ValueError, match="need the model"):
        build_optimizer(cfg, model.parameters(), torch.device("cpu"))


def test_attach_refuses_a_model_without_one_trained_word_embedding():
    with pytest.raises(ValueError, match="0 word embeddings"):
        attach_lazy_rows(nn.Linear(2, 2), AdamW(nn.Linear(2, 2).parameters()))
    model = Tiny()
    model.embeddings.word_embeddings.weight.requires_grad_(False)
    with pytest.raises(ValueError, match="not trained by the optimizer"):
        attach_lazy_rows(model, AdamW(model.out.parameters()))


@pytest.mark.parametrize("overrides, device, world, match", [
    (["optim.name=torch_adamw"], "cpu", 1, "optim.embedding_rows needs optim.name=adamw"),
    (["train.max_grad_norm=1.0"], "cpu", 1, "optim.embedding_rows needs .*max_grad_norm=null"),
    (["train.pcgrad=true"], "cpu", 1, "optim.embedding_rows needs .*train.pcgrad=false"),
    (["train.freeze_layers=-1"], "cpu", 1, "optim.embedding_rows needs a trained word embedding"),
    (["train.mode=frozen"], "cpu", 1, "optim.embedding_rows needs a trained word embedding"),
    (["train.smart_weight=1.0"], "cpu", 1, "optim.embedding_rows needs .*train.smart_weight=0"),
    ([], "cpu", 2, "optim.embedding_rows needs one process"),
    (["optim.fused=off", "train.cuda_graphs=off"], "cuda", 1, "optim.embedding_rows needs optim.fused=on or auto"),
    (["train.grad_accum=2", "train.cuda_graphs=on"], "cuda", 1, "cuda_graphs=on needs with optim.embedding_rows"),
    (["train.nonfinite=skip", "train.cuda_graphs=on"], "cuda", 1, "cuda_graphs=on needs with optim.embedding_rows"),
    (["model.packing=off", "train.cuda_graphs=on"], "cuda", 1, "cuda_graphs=on needs with optim.embedding_rows"),
])
def test_the_config_refuses_what_cannot_work(overrides, device, world, match):
    with pytest.raises(ConfigError, match=match):
        runtime_settings(load_config(None, ["optim.embedding_rows=true", *overrides]), device, world)


@pytest.mark.parametrize("overrides, graphs", [
    ([], True),  # packed, one graph per step holding the update
    (["train.grad_accum=2"], False), (["train.nonfinite=skip"], False), (["model.packing=off"], False),
    (["train.cuda_graphs=off"], False),
])
def test_cuda_graphs_auto_goes_off_where_a_graph_would_not_hold_the_rows_update(overrides, graphs):
    rt = runtime_settings(load_config(None, ["optim.embedding_rows=true", *overrides]), "cuda")
    assert rt.cuda_graphs is graphs
    without = runtime_settings(load_config(None, overrides), "cuda")  # the option is what turns them off
    assert without.cuda_graphs is ("train.cuda_graphs=off" not in overrides)
    assert not runtime_settings(load_config(None, ["optim.embedding_rows=true", *overrides]), "cpu").cuda_graphs


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("mode", ["fp32", "master"])
def test_a_cuda_run_with_one_graph_per_step_trains_as_with_the_dense_update(mode, tmp_path, tiny_encoder, data_dir):
    """Packed, each step one CUDA graph whose capture holds the rows' update. ``fp32``: fp32
    weights (torch's fused AdamW for the rest) without autocast (the packed reference attention),
    so that only the order of a token's repeats in its gradient's sum differs, as on a CPU (under
    bf16 autocast such a last-bit difference can flip the bf16 rounding of an activation, and the
    runs drift apart by a good part of a step in 16 steps). ``master``: bf16 master weights under
    bf16 autocast, which carry rounding differences on as on a CPU (the test above), hence the
    looser bound."""
    extra = ("--train.device=cuda", *(("--optim.master_weights=true",) if mode == "master" else (
        "--train.amp=off", "--model.attn_implementation=eager", "--model.packing=on")))
    cli(*train_args(tiny_encoder, data_dir, tmp_path / "dense", *extra), cwd=tmp_path)
    cli(*train_args(tiny_encoder, data_dir, tmp_path / "rows", *extra, *ROWS), cwd=tmp_path)
    summary = json.loads((tmp_path / "rows" / "summary.json").read_text())
    assert summary["throughput"]["graphs"]["replays"] > 0
    a, _ = load_weights(last_checkpoint(tmp_path / "dense") / "model.safetensors")
    b, _ = load_weights(last_checkpoint(tmp_path / "rows") / "model.safetensors")
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < (LR / 10 if mode == "fp32" else 8 * LR), worst
