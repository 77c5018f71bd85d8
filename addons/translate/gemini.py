"""The Gemini protocol, in its three roles.

- `caller`: the Gemini API as clients speak it (google-genai SDKs, Gemini CLI): `:generateContent`,
  `:streamGenerateContent` (SSE with `alt=sse`, else one JSON array streamed), `:countTokens`,
  model lists.
- `upstream`: the gateway calling the Gemini API with a key (plain GenerateContentRequest bodies).
- `antigravity`: the same body inside Google Cloud Code's v1internal envelope; answers and stream
  events come wrapped in `{"response": ...}`. Both dialects share one decoder.

Call ids: Gemini often sends function calls without an id. Ids this module makes up look like
`call_<24 hex>` and are never sent to a Gemini model, which pairs calls and responses by name
and order; ids that came from an upstream are kept so every protocol can pair them. Claude
models behind v1internal pair by id, so they get every id.

Thought signatures: on the way out to a caller a thinking block's signature moves to the next
non-thought part, where Gemini itself puts it, because clients (Gemini CLI) drop thought parts
from their history but must send the signature back on the part that follows.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

from . import canonical as c
from .assemble import Assembler
from .protocol import ModelInfo
from .sse import SSEParser

__all__ = [
    "AntigravityDialect",
    "GeminiCaller",
    "GeminiDialect",
    "GeminiStreamDecoder",
    "GeminiStreamEncoder",
    "SchemaSubset",
    "antigravity",
    "caller",
    "clean_schema",
    "encode_request",
    "upstream",
]

# One encoder instance: json.dumps with options builds an encoder per call, and this runs per
# stream event. ASCII output is safe to .encode() whatever the text holds (lone surrogates too).
_dumps = json.JSONEncoder(separators=(",", ":")).encode

# --- tables ------------------------------------------------------------------------------------

_GOOGLE_STATUS: Final[dict[int, str]] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    421: "PERMISSION_DENIED",
    431: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# Upstream error code -> StreamError.kind, the hint callers' error shapes understand.
_ERROR_KINDS: Final[dict[int, str]] = {401: "auth", 403: "auth", 429: "rate_limit"}

# Gemini finishReason -> canonical. Anything else (OTHER, LANGUAGE, unspecified...) is "stop".
_FINISH_IN: Final[dict[str, c.FinishReason]] = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "MODEL_ARMOR": "content_filter",
    "MALFORMED_FUNCTION_CALL": "error",
    "UNEXPECTED_TOOL_CALL": "error",
    "TOO_MANY_TOOL_CALLS": "error",
    "MISSING_THOUGHT_SIGNATURE": "error",
    "MALFORMED_RESPONSE": "error",
}

_FINISH_OUT: Final[dict[str, str]] = {
    "stop": "STOP",
    "length": "MAX_TOKENS",
    "tool_calls": "STOP",
    "content_filter": "SAFETY",
    "stop_sequence": "STOP",
    "error": "OTHER",
}

# Content.role -> canonical; old SDKs sent function responses as "function".
_ROLES_IN: Final[dict[Any, c.Role]] = {
    None: "user",
    "user": "user",
    "model": "assistant",
    "function": "user",
    "tool": "user",
}

_MODES_IN: Final[dict[str, str]] = {
    "MODE_UNSPECIFIED": "auto",
    "AUTO": "auto",
    "VALIDATED": "auto",  # AUTO with schema-checked calls: the nearest canonical mode
    "ANY": "required",
    "NONE": "none",
}
_MODES_OUT: Final[dict[str, str]] = {"auto": "AUTO", "none": "NONE", "required": "ANY", "tool": "ANY"}

# generationConfig key <-> canonical Request attribute, and the number kind both sides expect.
_GENERATION_FIELDS: Final[tuple[tuple[str, str, type], ...]] = (
    ("maxOutputTokens", "max_tokens", int),
    ("temperature", "temperature", float),
    ("topP", "top_p", float),
    ("topK", "top_k", int),
    ("candidateCount", "candidate_count", int),
    ("seed", "seed", int),
    ("presencePenalty", "presence_penalty", float),
    ("frequencyPenalty", "frequency_penalty", float),
)

_LEVELS_IN: Final[dict[str, Any]] = {
    "thinking_level_unspecified": None,
    "minimal": "minimal",
    "low": "low",
    "medium": "medium",
    "high": "high",
    "xhigh": "high",
}
# Gemini 3 models take a level (Pro knows only low and high) ...
_LEVELS_OUT: Final[dict[str, str]] = {"minimal": "low", "low": "low", "medium": "high", "high": "high"}
# ... older ones a token budget.
_BUDGETS_OUT: Final[dict[str, int]] = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576}

# Gemini 3 refuses a function call of the current turn without a signature; this documented
# placeholder tells it to skip the check (history from another model or an older client).
_PLACEHOLDER_SIGNATURE: Final = "skip_thought_signature_validator"

_GENERATION_METHODS: Final = ["generateContent", "streamGenerateContent", "countTokens"]
_KIND_NOTES: Final = {"image": " (an image model)", "embedding": " (an embedding model)"}
# What each kind of model is for, as the Gemini API lists it.
_METHODS: Final[dict[str, list[str]]] = {
    "text": _GENERATION_METHODS,
    "image": ["generateContent", "streamGenerateContent", "countTokens"],
    "embedding": ["embedContent", "batchEmbedContents"],
}

_SYNTHETIC_ID = re.compile(r"call_[0-9a-f]{24}")
_GEMINI_GENERATION = re.compile(r"gemini-(\d+)")


def _new_call_id() -> str:
    return "call_" + os.urandom(12).hex()


def _stable_call_id(seed: str) -> str:
    """Same history, same id: keeps prompt caches of the upstream warm across turns."""
    return "call_" + hashlib.blake2s(seed.encode(), digest_size=12).hexdigest()


def _generation(model: str) -> int:
    match = _GEMINI_GENERATION.search(model)
    return int(match.group(1)) if match else 0


def google_status(status: int) -> str:
    return _GOOGLE_STATUS.get(status) or ("INTERNAL" if status >= 500 else "UNKNOWN")


def _error(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": google_status(status)}}


# --- reading caller bodies ---------------------------------------------------------------------

_SNAKE: dict[str, str] = {}


def _get(obj: dict[str, Any], key: str) -> Any:
    """`obj[key]` or its snake_case spelling: the SDKs send camelCase, some clients snake_case."""
    value = obj.get(key)
    if value is None:
        snake = _SNAKE.get(key)
        if snake is None:
            snake = _SNAKE[key] = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower()
        value = obj.get(snake)
    return value


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise c.BadRequest(f"{where}: must be an object", where)
    return value


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise c.BadRequest(f"{where}: must be a list", where)
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise c.BadRequest(f"{where}: must be a non-empty string", where)
    return value


def _optional_string(value: Any, where: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise c.BadRequest(f"{where}: must be a string", where)
    return value


def _number(value: Any, kind: type, where: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise c.BadRequest(f"{where}: must be a number", where)
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise c.BadRequest(f"{where}: must be an integer", where)
        return int(value)
    return value


def _json_schema(node: Any) -> Any:
    """Gemini's `parameters` and `responseSchema` are OpenAPI 3.0 (upper-case types, `nullable`);
    the canonical form and the other upstreams want JSON Schema."""
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "type" and isinstance(value, str):
            if value.upper() != "TYPE_UNSPECIFIED":
                out["type"] = value.lower()
        elif key == "properties" and isinstance(value, dict):
            out[key] = {name: _json_schema(schema) for name, schema in value.items()}
        elif key in ("anyOf", "any_of") and isinstance(value, list):
            out["anyOf"] = [_json_schema(schema) for schema in value]
        elif key == "items":
            out[key] = _json_schema(value)
        elif key not in ("nullable", "propertyOrdering", "property_ordering"):
            out[key] = value
    if node.get("nullable") is True and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


class _Calls:
    """Pairs function responses with the calls before them. Gemini clients send calls without
    ids, or answer with an id of their own, so a response takes the id of the earliest open call
    of its name unless its id names a call exactly."""

    __slots__ = ("_open", "_ids")

    def __init__(self) -> None:
        self._open: dict[str, deque[str]] = {}
        self._ids: dict[str, str] = {}  # open call id -> name

    def call(self, call_id: str, name: str) -> None:
        self._open.setdefault(name, deque()).append(call_id)
        self._ids[call_id] = name

    def response(self, call_id: str | None, name: str, seed: str) -> str:
        if call_id and (owner := self._ids.pop(call_id, None)) is not None:
            self._open[owner].remove(call_id)
            return call_id
        if queue := self._open.get(name):
            found = queue.popleft()
            del self._ids[found]
            return found
        return call_id or _stable_call_id(seed)


def _result_content(response: Any) -> tuple[list[c.Text | c.Image], bool]:
    """`{"result"|"output"|"error": "<text>"}` is how clients wrap plain text; anything else
    travels as its JSON."""
    if isinstance(response, dict):
        if len(response) == 1:
            ((key, value),) = response.items()
            if key in ("result", "output", "error") and isinstance(value, str):
                return [c.Text(value)], key == "error"
        return [c.Text(_dumps(response))], "error" in response
    return [c.Text(response if isinstance(response, str) else _dumps(response))], False


def _media(value: Any, where: str, remote: bool) -> c.Image:
    media = _object(value, where)
    mime = _get(media, "mimeType")
    if remote:
        return c.Image(mime or "application/octet-stream", url=_string(_get(media, "fileUri"), f"{where}.fileUri"))
    return c.Image(_string(mime, f"{where}.mimeType"), data=_string(_get(media, "data"), f"{where}.data"))


def _contents(contents: list[Any]) -> list[c.Message]:
    messages = []
    calls = _Calls()
    for i, content in enumerate(contents):
        where = f"contents[{i}]"
        content = _object(content, where)
        role = _ROLES_IN.get(role) if isinstance(role := content.get("role"), str | None) else None
        if role is None:
            raise c.BadRequest(f'{where}.role: must be "user" or "model"', f"{where}.role")
        parts = _list(_get(content, "parts"), f"{where}.parts")
        if decoded := [_part(part, f"{where}.parts[{j}]", calls) for j, part in enumerate(parts)]:
            messages.append(c.Message(role, decoded))
    if not messages:
        raise c.BadRequest("contents: no content has any parts", "contents")
    return messages


def _part(part: Any, where: str, calls: _Calls) -> c.Part:
    part = _object(part, where)
    signature = _get(part, "thoughtSignature")
    if signature is not None and not isinstance(signature, str):
        raise c.BadRequest(f"{where}.thoughtSignature: must be a string", f"{where}.thoughtSignature")
    if (call := _get(part, "functionCall")) is not None:
        call = _object(call, f"{where}.functionCall")
        name = _string(call.get("name"), f"{where}.functionCall.name")
        args = call.get("args")
        if args is None:
            args = {}
        elif not isinstance(args, dict):
            raise c.BadRequest(f"{where}.functionCall.args: must be an object", f"{where}.functionCall.args")
        call_id = _optional_string(call.get("id"), f"{where}.functionCall.id") or _stable_call_id(where)
        calls.call(call_id, name)
        return c.ToolCall(call_id, name, args, signature)
    if (result := _get(part, "functionResponse")) is not None:
        result = _object(result, f"{where}.functionResponse")
        name = _string(result.get("name"), f"{where}.functionResponse.name")
        content, is_error = _result_content(result.get("response"))
        extras = result.get("parts")
        for k, extra in enumerate(_list(extras, f"{where}.functionResponse.parts") if extras is not None else ()):
            if isinstance(extra, dict) and (media := _get(extra, "inlineData")) is not None:  # multimodal function responses
                content.append(_media(media, f"{where}.functionResponse.parts[{k}].inlineData", False))
        call_id = _optional_string(result.get("id"), f"{where}.functionResponse.id")
        return c.ToolResult(calls.response(call_id, name, where), name, content, is_error)
    if (media := _get(part, "inlineData")) is not None:
        return _media(media, f"{where}.inlineData", False)
    if (media := _get(part, "fileData")) is not None:
        return _media(media, f"{where}.fileData", True)
    text = part.get("text")
    if text is None and not signature:
        raise c.BadRequest(f"{where}: unknown part type", where)
    if text is not None and not isinstance(text, str):
        raise c.BadRequest(f"{where}.text: must be a string", f"{where}.text")
    if part.get("thought") is True:
        return c.Thinking(text or "", signature)
    return c.Text(text or "", signature)  # a bare signature too: Gemini sends `{"thoughtSignature"}` alone


def _system(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    parts = _list(_get(_object(value, "systemInstruction"), "parts"), "systemInstruction.parts")
    texts = []
    for j, part in enumerate(parts):
        text = part.get("text") if isinstance(part, dict) else None
        if not isinstance(text, str):
            raise c.BadRequest(f"systemInstruction.parts[{j}]: only text parts are supported", "systemInstruction")
        texts.append(text)
    return texts


def _tools(value: Any) -> list[c.Tool]:
    tools = []
    for i, tool in enumerate(_list(value, "tools") if value is not None else ()):
        declarations = _get(_object(tool, f"tools[{i}]"), "functionDeclarations")
        if declarations is None:
            continue  # googleSearch, codeExecution, urlContext...: nothing other upstreams can run
        for j, fn in enumerate(_list(declarations, f"tools[{i}].functionDeclarations")):
            where = f"tools[{i}].functionDeclarations[{j}]"
            fn = _object(fn, where)
            schema = _get(fn, "parametersJsonSchema")
            if schema is None and (schema := fn.get("parameters")) is not None:
                schema = _json_schema(schema)
            description = _optional_string(fn.get("description"), f"{where}.description")
            tools.append(c.Tool(_string(fn.get("name"), f"{where}.name"), description or "", schema))
    return tools


_SEARCH_TOOLS: Final = ("googleSearch", "googleSearchRetrieval")


def _search(value: Any) -> c.WebSearch | None:
    """Google Search grounding among the tools (the SDKs send google_search too)."""
    for tool in value if isinstance(value, list) else ():
        if isinstance(tool, dict) and any(_get(tool, key) is not None for key in _SEARCH_TOOLS):
            return c.WebSearch()
    return None


def fit_search(body: dict[str, Any], searching: bool) -> dict[str, Any]:
    """A GenerateContentRequest whose tools say what Google allows: Google Search when asked for,
    but never beside function declarations (Google refuses the pair; the functions win)."""
    tools = body.get("tools") if isinstance(body.get("tools"), list) else []
    declares = any(isinstance(t, dict) and _get(t, "functionDeclarations") for t in tools)
    grounds = any(isinstance(t, dict) and any(_get(t, key) is not None for key in _SEARCH_TOOLS) for t in tools)
    if declares and grounds:
        kept = [t for t in tools if not (isinstance(t, dict) and any(_get(t, key) is not None for key in _SEARCH_TOOLS))]
        return {**body, "tools": kept}
    if searching and not declares and not grounds:
        return {**body, "tools": [*tools, {"googleSearch": {}}]}
    return body


def _tool_choice(value: Any, tools: list[c.Tool]) -> tuple[c.ToolChoice | None, list[c.Tool]]:
    """`allowedFunctionNames` with one name is a forced tool; with several, the other tools are
    left out, which restricts the choice the same way in every protocol."""
    if value is None:
        return None, tools
    config = _get(_object(value, "toolConfig"), "functionCallingConfig")
    if config is None:
        return None, tools
    where = "toolConfig.functionCallingConfig"
    config = _object(config, where)
    mode = _MODES_IN.get(str(config.get("mode") or "AUTO").upper())
    if mode is None:
        raise c.BadRequest(f"{where}.mode: unknown mode {config.get('mode')!r}", f"{where}.mode")
    names = _get(config, "allowedFunctionNames") or []
    if mode != "required" or not names:
        return c.ToolChoice(mode), tools  # type: ignore[arg-type]
    names = _list(names, f"{where}.allowedFunctionNames")
    if len(names) == 1:
        return c.ToolChoice("tool", names[0]), tools
    return c.ToolChoice("required"), [tool for tool in tools if tool.name in names]


def _thinking(value: Any) -> c.ThinkingConfig | None:
    if value is None:
        return None
    where = "generationConfig.thinkingConfig"
    config = _object(value, where)
    # Gemini shows thoughts only when asked: the canonical default (True) does not apply.
    thinking = c.ThinkingConfig(include_thoughts=_get(config, "includeThoughts") is True)
    if (budget := _get(config, "thinkingBudget")) is not None:
        budget = _number(budget, int, f"{where}.thinkingBudget")
        if budget == 0:
            thinking.enabled = False
        elif budget > 0:
            thinking.budget_tokens = budget  # -1 means "as much as needed": no budget
    if (level := _get(config, "thinkingLevel")) is not None:
        if not isinstance(level, str) or level.lower() not in _LEVELS_IN:
            raise c.BadRequest(f"{where}.thinkingLevel: unknown level {level!r}", f"{where}.thinkingLevel")
        thinking.effort = _LEVELS_IN[level.lower()]
    return thinking


def _response_format(config: dict[str, Any]) -> c.ResponseFormat | None:
    if _get(config, "responseMimeType") != "application/json":
        return None
    schema = _get(config, "responseJsonSchema")
    if schema is None and (schema := _get(config, "responseSchema")) is not None:
        schema = _json_schema(schema)
    if schema is None:
        return c.ResponseFormat("json_object")
    return c.ResponseFormat("json_schema", _object(schema, "generationConfig.responseSchema"))


def _model_name(model: Any) -> str:
    if not isinstance(model, str):
        return ""
    if not model.isprintable() or not _encodable(model):  # a path with raw bytes, or control characters
        raise c.BadRequest(f"model: {model.encode(errors='backslashreplace').decode()!r} is not a model name", "model")
    return model.removeprefix("models/")


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def decode_request(body: Any, *, model: str | None = None) -> c.Request:
    body = _object(body, "body")
    if _get(body, "cachedContent"):
        raise c.BadRequest("cachedContent: cached contents are not supported by this gateway", "cachedContent")
    name = _model_name(model) or _model_name(body.get("model"))
    if not name:
        raise c.BadRequest("model: the path must name a model", "model")
    contents = _get(body, "contents")
    if not isinstance(contents, list) or not contents:
        raise c.BadRequest("contents: must be a non-empty list", "contents")
    tool_choice, tools = _tool_choice(_get(body, "toolConfig"), _tools(body.get("tools")))
    request = c.Request(
        model=name,
        messages=_contents(contents),
        system=_system(_get(body, "systemInstruction")),
        tools=tools,
        tool_choice=tool_choice,
        search=_search(body.get("tools")),
    )
    config = _get(body, "generationConfig")
    if config is None:
        return request
    config = _object(config, "generationConfig")
    for key, attr, kind in _GENERATION_FIELDS:
        if (value := _get(config, key)) is not None:
            setattr(request, attr, _number(value, kind, f"generationConfig.{key}"))
    if (stop := _get(config, "stopSequences")) is not None:
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            where = "generationConfig.stopSequences"
            raise c.BadRequest(f"{where}: must be a list of strings", where)
        request.stop = stop
    request.response_format = _response_format(config)
    request.thinking = _thinking(_get(config, "thinkingConfig"))
    return request


def decode_count_request(body: Any, model: str | None = None) -> c.Request:
    """`:countTokens` takes `{"contents": [...]}` or a whole `{"generateContentRequest": {...}}`."""
    body = _object(body, "body")
    inner = _get(body, "generateContentRequest")
    if inner is not None:
        return decode_request(inner, model=model or _object(inner, "generateContentRequest").get("model"))
    return decode_request(body, model=model)


# --- writing caller bodies ---------------------------------------------------------------------


def _media_part(image: c.Image) -> dict[str, Any]:
    if image.data is not None:
        return {"inlineData": {"mimeType": image.mime_type, "data": image.data}}
    return {"fileData": {"mimeType": image.mime_type, "fileUri": image.url}}


def _call_part(name: str, args: dict[str, Any], call_id: str | None) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": name, "args": args}
    if call_id:
        fn["id"] = call_id
    return {"functionCall": fn}


def _signed(part: dict[str, Any], signature: str | None) -> dict[str, Any]:
    if signature:
        part["thoughtSignature"] = signature
    return part


def _usage_metadata(usage: c.Usage) -> dict[str, Any]:
    meta = {
        "promptTokenCount": usage.input_tokens,
        "candidatesTokenCount": max(usage.output_tokens - usage.reasoning_tokens, 0),
        "totalTokenCount": usage.total_tokens,
    }
    if usage.cached_tokens > 0:
        meta["cachedContentTokenCount"] = usage.cached_tokens
    if usage.reasoning_tokens > 0:
        meta["thoughtsTokenCount"] = usage.reasoning_tokens
    return meta


def _wants_thoughts(request: c.Request) -> bool:
    return request.thinking is not None and request.thinking.enabled and request.thinking.include_thoughts


def _caller_parts(parts: list[c.Part], thoughts: bool) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    pending: str | None = None  # a thinking block's signature, for the next part
    for part in parts:
        match part:
            case c.Thinking(text=text, signature=signature, redacted=redacted):
                if thoughts and not redacted and text:
                    out.append({"text": text, "thought": True})
                pending = signature or pending
                continue
            case c.Text(text=text, signature=signature) if text or signature or pending:
                encoded: dict[str, Any] = {"text": text}
            case c.ToolCall(id=call_id, name=name, arguments=args, signature=signature):
                encoded = _call_part(name, args, call_id)
            case c.Image():
                encoded, signature = _media_part(part), None
            case _:
                continue
        if signature := signature or pending:
            encoded["thoughtSignature"] = signature
        pending = None
        out.append(encoded)
    if pending:
        out.append({"text": "", "thoughtSignature": pending})
    return out


def encode_response(response: c.Response, request: c.Request) -> dict[str, Any]:
    candidate = {
        "content": {"role": "model", "parts": _caller_parts(response.parts, _wants_thoughts(request))},
        "finishReason": _FINISH_OUT[response.finish_reason],
        "index": 0,
    }
    if response.grounding is not None:
        candidate["groundingMetadata"] = grounding_out(response.grounding, c.answer_text(response.parts))
    return {
        "candidates": [candidate],
        "usageMetadata": _usage_metadata(response.usage),
        "modelVersion": response.model,
        "responseId": response.id,
    }


class _PendingCall:
    __slots__ = ("call", "fragments", "signature")

    def __init__(self, call: c.ToolCall) -> None:
        self.call = call
        self.fragments: list[str] = []
        self.signature = call.signature


class GeminiStreamEncoder:
    """Canonical events -> GenerateContentResponse chunks, one per delta so a stream stays a
    stream. A function call goes out whole at its BlockStop, as Gemini sends it. With `sse`
    the chunks are `data:` events, else the elements of one JSON array (`:streamGenerateContent`
    without `alt=sse`). The constant head and tail of a chunk are encoded once."""

    __slots__ = (
        "_sse", "_thoughts", "_head", "_tail", "_ids", "_blocks", "_calls", "_signature", "_opened", "_done",
        "_grounding", "_text",
    )

    def __init__(self, request: c.Request, response_id: str, model: str, created: int = 0, sse: bool = True) -> None:
        self._sse = sse
        self._thoughts = _wants_thoughts(request)
        self._head = b'{"candidates":[{"content":{"role":"model","parts":['
        self._ids = _dumps({"modelVersion": model, "responseId": response_id})[1:].encode()  # `"modelVersion":..}`
        self._tail = b']},"index":0}],' + self._ids
        self._blocks: dict[int, type] = {}  # open block index -> its part type
        self._calls: dict[int, _PendingCall] = {}
        self._signature: str | None = None  # a thinking block's signature, for the next part
        self._opened = False
        self._done = False
        self._grounding: c.Grounding | None = None  # sent with the last chunk, as Google does
        self._text: list[str] = []

    def _frame(self, chunk: bytes) -> bytes:
        if self._sse:
            return b"data: " + chunk + b"\r\n\r\n"
        if self._opened:
            return b",\r\n" + chunk
        self._opened = True
        return b"[" + chunk

    def _chunk(self, part: dict[str, Any]) -> bytes:
        return self._frame(self._head + _dumps(part).encode() + self._tail)

    def _part(self, part: dict[str, Any]) -> bytes:
        """A chunk of one part, which takes a held thinking signature if it is not a thought."""
        if self._signature is not None and "thought" not in part and "thoughtSignature" not in part:
            part["thoughtSignature"] = self._signature
            self._signature = None
        return self._chunk(part)

    def _thinking_signature(self, signature: str) -> bytes:
        """Hold it for the next part; one already held gets an empty part of its own."""
        held, self._signature = self._signature, signature
        return self._chunk({"text": "", "thoughtSignature": held}) if held else b""

    def _finish(self, reason: c.FinishReason, usage: c.Usage) -> bytes:
        candidate: dict[str, Any] = {"finishReason": _FINISH_OUT[reason], "index": 0}
        if self._signature is not None:
            candidate["content"] = {"role": "model", "parts": [{"text": "", "thoughtSignature": self._signature}]}
        if self._grounding is not None:
            candidate["groundingMetadata"] = grounding_out(self._grounding, "".join(self._text))
        chunk = b'{"candidates":[' + _dumps(candidate).encode() + b'],"usageMetadata":'
        chunk += _dumps(_usage_metadata(usage)).encode() + b"," + self._ids
        return self._frame(chunk) + self._end()

    def _end(self) -> bytes:
        self._done = True
        return b"" if self._sse else b"]"

    def encode(self, events: list[c.Event]) -> bytes:
        if self._done:
            return b""
        out: list[bytes] = []
        for event in events:
            match event:
                case c.TextDelta(text=text) if text:
                    self._text.append(text)
                    out.append(self._part({"text": text}))
                case c.Grounded(grounding=grounding):
                    self._grounding = grounding
                case c.ThinkingDelta(text=text) if text and self._thoughts:
                    out.append(self._part({"text": text, "thought": True}))
                case c.ToolArgsDelta(index=index, json=fragment) if index in self._calls:
                    self._calls[index].fragments.append(fragment)
                case c.SignatureDelta(index=index, signature=signature):
                    kind = self._blocks.get(index)
                    if kind is c.ToolCall:
                        pending = self._calls[index]
                        pending.signature = (pending.signature or "") + signature
                    elif kind is c.Text:
                        out.append(self._chunk({"text": "", "thoughtSignature": signature}))
                    else:
                        out.append(self._thinking_signature(signature))
                case c.BlockStart(index=index, part=part):
                    self._blocks[index] = type(part)
                    match part:
                        case c.ToolCall():
                            self._calls[index] = _PendingCall(part)
                        case c.Image():
                            out.append(self._part(_media_part(part)))
                        case c.Text(text=text, signature=signature) if text or signature:
                            self._text.append(text)
                            out.append(self._part(_signed({"text": text}, signature)))
                        case c.Thinking(text=text, signature=signature):
                            if text and self._thoughts and not part.redacted:
                                out.append(self._part({"text": text, "thought": True}))
                            if signature:
                                out.append(self._thinking_signature(signature))
                case c.BlockStop(index=index):
                    self._blocks.pop(index, None)
                    if (pending := self._calls.pop(index, None)) is not None:
                        out.append(self._part(self._call(pending)))
                case c.Finish(reason=reason, usage=usage):
                    out.append(self._finish(reason, usage))
                    break
                case c.StreamError(message=message, status=status):
                    out.append(self._frame(_dumps(_error(status, message)).encode()) + self._end())
                    break
        return b"".join(out)

    @staticmethod
    def _call(pending: _PendingCall) -> dict[str, Any]:
        text = "".join(pending.fragments)
        try:
            args = json.loads(text) if text.strip() else {}
        except ValueError:
            args = {}
        call = pending.call
        return _signed(_call_part(call.name, args if isinstance(args, dict) else {}, call.id), pending.signature)


def error_body(status: int, message: str, kind: str | None = None) -> dict[str, Any]:
    return _error(status, message)


def encode_model(model: ModelInfo) -> dict[str, Any]:
    """One entry of `GET /v1beta/models`, also the answer of `GET /v1beta/models/{m}`."""
    body: dict[str, Any] = {
        "name": f"models/{model.id}",
        "version": "001",
        "displayName": model.display_name or model.id,
        "description": f"{model.display_name or model.id}{_KIND_NOTES.get(model.kind, '')}, served by Switchyard",
        "supportedGenerationMethods": list(_METHODS.get(model.kind, _GENERATION_METHODS)),
    }
    if model.input_token_limit:
        body["inputTokenLimit"] = model.input_token_limit
    if model.output_token_limit:
        body["outputTokenLimit"] = model.output_token_limit
    return body


def encode_model_list(models: list[ModelInfo]) -> dict[str, Any]:
    return {"models": [encode_model(model) for model in models]}


def encode_count_response(total: int) -> dict[str, Any]:
    return {"totalTokens": total}


class GeminiCaller:
    name = "gemini"
    stream_content_type = "text/event-stream"
    # `:streamGenerateContent` without `alt=sse` answers one JSON array: stream_encoder(sse=False).
    array_content_type = "application/json"

    decode_request = staticmethod(decode_request)
    decode_count_request = staticmethod(decode_count_request)
    encode_response = staticmethod(encode_response)
    stream_encoder = GeminiStreamEncoder
    error_body = staticmethod(error_body)
    encode_model_list = staticmethod(encode_model_list)
    encode_model = staticmethod(encode_model)
    encode_count_response = staticmethod(encode_count_response)


# --- schema cleaning ---------------------------------------------------------------------------

# `type`, `enum`, `format`, `items`, `properties`, `required`, `anyOf`, `nullable` and
# `description` are rebuilt; these constraints are copied where the upstream takes them and
# otherwise, like the dropped keywords after them, told to the model in the description.
_SCHEMA_CONSTRAINTS: Final = (
    "minItems",
    "maxItems",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "pattern",
    "minProperties",
    "maxProperties",
)
_SCHEMA_HINTS: Final = ("default", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_SCHEMA_TYPES: Final = frozenset({"string", "number", "integer", "boolean", "array", "object"})
_LOCAL_REFS: Final = ("#/$defs/", "#/definitions/")
_LITERAL_KEYS: Final = frozenset({"type", "enum", "description"})


@dataclass(frozen=True, slots=True)
class SchemaSubset:
    """What an upstream's schema dialect takes beyond the structure `clean_schema` rebuilds."""

    constraints: frozenset[str]  # of _SCHEMA_CONSTRAINTS, copied as they are
    formats: frozenset[str]  # `format` values kept on strings


# Gemini's Schema, an OpenAPI 3.0 subset.
GEMINI_SCHEMA: Final = SchemaSubset(frozenset(_SCHEMA_CONSTRAINTS), frozenset({"enum", "date-time"}))


def clean_schema(schema: Any, subset: SchemaSubset = GEMINI_SCHEMA) -> dict[str, Any]:
    """A JSON schema rewritten to the subset Gemini accepts, the best-known source of 400s when
    tools written for other models reach it: no `$schema`/`$ref`/`additionalProperties`/`const`,
    no type arrays, every node typed, `required` naming only known properties, enums of strings,
    no empty `properties`. Local `$ref`s are inlined (a recursive one becomes a plain object).
    Constraints outside `subset` become hints in the description. Builds new dicts; the input is
    left as it was."""
    defs: dict[str, Any] = {}
    if isinstance(schema, dict):
        for key in ("definitions", "$defs"):
            if isinstance(schema.get(key), dict):
                defs.update(schema[key])
    return _clean(schema, defs, frozenset(), subset)


def _deref(
    node: dict[str, Any], defs: dict[str, Any], seen: frozenset[str]
) -> tuple[dict[str, Any] | None, frozenset[str]]:
    """The node with its local `$ref` inlined (its own keys win), or None for a ref that cannot be
    inlined (unknown, remote, or recursive)."""
    ref = node.get("$ref")
    if not isinstance(ref, str):
        return node, seen
    target = defs.get(ref.split("/", 2)[-1]) if ref.startswith(_LOCAL_REFS) else None
    if not isinstance(target, dict) or ref in seen:
        return None, seen
    merged = {**target, **node}
    del merged["$ref"]
    return merged, seen | {ref}


def _merge_all_of(node: dict[str, Any], defs: dict[str, Any], seen: frozenset[str]) -> dict[str, Any]:
    merged = {key: value for key, value in node.items() if key != "allOf"}
    for part in node["allOf"]:
        part = _deref(part, defs, seen)[0] if isinstance(part, dict) else None
        for key, value in (part or {}).items():
            if key == "properties" and isinstance(value, dict):
                merged["properties"] = {**merged.get("properties", {}), **value}
            elif key == "required" and isinstance(value, list):
                merged["required"] = [*merged.get("required", []), *value]
            else:
                merged.setdefault(key, value)
    return merged


def _is_null(node: Any) -> bool:
    return isinstance(node, dict) and node.get("type") == "null" and len(node) == 1


def _literal_union(options: list[dict[str, Any]]) -> list[str] | None:
    """`anyOf: [{const: "a"}, {enum: ["b", "c"]}]` is an enum of strings: Gemini takes that
    better than a union."""
    values: list[str] = []
    for option in options:
        if option.get("type") != "string" or "enum" not in option or not option.keys() <= _LITERAL_KEYS:
            return None
        values.extend(option["enum"])
    return list(dict.fromkeys(values))


def _clean(node: Any, defs: dict[str, Any], seen: frozenset[str], subset: SchemaSubset) -> dict[str, Any]:
    if not isinstance(node, dict):
        return {"type": "string"}  # `true` or garbage: anything goes, and text is the safest
    resolved, seen = _deref(node, defs, seen)
    if resolved is None:
        stub: dict[str, Any] = {"type": "object"}
        if isinstance(description := node.get("description"), str):
            stub["description"] = description
        return stub
    node = resolved
    if isinstance(node.get("allOf"), list):
        node = _merge_all_of(node, defs, seen)
    out: dict[str, Any] = {}
    hints: list[str] = []
    nullable = node.get("nullable") is True
    kind = node.get("type")
    variants = node.get("anyOf", node.get("oneOf"))
    if isinstance(kind, list):
        nullable = nullable or "null" in kind
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
        if len(kinds) > 1 and not isinstance(variants, list):
            variants = [{"type": k} for k in kinds]
    elif kind == "null":
        kind, nullable = None, True
    if isinstance(variants, list):
        options = [_clean(option, defs, seen, subset) for option in variants if not _is_null(option)]
        nullable = nullable or len(options) < len(variants)
        if (literals := _literal_union(options)) is not None and options:
            kind, out["enum"] = "string", literals
        elif len(options) == 1:
            out.update(options[0])  # a union of one is that schema; the node's own keys win below
        elif options:
            out["anyOf"] = options
    enum = [node["const"]] if "const" in node else node.get("enum")
    if isinstance(enum, list):
        if None in enum:
            nullable, enum = True, [value for value in enum if value is not None]
        if enum and all(isinstance(value, str) for value in enum):
            kind, out["enum"] = "string", list(enum)
        elif enum:
            hints.append("one of: " + ", ".join(_dumps(value) for value in enum))
    properties = node.get("properties")
    if isinstance(properties, dict) and properties:
        out["properties"] = {name: _clean(schema, defs, seen, subset) for name, schema in properties.items()}
        kind = kind or "object"
        required = node.get("required")
        required = [name for name in required if isinstance(name, str) and name in out["properties"]] if isinstance(required, list) else None
        if required:
            out["required"] = list(dict.fromkeys(required))
    items = node.get("items")
    if isinstance(items, list):  # tuple form: the first item's schema stands for all
        items = items[0] if items else None
    if kind == "array" or items is not None:
        out["items"] = _clean(items, defs, seen, subset) if items is not None else {"type": "string"}
        kind = kind or "array"
    if isinstance(kind, str) and kind.lower() in _SCHEMA_TYPES:
        out["type"] = kind.lower()
    elif "type" not in out and "anyOf" not in out:
        out["type"] = "string"  # Gemini wants every node typed; an untyped value travels as text
    if out.get("type") != "array":
        out.pop("items", None)
    if "description" in node:
        out["description"] = node["description"]
    for key in _SCHEMA_CONSTRAINTS:
        if key in node and key in subset.constraints:
            out[key] = node[key]
    fmt = node.get("format")
    if isinstance(fmt, str):
        if fmt in subset.formats and out.get("type") == "string":
            out["format"] = fmt
        else:
            hints.append(f"format: {fmt}")
    hints.extend(
        f"{key}: {_dumps(node[key])}"
        for key in (*_SCHEMA_CONSTRAINTS, *_SCHEMA_HINTS)
        if key in node and key not in subset.constraints
    )
    if hints:
        description = out.get("description")
        hint = "; ".join(hints)
        out["description"] = f"{description} ({hint})" if isinstance(description, str) and description else hint
    if nullable:
        out["nullable"] = True
    return out


# --- writing upstream bodies -------------------------------------------------------------------


def _gemini_id(call_id: str, pairs_by_id: bool) -> str | None:
    """The id to send: none for the ids this module made up, unless the model pairs calls and
    responses by id (Claude behind v1internal refuses a call without one)."""
    if not call_id or (_SYNTHETIC_ID.fullmatch(call_id) and not pairs_by_id):
        return None
    return call_id


def _pairs_by_id(model: str) -> bool:
    return model.removeprefix("models/").startswith("claude-")


def _tool_response(result: c.ToolResult) -> dict[str, Any]:
    """Gemini wants an object: a JSON object result goes as itself, other text wrapped."""
    text = "\n".join(part.text for part in result.content if isinstance(part, c.Text))
    if result.is_error:
        return {"error": text}
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            pass
        else:
            if isinstance(value, dict):
                return value
    return {"result": text}


def _upstream_parts(message: c.Message, names: dict[str, str], by_id: bool) -> list[dict[str, Any]]:
    """Never an empty text part (Gemini refuses it) nor a part with two data fields."""
    parts: list[dict[str, Any]] = []
    for part in message.parts:
        match part:
            case c.Text(text=text, signature=signature) if text or signature:
                parts.append(_signed({"text": text}, signature))
            case c.Thinking(text=text, signature=signature, redacted=False) if text or signature:
                parts.append(_signed({"text": text, "thought": True}, signature))
            case c.ToolCall(id=call_id, name=name, arguments=args, signature=signature):
                names[call_id] = name
                parts.append(_signed(_call_part(name, args, _gemini_id(call_id, by_id)), signature))
            case c.ToolResult(call_id=call_id, name=name):
                response: dict[str, Any] = {"name": name or names.get(call_id) or "tool"}
                if gemini_id := _gemini_id(call_id, by_id):
                    response["id"] = gemini_id
                response["response"] = _tool_response(part)
                parts.append({"functionResponse": response})
                parts.extend(_media_part(media) for media in part.content if isinstance(media, c.Image))
            case c.Image():
                parts.append(_media_part(part))
    return parts


def _upstream_contents(messages: list[c.Message], model: str) -> list[dict[str, Any]]:
    """Gemini wants strictly alternating user/model contents that start with a user turn."""
    contents: list[dict[str, Any]] = []
    names: dict[str, str] = {}  # call id -> function name, for results that carry only the id
    by_id = _pairs_by_id(model)
    for message in messages:
        parts = _upstream_parts(message, names, by_id)
        if not parts:
            continue
        role = "model" if message.role == "assistant" else "user"
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    if not contents or contents[0]["role"] != "user":
        contents.insert(0, {"role": "user", "parts": [{"text": "."}]})
    if _generation(model) >= 3:
        for content in contents:
            if content["role"] == "model":
                first = next((part for part in content["parts"] if "functionCall" in part), None)
                if first is not None:
                    first.setdefault("thoughtSignature", _PLACEHOLDER_SIGNATURE)
    return contents


def _function_declaration(tool: c.Tool) -> dict[str, Any]:
    declaration: dict[str, Any] = {"name": tool.name}
    if tool.description:
        declaration["description"] = tool.description
    if tool.parameters:
        schema = clean_schema(tool.parameters)
        if schema.get("properties"):  # Gemini refuses an object with no properties
            declaration["parameters"] = schema
    return declaration


def _thinking_config(thinking: c.ThinkingConfig, model: str) -> dict[str, Any]:
    leveled = _generation(model) >= 3
    config: dict[str, Any] = {}
    if not thinking.enabled:
        # Gemini 3 cannot stop thinking; its lowest level is the nearest.
        return {"thinkingLevel": "low"} if leveled else {"thinkingBudget": 0}
    if thinking.budget_tokens is not None:
        config["thinkingBudget"] = thinking.budget_tokens
    elif thinking.effort is not None:
        if leveled:
            config["thinkingLevel"] = _LEVELS_OUT[thinking.effort]
        else:
            config["thinkingBudget"] = _BUDGETS_OUT[thinking.effort]
    if thinking.include_thoughts:
        config["includeThoughts"] = True
    return config


def _generation_config(request: c.Request, model: str) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for key, attr, _ in _GENERATION_FIELDS:
        if (value := getattr(request, attr)) is not None:
            config[key] = value
    if request.stop:
        config["stopSequences"] = request.stop
    fmt = request.response_format
    if fmt is not None and fmt.type != "text":
        config["responseMimeType"] = "application/json"
        if fmt.type == "json_schema" and fmt.schema:
            schema = clean_schema(fmt.schema)
            if schema.get("type") != "object" or schema.get("properties"):
                config["responseSchema"] = schema
    if request.thinking is not None and (thinking := _thinking_config(request.thinking, model)):
        config["thinkingConfig"] = thinking
    return config


_IMAGE_MODEL = re.compile(r"(?:^|[-_/])image(?:$|[-_])|^(?:models/)?imagen-")
# What an image model refuses: it draws from the conversation alone.
_NOT_FOR_IMAGES: Final = ("tools", "toolConfig", "systemInstruction")
_NOT_FOR_IMAGES_CONFIG: Final = ("thinkingConfig", "responseMimeType", "responseSchema", "responseJsonSchema")


def is_image_model(model: str) -> bool:
    """gemini-3.1-flash-image, gemini-2.5-flash-image-preview, imagen-4: models that draw."""
    return _IMAGE_MODEL.search(model) is not None


def fit_image_model(body: dict[str, Any], *, name_modalities: bool) -> dict[str, Any]:
    """A GenerateContentRequest (camelCase) as an image model takes it: no tools, no system
    prompt, no thinking (Antigravity-Manager strips the same); the Gemini API is told to answer
    with images too, Cloud Code is not told (its envelope says `image_gen`)."""
    out = {key: value for key, value in body.items() if key not in _NOT_FOR_IMAGES}
    config = body.get("generationConfig")
    config = {k: v for k, v in config.items() if k not in _NOT_FOR_IMAGES_CONFIG} if isinstance(config, dict) else {}
    config.pop("responseModalities", None)
    if name_modalities:
        config["responseModalities"] = ["TEXT", "IMAGE"]
    if config:
        out["generationConfig"] = config
    return out


def encode_request(request: c.Request, model: str) -> dict[str, Any]:
    """A GenerateContentRequest body for `model` (which the body itself does not name)."""
    body: dict[str, Any] = {"contents": _upstream_contents(request.messages, model)}
    if request.system:
        body["systemInstruction"] = {"role": "user", "parts": [{"text": text} for text in request.system]}
    if request.tools:
        body["tools"] = [{"functionDeclarations": [_function_declaration(tool) for tool in request.tools]}]
        if (choice := request.tool_choice) is not None:
            calling: dict[str, Any] = {"mode": _MODES_OUT[choice.mode]}
            if choice.mode == "tool" and choice.name:
                calling["allowedFunctionNames"] = [choice.name]
            body["toolConfig"] = {"functionCallingConfig": calling}
    elif request.search is not None:
        body["tools"] = [{"googleSearch": {}}]
    if generation := _generation_config(request, model):
        body["generationConfig"] = generation
    return body


# --- reading upstream answers ------------------------------------------------------------------

# A whole string (escapes included) or a bracket; a lone quote opens a string still arriving.
_TOKEN = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"|[{}\[\]]|"', re.DOTALL)
_STRING_END = re.compile(rb'["\\]')
_BETWEEN = b" \t\r\n,"
_QUOTE, _BACKSLASH, _OPEN = ord('"'), ord("\\"), frozenset(b"{[")


class _ObjectSplitter:
    """Cuts a JSON stream (one array `[{..},{..}]`, or objects back to back) into the text of
    each top-level object as soon as its last byte arrives. Regexes skip whole strings, and a
    string split across chunks is scanned once, so a large inline image stays linear."""

    __slots__ = ("_buffer", "_pos", "_depth", "_base", "_start", "_in_string", "_escaped")

    def __init__(self, base: int) -> None:
        self._buffer = b""
        self._pos = 0
        self._depth = 0
        self._base = base  # nesting depth of the objects to cut out: 1 inside an array
        self._start = -1  # where the object being cut began, -1 between objects
        self._in_string = False  # the chunk ended inside a string ...
        self._escaped = False  # ... right after a backslash

    def feed(self, chunk: bytes) -> tuple[list[bytes], bool]:
        """The objects completed by this chunk, and whether something that is not JSON came."""
        buffer = self._buffer + chunk
        pos, depth, base, start, in_string = self._pos, self._depth, self._base, self._start, self._in_string
        if self._escaped:
            pos, self._escaped = pos + 1, False
        found: list[bytes] = []
        garbage = False
        while True:
            if in_string:
                match = _STRING_END.search(buffer, pos)
                if match is None:
                    pos = len(buffer)
                    break
                pos = match.end()
                if buffer[match.start()] == _BACKSLASH:
                    if pos == len(buffer):
                        self._escaped = True
                        break
                    pos += 1
                else:
                    in_string = False
                continue
            match = _TOKEN.search(buffer, pos)
            end = match.start() if match else len(buffer)
            if depth <= base and buffer[pos:end].strip(_BETWEEN):
                garbage = True  # between objects only commas and blanks belong
                break
            if match is None:
                pos = len(buffer)
                break
            pos = match.end()
            char = buffer[end]
            if char == _QUOTE:
                if depth <= base:
                    garbage = True  # a bare string where an object belongs
                    break
                in_string = pos - end == 1
            elif char in _OPEN:
                if depth == base:
                    start = end
                depth += 1
            else:
                depth -= 1
                if depth == base and start >= 0:
                    found.append(buffer[start:pos])
                    start = -1
                elif depth < 0:
                    garbage = True
                    break
        keep = start if start >= 0 else pos
        self._buffer = buffer[keep:]
        self._pos = pos - keep
        self._start = 0 if start >= 0 else -1
        self._depth, self._in_string = depth, in_string
        return found, garbage


def _usage(meta: dict[str, Any]) -> c.Usage:
    thoughts = meta.get("thoughtsTokenCount") or 0
    return c.Usage(
        input_tokens=(meta.get("promptTokenCount") or 0) + (meta.get("toolUsePromptTokenCount") or 0),
        output_tokens=(meta.get("candidatesTokenCount") or 0) + thoughts,
        cached_tokens=meta.get("cachedContentTokenCount") or 0,
        reasoning_tokens=thoughts,
    )


_DELTAS: Final = {c.Text: c.TextDelta, c.Thinking: c.ThinkingDelta}


def _char_offset(raw: bytes, at: Any) -> int:
    """A UTF-8 byte offset (Google's segments count bytes) as a character offset."""
    return len(raw[: at if isinstance(at, int) and at > 0 else 0].decode("utf-8", "ignore"))


def grounding_in(meta: dict[str, Any], text: str) -> c.Grounding:
    """Google's groundingMetadata as the canonical Grounding: queries, sources (a chunk keeps its
    place even when it is not a web page, as supports count chunks by position) and spans, their
    byte offsets into the answer's text made character offsets; a segment whose text says it
    lies elsewhere is found by its text."""
    grounding = c.Grounding(queries=[q for q in meta.get("webSearchQueries") or () if isinstance(q, str)])
    for chunk in meta.get("groundingChunks") or ():
        found = next((v for v in chunk.values() if isinstance(v, dict)), {}) if isinstance(chunk, dict) else {}
        grounding.sources.append(c.Source(str(found.get("uri") or ""), str(found.get("title") or "")))
    raw = text.encode()
    for support in meta.get("groundingSupports") or ():
        segment = support.get("segment") if isinstance(support, dict) else None
        if not isinstance(segment, dict):
            continue
        start, end = _char_offset(raw, segment.get("startIndex")), _char_offset(raw, segment.get("endIndex"))
        said = segment.get("text") if isinstance(segment.get("text"), str) else ""
        if said and text[start:end] != said and (at := text.find(said)) >= 0:
            start, end = at, at + len(said)
        indexes = [i for i in support.get("groundingChunkIndices") or () if isinstance(i, int)]
        if end > start:
            grounding.citations.append(c.Citation(start, end, said or text[start:end], indexes))
    return grounding


def grounding_out(grounding: c.Grounding, text: str) -> dict[str, Any]:
    """The canonical Grounding as Google's groundingMetadata (UTF-8 byte offsets)."""

    def at(offset: int) -> int:
        return len(text[:offset].encode())

    supports = []
    for citation in grounding.citations:
        segment: dict[str, Any] = {"endIndex": at(citation.end), "text": citation.text}
        if citation.start:
            segment["startIndex"] = at(citation.start)
        supports.append({"segment": segment, "groundingChunkIndices": citation.sources})
    meta: dict[str, Any] = {"groundingChunks": [{"web": {"uri": s.url, "title": s.title}} for s in grounding.sources]}
    if supports:
        meta["groundingSupports"] = supports
    if grounding.queries:
        meta["webSearchQueries"] = grounding.queries
    return meta


class GeminiStreamDecoder:
    """Gemini answers (SSE `data:` events, a streamed JSON array, or whole bodies via `add`)
    -> canonical events. With `unwrap`, each answer may sit in v1internal's `{"response": ...}`.
    Consecutive text parts extend one block; a thought part, a function call or media starts a
    new one. Never raises: what is not Gemini becomes a StreamError."""

    __slots__ = (
        "_unwrap",
        "_sse",
        "_objects",
        "_head",
        "_index",
        "_open",
        "_signed",
        "_usage",
        "_reason",
        "_tool_calls",
        "_content",
        "_done",
        "_grounding",
        "_text",
        "response_id",
        "model",
    )

    def __init__(self, *, unwrap: bool = False) -> None:
        self._unwrap = unwrap
        self._sse: SSEParser | None = None
        self._objects: _ObjectSplitter | None = None
        self._head = b""  # leading bytes while the framing is still unknown
        self._index = -1
        self._open: type | None = None  # c.Text or c.Thinking while such a block is open
        self._signed = False  # the open block has its signature already
        self._usage = c.Usage()
        self._reason: c.FinishReason | None = None
        self._tool_calls = False
        self._content = False
        self._done = False
        self._grounding: dict[str, Any] | None = None  # the last groundingMetadata: each repeats the whole
        self._text: list[str] = []  # the answer's text, which grounding offsets count in
        self.response_id: str | None = None
        self.model: str | None = None

    # framing

    def feed(self, chunk: bytes) -> list[c.Event]:
        if self._done or not chunk:
            return []
        out: list[c.Event] = []
        if self._sse is None and self._objects is None:
            chunk = self._head + chunk
            first = chunk.lstrip()[:1]
            if not first:
                self._head = chunk
                return out
            self._head = b""
            if first in b"[{":
                self._objects = _ObjectSplitter(1 if first == b"[" else 0)
            else:
                self._sse = SSEParser()
        if self._sse is not None:
            for event in self._sse.feed(chunk):
                self._data(event.data, out)
                if self._done:
                    break
            return out
        assert self._objects is not None
        found, garbage = self._objects.feed(chunk)
        for raw in found:
            self._data(raw, out)
            if self._done:
                return out
        if garbage:
            self._fail("upstream sent a stream that is not JSON", out)
        return out

    def close(self) -> list[c.Event]:
        if self._done:
            return []
        out: list[c.Event] = []
        if self._sse is not None:
            for event in self._sse.close():
                self._data(event.data, out)
        if self._done:
            return out
        self._done = True
        if self._grounding is not None and self._content:
            out.append(c.Grounded(grounding_in(self._grounding, "".join(self._text))))
        self._close_block(out)
        if self._reason is None and not self._content:
            out.append(c.StreamError("upstream ended the stream without an answer"))
            return out
        reason = self._reason or "stop"
        out.append(c.Finish("tool_calls" if reason == "stop" and self._tool_calls else reason, self._usage))
        return out

    def _data(self, data: str | bytes, out: list[c.Event]) -> None:
        if isinstance(data, str):
            data = data.strip()
            if not data or data == "[DONE]":
                return
        try:
            obj = json.loads(data)
        except ValueError:
            text = data if isinstance(data, str) else data.decode("utf-8", "replace")
            self._fail(f"upstream sent data that is not JSON: {text[:200]!r}", out)
            return
        self.add(obj, out)

    def _fail(self, message: str, out: list[c.Event]) -> None:
        out.append(c.StreamError(message))
        self._done = True

    # answers

    def add(self, obj: Any, out: list[c.Event]) -> None:
        """One parsed GenerateContentResponse (or a list of them) into `out`."""
        if self._done:
            return
        try:
            self._add(obj, out)
        except (AttributeError, TypeError, KeyError, ValueError) as exc:  # JSON of the wrong shape
            self._fail(f"upstream sent an answer that is not Gemini's: {exc!r}", out)

    def _add(self, obj: Any, out: list[c.Event]) -> None:
        if isinstance(obj, list):
            for item in obj:
                self._add(item, out)
                if self._done:
                    return
            return
        if not isinstance(obj, dict):
            self._fail("upstream sent a JSON value that is not an object", out)
            return
        if self._unwrap and isinstance(inner := obj.get("response"), dict):
            obj = inner
        if (error := obj.get("error")) is not None:
            self._upstream_error(error, out)
            return
        if (meta := obj.get("usageMetadata")) is not None:
            self._usage = _usage(meta)  # each event repeats the running totals: the last wins
        self.response_id = obj.get("responseId") or self.response_id
        self.model = obj.get("modelVersion") or self.model
        candidates = obj.get("candidates")
        if candidates:
            candidate = candidates[0]  # candidateCount > 1 is not carried: the first one answers
            content = candidate.get("content")
            for part in content.get("parts") or () if isinstance(content, dict) else ():
                self._part(part, out)
            if reason := candidate.get("finishReason"):
                self._reason = _FINISH_IN.get(reason, "stop")
            if isinstance(meta := candidate.get("groundingMetadata"), dict):
                self._grounding = meta
        elif (feedback := obj.get("promptFeedback")) and feedback.get("blockReason"):
            self._reason = "content_filter"

    def _upstream_error(self, error: Any, out: list[c.Event]) -> None:
        if isinstance(error, dict):
            message, code = error.get("message") or error.get("status") or "upstream error", error.get("code")
        else:
            message, code = str(error), None
        status = code if isinstance(code, int) and 400 <= code <= 599 else 502
        out.append(c.StreamError(str(message), status, _ERROR_KINDS.get(status, "upstream_error")))
        self._done = True

    def _part(self, part: Any, out: list[c.Event]) -> None:
        if not isinstance(part, dict):
            return
        signature = part.get("thoughtSignature")
        if (call := part.get("functionCall")) is not None:
            self._close_block(out)
            self._index = index = self._index + 1
            tool_call = c.ToolCall(call.get("id") or _new_call_id(), call.get("name") or "", {}, signature)
            out.append(c.BlockStart(index, tool_call))
            out.append(c.ToolArgsDelta(index, _dumps(call.get("args") or {})))
            out.append(c.BlockStop(index))
            self._tool_calls = self._content = True
            return
        text = part.get("text")
        if text is not None:
            kind = c.Thinking if part.get("thought") else c.Text
            if not text and not signature:
                return
            if self._open is not kind or (signature and self._signed):
                self._open_block(kind, out)
            if text:
                out.append(_DELTAS[kind](self._index, text))
                if kind is c.Text:
                    self._text.append(text)
        elif (media := part.get("inlineData") or part.get("fileData")) is not None:
            self._close_block(out)
            self._index += 1
            mime = media.get("mimeType") or "application/octet-stream"
            image = c.Image(mime, data=media["data"]) if "data" in media else c.Image(mime, url=media.get("fileUri"))
            out.append(c.BlockStart(self._index, image))
            out.append(c.BlockStop(self._index))
            self._content = True
            return
        elif not signature:
            return  # executableCode and other parts no canonical block can hold
        elif self._open is None or self._signed:
            self._open_block(c.Text, out)  # a signature on a part of its own
        if signature:
            out.append(c.SignatureDelta(self._index, signature))
            self._signed = True
        self._content = True

    def _open_block(self, kind: type, out: list[c.Event]) -> None:
        self._close_block(out)
        self._index += 1
        out.append(c.BlockStart(self._index, kind("")))
        self._open, self._signed = kind, False

    def _close_block(self, out: list[c.Event]) -> None:
        if self._open is not None:
            out.append(c.BlockStop(self._index))
            self._open = None


class GeminiDialect:
    """The gateway toward the Gemini API with a key: plain GenerateContentRequest bodies."""

    name = "gemini"
    unwrap = False

    @staticmethod
    def encode_request(request: c.Request, model: str) -> dict[str, Any]:
        body = encode_request(request, model)
        return fit_image_model(body, name_modalities=True) if is_image_model(model) else body

    def decode_response(self, body: Any) -> c.Response:
        if isinstance(body, bytes | str):
            try:
                body = json.loads(body)
            except ValueError as exc:
                raise c.BadUpstreamAnswer(f"upstream answered with something that is not JSON: {exc}") from None
        if not isinstance(body, dict | list):
            raise c.BadUpstreamAnswer("upstream answered with JSON that is not a GenerateContentResponse")
        decoder = self.stream_decoder()
        events: list[c.Event] = []
        decoder.add(body, events)
        events += decoder.close()
        if isinstance(error := events[-1], c.StreamError):
            raise c.BadUpstreamAnswer(error.message)
        assembler = Assembler(decoder.response_id or "resp_" + os.urandom(12).hex(), decoder.model or "")
        assembler.extend(events)
        return assembler.response

    def stream_decoder(self) -> GeminiStreamDecoder:
        return GeminiStreamDecoder(unwrap=self.unwrap)


class AntigravityDialect(GeminiDialect):
    """Google Cloud Code (v1internal): the Gemini body inside an envelope (which the pool adds,
    as it knows the account's project), answers wrapped in `{"response": ...}` (bodies already
    unwrapped are taken as they are)."""

    name = "antigravity"
    unwrap = True


caller = GeminiCaller()
upstream = GeminiDialect()
antigravity = AntigravityDialect()
