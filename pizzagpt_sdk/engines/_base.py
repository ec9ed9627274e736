"""The seam between the drive loops and an HTTP library: an engine sends, a response is read.

An engine decides nothing. It opens a request with the method, URL, headers, body and per-wait
timeouts it is given, hands back the status, the headers and the raw body chunk by chunk (as it
came off the wire, still compressed: the core decodes it, bounded, see `_decoding.py`), closes,
and translates its library's errors into `TransportError` in one place (`raise … from exc`).
The drive loops in `_client.py` and `_async_client.py` do the rest, with the core.
"""

from __future__ import annotations

import abc
import functools
import os
import sys
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pizzagpt_sdk._decoding import accept_encoding
from pizzagpt_sdk._exceptions import UsageError

if TYPE_CHECKING:
    from pizzagpt_sdk._config import Config
    from pizzagpt_sdk._models import Timeout
    from pizzagpt_sdk._protocol import Request

__all__ = [
    "AsyncEngine",
    "AsyncResponse",
    "Engine",
    "MoveOnAfter",
    "Response",
    "TransportError",
    "time_left",
]


#: The pools a child process inherited from its parent through `os.fork()`, kept referenced and
#: never closed: the child makes a pool of its own, and collecting the parent's there could shut
#: the sockets the two processes share (a TLS close, a `shutdown()`), under the parent's calls.
_PARENTS_POOLS: list[object] = []

#: How many `os.fork()`s lie between the process that imported the SDK and this one: 0 there,
#: one more in each child. An engine notes it when it makes its pool and compares it on each
#: request to find that it runs in a forked child: `os.getpid()` is a system call each time.
forks = 0


def _forked() -> None:
    global forks
    forks += 1


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork() either
    os.register_at_fork(after_in_child=_forked)


class TransportError(Exception):
    """A request could not be sent, or its body could not be read.

    The HTTP library's own exception is the `__cause__`; the SDK turns this into
    `APIConnectionError` (or `APITimeoutError`), retried as the policy says.

    Args:
        message: What happened.
        timeout: Whether a wait ran out.
    """

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuild_transport_error, (str(self), self.timeout))


def _rebuild_transport_error(message: str, timeout: bool) -> TransportError:
    return TransportError(message, timeout=timeout)


class _EndsAt(threading.local):
    """When the blocking engine call in progress in this thread must end (`time.monotonic()`),
    or `None`: set by `MoveOnAfter`, read by `time_left()`."""

    value: float | None = None


_ENDS_AT = _EndsAt()


def time_left() -> float | None:
    """What is left of the time the blocking drive loop gave the engine call in progress in
    this thread (the core's `Send.timeout` or `Receive.timeout`: what is left of the deadline).

    A library that takes one timeout per read lets a server that trickles bytes hold a call
    for as long as it likes, each read well within its timeout: a blocking engine bounds every
    wait by this as well (the httpx engines' network streams do), and raises its timeout error
    when nothing is left. Async engines need not: the async drive loop cancels the wait itself.

    Returns:
        Seconds, 0.0 once the time is up; `None` for no limit (or outside a blocking call).
    """
    ends_at = _ENDS_AT.value
    return None if ends_at is None else max(0.0, ends_at - time.monotonic())


class MoveOnAfter:
    """The blocking twin of `anyio.move_on_after`, for the blocking drive loop.

    A blocking wait cannot be cancelled from outside: for `seconds`, the engine call inside
    bounds its own waits by `time_left()`, and the timeout it then raises (a `TransportError`
    with `timeout=True`, once the time is up) is caught here and `cancelled_caught` set.

    Args:
        seconds: The most the engine call may take; `None` for no limit.
    """

    # A timer may end a wait a hair before the instant asked for (rounded to its resolution).
    _EARLY = 0.001

    def __init__(self, seconds: float | None) -> None:
        self._seconds = seconds
        self._ends_at: float | None = None
        self._outer: float | None = None
        #: Whether the time ran out, and the engine's timeout was caught.
        self.cancelled_caught = False

    def __enter__(self) -> MoveOnAfter:
        if self._seconds is not None:
            self._ends_at = time.monotonic() + self._seconds
        self._outer, _ENDS_AT.value = _ENDS_AT.value, self._ends_at
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        _ENDS_AT.value = self._outer
        if (
            isinstance(exc, TransportError)
            and exc.timeout
            and self._ends_at is not None
            and time.monotonic() >= self._ends_at - self._EARLY
        ):
            self.cancelled_caught = True
            return True
        return False


class Response(abc.ABC):
    """A response whose status line and headers have arrived, its body still to read."""

    #: The HTTP status code.
    status_code: int
    #: The headers as (name, value) pairs, in order.
    headers: Sequence[tuple[str, str]]
    #: Whether the last `read()` returned the body's last bytes, for an engine whose library
    #: knows (by its length, or a buffer it has read to the end): the driver then ends the body
    #: without one more read for its `b""`. An engine that cannot tell leaves it `False`.
    ended: bool = False

    @abc.abstractmethod
    def read(self) -> bytes:
        """The next chunk of the body, as it arrived (not decompressed); `b""` at its end.

        Raises:
            TransportError: The body could not be read.
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Close the response: a connection whose body was read to the end goes back to the
        pool, any other is closed. Never raises."""


class AsyncResponse(abc.ABC):
    """`Response`, for async code."""

    status_code: int
    headers: Sequence[tuple[str, str]]
    ended: bool = False

    @abc.abstractmethod
    async def aread(self) -> bytes:
        """The next chunk of the body; `b""` at its end.

        Raises:
            TransportError: The body could not be read.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close the response, as `Response.close()` does."""


@functools.lru_cache(maxsize=64)
def sent_headers(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """The request's headers as an engine sends them: with an `accept-encoding` that names the
    codings the core can decode (it decodes the body, not the HTTP library), placed after
    `accept` as browsers place it; a caller's own `accept-encoding` is kept."""
    if any(name.lower() == "accept-encoding" for name, _ in headers):
        return headers
    at = 1 if headers and headers[0][0] == "accept" else len(headers)
    return (*headers[:at], ("accept-encoding", accept_encoding()), *headers[at:])


class _Pooled:
    """What every engine of the SDK's has: a pool it owns, or the caller's HTTP client."""

    #: The engine's name, as `engine=` takes it.
    name: str = ""
    _owns: bool = True

    @classmethod
    def from_config(cls, config: Config, *, http_client: Any = None, **more: Any) -> Any:
        """The engine for a client's configuration: the caller's own HTTP client as it is, or
        a pool of the engine's own with the client's TLS, proxy and connection limit."""
        make: Any = cls  # each engine's own constructor takes these arguments
        if http_client is not None:
            return make(http_client=http_client)
        return make(
            verify=config.verify,
            proxy=config.proxy,
            max_connections=config.max_connections,
            tls=config.https,
            **more,
        )

    @property
    def owns_pool(self) -> bool:
        """Whether closing the pool is the engine's job (not so for a caller's HTTP client)."""
        return self._owns


class Engine(_Pooled, abc.ABC):
    """A blocking engine: one connection pool of one HTTP library, for `Client`."""

    @abc.abstractmethod
    def send(self, request: Request, timeout: Timeout, max_body: int | None = None) -> Response:
        """Send `request`, no single wait longer than `timeout` says; return once the status
        line and headers have arrived. An engine whose library reads the whole body before
        handing it over stops reading past `max_body` bytes (the call refuses such a body).

        Raises:
            TransportError: The request could not be sent, or no response arrived.
        """

    def abandon(self, request: Request) -> None:
        """Free what `send(request)` still holds when the drive loop never got its response.

        An exception that the drive loop did not expect (Ctrl-C's `KeyboardInterrupt`, or any
        that a signal handler raises) can land just as `send()` returns: Python 3.10 runs
        signal handlers right after each call. The response is then lost on its way, and
        nothing would ever close it (a connection marked active for good). The drive loop
        calls this then, and also when the exception came from within `send()`: once the
        engine has freed what the call held, there is nothing left and this does nothing.
        The default does nothing, which suits an engine whose response holds nothing once
        `send()` has returned (curl_cffi's, which reads the whole body first).
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Close the pool (never an HTTP client the caller passed in)."""

    @property
    @abc.abstractmethod
    def is_closed(self) -> bool:
        """Whether `close()` has been called (or the caller's own HTTP client is closed)."""


class AsyncEngine(_Pooled, abc.ABC):
    """An async engine: one connection pool of one HTTP library, for `AsyncClient`."""

    @abc.abstractmethod
    async def send(
        self, request: Request, timeout: Timeout, max_body: int | None = None
    ) -> AsyncResponse:
        """As `Engine.send()`."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """As `Engine.close()`."""

    @property
    @abc.abstractmethod
    def is_closed(self) -> bool:
        """As `Engine.is_closed`."""

    _asyncio_only = False
    _loop: object = None
    _loop_forks = -1  # `forks` when `_loop` was noted

    def check_runnable(self) -> None:
        """Raise `UsageError` when this engine cannot run here: an asyncio-only engine under
        trio, or an event loop other than the one the engine first ran in, whose sockets its
        pool holds (each `asyncio.run()` starts a new loop). Called when the client is built
        and on each request; outside any event loop it passes."""
        if self._loop is not None and self._loop_forks == forks:
            # The asyncio loop of every call before: the common case, first, in a few steps
            # (`_get_running_loop()` is `get_running_loop()` with None for no loop).
            asyncio = sys.modules.get("asyncio")
            if asyncio is not None and asyncio._get_running_loop() is self._loop:
                return
        library, loop = _running_loop()
        if loop is self._loop and loop is not None and self._loop_forks == forks:
            return  # trio's run of every call before
        if library == "trio" and self._asyncio_only:
            raise UsageError(
                f"the {self.name} engine runs on asyncio only, and this is trio: "
                "use engine='httpx' or engine='httpx2'"
            )
        if loop is None:
            return
        if self._loop is None or self._loop_forks != forks:  # a forked child: its own loop
            self._loop, self._loop_forks = loop, forks
        elif loop is not self._loop:
            raise UsageError(
                "this AsyncClient's connections belong to the event loop it first ran in, and "
                "this is another one (each asyncio.run() starts a new loop): make one "
                "AsyncClient per event loop, or run your calls in one loop"
            )


def _running_loop() -> tuple[str | None, object]:
    """The async library running in this thread, and its loop (asyncio's) or run (trio's).
    Neither is imported here: a library that is not imported runs no loop."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is not None:
        try:
            return "asyncio", asyncio.get_running_loop()
        except RuntimeError:
            pass
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            return "trio", trio.lowlevel.current_trio_token()
        except RuntimeError:
            pass
    return None, None
