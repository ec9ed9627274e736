"""Reliability: no hang, no leaked connection, no silent empty answer, no raw httpx or anyio error.

Every test talks to a real server on 127.0.0.1 (the fake's, or a misbehaving one written here)
and is bounded: small timeouts and deadlines end every wait, and servers stop on their own.
docs/reliability.md lists each guarantee next to the test that proves it.

"No connection in use" is read from httpx's pool (httpcore's `ConnectionPool`): every connection
idle or closed, and no request waiting for one.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import random
import re
import signal
import socket
import ssl
import sys
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import anyio
import httpx
import pytest

from pizzagpt_sdk import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncClient,
    AsyncStream,
    Client,
    FinishReason,
    InternalServerError,
    InvalidResponseError,
    MisuseDetectedError,
    PizzaGPTError,
    RateLimitError,
    RetryPolicy,
    SecretRejectedError,
)
from pizzagpt_sdk._protocol import DEFAULT_MAX_RESPONSE_BYTES
from pizzagpt_sdk.engines._httpx_pool import SpreadTransport
from pizzagpt_sdk.testing import FakePizzaGPT, Reply
from tests._socket_server import SocketServer
from tests.conftest import httpx_client_of, wait_for

if TYPE_CHECKING:
    pass

FAKE_PREFIX = "This is the offline PizzaGPT fake, not a model. You asked: "
SECRET = "s3cr3t-RELIABILITY-9d2e"
PROMPT = "PROMPT-RELIABILITY-41b7"
MiB = 1024 * 1024
# Small, so that the slow faults stay fast; every bound below is one of these plus SLACK.
TIMEOUT = 0.5
DEADLINE = 3.0
# What a call may take beyond its configured timeout or deadline: scheduling and teardown on a
# busy 2-core CI machine, never a second wait.
SLACK = 1.5
FAST_RETRIES = RetryPolicy(backoff_base=0.05, jitter=0.0)
# Long enough that only a timeout, a deadline or a cancellation can end the wait.
FOREVER = 60.0
# When a cancellation or an interrupt lands: well after the request was sent, well before the
# fault it interrupts could end by itself.
CANCEL_AFTER = 0.3

Kind = Literal["Client", "AsyncClient"]

pytestmark = pytest.mark.usefixtures("no_proxy_env")  # the SDK's own pool, as users get it


# Helpers


def make_client(kind: Kind, base_url: str, **options: Any) -> Client | AsyncClient:
    """An SDK client on `base_url` with its own pool, as a user gets it."""
    options.setdefault("secret", SECRET)
    cls = Client if kind == "Client" else AsyncClient
    return cls(base_url=base_url, **options)


async def ask(client: Client | AsyncClient, messages: Any = PROMPT, **options: Any) -> str:
    if isinstance(client, AsyncClient):
        return (await client.ask(messages, **options)).text
    return client.ask(messages, **options).text


async def close(client: Client | AsyncClient) -> None:
    if isinstance(client, AsyncClient):
        await client.aclose()
    else:
        client.close()


def connections_in_use(client: Client | AsyncClient) -> list[str]:
    """What the client's pool still holds for a request: busy connections and waiting requests."""
    transport = httpx_client_of(client)._transport
    if isinstance(transport, SpreadTransport):  # AsyncClient's small pools
        # Each pool's count of open responses must be back to zero, as its connections are.
        counted = [
            f"{n} responses counted open in pool {i}" for i, n in enumerate(transport._busy) if n
        ]
        transports: list[httpx.BaseTransport | httpx.AsyncBaseTransport] = [*transport._pools]
    else:
        counted, transports = [], [transport]
    in_use = counted
    for each in transports:
        assert isinstance(each, (httpx.HTTPTransport, httpx.AsyncHTTPTransport))
        pool = each._pool
        in_use += [repr(c) for c in pool.connections if not (c.is_idle() or c.is_closed())]
        in_use += [f"a request waiting for a connection: {r!r}" for r in pool._requests]
    return in_use


def causes(error: BaseException) -> list[BaseException]:
    """The error and its chain of causes."""
    chain: list[BaseException] = []
    current: BaseException | None = error
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


class RawServer(SocketServer):
    """A misbehaving HTTP server on 127.0.0.1, for the faults the fake cannot script.

    Modes:
        hangup: close every connection as soon as it is accepted.
        endless: answer 200 with a chunked JSON body that never ends (up to `cap` bytes, then
            it gives up), counting what it managed to send in `sent`.
    """

    def __init__(self, mode: Literal["hangup", "endless"], cap: int = 64 * MiB) -> None:
        super().__init__()
        self.mode = mode
        self.cap = cap
        self.sent = 0

    def serve(self, connection: socket.socket) -> None:
        if self.mode == "endless":
            self._endless(connection)

    def _endless(self, connection: socket.socket) -> None:
        # A small send buffer keeps what the kernel holds for the client, and so `sent`, close
        # to what the client actually read.
        connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
        connection.settimeout(5)
        request = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in request:
                data = connection.recv(65536)
                if not data:
                    return
                request += data
        head = (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        piece = b'{"content": "' + b"x" * (64 * 1024 - 13)
        chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
        piece = b"x" * len(piece)
        try:
            connection.sendall(head)
            while self.sent < self.cap and not self.stopping.is_set():
                connection.sendall(chunk)
                self.sent += len(piece)
                chunk = b"%x\r\n%s\r\n" % (len(piece), piece)
        except OSError:
            pass  # The client hung up: what it should do once it has read enough.


@contextlib.contextmanager
def refused_url() -> Iterator[str]:
    """A URL on 127.0.0.1 where nothing listens: a bound socket that does not `listen()`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        host, port = sock.getsockname()[:2]
        yield f"http://{host}:{port}"


# The fault matrix: every fault x {Client, AsyncClient} x {asyncio, trio}, over loopback.


@dataclass(frozen=True)
class Fault:
    """One fault, and how the call must end.

    Attributes:
        script: The fake's replies, one per attempt (for `server="fake"`).
        server: The fake over loopback, or a socket that refuses, hangs up or never ends.
        error: The documented error the call must raise (that exact class); `None`: it must
            succeed with `answer`, after as many retries as `attempts` says.
        answer: The text of a successful answer.
        attempts: Requests the fake (or connections the raw server) must see; `None`: unchecked.
        options: Client options on top of `BASE`.
        within: The configured timeout or deadline the call must end in (plus SLACK).
        cause: The type of the error's `__cause__` (the httpx error it translates).
        match: A regular expression the error's message must match.
    """

    script: tuple[Reply, ...] = ()
    server: Literal["fake", "refused", "hangup", "endless"] = "fake"
    error: type[PizzaGPTError] | None = None
    answer: str = ""
    attempts: int | None = 1
    options: Mapping[str, Any] = field(default_factory=dict)
    within: float = DEADLINE
    cause: type[BaseException] | None = None
    match: str = ""


BASE: Mapping[str, Any] = {
    "timeout": TIMEOUT,
    "deadline": DEADLINE,
    "max_retries": 2,
    "retry_policy": FAST_RETRIES,
}
NO_RETRY = {"max_retries": 0}
LATE = Reply.answer("too late").delay(FOREVER)
STALLED = Reply.answer("x" * 40).trickle(10, interval=FOREVER)
# Each chunk comes well within the read timeout; the whole body takes ~4 s.
CRAWLING = Reply.answer("x" * 2000).trickle(10, interval=0.02)
BROKEN = Reply.answer("x" * 99).close_mid_body()
LIMIT = DEFAULT_MAX_RESPONSE_BYTES

FAULTS: dict[str, Fault] = {
    "answer": Fault((Reply.answer("fine"),), answer="fine"),
    # delay
    "delay-within-timeout": Fault((Reply.answer("late").delay(0.2),), answer="late"),
    "delay-past-timeout": Fault(
        (LATE,), error=APITimeoutError, options=NO_RETRY, within=TIMEOUT, cause=httpx.ReadTimeout
    ),
    "delay-then-retry": Fault((LATE, Reply.answer("second")), answer="second", attempts=2),
    "delay-until-deadline": Fault(
        (LATE, LATE), error=APITimeoutError, attempts=2, options={"deadline": 0.8}, within=0.8
    ),
    "deadline-shorter-than-timeout": Fault(
        (LATE,), error=APITimeoutError, options={"timeout": 10.0, "deadline": 0.6}, within=0.6
    ),
    # trickle
    "trickle-within-timeout": Fault(
        (Reply.answer("slowly").trickle(8, interval=0.02),), answer="slowly"
    ),
    "trickle-past-timeout": Fault(
        (STALLED,), error=APITimeoutError, options=NO_RETRY, within=TIMEOUT, cause=httpx.ReadTimeout
    ),
    "trickle-past-deadline": Fault(
        (CRAWLING,),
        error=APITimeoutError,
        options={"deadline": 0.6},
        within=0.6,
        match="deadline of 0.6 s ran out",
    ),
    # close_mid_body
    "close-mid-body": Fault(
        (BROKEN,),
        error=APIConnectionError,
        options=NO_RETRY,
        cause=httpx.RemoteProtocolError,
        match="broke before the answer was complete",
    ),
    "close-mid-body-then-retry": Fault((BROKEN, Reply.answer("again")), answer="again", attempts=2),
    # statuses and retry_after
    "503-retry-after-then-answer": Fault(
        (Reply.status(503).retry_after(0), Reply.answer("back")), answer="back", attempts=2
    ),
    "429-until-retries-run-out": Fault(
        (Reply.status(429).retry_after(0),) * 3, error=RateLimitError, attempts=3
    ),
    "retry-after-past-deadline": Fault(
        (Reply.status(429).retry_after(30),),
        error=RateLimitError,
        within=TIMEOUT,  # it does not wait for a retry that could not finish in time
        match="Too Many Requests",
    ),
    "500-until-retries-run-out": Fault(
        (Reply.status(500),) * 3, error=InternalServerError, attempts=3
    ),
    "400-not-retried": Fault((Reply.status(400),), error=APIStatusError),
    "error-body-past-64-kib": Fault(
        (Reply.status(400, b"y" * 300_000).trickle(4096, interval=0.001),),
        error=APIStatusError,
        match="HTTP 400",
    ),
    # what arrives instead of an answer
    "html": Fault((Reply.html(),), error=InvalidResponseError, match="HTML page"),
    "html-503": Fault((Reply.html(503),) * 3, error=InternalServerError, attempts=3),
    "invalid-json": Fault((Reply.invalid_json(),), error=InvalidResponseError, match="not JSON"),
    "misuse-not-retried": Fault((Reply.misuse(),), error=MisuseDetectedError),
    "secret-rejected": Fault((Reply.secret_rejected(),), error=SecretRejectedError),
    "null-content": Fault((Reply.answer(None),), error=InvalidResponseError, match="neither"),
    "empty-content": Fault((Reply.answer(""),), error=InvalidResponseError, match="neither"),
    "blank-content": Fault((Reply.answer(" \n\t"),), error=InvalidResponseError, match="neither"),
    # size
    "declared-larger-than-max": Fault(
        (Reply.raw(200, b"z" * (LIMIT + MiB), headers={"content-type": "application/json"}),),
        error=InvalidResponseError,
        match=rf"larger than max_response_bytes={LIMIT:,} \(it declares {LIMIT + MiB:,} bytes",
    ),
    "streamed-larger-than-max": Fault(
        server="endless",
        error=InvalidResponseError,
        match=rf"larger than max_response_bytes={LIMIT:,} \(more than {LIMIT:,} bytes arrived",
    ),
    # sockets
    "connection-refused": Fault(
        server="refused", error=APIConnectionError, attempts=None, cause=httpx.ConnectError
    ),
    "closed-right-after-accept": Fault(
        server="hangup", error=APIConnectionError, attempts=3, match="could not reach"
    ),
}


def test_the_default_response_limit_is_a_few_mib() -> None:
    assert MiB <= LIMIT <= 16 * MiB
    with Client(transport=httpx.MockTransport(lambda request: httpx.Response(500))) as client:
        assert client._config.max_response_bytes == LIMIT


@pytest.fixture(params=["Client", "AsyncClient"])
def kind(request: pytest.FixtureRequest) -> Kind:
    """Each test runs with both clients."""
    return "Client" if request.param == "Client" else "AsyncClient"


@contextlib.asynccontextmanager
async def serving(fault: Fault) -> AsyncIterator[tuple[str, Callable[[], int], FakePizzaGPT]]:
    """The fault's server: its URL, what it counts (requests or connections), and the fake."""
    fake = FakePizzaGPT(secret=SECRET)
    fake.script(*fault.script)
    if fault.server == "fake":
        async with fake.serve_async() as server:
            yield server.url, lambda: fake.calls, fake
    elif fault.server == "refused":
        with refused_url() as url:
            yield url, lambda: 0, fake
    else:
        with RawServer(fault.server) as raw:
            yield raw.url, lambda: raw.connections, fake
            if fault.server == "endless":
                # The client stopped reading at the limit: the server could send no more than
                # that plus what the kernel's buffers hold, far from its 64 MiB.
                assert 0 < raw.sent < LIMIT + 16 * MiB


@pytest.mark.anyio
@pytest.mark.parametrize("name", FAULTS)
async def test_every_fault_ends_typed_in_time_with_no_connection_in_use(
    kind: Kind, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    fault = FAULTS[name]
    async with AsyncExitStack() as stack:
        url, seen, fake = await stack.enter_async_context(serving(fault))
        client = make_client(kind, url, **{**BASE, **fault.options})
        stack.push_async_callback(close, client)
        stack.enter_context(caplog.at_level(logging.DEBUG, logger="pizzagpt_sdk"))
        outcome: str | PizzaGPTError
        start = time.monotonic()
        try:
            outcome = await ask(client)
        except PizzaGPTError as error:
            outcome = error
        elapsed = time.monotonic() - start

        assert elapsed < fault.within + SLACK, f"took {elapsed:.2f} s"
        if fault.error is None:
            assert outcome == fault.answer
        else:
            assert isinstance(outcome, PizzaGPTError), f"answered {outcome!r}"
            assert type(outcome) is fault.error, repr(outcome)
            if fault.match:
                assert re.search(fault.match, str(outcome)), str(outcome)
            if fault.cause is not None:
                assert isinstance(outcome.__cause__, fault.cause), repr(outcome.__cause__)
            shown = [text for e in causes(outcome) for text in (str(e), repr(e))]
            assert not [text for text in shown if SECRET in text]
        if fault.attempts is not None:
            assert seen() == fault.attempts
        assert fake.pending == 0
        assert connections_in_use(client) == []
        if fault.server == "fake":  # the client still works, on the same server
            assert await ask(client) == FAKE_PREFIX + PROMPT
            assert connections_in_use(client) == []
        messages = [record.getMessage() for record in caplog.records]
        assert not [m for m in messages if SECRET in m or PROMPT in m]
    gc.collect()  # a finalizer's warning fails the test here (filterwarnings = error)


# Concurrency: the SDK's own pool keeps the connections a burst of calls opened.

BURST = 40  # more calls at once than httpx keeps alive by default (20)


@pytest.mark.anyio
async def test_a_second_burst_of_calls_reuses_the_first_bursts_connections(
    kind: Kind, monkeypatch: pytest.MonkeyPatch
) -> None:
    # NO_PROXY alone leaves AsyncClient's small pools in place.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    fake = FakePizzaGPT(secret=SECRET)
    async with fake.serve_async() as server:
        cls = Client if kind == "Client" else AsyncClient
        client = cls(base_url=server.url, secret=SECRET, timeout=10)
        try:
            for _ in range(2):
                # Each answer takes long enough that the whole burst is in flight at once.
                fake.script(*[Reply.answer("x").delay(0.5)] * BURST)
                answers = client.map([PROMPT] * BURST, concurrency=BURST)
                if not isinstance(answers, list):
                    answers = await answers
                assert [answer.text for answer in answers] == ["x"] * BURST
            # A pool that closed what it kept past some number (httpx keeps 20 by default) would
            # open them again for the second burst: over TLS, a handshake per call. A pool that
            # keeps them never holds more than the most calls ever in flight at once, BURST.
            # (On a loaded machine a burst may not have all its calls in flight at once.)
            assert server.connections <= BURST
            assert connections_in_use(client) == []
        finally:
            await close(client)


# Cancellation: at any point, by any means, nothing is left in use and nothing warns.

# Where the call is when it is cancelled: each fault lasts far longer than CANCEL_AFTER.
POINTS: dict[str, Reply] = {
    "waiting-for-headers": Reply.answer("late").delay(FOREVER),
    "mid-body": Reply.answer("x" * 2000).trickle(10, interval=0.02),
    "retry-sleep": Reply.status(503).retry_after(30),
}


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["move_on_after", "fail_after", "task-group"])
@pytest.mark.parametrize("point", POINTS)
async def test_cancelling_an_async_call_anywhere_leaves_nothing_in_use(
    point: str, how: str
) -> None:
    fake = FakePizzaGPT(secret=SECRET)
    fake.script(POINTS[point])
    async with fake.serve_async() as server:
        client = make_client("AsyncClient", server.url, timeout=FOREVER / 2, max_retries=1)
        assert isinstance(client, AsyncClient)
        try:
            # No `async with`: the stream is abandoned mid-call and then dropped unclosed.
            stream = client.stream(PROMPT)

            async def consume(stream: AsyncStream) -> None:
                async for _ in stream:
                    pass  # pragma: no cover - the call never finishes

            start = time.monotonic()
            if how == "move_on_after":
                with anyio.move_on_after(CANCEL_AFTER) as scope:
                    await consume(stream)
                assert scope.cancelled_caught
            elif how == "fail_after":
                with pytest.raises(TimeoutError), anyio.fail_after(CANCEL_AFTER):
                    await consume(stream)
            else:
                async with anyio.create_task_group() as group:
                    group.start_soon(consume, stream)
                    await wait_for(lambda: fake.calls == 1)
                    await anyio.sleep(CANCEL_AFTER)
                    group.cancel_scope.cancel()
            assert time.monotonic() - start < CANCEL_AFTER + SLACK
            assert fake.calls == 1  # cancelled where intended: no retry was sent
            del stream
            gc.collect()
            assert connections_in_use(client) == []
            assert await ask(client) == FAKE_PREFIX + PROMPT
            assert connections_in_use(client) == []
        finally:
            await client.aclose()
    gc.collect()


@pytest.mark.anyio
async def test_breaking_out_of_or_dropping_a_stream_leaves_nothing_in_use(kind: Kind) -> None:
    fake = FakePizzaGPT(secret=SECRET)
    fake.script(Reply.answer("first"), Reply.answer("second"))
    async with fake.serve_async() as server:
        client = make_client(kind, server.url)
        try:
            # Dropped before it was iterated: nothing is sent.
            client.stream(PROMPT)
            gc.collect()
            assert fake.calls == 0
            # Left after its first event, with the FinishReason still to come.
            assert await first_event(client) == "first"
            gc.collect()
            assert connections_in_use(client) == []
            assert await ask(client) == "second"
            assert fake.calls == 2
            assert server.connections == 1  # the connection went back to the pool each time
        finally:
            await close(client)
    gc.collect()


async def first_event(client: Client | AsyncClient) -> str | FinishReason:
    """Break out of a stream after its first event, dropping it unclosed."""
    if isinstance(client, AsyncClient):
        async for event in client.stream(PROMPT):
            return event
    else:
        for event in client.stream(PROMPT):
            return event
    raise AssertionError("the stream yielded nothing")  # pragma: no cover


@contextlib.contextmanager
def ctrl_c_when(ready: Callable[[], bool], after: float) -> Iterator[None]:
    """Send SIGINT to the main thread `after` seconds once `ready()`, as Ctrl+C in a terminal does.

    A real signal, so that a blocking read or sleep is interrupted where it waits, and Python's
    default handler (installed for the while: a shell may start pytest with SIGINT ignored)
    raises KeyboardInterrupt there.
    """
    main = threading.main_thread().ident
    assert main is not None
    leaving = threading.Event()
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)

    def interrupt() -> None:
        deadline = time.monotonic() + 10
        while not ready() and time.monotonic() < deadline and not leaving.is_set():
            time.sleep(0.005)
        if not leaving.wait(after):
            signal.pthread_kill(main, signal.SIGINT)

    thread = threading.Thread(target=interrupt, daemon=True)
    thread.start()
    try:
        yield
    finally:
        leaving.set()
        thread.join(10)
        signal.signal(signal.SIGINT, handler)


@pytest.mark.skipif(not hasattr(signal, "pthread_kill"), reason="needs POSIX signals")
@pytest.mark.parametrize("point", POINTS)
def test_ctrl_c_anywhere_in_a_sync_call_leaves_nothing_in_use(point: str) -> None:
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("KeyboardInterrupt is delivered to the main thread")  # pragma: no cover
    fake = FakePizzaGPT(secret=SECRET)
    fake.script(POINTS[point])
    with fake.serve() as server:
        client = make_client("Client", server.url, timeout=FOREVER / 2, max_retries=1)
        assert isinstance(client, Client)
        with client:
            stream = client.stream(PROMPT)
            start = time.monotonic()
            with (
                pytest.raises(KeyboardInterrupt),
                ctrl_c_when(lambda: fake.calls == 1, after=CANCEL_AFTER),
            ):
                for _ in stream:
                    pass  # pragma: no cover - the call never finishes
            assert time.monotonic() - start < CANCEL_AFTER + SLACK
            assert fake.calls == 1
            del stream
            gc.collect()
            assert connections_in_use(client) == []
            assert client.ask(PROMPT).text == FAKE_PREFIX + PROMPT
            assert connections_in_use(client) == []
    gc.collect()


INTERRUPTED_CALLS = 300


def blocking_pool_in_use(client: Client) -> list[str]:
    """`connections_in_use` for a `Client` on the httpx or httpx2 engine (httpcore's pool)."""
    pool = client._engine._http._transport._pool  # type: ignore[attr-defined]
    in_use = [repr(c) for c in pool.connections if not (c.is_idle() or c.is_closed())]
    return in_use + [f"a request waiting for a connection: {r!r}" for r in pool._requests]


# An interrupt that lands while the standard library's `socket.create_connection()`, or httpcore's
# connect right after it, holds a new socket loses it before anything could close it: the
# garbage collector closes it, with Python's own ResourceWarning. Nothing stays open or in use.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.skipif(not hasattr(signal, "setitimer"), reason="needs POSIX interval timers")
@pytest.mark.parametrize("engine", ["httpx", "httpx2", "curl_cffi"])
def test_ctrl_c_at_random_points_of_many_sync_calls_leaves_nothing_in_use(engine: str) -> None:
    """Hundreds of calls, each interrupted by a `KeyboardInterrupt` after a random delay (seeded,
    and scaled to how long a call takes here): in the connect, the send, the wait,
    the body, the close, the SDK's own code, or not at all. Afterwards no connection is in use,
    and the client answers each later call with its own answer (no raw h11 error, no hang)."""
    pytest.importorskip(engine)
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("signals are delivered to the main thread")  # pragma: no cover
    coverage = sys.modules.get("coverage")
    if coverage is not None and coverage.Coverage.current() is not None:
        # Under coverage an interrupt can land in the tracer's own lock, held for good then
        # (the coverage run hung so): the Pythons that run without coverage run this test.
        pytest.skip("an interrupt could land inside coverage's tracer")
    rng = random.Random(20261130)
    # The timer interrupts the call, never the test's own bookkeeping. A plain flag: a handler
    # that took a lock could land inside the very code that holds it, and wait for ever.
    armed = [False]

    def interrupt(signum: int, frame: object) -> None:
        if armed[0]:
            armed[0] = False
            raise KeyboardInterrupt

    outcomes: Counter[str] = Counter()
    previous = signal.signal(signal.SIGALRM, interrupt)
    fake = FakePizzaGPT(secret=SECRET)
    try:
        with fake.serve() as server:
            client = make_client("Client", server.url, engine=engine, timeout=5, max_retries=0)
            assert isinstance(client, Client)
            with client:
                # Delays up to about twice what a call takes on this machine now (calls after
                # an interrupt open a new connection: longer), so that about half the calls are
                # interrupted, at points spread over the whole call, however busy the machine.
                start = time.monotonic()
                for n in range(10):
                    client.ask(f"warm-up {n}")
                longest = 2 * (time.monotonic() - start) / 10
                for n in range(INTERRUPTED_CALLS):
                    prompt = f"{PROMPT} {n}"
                    try:
                        armed[0] = True
                        signal.setitimer(signal.ITIMER_REAL, rng.uniform(0, longest))
                        answer = client.ask(prompt).text
                        armed[0] = False
                        assert answer == FAKE_PREFIX + prompt
                        outcomes["answered"] += 1
                        longest *= 0.95
                    except KeyboardInterrupt:
                        outcomes["interrupted"] += 1
                        longest *= 1.05
                    finally:
                        armed[0] = False
                        signal.setitimer(signal.ITIMER_REAL, 0)
                # Both happened often: the interrupts landed all along the calls.
                assert min(outcomes.values()) > INTERRUPTED_CALLS // 10, outcomes
                if engine != "curl_cffi":  # curl's pool is in C, out of sight
                    assert blocking_pool_in_use(client) == []
                for n in range(10):
                    assert client.ask(f"after {n}").text == FAKE_PREFIX + f"after {n}"
                if engine != "curl_cffi":
                    assert blocking_pool_in_use(client) == []
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    gc.collect()


@pytest.mark.parametrize("engine", ["httpx", "httpx2", "curl_cffi"])
@pytest.mark.parametrize("where", ["as send() returns", "as close() begins"])
def test_ctrl_c_between_the_engine_and_the_drive_loop_leaves_nothing_in_use(
    engine: str, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The two points where an interrupt could cut a response off from whoever must close it
    (the random test above met the first on Python 3.10 in CI: a connection marked active for
    good; `interrupt_sweep.py` finds it on httpx, and nothing once fixed). As `send()` returns, on
    Python 3.10, which runs signal handlers right after each call: the drive loop never
    receives the response. As the response's `close()` begins, before it does anything, for
    a body not read to its end (here one over `max_response_bytes`)."""
    pytest.importorskip(engine)
    fake = FakePizzaGPT(secret=SECRET)
    fake.script(Reply.answer("a" * 500_000).trickle(16_384, 0.001))
    with fake.serve() as server:
        client = make_client(
            "Client", server.url, engine=engine, timeout=5, max_retries=0, max_response_bytes=1024
        )
        assert isinstance(client, Client)
        with client:
            engine_class = type(client._engine)
            send = engine_class.send
            closes: list[object] = []

            def send_then_interrupt(self: Any, *args: Any) -> Any:
                response = send(self, *args)
                if where == "as send() returns":
                    raise KeyboardInterrupt
                close = type(response).close

                def interrupted_close(this: Any) -> None:
                    closes.append(this)
                    if len(closes) == 1:
                        raise KeyboardInterrupt
                    close(this)

                monkeypatch.setattr(type(response), "close", interrupted_close)
                return response

            monkeypatch.setattr(engine_class, "send", send_then_interrupt)
            with pytest.raises(KeyboardInterrupt):
                client.ask(PROMPT)
            monkeypatch.undo()
            if where == "as close() begins":
                assert len(closes) == 2  # the drive loop closed it once more, for good
            if engine != "curl_cffi":  # curl's pool is in C, out of sight
                assert blocking_pool_in_use(client) == []
            fake.script(Reply.answer("after"))
            assert client.ask(PROMPT).text == "after"
            if engine != "curl_cffi":
                assert blocking_pool_in_use(client) == []


# TLS: the SDK's own clients verify certificates and host names, with no network.


def ssl_contexts(client: Client | AsyncClient) -> list[ssl.SSLContext]:
    """The TLS contexts of the client's transport and of every proxy mount."""
    transports = [httpx_client_of(client)._transport, *httpx_client_of(client)._mounts.values()]
    contexts = []
    for transport in transports:
        if isinstance(transport, SpreadTransport):  # AsyncClient's: each small pool it makes
            transport = transport._new_pool()
        assert isinstance(transport, (httpx.HTTPTransport, httpx.AsyncHTTPTransport))
        context = transport._pool._ssl_context
        assert context is not None
        contexts.append(context)
    return contexts


@pytest.mark.anyio
@pytest.mark.parametrize("cls", [Client, AsyncClient])
@pytest.mark.parametrize("proxy", [None, "http://127.0.0.1:9"])
async def test_the_sdks_own_pool_verifies_tls_by_default(
    cls: type[Client] | type[AsyncClient], proxy: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if proxy is not None:
        monkeypatch.setenv("HTTPS_PROXY", proxy)  # from the environment: trust_env
    client = cls()
    try:
        contexts = ssl_contexts(client)
        assert len(contexts) == (1 if proxy is None else 2)
        for context in contexts:
            assert context.verify_mode == ssl.CERT_REQUIRED
            assert context.check_hostname
            assert context.cert_store_stats()["x509_ca"] > 0  # a CA bundle is loaded
        if proxy is not None:
            [(pattern, _)] = httpx_client_of(client)._mounts.items()
            assert pattern.pattern == "https://"
    finally:
        await close(client)
