"""The sim's state (accounts, keys, tokens, rules, log, settings, issued signatures), its control
operations and the request dispatch; no I/O, so it is easy to test and reason about."""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import math
import secrets
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any

from . import anthropic_api, cloudcode, control, gemini_api, oauth, openai_api
from .core import Answer, Conv, Ctx, Reply, Req, Who
from .catalogue import AccountModel, account_models, spec_for
from .defaults import DEFAULT_KEY_MODELS, DEFAULT_SETTINGS, FAMILIES, SETTING_CHECKS
from .errors import Fail, error_body
from .rules import Rule, apply, check_rule
from .util import (CALL_RE, IMAGE_OUTPUT_TOKENS, IMAGE_TOKENS, SEARCH_RE, THINKING_TEXT, dumps, estimate_tokens,
                   image_for, iso, mask, search_answer, signature_key)


@dataclass(slots=True)
class GoogleAccount:
    refresh_token: str
    email: str
    project: str  # its project once onboarded
    access_token_ttl: int
    models: dict[str, AccountModel]  # its catalogue, internal models included
    onboarded: bool = True
    onboard_polls: int = 0  # onboardUser calls still to answer "not done"
    tier: str = "free-tier"
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


class SimState:
    """All state changes happen under one lock: handlers run on the server's loop thread while
    tests call the control methods from theirs. The upstream modules read and change the
    package-level attributes (accounts, keys, tokens, codes, conf, issued) through `state`."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.reset()

    # ----------------------------------------------------------------- control operations

    def reset(self) -> None:
        """Forget accounts, keys, rules, tokens, codes, signatures, the log; default settings."""
        with self._lock:
            self.accounts: dict[str, GoogleAccount] = {}  # Google accounts by refresh token
            self.keys: dict[str, ApiKey] = {}
            self.tokens: dict[str, tuple[GoogleAccount, float]] = {}  # access token -> (account, expiry)
            self.codes: dict[str, dict[str, Any]] = {}
            self.conf: dict[str, Any] = dict(DEFAULT_SETTINGS)
            # Issued thought signatures by model family, each an ordered set: a signature belongs
            # to the family that made it (claude, gemini, openai), wherever the model was served.
            self.issued: dict[str, dict[bytes | str, None]] = {f: {} for f in FAMILIES}
            self._rules: list[Rule] = []
            self._log: deque[dict[str, Any]] = deque(maxlen=100_000)
            self._prefixes: set[bytes] = set()
            self._ids = itertools.count(1)

    def add_google_account(self, refresh_token: str, email: str | None = None, project: str | None = None,
                           access_token_ttl: int = 3600, models: dict[str, dict[str, Any]] | None = None,
                           onboarded: bool = True, onboard_polls: int = 0) -> dict[str, Any]:
        """Registers a Google OAuth account; a null project gets a generated one. `models` replaces
        today's catalogue (name -> optional remainingFraction, resetTime, maxOutputTokens,
        displayName, maxTokens); the internal models are always listed. An account not
        `onboarded` has no project until onboardUser is done, after `onboard_polls` "not done" answers."""
        if not isinstance(refresh_token, str) or not refresh_token:
            raise ValueError("refresh_token must be a non-empty string")
        if not isinstance(onboard_polls, int) or onboard_polls < 0:
            raise ValueError("onboard_polls must be a non-negative integer")
        with self._lock:
            n = next(self._ids)
            catalogue = account_models(models, iso(datetime.now(UTC) + timedelta(hours=5)))
            acct = GoogleAccount(refresh_token, email or f"user{n}@example.com", project or f"sim-project-{n}",
                                 int(access_token_ttl), catalogue, bool(onboarded), onboard_polls)
            self.accounts[refresh_token] = acct
            return self._google_public(acct)

    def add_api_key(self, key: str, kind: str, models: list[str] | None = None) -> dict[str, Any]:
        """Registers a Gemini, OpenAI or Anthropic key; models may use * globs."""
        if kind not in DEFAULT_KEY_MODELS:
            raise ValueError(f"kind must be one of {', '.join(DEFAULT_KEY_MODELS)}")
        if not isinstance(key, str) or not key:
            raise ValueError("key must be a non-empty string")
        with self._lock:
            self.keys[key] = ApiKey(key, kind, list(models or DEFAULT_KEY_MODELS[kind]))
            return {"label": mask(key), "kind": kind, "models": self.keys[key].models}

    def google_accounts(self) -> list[dict[str, Any]]:
        with self._lock:
            return [self._google_public(a) for a in self.accounts.values()]

    def api_keys(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{"label": mask(k.key), "kind": k.kind, "models": k.models} for k in self.keys.values()]

    def _google_public(self, a: GoogleAccount) -> dict[str, Any]:
        live = sum(1 for acct, exp in self.tokens.values() if acct is a and exp > time.time())
        return {"email": a.email, "project": a.project, "onboarded": a.onboarded, "onboard_polls": a.onboard_polls,
                "tier": a.tier if a.onboarded else None, "access_token_ttl": a.access_token_ttl,
                "refresh_count": a.refresh_count, "revoked": a.revoked, "live_tokens": live,
                "models": {name: m.public() for name, m in a.models.items()}}

    def behave(self, action: str, match: dict[str, str] | None = None, times: int | None = None,
               **params: Any) -> int:
        """Adds a misbehaviour rule; returns its id."""
        match = dict(match or {})
        check_rule(action, match, times, params)
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
                if k in SETTING_CHECKS and not SETTING_CHECKS[k][0](v):
                    raise ValueError(f"setting {k!r} must be {SETTING_CHECKS[k][1]}")
            self.conf.update(changes)
            return dict(self.conf)

    def revoke(self, refresh_token: str) -> None:
        """From now on this account's refresh token (named by itself or the account's email) gets
        invalid_grant, and its access tokens die."""
        with self._lock:
            acct = self._find_google(refresh_token)
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
            self.codes[code] = {"challenge": code_challenge, "refresh_token": refresh_token, "email": email,
                                 "project": project, "redirect_uri": redirect_uri}

    def set_quota(self, account: str, model: str, remainingFraction: float | None = None,
                  resetTime: str | None = None) -> dict[str, Any]:
        """Sets a v1internal model's quota (a model the account lacks joins its catalogue); at 0
        with a future resetTime generation gets QUOTA_EXHAUSTED."""
        with self._lock:
            acct = self._find_google(account)
            entry = acct.models.setdefault(model, AccountModel(spec_for(model), {
                "remainingFraction": 1.0, "resetTime": iso(datetime.now(UTC))}))
            q = entry.quota
            if remainingFraction is not None:
                q["remainingFraction"] = float(remainingFraction)
            if resetTime is not None:
                q["resetTime"] = resetTime
            return dict(q)

    def _find_google(self, account: str) -> GoogleAccount:
        for a in self.accounts.values():
            if account in (a.email, a.refresh_token):
                return a
        raise ValueError("unknown account")

    def _drop_tokens(self, acct: GoogleAccount) -> None:
        for tok in [t for t, (a, _) in self.tokens.items() if a is acct]:
            del self.tokens[tok]

    # ----------------------------------------------------------------- dispatch

    def handle(self, req: Req) -> Reply:
        """Answers one request (never raises): control, OAuth or one of the four upstreams."""
        with self._lock:
            if req.path.startswith("/_sim/"):
                reply = control.handle(self, req)
                if reply.status == 200 and req.path[len("/_sim/"):].strip("/").split("/")[0] not in ("log", "reset"):
                    self._log.append({"t": time.time(), "kind": "control", "account": None, "path": req.path,
                                      "model": None, "stream": False, "status": reply.status, "action": None,
                                      "session": None, "request_type": None})
                return reply
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
                reply.latency = self.conf["latency"]
            if reply.chunk_delay is None:
                reply.chunk_delay = self.conf["chunk_delay"]
            status = 0 if reply.drop_after == 0 or (reply.stall == math.inf and reply.hold_at is None) else reply.status
            self._log.append({"t": time.time(), "kind": ctx.kind, "account": ctx.who.label if ctx.who else None,
                              "path": ctx.path, "model": ctx.model, "stream": ctx.stream, "status": status,
                              "action": ctx.action, "session": ctx.session, "request_type": ctx.request_type})
            return reply

    def run(self, ctx: Ctx, make: Callable[[], Reply]) -> Reply:
        """Applies the first matching rule around `make` (the honest answer)."""
        rule = next((r for r in self._rules if (r.times is None or r.times > 0) and r.matches(ctx)), None)
        return make() if rule is None else apply(rule, ctx, make)

    # ----------------------------------------------------------------- shared answer logic

    def sign(self, issuer: str) -> str:
        """A new thought signature, remembered as issued by `issuer`."""
        sig = base64.b64encode(b"sim-sig:" + secrets.token_bytes(18)).decode()
        issued = self.issued[issuer]
        issued[signature_key(sig)] = None
        if len(issued) > 200_000:
            del issued[next(iter(issued))]
        return sig

    def compose(self, conv: Conv, who: Who, model: str) -> Answer:
        """The deterministic 'model': echo, tool call, tool result, thought, image notes; with a
        search tool, "[[search QUERY]]" searches (util.search_answer); an image model draws."""
        said = "\n".join(conv.texts)
        thought = THINKING_TEXT if conv.thinking or "[[think]]" in said else None
        call, text, query = None, None, None
        if conv.draw is not None:
            thought = None
            text = "image of: " + said[:200]
        elif conv.results is not None:
            text = "tool result: " + "; ".join(conv.results)
        elif (m := CALL_RE.search(said)) and m[1] in conv.tools:
            try:
                args = json.loads(m[2]) if m[2] else {}
            except ValueError:
                args = None
            call = (m[1], args) if isinstance(args, dict) else None
        elif conv.search and (m := SEARCH_RE.search(said)):
            query = m[1]
            text = search_answer(query)[0]
        if call is None and text is None:
            echoed = conv.texts[-1] if self.conf["echo_last_part"] and conv.texts else said
            text = "echo: " + echoed[:200]
        if text is not None and query is None:
            text += "".join(f"\nimage: {d}" for d in conv.images)
        prompt = estimate_tokens(conv.chars) + IMAGE_TOKENS * conv.image_count
        out = estimate_tokens(text) if text is not None else estimate_tokens(len(call[0]) + len(dumps(call[1])))
        image, image_tokens = None, 0
        if conv.draw is not None and text is not None:
            image, image_tokens = image_for(text, *conv.draw), IMAGE_OUTPUT_TOKENS[conv.draw[1]]
        return Answer(text, call, thought, prompt, self._cached(who, model, conv, prompt), out + image_tokens,
                      estimate_tokens(thought) if thought else 0, query, image, image_tokens)

    def _cached(self, who: Who, model: str, conv: Conv, prompt: int) -> int:
        """Implicit prompt caching: the longest proper prefix of turns this account sent to this
        model before counts as cached (so sticky routing visibly pays off)."""
        if not self.conf["prefix_cache"]:
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


def h_unknown(state: SimState, req: Req, ctx: Ctx) -> Reply:
    raise Fail(404, f"simupstream: nothing at {req.method} {req.path}")


def classify(req: Req) -> str:
    """Which upstream a path belongs to; the suffix rules let any base-URL prefix work."""
    p = req.path
    if "/v1internal:" in p:
        return "google"
    if p.startswith(("/v1beta/", "/v1alpha/")) or (p.startswith("/v1/models/") and ":" in p):
        return "gemini"  # google-genai uses /v1/ when given a base_url
    if p.endswith(("/token", "/userinfo", oauth.CONSENT_PATH)):
        return "oauth"
    if p.endswith(("/messages", "/messages/count_tokens")):
        return "anthropic"
    if p.endswith(("/chat/completions", "/embeddings", "/images/generations", "/images/edits")):
        return "openai"
    if p.endswith("/models") or "/models/" in p:
        if p.startswith("/v1/") and ("x-goog-api-key" in req.headers or "key" in req.query):
            return "gemini"
        return "anthropic" if "anthropic-version" in req.headers or "x-api-key" in req.headers else "openai"
    return "unknown"


HANDLERS: dict[str, Callable[[SimState, Req, Ctx], Reply]] = {
    "google": cloudcode.handle, "gemini": gemini_api.handle, "oauth": oauth.handle,
    "openai": openai_api.handle, "anthropic": anthropic_api.handle, "unknown": h_unknown,
}
