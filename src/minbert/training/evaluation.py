"""Dev evaluation during training, and model selection: the best epoch's weights
(``checkpoints/best``, chosen at epoch ends only) and checkpoint averaging
(``train.average_last``, ``checkpoints/average``)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import torch

from ..distributed import DistContext
from ..inference.evaluate import EvalResult, evaluate
from ..io import save_weights
from ..model.multitask import MultitaskModel
from ..tasks.base import Task
from .checkpoint import BackgroundWriter, host_snapshot, save_best_weights
from .reporting import MetricsLog, format_metrics
from .state import LoopState, track_best

log = logging.getLogger(__name__)


class DevEvaluator:
    """Evaluates the dev set of a training run, logs the results (``metrics.jsonl``, the trackers)
    and keeps the weights that a run ends with.

    Args:
        model, tasks, dev: the model, the trained tasks and their dev splits.
        device, amp, pad_id, batch_size: how to evaluate (``train.eval_batch_size`` rows a batch).
        ctx: this process's place in a torchrun job (evaluation is collective; rank 0 writes).
        metrics: the run's metrics log.
        run_dir: the run folder.
        average_last: how many epochs' weights checkpoint averaging keeps (0: off).
        writer: writes ``checkpoints/best`` in the background (the caller waits for it).
    """

    def __init__(self, model: MultitaskModel, tasks: dict[str, Task], dev: dict, device: torch.device, amp: bool,
                 pad_id: int, batch_size: int, ctx: DistContext, metrics: MetricsLog, run_dir: Path,
                 average_last: int = 0, progress: bool = False, writer: BackgroundWriter | None = None):
        self.model, self.tasks, self.dev, self.device, self.amp = model, tasks, dev, device, amp
        self.progress = progress  # a progress bar per task at each evaluation
        self.pad_id, self.batch_size, self.ctx, self.metrics = pad_id, batch_size, ctx, metrics
        self.run_dir, self.average_last = run_dir, average_last
        self.writer = writer  # writes the best weights in the background (None: at once)
        self.best_result: EvalResult | None = None  # dev predictions of the best epoch, if seen in this process
        self.recent: list[dict] = []  # the last average_last epochs' weights, on the host

    def evaluate(self) -> EvalResult:
        """The dev metrics and predictions of the current weights."""
        return evaluate(self.model, self.tasks, self.dev, self.device, self.batch_size, self.amp, self.pad_id, self.ctx,
                        self.progress)

    def within_epoch(self, step: int, epochs_done: float) -> dict:
        """A dev evaluation between optimizer steps (``train.eval_every``), after ``step`` steps and
        ``epochs_done`` epochs (a fraction): a ``dev`` record in ``metrics.jsonl`` and
        ``dev_steps/<metric>`` at the step in tensorboard. It chooses no model. Returns the flat
        metrics."""
        result = self.evaluate()
        flat = result.flat()
        log.info("step %d dev: %s", step, format_metrics(flat))
        record = {"step": step, "epoch": round(epochs_done, 4), "dev": flat, "dev_detail": result.metrics}
        self.metrics.log_dev(record, flat, "dev_steps", step)
        return flat

    def epoch_end(self, state: LoopState, epoch: int) -> dict:
        """After epoch ``epoch`` (1-based): evaluate, log (``metrics.jsonl``; ``dev/<metric>`` at
        the epoch in tensorboard), append to ``state.history``, keep the weights for checkpoint
        averaging, and when the overall score is the best so far (:func:`track_best`) write them
        to ``checkpoints/best`` (rank 0). Returns the flat metrics."""
        result = self.evaluate()
        flat = result.flat()
        log.info("epoch %d dev: %s", epoch, format_metrics(flat))
        self.metrics.log_dev({"step": state.step, "epoch": epoch, "dev": flat, "dev_detail": result.metrics},
                             flat, "dev", epoch)
        state.history.append({"epoch": epoch, "step": state.step, **flat})
        if self.average_last:
            self.recent.append(host_snapshot(self.model.state_dict()))
            del self.recent[: -self.average_last]
        if track_best(state, flat["overall"], epoch):
            self.best_result = result
            if self.ctx.is_main:
                meta = {"epoch": epoch, "step": state.step, "dev": dict(flat)}
                if self.writer is not None:
                    weights = self.writer.snapshot(self.model.state_dict())
                    self.writer.submit(save_best_weights, self.run_dir, weights, meta)
                else:
                    save_best_weights(self.run_dir, host_snapshot(self.model.state_dict()), meta)
        return flat

    def average(self, best: float | None) -> dict | None:
        """Checkpoint averaging, with the best epoch's weights loaded: evaluate the mean of the
        kept epochs' weights; keep it (and write ``checkpoints/average``) when its overall dev
        score beats ``best``, else restore the best weights. Returns ``summary.json``'s
        ``checkpoint_average`` (``epochs``, ``dev``: flat metrics, ``chosen``), None when off."""
        if not self.average_last or not self.recent:
            return None
        n = len(self.recent)
        best_state = host_snapshot(self.model.state_dict())
        self.model.load_state_dict(
            {k: sum(sd[k].double() for sd in self.recent).div(n).to(v.dtype) for k, v in best_state.items()}
        )
        result = self.evaluate()
        average = {"epochs": n, "dev": result.flat()}
        log.info("average of the last %d epochs' weights, dev: %s", n, format_metrics(result.flat()))
        best_score = best if best is not None else -math.inf
        if result.overall is not None and result.overall > best_score:
            average["chosen"] = True
            self.best_result = result
            if self.ctx.is_main:
                save_weights(self.run_dir / "checkpoints" / "average" / "model.safetensors", self.model.state_dict(),
                             {"epochs": n})
        else:
            average["chosen"] = False
            self.model.load_state_dict(best_state)
        return average
