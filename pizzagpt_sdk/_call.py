"""One call to PizzaGPT as a state machine: every decision, no I/O.

A driver (the SDK's `Client` and `AsyncClient`, or your own over any HTTP library) loops:

```python
call = Call(request, clock=time.monotonic, now=time.time, random=random.random)
while not isinstance(action := call.next_action(), Done):
    if isinstance(action, Sleep):
        time.sleep(action.seconds)
    elif isinstance(action, Send):
        ...  # send action.request; then call.response_received(status, headers),
        # or call.transport_failed(exc, timeout=...) if it could not be sent
    else:  # Receive
        ...  # read the next body chunk; then yield from call.data_received(chunk),
        # at the end yield from call.body_ended(), or call.transport_failed(exc, ...)
```

A `Send` or `Receive` with a `timeout` must end within it, whatever the server sends or
withholds (bytes trickled one at a time keep every per-read timeout from running out): a
driver that stops the wait there tells the call with `call.timed_out()`.

`next_action()` raises the call's final error when there is nothing more to try. The driver
closes the response whenever the action is not `Receive`: the call may give up on a body early
(too large, an error body read far enough, the deadline gone).
"""

from __future__ import annotations

import enum
import functools
import logging
import math
from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, dataclass
from urllib.parse import urlsplit, urlunsplit

from ._decoding import raw_limit
from ._exceptions import (
    APIConnectionError,
    APITimeoutError,
    InvalidTypeError,
    InvalidValueError,
    PizzaGPTError,
)
from ._models import Answer, FinishReason, Timeout, field_setters, make_answer
from ._protocol import DEFAULT_MAX_RESPONSE_BYTES, Event, Request, ResponseReader
from ._retry import DEFAULT_MAX_RETRIES, RetryPolicy, check_max_retries, is_retryable

# The stdlib logger is silent unless the application (or PIZZAGPT_LOG) turns it on. It never sees
# the secret, the prompt or the answer: only URLs, statuses, timings and error messages.
_log = logging.getLogger("pizzagpt_sdk")

__all__ = ["Action", "Call", "Done", "Receive", "Send", "Sleep", "Transcript", "collect"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Send:
    """Send `request`, and wait for the response's status line and headers.

    Attributes:
        request: The request to send.
        timeout: What is left of the call's deadline, in seconds, or `None` without one: the
            most this whole step may take, however the server trickles its bytes.
        attempt: 1 for the first attempt, 2 for the first retry, …
        timeouts: The most each wait (connect, read, write, pool) may take, already capped by
            what is left of the deadline: pass them on to the HTTP library as they are.
        max_body: The most body bytes worth taking in, as they come off the wire (still coded):
            a library that reads the whole body before handing it over must stop there (the
            call refuses a larger one).
    """

    request: Request
    timeout: float | None
    attempt: int
    timeouts: Timeout
    max_body: int | None = None


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait `seconds` before the next attempt.

    Attributes:
        seconds: How long to wait.
        after: The error that made the attempt fail.
    """

    seconds: float
    _: KW_ONLY
    after: PizzaGPTError | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Receive:
    """Read the next chunk of the response body and feed it to the call.

    Attributes:
        timeout: What is left of the call's deadline, in seconds, or `None` without one: the
            most this read may take.
    """

    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class Done:
    """The call succeeded and every event has been handed out: close the response."""


#: What `Call.next_action()` asks the driver to do.
Action = Send | Sleep | Receive | Done

_new = object.__new__
_set_request, _set_timeout, _set_attempt, _set_timeouts, _set_max_body = field_setters(Send)
(_set_receive_timeout,) = field_setters(Receive)


def _send(
    request: Request, timeout: float | None, attempt: int, timeouts: Timeout, max_body: int | None
) -> Send:
    """`Send(...)` with these fields, at half the cost (see `field_setters`)."""
    send: Send = _new(Send)
    _set_request(send, request)
    _set_timeout(send, timeout)
    _set_attempt(send, attempt)
    _set_timeouts(send, timeouts)
    _set_max_body(send, max_body)
    return send


def _receive(timeout: float | None) -> Receive:
    """`Receive(timeout=timeout)`, at a third less (see `field_setters`)."""
    receive: Receive = _new(Receive)
    _set_receive_timeout(receive, timeout)
    return receive


_RECEIVE = Receive()
_NO_TIMEOUT = Timeout(connect=None, read=None, write=None, pool=None)
_DONE_ACTION = Done()
_DEFAULT_POLICY = RetryPolicy()


class _State(enum.Enum):
    READY = enum.auto()  #: the next action is to send
    SENT = enum.auto()  #: waiting for response_received() or transport_failed()
    RECEIVING = enum.auto()  #: reading the body
    FAILED = enum.auto()  #: the attempt failed; retry or raise
    DONE = enum.auto()  #: the call succeeded


# The states as module constants: on Python 3.11 an Enum member looked up on its class costs
# about 1,200 instructions, as much as some whole steps of a call; a global costs a few.
_READY = _State.READY
_SENT = _State.SENT
_RECEIVING = _State.RECEIVING
_FAILED = _State.FAILED
_DONE = _State.DONE


class Call:
    """One call: sends, reads, retries and gives up as the policy says.

    Args:
        request: The request to send (see `Settings.build_request`).
        clock: A monotonic clock in seconds, for the deadline (`time.monotonic`).
        now: The current Unix time, to read `Retry-After` dates (`time.time`).
        random: Random numbers in [0, 1), for the jitter (`random.random`).
        max_retries: How many times to retry after the first attempt.
        retry_policy: The delays between attempts.
        deadline: The most the whole call may take, retries and sleeps included, in seconds;
            `None` for no limit.
        max_response_bytes: The largest response body accepted.
        timeout: The most each wait of an attempt may take; `Send.timeouts` gives them capped by
            what is left of the deadline. Default: no limit but the deadline.

    The deadline starts at the first `next_action()`, not when the call is made: a stream made
    now and iterated later has all of its deadline.

    Raises:
        InvalidTypeError: An argument has the wrong type.
        InvalidValueError: `max_retries` is negative, or `deadline` or `max_response_bytes`
            is not positive.
    """

    def __init__(
        self,
        request: Request,
        *,
        clock: Callable[[], float],
        now: Callable[[], float],
        random: Callable[[], float],
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_policy: RetryPolicy | None = None,
        deadline: float | None = None,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        timeout: Timeout | None = None,
    ) -> None:
        if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
            raise InvalidTypeError(
                f"retry_policy must be a RetryPolicy, not {type(retry_policy).__name__}"
            )
        self._setup(
            request,
            shown_url(request),
            clock,
            now,
            random,
            check_max_retries(max_retries),
            retry_policy or _DEFAULT_POLICY,
            check_deadline(deadline),
            check_max_response_bytes(max_response_bytes),
            timeout or _NO_TIMEOUT,
        )

    @classmethod
    def _checked(
        cls,
        request: Request,
        shown: tuple[str, tuple[str, ...]],
        clock: Callable[[], float],
        now: Callable[[], float],
        random: Callable[[], float],
        max_retries: int,
        retry_policy: RetryPolicy,
        deadline: float | None,
        max_response_bytes: int,
        timeout: Timeout,
    ) -> Call:
        """A call from values checked already, by a `Config`: what `__init__` would check is
        taken as it is, and `shown` is `shown_url(request)`, worked out once per client."""
        call = cls.__new__(cls)
        call._setup(
            request,
            shown,
            clock,
            now,
            random,
            max_retries,
            retry_policy,
            deadline,
            max_response_bytes,
            timeout,
        )
        return call

    def _setup(
        self,
        request: Request,
        shown: tuple[str, tuple[str, ...]],
        clock: Callable[[], float],
        now: Callable[[], float],
        random: Callable[[], float],
        max_retries: int,
        retry_policy: RetryPolicy,
        deadline: float | None,
        max_response_bytes: int,
        timeout: Timeout,
    ) -> None:
        self.request = request
        # What the call writes (errors, logs) never holds the secret or the URL's password.
        self._url, self._secrets = shown
        self._clock = clock
        self._now = now
        self._random = random
        self._max_retries = max_retries
        self._policy = retry_policy
        self._deadline = deadline
        self._max_bytes = max_response_bytes
        self._max_body = raw_limit(max_response_bytes)
        self._timeout = timeout
        self._deadline_at: float | None = None  # set by the first next_action()
        self._started = False
        self._state = _READY
        #: Whether the call is reading a response's body: what `data_received()` and
        #: `body_ended()` need. A driver that knows the body is complete can call `body_ended()`
        #: when this is true, without asking `next_action()` first. Read it, do not set it (a
        #: plain attribute: drivers read it several times a call).
        self.receiving = False
        self._attempts = 0
        self._reader: ResponseReader | None = None
        self._error: PizzaGPTError | None = None
        self._retryable = False
        self._delivered = False

    @property
    def attempts(self) -> int:
        """How many attempts have been sent so far."""
        return self._attempts

    def next_action(self) -> Action:
        """What the driver must do next.

        Returns:
            `Send`, `Receive`, `Sleep` or, once the call has succeeded, `Done`.

        Raises:
            PizzaGPTError: The call failed and will not be retried: the last attempt's error,
                or `APITimeoutError` when the deadline ran out.
        """
        if self._state is _RECEIVING:
            remaining = self._remaining()
            if remaining is None:
                return _RECEIVE
            if remaining > 0.0:
                return _receive(remaining)
            self._fail(self._deadline_error(), retryable=False)
        if self._state is _DONE:
            return _DONE_ACTION
        if self._state is _FAILED:
            delay = self._retry_delay()
            assert self._error is not None
            if delay is None:
                if _log.isEnabledFor(logging.DEBUG):
                    _log.debug("giving up on %s after %d attempt(s)", self._url, self._attempts)
                raise self._error
            self._state = _READY
            _log.info(
                "retrying %s in %.3f s (attempt %d failed: %s)",
                self._url,
                delay,
                self._attempts,
                self._error,
            )
            if delay > 0:
                return Sleep(delay, after=self._error)
        if self._state is _READY:
            if not self._started:
                self._started = True
                if self._deadline is not None:
                    self._deadline_at = self._clock() + self._deadline
            remaining = self._remaining()
            if remaining == 0.0:
                error = self._deadline_error()
                self._fail(error, retryable=False)
                raise error
            self._attempts += 1
            self._state = _SENT
            # Guarded: a call to debug() costs more than the check, and the logger is most often
            # off (the arguments are the same either way).
            if _log.isEnabledFor(logging.DEBUG):
                _log.debug("POST %s, attempt %d", self._url, self._attempts)
            return _send(
                self.request,
                remaining,
                self._attempts,
                self._timeout.capped(remaining),
                self._max_body,
            )
        raise RuntimeError("after Send, call response_received() or transport_failed() first")

    def response_received(self, status_code: int, headers: Iterable[tuple[str, str]]) -> None:
        """Tell the call the response's status line and headers arrived.

        Args:
            status_code: The HTTP status code.
            headers: The response headers as (name, value) pairs.
        """
        if self._state is not _SENT:
            raise self._not_now("response_received")
        if _log.isEnabledFor(logging.DEBUG):
            _log.debug("HTTP %d from %s", status_code, self._url)
        try:
            self._reader = ResponseReader(
                url=self._url,
                status_code=status_code,
                headers=headers,
                max_bytes=self._max_bytes,
                # Only a status error reads a `Retry-After` date: no clock read for a 2xx.
                now=0.0 if 200 <= status_code < 300 else self._now(),
            )
        except PizzaGPTError as error:
            self._fail(error, retryable=False)
        else:
            self._state = _RECEIVING
            self.receiving = True

    def data_received(self, data: bytes) -> list[Event]:
        """Feed the next chunk of the body.

        Returns:
            The events it completes, to hand to the caller in order.
        """
        if self._state is not _RECEIVING:
            raise self._not_now("data_received")
        assert self._reader is not None
        try:
            return self._delivering(self._reader.feed(data))
        except PizzaGPTError as error:
            self._fail(error, retryable=is_retryable(error))
            return []

    def body_ended(self) -> list[Event]:
        """Tell the call the body is complete.

        Returns:
            The remaining events, ending with the `FinishReason` when the call succeeded.
        """
        if self._state is not _RECEIVING:
            raise self._not_now("body_ended")
        assert self._reader is not None
        try:
            events = self._reader.end()
        except PizzaGPTError as error:
            self._fail(error, retryable=is_retryable(error))
            return []
        self._state = _DONE
        self.receiving = False
        return self._delivering(events)

    def transport_failed(self, cause: BaseException, *, timeout: bool) -> None:
        """Tell the call the request could not be sent or the body could not be read.

        Args:
            cause: The HTTP library's exception; it becomes the SDK error's `__cause__`.
            timeout: Whether it was a timeout.
        """
        if self._state not in (_SENT, _RECEIVING):
            raise RuntimeError("transport_failed() is only valid after Send or Receive")
        url = self._url
        what = _describe(cause)
        if timeout:
            error: APIConnectionError = APITimeoutError(
                f"timed out talking to {url} ({what})", url=url
            )
        elif self._state is _SENT:
            error = APIConnectionError(f"could not reach {url} ({what})", url=url)
        else:
            error = APIConnectionError(
                f"the connection to {url} broke before the answer was complete ({what})", url=url
            )
        error.__cause__ = cause
        self._fail(error, retryable=True)

    def timed_out(self) -> None:
        """Tell the call the wait for the last `Send` or `Receive` was stopped at its `timeout`,
        what was left of the deadline: the call fails with `APITimeoutError`, not retried."""
        if self._state not in (_SENT, _RECEIVING):
            raise RuntimeError("timed_out() is only valid after Send or Receive")
        self._fail(self._deadline_error(), retryable=False)

    def _delivering(self, events: list[Event]) -> list[Event]:
        # Once a chunk has reached the caller, a retry would repeat it: never retry after that.
        # Today's one-document format delivers everything at body_ended(), after which nothing
        # can fail; this guards a future streaming format, whose feed() yields events early.
        self._delivered = self._delivered or bool(events)
        return events

    def _fail(self, error: PizzaGPTError, *, retryable: bool) -> None:
        _scrub(error, self._secrets)
        self._error = error
        self._retryable = retryable
        self._state = _FAILED
        self.receiving = False
        self._reader = None

    def _retry_delay(self) -> float | None:
        if not self._retryable or self._delivered or self._attempts > self._max_retries:
            return None
        delay = self._policy.delay(
            self._attempts, getattr(self._error, "retry_after", None), self._random()
        )
        remaining = self._remaining()
        if delay is None or (remaining is not None and delay >= remaining):
            return None  # a retry could not finish in time: the real error says more
        return delay

    def _remaining(self) -> float | None:
        if self._deadline_at is None:
            return None
        remaining = self._deadline_at - self._clock()
        return remaining if remaining > 0.0 else 0.0  # max(0.0, remaining), without the call

    def _deadline_error(self) -> APITimeoutError:
        error = APITimeoutError(
            f"the call's deadline of {self._deadline:g} s ran out after {self._attempts} "
            f"attempt(s) to {self._url}",
            url=self._url,
        )
        error.__cause__ = self._error
        return error

    def _not_now(self, method: str) -> RuntimeError:
        return RuntimeError(f"{method}() is not valid now (the call is {self._state.name})")


def shown_url(request: Request) -> tuple[str, tuple[str, ...]]:
    """The request's URL as the SDK writes it (see `redact_url`), and the secrets no text of
    the SDK's may hold: the `x-secret` header, the URL's password."""
    return _shown_url(request.url, request.headers)


@functools.lru_cache(maxsize=64)
def _shown_url(url: str, headers: tuple[tuple[str, str], ...]) -> tuple[str, tuple[str, ...]]:
    # Once per client, not per call: a client's requests share their URL and headers.
    shown, password = redact_url(url)
    secrets = [value for name, value in headers if name == "x-secret"]
    return shown, tuple(secret for secret in (*secrets, password) if secret)


def redact_url(url: str) -> tuple[str, str | None]:
    """`url` with its password, if it has one, replaced by `***`; and that password."""
    parts = urlsplit(url)
    if not parts.password:
        return url, None
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else "***@"
    return urlunsplit(parts._replace(netloc=user + host)), parts.password


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret in it replaced by `***`."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _scrub(error: PizzaGPTError, secrets: tuple[str, ...]) -> None:
    """Take the secrets out of an error's message and body excerpt (a server may echo them)."""
    if not secrets:
        return
    error.args = tuple(redact(a, secrets) if isinstance(a, str) else a for a in error.args)
    body = getattr(error, "body", None)
    if isinstance(body, str):
        error.body = redact(body, secrets)  # type: ignore[attr-defined]


def _describe(cause: BaseException) -> str:
    """The error's type and the first message found down its chain: httpx's `ConnectError` on
    trio says nothing itself, its cause says `[SSL: CERTIFICATE_VERIFY_FAILED] …`."""
    seen: list[BaseException] = []
    current: BaseException | None = cause
    while current is not None and current not in seen and len(seen) < 8:
        if str(current):
            return f"{type(cause).__name__}: {current}"
        seen.append(current)
        current = current.__cause__ or current.__context__
    return type(cause).__name__


def check_deadline(value: object) -> float | None:
    """Validate a `deadline` argument: `None` or a positive number of seconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTypeError(f"deadline must be a number of seconds or None, not {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise InvalidValueError(
            f"deadline must be a finite number of seconds above 0, not {value}; None for none"
        )
    return float(value)


def check_max_response_bytes(value: object) -> int:
    """Validate a `max_response_bytes` argument."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(f"max_response_bytes must be an int, not {value!r}")
    if value <= 0:
        raise InvalidValueError(f"max_response_bytes must be more than 0, not {value}")
    return value


class Transcript:
    """Collects a stream's events as they are handed out; the `Answer` once it finishes."""

    def __init__(self) -> None:
        self._texts: list[str] = []
        #: The whole answer, once the `FinishReason` has been added; `None` until then.
        self.answer: Answer | None = None

    def add(self, event: Event) -> Answer | None:
        """Add the next event; returns the `Answer` when `event` is the `FinishReason`."""
        if isinstance(event, FinishReason):
            self.answer = make_answer("".join(self._texts), event)
            return self.answer
        self._texts.append(event)
        return None


def collect(events: Iterable[Event]) -> Answer:
    """Collect a stream's events into an `Answer`.

    Raises:
        InvalidValueError: The events hold no `FinishReason` (the stream was not finished).
    """
    # What a Transcript does, without a method call per event.
    texts: list[str] = []
    answer: Answer | None = None
    for event in events:
        if isinstance(event, FinishReason):
            answer = make_answer("".join(texts), event)
        else:
            texts.append(event)
    if answer is None:
        raise InvalidValueError("the stream ended without a FinishReason")
    return answer
