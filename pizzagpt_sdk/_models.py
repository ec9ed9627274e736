"""The values a call produces: the stream's terminal `FinishReason` and the collected `Answer`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, fields
from typing import Any

__all__ = ["Answer", "FinishReason", "Timeout"]


def field_setters(cls: type) -> tuple[Callable[[Any, Any], None], ...]:
    """The setters of a frozen slots dataclass's fields, in order, for a private constructor of
    a value the core makes on every call.

    A frozen dataclass's `__init__` sets each field through `object.__setattr__`, most of what
    a small value costs; a slot's own setter, called on `object.__new__(cls)`, takes about a
    third less, and no `__init__` call. Such a constructor takes every field, in order, without
    defaults or checks: it is for values the core has made itself (a test checks that each one
    makes what the class's own constructor does).
    """
    return tuple(cls.__dict__[field.name].__set__ for field in fields(cls))


@dataclass(frozen=True, slots=True)
class FinishReason:
    """The last item of every successful stream: why the answer ended, and what came with it.

    Two finish reasons are equal when all their fields are: `FinishReason("stop") ==
    FinishReason("stop")`. As every public value: the one required field may be given by
    position, the others only by keyword.

    Attributes:
        reason: `"stop"` when the answer is complete, `"refusal"` when the model refused.
        citations: The sources the answer cites (with web search), in the order given.
        refusal: The model's refusal message, or `None`.
    """

    reason: str
    _: KW_ONLY
    citations: tuple[str, ...] = ()
    refusal: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Answer:
    """A whole answer, as `ask()` returns it. `str(answer)` is its text.

    Attributes:
        text: The answer's text (empty when the model refused).
        finish_reason: The stream's terminal `FinishReason`.
    """

    text: str
    finish_reason: FinishReason

    @property
    def citations(self) -> tuple[str, ...]:
        """The sources the answer cites (with web search)."""
        return self.finish_reason.citations

    @property
    def refusal(self) -> str | None:
        """The model's refusal message, or `None`. A refusal is an answer, not an error."""
        return self.finish_reason.refusal

    def __str__(self) -> str:
        return self.text

    def _repr_markdown_(self) -> str:
        """The answer as Markdown, so that a notebook renders it (citations as a list)."""
        parts = [self.text] if self.text else []
        if self.refusal:
            parts.append(f"> **Refused:** {self.refusal}")
        if self.citations:
            parts.append("**Sources**\n\n" + "\n".join(f"1. <{url}>" for url in self.citations))
        return "\n\n".join(parts)


_new = object.__new__
_set_text, _set_finish_reason = field_setters(Answer)


def make_answer(text: str, finish_reason: FinishReason) -> Answer:
    """`Answer(text=text, finish_reason=finish_reason)`, at a third less (see `field_setters`)."""
    answer: Answer = _new(Answer)
    _set_text(answer, text)
    _set_finish_reason(answer, finish_reason)
    return answer


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeout:
    """The most each wait of a request may take, in seconds; `None` for no limit.

    Attributes:
        connect: Opening a connection (TCP and TLS).
        read: Each read of the response (an answer is generated before anything is sent back).
        write: Each write of the request.
        pool: Waiting for a free connection in the pool.
    """

    connect: float | None
    read: float | None
    write: float | None
    pool: float | None

    def capped(self, cap: float | None) -> Timeout:
        """These timeouts, none longer than `cap` (what is left of a deadline; `None`: no cap)."""
        if cap is None:
            return self
        # Once per attempt: written out, without a generator or max() (a call's default
        # timeouts are shorter than its deadline, so this is most often `self`).
        connect, read, write, pool = self.connect, self.read, self.write, self.pool
        if (
            connect is not None
            and connect <= cap
            and read is not None
            and read <= cap
            and write is not None
            and write <= cap
            and pool is not None
            and pool <= cap
        ):
            return self
        return Timeout(
            connect=cap if connect is None else min(connect, cap),
            read=cap if read is None else min(read, cap),
            write=cap if write is None else min(write, cap),
            pool=cap if pool is None else min(pool, cap),
        )
