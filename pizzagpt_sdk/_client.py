"""The blocking client and its drive loop; `_async_client.py` is its twin, line for line."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, overload

from ._batch import Batch, BatchProgress, RateLimiter
from ._call import Call, Done, Receive, Send, Transcript
from ._config import DEFAULT_DEADLINE, DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT, CallOptions
from ._exceptions import PizzaGPTError
from ._models import Answer, FinishReason, Timeout
from ._prompt import Message, Messages
from ._protocol import DEFAULT_MAX_RESPONSE_BYTES, DEFAULT_USER_AGENT
from ._retry import DEFAULT_MAX_RETRIES, RetryPolicy
from ._shared import ClientState, ConversationState, closed_during_call
from .engines import Engine, Response, TransportError
from .engines._base import MoveOnAfter

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

__all__ = ["Client", "Conversation", "Stream"]


class Client(ClientState):
    """A blocking PizzaGPT client, with one connection pool reused across calls.

    It never touches an event loop, so it also works where one is running (a Jupyter cell).
    Close it with `close()` or use it in a `with` block. Every argument is checked here, before
    anything is sent.

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
        engine: The HTTP library: `"httpx"` (the default), `"httpx2"` or `"curl_cffi"`, or an
            engine object (see `pizzagpt_sdk.engines`).
        http_client: Your own `httpx.Client`, `httpx2.Client` or `curl_cffi.requests.Session`,
            used as it is (with its own proxy, TLS and limits) and never closed by the SDK; it
            chooses the engine.
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
        with Client() as client:
            print(client.ask("Why is the sky blue?"))
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
        engine: str | Engine | None = None,
        http_client: Any = None,
        transport: Any = None,
    ) -> None:
        self._setup("blocking", locals())
        self._engine: Engine
        self._in_flight = _InFlight()

    def stream(self, messages: Messages, **options: Unpack[CallOptions]) -> Stream:
        """Ask, and iterate over the answer as it arrives.

        Args:
            messages: A string, or a sequence of OpenAI-style messages.
            **options: Per-call options (see `CallOptions`).

        Returns:
            A `Stream` that yields `str` chunks, then one `FinishReason`. Nothing is sent until
            it is first iterated; use it in a `with` block to close the response at once if you
            stop early.

        Raises:
            UsageError: Bad messages or options, or a closed client; raised here, before
                anything is sent.
        """
        return self._stream(messages, options)

    def ask(self, messages: Messages, **options: Unpack[CallOptions]) -> Answer:
        """Ask, and return the whole answer.

        Args:
            messages: A string, or a sequence of OpenAI-style messages.
            **options: Per-call options (see `CallOptions`).

        Returns:
            The `Answer`: `.text`, `.finish_reason`, `.citations`, `.refusal`.

        Raises:
            PizzaGPTError: See `Stream` for which subclass means what.
        """
        return self._stream(messages, options)._answer()  # stream(), one call less

    def conversation(
        self, *, system: str | None = None, messages: Iterable[Message] = ()
    ) -> Conversation:
        """Start a conversation that keeps its history and sends all of it on every turn.

        Args:
            system: A system message to start with (kept by `reset()`).
            messages: Earlier messages to continue from.

        Returns:
            A `Conversation` over this client.

        Raises:
            UsageError: A message is invalid.
        """
        return Conversation(self, system=system, messages=messages)

    @overload
    def map(
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
    def map(
        self,
        prompts: Iterable[Messages],
        *,
        concurrency: int = ...,
        rate_limit: float | RateLimiter | None = ...,
        return_exceptions: Literal[True],
        on_progress: Callable[[BatchProgress], None] | None = ...,
        **options: Unpack[CallOptions],
    ) -> list[Answer | PizzaGPTError]: ...

    def map(
        self,
        prompts: Iterable[Messages],
        *,
        concurrency: int = 4,
        rate_limit: float | RateLimiter | None = None,
        return_exceptions: bool = False,
        on_progress: Callable[[BatchProgress], None] | None = None,
        **options: Unpack[CallOptions],
    ) -> list[Answer] | list[Answer | PizzaGPTError]:
        """Ask many prompts, at most `concurrency` at a time (in threads); answers in order.

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
        # Imported here: a first call does not need it, and importing it costs time.
        from concurrent.futures import ThreadPoolExecutor

        batch = self._batch(
            prompts, concurrency, rate_limit, return_exceptions, on_progress, options
        )
        with ThreadPoolExecutor(batch.concurrency, thread_name_prefix="pizzagpt-map") as pool:
            workers = [
                pool.submit(self._map_worker, batch, options) for _ in range(batch.concurrency)
            ]
        for worker in workers:
            worker.result()
        return batch.outcome()

    def close(self) -> None:
        """Close the connection pool (not an `http_client` you passed in).

        Calls in flight in other threads end at once with `ClientClosedError`, those waiting
        for an answer or sleeping before a retry included (but see docs/reliability.md for
        curl_cffi, whose transfers cannot be stopped from outside).
        """
        self._in_flight.close()
        self._engine.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _stream(
        self,
        messages: Messages,
        options: CallOptions,
        on_answer: Callable[[Answer], None] | None = None,
    ) -> Stream:
        call = self._start(messages, options)
        return Stream(self._engine, call, on_answer, self._in_flight)

    def _map_worker(self, batch: Batch, options: CallOptions) -> None:
        while (job := batch.next_job()) is not None:
            index, prompt = job
            delay = batch.delay(time.monotonic())
            if delay:
                time.sleep(delay)
            try:
                result: Answer | PizzaGPTError = self.ask(prompt, **options)
            except PizzaGPTError as error:
                result = error
            batch.finished(index, result)


class _InFlight:
    """What `close()` tells the calls in flight, from any thread: a sleep before a retry ends
    at once, and each call ends with `ClientClosedError` (the engine's close ends its waits)."""

    def __init__(self) -> None:
        self._closed = threading.Event()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    def close(self) -> None:
        self._closed.set()

    def wait(self, seconds: float | None) -> _Wait:
        """One wait for the engine, of at most `seconds`."""
        return _Wait(self, seconds)

    def sleep(self, seconds: float) -> None:
        """Sleep before a retry, unless the client is closed meanwhile."""
        if self._closed.wait(seconds):
            raise closed_during_call()


class _Wait(MoveOnAfter):
    """One wait for the engine: stopped after `seconds` (what is left of the deadline, and
    then `timed_out`), and ended with `ClientClosedError` if the client is (or gets) closed."""

    def __init__(self, in_flight: _InFlight, seconds: float | None) -> None:
        if in_flight.closed:
            raise closed_during_call()
        super().__init__(seconds)
        self._in_flight = in_flight

    @property
    def timed_out(self) -> bool:
        return self.cancelled_caught

    def __enter__(self) -> Self:
        super().__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        swallowed = super().__exit__(exc_type, exc, tb)
        if self._in_flight.closed and (swallowed or exc is None or isinstance(exc, Exception)):
            raise closed_during_call() from (None if swallowed else exc)
        return swallowed


class Conversation(ConversationState):
    """A conversation over a `Client`: each turn sends the whole history, flattened.

    A turn is added to `messages` only when its answer finished normally, not when it failed or
    was abandoned. `messages` is a plain list of dicts, yours to read and edit; `reset()` keeps
    only the system message; `to_messages()` copies it out.
    """

    _client: Client

    def stream(self, content: str | Message, **options: Unpack[CallOptions]) -> Stream:
        """Send a new user turn with the history, and stream the answer.

        Args:
            content: The user's text, or a whole message mapping.
            **options: Per-call options (see `CallOptions`).

        Returns:
            A `Stream`; the turn is kept once it yields its `FinishReason`.

        Raises:
            UsageError: Bad content or options, before anything is sent.
        """
        messages, user_message = self._history.next_turn(content)
        return self._client._stream(messages, options, partial(self._history.commit, user_message))

    def ask(self, content: str | Message, **options: Unpack[CallOptions]) -> Answer:
        """Send a new user turn with the history, and return the whole answer.

        Raises:
            PizzaGPTError: See `Stream`; a failed turn is not kept.
        """
        return self.stream(content, **options)._answer()


class Stream:
    """The events of one call: `str` chunks of the answer, then exactly one `FinishReason`.

    Iterate over it once. Leaving a `with` block, or calling `close()`, closes the HTTP response
    at once and returns its connection to the pool.

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
        engine: Engine,
        call: Call,
        on_answer: Callable[[Answer], None] | None = None,
        in_flight: _InFlight | None = None,
    ) -> None:
        self._engine = engine
        self._in_flight = in_flight or _InFlight()
        self._call = call
        self._on_answer = on_answer
        self._transcript = Transcript()
        self._response: Response | None = None
        self._events: deque[str | FinishReason] = deque()
        self._finished = False

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> str | FinishReason:
        while not self._events:
            if self._finished:
                raise StopIteration
            self._step()
        return self._hand_out(self._events.popleft())

    @property
    def answer(self) -> Answer | None:
        """The whole answer once the stream has yielded its `FinishReason`; `None` before."""
        return self._transcript.answer

    def close(self) -> None:
        """Stop: close the response, if one is open. Nothing more is yielded."""
        self._finished = True
        self._events.clear()
        self._close_response()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _answer(self) -> Answer:
        """Run the call to its end, handing out every event, and return the whole answer (what
        `ask()` does, without the iterator protocol's cost per event)."""
        while not self._finished:
            self._step()
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

    def _step(self) -> None:
        """The next action; the response is closed if it fails (or is interrupted)."""
        try:
            action = self._call.next_action()
            if isinstance(action, (Send, Receive)):
                self._exchange(action)
                return
            self._close_response()
            if isinstance(action, Done):
                self._finished = True
            else:
                self._in_flight.sleep(action.seconds)
        except BaseException:
            self.close()
            raise

    def _exchange(self, action: Send | Receive) -> None:
        """Send (if asked), then read the body until it completes events, ends, or fails: all
        in one wait, which ends at what is left of the deadline however the server trickles."""
        call = self._call
        try:
            with self._in_flight.wait(action.timeout) as wait:
                if isinstance(action, Send):
                    # Stored at once, in the same step: an interrupt in the wait's exit would
                    # otherwise lose the response, and its connection with it (never closed).
                    try:
                        self._response = response = self._engine.send(
                            action.request, action.timeouts, action.max_body
                        )
                    except BaseException:
                        # Maybe as send() returned (Ctrl-C, on Python 3.10): the response is
                        # lost, and only the engine can still find it.
                        if self._response is None:
                            self._engine.abandon(action.request)
                        raise
                    call.response_received(response.status_code, response.headers)
                else:
                    # A Receive comes only while a response is open.
                    response = self._response  # type: ignore[assignment]
                while call.receiving:
                    chunk = response.read()
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
            self._close_response()

    def _close_response(self) -> None:
        response = self._response
        if response is not None:
            # Forgotten only once closed: an interrupt as close() begins leaves it to the
            # close() that `_step()` then makes (once more is nothing, for a closed response).
            response.close()
            self._response = None
