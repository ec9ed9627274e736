"""The aiohttp engine: async, asyncio only (the extra `aiohttp`).

aiohttp's client costs far less CPU per request than httpx's, so under concurrency it does
several times the requests per second (docs/engines.md). Its session binds to the event loop it
is made in, so the engine makes it on the first request, inside the running loop.
"""

from __future__ import annotations

import asyncio
import functools
import ssl
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
from aiohttp.client_proto import ResponseHandler
from multidict import CIMultiDict, CIMultiDictProxy

from pizzagpt_sdk._exceptions import InvalidTypeError

from . import _base
from ._base import _PARENTS_POOLS, AsyncEngine, AsyncResponse, TransportError, sent_headers
from ._httpx import _ssl_context

if TYPE_CHECKING:
    from pizzagpt_sdk._models import Timeout
    from pizzagpt_sdk._protocol import Request

__all__ = ["AsyncAiohttpEngine"]

# What aiohttp raises when a request cannot be sent or a body cannot be read. Its timeouts are
# asyncio's TimeoutError (a distinct class before Python 3.11); a bare OSError can escape it
# while the connection is torn down, and a ValueError from a malformed response.
_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError)


class AsyncAiohttpEngine(AsyncEngine):
    """The async engine over one `aiohttp.ClientSession`, on asyncio only.

    Args:
        verify: `True` to verify TLS with the default CA bundle, `False` not to, a CA bundle's
            path, or an `ssl.SSLContext`.
        proxy: An HTTP proxy URL for every request. The environment's proxy variables
            (`HTTPS_PROXY`, …) are not read: aiohttp would read them on every request.
        max_connections: The most connections the pool keeps open.
        tls: Whether to build a TLS context (only needed for `https://` base URLs).
        http_client: Your own `aiohttp.ClientSession`, used as it is and never closed by the SDK.
    """

    name = "aiohttp"
    _asyncio_only = True

    def __init__(
        self,
        *,
        verify: bool | str | ssl.SSLContext = True,
        proxy: str | None = None,
        max_connections: int = 100,
        tls: bool = True,
        http_client: aiohttp.ClientSession | None = None,
    ) -> None:
        if http_client is not None and not isinstance(http_client, aiohttp.ClientSession):
            raise InvalidTypeError(
                f"http_client must be an aiohttp.ClientSession, not {type(http_client).__name__}"
            )
        if proxy is not None and not isinstance(proxy, str):
            raise InvalidTypeError(f"proxy must be a URL string, not {type(proxy).__name__}")
        self._ssl: Any = _ssl_context(httpx, verify) if tls and verify is not False else verify
        self._proxy = proxy
        self._max_connections = max_connections
        self._http = http_client
        self._owns = http_client is None
        # The request headers the engine's own session sends by default (see `_new_session`).
        self._session_headers: tuple[tuple[str, str], ...] | None = None
        self._forks = _base.forks
        self._closed = False
        # The last call's timeouts and aiohttp's for them: most often the same object each call.
        self._timeouts: tuple[Timeout | None, aiohttp.ClientTimeout | None] = (None, None)
        self.check_runnable()

    @property
    def is_closed(self) -> bool:
        if self._owns:  # the engine's own session: closed only by aclose()
            return self._closed
        return self._closed or (self._http is not None and self._http.closed)

    async def send(
        self, request: Request, timeout: Timeout, max_body: int | None = None
    ) -> AsyncResponse:
        self.check_runnable()
        session = self._http
        if self._owns and (session is None or self._forks != _base.forks):
            session = self._new_session(request.headers)
        assert session is not None
        timeouts = self._timeouts
        if timeouts[0] is not timeout:
            timeouts = self._timeouts = (timeout, _client_timeout(timeout))
        # The session's own headers are the client's: None sends them as they are, without
        # aiohttp merging them into its defaults one by one, in Python, on every request.
        headers = None
        if request.headers is not self._session_headers:
            if self._session_headers is not None:
                # Another client shares this engine, with headers of its own: from now on the
                # session has none, and each request brings all of its own.
                session.headers.clear()
                self._session_headers = None
            headers = _headers(request.headers)
        try:
            response = await session.request(
                request.method,
                request.url,
                headers=headers,
                data=request.body,
                timeout=timeouts[1],
                proxy=self._proxy,
                allow_redirects=False,  # as httpx: a redirect is an answer, not followed
                auto_decompress=False,  # the core decodes, bounded; also a caller's session
            )
        except _ERRORS as exc:
            raise _error(exc) from exc
        return _AiohttpResponse(response)

    async def aclose(self) -> None:
        self._closed = True
        if self._owns and self._http is not None:
            await self._http.close()

    def _new_session(self, headers: tuple[tuple[str, str], ...]) -> aiohttp.ClientSession:
        """The engine's own session, made on first use (aiohttp binds it to the running event
        loop), and again in a child process after `os.fork()`, leaving the parent's sockets
        alone. Its default headers are the first request's: a client's requests share them."""
        if self._http is not None:
            _PARENTS_POOLS.append(self._http)
        self._forks = _base.forks
        connector = _Connector(ssl=self._ssl, limit=self._max_connections, limit_per_host=0)
        self._http = aiohttp.ClientSession(
            connector=connector, auto_decompress=False, headers=_headers(headers)
        )
        self._session_headers = headers
        return self._http


class _Connector(aiohttp.TCPConnector):
    """aiohttp's connector, which never hands out a pooled connection that received bytes
    while it was idle.

    An idle connection's protocol goes on parsing whatever the server sends, and queues it as a
    response: aiohttp 3.14 reuses that connection all the same (its pool checks only that it is
    open and not too old), and the next request on it gets the queued response, another call's
    answer (aio-libs/aiohttp#13656). The protocol knows: `should_close` is true once anything
    is queued. A part of a response is not queued but kept in the parser, which reads the next
    response's bytes after it, and fails the call: the engine's protocol counts the times it
    began to read with no response being read (`starts`), once per request unless bytes came
    that no request asked for. Either way the connection is closed here, and the next one
    tried.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if _Protocol is not ResponseHandler:
            self._factory = functools.partial(_Protocol, loop=self._loop)

    async def _get(self, *args: Any, **kwargs: Any) -> Any:
        while True:
            connection = await super()._get(*args, **kwargs)
            if connection is None or connection.protocol is None:
                return connection
            protocol = connection.protocol
            stray = False
            if isinstance(protocol, _KeptReadTimer):
                stray, protocol.starts = protocol.starts > 1, 0
            if not stray and not protocol.should_close:
                return connection
            connection.close()


class _KeptReadTimer(ResponseHandler):
    """aiohttp's protocol, whose per-read timeout (`sock_read`) keeps one timer per connection.

    aiohttp cancels its read timer and makes a new one on every arrival of bytes, and cancels it
    at the end of each response: two timers for the smallest response, one more for each chunk
    of a longer one, each set and cancelled in asyncio's Python (about 19,000 instructions, see
    `_InFlight`). Here an arrival only moves the deadline on, and the end of a response only
    notes that no read is waiting: the one timer, when it goes off early, waits for the new
    deadline; when no read is waiting, it lapses; and it fires the protocol's own timeout once
    a whole read timeout has passed with nothing. A kept connection's next response reuses it.
    """

    #: When the read waiting now times out (`loop.time()`); `None` when no read is waiting.
    _read_deadline: float | None = None
    _read_timer_at = 0.0
    #: Whether a response is being read, and how often one began since the connection left the
    #: pool (`_Connector`): `start_timeout()` once a request, and bytes no request asked for.
    #: (A read paused for flow control counts again when it resumes: the connection is then
    #: not reused, no more.)
    _reading = False
    starts = 0

    def _reschedule_timeout(self) -> None:
        if not self._reading:
            self._reading = True
            self.starts += 1
        timeout = self._read_timeout
        if not timeout:
            self._read_deadline = None  # no read timeout (a response is still being read)
            return
        self._read_deadline = deadline = self._loop.time() + timeout
        handle = self._read_timeout_handle
        if handle is None or deadline < self._read_timer_at:  # a shorter timeout than the last
            if handle is not None:
                handle.cancel()
            self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        self._read_timer_at = deadline  # the handle's when(), without a method call
        self._read_timeout_handle = self._loop.call_at(deadline, self._read_timer)

    def _drop_timeout(self) -> None:
        # No read is waiting: the timer stays, and lapses when it goes off (or serves the kept
        # connection's next response).
        self._read_deadline = None
        self._reading = False

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if self._read_timeout_handle is not None:  # the protocol is done with: let it go now
            self._read_timeout_handle.cancel()
            self._read_timeout_handle = None

    def _read_timer(self) -> None:
        deadline = self._read_deadline
        if deadline is None:  # no read waits
            self._read_timeout_handle = None
        elif self._loop.time() < deadline:  # bytes came meanwhile
            self._arm(deadline)
        else:
            self._read_timeout_handle = None
            self._read_deadline = None
            self._on_read_timeout()


# The protocol the connector makes: aiohttp's own if its internals are not the ones above.
_Protocol: type[ResponseHandler] = (
    _KeptReadTimer
    if all(
        hasattr(ResponseHandler, name)
        for name in ("_reschedule_timeout", "_drop_timeout", "_on_read_timeout")
    )
    else ResponseHandler
)


class _AiohttpResponse(AsyncResponse):
    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self.status_code = response.status
        self.headers = list(response.headers.items())

    async def aread(self) -> bytes:
        content = self._response.content
        try:
            # What has arrived already, without a coroutine (a small body comes with its head);
            # readany() waits only when nothing has.
            data = content.read_nowait()
            if not data and not content.at_eof():
                data = await content.readany()
        except _ERRORS as exc:
            raise _error(exc) from exc
        self.ended = content.at_eof()  # the length was met (or the body's end arrived)
        return data

    async def aclose(self) -> None:
        # As `async with response` does: a fully read body returns the connection to the pool,
        # an abandoned one closes it.
        self._response.release()
        await self._response.wait_for_close()


def _error(exc: BaseException) -> TransportError:
    _hide_request_headers(exc)
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return TransportError(text, timeout=isinstance(exc, asyncio.TimeoutError))


def _hide_request_headers(exc: BaseException) -> None:
    """Drop the request's headers (the secret among them) from the `request_info` that
    aiohttp's response errors carry and show in their `repr`: the error becomes the cause of the
    SDK's own, which the caller may log or print."""
    if isinstance(exc, aiohttp.ClientResponseError):
        empty = CIMultiDictProxy(CIMultiDict[str]())
        exc.request_info = exc.request_info._replace(headers=empty)


@functools.lru_cache(maxsize=64)
def _headers(headers: tuple[tuple[str, str], ...]) -> CIMultiDictProxy[str]:
    """The request's headers as sent (`sent_headers`), in the multidict aiohttp would otherwise
    build from them on every request; read-only, so that one serves every call."""
    return CIMultiDictProxy(CIMultiDict(sent_headers(headers)))


@functools.lru_cache(maxsize=256)
def _client_timeout(timeout: Timeout) -> aiohttp.ClientTimeout:
    """The core's timeouts as aiohttp's, made once for each value: aiohttp's `connect` is the
    wait for a connection from the pool (httpx's `pool`), `sock_connect` the TCP and TLS
    connect, `sock_read` each read. aiohttp has no write timeout. (A call whose deadline is far
    off gets the client's own timeouts, the same value call after call.)"""
    return aiohttp.ClientTimeout(
        total=None, connect=timeout.pool, sock_connect=timeout.connect, sock_read=timeout.read
    )
