"""A loopback HTTP/1.1 server that replays answers the gateway already holds.

mitmproxy cannot swap a response body once an upstream answered, so account rotation happens in
the `request` hook, before mitmproxy contacts anyone. The good answer is parked here under a
one-time token and the flow is pointed at this server: mitmproxy then streams it like any
upstream answer, chunk by chunk, and mitmweb shows the flow as usual — without the upstream's
URL or credentials, which never enter the flow.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

log = logging.getLogger("switchyard.relay")

TOKEN_HEADER = "x-switchyard-relay"
HEAD_LIMIT = 64 * 1024
UNCLAIMED_TTL = 60.0  # seconds a parked answer waits for mitmproxy before it is dropped

_REASONS = {200: "OK", 404: "Not Found", 400: "Bad Request"}


@dataclass(slots=True)
class Parked:
    status: int
    headers: list[tuple[str, str]]
    body: AsyncIterator[bytes]
    # Called when the flow never comes for the answer: a body that never started cannot clean
    # up after itself (its `finally` never runs), so whoever parked it is told.
    abandon: Callable[[], None] | None = None
    parked_at: float = field(default_factory=time.monotonic)


class Relay:
    def __init__(self) -> None:
        self._parked: dict[str, Parked] = {}
        self._server: asyncio.Server | None = None
        self._reaper: asyncio.Task | None = None
        self.port = 0
        self.replaying = 0  # answers being written to mitmproxy right now

    @property
    def parked(self) -> int:
        """Answers waiting for their flow to come for them."""
        return len(self._parked)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=HEAD_LIMIT)
        self.port = self._server.sockets[0].getsockname()[1]
        self._reaper = asyncio.get_running_loop().create_task(self._reap())

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._reaper is not None:
            self._reaper.cancel()
        for token in list(self._parked):
            self.discard(token)

    def park(
        self,
        status: int,
        headers: list[tuple[str, str]],
        body: AsyncIterator[bytes],
        abandon: Callable[[], None] | None = None,
    ) -> str:
        token = secrets.token_urlsafe(16)
        self._parked[token] = Parked(status, headers, body, abandon)
        return token

    def discard(self, token: str) -> None:
        """The flow will never come for it: close the body so its upstream is released."""
        parked = self._parked.pop(token, None)
        if parked is None:
            return
        if parked.abandon is not None:
            try:
                parked.abandon()
            except Exception:
                log.exception("cleaning up an unclaimed answer failed")
        _close_later(parked.body)

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(UNCLAIMED_TTL / 4)
            now = time.monotonic()
            for token, parked in list(self._parked.items()):
                if now - parked.parked_at > UNCLAIMED_TTL:
                    log.warning("an answer was never claimed by its flow; dropped")
                    self.discard(token)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                token = await _read_request(reader)
                if token is None:
                    break
                parked = self._parked.pop(token, None)
                if parked is None:
                    writer.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")
                    await writer.drain()
                    continue
                self.replaying += 1
                try:
                    replayed = await _replay(parked, writer)
                finally:
                    self.replaying -= 1
                if not replayed:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def _read_request(reader: asyncio.StreamReader) -> str | None:
    """Reads one request (its body is the caller's, already seen by the gateway: skipped) and
    returns its relay token, or None at the end of the connection."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    token = ""
    length = 0
    chunked = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        name = name.strip().lower()
        if name == TOKEN_HEADER:
            token = value.strip()
        elif name == "content-length":
            length = int(value)
        elif name == "transfer-encoding" and "chunked" in value.lower():
            chunked = True
    if chunked:
        await _skip_chunked(reader)
    elif length:
        await reader.readexactly(length)
    return token


async def _skip_chunked(reader: asyncio.StreamReader) -> None:
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
        if size == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":
                pass
            return
        await reader.readexactly(size + 2)


async def _replay(parked: Parked, writer: asyncio.StreamWriter) -> bool:
    """Writes the parked answer with chunked encoding; False if the connection cannot go on."""
    lines = [f"HTTP/1.1 {parked.status} {_REASONS.get(parked.status, 'OK')}"]
    lines += [f"{name}: {value}" for name, value in parked.headers]
    lines.append("transfer-encoding: chunked")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    body = parked.body
    try:
        async for chunk in body:
            if chunk:
                writer.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        await _close(body)
        raise
    except Exception:
        log.exception("an answer failed while it was relayed")
        await _close(body)
        return False  # no terminating chunk: mitmproxy sees the answer as cut off
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


async def _close(body: AsyncIterator[bytes]) -> None:
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


def _close_later(body: AsyncIterator[bytes]) -> None:
    with contextlib.suppress(RuntimeError):
        asyncio.get_running_loop().create_task(_close(body))
