"""Google accounts: OAuth token refresh and the Cloud Code (v1internal) housekeeping calls."""

from __future__ import annotations

import time
from dataclasses import dataclass

import json

from .health import ErrorClass, Verdict, classify, network_failure
from .models import Catalogue, read_catalogue
from .transport import Transport, TransportError

USER_AGENT = "antigravity/1.11.5 switchyard"


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


async def _call(client: Transport, endpoints: list[str], method: str, access_token: str, body: dict) -> dict:
    """POST to the first endpoint that answers; the next one on 404/408/5xx/network errors."""
    headers = {"authorization": f"Bearer {access_token}", "user-agent": USER_AGENT}
    verdict = Verdict(ErrorClass.NETWORK, "no endpoint configured")
    for endpoint in endpoints:
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
            if isinstance(data, dict):
                return data
            verdict = Verdict(ErrorClass.SERVER, f"{method} answered something that is not JSON", 200)
            continue
        verdict = classify(response.status_code, response.headers, content)
        if response.status_code not in (404, 408) and response.status_code < 500:
            break
    raise GoogleError(verdict)


async def load_code_assist(client: Transport, endpoints: list[str], access_token: str) -> str:
    """The Cloud Code project behind an account; every generate call must name it."""
    body = {"metadata": {"ideType": "ANTIGRAVITY", "platform": "PLATFORM_UNSPECIFIED", "pluginType": "GEMINI"}}
    data = await _call(client, endpoints, "loadCodeAssist", access_token, body)
    project = data.get("cloudaicompanionProject")
    if isinstance(project, dict):
        project = project.get("id")
    if not isinstance(project, str) or not project:
        raise GoogleError(Verdict(ErrorClass.FORBIDDEN, "loadCodeAssist returned no project for this account"))
    return project


async def fetch_available_models(
    client: Transport, endpoints: list[str], access_token: str, project: str
) -> Catalogue:
    """Each model the account may use (quota left, reset time, limits) and the deprecated names."""
    data = await _call(client, endpoints, "fetchAvailableModels", access_token, {"project": project})
    return read_catalogue(data)
