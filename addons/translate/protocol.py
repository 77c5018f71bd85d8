"""What a protocol module offers, in the two roles it can play.

A *caller protocol* is what a client speaks to the gateway (OpenAI chat, Anthropic messages,
Gemini, ...). An *upstream dialect* is what the gateway speaks to an account's upstream. One
module per protocol implements whichever roles make sense for it; `registry.py` maps names to
modules. Everything here is pure: dicts and bytes in, dicts and bytes out, no I/O, no clock
except where an id or timestamp is passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from . import canonical as c


@dataclass(slots=True)
class ModelInfo:
    """One model as listed to callers."""

    id: str
    display_name: str | None = None
    owned_by: str = "switchyard"
    input_token_limit: int | None = None
    output_token_limit: int | None = None
    created: int = 0
    kind: str = "text"  # what the model makes: text, image or embedding


class StreamEncoder(Protocol):
    """Turns canonical events into the caller's stream bytes, keeping whatever state the
    format needs (open blocks, tool call indexes, sequence numbers)."""

    def encode(self, events: list[c.Event]) -> bytes:
        """Bytes for these events. After a Finish or StreamError the stream's own end marker
        (e.g. `data: [DONE]`, `message_stop`) is included; later calls return b""."""
        ...


class StreamDecoder(Protocol):
    """Turns an upstream's stream bytes, chunk by chunk as they arrive, into canonical events."""

    def feed(self, chunk: bytes) -> list[c.Event]: ...

    def close(self) -> list[c.Event]:
        """The upstream body ended. Returns the closing events: the BlockStop of an open block
        and exactly one Finish, or a StreamError when the stream ended without a proper end."""
        ...


class CallerProtocol(Protocol):
    """The caller's side of a protocol."""

    name: str  # e.g. "openai_chat", shown in logs and flows
    stream_content_type: str  # e.g. "text/event-stream"

    def decode_request(self, body: Any, *, model: str | None = None) -> c.Request:
        """Validate and decode a generate request. `model` is given when the path names it
        (Gemini). Raises c.BadRequest with a message that says what is wrong and where."""
        ...

    def encode_response(self, response: c.Response, request: c.Request) -> dict[str, Any]: ...

    def stream_encoder(self, request: c.Request, response_id: str, model: str, created: int) -> StreamEncoder: ...

    def error_body(self, status: int, message: str, kind: str | None = None) -> dict[str, Any]:
        """The protocol's own error shape; `kind` is a hint such as "rate_limit" or "auth"."""
        ...

    def encode_model_list(self, models: list[ModelInfo]) -> dict[str, Any]: ...


class UpstreamDialect(Protocol):
    """The gateway's side when it talks to an upstream of this protocol."""

    name: str

    def encode_request(self, request: c.Request, model: str) -> dict[str, Any]: ...

    def decode_response(self, body: Any) -> c.Response:
        """Raises c.BadUpstreamAnswer when the body is not this protocol's answer."""
        ...

    def stream_decoder(self) -> StreamDecoder: ...
