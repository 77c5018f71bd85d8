"""Google accounts: OAuth token refresh and the Cloud Code (v1internal) housekeeping calls."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from . import identity
from .config import AntigravityUpstream
from .health import ErrorClass, Verdict, classify, embedded_error, network_failure
from .models import Catalogue, read_catalogue
from .transport import Transport, TransportError

# force -> a live access token (force: a new one, even if the current one looks fresh)
TokenSource = Callable[[bool], Awaitable[str]]
ONBOARD_POLLS = 5  # onboardUser posts before giving up, ONBOARD_INTERVAL seconds apart
ONBOARD_INTERVAL = 2.0


@dataclass(slots=True)
class Token:
    access_token: str
    expires_at: float
    refresh_token: str | None = None  # Google may rotate it


class GoogleError(Exception):
    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.message)
        self.verdict = verdict


MISSING_CLIENT = (
    "no Google OAuth client configured: set upstreams.antigravity.client_id and client_secret in "
    "config.toml, or the environment variables SWITCHYARD_GOOGLE_CLIENT_ID and SWITCHYARD_GOOGLE_CLIENT_SECRET"
)


async def refresh_token(
    client: Transport, token_url: str, client_id: str, client_secret: str, refresh: str
) -> Token:
    """Trades a refresh token for an access token. `invalid_grant` means the user must act."""
    return await _token(client, token_url, client_id, client_secret, {"refresh_token": refresh, "grant_type": "refresh_token"})


async def exchange_code(
    client: Transport, token_url: str, client_id: str, client_secret: str, *, code: str, verifier: str, redirect_uri: str
) -> Token:
    """The authorization-code grant with PKCE: what `accounts login` gets back from the browser."""
    form = {"code": code, "code_verifier": verifier, "redirect_uri": redirect_uri, "grant_type": "authorization_code"}
    return await _token(client, token_url, client_id, client_secret, form)


async def _token(client: Transport, token_url: str, client_id: str, client_secret: str, form: dict[str, str]) -> Token:
    if not client_id or not client_secret:
        raise GoogleError(Verdict(ErrorClass.AUTH, MISSING_CLIENT))
    try:
        response, content = await client.fetch(
            "POST", token_url, form={"client_id": client_id, "client_secret": client_secret, **form}
        )
    except TransportError as e:
        raise GoogleError(network_failure(e)) from None
    if response.status_code != 200:
        verdict = classify(response.status_code, response.headers, content)
        if verdict.error_class is ErrorClass.BAD_REQUEST:
            verdict.error_class = ErrorClass.AUTH
        raise GoogleError(verdict)
    try:
        data = json.loads(content)
        return Token(
            access_token=str(data["access_token"]),
            expires_at=time.time() + float(data.get("expires_in", 3600)),
            refresh_token=data.get("refresh_token"),
        )
    except (ValueError, KeyError, TypeError):
        raise GoogleError(Verdict(ErrorClass.SERVER, "the token endpoint answered without an access_token")) from None


async def user_email(client: Transport, userinfo_url: str, access_token: str) -> str:
    """The signed-in user's address, from the OAuth userinfo endpoint."""
    try:
        response, content = await client.fetch("GET", userinfo_url, headers={"authorization": f"Bearer {access_token}"})
    except TransportError as e:
        raise GoogleError(network_failure(e)) from None
    if response.status_code != 200:
        raise GoogleError(classify(response.status_code, response.headers, content))
    try:
        email = json.loads(content).get("email")
    except (ValueError, AttributeError):
        email = None
    if not isinstance(email, str) or not email:
        raise GoogleError(Verdict(ErrorClass.SERVER, "the userinfo endpoint answered without an email"))
    return email


def fixed_token(access_token: str) -> TokenSource:
    """A token source for a token just issued (at sign-in): nothing to renew."""

    async def token(force: bool) -> str:
        return access_token

    return token


async def _call(client: Transport, upstream: AntigravityUpstream, method: str, token: TokenSource, body: dict) -> dict:
    """One housekeeping call. A 401 renews the access token once and tries again, as
    generation does: a token can die early (revoked sessions, clock skew)."""
    access_token = await token(False)
    try:
        return await _post(client, upstream, method, access_token, body)
    except GoogleError as e:
        if e.verdict.status != 401:
            raise
    return await _post(client, upstream, method, await token(True), body)


async def _post(client: Transport, upstream: AntigravityUpstream, method: str, access_token: str, body: dict) -> dict:
    """POST to the first endpoint that answers; the next one on 404/408/5xx/network errors."""
    headers = {"authorization": f"Bearer {access_token}", **identity.headers(upstream)}
    verdict = Verdict(ErrorClass.NETWORK, "no endpoint configured")
    for endpoint in upstream.endpoints:
        try:
            response, content = await client.fetch("POST", f"{endpoint}:{method}", json=body, headers=headers)
        except TransportError as e:
            verdict = network_failure(e)
            continue
        if response.status_code == 200:
            try:
                data = json.loads(content)
            except ValueError:
                data = None
            if isinstance(data, dict) and not isinstance(data.get("error"), dict):
                return data
            verdict = embedded_error(content) or Verdict(ErrorClass.SERVER, f"{method} answered something that is not JSON", 200)
            continue
        verdict = classify(response.status_code, response.headers, content)
        if response.status_code not in (404, 408) and response.status_code < 500:
            break
    raise GoogleError(verdict)


async def project(client: Transport, upstream: AntigravityUpstream, token: TokenSource) -> str:
    """The Cloud Code project behind an account; every generate call must name it. An account
    that never used Cloud Code has none until it is onboarded, which this does."""
    found, tier = await load_code_assist(client, upstream, token)
    return found or await onboard(client, upstream, token, tier)


async def load_code_assist(client: Transport, upstream: AntigravityUpstream, token: TokenSource) -> tuple[str | None, str]:
    """The account's project (None before onboarding) and the tier to onboard it to."""
    data = await _call(client, upstream, "loadCodeAssist", token, {"metadata": {"ideType": "ANTIGRAVITY"}})
    return _project_id(data.get("cloudaicompanionProject")), _default_tier(data)


async def onboard(client: Transport, upstream: AntigravityUpstream, token: TokenSource, tier: str) -> str:
    """onboardUser with the account's default tier, posted again until Google says it is done."""
    body = {
        "tier_id": tier,
        "metadata": {"ide_type": "ANTIGRAVITY", "ide_version": upstream.client_version, "ide_name": "antigravity"},
    }
    for attempt in range(ONBOARD_POLLS):
        if attempt:
            await asyncio.sleep(ONBOARD_INTERVAL)
        data = await _call(client, upstream, "onboardUser", token, body)
        if data.get("done") is not True:
            continue
        response = data.get("response")
        if found := _project_id(response.get("cloudaicompanionProject") if isinstance(response, dict) else None):
            return found
        raise GoogleError(Verdict(ErrorClass.FORBIDDEN, f"onboarding to the {tier} tier finished without a Cloud Code project"))
    raise GoogleError(Verdict(
        ErrorClass.SERVER, f"onboarding to the {tier} tier was not done after {ONBOARD_POLLS} tries; it is tried again on the next request",
    ))


def _project_id(value: object) -> str | None:
    """`cloudaicompanionProject` is a project id, or an object with one."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _default_tier(data: dict) -> str:
    """The tier to onboard to: the one Google marks as default, else the current one, else free."""
    tiers = data.get("allowedTiers")
    for tier in tiers if isinstance(tiers, list) else ():
        if isinstance(tier, dict) and tier.get("isDefault") is True and isinstance(tier.get("id"), str):
            return tier["id"]
    current = data.get("currentTier")
    if isinstance(current, dict) and isinstance(current.get("id"), str):
        return current["id"]
    return "free-tier"


async def fetch_available_models(
    client: Transport, upstream: AntigravityUpstream, token: TokenSource, project: str
) -> Catalogue:
    """Each model the account may use (quota left, reset time, limits) and the deprecated names."""
    try:
        data = await _call(client, upstream, "fetchAvailableModels", token, {"project": project})
    except GoogleError as e:
        if e.verdict.status != 403:
            raise
        data = await _call(client, upstream, "fetchAvailableModels", token, {})  # some accounts want no project
    return read_catalogue(data)
