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
import signal
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple, TextIO

from ._client import Client, Conversation, Stream
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
from ._prompt import Message, Messages, flatten_messages
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
  pizzagpt fake [--port 8080]       serve the fake PizzaGPT for your own scripts (--help)
  pizzagpt -- chat                  ask the word "chat" itself
  pizzagpt --offline "Hi"           ask the built-in fake, in process: no network needed
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
    if arguments[:1] == ["fake"]:
        return _fake(arguments[1:])
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
        prompts = _read_prompts(args.file, args.system) if mode == "batch" else {}
        with contextlib.ExitStack() as stack:
            client = stack.enter_context(_connect(args))
            options = CallOptions(model=args.model, search=args.search or None)
            if mode == "chat":
                return _chat(
                    client, options, system=args.system, debug=args.debug, history=args.history
                )
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
    parser.add_argument(
        "--history",
        action="store_true",
        help="chat: keep the lines you type in $XDG_DATA_HOME/pizzagpt/chat_history "
        "(default ~/.local/share/...); without it, the arrow keys recall this session's lines",
    )
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
        help="ask the built-in fake PizzaGPT, in process, no network (a demo, a smoke test)",
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
        type=_positive,
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


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number, 1 or more, not {text!r}")
    return value


def _connect(args: argparse.Namespace) -> Client:
    settings: dict[str, Any] = {"timeout": args.timeout, "max_retries": args.max_retries}
    if args.secret:
        settings["secret"] = args.secret
    if not args.offline:
        return Client(base_url=args.base_url, **settings)
    # Imported here: only --offline needs the fake. It answers in process, through its httpx
    # transport: no socket and no server thread, so the demo never leaves the process, and
    # nothing imports httpcore (which imports trio where trio is installed: ~200 ms).
    from .testing import FakePizzaGPT

    return FakePizzaGPT().client(**settings)


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


def _read_prompts(path: str, system: str | None) -> dict[int, Messages]:
    """Read a batch: a prompt a line, or a JSON line holding a list of messages (or one).

    Returns:
        The prompts by their line number in the file (1 for the first line, as editors count):
        blank lines are skipped, and the results name the line they answer.
    """
    try:
        if path == "-":
            lines = sys.stdin.read().splitlines()
        else:
            with open(path, encoding="utf-8") as file:
                lines = file.read().splitlines()
    except OSError as error:
        raise InvalidValueError(f"cannot read {path}: {error.strerror}") from None
    prompts: dict[int, Messages] = {}
    for number, text in enumerate(lines, start=1):
        line = text.strip()
        if not line:
            continue
        prompt: Any = line
        if line[0] in "[{":
            with contextlib.suppress(ValueError):  # not JSON after all: a prompt like any other
                prompt = json.loads(line)
        if isinstance(prompt, dict):
            prompt = prompt.get("messages", [prompt])
        prompts[number] = _with_system(prompt, system)
        try:  # checked here, so that the error names the line (map() would name the position)
            flatten_messages(prompts[number])
        except UsageError as error:
            raise type(error)(f"{path}, line {number}: {error}") from None
    if not prompts:
        raise InvalidValueError(f"{path} holds no prompt: write one a line")
    return prompts


def _batch(client: Client, prompts: dict[int, Messages], options: CallOptions, args: Any) -> int:
    """Answer every prompt; write JSON lines in input order; exit with the first error's code."""
    with ProgressBar(file=sys.stderr, use_tqdm=False) as bar:
        results = client.map(
            list(prompts.values()),
            concurrency=args.concurrency,
            rate_limit=args.rate_limit,
            return_exceptions=True,
            on_progress=bar,
            **options,
        )
    first_error: PizzaGPTError | None = None
    for number, result in zip(prompts, results, strict=True):
        if isinstance(result, PizzaGPTError):
            first_error = first_error or result
            line: dict[str, Any] = {
                "line": number,
                "error": {"type": type(result).__name__, "message": str(result)},
            }
        else:
            line = {"line": number, **_answer_json(result)}
        sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()
    return 0 if first_error is None else _report(first_error, debug=args.debug)


def _chat(
    client: Client,
    options: CallOptions,
    *,
    system: str | None,
    debug: bool,
    history: bool = False,
) -> int:
    """Hold a conversation on stdin: one line a turn, the whole history sent every time."""
    chat = client.conversation(system=system or None)
    interactive = sys.stdin.isatty()
    if interactive:
        sys.stderr.write("pizzagpt: one line a turn; Ctrl-D or Ctrl-C leaves\n")
    # On a terminal, input() edits the line with readline (arrows, Ctrl-R, earlier lines). It
    # prompts on stdout, and importing readline can write to it: only where stdout is the
    # terminal too (not `chat > log`).
    terminal = interactive and sys.stdout.isatty()
    with _line_editing(history) if terminal else contextlib.nullcontext(False) as edited:
        return _chat_turns(chat, options, interactive=interactive, edited=edited, debug=debug)


def _chat_turns(
    chat: Conversation, options: CallOptions, *, interactive: bool, edited: bool, debug: bool
) -> int:
    while True:
        if edited:
            try:
                line = input("you> ") + "\n"
            except EOFError:
                line = ""
        else:
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


def _history_file() -> str:
    """Where `chat --history` keeps its lines: under the user's data directory (XDG's)."""
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(data, "pizzagpt", "chat_history")


@contextlib.contextmanager
def _line_editing(history: bool) -> Iterator[bool]:
    """Turn on readline's line editing for input() (False without readline: Windows has none);
    with `history`, read the history file first and write it back at the end."""
    try:
        import readline
    except ImportError:  # pragma: no cover - every platform the tests run on has it
        yield False
        return
    path = _history_file() if history else None
    if path is not None:
        try:
            # The lines are the user's questions: readable by the user alone.
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_APPEND | os.O_WRONLY, 0o600))
            readline.read_history_file(path)
        except OSError as error:
            sys.stderr.write(f"pizzagpt: no history file: {path}: {error.strerror}\n")
            path = None
        readline.set_history_length(1000)
    try:
        yield True
    finally:
        if path is not None:
            with contextlib.suppress(OSError):  # leaving matters more than the history
                readline.write_history_file(path)


def _fake(arguments: list[str]) -> int:
    """`pizzagpt fake`: serve the fake PizzaGPT until interrupted, for scripts of your own."""
    parser = argparse.ArgumentParser(
        prog="pizzagpt fake",
        description="Serve the fake PizzaGPT (pizzagpt_sdk.testing) over HTTP until Ctrl-C, "
        "and print the URL to export as PIZZAGPT_BASE_URL, so that every Client() talks to it.",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to listen on (default: %(default)s; 0.0.0.0 opens it to other machines)",
    )
    parser.add_argument(
        "--port", type=_port, default=8080, help="the port (default: %(default)s; 0: a free one)"
    )
    args = parser.parse_args(arguments)
    # Imported here: only this command and --offline need the fake and its server.
    from .testing import FakePizzaGPT

    server = FakePizzaGPT().serve(host=args.host, port=args.port)
    try:
        server.start()
    except OSError as error:  # the port is taken or privileged, the host unknown or not ours
        reason = error.strerror or str(error)
        sys.stderr.write(f"pizzagpt: cannot listen on {args.host}:{args.port}: {reason}\n")
        return 2
    # `kill` (SIGTERM) stops it as cleanly as Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        sys.stdout.write(f"export PIZZAGPT_BASE_URL={server.url}\n")
        sys.stdout.flush()
        sys.stderr.write(f"pizzagpt: the fake PizzaGPT serves on {server.url}; Ctrl-C stops it\n")
        sys.stderr.flush()
        while True:  # sleep() is interrupted by Ctrl-C on every platform
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
        signal.signal(signal.SIGTERM, previous)


def _port(text: str) -> int:
    value = _count(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number, 0 to 65535, not {text!r}")
    return value


def _print_answer(stream: Stream) -> None:
    """Write the answer's chunks as they arrive, then a refusal and the sources, if any."""
    out = sys.stdout
    last = ""
    try:
        with stream:
            for event in stream:
                if not isinstance(event, FinishReason):
                    _write(out, event)
                    out.flush()
                    last = event
    finally:
        # End the line even when the stream broke halfway, so stderr's message starts afresh.
        if last and not last.endswith("\n"):
            out.write("\n")
    answer = stream.answer
    assert answer is not None  # a stream that ends without raising ends with its FinishReason
    if answer.refusal:
        _write(out, f"[refusal] {answer.refusal}\n")
    if answer.citations:
        _write(out, "\nSources:\n" + "".join(f"{url}\n" for url in answer.citations))
    out.flush()


def _write(out: TextIO, text: str) -> None:
    """`out.write(text)`, with what `out`'s encoding cannot carry (a lone surrogate, which JSON
    can hold; any non-ASCII character on an ASCII terminal) shown as a backslash escape, as
    Python shows it on stderr, rather than a `UnicodeEncodeError` traceback."""
    try:
        out.write(text)
    except UnicodeEncodeError:
        encoding = out.encoding or "utf-8"
        out.write(text.encode(encoding, "backslashreplace").decode(encoding))


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
