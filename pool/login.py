"""`switchyard accounts login`: add a Google account through the browser (OAuth 2 with PKCE).

The browser comes back to a one-shot listener on 127.0.0.1 (an ephemeral port) that checks
`state` and takes the code. With `--no-browser` (an SSH session) the URL is printed and the user
pastes the address the browser ended on — it cannot load, but it carries the code — or the code
alone; the listener still runs, so a local browser works too. The code is traded for a refresh
token at `token_url` (with the PKCE verifier), the email comes from `userinfo_url`, and the
account is added; logging in again as an email the pool knows replaces its token and enables it
(how an account disabled by `invalid_grant` comes back).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import secrets
import threading
import time
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO
from urllib.parse import parse_qs, urlencode, urlsplit


from . import google
from .accounts import Account, AccountStore, new_id
from .config import Config
from .paths import Home
from .state import StateFile
from .transport import Transport

# What Antigravity asks for: Cloud Code needs cloud-platform; the rest it uses for the user's
# identity, its logs and its experiments.
SCOPES = (
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
    "https://www.googleapis.com/auth/cclog",
    "https://www.googleapis.com/auth/experimentsandconfigs",
)
CALLBACK_PATH = "/oauth-callback"
DONE_PAGE = b"<!doctype html><title>Switchyard</title><p>Signed in. You can close this tab and return to the terminal.</p>"


class LoginError(Exception):
    """The login did not complete; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Pkce:
    verifier: str
    challenge: str  # S256 of the verifier
    state: str  # ties the redirect to this login

    @classmethod
    def new(cls) -> Pkce:
        verifier = secrets.token_urlsafe(64)
        digest = hashlib.sha256(verifier.encode()).digest()
        return cls(verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode(), secrets.token_urlsafe(24))


@dataclass(frozen=True, slots=True)
class LoggedIn:
    refresh_token: str
    email: str
    project: str | None


def authorization_url(auth_url: str, client_id: str, redirect_uri: str, pkce: Pkce) -> str:
    query = {
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "response_type": "code",
        "scope": " ".join(SCOPES),
        "state": pkce.state,
        "code_challenge": pkce.challenge,
        "code_challenge_method": "S256",
        "access_type": "offline",  # a refresh token, please
        "prompt": "consent",  # ...every time, not only on the first consent
    }
    return f"{auth_url}?{urlencode(query)}"


def code_from(text: str, state: str) -> str:
    """The code in what came back: a redirect URL or query (its state must match), or a bare code."""
    text = text.strip()
    if not text:
        raise LoginError("nothing was pasted")
    if "=" not in text:
        return text
    query = parse_qs(urlsplit(text).query if "?" in text else text)
    if query.get("state", [""])[0] != state:
        raise LoginError("the redirect does not belong to this login (state mismatch); start again")
    if error := query.get("error", [""])[0]:
        raise LoginError(f"Google refused the sign-in: {error}")
    code = query.get("code", [""])[0]
    if not code:
        raise LoginError("the redirect carries no code")
    return code


class Callback:
    """The loopback listener the browser is sent back to; answers once the state matches."""

    def __init__(self, state: str, result: asyncio.Future[str]) -> None:
        self.state = state
        self.result = result
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{self.port}{CALLBACK_PATH}"

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            target = head.split(b"\r\n", 1)[0].split(b" ")[1].decode("ascii", "replace")
            status, body = self._answer(target)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, IndexError):
            status, body = "400 Bad Request", b"bad request"
        writer.write(
            f"HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\ncontent-length: {len(body)}\r\n"
            "connection: close\r\n\r\n".encode() + body
        )
        try:
            await writer.drain()
        finally:
            writer.close()

    def _answer(self, target: str) -> tuple[str, bytes]:
        if urlsplit(target).path != CALLBACK_PATH:
            return "404 Not Found", b"not found"
        try:
            code = code_from(target, self.state)
        except LoginError as e:
            if "state mismatch" in str(e):  # not ours: leave the login waiting for the real one
                return "400 Bad Request", str(e).encode()
            if not self.result.done():
                self.result.set_exception(e)
            return "400 Bad Request", str(e).encode()
        if not self.result.done():
            self.result.set_result(code)
        return "200 OK", DONE_PAGE


def _read_pasted(stdin: TextIO, state: str, result: asyncio.Future[str]) -> None:
    """Reads one pasted line in a daemon thread (a blocked read must not hold the exit)."""
    loop = result.get_loop()

    def deliver(line: str) -> None:
        if result.done():
            return
        try:
            result.set_result(code_from(line, state))
        except LoginError as e:
            result.set_exception(e)

    threading.Thread(target=lambda: loop.call_soon_threadsafe(deliver, stdin.readline()), daemon=True).start()


async def login(
    config: Config, *, open_browser: bool, stdin: TextIO, say: Callable[[str], None], timeout: float = 300
) -> LoggedIn:
    upstream = config.upstreams.antigravity
    client_id, client_secret = upstream.oauth_client
    if not client_id or not client_secret:
        raise LoginError(google.MISSING_CLIENT)
    pkce = Pkce.new()
    result: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    callback = Callback(pkce.state, result)
    redirect_uri = await callback.start()
    url = authorization_url(upstream.auth_url, client_id, redirect_uri, pkce)
    try:
        if open_browser:
            say("Opening the browser to sign in with Google. If it does not open, visit:")
            say(url)
            webbrowser.open(url)
        else:
            say("Open this URL in a browser on any machine and sign in with Google:")
            say(url)
            say("The browser then fails to load a 127.0.0.1 address: paste that whole address here (or just its code):")
            _read_pasted(stdin, pkce.state, result)
        try:
            code = await asyncio.wait_for(result, timeout)
        except TimeoutError:
            raise LoginError(f"no sign-in within {timeout:.0f} s; run the command again") from None
    finally:
        callback.close()
    return await complete(config, code, pkce, redirect_uri)


async def complete(config: Config, code: str, pkce: Pkce, redirect_uri: str) -> LoggedIn:
    """Trades the code for a refresh token (with the PKCE verifier) and learns who signed in."""
    upstream = config.upstreams.antigravity
    client_id, client_secret = upstream.oauth_client
    async with Transport(proxy=config.network.proxy or None) as client:
        try:
            token = await google.exchange_code(
                client, upstream.token_url, client_id, client_secret, code=code, verifier=pkce.verifier, redirect_uri=redirect_uri
            )
            if not token.refresh_token:
                raise LoginError(
                    "Google returned no refresh token; remove Switchyard's access at "
                    "https://myaccount.google.com/permissions and log in again"
                )
            email = await google.user_email(client, upstream.userinfo_url, token.access_token)
        except google.GoogleError as e:
            raise LoginError(f"signing in failed: {e.verdict.error_class}: {e.verdict.message}") from None
        try:
            project: str | None = await google.project(client, upstream, google.fixed_token(token.access_token))
        except google.GoogleError:
            project = None  # found on first use; not a reason to fail the login
    return LoggedIn(token.refresh_token, email, project)


@dataclass(frozen=True, slots=True)
class Started:
    pkce: Pkce
    redirect_uri: str
    label: str | None
    at: float


class Pending:
    """Sign-ins begun in the dashboard: the browser leaves for Google and comes back to the
    gateway's own callback with `state`, which finds its PKCE verifier here (once)."""

    TTL = 600.0  # seconds a sign-in may take
    MAX = 32  # begun and not finished at once; the oldest go first

    def __init__(self) -> None:
        self._started: dict[str, Started] = {}

    def begin(self, config: Config, redirect_uri: str, label: str | None = None) -> str:
        """The URL to send the browser to."""
        upstream = config.upstreams.antigravity
        client_id, client_secret = upstream.oauth_client
        if not client_id or not client_secret:
            raise LoginError(google.MISSING_CLIENT)
        self._expire()
        while len(self._started) >= self.MAX:
            del self._started[next(iter(self._started))]
        pkce = Pkce.new()
        self._started[pkce.state] = Started(pkce, redirect_uri, label, time.monotonic())
        return authorization_url(upstream.auth_url, client_id, redirect_uri, pkce)

    def take(self, state: str) -> Started | None:
        """The sign-in this state belongs to, forgotten from now on; None when unknown or stale."""
        self._expire()
        return self._started.pop(state, None)

    def _expire(self) -> None:
        now = time.monotonic()
        for state in [s for s, started in self._started.items() if now - started.at > self.TTL]:
            del self._started[state]


def save(home: Home, found: LoggedIn, label: str | None = None) -> tuple[Account, bool]:
    """Adds the account, or renews the one with this email; (account, whether it is new)."""
    store = AccountStore(home.accounts_file)
    saved: list[tuple[Account, bool]] = []

    def change(accounts: list[Account]) -> None:
        for i, account in enumerate(accounts):
            if account.kind == "google" and account.email == found.email:
                update = {"secret": found.refresh_token, "enabled": True, "disabled_reason": None}
                if found.project and not account.project:
                    update["project"] = found.project
                if label:
                    update["label"] = label
                accounts[i] = account.model_copy(update=update)
                saved.append((accounts[i], False))
                return
        account = Account(
            id=new_id(), kind="google", secret=found.refresh_token, email=found.email, project=found.project, label=label or ""
        )
        accounts.append(account)
        saved.append((account, True))

    store.update(change)
    account, created = saved[0]
    if not created:
        StateFile(home.state_file).clear(account.id)
    return account, created
