"""The async client: a driver of the core over `httpx.AsyncClient`. `_client.py` is its twin."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Literal, overload

import anyio
import httpx

from ._base import BaseClient, CallOptions, build_request, is_timeout
from ._batch import Batch, BatchProgress, RateLimiter
from ._call import Call, Done, Receive, Send, Transcript, collect
from ._exceptions import PizzaGPTError
from ._history import History
from ._models import Answer, FinishReason
from ._prompt import Message, Messages

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

__all__ = ["AsyncClient", "AsyncConversation", "AsyncStream"]


class AsyncClient(BaseClient[httpx.AsyncClient, httpx.AsyncBaseTransport]):
    """An async PizzaGPT client for asyncio and trio, with one connection pool reused across calls.

    Close it with `aclose()` or use it in an `async with` block. See `BaseClient` for the
    arguments.

    Example:
        >>> async with AsyncClient() as client:  # doctest: +SKIP
        ...     print(await client.ask("Why is the sky blue?"))
    """

    _http_class = httpx.AsyncClient
    _transport_class = httpx.AsyncBaseTransport
    _spread = True

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
        return self._stream(messages, options)

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

    def conversation(
        self, *, system: str | None = None, messages: Iterable[Message] = ()
    ) -> AsyncConversation:
        """Start a conversation that keeps its history and sends all of it on every turn.

        Args:
            system: A system message to start with (kept by `reset()`).
            messages: Earlier messages to continue from.

        Returns:
            An `AsyncConversation` over this client.

        Raises:
            UsageError: A message is invalid.
        """
        return AsyncConversation(self, system=system, messages=messages)

    @overload
    async def map(
        self,
        prompts: Iterable[Messages],
        *,
        concurrency: int = ...,
        rate_limit: float | RateLimiter | None = ...,
        return_exceptions: Literal[False] = ...,
        on_progress: Callable[[BatchProgress], None] | None = ...,
        **options: Unpack[CallOptions],
    ) -> list[Answer]: ...

    @overload
    async def map(
        self,
        prompts: Iterable[Messages],
        *,
        concurrency: int = ...,
        rate_limit: float | RateLimiter | None = ...,
        return_exceptions: Literal[True],
        on_progress: Callable[[BatchProgress], None] | None = ...,
        **options: Unpack[CallOptions],
    ) -> list[Answer | PizzaGPTError]: ...

    async def map(
        self,
        prompts: Iterable[Messages],
        *,
        concurrency: int = 4,
        rate_limit: float | RateLimiter | None = None,
        return_exceptions: bool = False,
        on_progress: Callable[[BatchProgress], None] | None = None,
        **options: Unpack[CallOptions],
    ) -> list[Answer] | list[Answer | PizzaGPTError]:
        """Ask many prompts, at most `concurrency` at a time (in tasks); answers in order.

        Args:
            prompts: The prompts, each a string or a list of messages.
            concurrency: The most calls in flight at once.
            rate_limit: The most requests per minute, or a `RateLimiter` shared with others.
            return_exceptions: Return each failed prompt's `PizzaGPTError` in its place, instead
                of raising the first one (and starting no more prompts).
            on_progress: Called with a `BatchProgress` after each prompt, one call at a
                time, in the order of `done`.
            **options: Per-call options for every prompt (see `CallOptions`).

        Returns:
            The answers (or errors), in the order of `prompts`.

        Raises:
            UsageError: A prompt or an argument is invalid; raised before anything is sent.
            PizzaGPTError: The first prompt that failed, unless `return_exceptions`.
        """
        batch = self._batch(
            prompts, concurrency, rate_limit, return_exceptions, on_progress, options
        )
        async with anyio.create_task_group() as workers:
            for _ in range(batch.concurrency):
                workers.start_soon(self._map_worker, batch, options)
        return batch.outcome()

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

    def _stream(
        self,
        messages: Messages,
        options: CallOptions,
        on_answer: Callable[[Answer], None] | None = None,
    ) -> AsyncStream:
        call, timeout = self._start(messages, options)
        return AsyncStream(self._http, call, timeout, on_answer)

    async def _map_worker(self, batch: Batch, options: CallOptions) -> None:
        while (job := batch.next_job()) is not None:
            index, prompt = job
            delay = batch.delay()
            if delay:
                await anyio.sleep(delay)
            try:
                result: Answer | PizzaGPTError = await self.ask(prompt, **options)
            except PizzaGPTError as error:
                result = error
            batch.finished(index, result)


class AsyncConversation(History):
    """A conversation over an `AsyncClient`: each turn sends the whole history, flattened.

    A turn is added to `messages` only when its answer finished normally, not when it failed or
    was abandoned. `messages` is a plain list of dicts, yours to read and edit; `reset()` keeps
    only the system message; `to_messages()` copies it out.
    """

    def __init__(
        self, client: AsyncClient, *, system: str | None = None, messages: Iterable[Message] = ()
    ) -> None:
        super().__init__(system=system, messages=messages)
        self._client = client

    def stream(self, content: str | Message, **options: Unpack[CallOptions]) -> AsyncStream:
        """Send a new user turn with the history, and stream the answer.

        Args:
            content: The user's text, or a whole message mapping.
            **options: Per-call options (see `CallOptions`).

        Returns:
            An `AsyncStream`; the turn is kept once it yields its `FinishReason`.

        Raises:
            UsageError: Bad content or options, before anything is sent.
        """
        messages, user_message = self.next_turn(content)
        return self._client._stream(messages, options, partial(self.commit, user_message))

    async def ask(self, content: str | Message, **options: Unpack[CallOptions]) -> Answer:
        """Send a new user turn with the history, and return the whole answer.

        Raises:
            PizzaGPTError: See `AsyncStream`; a failed turn is not kept.
        """
        async with self.stream(content, **options) as stream:
            return collect([event async for event in stream])


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

    def __init__(
        self,
        http: httpx.AsyncClient,
        call: Call,
        timeout: httpx.Timeout,
        on_answer: Callable[[Answer], None] | None = None,
    ) -> None:
        self._http = http
        self._call = call
        self._timeout = timeout
        self._on_answer = on_answer
        self._transcript = Transcript()
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
        event = self._events.popleft()
        answer = self._transcript.add(event)
        if answer is not None and self._on_answer is not None:
            self._on_answer(answer)
        return event

    @property
    def answer(self) -> Answer | None:
        """The whole answer once the stream has yielded its `FinishReason`; `None` before."""
        return self._transcript.answer

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
            self._chunks = None  # the error ended it: nothing left to finish
            await self._close_response()
            self._call.transport_failed(exc, timeout=is_timeout(exc))
            return
        if chunk is None:
            self._chunks = None  # exhausted
            await self._close_response()
            self._events.extend(self._call.body_ended())
        else:
            self._events.extend(self._call.data_received(chunk))

    async def _close_response(self) -> None:
        response, self._response, chunks = self._response, None, self._chunks
        self._chunks = None
        try:
            if chunks is not None:
                await _abandon(chunks)
        finally:
            # Also when the caller's scope was cancelled during _abandon: the response must be
            # closed, and closing it first frees its place in the pool, before any await.
            if response is not None:
                await response.aclose()


async def _abandon(chunks: AsyncIterator[bytes]) -> None:
    """Finish a body iterator given up mid-body, leaving none of httpx's generators suspended.

    httpx reads a body through nested async generators. Closing the outermost one leaves the
    inner ones suspended, and trio warns about each when it is collected (encode/httpx#3686).
    Resumed in a cancelled scope, the innermost read raises instead, which unwinds every one of
    them and closes the connection (its body was not read to the end: it cannot be reused).
    Chunks already buffered are passed over on the way: at most what one read returned.
    """
    with anyio.CancelScope() as scope, contextlib.suppress(httpx.HTTPError):
        scope.cancel()
        while await anext(chunks, None) is not None:
            pass
