"""Google Cloud Code (v1internal), as strict as the live service is with Antigravity's calls:
the client identity, onboarding (loadCodeAssist / onboardUser), the catalogue and quota
(fetchAvailableModels), generation in the envelope (generateContent / streamGenerateContent)
with the catalogue's limits and the Claude models' rules, countTokens. Any path prefix before
/v1internal: works, so tests can tell endpoints apart."""

from __future__ import annotations

import hashlib
import re
import secrets
import string
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from . import claude
from .catalogue import DEPRECATED, AccountModel, family
from .core import Answer, Conv, Ctx, Reply, Req, json_reply
from .gemini_body import (check_signatures, gemini_call_id, gemini_conversation, gemini_docs, gemini_reply,
                          image_model, image_model_rules)
from .oauth import google_auth
from .refusals import OUTDATED_TEXT, refuse
from .util import IMAGE_TOKENS, camel, dumps, duration, estimate_tokens, iso, parse_iso, thinking_model

if TYPE_CHECKING:
    from .state import GoogleAccount, SimState

V1INTERNAL_RE = re.compile(r"^(?P<prefix>.*)/v1internal:(?P<method>[A-Za-z]+)$")
# Antigravity's own form (with x-client-name / x-client-version), and CLIProxyAPI's.
APP_UA_RE = re.compile(r"^Antigravity/(\d+\.\d+\.\d+) \([^()]+\) Chrome/[\d.]+ Electron/[\d.]+$")
HUB_UA_RE = re.compile(r"^antigravity/hub/(\d+\.\d+\.\d+) \S+/\S+")
HUB_FLOOR = "2.9.0"
PLATFORMS = {"linux": "X11; Linux x86_64", "darwin": "Macintosh; Intel Mac OS X 10_15_7",
             "win32": "Windows NT 10.0; Win64; x64"}
TIERS: tuple[dict[str, Any], ...] = (
    {"id": "free-tier", "name": "Antigravity Free", "description": "Antigravity for individuals.",
     "userDefinedCloudaicompanionProject": False, "isDefault": True},
    {"id": "standard-tier", "name": "Antigravity Standard", "description": "Antigravity with your own project.",
     "userDefinedCloudaicompanionProject": True},
)
TIER_IDS = tuple(t["id"] for t in TIERS)
ONBOARD_TYPE = "type.googleapis.com/google.internal.cloud.code.v1internal.OnboardUserResponse"
GENERATE_PERMISSION = "cloudaicompanion.companions.generateChat"
MODELS_PERMISSION = "cloudaicompanion.companions.fetchAvailableModels"
BASE62 = string.ascii_letters + string.digits
REQUEST_TYPES = ("agent", "image_gen", "web_search")
Body = dict[str, Any]


def client_headers(version: str = "4.3.0", platform: str = "linux") -> dict[str, str]:
    """The identity Antigravity sends on every v1internal call (what the gateway must send)."""
    return {"user-agent": f"Antigravity/{version} ({PLATFORMS[platform]}) Chrome/132.0.6834.160 Electron/39.2.3",
            "x-client-name": "antigravity", "x-client-version": version}


def version(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def current_client(headers: dict[str, str], floor: str) -> bool:
    """Is this a supported Antigravity client? Anything else gets the 'no longer supported' answer."""
    ua = headers.get("user-agent", "")
    if m := APP_UA_RE.match(ua):
        return (headers.get("x-client-name") == "antigravity" and headers.get("x-client-version") == m[1]
                and version(m[1]) >= version(floor))
    if m := HUB_UA_RE.match(ua):
        return version(m[1]) >= version(HUB_FLOOR)
    return False


def handle(state: SimState, req: Req, ctx: Ctx) -> Reply:
    m = V1INTERNAL_RE.match(req.path)
    method = m["method"] if m else ""
    if req.method != "POST" or method not in METHODS:
        raise refuse("v1_method_not_found", method=method)
    acct = google_auth(state, req)
    ctx.who = acct.who
    body = req.json_object()
    return METHODS[method](state, req, ctx, acct, body)


def check_client(state: SimState, req: Req) -> None:
    if not current_client(req.headers, state.conf["min_client_version"]):
        raise refuse("client_outdated")


def check_project(acct: GoogleAccount, project: Any, permission: str) -> None:
    """Only the account's own project serves it, and an account never onboarded has none."""
    if not project or project != (acct.project if acct.onboarded else None):
        raise refuse("project_denied", project=project if isinstance(project, str) else "", permission=permission)


def servable(acct: GoogleAccount, model: Any) -> AccountModel:
    """The account's catalogue entry for `model`; internal, retired and unknown names are 404."""
    entry = acct.models.get(model) if isinstance(model, str) else None
    if entry is None or entry.spec.internal:
        raise refuse("model_not_found", model=model)
    return entry


# --------------------------------------------------------------------------- housekeeping


def load(state: SimState, req: Req, ctx: Ctx, acct: GoogleAccount, body: Body) -> Reply:
    ctx.meta = True

    def make() -> Reply:
        check_client(state, req)
        if not isinstance(body.get("metadata"), dict):
            raise refuse("metadata_required")
        answer: dict[str, Any] = {"allowedTiers": list(TIERS), "gcpManaged": False}
        if acct.onboarded:
            current = next(t for t in TIERS if t["id"] == acct.tier)
            answer = {"cloudaicompanionProject": acct.project, "currentTier": current, **answer}
        return json_reply(answer)
    return state.run(ctx, make)


def onboard(state: SimState, req: Req, ctx: Ctx, acct: GoogleAccount, body: Body) -> Reply:
    """A long-running operation: not done for the account's first `onboard_polls` calls."""
    ctx.meta = True

    def make() -> Reply:
        check_client(state, req)
        if not isinstance(body.get("metadata"), dict):
            raise refuse("metadata_required")
        tier = body.get("tier_id", body.get("tierId"))
        if tier not in TIER_IDS:
            raise refuse("tier_unknown", tier=tier, allowed=", ".join(TIER_IDS))
        name = "operations/onboard-" + hashlib.sha256(acct.email.encode()).hexdigest()[:12]
        if not acct.onboarded and acct.onboard_polls > 0:
            acct.onboard_polls -= 1
            return json_reply({"name": name, "done": False})
        if not acct.onboarded:
            acct.onboarded, acct.tier = True, tier
        return json_reply({"name": name, "done": True, "response": {
            "@type": ONBOARD_TYPE, "cloudaicompanionProject": {"id": acct.project, "name": acct.project}}})
    return state.run(ctx, make)


def models(state: SimState, req: Req, ctx: Ctx, acct: GoogleAccount, body: Body) -> Reply:
    """The catalogue with quota; the project is optional (CLIProxyAPI sends {}), a foreign one is 403."""
    ctx.meta = True

    def make() -> Reply:
        check_client(state, req)
        if body.get("project") is not None:
            check_project(acct, body["project"], MODELS_PERMISSION)
        listed = {}
        for name, entry in acct.models.items():
            refill(entry.quota)
            listed[name] = entry.listing()
        retired = {old: {"newModelId": new} for old, new in DEPRECATED.items() if old not in acct.models}
        return json_reply({"models": listed, "deprecatedModelIds": retired})
    return state.run(ctx, make)


def refill(quota: dict[str, Any]) -> None:
    """A quota whose reset time has passed is full again, as on the real service."""
    reset = parse_iso(quota.get("resetTime"))
    if quota.get("remainingFraction", 1.0) <= 0 and reset is not None and reset <= datetime.now(UTC):
        quota["remainingFraction"] = 1.0
        quota["resetTime"] = iso(datetime.now(UTC) + timedelta(hours=5))


def check_quota(entry: AccountModel, model: str) -> None:
    quota = entry.quota
    refill(quota)
    reset = parse_iso(quota.get("resetTime"))
    if quota.get("remainingFraction", 1.0) <= 0 and reset is not None:
        wait = (reset - datetime.now(UTC)).total_seconds()
        raise refuse("quota_exhausted", delay=duration(wait), retry_delay=f"{max(wait, 0):.3f}s",
                     metadata={"model": model, "quotaResetDelay": duration(wait), "quotaResetTimeStamp": iso(reset)})


# --------------------------------------------------------------------------- generation


def generate(state: SimState, req: Req, ctx: Ctx, acct: GoogleAccount, body: Body) -> Reply:
    ctx.stream = req.path.endswith(":streamGenerateContent")
    model = body.get("model")
    ctx.model = model if isinstance(model, str) else None
    inner = body.get("request")
    session = inner.get("sessionId") if isinstance(inner, dict) else None
    ctx.session = session if isinstance(session, str) else None
    sse = ctx.sse = req.query.get("alt") == "sse"
    request_type = body.get("requestType")
    ctx.request_type = request_type if isinstance(request_type, str) else None

    def make() -> Reply:
        if not current_client(req.headers, state.conf["min_client_version"]):
            if state.conf["outdated_reply"] == "error":
                raise refuse("client_outdated")
            return outdated(state, ctx, body, sse)
        check_project(acct, body.get("project"), GENERATE_PERMISSION)
        for key in ("model", "request", "userAgent", "requestType", "requestId"):
            if not body.get(key):
                raise refuse("envelope_field", field=key)
        entry = servable(acct, model)
        if not isinstance(inner, dict):
            raise refuse("envelope_request")
        check_quota(entry, model)
        conv, turns = gemini_conversation(inner, "request")
        gen = {camel(k): v for k, v in (camel_get(inner, "generationConfig") or {}).items()}
        asked = gen.get("maxOutputTokens")
        if isinstance(asked, int) and asked > entry.spec.max_output:
            raise refuse("max_output_tokens", asked=asked, limit=entry.spec.max_output)
        fam = family(model)
        check_request_type(conv, inner, model, request_type)
        if conv.search and fam != "gemini":
            raise refuse("search_model", model=model)
        if fam == "claude":
            conv.thinking = claude.check(inner, turns, state.issued["claude"])
        else:
            check_signatures(model, turns, state.issued[fam])
        ans = state.compose(conv, acct.who, model)
        docs = gemini_docs(ans, model, ctx.stream, fam != "claude" and (thinking_model(model) or conv.thinking),
                           lambda: state.sign(fam), state.conf["events"], CALL_IDS.get(fam, gemini_call_id))
        return enveloped(docs, ctx.stream, sse)
    return state.run(ctx, make)


def check_request_type(conv: Conv, inner: Body, model: str, request_type: Any) -> None:
    """Image models are served as `image_gen` requests, and only they are; search may come as
    `agent` or `web_search`."""
    if request_type not in REQUEST_TYPES:
        raise refuse("request_type", value=request_type)
    if image_model(model):
        if request_type != "image_gen":
            raise refuse("image_gen_needed", model=model, value=request_type)
        image_model_rules(conv, inner, model)
    elif request_type == "image_gen":
        raise refuse("image_gen_model", model=model)


def camel_get(obj: dict[str, Any], key: str) -> Any:
    """A proto-JSON field given in camelCase or snake_case."""
    return next((v for k, v in obj.items() if camel(k) == key), None)


def claude_call_id() -> str:
    return "toolu_vrtx_01" + "".join(secrets.choice(BASE62) for _ in range(22))


CALL_IDS: dict[str, Callable[[], str]] = {"claude": claude_call_id}


def enveloped(docs: list[dict[str, Any]], stream: bool, sse: bool) -> Reply:
    """Cloud Code wraps every answer document: {"response": ..., "traceId": ...}."""
    trace = secrets.token_hex(8)
    return gemini_reply([{"response": d, "traceId": trace} for d in docs], stream, sse)


def outdated(state: SimState, ctx: Ctx, body: Body, sse: bool) -> Reply:
    """What the service tells a client it no longer supports: a plain answer saying so."""
    prompt = estimate_tokens(len(dumps(body.get("request") or {})))
    ans = Answer(OUTDATED_TEXT, None, None, prompt, 0, estimate_tokens(OUTDATED_TEXT), 0)
    docs = gemini_docs(ans, ctx.model or "unknown", ctx.stream, False, lambda: "", state.conf["events"])
    return enveloped(docs, ctx.stream, sse)


def count(state: SimState, req: Req, ctx: Ctx, acct: GoogleAccount, body: Body) -> Reply:
    inner = body.get("request")
    model = inner.get("model") if isinstance(inner, dict) else None
    ctx.model = model.removeprefix("models/") if isinstance(model, str) else None

    def make() -> Reply:
        check_client(state, req)
        if not isinstance(inner, dict):
            raise refuse("count_request")
        if ctx.model is None:
            raise refuse("count_model")
        servable(acct, ctx.model)
        conv, _ = gemini_conversation(inner, "request")
        return json_reply({"totalTokens": estimate_tokens(conv.chars) + IMAGE_TOKENS * conv.image_count})
    return state.run(ctx, make)


METHODS: dict[str, Callable[[SimState, Req, Ctx, GoogleAccount, Body], Reply]] = {
    "loadCodeAssist": load, "onboardUser": onboard, "fetchAvailableModels": models,
    "generateContent": generate, "streamGenerateContent": generate, "countTokens": count,
}
