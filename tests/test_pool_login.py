"""`switchyard accounts login` against the simulated upstream: Google's authorization-code flow
with PKCE (S256), driven the way a browser would, and the `--no-browser` paste for SSH sessions.
The sim has no consent screen: the test plays the user, registering the code for the challenge
it reads from the printed URL (as Google would after sign-in) and following the redirect.
"""

from __future__ import annotations

import asyncio

import base64
import hashlib
import io
import os
import subprocess
import threading
import time
import uuid
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
import tomli_w
from conftest import BIN, SIM_CLIENT
from pool_rig import home_of

from pool import login
from pool.accounts import AccountStore
from pool.config import parse
from pool.state import Cooldown, StateFile

SCOPES = {
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
    "https://www.googleapis.com/auth/cclog",
    "https://www.googleapis.com/auth/experimentsandconfigs",
}


def upstream(sim, **extra) -> dict:
    return {
        "upstreams": {
            "antigravity": {
                "endpoints": [f"{sim.url}/v1internal"], "token_url": f"{sim.url}/token",
                "auth_url": f"{sim.url}/o/oauth2/v2/auth", "userinfo_url": f"{sim.url}/userinfo", **extra,
            }
        }
    }


def consent(sim, url: str, email: str) -> tuple[str, dict[str, str]]:
    """What Google does after the user signs in: a code bound to the PKCE challenge. Returns the
    redirect the browser is sent to, and the authorization request's parameters."""
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    code = f"4/sim-{uuid.uuid4().hex}"
    sim.add_auth_code(code, query["code_challenge"], f"sim-refresh-{uuid.uuid4().hex}", email,
                      redirect_uri=query["redirect_uri"])
    return f"{query['redirect_uri']}?{urlencode({'state': query['state'], 'code': code, 'scope': query['scope']})}", query


async def test_browser_login_through_the_loopback_redirect(sim, tmp_path, monkeypatch):
    config = parse(upstream(sim, **SIM_CLIENT))
    said: list[str] = []
    browser: dict[str, object] = {}
    threads: list[threading.Thread] = []

    def open_browser(url: str) -> bool:
        def follow() -> None:
            redirect, browser["query"] = consent(sim, url, "browser@example.com")
            # Someone else's redirect (wrong state) is refused and does not end the login.
            forged = redirect.replace("state=", "state=forged")
            browser["forged"] = httpx.get(forged, timeout=10).status_code
            browser["page"] = httpx.get(redirect, timeout=10)

        threads.append(threading.Thread(target=follow, daemon=True))
        threads[0].start()
        return True

    monkeypatch.setattr(login.webbrowser, "open", open_browser)
    found = await login.login(config, open_browser=True, stdin=io.StringIO(), say=said.append, timeout=20)
    await asyncio.to_thread(threads[0].join, 10)  # the login may end before the browser reads its page
    query = browser["query"]
    assert found.email == "browser@example.com" and found.project  # project found via loadCodeAssist
    assert browser["forged"] == 400
    assert browser["page"].status_code == 200 and "close this tab" in browser["page"].text
    assert query["code_challenge_method"] == "S256" and query["response_type"] == "code"
    assert query["access_type"] == "offline" and query["prompt"] == "consent"
    assert set(query["scope"].split()) == SCOPES
    assert query["client_id"] == SIM_CLIENT["client_id"] and urlsplit(query["redirect_uri"]).hostname == "127.0.0.1"
    assert any(line.startswith(f"{sim.url}/o/oauth2/v2/auth?") for line in said)
    assert not any(found.refresh_token in line for line in said)


def test_pkce_challenge_is_s256_of_the_verifier():
    pkce = login.Pkce.new()
    digest = hashlib.sha256(pkce.verifier.encode()).digest()
    assert pkce.challenge == base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    assert 43 <= len(pkce.verifier) <= 128 and pkce.state != login.Pkce.new().state


@pytest.mark.parametrize(
    ("pasted", "expected"),
    [
        ("http://127.0.0.1:1/oauth-callback?state=S&code=4/abc&scope=x", "4/abc"),
        ("state=S&code=4/abc", "4/abc"),
        ("  4/bare-code  \n", "4/bare-code"),
        ("http://127.0.0.1:1/oauth-callback?state=T&code=4/abc", "state mismatch"),
        ("http://127.0.0.1:1/oauth-callback?state=S&error=access_denied", "refused the sign-in: access_denied"),
        ("", "nothing was pasted"),
    ],
)
def test_what_the_user_may_paste(pasted, expected):
    try:
        assert login.code_from(pasted, "S") == expected
    except login.LoginError as e:
        assert expected in str(e)


def run_cli(home, *args: str, stdin: str | None = None, env: dict | None = None, wait_url: bool = False):
    """The real `switchyard` command; with `wait_url`, the started process and the URL it printed."""
    full_env = {**os.environ, "SWITCHYARD_HOME": str(home), "BROWSER": "true", **(env or {})}
    argv = [str(BIN / "switchyard"), *args]
    if not wait_url:
        return subprocess.run(argv, env=full_env, input=stdin, capture_output=True, text=True, timeout=60)
    proc = subprocess.Popen(argv, env=full_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("http"):
            return proc, line.strip()
        if not line:
            break
    proc.kill()
    raise AssertionError(f"no URL printed: {proc.stderr.read() if proc.stderr else ''}")


def write_config(home, config: dict) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_bytes(tomli_w.dumps(config).encode())


def test_no_browser_login_reads_the_pasted_redirect(sim, tmp_path):
    write_config(tmp_path, upstream(sim, **SIM_CLIENT))
    proc, url = run_cli(tmp_path, "accounts", "login", "--no-browser", "--label", "ssh", wait_url=True)
    redirect, _ = consent(sim, url, "pasted@example.com")
    out, err = proc.communicate(redirect + "\n", timeout=60)
    assert proc.returncode == 0, err
    assert "added google account" in out and "pasted@example.com" in out
    [account] = AccountStore(home_of(tmp_path).accounts_file).load()
    assert (account.email, account.label, account.enabled) == ("pasted@example.com", "ssh", True)
    assert account.secret.startswith("sim-refresh-") and account.secret not in out + err


def test_no_browser_login_refuses_a_redirect_from_another_login(sim, tmp_path):
    write_config(tmp_path, upstream(sim, **SIM_CLIENT))
    proc, url = run_cli(tmp_path, "accounts", "login", "--no-browser", wait_url=True)
    redirect, _ = consent(sim, url, "other@example.com")
    out, err = proc.communicate(redirect.replace("state=", "state=x") + "\n", timeout=60)
    assert proc.returncode == 1 and "state mismatch" in err
    assert AccountStore(home_of(tmp_path).accounts_file).load() == []


def test_login_without_an_oauth_client_says_what_to_set(sim, tmp_path):
    write_config(tmp_path, upstream(sim))
    env = {"SWITCHYARD_GOOGLE_CLIENT_ID": "", "SWITCHYARD_GOOGLE_CLIENT_SECRET": ""}
    result = run_cli(tmp_path, "accounts", "login", "--no-browser", env=env)
    assert result.returncode == 1
    for needle in ("upstreams.antigravity.client_id", "client_secret", "SWITCHYARD_GOOGLE_CLIENT_ID", "SWITCHYARD_GOOGLE_CLIENT_SECRET"):
        assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_logging_in_again_renews_a_disabled_account(sim, tmp_path):
    home = home_of(tmp_path)
    first, _ = login.save(home, login.LoggedIn("sim-refresh-old", "again@example.com", None))
    AccountStore(home.accounts_file).modify(first.id, enabled=False, disabled_reason="invalid_grant: Token has been expired or revoked.")
    state_file = StateFile(home.state_file)
    state = state_file.load()
    state.of(first.id).cooldowns["*"] = Cooldown(until=time.time() + 600, error_class="auth")
    state_file.save(state)
    renewed, created = login.save(home, login.LoggedIn("sim-refresh-new", "again@example.com", "proj-9"))
    assert not created and renewed.id == first.id
    [account] = AccountStore(home.accounts_file).load()
    assert (account.secret, account.enabled, account.disabled_reason, account.project) == ("sim-refresh-new", True, None, "proj-9")
    assert StateFile(home.state_file).load().accounts[first.id].cooldowns == {}
