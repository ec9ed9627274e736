"""A raw TCP server on 127.0.0.1, the base of the tests' misbehaving HTTP servers: for the
faults the testing kit's fake cannot script, where a test needs control of every byte."""

from __future__ import annotations

import contextlib
import socket
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["SocketServer"]


class SocketServer:
    """Accepts connections on 127.0.0.1 and serves each in a thread of its own, with
    `serve(connection)`, which a subclass writes (and which should return soon once `stopping`
    is set). Leaving the `with` block stops accepting, shuts every connection down (waking a
    thread blocked on one), and waits for every thread to end.

    `connections` counts the connections accepted.
    """

    def __init__(self) -> None:
        self.connections = 0
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.02)
        self._open: list[socket.socket] = []
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}"

    def serve(self, connection: socket.socket) -> None:
        """Serve one accepted connection (closing it is the server's job)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._start(self._accept)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stopping.set()
        self._threads[0].join(10)  # accepts no more
        with self.lock:
            for connection in self._open:
                with contextlib.suppress(OSError):
                    connection.shutdown(socket.SHUT_RDWR)
            threads = list(self._threads[1:])
        for thread in threads:
            thread.join(10)
            assert not thread.is_alive()
        self._listener.close()

    def _start(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        with self.lock:
            self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                connection, _ = self._listener.accept()
            except TimeoutError:
                continue
            with self.lock:
                self.connections += 1
                self._open.append(connection)
            self._start(self._serve_and_close, connection)

    def _serve_and_close(self, connection: socket.socket) -> None:
        with connection:
            self.serve(connection)
