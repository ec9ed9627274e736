"""The fast engine, `pizzagpt_sdk.aiohttp.AiohttpClient`, against the fake over real sockets.

The behaviours of tests/test_clients.py that apply to a client of aiohttp: the answer, each
error class, retries with their exact sleeps, transport errors with their `__cause__`, the
stream contract and closing. The server is the testing kit's `FakeServer` on 127.0.0.1; aiohttp
runs on asyncio only, so these tests do too. Skipped when aiohttp is not installed.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

aiohttp = pytest.importorskip("aiohttp")

from pizzagpt_sdk import (  # noqa: E402 - after the skip: this module needs aiohttp
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncClient,
    AsyncStream,
    ClientClosedError,
    FinishReason,
    InternalServerError,
    InvalidResponseError,
    InvalidTypeError,
    InvalidValueError,
    MisuseDetectedError,
    PizzaGPTError,
    RateLimitError,
    RetryPolicy,
    SecretRejectedError,
    UsageError,
)
from pizzagpt_sdk.aiohttp import AiohttpClient, AiohttpStream  # noqa: E402
from pizzagpt_sdk.testing import FakePizzaGPT, FakeServer, Reply  # noqa: E402

pytestmark = pytest.mark.anyio

NO_JITTER = RetryPolicy(jitter=0)
CONVERSATION = [
    {"role": "system", "content": "Be brief"},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
]


@pytest.fixture
def anyio_backend() -> str:
    """aiohttp runs on asyncio only."""
    return "asyncio"


@pytest.fixture
def fake() -> FakePizzaGPT:
    return FakePizzaGPT()


@pytest.fixture
def server(fake: FakePizzaGPT) -> Iterator[FakeServer]:
    with fake.serve() as server:
        yield server


@pytest.fixture
async def client(server: FakeServer) -> AsyncIterator[AiohttpClient]:
    async with AiohttpClient(base_url=server.url) as client:
        yield client


@pytest.fixture
def refused_url() -> str:
    """A port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def events(stream: AiohttpStream) -> list[str | FinishReason]:
    return [event async for event in stream]


# Success


async def test_stream_yields_the_text_then_one_finish_reason(
    client: AiohttpClient, fake: FakePizzaGPT
) -> None:
    fake.script(Reply.answer("Hello!"))
    assert await events(client.stream("Hi")) == ["Hello!", FinishReason("stop")]


async def test_ask_collects_the_answer(client: AiohttpClient, fake: FakePizzaGPT) -> None:
    fake.script(Reply.answer("4", citations=["https://a.example/1"]))
    result = await client.ask(CONVERSATION)
    assert (str(result), result.citations, result.refusal) == ("4", ("https://a.example/1",), None)
    assert result.finish_reason == FinishReason("stop", citations=("https://a.example/1",))


async def test_the_older_shape_and_a_trickled_body_are_read(
    client: AiohttpClient, fake: FakePizzaGPT
) -> None:
    fake.script(Reply.answer("old", shape="answer").trickle(7, interval=0.001))
    assert await events(client.stream("Hi")) == ["old", FinishReason("stop")]


async def test_a_refusal_is_an_answer(client: AiohttpClient, fake: FakePizzaGPT) -> None:
    fake.script(Reply.answer(None, refusal="I can't help with that."))
    result = await client.ask("Hi")
    assert (result.text, result.refusal, result.finish_reason.reason) == (
        "",
        "I can't help with that.",
        "refusal",
    )


async def test_the_request_is_what_gpt4free_sends(
    client: AiohttpClient, fake: FakePizzaGPT, server: FakeServer
) -> None:
    await client.ask(CONVERSATION)
    request = fake.requests[-1]
    assert (request.method, request.path) == ("POST", "/api/chatx-completion")
    assert request.body == json.dumps(
        {"question": "System: Be brief\nUser: Hi\nAssistant: Hello!\nUser: 2+2?\nAssistant:"}
    ).encode("ascii")
    origin = server.url
    assert {name: request.headers[name] for name in ("accept", "content-type", "x-secret")} == {
        "accept": "application/json",
        "content-type": "application/json",
        "x-secret": "Marinara",
    }
    assert (request.headers["origin"], request.headers["referer"]) == (origin, f"{origin}/en")
    assert request.headers["user-agent"].startswith("Mozilla/5.0 (X11; Linux x86_64)")


async def test_per_call_options_shape_the_body(client: AiohttpClient, fake: FakePizzaGPT) -> None:
    await client.ask(
        CONVERSATION, model="gpt-4o-mini", search=True, include_system=False, assistant_suffix=False
    )
    assert fake.requests[-1].json == {
        "question": "User: Hi\nAssistant: Hello!\nUser: 2+2?",
        "model": "gpt-4o-mini",
        "searchEnabled": True,
    }


async def test_configuration_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = FakePizzaGPT(secret="Salame")
    with fake.serve() as server:
        monkeypatch.setenv("PIZZAGPT_BASE_URL", server.url)
        monkeypatch.setenv("PIZZAGPT_SECRET", "Salame")
        async with AiohttpClient(headers={"X-Extra": "1"}, user_agent="ua/1") as client:
            assert (await client.ask("Hi")).text.endswith("You asked: Hi")
            assert client.base_url == server.url
            assert "Salame" not in repr(client)
    headers = fake.requests[-1].headers
    assert (headers["x-secret"], headers["x-extra"], headers["user-agent"]) == (
        "Salame",
        "1",
        "ua/1",
    )


async def test_one_connection_serves_call_after_call(
    client: AiohttpClient, server: FakeServer
) -> None:
    for _ in range(5):
        await client.ask("Hi")
    results = await asyncio.gather(*(client.ask(f"Hi {n}") for n in range(8)))
    assert [result.text.rsplit(" ", 1)[-1] for result in results] == [str(n) for n in range(8)]
    assert server.connections <= 8  # kept alive and reused: not one per call


# Errors


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, APIStatusError),
        (401, APIStatusError),
        (404, APIStatusError),
        (429, RateLimitError),
        (500, InternalServerError),
        (503, InternalServerError),
    ],
)
async def test_a_non_2xx_status_is_an_api_status_error(
    client: AiohttpClient,
    fake: FakePizzaGPT,
    server: FakeServer,
    status: int,
    error: type[APIStatusError],
) -> None:
    fake.script(Reply.status(status, {"statusCode": status, "message": "nope here"}))
    with pytest.raises(error) as caught:
        await client.ask("Hi", max_retries=0)
    assert type(caught.value) is error
    assert caught.value.status_code == status
    assert "nope here" in caught.value.body
    assert caught.value.url == f"{server.url}/api/chatx-completion"


async def test_an_html_error_page_is_shown(client: AiohttpClient, fake: FakePizzaGPT) -> None:
    fake.script(Reply.html(403))
    with pytest.raises(APIStatusError, match=r"HTML page titled 'Just a moment\.\.\.'") as caught:
        await client.ask("Hi")
    assert "Cloudflare" in str(caught.value)


@pytest.mark.parametrize(
    ("reply", "match"),
    [
        (Reply.html(200, title="Oops"), "HTML page titled 'Oops'"),
        (Reply.invalid_json(), "not JSON"),
        (Reply.raw(200, b"[1, 2]", headers={"content-type": "application/json"}), "not an object"),
        (Reply.answer(None), "neither content nor refusal"),
    ],
)
async def test_an_unreadable_2xx_body_is_an_invalid_response(
    client: AiohttpClient, fake: FakePizzaGPT, reply: Reply, match: str
) -> None:
    fake.script(reply)
    with pytest.raises(InvalidResponseError, match=match) as caught:
        await client.ask("Hi")
    assert caught.value.status_code == 200
    assert fake.calls == 1  # not transient: never retried


async def test_a_body_over_the_limit_is_refused_and_its_connection_dropped(
    server: FakeServer, fake: FakePizzaGPT
) -> None:
    fake.script(Reply.answer("x" * 5000).trickle(1000, interval=0.001))
    async with AiohttpClient(base_url=server.url, max_response_bytes=2048) as client:
        with pytest.raises(InvalidResponseError, match="max_response_bytes"):
            await client.ask("Hi")
        assert (await client.ask("Hi")).text  # a fresh connection: the broken one was closed


async def test_a_rejected_secret_names_the_secret(
    client: AiohttpClient, fake: FakePizzaGPT
) -> None:
    fake.script(Reply.secret_rejected())
    with pytest.raises(SecretRejectedError, match="secret"):
        await client.ask("Hi")


async def test_misuse_detection_is_a_value_error_never_retried(
    client: AiohttpClient, fake: FakePizzaGPT
) -> None:
    fake.script(Reply.misuse())
    with pytest.raises(MisuseDetectedError) as caught:
        await client.ask("Hi", max_retries=5)
    assert isinstance(caught.value, ValueError)
    assert fake.calls == 1


async def test_a_refused_connection_is_retried_then_raised_with_the_cause(
    refused_url: str, sleeps: list[float]
) -> None:
    async with AiohttpClient(base_url=refused_url, retry_policy=NO_JITTER) as client:
        with pytest.raises(APIConnectionError, match="could not reach") as caught:
            await client.ask("Hi")
    assert type(caught.value) is APIConnectionError
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorError)
    assert caught.value.url == f"{refused_url}/api/chatx-completion"
    assert sleeps == [0.5, 1.0]


async def test_a_read_timeout_is_an_api_timeout_error(
    server: FakeServer, fake: FakePizzaGPT, sleeps: list[float]
) -> None:
    fake.script(*[Reply.answer("late").delay(5)] * 2)
    async with AiohttpClient(base_url=server.url, timeout=0.2, retry_policy=NO_JITTER) as client:
        started = time.monotonic()
        with pytest.raises(APITimeoutError, match="timed out") as caught:
            await client.ask("Hi", max_retries=1)
    assert time.monotonic() - started < 3
    assert isinstance(caught.value.__cause__, asyncio.TimeoutError)
    assert (fake.calls, sleeps) == (2, [0.5])


async def test_the_deadline_and_a_per_call_timeout_cap_every_wait(
    server: FakeServer, fake: FakePizzaGPT
) -> None:
    fake.script(*[Reply.answer("late").delay(5)] * 2)
    async with AiohttpClient(base_url=server.url, timeout=httpx.Timeout(100.0)) as client:
        started = time.monotonic()
        with pytest.raises(APITimeoutError):
            await client.ask("Hi", deadline=0.3)
        with pytest.raises(APITimeoutError):
            await client.ask("Hi", timeout=0.2, deadline=None, max_retries=0)
    assert time.monotonic() - started < 4


async def test_a_connection_broken_mid_body_is_retried(
    client: AiohttpClient, fake: FakePizzaGPT, sleeps: list[float]
) -> None:
    fake.script(Reply.answer("first try " * 20).close_mid_body(), Reply.answer("second try"))
    assert (await client.ask("Hi")).text == "second try"
    assert len(sleeps) == 1


async def test_a_broken_body_raises_with_the_cause_once_retries_run_out(
    client: AiohttpClient, fake: FakePizzaGPT
) -> None:
    fake.script(Reply.answer("first try " * 20).close_mid_body())
    with pytest.raises(APIConnectionError, match="broke before the answer") as caught:
        await client.ask("Hi", max_retries=0)
    assert isinstance(caught.value.__cause__, aiohttp.ClientError)


# Retries


async def test_retries_sleep_as_the_policy_says(
    client: AiohttpClient, fake: FakePizzaGPT, sleeps: list[float]
) -> None:
    fake.script(
        Reply.status(503),
        Reply.status(429).retry_after(7),
        Reply.status(408),
        Reply.status(409),
        Reply.status(502),
        Reply.status(500),
        Reply.answer("at last"),
    )
    policy = RetryPolicy(backoff_base=1.0, backoff_cap=4.0, jitter=0)
    result = await client.ask("Hi", max_retries=6, retry_policy=policy)
    assert result.text == "at last"
    assert sleeps == [1.0, 7.0, 4.0, 4.0, 4.0, 4.0]


async def test_an_error_body_is_read_no_further_than_needed(
    client: AiohttpClient, fake: FakePizzaGPT, sleeps: list[float]
) -> None:
    fake.script(Reply.status(503, "overloaded " * 8000), Reply.answer("at last"))
    assert (await client.ask("Hi")).text == "at last"  # the 88 kB error body was cut short
    assert len(sleeps) == 1


async def test_a_retry_after_over_the_cap_is_not_waited_for(
    client: AiohttpClient, fake: FakePizzaGPT, sleeps: list[float]
) -> None:
    fake.script(Reply.status(429).retry_after(3600))
    with pytest.raises(RateLimitError) as caught:
        await client.ask("Hi")
    assert caught.value.retry_after == 3600.0
    assert (fake.calls, sleeps) == (1, [])


async def test_max_retries_per_client_and_per_call(
    server: FakeServer, fake: FakePizzaGPT, sleeps: list[float]
) -> None:
    fake.script(*[Reply.status(500)] * 5)
    async with AiohttpClient(base_url=server.url, max_retries=0) as client:
        with pytest.raises(InternalServerError):
            await client.ask("Hi")
        assert fake.calls == 1
        with pytest.raises(InternalServerError):
            await client.ask("Hi", max_retries=3)
    assert (fake.calls, len(sleeps)) == (5, 3)


# The caller's mistakes: raised before anything is sent


@pytest.mark.parametrize(
    ("messages", "options", "error"),
    [
        ([], {}, InvalidValueError),
        ("   ", {}, InvalidValueError),
        (["Hi"], {}, InvalidTypeError),
        ("Hi", {"max_retries": -1}, InvalidValueError),
        ("Hi", {"deadline": 0}, InvalidValueError),
        ("Hi", {"timeout": "soon"}, InvalidTypeError),
        ("Hi", {"model": ""}, InvalidValueError),
        ("Hi", {"retry_policy": 3}, InvalidTypeError),
        ("Hi", {"temperature": 0.2}, InvalidTypeError),
    ],
)
async def test_bad_input_is_refused_before_sending(
    client: AiohttpClient,
    fake: FakePizzaGPT,
    messages: Any,
    options: dict[str, Any],
    error: type[UsageError],
) -> None:
    with pytest.raises(error):
        client.stream(messages, **options)  # raised by stream() itself, eagerly
    with pytest.raises(error):
        await client.ask(messages, **options)
    assert fake.calls == 0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"base_url": "ftp://example.com"}, InvalidValueError),
        ({"secret": "a\r\nb"}, InvalidValueError),
        ({"timeout": 0}, InvalidValueError),
        ({"deadline": -1}, InvalidValueError),
        ({"max_retries": 1.5}, InvalidTypeError),
        ({"retry_policy": "fast"}, InvalidTypeError),
        ({"max_response_bytes": 0}, InvalidValueError),
        ({"proxy": 3128}, InvalidTypeError),
        ({"http_client": httpx.AsyncClient}, InvalidTypeError),
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any], error: type[UsageError]) -> None:
    with pytest.raises(error):
        AiohttpClient(**kwargs)


async def test_a_proxy_and_an_http_client_do_not_mix() -> None:
    async with aiohttp.ClientSession() as session:
        with pytest.raises(InvalidValueError, match="proxy"):
            AiohttpClient(http_client=session, proxy="http://127.0.0.1:3128")


async def test_a_closed_client_says_so(server: FakeServer, fake: FakePizzaGPT) -> None:
    client = AiohttpClient(base_url=server.url)
    await client.ask("Hi")
    states = [client.is_closed]
    await client.aclose()
    states.append(client.is_closed)
    assert states == [False, True]
    with pytest.raises(ClientClosedError, match="closed"):
        await client.ask("Hi")
    assert fake.calls == 1


async def test_your_own_session_is_used_and_never_closed(
    server: FakeServer, fake: FakePizzaGPT
) -> None:
    async with aiohttp.ClientSession(headers={"x-mine": "yes"}) as session:
        async with AiohttpClient(base_url=server.url, http_client=session) as client:
            await client.ask("Hi")
        assert not session.closed
        assert fake.requests[-1].headers["x-mine"] == "yes"


def test_it_runs_on_asyncio_only() -> None:
    trio = pytest.importorskip("trio")

    async def on_trio() -> None:
        async with AiohttpClient(base_url="http://127.0.0.1:9") as client:
            await client.ask("Hi")

    with pytest.raises(UsageError, match="asyncio only"):
        trio.run(on_trio)


# Streams


async def test_a_stream_sends_nothing_until_iterated_and_closes_early(
    client: AiohttpClient, fake: FakePizzaGPT
) -> None:
    fake.script(Reply.answer("Hello!"))
    stream = client.stream("Hi")
    assert fake.calls == 0
    async with stream as open_stream:
        first = await open_stream.__anext__()
    assert await events(stream) == []
    assert (first, stream.answer, fake.calls) == ("Hello!", None, 1)
    assert (await client.ask("Hi")).text  # the connection went back to the pool, or was closed


async def test_a_cancelled_call_drops_its_connection(
    client: AiohttpClient, fake: FakePizzaGPT, server: FakeServer
) -> None:
    fake.script(Reply.answer("slowly " * 50).trickle(16, interval=0.02))
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(client.ask("Hi"), 0.1)  # cancelled mid-body
    assert (await client.ask("Hi")).text  # on a new connection: the half-read one was closed
    assert server.connections == 2


async def test_the_answer_is_kept_once_the_stream_has_finished(
    client: AiohttpClient, fake: FakePizzaGPT
) -> None:
    fake.script(Reply.answer("Hello!"))
    stream = client.stream("Hi")
    before = stream.answer
    await events(stream)
    after = stream.answer
    assert before is None
    assert after is not None
    assert after.text == "Hello!"


async def test_every_error_is_a_pizzagpt_error(client: AiohttpClient, fake: FakePizzaGPT) -> None:
    fake.script(Reply.raw(200, b""))
    with pytest.raises(PizzaGPTError):
        await events(client.stream("Hi"))


# The public surface


def test_the_same_arguments_and_methods_as_async_client() -> None:
    def parameters(function: Any) -> dict[str, Any]:
        return {
            name: parameter.default
            for name, parameter in inspect.signature(function).parameters.items()
        }

    # All of AsyncClient's arguments but `transport` (httpx's: aiohttp's is the session, given
    # as `http_client`), with the same defaults.
    theirs = parameters(AsyncClient.__init__)
    del theirs["transport"]
    assert parameters(AiohttpClient.__init__) == theirs
    for name in ("stream", "ask", "aclose", "__aenter__", "__aexit__"):
        ours, same = getattr(AiohttpClient, name), getattr(AsyncClient, name)
        assert parameters(ours) == parameters(same), name
        assert inspect.iscoroutinefunction(ours) is inspect.iscoroutinefunction(same), name
    for name in ("aclose", "__aiter__", "__anext__", "__aenter__", "__aexit__"):
        ours, same = getattr(AiohttpStream, name), getattr(AsyncStream, name)
        assert inspect.iscoroutinefunction(ours) is inspect.iscoroutinefunction(same), name
    assert isinstance(AiohttpStream.answer, property)
