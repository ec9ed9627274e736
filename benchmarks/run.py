"""The benchmark harness: what each of the SDK's engines adds to an HTTP call, in time, CPU and
memory, against its own HTTP library used raw, and against gpt4free's Pizzagpt provider.

Every comparison is a ratio of two rows measured side by side in one run. The subjects take
turns in short slices (blocks of calls, bursts of a fraction of a second, single interpreter
starts), in a rotating order, so that whatever else the machine does falls on all of them alike,
each client in a process of its own, started afresh with each of eight string hash seeds;
a ratio is the median of the ratios of neighbouring slices, shown with its interquartile range
as the run's noise, and an A/A row (the same raw client measured twice as if it were two) shows
how far from 1.00 noise alone moves a ratio. Absolute figures depend on the machine and its load;
the targets are about the ratios.

    python benchmarks/run.py                # the whole run: about 10 minutes on 2 cores
    python benchmarks/run.py --quick        # a smoke run of about 3 minutes
    python benchmarks/run.py --sections sequential,async --json out.json --markdown out.md

Sections: server (the loopback server's capacity), sequential (µs per call, one at a time,
blocking and on asyncio), async (requests per second at 64 and 256 in flight, asyncio and trio),
peers (the fastest engine beside gpt4free's provider at 64 in flight, over HTTP and HTTPS),
inflight (every engine at 1,024 in flight: errors), tls (TLS handshakes per 1,000 sequential
HTTPS calls), import (wall time and modules loaded; the offline CLI), construct (building a
client), rss (peak resident memory). benchmarks/README.md has the method; docs/performance.md
the results.

Every request goes to the loopback server this harness starts on 127.0.0.1; every loop is bounded
in count or time, and an alarm stops the whole run after --time-limit seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import gc
import http.client
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # after the path above: this file runs as a script, beside peers.py

HERE = Path(__file__).resolve().parent
SECTIONS = (
    "server",
    "sequential",
    "async",
    "peers",
    "inflight",
    "tls",
    "import",
    "construct",
    "rss",
)
AA = " (A/A)"  # the suffix of a control row: a baseline measured a second time
BESIDE = " (beside gpt4free)"  # the fastest engine, measured again beside gpt4free's provider
HTTPS = ", HTTPS"  # the suffix of a row measured over HTTPS (the test CA on loopback)
#: Rows whose baseline is decided during the run (the peers section): row -> baseline.
EXTRA_BASELINES: dict[str, str] = {}

# A name that `import pizzagpt_sdk` loads though a first call does not need it costs every user;
# an optional engine's library most of all.
NOT_ON_IMPORT = (
    "pizzagpt_sdk.testing",
    "pizzagpt_sdk._cli",
    "pizzagpt_sdk.engines._httpx2",
    "pizzagpt_sdk.engines._aiohttp",
    "pizzagpt_sdk.engines._curl_cffi",
    "httpx2",
    "aiohttp",
    "curl_cffi",
    "argparse",
    "pydantic",
    "trio",
    "pytest",
    "concurrent.futures",
)
CLI = 'pizzagpt --offline "hi"'
PEER_IMPORTS = ("import aiohttp", "import openai")
IMPORTS = {
    "python -c pass": ("pass", None),
    "import httpx": ("import httpx", None),
    "import httpx, anyio": ("import httpx, anyio", None),
    "import pizzagpt_sdk": ("import pizzagpt_sdk", None),
    CLI: (None, None),
    "import aiohttp": ("import aiohttp", "aiohttp"),
    "import openai": ("import openai", "openai"),
}


@dataclass(frozen=True)
class Settings:
    """How much of each section to run; `--quick` scales everything down."""

    sections: tuple[str, ...]
    concurrency: tuple[int, ...] = (64, 256)
    blocks: int = 32  # sequential: blocks per subject, in `seeds` rounds ...
    block_calls: int = 40  # ... of this many calls
    seeds: int = 8  # sequential: rounds of fresh processes, round r with PYTHONHASHSEED=r
    async_rounds: int = 8  # async: bursts per subject and concurrency, one per seed ...
    burst: float = 0.4  # ... counting this many seconds each
    peer_rounds: int = 6  # peers: bursts of the fastest engine and of gpt4free, HTTP and HTTPS
    flight: int = 1024  # inflight: this many calls in flight ...
    flight_calls: int = 2  # ... each worker making this many, one after the other
    tls_calls: int = 1000  # tls: sequential HTTPS calls per client
    import_runs: int = 12  # interpreter starts per import statement (a quarter for the peers')
    construct_rounds: int = 3  # fresh interpreters per kind of client ...
    construct_runs: int = 50  # ... building this many clients each
    rss_rounds: int = 2  # fresh interpreters per RSS subject ...
    rss_calls: int = 1500  # ... making this many calls each
    server_rounds: int = 3


QUICK: dict[str, Any] = {
    "blocks": 6,
    "seeds": 2,
    "block_calls": 20,
    "async_rounds": 2,
    "burst": 0.25,
    "peer_rounds": 2,
    "flight_calls": 1,
    "tls_calls": 100,
    "import_runs": 4,
    "construct_rounds": 2,
    "construct_runs": 10,
    "rss_rounds": 1,
    "rss_calls": 300,
    "server_rounds": 1,
}


@dataclass
class Results:
    """Samples by section and row, in the order they were taken (slice i of every row of a
    section was taken in the same round, side by side)."""

    samples: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def add(self, section: str, row: str, value: float) -> None:
        self.samples.setdefault(section, {}).setdefault(row, []).append(value)

    def paired(self, section: str, row: str, baseline: str) -> list[float] | None:
        rows = self.samples.get(section, {})
        if row not in rows or baseline not in rows:
            return None
        return [a / b for a, b in zip(rows[row], rows[baseline], strict=False) if b]


def _quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """The median and the interquartile range."""
    if len(values) < 2:
        return values[0], values[0], values[0]
    low, median, high = statistics.quantiles(values, n=4, method="inclusive")
    return median, low, high


def _rotated(items: Sequence[Any], round_: int) -> list[Any]:
    shift = round_ % len(items) if items else 0
    return [*items[shift:], *items[:shift]]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# The loopback server, in its own process: the client under test has the other core.


@dataclass(frozen=True)
class Server:
    url: str
    pid: int
    https_url: str | None = None  # None when trustme is not installed

    def cpu_seconds(self) -> float:
        """The server process's CPU time so far (user and system), from /proc (Linux)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def accepted(self) -> dict[str, int]:
        """The connections each listener has accepted so far (asked over plain HTTP, on a
        connection of its own, so that asking never adds an HTTPS one)."""
        host, port = self.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            connection.request("GET", "/_bench/connections")
            counts: dict[str, int] = json.loads(connection.getresponse().read())
        finally:
            connection.close()
        return counts


def _test_ca(directory: str) -> tuple[str, str, str] | None:
    """A test CA (trustme) and a certificate for 127.0.0.1 signed by it: (CA file, certificate
    chain file, key file), or None when trustme is not installed (no HTTPS rows then)."""
    try:
        import trustme
    except ImportError:
        return None
    ca = trustme.CA()
    certificate = ca.issue_cert("127.0.0.1", "localhost")
    paths = tuple(str(Path(directory) / name) for name in ("ca.pem", "chain.pem", "key.pem"))
    ca.cert_pem.write_to_path(paths[0])
    certificate.private_key_and_cert_chain_pem.write_to_path(paths[1])
    certificate.private_key_pem.write_to_path(paths[2])
    return paths[0], paths[1], paths[2]


@contextlib.contextmanager
def loopback_server(tls: tuple[str, str, str] | None = None) -> Iterator[Server]:
    """Start benchmarks/server.py (serving HTTPS too with `tls`'s certificate); yield it; stop
    it (by closing its stdin)."""
    command = [sys.executable, str(HERE / "server.py")]
    if tls is not None:
        command += ["--tls-cert", tls[1], "--tls-key", tls[2]]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the server did not start: {url!r}")
        https_url = process.stdout.readline().strip() if tls is not None else None
        if tls is not None and not (https_url or "").startswith("https://127.0.0.1:"):
            raise RuntimeError(f"the server did not serve HTTPS: {https_url!r}")
        yield Server(url, process.pid, https_url)
    finally:
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# Server capacity: a raw asyncio HTTP/1.1 load generator, nothing between it and the sockets.
# It runs on one core, as every client does, so its figure is a lower bound of the server's.


class _LoadConnection(asyncio.Protocol):
    def __init__(self, request: bytes, stop_at: float, done: asyncio.Future[int]) -> None:
        self._request = request
        self._stop_at = stop_at
        self._done = done
        self._buffer = b""
        self._need = -1
        self._count = 0
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        self._buffer += data
        if self._need < 0:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self._buffer[:end].lower()
            start = head.index(b"content-length:") + len(b"content-length:")
            stop = head.find(b"\r\n", start)
            self._need = end + 4 + int(head[start : stop if stop >= 0 else None])
        if len(self._buffer) < self._need:
            return
        self._count += 1
        self._buffer = self._buffer[self._need :]
        self._need = -1
        if time.perf_counter() < self._stop_at:
            self._transport.write(self._request)
        else:
            self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(self._count)


def _server(server: Server, settings: Settings, results: Results) -> None:
    """The load generator's rate, and the server's CPU per request: its capacity on one core
    is at least the one and about the inverse of the other."""
    for _ in range(settings.server_rounds):
        for connections in settings.concurrency:
            cpu = server.cpu_seconds()
            start = time.perf_counter()
            count = asyncio.run(_server_capacity(server.url, connections, settings.burst * 2))
            elapsed = time.perf_counter() - start
            used = server.cpu_seconds() - cpu
            results.add("server", f"raw asyncio load generator @{connections}", count / elapsed)
            results.add("server CPU", f"server @{connections}", used / count * 1e6)


async def _server_capacity(url: str, connections: int, duration: float) -> int:
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"question": peers.PROMPT}).encode()
    headers = "".join(f"{name}: {value}\r\n" for name, value in peers.HEADERS.items())
    request = (
        f"POST {peers.ENDPOINT} HTTP/1.1\r\nhost: {host}:{port}\r\n{headers}"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body
    loop = asyncio.get_running_loop()
    stop_at = time.perf_counter() + duration
    futures: list[asyncio.Future[int]] = [loop.create_future() for _ in range(connections)]
    for future in futures:
        await loop.create_connection(
            lambda future=future: _LoadConnection(request, stop_at, future),  # type: ignore[misc]
            host,
            int(port),
        )
    counts = await asyncio.wait_for(asyncio.gather(*futures), duration + 30)
    return sum(counts)


# Sequential: µs per call, one call at a time, in blocks that take turns. Each subject runs in a
# process of its own, which waits on its stdin between blocks: subjects that share one
# interpreter change each other's speed. CPython specializes each bytecode of a library for the
# types that last ran through it (Python 3.11+), so a raw aiohttp session and the aiohttp
# engine, whose connection protocol is aiohttp's subclassed, undo each other's specializations
# in aiohttp's code, and whichever ran more calls in the process gains: with aiohttp's A/A row
# beside them, the engine measured 1.05 to 1.10x raw aiohttp per call in one interpreter and
# 0.88 to 1.04x in processes of their own. And a process's speed depends on its string hash
# seed: the aiohttp engine at 64 in flight takes 84 µs of CPU a request with PYTHONHASHSEED 1,
# 2, 3, 4 or 7, 97 to 99 µs with 0, 5 or 6, for the same instructions (callgrind: 505,197 and
# 505,960 a request), where raw aiohttp takes 91 to 98. So, as pyperf does, each round starts
# fresh processes, round r's with PYTHONHASHSEED=r for every subject: every run measures the
# same eight layouts (benchmarks/README.md).


class _SubjectProcess:
    """One subject in a process of its own (`run.py --subject-worker`) with a given string hash
    seed: warmed up once started (`ready()`), then one block of calls per `block()`, or one
    burst per `ask()` for bursts."""

    def __init__(self, kind: str, name: str, url: str, warm_up: int, seed: int) -> None:
        command = [sys.executable, str(HERE / "run.py"), "--subject-worker", kind, name, url]
        self.name = name
        self._process = subprocess.Popen(
            [*command, str(warm_up)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        )

    def ready(self) -> None:
        """Wait until it has started and warmed up."""
        self._read()

    def ask(self, command: str) -> list[float]:
        """Send one command (see `_subject_worker`): the figures it answers."""
        assert self._process.stdin is not None
        self._process.stdin.write(f"{command}\n")
        self._process.stdin.flush()
        return [float(part) for part in self._read().split()]

    def block(self, calls: int) -> tuple[float, float]:
        """Make `calls` calls one after the other: their wall and CPU seconds, per call."""
        wall, cpu = self.ask(str(calls))
        return wall / calls, cpu / calls

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()  # the worker stops at the end of its input
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _read(self) -> str:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError(f"the process of {self.name!r} ended (exit {self._process.wait()})")
        return line


def _subject_worker(kind: str, name: str, url: str, warm_up: int) -> None:
    """The process of one subject (of `peers.SYNC_SUBJECTS` for `kind` "sync", else of
    `peers.ASYNC_SUBJECTS`): `warm_up` calls, "ready", then one answer per command read from
    stdin; it stops at the end of its input. For "sync" and "async" (on asyncio), a command is
    a number of calls, made one after the other, answered with their wall and CPU seconds; for
    "bursts-asyncio" and "bursts-trio", it is "<calls in flight> <seconds>", one `_burst()`,
    answered with its requests per second and CPU µs per request."""

    def commands() -> Iterator[str]:
        print("ready", flush=True)
        # Read while the event loop waits too: nothing else is to run meanwhile.
        yield from sys.stdin

    def report(*figures: float) -> None:
        print(*figures, flush=True)

    if kind == "sync":
        call, close = peers.SYNC_SUBJECTS[name][0](url)
        try:
            for _ in range(warm_up):
                call()
            for command in commands():
                start, cpu = time.perf_counter(), time.process_time()
                for _ in range(int(command)):
                    call()
                report(time.perf_counter() - start, time.process_time() - cpu)
        finally:
            close()
        return

    async def main() -> None:
        acall, aclose = await peers.ASYNC_SUBJECTS[name][0](url)
        try:
            for _ in range(warm_up):
                await acall()
            for command in commands():
                if kind == "async":
                    start, cpu = time.perf_counter(), time.process_time()
                    for _ in range(int(command)):
                        await acall()
                    report(time.perf_counter() - start, time.process_time() - cpu)
                else:
                    concurrency, seconds = command.split()
                    report(*await _burst(acall, int(concurrency), float(seconds)))
                    gc.collect()
        finally:
            await aclose()

    anyio.run(main, backend="trio" if kind == "bursts-trio" else "asyncio")


@contextlib.contextmanager
def _processes(
    kind: str, rows: Iterable[tuple[str, str, str]], warm_up: int, seed: int
) -> Iterator[dict[str, _SubjectProcess]]:
    """A process for each row (its name, its subject, the base URL it asks), started side by
    side and warmed up, with the string hash seed `seed`; stopped on the way out."""
    processes: dict[str, _SubjectProcess] = {}
    try:
        for name, subject, url in rows:
            processes[name] = _SubjectProcess(kind, subject, url, warm_up, seed)
        for process in processes.values():
            process.ready()
        yield processes
    finally:
        for process in processes.values():
            process.close()


def _take_turns(
    kind: str,
    groups: list[list[str]],
    url: str,
    settings: Settings,
    results: Results,
    section: str,
) -> None:
    """Run each group's subjects (an `AA`-suffixed name: its subject again) in processes of
    their own, in blocks that take turns, rotating the groups and the order within each; in
    `settings.seeds` rounds of fresh processes (see `_SubjectProcess`)."""
    rows = [(name, name.removesuffix(AA), url) for group in groups for name in group]
    per_round = max(1, settings.blocks // settings.seeds)
    for seed in range(settings.seeds):
        with _processes(kind, rows, max(20, settings.block_calls), seed) as processes:
            for block in range(seed * per_round, (seed + 1) * per_round):
                for group in _rotated(groups, block):
                    for name in _rotated(group, block):
                        wall, cpu = processes[name].block(settings.block_calls)
                        results.add(section, name, wall * 1e6)
                        results.add(f"{section} CPU", name, cpu * 1e6)


def _sequential(url: str, settings: Settings, results: Results) -> None:
    names = [name for name, spec in peers.SYNC_SUBJECTS.items() if peers.available(spec[2])]
    _take_turns("sync", [[*names, peers.RAW_SYNC + AA]], url, settings, results, "sequential")
    _take_turns("async", _async_groups(), url, settings, results, "sequential async")


#: The async subjects measured one call at a time too: each engine and its raw library.
_ONE_AT_A_TIME = ("httpx", "httpx2", "aiohttp", "curl_cffi")


def _async_groups() -> list[list[str]]:
    """Each async engine with its raw library, taking turns; aiohttp's with a control row."""
    groups: list[list[str]] = []
    for engine in _ONE_AT_A_TIME:
        row = peers.ENGINE_ROWS[engine]
        _, _, baseline, need = peers.ASYNC_SUBJECTS[row]
        if peers.available(need) and baseline is not None:
            groups.append([baseline, row])
            if engine == "aiohttp":
                # The engine closest to its limit per call gets a control row: its raw library
                # measured a second time, as if it were another subject, in the same turns.
                groups[-1].append(baseline + AA)
    return groups


# Async: requests per second with N calls in flight (a closed loop of N workers). Each subject
# runs bursts in turn, in a process and event loop of its own; a burst counts completions for
# `burst` seconds once a quarter of the workers have finished a call, or after twice `burst`
# seconds (the ramp-up is not counted: the pools are warm from the start, and waiting for all N
# would cost seconds at raw httpx's few requests/s at 256), then lets the workers drain for up
# to `burst` seconds and cancels what is left.


@dataclass
class _Counter:
    concurrency: int
    completed: int = 0
    counted: int = 0
    counting: bool = False
    stop: bool = False
    running: int = 0
    warm: anyio.Event = field(default_factory=anyio.Event)
    drained: anyio.Event = field(default_factory=anyio.Event)

    def done_one(self) -> None:
        self.completed += 1
        if self.counting:
            self.counted += 1
        elif self.completed >= max(1, self.concurrency // 4):
            self.warm.set()


async def _burst(call: peers.AsyncCall, concurrency: int, seconds: float) -> tuple[float, float]:
    """Requests per second, and CPU µs per request, over one burst."""
    counter = _Counter(concurrency)

    async def worker() -> None:
        counter.running += 1
        try:
            while not counter.stop:
                await call()
                counter.done_one()
        finally:
            counter.running -= 1
            if not counter.running:
                counter.drained.set()

    with anyio.fail_after(seconds * 20 + 60):  # a bound, whatever hangs
        async with anyio.create_task_group() as workers:
            for _ in range(concurrency):
                workers.start_soon(worker)
            # A client too slow to finish a quarter of its calls in twice the burst's time (raw
            # httpx keeping 100 connections, at 256 in flight) is counted from then on.
            with anyio.move_on_after(seconds * 2):
                await counter.warm.wait()
            counter.counting = True
            start, cpu = time.perf_counter(), time.process_time()
            await anyio.sleep(seconds)
            counter.counting = False
            elapsed, cpu_used = time.perf_counter() - start, time.process_time() - cpu
            counter.stop = True
            # The calls still in flight may finish within another burst's time; the rest are
            # cancelled (their connections close, and the next burst's ramp-up reopens them).
            with anyio.move_on_after(seconds):
                await counter.drained.wait()
            workers.cancel_scope.cancel()
    return counter.counted / elapsed, cpu_used / max(counter.counted, 1) * 1e6


#: A row of an async section: its name, its subject in `peers.ASYNC_SUBJECTS`, the base URL
#: it asks.
_Row = tuple[str, str, str]


def _async_backend(
    backend: str,
    settings: Settings,
    groups: list[list[_Row]],
    results: Results,
    levels: Sequence[int],
    rounds: int,
) -> None:
    """Bursts of every subject in turn, each subject in a process of its own (see
    `_SubjectProcess`), fresh in each round, round r's with PYTHONHASHSEED=r; a subject and its
    baseline share a group, and a group's bursts follow one another, so that each ratio
    compares neighbouring bursts."""
    names = [[name for name, _, _ in group] for group in groups]
    rows = [row for group in groups for row in group]
    for round_ in range(rounds):
        with _processes(f"bursts-{backend}", rows, 0, round_) as processes:
            for concurrency in levels:
                _log(f"  {backend}, {concurrency} in flight, round {round_ + 1} of {rounds}")
                for process in processes.values():  # warm-up: the pools open their connections
                    process.ask(f"{concurrency} 0.05")
                for group in _rotated(names, round_):
                    for name in _rotated(group, round_):
                        rate, cpu = processes[name].ask(f"{concurrency} {settings.burst}")
                        row = f"{name} [{backend}] @{concurrency}"
                        results.add("async", row, rate)
                        results.add("async CPU", row, cpu)


def _tcp_time_wait() -> int | None:
    """How many TCP sockets wait in TIME_WAIT on this machine (Linux), for the report."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/net/sockstat").read_text().splitlines():
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("tw") + 1])
    return None


def _async(url: str, settings: Settings, results: Results) -> None:
    """Every async engine beside its raw library, at each level of calls in flight."""
    results.notes.setdefault("time_wait", {})["async start"] = _tcp_time_wait()
    for backend in ("asyncio", "trio"):
        groups: dict[str, list[_Row]] = {}
        for name, (_, backends, baseline, need) in peers.ASYNC_SUBJECTS.items():
            if backend not in backends or not peers.available(need) or name == peers.GPT4FREE:
                continue
            groups.setdefault(baseline or name, []).append((name, name, url))
        if backend == "asyncio":
            for raw in (peers.RAW_ASYNC, peers.RAW_AIOHTTP):
                if raw in groups:
                    groups[raw].append((raw + AA, raw, url))
        _async_backend(
            backend,
            settings,
            list(groups.values()),
            results,
            settings.concurrency,
            settings.async_rounds,
        )
    results.notes["time_wait"]["async end"] = _tcp_time_wait()


def fastest_engine(results: Results, concurrency: int) -> str:
    """The engine with the most requests per second on asyncio at `concurrency` in this run
    (aiohttp's, when the async section did not run and it is installed; else httpx's)."""
    rows = results.samples.get("async", {})
    rates = {
        engine: statistics.median(rows[f"{row} [asyncio] @{concurrency}"])
        for engine, row in peers.ENGINE_ROWS.items()
        if f"{row} [asyncio] @{concurrency}" in rows
    }
    if rates:
        return max(rates, key=rates.__getitem__)
    return "aiohttp" if peers.available("aiohttp") else "httpx"


def _peers(server: Server, settings: Settings, results: Results) -> None:
    """The fastest engine beside gpt4free's provider, which opens (and over HTTPS, handshakes)
    a connection per call: over HTTP and over HTTPS, at the first level of calls in flight.

    It runs after the other async rows: at thousands of calls a second, the provider's closed
    sockets fill the kernel's TIME_WAIT table, which slows every later connect() on the machine.
    """
    if not peers.available("g4f"):
        return
    concurrency = settings.concurrency[0]
    engine = fastest_engine(results, concurrency)
    results.notes["fastest"] = engine
    row = peers.ENGINE_ROWS[engine]
    provider = peers.GPT4FREE
    groups: list[list[_Row]] = [
        [(row + BESIDE, row, server.url), (peers.GPT4FREE, provider, server.url)]
    ]
    EXTRA_BASELINES[row + BESIDE] = peers.GPT4FREE
    if server.https_url is not None:
        groups.append(
            [
                (row + BESIDE + HTTPS, row, server.https_url),
                (peers.GPT4FREE + HTTPS, provider, server.https_url),
            ]
        )
        EXTRA_BASELINES[row + BESIDE + HTTPS] = peers.GPT4FREE + HTTPS
    results.notes.setdefault("time_wait", {})["peers start"] = _tcp_time_wait()
    _async_backend("asyncio", settings, groups, results, (concurrency,), settings.peer_rounds)
    results.notes["time_wait"]["peers end"] = _tcp_time_wait()


# In flight: every engine with many calls in flight (1,024), each worker making a few calls one
# after the other; what counts is that no call fails (and how many connections that took).


def _inflight(server: Server, settings: Settings, results: Results) -> None:
    found: dict[str, Any] = {}
    for row in peers.ENGINE_ROWS.values():
        factory, backends, _, need = peers.ASYNC_SUBJECTS[row]
        if not peers.available(need):
            continue
        for backend in backends:
            connections = server.accepted()["http"]
            start = time.perf_counter()
            ok, errors = anyio.run(
                _flight,
                factory,
                server.url,
                settings.flight,
                settings.flight_calls,
                backend=backend,
            )
            seconds = time.perf_counter() - start
            found[f"{row} [{backend}]"] = {
                "calls": ok + sum(errors.values()),
                "errors": sum(errors.values()),
                "kinds": dict(errors),
                "seconds": seconds,
                "connections": server.accepted()["http"] - connections - 1,  # less the count's own
            }
            _log(f"  {row} [{backend}] @{settings.flight}: {found[f'{row} [{backend}]']}")
    results.notes["inflight"] = found


async def _flight(factory: Any, url: str, concurrency: int, calls: int) -> tuple[int, Any]:
    call, aclose = await factory(url)
    ok = 0
    errors: collections.Counter[str] = collections.Counter()

    async def worker() -> None:
        nonlocal ok
        for _ in range(calls):
            try:
                await call()
            except Exception as exc:  # every failure counts, whatever its kind
                errors[type(exc).__name__] += 1
            else:
                ok += 1

    try:
        with anyio.fail_after(600):  # a bound, whatever hangs
            async with anyio.create_task_group() as workers:
                for _ in range(concurrency):
                    workers.start_soon(worker)
    finally:
        await aclose()
    return ok, errors


# TLS: handshakes per N sequential HTTPS calls, counted as the connections the server's HTTPS
# listener accepted (every connection there is one handshake; 1 is a pool that keeps it).


def _tls(server: Server, settings: Settings, results: Results) -> None:
    if server.https_url is None:
        return
    found: dict[str, Any] = {}
    for row in peers.SYNC_ENGINE_ROWS.values():
        factory, _, need = peers.SYNC_SUBJECTS[row]
        if not peers.available(need):
            continue
        before, start = server.accepted()["https"], time.perf_counter()
        call, close = factory(server.https_url)
        try:
            for _ in range(settings.tls_calls):
                call()
        finally:
            close()
        found[row] = _handshakes(server, before, start, settings.tls_calls)
    for row in [*peers.ENGINE_ROWS.values(), peers.GPT4FREE]:
        make, _, _, need = peers.ASYNC_SUBJECTS[row]
        if not peers.available(need):
            continue
        before, start = server.accepted()["https"], time.perf_counter()
        anyio.run(_calls, make, server.https_url, settings.tls_calls, backend="asyncio")
        found[f"{row} [asyncio]"] = _handshakes(server, before, start, settings.tls_calls)
    for row, figures in found.items():
        _log(f"  {row}: {figures}")
    results.notes["tls"] = found


def _handshakes(server: Server, before: int, start: float, calls: int) -> dict[str, float]:
    elapsed = time.perf_counter() - start
    return {"handshakes": server.accepted()["https"] - before, "us_per_call": elapsed / calls * 1e6}


async def _calls(factory: Any, url: str, calls: int) -> None:
    call, aclose = await factory(url)
    try:
        with anyio.fail_after(600):
            for _ in range(calls):
                await call()
    finally:
        await aclose()


def _baseline(name: str) -> str | None:
    """The row a subject is compared with: an A/A row with its original, the fastest engine
    beside gpt4free with gpt4free, the rest as peers.py says."""
    if name.endswith(AA):
        return name.removesuffix(AA)
    if name in EXTRA_BASELINES:
        return EXTRA_BASELINES[name]
    if name in peers.SYNC_SUBJECTS:
        return peers.SYNC_SUBJECTS[name][1]
    if name in peers.ASYNC_SUBJECTS:
        return peers.ASYNC_SUBJECTS[name][2]
    return None


# Import, construction and RSS run in fresh interpreters, with their bytecode compiled as after
# `pip install` (into a cache of the run's own: this tree may set PYTHONDONTWRITEBYTECODE, and
# then every start would compile the SDK's sources while httpx's come precompiled).

_ENV = {name: value for name, value in os.environ.items() if name != "PYTHONDONTWRITEBYTECODE"}
# And from a directory of their own: from this tree, `python -c` would import the package from
# the current directory, not the one the harness runs (an installed wheel, or PYTHONPATH).
_CWD: list[str] = []


def _python(code: str, timeout: float = 300) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=_ENV,
        cwd=_CWD[0],
    )
    if result.returncode != 0:
        raise RuntimeError(f"{code!r} failed:\n{result.stderr}")
    return result.stdout


def _cli_command() -> list[str]:
    """`pizzagpt --offline "hi"`: the console script beside this interpreter, as installed."""
    script = Path(sys.executable).parent / "pizzagpt"
    start = [str(script)] if script.is_file() else [sys.executable, "-m", "pizzagpt_sdk"]
    return [*start, "--offline", "hi"]


def _import_wall_ms(name: str) -> float:
    statement = IMPORTS[name][0]
    command = _cli_command() if statement is None else [sys.executable, "-c", statement]
    start = time.perf_counter()
    # No `timeout=`: with one, subprocess polls the child with sleeps that double up to 50 ms
    # (on POSIX), and each start's time came out rounded up to 15.5, 31.5, 63.5, 113.5 ms, ...
    # (`import httpx` took 64 or 114 ms, 65 measured apart). Without, it blocks in waitpid()
    # and wakes at the exit; the run's alarm (--time-limit) bounds it.
    subprocess.run(
        command,
        check=True,
        env=_ENV,
        cwd=_CWD[0],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
    )
    return (time.perf_counter() - start) * 1e3


def _imports(settings: Settings, results: Results) -> None:
    names = [name for name, (_, need) in IMPORTS.items() if peers.available(need)]
    for name in names:  # warm the bytecode caches, and list what each import loads
        _import_wall_ms(name)
        if IMPORTS[name][0] is None:
            continue
        listing = f"{IMPORTS[name][0]}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
        results.notes.setdefault("modules", {})[name] = json.loads(_python(listing))
    for round_ in range(settings.import_runs):
        for name in _rotated(names, round_):
            if name in PEER_IMPORTS and round_ >= max(1, settings.import_runs // 4):
                continue  # the peers' figures are context, not a target: fewer starts
            results.add("import", name, _import_wall_ms(name))
        # The same comparison within one interpreter, less exposed to the machine's swings: the
        # SDK's own part, timed after httpx and anyio, against the process's whole wall time.
        start = time.perf_counter()
        own = float(_python(_SPLIT_CODE))
        whole = (time.perf_counter() - start) * 1e3
        results.add("import split", "whole process", whole)
        results.add("import split", "the SDK's part, after httpx and anyio", own)
        results.add("import split", "the process without the SDK's part", whole - own)


_SPLIT_CODE = """
import time
import httpx, anyio
start = time.perf_counter()
import pizzagpt_sdk
print((time.perf_counter() - start) * 1e3)
"""


CONSTRUCT = {
    "httpx.Client()": ("import httpx", "httpx.Client()", None),
    "Client()": ("from pizzagpt_sdk import Client", "Client()", None),
    "httpx.AsyncClient()": ("import httpx", "httpx.AsyncClient()", None),
    "AsyncClient()": ("from pizzagpt_sdk import AsyncClient", "AsyncClient()", None),
    "AsyncClient(engine='aiohttp')": (
        "from pizzagpt_sdk import AsyncClient",
        "AsyncClient(engine='aiohttp')",
        "aiohttp",
    ),
}
_CONSTRUCT_CODE = """
import asyncio, json, time, warnings
{setup}
made = []
def once():
    start = time.perf_counter()
    made.append({expression})
    return (time.perf_counter() - start) * 1e6
first = once()
later = sorted(once() for _ in range({runs}))
async def close_all():
    for client in made:
        if hasattr(client, "aclose"):
            await client.aclose()
        else:
            client.close()
asyncio.run(close_all())
print(json.dumps([first, later[len(later) // 2]]))
"""


def _construct(settings: Settings, results: Results) -> None:
    names = [name for name, spec in CONSTRUCT.items() if peers.available(spec[2])]
    for round_ in range(settings.construct_rounds):
        for name in _rotated(names, round_):
            setup, expression, _ = CONSTRUCT[name]
            code = _CONSTRUCT_CODE.format(
                setup=setup, expression=expression, runs=settings.construct_runs
            )
            first, later = json.loads(_python(code))
            results.add("construct", f"{name} first", first)
            results.add("construct", f"{name} later", later)


RSS = {
    "raw httpx.Client": ("sync", "raw_httpx_client", None),
    "Client.ask": ("sync", "sdk_client_ask", None),
    "raw httpx.AsyncClient @64": ("async", "raw_httpx_async_client", None),
    "AsyncClient @64": ("async", "sdk_async_client", None),
    "raw aiohttp session @64": ("async", "raw_aiohttp_session", "aiohttp"),
    "AsyncClient (aiohttp) @64": ("async", "sdk_async_aiohttp", "aiohttp"),
}
_RSS_CODE = """
import asyncio, sys
sys.path.insert(0, {here!r})
import peers
url, calls = {url!r}, {calls}
if {kind!r} == "sync":
    call, close = peers.{factory}(url)
    for _ in range(calls):
        call()
    close()
else:
    async def main():
        call, aclose = await peers.{factory}(url)
        left = calls
        async def worker():
            nonlocal left
            while left > 0:
                left -= 1
                await call()
        await asyncio.gather(*(worker() for _ in range(64)))
        await aclose()
    asyncio.run(main())
# VmHWM, not getrusage()'s ru_maxrss: Linux carries ru_maxrss across exec, so a child of a big
# harness would report the harness's own peak.
with open("/proc/self/status") as status:
    print(next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")))
"""


def _rss(url: str, settings: Settings, results: Results) -> None:
    names = [name for name, spec in RSS.items() if peers.available(spec[2])]
    for round_ in range(settings.rss_rounds):
        for name in _rotated(names, round_):
            kind, factory, _ = RSS[name]
            code = _RSS_CODE.format(
                here=str(HERE), url=url, calls=settings.rss_calls, kind=kind, factory=factory
            )
            results.add("rss", name, int(_python(code).strip()) / 1024)  # KiB to MiB


def run(settings: Settings) -> Results:
    """Run the chosen sections against a fresh loopback server."""
    results = Results()
    results.notes["load_before"] = os.getloadavg()
    started = time.perf_counter()
    bytecode = tempfile.mkdtemp(prefix="pizzagpt-bench-pycache-")
    _ENV["PYTHONPYCACHEPREFIX"] = bytecode
    _CWD[:] = [bytecode]
    # The test CA, before anything imports aiohttp: gpt4free's provider verifies with aiohttp's
    # default context, built at import from the default CA file, which SSL_CERT_FILE names.
    tls = _test_ca(bytecode)
    if tls is not None:
        peers.CA_FILE = tls[0]
        os.environ["SSL_CERT_FILE"] = tls[0]
    else:
        results.notes["no_https"] = "trustme is not installed: no HTTPS rows"
    results.notes["skipped"] = sorted(
        {name for name, spec in peers.SYNC_SUBJECTS.items() if not peers.available(spec[2])}
        | {name for name, spec in peers.ASYNC_SUBJECTS.items() if not peers.available(spec[3])}
    )
    with loopback_server(tls) as server:
        url = server.url
        for section in settings.sections:
            _log(f"{section} ({time.perf_counter() - started:.0f} s)")
            if section == "server":
                _server(server, settings, results)
            elif section == "sequential":
                _sequential(url, settings, results)
            elif section == "async":
                _async(url, settings, results)
            elif section == "peers":
                _peers(server, settings, results)
            elif section == "inflight":
                _inflight(server, settings, results)
            elif section == "tls":
                _tls(server, settings, results)
            elif section == "import":
                _imports(settings, results)
            elif section == "construct":
                _construct(settings, results)
            elif section == "rss":
                _rss(url, settings, results)
    results.notes["seconds"] = time.perf_counter() - started
    results.notes["load_after"] = os.getloadavg()
    shutil.rmtree(bytecode, ignore_errors=True)
    return results


# The report.


@dataclass(frozen=True)
class Target:
    what: str
    section: str
    row: str
    baseline: str
    limit: float
    at_most: bool  # the ratio must be <= limit (else >= limit)
    megabytes: bool = False  # compare row - baseline in MB, not the ratio


def targets(settings: Settings, results: Results) -> list[Target]:
    """issue 11's targets, as ratios of rows of this run."""
    found = []
    for row, (_, baseline, _) in peers.SYNC_SUBJECTS.items():
        if row.startswith("Client.") and baseline is not None:
            found.append(Target(f"{row} per call", "sequential", row, baseline, 1.05, True))
    for engine in _ONE_AT_A_TIME:
        row = peers.ENGINE_ROWS[engine]
        baseline = peers.ASYNC_SUBJECTS[row][2]
        assert baseline is not None
        found.append(
            Target(f"{row} per call, asyncio", "sequential async", row, baseline, 1.05, True)
        )
    for concurrency in settings.concurrency:
        for backend in ("asyncio", "trio"):
            for row in peers.ENGINE_ROWS.values():
                _, backends, baseline, _ = peers.ASYNC_SUBJECTS[row]
                if backend not in backends or baseline is None:
                    continue
                found.append(
                    Target(
                        f"{row} @{concurrency} [{backend}]",
                        "async",
                        f"{row} [{backend}] @{concurrency}",
                        f"{baseline} [{backend}] @{concurrency}",
                        0.95,
                        False,
                    )
                )
    first = settings.concurrency[0]
    fastest = peers.ENGINE_ROWS[results.notes.get("fastest", fastest_engine(results, first))]
    for suffix, over in (("", "HTTP"), (HTTPS, "HTTPS")):
        found.append(
            Target(
                f"fastest engine ({fastest}) / gpt4free @{first}, {over}",
                "async",
                f"{fastest}{BESIDE}{suffix} [asyncio] @{first}",
                f"{peers.GPT4FREE}{suffix} [asyncio] @{first}",
                2.0,
                False,
            )
        )
    found += [
        Target(
            "import wall time", "import", "import pizzagpt_sdk", "import httpx, anyio", 1.15, True
        ),
        Target(
            "import wall time, within one process",
            "import split",
            "whole process",
            "the process without the SDK's part",
            1.15,
            True,
        ),
        Target(f"`{CLI}` wall time", "import", CLI, "import httpx", 1.6, True),
        Target(
            "a later Client() / httpx.Client()",
            "construct",
            "Client() later",
            "httpx.Client() later",
            0.10,
            True,
        ),
        Target("peak RSS, Client", "rss", "Client.ask", "raw httpx.Client", 3.0, True, True),
        Target(
            "peak RSS, AsyncClient @64",
            "rss",
            "AsyncClient @64",
            "raw httpx.AsyncClient @64",
            3.0,
            True,
            True,
        ),
    ]
    return found


UNITS = {
    "server": "requests/s, one load-generator process",
    "sequential": "µs per call, wall",
    "sequential CPU": "µs of client CPU per call",
    "sequential async": "µs per call, wall, one call at a time on asyncio",
    "sequential async CPU": "µs of client CPU per call, one at a time on asyncio",
    "async": "requests/s",
    "async CPU": "µs of client CPU per request",
    "server CPU": "µs of the loopback server's CPU per request",
    "import": "ms wall per interpreter start",
    "import split": "ms, `import httpx, anyio, pizzagpt_sdk` in one interpreter",
    "construct": "µs per client",
    "rss": "MB peak RSS",
}


def _fmt(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def machine() -> dict[str, str]:
    """The machine and the versions that ran."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    versions = []
    packages = ("httpx", "httpcore", "httpx2", "anyio", "trio", "aiohttp", "curl_cffi", "openai")
    for package in packages:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{package} {metadata.version(package)}")
    with contextlib.suppress(metadata.PackageNotFoundError):
        versions.append(f"g4f {metadata.version('g4f')} (its Pizzagpt provider file)")
    return {
        "cpu": f"{cpu}, {os.cpu_count()} logical CPUs",
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": ", ".join(versions),
    }


def _ratio_rows(results: Results, section: str) -> list[str]:
    """Each SDK and peer row against its baseline, with the interquartile range."""
    rows = results.samples.get(section, {})
    lines = []
    for row in rows:
        name, bracket, rest = row.partition(" [")
        baseline = _baseline(name)
        base = f"{baseline}{bracket}{rest}" if baseline else None
        if base is None or base not in rows:
            continue
        ratios = results.paired(section, row, base)
        if ratios:
            median, low, high = _quartiles(ratios)
            lines.append(f"| {row} | {base} | {median:.3f} | {low:.3f} to {high:.3f} |")
    return lines


def report(results: Results, settings: Settings) -> str:
    """The run as Markdown: the machine, every row, the ratios, the targets."""
    lines = ["## Results", ""]
    lines += [f"- {key}: {value}" for key, value in machine().items()]
    before, after = results.notes["load_before"], results.notes["load_after"]
    lines.append(
        f"- run: {results.notes['seconds']:.0f} s; load average {before[0]:.2f} before, "
        f"{after[0]:.2f} after (2.0 means both cores were busy on average)"
    )
    if results.notes.get("time_wait"):
        waits = ", ".join(f"{key}: {value}" for key, value in results.notes["time_wait"].items())
        lines.append(f"- TCP sockets in TIME_WAIT: {waits}")
    if results.notes.get("skipped"):
        lines.append(f"- not installed, left out: {', '.join(results.notes['skipped'])}")
    if results.notes.get("no_https"):
        lines.append(f"- {results.notes['no_https']}")
    if results.notes.get("fastest"):
        lines.append(
            f"- fastest engine on asyncio at {settings.concurrency[0]} in flight (measured "
            f"beside gpt4free): {results.notes['fastest']}"
        )
    lines.append("")
    for section in UNITS:
        rows = results.samples.get(section)
        if not rows:
            continue
        lines += [
            f"### {section}: {UNITS[section]}",
            "",
            "| row | median | interquartile range | samples |",
            "|---|---:|---:|---:|",
        ]
        for row, values in rows.items():
            median, low, high = _quartiles(values)
            lines.append(
                f"| {row} | {_fmt(median)} | {_fmt(low)} to {_fmt(high)} | {len(values)} |"
            )
        paired = section.startswith(("sequential", "async"))
        ratio_lines = _ratio_rows(results, section) if paired else []
        if ratio_lines:
            lines += [
                "",
                "| row | against | ratio (median of paired slices) | interquartile range |",
                "|---|---|---:|---:|",
                *ratio_lines,
            ]
        lines.append("")
    if results.notes.get("inflight"):
        lines += [
            f"### {settings.flight:,} calls in flight, {settings.flight_calls} per worker "
            "(http://, no retries needed)",
            "",
            "| engine | calls | errors (kinds) | seconds | requests/s | connections opened |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for row, figures in results.notes["inflight"].items():
            kinds = ", ".join(f"{kind} {count}" for kind, count in figures["kinds"].items())
            lines.append(
                f"| {row} | {figures['calls']:,} | {figures['errors']}"
                f"{f' ({kinds})' if kinds else ''} | {figures['seconds']:.1f} | "
                f"{figures['calls'] / figures['seconds']:,.0f} | {figures['connections']} |"
            )
        lines.append("")
    if results.notes.get("tls"):
        lines += [
            f"### TLS handshakes per {settings.tls_calls:,} sequential HTTPS calls (test CA, "
            "loopback)",
            "",
            "| client | handshakes (connections accepted) | µs per call, wall, whole loop |",
            "|---|---:|---:|",
        ]
        for row, figures in results.notes["tls"].items():
            lines.append(f"| {row} | {figures['handshakes']:,} | {figures['us_per_call']:,.0f} |")
        lines.append("")
    modules = results.notes.get("modules")
    if modules:
        base = set(modules.get("import httpx, anyio", []))
        lines += [
            "### modules loaded",
            "",
            "| import | modules | beyond `import httpx, anyio` (the package's own left out) |",
            "|---|---:|---|",
        ]
        for name, loaded in modules.items():
            extra = sorted(
                module
                for module in set(loaded) - base
                if not module.startswith("pizzagpt_sdk") and not module.startswith("_")
            )
            shown = ", ".join(extra) if len(extra) <= 10 else f"{len(extra)} modules"
            lines.append(f"| {name} | {len(loaded)} | {shown if base and extra else ''} |")
        lines.append("")
    lines += [
        "### targets",
        "",
        "| target | measured (interquartile range) | limit | holds |",
        "|---|---|---|---|",
    ]
    for target in targets(settings, results):
        rows = results.samples.get(target.section, {})
        if target.row not in rows or target.baseline not in rows:
            continue
        if target.megabytes:
            diffs = [a - b for a, b in zip(rows[target.row], rows[target.baseline], strict=False)]
            value, low, high = _quartiles(diffs)
            shown = f"{value:+.1f} MB ({low:+.1f} to {high:+.1f})"
            limit = f"≤ +{target.limit:g} MB"
        else:
            ratios = results.paired(target.section, target.row, target.baseline) or [0.0]
            value, low, high = _quartiles(ratios)
            shown = f"{value:.3f}x ({low:.3f} to {high:.3f})"
            limit = f"{'≤' if target.at_most else '≥'} {target.limit:g}x"
        holds = value <= target.limit if target.at_most else value >= target.limit
        lines.append(f"| {target.what} | {shown} | {limit} | {'yes' if holds else '**no**'} |")
    if modules and "import pizzagpt_sdk" in modules:
        unwanted = [name for name in NOT_ON_IMPORT if name in modules["import pizzagpt_sdk"]]
        lines.append(
            f"| `import pizzagpt_sdk` loads none of {', '.join(NOT_ON_IMPORT)} | "
            f"{', '.join(unwanted) or 'none loaded'} | none | {'**no**' if unwanted else 'yes'} |"
        )
    inflight = results.notes.get("inflight", {})
    for row, figures in inflight.items():
        lines.append(
            f"| {row}: errors at {settings.flight} in flight | {figures['errors']} of "
            f"{figures['calls']} calls | 0 | {'yes' if figures['errors'] == 0 else '**no**'} |"
        )
    for row, figures in results.notes.get("tls", {}).items():
        expected = settings.tls_calls if row.startswith(peers.GPT4FREE) else 1
        lines.append(
            f"| {row}: TLS handshakes per {settings.tls_calls:,} sequential HTTPS calls | "
            f"{figures['handshakes']} | {expected} | "
            f"{'yes' if figures['handshakes'] == expected else '**no**'} |"
        )
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated")
    parser.add_argument("--concurrency", default="64,256", help="calls in flight, comma-separated")
    parser.add_argument(
        "--blocks", type=int, help=f"sequential blocks per subject (default {Settings.blocks})"
    )
    parser.add_argument(
        "--async-rounds",
        type=int,
        help=f"async bursts per subject and level (default {Settings.async_rounds})",
    )
    parser.add_argument("--json", type=Path, help="also write the samples here")
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    parser.add_argument("--time-limit", type=int, default=1800, help="seconds before giving up")
    parser.add_argument("--subject-worker", nargs=4, help=argparse.SUPPRESS)  # _SubjectProcess
    args = parser.parse_args(argv)
    if args.subject_worker:
        kind, name, url, warm_up = args.subject_worker
        _subject_worker(kind, name, url, int(warm_up))
        return
    sections = tuple(part.strip() for part in args.sections.split(",") if part.strip())
    if unknown := set(sections) - set(SECTIONS):
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    concurrency = tuple(int(part) for part in args.concurrency.split(","))
    if not concurrency or not all(0 < level <= 1024 for level in concurrency):
        parser.error("--concurrency takes levels from 1 to 1024")
    overrides: dict[str, Any] = dict(QUICK) if args.quick else {}
    if args.blocks:
        overrides["blocks"] = args.blocks
    if args.async_rounds:
        overrides["async_rounds"] = args.async_rounds
    settings = Settings(sections=sections, concurrency=concurrency, **overrides)
    signal.alarm(args.time_limit)  # the whole run is bounded, whatever hangs
    results = run(settings)
    text = report(results, settings)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        document = {"machine": machine(), "samples": results.samples, "notes": results.notes}
        args.json.write_text(json.dumps(document, indent=1))


if __name__ == "__main__":
    main()
