"""Multi-task training, top to bottom: :func:`train` runs a :class:`Trainer`, whose phases are
methods; ``logging``, explicit seeds. Routines: :mod:`minbert.training.schedule`; losses and the
optimizer step: :mod:`minbert.training.step`. A run is resumable: checkpoints hold the model,
optimizer, lr schedule, every RNG state and each task stream's position, so a resumed run sees
exactly the batches an uninterrupted one would.

:meth:`Trainer.fit`: :meth:`~Trainer.setup` (model, tokenizer, data, optimizer, lr schedule,
:meth:`~Trainer.resume`, step function with CUDA graphs or DDP), then :meth:`~Trainer.train_epochs`:
per epoch :meth:`~Trainer.train_step` (one optimizer step) with dev evaluations (``train.eval_every``)
and checkpoints (``train.checkpoint_every``) between steps and :meth:`~Trainer.epoch_end` (evaluate,
keep the best, checkpoint); last :meth:`~Trainer.finish` (checkpoint averaging, final
predictions, summary) and the end of the trackers' run (``output.report_to``). The best model is
chosen at epoch ends only.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..config import Config, load_config, resolve, runtime_settings, validate
from ..data.batching import resolve_data_dir
from ..distributed import DistContext, all_gather_objects, all_reduce_mean, barrier, init_distributed, shard
from ..errors import CheckpointError, NonFiniteLossError, TrainingInterrupted
from ..inference.evaluate import write_run_predictions
from ..inference.graphs import GraphedForward
from ..inference.model_card import write_model_card
from ..io import atomic_write_json
from ..model.multitask import step_pack_plan
from ..runs import TRAIN_STATE, Run, check_file_weights, last_checkpoint, resolve_run_data_dir
from ..tasks.splits import load_splits
from .checkpoint import BackgroundWriter, load_train_state, restoring, rng_state, set_rng_state
from .checkpoint import save_checkpoint as write_checkpoint
from .evaluation import DevEvaluator
from .interrupts import StopRequest, interrupted
from .kernel_compile import start_kernel_compile, wait_kernel_compile
from .lr_schedule import build_scheduler
from .optim import build_optimizer, param_groups
from .reporting import MetricsLog, log_run_end, run_summary, trim_metrics
from .schedule import epoch_schedule
from .setup import (
    add_file_logging,
    log_plan,
    new_run_config,
    prepare_run_dir,
    rescale_position,
    resume_config,
    run_device,
    seed_everything,
    setup_model,
    step_counts,
    task_streams,
    write_run_files,
)
from .state import LoopState
from .step import build_optimizer_step, encoder_copies, find_nonfinite
from .task_plots import start_curves, start_plotter, stop_plotter, write_run_plots
from .tracking import check_mlflow_store, require_trackers

log = logging.getLogger(__name__)


def train(
    cfg: Config | str | Path, run_dir: str | Path | None = None, data_dir: str | Path | None = None,
    resume: bool = False, overwrite: bool = False, progress: bool = True, t_start: float | None = None,
    on_epoch_end: Callable[[int, dict], None] | None = None, allow_data_change: bool = False,
    compiling: list[subprocess.Popen] | None = None,
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
            flat metrics), once its checkpoint and best weights are on disk; an exception it raises
            ends training (``minbert tune`` prunes so).
        allow_data_change: with ``resume``, continue on data files whose SHA-256 differs from the
            run's record (else :class:`minbert.errors.DataChangedError`).
        compiling: the caller's attention-kernel compile (:mod:`minbert.training.kernel_compile`), else None.

    Raises:
        MinbertError subclasses for every user mistake (config, data, checkpoint, non-finite loss).
        TrainingInterrupted: SIGINT or SIGTERM (in one process, after writing a checkpoint at the
            current optimizer step; see :class:`StopRequest`).
    """
    t_start = time.time() if t_start is None else t_start
    cfg = validate(cfg) if isinstance(cfg, Config) else load_config(cfg)  # (a file's config: checked when loaded)
    run_dir = Path(run_dir or cfg.output.dir or Path("runs") / cfg.name)
    cfg = cfg if resume else new_run_config(cfg, data_dir)  # DataError before a run folder is made
    require_trackers(cfg.output.report_to)  # before a run folder is made or replaced
    ctx = init_distributed(cfg.train.device)
    if ctx.is_main and not resume:
        check_mlflow_store(cfg.output.report_to, cfg.name)  # before a run folder is made or replaced
    lock = prepare_run_dir(run_dir, resume, overwrite) if ctx.is_main else None  # held until the run ends
    pkg_log, file_log = logging.getLogger("minbert"), None
    try:
        barrier(ctx)
        if resume:
            cfg = resume_config(run_dir, check_store=ctx.is_main)
        file_log = add_file_logging(run_dir) if ctx.is_main else None
        if not ctx.is_main:
            pkg_log.setLevel(logging.WARNING)  # only rank 0 reports progress
        if resume:
            data_dir = resolve_run_data_dir(run_dir, cfg, data_dir, allow_data_change)
        trainer = Trainer(cfg, run_dir, data_dir, resume=resume, progress=progress and ctx.is_main, t_start=t_start,
                          ctx=ctx, on_epoch_end=on_epoch_end, compiling=compiling)
        return trainer.fit()
    except TrainingInterrupted:
        raise
    except KeyboardInterrupt:  # outside the training loop, or under torchrun (see StopRequest)
        raise interrupted(run_dir, signal.SIGINT, saved=False, distributed=ctx.enabled) from None
    finally:
        if file_log is not None:
            pkg_log.removeHandler(file_log)
            file_log.close()
        if lock is not None:
            lock.close()


class Trainer:
    """One training run: its state lives in attributes, each phase is a method (see the module
    docstring). :meth:`fit` runs them all; :meth:`setup` and then a phase can also run alone.

    Args:
        cfg: the run's config (checked by :func:`minbert.config.validate`; ``optim.lr`` resolved).
        run_dir: the run folder (see :func:`minbert.training.setup.prepare_run_dir`).
        data_dir: the data folder (else ``data.dir``, else ``$MINBERT_DATA_DIR``).
        resume: continue from the run folder's last checkpoint.
        progress: show a progress bar.
        t_start: wall-clock start (``time.time()``) for ``summary.json``'s ``wall_s``.
        ctx: this process's place in a torchrun job (default: one process).
        on_epoch_end: called as ``f(epoch, dev)`` once each epoch end's checkpoint is on disk.
        compiling: as :func:`train`'s.

    Raises:
        ConfigError: an invalid config.
    """

    def __init__(self, cfg: Config, run_dir: str | Path, data_dir: str | Path | None = None, *, resume: bool = False,
                 progress: bool = False, t_start: float | None = None, ctx: DistContext | None = None,
                 on_epoch_end: Callable[[int, dict], None] | None = None, compiling: list | None = None):
        self.cfg = resolve(validate(cfg))
        require_trackers(self.cfg.output.report_to)
        self.tc = self.cfg.train
        self.run_dir, self.data_dir, self.resuming = Path(run_dir), data_dir, resume
        self.progress, self.on_epoch_end, self.compiling = progress, on_epoch_end, compiling
        self.t_start = time.time() if t_start is None else t_start
        self.ctx = ctx or DistContext()
        self.state = LoopState(world_size=self.ctx.world_size)
        # training examples (all ranks, all tasks; a pair counts once) and seconds, in this process
        self.throughput = {"train_samples": 0, "train_s": 0.0, "epoch_train_s": [], "epoch_end_s": [],
                           "setup_s": 0.0, "kernel_wait_s": 0.0}  # (see reporting.run_summary)
        self.interrupt, self.bar, self.t_epoch = None, None, 0.0  # t_epoch: perf_counter() at the epoch's start
        self.writer = BackgroundWriter()  # checkpoints and best weights reach the disk while training goes on

    # -- setup -------------------------------------------------------------------------------------

    def setup(self) -> None:
        """Device and runtime settings, seeds; model, tokenizer, data, optimizer and lr schedule;
        the run's files (a new run) or its checkpoint (a resumed one); step function; metrics log.

        Raises:
            ConfigError, DataError, CheckpointError: what the config, data or checkpoint gets wrong.
        """
        cfg, tc, ctx = self.cfg, self.tc, self.ctx
        self.device = run_device(tc.device, ctx)
        self.rt = runtime_settings(cfg, self.device.type, ctx.world_size)
        # a GPU run's plots: a child imports matplotlib while the run trains
        self.plotter = start_plotter() if cfg.output.plot and ctx.is_main and self.device.type == "cuda" else None
        seed_everything(tc.seed)
        self.data_dir = resolve_data_dir(str(self.data_dir) if self.data_dir else None, cfg.data.dir)
        compiling = self.compiling  # the caller's, else started here: they compile while the model and data load
        if compiling is None:
            compiling = start_kernel_compile(cfg, self.device.type, ctx.world_size, ctx.local_rank)
        # on resume the checkpoint's weights replace those of train.init_from anyway
        self.model, self.tokenizer, encoder_src, table, options = setup_model(
            cfg, self.device, self.rt.compile, init_from=not self.resuming, packed=bool(self.rt.pack_multiple))
        self.model.pack_eval = bool(self.rt.pack_multiple)  # dev evaluation packs as training does
        self.model.eval_graphs = (GraphedForward(self.device, bf16_weights=self.rt.amp)  # compiled: autocast
                                  if self.rt.cuda_graphs and self.rt.pack_multiple else None)
        self.tasks = {name: table[name] for name in cfg.tasks}
        self.data = load_splits(cfg, self.data_dir, self.tokenizer, table, progress=self.progress)
        self.pad_id, self.weights = self.tokenizer.pad_token_id, {n: cfg.tasks[n].weight for n in cfg.tasks}
        if not self.resuming and ctx.is_main:
            write_run_files(self.run_dir, cfg, self.data_dir, self.tasks, self.model, encoder_src)
        self.streams = task_streams(cfg, {n: self.data["train"][n].lengths for n in cfg.tasks}, ctx.world_size)
        self.counts = step_counts(cfg, self.streams)
        self.total_steps = self.counts.total_steps
        log_plan(cfg, self.counts, self.total_steps, self.device, self.rt, ctx)
        o = cfg.optim
        groups = param_groups(self.model, o.weight_decay, o.lr, o.layer_lr_decay, o.head_lr)
        self.optimizer = build_optimizer(o, groups, self.device, self.model, options)
        self.scheduler = build_scheduler(o, self.optimizer, self.total_steps)
        if self.resuming:
            self.resume()
        self.stepper = build_optimizer_step(self.model, self.tasks, self.weights, self.optimizer, self.scheduler,
                                            self.device, tc, self.rt, ctx)
        self.metrics = MetricsLog(self.run_dir, ctx, self.weights, cfg, resume=self.resuming, step=self.state.step)
        self.dev = DevEvaluator(self.model, self.tasks, self.data["dev"], self.device, self.rt.amp, self.pad_id,
                                tc.eval_batch_size, ctx, self.metrics, self.run_dir, tc.average_last, self.progress,
                                self.writer)
        self.throughput["kernel_wait_s"] = wait_kernel_compile(compiling)  # in Triton's cache before the first step

    def resume(self) -> None:
        """Continue from the run folder's last checkpoint: weights, optimizer, lr schedule, task
        stream positions, loop counters and RNG states; cut ``metrics.jsonl`` back to what it
        held then. With another number of processes: the same global sample offset (about), the
        lr schedule rebuilt over the new total, each rank reseeded (not bit-identical).

        Raises:
            CheckpointError: no checkpoint, an unreadable one, or weights that do not fit the model.
        """
        tc, ctx = self.tc, self.ctx
        folder = last_checkpoint(self.run_dir)
        if folder is None:
            raise CheckpointError(f"{self.run_dir}: no checkpoint to resume from")
        check_file_weights(self.model, folder / "model.safetensors")
        ts = load_train_state(folder)
        with restoring(folder / TRAIN_STATE, self.optimizer, self.scheduler):  # damaged or foreign: CheckpointError
            self.optimizer.load_state_dict(ts["optimizer"])
            self.scheduler.load_state_dict(ts["scheduler"])
            for name, s in ts["streams"].items():
                self.streams[name].load_state_dict(s)  # converts positions if the global batch size changed
            self.state = st = LoopState.from_dict(ts["loop"])
            if st.world_size == ctx.world_size:
                set_rng_state(ts["rng"][ctx.rank])
            else:
                log.warning("resuming a %d-process checkpoint with %d process(es): not bit-identical",
                            st.world_size, ctx.world_size)
                st.micro, self.total_steps = rescale_position(tc, st.epoch, st.micro, st.step, st.world_size,
                                                              ctx.world_size, self.counts)
                self.scheduler = build_scheduler(self.cfg.optim, self.optimizer, self.total_steps, last_step=st.step)
                seed_everything(tc.seed + 1000 * st.step + ctx.rank)  # dropout RNG streams cannot carry over
        st.world_size = ctx.world_size
        if ctx.is_main:
            trim_metrics(self.run_dir / "metrics.jsonl", st.step, st.metrics_bytes)
        barrier(ctx)
        log.info("resumed %s in epoch %d (micro-step %d of it), optimizer step %d", self.run_dir, st.epoch + 1,
                 st.micro, st.step)

    # -- the loop ----------------------------------------------------------------------------------

    def fit(self) -> Run:
        """Set up, train epoch by epoch, finish, end the trackers' run (as failed when anything
        raised); returns the :class:`Run`. Raises as :func:`train`."""
        self.setup()
        self.throughput["setup_s"] = round(time.time() - self.t_start, 2)
        try:
            self.train_epochs()
            run = self.finish()
        except BaseException:
            self.metrics.end(None)
            stop_plotter(self.plotter)  # (it exits when its input closes anyway; a library run may live on)
            raise
        self.metrics.end(run.summary)
        return run

    def train_epochs(self) -> None:
        """The epochs from the current state on: optimizer steps, dev evaluations, checkpoints.
        Raises TrainingInterrupted (SIGINT, SIGTERM), NonFiniteLossError (its message ends with the
        last checkpoint on disk), what ``on_epoch_end`` raises."""
        tc, st = self.tc, self.state  # (setup's resume has replaced the state)
        self.interrupt = StopRequest(enabled=not self.ctx.enabled)
        stop = st.step >= self.total_steps or st.patience_spent(tc.early_stopping_patience)  # (resumed runs too)
        try:
            while st.epoch < tc.epochs and not stop:
                epoch = st.epoch
                schedule = epoch_schedule(self.cfg, self.streams, epoch)
                self._start_epoch(epoch, len(schedule))
                while st.micro < len(schedule):
                    if self.interrupt.signum is not None and st.micro % tc.grad_accum == 0:  # between optimizer steps
                        self.save_checkpoint()
                        self.writer.wait()  # on disk before the message names it
                        raise interrupted(self.run_dir, self.interrupt.signum, saved=True)
                    if not self.train_step(schedule, epoch):
                        continue  # skipped for a non-finite loss (train.nonfinite=skip)
                    if st.step >= self.total_steps:
                        stop = True
                        break
                    # (the epoch's last step is evaluated and checkpointed at the epoch end, below)
                    if st.micro < len(schedule):
                        self._between_steps(epoch, len(schedule))
                self._end_epoch_training()
                if self.epoch_end(epoch):
                    break  # early stopping
            self.writer.wait()  # every checkpoint on disk (a signal meanwhile is handled below)
        except BaseException as e:  # the earlier checkpoints on disk; this error stays the one raised
            self.interrupt.restore()  # a further signal stops at once, even while the disk is slow
            self.writer.wait(raise_error=False)
            if isinstance(e, NonFiniteLossError):
                last = last_checkpoint(self.run_dir) or "none"
                raise NonFiniteLossError(f"{e}; last good checkpoint: {last}") from None
            raise
        finally:
            self.interrupt.restore()
            self.metrics.close()
        if self.interrupt.signum is not None:  # during the last epoch's evaluation: its checkpoint is written
            raise interrupted(self.run_dir, self.interrupt.signum, saved=True)

    def _start_epoch(self, epoch: int, n_micro: int) -> None:
        self.model.train()
        self.bar = tqdm(total=n_micro, initial=self.state.micro, desc=f"epoch {epoch + 1}/{self.tc.epochs}",
                        disable=not self.progress, leave=False)
        self.metrics.progress = self.bar
        self.t_epoch = time.perf_counter()

    def _end_epoch_training(self) -> None:
        self.metrics.flush_steps()
        self.bar.close()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - self.t_epoch  # training only, dev evaluation excluded
        self.throughput["train_s"] += seconds
        self.throughput["epoch_train_s"].append(round(seconds, 2))

    def _between_steps(self, epoch: int, n_micro: int) -> None:
        """Within an epoch, after an optimizer step: a dev evaluation every ``train.eval_every``
        steps, a checkpoint every ``train.checkpoint_every`` steps (after the evaluation, so that
        a resume keeps its record)."""
        tc, step = self.tc, self.state.step
        if tc.eval_every and step % tc.eval_every == 0:
            self.evaluate_within_epoch(epoch, n_micro)
        if tc.checkpoint_every and step % tc.checkpoint_every == 0:
            self.save_checkpoint()

    # -- one optimizer step ------------------------------------------------------------------------

    def train_step(self, schedule: list[tuple[str, ...]], epoch: int) -> bool:
        """One optimizer step: the micro-steps from ``state.micro`` to the end of its gradient
        accumulation group of ``schedule`` (each task's next batch, forward, backward), gradient
        sync and clipping, the non-finite check (``train.nonfinite=skip``), the optimizer update
        and the step's record (written every ``train.log_every`` steps). ``epoch`` is 0-based.
        Returns False when the step was skipped for a non-finite loss, else True.

        Raises:
            NonFiniteLossError: a non-finite loss (``nonfinite=stop``, when the records are
                written), or more skipped steps than ``train.max_nonfinite_fraction`` allows.
        """
        tc, st = self.tc, self.state
        group_start = st.micro // tc.grad_accum * tc.grad_accum
        group_end = min(group_start + tc.grad_accum, len(schedule))
        while st.micro < group_end:
            i, names = st.micro, schedule[st.micro]
            batches = self._next_batches(names)
            per_task = self.stepper.backward(
                batches, first=i % tc.grad_accum == 0, last=i + 1 == group_end, group_size=group_end - group_start,
                step=st.step, packing=self._pack(batches),
            )
            st.micro += 1
            if self.bar is not None:
                self.bar.update(1)
        values = self.stepper.gradients(per_task)
        ids = [batches[n]["ids"][:8] for n in names]
        if tc.nonfinite == "skip" and self._skip_nonfinite(names, ids, values, epoch):
            return False
        self.stepper.update()
        st.step += 1
        record = {"step": st.step, "epoch": epoch + 1, "lr": self.scheduler.get_last_lr()[0]}
        self.metrics.add_step(record, list(names), ids, values)
        if len(self.metrics.pending) >= tc.log_every:
            self.metrics.flush_steps()
        return True

    def _next_batches(self, names: tuple[str, ...]) -> dict[str, dict]:
        """The next batch of each task in ``names``: this process's rows, collated (host tensors)."""
        data, pad, mult = self.data["train"], self.pad_id, self.rt.pad_multiple
        batches = {n: self.tasks[n].collate(data[n], shard(self.streams[n].next(), self.ctx), pad, mult) for n in names}
        self.throughput["train_samples"] += self.ctx.world_size * sum(len(b["ids"]) for b in batches.values())
        return batches

    def _pack(self, batches: dict[str, dict]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The step's pack plan (``model.packing``), else None."""
        largest, copies = self.model.encoder.config.max_position_embeddings, encoder_copies(self.tc)
        return step_pack_plan(batches, self.rt.pack_multiple, largest, copies) if self.rt.pack_multiple else None

    def _skip_nonfinite(self, names: tuple[str, ...], ids: list, values: torch.Tensor, epoch: int) -> bool:
        """``train.nonfinite=skip``: whether this step's (n_tasks + 1,) ``values`` hold a non-finite
        loss or gradient norm (then it is logged, recorded and its gradients dropped). Deciding
        before the update needs the values now: one host sync per step; all ranks see the same
        (mean) values, so all take the same branch.

        Raises:
            NonFiniteLossError: more skipped steps than ``train.max_nonfinite_fraction`` of all.
        """
        tc, st = self.tc, self.state
        bad = find_nonfinite(list(names), all_reduce_mean(values.clone(), self.ctx).tolist())
        if bad is None:
            return False
        st.skipped += 1
        if st.skipped > tc.max_nonfinite_fraction * self.total_steps:
            self.metrics.flush_steps()
            raise NonFiniteLossError(
                f"non-finite loss at step {st.step + 1} (epoch {epoch + 1}), {bad[0]}, batch ids "
                f"{ids[bad[1]]}; {st.skipped} of {self.total_steps} steps skipped, more than "
                f"train.max_nonfinite_fraction={tc.max_nonfinite_fraction}"
            )
        log.warning(
            "non-finite loss at step %d (epoch %d), %s, batch ids %s; skipping this batch",
            st.step + 1, epoch + 1, bad[0], ids[bad[1]],
        )
        self.metrics.flush_steps()
        self.metrics.append({"step": st.step, "skipped": bad[0], "ids": ids[bad[1]]})
        self.stepper.discard()
        return True

    # -- evaluation, epoch end, checkpoints --------------------------------------------------------

    def evaluate_within_epoch(self, epoch: int, n_micro: int) -> None:
        """A dev evaluation between steps (:meth:`DevEvaluator.within_epoch`); not counted as training time."""
        self.metrics.flush_steps()  # the steps' records come first
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        self.dev.within_epoch(self.state.step, epoch + self.state.micro / n_micro)
        self.t_epoch += time.perf_counter() - t0

    def epoch_end(self, epoch: int) -> bool:
        """After epoch ``epoch`` (0-based): evaluate dev, log it, keep the best weights
        (:meth:`DevEvaluator.epoch_end`), checkpoint, call ``on_epoch_end``. Returns True when
        early stopping ends the training.

        Raises:
            whatever ``on_epoch_end`` raises (``minbert tune`` prunes so).
        """
        tc, st, t0 = self.tc, self.state, time.perf_counter()
        flat = self.dev.epoch_end(st, epoch + 1)
        st.epoch, st.micro = epoch + 1, 0
        self.save_checkpoint()
        if self.on_epoch_end is not None:
            self.writer.wait()  # the hook may read this epoch's checkpoint and best weights
            self.on_epoch_end(epoch + 1, flat)
        self.throughput["epoch_end_s"].append(round(time.perf_counter() - t0, 2))
        if st.patience_spent(tc.early_stopping_patience):
            log.info("early stopping: no overall-dev improvement for %d epoch(s)", st.bad_epochs)
            return True
        return False

    def save_checkpoint(self) -> None:
        """Write ``checkpoints/step-N`` for the current step (rank 0), after the queued step
        records; every rank's RNG states go in (a collective call: all ranks call it).

        Raises:
            CheckpointError: the files cannot be written (the previous checkpoint stays).
        """
        self.metrics.flush_steps()
        rngs = all_gather_objects(rng_state(), self.ctx)  # every rank's RNG (dropout differs per rank)
        if not self.ctx.is_main:
            return
        self.state.metrics_bytes = self.metrics.sync()  # what a resume keeps
        # written in the background from host copies (train_epochs waits for it on its way out)
        train_state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                       "streams": {n: s.state_dict() for n, s in self.streams.items()},
                       "loop": self.state.to_dict(), "rng": rngs}
        self.writer.submit(write_checkpoint, self.run_dir, self.state.step,
                           *self.writer.snapshot((self.model.state_dict(), train_state)))

    # -- finish ------------------------------------------------------------------------------------

    def finish(self) -> Run:
        """Load the best epoch's weights, try checkpoint averaging, write the final dev and test
        predictions, the plots (``curves.png`` begun first, one per task), ``summary.json`` (rank 0)."""
        ctx, rt, st = self.ctx, self.rt, self.state
        barrier(ctx)
        start_curves(self.plotter, self.run_dir)  # (a GPU run's plot child; metrics.jsonl is complete)
        check_file_weights(self.model, self.run_dir / "checkpoints" / "best" / "model.safetensors")
        average = self.dev.average(st.best)
        if not ctx.is_main:
            return Run(self.run_dir, {})
        final = write_run_predictions(self.model, self.tasks, self.data, self.run_dir, self.cfg, self.device, rt.amp,
                                      self.pad_id, self.dev.best_result, self.progress)
        grad_sync = ("flat" if rt.flat_sync else "ddp") if ctx.enabled else None
        graphs = self.stepper.graphs
        throughput = {**self.throughput, "processes": ctx.world_size, "cuda_graphs": rt.cuda_graphs,
                      "grad_sync": grad_sync, "graphs": graphs.stats() if graphs is not None else None,
                      "eval_graphs": self.model.eval_graphs and self.model.eval_graphs.stats()}
        summary = run_summary(
            self.cfg, self.tasks, final, best_epoch=st.best_epoch, average=average, throughput=throughput,
            epochs_run=len(st.history), steps=st.step, wall_s=round(time.time() - self.t_start, 2),
        )
        if self.cfg.output.plot:
            write_run_plots(self.run_dir, self.tasks, self.data["dev"], final, self.plotter)
        atomic_write_json(self.run_dir / "summary.json", summary)
        write_model_card(self.run_dir)
        log_run_end(self.run_dir, summary, self.cfg, self.tasks)
        return Run(self.run_dir, summary)

