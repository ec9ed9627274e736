"""A fake PizzaGPT service for tests, in-process or over real sockets on 127.0.0.1.

```python
from pizzagpt_sdk.testing import FakePizzaGPT, Reply

fake = FakePizzaGPT()
fake.script(Reply.status(503).retry_after(0), Reply.answer("Ciao!"))
with fake.client() as client:
    assert client.ask("Hi").text == "Ciao!"  # after one retry
assert fake.calls == 2 and fake.requests[0].prompt == "Hi"

with fake.serve() as server, server.client() as client:  # the same script, over HTTP/1.1
    client.ask("Hi")
```

The fake follows protocol.md: it checks each request as the real service would and answers in
either of its response shapes. `Reply` builds every outcome the service is known to produce,
and its modifiers add faults (`delay`, `trickle`, `close_mid_body`, `retry_after`).

For pytest, the `pizzagpt` plugin (`pizzagpt_sdk.testing._plugin`) gives the fixtures
`pizzagpt_fake`, `pizzagpt_client` and `pizzagpt_async_client`. Importing `pizzagpt_sdk` does not
import this module, and this module does not import pytest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._fake import ENDPOINT_PATH, FakePizzaGPT, RecordedRequest
from ._reply import CITATIONS, MISUSE_CONTENT, Reply, Shape
from ._transport import FakeTransport

if TYPE_CHECKING:
    from ._server import FakeServer

__all__ = [
    "CITATIONS",
    "ENDPOINT_PATH",
    "MISUSE_CONTENT",
    "FakePizzaGPT",
    "FakeServer",
    "FakeTransport",
    "RecordedRequest",
    "Reply",
    "Shape",
]


def __getattr__(name: str) -> object:
    # The server (http.server, sockets, threads) is imported when first asked for: the
    # in-process fake, `pizzagpt --offline` among its users, does not need it.
    if name == "FakeServer":
        from ._server import FakeServer

        return FakeServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
