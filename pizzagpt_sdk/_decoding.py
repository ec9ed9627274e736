"""Content codings (`Content-Encoding`), decoded incrementally with a bounded output per step.

The engines hand the core the body as it came off the wire; the core decodes it here. A small
body can expand a thousandfold per gzip layer, so a decoder that turns a whole chunk into its
whole output at once (as httpx's and aiohttp's do) lets a 2 KB answer of `gzip, gzip` take a
gigabyte of memory before anyone counts it. Here no step yields more than `STEP` bytes, each
layer holds at most one step's input, and the reader counts what comes out against
`max_response_bytes` piece by piece, so it can stop as soon as the limit is passed. The same
approach as urllib3 2.x's `max_length`-bounded decoders; the codings are RFC 9110's (section
8.4.1) and RFC 9659's (zstd).

gzip and deflate come from the standard library; br needs `brotli` (or `brotlicffi`) 1.2 or
later, whose decoders bound their output; zstd needs Python 3.14's `compression.zstd` or its
backport, `backports.zstd` (the `zstandard` package's decoder cannot bound its output, so it is
not used). `accept_encoding()` names only the codings that can be decoded here.
"""

from __future__ import annotations

import functools
import importlib
import zlib
from collections.abc import Iterator
from typing import Any, Protocol

__all__ = ["MAX_LAYERS", "STEP", "ContentDecoder", "DecodingError", "accept_encoding", "raw_limit"]

#: The most output one step of one layer yields.
STEP = 64 * 1024
#: The most codings stacked on one body; urllib3 2.x and libcurl stop at 5 too.
MAX_LAYERS = 5
# RFC 9659, section 3: zstd's window is at most 8 MiB in HTTP; a larger one is refused rather
# than allocated (zstd's own default limit is 128 MiB).
_ZSTD_WINDOW_LOG_MAX = 23


class DecodingError(Exception):
    """The body cannot be decoded: an unknown coding, too many, or corrupt or truncated data."""


def raw_limit(max_bytes: int) -> int:
    """The most bytes a body of at most `max_bytes` decoded bytes can take on the wire.

    Encoding can make a body a little larger (gzip's stored blocks add 5 bytes per 64 KiB, a
    brotli stream 4 per 16 KiB, zstd's raw blocks 3 per 128 KiB, plus a header or two): a
    sixteenth more, and 4 KiB, cover `MAX_LAYERS` of them with room to spare.
    """
    return max_bytes + max_bytes // 16 + 4096 + 1


class _Layer(Protocol):
    name: str

    def decode(self, data: bytes, limit: int) -> bytes:
        """Take `data` (only when `drained`; `b""` to go on) and return at most about `limit`
        bytes of output."""

    @property
    def drained(self) -> bool:
        """Whether every byte given so far has been decoded and handed out."""

    @property
    def complete(self) -> bool:
        """Whether the coded data ended properly (or never began: an empty body)."""


class _Zlib:
    """gzip (`wbits` 31, members one after another as RFC 1952 allows) and deflate (`wbits`
    None: the zlib format RFC 9110 names, or raw deflate, which some servers send instead;
    told apart by the zlib header, as browsers and httpx do)."""

    def __init__(self, name: str, wbits: int | None) -> None:
        self.name = name
        self._wbits = wbits
        self._inflate: Any = zlib.decompressobj(wbits) if wbits is not None else None
        self._pending = b""  # input zlib has not taken yet
        self._full = False  # the last step stopped at the limit: more output may be waiting
        self._seen = False
        self._ended = 0  # members (streams) that ended
        self._ignoring = False  # trailing bytes after a gzip member that are not one

    @property
    def drained(self) -> bool:
        waiting = self._inflate is None  # deflate's first byte, waiting for the second
        return not self._full and (not self._pending or waiting or self._ignoring)

    @property
    def complete(self) -> bool:
        return not self._seen or self._ended > 0

    def decode(self, data: bytes, limit: int) -> bytes:
        self._seen = self._seen or bool(data)
        pending = self._pending + data if self._pending else data
        self._full = False
        if self._ignoring:
            self._pending = b""
            return b""
        if self._inflate is None:
            if len(pending) < 2:
                self._pending = pending
                return b""
            self._inflate = zlib.decompressobj(zlib.MAX_WBITS if _is_zlib(pending) else -15)
        try:
            out: bytes = self._inflate.decompress(pending, limit)
        except zlib.error as exc:
            if self._ended:
                # Trailing garbage after a complete gzip member: ignored, as gzip(1) and
                # urllib3 do.
                self._ignoring, self._pending = True, b""
                return b""
            raise DecodingError(f"its {self.name} coding is corrupt ({exc})") from None
        pending = self._inflate.unconsumed_tail
        if self._inflate.eof:
            self._ended += 1
            pending = self._inflate.unused_data
            if self._wbits is None:
                pending = b""  # after a deflate stream: nothing may follow; ignored
            elif pending:
                self._inflate = zlib.decompressobj(self._wbits)  # the next gzip member
        self._pending = pending
        self._full = len(out) >= limit
        return out


def _is_zlib(head: bytes) -> bool:
    # RFC 1950, section 2.2: CM 8 (deflate), a window of at most 32 KiB, and FCHECK.
    return head[0] & 0x0F == 8 and head[0] >> 4 <= 7 and (head[0] << 8 | head[1]) % 31 == 0


class _Brotli:
    def __init__(self, module: Any) -> None:
        self.name = "br"
        self._module = module
        self._decompressor: Any = module.Decompressor()
        self._full = False
        self._seen = False

    @property
    def drained(self) -> bool:
        return not self._full

    @property
    def complete(self) -> bool:
        return not self._seen or bool(self._decompressor.is_finished())

    def decode(self, data: bytes, limit: int) -> bytes:
        self._seen = self._seen or bool(data)
        try:
            out: bytes = self._decompressor.process(data, output_buffer_limit=limit)
        except self._module.error as exc:
            raise DecodingError(f"its br coding is corrupt ({exc})") from None
        # Output that reached the limit may not be all: brotli hands the rest out on the next
        # calls, and takes no new input until it may (`can_accept_more_data()`).
        self._full = len(out) >= limit or not self._decompressor.can_accept_more_data()
        return out


class _Zstd:
    """zstd: frames one after another, as RFC 8878 allows."""

    def __init__(self, module: Any) -> None:
        self.name = "zstd"
        self._module = module
        self._decompressor = self._new()
        self._pending = b""
        self._full = False
        self._seen = False
        self._ended = 0
        self._in_frame = False  # the current decompressor has taken some of a frame

    def _new(self) -> Any:
        option = self._module.DecompressionParameter.window_log_max
        return self._module.ZstdDecompressor(options={option: _ZSTD_WINDOW_LOG_MAX})

    @property
    def drained(self) -> bool:
        return not self._full and not self._pending

    @property
    def complete(self) -> bool:
        return not self._seen or (self._ended > 0 and not self._in_frame)

    def decode(self, data: bytes, limit: int) -> bytes:
        self._seen = self._seen or bool(data)
        pending, self._pending = self._pending + data, b""
        self._in_frame = self._in_frame or bool(pending)
        try:
            out: bytes = self._decompressor.decompress(pending, limit)
        except self._module.ZstdError as exc:
            raise DecodingError(f"its zstd coding is corrupt ({exc})") from None
        if self._decompressor.eof:
            self._ended += 1
            self._pending = self._decompressor.unused_data
            self._decompressor = self._new()
            self._in_frame = self._full = False
        else:
            self._full = not self._decompressor.needs_input
        return out


def _module(*names: str) -> Any:
    for name in names:
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


@functools.cache
def _brotli() -> Any:
    module = _module("brotli", "brotlicffi")
    # Before 1.2, brotli's decoder could not bound its output (CVE-2025-6176): not used.
    if module is None or not hasattr(module.Decompressor(), "can_accept_more_data"):
        return None
    return module


@functools.cache
def _zstd() -> Any:
    return _module("compression.zstd", "backports.zstd")


@functools.cache
def accept_encoding() -> str:
    """The `Accept-Encoding` header's value: the codings this module can decode, in the order
    browsers send them (`gzip, deflate, br, zstd`)."""
    codings = ["gzip", "deflate"]
    if _brotli() is not None:
        codings.append("br")
    if _zstd() is not None:
        codings.append("zstd")
    return ", ".join(codings)


class ContentDecoder:
    """Decodes a body coded as `content_encoding` says, incrementally.

    Args:
        content_encoding: The `Content-Encoding` header's value (`""` when absent): the codings
            in the order they were applied, comma-separated.

    Raises:
        DecodingError: A coding is unknown or cannot be decoded here (br or zstd without their
            decoder), or more than `MAX_LAYERS` are stacked.
    """

    def __init__(self, content_encoding: str) -> None:
        names = [name.strip().lower() for name in content_encoding.split(",")]
        names = [name for name in names if name and name != "identity"]
        if len(names) > MAX_LAYERS:
            raise DecodingError(
                f"it stacks {len(names)} content codings ({content_encoding!r}); "
                f"the SDK decodes at most {MAX_LAYERS}"
            )
        # The last coding applied is the first to undo.
        self._layers = [_layer(name) for name in reversed(names)]

    @property
    def identity(self) -> bool:
        """Whether the body is not coded at all."""
        return not self._layers

    def feed(self, data: bytes) -> Iterator[bytes]:
        """Decode the next bytes as they came off the wire.

        Yields:
            The decoded bytes, in pieces of at most about `STEP` bytes: stop iterating at any
            point to give up (what is left undecoded is then lost).

        Raises:
            DecodingError: The data is corrupt.
        """
        if data:
            yield from self._through(0, data)

    def end(self) -> None:
        """Check the body ended where its codings say it must.

        Raises:
            DecodingError: A coded stream was cut short.
        """
        for layer in self._layers:
            if not layer.complete:
                raise DecodingError(f"its {layer.name} coding was cut short")

    def _through(self, index: int, data: bytes) -> Iterator[bytes]:
        if index == len(self._layers):
            yield data
            return
        layer = self._layers[index]
        out = layer.decode(data, STEP)
        while True:
            if out:
                yield from self._through(index + 1, out)
            if layer.drained:
                return
            out = layer.decode(b"", STEP)


def _layer(name: str) -> _Layer:
    if name in ("gzip", "x-gzip"):  # RFC 9110, section 8.4.1.3: x-gzip is gzip
        return _Zlib("gzip", 16 + zlib.MAX_WBITS)
    if name == "deflate":
        return _Zlib("deflate", None)
    if name == "br" and _brotli() is not None:
        return _Brotli(_brotli())
    if name == "zstd" and _zstd() is not None:
        return _Zstd(_zstd())
    if name in ("br", "zstd"):
        package = "brotli" if name == "br" else "backports.zstd"
        raise DecodingError(
            f"it is coded {name}, which needs the {package!r} package to decode; install it, "
            "and the SDK will ask for that coding too"
        )
    raise DecodingError(
        f"its content coding {name!r} is unknown; the SDK decodes {accept_encoding()}"
    )
