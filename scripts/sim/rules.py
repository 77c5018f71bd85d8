"""Misbehaviour on request (`behave`): which requests a rule matches and what it does to them."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .core import Ctx, Reply
from .errors import ERRORS, Fail, error_body
from .util import dumps

ACTIONS = {str(s) for s in ERRORS if s != 413} | {"stall", "drop", "garbage", "slow", "error200", "truncate",
                                                  "reset", "html"}
MATCH_KEYS = {"account", "model", "endpoint", "path", "kind"}
RULE_PARAMS: dict[str, tuple[type, ...]] = {  # behave() parameters and the JSON types they take
    "reason": (str,), "message": (str,), "retry_delay": (str,), "retry_after": (int, float, str),
    "quota_reset_delay": (str,), "quota_reset_timestamp": (str,), "validation_url": (str,),
    "seconds": (int, float), "after_events": (int,), "chunk_delay": (int, float),
    "rpc": (str,),  # the Google RPC status of the error (default: the usual one for its code)
    "status": (int,),  # error200 only: the code of the error the 200 carries (default 400)
}


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


def check_rule(action: str, match: dict[str, str], times: int | None, params: dict[str, Any]) -> None:
    """Refuses a rule the sim could not apply (ValueError, shown to the caller as a 400)."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; one of {', '.join(sorted(ACTIONS))}")
    if unknown := set(match) - MATCH_KEYS:
        raise ValueError(f"unknown match keys {sorted(unknown)}; allowed {sorted(MATCH_KEYS)}")
    if times is not None and (not isinstance(times, int) or times < 1):
        raise ValueError("times must be a positive integer or null")
    for name, value in params.items():
        if name not in RULE_PARAMS:
            raise ValueError(f"unknown parameter {name!r}; allowed {sorted(RULE_PARAMS)}")
        if value is not None and (not isinstance(value, RULE_PARAMS[name]) or isinstance(value, bool)):
            raise ValueError(f"parameter {name!r} has the wrong type")
    if "status" in params and (action != "error200" or params["status"] not in ERRORS):
        raise ValueError(f"parameter 'status' is for error200 only, one of {sorted(ERRORS)}")


def apply(rule: Rule, ctx: Ctx, make: Callable[[], Reply]) -> Reply:
    """The answer `rule` makes of this request; `make` gives the honest one."""
    rule.hits += 1
    if rule.times is not None:
        rule.times -= 1
    ctx.action, p = rule.action, rule.params
    if rule.action.isdigit():
        raise rule_fail(int(rule.action), p, ctx)
    if rule.action == "error200":
        return error200(rule_fail(p.get("status") or 400, p, ctx), ctx)
    after = p.get("after_events")
    if rule.action == "html":
        return Reply(200, HTML_PAGE, ctype="text/html; charset=utf-8")
    if rule.action == "garbage" and (after is None or not ctx.stream):
        return garbage(ctx.stream)
    if rule.action == "stall" and p.get("seconds") is None and after is None:
        return Reply(0, stall=math.inf)
    if rule.action == "drop" and not ctx.stream:
        return Reply(0, drop_after=0)
    reply = make()
    events = reply.events
    if p.get("chunk_delay") is not None:  # any action that sends events may pace them
        reply.chunk_delay = float(p["chunk_delay"])
    if rule.action == "stall":
        reply.stall = math.inf if p.get("seconds") is None else float(p["seconds"])
        if after is not None:
            reply.hold_at = after if events is not None else 0
    elif rule.action == "slow":
        reply.chunk_delay = float(p.get("chunk_delay", 0.1))
    elif rule.action == "drop":
        reply.drop_after = int(p.get("after_events", 1)) if events is not None else 0
    elif rule.action == "reset":
        reply.reset_at = (after or 0) if events is not None else 0
    elif rule.action == "garbage" and events is not None:
        reply.events = events[:after] + [GARBAGE_IN_ARRAY if _json_array(ctx) else GARBAGE_EVENT]
    elif rule.action == "truncate":
        if events is None:
            reply.body = reply.body[:len(reply.body) // 2]
        elif events:
            cut = min(1 if after is None else after, len(events) - 1)
            reply.events = events[:cut] + [events[cut][:len(events[cut]) // 2]]
    return reply


def _json_array(ctx: Ctx) -> bool:
    """Google's streams asked for without ?alt=sse come as a JSON array, not as SSE."""
    return ctx.kind in ("google", "gemini") and not ctx.sse


def rule_fail(status: int, p: dict[str, Any], ctx: Ctx) -> Fail:
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
                retry_after=None if p.get("retry_after") is None else str(p["retry_after"]), rpc=p.get("rpc"))


def error200(f: Fail, ctx: Ctx) -> Reply:
    """A 200 whose body, or first (and only) stream event, is the error in the upstream's dialect:
    what a fallback host sometimes does (an outdated client, an overloaded one)."""
    body = dumps(error_body(ctx.kind, f))
    if not ctx.stream:
        return Reply(200, body)
    if ctx.kind == "anthropic":
        return Reply(200, ctype="text/event-stream; charset=utf-8", events=[b"event: error\ndata: " + body + b"\n\n"])
    if ctx.kind in ("google", "gemini") and not ctx.sse:
        return Reply(200, events=[b"[" + body + b"\n]"])
    end = b"\r\n\r\n" if ctx.kind in ("google", "gemini") else b"\n\n"
    return Reply(200, ctype="text/event-stream; charset=utf-8", events=[b"data: " + body + end])


# A proxy's error page where an answer belongs (load balancers, captive portals, CDNs).
HTML_PAGE = (b"<!DOCTYPE html>\n<html><head><title>502 Bad Gateway</title></head>\n"
             b"<body><h1>Bad Gateway</h1><p>The upstream server is unreachable.</p></body></html>\n")
GARBAGE_EVENT = b'data: {"candidates": [{"content": <<not json>>\n\n'
GARBAGE_IN_ARRAY = b'\n,{"candidates": [{"content": <<not json>>'


def garbage(stream: bool) -> Reply:
    """A 200 that no client can parse: broken JSON, or a stream that is not SSE."""
    if stream:
        return Reply(200, ctype="text/event-stream", events=[b"<html>\x00 not an event {{{\n", b"data: {\"respo\n\n"])
    return Reply(200, b'{"response": {"candidates": [<<garbage>>')
