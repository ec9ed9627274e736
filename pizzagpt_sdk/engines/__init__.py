"""The engines: one small adapter per HTTP library, which `Client` and `AsyncClient` drive.

| engine | blocking | async | extra |
|---|---|---|---|
| `"httpx"` (default) | `HttpxEngine` | `AsyncHttpxEngine` (asyncio, trio) | none |
| `"httpx2"` | `Httpx2Engine` | `AsyncHttpx2Engine` (asyncio, trio) | `httpx2` |
| `"aiohttp"` | none | `AsyncAiohttpEngine` (asyncio) | `aiohttp` |
| `"curl_cffi"` | `CurlCffiEngine` | `AsyncCurlCffiEngine` (asyncio) | `impersonate` |

Choose one with `engine="httpx2"`, with an engine object (`engine=CurlCffiEngine(impersonate=
"safari")`), or by passing that library's client as `http_client=`. Importing this module loads
none of the optional libraries; each engine class loads its own on first use.

To add an engine, subclass `Engine` or `AsyncEngine` (and `Response` or `AsyncResponse`): send,
hand back status, headers and body chunks, close, and raise `TransportError` from the library's
errors; a blocking engine also bounds each wait by `time_left()`. `docs/engines.md` says more.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any, Literal

from pizzagpt_sdk._config import ENGINES
from pizzagpt_sdk._exceptions import InvalidTypeError, InvalidValueError, UsageError

from ._base import AsyncEngine, AsyncResponse, Engine, Response, TransportError, time_left

if TYPE_CHECKING:
    from pizzagpt_sdk._config import Config

    from ._aiohttp import AsyncAiohttpEngine
    from ._curl_cffi import AsyncCurlCffiEngine, CurlCffiEngine
    from ._httpx import AsyncHttpxEngine, HttpxEngine
    from ._httpx2 import AsyncHttpx2Engine, Httpx2Engine

__all__ = [
    "AsyncAiohttpEngine",
    "AsyncCurlCffiEngine",
    "AsyncEngine",
    "AsyncHttpx2Engine",
    "AsyncHttpxEngine",
    "AsyncResponse",
    "CurlCffiEngine",
    "Engine",
    "Httpx2Engine",
    "HttpxEngine",
    "Response",
    "TransportError",
    "time_left",
]

# name: (module, blocking class, async class, the library's import name)
_CLASSES: dict[str, tuple[str, str | None, str, str]] = {
    "httpx": ("_httpx", "HttpxEngine", "AsyncHttpxEngine", "httpx"),
    "httpx2": ("_httpx2", "Httpx2Engine", "AsyncHttpx2Engine", "httpx2"),
    "aiohttp": ("_aiohttp", None, "AsyncAiohttpEngine", "aiohttp"),
    "curl_cffi": ("_curl_cffi", "CurlCffiEngine", "AsyncCurlCffiEngine", "curl_cffi"),
}


def __getattr__(name: str) -> Any:
    for engine, (module, blocking, asynchronous, _) in _CLASSES.items():
        if name in (blocking, asynchronous):
            return getattr(_load(engine, module), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _load(engine: str, module: str) -> Any:
    try:
        return importlib.import_module(f"{__name__}.{module}")
    except ImportError as exc:
        library = _CLASSES[engine][3]
        if exc.name is None or exc.name.split(".")[0] != library:
            raise
        if engine == "httpx2" and sys.version_info < (3, 11):
            raise UsageError(
                "the httpx2 engine needs httpx2, which needs Python 3.11 or newer: "
                "use engine='httpx' here"
            ) from exc
        raise UsageError(
            f"the {engine} engine needs {library}, which is not installed: "
            f"pip install 'pizzagpt-sdk[{ENGINES[engine]}]'"
        ) from exc


def open_engine(
    world: Literal["blocking", "async"],
    engine: object,
    config: Config,
    *,
    http_client: object = None,
    transport: object = None,
) -> Any:
    """The engine a client asked for: an engine object as it is, else the one the core chooses
    by name or by the `http_client`'s library, built for the client's configuration.

    Raises:
        UsageError: See `Config.choose_engine`; also an engine object of the other world.
    """
    if isinstance(engine, (Engine, AsyncEngine)):
        base: type = Engine if world == "blocking" else AsyncEngine
        if not isinstance(engine, base):
            raise InvalidTypeError(
                f"{type(engine).__name__} is {'an async' if world == 'blocking' else 'a blocking'}"
                f" engine: give it to {'AsyncClient' if world == 'blocking' else 'Client'}"
            )
        if http_client is not None or transport is not None:
            raise InvalidValueError("give http_client or transport to your engine, not the SDK")
        if isinstance(engine, AsyncEngine):
            engine.check_runnable()
        return engine
    library = None if http_client is None else type(http_client).__module__.split(".")[0]
    name = config.choose_engine(
        world, engine, http_client_library=library, transport=transport is not None
    )
    module, blocking, asynchronous, _ = _CLASSES[name]
    class_name = blocking if world == "blocking" else asynchronous
    assert class_name is not None  # the core refused a blocking client an async-only engine
    cls = getattr(_load(name, module), class_name)
    if transport is not None:
        return cls.from_config(config, transport=transport)
    return cls.from_config(config, http_client=http_client)
