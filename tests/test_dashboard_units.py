"""The dashboard's parts that need no gateway: account descriptions and changes shared with the
CLI, settings edits, ledger rows and series, the SVG charts, client set-ups, the ledger's
migration, pending sign-ins, and mitmweb's comment column."""

from __future__ import annotations

import sqlite3
import time
import tomllib

import pytest
from mitmproxy.test import taddons
from mitmproxy.tools.web.webaddons import WebAddon

from pool import admin, charts, editable, history, ledger as ledger_module, login, snippets, stats
from pool.accounts import AccountStore
from pool.config import ConfigError, parse
from pool.ledger import Ledger, Record
from pool.state import AccountState, Cooldown, LastError, Quota
from pool_rig import home_of

from addons import api
from addons.monitor import WebColumns

NOW = time.time()


def record(at: float, **fields) -> Record:
    base = dict(
        at=at, protocol="openai_chat", operation="generate", requested_model="gemini-2.5-flash", model="gemini-2.5-flash",
        account_id="a1", account="alice@example.com", status=200, error_class=None, attempts=1, stream=False,
        latency_ms=100.0, ttfb_ms=40.0, input_tokens=10, output_tokens=20,
    )
    return Record(**{**base, **fields})


def write(path, records) -> None:
    led = Ledger(path, 30)
    led.start()
    for r in records:
        led.add(r)
    led.close()


# --- accounts: what the CLI and the API both say and do -------------------------------------------------


def test_a_description_says_the_state_the_trouble_and_what_to_do(tmp_path):
    home = home_of(tmp_path)
    account = admin.add_key(home, "gemini", "AIza-test-key-000000", label="work")
    state = AccountState(
        quota={"gemini-2.5-flash": Quota(remaining=0.05, reset_at=NOW + 600)},
        cooldowns={"gemini-2.5-flash": Cooldown(until=NOW + 300, error_class="quota_exhausted")},
        last_error=LastError(at=NOW - 5, error_class="quota_exhausted", message="exhausted", status=429, model="gemini-2.5-flash"),
    )
    row = admin.describe(account, state, NOW, lambda m: 0.1)
    assert row["status"] == "ready" and row["name"] == "work"
    assert row["secret"] != "AIza-test-key-000000" and "AIza-test-key-000000" not in str(row)
    assert row["quota"]["gemini-2.5-flash"]["protected"] is True
    assert row["last_error"]["plain"] == "used up its quota for the model"
    assert "quota resets" in row["next_step"]
    state.cooldowns["*"] = Cooldown(until=NOW + 60, error_class="auth")
    assert admin.describe(account, state, NOW, lambda m: 0.1)["status"] == "cooling"
    parked = admin.disable(home, account.id)
    assert admin.describe(parked, AccountState(), NOW, lambda m: 0.1)["status"] == "disabled"


@pytest.mark.parametrize(
    ("call", "field", "kind"),
    [
        (lambda h: admin.add_key(h, "google", "k"), "kind", "invalid"),
        (lambda h: admin.add_key(h, "openai", "  "), "api_key", "invalid"),
        (lambda h: admin.add_key(h, "openai", "k", base_url="ftp://x"), "base_url", "invalid"),
        (lambda h: admin.add_key(h, "openai", "k", priority="1"), "priority", "invalid"),
        (lambda h: admin.add_key(h, "openai", "k", priority=True), "priority", "invalid"),
        (lambda h: admin.add_key(h, "openai", "k", max_concurrent=-1), "max_concurrent", "invalid"),
        (lambda h: admin.change(h, "nope", priority=1), None, "not_found"),
        (lambda h: admin.change(h, "nope"), None, "invalid"),
        (lambda h: admin.enable(h, "nope"), None, "not_found"),
        (lambda h: admin.remove(h, "nope"), None, "not_found"),
        (lambda h: admin.import_accounts(h, "# only a comment\n"), "text", "invalid"),
        (lambda h: admin.import_accounts(h, '{"accounts": [{"email": "x"}]}'), "text", "invalid"),
        (lambda h: admin.import_accounts(h, "{not json"), "text", "invalid"),
    ],
)
def test_bad_changes_name_their_field_and_write_nothing(tmp_path, call, field, kind):
    home = home_of(tmp_path)
    with pytest.raises(admin.AdminError) as raised:
        call(home)
    assert (raised.value.field, raised.value.kind) == (field, kind)
    assert AccountStore(home.accounts_file).load() == []


def test_changes_reach_the_file(tmp_path):
    home = home_of(tmp_path)
    account = admin.add_key(home, "openai", "sk-one", base_url="https://example.com/v1/", models=["gpt-*", " "])
    assert (account.base_url, account.models) == ("https://example.com/v1", ["gpt-*"])
    with pytest.raises(admin.AdminError) as raised:
        admin.add_key(home, "openai", "sk-one")
    assert raised.value.kind == "conflict"
    changed = admin.change(home, account.id, priority=2, max_concurrent=0, label=" L ")
    assert (changed.priority, changed.max_concurrent, changed.label) == (2, None, "L")
    assert admin.import_accounts(home, "rt-1\n# skip\nrt-2\n") == (2, 0)
    assert admin.import_accounts(home, '{"accounts": [{"refresh_token": "rt-2"}, {"refresh_token": "rt-3", "email": "c@x"}]}') == (1, 1)
    admin.remove(home, account.id)
    assert sorted(a.secret for a in AccountStore(home.accounts_file).load()) == ["rt-1", "rt-2", "rt-3"]


# --- settings ---------------------------------------------------------------------------------------------


def test_a_settings_edit_validates_like_the_file_and_writes_nothing_when_bad(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('# mine\n[proxy]\napi_key = "sk-secret-000000000000"\nauth_mode = "strict"\n\n[routing]\nsticky_ttl = 60\n')
    before = path.read_bytes()
    for changes, key in [
        ({"routing.max_attempts": 0}, "routing.max_attempts"),
        ({"routing.scheduling": "random", "routing.max_attempts": 2}, "routing.scheduling"),
        ({"model_mapping": {"gpt-4o": 5}}, "model_mapping.gpt-4o"),
        ({"quota.protect_models": {"claude-*": 101}}, "quota.protect_models.claude-*"),
        ({"proxy.api_key": "sk-other"}, "proxy.api_key"),
        ({"proxy.auth_mode": "off"}, "proxy.auth_mode"),
    ]:
        with pytest.raises(ConfigError) as raised:
            editable.edit(path, changes)
        assert key in raised.value.fields, raised.value.fields
        assert path.read_bytes() == before
    saved = editable.edit(path, {"routing.max_attempts": 5, "model_mapping": {"gpt-4o*": "gemini-3-flash"}, "routing.sticky_ttl": None})
    data = tomllib.loads(path.read_text())
    assert data["routing"] == {"max_attempts": 5}  # only what the user set; None went back to the default
    assert data["model_mapping"] == {"gpt-4o*": "gemini-3-flash"} and data["proxy"]["api_key"] == "sk-secret-000000000000"
    assert saved.routing.sticky_ttl == 3600


def test_what_a_running_gateway_follows_and_what_waits_for_a_restart():
    started = parse({"proxy": {"api_key": "sk-secret-000000000000", "port": 8045}})
    saved = parse({"proxy": {"api_key": "sk-secret-000000000000", "port": 9000, "auth_mode": "strict"}, "routing": {"max_attempts": 7}})
    applied = editable.apply(started, saved)
    assert applied.routing.max_attempts == 7  # live
    assert applied.proxy.port == 8045 and applied.proxy.auth_mode == "auto"  # restart, and not editable here
    view = editable.view(saved, applied, started)
    assert view["fields"]["proxy.port"] == {"value": 9000, "applies": "restart", "pending": True}
    assert view["fields"]["routing.max_attempts"] == {"value": 7, "applies": "live", "pending": False}
    assert "secret" not in str(view["values"]["proxy"]["api_key"]) and view["values"]["proxy"]["api_key"].startswith("sk-s")


# --- the ledger's rows and series ------------------------------------------------------------------------------


def test_rows_newest_first_filtered_and_paged(tmp_path):
    path = tmp_path / "usage.sqlite3"
    write(path, [
        record(NOW - 50, account_id="a1"),
        record(NOW - 40, account_id="a2", account="bob", model="claude-sonnet-4-6", requested_model="claude-opus-4-8"),
        record(NOW - 30, status=429, error_class="rate_limit", attempts=3),
        record(NOW - 20, protocol="anthropic", flow_id="f-1"),
        record(NOW - 10, status=400, error_class="bad_request", model=None),
    ])
    rows = history.rows(path, limit=2)
    assert [r["id"] for r in rows] == [5, 4] and rows[1]["flow_id"] == "f-1" and rows[1]["stream"] is False
    assert [r["id"] for r in history.rows(path, before=4, limit=2)] == [3, 2]
    assert [r["id"] for r in history.rows(path, after=3)] == [5, 4]
    assert [r["id"] for r in history.rows(path, {"status": "error"})] == [5, 3]
    assert [r["id"] for r in history.rows(path, {"status": "ok"})] == [4, 2, 1]
    assert [r["id"] for r in history.rows(path, {"status": "429"})] == [3]
    assert [r["id"] for r in history.rows(path, {"status": "rate_limit"})] == [3]
    assert [r["id"] for r in history.rows(path, {"account": "a2"})] == [2]
    assert [r["id"] for r in history.rows(path, {"model": "claude-opus-4-8"})] == [2]
    assert [r["id"] for r in history.rows(path, {"protocol": "anthropic", "status": ""})] == [4]
    with pytest.raises(history.HistoryError):
        history.rows(path, {"colour": "red"})
    with pytest.raises(history.HistoryError):
        history.rows(path, limit=0)
    choices = history.choices(path, NOW - 3600)
    assert choices["accounts"] == [{"id": "a1", "name": "alice@example.com"}, {"id": "a2", "name": "bob"}]
    assert choices["error_classes"] == ["bad_request", "rate_limit"] and choices["protocols"] == ["anthropic", "openai_chat"]
    text = history.to_csv(path, NOW - 3600, NOW, {"status": "error"}).splitlines()
    assert text[0].startswith("id,at,protocol") and len(text) == 3
    assert history.rows(tmp_path / "none.sqlite3") == [] and history.latest_id(tmp_path / "none.sqlite3") == 0


def test_series_bars_sums_and_percentiles(tmp_path):
    path = tmp_path / "usage.sqlite3"
    now = 1_790_000_000.0 + 1800  # half past an hour (UTC, and so in every whole-hour zone)
    rows = [record(now - 60 - i, latency_ms=float(i + 1), ttfb_ms=float(i + 1) / 10) for i in range(20)]
    rows += [record(now - 3 * 3600, model="claude-sonnet-4-6", input_tokens=100, output_tokens=0, error_class="server", status=502)]
    write(path, rows)
    data = stats.series(path, "24h", "model", until=now)
    assert len(data["buckets"]) == 24 and data["step"] == 3600
    assert data["buckets"][-1] <= now < data["buckets"][-1] + 3600
    assert data["requests"][-1] == 20 and data["requests"][-4] == 1 and data["errors"][-4] == 1
    assert data["tokens"]["gemini-2.5-flash"][-1] == 600 and data["tokens"]["claude-sonnet-4-6"][-4] == 100
    assert data["latency_p50"][-1] == 10.0 and data["latency_p95"][-1] == 19.0 and data["ttfb_p95"][-1] == 1.9
    assert data["latency_p50"][0] is None
    by_account = stats.series(path, "7d", "account", until=now)
    assert by_account["labels"]["a1"] == "alice@example.com" and len(by_account["buckets"]) == 42
    assert len(stats.series(path, "30d", until=now)["buckets"]) == 30
    with pytest.raises(ValueError):
        stats.series(path, "1y")
    with pytest.raises(ValueError):
        stats.series(path, "24h", "colour")


def test_a_ledger_of_schema_1_gains_flow_ids(tmp_path):
    path = tmp_path / "usage.sqlite3"
    db = sqlite3.connect(path)
    db.executescript(ledger_module._DDL.replace(",\n    flow_id TEXT", ""))
    db.execute("INSERT INTO requests (at, protocol, operation) VALUES (?, 'openai_chat', 'generate')", (NOW - 10,))
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    write(path, [record(NOW, flow_id="f-2")])
    assert [(r["id"], r["flow_id"]) for r in history.rows(path)] == [(2, "f-2"), (1, None)]
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == ledger_module.SCHEMA_VERSION
    db.close()


# --- charts ---------------------------------------------------------------------------------------------------------


def test_charts_draw_every_value_and_escape_every_name():
    buckets = [NOW - 3600 * i for i in range(3)][::-1]
    hostile = '<script>alert("x")</script>'
    svg = charts.stacked_bars(buckets, 3600, [charts.Series(hostile, [1, 0, 5], "s0"), charts.Series("b", [2, 3, None], "s1")],
                              title="Tokens & more", width=500)
    assert svg.startswith("<svg") and 'viewBox="0 0 500 ' in svg
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "Tokens &amp; more" in svg
    assert svg.count("<rect class=\"s") == 4 + 2  # the four non-zero values, and two legend squares
    line = charts.lines(buckets, 3600, [charts.Series("p50", [10, None, 30], "s0")], title="latency", unit=" ms")
    assert line.count("<circle") == 2 and "<polyline" not in line  # a gap breaks the line
    empty = charts.stacked_bars(buckets, 3600, [], title="none")
    assert "no requests in this range" in empty
    assert [charts.nice(v) for v in (0.7, 3, 7, 240, 1001)] == [1, 5, 10, 250, 2000]


# --- connecting ----------------------------------------------------------------------------------------------------------


def test_every_client_gets_the_base_url_the_key_and_a_served_model():
    setup = snippets.Setup("http://127.0.0.1:8045", "KEY-1", ["claude-sonnet-4-6", "gemini-2.5-flash", "gpt-4o"])
    clients = {c["id"]: c for c in snippets.setups(setup)}
    assert set(clients) == {"openai-sdk", "anthropic-sdk", "google-sdk", "claude-code", "codex", "gemini-cli", "opencode", "curl"}
    for client in clients.values():
        text = "".join(s["text"] for s in client["snippets"])
        assert "KEY-1" in text and "127.0.0.1:8045" in text, client["id"]
    assert 'base_url="http://127.0.0.1:8045/v1"' in clients["openai-sdk"]["snippets"][0]["text"]
    assert "claude-sonnet-4-6" in clients["anthropic-sdk"]["snippets"][0]["text"]
    assert "gemini -m gemini-2.5-flash" in clients["gemini-cli"]["snippets"][0]["text"]  # as `switchyard connect` prints it
    assert "content-type: application/json" in clients["curl"]["snippets"][0]["text"]


# --- sign-ins begun on the page -----------------------------------------------------------------------------------------


def test_a_pending_sign_in_is_taken_once_and_expires(monkeypatch):
    config = parse({"upstreams": {"antigravity": {"client_id": "cid", "client_secret": "cs"}}})
    pending = login.Pending()
    url = pending.begin(config, "http://127.0.0.1:8045/ui/oauth-callback", "mine")
    state = dict(p.split("=", 1) for p in url.split("?", 1)[1].split("&"))["state"]
    started = pending.take(state)
    assert started is not None and started.label == "mine" and pending.take(state) is None
    pending.begin(config, "http://127.0.0.1:8045/ui/oauth-callback")
    later = time.monotonic() + login.Pending.TTL + 1
    monkeypatch.setattr(login.time, "monotonic", lambda: later)
    assert pending.take(next(iter(pending._started))) is None  # too old
    monkeypatch.setenv("SWITCHYARD_GOOGLE_CLIENT_ID", "")
    with pytest.raises(login.LoginError):
        pending.begin(parse({}), "http://127.0.0.1:1/ui/oauth-callback")


@pytest.mark.parametrize(
    ("asked", "expected"),
    [
        ("http://localhost:8045", "http://localhost:8045"),
        ("http://[::1]:8045", "http://[::1]:8045"),
        ("http://127.0.0.1:8045/", "http://127.0.0.1:8045"),
        ("http://evil.example:8045", "http://127.0.0.1:8045"),
        ("http://localhost:9999", "http://127.0.0.1:8045"),
        ("https://localhost:8045", "http://127.0.0.1:8045"),
        ("http://localhost:8045/x", "http://127.0.0.1:8045"),
        (None, "http://127.0.0.1:8045"),
    ],
)
def test_google_sends_the_browser_back_to_this_gateway_only(asked, expected):
    assert api._origin(asked, "http://127.0.0.1:8045") == expected


def test_an_endpoint_is_found_by_method_and_path():
    assert api.find("GET", "/api/accounts/abc")[1] == {"id": "abc"}
    assert api.find("GET", "/api/nothing") is None
    with pytest.raises(api.ApiError) as raised:
        api.find("PUT", "/api/accounts")
    assert raised.value.status == 405 and "GET, POST" in raised.value.message


# --- mitmweb ---------------------------------------------------------------------------------------------------------------


def test_mitmweb_shows_the_comment_column_unless_the_user_chose_columns():
    with taddons.context(WebAddon(), WebColumns()) as tctx:
        tctx.master.addons.get("webcolumns").running()
        assert "comment" in tctx.options.web_columns
    with taddons.context(WebAddon(), WebColumns()) as tctx:
        tctx.configure(tctx.master.addons.get("webaddon"), web_columns=["path", "status"])
        tctx.master.addons.get("webcolumns").running()
        assert tctx.options.web_columns == ["path", "status"]
    with taddons.context(WebColumns()) as tctx:  # mitmdump: no such option
        tctx.master.addons.get("webcolumns").running()
        assert "web_columns" not in tctx.options
