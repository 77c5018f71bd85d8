"""The pool's scenarios end to end: SDKs -> a real `switchyard run` -> the simulated upstream.

Each asserts the accounts the upstream saw (sim.log), the statuses the client got and what
`switchyard accounts list --json` reports.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid

import anthropic
import httpx
import openai
import pytest
from pool_rig import MODEL, add_google, generations, home_of, wait_until

CLAUDE = "claude-sonnet-4-6"


def setup(make_gateway, sim, count: int, config: dict | None = None, **fields):
    """A gateway with `count` Google accounts (fields apply to each, priority = index when asked)."""
    gateway = make_gateway(config, start=False)
    home = home_of(gateway.home)
    accounts = []
    for i in range(count):
        extra = {k: (v[i] if isinstance(v, list) else v) for k, v in fields.items()}
        accounts.append(add_google(sim, home, **extra))
    sim.clear_log()
    return gateway, accounts


def test_429_storm_on_two_of_three_accounts_costs_the_client_nothing(make_gateway, sim):
    gateway, [(a, a_mail), (b, b_mail), (c, c_mail)] = setup(make_gateway, sim, 3)
    gateway.start()
    sim.behave("429", {"account": a_mail}, retry_delay="30s")
    sim.behave("429", {"account": b_mail}, retry_delay="50s")
    client = gateway.openai()
    served = []
    for n in range(8):
        response = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": f"storm {n}"}], stream=n % 2 == 1
        )
        assert response.status_code == 200
        served.append(response.headers["x-switchyard-account"])
        response.parse()
    assert set(served) == {c}
    seen = generations(sim)
    assert sorted(seen) == sorted([(a_mail, 429), (b_mail, 429)] + [(c_mail, 200)] * 8)
    rows = {r["id"]: r for r in gateway.accounts()}
    now = time.time()
    for account_id, email, hint in ((a, a_mail, 30), (b, b_mail, 50)):
        refused_at = next(e["t"] for e in sim.log("google") if e["account"] == email and e["status"] == 429)
        cooldown = rows[account_id]["cooldowns"][MODEL]
        # As long as the upstream asked, from when it refused (however slow the machine is).
        assert cooldown["error_class"] == "rate_limit" and refused_at + hint <= cooldown["until"] <= now + hint
        assert rows[account_id]["last_error"]["status"] == 429
    assert rows[c]["cooldowns"] == {} and rows[c]["last_error"] is None


def test_cache_first_keeps_a_claude_code_session_on_one_account_for_20_turns(make_gateway, sim):
    gateway, accounts = setup(make_gateway, sim, 3, {"routing": {"scheduling": "cache_first"}})
    gateway.start()
    emails = dict(accounts)
    session = str(uuid.uuid4())
    client = gateway.anthropic(default_headers={"X-Claude-Code-Session-Id": session})
    messages: list[dict] = []
    served, cached = [], []
    home = None
    for turn in range(20):
        if turn == 10:  # the session's account starts refusing: the session moves, once
            sim.behave("429", {"account": emails[home]}, retry_delay="60s")
        messages.append({"role": "user", "content": f"turn {turn}: tell me more"})
        response = client.messages.with_raw_response.create(model=CLAUDE, max_tokens=256, messages=messages)
        message = response.parse()
        served.append(response.headers["x-switchyard-account"])
        cached.append(message.usage.cache_read_input_tokens or 0)
        home = home or served[0]
        messages.append({"role": "assistant", "content": message.content[0].text})
    moved = served[10]
    assert served[:10] == [home] * 10
    assert moved != home and served[10:] == [moved] * 10
    # The upstream's prompt cache pays off on every turn but the first on each account.
    assert cached[0] == 0 and all(x > 0 for x in cached[1:10])
    assert cached[10] == 0 and all(x > 0 for x in cached[11:])
    assert generations(sim).count((emails[home], 429)) == 1


def test_cooldowns_and_sessions_survive_a_killed_gateway(make_gateway, sim):
    config = {"routing": {"scheduling": "cache_first"}}
    gateway, [(a, a_mail), (b, b_mail)] = setup(make_gateway, sim, 2, config, priority=[0, 1])
    gateway.start()
    # Long enough that no slow machine sees it end before the test does.
    sim.behave("429", {"account": a_mail}, retry_delay="290s")
    session = {"X-Claude-Code-Session-Id": "kept-across-restarts"}
    client = gateway.anthropic(default_headers=session)
    reply = client.messages.with_raw_response.create(model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "hi"}])
    assert reply.headers["x-switchyard-account"] == b
    state_file = gateway.home / "data" / "state.json"

    def persisted() -> bool:
        state = json.loads(state_file.read_text()) if state_file.exists() else {}
        cooldowns = state.get("accounts", {}).get(a, {}).get("cooldowns", {})
        return CLAUDE in cooldowns and "claude-code:kept-across-restarts" in state.get("sessions", {})

    wait_until(persisted, timeout=5)
    before = {r["id"]: r for r in gateway.accounts()}[a]["cooldowns"][CLAUDE]["until"]
    gateway.kill()  # SIGKILL: no chance to save on the way out
    sim.clear_rules()  # even a recovered upstream must not be hit before the cooldown ends
    sim.clear_log()
    gateway.start()
    after = {r["id"]: r for r in gateway.accounts()}[a]["cooldowns"][CLAUDE]
    assert after["until"] == before > time.time()
    for _ in range(3):
        reply = client.messages.with_raw_response.create(model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "again"}])
        assert reply.headers["x-switchyard-account"] == b
    assert {email for email, _ in generations(sim)} == {b_mail}
    # Now the other one limits too: every account is cooling, and the caller is told until when.
    sim.behave("429", {"account": b_mail}, retry_delay="20s")
    with pytest.raises(anthropic.RateLimitError) as first:
        client.messages.create(model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "and now?"}])
    assert 15 <= int(first.value.response.headers["retry-after"]) <= 20
    sim.clear_log()
    with pytest.raises(anthropic.RateLimitError) as second:
        client.messages.create(model=CLAUDE, max_tokens=64, messages=[{"role": "user", "content": "still?"}], stream=True)
    assert 1 <= int(second.value.response.headers["retry-after"]) <= 20
    assert second.value.body["error"]["type"] == "rate_limit_error"
    assert "cooling" in second.value.message
    assert generations(sim) == []


def test_max_concurrent_holds_under_50_concurrent_requests(make_gateway, sim):
    gateway, [(a, a_mail), (b, b_mail)] = setup(make_gateway, sim, 2)
    gateway.cli("accounts", "set", a, "--max-concurrent", "2")
    gateway.cli("accounts", "set", b, "--max-concurrent", "3", "--priority", "0")
    gateway.start()
    sim.settings(latency=0.2)

    async def one(client: httpx.AsyncClient, n: int) -> tuple[int, str]:
        body = {"model": MODEL, "messages": [{"role": "user", "content": f"c{n}"}], "stream": n % 2 == 0}
        response = await client.post("/v1/chat/completions", json=body, headers=gateway.auth())
        return response.status_code, response.text

    async def burst() -> list[tuple[int, str]]:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=60, limits=httpx.Limits(max_connections=60)) as client:
            return await asyncio.gather(*(one(client, n) for n in range(50)))

    started = time.time()
    results = asyncio.run(burst())
    assert [status for status, _ in results] == [200] * 50, results[0]
    for n, (_, text) in enumerate(results):  # streams end properly; whole answers are whole
        assert text.rstrip().endswith("data: [DONE]") if n % 2 == 0 else json.loads(text)["choices"][0]["message"]["content"] == f"echo: c{n}"
    peaks = {}
    for email in (a_mail, b_mail):
        times = sorted(e["t"] for e in sim.log("google") if e["account"] == email and e["t"] >= started and "enerateContent" in e["path"])
        peaks[email] = max(sum(1 for u in times if t <= u < t + 0.2) for t in times)
    assert peaks == {a_mail: 2, b_mail: 3}  # reached, never exceeded
    rows = {r["id"]: r for r in gateway.accounts()}
    assert (rows[a]["max_concurrent"], rows[b]["max_concurrent"]) == (2, 3)


def models_cooling(gateway, account_id: str) -> float:
    """What the gateway itself says (`/metrics`): how many models the account cools for."""
    text = httpx.get(f"{gateway.url}/metrics", headers=gateway.auth(), timeout=10).text
    line = f'switchyard_account_models_cooling{{account="{account_id}"}} '
    return next((float(row[len(line):]) for row in text.splitlines() if row.startswith(line)), 0.0)


def test_cli_changes_reach_a_running_gateway_within_a_second(make_gateway, sim):
    gateway, [(a, a_mail), (b, b_mail)] = setup(make_gateway, sim, 2, priority=[0, 1])
    gateway.start()
    client = gateway.openai()

    def served_by(model: str = MODEL) -> str:
        response = client.chat.completions.with_raw_response.create(model=model, messages=[{"role": "user", "content": "x"}])
        return response.headers["x-switchyard-account"]

    def states() -> dict[str, str]:
        """Each account's state as the gateway itself sees it (`/metrics`: answered locally, so
        polling it measures the gateway, not the upstream's latency on a busy machine)."""
        text = httpx.get(f"{gateway.url}/metrics", headers=gateway.auth(), timeout=10).text
        rows = re.findall(r'^switchyard_account_state\{([^}]*)\} 1\.0$', text, re.M)
        return {labels["account"]: labels["state"] for labels in (dict(re.findall(r'(\w+)="([^"]*)"', r)) for r in rows)}

    assert served_by() == a
    took = {}
    gateway.cli("accounts", "disable", a)
    took["disable"] = wait_until(lambda: states().get(a) == "disabled", timeout=10)
    assert served_by() == b
    gateway.cli("accounts", "enable", a)
    took["enable"] = wait_until(lambda: states().get(a) == "ready", timeout=10)
    assert served_by() == a
    # The quota runs out behind the gateway's back; `refresh` tells it before any request fails.
    sim.set_quota(a_mail, MODEL, remainingFraction=0.0, resetTime="2099-01-01T00:00:00Z")
    gateway.cli("accounts", "refresh", a)
    sim.clear_log()
    # The gateway learns it from the state file (its next sync), without sending A a request.
    wait_until(lambda: models_cooling(gateway, a) == 1, timeout=10)
    assert served_by() == b
    assert generations(sim) == [(b_mail, 200)]
    assert served_by("gemini-2.5-pro") == a  # only that model ran out
    gateway.cli("accounts", "remove", a)
    took["remove"] = wait_until(lambda: a not in states(), timeout=10)
    assert served_by("gemini-2.5-pro") == b
    assert [r["id"] for r in gateway.accounts()] == [b]
    assert all(t < 1.0 for t in took.values()), took
