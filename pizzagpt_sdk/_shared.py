"""What `Client` and `AsyncClient` hold alike: a `Config`, an engine, and the few lines that
hand the core a clock. It decides nothing: `_config.py` does."""

from __future__ import annotations

import random
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any, Literal

from ._batch import Batch, BatchProgress, RateLimiter
from ._call import Call, redact_url
from ._config import CallOptions, Config
from ._exceptions import ClientClosedError
from ._history import History
from ._prompt import Message, Messages
from .engines import open_engine

__all__ = ["ClientState", "ConversationState", "closed_during_call"]

_CONFIG_ARGUMENTS = (
    "base_url",
    "secret",
    "timeout",
    "deadline",
    "max_retries",
    "retry_policy",
    "proxy",
    "headers",
    "user_agent",
    "max_response_bytes",
    "verify",
    "max_connections",
)


class ClientState:
    """The configuration and the engine of a client."""

    _config: Config
    _engine: Any

    def _setup(self, world: Literal["blocking", "async"], arguments: dict[str, Any]) -> None:
        self._config = Config.from_arguments(
            **{name: arguments[name] for name in _CONFIG_ARGUMENTS}
        )
        self._engine = open_engine(
            world,
            arguments["engine"],
            self._config,
            http_client=arguments["http_client"],
            transport=arguments["transport"],
        )

    def __del__(self) -> None:
        # As an unclosed socket does: warn, and leave the cleaning up to the garbage collector
        # (closing an async pool here would need an event loop).
        engine = getattr(self, "_engine", None)
        if engine is not None and engine.owns_pool and not engine.is_closed:
            warnings.warn(
                f"unclosed {self!r}: call close()/aclose() or use it in a with block",
                ResourceWarning,
                source=self,
                stacklevel=1,
            )

    @property
    def base_url(self) -> str:
        """The service's base URL."""
        return self._config.settings.base_url

    @property
    def engine(self) -> str:
        """The engine's name: `"httpx"`, `"httpx2"`, `"aiohttp"` or `"curl_cffi"`."""
        return str(self._engine.name)

    @property
    def is_closed(self) -> bool:
        """Whether the client has been closed."""
        return bool(self._engine.is_closed)

    def __repr__(self) -> str:
        base_url, _ = redact_url(self.base_url)  # never the password a URL may carry
        return f"{type(self).__name__}(base_url={base_url!r}, engine={self.engine!r})"

    def _start(self, messages: Messages, options: CallOptions) -> Call:
        """Check everything and prepare the call, before anything is sent."""
        if self._engine.is_closed:
            raise ClientClosedError("this client is closed: create a new one")
        return self._config.new_call(
            messages, options, clock=time.monotonic, now=time.time, random=random.random
        )

    def _batch(
        self,
        prompts: Iterable[Messages],
        concurrency: int,
        rate_limit: float | RateLimiter | None,
        return_exceptions: bool,
        on_progress: Callable[[BatchProgress], None] | None,
        options: CallOptions,
    ) -> Batch:
        """Check a whole batch, before anything is sent."""
        self._config.check_options(options)
        if self._engine.is_closed:
            raise ClientClosedError("this client is closed: create a new one")
        if rate_limit is not None and not isinstance(rate_limit, RateLimiter):
            rate_limit = RateLimiter(rate_limit)
        return Batch(
            prompts,
            concurrency=concurrency,
            rate_limiter=rate_limit,
            return_exceptions=return_exceptions,
            on_progress=on_progress,
            include_system=options.get("include_system", True),
            assistant_suffix=options.get("assistant_suffix", True),
        )


def closed_during_call() -> ClientClosedError:
    """The error of a call in flight when its client is closed."""
    return ClientClosedError("the client was closed during this call: create a new one")


class ConversationState:
    """What `Conversation` and `AsyncConversation` share: a `History`, kept private."""

    def __init__(
        self, client: Any, *, system: str | None = None, messages: Iterable[Message] = ()
    ) -> None:
        self._history = History(system=system, messages=messages)
        self._client = client

    @property
    def system(self) -> str | None:
        """The system message the conversation started with, kept by `reset()`."""
        return self._history.system

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The history, oldest first: a plain list of message dicts, yours to read and edit."""
        return self._history.messages

    def reset(self) -> None:
        """Forget every turn; keep only the system message, if there is one."""
        self._history.reset()

    def to_messages(self) -> list[dict[str, Any]]:
        """A copy of the history as a list of message dicts."""
        return self._history.to_messages()
