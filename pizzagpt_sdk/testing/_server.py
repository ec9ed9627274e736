"""`FakeServer`: the fake over real sockets, an HTTP/1.1 server on 127.0.0.1.

The standard library's `http.server` parses requests and keeps connections alive; each
connection gets a thread. Stopping must never hang on a client, so every wait of a handler is
one that `stop()` can cut short: replies wait on an event instead of sleeping, and open
connections, idle keep-alive ones included, are shut down, which wakes a blocked read.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import socket
import socketserver
import ssl
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx

from pizzagpt_sdk._async_client import AsyncClient
from pizzagpt_sdk._client import Client

if TYPE_CHECKING:
    from typing_extensions import Self

    from ._fake import FakePizzaGPT

__all__ = ["FakeServer"]

# How long stop() waits for a thread; they all end at once, unless the kit itself is broken.
_JOIN_TIMEOUT = 10.0
# How often the accept loop checks for stop(): the most stop() waits for it.
_POLL_INTERVAL = 0.02
_MAX_LINE = 65536


class FakeServer:
    """A real HTTP/1.1 server on 127.0.0.1 that answers from a `FakePizzaGPT`.

    Made by `FakePizzaGPT.serve()` (or `serve_async()`); it runs between `start()` and `stop()`,
    or for the length of a `with` block, on a free port. Connections are kept alive, as the real
    service's are. It serves once: it cannot be started again after it stops.

    Args:
        fake: The fake that decides the responses.
        host: The address to listen on.
        port: The port to listen on; 0 for a free one.
        ssl_context: A server-side TLS context, to serve `https://` (with a test CA's
            certificate for `127.0.0.1`: see `trustme`); `None` serves plain `http://`.
    """

    def __init__(
        self,
        fake: FakePizzaGPT,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._fake = fake
        self._address = (host, port)
        self._ssl_context = ssl_context
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The base URL, `http://127.0.0.1:PORT` (`https://` with TLS), to pass as the SDK's
        `base_url`.

        Raises:
            RuntimeError: The server has not been started.
        """
        host, port = self._started().server_address[:2]
        scheme = "http" if self._ssl_context is None else "https"
        # Listening on every address (0.0.0.0) includes the loopback one, which a client can use.
        return f"{scheme}://{'127.0.0.1' if host == '0.0.0.0' else host!s}:{port}"

    @property
    def fake(self) -> FakePizzaGPT:
        """The fake this server serves: script it and read what it received."""
        return self._fake

    @property
    def connections(self) -> int:
        """How many TCP connections the server has accepted.

        Raises:
            RuntimeError: The server has not been started.
        """
        return self._started().accepted

    def start(self) -> None:
        """Listen (on a free port of 127.0.0.1 by default) and serve in a background thread.

        Raises:
            RuntimeError: The server was started before.
            OSError: No port could be bound.
        """
        if self._server is not None:
            raise RuntimeError("a FakeServer serves once: get another from fake.serve()")
        self._server = _HTTPServer(self._fake, self._address, self._ssl_context)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL},
            name=f"pizzagpt-fake-server-{self._server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop: close every connection, even one mid-request, and join every thread.

        A reply still waiting (`delay`, `trickle`) is abandoned and its connection closed. It
        does nothing when the server is not running.
        """
        server, thread, self._thread = self._server, self._thread, None
        if server is None or thread is None:
            return
        server.stopping.set()
        server.shutdown()  # Returns once the accept loop has ended: no connection comes after.
        thread.join(_JOIN_TIMEOUT)
        server.server_close()
        server.close_connections(_JOIN_TIMEOUT)

    def client(self, **kwargs: Any) -> Client:
        """A `pizzagpt_sdk.Client` for this server; closing it closes its connections.

        Args:
            **kwargs: `Client` arguments. `base_url` defaults to `url` and `secret` to the
                fake's; environment proxies are ignored, so that nothing but 127.0.0.1 is
                contacted (unless `verify`, `max_connections` or `proxy` is given).

        Returns:
            The client.

        Raises:
            RuntimeError: The server has not been started.
            UsageError: A bad argument, as `Client` raises it.
        """
        kwargs.setdefault("base_url", self.url)
        kwargs.setdefault("secret", self._fake.secret)
        return Client(**_local_only(kwargs, asynchronous=False))

    def async_client(self, **kwargs: Any) -> AsyncClient:
        """A `pizzagpt_sdk.AsyncClient` for this server; `aclose()` closes its connections.

        Args:
            **kwargs: `AsyncClient` arguments, with the defaults of `client()`.

        Returns:
            The client.

        Raises:
            RuntimeError: The server has not been started.
            UsageError: A bad argument, as `AsyncClient` raises it.
        """
        kwargs.setdefault("base_url", self.url)
        kwargs.setdefault("secret", self._fake.secret)
        return AsyncClient(**_local_only(kwargs, asynchronous=True))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "not started"
        return f"FakeServer({where})"

    def _started(self) -> _HTTPServer:
        if self._server is None:
            raise RuntimeError("the FakeServer has not been started: use `with fake.serve()`")
        return self._server


def _local_only(kwargs: dict[str, Any], *, asynchronous: bool) -> dict[str, Any]:
    """The client's arguments, with environment proxies turned off for its engine, so that
    nothing leaves 127.0.0.1 (aiohttp's engine never reads them). Not with arguments that
    configure the SDK's own pool (`verify`, `max_connections`, `proxy`), which an httpx
    transport of ours would refuse."""
    configured = ("http_client", "transport", "proxy", "verify", "max_connections")
    # base_url=None: the SDK takes PIZZAGPT_BASE_URL, as it will here.
    base_url = kwargs["base_url"] or os.environ.get("PIZZAGPT_BASE_URL") or ""
    if any(name in kwargs for name in configured) or not base_url.startswith("http:"):
        return kwargs  # (over TLS, the SDK's own pool verifies as it always does)
    engine = kwargs.get("engine") or "httpx"
    if engine in ("httpx", "httpx2"):
        module: Any = httpx
        if engine == "httpx2":
            import httpx2 as module
        # The fake speaks plain HTTP here (TLS takes verify=, which skips this): no TLS
        # context, whose CA bundle would cost ~100 ms to load.
        cls = module.AsyncHTTPTransport if asynchronous else module.HTTPTransport
        return {**kwargs, "transport": cls(verify=False)}
    if engine == "curl_cffi":
        from pizzagpt_sdk.engines import AsyncCurlCffiEngine, CurlCffiEngine

        cls = AsyncCurlCffiEngine if asynchronous else CurlCffiEngine
        return {**kwargs, "engine": cls(trust_env=False)}
    return kwargs


class _HTTPServer(socketserver.TCPServer):
    """A TCP server with a thread per connection, that can close them all."""

    request_queue_size = 64  # Tests open connections in bursts; the default is 5.
    # A fixed port (`pizzagpt fake --port 8080`) can be served again at once after a stop, as
    # http.server's own servers can (on Linux, never by two servers at once).
    allow_reuse_address = True

    def __init__(
        self, fake: FakePizzaGPT, address: tuple[str, int], ssl_context: ssl.SSLContext | None
    ) -> None:
        super().__init__(address, _Handler)
        self.fake = fake
        self.ssl_context = ssl_context
        self.stopping = threading.Event()
        self.accepted = 0
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()

    def process_request(self, request: Any, client_address: Any) -> None:
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name=f"pizzagpt-fake-connection-{client_address[1]}",
            daemon=True,
        )
        with self._lock:
            self.accepted += 1
            self._open.add(request)
            self._threads.add(thread)
        thread.start()

    def close_connections(self, timeout: float) -> None:
        """Shut every open connection down, which ends its thread, and join the threads."""
        with self._lock:
            for connection in self._open:
                with contextlib.suppress(OSError):  # Already reset by the client.
                    connection.shutdown(socket.SHUT_RDWR)
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)
            if thread.is_alive():  # pragma: no cover - a bug in the kit, not in a test
                raise RuntimeError(f"{thread.name} did not stop within {timeout} s")

    def _serve_connection(self, request: socket.socket, client_address: Any) -> None:
        try:
            # The handler writes the status line, the headers and the body apart: without this,
            # Nagle's algorithm holds the body until the client's delayed ACK, about 40 ms a
            # response on Linux (45.8 ms a call in a loop, 7.4 ms with it).
            request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                # In the connection's thread: a slow handshake holds up no other connection.
                # The TLS socket takes the plain one's file descriptor: stop() shuts it down.
                plain = request
                request = self.ssl_context.wrap_socket(plain, server_side=True)
                with self._lock:
                    self._open.discard(plain)
                    self._open.add(request)
            self.finish_request(request, client_address)
        except OSError:
            pass  # The client went away, or stop() shut the connection: no one to answer.
        finally:
            with self._lock:
                # Under the lock, so that close_connections() never shuts a closed socket.
                self._open.discard(request)
                self._threads.discard(threading.current_thread())
            self.shutdown_request(request)


class _Handler(http.server.BaseHTTPRequestHandler):
    """Answers each request on a connection from the fake, until the connection closes."""

    protocol_version = "HTTP/1.1"  # Keep-alive: one connection serves many requests.
    server: _HTTPServer

    def handle_request(self) -> None:
        """Answer one request, of any method."""
        body = self._read_body()
        if body is None:
            self.send_error(400, "Bad request framing")  # It also closes the connection.
            return
        response = self.server.fake._respond(self.command, self.path, self.headers.items(), body)
        stopping = self.server.stopping
        if stopping.wait(response.delay):
            self.close_connection = True  # Stopped mid-delay: close without an answer.
            return
        # Not send_response(): it adds a `server` header, and some replies bring their own.
        self.send_response_only(response.status)
        self.send_header("date", self.date_time_string())
        for name, value in response.headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD":
            return  # RFC 9110, section 9.3.2: the same headers as GET, and no content.
        for index, chunk in enumerate(response.chunks()):
            if index and stopping.wait(response.interval):
                self.close_connection = True
                return
            self.wfile.write(chunk)
        if response.close_mid_body:
            self.close_connection = True

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = handle_request

    def log_message(self, format: str, *args: Any) -> None:
        """Log nothing: a test's output is no place for an access log."""

    def _read_body(self) -> bytes | None:
        """The request's body, or `None` when its framing is broken."""
        try:
            if "chunked" in self.headers.get("transfer-encoding", "").lower():
                return self._read_chunked()
            length = self.headers.get("content-length", "0").strip()
            if not length.isdigit():
                return None
            return self.rfile.read(int(length))
        except ValueError:
            return None

    def _read_chunked(self) -> bytes:
        # RFC 9112, section 7.1: hex size lines, each chunk followed by CRLF, a 0 size, then
        # trailer lines up to a blank one. A bad size line raises ValueError.
        body = bytearray()
        while True:
            size = int(self.rfile.readline(_MAX_LINE).split(b";")[0], 16)
            if size < 0:
                raise ValueError("a negative chunk size")
            if size == 0:
                break
            body += self.rfile.read(size)
            self.rfile.readline(_MAX_LINE)
        while self.rfile.readline(_MAX_LINE).strip():
            pass
        return bytes(body)
