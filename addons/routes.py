"""Which protocol and operation a request is, from its method and path alone."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Route:
    protocol: str  # a caller protocol name, or "local" for the gateway's own endpoints
    # generate | count_tokens | models | model | health | metrics | dashboard, or one of the
    # gateway's added operations: images | image_edits | embeddings | embed_content | batch_embed_contents
    operation: str
    model: str | None = None  # named by the path (Gemini)
    stream: bool | None = None  # decided by the path (Gemini's streamGenerateContent)
    sse: bool = True  # Gemini streams: SSE with ?alt=sse, a JSON array without


_GEMINI = r"/v1(?:beta|alpha)?/models/(?P<model>[^/:?]+)"
_GEMINI_ONLY = r"/v1(?:beta|alpha)/models"  # plain /v1/models is shared with OpenAI and Anthropic

# (method, path pattern, protocol, operation, stream). First match wins; paths match whole.
ROUTES: list[tuple[str, re.Pattern[str], str, str, bool | None]] = [
    (method, re.compile(pattern), protocol, operation, stream)
    for method, pattern, protocol, operation, stream in [
        ("GET", r"/healthz", "local", "health", None),
        ("GET", r"/", "local", "health", None),
        ("HEAD", r"/", "local", "health", None),  # Claude Code's connectivity check
        ("GET", r"/metrics", "local", "metrics", None),
        ("POST", r"(?:/v1)?/chat/completions", "openai_chat", "generate", None),
        ("POST", r"(?:/v1)?/completions", "openai_completions", "generate", None),
        ("POST", r"(?:/v1)?/responses", "openai_responses", "generate", None),
        ("POST", r"(?:/v1)?/messages", "anthropic", "generate", None),
        ("POST", r"(?:/v1)?/messages/count_tokens", "anthropic", "count_tokens", None),
        ("POST", r"(?:/v1)?/images/generations", "openai_images", "images", None),
        ("POST", r"(?:/v1)?/images/edits", "openai_images", "image_edits", None),
        ("POST", r"(?:/v1)?/embeddings", "openai_embeddings", "embeddings", None),
        ("POST", _GEMINI + r":generateContent", "gemini", "generate", False),
        ("POST", _GEMINI + r":streamGenerateContent", "gemini", "generate", True),
        ("POST", _GEMINI + r":countTokens", "gemini", "count_tokens", None),
        ("POST", _GEMINI + r":embedContent", "gemini", "embed_content", None),
        ("POST", _GEMINI + r":batchEmbedContents", "gemini", "batch_embed_contents", None),
        ("GET", _GEMINI_ONLY, "gemini", "models", None),
        ("GET", _GEMINI_ONLY + r"/(?P<model>[^/:?]+)", "gemini", "model", None),
        ("GET", r"(?:/v1)?/models", "openai_chat", "models", None),
        ("GET", r"(?:/v1)?/models/(?P<model>[^/]+)", "openai_chat", "model", None),
        # The dashboard (addons/dashboard.py): its page, and the JSON admin API behind it.
        *(
            (method, pattern, "local", "dashboard", None)
            for pattern in (r"/ui(?:/.*)?", r"/api/.+") for method in ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
        ),
    ]
]
# Operations other addons answer (the gateway leaves them alone): /metrics, /ui/ and /api/.
ELSEWHERE = frozenset({"metrics", "dashboard"})


def classify(method: str, path: str, headers: dict[str, str] | None = None) -> Route | None:
    """The route for a request, or None when no route has this path (or not for this method)."""
    bare, _, query = path.partition("?")
    for route_method, pattern, protocol, operation, stream in ROUTES:
        match = pattern.fullmatch(bare)
        if match is None or route_method != method:
            continue
        model = match.groupdict().get("model")
        if protocol == "openai_chat" and operation in ("models", "model"):
            protocol = _model_list_protocol(headers or {}, query)
        return Route(protocol, operation, model, stream, sse="alt=sse" in query)
    return None


def _model_list_protocol(headers: dict[str, str], query: str) -> str:
    """`GET /v1/models` is shared: the Anthropic SDK and google-genai (which defaults to `/v1`)
    list models there too; their headers tell them apart."""
    if "anthropic-version" in headers:
        return "anthropic"
    if "x-goog-api-key" in headers or "key=" in query:
        return "gemini"
    return "openai_chat"


def path_exists(path: str) -> bool:
    bare = path.partition("?")[0]
    return any(pattern.fullmatch(bare) for _, pattern, *_ in ROUTES)


def guess_protocol(path: str, headers: dict[str, str]) -> str:
    """The protocol to answer an unroutable request in: the caller's, as far as it shows."""
    if path.startswith(("/v1beta", "/v1alpha")) or "x-goog-api-key" in headers:
        return "gemini"
    if "anthropic-version" in headers or "/messages" in path:
        return "anthropic"
    return "openai_chat"


def caller_protocol(method: str, path: str, headers: dict[str, str]) -> str:
    """The protocol to answer any request in, routable or not: refusals speak the caller's."""
    route = classify(method, path, headers)
    if route is not None and route.protocol != "local":
        return route.protocol
    return guess_protocol(path.partition("?")[0], headers)
