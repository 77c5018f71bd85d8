"""Embeddings: OpenAI's `POST /v1/embeddings` and Gemini's `:embedContent` / `:batchEmbedContents`.

Served by Gemini keys and OpenAI-compatible keys, in either caller's shape; Google's Cloud Code
is not known to offer embeddings, so Google accounts never serve them. Inputs go to the upstream
in batches of at most 100 (Gemini's limit), each routed like any request; usage is the
upstream's token count, or an estimate where it gives none (the Gemini API).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from mitmproxy import http

from pool.dispatch import Call, Exchange
from pool.health import ErrorClass, Verdict, embedded_error, network_failure
from pool.transport import TransportError
from pool.upstreams import EMBEDS

from . import answers, routes, trace
from .translate import canonical as c
from .translate import embeddings as e

if TYPE_CHECKING:
    from .gateway import Gateway

DECODERS = {"gemini": e.decode_gemini_answer, "openai": e.decode_openai_answer}


async def openai_embeddings(gw: Gateway, flow: http.HTTPFlow, route: routes.Route, headers: dict[str, str], t: trace.Trace) -> None:
    request = e.decode_openai(gw._json_body(flow))
    answer, exchange, model = await _embed(gw, request, t, openai_caller=True)
    flow.response = answers.json_response(200, e.encode_openai_answer(answer, request, model), gw._served_by(exchange))


async def embed_content(gw: Gateway, flow: http.HTTPFlow, route: routes.Route, headers: dict[str, str], t: trace.Trace) -> None:
    await _gemini(gw, flow, route, t, batch=False)


async def batch_embed_contents(gw: Gateway, flow: http.HTTPFlow, route: routes.Route, headers: dict[str, str], t: trace.Trace) -> None:
    await _gemini(gw, flow, route, t, batch=True)


OPERATIONS = {"embeddings": openai_embeddings, "embed_content": embed_content, "batch_embed_contents": batch_embed_contents}


async def _gemini(gw: Gateway, flow: http.HTTPFlow, route: routes.Route, t: trace.Trace, *, batch: bool) -> None:
    request = e.decode_gemini(gw._json_body(flow), route.model or "", batch=batch)
    answer, exchange, _ = await _embed(gw, request, t, openai_caller=False)
    flow.response = answers.json_response(200, e.encode_gemini_answer(answer, request), gw._served_by(exchange))


async def _embed(gw: Gateway, request: e.EmbeddingRequest, t: trace.Trace, *, openai_caller: bool) -> tuple[e.Embeddings, Exchange, str]:
    """Every input embedded (in batches), and the exchange and model that served the last."""
    model = await gw._route_model(request.model)
    t.requested_model = request.model
    chunks = [
        e.EmbeddingRequest(request.model, request.inputs[i:i + e.GEMINI_BATCH], request.dimensions, "float",
                           request.extras[i:i + e.GEMINI_BATCH], request.batch)
        for i in range(0, len(request.inputs), e.GEMINI_BATCH)
    ]
    done = await asyncio.gather(*(_one(gw, chunk, model, t) for chunk in chunks), return_exceptions=True)
    if failed := next((d for d in done if isinstance(d, BaseException)), None):
        raise failed
    vectors: list[list[float]] = []
    tokens = 0
    for answer, exchange in done:  # type: ignore[misc]
        shortened = openai_caller and request.dimensions is not None and exchange.dialect == "gemini"
        vectors += [e.unit(v) for v in answer.vectors] if shortened else answer.vectors
        tokens += answer.input_tokens
    t.usage = c.Usage(input_tokens=tokens)
    t.status, t.outcome, t.ended = 200, "ok", time.monotonic()
    t.first_byte = t.ended - t.started
    return e.Embeddings(vectors, tokens), exchange, model


async def _one(gw: Gateway, request: e.EmbeddingRequest, model: str, t: trace.Trace) -> tuple[e.Embeddings, Exchange]:
    assert gw.dispatcher is not None

    def encode(dialect: str, upstream_model: str) -> dict[str, Any]:
        return e.encode_openai(request, upstream_model) if dialect == "openai" else e.encode_gemini(request, upstream_model)

    call = Call(model=model, operation="embeddings", stream=False, encode=encode, kinds=EMBEDS)
    while True:
        exchange = await gw.dispatcher.send(call)
        gw._note(t, exchange)
        read = await _read(exchange, request)
        if not isinstance(read, Verdict):
            break
        gw.dispatcher.reject(exchange, read)
    gw.dispatcher.finish(exchange)
    return read, exchange


async def _read(exchange: Exchange, request: e.EmbeddingRequest) -> e.Embeddings | Verdict:
    raw = b""
    try:
        async with asyncio.timeout(max(exchange.deadline - time.monotonic(), 0.001)):
            raw = await exchange.response.aread()
        return DECODERS[exchange.dialect](json.loads(raw), request)
    except (TransportError, TimeoutError) as error:
        return network_failure(error)
    except (ValueError, c.BadUpstreamAnswer) as error:
        return embedded_error(raw) or Verdict(ErrorClass.SERVER, f"upstream embeddings unreadable: {error}", 200)
    finally:
        await exchange.response.aclose()
