"""No secret where anyone can read it: after a mixed run through mitmweb — every protocol, bad
keys, upstream 401s, token renewals, a revoked account, the CLI — no refresh token, access
token, API key or client key appears in a log line, a mitmweb flow, a ledger row, CLI output
or an answer a client got; and the files that hold secrets are the owner's alone.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import stat
import uuid
from pathlib import Path
from typing import Any

import httpx
from conftest import API_KEY, SIM_CLIENT, Gateway, free_port, prepare_gateway
from pool.accounts import mask

MODEL = "gemini-2.5-flash"  # Google accounts and the Gemini key
GOOGLE_ONLY = "gemini-3-flash"
WRONG_KEY = "sk-wrong-" + "7" * 24


class Seen:
    """Everything a user or an onlooker could read, by where it was seen."""

    def __init__(self) -> None:
        self.texts: list[tuple[str, str]] = []

    def add(self, where: str, text: str | bytes) -> None:
        self.texts.append((where, text.decode("latin-1") if isinstance(text, bytes) else text))

    def answer(self, where: str, response: httpx.Response) -> httpx.Response:
        self.add(f"the answer to {where}", f"{response.status_code}\n{response.headers}\n{response.text}")
        return response

    def cli(self, gateway: Gateway, *args: str) -> str:
        result = gateway.cli(*args, check=False)
        assert "Traceback" not in result.stderr, result.stderr
        self.add(f"switchyard {' '.join(args)}", result.stdout + result.stderr)
        return result.stdout


def import_google(gateway: Gateway, seen: Seen, tmp_path: Path, emails: list[str]) -> list[str]:
    """Google accounts known to the sim, imported from an Antigravity-Manager style export."""
    tokens = [f"1//sim-refresh-{uuid.uuid4().hex}" for _ in emails]
    for token, email in zip(tokens, emails):
        gateway.sim.add_google_account(refresh_token=token, email=email)
    export = tmp_path / "export.json"
    export.write_text(json.dumps({"accounts": [{"email": e, "refresh_token": t} for t, e in zip(tokens, emails)]}))
    seen.cli(gateway, "accounts", "import", str(export))
    return tokens


def add_key(gateway: Gateway, seen: Seen, kind: str, models: str, priority: int = 0) -> str:
    key = f"sk-{kind}-{uuid.uuid4().hex}"
    gateway.sim.add_api_key(key, kind)
    base = f"{gateway.sim.url}/v1" if kind == "openai" else gateway.sim.url
    seen.cli(gateway, "accounts", "add-key", "--kind", kind, "--api-key", key, "--base-url", base,
             "--models", models, "--priority", str(priority))
    return key


def issued_tokens(gateway: Gateway) -> set[str]:
    """The access tokens the simulated Google has issued and not yet forgotten."""
    with gateway.sim._lock:
        return set(gateway.sim.tokens)


def requests_of_every_protocol(gateway: Gateway, seen: Seen) -> None:
    """Whole and streamed answers in every caller protocol, the key in each form a client sends it."""
    url, bearer = gateway.url, {"authorization": f"Bearer {API_KEY}"}
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "hello secrets"}]}
    gemini = {"contents": [{"role": "user", "parts": [{"text": "hello secrets"}]}]}
    message = {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": "hello secrets"}]}
    calls: list[tuple[str, str, dict[str, str], dict[str, Any]]] = [
        ("/v1/chat/completions", "", bearer, chat),
        ("/v1/chat/completions", "", {"authorization": API_KEY}, {**chat, "stream": True}),
        ("/v1/completions", "", bearer, {"model": MODEL, "prompt": "hello secrets", "max_tokens": 32}),
        ("/v1/completions", "", bearer, {"model": MODEL, "prompt": "hello secrets", "stream": True}),
        ("/v1/responses", "", bearer, {"model": MODEL, "input": "hello secrets"}),
        ("/v1/responses", "", bearer, {"model": MODEL, "input": "hello secrets", "stream": True}),
        ("/v1/messages", "", {"x-api-key": API_KEY}, message),
        ("/v1/messages", "", {"x-api-key": API_KEY}, {**message, "stream": True}),
        ("/v1/messages/count_tokens", "", {"x-api-key": API_KEY}, {k: message[k] for k in ("model", "messages")}),
        (f"/v1beta/models/{MODEL}:generateContent", "", {"x-goog-api-key": API_KEY}, gemini),
        (f"/v1beta/models/{MODEL}:streamGenerateContent", f"?alt=sse&key={API_KEY}", {}, gemini),
        (f"/v1beta/models/{MODEL}:countTokens", f"?key={API_KEY}", {}, gemini),
        (f"/v1beta/models/{GOOGLE_ONLY}:generateContent", "", {"x-goog-api-key": API_KEY}, gemini),
        ("/v1/chat/completions", "", bearer, {**chat, "model": "gpt-4o"}),
        ("/v1/messages", "", {"x-api-key": API_KEY}, {**message, "model": "claude-sonnet-4-5", "stream": True}),
    ]
    for path, query, headers, body in calls:
        response = seen.answer(path, httpx.post(f"{url}{path}{query}", headers=headers, json=body, timeout=30))
        assert response.status_code == 200, response.text
    for path in ("/v1/models", "/v1beta/models", "/metrics"):
        assert seen.answer(path, httpx.get(f"{url}{path}", headers=bearer, timeout=30)).status_code == 200


def refusals(gateway: Gateway, seen: Seen) -> None:
    """Bad client keys in every form, no key, a bad body, an unknown model."""
    url = gateway.url
    chat = {"model": MODEL, "messages": [{"role": "user", "content": "refused"}]}
    for headers, query in (({"authorization": f"Bearer {WRONG_KEY}"}, ""), ({"x-api-key": WRONG_KEY}, ""),
                           ({"x-goog-api-key": WRONG_KEY}, ""), ({}, f"?key={WRONG_KEY}"), ({}, "")):
        response = seen.answer("a bad key", httpx.post(f"{url}/v1/chat/completions{query}", headers=headers, json=chat))
        assert response.status_code == 401
    bearer = {"authorization": f"Bearer {API_KEY}"}
    bad = seen.answer("a bad body", httpx.post(f"{url}/v1/messages", headers={**bearer, "content-type": "application/json"},
                                               content=b"{not json"))
    assert bad.status_code == 400
    untyped = seen.answer("a body that is not JSON", httpx.post(f"{url}/v1/messages", headers=bearer, content=b"{not json"))
    assert untyped.status_code == 415
    unknown = seen.answer("an unknown model", httpx.post(f"{url}/v1/chat/completions", headers=bearer,
                                                         json={**chat, "model": "no-such-model"}))
    assert unknown.status_code == 404


def mitmweb(web: str, password: str, seen: Seen) -> int:
    """Every flow mitmweb holds (its JSON, each body, the whole dump), its event log, options and
    state; returns the number of flows."""
    with httpx.Client(base_url=web, headers={"authorization": f"Bearer {password}"}, timeout=30) as client:

        def get(path: str) -> httpx.Response:
            response = client.get(path)
            assert response.status_code == 200, (path, response.status_code)
            seen.add(f"mitmweb {path}", response.content)
            return response

        flows = get("/flows").json()
        for flow in flows:
            for part in ("request", "response"):
                get(f"/flows/{flow['id']}/{part}/content.data")
        for path in ("/flows/dump", "/events", "/options", "/state"):
            get(path)
    return len(flows)


def ledger_rows(gateway: Gateway) -> list[dict[str, Any]]:
    db = sqlite3.connect(gateway.home / "data" / "usage.sqlite3", timeout=10)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM requests ORDER BY id")]
    finally:
        db.close()


def test_no_secret_in_logs_flows_ledger_cli_or_answers_and_secret_files_are_private(sim, tmp_path: Path):
    seen = Seen()
    # config.toml as a user's editor leaves it (readable by others): the gateway makes it private.
    gateway = prepare_gateway(sim, tmp_path / "home", {"routing": {"max_attempts": 4}})
    os.chmod(gateway.home / "config.toml", 0o644)
    *refresh_tokens, revoked = import_google(
        gateway, seen, tmp_path, ["secret0@example.com", "secret1@example.com", "revoked@example.com"]
    )
    keys = [
        add_key(gateway, seen, "gemini", "gemini-2.5-*", priority=-1),  # answers 401 once: the next serves
        add_key(gateway, seen, "gemini", "gemini-2.5-*", priority=1),
        add_key(gateway, seen, "openai", "gpt-*"),
        add_key(gateway, seen, "anthropic", "claude-*"),
    ]
    password = secrets.token_hex(12)
    web = f"http://127.0.0.1:{free_port()}"
    try:
        gateway.start("--set", f"web_password={password}", "--set", f"web_port={web.rsplit(':', 1)[1]}",
                      "--set", "web_open_browser=false", "--set", "termlog_verbosity=debug", web=True)
        sim.behave("401", {"account": keys[0]}, times=1)
        requests_of_every_protocol(gateway, seen)
        refusals(gateway, seen)

        # Access tokens die upstream (a 401, then a renewal); a refresh token is revoked.
        tokens = issued_tokens(gateway)
        for email in ("secret0@example.com", "secret1@example.com"):
            sim.expire(email)
        sim.revoke(revoked)
        for n in range(4):
            response = seen.answer("after expiry", httpx.post(
                f"{gateway.url}/v1beta/models/{GOOGLE_ONLY}:streamGenerateContent?alt=sse",
                headers={"x-goog-api-key": API_KEY}, json={"contents": [{"role": "user", "parts": [{"text": f"x{n}"}]}]},
                timeout=30))
            assert response.status_code == 200, response.text
        assert any(e["path"].endswith(":streamGenerateContent") and e["status"] == 401 for e in sim.log())

        for args in (("accounts", "list"), ("accounts", "refresh"), ("accounts", "check"), ("stats",),
                     ("stats", "--json", "--by", "account")):
            seen.cli(gateway, *args)
        assert any(e["kind"] == "oauth" and e["status"] == 400 for e in sim.log())  # the revoked one: invalid_grant
        listed = json.loads(seen.cli(gateway, "accounts", "list", "--json"))
        assert any(not a["enabled"] for a in listed if a["email"] == "revoked@example.com")
        assert any(a["last_error"] for a in listed), listed  # the errors are shown: masked, not left out

        flows = mitmweb(web, password, seen)
        assert flows >= 25
        rows = ledger_rows(gateway)
        assert len(rows) >= 25
        seen.add("the ledger", json.dumps(rows))
    finally:
        gateway.stop()
    seen.add("the gateway's output", gateway.log())
    assert "client connect" in gateway.log()  # debug output was on

    data = gateway.home / "data"
    state = json.loads((data / "state.json").read_text())
    saved = {s["access_token"] for s in state["accounts"].values() if s.get("access_token")}
    tokens |= issued_tokens(gateway) | saved
    assert len(tokens) >= 4 and all(t.startswith("ya29.sim-") for t in tokens)
    stored = json.loads((data / "accounts.json").read_text())["accounts"]
    found = {
        "refresh token": [*refresh_tokens, revoked, *(a["secret"] for a in stored if a["kind"] == "google")],
        "access token": sorted(tokens),
        "API key": [*keys, *(a["secret"] for a in stored if a["kind"] != "google")],
        "client key": [API_KEY],
        "OAuth client secret": [SIM_CLIENT["client_secret"]],
    }
    assert len(seen.texts) > 80
    # The client key shows masked in mitmweb's flows: the flows were read with their headers.
    assert any(mask(API_KEY) in text for where, text in seen.texts if where.startswith("mitmweb /flows"))
    for what, values in found.items():
        for value in values:
            assert len(value) >= 16
            for where, text in seen.texts:
                assert value not in text, f"a {what} ({value[:8]}...) appears in {where}"

    # Every file the gateway and the CLI keep has mode 0600, in a 0700 directory.
    for name in ("config.toml", "data/accounts.json", "data/state.json", "data/usage.sqlite3"):
        path = gateway.home / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (name, oct(path.stat().st_mode))
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    loose = {p.name: oct(p.stat().st_mode) for p in data.iterdir() if stat.S_IMODE(p.stat().st_mode) & 0o077}
    assert not loose
