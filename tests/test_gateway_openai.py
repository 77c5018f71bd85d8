"""End to end: the openai SDK -> a real mitmdump with the addon -> the simulated upstream.

Covers OpenAI chat in, Google (Antigravity) accounts out: plain and streamed answers, tools,
images, rotation before the first byte, token refresh, cooling pools and bad input.
"""

from __future__ import annotations

import base64
import json
import time

import httpx
import openai
import pytest

from conftest import prepare_gateway

MODEL = "gemini-2.5-flash"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}


@pytest.fixture(scope="module")
def shared(sim, tmp_path_factory):
    """One gateway with two Google accounts for the tests that do not change the pool."""
    gateway = prepare_gateway(sim, tmp_path_factory.mktemp("shared"))
    gateway.add_google()
    gateway.add_google()
    gateway.start()
    yield gateway
    gateway.stop()


def test_chat_whole_answer(shared):
    answer = shared.openai().chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    )
    completion = answer.parse()
    assert completion.choices[0].message.content == "echo: hello there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens > 0 and completion.usage.completion_tokens > 0
    ids = {a["id"] for a in shared.accounts()}
    assert answer.headers["x-switchyard-account"] in ids
    assert answer.headers["x-switchyard-model"] == MODEL


def test_chat_stream_arrives_chunk_by_chunk(shared, sim):
    sim.settings(events=5, chunk_delay=0.25)
    stream = shared.openai().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "stream me a longer sentence please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    arrivals, text, usage, finish = [], "", None, None
    start = time.monotonic()
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                arrivals.append(time.monotonic() - start)
                text += choice.delta.content
            finish = choice.finish_reason or finish
    assert text == "echo: stream me a longer sentence please"
    assert finish == "stop"
    assert usage is not None and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # Five upstream events 0.25 s apart: the first must be here well before the last was sent.
    assert len(arrivals) >= 4
    assert arrivals[-1] - arrivals[0] >= 0.75, arrivals


def test_tool_call_round_trip(shared):
    client = shared.openai()
    messages = [{"role": "user", "content": 'what is the weather? [[call get_weather {"city": "Paris"}]]'}]
    first = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18}'},
    ]
    second = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].message.content.startswith("tool result:")
    assert "18" in second.choices[0].message.content


def test_tool_call_streamed(shared):
    stream = shared.openai().chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": '[[call get_weather {"city": "Oslo"}]]'}],
        tools=[WEATHER_TOOL],
        stream=True,
    )
    names, arguments, finish = set(), "", None
    for chunk in stream:
        for choice in chunk.choices:
            for call in choice.delta.tool_calls or []:
                if call.function.name:
                    names.add(call.function.name)
                arguments += call.function.arguments or ""
            finish = choice.finish_reason or finish
    assert names == {"get_weather"}
    assert json.loads(arguments) == {"city": "Oslo"}
    assert finish == "tool_calls"


def test_image_input(shared):
    png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 92).decode()
    answer = shared.openai().chat.completions.create(
        model=MODEL,
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}},
                ],
            }
        ],
    )
    assert "image: image/png 100 bytes" in answer.choices[0].message.content


def test_models_lists_what_the_pool_serves(shared):
    names = {m.id for m in shared.openai().models.list()}
    assert MODEL in names and "gemini-3.1-pro-high" in names and "claude-sonnet-4-6" in names
    assert not any(name.startswith(("chat_", "tab_")) for name in names)  # internal names stay hidden


# --- bad input -----------------------------------------------------------------------------------


def test_bad_key_gets_401_in_openai_shape(shared):
    client = openai.OpenAI(base_url=f"{shared.url}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 401
    assert caught.value.body["type"] == "authentication_error"
    assert "sk-wrong" not in caught.value.response.text


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode(), "model"),
        (json.dumps({"model": MODEL}).encode(), "messages"),
        (json.dumps({"model": MODEL, "messages": "hi"}).encode(), "messages"),
        (json.dumps({"model": MODEL, "messages": [{"role": "user", "content": 5}]}).encode(), "messages[0].content"),
        (json.dumps({"model": MODEL, "messages": [{"role": "wizard", "content": "hi"}]}).encode(), "role"),
    ],
)
def test_bad_bodies_get_400_in_openai_shape(shared, body, needle):
    headers = shared.json_headers()
    response = httpx.post(f"{shared.url}/v1/chat/completions", content=body, headers=headers, timeout=10)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert needle in error["message"]


def test_bad_bodies_through_the_sdk(shared):
    with pytest.raises(openai.BadRequestError) as caught:
        shared.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [{"type": "nope"}]}])
    assert caught.value.status_code == 400


def test_unknown_model_gets_404(shared):
    with pytest.raises(openai.NotFoundError) as caught:
        shared.openai().chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert "no-such-model" in caught.value.message


def test_unknown_path_and_method(shared):
    response = httpx.get(f"{shared.url}/v1/nothing-here", headers=shared.auth())
    assert response.status_code == 404 and "error" in response.json()
    response = httpx.get(f"{shared.url}/v1/chat/completions", headers=shared.auth())
    assert response.status_code == 405 and "error" in response.json()


def test_gateway_survives_garbage(shared):
    """After a run of bad requests the gateway still answers."""
    headers = shared.json_headers()
    for body in (b"\xff\xfe", b"", b"null", b'{"model": null, "messages": []}'):
        response = httpx.post(f"{shared.url}/v1/chat/completions", content=body, headers=headers, timeout=10)
        assert response.status_code == 400
    answer = shared.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "still there?"}])
    assert answer.choices[0].message.content == "echo: still there?"
    assert "Traceback" not in shared.log()


# --- rotation ------------------------------------------------------------------------------------


def test_rate_limited_account_is_skipped_and_stream_still_streams(make_gateway, sim):
    gateway = make_gateway(start=False)
    limited = gateway.add_google(email="limited@example.com")
    healthy = gateway.add_google(email="healthy@example.com")
    gateway.start()
    sim.behave("429", {"account": "limited@example.com"}, retry_delay="30s")
    sim.settings(events=4, chunk_delay=0.3)
    served = set()
    for _ in range(3):
        response = gateway.openai().chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "rotate please"}], stream=True
        )
        served.add(response.headers["x-switchyard-account"])
        arrivals = []
        start = time.monotonic()
        text = ""
        for chunk in response.parse():
            for choice in chunk.choices:
                if choice.delta.content:
                    arrivals.append(time.monotonic() - start)
                    text += choice.delta.content
        assert text == "echo: rotate please"
        assert arrivals[-1] - arrivals[0] >= 0.6, arrivals  # still a stream, not one late lump
    assert served == {healthy}
    limited_generates = [e for e in sim.log("google") if e["account"] == "limited@example.com" and e["status"] == 429]
    assert len(limited_generates) == 1  # tried once, then left to cool
    state = {a["id"]: a for a in gateway.accounts()}
    assert MODEL in state[limited]["cooldowns"]
    assert state[limited]["cooldowns"][MODEL]["until"] - time.time() > 20
    assert state[limited]["last_error"]["error_class"] == "rate_limit"


def test_expired_access_token_is_refreshed(make_gateway, sim):
    gateway = make_gateway(start=False)
    gateway.add_google(email="expiring@example.com")
    gateway.start()
    client = gateway.openai()
    assert client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "one"}]).choices
    before = next(a for a in sim.google_accounts() if a["email"] == "expiring@example.com")["refresh_count"]
    sim.expire("expiring@example.com")
    sim.clear_log()
    answer = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "two"}])
    assert answer.choices[0].message.content == "echo: two"
    after = next(a for a in sim.google_accounts() if a["email"] == "expiring@example.com")["refresh_count"]
    assert after == before + 1
    # The dead token is refused once (the upstream cannot tell whose it was), then all is well.
    statuses = [e["status"] for e in sim.log("google") if "generate" in e["path"].lower()]
    assert statuses == [401, 200]


def test_short_lived_tokens_are_renewed_before_expiry(make_gateway, sim):
    """A token with under 90 s left is renewed before use, so the upstream never sees it expire."""
    gateway = make_gateway(start=False)
    gateway.add_google(email="short@example.com", access_token_ttl=60)
    gateway.start()
    client = gateway.openai()
    for text in ("a", "b", "c"):
        assert client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": text}]).choices
    statuses = [e["status"] for e in sim.log("google") if e["account"] == "short@example.com"]
    assert 401 not in statuses
    refreshes = next(a for a in sim.google_accounts() if a["email"] == "short@example.com")["refresh_count"]
    assert refreshes >= 3


def test_every_account_cooling_gives_429_with_retry_after(make_gateway, sim):
    gateway = make_gateway(start=False)
    gateway.add_google(email="cool-a@example.com")
    gateway.add_google(email="cool-b@example.com")
    gateway.start()
    sim.behave("429", {"account": "cool-a@example.com"}, retry_delay="40s")
    sim.behave("429", {"account": "cool-b@example.com"}, retry_delay="90s")
    client = gateway.openai()
    with pytest.raises(openai.RateLimitError) as first:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert first.value.status_code == 429
    # Now nothing is even tried: the pool knows both are cooling and says until when.
    sim.clear_log()
    with pytest.raises(openai.RateLimitError) as second:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}], stream=True)
    retry_after = int(second.value.response.headers["retry-after"])
    assert 30 <= retry_after <= 40
    assert "cooling" in second.value.message
    assert [e for e in sim.log("google") if "generate" in e["path"].lower()] == []


def test_server_errors_move_to_the_next_account(make_gateway, sim):
    gateway = make_gateway(start=False)
    gateway.add_google(email="broken@example.com")
    gateway.add_google(email="fine@example.com")
    gateway.start()
    sim.behave("503", {"account": "broken@example.com"})
    for _ in range(3):
        answer = gateway.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content == "echo: hi"


def test_stream_dropped_mid_way_ends_with_an_error_event(make_gateway, sim):
    gateway = make_gateway(start=False)
    gateway.add_google(email="dropper@example.com")
    gateway.start()
    sim.settings(events=4)
    sim.behave("drop", {"account": "dropper@example.com"}, after_events=2)
    stream = gateway.openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "this will break"}], stream=True
    )
    received = ""
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            for choice in chunk.choices:
                received += choice.delta.content or ""
    assert received  # the caller had the first events...
    assert "mid-stream" in str(caught.value) or "upstream" in str(caught.value)  # ...then a clear error
    assert "Traceback" not in gateway.log()


def test_max_attempts_bounds_the_rotation(make_gateway, sim):
    gateway = make_gateway({"routing": {"max_attempts": 2}}, start=False)
    for n in range(4):
        gateway.add_google(email=f"bound-{n}@example.com")
    gateway.start()
    for n in range(4):
        sim.behave("500", {"account": f"bound-{n}@example.com"})
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 502
    generates = [e for e in sim.log("google") if e["account"].startswith("bound-") and "generate" in e["path"].lower()]
    assert len(generates) == 2


def test_key_accounts_list_what_their_upstream_serves(make_gateway):
    gateway = make_gateway(start=False)
    gateway.add_key("gemini")
    gateway.add_key("anthropic")
    gateway.start()
    deadline = time.monotonic() + 10
    names: set[str] = set()
    while time.monotonic() < deadline and not {"gemini-2.5-pro", "claude-sonnet-4-5"} <= names:
        names = {m.id for m in gateway.openai().models.list()}
        time.sleep(0.3)
    assert {"gemini-2.5-flash", "gemini-2.5-pro", "claude-sonnet-4-5"} <= names
    assert not any("gpt" in n for n in names)  # nothing serves those
    client = gateway.genai()
    gemini_names = {m.name for m in client.models.list()}
    assert "models/gemini-2.5-pro" in gemini_names


def test_endpoints_are_tried_in_order_before_the_next_account(make_gateway, sim):
    from conftest import free_port

    dead = f"http://127.0.0.1:{free_port()}/v1internal"  # nothing listens there
    endpoints = [dead, f"{sim.url}/ep1/v1internal", f"{sim.url}/ep2/v1internal"]
    gateway = make_gateway({"upstreams": {"antigravity": {"endpoints": endpoints}}}, start=False)
    only = gateway.add_google(email="endpoints@example.com")
    gateway.start()
    sim.behave("500", {"endpoint": "/ep1"})
    sim.clear_log()
    for stream in (False, True):
        response = gateway.openai().chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "which endpoint?"}], stream=stream
        )
        assert response.headers["x-switchyard-account"] == only
    generates = [(e["path"].split("/v1internal")[0], e["status"]) for e in sim.log("google") if "generate" in e["path"].lower()]
    assert generates == [("/ep1", 500), ("/ep2", 200), ("/ep1", 500), ("/ep2", 200)]
    state = {a["id"]: a for a in gateway.accounts()}[only]
    assert state["cooldown_until"] is None  # the account answered: nothing cools


@pytest.mark.parametrize("stream", [False, True])
def test_garbage_answer_goes_to_the_next_account(make_gateway, sim, stream):
    gateway = make_gateway(start=False)
    gateway.add_google(email="garbled@example.com")
    good = gateway.add_google(email="sane@example.com")
    gateway.start()
    sim.behave("garbage", {"account": "garbled@example.com"})
    for _ in range(2):
        response = gateway.openai().chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": "make sense"}], stream=stream
        )
        assert response.headers["x-switchyard-account"] == good
        parsed = response.parse()
        text = (
            "".join(c.choices[0].delta.content or "" for c in parsed if c.choices)
            if stream
            else parsed.choices[0].message.content
        )
        assert text == "echo: make sense"


def test_a_stalled_upstream_ends_in_504_within_the_timeout(make_gateway, sim):
    gateway = make_gateway({"proxy": {"request_timeout": 2}}, start=False)
    gateway.add_google(email="stalled@example.com")
    gateway.start()
    sim.behave("stall", {"account": "stalled@example.com"}, times=1)
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.openai().chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hello?"}])
    assert caught.value.status_code == 504
    assert 1.5 < time.monotonic() - started < 6
    assert caught.value.body["type"]  # OpenAI's error shape
    sim.clear_rules()
    time.sleep(0.1)
    # The account's timeout cooled it for this model; a second account would serve meanwhile.
    assert "Traceback" not in gateway.log()
