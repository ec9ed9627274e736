"""Fixtures shared by the tests: both async backends, and one test body for both clients and
every engine that can run in the test's world (`served`)."""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import pytest
import respx

from pizzagpt_sdk import Answer, AsyncClient, Client, FinishReason
from pizzagpt_sdk.testing import FakePizzaGPT, FakeServer

URL = "https://www.pizzagpt.it/api/chatx-completion"


async def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until `condition()` holds, failing the test after `timeout` seconds."""
    with anyio.fail_after(timeout):
        while not condition():
            await anyio.sleep(0.005)


def wait_for_sync(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """`wait_for`, blocking this thread."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def httpx_client_of(client: Client | AsyncClient) -> Any:
    """The httpx client under an SDK client on the httpx engine: the pool tests inspect it."""
    assert client.engine == "httpx"
    return client._engine._http  # type: ignore[union-attr]


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy from the environment: the SDK's own pool, as a user gets it, reaches 127.0.0.1
    and nothing else, and `AsyncClient` keeps its small pools."""
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on asyncio and on trio (but see `pytest_collection_modifyitems`)."""
    return str(request.param)


#: (client, engine) for every engine in each world; the async ones on asyncio and trio, but
#: aiohttp's and curl_cffi's on asyncio only.
ENGINE_CASES = [
    "Client-httpx",
    "Client-httpx2",
    "Client-curl_cffi",
    "AsyncClient-httpx",
    "AsyncClient-httpx2",
    "AsyncClient-aiohttp",
    "AsyncClient-curl_cffi",
]
ASYNCIO_ONLY = {"aiohttp", "curl_cffi"}
_LIBRARIES = {"httpx": "httpx", "httpx2": "httpx2", "aiohttp": "aiohttp", "curl_cffi": "curl_cffi"}


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--engines",
        choices=["all", "default"],
        default="all",
        help="'default': run the engine-by-engine cases on the default engine (httpx) only, "
        "in both worlds and on both async backends (nox does so on the middle Pythons)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run each test once where a second run would test nothing new: a blocking client does
    not care which event loop the test runs in, so it runs on asyncio only; nor can aiohttp's
    and curl_cffi's engines run on trio, so they are not collected there. With
    `--engines=default`, the cases of every engine but httpx are left out too."""
    default_only = config.getoption("engines") == "default"
    kept, dropped = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        params = params.params if params is not None else {}
        # make_client's "Client-httpx", make_subject's "Client", test_reliability's kind "Client"
        case = params.get("make_client") or params.get("make_subject") or params.get("kind") or ""
        world, _, engine = str(case).partition("-")
        on_trio = params.get("anyio_backend") == "trio"
        # test_decoding's "AsyncClient-httpx2-trio", or an engine's name alone
        named = params.get("engine") or str(params.get("case", "")).partition("-")[2]
        other_engine = {engine, str(named).partition("-")[0]} - {"", "httpx"}
        not_on_trio = on_trio and (world == "Client" or engine in ASYNCIO_ONLY)
        if not_on_trio or (default_only and other_engine):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


class Subject:
    """A `Client` or an `AsyncClient` behind one async interface, so one test body serves both."""

    def __init__(self, client: Client | AsyncClient) -> None:
        self.client = client
        self.is_async = isinstance(client, AsyncClient)

    async def ask(self, messages: Any, **options: Any) -> Answer:
        result: Answer = await _resolve(self.client.ask(messages, **options))
        return result

    async def map(self, prompts: Any, **options: Any) -> list[Answer]:
        result: list[Answer] = await _resolve(self.client.map(prompts, **options))
        return result

    async def events(self, messages: Any, **options: Any) -> list[str | FinishReason]:
        """All the events of `stream()`, consumed fully."""
        stream = self.client.stream(messages, **options)
        if isinstance(stream, Iterator):
            return list(stream)
        return [event async for event in stream]

    async def close(self) -> None:
        if isinstance(self.client, AsyncClient):
            await self.client.aclose()
        else:
            self.client.close()


async def _resolve(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


MakeSubject = Callable[..., Subject]


@pytest.fixture(params=["Client", "AsyncClient"])
async def make_subject(request: pytest.FixtureRequest) -> AsyncIterator[MakeSubject]:
    """Build `Client`s or `AsyncClient`s (the test runs once with each); closed afterwards."""
    made: list[Subject] = []

    def make(**kwargs: Any) -> Subject:
        cls = Client if request.param == "Client" else AsyncClient
        subject = Subject(cls(**kwargs))
        made.append(subject)
        return subject

    yield make
    for subject in made:
        await subject.close()


@pytest.fixture
def served(no_proxy_env: None) -> Iterator[FakeServer]:
    """The fake PizzaGPT on a real socket on 127.0.0.1; script it with `served_fake`."""
    with FakeServer(FakePizzaGPT()) as server:
        yield server


@pytest.fixture
def served_fake(served: FakeServer) -> FakePizzaGPT:
    """The fake behind `served`, to script and inspect."""
    return served.fake


@pytest.fixture(params=ENGINE_CASES)
async def make_client(
    request: pytest.FixtureRequest, served: FakeServer
) -> AsyncIterator[MakeSubject]:
    """Build clients of one kind on one engine, for the `served` fake (the test runs once with
    each kind and engine that can run in its world); closed afterwards."""
    world, _, engine = str(request.param).partition("-")
    pytest.importorskip(_LIBRARIES[engine], reason=f"the {engine} engine's extra is not installed")
    made: list[Subject] = []

    def make(**kwargs: Any) -> Subject:
        kwargs.setdefault("engine", engine)
        client = served.client(**kwargs) if world == "Client" else served.async_client(**kwargs)
        subject = Subject(client)
        made.append(subject)
        return subject

    yield make
    for subject in made:
        await subject.close()


@pytest.fixture
async def client(make_client: MakeSubject) -> Subject:
    """A client of each kind on each engine, for the `served` fake, with default settings."""
    return make_client()


@pytest.fixture
async def subject(make_subject: MakeSubject) -> Subject:
    """A client with default settings (each test mocks the network with respx)."""
    return make_subject()


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the sleeps between retries instead of sleeping (both clients' sleep functions)."""
    recorded: list[float] = []

    def fake_sleep(seconds: float) -> None:
        recorded.append(seconds)

    async def fake_async_sleep(seconds: float) -> None:
        recorded.append(seconds)
        await anyio.lowlevel.checkpoint()

    def fake_in_flight_sleep(in_flight: object, seconds: float) -> None:
        recorded.append(seconds)

    monkeypatch.setattr("time.sleep", fake_sleep)
    monkeypatch.setattr("anyio.sleep", fake_async_sleep)
    # Client sleeps before a retry in a wait that close() ends at once.
    monkeypatch.setattr("pizzagpt_sdk._client._InFlight.sleep", fake_in_flight_sleep)
    return recorded


@pytest.fixture
def api(respx_mock: respx.MockRouter) -> respx.Route:
    """The PizzaGPT endpoint, mocked; set `.side_effect` or `.return_value` in the test."""
    return respx_mock.post(URL)
