"""Same-protocol pass-through framing, the signature cache and the Responses history store."""

from __future__ import annotations

import json

from addons.conversations import ResponseHistory
from addons.signatures import SignatureCache, model_family
from addons.translate import canonical as c
from addons.translate.passthrough import Passthrough, request_body, response_body


def _feed_bytewise(stream: Passthrough, data: bytes) -> bytes:
    return b"".join(stream.feed(data[i : i + 1]) for i in range(len(data)))


def test_anthropic_events_pass_unchanged_and_whole():
    upstream = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"m","cache_control":"kept"}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","delta":{"type":"text_delta","text":"hi"}}\n\n'
    )
    stream = Passthrough("anthropic", "anthropic")
    out = _feed_bytewise(stream, upstream + b"event: content_block_st")  # a cut-off last event
    assert out == upstream  # only whole events go out
    end = stream.close({"type": "error", "error": {"type": "api_error", "message": "cut"}})
    assert end.startswith(b"event: content_block_st") is False
    assert b"event: error\ndata: " in end and b'"cut"' in end


def test_gemini_unwraps_v1internal_and_frames_arrays():
    events = b"".join(
        b"data: " + json.dumps({"response": {"candidates": [{"content": {"parts": [{"text": t}]}}], "extra": 1}}).encode() + b"\r\n\r\n"
        for t in ("a", "b")
    )
    sse = Passthrough("gemini", "antigravity", sse=True)
    out = sse.feed(events) + sse.close()
    assert out.count(b"data: ") == 2 and b'"response"' not in out and b'"extra":1' in out
    array = Passthrough("gemini", "antigravity", sse=False)
    body = array.feed(events) + array.close()
    parsed = json.loads(body)
    assert [p["candidates"][0]["content"]["parts"][0]["text"] for p in parsed] == ["a", "b"]
    empty = Passthrough("gemini", "gemini", sse=False)
    assert json.loads(empty.close({"error": {"code": 502, "message": "x"}})) == [{"error": {"code": 502, "message": "x"}}]


def test_openai_usage_chunk_hidden_unless_asked():
    chunks = (
        b'data: {"choices":[{"delta":{"content":"x"}}]}\n\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":1}}\n\n'
        b"data: [DONE]\n\n"
    )
    hidden = Passthrough("openai_chat", "openai", caller_wants_usage=False)
    assert b"usage" not in hidden.feed(chunks) + hidden.close()
    shown = Passthrough("openai_chat", "openai", caller_wants_usage=True)
    assert b"usage" in shown.feed(chunks)


def test_request_and_response_bodies():
    body = {"model": "gpt-4o", "messages": [], "stream": True, "stream_options": {"x": 1}, "unknown_field": 5}
    out = request_body("openai_chat", "openai", body, "gpt-4.1", stream=True)
    assert out["model"] == "gpt-4.1" and out["unknown_field"] == 5
    assert out["stream_options"] == {"x": 1, "include_usage": True}
    assert body["model"] == "gpt-4o"  # the caller's body is not changed
    gemini = {"contents": [], "safetySettings": [1]}
    assert request_body("gemini", "antigravity", gemini, "m", stream=False) is gemini
    wrapped = json.dumps({"response": {"candidates": []}, "traceId": "t"}).encode()
    assert json.loads(response_body("antigravity", wrapped)) == {"candidates": []}
    assert response_body("gemini", b"raw") == b"raw"


def test_gemini_turns_of_one_role_in_a_row_are_merged():
    # Gemini CLI 0.61's model-router call: session context, then the prompt, as two user turns.
    context, prompt = {"text": "<session_context>...</session_context>"}, {"text": "hello"}
    body = {"contents": [{"role": "user", "parts": [context]}, {"parts": [prompt]},
                         {"role": "model", "parts": [{"text": "a"}]}, {"role": "model", "parts": [{"text": "b"}]},
                         {"role": "user", "parts": [{"text": "c"}]}],
            "generationConfig": {"responseJsonSchema": {"type": "object"}}}
    out = request_body("gemini", "antigravity", body, "m", stream=False)
    assert out["contents"] == [{"role": "user", "parts": [context, prompt]},
                               {"role": "model", "parts": [{"text": "a"}, {"text": "b"}]},
                               {"role": "user", "parts": [{"text": "c"}]}]
    assert out["generationConfig"] is body["generationConfig"]
    assert len(body["contents"]) == 5 and body["contents"][0]["parts"] == [context]  # caller's body unchanged


def _history(*parts: c.Part) -> c.Request:
    return c.Request(model="m", messages=[c.Message("user", [c.Text("q")]), c.Message("assistant", list(parts))])


def test_signatures_come_back_for_callers_that_cannot_carry_them():
    cache = SignatureCache()
    cache.remember([c.Thinking("pondering", "sig-think"), c.ToolCall("call_1", "f", {}, "sig-call")], "gemini")
    request = _history(c.Thinking("pondering"), c.ToolCall("call_1", "f", {}))
    cache.restore(request)
    thinking, call = request.messages[1].parts
    assert (thinking.signature, call.signature) == ("sig-think", "sig-call")


def test_foreign_signatures_degrade_for_another_upstream():
    cache = SignatureCache()
    cache.remember([c.Thinking("pondering", "g-sig"), c.ToolCall("call_1", "f", {}, "g-call")], "gemini")
    request = _history(c.Thinking("pondering", "g-sig"), c.ToolCall("call_1", "f", {}, "g-call"))
    same = cache.for_upstream(request, "gemini")
    assert same is request  # nothing foreign for another Gemini model
    other = cache.for_upstream(request, "claude")
    assert other is not request
    text, call = other.messages[1].parts
    assert text == c.Text("pondering") and call.signature is None
    assert request.messages[1].parts[1].signature == "g-call"  # the original stays for other accounts
    unknown = _history(c.Thinking("t", "someone-elses"))
    assert cache.for_upstream(unknown, "claude") is unknown  # unknown origin: left alone


def test_cache_is_bounded():
    cache = SignatureCache(limit=3)
    for n in range(10):
        cache.remember([c.ToolCall(f"call_{n}", "f", {}, f"s{n}")], "gemini")
    request = _history(c.ToolCall("call_0", "f", {}), c.ToolCall("call_9", "f", {}))
    cache.restore(request)
    assert [p.signature for p in request.messages[1].parts] == [None, "s9"]


def test_history_store_is_bounded_by_size():
    store = ResponseHistory(budget_chars=100, max_entries=10)
    store.put("a", [c.Message("user", [c.Text("x" * 60)])])
    store.put("b", [c.Message("user", [c.Text("y" * 60)])])
    assert store.get("a") is None and store.get("b") is not None
    store.put("huge", [c.Message("user", [c.Text("z" * 500)])])
    assert store.get("huge") is None and store.get("b") is not None


def test_signatures_match_in_either_base64_alphabet():
    cache = SignatureCache()
    standard = "ab+/cd=="  # as Google sent it
    cache.remember([c.Thinking("t", standard)], "gemini")
    urlsafe = _history(c.Thinking("t", "ab-_cd"))  # as google-genai sends it back
    assert cache.family("ab-_cd") == "gemini"
    assert not cache.honoured(urlsafe, "claude")
    assert cache.for_upstream(urlsafe, "claude").messages[1].parts == [c.Text("t")]


def test_unsigned_calls_are_not_passed_through_to_gemini():
    cache = SignatureCache()
    assert not cache.honoured(_history(c.ToolCall("call_1", "f", {})), "gemini")
    assert cache.honoured(_history(c.ToolCall("call_1", "f", {})), "claude")  # Claude behind v1internal too
    assert cache.honoured(_history(c.ToolCall("call_1", "f", {}, "sig"), c.ToolCall("call_2", "g", {})), "gemini")


def test_a_signature_belongs_to_the_model_family_not_the_transport():
    assert model_family("claude-opus-4-6-thinking", "antigravity") == "claude"
    assert model_family("claude-sonnet-4-6", "anthropic") == "claude"
    assert model_family("claude-sonnet-4-6", "openai") == "claude"  # an OpenAI-compatible key serving Claude
    assert model_family("glm-4.6", "anthropic") == "claude"  # an Anthropic key: whatever it names its models
    assert model_family("gemini-3-pro-preview", "anthropic") == "claude"
    assert model_family("gemini-2.5-flash", "openai") == "openai"  # an OpenAI-compatible key: its own
    assert model_family("gemini-3.1-pro-high", "antigravity") == "gemini"
    assert model_family("models/gemini-2.5-flash", "gemini") == "gemini"
    assert model_family("gpt-oss-120b-medium", "antigravity") == "openai"
    assert model_family("deepseek-chat", "openai") == "openai"
    cache = SignatureCache()
    claude_via_google = model_family("claude-opus-4-6-thinking", "antigravity")
    cache.remember([c.Thinking("plan", "c-sig"), c.ToolCall("toolu_1", "f", {}, "c-call")], claude_via_google)
    cache.remember([c.Thinking("idea", "g-sig")], model_family("gemini-3-flash", "antigravity"))
    assert (cache.family("c-sig"), cache.family("c-call"), cache.family("g-sig"), cache.family("new")) == (
        "claude", "claude", "gemini", None,
    )
    request = _history(c.Thinking("plan", "c-sig"), c.ToolCall("toolu_1", "f", {}, "c-call"))
    # The same Claude signatures are at home with an Anthropic key, foreign to Gemini on the same transport.
    assert cache.honoured(request, model_family("claude-sonnet-4-6", "anthropic"))
    assert cache.for_upstream(request, "claude") is request
    assert not cache.honoured(request, model_family("gemini-3-flash", "antigravity"))
    degraded = cache.for_upstream(request, "gemini")
    assert degraded.messages[1].parts == [c.Text("plan"), c.ToolCall("toolu_1", "f", {}, None)]
    mixed = _history(c.Thinking("idea", "g-sig"), c.ToolCall("toolu_1", "f", {}, "c-call"))
    assert not cache.honoured(mixed, "claude") and not cache.honoured(mixed, "gemini")
    assert cache.for_upstream(mixed, "claude").messages[1].parts == [c.Text("idea"), c.ToolCall("toolu_1", "f", {}, "c-call")]


def test_anthropic_thinking_dropped_when_history_lost_its_thinking_blocks():
    body = {
        "model": "claude-x", "max_tokens": 100, "thinking": {"type": "adaptive"},
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
        "messages": [
            {"role": "user", "content": "list"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "a b"}]},
        ],
    }
    out = request_body("anthropic", "anthropic", body, "claude-y", stream=True)
    assert "thinking" not in out and "context_management" not in out
    assert body["thinking"] == {"type": "adaptive"}  # the caller's body is untouched
    body["messages"][1]["content"].insert(0, {"type": "thinking", "thinking": "t", "signature": "s"})
    kept = request_body("anthropic", "anthropic", body, "claude-y", stream=True)
    assert kept["thinking"] == {"type": "adaptive"} and "context_management" in kept
