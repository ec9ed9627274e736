"""Flattening a conversation into PizzaGPT's single prompt, as gpt4free's `format_prompt` does.

The rules (../shared/protocol.md, "Flattening messages into the prompt"): one message is sent as
its bare text; several become `Role: text` lines joined by newlines, blank ones left out, then the
suffix `\\nAssistant:`. Everything is validated first, so a mistake is a clear error before
anything is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeAlias

from ._exceptions import InvalidTypeError, InvalidValueError

__all__ = ["Message", "Messages", "check_message", "flatten_messages"]

#: One OpenAI-style message: `{"role": "user", "content": "Hi"}`; content may be a string,
#: `None`, or a list of parts such as `{"type": "text", "text": "Hi"}`.
Message: TypeAlias = Mapping[str, Any]
#: What `stream()` and `ask()` accept: a plain string (one user message) or a sequence of messages.
Messages: TypeAlias = str | Sequence[Message]

_SYSTEM_ROLES = ("system", "developer")


def flatten_messages(
    messages: Messages, *, include_system: bool = True, assistant_suffix: bool = True
) -> str:
    """Turn a string or a list of messages into the one prompt PizzaGPT takes.

    Args:
        messages: A plain string, sent as it is, or a sequence of OpenAI-style message mappings.
        include_system: Keep `system` and `developer` messages. `False` leaves them out
            (gpt4free's `include_system=False`).
        assistant_suffix: End a multi-message prompt with `\\nAssistant:`. `False` leaves it out,
            so the model continues the last message (gpt4free's `do_continue=True`).

    Returns:
        The prompt.

    Raises:
        InvalidTypeError: `messages`, a message, a role, the content or a content part has a type
            the SDK does not accept (also a `TypeError`).
        InvalidValueError: The list is empty, a message has no `content` key, a role is empty, or
            the prompt is empty or only white space (also a `ValueError`).

    Examples:
        >>> flatten_messages([{"role": "user", "content": "Hi"}])
        'Hi'
        >>> flatten_messages([
        ...     {"role": "system", "content": "Be brief"},
        ...     {"role": "user", "content": "2+2?"},
        ... ])
        'System: Be brief\\nUser: 2+2?\\nAssistant:'
    """
    if isinstance(messages, str):
        return _checked(messages, "the prompt")
    if isinstance(messages, (bytes, bytearray, Mapping)) or not isinstance(messages, Sequence):
        hint = " (wrap a single message in a list)" if isinstance(messages, Mapping) else ""
        raise InvalidTypeError(
            "messages must be a string or a sequence of message mappings, "
            f"not {type(messages).__name__}{hint}"
        )
    if not messages:
        raise InvalidValueError("messages is empty: pass a string or at least one message")
    turns = [_read_message(index, message) for index, message in enumerate(messages)]
    # gpt4free's rule: a single message is its bare text, checked on the list as given (before
    # system messages are dropped).
    if len(turns) == 1:
        return _checked(turns[0][1], "the only message's content")
    lines = [
        f"{role.capitalize()}: {text}"
        for role, text in turns
        if text.strip() and (include_system or role not in _SYSTEM_ROLES)
    ]
    if not lines:
        what = "left after system messages were dropped" if not include_system else "in any message"
        raise InvalidValueError(f"the prompt is empty: there is no text {what}")
    prompt = "\n".join(lines)
    return f"{prompt}\nAssistant:" if assistant_suffix else prompt


def _checked(prompt: str, what: str) -> str:
    if not prompt.strip():
        raise InvalidValueError(f"{what} is empty or only white space: there is nothing to ask")
    return prompt


def check_message(index: int, message: object) -> None:
    """Validate one message, as `flatten_messages` would (`index` names it in the error)."""
    _read_message(index, message)


def _read_message(index: int, message: object) -> tuple[str, str]:
    where = f"message {index}"
    if not isinstance(message, Mapping):
        raise InvalidTypeError(
            f'{where} must be a mapping like {{"role": "user", "content": "..."}}, '
            f"not {type(message).__name__}"
        )
    role = message.get("role")
    if not isinstance(role, str):
        got = "has no 'role'" if role is None else f"has a role of type {type(role).__name__}"
        raise InvalidTypeError(f"{where} {got}: the role must be a string such as 'user'")
    if not role.strip():
        raise InvalidValueError(f"{where} has an empty role: use 'user', 'assistant' or 'system'")
    if "content" not in message:
        raise InvalidValueError(
            f"{where} has no 'content' key (keys: {sorted(map(str, message))}); "
            "use content=None for an empty message"
        )
    return role, _content_text(where, message["content"])


def _content_text(where: str, content: object) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, (bytes, bytearray, Mapping)) or not isinstance(content, Sequence):
        raise InvalidTypeError(
            f"{where}: content must be a string, None or a list of parts, "
            f"not {type(content).__name__}"
        )
    texts: list[str] = []
    for number, part in enumerate(content):
        if not isinstance(part, Mapping):
            raise InvalidTypeError(
                f'{where}, part {number}: a content part must be a mapping like {{"type": "text", '
                f'"text": "..."}}, not {type(part).__name__}'
            )
        # OpenAI's format: only text parts count; images, audio and files are not sent.
        if part.get("type", "text") != "text":
            continue
        text = part.get("text")
        if text is None:
            continue
        if not isinstance(text, str):
            raise InvalidTypeError(
                f"{where}, part {number}: 'text' must be a string, not {type(text).__name__}"
            )
        texts.append(text)
    return "".join(texts)
