"""`pizzagpt serve` against `g4f api`, both in front of the same loopback fake, one load generator.

    python benchmarks/serve_bench.py                      # our server alone
    python benchmarks/serve_bench.py --g4f-python VENV/bin/python \\
        --provider-file .../g4f-6.7.1/g4f/Provider/not_working/Pizzagpt.py

Every process listens on 127.0.0.1 only: the fake (`benchmarks/server.py`, which answers at
once), `pizzagpt serve --base-url <fake>` and, with `--g4f-python`, `g4f api` with the old
Pizzagpt provider pointed at the fake (`benchmarks/g4f_api.py`, run by gpt4free 8.x's
interpreter). The load generator is one asyncio process speaking raw HTTP/1.1 on keep-alive
connections (no HTTP library: it costs every subject the same, and little), and it checks that
every response is a 200 with the whole body.

What it prints (as Markdown, `--markdown FILE` too):
- p50 latency with one request in flight, and what each server adds over calling the fake
  directly, non-streaming and streaming;
- requests per second with 64 in flight (closed loop: 64 workers, each on its own
  connection), the median of `--rounds` slices of `--seconds` taken in turns, so that the
  machine's other load falls on every subject alike;
- each server's RSS after 2,000 requests and after 10,000 (half of them streaming).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROMPT = "Why is the sky blue?"
IN_FLIGHT = 64


@dataclass(frozen=True)
class Subject:
    name: str
    port: int
    request: bytes
    pid: int | None = None


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0


def http_request(port: int, path: str, document: object, headers: dict[str, str]) -> bytes:
    body = json.dumps(document).encode()
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    head = (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n{lines}"
        f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def chat(port: int, *, stream: bool) -> bytes:
    document = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": stream,
    }
    return http_request(port, "/v1/chat/completions", document, {"authorization": "Bearer x"})


async def read_response(reader: asyncio.StreamReader) -> bool:
    """Read one whole response (content-length or chunked); whether it was a 200."""
    head = await reader.readuntil(b"\r\n\r\n")
    status_ok = head.startswith(b"HTTP/1.1 200")
    lowered = head.lower()
    if b"transfer-encoding: chunked" in lowered:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                return status_ok
    start = lowered.find(b"content-length:")
    if start < 0:
        raise RuntimeError(f"a response without framing: {head[:200]!r}")
    end = lowered.find(b"\r\n", start)
    await reader.readexactly(int(lowered[start + 15 : end]))
    return status_ok


async def closed_loop(
    subject: Subject, workers: int, *, seconds: float | None = None, requests: int | None = None
) -> Tally:
    """`workers` connections, each sending its next request as soon as the last one is read."""
    tally = Tally()
    stop_at = time.perf_counter() + seconds if seconds else None
    remaining = [requests or 0]

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", subject.port)
        try:
            while True:
                if stop_at is not None and time.perf_counter() >= stop_at:
                    return
                if requests is not None:
                    if remaining[0] <= 0:
                        return
                    remaining[0] -= 1
                start = time.perf_counter()
                writer.write(subject.request)
                ok = await read_response(reader)
                tally.latencies.append(time.perf_counter() - start)
                tally.errors += not ok
        finally:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(worker() for _ in range(workers))), 600)
    return tally


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        return int(probe.getsockname()[1])


def environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


@contextlib.contextmanager
def process(argv: list[str], ready: str, stream: str = "stdout") -> Iterator[tuple[int, str]]:
    """Start a server; yield its pid and the first output line holding `ready`."""
    child = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE if stream == "stdout" else subprocess.DEVNULL,
        stderr=subprocess.PIPE if stream == "stderr" else subprocess.DEVNULL,
        text=True,
        env=environment(),
        cwd=HERE.parent,
    )
    try:
        output = child.stdout if stream == "stdout" else child.stderr
        assert output is not None
        for line in output:
            if ready in line:
                break
        else:
            raise RuntimeError(f"{argv[:3]} ended before it was ready")
        # Keep reading what it writes, so that a full pipe never blocks the server.
        threading.Thread(target=output.read, daemon=True).start()
        yield child.pid, line.strip()
    finally:
        child.terminate()
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)


def wait_for_port(port: int, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port}")


@contextlib.contextmanager
def g4f_server(args: argparse.Namespace, fake_url: str) -> Iterator[tuple[int, int]]:
    """`g4f api` with the old provider (benchmarks/g4f_api.py): its pid and port."""
    port = free_port()
    argv = [
        args.g4f_python,
        str(HERE / "g4f_api.py"),
        "--provider-file",
        args.provider_file,
        "--upstream",
        fake_url,
        "--port",
        str(port),
    ]
    with process(argv, "Starting server") as (pid, _):
        wait_for_port(port)
        yield pid, port


def measure(args: argparse.Namespace) -> str:
    rows: list[str] = []
    fake_argv = [sys.executable, str(HERE / "server.py")]
    with contextlib.ExitStack() as stack:
        _, fake_url = stack.enter_context(process(fake_argv, "http://"))
        fake_port = int(fake_url.rsplit(":", 1)[1])
        subjects: list[Subject] = []
        for engine in ("httpx", "aiohttp"):
            argv = [
                sys.executable,
                "-m",
                "pizzagpt_sdk",
                "serve",
                "--base-url",
                fake_url,
                "--port",
                "0",
                "--engine",
                engine,
                "--concurrency",
                str(IN_FLIGHT),
                "--max-requests",
                "1024",
                "--max-retries",
                "0",
                "--no-access-log",
            ]
            pid, line = stack.enter_context(process(argv, "OpenAI API on", "stderr"))
            port = int(line.split("/v1")[0].rsplit(":", 1)[1])
            name = f"pizzagpt serve --engine {engine}"
            subjects += [
                Subject(name, port, chat(port, stream=False), pid),
                Subject(name + ", stream", port, chat(port, stream=True), pid),
            ]
        direct = http_request(
            fake_port,
            "/api/chatx-completion",
            {"question": PROMPT},
            {"x-secret": "Marinara", "origin": "https://www.pizzagpt.it"},
        )
        subjects.insert(0, Subject("fake, called directly", fake_port, direct))
        if args.g4f_python:
            g4f_pid, g4f_port = stack.enter_context(g4f_server(args, fake_url))
            subjects += [
                Subject("g4f api", g4f_port, chat(g4f_port, stream=False), g4f_pid),
                Subject("g4f api, stream", g4f_port, chat(g4f_port, stream=True), g4f_pid),
            ]
        servers = [s for s in subjects if s.pid is not None and "stream" not in s.name]

        # Memory first, on fresh servers: RSS after 2,000 and after 10,000 requests.
        memory: dict[str, tuple[int, int]] = {}
        for subject in servers:
            streaming = next(s for s in subjects if s.name == subject.name + ", stream")
            assert subject.pid is not None
            for _ in range(2):  # 2 x (500 + 500) = 2,000
                run_checked(subject, IN_FLIGHT, requests=500)
                run_checked(streaming, IN_FLIGHT, requests=500)
            before = rss_kib(subject.pid)
            for _ in range(8):  # 8 x 1,000 more = 10,000
                run_checked(subject, IN_FLIGHT, requests=500)
                run_checked(streaming, IN_FLIGHT, requests=500)
            memory[subject.name] = (before, rss_kib(subject.pid))

        # Latency, one request in flight, in blocks that take turns.
        latency: dict[str, list[float]] = {s.name: [] for s in subjects}
        for round_ in range(args.latency_blocks):
            for subject in rotated(subjects, round_):
                latency[subject.name] += run_checked(subject, 1, requests=50).latencies

        # Throughput at 64 in flight, in slices that take turns.
        rates: dict[str, list[float]] = {s.name: [] for s in subjects}
        loaded: dict[str, list[float]] = {s.name: [] for s in subjects}
        for round_ in range(args.rounds):
            for subject in rotated(subjects, round_):
                start = time.perf_counter()
                tally = run_checked(subject, IN_FLIGHT, seconds=args.seconds)
                rates[subject.name].append(len(tally.latencies) / (time.perf_counter() - start))
                loaded[subject.name].append(statistics.median(tally.latencies))

    floor = statistics.median(latency["fake, called directly"]) * 1e6
    rows.append(
        "| subject | p50 latency, 1 in flight | added over the fake | req/s at 64 in flight "
        "| p50 latency at 64 in flight |"
    )
    rows.append("|---|---:|---:|---:|---:|")
    for subject in subjects:
        p50 = statistics.median(latency[subject.name]) * 1e6
        added = "" if subject.port == subjects[0].port else f"+{p50 - floor:,.0f} µs"
        rows.append(
            f"| {subject.name} | {p50:,.0f} µs | {added} | "
            f"{statistics.median(rates[subject.name]):,.0f} "
            f"(min {min(rates[subject.name]):,.0f}, max {max(rates[subject.name]):,.0f}) | "
            f"{statistics.median(loaded[subject.name]) * 1e3:,.1f} ms |"
        )
    rows.append("")
    rows.append("| server | RSS after 2,000 requests | after 10,000 | growth |")
    rows.append("|---|---:|---:|---:|")
    for name, (before, after) in memory.items():
        rows.append(
            f"| {name} | {before / 1024:.1f} MiB | {after / 1024:.1f} MiB | "
            f"{(after - before) / 1024:+.2f} MiB |"
        )
    if args.g4f_python:
        rows.append("")
        for engine in ("httpx", "aiohttp"):
            for mode in ("", ", stream"):
                ours = statistics.median(rates[f"pizzagpt serve --engine {engine}{mode}"])
                theirs = statistics.median(rates["g4f api" + mode])
                rows.append(
                    f"- req/s at {IN_FLIGHT} in flight, --engine {engine}"
                    f"{mode or ', non-streaming'}: {ours / theirs:.2f}x g4f api's"
                )
    return "\n".join(rows)


def rotated(subjects: list[Subject], round_: int) -> list[Subject]:
    shift = round_ % len(subjects)
    return subjects[shift:] + subjects[:shift]


def run_checked(
    subject: Subject, workers: int, *, seconds: float | None = None, requests: int | None = None
) -> Tally:
    tally = asyncio.run(closed_loop(subject, workers, seconds=seconds, requests=requests))
    if tally.errors:
        raise RuntimeError(f"{subject.name}: {tally.errors} responses were not 200")
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--g4f-python", help="the interpreter of an environment with g4f[api] 8.x")
    parser.add_argument("--provider-file", help="g4f 6.7.1's g4f/Provider/not_working/Pizzagpt.py")
    parser.add_argument("--seconds", type=float, default=3.0, help="one throughput slice")
    parser.add_argument("--rounds", type=int, default=5, help="throughput slices per subject")
    parser.add_argument("--latency-blocks", type=int, default=6, help="blocks of 50 calls")
    parser.add_argument("--markdown", help="also write the tables to this file")
    args = parser.parse_args()
    if args.g4f_python and not args.provider_file:
        parser.error("--g4f-python needs --provider-file")
    load = os.getloadavg()
    report = measure(args)
    header = (
        f"Python {sys.version.split()[0]}, {os.cpu_count()} cores, load average before the run "
        f"{load[0]:.1f}\n\n"
    )
    print(header + report)
    if args.markdown:
        Path(args.markdown).write_text(header + report + "\n")


if __name__ == "__main__":
    main()
