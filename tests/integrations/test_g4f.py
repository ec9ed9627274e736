"""The gpt4free provider, driven by gpt4free's own clients against the fake on 127.0.0.1.

Needs the `g4f` extra (gpt4free 8.x): `nox -s g4f` runs this file.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import re
import runpy
import socket
import subprocess
import sys
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

g4f_client = pytest.importorskip("g4f.client")

from g4f.cookies import CookiesConfig  # noqa: E402
from g4f.providers.base_provider import AsyncGeneratorProvider, ProviderModelMixin  # noqa: E402
from g4f.providers.response import FinishReason, Sources  # noqa: E402

from pizzagpt_sdk import (  # noqa: E402
    APIConnectionError,
    APITimeoutError,
    AsyncClient,
    InternalServerError,
    InvalidTypeError,
    InvalidValueError,
    MisuseDetectedError,
)
from pizzagpt_sdk.g4f import Pizzagpt  # noqa: E402
from pizzagpt_sdk.testing import CITATIONS, MISUSE_CONTENT, FakePizzaGPT, FakeServer, Reply  # noqa: E402

ROOT = Path(__file__).parent.parent.parent
MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is your name?"},
]
PROMPT = "System: Be brief.\nUser: What is your name?\nAssistant:"
ANSWER = "I am PizzaGPT."


@pytest.fixture(autouse=True)
def g4f_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """gpt4free writes usage records in its cookies directory: a temporary one."""
    monkeypatch.setattr(CookiesConfig, "cookies_dir", str(tmp_path))
    monkeypatch.setenv("G4F_CONFIG_DIR", str(tmp_path))  # for subprocesses
    return tmp_path


@pytest.fixture
def fake() -> FakePizzaGPT:
    return FakePizzaGPT()


@pytest.fixture
def server(
    fake: FakePizzaGPT, monkeypatch: pytest.MonkeyPatch, no_proxy_env: None
) -> Iterator[FakeServer]:
    """The fake over HTTP, where the provider looks by default: `PIZZAGPT_BASE_URL`."""
    with fake.serve() as running:
        monkeypatch.setenv("PIZZAGPT_BASE_URL", running.url)
        monkeypatch.delenv("PIZZAGPT_SECRET", raising=False)
        yield running


async def collect(**kwargs: Any) -> list[Any]:
    kwargs.setdefault("model", "gpt-4o-mini")
    kwargs.setdefault("messages", MESSAGES)
    return [item async for item in Pizzagpt.create_async_generator(**kwargs)]


def collect_in_new_loop(**kwargs: Any) -> list[Any]:
    return asyncio.run(collect(**kwargs))


def finish_reason(items: list[Any]) -> str:
    assert isinstance(items[-1], FinishReason), items
    reason: str = items[-1].reason
    return reason


# The class, as gpt4free's provider had it


def test_the_class_is_the_old_providers() -> None:
    """The attributes of gpt4free 6.7.1's Pizzagpt, for code that reads them."""
    assert issubclass(Pizzagpt, AsyncGeneratorProvider)
    assert issubclass(Pizzagpt, ProviderModelMixin)
    assert Pizzagpt.url == "https://www.pizzagpt.it"
    assert Pizzagpt.api_endpoint == "/api/chatx-completion"
    assert Pizzagpt.working is True
    assert Pizzagpt.default_model == "gpt-4o-mini"
    assert Pizzagpt.models == ["gpt-4o-mini"]
    assert Pizzagpt.supports_stream is True
    assert Pizzagpt.get_models() == ["gpt-4o-mini"]
    assert Pizzagpt.get_model("") == "gpt-4o-mini"
    assert Pizzagpt.get_dict()["name"] == "Pizzagpt"


# The async generator


@pytest.mark.anyio
async def test_yields_the_text_then_g4fs_finish_reason(
    fake: FakePizzaGPT, server: FakeServer
) -> None:
    fake.script(Reply.answer(ANSWER))
    items = await collect()
    assert items[:-1] == [ANSWER]
    assert finish_reason(items) == "stop"
    request = fake.requests[0]
    assert request.prompt == PROMPT
    assert request.json == {"question": PROMPT}  # neither model nor search, as gpt4free sent


@pytest.mark.anyio
async def test_web_search_yields_g4fs_sources_before_the_finish(
    fake: FakePizzaGPT, server: FakeServer
) -> None:
    items = await collect(web_search=True)
    assert isinstance(items[0], str)
    assert isinstance(items[1], Sources)
    assert [source["url"] for source in items[1].list] == list(CITATIONS)
    assert finish_reason(items) == "stop"
    assert len(items) == 3
    assert fake.requests[0].json["searchEnabled"] is True
    await collect(search=True)
    assert fake.requests[1].json["searchEnabled"] is True


@pytest.mark.anyio
async def test_a_refusal_is_the_text_and_ends_with_content_filter(
    fake: FakePizzaGPT, server: FakeServer
) -> None:
    fake.script(Reply.answer(None, refusal="I can't help with that."))
    items = await collect()
    assert items[:-1] == ["I can't help with that."]
    assert finish_reason(items) == "content_filter"


@pytest.mark.anyio
async def test_calls_in_one_loop_share_one_connection(
    fake: FakePizzaGPT, server: FakeServer
) -> None:
    fake.script(Reply.status(503).retry_after(0))
    for _ in range(3):
        assert finish_reason(await collect()) == "stop"
    assert fake.calls == 4  # a retry, then three answers
    assert server.connections == 1


@pytest.mark.anyio
async def test_aclose_closes_the_loops_connections(server: FakeServer) -> None:
    await collect()
    await Pizzagpt.aclose()
    await Pizzagpt.aclose()  # nothing left: nothing to do
    await collect()
    assert server.connections == 2


@pytest.mark.anyio
async def test_each_configuration_has_its_client(fake: FakePizzaGPT, server: FakeServer) -> None:
    other = FakePizzaGPT(secret="padrone")
    async with other.serve_async() as other_server:

        class Elsewhere(Pizzagpt):
            base_url = other_server.url
            secret = "padrone"

        items = await collect(base_url=other_server.url, secret="padrone")
        assert finish_reason(items) == "stop"
        await collect()  # the environment's base URL and the default secret
        items = [item async for item in Elsewhere.create_async_generator("gpt-4o-mini", "Hi")]
        assert finish_reason(items) == "stop"
        await Pizzagpt.aclose()
    assert (other.calls, fake.calls) == (2, 1)
    assert (other_server.connections, server.connections) == (1, 1)


@pytest.mark.anyio
async def test_a_subclass_configures_the_sdk(fake: FakePizzaGPT, server: FakeServer) -> None:
    class Patient(Pizzagpt):
        max_retries = 3
        deadline = 30.0

    fake.script(*[Reply.status(503).retry_after(0)] * 3)
    items = [item async for item in Patient.create_async_generator("gpt-4o-mini", "Hi")]
    assert finish_reason(items) == "stop"
    assert fake.calls == 4


@pytest.mark.anyio
async def test_g4f_and_sdk_keyword_arguments(fake: FakePizzaGPT, server: FakeServer) -> None:
    fake.script(Reply.status(500))
    with pytest.raises(InternalServerError):
        await collect(max_retries=0)
    items = await collect(
        include_system=False,
        assistant_suffix=False,
        deadline=None,  # the SDK's name for it: None for no deadline
        timeout=0.001,  # ... which wins over gpt4free's
        # gpt4free's own arguments, which PizzaGPT has no use for: ignored.
        stream=True,
        temperature=0.2,
        max_tokens=5,
        api_key="sk-none",
        conversation=None,
        media=None,
    )
    assert finish_reason(items) == "stop"
    assert fake.requests[-1].prompt == "User: What is your name?"


@pytest.mark.anyio
async def test_the_proxy_carries_the_connections(fake: FakePizzaGPT, server: FakeServer) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(APIConnectionError):
        # The old provider's positional argument: a proxy where nothing listens.
        await collect(proxy=f"http://127.0.0.1:{port}", max_retries=0)
    assert fake.calls == 0


@pytest.mark.anyio
async def test_timeout_is_the_deadline_of_the_whole_call(
    fake: FakePizzaGPT, server: FakeServer
) -> None:
    fake.script(Reply.answer(ANSWER).delay(5))
    started = time.monotonic()
    with pytest.raises(APITimeoutError):
        await collect(timeout=0.3)
    assert time.monotonic() - started < 3


@pytest.mark.anyio
async def test_mistakes_are_raised_before_anything_is_sent(
    fake: FakePizzaGPT, server: FakeServer
) -> None:
    with pytest.raises(InvalidValueError):
        await collect(timeout=-1)
    with pytest.raises(InvalidValueError):
        await collect(messages=[])
    with pytest.raises(InvalidTypeError):
        await collect(max_retries="2")
    with pytest.raises(InvalidTypeError, match=r"pizzagpt_sdk\.AsyncClient"):
        await collect(client=object())
    async with AsyncClient() as client:
        with pytest.raises(InvalidValueError, match="your own client"):
            await collect(client=client, proxy="http://127.0.0.1:3128")
    assert fake.calls == 0


@pytest.mark.anyio
async def test_misuse_detection_is_a_value_error_as_gpt4free_raised(
    fake: FakePizzaGPT, server: FakeServer
) -> None:
    fake.script(Reply.misuse())
    with pytest.raises(ValueError, match="Misuse detected") as caught:
        await collect()
    assert isinstance(caught.value, MisuseDetectedError)
    assert caught.value.content == MISUSE_CONTENT
    assert fake.calls == 1  # never retried


@pytest.mark.anyio
async def test_your_own_client_is_used_and_left_open(
    fake: FakePizzaGPT, server: FakeServer
) -> None:
    async with AsyncClient(base_url=server.url) as client:
        for _ in range(2):
            assert finish_reason(await collect(client=client)) == "stop"
        assert not client.is_closed
    assert server.connections == 1


@pytest.mark.anyio
async def test_an_early_stop_closes_the_response(fake: FakePizzaGPT, server: FakeServer) -> None:
    fake.script(Reply.answer(ANSWER, citations=["http://127.0.0.1/a"]))
    generator = Pizzagpt.create_async_generator("gpt-4o-mini", MESSAGES)
    assert await generator.__anext__() == ANSWER
    await generator.aclose()
    assert finish_reason(await collect()) == "stop"


# gpt4free's clients, in all four modes


def test_g4f_client(fake: FakePizzaGPT, server: FakeServer) -> None:
    fake.script(Reply.answer(ANSWER))
    client = g4f_client.Client(provider=Pizzagpt)
    response = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert response.choices[0].message.content == ANSWER
    assert response.choices[0].finish_reason == "stop"
    assert fake.requests[0].prompt == PROMPT


def test_g4f_client_streaming(fake: FakePizzaGPT, server: FakeServer) -> None:
    fake.script(Reply.answer(ANSWER))
    client = g4f_client.Client(provider=Pizzagpt)
    chunks = list(
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == ANSWER
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_g4f_async_client(fake: FakePizzaGPT, server: FakeServer) -> None:
    async def main() -> list[str]:
        client = g4f_client.AsyncClient(provider=Pizzagpt)
        answers = []
        for _ in range(3):
            response = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
            assert response.choices[0].finish_reason == "stop"
            answers.append(response.choices[0].message.content)
        return answers

    fake.script(Reply.answer(ANSWER))
    answers = asyncio.run(main())
    assert answers[0] == ANSWER
    assert server.connections == 1  # three calls in one loop: one connection


def test_g4f_async_client_streaming(fake: FakePizzaGPT, server: FakeServer) -> None:
    async def main() -> list[Any]:
        client = g4f_client.AsyncClient(provider=Pizzagpt)
        stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
        return [chunk async for chunk in stream]

    fake.script(Reply.answer(ANSWER))
    chunks = asyncio.run(main())
    assert "".join(chunk.choices[0].delta.content or "" for chunk in chunks) == ANSWER
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_g4f_client_configuration_reaches_the_provider(
    fake: FakePizzaGPT, server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gpt4free's Client passes its `base_url` and `proxy` on; per-call arguments too."""
    monkeypatch.delenv("PIZZAGPT_BASE_URL")
    client = g4f_client.Client(provider=Pizzagpt, base_url=server.url)
    response = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, include_system=False
    )
    assert response.choices[0].finish_reason == "stop"
    assert fake.requests[0].prompt == "User: What is your name?\nAssistant:"
    fake.script(Reply.misuse())
    with pytest.raises(MisuseDetectedError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)


def test_the_sync_client_leaves_no_connection_open(server: FakeServer) -> None:
    """gpt4free's sync Client runs each call in a loop of its own: the call's client is
    closed with it, and nothing is left behind."""
    client = g4f_client.Client(provider=Pizzagpt)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # warm up
    before = _open_sockets()
    for _ in range(4):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert server.connections == 9  # a new loop, so a new connection, per call
    assert _open_sockets(at_most=before) <= before  # (the warm-up's may close meanwhile)


def test_threads_each_have_their_loop_and_client(fake: FakePizzaGPT, server: FakeServer) -> None:
    client = g4f_client.Client(provider=Pizzagpt)
    answers: list[str] = []

    def ask() -> None:
        response = client.chat.completions.create(model="gpt-4o-mini", messages="Hi")
        answers.append(response.choices[0].message.content)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 4
    assert fake.calls == 4


def test_a_loop_closed_by_hand_is_let_go(server: FakeServer) -> None:
    """A loop closed without ending its tasks cannot close its clients: the next loop's first
    call lets them go, so that they and the loop are garbage, not kept forever."""
    loop = asyncio.new_event_loop()
    loop.run_until_complete(collect())
    loop.close()
    gone = weakref.ref(loop)
    del loop
    with warnings.catch_warnings():
        # The garbage collector closes what the loop left open, and says so.
        warnings.simplefilter("ignore", ResourceWarning)
        assert finish_reason(collect_in_new_loop()) == "stop"
        gc.collect()
    assert gone() is None


def test_trio_runs_each_close_their_clients(fake: FakePizzaGPT, server: FakeServer) -> None:
    async def main() -> None:
        for _ in range(2):
            await collect()

    for _ in range(2):
        anyio.run(main, backend="trio")
    assert server.connections == 2
    assert fake.calls == 4


# The old provider's documented example, and the docs' examples

OLD_EXAMPLE = """\
from g4f.Provider import Pizzagpt
from g4f.typing import Messages
import asyncio

async def main():
    messages: Messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is your name?"}
    ]

    async for response in Pizzagpt.create_async_generator(model="gpt-4o-mini", messages=messages):
        print(response)

if __name__ == "__main__":
    asyncio.run(main())
"""


def run_script(code: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, str]:
    """Run `code` as a script, in this process (gpt4free takes seconds to import); its
    stdout and stderr."""
    script = tmp_path / "example.py"
    script.write_text(code, encoding="utf-8")
    capsys.readouterr()
    runpy.run_path(str(script), run_name="__main__")
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_the_old_documented_example_runs_with_only_its_import_changed(
    fake: FakePizzaGPT, server: FakeServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = OLD_EXAMPLE.replace(
        "from g4f.Provider import Pizzagpt", "from pizzagpt_sdk.g4f import Pizzagpt"
    )
    assert code.count("\n") == OLD_EXAMPLE.count("\n")
    assert code != OLD_EXAMPLE
    fake.script(Reply.answer(ANSWER))
    out, err = run_script(code, tmp_path, capsys)
    # The text, then FinishReason("stop"), which gpt4free prints as an empty line.
    assert out == f"{ANSWER}\n\n"
    assert err == ""
    assert fake.requests[0].prompt == (
        "System: You are a helpful assistant.\nUser: What is your name?\nAssistant:"
    )


FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def g4f_examples() -> list[Any]:
    found = []
    for page in (ROOT / "README.md", ROOT / "docs" / "g4f.md"):
        text = page.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if "pizzagpt_sdk.g4f" in match.group(1):
                line = text.count("\n", 0, match.start()) + 1
                found.append(pytest.param(match.group(1), id=f"{page.name}:{line}"))
    return found


@pytest.mark.parametrize("code", g4f_examples())
def test_the_docs_examples_run(
    code: str,
    fake: FakePizzaGPT,
    server: FakeServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, err = run_script(code, tmp_path, capsys)
    assert "This is the offline PizzaGPT fake" in out
    assert err == ""
    assert fake.calls > 0


def test_the_docs_have_examples() -> None:
    pages = {str(param.id).partition(":")[0] for param in g4f_examples()}
    assert pages == {"README.md", "g4f.md"}


# Imports


def loaded_modules(statement: str) -> list[str]:
    code = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    modules: list[str] = json.loads(result.stdout)
    return modules


def test_importing_the_sdk_does_not_import_gpt4free() -> None:
    modules = loaded_modules("import pizzagpt_sdk, pizzagpt_sdk.testing")
    assert "pizzagpt_sdk" in modules
    assert [name for name in modules if name == "g4f" or name.startswith("g4f.")] == []


def test_without_gpt4free_the_import_says_what_to_install() -> None:
    code = (
        "import sys\nsys.modules['g4f'] = None\n"
        "try:\n    import pizzagpt_sdk.g4f\nexcept ImportError as error:\n    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert 'pip install "pizzagpt-sdk[g4f]"' in result.stdout


def _open_sockets(at_most: int | None = None) -> int:
    """This process's open sockets (the fake server's included), counted from /proc; with
    `at_most`, waits up to 5 s for the server to close its ends of closed connections."""
    deadline = time.monotonic() + 5
    while True:
        count = sum(
            1
            for fd in os.listdir("/proc/self/fd")
            if _readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        )
        if at_most is None or count <= at_most or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


def _readlink(path: str) -> str:
    try:
        return os.readlink(path)
    except OSError:  # closed since listed
        return ""
