"""Interrupt one blocking call at each point where Python could run Ctrl-C's handler, in turn.

    python -m tests.interrupt_sweep httpx [--fresh] [--every N] [--start K] [--stop K]

`test_reliability.py`'s random Ctrl-C test interrupts 300 calls after random delays: it cannot be
sure to meet every point of a call, and in one CI run it met, once, a point the engines' repair
could not see. This goes through them all instead, on the fake over loopback. A trace function
counts, in one `Client.ask`, the bytecodes where CPython may run a signal handler: the first
of each function (or of each resumption of a generator), the one after each call, and the one
after each jump (a superset on some versions; `SETUP_FINALLY` and `SETUP_WITH`, where Python
3.10 does not run handlers, are left out). Then, for each such point in turn, one more call
raises `KeyboardInterrupt` there; after it, the pool must hold nothing in use and the next call
must get its own answer. Each point it reports is printed with where it is; the exit status is
the number of such points (0: none). The interrupted call reuses the connection the call before
kept; with `--fresh` it is a new client's first call, which connects.

A run over every point takes about 3 minutes on httpx (about 5,200 points, each two calls, one
under the trace; httpx2 4,400, curl_cffi 900): too long for the test suite, which runs
`test_reliability.py`'s tests instead; `--every 10` samples. It needs no network, and its fake
listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import dis
import faulthandler
import sys
from types import CodeType, FrameType
from typing import Any

from pizzagpt_sdk import Client
from pizzagpt_sdk.testing import FakePizzaGPT
from tests.test_reliability import FAKE_PREFIX, blocking_pool_in_use

_AFTER = ("CALL", "JUMP_BACKWARD", "JUMP_ABSOLUTE", "POP_JUMP", "JUMP_IF", "FOR_ITER")
_NEVER = {"SETUP_FINALLY", "SETUP_WITH", "BEFORE_ASYNC_WITH", "YIELD_FROM"}


class _Interrupter:
    """The trace function: counts the points, and raises at the `at`-th (0: never)."""

    def __init__(self, at: int = 0) -> None:
        self.at = at
        self.points = 0
        self.where = ""
        self._previous: dict[FrameType, str] = {}
        self._names: dict[CodeType, dict[int, str]] = {}

    def trace(self, frame: FrameType, event: str, arg: Any) -> Any:
        if event == "call":
            frame.f_trace_opcodes = True
            self._previous[frame] = "CALL"  # a function's first bytecode is a point
        elif event == "return":
            self._previous.pop(frame, None)
        elif event == "opcode":
            code = frame.f_code
            names = self._names.get(code)
            if names is None:
                names = {i.offset: i.opname for i in dis.get_instructions(code)}
                self._names[code] = names
            name = names.get(frame.f_lasti, "")
            previous, self._previous[frame] = self._previous.get(frame, ""), name
            if previous.startswith(_AFTER) and name not in _NEVER:
                self.points += 1
                if self.points == self.at:
                    self.where = f"{code.co_filename}:{frame.f_lineno} {code.co_name} {name}"
                    sys.settrace(None)
                    raise KeyboardInterrupt
        return self.trace


def _make(url: str, engine: str) -> Client:
    return Client(base_url=url, secret="sweep", engine=engine, timeout=5, max_retries=0)


def sweep(engine: str, start: int, stop: int | None, every: int, *, fresh: bool = False) -> int:
    """Interrupt a call at points `start`, `start + every`, … of it; the number that left
    something behind (printed, each with what it left). `fresh`: each call is a new client's
    first, which opens its connection (otherwise it reuses the one the call before kept)."""
    found = 0
    with FakePizzaGPT(secret="sweep").serve() as server:
        client = _make(server.url, engine)
        client.ask("warm-up")
        if fresh:
            client.close()
            client = _make(server.url, engine)
        counter = _Interrupter()
        sys.settrace(counter.trace)
        try:
            client.ask("count")
        finally:
            sys.settrace(None)
        stop = counter.points if stop is None else min(stop, counter.points)
        print(
            f"{engine}: {counter.points} points in one call; interrupting at {start} to "
            f"{stop} every {every}",
            flush=True,
        )
        for at in range(start, stop + 1, every):
            if fresh:
                client.close()
                client = _make(server.url, engine)
            interrupter = _Interrupter(at)
            # A point that left a lock held hangs the next call: say where, and stop.
            faulthandler.dump_traceback_later(60, exit=True)
            sys.settrace(interrupter.trace)
            try:
                client.ask(f"call {at}")
            except KeyboardInterrupt:
                pass
            finally:
                sys.settrace(None)
            left: list[str] = []
            try:
                if engine != "curl_cffi":  # curl's pool is in C, out of sight
                    left += blocking_pool_in_use(client)
                prompt = f"after {at}"
                text = client.ask(prompt).text
                if text != FAKE_PREFIX + prompt:
                    left.append(f"the next call got another answer: {text!r}")
                if engine != "curl_cffi":
                    left += blocking_pool_in_use(client)
            except Exception as exc:  # reported as what the point left
                left.append(f"the next call raised {exc!r}")
            faulthandler.cancel_dump_traceback_later()
            if left:
                found += 1
                print(f"point {at}, at {interrupter.where}: {left}", flush=True)
                client.close()
                client = _make(server.url, engine)  # a fresh pool for the next points
        client.close()
    print(f"{engine}: {found} point(s) left something behind", flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("engine", choices=["httpx", "httpx2", "curl_cffi"])
    parser.add_argument("--start", type=int, default=1, help="the first point (default 1)")
    parser.add_argument("--stop", type=int, default=None, help="the last point (default: all)")
    parser.add_argument("--every", type=int, default=1, help="interrupt every Nth point")
    parser.add_argument(
        "--fresh", action="store_true", help="interrupt a new client's first call (a connect)"
    )
    options = parser.parse_args()
    found = sweep(options.engine, options.start, options.stop, options.every, fresh=options.fresh)
    sys.exit(min(found, 100))


if __name__ == "__main__":
    main()
