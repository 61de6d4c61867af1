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

Malformed input (wrong types, empty text, text that is not valid Unicode) gets 422; more than
``max_items`` items, a text longer than ``max_chars`` characters, or a body over ``max_body_bytes``
bytes gets 413 (the body limit is enforced while the body is read). A request whose headers and body
have not fully arrived ``read_timeout`` seconds after its first byte has its connection closed.
Concurrent requests are micro-batched: a worker collects what arrives within ``max_wait_ms`` (up to
``max_batch`` items) and runs one forward pass per task in a thread.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import h11
from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, StringConstraints, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from ..errors import ConfigError, MinbertError
from .batcher import MicroBatcher

if TYPE_CHECKING:
    from .predictor import Predictor

log = logging.getLogger(__name__)


# a text that is not valid Unicode (a lone surrogate, "\ud800" in JSON) fails pydantic's str check
# (422 "string_unicode"); the 422 answer then leaves out the input it cannot encode
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


def default_max_body_bytes(max_items: int, max_chars: int) -> int:
    """Bytes of the largest valid request body: ``max_items`` pairs of two texts of ``max_chars``
    characters, each character written as a 12-byte JSON escape (an astral character, e.g. an
    emoji, as two ``\\uXXXX``; UTF-8 takes at most 4 bytes, a BMP escape 6), plus 64 bytes per item
    for quotes, brackets, separators and indentation, plus 1 KiB for the rest:
    ``max_items * (2 * max_chars * 12 + 64) + 1024`` (defaults 256 and 10000: 61,457,408 bytes)."""
    return max_items * (2 * max_chars * 12 + 64) + 1024


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``max_bytes`` bytes, found while it is read.

    A Content-Length over the limit is answered before the app runs (nothing of the body is read);
    a body without one (chunked) is counted as its chunks arrive and refused at the first chunk
    past the limit, so at most ``max_bytes`` plus one chunk (up to 64 KiB) is held. The server
    then discards the rest of the body (bounded by the read timeout) and keeps the connection.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        detail = f"the request body is larger than {self.max_bytes} bytes (the server's --max-body-bytes)"
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)
        seen = 0

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, detail)  # FastAPI's body reading passes HTTPExceptions on
            return message

        await self.app(scope, limited_receive, send)


MAX_ECHO_BYTES = 1000  # the most of a bad request's input a 422 answer echoes, per entry


def _echo_safe(error: dict) -> dict:
    """One pydantic error less the entries (e.g. ``input``) that cannot be written as UTF-8 JSON:
    text with a lone surrogate, and NaN or infinite numbers (Python's JSON parser reads ``NaN``,
    ``Infinity`` and ``1e999``; strict JSON cannot write them back), and those longer than
    ``MAX_ECHO_BYTES`` (a large bad body would otherwise come back whole, held twice in memory)."""

    def ok(value: object) -> bool:
        try:
            return len(json.dumps(value, ensure_ascii=False, allow_nan=False).encode("utf-8")) <= MAX_ECHO_BYTES
        except (UnicodeEncodeError, TypeError, ValueError):
            return False

    return {k: v for k, v in error.items() if ok(v)}


def create_app(
    predictor: Predictor,
    max_items: int = 256,
    max_chars: int = 10_000,
    max_batch: int = 64,
    max_wait_ms: float = 5.0,
    max_body_bytes: int | None = None,
) -> FastAPI:
    """The FastAPI app serving one :class:`minbert.inference.predictor.Predictor`.

    Args:
        max_items: items (texts or pairs) per request; more gives 413.
        max_chars: characters per text; a longer text gives 413.
        max_body_bytes: request body bytes, checked while the body is read; more gives 413.
            None: :func:`default_max_body_bytes` of ``max_items`` and ``max_chars``.
        max_batch: items the micro-batcher collects into one forward pass (a larger request
            runs alone, batched inside the predictor).
        max_wait_ms: how long the micro-batcher waits for more requests after the first.

    Responses: 200 JSON as documented at ``/docs``; 422 for malformed input (pydantic's
    ``detail`` list, or a one-line ``detail`` for a user error the predictor raises); 413 over
    the limits; 404 for a task the model lacks.

    Raises:
        ConfigError: ``max_body_bytes`` below 1.
    """
    if max_body_bytes is None:
        max_body_bytes = default_max_body_bytes(max_items, max_chars)
    if max_body_bytes < 1:
        raise ConfigError(f"max body bytes {max_body_bytes}: must be >= 1")
    batcher = MicroBatcher(functools.partial(_run, predictor), max_batch=max_batch, max_wait_ms=max_wait_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="minbert", description="Multi-task BERT: sentiment, paraphrase, similarity, embeddings.",
        lifespan=lifespan,
    )
    app.state.batcher = batcher
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    _add_error_handlers(app)
    _add_routes(app, predictor, batcher, max_items, max_chars)
    return app


def _run(predictor: Predictor, kind: str, items: list) -> list:
    """The results of one micro-batch of ``kind`` (sentiment, paraphrase, similarity, task:NAME,
    embed), one per item."""
    if kind == "sentiment":
        return [
            SentimentResult(label=s.label, name=s.name, probabilities=list(s.probabilities))
            for s in predictor.sentiment(items)
        ]
    if kind == "paraphrase":
        return predictor.paraphrase(items).tolist()
    if kind == "similarity":
        return predictor.similarity(items).tolist()
    if kind.startswith("task:"):
        return predictor.predict(kind[5:], items)
    return predictor.embed(items).tolist()


def _add_error_handlers(app: FastAPI) -> None:
    """422 answers: a user error the predictor raises (one-line ``detail``), and malformed input."""

    @app.exception_handler(MinbertError)
    async def _user_error(request: Request, exc: MinbertError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """FastAPI's 422 answer, without the entries that cannot be encoded (a text with a lone
        surrogate echoed as ``input`` would make writing the answer fail with a 500)."""
        return JSONResponse({"detail": [_echo_safe(e) for e in jsonable_encoder(exc.errors())]}, status_code=422)


def _add_routes(app: FastAPI, predictor: Predictor, batcher: MicroBatcher, max_items: int, max_chars: int) -> None:
    """The endpoints of the module docstring; requests go through ``batcher``."""

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
    async def task_predict(task: str, req: TaskRequest) -> TaskResponse:
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
    async def sentiment(req: TextsRequest) -> SentimentResponse:
        need("sst")
        check_limits(req.texts)
        return SentimentResponse(results=await batcher.submit("sentiment", req.texts))

    @app.post("/v1/paraphrase", response_model=ParaphraseResponse)
    async def paraphrase(req: PairsRequest) -> ParaphraseResponse:
        need("qqp")
        check_limits(req.pairs)
        return ParaphraseResponse(probabilities=await batcher.submit("paraphrase", [tuple(p) for p in req.pairs]))

    @app.post("/v1/similarity", response_model=SimilarityResponse)
    async def similarity(req: PairsRequest) -> SimilarityResponse:
        need("sts")
        check_limits(req.pairs)
        return SimilarityResponse(scores=await batcher.submit("similarity", [tuple(p) for p in req.pairs]))

    @app.post("/v1/embed", response_model=EmbedResponse)
    async def embed(req: TextsRequest) -> EmbedResponse:
        check_limits(req.texts)
        return EmbedResponse(embeddings=await batcher.submit("embed", req.texts))

    @app.get("/", response_class=HTMLResponse)
    async def demo() -> str:
        return (Path(__file__).parent / "demo.html").read_text(encoding="utf-8")


class ReadTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for reading each request: a connection whose request
    (headers and body) has not fully arrived ``read_timeout`` seconds after its first byte, or after
    the connection opened, is closed. uvicorn's own timeout covers only the idle time between
    requests, so a client trickling or stalling its headers or body would hold a connection for
    ever. The deadline is armed while the client's h11 state shows a request partly read (bytes of
    one buffered, or its body under way) and cancelled once the request is complete; it does not
    restart on each chunk, so trickling a byte at a time does not keep the connection. Headers are
    further bounded by h11 (16 KiB, else 400). Use :meth:`with_timeout` for a class with a deadline.
    """

    read_timeout: float = 30.0
    _deadline: asyncio.TimerHandle | None = None

    @classmethod
    def with_timeout(cls, seconds: float) -> type[ReadTimeoutH11Protocol]:
        return type(cls.__name__, (cls,), {"read_timeout": seconds})

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)
        self._deadline = self.loop.call_later(self.read_timeout, self._timed_out)  # the first request

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()  # a pipelined request may already be partly buffered

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def _watch(self) -> None:
        state = self.conn.their_state
        if state is h11.SEND_BODY or (state is h11.IDLE and self.conn.trailing_data[0]):
            if self._deadline is None:
                self._deadline = self.loop.call_later(self.read_timeout, self._timed_out)
        elif state is not h11.IDLE:  # the request is complete (or the connection is ending)
            self._cancel()

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _timed_out(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            host, port = self.client or ("?", 0)
            self.logger.info("%s:%d - request not read within %s s: connection closed", host, port, self.read_timeout)
            self.transport.close()


def serve(
    run_dir: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "auto",
    max_items: int = 256,
    max_chars: int = 10_000,
    access_log: bool = True,
    max_body_bytes: int | None = None,
    read_timeout: float = 30.0,
) -> None:
    """Load a run (or an export) and serve it until SIGINT/SIGTERM: uvicorn then stops
    accepting connections and lets in-flight requests finish (up to 30 s).

    ``max_body_bytes``: request body limit (None: :func:`default_max_body_bytes`); ``read_timeout``:
    seconds a client has to send each request, headers and body (see :class:`ReadTimeoutH11Protocol`).

    Raises:
        ConfigError: a limit below 1, ``read_timeout`` not above 0, a port outside 0..65535, or an
            address this machine cannot listen on (checked before the model loads).
        CheckpointError: ``run_dir`` is neither a run nor an export.
    """
    import uvicorn

    from .predictor import load

    _check_serve_options(host, port, max_items, max_chars, max_body_bytes, read_timeout)
    predictor = load(run_dir, device=device)
    app = create_app(predictor, max_items=max_items, max_chars=max_chars, max_body_bytes=max_body_bytes)
    log.info("serving %s on http://%s:%d (docs at /docs)", run_dir, host, port)
    # keep-alive 30 s (uvicorn's default is 5): a client reusing a connection the server is just
    # closing gets a read error on a POST, which it may not retry
    uvicorn.run(
        app, host=host, port=port, log_level="info", access_log=access_log, timeout_keep_alive=30,
        timeout_graceful_shutdown=30, http=ReadTimeoutH11Protocol.with_timeout(read_timeout),
    )


def _check_serve_options(
    host: str, port: int, max_items: int, max_chars: int, max_body_bytes: int | None, read_timeout: float
) -> None:
    """The serve options, before anything loads; the address by binding it once (then released).

    Raises:
        ConfigError: naming the option (``--port``, ``--max-items``, ...) and the problem.
    """
    import socket

    if not read_timeout > 0:
        raise ConfigError(f"--read-timeout {read_timeout}: must be > 0 seconds")
    for flag, value in (("--max-items", max_items), ("--max-chars", max_chars), ("--max-body-bytes", max_body_bytes)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} {value}: must be >= 1")
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: must be in 0..65535")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            s.bind(infos[0][4])
    except OSError as e:
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e})") from None
