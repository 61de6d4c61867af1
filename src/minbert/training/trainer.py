"""Multi-task training, top to bottom: plain functions, ``logging``, explicit seeds.

Routines (the reference design's two):

* ``parallel``: every optimizer step sums one batch of every task,
  L = sum_t w_t L_t; smaller datasets are cycled; an epoch is as many steps as the largest
  dataset has batches.
* ``sequential``: within each epoch, all batches of one task, then the next.

Losses: cross-entropy (SST), binary cross-entropy with logits (QQP), MSE (STS), each times its
``tasks.<name>.weight``.

A run is resumable: checkpoints hold the model, optimizer, lr schedule, every RNG state and each
task stream's position, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import __version__
from ..config import Config, dump_yaml, load_config, resolve, to_dict
from ..data.batching import (
    TaskStream,
    resolve_data_dir,
    sha256_file,
)
from ..data.tokenizer import Tokenizer
from ..distributed import (
    DistContext,
    all_gather_objects,
    all_reduce_mean,
    barrier,
    broadcast_tensors,
    init_distributed,
    resolve_device,
    shard,
)
from ..errors import CheckpointError, ConfigError, NonFiniteLossError, TrainingInterrupted
from ..inference.evaluate import (
    EvalResult,
    autocast_context,
    evaluate,
    move,
    write_run_predictions,
)
from ..inference.model_card import write_model_card
from ..io import atomic_write_json, atomic_write_text, save_weights
from ..model.bert import resolve_encoder_path
from ..model.multitask import MultitaskModel, build_model
from ..runs import CONFIG_FILE, check_file_weights, copy_encoder_files, last_checkpoint
from ..tasks.base import Task
from ..tasks.splits import load_splits
from ..tasks.table import task_table
from .checkpoint import clean_checkpoints, load_train_state, save_checkpoint
from .cudagraph import GraphedSteps
from .optim import build_optimizer, build_scheduler, param_groups
from .plots import plot_curves
from .regularize import smart_loss, symmetric_divergence
from .surgical import freeze_layers, init_from_run

log = logging.getLogger(__name__)


@dataclass
class Run:
    """What :func:`train` returns: the run folder and its summary (also in ``summary.json``)."""

    run_dir: Path
    summary: dict


# ----------------------------------------------------------------------------------------------
# setup


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every RNG state of this process as tensors and plain lists (what a checkpoint holds; it
    loads with ``torch.load(weights_only=True)``): ``python`` [version, [625 ints], gauss or None],
    ``numpy`` {name, keys (624,) int64 tensor of the uint32 key, pos, has_gauss, cached_gaussian},
    ``torch`` uint8 tensor, ``cuda`` list of uint8 tensors (one per device, when CUDA is there)."""
    version, internal, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the states :func:`rng_state` returned."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def provenance(cfg: Config, data_dir: Path, tasks: dict[str, Task]) -> dict:
    def git_sha() -> str | None:
        try:
            return subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
            ).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            return None

    import tokenizers

    files = sorted({f for t in cfg.tasks for f in tasks[t].files.values()})
    return {
        "minbert": __version__,
        "git_sha": git_sha(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
        "cuda_device": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "data_dir": str(data_dir.resolve()),
        "data_sha256": {f: sha256_file(data_dir / f) for f in files if (data_dir / f).is_file()},
        "command": sys.argv,
    }


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to overwrite an existing run without ``overwrite``; check a resume target and
    remove what a killed run left in its ``checkpoints/`` (see :func:`clean_checkpoints`)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: is a file, not a run folder")
    has_run = (run_dir / CONFIG_FILE).is_file()
    if resume:
        if not has_run:
            raise CheckpointError(f"{run_dir}: cannot resume, not a minbert run folder (no {CONFIG_FILE})")
        removed = clean_checkpoints(run_dir)
        if removed:
            log.info("removed what an interrupted run left in %s: %s", run_dir / "checkpoints", ", ".join(removed))
        return
    if has_run and not overwrite:
        raise CheckpointError(f"{run_dir}: already holds a run; pass --overwrite to replace it or --resume to continue it")
    if has_run and overwrite:
        import shutil

        for sub in ("checkpoints", "predictions", "tensorboard"):
            shutil.rmtree(run_dir / sub, ignore_errors=True)
        for f in ("metrics.jsonl", "summary.json", "curves.png", "train.log"):
            (run_dir / f).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)


def add_file_logging(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("minbert").addHandler(handler)
    return handler


# ----------------------------------------------------------------------------------------------
# the step


def task_probabilities(sizes: dict[str, int], schedule: str, epoch: int, epochs: int) -> dict[str, float]:
    """Sampling probability of each task for the ``sampled`` routine (Stickland & Murray 2019,
    "BERT and PALs", section 4): ``proportional`` p_t ∝ N_t, ``sqrt`` p_t ∝ sqrt(N_t),
    ``annealed`` p_t ∝ N_t^alpha with alpha = 1 - 0.8 (e - 1) / (E - 1) for epoch e of E (from
    proportional towards uniform), ``round_robin`` uniform (and drawn in turn, not at random).
    ``sizes`` are batches per pass over each task's data."""
    n = np.array([sizes[t] for t in sizes], dtype=np.float64)
    if schedule == "proportional":
        w = n
    elif schedule == "sqrt":
        w = np.sqrt(n)
    elif schedule == "annealed":
        w = n ** (1.0 - 0.8 * epoch / max(1, epochs - 1))
    elif schedule == "round_robin":
        w = np.ones_like(n)
    else:
        raise ConfigError(f"train.sampling {schedule!r} is not one of ['round_robin', 'proportional', 'sqrt', 'annealed']")
    return dict(zip(sizes, (w / w.sum()).tolist()))


def epoch_schedule(cfg: Config, streams: dict[str, TaskStream], epoch: int = 0) -> list[tuple[str, ...]]:
    """The tasks trained at each micro-step of one epoch: a pure function of (config, epoch).

    ``parallel``: every task at every step, as many steps as the largest task has batches;
    ``sequential``: all batches of one task, then the next; ``sampled``: one task per step,
    drawn by ``train.sampling``, as many steps as all tasks have batches together."""
    names = list(streams)
    if cfg.train.routine == "parallel":
        return [tuple(names)] * max(len(s) for s in streams.values())
    if cfg.train.routine == "sequential":
        return [(n,) for n in names for _ in range(len(streams[n]))]
    total = sum(len(s) for s in streams.values())
    if cfg.train.sampling == "round_robin":
        return [(names[i % len(names)],) for i in range(total)]
    p = task_probabilities({n: len(streams[n]) for n in names}, cfg.train.sampling, epoch, cfg.train.epochs)
    rng = np.random.default_rng([cfg.train.seed, epoch, 7])
    draws = rng.choice(len(names), size=total, p=[p[n] for n in names])
    return [(names[i],) for i in draws]


def pcgrad_(task_grads: list[list[torch.Tensor | None]], seed: int) -> list[torch.Tensor | None]:
    """PCGrad (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning", Algorithm 1): for
    each task i, for the other tasks j in random order, if g_i . g_j < 0 remove from g_i its
    component along g_j: g_i -= (g_i . g_j) / |g_j|^2 g_j (with the original g_j). Returns the sum
    of the projected gradients, per parameter. ``task_grads[i][k]`` is task i's gradient of
    parameter k (None if it does not reach it)."""
    n_tasks, n_params = len(task_grads), len(task_grads[0])
    device = next((g.device for grads in task_grads for g in grads if g is not None), torch.device("cpu"))
    flat = []
    for grads in task_grads:
        parts = []
        for k in range(n_params):
            g = grads[k]
            ref = next(tg[k] for tg in task_grads if tg[k] is not None) if any(tg[k] is not None for tg in task_grads) else None
            parts.append((g if g is not None else torch.zeros_like(ref)).reshape(-1) if ref is not None else torch.zeros(0, device=device))
        flat.append(torch.cat(parts))
    rng = np.random.default_rng(seed)
    projected = []
    for i in range(n_tasks):
        g = flat[i].clone()
        for j in rng.permutation(n_tasks):
            if j == i:
                continue
            dot = torch.dot(g, flat[j])
            if dot < 0:
                g -= dot / flat[j].pow(2).sum().clamp_min(1e-20) * flat[j]
        projected.append(g)
    total = torch.stack(projected).sum(0)
    out, offset = [], 0
    for k in range(n_params):
        ref = next((tg[k] for tg in task_grads if tg[k] is not None), None)
        if ref is None:
            out.append(None)
            continue
        out.append(total[offset : offset + ref.numel()].view_as(ref))
        offset += ref.numel()
    return out


class StepLosses(NamedTuple):
    """total: () the weighted sum sum_t w_t L_t; per_task: (n_tasks,) the weighted losses w_t L_t
    (both keep their autograd graph)."""

    total: torch.Tensor
    per_task: torch.Tensor


class TrainStep(nn.Module):
    """Every task's forward pass and loss of one micro-step, in one ``forward`` call: the unit
    that ``DistributedDataParallel`` wraps, so one backward all-reduces the gradients of all
    tasks of the step together.

    Per task t: L_t is the task loss (with R-Drop, the mean over two dropout passes plus
    ``rdrop_alpha`` x their divergence; with SMART, plus ``smart_weight`` x the adversarial
    divergence; see :mod:`minbert.regularize`). The total is sum_t w_t L_t, or with uncertainty
    weighting sum_t exp(-s_t) w_t L_t + s_t (Kendall et al. 2018, Eq. 7 in the form of their
    code: s_t = log sigma_t^2)."""

    def __init__(self, model: MultitaskModel, tasks: dict[str, Task], weights: dict[str, float], device, amp: bool, tc=None):
        super().__init__()
        self.model, self.tasks, self.weights, self.device, self.amp = model, tasks, weights, device, amp
        self.tc = tc

    def task_loss(self, name: str, batch: dict) -> torch.Tensor:
        task, tc = self.tasks[name], self.tc
        with autocast_context(self.device, self.amp):
            out = self.model(name, batch)
            loss = task.loss(out, batch["labels"])
            if tc is not None and tc.rdrop_alpha:
                out2 = self.model(name, batch)
                loss = (loss + task.loss(out2, batch["labels"])) / 2
                loss = loss + tc.rdrop_alpha * symmetric_divergence(task.kind, out, out2)
            if tc is not None and tc.smart_weight:
                reg = smart_loss(self.model, name, task.kind, batch, out, tc.smart_sigma, tc.smart_eta, tc.smart_eps)
                loss = loss + tc.smart_weight * reg
        return loss

    def forward(self, batches: dict[str, dict]) -> StepLosses:
        total, losses = 0.0, []
        log_vars = self.model.loss_log_vars
        for name, batch in batches.items():
            loss = self.weights[name] * self.task_loss(name, batch)
            losses.append(loss)
            if log_vars is not None:
                s = log_vars[name]
                total = total + torch.exp(-s) * loss + s
            else:
                total = total + loss
        return StepLosses(total, torch.stack(losses))


def use_cuda_graphs(tc, device: torch.device, ctx: DistContext, compiled: bool) -> bool:
    """Resolve ``train.cuda_graphs``: ``auto`` is on for CUDA training without ``compile``,
    PCGrad and (under torchrun) ``train.grad_sync=ddp``.

    Raises:
        ConfigError: ``on`` with CPU, compile, PCGrad or DDP gradient sync.
    """
    blockers = [
        why
        for why, hit in (
            ("a CUDA device", device.type != "cuda"),
            ("train.grad_sync=flat or auto under torchrun (DDP's hooks cannot run in a graph)", ctx.enabled and tc.grad_sync == "ddp"),
            ("train.compile=off", compiled),
            ("train.pcgrad=false (it needs per-task gradients)", tc.pcgrad),
        )
        if hit
    ]
    if tc.cuda_graphs == "on" and blockers:
        raise ConfigError(f"train.cuda_graphs=on needs {', '.join(blockers)}; use auto or off")
    return tc.cuda_graphs == "on" or (tc.cuda_graphs == "auto" and not blockers)


def use_flat_sync(tc, ctx: DistContext, graphs: bool) -> bool:
    """Resolve ``train.grad_sync`` for a torchrun job: one all-reduce of the flat gradient
    buffer (``flat``, and ``auto`` with CUDA graphs) instead of DDP. False in one process."""
    return ctx.enabled and (tc.grad_sync == "flat" or (tc.grad_sync == "auto" and graphs))


def _task_step(step_fn: nn.Module, name: str):
    """One task's micro-step as ``GraphedSteps`` wants it: batch -> (loss, per-task loss)."""

    def fn(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        out = step_fn({name: batch})
        return out.total, out.per_task.detach()

    return fn


def _nonfinite(names: list[str], values: list[float]) -> tuple[str, int] | None:
    """For one step's (per-task losses..., gradient norm): what is not finite, and the index of
    the task whose batch ids to report; None when all values are finite."""
    bad = [i for i, v in enumerate(values[:-1]) if not math.isfinite(v)]
    if bad:
        return f"task {names[bad[0]]}", bad[0]
    if not math.isfinite(values[-1]):
        return "gradient (all tasks' sum)", 0
    return None


def _append_jsonl(fh, record: dict) -> None:
    fh.write(json.dumps(record) + "\n")


def _trim_metrics(path: Path, step: int, size: int | None = None) -> None:
    """On resume: drop metric lines written after the checkpoint we resume from: cut the file to
    ``size``, its length when the checkpoint was taken; for checkpoints that lack it, keep the
    whole lines up to ``step`` (a torn last line is a process killed in a buffer flush)."""
    if not path.is_file():
        return
    if size is not None:
        atomic_write_text(path, path.read_bytes()[:size].decode("utf-8"))
        return
    kept = []
    for ln in path.read_text().splitlines():
        try:
            rec = json.loads(ln) if ln.strip() else None
        except json.JSONDecodeError:
            continue  # written after the checkpoint (lines are flushed before each checkpoint)
        if rec is not None and rec.get("step", 0) <= step:
            kept.append(ln)
    atomic_write_text(path, "".join(ln + "\n" for ln in kept))


class StopRequest:
    """SIGINT/SIGTERM handler of the training loop: it only records the signal; the loop then
    writes a checkpoint at the current optimizer step (between steps) and raises
    :class:`TrainingInterrupted`. A second signal raises ``KeyboardInterrupt`` at once.

    Installed only in a single process (``enabled``) and from the main thread. Under torchrun
    it is not installed: a checkpoint is collective, and ranks that see a signal at different
    steps would hang in it; there SIGINT ends the process at once and a resume continues from
    the last checkpoint of ``train.checkpoint_every`` or of an epoch end."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, enabled: bool):
        self.signum: int | None = None
        self.previous: dict = {}
        if enabled and threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self) for s in self.SIGNALS}

    def __call__(self, signum: int, frame) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning("%s received: stopping after this optimizer step (again to stop at once)", signal.Signals(signum).name)

    def restore(self) -> None:
        for s, handler in self.previous.items():
            signal.signal(s, handler)
        self.previous = {}


def interrupted(run_dir: Path, signum: int, saved: bool, distributed: bool = False) -> TrainingInterrupted:
    """The exception that ends an interrupted run, its one-line message naming the checkpoint a
    resume continues from (``saved``: just written by the interrupt; ``distributed``: a torchrun
    process, which writes none on an interrupt) and the resume command."""
    name = signal.Signals(signum).name
    if distributed:
        name += ", torchrun: no checkpoint on interrupt, only every train.checkpoint_every steps and at epoch ends"
    try:
        folder = last_checkpoint(run_dir, check_files=False)
    except CheckpointError:
        folder = None
    if folder is None:
        return TrainingInterrupted(
            f"interrupted ({name}) before the first checkpoint, nothing to resume; train again with --overwrite "
            f"--run-dir {run_dir}", signum
        )
    what = "saved checkpoint" if saved else "last checkpoint"
    return TrainingInterrupted(f"interrupted ({name}); {what}: {folder}; resume with: minbert train --resume {run_dir}", signum)


# ----------------------------------------------------------------------------------------------


def train(
    cfg: Config | str | Path,
    run_dir: str | Path | None = None,
    data_dir: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    t_start: float | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None,
    allow_data_change: bool = False,
) -> Run:
    """Train and evaluate a multi-task model; returns the :class:`Run`.

    Args:
        cfg: a :class:`Config` or the path of a YAML config.
        run_dir: the run folder (default: ``output.dir``, else ``runs/<name>``).
        data_dir: the cs224n data folder (else ``data.dir``, else ``$MINBERT_DATA_DIR``). With
            ``resume``: else the folder the run recorded, whose files must still match the
            recorded SHA-256 sums (:func:`minbert.runs.resolve_run_data_dir`).
        resume: continue the run in ``run_dir`` from its last checkpoint (its saved config is used).
        overwrite: replace an existing run in ``run_dir``.
        t_start: wall-clock start for ``summary.json``'s ``wall_s`` (default: now).
        on_epoch_end: called as ``f(epoch, dev)`` after each epoch's dev evaluation (``dev`` the
            flat metrics); an exception it raises ends training (``minbert tune`` prunes so).
        allow_data_change: with ``resume``, continue on data files whose SHA-256 differs from the
            run's record (else :class:`minbert.errors.DataChangedError`).

    Raises:
        MinbertError subclasses for every user mistake (config, data, checkpoint, non-finite loss).
        TrainingInterrupted: SIGINT or SIGTERM (in one process, after writing a checkpoint at the
            current optimizer step; see :class:`StopRequest`).
    """
    t_start = time.time() if t_start is None else t_start
    if not isinstance(cfg, Config):
        cfg = load_config(cfg)
    run_dir = Path(run_dir or cfg.output.dir or Path("runs") / cfg.name)
    ctx = init_distributed(cfg.train.device)
    if ctx.is_main:
        prepare_run_dir(run_dir, resume, overwrite)
    barrier(ctx)
    if resume:
        cfg = load_config(run_dir / CONFIG_FILE)
    pkg_log = logging.getLogger("minbert")
    file_log = add_file_logging(run_dir) if ctx.is_main else None
    if not ctx.is_main:
        pkg_log.setLevel(logging.WARNING)  # only rank 0 reports progress
    try:
        if resume:
            from ..runs import resolve_run_data_dir

            data_dir = resolve_run_data_dir(run_dir, cfg, data_dir, allow_data_change)
        return _train(cfg, run_dir, data_dir, resume, progress and ctx.is_main, t_start, ctx, on_epoch_end)
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt:  # outside the training loop, or under torchrun (see StopRequest)
        raise interrupted(run_dir, signal.SIGINT, saved=False, distributed=ctx.enabled) from None
    finally:
        if file_log is not None:
            pkg_log.removeHandler(file_log)
            file_log.close()


def _train(
    cfg: Config, run_dir: Path, data_dir, resume: bool, progress: bool, t_start: float, ctx: DistContext, on_epoch_end=None
) -> Run:
    cfg = resolve(cfg)
    tc = cfg.train
    if not cfg.tasks:
        raise ConfigError("tasks: at least one task is needed")
    if tc.epochs < 1 or tc.grad_accum < 1:
        raise ConfigError("train.epochs and train.grad_accum must be >= 1")
    if tc.seed < 0:
        raise ConfigError(f"train.seed must be >= 0, got {tc.seed}")
    if tc.max_steps is not None and tc.max_steps < 1:
        raise ConfigError(f"train.max_steps must be >= 1 (or null), got {tc.max_steps}")
    if tc.pcgrad and (tc.routine != "parallel" or ctx.enabled):
        raise ConfigError("train.pcgrad needs train.routine=parallel in a single process (it combines tasks' gradients of one step)")
    device = resolve_device(tc.device)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    amp = tc.amp == "bf16" or (tc.amp == "auto" and device.type == "cuda")
    seed_everything(tc.seed)
    data_dir = resolve_data_dir(str(data_dir) if data_dir else None, cfg.data.dir)

    # -- model, tokenizer, data ----------------------------------------------------------------
    encoder_src = resolve_encoder_path(cfg.model.encoder)
    table = task_table(cfg)  # the run's own: built-in tasks plus its custom tasks
    model = build_model(cfg, encoder_src, tasks=table).to(device)
    tokenizer = Tokenizer(encoder_src, cfg.model.max_length, model.encoder.config.max_position_embeddings)
    tasks = {name: table[name] for name in cfg.tasks}
    data = load_splits(cfg, data_dir, tokenizer, table, progress=progress)
    if tc.mode == "frozen":
        model.encoder.requires_grad_(False)
    if tc.init_from and not resume:  # on resume the checkpoint's weights replace these anyway
        init_from_run(model, tc.init_from)
    freeze_layers(model, tc.freeze_layers)  # surgical fine-tuning (0: nothing frozen)
    compiled = tc.compile == "on" or (tc.compile == "auto" and device.type == "cuda")
    if compiled:
        # in place (Module.compile), so state_dict keys keep their names; dynamic T from bucketing
        model.encoder.compile(dynamic=True)
    use_graphs = use_cuda_graphs(tc, device, ctx, compiled)
    flat_sync = use_flat_sync(tc, ctx, use_graphs)
    pad_multiple = cfg.data.pad_to_multiple_of or (16 if use_graphs else 1)

    if not resume and ctx.is_main:
        atomic_write_text(run_dir / CONFIG_FILE, dump_yaml(cfg))
        atomic_write_json(run_dir / "provenance.json", provenance(cfg, data_dir, tasks))
        copy_encoder_files(
            encoder_src, run_dir / "encoder", lambda p: atomic_write_json(p, model.encoder.config.to_hf_dict())
        )

    streams = {
        name: TaskStream(
            data["train"][name].lengths, cfg.tasks[name].batch_size * ctx.world_size, tc.seed + i, cfg.data.bucket_by_length
        )
        for i, name in enumerate(cfg.tasks)
    }
    micro_per_epoch = len(epoch_schedule(cfg, streams))
    opt_per_epoch = math.ceil(micro_per_epoch / tc.grad_accum)
    total_steps = tc.epochs * opt_per_epoch if tc.max_steps is None else min(tc.max_steps, tc.epochs * opt_per_epoch)
    log.info(
        "routine %s, %d micro-steps (%d optimizer steps) per epoch, %d epochs, %d optimizer steps in all, device %s, "
        "amp %s, %d process(es)%s, CUDA graphs %s",
        tc.routine, micro_per_epoch, opt_per_epoch, tc.epochs, total_steps, device, "bf16" if amp else "off", ctx.world_size,
        (" (gradient sync: flat all-reduce)" if flat_sync else " (gradient sync: DDP)") if ctx.enabled else "",
        "on" if use_graphs else "off",
    )
    groups = param_groups(model, cfg.optim.weight_decay, cfg.optim.lr, cfg.optim.layer_lr_decay, cfg.optim.head_lr)
    optimizer = build_optimizer(cfg.optim, groups, device)
    scheduler = build_scheduler(cfg.optim, optimizer, total_steps)

    # -- resume --------------------------------------------------------------------------------
    state = {"epoch": 0, "micro": 0, "step": 0, "best": None, "best_epoch": None, "bad_epochs": 0, "history": [], "skipped": 0}
    state["world_size"] = ctx.world_size
    if resume:
        folder = last_checkpoint(run_dir)
        if folder is None:
            raise CheckpointError(f"{run_dir}: no checkpoint to resume from")
        check_file_weights(model, folder / "model.safetensors")
        ts = load_train_state(folder)
        optimizer.load_state_dict(ts["optimizer"])
        scheduler.load_state_dict(ts["scheduler"])
        for name, s in ts["streams"].items():
            streams[name].load_state_dict(s)  # converts positions if the global batch size changed
        state = ts["loop"]
        saved_world = state.get("world_size", 1)
        if saved_world == ctx.world_size:
            set_rng_state(ts["rng"][ctx.rank])
        else:
            # another world size: continue from (about) the same global sample offset; dropout
            # RNG streams cannot carry over, so each rank is reseeded from the step and its rank
            log.warning("resuming a %d-process checkpoint with %d process(es): not bit-identical", saved_world, ctx.world_size)
            # the epoch position in samples, rounded down to a whole batch of the new global size
            # (as the task streams do); the steps left are counted at the new size, and the lr
            # schedule is rebuilt over the new total, continuing from the steps already taken
            state["micro"] = min(state["micro"] * saved_world // ctx.world_size, micro_per_epoch)
            left = (tc.epochs - state["epoch"]) * opt_per_epoch - math.ceil(state["micro"] / tc.grad_accum)
            total_steps = state["step"] + max(0, left)
            if tc.max_steps is not None:
                total_steps = min(total_steps, tc.max_steps)
            scheduler = build_scheduler(cfg.optim, optimizer, total_steps, last_step=state["step"])
            seed_everything(tc.seed + 1000 * state["step"] + ctx.rank)
        state["world_size"] = ctx.world_size
        if ctx.is_main:
            _trim_metrics(run_dir / "metrics.jsonl", state["step"], state.get("metrics_bytes"))
        barrier(ctx)
        log.info("resumed %s at epoch %d, micro-step %d, step %d", run_dir, state["epoch"], state["micro"], state["step"])

    def checkpoint() -> None:
        rngs = all_gather_objects(rng_state(), ctx)  # every rank's RNG (dropout differs per rank)
        if not ctx.is_main:
            return
        metrics_fh.flush()
        state["metrics_bytes"] = os.fstat(metrics_fh.fileno()).st_size  # what a resume keeps
        save_checkpoint(
            run_dir,
            state["step"],
            model.state_dict(),
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "streams": {n: s.state_dict() for n, s in streams.items()},
                "loop": dict(state),
                "rng": rngs,
            },
        )

    writer = None
    if cfg.output.tensorboard and ctx.is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))
    metrics_fh = open(run_dir / "metrics.jsonl" if ctx.is_main else os.devnull, "a")
    params = [p for p in model.parameters() if p.requires_grad]
    weights = {n: cfg.tasks[n].weight for n in cfg.tasks}
    step_fn: nn.Module = TrainStep(model, tasks, weights, device, amp, tc)
    if flat_sync:
        # no DDP wrapper: every rank starts from rank 0's weights (what DDP's constructor does)
        # and averages the flat gradient buffer once per step, below
        broadcast_tensors(list(model.state_dict().values()), ctx)
    elif ctx.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        # some parameters get no gradient in a step (the pooler unless a head pools with it; in
        # sequential and sampled steps, the other tasks' heads). In the parallel routine the set
        # is the same in every step: DDP's static-graph mode learns it in the first step and
        # then skips the per-step search of the autograd graph; otherwise DDP must search.
        # (Static-graph mode breaks with no_sync, hence not with gradient accumulation.)
        static = tc.routine == "parallel" and tc.grad_accum == 1
        step_fn = DDP(
            step_fn,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=not static,
            static_graph=static,
            gradient_as_bucket_view=True,  # gradients live in the all-reduce buckets: no copy
        )
    pad_id = tokenizer.pad_token_id
    stop = state["step"] >= total_steps
    best_result: EvalResult | None = None  # dev predictions of the best epoch, if seen in this process
    # fixed gradient buffers: with CUDA graphs, or eager steps whose gradients are averaged flat
    graphs = GraphedSteps(params, capture=use_graphs) if (use_graphs or flat_sync) and params else None
    task_steps = {n: _task_step(step_fn, n) for n in cfg.tasks}  # what the graphs capture, per task
    recent: list[dict] = []  # the last train.average_last epochs' weights, on the host
    # training examples (all ranks, all tasks; a pair counts once) and seconds, in this process
    throughput = {"train_samples": 0, "train_s": 0.0}
    # step losses stay on the device until a flush: one host sync per tc.log_every steps
    pending: list[tuple[dict, list[str], list, torch.Tensor]] = []
    bar = None

    def flush() -> None:
        """Write the pending steps' records; raise on a non-finite loss (nonfinite=stop)."""
        if not pending:
            return
        rows = all_reduce_mean(torch.stack([p[3] for p in pending]), ctx).tolist()
        for (record, names, ids, _), values in zip(pending, rows):
            bad = _nonfinite(names, values)
            if bad is not None:
                pending.clear()
                raise NonFiniteLossError(
                    f"non-finite loss at step {record['step']} (epoch {record['epoch']}), {bad[0]}, batch ids "
                    f"{ids[bad[1]]}; last good checkpoint: {last_checkpoint(run_dir) or 'none'}"
                )
            # logged unweighted: L_t = (w_t L_t) / w_t
            loss_vals = {n: v / weights[n] if weights[n] else v for n, v in zip(names, values[:-1])}
            record.update(grad_norm=values[-1], **{f"loss/{n}": v for n, v in loss_vals.items()})
            _append_jsonl(metrics_fh, record)
            if writer is not None:
                for n, v in loss_vals.items():
                    writer.add_scalar(f"train/loss_{n}", v, record["step"])
            if bar is not None:
                bar.set_postfix({n: f"{v:.3f}" for n, v in loss_vals.items()}, refresh=False)
        pending.clear()

    # -- loop ----------------------------------------------------------------------------------
    interrupt = StopRequest(enabled=not ctx.enabled)
    try:
        while state["epoch"] < tc.epochs and not stop:
            epoch = state["epoch"]
            schedule = epoch_schedule(cfg, streams, epoch)
            model.train()
            bar = tqdm(total=len(schedule), initial=state["micro"], desc=f"epoch {epoch + 1}/{tc.epochs}", disable=not progress, leave=False)
            t_epoch = time.perf_counter()
            while state["micro"] < len(schedule):
                i = state["micro"]
                if interrupt.signum is not None and i % tc.grad_accum == 0:  # between optimizer steps
                    flush()
                    checkpoint()
                    raise interrupted(run_dir, interrupt.signum, saved=True)
                names = schedule[i]
                last_in_group = (i + 1) % tc.grad_accum == 0 or i + 1 == len(schedule)
                group_size = min(tc.grad_accum, len(schedule) - (i // tc.grad_accum) * tc.grad_accum)
                batches = {
                    n: tasks[n].collate(data["train"][n], shard(streams[n].next(), ctx), pad_id, pad_multiple) for n in names
                }
                throughput["train_samples"] += ctx.world_size * sum(len(b["ids"]) for b in batches.values())
                if graphs is not None:
                    if i % tc.grad_accum == 0:
                        graphs.zero_grad()
                    per_task = torch.cat([
                        graphs.run(n, task_steps[n], {k: v for k, v in b.items() if isinstance(v, torch.Tensor)}, 1.0 / group_size)
                        for n, b in batches.items()
                    ])
                else:
                    # gradients are all-reduced only on the last micro-step of an accumulation group
                    sync = contextlib.nullcontext() if last_in_group or not ctx.enabled else step_fn.no_sync()
                    with sync:
                        out = step_fn({n: move(b, device) for n, b in batches.items()})
                        if tc.pcgrad:
                            task_grads = [
                                torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True) for loss in out.per_task
                            ]
                            for p, g in zip(params, pcgrad_(task_grads, seed=tc.seed + state["step"])):
                                if g is not None:
                                    p.grad = g / group_size if p.grad is None else p.grad + g / group_size
                        else:
                            (out.total / group_size).backward()
                    per_task = out.per_task.detach()
                state["micro"] += 1
                bar.update(1)
                if not last_in_group:
                    continue
                if flat_sync:
                    all_reduce_mean(graphs.flat, ctx)  # one collective: every task's gradients of the step
                if graphs is not None:
                    graphs.expose_grads()
                max_norm = tc.max_grad_norm if tc.max_grad_norm is not None else float("inf")
                grad_norm = torch.nn.utils.clip_grad_norm_(params, max_norm) if params else torch.zeros((), device=device)
                values = torch.cat([per_task.float(), grad_norm.float().reshape(1).to(per_task.device)])
                ids = [batches[n]["ids"][:8] for n in names]
                if tc.nonfinite == "skip":
                    # deciding before the update needs the values now: one host sync per step;
                    # all ranks see the same (mean) values, so all take the same branch
                    bad = _nonfinite(names, all_reduce_mean(values.clone(), ctx).tolist())
                    if bad is not None:
                        state["skipped"] += 1
                        if state["skipped"] > tc.max_nonfinite_fraction * total_steps:
                            flush()
                            raise NonFiniteLossError(
                                f"non-finite loss at step {state['step'] + 1} (epoch {epoch + 1}), {bad[0]}, batch ids "
                                f"{ids[bad[1]]}; {state['skipped']} of {total_steps} steps skipped, more than "
                                f"train.max_nonfinite_fraction={tc.max_nonfinite_fraction}; last good checkpoint: "
                                f"{last_checkpoint(run_dir) or 'none'}"
                            )
                        log.warning(
                            "non-finite loss at step %d (epoch %d), %s, batch ids %s; skipping this batch",
                            state["step"] + 1, epoch + 1, bad[0], ids[bad[1]],
                        )
                        flush()
                        _append_jsonl(metrics_fh, {"step": state["step"], "skipped": bad[0], "ids": ids[bad[1]]})
                        optimizer.zero_grad(set_to_none=True)
                        continue
                optimizer.step()
                scheduler.step()
                if graphs is None:
                    optimizer.zero_grad(set_to_none=True)
                state["step"] += 1
                pending.append(({"step": state["step"], "epoch": epoch + 1, "lr": scheduler.get_last_lr()[0]}, list(names), ids, values))
                if len(pending) >= tc.log_every:
                    flush()
                if state["step"] >= total_steps:
                    stop = True
                    break
                # (the epoch's last step is checkpointed after its dev evaluation, below)
                if tc.checkpoint_every and state["step"] % tc.checkpoint_every == 0 and state["micro"] < len(schedule):
                    flush()
                    metrics_fh.flush()
                    checkpoint()
            flush()
            bar.close()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            throughput["train_s"] += time.perf_counter() - t_epoch  # training only, dev evaluation excluded

            # -- end of epoch: evaluate, keep the best, checkpoint ---------------------------
            result = evaluate(model, tasks, data["dev"], device, tc.eval_batch_size, amp, pad_id, ctx, progress)
            flat = result.flat()
            log.info("epoch %d dev: %s", epoch + 1, _fmt(flat))
            _append_jsonl(metrics_fh, {"step": state["step"], "epoch": epoch + 1, "dev": flat, "dev_detail": result.metrics})
            if writer is not None:
                for k, v in flat.items():
                    if v is not None:
                        writer.add_scalar(f"dev/{k}", v, epoch + 1)
            state["history"].append({"epoch": epoch + 1, "step": state["step"], **flat})
            if tc.average_last:
                recent.append({k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
                del recent[: -tc.average_last]
            score = flat["overall"] if flat["overall"] is not None else -math.inf
            if state["best"] is None or score > state["best"]:
                state["best"], state["best_epoch"], state["bad_epochs"] = score, epoch + 1, 0
                best_result = result
                if ctx.is_main:
                    save_weights(
                        run_dir / "checkpoints" / "best" / "model.safetensors",
                        model.state_dict(),
                        {"epoch": epoch + 1, "step": state["step"], "dev": flat},
                    )
            else:
                state["bad_epochs"] += 1
            state["epoch"], state["micro"] = epoch + 1, 0
            metrics_fh.flush()
            checkpoint()
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, flat)
            if tc.early_stopping_patience is not None and state["bad_epochs"] >= tc.early_stopping_patience:
                log.info("early stopping: no overall-dev improvement for %d epoch(s)", state["bad_epochs"])
                break
    finally:
        interrupt.restore()
        metrics_fh.close()
        if writer is not None:
            writer.close()
    if interrupt.signum is not None:  # during the last epoch's evaluation: its checkpoint is written
        raise interrupted(run_dir, interrupt.signum, saved=True)

    # -- final predictions from the best checkpoint --------------------------------------------
    barrier(ctx)
    check_file_weights(model, run_dir / "checkpoints" / "best" / "model.safetensors")
    average = None
    if tc.average_last and recent:
        # checkpoint averaging: the mean of the last k epochs' weights (in this process's memory)
        best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        model.load_state_dict({k: sum(sd[k].double() for sd in recent).div(len(recent)).to(v.dtype) for k, v in best_state.items()})
        avg_result = evaluate(model, tasks, data["dev"], device, tc.eval_batch_size, amp, pad_id, ctx, progress)
        average = {"epochs": len(recent), "dev": avg_result.flat()}
        log.info("average of the last %d epochs' weights, dev: %s", len(recent), _fmt(avg_result.flat()))
        best_score = state["best"] if state["best"] is not None else -math.inf
        if avg_result.overall is not None and avg_result.overall > best_score:
            average["chosen"] = True
            best_result = avg_result
            if ctx.is_main:
                save_weights(run_dir / "checkpoints" / "average" / "model.safetensors", model.state_dict(), {"epochs": len(recent)})
        else:
            average["chosen"] = False
            model.load_state_dict(best_state)
    if not ctx.is_main:
        return Run(run_dir, {})
    final = write_run_predictions(model, tasks, data, run_dir, cfg, device, amp, pad_id, best_result, progress)
    summary = {
        "dev": {k: final.flat().get(k) for k in ("sst_acc", "qqp_acc", "sts_pearson", *_custom_headlines(cfg, tasks))}
        | {"overall": final.overall},
        "dev_all": final.flat(),
        "best_epoch": state["best_epoch"],
        "checkpoint_average": average,
        "throughput": {**throughput, "samples_per_s": round(throughput["train_samples"] / max(throughput["train_s"], 1e-9), 1),
                       "processes": ctx.world_size, "cuda_graphs": use_graphs,
                       "grad_sync": ("flat" if flat_sync else "ddp") if ctx.enabled else None},
        "epochs_run": len(state["history"]),
        "steps": state["step"],
        "wall_s": round(time.time() - t_start, 2),
        "config": to_dict(cfg),
    }
    if cfg.output.plot:
        plot_curves(run_dir)
    atomic_write_json(run_dir / "summary.json", summary)
    write_model_card(run_dir)
    log.info("done in %.1f s; best epoch %s: %s", summary["wall_s"], state["best_epoch"], _fmt(summary["dev"]))
    log.info("dev: %s", _scores_line(summary["dev"], cfg))
    files = ("summary.json", "predictions/", "curves.png", "tensorboard/", "train.log")
    files = [f for f in files if (run_dir / f).exists()]
    log.info("run folder: %s (%s)", run_dir, ", ".join(files))
    return Run(run_dir, summary)


def _custom_headlines(cfg: Config, tasks: dict[str, Task]) -> list[str]:
    """The primary-metric keys (``<task>_acc`` / ``<task>_pearson``) of the custom tasks trained."""
    from ..tasks.custom import headline_key

    return [headline_key(tasks[n]) for n in cfg.tasks if n in cfg.custom_tasks]


def _fmt(flat: dict) -> str:
    return " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in flat.items())


def _scores_line(dev: dict, cfg: Config) -> str:
    """The headline scores of ``summary["dev"]`` for people: ``SST acc 0.412 · ... · overall 0.693``
    (built-in tasks in capitals, custom ones by name, Pearson as r; n/a for a task without dev rows)."""
    parts = []
    for key, v in dev.items():
        task, _, metric = key.rpartition("_")
        if key != "overall" and task not in cfg.tasks:
            continue  # a built-in task this run did not train
        name = task if task in cfg.custom_tasks else task.upper()
        name = "overall" if key == "overall" else f"{name} {'r' if metric == 'pearson' else metric}"
        parts.append(f"{name} {v:.3f}" if isinstance(v, float) else f"{name} n/a")
    return " · ".join(parts)
