"""The `Call` state machine and the retry policy, driven with a fake clock and fixed randomness.

No I/O: a small driver plays scripted outcomes (a response, or a transport failure) into the call
and records every action the call asks for, so each sleep is checked to the exact float.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

import pytest

from pizzagpt_sdk import (
    Answer,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    FinishReason,
    InternalServerError,
    InvalidResponseError,
    InvalidTypeError,
    InvalidValueError,
    MisuseDetectedError,
    PizzaGPTError,
    RateLimitError,
    SecretRejectedError,
)
from pizzagpt_sdk._call import _receive, _send
from pizzagpt_sdk._models import make_answer
from pizzagpt_sdk.core import (
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_MAX_RETRIES,
    RETRY_STATUSES,
    Action,
    Call,
    Done,
    Event,
    Receive,
    ResponseReader,
    RetryPolicy,
    Send,
    Settings,
    Sleep,
    Timeout,
    Transcript,
    collect,
    is_retryable,
)

REQUEST = Settings().build_request("Hi")
URL = REQUEST.url
OK_BODY = b'{"content": "Ciao!", "refusal": null}'
ANSWER: list[Event] = ["Ciao!", FinishReason("stop")]
JSON = (("content-type", "application/json"),)
#: The fixed Unix time the calls see (for Retry-After dates).
NOW = 1_700_000_000.0
#: The body is fed in chunks of this size.
CHUNK = 16


# What Send.max_body says by default: the limit, and room for what coding adds on the wire
# (a sixteenth, and 4 KiB), plus the one byte that tells a body over the limit.
MAX_BODY = DEFAULT_MAX_RESPONSE_BYTES + DEFAULT_MAX_RESPONSE_BYTES // 16 + 4096 + 1


def capped(remaining: float | None) -> Timeout:
    """What `Send.timeouts` is for a call made without a timeout: the deadline's remainder."""
    return Timeout(connect=remaining, read=remaining, write=remaining, pool=remaining)


class FakeClock:
    """A monotonic clock that moves only when the test advances it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start

    def __call__(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_call(clock: FakeClock, *, random: float = 0.5, **options: Any) -> Call:
    """A call with the fake clock, a fixed Unix time and a fixed random number."""
    return Call(REQUEST, clock=clock, now=lambda: NOW, random=lambda: random, **options)


@dataclass(frozen=True)
class Reply:
    """The server answers: status, headers and body (fed in CHUNK-byte pieces)."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = JSON
    body: bytes = OK_BODY
    takes: float = 0.0  #: seconds before the response arrives
    breaks: BaseException | None = None  #: the connection breaks after the first chunk
    timeout: bool = False  #: whether that break is a timeout


@dataclass(frozen=True)
class Unreachable:
    """The request cannot be sent, or no response comes."""

    error: BaseException
    timeout: bool = False
    takes: float = 0.0


Outcome = Reply | Unreachable


@dataclass
class Driver:
    """Follows the call's actions, playing `script` (one outcome per Send) into it."""

    call: Call
    clock: FakeClock
    script: list[Outcome]
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)

    def run(self) -> list[Event]:
        reply: Reply | None = None
        chunks: list[bytes] = []
        while True:
            action = self.call.next_action()
            self.actions.append(action)
            if isinstance(action, Done):
                return self.events
            if isinstance(action, Sleep):
                self.clock.advance(action.seconds)
            elif isinstance(action, Send):
                outcome = self.script.pop(0)
                self.clock.advance(outcome.takes)
                if isinstance(outcome, Unreachable):
                    self.call.transport_failed(outcome.error, timeout=outcome.timeout)
                    continue
                reply = outcome
                body = outcome.body
                chunks = [body[i : i + CHUNK] for i in range(0, len(body), CHUNK)]
                self.call.response_received(outcome.status, outcome.headers)
            else:
                assert reply is not None
                if chunks:
                    self.events += self.call.data_received(chunks.pop(0))
                    if reply.breaks is not None:
                        self.call.transport_failed(reply.breaks, timeout=reply.timeout)
                else:
                    self.events += self.call.body_ended()

    @property
    def sleeps(self) -> list[float]:
        return [action.seconds for action in self.actions if isinstance(action, Sleep)]

    @property
    def sends(self) -> list[Send]:
        return [action for action in self.actions if isinstance(action, Send)]

    def summary(self) -> list[str]:
        """The actions without the Receives, e.g. ["send 1", "sleep 0.4375", "send 2", "done"]."""
        out: list[str] = []
        for action in self.actions:
            if isinstance(action, Send):
                out.append(f"send {action.attempt}")
            elif isinstance(action, Sleep):
                out.append(f"sleep {action.seconds}")
            elif isinstance(action, Done):
                out.append("done")
        return out


def drive(clock: FakeClock, script: list[Outcome], **options: Any) -> Driver:
    return Driver(make_call(clock, **options), clock, list(script))


# ---------------------------------------------------------------------------------------------
# The happy path
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("made", "expected"),
    [
        (
            lambda: _send(REQUEST, 1.5, 2, capped(1.5), 7),
            lambda: Send(request=REQUEST, timeout=1.5, attempt=2, timeouts=capped(1.5), max_body=7),
        ),
        (lambda: _receive(2.5), lambda: Receive(timeout=2.5)),
        (lambda: _receive(None), lambda: Receive()),
        (
            lambda: make_answer("Ciao!", FinishReason("stop")),
            lambda: Answer(text="Ciao!", finish_reason=FinishReason("stop")),
        ),
        (
            lambda: Settings()._build("Hi", "gpt-4o-mini", True),
            lambda: Settings().build_request("Hi", model="gpt-4o-mini", search=True),
        ),
    ],
)
def test_the_cores_own_constructors_make_what_the_classes_do(
    made: Callable[[], object], expected: Callable[[], object]
) -> None:
    # The hot path makes its values with their slots' setters (see field_setters): the same
    # values, every field set, as frozen, pickled and shown as the class's own constructor's.
    value, reference = made(), expected()
    assert type(value) is type(reference)
    assert value == reference
    assert repr(value) == repr(reference)
    assert hash(value) == hash(reference)
    assert pickle.loads(pickle.dumps(value)) == reference
    for each in dataclasses.fields(reference):  # type: ignore[arg-type]
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, each.name, None)


def test_happy_path_action_sequence(clock: FakeClock) -> None:
    driver = drive(clock, [Reply()])
    assert driver.run() == ANSWER
    # 37 bytes in chunks of 16: three data_received() calls, then body_ended().
    assert driver.actions == [
        Send(request=REQUEST, timeout=None, attempt=1, timeouts=capped(None), max_body=MAX_BODY),
        Receive(),
        Receive(),
        Receive(),
        Receive(),
        Done(),
    ]
    assert driver.call.attempts == 1
    assert driver.call.request is REQUEST
    assert driver.call.next_action() == Done()  # and it stays done


def test_happy_path_step_by_step(clock: FakeClock) -> None:
    call = make_call(clock, deadline=60)
    assert call.attempts == 0
    assert call.next_action() == Send(
        request=REQUEST, timeout=60.0, attempt=1, timeouts=capped(60.0), max_body=MAX_BODY
    )
    assert call.attempts == 1
    call.response_received(200, [("Content-Type", "application/json")])
    assert call.next_action() == Receive(timeout=60.0)
    assert call.data_received(OK_BODY[:5]) == []
    assert call.next_action() == Receive(timeout=60.0)
    assert call.data_received(OK_BODY[5:]) == []
    assert call.next_action() == Receive(timeout=60.0)
    assert call.body_ended() == ANSWER
    assert call.next_action() == Done()
    assert collect(ANSWER) == Answer(text="Ciao!", finish_reason=FinishReason("stop"))


def test_receiving_says_when_the_body_may_be_fed_or_ended(clock: FakeClock) -> None:
    seen: list[bool] = []
    call = make_call(clock, max_response_bytes=8, max_retries=0)
    seen.append(call.receiving)
    call.next_action()
    seen.append(call.receiving)  # sent: the response has not arrived
    call.response_received(200, JSON)
    seen.append(call.receiving)
    assert call.data_received(b"{" * 9) == []  # past max_response_bytes: the call failed
    seen.append(call.receiving)
    assert seen == [False, False, True, False]
    with pytest.raises(InvalidResponseError):
        call.next_action()
    call = make_call(clock)
    call.next_action()
    call.response_received(200, JSON)
    call.body_ended()  # an empty body: the call failed, and is not receiving
    assert not call.receiving
    call = make_call(clock)
    call.next_action()
    call.response_received(200, JSON)
    call.data_received(OK_BODY)
    seen = [call.receiving]
    assert call.body_ended() == ANSWER
    seen.append(call.receiving)
    assert seen == [True, False]


@pytest.mark.parametrize(
    ("elapsed", "timeout"), [(0.0, 30.0), (4.0, 26.0), (29.75, 0.25), (0.0078125, 29.9921875)]
)
def test_send_timeout_is_what_remains_of_the_deadline(
    clock: FakeClock, elapsed: float, timeout: float
) -> None:
    call = make_call(clock, deadline=30, retry_policy=RetryPolicy(backoff_base=0, jitter=0))
    call.next_action()  # the deadline starts here
    clock.advance(elapsed)
    call.transport_failed(ConnectionResetError(), timeout=False)
    assert call.next_action() == Send(
        request=REQUEST, timeout=timeout, attempt=2, timeouts=capped(timeout), max_body=MAX_BODY
    )


def test_each_wait_is_capped_by_what_remains(clock: FakeClock) -> None:
    given = Timeout(connect=10.0, read=120.0, write=None, pool=5.0)
    call = make_call(clock, deadline=30, timeout=given)
    assert call.next_action().timeouts == Timeout(  # type: ignore[union-attr]
        connect=10.0, read=30.0, write=30.0, pool=5.0
    )
    call = make_call(clock, deadline=None, timeout=given)
    assert call.next_action().timeouts is given  # type: ignore[union-attr]


def test_send_timeout_is_always_usable_as_a_socket_timeout(clock: FakeClock) -> None:
    # deadline=inf is accepted, but Send.timeout=inf makes socket.settimeout() raise
    # OverflowError in a driver that passes it on (as http.client does). Either refuse inf
    # like RetryPolicy does, or treat it as "no deadline" (timeout None).
    try:
        call = make_call(clock, deadline=math.inf)
    except InvalidValueError:
        return
    action = call.next_action()
    assert isinstance(action, Send)
    assert action.timeout is None or math.isfinite(action.timeout)


def test_send_timeout_after_a_retry_counts_the_time_spent(clock: FakeClock) -> None:
    driver = drive(clock, [Unreachable(ConnectionResetError(), takes=2.0), Reply()], deadline=30)
    clock.advance(4.0)  # before the first step: not counted
    assert driver.run() == ANSWER
    # 30 - 2 (first attempt) - 0.4375 (sleep)
    assert [send.timeout for send in driver.sends] == [30.0, 27.5625]


# ---------------------------------------------------------------------------------------------
# Retries
# ---------------------------------------------------------------------------------------------

RETRYABLE = [
    pytest.param(Unreachable(ConnectionRefusedError()), APIConnectionError, id="unreachable"),
    pytest.param(Unreachable(TimeoutError(), timeout=True), APITimeoutError, id="timeout"),
    pytest.param(Reply(breaks=ConnectionResetError()), APIConnectionError, id="broke-mid-body"),
    pytest.param(
        Reply(breaks=TimeoutError(), timeout=True), APITimeoutError, id="read-timeout-mid-body"
    ),
    pytest.param(Reply(status=408, body=b""), APIStatusError, id="408"),
    pytest.param(Reply(status=409, body=b""), APIStatusError, id="409"),
    pytest.param(Reply(status=429, body=b""), RateLimitError, id="429"),
    pytest.param(Reply(status=500, body=b'{"statusCode":500}'), InternalServerError, id="500"),
    pytest.param(Reply(status=502, body=b"<html>"), InternalServerError, id="502"),
    pytest.param(Reply(status=503, body=b""), InternalServerError, id="503"),
    pytest.param(Reply(status=504, body=b""), InternalServerError, id="504"),
    pytest.param(
        Reply(status=500, body=b"x" * 70_000), InternalServerError, id="500-long-error-body"
    ),
]


@pytest.mark.parametrize(("failure", "error"), RETRYABLE)
def test_retries_with_exact_backoff_then_succeeds(
    clock: FakeClock, failure: Outcome, error: type[PizzaGPTError]
) -> None:
    driver = drive(clock, [failure, failure, Reply()], max_retries=2)
    assert driver.run() == ANSWER
    # base * 2 ** (n - 1), less jitter 0.25 * random 0.5: x 0.875
    assert driver.summary() == ["send 1", "sleep 0.4375", "send 2", "sleep 0.875", "send 3", "done"]
    assert [send.timeout for send in driver.sends] == [None, None, None]
    assert driver.call.attempts == 3
    # Each Sleep says which error it follows (for logging and hooks).
    afters = [action.after for action in driver.actions if isinstance(action, Sleep)]
    assert [type(after) for after in afters] == [error, error]
    assert afters[0] is not afters[1]


@pytest.mark.parametrize(("failure", "error"), RETRYABLE)
def test_retries_exhausted_raise_the_last_error(
    clock: FakeClock, failure: Outcome, error: type[PizzaGPTError]
) -> None:
    driver = drive(clock, [failure, failure, failure, Reply()], max_retries=2)
    with pytest.raises(error) as info:
        driver.run()
    assert type(info.value) is error
    assert driver.sleeps == [0.4375, 0.875]
    assert driver.call.attempts == 3
    assert len(driver.script) == 1  # the fourth outcome was never asked for
    with pytest.raises(error):  # asking again raises again
        driver.call.next_action()


def test_backoff_doubles_up_to_the_cap(clock: FakeClock) -> None:
    driver = drive(clock, [Reply(status=500, body=b"")] * 8, max_retries=7)
    with pytest.raises(InternalServerError):
        driver.run()
    # 0.5, 1, 2, 4, 8 (the cap), 8, 8 -- each x 0.875
    assert driver.sleeps == [0.4375, 0.875, 1.75, 3.5, 7.0, 7.0, 7.0]


@pytest.mark.parametrize(
    ("policy", "random", "sleeps"),
    [
        (RetryPolicy(backoff_base=1, backoff_cap=3, jitter=0), 0.5, [1.0, 2.0, 3.0, 3.0]),
        (RetryPolicy(), 0.0, [0.5, 1.0, 2.0, 4.0]),
        (RetryPolicy(), 0.75, [0.40625, 0.8125, 1.625, 3.25]),
        (RetryPolicy(jitter=1.0), 0.5, [0.25, 0.5, 1.0, 2.0]),
        (
            RetryPolicy(backoff_base=0.25, backoff_cap=0.5, jitter=0.5),
            0.5,
            [0.1875, 0.375, 0.375, 0.375],
        ),
    ],
)
def test_backoff_follows_the_policy_and_the_random_number(
    clock: FakeClock, policy: RetryPolicy, random: float, sleeps: list[float]
) -> None:
    driver = drive(
        clock, [Unreachable(OSError())] * 5, max_retries=4, retry_policy=policy, random=random
    )
    with pytest.raises(APIConnectionError):
        driver.run()
    assert driver.sleeps == sleeps


def test_zero_backoff_retries_without_sleeping(clock: FakeClock) -> None:
    policy = RetryPolicy(backoff_base=0)
    driver = drive(clock, [Unreachable(OSError()), Reply()], retry_policy=policy)
    assert driver.run() == ANSWER
    assert driver.summary() == ["send 1", "send 2", "done"]


@pytest.mark.parametrize(
    ("status", "retry_after", "sleep"),
    [
        (503, "3", 3.0),
        (429, "1", 1.0),
        (500, " 17 ", 17.0),
        (503, "60", 60.0),  # exactly the cap is still waited for
        (429, formatdate(NOW + 12, usegmt=True), 12.0),
        (503, formatdate(NOW + 59, usegmt=True), 59.0),
        (503, "soon", 0.4375),  # unreadable: ordinary backoff
        (408, "2", 2.0),
    ],
)
def test_retry_after_is_honoured_exactly(
    clock: FakeClock, status: int, retry_after: str, sleep: float
) -> None:
    failure = Reply(status=status, headers=(("Retry-After", retry_after),), body=b"")
    driver = drive(clock, [failure, Reply()])
    assert driver.run() == ANSWER
    assert driver.summary() == ["send 1", f"sleep {sleep}", "send 2", "done"]


def test_retry_after_applies_to_each_retry(clock: FakeClock) -> None:
    script: list[Outcome] = [
        Reply(status=503, headers=(("retry-after", "5"),), body=b""),
        Reply(status=503, body=b""),
        Reply(status=429, headers=(("retry-after", formatdate(NOW, usegmt=True)),), body=b""),
        Reply(),
    ]
    driver = drive(clock, script, max_retries=3)
    assert driver.run() == ANSWER
    # 5 (asked), backoff for retry 2 (1.0 x 0.875), then a date that is now: no sleep at all.
    assert driver.summary() == [
        "send 1",
        "sleep 5.0",
        "send 2",
        "sleep 0.875",
        "send 3",
        "send 4",
        "done",
    ]


@pytest.mark.parametrize(
    ("status", "retry_after", "policy"),
    [
        (429, "61", RetryPolicy()),
        (503, "3600", RetryPolicy()),
        (429, formatdate(NOW + 120, usegmt=True), RetryPolicy()),
        (503, "6", RetryPolicy(retry_after_cap=5)),
        (429, "1", RetryPolicy(retry_after_cap=0)),
    ],
)
def test_retry_after_above_the_cap_is_not_waited_for(
    clock: FakeClock, status: int, retry_after: str, policy: RetryPolicy
) -> None:
    failure = Reply(status=status, headers=(("Retry-After", retry_after),), body=b"busy")
    driver = drive(clock, [failure, Reply()], retry_policy=policy)
    with pytest.raises(APIStatusError) as info:
        driver.run()
    assert info.value.status_code == status
    assert info.value.retry_after is not None
    assert info.value.retry_after > policy.retry_after_cap
    assert driver.summary() == ["send 1"]


def test_retry_after_above_the_cap_carries_the_exact_delay(clock: FakeClock) -> None:
    failure = Reply(status=429, headers=(("Retry-After", "120"),), body=b"")
    driver = drive(clock, [failure])
    with pytest.raises(RateLimitError) as info:
        driver.run()
    assert info.value.retry_after == 120.0


@pytest.mark.parametrize("max_retries", [0, 1, 2, 3, 5])
def test_max_retries_counts_attempts(clock: FakeClock, max_retries: int) -> None:
    driver = drive(
        clock, [Reply(status=500, body=b"")] * (max_retries + 2), max_retries=max_retries
    )
    with pytest.raises(InternalServerError):
        driver.run()
    assert driver.call.attempts == max_retries + 1
    assert [send.attempt for send in driver.sends] == list(range(1, max_retries + 2))
    assert len(driver.sleeps) == max_retries
    assert len(driver.script) == 1


def test_default_max_retries_is_two(clock: FakeClock) -> None:
    assert DEFAULT_MAX_RETRIES == 2
    driver = drive(clock, [Unreachable(OSError())] * 4)
    with pytest.raises(APIConnectionError):
        driver.run()
    assert driver.call.attempts == 3


def test_max_retries_zero_with_a_success(clock: FakeClock) -> None:
    driver = drive(clock, [Reply()], max_retries=0)
    assert driver.run() == ANSWER


MISUSE = b'{"content": "Misuse detected. please get in touch, we can come up with a solution."}'
NEVER_RETRIED = [
    pytest.param(Reply(body=MISUSE), MisuseDetectedError, id="misuse"),
    pytest.param(Reply(body=b'{"answer": "Invalid"}'), SecretRejectedError, id="secret-rejected"),
    pytest.param(
        Reply(body=b'{"description": "error"}'), SecretRejectedError, id="secret-description"
    ),
    pytest.param(
        Reply(headers=(("content-type", "text/html"),), body=b"<html><title>x</title>"),
        InvalidResponseError,
        id="html",
    ),
    pytest.param(Reply(body=b"nope"), InvalidResponseError, id="not-json"),
    pytest.param(Reply(body=b'{"content": ""}'), InvalidResponseError, id="no-content"),
    pytest.param(
        Reply(body=b'{"content": "' + b"x" * 200 + b'"}'), InvalidResponseError, id="too-large"
    ),
    pytest.param(
        Reply(headers=(("content-length", "1000"),), body=b""),
        InvalidResponseError,
        id="content-length-too-large",
    ),
    pytest.param(Reply(status=400, body=b""), APIStatusError, id="400"),
    pytest.param(Reply(status=401, body=b""), APIStatusError, id="401"),
    pytest.param(Reply(status=403, body=b"<html>"), APIStatusError, id="403"),
    pytest.param(Reply(status=404, body=b""), APIStatusError, id="404"),
    pytest.param(
        Reply(status=400, headers=(("retry-after", "1"),), body=b""),
        APIStatusError,
        id="400-with-retry-after",
    ),
    pytest.param(Reply(status=422, body=b""), APIStatusError, id="422"),
]


@pytest.mark.parametrize(("failure", "error"), NEVER_RETRIED)
def test_never_retried(clock: FakeClock, failure: Reply, error: type[PizzaGPTError]) -> None:
    driver = drive(clock, [failure, Reply()], max_retries=5, max_response_bytes=100)
    with pytest.raises(error) as info:
        driver.run()
    assert type(info.value) is error
    assert driver.summary() == ["send 1"]
    assert driver.call.attempts == 1
    assert driver.script == [Reply()]
    assert driver.events == []


# ---------------------------------------------------------------------------------------------
# No retry once events were delivered
#
# With today's one-document format, ResponseReader.feed() never returns events, so
# data_received() never delivers any: the events come from body_ended(), which also moves the
# call to DONE, from which no failure can be reported. So "a failure after delivery" cannot be
# reached with the real reader; the tests below show that, then use a streaming reader (what a
# future SSE format would be) to show that the guard does its job.
# ---------------------------------------------------------------------------------------------


def test_data_received_delivers_nothing_with_todays_format(clock: FakeClock) -> None:
    call = make_call(clock)
    call.next_action()
    call.response_received(200, JSON)
    assert [call.data_received(OK_BODY[i : i + 1]) for i in range(len(OK_BODY))] == [
        [] for _ in OK_BODY
    ]
    assert call.body_ended() == ANSWER


def test_once_events_are_delivered_the_call_is_done_and_cannot_fail(clock: FakeClock) -> None:
    call = make_call(clock)
    call.next_action()
    call.response_received(200, JSON)
    call.data_received(OK_BODY)
    assert call.body_ended() == ANSWER
    with pytest.raises(RuntimeError):
        call.transport_failed(ConnectionResetError(), timeout=False)
    assert call.next_action() == Done()


class StreamingReader(ResponseReader):
    """A reader for a hypothetical streaming format: every chunk is a text event at once."""

    def feed(self, data: bytes) -> list[Event]:
        super().feed(data)
        return [data.decode()] if data and self.ok else []


@pytest.fixture
def streaming(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pizzagpt_sdk._call.ResponseReader", StreamingReader)


@pytest.mark.usefixtures("streaming")
@pytest.mark.parametrize("timeout", [False, True])
def test_no_retry_once_events_were_delivered(clock: FakeClock, timeout: bool) -> None:
    call = make_call(clock, max_retries=2)
    assert isinstance(call.next_action(), Send)
    call.response_received(200, JSON)
    assert call.data_received(b"Cia") == ["Cia"]
    call.transport_failed(ConnectionResetError("reset"), timeout=timeout)
    error = APITimeoutError if timeout else APIConnectionError
    message = "timed out talking to" if timeout else "broke before the answer was complete"
    with pytest.raises(error, match=message) as info:
        call.next_action()  # not Sleep: a retry would repeat "Cia"
    assert type(info.value) is error
    assert call.attempts == 1


@pytest.mark.usefixtures("streaming")
def test_a_failure_before_any_event_is_still_retried_with_a_streaming_reader(
    clock: FakeClock,
) -> None:
    call = make_call(clock, max_retries=2)
    call.next_action()
    call.response_received(200, JSON)
    assert call.data_received(b"") == []
    call.transport_failed(ConnectionResetError("reset"), timeout=False)
    action = call.next_action()
    assert isinstance(action, Sleep)
    assert action.seconds == 0.4375


# ---------------------------------------------------------------------------------------------
# The deadline
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "error"),
    [
        (Reply(status=500, body=b"", takes=9.6), InternalServerError),
        (Reply(status=500, body=b"", takes=9.5625), InternalServerError),  # sleep == remaining
        (Unreachable(ConnectionRefusedError(), takes=9.75), APIConnectionError),
        (Unreachable(TimeoutError(), timeout=True, takes=10.0), APITimeoutError),
        (
            Reply(status=503, headers=(("retry-after", "5"),), body=b"", takes=5.0),
            InternalServerError,
        ),
    ],
)
def test_a_sleep_that_would_pass_the_deadline_is_not_taken(
    clock: FakeClock, failure: Outcome, error: type[PizzaGPTError]
) -> None:
    driver = drive(clock, [failure, Reply()], deadline=10)
    with pytest.raises(error) as info:
        driver.run()
    # The last real error, not a generic "deadline" one.
    assert type(info.value) is error
    assert "deadline" not in str(info.value)
    assert driver.summary() == ["send 1"]


def test_a_sleep_that_fits_in_the_deadline_is_taken(clock: FakeClock) -> None:
    driver = drive(clock, [Reply(status=500, body=b"", takes=9.5), Reply()], deadline=10)
    assert driver.run() == ANSWER
    assert driver.summary() == ["send 1", "sleep 0.4375", "send 2", "done"]
    assert [send.timeout for send in driver.sends] == [10.0, 0.0625]


@pytest.mark.parametrize("where", ["waiting-for-headers", "mid-body"])
def test_a_wait_stopped_at_its_timeout_ends_the_call_at_the_deadline(
    clock: FakeClock, where: str
) -> None:
    # A server trickling bytes keeps every read within its timeout: the driver stops the
    # wait at what was left of the deadline, and the call gives up, with retries left.
    call = make_call(clock, deadline=5, max_retries=3)
    call.next_action()
    if where == "mid-body":
        clock.advance(2)
        call.response_received(200, JSON)
        assert call.next_action() == Receive(timeout=3.0)
        call.data_received(OK_BODY[:1])
    clock.advance(5)
    call.timed_out()
    with pytest.raises(APITimeoutError, match=r"the call's deadline of 5 s ran out after 1 "):
        call.next_action()
    assert call.attempts == 1


def test_the_deadline_running_out_while_receiving(clock: FakeClock) -> None:
    call = make_call(clock, deadline=5, max_retries=3)
    assert call.next_action() == Send(
        request=REQUEST, timeout=5.0, attempt=1, timeouts=capped(5.0), max_body=MAX_BODY
    )
    clock.advance(1)
    call.response_received(200, JSON)
    assert call.next_action() == Receive(timeout=4.0)
    call.data_received(OK_BODY[:10])
    clock.advance(3.5)
    assert call.next_action() == Receive(timeout=0.5)  # each read may take what is left
    call.data_received(OK_BODY[10:20])
    clock.advance(0.5)
    with pytest.raises(
        APITimeoutError, match=r"the call's deadline of 5 s ran out after 1 "
    ) as info:
        call.next_action()
    assert info.value.url == URL
    assert info.value.__cause__ is None
    assert call.attempts == 1  # not retried, though retries were left
    with pytest.raises(RuntimeError):
        call.data_received(OK_BODY[20:])  # the driver must close the response now
    with pytest.raises(APITimeoutError):
        call.next_action()


@pytest.mark.parametrize("late", [5.0, 5.5, 100.0])
def test_the_deadline_starts_at_the_first_step(clock: FakeClock, late: float) -> None:
    call = make_call(clock, deadline=5)
    clock.advance(late)  # a stream made now and iterated later has all of its deadline
    assert call.next_action() == Send(
        request=REQUEST, timeout=5.0, attempt=1, timeouts=capped(5.0), max_body=MAX_BODY
    )


def test_a_deadline_gone_after_an_oversleep_chains_the_last_error(clock: FakeClock) -> None:
    call = make_call(clock, deadline=2.5)
    call.next_action()
    clock.advance(1)
    call.response_received(503, ())
    call.body_ended()
    action = call.next_action()
    assert isinstance(action, Sleep)
    assert action.seconds == 0.4375
    clock.advance(2)  # the driver slept far longer than asked
    with pytest.raises(APITimeoutError, match=r"deadline of 2\.5 s ran out after 1 ") as info:
        call.next_action()
    assert isinstance(info.value.__cause__, InternalServerError)
    assert call.attempts == 1


# ---------------------------------------------------------------------------------------------
# transport_failed
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("during", "cause", "timeout", "error", "message"),
    [
        (
            "send",
            ConnectionRefusedError(111, "Connection refused"),
            False,
            APIConnectionError,
            f"could not reach {URL} (ConnectionRefusedError: [Errno 111] Connection refused)",
        ),
        (
            "send",
            TimeoutError("timed out"),
            True,
            APITimeoutError,
            f"timed out talking to {URL} (TimeoutError: timed out)",
        ),
        (
            "send",
            OSError(),
            True,
            APITimeoutError,
            f"timed out talking to {URL} (OSError)",
        ),
        (
            "receive",
            ConnectionResetError(),
            False,
            APIConnectionError,
            f"the connection to {URL} broke before the answer was complete (ConnectionResetError)",
        ),
        (
            "receive",
            TimeoutError("read"),
            True,
            APITimeoutError,
            f"timed out talking to {URL} (TimeoutError: read)",
        ),
    ],
)
def test_transport_failed_makes_the_sdk_error(
    clock: FakeClock,
    during: str,
    cause: BaseException,
    timeout: bool,
    error: type[APIConnectionError],
    message: str,
) -> None:
    call = make_call(clock, max_retries=0)
    call.next_action()
    if during == "receive":
        call.response_received(200, JSON)
        call.data_received(OK_BODY[:4])
    call.transport_failed(cause, timeout=timeout)
    with pytest.raises(error) as info:
        call.next_action()
    assert type(info.value) is error
    assert str(info.value) == message
    assert info.value.__cause__ is cause
    assert info.value.url == URL


# ---------------------------------------------------------------------------------------------
# Misuse: methods called in the wrong state
# ---------------------------------------------------------------------------------------------


def call_in(state: str, clock: FakeClock) -> Call:
    call = make_call(clock)
    if state == "ready":
        return call
    call.next_action()
    if state == "sent":
        return call
    if state == "failed":
        call.transport_failed(OSError(), timeout=False)
        return call
    call.response_received(200, JSON)
    if state == "done":
        call.data_received(OK_BODY)
        call.body_ended()
    return call


METHODS: dict[str, Callable[[Call], object]] = {
    "next_action": lambda call: call.next_action(),
    "response_received": lambda call: call.response_received(200, JSON),
    "data_received": lambda call: call.data_received(OK_BODY),
    "body_ended": lambda call: call.body_ended(),
    "transport_failed": lambda call: call.transport_failed(OSError(), timeout=False),
    "timed_out": lambda call: call.timed_out(),
}


@pytest.mark.parametrize(
    ("state", "method", "message"),
    [
        ("ready", "response_received", r"response_received\(\) is not valid now .*READY"),
        ("ready", "data_received", r"data_received\(\) is not valid now .*READY"),
        ("ready", "body_ended", r"body_ended\(\) is not valid now .*READY"),
        ("ready", "transport_failed", r"transport_failed\(\) is only valid after Send or Receive"),
        ("sent", "next_action", r"after Send, call response_received\(\) or transport_failed"),
        ("sent", "data_received", r"data_received\(\) is not valid now .*SENT"),
        ("sent", "body_ended", r"body_ended\(\) is not valid now .*SENT"),
        ("receiving", "response_received", r"response_received\(\) .*RECEIVING"),
        ("done", "response_received", r"response_received\(\) is not valid now .*DONE"),
        ("done", "data_received", r"data_received\(\) is not valid now .*DONE"),
        ("done", "body_ended", r"body_ended\(\) is not valid now .*DONE"),
        ("done", "transport_failed", r"transport_failed\(\) is only valid after Send or Receive"),
        ("ready", "timed_out", r"timed_out\(\) is only valid after Send or Receive"),
        ("done", "timed_out", r"timed_out\(\) is only valid after Send or Receive"),
        ("failed", "response_received", r"response_received\(\) is not valid now .*FAILED"),
        ("failed", "data_received", r"data_received\(\) .*FAILED"),
        ("failed", "body_ended", r"body_ended\(\) .*FAILED"),
        ("failed", "transport_failed", r"transport_failed\(\) is only valid after Send or Receive"),
    ],
)
def test_methods_in_the_wrong_state_raise_runtime_error(
    clock: FakeClock, state: str, method: str, message: str
) -> None:
    call = call_in(state, clock)
    with pytest.raises(RuntimeError, match=message) as info:
        METHODS[method](call)
    assert not isinstance(info.value, PizzaGPTError)  # a driver bug, not an SDK error


@pytest.mark.parametrize(
    ("state", "method"),
    [
        ("sent", "next_action"),
        ("sent", "data_received"),
        ("sent", "body_ended"),
        ("receiving", "response_received"),
        ("ready", "transport_failed"),
    ],
)
def test_a_misplaced_call_changes_nothing(clock: FakeClock, state: str, method: str) -> None:
    call = call_in(state, clock)
    with pytest.raises(RuntimeError):
        METHODS[method](call)
    # The call goes on as if nothing had happened.
    if state == "ready":
        assert call.next_action() == Send(
            request=REQUEST, timeout=None, attempt=1, timeouts=capped(None), max_body=MAX_BODY
        )
    if state in ("ready", "sent"):
        call.response_received(200, JSON)
    assert call.next_action() == Receive()
    assert call.data_received(OK_BODY) == []
    assert call.body_ended() == ANSWER
    assert call.next_action() == Done()
    assert call.attempts == 1


# ---------------------------------------------------------------------------------------------
# collect()
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("events", "answer"),
    [
        (["Ciao!", FinishReason("stop")], Answer(text="Ciao!", finish_reason=FinishReason("stop"))),
        (
            ["Ci", "ao", "!", FinishReason("stop", citations=("https://x",))],
            Answer(text="Ciao!", finish_reason=FinishReason("stop", citations=("https://x",))),
        ),
        (
            [FinishReason("refusal", refusal="No.")],
            Answer(text="", finish_reason=FinishReason("refusal", refusal="No.")),
        ),
    ],
)
def test_collect(events: list[Event], answer: Answer) -> None:
    collected = collect(iter(events))
    assert collected == answer
    assert str(collected) == answer.text
    assert collected.citations == answer.finish_reason.citations
    assert collected.refusal == answer.finish_reason.refusal


def test_transcript_collects_as_events_are_handed_out() -> None:
    transcript = Transcript()
    assert transcript.answer is None
    assert transcript.add("Ci") is None
    assert transcript.add("ao") is None
    assert transcript.answer is None
    answer = transcript.add(FinishReason("stop"))
    assert answer == Answer(text="Ciao", finish_reason=FinishReason("stop"))
    assert transcript.answer == answer


@pytest.mark.parametrize("events", [[], ["Ciao!"], ["a", "b"]])
def test_collect_needs_a_finish_reason(events: list[Event]) -> None:
    with pytest.raises(InvalidValueError, match=r"the stream ended without a FinishReason"):
        collect(events)


# ---------------------------------------------------------------------------------------------
# RetryPolicy and is_retryable
# ---------------------------------------------------------------------------------------------


def test_retry_policy_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.backoff_base, policy.backoff_cap, policy.retry_after_cap, policy.jitter) == (
        0.5,
        8.0,
        60.0,
        0.25,
    )


@pytest.mark.parametrize("name", ["backoff_base", "backoff_cap", "retry_after_cap", "jitter"])
@pytest.mark.parametrize(
    ("value", "error", "pattern"),
    [
        (-1, InvalidValueError, r"must be finite and >= 0, not -1"),
        (-0.001, InvalidValueError, r"must be finite and >= 0"),
        (math.nan, InvalidValueError, r"must be finite and >= 0, not nan"),
        (math.inf, InvalidValueError, r"must be finite and >= 0, not inf"),
        ("1", InvalidTypeError, r"must be a number, not '1'"),
        (None, InvalidTypeError, r"must be a number, not None"),
        (True, InvalidTypeError, r"must be a number, not True"),
    ],
)
def test_retry_policy_validation(
    name: str, value: object, error: type[PizzaGPTError], pattern: str
) -> None:
    with pytest.raises(error, match=rf"RetryPolicy\.{name} {pattern}") as info:
        RetryPolicy(**{name: value})  # type: ignore[arg-type]
    assert isinstance(info.value, ValueError if error is InvalidValueError else TypeError)


@pytest.mark.parametrize("jitter", [1.0001, 2, 100.0])
def test_retry_policy_jitter_over_one(jitter: float) -> None:
    with pytest.raises(InvalidValueError, match=r"RetryPolicy\.jitter must be between 0 and 1"):
        RetryPolicy(jitter=jitter)


@pytest.mark.parametrize(
    "policy",
    [
        RetryPolicy(backoff_base=0, backoff_cap=0, retry_after_cap=0, jitter=0),
        RetryPolicy(jitter=1),
        RetryPolicy(backoff_base=2, backoff_cap=30, retry_after_cap=600),
    ],
)
def test_retry_policy_accepts_edges(policy: RetryPolicy) -> None:
    assert policy.backoff(1, 0.0) == min(policy.backoff_base, policy.backoff_cap)


@pytest.mark.parametrize(
    ("retry", "random", "delay"),
    [
        (1, 0.0, 0.5),
        (1, 0.5, 0.4375),
        (2, 0.5, 0.875),
        (5, 0.0, 8.0),
        (6, 0.0, 8.0),
        (10_000, 0.5, 7.0),  # no OverflowError however many retries
    ],
)
def test_retry_policy_backoff(retry: int, random: float, delay: float) -> None:
    assert RetryPolicy().backoff(retry, random) == delay


@pytest.mark.parametrize(
    ("retry_after", "delay"),
    [(None, 0.4375), (0.0, 0.0), (7.5, 7.5), (60.0, 60.0), (60.5, None), (1e9, None)],
)
def test_retry_policy_delay(retry_after: float | None, delay: float | None) -> None:
    assert RetryPolicy().delay(1, retry_after, 0.5) == delay


def test_retry_statuses() -> None:
    assert frozenset({408, 409, 429}) == RETRY_STATUSES


def status_error(status: int) -> APIStatusError:
    return APIStatusError("x", url=URL, status_code=status, body="")


@pytest.mark.parametrize(
    ("error", "retryable"),
    [
        (APIConnectionError("x", url=URL), True),
        (APITimeoutError("x", url=URL), True),
        *[(status_error(status), True) for status in (408, 409, 429, 500, 502, 503, 504, 599)],
        *[(status_error(status), False) for status in (300, 400, 401, 403, 404, 410, 422, 499)],
        (RateLimitError("x", url=URL, status_code=429, body=""), True),
        (InternalServerError("x", url=URL, status_code=500, body=""), True),
        (InvalidResponseError("x", url=URL, status_code=200, body=""), False),
        (SecretRejectedError("x", url=URL, status_code=200, body=""), False),
        (MisuseDetectedError("x", url=URL, status_code=200, body="", content="m"), False),
        (InvalidValueError("x"), False),
        (ValueError("x"), False),
        (OSError("x"), False),
    ],
)
def test_is_retryable(error: Exception, retryable: bool) -> None:
    assert is_retryable(error) is retryable


# ---------------------------------------------------------------------------------------------
# Call's arguments
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "error", "pattern"),
    [
        ({"max_retries": -1}, InvalidValueError, r"max_retries must be 0 or more, not -1"),
        ({"max_retries": True}, InvalidTypeError, r"max_retries must be an int, not True"),
        ({"max_retries": "2"}, InvalidTypeError, r"max_retries must be an int, not '2'"),
        ({"max_retries": 2.0}, InvalidTypeError, r"max_retries must be an int, not 2\.0"),
        ({"max_retries": None}, InvalidTypeError, r"max_retries must be an int, not None"),
        (
            {"deadline": 0},
            InvalidValueError,
            r"deadline must be a finite number of seconds above 0, not 0;",
        ),
        (
            {"deadline": 0.0},
            InvalidValueError,
            r"deadline must be a finite number of seconds above 0",
        ),
        (
            {"deadline": -5},
            InvalidValueError,
            r"deadline must be a finite number of seconds above 0, not -5;",
        ),
        ({"deadline": math.nan}, InvalidValueError, r"deadline must be a finite number .* not nan"),
        ({"deadline": "30"}, InvalidTypeError, r"deadline must be a number of seconds or None"),
        ({"deadline": True}, InvalidTypeError, r"deadline must be a number .*, not True"),
        ({"max_response_bytes": 0}, InvalidValueError, r"max_response_bytes must be more than 0"),
        ({"max_response_bytes": -1}, InvalidValueError, r"max_response_bytes must be more than 0"),
        ({"max_response_bytes": True}, InvalidTypeError, r"max_response_bytes must be an int"),
        ({"max_response_bytes": "1"}, InvalidTypeError, r"max_response_bytes must be an int"),
        ({"max_response_bytes": 1.5}, InvalidTypeError, r"max_response_bytes must be an int"),
        (
            {"retry_policy": {"backoff_base": 1}},
            InvalidTypeError,
            r"must be a RetryPolicy, not dict",
        ),
        (
            {"retry_policy": "fast"},
            InvalidTypeError,
            r"retry_policy must be a RetryPolicy, not str",
        ),
    ],
)
def test_call_argument_validation(
    clock: FakeClock, options: dict[str, Any], error: type[PizzaGPTError], pattern: str
) -> None:
    with pytest.raises(error, match=pattern) as info:
        make_call(clock, **options)
    assert type(info.value) is error
    assert isinstance(info.value, ValueError if error is InvalidValueError else TypeError)


@pytest.mark.parametrize(
    "options",
    [
        {"max_retries": 0},
        {"deadline": None},
        {"deadline": 0.001},
        {"deadline": 7},
        {"max_response_bytes": 1},
        {"retry_policy": None},
    ],
)
def test_call_accepts_valid_arguments(clock: FakeClock, options: dict[str, Any]) -> None:
    call = make_call(clock, **options)
    assert isinstance(call.next_action(), Send)
