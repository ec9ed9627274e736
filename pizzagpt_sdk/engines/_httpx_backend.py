"""The blocking httpx engines' sockets: every wait bounded by the call's deadline, and woken by
`close()` from another thread.

httpcore (and httpcore2, under httpx2) gives each read one timeout, fixed for the request: a
server that trickles its status line, headers or body one byte at a time keeps every read
within it, and so a call alive for as long as it likes. Async calls are cancelled at the
deadline by the drive loop; a blocking read cannot be, so it must not wait past the deadline in
the first place. httpcore's network backends are its public seam for that
(https://www.encode.io/httpcore/network-backends/): this one wraps the pool's own and bounds
each connect, read and write by `time_left()`, what the blocking drive loop has left the engine
call in progress.

httpx builds its pools itself and takes no backend (encode/httpx#3749 proposes it), so
`install()` gives one to the pools of a client the engine made, through their
`_network_backend` attribute, which httpcore 1.0 and httpcore2 both keep.

A socket closed in one thread does not wake a `recv()` blocked on it in another; shut down, it
does. So `shut_down()`, called by the engine's `close()`, shuts every socket down before the
pool closes them: a call waiting for an answer wakes at once, and ends in `ClientClosedError`.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import socket
import threading
import weakref
from collections.abc import Iterable
from typing import Any

from ._base import time_left

__all__ = ["DeadlineBackend", "install"]


class DeadlineBackend:
    """An httpcore network backend that bounds every wait of `backend`'s by `time_left()`.

    Args:
        backend: The pool's own backend (httpcore's `SyncBackend`).
        core: The httpcore module the pool comes from (`httpcore`, `httpcore2`): its timeout
            errors are the ones httpx translates.
    """

    def __init__(self, backend: Any, core: Any) -> None:
        self._backend = backend
        self._core = core
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._streams: weakref.WeakSet[_DeadlineStream] = weakref.WeakSet()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> _DeadlineStream:
        timeout = _bounded(timeout, self._core.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, timeout, local_address, socket_options)
        return self._track(stream)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> _DeadlineStream:
        timeout = _bounded(timeout, self._core.ConnectTimeout)
        return self._track(self._backend.connect_unix_socket(path, timeout, socket_options))

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)

    def shut_down(self) -> None:
        """Shut down every open socket, waking the reads blocked on them in other threads.

        Not in a process forked from the one that opened them: they are the parent's too.
        """
        if os.getpid() != self._pid:
            return
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.shut_down()

    def _track(self, inner: Any) -> _DeadlineStream:
        stream = _DeadlineStream(inner, self._core)
        with self._lock:
            self._streams.add(stream)
        return stream


class _DeadlineStream:
    """An httpcore network stream whose waits end by `time_left()`."""

    def __init__(self, inner: Any, core: Any) -> None:
        self._inner = inner
        self._core = core

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        data: bytes = self._inner.read(max_bytes, _bounded(timeout, self._core.ReadTimeout))
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout, self._core.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> _DeadlineStream:
        timeout = _bounded(timeout, self._core.ConnectTimeout)
        self._inner = self._inner.start_tls(ssl_context, server_hostname, timeout)
        return self

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def shut_down(self) -> None:
        sock = self._inner.get_extra_info("socket")
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):  # closed already, or never connected
                sock.shutdown(socket.SHUT_RDWR)


def _bounded(timeout: float | None, error: type[Exception]) -> float | None:
    """`timeout`, no longer than what is left of the call's time; `error` if nothing is."""
    left = time_left()
    if left is None:
        return timeout
    if left <= 0:
        raise error("the call's deadline ran out")
    return left if timeout is None else min(timeout, left)


def install(http: Any) -> list[DeadlineBackend]:
    """Give each pool of the httpx (or httpx2) client `http` a `DeadlineBackend`: the pools
    of its transport and of its proxy mounts that are httpcore's. Returns them all."""
    backends = []
    # Private attributes, read defensively: were they gone, the pools would keep their own
    # backends (tests/test_in_flight.py's own-pool test would fail, not the client).
    mounts = getattr(http, "_mounts", {})
    for transport in (getattr(http, "_transport", None), *mounts.values()):
        pool: Any = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if backend is None:
            continue  # not an HTTPTransport (a MockTransport, the fake's): no sockets
        if not isinstance(backend, DeadlineBackend):
            core = importlib.import_module(type(pool).__module__.split(".")[0])
            backend = DeadlineBackend(backend, core)
            pool._network_backend = backend
        backends.append(backend)
    return backends
