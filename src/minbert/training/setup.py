"""Setting up a training run, as plain functions that the setup phase of
:class:`minbert.training.trainer.Trainer` calls: the run folder and its log file, seeds, the
device, the model with its tokenizer, the task streams and step counts, the run's own files, and
the step arithmetic of a resume with another number of processes.
"""

from __future__ import annotations

import logging
import math
import random
import shutil
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
import torch

from ..config import Config, RuntimeSettings, TrainConfig, dump_yaml, load_config, replace, use_fused_optimizer
from ..config_compile import compile_options
from ..data.batching import TaskStream, resolve_data_dir
from ..data.tokenizer import Tokenizer
from ..distributed import DistContext, resolve_device
from ..errors import CheckpointError
from ..io import atomic_write_json, atomic_write_text
from ..model.hf_folder import resolve_encoder_path
from ..model.multitask import MultitaskModel, build_model
from ..runs import CONFIG_FILE, copy_encoder_files
from ..tasks.base import Task
from ..tasks.table import task_table
from .checkpoint import clean_checkpoints
from .reporting import provenance
from .schedule import epoch_schedule
from .surgical import freeze_layers, init_from_run
from .tracking import MLFLOW_FILE, check_mlflow_store

log = logging.getLogger(__name__)


LOCK_FILE = ".minbert.lock"  # held (flock) by the process that trains in the run folder
PLOT_GLOBS = ("curves.png", "*-confusion.png", "*-scatter.png", "*-calibration.png")  # task_plots' files


def resume_config(run_dir: Path, check_store: bool) -> Config:
    """The config a run folder trains on with (its ``config.yaml``), its ``train.compile_options``
    checked against this torch, and with ``check_store`` (rank 0) the MLflow store of the run it
    continues (:func:`minbert.training.tracking.check_mlflow_store`).

    Raises:
        ConfigError: naming the file, or the store (see ``check_mlflow_store``)."""
    cfg = load_config(run_dir / CONFIG_FILE)
    compile_options(cfg.train, str(run_dir / CONFIG_FILE))
    if check_store:
        check_mlflow_store(cfg.output.report_to, cfg.name)
    return cfg


def new_run_config(cfg: Config, data_dir: str | Path | None) -> Config:
    """The config a new run trains with and saves: ``--data-dir`` (``data_dir``) written into
    ``data.dir``, so that the saved config names the folder the run reads.

    Raises:
        DataError: the data folder (``--data-dir``, else ``data.dir``, else ``$MINBERT_DATA_DIR``)
            is not given or does not exist (before any run folder is made).
        ConfigError: ``train.compile_options`` that this torch does not take."""
    resolve_data_dir(None if data_dir is None else str(data_dir), cfg.data.dir)
    compile_options(cfg.train)
    return cfg if data_dir is None else replace(cfg, data=replace(cfg.data, dir=str(data_dir)))


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> IO | None:
    """Refuse to overwrite an existing run without ``overwrite``; check a resume target and
    remove what a killed run left in its ``checkpoints/`` (see :func:`clean_checkpoints`); with
    ``overwrite``, remove the old run's outputs. Before any of that, take the run folder's lock
    (:func:`lock_run_dir`); returns it (close it when the run ends).

    Raises:
        CheckpointError: a file stands at ``run_dir``; another process trains there; a run is
            there and neither ``overwrite`` nor ``resume`` is given; ``resume`` without a run.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise CheckpointError(f"{run_dir}: is a file, not a run folder")
    lock = lock_run_dir(run_dir)
    try:
        has_run = (run_dir / CONFIG_FILE).is_file()
        if resume:
            if not has_run:
                raise CheckpointError(f"{run_dir}: cannot resume, not a minbert run folder (no {CONFIG_FILE})")
            removed = clean_checkpoints(run_dir)
            if removed:
                log.info("removed what an interrupted run left in %s: %s", run_dir / "checkpoints", ", ".join(removed))
            return lock
        if has_run and not overwrite:
            raise CheckpointError(
                f"{run_dir}: already holds a run; pass --overwrite to replace it or --resume to continue it"
            )
        if has_run and overwrite:
            for sub in ("checkpoints", "predictions", "tensorboard"):
                shutil.rmtree(run_dir / sub, ignore_errors=True)
            for f in ("metrics.jsonl", "summary.json", "train.log", MLFLOW_FILE):
                (run_dir / f).unlink(missing_ok=True)
            for f in (f for pattern in PLOT_GLOBS for f in run_dir.glob(pattern)):
                f.unlink(missing_ok=True)
        return lock
    except BaseException:
        if lock is not None:
            lock.close()
        raise


def lock_run_dir(run_dir: Path) -> IO | None:
    """Make ``run_dir`` and hold an exclusive lock on its :data:`LOCK_FILE` (``fcntl.flock``; the
    system drops it when the returned file is closed or the process ends, killed too), so that
    two processes never train in one run folder. None where ``fcntl`` is missing (not POSIX).

    Raises:
        CheckpointError: another process holds the lock.
    """
    try:
        import fcntl
    except ImportError:
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    fh = open(run_dir / LOCK_FILE, "a+")  # noqa: SIM115 -- held open for the whole run
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise CheckpointError(f"{run_dir}: another minbert process is training in this run folder; wait for it "
                              "to end (or stop it) first") from None
    return fh


def add_file_logging(run_dir: Path) -> logging.Handler:
    """Copy the package's log records to ``run_dir/train.log``; returns the handler to remove."""
    handler = logging.FileHandler(run_dir / "train.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("minbert").addHandler(handler)
    return handler


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def run_device(name: str, ctx: DistContext) -> torch.device:
    """The device of ``train.device`` (``auto``: CUDA when there is one); under torchrun on CUDA,
    this process's GPU (its local rank).

    Raises:
        ConfigError: an unknown device name, or CUDA where there is none.
    """
    device = resolve_device(name)
    if ctx.enabled and device.type == "cuda":
        device = torch.device("cuda", ctx.local_rank)
    return device


class ModelSetup(NamedTuple):
    model: MultitaskModel  # on the device, frozen and compiled as the config says
    tokenizer: Tokenizer
    encoder_src: Path  # the encoder folder
    table: dict[str, Task]  # the run's task table: built-in tasks plus its custom tasks
    compile_options: dict  # inductor's settings for what compiles (minbert.config_compile.compile_options)


def setup_model(
    cfg: Config, device: torch.device, compile_encoder: bool, init_from: bool = True, packed: bool = False
) -> ModelSetup:
    """The multi-task model and tokenizer of ``cfg``: ``train.mode=frozen`` freezes the encoder,
    ``train.init_from`` loads another run's weights (when ``init_from``; a resume loads its
    checkpoint's instead), ``train.freeze_layers`` freezes the lower layers,
    ``compile_encoder`` compiles the encoder in place (state_dict keys keep their names): its
    padded forward, or with ``packed`` (``model.packing``) its packed forward, with a symbolic
    token count, and inductor's settings ``train.compile_options``.

    Raises:
        ConfigError, CheckpointError: a bad head or task setting, an unreadable encoder or
            ``init_from`` run, ``model.max_length`` above the encoder's positions.
    """
    tc = cfg.train
    encoder_src = resolve_encoder_path(cfg.model.encoder)
    table = task_table(cfg)
    model = build_model(cfg, encoder_src, tasks=table).to(device)
    tokenizer = Tokenizer(encoder_src, cfg.model.max_length, model.encoder.config.max_position_embeddings)
    if tc.mode == "frozen":
        model.encoder.requires_grad_(False)
    if tc.init_from and init_from:
        init_from_run(model, tc.init_from)
    freeze_layers(model, tc.freeze_layers)  # surgical fine-tuning (0: nothing frozen)
    options = compile_options(tc) or None
    if compile_encoder and packed:
        model.encoder.forward_packed = torch.compile(model.encoder.forward_packed, dynamic=True, options=options)
    elif compile_encoder:
        model.encoder.compile(dynamic=True, options=options)  # dynamic T: batches of several lengths (bucketing)
    return ModelSetup(model, tokenizer, encoder_src, table, options or {})


def task_streams(cfg: Config, lengths: dict[str, np.ndarray], world_size: int = 1) -> dict[str, TaskStream]:
    """One batch stream per task of ``cfg.tasks`` over its training rows (``lengths``: tokens per
    row), yielding global batches of ``world_size x tasks.<t>.batch_size`` rows, seeded
    ``train.seed + i`` for the i-th task."""
    return {
        name: TaskStream(lengths[name], cfg.tasks[name].batch_size * world_size, cfg.train.seed + i,
                         cfg.data.bucket_by_length)
        for i, name in enumerate(cfg.tasks)
    }


class StepCounts(NamedTuple):
    micro_per_epoch: int  # micro-steps (forward + backward calls) per epoch
    opt_per_epoch: int  # optimizer steps per epoch: ceil(micro / train.grad_accum)
    total_steps: int  # optimizer steps of the run (train.max_steps caps it)


def step_counts(cfg: Config, streams: dict[str, TaskStream]) -> StepCounts:
    """How many micro-steps and optimizer steps an epoch, and the run, have."""
    tc = cfg.train
    micro = len(epoch_schedule(cfg, streams))
    per_epoch = math.ceil(micro / tc.grad_accum)
    total = tc.epochs * per_epoch if tc.max_steps is None else min(tc.max_steps, tc.epochs * per_epoch)
    return StepCounts(micro, per_epoch, total)


def log_plan(cfg: Config, counts: StepCounts, total_steps: int, device: torch.device, rt: RuntimeSettings,
             ctx: DistContext) -> None:
    """Log what the run will do: routine, steps, device, amp, processes, CUDA graphs."""
    tc = cfg.train
    sync = (" (gradient sync: flat all-reduce)" if rt.flat_sync else " (gradient sync: DDP)") if ctx.enabled else ""
    log.info(
        "routine %s, %d micro-steps (%d optimizer steps) per epoch, %d epochs, %d optimizer steps in all, "
        "device %s, amp %s, %d process(es)%s, CUDA graphs %s, packing %s",
        tc.routine, counts.micro_per_epoch, counts.opt_per_epoch, tc.epochs, total_steps, device,
        "bf16" if rt.amp else "off", ctx.world_size, sync, "on" if rt.cuda_graphs else "off",
        f"on (buckets from {rt.pack_multiple} tokens{', dW and db on a second CUDA stream' * rt.weight_grad_stream})"
        if rt.pack_multiple else "off",
    )
    if rt.note:
        log.info("%s", rt.note)
    if tc.compile_options and not rt.compile:  # (the config refuses empty entries)
        update = cfg.optim.master_weights and use_fused_optimizer(cfg.optim, device.type)
        rows = cfg.optim.embedding_rows and device.type == "cuda"
        uses = " and ".join(w for w, on in (("the master-weights update", update), ("the rows' values", rows)) if on)
        log.info("train.compile_options: the encoder is not compiled (train.compile=%s on %s); %s", tc.compile,
                 device.type, f"they apply to {uses}" if uses else "unused: nothing compiles in this run")


def rescale_position(
    tc: TrainConfig, epoch: int, micro: int, step: int, saved_world: int, world_size: int, counts: StepCounts
) -> tuple[int, int]:
    """Resuming a checkpoint of ``saved_world`` processes with ``world_size``: continue from
    (about) the same global sample offset. Returns (micro-step in the epoch, total optimizer
    steps): the epoch position in samples rounded down to a whole batch of the new global size
    (as the task streams do), and the steps taken plus those left, counted at the new size
    (``train.max_steps`` caps it)."""
    micro = min(micro * saved_world // world_size, counts.micro_per_epoch)
    left = (tc.epochs - epoch) * counts.opt_per_epoch - math.ceil(micro / tc.grad_accum)
    total = step + max(0, left)
    if tc.max_steps is not None:
        total = min(total, tc.max_steps)
    return micro, total


def write_run_files(run_dir: Path, cfg: Config, data_dir: Path, tasks: dict[str, Task], model: MultitaskModel,
                    encoder_src: Path) -> None:
    """A new run's ``config.yaml``, ``provenance.json`` and ``encoder/`` (tokenizer files and
    the encoder's ``config.json``)."""
    atomic_write_text(run_dir / CONFIG_FILE, dump_yaml(cfg))
    atomic_write_json(run_dir / "provenance.json", provenance(cfg, data_dir, tasks))
    encoder_config = model.encoder.config.to_hf_dict()
    copy_encoder_files(encoder_src, run_dir / "encoder", lambda p: atomic_write_json(p, encoder_config))
