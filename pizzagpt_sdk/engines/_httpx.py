"""The httpx engine (the default), blocking and async; `_httpx2.py` runs the same code on httpx2.

The async engine over httpx itself splits its pool into small ones (`_httpx_pool.py`), to dodge
httpcore 1.0.9's pool bookkeeping; httpx2's pool needs no such thing.
"""

from __future__ import annotations

import contextlib
import functools
import ssl
import threading
from collections.abc import AsyncIterator, Iterator
from types import ModuleType
from typing import TYPE_CHECKING, Any

import anyio
import httpx

from pizzagpt_sdk._exceptions import InvalidTypeError, InvalidValueError

from . import _base
from ._base import (
    _PARENTS_POOLS,
    AsyncEngine,
    AsyncResponse,
    Engine,
    Response,
    TransportError,
    sent_headers,
)
from ._httpx_backend import DeadlineBackend, install

if TYPE_CHECKING:
    from pizzagpt_sdk._models import Timeout
    from pizzagpt_sdk._protocol import Request

__all__ = ["AsyncHttpxEngine", "HttpxEngine"]

# httpx's default: a connection idle for longer is closed, not reused.
_KEEPALIVE_EXPIRY = 5.0

# The key, in a request's `extensions`, of the SDK request it was built from (`abandon()`).
_REQUEST = "pizzagpt_sdk.request"


class _HttpxBase:
    """What both worlds share: building the pool and the request. No I/O."""

    name = "httpx"
    _module: ModuleType = httpx
    _async = False

    def __init__(
        self,
        *,
        verify: bool | str | ssl.SSLContext = True,
        proxy: Any = None,
        max_connections: int = 100,
        tls: bool = True,
        http_client: Any = None,
        transport: Any = None,
    ) -> None:
        module = self._module
        client_class = module.AsyncClient if self._async else module.Client
        transport_class = module.AsyncBaseTransport if self._async else module.BaseTransport
        if http_client is not None and not isinstance(http_client, client_class):
            raise InvalidTypeError(
                f"http_client must be an {module.__name__}.{client_class.__name__}, "
                f"not {type(http_client).__name__}"
            )
        if transport is not None and not isinstance(transport, transport_class):
            raise InvalidTypeError(
                f"transport must be an {module.__name__}.{transport_class.__name__}, "
                f"not {type(transport).__name__}"
            )
        if http_client is not None and transport is not None:
            raise InvalidValueError("give the transport to your own http_client, not to the SDK")
        if transport is not None and proxy is not None:
            raise InvalidValueError("give the proxy to your transport, not to the SDK")
        # Over plain HTTP no TLS context is needed: building one loads the CA bundle (~100 ms,
        # and ~0.8 MB), for each small pool of the async engine too. Nor with a caller's
        # transport or client, which bring their own (the fake's in-process one needs none).
        own_pool = transport is None and http_client is None
        self._verify = _ssl_context(module, verify) if tls and own_pool else False
        self._proxy = proxy
        self._max_connections = max_connections
        self._transport = transport
        self._owns = http_client is None
        self._forks = _base.forks
        # The last call's timeouts and the library's for them, in one attribute (threads share
        # it): most often the same object call after call.
        self._timeouts: tuple[Timeout | None, Any] = (None, None)
        self._http: Any = http_client if http_client is not None else self._new_http()
        self._closed = False

    @property
    def is_closed(self) -> bool:
        return self._closed or bool(self._http.is_closed)

    def _new_http(self) -> Any:
        module = self._module
        limits = module.Limits(
            max_connections=self._max_connections,
            max_keepalive_connections=self._max_connections,
            keepalive_expiry=_KEEPALIVE_EXPIRY,
        )
        client_class = module.AsyncClient if self._async else module.Client
        if self._transport is not None:
            return client_class(transport=self._transport)
        return client_class(proxy=self._proxy, verify=self._verify, limits=limits)

    def _build(self, request: Request, timeout: Timeout) -> Any:
        if self._owns and self._forks != _base.forks and self._transport is None:
            # After os.fork() the pooled connections are the parent's sockets: a child that used
            # them would interleave its bytes with the parent's. Start a fresh pool, and leave
            # the parent's alone (closing it here could shut the parent's TLS sessions down).
            self._forks = _base.forks
            _PARENTS_POOLS.append(self._http)
            self._http = self._new_http()
        url, headers = _target(self._module, request.url, request.headers)
        timeouts = self._timeouts
        if timeouts[0] is not timeout:
            timeouts = self._timeouts = (timeout, _timeout(self._module, timeout))
        built = self._http.build_request(
            request.method, url, headers=headers, content=request.body, timeout=timeouts[1]
        )
        # httpx sends a bytes body through an async generator, left suspended when a write fails
        # (a server that hangs up): trio warns when it is collected (encode/httpx#3686).
        built.stream = _body_class(self._module)(request.body)
        return built

    def _error(self, exc: Exception) -> TransportError:
        return TransportError(str(exc), timeout=isinstance(exc, self._module.TimeoutException))


class HttpxEngine(_HttpxBase, Engine):
    """The blocking engine over an `httpx.Client`, the default.

    Args:
        verify: `True` to verify TLS with the default CA bundle, `False` not to, a CA bundle's
            path, or an `ssl.SSLContext`.
        proxy: A proxy URL for the engine's own pool (or an `httpx.Proxy`).
        max_connections: The most connections the pool keeps open (and alive).
        tls: Whether to build a TLS context (only needed for `https://` base URLs).
        http_client: Your own `httpx.Client`, used as it is and never closed by the SDK.
        transport: An httpx transport for the engine's own pool (`MockTransport`, the fake's
            `FakeTransport`, an `HTTPTransport` with options); used as it is, also after
            `os.fork()`. Environment proxies do not apply to it.
    """

    # The pools' network backends, which bound each wait by the call's deadline and let
    # close() wake a call waiting in another thread (see `_httpx_backend.py`); none in your
    # own http_client, which the SDK leaves as it is.
    _backends: list[DeadlineBackend] | tuple[()] = ()

    def _new_http(self) -> Any:
        http = super()._new_http()
        self._backends = install(http)
        for pool in _pools(http):
            # httpcore guards its pool's books with a lock wrapped in Python: an interrupt
            # landing between its acquire() and the `with` block leaves it held for good, and
            # every later call hangs. A `with` on the C lock itself cannot be cut there.
            pool._optional_thread_lock = threading.Lock()
        return http

    def send(self, request: Request, timeout: Timeout, max_body: int | None = None) -> Response:
        built = self._build(request, timeout)
        built.extensions[_REQUEST] = request  # httpcore's queue then tells whose call it is
        try:
            response = self._http.send(built, stream=True)
            response.stream = _guard_class(self._module)(response.stream)
            return _HttpxResponse(self, response, built.extensions)
        except self._module.RequestError as exc:
            raise self._error(exc) from exc
        except BaseException:
            self._release_interrupted(built.extensions)
            raise

    def close(self) -> None:
        self._closed = True
        if self._owns:
            for backend in self._backends:
                backend.shut_down()
            self._http.close()

    def abandon(self, request: Request) -> None:
        for pool in _pools(self._http):
            with pool._optional_thread_lock:
                calls = [r.request.extensions for r in pool._requests]
            for call in calls:
                if call.get(_REQUEST) is request:  # in the pool still: nothing closed its response
                    self._release_interrupted(call)
                    return

    def _release_interrupted(self, call: dict[str, Any]) -> None:
        """Free what a call that an exception interrupted (Ctrl-C's `KeyboardInterrupt`, which
        lands between any two steps) left behind in the pool, then let the pool do its books.

        httpcore keeps its pool's books in plain Python steps: a request is queued and given a
        connection, which is marked active, the response is handed up through httpx, and its
        body's close releases both. Its cleanup runs in `except BaseException` blocks, which
        an interrupt can skip or cut short, and a response lost between two layers is never
        closed. What is left is a request queued forever or a connection marked active that
        nothing will release (both count against the pool's limit), or a connection left
        mid-cycle (its lock held, or h11 between two cycles: its next request hangs or raises
        h11's `LocalProtocolError`). Which connection the call touched last is not always
        known, so under the pool's lock the call's own request leaves the queue (httpx gives
        httpcore the request's `extensions` dict itself, which identifies it) and every
        connection that no other call's request holds is closed, idle ones too: the keep-alive
        cache is refilled by the next calls. Then httpcore's own
        `_assign_requests_to_connections()` serves the requests still queued.

        Args:
            call: The `extensions` of the interrupted call's request.
        """
        for pool in _pools(self._http):
            with pool._optional_thread_lock:
                for pool_request in [r for r in pool._requests if r.request.extensions is call]:
                    pool._requests.remove(pool_request)
                held = [r.connection for r in pool._requests]
                closing = [c for c in pool._connections if not any(c is h for h in held)]
                for connection in closing:
                    pool._connections.remove(connection)
                closing += pool._assign_requests_to_connections()
            pool._close_connections(closing)


def _pools(http: Any) -> list[Any]:
    """httpcore's connection pools under an httpx client: its transport's and its proxies'
    (none for a mock transport or a caller's own kind of transport)."""
    transports = (getattr(http, "_transport", None), *getattr(http, "_mounts", {}).values())
    pools = [getattr(transport, "_pool", None) for transport in transports]
    return [pool for pool in pools if hasattr(pool, "_requests")]


class _HttpxResponse(Response):
    def __init__(self, engine: HttpxEngine, response: Any, call: dict[str, Any]) -> None:
        self._engine = engine
        self._response = response
        self._call: dict[str, Any] | None = call  # None once the pool has been repaired
        self.status_code = response.status_code
        self.headers = _headers(response)
        # The raw body: the core decodes it (httpx would decode a whole chunk at once).
        self._chunks: Iterator[bytes] | None = (
            _once(response.content) if response.is_stream_consumed else response.iter_raw()
        )

    def read(self) -> bytes:
        if self._chunks is None:
            return b""
        try:
            return next(self._chunks, b"")
        except self._engine._module.RequestError as exc:
            self._chunks = None
            raise self._engine._error(exc) from exc
        except BaseException:
            self._chunks = None
            self._release_interrupted()
            raise

    def close(self) -> None:
        chunks, self._chunks = self._chunks, None
        try:
            if chunks is not None:
                # Closing the outermost generator is enough: a sync generator left suspended
                # inside it is closed when collected, silently (unlike async ones: see
                # `_AsyncHttpxResponse`).
                chunks.close()  # type: ignore[attr-defined]
            if self._call is not None:
                self._response.close()
        except BaseException:
            self._release_interrupted()
            raise

    def _release_interrupted(self) -> None:
        # Once repaired, the pool no longer knows this response: closing it again would make
        # httpcore remove its request a second time (a raw ValueError).
        call, self._call = self._call, None
        if call is not None:
            self._engine._release_interrupted(call)


class AsyncHttpxEngine(_HttpxBase, AsyncEngine):
    """The async engine over an `httpx.AsyncClient`, the default, on asyncio and trio.

    Its own pool is httpx's, split into small pools (see `_httpx_pool.py`); with a proxy, given
    or from the environment, it keeps httpx's single pool, because only httpx's own transport
    applies environment proxies. The arguments are `HttpxEngine`'s, with an `httpx.AsyncClient`
    and an async transport.
    """

    _async = True

    def _new_http(self) -> Any:
        from urllib.request import getproxies  # httpx has imported it already

        if (
            self._module is httpx
            and self._transport is None
            and self._proxy is None
            and getproxies().keys() <= {"no"}
        ):
            from ._httpx_pool import POOL_SIZE, SpreadTransport

            # Pools of equal size that hold exactly max_connections: 4 each where it divides.
            size = next(n for n in range(POOL_SIZE, 0, -1) if self._max_connections % n == 0)
            limits = httpx.Limits(
                max_connections=size,
                max_keepalive_connections=size,
                keepalive_expiry=_KEEPALIVE_EXPIRY,
            )
            verify = self._verify
            transport = SpreadTransport(
                lambda: httpx.AsyncHTTPTransport(verify=verify, limits=limits),
                pools=self._max_connections // size,
                per_pool=size,
                idle_expiry=_KEEPALIVE_EXPIRY,
            )
            return httpx.AsyncClient(transport=transport)
        return super()._new_http()

    async def send(
        self, request: Request, timeout: Timeout, max_body: int | None = None
    ) -> AsyncResponse:
        self.check_runnable()
        built = self._build(request, timeout)
        try:
            response = await self._http.send(built, stream=True)
        except self._module.RequestError as exc:
            raise self._error(exc) from exc
        response.stream = _guard_class(self._module)(response.stream)
        return _AsyncHttpxResponse(self, response)

    async def aclose(self) -> None:
        self._closed = True
        if self._owns:
            await self._http.aclose()


class _AsyncHttpxResponse(AsyncResponse):
    def __init__(self, engine: AsyncHttpxEngine, response: Any) -> None:
        self._engine = engine
        self._response = response
        self.status_code = response.status_code
        self.headers = _headers(response)
        self._chunks: AsyncIterator[bytes] | None = (
            _OneChunk(response.content) if response.is_stream_consumed else response.aiter_raw()
        )

    async def aread(self) -> bytes:
        if self._chunks is None:
            return b""
        try:
            chunk = await anext(self._chunks, None)
        except self._engine._module.RequestError as exc:
            self._chunks = None
            raise self._engine._error(exc) from exc
        if chunk is None:
            # The body's end: its generators have all finished, so closing has nothing to
            # unwind (`_abandon` costs a cancel scope and a cancelled read on every call).
            self._chunks = None
            return b""
        return chunk

    async def aclose(self) -> None:
        chunks, self._chunks = self._chunks, None
        try:
            if chunks is not None:
                await _abandon(chunks, self._engine._module.HTTPError)
        finally:
            # Also when the caller's scope was cancelled during _abandon: the response must be
            # closed, and closing it first frees its place in the pool, before any await.
            await self._response.aclose()


def _once(body: bytes) -> Iterator[bytes]:
    yield body


def _headers(response: Any) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = response.headers.multi_items()
    if response.is_stream_consumed:
        # A response built in memory (a mock transport's): httpx has read and decoded its body
        # already, so it is handed over decoded, without the coding it no longer has.
        return [(name, value) for name, value in headers if name.lower() != "content-encoding"]
    return headers


async def _abandon(chunks: AsyncIterator[bytes], errors: type[Exception]) -> None:
    """Finish a body iterator given up mid-body, leaving none of httpx's generators suspended.

    httpx reads a body through nested async generators. Closing the outermost one leaves the
    inner ones suspended, and trio warns about each when it is collected (encode/httpx#3686).
    Resumed in a cancelled scope, the innermost read raises instead, which unwinds every one of
    them and closes the connection (its body was not read to the end: it cannot be reused).
    Chunks already buffered are passed over on the way: at most what one read returned.
    """
    with anyio.CancelScope() as scope, contextlib.suppress(errors):
        scope.cancel()
        while await anext(chunks, None) is not None:
            pass


class _Guard:
    """A response body whose connection is not reused when bytes came after the response.

    httpcore (1.0.9, and httpcore2 as httpx2 bundles it) reads the socket 64 KiB at a time. When
    a response ends, whatever arrived after it stays in h11's buffer (`h11.Connection.
    trailing_data`), and `start_next_cycle()` carries it over: the next request on that
    connection reads it as its own response, and gets another call's answer (RFC 9112 §9.2:
    a response that arrives with no request outstanding must not be taken as one). Bytes that
    arrive once the connection is idle are httpcore's to catch: its pool polls an idle socket
    before reusing it (`has_expired()`). So on close, before the connection goes back to the
    pool, bytes left in h11's buffer mark it failed (`send_failed()`, h11's own way to make a
    connection unusable), and httpcore's own close path then closes it instead of reusing it.
    """

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._stream)

    def __aiter__(self) -> AsyncIterator[bytes]:
        # The body's own iterator: one more suspended generator would be one more for trio to
        # warn about when a body is given up (see _abandon).
        return self._stream.__aiter__()  # type: ignore[no-any-return]

    def close(self) -> None:
        _refuse_reuse_after_trailing_bytes(self._stream)
        self._stream.close()

    async def aclose(self) -> None:
        _refuse_reuse_after_trailing_bytes(self._stream)
        await self._stream.aclose()


@functools.cache
def _guard_class(module: ModuleType) -> type[_Guard]:
    """`_Guard` as the library's own byte stream (its responses check the type)."""
    return type("_Guard", (_Guard, module.SyncByteStream, module.AsyncByteStream), {})


def _refuse_reuse_after_trailing_bytes(stream: object) -> None:
    """Mark the HTTP/1.1 connection under `stream` failed if h11 holds bytes past the response.

    httpcore exposes neither the connection nor h11's state, so this walks the body's wrappers
    (httpx's, httpcore's pool's, the SDK's small pools') down to the connection. Where there is
    no h11 connection (HTTP/2, a mock transport, a library whose layout changed), it does
    nothing: httpcore's own behaviour.
    """
    for _ in range(8):
        h11_state = getattr(stream, "_h11_state", None)
        if h11_state is not None:
            if getattr(h11_state, "trailing_data", (b"",))[0]:
                h11_state.send_failed()
            return
        stream = next(
            (
                getattr(stream, name)
                for name in ("_stream", "_httpcore_stream", "_connection")
                if hasattr(stream, name)
            ),
            None,
        )


@functools.cache
def _default_context(module: ModuleType) -> ssl.SSLContext:
    """One TLS context for all the engines of a library: building one loads the CA bundle,
    which costs about 100 ms, far more than the rest of a client. Verification stays on."""
    context: ssl.SSLContext = module.create_ssl_context()
    return context


def _ssl_context(module: ModuleType, verify: object) -> Any:
    """`verify` as the library takes it, built now: a bad CA bundle fails here, not mid-call."""
    if verify is True:
        return _default_context(module)
    if isinstance(verify, str):
        try:
            return ssl.create_default_context(cafile=verify)
        except (OSError, ssl.SSLError) as exc:
            raise InvalidValueError(
                f"verify: cannot load the CA bundle {verify!r} ({exc})"
            ) from exc
    return verify


@functools.lru_cache(maxsize=64)
def _target(module: ModuleType, url: str, headers: tuple[tuple[str, str], ...]) -> tuple[Any, Any]:
    """The library's URL and headers for the core's, parsed once: parsing them is about a third
    of building an httpx request (benchmarks/). httpx copies the headers and never changes these."""
    return module.URL(url), module.Headers(sent_headers(headers))


@functools.lru_cache(maxsize=256)
def _timeout(module: ModuleType, timeout: Timeout) -> Any:
    """The core's timeouts as the library's, made once for each value (httpx checks each
    argument as it builds one): a call whose deadline is far off gets the client's own
    timeouts, the same value call after call. httpx only reads it."""
    return module.Timeout(
        connect=timeout.connect, read=timeout.read, write=timeout.write, pool=timeout.pool
    )


class _Body:
    """A request body of one chunk, iterated without a generator (see `_HttpxBase._build`)."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        return iter((self._body,))

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _OneChunk(self._body)


@functools.cache
def _body_class(module: ModuleType) -> type[_Body]:
    """`_Body` as the library's own byte stream (its transports check the type)."""
    return type("_Body", (_Body, module.SyncByteStream, module.AsyncByteStream), {})


class _OneChunk:
    """An async iterator over one chunk: a plain object, so nothing is left to finalize."""

    def __init__(self, body: bytes) -> None:
        self._body: bytes | None = body

    def __aiter__(self) -> _OneChunk:
        return self

    async def __anext__(self) -> bytes:
        body, self._body = self._body, None
        if body is None:
            raise StopAsyncIteration
        return body
