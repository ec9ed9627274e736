"""The clients over the loopback fake: each behaviour once, on both clients and every engine that
can run in the test's world; then the few checks that are about one HTTP library's objects."""

from __future__ import annotations

import socket
import time
from typing import Any

import httpx
import pytest

from pizzagpt_sdk import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncClient,
    AsyncStream,
    Client,
    ClientClosedError,
    FinishReason,
    InternalServerError,
    InvalidResponseError,
    InvalidTypeError,
    InvalidValueError,
    MisuseDetectedError,
    RateLimitError,
    RetryPolicy,
    SecretRejectedError,
    Timeout,
    UsageError,
)
from pizzagpt_sdk.testing import MISUSE_CONTENT, FakePizzaGPT, FakeServer, Reply

from .conftest import MakeSubject, Subject

pytestmark = pytest.mark.anyio

NO_JITTER = RetryPolicy(jitter=0)
PATH = "/api/chatx-completion"
CONVERSATION = [
    {"role": "system", "content": "Be brief"},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
]


#: A reply this late outlasts every timeout and deadline the tests set (0.1 to 0.2 s).
SLOW = 2.0
#: A reply late enough to outlast the tests' deadlines, early enough to wait for.
LATE = 0.6


def closed_port_url() -> str:
    """The URL of a port on 127.0.0.1 that nothing listens on: connecting is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# Success


async def test_stream_yields_the_text_then_one_finish_reason(
    client: Subject, served_fake: FakePizzaGPT
) -> None:
    served_fake.script(Reply.answer("Hello!").trickle(32, 0.001))  # the body in 3 chunks
    assert await client.events("Hi") == ["Hello!", FinishReason("stop")]


async def test_ask_collects_the_answer(client: Subject, served_fake: FakePizzaGPT) -> None:
    served_fake.script(Reply.answer("4", citations=["https://a.example/1"]))
    result = await client.ask(CONVERSATION)
    assert (str(result), result.text, result.citations, result.refusal) == (
        "4",
        "4",
        ("https://a.example/1",),
        None,
    )
    assert result.finish_reason == FinishReason("stop", citations=("https://a.example/1",))


async def test_the_older_shape_is_read(client: Subject, served_fake: FakePizzaGPT) -> None:
    served_fake.script(Reply.answer("old", shape="answer"))
    assert (await client.ask("Hi")).text == "old"


async def test_a_refusal_is_an_answer(client: Subject, served_fake: FakePizzaGPT) -> None:
    served_fake.script(Reply.answer(None, refusal="I can't help with that."))
    result = await client.ask("Hi")
    assert (result.text, result.refusal, result.finish_reason.reason) == (
        "",
        "I can't help with that.",
        "refusal",
    )


async def test_the_request_is_what_gpt4free_sends(
    client: Subject, served: FakeServer, served_fake: FakePizzaGPT
) -> None:
    await client.ask(CONVERSATION)
    (request,) = served_fake.requests
    assert (request.method, request.path) == ("POST", PATH)
    assert request.json == {
        "question": "System: Be brief\nUser: Hi\nAssistant: Hello!\nUser: 2+2?\nAssistant:"
    }
    assert {
        name: request.headers.get(name)
        for name in (
            "accept",
            "accept-language",
            "content-type",
            "origin",
            "referer",
            "user-agent",
            "x-secret",
        )
    } == {
        "accept": "application/json",
        "accept-language": "en-US,en;q=0.9",
        "content-type": "application/json",
        "origin": served.url,  # the base URL's, which is www.pizzagpt.it's by default
        "referer": f"{served.url}/en",
        "user-agent": (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/127.0.0.0 Safari/537.36"
        ),
        "x-secret": "Marinara",
    }


async def test_per_call_options_shape_the_body(client: Subject, served_fake: FakePizzaGPT) -> None:
    result = await client.ask(
        CONVERSATION, model="gpt-4o-mini", search=True, include_system=False, assistant_suffix=False
    )
    assert served_fake.requests[-1].json == {
        "question": "User: Hi\nAssistant: Hello!\nUser: 2+2?",
        "model": "gpt-4o-mini",
        "searchEnabled": True,
    }
    assert result.citations  # the fake cites its sources only when search was asked for


async def test_configuration_and_environment(
    make_client: MakeSubject,
    served: FakeServer,
    served_fake: FakePizzaGPT,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PIZZAGPT_BASE_URL", served.url)
    monkeypatch.setenv("PIZZAGPT_SECRET", "Salame")
    subject = make_client(base_url=None, secret=None, headers={"X-Extra": "1"}, user_agent="ua/1")
    assert subject.client.base_url == served.url
    with pytest.raises(SecretRejectedError):  # the fake accepts "Marinara" only
        await subject.ask("Hi")
    headers = served_fake.requests[-1].headers
    assert (headers["x-secret"], headers["x-extra"], headers["user-agent"]) == (
        "Salame",
        "1",
        "ua/1",
    )
    assert (headers["origin"], headers["referer"]) == (served.url, f"{served.url}/en")
    explicit = make_client(base_url=f"{served.url}/", secret="Marinara")
    assert explicit.client.base_url == f"{served.url}/"
    assert (await explicit.ask("Hi")).text
    assert served_fake.requests[-1].headers["x-secret"] == "Marinara"
    assert "Marinara" not in repr(explicit.client)


async def test_the_deadline_caps_every_wait(
    make_client: MakeSubject, served_fake: FakePizzaGPT
) -> None:
    subject = make_client(
        timeout=Timeout(connect=3.0, read=100.0, write=100.0, pool=100.0), deadline=0.15
    )
    # The same late reply three times: a request given up on may reach the fake after the next.
    served_fake.script(*[Reply.answer("late").delay(LATE)] * 3)
    started = time.monotonic()
    with pytest.raises(APITimeoutError):
        await subject.ask("Hi")  # the read waits 0.15 s at most, not 100 s
    assert time.monotonic() - started < LATE  # gave up, not waited for the reply and refused it
    started = time.monotonic()
    with pytest.raises(APITimeoutError):
        await subject.ask("Hi", timeout=0.1, deadline=None, max_retries=0)
    assert time.monotonic() - started < LATE
    assert (await subject.ask("Hi", deadline=None)).text == "late"  # over the client's 0.15 s


@pytest.mark.parametrize("engine", ["httpx", "httpx2", "curl_cffi"])
async def test_the_sync_client_works_inside_a_running_event_loop(
    served: FakeServer, engine: str
) -> None:
    pytest.importorskip(engine)
    served.fake.script(Reply.answer("sync"))
    with served.client(engine=engine) as client:  # this body runs in asyncio's or trio's loop
        assert client.ask("Hi").text == "sync"


# Errors


# Cases run as subtests of one test per engine: a client and a server for each case would cost
# far more than the case itself.

STATUSES: list[tuple[int, type[APIStatusError]]] = [
    (404, APIStatusError),
    (429, RateLimitError),
    (503, InternalServerError),
]


async def test_a_non_2xx_status_is_an_api_status_error(
    client: Subject, served: FakeServer, served_fake: FakePizzaGPT, subtests: pytest.Subtests
) -> None:
    for status, error in STATUSES:
        with subtests.test(msg=f"HTTP {status}"):
            served_fake.script(Reply.status(status, {"statusCode": status, "message": "nope here"}))
            with pytest.raises(error) as caught:
                await client.ask("Hi", max_retries=0)
            assert type(caught.value) is error
            assert caught.value.status_code == status
            assert "nope here" in caught.value.body
            assert f"HTTP {status}" in str(caught.value)
            assert caught.value.url == f"{served.url}{PATH}"


async def test_an_html_error_page_is_shown(client: Subject, served_fake: FakePizzaGPT) -> None:
    served_fake.script(Reply.html(403, "Just a moment..."))
    with pytest.raises(APIStatusError, match=r"HTML page titled 'Just a moment\.\.\.'") as caught:
        await client.ask("Hi")
    assert "Cloudflare" in str(caught.value)
    assert served_fake.calls == 1


#: (body, content type, what the error says): one case of each way a body is unreadable
#: (tests/test_protocol.py has them all).
UNREADABLE = [
    ("<html><title>Oops</title></html>", "text/html", "HTML page titled 'Oops'"),
    ("not json at all", "text/plain", "not JSON: not json at all"),
    ("", "application/json", "empty body"),
    ('{"content": 5}', "application/json", "unexpected shape"),
    ("{}", "application/json", "neither content nor refusal: {}"),
]


async def test_an_unreadable_2xx_body_is_an_invalid_response(
    client: Subject, served_fake: FakePizzaGPT, subtests: pytest.Subtests
) -> None:
    for body, content_type, match in UNREADABLE:
        with subtests.test(msg=body or "(empty)"):
            sent = served_fake.calls
            served_fake.script(
                Reply.raw(200, body.encode(), headers={"content-type": content_type})
            )
            with pytest.raises(InvalidResponseError, match=match) as caught:
                await client.events("Hi")
            assert caught.value.status_code == 200
            assert served_fake.calls == sent + 1  # not transient: never retried


async def test_a_rejected_secret_names_the_secret(
    client: Subject, served_fake: FakePizzaGPT, subtests: pytest.Subtests
) -> None:
    bodies: list[dict[str, Any]] = [{"answer": "Invalid"}, {"description": "error", "answer": None}]
    for body in bodies:
        with subtests.test(msg=str(body)):
            sent = served_fake.calls
            served_fake.script(Reply.status(200, body))
            with pytest.raises(SecretRejectedError, match="secret"):
                await client.ask("Hi")
            assert served_fake.calls == sent + 1


async def test_misuse_detection_is_a_value_error_never_retried(
    client: Subject, served_fake: FakePizzaGPT
) -> None:
    served_fake.script(Reply.misuse())
    with pytest.raises(MisuseDetectedError) as caught:
        await client.ask("Hi", max_retries=5)
    assert isinstance(caught.value, ValueError)
    assert caught.value.content == MISUSE_CONTENT
    assert served_fake.calls == 1


@pytest.mark.parametrize("fault", ["refused", "close_mid_body", "slow"])
async def test_transport_failures_are_retried_then_raised_with_the_cause(
    make_client: MakeSubject,
    served: FakeServer,
    served_fake: FakePizzaGPT,
    sleeps: list[float],
    fault: str,
) -> None:
    base_url = closed_port_url() if fault == "refused" else served.url
    # A short read timeout, for the slow answer; the rest generous, so that a busy machine's
    # slow accept of a new connection is not taken for the fault under test.
    timeout = Timeout(connect=10.0, read=0.1, write=10.0, pool=10.0)
    subject = make_client(base_url=base_url, timeout=timeout, retry_policy=NO_JITTER)
    reply = Reply.answer("never whole")
    reply = reply.close_mid_body() if fault == "close_mid_body" else reply.delay(SLOW)
    served_fake.script(reply, reply, reply)
    with pytest.raises(APIConnectionError) as caught:
        await subject.ask("Hi")
    assert type(caught.value) is (APITimeoutError if fault == "slow" else APIConnectionError)
    cause = caught.value.__cause__
    assert isinstance(cause, Exception)
    # The HTTP library's own exception, translated by the engine with `raise ... from exc`.
    assert type(cause).__module__.split(".")[0] == subject.client.engine
    assert caught.value.url == f"{base_url}{PATH}"
    assert sleeps == [0.5, 1.0]  # three attempts
    if fault != "slow":  # a request given up on may not have reached the fake yet
        assert served_fake.calls == (0 if fault == "refused" else 3)


async def test_a_failure_while_reading_the_body_is_retried(
    client: Subject, served_fake: FakePizzaGPT, sleeps: list[float]
) -> None:
    served_fake.script(Reply.answer("first try").close_mid_body(), Reply.answer("second try"))
    assert (await client.ask("Hi")).text == "second try"
    assert served_fake.calls == 2
    assert len(sleeps) == 1


# Retries


async def test_retries_sleep_as_the_policy_says(
    client: Subject, served_fake: FakePizzaGPT, sleeps: list[float]
) -> None:
    served_fake.script(
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
    # backoff 1, 2, 4, 8 capped at 4, … and the server's Retry-After: 7 exactly.
    assert sleeps == [1.0, 7.0, 4.0, 4.0, 4.0, 4.0]
    assert served_fake.calls == 7


async def test_a_retry_after_date_is_honoured(
    client: Subject, served_fake: FakePizzaGPT, sleeps: list[float]
) -> None:
    served_fake.script(Reply.status(503).retry_after("Wed, 21 Oct 2015 07:28:00 GMT"))  # past
    assert (await client.ask("Hi")).text
    assert served_fake.calls == 2
    assert sleeps == []  # a date in the past means "now": retried at once


async def test_a_retry_after_over_the_cap_is_not_waited_for(
    client: Subject, served_fake: FakePizzaGPT, sleeps: list[float]
) -> None:
    served_fake.script(Reply.status(429).retry_after(3600))
    with pytest.raises(RateLimitError) as caught:
        await client.ask("Hi")
    assert caught.value.retry_after == 3600.0
    assert (served_fake.calls, sleeps) == (1, [])


async def test_max_retries_per_client_and_per_call(
    make_client: MakeSubject, served_fake: FakePizzaGPT, sleeps: list[float]
) -> None:
    served_fake.script(*[Reply.status(500)] * 6)  # one more than the calls below may use
    subject = make_client(max_retries=0)
    with pytest.raises(InternalServerError):
        await subject.ask("Hi")
    assert served_fake.calls == 1
    with pytest.raises(InternalServerError):
        await subject.ask("Hi", max_retries=3)
    assert served_fake.calls == 5
    assert len(sleeps) == 3


async def test_a_4xx_is_not_retried(client: Subject, served_fake: FakePizzaGPT) -> None:
    served_fake.script(Reply.status(400, b""))
    with pytest.raises(APIStatusError, match=r"\(empty body\)"):
        await client.ask("Hi")
    assert served_fake.calls == 1


# The caller's mistakes: raised before anything is sent


BAD_INPUT: list[tuple[Any, dict[str, Any], type[UsageError]]] = [
    # Messages: one case of each error (tests/test_prompt.py has them all).
    ([], {}, InvalidValueError),
    (["Hi"], {}, InvalidTypeError),
    # Options, checked by the client's configuration.
    ("Hi", {"max_retries": -1}, InvalidValueError),
    ("Hi", {"deadline": 0}, InvalidValueError),
    ("Hi", {"timeout": "soon"}, InvalidTypeError),
    ("Hi", {"model": ""}, InvalidValueError),
    ("Hi", {"search": "yes"}, InvalidTypeError),
    ("Hi", {"retry_policy": 3}, InvalidTypeError),
    ("Hi", {"temperature": 0.2}, InvalidTypeError),
]


async def test_bad_input_is_refused_before_sending(
    client: Subject, served_fake: FakePizzaGPT, subtests: pytest.Subtests
) -> None:
    for messages, options, error in BAD_INPUT:
        with subtests.test(msg=f"{messages!r} {options!r}"):
            with pytest.raises(error):
                client.client.stream(messages, **options)  # raised by stream() itself, eagerly
            with pytest.raises(error):
                await client.ask(messages, **options)
            assert served_fake.calls == 0


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"base_url": "ftp://example.com"}, InvalidValueError),
        ({"base_url": "https://"}, InvalidValueError),
        ({"secret": "a\r\nb"}, InvalidValueError),
        ({"timeout": 0}, InvalidValueError),
        ({"timeout": True}, InvalidTypeError),
        ({"deadline": -1}, InvalidValueError),
        ({"max_retries": 1.5}, InvalidTypeError),
        ({"retry_policy": "fast"}, InvalidTypeError),
        ({"max_response_bytes": 0}, InvalidValueError),
        ({"headers": [("a", "b")]}, InvalidTypeError),
        ({"proxy": 123}, InvalidTypeError),
        ({"proxy": "ftp://proxy.example"}, InvalidValueError),
        ({"verify": ""}, InvalidValueError),
        ({"verify": 1}, InvalidTypeError),
        ({"max_connections": 0}, InvalidValueError),
        ({"max_connections": 2.0}, InvalidTypeError),
        ({"http_client": object()}, InvalidTypeError),
        ({"engine": "requests"}, InvalidValueError),
        ({"engine": 3}, InvalidTypeError),
    ],
)
@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_bad_configuration_is_refused(
    cls: type[Client | AsyncClient], kwargs: dict[str, Any], error: type[UsageError]
) -> None:
    """Checked by the core before an engine is chosen: once per client, not once per engine."""
    with pytest.raises(error):
        cls(**kwargs)


async def test_a_closed_client_says_so(client: Subject, served_fake: FakePizzaGPT) -> None:
    was_closed = client.client.is_closed
    await client.close()
    assert (was_closed, client.client.is_closed) == (False, True)
    with pytest.raises(ClientClosedError, match="closed"):
        await client.ask("Hi")
    assert served_fake.calls == 0


# Streams


async def test_a_stream_sends_nothing_until_iterated_and_closes_early(
    client: Subject, served_fake: FakePizzaGPT
) -> None:
    served_fake.script(Reply.answer("Hello!"))
    stream = client.client.stream("Hi")
    assert served_fake.calls == 0
    if isinstance(stream, AsyncStream):
        async with stream as events:
            first = await events.__anext__()
        assert [event async for event in stream] == []
    else:
        with stream as events:
            first = next(events)
        assert list(stream) == []
    assert first == "Hello!"
    assert served_fake.calls == 1


# Your own HTTP library objects: about httpx's (and each other library's) types, not behaviour


def test_a_proxy_and_an_http_client_do_not_mix() -> None:
    async_http = httpx.AsyncClient()  # never opened: nothing to close
    with pytest.raises(InvalidValueError, match="give the proxy to your own http_client"):
        AsyncClient(http_client=async_http, proxy="http://127.0.0.1:3128")
    with pytest.raises(InvalidTypeError, match=r"httpx\.Client, not AsyncClient"):
        Client(http_client=async_http)
    with httpx.Client() as sync_http:
        with pytest.raises(InvalidValueError, match="give the proxy to your own http_client"):
            Client(http_client=sync_http, proxy="http://127.0.0.1:3128")
        transport = httpx.MockTransport(lambda request: httpx.Response(200))
        with pytest.raises(InvalidValueError, match="give the proxy to your own transport"):
            Client(transport=transport, proxy="http://127.0.0.1:3128")
        with pytest.raises(InvalidValueError, match="give the transport to your own http_client"):
            Client(http_client=sync_http, transport=transport)
    with pytest.raises(InvalidTypeError, match="AsyncBaseTransport, not HTTPTransport"):
        AsyncClient(transport=httpx.HTTPTransport())
    with pytest.raises(InvalidTypeError, match=r"transport must be an httpx\.BaseTransport"):
        Client(transport=object())
    with pytest.raises(InvalidValueError, match="transport is for the httpx engines"):
        Client(engine="curl_cffi", transport=transport)


async def test_a_transport_serves_the_sdks_own_pool(make_subject: MakeSubject) -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"content": "from the transport"})

    subject = make_subject(transport=httpx.MockTransport(reply))
    assert subject.client.engine == "httpx"
    assert (await subject.ask("Hi")).text == "from the transport"
    await subject.close()
    assert subject.client.is_closed  # the SDK owns the pool built over the transport


def test_an_httpx_timeout_is_accepted(served: FakeServer) -> None:
    with served.client(timeout=httpx.Timeout(0.2)) as client:
        served.fake.script(Reply.answer("too late").delay(SLOW))
        with pytest.raises(APITimeoutError):
            client.ask("Hi", max_retries=0)
        assert client.ask("Hi", timeout=httpx.Timeout(5.0, connect=1.0)).text


#: (library, client kind): each library's own client, which picks its engine.
OWN_CLIENTS = [
    ("httpx", "Client"),
    ("httpx", "AsyncClient"),
    ("httpx2", "Client"),
    ("httpx2", "AsyncClient"),
    ("aiohttp", "AsyncClient"),
    ("curl_cffi", "Client"),
    ("curl_cffi", "AsyncClient"),
]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # aiohttp's and curl_cffi's world
@pytest.mark.parametrize(
    ("library", "kind"), OWN_CLIENTS, ids=[f"{kind}-{library}" for library, kind in OWN_CLIENTS]
)
async def test_your_own_http_client_picks_its_engine_and_is_never_closed(
    served: FakeServer, library: str, kind: str
) -> None:
    module = pytest.importorskip(library)
    url = f"{served.url}{PATH}"
    body = {"data" if library in ("aiohttp", "curl_cffi") else "content": b'{"question": "again"}'}
    headers = {"x-secret": served.fake.secret, "content-type": "application/json"}
    if kind == "Client":
        own: Any = module.requests.Session() if library == "curl_cffi" else module.Client()
        try:
            with Client(base_url=served.url, http_client=own) as client:
                assert client.engine == library
                assert client.ask("Hi").text
            status = own.post(url, headers=headers, **body).status_code  # still open
        finally:
            own.close()
    else:
        if library == "aiohttp":
            own = module.ClientSession()
        elif library == "curl_cffi":
            own = module.requests.AsyncSession()
        else:
            own = module.AsyncClient()
        try:
            async with AsyncClient(base_url=served.url, http_client=own) as aclient:
                assert aclient.engine == library
                assert (await aclient.ask("Hi")).text
            if library == "aiohttp":  # still open
                async with own.post(url, headers=headers, **body) as response:
                    status = response.status
            else:
                status = (await own.post(url, headers=headers, **body)).status_code
        finally:
            await (own.aclose() if library in ("httpx", "httpx2") else own.close())
    assert status == 200
    assert served.fake.calls == 2
    assert served.fake.requests[-1].prompt == "again"
