"""Faults from upstream, end to end: the OpenAI, Anthropic and Google SDKs -> a real mitmdump with
the addon -> the simulated upstream misbehaving on cue.

For every fault, streamed and whole, on Google accounts and on OpenAI keys (whose whole answers
are not streams upstream, and whose streams pass through to an OpenAI caller untranslated):
- what the caller saw: before the first byte, another account's 200; after it, the caller
  protocol's error event (the SDK raises), never a silent stop;
- that the next request succeeds;
- that nothing leaked: no lease, answer still streaming, file descriptor or asyncio task is left behind (the
  gateway's debug endpoint tells, see addons/debug.py);
- the usage ledger's row: its status, error class and the classes of its failed attempts.

One gateway serves the module; each test asks for a model of its own, so what one test's fault
cooled (an account, for that model) never decides the next test.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import openai
import pytest
from google.genai import errors as genai_errors

from conftest import Gateway, prepare_gateway

FIRST_BYTE = 1.5  # [proxy] first_byte_timeout of the gateway under test
IDLE = 1.5  # [proxy] idle_timeout
REQUEST = 5.0  # [proxy] request_timeout
PACE = 0.2  # seconds between the events of a faulty stream: a fault "after N events" comes after a pause
PROMPT = "one two three four five"
ACCOUNTS = 4  # per kind
PREFIX = {"google": "gemini-fault-", "openai": "gpt-fault-"}
# Upstream events up to the first one with text (OpenAI streams open with a role-only chunk).
FIRST_TEXT = {"google": 1, "openai": 2}

_models = itertools.count()


@dataclass
class Seen:
    """What the caller got."""

    status: int
    account: str | None
    text: str
    error: Exception | None = None


@pytest.fixture(scope="module")
def gw(sim, tmp_path_factory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("faults")
    config = {"proxy": {"request_timeout": REQUEST, "first_byte_timeout": FIRST_BYTE, "idle_timeout": IDLE}}
    gateway = prepare_gateway(sim, home, config)
    models = {f"{PREFIX['google']}{n}": {} for n in range(200)}
    export = []
    for n in range(ACCOUNTS):
        email, token = f"faults-{n}-{uuid.uuid4().hex[:6]}@example.com", f"sim-refresh-{uuid.uuid4().hex}"
        sim.add_google_account(refresh_token=token, email=email, models=models)
        export.append({"email": email, "refresh_token": token})
    (home / "export.json").write_text(json.dumps({"accounts": export}))
    gateway.cli("accounts", "import", str(home / "export.json"))
    for _ in range(ACCOUNTS):
        gateway.add_key("openai", "--models", f"{PREFIX['openai']}*", sim_models=[f"{PREFIX['openai']}*"])
    gateway.start()
    gateway.debug = httpx.Client(base_url=gateway.url, headers=gateway.auth(), timeout=10)  # one connection throughout
    for kind in PREFIX:  # every account has its token, project and catalogue before the first test
        assert ask(gateway, model_for(kind), stream=False).status == 200
    yield gateway
    gateway.debug.close()
    gateway.stop()


def model_for(kind: str) -> str:
    return f"{PREFIX[kind]}{next(_models)}"


# --- what the gateway holds, and the ledger ------------------------------------------------------


def holdings(gw: Gateway) -> dict[str, Any]:
    r = gw.debug.get("/_switchyard/debug")
    assert r.status_code == 200, r.text
    return r.json()


def settled(gw: Gateway, before: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
    """Waits until the gateway holds no more than it did `before`: no lease, no answer streaming, and
    no more descriptors or tasks."""
    deadline = time.monotonic() + timeout
    while True:
        now = holdings(gw)
        if (
            now["leases_total"] == 0 and now["streaming"] == 0
            and now["fds"] <= before["fds"] and now["tasks"] <= before["tasks"]
        ):
            return now
        if time.monotonic() > deadline:
            pytest.fail(f"the gateway still holds {now}; before the fault it held {before}")
        time.sleep(0.05)


def ledger(gw: Gateway, model: str, expect: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The ledger's rows for `model`, oldest first, once there are `expect` of them."""
    path = gw.home / "data" / "usage.sqlite3"
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        if path.exists():
            with sqlite3.connect(path, timeout=5) as db:
                db.row_factory = sqlite3.Row
                try:
                    rows = [dict(r) for r in db.execute("SELECT * FROM requests WHERE requested_model = ? ORDER BY id", (model,))]
                except sqlite3.OperationalError:
                    rows = []
            if len(rows) >= expect:
                return rows
        time.sleep(0.05)
    pytest.fail(f"the ledger has {len(rows)} rows for {model}, expected {expect}: {rows}")


# --- callers -----------------------------------------------------------------------------------


def ask(gw: Gateway, model: str, *, stream: bool) -> Seen:
    """One OpenAI chat request; a failure is part of what was seen, not an exception."""
    messages = [{"role": "user", "content": PROMPT}]
    text = ""
    with gw.openai() as client:
        try:
            raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, stream=stream)
        except openai.APIStatusError as e:
            return Seen(e.status_code, e.response.headers.get("x-switchyard-account"), "", e)
        account = raw.headers.get("x-switchyard-account")
        if not stream:
            return Seen(raw.status_code, account, raw.parse().choices[0].message.content or "")
        try:
            for chunk in raw.parse():
                for choice in chunk.choices:
                    text += choice.delta.content or ""
        except openai.APIError as e:
            return Seen(raw.status_code, account, text, e)
        return Seen(raw.status_code, account, text)


def ask_anthropic(gw: Gateway, model: str) -> Seen:
    text = ""
    with gw.anthropic() as client:
        raw = client.messages.with_raw_response.create(
            model=model, max_tokens=200, messages=[{"role": "user", "content": PROMPT}], stream=True
        )
        try:
            for event in raw.parse():
                if event.type == "content_block_delta" and event.delta.type == "text_delta":
                    text += event.delta.text
        except anthropic.APIError as e:
            return Seen(raw.status_code, raw.headers.get("x-switchyard-account"), text, e)
        return Seen(raw.status_code, raw.headers.get("x-switchyard-account"), text)


def ask_genai(gw: Gateway, model: str) -> Seen:
    text = ""
    client = gw.genai()
    try:
        for chunk in client.models.generate_content_stream(model=model, contents=PROMPT):
            text += chunk.text or ""
    except genai_errors.APIError as e:
        return Seen(200, None, text, e)
    finally:
        client.close()
    return Seen(200, None, text)


ECHO = f"echo: {PROMPT}"


def ok(seen: Seen) -> None:
    assert seen.error is None and seen.status == 200 and seen.text == ECHO, seen


# --- before the caller's first byte: the request moves to another account -------------------------

# (action, params, the error class it is): each leaves the first attempt without a first event.
BEFORE_FIRST_BYTE = [
    pytest.param("reset", {}, "network", id="reset-after-headers"),
    pytest.param("html", {}, "server", id="html-200"),
    pytest.param("error200", {"status": 503}, "server", id="error-object-200"),
    pytest.param("stall", {}, "timeout", id="never-answers"),
    pytest.param("stall", {"after_events": 0}, "timeout", id="silent-after-headers"),
    pytest.param("garbage", {}, "server", id="garbage"),
]
# The same faults after the first event: the caller's first byte went out (streams), or not yet (whole).
AFTER_FIRST_EVENT = [
    pytest.param("garbage", "server", id="garbage"),
    pytest.param("truncate", "server", id="truncated-json"),
    pytest.param("stall", "timeout", id="stall"),
    pytest.param("reset", "network", id="reset"),
]


@pytest.mark.parametrize("kind", ["google", "openai"])
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("action", "params", "error_class"), BEFORE_FIRST_BYTE)
def test_a_fault_before_the_first_byte_costs_one_attempt(gw, sim, kind, stream, action, params, error_class):
    model = model_for(kind)
    before = holdings(gw)
    sim.behave(action, {"model": model}, times=1, **params)
    started = time.monotonic()
    seen = ask(gw, model, stream=stream)
    took = time.monotonic() - started
    if action == "stall" and not params and kind == "openai" and not stream:
        # A whole answer from an OpenAI key is not a stream upstream: its status comes only when the
        # answer is done, so only request_timeout bounds the wait (first_byte_timeout cannot tell a
        # long answer from a dead upstream), and there is no time left for another account.
        assert seen.status == 504 and "request_timeout" in str(seen.error), seen
        assert REQUEST - 0.5 < took < REQUEST + 3
        expected = {"status": 504, "error_class": "timeout", "attempts": 1, "attempt_errors": "timeout"}
    else:
        ok(seen)
        expected = {"status": 200, "error_class": None, "attempts": 2, "attempt_errors": error_class}
        if error_class == "timeout":
            assert FIRST_BYTE - 0.3 < took < FIRST_BYTE + 3, took
    ok(ask(gw, model, stream=stream))  # the next request is served (by an account that is not cooling)
    settled(gw, before)
    fault, following = ledger(gw, model, expect=2)
    assert {k: fault[k] for k in expected} == expected, fault
    assert following["error_class"] is None and following["attempt_errors"] is None and following["status"] == 200
    assert [e["action"] for e in sim.log() if e["model"] == model][:1] == [action]


@pytest.mark.parametrize("kind", ["google", "openai"])
@pytest.mark.parametrize(("action", "error_class"), AFTER_FIRST_EVENT)
def test_a_fault_mid_stream_ends_in_the_callers_error_event(gw, sim, kind, action, error_class):
    model = model_for(kind)
    before = holdings(gw)
    sim.behave(action, {"model": model}, times=1, after_events=FIRST_TEXT[kind], chunk_delay=PACE)
    started = time.monotonic()
    seen = ask(gw, model, stream=True)
    assert seen.status == 200 and seen.text and ECHO.startswith(seen.text), seen  # the first events came...
    assert isinstance(seen.error, openai.APIError), seen  # ...then an error event, not a silent stop
    if action == "stall":
        assert "idle_timeout" in str(seen.error) and IDLE - 0.3 < time.monotonic() - started < IDLE + 3
    ok(ask(gw, model, stream=True))
    settled(gw, before)
    fault, _ = ledger(gw, model, expect=2)
    expected = {"status": 200, "error_class": error_class, "attempts": 1, "attempt_errors": error_class}
    assert {k: fault[k] for k in expected} == expected, fault


@pytest.mark.parametrize("kind", ["google", "openai"])
@pytest.mark.parametrize(("action", "error_class"), AFTER_FIRST_EVENT)
def test_a_whole_answer_broken_mid_way_goes_to_another_account(gw, sim, kind, action, error_class):
    model = model_for(kind)
    before = holdings(gw)
    sim.behave(action, {"model": model}, times=1, after_events=FIRST_TEXT[kind], chunk_delay=PACE)
    ok(ask(gw, model, stream=False))
    ok(ask(gw, model, stream=False))
    settled(gw, before)
    fault, _ = ledger(gw, model, expect=2)
    expected = {"status": 200, "error_class": None, "attempts": 2, "attempt_errors": error_class}
    assert {k: fault[k] for k in expected} == expected, fault


@pytest.mark.parametrize("caller", ["anthropic", "gemini"])
@pytest.mark.parametrize(("action", "error_class"), [("stall", "timeout"), ("garbage", "server")])
def test_every_callers_protocol_hears_of_a_fault_mid_stream(gw, sim, caller, action, error_class):
    """Anthropic's `event: error` (translated from Google's stream), Gemini's error object (Google's
    own stream passed through): each SDK raises after the first text."""
    model = model_for("google")
    before = holdings(gw)
    sim.behave(action, {"model": model}, times=1, after_events=1, chunk_delay=PACE)
    seen = ask_anthropic(gw, model) if caller == "anthropic" else ask_genai(gw, model)
    assert seen.text and ECHO.startswith(seen.text) and seen.text != ECHO, seen
    assert seen.error is not None, seen
    next_seen = ask_anthropic(gw, model) if caller == "anthropic" else ask_genai(gw, model)
    assert next_seen.error is None and next_seen.text == ECHO, next_seen
    settled(gw, before)
    fault, _ = ledger(gw, model, expect=2)
    assert (fault["status"], fault["error_class"], fault["attempt_errors"]) == (200, error_class, error_class), fault


def test_the_debug_endpoint_is_for_the_admin_on_this_machine_only(gw):
    assert httpx.get(f"{gw.url}/_switchyard/debug", timeout=5).status_code in (401, 404)
    wrong = httpx.get(f"{gw.url}/_switchyard/debug", headers={"authorization": "Bearer sk-nope"}, timeout=5)
    assert wrong.status_code in (401, 404) and "leases" not in wrong.text
    held = holdings(gw)
    assert set(held) >= {"leases", "leases_total", "streaming", "tasks", "fds", "rss_bytes"}
    assert held["fds"] > 0 and held["tasks"] > 0 and held["rss_bytes"] > 0
    assert gw.api_key not in gw.log()
