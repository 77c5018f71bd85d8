"""Where and how to send a request for each kind of account: URL, credentials, envelope.

What to *say* (the body in the upstream's protocol) is the translators' business; this table
only knows the transport: endpoints, paths, auth headers, and Google's v1internal envelope.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any, Literal

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
    project: str | None = None,
) -> Target:
    """The request to `base` for this account; `credential` is its access token or API key."""
    match account.kind:
        case "google":
            url = f"{base}:{_gemini_method(operation, stream)}"
            if operation == "count_tokens":
                wrapped = {"request": {"model": f"models/{model}", "contents": body.get("contents", [])}}
            else:
                wrapped = {
                    "project": project,
                    "model": model,
                    "request": body,
                    "userAgent": "antigravity",
                    "requestType": "agent",
                    "requestId": f"agent-{secrets.token_hex(8)}",
                }
            return Target(url, {"authorization": f"Bearer {credential}"}, wrapped)
        case "gemini":
            url = f"{base}/v1beta/models/{model}:{_gemini_method(operation, stream)}"
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
