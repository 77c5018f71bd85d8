"""Same protocol on both sides: the upstream's own events reach the caller as they are.

Going through the canonical form would drop what it has no place for (Anthropic's
`cache_control` and beta fields, Gemini's safety ratings and grounding, unknown future fields).
When caller and upstream speak one protocol, bodies pass with only the model and credentials
changed, and streams are forwarded event by event: whole events only, so a cut-off upstream
never leaves half an event in front of the error the caller gets instead.
"""

from __future__ import annotations

import json
from typing import Any

from . import anthropic
from .sse import SSEParser, ServerSentEvent

# Caller protocol -> the upstream dialects that speak it natively.
NATIVE: dict[str, frozenset[str]] = {
    "gemini": frozenset({"gemini", "antigravity"}),
    "anthropic": frozenset({"anthropic"}),
    "openai_chat": frozenset({"openai"}),
}


def is_native(caller: str, dialect: str) -> bool:
    return dialect in NATIVE.get(caller, ())


def request_body(caller: str, dialect: str, body: dict[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
    """The caller's body for the upstream: its model replaced (Gemini names it in the URL)."""
    if caller == "gemini":
        return _alternating(body)
    out = dict(body, model=model)
    if caller == "anthropic":
        _fit_thinking(out)
        _drop_made_searches(out)
    if caller == "openai_chat" and stream:
        # The gateway needs usage for every stream; `Passthrough` hides it when not asked for.
        out["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return out


def _alternating(body: dict[str, Any]) -> dict[str, Any]:
    """Neighbouring `contents` of one role merged into one turn, parts in order (the body itself
    when they alternate already). Gemini CLI's model-router call sends its session context and the
    prompt as two user turns in a row; Google's API has refused that ("Please ensure that multiturn
    requests alternate between user and model"), and the simulated upstream does."""
    contents = body.get("contents")
    if not isinstance(contents, list) or not all(
        isinstance(turn, dict) and isinstance(turn.get("parts"), list) for turn in contents
    ):
        return body  # malformed: the upstream's own error says best what is wrong
    roles = [turn.get("role") or "user" for turn in contents]
    if all(a != b for a, b in zip(roles, roles[1:])):
        return body
    merged: list[dict[str, Any]] = []
    for turn, role in zip(contents, roles):
        if merged and (merged[-1].get("role") or "user") == role:
            merged[-1] = {**merged[-1], "parts": [*merged[-1]["parts"], *turn["parts"]]}
        else:
            merged.append(turn)
    return {**body, "contents": merged}


def _fit_thinking(body: dict[str, Any]) -> None:
    """Anthropic refuses thinking when the open tool loop's assistant turn does not start with a
    thinking block, and some clients (Claude Code behind a custom base URL) drop those blocks
    from their history: then this one request goes without thinking, as the API itself advises."""
    thinking = body.get("thinking")
    messages = body.get("messages")
    if not isinstance(thinking, dict) or thinking.get("type") not in ("enabled", "adaptive"):
        return
    turns = [m for m in messages if isinstance(m, dict) and m.get("role") in ("user", "assistant")] if isinstance(messages, list) else []
    blocks = [dict(m, content=_blocks(m.get("content"))) for m in turns]
    if anthropic.opens_with_thinking(blocks):
        return
    del body["thinking"]
    management = body.get("context_management")
    if isinstance(management, dict) and isinstance(edits := management.get("edits"), list):
        kept = [e for e in edits if not (isinstance(e, dict) and str(e.get("type", "")).startswith("clear_thinking"))]
        if kept:
            body["context_management"] = {**management, "edits": kept}
        else:
            del body["context_management"]


def _made_here(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(anthropic.MADE_HERE)


def _drop_made_searches(body: dict[str, Any]) -> None:
    """Search blocks and citations this gateway made (from Google's grounding) carry no data
    Anthropic can verify, and Anthropic refuses them: a history with them keeps their text only."""
    messages = body.get("messages")
    if not isinstance(messages, list) or anthropic.MADE_HERE.encode() not in repr(messages).encode():
        return
    changed = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if not isinstance(content, list):
            changed.append(message)
            continue
        made = {
            block.get("tool_use_id") for block in content
            if isinstance(block, dict) and block.get("type") == "web_search_tool_result"
            and any(_made_here(r.get("encrypted_content")) for r in block.get("content") or () if isinstance(r, dict))
        }
        kept = []
        for block in content:
            if isinstance(block, dict) and (block.get("id") in made or block.get("tool_use_id") in made):
                continue
            if isinstance(block, dict) and block.get("type") == "text" and block.get("citations"):
                cited = [c for c in block["citations"] if not (isinstance(c, dict) and _made_here(c.get("encrypted_index")))]
                block = {k: v for k, v in block.items() if k != "citations"} | ({"citations": cited} if cited else {})
            kept.append(block)
        changed.append({**message, "content": kept})
    body["messages"] = changed


def _blocks(content: Any) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict) and "type" in b] if isinstance(content, list) else []


def response_body(dialect: str, raw: bytes, *, streamed: bool = False) -> bytes:
    """A whole upstream answer for the caller: v1internal's `{"response": ...}` unwrapped; a
    Gemini answer that came as a stream made one body again."""
    if streamed:
        parser = SSEParser()
        events = parser.feed(raw) + parser.close()
        return _dumps(merge_gemini([_unwrapped_doc(json.loads(e.data)) for e in events if e.data.strip()]))
    if dialect != "antigravity":
        return raw
    data = json.loads(raw)
    if isinstance(data, dict) and isinstance(inner := data.get("response"), dict):
        return _dumps(inner)
    return raw


def merge_gemini(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """The GenerateContentResponse a stream of them adds up to: the parts in order (text pieces
    joined, a signature kept on the piece it closed), and every other field as last sent —
    grounding, safety ratings and fields unknown to the gateway included."""
    merged: dict[str, Any] = {}
    candidate: dict[str, Any] = {}
    parts: list[dict[str, Any]] = []
    for doc in docs:
        for key, value in doc.items():
            if key != "candidates":
                merged[key] = value
        for piece in (doc.get("candidates") or [{}])[:1]:
            for key, value in piece.items():
                if key != "content":
                    candidate[key] = value
            content = piece.get("content") if isinstance(piece.get("content"), dict) else {}
            candidate.setdefault("content", {"role": content.get("role", "model"), "parts": parts})
            for part in content.get("parts") or []:
                _add_part(parts, part)
    if candidate:
        merged["candidates"] = [candidate]
    return merged


def _add_part(parts: list[dict[str, Any]], part: dict[str, Any]) -> None:
    last = parts[-1] if parts else None
    joinable = (
        last is not None
        and isinstance(last.get("text"), str)
        and isinstance(part.get("text"), str)
        and "thoughtSignature" not in last
        and bool(last.get("thought")) == bool(part.get("thought"))
    )
    if not joinable:
        parts.append(dict(part))
        return
    last["text"] += part["text"]
    if "thoughtSignature" in part:
        last["thoughtSignature"] = part["thoughtSignature"]


def _unwrapped_doc(data: Any) -> dict[str, Any]:
    if isinstance(data, dict) and isinstance(inner := data.get("response"), dict):
        return inner
    return data if isinstance(data, dict) else {}


def _dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


class Passthrough:
    """Forwards an upstream stream to a caller of the same protocol, event by event."""

    def __init__(self, caller: str, dialect: str, *, sse: bool = True, caller_wants_usage: bool = True) -> None:
        self._caller = caller
        self._unwrap = dialect == "antigravity"
        self._sse = sse or caller != "gemini"
        self._hide_usage = caller == "openai_chat" and not caller_wants_usage
        self._parser = SSEParser()
        self._opened = False  # Gemini's JSON-array form: "[" written

    def feed(self, chunk: bytes) -> bytes:
        return b"".join(self._event(e) for e in self._parser.feed(chunk))

    def close(self, error: dict[str, Any] | None = None) -> bytes:
        """The rest of the stream; with `error` (the caller protocol's `error_body`) the
        stream ends with that error event instead of silently."""
        tail = self._parser.close()
        if error is None:
            out = b"".join(self._event(e) for e in tail)
        else:
            out = self._error(error)  # a cut-off last event is dropped, not forwarded half
        if not self._sse:
            out += b"]" if self._opened else b"[]"
        return out

    def _error(self, body: dict[str, Any]) -> bytes:
        data = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        match self._caller:
            case "anthropic":
                return b"event: error\ndata: " + data.encode() + b"\n\n"
            case "openai_chat":
                return b"data: " + data.encode() + b"\n\ndata: [DONE]\n\n"
        return self._gemini(data)

    def _event(self, event: ServerSentEvent) -> bytes:
        data = event.data
        if self._caller == "gemini":
            if self._unwrap and '"response"' in data:
                data = _unwrapped(data)
            return self._gemini(data)
        if self._hide_usage and '"choices":[]' in data.replace(" ", "") and '"usage"' in data:
            return b""
        head = b"event: " + event.event.encode() + b"\n" if event.event else b""
        return head + b"data: " + data.encode() + b"\n\n"

    def _gemini(self, data: str) -> bytes:
        if self._sse:
            return b"data: " + data.encode() + b"\r\n\r\n"
        prefix = b",\r\n" if self._opened else b"["
        self._opened = True
        return prefix + data.encode()


def _unwrapped(data: str) -> str:
    try:
        inner = json.loads(data).get("response")
    except (ValueError, AttributeError):
        return data  # not ours to judge: the decoder reading along reports it
    return json.dumps(inner, separators=(",", ":"), ensure_ascii=False) if isinstance(inner, dict) else data
