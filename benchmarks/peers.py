"""The clients under test: the SDK's engines, their raw libraries, and the peers, each behind
one shape.

A sync subject is `(call, close)`; an async one is made inside the running event loop (aiohttp
needs one) and is `(call, aclose)`. Every call asks the same one-message prompt and parses the
answer, so each subject does the whole job a user needs done. The raw floors send exactly the
SDK's headers and body and parse the JSON by hand, as a user without the SDK would. Each
engine is compared with its own library (raw httpx, httpx2, aiohttp, curl_cffi), set up as the
engine sets it up: as many connections kept alive, curl_cffi speaking as Chrome.

Optional engines and peers (httpx2, aiohttp, curl_cffi, gpt4free, openai-python) are left out of
the run when their package is missing; `available()` says which are there. A factory takes a
base URL, `http://` or `https://` (then the test CA in `CA_FILE` is trusted).
"""

from __future__ import annotations

import importlib
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
    "CA_FILE",
    "CONNECTIONS",
    "ENDPOINT",
    "ENGINE_ROWS",
    "GPT4FREE",
    "HEADERS",
    "PROMPT",
    "RAW_AIOHTTP",
    "RAW_ASYNC",
    "RAW_SYNC",
    "SYNC_ENGINE_ROWS",
    "SYNC_SUBJECTS",
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

#: The test CA's certificate (PEM), trusted for https:// URLs; the harness sets it when it
#: serves HTTPS (trustme's CA, which signed the loopback server's certificate).
CA_FILE: str | None = None
#: Connections every async pool keeps alive: the SDK's default (`max_connections=100`), given to
#: the raw floors too, so that each engine is compared with its library keeping as many.
CONNECTIONS = 100
#: The browser curl_cffi speaks as, in the engine (its default) and in the raw session alike.
IMPERSONATE = "chrome"


def _content(body: bytes) -> str:
    """Parse an answer by hand, as gpt4free does: `answer` when nested, else the top level."""
    document = json.loads(body)
    answer = document.get("answer", document)
    content: str = answer["content"]
    return content


def _ssl_context(url: str) -> Any:
    """What a raw library is given to verify `url`: the test CA for HTTPS, else the default."""
    if not url.startswith("https://"):
        return True
    import ssl

    return ssl.create_default_context(cafile=CA_FILE)


def _sdk_verify(url: str) -> Any:
    return CA_FILE if url.startswith("https://") and CA_FILE else True


# Sync subjects


def sdk_client_stream(url: str) -> SyncSubject:
    from pizzagpt_sdk import Client

    client = Client(base_url=url, verify=_sdk_verify(url))

    def call() -> None:
        with client.stream(PROMPT) as stream:
            for _ in stream:
                pass

    return call, client.close


def _sdk_client(engine: str) -> Callable[[str], SyncSubject]:
    def factory(url: str) -> SyncSubject:
        from pizzagpt_sdk import Client

        client = Client(base_url=url, engine=engine, verify=_sdk_verify(url))
        return (lambda: client.ask(PROMPT).text), client.close

    factory.__name__ = f"sdk_client_{engine}"
    return factory


sdk_client_ask = _sdk_client("httpx")
sdk_client_httpx2 = _sdk_client("httpx2")
sdk_client_curl_cffi = _sdk_client("curl_cffi")


def _raw_httpx_family(module_name: str) -> Callable[[str], SyncSubject]:
    def factory(url: str) -> SyncSubject:
        module = importlib.import_module(module_name)
        http = module.Client(verify=_ssl_context(url))
        endpoint = url + ENDPOINT

        def call() -> str:
            response = http.post(endpoint, headers=HEADERS, json={"question": PROMPT})
            response.raise_for_status()
            return _content(response.content)

        return call, http.close

    factory.__name__ = f"raw_{module_name}_client"
    return factory


raw_httpx_client = _raw_httpx_family("httpx")
raw_httpx2_client = _raw_httpx_family("httpx2")


def raw_curl_cffi_session(url: str) -> SyncSubject:
    from curl_cffi import requests as curl_requests

    verify = CA_FILE if url.startswith("https://") and CA_FILE else True
    session: Any = curl_requests.Session(
        impersonate=IMPERSONATE,
        verify=verify,  # type: ignore[arg-type]  # a CA bundle's path, which curl takes
    )
    endpoint = url + ENDPOINT

    def call() -> str:
        response = session.post(endpoint, headers=HEADERS, json={"question": PROMPT})
        response.raise_for_status()
        return _content(response.content)

    return call, session.close


def openai_client(url: str) -> SyncSubject:
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="bench")

    def call() -> str | None:
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        return completion.choices[0].message.content

    return call, client.close


# Async subjects: made inside the running loop.


def _sdk_async_client(engine: str) -> Callable[[str], Awaitable[AsyncSubject]]:
    async def factory(url: str) -> AsyncSubject:
        from pizzagpt_sdk import AsyncClient

        client = AsyncClient(base_url=url, engine=engine, verify=_sdk_verify(url))

        async def call() -> str:
            return (await client.ask(PROMPT)).text

        return call, client.aclose

    factory.__name__ = f"sdk_async_client_{engine}"
    return factory


sdk_async_client = _sdk_async_client("httpx")
sdk_async_httpx2 = _sdk_async_client("httpx2")
sdk_async_aiohttp = _sdk_async_client("aiohttp")
sdk_async_curl_cffi = _sdk_async_client("curl_cffi")


def _raw_httpx_family_async(module_name: str) -> Callable[[str], Awaitable[AsyncSubject]]:
    async def factory(url: str) -> AsyncSubject:
        module = importlib.import_module(module_name)
        limits = module.Limits(
            max_connections=CONNECTIONS, max_keepalive_connections=CONNECTIONS, keepalive_expiry=5
        )
        http = module.AsyncClient(verify=_ssl_context(url), limits=limits)
        endpoint = url + ENDPOINT

        async def call() -> str:
            response = await http.post(endpoint, headers=HEADERS, json={"question": PROMPT})
            response.raise_for_status()
            return _content(response.content)

        return call, http.aclose

    factory.__name__ = f"raw_{module_name}_async_client"
    return factory


raw_httpx_async_client = _raw_httpx_family_async("httpx")
raw_httpx2_async_client = _raw_httpx_family_async("httpx2")


async def raw_aiohttp_session(url: str) -> AsyncSubject:
    import aiohttp

    connector = aiohttp.TCPConnector(limit=CONNECTIONS, ssl=_ssl_context(url))
    session = aiohttp.ClientSession(connector=connector)
    endpoint = url + ENDPOINT

    async def call() -> str:
        async with session.post(endpoint, headers=HEADERS, json={"question": PROMPT}) as response:
            response.raise_for_status()
            return _content(await response.read())

    return call, session.close


async def raw_curl_cffi_async_session(url: str) -> AsyncSubject:
    from curl_cffi import requests as curl_requests

    verify = CA_FILE if url.startswith("https://") and CA_FILE else True
    session: Any = curl_requests.AsyncSession(
        impersonate=IMPERSONATE,
        verify=verify,  # type: ignore[arg-type]  # a CA bundle's path, which curl takes
        max_clients=CONNECTIONS,
    )
    endpoint = url + ENDPOINT

    async def call() -> str:
        response = await session.post(endpoint, headers=HEADERS, json={"question": PROMPT})
        response.raise_for_status()
        return _content(response.content)

    return call, session.close


async def gpt4free_provider(url: str) -> AsyncSubject:
    """gpt4free's provider as it is; over HTTPS it trusts the test CA through `SSL_CERT_FILE`
    (which the harness sets before aiohttp is imported), as a user would add a CA."""
    provider = load_gpt4free_provider()
    provider.url = url  # the class attribute every request is built from

    async def call() -> list[object]:
        generator: AsyncIterator[object] = provider.create_async_generator("gpt-4o-mini", MESSAGES)
        return [chunk async for chunk in generator]

    async def aclose() -> None:
        pass  # a new session per call, closed by the call itself

    return call, aclose


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
GPT4FREE = "gpt4free Pizzagpt (6.7.1)"

#: name -> (factory, baseline it is compared with, what it needs)
SYNC_SUBJECTS: dict[str, tuple[Callable[[str], SyncSubject], str | None, str | None]] = {
    "raw httpx.Client": (raw_httpx_client, None, None),
    "Client.stream (httpx, consumed)": (sdk_client_stream, "raw httpx.Client", None),
    "Client.ask (httpx)": (sdk_client_ask, "raw httpx.Client", None),
    "raw httpx2.Client": (raw_httpx2_client, None, "httpx2"),
    "Client.ask (httpx2)": (sdk_client_httpx2, "raw httpx2.Client", "httpx2"),
    "raw curl_cffi Session": (raw_curl_cffi_session, None, "curl_cffi"),
    "Client.ask (curl_cffi)": (sdk_client_curl_cffi, "raw curl_cffi Session", "curl_cffi"),
    "openai OpenAI": (openai_client, "raw httpx.Client", "openai"),
}

#: The SDK's engines, async: name -> the row that measures it.
ENGINE_ROWS = {
    "httpx": "AsyncClient.ask (httpx)",
    "httpx2": "AsyncClient.ask (httpx2)",
    "aiohttp": "AsyncClient.ask (aiohttp)",
    "curl_cffi": "AsyncClient.ask (curl_cffi)",
}
#: The same, blocking.
SYNC_ENGINE_ROWS = {
    "httpx": "Client.ask (httpx)",
    "httpx2": "Client.ask (httpx2)",
    "curl_cffi": "Client.ask (curl_cffi)",
}

#: name -> (factory, backends, baseline, what it needs). gpt4free's provider, which opens a
#: connection per call, is measured in a phase of its own (run.py's `peers` section).
ASYNC_SUBJECTS: dict[
    str, tuple[Callable[[str], Awaitable[AsyncSubject]], tuple[str, ...], str | None, str | None]
] = {
    "raw httpx.AsyncClient": (raw_httpx_async_client, ("asyncio", "trio"), None, None),
    "AsyncClient.ask (httpx)": (
        sdk_async_client,
        ("asyncio", "trio"),
        "raw httpx.AsyncClient",
        None,
    ),
    "raw httpx2.AsyncClient": (raw_httpx2_async_client, ("asyncio", "trio"), None, "httpx2"),
    "AsyncClient.ask (httpx2)": (
        sdk_async_httpx2,
        ("asyncio", "trio"),
        "raw httpx2.AsyncClient",
        "httpx2",
    ),
    "raw aiohttp session": (raw_aiohttp_session, ("asyncio",), None, "aiohttp"),
    "AsyncClient.ask (aiohttp)": (
        sdk_async_aiohttp,
        ("asyncio",),
        "raw aiohttp session",
        "aiohttp",
    ),
    "raw curl_cffi AsyncSession": (raw_curl_cffi_async_session, ("asyncio",), None, "curl_cffi"),
    "AsyncClient.ask (curl_cffi)": (
        sdk_async_curl_cffi,
        ("asyncio",),
        "raw curl_cffi AsyncSession",
        "curl_cffi",
    ),
    GPT4FREE: (gpt4free_provider, ("asyncio",), None, "g4f"),
}


def available(need: str | None) -> bool:
    """Whether what a subject needs is installed (`None`: nothing beyond the SDK)."""
    if need is None:
        return True
    if need == "g4f":
        return _has("aiohttp") and _has_gpt4free()
    return _has(need)
