"""Anthropic Messages, as a caller protocol and as an upstream dialect.

The caller side is what Claude Code and the `anthropic` SDKs speak to the gateway; the upstream
side talks to any Anthropic-compatible base URL (api.anthropic.com, z.ai, ...). The SDK's stream
accumulator is strict: one block open at a time, consecutive indexes from 0, a thinking block's
signature sent whole in one `signature_delta` (the SDK replaces, it does not append).
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Callable, NoReturn

from . import canonical as c
from . import sse
from .protocol import ModelInfo

__all__ = ["AnthropicCaller", "AnthropicUpstream", "MessageStreamEncoder", "MessageStreamDecoder", "caller", "upstream"]

DEFAULT_MAX_TOKENS = 8192
SEARCH_TOOL_PREFIX = "web_search_"
SEARCH_TOOL = "web_search_20250305"  # the version every Anthropic-compatible upstream knows
MIN_THINKING_BUDGET = 1024  # Anthropic refuses a smaller budget_tokens
PLACEHOLDER_USER_TEXT = "(continued)"  # Anthropic requires the first message to be the user's

_json = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode

# --- tables --------------------------------------------------------------------------------------

_STOP_REASON: dict[c.FinishReason, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "stop_sequence": "stop_sequence",
    "content_filter": "refusal",
    "error": "end_turn",
}
_FINISH_REASON: dict[str | None, c.FinishReason] = {
    "end_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "stop_sequence": "stop_sequence",
    "pause_turn": "stop",
    "refusal": "content_filter",
    "model_context_window_exceeded": "length",
    None: "stop",
}
# Anthropic's error types with the status the gateway reports for each; overloaded is 529 at
# Anthropic, 503 everywhere else.
_ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 502,
    "overloaded_error": 503,
    "timeout_error": 504,
}
_ERROR_TYPE_BY_STATUS: dict[int, str] = {s: t for t, s in _ERROR_STATUS.items()} | {
    500: "api_error",
    529: "overloaded_error",
}
# `kind` hints: an Anthropic type itself, the type without "_error", or the pool's error class.
_ERROR_TYPE_BY_KIND: dict[str, str] = (
    {t: t for t in _ERROR_STATUS}
    | {t.removesuffix("_error"): t for t in _ERROR_STATUS}
    | {
        "auth": "authentication_error",
        "invalid_grant": "authentication_error",
        "forbidden": "permission_error",
        "validation_required": "permission_error",
        "quota_exhausted": "rate_limit_error",
        "capacity": "overloaded_error",
        "bad_request": "invalid_request_error",
        "server": "api_error",
        "network": "api_error",
    }
)
_EFFORT: dict[str, Any] = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "high"}
_EFFORT_BUDGET: dict[str | None, int] = {"minimal": 1024, "low": 4096, "medium": 8192, "high": 16384, None: 8192}
_TOOL_CHOICE_IN: dict[str, str] = {"auto": "auto", "any": "required", "tool": "tool", "none": "none"}
_TOOL_CHOICE_OUT: dict[str, str] = {v: k for k, v in _TOOL_CHOICE_IN.items()}
_IMAGE_MIME: dict[str, str] = {"png": "image/png", "gif": "image/gif", "webp": "image/webp", "jpg": "image/jpeg"}
_SERVER_BLOCK_TYPES = frozenset({"search_result", "container_upload", "tool_reference"})
_TOOL_ID_BAD = re.compile(r"[^a-zA-Z0-9_-]")
_COUNT_FIELDS = ("model", "messages", "system", "tools", "tool_choice", "thinking", "output_config")


# --- validation ----------------------------------------------------------------------------------


def _fail(param: str, problem: str) -> NoReturn:
    raise c.BadRequest(f"{param}: {problem}", param)


_KIND_NAMES: dict[type, str] = {
    str: "a valid string",
    int: "a valid integer",
    float: "a valid number",
    bool: "a valid boolean",
    list: "a valid list",
    dict: "a valid dictionary",
}


def _is(value: Any, kind: type) -> bool:
    """isinstance, except that a bool is no number and an int is a number."""
    if kind in (int, float) and isinstance(value, bool):
        return False
    return isinstance(value, (int, float) if kind is float else kind)


def _field(obj: dict[str, Any], key: str, kind: type, where: str, required: bool = False) -> Any:
    param = f"{where}.{key}" if where else key
    value = obj.get(key)
    if value is None:
        if required:
            _fail(param, "Field required")
        return None
    if not _is(value, kind):
        _fail(param, f"Input should be {_KIND_NAMES[kind]}")
    return value


def _dict(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        _fail(param, "Input should be a valid dictionary")
    return value


# --- caller: request -----------------------------------------------------------------------------

_Names = dict[str, str]  # tool_use id -> tool name, to name the tool_result that answers it
_BlockDecoder = Callable[[dict[str, Any], str, _Names], c.Part | None]


def _text_block(block: dict[str, Any], where: str, names: _Names) -> c.Part:
    return c.Text(_field(block, "text", str, where, True))


def _image_source(source: dict[str, Any], where: str) -> c.Image:
    kind = source.get("type")
    if kind == "base64":
        return c.Image(_field(source, "media_type", str, where, True), data=_field(source, "data", str, where, True))
    if kind == "url":
        url = _field(source, "url", str, where, True)
        suffix = url.split("?", 1)[0].rsplit(".", 1)[-1].lower()
        return c.Image(_IMAGE_MIME.get(suffix.replace("jpeg", "jpg"), "image/jpeg"), url=url)
    _fail(f"{where}.type", f"image source type {kind!r} is not supported; use 'base64' or 'url'")


def _image_block(block: dict[str, Any], where: str, names: _Names) -> c.Part:
    return _image_source(_field(block, "source", dict, where, True), f"{where}.source")


def _loose_text(block: dict[str, Any]) -> str:
    """The readable text of a block the gateway cannot pass on as such (search results,
    server-tool blocks, text documents); "" when it has none."""
    content = block.get("text", block.get("content"))
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(i["text"] for i in content if isinstance(i, dict) and isinstance(i.get("text"), str))
    return ""


def _loose_block(block: dict[str, Any], where: str, names: _Names) -> c.Part | None:
    text = _loose_text(block)
    return c.Text(text) if text else None


def _document_block(block: dict[str, Any], where: str, names: _Names) -> c.Part | None:
    source = _field(block, "source", dict, where, True)
    kind = source.get("type")
    if kind == "text":
        return c.Text(_field(source, "data", str, f"{where}.source", True))
    if kind == "content":
        return _loose_block(source, where, names)
    _fail(f"{where}.source.type", f"document source type {kind!r} is not supported; only text documents are")


def _tool_use_block(block: dict[str, Any], where: str, names: _Names) -> c.Part:
    call_id = _field(block, "id", str, where, True)
    name = _field(block, "name", str, where, True)
    names[call_id] = name
    return c.ToolCall(call_id, name, _field(block, "input", dict, where) or {})


def _tool_result_block(block: dict[str, Any], where: str, names: _Names) -> c.Part:
    call_id = _field(block, "tool_use_id", str, where, True)
    name = names.get(call_id)
    if name is None:
        _fail(f"{where}.tool_use_id", f"tool_result references {call_id!r}, which no earlier tool_use block has")
    content = _content(block.get("content"), f"{where}.content", names)
    for i, part in enumerate(content):
        if not isinstance(part, (c.Text, c.Image)):
            _fail(f"{where}.content.{i}", "a tool_result may only hold text and image blocks")
    return c.ToolResult(call_id, name, content, bool(_field(block, "is_error", bool, where)))  # type: ignore[arg-type]


def _thinking_block(block: dict[str, Any], where: str, names: _Names) -> c.Part:
    return c.Thinking(_field(block, "thinking", str, where, True), _field(block, "signature", str, where) or None)


def _redacted_thinking_block(block: dict[str, Any], where: str, names: _Names) -> c.Part:
    return c.Thinking("", _field(block, "data", str, where, True), redacted=True)


_BLOCK_DECODERS: dict[str, _BlockDecoder] = {
    "text": _text_block,
    "image": _image_block,
    "document": _document_block,
    "tool_use": _tool_use_block,
    "tool_result": _tool_result_block,
    "thinking": _thinking_block,
    "redacted_thinking": _redacted_thinking_block,
}


def _block_decoder(kind: Any) -> _BlockDecoder | None:
    if not isinstance(kind, str):
        return None
    decoder = _BLOCK_DECODERS.get(kind)
    if decoder is None and (kind in _SERVER_BLOCK_TYPES or kind.endswith(("_tool_use", "_tool_result"))):
        return _loose_block  # server tools ran at Anthropic; no other upstream can take them
    return decoder


def _content(value: Any, where: str, names: _Names) -> list[c.Part]:
    """A message's (or tool_result's) content: a string or a list of blocks."""
    if value is None:
        return []
    if isinstance(value, str):
        return [c.Text(value)] if value else []
    if not isinstance(value, list):
        _fail(where, "Input should be a valid string or list of content blocks")
    parts: list[c.Part] = []
    for i, raw in enumerate(value):
        block = _dict(raw, f"{where}.{i}")
        decoder = _block_decoder(block.get("type"))
        if decoder is None:
            _fail(f"{where}.{i}.type", f"unsupported content block type {block.get('type')!r}")
        if (part := decoder(block, f"{where}.{i}", names)) is not None:
            parts.append(part)
    return parts


def _system(value: Any, where: str) -> list[str]:
    """System text: a string or text blocks (cache_control has no meaning past the gateway)."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value] if value else []
    if not isinstance(value, list):
        _fail(where, "Input should be a valid string or list of text blocks")
    texts = []
    for i, raw in enumerate(value):
        block = _dict(raw, f"{where}.{i}")
        if block.get("type") != "text":
            _fail(f"{where}.{i}.type", "system content blocks must be text")
        texts.append(_field(block, "text", str, f"{where}.{i}", True))
    return texts


def _messages(value: Any, request: c.Request) -> list[c.Message]:
    if value is None:
        _fail("messages", "Field required")
    if not isinstance(value, list):
        _fail("messages", "Input should be a valid list")
    if not value:
        _fail("messages", "at least one message is required")
    names: _Names = {}
    messages = []
    for i, raw in enumerate(value):
        where = f"messages.{i}"
        message = _dict(raw, where)
        role = message.get("role")
        if role not in ("user", "assistant", "system"):
            _fail(f"{where}.role", "Input should be 'user', 'assistant' or 'system'")
        if "content" not in message:
            _fail(f"{where}.content", "Field required")
        if role == "system":  # the mid-conversation system beta (Claude Code sends it)
            request.system.extend(_system(message["content"], f"{where}.content"))
        elif parts := _content(message["content"], f"{where}.content", names):
            messages.append(c.Message(role, parts))
    return messages


def _tools(value: Any) -> list[c.Tool]:
    """Custom tools; server tools (web_search_..., bash_..., no input_schema) only Anthropic runs."""
    if value is None:
        return []
    if not isinstance(value, list):
        _fail("tools", "Input should be a valid list")
    tools = []
    for i, raw in enumerate(value):
        where = f"tools.{i}"
        tool = _dict(raw, where)
        if tool.get("type") not in (None, "custom") and "input_schema" not in tool:
            continue
        name = _field(tool, "name", str, where, True)
        schema = _field(tool, "input_schema", dict, where, True)
        tools.append(c.Tool(name, _field(tool, "description", str, where) or "", schema))
    return tools


def _search(value: Any) -> c.WebSearch | None:
    """The web_search server tool (web_search_20250305 and later), as the canonical search."""
    for tool in value if isinstance(value, list) else ():
        if isinstance(tool, dict) and str(tool.get("type", "")).startswith(SEARCH_TOOL_PREFIX):
            uses = tool.get("max_uses")
            return c.WebSearch(
                max_uses=uses if isinstance(uses, int) and not isinstance(uses, bool) and uses > 0 else None,
                allowed_domains=[d for d in tool.get("allowed_domains") or () if isinstance(d, str)],
                blocked_domains=[d for d in tool.get("blocked_domains") or () if isinstance(d, str)],
            )
    return None


def _tool_choice(value: Any) -> c.ToolChoice | None:
    if value is None:
        return None
    choice = _dict(value, "tool_choice")
    mode = _TOOL_CHOICE_IN.get(kind) if isinstance(kind := choice.get("type"), str) else None
    if mode is None:
        _fail("tool_choice.type", "Input should be 'auto', 'any', 'tool' or 'none'")
    name = _field(choice, "name", str, "tool_choice", mode == "tool")
    return c.ToolChoice(mode, name if mode == "tool" else None)  # type: ignore[arg-type]


def _thinking(body: dict[str, Any]) -> c.ThinkingConfig | None:
    value = body.get("thinking")
    if value is None:
        return None
    thinking = _dict(value, "thinking")
    kind = thinking.get("type")
    if kind in ("disabled", "between_tools"):
        return c.ThinkingConfig(enabled=False)
    if kind not in ("enabled", "adaptive"):
        _fail("thinking.type", "Input should be 'enabled', 'adaptive' or 'disabled'")
    budget = _field(thinking, "budget_tokens", int, "thinking", kind == "enabled")
    if budget is not None and budget < 1:
        _fail("thinking.budget_tokens", "Input should be greater than or equal to 1")
    output_config = body.get("output_config")
    effort = output_config.get("effort") if isinstance(output_config, dict) else None
    return c.ThinkingConfig(
        budget_tokens=budget,
        effort=_EFFORT.get(effort) if isinstance(effort, str) else None,
        include_thoughts=thinking.get("display") != "omitted",
    )


def _response_format(body: dict[str, Any]) -> c.ResponseFormat | None:
    output_config = body.get("output_config")
    fmt = output_config.get("format") if isinstance(output_config, dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict):
        return c.ResponseFormat("json_schema", fmt["schema"])
    return None


def _stop_sequences(value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
        _fail("stop_sequences", "Input should be a valid list of strings")
    return value


def _decode(body: Any, model: str | None, require_max_tokens: bool) -> c.Request:
    if not isinstance(body, dict):
        raise c.BadRequest("request body must be a JSON object")
    model = model or _field(body, "model", str, "", True)
    max_tokens = _field(body, "max_tokens", int, "", require_max_tokens)
    if max_tokens is not None and max_tokens < 1:
        _fail("max_tokens", "Input should be greater than or equal to 1")
    request = c.Request(model=model, messages=[], system=_system(body.get("system"), "system"))
    request.messages = _messages(body.get("messages"), request)
    request.tools = _tools(body.get("tools"))
    request.search = _search(body.get("tools"))
    request.tool_choice = _tool_choice(body.get("tool_choice"))
    choice = request.tool_choice
    if request.search is not None and choice is not None and not any(tool.name == "web_search" for tool in request.tools):
        if (choice.mode == "tool" and choice.name == "web_search") or (choice.mode == "required" and not request.tools):
            request.tool_choice = None  # forcing the server tool (Claude Code does): searching is the model's call
    request.stream = bool(_field(body, "stream", bool, ""))
    request.max_tokens = max_tokens
    request.temperature = _field(body, "temperature", float, "")
    request.top_p = _field(body, "top_p", float, "")
    request.top_k = _field(body, "top_k", int, "")
    request.stop = _stop_sequences(body.get("stop_sequences"))
    request.thinking = _thinking(body)
    request.response_format = _response_format(body)
    return request


# --- caller: response ----------------------------------------------------------------------------


def _message_id(response_id: str) -> str:
    return response_id if response_id.startswith("msg_") else f"msg_{response_id}"


def _usage(usage: c.Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "input_tokens": max(usage.input_tokens - usage.cached_tokens, 0),
        "output_tokens": usage.output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": usage.cached_tokens,
    }
    if usage.reasoning_tokens:
        out["output_tokens_details"] = {"thinking_tokens": usage.reasoning_tokens}
    return out


def _stop_reason(reason: c.FinishReason, saw_tool_use: bool) -> str:
    # Some upstreams (Gemini) say "stop" after a tool call; SDK users branch on "tool_use".
    return "tool_use" if saw_tool_use and reason == "stop" else _STOP_REASON[reason]


def image_markdown(image: c.Image) -> str:
    """How an image the model drew reaches a caller whose protocol has no image output (Anthropic,
    OpenAI chat): as Markdown text with a data: URL, the convention other gateways use."""
    return f"![image]({image.url if image.data is None else f'data:{image.mime_type};base64,{image.data}'})"


# What `_opaque` values start with: base64 of "switchyar", the bytes before any text varies.
MADE_HERE = base64.b64encode(b"switchyar").decode()


def _opaque(text: str) -> str:
    """For the fields Anthropic fills with its own encrypted data: ours (`passthrough` drops them
    before a history reaches Anthropic, which cannot read them)."""
    return base64.b64encode(f"switchyard:{text}".encode()).decode()


def search_blocks(grounding: c.Grounding, seed: str) -> list[dict[str, Any]]:
    """A server_tool_use and its web_search_tool_result per query. Google does not say which
    query found which source, so the first result holds them all."""
    blocks: list[dict[str, Any]] = []
    base = _TOOL_ID_BAD.sub("", seed)[-16:]
    for i, query in enumerate(grounding.queries or [""]):
        call_id = f"srvtoolu_{base}{i:02d}"
        results = [
            {"type": "web_search_result", "url": s.url, "title": s.title or s.url, "encrypted_content": _opaque(s.url),
             "page_age": None}
            for s in (grounding.sources if i == 0 else ())
        ]
        blocks.append({"type": "server_tool_use", "id": call_id, "name": "web_search", "input": {"query": query}})
        blocks.append({"type": "web_search_tool_result", "tool_use_id": call_id, "content": results})
    return blocks


def cited_blocks(text: str, base: int, grounding: c.Grounding | None) -> list[dict[str, Any]]:
    """A text part as Anthropic's text blocks: split where a citation's span begins and ends, the
    cited spans carrying web_search_result_location citations. `base` is the part's offset in
    the answer's text, which citations count in."""
    blocks: list[dict[str, Any]] = []
    at = 0
    for citation in sorted(grounding.citations if grounding else (), key=lambda cited: cited.start):
        start, end = max(citation.start - base, at), min(citation.end - base, len(text))
        sources = [grounding.sources[i] for i in citation.sources if 0 <= i < len(grounding.sources)]  # type: ignore[union-attr]
        if start >= end or not sources:
            continue
        if start > at:
            blocks.append({"type": "text", "text": text[at:start]})
        cited = [
            {"type": "web_search_result_location", "url": s.url, "title": s.title or s.url,
             "cited_text": citation.text or text[start:end], "encrypted_index": _opaque(f"{citation.start}:{s.url}")}
            for s in sources
        ]
        blocks.append({"type": "text", "text": text[start:end], "citations": cited})
        at = end
    if at < len(text):
        blocks.append({"type": "text", "text": text[at:]})
    return blocks


def _server_tool_use(grounding: c.Grounding | None) -> dict[str, int] | None:
    if grounding is None:
        return None
    return {"web_search_requests": max(len(grounding.queries), 1), "web_fetch_requests": 0}


def _content_block(part: c.Part) -> dict[str, Any] | None:
    match part:
        case c.Text(text=text):
            return {"type": "text", "text": text}
        case c.Image():
            return {"type": "text", "text": image_markdown(part)}
        case c.Thinking(redacted=True, signature=signature):
            return {"type": "redacted_thinking", "data": signature or ""}
        case c.Thinking(text=text, signature=signature):
            return {"type": "thinking", "thinking": text, "signature": signature or ""}
        case c.ToolCall(id=call_id, name=name, arguments=arguments):
            return {"type": "tool_use", "id": call_id, "name": name, "input": arguments}
    return None  # images and tool results have no place in an assistant Message


class AnthropicCaller:
    """The gateway's `/v1/messages` and `/v1/messages/count_tokens` face."""

    name = "anthropic"
    stream_content_type = "text/event-stream"

    def decode_request(self, body: Any, *, model: str | None = None) -> c.Request:
        return _decode(body, model, require_max_tokens=True)

    def decode_count_request(self, body: Any, *, model: str | None = None) -> c.Request:
        """count_tokens takes a Messages body without max_tokens."""
        return _decode(body, model, require_max_tokens=False)

    def encode_count_response(self, input_tokens: int) -> dict[str, Any]:
        return {"input_tokens": input_tokens}

    def encode_response(self, response: c.Response, request: c.Request) -> dict[str, Any]:
        grounding = response.grounding
        content: list[dict[str, Any]] = []
        offset = 0
        for part in response.parts:
            if isinstance(part, c.Text) and grounding is not None:
                if offset == 0 and not any(block["type"] == "server_tool_use" for block in content):
                    content += search_blocks(grounding, response.id)  # the search comes before the text
                content += cited_blocks(part.text, offset, grounding)
                offset += len(part.text)
            elif (block := _content_block(part)) is not None:
                content.append(block)
        if grounding is not None and not any(block["type"] == "server_tool_use" for block in content):
            content += search_blocks(grounding, response.id)
        saw_tool_use = any(block["type"] == "tool_use" for block in content)
        usage = _usage(response.usage)
        if (searches := _server_tool_use(grounding)) is not None:
            usage["server_tool_use"] = searches
        return {
            "id": _message_id(response.id),
            "type": "message",
            "role": "assistant",
            "model": response.model,
            "content": content,
            "stop_reason": _stop_reason(response.finish_reason, saw_tool_use),
            "stop_sequence": None,
            "usage": usage,
        }

    def stream_encoder(self, request: c.Request, response_id: str, model: str, created: int) -> MessageStreamEncoder:
        return MessageStreamEncoder(_message_id(response_id), model, searching=request.search is not None)

    def error_body(self, status: int, message: str, kind: str | None = None) -> dict[str, Any]:
        error_type = (
            _ERROR_TYPE_BY_KIND.get(kind or "")
            or _ERROR_TYPE_BY_STATUS.get(status)
            or ("invalid_request_error" if 400 <= status < 500 else "api_error")
        )
        return {"type": "error", "error": {"type": error_type, "message": message}}

    def encode_model_list(self, models: list[ModelInfo]) -> dict[str, Any]:
        data = []
        for model in models:
            entry: dict[str, Any] = {
                "type": "model",
                "id": model.id,
                "display_name": model.display_name or model.id,
                "created_at": datetime.fromtimestamp(model.created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "lifecycle": "active",
            }
            if model.input_token_limit:
                entry["max_input_tokens"] = model.input_token_limit
            if model.output_token_limit:
                entry["max_tokens"] = model.output_token_limit
            data.append(entry)
        return {
            "data": data,
            "has_more": False,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        }


# --- caller: stream ------------------------------------------------------------------------------

_PING = sse.encode('{"type":"ping"}', "ping")
_MESSAGE_STOP = sse.encode('{"type":"message_stop"}', "message_stop")
# canonical delta -> (the block kind it grows, Anthropic delta type, its field, the event's field);
# a delta for a block of another kind is dropped.
_DELTAS: dict[type, tuple[str, str, str, str]] = {
    c.TextDelta: ("text", "text_delta", "text", "text"),
    c.ThinkingDelta: ("thinking", "thinking_delta", "thinking", "text"),
    c.ToolArgsDelta: ("tool_use", "input_json_delta", "partial_json", "json"),
}


@dataclass(slots=True)
class _Block:
    """One canonical block as the caller sees it."""

    index: int  # canonical index
    kind: str  # "text" | "thinking" | "tool_use" | "redacted_thinking"
    start: dict[str, Any]  # the content_block of content_block_start
    signature: str = ""  # a thinking block's signature, sent whole just before it closes
    wire: int | None = None  # the Anthropic index while open on the wire


class MessageStreamEncoder:
    """Canonical events -> Anthropic SSE.

    Anthropic streams one block at a time. When the canonical stream opens a block while a text
    or thinking block is still open, that one is closed first and reopened as a new block if it
    grows again. A tool_use block cannot be split (its JSON would break), so while one is open,
    events of other blocks are held and replayed when it closes.
    """

    __slots__ = (
        "_id", "_model", "_started", "_done", "_next", "_blocks", "_live", "_held", "_tool_used", "_out",
        "_searching", "_texts", "_grounding",
    )

    def __init__(self, message_id: str, model: str, *, searching: bool = False) -> None:
        self._id = message_id
        self._model = model
        self._started = self._done = self._tool_used = False
        self._next = 0
        self._blocks: dict[int, _Block] = {}
        self._live: _Block | None = None
        self._held: list[c.Event] = []
        self._out: list[bytes] = []
        # A search's answer text is held until its sources are known (Google tells them at the
        # end): Anthropic streams the search blocks first and cites spans as the text goes.
        self._searching = searching
        self._texts: dict[int, list[str]] = {}  # canonical index -> the held text
        self._grounding: c.Grounding | None = None

    def encode(self, events: list[c.Event]) -> bytes:
        if self._done:
            return b""
        out = self._out
        if not self._started:
            self._started = True
            self._emit("message_start", {"type": "message_start", "message": self._message_start()})
            out.append(_PING)
        for event in events:
            if self._done:
                break
            self._event(event)
        data = b"".join(out)
        out.clear()
        return data

    def _emit(self, name: str, payload: dict[str, Any]) -> None:
        self._out.append(sse.encode(_json(payload), name))

    def _message_start(self) -> dict[str, Any]:
        return {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _usage(c.Usage()),
        }

    def _event(self, event: c.Event) -> None:
        if self._searching and self._hold(event):
            return
        live = self._live
        if live is not None and live.kind == "tool_use" and getattr(event, "index", live.index) != live.index:
            self._held.append(event)
            return
        _ENCODER_HANDLERS[type(event)](self, event)

    def _block_start(self, event: c.BlockStart) -> None:
        index = event.index
        match event.part:
            case c.Text(text=text):
                block = _Block(index, "text", {"type": "text", "text": ""})
                growth: c.Event | None = c.TextDelta(index, text) if text else None
            case c.Thinking(redacted=True, signature=signature):
                block = _Block(index, "redacted_thinking", {"type": "redacted_thinking", "data": signature or ""})
                growth = None
            case c.Thinking(text=text, signature=signature):
                start = {"type": "thinking", "thinking": "", "signature": ""}
                block = _Block(index, "thinking", start, signature or "")
                growth = c.ThinkingDelta(index, text) if text else None
            case c.ToolCall(id=call_id, name=name, arguments=arguments):
                block = _Block(index, "tool_use", {"type": "tool_use", "id": call_id, "name": name, "input": {}})
                growth = c.ToolArgsDelta(index, _json(arguments)) if arguments else None
                self._tool_used = True
            case c.Image():  # Anthropic has no image output: the picture goes as Markdown text
                block = _Block(index, "text", {"type": "text", "text": ""})
                growth = c.TextDelta(index, image_markdown(event.part))
            case _:
                return
        self._blocks[index] = block
        self._open(block)
        if growth is not None:
            self._delta(growth)

    def _open(self, block: _Block) -> None:
        if self._live is not None:
            self._close(self._live)
        block.wire = self._next
        self._next += 1
        self._live = block
        start = {"type": "content_block_start", "index": block.wire, "content_block": block.start}
        self._emit("content_block_start", start)

    def _close(self, block: _Block) -> None:
        if block.signature:
            delta = {"type": "signature_delta", "signature": block.signature}
            self._emit("content_block_delta", {"type": "content_block_delta", "index": block.wire, "delta": delta})
            block.signature = ""
        self._emit("content_block_stop", {"type": "content_block_stop", "index": block.wire})
        block.wire = None
        self._live = None

    def _grown(self, index: int, kind: str) -> _Block | None:
        """The open block a delta grows, reopened if it was closed early; None to drop it."""
        block = self._blocks.get(index)
        if block is None or block.kind != kind:
            return None
        if block is not self._live:
            self._open(block)
        return block

    def _delta(self, event: c.TextDelta | c.ThinkingDelta | c.ToolArgsDelta) -> None:
        kind, delta_type, key, attr = _DELTAS[type(event)]
        if (block := self._grown(event.index, kind)) is not None:
            delta = {"type": delta_type, key: getattr(event, attr)}
            self._emit("content_block_delta", {"type": "content_block_delta", "index": block.wire, "delta": delta})

    def _signature(self, event: c.SignatureDelta) -> None:
        if (block := self._grown(event.index, "thinking")) is not None:
            block.signature += event.signature

    def _block_stop(self, event: c.BlockStop) -> None:
        block = self._blocks.pop(event.index, None)
        if block is None or block is not self._live:
            return  # unknown, or closed early when another block opened
        self._close(block)
        self._replay()

    def _replay(self) -> None:
        held, self._held = self._held, []
        for event in held:
            self._event(event)

    def _hold(self, event: c.Event) -> bool:
        """Keeps a searching answer's text (and its grounding) back; True when it took the event."""
        match event:
            case c.BlockStart(index=index, part=c.Text(text=text)):
                self._texts[index] = [text]
            case c.TextDelta(index=index, text=text) if index in self._texts:
                self._texts[index].append(text)
            case c.SignatureDelta(index=index) | c.BlockStop(index=index) if index in self._texts:
                pass
            case c.Grounded(grounding=grounding):
                self._grounding = grounding
            case _:
                return False
        return True

    def _release(self) -> None:
        """The search blocks, then the held text, cited."""
        grounding, texts = self._grounding, ["".join(chunks) for chunks in self._texts.values()]
        self._texts = {}
        if grounding is not None:
            for block in search_blocks(grounding, self._id):
                self._whole_block(block)
        offset = 0
        for text in texts:
            for block in cited_blocks(text, offset, grounding):
                self._whole_block(block)
            offset += len(text)

    def _whole_block(self, block: dict[str, Any]) -> None:
        """A block known whole, streamed as Anthropic streams it: tool input and text as deltas,
        citations before the text they cite."""
        kind = block["type"]
        start = {"type": "text", "text": ""} if kind == "text" else block
        if kind == "server_tool_use":
            start = {**block, "input": {}}
        self._open(_Block(-1, kind, start))
        wire = self._live.wire  # type: ignore[union-attr]
        deltas: list[dict[str, Any]] = []
        if kind == "server_tool_use":
            deltas.append({"type": "input_json_delta", "partial_json": _json(block["input"])})
        for citation in block.get("citations") or ():
            deltas.append({"type": "citations_delta", "citation": citation})
        if kind == "text":
            deltas.append({"type": "text_delta", "text": block["text"]})
        for delta in deltas:
            self._emit("content_block_delta", {"type": "content_block_delta", "index": wire, "delta": delta})
        self._close(self._live)  # type: ignore[arg-type]

    def _grounded(self, event: c.Grounded) -> None:
        """Outside a search the sources have no block to go to."""

    def _finish(self, event: c.Finish) -> None:
        while self._live is not None or self._held:
            if self._live is not None:
                self._blocks.pop(self._live.index, None)
                self._close(self._live)
            self._replay()
        if self._searching:
            self._release()
        usage = _usage(event.usage)
        if (searches := _server_tool_use(self._grounding)) is not None:
            usage["server_tool_use"] = searches
        delta = {"stop_reason": _stop_reason(event.reason, self._tool_used), "stop_sequence": None}
        self._emit("message_delta", {"type": "message_delta", "delta": delta, "usage": usage})
        self._out.append(_MESSAGE_STOP)
        self._done = True

    def _error(self, event: c.StreamError) -> None:
        if self._searching and self._texts:
            self._texts = {}  # held text of an answer that failed: the error says what happened
        self._emit("error", caller.error_body(event.status, event.message, event.kind))
        self._done = True


_ENCODER_HANDLERS: dict[type, Callable[[MessageStreamEncoder, Any], None]] = {
    c.BlockStart: MessageStreamEncoder._block_start,
    c.TextDelta: MessageStreamEncoder._delta,
    c.ThinkingDelta: MessageStreamEncoder._delta,
    c.ToolArgsDelta: MessageStreamEncoder._delta,
    c.SignatureDelta: MessageStreamEncoder._signature,
    c.BlockStop: MessageStreamEncoder._block_stop,
    c.Grounded: MessageStreamEncoder._grounded,
    c.Finish: MessageStreamEncoder._finish,
    c.StreamError: MessageStreamEncoder._error,
}


# --- upstream: request ---------------------------------------------------------------------------


def _tool_id(call_id: str) -> str:
    """Anthropic wants ids matching ^[a-zA-Z0-9_-]+$; other upstreams' ids may not."""
    return _TOOL_ID_BAD.sub("_", call_id) or "toolu_unknown"


def _image_out(image: c.Image) -> dict[str, Any]:
    if image.data is not None:
        return {"type": "image", "source": {"type": "base64", "media_type": image.mime_type, "data": image.data}}
    return {"type": "image", "source": {"type": "url", "url": image.url}}


def _result_content(part: c.Text | c.Image) -> dict[str, Any] | None:
    if isinstance(part, c.Image):
        return _image_out(part)
    return {"type": "text", "text": part.text} if part.text.strip() else None


def _block_out(part: c.Part, role: str) -> tuple[str, dict[str, Any]] | None:
    """The role and Anthropic block for one canonical part; None for what Anthropic refuses
    (empty text, unsigned thinking, images in assistant turns)."""
    match part:
        case c.Text(text=text):
            return (role, {"type": "text", "text": text}) if text.strip() else None
        case c.Thinking(redacted=True, signature=signature):
            if not signature or role != "assistant":
                return None
            return "assistant", {"type": "redacted_thinking", "data": signature}
        case c.Thinking(text=text, signature=signature):
            if not signature or role != "assistant":
                return None
            return "assistant", {"type": "thinking", "thinking": text, "signature": signature}
        case c.Image():
            return ("user", _image_out(part)) if role == "user" else None
        case c.ToolCall(id=call_id, name=name, arguments=arguments):
            return "assistant", {"type": "tool_use", "id": _tool_id(call_id), "name": name, "input": arguments}
        case c.ToolResult(call_id=call_id, content=content, is_error=is_error):
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": _tool_id(call_id)}
            if blocks := [b for p in content if (b := _result_content(p)) is not None]:
                block["content"] = blocks
            if is_error:
                block["is_error"] = True
            return "user", block
    return None


def _messages_out(messages: list[c.Message]) -> list[dict[str, Any]]:
    """Alternating turns, user first, tool results leading their user turn."""
    turns: list[dict[str, Any]] = []
    for message in messages:
        for part in message.parts:
            if (out := _block_out(part, message.role)) is None:
                continue
            role, block = out
            if turns and turns[-1]["role"] == role:
                turns[-1]["content"].append(block)
            else:
                turns.append({"role": role, "content": [block]})
    for turn in turns:
        if turn["role"] == "user":
            turn["content"].sort(key=lambda b: b["type"] != "tool_result")  # stable
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": PLACEHOLDER_USER_TEXT}]})
    last = turns[-1]
    if last["role"] == "assistant" and last["content"][-1]["type"] == "text":
        # A prefilled final assistant turn may not end with whitespace.
        last["content"][-1]["text"] = last["content"][-1]["text"].rstrip()
    return turns


def opens_with_thinking(turns: list[dict[str, Any]]) -> bool:
    """With thinking on, Anthropic wants the assistant turn of an unfinished tool loop to open
    with a thinking block; history written by another upstream may not."""
    last = next((turn["content"] for turn in reversed(turns) if turn["role"] == "assistant"), None)
    if last is None or not any(block["type"] == "tool_use" for block in last):
        return True
    return last[0]["type"] in ("thinking", "redacted_thinking")


def _thinking_out(request: c.Request, max_tokens: int, turns: list[dict[str, Any]]) -> dict[str, Any] | None:
    config = request.thinking
    if config is None:
        return None
    if not config.enabled or config.budget_tokens == 0:
        return {"type": "disabled"}
    if request.tools and request.tool_choice is not None and request.tool_choice.mode in ("required", "tool"):
        return None  # Anthropic refuses thinking with a forced tool; the caller's tool demand wins
    if not opens_with_thinking(turns):
        return None
    if config.budget_tokens is not None and config.budget_tokens > 0:
        budget = min(config.budget_tokens, max_tokens - 1)
    else:
        budget = min(_EFFORT_BUDGET[config.effort], max_tokens // 2)
    budget = max(budget, MIN_THINKING_BUDGET)
    return {"type": "enabled", "budget_tokens": budget} if budget < max_tokens else None


def _encode_request(request: c.Request, model: str) -> dict[str, Any]:
    max_tokens = request.max_tokens or DEFAULT_MAX_TOKENS
    body: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": _messages_out(request.messages)}
    system = [text for text in request.system if text]
    if len(system) == 1:
        body["system"] = system[0]
    elif system:
        body["system"] = [{"type": "text", "text": text} for text in system]
    if request.tools:
        body["tools"] = [
            {"name": t.name, "input_schema": t.parameters or {"type": "object", "properties": {}}}
            | ({"description": t.description} if t.description else {})
            for t in request.tools
        ]
        if request.tool_choice is not None:
            choice: dict[str, Any] = {"type": _TOOL_CHOICE_OUT[request.tool_choice.mode]}
            if request.tool_choice.mode == "tool":
                choice["name"] = request.tool_choice.name
            body["tool_choice"] = choice
    if request.search is not None:
        search: dict[str, Any] = {"type": SEARCH_TOOL, "name": "web_search"}
        if request.search.max_uses:
            search["max_uses"] = request.search.max_uses
        if request.search.allowed_domains:
            search["allowed_domains"] = request.search.allowed_domains
        elif request.search.blocked_domains:
            search["blocked_domains"] = request.search.blocked_domains
        body["tools"] = [*body.get("tools", []), search]
    thinking = _thinking_out(request, max_tokens, body["messages"])
    if thinking is not None:
        body["thinking"] = thinking
    if thinking is None or thinking["type"] == "disabled":
        # Sampling knobs are refused alongside extended thinking.
        for key, value in (("temperature", request.temperature), ("top_p", request.top_p), ("top_k", request.top_k)):
            if value is not None:
                body[key] = value
    if stop := [s for s in request.stop if s.strip()]:
        body["stop_sequences"] = stop
    fmt = request.response_format
    if fmt is not None and fmt.type == "json_schema" and fmt.schema:
        body["output_config"] = {"format": {"type": "json_schema", "schema": fmt.schema}}
    if request.stream:
        body["stream"] = True
    return body


# --- upstream: response --------------------------------------------------------------------------


def _usage_in(usage: dict[str, Any]) -> c.Usage:
    cache_read = usage.get("cache_read_input_tokens") or 0
    details = usage.get("output_tokens_details")
    return c.Usage(
        input_tokens=(usage.get("input_tokens") or 0) + cache_read + (usage.get("cache_creation_input_tokens") or 0),
        output_tokens=usage.get("output_tokens") or 0,
        cached_tokens=cache_read,
        reasoning_tokens=(details.get("thinking_tokens") or 0) if isinstance(details, dict) else 0,
    )


def _part_in(block: dict[str, Any]) -> c.Part | None:
    match block.get("type"):
        case "text":
            return c.Text(block["text"])
        case "thinking":
            return c.Thinking(block["thinking"], block.get("signature") or None)
        case "redacted_thinking":
            return c.Thinking("", block["data"], redacted=True)
        case "tool_use":
            return c.ToolCall(block["id"], block["name"], block.get("input") or {})
    return None  # server-tool blocks: Anthropic ran them itself


class _Sources:
    """What an Anthropic answer's web search found, gathered block by block into a Grounding."""

    __slots__ = ("grounding", "_index")

    def __init__(self) -> None:
        self.grounding = c.Grounding()
        self._index: dict[str, int] = {}  # url -> its place among the sources

    def query(self, tool_input: Any) -> None:
        if isinstance(tool_input, dict) and isinstance(query := tool_input.get("query"), str):
            self.grounding.queries.append(query)

    def source(self, url: Any, title: Any) -> int | None:
        if not isinstance(url, str) or not url:
            return None
        if url not in self._index:
            self._index[url] = len(self.grounding.sources)
            self.grounding.sources.append(c.Source(url, title if isinstance(title, str) else ""))
        return self._index[url]

    def results(self, content: Any) -> None:
        for result in content if isinstance(content, list) else ():
            if isinstance(result, dict):
                self.source(result.get("url"), result.get("title"))

    def cite(self, citation: Any, start: int, end: int, text: str) -> None:
        if isinstance(citation, dict) and citation.get("type") == "web_search_result_location":
            if (index := self.source(citation.get("url"), citation.get("title"))) is not None:
                cited = citation.get("cited_text")
                self.grounding.citations.append(c.Citation(start, end, cited if isinstance(cited, str) else text, [index]))

    def found(self) -> c.Grounding | None:
        grounding = self.grounding
        return grounding if grounding.queries or grounding.sources else None


def _decode_response(body: Any) -> c.Response:
    if not isinstance(body, dict) or body.get("type") != "message" or not isinstance(body.get("content"), list):
        raise c.BadUpstreamAnswer("not an Anthropic Message: expected type 'message' with a content list")
    try:
        parts: list[c.Part] = []
        for block in body["content"]:
            part = _part_in(block)
            if isinstance(part, c.Text) and parts and isinstance(parts[-1], c.Text) and block.get("type") == "text":
                parts[-1] = c.Text(parts[-1].text + part.text)  # text split at cited spans is one text
            elif part is not None:
                parts.append(part)
        sources, offset = _Sources(), 0
        for block in body["content"]:
            match block.get("type"):
                case "server_tool_use" if block.get("name") == "web_search":
                    sources.query(block.get("input"))
                case "web_search_tool_result":
                    sources.results(block.get("content"))
                case "text":
                    for citation in block.get("citations") or ():
                        sources.cite(citation, offset, offset + len(block["text"]), block["text"])
                    offset += len(block["text"])
        return c.Response(
            id=str(body.get("id", "")),
            model=str(body.get("model", "")),
            parts=parts,
            finish_reason=_FINISH_REASON.get(body.get("stop_reason"), "stop"),
            usage=_usage_in(body.get("usage") or {}),
            grounding=sources.found(),
        )
    except (KeyError, TypeError, AttributeError) as error:
        raise c.BadUpstreamAnswer(f"malformed Anthropic Message: {error!r}") from error


# --- upstream: stream ----------------------------------------------------------------------------


class MessageStreamDecoder:
    """Anthropic SSE -> canonical events. Anthropic indexes are kept as canonical indexes;
    blocks the gateway cannot carry (server tools) are skipped with their deltas."""

    __slots__ = (
        "_parser", "_open", "_usage", "_reason", "_done", "_sources", "_searches", "_texts", "_cites", "_text_blocks",
        "_alias", "_pending",
    )

    def __init__(self) -> None:
        self._parser = sse.SSEParser()
        self._open: set[int] = set()
        self._usage: dict[str, Any] = {}
        self._reason: str | None = None  # set by message_delta
        self._done = False
        # A web search the upstream ran: its calls' input JSON, the answer's text so far (for
        # citation offsets), and each open text block's start and citations.
        self._sources = _Sources()
        self._searches: dict[int, list[str]] = {}
        self._texts = 0
        self._cites: dict[int, tuple[int, list[Any]]] = {}
        # Text split into blocks at cited spans is one text: a text block's stop waits for the
        # next block, and a text block right after it continues it under its index.
        self._text_blocks: set[int] = set()
        self._alias: dict[int, int] = {}  # a continuing block's index -> the index it continues
        self._pending: int | None = None  # a text block that ended, not yet stopped

    def feed(self, chunk: bytes) -> list[c.Event]:
        if self._done:
            return []
        return self._events(self._parser.feed(chunk))

    def close(self) -> list[c.Event]:
        if self._done:
            return []
        events = self._events(self._parser.close())
        if self._done:
            return events
        self._done = True
        if self._reason is None:
            # No stop_reason: the upstream broke off; never pass that on as a finished answer.
            return events + [c.StreamError("the upstream stream ended before message_stop")]
        try:
            return events + self._finish()
        except Exception as error:
            return events + [c.StreamError(f"the upstream sent malformed usage: {error!r}")]

    def _events(self, messages: list[sse.ServerSentEvent]) -> list[c.Event]:
        events: list[c.Event] = []
        for message in messages:
            if self._done:
                break
            if message.event == "ping":
                continue
            try:
                data = json.loads(message.data)
                if not isinstance(data, dict):
                    raise TypeError("event data is not an object")
                handler = _STREAM_HANDLERS.get(data.get("type") or message.event)
                if handler is not None:
                    handler(self, data, events)
            except Exception as error:  # garbage must end the stream, not the flow
                self._done = True
                events.append(c.StreamError(f"the upstream sent a malformed stream event: {error!r}"))
        return events

    def _stop_pending(self, events: list[c.Event]) -> None:
        if self._pending is not None:
            events.append(c.BlockStop(self._pending))
            self._pending = None

    def _finish(self) -> list[c.Event]:
        events: list[c.Event] = []
        if (grounding := self._sources.found()) is not None:
            events.append(c.Grounded(grounding))
        self._stop_pending(events)
        events += [c.BlockStop(i) for i in sorted(self._open)]
        self._open.clear()
        events.append(c.Finish(_FINISH_REASON.get(self._reason, "stop"), _usage_in(self._usage)))
        return events

    def _message_start(self, data: dict[str, Any], events: list[c.Event]) -> None:
        self._usage.update(data["message"].get("usage") or {})

    def _block_start(self, data: dict[str, Any], events: list[c.Event]) -> None:
        index, block = data["index"], data["content_block"]
        kind = block["type"]
        if kind == "text" and self._pending is not None:
            self._alias[index], self._pending = self._pending, None
        else:
            self._stop_pending(events)
        if kind == "text":
            if index not in self._alias:
                events.append(c.BlockStart(index, c.Text("")))
            if block.get("text"):
                events.append(c.TextDelta(self._alias.get(index, index), block["text"]))
            self._text_blocks.add(index)
        elif kind == "thinking":
            events.append(c.BlockStart(index, c.Thinking("")))
            if block.get("thinking"):
                events.append(c.ThinkingDelta(index, block["thinking"]))
            if block.get("signature"):
                events.append(c.SignatureDelta(index, block["signature"]))
        elif kind == "redacted_thinking":
            events.append(c.BlockStart(index, c.Thinking("", block["data"], redacted=True)))
        elif kind == "tool_use":
            events.append(c.BlockStart(index, c.ToolCall(block["id"], block["name"])))
            if block.get("input"):
                events.append(c.ToolArgsDelta(index, _json(block["input"])))
        elif kind == "server_tool_use" and block.get("name") == "web_search":
            self._searches[index] = [_json(block["input"])] if block.get("input") else []
            return
        elif kind == "web_search_tool_result":
            self._sources.results(block.get("content"))
            return
        else:
            return
        if kind == "text":
            self._cites[index] = (self._texts, list(block.get("citations") or ()))
            self._texts += len(block.get("text") or "")
        self._open.add(index)

    def _block_delta(self, data: dict[str, Any], events: list[c.Event]) -> None:
        index = data["index"]
        delta = data["delta"]
        if index in self._searches and delta["type"] == "input_json_delta":
            self._searches[index].append(delta["partial_json"])
        if index not in self._open:
            return
        match delta["type"]:
            case "text_delta":
                events.append(c.TextDelta(self._alias.get(index, index), delta["text"]))
                self._texts += len(delta["text"])
            case "citations_delta" if index in self._cites:
                self._cites[index][1].append(delta["citation"])
            case "thinking_delta":
                events.append(c.ThinkingDelta(index, delta["thinking"]))
            case "signature_delta":
                events.append(c.SignatureDelta(index, delta["signature"]))
            case "input_json_delta":
                if delta["partial_json"]:
                    events.append(c.ToolArgsDelta(index, delta["partial_json"]))

    def _block_stop(self, data: dict[str, Any], events: list[c.Event]) -> None:
        index = data["index"]
        if (search := self._searches.pop(index, None)) is not None:
            try:
                self._sources.query(json.loads("".join(search) or "{}"))
            except ValueError:
                pass
        if (cited := self._cites.pop(index, None)) is not None:
            start, citations = cited
            for citation in citations:
                self._sources.cite(citation, start, self._texts, "")
        if index in self._open:
            self._open.discard(index)
            if index in self._text_blocks:
                self._pending = self._alias.get(index, index)
            else:
                events.append(c.BlockStop(index))

    def _message_delta(self, data: dict[str, Any], events: list[c.Event]) -> None:
        self._reason = data["delta"].get("stop_reason") or self._reason or "end_turn"
        self._usage.update({k: v for k, v in (data.get("usage") or {}).items() if v is not None})

    def _message_stop(self, data: dict[str, Any], events: list[c.Event]) -> None:
        events.extend(self._finish())
        self._done = True

    def _error(self, data: dict[str, Any], events: list[c.Event]) -> None:
        error = data.get("error")
        error = error if isinstance(error, dict) else {}
        kind = str(error.get("type") or "api_error")
        message = str(error.get("message") or "the upstream reported an error")
        events.append(c.StreamError(message, _ERROR_STATUS.get(kind, 502), kind))
        self._done = True


_STREAM_HANDLERS: dict[str, Callable[[MessageStreamDecoder, dict[str, Any], list[c.Event]], None]] = {
    "message_start": MessageStreamDecoder._message_start,
    "content_block_start": MessageStreamDecoder._block_start,
    "content_block_delta": MessageStreamDecoder._block_delta,
    "content_block_stop": MessageStreamDecoder._block_stop,
    "message_delta": MessageStreamDecoder._message_delta,
    "message_stop": MessageStreamDecoder._message_stop,
    "error": MessageStreamDecoder._error,
}


class AnthropicUpstream:
    """The gateway's side towards an Anthropic-compatible base URL."""

    name = "anthropic"

    def encode_request(self, request: c.Request, model: str) -> dict[str, Any]:
        return _encode_request(request, model)

    def encode_count_request(self, request: c.Request, model: str) -> dict[str, Any]:
        """A `/v1/messages/count_tokens` body: it refuses max_tokens, stream and sampling fields."""
        body = _encode_request(request, model)
        return {key: body[key] for key in _COUNT_FIELDS if key in body}

    def decode_response(self, body: Any) -> c.Response:
        return _decode_response(body)

    def stream_decoder(self) -> MessageStreamDecoder:
        return MessageStreamDecoder()


caller = AnthropicCaller()
upstream = AnthropicUpstream()
