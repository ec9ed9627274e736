"""The fast async engine: the sans-I/O core driven by aiohttp directly, on asyncio only.

```python
from pizzagpt_sdk.aiohttp import AiohttpClient  # pip install pizzagpt-sdk[aiohttp]

async with AiohttpClient() as client:
    print(await client.ask("Why is the sky blue?"))
```

`AiohttpClient` speaks the same protocol through the same `Call` as `AsyncClient`: the same
arguments, `stream()` contract, errors and retries. What changes is the HTTP library: aiohttp's
client costs far less CPU per request than httpx's, so under concurrency it does several times the
requests per second (docs/performance.md). It runs on asyncio only; `AsyncClient`, the default,
also runs on trio. `conversation()` and `map()` are `AsyncClient`'s alone for now.

`import pizzagpt_sdk` never imports this module, nor aiohttp.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
import httpx

try:
    # mypy checks this module with or without the extra installed: without it, aiohttp is Any.
    import aiohttp  # type: ignore[import-not-found, unused-ignore]
except ImportError as exc:  # pragma: no cover - the tests of this module need aiohttp
    raise ImportError(
        "pizzagpt_sdk.aiohttp needs aiohttp: pip install 'pizzagpt-sdk[aiohttp]'"
    ) from exc

from ._base import (
    DEFAULT_DEADLINE,
    DEFAULT_TIMEOUT,
    CallOptions,
    _check_policy,
    _check_timeout,
    _configure_logging,
    _ssl_context,
    check_options,
    new_call,
)
from ._call import (
    Call,
    Done,
    Receive,
    Send,
    Transcript,
    check_deadline,
    check_max_response_bytes,
    collect,
)
from ._exceptions import ClientClosedError, InvalidTypeError, InvalidValueError, UsageError
from ._models import Answer, FinishReason
from ._prompt import Messages
from ._protocol import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_SECRET,
    DEFAULT_USER_AGENT,
    Settings,
)
from ._retry import DEFAULT_MAX_RETRIES, RetryPolicy, check_max_retries

if TYPE_CHECKING:
    from collections.abc import Mapping

    from typing_extensions import Self, Unpack

__all__ = ["AiohttpClient", "AiohttpStream"]

# What aiohttp raises when a request cannot be sent or a body cannot be read. Its timeouts are
# asyncio's TimeoutError (a distinct class before Python 3.11); a bare OSError can escape it
# while the connection is torn down.
_TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)


class AiohttpClient:
    """An async PizzaGPT client over one aiohttp session, for asyncio.

    The session is created on the first call, inside the running event loop, and closed by
    `aclose()`: use a client from one event loop only. Close it with `aclose()` or use it in an
    `async with` block.

    Args:
        base_url: The service's URL. Default: `PIZZAGPT_BASE_URL` from the environment, else
            `https://www.pizzagpt.it`.
        secret: The `x-secret` header. Default: `PIZZAGPT_SECRET`, else `"Marinara"`.
        timeout: The most any single wait may take, in seconds, or an `httpx.Timeout` (its
            `connect` bounds connecting, `read` each read, `pool` getting a connection; aiohttp
            has no write timeout). Default: 120 s, 10 s to connect.
        deadline: The most one call may take, retries and sleeps included, in seconds; `None`
            for no limit. Default: 300 s.
        max_retries: Retries after the first attempt. Default: 2.
        retry_policy: Delays between attempts. Default: `RetryPolicy()`.
        proxy: An HTTP proxy URL for every request. Unlike `AsyncClient`, the environment's
            proxy variables (`HTTPS_PROXY`, …) are not read: aiohttp would read them on every
            request.
        headers: Extra request headers.
        user_agent: The `user-agent` header. Default: a desktop Chrome, as gpt4free sends.
        max_response_bytes: The largest response body accepted. Default: 4 MiB.
        http_client: Your own `aiohttp.ClientSession`, used as it is (with its own connector,
            proxy and limits) and never closed by the SDK.

    Raises:
        InvalidTypeError: An argument has the wrong type.
        InvalidValueError: An argument has a value the SDK cannot use.

    Example:
        >>> async with AiohttpClient() as client:  # doctest: +SKIP
        ...     print(await client.ask("Why is the sky blue?"))
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        secret: str | None = None,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT,
        deadline: float | None = DEFAULT_DEADLINE,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_policy: RetryPolicy | None = None,
        proxy: str | None = None,
        headers: Mapping[str, str] | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        http_client: aiohttp.ClientSession | None = None,
    ) -> None:
        self._settings = Settings(
            base_url=base_url or os.environ.get("PIZZAGPT_BASE_URL") or DEFAULT_BASE_URL,
            secret=secret or os.environ.get("PIZZAGPT_SECRET") or DEFAULT_SECRET,
            user_agent=user_agent,
            headers=headers or {},
        )
        self._timeout = _check_timeout(timeout)
        self._client_timeout = _client_timeout(self._timeout, None)
        self._deadline = check_deadline(deadline)
        self._max_retries = check_max_retries(max_retries)
        self._retry_policy = _check_policy(retry_policy)
        self._max_response_bytes = check_max_response_bytes(max_response_bytes)
        _configure_logging()
        if proxy is not None and not isinstance(proxy, str):
            raise InvalidTypeError(f"proxy must be a URL string, not {type(proxy).__name__}")
        if http_client is not None and not isinstance(http_client, aiohttp.ClientSession):
            raise InvalidTypeError(
                f"http_client must be an aiohttp.ClientSession, not {type(http_client).__name__}"
            )
        if http_client is not None and proxy is not None:
            raise InvalidValueError("give the proxy to your own http_client, not to the SDK")
        self._proxy = proxy
        self._http = http_client
        self._owns_http = http_client is None
        self._closed = False

    @property
    def base_url(self) -> str:
        """The service's base URL."""
        return self._settings.base_url

    @property
    def is_closed(self) -> bool:
        """Whether the client has been closed."""
        return self._closed or (self._http is not None and self._http.closed)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def stream(self, messages: Messages, **options: Unpack[CallOptions]) -> AiohttpStream:
        """Ask, and iterate over the answer as it arrives.

        Args:
            messages: A string, or a sequence of OpenAI-style messages.
            **options: Per-call options (see `CallOptions`).

        Returns:
            An `AiohttpStream` that yields `str` chunks, then one `FinishReason`. Nothing is
            sent until it is first iterated; use it in an `async with` block to close the
            response at once if you stop early.

        Raises:
            UsageError: Bad messages or options, or a closed client; raised here, before
                anything is sent.
        """
        check_options(options)
        if self.is_closed:
            raise ClientClosedError("this client is closed: create a new one")
        call = new_call(self, messages, options)
        if "timeout" in options:
            timeout = _check_timeout(options["timeout"])
            return AiohttpStream(
                self._session, call, timeout, _client_timeout(timeout, None), self._proxy
            )
        return AiohttpStream(self._session, call, self._timeout, self._client_timeout, self._proxy)

    async def ask(self, messages: Messages, **options: Unpack[CallOptions]) -> Answer:
        """Ask, and return the whole answer.

        Args:
            messages: A string, or a sequence of OpenAI-style messages.
            **options: Per-call options (see `CallOptions`).

        Returns:
            The `Answer`: `.text`, `.finish_reason`, `.citations`, `.refusal`.

        Raises:
            PizzaGPTError: See `AiohttpStream` for which subclass means what.
        """
        return await self.stream(messages, **options)._collect()

    async def aclose(self) -> None:
        """Close the aiohttp session (not an `http_client` you passed in)."""
        self._closed = True
        if self._owns_http and self._http is not None:
            await self._http.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _session(self) -> aiohttp.ClientSession:
        """The session, created on first use: aiohttp binds it to the running event loop."""
        if self._http is None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                raise UsageError(
                    "AiohttpClient runs on asyncio only; use AsyncClient on trio"
                ) from None
            connector = aiohttp.TCPConnector(ssl=_ssl_context())
            self._http = aiohttp.ClientSession(connector=connector, timeout=self._client_timeout)
        return self._http


class AiohttpStream:
    """The events of one call: `str` chunks of the answer, then exactly one `FinishReason`.

    Iterate over it once. Leaving an `async with` block, or calling `aclose()`, closes the HTTP
    response at once and returns its connection to the pool.

    Raises:
        APIConnectionError: The service could not be reached (`APITimeoutError` for timeouts
            and the deadline), after the retries. The aiohttp or asyncio error is the
            `__cause__`.
        APIStatusError: A non-2xx status, after the retries (`RateLimitError`,
            `InternalServerError`).
        InvalidResponseError: A 2xx answer that cannot be read.
        SecretRejectedError: The service rejected the secret.
        MisuseDetectedError: The service flagged the traffic as misuse.
    """

    def __init__(
        self,
        session: Callable[[], aiohttp.ClientSession],
        call: Call,
        timeout: httpx.Timeout,
        client_timeout: aiohttp.ClientTimeout,
        proxy: str | None = None,
    ) -> None:
        self._session = session
        self._call = call
        self._timeout = timeout
        self._client_timeout = client_timeout  # `timeout` as aiohttp's, built once
        self._proxy = proxy
        self._transcript = Transcript()
        self._response: aiohttp.ClientResponse | None = None
        self._events: deque[str | FinishReason] = deque()
        self._finished = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> str | FinishReason:
        while not self._events:
            if self._finished:
                raise StopAsyncIteration
            try:
                await self._step()
            except BaseException:
                await self.aclose()
                raise
        event = self._events.popleft()
        self._transcript.add(event)
        return event

    @property
    def answer(self) -> Answer | None:
        """The whole answer once the stream has yielded its `FinishReason`; `None` before."""
        return self._transcript.answer

    async def _collect(self) -> Answer:
        """`ask()`'s path: the steps of `__anext__`, with the events left for `collect()`."""
        try:
            while not self._finished:
                await self._step()
        except BaseException:
            await self.aclose()
            raise
        return collect(self._events)

    async def aclose(self) -> None:
        """Stop: close the response, if one is open. Nothing more is yielded."""
        self._finished = True
        self._events.clear()
        await self._close_response()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def _step(self) -> None:
        action = self._call.next_action()
        if isinstance(action, Receive):
            await self._receive()
            return
        if self._response is not None:
            await self._close_response()
        if isinstance(action, Send):
            await self._send(action)
        elif isinstance(action, Done):
            self._finished = True
        else:
            await anyio.sleep(action.seconds)

    async def _send(self, action: Send) -> None:
        request = action.request
        timeout = self._client_timeout
        if action.timeout is not None and _exceeds(self._timeout, action.timeout):
            timeout = _client_timeout(self._timeout, action.timeout)
        try:
            self._response = await self._session().request(
                request.method,
                request.url,
                headers=request.headers,
                data=request.body,
                timeout=timeout,
                proxy=self._proxy,
                allow_redirects=False,  # as httpx: a redirect is an answer, not followed
            )
        except _TRANSPORT_ERRORS as exc:
            self._call.transport_failed(exc, timeout=isinstance(exc, asyncio.TimeoutError))
            return
        self._call.response_received(self._response.status, self._response.headers.items())

    async def _receive(self) -> None:
        assert self._response is not None
        content = self._response.content
        try:
            chunk = await content.readany()
        except _TRANSPORT_ERRORS as exc:
            await self._close_response()
            self._call.transport_failed(exc, timeout=isinstance(exc, asyncio.TimeoutError))
            return
        if chunk:
            self._events.extend(self._call.data_received(chunk))
            # A small body usually arrives whole, with the headers: end it now, rather than
            # after one more read that can only return b"".
            if not (content.at_eof() and self._call.receiving):
                return
        await self._close_response()
        self._events.extend(self._call.body_ended())

    async def _close_response(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            # As `async with response` does: a fully read body returns the connection to the
            # pool, an abandoned one closes it.
            response.release()
            await response.wait_for_close()


def _client_timeout(timeout: httpx.Timeout, cap: float | None) -> aiohttp.ClientTimeout:
    """httpx's per-wait timeouts as aiohttp's, none longer than `cap` (what is left of the
    deadline), as the httpx drivers cap each wait: aiohttp's `connect` is the wait for a
    connection from the pool (httpx's `pool`), `sock_connect` the TCP and TLS connect, `sock_read`
    each read. aiohttp has no write timeout; no `total` either, as httpx has none."""
    return aiohttp.ClientTimeout(
        total=None,
        connect=_capped(timeout.pool, cap),
        sock_connect=_capped(timeout.connect, cap),
        sock_read=_capped(timeout.read, cap),
    )


def _exceeds(timeout: httpx.Timeout, cap: float) -> bool:
    """Whether a wait of `timeout` may last longer than `cap` (`None`: no limit)."""
    for value in (timeout.connect, timeout.read, timeout.pool):
        if value is None or value > cap:
            return True
    return False


def _capped(value: float | None, cap: float | None) -> float | None:
    if cap is None:
        return value
    return cap if value is None else min(value, cap)
