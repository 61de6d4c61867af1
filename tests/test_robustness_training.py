"""Hostile or careless use of training runs: planted pickles in a run folder, leftovers of killed
runs, a full disk, diverging runs and non-finite outputs, limits of 0, a missing ``[serve]``
extra. Each failure is one ``error:`` line and exit code 2; nothing read back runs code.

CPU, the tiny random encoder of ``conftest.tiny_encoder``, a slice of the real cs224n data;
one small run per module (4 optimizer steps, checkpoints at steps 2 and 4), copied per test.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import pickle
import random
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from minbert.cli import main
from minbert.config import OptimConfig, from_dict, load_config
from minbert.errors import ConfigError
from minbert.io import load_weights, save_weights
from minbert.runs import last_checkpoint
from minbert.training import checkpoint as ck
from minbert.training.checkpoint import (
    check_plain,
    clean_checkpoints,
    load_train_state,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from minbert.training.lr_schedule import build_scheduler
from minbert.training.optim import build_optimizer
from minbert_testkit import cli_train_args, slice_args

TASKS = ("sst", "qqp", "sts")
ROWS, DEV_ROWS, BATCH = 32, 16, 8  # 4 optimizer steps in the one epoch


def train_args(tiny_encoder: Path, data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return cli_train_args(
        tiny_encoder, data_dir, run_dir, *slice_args(ROWS, DEV_ROWS, BATCH, TASKS),
        "--train.epochs=1", "--train.checkpoint_every=2", "--train.device=cpu", "--optim.lr=1e-3",
        "--output.report_to=none", "--output.test_predictions=false", "--output.plot=false", "--no-progress",
        *extra,
    )


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, tiny_encoder, data_dir) -> Path:
    run = tmp_path_factory.mktemp("small") / "run"
    assert main(train_args(tiny_encoder, data_dir, run)) == 0
    return run


@pytest.fixture
def run_copy(small_run, tmp_path) -> Path:
    shutil.copytree(small_run, tmp_path / "run")
    return tmp_path / "run"


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: "), err
    return err[0]


# ----------------------------------------------------------------------------------------------
# nothing read back executes code


class _Payload:
    """Unpickled by pickle (or ``torch.load(weights_only=False)``), this runs a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _torch_save_payload(path: Path, marker: Path) -> None:
    buf = io.BytesIO()
    torch.save({"optimizer": _Payload(marker), "loop": {}}, buf)
    path.write_bytes(buf.getvalue())


def _plain_pickle_payload(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps({"optimizer": _Payload(marker)}, protocol=2))


def _older_minbert_state(path: Path, marker: Path) -> None:
    """What an older minbert wrote: the RNG states as python's tuple and numpy's array."""
    buf = io.BytesIO()
    torch.save({"rng": [{"python": random.getstate(), "numpy": np.random.get_state()}]}, buf)
    path.write_bytes(buf.getvalue())


# case -> (writer, how the old code read it: None for no payload)
PLANTED = {
    "torch.save payload": (_torch_save_payload, lambda path: torch.load(path, weights_only=False)),
    "plain pickle payload": (_plain_pickle_payload, lambda path: pickle.loads(path.read_bytes())),
    "older minbert state": (_older_minbert_state, None),
}


@pytest.mark.parametrize("case", sorted(PLANTED))
def test_resume_never_unpickles_a_planted_train_state(case, run_copy, tmp_path, capsys):
    plant, live = PLANTED[case]
    marker = tmp_path / "code-ran"
    path = last_checkpoint(run_copy) / "train_state.pt"
    plant(path, marker)

    code = main(["train", "--resume", str(run_copy), "--no-progress"])
    line = one_error_line(capsys)
    assert code == 2
    assert line == (
        f"error: {path}: holds Python objects that only pickle can load (the run folder was written by an older "
        "minbert, or is not trusted), so the run cannot be resumed; evaluate, predict and serve still work"
    )
    assert not marker.exists()
    # predict reads only safetensors: it still works, and still runs nothing
    assert main(["predict", str(run_copy), "--task", "sst", "--text", "a fine film"]) == 0
    assert not marker.exists()
    if live is not None:  # the payload is real: unpickling it the old way runs the command
        live(path)
        assert marker.exists()


def _first_moment(state: dict) -> None:
    first = next(iter(state["optimizer"]["state"].values()))
    first["exp_avg"] = torch.zeros(3)


# edit of a loaded training state -> what the error line says after the file's name
TAMPERED = {
    "no optimizer": (lambda st: st.pop("optimizer"), "(KeyError: 'optimizer')"),
    "step a string": (lambda st: st["loop"].update(step="four"), "(ValueError: loop.step is 'four', not an integer"),
    "negative epoch": (lambda st: st["loop"].update(epoch=-1), "(ValueError: loop.epoch is -1, not an integer >= 0)"),
    "moment reshaped": (_first_moment, "(ValueError: optimizer state exp_avg of shape (3,) for a parameter of shape"),
    "rng not a state": (lambda st: st.update(rng=[{"python": 1}]), "(TypeError: "),
    "foreign stream": (lambda st: st["streams"].update(zzz={}), "(KeyError: 'zzz')"),
    "lr a string": (lambda st: st["optimizer"]["param_groups"][0].update(lr="abc"),
                    "(ValueError: optimizer param_groups[0].lr is 'abc', not finite numbers)"),
    "betas strings": (lambda st: st["optimizer"]["param_groups"][0].update(betas=("a", "b")),
                      "(ValueError: optimizer param_groups[0].betas is ('a', 'b'), not finite numbers)"),
    "schedule step a string": (lambda st: st["scheduler"].update(last_epoch="x"),
                               "(ValueError: the lr schedule's last_epoch 'x' is not an integer)"),
    "schedule cut": (lambda st: st["scheduler"].update(base_lrs=st["scheduler"]["base_lrs"][:-1]), "(ValueError: "),
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_resume_of_a_tampered_train_state_is_one_error_line(case, run_copy, capsys):
    """A training state that torch.load reads but that is damaged or from another run: one line
    naming the file, exit 2, the checkpoint left as it was."""
    edit, why = TAMPERED[case]
    path = last_checkpoint(run_copy) / "train_state.pt"
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)
    before = path.read_bytes()
    code = main(["train", "--resume", str(run_copy), "--no-progress"])
    line = one_error_line(capsys)
    assert code == 2
    assert line.startswith(f"error: {path}: not a training state this run can resume {why}"), line
    assert path.read_bytes() == before


def _decay_groups(model: torch.nn.Sequential) -> list[dict]:
    """The two layers' parameters as two groups: weight decay 0.1 and 0."""
    return [{"params": list(model[0].parameters()), "weight_decay": 0.1},
            {"params": list(model[1].parameters()), "weight_decay": 0.0}]


@pytest.mark.parametrize("name", ["adamw", "torch_adamw", "lion"])
def test_train_state_round_trips_with_weights_only(name, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    cfg = OptimConfig(name=name, lr=1e-2, schedule="linear", warmup_ratio=0.5, weight_decay=0.1)
    opt = build_optimizer(cfg, _decay_groups(model), torch.device("cpu"))
    sched = build_scheduler(cfg, opt, total_steps=10)
    x = torch.randn(8, 4)
    for _ in range(2):
        model(x).pow(2).mean().backward()
        opt.step()
        sched.step()
        opt.zero_grad()
    state = {
        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "rng": [rng_state()],
        "loop": {"step": 2, "best": None},
    }
    folder = save_checkpoint(tmp_path, 2, model.state_dict(), state)
    draws = (random.random(), float(np.random.rand()), torch.rand(3))  # the next draws after the saved RNG states

    torch.load(folder / "train_state.pt", weights_only=True)  # loads without pickle's code paths
    loaded = load_train_state(folder)
    model2 = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 1))
    model2.load_state_dict(model.state_dict())
    opt2 = build_optimizer(cfg, _decay_groups(model2), torch.device("cpu"))
    sched2 = build_scheduler(cfg, opt2, total_steps=10)
    opt2.load_state_dict(loaded["optimizer"])
    sched2.load_state_dict(loaded["scheduler"])
    for m, o, s in ((model, opt, sched), (model2, opt2, sched2)):
        m(x).pow(2).mean().backward()
        o.step()
        s.step()
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q)
    assert sched.get_last_lr() == sched2.get_last_lr()

    # the RNG states come back exactly: the same draws from python, numpy and torch
    set_rng_state(loaded["rng"][0])
    again = (random.random(), float(np.random.rand()), torch.rand(3))
    assert draws[:2] == again[:2] and torch.equal(draws[2], again[2])


NOT_PLAIN = {
    "torch.Size": ({"opt": {"shape": torch.Size([2, 3])}}, "train_state.opt.shape: torch.Size"),
    "numpy array": ({"rng": [{"numpy": np.zeros(3)}]}, "train_state.rng[0].numpy: numpy.ndarray"),
    "float key": ({"x": {1.5: 0}}, "train_state.x: key 1.5 of type float"),
    "custom class": ({"x": _Payload(Path("m"))}, "train_state.x: test_robustness_training._Payload"),
}


@pytest.mark.parametrize("case", sorted(NOT_PLAIN))
def test_a_train_state_with_other_objects_is_refused_before_writing(case, tmp_path):
    state, fragment = NOT_PLAIN[case]
    with pytest.raises(TypeError, match=re.escape(fragment)):
        save_checkpoint(tmp_path, 1, {"w": torch.zeros(2)}, state)
    assert not (tmp_path / "checkpoints").exists()
    check_plain({"a": [1, 2.0, "s", True, None, (1, 2)], 3: torch.zeros(1)})  # plain: no error


# ----------------------------------------------------------------------------------------------
# leftovers of killed runs


def _touch(root: Path, rel: str) -> None:
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_bytes(b"x")


FULL = ("model.safetensors", "train_state.pt")
# case -> (files under checkpoints/, last.json's folder or None, files that remain)
LEFTOVERS = {
    "half-deleted prune": (
        [".trash-abc/step-00000002/model.safetensors", *[f"step-00000004/{f}" for f in FULL],
         *[f"step-00000006/{f}" for f in FULL]],
        "step-00000006",
        [*[f"step-00000004/{f}" for f in FULL], *[f"step-00000006/{f}" for f in FULL]],
    ),
    "older step folder without its files": (
        ["step-00000002/model.safetensors", "step-00000003/.train_state.pt.x1.tmp",
         *[f"step-00000004/{f}" for f in FULL]],
        "step-00000004",
        [f"step-00000004/{f}" for f in FULL],
    ),
    "newer step folders than last.json": (
        [*[f"step-00000004/{f}" for f in FULL], *[f"step-00000006/{f}" for f in FULL],
         "step-00000008/model.safetensors"],
        "step-00000004",
        [f"step-00000004/{f}" for f in FULL],
    ),
    "temp files of torn writes": (
        [*[f"step-00000004/{f}" for f in FULL], "step-00000004/.train_state.pt.y2.tmp", ".last.json.z3.tmp",
         "best/model.safetensors", "best/.model.safetensors.q4.tmp",
         # temporary folders of atomic_write_file, one with the library's own temporary file inside
         "step-00000004/.train_state.pt.f5.tmp/train_state.pt", "best/.model.safetensors.g6.tmp/.tmpAbC123"],
        "step-00000004",
        [*[f"step-00000004/{f}" for f in FULL], "best/model.safetensors"],
    ),
    "no last.json yet": (
        ["step-00000002/model.safetensors", *[f"step-00000003/{f}" for f in FULL]],
        None,
        [],
    ),
    "last.json names an incomplete folder: kept, resume reports it": (
        ["step-00000004/model.safetensors", *[f"step-00000002/{f}" for f in FULL]],
        "step-00000004",
        ["step-00000004/model.safetensors", *[f"step-00000002/{f}" for f in FULL]],
    ),
}


@pytest.mark.parametrize("case", sorted(LEFTOVERS))
def test_clean_checkpoints_removes_what_a_kill_left(case, tmp_path):
    files, last, remain = LEFTOVERS[case]
    root = tmp_path / "checkpoints"
    for rel in files:
        _touch(root, rel)
    if last is not None:
        (root / "last.json").write_text(json.dumps({"dir": last, "step": int(last.split("-")[1])}))
    clean_checkpoints(tmp_path)
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != "last.json")
    assert left == sorted(remain)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == sorted({r.split("/")[0] for r in remain})


class _Killed(BaseException):
    """Stands for SIGKILL: nothing after it runs."""


def test_kill_while_pruning_leaves_no_half_deleted_step_folder(tmp_path, monkeypatch):
    state = {"loop": {"step": 0}}
    for step in (1, 2):
        save_checkpoint(tmp_path, step, {"w": torch.full((2,), float(step))}, state)

    def dying_rmtree(path, ignore_errors=False):
        victim = next(p for p in sorted(Path(path).rglob("*")) if p.is_file())
        victim.unlink()  # deleted part of the folder, then the process died
        raise _Killed

    monkeypatch.setattr(ck.shutil, "rmtree", dying_rmtree)
    with pytest.raises(_Killed):
        save_checkpoint(tmp_path, 3, {"w": torch.full((2,), 3.0)}, state)
    monkeypatch.undo()
    root = tmp_path / "checkpoints"
    steps = sorted(p.name for p in root.glob("step-*"))
    assert steps == ["step-00000002", "step-00000003"]  # step 1 is gone under its name
    for name in steps:
        assert sorted(p.name for p in (root / name).iterdir()) == sorted(FULL), name
    assert [p.name.startswith(".trash-") for p in root.iterdir() if p.is_dir() and p.name not in steps] == [True]
    clean_checkpoints(tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["last.json", "step-00000002", "step-00000003"]


def test_resume_removes_leftovers_then_finishes(run_copy, capsys):
    root = run_copy / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["best", "last.json", "step-00000002", "step-00000004"]
    shutil.copytree(root / "step-00000004", root / "step-00000006")  # newer than last.json
    _touch(root, "step-00000001/model.safetensors")  # an older folder without its train state
    _touch(root, ".trash-k9/step-00000000/model.safetensors")  # a prune the kill interrupted
    _touch(root, "step-00000004/.train_state.pt.t5.tmp")  # a torn write
    (run_copy / "summary.json").unlink()

    assert main(["train", "--resume", str(run_copy), "--no-progress"]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in root.iterdir()) == ["best", "last.json", "step-00000002", "step-00000004"]
    assert sorted(p.name for p in (root / "step-00000004").iterdir()) == sorted(FULL)
    assert json.loads((run_copy / "summary.json").read_text())["steps"] == 4


# last.json contents -> what the message says after "<pointer>: "
BAD_POINTERS = {
    "not JSON": ("{oops", "unreadable checkpoint pointer"),
    "a list": ("[1, 2]", "unreadable checkpoint pointer"),
    "dir not a string": ('{"dir": 5, "step": 5}', "unreadable checkpoint pointer (dir 5 is not a folder name)"),
    "dir outside checkpoints/": ('{"dir": "../../elsewhere", "step": 5}',
                                 "unreadable checkpoint pointer (dir '../../elsewhere' is not a folder name)"),
}


@pytest.mark.parametrize("case", sorted(BAD_POINTERS))
def test_a_bad_last_json_is_one_line_and_removes_nothing(case, run_copy, capsys):
    text, reason = BAD_POINTERS[case]
    pointer = run_copy / "checkpoints" / "last.json"
    pointer.write_text(text)
    _touch(run_copy / "checkpoints", "step-00000009/model.safetensors")  # would be a leftover
    before = sorted(p.relative_to(run_copy) for p in run_copy.rglob("*"))
    code = main(["train", "--resume", str(run_copy), "--no-progress"])
    assert one_error_line(capsys) == f"error: {pointer}: {reason}"
    assert code == 2
    assert sorted(p.relative_to(run_copy) for p in run_copy.rglob("*")) == before


# ----------------------------------------------------------------------------------------------
# a full disk, folders that cannot be written


def test_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_previous(
    tmp_path, tiny_encoder, data_dir, monkeypatch, capsys
):
    run = tmp_path / "run"
    real = ck.atomic_write_file
    writes = {"n": 0}

    def full_disk(path, write):
        if Path(path).name == "train_state.pt":
            writes["n"] += 1
            if writes["n"] == 2:  # the step-4 checkpoint
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, write)

    monkeypatch.setattr(ck, "atomic_write_file", full_disk)
    code = main(train_args(tiny_encoder, data_dir, run))
    line = one_error_line(capsys)
    assert code == 2
    assert line == (
        f"error: {run / 'checkpoints' / 'step-00000004'}: cannot write the checkpoint: No space left on device "
        f"(the disk is full: free space first); the last checkpoint (step-00000002) is intact; then resume with: "
        f"minbert train --resume {run}"
    )
    folder = last_checkpoint(run)
    assert folder.name == "step-00000002"
    assert load_train_state(folder)["loop"]["step"] == 2
    assert load_weights(folder / "model.safetensors")[1] == {"step": 2}

    monkeypatch.undo()  # space freed: the hint's command finishes the run
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert json.loads((run / "summary.json").read_text())["steps"] == 4
    assert load_train_state(last_checkpoint(run))["loop"]["step"] == 4


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_a_full_disk_under_torch_save_raises_the_writes_oserror():
    """torch.save reports a failed write as a RuntimeError without the errno; torch_save_file
    (how train_state.pt is written) raises the write's OSError, which the checkpoint's one-line
    error reads (a full disk: free space first)."""
    from minbert.training.checkpoint import torch_save_file

    for n in (10, 100_000):  # the failure at the file's last flush, and inside torch.save's writes
        with pytest.raises(OSError) as e:
            torch_save_file({"a": torch.zeros(n)}, Path("/dev/full"))
        assert e.value.errno == errno.ENOSPC


def test_atomic_write_file_gives_the_usual_mode_and_leaves_nothing_behind(tmp_path):
    """atomic_write_file: the writer fills a file in a private folder (its own temporary files
    stay there); the result has the mode a plain file gets under the umask; a failed write leaves
    the previous file and no temporary file or folder."""
    from minbert.io import atomic_write_file, safetensors_save_file

    target = tmp_path / "w.bin"
    umask = os.umask(0)
    os.umask(umask)

    def write(tmp: Path) -> None:
        (tmp.parent / ".tmpOwn").write_bytes(b"partial")  # a library's own temporary file
        os.replace(tmp.parent / ".tmpOwn", tmp)

    atomic_write_file(target, write)
    assert target.read_bytes() == b"partial" and (target.stat().st_mode & 0o777) == 0o666 & ~umask

    def failing(tmp: Path) -> None:
        (tmp.parent / ".tmpOwn").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        atomic_write_file(target, failing)
    assert target.read_bytes() == b"partial" and [p.name for p in tmp_path.iterdir()] == ["w.bin"]
    with pytest.raises(OSError) as e:  # safetensors' own error type, with the OS error's number in its message
        safetensors_save_file({"w": torch.ones(2)}, tmp_path, {})
    assert e.value.errno == errno.EISDIR


def _a_file(tmp: Path) -> Path:
    (tmp / "a-file").write_text("not a folder\n")
    return tmp / "a-file"


# case -> (arguments from (run, tmp_path, tiny_encoder, data_dir), the exact message)
OS_ERRORS = {
    "run folder under a file": (
        lambda run, tmp, enc, data: train_args(enc, data, _a_file(tmp) / "run"),
        lambda tmp: f"error: {tmp / 'a-file' / 'run'}: Not a directory (a file stands where a folder is needed)",
    ),
    "run folder is a file": (
        lambda run, tmp, enc, data: train_args(enc, data, _a_file(tmp)),
        lambda tmp: f"error: {tmp / 'a-file'}: is a file, not a run folder",
    ),
    "predict output under a file": (
        lambda run, tmp, enc, data: ["predict", str(run), "--task", "sst", "--input", str(_sentences(tmp)),
                                     "--output", str(_a_file(tmp) / "out.csv"), "--no-progress"],
        lambda tmp: f"error: {tmp / 'a-file'}: File exists (a file stands where a folder is needed)",
    ),
    "predict output is a folder": (
        lambda run, tmp, enc, data: ["predict", str(run), "--task", "sst", "--input", str(_sentences(tmp)),
                                     "--output", str(tmp), "--no-progress"],
        lambda tmp: f"error: --output {tmp}: is a folder; give a file name",
    ),
    "predict output is the input": (
        lambda run, tmp, enc, data: ["predict", str(run), "--task", "sst", "--input", str(_sentences(tmp)),
                                     "--output", f"{tmp}/./in.csv", "--no-progress"],
        lambda tmp: f"error: --output {tmp}/./in.csv: is the --input file; give another file name",
    ),
}


def _sentences(tmp: Path) -> Path:
    (tmp / "in.csv").write_text("id,sentence\n1,a fine film\n2,a dull film\n")
    return tmp / "in.csv"


@pytest.mark.parametrize("case", sorted(OS_ERRORS))
def test_os_errors_of_the_users_folders_are_one_line(case, small_run, tmp_path, tiny_encoder, data_dir, capsys):
    make_args, expected = OS_ERRORS[case]
    code = main(make_args(small_run, tmp_path, tiny_encoder, data_dir))
    assert one_error_line(capsys) == expected(tmp_path)
    assert code == 2


# ----------------------------------------------------------------------------------------------
# non-finite steps have a budget; no prediction holds NaN or inf


@pytest.mark.parametrize(
    "fraction, pattern",
    [
        # the first skipped step of 4 is past 1 %: stopped as nonfinite=stop stops
        ("0.01", (r"error: non-finite loss at step 2 \(epoch 1\), task \w+, batch ids \[.+\]; 1 of 4 steps skipped, "
                  r"more than train\.max_nonfinite_fraction=0\.01; last good checkpoint: none")),
        # every step may be skipped: the broken model's outputs are refused at the prediction files
        ("1.0", (r"error: task sst: the model's outputs are NaN or infinite for 16 of 16 rows \(first: id \w+\); its "
                 r"weights are broken \(a diverged run\?\), so no predictions are written")),
    ],
)
def test_a_diverging_run_with_nonfinite_skip_fails_in_one_line(
    fraction, pattern, tmp_path, tiny_encoder, data_dir, capsys
):
    run = tmp_path / "run"
    args = train_args(tiny_encoder, data_dir, run, "--optim.lr=1e20", "--train.nonfinite=skip",
                      f"--train.max_nonfinite_fraction={fraction}", "--train.checkpoint_every=0")
    code = main(args)
    line = one_error_line(capsys)
    assert code == 2
    assert re.fullmatch(pattern, line), line
    assert not (run / "summary.json").exists()
    assert not (run / "predictions").exists() or not any((run / "predictions").iterdir())


def _nan_weights(run: Path) -> None:
    path = run / "checkpoints" / "best" / "model.safetensors"
    tensors, meta = load_weights(path)
    save_weights(path, {k: v * float("nan") if v.is_floating_point() else v for k, v in tensors.items()}, meta)


# case -> (arguments from (run, tmp), the exact message, the file that must not be written)
NAN_OUTPUTS = {
    "evaluate": (
        lambda run, tmp: ["evaluate", str(run), "--no-progress"],
        ("error: task sst: the model's outputs are NaN or infinite for 16 of 16 rows (first: id {sst_dev_id}); its "
         "weights are broken (a diverged run?), so no predictions are written"),
        "eval.json",
    ),
    "predict --text": (
        lambda run, tmp: ["predict", str(run), "--task", "sts", "--text", "a cat", "a dog"],
        ("error: task sts: the model's outputs are NaN or infinite for 1 of 1 rows (first: row 1); its "
         "weights are broken (a diverged run?), so no predictions are written"),
        None,
    ),
    "predict --input": (
        lambda run, tmp: ["predict", str(run), "--task", "sst", "--input", str(_sentences(tmp)),
                          "--output", str(tmp / "out.csv"), "--no-progress"],
        ("error: task sst: the model's outputs are NaN or infinite for 2 of 2 rows (first: id 1); its "
         "weights are broken (a diverged run?), so no predictions are written"),
        "out.csv",
    ),
}


@pytest.mark.parametrize("case", sorted(NAN_OUTPUTS))
def test_nonfinite_outputs_never_reach_a_prediction_file(case, run_copy, tmp_path, data_dir, capsys):
    from minbert.tasks.base import get_task

    make_args, expected, not_written = NAN_OUTPUTS[case]
    _nan_weights(run_copy)
    before = {p.name: p.read_text() for p in (run_copy / "predictions").iterdir()}
    code = main(make_args(run_copy, tmp_path))
    # the first row of the seeded dev sample the run evaluates on (train.seed 0)
    dev = get_task("sst").read(data_dir / "ids-sst-dev.csv", "dev")
    sst_dev_id = dev.sample(DEV_ROWS, seed=0, stratify=True).ids[0]
    assert one_error_line(capsys) == expected.format(sst_dev_id=sst_dev_id)
    assert code == 2
    assert capsys.readouterr().out == ""
    assert {p.name: p.read_text() for p in (run_copy / "predictions").iterdir()} == before  # the good files stay
    if not_written:
        assert not (run_copy / not_written).exists() and not (tmp_path / not_written).exists()


# ----------------------------------------------------------------------------------------------
# config values, the [serve] extra


@pytest.mark.parametrize(
    "override, message",
    [
        ("--tasks.sst.train_limit=0", "tasks.sst.train_limit must be >= 1 (or null for all rows), got 0"),
        ("--tasks.qqp.dev_limit=-3", "tasks.qqp.dev_limit must be >= 1 (or null for all rows), got -3"),
        ("--train.max_nonfinite_fraction=1.5",
         "train.max_nonfinite_fraction must be in [0, 1] (a fraction of all optimizer steps), got 1.5"),
        ("--train.max_nonfinite_fraction=-0.1",
         "train.max_nonfinite_fraction must be in [0, 1] (a fraction of all optimizer steps), got -0.1"),
        # values that used to pass validation and then crash training with a traceback
        ("--tasks.sst.batch_size=0", "tasks.sst.batch_size must be >= 1, got 0"),
        ("--tasks.qqp.hidden_size=0", "tasks.qqp.hidden_size must be >= 1, got 0"),
        ("--tasks.sts.dropout=-0.5", "tasks.sts.dropout must be in [0, 1), got -0.5"),
        ("--tasks.sst.dropout=1.0", "tasks.sst.dropout must be in [0, 1), got 1.0"),
        ("--tasks.qqp.weight=-1", "tasks.qqp.weight must be a finite number >= 0 (a loss multiplier), got -1.0"),
        ("--model.hidden_dropout_prob=1.5",
         "model.hidden_dropout_prob must be in [0, 1) (or null: the encoder's own), got 1.5"),
        ("--model.attention_probs_dropout_prob=7",
         "model.attention_probs_dropout_prob must be in [0, 1) (or null: the encoder's own), got 7.0"),
        ("--optim.lr=1e38", "optim.lr must be a number in [0, 1e+30] (or null), got 1e+38"),
        ("--optim.head_lr=-1e-3", "optim.head_lr must be a number in [0, 1e+30] (or null), got -0.001"),
        ("--optim.lr=0", None),  # lr 0 is legitimate (an evaluation-only run from init_from)
        ("--optim.warmup_ratio=2.0", "optim.warmup_ratio must be in [0, 1], got 2.0"),
        ("--tasks.sst.batch_size=1", None),
        ("--tasks.sst.dropout=0", None),
        ("--tasks.sst.train_limit=1", None),
        ("--tasks.sst.train_limit=null", None),
        ("--train.max_nonfinite_fraction=0", None),
        ("--train.max_nonfinite_fraction=1", None),
    ],
)
def test_limits_and_fractions_are_validated(override, message):
    if message is None:
        cfg = load_config(None, [override])
        key, value = override[2:].split("=")
        node = cfg
        for part in key.split("."):
            node = node[part] if isinstance(node, dict) else getattr(node, part)
        assert node == (None if value == "null" else float(value) if "fraction" in key else int(value))
        return
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert str(info.value) == message
    with pytest.raises(ConfigError):
        from_dict({"tasks": {"sst": {"train_limit": 0}}})


def test_train_limit_zero_is_one_line_through_the_cli(tmp_path, tiny_encoder, data_dir, capsys):
    code = main(train_args(tiny_encoder, data_dir, tmp_path / "run", "--tasks.sst.train_limit=0"))
    assert one_error_line(capsys) == "error: tasks.sst.train_limit must be >= 1 (or null for all rows), got 0"
    assert code == 2
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("module", ["fastapi", "uvicorn"])
def test_serve_without_the_serve_extra_is_one_line(module, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as when it is not installed
    monkeypatch.delitem(sys.modules, "minbert.inference.server", raising=False)
    code = main(["serve", str(tmp_path / "some-run")])
    assert one_error_line(capsys) == (
        f"error: minbert serve needs the [serve] extra ({module} is not installed): pip install 'minbert[serve]'"
    )
    assert code == 2


def test_resume_trims_a_metrics_log_holding_bytes_that_are_not_utf8(tmp_path, caplog):
    """trim_metrics keeps the bytes up to the checkpoint's size as they are; by steps, it keeps
    the records up to the step and drops (with a warning naming the line) what is not JSON."""
    from minbert.training.reporting import trim_metrics

    lines = [b'{"step": 1, "lr": 0.1}', b'{"step": 2, "note": "caf\xe9"}', b'{"step": 2, "lr": 0.2}',
             b'{"step": 3, "lr": 0.3}']
    data = b"\n".join(lines) + b"\n"
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(data)
    trim_metrics(path, 2, size=len(data) - len(lines[-1]) - 1)
    assert path.read_bytes() == b"\n".join(lines[:3]) + b"\n"
    with caplog.at_level(logging.WARNING, logger="minbert.training.reporting"):
        trim_metrics(path, 2)
    assert path.read_bytes() == lines[0] + b"\n" + lines[2] + b"\n"
    assert [r.getMessage() for r in caplog.records] == [f"{path}:2: not a JSON record, dropped on resume"]
