"""PizzaGPT's wire protocol, without I/O: the request to send and the reading of the response.

The source of truth is ../shared/protocol.md. The request is exactly what gpt4free's final
`Pizzagpt` provider sends; the reader accepts both response shapes seen since 2023 and turns every
other outcome into a typed error that shows what arrived.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timezone
from email.utils import parsedate_to_datetime
from http import HTTPStatus
from json.encoder import encode_basestring_ascii as _json_string
from typing import Any, TypeAlias
from urllib.parse import urlsplit

from ._decoding import ContentDecoder, DecodingError, raw_limit
from ._exceptions import (
    APIStatusError,
    InternalServerError,
    InvalidResponseError,
    InvalidTypeError,
    InvalidValueError,
    MisuseDetectedError,
    PizzaGPTError,
    RateLimitError,
    SecretRejectedError,
)
from ._models import FinishReason, field_setters

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_SECRET",
    "DEFAULT_USER_AGENT",
    "ENDPOINT_PATH",
    "Event",
    "Request",
    "ResponseReader",
    "Settings",
    "parse_retry_after",
]

#: One item of a stream: a chunk of the answer's text, or the terminal `FinishReason`.
Event: TypeAlias = str | FinishReason

DEFAULT_BASE_URL = "https://www.pizzagpt.it"
#: The endpoint since 2023-11 (it was `/api/chat-completion` before).
ENDPOINT_PATH = "/api/chatx-completion"
#: The secret every client has sent since mid-2023, in the `x-secret` header.
DEFAULT_SECRET = "Marinara"
#: The user agent gpt4free's final provider sends.
DEFAULT_USER_AGENT = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/127.0.0.0 Safari/537.36"
)
#: A response body larger than this is refused rather than buffered without bound.
DEFAULT_MAX_RESPONSE_BYTES = 4 * 1024 * 1024
# An error body is read this far for its excerpt; the rest is not worth the wait.
_ERROR_BODY_LIMIT = 64 * 1024
_EXCERPT_CHARS = 300
# protocol.md: match the start case-insensitively; the casing after the first words varies.
_MISUSE_PREFIX = "misuse detected"
_TEXT_OR_NULL = (str, type(None))
_STOP = FinishReason("stop")
# A decoder of no codings keeps no state: one serves every body that is not coded.
_NOT_CODED = ContentDecoder("")
# json's scanner (its C one), as json.loads() calls it: (value, end) for the value at an index
# (an attribute of every JSONDecoder, that typeshed leaves out).
_scan_json: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """An HTTP request to send, independent of any HTTP library.

    Attributes:
        method: The HTTP method, always `"POST"`.
        url: The absolute URL.
        headers: The headers, in order, names in lower case.
        body: The body, JSON encoded as bytes.
    """

    method: str
    url: str
    headers: tuple[tuple[str, str], ...] = field(repr=False)  # they hold the secret
    body: bytes = field(repr=False)


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """Where and how to reach PizzaGPT; validated when built.

    Args:
        base_url: The service's scheme and host (and an optional path prefix).
        secret: The `x-secret` header's value.
        user_agent: The `user-agent` header's value.
        headers: Extra headers, sent after the protocol's own; one with the same name (in any
            case) replaces the protocol's.

    Raises:
        InvalidValueError: The base URL is not an http(s) URL with a host, or a header value is
            empty or holds a line break or a non-ASCII character.
        InvalidTypeError: A value is not a string.
    """

    base_url: str = DEFAULT_BASE_URL
    secret: str = field(default=DEFAULT_SECRET, repr=False)
    user_agent: str = DEFAULT_USER_AGENT
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    # What every request of these settings shares, built once: about half of build_request().
    _url: str = field(init=False, repr=False, compare=False)
    _headers: tuple[tuple[str, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        url = _check_header_value("base_url", self.base_url)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidValueError(
                f"base_url must be an http:// or https:// URL with a host, like "
                f"{DEFAULT_BASE_URL!r}; got {url!r}"
            )
        if parts.query or parts.fragment:
            raise InvalidValueError(f"base_url must not have a query or a fragment; got {url!r}")
        _check_header_value("secret", self.secret)
        _check_header_value("user_agent", self.user_agent)
        if not isinstance(self.headers, Mapping):
            raise InvalidTypeError(f"headers must be a mapping, not {type(self.headers).__name__}")
        for name, value in self.headers.items():
            _check_header_value("a header name in headers", name)
            if not _TOKEN.fullmatch(name):
                raise InvalidValueError(
                    f"headers: {name!r} is not a header name (letters, digits and !#$%&'*+-.^_`|~,"
                    " with no space or colon)"
                )
            if name.lower() in _MANAGED_HEADERS:
                raise InvalidValueError(
                    f"headers: {name!r} is the HTTP library's to set, from the body it sends; "
                    "leave it out"
                )
            _check_header_value(f"header {name!r}", value)
        object.__setattr__(self, "headers", dict(self.headers))
        origin = f"{parts.scheme}://{parts.netloc}"
        headers = {
            "accept": "application/json",
            "accept-language": "en-US,en;q=0.9",
            "content-type": "application/json",
            "origin": origin,
            "referer": f"{origin}/en",
            "user-agent": self.user_agent,
            "x-secret": self.secret,
        }
        for name, value in self.headers.items():
            headers[name.lower()] = value
        object.__setattr__(self, "_headers", tuple(headers.items()))
        object.__setattr__(self, "_url", url.rstrip("/") + ENDPOINT_PATH)

    @property
    def url(self) -> str:
        """The endpoint's URL: the base URL plus `/api/chatx-completion`."""
        return self._url

    def build_request(
        self, prompt: str, *, model: str | None = None, search: bool | None = None
    ) -> Request:
        """Build the request that asks `prompt`.

        Args:
            prompt: The flattened prompt (see `flatten_messages`).
            model: Sent as the body's `model` field when given (clients from 2025 send
                `"gpt-4o-mini"`); left out by default, as gpt4free does.
            search: Sent as the body's `searchEnabled` field when not `None` (web search, which
                returns citations); left out by default.

        Returns:
            The request, with the headers and body gpt4free's final provider sends.

        Raises:
            InvalidTypeError: `prompt` or `model` is not a string, or `search` not a bool.
            InvalidValueError: `prompt` or `model` is empty.
        """
        if not isinstance(prompt, str):
            raise InvalidTypeError(f"prompt must be a string, not {type(prompt).__name__}")
        if not prompt.strip():
            raise InvalidValueError("the prompt is empty or only white space")
        check_request_fields(model, search)
        return self._build(prompt, model, search)

    def _build(self, prompt: str, model: str | None, search: bool | None) -> Request:
        """`build_request()` from checked values (a `Config` checks them)."""
        # json.dumps with its defaults is byte for byte what aiohttp's `json=` sends for gpt4free:
        # `{"question": "..."}`, then the optional fields in this order, ASCII only. Written with
        # json's own string encoder, which dumps() uses, without dumps()'s machinery per call.
        body = '{"question": ' + _json_string(prompt)
        if model is not None:
            body += ', "model": ' + _json_string(model)
        if search is not None:
            body += ', "searchEnabled": true' if search else ', "searchEnabled": false'
        request: Request = _new(Request)
        _set_method(request, "POST")
        _set_url(request, self._url)
        _set_headers(request, self._headers)
        _set_body(request, (body + "}").encode("ascii"))
        return request


# `Request(...)` costs twice what its fields' own setters do (see `field_setters`).
_new = object.__new__
_set_method, _set_url, _set_headers, _set_body = field_setters(Request)


def check_request_fields(model: object, search: object) -> None:
    """Check `build_request()`'s `model` and `search` (the per-call options of the same names).

    Raises:
        InvalidTypeError: `model` is not a string or `None`, or `search` not a bool or `None`.
        InvalidValueError: `model` is empty.
    """
    if model is not None:
        if not isinstance(model, str):
            raise InvalidTypeError(f"model must be a string, not {type(model).__name__}")
        if not model.strip():
            raise InvalidValueError("model is empty: leave it out or use 'gpt-4o-mini'")
    if search is not None and not isinstance(search, bool):
        raise InvalidTypeError(f"search must be True, False or None, not {search!r}")


def _check_header_value(what: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidTypeError(f"{what} must be a string, not {type(value).__name__}")
    if not value.strip():
        raise InvalidValueError(f"{what} is empty")
    # RFC 9110, section 5.5: visible ASCII, spaces and tabs; no other control character.
    if not value.isascii() or any((ord(c) < 32 and c != "\t") or c == "\x7f" for c in value):
        raise InvalidValueError(f"{what} must be printable ASCII, with no line break or control")
    return value


# RFC 9110, section 5.6.2: a header name is a token.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Set by the HTTP library from what it sends: one given here would contradict it.
_MANAGED_HEADERS = frozenset({"content-length", "transfer-encoding", "host", "connection"})


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Read a `Retry-After` header: delay-seconds or an HTTP date (RFC 9110, section 10.2.3).

    Args:
        value: The header's value, or `None` when it is absent.
        now: The current time as a Unix timestamp, for the date form.

    Returns:
        The delay in seconds (never negative), or `None` when absent or unreadable.
    """
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # isdigit() alone takes "²", which float() refuses
        return float(value)  # "9" * 400 is inf: longer than any cap, so not waited for
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):  # a year past C's int: Overflow
        return None
    if when.tzinfo is None:
        # The asctime form has no zone; RFC 9110 (section 5.6.7) says every HTTP date is GMT.
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, when.timestamp() - now)


class ResponseReader:
    """Reads one response, fed incrementally, into the stream's events or a typed error.

    Feed the body's bytes as they arrive with `feed()`, as they came off the wire (still in its
    `Content-Encoding`, which the reader decodes a bounded step at a time, counting the decoded
    bytes against `max_bytes`), then call `end()` when the body is complete. Either may raise the
    error the response amounts to; the chunking never changes the result. Today the body is one
    JSON document, so the events come from `end()`; a future streaming format would produce them
    from `feed()`.

    Args:
        url: The request's URL, for errors.
        status_code: The response's status code.
        headers: The response's headers (any case).
        max_bytes: The largest body accepted.
        now: The current Unix time, to read a `Retry-After` date.

    Raises:
        InvalidResponseError: The `content-length` header already exceeds `max_bytes`, or a 2xx
            body is in a content coding the SDK cannot decode (unknown, br or zstd without
            their decoder, more than five stacked).
    """

    def __init__(
        self,
        *,
        url: str,
        status_code: int,
        headers: Iterable[tuple[str, str]],
        max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        now: float = 0.0,
    ) -> None:
        self.url = url
        self.status_code = status_code
        self._ok = 200 <= status_code < 300
        # A loop, not a comprehension: half the time on Python 3.11, whose comprehensions are
        # functions of their own.
        self._headers: dict[str, str] = {}
        lowered = self._headers
        for name, value in headers:
            lowered[_lower(name)] = value
        self._max_bytes = max_bytes
        self._now = now
        self._buffer = bytearray()
        # The body is decoded here, not by the HTTP library, a bounded step at a time: what is
        # counted against the limit is what comes out of the decoder (see _decoding.py). Most
        # bodies are not coded: their bytes go to the buffer as they are.
        self._decoder: ContentDecoder | None = _NOT_CODED
        self._coded = False
        self._undecodable: str | None = None
        coding = self._headers.get("content-encoding")
        if coding:
            try:
                self._decoder = ContentDecoder(coding)
            except DecodingError as exc:
                self._decoder = None
                if self._ok:
                    raise self._invalid(f"a body the SDK cannot decode: {exc}", b"") from None
                self._undecodable = str(exc)  # the status error says more; it says this too
            else:
                self._coded = not self._decoder.identity
        declared = self._headers.get("content-length", "")
        if self._ok and declared.isascii() and declared.isdigit():
            # The declared length is the coded one, which may be a little over the decoded.
            most = raw_limit(max_bytes) - 1 if self._coded else max_bytes
            # int() refuses over 4,300 digits (CPython's limit): any 20 digits are too many.
            if len(declared) >= 20:
                raise self._too_large(f"it declares a {len(declared)}-digit length")
            if int(declared) > most:
                raise self._too_large(f"it declares {int(declared):,} bytes")

    @property
    def ok(self) -> bool:
        """Whether the status is 2xx."""
        return self._ok

    def feed(self, data: bytes) -> list[Event]:
        """Take the next bytes of the body.

        Returns:
            The events these bytes complete (none, with today's one-document format).

        Raises:
            InvalidResponseError: The body grew past `max_bytes` (once decoded), or its coding
                is corrupt.
            APIStatusError: A non-2xx body grew past the excerpt limit (no need to read on), or
                its coding is corrupt.
        """
        # Keep no more than the limit, however the bytes are chunked: the result must not depend
        # on the chunking. Each decoded piece is counted as it comes: a body of a few KB may
        # decode to gigabytes, and decoding stops as soon as the limit is passed.
        if self._decoder is None:
            return []  # an error body in a coding the SDK cannot decode: only its status counts
        limit = self._max_bytes + 1 if self._ok else _ERROR_BODY_LIMIT
        if not self._coded:
            self._buffer += data[: limit - len(self._buffer)]
        else:
            try:
                for piece in self._decoder.feed(data):
                    self._buffer += piece[: limit - len(self._buffer)]
                    if len(self._buffer) >= limit:
                        break
            except DecodingError as exc:
                raise self._undecoded(exc) from None
        if len(self._buffer) < limit:
            return []
        if not self._ok:
            raise self._status_error()
        what = "arrived" if self._decoder.identity else "came out of its decoding"
        raise self._too_large(f"more than {self._max_bytes:,} bytes {what}")

    def end(self) -> list[Event]:
        """Take the end of the body.

        Returns:
            The remaining events: the answer's text (when not empty), then one `FinishReason`.

        Raises:
            APIStatusError: The status is not 2xx (`RateLimitError` for 429,
                `InternalServerError` for 5xx).
            InvalidResponseError: The body is HTML, not JSON, of the wrong shape, or has neither
                content nor refusal, or its coding was cut short.
            SecretRejectedError: The older servers' rejected-secret signal.
            MisuseDetectedError: The service's misuse-detection answer.
        """
        if not self._ok:
            raise self._status_error()
        assert self._decoder is not None
        if self._coded:
            try:
                self._decoder.end()
            except DecodingError as exc:
                raise self._undecoded(exc) from None
        try:
            # Most bodies are UTF-8 and one JSON value with no space around it: decoded at once
            # and scanned by json's own C scanner, without the bytes copy and the detection of
            # json.loads(bytes), nor its checks in Python, whose result is the same (it decodes
            # with 'surrogatepass': a UTF-8 failure here, a BOM, UTF-16, spaces or anything
            # after the value fall through to it, which also says what is wrong).
            text = self._buffer.decode()
            document, end = _scan_json(text, 0)
        except (ValueError, RecursionError, StopIteration):
            pass
        else:
            if end == len(text):
                return self._read_document(document, self._buffer)
        body = bytes(self._buffer)
        try:
            document = json.loads(body)
        except (ValueError, RecursionError):  # RecursionError: JSON nested beyond Python's stack
            if self._looks_like_html(body):
                raise self._invalid(
                    f"an HTML page{_title(body)} instead of JSON: a Cloudflare challenge or an "
                    "error page, so the service may be blocking this client or be down",
                    body,
                ) from None
            raise self._invalid("a body that is not JSON", body) from None
        return self._read_document(document, body)

    def _read_document(self, document: object, body: bytes | bytearray) -> list[Event]:
        if not isinstance(document, dict):
            raise self._invalid("JSON that is not an object", body)
        answer = document.get("answer")
        if isinstance(answer, str) or document.get("description") == "error":
            # Older servers' answer to a wrong secret: {"answer": "Invalid"} or
            # {"description": "error"} (protocol.md, "Rejected secret").
            raise SecretRejectedError(
                f"PizzaGPT rejected the request ({_excerpt(body)}): the secret is the likely "
                "cause; set the current one with secret= or PIZZAGPT_SECRET",
                url=self.url,
                status_code=self.status_code,
                body=_excerpt(body),
            )
        message = answer if isinstance(answer, dict) else document
        content = message.get("content")
        refusal = message.get("refusal")
        citations = message.get("citations")
        if citations is None:
            citations = []
        if (
            not isinstance(content, _TEXT_OR_NULL)
            or not isinstance(refusal, _TEXT_OR_NULL)
            or not isinstance(citations, list)
            or (citations and not all(isinstance(item, str) for item in citations))
        ):
            raise self._invalid(
                "JSON of an unexpected shape (content and refusal must be strings or null, "
                "citations a list of strings)",
                body,
            )
        content = content or ""
        refusal = refusal if refusal and refusal.strip() else None
        # Only the start is lowered, not a long answer (no character lowers to none, so the
        # prefix's length of characters is enough).
        if content.lstrip()[: len(_MISUSE_PREFIX)].lower() == _MISUSE_PREFIX:
            raise MisuseDetectedError(
                f"PizzaGPT flagged this traffic as misuse: {content!r}. It is not transient: "
                "slow down, or contact the service",
                url=self.url,
                status_code=self.status_code,
                body=_excerpt(body),
                content=content,
            )
        has_text = bool(content.strip())
        if not has_text and not refusal:
            raise self._invalid("an answer with neither content nor refusal", body)
        events: list[Event] = [content] if has_text else []
        if not refusal and not citations:
            events.append(_STOP)  # the common end, made once
        else:
            events.append(
                FinishReason(
                    "refusal" if refusal else "stop",
                    citations=tuple(citations),
                    refusal=refusal or None,
                )
            )
        return events

    def _looks_like_html(self, body: bytes) -> bool:
        content_type = self._headers.get("content-type", "").lower()
        return "html" in content_type or body.lstrip()[:1] == b"<"

    def _status_error(self) -> APIStatusError:
        body = bytes(self._buffer)
        status = self.status_code
        cls = APIStatusError
        if status == 429:
            cls = RateLimitError
        elif 500 <= status < 600:
            cls = InternalServerError
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
        if self._undecodable is not None:
            detail = f"a body the SDK cannot decode: {self._undecodable}"
        elif self._looks_like_html(body):
            detail = f"an HTML page{_title(body)}: {_excerpt(body)}"
        else:
            detail = _error_detail(body) or _excerpt(body) or "(empty body)"
        hint = _STATUS_HINTS.get(status, "")
        return cls(
            f"PizzaGPT answered HTTP {status} {phrase} to POST {self.url}: {detail}{hint}",
            url=self.url,
            status_code=status,
            body=_excerpt(body),
            retry_after=parse_retry_after(self._headers.get("retry-after"), self._now),
        )

    def _head(self) -> bytes:
        # What an excerpt can show, copied without the rest (which may be max_bytes long).
        return bytes(self._buffer[: _EXCERPT_CHARS * 4])

    def _undecoded(self, error: DecodingError) -> PizzaGPTError:
        if not self._ok:
            self._undecodable = str(error)
            return self._status_error()
        return self._invalid(f"a body the SDK cannot decode: {error}", self._head())

    def _invalid(self, what: str, body: bytes | bytearray) -> InvalidResponseError:
        shown = _excerpt(body)
        return InvalidResponseError(
            f"PizzaGPT answered HTTP {self.status_code} with {what}: {shown or '(empty body)'}",
            url=self.url,
            status_code=self.status_code,
            body=shown,
        )

    def _too_large(self, why: str) -> InvalidResponseError:
        return InvalidResponseError(
            f"the response is larger than max_response_bytes={self._max_bytes:,} ({why}); "
            "raise the limit if this answer is genuine",
            url=self.url,
            status_code=self.status_code,
            body=_excerpt(self._head()),
        )


_lower = str.lower

_STATUS_HINTS = {
    401: " (check the secret: secret= or PIZZAGPT_SECRET)",
    403: " (the secret may be wrong, or the site may be showing a Cloudflare challenge)",
    429: " (too many requests: slow down)",
}


def _error_detail(body: bytes) -> str | None:
    """The message of a Nuxt error body, `{"statusCode": 500, "message": "..."}`."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if isinstance(document, dict):
        message = document.get("message") or document.get("statusMessage")
        if isinstance(message, str) and message.strip():
            return _shorten(message)
    return None


_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)


def _title(body: bytes) -> str:
    match = _TITLE.search(body[:_ERROR_BODY_LIMIT])
    if not match:
        return ""
    title = _shorten(match.group(1).decode("utf-8", "replace"))
    return f" titled {title!r}" if title else ""


def _excerpt(body: bytes | bytearray) -> str:
    return _shorten(body[: _EXCERPT_CHARS * 4].decode("utf-8", "replace"))


def _shorten(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _EXCERPT_CHARS else text[: _EXCERPT_CHARS - 1] + "…"
