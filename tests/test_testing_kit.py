"""The testing kit: `FakePizzaGPT` in-process and over loopback sockets, and its pytest plugin.

Every reply and fault runs through both SDK clients, in-process and over a real server on
127.0.0.1; nothing here contacts any other address, and every wait is bounded.
"""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest

import pizzagpt_sdk.testing
from pizzagpt_sdk import (
    Answer,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncClient,
    Client,
    FinishReason,
    InternalServerError,
    InvalidResponseError,
    MisuseDetectedError,
    PizzaGPTError,
    RateLimitError,
    RetryPolicy,
    SecretRejectedError,
    Timeout,
)
from pizzagpt_sdk.testing import (
    CITATIONS,
    ENDPOINT_PATH,
    MISUSE_CONTENT,
    FakePizzaGPT,
    FakeServer,
    Reply,
)

pytest_plugins = ["pytester"]

FAKE_PREFIX = "This is the offline PizzaGPT fake, not a model. You asked: "
SECRET = {"x-secret": "Marinara"}
# A short read timeout, and room for the rest: a loaded CI machine once took 0.2 s to connect
# (a ConnectTimeout where these tests expect a ReadTimeout).
READ_ONLY = Timeout(connect=10, read=0.2, write=10, pool=10)
CONVERSATION = [
    {"role": "system", "content": "Be brief"},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
]
NO_WAIT = RetryPolicy(backoff_base=0.0)
# Long enough that a test would hang without the timeout or stop() that cuts it short.
FOREVER = 30.0


@dataclass
class Rig:
    """A fake and an SDK client wired to it, in-process or over a loopback server."""

    fake: FakePizzaGPT
    client: Client | AsyncClient
    server: FakeServer | None

    async def ask(self, messages: Any = "Hi", **options: Any) -> Answer:
        if isinstance(self.client, AsyncClient):
            return await self.client.ask(messages, **options)
        return self.client.ask(messages, **options)

    async def events(self, messages: Any = "Hi", **options: Any) -> list[str | FinishReason]:
        if isinstance(self.client, AsyncClient):
            async with self.client.stream(messages, **options) as stream:
                return [event async for event in stream]
        with self.client.stream(messages, **options) as stream:
            return list(stream)


@pytest.fixture(
    params=["Client-inprocess", "AsyncClient-inprocess", "Client-loopback", "AsyncClient-loopback"]
)
async def rig(request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    """Each test runs with both clients, each in-process and over a loopback server."""
    kind, where = str(request.param).split("-")
    fake = FakePizzaGPT()
    async with AsyncExitStack() as stack:
        server = None
        source: FakePizzaGPT | FakeServer = fake
        if where == "loopback":
            server = source = await stack.enter_async_context(fake.serve_async())
        client: Client | AsyncClient
        if kind == "Client":
            client = stack.enter_context(source.client())
        else:
            client = await stack.enter_async_context(source.async_client())
        yield Rig(fake, client, server)


@pytest.fixture(params=["inprocess", "loopback"])
def http(request: pytest.FixtureRequest) -> Iterator[tuple[FakePizzaGPT, httpx.Client]]:
    """A fake and a plain httpx client wired to it, to send what the SDK never would."""
    fake = FakePizzaGPT()
    if request.param == "inprocess":
        with httpx.Client(transport=fake.transport(), base_url="https://www.pizzagpt.it") as client:
            yield fake, client
    else:
        with fake.serve() as server, httpx.Client(base_url=server.url, trust_env=False) as client:
            yield fake, client


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def exchange(server: FakeServer, raw: bytes) -> bytes:
    """Send raw bytes to the server and read until it closes the connection."""
    host, port = server.url.removeprefix("http://").split(":")
    received = b""
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(raw)
        while chunk := sock.recv(65536):
            received += chunk
    return received


# The default answer and the script


@pytest.mark.anyio
async def test_default_answer_quotes_the_question(rig: Rig) -> None:
    answer = await rig.ask("Why is the sky blue?")
    assert answer.text == FAKE_PREFIX + "Why is the sky blue?"
    assert answer.finish_reason == FinishReason("stop")
    # A flattened conversation: the last user line is quoted, not the whole transcript.
    assert (await rig.ask(CONVERSATION)).text == FAKE_PREFIX + "2+2?"


@pytest.mark.anyio
async def test_search_cites_loopback_urls(rig: Rig) -> None:
    assert (await rig.ask("Hi", search=True)).citations == CITATIONS
    assert (await rig.ask("Hi", search=False)).citations == ()
    rig.fake.script(Reply.answer("Sourced"), Reply.answer("Mine", citations=["https://a.test/"]))
    assert (await rig.ask("Hi", search=True)).citations == CITATIONS
    assert (await rig.ask("Hi")).citations == ("https://a.test/",)


@pytest.mark.anyio
async def test_script_answers_in_order_then_the_default_resumes(rig: Rig) -> None:
    rig.fake.script(
        Reply.answer("one"),
        Reply.answer("two", shape="answer"),
        Reply.answer("", refusal="I can't help with that."),
    )
    assert rig.fake.pending == 3
    assert (await rig.ask()).text == "one"
    assert (await rig.ask()).text == "two"
    refused = await rig.ask()
    assert (refused.text, refused.refusal) == ("", "I can't help with that.")
    assert refused.finish_reason.reason == "refusal"
    assert (await rig.ask()).text == FAKE_PREFIX + "Hi"
    assert (rig.fake.calls, rig.fake.pending) == (4, 0)


@pytest.mark.anyio
async def test_requests_are_recorded(rig: Rig) -> None:
    await rig.ask(CONVERSATION[:2], model="gpt-4o-mini", search=True)
    [request] = rig.fake.requests
    assert (request.method, request.path) == ("POST", ENDPOINT_PATH)
    assert request.headers["x-secret"] == "Marinara"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["origin"] == rig.client.base_url
    assert request.headers["referer"] == rig.client.base_url + "/en"
    prompt = "System: Be brief\nUser: Hi\nAssistant:"
    assert request.json == {"question": prompt, "model": "gpt-4o-mini", "searchEnabled": True}
    assert request.prompt == prompt
    assert json.loads(request.body) == request.json


# Every reply kind and fault, as the SDK reports it

ERRORS: dict[str, tuple[Reply, type[PizzaGPTError], str]] = {
    "status-400": (Reply.status(400), APIStatusError, "HTTP 400 Bad Request .*: Bad Request"),
    "status-404": (Reply.status(404), APIStatusError, "Not Found"),
    "status-429": (Reply.status(429), RateLimitError, "Too Many Requests"),
    "status-500": (Reply.status(500), InternalServerError, "Internal Server Error"),
    "status-520": (Reply.status(520), InternalServerError, "HTTP 520 .*: Error"),
    "status-dict": (Reply.status(502, {"message": "upstream down"}), InternalServerError, "down"),
    "status-str": (Reply.status(403, "Forbidden by policy"), APIStatusError, "by policy"),
    "status-bytes": (
        Reply.status(418, b"I'm a teapot", headers={"Content-Type": "text/plain"}),
        APIStatusError,
        "teapot",
    ),
    "html": (Reply.html(), InvalidResponseError, "HTML page titled 'Just a moment...'"),
    "html-503": (Reply.html(503, title="Be right back"), InternalServerError, "Be right back"),
    "invalid-json": (Reply.invalid_json(), InvalidResponseError, "not JSON"),
    "misuse": (Reply.misuse(), MisuseDetectedError, "Misuse detected"),
    "secret-rejected": (Reply.secret_rejected(), SecretRejectedError, "Invalid"),
    "null-content": (Reply.answer(None), InvalidResponseError, "neither content nor refusal"),
    "raw": (
        Reply.raw(200, b"[1, 2]", headers={"content-type": "application/json"}),
        InvalidResponseError,
        "not an object",
    ),
    "204": (Reply.status(204), InvalidResponseError, r"HTTP 204 .*\(empty body\)"),
    "close-mid-body": (Reply.answer("x" * 99).close_mid_body(), APIConnectionError, "broke"),
    "old-shape-misuse": (
        Reply.answer(MISUSE_CONTENT, shape="answer"),
        MisuseDetectedError,
        "Misuse",
    ),
}


@pytest.mark.anyio
@pytest.mark.parametrize("case", ERRORS)
async def test_replies_raise_the_documented_errors(rig: Rig, case: str) -> None:
    reply, error, message = ERRORS[case]
    rig.fake.script(reply)
    with pytest.raises(error, match=message) as info:
        await rig.ask("Hi", max_retries=0)
    assert type(info.value) is error
    assert (rig.fake.calls, rig.fake.pending) == (1, 0)


@pytest.mark.anyio
async def test_close_mid_body_breaks_the_connection(rig: Rig) -> None:
    rig.fake.script(Reply.answer("x" * 99).close_mid_body())
    with pytest.raises(APIConnectionError) as info:
        await rig.ask("Hi", max_retries=0)
    assert type(info.value) is APIConnectionError
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)
    assert "peer closed connection without sending complete message body" in str(info.value)
    # A retry gets the default answer on a new connection.
    rig.fake.script(Reply.answer("x" * 99).close_mid_body())
    assert (await rig.ask("Hi", retry_policy=NO_WAIT)).text == FAKE_PREFIX + "Hi"
    assert rig.fake.calls == 3


@pytest.mark.anyio
async def test_delay_waits_before_the_headers(rig: Rig) -> None:
    rig.fake.script(Reply.answer("late").delay(0.2))
    start = time.monotonic()
    assert (await rig.ask()).text == "late"
    assert time.monotonic() - start >= 0.15


@pytest.mark.anyio
async def test_delay_past_the_read_timeout_times_out(rig: Rig) -> None:
    rig.fake.script(Reply.answer("too late").delay(FOREVER))
    start = time.monotonic()
    with pytest.raises(APITimeoutError) as info:
        await rig.ask("Hi", timeout=READ_ONLY, max_retries=0)
    assert 0.15 <= time.monotonic() - start < 5
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


@pytest.mark.anyio
async def test_trickle_sends_the_body_in_chunks(rig: Rig) -> None:
    rig.fake.script(Reply.answer("slowly, but surely").trickle(8, interval=0.02))
    start = time.monotonic()
    assert await rig.events() == ["slowly, but surely", FinishReason("stop")]
    body = len('{"role": "assistant", "content": "slowly, but surely", "refusal": null}')
    assert time.monotonic() - start >= (body // 8) * 0.02 * 0.75


@pytest.mark.anyio
async def test_trickle_past_the_read_timeout_times_out(rig: Rig) -> None:
    rig.fake.script(Reply.answer("x" * 40).trickle(10, interval=FOREVER))
    with pytest.raises(APITimeoutError) as info:
        await rig.ask("Hi", timeout=READ_ONLY, max_retries=0)
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)


@pytest.mark.anyio
async def test_retry_after_reaches_the_error(rig: Rig) -> None:
    rig.fake.script(
        Reply.status(429).retry_after(7),
        Reply.status(503).retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
    )
    with pytest.raises(RateLimitError) as info:
        await rig.ask("Hi", max_retries=0)
    assert info.value.retry_after == 7.0
    with pytest.raises(InternalServerError) as server_error:
        await rig.ask("Hi", max_retries=0)
    assert server_error.value.retry_after == 0.0  # A date in the past: retry now.


@pytest.mark.anyio
async def test_modifiers_combine_and_retries_follow_the_script(rig: Rig) -> None:
    rig.fake.script(
        Reply.status(503).retry_after(0).delay(0.05).trickle(16, interval=0),
        Reply.html(429).retry_after(0),
        Reply.answer("third time lucky").trickle(5, interval=0).delay(0.01),
    )
    assert (await rig.ask()).text == "third time lucky"
    assert rig.fake.calls == 3


# The fake's own behaviour, seen through plain httpx


@pytest.mark.parametrize(
    ("method", "target", "headers", "body", "status", "message"),
    [
        ("POST", "/api/chat-completion", SECRET, b'{"question": "Hi"}', 404, "Page not found"),
        ("POST", "/api/chatx-completion/", SECRET, b'{"question": "Hi"}', 404, "Page not found"),
        ("GET", ENDPOINT_PATH, SECRET, b"", 405, "HTTP method is not allowed."),
        ("PUT", ENDPOINT_PATH, SECRET, b'{"question": "Hi"}', 405, "not allowed"),
        ("POST", ENDPOINT_PATH, SECRET, b"Hi", 400, "must be a JSON object"),
        ("POST", ENDPOINT_PATH, SECRET, b"\xff", 400, "must be a JSON object"),
        ("POST", ENDPOINT_PATH, SECRET, b'["Hi"]', 400, "must be a JSON object"),
        ("POST", ENDPOINT_PATH, SECRET, b'{"prompt": "Hi"}', 400, "question must be a string"),
        ("POST", ENDPOINT_PATH, SECRET, b'{"question": 1}', 400, "question must be a string"),
        ("POST", ENDPOINT_PATH, SECRET, b'{"question": "Hi", "model": 4}', 400, "model"),
        (
            "POST",
            ENDPOINT_PATH,
            SECRET,
            b'{"question": "Hi", "searchEnabled": "yes"}',
            400,
            "searchEnabled must be true or false",
        ),
    ],
)
def test_invalid_requests_get_nuxt_errors(
    http: tuple[FakePizzaGPT, httpx.Client],
    method: str,
    target: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    message: str,
) -> None:
    fake, client = http
    fake.script(Reply.answer("kept for a valid request"))
    response = client.request(method, target, headers=headers, content=body)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert document["statusCode"] == status
    assert message in document["message"]
    if status == 405:
        assert response.headers["allow"] == "POST"
    [request] = fake.requests
    assert (request.method, request.path, request.body) == (method, target, body)
    assert fake.pending == 1
    valid = client.post(ENDPOINT_PATH, headers=SECRET, json={"question": "Hi"})
    assert valid.json()["content"] == "kept for a valid request"


@pytest.mark.parametrize("headers", [{}, {"x-secret": "salame"}, {"x-secret": "marinara"}])
def test_a_wrong_secret_gets_the_old_rejection(
    http: tuple[FakePizzaGPT, httpx.Client], headers: dict[str, str]
) -> None:
    fake, client = http
    response = client.post(ENDPOINT_PATH, headers=headers, json={"question": "Hi"})
    assert (response.status_code, response.json()) == (200, {"answer": "Invalid"})
    assert fake.requests[0].prompt == "Hi"


def test_head_gets_headers_and_no_body(http: tuple[FakePizzaGPT, httpx.Client]) -> None:
    _, client = http
    response = client.head(ENDPOINT_PATH)
    assert response.status_code == 405
    assert int(response.headers["content-length"]) > 0
    assert response.content == b""
    # The connection is still in step: the next request is answered.
    assert client.post(ENDPOINT_PATH, headers=SECRET, json={"question": "Hi"}).is_success


def test_queries_and_repeated_headers_are_recorded(http: tuple[FakePizzaGPT, httpx.Client]) -> None:
    fake, client = http
    response = client.post(
        ENDPOINT_PATH + "?lang=en",
        headers=[("x-secret", "Marinara"), ("x-extra", "a"), ("X-Extra", "b")],
        json={"question": "Hi"},
    )
    assert response.json()["content"] == FAKE_PREFIX + "Hi"
    [request] = fake.requests
    assert request.path == ENDPOINT_PATH + "?lang=en"
    assert request.headers["x-extra"] == "a, b"


def test_answer_shapes(http: tuple[FakePizzaGPT, httpx.Client]) -> None:
    fake, client = http
    fake.script(Reply.answer("new"), Reply.answer("old", shape="answer", citations=()))
    first = client.post(ENDPOINT_PATH, headers=SECRET, json={"question": "Hi"})
    assert first.json() == {"role": "assistant", "content": "new", "refusal": None}
    second = client.post(ENDPOINT_PATH, headers=SECRET, json={"question": "Hi"})
    assert second.json() == {
        "answer": {"role": "assistant", "content": "old", "refusal": None, "citations": []},
        "description": None,
    }


def test_a_fake_in_the_older_shape() -> None:
    fake = FakePizzaGPT(shape="answer", secret="salame")
    assert (fake.shape, fake.secret) == ("answer", "salame")
    fake.script(Reply.answer("current", shape="current"))
    with fake.client() as client:
        assert client.ask("Hi").text == "current"
        answer = client.ask("Ciao", search=True)
    assert (answer.text, answer.citations) == (FAKE_PREFIX + "Ciao", CITATIONS)
    with httpx.Client(transport=fake.transport()) as http_client:
        response = http_client.post(
            "https://www.pizzagpt.it" + ENDPOINT_PATH,
            headers={"x-secret": "salame"},
            json={"question": "Hi"},
        )
    assert response.json() == {
        "answer": {"role": "assistant", "content": FAKE_PREFIX + "Hi", "refusal": None},
        "description": None,
    }
    with fake.client(secret="Marinara") as client, pytest.raises(SecretRejectedError):
        client.ask("Hi")


@pytest.mark.parametrize("where", ["inprocess", "loopback"])
def test_an_sdk_request_to_the_wrong_path_is_refused(where: str) -> None:
    fake = FakePizzaGPT()
    with fake.serve() as server:
        base = server.url if where == "loopback" else "https://www.pizzagpt.it"
        source: FakePizzaGPT | FakeServer = server if where == "loopback" else fake
        with source.client(base_url=base + "/v2") as client, pytest.raises(APIStatusError) as info:
            client.ask("Hi")
    assert info.value.status_code == 404
    assert "Page not found: /v2/api/chatx-completion" in str(info.value)
    assert fake.requests[0].path == "/v2" + ENDPOINT_PATH


def test_204_keeps_the_connection_in_step(http: tuple[FakePizzaGPT, httpx.Client]) -> None:
    fake, client = http
    fake.script(Reply.status(204), Reply.answer("after"))
    first = client.post(ENDPOINT_PATH, headers=SECRET, json={"question": "Hi"})
    assert (first.status_code, first.content) == (204, b"")
    second = client.post(ENDPOINT_PATH, headers=SECRET, json={"question": "Hi"})
    assert second.json()["content"] == "after"


def test_reply_headers_are_merged_and_framing_is_the_fakes() -> None:
    reply = Reply.raw(
        200, b"{}", headers={"Content-Length": "999", "Transfer-Encoding": "chunked", "X-A": "1"}
    ).retry_after(3)
    assert reply.headers == (("x-a", "1"), ("retry-after", "3"))
    html = Reply.html(title="<Bad & worse>")
    assert html.body is not None
    assert b"<title>&lt;Bad &amp; worse&gt;</title>" in html.body
    assert dict(html.headers)["server"] == "cloudflare"


def test_transport_trickles_and_breaks_off_in_chunks() -> None:
    fake = FakePizzaGPT()
    fake.script(
        Reply.raw(200, b"abcdefghij").trickle(4, interval=0),
        Reply.raw(200, b"abcdefghij").trickle(3, interval=0).close_mid_body(),
    )
    url = "https://www.pizzagpt.it" + ENDPOINT_PATH
    with httpx.Client(transport=fake.transport()) as client:
        with client.stream("POST", url, headers=SECRET, json={"question": "Hi"}) as response:
            assert list(response.iter_raw()) == [b"abcd", b"efgh", b"ij"]
        with client.stream("POST", url, headers=SECRET, json={"question": "Hi"}) as response:
            chunks = response.iter_raw()
            assert [next(chunks), next(chunks)] == [b"abc", b"de"]
            with pytest.raises(httpx.RemoteProtocolError, match="received 5 bytes, expected 10"):
                next(chunks)
            assert response.headers["content-length"] == "10"


@pytest.mark.anyio
async def test_async_transport_trickles_and_breaks_off_in_chunks() -> None:
    fake = FakePizzaGPT()
    fake.script(Reply.raw(200, b"abcdefghij").trickle(4, interval=0.01).close_mid_body())
    url = "https://www.pizzagpt.it" + ENDPOINT_PATH
    async with httpx.AsyncClient(transport=fake.transport()) as client:
        request = client.build_request("POST", url, headers=SECRET, json={"question": "Hi"})
        response = await client.send(request, stream=True)
        chunks = response.aiter_raw()
        assert [await anext(chunks), await anext(chunks)] == [b"abcd", b"e"]
        with pytest.raises(httpx.RemoteProtocolError, match="received 5 bytes"):
            await anext(chunks)
        await response.aclose()


# The loopback server: connections, lifecycle and framing


def test_sync_client_reuses_one_connection() -> None:
    fake = FakePizzaGPT()
    with fake.serve() as server, server.client() as client:
        for _ in range(5):
            client.ask("Hi")
        assert server.connections == 1
    assert fake.calls == 5


@pytest.mark.anyio
async def test_async_client_reuses_one_connection() -> None:
    fake = FakePizzaGPT()
    async with fake.serve_async() as server, server.async_client() as client:
        for _ in range(5):
            await client.ask("Hi")
        assert server.connections == 1
    assert fake.calls == 5


def test_concurrent_calls_each_get_one_scripted_reply() -> None:
    fake = FakePizzaGPT()
    fake.script(*(Reply.answer(f"answer {n}") for n in range(20)))
    answers: list[str] = []
    lock = threading.Lock()

    def call_five(client: Client) -> None:
        for _ in range(5):
            text = client.ask("Hi").text
            with lock:
                answers.append(text)

    with fake.serve() as server:
        clients = [server.client() for _ in range(4)]
        threads = [threading.Thread(target=call_five, args=(client,)) for client in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        for client in clients:
            client.close()
        assert server.connections == 4
    assert sorted(answers) == sorted(f"answer {n}" for n in range(20))
    assert fake.calls == 20


def test_stop_closes_idle_keep_alive_connections() -> None:
    before = threading.active_count()
    with FakePizzaGPT().serve() as server:
        host, port = server.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            response = b""
            while not response.endswith(b"}"):  # The end of the JSON body.
                response += sock.recv(65536)
            assert response.startswith(b"HTTP/1.1 404 Not Found\r\n")
            server.stop()  # The connection is idle, kept alive: stop() must close it.
            assert sock.recv(1) == b""
    assert threading.active_count() == before


def test_a_client_that_hangs_up_does_not_disturb_the_server() -> None:
    fake = FakePizzaGPT()
    fake.script(Reply.answer("x" * 1000).delay(0.1))
    before = threading.active_count()
    with fake.serve() as server:
        host, port = server.url.removeprefix("http://").split(":")
        sock = socket.create_connection((host, int(port)), timeout=5)
        sock.sendall(
            b"POST /api/chatx-completion HTTP/1.1\r\nHost: x\r\nx-secret: Marinara\r\n"
            b'Content-Length: 17\r\n\r\n{"question":"Hi"}'
        )
        wait_until(lambda: fake.calls == 1)
        # Close with a reset while the fake is still thinking: its answer meets a dead socket.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        wait_until(lambda: threading.active_count() == before + 1)  # Only the accept loop.
        with server.client() as client:
            assert client.ask("Hi").text == FAKE_PREFIX + "Hi"


@pytest.mark.parametrize(
    "reply",
    [Reply.answer("late").delay(FOREVER), Reply.answer("x" * 100).trickle(10, interval=FOREVER)],
    ids=["mid-delay", "mid-body"],
)
def test_stop_does_not_wait_for_a_request_in_flight(reply: Reply) -> None:
    fake = FakePizzaGPT()
    fake.script(reply)
    errors: list[BaseException] = []
    with fake.serve() as server, server.client(max_retries=0) as client:

        def call() -> None:
            try:
                client.ask("Hi")
            except APIConnectionError as error:
                errors.append(error)

        thread = threading.Thread(target=call)
        thread.start()
        wait_until(lambda: fake.calls == 1)
        start = time.monotonic()
        server.stop()
        assert time.monotonic() - start < 5
        thread.join(5)
        assert not thread.is_alive()
    [error] = errors
    assert type(error) is APIConnectionError


@pytest.mark.anyio
async def test_serve_async_stops_when_cancelled() -> None:
    fake = FakePizzaGPT()
    with anyio.move_on_after(0.1):
        async with fake.serve_async() as server:
            url = server.url
            await anyio.sleep(FOREVER)
    with pytest.raises(httpx.ConnectError):
        httpx.post(url + ENDPOINT_PATH, timeout=5, trust_env=False)


def test_server_lifecycle() -> None:
    server = FakePizzaGPT().serve()
    assert repr(server) == "FakeServer(not started)"
    with pytest.raises(RuntimeError, match="not been started"):
        _ = server.url
    with pytest.raises(RuntimeError, match="not been started"):
        _ = server.connections
    server.stop()  # Not started: nothing to do.
    with server:
        assert repr(server) == f"FakeServer({server.url})"
        assert server.url.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError, match="serves once"):
            server.start()
    server.stop()  # Already stopped: nothing to do.
    assert server.connections == 0
    with pytest.raises(RuntimeError, match="serves once"):
        server.start()


def test_server_reads_chunked_bodies() -> None:
    fake = FakePizzaGPT()
    with fake.serve() as server, httpx.Client(base_url=server.url, trust_env=False) as client:
        parts = iter([b'{"question": ', b'"Hi"}'])
        response = client.post(ENDPOINT_PATH, headers=SECRET, content=parts)
        assert response.json()["content"] == FAKE_PREFIX + "Hi"
        body = b'{"question":"Hi"}'
        raw = exchange(
            server,
            b"POST /api/chatx-completion HTTP/1.1\r\nHost: x\r\nx-secret: Marinara\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            + b"%x;ext=1\r\n%s\r\n0\r\nX-Trailer: 1\r\n\r\n"
            % (len(body), body),
        )
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert [request.prompt for request in fake.requests] == ["Hi", "Hi"]


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: ten\r\n\r\n",
        b"Content-Length: -1\r\n\r\n",
        b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"Transfer-Encoding: chunked\r\n\r\n-1\r\n",
    ],
)
def test_server_refuses_broken_framing(framing: bytes) -> None:
    fake = FakePizzaGPT()
    with fake.serve() as server:
        raw = exchange(server, b"POST /api/chatx-completion HTTP/1.1\r\nHost: x\r\n" + framing)
    assert raw.startswith(b"HTTP/1.1 400 Bad request framing\r\n")
    assert fake.calls == 0


# Argument checks, the public surface and the plugin


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda: FakePizzaGPT(secret=1), TypeError),  # type: ignore[arg-type]
        (lambda: FakePizzaGPT(shape="new"), ValueError),  # type: ignore[arg-type]
        (lambda: FakePizzaGPT().script("Hi"), TypeError),  # type: ignore[arg-type]
        (lambda: Reply.answer(1), TypeError),  # type: ignore[arg-type]
        (lambda: Reply.answer("Hi", refusal=b"no"), TypeError),  # type: ignore[arg-type]
        (lambda: Reply.answer("Hi", shape="old"), ValueError),  # type: ignore[arg-type]
        (lambda: Reply.status(199), ValueError),
        (lambda: Reply.status(600), ValueError),
        (lambda: Reply.status(True), TypeError),
        (lambda: Reply.status(200, 3), TypeError),  # type: ignore[arg-type]
        (lambda: Reply.status(204, "body"), ValueError),
        (lambda: Reply.raw(200, "text"), TypeError),  # type: ignore[arg-type]
        (lambda: Reply.html(100), ValueError),
        (lambda: Reply.answer("Hi").delay(-1), ValueError),
        (lambda: Reply.answer("Hi").delay(float("nan")), ValueError),
        (lambda: Reply.answer("Hi").delay("1"), TypeError),  # type: ignore[arg-type]
        (lambda: Reply.answer("Hi").trickle(0), ValueError),
        (lambda: Reply.answer("Hi").trickle(True), TypeError),
        (lambda: Reply.answer("Hi").trickle(1, interval=-0.1), ValueError),
        (lambda: Reply.status(429).retry_after(-1), ValueError),
        (lambda: Reply.status(429).retry_after(1.5), TypeError),  # type: ignore[arg-type]
    ],
)
def test_bad_arguments_are_refused(make: Callable[[], object], error: type[Exception]) -> None:
    with pytest.raises(error):
        make()


def test_replies_are_frozen_values() -> None:
    reply = Reply.status(503)
    assert reply.retry_after(1) != reply
    assert reply.retry_after(1) == Reply.status(503).retry_after(1)
    with pytest.raises(AttributeError):
        reply.status_code = 200  # type: ignore[misc]
    assert Reply.misuse().content == MISUSE_CONTENT
    assert Reply.answer("Hi", citations=["a"]).citations == ("a",)


def test_repr_shows_the_state() -> None:
    fake = FakePizzaGPT()
    fake.script(Reply.answer("Hi"))
    assert repr(fake) == "FakePizzaGPT(shape='current', calls=0, pending=1)"


def test_public_names_are_sorted_and_exported() -> None:
    names = pizzagpt_sdk.testing.__all__
    # Sorted as ruff's RUF022 sorts: constants, then classes, then the rest.
    assert names == sorted(
        names, key=lambda name: (not name.isupper(), not name[0].isupper(), name)
    )
    assert all(hasattr(pizzagpt_sdk.testing, name) for name in names)


def test_the_sdk_does_not_import_the_kit_and_the_kit_not_pytest() -> None:
    code = (
        "import sys, pizzagpt_sdk; assert 'pizzagpt_sdk.testing' not in sys.modules; "
        "import pizzagpt_sdk.testing; assert 'pytest' not in sys.modules, 'pytest'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


USER_TESTS = """
import pytest

from pizzagpt_sdk import AsyncClient, Client
from pizzagpt_sdk.testing import FakePizzaGPT, Reply

clients = []


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request):
    return request.param


def test_sync_client(pizzagpt_fake, pizzagpt_client):
    assert isinstance(pizzagpt_fake, FakePizzaGPT)
    assert isinstance(pizzagpt_client, Client)
    pizzagpt_fake.script(Reply.answer("Ciao!"))
    assert pizzagpt_client.ask("Hi").text == "Ciao!"
    assert pizzagpt_fake.requests[0].prompt == "Hi"
    clients.append(pizzagpt_client)


@pytest.mark.anyio
async def test_async_client(pizzagpt_fake, pizzagpt_async_client):
    assert isinstance(pizzagpt_async_client, AsyncClient)
    assert pizzagpt_fake.calls == 0
    pizzagpt_fake.script(Reply.misuse())
    with pytest.raises(ValueError, match="Misuse"):
        await pizzagpt_async_client.ask("Hi")
    clients.append(pizzagpt_async_client)


def test_clients_were_closed():
    assert len(clients) == 3
    assert all(client.is_closed for client in clients)
"""


def test_plugin_fixtures(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    # Explicit plugins, so that this passes before and after the `pizzagpt` entry point exists.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    pytester.makeini(
        "[pytest]\n"
        "addopts = -p anyio.pytest_plugin -p pizzagpt_sdk.testing._plugin --strict-markers\n"
        "filterwarnings = error\n"
    )
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=4)
