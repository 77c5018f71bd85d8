"""Server-sent events: an incremental parser and the encoder.

Network chunks are not event boundaries: an event can arrive split over several chunks and one
chunk can carry many events, so the parser buffers and cuts on blank lines only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class ServerSentEvent:
    data: str
    event: str | None = None
    id: str | None = None


class SSEParser:
    """Feed bytes as they arrive; get back the events completed so far."""

    __slots__ = ("_buffer", "_pending_cr")

    def __init__(self) -> None:
        self._buffer = b""
        self._pending_cr = False

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if self._pending_cr:
            chunk = b"\r" + chunk
            self._pending_cr = False
        if chunk.endswith(b"\r"):
            # "\r\n" may be split across chunks: decide when the next byte is known.
            chunk = chunk[:-1]
            self._pending_cr = True
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buffer = self._buffer + chunk
        *blocks, self._buffer = buffer.split(b"\n\n")
        return [event for block in blocks if (event := _parse_block(block)) is not None]

    def close(self) -> list[ServerSentEvent]:
        """The stream ended: a last event without its blank line still counts."""
        rest, self._buffer = self._buffer, b""
        event = _parse_block(rest.rstrip(b"\n")) if rest.strip() else None
        return [event] if event is not None else []


def _parse_block(block: bytes) -> ServerSentEvent | None:
    data: list[str] = []
    event = event_id = None
    for raw in block.split(b"\n"):
        if not raw or raw.startswith(b":"):
            continue
        name, _, value = raw.decode("utf-8", "replace").partition(":")
        if value.startswith(" "):
            value = value[1:]
        if name == "data":
            data.append(value)
        elif name == "event":
            event = value
        elif name == "id":
            event_id = value
    if not data and event is None:
        return None
    return ServerSentEvent("\n".join(data), event, event_id)


def encode(data: str, event: str | None = None) -> bytes:
    if event is None:
        return b"data: " + data.encode() + b"\n\n"
    return b"event: " + event.encode() + b"\ndata: " + data.encode() + b"\n\n"
