"""gpt4free's `Pizzagpt` provider, back, on the SDK's `AsyncClient` (the `g4f` extra).

gpt4free removed its own PizzaGPT provider in release 6.7.2. This one plugs in where it did:

```python
from g4f.client import Client

from pizzagpt_sdk.g4f import Pizzagpt

client = Client(provider=Pizzagpt)
response = client.chat.completions.create(model="gpt-4o-mini", messages=[...])
print(response.choices[0].message.content)
```

`Pizzagpt.create_async_generator(model, messages, proxy=None, **kwargs)` yields the answer's
text, the citations as gpt4free's `Sources` (with web search), then gpt4free's
`FinishReason("stop")`. Under it, the SDK's `AsyncClient` retries, keeps to a deadline and
raises its typed errors (a `MisuseDetectedError` is a `ValueError`, as gpt4free raised).

Connections are reused across calls: the provider keeps one `AsyncClient` per event loop (per
trio run) and configuration, and closes it when that loop ends. gpt4free's sync `Client` runs
each call in an event loop of its own, so there each call has its own client, closed with it.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncGenerator, Callable, Hashable, Mapping
from typing import Any, ClassVar

import anyio

from . import DEFAULT_DEADLINE, AsyncClient, CallOptions, InvalidTypeError, InvalidValueError
from . import FinishReason as _SDKFinishReason

try:
    from g4f.providers.base_provider import AsyncGeneratorProvider, ProviderModelMixin
    from g4f.providers.response import FinishReason, ResponseType, Sources
except ImportError as exc:
    raise ImportError('pizzagpt_sdk.g4f needs gpt4free: pip install "pizzagpt-sdk[g4f]"') from exc

__all__ = ["Pizzagpt"]


class Pizzagpt(AsyncGeneratorProvider, ProviderModelMixin):  # type: ignore[misc]
    """PizzaGPT (gpt-4o-mini) as a gpt4free provider, over the SDK's `AsyncClient`.

    The class attributes from `url` to `supports_system_message` are those of gpt4free's own
    provider (release 6.7.1), for code that reads them. The others configure the SDK; change
    them on a subclass, or pass the same names as keyword arguments per call.

    Attributes:
        base_url: Where the service is. Default: `PIZZAGPT_BASE_URL`, else `url`.
        secret: The `x-secret` header. Default: `PIZZAGPT_SECRET`, else the SDK's.
        deadline: The most one call may take, retries included, in seconds; `None` for none.
        max_retries: Retries after the first attempt; `None` for the SDK's default (2).
    """

    url = "https://www.pizzagpt.it"
    api_endpoint = "/api/chatx-completion"
    working = True
    default_model = "gpt-4o-mini"
    models: ClassVar[list[str]] = [default_model]
    supports_stream = True
    # The SDK flattens the whole conversation, system messages included, into the prompt.
    supports_message_history = True
    supports_system_message = True

    base_url: ClassVar[str | None] = None
    secret: ClassVar[str | None] = None
    deadline: ClassVar[float | None] = DEFAULT_DEADLINE
    max_retries: ClassVar[int | None] = None

    @classmethod
    async def create_async_generator(
        cls,
        model: str,
        messages: Any,
        proxy: str | None = None,
        **kwargs: Any,
    ) -> AsyncGenerator[str | ResponseType, None]:
        """Ask PizzaGPT, and yield the answer as gpt4free's providers do.

        Args:
            model: The model; PizzaGPT only has `gpt-4o-mini`, and it is not sent, as
                gpt4free's provider did not send it.
            messages: OpenAI-style messages (or one string), flattened into one prompt as
                gpt4free's `format_prompt` does.
            proxy: A proxy URL for the connections.
            **kwargs: `timeout` (the whole call, in seconds: the SDK's `deadline`),
                `web_search` or `search` (PizzaGPT's own web search, with citations),
                `base_url`, `secret`, `client` (your own `pizzagpt_sdk.AsyncClient`, used as it
                is and never closed), and the SDK's `deadline`, `max_retries`,
                `include_system` and `assistant_suffix`. Others, such as gpt4free's
                `stream`, `temperature` or `api_key`, are ignored, as gpt4free's providers do.

        Yields:
            The answer's text; then gpt4free's `Sources` when the answer cites any; then
            gpt4free's `FinishReason("stop")`. A refusal is yielded as the text, and ends with
            `FinishReason("content_filter")`.

        Raises:
            UsageError: Bad messages or options (also `ValueError` or `TypeError`), before
                anything is sent.
            MisuseDetectedError: The service flagged the traffic as misuse (also a
                `ValueError`, as gpt4free raised).
            PizzaGPTError: Any other failure, after the retries: see `pizzagpt_sdk.AsyncStream`.
        """
        options = cls._call_options(kwargs)
        client = kwargs.get("client")
        if client is None:
            client = _client_for(cls._client_config(proxy, kwargs))
        elif not isinstance(client, AsyncClient):
            raise InvalidTypeError(
                f"client must be a pizzagpt_sdk.AsyncClient, not {type(client).__name__}"
            )
        elif proxy is not None or kwargs.get("base_url") or kwargs.get("secret"):
            raise InvalidValueError(
                "give proxy, base_url and secret to your own client, not with client="
            )
        async with client.stream(messages, **options) as stream:
            async for event in stream:
                if isinstance(event, _SDKFinishReason):
                    for item in _finish(event):
                        yield item
                else:
                    yield event

    @classmethod
    async def aclose(cls) -> None:
        """Close the connections the provider keeps for the running event loop (or trio run).

        They are closed anyway when the loop ends (`asyncio.run()` and gpt4free's sync `Client`
        end theirs that way); call this to close them earlier, in a loop that runs on. The next
        call opens new ones.
        """
        key, _ = _current_loop()
        with _lock:
            entry = _loops.pop(key, None)
        if entry is not None:
            entry.stop_keeper()
            with anyio.CancelScope(shield=True):
                await entry.aclose()

    @classmethod
    def _call_options(cls, kwargs: Mapping[str, Any]) -> CallOptions:
        """The SDK's per-call options from gpt4free's keyword arguments and the class's."""
        options = CallOptions(deadline=cls.deadline)
        if cls.max_retries is not None:
            options["max_retries"] = cls.max_retries
        if kwargs.get("timeout") is not None:
            # gpt4free's providers take `timeout` as the most the whole request may take.
            options["deadline"] = kwargs["timeout"]
        if kwargs.get("web_search") or kwargs.get("search"):
            options["search"] = True
        if "deadline" in kwargs:
            options["deadline"] = kwargs["deadline"]
        if "max_retries" in kwargs:
            options["max_retries"] = kwargs["max_retries"]
        if "include_system" in kwargs:
            options["include_system"] = kwargs["include_system"]
        if "assistant_suffix" in kwargs:
            options["assistant_suffix"] = kwargs["assistant_suffix"]
        return options

    @classmethod
    def _client_config(cls, proxy: str | None, kwargs: Mapping[str, Any]) -> _Config:
        """What tells two SDK clients apart, read as the SDK reads it (the environment too)."""
        base_url = (
            kwargs.get("base_url") or cls.base_url or os.environ.get("PIZZAGPT_BASE_URL") or cls.url
        )
        secret = kwargs.get("secret") or cls.secret or os.environ.get("PIZZAGPT_SECRET")
        return base_url, secret, proxy


def _finish(event: _SDKFinishReason) -> list[str | ResponseType]:
    """gpt4free's items for the SDK's terminal event."""
    items: list[str | ResponseType] = []
    if event.refusal:
        items.append(event.refusal)
    if event.citations:
        items.append(Sources([{"url": url} for url in event.citations]))
    # OpenAI's finish reasons, which gpt4free passes on, have no "refusal".
    items.append(FinishReason("content_filter" if event.reason == "refusal" else event.reason))
    return items


# The SDK clients, per event loop: an AsyncClient's connections belong to the loop that opened
# them, and gpt4free's sync Client runs every call in a new loop (asyncio.run, or a loop of its
# own), sometimes in another thread. A dict keyed by the loop, not a WeakKeyDictionary: a
# client's open connections refer to their loop, so a weak key would never die. Each loop's
# entry is removed, and its clients closed, by a task that waits for the loop's end: asyncio
# cancels every task when asyncio.run() ends (gpt4free's own loops too), trio cancels its system
# tasks. An asyncio loop closed without that (loop.close() by hand) is forgotten when the next
# loop's entry is made; the garbage collector then closes its sockets. The asyncio task uses no
# anyio: anyio's state for a task in a cancel scope would keep that task, and so its loop, alive.
_Config = tuple[str, str | None, str | None]  # base URL, secret, proxy
_lock = threading.Lock()
_loops: dict[Hashable, _LoopClients] = {}


class _LoopClients:
    """The SDK clients of one event loop, and how to stop the task that closes them."""

    def __init__(self) -> None:
        self.clients: dict[_Config, AsyncClient] = {}
        self.stop_keeper: Callable[[], object] = lambda: None

    async def aclose(self) -> None:
        clients = list(self.clients.values())
        self.clients.clear()
        for client in clients:
            await client.aclose()


def _client_for(config: _Config) -> AsyncClient:
    """The running loop's client for `config`; made, with the loop's entry, on first use."""
    key, start_keeper = _current_loop()
    with _lock:
        entry = _loops.get(key)
        if entry is None:
            _forget_closed_loops()
            entry = _loops[key] = _LoopClients()
            start_keeper(entry)
        client = entry.clients.get(config)
        if client is None:
            base_url, secret, proxy = config
            client = entry.clients[config] = AsyncClient(
                base_url=base_url, secret=secret, proxy=proxy
            )
    return client


def _current_loop() -> tuple[Hashable, Callable[[_LoopClients], None]]:
    """The running asyncio loop, or trio run, and how to start the task that closes its
    clients when it ends."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return _current_trio_run()

    def start_keeper(entry: _LoopClients) -> None:
        entry.stop_keeper = loop.create_task(_keep_asyncio(loop, entry)).cancel

    return loop, start_keeper


def _current_trio_run() -> tuple[Hashable, Callable[[_LoopClients], None]]:
    import trio  # the SDK's AsyncClient runs on asyncio and trio: this is trio

    token = trio.lowlevel.current_trio_token()

    def start_keeper(entry: _LoopClients) -> None:
        scope = trio.CancelScope()
        entry.stop_keeper = scope.cancel
        trio.lowlevel.spawn_system_task(_keep_trio, token, entry, scope)

    return token, start_keeper


async def _keep_asyncio(key: Hashable, entry: _LoopClients) -> None:
    """Wait for the loop's end (or `Pizzagpt.aclose()`), then close its clients."""
    try:
        await asyncio.get_running_loop().create_future()  # never done: only cancelled
    except asyncio.CancelledError:
        # Not on GeneratorExit: a task of a loop closed by hand is closed by the garbage
        # collector, when nothing can be awaited any more.
        await _forget(key, entry)
        raise


async def _keep_trio(key: Hashable, entry: _LoopClients, scope: Any) -> None:
    """`_keep_asyncio` for trio: system tasks are cancelled when the run's main task ends."""
    import trio

    with scope:
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await _forget(key, entry)


async def _forget(key: Hashable, entry: _LoopClients) -> None:
    with _lock:
        if _loops.get(key) is entry:
            del _loops[key]
    await entry.aclose()


def _forget_closed_loops() -> None:
    """Drop the entries of asyncio loops that were closed without ending their tasks."""
    for key in [key for key in _loops if isinstance(key, asyncio.AbstractEventLoop)]:
        if key.is_closed():
            del _loops[key]
