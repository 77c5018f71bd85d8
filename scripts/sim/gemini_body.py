"""The Gemini request and answer body both Google upstreams speak (Cloud Code wraps it in its
envelope, the Gemini API sends it bare): validated as strictly as Google does, answered alike."""

from __future__ import annotations

import base64
import json
import re
import secrets
from collections.abc import Callable
from typing import Any

from .core import Answer, Conv, Reply, json_reply, sse_reply
from .refusals import refuse
from .util import (ASPECT_RATIOS, BYPASS_SIGNATURE, IMAGE_SIZES, b64_size, camel, dumps, search_answer, search_hits,
                   signature_key, split_text, validates_signatures)

FUNC_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
Turns = list[tuple[str, list[dict[str, Any]]]]  # (role, camelCased parts) per content


def known_fields(obj: Any, known: frozenset[str], where: str) -> dict[str, Any]:
    """`obj` with proto-JSON (snake or camel) keys as camelCase; unknown keys fail like Google."""
    if not isinstance(obj, dict):
        raise refuse("not_an_object", where=where, value=json.dumps(obj)[:60])
    out = {}
    for k, v in obj.items():
        ck = camel(k)
        if ck not in known:
            at = f" at '{where}'" if where else ""
            raise refuse("unknown_field", name=k, at=at)
        out[ck] = v
    return out


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
IMAGE_CONFIG_FIELDS = frozenset(("aspectRatio", "imageSize", "personGeneration", "imageOutputOptions"))
MODALITIES = frozenset(("TEXT", "IMAGE", "AUDIO"))
SEARCH_TOOLS = ("googleSearch", "googleSearchRetrieval")
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
        raise refuse("schema_type", where=where, value=json.dumps(t))
    props = s.get("properties", {})
    if not isinstance(props, dict):
        raise refuse("schema_properties", where=where)
    for name, sub in props.items():
        check_schema(sub, f"{where}.properties[{name}].value")
    if "items" in s:
        check_schema(s["items"], f"{where}.items")
    for i, sub in enumerate(s.get("anyOf") or []):
        check_schema(sub, f"{where}.any_of[{i}]")


def gemini_tools(tools: Any, where: str, conv: Conv | None = None) -> set[str]:
    """The declared function names; with `conv`, also whether Google Search is among the tools
    (which the service does not take together with function declarations)."""
    if tools is None:
        return set()
    if not isinstance(tools, list):
        raise refuse("not_a_list", where=where)
    names: set[str] = set()
    for i, tool in enumerate(tools):
        tw = f"{where}[{i}]"
        fields = known_fields(tool, TOOL_FIELDS, tw)
        if conv is not None and any(key in fields for key in SEARCH_TOOLS):
            conv.search = True
        decls = fields.get("functionDeclarations") or []
        for j, decl in enumerate(decls):
            fw = f"{tw}.function_declarations[{j}]"
            fd = known_fields(decl, FUNC_FIELDS, fw)
            name = fd.get("name")
            if not isinstance(name, str) or not FUNC_NAME_RE.fullmatch(name):
                raise refuse("function_name", where=fw)
            if "parameters" in fd and "parametersJsonSchema" in fd:
                raise refuse("function_two_schemas", where=fw)
            for key in ("parameters", "response"):
                if key in fd:
                    check_schema(fd[key], f"{fw}.{key}")
            names.add(name)
    if conv is not None and conv.search and names:
        raise refuse("search_with_functions")
    return names


def image_settings(gen: dict[str, Any], where: str) -> tuple[tuple[str, str], list[str] | None]:
    """generationConfig.imageConfig (aspect ratio, size; 1:1 and 1K unless asked) and the
    responseModalities asked for (None: not said), checked as Google checks them."""
    config = known_fields(gen.get("imageConfig") or {}, IMAGE_CONFIG_FIELDS, f"{where}.image_config")
    aspect, size = config.get("aspectRatio", "1:1"), config.get("imageSize", "1K")
    if aspect not in ASPECT_RATIOS:
        raise refuse("image_aspect", value=json.dumps(aspect), allowed=", ".join(ASPECT_RATIOS))
    if size not in IMAGE_SIZES:
        raise refuse("image_size", value=json.dumps(size), allowed=", ".join(IMAGE_SIZES))
    modalities = gen.get("responseModalities")
    if modalities is not None and (not isinstance(modalities, list) or not set(modalities) <= MODALITIES):
        raise refuse("modalities", value=json.dumps(modalities)[:60])
    return (aspect, size), modalities


def gemini_part(part: Any, where: str) -> tuple[str, dict[str, Any], int]:
    """Validates one part; returns (its data field, the part camelCased, its text chars)."""
    p = known_fields(part, PART_FIELDS, where)
    data = [k for k in p if k in PART_DATA]
    if not data:
        raise refuse("part_no_data", where=where)
    if len(data) > 1:
        raise refuse("part_two_data", where=where, field=data[1])
    kind = data[0]
    sig = p.get("thoughtSignature")
    if sig is not None and b64_size(sig) is None:
        raise refuse("signature_base64", where=where, value=json.dumps(sig)[:40])
    value = p[kind]
    if kind == "text":
        if not isinstance(value, str):
            raise refuse("text_not_string", where=where, value=json.dumps(value)[:40])
        return kind, p, len(value)
    allowed = PART_SUBFIELDS.get(kind)
    if allowed is None:  # executableCode & co: shape not checked, but it must be an object
        allowed = frozenset(value) if isinstance(value, dict) else frozenset()
    sub = p[kind] = known_fields(value, allowed, f"{where}.{kind}")
    if kind == "inlineData":
        if not isinstance(sub.get("mimeType"), str) or "data" not in sub:
            raise refuse("inline_data_fields", where=where)
        if b64_size(sub["data"]) is None:
            raise refuse("inline_data_base64", where=where, value=json.dumps(str(sub["data"])[:20]))
        return kind, p, 0
    if kind in ("functionCall", "functionResponse"):
        if not isinstance(sub.get("name"), str) or not sub["name"]:
            raise refuse("function_part_name", where=where, kind=kind)
        payload = "args" if kind == "functionCall" else "response"
        if payload in sub and not isinstance(sub[payload], dict):
            raise refuse("function_part_struct", where=where, kind=kind, field=payload,
                         value=json.dumps(sub[payload])[:40])
        if kind == "functionResponse" and payload not in sub:
            raise refuse("function_response_payload", where=where)
        return kind, p, len(sub["name"]) + len(dumps(sub.get(payload, {})))
    if kind == "fileData" and not isinstance(sub.get("fileUri"), str):
        raise refuse("file_uri", where=where)
    return kind, p, 0


def gemini_conversation(body: Any, where: str = "") -> tuple[Conv, Turns]:
    """Validates a GenerateContentRequest as the real API does; returns what to answer from and
    the normalized (role, parts) turns for the signature check."""
    at = f"{where}." if where else ""
    req = known_fields(body, REQUEST_FIELDS, where)
    conv = Conv()
    conv.tools = gemini_tools(req.get("tools"), f"{at}tools", conv)
    gen = known_fields(req.get("generationConfig") or {}, GEN_FIELDS, f"{at}generation_config")
    think = known_fields(gen.get("thinkingConfig") or {}, THINKING_FIELDS, f"{at}generation_config.thinking_config")
    conv.thinking = think.get("includeThoughts") is True
    conv.picture, conv.modalities = image_settings(gen, f"{at}generation_config")
    if (si := req.get("systemInstruction")) is not None:
        conv.system = True
        sw = f"{at}system_instruction"
        sys_parts = known_fields(si, CONTENT_FIELDS, sw).get("parts")
        if not isinstance(sys_parts, list):
            raise refuse("system_parts", where=sw)
        conv.add_turn(si, sum(gemini_part(p, f"{sw}.parts[{j}]")[2] for j, p in enumerate(sys_parts)))
    contents = req.get("contents")
    if not isinstance(contents, list) or not contents:
        raise refuse("no_contents")
    turns: Turns = []
    prev_role, prev_calls = "", []
    for i, raw in enumerate(contents):
        cw = f"{at}contents[{i}]"
        content = known_fields(raw, CONTENT_FIELDS, cw)
        role = content.get("role") or "user"
        if role not in ("user", "model"):
            raise refuse("bad_role", role=json.dumps(role), where=cw)
        if i == 0 and role != "user":
            raise refuse("first_turn_model")
        if role == prev_role:
            raise refuse("roles_repeat", where=cw, role=role)
        raw_parts = content.get("parts")
        if not isinstance(raw_parts, list) or not raw_parts:
            raise refuse("empty_parts", where=cw)
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
            raise refuse("call_in_user_turn", where=cw)
        if responses:
            if role != "user":
                raise refuse("response_in_model_turn", where=cw)
            if not prev_calls:
                raise refuse("response_without_call", where=cw)
            unknown = [n for n in responses if n not in prev_calls]
            if unknown:
                raise refuse("response_unknown_name", name=unknown[0], where=cw, calls=", ".join(prev_calls))
            if len(responses) != len(prev_calls):
                raise refuse("response_count", where=cw, responses=len(responses), calls=len(prev_calls))
        conv.add_turn(raw, chars)
        turns.append((role, parts))
        prev_role, prev_calls = role, calls
    last_user = next(parts for role, parts in reversed(turns) if role == "user")
    gemini_last_turn(conv, last_user)
    return conv, turns


def image_model_rules(conv: Conv, inner: dict[str, Any], model: str) -> None:
    """Image models take no tools, no system prompt and no thinking; they draw unless told to
    answer in text only."""
    gen = {camel(k): v for k, v in (inner.get("generationConfig") or inner.get("generation_config") or {}).items()}
    if conv.tools or conv.search:
        raise refuse("image_model_tools", model=model)
    if conv.system:
        raise refuse("image_model_system", model=model)
    if gen.get("thinkingConfig") is not None:
        raise refuse("image_model_thinking", model=model)
    if conv.modalities is None or "IMAGE" in conv.modalities:
        conv.draw = conv.picture


def image_model(model: str) -> bool:
    return "-image" in model or model.startswith("imagen-")


def gemini_last_turn(conv: Conv, parts: list[dict[str, Any]]) -> None:
    for p in parts:
        if "text" in p and not p.get("thought"):
            conv.texts.append(p["text"])
        elif "inlineData" in p:
            conv.images.append(f"{p['inlineData']['mimeType']} {b64_size(p['inlineData']['data'])} bytes")
        elif "functionResponse" in p:
            conv.results = (conv.results or []) + [dumps(p["functionResponse"].get("response", {})).decode()]


# --------------------------------------------------------------------------- signatures


def check_signatures(model: str, turns: Turns, issued: dict[bytes | str, None]) -> None:
    """Gemini 3 / thinking models: in the current turn (since the last user text), the first
    functionCall of each model step needs a signature issued for this family (or the bypass)."""
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
            if sig not in (None, BYPASS_SIGNATURE) and signature_key(sig) not in issued:
                raise refuse("signature_corrupted")
            if "functionCall" in p and first_call:
                first_call = False
                if sig is None:
                    raise refuse("signature_missing", name=p["functionCall"]["name"], position=pos + 1)


# --------------------------------------------------------------------------- answers


def gemini_call_id() -> str:
    return f"call-{secrets.token_hex(6)}"


def gemini_docs(ans: Answer, model: str, stream: bool, sign_calls: bool, sign: Callable[[], str],
                events: int, call_id: Callable[[], str] = gemini_call_id) -> list[dict[str, Any]]:
    """The answer as GenerateContentResponse documents: one, or one per stream event. `sign`
    signs the thought (and, with `sign_calls`, the function call) for the model's family."""
    usage: dict[str, int] = {"promptTokenCount": ans.prompt, "candidatesTokenCount": ans.output,
                             "totalTokenCount": ans.prompt + ans.output + ans.thoughts}
    if ans.cached:
        usage["cachedContentTokenCount"] = ans.cached
    if ans.thought:
        usage["thoughtsTokenCount"] = ans.thoughts
    head = [{"text": ans.thought, "thought": True, "thoughtSignature": sign()}] if ans.thought else []
    if ans.image is not None:
        usage["candidatesTokensDetails"] = [{"modality": "TEXT", "tokenCount": ans.output - ans.image_tokens},
                                            {"modality": "IMAGE", "tokenCount": ans.image_tokens}]
    if ans.call:
        part: dict[str, Any] = {"functionCall": {"name": ans.call[0], "args": ans.call[1],
                                                 "id": call_id()}}
        if sign_calls:
            part["thoughtSignature"] = sign()
        body = [[part]]
    else:
        pieces = split_text(ans.text or "", events) if stream else [ans.text or ""]
        body = [[{"text": t}] for t in pieces]
    if ans.image is not None:
        drawn = {"inlineData": {"mimeType": "image/png", "data": base64.b64encode(ans.image).decode()}}
        body = body + [[drawn]] if stream else [body[0] + [drawn]]
    groups = ([head] + body) if stream and head else [head + body[0]] + body[1:]
    rid = secrets.token_urlsafe(12)
    docs = []
    for i, parts in enumerate(groups):
        cand: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": 0}
        doc: dict[str, Any] = {"candidates": [cand]}
        if i == len(groups) - 1:
            cand["finishReason"] = "STOP"
            if ans.search is not None:
                cand["groundingMetadata"] = grounding_metadata(ans.search)
            doc["usageMetadata"] = usage
        doc["modelVersion"] = model
        doc["responseId"] = rid
        docs.append(doc)
    return docs


def grounding_metadata(query: str) -> dict[str, Any]:
    """What Google Search grounding reports with a searched answer: the queries, each source as
    a grounding redirect link titled by its domain, and the spans of the answer (UTF-8 byte
    offsets; a zero startIndex is left out, as proto3 JSON does) with the sources backing them."""
    text, spans = search_answer(query)
    hits = search_hits(query)

    def at(i: int) -> int:
        return len(text[:i].encode())

    supports = []
    for start, end, sources in spans:
        segment: dict[str, Any] = {"endIndex": at(end), "text": text[start:end]}
        if start:
            segment["startIndex"] = at(start)
        supports.append({"segment": segment, "groundingChunkIndices": sources,
                         "confidenceScores": [0.9] * len(sources)})
    chips = "".join(f'<a class="chip" href="{h.redirect}">{h.domain}</a>' for h in hits)
    return {"searchEntryPoint": {"renderedContent": f'<div class="container">{chips}</div>'},
            "groundingChunks": [{"web": {"uri": h.redirect, "title": h.domain}} for h in hits],
            "groundingSupports": supports, "retrievalMetadata": {}, "webSearchQueries": [query]}


def gemini_reply(docs: list[dict[str, Any]], stream: bool, sse: bool) -> Reply:
    """One JSON document, an SSE stream (CRLF-terminated events) or a JSON array streamed."""
    if not stream:
        return json_reply(docs[0])
    if sse:
        return sse_reply([b"data: " + dumps(d) + b"\r\n\r\n" for d in docs])
    chunks = [b"[" + dumps(docs[0])] + [b"\n," + dumps(d) for d in docs[1:]] + [b"\n]"]
    return Reply(200, events=chunks)
