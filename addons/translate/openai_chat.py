"""OpenAI Chat Completions: the caller protocol (`/v1/chat/completions`) and the `openai` upstream
dialect (any OpenAI-compatible base URL).

Shapes follow the official `openai` SDK's types (`types/chat/chat_completion*.py`). The stream
framing, usage, error and model-list shapes are shared with the legacy completions caller
(`openai_completions`), which imports them from here.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import encode_basestring_ascii as _quote
from typing import Any, Final, NoReturn

from . import canonical as c
from .protocol import ModelInfo
from .sse import SSEParser
from .sse import encode as sse_encode

# One encoder instance: json.dumps with options builds a new encoder per call, and this runs per
# stream event. ASCII output is safe to .encode() whatever the text holds (lone surrogates too).
_dumps = json.JSONEncoder(separators=(",", ":")).encode

DONE: Final = b"data: [DONE]\n\n"


# --- shared request validation --------------------------------------------------------------------


def _invalid(param: str, problem: str) -> c.BadRequest:
    return c.BadRequest(f"{param} {problem}", param)


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise c.BadRequest("the request body must be a JSON object")
    return body


def require_model(body: dict[str, Any], model: str | None) -> str:
    """The path's model wins (no OpenAI path names one, but the interface allows it)."""
    if model:
        return model
    value = body.get("model")
    if not isinstance(value, str) or not value:
        raise _invalid("model", "must be a non-empty string")
    return value


def _number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise _invalid(key, "must be a number")
    return value


def _integer(body: dict[str, Any], key: str, minimum: int | None = None) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        raise _invalid(key, "must be an integer" if minimum is None else f"must be an integer >= {minimum}")
    return value


def _flag(mapping: dict[str, Any], key: str, param: str) -> bool:
    value = mapping.get(key)
    if value is not None and not isinstance(value, bool):
        raise _invalid(param, "must be a boolean")
    return bool(value)


def _stop(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise _invalid("stop", "must be a string or an array of strings")


def decode_options(body: dict[str, Any]) -> dict[str, Any]:
    """The sampling and stream fields chat and legacy completions share, as c.Request keywords."""
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise _invalid("stream_options", "must be an object")
    max_tokens = _integer(body, "max_completion_tokens", 1)  # the newer name wins
    n = _integer(body, "n", 1)
    return {
        "stream": _flag(body, "stream", "stream"),
        "include_usage": bool(options) and _flag(options, "include_usage", "stream_options.include_usage"),
        "max_tokens": max_tokens if max_tokens is not None else _integer(body, "max_tokens", 1),
        "temperature": _number(body, "temperature"),
        "top_p": _number(body, "top_p"),
        "stop": _stop(body.get("stop")),
        "seed": _integer(body, "seed"),
        "presence_penalty": _number(body, "presence_penalty"),
        "frequency_penalty": _number(body, "frequency_penalty"),
        "candidate_count": n if n and n > 1 else None,
    }


# --- chat request decoding ------------------------------------------------------------------------

# A remote image's type, for upstreams that want one with a URL; unknown suffixes guess JPEG.
_IMAGE_SUFFIXES: Final = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
    "heif": "image/heif",
}

# reasoning_effort -> (thinking enabled, canonical effort); the SDK also knows xhigh and max.
_EFFORTS: Final[dict[str, tuple[bool, Any]]] = {
    "none": (False, None),
    "minimal": (True, "minimal"),
    "low": (True, "low"),
    "medium": (True, "medium"),
    "high": (True, "high"),
    "xhigh": (True, "high"),
    "max": (True, "high"),
}

_TOOL_CHOICE_MODES: Final = ("auto", "none", "required")


def _image(url: Any, param: str) -> c.Image:
    if not isinstance(url, str):
        raise _invalid(param, "must be a string")
    if url.startswith("data:"):
        header, comma, data = url[5:].partition(",")
        if not comma or not header.endswith(";base64"):
            raise _invalid(param, "must be a base64 data: URL (data:<mime>;base64,...)")
        return c.Image(mime_type=header.split(";", 1)[0] or "image/jpeg", data=data)
    if url.startswith(("http://", "https://")):
        suffix = url.split("?", 1)[0].rpartition(".")[2].lower()
        return c.Image(mime_type=_IMAGE_SUFFIXES.get(suffix, "image/jpeg"), url=url)
    raise _invalid(param, "must be a data: URL or an http(s) URL")


PartDecoder = Callable[[dict[str, Any], str], c.Text | c.Image | None]


def _text_part(part: dict[str, Any], param: str) -> c.Text:
    text = part.get("text")
    if not isinstance(text, str):
        raise _invalid(f"{param}.text", "must be a string")
    return c.Text(text)


def _image_part(part: dict[str, Any], param: str) -> c.Image:
    image = part.get("image_url")
    # The spec nests {"url", "detail"}; a bare string is what some clients send.
    return _image(image.get("url") if isinstance(image, dict) else image, f"{param}.image_url.url")


def _unsupported_part(part: dict[str, Any], param: str) -> NoReturn:
    raise _invalid(param, f"is of type {part['type']!r}: such content parts are not supported by this gateway")


def _refusal_part(part: dict[str, Any], param: str) -> None:
    """An assistant's refusal is the model's own words about declining: nothing to send back."""


_USER_PARTS: Final[dict[str, PartDecoder]] = {
    "text": _text_part,
    "image_url": _image_part,
    "input_audio": _unsupported_part,
    "file": _unsupported_part,
}
_TEXT_PARTS: Final[dict[str, PartDecoder]] = {"text": _text_part}
_ASSISTANT_PARTS: Final[dict[str, PartDecoder]] = {"text": _text_part, "refusal": _refusal_part}


def _parts(content: Any, param: str, kinds: dict[str, PartDecoder]) -> list[Any]:
    """Content as a string or an array of typed parts, decoded with the decoders `kinds` allows."""
    if isinstance(content, str):
        return [c.Text(content)]
    if not isinstance(content, list):
        raise _invalid(param, "must be a string or an array of content parts")
    parts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if (decode := kinds.get(kind) if isinstance(kind, str) else None) is None:
            raise _invalid(f"{param}[{j}]", f"must be a content part of type {', '.join(kinds)}")
        if (decoded := decode(part, f"{param}[{j}]")) is not None:
            parts.append(decoded)
    return parts


def _arguments(value: Any, param: str) -> dict[str, Any]:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _invalid(param, "is not valid JSON") from None
    if not isinstance(value, dict):
        raise _invalid(param, "must be a JSON object")
    return value


def _object(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _invalid(param, "must be an object")
    return value


def _name(mapping: dict[str, Any], param: str) -> str:
    name = mapping.get("name")
    if not isinstance(name, str) or not name:
        raise _invalid(f"{param}.name", "must be a non-empty string")
    return name


class _History:
    """Walks `messages` in order: tool results need the names of the calls made before them."""

    __slots__ = ("system", "messages", "call_names", "legacy_calls", "_results")

    def __init__(self) -> None:
        self.system: list[str] = []
        self.messages: list[c.Message] = []
        self.call_names: dict[str, str] = {}  # tool_call id -> function name
        self.legacy_calls: dict[str, str] = {}  # function name -> the id made up for its last call
        self._results: c.Message | None = None  # the user turn that consecutive tool results join

    def add(self, i: int, message: Any) -> None:
        param = f"messages[{i}]"
        role = _object(message, param).get("role")
        if (handler := _ROLES.get(role) if isinstance(role, str) else None) is None:
            raise _invalid(f"{param}.role", f"must be one of {', '.join(_ROLES)}")
        if handler not in _RESULT_ROLES:
            self._results = None
        handler(self, message, param)

    def _system(self, message: dict[str, Any], param: str) -> None:
        self.system.extend(p.text for p in _parts(message.get("content"), f"{param}.content", _TEXT_PARTS))

    def _user(self, message: dict[str, Any], param: str) -> None:
        self.messages.append(c.Message("user", _parts(message.get("content"), f"{param}.content", _USER_PARTS)))

    def _assistant(self, message: dict[str, Any], param: str) -> None:
        parts: list[c.Part] = []
        if isinstance(reasoning := message.get("reasoning_content"), str) and reasoning:
            parts.append(c.Thinking(reasoning))  # DeepSeek-style clients send it back
        if (content := message.get("content")) is not None:
            parts.extend(p for p in _parts(content, f"{param}.content", _ASSISTANT_PARTS) if p.text)
        if (calls := message.get("tool_calls")) is not None:
            if not isinstance(calls, list):
                raise _invalid(f"{param}.tool_calls", "must be an array")
            parts.extend(self._tool_call(call, f"{param}.tool_calls[{j}]") for j, call in enumerate(calls))
        if (legacy := message.get("function_call")) is not None:
            where = f"{param}.function_call"
            name = _name(_object(legacy, where), where)
            call_id = self.legacy_calls[name] = f"call_{len(self.messages)}_{name}"
            parts.append(c.ToolCall(call_id, name, _arguments(legacy.get("arguments"), f"{where}.arguments")))
        if parts:
            self.messages.append(c.Message("assistant", parts))

    def _tool_call(self, call: Any, param: str) -> c.ToolCall:
        if _object(call, param).get("type", "function") != "function":
            raise _invalid(f"{param}.type", "must be 'function': custom tool calls are not supported")
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            raise _invalid(f"{param}.id", "must be a non-empty string")
        fn = _object(call.get("function"), f"{param}.function")
        name = self.call_names[call_id] = _name(fn, f"{param}.function")
        return c.ToolCall(call_id, name, _arguments(fn.get("arguments"), f"{param}.function.arguments"))

    def _result(self, call_id: str, name: str, message: dict[str, Any], param: str) -> None:
        content = message.get("content")
        parts = [] if content is None else _parts(content, f"{param}.content", _TEXT_PARTS)
        if self._results is None:
            self._results = c.Message("user", [])
            self.messages.append(self._results)
        self._results.parts.append(c.ToolResult(call_id, name, parts))

    def _tool(self, message: dict[str, Any], param: str) -> None:
        call_id = message.get("tool_call_id")
        if not isinstance(call_id, str):
            raise _invalid(f"{param}.tool_call_id", "must be a string")
        name = self.call_names.get(call_id)
        if name is None:
            raise _invalid(f"{param}.tool_call_id", f"{call_id!r} does not match any earlier assistant tool call")
        self._result(call_id, name, message, param)

    def _function(self, message: dict[str, Any], param: str) -> None:
        name = _name(message, param)
        call_id = self.legacy_calls.get(name)
        if call_id is None:
            raise _invalid(f"{param}.name", f"{name!r} does not match any earlier assistant function_call")
        self._result(call_id, name, message, param)


_ROLES: Final = {
    "system": _History._system,
    "developer": _History._system,
    "user": _History._user,
    "assistant": _History._assistant,
    "tool": _History._tool,
    "function": _History._function,
}
_RESULT_ROLES: Final = (_History._tool, _History._function)


def _tool(fn: Any, param: str) -> c.Tool:
    fn = _object(fn, param)
    description = fn.get("description")
    parameters = fn.get("parameters")
    if description is not None and not isinstance(description, str):
        raise _invalid(f"{param}.description", "must be a string")
    if parameters is not None and not isinstance(parameters, dict):
        raise _invalid(f"{param}.parameters", "must be a JSON schema object")
    return c.Tool(_name(fn, param), description or "", parameters)


def _tools(body: dict[str, Any]) -> list[c.Tool]:
    for key in ("tools", "functions"):
        if body.get(key) is not None and not isinstance(body[key], list):
            raise _invalid(key, "must be an array")
    tools: list[c.Tool] = []
    for j, tool in enumerate(body.get("tools") or ()):
        kind = _object(tool, f"tools[{j}]").get("type")
        if kind != "function":
            raise _invalid(f"tools[{j}].type", f"{kind!r} is not supported: only function tools are")
        tools.append(_tool(tool.get("function"), f"tools[{j}].function"))
    tools.extend(_tool(fn, f"functions[{j}]") for j, fn in enumerate(body.get("functions") or ()))
    return tools


def _tool_choice(body: dict[str, Any]) -> c.ToolChoice | None:
    key = "tool_choice"
    if (value := body.get(key)) is None:
        key = "function_call"  # the legacy spelling, whose named form is {"name"}
        if (value := body.get(key)) is None:
            return None
    if value in _TOOL_CHOICE_MODES:
        return c.ToolChoice(value)
    if isinstance(value, dict) and value.get("type", "function") == "function":
        fn = value.get("function") if key == "tool_choice" else value
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            return c.ToolChoice("tool", fn["name"])
    raise _invalid(key, f"must be one of {', '.join(_TOOL_CHOICE_MODES)} or a named function")


def _response_format(value: Any) -> c.ResponseFormat | None:
    """None for "text": plain text is what every upstream does unasked."""
    if value is None:
        return None
    kind = _object(value, "response_format").get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return c.ResponseFormat("json_object")
    if kind == "json_schema":
        spec = _object(value.get("json_schema"), "response_format.json_schema")
        if (schema := spec.get("schema")) is not None and not isinstance(schema, dict):
            raise _invalid("response_format.json_schema.schema", "must be an object")
        return c.ResponseFormat("json_schema", schema, spec.get("name"))
    raise _invalid("response_format.type", "must be text, json_object or json_schema")


def _thinking(value: Any) -> c.ThinkingConfig | None:
    if value is None:
        return None
    if (setting := _EFFORTS.get(value) if isinstance(value, str) else None) is None:
        raise _invalid("reasoning_effort", f"must be one of {', '.join(_EFFORTS)}")
    return c.ThinkingConfig(enabled=setting[0], effort=setting[1])


def decode_chat_request(body: Any, *, model: str | None = None) -> c.Request:
    body = require_object(body)
    name = require_model(body, model)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "must be a non-empty array")
    history = _History()
    for i, message in enumerate(messages):
        history.add(i, message)
    options = body.get("web_search_options")
    if options is not None and not isinstance(options, dict):
        raise _invalid("web_search_options", "must be an object")
    return c.Request(
        model=name,
        messages=history.messages,
        system=history.system,
        search=c.WebSearch() if options is not None else None,
        tools=_tools(body),
        tool_choice=_tool_choice(body),
        response_format=_response_format(body.get("response_format")),
        thinking=_thinking(body.get("reasoning_effort")),
        **decode_options(body),
    )


# --- caller side: answers, streams, errors ----------------------------------------------------------

_FINISH: Final[dict[str, str]] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "stop_sequence": "stop",
    "error": "stop",
}


def _finish_reason(reason: c.FinishReason, called_tools: bool) -> str:
    """Clients loop on "tool_calls", and upstreams such as Gemini say STOP after a call."""
    mapped = _FINISH[reason]
    return "tool_calls" if called_tools and mapped == "stop" else mapped


def _encode_call(call: c.ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": _dumps(call.arguments)}}


def encode_usage(usage: c.Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def image_markdown(image: c.Image) -> str:
    """An image the model drew, as chat has no image output: Markdown with a data: URL (the
    convention other gateways use)."""
    return f"![image]({image.url if image.data is None else f'data:{image.mime_type};base64,{image.data}'})"


def url_citations(grounding: c.Grounding) -> list[dict[str, Any]]:
    """Chat's url_citation annotations: character offsets into the message content, which is the
    answer's text."""
    out = []
    for citation in grounding.citations:
        for i in citation.sources:
            if 0 <= i < len(grounding.sources):
                source = grounding.sources[i]
                cited = {"start_index": citation.start, "end_index": citation.end, "title": source.title or source.url,
                         "url": source.url}
                out.append({"type": "url_citation", "url_citation": cited})
    return out


def _grounding_in(annotations: Any, content: str) -> c.Grounding | None:
    grounding = c.Grounding()
    places: dict[str, int] = {}
    for annotation in annotations if isinstance(annotations, list) else ():
        cited = annotation.get("url_citation") if isinstance(annotation, dict) else None
        if not isinstance(cited, dict) or not isinstance(url := cited.get("url"), str):
            continue
        if url not in places:
            places[url] = len(grounding.sources)
            grounding.sources.append(c.Source(url, str(cited.get("title") or "")))
        start, end = cited.get("start_index"), cited.get("end_index")
        if isinstance(start, int) and isinstance(end, int) and end > start:
            grounding.citations.append(c.Citation(start, end, content[start:end], [places[url]]))
    return grounding if grounding.sources else None


def encode_chat_response(response: c.Response, request: c.Request) -> dict[str, Any]:
    texts = [p.text if isinstance(p, c.Text) else image_markdown(p) for p in response.parts if isinstance(p, c.Text | c.Image)]
    thoughts = [p.text for p in response.parts if isinstance(p, c.Thinking) and not p.redacted]
    calls = [_encode_call(p) for p in response.parts if isinstance(p, c.ToolCall)]
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if response.grounding is not None:
        message["annotations"] = url_citations(response.grounding)
    if thoughts:
        message["reasoning_content"] = "".join(thoughts)
    if calls:
        message["tool_calls"] = calls
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": _finish_reason(response.finish_reason, bool(calls)),
    }
    return {
        "id": response.id,
        "object": "chat.completion",
        "created": response.created,
        "model": response.model,
        "choices": [choice],
        "usage": encode_usage(response.usage),
    }


# status -> (type, code) as api.openai.com answers; other statuses fall back by class.
_STATUS_ERRORS: Final[dict[int, tuple[str, str | None]]] = {
    400: ("invalid_request_error", None),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "model_not_found"),
    413: ("invalid_request_error", "request_too_large"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    500: ("api_error", "server_error"),
    502: ("api_error", "bad_gateway"),
    503: ("api_error", "service_unavailable"),
    504: ("api_error", "timeout"),
}
# Hints that also change the type; any other hint becomes the code under the status's type.
_KIND_ERRORS: Final[dict[str, tuple[str, str]]] = {
    "rate_limit": ("rate_limit_error", "rate_limit_exceeded"),
    "insufficient_quota": ("insufficient_quota", "insufficient_quota"),
    "auth": ("authentication_error", "invalid_api_key"),
    "permission": ("permission_error", "permission_denied"),
    "not_found": ("invalid_request_error", "model_not_found"),
}


def error_body(status: int, message: str, kind: str | None = None) -> dict[str, Any]:
    fallback = ("api_error", "server_error") if status >= 500 else ("invalid_request_error", None)
    error_type, code = _STATUS_ERRORS.get(status, fallback)
    if kind:
        error_type, code = _KIND_ERRORS.get(kind, (error_type, kind))
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


# ModelInfo.kind -> the `mode` LiteLLM's model info uses for it; OpenAI's list has no such field,
# and clients ignore fields they do not know.
_MODES: Final = {"text": "chat", "image": "image_generation", "embedding": "embedding"}


def encode_model_list(models: list[ModelInfo]) -> dict[str, Any]:
    data = [
        {"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by, "mode": _MODES.get(m.kind, "chat")}
        for m in models
    ]
    return {"object": "list", "data": data}


class ChunkStream:
    """The framing both OpenAI stream formats share. Every chunk repeats id/object/created/model
    and, only when usage was asked for, `usage: null`; the end is the finish chunk, a usage chunk
    with no choices (when asked for) and `data: [DONE]`. The constant head and tail are encoded
    once, so a chunk costs one json encode of its choice, and a text chunk (most of a stream)
    only the quoting of its text into a template."""

    __slots__ = ("_head", "_tail", "_include_usage", "done")

    def __init__(self, obj: str, response_id: str, model: str, created: int, include_usage: bool) -> None:
        head = _dumps({"id": response_id, "object": obj, "created": created, "model": model})
        self._head = b"data: " + head[:-1].encode() + b',"choices":['
        self._tail = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"
        self._include_usage = include_usage
        self.done = False

    def chunk(self, choice: dict[str, Any]) -> bytes:
        return self._head + _dumps(choice).encode() + self._tail

    def template(self, before: str, after: str) -> tuple[bytes, bytes]:
        """A chunk cut where a JSON string goes: the choice JSON around it, head and tail included."""
        return self._head + before.encode(), after.encode() + self._tail

    @staticmethod
    def fill(template: tuple[bytes, bytes], text: str) -> bytes:
        return template[0] + _quote(text).encode() + template[1]

    def finish(self, choice: dict[str, Any], usage: c.Usage) -> bytes:
        self.done = True
        out = self.chunk(choice)
        if self._include_usage:
            out += self._head + b'],"usage":' + _dumps(encode_usage(usage)).encode() + b"}\n\n"
        return out + DONE

    def error(self, error: c.StreamError) -> bytes:
        """An `error` object, on which the openai SDK's Stream raises APIError."""
        self.done = True
        return sse_encode(_dumps(error_body(error.status, error.message, error.kind))) + DONE


_OPEN_CHOICE_END: Final = '},"logprobs":null,"finish_reason":null}'


class ChatStreamEncoder:
    """Canonical events -> `chat.completion.chunk` events, one chunk per delta as OpenAI sends.
    Signatures and images have no place in chat chunks and are dropped."""

    __slots__ = ("_out", "_tools", "_started", "_content", "_reasoning")

    def __init__(self, request: c.Request, response_id: str, model: str, created: int) -> None:
        out = self._out = ChunkStream("chat.completion.chunk", response_id, model, created, request.include_usage)
        # canonical block index -> the template of that call's arguments chunks (k = its position)
        self._tools: dict[int, tuple[bytes, bytes]] = {}
        self._started = False
        self._content = out.template('{"index":0,"delta":{"content":', _OPEN_CHOICE_END)
        self._reasoning = out.template('{"index":0,"delta":{"reasoning_content":', _OPEN_CHOICE_END)

    def _delta(self, delta: dict[str, Any]) -> bytes:
        return self._out.chunk({"index": 0, "delta": delta, "logprobs": None, "finish_reason": None})

    def encode(self, events: list[c.Event]) -> bytes:
        out = self._out
        if out.done:
            return b""
        chunks: list[bytes] = []
        if not self._started:
            self._started = True
            chunks.append(self._delta({"role": "assistant", "content": ""}))
        for event in events:
            match event:
                case c.TextDelta(text=text) if text:
                    chunks.append(out.fill(self._content, text))
                case c.ThinkingDelta(text=text) if text:
                    chunks.append(out.fill(self._reasoning, text))
                case c.ToolArgsDelta(index=index, json=fragment) if fragment and index in self._tools:
                    chunks.append(out.fill(self._tools[index], fragment))
                case c.BlockStart(part=c.Image() as image):
                    chunks.append(out.fill(self._content, image_markdown(image)))
                case c.Grounded(grounding=grounding):
                    chunks.append(self._delta({"annotations": url_citations(grounding)}))
                case c.BlockStart(index=index, part=c.ToolCall(id=call_id, name=name)):
                    k = len(self._tools)
                    before = f'{{"index":0,"delta":{{"tool_calls":[{{"index":{k},"function":{{"arguments":'
                    self._tools[index] = out.template(before, "}}]" + _OPEN_CHOICE_END)
                    function = {"name": name, "arguments": ""}
                    call = {"index": k, "id": call_id, "type": "function", "function": function}
                    chunks.append(self._delta({"tool_calls": [call]}))
                case c.Finish(reason=reason, usage=usage):
                    reason_text = _finish_reason(reason, bool(self._tools))
                    choice = {"index": 0, "delta": {}, "logprobs": None, "finish_reason": reason_text}
                    chunks.append(out.finish(choice, usage))
                    break
                case c.StreamError():
                    chunks.append(out.error(event))
                    break
        return b"".join(chunks)


class OpenAIChatCaller:
    name = "openai_chat"
    stream_content_type = "text/event-stream"

    decode_request = staticmethod(decode_chat_request)
    encode_response = staticmethod(encode_chat_response)
    stream_encoder = ChatStreamEncoder
    error_body = staticmethod(error_body)
    encode_model_list = staticmethod(encode_model_list)


# --- upstream dialect -------------------------------------------------------------------------------


def _image_url(image: c.Image) -> dict[str, Any]:
    url = image.url if image.data is None and image.url else f"data:{image.mime_type};base64,{image.data}"
    return {"type": "image_url", "image_url": {"url": url}}


def _user_content(parts: list[c.Text | c.Image]) -> str | list[dict[str, Any]]:
    if len(parts) == 1 and isinstance(parts[0], c.Text):
        return parts[0].text
    return [{"type": "text", "text": p.text} if isinstance(p, c.Text) else _image_url(p) for p in parts]


def _result_text(result: c.ToolResult) -> str:
    """Many OpenAI-compatible servers take only a string from a tool; images cannot go there."""
    return "\n".join(p.text if isinstance(p, c.Text) else "[image]" for p in result.content)


def _encode_messages(request: c.Request) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"role": "system", "content": text} for text in request.system]
    for message in request.messages:
        if message.role == "assistant":
            # Thinking is dropped: OpenAI-compatible APIs reject fields they do not know, and
            # DeepSeek refuses its own reasoning_content sent back.
            texts = [p.text for p in message.parts if isinstance(p, c.Text)]
            calls = [_encode_call(p) for p in message.parts if isinstance(p, c.ToolCall)]
            entry: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
            if calls:
                entry["tool_calls"] = calls
            out.append(entry)
            continue
        # Tool messages must directly follow the assistant's calls, so results go first.
        rest: list[c.Text | c.Image] = []
        for part in message.parts:
            if isinstance(part, c.ToolResult):
                out.append({"role": "tool", "tool_call_id": part.call_id, "content": _result_text(part)})
            elif isinstance(part, c.Text | c.Image):
                rest.append(part)
        if rest:
            out.append({"role": "user", "content": _user_content(rest)})
    return out


def _encode_function(tool: c.Tool) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": tool.name, "description": tool.description}
    if tool.parameters is not None:  # omitted means "takes no arguments"
        fn["parameters"] = tool.parameters
    return {"type": "function", "function": fn}


def _encode_tool_choice(choice: c.ToolChoice) -> str | dict[str, Any]:
    if choice.mode == "tool":
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode


def _encode_response_format(fmt: c.ResponseFormat) -> dict[str, Any]:
    if fmt.type == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": fmt.name or "response", "schema": fmt.schema or {}}}
    return {"type": fmt.type}


# Optional canonical fields copied as they are: (canonical attribute, OpenAI key).
_PLAIN_FIELDS: Final = (
    ("max_tokens", "max_tokens"),  # max_completion_tokens is not universally supported
    ("temperature", "temperature"),
    ("top_p", "top_p"),
    ("seed", "seed"),
    ("presence_penalty", "presence_penalty"),
    ("frequency_penalty", "frequency_penalty"),
    ("candidate_count", "n"),
)


def encode_chat_request(request: c.Request, model: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": _encode_messages(request)}
    for attribute, key in _PLAIN_FIELDS:
        if (value := getattr(request, attribute)) is not None:
            body[key] = value
    if request.stop:
        body["stop"] = request.stop
    if request.tools:
        body["tools"] = [_encode_function(tool) for tool in request.tools]
    elif request.search is not None and "search" in model:
        body["web_search_options"] = {}  # only OpenAI's search models take it (and no tools)
    if request.tool_choice is not None:
        body["tool_choice"] = _encode_tool_choice(request.tool_choice)
    if request.response_format is not None:
        body["response_format"] = _encode_response_format(request.response_format)
    # Only an explicit effort: a bare budget (Anthropic, Gemini callers) says nothing about
    # whether this model takes reasoning_effort, and models that do not reject it.
    if request.thinking is not None and request.thinking.enabled and request.thinking.effort:
        body["reasoning_effort"] = request.thinking.effort
    if request.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}  # the gateway records usage
    return body


# Upstream finish_reason -> canonical; anything unknown (eos, ...) is a normal stop.
_UPSTREAM_FINISH: Final[dict[str, c.FinishReason]] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "function_call": "tool_calls",
    "content_filter": "content_filter",
}


def decode_usage(usage: dict[str, Any]) -> c.Usage:
    prompt = usage.get("prompt_tokens_details") or {}
    completion = usage.get("completion_tokens_details") or {}
    return c.Usage(
        input_tokens=usage.get("prompt_tokens") or 0,
        output_tokens=usage.get("completion_tokens") or 0,
        # DeepSeek reports cache hits under its own key.
        cached_tokens=prompt.get("cached_tokens") or usage.get("prompt_cache_hit_tokens") or 0,
        reasoning_tokens=completion.get("reasoning_tokens") or 0,
    )


def _reasoning(mapping: dict[str, Any]) -> Any:
    """DeepSeek, Qwen and older vLLM say reasoning_content; OpenRouter, Ollama, newer vLLM reasoning."""
    return mapping.get("reasoning_content") or mapping.get("reasoning")


def decode_chat_response(body: Any) -> c.Response:
    if isinstance(body, dict) and isinstance(error := body.get("error"), dict):
        raise c.BadUpstreamAnswer(f"upstream answered with an error: {error.get('message')}")
    try:
        choice = body["choices"][0]
        message = choice["message"]
        parts: list[c.Part] = []
        if isinstance(reasoning := _reasoning(message), str) and reasoning:
            parts.append(c.Thinking(reasoning))
        content = message.get("content")
        if isinstance(content, str) and content:
            parts.append(c.Text(content))
        elif isinstance(content, list):  # Mistral answers with typed parts
            parts.extend(c.Text(p["text"]) for p in content if p.get("type") == "text" and p.get("text"))
        for j, call in enumerate(message.get("tool_calls") or ()):
            fn = call["function"]
            param = f"choices[0].message.tool_calls[{j}].function.arguments"
            try:
                arguments = _arguments(fn.get("arguments"), param)
            except c.BadRequest as error:
                raise c.BadUpstreamAnswer(f"upstream {error.message}") from None
            parts.append(c.ToolCall(call.get("id") or f"call_{j}", fn["name"], arguments))
        return c.Response(
            id=body.get("id") or "",
            model=body.get("model") or "",
            parts=parts,
            finish_reason=_UPSTREAM_FINISH.get(choice.get("finish_reason") or "stop", "stop"),
            usage=decode_usage(body.get("usage") or {}),
            created=body.get("created") or 0,
            grounding=_grounding_in(message.get("annotations"), content if isinstance(content, str) else ""),
        )
    except (KeyError, IndexError, TypeError, AttributeError) as error:
        raise c.BadUpstreamAnswer(f"not a chat.completion answer ({type(error).__name__}: {error})") from None


def _upstream_error(error: Any) -> c.StreamError:
    if not isinstance(error, dict):
        return c.StreamError(f"upstream error: {error}")
    code = error.get("code")
    status = code if isinstance(code, int) and 400 <= code <= 599 else 502
    kind = error.get("type") if isinstance(error.get("type"), str) else "upstream_error"
    return c.StreamError(str(error.get("message") or "upstream error"), status, kind)


class ChatStreamDecoder:
    """`chat.completion.chunk` SSE -> canonical events. Content becomes a Text block, reasoning a
    Thinking block, each tool_calls index a ToolCall block; a block stops when the next starts or
    the answer finishes. The Finish waits for `[DONE]` (or the body's end), since the usage
    chunk comes after the finish_reason."""

    __slots__ = (
        "_sse", "_block", "_kind", "_tools", "_last_tool", "_next", "_reason", "_usage", "_ended", "_text", "_annotations",
    )

    def __init__(self) -> None:
        self._sse = SSEParser()
        self._block: int | None = None  # the open block's index
        self._kind = ""  # what the open block is: "text", "thinking" or "tool"
        self._tools: dict[int, int] = {}  # upstream tool_calls index -> block index
        self._last_tool = -1
        self._next = 0  # the next block's index
        self._reason: c.FinishReason | None = None
        self._usage = c.Usage()
        self._ended = False
        self._text: list[str] = []  # the content so far, which annotations count in
        self._annotations: list[Any] = []

    def feed(self, chunk: bytes) -> list[c.Event]:
        out: list[c.Event] = []
        if not self._ended:
            for event in self._sse.feed(chunk):
                self._event(event.data, out)
                if self._ended:
                    break
        return out

    def close(self) -> list[c.Event]:
        out: list[c.Event] = []
        if not self._ended:
            for event in self._sse.close():
                self._event(event.data, out)
            if not self._ended:
                self._end(out, done=False)
        return out

    def _fail(self, out: list[c.Event], error: c.StreamError) -> None:
        self._ended = True
        out.append(error)

    def _end(self, out: list[c.Event], done: bool) -> None:
        """A finish_reason, or [DONE] after some answer, is a proper end; anything else is not."""
        if self._reason is None and not (done and self._next):
            missing = "a finish_reason" if self._next else "an answer"
            return self._fail(out, c.StreamError(f"upstream stream ended without {missing}"))
        if (grounding := _grounding_in(self._annotations, "".join(self._text))) is not None:
            out.append(c.Grounded(grounding))
        self._stop(out)
        self._ended = True
        out.append(c.Finish(self._reason or "stop", self._usage))

    def _stop(self, out: list[c.Event]) -> None:
        if self._block is not None:
            out.append(c.BlockStop(self._block))
            self._block = None
            self._kind = ""

    def _open(self, out: list[c.Event], kind: str, part: c.Text | c.Thinking | c.ToolCall) -> int:
        self._stop(out)
        index = self._block = self._next
        self._next += 1
        self._kind = kind
        out.append(c.BlockStart(index, part))
        return index

    def _event(self, data: str, out: list[c.Event]) -> None:
        if data == "[DONE]":
            return self._end(out, done=True)
        try:
            chunk = json.loads(data)
            if (error := chunk.get("error")) is not None:
                return self._fail(out, _upstream_error(error))
            if usage := chunk.get("usage"):
                self._usage = decode_usage(usage)
            for choice in chunk.get("choices") or ():
                if not choice.get("index"):  # the one candidate the canonical form carries
                    self._choice(choice, out)
        except (ValueError, TypeError, KeyError, AttributeError) as error:
            self._fail(out, c.StreamError(f"upstream sent a malformed stream event ({error}): {data[:200]}"))

    def _choice(self, choice: dict[str, Any], out: list[c.Event]) -> None:
        delta = choice.get("delta") or {}
        if (reasoning := _reasoning(delta)) and isinstance(reasoning, str):
            index = self._block if self._kind == "thinking" else self._open(out, "thinking", c.Thinking(""))
            out.append(c.ThinkingDelta(index, reasoning))  # type: ignore[arg-type]
        if (content := delta.get("content")) and isinstance(content, str):
            index = self._block if self._kind == "text" else self._open(out, "text", c.Text(""))
            out.append(c.TextDelta(index, content))  # type: ignore[arg-type]
            self._text.append(content)
        if isinstance(annotations := delta.get("annotations"), list):
            self._annotations += annotations
        for call in delta.get("tool_calls") or ():
            self._tool_call(call, out)
        if reason := choice.get("finish_reason"):
            self._reason = _UPSTREAM_FINISH.get(reason, "stop")
            self._stop(out)

    def _tool_call(self, call: dict[str, Any], out: list[c.Event]) -> None:
        fn = call.get("function") or {}
        position = call.get("index")
        if position is None:  # Gemini's OpenAI endpoint has omitted it: a new id is a new call
            position = self._last_tool + 1 if call.get("id") or self._last_tool < 0 else self._last_tool
        index = self._tools.get(position)
        if index is None:
            part = c.ToolCall(call.get("id") or f"call_{self._next}", fn.get("name") or "")
            index = self._tools[position] = self._open(out, "tool", part)
            self._last_tool = position
        arguments = fn.get("arguments")
        # A fragment for a call already stopped (interleaved calls) has no place left: dropped.
        if arguments and index == self._block:
            out.append(c.ToolArgsDelta(index, arguments if isinstance(arguments, str) else _dumps(arguments)))


class OpenAIUpstream:
    name = "openai"

    encode_request = staticmethod(encode_chat_request)
    decode_response = staticmethod(decode_chat_response)
    stream_decoder = ChatStreamDecoder


caller = OpenAIChatCaller()
upstream = OpenAIUpstream()
