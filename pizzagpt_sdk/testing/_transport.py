"""`FakeTransport`: the fake as an httpx transport, sync and async, with no sockets.

Its faults are what httpx would see from a socket: a wait past the read timeout raises
`httpx.ReadTimeout` once that timeout has passed, and a connection that breaks mid-body raises
`httpx.RemoteProtocolError` from the body stream, with httpcore's message.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import httpx

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._fake import FakePizzaGPT
    from ._reply import Response

__all__ = ["FakeTransport"]


class FakeTransport(httpx.BaseTransport, httpx.AsyncBaseTransport):
    """An httpx transport that answers from a `FakePizzaGPT` in-process.

    The same object serves `httpx.Client(transport=...)` and `httpx.AsyncClient(transport=...)`.
    Waits use `time.sleep` for the sync client and `anyio.sleep` for the async one (asyncio or
    trio). Closing it does nothing: it holds no resources.

    Args:
        fake: The fake that decides the responses.
    """

    def __init__(self, fake: FakePizzaGPT) -> None:
        self._fake = fake

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        """Answer a request from the sync client.

        Args:
            request: The request.

        Returns:
            The response, its body streamed as the reply says.

        Raises:
            httpx.ReadTimeout: The reply's delay is longer than the request's read timeout.
        """
        response = self._fake._respond(
            request.method, _target(request), request.headers.multi_items(), request.read()
        )
        seconds, expires = _wait(response.delay, request)
        time.sleep(seconds)
        if expires:
            raise _timeout(response.delay, request)
        return _to_httpx(response, request)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Answer a request from the async client.

        Args:
            request: The request.

        Returns:
            The response, its body streamed as the reply says.

        Raises:
            httpx.ReadTimeout: The reply's delay is longer than the request's read timeout.
        """
        body = await request.aread()
        response = self._fake._respond(
            request.method, _target(request), request.headers.multi_items(), body
        )
        seconds, expires = _wait(response.delay, request)
        await anyio.sleep(seconds)
        if expires:
            raise _timeout(response.delay, request)
        return _to_httpx(response, request)


class _Body(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body that trickles and breaks off as the reply says, for both clients.

    An iterator rather than a generator: httpx may stop iterating at any point, and an async
    generator left suspended is finalized by the event loop later, with warnings on trio.
    """

    def __init__(self, response: Response, request: httpx.Request) -> None:
        self._response = response
        self._request = request
        # RFC 9110, section 9.3.2: a response to HEAD has no content, whatever it declares.
        self._chunks = [] if request.method == "HEAD" else response.chunks()
        self._sent = 0

    def __iter__(self) -> Self:
        return self

    def __next__(self) -> bytes:
        seconds, expires = self._pause()
        time.sleep(seconds)
        return self._next_chunk(expires, StopIteration)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> bytes:
        seconds, expires = self._pause()
        await anyio.sleep(seconds)
        return self._next_chunk(expires, StopAsyncIteration)

    def _pause(self) -> tuple[float, bool]:
        """The wait before the next chunk (none before the first), and whether it times out."""
        if 0 < self._sent < len(self._chunks):
            return _wait(self._response.interval, self._request)
        return 0.0, False

    def _next_chunk(self, expires: bool, stop: type[Exception]) -> bytes:
        if expires:
            raise _timeout(self._response.interval, self._request)
        if self._sent < len(self._chunks):
            self._sent += 1
            return self._chunks[self._sent - 1]
        if self._response.close_mid_body:
            received = sum(len(chunk) for chunk in self._chunks)
            raise httpx.RemoteProtocolError(
                # httpcore's message for a connection closed before content-length was reached.
                "peer closed connection without sending complete message body: "
                f"received {received} bytes, expected {len(self._response.body)}",
                request=self._request,
            )
        raise stop


def _target(request: httpx.Request) -> str:
    return request.url.raw_path.decode("ascii")


def _wait(seconds: float, request: httpx.Request) -> tuple[float, bool]:
    """How long to really wait for `seconds`, and whether the read timeout cuts it short."""
    timeout = request.extensions.get("timeout", {}).get("read")
    if timeout is not None and seconds > timeout:
        return timeout, True
    return seconds, False


def _timeout(seconds: float, request: httpx.Request) -> httpx.ReadTimeout:
    timeout = request.extensions["timeout"]["read"]
    return httpx.ReadTimeout(
        f"timed out: the fake waits {seconds:g} s, the read timeout is {timeout:g} s",
        request=request,
    )


def _to_httpx(response: Response, request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        response.status,
        headers=list(response.headers),
        stream=_Body(response, request),
        extensions={
            "http_version": b"HTTP/1.1",
            "reason_phrase": response.reason.encode("ascii"),
        },
    )
