"""Two replicas, one pool: two real gateways (each its own home) share one real redis-server
(tests/servers.py: a loopback port, its own temp dir, stopped at the end of the module)."""

from __future__ import annotations

import concurrent.futures
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pool_rig import wait_until
from servers import REDIS_PASSWORD, RedisServer

MODEL = "gemini-3-flash"


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.close()


@pytest.fixture
def pair(make_gateway, redis_server: RedisServer, sim):
    """Two gateways sharing the Redis (emptied first), both seen to be connected."""
    if redis_server.proc is None:
        redis_server.start()
    with redis_server.client() as r:
        r.flushall()
    config = {"cluster": {"redis_url": redis_server.url}, "routing": {"scheduling": "cache_first"}}
    a, b = make_gateway(config), make_gateway(config)
    for gateway in (a, b):
        wait_until(lambda g=gateway: health(g).get("cluster") == "ok", 15)
    yield a, b
    for gateway in (a, b):
        assert REDIS_PASSWORD not in gateway.log()


def health(gateway) -> dict[str, Any]:
    return httpx.get(f"{gateway.url}/healthz", headers=gateway.auth(), timeout=5).json()


def listed(gateway) -> dict[str, dict[str, Any]]:
    """The accounts as the running gateway sees them (its admin API, not the CLI)."""
    rows = httpx.get(f"{gateway.url}/api/accounts", headers=gateway.auth(), timeout=5).json()
    return {row["id"]: row for row in rows}


def add_shared(a, b, *emails: str, **flags: str) -> list[str]:
    """Google accounts added with the CLI of `a`'s home; both gateways see them, with models."""
    ids = []
    for email in emails:
        a.sim.add_google_account(refresh_token=(token := f"sim-refresh-{uuid.uuid4().hex}"), email=email)
        extra = [item for name, value in flags.items() for item in (f"--{name.replace('_', '-')}", value)]
        ids.append(a.cli("accounts", "add-google", "--refresh-token", token, "--email", email, *extra).stdout.split()[3])
    for gateway in (a, b):
        wait_until(lambda g=gateway: all(i in listed(g) for i in ids), 15)
        wait_until(lambda g=gateway: any(m.id == MODEL for m in g.openai().models.list().data), 15)
    return ids


def chat(gateway, text: str = "hi", **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{gateway.url}/v1/chat/completions", headers=gateway.json_headers(),
        json={"model": MODEL, "messages": [{"role": "user", "content": text}], **extra}, timeout=30,
    )


def served_by(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    return response.headers["x-switchyard-account"]


def emails(n: int) -> list[str]:
    return [f"replica-{uuid.uuid4().hex[:6]}@example.com" for _ in range(n)]


def test_the_cli_on_one_home_changes_both_gateways(pair):
    a, b = pair
    [account] = add_shared(a, b, *emails(1))
    assert listed(b)[account]["enabled"]
    a.cli("accounts", "disable", account)
    wait_until(lambda: not listed(b)[account]["enabled"] and not listed(a)[account]["enabled"], 20)
    # And from the other home back.
    b.cli("accounts", "enable", account)
    wait_until(lambda: listed(a)[account]["enabled"] and listed(b)[account]["enabled"], 20)


def test_one_token_refresh_for_both_and_a_cooldown_on_one_is_skipped_by_the_other(pair, sim):
    a, b = pair
    tired, fresh = emails(2)
    ids = dict(zip((tired, fresh), add_shared(a, b, tired, fresh)))
    for _ in range(3):
        for gateway in (a, b):
            assert served_by(chat(gateway)) in ids.values()
    counts = {acct["email"]: acct["refresh_count"] for acct in sim.google_accounts()}
    assert counts[tired] == 1 and counts[fresh] == 1  # both replicas used one token each

    sim.behave("429", {"account": tired, "model": MODEL}, retry_delay="60s")
    for _ in range(4):  # until `a` has met the 429 (balance may pick either first)
        assert served_by(chat(a)) == ids[fresh]
    assert any(e["account"] == tired and e["status"] == 429 for e in sim.log("generate") or sim.log())
    sim.clear_log()
    for _ in range(4):
        assert served_by(chat(b)) == ids[fresh]
    assert not [e for e in sim.log() if e.get("account") == tired and e.get("model") == MODEL]
    assert listed(b)[ids[tired]]["cooldowns"] or listed(b)[ids[tired]]["state"] != "ready"


def test_a_cache_first_session_stays_on_its_account_through_either_gateway(pair):
    a, b = pair
    ids = add_shared(a, b, *emails(3))
    for n in range(3):
        session = {"user": f"session-{n}-{uuid.uuid4().hex[:6]}"}
        first = served_by(chat(a, **session))
        assert first in ids
        for i in range(4):
            assert served_by(chat((b, a)[i % 2], text=f"turn {i}", **session)) == first


def test_max_concurrent_one_holds_across_both(pair, sim):
    a, b = pair
    [account] = add_shared(a, b, *emails(1), max_concurrent="1")
    sim.settings(latency=0.4)
    sim.clear_log()
    with concurrent.futures.ThreadPoolExecutor(4) as workers:
        answers = list(workers.map(lambda g: chat(g), (a, b, a, b)))
    assert all(served_by(r) == account for r in answers)
    spans = sorted((e["t"], e.get("t_end", e["t"])) for e in sim.log() if e.get("model") == MODEL)
    assert len(spans) == 4
    starts = [start for start, _ in spans]
    assert all(later - earlier >= 0.35 for earlier, later in zip(starts, starts[1:])), starts  # one at a time


def test_a_client_keys_rpm_counts_across_both(pair):
    a, b = pair
    add_shared(a, b, *emails(1))
    out = a.cli("keys", "add", "--label", "shared", "--rpm", "3").stdout
    key = out.splitlines()[0].rsplit(" ", 1)[1]
    shutil.copy(a.home / "data" / "keys.json", b.home / "data" / "keys.json")  # the keys file is per host

    def call(gateway) -> int:
        return httpx.post(
            f"{gateway.url}/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}, timeout=30,
        ).status_code

    assert [call(a), call(b), call(a)] == [200, 200, 200]
    refused = [call(b), call(a)]
    assert refused == [429, 429]


def test_losing_redis_costs_no_request_and_both_converge_when_it_returns(pair, redis_server, sim):
    a, b = pair
    tired, fresh = emails(2)
    ids = dict(zip((tired, fresh), add_shared(a, b, tired, fresh)))
    redis_server.stop()
    for gateway in (a, b):
        for i in range(3):
            assert served_by(chat(gateway, text=f"alone {i}")) in ids.values()
        wait_until(lambda g=gateway: health(g).get("cluster") == "degraded", 20)
    for gateway in (a, b):
        assert gateway.log().count("lost Redis") == 1

    redis_server.start()  # empty, as a Redis that lost its data
    for gateway in (a, b):
        wait_until(lambda g=gateway: health(g).get("cluster") == "ok", 15)
    with redis_server.client() as r:
        wait_until(lambda: r.get("switchyard:accounts") is not None, 10)  # republished
        assert {acct["id"] for acct in json.loads(r.get("switchyard:accounts"))["accounts"]} >= set(ids.values())

    # Shared again: a cooldown met on `a` is skipped by `b`.
    sim.behave("429", {"account": tired, "model": MODEL}, retry_delay="60s")
    for _ in range(4):
        assert served_by(chat(a)) == ids[fresh]
    sim.clear_log()
    for _ in range(4):
        assert served_by(chat(b)) == ids[fresh]
    assert not [e for e in sim.log() if e.get("account") == tired and e.get("model") == MODEL]
    for gateway in (a, b):
        assert "back with Redis" in gateway.log()


def test_a_responses_conversation_goes_on_through_the_other_gateway(pair):
    a, b = pair
    add_shared(a, b, *emails(1))
    first = a.openai().responses.create(model=MODEL, input="remember the word apricot")
    second = b.openai().responses.create(model=MODEL, input="which word?", previous_response_id=first.id)
    third = a.openai().responses.create(model=MODEL, input="once more", previous_response_id=second.id)
    assert second.output_text and third.output_text


# --- units: what goes through the store round-trips ---------------------------------------------------


def test_a_conversation_survives_its_trip_through_the_store():
    from addons.recall import decode_messages, encode_messages
    from addons.translate import canonical as c

    messages = [
        c.Message("user", [c.Text("look"), c.Image("image/png", data="aGk=")]),
        c.Message("assistant", [c.Thinking("hmm", signature="sig-1"), c.ToolCall("call_1", "look", {"q": 1}, signature="sig-2")]),
        c.Message("user", [c.ToolResult("call_1", "look", [c.Text("found")], is_error=True)]),
    ]
    assert decode_messages(encode_messages(messages)) == messages


def test_signatures_one_replica_saw_restore_a_request_on_another():
    from addons.signatures import SignatureCache
    from addons.translate import canonical as c

    here, there = SignatureCache(), SignatureCache()
    answer = [c.Thinking("plan", signature="c2lnLXRob3VnaHQ="), c.ToolCall("call_9", "f", {}, signature="c2lnLWNhbGw=")]
    here.remember(answer, "gemini")
    shared = {space: dict(items) for space, items in here.entries(answer, "gemini").items()}

    request = c.Request(model="m", messages=[
        c.Message("user", [c.Text("go")]),
        c.Message("assistant", [c.Thinking("plan"), c.ToolCall("call_9", "f", {})]),
        c.Message("assistant", [c.Text("x", signature="c2lnLWNhbGw=")]),
    ])
    wanted = there.unknown(request)
    assert set(wanted) == {"sig-call", "sig-thought", "sig-origin"}
    for space, keys in wanted.items():
        there.learn(space, {k: shared[space][k] for k in keys if k in shared.get(space, {})})
    there.restore(request)
    assert [p.signature for p in request.messages[1].parts] == ["c2lnLXRob3VnaHQ=", "c2lnLWNhbGw="]
    assert there.family("c2lnLXRob3VnaHQ=") == there.family("c2lnLWNhbGw=") == "gemini"
    assert not any(there.unknown(request).values())  # nothing left to ask the store


def test_alone_nothing_imports_a_redis_client():
    import subprocess
    import sys

    code = (
        "import sys; import addons.gateway, addons.clientkeys, addons.cluster, addons.auth, pool.cli, pool.pool; "
        "assert not [m for m in sys.modules if m == 'redis' or m.startswith('redis.')], 'redis imported'"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=str(__import__("pathlib").Path(__file__).resolve().parent.parent))
    assert done.returncode == 0, done.stderr
