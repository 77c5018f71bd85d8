"""OpenAI chat completions (any OpenAI-compatible base URL): key auth, model list, the request
checks OpenAI makes, answers whole or streamed."""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import TYPE_CHECKING, Any

from .core import Conv, Ctx, Reply, Req, json_reply, sse_reply
from .errors import Fail, bad
from . import openai_embeddings as embeddings
from . import openai_images as images
from .util import b64_size, dumps, mask, search_answer, search_hits, split_text

if TYPE_CHECKING:
    from .state import ApiKey, SimState

DATA_URL_RE = re.compile(r"data:([^;,]+);base64,(.*)", re.S)

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


# --------------------------------------------------------------------------- answers


def handle(state: SimState, req: Req, ctx: Ctx) -> Reply:
    """Key check, then the endpoint: chat completions, embeddings, image generations and edits."""
    given = req.bearer()
    if given is None:
        raise Fail(401, "You didn't provide an API key. You need to provide your API key in an Authorization header"
                   " using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).", code=None)
    key = state.keys.get(given)
    if key is None or key.kind != "openai":
        raise Fail(401, f"Incorrect API key provided: {mask(given)}.")
    ctx.who = key.who
    if req.method == "GET":
        ctx.meta = True
        return state.run(ctx, lambda: models(key, req.path))
    endpoint = next((e for e in ENDPOINTS if req.path.endswith(e)), None)
    if req.method != "POST" or endpoint is None:
        raise Fail(404, f"Invalid URL ({req.method} {req.path})", code="unknown_url")
    if endpoint == "/images/edits":
        body, files = images.form(req)
    else:
        body, files = req.json_object(), {}
    model = body.get("model")
    ctx.model = model if isinstance(model, str) else None
    ctx.stream = body.get("stream") is True
    return state.run(ctx, lambda: ENDPOINTS[endpoint](state, key, body, files, ctx))


def models(key: ApiKey, path: str) -> Reply:
    def entry(name: str) -> dict[str, Any]:
        return {"id": name, "object": "model", "created": 1700000000, "owned_by": "simupstream"}
    if not path.endswith("/models"):
        name = path.rsplit("/", 1)[-1]
        if not key.knows(name):
            raise Fail(404, f"The model `{name}` does not exist or you do not have access to it.")
        return json_reply(entry(name))
    return json_reply({"object": "list", "data": [entry(n) for n in key.listed()]})


def chat(state: SimState, key: ApiKey, body: dict[str, Any], files: Any, ctx: Ctx) -> Reply:
    model = ctx.model
    if model is None:
        raise bad("you must provide a model parameter", param="model")
    if body.get("stream_options") is not None and not ctx.stream:
        raise bad("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                  param="stream_options")
    if not key.knows(model):
        raise Fail(404, f"The model `{model}` does not exist or you do not have access to it.")
    conv = openai_conversation(body)
    search_model = "search" in model
    if body.get("web_search_options") is not None and not search_model:
        raise bad("Web search options not supported with this model.", param="web_search_options")
    if search_model and body.get("tools"):
        raise bad("Function calling is not supported with this model.", param="tools")
    conv.search = search_model
    ans = state.compose(conv, key.who, model)
    annotations = citations(ans.search) if ans.search else []
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
        msg: dict[str, Any] = {"role": "assistant", "content": ans.text, "refusal": None, "annotations": annotations}
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

    n = state.conf["events"]
    if call:
        start = {**call, "index": 0, "function": {"name": call["function"]["name"], "arguments": ""}}
        events = [chunk({"role": "assistant", "content": None, "tool_calls": [start], "refusal": None})]
        events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
                   for piece in split_text(call["function"]["arguments"], n)]
    else:
        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        events += [chunk({"content": piece}) for piece in split_text(ans.text or "", n)]
        if annotations:
            events.append(chunk({"annotations": annotations}))
    events.append(chunk({}, finish))
    if with_usage:
        events.append(b"data: " + dumps({"id": cid, "object": "chat.completion.chunk", "created": created,
                                         "model": model, "service_tier": "default",
                                         "system_fingerprint": "fp_sim", "choices": [], "usage": usage}) + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return sse_reply(events)

def citations(query: str) -> list[dict[str, Any]]:
    """A search model's url_citation annotations: character offsets into the message content."""
    hits = search_hits(query)
    return [{"type": "url_citation", "url_citation": {"start_index": start, "end_index": end,
                                                      "title": hits[i].title, "url": hits[i].url}}
            for start, end, sources in search_answer(query)[1] for i in sources]


ENDPOINTS: dict[str, Any] = {"/chat/completions": chat, "/embeddings": embeddings.create,
                             "/images/generations": images.generate, "/images/edits": images.edit}

