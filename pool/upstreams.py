"""Where and how to send a request for each kind of account: URL, credentials, envelope.

What to *say* (the body in the upstream's protocol) is the translators' business; this table
only knows the transport: endpoints, paths, auth headers, and Google's v1internal envelope.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from . import identity, models
from .accounts import Account, Kind
from .config import Config

# generate: a model answers (search: one that may search the web while it does); images: the
# OpenAI Images API's work; embeddings: vectors for texts.
Operation = Literal["generate", "search", "count_tokens", "images", "embeddings"]

DIALECTS: dict[Kind, str] = {
    "google": "antigravity",
    "gemini": "gemini",
    "openai": "openai",
    "anthropic": "anthropic",
}

DEFAULT_BASE_URLS: dict[Kind, str] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
}

# Upstreams that can count tokens; for the others the gateway estimates locally.
COUNTS_TOKENS: frozenset[Kind] = frozenset({"google", "gemini", "anthropic"})
# Upstreams that make images (Google's image models, OpenAI's Images API) and embeddings (Cloud
# Code is not known to offer any).
MAKES_IMAGES: frozenset[Kind] = frozenset({"google", "gemini", "openai"})
EMBEDS: frozenset[Kind] = frozenset({"gemini", "openai"})

# Cloud Code's envelope says what kind of work a request is; an image model's is always image_gen.
REQUEST_TYPES: dict[str, str] = {"generate": "agent", "search": "web_search", "images": "image_gen"}
GENERATING: frozenset[str] = frozenset(REQUEST_TYPES)

# Kinds whose whole answers are asked for as a stream and assembled by the gateway: Cloud Code
# serves its clients so (Antigravity's own practice), and a stream lets the gateway see a refusal
# in the first event, not after the whole answer.
STREAMS_UPSTREAM: frozenset[Kind] = frozenset({"google"})


def streams(account: Account, operation: Operation, stream: bool) -> bool:
    """Whether this exchange is a stream upstream (whatever the caller asked for)."""
    return stream or (operation in GENERATING and account.kind in STREAMS_UPSTREAM)


def request_type(operation: Operation, model: str) -> str:
    return "image_gen" if models.kind(model) == "image" else REQUEST_TYPES.get(operation, "agent")


def session_id(conversation: str | None) -> str:
    """Cloud Code's `sessionId`: one per conversation, the same on every turn (the service keys
    its caches on it), in the form its own clients send: "-" and a positive 63-bit number."""
    if conversation is None:
        return "-" + str(secrets.randbits(63))
    digest = hashlib.sha256(conversation.encode()).digest()
    return "-" + str(int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF)


@dataclass(frozen=True, slots=True)
class Form:
    """A body that is not JSON: multipart form data (OpenAI's image edits)."""

    content: bytes
    content_type: str


Body = dict[str, Any] | Form


@dataclass(slots=True)
class Target:
    url: str
    headers: dict[str, str]
    body: Body
    proxy: str | None = None  # the account's own outbound proxy (None: the gateway's route)


def endpoints(account: Account, config: Config) -> list[str]:
    """Base URLs to try in order for this account (several only for Google accounts)."""
    match account.kind:
        case "google":
            return list(config.upstreams.antigravity.endpoints)
        case "gemini":
            return [(account.base_url or config.upstreams.gemini.base_url).rstrip("/")]
        case kind:
            return [(account.base_url or DEFAULT_BASE_URLS[kind]).rstrip("/")]


def target(
    account: Account,
    base: str,
    operation: Operation,
    *,
    model: str,
    stream: bool,
    body: Body,
    credential: str,
    config: Config,
    project: str | None = None,
    session: str | None = None,
) -> Target:
    """The request to `base` for this account; `credential` is its access token or API key,
    `session` the conversation it belongs to."""
    match account.kind:
        case "google":
            assert isinstance(body, dict)
            url = f"{base}:{_gemini_method(operation, streams(account, operation, stream), body)}"
            if operation == "count_tokens":
                wrapped = {"request": {"model": f"models/{model}", "contents": body.get("contents", [])}}
            else:
                wrapped = {
                    "project": project,
                    "model": model,
                    "request": {**body, "sessionId": session_id(session)},
                    "userAgent": "antigravity",
                    "requestType": request_type(operation, model),
                    "requestId": f"agent-{uuid.uuid4()}",
                }
            headers = {"authorization": f"Bearer {credential}", **identity.headers(config.upstreams.antigravity)}
            return Target(url, headers, wrapped, account.proxy)
        case "gemini":
            assert isinstance(body, dict)
            # One path segment, whatever the caller named: "x/../y" or "x?key=" must not bend the URL.
            url = f"{base}/v1beta/models/{quote(model, safe='')}:{_gemini_method(operation, stream, body)}"
            return Target(url, {"x-goog-api-key": credential}, body, account.proxy)
        case "openai":
            url = f"{base}{_openai_path(operation, body)}"
            return Target(url, {"authorization": f"Bearer {credential}"}, body, account.proxy)
        case "anthropic":
            path = "/v1/messages/count_tokens" if operation == "count_tokens" else "/v1/messages"
            headers = {"x-api-key": credential, "anthropic-version": "2023-06-01"}
            return Target(f"{base}{path}", headers, body, account.proxy)
    raise ValueError(f"unknown account kind {account.kind!r}")


def _gemini_method(operation: Operation, stream: bool, body: dict[str, Any]) -> str:
    if operation == "count_tokens":
        return "countTokens"
    if operation == "embeddings":
        return "batchEmbedContents" if "requests" in body else "embedContent"
    return "streamGenerateContent?alt=sse" if stream else "generateContent"


def _openai_path(operation: Operation, body: Body) -> str:
    if operation == "images":
        return "/images/edits" if isinstance(body, Form) else "/images/generations"
    return "/embeddings" if operation == "embeddings" else "/chat/completions"
