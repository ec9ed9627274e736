"""`FakePizzaGPT`: the programmable service, and the requests it records.

The fake decides everything here, without I/O: it validates a request as protocol.md says the
real service does, records it, and picks the reply. `_transport.py` (in-process) and `_server.py`
(real sockets) only carry bytes to and from `FakePizzaGPT._respond()`.
"""

from __future__ import annotations

import json
import ssl
import threading
from collections import deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio

from pizzagpt_sdk._async_client import AsyncClient
from pizzagpt_sdk._client import Client
from pizzagpt_sdk._protocol import DEFAULT_BASE_URL

from ._reply import Reply, Response, Shape, check_shape, render
from ._transport import FakeTransport

if TYPE_CHECKING:
    from ._server import FakeServer

__all__ = ["ENDPOINT_PATH", "FakePizzaGPT", "RecordedRequest"]

# Written out from protocol.md rather than imported from the SDK, so that the fake checks the
# SDK's request instead of agreeing with it.
#: The endpoint, since 2023-11.
ENDPOINT_PATH = "/api/chatx-completion"
_ANSWER_PREFIX = "This is the offline PizzaGPT fake, not a model. You asked: "
_USER_PREFIX = "User: "


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedRequest:
    """One request the fake received, valid or not.

    Attributes:
        method: The HTTP method, like `"POST"`.
        path: The request target as sent: the path, and the query string if any.
        headers: The headers, names in lower case (repeated ones joined with `", "`).
        body: The raw body.
        json: The body parsed as JSON, or `None` when it is not JSON.
        prompt: The body's `question` when it is a string, else `None`.
    """

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = field(repr=False)
    json: Any
    prompt: str | None


class FakePizzaGPT:
    """A programmable fake of the PizzaGPT service that follows protocol.md.

    It answers every valid request with the next scripted `Reply` (see `script()`), or, once the
    script has run out, with its default answer: HTTP 200, `{"role": "assistant", "content":
    "This is the offline PizzaGPT fake, not a model. You asked: <question>", "refusal": null}`
    (in its `shape`). `<question>` is the text of the prompt's last line that starts with
    `User: ` (a flattened conversation), or else the whole prompt. With `"searchEnabled": true`
    the answer has `citations`: loopback URLs (`CITATIONS`).

    Requests are checked in this order, as the real service would, and an invalid one is
    answered without using the script:

    1. The path must be `/api/chatx-completion`: else 404, Nuxt's JSON error.
    2. The method must be POST: else 405 (with `allow: POST`).
    3. The `x-secret` header must equal `secret`: else the older servers' rejection, HTTP 200
       `{"answer": "Invalid"}`.
    4. The body must be a JSON object with a string `question` (and, when present, a string
       `model` and a boolean `searchEnabled`): else 400.

    Every request, valid or not, is recorded in `requests`. The fake is thread-safe: the
    loopback server answers each connection on its own thread.

    Args:
        secret: The `x-secret` the fake accepts.
        shape: How answers are shaped: `"current"` (the answer at the top level) or `"answer"`
            (nested under `answer`, as servers before 2024-11 sent it).

    Raises:
        TypeError: `secret` is not a string.
        ValueError: `shape` is not a known shape.
    """

    def __init__(self, *, secret: str = "Marinara", shape: Shape = "current") -> None:
        if not isinstance(secret, str):
            raise TypeError(f"secret must be a string, not {type(secret).__name__}")
        self._secret = secret
        self._shape = check_shape(shape)
        self._lock = threading.Lock()
        self._script: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []

    def __repr__(self) -> str:
        return f"FakePizzaGPT(shape={self._shape!r}, calls={self.calls}, pending={self.pending})"

    @property
    def secret(self) -> str:
        """The `x-secret` the fake accepts."""
        return self._secret

    @property
    def shape(self) -> Shape:
        """How answers are shaped: `"current"` or `"answer"`."""
        return self._shape

    def script(self, *replies: Reply) -> None:
        """Queue replies, one per valid request, in order; after them the default answer resumes.

        Args:
            *replies: The replies, appended to any still queued.

        Raises:
            TypeError: One is not a `Reply`.
        """
        for reply in replies:
            if not isinstance(reply, Reply):
                raise TypeError(f"script() takes Reply values, not {type(reply).__name__}")
        with self._lock:
            self._script.extend(replies)

    @property
    def requests(self) -> list[RecordedRequest]:
        """The requests received so far, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def calls(self) -> int:
        """How many requests were received so far."""
        with self._lock:
            return len(self._requests)

    @property
    def pending(self) -> int:
        """How many scripted replies are still queued."""
        with self._lock:
            return len(self._script)

    def transport(self) -> FakeTransport:
        """An httpx transport, for `httpx.Client` and `httpx.AsyncClient`, answering in-process.

        Returns:
            A new `FakeTransport`: no sockets, and its faults look to httpx as a socket's would.
        """
        return FakeTransport(self)

    def client(self, **kwargs: Any) -> Client:
        """A `pizzagpt_sdk.Client` wired to this fake in-process; closing it closes everything.

        Args:
            **kwargs: `Client` arguments. `base_url` defaults to the real service's URL (nothing
                is sent anywhere, so the recorded headers are those the service would see) and
                `secret` to the fake's; `http_client` cannot be given.

        Returns:
            The client.

        Raises:
            UsageError: A bad argument, as `Client` raises it.
        """
        kwargs.setdefault("base_url", DEFAULT_BASE_URL)
        kwargs.setdefault("secret", self._secret)
        return Client(transport=self.transport(), **kwargs)

    def async_client(self, **kwargs: Any) -> AsyncClient:
        """A `pizzagpt_sdk.AsyncClient` wired to this fake in-process; `aclose()` closes all.

        Args:
            **kwargs: `AsyncClient` arguments, with the defaults of `client()`.

        Returns:
            The client.

        Raises:
            UsageError: A bad argument, as `AsyncClient` raises it.
        """
        kwargs.setdefault("base_url", DEFAULT_BASE_URL)
        kwargs.setdefault("secret", self._secret)
        return AsyncClient(transport=self.transport(), **kwargs)

    def serve(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> FakeServer:
        """A real HTTP/1.1 server on 127.0.0.1, answering from this fake; start it with `with`.

        Args:
            host: The address to listen on. Another than a loopback one lets other machines
                reach the fake.
            port: The port to listen on; 0 (the default) for a free one.
            ssl_context: A server-side TLS context, to serve `https://` (see `FakeServer`).

        Returns:
            The server, not yet started: `with fake.serve() as server:` starts it (on a free
            port unless given one) and stops it at the end of the block.
        """
        from ._server import FakeServer  # here: the in-process fake needs no server

        return FakeServer(self, host=host, port=port, ssl_context=ssl_context)

    @asynccontextmanager
    async def serve_async(self) -> AsyncIterator[FakeServer]:
        """`serve()` for async code (asyncio or trio): start and stop in a worker thread.

        Use it as `async with fake.serve_async() as server:`.

        Yields:
            The running server; it stops when the block ends, even when it is cancelled.
        """
        from ._server import FakeServer

        server = FakeServer(self)
        await anyio.to_thread.run_sync(server.start)
        try:
            yield server
        finally:
            # Shielded: a cancelled test must still close its sockets and join its threads.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(server.stop)

    def _respond(
        self, method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes
    ) -> Response:
        """Record a request and decide the response (the transport and the server call this)."""
        request = _record(method, target, headers, body)
        rejection = self._rejection(request)
        with self._lock:
            # Recording and taking the next reply together keeps requests[i] and reply i paired
            # when connections race.
            self._requests.append(request)
            reply = rejection or (self._script.popleft() if self._script else None)
        if reply is None:
            reply = Reply.answer(_default_content(request.prompt or ""))
        document = request.json
        search = isinstance(document, dict) and document.get("searchEnabled") is True
        return render(reply, shape=self._shape, search=search)

    def _rejection(self, request: RecordedRequest) -> Reply | None:
        path = request.path.partition("?")[0]
        if path != ENDPOINT_PATH:
            return _nuxt_error(404, f"Page not found: {path}")
        if request.method != "POST":
            # h3's message when a route refuses a method.
            return _nuxt_error(405, "HTTP method is not allowed.", allow="POST")
        if request.headers.get("x-secret") != self._secret:
            return Reply.secret_rejected()
        problem = _body_problem(request.json)
        return None if problem is None else _nuxt_error(400, problem)


def _record(
    method: str, target: str, headers: Iterable[tuple[str, str]], body: bytes
) -> RecordedRequest:
    joined: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        joined[key] = f"{joined[key]}, {value}" if key in joined else value
    try:
        document = json.loads(body)
    except ValueError:  # not JSON, or not UTF-8
        document = None
    question = document.get("question") if isinstance(document, dict) else None
    return RecordedRequest(
        method=method,
        path=target,
        headers=joined,
        body=body,
        json=document,
        prompt=question if isinstance(question, str) else None,
    )


def _body_problem(document: object) -> str | None:
    if not isinstance(document, dict):
        return 'the body must be a JSON object like {"question": "..."}'
    if not isinstance(document.get("question"), str):
        return "the body's question must be a string"
    if "model" in document and not isinstance(document["model"], str):
        return "the body's model must be a string"
    if "searchEnabled" in document and not isinstance(document["searchEnabled"], bool):
        return "the body's searchEnabled must be true or false"
    return None


def _nuxt_error(status: int, message: str, **headers: str) -> Reply:
    return Reply.status(
        status,
        {"statusCode": status, "statusMessage": message, "message": message},
        headers=headers,
    )


def _default_content(prompt: str) -> str:
    # A flattened conversation ends "…\nUser: <question>\nAssistant:" (protocol.md): quoting the
    # last question keeps the answer short and still shows the prompt arrived.
    for line in reversed(prompt.splitlines()):
        if line.startswith(_USER_PREFIX):
            return _ANSWER_PREFIX + line[len(_USER_PREFIX) :]
    return _ANSWER_PREFIX + prompt
