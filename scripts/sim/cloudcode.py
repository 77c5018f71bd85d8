"""Google Cloud Code (v1internal), as Antigravity uses it: loadCodeAssist / onboardUser,
fetchAvailableModels (catalogue and quota), generateContent / streamGenerateContent in the
envelope, countTokens. Any path prefix before /v1internal: works, so tests can tell endpoints apart."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from .core import Ctx, Reply, Req, json_reply
from .refusals import refuse
from .gemini_body import check_signatures, gemini_conversation, gemini_docs, gemini_reply
from .oauth import google_auth
from .util import IMAGE_TOKENS, duration, estimate_tokens, iso, parse_iso, thinking_model

if TYPE_CHECKING:
    from .state import GoogleAccount, SimState

V1INTERNAL_RE = re.compile(r"^(?P<prefix>.*)/v1internal:(?P<method>[A-Za-z]+)$")
Body = dict[str, Any]


def handle(state: SimState, req: Req, ctx: Ctx) -> Reply:
    m = V1INTERNAL_RE.match(req.path)
    method = m["method"] if m else ""
    if req.method != "POST" or method not in METHODS:
        raise refuse("v1_method_not_found", method=method)
    acct = google_auth(state, req)
    ctx.who = acct.who
    body = req.json_object()
    return METHODS[method](state, req, ctx, acct, body, method)


def load(state: SimState, req: Req, ctx: Ctx, acct: GoogleAccount, body: Body, method: str) -> Reply:
    ctx.meta = True

    def make() -> Reply:
        if not isinstance(body.get("metadata"), dict):
            raise refuse("metadata_required")
        tier = {"id": "standard-tier", "name": "Gemini Code Assist", "userDefinedCloudaicompanionProject": True}
        if method == "onboardUser":
            return json_reply({"done": True, "response": {"cloudaicompanionProject": {"id": acct.project}}})
        return json_reply({"cloudaicompanionProject": acct.project, "currentTier": tier,
                           "allowedTiers": [{**tier, "isDefault": True}], "gcpManaged": False})
    return state.run(ctx, make)


def models(state: SimState, req: Req, ctx: Ctx, acct: GoogleAccount, body: Body, method: str) -> Reply:
    ctx.meta = True

    def make() -> Reply:
        check_project(acct, body)
        listed = {}
        for name, quota in acct.models.items():
            refill(quota)
            listed[name] = {"displayName": name.replace("-", " ").title(), "quotaInfo": dict(quota),
                            "maxTokens": 1048576, "maxOutputTokens": 65536, "supportsImages": True,
                            "supportsThinking": thinking_model(name), "recommended": True}
        return json_reply({"models": listed})
    return state.run(ctx, make)


def check_project(acct: GoogleAccount, body: Body) -> None:
    project = body.get("project")
    if not project:
        raise refuse("project_required")
    if project != acct.project:
        raise refuse("project_foreign", project=project)


def refill(quota: dict[str, Any]) -> None:
    """A quota whose reset time has passed is full again, as on the real service."""
    reset = parse_iso(quota.get("resetTime"))
    if quota.get("remainingFraction", 1.0) <= 0 and reset is not None and reset <= datetime.now(UTC):
        quota["remainingFraction"] = 1.0
        quota["resetTime"] = iso(datetime.now(UTC) + timedelta(hours=5))


def check_quota(acct: GoogleAccount, model: str) -> None:
    quota = acct.models[model]
    refill(quota)
    reset = parse_iso(quota.get("resetTime"))
    if quota.get("remainingFraction", 1.0) <= 0 and reset is not None:
        wait = (reset - datetime.now(UTC)).total_seconds()
        raise refuse("quota_exhausted", delay=duration(wait), retry_delay=f"{max(wait, 0):.3f}s",
                     metadata={"model": model, "quotaResetDelay": duration(wait), "quotaResetTimeStamp": iso(reset)})


def generate(state: SimState, req: Req, ctx: Ctx, acct: GoogleAccount, body: Body, method: str) -> Reply:
    ctx.stream = method == "streamGenerateContent"
    model = body.get("model")
    ctx.model = model if isinstance(model, str) else None

    def make() -> Reply:
        for key in ("project", "model", "request", "userAgent", "requestType", "requestId"):
            if not body.get(key):
                raise refuse("envelope_field", field=key)
        check_project(acct, body)
        if model not in acct.models:
            raise refuse("model_not_found", model=model)
        if not isinstance(body["request"], dict):
            raise refuse("envelope_request")
        check_quota(acct, model)
        conv, turns = gemini_conversation(body["request"], "request")
        check_signatures(model, turns, state.issued["google"])
        ans = state.compose(conv, acct.who, model)
        trace = secrets.token_hex(8)
        docs = gemini_docs(ans, model, ctx.stream, thinking_model(model) or conv.thinking,
                           lambda: state.sign("google"), state.conf["events"])
        return gemini_reply([{"response": d, "traceId": trace} for d in docs], ctx.stream,
                            req.query.get("alt") == "sse")
    return state.run(ctx, make)


def count(state: SimState, req: Req, ctx: Ctx, acct: GoogleAccount, body: Body, method: str) -> Reply:
    inner = body.get("request")
    model = inner.get("model") if isinstance(inner, dict) else None
    ctx.model = model.removeprefix("models/") if isinstance(model, str) else None

    def make() -> Reply:
        if not isinstance(inner, dict):
            raise refuse("count_request")
        if ctx.model is None:
            raise refuse("count_model")
        if ctx.model not in acct.models:
            raise refuse("model_not_found", model=ctx.model)
        conv, _ = gemini_conversation(inner, "request")
        return json_reply({"totalTokens": estimate_tokens(conv.chars) + IMAGE_TOKENS * conv.image_count})
    return state.run(ctx, make)


METHODS: dict[str, Callable[..., Reply]] = {
    "loadCodeAssist": load, "onboardUser": load, "fetchAvailableModels": models,
    "generateContent": generate, "streamGenerateContent": generate, "countTokens": count,
}
