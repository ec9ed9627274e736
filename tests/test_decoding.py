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
import itertools
import json
import struct
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pizzagpt_sdk._decoding import STEP, ContentDecoder, DecodingError, accept_encoding
from pizzagpt_sdk.core import DEFAULT_MAX_RESPONSE_BYTES

brotli = pytest.importorskip("brotli")
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


def test_gzip_members_follow_one_another_and_trailing_garbage_is_ignored() -> None:
    body = gzip.compress(ANSWER[:100]) + gzip.compress(ANSWER[100:]) + b"\0\0garbage"
    assert decode(body, "gzip", [5, 110, len(body) - 3]) == ANSWER
    zstd_frames = zstd.compress(ANSWER[:100]) + zstd.compress(ANSWER[100:])
    assert decode(zstd_frames, "zstd", [50]) == ANSWER


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


# The bomb itself: is it what it claims to be?


def test_the_bomb_builder_makes_valid_gzip_of_zeros() -> None:
    assert gzip.decompress(gzip.decompress(gzip_bomb(8 * MiB))) == bytes(8 * MiB)
    assert len(gzip_bomb(GiB)) < 4096
