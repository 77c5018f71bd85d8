"""Hypothesis strategies for tests/test_fuzz.py: request bodies that are almost right.

Each body starts from a real one (the captured first requests of Claude Code, Codex CLI and
Gemini CLI in tests/fixtures/clients, and a hand-written seed per protocol and operation that
carries the features those lack: images, tool calls and results, schemas, thinking) and then
takes a few mutations: a value of the wrong type, a missing field, a huge or deeply nested
value, odd unicode (lone surrogates, RTL marks, NUL), a giant tool schema, a known key put
where it does not belong. A mutation picks its place among every value of the body, so the
strategies shrink to the one field that matters.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "clients"
IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
SCHEMA = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "description": "where"},
        "depth": {"type": ["integer", "null"], "minimum": 0},
        "mode": {"enum": ["a", "b"]},
        "opts": {"type": "object", "additionalProperties": {"type": "boolean"}, "properties": {"x": {"$ref": "#/$defs/x"}}},
        "list": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "number", "format": "float"}]}},
    },
    "required": ["path"],
    "$defs": {"x": {"type": "string", "const": "x"}},
    "additionalProperties": False,
}


def _fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())["body"]


def _chat() -> dict[str, Any]:
    return {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "developer", "content": [{"type": "text", "text": "and kind"}]},
            {"role": "user", "content": [
                {"type": "text", "text": "what is here?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{IMAGE}", "detail": "low"}},
            ]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "look", "arguments": "{\"path\": \".\"}"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "a file"},
            {"role": "user", "content": "thanks", "name": "me"},
        ],
        "tools": [{"type": "function", "function": {"name": "look", "description": "look", "parameters": SCHEMA, "strict": True}}],
        "tool_choice": {"type": "function", "function": {"name": "look"}},
        "response_format": {"type": "json_schema", "json_schema": {"name": "out", "schema": SCHEMA, "strict": True}},
        "stream": False, "stream_options": {"include_usage": True}, "max_completion_tokens": 200, "temperature": 0.5,
        "top_p": 0.9, "stop": ["\n\n"], "seed": 7, "n": 1, "presence_penalty": 0.1, "frequency_penalty": 0.1,
        "reasoning_effort": "low", "user": "u1", "logit_bias": {"50256": -100}, "parallel_tool_calls": False,
    }


def _completions() -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "prompt": ["say hi"], "max_tokens": 20, "temperature": 0, "stop": "\n",
            "stream": False, "suffix": None, "echo": False, "n": 1, "logprobs": None, "user": "u2"}


def _responses() -> dict[str, Any]:
    return {
        "model": "gpt-4o",
        "instructions": "be brief",
        "input": [
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "look"},
                {"type": "input_image", "image_url": f"data:image/png;base64,{IMAGE}"},
            ]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "hm"}], "encrypted_content": "abc"},
            {"type": "function_call", "call_id": "call_1", "name": "look", "arguments": "{\"path\": \".\"}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "a file"},
            {"role": "assistant", "content": [{"type": "output_text", "text": "done"}]},
            {"role": "user", "content": "again"},
        ],
        "tools": [{"type": "function", "name": "look", "description": "look", "parameters": SCHEMA, "strict": False},
                  {"type": "web_search"}],
        "tool_choice": "auto", "text": {"format": {"type": "json_schema", "name": "out", "schema": SCHEMA}},
        "reasoning": {"effort": "medium", "summary": "auto"}, "max_output_tokens": 300, "stream": False, "store": False,
        "include": ["reasoning.encrypted_content"], "parallel_tool_calls": True, "prompt_cache_key": "k1",
    }


def _messages() -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "be brief", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": IMAGE}},
                {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "a doc"}},
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "let me look", "signature": "c2ln"},
                {"type": "redacted_thinking", "data": "cmVk"},
                {"type": "tool_use", "id": "toolu_1", "name": "look", "input": {"path": "."}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "is_error": False, "content": [
                    {"type": "text", "text": "a file"},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}},
                ]},
            ]},
        ],
        "tools": [{"name": "look", "description": "look", "input_schema": SCHEMA}, {"type": "web_search_20250305", "name": "web_search"}],
        "tool_choice": {"type": "auto", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 512},
        "metadata": {"user_id": json.dumps({"session_id": "s1"})},
        "stop_sequences": ["END"], "temperature": 1, "top_k": 5, "stream": False,
    }


def _count_messages() -> dict[str, Any]:
    body = _messages()
    del body["max_tokens"], body["stream"], body["stop_sequences"]
    return body


def _gemini() -> dict[str, Any]:
    return {
        "contents": [
            {"role": "user", "parts": [{"text": "look"}, {"inlineData": {"mimeType": "image/png", "data": IMAGE}},
                                       {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/a.png"}}]},
            {"role": "model", "parts": [{"text": "hm", "thought": True, "thoughtSignature": "c2ln"},
                                        {"functionCall": {"name": "look", "args": {"path": "."}, "id": "c1"}, "thoughtSignature": "c2ln"}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "look", "id": "c1", "response": {"result": "a file"}}}]},
        ],
        "systemInstruction": {"role": "user", "parts": [{"text": "be brief"}]},
        "tools": [{"functionDeclarations": [{"name": "look", "description": "look", "parameters": {
            "type": "OBJECT", "properties": {"path": {"type": "STRING"}}, "required": ["path"]}},
            {"name": "peek", "parametersJsonSchema": SCHEMA}]}, {"googleSearch": {}}],
        "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["look"]}},
        "generationConfig": {"temperature": 0.2, "topP": 0.9, "topK": 4, "maxOutputTokens": 256, "candidateCount": 1,
                             "stopSequences": ["END"], "seed": 3, "responseMimeType": "application/json",
                             "responseSchema": {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}},
                             "thinkingConfig": {"includeThoughts": True, "thinkingBudget": 128}},
        "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
    }


def _gemini_count() -> dict[str, Any]:
    return {"generateContentRequest": {"model": "models/gemini-2.5-flash", **_gemini()}}


@dataclass(frozen=True)
class Case:
    """One operation of one caller protocol: where it is served and what its bodies look like."""

    name: str
    protocol: str
    operation: str  # generate | count_tokens
    path: str  # {model} is the path's model (Gemini)
    seeds: tuple[dict[str, Any], ...]
    tools_key: str  # where the body's tools go
    tool: Callable[[str, dict[str, Any]], dict[str, Any]]  # (name, schema) -> one tool of this protocol

    @cached_property
    def wire_seeds(self) -> tuple[str, ...]:
        return tuple(json.dumps(seed) for seed in self.seeds)


def _openai_tool(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "description": "d" * 50, "parameters": schema}}


def _responses_tool(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "function", "name": name, "parameters": schema}


def _anthropic_tool(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "input_schema": schema}


def _gemini_tool(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"functionDeclarations": [{"name": name, "parameters": schema}, {"name": name + "_j", "parametersJsonSchema": schema}]}


CLAUDE_CODE = _fixture("claude-code-2.1.197-messages.json")
CODEX = _fixture("codex-0.169-responses.json")
GEMINI_CLI = _fixture("gemini-cli-0.61-streamGenerateContent.json")

CASES: dict[str, Case] = {
    case.name: case
    for case in (
        Case("chat", "openai_chat", "generate", "/v1/chat/completions", (_chat(), {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}), "tools", _openai_tool),
        Case("completions", "openai_completions", "generate", "/v1/completions", (_completions(), {"model": "gpt-4o", "prompt": "hi"}), "tools", _openai_tool),
        Case("responses", "openai_responses", "generate", "/v1/responses", (CODEX, _responses(), {"model": "gpt-4o", "input": "hi"}), "tools", _responses_tool),
        Case("messages", "anthropic", "generate", "/v1/messages", (CLAUDE_CODE, _messages()), "tools", _anthropic_tool),
        Case("count_tokens", "anthropic", "count_tokens", "/v1/messages/count_tokens", (_count_messages(),), "tools", _anthropic_tool),
        Case("generateContent", "gemini", "generate", "/v1beta/models/{model}:generateContent", (GEMINI_CLI, _gemini()), "tools", _gemini_tool),
        Case("streamGenerateContent", "gemini", "generate", "/v1beta/models/{model}:streamGenerateContent?alt=sse", (GEMINI_CLI, _gemini()), "tools", _gemini_tool),
        Case("countTokens", "gemini", "count_tokens", "/v1beta/models/{model}:countTokens", (_gemini_count(), {"contents": _gemini()["contents"]}), "tools", _gemini_tool),
    )
}

# Model names a mutation may put in a body or a path: served by every account kind, unknown,
# and odd ones.
MODELS = (
    "gemini-2.5-flash", "claude-sonnet-4-6", "claude-sonnet-4-5", "gpt-4o", "gpt-oss-120b-medium", "gemini-3-pro-preview",
    "models/gemini-2.5-flash", "no-such-model", "", " ", "gemini-2.5-flash\x00", "\u202egemini", "claude-\ud800", "*", "../x",
)

# Keys the protocols know, for putting a known key (with any value) where a mutation lands.
KNOWN_KEYS = (
    "model", "messages", "content", "role", "type", "text", "tools", "tool_choice", "tool_calls", "function", "name",
    "arguments", "parameters", "input_schema", "input", "instructions", "system", "stream", "stream_options", "max_tokens",
    "max_completion_tokens", "max_output_tokens", "temperature", "top_p", "top_k", "stop", "stop_sequences", "seed", "n",
    "response_format", "json_schema", "schema", "thinking", "budget_tokens", "reasoning", "effort", "reasoning_effort",
    "metadata", "user_id", "previous_response_id", "tool_use_id", "tool_call_id", "call_id", "output", "is_error", "source",
    "media_type", "data", "url", "image_url", "detail", "signature", "thinking", "redacted_thinking", "cache_control",
    "contents", "parts", "inlineData", "mimeType", "fileData", "fileUri", "functionCall", "functionResponse", "args",
    "response", "id", "thought", "thoughtSignature", "systemInstruction", "generationConfig", "thinkingConfig",
    "thinkingBudget", "includeThoughts", "maxOutputTokens", "candidateCount", "responseSchema", "responseJsonSchema",
    "responseMimeType", "stopSequences", "toolConfig", "functionCallingConfig", "mode", "allowedFunctionNames",
    "functionDeclarations", "parametersJsonSchema", "safetySettings", "cachedContent", "generateContentRequest", "prompt",
    "suffix", "echo", "logprobs", "include", "store", "summary", "encrypted_content", "properties", "items", "required",
    "anyOf", "oneOf", "allOf", "$ref", "$defs", "enum", "const", "additionalProperties", "format", "nullable", "default",
)

ODD_TEXT = (
    "", " ", "\x00", "a\x00b", "\ud800", "\udfff", "x\ud83d", "\ud83d\ude00", "\u202e\u0645\u0631\u062d\u0628\u0627", "\u200f\u200e",
    "\ufeff", "\uffff", "\U0010ffff", "e\u0301\u0301\u0301", "\r\n\r\n", "data: [DONE]\n\n", "event: error\ndata: {}\n\n",
    "\\u0000", "</script>", "{\"a\":", "%00%ff", "\x7f\x1b[31m", "null", "true", "0", "-1", "1e999", "NaN",
)

WRONG = (None, True, False, 0, -1, 1, 2**63, 10**30, -(10**30), 10**400, 1.5, -0.0, 1e308, float("inf"), float("-inf"), "", "x", [], {}, [None], {"": None}, [[]], {"a": {}})


def json_values(max_leaves: int = 12) -> st.SearchStrategy[Any]:
    """Any JSON value (as json.loads makes it), small."""
    scalars = st.one_of(
        st.none(), st.booleans(), st.integers(min_value=-(2**64), max_value=2**64),
        st.floats(allow_nan=False), st.sampled_from(ODD_TEXT), st.text(max_size=20),
    )
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KNOWN_KEYS) | st.text(max_size=8), inner, max_size=4),
        max_leaves=max_leaves,
    )


def schemas(depth: int = 4) -> st.SearchStrategy[dict[str, Any]]:
    """JSON schemas as clients write them, and as they should not."""
    types = st.sampled_from(["object", "string", "integer", "number", "boolean", "array", "null", "OBJECT", "STRING", "weird"])
    tiny = json_values(2)
    leaf = st.fixed_dictionaries(
        {"type": types | st.lists(types, max_size=3)},
        optional={
            "description": st.sampled_from(ODD_TEXT) | st.text(max_size=10),
            "enum": st.lists(tiny, max_size=3),
            "format": st.sampled_from(["date-time", "uuid", "email", "int64", "bogus"]),
            "const": tiny,
            "default": tiny,
            "nullable": st.booleans(),
            "$ref": st.sampled_from(["#/$defs/x", "#/definitions/y", "#", "http://example.com/s.json", "#/$defs/missing"]),
            "minimum": st.integers() | st.floats(allow_nan=False),
            "pattern": st.sampled_from(["^a+$", "(", "\\"]),
        },
    )

    def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.fixed_dictionaries(
            {"type": types},
            optional={
                "properties": st.dictionaries(st.text(max_size=6) | st.sampled_from(KNOWN_KEYS), inner, max_size=5),
                "items": inner | st.lists(inner, max_size=2),
                "anyOf": st.lists(inner, max_size=3),
                "oneOf": st.lists(inner, max_size=3),
                "allOf": st.lists(inner, max_size=3),
                "required": st.lists(st.text(max_size=6), max_size=3) | tiny,
                "additionalProperties": st.booleans() | inner,
                "$defs": st.dictionaries(st.sampled_from(["x", "y"]), inner, max_size=2),
                "definitions": st.dictionaries(st.sampled_from(["y"]), inner, max_size=1),
            },
        )

    return st.recursive(leaf, extend, max_leaves=depth * 4)


# Built once: building strategies is most of what drawing from new ones costs.
JSON = json_values()
SMALL_JSON = json_values(4)
SCHEMAS = schemas()
WRONGS = st.sampled_from(WRONG)
ODD = st.sampled_from(ODD_TEXT)
OPS = st.sampled_from(("wrong", "any", "delete", "huge", "odd", "deep", "many", "known", "tools", "model", "top"))
TOOL_SCHEMAS = st.sampled_from(("drawn", "wide", "deep"))
TOOL_NAMES = st.sampled_from(("plain", "odd", "same"))
KEYS = st.sampled_from(KNOWN_KEYS)


def _wide() -> dict[str, Any]:
    return {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "x" * 40} for i in range(1000)}}


def _nested(depth: int, kind: str) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value] if kind == "list" else {"type": "object", "properties": {"a": value}} if kind == "schema" else {"a": value}
    return value


def _slots(body: Any) -> list[tuple[Any, Any]]:
    """Every (container, key) of the body whose value a mutation may change, in a stable order
    (a value shared by several places, as "many" makes, counts once)."""
    out: list[tuple[Any, Any]] = []
    seen: set[int] = set()
    stack = [body]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            out.append((node, key))
            if isinstance(value, (dict, list)):
                stack.append(value)
    return out


@st.composite
def _mutation(draw: st.DrawFn, case: Case, body: Any) -> Any:
    """One change somewhere in `body` (in place where it can be); returns the body."""
    op = draw(OPS)
    if op == "top":
        return copy.deepcopy(draw(WRONGS | JSON))
    if op == "tools" and isinstance(body, dict):
        # Many tools with small schemas, or a few with one giant schema (a few MB at most).
        schema = draw(TOOL_SCHEMAS)
        if schema == "wide":
            made: dict[str, Any] = _wide()
        elif schema == "deep":
            made = _nested(draw(st.sampled_from((30, 60, 400))), "schema")
        else:
            made = draw(SCHEMAS)
        count = draw(st.sampled_from((1, 3, 60, 300) if schema == "drawn" else (1, 3)))
        names = draw(TOOL_NAMES)
        odd = draw(ODD)
        body[case.tools_key] = [case.tool({"plain": f"tool_{i}", "odd": odd, "same": "look"}[names], made) for i in range(count)]
        return body
    if op == "model" and isinstance(body, dict):
        body["model"] = copy.deepcopy(draw(st.sampled_from(MODELS) | WRONGS))
        return body
    slots = _slots(body)
    if not slots:
        return body
    node, key = slots[draw(st.integers(0, len(slots) - 1))]
    match op:
        case "wrong":
            node[key] = copy.deepcopy(draw(WRONGS))
        case "any":
            node[key] = draw(JSON)
        case "delete":
            del node[key]
        case "huge":
            node[key] = draw(st.sampled_from(("A", "\u202e", "\ud83d\ude00", " ", "{"))) * draw(st.sampled_from((10_000, 300_000)))
        case "odd":
            node[key] = draw(ODD)
        case "deep":
            node[key] = _nested(draw(st.sampled_from((20, 100, 400, 900))), draw(st.sampled_from(("list", "dict", "schema"))))
        case "many":  # the value repeated in a list (sharing is fine: JSON has no identity), or a dict's keys
            value = node[key]
            size = len(json.dumps(value, default=str))
            times = min(draw(st.sampled_from((2, 50, 1000))), max(2, 500_000 // max(size, 1)))
            node[key] = [value] * times if not isinstance(value, dict) else {f"{k}{i}": v for i in range(times) for k, v in value.items()}
        case "known":
            if isinstance(node[key], dict):
                node[key][draw(KEYS)] = copy.deepcopy(draw(SMALL_JSON | WRONGS))
            else:
                node[key] = {draw(KEYS): draw(SMALL_JSON)}
    return body


@st.composite
def bodies(draw: st.DrawFn, case: Case) -> Any:
    """A body for `case`: a seed with up to four mutations."""
    body: Any = json.loads(draw(st.sampled_from(case.wire_seeds)))  # a fresh copy, faster than deepcopy
    for _ in range(draw(st.integers(0, 4))):
        body = draw(_mutation(case, body))
    return body


PATH_MODELS = st.sampled_from(MODELS) | st.text(max_size=12)


def path_models() -> st.SearchStrategy[str]:
    return PATH_MODELS
