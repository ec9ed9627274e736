"""The httpx2 engine: the httpx engine's code on httpx2, httpx's maintained fork (same API).

httpx has made no release since 0.28.1 (December 2024); httpx2 fixed httpcore 1.0.9's pool
bookkeeping (pydantic/httpx2#974 and #1075), whose cost grows with the square of the connections
kept alive. So this engine keeps one pool, and is the one to pick for many calls in flight
(docs/engines.md has the figures). The extra `httpx2` installs it.
"""

from __future__ import annotations

import httpx2

from ._httpx import AsyncHttpxEngine, HttpxEngine

__all__ = ["AsyncHttpx2Engine", "Httpx2Engine"]


class Httpx2Engine(HttpxEngine):
    """The blocking engine over an `httpx2.Client`; the arguments are `HttpxEngine`'s."""

    name = "httpx2"
    _module = httpx2


class AsyncHttpx2Engine(AsyncHttpxEngine):
    """The async engine over an `httpx2.AsyncClient`, on asyncio and trio; the arguments are
    `HttpxEngine`'s, with httpx2's types."""

    name = "httpx2"
    _module = httpx2
