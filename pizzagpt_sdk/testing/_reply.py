"""What the fake answers: `Reply`, built by its class methods, and the response it becomes.

Everything here is a value: no I/O and no clock. The in-process transport and the loopback
server both send what `render()` makes of a reply, so one script drives both the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from html import escape
from http import HTTPStatus
from typing import Any, Literal, TypeAlias

__all__ = ["CITATIONS", "MISUSE_CONTENT", "Reply", "Response", "Shape", "check_shape", "render"]

#: The two answer shapes of protocol.md: the answer at the top level (since about 2024-11-22),
#: or nested under `answer`, as older servers sent it.
Shape: TypeAlias = Literal["current", "answer"]

#: The misuse-detection answer, as protocol.md quotes it.
MISUSE_CONTENT = (
    "Misuse detected. please get in touch, we can come up with a solution for your use case."
)
#: The citations of an answer to a request with `searchEnabled`: loopback URLs, so that a test
#: that follows them reaches nothing but this machine.
CITATIONS = ("http://127.0.0.1/fake-citation/1", "http://127.0.0.1/fake-citation/2")

_JSON = "application/json"
# Headers that frame the body are the fake's job: one given by the test would desync the stream.
_FRAMING = frozenset({"content-length", "transfer-encoding"})
# RFC 9110, sections 15.3.5 and 15.4.5: these responses never have content.
_NO_CONTENT = frozenset({204, 304})

Headers: TypeAlias = tuple[tuple[str, str], ...]


def check_shape(shape: object) -> Shape:
    """Validate an answer shape.

    Args:
        shape: `"current"` or `"answer"`.

    Returns:
        The shape.

    Raises:
        ValueError: It is neither.
    """
    if shape == "current" or shape == "answer":
        return shape
    raise ValueError(f"shape must be 'current' or 'answer', not {shape!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Response:
    """The bytes and the timing of one response, as the transport and the server send it.

    Attributes:
        status: The status code.
        headers: The headers, names in lower case, `content-length` included.
        body: The whole body, as `content-length` declares it.
        delay: Seconds to wait before sending the status line and headers.
        chunk_size: Send the body in chunks of this many bytes (`None`: all at once).
        interval: Seconds to wait between chunks.
        close_mid_body: Send only the first half of the body, then close the connection.
    """

    status: int
    headers: Headers
    body: bytes = field(repr=False)
    delay: float = 0.0
    chunk_size: int | None = None
    interval: float = 0.0
    close_mid_body: bool = False

    @property
    def reason(self) -> str:
        """The status's reason phrase (empty for a code HTTP does not name, like 520)."""
        try:
            return HTTPStatus(self.status).phrase
        except ValueError:
            return ""

    def chunks(self) -> list[bytes]:
        """The body as it goes out: cut at half when the connection breaks, split when trickled.

        Returns:
            The chunks, in order (none for an empty body).
        """
        sent = self.body[: len(self.body) // 2] if self.close_mid_body else self.body
        size = self.chunk_size or len(sent) or 1
        return [sent[start : start + size] for start in range(0, len(sent), size)]


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """One scripted reply of `FakePizzaGPT`: build it with a class method, adjust it with modifiers.

    Class methods build the replies the real service is known to send (protocol.md): `answer`,
    `misuse`, `secret_rejected`, `status`, `html`, `invalid_json`, and `raw` for anything else.
    Modifiers return a new `Reply` and chain: `Reply.status(503).retry_after(2).delay(0.5)`.

    Attributes:
        status_code: The HTTP status code.
        headers: The headers, names in lower case; `content-length` is always the fake's.
        body: The body, or `None` for an answer, whose JSON is built when it is sent: in the
            reply's shape or else the fake's, with citations when the request enabled search.
        content: The answer's `content` (answers only).
        refusal: The answer's `refusal` (answers only).
        citations: The answer's `citations`, or `None` to send them only when the request had
            `"searchEnabled": true` (answers only).
        shape: The answer's shape, or `None` for the fake's (answers only).
        delay_seconds: Seconds to wait before sending the status line and headers.
        chunk_size: The body is sent in chunks of this many bytes, or all at once when `None`.
        chunk_interval: Seconds to wait between two chunks.
        breaks_mid_body: Whether the connection closes after half the body.
    """

    status_code: int = 200
    headers: Headers = (("content-type", _JSON),)
    body: bytes | None = field(default=None, repr=False)
    content: str | None = None
    refusal: str | None = None
    citations: tuple[str, ...] | None = None
    shape: Shape | None = None
    delay_seconds: float = 0.0
    chunk_size: int | None = None
    chunk_interval: float = 0.0
    breaks_mid_body: bool = False

    @classmethod
    def answer(
        cls,
        content: str | None,
        *,
        refusal: str | None = None,
        citations: tuple[str, ...] | list[str] | None = None,
        shape: Shape | None = None,
    ) -> Reply:
        """An answer: HTTP 200 with the answer's JSON, `"role": "assistant"` included.

        Args:
            content: The answer's text; `None` sends `"content": null` (with no refusal, an
                answer the SDK must reject).
            refusal: The model's refusal message.
            citations: The sources to cite; `None` cites `CITATIONS` when the request had
                `"searchEnabled": true` and leaves `citations` out otherwise.
            shape: `"current"` (`{"content": …}`) or `"answer"` (`{"answer": {"content": …},
                "description": null}`); `None` for the fake's shape.

        Returns:
            The reply.

        Raises:
            TypeError: A text is neither a string nor `None`.
            ValueError: `shape` is not a known shape.
        """
        for name, value in (("content", content), ("refusal", refusal)):
            if not isinstance(value, (str, type(None))):
                raise TypeError(f"{name} must be a string or None, not {type(value).__name__}")
        return cls(
            content=content,
            refusal=refusal,
            citations=None if citations is None else tuple(citations),
            shape=None if shape is None else check_shape(shape),
        )

    @classmethod
    def misuse(cls) -> Reply:
        """The service's misuse-detection answer: HTTP 200 with "Misuse detected. …".

        Returns:
            The reply.
        """
        return cls.answer(MISUSE_CONTENT)

    @classmethod
    def secret_rejected(cls) -> Reply:
        """The older servers' answer to a wrong secret: HTTP 200 with `{"answer": "Invalid"}`.

        Returns:
            The reply.
        """
        return cls(body=b'{"answer":"Invalid"}')

    @classmethod
    def status(
        cls,
        code: int,
        body: str | bytes | Mapping[str, Any] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        """A response with status `code`, by default with a Nuxt error body.

        Args:
            code: The status code, from 200 to 599.
            body: A mapping (sent as JSON), a string (sent as UTF-8 `text/plain`) or bytes (sent
                as they are, with no `content-type`). `None`: the Nuxt error JSON, `{"statusCode":
                code, "statusMessage": phrase, "message": phrase}` (nothing for 204 and 304).
            headers: Extra headers; they replace the defaults with the same name.

        Returns:
            The reply.

        Raises:
            TypeError: `code` is not an int, or `body` of another type.
            ValueError: `code` is out of range, or a 204 or 304 has a body.
        """
        _check_status(code)
        content_type: str | None = None
        if body is None:
            content_type, data = _nuxt_error(code)
        elif isinstance(body, Mapping):
            content_type, data = _JSON, json.dumps(dict(body)).encode()
        elif isinstance(body, str):
            content_type, data = "text/plain; charset=utf-8", body.encode()
        elif isinstance(body, bytes):
            data = body
        else:
            raise TypeError(f"body must be str, bytes or a mapping, not {type(body).__name__}")
        reply = cls.raw(code, data, headers={"content-type": content_type} if content_type else {})
        return _with_headers(reply, headers)

    @classmethod
    def html(cls, status: int = 200, title: str = "Just a moment...") -> Reply:
        """An HTML page instead of JSON, like Cloudflare's challenge (`server: cloudflare`).

        Args:
            status: The status code (Cloudflare's challenges come with 403 or 503; 200 is seen).
            title: The page's title.

        Returns:
            The reply.

        Raises:
            TypeError: `status` is not an int.
            ValueError: `status` is out of range.
        """
        page = (
            '<!DOCTYPE html><html lang="en-US"><head><title>'
            f"{escape(title)}</title></head><body><noscript>Enable JavaScript and cookies to "
            "continue</noscript></body></html>"
        )
        return cls.raw(
            status,
            page.encode(),
            headers={"content-type": "text/html; charset=UTF-8", "server": "cloudflare"},
        )

    @classmethod
    def invalid_json(cls) -> Reply:
        """HTTP 200, `application/json`, with a body that is not JSON (it stops mid-string).

        Returns:
            The reply.
        """
        return cls(body=b'{"content": "This answer stops in the mid')

    @classmethod
    def raw(cls, status: int, body: bytes, *, headers: Mapping[str, str] | None = None) -> Reply:
        """Exactly this status, body and headers (plus `content-length`).

        Args:
            status: The status code, from 200 to 599.
            body: The body.
            headers: The headers; `content-length` and `transfer-encoding` are left out, since
                the fake frames the body itself.

        Returns:
            The reply.

        Raises:
            TypeError: `status` is not an int, or `body` not bytes.
            ValueError: `status` is out of range, or a 204 or 304 has a body.
        """
        _check_status(status)
        if not isinstance(body, bytes):
            raise TypeError(f"body must be bytes, not {type(body).__name__}")
        if status in _NO_CONTENT and body:
            raise ValueError(f"a {status} response has no body (RFC 9110)")
        return _with_headers(cls(status_code=status, headers=(), body=body), headers)

    def delay(self, seconds: float) -> Reply:
        """Wait before sending the status line and headers, as the service does while it thinks.

        In-process, a delay longer than the request's read timeout raises `httpx.ReadTimeout`
        once that timeout has passed, as a socket would.

        Args:
            seconds: How long to wait.

        Returns:
            A new reply with the delay.

        Raises:
            TypeError: `seconds` is not a number.
            ValueError: `seconds` is negative or not finite.
        """
        return replace(self, delay_seconds=_seconds("delay", seconds))

    def trickle(self, chunk_size: int, interval: float = 0.01) -> Reply:
        """Send the body in chunks of `chunk_size` bytes, `interval` seconds apart.

        In-process, an interval longer than the request's read timeout raises
        `httpx.ReadTimeout`, as a socket would.

        Args:
            chunk_size: Bytes per chunk, at least 1.
            interval: Seconds between two chunks.

        Returns:
            A new reply that trickles.

        Raises:
            TypeError: `chunk_size` is not an int, or `interval` not a number.
            ValueError: `chunk_size` is below 1, or `interval` negative or not finite.
        """
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
            raise TypeError(f"chunk_size must be an int, not {chunk_size!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be at least 1, not {chunk_size}")
        return replace(self, chunk_size=chunk_size, chunk_interval=_seconds("interval", interval))

    def close_mid_body(self) -> Reply:
        """Send the headers with the full `content-length`, then half the body, then close.

        httpx raises `httpx.RemoteProtocolError` from the body, in-process and over a socket.

        Returns:
            A new reply that breaks off.
        """
        return replace(self, breaks_mid_body=True)

    def retry_after(self, value: int | str) -> Reply:
        """Add a `Retry-After` header.

        Args:
            value: Whole seconds, or any string to send as it is (an HTTP date, or garbage to
                see how it is read).

        Returns:
            A new reply with the header.

        Raises:
            ValueError: `value` is a negative number.
            TypeError: `value` is neither an int nor a string.
        """
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise TypeError(f"retry_after must be an int or a string, not {value!r}")
        if isinstance(value, int) and value < 0:
            raise ValueError(f"retry_after must not be negative, not {value}")
        return _with_headers(self, {"retry-after": str(value)})


def render(reply: Reply, *, shape: Shape, search: bool) -> Response:
    """The response that sends `reply` to a request.

    Args:
        reply: The reply.
        shape: The fake's answer shape, for an answer that has none of its own.
        search: Whether the request had `"searchEnabled": true`.

    Returns:
        The response.
    """
    body = reply.body
    if body is None:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": reply.content,
            "refusal": reply.refusal,
        }
        citations = CITATIONS if reply.citations is None and search else reply.citations
        if citations is not None:
            message["citations"] = list(citations)
        document: dict[str, Any] = message
        if (reply.shape or shape) == "answer":
            # Nothing public records `description` on success; only "error" means anything (a
            # rejected secret, protocol.md), so the fake sends null.
            document = {"answer": message, "description": None}
        try:
            body = json.dumps(document, ensure_ascii=False).encode()
        except UnicodeEncodeError:  # a lone surrogate: UTF-8 cannot carry it, a JSON escape can
            body = json.dumps(document).encode()
    return Response(
        status=reply.status_code,
        headers=(*reply.headers, ("content-length", str(len(body)))),
        body=body,
        delay=reply.delay_seconds,
        chunk_size=reply.chunk_size,
        interval=reply.chunk_interval,
        close_mid_body=reply.breaks_mid_body,
    )


def _with_headers(reply: Reply, headers: Mapping[str, str] | None) -> Reply:
    """`reply` with `headers` merged in by lower-case name, the new value winning."""
    merged = dict(reply.headers)
    for name, value in (headers or {}).items():
        if name.lower() not in _FRAMING:
            merged[name.lower()] = value
    return replace(reply, headers=tuple(merged.items()))


def _check_status(code: object) -> None:
    if isinstance(code, bool) or not isinstance(code, int):
        raise TypeError(f"the status must be an int, not {code!r}")
    if not 200 <= code <= 599:
        raise ValueError(f"the status must be from 200 to 599, not {code}")


def _nuxt_error(code: int) -> tuple[str | None, bytes]:
    """A Nuxt (h3) error body, as the site's server sends it; none for 204 and 304."""
    if code in _NO_CONTENT:
        return None, b""
    try:
        phrase = HTTPStatus(code).phrase
    except ValueError:
        phrase = "Error"
    document = {"statusCode": code, "statusMessage": phrase, "message": phrase}
    return _JSON, json.dumps(document).encode()


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be finite and not negative, not {value}")
    return float(value)
