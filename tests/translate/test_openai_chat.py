"""OpenAI chat: caller decode/encode/stream and the `openai` upstream dialect.

Encoded answers are checked with the official SDK: its pydantic types, its stream accumulator
and its client over a mock transport (which raises APIError on an in-stream error object).
"""

from __future__ import annotations

import copy
import json
import random

import httpx2
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from addons.translate import canonical as c
from addons.translate import openai_chat as oc
from addons.translate.assemble import Assembler
from addons.translate.protocol import ModelInfo

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="

# A coding agent's fourth turn: it listed files, read two of them in parallel, and now the user
# follows up with a screenshot. Extra fields are what real clients send and we ignore.
AGENT_BODY = {
    "model": "gpt-4.1",
    "messages": [
        {"role": "developer", "content": "You are a coding agent."},
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Use tools."}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is in this directory?"},
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "high"}},
            ],
        },
        {
            "role": "assistant",
            "content": None,
            "reasoning_content": "I should list the files.",
            "tool_calls": [
                {"id": "call_ls", "type": "function", "function": {"name": "shell", "arguments": '{"cmd": "ls"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "call_ls", "content": "README.md\nsetup.py"},
        {
            "role": "assistant",
            "content": "Reading both.",
            "refusal": None,
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "read", "arguments": '{"path": "README.md"}'}},
                {"id": "call_b", "type": "function", "function": {"name": "read", "arguments": '{"path": "setup.py"}'}},
            ],
        },
        {"role": "tool", "tool_call_id": "call_a", "content": "# Demo"},
        {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "import setuptools"}]},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "and this?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/shot.webp?x=1"}},
            ],
        },
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "shell",
                "description": "Run a command",
                "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]},
                "strict": True,
            },
        },
        {"type": "function", "function": {"name": "read", "parameters": {"type": "object", "properties": {}}}},
    ],
    "tool_choice": {"type": "function", "function": {"name": "read"}},
    "max_completion_tokens": 2048,
    "max_tokens": 99,
    "temperature": 0.2,
    "top_p": 0.9,
    "stop": "###",
    "n": 2,
    "seed": 7,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "response_format": {"type": "json_schema", "json_schema": {"name": "files", "schema": {"type": "object"}}},
    "reasoning_effort": "medium",
    "stream": True,
    "stream_options": {"include_usage": True},
    "user": "u-1",
    "metadata": {"k": "v"},
    "store": False,
    "prompt_cache_key": "abc",
    "parallel_tool_calls": True,
    "logprobs": False,
}


def test_decode_agent_conversation() -> None:
    request = oc.caller.decode_request(copy.deepcopy(AGENT_BODY))
    assert request.model == "gpt-4.1"
    assert request.system == ["You are a coding agent.", "Be brief.", "Use tools."]
    roles = [m.role for m in request.messages]
    assert roles == ["user", "assistant", "user", "assistant", "user", "user"]
    first, call, result, calls, results, follow_up = request.messages
    assert first.parts == [c.Text("what is in this directory?"), c.Image("image/png", data=PNG)]
    assert call.parts == [c.Thinking("I should list the files."), c.ToolCall("call_ls", "shell", {"cmd": "ls"})]
    assert result.parts == [c.ToolResult("call_ls", "shell", [c.Text("README.md\nsetup.py")])]
    assert calls.parts == [
        c.Text("Reading both."),
        c.ToolCall("call_a", "read", {"path": "README.md"}),
        c.ToolCall("call_b", "read", {"path": "setup.py"}),
    ]
    # Consecutive tool messages join one user turn.
    assert results.parts == [
        c.ToolResult("call_a", "read", [c.Text("# Demo")]),
        c.ToolResult("call_b", "read", [c.Text("import setuptools")]),
    ]
    assert follow_up.parts[1] == c.Image("image/webp", url="https://example.com/shot.webp?x=1")
    assert [t.name for t in request.tools] == ["shell", "read"]
    assert request.tools[0].description == "Run a command"
    assert request.tools[0].parameters is not None and request.tools[0].parameters["required"] == ["cmd"]
    assert request.tool_choice == c.ToolChoice("tool", "read")
    assert request.max_tokens == 2048  # max_completion_tokens wins over max_tokens
    assert (request.temperature, request.top_p, request.stop, request.seed) == (0.2, 0.9, ["###"], 7)
    assert (request.presence_penalty, request.frequency_penalty, request.candidate_count) == (0.5, -0.5, 2)
    assert request.response_format == c.ResponseFormat("json_schema", {"type": "object"}, "files")
    assert request.thinking == c.ThinkingConfig(effort="medium")
    assert request.stream and request.include_usage


def test_decode_minimal_defaults() -> None:
    request = oc.caller.decode_request({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert request.messages == [c.Message("user", [c.Text("hi")])]
    assert request.system == [] and request.tools == [] and request.tool_choice is None
    assert not request.stream and not request.include_usage
    assert request.max_tokens is None and request.candidate_count is None and request.stop == []
    assert request.response_format is None and request.thinking is None


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("tool_choice", "auto", c.ToolChoice("auto")),
        ("tool_choice", "none", c.ToolChoice("none")),
        ("tool_choice", "required", c.ToolChoice("required")),
        ("response_format", {"type": "text"}, None),
        ("response_format", {"type": "json_object"}, c.ResponseFormat("json_object")),
        ("reasoning_effort", "none", c.ThinkingConfig(enabled=False)),
        ("reasoning_effort", "xhigh", c.ThinkingConfig(effort="high")),
        ("stop", ["a", "b"], ["a", "b"]),
        ("n", 1, None),
        ("max_tokens", 5, 5),
    ],
)
def test_decode_options(field: str, value: object, expected: object) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], field: value}
    attribute = {"reasoning_effort": "thinking", "n": "candidate_count"}.get(field, field)
    assert getattr(oc.caller.decode_request(body), attribute) == expected


def test_decode_legacy_functions() -> None:
    body = {
        "model": "gpt-3.5-turbo-0613",
        "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": None, "function_call": {"name": "weather", "arguments": '{"city":"Paris"}'}},
            {"role": "function", "name": "weather", "content": "18C"},
            {"role": "user", "content": "thanks"},
        ],
        "functions": [{"name": "weather", "description": "Get weather", "parameters": {"type": "object"}}],
        "function_call": {"name": "weather"},
    }
    request = oc.caller.decode_request(body)
    call = request.messages[1].parts[0]
    assert isinstance(call, c.ToolCall) and (call.name, call.arguments) == ("weather", {"city": "Paris"})
    assert request.messages[2].parts == [c.ToolResult(call.id, "weather", [c.Text("18C")])]
    assert request.tools == [c.Tool("weather", "Get weather", {"type": "object"})]
    assert request.tool_choice == c.ToolChoice("tool", "weather")
    body["function_call"] = "none"
    assert oc.caller.decode_request(body).tool_choice == c.ToolChoice("none")


def _chat(*messages: object, **extra: object) -> dict[str, object]:
    return {"model": "m", "messages": list(messages), **extra}


USER = {"role": "user", "content": "hi"}
CALL = {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ([], None, "JSON object"),
        ({"messages": [USER]}, "model", "model must be a non-empty string"),
        (_chat(), "messages", "non-empty array"),
        ({"model": "m", "messages": "hi"}, "messages", "non-empty array"),
        (_chat("hi"), "messages[0]", "must be an object"),
        (_chat({"role": "robot", "content": "x"}), "messages[0].role", "must be one of system, developer"),
        (_chat(USER, USER, {"role": "user", "content": 5}), "messages[2].content",
         "messages[2].content must be a string or an array of content parts"),
        (_chat({"role": "user", "content": [{"type": "text"}]}), "messages[0].content[0].text", "must be a string"),
        (_chat({"role": "user", "content": [{"type": "video"}]}), "messages[0].content[0]", "text, image_url"),
        (_chat({"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}),
         "messages[0].content[0]", "'input_audio': such content parts are not supported"),
        (_chat({"role": "user", "content": [{"type": "file", "file": {"file_id": "f"}}]}),
         "messages[0].content[0]", "'file': such content parts are not supported"),
        (_chat({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}),
         "messages[0].content[0].image_url.url", "data: URL or an http(s) URL"),
        (_chat({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png,abc"}}]}),
         "messages[0].content[0].image_url.url", "base64 data: URL"),
        (_chat({"role": "user", "content": [{"type": "image_url", "image_url": {}}]}),
         "messages[0].content[0].image_url.url", "must be a string"),
        (_chat({"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}),
         "messages[0].content[0]", "of type text"),
        (_chat({"role": "assistant", "content": 3}), "messages[0].content", "string or an array"),
        (_chat({"role": "assistant", "tool_calls": {}}), "messages[0].tool_calls", "must be an array"),
        (_chat({"role": "assistant", "tool_calls": ["x"]}), "messages[0].tool_calls[0]", "must be an object"),
        (_chat({"role": "assistant", "tool_calls": [{"id": "c", "type": "custom", "custom": {}}]}),
         "messages[0].tool_calls[0].type", "custom tool calls are not supported"),
        (_chat({"role": "assistant", "tool_calls": [{"type": "function", "function": {"name": "f"}}]}),
         "messages[0].tool_calls[0].id", "non-empty string"),
        (_chat({"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]}),
         "messages[0].tool_calls[0].function", "must be an object"),
        (_chat({"role": "assistant", "tool_calls": [{"id": "c", "function": {"arguments": "{}"}}]}),
         "messages[0].tool_calls[0].function.name", "non-empty string"),
        (_chat(USER, {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]}),
         "messages[1].tool_calls[0].function.arguments", "messages[1].tool_calls[0].function.arguments is not valid JSON"),
        (_chat({"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}]}),
         "messages[0].tool_calls[0].function.arguments", "must be a JSON object"),
        (_chat({"role": "assistant", "function_call": {"name": "f", "arguments": "nope"}}),
         "messages[0].function_call.arguments", "not valid JSON"),
        (_chat(USER, CALL, {"role": "tool", "tool_call_id": "call_2", "content": "x"}), "messages[2].tool_call_id",
         "messages[2].tool_call_id 'call_2' does not match any earlier assistant tool call"),
        (_chat(USER, CALL, {"role": "tool", "content": "x"}), "messages[2].tool_call_id", "must be a string"),
        (_chat(USER, CALL, {"role": "tool", "tool_call_id": "call_1", "content": {"a": 1}}), "messages[2].content",
         "string or an array"),
        (_chat(USER, {"role": "function", "name": "f", "content": "x"}), "messages[1].name",
         "does not match any earlier assistant function_call"),
        (_chat(USER, {"role": "function", "content": "x"}), "messages[1].name", "non-empty string"),
        (_chat(USER, tools=[{"type": "custom", "custom": {"name": "x"}}]), "tools[0].type", "only function tools"),
        (_chat(USER, tools={}), "tools", "must be an array"),
        (_chat(USER, tools=[{"type": "function", "function": {"name": ""}}]), "tools[0].function.name", "non-empty"),
        (_chat(USER, tools=[{"type": "function", "function": {"name": "f", "parameters": []}}]),
         "tools[0].function.parameters", "JSON schema object"),
        (_chat(USER, tools=[{"type": "function", "function": {"name": "f", "description": 1}}]),
         "tools[0].function.description", "must be a string"),
        (_chat(USER, functions=[{"description": "x"}]), "functions[0].name", "non-empty"),
        (_chat(USER, tool_choice="any"), "tool_choice", "auto, none, required or a named function"),
        (_chat(USER, tool_choice={"type": "allowed_tools"}), "tool_choice", "named function"),
        (_chat(USER, function_call=["f"]), "function_call", "named function"),
        (_chat(USER, max_tokens="10"), "max_tokens", "integer >= 1"),
        (_chat(USER, max_completion_tokens=0), "max_completion_tokens", "integer >= 1"),
        (_chat(USER, n=True), "n", "integer >= 1"),
        (_chat(USER, temperature="hot"), "temperature", "must be a number"),
        (_chat(USER, top_p=True), "top_p", "must be a number"),
        (_chat(USER, stop=[1]), "stop", "string or an array of strings"),
        (_chat(USER, seed=1.5), "seed", "integer"),
        (_chat(USER, stream="yes"), "stream", "boolean"),
        (_chat(USER, stream_options=True), "stream_options", "must be an object"),
        (_chat(USER, stream_options={"include_usage": 1}), "stream_options.include_usage", "boolean"),
        (_chat(USER, response_format="json"), "response_format", "must be an object"),
        (_chat(USER, response_format={"type": "xml"}), "response_format.type", "text, json_object or json_schema"),
        (_chat(USER, response_format={"type": "json_schema"}), "response_format.json_schema", "must be an object"),
        (_chat(USER, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": 1}}),
         "response_format.json_schema.schema", "must be an object"),
        (_chat(USER, reasoning_effort="extreme"), "reasoning_effort", "one of none, minimal"),
    ],
)
def test_decode_bad_requests(body: object, param: str | None, fragment: str) -> None:
    with pytest.raises(c.BadRequest) as caught:
        oc.caller.decode_request(body)
    assert caught.value.param == param
    assert fragment in caught.value.message
    assert caught.value.status == 400


# --- caller responses -------------------------------------------------------------------------


def _request(**fields: object) -> c.Request:
    return c.Request(model="m", messages=[c.Message("user", [c.Text("hi")])], **fields)  # type: ignore[arg-type]


USAGE = c.Usage(input_tokens=120, output_tokens=45, cached_tokens=100, reasoning_tokens=30)


def test_encode_response_with_tools_and_thinking() -> None:
    response = c.Response(
        id="chatcmpl-1",
        model="gpt-4.1",
        created=1700000000,
        parts=[
            c.Thinking("Let me ", signature="sig"),
            c.Thinking("think."),
            c.Thinking("opaque", redacted=True),
            c.Text("Reading "),
            c.Text("files."),
            c.Image("image/png", data=PNG),
            c.ToolCall("call_1", "read", {"path": "a.py"}),
            c.ToolCall("call_2", "read", {}),
        ],
        finish_reason="tool_calls",
        usage=USAGE,
    )
    body = oc.caller.encode_response(response, _request())
    parsed = ChatCompletion.model_validate(body)
    message = parsed.choices[0].message
    assert message.content == f"Reading files.![image](data:image/png;base64,{PNG})"  # a drawn image, as Markdown
    assert body["choices"][0]["message"]["reasoning_content"] == "Let me think."
    assert [(t.id, t.function.name, json.loads(t.function.arguments)) for t in message.tool_calls or []] == [
        ("call_1", "read", {"path": "a.py"}),
        ("call_2", "read", {}),
    ]
    assert parsed.choices[0].finish_reason == "tool_calls"
    assert parsed.usage is not None and parsed.usage.total_tokens == 165
    assert parsed.usage.prompt_tokens_details and parsed.usage.prompt_tokens_details.cached_tokens == 100
    assert parsed.usage.completion_tokens_details and parsed.usage.completion_tokens_details.reasoning_tokens == 30
    assert (parsed.id, parsed.model, parsed.created, parsed.object) == ("chatcmpl-1", "gpt-4.1", 1700000000, "chat.completion")


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("stop", "stop"), ("length", "length"), ("tool_calls", "tool_calls"), ("content_filter", "content_filter"),
     ("stop_sequence", "stop"), ("error", "stop")],
)
def test_encode_response_finish_reasons(reason: c.FinishReason, expected: str) -> None:
    body = oc.caller.encode_response(c.Response("id", "m", [c.Text("x")], finish_reason=reason), _request())
    assert ChatCompletion.model_validate(body).choices[0].finish_reason == expected


def test_encode_response_empty_and_gemini_style_stop_after_call() -> None:
    body = oc.caller.encode_response(c.Response("id", "m", []), _request())
    message = body["choices"][0]["message"]
    assert message == {"role": "assistant", "content": None}
    body = oc.caller.encode_response(c.Response("id", "m", [c.ToolCall("c", "f")], finish_reason="stop"), _request())
    assert ChatCompletion.model_validate(body).choices[0].finish_reason == "tool_calls"


# --- caller stream ----------------------------------------------------------------------------

STREAM_EVENTS: list[c.Event] = [
    c.BlockStart(0, c.Thinking("")),
    c.ThinkingDelta(0, "The user wants "),
    c.ThinkingDelta(0, "two files."),
    c.SignatureDelta(0, "c2lnbmF0dXJl"),
    c.BlockStop(0),
    c.BlockStart(1, c.Text("")),
    c.TextDelta(1, "Reading "),
    c.TextDelta(1, ""),
    c.TextDelta(1, "both."),
    c.BlockStop(1),
    c.BlockStart(2, c.ToolCall("call_a", "read")),
    c.ToolArgsDelta(2, '{"pa'),
    c.ToolArgsDelta(2, 'th": "README'),
    c.ToolArgsDelta(2, '.md"}'),
    c.BlockStop(2),
    c.BlockStart(3, c.Image("image/png", data=PNG)),
    c.BlockStop(3),
    c.BlockStart(4, c.ToolCall("call_b", "read")),
    c.ToolArgsDelta(4, '{"path":'),
    c.ToolArgsDelta(4, ' "setup.py"}'),
    c.BlockStop(4),
    c.Finish("tool_calls", USAGE),
]


def _data_lines(raw: bytes) -> list[str]:
    text = raw.decode()
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    assert all(event.startswith("data: ") and "\n" not in event for event in events)
    return [event[len("data: "):] for event in events]


def _encode_stream(request: c.Request, events: list[c.Event], batch: int = 1) -> bytes:
    encoder = oc.caller.stream_encoder(request, "chatcmpl-9", "gpt-4.1", 1700000001)
    raw = b"".join(encoder.encode(events[i:i + batch]) for i in range(0, len(events), batch))
    assert encoder.encode([c.TextDelta(1, "late")]) == b""
    return raw


@pytest.mark.parametrize("batch", [1, 3, len(STREAM_EVENTS)])
def test_stream_encoder_round_trip(batch: int) -> None:
    raw = _encode_stream(_request(stream=True, include_usage=True), STREAM_EVENTS, batch)
    lines = _data_lines(raw)
    assert lines[-1] == "[DONE]"
    chunks = [ChatCompletionChunk.model_validate_json(line) for line in lines[:-1]]
    assert all((ch.id, ch.model, ch.created, ch.object) == ("chatcmpl-9", "gpt-4.1", 1700000001, "chat.completion.chunk")
               for ch in chunks)
    first = json.loads(lines[0])
    assert first["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    # usage: null on every chunk but the last, which has no choices.
    assert all("usage" in json.loads(line) and json.loads(line)["usage"] is None for line in lines[:-2])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump(exclude_none=True) == {
        "prompt_tokens": 120, "completion_tokens": 45, "total_tokens": 165,
        "prompt_tokens_details": {"cached_tokens": 100}, "completion_tokens_details": {"reasoning_tokens": 30},
    }
    assert chunks[-2].choices[0].finish_reason == "tool_calls" and json.loads(lines[-3])["choices"][0]["delta"] == {}

    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(chunk)
    final = state.get_final_completion()
    message = final.choices[0].message
    assert message.content == f"Reading both.![image](data:image/png;base64,{PNG})"
    assert [(t.id, t.function.name, json.loads(t.function.arguments)) for t in message.tool_calls or []] == [
        ("call_a", "read", {"path": "README.md"}),
        ("call_b", "read", {"path": "setup.py"}),
    ]
    reasoning = "".join(json.loads(line)["choices"][0]["delta"].get("reasoning_content", "")
                        for line in lines[:-2])
    assert reasoning == "The user wants two files."
    tool_deltas = [d for line in lines[:-2] for d in json.loads(line)["choices"][0]["delta"].get("tool_calls", [])]
    assert [d["index"] for d in tool_deltas] == [0, 0, 0, 0, 1, 1, 1]


def test_stream_encoder_escapes_every_text() -> None:
    texts = ['say "hi"\n', "naïve — 日本語 🎉", "back\\slash\t</script>", "\ud800 lone surrogate", "\x00\x1f"]
    events: list[c.Event] = [c.BlockStart(0, c.Thinking("")), c.ThinkingDelta(0, texts[0]), c.BlockStop(0),
                             c.BlockStart(1, c.Text(""))]
    events += [c.TextDelta(1, text) for text in texts]
    events += [c.BlockStop(1), c.BlockStart(2, c.ToolCall("call_q", "say")), c.ToolArgsDelta(2, json.dumps({"t": texts[1]})),
               c.BlockStop(2), c.Finish("stop", c.Usage())]
    lines = _data_lines(_encode_stream(_request(stream=True), events))
    deltas = [json.loads(line)["choices"][0]["delta"] for line in lines[:-1]]
    assert deltas[1] == {"reasoning_content": texts[0]}
    assert "".join(d.get("content", "") for d in deltas) == "".join(texts)
    arguments = "".join(t["function"]["arguments"] for d in deltas for t in d.get("tool_calls", []))
    assert json.loads(arguments) == {"t": texts[1]}


def test_stream_encoder_without_usage_has_no_usage_key() -> None:
    events: list[c.Event] = [c.BlockStart(0, c.Text("")), c.TextDelta(0, "hi"), c.BlockStop(0), c.Finish("stop", USAGE)]
    lines = _data_lines(_encode_stream(_request(stream=True), events))
    assert lines[-1] == "[DONE]"
    assert all("usage" not in json.loads(line) for line in lines[:-1])
    assert [json.loads(line)["choices"][0]["finish_reason"] for line in lines[:-1]] == [None, None, "stop"]


def _sdk_client(raw: bytes) -> openai.OpenAI:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=raw)

    return openai.OpenAI(api_key="k", base_url="http://gateway/v1", max_retries=0,
                         http_client=httpx2.Client(transport=httpx2.MockTransport(handler)))


def test_stream_through_the_sdk_client() -> None:
    raw = _encode_stream(_request(stream=True, include_usage=True), STREAM_EVENTS)
    client = _sdk_client(raw)
    with client.chat.completions.stream(model="gpt-4.1", messages=[{"role": "user", "content": "hi"}]) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == f"Reading both.![image](data:image/png;base64,{PNG})"
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage is not None and final.usage.completion_tokens == 45


def test_stream_error_raises_api_error_in_the_sdk() -> None:
    events: list[c.Event] = [c.BlockStart(0, c.Text("")), c.TextDelta(0, "partial"),
                             c.StreamError("upstream dropped the connection", 502, "upstream_error")]
    raw = _encode_stream(_request(stream=True), events)
    lines = _data_lines(raw)
    assert lines[-1] == "[DONE]"
    assert json.loads(lines[-2]) == {"error": {"message": "upstream dropped the connection", "type": "api_error",
                                               "param": None, "code": "upstream_error"}}
    stream = _sdk_client(raw).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}],
                                                      stream=True)
    seen = []
    with pytest.raises(openai.APIError, match="upstream dropped the connection"):
        for chunk in stream:
            seen.append(chunk.choices[0].delta.content)
    assert seen == ["", "partial"]


# --- errors and model lists -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind", "type_", "code"),
    [
        (400, None, "invalid_request_error", None),
        (401, None, "authentication_error", "invalid_api_key"),
        (403, None, "permission_error", None),
        (404, None, "invalid_request_error", "model_not_found"),
        (429, None, "rate_limit_error", "rate_limit_exceeded"),
        (429, "insufficient_quota", "insufficient_quota", "insufficient_quota"),
        (500, None, "api_error", "server_error"),
        (503, None, "api_error", "service_unavailable"),
        (599, None, "api_error", "server_error"),
        (418, None, "invalid_request_error", None),
        (503, "rate_limit", "rate_limit_error", "rate_limit_exceeded"),
        (400, "auth", "authentication_error", "invalid_api_key"),
        (502, "upstream_error", "api_error", "upstream_error"),
    ],
)
def test_error_body(status: int, kind: str | None, type_: str, code: str | None) -> None:
    assert oc.caller.error_body(status, "nope", kind) == {
        "error": {"message": "nope", "type": type_, "param": None, "code": code}
    }


def test_model_list() -> None:
    body = oc.caller.encode_model_list([
        ModelInfo("gemini-2.5-pro", created=5), ModelInfo("gpt-4.1", owned_by="openai"),
        ModelInfo("gemini-3.1-flash-image", kind="image"), ModelInfo("gemini-embedding-001", kind="embedding"),
    ])
    assert body == {
        "object": "list",
        "data": [
            {"id": "gemini-2.5-pro", "object": "model", "created": 5, "owned_by": "switchyard", "mode": "chat"},
            {"id": "gpt-4.1", "object": "model", "created": 0, "owned_by": "openai", "mode": "chat"},
            {"id": "gemini-3.1-flash-image", "object": "model", "created": 0, "owned_by": "switchyard",
             "mode": "image_generation"},
            {"id": "gemini-embedding-001", "object": "model", "created": 0, "owned_by": "switchyard", "mode": "embedding"},
        ],
    }
    from openai.types import Model

    assert [Model.model_validate(m).id for m in body["data"]][:2] == ["gemini-2.5-pro", "gpt-4.1"]


# --- upstream: requests -----------------------------------------------------------------------


def test_upstream_encode_request_from_a_chat_body() -> None:
    request = oc.caller.decode_request(copy.deepcopy(AGENT_BODY))
    body = oc.upstream.encode_request(request, "upstream-model")
    assert body["model"] == "upstream-model"
    messages = body["messages"]
    assert [m["role"] for m in messages] == [
        "system", "system", "system", "user", "assistant", "tool", "assistant", "tool", "tool", "user",
    ]
    assert messages[3]["content"][1] == {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    # Thinking is dropped; a call-only assistant turn has null content.
    assert messages[4] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_ls", "type": "function", "function": {"name": "shell", "arguments": '{"cmd":"ls"}'}}],
    }
    assert messages[5] == {"role": "tool", "tool_call_id": "call_ls", "content": "README.md\nsetup.py"}
    assert messages[6]["content"] == "Reading both." and len(messages[6]["tool_calls"]) == 2
    assert messages[9]["content"][1] == {"type": "image_url", "image_url": {"url": "https://example.com/shot.webp?x=1"}}
    assert body["tools"][0] == {
        "type": "function",
        "function": {"name": "shell", "description": "Run a command", "parameters": AGENT_BODY["tools"][0]["function"]["parameters"]},  # type: ignore[index]
    }
    assert body["tool_choice"] == {"type": "function", "function": {"name": "read"}}
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "files", "schema": {"type": "object"}}}
    assert (body["max_tokens"], body["temperature"], body["top_p"], body["stop"], body["n"], body["seed"]) == (
        2048, 0.2, 0.9, ["###"], 2, 7)
    assert (body["presence_penalty"], body["frequency_penalty"], body["reasoning_effort"]) == (0.5, -0.5, "medium")
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert "max_completion_tokens" not in body


def test_upstream_encode_request_from_canonical_parts() -> None:
    # What an Anthropic or Gemini caller produces: results mixed with text, images in results.
    request = c.Request(
        model="m",
        system=["sys"],
        messages=[
            c.Message("user", [c.Text("hi")]),
            c.Message("assistant", [c.Thinking("hmm", signature="s"), c.ToolCall("t1", "shot", {"x": 1})]),
            c.Message("user", [
                c.ToolResult("t1", "shot", [c.Text("taken"), c.Image("image/png", data=PNG)]),
                c.Text("what do you see?"),
            ]),
            c.Message("assistant", [c.Thinking("only thoughts")]),
        ],
        tools=[c.Tool("shot")],
        tool_choice=c.ToolChoice("required"),
        response_format=c.ResponseFormat("json_object"),
        thinking=c.ThinkingConfig(budget_tokens=1024),
    )
    body = oc.upstream.encode_request(request, "m2")
    assert body["messages"] == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "shot", "arguments": '{"x":1}'}}]},
        {"role": "tool", "tool_call_id": "t1", "content": "taken\n[image]"},
        {"role": "user", "content": "what do you see?"},
        {"role": "assistant", "content": ""},
    ]
    assert body["tools"] == [{"type": "function", "function": {"name": "shot", "description": ""}}]
    assert body["tool_choice"] == "required" and body["response_format"] == {"type": "json_object"}
    assert "reasoning_effort" not in body and "stream" not in body and "max_tokens" not in body


# --- upstream: answers ------------------------------------------------------------------------

UPSTREAM_ANSWER = {
    "id": "chatcmpl-abc",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "deepseek-reasoner",
    "system_fingerprint": "fp_1",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Reading it.",
                "reasoning_content": "Need the file.",
                "refusal": None,
                "tool_calls": [
                    {"id": "call_x", "type": "function", "function": {"name": "read", "arguments": '{"path":"a"}'}},
                    {"id": "call_y", "type": "function", "function": {"name": "list", "arguments": ""}},
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 50,
        "completion_tokens": 20,
        "total_tokens": 70,
        "prompt_tokens_details": {"cached_tokens": 32, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 12},
    },
}


def test_upstream_decode_response() -> None:
    response = oc.upstream.decode_response(copy.deepcopy(UPSTREAM_ANSWER))
    assert response.parts == [
        c.Thinking("Need the file."),
        c.Text("Reading it."),
        c.ToolCall("call_x", "read", {"path": "a"}),
        c.ToolCall("call_y", "list", {}),
    ]
    assert (response.id, response.model, response.created, response.finish_reason) == (
        "chatcmpl-abc", "deepseek-reasoner", 1741569952, "tool_calls")
    assert response.usage == c.Usage(50, 20, 32, 12)


def test_upstream_decode_response_variants() -> None:
    body = {
        "id": "x", "model": "m",
        "choices": [{"message": {"content": [{"type": "text", "text": "a"}], "reasoning": "r"}, "finish_reason": "eos"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "prompt_cache_hit_tokens": 2,
                  "prompt_tokens_details": None, "completion_tokens_details": None},
    }
    response = oc.upstream.decode_response(body)
    assert response.parts == [c.Thinking("r"), c.Text("a")]
    assert response.finish_reason == "stop" and response.usage == c.Usage(3, 1, 2, 0)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ([], "not a chat.completion"),
        ({"choices": []}, "not a chat.completion"),
        ({"object": "list", "data": []}, "not a chat.completion"),
        ({"error": {"message": "quota"}}, "quota"),
        ({"choices": [{"message": {"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{x"}}]}}]},
         "not valid JSON"),
    ],
)
def test_upstream_decode_bad_answers(body: object, fragment: str) -> None:
    with pytest.raises(c.BadUpstreamAnswer, match=fragment):
        oc.upstream.decode_response(body)


# --- upstream: streams ------------------------------------------------------------------------


def _chunk(delta: dict[str, object] | None = None, finish: str | None = None, usage: object = None,
           choices: bool = True) -> bytes:
    body: dict[str, object] = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1741569952,
                               "model": "gpt-4.1-2025-04-14", "system_fingerprint": "fp_1"}
    body["choices"] = [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}] if choices else []
    body["usage"] = usage
    return b"data: " + json.dumps(body).encode() + b"\n\n"


def _tool(index: int, arguments: str, call_id: str | None = None, name: str | None = None) -> bytes:
    call: dict[str, object] = {"index": index, "function": {"arguments": arguments}}
    if call_id:
        call.update(id=call_id, type="function")
        call["function"] = {"name": name, "arguments": arguments}
    return _chunk({"tool_calls": [call]})


RECORDED_STREAM = b"".join([
    b": keep-alive\n\n",
    _chunk({"role": "assistant", "content": "", "refusal": None}),
    _chunk({"reasoning_content": "Two files "}),
    _chunk({"reasoning_content": "to read."}),
    _chunk({"content": "Reading "}),
    _chunk({"content": "both."}),
    _tool(0, "", "call_a", "read"),
    *(_tool(0, piece) for piece in ['{"', "path", '":"', "README", ".md", '"}']),
    _tool(1, "", "call_b", "read"),
    *(_tool(1, piece) for piece in ['{"path"', ':"setup', '.py"}']),
    _chunk(finish="tool_calls"),
    _chunk(choices=False, usage={"prompt_tokens": 80, "completion_tokens": 33, "total_tokens": 113,
                                 "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
                                 "completion_tokens_details": {"reasoning_tokens": 9}}),
    b"data: [DONE]\n\n",
])


def _decode(raw: bytes, cuts: list[int]) -> list[c.Event]:
    decoder = oc.upstream.stream_decoder()
    events: list[c.Event] = []
    for start, end in zip([0, *cuts], [*cuts, len(raw)], strict=True):
        events += decoder.feed(raw[start:end])
    events += decoder.close()
    return events


def test_stream_decoder_recorded_stream() -> None:
    events = _decode(RECORDED_STREAM, [])
    assert events[:4] == [
        c.BlockStart(0, c.Thinking("")), c.ThinkingDelta(0, "Two files "), c.ThinkingDelta(0, "to read."), c.BlockStop(0)
    ]
    assert events[4:8] == [c.BlockStart(1, c.Text("")), c.TextDelta(1, "Reading "), c.TextDelta(1, "both."), c.BlockStop(1)]
    assert events[8] == c.BlockStart(2, c.ToolCall("call_a", "read"))
    assert sum(isinstance(e, c.ToolArgsDelta) for e in events) == 9  # empty fragments are dropped
    assert events[-1] == c.Finish("tool_calls", c.Usage(80, 33, 64, 9))
    assert sum(isinstance(e, c.Finish | c.StreamError) for e in events) == 1

    assembler = Assembler("id", "m")
    assembler.extend(events)
    assert assembler.finished and assembler.error is None
    assert assembler.response.parts == [
        c.Thinking("Two files to read."),
        c.Text("Reading both."),
        c.ToolCall("call_a", "read", {"path": "README.md"}),
        c.ToolCall("call_b", "read", {"path": "setup.py"}),
    ]


def test_stream_decoder_is_split_independent() -> None:
    whole = _decode(RECORDED_STREAM, [])
    assert _decode(RECORDED_STREAM, list(range(1, len(RECORDED_STREAM)))) == whole
    crlf = RECORDED_STREAM.replace(b"\n", b"\r\n")
    assert _decode(crlf, list(range(1, len(crlf)))) == whole
    rng = random.Random(1234)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(RECORDED_STREAM)), rng.randint(1, 40)))
        assert _decode(RECORDED_STREAM, cuts) == whole


def test_stream_decoder_then_caller_encoder_through_the_sdk() -> None:
    events = _decode(RECORDED_STREAM, [])
    raw = _encode_stream(_request(stream=True, include_usage=True), events)
    with _sdk_client(raw).chat.completions.stream(model="m", messages=[{"role": "user", "content": "x"}]) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls or []
    assert [json.loads(t.function.arguments) for t in calls] == [{"path": "README.md"}, {"path": "setup.py"}]
    assert final.usage is not None and final.usage.prompt_tokens == 80


def test_stream_decoder_finish_without_done_and_usage_in_finish_chunk() -> None:
    raw = _chunk({"content": "hi"}) + _chunk(finish="length", usage={"prompt_tokens": 1, "completion_tokens": 2})
    events = _decode(raw, [])
    assert events == [c.BlockStart(0, c.Text("")), c.TextDelta(0, "hi"), c.BlockStop(0), c.Finish("length", c.Usage(1, 2))]


def test_stream_decoder_ignores_everything_after_done() -> None:
    decoder = oc.upstream.stream_decoder()
    events = decoder.feed(_chunk({"content": "hi"}) + b"data: [DONE]\n\n" + b"data: garbage\n\n")
    assert events[-1] == c.Finish("stop", c.Usage())
    assert decoder.feed(b"data: more garbage\n\n") == [] and decoder.close() == []


def test_stream_decoder_tool_calls_without_index() -> None:
    # Gemini's OpenAI-compatible endpoint has sent whole calls without `index`.
    raw = b"".join([
        _chunk({"tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": '{"x":1}'}},
                               {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}}]}),
        _chunk(finish="stop"), b"data: [DONE]\n\n",
    ])
    assembler = Assembler("id", "m")
    assembler.extend(_decode(raw, []))
    assert assembler.response.parts == [c.ToolCall("a", "f", {"x": 1}), c.ToolCall("b", "g", {})]
    assert assembler.response.finish_reason == "stop"


def test_stream_decoder_reasoning_key_and_interleaved_blocks() -> None:
    raw = _chunk({"reasoning": "a"}) + _chunk({"content": "b"}) + _chunk({"reasoning": "c"}) + _chunk(finish="stop")
    events = _decode(raw, [])
    starts = [e.part for e in events if isinstance(e, c.BlockStart)]
    assert starts == [c.Thinking(""), c.Text(""), c.Thinking("")]
    assert [e.index for e in events if isinstance(e, c.BlockStop)] == [0, 1, 2]


@pytest.mark.parametrize(
    ("raw", "fragment", "status", "kind"),
    [
        (b"", "without an answer", 502, "upstream_error"),
        (b"data: [DONE]\n\n", "without an answer", 502, "upstream_error"),
        (_chunk({"content": "cut off"}), "without a finish_reason", 502, "upstream_error"),
        (_chunk({"content": "hi"}) + b"data: <html>502 Bad Gateway</html>\n\n", "malformed", 502, "upstream_error"),
        (b"data: [1, 2]\n\n", "malformed", 502, "upstream_error"),
        (b'data: {"choices": "x"}\n\n', "malformed", 502, "upstream_error"),
        (b'data: {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": "f"}]}}]}\n\n', "malformed", 502,
         "upstream_error"),
        (_chunk({"content": "hi"}) + b'data: {"error": {"message": "Rate limit reached", "type": "rate_limit_error", '
         b'"code": 429}}\n\n', "Rate limit reached", 429, "rate_limit_error"),
        (b'data: {"error": {"message": "overloaded", "type": "server_error", "code": "overloaded"}}\n\n',
         "overloaded", 502, "server_error"),
        (b'data: {"error": "boom"}\n\n', "boom", 502, "upstream_error"),
    ],
)
def test_stream_decoder_failures(raw: bytes, fragment: str, status: int, kind: str) -> None:
    decoder = oc.upstream.stream_decoder()
    events = decoder.feed(raw)
    if events and isinstance(events[-1], c.StreamError):
        assert decoder.feed(_chunk({"content": "after"})) == []  # nothing after the error
    events += decoder.close()
    terminal = [e for e in events if isinstance(e, c.Finish | c.StreamError)]
    assert len(terminal) == 1 and isinstance(terminal[0], c.StreamError)
    assert terminal[0] is events[-1]
    assert fragment in terminal[0].message
    assert (terminal[0].status, terminal[0].kind) == (status, kind)
    assert decoder.close() == []
