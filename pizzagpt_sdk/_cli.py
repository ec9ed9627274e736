"""The `pizzagpt` command: ask PizzaGPT one question, or hold a conversation, from a terminal.

`main()` is both the console script and `python -m pizzagpt_sdk`. An error becomes one line on
stderr, saying what happened and what to do, and an exit code per error class (`_OUTCOMES`, which
`--help` lists); `--debug` adds the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any, NamedTuple

from ._client import Client, Stream
from ._config import DEFAULT_TIMEOUT, CallOptions
from ._exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    InvalidResponseError,
    InvalidValueError,
    MisuseDetectedError,
    PizzaGPTError,
    RateLimitError,
    SecretRejectedError,
    UsageError,
)
from ._models import Answer, FinishReason
from ._progress import ProgressBar
from ._prompt import Message, Messages
from ._retry import DEFAULT_MAX_RETRIES
from ._version import __version__
from .serve import _cli as _serve

__all__ = ["main"]


class _Outcome(NamedTuple):
    error: type[PizzaGPTError]
    code: int
    meaning: str
    hint: str


# Checked in order, so each subclass comes before its base: APITimeoutError is an
# APIConnectionError, RateLimitError an APIStatusError, and every one a PizzaGPTError.
_OUTCOMES = (
    _Outcome(UsageError, 2, "usage error: bad options, or an empty question", ""),
    _Outcome(
        APITimeoutError,
        4,
        "timed out waiting for the service",
        "the service may be slow: raise --timeout, or try again later",
    ),
    _Outcome(
        APIConnectionError,
        3,
        "could not reach the service",
        "check your network and --base-url, or try --offline",
    ),
    _Outcome(RateLimitError, 6, "rate limited (HTTP 429)", "wait a minute before asking again"),
    _Outcome(
        APIStatusError,
        5,
        "the service answered with an HTTP error status",
        "try again later; if it persists, check --base-url and --secret",
    ),
    _Outcome(
        InvalidResponseError,
        7,
        "an answer that cannot be read (HTML, not JSON, empty)",
        "try again later; --debug shows the details",
    ),
    _Outcome(
        SecretRejectedError, 8, "the service rejected the secret", "on the command line: --secret"
    ),
    # Its message already says what to do (slow down), and that retrying makes it worse.
    _Outcome(MisuseDetectedError, 9, "the service flagged the traffic as misuse", ""),
    _Outcome(PizzaGPTError, 1, "any other PizzaGPT error", "--debug shows the details"),
)
_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a process killed by Ctrl-C
_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports `yes | head`

_DESCRIPTION = """\
Ask PizzaGPT (www.pizzagpt.it, gpt-4o-mini) and stream its answer to stdout.

  pizzagpt "Why is the sky blue?"   ask one question
  echo "Why?" | pizzagpt            read the question from stdin (so does: pizzagpt -)
  pizzagpt chat                     a conversation, one line a turn; Ctrl-D or Ctrl-C leaves
  pizzagpt batch prompts.txt        many prompts, one a line (or JSON lines of messages);
                                    JSON lines out, in input order, progress on stderr
  pizzagpt -- chat                  ask the word "chat" itself
  pizzagpt --offline "Hi"           ask the built-in fake on 127.0.0.1: no network needed
  pizzagpt serve                    an OpenAI-compatible API on 127.0.0.1:8000/v1

A refusal is the model's answer, not an error: it is printed as "[refusal] ..." and the exit
code is 0 (--json shows it as "finish_reason": "refusal")."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `pizzagpt` command.

    Args:
        argv: The arguments, without the program's name. Default: `sys.argv[1:]`.

    Returns:
        The exit code: 0 on success, else the code `--help` lists for what went wrong.

    Raises:
        SystemExit: argparse's own exits: `--help` and `--version` (0), a usage error (2).
    """
    arguments = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args = parser.parse_args(arguments)
    if args.question == "serve" and "--" not in arguments:
        return _serve.run(args)  # the OpenAI-compatible server: pizzagpt_sdk/serve
    # `chat` and `batch` are modes only as the first positional: after `--` they are questions.
    mode = args.question if args.question in ("chat", "batch") and "--" not in arguments else None
    if mode == "chat" and args.json:
        parser.error("--json prints one answer: it does not go with chat")
    if mode == "batch" and args.file is None:
        parser.error("batch needs a FILE: one prompt a line, or - for stdin")
    if mode != "batch" and args.file is not None:
        parser.error(f"unexpected argument {args.file!r}: quote a question of several words")
    try:
        question = None if mode else _read_question(args.question)
        if question is not None and not question:
            parser.error("the question is empty: give it as an argument, or on stdin")
        prompts = _read_prompts(args.file, args.system) if mode == "batch" else []
        with contextlib.ExitStack() as stack:
            client = stack.enter_context(_connect(args, stack))
            options = CallOptions(model=args.model, search=args.search or None)
            if mode == "chat":
                return _chat(client, options, system=args.system, debug=args.debug)
            if mode == "batch":
                return _batch(client, prompts, options, args)
            assert question is not None
            messages = _with_system(question, args.system)
            if args.json:
                _print_json(client.ask(messages, **options))
            else:
                _print_answer(client.stream(messages, **options))
            sys.stdout.flush()  # here, so a closed pipe is caught below, not at exit
        return 0
    except PizzaGPTError as error:
        return _report(error, debug=args.debug)
    except KeyboardInterrupt:
        if sys.stderr.isatty():
            sys.stderr.write("\n")  # leave the shell's prompt on a line of its own
        return _INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`pizzagpt ... | head`): leave quietly. Point stdout at devnull,
        # so the interpreter's last flush does not complain (Python docs, "Note on SIGPIPE").
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return _BROKEN_PIPE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pizzagpt",
        usage="%(prog)s [options] [QUESTION | -]\n       %(prog)s [options] chat\n"
        "       %(prog)s [options] batch FILE",
        description=_DESCRIPTION,
        epilog=_exit_codes(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "question",
        nargs="?",
        metavar="QUESTION",
        help='the question; "-" or none: read it from stdin; "chat": start a conversation',
    )
    parser.add_argument("file", nargs="?", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--system", metavar="TEXT", help="a system message before the question")
    parser.add_argument(
        "--model", metavar="NAME", help="sent as the model field, e.g. gpt-4o-mini (default: none)"
    )
    parser.add_argument(
        "--search", action="store_true", help="turn on web search; print the sources it cites"
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help='print one JSON object {"text", "finish_reason", "citations", "refusal"} '
        "instead of streaming (not with chat)",
    )
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    connection = parser.add_argument_group("connection")
    where = connection.add_mutually_exclusive_group()
    where.add_argument(
        "--base-url",
        metavar="URL",
        help="the service's URL (default: $PIZZAGPT_BASE_URL, else https://www.pizzagpt.it)",
    )
    where.add_argument(
        "--offline",
        action="store_true",
        help="start the built-in fake PizzaGPT on 127.0.0.1 and ask it (a demo, a smoke test)",
    )
    connection.add_argument(
        "--secret",
        metavar="TEXT",
        help="the x-secret header (default: $PIZZAGPT_SECRET, else the known one)",
    )
    connection.add_argument(
        "--timeout",
        type=_seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help="the longest wait for the service (default: "
        f"{DEFAULT_TIMEOUT.read:g}, {DEFAULT_TIMEOUT.connect:g} to connect)",
    )
    connection.add_argument(
        "--max-retries",
        type=_count,
        default=DEFAULT_MAX_RETRIES,
        metavar="N",
        help="retries after a failed attempt (default: %(default)s)",
    )
    batch = parser.add_argument_group("batch")
    batch.add_argument(
        "--concurrency",
        type=_count,
        default=4,
        metavar="N",
        help="the most prompts in flight at once (default: %(default)s)",
    )
    batch.add_argument(
        "--rate-limit",
        type=_seconds,
        metavar="RPM",
        help="the most requests started per minute (default: no limit)",
    )
    _serve.add_arguments(parser)
    return parser


def _exit_codes() -> str:
    rows = [(0, "the answer was printed (a refusal too), or the chat ended with Ctrl-D")]
    rows += sorted((outcome.code, outcome.meaning) for outcome in _OUTCOMES)
    rows += [
        (_INTERRUPTED, "interrupted (Ctrl-C)"),
        (_BROKEN_PIPE, "stdout was closed early (e.g. piped into head); nothing is printed"),
    ]
    return "exit codes:\n" + "\n".join(f"  {code:>3}  {meaning}" for code, meaning in rows)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a number of seconds above 0, not {text!r}")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number, 0 or more, not {text!r}")
    return value


def _connect(args: argparse.Namespace, stack: contextlib.ExitStack) -> Client:
    settings: dict[str, Any] = {"timeout": args.timeout, "max_retries": args.max_retries}
    if args.secret:
        settings["secret"] = args.secret
    if not args.offline:
        return Client(base_url=args.base_url, **settings)
    # Imported here: only --offline needs the fake and its server.
    from .testing import FakePizzaGPT

    server = stack.enter_context(FakePizzaGPT().serve())
    # The server's own client ignores proxy settings: the demo never leaves 127.0.0.1.
    return server.client(**settings)


def _read_question(question: str | None) -> str:
    if question is not None and question != "-":
        return question.strip()
    if sys.stdin.isatty():
        sys.stderr.write("pizzagpt: type the question, then Ctrl-D (or try: pizzagpt chat)\n")
    return sys.stdin.read().strip()


def _message(role: str, content: str) -> Message:
    return {"role": role, "content": content}


def _with_system(messages: Messages, system: str | None) -> Messages:
    if not system:
        return messages
    turns = [_message("user", messages)] if isinstance(messages, str) else list(messages)
    return [_message("system", system), *turns]


def _read_prompts(path: str, system: str | None) -> list[Messages]:
    """Read a batch: a prompt a line, or a JSON line holding a list of messages (or one)."""
    try:
        if path == "-":
            lines = sys.stdin.read().splitlines()
        else:
            with open(path, encoding="utf-8") as file:
                lines = file.read().splitlines()
    except OSError as error:
        raise InvalidValueError(f"cannot read {path}: {error.strerror}") from None
    prompts: list[Messages] = []
    for line in filter(None, map(str.strip, lines)):
        prompt: Any = line
        if line[0] in "[{":
            with contextlib.suppress(ValueError):  # not JSON after all: a prompt like any other
                prompt = json.loads(line)
        if isinstance(prompt, dict):
            prompt = prompt.get("messages", [prompt])
        prompts.append(_with_system(prompt, system))
    if not prompts:
        raise InvalidValueError(f"{path} holds no prompt: write one a line")
    return prompts


def _batch(client: Client, prompts: list[Messages], options: CallOptions, args: Any) -> int:
    """Answer every prompt; write JSON lines in input order; exit with the first error's code."""
    with ProgressBar(file=sys.stderr, use_tqdm=False) as bar:
        results = client.map(
            prompts,
            concurrency=args.concurrency or 1,
            rate_limit=args.rate_limit,
            return_exceptions=True,
            on_progress=bar,
            **options,
        )
    first_error: PizzaGPTError | None = None
    for index, result in enumerate(results):
        if isinstance(result, PizzaGPTError):
            first_error = first_error or result
            line: dict[str, Any] = {
                "index": index,
                "error": {"type": type(result).__name__, "message": str(result)},
            }
        else:
            line = {"index": index, **_answer_json(result)}
        sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    return 0 if first_error is None else _report(first_error, debug=args.debug)


def _chat(client: Client, options: CallOptions, *, system: str | None, debug: bool) -> int:
    """Hold a conversation on stdin: one line a turn, the whole history sent every time."""
    chat = client.conversation(system=system or None)
    interactive = sys.stdin.isatty()
    while True:
        if interactive:
            sys.stderr.write("you> ")
            sys.stderr.flush()
        line = sys.stdin.readline()
        if not line:  # EOF: Ctrl-D, or the end of piped input
            if interactive:
                sys.stderr.write("\n")
            return 0
        content = line.strip()
        if not content:
            continue
        try:
            # The conversation keeps a turn only once its stream finished: a failed one is as
            # if unasked.
            _print_answer(chat.stream(content, **options))
        except PizzaGPTError as error:
            _report(error, debug=debug)


def _print_answer(stream: Stream) -> None:
    """Write the answer's chunks as they arrive, then a refusal and the sources, if any."""
    out = sys.stdout
    last = ""
    try:
        with stream:
            for event in stream:
                if not isinstance(event, FinishReason):
                    out.write(event)
                    out.flush()
                    last = event
    finally:
        # End the line even when the stream broke halfway, so stderr's message starts afresh.
        if last and not last.endswith("\n"):
            out.write("\n")
    answer = stream.answer
    assert answer is not None  # a stream that ends without raising ends with its FinishReason
    if answer.refusal:
        out.write(f"[refusal] {answer.refusal}\n")
    if answer.citations:
        out.write("\nSources:\n" + "".join(f"{url}\n" for url in answer.citations))
    out.flush()


def _answer_json(answer: Answer) -> dict[str, Any]:
    return {
        "text": answer.text,
        "finish_reason": answer.finish_reason.reason,
        "citations": list(answer.citations),
        "refusal": answer.refusal,
    }


def _print_json(answer: Answer) -> None:
    sys.stdout.write(json.dumps(_answer_json(answer)) + "\n")


def _report(error: PizzaGPTError, *, debug: bool) -> int:
    """Print the error as one line on stderr (after its traceback with --debug); its exit code."""
    outcome = next(outcome for outcome in _OUTCOMES if isinstance(error, outcome.error))
    if debug:
        traceback.print_exception(error)
    message = " ".join(str(error).split()) or type(error).__name__
    hint = f"; {outcome.hint}" if outcome.hint else ""
    sys.stderr.write(f"pizzagpt: {message}{hint}\n")
    sys.stderr.flush()
    return outcome.code
