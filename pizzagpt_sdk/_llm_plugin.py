"""The `llm` plugin: PizzaGPT as the model `pizzagpt` of Simon Willison's `llm`.

Registered through this package's entry point in the group `llm`, so that with the `llm` extra
installed (`pip install "pizzagpt-sdk[llm]"`) `llm models` lists it and
`llm -m pizzagpt "question"` answers. It maps `llm`'s shapes onto the public clients and back:

- the prompt's whole history (`prompt.messages`: the system prompt, earlier turns of `llm -c`
  and `llm chat`, the new question) becomes OpenAI-style messages, which the SDK flattens;
- the options (`-o search 1`, `-o timeout 30`, ...) become per-call options;
- the answer streams as it arrives; its finish reason and citations are logged with the
  response (`llm logs --json`), and the citations are shown after the answer;
- every `PizzaGPTError` becomes an `llm.ModelError` with the SDK's message.

The base URL and the secret come from `PIZZAGPT_BASE_URL` and `PIZZAGPT_SECRET`, as for the
SDK's clients; PizzaGPT needs no key.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Iterator
from typing import Any, cast

import llm
from llm.parts import TextPart
from pydantic import Field

from pizzagpt_sdk import FinishReason, PizzaGPTError

from ._shared_clients import SharedClients, call_kwargs

__all__ = ["AsyncPizzaGPT", "PizzaGPT", "register_models"]

#: The model the service has offered since 2024-08 (protocol.md).
SERVICE_MODEL = "gpt-4o-mini"


@llm.hookimpl
def register_models(register: Any) -> None:
    """Register the sync and the async model as `pizzagpt` (aliases `pizza`, `pizzagpt-4o-mini`)."""
    register(PizzaGPT(), AsyncPizzaGPT(), aliases=("pizza", "pizzagpt-4o-mini"))


class PizzaGPTOptions(llm.Model.Options):
    """The options of `llm -m pizzagpt -o NAME VALUE`."""

    search: bool | None = Field(
        default=None,
        description="Web search: the answer cites its sources (sent as searchEnabled)",
    )
    citations: bool | None = Field(
        default=None, description="Show the sources an answer cites after its text (default on)"
    )
    timeout: float | None = Field(
        default=None, gt=0, description="The most any single wait may take, in seconds"
    )
    deadline: float | None = Field(
        default=None, gt=0, description="The most the whole call may take, retries included"
    )
    max_retries: int | None = Field(
        default=None, ge=0, description="Retries after the first attempt (default 2)"
    )


class PizzaGPT(llm.Model):
    """PizzaGPT for `llm`'s blocking calls: the CLI, `llm chat`, `model.prompt()`."""

    model_id = "pizzagpt"
    can_stream = True
    Options = PizzaGPTOptions

    def __init__(self) -> None:
        # PIZZAGPT_BASE_URL and PIZZAGPT_SECRET are read by the client, when first made.
        self.clients = SharedClients({})

    def __str__(self) -> str:
        return f"PizzaGPT: {self.model_id} ({SERVICE_MODEL})"

    def execute(
        self,
        prompt: llm.Prompt,
        stream: bool,
        response: llm.Response,
        conversation: llm.Conversation | None,
    ) -> Iterator[str]:
        """Ask PizzaGPT, yielding the answer's text as it arrives.

        Raises:
            llm.ModelError: The call failed; the message is the SDK's.
        """
        finish: FinishReason | None = None
        try:
            client = self.clients.client()
            with client.stream(_messages(prompt), **_options(prompt)) as events:
                for event in events:
                    if isinstance(event, FinishReason):
                        finish = event
                    else:
                        yield event
        except PizzaGPTError as error:
            raise llm.ModelError(str(error)) from error
        yield from _finish(prompt, response, finish)


class AsyncPizzaGPT(llm.AsyncModel):
    """PizzaGPT for `llm`'s async calls (`llm --async`, `llm.get_async_model()`)."""

    model_id = "pizzagpt"
    can_stream = True
    Options = PizzaGPTOptions

    def __init__(self) -> None:
        # A client per running event loop, made on first use in it (see _shared_clients.py).
        self.clients = SharedClients({})

    def __str__(self) -> str:
        return f"PizzaGPT: {self.model_id} ({SERVICE_MODEL})"

    async def execute(
        self,
        prompt: llm.Prompt,
        stream: bool,
        response: llm.AsyncResponse,
        conversation: llm.AsyncConversation | None,
    ) -> AsyncGenerator[str, None]:
        """Ask PizzaGPT, yielding the answer's text as it arrives.

        Raises:
            llm.ModelError: The call failed; the message is the SDK's.
        """
        finish: FinishReason | None = None
        try:
            client = self.clients.async_client()
            async with client.stream(_messages(prompt), **_options(prompt)) as events:
                async for event in events:
                    if isinstance(event, FinishReason):
                        finish = event
                    else:
                        yield event
        except PizzaGPTError as error:
            raise llm.ModelError(str(error)) from error
        for text in _finish(prompt, response, finish):
            yield text


def _messages(prompt: llm.Prompt) -> list[dict[str, Any]]:
    """The prompt's whole history as OpenAI-style messages: their text parts only (the model
    takes no attachments and no tools, and `llm` checks that before calling it)."""
    return [
        {
            "role": message.role,
            "content": [
                {"type": "text", "text": part.text}
                for part in message.parts
                if isinstance(part, TextPart)
            ],
        }
        for message in prompt.messages
    ]


def _options(prompt: llm.Prompt) -> dict[str, Any]:
    options = cast(PizzaGPTOptions, prompt.options)  # llm made it from our Options class
    return call_kwargs(
        search=options.search,
        timeout=options.timeout,
        deadline=options.deadline,
        max_retries=options.max_retries,
    )


def _finish(
    prompt: llm.Prompt, response: llm.Response | llm.AsyncResponse, finish: FinishReason | None
) -> Iterator[str]:
    """Log how the answer ended; yield a refusal's message and the citations to show."""
    # The SDK's stream always ends with a FinishReason when it did not raise.
    assert finish is not None
    response.set_resolved_model(SERVICE_MODEL)
    response.response_json = {
        "finish_reason": finish.reason,
        "citations": list(finish.citations),
        "refusal": finish.refusal,
    }
    if finish.refusal:
        yield finish.refusal
    options = cast(PizzaGPTOptions, prompt.options)
    if finish.citations and options.citations is not False:
        yield "\n\nSources:\n" + "\n".join(
            f"{number}. {url}" for number, url in enumerate(finish.citations, start=1)
        )
