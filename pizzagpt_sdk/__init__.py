"""pizzagpt-sdk: a small, fast, typed Python SDK for PizzaGPT (www.pizzagpt.it).

```python
from pizzagpt_sdk import Client

with Client() as client:
    print(client.ask("Why is the sky blue?"))
```

The sans-I/O core that `Client` and `AsyncClient` drive is `pizzagpt_sdk.core`.
"""

from __future__ import annotations

from ._async_client import AsyncClient, AsyncConversation, AsyncStream
from ._base import DEFAULT_DEADLINE, DEFAULT_TIMEOUT, CallOptions
from ._batch import BatchProgress, RateLimiter
from ._client import Client, Conversation, Stream
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
from ._models import Answer, FinishReason
from ._progress import ProgressBar
from ._retry import RetryPolicy
from ._version import __version__

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
    "UsageError",
    "__version__",
]
