"""The simulated upstream: it must speak each protocol exactly, refuse what the real services
refuse, and misbehave on cue, because every gateway test trusts it. (Cloud Code's own rules:
tests/test_sim_cloudcode.py.)"""

from __future__ import annotations

import base64
import hashlib
import json
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest
from sim_kit import (ANTHROPIC_HEADERS, ANTHROPIC_KEY, CALL_TEXT, GOOGLE_KEY, OPENAI_KEY, SCRIPTS, anthropic_events,
                     bearer, client, envelope, gemini_text, refresh, server, sim, sse_data, user)

from simupstream import SimUpstream, estimate_tokens

__all__ = ["client", "server", "sim"]  # fixtures


# --------------------------------------------------------------------------- OAuth


def test_refresh_counts_and_bad_client(sim: SimUpstream, client: httpx.Client) -> None:
    r = refresh(client)
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 3600 and body["access_token"]
    refresh(client)
    assert sim.google_accounts()[0]["refresh_count"] == 2
    assert "rt-alice" not in json.dumps(sim.google_accounts()) + json.dumps(sim.log())
    r = refresh(client, client_secret="wrong")
    assert r.status_code == 401 and r.json()["error"] == "invalid_client"


def test_invalid_grant_and_revoke(sim: SimUpstream, client: httpx.Client) -> None:
    r = refresh(client, "rt-nobody")
    assert r.status_code == 400
    assert r.json() == {"error": "invalid_grant", "error_description": "Token has been expired or revoked."}
    headers = bearer(client)
    assert client.post("/_sim/revoke", json={"refresh_token": "rt-alice"}).status_code == 200
    assert refresh(client).json()["error"] == "invalid_grant"
    r = client.post("/v1internal:loadCodeAssist", headers=headers, json={"metadata": {"ideType": "ANTIGRAVITY"}})
    assert r.status_code == 401 and r.json()["error"]["status"] == "UNAUTHENTICATED"


def test_expire_forces_a_refresh(sim: SimUpstream, client: httpx.Client) -> None:
    headers = bearer(client)
    body = {"metadata": {"ideType": "ANTIGRAVITY"}}
    assert client.post("/v1internal:loadCodeAssist", headers=headers, json=body).status_code == 200
    sim.expire("alice@example.com")
    assert client.post("/v1internal:loadCodeAssist", headers=headers, json=body).status_code == 401
    assert client.post("/v1internal:loadCodeAssist", headers=bearer(client), json=body).status_code == 200


def test_authorization_code_with_pkce(sim: SimUpstream, client: httpx.Client) -> None:
    verifier = "v" * 50
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    sim.add_auth_code("code-1", challenge, "rt-bob", email="bob@example.com")
    form = {"grant_type": "authorization_code", "client_id": "sim-client-id", "client_secret": "sim-client-secret",
            "code": "code-1", "redirect_uri": "http://localhost:1/cb"}
    assert client.post("/token", data={**form, "code_verifier": "nope"}).json()["error"] == "invalid_grant"
    r = client.post("/token", data={**form, "code_verifier": verifier})
    assert r.status_code == 200 and r.json()["refresh_token"] == "rt-bob"
    info = client.get("/userinfo", headers={"authorization": "Bearer " + r.json()["access_token"]})
    assert info.json()["email"] == "bob@example.com"
    assert client.post("/token", data={**form, "code_verifier": verifier}).json()["error"] == "invalid_grant"


# --------------------------------------------------------------------------- behaviour rules


def test_429_once_then_success(sim: SimUpstream, client: httpx.Client) -> None:
    rule = client.post("/_sim/behave", json={"match": {"account": "alice@example.com", "model": "gemini-2.5-flash"},
                                             "action": "429", "times": 1, "retry_delay": "1.5s",
                                             "quota_reset_delay": "2h1m1s", "retry_after": 2})
    assert rule.json()["id"] > 0
    headers = bearer(client)
    r = client.post("/v1internal:generateContent", headers=headers, json=envelope([user("hi")]))
    assert r.status_code == 429 and r.headers["retry-after"] == "2"
    err = r.json()["error"]
    assert err["status"] == "RESOURCE_EXHAUSTED"
    info, retry = err["details"]
    assert info["@type"] == "type.googleapis.com/google.rpc.ErrorInfo" and info["reason"] == "RATE_LIMIT_EXCEEDED"
    assert info["metadata"]["quotaResetDelay"] == "2h1m1s"
    assert retry == {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}
    assert client.post("/v1internal:generateContent", headers=headers, json=envelope([user("hi")])).status_code == 200
    actions = [e["action"] for e in sim.log("google")]
    assert actions == ["429", None]


def test_rules_in_other_dialects_and_endpoints(sim: SimUpstream, client: httpx.Client) -> None:
    sim.behave("503", match={"endpoint": "/ep1"}, reason="MODEL_CAPACITY_EXHAUSTED")
    sim.behave("429", match={"account": OPENAI_KEY}, retry_after=3)
    sim.behave("429", match={"account": ANTHROPIC_KEY})
    headers = bearer(client)
    r = client.post("/ep1/v1internal:generateContent", headers=headers, json=envelope([user("hi")]))
    assert r.status_code == 503 and r.json()["error"]["details"][0]["reason"] == "MODEL_CAPACITY_EXHAUSTED"
    assert client.post("/ep2/v1internal:generateContent", headers=headers, json=envelope([user("hi")])).is_success
    r = client.post("/v1/chat/completions", headers={"authorization": f"Bearer {OPENAI_KEY}"},
                    json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 429 and r.headers["retry-after"] == "3"
    assert r.json()["error"]["type"] == "rate_limit_error" and r.json()["error"]["code"] == "rate_limit_exceeded"
    r = client.post("/v1/messages", headers=ANTHROPIC_HEADERS, json={
        "model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]})
    assert r.json() == {"type": "error", "error": {"type": "rate_limit_error", "message": r.json()["error"]["message"]}}
    assert all(e["account"] != OPENAI_KEY for e in sim.log())  # keys are masked in the log


def test_stall_with_seconds_then_answers(sim: SimUpstream, client: httpx.Client) -> None:
    sim.behave("stall", match={"account": GOOGLE_KEY}, times=1, seconds=0.3)
    start = time.monotonic()
    r = client.post("/v1beta/models/gemini-2.5-flash:generateContent", headers={"x-goog-api-key": GOOGLE_KEY},
                    json={"contents": [user("slowly")]})
    assert r.status_code == 200 and time.monotonic() - start >= 0.3


def test_stall_forever_until_client_leaves(sim: SimUpstream) -> None:
    sim.behave("stall", match={"account": GOOGLE_KEY})
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{sim.url}/v1beta/models/gemini-2.5-flash:generateContent", timeout=0.3,
                   headers={"x-goog-api-key": GOOGLE_KEY}, json={"contents": [user("hang")]})
    assert sim.log()[-1]["status"] == 0 and sim.log()[-1]["action"] == "stall"


def test_drop_mid_stream(sim: SimUpstream, client: httpx.Client) -> None:
    sim.behave("drop", match={"model": "gemini-2.5-flash"}, after_events=2)
    received = b""
    with pytest.raises(httpx.RemoteProtocolError):
        with client.stream("POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent", params={"alt": "sse"},
                           headers={"x-goog-api-key": GOOGLE_KEY}, json={"contents": [user("drop me now")]}) as r:
            assert r.status_code == 200
            for chunk in r.iter_bytes():
                received += chunk
    assert received.count(b"data: ") == 2


def test_garbage_and_slow(sim: SimUpstream, client: httpx.Client) -> None:
    sim.behave("garbage", times=1)
    sim.behave("slow", times=1, chunk_delay=0.05)
    headers = {"x-goog-api-key": GOOGLE_KEY}
    r = client.post("/v1beta/models/gemini-2.5-flash:generateContent", headers=headers, json={"contents": [user("x")]})
    assert r.status_code == 200
    with pytest.raises(ValueError):
        r.json()
    start = time.monotonic()
    r = client.post("/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse", headers=headers,
                    json={"contents": [user("slow stream here")]})
    assert len(sse_data(r.text)) == 3 and time.monotonic() - start >= 0.1


GEMINI_STREAM = "/v1beta/models/gemini-2.5-flash:streamGenerateContent"
GEMINI_WHOLE = "/v1beta/models/gemini-2.5-flash:generateContent"


def _stream_blocks(client: httpx.Client, path: str, **params: str) -> tuple[int, list[str], bool]:
    """Status, the SSE blocks received, and whether the body ended cleanly."""
    body = b""
    try:
        with client.stream("POST", path, params=params, headers={"x-goog-api-key": GOOGLE_KEY},
                           json={"contents": [user("one two three four five six")]}) as r:
            for chunk in r.iter_bytes():
                body += chunk
    except httpx.RemoteProtocolError:
        return r.status_code, body.decode().replace("\r\n", "\n").split("\n\n"), False
    return r.status_code, body.decode().replace("\r\n", "\n").split("\n\n"), True


def test_garbage_after_good_events(sim: SimUpstream, client: httpx.Client) -> None:
    sim.behave("garbage", times=1, after_events=2)
    status, blocks, clean = _stream_blocks(client, GEMINI_STREAM, alt="sse")
    assert status == 200 and clean
    assert [json.loads(b[6:])["candidates"][0]["content"]["parts"][0]["text"] for b in blocks[:2]]
    assert blocks[2].startswith("data: {") and "<<not json>>" in blocks[2]
    with pytest.raises(ValueError):
        json.loads(blocks[2][6:])
    sim.behave("garbage", times=1, after_events=1)  # the JSON-array form breaks as an array
    r = client.post(GEMINI_STREAM, headers={"x-goog-api-key": GOOGLE_KEY}, json={"contents": [user("x y z")]})
    assert r.text.startswith("[{") and r.text.endswith("<<not json>>")


def test_truncate_cuts_an_event_or_the_body_in_half(sim: SimUpstream, client: httpx.Client) -> None:
    sim.behave("truncate", times=1, after_events=1)
    status, blocks, clean = _stream_blocks(client, GEMINI_STREAM, alt="sse")
    assert status == 200 and clean  # the HTTP body ends properly: only the JSON inside is cut
    assert json.loads(blocks[0][6:])["candidates"]
    assert len(blocks) == 2 and blocks[1].startswith("data: {")
    with pytest.raises(ValueError):
        json.loads(blocks[1][6:])
    sim.behave("truncate", times=1)
    r = client.post(GEMINI_WHOLE, headers={"x-goog-api-key": GOOGLE_KEY}, json={"contents": [user("x")]})
    assert r.status_code == 200 and r.text.startswith('{"candidates"')
    with pytest.raises(ValueError):
        r.json()


def test_stall_after_events_holds_the_stream_open(sim: SimUpstream) -> None:
    sim.behave("stall", times=1, after_events=1)
    received = b""
    with httpx.Client(base_url=sim.url, timeout=httpx.Timeout(5, read=0.5)) as c:
        with pytest.raises(httpx.ReadTimeout):
            with c.stream("POST", GEMINI_STREAM, params={"alt": "sse"}, headers={"x-goog-api-key": GOOGLE_KEY},
                          json={"contents": [user("one two three")]}) as r:
                assert r.status_code == 200
                for chunk in r.iter_bytes():
                    received += chunk
    assert received.count(b"data: ") == 1
    assert sim.log()[-1]["status"] == 200 and sim.log()[-1]["action"] == "stall"
    # A whole body: the headers come, the body does not (until `seconds` have passed).
    sim.behave("stall", times=1, after_events=0, seconds=0.3)
    start = time.monotonic()
    with httpx.Client(base_url=sim.url, timeout=5) as c:
        with c.stream("POST", GEMINI_WHOLE, headers={"x-goog-api-key": GOOGLE_KEY},
                      json={"contents": [user("x")]}) as r:
            headers_at = time.monotonic() - start
            r.read()
    assert headers_at < 0.25 and time.monotonic() - start >= 0.3 and r.json()["candidates"]


@pytest.mark.parametrize("path", [GEMINI_STREAM + "?alt=sse", GEMINI_WHOLE])
def test_reset_after_the_headers(sim: SimUpstream, client: httpx.Client, path: str) -> None:
    sim.behave("reset", times=1)
    with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
        with client.stream("POST", path, headers={"x-goog-api-key": GOOGLE_KEY}, json={"contents": [user("x")]}) as r:
            assert r.status_code == 200
            r.read()
    assert sim.log()[-1]["action"] == "reset"
    assert client.post(GEMINI_WHOLE, headers={"x-goog-api-key": GOOGLE_KEY},
                       json={"contents": [user("again")]}).status_code == 200


def test_reset_after_events_and_with_a_raw_socket(sim: SimUpstream) -> None:
    sim.behave("reset", times=1, after_events=2)
    body = json.dumps({"contents": [user("one two three")]}).encode()
    head = (f"POST {GEMINI_STREAM}?alt=sse HTTP/1.1\r\nhost: x\r\nx-goog-api-key: {GOOGLE_KEY}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n").encode()
    with socket.create_connection((sim.host, sim.port), timeout=5) as s:
        s.sendall(head + body)
        received = b""
        with pytest.raises(ConnectionResetError):
            while chunk := s.recv(65536):
                received += chunk
    assert received.startswith(b"HTTP/1.1 200") and received.count(b"data: ") == 2


@pytest.mark.parametrize("path", [GEMINI_STREAM + "?alt=sse", GEMINI_WHOLE])
def test_html_page_with_a_200(sim: SimUpstream, client: httpx.Client, path: str) -> None:
    sim.behave("html", times=1)
    r = client.post(path, headers={"x-goog-api-key": GOOGLE_KEY}, json={"contents": [user("x")]})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "<title>502 Bad Gateway</title>" in r.text


def test_new_actions_check_their_parameters(sim: SimUpstream) -> None:
    with pytest.raises(ValueError, match="wrong type"):
        sim.behave("reset", after_events="two")
    with pytest.raises(ValueError, match="error200 only"):
        sim.behave("truncate", status=500)


# --------------------------------------------------------------------------- Gemini API


def test_gemini_json_array_stream(sim: SimUpstream, client: httpx.Client) -> None:
    sim.settings(fragment=True)
    with client.stream("POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
                       headers={"x-goog-api-key": GOOGLE_KEY}, json={"contents": [user("array please")]}) as r:
        chunks = list(r.iter_raw())
        assert r.headers["content-type"].startswith("application/json")
    body = b"".join(chunks)
    assert body.startswith(b"[{") and body.endswith(b"\n]") and len(chunks) > 1
    docs = json.loads(body)
    assert gemini_text(docs) == "echo: array please" and "usageMetadata" in docs[-1]


def test_gemini_api_keys_models_and_count(client: httpx.Client) -> None:
    r = client.post("/v1beta/models/gemini-2.5-flash:generateContent", params={"key": "bad"},
                    json={"contents": [user("x")]})
    assert r.status_code == 400 and r.json()["error"]["details"][0]["reason"] == "API_KEY_INVALID"
    headers = {"x-goog-api-key": GOOGLE_KEY}
    page = client.get("/v1beta/models", params={"pageSize": 2}, headers=headers).json()
    assert [m["name"] for m in page["models"]] == ["models/gemini-2.5-flash", "models/gemini-2.5-pro"]
    rest = client.get("/v1beta/models", params={"pageToken": page["nextPageToken"]}, headers=headers).json()
    assert "nextPageToken" not in rest and rest["models"]
    assert client.get("/v1beta/models/gemini-2.5-pro", headers=headers).json()["outputTokenLimit"] > 0
    count = client.post("/v1beta/models/gemini-2.5-flash:countTokens", headers=headers,
                        json={"generateContentRequest": {"contents": [user("abcd" * 10)]}})
    assert count.json() == {"totalTokens": 11}
    image = base64.b64encode(b"\x89PNG" + bytes(60)).decode()
    r = client.post("/v1beta/models/gemini-2.5-flash:generateContent", headers=headers, json={"contents": [
        {"role": "user", "parts": [{"text": "look"}, {"inlineData": {"mimeType": "image/png", "data": image}}]}]})
    assert "image: image/png 64 bytes" in gemini_text([r.json()])


def test_prefix_cache_and_v1_paths(client: httpx.Client) -> None:
    """A conversation that grows on the same account reports cached tokens; google-genai (which
    defaults to /v1/ when given a base URL) is served like /v1beta/."""
    headers = {"x-goog-api-key": GOOGLE_KEY}
    turns = [user("first question " * 20)]
    r = client.post("/v1/models/gemini-2.5-flash:generateContent", headers=headers, json={"contents": turns})
    assert "cachedContentTokenCount" not in r.json()["usageMetadata"]
    turns += [r.json()["candidates"][0]["content"], user("second")]
    usage = client.post("/v1/models/gemini-2.5-flash:generateContent", headers=headers,
                        json={"contents": turns}).json()["usageMetadata"]
    assert 0 < usage["cachedContentTokenCount"] < usage["promptTokenCount"]


# --------------------------------------------------------------------------- OpenAI


def test_openai_stream_with_tool_call_and_usage(client: httpx.Client) -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    r = client.post("/v1/chat/completions", headers={"authorization": f"Bearer {OPENAI_KEY}"}, json={
        "model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True}, "tools": tools,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": CALL_TEXT}]})
    assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
    chunks = sse_data(r.text)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    call = deltas[0]["tool_calls"][0]
    assert call["id"].startswith("call_") and call["function"]["name"] == "get_weather"
    args = "".join(d["tool_calls"][0]["function"]["arguments"] for d in deltas if d.get("tool_calls"))
    assert json.loads(args) == {"city": "Paris"}
    assert [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]][-1] == "tool_calls"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0

    messages = [{"role": "user", "content": CALL_TEXT},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": call["id"], "type": "function", "function": {"name": "get_weather", "arguments": args}}]},
                {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]
    r = client.post("/v1/chat/completions", headers={"authorization": f"Bearer {OPENAI_KEY}"},
                    json={"model": "gpt-4o", "messages": messages, "tools": tools})
    assert r.json()["choices"][0]["message"]["content"] == "tool result: sunny"
    r = client.post("/v1/chat/completions", headers={"authorization": f"Bearer {OPENAI_KEY}"},
                    json={"model": "gpt-4o", "messages": messages[:2] + [{"role": "user", "content": "x"}]})
    assert r.status_code == 400 and "did not have response messages" in r.json()["error"]["message"]


def test_openai_auth_and_models(client: httpx.Client) -> None:
    r = client.get("/v1/models", headers={"authorization": "Bearer sk-wrong-key"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    models = client.get("/v1/models", headers={"authorization": f"Bearer {OPENAI_KEY}"}).json()
    assert models["object"] == "list" and "gpt-4o" in [m["id"] for m in models["data"]]


# --------------------------------------------------------------------------- Anthropic


def test_anthropic_stream_with_thinking_and_tool(client: httpx.Client) -> None:
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    r = client.post("/v1/messages", headers=ANTHROPIC_HEADERS, json={
        "model": "claude-sonnet-4-5", "max_tokens": 4096, "stream": True, "tools": tools,
        "thinking": {"type": "enabled", "budget_tokens": 1024}, "messages": [{"role": "user", "content": CALL_TEXT}]})
    events = anthropic_events(r.text)
    names = [n for n, _ in events]
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    deltas = [e["delta"] for n, e in events if n == "content_block_delta"]
    assert {d["type"] for d in deltas} == {"thinking_delta", "signature_delta", "input_json_delta"}
    blocks = [e["content_block"] for n, e in events if n == "content_block_start"]
    assert [b["type"] for b in blocks] == ["thinking", "tool_use"] and blocks[1]["id"].startswith("toolu_")
    args = "".join(d["partial_json"] for d in deltas if d["type"] == "input_json_delta")
    assert json.loads(args) == {"city": "Paris"}
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    signature = next(d["signature"] for d in deltas if d["type"] == "signature_delta")

    def follow_up(first_block: dict[str, Any]) -> httpx.Response:
        assistant = [first_block, {"type": "tool_use", "id": blocks[1]["id"], "name": "get_weather",
                                   "input": {"city": "Paris"}}]
        return client.post("/v1/messages", headers=ANTHROPIC_HEADERS, json={
            "model": "claude-sonnet-4-5", "max_tokens": 4096, "tools": tools,
            "thinking": {"type": "enabled", "budget_tokens": 1024},
            "messages": [{"role": "user", "content": CALL_TEXT}, {"role": "assistant", "content": assistant},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": blocks[1]["id"],
                                                       "content": "sunny"}]}]})

    ok = follow_up({"type": "thinking", "thinking": "thinking about it", "signature": signature})
    assert ok.status_code == 200, ok.text
    assert ok.json()["content"][-1] == {"type": "text", "text": "tool result: sunny"}
    forged = follow_up({"type": "thinking", "thinking": "x", "signature": "forged"})
    assert forged.status_code == 400 and "Invalid `signature`" in forged.json()["error"]["message"]
    missing = follow_up({"type": "text", "text": "let me check"})
    assert missing.status_code == 400 and "Expected `thinking`" in missing.json()["error"]["message"]


@pytest.mark.parametrize(("body", "needle"), [
    ({"messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
    ({"max_tokens": 5, "messages": [{"role": "assistant", "content": "x"}]}, "first message"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}, {"role": "user", "content": "y"}]},
     "alternate"),
    ({"max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_x", "content": "r"}]}]}, "unexpected `tool_use_id`"),
])
def test_anthropic_validation(client: httpx.Client, body: dict[str, Any], needle: str) -> None:
    r = client.post("/v1/messages", headers=ANTHROPIC_HEADERS, json={"model": "claude-sonnet-4-5", **body})
    assert r.status_code == 400 and needle in r.json()["error"]["message"]
    assert r.json()["error"]["type"] == "invalid_request_error"


def test_anthropic_auth_version_and_count(client: httpx.Client) -> None:
    msg = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "count me"}]}
    r = client.post("/v1/messages/count_tokens", headers={"x-api-key": "nope", "anthropic-version": "2023-06-01"},
                    json=msg)
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    assert client.post("/v1/messages/count_tokens", headers={"x-api-key": ANTHROPIC_KEY}, json=msg).status_code == 400
    r = client.post("/v1/messages/count_tokens", headers=ANTHROPIC_HEADERS, json=msg)
    assert r.json() == {"input_tokens": estimate_tokens("count me")}


# --------------------------------------------------------------------------- robustness and CLI


def test_malformed_http_gets_400_and_server_survives(sim: SimUpstream, client: httpx.Client) -> None:
    with socket.create_connection((sim.host, sim.port), timeout=2) as s:
        s.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        assert s.recv(100).startswith(b"HTTP/1.1 400")
    r = client.post("/v1/chat/completions", headers={"authorization": f"Bearer {OPENAI_KEY}"}, content=b"{nope")
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    assert client.post("/_sim/behave", json={"action": "explode"}).status_code == 400
    assert client.get("/_sim/health").json() == {"ok": True}


def test_http_control_api(client: httpx.Client) -> None:
    client.post("/_sim/reset")
    assert client.post("/_sim/google-accounts", json={"refresh_token": "rt-x", "email": "x@example.com"}).is_success
    assert client.post("/_sim/api-keys", json={"key": "k-123456789", "kind": "openai"}).json()["label"] == "k-123456…"
    assert client.post("/_sim/settings", json={"events": 2, "latency": 0}).json()["events"] == 2
    rid = client.post("/_sim/behave", json={"action": "500", "match": {"path": "chat"}}).json()["id"]
    assert [r["id"] for r in client.get("/_sim/behave").json()] == [rid]
    assert client.delete("/_sim/behave").is_success and client.get("/_sim/behave").json() == []
    accounts = client.get("/_sim/google-accounts").json()
    assert accounts[0]["email"] == "x@example.com" and accounts[0]["refresh_count"] == 0
    assert client.get("/_sim/log").json()
    assert client.delete("/_sim/log").is_success and client.get("/_sim/log").json() == []


def test_cli_prints_one_line_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen([sys.executable, str(SCRIPTS / "simupstream.py"), "--demo"], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("simupstream listening on http://127.0.0.1:")
        url = line.split()[-1]
        assert len(httpx.get(f"{url}/_sim/google-accounts").json()) == 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=5) == 0
        assert proc.stdout.read() == ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
