"""Fixtures shared by the tests: both async backends, and one test body for both clients."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import pytest
import respx

from pizzagpt_sdk import Answer, AsyncClient, Client, FinishReason

URL = "https://www.pizzagpt.it/api/chatx-completion"


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No proxy from the environment: the SDK's own pool, as a user gets it, reaches 127.0.0.1
    and nothing else, and `AsyncClient` keeps its small pools."""
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every async test runs on asyncio and on trio."""
    return str(request.param)


class Subject:
    """A `Client` or an `AsyncClient` behind one async interface, so one test body serves both."""

    def __init__(self, client: Client | AsyncClient) -> None:
        self.client = client
        self.is_async = isinstance(client, AsyncClient)

    async def ask(self, messages: Any, **options: Any) -> Answer:
        result: Answer = await _resolve(self.client.ask(messages, **options))
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

    monkeypatch.setattr("time.sleep", fake_sleep)
    monkeypatch.setattr("anyio.sleep", fake_async_sleep)
    return recorded


@pytest.fixture
def api(respx_mock: respx.MockRouter) -> respx.Route:
    """The PizzaGPT endpoint, mocked; set `.side_effect` or `.return_value` in the test."""
    return respx_mock.post(URL)
