"""Compressed answers: decoded by the core, bounded, the same on every engine.

A 2 KB answer of `Content-Encoding: gzip, gzip` can expand to a gigabyte. The engines hand the
core the body as it came off the wire and the core decodes it a bounded step at a time,
counting what comes out against `max_response_bytes` (pizzagpt_sdk/_decoding.py). These tests
feed the core's decoder directly (stacks of codings in random chunkings, with hypothesis), then
send bombs and ordinary compressed answers over loopback to every engine, and measure the
memory a bomb takes in a fresh process per engine.
"""

from __future__ import annotations

import gzip
import importlib
import itertools
import json
import re
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pizzagpt_sdk import InternalServerError, InvalidResponseError
from pizzagpt_sdk._decoding import STEP, ContentDecoder, DecodingError, accept_encoding
from pizzagpt_sdk.core import DEFAULT_MAX_RESPONSE_BYTES, ResponseReader
from pizzagpt_sdk.testing import FakePizzaGPT, Reply

from .conftest import MakeSubject

brotli = pytest.importorskip("brotli")
try:
    zstd = importlib.import_module("compression.zstd")  # Python 3.14
except ImportError:
    zstd = pytest.importorskip("backports.zstd")

MiB = 1024 * 1024
GiB = 1024 * MiB
LIMIT = DEFAULT_MAX_RESPONSE_BYTES
ANSWER = json.dumps({"content": "Ciao! " * 400}).encode()
TOO_LARGE = r"larger than max_response_bytes"
URL = "http://127.0.0.1/api/chatx-completion"


# Building coded bodies


def gzip_bomb(size: int, layers: int = 2) -> bytes:
    """`size` zero bytes (a multiple of 1 MiB) gzipped `layers` times, built a MiB at a time.

    The innermost gzip member is written by hand: a MiB of zeros compressed once and closed
    with a full flush compresses to the same ~1 KB every time, so the deflate stream is that
    unit repeated, then an empty final block; the CRC is computed a MiB at a time. Compressing
    the gigabyte itself would take ten seconds. Each further layer compresses the one below
    as a stream.
    """
    zeros = bytes(MiB)
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    unit = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(size // MiB):
        crc = zlib.crc32(zeros, crc)
    member = [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"]  # RFC 1952: deflate, no name
    member += [unit] * (size // MiB)
    member += [b"\x03\x00", struct.pack("<II", crc, size & 0xFFFFFFFF)]  # empty final block
    pieces = member
    for _ in range(layers - 1):
        outer = zlib.compressobj(9, zlib.DEFLATED, 31)
        pieces = [*(outer.compress(piece) for piece in pieces), outer.flush()]
    return b"".join(pieces)


def deflate_zlib(data: bytes) -> bytes:
    return zlib.compress(data)


def deflate_raw(data: bytes) -> bytes:
    raw = zlib.compressobj(6, zlib.DEFLATED, -15)
    return raw.compress(data) + raw.flush()


CODERS: dict[str, Callable[[bytes], bytes]] = {
    "identity": lambda data: data,
    "gzip": gzip.compress,
    "deflate": deflate_zlib,
    "deflate-raw": deflate_raw,  # sent as "deflate": some servers send raw deflate under it
    "br": lambda data: brotli.compress(data, quality=5),  # 11, the default, is slow
    "zstd": zstd.compress,
}


def encode(data: bytes, codings: list[str]) -> tuple[bytes, str]:
    """`data` coded with each of `codings` in turn, and the `Content-Encoding` that says so."""
    for coding in codings:
        data = CODERS[coding](data)
    return data, ", ".join("deflate" if c == "deflate-raw" else c for c in codings)


def decode(body: bytes, content_encoding: str, cuts: list[int]) -> bytes:
    decoder = ContentDecoder(content_encoding)
    out = bytearray()
    points = sorted({0, *cuts, len(body)})
    for start, end in itertools.pairwise(points):
        for piece in decoder.feed(body[start:end]):
            # A step (brotli's may reach twice that); an uncoded body comes as it was fed.
            assert len(piece) <= 2 * STEP or decoder.identity
            out += piece
    decoder.end()
    return bytes(out)


def read(status: int, body: bytes, content_encoding: str, *, limit: int = LIMIT) -> object:
    """What the core makes of a response: the events, or the error it raises."""
    try:
        reader = ResponseReader(
            url=URL,
            status_code=status,
            headers=[("content-encoding", content_encoding)],
            max_bytes=limit,
        )
        for start in range(0, len(body), 16384):
            reader.feed(body[start : start + 16384])
        return reader.end()
    except (InvalidResponseError, InternalServerError) as error:
        return error


# The core's decoder


# Beside arbitrary bytes: the answer, nothing, and a body that decodes in several steps.
SAMPLES = {"answer": ANSWER, "empty": b"", "large": b"x" * 200_000 + bytes(range(256)) * 99}


@settings(max_examples=150, derandomize=True, database=None, deadline=None)
@given(
    data=st.binary(max_size=3000) | st.sampled_from(sorted(SAMPLES)).map(SAMPLES.__getitem__),
    codings=st.lists(st.sampled_from(sorted(CODERS)), max_size=5),
    cuts=st.lists(st.integers(0, 4000), max_size=10),
)
def test_any_stack_of_codings_in_any_chunking_decodes_to_what_was_coded(
    data: bytes, codings: list[str], cuts: list[int]
) -> None:
    body, content_encoding = encode(data, codings)
    assert decode(body, content_encoding, cuts) == data
    assert decode(body, content_encoding.upper(), list(range(0, len(body), 7))) == data


@pytest.mark.parametrize("codings", [["gzip", "gzip"], ["gzip", "br"], ["gzip", "zstd"]])
def test_a_bomb_is_refused_by_the_core_within_a_few_times_the_limit(codings: list[str]) -> None:
    inner = gzip_bomb(GiB, layers=1)  # ~1 MB: then br or zstd, or gzip again, on top
    body, content_encoding = encode(inner, codings[1:])
    content_encoding = f"gzip, {content_encoding}"
    assert len(body) < 64 * 1024
    tracemalloc.start()
    started = time.perf_counter()
    try:
        error = read(200, body, content_encoding)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(error, InvalidResponseError)
    assert error.status_code == 200
    assert f"larger than max_response_bytes={LIMIT:,} (more than {LIMIT:,} bytes came out" in str(
        error
    )
    assert peak < 3 * LIMIT, f"the core took {peak / MiB:.1f} MiB"
    assert time.perf_counter() - started < 10


def test_an_error_body_bomb_is_read_no_further_than_its_excerpt() -> None:
    tracemalloc.start()
    try:
        error = read(503, gzip_bomb(GiB), "gzip, gzip")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert isinstance(error, InternalServerError)
    assert error.body.startswith("\0")  # the excerpt of what it decoded to
    assert peak < 2 * MiB


def test_a_compressed_error_body_shows_its_message() -> None:
    body = gzip.compress(b'{"statusCode": 500, "message": "the oven is cold"}')
    error = read(500, body, "gzip")
    assert isinstance(error, InternalServerError)
    assert "the oven is cold" in str(error)


@pytest.mark.parametrize(
    ("content_encoding", "body", "match"),
    [
        ("compress", b"\x1f\x9d", r"content coding 'compress' is unknown; the SDK decodes gzip"),
        ("gzip, rot13", gzip.compress(ANSWER), r"content coding 'rot13' is unknown"),
        ("gzip", b"not gzip at all", r"its gzip coding is corrupt \(Error -3"),
        ("gzip", gzip.compress(ANSWER)[:-12], r"its gzip coding was cut short"),
        ("deflate", deflate_zlib(ANSWER)[:40], r"its deflate coding was cut short"),
        ("br", brotli.compress(ANSWER)[:-3], r"its br coding was cut short"),
        ("br", b"\xff" * 20, r"its br coding is corrupt"),
        ("zstd", zstd.compress(ANSWER)[:-3], r"its zstd coding was cut short"),
        ("zstd", b"\x28\xb5\x2f\xfd" + b"\xff" * 20, r"its zstd coding is corrupt"),
        ("gzip, " * 6 + "identity", gzip.compress(ANSWER), r"it stacks 6 content codings"),
    ],
    # Named by what they hold: gzip's header holds the time, which differs between the
    # processes pytest-xdist collects in.
    ids=[
        "unknown",
        "unknown-in-a-stack",
        "gzip-corrupt",
        "gzip-cut-short",
        "deflate-cut-short",
        "br-cut-short",
        "br-corrupt",
        "zstd-cut-short",
        "zstd-corrupt",
        "six-stacked",
    ],
)
def test_a_body_the_sdk_cannot_decode_is_a_clear_error(
    content_encoding: str, body: bytes, match: str
) -> None:
    error = read(200, body, content_encoding)
    assert isinstance(error, InvalidResponseError)
    assert error.status_code == 200
    assert "answered HTTP 200 with a body the SDK cannot decode: " in str(error)
    with pytest.raises(InvalidResponseError, match=match):
        raise error
    # An error status is the error; its detail says why the body cannot be shown, or, when
    # the body was only cut short, shows what it decoded to, as a cut plain body would.
    failed = read(502, body, content_encoding)
    assert isinstance(failed, InternalServerError)
    shown = "" if "cut short" in match else "a body the SDK cannot decode: "
    assert f"answered HTTP 502 Bad Gateway to POST {URL}: {shown}" in str(failed)


def test_gzip_members_and_zstd_frames_follow_one_another_trailing_garbage_ignored() -> None:
    body = gzip.compress(ANSWER[:100]) + gzip.compress(ANSWER[100:]) + b"\0\0garbage"
    assert decode(body, "gzip", [5, 110, len(body) - 3]) == ANSWER
    zstd_frames = zstd.compress(ANSWER[:100]) + zstd.compress(ANSWER[100:])
    assert decode(zstd_frames, "zstd", [50]) == ANSWER
    assert decode(gzip.compress(ANSWER), "x-gzip", [1]) == ANSWER  # RFC 9110: gzip's alias


def test_a_zstd_window_over_8_mib_is_refused_not_allocated() -> None:
    # RFC 9659, section 3: at most 8 MiB in HTTP. A frame may ask for more than it holds.
    option = zstd.CompressionParameter.window_log
    body = zstd.compress(bytes(16 * MiB), options={option: 24})
    with pytest.raises(DecodingError, match="zstd coding is corrupt"):
        decode(body, "zstd", [])


def test_the_sdk_asks_for_exactly_the_codings_it_decodes_and_no_others() -> None:
    assert accept_encoding() == "gzip, deflate, br, zstd"  # brotli and backports.zstd: tests
    # Without them, only the standard library's: gzip and deflate.
    script = textwrap.dedent(
        """
        import sys
        sys.modules["brotli"] = sys.modules["brotlicffi"] = None
        sys.modules["backports.zstd"] = sys.modules["compression.zstd"] = None
        from pizzagpt_sdk._decoding import STEP, ContentDecoder, DecodingError, accept_encoding
        print(accept_encoding())
        try:
            ContentDecoder("br")
        except DecodingError as exc:
            print(exc)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    said, refused = result.stdout.splitlines()
    assert said == "gzip, deflate"
    assert refused == (
        "it is coded br, which needs the 'brotli' package to decode; install it, "
        "and the SDK will ask for that coding too"
    )


# Every engine, over loopback


pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "codings",
    [["gzip"], ["deflate"], ["deflate-raw"], ["br"], ["zstd"], ["identity"], ["gzip", "br"]],
)
async def test_a_compressed_answer_decodes_on_every_engine(
    make_client: MakeSubject, served_fake: FakePizzaGPT, codings: list[str]
) -> None:
    body, content_encoding = encode(ANSWER, codings)
    headers = {"content-type": "application/json", "content-encoding": content_encoding}
    served_fake.script(Reply.raw(200, body, headers=headers))
    client = make_client()
    assert (await client.ask("Hi")).text == "Ciao! " * 400
    (request,) = served_fake.requests
    assert request.headers.get("accept-encoding") == "gzip, deflate, br, zstd"


async def test_a_compression_bomb_is_refused_quickly_on_every_engine(
    make_client: MakeSubject, served_fake: FakePizzaGPT
) -> None:
    bomb = gzip_bomb(GiB)
    assert len(bomb) < 4096
    headers = {"content-type": "application/json", "content-encoding": "gzip, gzip"}
    served_fake.script(Reply.raw(200, bomb, headers=headers), Reply.answer("after"))
    client = make_client(max_retries=0)
    started = time.perf_counter()
    with pytest.raises(InvalidResponseError, match=TOO_LARGE):
        await client.ask("Hi")
    assert time.perf_counter() - started < 10
    assert (await client.ask("Hi")).text.endswith("after")  # the client is none the worse


async def test_an_unknown_coding_is_a_clear_error_on_every_engine(
    make_client: MakeSubject, served_fake: FakePizzaGPT
) -> None:
    headers = {"content-type": "application/json", "content-encoding": "compress"}
    served_fake.script(Reply.raw(200, b"\x1f\x9d\x90", headers=headers))
    with pytest.raises(InvalidResponseError, match="content coding 'compress' is unknown"):
        await make_client().ask("Hi")


# Memory, in a fresh process per engine: the peak resident size of a test process that had
# already grown would hide the bomb. On Linux the peak is reset before the bomb's call, so
# what is measured is that call's own; elsewhere it is the process's, start-up included.

_MEASURE = textwrap.dedent(
    """
    import anyio, gc, json, resource, sys, time
    from pathlib import Path
    from pizzagpt_sdk import AsyncClient, Client, InvalidResponseError
    from pizzagpt_sdk.testing import FakePizzaGPT, FakeServer, Reply

    world, engine, backend, path = sys.argv[1:]
    bomb = Path(path).read_bytes()
    headers = {"content-type": "application/json", "content-encoding": "gzip, gzip"}
    fake = FakePizzaGPT()
    fake.script(Reply.answer("warm up"), Reply.raw(200, bomb, headers=headers))

    def peak():
        try:  # Linux: the peak since reset_peak(), in KiB
            status = Path("/proc/self/status").read_text()
            return int(status.split("VmHWM:")[1].split()[0]) * 1024
        except (OSError, IndexError):  # elsewhere: the peak since the process began
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def reset_peak():
        try:  # Linux, since 4.0: the peak resident size starts again from the current one
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass

    async def main(server):
        if world == "Client":
            client = server.client(engine=engine, max_retries=0)
        else:
            client = server.async_client(engine=engine, max_retries=0)
        async def call():
            if world == "Client":
                return client.ask("Hi")
            return await client.ask("Hi")
        await call()  # every library loaded, the connection open
        gc.collect()
        reset_peak()
        before = peak()
        started = time.perf_counter()
        try:
            await call()
        except InvalidResponseError as error:
            outcome = str(error)
        else:
            outcome = "answered"
        seconds = time.perf_counter() - started
        if world == "Client":
            client.close()
        else:
            await client.aclose()
        print(json.dumps({"growth": peak() - before, "seconds": seconds, "outcome": outcome}))

    with FakeServer(fake) as server:
        anyio.run(main, server, backend=backend)
    """
)


@pytest.fixture(scope="module")
def bomb_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "gzip-gzip-1GiB"
    path.write_bytes(gzip_bomb(GiB))
    return path


@pytest.mark.parametrize(
    "case",
    [
        "Client-httpx",
        "Client-httpx2",
        "Client-curl_cffi",
        "AsyncClient-httpx",
        "AsyncClient-httpx2",
        "AsyncClient-httpx-trio",
        "AsyncClient-httpx2-trio",
        "AsyncClient-aiohttp",
        "AsyncClient-curl_cffi",
    ],
)
def test_a_compression_bomb_takes_a_few_times_the_limit_in_memory_on_every_engine(
    case: str, bomb_file: Path
) -> None:
    world, engine, *trio = case.split("-")
    pytest.importorskip(engine)
    backend = "trio" if trio else "asyncio"
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, world, engine, backend, str(bomb_file)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    measured = json.loads(result.stdout)
    assert re.search(TOO_LARGE, measured["outcome"]), measured
    # The body buffered up to the limit, a step of each layer, a coded copy on curl: far
    # below the 2 GiB a whole-chunk decoder took.
    assert measured["growth"] < 10 * LIMIT, f"{measured['growth'] / MiB:.0f} MiB: {measured}"
    assert measured["seconds"] < 10


# The bomb itself: is it what it claims to be?


def test_the_bomb_builder_makes_valid_gzip_of_zeros() -> None:
    assert gzip.decompress(gzip.decompress(gzip_bomb(8 * MiB))) == bytes(8 * MiB)
    assert len(gzip_bomb(GiB)) < 4096
