"""The wire protocol without I/O: Settings, build_request, parse_retry_after, ResponseReader.

protocol.md is the source of truth; the request must be byte for byte what gpt4free's final
`Pizzagpt` provider sends (g4f/Provider/not_working/Pizzagpt.py).
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

import pytest

from pizzagpt_sdk import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ClientClosedError,
    FinishReason,
    InternalServerError,
    InvalidResponseError,
    InvalidTypeError,
    InvalidValueError,
    MisuseDetectedError,
    PizzaGPTError,
    RateLimitError,
    SecretRejectedError,
)
from pizzagpt_sdk.core import (
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_SECRET,
    DEFAULT_USER_AGENT,
    ENDPOINT_PATH,
    Event,
    Request,
    ResponseReader,
    Settings,
    flatten_messages,
    is_retryable,
    parse_retry_after,
)

URL = "https://www.pizzagpt.it/api/chatx-completion"
#: A fixed "current Unix time" for Retry-After dates: Tue, 14 Nov 2023 22:13:20 GMT.
NOW = 1_700_000_000.0

# ---------------------------------------------------------------------------------------------
# The request
# ---------------------------------------------------------------------------------------------


def gpt4free_request(
    prompt: str, url: str = "https://www.pizzagpt.it"
) -> tuple[str, str, tuple[tuple[str, str], ...], bytes]:
    """What gpt4free's final provider sends: its header dict and body, copied.

    g4f/Provider/not_working/Pizzagpt.py (xtekky/gpt4free): `url` is the class's `url`, the
    headers are passed to `ClientSession(headers=...)` and the body is aiohttp's `json=data`,
    which is `json.dumps(data)` encoded as UTF-8.
    """
    api_endpoint = "/api/chatx-completion"
    headers = {
        "accept": "application/json",
        "accept-language": "en-US,en;q=0.9",
        "content-type": "application/json",
        "origin": url,
        "referer": f"{url}/en",
        "user-agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/127.0.0.0 Safari/537.36",
        "x-secret": "Marinara",
    }
    data = {"question": prompt}
    return "POST", f"{url}{api_endpoint}", tuple(headers.items()), json.dumps(data).encode()


def sent(request: Request) -> tuple[str, str, tuple[tuple[str, str], ...], bytes]:
    return request.method, request.url, request.headers, request.body


def msg(role: str, content: Any) -> dict[str, Any]:
    return {"role": role, "content": content}


# protocol.md, "Flattening messages into the prompt", the example table.
PROTOCOL_EXAMPLES = [
    pytest.param([msg("user", "Hi")], "Hi", id="one-user-message"),
    pytest.param(
        [
            msg("system", "Be brief"),
            msg("user", "Hi"),
            msg("assistant", "Hello!"),
            msg("user", "2+2?"),
        ],
        "System: Be brief\nUser: Hi\nAssistant: Hello!\nUser: 2+2?\nAssistant:",
        id="conversation",
    ),
    pytest.param(
        [
            msg(
                "user",
                [
                    {"type": "text", "text": "Describe "},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}},
                    {"type": "text", "text": "this"},
                ],
            )
        ],
        "Describe this",
        id="content-parts",
    ),
    pytest.param(
        [msg("user", "a"), msg("assistant", "  "), msg("user", "b")],
        "User: a\nUser: b\nAssistant:",
        id="blank-message-left-out",
    ),
]


@pytest.mark.parametrize(("messages", "prompt"), PROTOCOL_EXAMPLES)
def test_request_is_what_gpt4free_sends(messages: list[dict[str, Any]], prompt: str) -> None:
    request = Settings().build_request(flatten_messages(messages))
    assert sent(request) == gpt4free_request(prompt)


@pytest.mark.parametrize(
    "prompt",
    [
        "Ciao, com'è? 🍕",
        'Quote " backslash \\ tab \t newline \n end',
        "control \x01 \x7f and </script>",
        "  leading and trailing  ",
        "x" * 10_000,
    ],
)
def test_request_body_is_aiohttp_json_for_any_prompt(prompt: str) -> None:
    request = Settings().build_request(prompt)
    assert sent(request) == gpt4free_request(prompt)
    assert request.body.isascii()
    assert json.loads(request.body) == {"question": prompt}


def test_defaults_are_gpt4free_values() -> None:
    assert DEFAULT_BASE_URL == "https://www.pizzagpt.it"
    assert ENDPOINT_PATH == "/api/chatx-completion"
    assert DEFAULT_SECRET == "Marinara"
    assert dict(gpt4free_request("x")[2])["user-agent"] == DEFAULT_USER_AGENT
    assert Settings().url == URL


@pytest.mark.parametrize(
    ("model", "search", "body"),
    [
        (None, None, b'{"question": "Hi"}'),
        ("gpt-4o-mini", None, b'{"question": "Hi", "model": "gpt-4o-mini"}'),
        (None, True, b'{"question": "Hi", "searchEnabled": true}'),
        (None, False, b'{"question": "Hi", "searchEnabled": false}'),
        (
            "gpt-4o-mini",
            True,
            b'{"question": "Hi", "model": "gpt-4o-mini", "searchEnabled": true}',
        ),
        (
            "gpt-4o-mini",
            False,
            b'{"question": "Hi", "model": "gpt-4o-mini", "searchEnabled": false}',
        ),
    ],
)
def test_model_and_search_only_when_asked_and_in_order(
    model: str | None, search: bool | None, body: bytes
) -> None:
    request = Settings().build_request("Hi", model=model, search=search)
    assert request.body == body
    reference = gpt4free_request("Hi")
    assert (request.method, request.url, request.headers) == reference[:3]


@pytest.mark.parametrize(
    ("base_url", "url", "origin"),
    [
        pytest.param(
            "https://www.pizzagpt.it/",
            "https://www.pizzagpt.it/api/chatx-completion",
            "https://www.pizzagpt.it",
            id="trailing-slash",
        ),
        pytest.param(
            "http://127.0.0.1:8080",
            "http://127.0.0.1:8080/api/chatx-completion",
            "http://127.0.0.1:8080",
            id="port",
        ),
        pytest.param(
            "https://proxy.example:8443/pizza",
            "https://proxy.example:8443/pizza/api/chatx-completion",
            "https://proxy.example:8443",
            id="path-prefix",
        ),
        pytest.param(
            "https://proxy.example/a/b/",
            "https://proxy.example/a/b/api/chatx-completion",
            "https://proxy.example",
            id="path-prefix-trailing-slash",
        ),
        pytest.param(
            "http://[::1]:9000",
            "http://[::1]:9000/api/chatx-completion",
            "http://[::1]:9000",
            id="ipv6",
        ),
    ],
)
def test_origin_and_referer_follow_the_base_url(base_url: str, url: str, origin: str) -> None:
    settings = Settings(base_url=base_url)
    request = settings.build_request("Hi")
    assert settings.url == url
    assert request.url == url
    # gpt4free builds both from the class's url: origin is scheme and host, referer adds /en.
    assert request.headers == gpt4free_request("Hi", url=origin)[2]
    assert dict(request.headers)["referer"] == f"{origin}/en"


def test_base_url_at_its_origin_is_exactly_gpt4free() -> None:
    request = Settings(base_url="http://127.0.0.1:8080").build_request("Hi")
    assert sent(request) == gpt4free_request("Hi", url="http://127.0.0.1:8080")


def test_extra_headers_override_case_insensitively_and_keep_their_place() -> None:
    settings = Settings(
        headers={
            "User-Agent": "my-app/1.0",
            "X-Trace": "abc",
            "ACCEPT-LANGUAGE": "it-IT,it;q=0.9",
            "cookie": "cf_clearance=token",
        }
    )
    assert settings.build_request("Hi").headers == (
        ("accept", "application/json"),
        ("accept-language", "it-IT,it;q=0.9"),
        ("content-type", "application/json"),
        ("origin", "https://www.pizzagpt.it"),
        ("referer", "https://www.pizzagpt.it/en"),
        ("user-agent", "my-app/1.0"),
        ("x-secret", "Marinara"),
        ("x-trace", "abc"),
        ("cookie", "cf_clearance=token"),
    )


def test_secret_and_user_agent_are_configurable() -> None:
    settings = Settings(secret="padrone", user_agent="agent/2")
    headers = settings.build_request("Hi").headers
    assert headers[-2:] == (("user-agent", "agent/2"), ("x-secret", "padrone"))
    assert headers[:5] == gpt4free_request("Hi")[2][:5]


def test_an_extra_x_secret_header_wins_over_secret() -> None:
    headers = dict(
        Settings(secret="salame", headers={"X-Secret": "padrone"}).build_request("Hi").headers
    )
    assert headers["x-secret"] == "padrone"


def test_settings_copy_the_headers_they_are_given() -> None:
    extra = {"x-trace": "1"}
    settings = Settings(headers=extra)
    extra["x-trace"] = "changed"
    extra["x-other"] = "2"
    assert dict(settings.build_request("Hi").headers)["x-trace"] == "1"
    assert "x-other" not in dict(settings.build_request("Hi").headers)


def test_settings_and_requests_are_frozen() -> None:
    settings = Settings()
    request = settings.build_request("Hi")
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.secret = "x"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.body = b"x"  # type: ignore[misc]


# (argument, value, what the message says): each the caller's mistake, a ValueError...
BAD_SETTINGS_VALUES = [
    ("base_url", "ftp://www.pizzagpt.it", r"http:// or https://.*got 'ftp://www\.pizzagpt\.it'"),
    ("base_url", "www.pizzagpt.it", r"URL with a host.*got 'www\.pizzagpt\.it'"),
    ("base_url", "https://", r"must be an http:// or https:// URL with a host"),
    ("base_url", "https://:443", r"URL with a host"),
    ("base_url", "http:///path", r"URL with a host"),
    ("base_url", "https://www.pizzagpt.it/?lang=en", r"must not have a query or a fragment"),
    ("base_url", "https://www.pizzagpt.it/#chat", r"must not have a query or a fragment"),
    ("base_url", "https://www.pizzagpt.it\r\nx-evil: 1", r"base_url must be printable ASCII"),
    ("base_url", "https://www.pizzagpt.it/\n", r"base_url must be printable ASCII"),
    ("base_url", "https://pizzagpt.ït", r"base_url must be printable ASCII"),
    ("base_url", "", r"base_url is empty"),
    ("base_url", "  ", r"base_url is empty"),
    ("secret", "", r"secret is empty"),
    ("secret", " \t", r"secret is empty"),
    ("secret", "Mari\nnara", r"secret must be printable ASCII"),
    ("secret", "Mari\rnara", r"secret must be printable ASCII"),
    ("secret", "Mari\x00nara", r"secret must be printable ASCII"),
    ("secret", "Marinarà", r"secret must be printable ASCII"),
    ("user_agent", "", r"user_agent is empty"),
    ("user_agent", "ua\r\n", r"user_agent must be printable ASCII"),
    ("user_agent", "ü", r"user_agent must be printable ASCII"),
    ("headers", {"": "1"}, r"a header name in headers is empty"),
    ("headers", {"x-a\r\nx-b": "1"}, r"a header name in headers must be printable ASCII"),
    ("headers", {"x-ä": "1"}, r"a header name in headers must be printable ASCII"),
    ("headers", {"x-a": ""}, r"header 'x-a' is empty"),
    ("headers", {"x-a": "1\r\nx-b: 2"}, r"header 'x-a' must be printable ASCII"),
    ("headers", {"x-a": "\x00"}, r"header 'x-a' must be printable ASCII"),
    ("headers", {"x-a": "café"}, r"header 'x-a' must be printable ASCII"),
    ("secret", "Mari\x01nara", r"secret must be printable ASCII"),  # any control character
    ("secret", "Mari\x7fnara", r"secret must be printable ASCII"),
    ("headers", {"x a": "1"}, r"headers: 'x a' is not a header name .*no space or colon"),
    ("headers", {"x:a": "1"}, r"headers: 'x:a' is not a header name"),
    ("headers", {"Content-Length": "5"}, r"headers: 'Content-Length' is the HTTP library's"),
    ("headers", {"transfer-encoding": "chunked"}, r"headers: 'transfer-encoding' is the HTTP"),
]
# ...or a TypeError.
BAD_SETTINGS_TYPES = [
    ("base_url", None, r"base_url must be a string, not NoneType"),
    ("base_url", b"https://www.pizzagpt.it", r"base_url must be a string, not bytes"),
    ("secret", None, r"secret must be a string, not NoneType"),
    ("secret", 42, r"secret must be a string, not int"),
    ("secret", b"Marinara", r"secret must be a string, not bytes"),
    ("user_agent", 1.0, r"user_agent must be a string, not float"),
    ("headers", [("x-a", "1")], r"headers must be a mapping, not list"),
    ("headers", None, r"headers must be a mapping, not NoneType"),
    ("headers", {1: "x"}, r"a header name in headers must be a string, not int"),
    ("headers", {b"x-a": "1"}, r"a header name in headers must be a string, not bytes"),
    ("headers", {"x-a": 1}, r"header 'x-a' must be a string, not int"),
    ("headers", {"x-a": None}, r"header 'x-a' must be a string, not NoneType"),
]


@pytest.mark.parametrize(
    ("name", "value", "error", "pattern"),
    [(name, value, InvalidValueError, pattern) for name, value, pattern in BAD_SETTINGS_VALUES]
    + [(name, value, InvalidTypeError, pattern) for name, value, pattern in BAD_SETTINGS_TYPES],
)
def test_settings_validation(
    name: str, value: object, error: type[PizzaGPTError], pattern: str
) -> None:
    with pytest.raises(error, match=pattern) as info:
        Settings(**{name: value})  # type: ignore[arg-type]
    builtin: type[Exception] = ValueError if error is InvalidValueError else TypeError
    assert type(info.value) is error
    assert isinstance(info.value, builtin)
    if name == "secret" and isinstance(value, str) and value.strip():
        assert value not in str(info.value)  # a bad secret is not echoed


@pytest.mark.parametrize(
    ("kwargs", "error", "pattern"),
    [
        ({"prompt": None}, InvalidTypeError, r"prompt must be a string, not NoneType"),
        ({"prompt": b"Hi"}, InvalidTypeError, r"prompt must be a string, not bytes"),
        ({"prompt": ""}, InvalidValueError, r"the prompt is empty"),
        ({"prompt": " \n"}, InvalidValueError, r"the prompt is empty or only white space"),
        ({"prompt": "Hi", "model": 4}, InvalidTypeError, r"model must be a string, not int"),
        ({"prompt": "Hi", "model": ""}, InvalidValueError, r"model is empty"),
        ({"prompt": "Hi", "model": "  "}, InvalidValueError, r"model is empty"),
        ({"prompt": "Hi", "search": "yes"}, InvalidTypeError, r"True, False or None, not 'yes'"),
        ({"prompt": "Hi", "search": 1}, InvalidTypeError, r"search must be True, False or None"),
        ({"prompt": "Hi", "search": 0}, InvalidTypeError, r"search must be .*, not 0"),
    ],
)
def test_build_request_validation(
    kwargs: dict[str, Any], error: type[PizzaGPTError], pattern: str
) -> None:
    with pytest.raises(error, match=pattern) as info:
        Settings().build_request(**kwargs)
    builtin: type[Exception] = ValueError if error is InvalidValueError else TypeError
    assert type(info.value) is error
    assert isinstance(info.value, builtin)


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param(Settings(), id="default-secret"),
        pytest.param(Settings(secret="S3cretSauce"), id="custom-secret"),
        pytest.param(
            Settings(secret="S3cretSauce", base_url="http://127.0.0.1:8080"), id="custom-base"
        ),
    ],
)
def test_the_secret_is_not_in_any_repr(settings: Settings) -> None:
    request = settings.build_request("Hi", model="gpt-4o-mini", search=True)
    assert dict(request.headers)["x-secret"] == settings.secret  # it is sent...
    assert settings.secret not in repr(settings)  # ...but never shown
    assert settings.secret not in repr(request)


def test_a_secret_given_as_an_extra_header_is_not_in_any_repr() -> None:
    settings = Settings(headers={"X-Secret": "S3cretSauce"})
    request = settings.build_request("Hi")
    assert dict(request.headers)["x-secret"] == "S3cretSauce"
    assert "S3cretSauce" not in repr(settings)
    assert "S3cretSauce" not in repr(request)


# ---------------------------------------------------------------------------------------------
# Retry-After
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "delay"),
    [
        pytest.param("0", 0.0, id="zero"),
        pytest.param("7", 7.0, id="seconds"),
        pytest.param(" 120 ", 120.0, id="seconds-padded"),
        pytest.param("86400", 86400.0, id="a-day"),
        pytest.param(formatdate(NOW + 30, usegmt=True), 30.0, id="date-future"),
        pytest.param("Tue, 14 Nov 2023 22:13:50 GMT", 30.0, id="imf-fixdate"),
        pytest.param("Tue, 14 Nov 2023 23:13:50 +0100", 30.0, id="numeric-zone"),
        pytest.param("Tuesday, 14-Nov-23 22:13:50 GMT", 30.0, id="rfc850-date"),
        # RFC 9110, 5.6.7: a recipient MUST accept all three HTTP-date formats, asctime included.
        pytest.param("Tue Nov 14 22:13:50 2023", 30.0, id="asctime-date"),
        pytest.param(formatdate(NOW, usegmt=True), 0.0, id="date-now"),
        pytest.param(formatdate(NOW - 30, usegmt=True), 0.0, id="date-past"),
        pytest.param("Sun, 06 Nov 1994 08:49:37 GMT", 0.0, id="date-long-past"),
    ],
)
def test_parse_retry_after(value: str, delay: float) -> None:
    assert parse_retry_after(value, NOW) == delay


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "soon",
        "-5",
        "+5",
        "1.5",
        "5s",
        "1e3",
        "Mon, 99 Foo 2024 00:00:00 GMT",
        "Tue, 14 Nov 2023 25:61:00 GMT",
        # Header values are decoded as Latin-1: byte 0xB2 is "²", which str.isdigit() accepts.
        "\xb2",
        "1\xb9",
    ],
)
def test_parse_retry_after_garbage_is_none(value: str | None) -> None:
    assert parse_retry_after(value, NOW) is None


# ---------------------------------------------------------------------------------------------
# The response
# ---------------------------------------------------------------------------------------------

JSON = (("content-type", "application/json"),)
HTML = (("content-type", "text/html; charset=utf-8"),)

Feeder = Callable[[bytes], Iterator[bytes]]


def whole(body: bytes) -> Iterator[bytes]:
    yield body


def bytewise(body: bytes) -> Iterator[bytes]:
    for index in range(len(body)):
        yield body[index : index + 1]


def random_chunks(body: bytes) -> Iterator[bytes]:
    rng = random.Random(len(body))  # deterministic, different for every body
    index = 0
    while index < len(body):
        size = rng.randint(1, 97)
        yield body[index : index + size]
        index += size


@pytest.fixture(params=[whole, bytewise, random_chunks], ids=["whole", "bytewise", "random"])
def feed(request: pytest.FixtureRequest) -> Feeder:
    """How the body is fed to the reader: all at once, a byte at a time, or in random chunks."""
    feeder: Feeder = request.param
    return feeder


@dataclass(frozen=True)
class Raised:
    """The error a case must raise."""

    error: type[PizzaGPTError]
    match: str
    body: str | None = None  #: the `.body` excerpt, when not simply the whole body
    retry_after: float | None = None


@dataclass(frozen=True)
class Case:
    body: bytes
    expected: list[Event] | Raised
    status: int = 200
    headers: tuple[tuple[str, str], ...] = JSON
    max_bytes: int = DEFAULT_MAX_RESPONSE_BYTES


def read(feeder: Feeder, case: Case) -> list[Event] | PizzaGPTError:
    """Read `case`'s response with `feeder`: its events, or the error it amounts to."""
    try:
        reader = ResponseReader(
            url=URL,
            status_code=case.status,
            headers=case.headers,
            max_bytes=case.max_bytes,
            now=NOW,
        )
        events: list[Event] = []
        for chunk in feeder(case.body):
            events += reader.feed(chunk)
        return events + reader.end()
    except PizzaGPTError as error:
        return error


def describe(result: list[Event] | PizzaGPTError) -> object:
    """Everything observable about a result, to compare results exactly."""
    if isinstance(result, list):
        return result
    return type(result), str(result), sorted(vars(result).items())


def doc(value: object) -> bytes:
    return json.dumps(value).encode()


MISUSE = "Misuse detected. please get in touch, we can come up with a solution for your use case."
TITLED_PAGE = (
    b"<!DOCTYPE html>\n<html lang='en'><head>\n<title>Just a moment...</title>\n"
    b"<meta charset='utf-8'></head><body>Checking your browser</body></html>"
)
LONG_TEXT = b"word " * 400

SUCCESS_CASES = [
    pytest.param(
        Case(
            doc({"content": "Ciao! Come posso aiutarti?", "refusal": None}),
            ["Ciao! Come posso aiutarti?", FinishReason("stop")],
        ),
        id="current-shape",
    ),
    pytest.param(
        Case(
            doc(
                {
                    "role": "assistant",
                    "content": "Hi",
                    "refusal": None,
                    "annotations": [],
                    "audio": None,
                    "function_call": {"x": 1},
                }
            ),
            ["Hi", FinishReason("stop")],
        ),
        id="unknown-fields-ignored",
    ),
    pytest.param(
        Case(
            doc(
                {
                    "content": "Answer",
                    "refusal": None,
                    "citations": ["https://a.example/1", "https://b.example/2"],
                }
            ),
            [
                "Answer",
                FinishReason("stop", citations=("https://a.example/1", "https://b.example/2")),
            ],
        ),
        id="citations",
    ),
    pytest.param(
        Case(doc({"content": "Answer", "citations": None}), ["Answer", FinishReason("stop")]),
        id="citations-null",
    ),
    pytest.param(
        Case(doc({"content": "Answer", "citations": []}), ["Answer", FinishReason("stop")]),
        id="citations-empty",
    ),
    pytest.param(
        Case(
            doc(
                {
                    "answer": {"role": "assistant", "content": "Hi", "refusal": None},
                    "description": None,
                }
            ),
            ["Hi", FinishReason("stop")],
        ),
        id="older-shape",
    ),
    pytest.param(
        Case(
            doc(
                {
                    "answer": {"content": "Hi", "citations": ["https://c.example"]},
                    "description": "ok",
                    "extra": True,
                }
            ),
            ["Hi", FinishReason("stop", citations=("https://c.example",))],
        ),
        id="older-shape-citations",
    ),
    pytest.param(
        Case(
            doc({"content": "top", "answer": {"content": "nested"}}),
            ["nested", FinishReason("stop")],
        ),
        id="answer-object-wins",
    ),
    pytest.param(
        Case(doc({"answer": None, "content": "top"}), ["top", FinishReason("stop")]),
        id="answer-null-top-level",
    ),
    pytest.param(
        Case(
            doc({"content": None, "refusal": "I can't help with that."}),
            [FinishReason("refusal", refusal="I can't help with that.")],
        ),
        id="refusal",
    ),
    pytest.param(
        Case(doc({"content": "", "refusal": "No."}), [FinishReason("refusal", refusal="No.")]),
        id="refusal-empty-content",
    ),
    pytest.param(
        Case(doc({"content": " \n", "refusal": "No."}), [FinishReason("refusal", refusal="No.")]),
        id="refusal-blank-content",
    ),
    pytest.param(
        Case(
            doc({"refusal": "No.", "citations": ["https://d.example"]}),
            [FinishReason("refusal", citations=("https://d.example",), refusal="No.")],
        ),
        id="refusal-no-content-key",
    ),
    pytest.param(
        Case(
            doc({"content": "Sorry.", "refusal": "No."}),
            ["Sorry.", FinishReason("refusal", refusal="No.")],
        ),
        id="refusal-with-content",
    ),
    pytest.param(
        Case(
            doc({"answer": {"content": None, "refusal": "No."}}),
            [FinishReason("refusal", refusal="No.")],
        ),
        id="refusal-older-shape",
    ),
    pytest.param(
        Case(
            json.dumps({"content": "Ciao, com'è? 🍕 àèìòù"}, ensure_ascii=False).encode(),
            ["Ciao, com'è? 🍕 àèìòù", FinishReason("stop")],
        ),
        id="utf8",
    ),
    pytest.param(
        Case(doc({"content": "Ciao, com'è? 🍕"}), ["Ciao, com'è? 🍕", FinishReason("stop")]),
        id="escaped-unicode",
    ),
    pytest.param(
        Case(doc({"content": "  spaced\n"}), ["  spaced\n", FinishReason("stop")]),
        id="content-as-is",
    ),
    pytest.param(
        Case(
            doc({"content": "You could say misuse detected. please get in touch"}),
            ["You could say misuse detected. please get in touch", FinishReason("stop")],
        ),
        id="misuse-words-not-at-start",
    ),
    pytest.param(
        Case(b' \r\n{"content": "x"}\n', ["x", FinishReason("stop")]), id="json-whitespace"
    ),
    pytest.param(
        Case(doc({"content": "201"}), ["201", FinishReason("stop")], status=201), id="status-201"
    ),
    pytest.param(
        Case(doc({"content": "x"}), ["x", FinishReason("stop")], headers=()),
        id="no-content-type",
    ),
    pytest.param(
        Case(
            doc({"content": "x"}),
            ["x", FinishReason("stop")],
            headers=(("Retry-After", "5"), ("Content-Length", "16")),
        ),
        id="headers-any-case",
    ),
    pytest.param(
        Case(
            doc({"content": "x" * 100}),
            ["x" * 100, FinishReason("stop")],
            max_bytes=len(doc({"content": "x" * 100})),
            headers=(("content-length", str(len(doc({"content": "x" * 100})))),),
        ),
        id="exactly-max-bytes",
    ),
    pytest.param(
        Case(
            doc({"content": "x"}),
            ["x", FinishReason("stop")],
            headers=(("content-length", "lots"),),
        ),
        id="content-length-garbage-ignored",
    ),
]


def misuse(content: str) -> Raised:
    return Raised(MisuseDetectedError, re.escape(f"misuse: {content!r}"))


NEITHER = r"HTTP 200 with an answer with neither content nor refusal: "
SHAPE = r"JSON of an unexpected shape \(content and refusal must be strings or null, citations"
SECRET = (
    r"PizzaGPT rejected the request \(.*\): the secret is the likely cause; set the current one"
)

ERROR_CASES = [
    # Misuse detection: HTTP 200, matched at the start, case-insensitively.
    pytest.param(Case(doc({"content": MISUSE}), misuse(MISUSE)), id="misuse"),
    pytest.param(Case(doc({"content": MISUSE.upper()}), misuse(MISUSE.upper())), id="misuse-upper"),
    pytest.param(
        Case(
            doc({"content": "  Misuse Detected. Please Get In Touch"}),
            misuse("  Misuse Detected. Please Get In Touch"),
        ),
        id="misuse-title-case-leading-space",
    ),
    pytest.param(
        Case(doc({"answer": {"content": MISUSE, "refusal": None}}), misuse(MISUSE)),
        id="misuse-older-shape",
    ),
    pytest.param(
        Case(doc({"content": "misuse detected", "refusal": "x"}), misuse("misuse detected")),
        id="misuse-with-refusal",
    ),
    # The older servers' rejected secret.
    pytest.param(
        Case(doc({"answer": "Invalid"}), Raised(SecretRejectedError, SECRET)),
        id="secret-answer-invalid",
    ),
    pytest.param(
        Case(
            doc({"answer": "Invalid", "description": "error"}), Raised(SecretRejectedError, SECRET)
        ),
        id="secret-both",
    ),
    pytest.param(
        Case(doc({"description": "error"}), Raised(SecretRejectedError, SECRET)),
        id="secret-description-error",
    ),
    pytest.param(
        Case(doc({"description": "error", "content": "Hi"}), Raised(SecretRejectedError, SECRET)),
        id="secret-description-wins",
    ),
    # Neither content nor refusal: a clear error showing what arrived.
    pytest.param(
        Case(
            doc({"content": None, "refusal": None}),
            Raised(InvalidResponseError, NEITHER + re.escape('{"content": null, "refusal": null}')),
        ),
        id="neither-null",
    ),
    pytest.param(
        Case(
            doc({"content": "", "refusal": None, "role": "assistant"}),
            Raised(InvalidResponseError, NEITHER + re.escape('{"content": "", "refusal": null')),
        ),
        id="neither-empty",
    ),
    pytest.param(
        Case(doc({"content": " \n\t "}), Raised(InvalidResponseError, NEITHER)),
        id="neither-whitespace",
    ),
    pytest.param(
        Case(b"{}", Raised(InvalidResponseError, NEITHER + r"\{\}$")), id="neither-missing"
    ),
    pytest.param(
        Case(doc({"role": "assistant"}), Raised(InvalidResponseError, NEITHER + ".*role")),
        id="neither-only-role",
    ),
    pytest.param(
        Case(doc({"content": "", "refusal": ""}), Raised(InvalidResponseError, NEITHER)),
        id="neither-both-empty",
    ),
    pytest.param(
        Case(
            doc({"answer": {"role": "assistant", "content": None, "refusal": None}}),
            Raised(InvalidResponseError, NEITHER + '.*"answer"'),
        ),
        id="neither-older-shape",
    ),
    pytest.param(
        Case(doc({"answer": {}, "content": "top"}), Raised(InvalidResponseError, NEITHER)),
        id="neither-empty-answer-object",
    ),
    pytest.param(
        Case(doc({"content": "", "refusal": "   "}), Raised(InvalidResponseError, NEITHER)),
        id="neither-whitespace-refusal",
    ),
    # HTML instead of JSON, with the page's title.
    pytest.param(
        Case(
            TITLED_PAGE,
            Raised(
                InvalidResponseError,
                r"HTTP 200 with an HTML page titled 'Just a moment\.\.\.' instead "
                r"of JSON: a Cloudflare challenge.*: <!DOCTYPE html> <html",
            ),
            headers=HTML,
        ),
        id="html-content-type",
    ),
    pytest.param(
        Case(
            b"\n  <html><head><TITLE lang='it'>  Errore \n interno </TITLE></head></html>",
            Raised(InvalidResponseError, r"an HTML page titled 'Errore interno' instead of JSON"),
            headers=(),
        ),
        id="html-starts-with-lt",
    ),
    pytest.param(
        Case(
            b"<html><body>no title</body></html>",
            Raised(InvalidResponseError, r"with an HTML page instead of JSON"),
            headers=JSON,
        ),
        id="html-no-title",
    ),
    pytest.param(
        Case(
            b"<html><title> </title></html>",
            Raised(InvalidResponseError, r"with an HTML page instead of JSON"),
            headers=JSON,
        ),
        id="html-blank-title",
    ),
    pytest.param(
        Case(
            b"Just a moment...",
            Raised(InvalidResponseError, r"with an HTML page instead of JSON"),
            headers=(("Content-Type", "TEXT/HTML"),),
        ),
        id="html-content-type-only",
    ),
    # Not JSON.
    pytest.param(
        Case(
            b"Hello", Raised(InvalidResponseError, r"HTTP 200 with a body that is not JSON: Hello$")
        ),
        id="not-json",
    ),
    pytest.param(
        Case(
            b"", Raised(InvalidResponseError, r"a body that is not JSON: \(empty body\)$", body="")
        ),
        id="empty-body",
    ),
    pytest.param(
        Case(
            b"\xff\xfe\x00{",
            Raised(InvalidResponseError, r"a body that is not JSON", body="\ufffd\ufffd\x00{"),
        ),
        id="not-utf8",
    ),
    pytest.param(
        Case(
            b'{"content": "truncat',
            Raised(InvalidResponseError, r"a body that is not JSON: \{\"content\": \"truncat$"),
        ),
        id="truncated-json",
    ),
    # JSON that is not an object.
    pytest.param(
        Case(b"[]", Raised(InvalidResponseError, r"JSON that is not an object: \[\]")), id="array"
    ),
    pytest.param(
        Case(b'[{"content": "Hi"}]', Raised(InvalidResponseError, r"JSON that is not an object")),
        id="array-of-answer",
    ),
    pytest.param(
        Case(b'"Hi"', Raised(InvalidResponseError, r"JSON that is not an object: \"Hi\"")),
        id="string",
    ),
    pytest.param(
        Case(b"null", Raised(InvalidResponseError, r"JSON that is not an object: null")), id="null"
    ),
    pytest.param(
        Case(b"42", Raised(InvalidResponseError, r"JSON that is not an object: 42")), id="number"
    ),
    # Wrong types of fields.
    pytest.param(Case(doc({"content": 42}), Raised(InvalidResponseError, SHAPE)), id="content-int"),
    pytest.param(
        Case(doc({"content": ["a"]}), Raised(InvalidResponseError, SHAPE)), id="content-list"
    ),
    pytest.param(
        Case(doc({"content": "Hi", "refusal": False}), Raised(InvalidResponseError, SHAPE)),
        id="refusal-bool",
    ),
    pytest.param(
        Case(doc({"content": "Hi", "citations": "https://x"}), Raised(InvalidResponseError, SHAPE)),
        id="citations-str",
    ),
    pytest.param(
        Case(doc({"content": "Hi", "citations": {"a": 1}}), Raised(InvalidResponseError, SHAPE)),
        id="citations-dict",
    ),
    pytest.param(
        Case(
            doc({"content": "Hi", "citations": ["https://x", 1]}),
            Raised(InvalidResponseError, SHAPE),
        ),
        id="citation-int",
    ),
    pytest.param(
        Case(doc({"answer": {"content": {"text": "Hi"}}}), Raised(InvalidResponseError, SHAPE)),
        id="nested-content-dict",
    ),
    # Too large.
    pytest.param(
        Case(
            doc({"content": "x" * 3000}),
            Raised(
                InvalidResponseError,
                r"the response is larger than max_response_bytes=2,000 "
                r"\(more than 2,000 bytes arrived\); raise the limit",
                body='{"content": "' + "x" * 286 + "…",
            ),
            max_bytes=2000,
        ),
        id="too-large",
    ),
    pytest.param(
        Case(
            doc({"content": "x" * 3000}),
            Raised(
                InvalidResponseError,
                r"larger than max_response_bytes=2,000 \(it declares 3,015 bytes\)",
                body="",
            ),
            max_bytes=2000,
            headers=(("Content-Length", "3015"),),
        ),
        id="content-length-too-large",
    ),
    # HTTP errors.
    pytest.param(
        Case(
            doc({"statusCode": 400, "message": "Bad question"}),
            Raised(
                APIStatusError,
                r"^PizzaGPT answered HTTP 400 Bad Request to POST "
                + re.escape(URL)
                + r": Bad question$",
            ),
            status=400,
        ),
        id="400-nuxt",
    ),
    pytest.param(
        Case(
            doc({"statusCode": 401, "statusMessage": "Unauthorized"}),
            Raised(
                APIStatusError,
                r"HTTP 401 Unauthorized to POST .*: Unauthorized "
                r"\(check the secret: secret= or PIZZAGPT_SECRET\)$",
            ),
            status=401,
        ),
        id="401-status-message",
    ),
    pytest.param(
        Case(
            TITLED_PAGE,
            Raised(
                APIStatusError,
                r"HTTP 403 Forbidden to POST .*: an HTML page titled 'Just a moment\.\.\.': "
                r"<!DOCTYPE html>.* \(the secret may be wrong, or the site may be showing a "
                r"Cloudflare challenge\)$",
            ),
            status=403,
            headers=HTML,
        ),
        id="403-cloudflare",
    ),
    pytest.param(
        Case(
            b"",
            Raised(APIStatusError, r"HTTP 404 Not Found to POST .*: \(empty body\)$", body=""),
            status=404,
        ),
        id="404-empty",
    ),
    pytest.param(
        Case(
            b"Not here",
            Raised(APIStatusError, r"HTTP 405 Method Not Allowed to POST .*: Not here$"),
            status=405,
        ),
        id="405-text",
    ),
    pytest.param(
        Case(
            doc({"statusCode": 429, "message": "Too many"}),
            Raised(
                RateLimitError,
                r"HTTP 429 Too Many Requests to POST .*: Too many "
                r"\(too many requests: slow down\)$",
                retry_after=7.0,
            ),
            status=429,
            headers=(("Retry-After", "7"),),
        ),
        id="429-retry-after",
    ),
    pytest.param(
        Case(
            b"",
            Raised(RateLimitError, r"HTTP 429", body="", retry_after=30.0),
            status=429,
            headers=(("retry-after", formatdate(NOW + 30, usegmt=True)),),
        ),
        id="429-retry-after-date",
    ),
    pytest.param(
        Case(
            doc({"statusCode": 500, "message": "Server Error", "stack": []}),
            Raised(
                InternalServerError, r"HTTP 500 Internal Server Error to POST .*: Server Error$"
            ),
            status=500,
        ),
        id="500-nuxt",
    ),
    pytest.param(
        Case(
            doc({"statusCode": 500, "message": "  ", "statusMessage": ""}),
            Raised(InternalServerError, r"HTTP 500 .*: \{\"statusCode\": 500, \"message\": \" \","),
            status=500,
        ),
        id="500-nuxt-blank-message",
    ),
    pytest.param(
        Case(
            doc({"statusCode": 500, "message": 42}),
            Raised(InternalServerError, r": \{\"statusCode\": 500, \"message\": 42\}$"),
            status=500,
        ),
        id="500-nuxt-message-not-string",
    ),
    pytest.param(
        Case(
            b'["boom"]',
            Raised(InternalServerError, r'HTTP 502 Bad Gateway to POST .*: \["boom"\]$'),
            status=502,
        ),
        id="502-json-array",
    ),
    pytest.param(
        Case(
            b"upstream\n\n   timed out",
            Raised(InternalServerError, r": upstream timed out$", retry_after=3.0),
            status=503,
            headers=(("content-type", "text/plain"), ("RETRY-AFTER", "3")),
        ),
        id="503-text-retry-after",
    ),
    pytest.param(
        Case(
            LONG_TEXT,
            Raised(
                InternalServerError,
                r"HTTP 504 Gateway Timeout to POST .*: (word ){59}word…$",
                body=("word " * 59) + "word…",
            ),
            status=504,
            headers=(("retry-after", "soon"),),
        ),
        id="504-long-body",
    ),
    pytest.param(
        Case(
            doc({"message": "x " * 400}),
            Raised(InternalServerError, r": (x ){149}x…$", body='{"message": "' + "x " * 143 + "…"),
            status=500,
        ),
        id="500-long-message",
    ),
    pytest.param(
        Case(b"odd", Raised(InternalServerError, r"HTTP 599 +to POST .*: odd$"), status=599),
        id="599-unknown",
    ),
    pytest.param(
        Case(b"odd", Raised(APIStatusError, r"HTTP 499 +to POST .*: odd$"), status=499),
        id="499-unknown",
    ),
    pytest.param(
        Case(
            b"",
            Raised(APIStatusError, r"HTTP 302 Found to POST"),
            status=302,
            headers=(("location", "https://www.pizzagpt.it/en"),),
        ),
        id="302",
    ),
    pytest.param(
        Case(doc({"content": "Hi"}), Raised(APIStatusError, r"HTTP 199 +to POST"), status=199),
        id="1xx",
    ),
    pytest.param(
        Case(
            doc({"content": "Hi"}), Raised(APIStatusError, r"HTTP 300 Multiple Choices"), status=300
        ),
        id="300-with-answer",
    ),
    pytest.param(
        Case(
            b"x" * 50,
            Raised(InternalServerError, r"HTTP 500 Internal Server Error"),
            status=500,
            headers=(("content-length", "5000"),),
            max_bytes=1000,
        ),
        id="error-body-content-length-not-checked",
    ),
    pytest.param(
        # An error body is cut at its excerpt, never refused as "too large": a 5xx is still a
        # 5xx (and retryable) when max_response_bytes is small.
        Case(
            b"x" * 5000,
            Raised(InternalServerError, r"HTTP 503 Service Unavailable", body="x" * 299 + "…"),
            status=503,
            max_bytes=1000,
        ),
        id="error-body-over-max-bytes",
    ),
]

ALL_CASES = SUCCESS_CASES + ERROR_CASES


def check(result: list[Event] | PizzaGPTError, case: Case) -> None:
    expected = case.expected
    if isinstance(expected, list):
        assert result == expected
        return
    assert isinstance(result, PizzaGPTError), f"no error: {result!r}"
    assert type(result) is expected.error, repr(result)
    assert re.search(expected.match, str(result)), str(result)
    assert getattr(result, "url", None) == URL
    assert getattr(result, "status_code", None) == case.status
    body = " ".join(case.body.decode().split()) if expected.body is None else expected.body
    assert getattr(result, "body", None) == body
    if isinstance(result, APIStatusError):
        assert result.retry_after == expected.retry_after
    else:
        assert expected.retry_after is None


@pytest.mark.parametrize("case", SUCCESS_CASES)
def test_reader_success(feed: Feeder, case: Case) -> None:
    check(read(feed, case), case)


@pytest.mark.parametrize("case", ERROR_CASES)
def test_reader_errors(feed: Feeder, case: Case) -> None:
    check(read(feed, case), case)


@pytest.mark.parametrize("case", ALL_CASES)
def test_chunking_never_changes_the_result(feed: Feeder, case: Case) -> None:
    assert describe(read(feed, case)) == describe(read(whole, case))


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16-le", "utf-16-be", "utf-32"])
def test_a_body_in_any_encoding_json_detects_reads_as_json_reads_it(
    feed: Feeder, encoding: str
) -> None:
    # The reader decodes a body as UTF-8 first, and falls back to json.loads(bytes), which
    # detects a BOM and the UTF-16 and UTF-32 encodings: the answer must be the same.
    text = '{"answer": {"content": "Città ✓ 🍕", "refusal": null, "citations": []}}'
    body = text.encode(encoding)
    assert json.loads(body)["answer"]["content"] == "Città ✓ 🍕"
    assert read(feed, Case(body, [])) == ["Città ✓ 🍕", FinishReason("stop")]


def test_a_lone_surrogate_in_the_bytes_reads_as_json_reads_it(feed: Feeder) -> None:
    # Not UTF-8, but json.loads(bytes) takes it ('surrogatepass'), and so does the reader.
    body = b'{"answer": {"content": "a\xed\xa0\x80b", "refusal": null}}'
    assert read(feed, Case(body, [])) == ["a\ud800b", FinishReason("stop")]


@pytest.mark.parametrize(
    "content", [MISUSE, MISUSE.upper(), "MiSuSe DeTeCtEd", "\n misuse detected: go away"]
)
def test_misuse_error_carries_the_content_and_is_a_value_error(feed: Feeder, content: str) -> None:
    case = Case(doc({"content": content, "refusal": None}), [])
    error = read(feed, case)
    assert isinstance(error, MisuseDetectedError)
    assert isinstance(error, ValueError)
    assert error.content == content
    assert "not transient" in str(error)
    assert error.status_code == 200


@pytest.mark.parametrize(
    "body",
    [doc({"answer": "Invalid"}), doc({"answer": "Invalid", "description": "error"})],
)
def test_secret_rejected_names_the_secret_but_not_its_value(feed: Feeder, body: bytes) -> None:
    error = read(feed, Case(body, []))
    assert isinstance(error, SecretRejectedError)
    assert "Invalid" in str(error)  # what arrived
    assert "secret=" in str(error)
    assert "PIZZAGPT_SECRET" in str(error)
    assert DEFAULT_SECRET not in str(error)


def test_content_length_over_the_limit_is_refused_before_any_body() -> None:
    with pytest.raises(InvalidResponseError, match=r"it declares 4,194,305 bytes"):
        ResponseReader(
            url=URL,
            status_code=200,
            headers=[("Content-Length", str(DEFAULT_MAX_RESPONSE_BYTES + 1))],
        )


def test_body_over_the_limit_is_refused_as_soon_as_it_arrives() -> None:
    reader = ResponseReader(url=URL, status_code=200, headers=JSON, max_bytes=10)
    assert reader.feed(b"0123456789") == []
    with pytest.raises(InvalidResponseError, match=r"more than 10 bytes arrived"):
        reader.feed(b"a")


@pytest.mark.parametrize("status", [400, 429, 500, 503])
def test_an_error_body_stops_at_the_excerpt_limit(status: int) -> None:
    # An error body is read 64 KiB far, for its excerpt; feed() raises as soon as that arrived,
    # so the driver need not read the rest.
    reader = ResponseReader(url=URL, status_code=status, headers=(), now=NOW)
    assert reader.feed(b"x" * (64 * 1024 - 1)) == []
    with pytest.raises(APIStatusError, match=rf"HTTP {status}") as info:
        reader.feed(b"x")
    assert info.value.status_code == status
    assert info.value.body == "x" * 299 + "…"


def test_a_success_body_is_not_cut_at_the_excerpt_limit(feed: Feeder) -> None:
    text = "y" * (100 * 1024)
    assert read(feed, Case(doc({"content": text}), [])) == [text, FinishReason("stop")]


def test_an_error_body_is_not_read_past_the_limit(feed: Feeder) -> None:
    # What follows the first 64 KiB of an error body is never read, so it cannot change the error
    # (however the body is chunked).
    body = doc({"statusCode": 500, "message": "Server Error", "stack": "s" * 70_000})
    head = body[: 64 * 1024]
    assert describe(read(feed, Case(body, [], status=500))) == describe(
        read(whole, Case(head, [], status=500))
    )


def test_a_too_large_error_does_not_depend_on_chunking(feed: Feeder) -> None:
    # The body excerpt of "too large" must not depend on how far past the limit a chunk reached.
    case = Case(doc({"content": "x" * 300}), [], max_bytes=100)
    error = read(feed, case)
    assert isinstance(error, InvalidResponseError)
    assert "more than 100 bytes arrived" in str(error)
    assert describe(error) == describe(read(bytewise, case))


@pytest.mark.parametrize("status", [200, 500])
def test_deeply_nested_json_is_read_as_an_error_not_a_crash(feed: Feeder, status: int) -> None:
    # json.loads raises RecursionError (not a ValueError) past ~1,000 levels of nesting; a
    # broken or hostile server must still produce the SDK's error, not a RecursionError.
    case = Case(b"[" * 50_000, [], status=status)
    expected = InvalidResponseError if status == 200 else InternalServerError
    error = read(feed, case)
    assert type(error) is expected
    assert isinstance(error, PizzaGPTError)
    assert error.body == "[" * 299 + "…"


@pytest.mark.parametrize(
    ("status", "header"),
    ids=["content-length", "retry-after", "retry-after-mixed"],
    argvalues=[
        (200, ("Content-Length", "\xb2")),
        (503, ("Retry-After", "\xb2")),
        (429, ("Retry-After", "1\xb9")),
    ],
)
def test_latin1_digits_in_headers_are_not_a_crash(status: int, header: tuple[str, str]) -> None:
    # HTTP libraries decode header bytes as Latin-1; "\xb2" ("²") passes str.isdigit() but not
    # int() or float(). The header must be ignored (as garbage), not raise a bare ValueError.
    case = Case(
        doc({"content": "x"}) if status == 200 else b"busy", [], status=status, headers=(header,)
    )
    result = read(whole, case)
    if status == 200:
        assert result == ["x", FinishReason("stop")]
    else:
        assert isinstance(result, APIStatusError)
        assert result.retry_after is None


def test_reader_ok_property() -> None:
    def ok(status: int) -> bool:
        return ResponseReader(url=URL, status_code=status, headers=()).ok

    assert [ok(status) for status in (199, 200, 204, 299, 300, 404, 500)] == [
        False,
        True,
        True,
        True,
        False,
        False,
        False,
    ]


def test_reader_errors_have_no_context_chained() -> None:
    error = read(whole, Case(b"<html>", []))
    assert isinstance(error, InvalidResponseError)
    assert error.__cause__ is None
    assert error.__suppress_context__


# Hostile values that once escaped the error tree (issue 12)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Mon, 01 Jan 99999999999 00:00:00 GMT", None),  # OverflowError in the date's parser
        ("Mon, 01 Jan 10000 00:00:00 GMT", None),
        ("9" * 400, float("inf")),  # longer than any cap: not waited for
    ],
)
def test_a_retry_after_out_of_any_range_is_read_without_raising(
    value: str, expected: float | None
) -> None:
    assert parse_retry_after(value, now=0.0) == expected


def test_a_content_length_of_thousands_of_digits_is_too_large_not_a_crash() -> None:
    with pytest.raises(InvalidResponseError, match="5000-digit length"):
        ResponseReader(
            url="https://x.test/", status_code=200, headers=[("content-length", "9" * 5000)],
            max_bytes=1024, now=0.0,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("status", "error"), [(599, "InternalServerError"), (999, "APIStatusError")]
)
def test_only_5xx_statuses_are_server_errors(status: int, error: str) -> None:
    reader = ResponseReader(
        url="https://x.test/", status_code=status, headers=[], max_bytes=1024, now=0.0
    )
    reader.feed(b"{}")
    with pytest.raises(APIStatusError) as caught:
        reader.end()
    assert type(caught.value).__name__ == error
    assert is_retryable(caught.value) is (status < 600)


ERRORS = [
    InvalidValueError("bad"),
    ClientClosedError("closed"),
    APIConnectionError("down", url="https://x.test/"),
    APITimeoutError("slow", url="https://x.test/"),
    APIStatusError("no", url="https://x.test/", status_code=418, body="tea", retry_after=2.0),
    RateLimitError("wait", url="https://x.test/", status_code=429, body="", retry_after=None),
    InternalServerError("oops", url="https://x.test/", status_code=503, body="down"),
    InvalidResponseError("html", url="https://x.test/", status_code=200, body="<html>"),
    SecretRejectedError("secret", url="https://x.test/", status_code=200, body="Invalid"),
    MisuseDetectedError("misuse", url="https://x.test/", status_code=200, body="", content="M"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda error: type(error).__name__)
def test_every_error_pickles_and_copies_with_its_attributes(error: PizzaGPTError) -> None:
    import copy
    import pickle

    for clone in (pickle.loads(pickle.dumps(error)), copy.copy(error), copy.deepcopy(error)):
        assert type(clone) is type(error)
        assert (clone.args, vars(clone)) == (error.args, vars(error))
        assert str(clone) == str(error)
