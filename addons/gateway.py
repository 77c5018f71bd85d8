"""The gateway: each caller request becomes one exchange with one account of the pool.

The `request` hook does all the deciding: it reads the caller's protocol, picks accounts and
rotates among them until one answers well — all before the caller gets a byte. A whole answer
is translated here and set as the flow's response; a stream's response is set here too, with
its body attached (`direct`), so mitmproxy streams it to the caller event by event.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from mitmproxy import http

from pool import fallbacks
from pool.dispatch import Call, DispatchError, Dispatcher, Exchange, read_body
from pool.fallbacks import Chain
from pool.health import ErrorClass, Verdict, embedded_error, network_failure
from pool import models
from pool.models import Listing
from pool.pool import Pool
from pool.transport import Transport, TransportError
from pool.config import ProxyConfig
from pool.upstreams import COUNTS_TOKENS

from . import answers, background, bodies, direct, estimate, routes, search, streaming, trace
from .clientkeys import Client, client_of
from .cluster import Cluster
from .conversations import ResponseHistory
from .recall import Recall
from .session import session_key
from .settings import Settings
from .signatures import SignatureCache, model_family
from .translate import canonical as c
from .translate import cloudcode, gemini, jsonbody, openai_responses, passthrough, registry
from .translate.assemble import Assembler
from .translate.protocol import ModelInfo, StreamDecoder

log = logging.getLogger("switchyard")

VERSION = "0.1.0"
ID_PREFIXES = {"openai_chat": "chatcmpl-", "openai_completions": "cmpl-", "openai_responses": "resp_", "anthropic": "msg_"}
GOOGLE_DIALECTS = frozenset({"gemini", "antigravity"})

# An operation beyond a model's answer (images, embeddings): its own module, wired in router.py.
OperationHandler = Callable[["Gateway", http.HTTPFlow, routes.Route, dict[str, str], trace.Trace], Awaitable[None]]


class Gateway:
    def __init__(self, settings: Settings, cluster: Cluster | None = None) -> None:
        self.settings = settings
        self.cluster = cluster or Cluster(settings)
        self.signatures = SignatureCache()
        self.history = ResponseHistory()
        self.recall = Recall(lambda: self.cluster.store, self.history, self.signatures)
        self.transport: Transport | None = None
        self.pool: Pool | None = None
        self.dispatcher: Dispatcher | None = None
        self.operations: dict[str, OperationHandler] = {}
        self._housekeeping: asyncio.Task | None = None

    # --- life cycle ----------------------------------------------------------------------------
    def running(self) -> None:
        config = self.settings.config
        if config is None or self.pool is not None:
            return
        self.transport = Transport(proxy=config.network.proxy or None)
        self.pool = Pool(config, self.settings.home, self.transport, self.cluster.store)
        self.dispatcher = Dispatcher(self.pool)
        self._housekeeping = asyncio.get_running_loop().create_task(self.pool.run())
        enabled = sum(a.enabled for a in self.pool.accounts)
        log.info("switchyard %s: %d accounts (%d enabled), data in %s", VERSION, len(self.pool.accounts), enabled, self.settings.home.data_dir)

    def done(self) -> None:
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        if self.pool is not None:
            try:
                self.pool.save()
            except Exception as e:
                log.warning("could not save the pool state: %s", e)
        if self.transport is not None:
            transport, self.transport = self.transport, None
            try:
                asyncio.get_running_loop().create_task(transport.aclose())
            except RuntimeError:
                pass

    # --- hooks -----------------------------------------------------------------------------------
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response is not None or self.pool is None:
            return
        headers = {k.lower(): v for k, v in flow.request.headers.items()}
        route = routes.classify(flow.request.method, flow.request.path, headers)
        if route is None:
            self._unroutable(flow, headers)
            return
        if route.operation in routes.ELSEWHERE:
            return
        t = trace.attach(flow, trace.Trace(protocol=route.protocol, operation=route.operation))
        try:
            await self._handle(flow, route, headers, t)
        except c.BadRequest as e:
            self._fail(flow, t, route.protocol, e.status, e.message, kind="invalid_request")
        except DispatchError as e:
            t.attempts = e.attempts
            self._fail(flow, t, route.protocol, e.status, e.message, kind=e.error_class, retry_after=e.retry_after)
        except Exception as e:  # a bug must cost one request, never the gateway
            log.exception("request failed inside the gateway")
            self._fail(flow, t, route.protocol, 500, f"internal gateway error ({type(e).__name__})")
        # What the request taught the pool (cooldowns, errors, quota) is on disk before the caller
        # hears of it, so `switchyard accounts list` right after shows it; a no-op when nothing changed.
        await self.pool.flush()
        await self.cluster.store.settle()  # with replicas: this turn's history is shared before the caller has it

    def error(self, flow: http.HTTPFlow) -> None:
        direct.discard(flow)

    # --- routing -------------------------------------------------------------------------------
    async def _handle(self, flow: http.HTTPFlow, route: routes.Route, headers: dict[str, str], t: trace.Trace) -> None:
        match route.operation:
            case "health":
                flow.response = answers.json_response(200, {"status": "ok", "version": VERSION, **self.cluster.health()})
                t.outcome = "local"
            case "models":
                await self._models(flow, route)
                t.outcome = "local"
            case "model":
                await self._model(flow, route)
                t.outcome = "local"
            case "generate":
                await self._generate(flow, route, headers, t)
            case "count_tokens":
                await self._count_tokens(flow, route, t)
            case operation if (handler := self.operations.get(operation)) is not None:
                await handler(self, flow, route, headers, t)

    def _unroutable(self, flow: http.HTTPFlow, headers: dict[str, str]) -> None:
        path = flow.request.path.partition("?")[0]
        protocol = routes.guess_protocol(path, headers)
        if routes.path_exists(path):
            message = f"{flow.request.method} is not allowed on {path}"
            flow.response = answers.error(protocol, 405, message)
        else:
            flow.response = answers.error(protocol, 404, f"unknown path {path}", kind="not_found")

    def _fail(
        self,
        flow: http.HTTPFlow,
        t: trace.Trace,
        protocol: str,
        status: int,
        message: str,
        *,
        kind: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        t.status, t.error, t.ended = status, message, time.monotonic()
        if t.outcome == "pending":
            t.outcome = kind or "error"
        flow.response = answers.error(protocol, status, message, kind=kind, retry_after=retry_after)

    # --- model lists -------------------------------------------------------------------------------
    async def _model_infos(self) -> list[ModelInfo]:
        """The pool's models and the exact names of `[model_mapping]`. Right after a start the
        Google catalogues are still on their way: wait for them (bounded), as routing does."""
        assert self.pool is not None
        await self.pool.know_models()
        listing = self.pool.catalogue()
        for name in self.pool.config.model_mapping:
            if not any(ch in name for ch in "*?["):
                listing.setdefault(name, Listing())
        return [
            ModelInfo(
                id=name, display_name=entry.display_name or name,
                input_token_limit=entry.max_tokens, output_token_limit=entry.max_output_tokens, kind=models.kind(name),
            )
            for name, entry in sorted(listing.items())
        ]

    async def _models(self, flow: http.HTTPFlow, route: routes.Route) -> None:
        caller = registry.CALLERS[route.protocol]
        client = client_of(flow)
        infos = [m for m in await self._model_infos() if client is None or client.allows(m.id)]
        flow.response = answers.json_response(200, caller.encode_model_list(infos))

    async def _model(self, flow: http.HTTPFlow, route: routes.Route) -> None:
        name = (route.model or "").removeprefix("models/")
        info = next((m for m in await self._model_infos() if m.id == name), None)
        if info is None:
            flow.response = answers.error(route.protocol, 404, f"model {name!r} is not served here", kind="not_found")
            return
        caller = registry.CALLERS[route.protocol]
        body = caller.encode_model_list([info])
        item = body["models"][0] if "models" in body else body["data"][0]
        flow.response = answers.json_response(200, item)

    async def _route_model(self, requested: str) -> str:
        assert self.pool is not None
        if not requested.isprintable():  # it goes into headers and upstream URLs: no line breaks, NULs, bidi marks
            raise c.BadRequest(f"model: {requested!r} is not a model name", param="model")
        await self.pool.know_models()
        return self.pool.resolve(requested)

    # --- generation ----------------------------------------------------------------------------------
    def _decode(self, flow: http.HTTPFlow, route: routes.Route) -> tuple[dict[str, Any], c.Request]:
        body = self._json_body(flow)
        caller: Any = registry.CALLERS[route.protocol]
        if route.protocol == "openai_responses":
            request = caller.decode_request(body, model=route.model, history=self._history_of(body))
        else:
            request = caller.decode_request(body, model=route.model)
        if route.stream is not None:
            request.stream = route.stream
        search.online(request)
        return body, request

    def _history_of(self, body: dict[str, Any]) -> list[c.Message] | None:
        previous = body.get("previous_response_id")
        if previous is None:
            return None
        history = self.history.get(previous) if isinstance(previous, str) else None
        if history is None:
            raise c.BadRequest(f"Previous response with id {previous!r} not found.", param="previous_response_id")
        return history

    async def _generate(self, flow: http.HTTPFlow, route: routes.Route, headers: dict[str, str], t: trace.Trace) -> None:
        assert self.pool is not None
        if route.protocol == "openai_responses" and self.cluster.store.active:  # another replica's turn?
            await self.recall.conversation(self._json_body(flow).get("previous_response_id"))
        body, request = self._decode(flow, route)
        await self.recall.known_signatures(request)
        self.signatures.restore(request)
        model = search.searching_model(self.pool, request, await self._route_model(request.model))
        t.requested_model, t.stream = request.model, request.stream
        models = await self._models_for(request, model, client_of(flow), t)
        session = session_key(headers, body, request)
        encode = self._encoder(route, body, request)
        call = Call(
            model=models[0], operation=search.operation(request), stream=request.stream, encode=encode, session=session,
            forward=self._forwarded(route, headers),
        )
        assert self.dispatcher is not None
        chain = Chain(self.dispatcher, call, models)
        if request.stream:
            await self._stream(flow, route, request, chain, t)
        else:
            await self._whole(flow, route, request, chain, t)

    async def _models_for(self, request: c.Request, model: str, client: Client | None, t: trace.Trace) -> list[str]:
        """The models that may serve, in order: `background_model` first for a side request an
        agent sent (`background.RULES`), then each one's `[fallbacks]`, within the key's models."""
        assert self.pool is not None
        if client is not None and not client.allows(model):
            allowed = ", ".join(client.models)
            raise DispatchError(403, f"this key may not use the model {model!r} (it may use {allowed})", error_class="forbidden")
        config = self.pool.config
        table, resolve = config.fallbacks, self.pool.resolve
        models = fallbacks.models(model, table, resolve, asked=request.model)
        if config.routing.background_model and (rule := background.recognise(request)) is not None:
            side = [m for m in fallbacks.models(await self._route_model(config.routing.background_model), table, resolve)
                    if client is None or client.allows(m)]
            if side:  # else the key may not use it: the request stays on its own model
                t.background = rule.name
                models = side + [m for m in models if m not in side]
        return [m for m in models if client is None or client.allows(m)]

    def _encoder(self, route: routes.Route, body: dict[str, Any], request: c.Request) -> Callable[[str, str], dict[str, Any]]:
        """The request's body for each (dialect, upstream model) an account offers: the caller's
        own where the upstream speaks its protocol and takes its signatures, else a translation
        without the signatures of another model family; for v1internal, then fitted to the model."""

        def encode(dialect: str, upstream_model: str) -> dict[str, Any]:
            family = model_family(upstream_model, dialect)
            if passthrough.is_native(route.protocol, dialect) and self.signatures.honoured(request, family):
                out = passthrough.request_body(route.protocol, dialect, body, upstream_model, stream=request.stream)
            else:
                upstream_request = self.signatures.for_upstream(request, family)
                out = registry.DIALECTS[dialect].encode_request(upstream_request, upstream_model)
            if dialect in GOOGLE_DIALECTS:
                out = gemini.fit_search(out, search.wanted(request))
            return self._for_cloudcode(out, upstream_model) if dialect == "antigravity" else out

        return encode

    def _for_cloudcode(self, body: dict[str, Any], model: str) -> dict[str, Any]:
        """A v1internal body as `model` takes it (Claude models there keep Anthropic's rules)."""
        assert self.pool is not None
        return cloudcode.prepare(
            body, model, output_limit=self.pool.output_limit(model), signature_family=self.signatures.family
        )

    @staticmethod
    def _forwarded(route: routes.Route, headers: dict[str, str]) -> dict[str, dict[str, str]]:
        """Caller headers that belong to the body: an Anthropic body's betas (Claude Code puts a
        system message inside `messages` under one) must reach an Anthropic upstream with it."""
        if route.protocol != "anthropic":
            return {}
        kept = {name: headers[name] for name in ("anthropic-beta", "anthropic-version") if name in headers}
        return {"anthropic": kept} if kept else {}

    async def _whole(self, flow: http.HTTPFlow, route: routes.Route, request: c.Request, chain: Chain, t: trace.Trace) -> None:
        """Reads the whole upstream answer, then answers the caller in its protocol."""
        assert self.dispatcher is not None
        call = chain.call
        while True:
            exchange = await chain.send()
            self._note(t, exchange, chain)
            read = await self._read_whole(exchange)
            if not isinstance(read, Verdict):
                break
            self.dispatcher.reject(exchange, read)
        answer, raw = read
        self.dispatcher.finish(exchange, session=call.session)
        answer.id, answer.model, answer.created = self._new_id(route), request.model, int(time.time())
        self._remember(route, exchange, request, answer)
        t.usage, t.status, t.outcome = answer.usage, 200, "ok"
        t.images = sum(isinstance(part, c.Image) for part in answer.parts)
        t.ended = time.monotonic()
        t.first_byte = t.ended - t.started
        if passthrough.is_native(route.protocol, exchange.dialect):
            content = passthrough.response_body(exchange.dialect, raw, streamed=exchange.streamed)
            flow.response = http.Response.make(200, content, {**answers.JSON_HEADERS, **self._served_by(exchange, t)})
            return
        caller = registry.CALLERS[route.protocol]
        flow.response = answers.json_response(200, caller.encode_response(answer, request), self._served_by(exchange, t))

    @staticmethod
    async def _read_whole(exchange: Exchange) -> tuple[c.Response, bytes] | Verdict:
        """The upstream's answer read to its end and decoded, or why it is no answer (then the
        request may still go to another account)."""
        dialect = registry.DIALECTS[exchange.dialect]
        raw = b""
        try:
            if exchange.streamed:
                whole = await streaming.collect(exchange, dialect.stream_decoder())
                if isinstance(whole, Verdict):
                    return whole
                assembler = Assembler("", exchange.model)
                assembler.extend(whole.events)
                return assembler.response, whole.raw
            raw = await read_body(exchange)
            return dialect.decode_response(json.loads(raw)), raw
        except TransportError as e:
            return network_failure(e)
        except (ValueError, c.BadUpstreamAnswer) as e:
            return embedded_error(raw) or Verdict(ErrorClass.SERVER, f"upstream answer unreadable: {e}", 200)
        finally:
            await exchange.response.aclose()

    async def _stream(self, flow: http.HTTPFlow, route: routes.Route, request: c.Request, chain: Chain, t: trace.Trace) -> None:
        """Waits for the first real event of an upstream stream, then streams the rest to the caller."""
        assert self.dispatcher is not None
        call = chain.call
        while True:
            exchange = await chain.send()
            self._note(t, exchange, chain)
            decoder = registry.DIALECTS[exchange.dialect].stream_decoder()
            start = await streaming.prefetch(exchange, decoder)
            if isinstance(start, streaming.Prefetched):
                break
            await exchange.response.aclose()
            self.dispatcher.reject(exchange, start)
        try:
            headers, body = self._caller_stream(route, request, call, t, exchange, decoder, start)
        except BaseException:
            self.dispatcher.finish(exchange, session=call.session)
            await exchange.response.aclose()
            raise
        # From here the body cleans up after itself (its `finally`), however the flow ends.
        await direct.answer(flow, 200, headers, body)
        t.status = 200
        t.first_byte = time.monotonic() - t.started

    def _caller_stream(
        self,
        route: routes.Route,
        request: c.Request,
        call: Call,
        t: trace.Trace,
        exchange: Exchange,
        decoder: StreamDecoder,
        start: streaming.Prefetched,
    ) -> tuple[list[tuple[str, str]], AsyncIterator[bytes]]:
        """The caller's stream: its headers and its body."""
        assert self.dispatcher is not None
        dispatcher = self.dispatcher
        response_id = self._new_id(route)
        output = self._stream_output(route, request, exchange, response_id)
        assembler = Assembler(response_id, request.model)

        def observe(events: list[c.Event]) -> None:
            assembler.extend(events)
            if assembler.finished:
                t.usage = assembler.response.usage
                t.images = sum(isinstance(part, c.Image) for part in assembler.response.parts)

        def done(verdict: Verdict | None, finished: bool) -> None:
            t.ended = time.monotonic()
            if verdict is not None:
                t.outcome, t.error = verdict.error_class, verdict.message
                dispatcher.finish(exchange, verdict)
                return
            t.outcome = "ok" if finished else "client_closed"
            dispatcher.finish(exchange, session=call.session)
            if assembler.finished:
                self._remember(route, exchange, request, assembler.response)

        caller = registry.CALLERS[route.protocol]
        sse = route.sse or route.protocol != "gemini"
        headers = [("content-type", caller.stream_content_type if sse else "application/json"), ("cache-control", "no-cache")]
        headers += list(self._served_by(exchange, t).items())
        return headers, streaming.body(exchange, decoder, output, start, observe, done)

    def _stream_output(self, route: routes.Route, request: c.Request, exchange: Exchange, response_id: str) -> streaming.Output:
        caller: Any = registry.CALLERS[route.protocol]
        if passthrough.is_native(route.protocol, exchange.dialect):
            relay = passthrough.Passthrough(
                route.protocol, exchange.dialect, sse=route.sse, caller_wants_usage=request.include_usage
            )
            return streaming.Native(relay, caller.error_body)
        options = {"sse": route.sse} if route.protocol == "gemini" else {}
        return streaming.Translated(caller.stream_encoder(request, response_id, request.model, int(time.time()), **options))

    def _remember(self, route: routes.Route, exchange: Exchange, request: c.Request, answer: c.Response) -> None:
        """Keeps what the caller cannot carry to the next turn: signatures (of the model's
        family), Responses history."""
        family = model_family(exchange.model, exchange.dialect)
        self.signatures.remember(answer.parts, family)
        history = openai_responses.to_history(request, answer) if route.protocol == "openai_responses" else None
        if history is not None:
            self.history.put(answer.id, history)
        self.recall.remembered(answer.parts, family, answer.id, history)

    @staticmethod
    def _new_id(route: routes.Route) -> str:
        return ID_PREFIXES.get(route.protocol, "") + secrets.token_hex(12)

    @staticmethod
    def _note(t: trace.Trace, exchange: Exchange, chain: Chain | None = None) -> None:
        t.account_id, t.account, t.model = exchange.account.id, exchange.account.name, exchange.model
        t.attempts = exchange.attempts
        fell_back = chain.fell_back if chain is not None else None
        t.fallback_from, t.fallback_reason = fell_back or (None, None)

    @staticmethod
    def _served_by(exchange: Exchange, t: trace.Trace | None = None) -> dict[str, str]:
        """Who served: the account and model, and why that model when it was not the routed one."""
        headers = {"x-switchyard-account": exchange.account.id, "x-switchyard-model": exchange.model}
        if t is not None and t.fallback_from:
            headers["x-switchyard-fallback-from"] = t.fallback_from
            headers["x-switchyard-fallback-reason"] = t.fallback_reason or ""
        if t is not None and t.background:
            headers["x-switchyard-background"] = t.background
        return headers

    # --- counting tokens --------------------------------------------------------------------------------
    async def _count_tokens(self, flow: http.HTTPFlow, route: routes.Route, t: trace.Trace) -> None:
        """Upstream countTokens where an account can; a documented estimate otherwise."""
        assert self.pool is not None and self.dispatcher is not None
        caller: Any = registry.CALLERS[route.protocol]
        body = self._json_body(flow)
        request = caller.decode_count_request(body, model=route.model)
        model = await self._route_model(request.model)
        t.requested_model = request.model

        def encode(dialect: str, upstream_model: str) -> dict[str, Any]:
            upstream: Any = registry.DIALECTS[dialect]
            encoder = getattr(upstream, "encode_count_request", upstream.encode_request)
            out = encoder(request, upstream_model)
            return self._for_cloudcode(out, upstream_model) if dialect == "antigravity" else out

        call = Call(model=model, operation="count_tokens", stream=False, encode=encode, kinds=COUNTS_TOKENS)
        total: int | None = None
        try:
            exchange = await self.dispatcher.send(call)
        except DispatchError as e:
            t.attempts = e.attempts
        else:
            self._note(t, exchange)
            try:
                raw = await read_body(exchange)
                total = estimate.read_count(json.loads(raw))
                self.dispatcher.finish(exchange)
            except (TransportError, TimeoutError, ValueError) as e:
                self.dispatcher.finish(exchange, Verdict(ErrorClass.SERVER, f"countTokens answer unreadable: {e}", 200))
            finally:
                await exchange.response.aclose()
        if total is None:
            total = estimate.tokens(request)
            t.account = "local estimate"
        t.outcome, t.status, t.ended = "ok", 200, time.monotonic()
        flow.response = answers.json_response(200, caller.encode_count_response(total))

    def _json_body(self, flow: http.HTTPFlow) -> dict[str, Any]:
        return jsonbody.parse(self.body(flow))

    def body(self, flow: http.HTTPFlow) -> bytes:
        """The caller's body, decoded within `max_body_mb` (ClientLimits refuses bigger bodies as
        they arrive; this holds where it could not watch, and for compressed ones)."""
        proxy = self.settings.config.proxy if self.settings.config is not None else ProxyConfig()
        try:
            return bodies.read(flow.request, proxy.max_body)
        except bodies.BodyError as e:
            raise c.BadRequest(e.message, status=e.status) from None
