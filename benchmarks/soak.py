"""Load and soak: many requests through one AsyncClient against the fake, with zero errors, and
the client's memory flat once warm.

    python benchmarks/soak.py                                  # 10,000 at 256 in flight, then
                                                               # RSS growth up to 50,000
    python benchmarks/soak.py --requests 10000 --in-flight 256 --rss-requests 50000
    python benchmarks/soak.py --backend trio --time-limit 300

Phase 1 (load) sends `--requests` requests, `--in-flight` at a time, through one `AsyncClient`
(with the SDK's own connection pool and defaults, or `--pool sized`) to the fake PizzaGPT server
(`pizzagpt_sdk.testing`) running in a child process on 127.0.0.1. Every request must succeed.
Phase 2 (soak) goes on with the same client up to `--rss-requests` in all; the client process's
resident memory, measured after a garbage collection, may not grow by more than `--rss-bound`
MB between the end of phase 1 and the end of phase 2.

Everything is bounded: the counts, and a wall-clock limit (`--time-limit`) after which the run
is stopped and fails. Exit status: 0 when every bound held, 1 when one failed, 2 on the time limit.
Every request goes to the server this script starts on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import array
import gc
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from pizzagpt_sdk import AsyncClient, PizzaGPTError  # noqa: E402

# The fake's loopback server in its own process, so that it does not share the client's GIL or
# memory. It prints its URL, serves until its stdin closes, then prints what it counted.
SERVER = """
import sys
from pizzagpt_sdk.testing import FakePizzaGPT

fake = FakePizzaGPT()
with fake.serve() as server:
    print(server.url, flush=True)
    sys.stdin.read()
    connections = server.connections
print(f"{fake.calls} {connections}", flush=True)
"""


# The client's pool: the SDK's own (its default limits, whatever they are), or one that keeps a
# connection for every request in flight.
POOLS = ("default", "sized")


# Print the progress, and the RSS, every this many requests.
PROGRESS = 5_000


@dataclass
class Phase:
    """What one phase measured."""

    name: str
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    rss_mb: float = 0.0
    first_errors: list[str] = field(default_factory=list)


def rss_mb() -> float:
    """The process's resident memory now, in MB (Linux: /proc; elsewhere the peak)."""
    gc.collect()
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 1e6
    except OSError:  # pragma: no cover - not Linux
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / (1e6 if sys.platform == "darwin" else 1e3)


class Runner:
    """Sends requests through one client from `in_flight` tasks, recording each latency."""

    def __init__(self, client: AsyncClient, in_flight: int, total: int) -> None:
        self.client = client
        self.in_flight = in_flight
        self.sent = 0
        self.started = time.perf_counter()
        # Allocated up front: a list growing by 40,000 floats would be the soak's own leak.
        self.latencies = array.array("d", bytes(8 * total))

    def progress(self, done: int) -> None:
        elapsed = time.perf_counter() - self.started
        print(f"  {done:>7,} requests, {elapsed:6.1f} s, RSS {rss_mb():.1f} MB", flush=True)

    async def run(self, phase: Phase, until: int) -> Phase:
        start = time.perf_counter()
        first = self.sent

        async def worker() -> None:
            while self.sent < until:
                index = self.sent
                self.sent += 1
                began = time.perf_counter()
                try:
                    await self.client.ask(f"Request {index}: why is the sky blue?")
                except PizzaGPTError as error:
                    phase.errors += 1
                    if len(phase.first_errors) < 5:
                        phase.first_errors.append(f"{type(error).__name__}: {error}")
                self.latencies[index] = time.perf_counter() - began
                if (index + 1) % PROGRESS == 0:
                    self.progress(index + 1)

        async with anyio.create_task_group() as group:
            for _ in range(min(self.in_flight, until - self.sent)):
                group.start_soon(worker)
        phase.seconds = time.perf_counter() - start
        phase.requests = self.sent - first
        phase.rss_mb = rss_mb()
        return phase


def percentile(values: array.array[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


async def soak(url: str, args: argparse.Namespace) -> tuple[Phase, Phase, float]:
    total = max(args.requests, args.rss_requests)
    transport = None
    if args.pool == "sized":
        limits = httpx.Limits(max_connections=args.in_flight, max_keepalive_connections=None)
        transport = httpx.AsyncHTTPTransport(limits=limits)
    # max_retries=0: an error must show, not be retried away.
    async with AsyncClient(base_url=url, transport=transport, max_retries=0) as client:
        runner = Runner(client, args.in_flight, total)
        await client.ask("warm up")
        load = await runner.run(Phase("load"), args.requests)
        latency_p50 = percentile(runner.latencies[: args.requests], 0.5)
        latency_p99 = percentile(runner.latencies[: args.requests], 0.99)
        print(
            f"load: {load.requests:,} requests at {args.in_flight} in flight in "
            f"{load.seconds:.1f} s ({load.requests / load.seconds:,.0f}/s), "
            f"p50 {latency_p50 * 1e3:.1f} ms, p99 {latency_p99 * 1e3:.1f} ms, "
            f"{load.errors} error(s); RSS {load.rss_mb:.1f} MB",
            flush=True,
        )
        soaked = Phase("soak")
        if args.rss_requests > args.requests:
            soaked = await runner.run(soaked, args.rss_requests)
            print(
                f"soak: {soaked.requests:,} more requests (to {runner.sent:,}) in "
                f"{soaked.seconds:.1f} s, {soaked.errors} error(s); RSS {soaked.rss_mb:.1f} MB "
                f"({soaked.rss_mb - load.rss_mb:+.2f} MB since request {args.requests:,})",
                flush=True,
            )
        return load, soaked, latency_p99


def loopback_only() -> None:
    """Leave out proxies from the environment: every request goes to 127.0.0.1 and nowhere else."""
    for name in list(os.environ):
        if name.lower() in ("http_proxy", "https_proxy", "all_proxy"):
            del os.environ[name]
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000, help="phase 1's requests")
    parser.add_argument("--in-flight", type=int, default=256, help="concurrent requests")
    parser.add_argument(
        "--rss-requests", type=int, default=50_000, help="requests in all, phase 2 included"
    )
    parser.add_argument("--rss-bound", type=float, default=5.0, help="MB of growth allowed")
    parser.add_argument("--backend", choices=["asyncio", "trio"], default="asyncio")
    parser.add_argument(
        "--pool",
        choices=POOLS,
        default="default",
        help="the SDK's default pool (httpx's limits), or one sized to --in-flight",
    )
    parser.add_argument("--time-limit", type=float, default=1200.0, help="seconds, in all")
    args = parser.parse_args(argv)
    if args.requests < 1 or args.in_flight < 1 or args.time_limit <= 0:
        parser.error("--requests, --in-flight and --time-limit must be positive")

    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert server.stdin is not None
    assert server.stdout is not None

    def out_of_time() -> None:
        print(f"FAIL: the run took longer than --time-limit={args.time_limit:g} s", flush=True)
        server.kill()
        os._exit(2)

    watchdog = threading.Timer(args.time_limit, out_of_time)
    watchdog.daemon = True
    watchdog.start()
    try:
        url = server.stdout.readline().strip()
        print(
            f"soak: Python {sys.version.split()[0]}, {args.backend}, httpx {httpx.__version__}, "
            f"{args.pool} pool, "
            f"server {url} (the fake, in process {server.pid})",
            flush=True,
        )
        load, soaked, _ = anyio.run(soak, url, args, backend=args.backend)
        server.stdin.close()
        calls, connections = map(int, server.stdout.readline().split())
        server.wait(30)
    finally:
        watchdog.cancel()
        if server.poll() is None:
            server.kill()
            server.wait()

    expected = 1 + max(args.requests, args.rss_requests)
    growth = soaked.rss_mb - load.rss_mb if soaked.requests else 0.0
    print(f"server: {calls:,} requests received on {connections:,} connections")
    failures = []
    if load.errors or soaked.errors:
        failures.append(
            f"{load.errors + soaked.errors} error(s): {load.first_errors + soaked.first_errors}"
        )
    if calls != expected:
        failures.append(f"the server received {calls:,} requests, not {expected:,}")
    if soaked.requests and growth >= args.rss_bound:
        failures.append(f"RSS grew {growth:.2f} MB, the bound is {args.rss_bound:g} MB")
    for failure in failures:
        print(f"FAIL: {failure}")
    if not failures:
        print(
            f"OK: zero errors in {expected - 1:,} requests; RSS growth {growth:+.2f} MB "
            f"(bound {args.rss_bound:g} MB)"
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
