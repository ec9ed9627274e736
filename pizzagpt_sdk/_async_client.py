"""The async client and its drive loop, on asyncio and trio; `_client.py` is its twin."""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload

import anyio

from ._batch import Batch, BatchProgress, RateLimiter
from ._call import Call, Done, Receive, Send, Transcript
from ._config import DEFAULT_DEADLINE, DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT, CallOptions
from ._exceptions import PizzaGPTError
from ._models import Answer, FinishReason, Timeout
from ._prompt import Message, Messages
from ._protocol import DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_USER_AGENT
from ._retry import DEFAULT_MAX_RETRIES, RetryPolicy
from ._shared import ClientState, ConversationState, closed_during_call
from .engines import AsyncEngine, AsyncResponse, TransportError

if TYPE_CHECKING:
    import asyncio

    from typing_extensions import Self, Unpack

__all__ = ["AsyncClient", "AsyncConversation", "AsyncStream"]


class AsyncClient(ClientState):
    """An async PizzaGPT client for asyncio and trio, with one connection pool reused across calls.

    Close it with `aclose()` or use it in an `async with` block. Every argument is checked here,
    before anything is sent.

    Args:
        base_url: The service's URL. Default: `PIZZAGPT_BASE_URL` from the environment, else
            `https://www.pizzagpt.it`.
        secret: The `x-secret` header. Default: `PIZZAGPT_SECRET`, else `"Marinara"`.
        timeout: The most any single wait may take, in seconds (connect, write, read, pool), a
            `Timeout`, or an `httpx.Timeout`. Default: 120 s, 10 s to connect.
        deadline: The most one call may take, retries and sleeps included, in seconds; `None`
            for no limit. It starts when the call's first request is about to be sent.
            Default: 300 s.
        max_retries: Retries after the first attempt. Default: 2.
        retry_policy: Delays between attempts. Default: `RetryPolicy()`.
        proxy: A proxy URL (`http://`, `https://`, `socks5://`) for the client's own pool.
        headers: Extra request headers.
        user_agent: The `user-agent` header. Default: a desktop Chrome, as gpt4free sends.
        max_response_bytes: The largest response body accepted. Default: 4 MiB.
        verify: TLS verification: `True` (the default CA bundle), `False`, a CA bundle's path,
            or an `ssl.SSLContext`. A TLS context is built only for an `https://` base URL.
        max_connections: The most connections the pool keeps open (and alive). Default: 100.
        engine: The HTTP library: `"httpx"` (the default; its pool split into small ones),
            `"httpx2"`, `"aiohttp"` (asyncio only) or `"curl_cffi"` (asyncio only), or an engine
            object (see `pizzagpt_sdk.engines`).
        http_client: Your own `httpx.AsyncClient`, `httpx2.AsyncClient`,
            `aiohttp.ClientSession` or `curl_cffi.requests.AsyncSession`, used as it is (with
            its own proxy, TLS and limits) and never closed by the SDK; it chooses the engine.
        transport: An httpx transport for the SDK's own pool (httpx's `MockTransport`, the
            fake's in-process transport, an `HTTPTransport` with options); used as it is, also
            after `os.fork()`. Environment proxies do not apply to it.

    Raises:
        InvalidTypeError: An argument has the wrong type.
        InvalidValueError: An argument has a value the SDK cannot use.
        UsageError: The engine cannot run here, or its extra is not installed (the message says
            what to install or use instead).

    Examples:
        ```python
        async with AsyncClient() as client:
            print(await client.ask("Why is the sky blue?"))
        ```
    """

    def __init__(
        self,
        *,
        base_url: str | None = None,
        secret: str | None = None,
        timeout: float | Timeout | Any = DEFAULT_TIMEOUT,
        deadline: float | None = DEFAULT_DEADLINE,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_policy: RetryPolicy | None = None,
        proxy: str | Any | None = None,
        headers: Mapping[str, str] | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        verify: bool | str | Any = True,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        engine: str | AsyncEngine | None = None,
        http_client: Any = None,
        transport: Any = None,
    ) -> None:
        self._setup("async", locals())
        self._engine: AsyncEngine
        self._in_flight = _InFlight()

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
        return await self._stream(messages, options)._answer()  # stream(), one call less

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
        """Close the connection pool (not an `http_client` you passed in).

        Calls in flight in other tasks end at once with `ClientClosedError`, those waiting
        for an answer or sleeping before a retry included.
        """
        self._in_flight.close()
        await self._engine.aclose()

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
        call = self._start(messages, options)
        return AsyncStream(self._engine, call, on_answer, self._in_flight)

    async def _map_worker(self, batch: Batch, options: CallOptions) -> None:
        while (job := batch.next_job()) is not None:
            index, prompt = job
            delay = batch.delay(time.monotonic())
            if delay:
                await anyio.sleep(delay)
            try:
                result: Answer | PizzaGPTError = await self.ask(prompt, **options)
            except PizzaGPTError as error:
                result = error
            batch.finished(index, result)


class _InFlight:
    """What `aclose()` tells the calls in flight: it cancels the wait each is in (for an
    answer, a sleep before a retry), and each call ends with `ClientClosedError`.

    On asyncio it is also the waits' deadline watchdog: one timer for every wait in flight,
    set for the earliest end, instead of a timer per wait. asyncio's timers cost a call about
    19,000 instructions to set and cancel (their heap compares them in Python); calls that
    share a deadline setting end in the order they start, so the one timer is rarely moved.
    """

    def __init__(self) -> None:
        self.closed = False
        self.waits: dict[_Wait | _AsyncioWait, None] = {}  # an ordered set
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0

    def close(self) -> None:
        self.closed = True
        for wait in list(self.waits):
            wait.cancel()

    def wait(self, seconds: float | None) -> _Wait | _AsyncioWait:
        """One wait for the engine, of at most `seconds`."""
        if self.closed:
            raise closed_during_call()
        # asyncio is imported where its loop runs; not by the SDK, whose async client may run
        # on trio alone.
        asyncio = sys.modules.get("asyncio")
        if _UNCANCEL and asyncio is not None:
            try:
                task = asyncio.current_task()
            except RuntimeError:  # no asyncio loop runs here: trio
                task = None
            if task is not None:
                return _AsyncioWait(self, seconds, task)
        return _Wait(self, seconds)

    async def sleep(self, seconds: float) -> None:
        """Sleep before a retry, unless the client is closed meanwhile."""
        with self.wait(None):
            await anyio.sleep(seconds)

    def watch(self, loop: asyncio.AbstractEventLoop, ends_at: float) -> None:
        """Have the timer go off by `ends_at` (`loop.time()`), when a wait must end."""
        if loop is not self._loop:  # another loop's timer (each asyncio.run() has its own)
            self._loop, self._timer = loop, None
        if self._timer is None or ends_at < self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = loop.call_at(ends_at, self._expire)
            self._timer_at = ends_at  # its when(), without a method call

    def _expire(self) -> None:
        """Cancel the waits whose time is up, and set the timer for the next one."""
        assert self._loop is not None
        self._timer = None
        now = self._loop.time()
        for wait in list(self.waits):
            ends_at = wait.ends_at
            if ends_at is not None and ends_at <= now:
                wait.cancel()
            elif ends_at is not None:
                self.watch(self._loop, ends_at)


class _Wait:
    """One wait for the engine: cancelled after `seconds` (what is left of the deadline, and
    then `timed_out`), and ended with `ClientClosedError` if the client is (or gets) closed.
    One anyio cancel scope does both; on trio, and on asyncio before Python 3.11."""

    __slots__ = ("_in_flight", "_scope")

    #: The asyncio watchdog's business only (see `_AsyncioWait`).
    ends_at: float | None = None

    def __init__(self, in_flight: _InFlight, seconds: float | None) -> None:
        self._in_flight = in_flight
        self._scope = anyio.CancelScope() if seconds is None else anyio.move_on_after(seconds)

    @property
    def timed_out(self) -> bool:
        return self._scope.cancelled_caught

    def cancel(self) -> None:
        self._scope.cancel()

    def __enter__(self) -> Self:
        self._scope.__enter__()
        self._in_flight.waits[self] = None
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._in_flight.waits.pop(self, None)
        swallowed = bool(self._scope.__exit__(exc_type, exc, tb))
        return _ended(self._in_flight, swallowed, exc)


class _AsyncioWait:
    """`_Wait` on asyncio from Python 3.11, as `asyncio.timeout()` works: cancel the task when
    the time is up (`_InFlight`'s one timer does), and tell that cancellation from any other with
    `Task.uncancel()`. An anyio cancel scope with a deadline cost a call about 49,000
    instructions to enter and leave, this one costs about 6,000 (callgrind, over an engine that
    answers at once). It keeps anyio's rules: a cancellation the task had already, or gets
    from elsewhere meanwhile, goes on out."""

    __slots__ = ("_cancelling", "_fired", "_in_flight", "_seconds", "_task", "ends_at", "timed_out")

    def __init__(self, in_flight: _InFlight, seconds: float | None, task: _Task) -> None:
        self._in_flight = in_flight
        self._seconds = seconds
        self._task = task
        self._fired = False
        self._cancelling = 0
        #: When the wait must end, in the loop's time; `None` for no limit.
        self.ends_at: float | None = None
        self.timed_out = False

    def cancel(self) -> None:
        if not self._fired:
            self._fired = True
            self._task.cancel()

    def __enter__(self) -> Self:
        self._cancelling = self._task.cancelling()
        self._in_flight.waits[self] = None
        if self._seconds is not None:
            loop = self._task.get_loop()
            self.ends_at = loop.time() + self._seconds
            self._in_flight.watch(loop, self.ends_at)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._in_flight.waits.pop(self, None)
        swallowed = False
        if self._fired:
            ours = self._task.uncancel() <= self._cancelling
            cancelled = sys.modules["asyncio"].CancelledError
            swallowed = self.timed_out = ours and exc_type is cancelled
        return _ended(self._in_flight, swallowed, exc)


def _ended(in_flight: _InFlight, swallowed: bool, exc: BaseException | None) -> bool:
    """How a wait ends: with `ClientClosedError` if the client was closed (unless a
    cancellation from elsewhere, or an interrupt, is on its way out), else as it ended."""
    if in_flight.closed and (swallowed or exc is None or isinstance(exc, Exception)):
        raise closed_during_call() from (None if swallowed else exc)
    return swallowed


#: `Task.uncancel()`, which `_AsyncioWait` needs, came with Python 3.11.
_UNCANCEL = sys.version_info >= (3, 11)


class _Task(Protocol):
    """What `_AsyncioWait` uses of an `asyncio.Task`: its Python 3.11 API."""

    def cancel(self) -> bool: ...
    def cancelling(self) -> int: ...
    def uncancel(self) -> int: ...
    def get_loop(self) -> asyncio.AbstractEventLoop: ...


class AsyncConversation(ConversationState):
    """A conversation over an `AsyncClient`: each turn sends the whole history, flattened.

    A turn is added to `messages` only when its answer finished normally, not when it failed or
    was abandoned. `messages` is a plain list of dicts, yours to read and edit; `reset()` keeps
    only the system message; `to_messages()` copies it out.
    """

    _client: AsyncClient

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
        messages, user_message = self._history.next_turn(content)
        return self._client._stream(messages, options, partial(self._history.commit, user_message))

    async def ask(self, content: str | Message, **options: Unpack[CallOptions]) -> Answer:
        """Send a new user turn with the history, and return the whole answer.

        Raises:
            PizzaGPTError: See `AsyncStream`; a failed turn is not kept.
        """
        return await self.stream(content, **options)._answer()


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
        ClientClosedError: The client was closed while the call was in flight.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        call: Call,
        on_answer: Callable[[Answer], None] | None = None,
        in_flight: _InFlight | None = None,
    ) -> None:
        self._engine = engine
        self._in_flight = in_flight or _InFlight()
        self._call = call
        self._on_answer = on_answer
        self._transcript = Transcript()
        self._response: AsyncResponse | None = None
        self._events: deque[str | FinishReason] = deque()
        self._finished = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> str | FinishReason:
        while not self._events:
            if self._finished:
                raise StopAsyncIteration
            await self._step()
        return self._hand_out(self._events.popleft())

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

    async def _answer(self) -> Answer:
        """Run the call to its end, handing out every event, and return the whole answer (what
        `ask()` does, without the iterator protocol's cost per event)."""
        while not self._finished:
            await self._step()
            while self._events:
                self._hand_out(self._events.popleft())
        assert self._transcript.answer is not None  # the call ended with its FinishReason
        return self._transcript.answer

    def _hand_out(self, event: str | FinishReason) -> str | FinishReason:
        answer = self._transcript.add(event)
        if answer is not None:
            # The FinishReason is the last event: the call is done and its response closed
            # (body_ended() came with it), so no step more to learn that.
            self._finished = True
            if self._on_answer is not None:
                self._on_answer(answer)
        return event

    async def _step(self) -> None:
        """The next action; the response is closed if it fails (or is interrupted)."""
        try:
            action = self._call.next_action()
            if isinstance(action, (Send, Receive)):
                await self._exchange(action)
                return
            await self._close_response()
            if isinstance(action, Done):
                self._finished = True
            else:
                await self._in_flight.sleep(action.seconds)
        except BaseException:
            await self.aclose()
            raise

    async def _exchange(self, action: Send | Receive) -> None:
        """Send (if asked), then read the body until it completes events, ends, or fails: all
        in one wait, which ends at what is left of the deadline however the server trickles."""
        call = self._call
        try:
            with self._in_flight.wait(action.timeout) as wait:
                if isinstance(action, Send):
                    # Stored at once, in the same step: an interrupt in the wait's exit would
                    # otherwise lose the response, and its connection with it (never closed).
                    self._response = response = await self._engine.send(
                        action.request, action.timeouts, action.max_body
                    )
                    call.response_received(response.status_code, response.headers)
                else:
                    # A Receive comes only while a response is open.
                    response = self._response  # type: ignore[assignment]
                while call.receiving:
                    chunk = await response.aread()
                    events = call.data_received(chunk) if chunk else call.body_ended()
                    if not events and response.ended and call.receiving:
                        events = call.body_ended()  # no read for the b"" the engine knows
                    if events:
                        self._events.extend(events)
                        break
        except TransportError as exc:
            call.transport_failed(exc.__cause__ or exc, timeout=exc.timeout)
        else:
            if wait.timed_out:  # what was left of the deadline ran out
                call.timed_out()
        if not call.receiving:
            await self._close_response()

    async def _close_response(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            await response.aclose()
