"""What every engine must do over real sockets, each test run on every engine of each world.

tests/test_clients.py holds the protocol's behaviours (answers, errors, retries); this file the
transport's: connections kept and dropped, timeouts, TLS, the library's errors as causes,
forks, and choosing an engine. The server is the testing kit's `FakeServer` on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any, Literal

import anyio
import pytest

from pizzagpt_sdk import (
    APIConnectionError,
    APITimeoutError,
    AsyncClient,
    Client,
    InternalServerError,
    InvalidResponseError,
    InvalidTypeError,
    InvalidValueError,
    RetryPolicy,
    Timeout,
    UsageError,
)
from pizzagpt_sdk.core import Request
from pizzagpt_sdk.engines import AsyncEngine, Engine, TransportError
from pizzagpt_sdk.testing import FakePizzaGPT, FakeServer, Reply

from ._socket_server import SocketServer
from .conftest import MakeSubject, Subject, wait_for

pytestmark = pytest.mark.anyio

NO_JITTER = RetryPolicy(jitter=0)
LIBRARIES = {"httpx": "httpx", "httpx2": "httpx2", "aiohttp": "aiohttp", "curl_cffi": "curl_cffi"}
# What a call may take beyond its timeout or deadline on a busy 2-core machine.
SLACK = 1.5


@pytest.fixture
def refused_url() -> str:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def library_of(error: BaseException | None) -> str:
    """The top-level module of an exception's class: which library raised it."""
    assert error is not None
    return type(error).__module__.split(".")[0]


def expected_library(subject: Subject) -> set[str]:
    """Where the engine's errors may come from: its library, or asyncio's and the OS's, which
    aiohttp lets through for timeouts and torn-down sockets."""
    library = LIBRARIES[subject.client.engine]
    return {library, "asyncio", "builtins"} if library == "aiohttp" else {library}


# Connections


async def test_one_connection_serves_call_after_call(client: Subject, served: FakeServer) -> None:
    for n in range(5):
        assert (await client.ask(f"Hi {n}")).text.endswith(f"Hi {n}")
    assert served.connections == 1  # kept alive and reused: not one per call


async def test_concurrent_calls_share_the_pool(client: Subject, served: FakeServer) -> None:
    answers = await client.map([f"Hi {n}" for n in range(8)], concurrency=4)
    assert [answer.text.rsplit(" ", 1)[-1] for answer in answers] == [str(n) for n in range(8)]
    assert served.connections <= 4


async def test_max_connections_bounds_the_pool(
    make_client: MakeSubject, served: FakeServer, served_fake: FakePizzaGPT
) -> None:
    client = make_client(max_connections=2)
    if client.client.engine == "curl_cffi" and not client.is_async:
        pytest.skip("curl_cffi's blocking session keeps a curl handle per thread, not a pool")
    served_fake.script(*[Reply.answer("ok").delay(0.05)] * 6)
    assert len(await client.map(["Hi"] * 6, concurrency=6)) == 6
    assert served.connections <= 2


async def test_a_body_over_the_limit_is_refused_and_its_connection_dropped(
    make_client: MakeSubject, served: FakeServer, served_fake: FakePizzaGPT
) -> None:
    client = make_client(max_response_bytes=2048)
    # Beyond what any engine reads past the limit, so that every one gives up mid-body.
    served_fake.script(Reply.answer("x" * 200_000).trickle(10_000, interval=0.001))
    with pytest.raises(InvalidResponseError, match="max_response_bytes"):
        await client.ask("Hi")
    assert (await client.ask("Hi")).text  # on a fresh connection: the broken one was closed
    assert served.connections == 2


async def test_an_error_body_is_read_no_further_than_needed(
    client: Subject, served_fake: FakePizzaGPT, sleeps: list[float]
) -> None:
    served_fake.script(Reply.status(503, "overloaded " * 8000), Reply.answer("at last"))
    assert (await client.ask("Hi")).text == "at last"  # the 88 kB error body was cut short
    assert len(sleeps) == 1


async def test_a_stream_closed_early_frees_its_connection(
    client: Subject, served_fake: FakePizzaGPT
) -> None:
    served_fake.script(Reply.answer("slowly " * 50).trickle(16, interval=0.01))
    stream = client.client.stream("Hi")
    if isinstance(stream, Iterator):
        with stream:
            next(stream)
    else:
        async with stream:
            await stream.__anext__()
    for _ in range(3):  # had the connection stayed busy, a small pool would run dry
        assert (await client.ask("Hi")).text


async def test_a_cancelled_call_drops_its_connection(
    make_client: MakeSubject, served: FakeServer, served_fake: FakePizzaGPT
) -> None:
    client = make_client()
    if not client.is_async:
        pytest.skip("a blocking call cannot be cancelled")
    served_fake.script(Reply.answer("slowly " * 50).trickle(16, interval=0.02))
    with anyio.move_on_after(0.1) as scope:
        await client.ask("Hi")  # cancelled mid-body
    assert scope.cancelled_caught
    assert (await client.ask("Hi")).text  # on a new connection: the half-read one was closed
    assert served.connections == 2


class RepeatingServer(SocketServer):
    """A raw HTTP/1.1 server on 127.0.0.1 that sends every response twice: in the same TCP
    segment (`"same-segment"`), or in a second one once the test has the answer and calls
    `send_extra()` (`"separate-segment"`); or that sends its status line again, alone, that way
    (`"part-later"`); or what `trailer` says.

    The second copy was never asked for: a client that reads it as the answer to its next
    request on that connection gives one call another call's answer (a part of one, a broken
    answer). It answers `{"content": "answer to <question>"}` and counts connections and the
    extra bytes it sent (`extras_sent`, once per response).

    A segment of its own waits for the test, not for a while: sent a few milliseconds after
    the response, it can reach a loaded client before the client has read the response, and
    the two are then read at once, which is the same-segment case (aiohttp drops what follows
    a response in what it reads at once, and keeps the connection).
    """

    def __init__(
        self,
        mode: Literal["same-segment", "separate-segment", "part-later"],
        trailer: Callable[[bytes], tuple[bytes, bool]] | None = None,
    ) -> None:
        super().__init__()
        self.mode = mode
        #: What follows a response, and whether in a segment of its own: by default a copy, or
        #: for "part-later" its first line, alone.
        self.trailer = trailer or (
            (lambda response: (response.split(b"\r\n")[0] + b"\r\n", True))
            if mode == "part-later"
            else (lambda response: (response, mode == "separate-segment"))
        )
        self.extras_sent = 0
        # Responses sent, and how many of them the test has let their extra bytes follow.
        self._responses = 0
        self._released = 0
        self._release = threading.Condition()

    async def send_extra(self) -> None:
        """The test has the last call's answer: let the bytes after it go, if they go in a
        segment of their own, and wait until they have reached the client (once per call,
        whichever way its bytes go). Bytes that come after the next request cannot be told from
        its answer (docs/reliability.md)."""
        with self._release:
            self._released += 1
            released = self._released
            self._release.notify_all()
        await wait_for(lambda: self.extras_sent >= released)
        await anyio.sleep(0.03)  # sent, and given the time to arrive

    def serve(self, connection: socket.socket) -> None:
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        connection.settimeout(0.05)
        buffer = b""
        with contextlib.suppress(OSError):
            while not self.stopping.is_set():
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.lower().split(b"\r\n")
                        if line.startswith(b"content-length:")
                    ),
                    -1,
                )
                if length < 0 or len(rest) < length:
                    try:
                        data = connection.recv(65536)
                    except TimeoutError:
                        continue
                    if not data:
                        return
                    buffer += data
                    continue
                buffer = rest[length:]
                question = json.loads(rest[:length])["question"]
                body = json.dumps({"content": f"answer to {question}"}).encode()
                response = (
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    b"content-length: %d\r\n\r\n%s" % (len(body), body)
                )
                extra, separate = self.trailer(response)
                with self._release:
                    self._responses += 1
                    number = self._responses
                if separate:
                    connection.sendall(response)
                    with self._release:
                        while self._released < number:  # until the client has the answer
                            if self.stopping.is_set():
                                return
                            self._release.wait(0.05)
                    connection.sendall(extra)
                else:
                    connection.sendall(response + extra)
                self.extras_sent += 1


@pytest.mark.parametrize("mode", ["same-segment", "separate-segment", "part-later"])
async def test_a_connection_with_bytes_after_the_response_is_not_reused(
    make_client: MakeSubject,
    mode: Literal["same-segment", "separate-segment", "part-later"],
) -> None:
    with RepeatingServer(mode) as server:
        client = make_client(base_url=server.url, max_retries=0, timeout=5)
        for n in range(4):
            # Every call gets its own answer, never the copy of the one before.
            assert (await client.ask(f"q{n}")).text == f"answer to q{n}"
            await server.send_extra()  # the copy arrives before the next call
        assert server.connections == 4  # no connection was reused with a copy unread


@pytest.mark.parametrize("seed", range(2))
async def test_any_bytes_after_a_response_never_reach_another_call(
    make_client: MakeSubject, seed: int
) -> None:
    # Whatever follows a response (a copy of it, a part of one, a status line, garbage), in its
    # segment or one of its own, chosen at random (seeded): every call gets its own answer.
    # aiohttp alone fails a response followed by garbage in its own segment (its parser drops
    # the whole segment): an error, retried by default, never another call's answer.
    rng = random.Random(seed)

    def trailer(response: bytes) -> tuple[bytes, bool]:
        kind = rng.choice(["copy", "part", "status line", "garbage"])
        if kind == "copy":
            extra = response
        elif kind == "part":
            extra = response[: rng.randrange(1, len(response))]
        elif kind == "status line":
            extra = b"HTTP/1.1 200 OK\r\n"
        else:
            extra = rng.randbytes(rng.randrange(1, 200))
        return extra, rng.random() < 0.5

    with RepeatingServer("same-segment", trailer) as server:
        client = make_client(base_url=server.url, max_retries=0, timeout=5)
        for n in range(6):
            try:
                answer = (await client.ask(f"q{n}")).text
            except APIConnectionError:
                if client.client.engine != "aiohttp":
                    raise
            else:
                assert answer == f"answer to q{n}"
            await server.send_extra()


# Failures: the library's own error is the cause


async def test_a_refused_connection_is_retried_then_raised_with_the_cause(
    make_client: MakeSubject, refused_url: str, sleeps: list[float]
) -> None:
    client = make_client(base_url=refused_url, retry_policy=NO_JITTER)
    with pytest.raises(APIConnectionError, match="could not reach") as caught:
        await client.ask("Hi")
    assert type(caught.value) is APIConnectionError
    assert library_of(caught.value.__cause__) in expected_library(client)
    assert not isinstance(caught.value.__cause__, TransportError)
    assert caught.value.url == f"{refused_url}/api/chatx-completion"
    assert sleeps == [0.5, 1.0]


async def test_a_read_timeout_is_an_api_timeout_error(
    make_client: MakeSubject, served_fake: FakePizzaGPT, sleeps: list[float]
) -> None:
    client = make_client(timeout=0.2, retry_policy=NO_JITTER)
    served_fake.script(*[Reply.answer("late").delay(5)] * 2)
    started = time.monotonic()
    with pytest.raises(APITimeoutError, match="timed out") as caught:
        await client.ask("Hi", max_retries=1)
    assert time.monotonic() - started < 0.4 + SLACK
    assert library_of(caught.value.__cause__) in expected_library(client)
    assert sleeps == [0.5]  # one retry
    # Both requests were sent, but a loaded machine's fake may read the retry after the client
    # has given up on it (CI saw 1 call here).
    await wait_for(lambda: served_fake.calls >= 2)
    assert served_fake.calls == 2


async def test_a_read_timeout_counts_from_the_last_bytes_on_a_kept_connection(
    make_client: MakeSubject, served_fake: FakePizzaGPT
) -> None:
    # A body trickled in pieces 0.1 s apart, each well within a 0.3 s read timeout, arrives
    # whole, however long it takes; then, on the same kept connection and with a far shorter
    # timeout than the call before, a body that stops halfway ends at that timeout (aiohttp's
    # engine keeps one read timer per response and moves it on: a timer left at the longer
    # timeout would not do).
    client = make_client(timeout=0.3, max_retries=0)
    # curl_cffi's one timeout bounds the whole exchange (see its engine): its body is not
    # trickled.
    pieces = 1000 if client.client.engine == "curl_cffi" else 10
    served_fake.script(*[Reply.answer("x" * 60).trickle(pieces, interval=0.1)] * 2)
    assert (await client.ask("Hi")).text == "x" * 60
    assert (await client.ask("Hi", timeout=30)).text == "x" * 60
    served_fake.script(Reply.answer("y" * 60).trickle(40, interval=30))
    started = time.monotonic()
    with pytest.raises(APITimeoutError):
        await client.ask("Hi", timeout=0.2)
    assert time.monotonic() - started < 0.2 + SLACK


async def test_a_kept_connection_idle_past_its_read_timeout_serves_and_times_out_again(
    make_client: MakeSubject, served: FakeServer, served_fake: FakePizzaGPT
) -> None:
    # aiohttp's engine leaves a response's read timer to lapse on the idle connection, not
    # cancelled: idle for longer than the read timeout, the connection must still serve the
    # next call (no timeout fired at it while no read waited), and a stalled body after that
    # must still end at its timeout (a timer made anew once the old one lapsed).
    client = make_client(timeout=0.2, max_retries=0)
    served_fake.script(Reply.answer("first"), Reply.answer("second"))
    assert (await client.ask("Hi")).text == "first"
    await anyio.sleep(0.5)
    assert (await client.ask("Hi")).text == "second"
    assert served.connections == 1
    served_fake.script(Reply.answer("y" * 60).trickle(40, interval=30))
    started = time.monotonic()
    with pytest.raises(APITimeoutError):
        await client.ask("Hi")
    assert time.monotonic() - started < 0.2 + SLACK


@pytest.mark.parametrize("read", [None, 5.0], ids=["no read timeout", "read timeout"])
async def test_a_clean_kept_connection_serves_every_call(
    make_client: MakeSubject, served: FakeServer, served_fake: FakePizzaGPT, read: float | None
) -> None:
    # What closes a connection that received bytes while idle (the tests above) leaves a clean
    # one alone, with a read timeout and without (nor a deadline to cap the reads): one
    # connection serves every call.
    client = make_client(timeout=Timeout(connect=5, read=read, write=5, pool=5), deadline=None)
    served_fake.script(*[Reply.answer(f"a{n}") for n in range(5)])
    assert [(await client.ask("Hi")).text for _ in range(5)] == [f"a{n}" for n in range(5)]
    assert served.connections == 1


async def test_the_deadline_and_a_per_call_timeout_cap_every_wait(
    make_client: MakeSubject, served_fake: FakePizzaGPT
) -> None:
    client = make_client(timeout=100.0)
    served_fake.script(*[Reply.answer("late").delay(5)] * 2)
    started = time.monotonic()
    with pytest.raises(APITimeoutError):
        await client.ask("Hi", deadline=0.3)
    with pytest.raises(APITimeoutError):
        await client.ask("Hi", timeout=0.2, deadline=None, max_retries=0)
    assert time.monotonic() - started < 0.5 + 2 * SLACK


async def test_the_deadline_starts_when_the_stream_is_first_iterated(
    client: Subject, served_fake: FakePizzaGPT
) -> None:
    served_fake.script(Reply.answer("on time").delay(0.1))
    stream = client.client.stream("Hi", deadline=0.8)
    await anyio.sleep(1.0)  # longer than the deadline, before the first step
    events = list(stream) if isinstance(stream, Iterator) else [e async for e in stream]
    assert events[0] == "on time"


async def test_a_connection_broken_mid_body_is_retried_then_raised_with_the_cause(
    client: Subject, served_fake: FakePizzaGPT, sleeps: list[float]
) -> None:
    served_fake.script(Reply.answer("first try " * 20).close_mid_body(), Reply.answer("again"))
    assert (await client.ask("Hi")).text == "again"
    assert len(sleeps) == 1
    served_fake.script(Reply.answer("first try " * 20).close_mid_body())
    with pytest.raises(APIConnectionError, match="broke before the answer") as caught:
        await client.ask("Hi", max_retries=0)
    assert library_of(caught.value.__cause__) in expected_library(client)


async def test_a_server_error_is_retried_on_a_kept_connection(
    client: Subject, served: FakeServer, served_fake: FakePizzaGPT, sleeps: list[float]
) -> None:
    served_fake.script(Reply.status(500), Reply.answer("fine"))
    assert (await client.ask("Hi")).text == "fine"
    assert (len(sleeps), served.connections) == (1, 1)
    served_fake.script(*[Reply.status(500)] * 3)
    with pytest.raises(InternalServerError):
        await client.ask("Hi")


# TLS


@pytest.fixture(scope="module")
def test_ca() -> Any:
    """A certificate authority of our own, and a certificate it issued for 127.0.0.1."""
    trustme = pytest.importorskip("trustme")
    return trustme.CA()


@pytest.fixture
def tls_served(test_ca: Any, no_proxy_env: None, tmp_path: Any) -> Iterator[tuple[FakeServer, str]]:
    """The fake over TLS on 127.0.0.1, and the path of the CA bundle that verifies it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    test_ca.issue_cert("127.0.0.1").configure_cert(context)
    bundle = tmp_path / "ca.pem"
    test_ca.cert_pem.write_to_path(str(bundle))
    with FakeServer(FakePizzaGPT(), ssl_context=context) as server:
        yield server, str(bundle)


def tls_client(make_client: MakeSubject, server: FakeServer, **options: Any) -> Subject:
    # Not served's: make_client's clients default to `served`, over plain HTTP.
    return make_client(base_url=server.url, **options)


async def test_a_ca_bundle_verifies_the_server_and_one_handshake_serves_every_call(
    make_client: MakeSubject, tls_served: tuple[FakeServer, str]
) -> None:
    server, bundle = tls_served
    client = tls_client(make_client, server, verify=bundle)
    for _ in range(20):
        assert (await client.ask("Hi")).text
    assert server.connections == 1  # one TLS handshake for 20 calls


async def test_an_unknown_certificate_is_refused_unless_told_not_to_verify(
    make_client: MakeSubject, tls_served: tuple[FakeServer, str]
) -> None:
    server, _ = tls_served
    refusing = tls_client(make_client, server, max_retries=0)
    with pytest.raises(APIConnectionError, match="could not reach") as caught:
        await refusing.ask("Hi")
    assert "CERTIFICATE" in str(caught.value).upper()
    trusting = tls_client(make_client, server, verify=False)
    assert (await trusting.ask("Hi")).text


async def test_an_ssl_context_is_taken_where_the_library_takes_one(
    make_client: MakeSubject, tls_served: tuple[FakeServer, str], request: pytest.FixtureRequest
) -> None:
    server, bundle = tls_served
    context = ssl.create_default_context(cafile=bundle)
    if request.node.callspec.params["make_client"].endswith("curl_cffi"):
        with pytest.raises(InvalidValueError, match="curl_cffi engine takes verify=True, False or"):
            tls_client(make_client, server, verify=context)
        return
    assert (await tls_client(make_client, server, verify=context).ask("Hi")).text


def test_a_missing_ca_bundle_is_refused_when_the_client_is_built(tmp_path: Any) -> None:
    with pytest.raises(InvalidValueError, match="CA bundle"):
        Client(verify=str(tmp_path / "missing.pem"))


# os.fork(): the child never uses the parent's pooled connections.

FORK_SCRIPT = textwrap.dedent(
    """
    import asyncio
    import os
    import sys

    from pizzagpt_sdk import AsyncClient, Client

    world, engine, url = sys.argv[1:]


    def fork_and_wait(child):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                child()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status


    if world == "Client":
        client = Client(base_url=url, engine=engine, timeout=10)
        client.ask("parent, before the fork")  # one connection, now idle in the pool
        fork_and_wait(lambda: client.ask("child"))
        client.ask("parent, after the fork")
        client.close()
    else:  # the parent keeps its event loop; the child runs one of its own
        client = AsyncClient(base_url=url, engine=engine, timeout=10)
        loop = asyncio.new_event_loop()
        loop.run_until_complete(client.ask("parent, before the fork"))
        fork_and_wait(lambda: asyncio.run(client.ask("child")))
        loop.run_until_complete(client.ask("parent, after the fork"))
        loop.run_until_complete(client.aclose())
        loop.close()
    print("forked")
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork()")
@pytest.mark.parametrize(
    ("world", "engine"),
    [
        ("Client", "httpx"),
        ("Client", "httpx2"),
        ("Client", "curl_cffi"),
        ("AsyncClient", "httpx2"),
        ("AsyncClient", "aiohttp"),
    ],
)
def test_a_forked_child_opens_its_own_connection_and_the_parent_keeps_its_own(
    world: str, engine: str
) -> None:
    pytest.importorskip(LIBRARIES[engine])
    fake = FakePizzaGPT()
    # The script forks in a fresh, single-threaded interpreter: forking pytest, which runs the
    # server's threads, would warn on Python 3.12+.
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    env["NO_PROXY"] = "127.0.0.1"
    with fake.serve() as server:
        result = subprocess.run(
            [sys.executable, "-c", FORK_SCRIPT, world, engine, server.url],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "forked"
        # The parent's first call opened one connection; the child's call opened a second (it
        # would still be one had the child reused the parent's socket); the parent's last call
        # reused its own (three otherwise).
        assert server.connections == 2
    assert [r.prompt for r in fake.requests] == [
        "parent, before the fork",
        "child",
        "parent, after the fork",
    ]


# Choosing an engine


def test_the_engine_is_chosen_by_name_or_by_the_http_client() -> None:
    with Client() as client:
        assert client.engine == "httpx"
    httpx2 = pytest.importorskip("httpx2")
    with Client(engine="httpx2") as client:
        assert (client.engine, repr(client)) == (
            "httpx2",
            "Client(base_url='https://www.pizzagpt.it', engine='httpx2')",
        )
    with httpx2.Client() as own:
        with Client(http_client=own) as client:
            assert client.engine == "httpx2"
        assert not own.is_closed  # never closed by the SDK


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"engine": "requests"}, InvalidValueError, r"engine must be one of \['aiohttp'"),
        ({"engine": 3}, InvalidTypeError, "engine must be one of"),
        ({"engine": "aiohttp"}, UsageError, "async only: use it with AsyncClient"),
        ({"http_client": object()}, InvalidTypeError, "httpx, httpx2, aiohttp or curl_cffi"),
        ({"engine": "curl_cffi", "transport": object()}, InvalidValueError, "httpx engines"),
    ],
)
def test_a_bad_engine_is_refused_when_the_client_is_built(
    kwargs: dict[str, Any], error: type[UsageError], match: str
) -> None:
    with pytest.raises(error, match=match):
        Client(**kwargs)


def test_an_engine_of_the_other_world_is_refused() -> None:
    from pizzagpt_sdk.engines import AsyncHttpxEngine, HttpxEngine

    asynchronous = AsyncHttpxEngine(tls=False)
    with pytest.raises(InvalidTypeError, match="async engine: give it to AsyncClient"):
        Client(engine=asynchronous)  # type: ignore[arg-type]
    anyio.run(asynchronous.aclose)
    blocking = HttpxEngine(tls=False)
    with pytest.raises(InvalidTypeError, match="blocking engine: give it to Client"):
        AsyncClient(engine=blocking)  # type: ignore[arg-type]
    blocking.close()


def test_an_engine_object_carries_its_own_settings(served: FakeServer) -> None:
    pytest.importorskip("curl_cffi")
    from pizzagpt_sdk.engines import CurlCffiEngine

    engine = CurlCffiEngine(impersonate="safari", trust_env=False)
    assert isinstance(engine, Engine)
    with Client(base_url=served.url, engine=engine) as client:
        assert client.engine == "curl_cffi"
        assert client.ask("Hi").text
        with pytest.raises(InvalidValueError, match="to your engine"):
            Client(engine=engine, http_client=object())
    user_agent = served.fake.requests[-1].headers["user-agent"]
    assert "Chrome" in user_agent  # the protocol's own headers win over the browser's


@pytest.mark.parametrize(
    ("engine", "name"),
    [
        ("httpx", "AsyncHttpxEngine"),
        ("httpx2", "AsyncHttpx2Engine"),
        ("aiohttp", "AsyncAiohttpEngine"),
        ("curl_cffi", "AsyncCurlCffiEngine"),
    ],
)
def test_an_engine_shared_by_two_clients_sends_each_its_own_headers(
    served: FakeServer, engine: str, name: str
) -> None:
    # aiohttp's engine makes the first client's headers its session's defaults: a second client
    # with other headers must not send any of the first's.
    pytest.importorskip(LIBRARIES[engine])
    from pizzagpt_sdk import engines

    async def main() -> None:
        shared = getattr(engines, name)(tls=False)
        first = AsyncClient(base_url=served.url, engine=shared, headers={"x-first": "1"})
        second = AsyncClient(base_url=served.url, engine=shared, headers={"x-second": "2"})
        for client in (first, second, first, second):
            assert (await client.ask("Hi")).text
        await shared.aclose()

    anyio.run(main)
    sent = [request.headers for request in served.fake.requests[-4:]]
    assert [h.get("x-first") for h in sent] == ["1", None, "1", None]
    assert [h.get("x-second") for h in sent] == [None, "2", None, "2"]


@pytest.mark.parametrize("engine", ["aiohttp", "curl_cffi"])
def test_an_asyncio_only_engine_says_so_under_trio(engine: str) -> None:
    pytest.importorskip(LIBRARIES[engine])
    trio = pytest.importorskip("trio")

    async def built_inside() -> None:
        AsyncClient(engine=engine)

    made_outside = AsyncClient(base_url="http://127.0.0.1:9", engine=engine)

    async def used_inside() -> None:
        await made_outside.ask("Hi")

    for run in (built_inside, used_inside):
        with pytest.raises(UsageError, match="asyncio only, and this is trio"):
            trio.run(run)
    anyio.run(made_outside.aclose)


@pytest.mark.parametrize(
    ("engine", "extra"),
    [("httpx2", "httpx2"), ("aiohttp", "aiohttp"), ("curl_cffi", "impersonate")],
)
def test_an_engine_whose_extra_is_missing_says_what_to_install(engine: str, extra: str) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules[{LIBRARIES[engine]!r}] = None  # as if not installed
        from pizzagpt_sdk import AsyncClient, UsageError
        try:
            AsyncClient(engine={engine!r})
        except UsageError as error:
            print(error)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    if engine == "httpx2" and sys.version_info < (3, 11):
        assert "needs Python 3.11 or newer: use engine='httpx' here" in result.stdout
    else:
        assert f"pip install 'pizzagpt-sdk[{extra}]'" in result.stdout


def test_every_engine_is_an_engine_of_its_world() -> None:
    from pizzagpt_sdk import engines

    for name in engines.__all__:
        if name.endswith("Engine") and name not in ("Engine", "AsyncEngine"):
            try:
                cls = getattr(engines, name)
            except UsageError:  # its library is not installed
                continue
            base = AsyncEngine if name.startswith("Async") else Engine
            assert issubclass(cls, base), name


# Secrets: never in any text the SDK writes


async def test_no_secret_in_errors_logs_or_repr(
    make_client: MakeSubject, served: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    secret, password = served.fake.secret, "p4ss-IN-URL-91"  # the secret the fake checks
    host = served.url.removeprefix("http://")
    client = make_client(
        base_url=f"http://user:{password}@{host}", secret=secret, retry_policy=NO_JITTER
    )
    # A server that echoes the secret in an error body, twice (then the retries run out).
    served.fake.script(*[Reply.status(503, f"bad secret {secret} for {password}")] * 3)
    with (
        caplog.at_level(logging.DEBUG, logger="pizzagpt_sdk"),
        pytest.raises(InternalServerError) as caught,
    ):
        await client.ask("Hi", max_retries=1)
    error = caught.value
    texts = [str(error), repr(error), error.url, error.body, repr(client.client), caplog.text]
    assert not [text for text in texts if secret in text or password in text]
    assert "***" in error.body
    assert "user:***@" in error.url


class GarblingServer(SocketServer):
    """Answers every request with a status line no library reads."""

    def serve(self, connection: socket.socket) -> None:
        connection.settimeout(5)
        request = b""
        with contextlib.suppress(OSError):  # the client hung up, or the test ended
            while b"\r\n\r\n" not in request and (data := connection.recv(65536)):
                request += data
            connection.sendall(b"HTTP/1.1 abc OK\r\n\r\n")


@pytest.fixture
def garbled_url() -> Iterator[str]:
    with GarblingServer() as server:
        yield server.url


async def test_no_secret_in_the_librarys_own_error(
    make_client: MakeSubject, garbled_url: str
) -> None:
    # aiohttp's error for a response it cannot read carries the request's headers and URL.
    secret, password = "s3cret-IN-HEADER-77", "p4ss-IN-URL-91"
    host = garbled_url.removeprefix("http://")
    client = make_client(base_url=f"http://user:{password}@{host}", secret=secret, max_retries=0)
    with pytest.raises(APIConnectionError) as caught:
        await client.ask("Hi")
    chain: list[BaseException] = []
    error: BaseException | None = caught.value
    while error is not None and error not in chain:
        chain.append(error)
        error = error.__cause__ or error.__context__
    assert len(chain) > 1  # the library's own error is there, as the cause
    texts = [text for each in chain for text in (str(each), repr(each))]
    assert not [text for text in texts if secret in text or password in text]


@pytest.mark.parametrize("engine", ["httpx", "httpx2", "aiohttp", "curl_cffi"])
def test_an_async_client_in_a_second_event_loop_says_why_it_cannot(
    engine: str, served: FakeServer
) -> None:
    import asyncio

    pytest.importorskip(LIBRARIES[engine])
    first = asyncio.new_event_loop()
    client = served.async_client(engine=engine)
    try:
        assert first.run_until_complete(client.ask("Hi")).text
        with pytest.raises(UsageError, match="belong to the event loop it first ran in"):
            asyncio.run(client.ask("Hi"))  # its pool's sockets are the first loop's
        assert served.fake.calls == 1  # refused before anything was sent
    finally:
        first.run_until_complete(client.aclose())
        first.close()


def test_an_infinite_timeout_without_a_deadline_means_no_limit(served: FakeServer) -> None:
    with served.client(timeout=float("inf"), deadline=None) as client:
        assert client.ask("Hi").text


def test_an_https_url_in_capitals_is_verified_all_the_same(
    tls_served: tuple[FakeServer, str],
) -> None:
    server, _ = tls_served
    shouting = server.url.replace("https://", "HTTPS://")
    with Client(base_url=shouting, max_retries=0) as client, pytest.raises(APIConnectionError):
        client.ask("Hi")  # the test CA is not trusted: refused, not sent unverified


class ScriptedServer(SocketServer):
    """A raw HTTP/1.1 server on 127.0.0.1 that answers the requests on a connection with
    `replies` in turn (`None`: it reads the request and never answers), and keeps each request's
    head, lower-cased, in `heads`."""

    def __init__(self, replies: Sequence[bytes | None]) -> None:
        super().__init__()
        self.replies = list(replies)
        self.heads: list[bytes] = []

    def serve(self, connection: socket.socket) -> None:
        connection.settimeout(0.05)
        buffer = b""
        with contextlib.suppress(OSError):
            while not self.stopping.is_set():
                head, found, rest = buffer.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.lower().split(b"\r\n")
                        if line.startswith(b"content-length:")
                    ),
                    0,
                )
                if not found or len(rest) < length:
                    try:
                        data = connection.recv(65536)
                    except TimeoutError:
                        continue
                    if not data:
                        return
                    buffer += data
                    continue
                buffer = rest[length:]
                with self.lock:
                    self.heads.append(head.lower())
                    reply = self.replies.pop(0) if self.replies else None
                if reply is None:
                    self.stopping.wait()  # stalled: nothing more, ever
                    return
                connection.sendall(reply)


def _answer(*headers: bytes) -> bytes:
    body = b'{"content": "hi"}'
    lines = b"".join(header + b"\r\n" for header in headers)
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n%s"
        b"content-length: %d\r\n\r\n%s" % (lines, len(body), body)
    )


CURL_WORLDS = ["blocking", "async"]
LONG = Timeout(connect=60, read=60, write=60, pool=60)
Exchange = Callable[[Request, Timeout], bytes]


@contextlib.contextmanager
def curl_engine(world: str, *, own_session: bool = False) -> Iterator[Exchange]:
    """`exchange(request, timeout)`: the whole body of one call on a curl_cffi engine of `world`
    that holds one curl handle, so that every call after the first is made on the kept (and
    set-up) handle. The async engine runs in a blocking portal's event loop, the same for every
    call. `own_session`: the engine is given a curl_cffi session of the caller's, set up as
    the engine sets up its own, which goes through the session's `request()`."""
    curl = pytest.importorskip("curl_cffi")
    from pizzagpt_sdk.engines import AsyncCurlCffiEngine, CurlCffiEngine

    options: dict[str, Any] = {
        "impersonate": "chrome",
        "curl_options": {curl.CurlOpt.HTTP_CONTENT_DECODING: 0},
    }
    if world == "blocking":
        session = curl.requests.Session(**options) if own_session else None
        engine = CurlCffiEngine(http_client=session)

        def exchange(request: Request, timeout: Timeout) -> bytes:
            response = engine.send(request, timeout)
            chunks = []
            while chunk := response.read():
                chunks.append(chunk)
            response.close()
            return b"".join(chunks)

        try:
            yield exchange
        finally:
            engine.close()
            if session is not None:
                session.close()
        return

    async def make() -> AsyncCurlCffiEngine:
        if own_session:
            session = curl.requests.AsyncSession(max_clients=1, **options)
            return AsyncCurlCffiEngine(http_client=session)
        return AsyncCurlCffiEngine(max_connections=1)

    async def async_exchange(request: Request, timeout: Timeout) -> bytes:
        with anyio.fail_after(60):  # a broken timeout fails the test instead of hanging it
            response = await engine_.send(request, timeout)
            chunks = []
            while chunk := await response.aread():
                chunks.append(chunk)
            await response.aclose()
        return b"".join(chunks)

    with anyio.from_thread.start_blocking_portal("asyncio") as portal:
        engine_ = portal.call(make)
        try:
            yield lambda request, timeout: portal.call(async_exchange, request, timeout)
        finally:
            portal.call(engine_.aclose)


def curl_request(server: ScriptedServer) -> Request:
    return Request(
        method="POST",
        url=server.url + "/api",
        headers=(("content-type", "application/json"), ("x-a", "1")),
        body=b'{"question": "Hi"}',
    )


@pytest.mark.parametrize("world", CURL_WORLDS)
def test_curl_cffi_a_kept_handle_takes_each_calls_own_timeout(world: str) -> None:
    # The engine keeps a curl handle's settings from one call to the next, and sets only each
    # call's timeouts: a call with a short timeout after one with a long timeout, on the same
    # handle and connection, ends at its own timeout when the server stalls.
    short = Timeout(connect=0.2, read=0.3, write=0.3, pool=0.3)
    with ScriptedServer([_answer(), None]) as server, curl_engine(world) as exchange:
        assert exchange(curl_request(server), LONG) == b'{"content": "hi"}'
        with pytest.raises(TransportError) as caught:
            exchange(curl_request(server), short)
    assert caught.value.timeout
    assert library_of(caught.value.__cause__) == "curl_cffi"
    assert (server.connections, len(server.heads)) == (1, 2)


@pytest.mark.parametrize("world", CURL_WORLDS)
def test_curl_cffi_a_kept_handle_is_set_again_for_new_headers_and_cookies(world: str) -> None:
    # A handle set up for one request's headers is set up again for another's; a cookie the
    # server sets goes into the session's jar and is sent from the next call on, as curl_cffi's
    # session does.
    replies = [_answer(b"set-cookie: flavour=basil"), _answer(), _answer()]
    with ScriptedServer(replies) as server, curl_engine(world) as exchange:
        request = curl_request(server)
        exchange(request, LONG)
        exchange(request, LONG)
        exchange(
            replace(request, headers=(("content-type", "application/json"), ("x-b", "2"))), LONG
        )
    cookie, x_a = b"\r\ncookie: flavour=basil", b"\r\nx-a: 1"
    assert [x_a in head for head in server.heads] == [True, True, False]
    assert [cookie in head for head in server.heads] == [False, True, True]
    assert b"\r\nx-b: 2" in server.heads[2]
    assert server.connections == 1


@pytest.mark.parametrize("world", CURL_WORLDS)
def test_curl_cffi_a_timeout_under_a_millisecond_still_bounds_the_call(world: str) -> None:
    # What is left of a deadline can be a fraction of a millisecond: curl counts whole ones,
    # and takes 0 for "no limit". Against a server that never answers, the call still ends.
    tiny = Timeout(connect=0.0004, read=0.0004, write=0.0004, pool=0.0004)
    with (
        ScriptedServer([None]) as server,
        curl_engine(world) as exchange,
        pytest.raises(TransportError) as caught,
    ):
        exchange(curl_request(server), tiny)
    assert caught.value.timeout


@pytest.mark.parametrize("world", CURL_WORLDS)
def test_curl_cffi_a_kept_handle_sends_what_the_session_sends(world: str) -> None:
    # The kept handle's requests are byte for byte what curl_cffi's session sends, call after
    # call: with a body and without, a GET after a POST (a GET is not given an empty body: it
    # would go out as a POST), a cookie taken on the way.
    heads = []
    for own_session in (False, True):
        replies = [_answer(b"set-cookie: flavour=basil")] + [_answer()] * 4
        with (
            ScriptedServer(replies) as server,
            curl_engine(world, own_session=own_session) as exchange,
        ):
            request = curl_request(server)
            host = server.url.removeprefix("http://").encode()  # differs for each server
            for each in [
                request,
                request,
                replace(request, body=b'{"question": "Hello"}'),
                replace(request, method="GET", body=b""),
                request,
            ]:
                exchange(each, LONG)
        heads.append([head.replace(host, b"HOST") for head in server.heads])
    assert heads[0] == heads[1]
    assert [head.split(b" ", 1)[0] for head in heads[0]] == [b"post"] * 3 + [b"get", b"post"]
    assert b"content-length" not in heads[0][3]


def test_curl_cffi_shuts_down_only_the_idle_connections_it_noted_that_received_bytes() -> None:
    # Before a transfer, the engine looks at the sockets of the connections curl keeps idle, as
    # it noted them (number and ports), and shuts down those that received bytes meanwhile
    # (test_a_connection_with_bytes_after_the_response_is_not_reused). Not a socket whose
    # number now belongs to another connection, nor one that is no socket, nor one in a
    # transfer, nor one that received nothing.
    pytest.importorskip("curl_cffi")
    from pizzagpt_sdk.engines._curl_cffi import _close_unclean

    def ports(sock: socket.socket) -> tuple[int, int]:
        return sock.getsockname()[1], sock.getpeername()[1]

    with contextlib.ExitStack() as stack, socket.create_server(("127.0.0.1", 0)) as listener:
        pairs = {}
        for name in ("stray", "renumbered", "in-transfer", "quiet"):
            ours = stack.enter_context(socket.create_connection(listener.getsockname()[:2]))
            theirs = stack.enter_context(listener.accept()[0])
            if name != "quiet":
                theirs.sendall(b"HTTP/1.1 200 OK\r\n")
            pairs[name] = ours
        read_end, write_end = os.pipe()
        stack.callback(os.close, read_end)
        stack.callback(os.close, write_end)
        os.write(write_end, b"x")
        idle = {sock.fileno(): ports(sock) for sock in pairs.values()}
        idle[pairs["renumbered"].fileno()] = (1, 2)
        idle[read_end] = (3, 4)
        time.sleep(0.05)  # the bytes arrive
        _close_unclean(idle, {pairs["in-transfer"].fileno()})

        with pytest.raises(BrokenPipeError):  # shut down
            pairs["stray"].sendall(b"x")
        for name in ("renumbered", "in-transfer", "quiet"):
            pairs[name].sendall(b"x")  # untouched
        assert os.read(read_end, 1) == b"x"
        # What was looked at and found readable is forgotten; the rest is kept for next time.
        assert set(idle) == {pairs["in-transfer"].fileno(), pairs["quiet"].fileno()}
