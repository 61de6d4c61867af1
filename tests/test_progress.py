"""Progress bars of every long phase and the end-of-run summary.

The CLI runs in a subprocess whose stderr is a pipe, not a terminal: bars draw there too (at
most every few seconds), so their descriptions and totals can be read from stderr. Each bar is
checked by its description and its total (rows or batches), never by its timings.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from minbert.cli import main
from minbert.data.batching import TOKENIZE_CHUNK, RawSplit, TokenizedSplit, tokenize_split
from minbert.data.tokenizer import Tokenizer
from minbert.distributed import DistContext
from minbert.inference import evaluate as evaluate_module
from minbert.tasks.base import get_task
from minbert_testkit import shared_run
from test_cli import N, cli, file_ids, ok, train_args

TEST_FILES = {"sst": "ids-sst-test-student.csv", "sts": "sts-test-student.csv"}  # the data has no QQP test file


def has_bar(err: str, desc: str, total: int) -> bool:
    """Whether ``err`` shows tqdm's bar ``desc: NN%|...| k/total [...]`` at least once."""
    return re.search(rf"(?:^|[\r\n ]){re.escape(desc)}:\s+\d+%\|[^|]*\|\s*\d+/{total} \[", err) is not None


def bar_count(err: str) -> int:
    return len(re.findall(r"\d+%\|[^|]*\|\s*\d+/\d+ \[", err))


@pytest.fixture(scope="module")
def progress_run(tmp_path_factory, tiny_encoder, data_dir):
    """One epoch on N rows per task, progress bars on (no --no-progress): (work dir, run dir, stderr)."""
    work = tmp_path_factory.mktemp("progress")
    run_dir = work / "run"
    args = [a for a in train_args(tiny_encoder, data_dir, run_dir, "--train.epochs=1") if a != "--no-progress"]
    proc = ok(cli(*args, cwd=work))
    return work, run_dir, proc.stderr


def eval_batch_size(run_dir: Path) -> int:
    return yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["eval_batch_size"]


def test_train_shows_a_bar_for_every_phase(progress_run, data_dir):
    _, run_dir, err = progress_run
    bs = eval_batch_size(run_dir)
    assert has_bar(err, "epoch 1/1", N // 8)  # batch size 8: N / 8 steps
    for task in ("sst", "qqp", "sts"):
        assert has_bar(err, f"tokenise {task} train", N), task
        assert has_bar(err, f"tokenise {task} dev", N), task
        assert has_bar(err, f"dev {task}", math.ceil(N / bs)), task  # the dev evaluation, in batches
    for task, fname in TEST_FILES.items():
        n = len(file_ids(data_dir / fname))
        assert has_bar(err, f"tokenise {task} test", n), task
        assert has_bar(err, f"test {task}", math.ceil(n / bs)), task  # the test prediction
    assert "test qqp:" not in err


def test_train_ends_with_its_scores_and_its_files(progress_run):
    _, run_dir, err = progress_run
    dev = json.loads((run_dir / "summary.json").read_text())["dev"]
    scores = (
        f"dev: SST acc {dev['sst_acc']:.3f} · QQP acc {dev['qqp_acc']:.3f} · STS r {dev['sts_pearson']:.3f} "
        f"· overall {dev['overall']:.3f}"
    )
    files = (f"run folder: {run_dir} (summary.json, predictions/, curves.png, sst-confusion.png, qqp-calibration.png, "
             "sts-scatter.png, train.log, README.md)")
    lines = err.splitlines()
    assert lines[-2].endswith(scores), lines[-2:]
    assert lines[-1].endswith(files), lines[-1:]
    limits = "scored on seeded dev samples of {'sst': 64, 'qqp': 64, 'sts': 64} rows; "
    assert limits in lines[-3] and lines[-3].endswith(f"`minbert evaluate {run_dir} --full` scores the whole dev sets")
    log = (run_dir / "train.log").read_text()
    assert scores in log and files in log


def test_the_summary_names_custom_tasks_by_their_headline_metric(tiny_encoder, data_dir, tmp_path_factory):
    run = shared_run(tiny_encoder, data_dir, tmp_path_factory)  # sst, qqp, sts and the custom "para"
    dev = json.loads((run.run_dir / "summary.json").read_text())["dev"]
    want = (
        f"dev: SST acc {dev['sst_acc']:.3f} · QQP acc {dev['qqp_acc']:.3f} · STS r {dev['sts_pearson']:.3f} "
        f"· para acc {dev['para_acc']:.3f} · overall {dev['overall']:.3f}"
    )
    from minbert.config import load_config
    from minbert.training.reporting import scores_line  # what train() logs (in-process the log is quiet)

    assert "dev: " + scores_line(dev, load_config(run.run_dir / "config.yaml")) == want


def test_evaluate_and_predict_input_show_bars(progress_run, data_dir):
    work, run_dir, _ = progress_run
    bs = eval_batch_size(run_dir)
    err = ok(cli("evaluate", str(run_dir), "--device=cpu", cwd=work)).stderr
    for task in ("sst", "qqp", "sts"):
        assert has_bar(err, f"tokenise {task} dev", N), task
        assert has_bar(err, f"dev {task}", math.ceil(N / bs)), task
    for task, fname in TEST_FILES.items():
        assert has_bar(err, f"test {task}", math.ceil(len(file_ids(data_dir / fname)) / bs)), task

    src = work / "pairs.csv"
    src.write_text("id,sentence1,sentence2\n" + "".join(f"r{i},a man plays {i},he is playing {i}\n" for i in range(37)))
    out = work / "out.csv"
    err = ok(cli("predict", str(run_dir), "--task=sts", f"--input={src}", f"--output={out}", cwd=work)).stderr
    assert has_bar(err, "predict sts", 37)  # in rows
    assert len(out.read_text().splitlines()) == 1 + 37


@pytest.fixture
def one_thread():
    """One intra-op thread for in-process commands (as the subprocesses have): fast on 2 cores."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_no_progress_turns_the_bars_off(progress_run, capsys, one_thread):
    """In-process (same code path as the subprocess). evaluate's bars with progress on are checked
    above; ensemble and predict are checked both ways."""
    work, run_dir, _ = progress_run
    run = str(run_dir)
    src = work / "one.csv"
    src.write_text("id,sentence\nx,a fine film\n")
    commands = {
        "evaluate": (["evaluate", run, "--device=cpu"], ("dev sst", "test sts"), False),
        "ensemble": (["ensemble", run, run, f"--out={work / 'ens'}"], ("run dev sst", "run test sts"), True),
        "predict": (["predict", run, "--task=sst", f"--input={src}", "--device=cpu"], ("predict sst",), True),
    }
    for name, (argv, descs, both) in commands.items():
        if both:
            assert main(argv) == 0, name
            err = capsys.readouterr().err
            for desc in descs:
                assert f"{desc}:" in err, (name, desc)
        assert main([*argv, "--no-progress"]) == 0, name
        err = capsys.readouterr().err
        assert bar_count(err) == 0 and not any(f"{d}:" in err for d in descs), (name, err[-500:])


# ----------------------------------------------------------------------------------------------
# the pieces: tokenising in chunks, evaluation bars on the main process only


def test_tokenize_split_in_chunks_equals_one_call_and_shows_rows(tiny_encoder, capsys):
    tok = Tokenizer(tiny_encoder, 32)
    n = 2 * TOKENIZE_CHUNK + 5  # three chunks
    a = [f"sentence number {i} " + "word " * (i % 40) for i in range(n)]
    b = [f"other {i}" for i in range(n)]
    raw = RawSplit("mem", [str(i) for i in range(n)], list(zip(a, b, strict=True)), None)
    cross = tokenize_split(raw, tok, "cross", progress=True, desc="tokenise demo")
    ids, types, n_trunc = tok.encode(a, b)  # the whole split in one call
    assert cross.input_ids == ids and cross.token_type_ids == types and cross.n_truncated == n_trunc > 0
    assert cross.lengths.tolist() == [len(x) for x in ids]
    bi = tokenize_split(raw, tok, "bi")
    assert bi.input_ids == tok.encode(a)[0] and bi.input_ids_b == tok.encode(b)[0]
    assert bi.lengths.tolist() == [max(len(x), len(y)) for x, y in zip(tok.encode(a)[0], tok.encode(b)[0], strict=True)]
    err = capsys.readouterr().err
    assert has_bar(err, "tokenise demo", n)
    assert bar_count(err) == 1  # progress off: no bar for the second call
    with pytest.raises(ValueError, match="unknown pair_input"):
        tokenize_split(raw, tok, "sideways")


class _Zeros(torch.nn.Module):
    def forward(self, task: str, batch: dict) -> torch.Tensor:
        return torch.zeros(batch["input_ids"].shape[0], 5)


def test_prediction_bar_counts_this_ranks_batches_on_rank_0_only(monkeypatch, capsys):
    monkeypatch.setattr(evaluate_module, "all_gather_objects", lambda obj, ctx: [obj])  # no process group here
    n = 10
    labels, lengths = np.zeros(n, dtype=np.int64), np.full(n, 3)
    split = TokenizedSplit([str(i) for i in range(n)], [[101, 7, 102]] * n, [[0, 0, 0]] * n, None, labels, lengths)
    sst = get_task("sst")
    evaluate_module.predict_split(_Zeros(), sst, split, torch.device("cpu"), 2, progress=True, desc="dev sst")
    assert has_bar(capsys.readouterr().err, "dev sst", 5)  # 10 rows, batches of 2
    evaluate_module.predict_split(_Zeros(), sst, split, torch.device("cpu"), 2, ctx=DistContext(0, 2), progress=True,
                                  desc="dev sst")
    assert has_bar(capsys.readouterr().err, "dev sst", 3)  # rank 0 of 2: batches 0, 2, 4
    evaluate_module.predict_split(_Zeros(), sst, split, torch.device("cpu"), 2, ctx=DistContext(1, 2), progress=True,
                                  desc="dev sst")
    assert capsys.readouterr().err == ""  # rank 1 draws nothing
