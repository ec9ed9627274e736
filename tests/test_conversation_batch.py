"""Conversations and batches, one test body for both clients, on asyncio and trio."""

from __future__ import annotations

import io
import json
import sys
import threading
import time
import types
from typing import Any

import anyio
import httpx
import pytest
import respx

from pizzagpt_sdk import (
    Answer,
    AsyncClient,
    BatchProgress,
    FinishReason,
    InternalServerError,
    InvalidTypeError,
    InvalidValueError,
    PizzaGPTError,
    ProgressBar,
    RateLimiter,
)
from pizzagpt_sdk.core import Batch

from .conftest import Subject, _resolve

pytestmark = pytest.mark.anyio


def echo(request: httpx.Request) -> httpx.Response:
    question = json.loads(request.content)["question"]
    if "FAIL" in question:
        return httpx.Response(500, json={"statusCode": 500, "message": "boom"})
    return httpx.Response(200, json={"content": f"echo: {question}", "refusal": None})


def prompts_sent(api: respx.Route) -> list[str]:
    return [json.loads(call.request.content)["question"] for call in api.calls]


# Conversations


async def test_a_conversation_sends_the_whole_history(subject: Subject, api: respx.Route) -> None:
    api.side_effect = echo
    chat = subject.client.conversation(system="Be brief")
    first = await _resolve(chat.ask("Hi"))
    second = await _resolve(chat.ask("And then?"))
    assert prompts_sent(api) == [
        "System: Be brief\nUser: Hi\nAssistant:",
        "System: Be brief\nUser: Hi\nAssistant: echo: System: Be brief\nUser: Hi\nAssistant:\n"
        "User: And then?\nAssistant:",
    ]
    assert chat.messages == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": first.text},
        {"role": "user", "content": "And then?"},
        {"role": "assistant", "content": second.text},
    ]


async def test_a_turn_is_kept_only_when_its_stream_finishes(
    subject: Subject, api: respx.Route
) -> None:
    api.side_effect = [
        httpx.Response(500),
        httpx.Response(200, json={"content": "kept"}),
        httpx.Response(200, json={"content": "abandoned"}),
        httpx.Response(200, json={"content": "streamed"}),
    ]
    chat = subject.client.conversation(messages=[{"role": "user", "content": "earlier"}])
    with pytest.raises(InternalServerError):
        await _resolve(chat.ask("fails", max_retries=0))
    assert chat.to_messages() == [{"role": "user", "content": "earlier"}]
    await _resolve(chat.ask("works"))
    assert len(chat.messages) == 3
    stream = chat.stream("left early")
    events = await _take(stream, 1)  # the text, not the FinishReason
    assert events == ["abandoned"]
    assert len(chat.messages) == 3
    stream = chat.stream({"role": "user", "content": [{"type": "text", "text": "parts"}]})
    await _take(stream, 2)
    assert stream.answer is not None
    assert stream.answer.text == "streamed"
    assert chat.messages[-2:] == [
        {"role": "user", "content": [{"type": "text", "text": "parts"}]},
        {"role": "assistant", "content": "streamed"},
    ]


async def _take(stream: Any, count: int) -> list[Any]:
    """Take `count` events from a stream, then close it."""
    events = []
    if subject_is_async(stream):
        async with stream:
            for _ in range(count):
                events.append(await stream.__anext__())
    else:
        with stream:
            events = [next(stream) for _ in range(count)]
    return events


def subject_is_async(stream: Any) -> bool:
    return hasattr(stream, "__anext__")


async def test_history_is_editable_resettable_and_convertible(
    subject: Subject, api: respx.Route
) -> None:
    api.side_effect = echo
    chat = subject.client.conversation(system="S")
    chat.messages.append({"role": "user", "content": "edited in"})
    chat.messages.append({"role": "assistant", "content": "by hand"})
    await _resolve(chat.ask("Q"))
    assert (
        prompts_sent(api)[-1]
        == "System: S\nUser: edited in\nAssistant: by hand\nUser: Q\nAssistant:"
    )
    copy = chat.to_messages()
    copy.clear()
    assert len(chat.messages) == 5
    chat.reset()
    assert chat.messages == [{"role": "system", "content": "S"}]
    again = subject.client.conversation(messages=chat.to_messages())
    assert again.messages == chat.messages
    assert again.system is None
    with pytest.raises(InvalidTypeError, match="message 0"):
        subject.client.conversation(messages=["not a mapping"])  # type: ignore[list-item]
    with pytest.raises(InvalidTypeError, match="system"):
        subject.client.conversation(system=42)  # type: ignore[arg-type]


# Batches


async def test_map_answers_in_order_with_progress(subject: Subject, api: respx.Route) -> None:
    api.side_effect = echo
    progress: list[BatchProgress] = []
    answers = await _resolve(
        subject.client.map([f"q{n}" for n in range(7)], concurrency=3, on_progress=progress.append)
    )
    assert [answer.text for answer in answers] == [f"echo: q{n}" for n in range(7)]
    assert [(p.done, p.total, p.failed) for p in progress] == [(n, 7, 0) for n in range(1, 8)]
    assert sorted(p.index for p in progress) == list(range(7))


def test_progress_reaches_the_callback_one_report_at_a_time_in_order() -> None:
    """Two workers finish together: the second report waits for the first callback to return
    (a text bar written from two threads at once could end on "2/3" after "3/3")."""
    seen: list[int] = []
    overlapping: list[int] = []
    inside = threading.Event()
    running = threading.Lock()

    def on_progress(progress: BatchProgress) -> None:
        if not running.acquire(blocking=False):
            overlapping.append(progress.done)
            return
        try:
            seen.append(progress.done)
            if progress.done == 1:
                inside.set()
                time.sleep(0.2)  # the other report, were it not held back, would come now
        finally:
            running.release()

    batch = Batch(
        ["a", "b"], concurrency=2, rate_limiter=None, return_exceptions=False,
        on_progress=on_progress,
    )  # fmt: skip
    answer = Answer(text="x", finish_reason=FinishReason("stop"))
    first = threading.Thread(target=batch.finished, args=(0, answer))
    first.start()
    assert inside.wait(5)
    second = threading.Thread(target=batch.finished, args=(1, answer))
    second.start()
    first.join(5)
    second.join(5)
    assert overlapping == []
    assert seen == [1, 2]


async def test_map_keeps_concurrency_bounded(subject: Subject, api: respx.Route) -> None:
    """The mock server counts requests in flight; the first three wait for each other."""
    limit, total = 3, 9
    state = {"in_flight": 0, "most": 0}
    lock = threading.Lock()

    def enter() -> None:
        with lock:
            state["in_flight"] += 1
            state["most"] = max(state["most"], state["in_flight"])

    def leave(request: httpx.Request) -> httpx.Response:
        with lock:
            state["in_flight"] -= 1
        return echo(request)

    if subject.is_async:
        full = anyio.Event()

        async def async_side_effect(request: httpx.Request) -> httpx.Response:
            enter()
            if state["in_flight"] == limit:
                full.set()
            with anyio.fail_after(5):
                await full.wait()
            return leave(request)

        api.side_effect = async_side_effect
    else:
        barrier = threading.Barrier(limit, timeout=5)

        def sync_side_effect(request: httpx.Request) -> httpx.Response:
            enter()
            if len(api.calls) <= limit:
                barrier.wait()  # the first `limit` requests are all in flight at once
            return leave(request)

        api.side_effect = sync_side_effect
    answers = await _resolve(subject.client.map([f"q{n}" for n in range(total)], concurrency=limit))
    assert len(answers) == total
    assert state["most"] == limit


async def test_map_errors_are_returned_or_raised(subject: Subject, api: respx.Route) -> None:
    api.side_effect = echo
    prompts = ["a", "FAIL b", "c"]
    results = await _resolve(
        subject.client.map(prompts, concurrency=1, return_exceptions=True, max_retries=0)
    )
    assert isinstance(results[0], Answer)
    assert isinstance(results[1], InternalServerError)
    assert isinstance(results[2], Answer)
    api.reset()
    with pytest.raises(InternalServerError, match="boom"):
        await _resolve(subject.client.map(prompts, concurrency=1, max_retries=0))
    assert prompts_sent(api) == ["a", "FAIL b"]  # nothing started after the failure


async def test_map_rate_limit_spaces_requests(
    subject: Subject, api: respx.Route, sleeps: list[float]
) -> None:
    api.side_effect = echo
    clock = FakeClock()
    limiter = RateLimiter(30, clock=clock)  # one request every 2 s
    await _resolve(subject.client.map(["a", "b", "c", "d"], concurrency=1, rate_limit=limiter))
    assert sleeps == [2.0, 4.0, 6.0]  # the clock stood still: each waits one more slot
    clock.now += 100
    await _resolve(subject.client.map(["e"], rate_limit=limiter))
    assert sleeps == [2.0, 4.0, 6.0]  # long after: no wait
    plain = await _resolve(subject.client.map(["f", "g"], rate_limit=6000))
    assert len(plain) == 2


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("prompts", "kwargs", "error", "match"),
    [
        (["ok", ""], {}, InvalidValueError, r"prompts\[1\]"),
        (["ok", [{"role": 1, "content": "x"}]], {}, InvalidTypeError, r"prompts\[1\]"),
        ("one string", {}, InvalidTypeError, "not one string"),
        (["ok"], {"concurrency": 0}, InvalidValueError, "concurrency"),
        (["ok"], {"concurrency": "4"}, InvalidTypeError, "concurrency"),
        (["ok"], {"rate_limit": -1}, InvalidValueError, "rate limit"),
        (["ok"], {"rate_limit": "fast"}, InvalidTypeError, "rate limit"),
        (["ok"], {"temperature": 1}, InvalidTypeError, "temperature"),
    ],
)
async def test_map_refuses_bad_input_before_sending(
    subject: Subject,
    api: respx.Route,
    prompts: Any,
    kwargs: dict[str, Any],
    error: type[PizzaGPTError],
    match: str,
) -> None:
    with pytest.raises(error, match=match):
        await _resolve(subject.client.map(prompts, **kwargs))
    assert api.call_count == 0


async def test_map_of_nothing_is_empty(subject: Subject, api: respx.Route) -> None:
    assert await _resolve(subject.client.map([])) == []
    assert isinstance(subject.client, AsyncClient) is subject.is_async


async def test_a_progress_bar_draws_the_batch(subject: Subject, api: respx.Route) -> None:
    api.side_effect = echo
    out = io.StringIO()
    with ProgressBar(file=out, use_tqdm=False) as bar:
        await _resolve(
            subject.client.map(
                ["a", "FAIL", "c"], return_exceptions=True, on_progress=bar, max_retries=0
            )
        )
    drawn = out.getvalue()
    assert drawn.endswith(f"\r[{'#' * 30}] 3/3, 1 failed\n")
    assert "1/3" in drawn


def test_a_progress_bar_uses_tqdm_when_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[FakeTqdm] = []

    class FakeTqdm:
        def __init__(self, *, total: int, file: Any, unit: str) -> None:
            self.total, self.n, self.closed = total, 0, False
            self.postfix: dict[str, Any] = {}
            made.append(self)

        def update(self, count: int) -> None:
            self.n += count

        def set_postfix(self, **values: Any) -> None:
            self.postfix = values

        def close(self) -> None:
            self.closed = True

    auto = types.ModuleType("tqdm.auto")
    auto.tqdm = FakeTqdm  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tqdm", types.ModuleType("tqdm"))
    monkeypatch.setitem(sys.modules, "tqdm.auto", auto)
    with ProgressBar() as bar:
        bar(BatchProgress(done=1, total=2, failed=0, index=1))
        bar(BatchProgress(done=2, total=2, failed=1, index=0))
    (tqdm,) = made
    assert (tqdm.total, tqdm.n, tqdm.closed) == (2, 2, True)
    assert tqdm.postfix == {"failed": 1, "refresh": False}


def test_a_progress_bar_falls_back_to_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # as if tqdm were not installed
    out = io.StringIO()
    bar = ProgressBar(file=out)
    bar(BatchProgress(done=1, total=4, failed=0, index=0))
    bar.close()
    bar.close()
    assert out.getvalue() == f"\r[{'#' * 7}{'.' * 23}] 1/4\n"


def test_a_text_bar_drawn_by_workers_ends_drawn_by_the_closing_thread() -> None:
    """A notebook kernel (ipykernel 6) can send a worker's output to an earlier cell: the last
    state is drawn again by the thread that closes the bar, so the cell shows "3/3"."""

    class PerThread(io.StringIO):
        def __init__(self) -> None:
            super().__init__()
            self.by_thread: dict[int, str] = {}

        def write(self, text: str) -> int:
            ident = threading.get_ident()
            self.by_thread[ident] = self.by_thread.get(ident, "") + text
            return super().write(text)

    out = PerThread()
    with ProgressBar(file=out, use_tqdm=False) as bar:
        for done in (1, 2, 3):
            worker = threading.Thread(
                target=bar, args=(BatchProgress(done=done, total=3, failed=0, index=done - 1),)
            )
            worker.start()
            worker.join()
    assert out.by_thread[threading.get_ident()] == f"\r[{'#' * 30}] 3/3\n"
    assert out.getvalue().endswith(f"\r[{'#' * 30}] 3/3\r[{'#' * 30}] 3/3\n")
