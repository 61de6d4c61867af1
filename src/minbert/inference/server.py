"""HTTP service for a trained run (FastAPI + uvicorn): ``minbert serve RUN_DIR``.

Endpoints (JSON; OpenAPI docs at ``/docs``):

* ``POST /v1/sentiment``  ``{"texts": [str]}`` -> per text: label 0..4, its name, 5 probabilities
* ``POST /v1/paraphrase`` ``{"pairs": [[str, str]]}`` -> paraphrase probabilities in [0, 1]
* ``POST /v1/similarity`` ``{"pairs": [[str, str]]}`` -> similarity scores on [0, 5]
* ``POST /v1/embed``      ``{"texts": [str]}`` -> (N, H) float embeddings (mean pooling)
* ``POST /v1/tasks/{task}`` ``{"texts": [...]}`` or ``{"pairs": [...]}`` -> any task of the model
  (custom tasks included): per item label/name/probabilities, probability, or score
* ``GET /health``         status, tasks, and the sizes of the batches formed so far
* ``GET /v1/stats``       the micro-batching statistics with a histogram of batch sizes
* ``GET /``               a demo page (plain HTML/JS, no external assets)

Malformed input (wrong types, empty text) gets 422; more than ``max_items`` items or a text
longer than ``max_chars`` characters gets 413. Concurrent requests are micro-batched: a worker
collects what arrives within ``max_wait_ms`` (up to ``max_batch`` items) and runs one forward
pass per task in a thread.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, StringConstraints, model_validator

from ..errors import MinbertError

log = logging.getLogger(__name__)

Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class TextsRequest(BaseModel):
    texts: list[Text] = Field(min_length=1, description="non-empty texts")


class PairsRequest(BaseModel):
    pairs: list[tuple[Text, Text]] = Field(min_length=1, description="pairs of non-empty texts")


class TaskRequest(BaseModel):
    """Exactly one of ``texts`` (single-sentence tasks) or ``pairs`` (pair tasks)."""

    texts: list[Text] | None = Field(None, min_length=1)
    pairs: list[tuple[Text, Text]] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one(self):
        if (self.texts is None) == (self.pairs is None):
            raise ValueError("give exactly one of 'texts' or 'pairs'")
        return self


class TaskResponse(BaseModel):
    task: str
    results: list[dict]


class SentimentResult(BaseModel):
    label: int
    name: str
    probabilities: list[float]


class SentimentResponse(BaseModel):
    results: list[SentimentResult]


class ParaphraseResponse(BaseModel):
    probabilities: list[float]


class SimilarityResponse(BaseModel):
    scores: list[float]


class EmbedResponse(BaseModel):
    embeddings: list[list[float]]


class MicroBatcher:
    """Collects concurrent requests of one kind into one forward pass.

    ``submit(kind, items)`` waits for the results of its items. The worker takes the first
    waiting request, then whatever else arrives within ``max_wait_ms`` up to ``max_batch``
    items, groups the requests by kind, runs ``run(kind, items)`` once per kind in a thread, and
    hands each request its slice of the results. ``batch_sizes`` counts the batches formed.
    """

    def __init__(self, run, max_batch: int = 64, max_wait_ms: float = 5.0):
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

    async def submit(self, kind: str, items: list):
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
                except asyncio.TimeoutError:
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
        largest batch, requests ``in_flight``; with ``histogram`` also ``{size: count}`` (sizes as strings, for JSON)."""
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


def create_app(predictor, max_items: int = 256, max_chars: int = 10_000, max_batch: int = 64, max_wait_ms: float = 5.0) -> FastAPI:
    """The FastAPI app serving one :class:`minbert.inference.predictor.Predictor`.

    Args:
        max_items: items (texts or pairs) per request; more gives 413.
        max_chars: characters per text; a longer text gives 413.
        max_batch: items the micro-batcher collects into one forward pass (a larger request
            runs alone, batched inside the predictor).
        max_wait_ms: how long the micro-batcher waits for more requests after the first.

    Responses: 200 JSON as documented at ``/docs``; 422 for malformed input (pydantic's
    ``detail`` list, or a one-line ``detail`` for a user error the predictor raises); 413 over
    the limits; 404 for a task the model lacks.
    """

    def run(kind: str, items: list):
        if kind == "sentiment":
            return [SentimentResult(label=s.label, name=s.name, probabilities=list(s.probabilities)) for s in predictor.sentiment(items)]
        if kind == "paraphrase":
            return predictor.paraphrase(items).tolist()
        if kind == "similarity":
            return predictor.similarity(items).tolist()
        if kind.startswith("task:"):
            return predictor.predict(kind[5:], items)
        return predictor.embed(items).tolist()

    batcher = MicroBatcher(run, max_batch=max_batch, max_wait_ms=max_wait_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="minbert", description="Multi-task BERT: sentiment, paraphrase, similarity, embeddings.", lifespan=lifespan)
    app.state.batcher = batcher

    @app.exception_handler(MinbertError)
    async def _user_error(request: Request, exc: MinbertError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    def check_limits(items: list) -> None:
        """413 for more than max_items items, or any text longer than max_chars characters."""
        if len(items) > max_items:
            raise HTTPException(413, f"{len(items)} items in one request; the limit is {max_items}")
        for i, item in enumerate(items):
            for t in (item,) if isinstance(item, str) else item:
                if len(t) > max_chars:
                    raise HTTPException(413, f"item {i} has a text of {len(t)} characters; the limit is {max_chars}")

    def need(task: str) -> None:
        if task not in predictor.tasks:
            raise HTTPException(404, f"this model has no {task!r} head (it has {predictor.tasks})")

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "tasks": predictor.tasks, "batching": batcher.stats()}

    @app.get("/v1/stats")
    async def stats() -> dict:
        """Micro-batching: batches formed, items, mean and largest batch, histogram of sizes."""
        return batcher.stats(histogram=True)

    @app.post("/v1/tasks/{task}", response_model=TaskResponse)
    async def task_predict(task: str, req: TaskRequest):
        """Any task of the model, built-in or custom: ``texts`` for single-sentence tasks,
        ``pairs`` for pair tasks."""
        need(task)
        pair = predictor.task(task).pair
        if pair != (req.pairs is not None):
            raise HTTPException(422, f"task {task!r} takes {'pairs' if pair else 'texts'}")
        items = [tuple(p) for p in req.pairs] if pair else req.texts
        check_limits(items)
        return TaskResponse(task=task, results=await batcher.submit(f"task:{task}", items))

    @app.post("/v1/sentiment", response_model=SentimentResponse)
    async def sentiment(req: TextsRequest):
        need("sst")
        check_limits(req.texts)
        return SentimentResponse(results=await batcher.submit("sentiment", req.texts))

    @app.post("/v1/paraphrase", response_model=ParaphraseResponse)
    async def paraphrase(req: PairsRequest):
        need("qqp")
        check_limits(req.pairs)
        return ParaphraseResponse(probabilities=await batcher.submit("paraphrase", [tuple(p) for p in req.pairs]))

    @app.post("/v1/similarity", response_model=SimilarityResponse)
    async def similarity(req: PairsRequest):
        need("sts")
        check_limits(req.pairs)
        return SimilarityResponse(scores=await batcher.submit("similarity", [tuple(p) for p in req.pairs]))

    @app.post("/v1/embed", response_model=EmbedResponse)
    async def embed(req: TextsRequest):
        check_limits(req.texts)
        return EmbedResponse(embeddings=await batcher.submit("embed", req.texts))

    @app.get("/", response_class=HTMLResponse)
    async def demo() -> str:
        return (Path(__file__).parent / "demo.html").read_text(encoding="utf-8")

    return app


def serve(
    run_dir: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "auto",
    max_items: int = 256,
    max_chars: int = 10_000,
    access_log: bool = True,
) -> None:
    """Load a run (or an export) and serve it until SIGINT/SIGTERM: uvicorn then stops
    accepting connections and lets in-flight requests finish (up to 30 s)."""
    import uvicorn

    from .predictor import load

    app = create_app(load(run_dir, device=device), max_items=max_items, max_chars=max_chars)
    log.info("serving %s on http://%s:%d (docs at /docs)", run_dir, host, port)
    # keep-alive 30 s (uvicorn's default is 5): a client reusing a connection the server is just
    # closing gets a read error on a POST, which it may not retry
    uvicorn.run(
        app, host=host, port=port, log_level="info", access_log=access_log, timeout_keep_alive=30, timeout_graceful_shutdown=30
    )
