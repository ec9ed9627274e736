"""The public surface: what is exported, and that the two clients are true twins."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import pizzagpt_sdk
from pizzagpt_sdk import (
    Answer,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncClient,
    AsyncConversation,
    AsyncStream,
    Client,
    ClientClosedError,
    Conversation,
    FinishReason,
    InternalServerError,
    InvalidResponseError,
    InvalidTypeError,
    InvalidValueError,
    MisuseDetectedError,
    PizzaGPTError,
    RateLimiter,
    RateLimitError,
    SecretRejectedError,
    Stream,
    UsageError,
    core,
    engines,
)

EXPORTED = {
    "DEFAULT_DEADLINE",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_TIMEOUT",
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
}


@pytest.mark.parametrize("module", [pizzagpt_sdk, core, engines])
def test_all_is_sorted_and_importable(module: object) -> None:
    names = list(module.__all__)  # type: ignore[attr-defined]
    assert names == sorted(names)
    for name in names:
        try:
            found = hasattr(module, name)
        except UsageError as error:  # an engine whose library is not installed says so
            found = "pip install" in str(error) or "Python 3.11" in str(error)
        assert found, name


def test_the_exported_names() -> None:
    assert set(pizzagpt_sdk.__all__) == EXPORTED
    # Submodules are attributes once imported; pytest's assertion rewriting (the package is a
    # pytest plugin) adds names that start with "@".
    public = {
        name
        for name, value in vars(pizzagpt_sdk).items()
        if name[0] not in "_@" and not inspect.ismodule(value)
    }
    assert public - EXPORTED == {"annotations"}, "a public name is not in __all__"
    assert set(dir(pizzagpt_sdk)) >= EXPORTED  # the clients too, though loaded on first use


@pytest.mark.parametrize(
    ("module", "unwanted"),
    [
        # The core: no HTTP library, no async library, nothing of the drivers or engines.
        (
            "pizzagpt_sdk.core",
            "httpx httpx2 httpcore aiohttp curl_cffi anyio asyncio trio sniffio "
            "pizzagpt_sdk._client pizzagpt_sdk._async_client pizzagpt_sdk.engines",
        ),
        # The package: httpx and anyio when a client is used, but no optional engine.
        ("pizzagpt_sdk", "httpx2 aiohttp curl_cffi trio pizzagpt_sdk.engines._httpx_pool"),
        ("pizzagpt_sdk.engines", "httpx2 aiohttp curl_cffi"),
    ],
)
def test_importing_loads_no_library_it_does_not_need(module: str, unwanted: str) -> None:
    code = f"import sys, {module}\nprint(sorted(sys.modules))"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(ast.literal_eval(result.stdout))
    assert sorted(loaded & set(unwanted.split())) == []


def test_public_values_come_from_the_package_not_private_modules() -> None:
    for name in pizzagpt_sdk.__all__:
        value = getattr(pizzagpt_sdk, name)
        if inspect.isclass(value):
            assert value.__module__.startswith("pizzagpt_sdk"), name


# Async twins: the I/O verbs take an `a` prefix, the dunders their async forms.
TWINS = {
    "close": "aclose",
    "__enter__": "__aenter__",
    "__exit__": "__aexit__",
    "__iter__": "__aiter__",
    "__next__": "__anext__",
}


def _surface(cls: type) -> dict[str, inspect.Signature | None]:
    """Public methods' signatures, and public properties (as None)."""
    names = {
        name
        for name, _ in inspect.getmembers(cls)
        if not name.startswith("_") or name in TWINS or name in TWINS.values()
    }
    names.add("__init__")
    return {
        name: inspect.signature(member) if callable(member := getattr(cls, name)) else None
        for name in names
    }


def _strip(signature: inspect.Signature | None) -> str:
    # The twins differ only in the names of their twin types: AsyncStream for Stream, …
    return re.sub(r"\bAsync(?=[A-Z])", "", str(signature))


@pytest.mark.parametrize(
    ("sync", "async_"),
    [(Client, AsyncClient), (Stream, AsyncStream), (Conversation, AsyncConversation)],
)
def test_both_clients_expose_the_same_methods_with_the_same_signatures(
    sync: type, async_: type
) -> None:
    sync_surface, async_surface = _surface(sync), _surface(async_)
    renamed = {TWINS.get(name, name): sig for name, sig in sync_surface.items()}
    assert set(renamed) == set(async_surface)
    for name, signature in renamed.items():
        assert _strip(signature) == _strip(async_surface[name]), name
    for name in async_surface:
        method = getattr(async_, name)
        io = name in ("ask", "map", "aclose", "__aenter__", "__aexit__", "__anext__")
        assert inspect.iscoroutinefunction(method) is io, name


def test_the_exception_tree() -> None:
    assert issubclass(UsageError, PizzaGPTError)
    assert issubclass(InvalidValueError, UsageError)
    assert issubclass(InvalidValueError, ValueError)
    assert issubclass(InvalidTypeError, UsageError)
    assert issubclass(InvalidTypeError, TypeError)
    assert issubclass(ClientClosedError, UsageError)
    assert issubclass(ClientClosedError, RuntimeError)
    assert issubclass(APITimeoutError, APIConnectionError)
    assert issubclass(RateLimitError, APIStatusError)
    assert issubclass(InternalServerError, APIStatusError)
    assert issubclass(MisuseDetectedError, ValueError)
    for error in (APIConnectionError, APIStatusError, InvalidResponseError, SecretRejectedError):
        assert issubclass(error, PizzaGPTError)
        assert not issubclass(error, UsageError)


def test_finish_reason_is_a_plain_value() -> None:
    assert FinishReason("stop").reason == "stop"
    assert FinishReason("stop") == FinishReason("stop")
    assert FinishReason("stop") != FinishReason("refusal")
    assert hash(FinishReason("stop")) == hash(FinishReason("stop"))
    with pytest.raises(AttributeError):
        FinishReason("stop").reason = "x"  # type: ignore[misc]


def test_the_package_is_typed() -> None:
    assert (Path(pizzagpt_sdk.__file__).parent / "py.typed").is_file()
    assert pizzagpt_sdk.__version__.count(".") == 2


def test_importing_loads_nothing_a_call_does_not_need() -> None:
    code = (
        "import sys, pizzagpt_sdk\n"
        "heavy = ('pizzagpt_sdk.testing', 'pizzagpt_sdk._cli', 'argparse', 'pytest', 'aiohttp',"
        " 'pydantic', 'trio')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in {'pydantic', 'aiohttp',"
        " 'pytest', 'trio', 'argparse'} or m in heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_an_answer_renders_as_markdown_in_a_notebook() -> None:
    plain = Answer(text="**Hi**", finish_reason=FinishReason("stop"))
    assert plain._repr_markdown_() == "**Hi**"
    cited = Answer(
        text="Yes.", finish_reason=FinishReason("stop", citations=("https://a.example/1",))
    )
    assert cited._repr_markdown_() == "Yes.\n\n**Sources**\n\n1. <https://a.example/1>"
    refused = Answer(text="", finish_reason=FinishReason("refusal", refusal="No."))
    assert refused._repr_markdown_() == "> **Refused:** No."


def test_public_values_take_only_their_one_required_field_by_position() -> None:
    assert FinishReason("stop", citations=("https://a.example/1",)).citations
    with pytest.raises(TypeError):
        FinishReason("stop", ("https://a.example/1",))  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Answer("Hi", FinishReason("stop"))  # type: ignore[call-arg]


def test_a_rate_limiter_needs_no_clock() -> None:
    limiter = RateLimiter(60)
    assert [limiter.reserve(now=100.0), limiter.reserve(now=100.0)] == [0.0, 1.0]
    with pytest.raises(InvalidValueError, match="give reserve\\(\\) the time"):
        limiter.reserve()


def test_a_conversation_keeps_its_history_private() -> None:
    for cls in (Conversation, AsyncConversation):
        public = {name for name in dir(cls) if not name.startswith("_")}
        assert public == {"ask", "messages", "reset", "stream", "system", "to_messages"}, cls
