"""The errors the SDK raises, all below one root.

```
PizzaGPTError
├── UsageError                 the caller's mistake, raised before anything is sent
│   ├── InvalidValueError      (also ValueError) e.g. an empty prompt, a negative max_retries
│   ├── InvalidTypeError       (also TypeError) e.g. a message that is not a mapping
│   └── ClientClosedError      (also RuntimeError) the client was closed, before the call or
│                              during it (its calls in flight end with it)
├── APIConnectionError         the service could not be reached or the connection broke
│   └── APITimeoutError        a timeout, or the call's total deadline, ran out
├── APIStatusError             any non-2xx answer: .status_code, .body (an excerpt)
│   ├── RateLimitError         429
│   └── InternalServerError    5xx
├── InvalidResponseError       a 2xx answer the SDK cannot read: HTML, not JSON, wrong shape,
│                              no content and no refusal, too large
├── SecretRejectedError        the older servers' "Invalid" answer: the secret is wrong
└── MisuseDetectedError        (also ValueError) the service flagged the traffic as misuse
```

Every error carries the request's URL where one was sent, and never the secret.
"""

from __future__ import annotations

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "ClientClosedError",
    "InternalServerError",
    "InvalidResponseError",
    "InvalidTypeError",
    "InvalidValueError",
    "MisuseDetectedError",
    "PizzaGPTError",
    "RateLimitError",
    "SecretRejectedError",
    "UsageError",
]


class PizzaGPTError(Exception):
    """The root of every error this SDK raises.

    Every one can be pickled and copied with its attributes (across `multiprocessing` and
    process pools), though its keyword-only arguments would stop `Exception`'s own way.
    """

    def __reduce__(self) -> tuple[object, ...]:
        return (_restore, (type(self), self.args, dict(self.__dict__)))


class UsageError(PizzaGPTError):
    """The caller's mistake: bad arguments or a closed client. Nothing was sent."""


class InvalidValueError(UsageError, ValueError):
    """An argument has the right type but a value the SDK cannot use."""


class InvalidTypeError(UsageError, TypeError):
    """An argument has a type the SDK does not accept."""


class ClientClosedError(UsageError, RuntimeError):
    """The client was used after `close()` / `aclose()`, or closed while the call was in
    flight: waiting for an answer, reading it, or sleeping before a retry."""


class APIConnectionError(PizzaGPTError):
    """The request could not be sent, or the connection broke before the answer was complete.

    The underlying transport error (an `httpx` error) is the `__cause__`.

    Attributes:
        url: The URL the request was sent to.
    """

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(message)
        self.url = url


class APITimeoutError(APIConnectionError):
    """A connect, read, write or pool timeout, or the call's total deadline, ran out."""


class _ResponseError(PizzaGPTError):
    """An error about a response that arrived: carries its URL, status code and body excerpt."""

    def __init__(self, message: str, *, url: str, status_code: int, body: str) -> None:
        super().__init__(message)
        self.url = url
        self.status_code = status_code
        self.body = body


class APIStatusError(_ResponseError):
    """The service answered with a status code outside 2xx.

    Attributes:
        url: The URL the request was sent to.
        status_code: The HTTP status code.
        body: A short excerpt of the response body, as text.
        retry_after: The delay in seconds the `Retry-After` header asked for, or `None`.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str,
        status_code: int,
        body: str,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, url=url, status_code=status_code, body=body)
        self.retry_after = retry_after


class RateLimitError(APIStatusError):
    """HTTP 429 Too Many Requests."""


class InternalServerError(APIStatusError):
    """HTTP 5xx: the service failed."""


class InvalidResponseError(_ResponseError):
    """A 2xx response the SDK cannot read as an answer.

    An HTML page (a Cloudflare challenge, an error page), a body that is not JSON, JSON of the
    wrong shape, an answer with neither content nor refusal, or a body over the size limit.

    Attributes:
        url: The URL the request was sent to.
        status_code: The HTTP status code.
        body: A short excerpt of what arrived.
    """


class SecretRejectedError(_ResponseError):
    """The service rejected the secret (older servers answer `"answer": "Invalid"`).

    Set the current secret with `secret=` or the `PIZZAGPT_SECRET` environment variable.
    """


class MisuseDetectedError(_ResponseError, ValueError):
    """The service answered "Misuse detected": it flagged this traffic as automated misuse.

    It is not transient, so it is never retried: retrying makes it worse. A `ValueError` too, as
    gpt4free raised it.

    Attributes:
        content: The service's message, as it arrived.
    """

    def __init__(
        self, message: str, *, url: str, status_code: int, body: str, content: str
    ) -> None:
        super().__init__(message, url=url, status_code=status_code, body=body)
        self.content = content


def _restore(
    cls: type[PizzaGPTError], args: tuple[object, ...], state: dict[str, object]
) -> PizzaGPTError:
    """An error of `cls` with these `args` and attributes, made without its `__init__`."""
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error
