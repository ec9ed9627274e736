"""The curl_cffi engine: blocking and asyncio, with a browser's TLS and HTTP/2 fingerprint.

A service behind Cloudflare can block clients by their TLS fingerprint: gpt4free's users met
those 403 pages for years. curl_cffi speaks as a browser does (`impersonate="chrome"`, the
default here). The extra `impersonate` installs it.

curl_cffi's streaming mode is not used: its blocking one copies the curl handle for each request
(a new connection, and a TLS handshake, per call), its timeouts are whole seconds of low speed
(a server that sends nothing for minutes was not stopped by a 0.2 s timeout), and it buffers
the whole body anyway. So a request runs to its end in one `perform()`, bounded by one total
timeout, and its body arrives through a callback that stops the transfer once it holds more
than the call accepts (`Send.max_body`): memory stays bounded, and the core refuses the answer.
The body arrives as it came off the wire, undecoded: the core decodes it, as for every engine.

With its own session, each engine sets a curl handle up once (with curl_cffi's own
`set_curl_options`, so the bytes on the wire are the session's) and keeps it set up from call to
call, where the session's `request()` resets it and sets every option again each time: that was
about half of an async call's CPU, and two thirds of a blocking one's (the `_send_fast`s).
"""

from __future__ import annotations

import functools
import inspect
import itertools
import select
import socket
import ssl
import threading
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

import curl_cffi
from curl_cffi import _wrapper  # cffi's module: ffi and lib
from curl_cffi import requests as curl_requests
from curl_cffi.const import CurlInfo, CurlOpt
from curl_cffi.curl import CURL_WRITEFUNC_ERROR, CurlError

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

if TYPE_CHECKING:
    from collections.abc import Container, Iterable

    from pizzagpt_sdk._models import Timeout
    from pizzagpt_sdk._protocol import Request

__all__ = ["AsyncCurlCffiEngine", "CurlCffiEngine"]

#: The browser the engine speaks as, unless told otherwise (curl_cffi's newest Chrome).
DEFAULT_IMPERSONATE = "chrome"


class _CurlBase:
    name = "curl_cffi"
    _async = False

    def __init__(
        self,
        *,
        impersonate: str | None = DEFAULT_IMPERSONATE,
        verify: bool | str | ssl.SSLContext = True,
        proxy: str | None = None,
        max_connections: int = 100,
        tls: bool = True,
        trust_env: bool = True,
        http_client: Any = None,
    ) -> None:
        del tls  # curl builds its TLS state itself, per connection
        session_class = curl_requests.AsyncSession if self._async else curl_requests.Session
        if http_client is not None and not isinstance(http_client, session_class):
            raise InvalidTypeError(
                f"http_client must be a curl_cffi.requests.{session_class.__name__}, "
                f"not {type(http_client).__name__}"
            )
        if isinstance(verify, ssl.SSLContext):
            raise InvalidValueError(
                "the curl_cffi engine takes verify=True, False or a CA bundle's path, "
                "not an ssl.SSLContext"
            )
        if proxy is not None and not isinstance(proxy, str):
            raise InvalidTypeError(f"proxy must be a URL string, not {type(proxy).__name__}")
        if impersonate is not None and not isinstance(impersonate, str):
            raise InvalidTypeError(
                f"impersonate must be a browser's name like 'chrome', not {impersonate!r}"
            )
        self._options: dict[str, Any] = {
            "impersonate": impersonate,
            "verify": verify,
            "proxy": proxy,
            "trust_env": trust_env,
            # curl still sends the accept-encoding it is given, but hands the body over as it
            # came: the core decodes it, bounded and as for every engine.
            "curl_options": {CurlOpt.HTTP_CONTENT_DECODING: 0},
        }
        if self._async:
            self._options["max_clients"] = max_connections
        self._owns = http_client is None
        self._forks = _base.forks
        # The last call's timeouts and curl_cffi's for them, in one attribute (threads share
        # it): most often the same object call after call.
        self._limit: tuple[Timeout | None, tuple[float, float] | None] = (None, None)
        self._http: Any = http_client if http_client is not None else self._new_http()
        self._closed = False
        # The blocking engine's book of the curl handles its calls used (see CurlCffiEngine).
        self._lock = threading.Lock()
        self._handles: weakref.WeakSet[Any] = weakref.WeakSet()
        self._busy: set[Any] = set()
        # The kept handles' settings, as `_configure` made them (see `_send_fast`).
        self._shapes: weakref.WeakKeyDictionary[Any, tuple[Any, ...]] = weakref.WeakKeyDictionary()
        # The session's cookie jar's changes so far: a number no call has seen yet per change
        # (`next()` of a count, which threads cannot both get).
        self._cookies = 0
        self._cookie_changes = itertools.count(1)
        # The HTTP/1 connections curl keeps idle, to check before reusing (see
        # `_close_unclean`): the async pool's, and each blocking handle's (a thread's own).
        self._idle: dict[int, tuple[int, int]] = {}
        self._idle_of: weakref.WeakKeyDictionary[Any, dict[int, tuple[int, int]]] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def is_closed(self) -> bool:
        return self._closed or bool(getattr(self._http, "_closed", False))

    def _new_http(self) -> Any:
        session_class = curl_requests.AsyncSession if self._async else curl_requests.Session
        return session_class(**self._options)

    def _headers(self, response: Any) -> list[tuple[str, str]]:
        headers = list(response.headers.multi_items())
        if not self._owns and self._http.curl_options.get(CurlOpt.HTTP_CONTENT_DECODING, 1):
            # A caller's session, whose curl decodes the body itself (a write at a time, so
            # its memory stays bounded too): the body comes decoded, so no coding is named.
            return [(name, value) for name, value in headers if name.lower() != "content-encoding"]
        return headers

    def _session(self) -> Any:
        if self._owns and self._forks != _base.forks:
            # After os.fork() the curl handles hold the parent's sockets: a new session.
            self._forks = _base.forks
            _PARENTS_POOLS.append(self._http)
            self._http = self._new_http()
            self._idle, self._idle_of = {}, weakref.WeakKeyDictionary()
        return self._http

    def _timeouts(self, timeout: Timeout) -> tuple[float, float] | None:
        limit = self._limit
        if limit[0] is not timeout:
            limit = self._limit = (timeout, _limit(timeout))
        return limit[1]

    def _arguments(self, request: Request, timeout: Timeout, body: _Body) -> dict[str, Any]:
        return {
            "headers": _headers(request.headers),
            "data": request.body,
            "timeout": self._timeouts(timeout),
            "content_callback": body.write,
            "allow_redirects": False,  # as httpx: a redirect is an answer, not followed
        }

    def _prepare(self, session: Any, curl: Any, request: Request) -> None:
        """Set a kept handle up for `request`, unless it is already (see `_send_fast`)."""
        shape = (request.method, request.url, request.headers, bool(request.body), self._cookies)
        if self._shapes.get(curl) != shape:
            _configure(session, curl, request)
            self._shapes[curl] = shape

    def _take_cookies(self, session: Any, curl: Any, headers: list[tuple[str, str]]) -> None:
        """The cookies an answer set go into the session's jar, as after the session's own
        requests, and every handle sends them from its next call on."""
        if any(name.lower() == "set-cookie" for name, _ in headers):
            if not session.discard_cookies:
                changes = curl.getinfo(CurlInfo.COOKIECHANGES)
                session.cookies.update_cookies_from_curl_changes(changes)
            self._cookies = next(self._cookie_changes)


def _limit(timeout: Timeout) -> tuple[float, float] | None:
    """One total timeout for the whole exchange (connect included), as curl_cffi takes it: the
    read timeout, which the core has already capped by what is left of the deadline; the
    connect one within it."""
    total = timeout.read if timeout.read is not None else timeout.connect
    if total is None:
        return None
    # curl counts whole milliseconds, and takes 0 for no limit: a deadline's last fraction of
    # one is one (for a caller's session too, which converts these itself).
    total = max(total, 0.001)
    connect = total if timeout.connect is None else min(max(timeout.connect, 0.001), total)
    return (connect, total - connect)


@functools.lru_cache(maxsize=64)
def _headers(headers: tuple[tuple[str, str], ...]) -> curl_requests.Headers:
    """The request's headers as sent (`sent_headers`), in curl_cffi's own `Headers`: it copies
    one as it is, where it would encode every name and value of a dict on every request. Never
    changed (curl_cffi copies it), so one serves every call, in every thread."""
    return curl_requests.Headers(dict(sent_headers(headers)))


class _Body:
    """The body's chunks as curl delivers them, up to `limit` bytes; then the transfer stops."""

    def __init__(self, limit: int | None) -> None:
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.limit = limit
        self.cut = False
        self.failure: CurlError | None = None

    def write(self, chunk: bytes) -> int:
        self.chunks.append(chunk)
        self.size += len(chunk)
        if self.limit is not None and self.size > self.limit:
            self.cut = True
            return CURL_WRITEFUNC_ERROR
        return len(chunk)

    @property
    def complete(self) -> bool:
        """Whether every chunk has been read and the transfer ended well (read by then)."""
        return not self.chunks and self.failure is None

    def read(self) -> bytes:
        if self.chunks:
            return self.chunks.popleft()
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise _error(failure) from failure
        return b""


class _Head(_Body):
    """The header lines, as curl delivers them; the socket they came on (curl tells it only
    during the transfer), and whether the response is HTTP/1."""

    def __init__(self, curl: Any) -> None:
        super().__init__(None)
        self._curl = curl
        self.socket = -1
        self.http1 = False

    def write(self, chunk: bytes) -> int:
        if chunk.startswith(b"HTTP/"):  # a status line: a response (or a 1xx) begins
            self.http1 = chunk.startswith(b"HTTP/1.")
            if self.socket < 0:
                self.socket = _socket_info(self._curl, CurlInfo.ACTIVESOCKET)
        self.chunks.append(chunk)
        return len(chunk)


def _received(body: _Body, exc: CurlError) -> Any:
    """The response of a transfer that failed once its headers had arrived (the body's limit
    stopped it, or the body broke off: then reading the body raises), or `None`."""
    response = getattr(exc, "response", None)
    if response is None or not getattr(response, "status_code", 0):
        return None
    if not body.cut:
        body.failure = exc
    return response


class CurlCffiEngine(_CurlBase, Engine):
    """The blocking engine over a `curl_cffi.requests.Session`, speaking as a browser does.

    Args:
        impersonate: The browser to speak as (curl_cffi's names: `"chrome"`, `"safari"`,
            `"firefox"`, …), or `None` for curl's own fingerprint.
        verify: `True` to verify TLS, `False` not to, or a CA bundle's path.
        proxy: A proxy URL.
        max_connections: The most connections the async pool keeps (curl handles).
        tls: Accepted for symmetry with the other engines; curl needs no TLS context built.
        trust_env: Use the environment's proxy variables (`HTTPS_PROXY`, `NO_PROXY`, …), as
            httpx does.
        http_client: Your own `curl_cffi.requests.Session` (or `AsyncSession` for the async
            engine), used as it is and never closed by the SDK.
    """

    # curl_cffi's blocking session keeps a curl handle, and its connections, per thread, and its
    # close() closes the closing thread's only. So the engine keeps the handles its calls used,
    # and close() closes them; a handle in a transfer cannot be touched from another thread
    # (curl has no way to stop a transfer from outside), so its own thread closes it after.
    #
    # With its own session, the engine keeps a thread's handle set up from call to call, as the
    # async engine keeps its pool's (see `_send_fast`), where `Session.request()` resets it and
    # sets every option again each time.

    def send(self, request: Request, timeout: Timeout, max_body: int | None = None) -> Response:
        body = _Body(max_body)
        session = self._session()
        with self._lock:
            if self._closed:
                raise TransportError("the client was closed")
            handle = session.curl  # this thread's
            if self._owns:
                self._handles.add(handle)
                self._busy.add(handle)
        try:
            if self._owns and _SET_CURL_OPTIONS is not None:
                status, headers = self._send_fast(session, handle, request, timeout, body)
            else:
                status, headers = self._send_session(session, request, timeout, body)
        except TransportError:
            raise
        except BaseException:
            # Interrupted (Ctrl-C): the handle starts afresh on its next call.
            self._shapes.pop(handle, None)
            _forget_options(handle)
            raise
        finally:
            with self._lock:
                self._busy.discard(handle)
                closed_meanwhile = self.is_closed and self._owns
            if closed_meanwhile:
                handle.close()
        return _CurlResponse(status, headers, body)

    def _send_session(
        self, session: Any, request: Request, timeout: Timeout, body: _Body
    ) -> tuple[int, list[tuple[str, str]]]:
        """The call through `Session.request()` (a caller's session, or another curl_cffi)."""
        try:
            response = session.request(
                request.method, request.url, **self._arguments(request, timeout, body)
            )
        except CurlError as exc:
            response = _received(body, exc)
            if response is None:
                raise _error(exc) from exc
        return response.status_code, self._headers(response)

    def _send_fast(
        self, session: Any, curl: Any, request: Request, timeout: Timeout, body: _Body
    ) -> tuple[int, list[tuple[str, str]]]:
        """`Session.request()`'s work on this thread's handle, less what it redoes on every
        call: as `AsyncCurlCffiEngine._send_fast`, the handle keeps its settings from one call
        to the next, and each call sets only its body, its timeouts and its callbacks.

        `perform()` frees the handle's header and resolve lists after the transfer unless told
        not to, and the kept settings still point at them: they stay, until `_configure` frees
        them as it sets the handle up again, or an interrupt drops them (`_forget_options`).
        """
        limit = self._timeouts(timeout)
        head = _Head(curl)
        self._prepare(session, curl, request)
        _set_call(curl, request, limit, body, head)
        idle = self._idle_of.get(curl)
        if idle is None:
            idle = self._idle_of[curl] = {}
        _close_unclean(idle, ())  # the handle's connections are this thread's, and all idle
        failure: CurlError | None = None
        try:
            curl.perform(clear_headers=False, clear_resolve=False)
        except CurlError as exc:
            failure = _failure(exc)
            self._shapes.pop(curl, None)  # set up afresh on the next call, as the session does
        else:
            _note_connection(curl, head, idle)
        status = int(curl.getinfo(CurlInfo.RESPONSE_CODE))
        headers = _header_lines(head.chunks) if status else []
        if headers:
            self._take_cookies(session, curl, headers)
        _fail(failure, status, body)
        return status, headers

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle = [handle for handle in self._handles if handle not in self._busy]
        if self._owns:
            for handle in idle:
                handle.close()
            self._http.close()

    def _session(self) -> Any:
        forks = self._forks
        session = super()._session()
        if forks != self._forks:  # forked: the parent's handles are not the child's to close
            self._handles = weakref.WeakSet()
            self._busy = set()
            self._shapes = weakref.WeakKeyDictionary()
        return session


class _CurlResponse(Response):
    def __init__(self, status_code: int, headers: list[tuple[str, str]], body: _Body) -> None:
        self.status_code = status_code
        self.headers = headers
        self._body = body

    def read(self) -> bytes:
        data = self._body.read()
        self.ended = self._body.complete  # the transfer is over: nothing more comes
        return data

    def close(self) -> None:
        self._body.chunks.clear()


class AsyncCurlCffiEngine(_CurlBase, AsyncEngine):
    """The async engine over a `curl_cffi.requests.AsyncSession`, on asyncio only; the
    arguments are `CurlCffiEngine`'s."""

    _async = True

    _asyncio_only = True

    def __init__(self, **kwargs: Any) -> None:
        self.check_runnable()  # before curl_cffi's session, which needs asyncio
        super().__init__(**kwargs)

    async def send(
        self, request: Request, timeout: Timeout, max_body: int | None = None
    ) -> AsyncResponse:
        self.check_runnable()
        body = _Body(max_body)
        session = self._session()
        if self._owns and _SET_CURL_OPTIONS is not None:
            return await self._send_fast(session, request, timeout, body)
        try:
            response = await session.request(
                request.method, request.url, **self._arguments(request, timeout, body)
            )
        except CurlError as exc:
            response = _received(body, exc)
            if response is None:
                raise _error(exc) from exc
        return _AsyncCurlResponse(response.status_code, self._headers(response), body)

    async def _send_fast(
        self, session: Any, request: Request, timeout: Timeout, body: _Body
    ) -> AsyncResponse:
        """`AsyncSession.request()`'s work, less what it redoes on every call.

        The session resets a curl handle after each request (`curl_easy_reset`), and sets every
        option again on the next: the browser's whole fingerprint (`curl_easy_impersonate`),
        the headers, the proxies, the cookies; then it reads sixteen facts of the response to
        build its `Response`. Over loopback that was half the CPU of a call. Here a handle of
        the session's pool keeps its settings from one call to the next, as long as the
        request's URL, method and headers and the session's cookies stay the same: curl_cffi's
        own `set_curl_options` made them (so every byte on the wire is the same); each call
        sets only its body, its timeouts and its callbacks, and reads the status and the header
        lines. The session's pool (`max_clients`) still bounds the handles in use.
        """
        limit = self._timeouts(timeout)
        curl = await session.pop_curl()
        head = _Head(curl)
        try:
            self._prepare(session, curl, request)
            _set_call(curl, request, limit, body, head)
            acurl = session.acurl
            # The pool's connections in a transfer are those curl watches (curl_cffi's own book
            # of them): the others are idle. Without that book, none is known to be idle.
            busy = getattr(acurl, "_sockfds", None)
            if busy is not None:
                _close_unclean(self._idle, busy)
            failure: CurlError | None = None
            try:
                await acurl.add_handle(curl)
            except CurlError as exc:
                failure = _failure(exc)
            else:
                _note_connection(curl, head, self._idle)
            status = int(curl.getinfo(CurlInfo.RESPONSE_CODE)) if not self.is_closed else 0
        except BaseException:
            # Interrupted (cancelled): the transfer stops, and the handle starts afresh.
            _release(session, curl, reuse=False, shapes=self._shapes)
            raise
        headers = _header_lines(head.chunks) if status else []
        if headers:
            self._take_cookies(session, curl, headers)
        _release(session, curl, reuse=failure is None, shapes=self._shapes)
        if failure is None and not status:
            raise TransportError("the client was closed")
        _fail(failure, status, body)
        return _AsyncCurlResponse(status, headers, body)

    async def aclose(self) -> None:
        self._closed = True
        if self._owns:
            await self._http.close()


def _configure(session: Any, curl: Any, request: Request) -> None:
    """Set a handle up for `request` from nothing, as the session's `request()` would."""
    curl.clean_handles_and_buffers()
    curl.reset()
    assert _SET_CURL_OPTIONS is not None
    _SET_CURL_OPTIONS(
        curl=curl,
        method=request.method,
        url=request.url,
        params_list=[session.params, None],
        base_url=session.base_url,
        data=request.body,
        headers_list=[session.headers, _headers(request.headers)],
        cookies_list=[session.cookies, None],
        auth=session.auth,
        timeout=None,
        allow_redirects=False,  # as httpx: a redirect is an answer, not followed
        max_redirects=session.max_redirects,
        proxies_list=[session.proxies, None],
        proxy_auth=session.proxy_auth,
        trust_env=session.trust_env,
        verify_list=[session.verify, None],
        accept_encoding="gzip, deflate, br",  # `request()`'s
        impersonate=session.impersonate,
        ja3=session.ja3,
        akamai=session.akamai,
        extra_fp=session.extra_fp,
        default_headers=session.default_headers,
        http_version=session.http_version,
        interface=session.interface,
        cert=session.cert,
        curl_options=session.curl_options,
        queue_class=None,
        event_class=None,
    )


def _set_call(
    curl: Any, request: Request, limit: tuple[float, float] | None, body: _Body, head: _Head
) -> None:
    """Set on a set-up handle what is each call's own: the body, the timeouts, the callbacks."""
    data = request.body
    if data or request.method.upper() in ("POST", "PUT", "PATCH"):
        # Where `set_curl_options` sets a body (the shape says whether there is one): a GET
        # given a body of none would go out as a POST.
        curl.setopt(CurlOpt.POSTFIELDS, data)
        curl.setopt(CurlOpt.POSTFIELDSIZE, len(data))
    # As curl_cffi sets a (connect, read) timeout: the connect's, and the whole's; in whole
    # milliseconds, at least one (curl takes 0 for no limit).
    if limit is None:
        connect_ms = total_ms = 0
    else:
        connect, rest = limit
        connect_ms = max(1, int(connect * 1000))
        total_ms = max(1, int((connect + rest) * 1000))
    curl.setopt(CurlOpt.CONNECTTIMEOUT_MS, connect_ms)
    curl.setopt(CurlOpt.TIMEOUT_MS, total_ms)
    curl.setopt(CurlOpt.WRITEFUNCTION, body.write)
    curl.setopt(CurlOpt.HEADERFUNCTION, head.write)


def _note_connection(curl: Any, head: _Head, idle: dict[int, tuple[int, int]]) -> None:
    """Note the connection a transfer ended on, which curl keeps for another: its socket, with
    its ports, which tell it from a later socket of the same number (the peer's is asked only
    for a connection not noted yet). HTTP/1 only: an HTTP/2 connection carries the server's
    frames between responses, and numbers its streams."""
    fd = head.socket
    if fd < 0 or not head.http1:
        return
    local = _long_info(curl, CurlInfo.LOCAL_PORT)
    noted = idle.get(fd)
    if noted is None or noted[0] != local:
        idle[fd] = (local, _long_info(curl, CurlInfo.PRIMARY_PORT))


# `Curl.getinfo()` builds two tables of types on every call: these ask libcurl directly, for a
# third of its cost (two of them a call), as curl_cffi 0.17 does inside.


def _long_info(curl: Any, option: CurlInfo) -> int:
    value = _wrapper.ffi.new("long *")
    return int(value[0]) if _wrapper.lib.curl_easy_getinfo(curl._curl, option, value) == 0 else -1


def _socket_info(curl: Any, option: CurlInfo) -> int:
    value = _wrapper.ffi.new("uintptr_t *")
    if _wrapper.lib._curl_easy_getinfo_socket(curl._curl, option, value) != 0:
        return -1
    fd = int(value[0])
    return -1 if fd == _SOCKET_BAD else fd


def _close_unclean(idle: dict[int, tuple[int, int]], busy: Container[int]) -> None:
    """Shut down every idle kept connection (not in `busy`) that received bytes since its
    response, or its end: curl's pool would hand it to the next transfer as it is, and that
    transfer would read the stray bytes as its answer, another call's (docs/reliability.md).

    One `poll()` of the idle sockets, without waiting. A socket that received bytes is shut
    down if it is still the connection noted (its ports): curl then finds it dead when it next
    looks at it, closes it, and connects afresh. The others stay, to be checked next time.
    """
    if not idle:
        return
    if _POLL:
        poller = select.poll()
        for fd in idle:
            if fd not in busy:
                poller.register(fd, select.POLLIN | select.POLLPRI)
        ready = []
        for fd, events in poller.poll(0):
            if events & select.POLLNVAL:  # curl closed it meanwhile
                del idle[fd]
            else:
                ready.append(fd)
    else:  # Windows: select() takes sockets, and more than 1,024 of them
        fds = [fd for fd in idle if fd not in busy]
        try:
            ready = select.select(fds, [], [], 0)[0] if fds else []
        except OSError:  # a socket curl closed meanwhile
            ready = []
    for fd in ready:
        _shut_down(fd, idle.pop(fd))


_POLL = hasattr(select, "poll")
_SOCKET_BAD = int(_wrapper.ffi.cast("uintptr_t", -1))


def _shut_down(fd: int, ports: tuple[int, int]) -> None:
    """Shut a kept connection's socket down, if `fd` is still that connection (curl keeps the
    socket: it closes it once it finds it dead)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:  # no longer a socket
        return
    try:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and ports == (
            sock.getsockname()[1],
            sock.getpeername()[1],
        ):
            sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    finally:
        sock.detach()


def _failure(exc: CurlError) -> CurlError:
    """The exception the session would have raised for `exc` (its `Timeout` for a timeout, …)."""
    code: Any = exc.code
    failure: CurlError = curl_requests.exceptions.code2error(code, str(exc))(str(exc), code)
    failure.__cause__ = exc
    return failure


def _fail(failure: CurlError | None, status: int, body: _Body) -> None:
    """As `_received`: a failure before the headers is the call's; after them, the body's
    (unless the body's limit stopped it: then the core refuses the answer)."""
    if failure is None:
        return
    if not status:
        raise _error(failure) from failure
    if not body.cut:
        body.failure = failure


def _release(session: Any, curl: Any, *, reuse: bool, shapes: Any) -> None:
    """Give a handle back to the session's pool (as its `release_curl()` does), its settings
    kept for the next call if `reuse`, else cleared."""
    if session._closed:
        curl.clean_handles_and_buffers()
        curl.close()
        return
    session.acurl.remove_handle(curl)  # nothing, if the transfer ended
    if not reuse:
        shapes.pop(curl, None)
        curl.clean_handles_and_buffers()
        curl.reset()
    session.push_curl(curl)


def _header_lines(lines: Iterable[bytes]) -> list[tuple[str, str]]:
    """The last response's headers (after any 1xx), decoded as curl_cffi decodes them."""
    block: list[bytes] = []
    for line in lines:
        if line.startswith(b"HTTP/"):
            block = []
        elif line[:1] in (b" ", b"\t") and block:
            block[-1] += b" " + line.strip()
        elif line.strip():
            block.append(line.rstrip(b"\r\n"))
    return [(name, value or "") for name, value in curl_requests.Headers(block).multi_items()]


def _fast_path() -> Any:
    """curl_cffi's `set_curl_options`, if it takes what `_configure` gives (curl_cffi 0.17's),
    else `None`: the engines then go through their session's `request()`."""
    try:
        from curl_cffi.requests.utils import set_curl_options
    except ImportError:  # pragma: no cover - another curl_cffi
        return None
    wanted = {
        "curl", "method", "url", "params_list", "base_url", "data", "headers_list",
        "cookies_list", "auth", "timeout", "allow_redirects", "max_redirects", "proxies_list",
        "proxy_auth", "trust_env", "verify_list", "accept_encoding", "impersonate", "ja3",
        "akamai", "extra_fp", "default_headers", "http_version", "interface", "cert",
        "curl_options", "queue_class", "event_class",
    }  # fmt: skip
    parameters = inspect.signature(set_curl_options).parameters
    # And the rest of what the `_send_fast`s use of curl_cffi 0.17's insides.
    perform = inspect.signature(curl_cffi.Curl.perform).parameters
    others = (
        hasattr(CurlInfo, "COOKIECHANGES")
        and all(hasattr(curl_requests.AsyncSession, n) for n in ("pop_curl", "push_curl", "acurl"))
        and {"clear_headers", "clear_resolve"} <= set(perform)
        and hasattr(curl_cffi.Curl, "clean_handles_and_buffers")
        and hasattr(curl_requests.Cookies, "update_cookies_from_curl_changes")
        and hasattr(curl_requests.exceptions, "code2error")
        and all(
            hasattr(_wrapper.lib, n) for n in ("curl_easy_getinfo", "_curl_easy_getinfo_socket")
        )
    )
    if not wanted <= set(parameters) or not others:
        return None  # pragma: no cover - another curl_cffi
    return set_curl_options


_SET_CURL_OPTIONS = _fast_path()


class _AsyncCurlResponse(AsyncResponse):
    def __init__(self, status_code: int, headers: list[tuple[str, str]], body: _Body) -> None:
        self.status_code = status_code
        self.headers = headers
        self._body = body

    async def aread(self) -> bytes:
        data = self._body.read()
        self.ended = self._body.complete
        return data

    async def aclose(self) -> None:
        self._body.chunks.clear()


def _forget_options(curl: Any) -> None:
    """Clear what a request interrupted by an exception (Ctrl-C's `KeyboardInterrupt`) left set
    on the thread's curl handle.

    curl_cffi sets a request's options one by one on the handle and clears them only once the
    transfer is over (`Curl.perform()`'s `finally`). An interrupt that lands in between leaves
    them for the next request on the handle: its headers are appended to this one's list (every
    header twice: the server rejects the secret), and its other options mix with the stale
    ones. curl_easy_reset() sets every option back (and keeps the connections). The header
    lists are dropped, not freed: the interrupt may have landed inside `perform()`'s own
    cleanup, after a list was freed and before it was forgotten, and freeing it again crashes
    the process. A few hundred bytes leak per interrupt instead.
    """
    curl.reset()
    for name in ("_headers", "_http3_headers", "_ws_headers", "_proxy_headers"):
        if hasattr(curl, name):
            setattr(curl, name, curl_cffi.ffi.NULL)


def _error(exc: CurlError) -> TransportError:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return TransportError(text, timeout=isinstance(exc, curl_requests.exceptions.Timeout))
