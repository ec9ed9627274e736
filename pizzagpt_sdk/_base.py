"""What `Client` and `AsyncClient` share: configuration, validation and the httpx glue, no I/O."""

from __future__ import annotations

import functools
import logging
import os
import random
import ssl
import time
import warnings
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypedDict, TypeVar
from urllib.request import getproxies  # httpx has imported it already

import httpx

from ._batch import Batch, BatchProgress, RateLimiter
from ._call import Call, Send, check_deadline, check_max_response_bytes
from ._exceptions import ClientClosedError, InvalidTypeError, InvalidValueError
from ._pool import POOL_SIZE, SpreadTransport
from ._prompt import Messages, flatten_messages
from ._protocol import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_SECRET,
    DEFAULT_USER_AGENT,
    Settings,
)
from ._retry import DEFAULT_MAX_RETRIES, RetryPolicy, check_max_retries

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping

__all__ = ["DEFAULT_DEADLINE", "DEFAULT_TIMEOUT", "BaseClient", "CallOptions"]

#: An answer is generated before anything is sent back, so reads wait long (others use 60 s or
#: more); a host that does not accept a connection in 10 s is not going to.
DEFAULT_TIMEOUT = httpx.Timeout(120.0, connect=10.0)
#: The most one call may take, retries and their sleeps included.
DEFAULT_DEADLINE = 300.0
# httpx keeps only 20 idle connections by default: above 20 calls at once, each call would
# close its connection and the next open (and TLS-handshake) a new one. Keep every connection
# the pool may open; one idle past httpx's keep-alive expiry (5 s) is closed, not reused.
_MAX_CONNECTIONS = 100
_LIMITS = httpx.Limits(max_connections=_MAX_CONNECTIONS, max_keepalive_connections=_MAX_CONNECTIONS)
# AsyncClient's pool: the same 100 connections, in small pools (see _pool.py).
_KEEPALIVE_EXPIRY = 5.0  # httpx's default
_SMALL_LIMITS = httpx.Limits(
    max_connections=POOL_SIZE,
    max_keepalive_connections=POOL_SIZE,
    keepalive_expiry=_KEEPALIVE_EXPIRY,
)
_POOLS = -(-_MAX_CONNECTIONS // POOL_SIZE)


class CallOptions(TypedDict, total=False):
    """The per-call options of `stream()` and `ask()`; each one left out takes its default.

    Attributes:
        model: Sent as the body's `model` field (for example `"gpt-4o-mini"`); left out by
            default, as gpt4free does.
        search: Sent as the body's `searchEnabled` field (web search, with citations); left out
            by default.
        include_system: Keep system and developer messages in the prompt (default `True`).
        assistant_suffix: End a multi-message prompt with `\\nAssistant:` (default `True`).
        max_retries: Overrides the client's `max_retries` for this call.
        retry_policy: Overrides the client's `retry_policy` for this call.
        timeout: Overrides the client's `timeout` for this call.
        deadline: Overrides the client's `deadline` for this call; `None` for no deadline.
    """

    model: str | None
    search: bool | None
    include_system: bool
    assistant_suffix: bool
    max_retries: int
    retry_policy: RetryPolicy
    timeout: float | httpx.Timeout
    deadline: float | None


_CALL_OPTIONS = frozenset(CallOptions.__annotations__)
_HTTP = TypeVar("_HTTP", httpx.Client, httpx.AsyncClient)
_Transport = TypeVar("_Transport", httpx.BaseTransport, httpx.AsyncBaseTransport)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One TLS context for all the SDK's own clients: building one loads the CA bundle, which
    costs about 100 ms, far more than the rest of a client. Verification stays on."""
    return httpx.create_ssl_context()


def _small_pool() -> httpx.AsyncHTTPTransport:
    return httpx.AsyncHTTPTransport(verify=_ssl_context(), limits=_SMALL_LIMITS)


_LOG_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO}


@functools.cache
def _configure_logging() -> None:
    """Turn the `pizzagpt_sdk` logger on when `PIZZAGPT_LOG` asks; once per process."""
    value = os.environ.get("PIZZAGPT_LOG", "").strip().lower()
    if not value:
        return
    level = _LOG_LEVELS.get(value)
    if level is None:
        warnings.warn(
            f"PIZZAGPT_LOG={value!r} is not one of {sorted(_LOG_LEVELS)}: logging stays off",
            stacklevel=4,
        )
        return
    logger = logging.getLogger("pizzagpt_sdk")
    logger.setLevel(level)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        logger.addHandler(handler)


class BaseClient(Generic[_HTTP, _Transport]):
    """Configuration shared by `Client` and `AsyncClient`.

    Args:
        base_url: The service's URL. Default: `PIZZAGPT_BASE_URL` from the environment, else
            `https://www.pizzagpt.it`.
        secret: The `x-secret` header. Default: `PIZZAGPT_SECRET`, else `"Marinara"`.
        timeout: The most any single wait may take, in seconds (connect, write, read, pool), or
            an `httpx.Timeout`. Default: 120 s, 10 s to connect.
        deadline: The most one call may take, retries and sleeps included, in seconds; `None`
            for no limit. Default: 300 s.
        max_retries: Retries after the first attempt. Default: 2.
        retry_policy: Delays between attempts. Default: `RetryPolicy()`.
        proxy: A proxy URL (or `httpx.Proxy`) for the client's own connection pool.
        headers: Extra request headers.
        user_agent: The `user-agent` header. Default: a desktop Chrome, as gpt4free sends.
        max_response_bytes: The largest response body accepted. Default: 4 MiB.
        http_client: Your own httpx client, used as it is (with its own proxy, TLS and limits)
            and never closed by the SDK.
        transport: An httpx transport for the SDK's own pool (httpx's `MockTransport`, the
            fake's in-process transport, an `HTTPTransport` with options); used as it is, also
            after `os.fork()`. Environment proxies do not apply to it.

    Raises:
        InvalidTypeError: An argument has the wrong type.
        InvalidValueError: An argument has a value the SDK cannot use.
    """

    _http_class: type[_HTTP]
    _transport_class: type[_Transport]
    #: Whether the client's own pool is split into small ones (`AsyncClient`; see _pool.py).
    _spread: ClassVar[bool] = False

    def __init__(
        self,
        *,
        base_url: str | None = None,
        secret: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        deadline: float | None = DEFAULT_DEADLINE,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_policy: RetryPolicy | None = None,
        proxy: str | httpx.Proxy | None = None,
        headers: Mapping[str, str] | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        http_client: _HTTP | None = None,
        transport: _Transport | None = None,
    ) -> None:
        self._settings = Settings(
            base_url=base_url or os.environ.get("PIZZAGPT_BASE_URL") or DEFAULT_BASE_URL,
            secret=secret or os.environ.get("PIZZAGPT_SECRET") or DEFAULT_SECRET,
            user_agent=user_agent,
            headers=headers or {},
        )
        self._timeout = _check_timeout(timeout)
        self._deadline = check_deadline(deadline)
        self._max_retries = check_max_retries(max_retries)
        self._retry_policy = _check_policy(retry_policy)
        self._max_response_bytes = check_max_response_bytes(max_response_bytes)
        _configure_logging()
        self._proxy = proxy
        self._transport: _Transport | None = transport
        self._pid = os.getpid()
        if transport is not None and not isinstance(transport, self._transport_class):
            raise InvalidTypeError(
                f"transport must be an httpx.{self._transport_class.__name__}, "
                f"not {type(transport).__name__}"
            )
        if http_client is None:
            if proxy is not None and transport is not None:
                raise InvalidValueError("give the proxy to your transport, not to the SDK")
            self._http: _HTTP = self._new_http()
            self._owns_http = True
        elif not isinstance(http_client, self._http_class):
            raise InvalidTypeError(
                f"http_client must be an httpx.{self._http_class.__name__}, "
                f"not {type(http_client).__name__}"
            )
        elif proxy is not None or transport is not None:
            what = "proxy" if proxy is not None else "transport"
            raise InvalidValueError(f"give the {what} to your own http_client, not to the SDK")
        else:
            self._http = http_client
            self._owns_http = False

    def __del__(self) -> None:
        # As an unclosed socket does: warn, and leave the cleaning up to the garbage collector
        # (closing an async pool here would need an event loop).
        http = getattr(self, "_http", None)
        if http is not None and self._owns_http and not http.is_closed:
            warnings.warn(
                f"unclosed {self!r}: call close()/aclose() or use it in a with block",
                ResourceWarning,
                source=self,
                stacklevel=1,
            )

    @property
    def base_url(self) -> str:
        """The service's base URL."""
        return self._settings.base_url

    @property
    def is_closed(self) -> bool:
        """Whether the client has been closed."""
        return self._http.is_closed

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def _new_http(self) -> _HTTP:
        options: dict[str, Any] = {"proxy": self._proxy, "timeout": self._timeout}
        if self._transport is not None:
            options["transport"] = self._transport
        elif self._spread and self._proxy is None and getproxies().keys() <= {"no"}:
            # httpx reads proxies from the environment only when it makes its own transport:
            # with a proxy, given or from the environment, the client keeps httpx's own pool.
            _ssl_context()  # now, as for httpx's pool: a bad CA bundle fails here, not mid-call
            options["transport"] = SpreadTransport(
                _small_pool,
                pools=_POOLS,
                per_pool=POOL_SIZE,
                idle_expiry=_KEEPALIVE_EXPIRY,
            )
        else:
            options["verify"] = _ssl_context()
            options["limits"] = _LIMITS
        return self._http_class(**options)

    def _start(self, messages: Messages, options: CallOptions) -> tuple[Call, httpx.Timeout]:
        """Validate everything and prepare the call, before anything is sent."""
        check_options(options)
        if self._http.is_closed:
            raise ClientClosedError("this client is closed: create a new one")
        if self._pid != os.getpid() and self._owns_http and self._transport is None:
            # After os.fork() the pooled connections are the parent's sockets: a child that used
            # them would interleave its bytes with the parent's. Start a fresh pool, and leave
            # the parent's alone (closing it here could shut the parent's TLS sessions down).
            self._pid = os.getpid()
            self._http = self._new_http()
        call = new_call(self, messages, options)
        timeout = _check_timeout(options["timeout"]) if "timeout" in options else self._timeout
        return call, timeout

    def _batch(
        self,
        prompts: Iterable[Messages],
        concurrency: int,
        rate_limit: float | RateLimiter | None,
        return_exceptions: bool,
        on_progress: Callable[[BatchProgress], None] | None,
        options: CallOptions,
    ) -> Batch:
        """Validate a whole batch, before anything is sent."""
        if rate_limit is not None and not isinstance(rate_limit, RateLimiter):
            rate_limit = RateLimiter(rate_limit, clock=time.monotonic)
        batch = Batch(
            prompts,
            concurrency=concurrency,
            rate_limiter=rate_limit,
            return_exceptions=return_exceptions,
            on_progress=on_progress,
            include_system=options.get("include_system", True),
            assistant_suffix=options.get("assistant_suffix", True),
        )
        if batch.prompts:
            self._start(batch.prompts[0], options)  # the options, checked once for all
        return batch


class CallDefaults(Protocol):
    """What a client holds for its calls (`BaseClient`, and the aiohttp engine's client)."""

    _settings: Settings
    _max_retries: int
    _retry_policy: RetryPolicy
    _deadline: float | None
    _max_response_bytes: int


def new_call(client: CallDefaults, messages: Messages, options: CallOptions) -> Call:
    """The core's `Call` for these messages: every per-call option over the client's."""
    prompt = flatten_messages(
        messages,
        include_system=options.get("include_system", True),
        assistant_suffix=options.get("assistant_suffix", True),
    )
    request = client._settings.build_request(
        prompt, model=options.get("model"), search=options.get("search")
    )
    return Call(
        request,
        clock=time.monotonic,
        now=time.time,
        random=random.random,
        max_retries=options.get("max_retries", client._max_retries),
        retry_policy=options.get("retry_policy", client._retry_policy),
        deadline=options.get("deadline", client._deadline),
        max_response_bytes=client._max_response_bytes,
    )


def check_options(options: CallOptions) -> None:
    """Refuse per-call options the SDK does not know (a typo would otherwise be ignored)."""
    unknown = options.keys() - _CALL_OPTIONS
    if unknown:
        raise InvalidTypeError(
            f"unexpected option(s) {sorted(unknown)}; the options are {sorted(_CALL_OPTIONS)}"
        )


def build_request(
    http: httpx.Client | httpx.AsyncClient, send: Send, timeout: httpx.Timeout
) -> httpx.Request:
    """Convert the core's request into httpx's, no single wait longer than the deadline allows."""
    cap = send.timeout
    if cap is not None and _exceeds(timeout, cap):
        timeout = httpx.Timeout(
            connect=_capped(timeout.connect, cap),
            read=_capped(timeout.read, cap),
            write=_capped(timeout.write, cap),
            pool=_capped(timeout.pool, cap),
        )
    request = send.request
    url, headers = _httpx_target(request.url, request.headers)
    built = http.build_request(
        request.method, url, headers=headers, content=request.body, timeout=timeout
    )
    # httpx sends a bytes body through an async generator, left suspended when a write fails
    # (a server that hangs up): trio warns when it is collected (encode/httpx#3686).
    built.stream = _Body(request.body)
    return built


@functools.lru_cache(maxsize=64)
def _httpx_target(
    url: str, headers: tuple[tuple[str, str], ...]
) -> tuple[httpx.URL, httpx.Headers]:
    """httpx's URL and headers for the core's, parsed once: parsing them is about a third of
    building an httpx request (benchmarks/). httpx copies the headers and never changes these."""
    return httpx.URL(url), httpx.Headers(headers)


def _exceeds(timeout: httpx.Timeout, cap: float) -> bool:
    """Whether any wait of `timeout` may last longer than `cap` (`None`: no limit)."""
    for value in (timeout.connect, timeout.read, timeout.write, timeout.pool):
        if value is None or value > cap:
            return True
    return False


class _Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A request body of one chunk, iterated without a generator (see `build_request`)."""

    def __init__(self, body: bytes) -> None:
        self._body = body

    def __iter__(self) -> Iterator[bytes]:
        return iter((self._body,))

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _OneChunk(self._body)


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


def is_timeout(error: httpx.RequestError) -> bool:
    """Whether httpx's error is a timeout (the core tells timeouts from other failures)."""
    return isinstance(error, httpx.TimeoutException)


def _capped(value: float | None, cap: float) -> float:
    return cap if value is None else min(value, cap)


def _check_timeout(value: object) -> httpx.Timeout:
    if isinstance(value, httpx.Timeout):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTypeError(
            f"timeout must be a number of seconds or an httpx.Timeout, not {value!r}"
        )
    if not value > 0:
        raise InvalidValueError(f"timeout must be more than 0 seconds, not {value}")
    return httpx.Timeout(float(value))


def _check_policy(value: object) -> RetryPolicy:
    if value is None:
        return RetryPolicy()
    if not isinstance(value, RetryPolicy):
        raise InvalidTypeError(f"retry_policy must be a RetryPolicy, not {type(value).__name__}")
    return value
