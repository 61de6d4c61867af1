"""Stopping a training run on SIGINT/SIGTERM: record the signal, checkpoint between optimizer
steps, end with :class:`minbert.errors.TrainingInterrupted` (exit 130/143 from the CLI)."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from types import FrameType

from ..errors import CheckpointError, TrainingInterrupted
from ..runs import last_checkpoint

log = logging.getLogger(__name__)


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

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum
        name = signal.Signals(signum).name
        log.warning("%s received: stopping after this optimizer step (again to stop at once)", name)

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
    return TrainingInterrupted(
        f"interrupted ({name}); {what}: {folder}; resume with: minbert train --resume {run_dir}", signum
    )

