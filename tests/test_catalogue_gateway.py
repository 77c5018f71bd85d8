"""The pool's model catalogue end to end: SDKs and plain HTTP -> a real `switchyard run` -> the
simulated upstream, whose Google account lists today's models and the IDE's internal ones."""

from __future__ import annotations

import time

import httpx
from pool_rig import add_google, generations, home_of

# What the account's fetchAvailableModels lists (the spec's catalogue), internal names included.
VISIBLE = (
    "claude-opus-4-6-thinking", "claude-sonnet-4-6", "gemini-3.1-pro-high", "gemini-3.1-pro-low",
    "gemini-3-flash", "gemini-3.1-flash-image", "gemini-2.5-flash", "gpt-oss-120b-medium",
)
INTERNAL = ("chat_20706", "chat_23310", "tab_flash_lite_preview")
FIRST_FETCH_STALL = 1.0  # seconds the first fetchAvailableModels takes: a list that did not wait is empty


def gateway_with_catalogue(make_gateway, sim, config: dict | None = None):
    gateway = make_gateway(config, start=False)
    _account, email = add_google(sim, home_of(gateway.home), models={name: {} for name in VISIBLE + INTERNAL})
    sim.behave("stall", {"path": "fetchAvailableModels", "account": email}, times=1, seconds=FIRST_FETCH_STALL)
    sim.clear_log()
    return gateway.start(), email


def test_model_lists_right_after_start_show_the_catalogue_and_no_internal_name(make_gateway, sim):
    gateway, email = gateway_with_catalogue(make_gateway, sim, {"model_mapping": {"my-model": "gemini-3-flash", "gpt-*": "x"}})
    started = time.monotonic()
    openai_list = httpx.get(f"{gateway.url}/v1/models", headers=gateway.auth(), timeout=10)
    waited = time.monotonic() - started
    expected = sorted(VISIBLE + ("my-model",))  # with the exact names of [model_mapping]
    assert openai_list.status_code == 200
    assert [m["id"] for m in openai_list.json()["data"]] == expected
    assert waited < 5.0  # bounded: the stalled first fetch, not the MODELS_WAIT limit
    fetches = [e for e in sim.log("google") if "fetchAvailableModels" in e["path"] and e["account"] == email]
    assert len(fetches) == 1  # the list waited for the fetch the start began; it did not start another

    gemini = httpx.get(f"{gateway.url}/v1beta/models", headers=gateway.auth(), timeout=10).json()
    assert sorted(m["name"] for m in gemini["models"]) == [f"models/{name}" for name in expected]
    flash = next(m for m in gemini["models"] if m["name"] == "models/gemini-3-flash")
    assert flash["outputTokenLimit"] == 65536 and flash["displayName"]  # from the account's catalogue
    one = httpx.get(f"{gateway.url}/v1beta/models/gemini-3-flash", headers=gateway.auth(), timeout=10)
    assert one.status_code == 200 and one.json()["name"] == "models/gemini-3-flash"
    hidden = httpx.get(f"{gateway.url}/v1beta/models/chat_20706", headers=gateway.auth(), timeout=10)
    assert hidden.status_code == 404

    anthropic_list = gateway.anthropic().models.list()
    assert sorted(m.id for m in anthropic_list.data) == expected


def test_client_model_names_are_served_by_the_newest_model_of_their_family(make_gateway, sim):
    gateway, email = gateway_with_catalogue(make_gateway, sim)
    claude = gateway.anthropic().messages.with_raw_response.create(
        model="claude-opus-4-8", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    assert claude.status_code == 200
    assert claude.headers["x-switchyard-model"] == "claude-opus-4-6-thinking"
    assert claude.parse().model == "claude-opus-4-8"  # the caller hears the name it asked for
    codex = gateway.openai().chat.completions.with_raw_response.create(
        model="gpt-5-codex", messages=[{"role": "user", "content": "hi"}]
    )
    assert codex.headers["x-switchyard-model"] == "gemini-3.1-pro-high"
    lite = gateway.openai().chat.completions.with_raw_response.create(
        model="gemini-2.5-flash-lite", messages=[{"role": "user", "content": "hi"}]
    )
    assert lite.headers["x-switchyard-model"] == "gemini-3-flash"
    internal = httpx.post(
        f"{gateway.url}/v1/chat/completions", headers=gateway.auth(), timeout=10,
        json={"model": "chat_20706", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert internal.status_code == 404
    models_sent = [e["model"] for e in sim.log("google") if e["account"] == email and "enerateContent" in e["path"]]
    assert models_sent == ["claude-opus-4-6-thinking", "gemini-3.1-pro-high", "gemini-3-flash"]
    assert all(status == 200 for _, status in generations(sim))
