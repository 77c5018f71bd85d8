"""The dashboard's JSON API (`/api/...`) on a running gateway (strict auth) in front of the
simulated upstream: every endpoint, its refusals without the key, its answers to bad input, and
that it says what the CLI says. One gateway for the module; each test leaves it as it found it.
"""

from __future__ import annotations

import csv
import io
import json
import queue
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import openai
import pytest
from conftest import API_KEY, Gateway, prepare_gateway
from pool_rig import add_google, home_of, listed

from addons import api as api_module
from pool import admin

MODEL = "gemini-2.5-flash"
WAIT = 15.0


def oauth_urls(sim) -> dict[str, Any]:
    return {"upstreams": {"antigravity": {"auth_url": f"{sim.url}/o/oauth2/v2/auth", "userinfo_url": f"{sim.url}/userinfo"}}}


@pytest.fixture(scope="module")
def gw(sim, tmp_path_factory) -> Iterator[Gateway]:
    gateway = prepare_gateway(sim, tmp_path_factory.mktemp("dashboard-api"), oauth_urls(sim))
    gateway.ids = [new_google(gateway, "api-alice@example.com"), new_google(gateway, "api-bob@example.com")]  # type: ignore[attr-defined]
    gateway.start()
    yield gateway
    gateway.stop()


@pytest.fixture
def client(gw: Gateway) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gw.url, headers=gw.auth(), timeout=30) as c:
        yield c


def until(predicate, timeout: float = WAIT, step: float = 0.05):
    """The predicate's first truthy value; fails after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("not true in time")
        time.sleep(step)


def error(r: httpx.Response, status: int, field: str | None = None) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()["error"]
    assert isinstance(body["message"], str) and body["message"]
    if field is not None:
        assert body.get("field") == field or field in body.get("fields", {}), body
    return body


def chat(gw: Gateway, text: str = "hi", model: str = MODEL, **options: Any):
    return gw.openai(**options).chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": text}])


def cli_rows(gw: Gateway) -> dict[str, dict[str, Any]]:
    """`switchyard accounts list --json`, run in this process (a CLI process costs a second here;
    the first test compares with the real command)."""
    return {row["id"]: row for row in listed(home_of(gw.home))}


def new_google(gw: Gateway, email: str) -> str:
    """A Google account known to the sim, written to the accounts file as `add-google` does."""
    return add_google(gw.sim, home_of(gw.home), email)[0]


# --- the key --------------------------------------------------------------------------------------------

# One request per endpoint (the coverage test below checks that every endpoint has one).
EVERY_ENDPOINT = [
    ("GET", "/api/overview"), ("GET", "/api/accounts"), ("POST", "/api/accounts"), ("POST", "/api/accounts/import"),
    ("POST", "/api/accounts/login"), ("POST", "/api/accounts/refresh"), ("GET", "/api/accounts/x"),
    ("PATCH", "/api/accounts/x"), ("DELETE", "/api/accounts/x"), ("POST", "/api/accounts/x/enable"),
    ("POST", "/api/accounts/x/disable"), ("POST", "/api/accounts/x/refresh"), ("POST", "/api/accounts/x/check"),
    ("GET", "/api/stats"), ("GET", "/api/usage"), ("GET", "/api/usage/tokens.svg"), ("GET", "/api/requests"),
    ("GET", "/api/requests/choices"), ("GET", "/api/requests.csv"), ("GET", "/api/config"), ("PATCH", "/api/config"),
    ("GET", "/api/connect"), ("GET", "/api/events"),
]


def test_every_endpoint_is_covered_here():
    for method, pattern, _ in api_module.ENDPOINTS:
        assert any(m == method and pattern.fullmatch(p) for m, p in EVERY_ENDPOINT), pattern.pattern


@pytest.mark.parametrize(("method", "path"), EVERY_ENDPOINT)
def test_without_the_admin_key_every_endpoint_refuses(gw, method, path):
    body = {"content": b"{}", "headers": {"content-type": "application/json"}} if method in ("POST", "PATCH") else {}
    missing = httpx.request(method, gw.url + path, timeout=10, **body)
    assert error(missing, 401)["message"].startswith("missing API key")
    wrong = httpx.request(method, gw.url + path, timeout=10, **{**body, "headers": {**body.get("headers", {}), "authorization": "Bearer sk-wrong"}})
    assert error(wrong, 401)["message"] == "invalid API key"


def test_the_page_loads_without_the_key_and_keeps_to_itself(gw):
    page = httpx.get(gw.url + "/ui/", timeout=10)
    assert page.status_code == 200 and "app.js" in page.text
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["referrer-policy"] == "no-referrer" and page.headers["x-frame-options"] == "DENY"
    assert httpx.get(gw.url + "/ui", timeout=10).headers["location"] == "/ui/"
    script = httpx.get(gw.url + "/ui/app.js", timeout=10)
    assert script.headers["content-type"].startswith("text/javascript")
    again = httpx.get(gw.url + "/ui/app.js", headers={"if-none-match": script.headers["etag"]}, timeout=10)
    assert again.status_code == 304 and not again.content
    for path in ("/ui/missing.js", "/ui/../pool/admin.py", "/ui/%2e%2e/pool/admin.py", "/ui/.hidden.js", "/ui/sub/app.js", "/ui/style.css/"):
        r = httpx.get(gw.url + path, timeout=10)
        assert r.status_code in (401, 404) and "import" not in r.text, path  # 401: the client resolved the dots itself
    assert httpx.post(gw.url + "/ui/", headers={**gw.auth(), "content-type": "application/json"}, timeout=10).status_code in (404, 405)


def test_unknown_endpoints_and_methods_answer_in_json(client):
    error(client.get("/api/nothing"), 404)
    error(client.put("/api/accounts", json={}), 405)
    error(client.post("/api/config", json={}), 405)


# --- accounts -----------------------------------------------------------------------------------------


def test_the_accounts_are_what_the_cli_lists(gw, client):
    def same() -> bool:
        api_rows = {r["id"]: r for r in client.get("/api/accounts").json()}
        cli = {row["id"]: row for row in gw.accounts()}  # the real command
        for row in api_rows.values():
            assert isinstance(row.pop("in_flight"), int)
        return api_rows == cli and bool(api_rows)

    until(same)
    rows = client.get("/api/accounts").json()
    assert {r["status"] for r in rows} == {"ready"} and all(r["quota"] for r in rows)
    one = client.get(f"/api/accounts/{rows[0]['id']}").json()
    assert one["id"] == rows[0]["id"] and one["email"] == rows[0]["email"]
    error(client.get("/api/accounts/nope"), 404)


def test_adding_a_key_account_and_what_is_refused(gw, client):
    key = f"gemini-dash-{uuid.uuid4().hex}"
    gw.sim.add_api_key(key, "gemini")
    r = client.post("/api/accounts", json={"kind": "gemini", "api_key": key, "base_url": gw.sim.url, "label": "from the page", "priority": 1})
    assert r.status_code == 201, r.text
    row = r.json()
    assert (row["kind"], row["label"], row["priority"]) == ("gemini", "from the page", 1) and key not in r.text
    assert cli_rows(gw)[row["id"]]["label"] == "from the page"
    error(client.post("/api/accounts", json={"kind": "gemini", "api_key": key}), 409)
    error(client.post("/api/accounts", json={"kind": "bogus", "api_key": "k"}), 400, "kind")
    error(client.post("/api/accounts", json={"kind": "openai", "api_key": " "}), 400, "api_key")
    error(client.post("/api/accounts", json={"kind": "openai", "api_key": "k", "base_url": "ftp://x"}), 400, "base_url")
    error(client.post("/api/accounts", json={"kind": "openai", "api_key": "k", "priority": "high"}), 400, "priority")
    error(client.post("/api/accounts", json={"kind": "openai", "api_key": "k", "models": 5}), 400, "models")
    error(client.post("/api/accounts", json={"kind": "google", "refresh_token": ""}), 400, "refresh_token")
    error(client.post("/api/accounts", json={"kind": "google", "refresh_token": "rt", "email": ["x"]}), 400, "email")
    error(client.post("/api/accounts", json={"kind": "openai", "api_key": "k", "label": 7}), 400, "label")
    error(client.post("/api/accounts", json=["kind"]), 400)
    error(client.post("/api/accounts", content=b"{not json", headers={"content-type": "application/json"}), 400)
    # What a page on another site could send without asking first: refused, nothing added.
    error(client.post("/api/accounts", content=json.dumps({"kind": "openai", "api_key": "k2"}), headers={"content-type": "text/plain"}), 415)
    error(client.post("/api/accounts", content=json.dumps({"kind": "openai", "api_key": "k2"})), 415)
    assert len(cli_rows(gw)) == 3
    assert client.delete(f"/api/accounts/{row['id']}").json() == {"removed": row["id"]}
    assert row["id"] not in cli_rows(gw)


def test_setting_disabling_enabling_and_removing(gw, client):
    account_id = new_google(gw, "api-carol@example.com")
    until(lambda: any(r["id"] == account_id for r in client.get("/api/accounts").json()))
    r = client.patch(f"/api/accounts/{account_id}", json={"priority": 3, "max_concurrent": 2, "label": "carol"})
    assert (r.json()["priority"], r.json()["max_concurrent"], r.json()["label"]) == (3, 2, "carol")
    listed = cli_rows(gw)[account_id]
    assert (listed["priority"], listed["max_concurrent"], listed["label"]) == (3, 2, "carol")
    assert client.patch(f"/api/accounts/{account_id}", json={"max_concurrent": 0}).json()["max_concurrent"] is None
    error(client.patch(f"/api/accounts/{account_id}", json={"secret": "x"}), 400, "secret")
    error(client.patch(f"/api/accounts/{account_id}", json={"max_concurrent": -1}), 400, "max_concurrent")
    error(client.patch(f"/api/accounts/{account_id}", json={}), 400)
    error(client.patch("/api/accounts/nope", json={"priority": 1}), 404)

    assert client.post(f"/api/accounts/{account_id}/disable", json={}).json()["status"] == "disabled"
    assert cli_rows(gw)[account_id]["enabled"] is False
    error(client.post(f"/api/accounts/{account_id}/enable"), 415)  # even without a body: a change says it is JSON
    assert client.post(f"/api/accounts/{account_id}/enable", json={}).json()["status"] == "ready"
    assert cli_rows(gw)[account_id]["enabled"] is True
    error(client.post("/api/accounts/nope/enable", json={}), 404)
    error(client.post("/api/accounts/nope/disable", json={}), 404)

    assert client.delete(f"/api/accounts/{account_id}").status_code == 200
    assert account_id not in cli_rows(gw)
    error(client.delete(f"/api/accounts/{account_id}"), 404)


def test_importing_refresh_tokens(gw, client):
    tokens = [f"sim-refresh-{uuid.uuid4().hex}" for _ in range(2)]
    text = json.dumps({"accounts": [{"email": f"imported{i}@example.com", "refresh_token": t} for i, t in enumerate(tokens)]})
    assert client.post("/api/accounts/import", json={"text": text}).json() == {"added": 2, "skipped": 0}
    assert client.post("/api/accounts/import", json={"text": tokens[0] + "\n"}).json() == {"added": 0, "skipped": 1}
    error(client.post("/api/accounts/import", json={"text": "{broken"}), 400, "text")
    error(client.post("/api/accounts/import", json={"text": ""}), 400, "text")
    error(client.post("/api/accounts/import", json={"text": 5}), 400, "text")
    for row in client.get("/api/accounts").json():
        if row["email"] and row["email"].startswith("imported"):
            client.delete(f"/api/accounts/{row['id']}")
    assert not any((r["email"] or "").startswith("imported") for r in cli_rows(gw).values())


def test_refreshing_and_checking(gw, client):
    alice = gw.ids[0]
    row = client.post(f"/api/accounts/{alice}/refresh", json={}).json()
    assert row["id"] == alice and row["quota"] and row["project"]
    report = client.post(f"/api/accounts/{alice}/check", json={"model": MODEL}).json()
    assert report["ok"] is True and [s["name"] for s in report["steps"]] == ["token", "project", "quota", "gemini"]
    assert report["account"]["id"] == alice
    error(client.post(f"/api/accounts/{alice}/check", json={"model": 5}), 400, "model")
    error(client.post("/api/accounts/nope/check", json={}), 404)
    error(client.post("/api/accounts/nope/refresh", json={}), 404)

    revoked_id = new_google(gw, "api-revoked@example.com")
    until(lambda: any(r["id"] == revoked_id for r in client.get("/api/accounts").json()))
    gw.sim.revoke("api-revoked@example.com")
    failed = error(client.post(f"/api/accounts/{revoked_id}/refresh", json={}), 502)
    assert "invalid_grant" in failed["message"]
    checked = client.post(f"/api/accounts/{revoked_id}/check", json={}).json()
    assert checked["ok"] is False and checked["steps"][0]["next"] and "login" in checked["steps"][0]["next"]
    everyone = client.post("/api/accounts/refresh", json={}).json()
    results = {r["id"]: r for r in everyone["results"]}
    assert results[alice]["ok"] is True and results[revoked_id]["ok"] is False
    listed = cli_rows(gw)[revoked_id]
    assert listed["enabled"] is False and listed["next_step"] and "login" in listed["next_step"]
    client.delete(f"/api/accounts/{revoked_id}")


def test_signing_in_with_google_through_the_gateway(gw, client):
    begun = client.post("/api/accounts/login", json={"origin": f"http://localhost:{gw.port}", "label": "signed in"}).json()
    assert begun["redirect_uri"] == f"http://localhost:{gw.port}/ui/oauth-callback"
    query = {k: v[0] for k, v in parse_qs(urlsplit(begun["url"]).query).items()}
    assert begun["url"].startswith(gw.sim.url + "/o/oauth2/v2/auth?")
    assert query["code_challenge_method"] == "S256" and query["redirect_uri"] == begun["redirect_uri"]
    # The user signs in at Google (the sim's page), which sends the browser back with a code.
    consent = httpx.get(begun["url"].split("?")[0], params={**query, "email": "api-dave@example.com"}, timeout=10)
    assert consent.status_code == 302
    callback = consent.headers["location"].replace("localhost", "127.0.0.1")
    back = httpx.get(callback, timeout=30)  # the browser has no key to send: the state is what counts
    assert back.status_code == 302, back.text
    target = back.headers["location"]
    assert target.startswith("/ui/#/accounts?signed_in=api-dave%40example.com&id=")
    account_id = target.rsplit("=", 1)[1]
    row = client.get(f"/api/accounts/{account_id}").json()
    assert (row["email"], row["label"], row["enabled"]) == ("api-dave@example.com", "signed in", True)
    assert cli_rows(gw)[account_id]["email"] == "api-dave@example.com"
    # The same way back once more, or someone else's state: refused, and said where the user looks.
    replay = httpx.get(callback, timeout=10)
    assert "login_error=" in replay.headers["location"] and "unknown" in replay.headers["location"]
    denied = client.post("/api/accounts/login", json={}).json()
    state = parse_qs(urlsplit(denied["url"]).query)["state"][0]
    refused = httpx.get(f"{gw.url}/ui/oauth-callback?state={state}&error=access_denied", timeout=10)
    assert "access_denied" in refused.headers["location"]
    # An origin that is not this gateway is not where Google sends the browser back.
    elsewhere = client.post("/api/accounts/login", json={"origin": f"http://evil.example:{gw.port}"}).json()
    assert elsewhere["redirect_uri"] == f"{gw.url}/ui/oauth-callback"
    client.delete(f"/api/accounts/{account_id}")


# --- usage -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def traffic(gw) -> dict[str, Any]:
    """A few requests through the gateway: answered ones, and one the upstream refuses."""
    with httpx.Client(base_url=gw.url, headers=gw.auth(), timeout=30) as c:
        before = c.get("/api/stats?since=1h").json()["totals"]["requests"]
        served = [chat(gw, f"traffic {i}").headers["x-switchyard-account"] for i in range(4)]
        with pytest.raises(openai.BadRequestError):
            gw.openai().chat.completions.create(model=MODEL, messages=[{"role": "wizard", "content": "x"}])
        # The ledger writes its rows a moment later, in one go: wait for these five.
        until(lambda: c.get("/api/stats?since=1h").json()["totals"]["requests"] >= before + 5)
    return {"served": served}


def test_requests_paged_filtered_and_linked(client, traffic):
    first = client.get("/api/requests?limit=2").json()
    assert len(first["rows"]) == 2 and first["next_before"] == first["rows"][-1]["id"] and first["mitmweb"] is None
    newest = first["rows"][0]
    assert newest["error_class"] == "invalid_request" and newest["status"] == 400 and newest["flow_id"] and newest["mitmweb_url"] is None
    second = client.get(f"/api/requests?limit=2&before={first['next_before']}").json()
    assert all(r["id"] < first["next_before"] for r in second["rows"])
    ok = client.get("/api/requests?status=ok").json()["rows"]
    assert ok and all(r["error_class"] is None and r["account_id"] for r in ok)
    assert {r["account_id"] for r in ok} >= set(traffic["served"])
    one = traffic["served"][0]
    assert {r["account_id"] for r in client.get(f"/api/requests?account={one}").json()["rows"]} == {one}
    assert all(r["protocol"] == "openai_chat" for r in client.get("/api/requests?protocol=openai_chat").json()["rows"])
    assert client.get("/api/requests?protocol=gemini").json()["rows"] == []
    assert [r["status"] for r in client.get("/api/requests?status=400").json()["rows"]][:1] == [400]
    newer = client.get(f"/api/requests?after={second['rows'][-1]['id']}").json()["rows"]
    assert [r["id"] for r in newer][-1] == second["rows"][-1]["id"] + 1
    error(client.get("/api/requests?limit=0"), 400)
    error(client.get("/api/requests?limit=9999"), 400)
    error(client.get("/api/requests?before=yesterday"), 400, "before")
    choices = client.get("/api/requests/choices?since=1h").json()
    assert {a["id"] for a in choices["accounts"]} >= set(traffic["served"]) and MODEL in choices["models"]
    assert "invalid_request" in choices["error_classes"]
    error(client.get("/api/requests/choices?since=sometime"), 400, "since")


def test_the_csv_of_the_rows(client, traffic):
    r = client.get("/api/requests.csv?since=1h")
    assert r.headers["content-type"].startswith("text/csv") and "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0])[:4] == ["id", "at", "protocol", "operation"] and len(rows) >= 5
    failed = list(csv.DictReader(io.StringIO(client.get("/api/requests.csv?since=1h&status=error").text)))
    assert [f["id"] for f in failed] == [row["id"] for row in rows if row["error_class"]]
    assert any(f["error_class"] == "invalid_request" for f in failed)
    error(client.get("/api/requests.csv?since=soon"), 400, "since")


def test_stats_are_what_the_cli_prints(gw, client, traffic):
    api_report = client.get("/api/stats?since=1h&by=model").json()
    cli_report = json.loads(gw.cli("stats", "--json", "--since", "1h", "--by", "model").stdout)
    assert api_report["by"] == ["model"] and api_report["totals"] == cli_report["totals"]
    assert api_report["rows"] == cli_report["rows"]
    error(client.get("/api/stats?by=colour"), 400)
    error(client.get("/api/stats?since=whenever"), 400)


def test_usage_series_and_charts(client, traffic):
    data = client.get("/api/usage?range=24h&by=model").json()
    total = client.get("/api/stats?since=24h").json()["totals"]
    assert sum(data["requests"]) == total["requests"] and sum(data["errors"]) == total["errors"]
    assert sum(data["tokens"][MODEL]) == total["input_tokens"] + total["output_tokens"]
    assert data["latency_p50"][-1] is not None
    by_account = client.get("/api/usage?range=7d&by=account").json()
    assert set(by_account["tokens"]) >= set(traffic["served"])
    error(client.get("/api/usage?range=1y"), 400, "range")
    error(client.get("/api/usage?by=colour"), 400, "by")
    tokens = client.get("/api/usage/tokens.svg?range=24h&by=model&width=600")
    assert tokens.headers["content-type"] == "image/svg+xml" and 'viewBox="0 0 600 ' in tokens.text
    assert tokens.text.count("<rect") >= 2 and MODEL in tokens.text
    assert "errors" in client.get("/api/usage/requests.svg?range=7d").text
    assert "<circle" in client.get("/api/usage/latency.svg?range=30d").text
    error(client.get("/api/usage/pie.svg"), 404)
    error(client.get("/api/usage/tokens.svg?width=wide"), 400, "width")


def test_the_dashboard_itself_is_never_a_ledger_row(gw, client, traffic):
    newest = client.get("/api/requests?limit=1").json()["rows"][0]["id"]
    for path in ("/api/overview", "/api/accounts", "/api/nothing", "/ui/", "/ui/missing.js"):
        client.get(path)
    httpx.get(client.base_url.join("/api/accounts"), timeout=10)  # refused: no key
    client.post("/api/accounts", content=b"{}", headers={"content-type": "text/plain"})  # refused: not JSON
    client.post("/ui/", json={})  # refused: the page is read with GET
    httpx.delete(client.base_url.join("/ui/app.js"), timeout=10)  # refused: no key
    chat(gw, "after the dashboard")  # the next row must be this one
    rows = until(lambda: client.get(f"/api/requests?after={newest}").json()["rows"])
    assert [r["id"] for r in rows] == [newest + 1] and rows[0]["requested_model"] == MODEL


def test_the_overview(gw, client, traffic):
    o = client.get("/api/overview").json()
    assert o["requests"]["hour"]["requests"] >= 5 and o["requests"]["hour"]["errors"] >= 1
    assert o["accounts"]["ready"] >= 2 and o["accounts"]["total"] == len(cli_rows(gw))
    families = {n["family"]: n for n in o["next"]}
    assert families["gemini-flash"]["account_id"] in gw.ids and families["gemini-flash"]["model"].startswith("gemini-")
    assert o["mitmweb"] is None and o["base_url"] == gw.url


# --- settings and connecting ---------------------------------------------------------------------------------


def test_the_config_is_read_with_its_secrets_masked(gw, client):
    view = client.get("/api/config").json()
    assert API_KEY not in json.dumps(view) and "sim-client-secret" not in json.dumps(view)
    assert view["values"]["proxy"]["api_key"].startswith("sk-t") and view["values"]["proxy"]["port"] == gw.port
    assert view["fields"]["routing.max_attempts"] == {"value": 3, "applies": "live", "pending": False}
    assert view["fields"]["proxy.port"]["applies"] == "restart"


def test_settings_apply_at_once_and_bad_values_change_nothing(gw, client, sim):
    path = gw.home / "config.toml"
    before = path.read_bytes()
    for changes, field in [
        ({"routing.max_attempts": 0}, "routing.max_attempts"),
        ({"routing.scheduling": "random"}, "routing.scheduling"),
        ({"model_mapping": {"alias": 5}}, "model_mapping.alias"),
        ({"proxy.api_key": "sk-mine"}, "proxy.api_key"),
    ]:
        error(client.patch("/api/config", json=changes), 400, field)
        assert path.read_bytes() == before
    error(client.patch("/api/config", json={}), 400)
    error(client.patch("/api/config", json=[1]), 400)

    # A mapping saved on the page routes the very next request.
    alias = f"dashboard-alias-{uuid.uuid4().hex[:6]}"
    client.patch("/api/config", json={"model_mapping": {alias: MODEL}})
    assert chat(gw, "mapped", model=alias).headers["x-switchyard-model"] == MODEL
    # One attempt only: a 429 reaches the caller; three again: the next account serves.
    client.patch("/api/config", json={"routing.max_attempts": 1})
    sim.behave("429", {"model": MODEL}, times=1, retry_delay="1s")
    with pytest.raises(openai.RateLimitError):
        chat(gw, "one attempt")
    view = client.patch("/api/config", json={"routing.max_attempts": 3, "model_mapping": None, "proxy.port": gw.port + 1}).json()
    assert view["fields"]["proxy.port"]["pending"] is True and view["fields"]["routing.max_attempts"]["pending"] is False
    # (the account that answered 429 cools for the second it asked for)
    until(lambda: not any(MODEL in r["cooldowns"] for r in client.get("/api/accounts").json()), timeout=5)
    sim.behave("429", {"model": MODEL}, times=1, retry_delay="1s")
    assert chat(gw, "three attempts").status_code == 200
    client.patch("/api/config", json={"proxy.port": gw.port})
    assert "dashboard-alias" not in path.read_text()


def test_connecting_clients(gw, client):
    c = client.get("/api/connect").json()
    assert c["base_url"] == gw.url and c["auth_required"] is True and MODEL in c["models"]
    assert {x["id"] for x in c["clients"]} == {"openai-sdk", "anthropic-sdk", "google-sdk", "claude-code", "codex", "gemini-cli", "opencode", "curl"}
    assert all(c["key_placeholder"] in "".join(s["text"] for s in x["snippets"]) for x in c["clients"])
    assert API_KEY not in json.dumps(c)


# --- live updates ----------------------------------------------------------------------------------------------


class Events:
    """`GET /api/events` read in a thread: each event's name and data, in a queue."""

    def __init__(self, gw: Gateway, after: int | None = None) -> None:
        self.queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.client = httpx.Client(base_url=gw.url, headers=gw.auth(), timeout=httpx.Timeout(10, read=60))
        self.response = self.client.send(self.client.build_request("GET", "/api/events" + (f"?after={after}" if after is not None else "")), stream=True)
        assert self.response.status_code == 200 and self.response.headers["content-type"].startswith("text/event-stream")
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        name = None
        try:
            for line in self.response.iter_lines():
                if line.startswith("event: "):
                    name = line[7:]
                elif line.startswith("data: "):
                    self.queue.put((name, json.loads(line[6:])))
        except httpx.HTTPError:
            pass

    def next(self, name: str, match=lambda data: True) -> Any:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            try:
                got, data = self.queue.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if got == name and match(data):
                return data
        raise AssertionError(f"no {name} event in time")

    def close(self) -> None:
        self.response.close()
        self.client.close()


def test_pages_hear_of_new_requests_and_account_changes(gw, client):
    events = Events(gw)
    try:
        hello = events.next("hello")
        assert {a["id"] for a in hello["accounts"]} >= set(gw.ids)
        served = chat(gw, "live").headers["x-switchyard-account"]
        rows = events.next("requests", lambda rows: any(r["account_id"] == served for r in rows))
        assert rows[-1]["requested_model"] == MODEL and rows[-1]["status"] == 200
        admin.disable(home_of(gw.home), gw.ids[1])  # what `switchyard accounts disable` does
        changed = events.next("accounts", lambda accounts: any(a["id"] == gw.ids[1] and not a["enabled"] for a in accounts))
        assert next(a for a in changed if a["id"] == gw.ids[1])["status"] == "disabled"
        client.post(f"/api/accounts/{gw.ids[1]}/enable", json={})
        events.next("accounts", lambda accounts: all(a["enabled"] for a in accounts if a["id"] in gw.ids))
    finally:
        events.close()
    # A page that reconnects gets what it missed, from the last row it has.
    last = client.get("/api/requests?limit=1").json()["rows"][0]["id"]
    chat(gw, "while away")
    until(lambda: client.get("/api/requests?limit=1").json()["rows"][0]["id"] > last)
    again = Events(gw, after=last)
    try:
        missed = again.next("requests")
        assert missed[0]["id"] == last + 1
    finally:
        again.close()
