"""`ChatPizzaGPT`: PizzaGPT as a LangChain chat model (`pip install "pizzagpt-sdk[langchain]"`).

```python
from pizzagpt_sdk.langchain import ChatPizzaGPT

model = ChatPizzaGPT(timeout=60, max_retries=3)
print(model.invoke("Why is the sky blue?").content)
```

A thin bridge over the SDK's public clients: LangChain's messages become OpenAI-style messages
(`convert_to_openai_messages`), which the SDK flattens into PizzaGPT's one prompt; the answer's
finish reason and citations come back in `response_metadata`. Stop sequences are applied here,
since the service has none. Tool calling, structured output and images are not offered by the
service, and the model does not pretend to.

Each model keeps one `Client` for `invoke`, `stream` and `batch` (shared by `batch`'s
threads), and one `AsyncClient` per running event loop for `ainvoke`, `astream` and `abatch`:
an async connection pool belongs to the loop that opened it, and LangChain is often called from
one `asyncio.run()` after another. Each is made on first use; an async one is closed when its
loop ends, the blocking one when the model is garbage collected or the program exits.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    convert_to_openai_messages,
)
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.utils import from_env, secret_from_env
from pydantic import Field, PrivateAttr, SecretStr

from pizzagpt_sdk import DEFAULT_DEADLINE, FinishReason

from ._shared_clients import SharedClients, call_kwargs

__all__ = ["ChatPizzaGPT"]

#: The model the service has offered since 2024-08 (protocol.md).
SERVICE_MODEL = "gpt-4o-mini"
# The per-call options invoke(), stream() and their twins take as keyword arguments.
_CALL_OPTIONS = frozenset(
    {"model", "search", "timeout", "deadline", "max_retries", "include_system", "assistant_suffix"}
)
_HOLDER_LOCK = threading.Lock()


class ChatPizzaGPT(BaseChatModel):
    """PizzaGPT (gpt-4o-mini) as a LangChain chat model.

    The fields are the SDK's client arguments and per-call options; each left unset takes the
    SDK's default. Per call, `invoke(..., search=True)` and the like override the per-call ones
    (`model`, `search`, `timeout`, `deadline`, `max_retries`, `include_system`,
    `assistant_suffix`); any other keyword is a `TypeError`. Arguments other chat models take
    and PizzaGPT has no use for (`temperature`, `max_tokens`, `api_key`) are ignored, as
    LangChain's base class does with unknown fields.

    `response_metadata` holds `finish_reason` (`"stop"` or `"refusal"`), `citations` (with web
    search), `model_name`, and `stop_sequence` when one cut the answer. A refusal is an answer
    with empty content and the refusal in `additional_kwargs["refusal"]`. Errors are the SDK's
    (`pizzagpt_sdk.PizzaGPTError` and its subclasses).

    Examples:
        ```python
        model = ChatPizzaGPT(search=True)
        message = model.invoke([("system", "Be brief."), ("human", "Pizza news?")])
        print(message.content, message.response_metadata["citations"])
        ```
    """

    base_url: str | None = Field(default_factory=from_env("PIZZAGPT_BASE_URL", default=None))
    """The service's URL. Default: `PIZZAGPT_BASE_URL`, else `https://www.pizzagpt.it`."""
    secret: SecretStr | None = Field(
        default_factory=secret_from_env("PIZZAGPT_SECRET", default=None)
    )
    """The `x-secret` header. Default: `PIZZAGPT_SECRET`, else the SDK's."""
    timeout: float | None = Field(default=None, gt=0)
    """The most any single wait may take, in seconds. Default: the SDK's (120 s, 10 to connect)."""
    deadline: float | None = Field(default=DEFAULT_DEADLINE, gt=0)
    """The most one call may take, retries and sleeps included, in seconds; `None` for none."""
    max_retries: int | None = Field(default=None, ge=0)
    """Retries after the first attempt. Default: the SDK's (2)."""
    proxy: str | None = None
    """A proxy URL for the model's connection pools."""
    headers: dict[str, str] | None = None
    """Extra request headers."""
    user_agent: str | None = None
    """The `user-agent` header. Default: the SDK's (a desktop Chrome)."""
    max_response_bytes: int | None = Field(default=None, gt=0)
    """The largest response body accepted. Default: the SDK's (4 MiB)."""
    model: str | None = None
    """Sent as the body's `model` field when set (PizzaGPT only serves `gpt-4o-mini`)."""
    search: bool | None = None
    """Web search: the answer cites its sources (`response_metadata["citations"]`)."""
    include_system: bool = True
    """Keep system messages in the prompt."""
    assistant_suffix: bool = True
    """End a multi-message prompt with `\\nAssistant:`."""
    stop: list[str] | None = None
    """Stop sequences: the answer is cut before the first one it contains."""

    _holder: SharedClients | None = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "pizzagpt-chat"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model_name": self.model or SERVICE_MODEL,
            "base_url": self.base_url,
            "search": self.search,
        }

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = LangSmithParams(
            ls_provider="pizzagpt",
            ls_model_name=kwargs.get("model") or self.model or SERVICE_MODEL,
            ls_model_type="chat",
        )
        if stop or self.stop:
            params["ls_stop"] = stop or self.stop
        return params

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reader = _Reader(stop or self.stop or ())
        with self._clients().client().stream(_messages(messages), **self._options(kwargs)) as s:
            text = "".join(reader.read(event) for event in s)
        return reader.result(text)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        reader = _Reader(stop or self.stop or ())
        client = self._clients().async_client()
        async with client.stream(_messages(messages), **self._options(kwargs)) as s:
            text = "".join([reader.read(event) async for event in s])
        return reader.result(text)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        reader = _Reader(stop or self.stop or ())
        with self._clients().client().stream(_messages(messages), **self._options(kwargs)) as s:
            for event in s:
                text = reader.read(event)
                if text:
                    chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                    if run_manager is not None:
                        run_manager.on_llm_new_token(text, chunk=chunk)
                    yield chunk
        yield reader.last_chunk()

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        reader = _Reader(stop or self.stop or ())
        client = self._clients().async_client()
        async with client.stream(_messages(messages), **self._options(kwargs)) as s:
            async for event in s:
                text = reader.read(event)
                if text:
                    chunk = ChatGenerationChunk(message=AIMessageChunk(content=text))
                    if run_manager is not None:
                        await run_manager.on_llm_new_token(text, chunk=chunk)
                    yield chunk
        yield reader.last_chunk()

    def _options(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The SDK's per-call options: the fields, overridden by the call's keywords."""
        unknown = sorted(set(kwargs) - _CALL_OPTIONS)
        if unknown:
            raise TypeError(
                f"ChatPizzaGPT does not take {', '.join(map(repr, unknown))}; "
                f"per-call options are {', '.join(sorted(_CALL_OPTIONS))}"
            )
        options: dict[str, Any] = call_kwargs(
            model=self.model,
            search=self.search,
            timeout=self.timeout,
            max_retries=self.max_retries,
        )
        options["deadline"] = self.deadline
        options["include_system"] = self.include_system
        options["assistant_suffix"] = self.assistant_suffix
        options.update(kwargs)
        return options

    def _clients(self) -> SharedClients:
        """The model's clients, made again if a field they are built from has changed."""
        secret = self.secret.get_secret_value() if self.secret is not None else None
        kwargs = call_kwargs(
            base_url=self.base_url,
            secret=secret,
            proxy=self.proxy,
            headers=self.headers,
            user_agent=self.user_agent,
            max_response_bytes=self.max_response_bytes,
        )
        with _HOLDER_LOCK:
            if self._holder is None or self._holder.kwargs != kwargs:
                self._holder = SharedClients(kwargs)
            return self._holder


def _messages(messages: list[BaseMessage]) -> list[dict[str, Any]]:
    """LangChain's messages as OpenAI-style ones, which the SDK flattens (text parts only)."""
    converted: list[dict[str, Any]] = convert_to_openai_messages(messages)
    return converted


class _Reader:
    """Reads the SDK's events into text and metadata, and cuts the text at a stop sequence.

    The cut holds back the last `len(longest stop) - 1` characters of what arrived, so that a
    stop sequence split across chunks is still found.
    """

    def __init__(self, stop: Sequence[str]) -> None:
        self._stops = [sequence for sequence in stop if sequence]
        self._hold = max(map(len, self._stops), default=1) - 1
        self._pending = ""
        self._stopped_by: str | None = None
        self._finish: FinishReason | None = None

    def read(self, event: str | FinishReason) -> str:
        """The text to pass on now, from one event of the SDK's stream."""
        if isinstance(event, FinishReason):
            self._finish = event
            text, self._pending = self._pending, ""
            return text
        if self._stopped_by is not None:
            return ""  # Cut: the rest of the answer is read (for its citations), not shown.
        self._pending += event
        found = [(self._pending.find(s), s) for s in self._stops if s in self._pending]
        if found:
            index, self._stopped_by = min(found)
            text, self._pending = self._pending[:index], ""
            return text
        split = len(self._pending) - self._hold
        text, self._pending = self._pending[:split], self._pending[split:]
        return text

    def metadata(self) -> dict[str, Any]:
        # The SDK's stream always ends with a FinishReason when it did not raise.
        assert self._finish is not None
        metadata: dict[str, Any] = {
            "finish_reason": self._finish.reason,
            "citations": list(self._finish.citations),
            "model_name": SERVICE_MODEL,
        }
        if self._stopped_by is not None:
            metadata["stop_sequence"] = self._stopped_by
        return metadata

    def _extra(self) -> dict[str, Any]:
        assert self._finish is not None
        return {"refusal": self._finish.refusal} if self._finish.refusal else {}

    def result(self, text: str) -> ChatResult:
        message = AIMessage(
            content=text, response_metadata=self.metadata(), additional_kwargs=self._extra()
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def last_chunk(self) -> ChatGenerationChunk:
        message = AIMessageChunk(
            content="",
            response_metadata=self.metadata(),
            additional_kwargs=self._extra(),
            chunk_position="last",
        )
        return ChatGenerationChunk(message=message)
