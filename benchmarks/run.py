"""The benchmark harness: what the SDK adds to an HTTP call, in time, CPU and memory.

Every comparison is a ratio of two rows measured side by side in one run. The subjects take
turns in short slices (blocks of calls, bursts of a fraction of a second, single interpreter
starts), in a rotating order, so that whatever else the machine does falls on all of them alike;
a ratio is the median of the ratios of neighbouring slices, shown with its interquartile range
as the run's noise, and an A/A row (the same raw client measured twice as if it were two) shows
how far from 1.00 noise alone moves a ratio. Absolute figures depend on the machine and its load;
the targets are about the ratios.

    python benchmarks/run.py                # the whole run: about 6 minutes on 2 cores
    python benchmarks/run.py --quick        # a smoke run of about 2 minutes
    python benchmarks/run.py --sections sequential,async --json out.json --markdown out.md

Sections: server (the loopback server's capacity), sequential (µs per call, one at a time),
async (requests per second at 64 and 256 in flight, asyncio and trio), import (wall time and
modules loaded), construct (building a client, the first and a later one), rss (peak resident
memory). benchmarks/README.md has the method; docs/performance.md the results.

Every request goes to the loopback server this harness starts on 127.0.0.1; every loop is bounded
in count or time, and an alarm stops the whole run after --time-limit seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peers  # after the path above: this file runs as a script, beside peers.py

HERE = Path(__file__).resolve().parent
SECTIONS = ("server", "sequential", "async", "import", "construct", "rss")
AA = " (A/A)"  # the suffix of a control row: a baseline measured a second time
BESIDE = " (beside the churners)"  # the aiohttp baseline, measured again in the churners' phase

# A name that `import pizzagpt_sdk` loads though a first call does not need it costs every user.
NOT_ON_IMPORT = (
    "pizzagpt_sdk.testing",
    "pizzagpt_sdk._cli",
    "pizzagpt_sdk.aiohttp",
    "argparse",
    "aiohttp",
    "pydantic",
    "trio",
    "pytest",
    "concurrent.futures",
)
IMPORTS = {
    "python -c pass": ("pass", None),
    "import httpx, anyio": ("import httpx, anyio", None),
    "import pizzagpt_sdk": ("import pizzagpt_sdk", None),
    "import pizzagpt_sdk.aiohttp": ("import pizzagpt_sdk.aiohttp", "aiohttp"),
    "import aiohttp": ("import aiohttp", "aiohttp"),
    "import openai": ("import openai", "openai"),
}


@dataclass(frozen=True)
class Settings:
    """How much of each section to run; `--quick` scales everything down."""

    sections: tuple[str, ...]
    concurrency: tuple[int, ...] = (64, 256)
    blocks: int = 60  # sequential: blocks per subject ...
    block_calls: int = 50  # ... of this many calls
    async_rounds: int = 8  # async: bursts per subject and concurrency ...
    burst: float = 0.5  # ... counting this many seconds each
    import_runs: int = 20  # interpreter starts per import statement
    construct_rounds: int = 5  # fresh interpreters per kind of client ...
    construct_runs: int = 50  # ... building this many clients each
    rss_rounds: int = 3  # fresh interpreters per RSS subject ...
    rss_calls: int = 1500  # ... making this many calls each
    server_rounds: int = 3


QUICK: dict[str, Any] = {
    "blocks": 8,
    "block_calls": 20,
    "async_rounds": 2,
    "burst": 0.25,
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

    def cpu_seconds(self) -> float:
        """The server process's CPU time so far (user and system), from /proc (Linux)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def loopback_server() -> Iterator[Server]:
    """Start benchmarks/server.py; yield it; stop it (by closing its stdin)."""
    process = subprocess.Popen(
        [sys.executable, str(HERE / "server.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            raise RuntimeError(f"the server did not start: {url!r}")
        yield Server(url, process.pid)
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


# Sequential: µs per call, one call at a time, in blocks that take turns.


def _sequential(url: str, settings: Settings, results: Results) -> None:
    names = [name for name, spec in peers.SYNC_SUBJECTS.items() if peers.available(spec[2])]
    subjects = {name: peers.SYNC_SUBJECTS[name][0](url) for name in names}
    subjects[peers.RAW_SYNC + AA] = peers.SYNC_SUBJECTS[peers.RAW_SYNC][0](url)
    try:
        for call, _ in subjects.values():
            for _ in range(max(20, settings.block_calls)):  # warm-up: connection, caches
                call()
        for round_ in range(settings.blocks):
            for name in _rotated(list(subjects), round_):
                call = subjects[name][0]
                start, cpu = time.perf_counter(), time.process_time()
                for _ in range(settings.block_calls):
                    call()
                wall = (time.perf_counter() - start) / settings.block_calls * 1e6
                results.add("sequential", name, wall)
                cpu_us = (time.process_time() - cpu) / settings.block_calls * 1e6
                results.add("sequential CPU", name, cpu_us)
    finally:
        for _, close in subjects.values():
            close()


# Async: requests per second with N calls in flight (a closed loop of N workers). Each subject
# runs bursts in turn within one event loop; a burst counts completions for `burst` seconds once
# a quarter of the workers have finished a call (the ramp-up is not counted: the pools are warm
# from the start, and waiting for all N would cost seconds at httpx's 100 requests/s at 256),
# then lets the workers drain.


@dataclass
class _Counter:
    concurrency: int
    completed: int = 0
    counted: int = 0
    counting: bool = False
    stop: bool = False
    warm: anyio.Event = field(default_factory=anyio.Event)

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
        while not counter.stop:
            await call()
            counter.done_one()

    with anyio.fail_after(seconds * 20 + 60):  # a bound, whatever hangs
        async with anyio.create_task_group() as workers:
            for _ in range(concurrency):
                workers.start_soon(worker)
            await counter.warm.wait()
            counter.counting = True
            start, cpu = time.perf_counter(), time.process_time()
            await anyio.sleep(seconds)
            counter.counting = False
            elapsed, cpu_used = time.perf_counter() - start, time.process_time() - cpu
            counter.stop = True
    return counter.counted / elapsed, cpu_used / max(counter.counted, 1) * 1e6


async def _async_backend(
    backend: str, url: str, settings: Settings, groups: list[list[str]], results: Results
) -> None:
    """Bursts of every subject in turn; a subject and its baseline share a group, and a group's
    bursts follow one another, so that each ratio compares neighbouring bursts."""
    subjects: dict[str, peers.AsyncSubject] = {}
    try:
        for name in (name for group in groups for name in group):
            original = name.removesuffix(AA).removesuffix(BESIDE)
            subjects[name] = await peers.ASYNC_SUBJECTS[original][0](url)
        for concurrency in settings.concurrency:
            _log(f"  {backend}, {concurrency} in flight: {', '.join(subjects)}")
            for call, _ in subjects.values():  # warm-up: the pools open their connections
                await _burst(call, concurrency, 0.05)
            for round_ in range(settings.async_rounds):
                for group in _rotated(groups, round_):
                    for name in _rotated(group, round_):
                        rate, cpu = await _burst(subjects[name][0], concurrency, settings.burst)
                        row = f"{name} [{backend}] @{concurrency}"
                        results.add("async", row, rate)
                        results.add("async CPU", row, cpu)
                        gc.collect()
    finally:
        for _, aclose in subjects.values():
            await aclose()


def _tcp_time_wait() -> int | None:
    """How many TCP sockets wait in TIME_WAIT on this machine (Linux), for the report."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/net/sockstat").read_text().splitlines():
            if line.startswith("TCP:"):
                fields = line.split()
                return int(fields[fields.index("tw") + 1])
    return None


def _async(url: str, settings: Settings, results: Results) -> None:
    results.notes["time_wait"] = {"async start": _tcp_time_wait()}
    churners = []
    for backend in ("asyncio", "trio"):
        groups: dict[str, list[str]] = {}
        for name, (_, backends, _, need) in peers.ASYNC_SUBJECTS.items():
            if backend not in backends or not peers.available(need):
                continue
            if name in peers.CHURNERS:
                churners.append(name)
            else:
                groups.setdefault(_baseline(name) or name, []).append(name)
        for raw in (peers.RAW_ASYNC, peers.RAW_AIOHTTP):
            if raw in groups and backend == "asyncio":
                groups[raw].append(raw + AA)
        ordered = list(groups.values())
        anyio.run(_async_backend, backend, url, settings, ordered, results, backend=backend)
    results.notes["time_wait"]["before the churners"] = _tcp_time_wait()
    if churners and peers.available("aiohttp"):
        # Beside the one baseline that does not connect during a burst, measured again.
        group = [peers.RAW_AIOHTTP + BESIDE, *churners]
        anyio.run(_async_backend, "asyncio", url, settings, [group], results, backend="asyncio")
    results.notes["time_wait"]["async end"] = _tcp_time_wait()


def _baseline(name: str) -> str | None:
    """The row a subject is compared with: an A/A row with its original, a churner with the
    aiohttp baseline measured beside it, the rest as peers.py says."""
    if name.endswith(AA):
        return name.removesuffix(AA)
    if name in peers.CHURNERS:
        return peers.RAW_AIOHTTP + BESIDE
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


def _import_wall_ms(statement: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", statement], check=True, timeout=60, env=_ENV, cwd=_CWD[0])
    return (time.perf_counter() - start) * 1e3


def _imports(settings: Settings, results: Results) -> None:
    names = [name for name, (_, need) in IMPORTS.items() if peers.available(need)]
    for name in names:  # warm the bytecode caches, and list what each import loads
        _import_wall_ms(IMPORTS[name][0])
        listing = f"{IMPORTS[name][0]}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
        results.notes.setdefault("modules", {})[name] = json.loads(_python(listing))
    for round_ in range(settings.import_runs):
        for name in _rotated(names, round_):
            results.add("import", name, _import_wall_ms(IMPORTS[name][0]))
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
    "AiohttpClient()": (
        "from pizzagpt_sdk.aiohttp import AiohttpClient",
        "AiohttpClient()",
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
    "AiohttpClient @64": ("async", "sdk_aiohttp_client", "aiohttp"),
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
    results.notes["skipped"] = sorted(
        {name for name, spec in peers.SYNC_SUBJECTS.items() if not peers.available(spec[2])}
        | {name for name, spec in peers.ASYNC_SUBJECTS.items() if not peers.available(spec[3])}
    )
    started = time.perf_counter()
    bytecode = tempfile.mkdtemp(prefix="pizzagpt-bench-pycache-")
    _ENV["PYTHONPYCACHEPREFIX"] = bytecode
    _CWD[:] = [bytecode]
    with loopback_server() as server:
        url = server.url
        for section in settings.sections:
            _log(f"{section} ({time.perf_counter() - started:.0f} s)")
            if section == "server":
                _server(server, settings, results)
            elif section == "sequential":
                _sequential(url, settings, results)
            elif section == "async":
                _async(url, settings, results)
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


def targets(settings: Settings) -> list[Target]:
    raw, raw_async = peers.RAW_SYNC, peers.RAW_ASYNC
    found = [
        Target("Client.ask per call", "sequential", "Client.ask", raw, 1.05, True),
        Target("Client.stream per call", "sequential", "Client.stream (consumed)", raw, 1.05, True),
    ]
    for concurrency in settings.concurrency:
        for backend in ("asyncio", "trio"):
            found.append(
                Target(
                    f"AsyncClient @{concurrency} [{backend}]",
                    "async",
                    f"AsyncClient [{backend}] @{concurrency}",
                    f"{raw_async} [{backend}] @{concurrency}",
                    0.95,
                    False,
                )
            )
    first = settings.concurrency[0]
    found += [
        Target(
            f"AiohttpClient @{first}",
            "async",
            f"{peers.FAST} [asyncio] @{first}",
            f"{peers.RAW_AIOHTTP} [asyncio] @{first}",
            0.8,
            False,
        ),
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
    for package in ("httpx", "httpcore", "anyio", "trio", "aiohttp", "httpx-aiohttp", "openai"):
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
    for target in targets(settings):
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
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated")
    parser.add_argument("--concurrency", default="64,256", help="calls in flight, comma-separated")
    parser.add_argument("--blocks", type=int, help="sequential blocks per subject (default 60)")
    parser.add_argument("--async-rounds", type=int, help="async bursts per subject (default 8)")
    parser.add_argument("--json", type=Path, help="also write the samples here")
    parser.add_argument("--markdown", type=Path, help="also write the report here")
    parser.add_argument("--time-limit", type=int, default=1800, help="seconds before giving up")
    args = parser.parse_args(argv)
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
