"""Progress bars: one look for every phase that can take more than a moment.

Bars go to stderr through ``tqdm.auto`` with tqdm's default layout (count, elapsed time and the
``{remaining}`` estimate), are cleared when done (``leave=False``) and draw at most every 0.1 s on
a terminal. When stderr is not a terminal (a log file, a pipe) they still draw, at most every
:data:`LOG_INTERVAL_S` seconds, so a log gets a line of progress now and then, not a flood.
"""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

TTY_INTERVAL_S = 0.1  # seconds between redraws on a terminal
LOG_INTERVAL_S = 5.0  # seconds between redraws when stderr is a file or a pipe


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "batch") -> tqdm:
    """A bar for ``total`` units of work (rows or batches), shown only when ``enabled``.

    Use as a context manager and call ``update(n)``; a disabled bar accepts the same calls and
    draws nothing.
    """
    stream = sys.stderr
    tty = bool(getattr(stream, "isatty", lambda: False)())
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=stream,
        disable=not enabled,
        leave=False,
        dynamic_ncols=tty,
        mininterval=TTY_INTERVAL_S if tty else LOG_INTERVAL_S,
    )
