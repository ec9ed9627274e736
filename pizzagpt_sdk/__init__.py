"""pizzagpt-sdk: a small, fast, typed Python SDK for PizzaGPT (www.pizzagpt.it).

```python
from pizzagpt_sdk import Client

with Client() as client:
    print(client.ask("Why is the sky blue?"))
```

The sans-I/O core that `Client` and `AsyncClient` drive is `pizzagpt_sdk.core`; the HTTP
libraries they can drive it with are in `pizzagpt_sdk.engines`.
"""

from __future__ import annotations

import typing as _typing

from ._batch import BatchProgress, RateLimiter
from ._config import DEFAULT_DEADLINE, DEFAULT_MAX_CONNECTIONS, DEFAULT_TIMEOUT, CallOptions
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ClientClosedError,
    InternalServerError,
    InvalidResponseError,
    InvalidTypeError,
    InvalidValueError,
    MisuseDetectedError,
    PizzaGPTError,
    RateLimitError,
    SecretRejectedError,
    UsageError,
)
from ._models import Answer, FinishReason, Timeout
from ._retry import RetryPolicy
from ._version import __version__

if _typing.TYPE_CHECKING:
    from ._async_client import AsyncClient, AsyncConversation, AsyncStream
    from ._client import Client, Conversation, Stream
    from ._progress import ProgressBar

# The clients load httpx and anyio: imported on first use, so that `import pizzagpt_sdk.core`
# (and the error classes and values above) loads no HTTP or async library.
_LAZY = {
    "AsyncClient": "._async_client",
    "AsyncConversation": "._async_client",
    "AsyncStream": "._async_client",
    "Client": "._client",
    "Conversation": "._client",
    "Stream": "._client",
    "ProgressBar": "._progress",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "Answer",
    "AsyncClient",
    "AsyncConversation",
    "AsyncStream",
    "BatchProgress",
    "CallOptions",
    "Client",
    "ClientClosedError",
    "Conversation",
    "DEFAULT_DEADLINE",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_TIMEOUT",
    "FinishReason",
    "InternalServerError",
    "InvalidResponseError",
    "InvalidTypeError",
    "InvalidValueError",
    "MisuseDetectedError",
    "PizzaGPTError",
    "ProgressBar",
    "RateLimitError",
    "RateLimiter",
    "RetryPolicy",
    "SecretRejectedError",
    "Stream",
    "Timeout",
    "UsageError",
    "__version__",
]
