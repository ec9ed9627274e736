"""Property-based tests of the sans-I/O core (hypothesis): what arrives can never break it.

- Any response (status, headers, arbitrary bytes or arbitrary JSON), fed to a `Call` in any
  chunking, ends in events or in one of the SDK's documented response errors; the chunking never
  changes which, nor a word of the message; a success is never a silent empty answer.
- Any message list either flattens into the prompt protocol.md describes (checked against a
  separate model of its rules) or raises the documented validation error.

Runs are bounded and reproducible: a fixed number of examples, derandomized, no example
database.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from typing import Any, TypeAlias

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pizzagpt_sdk import (
    APIStatusError,
    FinishReason,
    InvalidResponseError,
    InvalidTypeError,
    InvalidValueError,
    MisuseDetectedError,
    PizzaGPTError,
    SecretRejectedError,
)
from pizzagpt_sdk._prompt import flatten_messages
from pizzagpt_sdk._protocol import DEFAULT_MAX_RESPONSE_BYTES
from pizzagpt_sdk.core import Call, Done, Receive, Send
from pizzagpt_sdk.core import Settings as CoreSettings

PROPERTY = settings(max_examples=200, deadline=None, derandomize=True, database=None)

REQUEST = CoreSettings(base_url="https://www.pizzagpt.it").build_request("Hi")
NOW = 1_700_000_000.0
# The errors a response can amount to (the Raises of `ResponseReader.end` and `feed`).
RESPONSE_ERRORS = (APIStatusError, InvalidResponseError, SecretRejectedError, MisuseDetectedError)

Outcome: TypeAlias = tuple[Any, ...]


def run(
    status: int, headers: list[tuple[str, str]], chunks: Sequence[bytes], limit: int
) -> Outcome:
    """Drive a `Call` through one response, as the SDK's clients do; what it ends in.

    Returns:
        ("answer", events) or ("error", class, message, attributes).
    """
    call = Call(
        REQUEST,
        clock=lambda: 0.0,
        now=lambda: NOW,
        random=lambda: 0.0,
        max_retries=0,
        deadline=None,
        max_response_bytes=limit,
    )
    events: list[str | FinishReason] = []
    failure: PizzaGPTError | None = None
    try:
        assert isinstance(call.next_action(), Send)
        call.response_received(status, headers)
        for chunk in chunks:
            if not isinstance(call.next_action(), Receive):
                break  # the call gave up on the body early: the driver closes the response
            events += call.data_received(chunk)
        else:
            if isinstance(call.next_action(), Receive):
                events += call.body_ended()
        assert isinstance(call.next_action(), Done)
    except PizzaGPTError as error:  # anything else escapes and fails the test
        failure = error
    if failure is None:
        return ("answer", events)
    assert isinstance(failure, RESPONSE_ERRORS), repr(failure)
    assert events == []  # nothing reaches the caller before a failure
    return ("error", type(failure), str(failure), vars(failure))


def cut(body: bytes, points: list[int]) -> list[bytes]:
    """`body` cut at `points` (empty chunks included, as a transport may yield them)."""
    bounds = [0, *sorted(min(point, len(body)) for point in points), len(body)]
    return [body[start:end] for start, end in itertools.pairwise(bounds)]


def check_answer(outcome: Outcome) -> None:
    """A success holds text chunks then exactly one FinishReason, and is never silently empty."""
    if outcome[0] != "answer":
        return
    events = outcome[1]
    *texts, finish = events
    assert isinstance(finish, FinishReason)
    assert all(isinstance(text, str) and text for text in texts)
    text = "".join(texts)
    assert text.strip() or finish.refusal


JSON_SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
JSON = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
TEXT = st.text(max_size=40) | st.sampled_from(["", "  ", "Ciao!", "Misuse detected. please…"])
# Answers of the shapes protocol.md describes, with every field of any type, to reach past the
# first checks.
MESSAGE = st.fixed_dictionaries(
    {},
    optional={
        "content": TEXT | JSON,
        "refusal": TEXT | JSON,
        "citations": st.lists(TEXT, max_size=3) | JSON,
        "role": st.just("assistant") | JSON,
    },
)
DOCUMENT = (
    MESSAGE
    | st.fixed_dictionaries({"answer": MESSAGE | TEXT | JSON}, optional={"description": JSON})
    | JSON
)
BODY = (
    st.binary(max_size=1024)
    | DOCUMENT.map(lambda document: json.dumps(document).encode())
    | DOCUMENT.map(lambda document: json.dumps(document, ensure_ascii=False).encode())
    | st.sampled_from(
        [
            b"",
            b"<!DOCTYPE html><html><head><title>Just a moment...</title></head></html>",
            b'{"statusCode": 500, "message": "upstream down"}',
            b"[" * 100_000,  # JSON nested beyond Python's stack
            b"\xff\xfe{",
        ]
    )
)
STATUS = (
    st.just(200)
    | st.sampled_from([201, 204, 400, 401, 403, 404, 408, 429, 500, 503, 520])
    | st.integers(100, 599)
)
HEADER_VALUES = {
    "content-type": st.sampled_from(["application/json", "text/html; charset=UTF-8", ""]),
    "content-length": st.integers(0, 2000).map(str) | st.sampled_from(["", "1e9", "²", "-1"]),
    "retry-after": st.integers(0, 120).map(str)
    | st.sampled_from(["Wed, 21 Oct 2015 07:28:00 GMT", "Sun Nov  6 08:49:37 1994", "soon"]),
}
HEADERS = st.fixed_dictionaries(
    {}, optional={name: value | st.text(max_size=20) for name, value in HEADER_VALUES.items()}
).map(lambda headers: [(name.title(), value) for name, value in headers.items()])
LIMIT = st.sampled_from([DEFAULT_MAX_RESPONSE_BYTES, 1, 16, 300])


@PROPERTY
@given(status=STATUS, headers=HEADERS, body=BODY, limit=LIMIT, data=st.data())
@example(status=200, headers=[], body=b'{"content": "Hi"}', limit=16, data=None)
@example(status=500, headers=[], body=b'{"message": "%s"}' % (b"x" * 400), limit=16, data=None)
def test_any_response_in_any_chunking_ends_the_same_documented_way(
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    limit: int,
    data: st.DataObject | None,
) -> None:
    whole = run(status, headers, [body], limit)
    check_answer(whole)
    assert run(status, headers, cut(body, list(range(1, len(body), 97))), limit) == whole
    if data is not None:
        points = data.draw(st.lists(st.integers(0, len(body)), max_size=12), label="cuts")
        assert run(status, headers, cut(body, points), limit) == whole


@PROPERTY
@given(document=DOCUMENT, status=st.sampled_from([200, 201, 299]), data=st.data())
def test_any_json_answer_reads_the_same_in_any_chunking(
    document: Any, status: int, data: st.DataObject
) -> None:
    body = json.dumps(document, ensure_ascii=data.draw(st.booleans(), label="ascii")).encode()
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    whole = run(status, headers, [body], DEFAULT_MAX_RESPONSE_BYTES)
    check_answer(whole)
    single_bytes = [body[index : index + 1] for index in range(len(body))]
    assert run(status, headers, single_bytes, DEFAULT_MAX_RESPONSE_BYTES) == whole
    points = data.draw(st.lists(st.integers(0, len(body)), max_size=12), label="cuts")
    assert run(status, headers, cut(body, points), DEFAULT_MAX_RESPONSE_BYTES) == whole


# Flattening: a model of protocol.md's rules, written apart from the SDK's code.

_SKIP = object()


def model_text(content: object) -> object:
    """A message's text by protocol.md's rule 3, or `_SKIP` when the content is invalid."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if not isinstance(content, (list, tuple)):
        return _SKIP
    texts = []
    for part in content:
        if not isinstance(part, dict):
            return _SKIP
        if part.get("type", "text") != "text" or part.get("text") is None:
            continue
        if not isinstance(part["text"], str):
            return _SKIP
        texts.append(part["text"])
    return "".join(texts)


def model_prompt(messages: object, include_system: bool, assistant_suffix: bool) -> str | None:
    """The prompt protocol.md gives, or `None` where it calls the input the caller's mistake."""
    if isinstance(messages, str):
        return messages if messages.strip() else None
    if not isinstance(messages, (list, tuple)) or not messages:
        return None
    turns = []
    for message in messages:
        if not isinstance(message, dict) or "content" not in message:
            return None
        role, text = message.get("role"), model_text(message["content"])
        if not isinstance(role, str) or not role.strip() or not isinstance(text, str):
            return None
        turns.append((role, text))
    if len(turns) == 1:
        return turns[0][1] if turns[0][1].strip() else None
    lines = [
        f"{role.capitalize()}: {text}"
        for role, text in turns
        if text.strip() and (include_system or role not in ("system", "developer"))
    ]
    if not lines:
        return None
    return "\n".join(lines) + ("\nAssistant:" if assistant_suffix else "")


def either(*strategies: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """One of `strategies`, each as likely (`|` would weigh each of their own branches)."""
    return st.sampled_from(strategies).flatmap(lambda strategy: strategy)


ANY = st.none() | st.booleans() | st.integers() | st.binary(max_size=4) | st.text(max_size=6)
ROLE = st.sampled_from(["user", "assistant", "system", "developer", "TOOL"])
PART = either(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(max_size=8)}),
    st.fixed_dictionaries({"text": st.text(max_size=8) | st.none()}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.just({"url": "x"})}),
    st.fixed_dictionaries({}, optional={"type": ANY, "text": ANY}),
    ANY,
)
CONTENT = either(
    st.text(max_size=12),
    st.sampled_from(["", "  ", "\n", None]),
    st.lists(PART, max_size=3),
    st.dictionaries(st.text(max_size=3), ANY, max_size=2),
    ANY,
)
MESSAGE_LIKE = either(
    st.fixed_dictionaries({"role": ROLE, "content": st.text(max_size=12)}),
    st.fixed_dictionaries({"role": ROLE, "content": CONTENT}),
    st.fixed_dictionaries({"role": ROLE, "content": CONTENT}),
    st.fixed_dictionaries(
        {},
        optional={"role": ROLE | st.sampled_from(["", " "]) | ANY, "content": CONTENT, "name": ANY},
    ),
    ANY | st.lists(ANY, max_size=2),
)
MESSAGES = either(
    st.lists(MESSAGE_LIKE, min_size=1, max_size=5),
    st.lists(MESSAGE_LIKE, min_size=1, max_size=5),
    st.lists(MESSAGE_LIKE, min_size=1, max_size=5).map(tuple),
    st.text(max_size=20) | st.just([]),
    st.dictionaries(st.text(max_size=5), ANY, max_size=2) | ANY,
)


@PROPERTY
@given(messages=MESSAGES, include_system=st.booleans(), assistant_suffix=st.booleans())
@example(messages=[{"role": "user", "content": "Hi"}], include_system=True, assistant_suffix=True)
@example(messages=[{"role": " ", "content": "Hi"}], include_system=True, assistant_suffix=True)
@example(
    messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}],
    include_system=False,
    assistant_suffix=False,
)
@example(
    messages=[{"role": "user", "content": "a"}, {"role": "assistant", "content": "  "}],
    include_system=True,
    assistant_suffix=True,
)
def test_any_messages_flatten_or_raise_the_documented_validation_error(
    messages: Any, include_system: bool, assistant_suffix: bool
) -> None:
    expected = model_prompt(messages, include_system, assistant_suffix)
    options = {"include_system": include_system, "assistant_suffix": assistant_suffix}
    if expected is None:
        with pytest.raises((InvalidTypeError, InvalidValueError), match=r"\w"):
            flatten_messages(messages, **options)
        return
    prompt = flatten_messages(messages, **options)
    assert prompt == expected
    # A prompt that flattens can always be sent: the body carries it exactly.
    request = CoreSettings().build_request(prompt)
    assert json.loads(request.body) == {"question": prompt}


@PROPERTY
@given(
    prompt=st.text(min_size=1).filter(str.strip),
    model=st.none() | st.text(min_size=1).filter(str.strip),
    search=st.none() | st.booleans(),
)
@example(prompt='"\\\n\t\x00\x7f\u2028 è 🍕', model="gpt-4o-mini", search=False)
def test_any_body_is_byte_for_byte_what_json_dumps_gives(
    prompt: str, model: str | None, search: bool | None
) -> None:
    # protocol.md: the body gpt4free's provider sends, json.dumps with its defaults.
    fields: dict[str, Any] = {"question": prompt}
    if model is not None:
        fields["model"] = model
    if search is not None:
        fields["searchEnabled"] = search
    request = CoreSettings().build_request(prompt, model=model, search=search)
    assert request.body == json.dumps(fields).encode()
