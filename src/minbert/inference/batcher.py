"""Micro-batching for the HTTP service: concurrent requests of one kind share one forward pass."""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


class MicroBatcher:
    """Collects concurrent requests of one kind into one forward pass.

    ``submit(kind, items)`` waits for the results of its items. The worker takes the first
    waiting request, then whatever else arrives within ``max_wait_ms`` up to ``max_batch``
    items, groups the requests by kind, runs ``run(kind, items)`` once per kind in a thread, and
    hands each request its slice of the results. ``batch_sizes`` counts the batches formed.
    """

    def __init__(self, run: Callable[[str, list], list], max_batch: int = 64, max_wait_ms: float = 5.0):
        self.run, self.max_batch, self.max_wait = run, max_batch, max_wait_ms / 1000
        self.queue: asyncio.Queue = asyncio.Queue()
        self.batch_sizes: collections.Counter = collections.Counter()
        self.in_flight = 0  # requests submitted and not yet answered
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._worker())

    async def stop(self) -> None:
        await self.queue.join()  # let queued requests finish
        if self._task is not None:
            self._task.cancel()

    async def submit(self, kind: str, items: list) -> list:
        fut = asyncio.get_running_loop().create_future()
        self.in_flight += 1
        try:
            await self.queue.put((kind, items, fut))
            return await fut
        finally:
            self.in_flight -= 1

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            first = await self.queue.get()
            taken = [first]
            n = len(first[1])
            deadline = loop.time() + self.max_wait
            while n < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    nxt = await asyncio.wait_for(self.queue.get(), timeout)
                except TimeoutError:
                    break
                taken.append(nxt)
                n += len(nxt[1])
            by_kind: dict[str, list] = collections.defaultdict(list)
            for req in taken:
                by_kind[req[0]].append(req)
            for kind, reqs in by_kind.items():
                items = [x for _, its, _ in reqs for x in its]
                self.batch_sizes[len(items)] += 1
                try:
                    results = await loop.run_in_executor(None, self.run, kind, items)
                except Exception as e:  # handed to the waiting requests, which answer 500
                    for _, _, fut in reqs:
                        if not fut.done():
                            fut.set_exception(e)
                else:
                    start = 0
                    for _, its, fut in reqs:
                        if not fut.done():
                            fut.set_result(results[start : start + len(its)])
                        start += len(its)
            for _ in taken:
                self.queue.task_done()

    def stats(self, histogram: bool = False) -> dict:
        """``batches`` formed, ``items`` in them, ``mean_batch`` items per forward pass, the
        largest batch, requests ``in_flight``; with ``histogram`` also ``{size: count}`` (sizes as
        strings, for JSON)."""
        sizes = dict(self.batch_sizes)  # a snapshot: the worker may add to the counter meanwhile
        total = sum(sizes.values())
        items = sum(k * v for k, v in sizes.items())
        out = {
            "batches": total,
            "items": items,
            "mean_batch": items / total if total else 0.0,
            "max_batch": max(sizes, default=0),
            "in_flight": self.in_flight,
        }
        if histogram:
            out["histogram"] = {str(k): sizes[k] for k in sorted(sizes)}
        return out
