"""OpenAI's Responses API (`POST /v1/responses`) as a caller protocol: what Codex CLI speaks.

A Responses conversation is a flat list of items (messages, reasoning, function calls and their
outputs); canonical messages group parts by role, so consecutive items of one role share a
message. Reasoning items carry their signature in `encrypted_content`, which is opaque to the
client and goes back to whichever upstream made it. The `web_search` tools become the canonical
search (which an upstream runs as its own search tool); what it found comes back as
`web_search_call` items and `url_citation` annotations. Other built-in tools (file_search, ...)
have no upstream counterpart behind this gateway and are dropped rather than refused. An image
the model drew is an `image_generation_call` item.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from . import canonical as c
from .openai_chat import _EFFORTS, _arguments, _image, encode_model_list, error_body, require_model, require_object
from .sse import encode as sse_encode

__all__ = [
    "OpenAIResponsesCaller",
    "StreamEncoder",
    "caller",
    "decode_request",
    "encode_model_list",
    "encode_response",
    "error_body",
    "stream_encoder",
    "to_history",
]

# One encoder instance: json.dumps with options builds a new one per call, and this runs per
# stream event. ASCII output is safe to .encode() whatever the text holds.
_dumps = json.JSONEncoder(separators=(",", ":")).encode

# Codex's own rule for flattening a namespaced tool name (codex-rs ToolName::canonical_flat_name).
_NAMESPACE_DELIMITER: Final = "__"

# Anthropic's redacted thinking is opaque data, not a signature: marked so it goes back as such.
_REDACTED: Final = "redacted_thinking:"


# --- decoding ----------------------------------------------------------------------------------


class _Tools(list[c.Tool]):
    """Decoded tools that also remember which flat names came from a `namespace` tool.

    c.Request has no field for it, and Codex routes a call by (namespace, name): a call to a
    flattened name must go back split, so the request's tool list carries the table."""

    def __init__(self) -> None:
        super().__init__()
        self.namespaces: dict[str, tuple[str, str]] = {}


class _Conversation:
    """Canonical messages and system prompt being built from items: consecutive parts of one
    role share a message, and call names are kept so that a function_call_output can name its
    function."""

    def __init__(self, system: list[str], history: list[c.Message] | None) -> None:
        self.system = system
        # Copies: the gateway keeps `history` for later requests and merging must not touch it.
        self.messages = [c.Message(m.role, list(m.parts)) for m in history or ()]
        self.calls = {p.id: p.name for m in self.messages for p in m.parts if isinstance(p, c.ToolCall)}

    def add(self, role: c.Role, *parts: c.Part) -> None:
        if self.messages and self.messages[-1].role == role:
            self.messages[-1].parts.extend(parts)
        else:
            self.messages.append(c.Message(role, list(parts)))


def decode_request(body: Any, *, model: str | None = None, history: list[c.Message] | None = None) -> c.Request:
    """Decode a create-response body. `history` is the conversation kept for the body's
    `previous_response_id` (looked up by the gateway); it is prepended to `input`."""
    body = require_object(body)
    model = require_model(body, model)
    instructions = _scalar(body, "instructions", str, "a string")
    conversation = _Conversation([instructions] if instructions else [], history)
    items = body.get("input")
    if isinstance(items, str):
        conversation.add("user", c.Text(items))
    elif isinstance(items, list):
        for i, item in enumerate(items):
            _decode_item(item, f"input[{i}]", conversation)
    elif items is not None or not history:
        raise c.BadRequest("input must be a string or a list of items", "input")
    return c.Request(
        model=model,
        messages=conversation.messages,
        system=conversation.system,
        search=_decode_search(body.get("tools")),
        tools=_decode_tools(body.get("tools")),
        tool_choice=_decode_tool_choice(body.get("tool_choice")),
        stream=bool(_scalar(body, "stream", bool, "a boolean")),
        include_usage=True,  # response.completed always carries usage
        max_tokens=_scalar(body, "max_output_tokens", int, "an integer"),
        temperature=_scalar(body, "temperature", int | float, "a number"),
        top_p=_scalar(body, "top_p", int | float, "a number"),
        response_format=_decode_text_format(body.get("text")),
        thinking=_decode_reasoning(body.get("reasoning")),
    )


def _scalar(body: dict[str, Any], key: str, kinds: Any, what: str) -> Any:
    """An optional scalar of the given type; bools are not numbers here."""
    value = body.get(key)
    if value is not None and (not isinstance(value, kinds) or (isinstance(value, bool) and kinds is not bool)):
        raise c.BadRequest(f"{key} must be {what}", key)
    return value


def _string(item: dict[str, Any], key: str, path: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise c.BadRequest(f"{path}.{key} must be a non-empty string", f"{path}.{key}")
    return value


def _flat_name(namespace: str, tool: str) -> str:
    return f"{namespace.rstrip('_')}{_NAMESPACE_DELIMITER}{tool.lstrip('_')}"


def _decode_item(item: Any, path: str, conversation: _Conversation) -> None:
    if not isinstance(item, dict):
        raise c.BadRequest(f"{path} must be an object", path)
    kind = item.get("type", "message" if "role" in item else None)
    decode = _ITEM_DECODERS.get(kind) if isinstance(kind, str | None) else None
    if decode is None:
        if kind == "item_reference":
            raise c.BadRequest("item_reference is not supported: send the item itself", f"{path}.type")
        raise c.BadRequest(f"input items of type {kind!r} are not supported", f"{path}.type")
    decode(item, path, conversation)


def _content(content: Any, path: str) -> list[c.Text | c.Image]:
    if isinstance(content, str):
        return [c.Text(content)]
    if not isinstance(content, list):
        raise c.BadRequest(f"{path} must be a string or a list of parts", path)
    return [_content_part(part, f"{path}[{i}]") for i, part in enumerate(content)]


# Text-bearing content part types and the key that holds their text.
_TEXT_KEYS: Final = {"input_text": "text", "output_text": "text", "refusal": "refusal"}


def _content_part(part: Any, path: str) -> c.Text | c.Image:
    kind = part.get("type") if isinstance(part, dict) else None
    if isinstance(kind, str) and kind in _TEXT_KEYS:
        key = _TEXT_KEYS[kind]
        if not isinstance(text := part.get(key), str):
            raise c.BadRequest(f"{path}.{key} must be a string", f"{path}.{key}")
        return c.Text(text)
    if kind == "input_image":
        if part.get("file_id") and not part.get("image_url"):
            raise c.BadRequest("images by file_id are not supported: send image_url", f"{path}.file_id")
        return _image(part.get("image_url"), f"{path}.image_url")
    raise c.BadRequest(f"content parts of type {kind!r} are not supported", f"{path}.type")


def _message_item(item: dict[str, Any], path: str, conversation: _Conversation) -> None:
    role = item.get("role")
    parts = _content(item.get("content"), f"{path}.content")
    if role in ("system", "developer"):
        for i, part in enumerate(parts):
            if not isinstance(part, c.Text):
                raise c.BadRequest("system and developer messages take text only", f"{path}.content[{i}]")
            conversation.system.append(part.text)
    elif role in ("user", "assistant"):
        conversation.add(role, *parts)
    else:
        raise c.BadRequest(f"unknown role {role!r}", f"{path}.role")


def _function_call_item(item: dict[str, Any], path: str, conversation: _Conversation) -> None:
    call_id = _string(item, "call_id", path)
    tool = _string(item, "name", path)
    if isinstance(namespace := item.get("namespace"), str) and namespace:
        tool = _flat_name(namespace, tool)
    conversation.calls[call_id] = tool
    conversation.add("assistant", c.ToolCall(call_id, tool, _arguments(item.get("arguments"), f"{path}.arguments")))


def _function_call_output_item(item: dict[str, Any], path: str, conversation: _Conversation) -> None:
    call_id = _string(item, "call_id", path)
    tool = conversation.calls.get(call_id)
    if tool is None:
        raise c.BadRequest(f"no function_call with call_id {call_id!r} comes before this output", f"{path}.call_id")
    conversation.add("user", c.ToolResult(call_id, tool, _content(item.get("output"), f"{path}.output")))


def _reasoning_item(item: dict[str, Any], path: str, conversation: _Conversation) -> None:
    texts: list[str] = []
    for key, part_type in (("summary", "summary_text"), ("content", "reasoning_text")):
        parts = item.get(key) or []
        if not isinstance(parts, list) or not all(
            isinstance(p, dict) and p.get("type") == part_type and isinstance(p.get("text"), str) for p in parts
        ):
            raise c.BadRequest(f"{path}.{key} must be a list of {part_type} parts", f"{path}.{key}")
        # The summary is what a client sees; raw reasoning text stands in only without one.
        texts = texts or [p["text"] for p in parts]
    encrypted = item.get("encrypted_content") or None
    if encrypted is not None and not isinstance(encrypted, str):
        raise c.BadRequest(f"{path}.encrypted_content must be a string", f"{path}.encrypted_content")
    if encrypted is not None and encrypted.startswith(_REDACTED):
        conversation.add("assistant", c.Thinking("", encrypted.removeprefix(_REDACTED), redacted=True))
    elif texts or encrypted:
        conversation.add("assistant", c.Thinking("\n\n".join(texts), encrypted))


_ITEM_DECODERS: Final[dict[Any, Callable[[dict[str, Any], str, _Conversation], None]]] = {
    "message": _message_item,
    "function_call": _function_call_item,
    "function_call_output": _function_call_output_item,
    "reasoning": _reasoning_item,
}


def _function_tool(tool: dict[str, Any], path: str) -> c.Tool:
    parameters = tool.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise c.BadRequest(f"{path}.parameters must be a JSON schema object", f"{path}.parameters")
    description = tool.get("description")
    if description is not None and not isinstance(description, str):
        raise c.BadRequest(f"{path}.description must be a string", f"{path}.description")
    return c.Tool(name=_string(tool, "name", path), description=description or "", parameters=parameters)


def _decode_tools(raw: Any) -> _Tools:
    tools = _Tools()
    if raw is None:
        return tools
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise c.BadRequest("tools must be a list of objects", "tools")
    for i, tool in enumerate(raw):
        if tool.get("type") == "function":
            tools.append(_function_tool(tool, f"tools[{i}]"))
        elif tool.get("type") == "namespace":
            namespace = _string(tool, "name", f"tools[{i}]")
            members = tool.get("tools") or []
            if not isinstance(members, list):
                raise c.BadRequest(f"tools[{i}].tools must be a list", f"tools[{i}].tools")
            for j, member in enumerate(members):
                if isinstance(member, dict) and member.get("type") == "function":
                    decoded = _function_tool(member, f"tools[{i}].tools[{j}]")
                    flat = _flat_name(namespace, decoded.name)
                    tools.namespaces[flat] = (namespace, decoded.name)
                    decoded.name = flat
                    tools.append(decoded)
        # Anything else is a built-in tool (web_search, file_search, custom, ...): dropped.
    return tools


_SEARCH_TOOLS: Final = ("web_search", "web_search_preview", "web_search_2025_08_26", "web_search_preview_2025_03_11")


def _decode_search(raw: Any) -> c.WebSearch | None:
    for tool in raw if isinstance(raw, list) else ():
        if isinstance(tool, dict) and tool.get("type") in _SEARCH_TOOLS:
            filters = tool.get("filters") if isinstance(tool.get("filters"), dict) else {}
            domains = filters.get("allowed_domains") or ()
            return c.WebSearch(allowed_domains=[d for d in domains if isinstance(d, str)])
    return None


def _decode_tool_choice(raw: Any) -> c.ToolChoice | None:
    if raw is None:
        return None
    if raw in ("auto", "none", "required"):
        return c.ToolChoice(raw)
    if not isinstance(raw, dict):
        raise c.BadRequest("tool_choice must be auto, none, required or an object", "tool_choice")
    if raw.get("type") == "function":
        return c.ToolChoice("tool", _string(raw, "name", "tool_choice"))
    if raw.get("type") == "allowed_tools" and raw.get("mode") in ("auto", "required"):
        return c.ToolChoice(raw["mode"])
    return None  # a built-in tool, which was dropped with the tools


def _decode_reasoning(raw: Any) -> c.ThinkingConfig | None:
    """`effort` as chat's reasoning_effort; a `summary` setting asks for thoughts to be shown."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise c.BadRequest("reasoning must be an object", "reasoning")
    effort = raw.get("effort")
    shown = (raw.get("summary") or raw.get("generate_summary")) is not None
    if effort is None:
        return c.ThinkingConfig(include_thoughts=True) if shown else None
    setting = _EFFORTS.get(effort) if isinstance(effort, str) else None
    if setting is None:
        raise c.BadRequest(f"reasoning.effort must be one of {', '.join(_EFFORTS)}", "reasoning.effort")
    enabled, level = setting
    return c.ThinkingConfig(enabled=enabled, effort=level, include_thoughts=enabled and shown)


def _decode_text_format(raw: Any) -> c.ResponseFormat | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise c.BadRequest("text must be an object", "text")
    fmt = raw.get("format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return c.ResponseFormat("json_object")
    if kind == "json_schema":
        schema = fmt.get("schema")
        if not isinstance(schema, dict):
            raise c.BadRequest("text.format.schema must be a JSON schema object", "text.format.schema")
        return c.ResponseFormat("json_schema", schema=schema, name=fmt.get("name"))
    raise c.BadRequest(f"unknown text format {kind!r}", "text.format.type")


def to_history(request: c.Request, response: c.Response) -> list[c.Message]:
    """The conversation to keep under this response's id for a later `previous_response_id`.

    System prompts stay out: on OpenAI `instructions` are per request and are not carried over
    by `previous_response_id`, so the next request brings its own."""
    messages = [c.Message(m.role, list(m.parts)) for m in request.messages]
    if response.parts:
        messages.append(c.Message("assistant", list(response.parts)))
    return messages


# --- encoding ----------------------------------------------------------------------------------


def _response_id(raw: str) -> str:
    """Responses ids start with resp_; the gateway should mint them so, this only makes sure."""
    return raw if raw.startswith("resp_") else f"resp_{raw}"


def _item_id(prefix: str, response_id: str, output_index: int) -> str:
    """Item ids derived from the response id: unique, and no randomness in pure code."""
    return f"{prefix}_{response_id.removeprefix('resp_')}_{output_index}"


def _reasoning(item_id: str, thinking: c.Thinking, show_thoughts: bool) -> dict[str, Any]:
    shown = show_thoughts and thinking.text and not thinking.redacted
    summary = [{"type": "summary_text", "text": thinking.text}] if shown else []
    item: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": summary}
    if thinking.signature:
        item["encrypted_content"] = (_REDACTED if thinking.redacted else "") + thinking.signature
    return item


def _output_text(text: str, annotations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": annotations or []}


def _message(item_id: str, text: str | None, status: str, annotations: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    content = [] if text is None else [_output_text(text, annotations)]
    return {"id": item_id, "type": "message", "role": "assistant", "status": status, "content": content}


def _annotations(grounding: c.Grounding | None, base: int, length: int) -> list[dict[str, Any]]:
    """url_citation annotations for the text at `base` (of `length` characters) in the answer."""
    out = []
    for citation in grounding.citations if grounding else ():
        start, end = max(citation.start - base, 0), min(citation.end - base, length)
        if start >= end:
            continue
        for i in citation.sources:
            if 0 <= i < len(grounding.sources):  # type: ignore[union-attr]
                source = grounding.sources[i]  # type: ignore[union-attr]
                out.append({"type": "url_citation", "start_index": start, "end_index": end,
                            "title": source.title or source.url, "url": source.url})
    return out


def _searches(grounding: c.Grounding, response_id: str, start: int, status: str = "completed") -> list[dict[str, Any]]:
    """One web_search_call item per query; the sources go with the first (Google does not say
    which query found which)."""
    items = []
    for i, query in enumerate(grounding.queries or [""]):
        action: dict[str, Any] = {"type": "search", "query": query}
        if i == 0 and status == "completed":
            action["sources"] = [{"type": "url", "url": s.url} for s in grounding.sources]
        items.append({"id": _item_id("ws", response_id, start + i), "type": "web_search_call", "status": status,
                      "action": action})
    return items


def _drawn(item_id: str, image: c.Image, status: str = "completed") -> dict[str, Any]:
    item: dict[str, Any] = {"id": item_id, "type": "image_generation_call", "status": status}
    if status == "completed":
        item["result"] = image.data
        item["output_format"] = image.mime_type.removeprefix("image/")
    return item


def _namespaces(request: c.Request) -> dict[str, tuple[str, str]]:
    """flat name -> (namespace, name) for the tools that came from a namespace tool."""
    return request.tools.namespaces if isinstance(request.tools, _Tools) else {}


def _function_call(
    item_id: str, call: c.ToolCall, arguments: str, status: str, namespaces: dict[str, tuple[str, str]]
) -> dict[str, Any]:
    item = {"id": item_id, "type": "function_call", "status": status, "call_id": call.id, "name": call.name}
    if (split := namespaces.get(call.name)) is not None:
        item["namespace"], item["name"] = split
    item["arguments"] = arguments
    return item


def _show_thoughts(request: c.Request) -> bool:
    """OpenAI returns reasoning summaries only to a caller that asked for them."""
    return request.thinking is not None and request.thinking.include_thoughts


def _usage(usage: c.Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _echo(request: c.Request) -> dict[str, Any]:
    """The request settings a response object repeats (the SDK's Response model requires
    tools, tool_choice and parallel_tool_calls). Computed once per stream."""
    namespaces = _namespaces(request)
    thinking = request.thinking
    fmt = request.response_format or c.ResponseFormat()
    text_format: dict[str, Any] = {"type": fmt.type}
    if fmt.type == "json_schema":
        text_format |= {"name": fmt.name or "response", "schema": fmt.schema or {}}
    return {
        "instructions": None,
        "max_output_tokens": request.max_tokens,
        "metadata": {},
        "parallel_tool_calls": True,
        "reasoning": None if thinking is None else _echo_reasoning(thinking),
        "temperature": request.temperature,
        "text": {"format": text_format},
        "tool_choice": _echo_tool_choice(request.tool_choice, namespaces),
        "tools": [
            {
                "type": "function",
                "name": namespaces.get(t.name, (None, t.name))[1],
                "description": t.description,
                "parameters": t.parameters,
                "strict": False,
            }
            for t in request.tools
        ],
        "top_p": request.top_p,
        "truncation": "disabled",
    }


def _echo_reasoning(thinking: c.ThinkingConfig) -> dict[str, Any]:
    return {
        "effort": thinking.effort if thinking.enabled else "none",
        "summary": "auto" if thinking.include_thoughts else None,
    }


def _echo_tool_choice(choice: c.ToolChoice | None, namespaces: dict[str, tuple[str, str]]) -> Any:
    if choice is None:
        return "auto"
    if choice.mode == "tool" and choice.name:
        return {"type": "function", "name": namespaces.get(choice.name, (None, choice.name))[1]}
    return "auto" if choice.mode == "tool" else choice.mode


# How an answer ended, as the response shows it: (status, incomplete_details, error).
_Ending = tuple[str, dict[str, Any] | None, dict[str, Any] | None]
_COMPLETED: Final[_Ending] = ("completed", None, None)
_IN_PROGRESS: Final[_Ending] = ("in_progress", None, None)
_ENDINGS: Final[dict[str, _Ending]] = {
    "length": ("incomplete", {"reason": "max_output_tokens"}, None),
    "content_filter": ("incomplete", {"reason": "content_filter"}, None),
    "error": ("failed", None, {"code": "server_error", "message": "the upstream stopped with an error"}),
}


def _response(
    echo: dict[str, Any],
    response_id: str,
    model: str,
    created: int,
    ending: _Ending,
    output: list[dict[str, Any]],
    usage: c.Usage | None,
) -> dict[str, Any]:
    status, incomplete, error = ending
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "error": error,
        "incomplete_details": incomplete,
        "model": model,
        "output": output,
        "usage": None if usage is None else _usage(usage),
        **echo,
    }


def encode_response(response: c.Response, request: c.Request) -> dict[str, Any]:
    """A whole `response` object. Images the upstream returned have no Responses output item."""
    response_id = _response_id(response.id)
    show_thoughts = _show_thoughts(request)
    namespaces = _namespaces(request)
    grounding = response.grounding
    output: list[dict[str, Any]] = []
    offset = 0  # of the text part in the answer's text, which citations count in
    for part in response.parts:
        index = len(output)
        match part:
            case c.Thinking():
                output.append(_reasoning(_item_id("rs", response_id, index), part, show_thoughts))
            case c.Text(text=text):
                if grounding is not None and not any(item["type"] == "web_search_call" for item in output):
                    output += _searches(grounding, response_id, index)  # the search before its answer
                    index = len(output)
                annotations = _annotations(grounding, offset, len(text))
                output.append(_message(_item_id("msg", response_id, index), text, "completed", annotations))
                offset += len(text)
            case c.Image(data=data) if data:
                output.append(_drawn(_item_id("ig", response_id, index), part))
            case c.ToolCall(arguments=arguments):
                item_id = _item_id("fc", response_id, index)
                output.append(_function_call(item_id, part, _dumps(arguments), "completed", namespaces))
    if grounding is not None and not any(item["type"] == "web_search_call" for item in output):
        output += _searches(grounding, response_id, len(output))
    ending = _ENDINGS.get(response.finish_reason, _COMPLETED)
    return _response(_echo(request), response_id, response.model, response.created, ending, output, response.usage)


@dataclass(slots=True)
class _OpenItem:
    """An output item whose canonical block has started and not yet stopped."""

    part: c.Thinking | c.Text | c.ToolCall  # as the block started
    output_index: int
    item_id: str
    chunks: list[str] = field(default_factory=list)  # summary text, text or argument JSON
    signature: str = ""
    summary_open: bool = False  # reasoning: summary part announced
    base: int = 0  # text: where it starts in the answer's text, which citations count in
    annotations: list[dict[str, Any]] = field(default_factory=list)

    def ref(self, **fields: Any) -> dict[str, Any]:
        """The fields every event about this item repeats, then the event's own."""
        return {"item_id": self.item_id, "output_index": self.output_index, **fields}


class StreamEncoder:
    """Canonical events -> Responses SSE: response.created and response.in_progress first, then
    per canonical block one output item with its own added/delta/done events, then one of
    response.completed / response.incomplete / response.failed carrying the whole response."""

    __slots__ = (
        "_id",
        "_model",
        "_created",
        "_echo",
        "_namespaces",
        "_show_thoughts",
        "_seq",
        "_open",
        "_output",
        "_done",
        "_text",
        "_searching",
        "_ended",
    )

    def __init__(self, request: c.Request, response_id: str, model: str, created: int) -> None:
        self._id = _response_id(response_id)
        self._model = model
        self._created = created
        self._echo = _echo(request)
        self._namespaces = _namespaces(request)
        self._show_thoughts = _show_thoughts(request)
        self._seq = 0
        self._open: dict[int, _OpenItem] = {}  # by canonical block index
        self._output: list[dict[str, Any] | None] = []  # by output_index; None while open
        self._done = False
        self._text = 0  # characters of answer text so far
        # A search's message is done only when its sources are known (Google and Anthropic tell
        # them as the answer ends). With function tools Google runs no search.
        self._searching = request.search is not None and not request.tools
        self._ended: set[int] = set()  # text blocks that ended, waiting for their sources

    def encode(self, events: list[c.Event]) -> bytes:
        if self._done:
            return b""
        out: list[bytes] = []
        if self._seq == 0:
            for kind in ("response.created", "response.in_progress"):
                self._emit(out, {"type": kind, "response": self._snapshot(_IN_PROGRESS, None)})
        for event in events:
            self._handle(out, event)
            if self._done:
                break
        return b"".join(out)

    def _emit(self, out: list[bytes], payload: dict[str, Any]) -> None:
        payload["sequence_number"] = self._seq
        self._seq += 1
        out.append(sse_encode(_dumps(payload), payload["type"]))

    def _snapshot(self, ending: _Ending, usage: c.Usage | None) -> dict[str, Any]:
        output = [item for item in self._output if item is not None]
        return _response(self._echo, self._id, self._model, self._created, ending, output, usage)

    def _handle(self, out: list[bytes], event: c.Event) -> None:
        match event:
            case c.BlockStart(index=index, part=c.Thinking() | c.Text() | c.ToolCall() as part):
                self._start(out, index, part)
            case c.TextDelta(index=index, text=text) | c.ThinkingDelta(index=index, text=text) | c.ToolArgsDelta(
                index=index, json=text
            ):
                if text and (item := self._open.get(index)) is not None:
                    self._delta(out, item, text)
            case c.SignatureDelta(index=index, signature=signature):
                if (item := self._open.get(index)) is not None:
                    item.signature += signature
            case c.BlockStart(part=c.Image(data=data) as image) if data:
                self._image(out, image)
            case c.Grounded(grounding=grounding):
                self._grounded(out, grounding)
            case c.BlockStop(index=index):
                if self._searching and isinstance(getattr(self._open.get(index), "part", None), c.Text):
                    self._ended.add(index)  # its sources may come after its last word: done at the end
                elif (item := self._open.pop(index, None)) is not None:
                    self._stop(out, item)
            case c.Finish(reason=reason, usage=usage):
                for item in sorted(self._open.values(), key=lambda item: item.output_index):
                    self._stop(out, item)
                self._open.clear()
                ending = _ENDINGS.get(reason, _COMPLETED)
                self._emit(out, {"type": f"response.{ending[0]}", "response": self._snapshot(ending, usage)})
                self._done = True
            case c.StreamError(message=message, status=status):
                for index in sorted(self._ended, key=lambda i: self._open[i].output_index):
                    self._stop(out, self._open.pop(index))  # finished before the failure
                code = "rate_limit_exceeded" if status == 429 else "server_error"
                ending = ("failed", None, {"code": code, "message": message})
                self._emit(out, {"type": "response.failed", "response": self._snapshot(ending, None)})
                self._done = True
            # An image block has no Responses output item: its start, and so its stop, are skipped.

    def _start(self, out: list[bytes], index: int, part: c.Thinking | c.Text | c.ToolCall) -> None:
        output_index = len(self._output)
        match part:
            case c.Thinking():
                item = _OpenItem(part, output_index, _item_id("rs", self._id, output_index))
                added = _reasoning(item.item_id, c.Thinking(""), False)
            case c.Text():
                item = _OpenItem(part, output_index, _item_id("msg", self._id, output_index))
                added = _message(item.item_id, None, "in_progress")
            case c.ToolCall():
                item = _OpenItem(part, output_index, _item_id("fc", self._id, output_index))
                added = _function_call(item.item_id, part, "", "in_progress", self._namespaces)
        item.signature = part.signature or ""
        if isinstance(part, c.Text):
            item.base = self._text
        self._open[index] = item
        self._output.append(None)
        self._emit(out, {"type": "response.output_item.added", "output_index": output_index, "item": added})
        if isinstance(part, c.Text):
            content = item.ref(content_index=0, part=_output_text(""))
            self._emit(out, {"type": "response.content_part.added", **content})

    def _delta(self, out: list[bytes], item: _OpenItem, text: str) -> None:
        match item.part:
            case c.Text():
                item.chunks.append(text)
                self._text += len(text)
                delta = item.ref(content_index=0, delta=text, logprobs=[])
                self._emit(out, {"type": "response.output_text.delta", **delta})
            case c.ToolCall():
                item.chunks.append(text)
                self._emit(out, {"type": "response.function_call_arguments.delta", **item.ref(delta=text)})
            case _ if self._show_thoughts:
                if not item.summary_open:
                    item.summary_open = True
                    added = item.ref(summary_index=0, part={"type": "summary_text", "text": ""})
                    self._emit(out, {"type": "response.reasoning_summary_part.added", **added})
                item.chunks.append(text)
                delta = item.ref(summary_index=0, delta=text)
                self._emit(out, {"type": "response.reasoning_summary_text.delta", **delta})

    def _stop(self, out: list[bytes], item: _OpenItem) -> None:
        text = "".join(item.chunks)
        match item.part:
            case c.Text():
                text_done = item.ref(content_index=0, text=text, logprobs=[])
                self._emit(out, {"type": "response.output_text.done", **text_done})
                part_done = item.ref(content_index=0, part=_output_text(text, item.annotations))
                self._emit(out, {"type": "response.content_part.done", **part_done})
                done = _message(item.item_id, text, "completed", item.annotations)
            case c.ToolCall() as call:
                if not text:  # a call without arguments still sends a JSON object
                    text = "{}"
                    self._emit(out, {"type": "response.function_call_arguments.delta", **item.ref(delta=text)})
                self._emit(out, {"type": "response.function_call_arguments.done", **item.ref(arguments=text)})
                done = _function_call(item.item_id, call, text, "completed", self._namespaces)
            case c.Thinking(redacted=redacted):
                if item.summary_open:
                    text_done = item.ref(summary_index=0, text=text)
                    part_done = item.ref(summary_index=0, part={"type": "summary_text", "text": text})
                    self._emit(out, {"type": "response.reasoning_summary_text.done", **text_done})
                    self._emit(out, {"type": "response.reasoning_summary_part.done", **part_done})
                thinking = c.Thinking(text, item.signature or None, redacted)
                done = _reasoning(item.item_id, thinking, self._show_thoughts)
        self._output[item.output_index] = done
        self._emit(out, {"type": "response.output_item.done", "output_index": item.output_index, "item": done})


    def _whole_item(self, out: list[bytes], added: dict[str, Any], done: dict[str, Any], progress: tuple[str, ...]) -> None:
        """An item known whole at once: added, its progress events, done."""
        output_index = len(self._output)
        self._output.append(done)
        self._emit(out, {"type": "response.output_item.added", "output_index": output_index, "item": added})
        for kind in progress:
            self._emit(out, {"type": kind, "item_id": done["id"], "output_index": output_index})
        self._emit(out, {"type": "response.output_item.done", "output_index": output_index, "item": done})

    def _image(self, out: list[bytes], image: c.Image) -> None:
        item_id = _item_id("ig", self._id, len(self._output))
        progress = ("in_progress", "generating", "completed")
        self._whole_item(out, _drawn(item_id, image, "in_progress"), _drawn(item_id, image),
                         tuple(f"response.image_generation_call.{p}" for p in progress))

    def _grounded(self, out: list[bytes], grounding: c.Grounding) -> None:
        """The open text's citations as annotations, then the search as web_search_call items
        (Google reports what it searched only as the answer ends)."""
        for item in sorted(self._open.values(), key=lambda item: item.output_index):
            if isinstance(item.part, c.Text):
                for annotation in _annotations(grounding, item.base, sum(map(len, item.chunks))):
                    event = item.ref(content_index=0, annotation_index=len(item.annotations), annotation=annotation)
                    self._emit(out, {"type": "response.output_text.annotation.added", **event})
                    item.annotations.append(annotation)
        progress = tuple(f"response.web_search_call.{p}" for p in ("in_progress", "searching", "completed"))
        for done, added in zip(_searches(grounding, self._id, len(self._output)),
                               _searches(grounding, self._id, len(self._output), "in_progress")):
            self._whole_item(out, added, done, progress)


def stream_encoder(request: c.Request, response_id: str, model: str, created: int) -> StreamEncoder:
    return StreamEncoder(request, response_id, model, created)


class OpenAIResponsesCaller:
    name = "openai_responses"
    stream_content_type = "text/event-stream"

    decode_request = staticmethod(decode_request)
    encode_response = staticmethod(encode_response)
    stream_encoder = StreamEncoder
    error_body = staticmethod(error_body)  # OpenAI's shapes, shared with openai_chat
    encode_model_list = staticmethod(encode_model_list)


caller = OpenAIResponsesCaller()
