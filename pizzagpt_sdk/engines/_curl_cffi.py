"""The curl_cffi engine: blocking and asyncio, with a browser's TLS and HTTP/2 fingerprint.

A service behind Cloudflare can block clients by their TLS fingerprint: gpt4free's users met
those 403 pages for years. curl_cffi speaks as a browser does (`impersonate="chrome"`, the
default here). The extra `impersonate` installs it.
"""

from __future__ import annotations

import os
import ssl
from typing import TYPE_CHECKING, Any

from curl_cffi import requests as curl_requests
from curl_cffi.curl import CurlError

from .._exceptions import InvalidTypeError, InvalidValueError
from ._base import AsyncEngine, AsyncResponse, Engine, Response, TransportError, require_asyncio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from .._config import Config
    from .._models import Timeout
    from .._protocol import Request

__all__ = ["AsyncCurlCffiEngine", "CurlCffiEngine"]

#: The browser the engine speaks as, unless told otherwise (curl_cffi's newest Chrome).
DEFAULT_IMPERSONATE = "chrome"


class _CurlBase:
    name = "curl_cffi"
    _async = False

    def __init__(
        self,
        *,
        impersonate: str | None = DEFAULT_IMPERSONATE,
        verify: bool | str = True,
        proxy: str | None = None,
        max_connections: int = 100,
        tls: bool = True,
        trust_env: bool = True,
        http_client: Any = None,
    ) -> None:
        del tls  # curl builds its TLS state itself, per connection
        session_class = curl_requests.AsyncSession if self._async else curl_requests.Session
        if http_client is not None and not isinstance(http_client, session_class):
            raise InvalidTypeError(
                f"http_client must be a curl_cffi.requests.{session_class.__name__}, "
                f"not {type(http_client).__name__}"
            )
        if isinstance(verify, ssl.SSLContext):
            raise InvalidValueError(
                "the curl_cffi engine takes verify=True, False or a CA bundle's path, "
                "not an ssl.SSLContext"
            )
        if proxy is not None and not isinstance(proxy, str):
            raise InvalidTypeError(f"proxy must be a URL string, not {type(proxy).__name__}")
        if impersonate is not None and not isinstance(impersonate, str):
            raise InvalidTypeError(
                f"impersonate must be a browser's name like 'chrome', not {impersonate!r}"
            )
        self._options: dict[str, Any] = {
            "impersonate": impersonate,
            "verify": verify,
            "proxy": proxy,
            "trust_env": trust_env,
        }
        if self._async:
            self._options["max_clients"] = max_connections
        self._owns = http_client is None
        self._pid = os.getpid()
        self._http: Any = http_client if http_client is not None else self._new_http()
        self._closed = False

    @classmethod
    def from_config(cls, config: Config, *, http_client: Any = None) -> Any:
        """The engine for a client's configuration."""
        if http_client is not None:
            return cls(http_client=http_client)
        return cls(
            verify=config.verify,
            proxy=config.proxy,
            max_connections=config.max_connections,
            tls=config.https,
        )

    @property
    def owns_pool(self) -> bool:
        return self._owns

    @property
    def is_closed(self) -> bool:
        return self._closed or bool(getattr(self._http, "_closed", False))

    def _new_http(self) -> Any:
        session_class = curl_requests.AsyncSession if self._async else curl_requests.Session
        return session_class(**self._options)

    def _session(self) -> Any:
        if self._owns and self._pid != os.getpid():
            # After os.fork() the curl handles hold the parent's sockets: a new session.
            self._pid = os.getpid()
            self._http = self._new_http()
        return self._http

    @staticmethod
    def _arguments(request: Request, timeout: Timeout) -> dict[str, Any]:
        # curl's timeouts: (connect, read) sets the connect timeout and a total one of their sum
        # (curl_cffi), so the read bound is a bound on the whole exchange. None: no limit.
        connect, read = timeout.connect, timeout.read
        limit: Any = None if connect is None or read is None else (connect, read)
        return {
            "headers": dict(request.headers),
            "data": request.body,
            "timeout": limit,
            "stream": True,
            "allow_redirects": False,  # as httpx: a redirect is an answer, not followed
        }


class CurlCffiEngine(_CurlBase, Engine):
    """The blocking engine over a `curl_cffi.requests.Session`, speaking as a browser does.

    Args:
        impersonate: The browser to speak as (curl_cffi's names: `"chrome"`, `"safari"`,
            `"firefox"`, …), or `None` for curl's own fingerprint.
        verify: `True` to verify TLS, `False` not to, or a CA bundle's path.
        proxy: A proxy URL.
        max_connections: The most connections the async pool keeps (curl handles).
        tls: Accepted for symmetry with the other engines; curl needs no TLS context built.
        trust_env: Use the environment's proxy variables (`HTTPS_PROXY`, `NO_PROXY`, …), as
            httpx does.
        http_client: Your own `curl_cffi.requests.Session` (or `AsyncSession` for the async
            engine), used as it is and never closed by the SDK.
    """

    def send(self, request: Request, timeout: Timeout) -> Response:
        try:
            response = self._session().request(
                request.method, request.url, **self._arguments(request, timeout)
            )
        except CurlError as exc:
            raise _error(exc) from exc
        return _CurlResponse(response)

    def close(self) -> None:
        self._closed = True
        if self._owns:
            self._http.close()


class _CurlResponse(Response):
    def __init__(self, response: Any) -> None:
        self._response = response
        self.status_code = response.status_code
        self.headers = list(response.headers.multi_items())
        self._chunks: Iterator[bytes] | None = response.iter_content()

    def read(self) -> bytes:
        if self._chunks is None:
            return b""
        try:
            chunk: bytes = next(self._chunks, b"")
        except CurlError as exc:
            self._chunks = None
            raise _error(exc) from exc
        return chunk

    def close(self) -> None:
        self._chunks = None
        self._response.close()


class AsyncCurlCffiEngine(_CurlBase, AsyncEngine):
    """The async engine over a `curl_cffi.requests.AsyncSession`, on asyncio only; the
    arguments are `CurlCffiEngine`'s."""

    _async = True

    def __init__(self, **kwargs: Any) -> None:
        require_asyncio("curl_cffi")
        super().__init__(**kwargs)

    def check_runnable(self) -> None:
        require_asyncio("curl_cffi")

    async def send(self, request: Request, timeout: Timeout) -> AsyncResponse:
        self.check_runnable()
        try:
            response = await self._session().request(
                request.method, request.url, **self._arguments(request, timeout)
            )
        except CurlError as exc:
            raise _error(exc) from exc
        return _AsyncCurlResponse(response)

    async def aclose(self) -> None:
        self._closed = True
        if self._owns:
            await self._http.close()


class _AsyncCurlResponse(AsyncResponse):
    def __init__(self, response: Any) -> None:
        self._response = response
        self.status_code = response.status_code
        self.headers = list(response.headers.multi_items())
        self._chunks: AsyncIterator[bytes] | None = response.aiter_content()

    async def aread(self) -> bytes:
        if self._chunks is None:
            return b""
        try:
            chunk: bytes = await anext(self._chunks, b"")
        except CurlError as exc:
            self._chunks = None
            raise _error(exc) from exc
        return chunk

    async def aclose(self) -> None:
        self._chunks = None
        await self._response.aclose()


def _error(exc: CurlError) -> TransportError:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return TransportError(text, timeout=isinstance(exc, curl_requests.exceptions.Timeout))
