"""``minbert export RUN_DIR OUT``: a Hugging Face BERT folder that transformers loads with the
same outputs, plus the heads; ``minbert.load(OUT)`` predicts like the run."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

import minbert
from minbert.cli import main
from minbert.inference.export import EXPORT_CONFIG, EXPORT_HEADS
from minbert_testkit import shared_run

TEXTS = ["a gorgeous, witty film", "dull and lifeless", "it is a movie, with a plot that goes on and on for ever"]
PAIRS = [
    ("A man is playing a guitar.", "A man plays the guitar."), ("How do I cook rice?", "What is the capital of France?")
]


@pytest.fixture(scope="module")
def run(tiny_encoder, data_dir, tmp_path_factory):
    return shared_run(tiny_encoder, data_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def export(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "bert"
    assert main(["export", str(run.run_dir), str(out)]) == 0
    return out


def test_export_folder_layout(export, run):
    names = sorted(p.name for p in export.iterdir())
    assert names == sorted(
        ["config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "tokenizer_config.json",
         "special_tokens_map.json", EXPORT_HEADS, EXPORT_CONFIG, "README.md"]
    )  # no tasks/ folder: none of this run's heads has an exact transformers equivalent
    cfg = json.loads((export / "config.json").read_text())
    assert cfg["model_type"] == "bert" and cfg["hidden_size"] == 32 and cfg["num_hidden_layers"] == 2
    with safe_open(str(export / "model.safetensors"), "pt") as fh:
        assert fh.metadata()["format"] == "pt"
        assert "embeddings.word_embeddings.weight" in fh.keys() and not any(k.startswith("heads.") for k in fh.keys())
    with safe_open(str(export / EXPORT_HEADS), "pt") as fh:
        keys = set(fh.keys())
    assert {k.split(".")[1] for k in keys} == {"sst", "qqp", "sts", "para"}
    assert all(k.startswith("heads.") for k in keys)
    assert not list(export.glob(".*.tmp"))


def test_transformers_loads_the_encoder_with_identical_outputs(export, run, tiny_encoder):
    transformers = pytest.importorskip("transformers")
    hf = transformers.BertModel.from_pretrained(str(export)).eval()
    tok = transformers.AutoTokenizer.from_pretrained(str(export))
    pred = minbert.load(run.run_dir, device="cpu")
    ours = pred.tokenizer(TEXTS)
    theirs = tok(TEXTS, padding=True, return_tensors="pt")
    assert torch.equal(theirs["input_ids"], ours["input_ids"])
    assert torch.equal(theirs["attention_mask"], ours["attention_mask"])
    with torch.no_grad():
        h = hf(**theirs)
        m = pred.model.encoder(ours["input_ids"], ours["attention_mask"], ours["token_type_ids"])
    real = ours["attention_mask"].bool()
    assert h.last_hidden_state.shape == m.last_hidden_state.shape == (3, ours["input_ids"].shape[1], 32)
    torch.testing.assert_close(h.last_hidden_state[real], m.last_hidden_state[real], atol=1e-5, rtol=0)
    torch.testing.assert_close(h.pooler_output, m.pooler_output, atol=1e-5, rtol=0)
    # the fine-tuned weights, not the initial ones
    init = transformers.BertModel.from_pretrained(str(tiny_encoder)).eval()
    with torch.no_grad():
        assert (init(**theirs).pooler_output - h.pooler_output).abs().max() > 1e-3


def test_minbert_load_of_the_export_predicts_like_the_run(export, run):
    a, b = minbert.load(run.run_dir, device="cpu"), minbert.load(export, device="cpu")
    assert b.tasks == a.tasks and b.run_dir == export
    np.testing.assert_allclose(
        [s.probabilities for s in b.sentiment(TEXTS)], [s.probabilities for s in a.sentiment(TEXTS)], atol=1e-6
    )
    np.testing.assert_allclose(b.paraphrase(PAIRS), a.paraphrase(PAIRS), atol=1e-6)
    np.testing.assert_allclose(b.similarity(PAIRS), a.similarity(PAIRS), atol=1e-6)
    np.testing.assert_allclose(b.embed(TEXTS), a.embed(TEXTS), atol=1e-6)
    assert [o["name"] for o in b.predict("para", PAIRS)] == [o["name"] for o in a.predict("para", PAIRS)]


def test_export_mistakes_are_one_line_exit_2(export, run, tmp_path, capsys):
    before = {p.name: p.stat().st_mtime_ns for p in export.iterdir()}
    assert main(["export", str(run.run_dir), str(export)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {export}: folder exists and is not empty; pass --overwrite to replace the export there"]
    assert {p.name: p.stat().st_mtime_ns for p in export.iterdir()} == before
    (tmp_path / "not-a-run").mkdir()
    assert main(["export", str(tmp_path / "not-a-run"), str(tmp_path / "out")]) == 2
    assert "not a minbert run folder" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    run_before = {p: p.stat().st_mtime_ns for p in run.run_dir.rglob("*") if p.is_file()}
    for out in (run.run_dir, run.run_dir / "."):  # the run itself, or any run folder, even with --overwrite
        assert main(["export", str(run.run_dir), str(out), "--overwrite"]) == 2
        assert capsys.readouterr().err.strip() == f"error: {out}: is a run folder; export into a folder of its own"
    assert {p: p.stat().st_mtime_ns for p in run.run_dir.rglob("*") if p.is_file()} == run_before


def test_overwrite_replaces_an_export(run, tmp_path):
    out = tmp_path / "again"
    out.mkdir()
    (out / "config.json").write_text("{}")
    assert main(["export", str(run.run_dir), str(out), "--overwrite"]) == 0
    assert json.loads((out / "config.json").read_text())["model_type"] == "bert"
    assert minbert.load(out, device="cpu").tasks == ["sst", "qqp", "sts", "para"]


def test_weights_with_nan_are_not_exported(run, tmp_path, capsys):
    """A run whose weights diverged to NaN exports nothing: one error line naming the file, the
    count of tensors and the first one."""
    import shutil

    from safetensors.torch import save_file

    from minbert.io import load_weights
    from minbert.runs import best_or_last_weights

    copy = tmp_path / "run"
    shutil.copytree(run.run_dir, copy)
    weights = best_or_last_weights(copy)
    tensors, meta = load_weights(weights)
    name = next(k for k in tensors if k.endswith("LayerNorm.weight"))
    tensors[name] = tensors[name].clone()
    tensors[name][3] = float("nan")
    save_file(tensors, str(weights), metadata={"minbert": json.dumps(meta)})
    out = tmp_path / "out"
    assert main(["export", str(copy), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {weights}: 1 weight tensor(s) hold NaN or infinity (the first: {name}); nothing was exported"
    assert not out.exists()
