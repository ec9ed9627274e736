"""The sans-I/O core: everything the SDK decides, with no I/O, for any HTTP library to drive.

`Client` and `AsyncClient` are thin drivers of this module over an engine (httpx by default).
To speak PizzaGPT with another HTTP library, build a request, wrap it in a `Call`, and follow its
actions:

```python
import http.client, random, time
from urllib.parse import urlsplit
from pizzagpt_sdk import core

settings = core.Settings()
request = settings.build_request(core.flatten_messages("Hi"))
call = core.Call(request, clock=time.monotonic, now=time.time, random=random.random)
events = []
while not isinstance(action := call.next_action(), core.Done):
    if isinstance(action, core.Sleep):
        time.sleep(action.seconds)
    elif isinstance(action, core.Send):
        url = urlsplit(action.request.url)
        conn = http.client.HTTPSConnection(url.netloc, timeout=action.timeout or 120)
        conn.request("POST", url.path, action.request.body, dict(action.request.headers))
        response = conn.getresponse()
        call.response_received(response.status, response.getheaders())
    else:  # core.Receive
        chunk = response.read1(65536)
        events += call.data_received(chunk) if chunk else call.body_ended()
answer = core.collect(events)
```

(A real driver also reports transport errors with `call.transport_failed()` and closes the
response when the action is not `Receive`; `tests/test_core_http_client.py` is a complete one.)
"""

from __future__ import annotations

from ._batch import Batch, BatchProgress, RateLimiter
from ._call import Action, Call, Done, Receive, Send, Sleep, Transcript, collect
from ._config import DEFAULT_TIMEOUT, CallOptions, Config
from ._history import History
from ._models import Timeout
from ._prompt import Message, Messages, flatten_messages
from ._protocol import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_SECRET,
    DEFAULT_USER_AGENT,
    ENDPOINT_PATH,
    Event,
    Request,
    ResponseReader,
    Settings,
    parse_retry_after,
)
from ._retry import DEFAULT_MAX_RETRIES, RETRY_STATUSES, RetryPolicy, is_retryable

__all__ = [
    "Action",
    "Batch",
    "BatchProgress",
    "Call",
    "CallOptions",
    "Config",
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_SECRET",
    "DEFAULT_TIMEOUT",
    "DEFAULT_USER_AGENT",
    "Done",
    "ENDPOINT_PATH",
    "Event",
    "History",
    "Message",
    "Messages",
    "RETRY_STATUSES",
    "RateLimiter",
    "Receive",
    "Request",
    "ResponseReader",
    "RetryPolicy",
    "Send",
    "Settings",
    "Sleep",
    "Timeout",
    "Transcript",
    "collect",
    "flatten_messages",
    "is_retryable",
    "parse_retry_after",
]
