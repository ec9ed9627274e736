"""`ChatPizzaGPT` against LangChain's own standard suites (langchain-tests), then what they do
not cover: the flattening, metadata, stop sequences, errors and the clients' lifetimes. Every
request goes to the loopback fake."""

from __future__ import annotations

import asyncio
import copy
import gc
import json
import subprocess
import sys
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests
from pydantic import SecretStr

from pizzagpt_sdk import APIConnectionError, FinishReason, MisuseDetectedError
from pizzagpt_sdk.langchain import ChatPizzaGPT, _Reader
from pizzagpt_sdk.testing import CITATIONS, FakePizzaGPT, FakeServer, Reply

from .docs_examples import examples, run_example

# LangChain's async methods need asyncio; every test runs without environment proxies, so
# that the model's own pools reach 127.0.0.1 directly.
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_proxy_env")]

ANSWER = "This is the offline PizzaGPT fake, not a model. You asked: "


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def suite_server() -> Iterator[FakeServer]:
    """One fake server for the standard suites, which only need answers."""
    with FakePizzaGPT().serve() as server:
        yield server


class Unsupported:
    """What PizzaGPT does not offer, declared through the suites' own properties."""

    @property
    def chat_model_class(self) -> type[ChatPizzaGPT]:
        return ChatPizzaGPT

    has_tool_calling = False
    has_tool_choice = False
    has_structured_output = False
    supports_json_mode = False
    supports_image_inputs = False
    supports_image_urls = False
    supports_image_tool_message = False
    supports_pdf_inputs = False
    supports_pdf_tool_message = False
    supports_audio_inputs = False
    supports_video_inputs = False
    supports_anthropic_inputs = False
    returns_usage_metadata = False  # the service reports no token counts
    supports_model_override = False  # the service has one model
    enable_vcr_tests = False  # nothing to record: the fake is the service here


class TestChatPizzaGPTUnit(Unsupported, ChatModelUnitTests):
    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"base_url": "http://127.0.0.1:9"}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {"PIZZAGPT_BASE_URL": "http://127.0.0.1:9", "PIZZAGPT_SECRET": "Salame"},
            {},
            {"base_url": "http://127.0.0.1:9", "secret": "Salame"},
        )


class TestChatPizzaGPTIntegration(Unsupported, ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _serve(self, suite_server: FakeServer) -> None:
        self.url = suite_server.url

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"base_url": self.url}


# Beyond the standard suites


@pytest.fixture
def fake() -> FakePizzaGPT:
    return FakePizzaGPT()


@pytest.fixture
def server(fake: FakePizzaGPT) -> Iterator[FakeServer]:
    with fake.serve() as server:
        yield server


@pytest.fixture
def model(server: FakeServer) -> ChatPizzaGPT:
    return ChatPizzaGPT(base_url=server.url, max_retries=0)


def test_messages_are_flattened_as_the_sdk_does(model: ChatPizzaGPT, fake: FakePizzaGPT) -> None:
    model.invoke(
        [
            ("system", "Be brief"),
            ("human", "Hi"),
            ("ai", "Hello!"),
            HumanMessage(
                [
                    {"type": "text", "text": "2+2?"},
                    {"type": "image_url", "image_url": {"url": "http://127.0.0.1/a.png"}},
                ],
                name="bob",
            ),
        ]
    )
    assert fake.requests[-1].prompt == (
        "System: Be brief\nUser: Hi\nAssistant: Hello!\nUser: 2+2?\nAssistant:"
    )
    assert fake.requests[-1].json == {"question": fake.requests[-1].prompt}


def test_the_flattening_variants_are_fields(server: FakeServer, fake: FakePizzaGPT) -> None:
    model = ChatPizzaGPT(base_url=server.url, include_system=False, assistant_suffix=False)
    model.invoke([("system", "Be brief"), ("human", "Hi"), ("ai", "Hello")])
    assert fake.requests[-1].prompt == "User: Hi\nAssistant: Hello"


def test_the_answer_carries_its_finish_reason_and_citations(
    model: ChatPizzaGPT, fake: FakePizzaGPT
) -> None:
    message = model.invoke("News?", search=True)
    assert message.content == ANSWER + "News?"
    assert message.response_metadata == {
        "finish_reason": "stop",
        "citations": list(CITATIONS),
        "model_name": "gpt-4o-mini",
    }
    assert fake.requests[-1].json == {"question": "News?", "searchEnabled": True}


def test_fields_are_the_per_call_defaults(server: FakeServer, fake: FakePizzaGPT) -> None:
    model = ChatPizzaGPT(base_url=server.url, search=True, model="gpt-4o-mini")
    chunks = list(model.stream("News?"))
    assert chunks[-1].response_metadata["citations"] == list(CITATIONS)
    assert fake.requests[-1].json == {
        "question": "News?",
        "model": "gpt-4o-mini",
        "searchEnabled": True,
    }
    model.invoke("News?", search=False)
    assert fake.requests[-1].json["searchEnabled"] is False


def test_a_stream_ends_with_one_last_chunk_of_metadata(model: ChatPizzaGPT) -> None:
    chunks = list(model.stream("Hi"))
    assert [chunk.content for chunk in chunks] == [ANSWER + "Hi", ""]
    assert chunks[-1].chunk_position == "last"
    assert chunks[-1].response_metadata["finish_reason"] == "stop"


def test_stop_sequences_cut_the_answer(model: ChatPizzaGPT, fake: FakePizzaGPT) -> None:
    fake.script(Reply.answer("One. Two. Three."), Reply.answer("One. Two. Three."))
    message = model.invoke("Count", stop=["Three", " Two"])
    assert message.content == "One."
    assert message.response_metadata["stop_sequence"] == " Two"
    chunks = list(model.stream("Count", stop=["Three"]))
    assert "".join(str(chunk.content) for chunk in chunks) == "One. Two. "
    stopping = ChatPizzaGPT(base_url=model.base_url, stop=["."])
    fake.script(Reply.answer("One. Two."))
    assert stopping.invoke("Count").content == "One"


def test_a_stop_sequence_split_across_chunks_is_found() -> None:
    # PizzaGPT sends the whole answer in one chunk today, so only the reader itself can be
    # given several: the cut must not depend on that.
    reader = _Reader(["STOP", "", "xyz"])
    events: list[str | FinishReason] = ["abc S", "T", "OP def", FinishReason("stop")]
    text = [reader.read(event) for event in events]
    assert "".join(text) == "abc "
    assert text[0] == "ab"  # "c S" held back: it could start "xyz" or "STOP"
    assert reader.metadata()["stop_sequence"] == "STOP"
    reader = _Reader(["xyz"])
    events = ["ab", "cx", "y", FinishReason("stop")]
    assert [reader.read(event) for event in events] == [
        "",
        "ab",
        "c",
        "xy",
    ]


def test_a_refusal_is_an_empty_answer_with_the_refusal(
    model: ChatPizzaGPT, fake: FakePizzaGPT
) -> None:
    fake.script(Reply.answer("", refusal="I cannot help with that."))
    message = model.invoke("Hack?")
    assert message.content == ""
    assert message.additional_kwargs == {"refusal": "I cannot help with that."}
    assert message.response_metadata["finish_reason"] == "refusal"


async def test_errors_are_the_sdks(model: ChatPizzaGPT, fake: FakePizzaGPT) -> None:
    fake.script(Reply.misuse(), Reply.misuse(), Reply.misuse())
    with pytest.raises(MisuseDetectedError):
        model.invoke("Hi")
    with pytest.raises(MisuseDetectedError):
        await model.ainvoke("Hi")
    with pytest.raises(MisuseDetectedError):
        async for _ in model.astream("Hi"):
            pass


def test_an_unknown_keyword_is_refused(model: ChatPizzaGPT, fake: FakePizzaGPT) -> None:
    with pytest.raises(TypeError, match="does not take 'tools'"):
        model.invoke("Hi", tools=[])
    assert fake.calls == 0


def test_bad_fields_are_refused_at_construction() -> None:
    cases: list[dict[str, Any]] = [{"timeout": 0}, {"max_retries": -1}, {"deadline": -1}]
    for fields in cases:
        with pytest.raises(ValueError, match="greater than"):
            ChatPizzaGPT(**fields)


def test_the_secret_stays_out_of_every_text(server: FakeServer) -> None:
    model = ChatPizzaGPT(base_url=server.url, secret=SecretStr("Marinara"))
    assert "Marinara" not in repr(model)
    assert "Marinara" not in json.dumps(model._identifying_params)


def test_sync_calls_share_one_pool(model: ChatPizzaGPT, server: FakeServer) -> None:
    model.invoke("One")
    list(model.stream("Two"))
    assert server.connections == 1
    assert [message.content for message in model.batch(["a", "b", "c"])] == [
        ANSWER + "a",
        ANSWER + "b",
        ANSWER + "c",
    ]
    assert server.connections <= 3  # batch's threads share the pool, no client per call


async def test_async_calls_in_one_loop_share_one_pool(
    model: ChatPizzaGPT, server: FakeServer
) -> None:
    await model.ainvoke("One")
    assert [chunk.content async for chunk in model.astream("Two")] == [ANSWER + "Two", ""]
    await model.ainvoke("Three")
    assert server.connections == 1
    results = await model.abatch(["a", "b"])
    assert all(isinstance(result, AIMessage) for result in results)


def test_one_model_serves_one_event_loop_after_another(
    model: ChatPizzaGPT, server: FakeServer
) -> None:
    """A pool from an ended loop is never reused, and each loop's is closed with it."""
    for question in ("One", "Two"):
        message = asyncio.run(model.ainvoke(question))
        assert message.content == ANSWER + question
    assert server.connections == 2


def test_an_ended_event_loop_is_not_kept_alive(model: ChatPizzaGPT) -> None:
    async def ask() -> weakref.ref[asyncio.AbstractEventLoop]:
        await model.ainvoke("Hi")
        return weakref.ref(asyncio.get_running_loop())

    loop = asyncio.run(ask())
    gc.collect()
    assert loop() is None


def test_changed_fields_take_effect(model: ChatPizzaGPT, fake: FakePizzaGPT) -> None:
    model.invoke("Hi")
    with FakePizzaGPT().serve() as other:
        model.base_url = other.url
        model.invoke("Hi")
        assert other.connections == 1
    model.base_url = "http://127.0.0.1:9"  # nothing listens on the discard port
    with pytest.raises(APIConnectionError):
        model.invoke("Hi")
    assert fake.calls == 1


def test_a_copy_makes_its_own_pool(model: ChatPizzaGPT, server: FakeServer) -> None:
    model.invoke("Hi")
    twin = copy.deepcopy(model)
    assert twin.invoke("Hi").content == ANSWER + "Hi"
    assert server.connections == 2


def test_stream_events_reach_callbacks(model: ChatPizzaGPT) -> None:
    from langchain_core.callbacks import BaseCallbackHandler

    tokens: list[str] = []

    class Collect(BaseCallbackHandler):
        def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
            tokens.append(token)

    chunks = list(model.stream("Hi", config={"callbacks": [Collect()]}))
    assert isinstance(chunks[0], AIMessageChunk)
    assert tokens[0] == ANSWER + "Hi"


def test_importing_the_sdk_loads_neither_integration() -> None:
    code = "import json, sys, pizzagpt_sdk; print(json.dumps(sorted(sys.modules)))"
    loaded = json.loads(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
        ).stdout
    )
    heavy = [
        name
        for name in loaded
        if name.split(".")[0] in {"llm", "langchain_core", "langchain", "pydantic", "openai"}
        or name in {"pizzagpt_sdk.langchain", "pizzagpt_sdk._llm_plugin"}
    ]
    assert heavy == []


@pytest.mark.parametrize("code", examples("langchain.md"))
def test_the_docs_examples_run(
    code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    run_example(code, tmp_path, monkeypatch)
    assert capsys.readouterr().out.strip()
