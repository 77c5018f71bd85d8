"""Anthropic messages (any Anthropic-compatible base URL): key auth, model list, count_tokens,
the request checks Anthropic makes (pairing, thinking signatures), answers whole or streamed."""

from __future__ import annotations

import base64
import json
import re
import secrets
from typing import TYPE_CHECKING, Any, NamedTuple

from .core import Conv, Ctx, Reply, Req, json_reply, sse_reply
from .errors import Fail, bad
from .util import IMAGE_TOKENS, b64_size, dumps, estimate_tokens, search_answer, search_hits, signature_key, split_text

if TYPE_CHECKING:
    from .state import ApiKey, SimState

FAMILY = "claude"  # whose thinking signatures an Anthropic key issues and accepts (Claude on Cloud Code's too)

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
        elif str(t.get("type")).startswith("web_search_"):
            web_search_tool(t, f"tools.{i}.{t['type']}")
            conv.search = True
            continue
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


def web_search_tool(tool: dict[str, Any], where: str) -> None:
    """The web_search server tool, checked as Anthropic checks it."""
    if tool["name"] != "web_search":
        raise bad(f"{where}.name: Input should be 'web_search'")
    uses = tool.get("max_uses")
    if uses is not None and (isinstance(uses, bool) or not isinstance(uses, int) or uses < 1):
        raise bad(f"{where}.max_uses: Input should be greater than or equal to 1")
    if tool.get("allowed_domains") and tool.get("blocked_domains"):
        raise bad(f"{where}: allowed_domains and blocked_domains cannot be used together")


def search_blocks(query: str) -> list[dict[str, Any]]:
    """What Anthropic answers after a web search: the server tool call, its results, then the
    text, cited where a result backs it."""
    hits = search_hits(query)
    text, spans = search_answer(query)
    call_id = "srvtoolu_" + secrets.token_urlsafe(18).replace("-", "x")
    blocks: list[dict[str, Any]] = [
        {"type": "server_tool_use", "id": call_id, "name": "web_search", "input": {"query": query}},
        {"type": "web_search_tool_result", "tool_use_id": call_id, "content": [
            {"type": "web_search_result", "url": h.url, "title": h.title, "page_age": "April 1, 2026",
             "encrypted_content": base64.b64encode(("sim:" + h.url).encode()).decode()} for h in hits]},
    ]
    at = 0
    for start, end, sources in spans:
        if start > at:
            blocks.append({"type": "text", "text": text[at:start]})
        cited = [{"type": "web_search_result_location", "url": hits[i].url, "title": hits[i].title,
                  "cited_text": text[start:end], "encrypted_index": base64.b64encode(f"sim:{i}".encode()).decode()}
                 for i in sources]
        blocks.append({"type": "text", "text": text[start:end], "citations": cited})
        at = end
    if at < len(text):
        blocks.append({"type": "text", "text": text[at:]})
    return blocks


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


# --------------------------------------------------------------------------- answers


def handle(state: SimState, req: Req, ctx: Ctx) -> Reply:
    given = req.headers.get("x-api-key") or req.bearer()
    if not given:
        raise Fail(401, "x-api-key header is required")
    key = state.keys.get(given)
    if key is None or key.kind != "anthropic":
        raise Fail(401, "invalid x-api-key")
    ctx.who = key.who
    if "anthropic-version" not in req.headers:
        raise bad("anthropic-version: header is required")
    if req.method == "GET":
        ctx.meta = True
        return state.run(ctx, lambda: models(key, req.path))
    body = req.json_object()
    model = body.get("model")
    ctx.model = model if isinstance(model, str) else None
    beta = req.headers.get("anthropic-beta", "")
    if req.path.endswith("/count_tokens"):
        return state.run(ctx, lambda: count(state, key, body, beta))
    if req.method != "POST" or not req.path.endswith("/messages"):
        raise Fail(404, f"Not found: {req.method} {req.path}")
    ctx.stream = body.get("stream") is True
    return state.run(ctx, lambda: messages(state, key, body, beta, ctx))


def models(key: ApiKey, path: str) -> Reply:
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

def count(state: SimState, key: ApiKey, body: dict[str, Any], beta: str) -> Reply:
    conv = anthropic_conversation(body, state.issued[FAMILY], beta, need_max_tokens=False)
    if not key.knows(body["model"]):
        raise Fail(404, f"model: {body['model']}")
    return json_reply({"input_tokens": estimate_tokens(conv.chars) + IMAGE_TOKENS * conv.image_count})

def messages(state: SimState, key: ApiKey, body: dict[str, Any], beta: str, ctx: Ctx) -> Reply:
    conv = anthropic_conversation(body, state.issued[FAMILY], beta)
    model = body["model"]
    if not key.knows(model):
        raise Fail(404, f"model: {model}")
    ans = state.compose(conv, key.who, model)
    cached = ans.cached if "cache_control" in json.dumps(body.get("system")) + json.dumps(body["messages"]) else 0
    usage = {"input_tokens": ans.prompt - cached, "cache_creation_input_tokens": 0,
             "cache_read_input_tokens": cached, "output_tokens": ans.output + ans.thoughts}
    blocks: list[dict[str, Any]] = []
    if ans.thought:
        blocks.append({"type": "thinking", "thinking": ans.thought, "signature": state.sign(FAMILY)})
    if ans.call:
        blocks.append({"type": "tool_use", "id": "toolu_" + secrets.token_urlsafe(18), "name": ans.call[0],
                       "input": ans.call[1]})
    elif ans.search is not None:
        blocks += search_blocks(ans.search)
        usage["server_tool_use"] = {"web_search_requests": 1, "web_fetch_requests": 0}
    else:
        blocks.append({"type": "text", "text": ans.text})
    stop = "tool_use" if ans.call else "end_turn"
    message = {"id": "msg_" + secrets.token_urlsafe(18), "type": "message", "role": "assistant", "model": model,
               "content": blocks, "stop_reason": stop, "stop_sequence": None, "usage": usage}
    if not ctx.stream:
        return json_reply(message)
    return sse_reply(events(state, message, blocks, usage))

def events(state: SimState, message: dict[str, Any], blocks: list[dict[str, Any]],
                      usage: dict[str, int]) -> list[bytes]:
    def ev(kind: str, data: dict[str, Any]) -> bytes:
        return f"event: {kind}\ndata: ".encode() + dumps({"type": kind, **data}) + b"\n\n"

    n = state.conf["events"]
    start = {**message, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    out = [ev("message_start", {"message": start})]
    for i, b in enumerate(blocks):
        if b["type"] == "thinking":
            head = {"type": "thinking", "thinking": ""}
            deltas = [{"type": "thinking_delta", "thinking": t} for t in split_text(b["thinking"], n)]
            deltas.append({"type": "signature_delta", "signature": b["signature"]})
        elif b["type"] in ("tool_use", "server_tool_use"):
            head = {**b, "input": {}}
            args = dumps(b["input"]).decode()
            deltas = [{"type": "input_json_delta", "partial_json": t} for t in split_text(args, n)]
        elif b["type"] == "web_search_tool_result":
            head, deltas = b, []
        else:
            head = {"type": "text", "text": ""}
            deltas = [{"type": "citations_delta", "citation": c} for c in b.get("citations", [])]
            deltas += [{"type": "text_delta", "text": t} for t in split_text(b["text"], n)]
        out.append(ev("content_block_start", {"index": i, "content_block": head}))
        if i == 0:
            out.append(ev("ping", {}))
        out += [ev("content_block_delta", {"index": i, "delta": d}) for d in deltas]
        out.append(ev("content_block_stop", {"index": i}))
    end_usage: dict[str, Any] = {"output_tokens": usage["output_tokens"]}
    if "server_tool_use" in usage:
        end_usage["server_tool_use"] = usage["server_tool_use"]
    out.append(ev("message_delta", {"delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                    "usage": end_usage}))
    out.append(ev("message_stop", {}))
    return out
