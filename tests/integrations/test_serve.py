"""`pizzagpt serve`, driven over real sockets on 127.0.0.1 by the `openai` package and plain HTTP.

The server under test runs uvicorn in a thread (or the real command in a subprocess); behind
it, the SDK's fake PizzaGPT over its own loopback server, scripted with `Reply` for each fault.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn

from pizzagpt_sdk import AsyncClient
from pizzagpt_sdk._cli import main
from pizzagpt_sdk.serve import create_app
from pizzagpt_sdk.testing import CITATIONS, FakePizzaGPT, Reply

pytestmark = pytest.mark.usefixtures("no_proxy_env")

ANSWER = "This is the offline PizzaGPT fake, not a model. You asked: "
COMMAND = [sys.executable, "-m", "pizzagpt_sdk", "serve"]


class Running:
    """A server under test: its base URL and the fake behind it."""

    def __init__(self, url: str, fake: FakePizzaGPT) -> None:
        self.url = url
        self.fake = fake

    def openai(self, **kwargs: Any) -> openai.OpenAI:
        kwargs.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=self.url + "/v1", api_key="unused", **kwargs)

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, trust_env=False)


@contextmanager
def running_app(app: Any) -> Iterator[str]:
    """An ASGI app under uvicorn in a thread, on a free port of 127.0.0.1: its base URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "uvicorn did not start"
            assert time.monotonic() < deadline, "uvicorn did not start in time"
            time.sleep(0.01)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


@contextmanager
def serving(fake: FakePizzaGPT, *, timeout: float = 5.0, **options: Any) -> Iterator[Running]:
    """`create_app` in front of `fake` (over its loopback server), under uvicorn in a thread."""
    with fake.serve() as upstream:
        client = upstream.async_client(max_retries=0, timeout=timeout)
        with running_app(create_app(client, on_shutdown=client.aclose, **options)) as url:
            yield Running(url, fake)


@pytest.fixture(scope="module")
def shared() -> Iterator[Running]:
    with serving(FakePizzaGPT(), heartbeat=30) as running:
        yield running


@pytest.fixture
def server(shared: Running) -> Iterator[Running]:
    yield shared
    assert shared.fake.pending == 0, "a test left scripted replies unused"


def user(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


# What works


def test_models_list_and_retrieve(server: Running) -> None:
    client = server.openai()
    assert [model.id for model in client.models.list()] == [
        "gpt-4o-mini",
        "gpt-4o-mini-2024-07-18",
        "pizzagpt",
    ]
    assert client.models.retrieve("pizzagpt").owned_by == "pizzagpt"
    with pytest.raises(openai.NotFoundError) as caught:
        client.models.retrieve("gpt-5")
    assert caught.value.code == "model_not_found"


def test_create(server: Running) -> None:
    completion = server.openai().chat.completions.create(
        model="gpt-4o-mini", messages=user("Why is the sky blue?")
    )
    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "gpt-4o-mini"
    [choice] = completion.choices
    assert choice.message.role == "assistant"
    assert choice.message.content == ANSWER + "Why is the sky blue?"
    assert choice.finish_reason == "stop"
    assert completion.usage is not None
    # An estimate, at four characters a token: PizzaGPT counts no tokens.
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 20)
    assert completion.usage.total_tokens == 25
    assert server.fake.requests[-1].prompt == "Why is the sky blue?"


def test_text_parts_and_roles_are_flattened_and_unknown_fields_ignored(server: Running) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "Be brief"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "2+"}, {"type": "text", "text": "2?"}],
        },
    ]
    completion = server.openai().chat.completions.create(
        model="pizzagpt",
        messages=messages,
        temperature=0.2,
        max_tokens=10,
        tool_choice="none",
        n=1,
        extra_body={"some_future_field": {"x": 1}},
    )
    assert completion.model == "pizzagpt"
    assert completion.choices[0].message.content == ANSWER + "2+2?"
    assert server.fake.requests[-1].prompt == "System: Be brief\nUser: 2+2?\nAssistant:"


def test_stream(server: Running) -> None:
    chunks = list(
        server.openai().chat.completions.create(
            model="gpt-4o-mini", messages=user("Hi"), stream=True
        )
    )
    assert [chunk.choices[0].delta.role for chunk in chunks] == ["assistant", None, None]
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == ANSWER + "Hi"
    assert [chunk.choices[0].finish_reason for chunk in chunks] == [None, None, "stop"]
    assert len({chunk.id for chunk in chunks}) == 1
    assert all(chunk.usage is None for chunk in chunks)


def test_stream_with_usage(server: Running) -> None:
    chunks = list(
        server.openai().chat.completions.create(
            model="gpt-4o-mini",
            messages=user("Hi"),
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    *answer, last = chunks
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 16  # 62 characters
    assert all(chunk.usage is None for chunk in answer)
    assert answer[-1].choices[0].finish_reason == "stop"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # openai's AsyncOpenAI runs on asyncio


@pytest.mark.anyio
async def test_async_client_create_and_stream(server: Running) -> None:
    async with openai.AsyncOpenAI(
        base_url=server.url + "/v1", api_key="unused", max_retries=0
    ) as client:
        completion = await client.chat.completions.create(model="gpt-4o-mini", messages=user("A"))
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=user("B"), stream=True
        )
        text = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    assert completion.choices[0].message.content == ANSWER + "A"
    assert text == ANSWER + "B"


def test_refusal(server: Running) -> None:
    client = server.openai()
    server.fake.script(Reply.answer(None, refusal="I can't."), Reply.answer("", refusal="No."))
    message = client.chat.completions.create(model="gpt-4o-mini", messages=user("x"))
    assert (message.choices[0].message.content, message.choices[0].message.refusal) == (
        None,
        "I can't.",
    )
    chunks = list(
        client.chat.completions.create(model="gpt-4o-mini", messages=user("x"), stream=True)
    )
    assert [chunk.choices[0].delta.refusal for chunk in chunks] == [None, "No.", None]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_web_search_options_turn_on_search_with_citations(server: Running) -> None:
    completion = server.openai().chat.completions.create(
        model="gpt-4o-mini", messages=user("News?"), web_search_options={}
    )
    assert server.fake.requests[-1].json["searchEnabled"] is True
    annotations = completion.choices[0].message.annotations or []
    assert [note.url_citation.url for note in annotations] == list(CITATIONS)


def test_sse_framing_over_plain_http(server: Running) -> None:
    body = {"model": "gpt-4o-mini", "messages": user("Hi"), "stream": True}
    with server.http() as http, http.stream("POST", "/v1/chat/completions", json=body) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert reply.headers["cache-control"] == "no-cache"
        raw = reply.read().decode()
    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert all(event.startswith("data: ") and "\n" not in event for event in events[:-1])
    first = json.loads(events[0].removeprefix("data: "))
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert first["object"] == "chat.completion.chunk"
    assert "usage" not in first  # only with include_usage


def test_health_and_openai_shaped_http_errors(server: Running) -> None:
    with server.http() as http:
        assert http.get("/health").json() == {"status": "ok"}
        missing = http.get("/v1/nothing")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "unknown_url"
        wrong_method = http.get("/v1/chat/completions")
        assert wrong_method.status_code == 405
        assert wrong_method.json()["error"]["code"] == "method_not_allowed"


def docs_examples() -> list[Any]:
    page = (Path(__file__).parents[2] / "docs" / "serve.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```py\n(.*?)^```", page, re.MULTILINE | re.DOTALL)
    # LangChain's block is shown, not run: langchain-openai is not among this session's peers.
    return [block for block in blocks if "langchain" not in block]


@pytest.mark.parametrize("code", docs_examples())
def test_docs_examples_run(server: Running, code: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = code.replace("http://127.0.0.1:8000", server.url)
    exec(compile(code, "docs/serve.md", "exec"), {})
    assert ANSWER + "Why is the sky blue?" in capsys.readouterr().out


# The caller's mistakes: 400 (404 for an unknown model)


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"n": 2}, "n=2"),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {"functions": [{"name": "f"}], "function_call": {"name": "f"}},
            "functions, function_call",
        ),
        ({"logprobs": True, "top_logprobs": 2}, "logprobs, top_logprobs"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"audio": {"voice": "alloy"}, "modalities": ["text", "audio"]}, "audio, modalities"),
    ],
)
def test_unsupported_parameters_are_refused_by_name(
    server: Running, fields: dict[str, Any], named: str
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        server.openai().chat.completions.create(
            model="gpt-4o-mini", messages=user("Hi"), extra_body=fields
        )
    assert caught.value.status_code == 400
    assert caught.value.code == "unsupported_parameter"
    assert f"unsupported parameter(s): {named} " in caught.value.message
    assert caught.value.param == named.partition("=")[0].partition(",")[0]


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"messages": user("Hi")}, "model", "must provide a model"),
        ({"model": "gpt-4o-mini"}, "messages", "non-empty array"),
        ({"model": "gpt-4o-mini", "messages": []}, "messages", "non-empty array"),
        ({"model": "gpt-4o-mini", "messages": user("   ")}, "messages", "empty"),
        ({"model": "gpt-4o-mini", "messages": ["Hi"]}, "messages", "mapping"),
        (
            {
                "model": "gpt-4o-mini",
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": "What is this?"},
                            {"type": "image_url", "image_url": {"url": "data:,"}},
                        ],
                    }
                ],
            },
            "messages[0].content[1]",
            "'image_url' are not supported",
        ),
        ({"model": "gpt-4o-mini", "messages": user("Hi"), "stream": "yes"}, "stream", "true"),
        (
            {"model": "gpt-4o-mini", "messages": user("Hi"), "stream_options": 1},
            "stream_options",
            "object",
        ),
    ],
)
def test_bad_requests(server: Running, body: dict[str, Any], param: str, words: str) -> None:
    calls = server.fake.calls
    with server.http() as http:  # openai's client checks model and messages itself
        reply = http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert words in error["message"]
    assert server.fake.calls == calls  # refused before anything was sent


def test_bad_request_through_openai(server: Running) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        server.openai().chat.completions.create(model="gpt-4o-mini", messages=[])
    assert caught.value.param == "messages"


def test_unknown_model_is_not_found(server: Running) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        server.openai().chat.completions.create(model="gpt-4o", messages=user("Hi"))
    assert caught.value.code == "model_not_found"
    assert "gpt-4o-mini" in caught.value.message


def test_body_not_json_or_too_large(server: Running) -> None:
    with server.http() as http:
        broken = http.post("/v1/chat/completions", content=b"{not json")
        assert broken.status_code == 400
        assert "not valid JSON" in broken.json()["error"]["message"]
        assert http.post("/v1/chat/completions", content=b"[1]").status_code == 400
        huge = http.post("/v1/chat/completions", content=b" " * (4 * 1024 * 1024 + 1))
        assert huge.status_code == 413
        assert huge.json()["error"]["code"] == "request_too_large"


# Upstream faults, as OpenAI clients see them


def test_upstream_rate_limit_is_429_with_retry_after(server: Running) -> None:
    server.fake.script(Reply.status(429).retry_after(7), Reply.status(429))
    client = server.openai()
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(model="gpt-4o-mini", messages=user("Hi"))
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["retry-after"] == "7"
    with pytest.raises(openai.RateLimitError) as caught:  # no Retry-After upstream: a default
        client.chat.completions.create(model="gpt-4o-mini", messages=user("Hi"), stream=True)
    assert caught.value.response.headers["retry-after"] == "5"


@pytest.mark.parametrize(
    ("reply", "status", "code", "retry"),
    [
        (Reply.misuse(), 403, "misuse_detected", "false"),
        (Reply.secret_rejected(), 502, "secret_rejected", "false"),
        (Reply.status(500), 502, "upstream_error", None),
        (Reply.html(403), 502, "upstream_error", None),
        (Reply.html(200), 502, "upstream_invalid_response", None),
        (Reply.answer("cut short").close_mid_body(), 502, "upstream_unreachable", None),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors_map_to_statuses_and_codes(
    server: Running, reply: Reply, status: int, code: str, retry: str | None, stream: bool
) -> None:
    server.fake.script(reply)
    with pytest.raises(openai.APIStatusError) as caught:
        server.openai().chat.completions.create(
            model="gpt-4o-mini", messages=user("Hi"), stream=stream
        )
    assert caught.value.status_code == status
    assert caught.value.code == code
    assert caught.value.response.headers.get("x-should-retry") == retry
    assert "Marinara" not in caught.value.message  # never the secret
    if code == "misuse_detected":
        assert isinstance(caught.value, openai.PermissionDeniedError)
        assert "'Misuse detected. please get in touch" in caught.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_upstream_timeout_is_504(stream: bool) -> None:
    with serving(FakePizzaGPT(), timeout=0.3) as quick:
        quick.fake.script(Reply.answer("late").delay(2))
        with pytest.raises(openai.InternalServerError) as caught:
            quick.openai().chat.completions.create(
                model="gpt-4o-mini", messages=user("Hi"), stream=stream
            )
    assert (caught.value.status_code, caught.value.code) == (504, "upstream_timeout")


def test_unreachable_upstream_is_502() -> None:
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]  # nothing listens there once it is closed
    upstream = AsyncClient(base_url=f"http://127.0.0.1:{port}", max_retries=0)
    with running_app(create_app(upstream, on_shutdown=upstream.aclose)) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model="gpt-4o-mini", messages=user("Hi"))
    assert (caught.value.status_code, caught.value.code) == (502, "upstream_unreachable")


# Streams that had begun, back-pressure, hanging up


def test_error_after_the_stream_began_is_a_data_event() -> None:
    with serving(FakePizzaGPT(), heartbeat=0.1) as running:
        running.fake.script(Reply.status(500).delay(0.35))
        stream = running.openai().chat.completions.create(
            model="gpt-4o-mini", messages=user("Hi"), stream=True
        )
        first = next(iter(stream))  # sent after 0.1 s of silence upstream
        assert first.choices[0].delta.role == "assistant"
        with pytest.raises(openai.APIError) as caught:
            next(iter(stream))
        assert caught.value.code == "upstream_error"
        assert "HTTP 500" in caught.value.message or "500" in caught.value.message

        running.fake.script(Reply.status(429).delay(0.35))
        body = {"model": "gpt-4o-mini", "messages": user("Hi"), "stream": True}
        with running.http() as http:
            reply = http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200
    events = reply.text.split("\n\n")
    assert events[1:3] == [": waiting for PizzaGPT"] * 2
    assert json.loads(events[-2].removeprefix("data: "))["error"]["code"] == "rate_limit_exceeded"
    assert "[DONE]" not in reply.text


def test_slow_answer_streams_after_a_heartbeat() -> None:
    with serving(FakePizzaGPT(), heartbeat=0.1) as running:
        running.fake.script(Reply.answer("Eventually.").delay(0.25))
        chunks = list(
            running.openai().chat.completions.create(
                model="gpt-4o-mini", messages=user("Hi"), stream=True
            )
        )
    assert [chunk.choices[0].delta.content for chunk in chunks] == ["", "Eventually.", None]


def test_requests_over_the_limit_get_503_and_upstream_calls_take_turns() -> None:
    with serving(FakePizzaGPT(), max_requests=2, upstream_concurrency=1) as running:
        running.fake.script(Reply.answer("one").delay(0.3), Reply.answer("two").delay(0.3))
        results: list[str | None] = []

        def ask() -> None:
            completion = running.openai().chat.completions.create(
                model="gpt-4o-mini", messages=user("Hi")
            )
            results.append(completion.choices[0].message.content)

        started = time.monotonic()
        workers = [threading.Thread(target=ask) for _ in range(2)]
        for worker in workers:
            worker.start()
        time.sleep(0.15)  # both are in: one answering, one waiting its turn
        with pytest.raises(openai.InternalServerError) as caught:
            running.openai().chat.completions.create(model="gpt-4o-mini", messages=user("Hi"))
        for worker in workers:
            worker.join(10)
        elapsed = time.monotonic() - started
    assert (caught.value.status_code, caught.value.code) == (503, "server_overloaded")
    assert caught.value.response.headers["retry-after"] == "1"
    assert sorted(results) == ["one", "two"]  # type: ignore[type-var]
    assert elapsed >= 0.6  # one upstream call at a time


def test_a_client_that_hangs_up_frees_its_place() -> None:
    with serving(FakePizzaGPT(), max_requests=1) as running, running.http() as http:
        running.fake.script(Reply.answer("too late").delay(3))
        body = {"model": "gpt-4o-mini", "messages": user("Hi")}
        with pytest.raises(httpx.ReadTimeout):
            http.post("/v1/chat/completions", json=body, timeout=0.3)
        time.sleep(0.2)
        reply = http.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200  # not 503: the first request's place was freed


@pytest.mark.parametrize(
    "options",
    [{"max_requests": 0}, {"upstream_concurrency": True}, {"heartbeat": 0}, {"heartbeat": "1"}],
)
def test_create_app_checks_its_options(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(options))):
        create_app(**options)


def test_create_app_as_a_factory_opens_and_closes_its_own_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with FakePizzaGPT().serve() as upstream:
        monkeypatch.setenv("PIZZAGPT_BASE_URL", upstream.url)
        with running_app(create_app()) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
            completion = client.chat.completions.create(model="gpt-4o-mini", messages=user("F"))
    assert completion.choices[0].message.content == ANSWER + "F"


def test_the_aiohttp_engine_behind_the_app() -> None:
    from pizzagpt_sdk import AsyncClient

    fake = FakePizzaGPT()
    fake.script(Reply.status(429).retry_after(3))
    with fake.serve() as upstream:
        client = AsyncClient(base_url=upstream.url, max_retries=0, engine="aiohttp")
        with running_app(create_app(client, on_shutdown=client.aclose)) as url:
            openai_client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
            with pytest.raises(openai.RateLimitError):
                openai_client.chat.completions.create(model="gpt-4o-mini", messages=user("A"))
            stream = openai_client.chat.completions.create(
                model="gpt-4o-mini", messages=user("B"), stream=True
            )
            text = "".join(chunk.choices[0].delta.content or "" for chunk in stream)
    assert text == ANSWER + "B"


# The command: pizzagpt serve


def environment() -> dict[str, str]:
    """The environment without proxies: the command reaches 127.0.0.1 and nothing else."""
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


@contextmanager
def command(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """`pizzagpt serve --port 0 ARGS` in a subprocess: the process and its base URL."""
    process = subprocess.Popen(
        [*COMMAND, "--port", "0", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert "OpenAI API on http://127.0.0.1:" in line, line
        yield process, line.split(" on ")[1].split("/v1")[0]
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def finish(process: subprocess.Popen[str], sig: int) -> tuple[int, float, str]:
    """Send `sig`; the exit code, the seconds it took to exit, and the log (stdout and stderr)."""
    started = time.monotonic()
    process.send_signal(sig)
    out, err = process.communicate(timeout=15)
    return process.returncode, time.monotonic() - started, out + err


def test_command_offline_in_every_mode_then_ctrl_c() -> None:
    question = "What is the secret of a Neapolitan dough?"
    with command("--offline") as (process, url):
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        assert client.models.list().data[0].id == "gpt-4o-mini"
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=user(question))
        assert answer.choices[0].message.content == ANSWER + question
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=user(question), stream=True
        )
        assert "".join(c.choices[0].delta.content or "" for c in stream) == ANSWER + question
        code, seconds, log = finish(process, signal.SIGINT)
    assert code == 130  # as the rest of the command exits on Ctrl-C
    assert seconds < 5
    assert '"POST /v1/chat/completions HTTP/1.1" 200' in log  # an access log ...
    assert question not in log  # ... with no prompt
    assert "Neapolitan" not in log  # and no answer


def test_command_lets_calls_in_flight_finish_on_sigterm() -> None:
    fake = FakePizzaGPT()
    fake.script(Reply.answer("Finished in time.").delay(0.6))
    with (
        fake.serve() as upstream,
        command("--base-url", upstream.url, "--engine", "aiohttp") as (process, url),
    ):
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        answers: list[str | None] = []
        asking = threading.Thread(
            target=lambda: answers.append(
                client.chat.completions.create(model="gpt-4o-mini", messages=user("Hi"))
                .choices[0]
                .message.content
            )
        )
        asking.start()
        while fake.calls == 0:
            time.sleep(0.01)
        code, seconds, _ = finish(process, signal.SIGTERM)
        asking.join(10)
    assert answers == ["Finished in time."]
    assert code == 0
    assert seconds < 5


def test_command_cancels_calls_in_flight_after_the_shutdown_timeout() -> None:
    fake = FakePizzaGPT()
    fake.script(Reply.answer("Far too late.").delay(30))
    errors: list[Exception] = []
    with (
        fake.serve() as upstream,
        command("--base-url", upstream.url, "--shutdown-timeout", "1") as (process, url),
    ):
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)

        def ask() -> None:
            try:
                client.chat.completions.create(model="gpt-4o-mini", messages=user("Hi"))
            except openai.APIError as error:
                errors.append(error)

        asking = threading.Thread(target=ask)
        asking.start()
        while fake.calls == 0:
            time.sleep(0.01)
        code, seconds, _ = finish(process, signal.SIGTERM)
        asking.join(10)
    assert code == 0
    assert 1 <= seconds < 5  # the bound, plus uvicorn's own 0.1 s and the process's exit
    assert len(errors) == 1  # the caller learns its call was cut off


def test_command_without_the_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if it were not installed
    assert main(["serve"]) == 1
    assert capsys.readouterr().err == (
        'pizzagpt serve needs the serve extra: pip install "pizzagpt-sdk[serve]"\n'
    )


def test_the_rest_of_the_command_does_not_load_the_server() -> None:
    code = (
        "import sys; from pizzagpt_sdk._cli import main; main(['--offline', 'Hi']); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('starlette', 'uvicorn')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.splitlines() == [ANSWER + "Hi", "[]"]


def test_command_aiohttp_engine_without_aiohttp(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "aiohttp", None)  # as if not installed,
    monkeypatch.delitem(sys.modules, "pizzagpt_sdk.engines._aiohttp", raising=False)  # nor loaded
    assert main(["serve", "--engine", "aiohttp", "--port", "0"]) == 1
    assert capsys.readouterr().err.endswith("pip install 'pizzagpt-sdk[aiohttp]'\n")


def test_command_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "extra"]) == 2
    assert capsys.readouterr().err == "pizzagpt: unexpected argument 'extra' after serve\n"
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = str(taken.getsockname()[1])
        assert main(["serve", "--offline", "--port", port]) == 1
    assert capsys.readouterr().err.startswith(f"pizzagpt: cannot listen on 127.0.0.1:{port}: ")
    for option in (["--port", "70000"], ["--max-requests", "0"], ["--max-requests", "x"]):
        with pytest.raises(SystemExit) as caught:
            main(["serve", *option])
        assert caught.value.code == 2
    assert "must be" in capsys.readouterr().err
