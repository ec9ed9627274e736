"""Conversations and batches over the loopback fake: one test body for both clients and every
engine that can run in the test's world."""

from __future__ import annotations

import io
import sys
import threading
import time
import types
from typing import Any

import pytest

from pizzagpt_sdk import (
    Answer,
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
from pizzagpt_sdk.testing import FakePizzaGPT, FakeServer, Reply

from .conftest import Subject, _resolve

pytestmark = pytest.mark.anyio

#: What the fake answers when nothing is scripted, before the prompt's last question.
ECHO = "This is the offline PizzaGPT fake, not a model. You asked: "


def boom() -> Reply:
    return Reply.status(500, {"statusCode": 500, "message": "boom"})


def prompts_sent(fake: FakePizzaGPT) -> list[str | None]:
    return [request.prompt for request in fake.requests]


# Conversations


async def test_a_conversation_sends_the_whole_history(
    client: Subject, served_fake: FakePizzaGPT
) -> None:
    served_fake.script(Reply.answer("Hello!"), Reply.answer("Then this."))
    chat = client.client.conversation(system="Be brief")
    first = await _resolve(chat.ask("Hi"))
    second = await _resolve(chat.ask("And then?"))
    assert (first.text, second.text) == ("Hello!", "Then this.")
    assert prompts_sent(served_fake) == [
        "System: Be brief\nUser: Hi\nAssistant:",
        "System: Be brief\nUser: Hi\nAssistant: Hello!\nUser: And then?\nAssistant:",
    ]
    assert chat.messages == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "And then?"},
        {"role": "assistant", "content": "Then this."},
    ]


async def test_a_turn_is_kept_only_when_its_stream_finishes(
    client: Subject, served_fake: FakePizzaGPT
) -> None:
    served_fake.script(
        Reply.status(500),
        Reply.answer("kept"),
        Reply.answer("abandoned"),
        Reply.answer("streamed"),
    )
    chat = client.client.conversation(messages=[{"role": "user", "content": "earlier"}])
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
    assert served_fake.calls == 4


async def _take(stream: Any, count: int) -> list[Any]:
    """Take `count` events from a stream, then close it."""
    events = []
    if hasattr(stream, "__anext__"):
        async with stream:
            for _ in range(count):
                events.append(await stream.__anext__())
    else:
        with stream:
            events = [next(stream) for _ in range(count)]
    return events


async def test_history_is_editable_resettable_and_convertible(
    client: Subject, served_fake: FakePizzaGPT
) -> None:
    chat = client.client.conversation(system="S")
    chat.messages.append({"role": "user", "content": "edited in"})
    chat.messages.append({"role": "assistant", "content": "by hand"})
    assert (await _resolve(chat.ask("Q"))).text == f"{ECHO}Q"
    assert prompts_sent(served_fake) == [
        "System: S\nUser: edited in\nAssistant: by hand\nUser: Q\nAssistant:"
    ]
    copy = chat.to_messages()
    copy.clear()
    assert len(chat.messages) == 5
    chat.reset()
    assert chat.messages == [{"role": "system", "content": "S"}]
    again = client.client.conversation(messages=chat.to_messages())
    assert again.messages == chat.messages
    assert again.system is None
    with pytest.raises(InvalidTypeError, match="message 0"):
        client.client.conversation(messages=["not a mapping"])  # type: ignore[list-item]
    with pytest.raises(InvalidTypeError, match="system"):
        client.client.conversation(system=42)  # type: ignore[arg-type]


# Batches


async def test_map_answers_in_order_with_progress(
    client: Subject, served_fake: FakePizzaGPT
) -> None:
    progress: list[BatchProgress] = []
    answers = await _resolve(
        client.client.map([f"q{n}" for n in range(7)], concurrency=3, on_progress=progress.append)
    )
    assert [answer.text for answer in answers] == [f"{ECHO}q{n}" for n in range(7)]
    assert [(p.done, p.total, p.failed) for p in progress] == [(n, 7, 0) for n in range(1, 8)]
    assert sorted(p.index for p in progress) == list(range(7))
    assert served_fake.calls == 7


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


async def test_map_keeps_concurrency_bounded(
    client: Subject, served: FakeServer, served_fake: FakePizzaGPT
) -> None:
    """Every reply takes a while, so calls overlap; HTTP/1.1 carries one request at a time per
    connection, so the connections the server accepted bound the calls in flight. A pool opens
    a new one only when all its others are busy: as many as the limit, and no more."""
    limit, total = 3, 9
    served_fake.script(*[Reply.answer("slow").delay(0.1)] * total)
    answers = await _resolve(client.client.map([f"q{n}" for n in range(total)], concurrency=limit))
    assert [answer.text for answer in answers] == ["slow"] * total
    assert served.connections == limit


async def test_map_errors_are_returned_or_raised(
    client: Subject, served_fake: FakePizzaGPT
) -> None:
    prompts = ["a", "FAIL b", "c"]
    served_fake.script(Reply.answer("A"), boom(), Reply.answer("C"))
    results = await _resolve(
        client.client.map(prompts, concurrency=1, return_exceptions=True, max_retries=0)
    )
    assert isinstance(results[0], Answer)
    assert isinstance(results[1], InternalServerError)
    assert isinstance(results[2], Answer)
    assert [result.text for result in (results[0], results[2])] == ["A", "C"]
    served_fake.script(Reply.answer("A"), boom(), Reply.answer("C"))
    with pytest.raises(InternalServerError, match="boom"):
        await _resolve(client.client.map(prompts, concurrency=1, max_retries=0))
    assert prompts_sent(served_fake)[3:] == ["a", "FAIL b"]  # nothing started after the failure


async def test_map_rate_limit_spaces_requests(
    client: Subject, served_fake: FakePizzaGPT, sleeps: list[float]
) -> None:
    clock = FakeClock()
    limiter = RateLimiter(30, clock=clock)  # one request every 2 s
    await _resolve(client.client.map(["a", "b", "c", "d"], concurrency=1, rate_limit=limiter))
    assert sleeps == [2.0, 4.0, 6.0]  # the clock stood still: each waits one more slot
    clock.now += 100
    await _resolve(client.client.map(["e"], rate_limit=limiter))
    assert sleeps == [2.0, 4.0, 6.0]  # long after: no wait
    plain = await _resolve(client.client.map(["f", "g"], rate_limit=6000))
    assert len(plain) == 2
    assert served_fake.calls == 7


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


BAD_BATCHES: list[tuple[Any, dict[str, Any], type[PizzaGPTError], str]] = [
    (["ok", ""], {}, InvalidValueError, r"prompts\[1\]"),
    (["ok", [{"role": 1, "content": "x"}]], {}, InvalidTypeError, r"prompts\[1\]"),
    ("one string", {}, InvalidTypeError, "not one string"),
    (["ok"], {"concurrency": 0}, InvalidValueError, "concurrency"),
    (["ok"], {"concurrency": "4"}, InvalidTypeError, "concurrency"),
    (["ok"], {"rate_limit": -1}, InvalidValueError, "rate limit"),
    (["ok"], {"rate_limit": "fast"}, InvalidTypeError, "rate limit"),
    (["ok"], {"temperature": 1}, InvalidTypeError, "temperature"),
]


async def test_map_refuses_bad_input_before_sending(
    client: Subject, served_fake: FakePizzaGPT, subtests: pytest.Subtests
) -> None:
    """The cases run as subtests of one test per engine: a client and a server for each case
    would cost far more than the case itself."""
    for prompts, kwargs, error, match in BAD_BATCHES:
        with subtests.test(msg=f"{prompts!r} {kwargs!r}"):
            with pytest.raises(error, match=match):
                await _resolve(client.client.map(prompts, **kwargs))
            assert served_fake.calls == 0


async def test_map_of_nothing_is_empty(client: Subject, served_fake: FakePizzaGPT) -> None:
    assert await _resolve(client.client.map([])) == []
    assert served_fake.calls == 0


async def test_a_progress_bar_draws_the_batch(client: Subject, served_fake: FakePizzaGPT) -> None:
    served_fake.script(boom())  # whichever prompt comes first fails
    out = io.StringIO()
    with ProgressBar(file=out, use_tqdm=False) as bar:
        await _resolve(
            client.client.map(
                ["a", "b", "c"], return_exceptions=True, on_progress=bar, max_retries=0
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
