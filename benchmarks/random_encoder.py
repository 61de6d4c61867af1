"""Write a randomly initialised BERT folder (Hugging Face layout) for throughput runs, e.g. a
bert-base-sized encoder when no bert-base checkpoint is at hand. The tokenizer files are copied
from an existing folder (same uncased WordPiece vocabulary).

    python benchmarks/random_encoder.py OUT --like bert-base --tokenizer-from PATH
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from minbert.model.bert import BertConfig, BertModel  # noqa: E402

SIZES = {
    "bert-base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "minilm-l6": dict(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--like", choices=sorted(SIZES), default="bert-base")
    ap.add_argument("--tokenizer-from", required=True)
    args = ap.parse_args()
    from safetensors.torch import save_file

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=30522, max_position_embeddings=512, **SIZES[args.like])
    model = BertModel(cfg)
    (out / "config.json").write_text(json.dumps(cfg.to_hf_dict(), indent=2))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    src = Path(args.tokenizer_from)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy(src / name, out / name)
    print(json.dumps({"out": str(out), "like": args.like, "n_params": sum(p.numel() for p in model.parameters())}))


if __name__ == "__main__":
    main()
