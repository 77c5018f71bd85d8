"""The Gemini API (generativelanguage.googleapis.com): API keys, model list, generateContent,
streamGenerateContent (SSE or a JSON array) and countTokens, on /v1beta, /v1alpha and /v1."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .core import Ctx, Reply, Req, json_reply
from .refusals import refuse
from .gemini_body import (check_signatures, gemini_conversation, gemini_docs, gemini_reply, image_model,
                          image_model_rules, known_fields)
from .util import IMAGE_TOKENS, embedding, estimate_tokens, thinking_model

if TYPE_CHECKING:
    from .state import ApiKey, SimState

GEMINI_PATH_RE = re.compile(r"^/v1(?:beta|alpha)?/models(?:/(?P<model>[^:/]+)(?::(?P<method>[A-Za-z]+))?)?$")
FAMILY = "gemini"  # whose thought signatures a Gemini key issues and accepts
GENERATE_METHODS = ("generateContent", "streamGenerateContent", "countTokens")
EMBED_METHODS = ("embedContent", "batchEmbedContents")
EMBED_FIELDS = frozenset(("model", "content", "taskType", "title", "outputDimensionality"))
EMBED_DIMENSIONS = 3072  # gemini-embedding-001's full size


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
    if req.method != "POST" or method not in GENERATE_METHODS + EMBED_METHODS:
        raise refuse("gemini_path_not_found", path=f"{req.method} {req.path}")
    generates = method in ("generateContent", "streamGenerateContent")
    if not key.knows(model) or (method in EMBED_METHODS and not embedding_model(model)) or (
            generates and embedding_model(model)):
        raise refuse("gemini_model_method", model=model, method=method)
    body = req.json_object()
    if method in EMBED_METHODS:
        return state.run(ctx, lambda: embed(body, model, batch=method == "batchEmbedContents"))
    ctx.stream = method == "streamGenerateContent"
    ctx.sse = req.query.get("alt") == "sse"
    if method == "countTokens":
        return state.run(ctx, lambda: count(body))

    def make() -> Reply:
        conv, turns = gemini_conversation(body)
        if image_model(model):
            image_model_rules(conv, body, model)
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


def embedding_model(model: str | None) -> bool:
    return model is not None and "embedding" in model


def model_entry(name: str) -> dict[str, Any]:
    if embedding_model(name):
        return {"name": f"models/{name}", "version": "001", "displayName": name.replace("-", " ").title(),
                "description": f"Simulated {name}", "inputTokenLimit": 2048, "outputTokenLimit": 1,
                "supportedGenerationMethods": ["embedContent", "countTextTokens", "countTokens",
                                               "asyncBatchEmbedContent"]}
    return {"name": f"models/{name}", "version": "001", "displayName": name.replace("-", " ").title(),
            "description": f"Simulated {name}", "inputTokenLimit": 1048576, "outputTokenLimit": 65536,
            "supportedGenerationMethods": ["generateContent", "countTokens", "createCachedContent",
                                           "batchGenerateContent"],
            "temperature": 1, "topP": 0.95, "topK": 64, "maxTemperature": 2, "thinking": thinking_model(name)}


def embed(body: dict[str, Any], model: str, *, batch: bool) -> Reply:
    """`:embedContent` ({content, taskType, title, outputDimensionality} -> {embedding: {values}})
    and `:batchEmbedContents` ({requests: [...]} -> {embeddings: [...]}): one vector per text,
    the same for the same text; a shorter outputDimensionality cuts it (not normalised again)."""
    if not batch:
        return json_reply({"embedding": embed_one(body, "")})
    known_fields(body, frozenset(("requests",)), "")
    requests = body.get("requests")
    if not isinstance(requests, list) or not 1 <= len(requests) <= 100:
        raise refuse("embed_batch", count=len(requests) if isinstance(requests, list) else 0)
    out = []
    for i, one in enumerate(requests):
        named = one.get("model") if isinstance(one, dict) else None
        if named is not None and str(named).removeprefix("models/") != model:
            raise refuse("embed_model_mismatch", index=i, model=named, expected=f"models/{model}")
        out.append(embed_one(one, f"requests[{i}]."))
    return json_reply({"embeddings": out})


def embed_one(request: Any, where: str) -> dict[str, Any]:
    fields = known_fields(request, EMBED_FIELDS, where.rstrip("."))
    content = fields.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list) or not parts:
        raise refuse("embed_content", where=where)
    if not all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in parts):
        raise refuse("embed_text", where=where)
    size = fields.get("outputDimensionality", EMBED_DIMENSIONS)
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= EMBED_DIMENSIONS:
        raise refuse("embed_dimensions", where=where, limit=EMBED_DIMENSIONS, value=size)
    return {"values": embedding(" ".join(p["text"] for p in parts), size)}


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
