"""`AsyncClient`'s connection pool: httpx's, split into small pools that share the load.

httpcore 1.0's pool walks every connection it keeps on each request and each response, for each
idle one walks the whole pool again, and polls each idle socket: its cost per request grows with
the square of the connections kept alive. With tens of calls in flight that bookkeeping takes
most of the client's CPU, and it feeds itself: the slower the client, the more connections sit
idle, and the longer every walk gets. httpx's default hides it by keeping only 20 connections
alive, so that above 20 calls at once every further call opens (and TLS-handshakes) a connection
it then closes. Several small pools keep every connection alive and each walk short.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, cast

import anyio
import httpx

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

__all__ = ["POOL_SIZE", "SpreadTransport"]

#: Connections per small pool. One, two and four measured alike (docs/performance.md): four
#: makes the fewest pools.
POOL_SIZE = 4


class SpreadTransport(httpx.AsyncBaseTransport):
    """Up to `pools` small pools, made as they are needed, filled one after the other.

    A request goes to the first pool with fewer than `per_pool` open responses (sent, and not
    closed yet); a pool is made when none has. Once `pools` are made and all are full, requests
    wait here, first come first served, and each place freed in any pool goes to the longest
    waiting, for no longer than the request's pool timeout (`httpx.PoolTimeout`), as in one
    httpx pool. So calls made one at a time use one pool and one connection, and a burst of
    calls reuses the connections the previous one opened.

    A pool closes its expired connections when it is next used, as one httpx pool does; but
    after a burst, the last pools may not be used again. So a request first closes the last
    pools (never the first) that have had nothing to do for longer than `idle_expiry`: the
    pools a burst made close once the load has fallen.

    Args:
        new_pool: Makes one small pool (an `httpx.AsyncHTTPTransport` with its limits).
        pools: The most pools to make.
        per_pool: How many requests a pool takes at once.
        idle_expiry: Seconds after which an idle last pool is closed (httpx's keep-alive
            expiry, after which its connections would not be reused anyway).
        clock: A monotonic clock in seconds.
    """

    def __init__(
        self,
        new_pool: Callable[[], httpx.AsyncBaseTransport],
        *,
        pools: int,
        per_pool: int,
        idle_expiry: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._new_pool = new_pool
        self._max_pools = pools
        self._per_pool = per_pool
        self._idle_expiry = idle_expiry
        self._clock = clock
        self._pools: list[httpx.AsyncBaseTransport] = []
        self._busy: list[int] = []
        self._idle_since: list[float] = []  # when each pool last had nothing to do
        self._waiting: deque[_Waiter] = deque()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        while len(self._busy) > 1 and not self._busy[-1] and self._expired(len(self._busy) - 1):
            await self._close_last_pool()
        busy = self._busy
        index = self._choose()
        if index < 0:
            index = await self._wait(request)  # a place handed over: already counted
        else:
            busy[index] += 1
        try:
            response = await self._pools[index].handle_async_request(request)
        except BaseException:
            self._release(busy, index)
            raise
        body = cast("httpx.AsyncByteStream", response.stream)  # an async transport's response
        response.stream = _Release(body, self, busy, index)
        return response

    def _choose(self) -> int:
        """A pool with a free place, made if need be; -1 when every pool is full."""
        busy = self._busy
        if self._waiting:
            return -1  # first come, first served
        for index, count in enumerate(busy):
            if count < self._per_pool:
                return index
        if len(busy) < self._max_pools:
            self._pools.append(self._new_pool())
            busy.append(0)
            self._idle_since.append(0.0)
            return len(busy) - 1
        return -1

    def _expired(self, index: int) -> bool:
        return self._clock() - self._idle_since[index] > self._idle_expiry

    async def _close_last_pool(self) -> None:
        pool = self._pools.pop()
        self._busy.pop()
        self._idle_since.pop()
        with anyio.CancelScope(shield=True):  # a cancelled caller must not leave it half closed
            await pool.aclose()

    async def _wait(self, request: httpx.Request) -> int:
        waiter = _Waiter()
        self._waiting.append(waiter)
        timeouts = request.extensions.get("timeout", {})
        try:
            with anyio.fail_after(timeouts.get("pool")):
                await waiter.event.wait()
        except BaseException as exc:
            if waiter.index is None:
                self._waiting.remove(waiter)
            else:  # handed a place just as the wait ended: pass it on
                self._release(self._busy, waiter.index)
            if isinstance(exc, TimeoutError):
                raise httpx.PoolTimeout(
                    "no connection became free within the pool timeout", request=request
                ) from None
            raise
        assert waiter.index is not None
        return waiter.index

    def _release(self, busy: list[int], index: int) -> None:
        """A request of pool `index` is over: hand its place to the longest waiting, if any."""
        if busy is not self._busy:
            return  # counted before aclose(): those pools are gone
        if self._waiting:
            waiter = self._waiting.popleft()
            waiter.index = index
            waiter.event.set()
        else:
            busy[index] -= 1
            if not busy[index]:
                self._idle_since[index] = self._clock()

    async def aclose(self) -> None:
        pools, self._pools, self._busy, self._idle_since = self._pools, [], [], []
        for pool in pools:
            await pool.aclose()


class _Waiter:
    __slots__ = ("event", "index")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.index: int | None = None


class _Release(httpx.AsyncByteStream):
    """A response body that frees its place in its pool when it is closed."""

    __slots__ = ("_busy", "_index", "_stream", "_transport")

    def __init__(
        self,
        stream: httpx.AsyncByteStream,
        transport: SpreadTransport,
        busy: list[int],
        index: int,
    ) -> None:
        self._stream = stream
        self._transport: SpreadTransport | None = transport
        self._busy = busy
        self._index = index

    def __aiter__(self) -> AsyncIterator[bytes]:
        # The body's own iterator, not a generator around it: one more suspended generator
        # would be one more for trio to warn about when a body is given up (see _abandon).
        return self._stream.__aiter__()

    async def aclose(self) -> None:
        transport, self._transport = self._transport, None
        if transport is not None:
            transport._release(self._busy, self._index)
        await self._stream.aclose()
