"""CPU prediction throughput on SST dev: minbert's predictor vs ``transformers.BertModel`` with the
same encoder weights and the same SST head weights, given the same batches (batch 64, sorted by
length) in the same order, in one process on this machine's CPU threads.

minbert is timed end to end through ``Predictor.outputs`` (tokenisation included); the peer is
timed on the pre-built padded batches only. Accuracy on SST dev is reported for both.

Prints JSON and merges ``cpu_predict`` (and ``machine.cpu``) into reports/speed.json with --write.

    python benchmarks/cpu_predict.py --run-dir runs/quick --data-dir ../shared/data/cs224n --write
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from minbert.data.batching import eval_batches  # noqa: E402
from minbert.data.tokenizer import pad_batch  # noqa: E402
from minbert.inference.predictor import load  # noqa: E402
from minbert.model.heads import Encoded, pool  # noqa: E402
from minbert.tasks.base import get_task  # noqa: E402


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def peer_model(pred):
    import transformers

    hf_cfg = transformers.BertConfig(
        **{k: v for k, v in pred.model.encoder.config.to_hf_dict().items() if k != "architectures"}
    )
    hf_cfg._attn_implementation = "sdpa"
    hf = transformers.BertModel(hf_cfg).eval()
    hf.load_state_dict(pred.model.encoder.state_dict(), strict=True)
    return hf


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run-dir", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--write", action="store_true", help="merge the result into reports/speed.json")
    args = ap.parse_args()

    raw = get_task("sst").read(Path(args.data_dir) / "ids-sst-dev.csv", "dev")
    texts = [t[0] for t in raw.texts]
    gold = raw.labels
    pred = load(args.run_dir, device="cpu", batch_size=args.batch)
    pred_q = load(args.run_dir, device="cpu", batch_size=args.batch, quantize="int8")
    head = pred.model.heads["sst"].eval()
    hf = peer_model(pred)

    # identical batches for the peer: our tokenisation, sorted by length, batch 64
    ids, types, _ = pred.tokenizer.encode(texts)
    order = eval_batches(np.array([len(x) for x in ids]), args.batch)
    batches = [pad_batch([ids[i] for i in ix], [types[i] for i in ix], pred.tokenizer.pad_token_id) for ix in order]

    def run_peer() -> np.ndarray:
        out = np.zeros((len(texts), 5), dtype=np.float32)
        with torch.no_grad():
            for ix, b in zip(order, batches, strict=True):
                h = hf(**b).last_hidden_state
                logits = head.classifier(pool(Encoded(h, b["attention_mask"], None), head.pooling))
                out[ix] = logits.numpy()
        return out

    def run_ours() -> np.ndarray:
        return pred.outputs("sst", texts)

    def run_ours_int8() -> np.ndarray:
        return pred_q.outputs("sst", texts)

    timings = {"minbert": [], "minbert_int8": [], "transformers": []}
    results = {}
    for _ in range(args.repeats):
        for name, fn in (("minbert", run_ours), ("minbert_int8", run_ours_int8), ("transformers", run_peer)):
            t0 = time.perf_counter()
            results[name] = fn()
            timings[name].append(time.perf_counter() - t0)
    acc = {k: float(np.mean(v.argmax(-1) == gold)) for k, v in results.items()}
    speed = {k: round(len(texts) / statistics.median(v), 1) for k, v in timings.items()}
    rec = {
        # the headline path is the int8 predictor (minbert predict --quantize int8)
        "minbert_sent_per_s": speed["minbert_int8"],
        "transformers_sent_per_s": speed["transformers"],
        "accuracy_delta": round(acc["minbert_int8"] - acc["transformers"], 6),
        "minbert_fp32_sent_per_s": speed["minbert"],
        "fp32_accuracy_delta": round(acc["minbert"] - acc["transformers"], 6),
        "accuracy": acc,
        "max_abs_logit_diff_fp32": float(np.abs(results["minbert"] - results["transformers"]).max()),
        "max_abs_logit_diff_int8": float(np.abs(results["minbert_int8"] - results["transformers"]).max()),
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "timings_s": {k: [round(x, 3) for x in v] for k, v in timings.items()},
    }
    print(json.dumps(rec, indent=2))
    if args.write:
        path = ROOT / "reports" / "speed.json"
        speed = json.loads(path.read_text()) if path.is_file() else {}
        speed.setdefault("machine", {})["cpu"] = f"{cpu_name()} ({torch.get_num_threads()} threads)"
        speed["cpu_predict"] = rec
        path.write_text(json.dumps(speed, indent=2) + "\n")


if __name__ == "__main__":
    main()
