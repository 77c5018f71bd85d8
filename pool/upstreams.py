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

from . import identity
from .accounts import Account, Kind
from .config import Config

Operation = Literal["generate", "count_tokens"]

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

# Kinds whose whole answers are asked for as a stream and assembled by the gateway: Cloud Code
# serves its clients so (Antigravity's own practice), and a stream lets the gateway see a refusal
# in the first event, not after the whole answer.
STREAMS_UPSTREAM: frozenset[Kind] = frozenset({"google"})


def streams(account: Account, operation: Operation, stream: bool) -> bool:
    """Whether this exchange is a stream upstream (whatever the caller asked for)."""
    return stream or (operation == "generate" and account.kind in STREAMS_UPSTREAM)


def session_id(conversation: str | None) -> str:
    """Cloud Code's `sessionId`: one per conversation, the same on every turn (the service keys
    its caches on it), in the form its own clients send: "-" and a positive 63-bit number."""
    if conversation is None:
        return "-" + str(secrets.randbits(63))
    digest = hashlib.sha256(conversation.encode()).digest()
    return "-" + str(int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF)


@dataclass(slots=True)
class Target:
    url: str
    headers: dict[str, str]
    body: dict[str, Any]


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
    body: dict[str, Any],
    credential: str,
    config: Config,
    project: str | None = None,
    session: str | None = None,
) -> Target:
    """The request to `base` for this account; `credential` is its access token or API key,
    `session` the conversation it belongs to."""
    match account.kind:
        case "google":
            url = f"{base}:{_gemini_method(operation, streams(account, operation, stream))}"
            if operation == "count_tokens":
                wrapped = {"request": {"model": f"models/{model}", "contents": body.get("contents", [])}}
            else:
                wrapped = {
                    "project": project,
                    "model": model,
                    "request": {**body, "sessionId": session_id(session)},
                    "userAgent": "antigravity",
                    "requestType": "agent",
                    "requestId": f"agent-{uuid.uuid4()}",
                }
            headers = {"authorization": f"Bearer {credential}", **identity.headers(config.upstreams.antigravity)}
            return Target(url, headers, wrapped)
        case "gemini":
            # One path segment, whatever the caller named: "x/../y" or "x?key=" must not bend the URL.
            url = f"{base}/v1beta/models/{quote(model, safe='')}:{_gemini_method(operation, stream)}"
            return Target(url, {"x-goog-api-key": credential}, body)
        case "openai":
            return Target(f"{base}/chat/completions", {"authorization": f"Bearer {credential}"}, body)
        case "anthropic":
            path = "/v1/messages/count_tokens" if operation == "count_tokens" else "/v1/messages"
            headers = {"x-api-key": credential, "anthropic-version": "2023-06-01"}
            return Target(f"{base}{path}", headers, body)
    raise ValueError(f"unknown account kind {account.kind!r}")


def _gemini_method(operation: Operation, stream: bool) -> str:
    if operation == "count_tokens":
        return "countTokens"
    return "streamGenerateContent?alt=sse" if stream else "generateContent"
