"""The ASGI application: OpenAI's chat completions API in front of one shared `AsyncClient`.

Routes: `POST /v1/chat/completions`, `GET /v1/models`, `GET /v1/models/{model}`, `GET /health`.
Every error, 404 and 405 included, is in OpenAI's shape.

Back-pressure: at most `max_requests` chat requests are in the server at once, answering or
waiting; one more is refused at once with 503 and `retry-after: 1` (OpenAI clients retry it).
Of those admitted, at most `upstream_concurrency` call PizzaGPT at a time; the others wait their
turn, so the wait is bounded by `max_requests`, never an unbounded queue.

A stream's headers wait for PizzaGPT's first event, so that an upstream error before it still
gets its own status (429, 502, ...). If the answer takes longer than `heartbeat` seconds, the
stream starts anyway (an OpenAI client, or a proxy, may give up on a silent connection): the
first chunk, then an SSE comment every `heartbeat` seconds; an error after that is a `data:`
event with an error object, as OpenAI sends it, and the stream ends without `[DONE]`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, MutableMapping
from types import TracebackType
from typing import Any, Protocol

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pizzagpt_sdk import Answer, AsyncClient, FinishReason, PizzaGPTError

from ._openai import (
    MODELS,
    ChatRequest,
    RequestError,
    chunk,
    completion,
    error_for,
    model_object,
    models_list,
    new_id,
    now,
    parse_request,
    usage,
)

__all__ = ["ChatClient", "ChatStream", "create_app"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

logger = logging.getLogger("pizzagpt_sdk.serve")

#: The largest request body accepted: a long conversation fits, a runaway upload does not.
MAX_BODY_BYTES = 4 * 1024 * 1024
_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx: pass each event on at once
]


class ChatStream(Protocol):
    """What the server needs of a stream: `AsyncStream`'s events, answer and closing."""

    def __aiter__(self) -> ChatStream: ...

    async def __anext__(self) -> str | FinishReason: ...

    @property
    def answer(self) -> Answer | None: ...

    async def __aenter__(self) -> ChatStream: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


class ChatClient(Protocol):
    """What the server needs of a client: `AsyncClient.stream()` (or the aiohttp engine's)."""

    def stream(self, messages: str, *, search: bool | None = ...) -> ChatStream: ...


def create_app(
    client: ChatClient | None = None,
    *,
    max_requests: int = 64,
    upstream_concurrency: int = 4,
    heartbeat: float = 15.0,
    on_shutdown: Callable[[], Awaitable[None]] | None = None,
) -> Starlette:
    """The OpenAI-compatible ASGI application, for uvicorn or any ASGI server.

    Also a factory: `uvicorn --factory pizzagpt_sdk.serve:create_app` serves with an
    `AsyncClient()` configured from the environment (`PIZZAGPT_BASE_URL`, `PIZZAGPT_SECRET`).

    Args:
        client: The one client all requests share, an `AsyncClient` on any engine; the
            application does not close it. `None`: the application opens an `AsyncClient()` at
            startup and closes it at shutdown.
        max_requests: The most chat requests in the server at once, answering or waiting for
            a turn; more are refused with 503 and `retry-after: 1`.
        upstream_concurrency: The most calls to PizzaGPT at once.
        heartbeat: Seconds a stream waits for PizzaGPT before it starts anyway, and then
            between two SSE comments that keep the connection busy.
        on_shutdown: Awaited at shutdown, after the client is closed.

    Returns:
        The application.

    Raises:
        ValueError: A limit is below 1, or `heartbeat` is not a positive number of seconds.
    """
    for name, value in (
        ("max_requests", max_requests),
        ("upstream_concurrency", upstream_concurrency),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number, 1 or more, not {value!r}")
    if not (isinstance(heartbeat, (int, float)) and math.isfinite(heartbeat) and heartbeat > 0):
        raise ValueError(f"heartbeat must be a number of seconds above 0, not {heartbeat!r}")
    chat = _ChatCompletions(client, max_requests, upstream_concurrency, float(heartbeat))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        owned = AsyncClient() if chat.client is None else None
        chat.client = chat.client or owned
        try:
            yield
        finally:
            if owned is not None:
                chat.client = None  # a restarted application opens a new one
                await owned.aclose()
            if on_shutdown is not None:
                await on_shutdown()

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", _models, methods=["GET"]),
            Route("/v1/models/{model:path}", _model, methods=["GET"]),
            Route("/health", _health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error},
        lifespan=lifespan,
    )


async def _models(request: Request) -> Response:
    return JSONResponse(models_list())


async def _model(request: Request) -> Response:
    name = request.path_params["model"]
    if name not in MODELS:
        return _error_response(
            RequestError(
                f"The model `{name}` does not exist here", status=404, code="model_not_found"
            )
        )
    return JSONResponse(model_object(name))


async def _health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _http_error(request: Request, exc: Exception) -> Response:
    """404 and 405 as OpenAI answers them, an error object instead of starlette's text."""
    assert isinstance(exc, HTTPException)
    what = f"{request.method} {request.url.path}"
    if exc.status_code == 405:
        message, code = f"Method not allowed: {what}", "method_not_allowed"
    else:
        message, code = f"Unknown request URL: {what}", "unknown_url"
    error = RequestError(message, status=exc.status_code, code=code)
    return _error_response(error, exc.headers)


def _error_response(error: RequestError, headers: Mapping[str, str] | None = None) -> Response:
    return JSONResponse(
        error.body(), status_code=error.status, headers={**(headers or {}), **error.headers}
    )


class _ChatCompletions:
    """`POST /v1/chat/completions`, as a plain ASGI application: it owns its send loop."""

    def __init__(
        self,
        client: ChatClient | None,
        max_requests: int,
        upstream_concurrency: int,
        heartbeat: float,
    ) -> None:
        self.client = client
        self._max_requests = max_requests
        self._requests = 0
        self._upstream = anyio.Semaphore(upstream_concurrency)
        self._heartbeat = heartbeat

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._requests >= self._max_requests:
            error = RequestError(
                f"the server is answering {self._max_requests} requests already: retry shortly",
                status=503,
                type="server_error",
                code="server_overloaded",
                headers={"retry-after": "1"},
            )
            await _send_error(send, error)
            return
        self._requests += 1
        try:
            await self._answer(receive, send)
        finally:
            self._requests -= 1

    async def _answer(self, receive: Receive, send: Send) -> None:
        try:
            body = await _read_body(receive)
            if body is None:
                return  # the client left before it had sent its request: no one to answer
            request = parse_request(body)
            assert self.client is not None  # set before the server accepts a request
            upstream = self.client.stream(request.prompt, search=request.search or None)
        except RequestError as error:
            await _send_error(send, error)
            return
        except PizzaGPTError as error:  # a UsageError: the client was closed
            await _send_error(send, error_for(error))
            return
        reply = _Reply(send, request, self._heartbeat)
        async with anyio.create_task_group() as tasks:
            # A client that hangs up frees its place at once, upstream call included.
            tasks.start_soon(_cancel_on_disconnect, receive, tasks.cancel_scope)
            async with self._upstream, upstream:
                await (reply.stream(upstream) if request.stream else reply.whole(upstream))
            tasks.cancel_scope.cancel()


class _Reply:
    """Sends one answer: as one `chat.completion`, or as server-sent events."""

    def __init__(self, send: Send, request: ChatRequest, heartbeat: float) -> None:
        self._send = send
        self._request = request
        self._heartbeat = heartbeat
        self._id = new_id()
        self._created = now()
        self._started = False
        self._pending: list[bytes] = []
        self._lock = anyio.Lock()

    async def whole(self, upstream: ChatStream) -> None:
        try:
            async for _ in upstream:
                pass
        except PizzaGPTError as error:
            _log_failure(error)
            await _send_error(self._send, error_for(error))
            return
        assert upstream.answer is not None  # a stream that ends without raising has one
        body = completion(self._request, upstream.answer, id=self._id, created=self._created)
        await _send_json(self._send, 200, body)

    async def stream(self, upstream: ChatStream) -> None:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self._keep_alive)
            try:
                await self._events(upstream)
            except PizzaGPTError as error:
                _log_failure(error)
                async with self._lock:
                    if self._started:
                        self._event(error_for(error).body())
                        await self._flush(more_body=False)
                    else:
                        await _send_error(self._send, error_for(error))
            tasks.cancel_scope.cancel()

    async def _events(self, upstream: ChatStream) -> None:
        async for event in upstream:
            async with self._lock:
                await self._start()
                if isinstance(event, FinishReason):
                    self._finish(upstream)
                    await self._flush(more_body=False)
                    return
                self._event(self._chunk({"content": event}))
                await self._flush()

    def _finish(self, upstream: ChatStream) -> None:
        answer = upstream.answer
        assert answer is not None  # set once the stream yields its FinishReason
        if answer.refusal:
            self._event(self._chunk({"refusal": answer.refusal}))
        self._event(self._chunk({}, finish_reason="stop"))
        if self._request.include_usage:
            text = answer.text or answer.refusal or ""
            self._event(
                chunk(
                    self._request,
                    id=self._id,
                    created=self._created,
                    usage=usage(self._request.prompt, text),
                )
            )
        self._pending.append(b"data: [DONE]\n\n")

    async def _keep_alive(self) -> None:
        while True:
            await anyio.sleep(self._heartbeat)
            async with self._lock:
                if self._started:
                    self._pending.append(b": waiting for PizzaGPT\n\n")
                await self._start()
                await self._flush()

    async def _start(self) -> None:
        """Send the headers, and queue the first chunk (the assistant's role)."""
        if self._started:
            return
        self._started = True
        await self._send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        self._event(self._chunk({"role": "assistant", "content": ""}))

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return chunk(
            self._request,
            id=self._id,
            created=self._created,
            delta=delta,
            finish_reason=finish_reason,
        )

    def _event(self, document: dict[str, Any]) -> None:
        self._pending.append(b"data: " + _dumps(document) + b"\n\n")

    async def _flush(self, *, more_body: bool = True) -> None:
        """Send the queued events in one body message: fewer writes, the same bytes."""
        body, self._pending = b"".join(self._pending), []
        await self._send({"type": "http.response.body", "body": body, "more_body": more_body})


def _dumps(document: object) -> bytes:
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()


async def _send_json(
    send: Send, status: int, document: object, headers: dict[str, str] | None = None
) -> None:
    body = _dumps(document)
    raw = [
        *_JSON_HEADERS,
        (b"content-length", str(len(body)).encode()),
        *((name.encode(), value.encode()) for name, value in (headers or {}).items()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Send, error: RequestError) -> None:
    await _send_json(send, error.status, error.body(), error.headers)


async def _read_body(receive: Receive) -> bytes | None:
    """The request's body, or `None` when the client disconnected first."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body += message.get("body", b"")
        if len(body) > MAX_BODY_BYTES:
            raise RequestError(
                f"the request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MiB",
                status=413,
                code="request_too_large",
            )
        if not message.get("more_body", False):
            return bytes(body)


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass  # pragma: no cover - the body was read whole: only a disconnect can come
    scope.cancel()


def _log_failure(error: PizzaGPTError) -> None:
    # The kind of failure only: an error's message can quote the answer, and the log must never
    # hold a prompt or an answer.
    status = getattr(error, "status_code", None)
    logger.warning(
        "PizzaGPT call failed: %s%s", type(error).__name__, f" (HTTP {status})" if status else ""
    )
