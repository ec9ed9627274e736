"""The clients under test: the SDK's, the raw floors, and the peers, each behind one shape.

A sync subject is `(call, close)`; an async one is made inside the running event loop (aiohttp
needs one) and is `(call, aclose)`. Every call asks the same one-message prompt and parses the
answer, so each subject does the whole job a user needs done. The raw floors send exactly the
SDK's headers and body and parse the JSON by hand, as a user without the SDK would.

Optional peers (aiohttp, httpx-aiohttp, gpt4free, openai-python) are left out of the run when
their package is missing; `available()` says which are there.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = [
    "ASYNC_SUBJECTS",
    "ENDPOINT",
    "FAST",
    "HEADERS",
    "PROMPT",
    "RAW_AIOHTTP",
    "RAW_ASYNC",
    "RAW_SYNC",
    "SYNC_SUBJECTS",
    "CHURNERS",
    "AsyncCall",
    "AsyncSubject",
    "SyncSubject",
    "available",
    "load_gpt4free_provider",
]

PROMPT = "Why is the sky blue?"
MESSAGES = [{"role": "user", "content": PROMPT}]
ENDPOINT = "/api/chatx-completion"
# What the SDK sends (protocol.md), so that the raw floors do the same work on the wire.
HEADERS = {
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

SyncCall = Callable[[], object]
SyncSubject = tuple[SyncCall, Callable[[], None]]
AsyncCall = Callable[[], Awaitable[object]]
AsyncSubject = tuple[AsyncCall, Callable[[], Awaitable[None]]]


def _content(body: bytes) -> str:
    """Parse an answer by hand, as gpt4free does: `answer` when nested, else the top level."""
    document = json.loads(body)
    answer = document.get("answer", document)
    content: str = answer["content"]
    return content


# Sync subjects


def sdk_client_stream(url: str) -> SyncSubject:
    from pizzagpt_sdk import Client

    client = Client(base_url=url)

    def call() -> None:
        with client.stream(PROMPT) as stream:
            for _ in stream:
                pass

    return call, client.close


def sdk_client_ask(url: str) -> SyncSubject:
    from pizzagpt_sdk import Client

    client = Client(base_url=url)
    return (lambda: client.ask(PROMPT).text), client.close


def raw_httpx_client(url: str) -> SyncSubject:
    import httpx

    http = httpx.Client()
    endpoint = url + ENDPOINT

    def call() -> str:
        response = http.post(endpoint, headers=HEADERS, json={"question": PROMPT})
        response.raise_for_status()
        return _content(response.content)

    return call, http.close


def openai_client(url: str) -> SyncSubject:
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="bench")

    def call() -> str | None:
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        return completion.choices[0].message.content

    return call, client.close


# Async subjects: made inside the running loop.


async def sdk_async_client(url: str) -> AsyncSubject:
    from pizzagpt_sdk import AsyncClient

    client = AsyncClient(base_url=url)

    async def call() -> str:
        return (await client.ask(PROMPT)).text

    return call, client.aclose


async def sdk_async_client_httpx_aiohttp(url: str) -> AsyncSubject:
    from httpx_aiohttp import HttpxAiohttpClient

    from pizzagpt_sdk import AsyncClient

    http = HttpxAiohttpClient()
    client = AsyncClient(base_url=url, http_client=http)

    async def call() -> str:
        return (await client.ask(PROMPT)).text

    async def aclose() -> None:
        await client.aclose()
        await http.aclose()

    return call, aclose


async def sdk_aiohttp_client(url: str) -> AsyncSubject:
    from pizzagpt_sdk.aiohttp import AiohttpClient

    client = AiohttpClient(base_url=url)

    async def call() -> str:
        return (await client.ask(PROMPT)).text

    return call, client.aclose


async def raw_httpx_async_client(url: str) -> AsyncSubject:
    import httpx

    http = httpx.AsyncClient()
    return _raw_httpx_call(http, url), http.aclose


async def raw_httpx_aiohttp(url: str) -> AsyncSubject:
    from httpx_aiohttp import HttpxAiohttpClient

    http = HttpxAiohttpClient()
    return _raw_httpx_call(http, url), http.aclose


def _raw_httpx_call(http: Any, url: str) -> AsyncCall:
    endpoint = url + ENDPOINT

    async def call() -> str:
        response = await http.post(endpoint, headers=HEADERS, json={"question": PROMPT})
        response.raise_for_status()
        return _content(response.content)

    return call


async def raw_aiohttp_session(url: str) -> AsyncSubject:
    import aiohttp

    session = aiohttp.ClientSession()
    endpoint = url + ENDPOINT

    async def call() -> str:
        async with session.post(endpoint, headers=HEADERS, json={"question": PROMPT}) as response:
            response.raise_for_status()
            return _content(await response.read())

    return call, session.close


async def gpt4free_provider(url: str) -> AsyncSubject:
    provider = load_gpt4free_provider()
    provider.url = url  # the class attribute every request is built from

    async def call() -> list[object]:
        generator: AsyncIterator[object] = provider.create_async_generator("gpt-4o-mini", MESSAGES)
        return [chunk async for chunk in generator]

    async def aclose() -> None:
        pass  # a new session per call, closed by the call itself

    return call, aclose


async def openai_async_client(url: str) -> AsyncSubject:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=url + "/v1", api_key="bench")

    async def call() -> str | None:
        completion = await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        return completion.choices[0].message.content

    return call, client.close


# gpt4free 6.7.1 is the last release that ships its Pizzagpt provider, and its package fails to
# import there; so the provider's own file is loaded under a stand-in package that has just what
# it imports: gpt4free's real `typing`, `providers.response` and `providers.helper` (its
# `format_prompt`), and stubs for the rest.
_STANDIN = "_g4f_standin"


def load_gpt4free_provider() -> Any:
    """gpt4free's `Pizzagpt` provider class, loaded from the installed g4f 6.7.1's files.

    Raises:
        LookupError: g4f is not installed, or its release has no Pizzagpt provider.
    """
    if f"{_STANDIN}.Provider.not_working.Pizzagpt" in sys.modules:
        return sys.modules[f"{_STANDIN}.Provider.not_working.Pizzagpt"].Pizzagpt
    try:
        root = Path(str(metadata.distribution("g4f").locate_file("g4f")))
    except metadata.PackageNotFoundError:
        raise LookupError("g4f is not installed (pip install --no-deps g4f==6.7.1)") from None
    source = root / "Provider" / "not_working" / "Pizzagpt.py"
    if not source.is_file():
        raise LookupError(f"this g4f has no {source.relative_to(root.parent)}: use g4f==6.7.1")

    def package(name: str) -> None:
        module = types.ModuleType(name)
        module.__path__ = []  # a package from which nothing else can be loaded by accident
        sys.modules[name] = module

    def stub(name: str, **attributes: object) -> None:
        module = types.ModuleType(name)
        vars(module).update(attributes)
        sys.modules[name] = module

    def real(name: str, path: Path) -> types.ModuleType:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    for name in ("", ".providers", ".tools", ".Provider", ".Provider.not_working"):
        package(_STANDIN + name)
    stub(f"{_STANDIN}.debug", log=lambda *args, **kwargs: None)
    stub(f"{_STANDIN}.tools.files", get_bucket_dir=str, read_bucket=lambda path: [])
    real(f"{_STANDIN}.providers.response", root / "providers" / "response.py")
    real(f"{_STANDIN}.typing", root / "typing.py")
    helper = real(f"{_STANDIN}.providers.helper", root / "providers" / "helper.py")
    stub(f"{_STANDIN}.Provider.helper", format_prompt=helper.format_prompt)
    stub(
        f"{_STANDIN}.Provider.base_provider",
        AsyncGeneratorProvider=type("AsyncGeneratorProvider", (), {}),
        ProviderModelMixin=type("ProviderModelMixin", (), {}),
    )
    module = real(f"{_STANDIN}.Provider.not_working.Pizzagpt", source)
    return module.Pizzagpt


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _has_gpt4free() -> bool:
    try:
        load_gpt4free_provider()
    except (LookupError, ImportError):
        return False
    return True


RAW_SYNC = "raw httpx.Client"
RAW_ASYNC = "raw httpx.AsyncClient"
RAW_AIOHTTP = "raw aiohttp session"
FAST = "AiohttpClient (fast engine)"

#: name -> (factory, baseline it is compared with, what it needs)
SYNC_SUBJECTS: dict[str, tuple[Callable[[str], SyncSubject], str | None, str | None]] = {
    "raw httpx.Client": (raw_httpx_client, None, None),
    "Client.stream (consumed)": (sdk_client_stream, "raw httpx.Client", None),
    "Client.ask": (sdk_client_ask, "raw httpx.Client", None),
    "openai OpenAI": (openai_client, "raw httpx.Client", "openai"),
}

#: Subjects that open a new connection for every call: at thousands of calls a second, their
#: closed connections fill the kernel's TIME_WAIT table (28,000 local ports, 60 s each) and slow
#: every later connect() on the machine, so the harness runs them after all the others.
CHURNERS = frozenset({"gpt4free Pizzagpt (6.7.1)"})

#: name -> (factory, backends, baseline, what it needs)
ASYNC_SUBJECTS: dict[
    str, tuple[Callable[[str], Awaitable[AsyncSubject]], tuple[str, ...], str | None, str | None]
] = {
    "raw httpx.AsyncClient": (raw_httpx_async_client, ("asyncio", "trio"), None, None),
    "AsyncClient": (sdk_async_client, ("asyncio", "trio"), "raw httpx.AsyncClient", None),
    "raw aiohttp session": (raw_aiohttp_session, ("asyncio",), None, "aiohttp"),
    "AiohttpClient (fast engine)": (
        sdk_aiohttp_client,
        ("asyncio",),
        "raw aiohttp session",
        "aiohttp",
    ),
    "raw httpx over httpx-aiohttp": (
        raw_httpx_aiohttp,
        ("asyncio",),
        "raw aiohttp session",
        "httpx_aiohttp",
    ),
    "AsyncClient over httpx-aiohttp": (
        sdk_async_client_httpx_aiohttp,
        ("asyncio",),
        "raw aiohttp session",
        "httpx_aiohttp",
    ),
    "gpt4free Pizzagpt (6.7.1)": (gpt4free_provider, ("asyncio",), "raw aiohttp session", "g4f"),
    "openai AsyncOpenAI": (openai_async_client, ("asyncio",), "raw httpx.AsyncClient", "openai"),
}


def available(need: str | None) -> bool:
    """Whether what a subject needs is installed (`None`: nothing beyond the SDK)."""
    if need is None:
        return True
    if need == "g4f":
        return _has("aiohttp") and _has_gpt4free()
    return _has(need)
