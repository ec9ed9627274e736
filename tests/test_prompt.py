"""`flatten_messages`: the conversation flattened into PizzaGPT's one prompt.

The rules and examples are protocol.md's "Flattening messages into the prompt", which follows
gpt4free's `format_prompt` (g4f/providers/helper.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import pytest

from pizzagpt_sdk import InvalidTypeError, InvalidValueError, PizzaGPTError
from pizzagpt_sdk._prompt import check_message
from pizzagpt_sdk.core import flatten_messages


def msg(role: str, content: Any) -> dict[str, Any]:
    return {"role": role, "content": content}


IMAGE = {"type": "image_url", "image_url": {"url": "https://example.com/pizza.png"}}

# protocol.md, "Flattening messages into the prompt", the example table, row by row.
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
                [{"type": "text", "text": "Describe "}, IMAGE, {"type": "text", "text": "this"}],
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
def test_protocol_examples(messages: list[dict[str, Any]], prompt: str) -> None:
    assert flatten_messages(messages) == prompt


@pytest.mark.parametrize(
    ("role", "prefix"),
    [
        ("TOOL", "Tool"),
        ("user", "User"),
        ("uSER", "User"),
        ("assistant", "Assistant"),
        ("function_call", "Function_call"),
        ("my role", "My role"),
    ],
)
def test_role_is_capitalized_the_python_way(role: str, prefix: str) -> None:
    # str.capitalize() upper-cases the first character and lower-cases all the rest.
    prompt = flatten_messages([msg(role, "x"), msg("user", "y")])
    assert prompt == f"{prefix}: x\nUser: y\nAssistant:"


@pytest.mark.parametrize(
    ("parts", "text"),
    [
        pytest.param(
            [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], "ab", id="no-sep"
        ),
        pytest.param([{"text": "no "}, {"type": "text", "text": "type"}], "no type", id="untyped"),
        pytest.param([IMAGE, {"type": "text", "text": "only"}, IMAGE], "only", id="image-skipped"),
        pytest.param(
            [{"type": "input_audio", "text": "heard"}, {"type": "text", "text": "said"}],
            "said",
            id="non-text-type-with-text-skipped",
        ),
        pytest.param(
            [{"type": "file", "text": 42}, {"type": "text", "text": "ok"}],
            "ok",
            id="non-text-part-not-inspected",
        ),
        pytest.param(
            [{"type": "text", "text": None}, {"type": "text", "text": "kept"}],
            "kept",
            id="none-text-skipped",
        ),
        pytest.param([{"type": "text"}, {"text": "kept"}], "kept", id="missing-text-skipped"),
        pytest.param([{"type": "text", "text": ""}, {"text": "x"}], "x", id="empty-text"),
        pytest.param(
            ({"type": "text", "text": "tu"}, {"type": "text", "text": "ple"}), "tuple", id="tuple"
        ),
        pytest.param(
            [MappingProxyType({"type": "text", "text": "proxy"})], "proxy", id="mapping-part"
        ),
        pytest.param(
            [{"type": "text", "text": " spaced "}, {"text": "\n"}], " spaced \n", id="not-stripped"
        ),
    ],
)
def test_content_parts(parts: Any, text: str) -> None:
    assert flatten_messages([msg("user", parts)]) == text
    assert (
        flatten_messages([msg("user", parts), msg("user", "?")])
        == f"User: {text}\nUser: ?\nAssistant:"
    )


@pytest.mark.parametrize(
    ("messages", "prompt"),
    [
        pytest.param(
            [msg("user", None), msg("user", "x")], "User: x\nAssistant:", id="none-content-empty"
        ),
        pytest.param(
            [msg("user", []), msg("user", "x")], "User: x\nAssistant:", id="empty-parts-empty"
        ),
        pytest.param(
            [msg("user", [IMAGE]), msg("user", "x")], "User: x\nAssistant:", id="image-only-empty"
        ),
        pytest.param(
            [msg("user", "x"), msg("assistant", "\n\t "), msg("user", "")],
            "User: x\nAssistant:",
            id="blank-strings-left-out",
        ),
        pytest.param(
            [msg("user", " a "), msg("user", "b\n")],
            "User:  a \nUser: b\n\nAssistant:",
            id="text-not-stripped",
        ),
        pytest.param(
            (msg("user", "tuple"), msg("assistant", "ok")),
            "User: tuple\nAssistant: ok\nAssistant:",
            id="messages-as-tuple",
        ),
        pytest.param(
            [MappingProxyType({"role": "user", "content": "m"}), msg("user", "n")],
            "User: m\nUser: n\nAssistant:",
            id="any-mapping",
        ),
        pytest.param(
            [{"role": "user", "content": "x", "name": "bob", "extra": 1}, msg("user", "y")],
            "User: x\nUser: y\nAssistant:",
            id="extra-keys-ignored",
        ),
    ],
)
def test_multiple_messages(messages: Any, prompt: str) -> None:
    assert flatten_messages(messages) == prompt


@pytest.mark.parametrize(
    "messages",
    [
        pytest.param([msg("user", "  Hi there\n")], id="user"),
        pytest.param([msg("system", "  Hi there\n")], id="system"),
        pytest.param([msg("developer", "  Hi there\n")], id="developer"),
        pytest.param([msg("assistant", "  Hi there\n")], id="assistant"),
        pytest.param([msg("user", [{"type": "text", "text": "  Hi there\n"}, IMAGE])], id="parts"),
    ],
)
@pytest.mark.parametrize("include_system", [True, False])
@pytest.mark.parametrize("assistant_suffix", [True, False])
def test_single_message_is_its_bare_text(
    messages: list[dict[str, Any]], include_system: bool, assistant_suffix: bool
) -> None:
    # gpt4free: `if len(messages) <= 1: return to_string(messages[0]["content"])`, before the
    # system messages are dropped, so even a lone system message is sent, as it is.
    prompt = flatten_messages(
        messages, include_system=include_system, assistant_suffix=assistant_suffix
    )
    assert prompt == "  Hi there\n"


def test_single_message_rule_is_judged_before_system_messages_are_dropped() -> None:
    # Two messages, one of them system: the list as given has two, so the multi-message form
    # is used even though only one line is left (gpt4free does the same).
    messages = [msg("system", "Be brief"), msg("user", "Hi")]
    assert flatten_messages(messages, include_system=False) == "User: Hi\nAssistant:"
    assert flatten_messages(messages) == "System: Be brief\nUser: Hi\nAssistant:"


def test_include_system_false_drops_system_and_developer() -> None:
    messages = [
        msg("system", "Be brief"),
        msg("user", "Hi"),
        msg("developer", "Use Italian"),
        msg("assistant", "Ciao!"),
        msg("user", "2+2?"),
    ]
    assert (
        flatten_messages(messages, include_system=False)
        == "User: Hi\nAssistant: Ciao!\nUser: 2+2?\nAssistant:"
    )
    assert flatten_messages(messages) == (
        "System: Be brief\nUser: Hi\nDeveloper: Use Italian\n"
        "Assistant: Ciao!\nUser: 2+2?\nAssistant:"
    )


@pytest.mark.parametrize("include_system", [True, False])
def test_assistant_suffix_false_leaves_the_suffix_out(include_system: bool) -> None:
    messages = [msg("system", "Be brief"), msg("user", "Hi"), msg("assistant", "Once upon")]
    expected = "User: Hi\nAssistant: Once upon"
    if include_system:
        expected = "System: Be brief\n" + expected
    assert (
        flatten_messages(messages, include_system=include_system, assistant_suffix=False)
        == expected
    )
    assert flatten_messages(messages, include_system=include_system) == expected + "\nAssistant:"


@pytest.mark.parametrize(
    "prompt", ["Hi", "  Hi  ", "Line one\nLine two", "System: not a role\nAssistant:", "Ciao 🍕"]
)
@pytest.mark.parametrize("include_system", [True, False])
def test_a_plain_string_is_the_prompt(prompt: str, include_system: bool) -> None:
    assert flatten_messages(prompt, include_system=include_system, assistant_suffix=True) == prompt


ERRORS = [
    # (messages, options, error class, builtin base, message pattern)
    pytest.param([], {}, InvalidValueError, ValueError, r"messages is empty", id="empty-list"),
    pytest.param((), {}, InvalidValueError, ValueError, r"messages is empty", id="empty-tuple"),
    pytest.param(
        [msg("user", "Hi"), "Hello"],
        {},
        InvalidTypeError,
        TypeError,
        r"message 1 must be a mapping .*not str",
        id="message-not-mapping",
    ),
    pytest.param(
        [msg("user", "Hi"), None],
        {},
        InvalidTypeError,
        TypeError,
        r"message 1 must be a mapping .*not NoneType",
        id="message-none",
    ),
    pytest.param(
        [{"content": "Hi"}],
        {},
        InvalidTypeError,
        TypeError,
        r"message 0 has no 'role'",
        id="missing-role",
    ),
    pytest.param(
        [msg("user", "Hi"), {"role": None, "content": "Hi"}],
        {},
        InvalidTypeError,
        TypeError,
        r"message 1 has no 'role'",
        id="none-role",
    ),
    pytest.param(
        [{"role": 1, "content": "Hi"}],
        {},
        InvalidTypeError,
        TypeError,
        r"message 0 has a role of type int: the role must be a string",
        id="int-role",
    ),
    pytest.param(
        [{"role": b"user", "content": "Hi"}],
        {},
        InvalidTypeError,
        TypeError,
        r"message 0 has a role of type bytes",
        id="bytes-role",
    ),
    pytest.param(
        [msg("", "Hi")],
        {},
        InvalidValueError,
        ValueError,
        r"message 0 has an empty role",
        id="empty-role",
    ),
    pytest.param(
        [msg("user", "Hi"), msg(" \t", "Hi")],
        {},
        InvalidValueError,
        ValueError,
        r"message 1 has an empty role",
        id="blank-role",
    ),
    pytest.param(
        [{"role": "user", "text": "Hi"}],
        {},
        InvalidValueError,
        ValueError,
        r"message 0 has no 'content' key \(keys: \['role', 'text'\]\)",
        id="missing-content",
    ),
    pytest.param(
        [msg("user", 42)],
        {},
        InvalidTypeError,
        TypeError,
        r"message 0: content must be a string, None or a list of parts, not int",
        id="int-content",
    ),
    pytest.param(
        [msg("user", "ok"), msg("user", {"type": "text", "text": "Hi"})],
        {},
        InvalidTypeError,
        TypeError,
        r"message 1: content must be .*not dict",
        id="dict-content",
    ),
    pytest.param(
        [msg("user", b"Hi")],
        {},
        InvalidTypeError,
        TypeError,
        r"message 0: content must be .*not bytes",
        id="bytes-content",
    ),
    pytest.param(
        [msg("user", bytearray(b"Hi"))],
        {},
        InvalidTypeError,
        TypeError,
        r"message 0: content must be .*not bytearray",
        id="bytearray-content",
    ),
    pytest.param(
        [msg("user", 1.5)],
        {},
        InvalidTypeError,
        TypeError,
        r"message 0: content must be .*not float",
        id="float-content",
    ),
    pytest.param(
        [msg("user", [{"type": "text", "text": "a"}, "b"])],
        {},
        InvalidTypeError,
        TypeError,
        r"message 0, part 1: a content part must be a mapping .*not str",
        id="part-not-mapping",
    ),
    pytest.param(
        [msg("user", "a"), msg("user", [None])],
        {},
        InvalidTypeError,
        TypeError,
        r"message 1, part 0: a content part must be a mapping .*not NoneType",
        id="part-none",
    ),
    pytest.param(
        [msg("user", [{"type": "text", "text": 42}])],
        {},
        InvalidTypeError,
        TypeError,
        r"message 0, part 0: 'text' must be a string, not int",
        id="part-int-text",
    ),
    pytest.param(
        [msg("user", [{"text": "ok"}, {"text": ["nested"]}])],
        {},
        InvalidTypeError,
        TypeError,
        r"message 0, part 1: 'text' must be a string, not list",
        id="part-list-text-untyped",
    ),
    pytest.param("", {}, InvalidValueError, ValueError, r"the prompt is empty", id="empty-prompt"),
    pytest.param(
        " \n\t ",
        {},
        InvalidValueError,
        ValueError,
        r"the prompt is empty or only white space",
        id="blank-prompt",
    ),
    pytest.param(
        [msg("user", "  ")],
        {},
        InvalidValueError,
        ValueError,
        r"the only message's content is empty or only white space",
        id="only-message-blank",
    ),
    pytest.param(
        [msg("user", None)],
        {},
        InvalidValueError,
        ValueError,
        r"the only message's content is empty",
        id="only-message-none",
    ),
    pytest.param(
        [msg("user", [IMAGE])],
        {},
        InvalidValueError,
        ValueError,
        r"the only message's content is empty",
        id="only-message-image",
    ),
    pytest.param(
        [msg("user", ""), msg("assistant", " "), msg("system", None)],
        {},
        InvalidValueError,
        ValueError,
        r"the prompt is empty: there is no text in any message",
        id="all-blank",
    ),
    pytest.param(
        [msg("system", "Be brief"), msg("developer", "Be kind")],
        {"include_system": False},
        InvalidValueError,
        ValueError,
        r"there is no text left after system messages were dropped",
        id="only-system-dropped",
    ),
    pytest.param(
        [msg("system", "Be brief"), msg("user", " ")],
        {"include_system": False},
        InvalidValueError,
        ValueError,
        r"there is no text left after system messages were dropped",
        id="system-and-blank-dropped",
    ),
    pytest.param(
        msg("user", "Hi"),
        {},
        InvalidTypeError,
        TypeError,
        r"not dict \(wrap a single message in a list\)",
        id="dict",
    ),
    pytest.param(
        MappingProxyType(msg("user", "Hi")),
        {},
        InvalidTypeError,
        TypeError,
        r"not mappingproxy \(wrap a single message in a list\)",
        id="mapping",
    ),
    pytest.param(
        b"Hi",
        {},
        InvalidTypeError,
        TypeError,
        r"messages must be a string or a sequence of message mappings, not bytes$",
        id="bytes",
    ),
    pytest.param(
        bytearray(b"Hi"),
        {},
        InvalidTypeError,
        TypeError,
        r"messages must be .*, not bytearray$",
        id="bytearray",
    ),
    pytest.param(42, {}, InvalidTypeError, TypeError, r"messages must be .*, not int$", id="int"),
    pytest.param(
        None, {}, InvalidTypeError, TypeError, r"messages must be .*, not NoneType$", id="none"
    ),
    pytest.param(
        {"user"},
        {},
        InvalidTypeError,
        TypeError,
        r"messages must be .*, not set$",
        id="set",
    ),
]


@pytest.mark.parametrize(("messages", "options", "error", "builtin", "pattern"), ERRORS)
def test_errors(
    messages: Any,
    options: dict[str, bool],
    error: type[PizzaGPTError],
    builtin: type[Exception],
    pattern: str,
) -> None:
    with pytest.raises(error, match=pattern) as info:
        flatten_messages(messages, **options)
    assert type(info.value) is error
    assert isinstance(info.value, PizzaGPTError)
    assert isinstance(info.value, builtin)


def test_an_iterator_of_messages_is_refused() -> None:
    def messages() -> Iterator[dict[str, Any]]:
        yield msg("user", "Hi")

    with pytest.raises(InvalidTypeError, match=r"not generator"):
        flatten_messages(messages())  # type: ignore[arg-type]


def test_errors_are_raised_before_blank_messages_are_skipped() -> None:
    # Everything is validated, even a message that would be left out for being blank.
    with pytest.raises(InvalidTypeError, match=r"message 2: content must be"):
        flatten_messages([msg("user", "a"), msg("user", "b"), msg("user", 7)])
    with pytest.raises(InvalidTypeError, match=r"message 1, part 0: 'text' must be"):
        flatten_messages(
            [msg("system", "s"), msg("system", [{"text": 1}]), msg("user", "u")],
            include_system=False,
        )


@pytest.mark.parametrize(
    ("message", "error", "pattern"),
    [
        ("Hi", InvalidTypeError, r"^message 3 must be a mapping"),
        ({"content": "Hi"}, InvalidTypeError, r"^message 3 has no 'role'"),
        ({"role": " "}, InvalidValueError, r"^message 3 has an empty role"),
        ({"role": "user"}, InvalidValueError, r"^message 3 has no 'content' key"),
        ({"role": "user", "content": 1}, InvalidTypeError, r"^message 3: content must be"),
        ({"role": "user", "content": [{"text": 1}]}, InvalidTypeError, r"^message 3, part 0"),
    ],
)
def test_check_message_validates_one_message_as_flatten_does(
    message: object, error: type[PizzaGPTError], pattern: str
) -> None:
    # History validates each message with check_message, with the same errors as flatten_messages.
    with pytest.raises(error, match=pattern):
        check_message(3, message)
    with pytest.raises(error, match=pattern.replace("3", "1")):
        flatten_messages([msg("user", "ok"), message])  # type: ignore[list-item]


@pytest.mark.parametrize(
    "message", [msg("user", "Hi"), msg("user", None), msg("user", "  "), msg("tool", [IMAGE])]
)
def test_check_message_accepts_what_flatten_accepts(message: dict[str, Any]) -> None:
    check_message(0, message)  # does not raise
