"""AsyncClient's small pools (`SpreadTransport`): which pool each request goes to, and the count
of open responses that decides it, through answers, errors, cancellations and closes."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from pizzagpt_sdk import AsyncClient, Client
from pizzagpt_sdk._call import Call
from pizzagpt_sdk.engines._httpx_pool import POOL_SIZE, SpreadTransport
from pizzagpt_sdk.testing import FakePizzaGPT, Reply
from tests.conftest import httpx_client_of

pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_proxy_env")]

REQUEST = httpx.Request("POST", "https://www.pizzagpt.it/api/chatx-completion")


class Pool(httpx.AsyncBaseTransport):
    """A small pool that answers at once, or fails, or never answers, and records it all."""

    def __init__(self, number: int, behaviour: list[str]) -> None:
        self.number = number
        self.behaviour = behaviour  # shared: the test changes what the next request meets
        self.requests = 0
        self.closed_bodies = 0
        self.closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        if self.behaviour[0] == "fail":
            raise httpx.ConnectError("refused", request=request)
        if self.behaviour[0] == "hang":
            await anyio.sleep_forever()
        pool = self

        class Body(httpx.AsyncByteStream):
            async def __aiter__(self):  # type: ignore[no-untyped-def]
                yield b'{"content": "x"}'

            async def aclose(self) -> None:
                pool.closed_bodies += 1

        return httpx.Response(200, stream=Body(), request=request)

    async def aclose(self) -> None:
        self.closed = True


class Spread:
    """A `SpreadTransport` over `Pool`s, with the pools it made."""

    def __init__(self, pools: int = 3, per_pool: int = 2) -> None:
        self.pools: list[Pool] = []
        self.behaviour = ["answer"]
        self.time = 0.0
        self.transport = SpreadTransport(
            self._new, pools=pools, per_pool=per_pool, idle_expiry=5.0, clock=lambda: self.time
        )

    def _new(self) -> Pool:
        self.pools.append(Pool(len(self.pools), self.behaviour))
        return self.pools[-1]

    async def send(self) -> httpx.Response:
        return await self.transport.handle_async_request(REQUEST)

    def requests(self) -> list[int]:
        return [pool.requests for pool in self.pools]

    def busy(self) -> list[int]:
        return list(self.transport._busy)


async def test_calls_one_at_a_time_use_one_pool() -> None:
    spread = Spread()
    for _ in range(5):
        response = await spread.send()
        assert await response.aread() == b'{"content": "x"}'
        await response.aclose()
    assert spread.requests() == [5]
    assert spread.busy() == [0]


async def test_pools_are_filled_in_turn_then_requests_wait_for_a_place_in_any() -> None:
    spread = Spread(pools=3, per_pool=2)
    responses = [await spread.send() for _ in range(6)]
    assert spread.requests() == [2, 2, 2]  # each pool filled before the next is made
    got: list[httpx.Response] = []
    async with anyio.create_task_group() as tasks:
        for _ in range(2):
            tasks.start_soon(lambda: _append(got, spread.send()))
            await anyio.wait_all_tasks_blocked()
        assert spread.requests() == [2, 2, 2]  # no fourth pool: both wait
        await responses[3].aclose()  # a place in the second pool: the first waiter's
        await anyio.wait_all_tasks_blocked()
        assert spread.requests() == [2, 3, 2]
        await responses[4].aclose()  # a place in the third: the second waiter's
    assert spread.requests() == [2, 3, 3]
    assert spread.busy() == [2, 2, 2]  # the places passed on, not freed
    for response in [*responses, *got]:
        await response.aclose()
    assert spread.busy() == [0, 0, 0]


async def _append(into: list[httpx.Response], response: Any) -> None:
    into.append(await response)


async def test_a_wait_for_a_place_ends_at_the_pool_timeout_or_a_cancellation() -> None:
    spread = Spread(pools=1, per_pool=1)
    first = await spread.send()
    request = httpx.Request("POST", REQUEST.url, extensions={"timeout": {"pool": 0.05}})
    with pytest.raises(httpx.PoolTimeout):
        await spread.transport.handle_async_request(request)
    with anyio.move_on_after(0.05) as scope:
        await spread.send()
    assert scope.cancelled_caught
    assert not spread.transport._waiting
    await first.aclose()
    assert spread.busy() == [0]  # nobody waits: the place is free
    await (await spread.send()).aclose()
    assert spread.requests() == [2]


async def test_the_first_pool_with_a_free_place_is_preferred_to_a_less_busy_one() -> None:
    spread = Spread(pools=2, per_pool=2)
    first, second, third = [await spread.send() for _ in range(3)]
    assert spread.busy() == [2, 1]
    await first.aclose()
    await third.aclose()
    await spread.send()  # [1, 0]: the first pool, whose connection is already open
    assert spread.busy() == [2, 0]
    await second.aclose()


async def test_a_response_closed_twice_counts_once() -> None:
    spread = Spread()
    response = await spread.send()
    await response.aclose()
    await response.stream.aclose()  # type: ignore[union-attr]
    assert spread.busy() == [0]
    assert spread.pools[0].closed_bodies == 2  # every close still reaches the pool's body


async def test_a_failed_request_is_not_counted_open() -> None:
    spread = Spread(per_pool=1)
    spread.behaviour[0] = "fail"
    for _ in range(3):
        with pytest.raises(httpx.ConnectError):
            await spread.send()
    assert spread.busy() == [0]  # one pool: the failures left it idle
    spread.behaviour[0] = "answer"
    await (await spread.send()).aclose()
    assert spread.requests() == [4]


async def test_a_cancelled_request_is_not_counted_open() -> None:
    spread = Spread(per_pool=1)
    spread.behaviour[0] = "hang"
    with anyio.move_on_after(0.05) as scope:
        await spread.send()
    assert scope.cancelled_caught
    assert spread.busy() == [0]


async def test_the_last_pools_close_once_idle_past_the_expiry() -> None:
    spread = Spread(pools=3, per_pool=1)
    responses = [await spread.send() for _ in range(3)]
    await responses[0].aclose()
    await responses[1].aclose()  # the first two pools idle from t=0
    spread.time = 10.0
    await (await spread.send()).aclose()  # the last pool is busy: nothing closes
    await responses[2].aclose()  # the last pool idle from t=10
    spread.time = 14.0
    await (await spread.send()).aclose()  # idle for 4 s only: nothing closes
    assert [pool.closed for pool in spread.pools] == [False, False, False]
    spread.time = 15.5
    await (await spread.send()).aclose()
    # The last pool, then the one before it, now the last; never the first.
    assert [pool.closed for pool in spread.pools] == [False, True, True]
    assert len(spread.transport._pools) == 1
    assert spread.requests() == [4, 1, 1]
    assert spread.busy() == [0]


async def test_closing_closes_every_pool() -> None:
    spread = Spread(pools=3, per_pool=1)
    responses = [await spread.send() for _ in range(3)]
    await spread.transport.aclose()
    assert [pool.closed for pool in spread.pools] == [True, True, True]
    for response in responses:  # closing a body after its pool is harmless
        await response.aclose()


async def test_asyncclient_uses_small_pools_unless_a_proxy_applies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NO_PROXY", "example.com")  # not a proxy
    async with AsyncClient() as client:
        assert isinstance(httpx_client_of(client)._transport, SpreadTransport)
    with Client() as sync_client:  # threads do not gain from it (docs/performance.md)
        assert isinstance(httpx_client_of(sync_client)._transport, httpx.HTTPTransport)
    async with AsyncClient(proxy="http://127.0.0.1:9") as client:
        assert isinstance(httpx_client_of(client)._transport, httpx.AsyncHTTPTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    async with AsyncClient() as client:  # httpx's own pool, which applies the environment's
        assert isinstance(httpx_client_of(client)._transport, httpx.AsyncHTTPTransport)
        assert "https://" in [pattern.pattern for pattern in httpx_client_of(client)._mounts]


async def test_many_calls_at_once_over_loopback_spread_and_keep_their_connections() -> None:
    calls = 6 * POOL_SIZE + 1
    fake = FakePizzaGPT()
    async with fake.serve_async() as server, AsyncClient(base_url=server.url) as client:
        for _ in range(2):
            # Each answer takes long enough that every call is in flight at once.
            fake.script(*[Reply.answer("x").delay(0.2)] * calls)
            answers = await client.map(["hi"] * calls, concurrency=calls)
            assert [answer.text for answer in answers] == ["x"] * calls
        transport = httpx_client_of(client)._transport
        assert isinstance(transport, SpreadTransport)
        assert len(transport._pools) == 7  # six full pools and one with the last call
        assert transport._busy == [0] * 7
        assert server.connections == calls  # the second round reused the first's, no more


async def test_a_call_failing_mid_body_as_its_scope_is_cancelled_frees_its_place(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The caller's scope is cancelled in the very step in which the body fails the call (an
    # error body past its excerpt limit), so the cleanup runs in a cancelled scope.
    outer = anyio.CancelScope()
    data_received = Call.data_received

    def cancelling(self: Call, data: bytes) -> list[Any]:
        events = data_received(self, data)
        if not self.receiving:
            outer.cancel()
        return events

    monkeypatch.setattr(Call, "data_received", cancelling)
    fake = FakePizzaGPT()
    fake.script(Reply.raw(500, b"e" * 300_000).trickle(100_000, interval=0.05))
    async with fake.serve_async() as server, AsyncClient(base_url=server.url) as client:
        with outer:
            async with client.stream("hi") as stream:
                async for _ in stream:
                    pass
        assert outer.cancelled_caught
        transport = httpx_client_of(client)._transport
        assert isinstance(transport, SpreadTransport)
        assert transport._busy == [0]
