"""The Gemini API (generativelanguage.googleapis.com): API keys, model list, generateContent,
streamGenerateContent (SSE or a JSON array) and countTokens, on /v1beta, /v1alpha and /v1."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .core import Ctx, Reply, Req, json_reply
from .refusals import refuse
from .gemini_body import check_signatures, gemini_conversation, gemini_docs, gemini_reply
from .util import IMAGE_TOKENS, estimate_tokens, thinking_model

if TYPE_CHECKING:
    from .state import ApiKey, SimState

GEMINI_PATH_RE = re.compile(r"^/v1(?:beta|alpha)?/models(?:/(?P<model>[^:/]+)(?::(?P<method>[A-Za-z]+))?)?$")
FAMILY = "gemini"  # whose thought signatures a Gemini key issues and accepts


def handle(state: SimState, req: Req, ctx: Ctx) -> Reply:
    m = GEMINI_PATH_RE.match(req.path)
    if m is None:
        raise refuse("gemini_path_not_found", path=req.path)
    key = api_key(state, req)
    ctx.who = key.who
    model, method = m["model"], m["method"]
    ctx.model = model
    if req.method == "GET" and method is None:
        ctx.meta = True
        return state.run(ctx, lambda: models(key, model, req.query))
    if req.method != "POST" or method not in ("generateContent", "streamGenerateContent", "countTokens"):
        raise refuse("gemini_path_not_found", path=f"{req.method} {req.path}")
    if not key.knows(model):
        raise refuse("gemini_model_method", model=model, method=method)
    body = req.json_object()
    ctx.stream = method == "streamGenerateContent"
    ctx.sse = req.query.get("alt") == "sse"
    if method == "countTokens":
        return state.run(ctx, lambda: count(body))

    def make() -> Reply:
        conv, turns = gemini_conversation(body)
        check_signatures(model, turns, state.issued[FAMILY])
        ans = state.compose(conv, key.who, model)
        docs = gemini_docs(ans, model, ctx.stream, thinking_model(model) or conv.thinking,
                           lambda: state.sign(FAMILY), state.conf["events"])
        return gemini_reply(docs, ctx.stream, req.query.get("alt") == "sse")
    return state.run(ctx, make)


def api_key(state: SimState, req: Req) -> ApiKey:
    given = req.headers.get("x-goog-api-key") or req.query.get("key")
    if not given:
        raise refuse("api_key_missing")
    key = state.keys.get(given)
    if key is None or key.kind != "gemini":
        raise refuse("api_key_invalid")
    return key


def model_entry(name: str) -> dict[str, Any]:
    return {"name": f"models/{name}", "version": "001", "displayName": name.replace("-", " ").title(),
            "description": f"Simulated {name}", "inputTokenLimit": 1048576, "outputTokenLimit": 65536,
            "supportedGenerationMethods": ["generateContent", "countTokens", "createCachedContent",
                                           "batchGenerateContent"],
            "temperature": 1, "topP": 0.95, "topK": 64, "maxTemperature": 2, "thinking": thinking_model(name)}


def models(key: ApiKey, model: str | None, query: dict[str, str]) -> Reply:
    if model is not None:
        if not key.knows(model):
            raise refuse("gemini_model_not_found", model=model)
        return json_reply(model_entry(model))
    names = key.listed()
    size = max(1, min(int(query.get("pageSize") or 50), 1000))
    start = int(query.get("pageToken") or 0)
    page: dict[str, Any] = {"models": [model_entry(n) for n in names[start:start + size]]}
    if start + size < len(names):
        page["nextPageToken"] = str(start + size)
    return json_reply(page)


def count(body: dict[str, Any]) -> Reply:
    if "contents" in body and "generateContentRequest" in body:
        raise refuse("count_two_bodies")
    inner = body.get("generateContentRequest")
    if inner is None:
        inner = {"contents": body.get("contents")}
    elif isinstance(inner, dict):
        inner = {k: v for k, v in inner.items() if k != "model"}
    conv, _ = gemini_conversation(inner, "generate_content_request" if "generateContentRequest" in body else "")
    return json_reply({"totalTokens": estimate_tokens(conv.chars) + IMAGE_TOKENS * conv.image_count})
