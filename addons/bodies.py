"""A caller's request body, decoded within the size limit.

A body sent with `Content-Encoding` is inflated here in bounded steps: a few kilobytes of gzip
can inflate to gigabytes, and mitmproxy's own decoding (`get_content`) would hold all of them in
memory before any size check could run. The limit applies to the body as sent and as decoded.
"""

from __future__ import annotations

import sys
import zlib
from collections.abc import Callable

import brotli
from mitmproxy import http

if sys.version_info >= (3, 14):
    from compression import zstd
else:  # mitmproxy 12 depends on the backport
    from backports import zstd


class BodyError(Exception):
    """The body cannot be read: too large (413), an encoding we do not speak (415) or broken (400)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _zlib(wbits: int) -> Callable[[bytes, int], bytes]:
    def inflate(raw: bytes, limit: int) -> bytes:
        stream = zlib.decompressobj(wbits)
        body = stream.decompress(raw, limit + 1)
        if len(body) <= limit and not stream.eof:
            raise ValueError("the stream ends before its end")
        return body

    return inflate


def _brotli(raw: bytes, limit: int) -> bytes:
    return brotli.Decompressor().process(raw, output_buffer_limit=limit + 1)[: limit + 1]


def _zstd(raw: bytes, limit: int) -> bytes:
    return zstd.ZstdDecompressor().decompress(raw, max_length=limit + 1)


# Content-Encoding -> a decoder that stops after `limit + 1` bytes (so "too large" is seen, never held).
DECODERS: dict[str, Callable[[bytes, int], bytes]] = {
    "gzip": _zlib(16 + zlib.MAX_WBITS),
    "x-gzip": _zlib(16 + zlib.MAX_WBITS),
    "deflate": _zlib(zlib.MAX_WBITS),  # zlib-wrapped, as RFC 9110 defines it
    "br": _brotli,
    "zstd": _zstd,
}
IDENTITY = ("", "identity")


def read(request: http.Request, limit: int) -> bytes:
    """The body as the caller meant it, at most `limit` bytes once decoded."""
    raw = request.raw_content or b""
    if len(raw) > limit:
        raise BodyError(413, f"request body is larger than {limit / 2**20:g} MB")
    encoding = request.headers.get("content-encoding", "").strip().lower()
    if encoding in IDENTITY or not raw:
        return raw
    decoder = DECODERS.get(encoding)
    if decoder is None:
        raise BodyError(415, f"content-encoding {encoding!r} is not supported; send the body as it is, or gzip, deflate, br or zstd")
    try:
        body = decoder(raw, limit)
    except Exception as e:  # each library has its own error type; all mean a broken body
        raise BodyError(400, f"the body is not valid {encoding}: {type(e).__name__}") from None
    if len(body) > limit:
        raise BodyError(413, f"request body is larger than {limit / 2**20:g} MB once decoded ({encoding})")
    return body
