"""The core is drivable by any HTTP library: a complete driver over the standard `http.client`.

It follows `Call.next_action()` against a loopback `http.server` on 127.0.0.1 (nothing else is
contacted), reports transport errors with `transport_failed()`, and closes the response whenever
the action is not `Receive`.
"""

from __future__ import annotations

import http.client
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from pizzagpt_sdk import (
    APIConnectionError,
    FinishReason,
    InternalServerError,
    InvalidResponseError,
    core,
)

# ---------------------------------------------------------------------------------------------
# The driver
# ---------------------------------------------------------------------------------------------

#: What http.client raises when the connection fails or a read or write times out.
TRANSPORT_ERRORS = (OSError, http.client.HTTPException)


def drive(call: core.Call) -> list[core.Event]:
    """Run `call` to the end over `http.client`; the events, or the call's error."""
    events: list[core.Event] = []
    connection: http.client.HTTPConnection | None = None
    response: http.client.HTTPResponse | None = None

    def close() -> None:
        nonlocal connection, response
        if response is not None:
            response.close()
            response = None
        if connection is not None:
            connection.close()
            connection = None

    try:
        while True:
            action = call.next_action()
            if not isinstance(action, core.Receive):
                close()  # the call may have given up on the body early
            if isinstance(action, core.Done):
                return events
            if isinstance(action, core.Sleep):
                time.sleep(action.seconds)
            elif isinstance(action, core.Send):
                request = action.request
                url = urlsplit(request.url)
                assert url.scheme == "http"
                assert url.hostname == "127.0.0.1"  # never anything but the loopback server
                connection = http.client.HTTPConnection(
                    url.hostname, url.port, timeout=action.timeout or 30.0
                )
                try:
                    connection.request(
                        request.method, url.path, request.body, dict(request.headers)
                    )
                    response = connection.getresponse()
                except TRANSPORT_ERRORS as exc:
                    call.transport_failed(exc, timeout=isinstance(exc, TimeoutError))
                else:
                    call.response_received(response.status, response.getheaders())
            else:
                assert response is not None
                try:
                    chunk = response.read1(65536)
                    if not chunk and response.length:  # closed before Content-Length was met
                        raise http.client.IncompleteRead(b"", response.length)
                except TRANSPORT_ERRORS as exc:
                    call.transport_failed(exc, timeout=isinstance(exc, TimeoutError))
                else:
                    events += call.data_received(chunk) if chunk else call.body_ended()
    finally:
        close()


def make_call(base_url: str, prompt: str = "Hi", **options: object) -> core.Call:
    request = core.Settings(base_url=base_url).build_request(core.flatten_messages(prompt))
    return core.Call(
        request,
        clock=time.monotonic,
        now=time.time,
        random=random.random,
        deadline=30,
        **options,  # type: ignore[arg-type]
    )


# ---------------------------------------------------------------------------------------------
# The loopback server
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Canned:
    """One scripted response."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    body: bytes = b'{"content": "Ciao!", "refusal": null}'
    cut: int | None = None  #: close the connection after this many body bytes


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Server(ThreadingHTTPServer):
    """Plays `replies` in order and records what it received."""

    # Join the handler threads on server_close(), so no socket outlives the test.
    daemon_threads = False
    block_on_close = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.replies: list[Canned] = []
        self.received: list[Received] = []

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.0"  # one request per connection: the driver connects each time

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {name.lower(): value for name, value in self.headers.items()}
        self.server.received.append(Received(self.command, self.path, headers, body))
        reply = self.server.replies.pop(0)
        self.send_response(reply.status)
        for name, value in reply.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body if reply.cut is None else reply.body[: reply.cut])

    def log_message(self, format: str, *args: object) -> None:
        pass  # keep the test output quiet


@dataclass
class Running:
    server: Server
    thread: threading.Thread
    base_url: str = field(init=False)

    def __post_init__(self) -> None:
        self.base_url = self.server.base_url

    def serve(self, *replies: Canned) -> None:
        self.server.replies.extend(replies)


@pytest.fixture
def server() -> Iterator[Running]:
    """A loopback HTTP server on 127.0.0.1, on a free port; stopped and closed afterwards."""
    httpd = Server()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield Running(httpd, thread)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert httpd.replies == [], "not every scripted reply was asked for"


# ---------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------


def test_success_over_real_sockets(server: Running) -> None:
    server.serve(Canned())
    call = make_call(server.base_url)
    events = drive(call)
    assert events == ["Ciao!", FinishReason("stop")]
    assert core.collect(events).text == "Ciao!"
    assert call.attempts == 1
    # What went over the wire is the protocol's request.
    [received] = server.server.received
    assert received.method == "POST"
    assert received.path == "/api/chatx-completion"
    assert received.body == b'{"question": "Hi"}'
    expected = dict(call.request.headers)
    assert {name: received.headers[name] for name in expected} == expected
    assert received.headers["x-secret"] == "Marinara"
    assert received.headers["origin"] == server.base_url
    assert received.headers["referer"] == f"{server.base_url}/en"


def test_a_503_with_retry_after_zero_is_retried_over_real_sockets(server: Running) -> None:
    server.serve(
        Canned(
            status=503,
            headers=(("Content-Type", "application/json"), ("Retry-After", "0")),
            body=b'{"statusCode": 503, "message": "Service Unavailable"}',
        ),
        Canned(body=b'{"content": "Eccomi", "refusal": null, "citations": ["https://x.test"]}'),
    )
    call = make_call(server.base_url, max_retries=1)
    assert drive(call) == ["Eccomi", FinishReason("stop", citations=("https://x.test",))]
    assert call.attempts == 2
    assert [received.body for received in server.server.received] == [b'{"question": "Hi"}'] * 2


def test_a_503_without_retries_raises_over_real_sockets(server: Running) -> None:
    server.serve(
        Canned(
            status=503,
            headers=(("Retry-After", "0"),),
            body=b'{"statusCode": 503, "message": "Down for maintenance"}',
        )
    )
    with pytest.raises(InternalServerError, match=r"HTTP 503 .*Down for maintenance") as info:
        drive(make_call(server.base_url, max_retries=0))
    assert info.value.status_code == 503
    assert info.value.retry_after == 0.0
    assert info.value.url == f"{server.base_url}/api/chatx-completion"


def test_an_html_page_is_a_clear_error_over_real_sockets(server: Running) -> None:
    page = (
        b"<!DOCTYPE html><html><head><title>Just a moment...</title></head>"
        b"<body>Checking your browser before accessing www.pizzagpt.it.</body></html>"
    )
    server.serve(Canned(headers=(("Content-Type", "text/html; charset=UTF-8"),), body=page))
    call = make_call(server.base_url)
    with pytest.raises(InvalidResponseError, match=r"HTML page titled 'Just a moment\.\.\.'"):
        drive(call)
    assert call.attempts == 1  # not retried


def test_a_connection_cut_mid_body_is_retried_over_real_sockets(server: Running) -> None:
    server.serve(Canned(cut=10), Canned())
    call = make_call(server.base_url, retry_policy=core.RetryPolicy(backoff_base=0.01))
    assert drive(call) == ["Ciao!", FinishReason("stop")]
    assert call.attempts == 2


def test_a_refused_connection_is_an_api_connection_error() -> None:
    # A port nobody listens on: bind one, note it, close it.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    policy = core.RetryPolicy(backoff_base=0.01, jitter=0)
    call = make_call(f"http://127.0.0.1:{port}", max_retries=1, retry_policy=policy)
    with pytest.raises(APIConnectionError, match=r"could not reach http://127\.0\.0\.1") as info:
        drive(call)
    assert isinstance(info.value.__cause__, ConnectionRefusedError)
    assert call.attempts == 2
