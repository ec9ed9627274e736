"""The `pizzagpt` command against the fake PizzaGPT on 127.0.0.1: through `main()` in this process
for most cases, as a real process where a process matters (signals, terminals, pipes, encodings).

Every process has a timeout, and no run can reach anything but 127.0.0.1: the environment loses the
SDK's and the proxies' variables, and each run that sends gets `--base-url` (the test's own fake
server, or a loopback port nothing listens on) or `--offline`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

from pizzagpt_sdk import __version__
from pizzagpt_sdk._cli import main
from pizzagpt_sdk.testing import CITATIONS, FakePizzaGPT, Reply

TIMEOUT = 30.0
_DROPPED = {"PIZZAGPT_BASE_URL", "PIZZAGPT_SECRET", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"}
ENV = {name: value for name, value in os.environ.items() if name.upper() not in _DROPPED}
ENV["PYTHONIOENCODING"] = "utf-8"
COMMAND = [sys.executable, "-m", "pizzagpt_sdk"]
# A terminal's foreground process gets Ctrl-C. A shell without job control starts background
# commands with SIGINT ignored, and a child inherits that (and Python then never raises
# KeyboardInterrupt): start the command as a foreground one would be, whatever ran these tests.
FOREGROUND = [
    sys.executable,
    "-c",
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.argv[1], sys.argv[1:])",
]
OFFLINE = "This is the offline PizzaGPT fake, not a model. You asked: "


def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run the command to its end through its `main()`, in this process, as `python -m
    pizzagpt_sdk` would: the environment is `ENV`, stdin holds `stdin` (a pipe's, not a
    terminal), stdout and stderr are captured as UTF-8 text, and argparse's exits become exit
    codes. A tenth of a process's cost; what needs a real process (the console script, signals,
    a terminal, a closed pipe, the stream's encoding) uses `run_process` or its own."""
    out, err = io.BytesIO(), io.BytesIO()
    streams: dict[str, Any] = {
        "stdin": io.TextIOWrapper(io.BytesIO(stdin.encode()), "utf-8"),
        "stdout": io.TextIOWrapper(out, "utf-8", write_through=True),
        "stderr": io.TextIOWrapper(err, "utf-8", write_through=True),
    }
    with mock.patch.dict(os.environ, ENV, clear=True), mock.patch.multiple(sys, **streams):
        try:
            code = main(list(args))
        except SystemExit as exit_:  # argparse: --help, --version, a usage error
            code = exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 1
    stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
    return subprocess.CompletedProcess([*COMMAND, *args], code, stdout, stderr)


def run_process(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run the command as a process, to its end; stdin is a pipe (never pytest's terminal)."""
    return subprocess.run(
        [*COMMAND, *args],
        input=stdin,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=ENV,
        timeout=TIMEOUT,
        check=False,
    )


@pytest.fixture
def fake() -> FakePizzaGPT:
    return FakePizzaGPT()


@pytest.fixture
def url(fake: FakePizzaGPT) -> Iterator[str]:
    """The base URL of `fake`, served over HTTP on 127.0.0.1 for the length of the test."""
    with fake.serve() as server:
        yield server.url


def prompts(fake: FakePizzaGPT) -> list[str | None]:
    return [request.prompt for request in fake.requests]


def one_line(stderr: str) -> str:
    """The single line of an error report, checked to be exactly one line with no traceback."""
    assert stderr.count("\n") == 1, stderr
    assert stderr.startswith("pizzagpt: ")
    assert "Traceback" not in stderr
    return stderr


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released, so connecting is refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# One-shot questions.


def test_streams_the_answer_to_stdout(fake: FakePizzaGPT, url: str) -> None:
    fake.script(Reply.answer("Because of Rayleigh scattering."))
    result = run_process("--base-url", url, "Why is the sky blue?")  # python -m pizzagpt_sdk
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "Because of Rayleigh scattering.\n",
        "",
    )
    assert prompts(fake) == ["Why is the sky blue?"]
    assert fake.requests[0].json == {"question": "Why is the sky blue?"}


def test_an_answer_ending_with_a_newline_gets_no_second_one(fake: FakePizzaGPT, url: str) -> None:
    fake.script(Reply.answer("Line one\nLine two\n"))
    assert run("--base-url", url, "Hi").stdout == "Line one\nLine two\n"


def test_system_message_is_flattened_before_the_question(fake: FakePizzaGPT, url: str) -> None:
    result = run("--base-url", url, "--system", "Be brief", "Hi")
    assert result.returncode == 0
    assert prompts(fake) == ["System: Be brief\nUser: Hi\nAssistant:"]


def test_model_and_search_go_into_the_body_and_sources_are_printed(
    fake: FakePizzaGPT, url: str
) -> None:
    fake.script(Reply.answer("Margherita.", citations=["https://example.org/a"]))
    result = run("--base-url", url, "--model", "gpt-4o-mini", "--search", "Best pizza?")
    assert result.returncode == 0
    assert result.stdout == "Margherita.\n\nSources:\nhttps://example.org/a\n"
    assert fake.requests[0].json == {
        "question": "Best pizza?",
        "model": "gpt-4o-mini",
        "searchEnabled": True,
    }


@pytest.mark.parametrize("args", [[], ["-"]], ids=["no-question", "dash"])
def test_reads_the_question_from_stdin(fake: FakePizzaGPT, url: str, args: list[str]) -> None:
    result = run("--base-url", url, *args, stdin="What is 2+2?\n")
    assert result.returncode == 0
    assert prompts(fake) == ["What is 2+2?"]


@pytest.mark.parametrize(("args", "stdin"), [([], ""), ([], " \n\n"), (["  "], "")])
def test_an_empty_question_is_a_usage_error(
    fake: FakePizzaGPT, url: str, args: list[str], stdin: str
) -> None:
    result = run("--base-url", url, *args, stdin=stdin)
    assert result.returncode == 2
    assert "the question is empty" in result.stderr
    assert result.stdout == ""
    assert fake.requests == []


def test_the_word_chat_after_a_double_dash_is_a_question(fake: FakePizzaGPT, url: str) -> None:
    result = run("--base-url", url, "--", "chat")
    assert result.returncode == 0
    assert prompts(fake) == ["chat"]


def test_json_prints_one_object(fake: FakePizzaGPT, url: str) -> None:
    result = run("--base-url", url, "--json", "--search", "Hi")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {
        "text": OFFLINE + "Hi",
        "finish_reason": "stop",
        "citations": list(CITATIONS),
        "refusal": None,
    }


def test_a_refusal_is_an_answer_with_exit_code_0(fake: FakePizzaGPT, url: str) -> None:
    fake.script(Reply.answer(None, refusal="I can't help with that."))
    result = run("--base-url", url, "Hi")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        "[refusal] I can't help with that.\n",
        "",
    )


@pytest.mark.parametrize(
    ("encoding", "answer", "shown"),
    [
        ("utf-8", "half a pair: \ud83d!", "half a pair: \\ud83d!"),  # JSON can carry a lone one
        ("ascii", "caff\u00e8 \u2615", "caff\\xe8 \\u2615"),  # a terminal that cannot show it
    ],
)
def test_an_answer_the_terminal_cannot_encode_is_printed_escaped(
    fake: FakePizzaGPT,
    url: str,
    encoding: str,
    answer: str,
    shown: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(ENV, "PYTHONIOENCODING", encoding)
    fake.script(Reply.answer(answer, refusal=answer))
    result = run_process("--base-url", url, "Hi")
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"{shown}\n[refusal] {shown}\n"


def test_a_refusal_in_json(fake: FakePizzaGPT, url: str) -> None:
    fake.script(Reply.answer(None, refusal="No."))
    result = run("--base-url", url, "--json", "Hi")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {
        "text": "",
        "finish_reason": "refusal",
        "citations": [],
        "refusal": "No.",
    }


def test_offline_answers_from_the_built_in_fake() -> None:
    result = run("--offline", "Hello")
    assert (result.returncode, result.stdout, result.stderr) == (0, OFFLINE + "Hello\n", "")


def test_the_fake_is_imported_only_for_offline() -> None:
    code = "import sys, pizzagpt_sdk._cli; print('pizzagpt_sdk.testing' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=TIMEOUT,
        check=True,
    )
    assert result.stdout == "False\n"


def test_a_closed_stdout_exits_quietly(url: str) -> None:
    read_end, write_end = os.pipe()
    # Closed before the answer is written: like `pizzagpt ... | head` once head has exited.
    with subprocess.Popen(
        [*COMMAND, "--base-url", url, "Hi"],
        stdin=subprocess.DEVNULL,
        stdout=write_end,
        stderr=subprocess.PIPE,
        env=ENV,
    ) as process:
        os.close(write_end)
        os.close(read_end)
        _, stderr = process.communicate(timeout=TIMEOUT)
    assert (process.returncode, stderr) == (141, b"")


# Errors: one line on stderr, and an exit code per class.


@pytest.mark.parametrize(
    ("reply", "code", "fragments"),
    [
        (Reply.status(503), 5, ["HTTP 503 Service Unavailable", "try again later"]),
        (Reply.status(404), 5, ["HTTP 404 Not Found", "check --base-url"]),
        (Reply.status(429), 6, ["HTTP 429 Too Many Requests", "wait a minute"]),
        (Reply.html(), 7, ["an HTML page titled 'Just a moment...'"]),
        (Reply.invalid_json(), 7, ["a body that is not JSON"]),
        (Reply.secret_rejected(), 8, ['{"answer":"Invalid"}', "--secret"]),
        (Reply.misuse(), 9, ["flagged this traffic as misuse", "slow down"]),
    ],
    ids=["503", "404", "429", "html", "not-json", "secret", "misuse"],
)
def test_service_errors(
    fake: FakePizzaGPT, url: str, reply: Reply, code: int, fragments: list[str]
) -> None:
    fake.script(reply)
    result = run("--base-url", url, "--max-retries", "0", "Hi")
    assert result.returncode == code
    assert result.stdout == ""
    line = one_line(result.stderr)
    for fragment in fragments:
        assert fragment in line


def test_connection_refused() -> None:
    base_url = f"http://127.0.0.1:{unused_port()}"
    result = run("--base-url", base_url, "--max-retries", "0", "Hi")
    assert result.returncode == 3
    line = one_line(result.stderr)
    assert line.startswith(f"pizzagpt: could not reach {base_url}/api/chatx-completion (")
    assert line.endswith("; check your network and --base-url, or try --offline\n")


def test_timeout(fake: FakePizzaGPT, url: str) -> None:
    # The answer comes 10 s late: exit code 4 shows --timeout cut the wait (with the default
    # timeout of 120 s the answer would arrive, code 0), whatever the machine's load.
    fake.script(Reply.answer("Too late.").delay(10))
    result = run("--base-url", url, "--timeout", "0.5", "--max-retries", "0", "Hi")
    assert result.returncode == 4
    line = one_line(result.stderr)
    assert line.startswith("pizzagpt: timed out talking to ")
    assert "raise --timeout" in line


def test_a_wrong_secret_is_sent_and_rejected(fake: FakePizzaGPT, url: str) -> None:
    result = run("--base-url", url, "--secret", "padrone", "Hi")
    assert result.returncode == 8
    assert fake.requests[0].headers["x-secret"] == "padrone"


def test_debug_shows_the_traceback(fake: FakePizzaGPT, url: str) -> None:
    fake.script(Reply.status(503))
    result = run("--base-url", url, "--max-retries", "0", "--debug", "Hi")
    assert result.returncode == 5
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert "pizzagpt_sdk._exceptions.InternalServerError: " in result.stderr
    assert result.stderr.splitlines()[-1].startswith("pizzagpt: PizzaGPT answered HTTP 503")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--base-url", "ftp://127.0.0.1", "Hi"], "pizzagpt: base_url must be an http://"),
        (["--base-url", "URL", "--model", " ", "Hi"], "pizzagpt: model is empty"),
    ],
    ids=["base-url", "model"],
)
def test_the_sdks_usage_errors_exit_2(url: str, args: list[str], message: str) -> None:
    args = [url if arg == "URL" else arg for arg in args]
    result = run(*args)
    assert result.returncode == 2
    assert one_line(result.stderr).startswith(message)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--timeout", "0", "Hi"], "argument --timeout: must be a number of seconds above 0"),
        (["--timeout", "soon", "Hi"], "argument --timeout: must be a number of seconds above 0"),
        (["--max-retries", "-1", "Hi"], "argument --max-retries: must be a whole number"),
        (["--max-retries", "many", "Hi"], "argument --max-retries: must be a whole number"),
        (["--offline", "--base-url", "http://127.0.0.1:1", "Hi"], "not allowed with"),
        (["--offline", "--json", "chat"], "--json prints one answer"),
        (["one", "two"], "unexpected argument 'two': quote a question"),
    ],
)
def test_argparse_usage_errors_exit_2(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert result.stderr.startswith("usage: pizzagpt ")
    assert message in result.stderr


def test_help_lists_the_exit_codes() -> None:
    result = run("--help")
    assert result.returncode == 0
    epilog = result.stdout.partition("exit codes:\n")[2]
    codes = [int(code) for code in re.findall(r"^ +(\d+)  \S", epilog, re.MULTILINE)]
    assert codes == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 130, 141]
    assert "pizzagpt -- chat" in result.stdout


def test_version() -> None:
    result = run("--version")
    assert (result.returncode, result.stdout) == (0, f"pizzagpt {__version__}\n")


def test_the_console_script_is_installed() -> None:
    script = shutil.which("pizzagpt", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the pizzagpt console script is not installed next to this Python")
    result = subprocess.run(
        [script, "--version"], capture_output=True, text=True, env=ENV, timeout=TIMEOUT, check=False
    )
    assert (result.returncode, result.stdout) == (0, f"pizzagpt {__version__}\n")


# Chat.


def test_chat_sends_the_whole_history_every_turn(fake: FakePizzaGPT, url: str) -> None:
    fake.script(Reply.answer("Hello!"), Reply.answer("Four."))
    result = run("--base-url", url, "chat", stdin="Hi\n\n2+2?\n")
    assert (result.returncode, result.stdout, result.stderr) == (0, "Hello!\nFour.\n", "")
    assert prompts(fake) == ["Hi", "User: Hi\nAssistant: Hello!\nUser: 2+2?\nAssistant:"]


def test_chat_starts_with_the_system_message_and_sends_the_options(
    fake: FakePizzaGPT, url: str
) -> None:
    result = run(
        "--base-url", url, "--system", "Be brief", "--model", "gpt-4o-mini", "chat", stdin="Hi\n"
    )
    assert result.returncode == 0
    assert fake.requests[0].json == {
        "question": "System: Be brief\nUser: Hi\nAssistant:",
        "model": "gpt-4o-mini",
    }


def test_chat_goes_on_after_a_failed_turn_which_stays_out_of_the_history(
    fake: FakePizzaGPT, url: str
) -> None:
    fake.script(Reply.status(503), Reply.answer("Second answer."))
    result = run("--base-url", url, "--max-retries", "0", "chat", stdin="First\nSecond\n")
    assert result.returncode == 0
    assert result.stdout == "Second answer.\n"
    assert "HTTP 503" in one_line(result.stderr)
    assert prompts(fake) == ["First", "Second"]


def test_chat_offline_prints_sources_with_search() -> None:
    result = run("--offline", "--search", "chat", stdin="Hi\n")
    assert result.returncode == 0
    assert result.stdout == f"{OFFLINE}Hi\n\nSources:\n" + "".join(f"{c}\n" for c in CITATIONS)


class Terminal:
    """The command running on a pseudo-terminal: stdin, stdout and stderr are all its slave."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(
            [*FOREGROUND, *COMMAND, *args], stdin=slave, stdout=slave, stderr=slave, env=env or ENV
        )
        os.close(slave)
        self.output = b""

    def read_until(self, expected: bytes | None, times: int = 1) -> None:
        """Read until `expected` has appeared (`times` times in all), or with `None` until the
        process has gone."""
        deadline = time.monotonic() + TIMEOUT
        while expected is None or self.output.count(expected) < times:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no {expected!r} in {self.output!r}"
            if select.select([self.master], [], [], remaining)[0]:
                try:
                    chunk = os.read(self.master, 4096)
                except OSError:  # EIO: every copy of the slave is closed
                    chunk = b""
                if not chunk and expected is None:
                    return
                assert chunk, f"the terminal closed without {expected!r} in {self.output!r}"
                self.output += chunk

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait_for_input(self) -> None:
        """Wait until the process sleeps waiting for the terminal (Linux: its kernel wait).

        Before sending a signal: readline prints the prompt and then, in C, starts waiting in
        select(). A SIGINT that lands in between is only noticed when select() returns, on the
        next key: CPython's readline has no wake-up pipe. A person's Ctrl-C never lands there.
        """
        deadline = time.monotonic() + TIMEOUT
        waits = ("poll_schedule_timeout", "do_select", "n_tty_read", "wait_woken")
        while True:
            with (
                open(f"/proc/{self.process.pid}/stat") as stat,
                open(f"/proc/{self.process.pid}/wchan") as wchan,
            ):
                # The state follows the command's name, which may hold spaces: after its ")".
                state, waiting = stat.read().rpartition(")")[2].split()[0], wchan.read()
            if state == "S" and waiting.startswith(waits):
                return
            assert time.monotonic() < deadline, f"not waiting for input: {state} {waiting}"
            time.sleep(0.01)

    def wait(self) -> int:
        return self.process.wait(TIMEOUT)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(TIMEOUT)
        os.close(self.master)


@pytest.fixture
def terminal() -> Iterator[list[Terminal]]:
    """Holds the `Terminal`s a test starts, and closes them (killing a process left running)."""
    started: list[Terminal] = []
    yield started
    for each in started:
        each.close()


def test_chat_on_a_terminal_prompts_and_leaves_on_ctrl_d(terminal: list[Terminal]) -> None:
    term = Terminal("--offline", "chat")
    terminal.append(term)
    term.read_until(b"Ctrl-D or Ctrl-C leaves")  # one line says how to leave
    term.read_until(b"you> ")
    term.write(b"hello from a tty\n")
    term.read_until(f"{OFFLINE}hello from a tty\r\nyou> ".encode())
    term.wait_for_input()
    term.write(b"\x04")  # Ctrl-D at the start of a line: end of file
    assert term.wait() == 0
    term.read_until(None)
    assert b"Traceback" not in term.output


def test_a_question_typed_on_a_terminal_ends_with_ctrl_d(terminal: list[Terminal]) -> None:
    term = Terminal("--offline")
    terminal.append(term)
    term.read_until(b"type the question, then Ctrl-D")
    term.write(b"  typed here \n")
    term.write(b"\x04")
    term.read_until(f"{OFFLINE}typed here\r\n".encode())
    assert term.wait() == 0


@pytest.mark.parametrize("term_type", ["xterm-256color", "dumb"])
def test_chat_on_a_terminal_edits_lines_and_recalls_them(
    terminal: list[Terminal], term_type: str
) -> None:
    """Arrow keys move in the line and recall earlier ones (readline), instead of sending their
    escape codes into the question."""
    term = Terminal("--offline", "chat", env={**ENV, "TERM": term_type})
    terminal.append(term)
    term.read_until(b"you> ")
    term.write(b"pizza\x1b[Dz\n")  # left arrow: "pizza" becomes "pizzza"
    term.read_until(f"{OFFLINE}pizzza\r\n".encode())
    term.read_until(b"you> ", times=2)
    term.write(b"\x1b[A\n")  # up arrow: the line before, again
    term.read_until(f"{OFFLINE}pizzza\r\n".encode(), times=2)
    term.read_until(b"you> ", times=3)
    term.wait_for_input()
    term.write(b"\x04")
    assert term.wait() == 0
    term.read_until(None)
    assert b"[A" not in term.output


def test_chat_keeps_its_lines_in_a_history_file_with_history(
    terminal: list[Terminal], tmp_path: Path
) -> None:
    env = {**ENV, "XDG_DATA_HOME": str(tmp_path), "TERM": "dumb"}
    first = Terminal("--offline", "--history", "chat", env=env)
    terminal.append(first)
    first.read_until(b"you> ")
    first.write(b"remember me\n")
    first.read_until(b"you> ", times=2)
    first.wait_for_input()
    first.write(b"\x04")
    assert first.wait() == 0
    history = tmp_path / "pizzagpt" / "chat_history"
    assert "remember me" in history.read_text(encoding="utf-8")
    assert history.stat().st_mode & 0o777 == 0o600  # the user's questions: the user's alone
    second = Terminal("--offline", "--history", "chat", env=env)
    terminal.append(second)
    second.read_until(b"you> ")
    second.write(b"\x1b[A\n")  # the last session's line
    second.read_until(f"{OFFLINE}remember me\r\n".encode())
    second.read_until(b"you> ", times=2)
    second.wait_for_input()
    second.process.send_signal(signal.SIGINT)
    assert second.wait() == 130


def test_chat_goes_on_without_a_history_file_it_cannot_write(
    terminal: list[Terminal], tmp_path: Path
) -> None:
    (tmp_path / "pizzagpt").write_text("a file where the directory would be", encoding="utf-8")
    env = {**ENV, "XDG_DATA_HOME": str(tmp_path), "TERM": "dumb"}
    term = Terminal("--offline", "--history", "chat", env=env)
    terminal.append(term)
    term.read_until(f"pizzagpt: no history file: {tmp_path}/pizzagpt/chat_history".encode())
    term.write(b"still here\n")
    term.read_until(f"{OFFLINE}still here\r\n".encode())
    term.read_until(b"you> ", times=2)
    term.wait_for_input()  # Ctrl-D typed before readline takes the terminal is the tty's EOF
    term.write(b"\x04")
    assert term.wait() == 0


def test_chat_on_a_terminal_with_stdout_redirected_keeps_stdout_to_the_answers() -> None:
    """`pizzagpt chat > log`: readline would prompt on stdout, so the line is read plainly and
    the prompt goes to the terminal (stderr)."""
    master, slave = pty.openpty()
    with subprocess.Popen(
        [*COMMAND, "--offline", "chat"], stdin=slave, stdout=subprocess.PIPE, stderr=slave, env=ENV
    ) as process:
        os.close(slave)
        try:
            os.write(master, b"logged\n\x04")
            stdout, _ = process.communicate(timeout=TIMEOUT)
        finally:
            if process.poll() is None:
                process.kill()
            os.close(master)
    assert process.returncode == 0
    assert stdout == f"{OFFLINE}logged\n".encode()


def test_chat_leaves_on_ctrl_c_with_130(terminal: list[Terminal]) -> None:
    term = Terminal("--offline", "chat")
    terminal.append(term)
    term.read_until(b"you> ")
    term.wait_for_input()
    # What Ctrl-C does to the terminal's foreground process (this pty is not its controlling one).
    term.process.send_signal(signal.SIGINT)
    assert term.wait() == 130
    term.read_until(None)
    assert b"Traceback" not in term.output


# Batches.


def test_batch_answers_a_file_in_order_with_progress(
    fake: FakePizzaGPT, url: str, tmp_path: Path
) -> None:
    source = tmp_path / "prompts.txt"
    messages = [{"role": "user", "content": "third"}, {"role": "assistant", "content": "ok"}]
    source.write_text(f"first\n\n[not json] second\n{json.dumps(messages)}\n", encoding="utf-8")
    result = run(
        "--base-url", url, "--system", "Be brief", "--concurrency", "2", "--rate-limit", "6000",
        "batch", str(source),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["line"] for line in lines] == [1, 3, 4]  # the line numbers: 2 is blank
    assert [line["finish_reason"] for line in lines] == ["stop"] * 3
    assert lines[1]["text"] == OFFLINE + "[not json] second"
    assert sorted(map(str, prompts(fake))) == sorted(
        [
            "System: Be brief\nUser: first\nAssistant:",
            "System: Be brief\nUser: [not json] second\nAssistant:",
            "System: Be brief\nUser: third\nAssistant: ok\nAssistant:",
        ]
    )
    assert "3/3" in result.stderr


def test_batch_reports_each_failure_in_place(fake: FakePizzaGPT, url: str) -> None:
    fake.script(Reply.answer("one"), Reply.status(404), Reply.answer("three"))
    result = run("--base-url", url, "--concurrency", "1", "batch", "-", stdin="a\nb\nc\n")
    assert result.returncode == 5  # the first failure's exit code
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line.get("text") for line in lines] == ["one", None, "three"]
    assert lines[1]["error"]["type"] == "APIStatusError"
    assert "HTTP 404" in lines[1]["error"]["message"]
    assert "3/3, 1 failed" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("pizzagpt: PizzaGPT answered HTTP 404")


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["batch"], "", "batch needs a FILE"),
        (["batch", "/nonexistent/prompts.txt"], "", "cannot read /nonexistent/prompts.txt"),
        (["batch", "-"], "\n  \n", "holds no prompt"),
        (["batch", "-"], '\nfine\n[{"role": 1}]\n', "-, line 3: message 0 has a role of type int"),
        (["--concurrency", "0", "batch", "-"], "a\n", "must be a whole number, 1 or more"),
        (["--concurrency", "x", "batch", "-"], "a\n", "must be a whole number, 1 or more"),
    ],
)
def test_batch_usage_errors_exit_2(args: list[str], stdin: str, message: str) -> None:
    result = run("--base-url", f"http://127.0.0.1:{unused_port()}", *args, stdin=stdin)
    assert result.returncode == 2
    assert message in result.stderr


# The fake, served for scripts of one's own.


@contextlib.contextmanager
def serving(*args: str, foreground: bool = False) -> Iterator[subprocess.Popen[str]]:
    """`pizzagpt fake ARGS` running, its stdout a pipe; killed if the test left it running."""
    command = [*FOREGROUND, *COMMAND] if foreground else COMMAND
    with subprocess.Popen(
        [*command, "fake", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    ) as process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=TIMEOUT)


def test_fake_serves_until_interrupted_and_prints_the_url_to_export() -> None:
    with serving("--port", "0", foreground=True) as process:
        assert process.stdout is not None
        assert process.stderr is not None
        line = process.stdout.readline()  # printed once it listens
        match = re.fullmatch(r"export PIZZAGPT_BASE_URL=(http://127\.0\.0\.1:(\d+))\n", line)
        assert match, line
        asked = run("--base-url", match.group(1), "Hi from my script")
        assert asked.stdout == f"{OFFLINE}Hi from my script\n"
        process.send_signal(signal.SIGINT)
        assert process.wait(TIMEOUT) == 0
        assert "Ctrl-C stops it" in process.stderr.read()
    with socket.socket() as sock:  # it stopped listening
        assert sock.connect_ex(("127.0.0.1", int(match.group(2)))) != 0


def test_fake_stops_on_sigterm_and_serves_a_given_host_and_port() -> None:
    port = unused_port()
    with serving("--host", "localhost", "--port", str(port)) as process:
        assert process.stdout is not None
        assert process.stdout.readline() == f"export PIZZAGPT_BASE_URL=http://127.0.0.1:{port}\n"
        process.terminate()
        assert process.wait(TIMEOUT) == 0


def test_fake_on_a_port_in_use_says_so() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run("fake", "--port", str(port))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in one_line(result.stderr)


@pytest.mark.parametrize("port", ["-1", "65536", "http"])
def test_fake_rejects_a_port_that_is_none(port: str) -> None:
    result = run("fake", "--port", port)
    assert result.returncode == 2
    assert "--port" in result.stderr
