"""A loopback HTTP/1.1 server fast enough not to be the bottleneck of the benchmarks.

It answers every POST at once with a canned body, keeps connections alive, and parses just
enough of each request (the request line and `content-length`) to find where the next one
starts. One asyncio protocol object per connection, no framework, no per-request task: on one
core it serves several times what the fastest client under test can send (see the harness's
"server" row, measured in every run).

Routes:
    POST /api/chatx-completion  PizzaGPT's current answer shape (protocol.md).
    POST /v1/chat/completions   an OpenAI chat completion, for openai-python.
    GET  /_bench/connections    how many connections each listener has accepted, as JSON
                                ({"http": n, "https": m}): the harness counts TLS handshakes.
    anything else               404 with a Nuxt-style JSON error body.

With `--tls-cert` and `--tls-key` (a PEM certificate for 127.0.0.1 and its key; the harness
makes them with trustme's test CA), it also serves the same routes over HTTPS on a second port.

Run it alone with `python benchmarks/server.py [--port N] [--tls-cert C --tls-key K]`: it prints
its base URL (and the HTTPS one on a second line), then serves until stdin closes or it gets
SIGTERM/SIGINT. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import ssl
import sys

__all__ = ["ANSWER_TEXT", "main", "serve"]

#: The answer's text: about the length of a short real answer.
ANSWER_TEXT = (
    "The sky looks blue because air molecules scatter the short blue wavelengths of sunlight "
    "far more than the long red ones (Rayleigh scattering), so blue light reaches your eyes "
    "from every direction of the sky."
)


def _response(status: str, body: object) -> bytes:
    payload = json.dumps(body).encode()
    head = (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n"
    )
    return head.encode("ascii") + payload


_PIZZAGPT = _response("200 OK", {"content": ANSWER_TEXT, "refusal": None, "role": "assistant"})
_OPENAI = _response(
    "200 OK",
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": ANSWER_TEXT, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 40, "total_tokens": 49},
    },
)
_NOT_FOUND = _response("404 Not Found", {"statusCode": 404, "message": "no such route"})
_BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_ROUTES = {b"/api/chatx-completion": _PIZZAGPT, b"/v1/chat/completions": _OPENAI}
_STATS = b"/_bench/connections"
_MAX_HEAD = 65536
#: Connections accepted so far, by listener: one per TCP connect, so over HTTPS one per handshake.
ACCEPTED = {"http": 0, "https": 0}


class _Connection(asyncio.Protocol):
    """One keep-alive connection: answers each complete request as soon as it has arrived."""

    def __init__(self, listener: str = "http") -> None:
        self._transport: asyncio.Transport | None = None
        self._buffer = b""
        self._listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        ACCEPTED[self._listener] += 1

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        buffer = self._buffer + data if self._buffer else data
        replies: list[bytes] = []
        while True:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > _MAX_HEAD:
                    self._refuse(replies)
                    return
                break
            head = buffer[:end]
            length = _content_length(head)
            if length is None:
                self._refuse(replies)
                return
            size = end + 4 + length
            if len(buffer) < size:
                break
            target = head[head.find(b" ") + 1 : head.find(b" HTTP/")]
            route = target.split(b"?", 1)[0]
            replies.append(_stats() if route == _STATS else _ROUTES.get(route, _NOT_FOUND))
            buffer = buffer[size:]
        self._buffer = buffer
        if replies:
            self._transport.write(b"".join(replies) if len(replies) > 1 else replies[0])

    def _refuse(self, replies: list[bytes]) -> None:
        assert self._transport is not None
        self._transport.write(b"".join([*replies, _BAD_REQUEST]))
        self._transport.close()


def _stats() -> bytes:
    return _response("200 OK", ACCEPTED)


def _content_length(head: bytes) -> int | None:
    """The request's `content-length` (0 when absent); `None` for a body we cannot frame."""
    lowered = head.lower()
    if b"\ntransfer-encoding:" in lowered:
        return None  # no client under test sends a chunked body; refuse rather than guess
    start = lowered.find(b"\ncontent-length:")
    if start < 0:
        return 0
    start += len(b"\ncontent-length:")
    stop = lowered.find(b"\r\n", start)
    value = lowered[start : stop if stop >= 0 else len(lowered)].strip()
    return int(value) if value.isdigit() else None


async def serve(
    port: int = 0,
    *,
    ready: asyncio.Future[int] | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> None:
    """Serve on 127.0.0.1:`port` (0 for a free one) until cancelled.

    Args:
        port: The TCP port.
        ready: Set to the bound port once the server listens.
        ssl_context: Serve HTTPS with this server-side context (HTTP/1.1, no ALPN).
    """
    loop = asyncio.get_running_loop()
    listener = "http" if ssl_context is None else "https"
    server = await loop.create_server(
        lambda: _Connection(listener), "127.0.0.1", port, backlog=4096, ssl=ssl_context
    )
    async with server:
        bound = server.sockets[0].getsockname()[1]
        if ready is not None:
            ready.set_result(bound)
        await server.serve_forever()


async def _main(port: int, cert: str | None, key: str | None) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[int] = loop.create_future()
    tasks = [asyncio.create_task(serve(port, ready=ready))]
    tls_ready: asyncio.Future[int] | None = None
    if cert is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        tls_ready = loop.create_future()
        tasks.append(asyncio.create_task(serve(0, ready=tls_ready, ssl_context=context)))
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The harness closes our stdin to stop us: a server it forgot can never outlive it.
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not sys.stdin.read(1) else None)
    print(f"http://127.0.0.1:{await ready}", flush=True)
    if tls_ready is not None:
        print(f"https://127.0.0.1:{await tls_ready}", flush=True)
    await stop.wait()
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def main(argv: list[str] | None = None) -> None:
    """Run the server until stdin closes or a signal arrives."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    parser.add_argument("--tls-cert", help="a PEM certificate chain for 127.0.0.1: serve HTTPS too")
    parser.add_argument("--tls-key", help="its private key (PEM)")
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    asyncio.run(_main(args.port, args.tls_cert, args.tls_key))


if __name__ == "__main__":
    main()
