"""The `pizzagpt` pytest plugin: a fake PizzaGPT and SDK clients wired to it, as fixtures.

```python
from pizzagpt_sdk.testing import Reply

def test_greets(pizzagpt_fake, pizzagpt_client):
    pizzagpt_fake.script(Reply.answer("Ciao!"))
    assert pizzagpt_client.ask("Hi").text == "Ciao!"
```

`pizzagpt_async_client` is for async tests run by anyio's pytest plugin
(`@pytest.mark.anyio`), on asyncio or trio.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from pizzagpt_sdk._async_client import AsyncClient
from pizzagpt_sdk._client import Client

from ._fake import FakePizzaGPT

__all__ = ["pizzagpt_async_client", "pizzagpt_client", "pizzagpt_fake"]


@pytest.fixture
def pizzagpt_fake() -> FakePizzaGPT:
    """A fresh `FakePizzaGPT`, to script and to inspect.

    Returns:
        The fake, with the default secret and the current answer shape.
    """
    return FakePizzaGPT()


@pytest.fixture
def pizzagpt_client(pizzagpt_fake: FakePizzaGPT) -> Iterator[Client]:
    """A `pizzagpt_sdk.Client` wired in-process to `pizzagpt_fake`, closed after the test.

    Yields:
        The client.
    """
    with pizzagpt_fake.client() as client:
        yield client


@pytest.fixture
async def pizzagpt_async_client(pizzagpt_fake: FakePizzaGPT) -> AsyncIterator[AsyncClient]:
    """A `pizzagpt_sdk.AsyncClient` wired in-process to `pizzagpt_fake`, closed after the test.

    For tests marked `@pytest.mark.anyio` (asyncio or trio).

    Yields:
        The client.
    """
    async with pizzagpt_fake.async_client() as client:
        yield client
