"""The async client: a driver of the core over `httpx.AsyncClient`. `_client.py` is its twin."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
import httpx

from ._base import BaseClient, CallOptions, build_request, is_timeout
from ._call import Call, Done, Receive, Send, collect
from ._models import Answer, FinishReason
from ._prompt import Messages

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

__all__ = ["AsyncClient", "AsyncStream"]


class AsyncClient(BaseClient[httpx.AsyncClient]):
    """An async PizzaGPT client for asyncio and trio, with one connection pool reused across calls.

    Close it with `aclose()` or use it in an `async with` block. See `BaseClient` for the
    arguments.

    Example:
        >>> async with AsyncClient() as client:  # doctest: +SKIP
        ...     print(await client.ask("Why is the sky blue?"))
    """

    _http_class = httpx.AsyncClient

    def stream(self, messages: Messages, **options: Unpack[CallOptions]) -> AsyncStream:
        """Ask, and iterate over the answer as it arrives.

        Args:
            messages: A string, or a sequence of OpenAI-style messages.
            **options: Per-call options (see `CallOptions`).

        Returns:
            An `AsyncStream` that yields `str` chunks, then one `FinishReason`. Nothing is sent
            until it is first iterated; use it in an `async with` block to close the response at
            once if you stop early.

        Raises:
            UsageError: Bad messages or options, or a closed client; raised here, before
                anything is sent.
        """
        call, timeout = self._start(messages, options)
        return AsyncStream(self._http, call, timeout)

    async def ask(self, messages: Messages, **options: Unpack[CallOptions]) -> Answer:
        """Ask, and return the whole answer.

        Args:
            messages: A string, or a sequence of OpenAI-style messages.
            **options: Per-call options (see `CallOptions`).

        Returns:
            The `Answer`: `.text`, `.finish_reason`, `.citations`, `.refusal`.

        Raises:
            PizzaGPTError: See `AsyncStream` for which subclass means what.
        """
        async with self.stream(messages, **options) as stream:
            return collect([event async for event in stream])

    async def aclose(self) -> None:
        """Close the connection pool (not an `http_client` you passed in)."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class AsyncStream:
    """The events of one call: `str` chunks of the answer, then exactly one `FinishReason`.

    Iterate over it once. Leaving an `async with` block, or calling `aclose()`, closes the HTTP
    response at once and returns its connection to the pool.

    Raises:
        APIConnectionError: The service could not be reached (`APITimeoutError` for timeouts
            and the deadline), after the retries.
        APIStatusError: A non-2xx status, after the retries (`RateLimitError`,
            `InternalServerError`).
        InvalidResponseError: A 2xx answer that cannot be read.
        SecretRejectedError: The service rejected the secret.
        MisuseDetectedError: The service flagged the traffic as misuse.
    """

    def __init__(self, http: httpx.AsyncClient, call: Call, timeout: httpx.Timeout) -> None:
        self._http = http
        self._call = call
        self._timeout = timeout
        self._response: httpx.Response | None = None
        self._chunks: AsyncIterator[bytes] | None = None
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
        return self._events.popleft()

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
        await self._close_response()
        if isinstance(action, Send):
            await self._send(action)
        elif isinstance(action, Done):
            self._finished = True
        else:
            await anyio.sleep(action.seconds)

    async def _send(self, action: Send) -> None:
        request = build_request(self._http, action, self._timeout)
        try:
            self._response = await self._http.send(request, stream=True)
        except httpx.RequestError as exc:
            self._call.transport_failed(exc, timeout=is_timeout(exc))
            return
        self._chunks = self._response.aiter_bytes()
        self._call.response_received(
            self._response.status_code, self._response.headers.multi_items()
        )

    async def _receive(self) -> None:
        assert self._chunks is not None
        try:
            chunk = await anext(self._chunks, None)
        except httpx.RequestError as exc:
            await self._close_response()
            self._call.transport_failed(exc, timeout=is_timeout(exc))
            return
        if chunk is None:
            await self._close_response()
            self._events.extend(self._call.body_ended())
        else:
            self._events.extend(self._call.data_received(chunk))

    async def _close_response(self) -> None:
        response, self._response, chunks = self._response, None, self._chunks
        self._chunks = None
        if chunks is not None:
            # An async generator left suspended would be finalized by the event loop later.
            await chunks.aclose()  # type: ignore[attr-defined]
        if response is not None:
            await response.aclose()
