"""The clients behind an integration object (an `llm` model, a LangChain chat model).

An integration object lives long and is called from anywhere: threads (LangChain's `batch()`),
and, for its async calls, from whatever event loop is running. `SharedClients` gives it one
pool per world instead of one per call:

- one `Client`, made on first use and shared by every thread (httpx's pool is thread-safe);
- one `AsyncClient` per running event loop. An async pool cannot cross loops: its connections
  are the loop's sockets, so a client made under one `asyncio.run()` is broken under the next
  (pytest-asyncio, `llm --async` and many scripts run a loop per call). The client is closed
  when its loop ends: a task (asyncio) or a system task (trio) that waits for the loop's end
  and then closes it; `asyncio.run()`, `asyncio.Runner` and trio cancel such tasks as they
  finish. A loop stopped without that (`loop.close()` with tasks pending) leaves its client
  to the garbage collector, which warns (`ResourceWarning`) as for any unclosed client.

The `Client` is closed when the `SharedClients` is garbage collected, or at exit.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from pizzagpt_sdk import AsyncClient, Client

__all__ = ["SharedClients"]


class SharedClients:
    """One `Client`, and one `AsyncClient` per running event loop, all made with `kwargs`.

    Args:
        kwargs: The clients' constructor arguments.
    """

    def __init__(self, kwargs: Mapping[str, Any]) -> None:
        self.kwargs = dict(kwargs)
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._async: weakref.WeakKeyDictionary[object, tuple[AsyncClient, object]] = (
            weakref.WeakKeyDictionary()
        )

    def __reduce__(self) -> tuple[type[SharedClients], tuple[dict[str, Any]]]:
        # A copy (copy, deepcopy, pickle) makes its own clients: pools and locks do not travel.
        return (type(self), (self.kwargs,))

    def client(self) -> Client:
        """The shared `Client`, made on first use (and again if someone closed it)."""
        with self._lock:
            if self._client is None or self._client.is_closed:
                self._client = Client(**self.kwargs)
                weakref.finalize(self, self._client.close)
            return self._client

    def async_client(self) -> AsyncClient:
        """The running event loop's `AsyncClient`, made on first use in that loop.

        Raises:
            RuntimeError: No asyncio or trio event loop is running in this thread.
        """
        loop, library = _running_loop()
        with self._lock:
            entry = self._async.get(loop)
            if entry is None or entry[0].is_closed:
                client = AsyncClient(**self.kwargs)
                # The closer is kept with the client: asyncio holds its tasks only weakly. It
                # references the loop, so it forgets the entry as it ends, or the weak key
                # would never die.
                closer = _close_at_loop_end(client, library, lambda: self._forget(loop, client))
                entry = self._async[loop] = (client, closer)
            return entry[0]

    def _forget(self, loop: object, client: AsyncClient) -> None:
        with self._lock:
            entry = self._async.get(loop)
            if entry is not None and entry[0] is client:
                del self._async[loop]


def _running_loop() -> tuple[object, str]:
    """The running loop as a key (asyncio's loop, trio's token), and its library's name."""
    try:
        return asyncio.get_running_loop(), "asyncio"
    except RuntimeError:
        pass
    trio = sys.modules.get("trio")  # Loaded if trio runs: a trio program imported it.
    if trio is not None:
        try:
            return trio.lowlevel.current_trio_token(), "trio"
        except RuntimeError:
            pass
    raise RuntimeError("no asyncio or trio event loop is running in this thread")


def _close_at_loop_end(client: AsyncClient, library: str, forget: Callable[[], None]) -> object:
    """Start a task that waits until its loop ends, then closes `client` and calls `forget`;
    return the task."""
    if library == "trio":
        import trio

        async def close_at_trio_end() -> None:
            try:
                await trio.sleep_forever()
            finally:
                forget()
                with trio.CancelScope(shield=True):
                    await client.aclose()

        trio.lowlevel.spawn_system_task(close_at_trio_end, name="pizzagpt-close-at-loop-end")
        return close_at_trio_end

    async def close_at_asyncio_end() -> None:
        try:
            await asyncio.get_running_loop().create_future()  # Never set: only cancelled.
        finally:
            forget()
            await client.aclose()

    return asyncio.get_running_loop().create_task(
        close_at_asyncio_end(), name="pizzagpt-close-at-loop-end"
    )


def call_kwargs(**options: Any) -> dict[str, Any]:
    """The options that are set (not `None`), as per-call keyword arguments."""
    return {name: value for name, value in options.items() if value is not None}
