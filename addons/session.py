"""The conversation a request belongs to, so `cache_first` can keep it on one account."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from .translate import canonical as c


def session_key(headers: Mapping[str, str], body: Mapping[str, Any], request: c.Request) -> str:
    """From the most explicit signal the client gives to the least; always encodable text (a
    header's raw bytes arrive as surrogates, and the key is hashed and stored)."""
    key = _session_key(headers, body, request)
    try:
        key.encode()
    except UnicodeEncodeError:
        key = key.encode(errors="backslashreplace").decode()
    return key


def _session_key(headers: Mapping[str, str], body: Mapping[str, Any], request: c.Request) -> str:
    if value := headers.get("x-claude-code-session-id"):
        return "claude-code:" + value
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(user_id := metadata.get("user_id"), str) and user_id:
        return "anthropic:" + _anthropic_session(user_id)
    for header in ("session-id", "x-codex-session-id", "session_id", "conversation_id"):
        if value := headers.get(header):
            return "codex:" + value
    for field in ("prompt_cache_key", "user"):
        if isinstance(value := body.get(field), str) and value:
            return f"openai-{field}:" + value
    return "prompt:" + _prompt_hash(request)


def _anthropic_session(user_id: str) -> str:
    """Claude Code puts a JSON object with a session_id in metadata.user_id; older ones a string."""
    try:
        parsed = json.loads(user_id)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(session := parsed.get("session_id"), str):
        return session
    return user_id.rsplit("_session_", 1)[-1]


def _prompt_hash(request: c.Request) -> str:
    digest = hashlib.sha256()
    for text in request.system:
        digest.update(text.encode())
    for message in request.messages:
        if message.role == "user":
            for part in message.parts:
                if isinstance(part, c.Text):
                    digest.update(part.text.encode())
            break
    return digest.hexdigest()[:24]
