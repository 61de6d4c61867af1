"""The time stamps of the phase-timing scripts (s11-timing.py, s12-call1-timing.py,
s12-timing.py): seconds since the script started, on stderr, and per-label sums."""

import sys
import time
from collections import defaultdict

T0 = time.time()  # the importing script's start
TOTALS: dict = defaultdict(lambda: [0.0, 0])  # label -> [seconds, calls]


def stamp(msg: str) -> None:
    print(f"[t] {time.time() - T0:8.3f} {msg}", file=sys.stderr, flush=True)


def timed(owner: object, name: str, label: str | None = None, loud: bool = True) -> None:
    """Wrap ``owner.name`` so that its calls add to TOTALS[label]; ``loud``: stamp each start and end."""
    fn, label = getattr(owner, name), label or name

    def wrapper(*a, **k):
        t = time.time()
        if loud:
            stamp(f"{label} starts")
        try:
            return fn(*a, **k)
        finally:
            dt = time.time() - t
            TOTALS[label][0] += dt
            TOTALS[label][1] += 1
            if loud:
                stamp(f"{label} took {dt:.3f} s")

    setattr(owner, name, wrapper)


def print_sums() -> None:
    for label, (s, n) in sorted(TOTALS.items()):
        print(f"[sum] {label}: {s:.3f} s in {n} calls", file=sys.stderr, flush=True)
