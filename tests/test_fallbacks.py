"""Fallback chains: `[fallbacks]` serves a request with the next model when no account can serve
the first — cooling, exhausted, not found anywhere, or only quota-protected accounts left —
within the same request. Units on the chain with Pool and Dispatcher in this process, then a
real gateway, streamed and not."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest
from pool_rig import Rig
from test_observability import ledger_rows

from pool import fallbacks, mapping
from pool.dispatch import Call, DispatchError
from pool.fallbacks import Chain

OPUS, SONNET, FLASH = "claude-opus-4-6-thinking", "claude-sonnet-4-6", "gemini-3-flash"
TABLE = {"claude-opus-*": [SONNET, FLASH], "gemini-*": ["gemini-2.5-flash"]}


@pytest.fixture
async def make_rig(sim, tmp_path):
    rigs: list[Rig] = []

    def make(**config) -> Rig:
        rig = Rig(sim, tmp_path / f"rig{len(rigs)}", **config)
        rigs.append(rig)
        return rig

    yield make
    for rig in rigs:
        await rig.close()


async def serve(rig: Rig, models: list[str]) -> tuple[str, Chain]:
    """One whole request down the chain of `models`: the model that served, and the chain."""
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    chain = Chain(rig.dispatcher, Call(model=models[0], operation="generate", stream=False, encode=lambda _d, _m: body), models)
    exchange = await chain.send()
    try:
        await exchange.response.aread()
    finally:
        await exchange.response.aclose()
    rig.dispatcher.finish(exchange)
    return exchange.model, chain


def test_the_chain_is_the_model_then_its_entry_resolved_without_repeats():
    offer = mapping.Served([OPUS, SONNET, FLASH, "gemini-2.5-flash"])
    resolve = lambda name: mapping.resolve(name, {}, offer)  # noqa: E731
    assert fallbacks.models(OPUS, TABLE, resolve) == [OPUS, SONNET, FLASH]
    assert fallbacks.models(FLASH, TABLE, resolve) == [FLASH, "gemini-2.5-flash"]
    assert fallbacks.models(SONNET, TABLE, resolve) == [SONNET]
    # The routed name has no entry, the name the caller asked for has one; entries resolve by family.
    assert fallbacks.models(SONNET, {"claude-sonnet-4-5": ["gemini-pro", SONNET]}, resolve, asked="claude-sonnet-4-5") == [
        SONNET, FLASH,
    ]
    assert fallbacks.models(OPUS, {OPUS: [SONNET], "claude-*": [FLASH]}, resolve) == [OPUS, SONNET]  # exact wins


async def test_a_model_cooling_on_every_account_falls_to_the_next(make_rig, sim):
    rig = make_rig()
    first, _ = rig.add()
    second, _ = rig.add()
    for account_id in (first, second):
        await rig.pool.refresh_quota(rig.account(account_id))
    sim.behave("429", {"model": OPUS}, retry_delay="90s")
    model, chain = await serve(rig, [OPUS, SONNET, FLASH])
    assert model == SONNET and chain.fell_back == (OPUS, "rate_limit")
    assert [a.outcome for a in chain.call.attempts] == ["rate_limit", "rate_limit", "ok"]
    # Now OPUS cools everywhere: the next request goes to SONNET without trying it.
    model, chain = await serve(rig, [OPUS, SONNET, FLASH])
    assert model == SONNET and chain.fell_back == (OPUS, "rate_limit") and len(chain.call.attempts) == 1


async def test_quota_protection_prefers_the_fallback_and_is_the_last_resort(make_rig, sim):
    rig = make_rig()
    account_id, email = rig.add()
    sim.set_quota(email, OPUS, remainingFraction=0.05)  # under protect_below (10 %)
    await rig.pool.refresh_quota(rig.account(account_id))
    model, chain = await serve(rig, [OPUS, SONNET])
    assert model == SONNET and chain.fell_back == (OPUS, "quota_protected")
    assert [a.account_id for a in chain.call.attempts] == [account_id]
    # Without a fallback the protected account serves, as it always did.
    model, chain = await serve(rig, [OPUS])
    assert model == OPUS and chain.fell_back is None
    # When the fallback cannot serve either, the protected account does.
    sim.behave("429", {"model": SONNET}, retry_delay="90s")
    model, chain = await serve(rig, [OPUS, SONNET])
    assert model == OPUS and chain.fell_back is None


async def test_a_model_no_account_serves_falls_through_and_a_spent_chain_says_why(make_rig, sim):
    rig = make_rig()
    account_id, _ = rig.add()
    await rig.pool.refresh_quota(rig.account(account_id))
    model, chain = await serve(rig, ["claude-opus-9", FLASH])
    assert model == FLASH and chain.fell_back == ("claude-opus-9", "not_found")
    sim.behave("429", {"model": OPUS}, retry_delay="90s")
    sim.behave("429", {"model": SONNET}, retry_delay="30s")
    with pytest.raises(DispatchError) as caught:
        await serve(rig, [OPUS, SONNET])
    error = caught.value
    assert error.status == 429 and error.message.startswith(f"every account that serves {OPUS!r} is cooling")
    assert f"the fallbacks could not serve either: {SONNET} (rate_limit)" in error.message
    assert error.retry_after <= 30  # the earliest any model of the chain recovers


async def test_a_refused_request_is_not_sent_down_the_chain(make_rig, sim):
    rig = make_rig()
    account_id, _ = rig.add()
    await rig.pool.refresh_quota(rig.account(account_id))
    sim.behave("400", {"model": OPUS}, message="bad schema")
    with pytest.raises(DispatchError) as caught:
        await serve(rig, [OPUS, SONNET])
    assert caught.value.status == 400
    assert [e["model"] for e in sim.log("google") if "enerate" in e["path"]][-1:] == [OPUS]


def test_fallbacks_on_a_real_gateway_streamed_and_not(make_gateway, sim):
    gateway = make_gateway({"fallbacks": {"claude-opus-*": [SONNET, FLASH]}}, start=False)
    gateway.add_google()
    gateway.add_google()
    gateway.start()
    sim.behave("429", {"model": OPUS}, retry_delay="120s")
    client = gateway.anthropic()

    whole = client.messages.with_raw_response.create(
        model="claude-opus-4-8", max_tokens=50, messages=[{"role": "user", "content": "whole"}]
    )
    assert whole.headers["x-switchyard-model"] == SONNET
    assert whole.headers["x-switchyard-fallback-from"] == OPUS
    assert whole.headers["x-switchyard-fallback-reason"] == "rate_limit"
    assert whole.parse().content[-1].text == "echo: whole"

    with client.messages.with_streaming_response.create(
        model="claude-opus-4-8", max_tokens=50, messages=[{"role": "user", "content": "streamed"}], stream=True,
    ) as streamed:
        assert streamed.headers["x-switchyard-model"] == SONNET
        assert streamed.headers["x-switchyard-fallback-from"] == OPUS
        text = "".join(
            json.loads(line[6:])["delta"].get("text", "")
            for line in streamed.iter_lines() if line.startswith("data: ") and '"content_block_delta"' in line
        )
    assert text == "echo: streamed"

    rows = ledger_rows(gateway, expect=2)
    assert [(r["requested_model"], r["model"], r["fallback_from"], r["fallback_reason"], r["stream"]) for r in rows] == [
        ("claude-opus-4-8", SONNET, OPUS, "rate_limit", 0), ("claude-opus-4-8", SONNET, OPUS, "rate_limit", 1),
    ]
    comments = [line for line in gateway.log().splitlines() if f"fallback from {OPUS}: rate_limit" in line]
    assert len(comments) == 2 and all(f"-> {SONNET}" in line for line in comments), gateway.log()[-3000:]
    # A model with no chain still hears that every account is cooling.
    sim.behave("429", {"model": "gemini-3.1-pro-high"}, retry_delay="300s")
    refused = httpx.post(
        f"{gateway.url}/v1/chat/completions", headers=gateway.auth(), timeout=30,
        json={"model": "gemini-3.1-pro-high", "messages": [{"role": "user", "content": "x"}]},
    )
    assert refused.status_code == 429 and "x-switchyard-fallback-from" not in refused.headers
