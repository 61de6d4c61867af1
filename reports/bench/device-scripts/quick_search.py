"""Candidate recipes for configs/quick.yaml, scored on the full dev sets (one GPU, fp32 like a
CPU run). Each row: one epoch on seeded, stratified train samples. Prints one JSON line per row."""

import json
import sys
import time

import minbert
from minbert.config import from_dict

ENC, DATA, TREES, OUT = sys.argv[1:5]
BASE = {
    "model": {"encoder": ENC, "max_length": 128},
    "train": {"epochs": 1, "seed": 0, "amp": "off", "cuda_graphs": "off", "routine": "parallel"},
    "optim": {"name": "adamw", "lr": 1e-4, "schedule": "linear", "warmup_ratio": 0.1, "weight_decay": 0.01},
    "output": {"tensorboard": False, "plot": False, "test_predictions": False},
}
BI = {
    "sst": {"head": "mean", "pooling": "mean", "dropout": 0.1, "batch_size": 32},
    "qqp": {"head": "sbert", "pooling": "mean", "pair_input": "bi", "dropout": 0.1, "batch_size": 32},
    "sts": {"head": "cosine", "pooling": "mean", "pair_input": "bi", "dropout": 0.1, "batch_size": 32},
}


def tasks(limits, **over):
    out = {}
    for t, lim in zip(("sst", "qqp", "sts"), limits):
        out[t] = {**BI[t], **over.get(t, {}), "train_limit": lim}
    return out


CROSS = {"head": "baseline", "pooling": "mean", "pair_input": "cross"}
ROWS = {
    "bi-3k-lr1e4": {"tasks": tasks((3000, 3000, 3000))},
    "bi-3k-lr5e5": {"tasks": tasks((3000, 3000, 3000)), "optim": {"lr": 5e-5}},
    "bi-3k-lr2e4": {"tasks": tasks((3000, 3000, 3000)), "optim": {"lr": 2e-4}},
    "bi-3k-freeze3": {"tasks": tasks((3000, 3000, 3000)), "train": {"freeze_layers": 3}},
    "bi-2k-lr1e4": {"tasks": tasks((2000, 2000, 2000))},
    "bi-1.5k-lr1e4": {"tasks": tasks((1600, 1600, 1600))},
    "qqpcross-3k": {"tasks": tasks((3000, 3000, 3000), qqp=CROSS)},
    "cross-3k-lr5e5": {"tasks": tasks((3000, 3000, 3000), qqp=CROSS, sts=CROSS), "optim": {"lr": 5e-5}},
    "bi-3k-phrases": {"tasks": tasks((3000, 3000, 3000), sst={"phrases_file": TREES + "/train.txt"})},
    "bi-sst4k-sts1.5k": {"tasks": tasks((4000, 3000, 1500))},
    "bi-3k-stsbaseline": {"tasks": tasks((3000, 3000, 3000), sts={"head": "baseline"})},
    "bi-3k-sampled": {"tasks": tasks((3000, 3000, 3000)), "train": {"routine": "sampled", "sampling": "proportional"}},
}
# second round: the sbert_cosine STS head, smaller pair batches (the CPU budget is ~5k sequences)
SB = {"head": "sbert_cosine"}


def small(n_sst, n_qqp, n_sts, pb=16, **over):
    over["sts"] = {**SB, **over.get("sts", {})}
    out = tasks((n_sst, n_qqp, n_sts), **over)
    for t in ("qqp", "sts"):
        out[t]["batch_size"] = pb
    return out


ROWS.update({
    "q-1600-lr2e4": {"tasks": small(1600, 800, 800), "optim": {"lr": 2e-4}},
    "q-1600-lr1e4": {"tasks": small(1600, 800, 800)},
    "q-1600-lr3e4": {"tasks": small(1600, 800, 800), "optim": {"lr": 3e-4}},
    "q-2400-lr2e4": {"tasks": small(2400, 1200, 1200), "optim": {"lr": 2e-4}},
    "q-2400-lr1e4": {"tasks": small(2400, 1200, 1200)},
    "q-1600-qqpcross-lr2e4": {"tasks": small(1600, 800, 800, qqp=CROSS), "optim": {"lr": 2e-4}},
    "q-1600-stsw0.5-lr2e4": {"tasks": small(1600, 800, 800, sts={"weight": 0.5}), "optim": {"lr": 2e-4}},
    "q-1600-headlr-lr1e4": {"tasks": small(1600, 800, 800), "optim": {"lr": 1e-4, "head_lr": 1e-3}},
    "q-1600-phrases-lr2e4": {"tasks": small(1600, 800, 800, sst={"phrases_file": TREES + "/train.txt"}),
                             "optim": {"lr": 2e-4}},
    "q-3200-sst64-lr2e4": {"tasks": small(3200, 1600, 1600, sst={"batch_size": 64}), "optim": {"lr": 2e-4}},
    "q-1600-len64-lr2e4": {"tasks": small(1600, 800, 800), "optim": {"lr": 2e-4}, "model": {"max_length": 64}},
    "q-1600-seed1-lr2e4": {"tasks": small(1600, 800, 800), "optim": {"lr": 2e-4}, "train": {"seed": 1}},
})
only = sys.argv[5].split(",") if len(sys.argv) > 5 else list(ROWS)
for name in only:
    row = ROWS[name]
    raw = {k: ({**BASE.get(k, {}), **row.get(k, {})} if isinstance(BASE.get(k, {}), dict) else row[k]) for k in {*BASE, *row}}
    raw["name"] = name
    t0 = time.time()
    try:
        run = minbert.train(from_dict(raw), run_dir=f"{OUT}/{name}", data_dir=DATA, progress=False, overwrite=True)
        print(json.dumps({"row": name, "dev": run.summary["dev"], "steps": run.summary["steps"],
                          "wall_s": round(time.time() - t0, 1), "config": raw}), flush=True)
    except Exception as e:  # one row's failure must not stop the search
        print(json.dumps({"row": name, "error": f"{type(e).__name__}: {e}"}), flush=True)
