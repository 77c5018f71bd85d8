"""Streams an answer the gateway already holds straight into its flow's response.

Account rotation happens in the `request` hook, before mitmproxy contacts anyone, and mitmproxy
sends a response set there whole: it has no way for an addon to stream a body of its own. So
this teaches mitmproxy's HTTP stream one more path. A response set in `request` with a body
attached here is sent as a stream: its headers at once, then each chunk as the body yields it,
fed to the flow's own HTTP stream as events, which puts them through mitmproxy's streaming state
as it does an upstream's (stream callables, `store_streamed_bodies`, the `response` hook at the
end). No second hop through a loopback server (a second connection, request and chunked answer
through mitmproxy for every stream). mitmweb shows the flow as usual, and upstream URLs and
credentials never enter it.

A whole response an addon set (the gateway's answers, its refusals) goes to the caller before
the `response` hook rather than after it, as a streamed body does: the bookkeeping addons do
there (the ledger, metrics, the flow's summary) no longer stands between the caller and its
answer. An addon can still change such a response in `request` or `responseheaders`; in
`response` it sees what was sent.

The patch is small and checked when this module loads (`_check`): a mitmproxy whose HTTP
stream looks different fails at start, not per request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from mitmproxy import ctx, flow as mflow, http
from mitmproxy.proxy import events, layer
from mitmproxy.proxy.layers.http import DropStream, HttpLayer, HttpStream, SendHttp
from mitmproxy.proxy.layers.http._events import (
    ErrorCode,
    HttpEvent,
    RequestProtocolError,
    ResponseData,
    ResponseEndOfMessage,
    ResponseHeaders,
    ResponseProtocolError,
)
from mitmproxy.proxy.layers.http._hooks import HttpErrorHook

log = logging.getLogger("switchyard.direct")

Body = AsyncIterator[bytes]


@dataclass(slots=True)
class Source:
    body: Body
    first: bytes  # the body's first chunk, read before the response was set: it goes with the headers
    broken: bool = False  # the body failed before its first chunk
    task: asyncio.Task | None = None


class _End:
    """The body ended (`ok`) or broke off (not `ok`: the caller sees the answer cut off)."""

    def __init__(self, ok: bool) -> None:
        self.ok = ok


@dataclass
class _Piece(events.MessageInjected[bytes | _End]):
    """One chunk of an attached body, on its way down the flow's layers to its HTTP layer."""

    stream_id: int = 0


@dataclass
class _Chunk(HttpEvent):
    """The same chunk, as the HTTP layer hands it to the stream `stream_id`."""

    message: bytes | _End


_waiting: weakref.WeakKeyDictionary[http.HTTPFlow, Source] = weakref.WeakKeyDictionary()
_running: weakref.WeakKeyDictionary[http.HTTPFlow, Source] = weakref.WeakKeyDictionary()
_pumps: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks


def streaming() -> int:
    """Answers being streamed right now (or attached and about to be)."""
    return len(_waiting) + len(_running)


async def answer(flow: http.HTTPFlow, status: int, headers: list[tuple[str, str]], body: Body) -> None:
    """Sets the flow's response; its body streams to the caller as `body` yields it. The first
    chunk is read here and goes out with the headers, so the body has started: closing it (when
    the flow fails or the caller leaves) runs its own clean-up. Where the flow has no live
    connection (a flow made by a test or a script) the whole body is read here."""
    fields = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]
    response = http.Response.make(status, b"", http.Headers(fields))
    response.headers.pop("content-length", None)
    broken = False
    try:
        first = await anext(body)
    except StopAsyncIteration:  # an empty body: an empty answer
        response.content = b""
        flow.response = response
        return
    except Exception:
        log.exception("an answer failed before its first chunk")
        first, broken = b"", True
    if _handler(flow) is None:
        response.content = first + b"".join([chunk async for chunk in body])
        flow.response = response
        return
    response.headers["transfer-encoding"] = "chunked"
    flow.response = response
    _waiting[flow] = Source(body, first, broken)


def discard(flow: http.HTTPFlow) -> None:
    """The flow failed or its caller left: stop its body, so its upstream is released."""
    source = _waiting.pop(flow, None)
    if source is not None:
        _close_later(source.body)
        return
    source = _running.pop(flow, None)
    if source is not None and source.task is not None:
        source.task.cancel()


def _handler(flow: http.HTTPFlow) -> Any:
    """The connection handler of the flow's caller, which takes events for its HTTP streams."""
    server = ctx.master.addons.get("proxyserver") if hasattr(ctx, "master") else None
    connections = getattr(server, "connections", None)
    return connections.get(flow.client_conn.id) if connections else None


async def _pump(handler: Any, flow: http.HTTPFlow, stream_id: int, source: Source) -> None:
    """Feeds the body to the flow's HTTP stream, waiting for the caller to take each chunk."""
    body = source.body
    end = _End(ok=not source.broken)
    try:
        async for chunk in body if end.ok else _nothing():
            if chunk:
                await handler.server_event(_Piece(flow, chunk, stream_id))
                await handler.drain_writers()
    except (ConnectionError, asyncio.CancelledError):
        await _close(body)
        raise
    except Exception:
        log.exception("an answer failed while it was streamed")
        await _close(body)
        end = _End(ok=False)
    finally:
        _running.pop(flow, None)
    await handler.server_event(_Piece(flow, end, stream_id))


async def _nothing() -> Body:
    return
    yield


async def _close(body: Body) -> None:
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


def _close_later(body: Body) -> None:
    with contextlib.suppress(RuntimeError):
        asyncio.get_running_loop().create_task(_close(body))


# --- the patch of mitmproxy's HTTP stream ---------------------------------------------------------

_send_response = HttpStream.send_response
_handle_protocol_error = HttpStream.handle_protocol_error
_layer_event = HttpLayer._handle_event


def _stream_send_response(self: HttpStream, already_streamed: bool = False) -> layer.CommandGenerator[None]:
    source = None if already_streamed else _waiting.pop(self.flow, None)
    handler = _handler(self.flow) if source is not None else None
    if source is None or handler is None:
        if source is not None:  # the caller's connection is gone already: nobody takes the body
            _close_later(source.body)
        if not already_streamed and _made_here(self):
            return _send_first(self)
        return _send_response(self, already_streamed)
    return _start(self, handler, source)


def _made_here(self: HttpStream) -> bool:
    """A whole response an addon made (the gateway's answers and refusals), not one read from a server."""
    response = self.flow.response
    assert response
    return self.server_state != self.state_consume_response_body and not response.trailers and response.status_code != 101


def _send_first(self: HttpStream) -> layer.CommandGenerator[None]:
    """The caller has the whole answer before the `response` hook runs, as a streamed body does:
    the gateway's bookkeeping there (ledger, metrics, the flow's summary) costs the caller nothing."""
    response = self.flow.response
    assert response
    content = response.raw_content
    yield SendHttp(ResponseHeaders(self.stream_id, response, end_stream=not content), self.context.client)
    if content:
        yield SendHttp(ResponseData(self.stream_id, content), self.context.client)
    yield from _send_response(self, already_streamed=True)


def _start(self: HttpStream, handler: Any, source: Source) -> layer.CommandGenerator[None]:
    """A response with an attached body: its headers now, its body as `_Piece`s come."""
    assert self.flow.response
    _running[self.flow] = source
    self.server_state = self.state_switchyard_body
    yield SendHttp(ResponseHeaders(self.stream_id, self.flow.response, end_stream=False), self.context.client)
    if source.first:
        yield from self.state_stream_response_body(ResponseData(self.stream_id, source.first))
    # A plain task, not mitmproxy's eager one: the body starts once this event is handled.
    source.task = asyncio.Task(_pump(handler, self.flow, self.stream_id, source))
    _pumps.add(source.task)
    source.task.add_done_callback(_pumps.discard)


def _state_body(self: HttpStream, event: events.Event) -> layer.CommandGenerator[None]:
    if not isinstance(event, _Chunk):
        return
    if isinstance(event.message, bytes):
        yield from self.state_stream_response_body(ResponseData(self.stream_id, event.message))
    elif event.message.ok:
        yield from self.state_stream_response_body(ResponseEndOfMessage(self.stream_id))
    else:
        error = ResponseProtocolError(self.stream_id, "the answer broke off", ErrorCode.GENERIC_SERVER_ERROR)
        yield from self.handle_protocol_error(error)


def _stream_protocol_error(self: HttpStream, event: RequestProtocolError | ResponseProtocolError) -> layer.CommandGenerator[None]:
    if isinstance(event, RequestProtocolError) and self.server_state == self.state_switchyard_body:
        return _caller_left(self, event)
    return _handle_protocol_error(self, event)


def _caller_left(self: HttpStream, event: RequestProtocolError) -> layer.CommandGenerator[None]:
    """The caller left mid-body: there is no server to tell (mitmproxy would), only the body to stop."""
    self.flow.error = mflow.Error(event.message)
    yield HttpErrorHook(self.flow)
    self.client_state = self.server_state = self.state_errored
    self.flow.live = False
    discard(self.flow)
    yield DropStream(self.stream_id)


def _layer_handle_event(self: HttpLayer, event: events.Event) -> layer.CommandGenerator[None]:
    # Not a generator itself: every other event gets mitmproxy's own, with no frame in between.
    if isinstance(event, _Piece):
        return _to_stream(self, event)
    return _layer_event(self, event)


def _to_stream(self: HttpLayer, event: _Piece) -> layer.CommandGenerator[None]:
    stream = self.streams.get(event.stream_id)
    if stream is not None and getattr(stream, "flow", None) is event.flow:
        yield from self.event_to_child(stream, _Chunk(event.stream_id, event.message))
    # else the stream has ended (its caller left): nothing takes the chunk


def _check() -> None:
    needed = ("send_response", "handle_protocol_error", "state_stream_response_body", "state_errored")
    missing = [name for name in needed if not hasattr(HttpStream, name)]
    if missing or not hasattr(HttpLayer, "_handle_event"):
        raise ImportError(f"this mitmproxy's HTTP stream has no {missing}: streaming answers needs mitmproxy 12")


_check()
HttpStream.send_response = _stream_send_response  # type: ignore[method-assign]
HttpStream.handle_protocol_error = _stream_protocol_error  # type: ignore[method-assign]
HttpStream.state_switchyard_body = _state_body  # type: ignore[attr-defined]
HttpLayer._handle_event = _layer_handle_event  # type: ignore[method-assign]
