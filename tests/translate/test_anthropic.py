"""Anthropic Messages: caller decoding, response and stream encoding checked by the official SDK,
and the upstream dialect's request encoding and stream decoding."""

from __future__ import annotations

import copy
import json
import random
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, ModelInfo as SDKModelInfo, RawMessageStreamEvent
from anthropic.types.message_count_tokens_params import MessageCountTokensParams
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from anthropic.types.shared import ErrorResponse
from pydantic import TypeAdapter

from addons.translate import anthropic as a
from addons.translate import canonical as c
from addons.translate import sse
from addons.translate.assemble import Assembler
from addons.translate.protocol import ModelInfo

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "clients" / "claude-code-2.1.197-messages.json"

EVENT = TypeAdapter(RawMessageStreamEvent)


def claude_code_body() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())["body"]


def minimal(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-x", "max_tokens": 100, "messages": [{"role": "user", "content": "hi"}]} | extra


CONVERSATION: list[dict[str, Any]] = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "look", "cache_control": {"type": "ephemeral"}},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0K"}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.webp?x=1"}},
            {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "doc text"}},
            {"type": "search_result", "source": "s", "title": "t", "content": [{"type": "text", "text": "found"}]},
        ],
    },
    {
        "role": "assistant",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "sig1"},
            {"type": "redacted_thinking", "data": "opaque"},
            {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {"query": "q"}},
            {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1", "content": [{"type": "web_search_result"}]},
            {"type": "text", "text": "calling"},
            {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}},
        ],
    },
    {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "toolu_1",
                "content": [
                    {"type": "text", "text": "a.txt"},
                    {"type": "image", "source": {"type": "url", "url": "u.png"}},
                ],
                "is_error": True,
            },
            {"type": "text", "text": "go on"},
        ],
    },
]


# --- caller: decode ------------------------------------------------------------------------------


def test_decode_claude_code_fixture() -> None:
    body = claude_code_body()
    request = a.caller.decode_request(body)
    assert request.model == "claude-opus-4-8"
    assert request.max_tokens == 64000 and request.stream is True
    # three system blocks, then the mid-conversation system message's text
    assert request.system[0].startswith("x-anthropic-billing-header:")
    assert request.system[1:] == [body["system"][1]["text"], body["system"][2]["text"], body["messages"][1]["content"]]
    assert request.messages == [
        c.Message(
            "user", [c.Text(body["messages"][0]["content"][0]["text"]), c.Text("list the files in this directory")]
        )
    ]
    assert len(request.tools) == 24
    agent = request.tools[0]
    assert agent.name == "Agent" and agent.description == body["tools"][0]["description"]
    assert agent.parameters is not None and agent.parameters["$schema"].startswith("https://json-schema.org/")
    assert agent.parameters == body["tools"][0]["input_schema"]
    assert [t.name for t in request.tools] == [t["name"] for t in body["tools"]]
    assert request.thinking == c.ThinkingConfig(enabled=True, budget_tokens=None, effort="high")
    assert request.tool_choice is None and request.stop == [] and request.temperature is None
    assert request.response_format is None


def test_decode_count_request_needs_no_max_tokens() -> None:
    body = claude_code_body()
    del body["max_tokens"]
    request = a.caller.decode_count_request(body)
    assert request.max_tokens is None and len(request.tools) == 24
    assert a.caller.encode_count_response(1234) == {"input_tokens": 1234}
    with pytest.raises(c.BadRequest, match="max_tokens: Field required"):
        a.caller.decode_request(body)


def test_decode_conversation_blocks() -> None:
    request = a.caller.decode_request(minimal(messages=CONVERSATION, system="be brief"))
    assert request.system == ["be brief"]
    user, assistant, result = request.messages
    assert user.parts == [
        c.Text("look"),
        c.Image("image/png", data="iVBORw0K"),
        c.Image("image/webp", url="https://example.com/cat.webp?x=1"),
        c.Text("doc text"),
        c.Text("found"),
    ]
    assert assistant.parts == [
        c.Thinking("hmm", "sig1"),
        c.Thinking("", "opaque", redacted=True),
        c.Text("calling"),
        c.ToolCall("toolu_1", "Bash", {"command": "ls"}),
    ]
    assert result.parts == [
        c.ToolResult("toolu_1", "Bash", [c.Text("a.txt"), c.Image("image/png", url="u.png")], is_error=True),
        c.Text("go on"),
    ]


def test_decode_tools_choice_sampling_and_thinking() -> None:
    body = minimal(
        tools=[
            {"name": "get", "description": "d", "input_schema": {"type": "object"}},
            {"type": "custom", "name": "put", "input_schema": {"type": "object"}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
            {"type": "bash_20250124", "name": "bash"},
            {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
        ],
        tool_choice={"type": "tool", "name": "get", "disable_parallel_tool_use": True},
        stop_sequences=["\n\nHuman:"],
        temperature=0.5,
        top_p=0.9,
        top_k=40,
        metadata={"user_id": "u"},
        context_management={"edits": []},
        thinking={"type": "enabled", "budget_tokens": 2048},
        output_config={"effort": "max", "format": {"type": "json_schema", "schema": {"type": "object"}}},
    )
    request = a.caller.decode_request(body)
    assert request.tools == [c.Tool("get", "d", {"type": "object"}), c.Tool("put", "", {"type": "object"})]
    assert request.tool_choice == c.ToolChoice("tool", "get")
    assert (request.stop, request.temperature, request.top_p, request.top_k) == (["\n\nHuman:"], 0.5, 0.9, 40)
    assert request.thinking == c.ThinkingConfig(enabled=True, budget_tokens=2048, effort="high")
    assert request.response_format == c.ResponseFormat("json_schema", {"type": "object"})


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ({"type": "auto"}, c.ToolChoice("auto")),
        ({"type": "any"}, c.ToolChoice("required")),
        ({"type": "none"}, c.ToolChoice("none")),
        ({"type": "tool", "name": "x"}, c.ToolChoice("tool", "x")),
    ],
)
def test_decode_tool_choice(tool_choice: dict[str, Any], expected: c.ToolChoice) -> None:
    assert a.caller.decode_request(minimal(tool_choice=tool_choice)).tool_choice == expected


@pytest.mark.parametrize(
    ("thinking", "effort", "expected"),
    [
        ({"type": "adaptive"}, "low", c.ThinkingConfig(effort="low")),
        ({"type": "adaptive", "display": "omitted"}, None, c.ThinkingConfig(include_thoughts=False)),
        ({"type": "enabled", "budget_tokens": 5000}, None, c.ThinkingConfig(budget_tokens=5000)),
        ({"type": "disabled"}, "high", c.ThinkingConfig(enabled=False)),
    ],
)
def test_decode_thinking(thinking: dict[str, Any], effort: str | None, expected: c.ThinkingConfig) -> None:
    body = minimal(thinking=thinking, output_config={"effort": effort})
    assert a.caller.decode_request(body).thinking == expected


def _with_message(content: Any, role: str = "user") -> dict[str, Any]:
    return minimal(messages=[{"role": "user", "content": "hi"}, {"role": role, "content": content}])


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({k: v for k, v in minimal().items() if k != "max_tokens"}, "max_tokens", "max_tokens: Field required"),
        (minimal(max_tokens=0), "max_tokens", "greater than or equal to 1"),
        (minimal(max_tokens="5"), "max_tokens", "valid integer"),
        (minimal(max_tokens=True), "max_tokens", "valid integer"),
        ({k: v for k, v in minimal().items() if k != "model"}, "model", "model: Field required"),
        (minimal(model=3), "model", "valid string"),
        ({k: v for k, v in minimal().items() if k != "messages"}, "messages", "messages: Field required"),
        (minimal(messages=[]), "messages", "at least one message"),
        (minimal(messages={"role": "user"}), "messages", "valid list"),
        (minimal(messages=["hi"]), "messages.0", "valid dictionary"),
        (minimal(messages=[{"role": "tool", "content": "x"}]), "messages.0.role", "'user', 'assistant'"),
        (minimal(messages=[{"role": "user"}]), "messages.0.content", "Field required"),
        (_with_message(5), "messages.1.content", "string or list"),
        (_with_message([{"type": "text"}]), "messages.1.content.0.text", "Field required"),
        (_with_message([{"type": "video"}]), "messages.1.content.0.type", "unsupported content block type 'video'"),
        (_with_message([{"text": "no type"}]), "messages.1.content.0.type", "unsupported content block type None"),
        (
            _with_message([{"type": "tool_result", "tool_use_id": "toolu_9", "content": "x"}]),
            "messages.1.content.0.tool_use_id",
            "'toolu_9', which no earlier tool_use block has",
        ),
        (
            _with_message([{"type": "tool_result", "content": "x"}]),
            "messages.1.content.0.tool_use_id",
            "Field required",
        ),
        (
            _with_message([{"type": "tool_use", "id": "t", "input": {}}], "assistant"),
            "messages.1.content.0.name",
            "Field required",
        ),
        (
            _with_message([{"type": "tool_use", "id": "t", "name": "n", "input": "[]"}], "assistant"),
            "messages.1.content.0.input",
            "valid dictionary",
        ),
        (
            _with_message([{"type": "image", "source": {"type": "file", "file_id": "f"}}]),
            "messages.1.content.0.source.type",
            "'file' is not supported",
        ),
        (
            _with_message([{"type": "image", "source": {"type": "base64", "data": "x"}}]),
            "messages.1.content.0.source.media_type",
            "Field required",
        ),
        (
            _with_message([{"type": "document", "source": {"type": "base64", "media_type": "application/pdf"}}]),
            "messages.1.content.0.source.type",
            "only text documents",
        ),
        (
            _with_message([{"type": "thinking", "signature": "s"}], "assistant"),
            "messages.1.content.0.thinking",
            "Field required",
        ),
        (_with_message([{"type": "redacted_thinking"}], "assistant"), "messages.1.content.0.data", "Field required"),
        (minimal(system=[{"type": "image"}]), "system.0.type", "must be text"),
        (minimal(system=7), "system", "string or list"),
        (
            minimal(messages=[{"role": "system", "content": [{"type": "text"}]}]),
            "messages.0.content.0.text",
            "Field required",
        ),
        (minimal(tools={}), "tools", "valid list"),
        (minimal(tools=[{"name": "x"}]), "tools.0.input_schema", "Field required"),
        (minimal(tools=[{"input_schema": {}}]), "tools.0.name", "Field required"),
        (minimal(tool_choice={"type": "required"}), "tool_choice.type", "'auto', 'any', 'tool'"),
        (minimal(tool_choice={"type": "tool"}), "tool_choice.name", "Field required"),
        (minimal(thinking={"type": "enabled"}), "thinking.budget_tokens", "Field required"),
        (minimal(thinking={"type": "enabled", "budget_tokens": 0}), "thinking.budget_tokens", "greater than"),
        (minimal(thinking={"type": "sometimes"}), "thinking.type", "'enabled', 'adaptive'"),
        (minimal(temperature="hot"), "temperature", "valid number"),
        (minimal(top_k=0.5), "top_k", "valid integer"),
        (minimal(stream="yes"), "stream", "valid boolean"),
        (minimal(stop_sequences="STOP"), "stop_sequences", "list of strings"),
    ],
)
def test_bad_requests(body: dict[str, Any], param: str, message: str) -> None:
    with pytest.raises(c.BadRequest) as caught:
        a.caller.decode_request(body)
    assert caught.value.param == param
    assert caught.value.status == 400
    assert message in caught.value.message
    assert caught.value.message.startswith(f"{param}: ")


def test_body_must_be_an_object() -> None:
    with pytest.raises(c.BadRequest, match="JSON object"):
        a.caller.decode_request([1, 2])


def test_tool_result_may_not_hold_a_tool_use() -> None:
    messages = copy.deepcopy(CONVERSATION)
    messages[2]["content"][0]["content"] = [{"type": "tool_use", "id": "x", "name": "n", "input": {}}]
    with pytest.raises(c.BadRequest) as caught:
        a.caller.decode_request(minimal(messages=messages))
    assert caught.value.param == "messages.2.content.0.content.0"


# --- caller: responses ---------------------------------------------------------------------------


RESPONSE_PARTS: list[c.Part] = [
    c.Thinking("let me see", "sig=="),
    c.Thinking("", "opaque", redacted=True),
    c.Text("Here:"),
    c.Image("image/png", data="xx"),
    c.ToolCall("toolu_1", "Bash", {"command": "ls"}),
]


def full_response(
    id: str = "abc123", parts: list[c.Part] = RESPONSE_PARTS, finish_reason: c.FinishReason = "tool_calls"
) -> c.Response:
    usage = c.Usage(input_tokens=1000, output_tokens=50, cached_tokens=800, reasoning_tokens=20)
    return c.Response(id=id, model="claude-x", parts=parts, finish_reason=finish_reason, usage=usage)


def test_encode_response_is_a_valid_message() -> None:
    body = a.caller.encode_response(full_response(), c.Request("m", []))
    message = Message.model_validate(body)
    assert message.id == "msg_abc123" and message.role == "assistant" and message.model == "claude-x"
    assert [b.type for b in message.content] == ["thinking", "redacted_thinking", "text", "text", "tool_use"]
    assert message.content[0].signature == "sig==" and message.content[1].data == "opaque"
    assert message.content[3].text == "![image](data:image/png;base64,xx)"  # a drawn image, as Markdown
    assert message.content[4].input == {"command": "ls"}
    assert message.stop_reason == "tool_use" and message.stop_sequence is None
    assert message.usage.input_tokens == 200 and message.usage.cache_read_input_tokens == 800
    assert message.usage.output_tokens == 50 and message.usage.cache_creation_input_tokens == 0
    assert message.usage.output_tokens_details is not None and message.usage.output_tokens_details.thinking_tokens == 20


@pytest.mark.parametrize(
    ("reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("stop_sequence", "stop_sequence"),
        ("content_filter", "refusal"),
        ("error", "end_turn"),
    ],
)
def test_stop_reason_table(reason: c.FinishReason, stop_reason: str) -> None:
    response = full_response(id="msg_keep", parts=[c.Text("x")], finish_reason=reason)
    body = a.caller.encode_response(response, c.Request("m", []))
    assert Message.model_validate(body).stop_reason == stop_reason
    assert body["id"] == "msg_keep"


def test_tool_call_with_stop_reason_stop_says_tool_use() -> None:
    response = full_response(parts=[c.ToolCall("t", "n", {})], finish_reason="stop")
    assert a.caller.encode_response(response, c.Request("m", []))["stop_reason"] == "tool_use"


@pytest.mark.parametrize(
    ("status", "kind", "error_type"),
    [
        (400, None, "invalid_request_error"),
        (401, None, "authentication_error"),
        (402, None, "billing_error"),
        (403, None, "permission_error"),
        (404, None, "not_found_error"),
        (413, None, "request_too_large"),
        (429, None, "rate_limit_error"),
        (500, None, "api_error"),
        (502, None, "api_error"),
        (503, None, "overloaded_error"),
        (504, None, "timeout_error"),
        (529, None, "overloaded_error"),
        (418, None, "invalid_request_error"),
        (599, "upstream_error", "api_error"),
        (500, "rate_limit", "rate_limit_error"),
        (500, "auth", "authentication_error"),
        (502, "overloaded_error", "overloaded_error"),
        (503, "capacity", "overloaded_error"),
        (429, "quota_exhausted", "rate_limit_error"),
        (401, "invalid_grant", "authentication_error"),
        (403, "forbidden", "permission_error"),
        (504, "timeout", "timeout_error"),
        (400, "invalid_request", "invalid_request_error"),
    ],
)
def test_error_body(status: int, kind: str | None, error_type: str) -> None:
    body = a.caller.error_body(status, "it broke", kind)
    assert body == {"type": "error", "error": {"type": error_type, "message": "it broke"}}
    if error_type != "request_too_large":  # a real API type the SDK's union does not list
        assert ErrorResponse.model_validate(body).error.type == error_type


def test_model_list() -> None:
    models = [ModelInfo("claude-a", "Claude A", created=1_700_000_000, input_token_limit=200_000), ModelInfo("glm-4.6")]
    body = a.caller.encode_model_list(models)
    assert body["has_more"] is False and (body["first_id"], body["last_id"]) == ("claude-a", "glm-4.6")
    first, second = (SDKModelInfo.model_validate(entry) for entry in body["data"])
    assert first.display_name == "Claude A" and first.created_at.year == 2023 and first.max_input_tokens == 200_000
    assert second.display_name == "glm-4.6" and body["data"][1]["created_at"] == "1970-01-01T00:00:00Z"
    assert a.caller.encode_model_list([]) == {"data": [], "has_more": False, "first_id": None, "last_id": None}


# --- caller: stream ------------------------------------------------------------------------------

SIGNATURE = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds=="
CANONICAL_STREAM: list[c.Event] = [
    c.BlockStart(0, c.Thinking("")),
    c.ThinkingDelta(0, "The user wants "),
    c.ThinkingDelta(0, "a listing."),
    c.SignatureDelta(0, SIGNATURE[:20]),
    c.SignatureDelta(0, SIGNATURE[20:]),
    c.BlockStop(0),
    c.BlockStart(1, c.Text("")),
    c.TextDelta(1, "I'll run "),
    c.TextDelta(1, "two commands."),
    c.BlockStop(1),
    c.BlockStart(2, c.ToolCall("toolu_01A", "Bash")),
    c.ToolArgsDelta(2, '{"comm'),
    c.ToolArgsDelta(2, 'and": "l'),
    c.ToolArgsDelta(2, 's -la"}'),
    c.BlockStop(2),
    c.BlockStart(3, c.ToolCall("toolu_01B", "Read")),
    c.ToolArgsDelta(3, '{"file_path":'),
    c.ToolArgsDelta(3, ' "/tmp/a.txt", "limit": 10}'),
    c.BlockStop(3),
    c.Finish("tool_calls", c.Usage(input_tokens=3000, output_tokens=120, cached_tokens=2048)),
]


def parse_sse(data: bytes) -> list[sse.ServerSentEvent]:
    parser = sse.SSEParser()
    return parser.feed(data) + parser.close()


def accumulate(data: bytes) -> Message:
    """Folds our SSE with the SDK's own accumulator, each event parsed strictly first."""
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for event in parse_sse(data):
        payload = json.loads(event.data)
        assert payload["type"] == event.event
        if event.event in ("ping", "error"):
            continue
        raw = EVENT.validate_python(payload)
        snapshot = accumulate_event(event=raw, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None
    return Message.model_validate(snapshot.to_dict())


def encode_stream(events: list[c.Event], batch: int = 3) -> bytes:
    encoder = a.caller.stream_encoder(c.Request("m", []), "resp1", "claude-x", 0)
    out = b"".join(encoder.encode(events[i : i + batch]) for i in range(0, len(events), batch))
    assert encoder.encode([c.TextDelta(0, "late")]) == b""
    return out


def sdk_stream(data: bytes) -> Message:
    """Runs the real client's `messages.stream()` over the bytes."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=data)

    client = anthropic.Anthropic(
        api_key="k",
        base_url="http://gateway.test",
        http_client=httpx2.Client(transport=httpx2.MockTransport(answer)),
        max_retries=0,
        _strict_response_validation=True,
    )
    messages: list[Any] = [{"role": "user", "content": "hi"}]
    with client.messages.stream(model="claude-x", max_tokens=10, messages=messages) as stream:
        return stream.get_final_message()


def test_stream_event_order_and_format() -> None:
    data = encode_stream(CANONICAL_STREAM)
    events = parse_sse(data)
    names = [e.event for e in events]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names[2:5] == ["content_block_start", "content_block_delta", "content_block_delta"]
    for chunk in data.split(b"\n\n")[:-1]:
        line_event, line_data = chunk.split(b"\n")
        assert line_event.startswith(b"event: ") and line_data.startswith(b"data: {")
        compact = json.dumps(json.loads(line_data[6:]), separators=(",", ":"), ensure_ascii=False)
        assert line_data[6:] == compact.encode()
    signatures = [json.loads(e.data)["delta"] for e in events if '"signature_delta"' in e.data]
    assert signatures == [{"type": "signature_delta", "signature": SIGNATURE}]  # whole, once
    delta = json.loads(events[-2].data)
    assert delta["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert delta["usage"]["output_tokens"] == 120 and delta["usage"]["input_tokens"] == 952
    assert delta["usage"]["cache_read_input_tokens"] == 2048
    start = json.loads(events[0].data)["message"]
    assert start["id"] == "msg_resp1" and start["content"] == [] and start["usage"]["input_tokens"] == 0


@pytest.mark.parametrize("check", [accumulate, sdk_stream])
def test_stream_is_accepted_by_the_sdk(check: Any) -> None:
    message = check(encode_stream(CANONICAL_STREAM))
    thinking, text, bash, read = message.content
    assert thinking.type == "thinking" and thinking.thinking == "The user wants a listing."
    assert thinking.signature == SIGNATURE
    assert text.type == "text" and text.text == "I'll run two commands."
    assert (bash.type, bash.id, bash.name, bash.input) == ("tool_use", "toolu_01A", "Bash", {"command": "ls -la"})
    assert read.input == {"file_path": "/tmp/a.txt", "limit": 10}
    assert message.stop_reason == "tool_use" and message.id == "msg_resp1"
    assert message.usage.output_tokens == 120 and message.usage.input_tokens == 952
    assert message.usage.cache_read_input_tokens == 2048


def test_stream_renumbers_and_shows_images_as_markdown() -> None:
    events: list[c.Event] = [
        c.BlockStart(3, c.Image("image/png", data="xx")),
        c.BlockStop(3),
        c.BlockStart(7, c.Text("")),
        c.TextDelta(7, "hi"),
        c.SignatureDelta(7, "gemini-text-sig"),
        c.BlockStop(7),
        c.BlockStart(9, c.ToolCall("call_1", "f", {"a": 1})),
        c.BlockStop(9),
        c.Finish("stop", c.Usage()),
    ]
    data = encode_stream(events)
    indexes = [json.loads(e.data).get("index") for e in parse_sse(data) if e.event.startswith("content_block")]
    assert indexes == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    message = sdk_stream(data)
    assert [b.type for b in message.content] == ["text", "text", "tool_use"]
    assert message.content[0].text == "![image](data:image/png;base64,xx)"
    assert message.content[2].input == {"a": 1}
    assert message.stop_reason == "tool_use"  # a tool call ended with "stop" still says tool_use


def test_stream_interleaved_blocks_are_serialized() -> None:
    """A text block left open while another starts is closed first; blocks that start while a
    tool_use is open wait for it, so its JSON is never split."""
    events: list[c.Event] = [
        c.BlockStart(0, c.Text("")),
        c.TextDelta(0, "Hello"),
        c.BlockStart(1, c.ToolCall("t1", "a")),
        c.ToolArgsDelta(1, '{"x":'),
        c.BlockStart(2, c.ToolCall("t2", "b")),
        c.ToolArgsDelta(2, '{"y": 2}'),
        c.TextDelta(0, " again"),
        c.ToolArgsDelta(1, " 1}"),
        c.BlockStop(1),
        c.BlockStop(2),
        c.BlockStop(0),
        c.Finish("tool_calls", c.Usage(output_tokens=5)),
    ]
    for batch in (1, 4, len(events)):
        message = sdk_stream(encode_stream(events, batch))
        summary = [(b.type, getattr(b, "text", None) or getattr(b, "input", None)) for b in message.content]
        assert summary == [("text", "Hello"), ("tool_use", {"x": 1}), ("tool_use", {"y": 2}), ("text", " again")]


def test_stream_finish_closes_open_blocks_and_redacted_thinking() -> None:
    events: list[c.Event] = [
        c.BlockStart(0, c.Thinking("", "opaque", redacted=True)),
        c.BlockStart(1, c.Thinking("pre", "sig")),
        c.BlockStart(2, c.ToolCall("t", "n")),
        c.BlockStart(3, c.Text("")),
        c.TextDelta(3, "held"),
        c.ToolArgsDelta(2, "{}"),
        c.Finish("stop", c.Usage(input_tokens=10, output_tokens=3)),
    ]
    message = sdk_stream(encode_stream(events, 2))
    assert [b.type for b in message.content] == ["redacted_thinking", "thinking", "tool_use", "text"]
    assert message.content[0].data == "opaque"
    assert (message.content[1].thinking, message.content[1].signature) == ("pre", "sig")
    assert message.content[3].text == "held" and message.usage.input_tokens == 10


def test_stream_signature_after_an_early_close() -> None:
    """Gemini-style: the thought's signature arrives after the text has begun."""
    events: list[c.Event] = [
        c.BlockStart(0, c.Thinking("")),
        c.ThinkingDelta(0, "thought"),
        c.BlockStart(1, c.Text("")),
        c.TextDelta(1, "answer"),
        c.SignatureDelta(0, "late-sig"),
        c.BlockStop(0),
        c.TextDelta(1, " more"),
        c.BlockStop(1),
        c.Finish("stop", c.Usage()),
    ]
    message = sdk_stream(encode_stream(events, 2))
    summary = [(b.type, getattr(b, "thinking", None) or getattr(b, "text", None), getattr(b, "signature", None))
               for b in message.content]
    assert summary == [
        ("thinking", "thought", ""),
        ("text", "answer", None),
        ("thinking", None, "late-sig"),
        ("text", " more", None),
    ]


def test_stream_error_after_start_makes_the_sdk_raise() -> None:
    events: list[c.Event] = [
        c.BlockStart(0, c.Text("")),
        c.TextDelta(0, "partial"),
        c.StreamError("upstream fell over", 503, "overloaded"),
    ]
    data = encode_stream(events)
    last = parse_sse(data)[-1]
    assert last.event == "error"
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "upstream fell over"}}
    assert json.loads(last.data) == error
    with pytest.raises(anthropic.APIStatusError) as caught:
        sdk_stream(data)
    assert caught.value.body == json.loads(last.data)


def test_stream_error_first() -> None:
    data = encode_stream([c.StreamError("no account could serve", 429, "rate_limit")])
    assert [e.event for e in parse_sse(data)] == ["message_start", "ping", "error"]
    assert b'"rate_limit_error"' in data


# --- upstream: request ---------------------------------------------------------------------------

CREATE_PARAMS = TypeAdapter(MessageCreateParamsNonStreaming)


def test_encode_request_from_claude_code_round_trip() -> None:
    request = a.caller.decode_request(claude_code_body())
    body = a.upstream.encode_request(request, "glm-4.6")
    assert body["model"] == "glm-4.6" and body["max_tokens"] == 64000 and body["stream"] is True
    assert [b["text"] for b in body["system"]] == request.system
    assert len(body["tools"]) == 24 and body["tools"][0]["input_schema"]["$schema"].startswith("https://")
    assert body["thinking"] == {"type": "enabled", "budget_tokens": 16384}  # effort "high"
    assert body["messages"][0]["role"] == "user"


def test_encode_request_turns() -> None:
    request = c.Request(
        model="m",
        system=["one"],
        messages=[
            c.Message("assistant", [c.Text("I start"), c.Image("image/png", data="dropped")]),
            c.Message(
                "assistant", [c.Thinking("unsigned"), c.Thinking("signed", "s1"), c.Thinking("", "r", redacted=True)]
            ),
            c.Message("assistant", [c.ToolCall("call.1", "f", {"a": 1}, signature="gem"), c.ToolCall("call_2", "g")]),
            c.Message("user", [c.Text("see results"), c.ToolResult("call.1", "f", [c.Text("ok"), c.Text("  ")])]),
            c.Message("user", [c.ToolResult("call_2", "g", [c.Image("image/jpeg", url="https://x/y.jpg")], True)]),
            c.Message("user", [c.Text("   "), c.Image("image/gif", data="R0lG"), c.Thinking("user thinking", "s")]),
            c.Message("assistant", [c.Text("prefill  \n")]),
        ],
        max_tokens=None,
        temperature=0.3,
        top_k=5,
        stop=["END", "  "],
    )
    body = a.upstream.encode_request(request, "claude-up")
    assert body["max_tokens"] == a.DEFAULT_MAX_TOKENS and body["system"] == "one"
    assert body["temperature"] == 0.3 and body["top_k"] == 5 and "top_p" not in body
    assert body["stop_sequences"] == ["END"] and "stream" not in body and "thinking" not in body
    assert body["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": a.PLACEHOLDER_USER_TEXT}]},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "I start"},
                {"type": "thinking", "thinking": "signed", "signature": "s1"},
                {"type": "redacted_thinking", "data": "r"},
                {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
                {"type": "tool_use", "id": "call_2", "name": "g", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": [{"type": "text", "text": "ok"}]},
                {
                    "type": "tool_result",
                    "tool_use_id": "call_2",
                    "content": [{"type": "image", "source": {"type": "url", "url": "https://x/y.jpg"}}],
                    "is_error": True,
                },
                {"type": "text", "text": "see results"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/gif", "data": "R0lG"}},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "prefill"}]},
    ]
    CREATE_PARAMS.validate_python(body)


def test_encode_request_tools_and_choice() -> None:
    tools = [c.Tool("f", "does f", {"type": "object", "properties": {"a": {"type": "string"}}}), c.Tool("g")]
    for choice, expected in [
        (c.ToolChoice("auto"), {"type": "auto"}),
        (c.ToolChoice("none"), {"type": "none"}),
        (c.ToolChoice("required"), {"type": "any"}),
        (c.ToolChoice("tool", "f"), {"type": "tool", "name": "f"}),
    ]:
        request = c.Request("m", [c.Message("user", [c.Text("hi")])], tools=tools, tool_choice=choice)
        body = a.upstream.encode_request(request, "m")
        assert body["tool_choice"] == expected
        assert body["tools"] == [
            {"name": "f", "description": "does f", "input_schema": tools[0].parameters},
            {"name": "g", "input_schema": {"type": "object", "properties": {}}},
        ]
        CREATE_PARAMS.validate_python(body)
    no_tools = c.Request("m", [c.Message("user", [c.Text("hi")])], tool_choice=c.ToolChoice("auto"))
    assert "tool_choice" not in a.upstream.encode_request(no_tools, "m")


@pytest.mark.parametrize(
    ("config", "max_tokens", "choice", "expected"),
    [
        (c.ThinkingConfig(budget_tokens=3000), 10000, None, {"type": "enabled", "budget_tokens": 3000}),
        (c.ThinkingConfig(budget_tokens=50000), 10000, None, {"type": "enabled", "budget_tokens": 9999}),
        (c.ThinkingConfig(budget_tokens=100), 10000, None, {"type": "enabled", "budget_tokens": 1024}),
        (c.ThinkingConfig(), None, None, {"type": "enabled", "budget_tokens": 4096}),
        (c.ThinkingConfig(effort="low"), 32000, None, {"type": "enabled", "budget_tokens": 4096}),
        (c.ThinkingConfig(budget_tokens=-1, effort="high"), 64000, None, {"type": "enabled", "budget_tokens": 16384}),
        (c.ThinkingConfig(), 1000, None, None),  # no room for the 1024 minimum
        (c.ThinkingConfig(enabled=False), None, None, {"type": "disabled"}),
        (c.ThinkingConfig(budget_tokens=0), None, None, {"type": "disabled"}),
        (c.ThinkingConfig(budget_tokens=3000), 10000, c.ToolChoice("required"), None),
        (None, None, None, None),
    ],
)
def test_encode_request_thinking(
    config: c.ThinkingConfig | None,
    max_tokens: int | None,
    choice: c.ToolChoice | None,
    expected: dict[str, Any] | None,
) -> None:
    request = c.Request(
        "m",
        [c.Message("user", [c.Text("hi")])],
        tools=[c.Tool("f")],
        tool_choice=choice,
        thinking=config,
        max_tokens=max_tokens,
        temperature=0.2,
        top_p=0.9,
    )
    body = a.upstream.encode_request(request, "m")
    assert body.get("thinking") == expected
    thinking_on = expected is not None and expected["type"] == "enabled"
    assert ("temperature" in body, "top_p" in body) == (not thinking_on, not thinking_on)
    if thinking_on:
        assert body["thinking"]["budget_tokens"] < body["max_tokens"]
    CREATE_PARAMS.validate_python(body)


def test_encode_request_no_thinking_for_a_tool_loop_without_a_signed_thought() -> None:
    """History from another upstream: the assistant's tool call has no signed thinking block."""
    messages = [
        c.Message("user", [c.Text("list")]),
        c.Message("assistant", [c.Thinking("gemini thought"), c.ToolCall("call_1", "ls", {})]),
        c.Message("user", [c.ToolResult("call_1", "ls", [c.Text("a.txt")])]),
    ]
    request = c.Request("m", messages, tools=[c.Tool("ls")], thinking=c.ThinkingConfig(budget_tokens=2000))
    assert "thinking" not in a.upstream.encode_request(request, "m")
    messages[1].parts.insert(0, c.Thinking("claude thought", "sig"))
    assert a.upstream.encode_request(request, "m")["thinking"] == {"type": "enabled", "budget_tokens": 2000}
    messages.append(c.Message("assistant", [c.Text("done")]))
    messages.append(c.Message("user", [c.Text("thanks")]))
    del messages[1].parts[0]
    assert "thinking" in a.upstream.encode_request(request, "m")  # that tool loop is over


def test_encode_request_response_format_and_stream() -> None:
    request = c.Request(
        "m",
        [c.Message("user", [c.Text("hi")])],
        system=["a", "", "b"],
        stream=True,
        response_format=c.ResponseFormat("json_schema", {"type": "object"}),
    )
    body = a.upstream.encode_request(request, "m")
    assert body["output_config"] == {"format": {"type": "json_schema", "schema": {"type": "object"}}}
    assert body["system"] == [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}] and body["stream"] is True
    assert a.upstream.encode_request(c.Request("m", []), "m")["messages"] == [
        {"role": "user", "content": [{"type": "text", "text": a.PLACEHOLDER_USER_TEXT}]}
    ]


def test_encode_count_request() -> None:
    body = claude_code_body()
    del body["max_tokens"]
    request = a.caller.decode_count_request(body | {"temperature": 0.5, "stop_sequences": ["x"]})
    count = a.upstream.encode_count_request(request, "claude-up")
    assert set(count) == {"model", "messages", "system", "tools", "thinking"}
    TypeAdapter(MessageCountTokensParams).validate_python(count)


# --- upstream: response --------------------------------------------------------------------------

UPSTREAM_MESSAGE: dict[str, Any] = {
    "id": "msg_01XFDUDYJgAACzvnptvVoYEL",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}},
        {"type": "text", "text": "Hi", "citations": None},
        {"type": "tool_use", "id": "toolu_1", "name": "Bash", "input": {"command": "ls"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 10,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 100,
        "output_tokens": 42,
        "output_tokens_details": {"thinking_tokens": 30},
    },
}


def test_decode_response() -> None:
    response = a.upstream.decode_response(UPSTREAM_MESSAGE)
    assert response.id == "msg_01XFDUDYJgAACzvnptvVoYEL" and response.model == "claude-sonnet-4-5-20250929"
    assert response.parts == [
        c.Thinking("hmm", "sig"),
        c.Thinking("", "opaque", redacted=True),
        c.Text("Hi"),
        c.ToolCall("toolu_1", "Bash", {"command": "ls"}),
    ]
    assert response.finish_reason == "tool_calls"
    assert response.usage == c.Usage(input_tokens=115, output_tokens=42, cached_tokens=100, reasoning_tokens=30)
    # and back out to an Anthropic caller, unchanged where it matters
    again = a.caller.encode_response(response, c.Request("m", []))
    expected = [b for b in UPSTREAM_MESSAGE["content"] if b["type"] != "server_tool_use"]
    expected[2] = {"type": "text", "text": "Hi"}
    assert again["content"] == expected and again["stop_reason"] == "tool_use"
    assert again["usage"]["input_tokens"] == 15 and again["usage"]["cache_read_input_tokens"] == 100


@pytest.mark.parametrize(
    "body",
    [
        [],
        {"type": "error", "error": {"type": "api_error", "message": "x"}},
        {"type": "message"},
        {"type": "message", "content": [{"type": "text"}]},
        {"type": "message", "content": ["text"]},
    ],
)
def test_decode_response_rejects_other_bodies(body: Any) -> None:
    with pytest.raises(c.BadUpstreamAnswer):
        a.upstream.decode_response(body)


@pytest.mark.parametrize(
    ("stop_reason", "reason"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop_sequence"),
        ("tool_use", "tool_calls"),
        ("pause_turn", "stop"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        (None, "stop"),
    ],
)
def test_decode_stop_reasons(stop_reason: str | None, reason: str) -> None:
    body = UPSTREAM_MESSAGE | {"stop_reason": stop_reason}
    assert a.upstream.decode_response(body).finish_reason == reason


# --- upstream: stream ----------------------------------------------------------------------------

RECORDED_STREAM = (
    "event: message_start\n"
    'data: {"type":"message_start","message":{"id":"msg_01Ab","type":"message","role":"assistant",'
    '"model":"claude-sonnet-4-5-20250929","content":[],"stop_reason":null,"stop_sequence":null,'
    '"usage":{"input_tokens":472,"cache_creation_input_tokens":16,"cache_read_input_tokens":2048,'
    '"output_tokens":1,"service_tier":"standard"}}}\n\n'
    "event: content_block_start\n"
    'data: {"type":"content_block_start","index":0,'
    '"content_block":{"type":"thinking","thinking":"","signature":""}}\n\n'
    "event: ping\n"
    'data: {"type": "ping"}\n\n'
    "event: content_block_delta\n"
    'data: {"type":"content_block_delta","index":0,'
    '"delta":{"type":"thinking_delta","thinking":"The user wants me to list"}}\n\n'
    "event: content_block_delta\n"
    'data: {"type":"content_block_delta","index":0,'
    '"delta":{"type":"thinking_delta","thinking":" files — I’ll use Bash."}}\n\n'
    "event: content_block_delta\n"
    'data: {"type":"content_block_delta","index":0,'
    f'"delta":{{"type":"signature_delta","signature":"{SIGNATURE}"}}}}\n\n'
    "event: content_block_stop\n"
    'data: {"type":"content_block_stop","index":0}\n\n'
    "event: content_block_start\n"
    'data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}\n\n'
    "event: content_block_delta\n"
    'data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"I\'ll list the files"}}\n\n'
    "event: content_block_delta\n"
    'data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":" in this directory."}}\n\n'
    "event: content_block_stop\n"
    'data: {"type":"content_block_stop","index":1}\n\n'
    "event: content_block_start\n"
    'data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_01T1x",'
    '"name":"Bash","input":{}}}\n\n'
    + "".join(
        "event: content_block_delta\n"
        'data: {"type":"content_block_delta","index":2,'
        f'"delta":{{"type":"input_json_delta","partial_json":{json.dumps(piece)}}}}}\n\n'
        for piece in ["", '{"comman', 'd": "ls -', 'la", "de', "scription", '": "List fil', 'es in cur', 'rent dir"}']
    )
    + "event: content_block_stop\n"
    'data: {"type":"content_block_stop","index":2}\n\n'
    "event: message_delta\n"
    'data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},'
    '"usage":{"output_tokens":89,"output_tokens_details":{"thinking_tokens":12}}}\n\n'
    "event: message_stop\n"
    'data: {"type":"message_stop"}\n\n'
).encode()


def decode(chunks: list[bytes]) -> list[c.Event]:
    decoder = a.upstream.stream_decoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    return events + decoder.close()


def test_stream_decoder_on_recorded_stream() -> None:
    events = decode([RECORDED_STREAM])
    assert events[:3] == [
        c.BlockStart(0, c.Thinking("")),
        c.ThinkingDelta(0, "The user wants me to list"),
        c.ThinkingDelta(0, " files — I’ll use Bash."),
    ]
    assert events[-1] == c.Finish(
        "tool_calls", c.Usage(input_tokens=472 + 16 + 2048, output_tokens=89, cached_tokens=2048, reasoning_tokens=12)
    )
    assert sum(isinstance(e, c.ToolArgsDelta) for e in events) == 7  # the empty first piece is dropped
    assembler = Assembler("r", "m")
    assembler.extend(events)
    assert assembler.finished and assembler.error is None
    assert assembler.response.parts == [
        c.Thinking("The user wants me to list files — I’ll use Bash.", SIGNATURE),
        c.Text("I'll list the files in this directory."),
        c.ToolCall("toolu_01T1x", "Bash", {"command": "ls -la", "description": "List files in current dir"}),
    ]


def test_stream_decoder_is_split_proof() -> None:
    whole = decode([RECORDED_STREAM])
    assert decode([RECORDED_STREAM[i : i + 1] for i in range(len(RECORDED_STREAM))]) == whole
    assert decode([RECORDED_STREAM.replace(b"\n", b"\r\n")]) == whole
    rng = random.Random(7)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(RECORDED_STREAM)), rng.randint(1, 40)))
        chunks = [RECORDED_STREAM[i:j] for i, j in zip([0, *cuts], [*cuts, len(RECORDED_STREAM)])]
        assert decode(chunks) == whole


def test_upstream_stream_through_caller_encoder_satisfies_the_sdk() -> None:
    message = sdk_stream(encode_stream(decode([RECORDED_STREAM]), batch=5))
    assert [b.type for b in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[0].signature == SIGNATURE
    assert message.content[2].input == {"command": "ls -la", "description": "List files in current dir"}
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.cache_read_input_tokens) == (488, 2048)


def test_stream_decoder_reads_server_tool_blocks_as_grounding() -> None:
    stream = (
        b'event: message_start\ndata: {"type":"message_start",'
        b'"message":{"usage":{"input_tokens":3,"output_tokens":1}}}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":'
        b'{"type":"redacted_thinking","data":"opaque"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":1,"content_block":'
        b'{"type":"server_tool_use","id":"srvtoolu_1","name":"web_search","input":{}}}\n\n'
        b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,"delta":'
        b'{"type":"input_json_delta","partial_json":"{\\"query\\": \\"x\\"}"}}\n\n'
        b'event: content_block_stop\ndata: {"type":"content_block_stop","index":1}\n\n'
        b'event: content_block_start\ndata: {"type":"content_block_start","index":2,"content_block":'
        b'{"type":"text","text":"Hi"}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta",'
        b'"delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":4}}\n\n'
        b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    )
    assert decode([stream]) == [
        c.BlockStart(0, c.Thinking("", "opaque", redacted=True)),
        c.BlockStop(0),
        c.BlockStart(2, c.Text("")),
        c.TextDelta(2, "Hi"),
        c.Grounded(c.Grounding(queries=["x"])),
        c.BlockStop(2),
        c.Finish("stop", c.Usage(input_tokens=3, output_tokens=4)),
    ]


def test_stream_decoder_error_event() -> None:
    stream = RECORDED_STREAM.split(b"event: content_block_start", 2)
    broken = (
        stream[0]
        + b"event: content_block_start"
        + stream[1]
        + b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}\n\n'
    )
    decoder = a.upstream.stream_decoder()
    events = decoder.feed(broken)
    assert events[-1] == c.StreamError("Overloaded", 503, "overloaded_error")
    assert decoder.feed(b"event: message_stop\ndata: {}\n\n") == [] and decoder.close() == []


@pytest.mark.parametrize(
    "garbage",
    [
        b"data: {not json\n\n",
        b"event: content_block_delta\ndata: [1, 2]\n\n",
        b'event: content_block_start\ndata: {"type":"content_block_start","index":0}\n\n',
        b'event: message_delta\ndata: {"type":"message_delta","delta":null}\n\n',
        b"data: \xff\xfe\x00garbage\n\n",
        b'data: "a string"\n\n',
    ],
)
def test_stream_decoder_garbage_is_a_stream_error(garbage: bytes) -> None:
    cut = RECORDED_STREAM.index(b"event: content_block_stop")
    events = decode([RECORDED_STREAM[:cut], garbage, RECORDED_STREAM[cut:]])
    assert events[-1].__class__ is c.StreamError and "malformed" in events[-1].message
    assert events[-2] == c.SignatureDelta(0, SIGNATURE)  # nothing after the error
    assert sum(isinstance(e, (c.StreamError, c.Finish)) for e in events) == 1


@pytest.mark.parametrize(
    "stream",
    [b"", b": keep-alive\n\n", RECORDED_STREAM[: RECORDED_STREAM.index(b"event: message_delta")], b"<html>502</html>"],
)
def test_stream_decoder_truncated_is_a_stream_error(stream: bytes) -> None:
    events = decode([stream])
    assert isinstance(events[-1], c.StreamError) and "message_stop" in events[-1].message
    assert sum(isinstance(e, (c.StreamError, c.Finish)) for e in events) == 1


def test_stream_decoder_stop_reason_without_message_stop_finishes() -> None:
    events = decode([RECORDED_STREAM[: RECORDED_STREAM.index(b"event: message_stop")]])
    assert isinstance(events[-1], c.Finish) and events[-1].reason == "tool_calls"
    assert sum(isinstance(e, c.Finish) for e in events) == 1
