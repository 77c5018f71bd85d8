"""Google OAuth: the token endpoint (refresh_token and PKCE authorization_code grants) and
userinfo; the access tokens it issues are what Cloud Code checks."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from .core import Ctx, Reply, Req, json_reply
from .errors import Fail, bad
from .refusals import refuse

if TYPE_CHECKING:
    from .state import GoogleAccount, SimState

GOOGLE_SCOPES = "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email"


def handle(state: SimState, req: Req, ctx: Ctx) -> Reply:
    if req.path.endswith("/userinfo"):
        acct = google_auth(state, req)
        ctx.who = acct.who
        return json_reply({"email": acct.email, "verified_email": True,
                           "id": str(int(hashlib.sha1(acct.email.encode()).hexdigest()[:15], 16))})
    if req.method != "POST":
        raise Fail(404, "Not found")
    form = read_form(req)
    if (acct := state.accounts.get(form.get("refresh_token", ""))) is not None:
        ctx.who = acct.who
    return state.run(ctx, lambda: token_grant(state, form, ctx))


def read_form(req: Req) -> dict[str, str]:
    if "json" in req.headers.get("content-type", ""):
        return {k: str(v) for k, v in req.json_object().items()}
    return dict(parse_qsl(req.body.decode("utf-8", "replace")))


def token_grant(state: SimState, form: dict[str, str], ctx: Ctx) -> Reply:
    if (form.get("client_id"), form.get("client_secret")) != (state.conf["client_id"], state.conf["client_secret"]):
        raise Fail(401, "The OAuth client was not found.", code="invalid_client")
    grant = form.get("grant_type")
    if grant == "refresh_token":
        acct = state.accounts.get(form.get("refresh_token", ""))
        if acct is None or acct.revoked:
            raise bad("Token has been expired or revoked.", code="invalid_grant")
        acct.refresh_count += 1
        return json_reply(issue(state, acct))
    if grant == "authorization_code":
        return json_reply(exchange_code(state, form, ctx))
    raise bad(f"Invalid grant_type: {grant}", code="unsupported_grant_type")


def issue(state: SimState, acct: GoogleAccount) -> dict[str, Any]:
    now = time.time()
    for tok in [t for t, (_, exp) in state.tokens.items() if exp <= now]:
        del state.tokens[tok]
    token = "ya29.sim-" + secrets.token_urlsafe(24)
    state.tokens[token] = (acct, now + acct.access_token_ttl)
    return {"access_token": token, "expires_in": acct.access_token_ttl, "token_type": "Bearer",
            "scope": GOOGLE_SCOPES}


def exchange_code(state: SimState, form: dict[str, str], ctx: Ctx) -> dict[str, Any]:
    entry = state.codes.get(form.get("code", ""))
    if entry is None:
        raise bad("Malformed auth code.", code="invalid_grant")
    if entry["redirect_uri"] and entry["redirect_uri"] != form.get("redirect_uri"):
        raise bad("Bad Request", code="redirect_uri_mismatch")
    verifier = form.get("code_verifier", "")
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    if not verifier or challenge != entry["challenge"]:
        raise bad("Invalid code verifier.", code="invalid_grant")
    del state.codes[form["code"]]
    acct = state.accounts.get(entry["refresh_token"])
    if acct is None:
        state.add_google_account(entry["refresh_token"], entry["email"], entry["project"])
        acct = state.accounts[entry["refresh_token"]]
    ctx.who = acct.who
    return {**issue(state, acct), "refresh_token": acct.refresh_token}


def google_auth(state: SimState, req: Req) -> GoogleAccount:
    """The account behind the request's OAuth access token (401 as Google words it otherwise)."""
    token = req.bearer()
    if token is None:
        raise refuse("credentials_missing")
    entry = state.tokens.get(token)
    if entry is None or entry[1] <= time.time():
        raise refuse("access_token_expired")
    return entry[0]
