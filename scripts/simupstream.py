#!/usr/bin/env python3
"""simupstream: the simulated upstream behind Switchyard's demo, tests and benchmark.

One HTTP/1.1 port (stdlib asyncio + h11, nothing else) impersonates every upstream the gateway
talks to: Google OAuth (`/token`, `/userinfo`), Cloud Code `<prefix>/v1internal:<method>`
(Antigravity), the Gemini API (`/v1beta/models...`), OpenAI chat completions and Anthropic
messages. It checks what it is sent as strictly as the real services do (a gateway bug should
fail here, not in production), answers deterministically so tests can assert, and misbehaves
on request, per account, model or endpoint.

Run:     python scripts/simupstream.py [--host 127.0.0.1] [--port 0] [--demo]
Import:  sim = SimUpstream(); url = sim.start(); sim.add_api_key("k", "gemini"); ...; sim.stop()

Control API (JSON, no auth); every route has a same-named method on SimUpstream:
  POST|GET /_sim/google-accounts   add_google_account(refresh_token, email, project, ...) / google_accounts()
  POST|GET /_sim/api-keys          add_api_key(key, kind, models) / api_keys()
  POST|GET|DELETE /_sim/behave     behave(action, match, times, **params) -> id / rules() / clear_rules()
  DELETE /_sim/behave/<id>         delete_rule(id)
  GET|DELETE /_sim/log             log(kind=None) / clear_log()
  GET|POST /_sim/settings          settings(**changes)  (chunk_delay, latency, events, client_id,
                                   client_secret, fragment, prefix_cache)
  POST /_sim/reset                 reset()
  POST /_sim/revoke  /_sim/expire  revoke(refresh_token) / expire(account)
  POST /_sim/auth-codes            add_auth_code(code, code_challenge, refresh_token, email, ...)
  POST /_sim/quota                 set_quota(account, model, remainingFraction, resetTime)
  GET /_sim/health

What the model says, in every dialect, from the last user turn: "echo: <text[:200]>" (with the
setting echo_last_part: of its last text part only);
"[[call NAME {json}]]" with a declared tool NAME -> a tool call; a tool-result turn ->
"tool result: <result>"; "[[think]]" (or thinking requested) -> a thought first; images ->
"image: <mime> <n> bytes". Tokens: ceil(chars / 4) + 1 (see estimate_tokens).
Thought signatures are checked as the real services do: Google's (v1internal and the Gemini API,
compared as bytes, so either base64 alphabet) and Anthropic's each accept only their own.

Rules (`behave`): checked in the order added, the first match with times left applies. Match
keys: account (refresh token, email or key), model, endpoint (path prefix), path (substring),
kind. Housekeeping calls (loadCodeAssist, fetchAvailableModels, model lists) match only rules
that name an endpoint or path, and OAuth calls only rules with kind "oauth", so a "429 for this
account" rule hits generation and nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import itertools
import json
import math
import re
import secrets
import signal
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

import h11

JSON = Any
MAX_BODY = 64 * 1024 * 1024
THINKING_TEXT = "thinking about it"
BYPASS_SIGNATURE = "skip_thought_signature_validator"
IMAGE_TOKENS = 258
CALL_RE = re.compile(r"\[\[call\s+([^\s\]{]+)\s*(\{.*\})?\s*\]\]", re.S)
V1INTERNAL_RE = re.compile(r"^(?P<prefix>.*)/v1internal:(?P<method>[A-Za-z]+)$")
GEMINI_PATH_RE = re.compile(r"^/v1(?:beta|alpha)?/models(?:/(?P<model>[^:/]+)(?::(?P<method>[A-Za-z]+))?)?$")
FUNC_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
DATA_URL_RE = re.compile(r"data:([^;,]+);base64,(.*)", re.S)
SNAKE_RE = re.compile(r"_([a-z0-9])")
GOOGLE_SCOPES = "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email"

DEFAULT_SETTINGS: dict[str, Any] = {
    "chunk_delay": 0.0,  # seconds between stream events
    "latency": 0.0,  # seconds before any upstream answer
    "events": 3,  # text chunks in a streamed answer
    "client_id": "sim-client-id",
    "client_secret": "sim-client-secret",
    "fragment": False,  # split every stream event over two writes (parsers must buffer)
    "prefix_cache": True,  # report cached tokens for a prompt prefix seen before
    "echo_last_part": False,  # echo only the last text part of the last user turn (real CLIs put
                              # context before the prompt in the same turn)
}

DEFAULT_GOOGLE_MODELS = (
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "gemini-3-pro-preview",
    "gemini-2.5-flash-lite",
    "claude-sonnet-4-5",
    "claude-opus-4-5-thinking",
)
DEFAULT_KEY_MODELS: dict[str, tuple[str, ...]] = {
    "gemini": ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite", "gemini-3-pro-preview"),
    "openai": ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o3-mini"),
    "anthropic": ("claude-sonnet-4-5", "claude-opus-4-5", "claude-haiku-4-5"),
}

# Accounts `--demo` registers; scripts/demo imports this to configure the gateway.
DEMO: dict[str, list[dict[str, Any]]] = {
    "google": [
        {"refresh_token": "sim-demo-refresh-1", "email": "demo1@example.com", "project": "demo-project-1"},
        {"refresh_token": "sim-demo-refresh-2", "email": "demo2@example.com", "project": None},
    ],
    "keys": [
        {"key": "gemini-demo-key-1", "kind": "gemini"},
        {"key": "sk-openai-demo-1", "kind": "openai"},
        {"key": "sk-ant-demo-1", "kind": "anthropic"},
    ],
}


# --------------------------------------------------------------------------- errors


class ErrSpec(NamedTuple):
    """How one HTTP status looks in each upstream's error dialect."""

    google: str
    message: str
    openai_type: str
    openai_code: str | None
    anthropic: str
    oauth: str


ERRORS: dict[int, ErrSpec] = {
    400: ErrSpec("INVALID_ARGUMENT", "Request contains an invalid argument.", "invalid_request_error", None,
                 "invalid_request_error", "invalid_request"),
    401: ErrSpec("UNAUTHENTICATED", "Request had invalid authentication credentials.", "invalid_request_error",
                 "invalid_api_key", "authentication_error", "invalid_client"),
    403: ErrSpec("PERMISSION_DENIED", "The caller does not have permission.", "invalid_request_error",
                 "permission_denied", "permission_error", "access_denied"),
    404: ErrSpec("NOT_FOUND", "Requested entity was not found.", "invalid_request_error", "model_not_found",
                 "not_found_error", "not_found"),
    413: ErrSpec("INVALID_ARGUMENT", "Request payload size exceeds the limit.", "invalid_request_error", None,
                 "request_too_large", "invalid_request"),
    429: ErrSpec("RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", "rate_limit_error",
                 "rate_limit_exceeded", "rate_limit_error", "rate_limit_exceeded"),
    500: ErrSpec("INTERNAL", "Internal error encountered.", "server_error", None, "api_error", "internal_failure"),
    503: ErrSpec("UNAVAILABLE", "The service is currently unavailable.", "server_error", None, "overloaded_error",
                 "temporarily_unavailable"),
    504: ErrSpec("DEADLINE_EXCEEDED", "Deadline expired before operation could complete.", "server_error", None,
                 "api_error", "temporarily_unavailable"),
    529: ErrSpec("UNAVAILABLE", "Overloaded", "server_error", None, "overloaded_error", "temporarily_unavailable"),
}
ERROR_DOMAIN = {"google": "cloudcode-pa.googleapis.com", "gemini": "googleapis.com"}
ACTIONS = {str(s) for s in ERRORS if s != 413} | {"stall", "drop", "garbage", "slow"}
MATCH_KEYS = {"account", "model", "endpoint", "path", "kind"}
RULE_PARAMS: dict[str, tuple[type, ...]] = {  # behave() parameters and the JSON types they take
    "reason": (str,), "message": (str,), "retry_delay": (str,), "retry_after": (int, float, str),
    "quota_reset_delay": (str,), "quota_reset_timestamp": (str,), "validation_url": (str,),
    "seconds": (int, float), "after_events": (int,), "chunk_delay": (int, float),
}
UNAUTHENTICATED_MSG = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other "
    "valid authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
)


class Fail(Exception):
    """A refusal the real upstream would send; rendered later in the caller's dialect."""

    def __init__(self, status: int, message: str | None = None, *, reason: str | None = None,
                 metadata: dict[str, str] | None = None, retry_delay: str | None = None,
                 retry_after: str | None = None, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.reason = status, message, reason
        self.metadata = metadata or {}
        self.retry_delay, self.retry_after, self.param, self.code = retry_delay, retry_after, param, code


def bad(message: str, **kw: Any) -> Fail:
    return Fail(400, message, **kw)


def error_body(kind: str, f: Fail) -> JSON:
    spec = ERRORS.get(f.status, ERRORS[500])
    msg = f.message or spec.message
    if kind == "openai":
        code = f.code or spec.openai_code
        return {"error": {"message": msg, "type": spec.openai_type, "param": f.param, "code": code}}
    if kind == "anthropic":
        return {"type": "error", "error": {"type": spec.anthropic, "message": msg}}
    if kind == "oauth":
        return {"error": f.code or spec.oauth, "error_description": msg}
    if kind in ("control", "unknown"):
        return {"error": msg}
    details: list[JSON] = []
    if f.reason:
        info: dict[str, Any] = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": f.reason,
                                "domain": ERROR_DOMAIN.get(kind, "googleapis.com")}
        if f.metadata:
            info["metadata"] = f.metadata
        details.append(info)
    if f.retry_delay:
        details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f.retry_delay})
    err: dict[str, Any] = {"code": f.status, "message": msg, "status": spec.google}
    if details:
        err["details"] = details
    return {"error": err}


# --------------------------------------------------------------------------- small helpers


def dumps(obj: JSON) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def estimate_tokens(text: str | int) -> int:
    """The sim's deterministic token count: ceil(chars / 4) + 1 (text or a char count)."""
    n = text if isinstance(text, int) else len(text)
    return math.ceil(n / 4) + 1


def split_text(text: str, n: int) -> list[str]:
    """`text` in at most n non-empty, nearly equal pieces (a stream's chunks)."""
    n = max(1, min(n, len(text)))
    size = math.ceil(len(text) / n) if text else 1
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def b64_bytes(data: Any) -> bytes | None:
    """Standard or URL-safe base64 (padding optional) decoded, None when invalid."""
    if not isinstance(data, str):
        return None
    if "=" not in data:
        data += "=" * (-len(data) % 4)
    try:
        alt = b"-_" if ("-" in data or "_" in data) else None
        return base64.b64decode(data, altchars=alt, validate=True)
    except ValueError:
        return None


def b64_size(data: Any) -> int | None:
    """Decoded size of standard or URL-safe base64 (padding optional), None when invalid."""
    decoded = b64_bytes(data)
    return None if decoded is None else len(decoded)


def signature_key(sig: str) -> bytes | str:
    """What identifies a signature: its bytes. Gemini's are protobuf bytes, so the SDKs may send
    them back in either base64 alphabet (google-genai re-encodes them URL-safe)."""
    decoded = b64_bytes(sig)
    return sig if decoded is None else decoded


def camel(key: str) -> str:
    return SNAKE_RE.sub(lambda m: m[1].upper(), key) if "_" in key else key


def known_fields(obj: Any, known: frozenset[str], where: str) -> dict[str, Any]:
    """`obj` with proto-JSON (snake or camel) keys as camelCase; unknown keys fail like Google."""
    if not isinstance(obj, dict):
        raise bad(f"Invalid value at '{where}': expected an object, got {json.dumps(obj)[:60]}")
    out = {}
    for k, v in obj.items():
        ck = camel(k)
        if ck not in known:
            at = f" at '{where}'" if where else ""
            raise bad(f'Invalid JSON payload received. Unknown name "{k}"{at}: Cannot find field.')
        out[ck] = v
    return out


def iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(s: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(s).replace("Z", "+00:00"))
    except ValueError:
        return None


def duration(seconds: float) -> str:
    """Google's quotaResetDelay style: 2h1m1s."""
    s = max(0, int(seconds))
    h, m, s = s // 3600, s % 3600 // 60, s % 60
    return (f"{h}h" if h else "") + (f"{m}m" if h or m else "") + f"{s}s"


def thinking_model(model: str) -> bool:
    return model.startswith(("gemini-2.5", "gemini-3")) or "thinking" in model


def validates_signatures(model: str) -> bool:
    return model.startswith("gemini-3") or "thinking" in model


def mask(key: str) -> str:
    return key[:8] + "…"


# --------------------------------------------------------------------------- HTTP plumbing types


@dataclass(slots=True)
class Req:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json_object(self) -> dict[str, Any]:
        try:
            obj = json.loads(self.body or b"null")
        except (ValueError, UnicodeDecodeError) as e:
            raise bad(f"Invalid JSON payload received. {e}") from None
        if not isinstance(obj, dict):
            raise bad("Invalid JSON payload received. The body must be a JSON object.")
        return obj

    def bearer(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return (auth[7:].strip() or None) if auth[:7].lower() == "bearer " else None


@dataclass(slots=True)
class Reply:
    """What to send; the async writer applies the timing fields."""

    status: int
    body: bytes = b""
    ctype: str = "application/json; charset=UTF-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    events: list[bytes] | None = None  # a streamed body, one chunk per event
    latency: float = 0.0
    chunk_delay: float | None = None
    stall: float | None = None  # hold this long before answering (inf: until the client leaves)
    drop_after: int | None = None  # close abruptly after this many events (0: before any byte)


def json_reply(obj: JSON, status: int = 200) -> Reply:
    return Reply(status, dumps(obj))


def sse_reply(events: list[bytes]) -> Reply:
    return Reply(200, ctype="text/event-stream; charset=utf-8", events=events)


# --------------------------------------------------------------------------- state types


class Who(NamedTuple):
    label: str  # what the log shows: an email, or a key's first 8 chars
    ids: frozenset[str]  # what a rule's "account" may name


@dataclass(slots=True)
class GoogleAccount:
    refresh_token: str
    email: str
    project: str
    access_token_ttl: int
    models: dict[str, dict[str, Any]]
    refresh_count: int = 0
    revoked: bool = False

    @property
    def who(self) -> Who:
        return Who(self.email, frozenset((self.email, self.refresh_token)))


@dataclass(slots=True)
class ApiKey:
    key: str
    kind: str
    models: list[str]

    @property
    def who(self) -> Who:
        return Who(mask(self.key), frozenset((self.key,)))

    def knows(self, model: str | None) -> bool:
        return model is not None and any(fnmatchcase(model, p) for p in self.models)

    def listed(self) -> list[str]:
        return [m for m in self.models if not any(c in m for c in "*?[")]


@dataclass(slots=True)
class Rule:
    id: int
    match: dict[str, str]
    action: str
    times: int | None
    params: dict[str, Any]
    hits: int = 0

    def matches(self, ctx: Ctx) -> bool:
        m = self.match
        if m.get("kind", ctx.kind) != ctx.kind or (ctx.kind == "oauth" and "kind" not in m):
            return False
        if ctx.meta and "endpoint" not in m and "path" not in m:
            return False
        if "account" in m and (ctx.who is None or m["account"] not in ctx.who.ids):
            return False
        if "model" in m and m["model"] != ctx.model:
            return False
        if "endpoint" in m and not ctx.path.startswith(m["endpoint"]):
            return False
        return "path" not in m or m["path"] in ctx.path

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "match": self.match, "action": self.action, "times": self.times,
                "hits": self.hits, "params": self.params}


@dataclass(slots=True)
class Ctx:
    """One request as the log and the rules see it."""

    kind: str
    path: str
    who: Who | None = None
    model: str | None = None
    stream: bool = False
    meta: bool = False  # housekeeping, not generation
    action: str | None = None


@dataclass(slots=True)
class Conv:
    """What the sim needs from any dialect's request to answer it."""

    texts: list[str] = field(default_factory=list)  # the last user turn's text
    images: list[str] = field(default_factory=list)  # "<mime> <n> bytes" per image of that turn
    results: list[str] | None = None  # tool results, when that turn answers tool calls
    tools: set[str] = field(default_factory=set)
    thinking: bool = False
    chars: int = 0  # all prompt text, for the token estimate
    image_count: int = 0
    turns: list[tuple[JSON, int]] = field(default_factory=list)  # (raw turn, its chars): prefix cache

    def add_turn(self, raw: JSON, chars: int) -> None:
        self.turns.append((raw, chars))
        self.chars += chars


@dataclass(slots=True)
class Answer:
    text: str | None
    call: tuple[str, dict[str, Any]] | None
    thought: str | None
    prompt: int
    cached: int
    output: int
    thoughts: int


# --------------------------------------------------------------------------- Gemini validation

PART_DATA = ("text", "inlineData", "functionCall", "functionResponse", "fileData", "executableCode",
             "codeExecutionResult")
PART_FIELDS = frozenset(PART_DATA + ("thought", "thoughtSignature", "videoMetadata", "partMetadata",
                                     "mediaResolution"))
CONTENT_FIELDS = frozenset(("role", "parts"))
REQUEST_FIELDS = frozenset(("contents", "systemInstruction", "tools", "toolConfig", "safetySettings",
                            "generationConfig", "cachedContent", "labels", "sessionId", "model"))
GEN_FIELDS = frozenset((
    "temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences", "presencePenalty",
    "frequencyPenalty", "responseMimeType", "responseSchema", "responseJsonSchema", "seed", "responseLogprobs",
    "logprobs", "thinkingConfig", "responseModalities", "speechConfig", "mediaResolution", "imageConfig",
    "enableEnhancedCivicAnswers", "routingConfig", "audioTimestamp"))
THINKING_FIELDS = frozenset(("includeThoughts", "thinkingBudget", "thinkingLevel"))
TOOL_FIELDS = frozenset(("functionDeclarations", "googleSearch", "googleSearchRetrieval", "codeExecution",
                         "urlContext", "retrieval", "computerUse", "fileSearch", "googleMaps",
                         "enterpriseWebSearch"))
FUNC_FIELDS = frozenset(("name", "description", "parameters", "parametersJsonSchema", "response",
                         "responseJsonSchema", "behavior"))
SCHEMA_FIELDS = frozenset(("type", "format", "title", "description", "nullable", "enum", "maxItems",
                           "minItems", "properties", "required", "minProperties", "maxProperties", "minLength",
                           "maxLength", "pattern", "example", "anyOf", "propertyOrdering", "default", "items",
                           "minimum", "maximum"))
SCHEMA_TYPES = frozenset(("TYPE_UNSPECIFIED", "STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT",
                          "NULL"))
PART_SUBFIELDS: dict[str, frozenset[str]] = {
    "inlineData": frozenset(("mimeType", "data", "displayName")),
    "fileData": frozenset(("mimeType", "fileUri", "displayName")),
    "functionCall": frozenset(("name", "args", "id", "partialArgs", "willContinue")),
    "functionResponse": frozenset(("name", "response", "id", "willContinue", "scheduling", "parts")),
}


def check_schema(schema: Any, where: str) -> None:
    """Gemini's `parameters` is an OpenAPI subset: JSON-Schema extras ($schema,
    additionalProperties, const, type lists) are rejected, as the real API does."""
    s = known_fields(schema, SCHEMA_FIELDS, where)
    t = s.get("type")
    if t is not None and (not isinstance(t, str) or t.upper() not in SCHEMA_TYPES):
        raise bad(f"Invalid value at '{where}.type' (type.googleapis.com/google.ai.generativelanguage.v1beta.Type),"
                  f" {json.dumps(t)}")
    props = s.get("properties", {})
    if not isinstance(props, dict):
        raise bad(f"Invalid value at '{where}.properties': expected an object")
    for name, sub in props.items():
        check_schema(sub, f"{where}.properties[{name}].value")
    if "items" in s:
        check_schema(s["items"], f"{where}.items")
    for i, sub in enumerate(s.get("anyOf") or []):
        check_schema(sub, f"{where}.any_of[{i}]")


def gemini_tools(tools: Any, where: str) -> set[str]:
    if tools is None:
        return set()
    if not isinstance(tools, list):
        raise bad(f"Invalid value at '{where}': expected a list")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        tw = f"{where}[{i}]"
        decls = known_fields(tool, TOOL_FIELDS, tw).get("functionDeclarations") or []
        for j, decl in enumerate(decls):
            fw = f"{tw}.function_declarations[{j}]"
            fd = known_fields(decl, FUNC_FIELDS, fw)
            name = fd.get("name")
            if not isinstance(name, str) or not FUNC_NAME_RE.fullmatch(name):
                raise bad(f"* GenerateContentRequest.{fw}.name: Invalid function name. Must start with a letter or an"
                          " underscore. Must be a-z, A-Z, 0-9, or contains underscores, dots, colons and dashes,"
                          " with a maximum length of 64.")
            if "parameters" in fd and "parametersJsonSchema" in fd:
                raise bad(f"* GenerateContentRequest.{fw}: parameters and parameters_json_schema cannot both be set.")
            for key in ("parameters", "response"):
                if key in fd:
                    check_schema(fd[key], f"{fw}.{key}")
            names.add(name)
    return names


def gemini_part(part: Any, where: str) -> tuple[str, dict[str, Any], int]:
    """Validates one part; returns (its data field, the part camelCased, its text chars)."""
    p = known_fields(part, PART_FIELDS, where)
    data = [k for k in p if k in PART_DATA]
    if not data:
        raise bad(f"* GenerateContentRequest.{where}.data: required oneof field 'data' must have one initialized field")
    if len(data) > 1:
        raise bad(f"Invalid value at '{where}': oneof field 'data' is already set. Cannot set '{data[1]}'")
    kind = data[0]
    sig = p.get("thoughtSignature")
    if sig is not None and b64_size(sig) is None:
        raise bad(f"Invalid value at '{where}.thought_signature' (TYPE_BYTES), Base64 decoding failed for"
                  f" {json.dumps(sig)[:40]}")
    value = p[kind]
    if kind == "text":
        if not isinstance(value, str):
            raise bad(f"Invalid value at '{where}.text' (TYPE_STRING), {json.dumps(value)[:40]}")
        return kind, p, len(value)
    allowed = PART_SUBFIELDS.get(kind)
    if allowed is None:  # executableCode & co: shape not checked, but it must be an object
        allowed = frozenset(value) if isinstance(value, dict) else frozenset()
    sub = p[kind] = known_fields(value, allowed, f"{where}.{kind}")
    if kind == "inlineData":
        if not isinstance(sub.get("mimeType"), str) or "data" not in sub:
            raise bad(f"* GenerateContentRequest.{where}.inline_data: mime_type and data are required")
        if b64_size(sub["data"]) is None:
            raise bad(f"Invalid value at '{where}.inline_data.data' (TYPE_BYTES), Base64 decoding failed for"
                      f" {json.dumps(str(sub['data'])[:20])}")
        return kind, p, 0
    if kind in ("functionCall", "functionResponse"):
        if not isinstance(sub.get("name"), str) or not sub["name"]:
            raise bad(f"* GenerateContentRequest.{where}.{kind}.name: Name is required.")
        payload = "args" if kind == "functionCall" else "response"
        if payload in sub and not isinstance(sub[payload], dict):
            raise bad(f"Invalid value at '{where}.{kind}.{payload}' (type.googleapis.com/google.protobuf.Struct),"
                      f" {json.dumps(sub[payload])[:40]}")
        if kind == "functionResponse" and payload not in sub:
            raise bad(f"* GenerateContentRequest.{where}.function_response.response: Response is required.")
        return kind, p, len(sub["name"]) + len(dumps(sub.get(payload, {})))
    if kind == "fileData" and not isinstance(sub.get("fileUri"), str):
        raise bad(f"* GenerateContentRequest.{where}.file_data.file_uri: File uri is required.")
    return kind, p, 0


def gemini_conversation(body: Any, where: str = "") -> tuple[Conv, list[tuple[str, list[dict[str, Any]]]]]:
    """Validates a GenerateContentRequest as the real API does; returns what to answer from and
    the normalized (role, parts) turns for the signature check."""
    at = f"{where}." if where else ""
    req = known_fields(body, REQUEST_FIELDS, where)
    conv = Conv(tools=gemini_tools(req.get("tools"), f"{at}tools"))
    gen = known_fields(req.get("generationConfig") or {}, GEN_FIELDS, f"{at}generation_config")
    think = known_fields(gen.get("thinkingConfig") or {}, THINKING_FIELDS, f"{at}generation_config.thinking_config")
    conv.thinking = think.get("includeThoughts") is True
    if (si := req.get("systemInstruction")) is not None:
        sw = f"{at}system_instruction"
        sys_parts = known_fields(si, CONTENT_FIELDS, sw).get("parts")
        if not isinstance(sys_parts, list):
            raise bad(f"* GenerateContentRequest.{sw}.parts: parts must be a list")
        conv.add_turn(si, sum(gemini_part(p, f"{sw}.parts[{j}]")[2] for j, p in enumerate(sys_parts)))
    contents = req.get("contents")
    if not isinstance(contents, list) or not contents:
        raise bad("* GenerateContentRequest.contents: contents is not specified")
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    prev_role, prev_calls = "", []
    for i, raw in enumerate(contents):
        cw = f"{at}contents[{i}]"
        content = known_fields(raw, CONTENT_FIELDS, cw)
        role = content.get("role") or "user"
        if role not in ("user", "model"):
            raise bad(f"Please use a valid role: user, model. (got {json.dumps(role)} at {cw}.role)")
        if i == 0 and role != "user":
            raise bad("Please ensure that multiturn requests start with a user turn. (contents[0] has role 'model')")
        if role == prev_role:
            raise bad(f"Please ensure that multiturn requests alternate between user and model. ({cw} repeats role"
                      f" '{role}')")
        raw_parts = content.get("parts")
        if not isinstance(raw_parts, list) or not raw_parts:
            raise bad(f"* GenerateContentRequest.{cw}.parts: contents.parts must not be empty.")
        parts, calls, responses, chars = [], [], [], 0
        for j, rp in enumerate(raw_parts):
            kind, p, n = gemini_part(rp, f"{cw}.parts[{j}]")
            parts.append(p)
            chars += n
            if kind == "functionCall":
                calls.append(p[kind]["name"])
            elif kind == "functionResponse":
                responses.append(p[kind]["name"])
            elif kind == "inlineData":
                conv.image_count += 1
        if calls and role != "model":
            raise bad(f"Please ensure that function call parts are in model turns ({cw} is a user turn).")
        if responses:
            if role != "user":
                raise bad(f"Please ensure that function response parts are in user turns ({cw} is a model turn).")
            if not prev_calls:
                raise bad("Please ensure that function response turn comes immediately after a function call turn."
                          f" ({cw})")
            unknown = [n for n in responses if n not in prev_calls]
            if unknown:
                raise bad(f"Function response {unknown[0]!r} at {cw} answers no function call of the previous turn"
                          f" (calls: {', '.join(prev_calls)}).")
            if len(responses) != len(prev_calls):
                raise bad("Please ensure that the number of function response parts is equal to the number of function"
                          f" call parts of the function call turn. ({cw}: {len(responses)} responses, "
                          f"{len(prev_calls)} calls)")
        conv.add_turn(raw, chars)
        turns.append((role, parts))
        prev_role, prev_calls = role, calls
    last_user = next(parts for role, parts in reversed(turns) if role == "user")
    gemini_last_turn(conv, last_user)
    return conv, turns


def gemini_last_turn(conv: Conv, parts: list[dict[str, Any]]) -> None:
    for p in parts:
        if "text" in p and not p.get("thought"):
            conv.texts.append(p["text"])
        elif "inlineData" in p:
            conv.images.append(f"{p['inlineData']['mimeType']} {b64_size(p['inlineData']['data'])} bytes")
        elif "functionResponse" in p:
            conv.results = (conv.results or []) + [dumps(p["functionResponse"].get("response", {})).decode()]


# --------------------------------------------------------------------------- OpenAI validation

OPENAI_ROLES = ("system", "developer", "user", "assistant", "tool", "function")


def openai_content(content: Any, where: str, conv: Conv, last: bool) -> int:
    """Chars of a message's content; counts images, and collects the last user turn's text."""
    if content is None:
        return 0
    if isinstance(content, str):
        if last:
            conv.texts.append(content)
        return len(content)
    if not isinstance(content, list):
        raise bad(f"Invalid type for '{where}': expected a string or an array of content parts.", param=where)
    chars = 0
    for j, part in enumerate(content):
        pw = f"{where}[{j}]"
        ptype = part.get("type") if isinstance(part, dict) else None
        if ptype == "text" and isinstance(part.get("text"), str):
            chars += len(part["text"])
            if last:
                conv.texts.append(part["text"])
        elif ptype == "image_url" and isinstance(part.get("image_url"), dict):
            url = part["image_url"].get("url", "")
            if m := DATA_URL_RE.fullmatch(url):
                size = b64_size(m[2])
                if size is None:
                    raise bad(f"Invalid image data in '{pw}.image_url.url': not valid base64.", param=pw)
                desc = f"{m[1]} {size} bytes"
            elif isinstance(url, str) and url.startswith(("http://", "https://")):
                desc = "remote url"
            else:
                raise bad(f"Invalid 'image_url' in '{pw}': expected a URL or a base64 data URL.", param=pw)
            conv.image_count += 1
            if last:
                conv.images.append(desc)
        elif ptype in ("input_audio", "file", "refusal"):
            continue
        else:
            raise bad(f"Invalid content part at '{pw}': type must be one of 'text', 'image_url', 'input_audio',"
                      " 'file'.", param=pw)
    return chars


def openai_conversation(body: dict[str, Any]) -> Conv:
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        empty = isinstance(msgs, list)
        raise bad("[] is too short - 'messages'" if empty else "Missing required parameter: 'messages'.",
                  param="messages")
    conv = Conv()
    tools = body.get("tools") or []
    for i, t in enumerate(tools if isinstance(tools, list) else []):
        fn = t.get("function") if isinstance(t, dict) else None
        if t.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise bad(f"Invalid value for 'tools[{i}]': expected a function tool with a name.", param=f"tools[{i}]")
        conv.tools.add(fn["name"])
    last_user = max((i for i, m in enumerate(msgs) if isinstance(m, dict) and m.get("role") == "user"), default=-1)
    pending: set[str] = set()
    for i, m in enumerate(msgs):
        mw = f"messages[{i}]"
        role = m.get("role") if isinstance(m, dict) else None
        if role not in OPENAI_ROLES:
            raise bad(f"Invalid value: {json.dumps(role)}. Supported values are: 'system', 'assistant', 'user',"
                      " 'function', 'tool', and 'developer'.", param=f"{mw}.role")
        if role == "tool":
            tid = m.get("tool_call_id")
            if tid not in pending:
                raise bad("Invalid parameter: messages with role 'tool' must be a response to a preceeding message with"
                          f" 'tool_calls'. ({mw}.tool_call_id={json.dumps(tid)})", param=f"{mw}.role")
            pending.discard(tid)
            chars = openai_content(m.get("content"), f"{mw}.content", conv, False)
            if i > last_user:
                content = m.get("content")
                text = content if isinstance(content, str) else " ".join(
                    p.get("text", "") for p in content or [] if isinstance(p, dict))
                conv.results = (conv.results or []) + [text]
            conv.add_turn(m, chars)
            continue
        if pending:
            raise bad("An assistant message with 'tool_calls' must be followed by tool messages responding to each"
                      f" 'tool_call_id'. The following tool_call_ids did not have response messages:"
                      f" {', '.join(sorted(pending))}", param=f"{mw}.role")
        if role in ("user", "system", "developer") and m.get("content") is None:
            raise bad(f"Missing required parameter: '{mw}.content'.", param=f"{mw}.content")
        chars = openai_content(m.get("content"), f"{mw}.content", conv, i == last_user)
        if role == "assistant":
            calls = m.get("tool_calls") or []
            if m.get("content") is None and not calls:
                raise bad(f"Invalid value for '{mw}.content': expected content or tool_calls.", param=f"{mw}.content")
            for j, c in enumerate(calls):
                fn = c.get("function") if isinstance(c, dict) else None
                if (not isinstance(c.get("id"), str) or c.get("type") != "function" or not isinstance(fn, dict)
                        or not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments"), str)):
                    raise bad(f"Invalid value for '{mw}.tool_calls[{j}]': expected id, type 'function' and"
                              " function.name / function.arguments (a string).", param=f"{mw}.tool_calls[{j}]")
                pending.add(c["id"])
                chars += len(fn["name"]) + len(fn["arguments"])
        conv.add_turn(m, chars)
    if pending:
        raise bad("An assistant message with 'tool_calls' must be followed by tool messages responding to each"
                  f" 'tool_call_id'. The following tool_call_ids did not have response messages:"
                  f" {', '.join(sorted(pending))}", param="messages")
    return conv


# --------------------------------------------------------------------------- Anthropic validation

ANTHROPIC_BLOCKS = ("text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking",
                    "server_tool_use", "web_search_tool_result", "search_result", "container_upload")
ANTHROPIC_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def anthropic_text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text")
    return ""


class AnthropicTurn(NamedTuple):
    index: int  # position in `messages`
    role: str
    blocks: list[dict[str, Any]]


def block_chars(b: dict[str, Any]) -> int:
    """Prompt text of one content block, for the token estimate."""
    t = b["type"]
    if t == "text":
        return len(b["text"])
    if t == "tool_use":
        return len(b["name"]) + len(dumps(b["input"]))
    if t == "thinking":
        return len(b.get("thinking", ""))
    if t == "tool_result":
        return len(anthropic_text_of(b.get("content", "")))
    return 0


def anthropic_blocks(msg: dict[str, Any], where: str, final: bool) -> list[dict[str, Any]]:
    content = msg.get("content")
    if isinstance(content, str):
        if not content and not (final and msg["role"] == "assistant"):
            raise bad(f"{where}: all messages must have non-empty content except for the optional final assistant"
                      " message")
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise bad(f"{where}.content: Input should be a valid list")
    if not content and not (final and msg["role"] == "assistant"):
        raise bad(f"{where}: all messages must have non-empty content except for the optional final assistant message")
    for j, b in enumerate(content):
        bw = f"{where}.content.{j}"
        btype = b.get("type") if isinstance(b, dict) else None
        if btype not in ANTHROPIC_BLOCKS:
            raise bad(f"{bw}: Input tag {json.dumps(btype)} found using 'type' does not match any of the expected"
                      f" tags: {', '.join(repr(t) for t in ANTHROPIC_BLOCKS)}")
        if btype == "text" and (not isinstance(b.get("text"), str) or not b["text"]):
            raise bad("messages: text content blocks must be non-empty" if isinstance(b.get("text"), str)
                      else f"{bw}.text: Field required")
        if btype == "tool_use" and (not isinstance(b.get("id"), str) or not isinstance(b.get("name"), str)
                                    or not isinstance(b.get("input"), dict)):
            raise bad(f"{bw}: tool_use blocks need a string id, a name and an object input")
        if btype == "tool_result" and not isinstance(b.get("tool_use_id"), str):
            raise bad(f"{bw}.tool_use_id: Field required")
        if btype == "thinking" and not isinstance(b.get("signature"), str):
            raise bad(f"{bw}.thinking.signature: Field required")
        if btype == "image":
            src = b.get("source") if isinstance(b.get("source"), dict) else {}
            if src.get("type") == "base64":
                if src.get("media_type") not in ANTHROPIC_IMAGE_TYPES:
                    raise bad(f"{bw}.source.media_type: Input should be {', '.join(ANTHROPIC_IMAGE_TYPES)}")
                if b64_size(src.get("data")) is None:
                    raise bad(f"{bw}.source.data: The image data is not valid base64.")
            elif src.get("type") != "url":
                raise bad(f"{bw}.source: Input tag {json.dumps(src.get('type'))} does not match 'base64', 'url'")
        role_only = {"tool_use": "assistant", "thinking": "assistant", "redacted_thinking": "assistant",
                     "tool_result": "user", "image": "user"}.get(btype)
        if role_only and role_only != msg["role"]:
            raise bad(f"{bw}: `{btype}` blocks are only allowed in `{role_only}` messages")
    return content


def anthropic_conversation(body: dict[str, Any], signatures: dict[bytes | str, None], beta: str,
                           need_max_tokens: bool = True) -> Conv:
    if not isinstance(body.get("model"), str):
        raise bad("model: Field required")
    if need_max_tokens and not isinstance(body.get("max_tokens"), int):
        raise bad("max_tokens: Field required")
    thinking = body.get("thinking") or {}
    ttype = thinking.get("type") if isinstance(thinking, dict) else None
    if ttype not in (None, "enabled", "disabled", "adaptive"):
        raise bad("thinking.type: Input tag does not match 'enabled', 'disabled', 'adaptive'")
    if ttype == "enabled":
        budget = thinking.get("budget_tokens")
        if not isinstance(budget, int) or budget < 1024:
            raise bad("thinking.enabled.budget_tokens: Input should be greater than or equal to 1024")
        if need_max_tokens and body["max_tokens"] <= budget:
            raise bad("`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation at"
                      " https://docs.claude.com/en/docs/build-with-claude/extended-thinking#max-tokens-and-context-"
                      "window-size")
    conv = Conv(thinking=ttype in ("enabled", "adaptive"))
    for i, t in enumerate(body.get("tools") or []):
        if not isinstance(t, dict) or not isinstance(t.get("name"), str):
            raise bad(f"tools.{i}.name: Field required")
        if "type" not in t or t.get("type") == "custom":
            if not isinstance(t.get("input_schema"), dict):
                raise bad(f"tools.{i}.custom.input_schema: Field required")
            if not re.fullmatch(r"[a-zA-Z0-9_-]{1,128}", t["name"]):
                raise bad(f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'")
        conv.tools.add(t["name"])
    system = body.get("system")
    if system is not None:
        conv.add_turn(system, len(anthropic_text_of(system)))
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise bad("messages: Field required" if msgs is None else "messages: at least one message is required")
    turns: list[AnthropicTurn] = []
    for i, m in enumerate(msgs):
        mw = f"messages.{i}"
        role = m.get("role") if isinstance(m, dict) else None
        if role == "system" and "mid-conversation-system" in beta:
            conv.add_turn(m, len(anthropic_text_of(m.get("content"))))
            continue
        if role not in ("user", "assistant"):
            raise bad(f"{mw}.role: Input should be 'user' or 'assistant'")
        if not turns and role != "user":
            raise bad('messages: first message must use the "user" role')
        if turns and turns[-1].role == role:
            raise bad(f'messages: roles must alternate between "user" and "assistant", but found multiple "{role}"'
                      f" roles in a row (at {mw})")
        blocks = anthropic_blocks(m, mw, i == len(msgs) - 1)
        anthropic_pairing(turns, blocks, role, mw, signatures)
        turns.append(AnthropicTurn(i, role, blocks))
        conv.add_turn(m, sum(block_chars(b) for b in blocks))
        conv.image_count += sum(1 for b in blocks if b["type"] == "image")
    if turns and turns[-1].role == "assistant" and any(b["type"] == "tool_use" for b in turns[-1].blocks):
        ids = [b["id"] for b in turns[-1].blocks if b["type"] == "tool_use"]
        raise bad(f"messages.{len(msgs) - 1}: `tool_use` ids were found without `tool_result` blocks immediately after:"
                  f" {', '.join(ids)}. Each `tool_use` block must have a corresponding `tool_result` block in the"
                  " next message.")
    if conv.thinking:
        anthropic_thinking_rule(turns)
    anthropic_last_turn(conv, next(t.blocks for t in reversed(turns) if t.role == "user"))
    return conv


def anthropic_pairing(turns: list[AnthropicTurn], blocks: list[dict[str, Any]], role: str, where: str,
                      signatures: dict[bytes | str, None]) -> None:
    """tool_use/tool_result pairing between neighbours and thinking signatures, as the real API checks."""
    prev = turns[-1] if turns else None
    uses = [b["id"] for b in prev.blocks if b["type"] == "tool_use"] if prev else []
    results = [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"]
    if role == "user":
        stray = [r for r in results if r not in uses]
        if stray:
            raise bad(f"{where}.content.0: unexpected `tool_use_id` found in `tool_result` blocks: {', '.join(stray)}."
                      " Each `tool_result` block must have a corresponding `tool_use` block in the previous message.")
        missing = [u for u in uses if u not in results]
        if missing:
            raise bad(f"messages.{prev.index}: `tool_use` ids were found without `tool_result` blocks"
                      f" immediately after: {', '.join(missing)}. Each `tool_use` block must have a corresponding"
                      " `tool_result` block in the next message.")
    for j, b in enumerate(blocks):
        if b["type"] == "thinking" and signature_key(b["signature"]) not in signatures:
            raise bad(f"{where}.content.{j}: Invalid `signature` in `thinking` block")


def anthropic_thinking_rule(turns: list[AnthropicTurn]) -> None:
    """With thinking on, the assistant turn of an open tool loop must start with a thinking block."""
    if len(turns) < 2 or turns[-1].role != "user" or not any(b["type"] == "tool_result" for b in turns[-1].blocks):
        return
    first = turns[-2].blocks[0]["type"] if turns[-2].blocks else "none"
    if first not in ("thinking", "redacted_thinking"):
        raise bad(f"messages.{turns[-2].index}.content.0.type: Expected `thinking` or `redacted_thinking`, but found"
                  f" `{first}`. When `thinking` is enabled, a final `assistant` message must start with a thinking"
                  " block (preceeding the lastmost set of `tool_use` and `tool_result` blocks). We recommend you"
                  " include thinking blocks from previous turns. To avoid this requirement, disable `thinking`.")


def anthropic_last_turn(conv: Conv, blocks: list[dict[str, Any]]) -> None:
    for b in blocks:
        if b["type"] == "text":
            conv.texts.append(b["text"])
        elif b["type"] == "image":
            src = b["source"]
            conv.images.append(f"{src['media_type']} {b64_size(src['data'])} bytes" if src["type"] == "base64"
                               else "remote url")
        elif b["type"] == "tool_result":
            c = b.get("content", "")
            conv.results = (conv.results or []) + [c if isinstance(c, str) else anthropic_text_of(c)]


# --------------------------------------------------------------------------- the simulator


class SimState:
    """Accounts, rules, log and every request handler; no I/O, so it is easy to test and reason
    about. All state changes happen under one lock: handlers run on the server's loop thread
    while tests call the control methods from theirs."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.reset()

    # ----------------------------------------------------------------- control operations

    def reset(self) -> None:
        """Forget accounts, keys, rules, tokens, codes, signatures, the log; default settings."""
        with self._lock:
            self._google: dict[str, GoogleAccount] = {}  # by refresh token
            self._keys: dict[str, ApiKey] = {}
            self._tokens: dict[str, tuple[GoogleAccount, float]] = {}  # access token -> (account, expiry)
            self._codes: dict[str, dict[str, Any]] = {}
            self._rules: list[Rule] = []
            self._log: deque[dict[str, Any]] = deque(maxlen=100_000)
            self._settings = dict(DEFAULT_SETTINGS)
            # Issued thought signatures by issuer, each an ordered set: Google refuses Anthropic's
            # signatures and Anthropic Google's, as the real services do.
            self._signatures: dict[str, dict[bytes | str, None]] = {"google": {}, "anthropic": {}}
            self._prefixes: set[bytes] = set()
            self._ids = itertools.count(1)

    def add_google_account(self, refresh_token: str, email: str | None = None, project: str | None = None,
                           access_token_ttl: int = 3600,
                           models: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
        """Registers a Google OAuth account; a null project gets a generated one."""
        if not isinstance(refresh_token, str) or not refresh_token:
            raise ValueError("refresh_token must be a non-empty string")
        with self._lock:
            n = next(self._ids)
            reset = iso(datetime.now(UTC) + timedelta(hours=5))
            quota = {m: {"remainingFraction": 1.0, "resetTime": reset} for m in DEFAULT_GOOGLE_MODELS}
            if models is not None:
                quota = {m: {"remainingFraction": float(q.get("remainingFraction", 1.0)),
                             "resetTime": q.get("resetTime", reset)} for m, q in models.items()}
            acct = GoogleAccount(refresh_token, email or f"user{n}@example.com", project or f"sim-project-{n}",
                                 int(access_token_ttl), quota)
            self._google[refresh_token] = acct
            return self._google_public(acct)

    def add_api_key(self, key: str, kind: str, models: list[str] | None = None) -> dict[str, Any]:
        """Registers a Gemini, OpenAI or Anthropic key; models may use * globs."""
        if kind not in DEFAULT_KEY_MODELS:
            raise ValueError(f"kind must be one of {', '.join(DEFAULT_KEY_MODELS)}")
        if not isinstance(key, str) or not key:
            raise ValueError("key must be a non-empty string")
        with self._lock:
            self._keys[key] = ApiKey(key, kind, list(models or DEFAULT_KEY_MODELS[kind]))
            return {"label": mask(key), "kind": kind, "models": self._keys[key].models}

    def google_accounts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._google_public(a) for a in self._google.values()]

    def api_keys(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"label": mask(k.key), "kind": k.kind, "models": k.models} for k in self._keys.values()]

    def _google_public(self, a: GoogleAccount) -> dict[str, Any]:
        live = sum(1 for acct, exp in self._tokens.values() if acct is a and exp > time.time())
        return {"email": a.email, "project": a.project, "access_token_ttl": a.access_token_ttl,
                "refresh_count": a.refresh_count, "revoked": a.revoked, "live_tokens": live, "models": a.models}

    def behave(self, action: str, match: dict[str, str] | None = None, times: int | None = None,
               **params: Any) -> int:
        """Adds a misbehaviour rule; returns its id."""
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; one of {', '.join(sorted(ACTIONS))}")
        match = dict(match or {})
        if unknown := set(match) - MATCH_KEYS:
            raise ValueError(f"unknown match keys {sorted(unknown)}; allowed {sorted(MATCH_KEYS)}")
        if times is not None and (not isinstance(times, int) or times < 1):
            raise ValueError("times must be a positive integer or null")
        for name, value in params.items():
            if name not in RULE_PARAMS:
                raise ValueError(f"unknown parameter {name!r}; allowed {sorted(RULE_PARAMS)}")
            if value is not None and (not isinstance(value, RULE_PARAMS[name]) or isinstance(value, bool)):
                raise ValueError(f"parameter {name!r} has the wrong type")
        with self._lock:
            rule = Rule(next(self._ids), match, action, times, params)
            self._rules.append(rule)
            return rule.id

    def rules(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.public() for r in self._rules]

    def clear_rules(self) -> None:
        with self._lock:
            self._rules.clear()

    def delete_rule(self, rule_id: int) -> None:
        with self._lock:
            self._rules = [r for r in self._rules if r.id != int(rule_id)]

    def log(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._log if kind is None or e["kind"] == kind]

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def settings(self, **changes: Any) -> dict[str, Any]:
        """Changes global settings (validated against the defaults' types); returns them all."""
        with self._lock:
            for k, v in changes.items():
                if k not in DEFAULT_SETTINGS:
                    raise ValueError(f"unknown setting {k!r}; one of {', '.join(DEFAULT_SETTINGS)}")
                want = type(DEFAULT_SETTINGS[k])
                if want is float and isinstance(v, int) and not isinstance(v, bool):
                    v = float(v)
                if not isinstance(v, want) or (want in (int, float) and v < (1 if k == "events" else 0)):
                    raise ValueError(f"setting {k!r} needs a valid {want.__name__}")
            self._settings.update(changes)
            return dict(self._settings)

    def revoke(self, refresh_token: str) -> None:
        """From now on this refresh token gets invalid_grant, and its access tokens die."""
        with self._lock:
            acct = self._google.get(refresh_token)
            if acct is None:
                raise ValueError("unknown refresh token")
            acct.revoked = True
            self._drop_tokens(acct)

    def expire(self, account: str) -> None:
        """Kills every live access token of an account (email or refresh token)."""
        with self._lock:
            self._drop_tokens(self._find_google(account))

    def add_auth_code(self, code: str, code_challenge: str, refresh_token: str, email: str | None = None,
                      project: str | None = None, redirect_uri: str | None = None) -> None:
        """Pre-registers a PKCE (S256) authorization code for the authorization_code grant."""
        with self._lock:
            self._codes[code] = {"challenge": code_challenge, "refresh_token": refresh_token, "email": email,
                                 "project": project, "redirect_uri": redirect_uri}

    def set_quota(self, account: str, model: str, remainingFraction: float | None = None,
                  resetTime: str | None = None) -> dict[str, Any]:
        """Sets a v1internal model's quota; at 0 with a future resetTime generation gets QUOTA_EXHAUSTED."""
        with self._lock:
            acct = self._find_google(account)
            q = acct.models.setdefault(model, {"remainingFraction": 1.0, "resetTime": iso(datetime.now(UTC))})
            if remainingFraction is not None:
                q["remainingFraction"] = float(remainingFraction)
            if resetTime is not None:
                q["resetTime"] = resetTime
            return dict(q)

    def _find_google(self, account: str) -> GoogleAccount:
        for a in self._google.values():
            if account in (a.email, a.refresh_token):
                return a
        raise ValueError("unknown account")

    def _drop_tokens(self, acct: GoogleAccount) -> None:
        for tok in [t for t, (a, _) in self._tokens.items() if a is acct]:
            del self._tokens[tok]

    # ----------------------------------------------------------------- dispatch

    def handle(self, req: Req) -> Reply:
        """Answers one request (never raises): control, OAuth or one of the four upstreams."""
        with self._lock:
            if req.path.startswith("/_sim/"):
                return self._control(req)
            ctx = Ctx(classify(req), req.path)
            try:
                reply = HANDLERS[ctx.kind](self, req, ctx)
            except Fail as f:
                reply = Reply(f.status, dumps(error_body(ctx.kind, f)),
                              headers=[("retry-after", str(f.retry_after))] if f.retry_after else [])
            except Exception:  # a bug here must not kill the server: say so and carry on
                traceback.print_exc()
                reply = Reply(500, dumps(error_body(ctx.kind, Fail(500, "simupstream internal error"))))
            if ctx.kind != "unknown":
                reply.latency = self._settings["latency"]
            if reply.chunk_delay is None:
                reply.chunk_delay = self._settings["chunk_delay"]
            status = 0 if reply.drop_after == 0 or reply.stall == math.inf else reply.status
            self._log.append({"t": time.time(), "kind": ctx.kind, "account": ctx.who.label if ctx.who else None,
                              "path": ctx.path, "model": ctx.model, "stream": ctx.stream, "status": status,
                              "action": ctx.action})
            return reply

    def _control(self, req: Req) -> Reply:
        parts = req.path[len("/_sim/"):].strip("/").split("/")
        route = CONTROL_ROUTES.get((req.method, parts[0]))
        try:
            if route is None:
                raise Fail(404, f"no control route {req.method} /_sim/{parts[0]}")
            body = req.json_object() if req.body.strip() else {}
            if len(parts) > 1:
                body["rule_id"] = parts[1]
            result = route(self, body) if req.method != "GET" else route(self, dict(req.query))
        except Fail as f:
            return Reply(f.status, dumps({"error": f.message}))
        except (TypeError, ValueError) as e:
            return Reply(400, dumps({"error": str(e)}))
        if parts[0] not in ("log", "reset"):
            self._log.append({"t": time.time(), "kind": "control", "account": None, "path": req.path, "model": None,
                              "stream": False, "status": 200, "action": None})
        return json_reply({"ok": True} if result is None else result)

    def _run(self, ctx: Ctx, make: Callable[[], Reply]) -> Reply:
        """Applies the first matching rule around `make` (the honest answer)."""
        rule = next((r for r in self._rules if (r.times is None or r.times > 0) and r.matches(ctx)), None)
        if rule is None:
            return make()
        rule.hits += 1
        if rule.times is not None:
            rule.times -= 1
        ctx.action, p = rule.action, rule.params
        if rule.action.isdigit():
            raise self._rule_fail(int(rule.action), p, ctx)
        if rule.action == "garbage":
            return garbage(ctx.stream)
        if rule.action == "stall" and p.get("seconds") is None:
            return Reply(0, stall=math.inf)
        if rule.action == "drop" and not ctx.stream:
            return Reply(0, drop_after=0)
        reply = make()
        if rule.action == "stall":
            reply.stall = float(p["seconds"])
        elif rule.action == "slow":
            reply.chunk_delay = float(p.get("chunk_delay", 0.1))
        elif rule.action == "drop":
            reply.drop_after = int(p.get("after_events", 1)) if reply.events is not None else 0
        return reply

    @staticmethod
    def _rule_fail(status: int, p: dict[str, Any], ctx: Ctx) -> Fail:
        reason = p.get("reason") or ("RATE_LIMIT_EXCEEDED" if status == 429 else None)
        meta: dict[str, str] = {}
        for param, key in (("quota_reset_delay", "quotaResetDelay"), ("quota_reset_timestamp", "quotaResetTimeStamp"),
                           ("validation_url", "validation_url")):
            if p.get(param):
                meta[key] = str(p[param])
        if reason and ctx.model:
            meta.setdefault("model", ctx.model)
        message = p.get("message")
        if message is None and status == 429 and p.get("quota_reset_delay"):
            message = ("You have exhausted your capacity on this model. Your quota will reset after"
                       f" {p['quota_reset_delay']}.")
        return Fail(status, message, reason=reason, metadata=meta, retry_delay=p.get("retry_delay"),
                    retry_after=None if p.get("retry_after") is None else str(p["retry_after"]))

    # ----------------------------------------------------------------- shared answer logic

    def _sign(self, issuer: str) -> str:
        sig = base64.b64encode(b"sim-sig:" + secrets.token_bytes(18)).decode()
        issued = self._signatures[issuer]
        issued[signature_key(sig)] = None
        if len(issued) > 200_000:
            del issued[next(iter(issued))]
        return sig

    def _compose(self, conv: Conv, who: Who, model: str) -> Answer:
        """The deterministic 'model': echo, tool call, tool result, thought, image notes."""
        said = "\n".join(conv.texts)
        thought = THINKING_TEXT if conv.thinking or "[[think]]" in said else None
        call, text = None, None
        if conv.results is not None:
            text = "tool result: " + "; ".join(conv.results)
        elif (m := CALL_RE.search(said)) and m[1] in conv.tools:
            try:
                args = json.loads(m[2]) if m[2] else {}
            except ValueError:
                args = None
            call = (m[1], args) if isinstance(args, dict) else None
        if call is None and text is None:
            echoed = conv.texts[-1] if self._settings["echo_last_part"] and conv.texts else said
            text = "echo: " + echoed[:200]
        if text is not None:
            text += "".join(f"\nimage: {d}" for d in conv.images)
        prompt = estimate_tokens(conv.chars) + IMAGE_TOKENS * conv.image_count
        out = estimate_tokens(text) if text is not None else estimate_tokens(len(call[0]) + len(dumps(call[1])))
        return Answer(text, call, thought, prompt, self._cached(who, model, conv, prompt), out,
                      estimate_tokens(thought) if thought else 0)

    def _cached(self, who: Who, model: str, conv: Conv, prompt: int) -> int:
        """Implicit prompt caching: the longest proper prefix of turns this account sent to this
        model before counts as cached (so sticky routing visibly pays off)."""
        if not self._settings["prefix_cache"]:
            return 0
        h = hashlib.blake2b(f"{who.label}\0{model}".encode(), digest_size=16).digest()
        best, chars = 0, 0
        for i, (raw, n) in enumerate(conv.turns):
            h = hashlib.blake2b(h + json.dumps(raw, sort_keys=True).encode(), digest_size=16).digest()
            chars += n
            if i < len(conv.turns) - 1 and h in self._prefixes:
                best = chars
            self._prefixes.add(h)
        if len(self._prefixes) > 500_000:
            self._prefixes.clear()
        return min(math.ceil(best / 4), prompt - 1) if best else 0

    def _check_signatures(self, model: str, turns: list[tuple[str, list[dict[str, Any]]]]) -> None:
        """Gemini 3 / thinking models: in the current turn (since the last user text), the first
        functionCall of each model step needs a signature this sim issued (or the bypass)."""
        if not validates_signatures(model):
            return
        start = max((i for i, (role, parts) in enumerate(turns)
                     if role == "user" and any("functionResponse" not in p for p in parts)), default=0)
        for pos in range(start, len(turns)):
            role, parts = turns[pos]
            if role != "model":
                continue
            first_call = True
            for p in parts:
                sig = p.get("thoughtSignature")
                if sig not in (None, BYPASS_SIGNATURE) and signature_key(sig) not in self._signatures["google"]:
                    raise bad("Corrupted thought signature.")
                if "functionCall" in p and first_call:
                    first_call = False
                    if sig is None:
                        raise bad("Function call is missing a thought_signature in functionCall parts. This is required"
                                  " for tools to work correctly, and missing thought_signature may lead to degraded"
                                  f" model performance. Additional data, function call `default_api:"
                                  f"{p['functionCall']['name']}` , position {pos + 1}. Please refer to"
                                  " https://ai.google.dev/gemini-api/docs/thought-signatures for more details.")

    # ----------------------------------------------------------------- Gemini answers (both flavours)

    def _gemini_docs(self, ans: Answer, model: str, stream: bool, sign: bool) -> list[dict[str, Any]]:
        usage: dict[str, int] = {"promptTokenCount": ans.prompt, "candidatesTokenCount": ans.output,
                                 "totalTokenCount": ans.prompt + ans.output + ans.thoughts}
        if ans.cached:
            usage["cachedContentTokenCount"] = ans.cached
        if ans.thought:
            usage["thoughtsTokenCount"] = ans.thoughts
        head = [{"text": ans.thought, "thought": True, "thoughtSignature": self._sign("google")}] if ans.thought else []
        if ans.call:
            part: dict[str, Any] = {"functionCall": {"name": ans.call[0], "args": ans.call[1],
                                                     "id": f"call-{secrets.token_hex(6)}"}}
            if sign:
                part["thoughtSignature"] = self._sign("google")
            body = [[part]]
        else:
            pieces = split_text(ans.text or "", self._settings["events"]) if stream else [ans.text or ""]
            body = [[{"text": t}] for t in pieces]
        groups = ([head] + body) if stream and head else [head + body[0]] + body[1:]
        rid = secrets.token_urlsafe(12)
        docs = []
        for i, parts in enumerate(groups):
            cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
            doc: dict[str, Any] = {"candidates": [cand]}
            if i == len(groups) - 1:
                cand["finishReason"] = "STOP"
                doc["usageMetadata"] = usage
            doc["modelVersion"] = model
            doc["responseId"] = rid
            docs.append(doc)
        return docs

    @staticmethod
    def _gemini_reply(docs: list[dict[str, Any]], stream: bool, sse: bool) -> Reply:
        if not stream:
            return json_reply(docs[0])
        if sse:
            return sse_reply([b"data: " + dumps(d) + b"\r\n\r\n" for d in docs])
        chunks = [b"[" + dumps(docs[0])] + [b"\n," + dumps(d) for d in docs[1:]] + [b"\n]"]
        return Reply(200, events=chunks)

    # ----------------------------------------------------------------- OAuth

    def h_oauth(self, req: Req, ctx: Ctx) -> Reply:
        if req.path.endswith("/userinfo"):
            acct = self._google_auth(req)
            ctx.who = acct.who
            return json_reply({"email": acct.email, "verified_email": True,
                               "id": str(int(hashlib.sha1(acct.email.encode()).hexdigest()[:15], 16))})
        if req.method != "POST":
            raise Fail(404, "Not found")
        form = self._form(req)
        if (acct := self._google.get(form.get("refresh_token", ""))) is not None:
            ctx.who = acct.who
        return self._run(ctx, lambda: self._token_grant(form, ctx))

    @staticmethod
    def _form(req: Req) -> dict[str, str]:
        if "json" in req.headers.get("content-type", ""):
            return {k: str(v) for k, v in req.json_object().items()}
        return dict(parse_qsl(req.body.decode("utf-8", "replace")))

    def _token_grant(self, form: dict[str, str], ctx: Ctx) -> Reply:
        if (form.get("client_id"), form.get("client_secret")) != (self._settings["client_id"],
                                                                  self._settings["client_secret"]):
            raise Fail(401, "The OAuth client was not found.", code="invalid_client")
        grant = form.get("grant_type")
        if grant == "refresh_token":
            acct = self._google.get(form.get("refresh_token", ""))
            if acct is None or acct.revoked:
                raise bad("Token has been expired or revoked.", code="invalid_grant")
            acct.refresh_count += 1
            return json_reply(self._issue(acct))
        if grant == "authorization_code":
            return json_reply(self._exchange_code(form, ctx))
        raise bad(f"Invalid grant_type: {grant}", code="unsupported_grant_type")

    def _issue(self, acct: GoogleAccount) -> dict[str, Any]:
        now = time.time()
        for tok in [t for t, (_, exp) in self._tokens.items() if exp <= now]:
            del self._tokens[tok]
        token = "ya29.sim-" + secrets.token_urlsafe(24)
        self._tokens[token] = (acct, now + acct.access_token_ttl)
        return {"access_token": token, "expires_in": acct.access_token_ttl, "token_type": "Bearer",
                "scope": GOOGLE_SCOPES}

    def _exchange_code(self, form: dict[str, str], ctx: Ctx) -> dict[str, Any]:
        entry = self._codes.get(form.get("code", ""))
        if entry is None:
            raise bad("Malformed auth code.", code="invalid_grant")
        if entry["redirect_uri"] and entry["redirect_uri"] != form.get("redirect_uri"):
            raise bad("Bad Request", code="redirect_uri_mismatch")
        verifier = form.get("code_verifier", "")
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if not verifier or challenge != entry["challenge"]:
            raise bad("Invalid code verifier.", code="invalid_grant")
        del self._codes[form["code"]]
        acct = self._google.get(entry["refresh_token"])
        if acct is None:
            self.add_google_account(entry["refresh_token"], entry["email"], entry["project"])
            acct = self._google[entry["refresh_token"]]
        ctx.who = acct.who
        return {**self._issue(acct), "refresh_token": acct.refresh_token}

    def _google_auth(self, req: Req) -> GoogleAccount:
        token = req.bearer()
        if token is None:
            raise Fail(401, UNAUTHENTICATED_MSG, reason="CREDENTIALS_MISSING")
        entry = self._tokens.get(token)
        if entry is None or entry[1] <= time.time():
            raise Fail(401, UNAUTHENTICATED_MSG, reason="ACCESS_TOKEN_EXPIRED")
        return entry[0]

    # ----------------------------------------------------------------- v1internal

    def h_google(self, req: Req, ctx: Ctx) -> Reply:
        m = V1INTERNAL_RE.match(req.path)
        method = m["method"] if m else ""
        if req.method != "POST" or method not in V1_METHODS:
            raise Fail(404, f"Method not found: v1internal:{method}")
        acct = self._google_auth(req)
        ctx.who = acct.who
        body = req.json_object()
        return V1_METHODS[method](self, req, ctx, acct, body, method)

    def v1_load(self, req: Req, ctx: Ctx, acct: GoogleAccount, body: dict[str, Any], method: str) -> Reply:
        ctx.meta = True

        def make() -> Reply:
            if not isinstance(body.get("metadata"), dict):
                raise bad("Invalid request: metadata is required (e.g. {\"ideType\": \"ANTIGRAVITY\"}).")
            tier = {"id": "standard-tier", "name": "Gemini Code Assist", "userDefinedCloudaicompanionProject": True}
            if method == "onboardUser":
                return json_reply({"done": True, "response": {"cloudaicompanionProject": {"id": acct.project}}})
            return json_reply({"cloudaicompanionProject": acct.project, "currentTier": tier,
                               "allowedTiers": [{**tier, "isDefault": True}], "gcpManaged": False})
        return self._run(ctx, make)

    def v1_models(self, req: Req, ctx: Ctx, acct: GoogleAccount, body: dict[str, Any], method: str) -> Reply:
        ctx.meta = True

        def make() -> Reply:
            self._check_project(acct, body)
            models = {}
            for name, quota in acct.models.items():
                self._refill(quota)
                models[name] = {"displayName": name.replace("-", " ").title(), "quotaInfo": dict(quota),
                                "maxTokens": 1048576, "maxOutputTokens": 65536, "supportsImages": True,
                                "supportsThinking": thinking_model(name), "recommended": True}
            return json_reply({"models": models})
        return self._run(ctx, make)

    @staticmethod
    def _check_project(acct: GoogleAccount, body: dict[str, Any]) -> None:
        project = body.get("project")
        if not project:
            raise bad("Invalid request: 'project' is required.")
        if project != acct.project:
            raise bad(f"Invalid request: project {project!r} is not this account's Cloud Code project.")

    @staticmethod
    def _refill(quota: dict[str, Any]) -> None:
        """A quota whose reset time has passed is full again, as on the real service."""
        reset = parse_iso(quota.get("resetTime"))
        if quota.get("remainingFraction", 1.0) <= 0 and reset is not None and reset <= datetime.now(UTC):
            quota["remainingFraction"] = 1.0
            quota["resetTime"] = iso(datetime.now(UTC) + timedelta(hours=5))

    def _check_quota(self, acct: GoogleAccount, model: str) -> None:
        quota = acct.models[model]
        self._refill(quota)
        reset = parse_iso(quota.get("resetTime"))
        if quota.get("remainingFraction", 1.0) <= 0 and reset is not None:
            wait = (reset - datetime.now(UTC)).total_seconds()
            raise Fail(429, f"You have exhausted your capacity on this model. Your quota will reset after"
                       f" {duration(wait)}.", reason="QUOTA_EXHAUSTED", retry_delay=f"{max(wait, 0):.3f}s",
                       metadata={"model": model, "quotaResetDelay": duration(wait), "quotaResetTimeStamp": iso(reset)})

    def v1_generate(self, req: Req, ctx: Ctx, acct: GoogleAccount, body: dict[str, Any], method: str) -> Reply:
        ctx.stream = method == "streamGenerateContent"
        model = body.get("model")
        ctx.model = model if isinstance(model, str) else None

        def make() -> Reply:
            for key in ("project", "model", "request", "userAgent", "requestType", "requestId"):
                if not body.get(key):
                    raise bad(f"Invalid request: envelope field {key!r} is required"
                              " (project, model, request, userAgent, requestType, requestId).")
            self._check_project(acct, body)
            if model not in acct.models:
                raise Fail(404, f"Requested entity was not found. Model {model} is not available to this account.")
            if not isinstance(body["request"], dict):
                raise bad("Invalid request: 'request' must be a GenerateContentRequest object.")
            self._check_quota(acct, model)
            conv, turns = gemini_conversation(body["request"], "request")
            self._check_signatures(model, turns)
            ans = self._compose(conv, acct.who, model)
            trace = secrets.token_hex(8)
            docs = [{"response": d, "traceId": trace}
                    for d in self._gemini_docs(ans, model, ctx.stream, thinking_model(model) or conv.thinking)]
            return self._gemini_reply(docs, ctx.stream, req.query.get("alt") == "sse")
        return self._run(ctx, make)

    def v1_count(self, req: Req, ctx: Ctx, acct: GoogleAccount, body: dict[str, Any], method: str) -> Reply:
        inner = body.get("request")
        model = inner.get("model") if isinstance(inner, dict) else None
        ctx.model = model.removeprefix("models/") if isinstance(model, str) else None

        def make() -> Reply:
            if not isinstance(inner, dict):
                raise bad('Invalid request: countTokens needs {"request": {"model": "models/<m>", "contents": [...]}}.')
            if ctx.model is None:
                raise bad("Invalid request: request.model is required (\"models/<m>\").")
            if ctx.model not in acct.models:
                raise Fail(404, f"Requested entity was not found. Model {ctx.model} is not available to this account.")
            conv, _ = gemini_conversation(inner, "request")
            return json_reply({"totalTokens": estimate_tokens(conv.chars) + IMAGE_TOKENS * conv.image_count})
        return self._run(ctx, make)

    # ----------------------------------------------------------------- Gemini API

    def h_gemini(self, req: Req, ctx: Ctx) -> Reply:
        m = GEMINI_PATH_RE.match(req.path)
        if m is None:
            raise Fail(404, f"Method not found: {req.path}")
        key = self._gemini_key(req)
        ctx.who = key.who
        model, method = m["model"], m["method"]
        ctx.model = model
        if req.method == "GET" and method is None:
            ctx.meta = True
            return self._run(ctx, lambda: self._gemini_models(key, model, req.query))
        if req.method != "POST" or method not in ("generateContent", "streamGenerateContent", "countTokens"):
            raise Fail(404, f"Method not found: {req.method} {req.path}")
        if not key.knows(model):
            raise Fail(404, f"models/{model} is not found for API version v1beta, or is not supported for"
                       f" {method}. Call ListModels to see the list of available models and their supported methods.")
        body = req.json_object()
        ctx.stream = method == "streamGenerateContent"
        if method == "countTokens":
            return self._run(ctx, lambda: self._gemini_count(body))

        def make() -> Reply:
            conv, turns = gemini_conversation(body)
            self._check_signatures(model, turns)
            ans = self._compose(conv, key.who, model)
            docs = self._gemini_docs(ans, model, ctx.stream, thinking_model(model) or conv.thinking)
            return self._gemini_reply(docs, ctx.stream, req.query.get("alt") == "sse")
        return self._run(ctx, make)

    def _gemini_key(self, req: Req) -> ApiKey:
        given = req.headers.get("x-goog-api-key") or req.query.get("key")
        if not given:
            raise Fail(403, "Method doesn't allow unregistered callers (callers without established identity). Please"
                       " use API Key or other form of API consumer identity to call this API.")
        key = self._keys.get(given)
        if key is None or key.kind != "gemini":
            raise bad("API key not valid. Please pass a valid API key.", reason="API_KEY_INVALID",
                      metadata={"service": "generativelanguage.googleapis.com"})
        return key

    @staticmethod
    def _gemini_model(name: str) -> dict[str, Any]:
        return {"name": f"models/{name}", "version": "001", "displayName": name.replace("-", " ").title(),
                "description": f"Simulated {name}", "inputTokenLimit": 1048576, "outputTokenLimit": 65536,
                "supportedGenerationMethods": ["generateContent", "countTokens", "createCachedContent",
                                               "batchGenerateContent"],
                "temperature": 1, "topP": 0.95, "topK": 64, "maxTemperature": 2, "thinking": thinking_model(name)}

    def _gemini_models(self, key: ApiKey, model: str | None, query: dict[str, str]) -> Reply:
        if model is not None:
            if not key.knows(model):
                raise Fail(404, f"models/{model} is not found for API version v1beta.")
            return json_reply(self._gemini_model(model))
        names = key.listed()
        size = max(1, min(int(query.get("pageSize") or 50), 1000))
        start = int(query.get("pageToken") or 0)
        page: dict[str, Any] = {"models": [self._gemini_model(n) for n in names[start:start + size]]}
        if start + size < len(names):
            page["nextPageToken"] = str(start + size)
        return json_reply(page)

    @staticmethod
    def _gemini_count(body: dict[str, Any]) -> Reply:
        if "contents" in body and "generateContentRequest" in body:
            raise bad("contents and generate_content_request cannot both be set.")
        inner = body.get("generateContentRequest")
        if inner is None:
            inner = {"contents": body.get("contents")}
        elif isinstance(inner, dict):
            inner = {k: v for k, v in inner.items() if k != "model"}
        conv, _ = gemini_conversation(inner, "generate_content_request" if "generateContentRequest" in body else "")
        return json_reply({"totalTokens": estimate_tokens(conv.chars) + IMAGE_TOKENS * conv.image_count})

    # ----------------------------------------------------------------- OpenAI

    def h_openai(self, req: Req, ctx: Ctx) -> Reply:
        given = req.bearer()
        if given is None:
            raise Fail(401, "You didn't provide an API key. You need to provide your API key in an Authorization header"
                       " using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", code=None)
        key = self._keys.get(given)
        if key is None or key.kind != "openai":
            raise Fail(401, f"Incorrect API key provided: {mask(given)}.")
        ctx.who = key.who
        if req.method == "GET":
            ctx.meta = True
            return self._run(ctx, lambda: self._openai_models(key, req.path))
        if req.method != "POST" or not req.path.endswith("/chat/completions"):
            raise Fail(404, f"Invalid URL ({req.method} {req.path})", code="unknown_url")
        body = req.json_object()
        model = body.get("model")
        ctx.model = model if isinstance(model, str) else None
        ctx.stream = body.get("stream") is True
        return self._run(ctx, lambda: self._openai_chat(key, body, ctx))

    @staticmethod
    def _openai_models(key: ApiKey, path: str) -> Reply:
        def entry(name: str) -> dict[str, Any]:
            return {"id": name, "object": "model", "created": 1700000000, "owned_by": "simupstream"}
        if not path.endswith("/models"):
            name = path.rsplit("/", 1)[-1]
            if not key.knows(name):
                raise Fail(404, f"The model `{name}` does not exist or you do not have access to it.")
            return json_reply(entry(name))
        return json_reply({"object": "list", "data": [entry(n) for n in key.listed()]})

    def _openai_chat(self, key: ApiKey, body: dict[str, Any], ctx: Ctx) -> Reply:
        model = ctx.model
        if model is None:
            raise bad("you must provide a model parameter", param="model")
        if body.get("stream_options") is not None and not ctx.stream:
            raise bad("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                      param="stream_options")
        if not key.knows(model):
            raise Fail(404, f"The model `{model}` does not exist or you do not have access to it.")
        conv = openai_conversation(body)
        ans = self._compose(conv, key.who, model)
        usage = {"prompt_tokens": ans.prompt, "completion_tokens": ans.output,
                 "total_tokens": ans.prompt + ans.output,
                 "prompt_tokens_details": {"cached_tokens": ans.cached, "audio_tokens": 0},
                 "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}
        cid, created = "chatcmpl-" + secrets.token_urlsafe(18), int(time.time())
        finish = "tool_calls" if ans.call else "stop"
        call = None
        if ans.call:
            call = {"id": "call_" + secrets.token_urlsafe(18), "type": "function",
                    "function": {"name": ans.call[0], "arguments": dumps(ans.call[1]).decode()}}
        if not ctx.stream:
            msg: dict[str, Any] = {"role": "assistant", "content": ans.text, "refusal": None, "annotations": []}
            if call:
                msg["tool_calls"] = [call]
            return json_reply({"id": cid, "object": "chat.completion", "created": created, "model": model,
                               "choices": [{"index": 0, "message": msg, "logprobs": None, "finish_reason": finish}],
                               "usage": usage, "service_tier": "default", "system_fingerprint": "fp_sim"})
        with_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], reason: str | None = None) -> bytes:
            c: dict[str, Any] = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                                 "service_tier": "default", "system_fingerprint": "fp_sim",
                                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}]}
            if with_usage:
                c["usage"] = None
            return b"data: " + dumps(c) + b"\n\n"

        n = self._settings["events"]
        if call:
            start = {**call, "index": 0, "function": {"name": call["function"]["name"], "arguments": ""}}
            events = [chunk({"role": "assistant", "content": None, "tool_calls": [start], "refusal": None})]
            events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                       for piece in split_text(call["function"]["arguments"], n)]
        else:
            events = [chunk({"role": "assistant", "content": "", "refusal": None})]
            events += [chunk({"content": piece}) for piece in split_text(ans.text or "", n)]
        events.append(chunk({}, finish))
        if with_usage:
            events.append(b"data: " + dumps({"id": cid, "object": "chat.completion.chunk", "created": created,
                                             "model": model, "service_tier": "default",
                                             "system_fingerprint": "fp_sim", "choices": [], "usage": usage}) + b"\n\n")
        events.append(b"data: [DONE]\n\n")
        return sse_reply(events)

    # ----------------------------------------------------------------- Anthropic

    def h_anthropic(self, req: Req, ctx: Ctx) -> Reply:
        given = req.headers.get("x-api-key") or req.bearer()
        if not given:
            raise Fail(401, "x-api-key header is required")
        key = self._keys.get(given)
        if key is None or key.kind != "anthropic":
            raise Fail(401, "invalid x-api-key")
        ctx.who = key.who
        if "anthropic-version" not in req.headers:
            raise bad("anthropic-version: header is required")
        if req.method == "GET":
            ctx.meta = True
            return self._run(ctx, lambda: self._anthropic_models(key, req.path))
        body = req.json_object()
        model = body.get("model")
        ctx.model = model if isinstance(model, str) else None
        beta = req.headers.get("anthropic-beta", "")
        if req.path.endswith("/count_tokens"):
            return self._run(ctx, lambda: self._anthropic_count(key, body, beta))
        if req.method != "POST" or not req.path.endswith("/messages"):
            raise Fail(404, f"Not found: {req.method} {req.path}")
        ctx.stream = body.get("stream") is True
        return self._run(ctx, lambda: self._anthropic_messages(key, body, beta, ctx))

    @staticmethod
    def _anthropic_models(key: ApiKey, path: str) -> Reply:
        def entry(name: str) -> dict[str, Any]:
            return {"type": "model", "id": name, "display_name": name.replace("-", " ").title(),
                    "created_at": "2025-09-29T00:00:00Z"}
        if not path.endswith("/models"):
            name = path.rsplit("/", 1)[-1]
            if not key.knows(name):
                raise Fail(404, f"model: {name}")
            return json_reply(entry(name))
        names = key.listed()
        return json_reply({"data": [entry(n) for n in names], "has_more": False,
                           "first_id": names[0] if names else None, "last_id": names[-1] if names else None})

    def _anthropic_count(self, key: ApiKey, body: dict[str, Any], beta: str) -> Reply:
        conv = anthropic_conversation(body, self._signatures["anthropic"], beta, need_max_tokens=False)
        if not key.knows(body["model"]):
            raise Fail(404, f"model: {body['model']}")
        return json_reply({"input_tokens": estimate_tokens(conv.chars) + IMAGE_TOKENS * conv.image_count})

    def _anthropic_messages(self, key: ApiKey, body: dict[str, Any], beta: str, ctx: Ctx) -> Reply:
        conv = anthropic_conversation(body, self._signatures["anthropic"], beta)
        model = body["model"]
        if not key.knows(model):
            raise Fail(404, f"model: {model}")
        ans = self._compose(conv, key.who, model)
        cached = ans.cached if "cache_control" in json.dumps(body.get("system")) + json.dumps(body["messages"]) else 0
        usage = {"input_tokens": ans.prompt - cached, "cache_creation_input_tokens": 0,
                 "cache_read_input_tokens": cached, "output_tokens": ans.output + ans.thoughts}
        blocks: list[dict[str, Any]] = []
        if ans.thought:
            blocks.append({"type": "thinking", "thinking": ans.thought, "signature": self._sign("anthropic")})
        if ans.call:
            blocks.append({"type": "tool_use", "id": "toolu_" + secrets.token_urlsafe(18), "name": ans.call[0],
                           "input": ans.call[1]})
        else:
            blocks.append({"type": "text", "text": ans.text})
        stop = "tool_use" if ans.call else "end_turn"
        message = {"id": "msg_" + secrets.token_urlsafe(18), "type": "message", "role": "assistant", "model": model,
                   "content": blocks, "stop_reason": stop, "stop_sequence": None, "usage": usage}
        if not ctx.stream:
            return json_reply(message)
        return sse_reply(self._anthropic_events(message, blocks, usage))

    def _anthropic_events(self, message: dict[str, Any], blocks: list[dict[str, Any]],
                          usage: dict[str, int]) -> list[bytes]:
        def ev(kind: str, data: dict[str, Any]) -> bytes:
            return f"event: {kind}\ndata: ".encode() + dumps({"type": kind, **data}) + b"\n\n"

        n = self._settings["events"]
        start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
        out = [ev("message_start", {"message": start})]
        for i, b in enumerate(blocks):
            if b["type"] == "thinking":
                head = {"type": "thinking", "thinking": ""}
                deltas = [{"type": "thinking_delta", "thinking": t} for t in split_text(b["thinking"], n)]
                deltas.append({"type": "signature_delta", "signature": b["signature"]})
            elif b["type"] == "tool_use":
                head = {**b, "input": {}}
                args = dumps(b["input"]).decode()
                deltas = [{"type": "input_json_delta", "partial_json": t} for t in split_text(args, n)]
            else:
                head = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": t} for t in split_text(b["text"], n)]
            out.append(ev("content_block_start", {"index": i, "content_block": head}))
            if i == 0:
                out.append(ev("ping", {}))
            out += [ev("content_block_delta", {"index": i, "delta": d}) for d in deltas]
            out.append(ev("content_block_stop", {"index": i}))
        out.append(ev("message_delta", {"delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                        "usage": {"output_tokens": usage["output_tokens"]}}))
        out.append(ev("message_stop", {}))
        return out

    def h_unknown(self, req: Req, ctx: Ctx) -> Reply:
        raise Fail(404, f"simupstream: nothing at {req.method} {req.path}")


def garbage(stream: bool) -> Reply:
    """A 200 that no client can parse: broken JSON, or a stream that is not SSE."""
    if stream:
        return Reply(200, ctype="text/event-stream", events=[b"<html>\x00 not an event {{{\n", b"data: {\"respo\n\n"])
    return Reply(200, b'{"response": {"candidates": [<<garbage>>')


def classify(req: Req) -> str:
    """Which upstream a path belongs to; the suffix rules let any base-URL prefix work."""
    p = req.path
    if "/v1internal:" in p:
        return "google"
    if p.startswith(("/v1beta/", "/v1alpha/")) or (p.startswith("/v1/models/") and ":" in p):
        return "gemini"  # google-genai uses /v1/ when given a base_url
    if p.endswith(("/token", "/userinfo")):
        return "oauth"
    if p.endswith(("/messages", "/messages/count_tokens")):
        return "anthropic"
    if p.endswith("/chat/completions"):
        return "openai"
    if p.endswith("/models") or "/models/" in p:
        if p.startswith("/v1/") and ("x-goog-api-key" in req.headers or "key" in req.query):
            return "gemini"
        return "anthropic" if "anthropic-version" in req.headers or "x-api-key" in req.headers else "openai"
    return "unknown"


HANDLERS: dict[str, Callable[[SimState, Req, Ctx], Reply]] = {
    "google": SimState.h_google, "gemini": SimState.h_gemini, "oauth": SimState.h_oauth,
    "openai": SimState.h_openai, "anthropic": SimState.h_anthropic, "unknown": SimState.h_unknown,
}
V1_METHODS: dict[str, Callable[..., Reply]] = {
    "loadCodeAssist": SimState.v1_load, "onboardUser": SimState.v1_load,
    "fetchAvailableModels": SimState.v1_models,
    "generateContent": SimState.v1_generate, "streamGenerateContent": SimState.v1_generate,
    "countTokens": SimState.v1_count,
}
CONTROL_ROUTES: dict[tuple[str, str], Callable[[SimState, dict[str, Any]], Any]] = {
    ("GET", "health"): lambda s, b: {"ok": True},
    ("POST", "google-accounts"): lambda s, b: s.add_google_account(**b),
    ("GET", "google-accounts"): lambda s, b: s.google_accounts(),
    ("POST", "api-keys"): lambda s, b: s.add_api_key(**b),
    ("GET", "api-keys"): lambda s, b: s.api_keys(),
    ("POST", "behave"): lambda s, b: {"id": s.behave(**b)},
    ("GET", "behave"): lambda s, b: s.rules(),
    ("DELETE", "behave"): lambda s, b: s.delete_rule(b["rule_id"]) if "rule_id" in b else s.clear_rules(),
    ("GET", "log"): lambda s, b: s.log(b.get("kind")),
    ("DELETE", "log"): lambda s, b: s.clear_log(),
    ("POST", "reset"): lambda s, b: s.reset(),
    ("GET", "settings"): lambda s, b: s.settings(),
    ("POST", "settings"): lambda s, b: s.settings(**b),
    ("POST", "revoke"): lambda s, b: s.revoke(**b),
    ("POST", "expire"): lambda s, b: s.expire(**b),
    ("POST", "auth-codes"): lambda s, b: s.add_auth_code(**b),
    ("POST", "quota"): lambda s, b: s.set_quota(**b),
}


# --------------------------------------------------------------------------- the server


class SimUpstream(SimState):
    """The simulator plus its HTTP/1.1 server (keep-alive, chunked streams, 400 on garbage).

    `start()` serves on a private event loop in a daemon thread (for sync tests and tools);
    `serve()` serves on the caller's loop (for the CLI)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, demo: bool = False) -> None:
        super().__init__()
        self.host, self.port = host, port
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.Task[None]] = set()
        if demo:
            self.add_demo_accounts()

    def add_demo_accounts(self) -> None:
        """The accounts in DEMO, so the demo gateway has one of every kind to route to."""
        for g in DEMO["google"]:
            self.add_google_account(**g)
        for k in DEMO["keys"]:
            self.add_api_key(**k)

    # ----------------------------------------------------------------- lifecycle

    async def serve(self) -> str:
        """Starts listening on the running loop; returns the base URL."""
        self._server = await asyncio.start_server(self._connection, self.host, self.port)
        host, port = self._server.sockets[0].getsockname()[:2]
        self.port = port
        self.url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        return self.url

    async def aclose(self) -> None:
        """Stops serve(): closes the listener and cancels every connection (stalls included)."""
        if self._server is not None:
            self._server.close()
        for task in list(self._conns):
            task.cancel()
        if self._conns:
            await asyncio.gather(*self._conns, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    def start(self) -> str:
        """Serves on a private loop in a daemon thread; returns the base URL."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.serve())
            except BaseException as e:  # surface bind errors in the caller's thread
                failure.append(e)
                loop.close()
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self.aclose())
            loop.close()

        self._thread = threading.Thread(target=run, name="simupstream", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self.url

    def stop(self) -> None:
        """Stops the thread started by start(): open and stalled connections are cut."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop = self._thread = None

    def __enter__(self) -> SimUpstream:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- one connection

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conns.add(task)
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                try:
                    req = await self._read_request(conn, reader, writer)
                except h11.RemoteProtocolError as e:
                    self._refuse(conn, writer, e.error_status_hint, f"bad request: {e}")
                    break
                except _TooLarge:
                    self._refuse(conn, writer, 413, "request body too large")
                    break
                if req is None:
                    break
                reply = self.handle(req)
                if not await self._send(conn, reader, writer, reply):
                    break
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    break
                conn.start_next_cycle()
        except (ConnectionError, asyncio.IncompleteReadError, h11.LocalProtocolError, h11.RemoteProtocolError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._conns.discard(task)
            writer.close()

    async def _read_request(self, conn: h11.Connection, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> Req | None:
        head: h11.Request | None = None
        body: list[bytes] = []
        size = 0
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                head = event
                if conn.client_is_waiting_for_100_continue:
                    writer.write(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
            elif isinstance(event, h11.Data):
                size += len(event.data)
                if size > MAX_BODY:
                    raise _TooLarge
                body.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                target = head.target.decode("latin-1")
                split = urlsplit(target)
                return Req(head.method.decode("ascii", "replace"), unquote(split.path),
                           dict(parse_qsl(split.query)),
                           {k.decode("latin-1"): v.decode("latin-1") for k, v in head.headers},
                           b"".join(body))
            else:  # ConnectionClosed or PAUSED
                return None

    @staticmethod
    def _refuse(conn: h11.Connection, writer: asyncio.StreamWriter, status: int, message: str) -> None:
        if conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return
        body = dumps({"error": message})
        try:
            writer.write(conn.send(h11.Response(status_code=status, headers=[
                ("content-type", "application/json"), ("content-length", str(len(body))), ("connection", "close")])))
            writer.write(conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage()))
        except h11.LocalProtocolError:
            pass

    async def _send(self, conn: h11.Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    reply: Reply) -> bool:
        """Writes one reply with its timing and misbehaviour; False when the connection must end."""
        if reply.latency:
            await asyncio.sleep(reply.latency)
        if reply.stall is not None and await self._hold(conn, reader, reply.stall):
            return False
        if reply.drop_after == 0:
            return False
        headers = [("content-type", reply.ctype), ("server", "simupstream"), *reply.headers]
        if reply.events is None:
            headers.append(("content-length", str(len(reply.body))))
            out = conn.send(h11.Response(status_code=reply.status, headers=headers))
            if reply.body:
                out += conn.send(h11.Data(data=reply.body))
            writer.write(out + conn.send(h11.EndOfMessage()))
            await writer.drain()
            return True
        headers.append(("cache-control", "no-cache"))
        head = conn.send(h11.Response(status_code=reply.status, headers=headers))
        fragment = self._settings["fragment"]
        if not reply.chunk_delay and not fragment and reply.drop_after is None:
            # Nothing to pace: one write (the benchmark baseline should cost the least it can).
            body = b"".join(conn.send(h11.Data(data=e)) for e in reply.events)
            writer.write(head + body + conn.send(h11.EndOfMessage()))
            await writer.drain()
            return True
        writer.write(head)
        for i, event in enumerate(reply.events):
            if reply.drop_after is not None and i >= reply.drop_after:
                await writer.drain()
                return False  # closing now leaves the chunked body without its terminator
            if i and reply.chunk_delay:
                await asyncio.sleep(reply.chunk_delay)
            if fragment and len(event) > 1:
                half = len(event) // 2
                writer.write(conn.send(h11.Data(data=event[:half])))
                await writer.drain()
                event = event[half:]
            writer.write(conn.send(h11.Data(data=event)))
            if reply.chunk_delay or fragment:
                await writer.drain()
        await writer.drain()
        if reply.drop_after is not None:
            return False  # asked to drop after more events than there were: still no terminator
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()
        return True

    @staticmethod
    async def _hold(conn: h11.Connection, reader: asyncio.StreamReader, seconds: float) -> bool:
        """Waits `seconds` (inf: forever) unless the client leaves first; True when it left."""
        async def watch() -> bool:
            while data := await reader.read(65536):
                conn.receive_data(data)  # a pipelined request: keep it for the next cycle
            return True
        try:
            return await asyncio.wait_for(watch(), None if seconds == math.inf else seconds)
        except TimeoutError:
            return False


class _TooLarge(Exception):
    pass


# --------------------------------------------------------------------------- CLI


async def _main_async(host: str, port: int, demo: bool) -> None:
    sim = SimUpstream(host, port, demo=demo)
    url = await sim.serve()
    print(f"simupstream listening on {url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not on the main thread / platform
            pass
    await stop.wait()
    await sim.aclose()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Switchyard's simulated upstream (OAuth, v1internal, Gemini, OpenAI, "
                                             "Anthropic).")
    ap.add_argument("--host", default="127.0.0.1", help="bind address (default: loopback only)")
    ap.add_argument("--port", type=int, default=0, help="port (default 0: any free port)")
    ap.add_argument("--demo", action="store_true", help="pre-register the demo accounts (see DEMO)")
    args = ap.parse_args(argv)
    try:
        asyncio.run(_main_async(args.host, args.port, args.demo))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
