"""Seeing everything: the usage ledger, `switchyard stats`, `/metrics`, mitmweb's flows and the
gateway's own output — each checked against what the client really saw.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import API_KEY, SIM_CLIENT, Gateway, free_port

MODEL = "gemini-2.5-flash"
GENERATE = ("generateContent", "streamGenerateContent")


# --- helpers ----------------------------------------------------------------------------------------


def add_gemini_key(gateway: Gateway, priority: int) -> tuple[str, str]:
    """A Gemini API key account known to the sim; (account id, key)."""
    key = f"AIza-obs-{uuid.uuid4().hex}"
    gateway.sim.add_api_key(key, "gemini")
    out = gateway.cli(
        "accounts", "add-key", "--kind", "gemini", "--api-key", key, "--base-url", gateway.sim.url,
        "--priority", str(priority),
    ).stdout
    return out.split()[3], key


def ledger_file(gateway: Gateway) -> Path:
    return gateway.home / "data" / "usage.sqlite3"


def ledger_rows(gateway: Gateway, expect: int | None = None, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The ledger's rows, oldest first; waits (bounded) until `expect` rows are there."""
    deadline = time.monotonic() + timeout
    while True:
        rows: list[dict[str, Any]] = []
        if ledger_file(gateway).exists():
            db = sqlite3.connect(ledger_file(gateway), timeout=5)
            db.row_factory = sqlite3.Row
            try:
                rows = [dict(r) for r in db.execute("SELECT * FROM requests ORDER BY id")]
            except sqlite3.OperationalError:
                rows = []  # the writer has not made the table yet
            finally:
                db.close()
        if expect is None or len(rows) >= expect or time.monotonic() > deadline:
            return rows
        time.sleep(0.05)


def metrics(gateway: Gateway) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Prometheus samples by name: [(labels, value)]."""
    response = httpx.get(f"{gateway.url}/metrics", headers=gateway.auth(), timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def total(samples: list[tuple[dict[str, str], float]], **match: str) -> float:
    return sum(v for labels, v in samples if all(labels.get(k) == want for k, want in match.items()))


def sim_generates(gateway: Gateway, keys: list[str]) -> list[dict[str, Any]]:
    from simupstream import mask

    labels = {mask(k) for k in keys}
    return [e for e in gateway.sim.log() if e["account"] in labels and any(g in e["path"] for g in GENERATE)]


def known_secrets(gateway: Gateway, access_tokens: int = 0) -> list[str]:
    """Every credential this gateway holds: client key, account secrets, OAuth client, and the
    access tokens it saved (waits, bounded, until `access_tokens` of them are on disk)."""
    data = gateway.home / "data"
    found = [API_KEY, SIM_CLIENT["client_secret"]]
    found += [a["secret"] for a in json.loads((data / "accounts.json").read_text())["accounts"]]
    deadline = time.monotonic() + 5
    while True:
        state = json.loads((data / "state.json").read_text()) if (data / "state.json").exists() else {"accounts": {}}
        tokens = [s["access_token"] for s in state["accounts"].values() if s.get("access_token")]
        if len(tokens) >= access_tokens or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert len(tokens) >= access_tokens
    found += tokens
    assert all(len(s) >= 16 for s in found)
    return found


def assert_no_secret(text: str, secrets_: list[str], where: str) -> None:
    for secret in secrets_:
        assert secret not in text, f"a secret ({secret[:6]}…) appears in {where}"


# --- one mixed run: ledger, stats and metrics agree with the client ----------------------------------------


def test_mixed_run_ledger_stats_and_metrics_agree_with_the_client(make_gateway, sim):
    gateway = make_gateway(start=False)
    first_id, first_key = add_gemini_key(gateway, priority=0)
    second_id, second_key = add_gemini_key(gateway, priority=1)
    gateway.start()
    sim.clear_log()
    # The preferred account answers 429 once: that request is served by the other one after a retry.
    sim.behave("429", {"account": first_key}, times=1, retry_delay="120s")
    oai, ant = gateway.openai(), gateway.anthropic()
    seen: list[dict[str, Any]] = []  # what the client saw, request by request

    def served(protocol: str, raw: Any, input_tokens: int, output_tokens: int, stream: bool) -> None:
        seen.append(dict(protocol=protocol, status=200, account=raw.headers["x-switchyard-account"],
                         input=input_tokens, output=output_tokens, stream=stream))

    raw = oai.chat.completions.with_raw_response.create(model=MODEL, messages=[{"role": "user", "content": "one"}])
    usage = raw.parse().usage
    served("openai_chat", raw, usage.prompt_tokens, usage.completion_tokens, False)

    raw = oai.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": "two streamed"}], stream=True,
        stream_options={"include_usage": True},
    )
    usage = next(chunk.usage for chunk in raw.parse() if chunk.usage is not None)
    served("openai_chat", raw, usage.prompt_tokens, usage.completion_tokens, True)

    raw = ant.messages.with_raw_response.create(model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "three"}])
    usage = raw.parse().usage
    served("anthropic", raw, usage.input_tokens, usage.output_tokens, False)

    raw = ant.messages.with_raw_response.create(
        model=MODEL, max_tokens=64, messages=[{"role": "user", "content": "four streamed"}], stream=True
    )
    final = next(e.usage for e in raw.parse() if e.type == "message_delta")  # the stream's last word on usage
    served("anthropic", raw, final.input_tokens, final.output_tokens, True)

    failures = [
        ("openai_chat", httpx.post(f"{gateway.url}/v1/chat/completions", content=b"{oops", headers=gateway.json_headers())),
        ("openai_chat", httpx.post(f"{gateway.url}/v1/chat/completions", headers=gateway.auth(),
                                   json={"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]})),
        ("anthropic", httpx.post(f"{gateway.url}/v1/messages", headers={"x-api-key": "sk-wrong-key-0000000000"},
                                 json={"model": MODEL, "max_tokens": 9, "messages": [{"role": "user", "content": "x"}]})),
    ]
    for protocol, response in failures:
        seen.append(dict(protocol=protocol, status=response.status_code, account=None, input=0, output=0, stream=False))
    assert [s["status"] for s in seen] == [200, 200, 200, 200, 400, 404, 401]
    # Local answers are not ledger rows.
    assert httpx.get(f"{gateway.url}/v1/models", headers=gateway.auth()).status_code == 200
    assert httpx.get(f"{gateway.url}/healthz", headers=gateway.auth()).status_code == 200

    # --- the ledger: one row per request, as the client saw it
    rows = ledger_rows(gateway, expect=len(seen))
    assert len(rows) == len(seen)
    for row, s in zip(rows, seen):
        assert (row["protocol"], row["status"], row["account_id"]) == (s["protocol"], s["status"], s["account"])
        assert (row["input_tokens"], row["output_tokens"]) == (s["input"], s["output"])
        assert row["stream"] == s["stream"]
        assert row["latency_ms"] is not None and row["latency_ms"] > 0
    assert [r["attempts"] for r in rows] == [2, 1, 1, 1, 0, 0, 0]
    assert all(r["account_id"] == second_id for r in rows[:4])
    assert [r["error_class"] for r in rows] == [None] * 4 + ["invalid_request", "not_found", "unauthorized"]
    assert rows[0]["requested_model"] == rows[0]["model"] == MODEL
    assert rows[5]["requested_model"] == "no-such-model" and rows[5]["model"] is None
    for row in rows[:4]:
        assert 0 < row["ttfb_ms"] <= row["latency_ms"]
    generates = sim_generates(gateway, [first_key, second_key])
    assert sum(r["attempts"] for r in rows) == len(generates) == 5
    assert [e["status"] for e in generates].count(429) == 1

    # --- `switchyard stats --json`
    report = json.loads(gateway.cli("stats", "--json").stdout)
    totals = report["totals"]
    assert totals["requests"] == len(seen)
    assert totals["errors"] == 3 and totals["retried"] == 1 and totals["attempts"] == 5
    assert totals["input_tokens"] == sum(s["input"] for s in seen)
    assert totals["output_tokens"] == sum(s["output"] for s in seen)
    assert totals["statuses"] == {str(k): v for k, v in Counter(s["status"] for s in seen).items()}
    assert totals["error_classes"] == {"invalid_request": 1, "not_found": 1, "unauthorized": 1}
    by_account = {r["account_id"]: r for r in json.loads(gateway.cli("stats", "--json", "--by", "account").stdout)["rows"]}
    assert set(by_account) == {second_id, None}
    assert by_account[second_id]["requests"] == 4 and by_account[second_id]["retried"] == 1
    assert by_account[None]["errors"] == 3
    text = gateway.cli("stats", "--by", "model").stdout
    assert "requests 7" in text and "no-such-model" in text and MODEL in text

    # --- /metrics
    assert httpx.get(f"{gateway.url}/metrics", timeout=10).status_code == 401
    m = metrics(gateway)
    requests = m["switchyard_requests_total"]
    assert {status: total(requests, status=status) for status in ("200", "400", "401", "404")} == {
        "200": 4, "400": 1, "401": 1, "404": 1,
    }
    assert total(requests) == len(seen)
    assert total(requests, protocol="anthropic", account=second_id, model=MODEL, status="200") == 2
    tokens = m["switchyard_tokens_total"]
    assert total(tokens, kind="input") == totals["input_tokens"]
    assert total(tokens, kind="output") == totals["output_tokens"]
    attempts = m["switchyard_upstream_attempts_total"]
    assert total(attempts, account=first_id, outcome="rate_limit") == 1
    assert total(attempts, account=second_id, outcome="ok") == 4
    assert total(attempts) == len(generates)
    assert total(m["switchyard_upstream_retries_total"]) == 1
    assert total(m["switchyard_request_duration_seconds_count"]) == len(seen)
    assert total(m["switchyard_time_to_first_byte_seconds_count"]) == 4
    assert total(m["switchyard_accounts"], state="ready") == 2
    assert total(m["switchyard_account_state"], account=first_id, state="ready") == 1
    assert total(m["switchyard_account_models_cooling"], account=first_id) == 1
    assert total(m["switchyard_account_models_cooling"], account=second_id) == 0
    assert_no_secret(httpx.get(f"{gateway.url}/metrics", headers=gateway.auth()).text, known_secrets(gateway), "/metrics")


# --- the ledger survives -------------------------------------------------------------------------------


def _chat(gateway: Gateway, text: str) -> None:
    assert gateway.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}]).choices


def test_ledger_survives_a_restart_and_a_kill(make_gateway):
    gateway = make_gateway(start=False)
    gateway.add_google()
    gateway.start()
    _chat(gateway, "before the restart 1")
    _chat(gateway, "before the restart 2")
    assert len(ledger_rows(gateway, expect=2)) == 2
    gateway.stop()
    assert len(ledger_rows(gateway)) == 2

    gateway.start()
    _chat(gateway, "after the restart")
    rows = ledger_rows(gateway, expect=3)
    assert len(rows) == 3 and rows[-1]["status"] == 200

    _chat(gateway, "before the kill 1")
    _chat(gateway, "before the kill 2")
    assert len(ledger_rows(gateway, expect=5, timeout=10)) == 5  # committed rows must survive a SIGKILL
    gateway.kill()
    db = sqlite3.connect(ledger_file(gateway))
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("SELECT count(*) FROM requests").fetchone()[0] == 5
    db.close()

    gateway.start()
    _chat(gateway, "after the kill")
    assert len(ledger_rows(gateway, expect=6)) == 6
    report = json.loads(gateway.cli("stats", "--json", "--since", "1h").stdout)
    assert report["totals"]["requests"] == 6 and report["totals"]["errors"] == 0


# --- mitmweb -----------------------------------------------------------------------------------------


def test_mitmweb_shows_comments_and_marks_no_secrets_and_keeps_at_most_max_flows(make_gateway, sim):
    cap = 5
    gateway = make_gateway({"monitor": {"max_flows": cap}}, start=False)
    preferred_id, preferred_key = add_gemini_key(gateway, priority=-1)
    gateway.add_google()  # priority 0: serves once the preferred key is cooling
    password = secrets.token_hex(12)
    web = f"http://127.0.0.1:{free_port()}"
    gateway.start(
        "--set", f"web_password={password}", "--set", f"web_port={web.rsplit(':', 1)[1]}",
        "--set", "web_open_browser=false", web=True,
    )
    sim.behave("429", {"account": preferred_key}, times=1, retry_delay="120s")
    oai = gateway.openai()
    oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "retried"}])
    streamed = "".join(
        c.choices[0].delta.content or ""
        for c in oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "a stream"}], stream=True)
        if c.choices
    )
    assert streamed == "echo: a stream"
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model=MODEL, messages=[{"role": "wizard", "content": "x"}])
    with pytest.raises(anthropic.AuthenticationError):
        anthropic.Anthropic(base_url=gateway.url, api_key="sk-ant-wrong-000000", max_retries=0).messages.create(
            model=MODEL, max_tokens=9, messages=[{"role": "user", "content": "x"}]
        )
    assert httpx.get(f"{gateway.url}/v1beta/models?key={API_KEY}").status_code == 200

    auth = {"authorization": f"Bearer {password}"}
    assert httpx.get(f"{web}/flows", timeout=10).status_code in (401, 403)

    def flows() -> list[dict[str, Any]]:
        response = httpx.get(f"{web}/flows", headers=auth, timeout=10)
        assert response.status_code == 200
        return response.json()

    listed = flows()
    assert len(listed) == cap
    by_path = {f["request"]["path"].partition("?")[0]: f for f in listed}
    chats = [f for f in listed if f["request"]["path"] == "/v1/chat/completions"]
    assert len(chats) == 3
    retried, stream, bad = chats
    assert retried["marked"] == "🔄" and "attempts 2" in retried["comment"] and "rate_limit" in retried["comment"]
    assert stream["marked"] == "" and "openai_chat ->" in stream["comment"] and "ttfb" in stream["comment"]
    assert bad["marked"] == "🔴" and "400" in bad["comment"]
    refused = by_path["/v1/messages"]
    assert refused["marked"] == "🔴" and "unauthorized 401" in refused["comment"]
    # Each flow shows the address the caller used, not the reverse placeholder.
    assert {(f["request"]["host"], f["request"]["port"]) for f in listed} == {("127.0.0.1", gateway.port)}

    known = known_secrets(gateway, access_tokens=1) + [preferred_key]
    assert_no_secret(json.dumps(listed), known, "mitmweb's flow list")
    for f in listed:
        for part in ("request", "response"):
            content = httpx.get(f"{web}/flows/{f['id']}/{part}/content.data", headers=auth, timeout=10)
            assert content.status_code == 200
            assert_no_secret(content.text, known, f"the {part} body of {f['request']['path']}")
    # The streamed answer is readable in mitmweb too.
    body = httpx.get(f"{web}/flows/{stream['id']}/response/content.data", headers=auth, timeout=10).text
    assert body.startswith("data: ") and "echo" in body and body.rstrip().endswith("data: [DONE]")

    for n in range(3 * cap):
        httpx.post(f"{gateway.url}/v1/chat/completions", headers=gateway.auth(),
                   json={"model": MODEL, "messages": [{"role": "user", "content": f"fill {n}"}]})
    listed = flows()
    assert len(listed) == cap
    assert all("fill" in httpx.get(f"{web}/flows/{f['id']}/request/content.data", headers=auth).text for f in listed)
    assert_no_secret(gateway.log(), known, "mitmweb's output")


# --- the terminal ------------------------------------------------------------------------------------


def test_one_line_per_request_by_default(make_gateway):
    gateway = make_gateway(start=False)
    gateway.add_google(email="quiet@example.com")
    gateway.start()
    before = gateway.log().count("\n")
    _chat(gateway, "whole")
    list(gateway.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "s"}], stream=True))
    httpx.post(f"{gateway.url}/v1/chat/completions", content=b"{", headers=gateway.json_headers())
    httpx.get(f"{gateway.url}/healthz", headers=gateway.auth())
    ledger_rows(gateway, expect=3)
    time.sleep(0.3)
    lines = gateway.log().splitlines()[before:]
    assert len(lines) == 3, lines
    assert all("openai_chat" in line for line in lines)
    assert "quiet@example.com -> gemini-2.5-flash" in lines[0] and "tokens" in lines[0] and " ms" in lines[0]
    assert "invalid_request 400" in lines[2]


def test_no_secret_in_the_output_at_any_verbosity(make_gateway, sim):
    gateway = make_gateway(start=False)
    gateway.add_google()
    _, key = add_gemini_key(gateway, priority=-1)
    gateway.start("--set", "termlog_verbosity=debug", "--set", "flow_detail=4")
    sim.behave("401", {"account": key}, times=1)
    _chat(gateway, "debug whole")
    list(gateway.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "d"}], stream=True))
    gemini = gateway.genai()  # kept: a client collected mid-call closes its connections
    assert gemini.models.generate_content(model=MODEL, contents="gemini too").text
    httpx.post(f"{gateway.url}/v1/chat/completions", content=b"{", headers=gateway.json_headers())
    httpx.get(f"{gateway.url}/v1beta/models?key={API_KEY}")
    ledger_rows(gateway, expect=4)
    gateway.stop()
    output = gateway.log()
    assert "client connect" in output  # the user asked for debug output, and got it
    assert "/v1/chat/completions" in output
    assert_no_secret(output, known_secrets(gateway, access_tokens=1) + [key], "the debug output")


def test_demo_prints_the_mitmweb_url_with_its_token():
    import os
    import re
    import signal
    import subprocess
    import sys

    from conftest import TOP

    # Its own process group: whatever happens, the demo's simulated upstream and mitmweb go with
    # it (a demo killed while it starts or stops would leave them running, port 8045 taken).
    demo = subprocess.Popen(
        [sys.executable, str(TOP / "scripts" / "demo.py")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )

    def kill_all() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(demo.pid, signal.SIGKILL)

    assert demo.stdout is not None
    watchdog = threading.Timer(180, kill_all)  # a silent demo ends the read loop below
    watchdog.start()
    try:
        web_url = None
        for line in demo.stdout:
            if match := re.search(r"mitmweb:\s+(http://127\.0\.0\.1:\d+/\?token=[0-9a-f]+)", line):
                web_url = match.group(1)
                break
        watchdog.cancel()
        assert web_url is not None, "the demo did not print mitmweb's URL in time"
        base, token = web_url.split("/?token=")
        assert httpx.get(f"{base}/flows", params={"token": token}, timeout=10).status_code == 200
        assert httpx.get(f"{base}/flows", params={"token": "wrong"}, timeout=10).status_code in (401, 403)
    finally:
        watchdog.cancel()
        demo.send_signal(signal.SIGINT)  # Ctrl-C: the demo stops what it started
        try:
            demo.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        kill_all()
        demo.wait()


# --- the Monitor on its own ---------------------------------------------------------------------------


class Collect:
    def __init__(self) -> None:
        self.seen: list[tuple[Any, Any]] = []

    def observe(self, flow, t) -> None:
        self.seen.append((flow, t))


def test_monitor_finishes_each_flow_once_and_traces_refusals():
    from mitmproxy import http
    from mitmproxy.test import tflow

    from addons import trace
    from addons.monitor import MARK_FAILED, Monitor

    sink = Collect()
    monitor = Monitor(sink)

    refused = tflow.tflow()
    refused.request.method, refused.request.path = "POST", "/v1/messages"
    refused.response = http.Response.make(401, b"{}")
    monitor.response(refused)
    monitor.error(refused)  # a late error does not count the request twice
    assert len(sink.seen) == 1
    t = sink.seen[0][1]
    assert (t.protocol, t.operation, t.status, t.outcome) == ("anthropic", "generate", 401, "unauthorized")
    assert refused.marked == MARK_FAILED and "unauthorized 401" in refused.comment

    for path, status in (("/healthz", 200), ("/metrics", 401), ("/v1/models", 200)):
        local = tflow.tflow()
        local.request.path = path
        local.response = http.Response.make(status, b"")
        monitor.response(local)
    assert len(sink.seen) == 1  # the gateway's own endpoints are neither rows nor metrics

    unknown = tflow.tflow()
    unknown.request.path = "/wp-login.php"
    unknown.response = http.Response.make(404, b"")
    monitor.response(unknown)
    assert sink.seen[-1][1].outcome == "not_found"

    served = tflow.tflow(resp=True)
    traced = trace.attach(served, trace.Trace(protocol="openai_chat", operation="generate", outcome="ok", status=200))
    monitor.response(served)
    assert sink.seen[-1] == (served, traced)
    assert (served.request.host, served.request.port) == served.client_conn.sockname[:2]
    assert served.metadata["switchyard"]["outcome"] == "ok"
