"""Promises that hold whatever the server sends or withholds, and whenever the client is closed,
on every engine of each world (issue 12, items 2 and 5).

The server is a raw socket server written here, on 127.0.0.1, which controls every byte and
sees when the client hangs up: that is how "nothing left in use" is checked alike on every
engine, by the client closing every connection it opened. (The testing kit's `FakeServer`
sleeps through `Reply.delay()` without watching its socket, so it cannot tell.)
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Literal

import anyio
import pytest

from pizzagpt_sdk import APITimeoutError, AsyncClient, Client, ClientClosedError, PizzaGPTError

from ._socket_server import SocketServer
from .conftest import MakeSubject, Subject, wait_for_sync

if TYPE_CHECKING:
    pass

pytestmark = pytest.mark.anyio

# What a call may take beyond its bound on a busy, shared 2-core machine.
SLACK = 1.5
# Each byte well within the read timeout: no single wait ever runs out.
TRICKLE_INTERVAL = 0.2
TIMEOUT = 1.0
# How long the server trickles before it gives up: far past any bound below.
TRICKLE_FOR = 10.0
DEADLINE = 2.0
# When close() lands: once the server has the request, well before anything could end the call.
CLOSE_AFTER = 0.3

Mode = Literal["trickle-head", "trickle-body", "silent", "503"]


class HoldingServer(SocketServer):
    """An HTTP server on 127.0.0.1 that holds every call as long as the client lets it.

    Modes:
        trickle-head: the status line and a long header block, one byte every `interval` s.
        trickle-body: the head at once, then a long body, one byte every `interval` s.
        (Both for 10 s at most, then the server hangs up.)
        silent: reads the request, never answers.
        503: answers `503` with `Retry-After: 30` on a kept-alive connection, then waits.

    `requests` counts the requests read; `open` the connections the client has not closed.
    """

    def __init__(self, mode: Mode, interval: float = TRICKLE_INTERVAL) -> None:
        super().__init__()
        self.mode = mode
        self.interval = interval
        self.requests = 0
        self.closed_by_client = 0

    @property
    def open(self) -> int:
        with self.lock:
            return self.connections - self.closed_by_client

    def serve(self, connection: socket.socket) -> None:
        connection.settimeout(0.05)
        try:
            self._hold(connection)
        except OSError:
            if self.stopping.is_set():
                return  # shut down as the test ended, not the client's doing
        else:
            if self.stopping.is_set():
                return  # the test is over, not the client's doing
        with self.lock:
            self.closed_by_client += 1

    def _receive(self, connection: socket.socket, within: float = 3600.0) -> bytes | None:
        """Bytes from the client; `b""` when it hung up; `None` when the server stops or
        nothing came `within` seconds."""
        ends = time.monotonic() + within
        while not self.stopping.is_set() and time.monotonic() < ends:
            try:
                return connection.recv(65536)
            except TimeoutError:
                continue
        return None

    def _hold(self, connection: socket.socket) -> None:
        """Serve the connection until the client hangs up (return, or OSError) or the test ends."""
        request = b""
        while b"\r\n\r\n" not in request:
            data = self._receive(connection)
            if not data:
                return
            request += data
        with self.lock:
            self.requests += 1
        if self.mode == "503":
            connection.sendall(
                b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
                b"retry-after: 30\r\ncontent-length: 2\r\n\r\n{}"
            )
        if self.mode in ("503", "silent"):
            while (data := self._receive(connection)) is not None:
                if not data:
                    return
            return
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        if self.mode == "trickle-head":
            trickled = head + b"x-trickle: " + b"a" * 100_000
        else:
            connection.sendall(head + b"content-length: 100000\r\n\r\n")
            trickled = b'{"content": "' + b"x" * 99_000
        # Until the client hangs up, or for TRICKLE_FOR seconds: then the server hangs up,
        # which is how the SDK's calls ended before the deadline held (APIConnectionError).
        trickled = trickled[: int(TRICKLE_FOR / self.interval)]
        for byte in trickled:
            # Watch the socket between bytes: a client that hangs up is seen at once.
            if self._receive(connection, within=self.interval) == b"" or self.stopping.is_set():
                return
            connection.sendall(bytes([byte]))

    async def wait_until_all_closed(self, timeout: float) -> None:
        """Wait until the client has closed every connection it opened (an async one closes
        its sockets in the event loop: this wait must not block it)."""
        deadline = time.monotonic() + timeout
        while self.open and time.monotonic() < deadline:
            await anyio.sleep(0.01)
        assert self.open == 0, f"{self.open} of {self.connections} connections still open"


@contextlib.contextmanager
def holding(mode: Mode, interval: float = TRICKLE_INTERVAL) -> Iterator[HoldingServer]:
    with HoldingServer(mode, interval) as server:
        yield server


async def outcome_of(client: Subject) -> BaseException | None:
    try:
        await client.ask("Hi")
    except PizzaGPTError as error:
        return error
    return None  # pragma: no cover - the server never answers


# Item 2: the deadline ends the call, whatever the server sends or withholds.


@pytest.mark.parametrize(
    ("mode", "interval", "timeout", "deadline"),
    [
        # One header byte every 0.2 s: each read well within its 1 s timeout, forever.
        ("trickle-head", TRICKLE_INTERVAL, TIMEOUT, DEADLINE),
        # One body byte every 2.9 s, each within the read timeout (5 s, capped at 3 s by the
        # deadline when the request is sent): a read that starts at 2.9 s must not last until
        # the next byte, at 5.8 s.
        ("trickle-body", 2.9, 5.0, 3.0),
    ],
)
async def test_a_trickling_server_cannot_hold_a_call_past_its_deadline(
    make_client: MakeSubject, mode: Mode, interval: float, timeout: float, deadline: float
) -> None:
    with holding(mode, interval) as server:
        client = make_client(base_url=server.url, timeout=timeout, deadline=deadline)
        started = time.monotonic()
        error = await outcome_of(client)
        elapsed = time.monotonic() - started
        assert isinstance(error, APITimeoutError), repr(error)
        assert elapsed < deadline + SLACK, f"took {elapsed:.2f} s"
        # The half-read response cannot be reused: its connection is closed, not kept.
        await server.wait_until_all_closed(SLACK)


# Item 5: closing a client ends its calls in flight with ClientClosedError, promptly.


@pytest.mark.parametrize("point", ["waiting-for-the-answer", "sleeping-before-a-retry"])
async def test_closing_a_client_ends_its_calls_in_flight(
    make_client: MakeSubject, point: str, request: pytest.FixtureRequest
) -> None:
    mode: Mode = "silent" if point == "waiting-for-the-answer" else "503"
    # curl cannot stop a transfer from another thread: a blocking call waiting for an answer
    # ends when its transfer does, within its timeout (docs/reliability.md). Every other wait
    # is long: only close() can end it in time.
    curl_waits = request.node.callspec.params["make_client"] == "Client-curl_cffi"
    timeout = TIMEOUT if curl_waits and mode == "silent" else 5 * TIMEOUT
    bound = timeout if curl_waits and mode == "silent" else CLOSE_AFTER
    with holding(mode) as server:
        client = make_client(base_url=server.url, timeout=timeout, deadline=60, max_retries=1)
        started = time.monotonic()
        if client.is_async:
            error = await close_async_client_in_flight(client, server)
        else:
            error = await anyio.to_thread.run_sync(close_client_in_flight, client, server)
        elapsed = time.monotonic() - started
        assert type(error) is ClientClosedError, repr(error)
        assert elapsed < bound + SLACK, f"took {elapsed:.2f} s"
        assert server.requests == 1  # ended where intended: no retry was sent
        assert client.client.is_closed
        await server.wait_until_all_closed(SLACK)
        with pytest.raises(ClientClosedError, match="closed"):
            await client.ask("Hi")


def close_client_in_flight(client: Subject, server: HoldingServer) -> BaseException | None:
    """Run a blocking call in this thread, which lives on (what it holds must be released),
    and close the client from another one once the call waits."""
    blocking = client.client
    assert isinstance(blocking, Client)

    def close_once_waiting() -> None:
        wait_for_sync(lambda: server.requests == 1, timeout=10.0)
        time.sleep(CLOSE_AFTER)
        blocking.close()

    closer = threading.Thread(target=close_once_waiting, daemon=True)
    closer.start()
    try:
        blocking.ask("Hi")
    except BaseException as error:
        return error
    finally:
        closer.join(10)
    return None  # pragma: no cover - the server never answers


async def close_async_client_in_flight(
    client: Subject, server: HoldingServer
) -> BaseException | None:
    """Run an async call in a task and close the client from this one once it waits."""
    assert isinstance(client.client, AsyncClient)
    outcome: list[BaseException | None] = []

    async def call() -> None:
        try:
            await client.ask("Hi")
            outcome.append(None)  # pragma: no cover - the server never answers
        except Exception as error:
            outcome.append(error)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as group:
            group.start_soon(call)
            while server.requests < 1:
                await anyio.sleep(0.01)
            await anyio.sleep(CLOSE_AFTER)
            await client.client.aclose()
    return outcome[0]


# The same, through the pool a blocking Client builds for itself (make_client's clients get
# the testing kit's transport): the network backend must be in that pool too, proxies or not.


@pytest.mark.usefixtures("no_proxy_env")
@pytest.mark.parametrize("engine", ["httpx", "httpx2"])
@pytest.mark.parametrize("proxy_env", [False, True])
def test_the_sdks_own_blocking_pool_holds_the_deadline_and_wakes_on_close(
    engine: str, proxy_env: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip(engine)
    if proxy_env:  # a proxy mount, which 127.0.0.1 bypasses: the default pool still serves it
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with (
        holding("trickle-head") as server,
        Client(base_url=server.url, engine=engine, timeout=TIMEOUT, deadline=DEADLINE) as client,
    ):
        started = time.monotonic()
        with pytest.raises(APITimeoutError, match="deadline of 2 s ran out"):
            client.ask("Hi")
        assert time.monotonic() - started < DEADLINE + SLACK
        anyio.run(server.wait_until_all_closed, SLACK)
    with holding("silent") as server:
        client = Client(base_url=server.url, engine=engine, timeout=5 * TIMEOUT, max_retries=1)
        started = time.monotonic()
        error = close_client_in_flight(Subject(client), server)
        assert type(error) is ClientClosedError, repr(error)
        assert time.monotonic() - started < CLOSE_AFTER + SLACK
        anyio.run(server.wait_until_all_closed, SLACK)


# The async drive loop's waits: on asyncio one timer (a watchdog) ends every wait of a client at
# its own time; on trio, an anyio cancel scope per wait.


@pytest.mark.usefixtures("no_proxy_env")
async def test_calls_in_flight_at_once_each_end_at_their_own_deadline() -> None:
    # Started in this order, 0.1 s apart: the watchdog must move its timer earlier for the
    # second, and on to the later ones after it goes off, cancelling only the calls whose
    # time is up. The server trickles its header block: no read timeout ever runs out.
    deadlines = [2.4, 0.8, 1.6]
    ended: dict[float, float] = {}
    with holding("trickle-head") as server:
        async with AsyncClient(base_url=server.url, timeout=TIMEOUT, max_retries=0) as client:

            async def call(deadline: float) -> None:
                started = time.monotonic()
                with pytest.raises(APITimeoutError, match=f"deadline of {deadline:g} s ran out"):
                    await client.ask("Hi", deadline=deadline)
                ended[deadline] = time.monotonic() - started

            async with anyio.create_task_group() as group:
                for deadline in deadlines:
                    group.start_soon(call, deadline)
                    await anyio.sleep(0.1)
    assert sorted(ended, key=ended.__getitem__) == sorted(deadlines), ended
    for deadline, elapsed in ended.items():
        assert deadline <= elapsed < deadline + SLACK, f"deadline {deadline}: {elapsed:.2f} s"


@pytest.mark.usefixtures("no_proxy_env")
async def test_a_cancellation_from_outside_goes_through_the_calls_wait() -> None:
    # The caller's own cancel scope ends the call, as a cancellation (not a timeout, not an
    # error), and leaves the task and the client as they were: the next call keeps its deadline.
    with holding("trickle-head") as server:
        async with AsyncClient(base_url=server.url, timeout=TIMEOUT, deadline=30) as client:
            with anyio.move_on_after(0.3) as scope:
                await client.ask("Hi")
            assert scope.cancelled_caught
            started = time.monotonic()
            with pytest.raises(APITimeoutError, match=r"deadline of 0\.5 s ran out"):
                await client.ask("Hi", deadline=0.5)
            assert time.monotonic() - started < 0.5 + SLACK
            await anyio.sleep(0)  # a cancellation left pending on the task would land here
