"""`pizzagpt serve`: an OpenAI-compatible HTTP server in front of PizzaGPT (the `serve` extra).

```sh
pip install "pizzagpt-sdk[serve]"
pizzagpt serve --offline          # http://127.0.0.1:8000/v1, answered by the built-in fake
```

Any OpenAI client then talks to PizzaGPT: `OpenAI(base_url="http://127.0.0.1:8000/v1",
api_key="unused")`. The application itself is `create_app()`, for any ASGI server:
`uvicorn --factory pizzagpt_sdk.serve:create_app`.

Importing this package loads neither starlette nor uvicorn: `create_app` is imported when it
is first used, so that `pizzagpt` can say which extra is missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import ChatClient, ChatStream, create_app

__all__ = ["ChatClient", "ChatStream", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import _app

        return getattr(_app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
