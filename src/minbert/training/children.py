"""The helper child processes of a run (the kernel-compile children of
:mod:`minbert.training.kernel_compile`, the plot child of :mod:`minbert.training.task_plots`):
ending one that still runs, and the line of its stderr that a log names. Imports no torch."""

from __future__ import annotations

import os
import signal
import subprocess


def end_child(proc: subprocess.Popen | None, timeout_s: float = 10.0) -> None:
    """Kill ``proc`` where it still runs, with every process of its group where it leads a group
    of its own (the plot child and the workers it forked, which hold its pipes open), and reap
    it: its pipes read and closed, waiting at most ``timeout_s`` seconds."""
    if proc is None or proc.poll() is not None:
        return
    try:
        if hasattr(os, "killpg") and os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
    except OSError:  # it ended meanwhile
        pass
    try:
        proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass


def last_error_line(err: str | None) -> str:
    """The last line a child wrote to stderr, or ``"no message"``."""
    return ((err or "").strip().splitlines() or ["no message"])[-1]
