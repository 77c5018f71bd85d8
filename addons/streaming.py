"""A caller's stream, made from an upstream's: what mitmproxy sends the caller, chunk by chunk.

Upstream bytes are decoded into canonical events as they arrive (for usage, thought signatures
and errors) and rendered for the caller either from those events (`Translated`) or, when both
sides speak one protocol, from the upstream's own events (`Native`). After the first byte has
gone out, a failure becomes the caller protocol's error event, never a silent stop. Every read
from the upstream is bounded (`pool.dispatch.next_chunk`): `first_byte_timeout` until the first
event, `idle_timeout` between two pieces after it, `request_timeout` overall.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pool.dispatch import Exchange, next_chunk
from pool.health import ErrorClass, Verdict, embedded_error, network_failure, outdated_text
from pool.transport import TransportError

from .translate import canonical as c
from .translate.passthrough import Passthrough
from .translate.protocol import StreamDecoder, StreamEncoder

log = logging.getLogger("switchyard")


class Output(Protocol):
    def chunk(self, raw: bytes, events: list[c.Event]) -> bytes: ...

    def end(self, events: list[c.Event]) -> bytes: ...


@dataclass(slots=True)
class Translated:
    """Renders canonical events in the caller's protocol."""

    encoder: StreamEncoder

    def chunk(self, raw: bytes, events: list[c.Event]) -> bytes:
        return self.encoder.encode(events) if events else b""

    def end(self, events: list[c.Event]) -> bytes:
        return self.encoder.encode(events)


@dataclass(slots=True)
class Native:
    """Forwards the upstream's own events; the events only tell whether it ended in error."""

    passthrough: Passthrough
    error_body: Callable[[int, str, str | None], dict[str, Any]]

    def chunk(self, raw: bytes, events: list[c.Event]) -> bytes:
        return self.passthrough.feed(raw)

    def end(self, events: list[c.Event]) -> bytes:
        error = next((e for e in events if isinstance(e, c.StreamError)), None)
        body = self.error_body(error.status, error.message, error.kind) if error else None
        return self.passthrough.close(body)


@dataclass(slots=True)
class Prefetched:
    """What was read before the caller got anything: the bytes and the events they made."""

    raw: list[bytes]
    events: list[c.Event]
    chunks: AsyncIterator[bytes]


async def prefetch(exchange: Exchange, decoder: StreamDecoder) -> Prefetched | Verdict:
    """Reads until the first real event. A stream that fails, stalls or ends before it is a
    failure of the account, and the request can still go to another one. So is an answer that is
    Google refusing the client's version: its text is read until it is told apart from a real
    one. Nothing has reached the caller yet, so an error among the first events counts too."""
    chunks = exchange.response.aiter_bytes()
    raw: list[bytes] = []
    events: list[c.Event] = []
    screen = exchange.account.kind == "google"
    try:
        while (chunk := await next_chunk(chunks, exchange, first_event=True)) is not None:
            raw.append(chunk)
            events += decoder.feed(chunk)
            if events and not (screen and _undecided(events)):
                break
        else:
            events += decoder.close()
    except TransportError as e:
        return network_failure(e)
    failed = _failure(events)
    if events and failed is None:
        if screen and outdated_text(_text(events)):
            return Verdict(ErrorClass.CLIENT_OUTDATED, _text(events)[:300], 200)
        return Prefetched(raw, events, chunks)
    message = failed.message if failed is not None else "empty stream"
    return embedded_error(b"".join(raw)) or Verdict(
        ErrorClass.SERVER, f"upstream stream failed before its first event: {message}", 200
    )


def _failure(events: list[c.Event]) -> c.StreamError | None:
    return next((e for e in events if isinstance(e, c.StreamError)), None)


def _text(events: list[c.Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, c.TextDelta))


def _undecided(events: list[c.Event]) -> bool:
    """Whether more must be read to tell a refusal text from a real answer."""
    if any(isinstance(e, c.Finish | c.StreamError) for e in events):
        return False
    return outdated_text(_text(events)) is None


@dataclass(slots=True)
class Whole:
    """A streamed upstream answer read to its end, for a caller that wants it whole."""

    raw: bytes
    events: list[c.Event]


async def collect(exchange: Exchange, decoder: StreamDecoder) -> Whole | Verdict:
    """The whole of a streamed answer, judged as `prefetch` judges its start; a stream that
    breaks, stalls or fails later is a failure of the account too (nothing went to the caller yet)."""
    start = await prefetch(exchange, decoder)
    if isinstance(start, Verdict):
        return start
    raw, events = list(start.raw), list(start.events)
    try:
        while (chunk := await next_chunk(start.chunks, exchange)) is not None:
            raw.append(chunk)
            events += decoder.feed(chunk)
            if _failure(events):
                break
        else:
            events += decoder.close()
    except TransportError as e:
        return network_failure(e)
    if failed := _failure(events):
        return Verdict(ErrorClass.SERVER, f"upstream stream failed: {failed.message}", 200)
    return Whole(b"".join(raw), events)


async def body(
    exchange: Exchange,
    decoder: StreamDecoder,
    output: Output,
    start: Prefetched,
    observe: Callable[[list[c.Event]], None],
    done: Callable[[Verdict | None, bool], None],
) -> AsyncIterator[bytes]:
    """The caller's stream. `observe` sees every event; `done(verdict, finished)` is called
    once at the end (`finished` False when the caller went away first)."""
    verdict: Verdict | None = None
    finished = False
    try:
        observe(start.events)
        out = b"".join(output.chunk(raw, []) for raw in start.raw[:-1]) + output.chunk(start.raw[-1], start.events)
        closing: list[c.Event]
        try:
            while True:
                # Once the upstream's answer is all in, the rest costs no wait: it goes out with
                # the end, in one piece, rather than as pieces a moment apart.
                if out and not exchange.response.ended:
                    yield out
                    out = b""
                if (chunk := await next_chunk(start.chunks, exchange)) is None:
                    closing = decoder.close()
                    break
                events = decoder.feed(chunk)
                if _failure(events):  # a broken answer ends here: its error, not the rest, goes out
                    closing = events
                    break
                observe(events)
                out += output.chunk(chunk, events)
        except TransportError as e:
            verdict = network_failure(e)
            if e.timeout:
                closing = [c.StreamError(f"the upstream stopped answering: {e}", 504, "timeout")]
            else:
                closing = [c.StreamError(f"the upstream connection broke mid-stream: {verdict.message}", 502)]
        observe(closing)
        failed = _failure(closing)
        if verdict is None and failed is not None:
            verdict = Verdict(ErrorClass.SERVER, failed.message, 200)
        finished = True
        yield out + output.end(closing)
    finally:
        await exchange.response.aclose()
        try:
            done(verdict, finished)
        except Exception:  # bookkeeping must not cut the caller's stream
            log.exception("finishing a stream's bookkeeping failed")
