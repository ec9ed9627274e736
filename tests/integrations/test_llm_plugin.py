"""The `llm` plugin, tested as `llm` tests its plugins: `llm.get_model()` and the CLI through
click's `CliRunner`, with `LLM_USER_PATH` in a temporary folder, against the loopback fake."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

llm = pytest.importorskip("llm")

from click.testing import CliRunner  # noqa: E402
from llm.cli import cli  # noqa: E402
from pydantic import ValidationError  # noqa: E402

from pizzagpt_sdk._llm_plugin import AsyncPizzaGPT, PizzaGPT  # noqa: E402
from pizzagpt_sdk.testing import CITATIONS, FakePizzaGPT, FakeServer, Reply  # noqa: E402

from .docs_examples import examples, run_example  # noqa: E402

ANSWER = "This is the offline PizzaGPT fake, not a model. You asked: "


@pytest.fixture
def fake() -> FakePizzaGPT:
    return FakePizzaGPT()


@pytest.fixture
def server(
    fake: FakePizzaGPT,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    no_proxy_env: None,
) -> Iterator[FakeServer]:
    """The fake on 127.0.0.1, found through the SDK's environment variables, and `llm`'s
    keys, logs and settings in a temporary folder."""
    with fake.serve() as server:
        monkeypatch.setenv("PIZZAGPT_BASE_URL", server.url)
        monkeypatch.setenv("LLM_USER_PATH", str(tmp_path))
        yield server


def run(*args: str, input: str | None = None) -> str:
    """Run `llm ARGS` as a user would; it must succeed. Returns what it printed."""
    result = CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


# The model, through llm's Python API


def test_the_plugin_registers_both_models_under_their_aliases(server: FakeServer) -> None:
    for name in ("pizzagpt", "pizza", "pizzagpt-4o-mini"):
        assert isinstance(llm.get_model(name), PizzaGPT)
        assert isinstance(llm.get_async_model(name), AsyncPizzaGPT)
    assert "PizzaGPT: pizzagpt (gpt-4o-mini)" in run("models")


def test_a_prompt_streams_the_answer(server: FakeServer, fake: FakePizzaGPT) -> None:
    response = llm.get_model("pizzagpt").prompt("Hi")
    assert list(response) == [ANSWER + "Hi"]
    assert fake.requests[-1].prompt == "Hi"
    assert fake.requests[-1].json == {"question": "Hi"}  # nothing opted into
    assert response.json() == {"finish_reason": "stop", "citations": [], "refusal": None}
    assert response.resolved_model == "gpt-4o-mini"


def test_a_system_prompt_is_flattened_with_the_question(
    server: FakeServer, fake: FakePizzaGPT
) -> None:
    llm.get_model("pizzagpt").prompt("Hi", system="Be brief").text()
    assert fake.requests[-1].prompt == "System: Be brief\nUser: Hi\nAssistant:"


def test_a_conversation_sends_its_whole_history_over_one_connection(
    server: FakeServer, fake: FakePizzaGPT
) -> None:
    fake.script(Reply.answer("Flour, water, salt."))
    conversation = llm.get_model("pizzagpt").conversation()
    conversation.prompt("Dough?", system="Be brief").text()
    assert conversation.prompt("And then?").text() == ANSWER + "And then?"
    assert fake.requests[-1].prompt == (
        "System: Be brief\nUser: Dough?\nAssistant: Flour, water, salt.\n"
        "User: And then?\nAssistant:"
    )
    assert server.connections == 1  # the model's one Client, reused


def test_web_search_shows_and_logs_the_citations(server: FakeServer, fake: FakePizzaGPT) -> None:
    response = llm.get_model("pizzagpt").prompt("News?", search=True)
    sources = "\n".join(f"{n}. {url}" for n, url in enumerate(CITATIONS, start=1))
    assert response.text() == f"{ANSWER}News?\n\nSources:\n{sources}"
    assert fake.requests[-1].json == {"question": "News?", "searchEnabled": True}
    assert response.json() == {
        "finish_reason": "stop",
        "citations": list(CITATIONS),
        "refusal": None,
    }


def test_citations_can_be_logged_and_not_shown(server: FakeServer) -> None:
    response = llm.get_model("pizzagpt").prompt("News?", search=True, citations=False)
    assert response.text() == ANSWER + "News?"
    assert response.json()["citations"] == list(CITATIONS)


def test_a_refusal_is_shown_as_the_answer(server: FakeServer, fake: FakePizzaGPT) -> None:
    fake.script(Reply.answer("", refusal="I cannot help with that."))
    response = llm.get_model("pizzagpt").prompt("Hack?")
    assert response.text() == "I cannot help with that."
    assert response.json()["finish_reason"] == "refusal"


def test_retries_follow_the_option(server: FakeServer, fake: FakePizzaGPT) -> None:
    model = llm.get_model("pizzagpt")
    fake.script(Reply.status(503).retry_after(0), Reply.answer("Ciao!"))
    assert model.prompt("Hi", max_retries=1).text() == "Ciao!"
    assert fake.calls == 2
    fake.script(Reply.status(503).retry_after(0), Reply.answer("Ciao!"))
    with pytest.raises(llm.ModelError, match="503"):
        model.prompt("Hi", max_retries=0).text()


def test_the_timeout_option_bounds_each_wait(server: FakeServer, fake: FakePizzaGPT) -> None:
    fake.script(Reply.answer("Late.").delay(2))
    with pytest.raises(llm.ModelError, match=r"(?i)timed out"):
        llm.get_model("pizzagpt").prompt("Hi", timeout=0.2, max_retries=0).text()


def test_the_deadline_option_bounds_the_call(server: FakeServer, fake: FakePizzaGPT) -> None:
    fake.script(Reply.answer("Late.").delay(2), Reply.answer("Late.").delay(2))
    with pytest.raises(llm.ModelError, match=r"deadline of 0.3 s ran out"):
        llm.get_model("pizzagpt").prompt("Hi", deadline=0.3, max_retries=5).text()
    assert fake.calls == 1  # no retry: the deadline had passed


def test_bad_options_are_refused_before_anything_is_sent(
    server: FakeServer, fake: FakePizzaGPT
) -> None:
    model = llm.get_model("pizzagpt")
    for options in ({"timeout": 0}, {"max_retries": -1}, {"temperature": 1}):
        with pytest.raises(ValidationError, match="validation error"):
            model.prompt("Hi", **options)
    assert fake.calls == 0


def test_an_sdk_error_is_an_llm_model_error_with_the_sdk_message(
    server: FakeServer, fake: FakePizzaGPT
) -> None:
    fake.script(Reply.misuse())
    with pytest.raises(llm.ModelError, match=r"(?i)misuse") as caught:
        llm.get_model("pizzagpt").prompt("Hi").text()
    assert type(caught.value.__cause__).__name__ == "MisuseDetectedError"


# The async model


@pytest.mark.anyio
async def test_the_async_model_streams_and_keeps_one_pool_per_loop(
    server: FakeServer, fake: FakePizzaGPT
) -> None:
    model = llm.get_async_model("pizzagpt")
    assert str(model) == "PizzaGPT: pizzagpt (gpt-4o-mini)"
    chunks = [chunk async for chunk in model.prompt("Hi", system="Be brief")]
    assert chunks == [ANSWER + "Hi"]  # the fake quotes the last `User:` line
    conversation = model.conversation()
    await conversation.prompt("One").text()
    assert await conversation.prompt("Two", search=True, citations=False).text() == (ANSWER + "Two")
    assert fake.requests[-1].prompt == f"User: One\nAssistant: {ANSWER}One\nUser: Two\nAssistant:"
    assert server.connections == 1


@pytest.mark.anyio
async def test_the_async_model_raises_llm_errors(server: FakeServer, fake: FakePizzaGPT) -> None:
    fake.script(Reply.html(503))
    with pytest.raises(llm.ModelError, match="503"):
        await llm.get_async_model("pizzagpt").prompt("Hi", max_retries=0).text()


def test_one_async_model_serves_one_event_loop_after_another(
    server: FakeServer, fake: FakePizzaGPT
) -> None:
    """`llm --async` runs each prompt in its own `asyncio.run()`: a pool from an ended loop
    must not be reused, and each loop's pool is closed as its loop ends."""
    model = llm.get_async_model("pizzagpt")

    async def ask(question: str) -> str:
        text: str = await model.prompt(question).text()
        return text

    assert asyncio.run(ask("One")) == ANSWER + "One"
    assert asyncio.run(ask("Two")) == ANSWER + "Two"
    assert server.connections == 2  # a pool per loop, each closed with its loop


# The command line, as a user runs it


def test_the_cli_asks_continues_chats_and_logs(server: FakeServer, fake: FakePizzaGPT) -> None:
    assert run("-m", "pizzagpt", "hi") == ANSWER + "hi\n"
    assert run("-c", "and then?") == ANSWER + "and then?\n"
    assert (
        fake.requests[-1].prompt == f"User: hi\nAssistant: {ANSWER}hi\nUser: and then?\nAssistant:"
    )

    chat = run("chat", "-m", "pizza", "-s", "Be brief", input="first\nsecond\nquit\n")
    # CliRunner echoes what is typed after each `> `.
    assert f"> first\n{ANSWER}first\n> second\n{ANSWER}second\n> quit\n" in chat
    assert fake.requests[-1].prompt == (
        f"System: Be brief\nUser: first\nAssistant: {ANSWER}first\nUser: second\nAssistant:"
    )

    logs = json.loads(run("logs", "-n", "0", "--json"))
    assert [entry["prompt"] for entry in logs] == ["hi", "and then?", "first", "second"]
    assert all(entry["model"] == "pizzagpt" for entry in logs)
    assert logs[0]["response_json"]["finish_reason"] == "stop"


def test_the_cli_takes_options_and_the_async_model(server: FakeServer, fake: FakePizzaGPT) -> None:
    output = run("-m", "pizzagpt", "-o", "search", "1", "-o", "timeout", "30", "News?")
    assert output.endswith(f"2. {CITATIONS[1]}\n")
    assert fake.requests[-1].json == {"question": "News?", "searchEnabled": True}
    assert run("-m", "pizzagpt", "--async", "--no-stream", "Hi") == ANSWER + "Hi\n"


def test_the_cli_reports_an_error_in_one_line(server: FakeServer, fake: FakePizzaGPT) -> None:
    fake.script(Reply.misuse())
    result = CliRunner().invoke(cli, ["-m", "pizzagpt", "Hi"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ")
    assert "misuse" in result.output.lower()
    assert "Traceback" not in result.output
    assert fake.requests[-1].headers["x-secret"] not in result.output


@pytest.mark.parametrize("code", examples("llm.md"))
def test_the_docs_examples_run(
    code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_example(code, tmp_path, monkeypatch)
    assert capsys.readouterr().out.strip()
