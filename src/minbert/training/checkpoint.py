"""Writing and reading the training state of a run (``checkpoints/step-N/``), and the RNG
states it holds (:func:`rng_state`, :func:`set_rng_state`).

The run-folder layout and the readers that inference shares live in :mod:`minbert.runs`;
atomic writes in :mod:`minbert.io`. Pruned step folders are renamed to ``checkpoints/.trash-*``
first, then deleted.

``train_state.pt`` holds only tensors and plain containers (dict, list, tuple, str, int, float,
bool, None) and is read with ``torch.load(weights_only=True)``: reading it never runs code.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import random
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..io import atomic_write_file, atomic_write_json, os_reason, save_weights
from ..runs import CHECKPOINT_FILES, TRAIN_STATE, last_checkpoint

log = logging.getLogger(__name__)

_STEP_DIR = re.compile(r"step-(\d+)")
_PLAIN = (str, int, float, bool, type(None))


def check_plain(obj: Any, where: str = "train_state") -> None:
    """Check that ``obj`` holds only tensors and plain containers (dict with str/int keys, list,
    tuple, str, int, float, bool, None): what ``torch.load(weights_only=True)`` reads back.

    Raises:
        TypeError: naming the path of the first other object (a bug in the code that built it).
    """
    if isinstance(obj, torch.Tensor) or type(obj) in _PLAIN:
        return
    if type(obj) is dict:
        for k, v in obj.items():
            if type(k) not in (str, int):
                raise TypeError(f"{where}: key {k!r} of type {type(k).__name__} is not str or int")
            check_plain(v, f"{where}.{k}")
        return
    if type(obj) in (list, tuple):
        for i, v in enumerate(obj):
            check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(f"{where}: {type(obj).__module__}.{type(obj).__qualname__} is not a tensor or plain container")


def host_snapshot(obj: Any, buffers: Iterator[torch.Tensor] | None = None) -> Any:
    """A copy of a tree of tensors and plain containers whose tensors are detached host copies:
    what a background write may serialise while training goes on changing the originals in place.
    GPU tensors are copied into pinned host memory without blocking, then the host waits once for
    all of them (one sync per snapshot instead of one per tensor). ``buffers``: the host tensors
    to copy into, one per entry of :func:`snapshot_layout` in its order (default: new ones)."""
    devices: set[torch.device] = set()
    out = _host_copies(obj, devices, buffers)
    for device in devices:
        torch.cuda.current_stream(device).synchronize()
    return out


def snapshot_layout(obj: Any) -> tuple[tuple[tuple[int, ...], torch.dtype, bool], ...]:
    """(shape, dtype, pinned) of the host copy of each strided tensor of ``obj``, in the order
    :func:`host_snapshot` copies them (depth first); pinned for CUDA tensors."""
    if isinstance(obj, torch.Tensor):
        return ((tuple(obj.shape), obj.dtype, obj.is_cuda),) if obj.layout == torch.strided else ()
    if isinstance(obj, dict):
        return tuple(e for v in obj.values() for e in snapshot_layout(v))
    if type(obj) in (list, tuple):
        return tuple(e for v in obj for e in snapshot_layout(v))
    return ()


def _host_copies(obj: Any, devices: set[torch.device], buffers: Iterator[torch.Tensor] | None) -> Any:
    if isinstance(obj, torch.Tensor):
        t = obj.detach()
        if t.layout != torch.strided:  # (a sparse tensor: the plain copy)
            return t.to("cpu", copy=True)
        if t.device.type == "cuda":
            devices.add(t.device)
        out = next(buffers) if buffers is not None else torch.empty(t.shape, dtype=t.dtype, pin_memory=t.is_cuda)
        return out.copy_(t, non_blocking=t.is_cuda)
    if isinstance(obj, dict):  # a state_dict is an OrderedDict: a plain dict copy
        return {k: _host_copies(v, devices, buffers) for k, v in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(_host_copies(v, devices, buffers) for v in obj)
    return obj


class BackgroundWriter:
    """Checkpoint files written on one background thread, in the order they were submitted, so
    that the next epoch trains while they reach the disk (each write is atomic, as before: a kill
    mid-write leaves the previous checkpoint as the one that resumes). At most ``max_pending``
    writes are queued: a submit beyond that waits for the oldest. The arguments must not change
    after submission: pass :meth:`snapshot` (or :func:`host_snapshot`) copies.

    A failed write raises its error (e.g. :class:`CheckpointError`) in the training thread, at
    the next :meth:`submit` or :meth:`wait`, and every later write is dropped unrun: a checkpoint
    queued behind failed best weights would otherwise name a best epoch whose weights are not on
    disk. A writer that failed stays failed (each later call raises the same error)."""

    def __init__(self, max_pending: int = 2):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="minbert-writer")
        self._pending: list = []
        self.max_pending = max_pending
        self.error: BaseException | None = None  # the first failed write's error (set by the thread)
        self._reported = False  # the error was raised in the caller
        self._free: dict[tuple, list[list[torch.Tensor]]] = {}  # snapshot layout -> idle buffer sets
        self._held: list[tuple[Any, list]] = []  # (a write's future, the buffer sets its arguments use)
        self._unsubmitted: list[tuple[tuple, list[torch.Tensor]]] = []  # taken since the last submit

    def snapshot(self, obj: Any) -> Any:
        """:func:`host_snapshot` of ``obj`` into host buffers that this writer reuses; submit it
        next. A snapshot's buffers come back to the writer once the write submitted after it has
        finished, and a later snapshot of the same layout (:func:`snapshot_layout`: the same
        model, the same optimizer state) copies into them instead of allocating: pinned host
        memory is slow to allocate (about 0.17 s per MiniLM checkpoint of a default run on an
        H200, every epoch). The writer keeps the sets it has made: per layout, as many as were
        in use at once."""
        self._reap()
        layout = snapshot_layout(obj)
        idle = self._free.get(layout)
        buffers = idle.pop() if idle else [torch.empty(s, dtype=d, pin_memory=p) for s, d, p in layout]
        self._unsubmitted.append((layout, buffers))
        return host_snapshot(obj, iter(buffers))

    def _reap(self) -> None:
        """Return the buffer sets of finished writes to the idle ones."""
        busy = []
        for future, sets in self._held:
            if not future.done():
                busy.append((future, sets))
                continue
            for layout, buffers in sets:
                self._free.setdefault(layout, []).append(buffers)
        self._held = busy

    def _run(self, fn: Callable[..., Any], args: tuple) -> None:
        if self.error is not None:
            return  # behind a failed write: dropped
        try:
            fn(*args)
        except BaseException as e:
            self.error = e
            raise

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)``; first re-raise the error of a failed write, if any."""
        self._settle(lambda: len(self._pending) >= self.max_pending)
        future = self._pool.submit(self._run, fn, args)
        self._pending.append(future)
        self._held.append((future, self._unsubmitted))
        self._unsubmitted = []

    def wait(self, raise_error: bool = True) -> None:
        """Block until every queued write is on disk (or dropped behind a failed one). Raises the
        first failed write's error, unless ``raise_error`` is False (on the way out of another
        error, which then stays the one the caller sees; the write error is logged)."""
        reported = self._reported
        try:
            self._settle(lambda: bool(self._pending))
        except BaseException as e:
            if raise_error or e is not self.error:  # (a KeyboardInterrupt while waiting goes on)
                raise
            if not reported:
                log.warning("a checkpoint write failed: %s", e)

    def _settle(self, blocked: Callable[[], bool]) -> None:
        """Wait for the oldest write while ``blocked()``, drop finished ones, raise a failure. A
        job leaves the queue only once it is done, so an interrupted wait loses none."""
        while blocked():
            self._pending[0].exception()  # blocks; KeyboardInterrupt leaves the job queued
            self._pending.pop(0)
        self._pending = [f for f in self._pending if not f.done()]
        if self.error is not None:
            if self._reported:  # raised again: without the earlier raises' frames
                raise self.error.with_traceback(None)
            self._reported = True
            raise self.error


def _kept(run_dir: Path) -> str:
    """What a failed write leaves to resume from, for its error message."""
    prev = last_checkpoint(run_dir, check_files=False)
    if prev is None:
        return "the run has no earlier checkpoint"
    return f"the last checkpoint ({prev.name}) is intact; then resume with: minbert train --resume {run_dir}"


def save_best_weights(run_dir: Path, model_state: dict, metadata: dict) -> None:
    """Write ``checkpoints/best/model.safetensors`` atomically (the previous best stays on failure).

    Raises:
        CheckpointError: the file cannot be written (disk full, no permission, ...), naming it.
    """
    path = Path(run_dir) / "checkpoints" / "best" / "model.safetensors"
    try:
        save_weights(path, model_state, metadata)
    except OSError as e:
        raise CheckpointError(f"{path}: cannot write the best weights: {os_reason(e)}; {_kept(run_dir)}") from None


def save_checkpoint(run_dir: Path, step: int, model_state: dict, train_state: dict, keep: int = 2) -> Path:
    """Write ``checkpoints/step-N/`` (weights + training state), then point ``last.json`` at it,
    then delete older step folders beyond ``keep``. The pointer is written last, so an
    interrupted save leaves the previous checkpoint as the one that resumes. A pruned folder is
    first renamed to ``.trash-*`` (atomic), so a kill while deleting never leaves a half-deleted
    ``step-N`` folder; :func:`clean_checkpoints` removes such leftovers.

    Raises:
        TypeError: ``train_state`` holds something other than tensors and plain containers.
        CheckpointError: the files cannot be written (disk full, no permission, ...); the
            previous checkpoint stays the one that resumes.
    """
    check_plain(train_state)
    ckpt_root = Path(run_dir) / "checkpoints"
    folder = ckpt_root / f"step-{step:08d}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        save_weights(folder / "model.safetensors", model_state, {"step": step})
        atomic_write_file(folder / TRAIN_STATE, lambda tmp: torch_save_file(train_state, tmp))
        atomic_write_json(ckpt_root / "last.json", {"dir": folder.name, "step": step})
    except OSError as e:
        raise CheckpointError(f"{folder}: cannot write the checkpoint: {os_reason(e)}; {_kept(run_dir)}") from None
    steps = sorted(p for p in ckpt_root.glob("step-*") if p.is_dir())
    for old in steps[:-keep]:
        if old != folder:
            with contextlib.suppress(OSError):  # a folder that cannot be removed stays (as before)
                _remove_dir(old)
    return folder


class _KeepWriteError:
    """A binary file for ``torch.save`` that keeps the OSError its ``write`` raised (torch reports
    a failed write as a RuntimeError without the errno: a full disk would not read as one)."""

    def __init__(self, fh: Any):
        self.fh, self.error = fh, None

    def write(self, data: Any) -> int:
        try:
            return self.fh.write(data)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        self.fh.flush()


def torch_save_file(obj: Any, path: Path) -> None:
    """``torch.save(obj)`` into the file at ``path`` through a Python file object: the writes
    release the interpreter (a background write then barely slows the training thread, where
    ``torch.save`` into a ``BytesIO`` holds it while it copies: ``benchmarks/checkpoint_writers.py``),
    and a failed write raises its OSError (e.g. ENOSPC)."""
    with open(path, "wb") as fh:
        sink = _KeepWriteError(fh)
        try:
            torch.save(obj, sink)
        except RuntimeError:
            if sink.error is not None:
                raise sink.error from None
            raise


def _remove_dir(folder: Path) -> None:
    """Delete a folder without ever leaving it half-deleted under its own name: rename it to a
    ``.trash-*`` folder beside it (atomic), then delete that."""
    trash = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".trash-"))
    try:
        os.replace(folder, trash / folder.name)
    except OSError:
        trash.rmdir()
        raise
    shutil.rmtree(trash, ignore_errors=True)


def clean_checkpoints(run_dir: Path) -> list[str]:
    """Remove what a killed run can leave in ``checkpoints/``: ``.trash-*`` folders of an
    interrupted prune, temporary files and folders of interrupted writes (``.*.tmp``), step folders newer
    than the one ``last.json`` names (written after it, never made the resume point), and older
    step folders that lack a file. The folder ``last.json`` names is never touched. Returns the
    names removed (paths relative to ``checkpoints/``).

    Raises:
        CheckpointError: ``last.json`` is unreadable.
    """
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    last = last_checkpoint(run_dir, check_files=False)
    last_step = int(_STEP_DIR.fullmatch(last.name).group(1)) if last and _STEP_DIR.fullmatch(last.name) else -1
    removed = []
    for p in sorted(root.iterdir()):
        m = _STEP_DIR.fullmatch(p.name)
        stale = p.is_dir() and (
            p.name.startswith(".trash-")
            or (m is not None and p != last
                and (int(m.group(1)) > last_step or not all((p / f).is_file() for f in CHECKPOINT_FILES)))
        )
        if stale:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p.name)
    for tmp in sorted(root.rglob(".*.tmp")):  # a file of atomic_write_bytes, a folder of atomic_write_file
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
        elif tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            continue
        removed.append(str(tmp.relative_to(root)))
    return removed


def load_train_state(folder: Path) -> dict:
    """The training state of a checkpoint folder (optimizer, lr schedule, task streams, loop
    counters, RNG states), read with ``torch.load(weights_only=True)``: tensors and plain
    containers only, so nothing in the file can run code.

    Raises:
        CheckpointError: the file is missing or unreadable, or it holds Python objects that only
            pickle can rebuild (written by an older minbert, or planted: not resumable).
    """
    path = Path(folder) / TRAIN_STATE
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint file not found") from None
    except pickle.UnpicklingError:
        raise CheckpointError(
            f"{path}: holds Python objects that only pickle can load (the run folder was written by an older "
            "minbert, or is not trusted), so the run cannot be resumed; evaluate, predict and serve still work"
        ) from None
    except Exception as e:  # torch.load raises many types for a corrupt file
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CheckpointError(f"{path}: unreadable ({type(e).__name__}: {first})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: unreadable (not a training state)")
    return state


@contextlib.contextmanager
def restoring(path: Path, optimizer: torch.optim.Optimizer, scheduler: Any) -> Iterator[None]:
    """Where a training state (``path``, read by :func:`load_train_state`) is put back into the
    optimizer, schedule, task streams, loop and RNGs: what those raise on a state that is damaged
    or from another run (a missing key, a wrong type, an optimizer tensor whose shape is not its
    parameter's, a schedule of another number of groups: :func:`check_restored` at the end)
    becomes one CheckpointError line naming the file."""
    try:
        yield
        check_restored(optimizer, scheduler)
    except torch.OutOfMemoryError:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise CheckpointError(f"{path}: not a training state this run can resume ({type(e).__name__}: "
                              f"{first})") from None


def _number(x: object) -> bool:
    return type(x) in (int, float) and bool(np.isfinite(x))


def check_restored(optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    """Raises ValueError where a loaded optimizer's per-parameter tensor (moments, master copy)
    has another shape than its parameter, a parameter group's lr, eps, weight decay or betas are
    not finite numbers, or the loaded lr schedule's base rates are not one finite number per group
    or its step counter no integer (``load_state_dict`` looks at none of these: the first step
    would fail, or leave a group's lr unscheduled)."""
    lrs, groups = scheduler.base_lrs, len(optimizer.param_groups)
    if len(lrs) != groups or not all(_number(x) for x in lrs):
        raise ValueError(f"the lr schedule's base_lrs {lrs!r} are not {groups} finite numbers, one per group")
    if type(scheduler.last_epoch) is not int:
        raise ValueError(f"the lr schedule's last_epoch {scheduler.last_epoch!r} is not an integer")
    for i, group in enumerate(optimizer.param_groups):
        for key in ("lr", "initial_lr", "eps", "weight_decay", "betas"):
            values = group.get(key, ())
            if not all(_number(v) for v in (values if isinstance(values, (list, tuple)) else (values,))):
                raise ValueError(f"optimizer param_groups[{i}].{key} is {values!r}, not finite numbers")
    for p, state in optimizer.state.items():
        for key, t in state.items():
            if torch.is_tensor(t) and t.dim() > 0 and t.shape != p.shape:
                raise ValueError(f"optimizer state {key} of shape {tuple(t.shape)} for a parameter of "
                                 f"shape {tuple(p.shape)}")


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
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
