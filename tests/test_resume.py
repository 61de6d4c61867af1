"""Robustness of training runs: SIGKILL mid-epoch then ``--resume`` gives bit-identical results,
a kill during a checkpoint write leaves the previous checkpoint loadable, a non-finite loss stops
(or skips) cleanly, and an existing run is never overwritten by accident.

CPU, the tiny random encoder of ``conftest.tiny_encoder``, a slice of the real cs224n data.
Every subprocess runs with one intra-op thread so that float results are reproducible.
"""

from __future__ import annotations

import ast
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from minbert.cli import main
from minbert.errors import CheckpointError
from minbert.io import load_weights
from minbert.runs import last_checkpoint
from minbert.tasks.base import get_task
from minbert.training import trainer as trainer_module
from minbert.training.checkpoint import load_train_state

TASKS = ("sst", "qqp", "sts")
N = 64  # train and dev rows per task
BATCH = 8
STEPS_PER_EPOCH = N // BATCH
EPOCHS = 2
# checkpoints at steps 4 (mid-epoch 1), 8 (epoch 1's end, after its dev evaluation), 12 (mid-epoch 2), 16 (end)
EVERY = 4
SLICE = [
    f"--tasks.{t}.{k}={v}" for t in TASKS for k, v in (("train_limit", N), ("dev_limit", N), ("batch_size", BATCH))
]
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def train_args(tiny_encoder: Path, data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return [
        "train",
        f"--data-dir={data_dir}",
        f"--run-dir={run_dir}",
        f"--model.encoder={tiny_encoder}",
        *SLICE,
        f"--train.epochs={EPOCHS}",
        f"--train.checkpoint_every={EVERY}",
        "--train.device=cpu",
        "--train.seed=7",
        "--optim.lr=1e-3",
        "--optim.schedule=linear",
        "--optim.warmup_ratio=0.1",
        "--output.report_to=none",
        "--output.test_predictions=false",
        "--output.plot=false",
        "--no-progress",
        *extra,
    ]


def env(drop_data_env: bool = False) -> dict:
    e = {**os.environ, **ENV}
    if drop_data_env:
        e.pop("MINBERT_DATA_DIR", None)
    return e


def cli(*args: str, cwd: Path, drop_data_env: bool = False, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "minbert", *args],
        cwd=cwd, env=env(drop_data_env), capture_output=True, text=True, timeout=timeout,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    return proc


def pointer(run_dir: Path) -> dict | None:
    """checkpoints/last.json, or None while it does not exist (it is replaced atomically)."""
    try:
        return json.loads((run_dir / "checkpoints" / "last.json").read_text())
    except FileNotFoundError:
        return None


def assert_same_weights(a: Path, b: Path) -> None:
    ta, _ = load_weights(a)
    tb, _ = load_weights(b)
    assert ta.keys() == tb.keys()
    different = [k for k in ta if not torch.equal(ta[k], tb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:5]}"


def assert_same_state(a, b, where: str = "") -> None:
    """Deep equality of nested train states (tensors with torch.equal)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    elif hasattr(a, "shape") and hasattr(a, "dtype"):  # numpy arrays of the RNG state
        assert (a == b).all(), where
    else:
        assert a == b, where


def assert_identical_runs(a: Path, b: Path) -> None:
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    assert sa["dev"] == sb["dev"]
    assert sa["dev_all"] == sb["dev_all"]
    assert (sa["best_epoch"], sa["epochs_run"], sa["steps"]) == (sb["best_epoch"], sb["epochs_run"], sb["steps"])
    best = Path("checkpoints") / "best" / "model.safetensors"
    assert_same_weights(a / best, b / best)
    la, lb = last_checkpoint(a), last_checkpoint(b)
    assert la.name == lb.name
    assert_same_weights(la / "model.safetensors", lb / "model.safetensors")
    sta, stb = load_train_state(la), load_train_state(lb)
    for key in ("optimizer", "scheduler", "streams", "rng"):
        assert_same_state(sta[key], stb[key], key)
    # the metric log of the resumed run is the uninterrupted one, line for line
    assert (a / "metrics.jsonl").read_text() == (b / "metrics.jsonl").read_text()
    for name in ("sst-dev.csv", "qqp-dev.csv", "sts-dev.csv"):
        assert (a / "predictions" / name).read_text() == (b / "predictions" / name).read_text(), name


@pytest.fixture(scope="module")
def run_a(tmp_path_factory, tiny_encoder, data_dir) -> Path:
    """The uninterrupted reference run."""
    work = tmp_path_factory.mktemp("resume-ref")
    cli(*train_args(tiny_encoder, data_dir, work / "a"), cwd=work)
    return work / "a"


# ----------------------------------------------------------------------------------------------


def kill_after_mid_epoch_checkpoint(args: list[str], run_dir: Path, log_path: Path) -> None:
    """Run the CLI with ``args`` in a subprocess (cwd: ``run_dir``'s parent, output to
    ``log_path``) and SIGKILL it once ``run_dir`` has a checkpoint in the middle of an epoch."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "minbert", *args], cwd=run_dir.parent, env=env(),
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 240
            while (p := pointer(run_dir)) is None or not p["step"] % STEPS_PER_EPOCH:
                assert proc.poll() is None, "the run ended before a mid-epoch checkpoint:\n" + log_path.read_text()
                assert time.monotonic() < deadline, "no mid-epoch checkpoint in time"
                time.sleep(0.002)
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(timeout=60) == -signal.SIGKILL
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_sigkill_mid_epoch_then_resume_is_identical(run_a, tmp_path, tiny_encoder, data_dir):
    run_b = tmp_path / "b"
    kill_after_mid_epoch_checkpoint(train_args(tiny_encoder, data_dir, run_b), run_b, tmp_path / "b.log")

    # the killed run: no summary, and its last checkpoint sits in the middle of an epoch
    assert not (run_b / "summary.json").exists()
    folder = last_checkpoint(run_b)
    loop = load_train_state(folder)["loop"]
    assert 0 < loop["micro"] < STEPS_PER_EPOCH, loop
    assert loop["step"] < EPOCHS * STEPS_PER_EPOCH
    # SIGKILL can cut the metric log in the middle of a line (a flush of the file buffer)
    with open(run_b / "metrics.jsonl", "a") as fh:
        fh.write('{"step": 99, "epoch": 2, "lr": 0.00')

    # resume with no --data-dir and no $MINBERT_DATA_DIR: the recorded data folder is used
    out = cli("train", "--resume", str(run_b), "--no-progress", cwd=tmp_path, drop_data_env=True)
    assert "resumed" in out.stderr
    assert_identical_runs(run_a, run_b)


def _run_dying_at_write(tmp_path: Path, args: list[str], file_name: str, nth: int) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess that SIGKILLs itself on the ``nth`` write of ``file_name``,
    half-way: the temporary file holds half of the bytes, as when the kill lands in the middle of
    the write. Both atomic writers are patched: ``atomic_write_bytes`` (JSON files such as
    ``last.json``: a temporary file beside it) and ``atomic_write_file`` (weights and the
    training state: a temporary folder beside it)."""
    script = textwrap.dedent(
        f"""
        import os, signal, sys, tempfile
        from pathlib import Path
        import minbert.io as mio
        import minbert.training.checkpoint as ck

        real_bytes, real_file = mio.atomic_write_bytes, mio.atomic_write_file
        seen = 0

        def nth_write(path):
            global seen
            if Path(path).name == {file_name!r}:
                seen += 1
            return Path(path).name == {file_name!r} and seen == {nth}

        def dying_bytes(path, data):
            if nth_write(path):
                fd, tmp = tempfile.mkstemp(dir=Path(path).parent, prefix=f".{{Path(path).name}}.", suffix=".tmp")
                os.write(fd, data[: len(data) // 2])
                os.fsync(fd)
                os.kill(os.getpid(), signal.SIGKILL)
            return real_bytes(path, data)

        def dying_file(path, write):
            if nth_write(path):
                folder = tempfile.mkdtemp(dir=Path(path).parent, prefix=f".{{Path(path).name}}.", suffix=".tmp")
                tmp = Path(folder) / Path(path).name
                write(tmp)
                os.truncate(tmp, os.path.getsize(tmp) // 2)
                os.kill(os.getpid(), signal.SIGKILL)
            return real_file(path, write)

        mio.atomic_write_bytes = dying_bytes  # atomic_write_json and _text write through it
        mio.atomic_write_file = dying_file  # save_weights writes through it
        ck.atomic_write_file = dying_file
        from minbert.cli import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    return subprocess.run(
        [sys.executable, "-c", script, *args], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize(
    "file_name, nth, expect_step, expect_loop",
    [
        # train states are written at steps 4 (mid-epoch), 8 (end of epoch 1, after the dev
        # evaluation), 12, ...: a kill inside the 3rd leaves the end-of-epoch-1 checkpoint
        ("train_state.pt", 3, 8, {"epoch": 1, "micro": 0}),
        # the 2nd pointer write (step 8): the step-4 checkpoint stays the last one
        ("last.json", 2, 4, {"epoch": 0, "micro": 4}),
    ],
)
def test_kill_during_checkpoint_write_keeps_previous_checkpoint(
    file_name, nth, expect_step, expect_loop, run_a, tmp_path, tiny_encoder, data_dir
):
    run = tmp_path / "run"
    proc = _run_dying_at_write(tmp_path, train_args(tiny_encoder, data_dir, run), file_name, nth)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert not (run / "summary.json").exists()

    # last.json names the previous complete checkpoint, which loads
    assert pointer(run) == {"dir": f"step-{expect_step:08d}", "step": expect_step}
    folder = last_checkpoint(run)
    assert folder.name == f"step-{expect_step:08d}"
    tensors, meta = load_weights(folder / "model.safetensors")
    assert meta == {"step": expect_step} and tensors
    loop = load_train_state(folder)["loop"]
    assert {k: loop[k] for k in expect_loop} == expect_loop and loop["step"] == expect_step
    # the torn write left its temp file behind; loading ignores it
    leftovers = list((run / "checkpoints").rglob(f".{file_name}.*.tmp"))
    assert len(leftovers) == 1, sorted((run / "checkpoints").rglob("*"))

    from minbert.inference.predictor import load

    pred = load(run, device="cpu")
    assert len(pred.sentiment(["a fine film"])) == 1

    if file_name == "train_state.pt":
        # --resume finishes the run, identical to the uninterrupted one (metric log included)
        cli("train", "--resume", str(run), "--no-progress", cwd=tmp_path)
        assert_identical_runs(run_a, run)


# ----------------------------------------------------------------------------------------------
# non-finite losses (in-process, a task loss patched to return NaN once)


def _nan_on_call(monkeypatch, task_name: str, n: int) -> None:
    task = get_task(task_name)
    real = task.loss
    calls = {"n": 0}

    def loss(output, labels):
        calls["n"] += 1
        value = real(output, labels)
        return value * float("nan") if calls["n"] == n else value

    monkeypatch.setattr(task, "loss", loss)


def _small_args(tiny_encoder, data_dir, run_dir, *extra):
    small = [f"--tasks.{t}.train_limit=32" for t in TASKS] + ["--train.epochs=1", "--train.checkpoint_every=2"]
    return train_args(tiny_encoder, data_dir, run_dir, *small, *extra)


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(monkeypatch, tmp_path, tiny_encoder, data_dir, capsys):
    run = tmp_path / "run"
    _nan_on_call(monkeypatch, "sts", 3)  # step 3; checkpoint at step 2
    slow = trainer_module.write_checkpoint

    def write_slowly(*args, **kwargs):  # the background write of step 2 ends after step 3 failed
        time.sleep(1.0)
        return slow(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "write_checkpoint", write_slowly)
    code = main(_small_args(tiny_encoder, data_dir, run))
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1, err
    msg = err[0]
    assert msg.startswith("error: non-finite loss at step 3 (epoch 1), task sts, batch ids ['"), msg
    ids = ast.literal_eval(msg.split("batch ids ", 1)[1].split("]", 1)[0] + "]")
    # the seeded train sample of 32 rows (train.seed of train_args)
    seed = int(next(a.split("=")[1] for a in _small_args(tiny_encoder, data_dir, run) if a.startswith("--train.seed=")))
    sts_train = get_task("sts").read(data_dir / "sts-train.csv", "train").sample(32, seed=seed).ids
    assert ids and set(ids) <= set(sts_train)
    assert f"last good checkpoint: {run / 'checkpoints' / 'step-00000002'}" in msg
    folder = last_checkpoint(run)
    assert folder.name == "step-00000002"
    tensors, _ = load_weights(folder / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())
    assert load_train_state(folder)["loop"]["step"] == 2
    assert not (run / "summary.json").exists()


def test_a_failed_best_write_drops_the_checkpoint_queued_behind_it(
    monkeypatch, tmp_path, tiny_encoder, data_dir, capsys
):
    import errno

    import minbert.training.checkpoint as checkpoint_module

    write = checkpoint_module.save_weights

    def full_disk(path, *args, **kwargs):  # the epoch-end best weights fail, after a while
        if Path(path).parent.name != "best":
            return write(path, *args, **kwargs)
        time.sleep(0.5)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_module, "save_weights", full_disk)
    run = tmp_path / "run"
    assert main(_small_args(tiny_encoder, data_dir, run)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    best = run / "checkpoints" / "best" / "model.safetensors"
    assert len(err) == 1 and err[0].startswith(f"error: {best}: cannot write the best weights: No space left"), err
    assert err[0].endswith(f"the last checkpoint (step-00000002) is intact; then resume with: "
                           f"minbert train --resume {run}")
    time.sleep(1.0)  # nothing is still being written after main returned
    folder = last_checkpoint(run)  # step 2's (checkpoint_every=2), not the epoch end's, which names best weights
    assert folder.name == "step-00000002"
    assert load_train_state(folder)["loop"]["best_epoch"] is None
    assert not best.exists()


def test_nonfinite_loss_skip_continues_and_logs(monkeypatch, tmp_path, tiny_encoder, data_dir, capsys, caplog):
    run = tmp_path / "run"
    _nan_on_call(monkeypatch, "sts", 3)
    with caplog.at_level("WARNING", logger="minbert"):
        code = main(
            _small_args(tiny_encoder, data_dir, run, "--train.nonfinite=skip", "--train.max_nonfinite_fraction=0.25")
        )
    assert code == 0, capsys.readouterr().err
    warnings = [r.getMessage() for r in caplog.records if "skipping this batch" in r.getMessage()]
    assert len(warnings) == 1 and "non-finite loss at step 3 (epoch 1), task sts" in warnings[0]
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    skipped = [r for r in records if "skipped" in r]
    assert len(skipped) == 1 and skipped[0]["skipped"] == "task sts" and skipped[0]["step"] == 2 and skipped[0]["ids"]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 32 // BATCH - 1  # one of the 4 steps skipped
    steps = [r["step"] for r in records if "lr" in r]
    assert steps == [1, 2, 3]
    assert "skipping this batch" in (run / "train.log").read_text()
    tensors, _ = load_weights(run / "checkpoints" / "best" / "model.safetensors")
    assert all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


# ----------------------------------------------------------------------------------------------


def _snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.rglob("*") if p.is_file()}


def test_existing_run_is_not_overwritten(run_a, tiny_encoder, data_dir):
    import minbert
    from minbert.config import load_config

    before = _snapshot(run_a)
    cfg = load_config(None, train_args(tiny_encoder, data_dir, run_a)[3:-1])  # the config overrides only
    with pytest.raises(CheckpointError, match="already holds a run; pass --overwrite"):
        minbert.train(cfg, run_dir=run_a, data_dir=data_dir, progress=False)
    assert main(train_args(tiny_encoder, data_dir, run_a)) == 2
    assert _snapshot(run_a) == before


@pytest.mark.skipif(sys.platform == "win32", reason="the run-folder lock is POSIX flock")
def test_a_run_folder_that_another_process_trains_in_is_refused(run_a, tmp_path, tiny_encoder, data_dir, capsys):
    """While a process holds the run folder's lock (as a training run does for its whole life),
    resume and overwrite are refused in one line and change nothing; once it is released, the
    lock is free again."""
    import shutil

    from minbert.training.setup import lock_run_dir

    run = tmp_path / "copy"
    shutil.copytree(run_a, run)
    before = _snapshot(run)
    held = lock_run_dir(run)  # another open file description: flock conflicts as with another process
    try:
        for extra in (["--resume", str(run)], train_args(tiny_encoder, data_dir, run, "--overwrite")):
            args = ["train", *extra, "--no-progress"] if extra[0] == "--resume" else extra
            assert main(args) == 2
            assert capsys.readouterr().err.strip().splitlines()[-1] == (
                f"error: {run}: another minbert process is training in this run folder; wait for it to end "
                "(or stop it) first")
        assert _snapshot(run) == before
    finally:
        held.close()
    lock_run_dir(run).close()  # free again


def test_overwrite_replaces_the_run(run_a, tmp_path, tiny_encoder, data_dir):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(run_a, run)
    (run / "checkpoints" / "step-00000099").mkdir()  # stale state of the old run
    for name in ("qqp-calibration.png", "curves.png", "my-notes.png"):  # the old run's plots; the user's own file
        (run / name).write_bytes(b"old")
    assert main(_small_args(tiny_encoder, data_dir, run, "--overwrite")) == 0  # with output.plot=false
    assert not (run / "qqp-calibration.png").exists() and not (run / "curves.png").exists()
    assert (run / "my-notes.png").read_bytes() == b"old"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["config"]["tasks"]["sst"]["train_limit"] == 32 and summary["steps"] == 4
    assert not (run / "checkpoints" / "step-00000099").exists()
    records = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 4  # no lines of the old run


# ----------------------------------------------------------------------------------------------
# SIGINT / SIGTERM: a checkpoint at the current optimizer step, exit 128 + signal, resume exact


def _run_signalled_at_step(tmp_path: Path, args: list[str], sig: int, step: int) -> subprocess.CompletedProcess:
    """Run the CLI in a subprocess that sends itself ``sig`` while training optimizer step
    ``step`` (1-based): at the first batch draw of that step (one draw per task per step, the
    parallel routine)."""
    script = textwrap.dedent(
        f"""
        import os, sys
        from minbert.data.batching import TaskStream

        real = TaskStream.next
        draws = 0

        def next_batch(self):
            global draws
            draws += 1
            if draws == {len(TASKS) * (step - 1) + 1}:
                os.kill(os.getpid(), {int(sig)})
            return real(self)

        TaskStream.next = next_batch
        from minbert.cli import main
        sys.exit(main(sys.argv[1:]))
        """
    )
    return subprocess.run(
        [sys.executable, "-c", script, *args], cwd=tmp_path, env=env(), capture_output=True, text=True, timeout=300,
        check=False,
    )


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_writes_a_checkpoint_and_resume_is_identical(sig, code, run_a, tmp_path, tiny_encoder, data_dir):
    # checkpoint_every 0: without the interrupt's checkpoint there would be none mid-epoch
    args = train_args(tiny_encoder, data_dir, Path("b"), "--train.checkpoint_every=0")
    proc = _run_signalled_at_step(tmp_path, args, sig, step=3)
    assert proc.returncode == code, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    run = tmp_path / "b"
    last_line = proc.stderr.strip().splitlines()[-1]
    assert last_line == (
        f"interrupted ({signal.Signals(sig).name}); saved checkpoint: {Path('b') / 'checkpoints' / 'step-00000003'}; "
        "resume with: minbert train --resume b"
    ), proc.stderr[-3000:]
    assert [ln for ln in proc.stderr.splitlines() if "--resume" in ln] == [last_line]
    # the step in progress finished, then the checkpoint was written at it
    assert not (run / "summary.json").exists()
    folder = last_checkpoint(run)
    assert folder.name == "step-00000003"
    loop = load_train_state(folder)["loop"]
    assert (loop["epoch"], loop["micro"], loop["step"]) == (0, 3, 3)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.json", "step-00000003"]

    # the hint's command finishes the run, identical to the uninterrupted one
    cli("train", "--resume", "b", "--no-progress", cwd=tmp_path)
    assert_identical_runs(run_a, run)


def test_background_writer_keeps_order_bounds_its_queue_and_reraises_in_the_caller(caplog):
    import threading

    from minbert.training.checkpoint import BackgroundWriter, host_snapshot

    done, gate = [], threading.Event()
    writer = BackgroundWriter(max_pending=2)
    writer.submit(lambda: (gate.wait(5), done.append(1)))
    writer.submit(done.append, 2)
    assert done == []  # both queued behind the gate
    threading.Timer(0.2, gate.set).start()
    writer.submit(done.append, 3)  # a third waits for the oldest
    assert done[:1] == [1]
    writer.wait()
    assert done == [1, 2, 3]

    # a Ctrl-C while waiting leaves the write queued: the next wait still waits for it (with
    # Python's own SIGINT handler: a shell's background job inherits SIGINT ignored)
    gate.clear()
    writer.submit(lambda: (gate.wait(5), done.append(4)))
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Timer(0.2, signal.pthread_kill, (threading.main_thread().ident, signal.SIGINT)).start()
        with pytest.raises(KeyboardInterrupt):
            writer.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    assert done == [1, 2, 3]
    gate.set()
    writer.wait()
    assert done == [1, 2, 3, 4]

    def fail():
        gate.wait(5)
        raise CheckpointError("disk full")

    gate.clear()
    writer.submit(fail)
    writer.submit(done.append, 5)  # queued behind the failing write: dropped, never run
    gate.set()
    with pytest.raises(CheckpointError, match="disk full"):
        writer.wait()
    assert done == [1, 2, 3, 4]
    with pytest.raises(CheckpointError, match="disk full"):  # a failed writer stays failed
        writer.submit(done.append, 6)
    writer.wait(raise_error=False)  # already reported: no second log line
    assert done == [1, 2, 3, 4]

    late = BackgroundWriter()
    late.submit(fail)
    while not late._pending[-1].done():  # the failure, unreported yet
        time.sleep(0.01)
    with pytest.raises(CheckpointError, match="disk full"):  # reported by the next submit
        late.submit(done.append, 7)
    late2 = BackgroundWriter()
    late2.submit(fail)
    with caplog.at_level(logging.WARNING, logger="minbert"):
        late2.wait(raise_error=False)  # on the way out of another error: logged, not raised
    assert [r.getMessage() for r in caplog.records] == ["a checkpoint write failed: disk full"]
    assert done == [1, 2, 3, 4]

    lin = torch.nn.Linear(2, 1)
    weights = host_snapshot(lin.state_dict())  # an OrderedDict of the live parameters
    with torch.no_grad():
        lin.weight.add_(1)
    assert not torch.equal(weights["weight"], lin.weight)
    state = {"w": torch.ones(2), "opt": [torch.zeros(1), {"step": 3}]}
    snap = host_snapshot(state)
    state["w"].add_(1)
    state["opt"][0].add_(1)
    state["opt"][1]["step"] = 4
    assert snap["w"].tolist() == [1.0, 1.0] and snap["opt"][0].item() == 0 and snap["opt"][1]["step"] == 3


def test_writer_snapshots_reuse_buffers_only_once_their_write_has_finished():
    """BackgroundWriter.snapshot: a queued write keeps the values of its own snapshot while later
    snapshots are taken (they get other buffers); once that write has finished, the next snapshot
    of the same layout copies into its buffers; another layout gets its own."""
    import threading

    from minbert.training.checkpoint import BackgroundWriter, snapshot_layout

    state = {"w": torch.arange(6.0).view(2, 3), "opt": [torch.zeros(4, dtype=torch.float64), {"step": 1}]}
    writer, gate, seen = BackgroundWriter(), threading.Event(), []

    def write(snap):
        gate.wait(5)
        seen.append((snap["w"].clone(), snap["opt"][0].clone(), snap["opt"][1]["step"]))

    first = writer.snapshot(state)
    writer.submit(write, first)
    state["w"].add_(10)
    state["opt"][0].fill_(2)
    state["opt"][1]["step"] = 2
    second = writer.snapshot(state)  # the first write is still queued: new buffers
    assert second["w"].data_ptr() != first["w"].data_ptr()
    writer.submit(write, second)
    gate.set()
    writer.wait()
    assert seen[0][0].tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]] and seen[0][1].tolist() == [0.0] * 4
    assert seen[0][2] == 1 and seen[1][2] == 2 and seen[1][0][0, 0].item() == 10.0
    state["w"].add_(10)
    third = writer.snapshot(state)  # both writes done: a set of theirs is reused
    assert third["w"].data_ptr() in (first["w"].data_ptr(), second["w"].data_ptr())
    assert third["w"].tolist() == (torch.arange(6.0).view(2, 3) + 20).tolist() and third["opt"][1]["step"] == 2
    assert third["w"] is not state["w"] and third["opt"][0].dtype == torch.float64
    other = writer.snapshot({"w": torch.ones(3)})  # another layout: its own buffers
    assert other["w"].data_ptr() not in (first["w"].data_ptr(), second["w"].data_ptr())
    assert snapshot_layout(state) == (((2, 3), torch.float32, False), ((4,), torch.float64, False))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_writer_snapshot_of_gpu_tensors_reuses_pinned_buffers():
    from minbert.training.checkpoint import BackgroundWriter

    state = {"a": torch.randn(1000, device="cuda"), "b": torch.arange(7, device="cuda")}
    writer = BackgroundWriter()
    snap = writer.snapshot(state)
    writer.submit(lambda s: None, snap)
    writer.wait()
    state["a"].mul_(2)
    again = writer.snapshot(state)
    assert again["a"].is_pinned() and again["a"].data_ptr() == snap["a"].data_ptr()
    assert torch.equal(again["a"], state["a"].cpu()) and torch.equal(again["b"], state["b"].cpu())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_host_snapshot_of_gpu_tensors_is_a_finished_pinned_copy():
    """GPU tensors are copied without blocking into pinned memory and the snapshot waits once:
    every copy holds the values the tensors had when it was taken, including a non-contiguous
    view, however the originals change afterwards on the GPU."""
    from minbert.training.checkpoint import host_snapshot

    big = torch.arange(4_000_000, dtype=torch.float32, device="cuda")
    state = {"big": big, "t": big[:6].view(2, 3).t(), "step": torch.tensor(7, device="cuda"), "n": 3}
    want = {k: v.cpu() for k, v in state.items() if isinstance(v, torch.Tensor)}
    snap = host_snapshot(state)
    big.mul_(-1)  # queued after the copies: must not reach them
    for k, v in want.items():
        assert snap[k].device.type == "cpu" and snap[k].is_pinned() and torch.equal(snap[k], v), k
    assert snap["n"] == 3
