"""The retry policy: which failures are worth another attempt, and how long to wait first."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ._exceptions import APIConnectionError, APIStatusError, InvalidTypeError, InvalidValueError

__all__ = ["DEFAULT_MAX_RETRIES", "RETRY_STATUSES", "RetryPolicy", "is_retryable"]

DEFAULT_MAX_RETRIES = 2
#: Request Timeout, Conflict and Too Many Requests are transient by definition; 5xx are retried
#: too, as openai-python and anthropic-sdk-python do.
RETRY_STATUSES = frozenset({408, 409, 429})


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How long to wait between attempts: capped exponential backoff with jitter.

    The n-th retry waits `min(backoff_base * 2 ** (n - 1), backoff_cap)`, less a random fraction
    of up to `jitter` of it, unless the server sent `Retry-After`: then exactly that delay, when
    it is at most `retry_after_cap`; a longer one is not waited for (the error is raised, with
    its `retry_after`).

    Attributes:
        backoff_base: The first retry's delay before jitter, in seconds.
        backoff_cap: The longest delay backoff reaches, in seconds.
        retry_after_cap: The longest `Retry-After` the SDK waits for, in seconds.
        jitter: The largest fraction of a backoff delay taken off at random, from 0 to 1.

    Raises:
        InvalidValueError: A value is negative, not finite, or `jitter` is over 1.
    """

    backoff_base: float = 0.5
    backoff_cap: float = 8.0
    retry_after_cap: float = 60.0
    jitter: float = 0.25

    def __post_init__(self) -> None:
        for name in ("backoff_base", "backoff_cap", "retry_after_cap", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidTypeError(f"RetryPolicy.{name} must be a number, not {value!r}")
            if not math.isfinite(value) or value < 0:
                raise InvalidValueError(f"RetryPolicy.{name} must be finite and >= 0, not {value}")
        if self.jitter > 1:
            raise InvalidValueError(
                f"RetryPolicy.jitter must be between 0 and 1, not {self.jitter}"
            )

    def backoff(self, retry: int, random: float) -> float:
        """The delay before retry number `retry` (1 for the first), for `random` in [0, 1)."""
        delay = min(self.backoff_base * 2.0 ** min(retry - 1, 64), self.backoff_cap)
        return delay * (1.0 - self.jitter * random)

    def delay(self, retry: int, retry_after: float | None, random: float) -> float | None:
        """The delay before retry number `retry`, or `None` when the server asks for too long.

        Args:
            retry: 1 for the first retry, 2 for the second, …
            retry_after: The delay the server's `Retry-After` asked for, or `None`.
            random: A random number in [0, 1), for the jitter.
        """
        if retry_after is None:
            return self.backoff(retry, random)
        return retry_after if retry_after <= self.retry_after_cap else None


def is_retryable(error: Exception) -> bool:
    """Whether another attempt may succeed where this error happened.

    Connection failures and timeouts, and statuses 408, 409, 429 and 5xx are; the caller's
    mistakes, misuse detection, a rejected secret and unreadable answers are not.
    """
    if isinstance(error, APIStatusError):
        return error.status_code in RETRY_STATUSES or 500 <= error.status_code < 600
    return isinstance(error, APIConnectionError)


def check_max_retries(value: object) -> int:
    """Validate a `max_retries` argument."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(f"max_retries must be an int, not {value!r}")
    if value < 0:
        raise InvalidValueError(f"max_retries must be 0 or more, not {value}")
    return value
