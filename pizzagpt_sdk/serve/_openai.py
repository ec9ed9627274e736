"""OpenAI's chat completions API as values: the request read and checked, the replies built.

No I/O here: `_app.py` moves the bytes. Shapes follow OpenAI's API reference for
`POST /v1/chat/completions` (the request, `chat.completion`, `chat.completion.chunk`) and its
error object, `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from typing import Any

from pizzagpt_sdk import (
    Answer,
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    InvalidResponseError,
    MisuseDetectedError,
    PizzaGPTError,
    RateLimitError,
    SecretRejectedError,
    UsageError,
)
from pizzagpt_sdk.core import flatten_messages

__all__ = [
    "MODELS",
    "ChatRequest",
    "RequestError",
    "chunk",
    "completion",
    "error_body",
    "error_for",
    "model_object",
    "models_list",
    "new_id",
    "now",
    "parse_request",
    "usage",
]

#: The model PizzaGPT serves, then the aliases accepted for it (protocol.md: only gpt-4o-mini
#: since 2024-08). The response names the model as the request did.
MODELS = ("gpt-4o-mini", "gpt-4o-mini-2024-07-18", "pizzagpt")
_OWNER = "pizzagpt"
_CREATED = 1721172741  # 2024-07-16, when OpenAI released gpt-4o-mini
# PizzaGPT reports no token counts: usage is an estimate, at OpenAI's rule of thumb of about
# four characters a token for English text.
_CHARS_PER_TOKEN = 4
# Seconds an OpenAI client is asked to wait after a 429 that gave no Retry-After of its own.
_DEFAULT_RETRY_AFTER = 5


class RequestError(Exception):
    """A request the server refuses, with the OpenAI error it becomes.

    Attributes:
        status: The HTTP status.
        type: OpenAI's error `type`.
        code: OpenAI's error `code`, or `None`.
        param: The request parameter at fault, or `None`.
        headers: Extra response headers (`retry-after`, `x-should-retry`).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The error object, `{"error": {...}}`.

        Returns:
            The JSON document.
        """
        return error_body(str(self), type=self.type, code=self.code, param=self.param)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChatRequest:
    """A chat completion request, read and checked.

    Attributes:
        model: The model as the request named it (one of `MODELS`).
        prompt: The messages flattened into PizzaGPT's one prompt.
        stream: Whether to answer with server-sent events.
        include_usage: Whether a stream ends with a usage chunk (`stream_options`).
        search: Whether to turn on PizzaGPT's web search (`web_search_options` was given).
    """

    model: str
    prompt: str
    stream: bool
    include_usage: bool
    search: bool


def error_body(
    message: str, *, type: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """OpenAI's error object.

    Args:
        message: What went wrong, for a person.
        type: The error's type, like `"invalid_request_error"`.
        code: A code for programs, like `"model_not_found"`.
        param: The request parameter at fault.

    Returns:
        `{"error": {"message", "type", "param", "code"}}`.
    """
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def parse_request(body: bytes) -> ChatRequest:
    """Read a chat completion request: the fields the server uses, checked; unknown ones ignored.

    Args:
        body: The raw request body.

    Returns:
        The request.

    Raises:
        RequestError: The body is not a JSON object, a field is missing or wrong, the model is
            unknown (404, as OpenAI answers), or the request asks for what PizzaGPT cannot do
            (tools, several choices, log probabilities, JSON output, audio, images).
    """
    try:
        document = json.loads(body)
    except ValueError:
        raise RequestError(
            "the request body is not valid JSON: send a chat completion request"
        ) from None
    if not isinstance(document, dict):
        raise RequestError("the request body must be a JSON object")
    model = document.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("you must provide a model parameter", param="model")
    if model not in MODELS:
        raise RequestError(
            f"The model `{model}` does not exist here: this server offers {', '.join(MODELS)}",
            status=404,
            code="model_not_found",
            param="model",
        )
    unsupported = _unsupported(document)
    if unsupported:
        names = ", ".join(unsupported)
        raise RequestError(
            f"unsupported parameter(s): {names} (PizzaGPT answers one text message, no tools)",
            code="unsupported_parameter",
            param=unsupported[0].partition("=")[0],
        )
    messages = document.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError("messages must be a non-empty array of messages", param="messages")
    _check_parts(messages)
    try:
        prompt = flatten_messages(messages)
    except UsageError as error:
        raise RequestError(str(error), param="messages") from None
    stream = _flag(document, "stream")
    options = document.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise RequestError("stream_options must be an object", param="stream_options")
    return ChatRequest(
        model=model,
        prompt=prompt,
        stream=stream,
        include_usage=stream and bool(options and _flag(options, "include_usage")),
        search=isinstance(document.get("web_search_options"), dict),
    )


def _flag(document: dict[str, Any], name: str) -> bool:
    value = document.get(name)
    if value is not None and not isinstance(value, bool):
        raise RequestError(f"{name} must be true or false", param=name)
    return bool(value)


# Parameters that change what an answer is, which PizzaGPT cannot honour: refused, rather than
# answered as if they had been followed. Sampling knobs (temperature, max_tokens, ...) are
# ignored, as gpt4free's server ignores them.
_NO_TOOLS = (None, "none", "auto")


def _unsupported(document: dict[str, Any]) -> list[str]:
    found = [name for name in ("tools", "functions") if document.get(name)]
    found += [
        name for name in ("tool_choice", "function_call") if document.get(name) not in _NO_TOOLS
    ]
    n = document.get("n")
    if n is not None and n != 1:
        found.append(f"n={json.dumps(n)}")
    if document.get("logprobs"):
        found.append("logprobs")
    if document.get("top_logprobs") is not None:
        found.append("top_logprobs")
    response_format = document.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        found.append("response_format")
    if document.get("audio") is not None:
        found.append("audio")
    modalities = document.get("modalities")
    if modalities is not None and modalities != ["text"]:
        found.append("modalities")
    return found


def _check_parts(messages: list[Any]) -> None:
    """Refuse content parts other than text: an image left out would change the question."""
    for index, message in enumerate(messages):
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            continue  # flatten_messages() checks the rest
        for number, part in enumerate(content):
            kind = part.get("type", "text") if isinstance(part, dict) else "text"
            if kind != "text":
                raise RequestError(
                    f"content parts of type {kind!r} are not supported: PizzaGPT reads text only",
                    code="unsupported_content",
                    param=f"messages[{index}].content[{number}]",
                )


def _tokens(text: str) -> int:
    return math.ceil(len(text) / _CHARS_PER_TOKEN)


def usage(prompt: str, text: str) -> dict[str, int]:
    """Estimated token counts (PizzaGPT reports none): about four characters a token.

    Args:
        prompt: The prompt sent.
        text: The answer's text (or refusal).

    Returns:
        OpenAI's usage object.
    """
    prompt_tokens, completion_tokens = _tokens(prompt), _tokens(text)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def new_id() -> str:
    """A fresh completion id, `chatcmpl-` and 32 hex digits."""
    return f"chatcmpl-{uuid.uuid4().hex}"


def _annotations(answer: Answer) -> list[dict[str, Any]]:
    # OpenAI's url_citation annotations point into the text; PizzaGPT's citations point at the
    # whole answer.
    end = len(answer.text)
    return [
        {
            "type": "url_citation",
            "url_citation": {"url": url, "title": url, "start_index": 0, "end_index": end},
        }
        for url in answer.citations
    ]


def completion(request: ChatRequest, answer: Answer, *, id: str, created: int) -> dict[str, Any]:
    """The `chat.completion` object for an answer.

    Args:
        request: The request.
        answer: PizzaGPT's answer.
        id: The completion's id.
        created: Its Unix time.

    Returns:
        The JSON document.
    """
    message: dict[str, Any] = {
        "role": "assistant",
        "content": answer.text if answer.text or not answer.refusal else None,
        "refusal": answer.refusal,
        "annotations": _annotations(answer),
    }
    return {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": request.model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": "stop"}],
        "usage": usage(request.prompt, answer.text or answer.refusal or ""),
        "system_fingerprint": None,
    }


def chunk(
    request: ChatRequest,
    *,
    id: str,
    created: int,
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A `chat.completion.chunk`: a delta, the finish reason, or (with `usage`) no choice at all.

    Args:
        request: The request.
        id: The completion's id, the same in every chunk.
        created: Its Unix time, the same in every chunk.
        delta: The choice's delta.
        finish_reason: The choice's finish reason, in the last chunk with a choice.
        usage: The usage, for the usage chunk that `include_usage` asks for (it has no choices).

    Returns:
        The JSON document.
    """
    document: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": request.model,
        "system_fingerprint": None,
        "choices": []
        if usage is not None
        else [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}],
    }
    if request.include_usage:
        document["usage"] = usage  # null in every chunk but the last (OpenAI's API reference)
    return document


def models_list() -> dict[str, Any]:
    """`GET /v1/models`: OpenAI's list of model objects.

    Returns:
        The JSON document.
    """
    return {"object": "list", "data": [model_object(name) for name in MODELS]}


def model_object(name: str) -> dict[str, Any]:
    """One model object, as `GET /v1/models/{model}` returns it.

    Args:
        name: The model's name.

    Returns:
        The JSON document.
    """
    return {"id": name, "object": "model", "created": _CREATED, "owned_by": _OWNER}


def now() -> int:
    """The current Unix time, in whole seconds (a completion's `created`)."""
    return int(time.time())


# Clients must not retry these: retrying a misuse flag makes it worse (protocol.md), and a
# rejected secret stays rejected. openai-python and openai-node honour x-should-retry.
_NO_RETRY = {"x-should-retry": "false"}


def error_for(error: PizzaGPTError) -> RequestError:
    """The OpenAI error for a failed PizzaGPT call, with the status that lets a client react.

    | SDK error | status | code |
    |---|---|---|
    | `UsageError` | 400 | `invalid_request` |
    | `RateLimitError` | 429, with `retry-after` | `rate_limit_exceeded` |
    | `MisuseDetectedError` | 403, not to retry | `misuse_detected` |
    | `SecretRejectedError` | 502, not to retry | `secret_rejected` |
    | `APITimeoutError` | 504 | `upstream_timeout` |
    | `APIConnectionError` | 502 | `upstream_unreachable` |
    | `APIStatusError` | 502 | `upstream_error` |
    | `InvalidResponseError` | 502 | `upstream_invalid_response` |

    Args:
        error: The SDK's error.

    Returns:
        The error to send.
    """
    message = " ".join(str(error).split())
    if isinstance(error, UsageError):
        return RequestError(message, code="invalid_request", param="messages")
    if isinstance(error, RateLimitError):
        wait = error.retry_after
        seconds = _DEFAULT_RETRY_AFTER if wait is None else max(1, math.ceil(wait))
        return RequestError(
            f"PizzaGPT is rate limiting this server: {message}",
            status=429,
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers={"retry-after": str(seconds)},
        )
    if isinstance(error, MisuseDetectedError):
        return RequestError(
            "PizzaGPT flagged this server's traffic as misuse (not transient: slow down, "
            f"retrying makes it worse): {error.content!r}",
            status=403,
            type="permission_error",
            code="misuse_detected",
            headers=_NO_RETRY,
        )
    if isinstance(error, SecretRejectedError):
        return RequestError(
            "PizzaGPT rejected this server's secret: restart it with the current one "
            "(--secret or PIZZAGPT_SECRET)",
            status=502,
            type="upstream_error",
            code="secret_rejected",
            headers=_NO_RETRY,
        )
    if isinstance(error, APITimeoutError):
        return _upstream(504, "upstream_timeout", f"PizzaGPT did not answer in time: {message}")
    if isinstance(error, APIConnectionError):
        return _upstream(502, "upstream_unreachable", f"PizzaGPT could not be reached: {message}")
    if isinstance(error, APIStatusError):
        return _upstream(502, "upstream_error", f"PizzaGPT failed: {message}")
    if isinstance(error, InvalidResponseError):
        return _upstream(
            502, "upstream_invalid_response", f"PizzaGPT's answer cannot be read: {message}"
        )
    return _upstream(502, "upstream_error", f"PizzaGPT failed: {message}")


def _upstream(status: int, code: str, message: str) -> RequestError:
    return RequestError(message, status=status, type="upstream_error", code=code)
