"""The facades through respx: each behaviour once, on both clients, on asyncio and trio."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

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
    PizzaGPTError,
    RateLimitError,
    RetryPolicy,
    SecretRejectedError,
    UsageError,
)

from .conftest import URL, MakeSubject, Subject

pytestmark = pytest.mark.anyio

NO_JITTER = RetryPolicy(jitter=0)
HI = [{"role": "user", "content": "Hi"}]
CONVERSATION = [
    {"role": "system", "content": "Be brief"},
    {"role": "user", "content": "Hi"},
    {"role": "assistant", "content": "Hello!"},
    {"role": "user", "content": "2+2?"},
]


def answer(content: str | None = "Hello!", **fields: Any) -> httpx.Response:
    return httpx.Response(200, json={"content": content, "refusal": None, **fields})


# Success


async def test_stream_yields_the_text_then_one_finish_reason(
    subject: Subject, api: respx.Route
) -> None:
    api.return_value = answer("Hello!")
    assert await subject.events("Hi") == ["Hello!", FinishReason("stop")]


async def test_ask_collects_the_answer(subject: Subject, api: respx.Route) -> None:
    api.return_value = answer("4", citations=["https://a.example/1"], role="assistant")
    result = await subject.ask(CONVERSATION)
    assert (str(result), result.text, result.citations, result.refusal) == (
        "4",
        "4",
        ("https://a.example/1",),
        None,
    )
    assert result.finish_reason == FinishReason("stop", citations=("https://a.example/1",))


async def test_the_older_shape_is_read(subject: Subject, api: respx.Route) -> None:
    api.return_value = httpx.Response(
        200, json={"answer": {"role": "assistant", "content": "old", "refusal": None}}
    )
    assert (await subject.ask("Hi")).text == "old"


async def test_a_refusal_is_an_answer(subject: Subject, api: respx.Route) -> None:
    api.return_value = answer(None, refusal="I can't help with that.")
    result = await subject.ask("Hi")
    assert (result.text, result.refusal, result.finish_reason.reason) == (
        "",
        "I can't help with that.",
        "refusal",
    )


async def test_the_request_is_what_gpt4free_sends(subject: Subject, api: respx.Route) -> None:
    api.return_value = answer()
    await subject.ask(CONVERSATION)
    request = api.calls.last.request
    assert request.url == URL
    assert (
        request.content
        == json.dumps(
            {"question": "System: Be brief\nUser: Hi\nAssistant: Hello!\nUser: 2+2?\nAssistant:"}
        ).encode()
    )
    assert {
        name: request.headers[name]
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
        "origin": "https://www.pizzagpt.it",
        "referer": "https://www.pizzagpt.it/en",
        "user-agent": (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/127.0.0.0 Safari/537.36"
        ),
        "x-secret": "Marinara",
    }


async def test_per_call_options_shape_the_body(subject: Subject, api: respx.Route) -> None:
    api.return_value = answer()
    await subject.ask(
        CONVERSATION, model="gpt-4o-mini", search=True, include_system=False, assistant_suffix=False
    )
    assert json.loads(api.calls.last.request.content) == {
        "question": "User: Hi\nAssistant: Hello!\nUser: 2+2?",
        "model": "gpt-4o-mini",
        "searchEnabled": True,
    }


async def test_configuration_and_environment(
    make_subject: MakeSubject, respx_mock: respx.MockRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PIZZAGPT_BASE_URL", "http://127.0.0.1:8123")
    monkeypatch.setenv("PIZZAGPT_SECRET", "Salame")
    route = respx_mock.post("http://127.0.0.1:8123/api/chatx-completion")
    route.return_value = answer()
    subject = make_subject(headers={"X-Extra": "1"}, user_agent="ua/1")
    await subject.ask("Hi")
    headers = route.calls.last.request.headers
    assert (headers["x-secret"], headers["x-extra"], headers["user-agent"]) == (
        "Salame",
        "1",
        "ua/1",
    )
    assert (headers["origin"], headers["referer"]) == (
        "http://127.0.0.1:8123",
        "http://127.0.0.1:8123/en",
    )
    explicit = make_subject(base_url="http://127.0.0.1:9/", secret="Marinara")
    assert explicit.client.base_url == "http://127.0.0.1:9/"
    assert "Marinara" not in repr(explicit.client)


async def test_the_deadline_caps_every_wait(make_subject: MakeSubject, api: respx.Route) -> None:
    api.return_value = answer()
    subject = make_subject(timeout=httpx.Timeout(100.0, connect=3.0), deadline=5.0)
    await subject.ask("Hi")
    timeouts = api.calls.last.request.extensions["timeout"]
    assert timeouts["connect"] == 3.0
    assert all(0 < timeouts[phase] <= 5.0 for phase in ("read", "write", "pool"))
    await subject.ask("Hi", timeout=2.0, deadline=None)
    assert set(api.calls.last.request.extensions["timeout"].values()) == {2.0}


async def test_the_sync_client_works_inside_a_running_event_loop(api: respx.Route) -> None:
    api.return_value = answer("sync")
    with Client() as client:  # this test body runs inside asyncio's or trio's loop
        assert client.ask("Hi").text == "sync"


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
    subject: Subject, api: respx.Route, status: int, error: type[APIStatusError]
) -> None:
    api.return_value = httpx.Response(status, json={"statusCode": status, "message": "nope here"})
    with pytest.raises(error) as caught:
        await subject.ask("Hi", max_retries=0)
    assert type(caught.value) is error
    assert caught.value.status_code == status
    assert "nope here" in caught.value.body
    assert f"HTTP {status}" in str(caught.value)
    assert caught.value.url == URL


async def test_an_html_error_page_is_shown(subject: Subject, api: respx.Route) -> None:
    api.return_value = httpx.Response(
        403,
        text="<!DOCTYPE html><html><head><title>Just a moment...</title></head></html>",
        headers={"content-type": "text/html"},
    )
    with pytest.raises(APIStatusError, match=r"HTML page titled 'Just a moment\.\.\.'") as caught:
        await subject.ask("Hi")
    assert "Cloudflare" in str(caught.value)


@pytest.mark.parametrize(
    ("body", "content_type", "match"),
    [
        ("<html><title>Oops</title></html>", "text/html", "HTML page titled 'Oops'"),
        ("not json at all", "text/plain", "not JSON: not json at all"),
        ("[1, 2]", "application/json", "not an object"),
        ('{"content": 5}', "application/json", "unexpected shape"),
        ('{"content": null, "refusal": null}', "application/json", "neither content nor refusal"),
        ('{"content": "", "role": "assistant"}', "application/json", "neither content nor refusal"),
        ("{}", "application/json", "neither content nor refusal: {}"),
    ],
)
async def test_an_unreadable_2xx_body_is_an_invalid_response(
    subject: Subject, api: respx.Route, body: str, content_type: str, match: str
) -> None:
    api.return_value = httpx.Response(200, text=body, headers={"content-type": content_type})
    with pytest.raises(InvalidResponseError, match=match) as caught:
        await subject.ask("Hi")
    assert caught.value.status_code == 200
    assert api.call_count == 1  # not transient: never retried


@pytest.mark.parametrize("body", [{"answer": "Invalid"}, {"description": "error", "answer": None}])
async def test_a_rejected_secret_names_the_secret(
    subject: Subject, api: respx.Route, body: dict[str, Any]
) -> None:
    api.return_value = httpx.Response(200, json=body)
    with pytest.raises(SecretRejectedError, match="secret"):
        await subject.ask("Hi")


async def test_misuse_detection_is_a_value_error_never_retried(
    subject: Subject, api: respx.Route
) -> None:
    text = "Misuse detected. Please get in touch, we can come up with a solution for your use case."
    api.return_value = answer(text)
    with pytest.raises(MisuseDetectedError) as caught:
        await subject.ask("Hi", max_retries=5)
    assert isinstance(caught.value, ValueError)
    assert caught.value.content == text
    assert api.call_count == 1


@pytest.mark.parametrize(
    ("exception", "error"),
    [
        (httpx.ConnectError("refused"), APIConnectionError),
        (httpx.ReadError("reset"), APIConnectionError),
        (httpx.RemoteProtocolError("peer closed"), APIConnectionError),
        (httpx.ConnectTimeout("slow"), APITimeoutError),
        (httpx.ReadTimeout("slow"), APITimeoutError),
    ],
)
async def test_transport_failures_are_retried_then_raised_with_the_cause(
    subject: Subject,
    api: respx.Route,
    sleeps: list[float],
    exception: httpx.HTTPError,
    error: type[APIConnectionError],
) -> None:
    api.side_effect = exception
    with pytest.raises(error) as caught:
        await subject.ask("Hi", retry_policy=NO_JITTER)
    assert type(caught.value) is error
    assert caught.value.__cause__ is exception
    assert caught.value.url == URL
    assert api.call_count == 3
    assert sleeps == [0.5, 1.0]


async def test_a_failure_while_reading_the_body_is_retried(
    subject: Subject, api: respx.Route, sleeps: list[float]
) -> None:
    class BrokenStream(httpx.SyncByteStream, httpx.AsyncByteStream):
        def __iter__(self) -> Any:
            yield b'{"content": '
            raise httpx.ReadError("connection reset")

        async def __aiter__(self) -> Any:
            yield b'{"content": '
            raise httpx.ReadError("connection reset")

    api.side_effect = [httpx.Response(200, stream=BrokenStream()), answer("second try")]
    assert (await subject.ask("Hi")).text == "second try"
    assert len(sleeps) == 1


# Retries


async def test_retries_sleep_as_the_policy_says(
    subject: Subject, api: respx.Route, sleeps: list[float]
) -> None:
    api.side_effect = [
        httpx.Response(503),
        httpx.Response(429, headers={"retry-after": "7"}),
        httpx.Response(408),
        httpx.Response(409),
        httpx.Response(502),
        httpx.Response(500),
        answer("at last"),
    ]
    policy = RetryPolicy(backoff_base=1.0, backoff_cap=4.0, jitter=0)
    result = await subject.ask("Hi", max_retries=6, retry_policy=policy)
    assert result.text == "at last"
    # backoff 1, 2, 4, 8 capped at 4, … and the server's Retry-After: 7 exactly.
    assert sleeps == [1.0, 7.0, 4.0, 4.0, 4.0, 4.0]


async def test_a_retry_after_date_is_honoured(
    subject: Subject, api: respx.Route, sleeps: list[float]
) -> None:
    api.side_effect = [
        httpx.Response(503, headers={"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}),  # past
        answer(),
    ]
    await subject.ask("Hi")
    assert sleeps == []  # a date in the past means "now": retried at once


async def test_a_retry_after_over_the_cap_is_not_waited_for(
    subject: Subject, api: respx.Route, sleeps: list[float]
) -> None:
    api.return_value = httpx.Response(429, headers={"retry-after": "3600"})
    with pytest.raises(RateLimitError) as caught:
        await subject.ask("Hi")
    assert caught.value.retry_after == 3600.0
    assert (api.call_count, sleeps) == (1, [])


async def test_max_retries_per_client_and_per_call(
    make_subject: MakeSubject, api: respx.Route, sleeps: list[float]
) -> None:
    api.return_value = httpx.Response(500)
    subject = make_subject(max_retries=0)
    with pytest.raises(InternalServerError):
        await subject.ask("Hi")
    assert api.call_count == 1
    with pytest.raises(InternalServerError):
        await subject.ask("Hi", max_retries=3)
    assert api.call_count == 5
    assert len(sleeps) == 3


async def test_a_4xx_is_not_retried(subject: Subject, api: respx.Route) -> None:
    api.return_value = httpx.Response(400)
    with pytest.raises(APIStatusError, match=r"\(empty body\)"):
        await subject.ask("Hi")
    assert api.call_count == 1


# The caller's mistakes: raised before anything is sent


@pytest.mark.parametrize(
    ("messages", "options", "error"),
    [
        ([], {}, InvalidValueError),
        ("   ", {}, InvalidValueError),
        (["Hi"], {}, InvalidTypeError),
        ({"role": "user", "content": "Hi"}, {}, InvalidTypeError),
        ([{"content": "Hi"}], {}, InvalidTypeError),
        ([{"role": "user", "content": 42}], {}, InvalidTypeError),
        ("Hi", {"max_retries": -1}, InvalidValueError),
        ("Hi", {"deadline": 0}, InvalidValueError),
        ("Hi", {"timeout": "soon"}, InvalidTypeError),
        ("Hi", {"model": ""}, InvalidValueError),
        ("Hi", {"search": "yes"}, InvalidTypeError),
        ("Hi", {"retry_policy": 3}, InvalidTypeError),
        ("Hi", {"temperature": 0.2}, InvalidTypeError),
    ],
)
async def test_bad_input_is_refused_before_sending(
    subject: Subject,
    api: respx.Route,
    messages: Any,
    options: dict[str, Any],
    error: type[UsageError],
) -> None:
    with pytest.raises(error):
        subject.client.stream(messages, **options)  # raised by stream() itself, eagerly
    with pytest.raises(error):
        await subject.ask(messages, **options)
    assert api.call_count == 0


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
        ({"http_client": object()}, InvalidTypeError),
        ({"transport": object()}, InvalidTypeError),
    ],
)
async def test_bad_configuration_is_refused(
    make_subject: MakeSubject, kwargs: dict[str, Any], error: type[UsageError]
) -> None:
    with pytest.raises(error):
        make_subject(**kwargs)


async def test_a_proxy_and_an_http_client_do_not_mix() -> None:
    async with httpx.AsyncClient() as async_http:
        with pytest.raises(InvalidValueError, match="proxy"):
            AsyncClient(http_client=async_http, proxy="http://127.0.0.1:3128")
        with pytest.raises(InvalidTypeError, match=r"httpx\.Client, not AsyncClient"):
            Client(http_client=async_http)  # type: ignore[arg-type]
    with httpx.Client() as sync_http, pytest.raises(InvalidValueError, match="proxy"):
        Client(http_client=sync_http, proxy="http://127.0.0.1:3128")
    transport = httpx.MockTransport(lambda request: httpx.Response(200))
    with pytest.raises(InvalidValueError, match="give the proxy to your transport"):
        Client(transport=transport, proxy="http://127.0.0.1:3128")
    with httpx.Client() as sync_http, pytest.raises(InvalidValueError, match="transport"):
        Client(http_client=sync_http, transport=transport)
    with pytest.raises(InvalidTypeError, match="AsyncBaseTransport, not HTTPTransport"):
        AsyncClient(transport=httpx.HTTPTransport())  # type: ignore[arg-type]


async def test_a_transport_serves_the_sdks_own_pool(make_subject: MakeSubject) -> None:
    def reply(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"content": "from the transport"})

    subject = make_subject(transport=httpx.MockTransport(reply))
    assert (await subject.ask("Hi")).text == "from the transport"
    await subject.close()
    assert subject.client.is_closed  # the SDK owns the pool built over the transport


async def test_a_closed_client_says_so(subject: Subject, api: respx.Route) -> None:
    await subject.close()
    assert subject.client.is_closed
    with pytest.raises(ClientClosedError, match="closed"):
        await subject.ask("Hi")
    assert api.call_count == 0


async def test_your_own_http_client_is_never_closed(api: respx.Route) -> None:
    api.return_value = answer()
    sync_http, async_http = httpx.Client(), httpx.AsyncClient()
    with Client(http_client=sync_http) as client:
        client.ask("Hi")
    async with AsyncClient(http_client=async_http) as aclient:
        await aclient.ask("Hi")
    assert not sync_http.is_closed
    assert not async_http.is_closed
    sync_http.close()
    await async_http.aclose()


# Streams


async def test_a_stream_sends_nothing_until_iterated_and_closes_early(
    subject: Subject, api: respx.Route
) -> None:
    api.return_value = answer("Hello!")
    stream = subject.client.stream("Hi")
    assert api.call_count == 0
    if isinstance(stream, AsyncStream):
        async with stream as events:
            first = await events.__anext__()
        assert [event async for event in stream] == []
    else:
        with stream as events:
            first = next(events)
        assert list(stream) == []
    assert first == "Hello!"
    assert api.call_count == 1


async def test_every_error_is_a_pizzagpt_error(subject: Subject, api: respx.Route) -> None:
    api.return_value = httpx.Response(200, text="")
    with pytest.raises(PizzaGPTError):
        await subject.events("Hi")
