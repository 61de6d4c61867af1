"""Helpers shared by the prediction, export and server tests: a small custom pair-classification
task ("para", written here) and ONE tiny training run per test session (the built-in tasks on a
slice of the real data plus "para"), so that these test modules do not each train their own."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

from minbert.config import from_dict
from minbert.training.trainer import Run, train

WORDS = "the cat dog sat ran on a mat red blue big small house car tree green old new fast slow".split()
NAMES = ["different", "same"]
N_ROWS = 16  # train and dev rows per built-in task
_cache: dict[str, object] = {}


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7)))


def pair_rows(n: int, seed: int) -> list[tuple[str, str, str, str]]:
    """(id, a, b, label name): b is a itself or an unrelated sentence, alternately."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        a = sentence(rng)
        same = i % 2 == 0
        rows.append((f"p{seed}-{i}", a, a if same else sentence(rng), NAMES[int(same)]))
    return rows


def write_para_task(d: Path) -> Path:
    """train.csv (48 good rows, then 2 bad ones on lines 50 and 51, then one labelled by index),
    dev.jsonl (24 rows, then a bad JSON line 25), test.tsv (8 rows, no labels)."""
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "train.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["uid", "first", "second", "verdict"])
        w.writerows(pair_rows(48, 1))
        w.writerow(["bad1", "a text", "", "same"])  # line 50: empty second text
        w.writerow(["bad2", "a text", "another", "maybe"])  # line 51: unknown label
        w.writerow(["ok-index", "one two", "one two", "1"])  # line 52: a label given by its index
    with open(d / "dev.jsonl", "w") as fh:
        for i, a, b, lab in pair_rows(24, 2):
            fh.write(json.dumps({"uid": i, "first": a, "second": b, "verdict": lab}) + "\n")
        fh.write("{not json\n")  # line 25
    with open(d / "test.tsv", "w") as fh:
        fh.write("uid\tfirst\tsecond\n")
        for i, a, b, _ in pair_rows(8, 3):
            fh.write(f"{i}\t{a}\t{b}\n")
    return d


def para_definition(d: Path) -> dict:
    return {
        "kind": "classification",
        "input": "pair",
        "label_names": NAMES,
        "files": {"train": str(d / "train.csv"), "dev": str(d / "dev.jsonl"), "test": str(d / "test.tsv")},
        "columns": {"text": "first", "text_b": "second", "label": "verdict", "id": "uid"},
    }


def base_config(tiny_encoder: Path) -> dict:
    return {
        "model": {"encoder": str(tiny_encoder)},
        "train": {"epochs": 1, "device": "cpu", "seed": 0},
        "optim": {"lr": 1e-3},
        "output": {"report_to": "none", "plot": False, "test_predictions": False},
    }


def para_dir(tmp_path_factory) -> Path:
    """The session's "para" data folder (one per session: one definition of the task)."""
    if "para_dir" not in _cache:
        _cache["para_dir"] = write_para_task(tmp_path_factory.mktemp("para"))
    return _cache["para_dir"]


def shared_run(tiny_encoder: Path, data_dir: Path, tmp_path_factory) -> Run:
    """sst, qqp, sts (N_ROWS train/dev rows each) and the custom "para" task, 1 epoch, trained
    once per session with the tiny random encoder."""
    if "run" not in _cache:
        d = para_dir(tmp_path_factory)
        raw = base_config(tiny_encoder) | {"custom_tasks": {"para": para_definition(d)}}
        small = {"train_limit": N_ROWS, "dev_limit": N_ROWS, "batch_size": 8}
        raw["tasks"] = {"sst": small, "qqp": small, "sts": small, "para": {"batch_size": 8}}
        run_dir = tmp_path_factory.mktemp("shared-run") / "run"
        _cache["run"] = train(from_dict(raw), run_dir=run_dir, data_dir=data_dir, progress=False)
    return _cache["run"]


def cli_train_args(tiny_encoder: Path, data_dir: Path, run_dir: Path, *options: str) -> list[str]:
    """``minbert train`` arguments for a tiny run: data, run folder, the tiny encoder, then ``options``."""
    return ["train", f"--data-dir={data_dir}", f"--run-dir={run_dir}", f"--model.encoder={tiny_encoder}", *options]


def slice_args(train_rows: int, dev_rows: int, batch: int, tasks: tuple[str, ...] = ("sst", "qqp", "sts")) -> list[str]:
    """Overrides that train each task on ``train_rows`` rows, score ``dev_rows`` and batch ``batch``."""
    pairs = (("train_limit", train_rows), ("dev_limit", dev_rows), ("batch_size", batch))
    return [f"--tasks.{t}.{k}={v}" for t in tasks for k, v in pairs]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_healthy(base: str, proc: object, log_path: Path, tries: int = 240) -> None:
    """Poll ``base``/health every 0.25 s until it answers 200; fail with the server's log if the
    process ``proc`` (a ``subprocess.Popen``) exits first or after ``tries`` polls."""
    import time

    import httpx
    import pytest

    for _ in range(tries):
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            if proc.poll() is not None:
                pytest.fail(f"server exited: {log_path.read_text()[-2000:]}")
            time.sleep(0.25)
    pytest.fail(f"server did not come up in {tries / 4:.0f} s")

