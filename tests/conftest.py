"""Shared fixtures: a tiny random BERT folder in Hugging Face layout, the real data folder."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():  # the Triton kernels' tests run on Triton's interpreter (test_varlen_triton.py),
    os.environ.setdefault("TRITON_INTERPRET", "1")  # which must be on before anything imports triton.language

from minbert.model.bert import BertConfig, BertModel  # noqa: E402
from minbert.model.hf_folder import resolve_encoder_path

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("MINBERT_DATA_DIR", REPO.parent / "shared" / "data" / "cs224n"))

TINY = dict(
    vocab_size=30522,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=128,
)


def make_tiny_encoder(folder: Path, seed: int = 0, **overrides) -> Path:
    """Write a random tiny BERT (HF layout: config.json, model.safetensors, tokenizer files)."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    cfg = BertConfig(**{**TINY, **overrides})
    model = BertModel(cfg)
    # perturb LayerNorms and biases so that parity tests see non-trivial values
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    (folder / "config.json").write_text(json.dumps(cfg.to_hf_dict(), indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    # tokenizer files: the packaged default encoder's, or $MINBERT_TEST_TOKENIZER_DIR's (a GPU
    # machine without the package runs the CUDA tests with an explicit encoder folder)
    src = Path(os.environ.get("MINBERT_TEST_TOKENIZER_DIR") or resolve_encoder_path("default"))
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(src / name, folder / name)
    return folder


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory) -> Path:
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "ids-sst-dev.csv").is_file():
        pytest.fail(f"real data not found at {DATA_DIR} (set MINBERT_DATA_DIR)")
    return DATA_DIR


@pytest.fixture(autouse=True)
def _deterministic():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield


@pytest.fixture(scope="session")
def shared_run_dir(tiny_encoder, data_dir, tmp_path_factory) -> Path:
    """The session's one tiny training run (minbert_testkit.shared_run): sst, qqp, sts and "para"."""
    from minbert_testkit import shared_run

    return shared_run(tiny_encoder, data_dir, tmp_path_factory).run_dir


@pytest.fixture(scope="session")
def shared_predictor(shared_run_dir):
    """``minbert.load`` of :func:`shared_run_dir` on the CPU."""
    from minbert.inference.predictor import load

    return load(shared_run_dir, device="cpu")

