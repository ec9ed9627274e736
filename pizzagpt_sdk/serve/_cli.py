"""`pizzagpt serve`: its options, and running the application under uvicorn.

`pizzagpt_sdk._cli` adds these options to its parser and hands `serve` over to `run()`. Nothing
here imports starlette or uvicorn until the server starts, so the rest of the command works
without the `serve` extra.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import signal
import socket
import sys
from types import FrameType
from typing import Any

__all__ = ["add_arguments", "run"]

_MISSING_EXTRA = 'pizzagpt serve needs the serve extra: pip install "pizzagpt-sdk[serve]"'
_INTERRUPTED = 130  # as the rest of the command: 128 + SIGINT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options of `pizzagpt serve` to the command's parser, as their own group.

    Args:
        parser: The `pizzagpt` parser.
    """
    # The command's own checks of numbers (here: the command imports this module first).
    from pizzagpt_sdk._cli import _port, _positive

    group = parser.add_argument_group(
        "serve",
        "pizzagpt serve: an OpenAI-compatible API (/v1/chat/completions, /v1/models) in front "
        "of PizzaGPT; --offline serves the built-in fake, and --concurrency bounds the calls "
        "to PizzaGPT at once",
    )
    group.add_argument(
        "--host", default="127.0.0.1", metavar="ADDRESS", help="listen here (default: %(default)s)"
    )
    group.add_argument(
        "--port", type=_port, default=8000, metavar="N", help="listen on this port (default: 8000)"
    )
    group.add_argument(
        "--max-requests",
        type=_positive,
        default=64,
        metavar="N",
        help="chat requests held at once, answering or waiting; more get 503 (default: 64)",
    )
    group.add_argument(
        "--engine",
        choices=("httpx", "httpx2", "aiohttp", "curl_cffi"),
        default="httpx",
        help="the HTTP library that calls PizzaGPT (docs/engines.md): httpx (the default), "
        "httpx2, aiohttp (several times the requests a second) or curl_cffi; each beside "
        "httpx needs its extra",
    )
    group.add_argument(
        "--no-access-log",
        action="store_true",
        help="log no line per request (access lines never hold a prompt or an answer)",
    )
    group.add_argument(
        "--shutdown-timeout",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on SIGINT/SIGTERM, let calls in flight finish this long, then cancel them "
        "(default: 10)",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM.

    Args:
        args: The parsed `pizzagpt` options.

    Returns:
        The exit code: 0 after a shutdown on SIGTERM, 130 on SIGINT (Ctrl-C), 1 without the
        `serve` extra or when the address cannot be bound, 2 for a stray argument.
    """
    if args.file is not None:
        sys.stderr.write(f"pizzagpt: unexpected argument {args.file!r} after serve\n")
        return 2
    try:
        import uvicorn

        from ._app import create_app
    except ImportError:
        sys.stderr.write(_MISSING_EXTRA + "\n")
        return 1
    settings: dict[str, Any] = {"timeout": args.timeout, "max_retries": args.max_retries}
    if args.secret:
        settings["secret"] = args.secret
    _configure_logging(debug=args.debug)
    try:
        listener = _listen(args.host, args.port)
    except OSError as error:
        sys.stderr.write(f"pizzagpt: cannot listen on {args.host}:{args.port}: {error.strerror}\n")
        return 1
    with contextlib.ExitStack() as stack:
        stack.callback(listener.close)
        fake = None
        if args.offline:
            from pizzagpt_sdk.testing import FakePizzaGPT

            pizzagpt = FakePizzaGPT()
            fake = stack.enter_context(pizzagpt.serve())
            settings.setdefault("secret", pizzagpt.secret)
        base_url = args.base_url if fake is None else fake.url
        from pizzagpt_sdk import AsyncClient, UsageError

        client: AsyncClient
        try:
            if fake is not None:
                # The fake server's clients ignore proxy settings: nothing leaves 127.0.0.1.
                client = fake.async_client(engine=args.engine, **settings)
            else:
                client = AsyncClient(base_url=base_url, engine=args.engine, **settings)
        except UsageError as error:  # an engine whose extra is missing says what to install
            sys.stderr.write(f"pizzagpt serve: {error}\n")
            return 1
        upstream = client.base_url if fake is None else "the built-in fake (--offline)"
        app = create_app(
            client,
            max_requests=args.max_requests,
            upstream_concurrency=args.concurrency or 1,
            on_shutdown=client.aclose,
        )
        config = uvicorn.Config(
            app,
            log_level="debug" if args.debug else "info",
            timeout_graceful_shutdown=max(0, math.ceil(args.shutdown_timeout)),
            server_header=False,
            access_log=not args.no_access_log,
        )
        # uvicorn shuts down gracefully, then raises the signal again under the handler it
        # found: ours raise, so that run() ends here and this block still cleans up (under
        # Python's own SIGINT handler, asyncio would turn it into a second cancellation).
        for signum in (signal.SIGINT, signal.SIGTERM):
            stack.callback(signal.signal, signum, signal.signal(signum, _stop))
        host, port = listener.getsockname()[:2]
        where = f"[{host}]" if ":" in host else host
        try:
            sys.stderr.write(
                f"pizzagpt serve: OpenAI API on http://{where}:{port}/v1 in front of {upstream}\n"
            )
            sys.stderr.flush()
            uvicorn.Server(config).run(sockets=[listener])
        except _Stopped as stopped:
            return _INTERRUPTED if stopped.signum == signal.SIGINT else 0
        except KeyboardInterrupt:  # pragma: no cover - a second Ctrl-C, during the clean-up
            return _INTERRUPTED
    return 0


class _Stopped(Exception):
    """uvicorn has shut down on this signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, frame: FrameType | None) -> None:
    raise _Stopped(signum)


def _listen(host: str, port: int) -> socket.socket:
    """Bind and listen now, so that the port (0: a free one) is known before uvicorn starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(2048)
    except OSError:
        listener.close()
        raise
    listener.set_inheritable(True)
    return listener


def _configure_logging(*, debug: bool) -> None:
    """Our warnings in uvicorn's format, on stderr. Access lines hold no prompt and no answer:
    uvicorn logs the request line and the status, never a body."""
    logger = logging.getLogger("pizzagpt_sdk.serve")
    logger.setLevel(logging.DEBUG if debug else logging.INFO)
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s:     %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
