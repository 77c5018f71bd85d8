"""OpenAI's Images API: `POST /v1/images/generations` and `POST /v1/images/edits` (multipart).

Served by image models on Google accounts (Cloud Code, as `image_gen` requests), on Gemini keys
(image output) and by OpenAI-compatible keys (the caller's own request, the model replaced).
Google's image models draw one picture per request, so `n` pictures are `n` requests made at
once, each routed like any generation: rotation, quota, cooldowns and the ledger alike.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mitmproxy import http

from pool.dispatch import Call, DispatchError, Exchange
from pool.health import ErrorClass, Verdict, embedded_error, network_failure
from pool.transport import TransportError
from pool.upstreams import MAKES_IMAGES, Form

from . import answers, routes, trace
from .translate import canonical as c
from .translate import images

if TYPE_CHECKING:
    from .gateway import Gateway

GOOGLE_KINDS = frozenset({"google", "gemini"})


@dataclass(slots=True)
class Drawn:
    """What one upstream exchange gave: pictures, or the caller's own OpenAI answer."""

    exchange: Exchange
    images: list[c.Image] = field(default_factory=list)
    usage: c.Usage = field(default_factory=c.Usage)
    native: bytes | None = None  # an OpenAI upstream's answer, for an OpenAI caller as it is


async def generations(gw: Gateway, flow: http.HTTPFlow, route: routes.Route, headers: dict[str, str], t: trace.Trace) -> None:
    await _serve(gw, flow, images.decode_generation(gw._json_body(flow)), t)


async def edits(gw: Gateway, flow: http.HTTPFlow, route: routes.Route, headers: dict[str, str], t: trace.Trace) -> None:
    values, files = images.decode_form(flow.request.headers.get("content-type", ""), gw.body(flow))
    await _serve(gw, flow, images.decode_edit(values, files), t)


OPERATIONS = {"images": generations, "image_edits": edits}


async def _serve(gw: Gateway, flow: http.HTTPFlow, request: images.ImageRequest, t: trace.Trace) -> None:
    model = await gw._route_model(request.model)
    t.requested_model = request.model

    def encode(dialect: str, upstream_model: str) -> dict[str, Any] | Form:
        if dialect == "openai":
            out = images.encode_openai(request, upstream_model)
            return Form(*images.encode_form(*out)) if isinstance(out, tuple) else out
        body = images.encode_gemini(request, name_modalities=dialect == "gemini")
        return gw._for_cloudcode(body, upstream_model) if dialect == "antigravity" else body

    def call(kinds: frozenset[str]) -> Call:
        return Call(model=model, operation="images", stream=False, encode=encode, kinds=kinds)  # type: ignore[arg-type]

    first = await _draw(gw, call(MAKES_IMAGES), t)
    drawn = [first]
    if first.native is None and request.n > 1:  # a Google model: one picture per request
        more = await asyncio.gather(*(_draw(gw, call(GOOGLE_KINDS), t) for _ in range(request.n - 1)), return_exceptions=True)
        if failed := next((m for m in more if isinstance(m, BaseException)), None):
            raise failed
        drawn += more  # type: ignore[arg-type]
    exchange = drawn[-1].exchange
    t.status, t.outcome, t.ended = 200, "ok", time.monotonic()
    t.first_byte = t.ended - t.started
    if first.native is not None:
        t.usage, t.images = first.usage, len(first.images)
        flow.response = http.Response.make(200, first.native, {**answers.JSON_HEADERS, **gw._served_by(exchange)})
        return
    pictures = [image for d in drawn for image in d.images]
    t.usage = c.Usage(sum(d.usage.input_tokens for d in drawn), sum(d.usage.output_tokens for d in drawn))
    t.images = len(pictures)
    body = images.encode_response(pictures, request, int(time.time()), t.usage)
    flow.response = answers.json_response(200, body, gw._served_by(exchange))


async def _draw(gw: Gateway, call: Call, t: trace.Trace) -> Drawn:
    """One upstream exchange, moved on to another account while the answer is no answer."""
    assert gw.dispatcher is not None
    while True:
        exchange = await gw.dispatcher.send(call)
        gw._note(t, exchange)
        read = await (_read_openai(exchange) if exchange.dialect == "openai" else gw._read_whole(exchange))
        if not isinstance(read, Verdict):
            break
        gw.dispatcher.reject(exchange, read)
    gw.dispatcher.finish(exchange)
    if isinstance(read, bytes):
        return _native(exchange, read)
    answer = read[0]
    pictures = [part for part in answer.parts if isinstance(part, c.Image) and part.data]
    if not pictures:
        said = c.answer_text(answer.parts).strip()[:300] or "nothing"
        if answer.finish_reason == "content_filter":
            raise DispatchError(400, f"the image model declined to draw this prompt: {said}", error_class="content_filter")
        raise DispatchError(502, f"the image model answered without an image: {said}", error_class=ErrorClass.SERVER)
    return Drawn(exchange, pictures, answer.usage)


def _native(exchange: Exchange, raw: bytes) -> Drawn:
    """An OpenAI upstream's ImagesResponse, counted for the ledger."""
    body = json.loads(raw)
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    count = len(body.get("data") or [])
    drawn = Drawn(exchange, native=raw, usage=c.Usage(usage.get("input_tokens") or 0, usage.get("output_tokens") or 0))
    drawn.images = [c.Image("image/png")] * count
    return drawn


async def _read_openai(exchange: Exchange) -> bytes | Verdict:
    raw = b""
    try:
        async with asyncio.timeout(max(exchange.deadline - time.monotonic(), 0.001)):
            raw = await exchange.response.aread()
        body = json.loads(raw)
        if not isinstance(body, dict) or not isinstance(body.get("data"), list):
            raise ValueError("no data list")
        return raw
    except (TransportError, TimeoutError) as e:
        return network_failure(e)
    except ValueError as e:
        return embedded_error(raw) or Verdict(ErrorClass.SERVER, f"upstream images answer unreadable: {e}", 200)
    finally:
        await exchange.response.aclose()
