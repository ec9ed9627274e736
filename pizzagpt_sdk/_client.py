"""The blocking client: a driver of the core over `httpx.Client`. `_async_client.py` is its twin."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING

import httpx

from ._base import BaseClient, CallOptions, build_request, is_timeout
from ._call import Call, Done, Receive, Send, collect
from ._models import Answer, FinishReason
from ._prompt import Messages

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

__all__ = ["Client", "Stream"]


class Client(BaseClient[httpx.Client]):
    """A blocking PizzaGPT client, with one connection pool reused across calls.

    It never touches an event loop, so it also works where one is running (a Jupyter cell).
    Close it with `close()` or use it in a `with` block. See `BaseClient` for the arguments.

    Example:
        >>> with Client() as client:  # doctest: +SKIP
        ...     print(client.ask("Why is the sky blue?"))
    """

    _http_class = httpx.Client

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
        call, timeout = self._start(messages, options)
        return Stream(self._http, call, timeout)

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
        with self.stream(messages, **options) as stream:
            return collect(stream)

    def close(self) -> None:
        """Close the connection pool (not an `http_client` you passed in)."""
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


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
    """

    def __init__(self, http: httpx.Client, call: Call, timeout: httpx.Timeout) -> None:
        self._http = http
        self._call = call
        self._timeout = timeout
        self._response: httpx.Response | None = None
        self._chunks: Iterator[bytes] | None = None
        self._events: deque[str | FinishReason] = deque()
        self._finished = False

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> str | FinishReason:
        while not self._events:
            if self._finished:
                raise StopIteration
            try:
                self._step()
            except BaseException:
                self.close()
                raise
        return self._events.popleft()

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

    def _step(self) -> None:
        action = self._call.next_action()
        if isinstance(action, Receive):
            self._receive()
            return
        self._close_response()
        if isinstance(action, Send):
            self._send(action)
        elif isinstance(action, Done):
            self._finished = True
        else:
            time.sleep(action.seconds)

    def _send(self, action: Send) -> None:
        request = build_request(self._http, action, self._timeout)
        try:
            self._response = self._http.send(request, stream=True)
        except httpx.RequestError as exc:
            self._call.transport_failed(exc, timeout=is_timeout(exc))
            return
        self._chunks = self._response.iter_bytes()
        self._call.response_received(
            self._response.status_code, self._response.headers.multi_items()
        )

    def _receive(self) -> None:
        assert self._chunks is not None
        try:
            chunk = next(self._chunks, None)
        except httpx.RequestError as exc:
            self._close_response()
            self._call.transport_failed(exc, timeout=is_timeout(exc))
            return
        if chunk is None:
            self._close_response()
            self._events.extend(self._call.body_ended())
        else:
            self._events.extend(self._call.data_received(chunk))

    def _close_response(self) -> None:
        response, self._response, chunks = self._response, None, self._chunks
        self._chunks = None
        if chunks is not None:
            # A generator left suspended would be finalized only when collected.
            chunks.close()  # type: ignore[attr-defined]
        if response is not None:
            response.close()
