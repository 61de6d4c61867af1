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
# third round: a CPU budget of ~50 steps; frozen embeddings and lower layers make a step cheaper


def r3(n_sst, b_sst, n_qqp, b_qqp, n_sts, b_sts, lr, freeze, **extra):
    out = tasks((n_sst, n_qqp, n_sts), sts=SB)
    for t, b in (("sst", b_sst), ("qqp", b_qqp), ("sts", b_sts)):
        out[t]["batch_size"] = b
    row = {"tasks": out, "optim": {"lr": lr}, "train": {"freeze_layers": freeze}}
    for k, v in extra.items():
        row[k] = {**row.get(k, {}), **v}
    return row


ROWS.update({
    "c-f3-6400-lr3e4": r3(6400, 128, 1600, 32, 800, 16, 3e-4, 3),
    "c-f3-6400-lr5e4": r3(6400, 128, 1600, 32, 800, 16, 5e-4, 3),
    "c-f4-6400-lr5e4": r3(6400, 128, 1600, 32, 800, 16, 5e-4, 4),
    "c-f4-6400-lr1e3": r3(6400, 128, 1600, 32, 800, 16, 1e-3, 4),
    "c-f2-6400-lr3e4": r3(6400, 128, 1600, 32, 800, 16, 3e-4, 2),
    "c-fe-6400-lr3e4": r3(6400, 128, 1600, 32, 800, 16, 3e-4, -1),
    "c-f3-3200-lr3e4": r3(3200, 64, 1600, 32, 800, 16, 3e-4, 3),
    "c-f3-3200-lr5e4": r3(3200, 64, 1600, 32, 800, 16, 5e-4, 3),
    "c-fe-3200-lr3e4": r3(3200, 64, 1600, 32, 800, 16, 3e-4, -1),
    "c-f4-4800-lr5e4": r3(4800, 96, 1600, 32, 800, 16, 5e-4, 4),
    "c-f3-4800-lr5e4-len48": r3(4800, 96, 1600, 32, 800, 16, 5e-4, 3, model={"max_length": 48}),
    "c-f3-6400-lr5e4-hlr": r3(6400, 128, 1600, 32, 800, 16, 5e-4, 3, optim={"head_lr": 2e-3}),
})
# fourth round: the top two layers train (freeze_layers 4); seeds and neighbours of the best row
ROWS.update({
    "d-f4-6400-lr1e3-s1": r3(6400, 128, 1600, 32, 800, 16, 1e-3, 4, train={"seed": 1}),
    "d-f4-6400-lr1e3-s2": r3(6400, 128, 1600, 32, 800, 16, 1e-3, 4, train={"seed": 2}),
    "d-f4-6400-lr1e3-hlr": r3(6400, 128, 1600, 32, 800, 16, 1e-3, 4, optim={"head_lr": 3e-3}),
    "d-f4-6400-lr7e4-hlr": r3(6400, 128, 1600, 32, 800, 16, 7e-4, 4, optim={"head_lr": 3e-3}),
    "d-f5-6400-lr1e3": r3(6400, 128, 1600, 32, 800, 16, 1e-3, 5),
    "d-f5-6400-lr2e3": r3(6400, 128, 1600, 32, 800, 16, 2e-3, 5),
    "d-f4-4800-lr1e3": r3(4800, 96, 1600, 32, 800, 16, 1e-3, 4),
    "d-f4-6400-lr1e3-wd0": r3(6400, 128, 1600, 32, 800, 16, 1e-3, 4, optim={"weight_decay": 0.0}),
    "d-f4-6400-lr1e3-sts1600": r3(6400, 128, 1600, 32, 1600, 32, 1e-3, 4),
    "d-f4-8000-lr1e3": r3(8000, 160, 1600, 32, 800, 16, 1e-3, 4),
})
# fifth round: the candidates over three seeds
for s in (0, 1, 2):
    ROWS[f"e-f4-4800-lr7e4-hlr-s{s}"] = r3(4800, 96, 1600, 32, 800, 16, 7e-4, 4, optim={"head_lr": 3e-3}, train={"seed": s})
    ROWS[f"e-f4-6400-lr7e4-hlr-s{s}"] = r3(6400, 128, 1600, 32, 800, 16, 7e-4, 4, optim={"head_lr": 3e-3}, train={"seed": s})
    ROWS[f"e-f4-4800-lr1e3-hlr-s{s}"] = r3(4800, 96, 1600, 32, 800, 16, 1e-3, 4, optim={"head_lr": 3e-3}, train={"seed": s})
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
