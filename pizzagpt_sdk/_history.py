"""A conversation's history, without I/O: what to send for the next turn, and what to keep."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ._exceptions import InvalidTypeError
from ._models import Answer
from ._prompt import Message, check_message

__all__ = ["History"]


class History:
    """The messages of a conversation, as OpenAI-style dicts, oldest first.

    `messages` is a plain list: read it, edit it, slice it. A turn is added only once its answer
    has finished (see `commit`), so a failed or abandoned turn leaves no trace.

    Args:
        system: A system message to start with, kept by `reset()`.
        messages: Earlier messages to start from (after the system message).

    Raises:
        InvalidTypeError: A message is not a mapping, or has a role or content of the wrong type.
        InvalidValueError: A message has an empty role or no content.
    """

    def __init__(self, *, system: str | None = None, messages: Iterable[Message] = ()) -> None:
        if system is not None and not isinstance(system, str):
            raise InvalidTypeError(f"system must be a string, not {type(system).__name__}")
        self.system = system
        self.messages: list[dict[str, Any]] = []
        self.reset()
        self.messages.extend(_copy(index, message) for index, message in enumerate(messages))

    def reset(self) -> None:
        """Forget every turn; keep only the system message, if there is one."""
        self.messages[:] = (
            [] if self.system is None else [{"role": "system", "content": self.system}]
        )

    def next_turn(self, content: str | Message) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """The messages to send for a new user turn, and that turn's user message.

        Args:
            content: The user's text, or a whole message mapping (to send content parts, or
                another role).

        Returns:
            `(messages, user_message)`: the history plus the new message, and the new message.
        """
        if isinstance(content, str):
            message: dict[str, Any] = {"role": "user", "content": content}
        else:
            message = _copy(len(self.messages), content)
        return [*self.messages, message], message

    def commit(self, user_message: dict[str, Any], answer: Answer) -> None:
        """Keep a finished turn: the user's message and the assistant's answer."""
        reply = answer.text or answer.refusal or ""
        self.messages += [user_message, {"role": "assistant", "content": reply}]

    def to_messages(self) -> list[dict[str, Any]]:
        """A copy of the history as a list of message dicts."""
        return [dict(message) for message in self.messages]


def _copy(index: int, message: object) -> dict[str, Any]:
    check_message(index, message)
    assert isinstance(message, Mapping)
    return dict(message)
