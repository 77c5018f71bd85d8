"""Google OAuth: the consent page (`/o/oauth2/v2/auth`: the user names an email and is sent back
with a code), the token endpoint (refresh_token and PKCE authorization_code grants) and userinfo;
the access tokens it issues are what Cloud Code checks."""

from __future__ import annotations

import base64
import hashlib
import html
import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlencode

from .core import Ctx, Reply, Req, json_reply
from .errors import Fail, bad
from .refusals import refuse

if TYPE_CHECKING:
    from .state import GoogleAccount, SimState

GOOGLE_SCOPES = "https://www.googleapis.com/auth/cloud-platform https://www.googleapis.com/auth/userinfo.email"


CONSENT_PATH = "/o/oauth2/v2/auth"


def handle(state: SimState, req: Req, ctx: Ctx) -> Reply:
    if req.path.endswith(CONSENT_PATH):
        return consent(state, req)
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


def consent(state: SimState, req: Req) -> Reply:
    """Google's sign-in and consent, reduced to naming an email: a form first (the user may
    type any email; a known one signs that account in again), then the redirect back to the
    client with a code bound to its PKCE challenge (what `add_auth_code` registers)."""
    q = req.query
    if q.get("client_id") != state.conf["client_id"]:
        return _page(400, "<h1>Error 401: invalid_client</h1><p>The OAuth client was not found.</p>")
    if q.get("response_type") != "code" or q.get("code_challenge_method") != "S256" or not q.get("code_challenge"):
        return _page(400, "<h1>Error 400: invalid_request</h1><p>Required parameter is missing: code_challenge (S256).</p>")
    redirect_uri = q.get("redirect_uri", "")
    if not redirect_uri.startswith(("http://127.0.0.1:", "http://localhost:", "http://[::1]:")):
        return _page(400, "<h1>Error 400: redirect_uri_mismatch</h1><p>Only loopback redirects are allowed for this client.</p>")
    email = q.get("email", "").strip()
    if not email:
        hidden = "".join(f'<input type="hidden" name="{html.escape(k)}" value="{html.escape(v)}">' for k, v in q.items())
        hint = html.escape(q.get("login_hint", ""))
        return _page(200, (
            "<h1>Sign in</h1><p>to continue to the app (simulated Google)</p>"
            f'<form method="get" action="{CONSENT_PATH}">{hidden}'
            f'<input id="email" name="email" type="email" placeholder="Email" value="{hint}" required> '
            '<button id="next" type="submit">Continue</button></form>'
        ))
    known = next((a for a in state.accounts.values() if a.email == email), None)
    refresh_token = known.refresh_token if known is not None else f"sim-refresh-{secrets.token_hex(12)}"
    code = f"4/sim-{secrets.token_urlsafe(16)}"
    state.codes[code] = {"challenge": q["code_challenge"], "refresh_token": refresh_token, "email": email,
                         "project": None, "redirect_uri": redirect_uri}
    back = urlencode({"state": q.get("state", ""), "code": code, "scope": q.get("scope", GOOGLE_SCOPES)})
    return Reply(302, b"", ctype="text/html; charset=utf-8", headers=[("location", f"{redirect_uri}?{back}")])


def _page(status: int, body: str) -> Reply:
    return Reply(status, f"<!doctype html><title>Sign in - Google Accounts</title>{body}".encode(),
                 ctype="text/html; charset=utf-8")


def google_auth(state: SimState, req: Req) -> GoogleAccount:
    """The account behind the request's OAuth access token (401 as Google words it otherwise)."""
    token = req.bearer()
    if token is None:
        raise refuse("credentials_missing")
    entry = state.tokens.get(token)
    if entry is None or entry[1] <= time.time():
        raise refuse("access_token_expired")
    return entry[0]
