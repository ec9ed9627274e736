"""Batches without I/O: the rate limit's schedule and the bookkeeping of many calls."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from ._exceptions import InvalidTypeError, InvalidValueError, PizzaGPTError, UsageError
from ._models import Answer
from ._prompt import Messages, flatten_messages

__all__ = ["Batch", "BatchProgress", "RateLimiter"]


class RateLimiter:
    """Spaces requests evenly, at most `requests_per_minute`; the first goes at once.

    The free service answers heavy traffic with misuse detection, so a batch should stay under
    a rate. Share one limiter between batches (and clients) to keep them all under it together.
    Thread-safe.

    Args:
        requests_per_minute: The most requests started in any minute.
        clock: A monotonic clock in seconds, for `reserve()` called without the time. The SDK's
            clients pass `time.monotonic()` themselves, so `RateLimiter(60)` is all they need.

    Raises:
        InvalidValueError: `requests_per_minute` is not a positive finite number.
    """

    def __init__(
        self, requests_per_minute: float, *, clock: Callable[[], float] | None = None
    ) -> None:
        if isinstance(requests_per_minute, bool) or not isinstance(
            requests_per_minute, (int, float)
        ):
            raise InvalidTypeError(
                "the rate limit must be a number of requests per minute, "
                f"not {requests_per_minute!r}"
            )
        if not (math.isfinite(requests_per_minute) and requests_per_minute > 0):
            raise InvalidValueError(
                f"the rate limit must be more than 0 requests per minute, not {requests_per_minute}"
            )
        self.interval = 60.0 / requests_per_minute
        self._clock = clock
        self._next_slot: float | None = None
        self._lock = threading.Lock()

    def reserve(self, now: float | None = None) -> float:
        """Take the next free slot.

        Args:
            now: The monotonic time in seconds, used when the limiter has no clock of its own.

        Returns:
            How long to wait, in seconds, before starting the request.

        Raises:
            InvalidValueError: No time given, and the limiter has no clock.
        """
        if self._clock is not None:
            now = self._clock()
        elif now is None:
            raise InvalidValueError("give reserve() the time, or the RateLimiter a clock")
        with self._lock:
            start = now if self._next_slot is None else max(now, self._next_slot)
            self._next_slot = start + self.interval
            return start - now


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchProgress:
    """How far a batch has come; passed to `map()`'s `on_progress` after each prompt.

    Attributes:
        done: Prompts finished, answered or failed.
        total: Prompts in the batch.
        failed: Prompts that ended in an error.
        index: The position of the prompt that just finished.
    """

    done: int
    total: int
    failed: int
    index: int


class Batch:
    """The state of one `map()`: which prompt is next, the results, when to stop.

    Workers (threads or tasks) loop on `next_job()`, wait `delay()`, ask, and report with
    `finished()`. Thread-safe.

    Raises:
        UsageError: A prompt is invalid (its index is named), or an argument is.
    """

    def __init__(
        self,
        prompts: Iterable[Messages],
        *,
        concurrency: int,
        rate_limiter: RateLimiter | None,
        return_exceptions: bool,
        on_progress: Callable[[BatchProgress], None] | None,
        include_system: bool = True,
        assistant_suffix: bool = True,
    ) -> None:
        if isinstance(concurrency, bool) or not isinstance(concurrency, int):
            raise InvalidTypeError(f"concurrency must be an int, not {concurrency!r}")
        if concurrency < 1:
            raise InvalidValueError(f"concurrency must be 1 or more, not {concurrency}")
        if isinstance(prompts, (str, bytes)):
            raise InvalidTypeError("prompts must be a list of prompts, not one string")
        self.prompts = list(prompts)
        for index, prompt in enumerate(self.prompts):
            try:
                flatten_messages(
                    prompt, include_system=include_system, assistant_suffix=assistant_suffix
                )
            except UsageError as error:
                raise type(error)(f"prompts[{index}]: {error}") from None
        self.concurrency = min(concurrency, max(1, len(self.prompts)))
        self._limiter = rate_limiter
        self._return_exceptions = return_exceptions
        self._on_progress = on_progress
        self._results: list[Answer | PizzaGPTError | None] = [None] * len(self.prompts)
        self._next = 0
        self._done = 0
        self._failed = 0
        self._error: PizzaGPTError | None = None
        self._lock = threading.Lock()
        # Held while a result is recorded and reported: reports reach `on_progress` one at a
        # time, in the order of `done`, whichever threads finish together.
        self._reporting = threading.Lock()

    def next_job(self) -> tuple[int, Messages] | None:
        """The next prompt to ask and its index, or `None` when there is none or the batch stops."""
        with self._lock:
            if self._error is not None or self._next >= len(self.prompts):
                return None
            index = self._next
            self._next += 1
            return index, self.prompts[index]

    def delay(self, now: float | None = None) -> float:
        """How long to wait before sending the next request, under the rate limit.

        Args:
            now: The monotonic time in seconds (see `RateLimiter.reserve`).
        """
        return 0.0 if self._limiter is None else self._limiter.reserve(now)

    def finished(self, index: int, result: Answer | PizzaGPTError) -> None:
        """Record a prompt's answer or error, and report progress."""
        with self._reporting:
            with self._lock:
                self._results[index] = result
                self._done += 1
                if isinstance(result, PizzaGPTError):
                    self._failed += 1
                    if not self._return_exceptions and self._error is None:
                        self._error = result
                progress = BatchProgress(
                    done=self._done, total=len(self.prompts), failed=self._failed, index=index
                )
            if self._on_progress is not None:
                self._on_progress(progress)

    def outcome(self) -> list[Answer | PizzaGPTError]:
        """The results in the prompts' order.

        Raises:
            PizzaGPTError: The first error, unless errors are returned.
        """
        if self._error is not None:
            raise self._error
        results = [result for result in self._results if result is not None]
        assert len(results) == len(self.prompts)
        return results
