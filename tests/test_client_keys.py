"""Client keys: stored hashed, shown by prefix, limited by models, requests, tokens and time —
units for the store and the windows (with a clock of the test's own), then a real gateway."""

from __future__ import annotations

import json
import os
import stat
import time
import anthropic
import httpx
import openai
import pytest
from test_observability import ledger_rows, metrics, total

from pool import keycmd, ledger, rates
from pool.dialects import SQLITE
from pool.keys import KEY_PREFIX, KeysError, KeyStore, make

GEMINI, CLAUDE = "gemini-2.5-flash", "claude-sonnet-4-6"


# --- the store -----------------------------------------------------------------------------------


def test_keys_are_stored_hashed_and_found_by_prefix(tmp_path):
    store = KeyStore(tmp_path / "keys.json")
    record, key = make("laptop", models=["gemini-*"], rpm=5)
    store.add(record)
    other, other_key = make("script")
    store.add(other)
    text = (tmp_path / "keys.json").read_text()
    assert key.startswith(KEY_PREFIX) and len(key) == len(KEY_PREFIX) + 40
    assert key not in text and key[len(KEY_PREFIX) + 6:] not in text  # only the shown prefix is kept
    assert stat.S_IMODE(os.stat(tmp_path / "keys.json").st_mode) == 0o600
    fresh = KeyStore(tmp_path / "keys.json")
    fresh.load()
    assert fresh.find(key).label == "laptop" and fresh.find(other_key).label == "script"
    assert fresh.find(key[:-1] + ("0" if key[-1] != "0" else "1")) is None
    assert fresh.find(record.prefix) is None
    assert fresh.get("laptop").public()["prefix"] == key[: len(KEY_PREFIX) + 6] + "..."
    assert "digest" not in fresh.get(record.id).public() and "salt" not in fresh.get(record.id).public()
    with pytest.raises(KeysError, match="exists already"):
        store.add(make("laptop")[0])
    store.modify("laptop", rpm=None, models=[])
    assert KeyStore(tmp_path / "keys.json").load()[0].rpm is None
    store.remove(record.id)
    assert [k.label for k in KeyStore(tmp_path / "keys.json").load()] == ["script"]


def test_expiry_reads_spans_dates_and_never():
    now = 1_800_000_000.0
    assert keycmd.parse_expiry("30d", now) == now + 30 * 86400
    assert keycmd.parse_expiry("12h", now) == now + 12 * 3600
    assert keycmd.parse_expiry("never", now) is None
    assert keycmd.parse_expiry("2000-01-01", now) < now
    with pytest.raises(Exception, match="30d"):
        keycmd.parse_expiry("soon", now)


# --- the windows ------------------------------------------------------------------------------------


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_requests_per_minute_slide_and_say_when_to_come_back():
    clock = Clock(1_800_000_000.0)
    limits = rates.Rates(clock=clock)
    key, _ = make("k", rpm=2)
    assert limits.admit(key) is None
    clock.now += 20
    assert limits.admit(key) is None
    clock.now += 10
    refusal = limits.admit(key)
    assert refusal is not None and refusal.limit == "rpm" and refusal.retry_after == 30  # the first ages out at +60
    clock.now += 30
    assert limits.admit(key) is None  # the next minute works
    assert limits.admit(key) is not None  # the second request (at +20) is still in the window
    clock.now += 20
    assert limits.admit(key) is None


def test_tokens_per_minute_and_per_day():
    clock = Clock(rates.day_start(1_800_000_000.0) + 3600)  # 1 am
    limits = rates.Rates(clock=clock)
    key, _ = make("k", tpm=1000, daily_tokens=2500)
    assert limits.admit(key) is None
    limits.spend(key.id, 600)
    clock.now += 10
    assert limits.admit(key) is None
    limits.spend(key.id, 600)  # 1200 in the window: the next waits until the first 600 age out
    refusal = limits.admit(key)
    assert refusal is not None and refusal.limit == "tpm" and refusal.retry_after == 50
    clock.now += 50
    assert limits.admit(key) is None
    limits.spend(key.id, 900)
    clock.now += 120
    limits.spend(key.id, 500)  # 2600 today
    refusal = limits.admit(key)
    assert refusal is not None and refusal.limit == "daily_tokens"
    assert refusal.retry_after == pytest.approx(rates.next_day(clock.now) - clock.now, abs=1)
    clock.now = rates.next_day(clock.now) + 1
    assert limits.admit(key) is None and limits.today(key.id) == 0


def test_a_restart_starts_from_the_tokens_the_ledger_has_for_today(tmp_path):
    path = tmp_path / "usage.sqlite3"
    now = time.time()
    book = ledger.Ledger(path, 30)
    book.start()
    base = dict(protocol="openai_chat", operation="generate", requested_model="m", model="m", account_id="a",
                account="a", status=200, error_class=None, attempts=1, stream=False, latency_ms=1.0, ttfb_ms=1.0)
    book.add(ledger.Record(at=now, input_tokens=100, output_tokens=20, key_id="k1", key_label="one", **base))
    book.add(ledger.Record(at=now, input_tokens=5, output_tokens=5, key_id="k1", key_label="one", **base))
    book.add(ledger.Record(at=rates.day_start(now) - 10, input_tokens=999, output_tokens=1, key_id="k1", **base))
    book.add(ledger.Record(at=now, input_tokens=7, output_tokens=0, **base))
    book.close()
    assert ledger.usage_by_key(path, rates.day_start(now)) == {"k1": (2, 130)}


# --- a real gateway -----------------------------------------------------------------------------------


def add_key(gateway, label: str, *flags: str) -> str:
    out = gateway.cli("keys", "add", "--label", label, *flags).stdout
    return out.splitlines()[0].rsplit(" ", 1)[1]


def chat(gateway, key: str, model: str = GEMINI, text: str = "hi") -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"} if key else {},
        json={"model": model, "messages": [{"role": "user", "content": text}]}, timeout=30,
    )


def test_client_keys_on_a_real_gateway(make_gateway, sim):
    gateway = make_gateway({"proxy": {"auth_mode": "auto"}}, start=False)
    gateway.add_google()
    gateway.start("--set", "switchyard_rate_window=3")  # a "minute" of 3 s
    assert chat(gateway, "").status_code == 200  # auto on loopback, no client keys yet: no key needed

    gem = add_key(gateway, "gem", "--models", "gemini-*")
    fast = add_key(gateway, "fast", "--rpm", "2")
    old = add_key(gateway, "old", "--expires", "2000-01-01")
    listed = {k["label"]: k for k in json.loads(gateway.cli("keys", "list", "--json").stdout)}
    assert listed["old"]["status"] == "expired" and listed["fast"]["rpm"] == 2 and listed["gem"]["models"] == ["gemini-*"]
    assert all(k["prefix"].endswith("...") and gem not in json.dumps(listed) for k in listed.values())

    # With client keys defined, auto mode asks for a key on loopback too; the admin key still works.
    refused = chat(gateway, "")
    assert refused.status_code == 401 and refused.json()["error"]["type"] == "authentication_error"
    assert chat(gateway, gateway.api_key).status_code == 200

    # A key for gemini-* only: a Claude model is a 403 in the caller's own protocol.
    seen: dict[str, dict[str, int]] = {}

    def saw(label: str, status: int, usage: tuple[int, int] = (0, 0)) -> None:
        entry = seen.setdefault(label, {"requests": 0, "errors": 0, "input_tokens": 0, "output_tokens": 0})
        entry["requests"] += 1
        entry["errors"] += status >= 400
        entry["input_tokens"] += usage[0]
        entry["output_tokens"] += usage[1]

    client = anthropic.Anthropic(base_url=gateway.url, api_key=gem, max_retries=0, timeout=30)
    with pytest.raises(anthropic.PermissionDeniedError, match="may not use the model"):
        client.messages.create(model=CLAUDE, max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    saw("gem", 403)
    answer = client.messages.create(model=GEMINI, max_tokens=20, messages=[{"role": "user", "content": "from gem"}])
    assert answer.content[0].text == "echo: from gem"
    saw("gem", 200, (answer.usage.input_tokens, answer.usage.output_tokens))
    listing = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=gem, max_retries=0).models.list()
    assert listing.data and all(m.id.startswith("gemini-") for m in listing.data)  # a key sees its own models

    # Two requests a window, then 429 with Retry-After in the caller's protocol; after it, served.
    oai = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=fast, max_retries=0, timeout=30)
    for i in range(2):
        done = oai.chat.completions.create(model=GEMINI, messages=[{"role": "user", "content": f"fast {i}"}])
        saw("fast", 200, (done.usage.prompt_tokens, done.usage.completion_tokens))
    limited = chat(gateway, fast)
    saw("fast", 429)
    assert limited.status_code == 429, limited.text
    assert limited.json()["error"]["type"] == "rate_limit_error" and "2 requests per minute" in limited.json()["error"]["message"]
    wait = int(limited.headers["retry-after"])
    assert 1 <= wait <= 3
    time.sleep(wait)  # what the client is told to do
    again = chat(gateway, fast, text="fast again")
    assert again.status_code == 200, again.text
    saw("fast", 200, (again.json()["usage"]["prompt_tokens"], again.json()["usage"]["completion_tokens"]))

    # An expired key: 401, whatever the mode.
    expired = chat(gateway, old)
    saw("old", 401)
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]

    # Client keys reach the model API only: /metrics is the admin's.
    assert httpx.get(f"{gateway.url}/metrics", headers={"authorization": f"Bearer {gem}"}).status_code == 403

    # What the clients saw is what `stats --by key` and /metrics say, key by key.
    admin_requests, keyless = 1, 2
    rows = ledger_rows(gateway, expect=sum(e["requests"] for e in seen.values()) + admin_requests + keyless)
    assert {r["key_label"] for r in rows} == {"gem", "fast", "old", "admin", None}
    report = json.loads(gateway.cli("stats", "--by", "key", "--json").stdout)
    by_key = {row["key"]: row for row in report["rows"]}
    for label, want in seen.items():
        got = {name: by_key[label][name] for name in want}
        assert got == want, (label, got, want)
    assert by_key["admin"]["requests"] == admin_requests
    text = gateway.cli("stats", "--by", "key").stdout
    assert "KEY" in text and "gem" in text and "fast" in text
    m = metrics(gateway)
    for label, want in seen.items():
        assert total(m["switchyard_requests_total"], key=label) == want["requests"]
        assert total(m["switchyard_tokens_total"], key=label, kind="input") == want["input_tokens"]
        assert total(m["switchyard_tokens_total"], key=label, kind="output") == want["output_tokens"]
    assert total(m["switchyard_requests_total"], key="fast", status="429") == 1
    assert total(m["switchyard_requests_total"], key="gem", status="403") == 1
    today = {k["label"]: k["today"] for k in json.loads(gateway.cli("keys", "list", "--json").stdout)}
    assert today["fast"] == {
        "requests": seen["fast"]["requests"], "tokens": seen["fast"]["input_tokens"] + seen["fast"]["output_tokens"],
    }

    # Removed: refused at once.
    gateway.cli("keys", "remove", "fast")
    assert chat(gateway, fast).status_code == 401

    # A daily limit counts what the key used today, also across a restart (the ledger has it).
    spent = seen["gem"]["input_tokens"] + seen["gem"]["output_tokens"]
    gateway.cli("keys", "set", "gem", "--daily-tokens", str(spent))
    for _ in range(2):
        over = chat(gateway, gem)
        assert over.status_code == 429 and "tokens per day" in over.json()["error"]["message"], over.text
        assert int(over.headers["retry-after"]) == pytest.approx(rates.next_day(time.time()) - time.time(), abs=5)
        gateway.stop()
        gateway.start("--set", "switchyard_rate_window=3")
    gateway.cli("keys", "set", "gem", "--daily-tokens", "0")
    assert chat(gateway, gem).status_code == 200


def test_an_older_ledger_gets_the_new_columns_and_keeps_its_rows(tmp_path):
    import sqlite3

    path = tmp_path / "usage.sqlite3"
    db = sqlite3.connect(path)
    first = ", ".join(f"{name} {ledger.declaration(name, SQLITE)}" for name in ledger.FIRST_COLUMNS)
    db.execute(f"CREATE TABLE requests ({SQLITE.id_column}, {first})")  # the table before client keys
    db.execute("INSERT INTO requests (at, protocol, operation) VALUES (1.0, 'openai_chat', 'generate')")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    db = ledger.connect(path)
    try:
        columns = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
        assert "key_id" in columns and set(ledger.ADDED_COLUMNS) <= columns
        assert db.execute("SELECT count(*), max(key_id) FROM requests").fetchone() == (1, None)
    finally:
        db.close()
    assert ledger.usage_by_key(path, 0) == {}
