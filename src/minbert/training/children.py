"""The helper child processes of a run (the kernel-compile children of
:mod:`minbert.training.kernel_compile`, the plot child of :mod:`minbert.training.task_plots`):
ending one that still runs, and the line of its stderr that a log names. Imports no torch."""

from __future__ import annotations

import subprocess


def end_child(proc: subprocess.Popen | None) -> None:
    """Kill ``proc`` where it still runs, and reap it (its pipes read and closed)."""
    if proc is not None and proc.poll() is None:
        proc.kill()
        proc.communicate()


def last_error_line(err: str | None) -> str:
    """The last line a child wrote to stderr, or ``"no message"``."""
    return ((err or "").strip().splitlines() or ["no message"])[-1]
