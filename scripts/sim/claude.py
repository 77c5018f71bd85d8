"""What Cloud Code refuses in a request for a Claude model (claude-*): the service hands the
body to Anthropic's API, so Anthropic's rules apply to the Gemini-shaped body, and its messages
come back (400 INVALID_ARGUMENT): tool ids, plain schemas, VALIDATED tool calling, a concrete
thinking budget below maxOutputTokens, Claude-signed thoughts, and a signed thought opening the
model turn of an open tool loop when thinking is on."""

from __future__ import annotations

from typing import Any

from .gemini_body import Turns
from .refusals import refuse
from .util import camel, signature_key

SCHEMA_KEYWORDS = frozenset((
    "$schema", "$id", "$ref", "$defs", "definitions", "const", "additionalProperties", "propertyNames",
    "patternProperties", "if", "then", "else", "not", "$comment", "default", "examples", "format", "pattern",
    "minLength", "maxLength", "minItems", "maxItems", "uniqueItems", "minimum", "maximum", "exclusiveMinimum",
    "exclusiveMaximum", "multipleOf", "deprecated"))
SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems", "any_of", "one_of", "all_of", "prefix_items")
MIN_BUDGET = 1024
BLOCK_TYPE = {"functionCall": "tool_use", "functionResponse": "tool_result",
              "inlineData": "image", "fileData": "document", "text": "text"}
Issued = dict[bytes | str, None]


def camel_keys(obj: Any) -> dict[str, Any]:
    return {camel(k): v for k, v in obj.items()} if isinstance(obj, dict) else {}


def check(request: dict[str, Any], turns: Turns, issued: Issued) -> bool:
    """Refuses what Anthropic would refuse; returns whether thinking is on (a budget was given).
    `request` passed the Gemini body checks; `issued` holds the Claude family's signatures."""
    req = camel_keys(request)
    check_ids(turns)
    decls = [camel_keys(d) for tool in req.get("tools") or []
             for d in camel_keys(tool).get("functionDeclarations") or []]
    for n, decl in enumerate(decls):
        for key in ("parameters", "parametersJsonSchema"):
            if key in decl:
                check_schema(decl[key], f"tools.{n}.custom.input_schema", decl.get("name", ""))
    if decls:
        mode = camel_keys(camel_keys(req.get("toolConfig")).get("functionCallingConfig")).get("mode")
        if mode != "VALIDATED":
            raise refuse("claude_tool_mode", mode=mode or "unset")
    gen = camel_keys(req.get("generationConfig"))
    budget = thinking_budget(camel_keys(gen.get("thinkingConfig")))
    if budget:
        max_out = gen.get("maxOutputTokens")
        if not isinstance(max_out, int) or max_out <= budget:
            raise refuse("claude_max_tokens")
    check_signatures(turns, issued)
    if budget:
        check_open_loop(turns)
    return budget > 0


def check_ids(turns: Turns) -> None:
    """Every tool call has an id, and every tool result names one made earlier."""
    calls: set[str] = set()
    for i, (_, parts) in enumerate(turns):
        for j, p in enumerate(parts):
            where = f"messages.{i}.content.{j}"
            if "functionCall" in p:
                cid = p["functionCall"].get("id")
                if not isinstance(cid, str) or not cid:
                    raise refuse("claude_call_id", where=where)
                calls.add(cid)
            elif "functionResponse" in p:
                rid = p["functionResponse"].get("id")
                if not isinstance(rid, str) or not rid:
                    raise refuse("claude_response_id", where=where)
                if rid not in calls:
                    raise refuse("claude_response_unmatched", where=where, id=rid)


def check_schema(schema: Any, where: str, tool: str, path: str = "#") -> None:
    """Keywords Anthropic's tool schemas do not take, at any depth (property names are not keywords)."""
    if not isinstance(schema, dict):
        return
    for key in schema:
        if key in SCHEMA_KEYWORDS or key.startswith("x-"):
            raise refuse("claude_schema_keyword", where=where, keyword=key, path=path, tool=tool)
    props = schema.get("properties")
    if isinstance(props, dict):
        for name, sub in props.items():
            check_schema(sub, where, tool, f"{path}/properties/{name}")
    items = schema.get("items")
    for i, sub in enumerate(items if isinstance(items, list) else [items]):
        check_schema(sub, where, tool, f"{path}/items" + (f"/{i}" if isinstance(items, list) else ""))
    for key in SUBSCHEMA_LISTS:
        for i, sub in enumerate(schema.get(key) or []):
            check_schema(sub, where, tool, f"{path}/{key}/{i}")


def thinking_budget(think: dict[str, Any]) -> int:
    """The thinking budget asked for (0: thinking off); Claude takes only a concrete one."""
    if "thinkingLevel" in think:
        raise refuse("claude_thinking_level", level=think["thinkingLevel"])
    budget = think.get("thinkingBudget")
    if budget is None or budget == 0:
        return 0
    if budget == -1:
        raise refuse("claude_budget_auto")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < MIN_BUDGET:
        raise refuse("claude_budget_low", budget=budget)
    return budget


def check_signatures(turns: Turns, issued: Issued) -> None:
    """Thoughts carry a Claude signature; no part carries anyone else's (Gemini's, the placeholder)."""
    for i, (_, parts) in enumerate(turns):
        for j, p in enumerate(parts):
            where = f"messages.{i}.content.{j}"
            sig = p.get("thoughtSignature")
            if p.get("thought") is True:
                if sig is None:
                    raise refuse("claude_thinking_unsigned", where=where)
                if signature_key(sig) not in issued:
                    raise refuse("claude_thinking_signature", where=where)
            elif sig is not None and signature_key(sig) not in issued:
                raise refuse("claude_foreign_signature", where=where)


def check_open_loop(turns: Turns) -> None:
    """With thinking on, the model turn whose calls the last user turn answers opens with a signed thought."""
    if len(turns) < 2 or not any("functionResponse" in p for p in turns[-1][1]):
        return
    first = turns[-2][1][0]
    if first.get("thought") is True and first.get("thoughtSignature"):
        return
    found = "thinking" if first.get("thought") is True else next(
        (BLOCK_TYPE[k] for k in BLOCK_TYPE if k in first), "text")
    raise refuse("claude_open_loop", index=len(turns) - 2, found=found)
