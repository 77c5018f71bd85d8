"""The Responses caller protocol against a real Codex request and the official SDK's models and
stream accumulator (strict: it raises on events out of order or items that change identity)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from addons.translate import canonical as c
from addons.translate import openai_chat
from addons.translate import openai_responses as responses
from addons.translate.assemble import Assembler
from addons.translate.protocol import ModelInfo
from addons.translate.sse import SSEParser

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "clients" / "codex-0.169-responses.json"
STREAM_EVENT = TypeAdapter(ResponseStreamEvent)


def codex_body() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())["body"]


# --- decoding ----------------------------------------------------------------------------------


def test_decode_codex_first_request() -> None:
    body = codex_body()
    request = responses.decode_request(body)

    assert request.model == "gpt-5-codex"
    assert request.stream is True and request.include_usage is True
    # Three developer text parts become the system prompt, in order.
    assert request.system == [part["text"] for item in body["input"][:2] for part in item["content"]]
    # The two user messages in a row share one canonical user turn.
    assert request.messages == [
        c.Message("user", [c.Text("<prose, 417 chars>"), c.Text("list the files in this directory")])
    ]
    names = [tool.name for tool in request.tools]
    assert names[:4] == ["exec_command", "write_stdin", "request_user_input", "view_image"]
    assert "multi_agent_v1__spawn_agent" in names  # a namespace's functions, flattened as Codex does
    assert names[-3:] == ["get_goal", "create_goal", "update_goal"]
    assert all(tool.parameters and tool.parameters["type"] == "object" for tool in request.tools)
    assert request.tools[0].description.startswith("Runs a command")
    assert len(names) == 7 + len(body["tools"][4]["tools"])  # web_search dropped
    assert request.tool_choice == c.ToolChoice("auto")
    assert request.thinking == c.ThinkingConfig(effort=None, include_thoughts=True)
    assert request.response_format is None and request.max_tokens is None


def test_decode_multi_turn_with_calls_outputs_and_reasoning() -> None:
    body = {
        "model": "m",
        "instructions": "be brief",
        "input": [
            {"role": "system", "content": "also careful"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "list and count"}]},
            {
                "type": "reasoning",
                "id": "rs_1",
                "summary": [{"type": "summary_text", "text": "plan"}, {"type": "summary_text", "text": "act"}],
                "encrypted_content": "SIG",
            },
            {"type": "function_call", "call_id": "call_1", "name": "ls", "arguments": '{"path":"."}'},
            {"type": "function_call", "call_id": "call_2", "name": "wc", "arguments": ""},
            {"type": "function_call_output", "call_id": "call_1", "output": "a.txt"},
            {
                "type": "function_call_output",
                "call_id": "call_2",
                "output": [
                    {"type": "input_text", "text": "1"},
                    {"type": "input_image", "image_url": "data:image/png;base64,AAAA", "detail": "auto"},
                ],
            },
            {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": None},  # empty: dropped
            {
                "type": "message",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "one file", "annotations": []}, {"type": "refusal", "refusal": "no"}],
            },
            {"role": "user", "content": [{"type": "input_image", "image_url": "https://x.test/cat.PNG?s=1"}]},
        ],
        "max_output_tokens": 100,
        "temperature": 0.5,
        "top_p": 1,
        "reasoning": {"effort": "xhigh", "summary": "detailed"},
        "text": {"format": {"type": "json_schema", "name": "out", "schema": {"type": "object"}, "strict": True}},
        "tool_choice": {"type": "function", "name": "ls"},
        "store": False,
        "include": ["reasoning.encrypted_content"],
        "parallel_tool_calls": False,
        "metadata": {"a": "b"},
        "user": "u",
    }
    request = responses.decode_request(body)

    assert request.system == ["be brief", "also careful"]
    assert request.messages == [
        c.Message("user", [c.Text("list and count")]),
        c.Message(
            "assistant",
            [
                c.Thinking("plan\n\nact", signature="SIG"),
                c.ToolCall("call_1", "ls", {"path": "."}),
                c.ToolCall("call_2", "wc", {}),
            ],
        ),
        c.Message(
            "user",
            [
                c.ToolResult("call_1", "ls", [c.Text("a.txt")]),
                c.ToolResult("call_2", "wc", [c.Text("1"), c.Image("image/png", data="AAAA")]),
            ],
        ),
        c.Message("assistant", [c.Text("one file"), c.Text("no")]),
        c.Message("user", [c.Image("image/png", url="https://x.test/cat.PNG?s=1")]),
    ]
    assert request.max_tokens == 100 and request.temperature == 0.5 and request.top_p == 1
    assert request.thinking == c.ThinkingConfig(effort="high", include_thoughts=True)
    assert request.response_format == c.ResponseFormat("json_schema", schema={"type": "object"}, name="out")
    assert request.tool_choice == c.ToolChoice("tool", "ls")


def test_decode_small_forms() -> None:
    request = responses.decode_request({"input": "hi", "reasoning": {"effort": "none"}}, model="path-model")
    assert request.model == "path-model"
    assert request.messages == [c.Message("user", [c.Text("hi")])]
    assert request.thinking == c.ThinkingConfig(enabled=False, include_thoughts=False)

    request = responses.decode_request(
        {
            "model": "m",
            "input": [{"type": "reasoning", "id": "rs", "summary": [], "content": [{"type": "reasoning_text", "text": "raw"}]}],
            "reasoning": {"effort": "low"},
            "text": {"format": {"type": "json_object"}},
            "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": []},
        }
    )
    assert request.messages == [c.Message("assistant", [c.Thinking("raw")])]
    assert request.thinking == c.ThinkingConfig(effort="low", include_thoughts=False)
    assert request.response_format == c.ResponseFormat("json_object")
    assert request.tool_choice == c.ToolChoice("required")

    request = responses.decode_request(
        {"model": "m", "input": [], "reasoning": {}, "text": {"format": {"type": "text"}}, "tool_choice": {"type": "web_search"}}
    )
    assert request.thinking is None and request.response_format is None and request.tool_choice is None


def test_namespaced_function_call_decodes_to_the_flat_name() -> None:
    body = {
        "model": "m",
        "input": [
            {"type": "function_call", "call_id": "c1", "namespace": "multi_agent_v1", "name": "spawn_agent", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "ok"},
        ],
    }
    request = responses.decode_request(body)
    assert request.messages[0].parts == [c.ToolCall("c1", "multi_agent_v1__spawn_agent", {})]
    assert request.messages[1].parts == [c.ToolResult("c1", "multi_agent_v1__spawn_agent", [c.Text("ok")])]


def test_previous_response_history_is_prepended_and_left_untouched() -> None:
    history = [
        c.Message("user", [c.Text("count files")]),
        c.Message("assistant", [c.Thinking("hm", "SIG"), c.ToolCall("call_9", "count", {"dir": "."})]),
    ]
    saved = [c.Message(m.role, list(m.parts)) for m in history]
    body = {
        "model": "m",
        "previous_response_id": "resp_1",
        "input": [{"type": "function_call_output", "call_id": "call_9", "output": "3"}],
    }
    request = responses.decode_request(body, history=history)
    assert request.messages == [*saved, c.Message("user", [c.ToolResult("call_9", "count", [c.Text("3")])])]

    # A new user turn right after a user-ending history merges into a copy, not the kept message.
    request = responses.decode_request({"model": "m", "input": "more"}, history=saved[:1])
    assert request.messages == [c.Message("user", [c.Text("count files"), c.Text("more")])]
    assert saved[0].parts == [c.Text("count files")]

    # With history, input may be left out.
    assert responses.decode_request({"model": "m"}, history=saved).messages == saved


def test_to_history_keeps_messages_and_the_answer_but_not_the_system_prompt() -> None:
    request = responses.decode_request({"model": "m", "instructions": "sys", "input": "hi"})
    answer = c.Response("resp_1", "m", [c.Thinking("t", "S"), c.ToolCall("call_1", "f", {"a": 1})])
    history = responses.to_history(request, answer)
    assert history == [c.Message("user", [c.Text("hi")]), c.Message("assistant", answer.parts)]
    # And it is what the next request's function_call_output resolves against.
    follow = {"model": "m", "input": [{"type": "function_call_output", "call_id": "call_1", "output": "x"}]}
    assert responses.decode_request(follow, history=history).messages[-1].parts[0].name == "f"
    assert responses.to_history(request, c.Response("r", "m", [])) == request.messages


def _call(call_id: str = "c1", name: str = "f", arguments: Any = "{}") -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": arguments}


BAD_REQUESTS = [
    ([], None),
    ({"input": "x"}, "model"),
    ({"model": 3, "input": "x"}, "model"),
    ({"model": "m"}, "input"),
    ({"model": "m", "input": 3}, "input"),
    ({"model": "m", "input": ["x"]}, "input[0]"),
    ({"model": "m", "input": [{"type": "web_search_call"}]}, "input[0].type"),
    ({"model": "m", "input": [{"content": "no role, no type"}]}, "input[0].type"),
    ({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].type"),
    ({"model": "m", "input": [{"role": "user"}]}, "input[0].content"),
    ({"model": "m", "input": [{"role": "tool", "content": "x"}]}, "input[0].role"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]}, "input[0].content[0].type"),
    ({"model": "m", "input": [{"role": "user", "content": ["text"]}]}, "input[0].content[0].type"),
    ({"model": "m", "input": [{"role": "user", "content": [{"type": "input_text", "text": 1}]}]}, "input[0].content[0].text"),
    (
        {"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file_1"}]}]},
        "input[0].content[0].file_id",
    ),
    (
        {"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x"}]}]},
        "input[0].content[0].image_url",
    ),
    (
        {"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png,AAAA"}]}]},
        "input[0].content[0].image_url",
    ),
    (
        {"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": None}]}]},
        "input[0].content[0].image_url",
    ),
    (
        {"model": "m", "input": [{"role": "developer", "content": [{"type": "input_image", "image_url": "https://x/a.png"}]}]},
        "input[0].content[0]",
    ),
    ({"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
    ({"model": "m", "input": [_call(name="")]}, "input[0].name"),
    ({"model": "m", "input": [_call(arguments="{not json")]}, "input[0].arguments"),
    ({"model": "m", "input": [_call(arguments="[1]")]}, "input[0].arguments"),
    ({"model": "m", "input": [{"type": "function_call_output", "call_id": "nope", "output": "x"}]}, "input[0].call_id"),
    ({"model": "m", "input": [_call(), {"type": "function_call_output", "call_id": "c1"}]}, "input[1].output"),
    ({"model": "m", "input": [{"type": "reasoning", "summary": [{"type": "summary_text"}]}]}, "input[0].summary"),
    ({"model": "m", "input": [{"type": "reasoning", "summary": [], "content": "raw"}]}, "input[0].content"),
    ({"model": "m", "input": "x", "tools": {"type": "function"}}, "tools"),
    ({"model": "m", "input": "x", "tools": [{"type": "function", "parameters": {}}]}, "tools[0].name"),
    ({"model": "m", "input": "x", "tools": [{"type": "function", "name": "f", "parameters": "{}"}]}, "tools[0].parameters"),
    ({"model": "m", "input": "x", "tools": [{"type": "namespace", "tools": []}]}, "tools[0].name"),
    (
        {"model": "m", "input": "x", "tools": [{"type": "namespace", "name": "n", "tools": [{"type": "function"}]}]},
        "tools[0].tools[0].name",
    ),
    ({"model": "m", "input": "x", "tool_choice": "any"}, "tool_choice"),
    ({"model": "m", "input": "x", "tool_choice": {"type": "function"}}, "tool_choice.name"),
    ({"model": "m", "input": "x", "reasoning": "high"}, "reasoning"),
    ({"model": "m", "input": "x", "reasoning": {"effort": "extreme"}}, "reasoning.effort"),
    ({"model": "m", "input": "x", "text": "json"}, "text"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "yaml"}}}, "text.format.type"),
    ({"model": "m", "input": "x", "text": {"format": {"type": "json_schema", "name": "n"}}}, "text.format.schema"),
    ({"model": "m", "input": "x", "temperature": "hot"}, "temperature"),
    ({"model": "m", "input": "x", "max_output_tokens": True}, "max_output_tokens"),
    ({"model": "m", "input": "x", "stream": "yes"}, "stream"),
    ({"model": "m", "input": "x", "instructions": ["a"]}, "instructions"),
]


@pytest.mark.parametrize(("body", "param"), BAD_REQUESTS)
def test_bad_requests_say_where(body: Any, param: str | None) -> None:
    with pytest.raises(c.BadRequest) as raised:
        responses.decode_request(body)
    assert raised.value.param == param
    assert raised.value.status == 400 and raised.value.message


# --- encoding ----------------------------------------------------------------------------------

TOOLS = [
    {"type": "function", "name": "ls", "description": "list", "parameters": {"type": "object"}, "strict": False},
    {
        "type": "namespace",
        "name": "multi_agent_v1",
        "description": "agents",
        "tools": [{"type": "function", "name": "spawn_agent", "parameters": {"type": "object"}}],
    },
    {"type": "web_search", "external_web_access": False},
]


def request_for(**extra: Any) -> c.Request:
    body = {"model": "gpt-5-codex", "input": "hi", "tools": TOOLS, "reasoning": {"summary": "auto"}, **extra}
    return responses.decode_request(body)


def answer(finish: c.FinishReason = "tool_calls") -> c.Response:
    return c.Response(
        id="resp_abc",
        model="gemini-2.5-pro",
        parts=[
            c.Thinking("thinking it over", signature="SIG=="),
            c.Text("Here: "),
            c.ToolCall("call_1", "ls", {"path": ".", "all": True}),
            c.ToolCall("call_2", "multi_agent_v1__spawn_agent", {"task": "count"}),
            c.Image("image/png", data="AAAA"),
        ],
        finish_reason=finish,
        usage=c.Usage(input_tokens=100, output_tokens=40, cached_tokens=60, reasoning_tokens=25),
        created=1_700_000_000,
    )


def test_encode_response_validates_against_the_sdk_model() -> None:
    body = responses.encode_response(answer(), request_for())
    assert "output_text" not in body
    response = Response.model_validate(body)

    assert response.id == "resp_abc" and response.object == "response" and response.status == "completed"
    assert response.created_at == 1_700_000_000 and response.model == "gemini-2.5-pro"
    assert response.output_text == "Here: "
    assert [item.type for item in response.output] == [
        "reasoning", "message", "function_call", "function_call", "image_generation_call"]
    reasoning, message, ls, spawn, drawn = response.output
    assert drawn.status == "completed" and drawn.result == "AAAA"  # a drawn image is an image_generation_call
    assert reasoning.summary[0].text == "thinking it over" and reasoning.encrypted_content == "SIG=="
    assert message.status == "completed" and message.content[0].annotations == []
    assert (ls.call_id, ls.name, json.loads(ls.arguments), ls.namespace) == ("call_1", "ls", {"path": ".", "all": True}, None)
    assert (spawn.namespace, spawn.name) == ("multi_agent_v1", "spawn_agent")
    assert len({item.id for item in response.output}) == 5
    assert response.usage.input_tokens == 100 and response.usage.input_tokens_details.cached_tokens == 60
    assert response.usage.output_tokens_details.reasoning_tokens == 25 and response.usage.total_tokens == 140
    assert [tool.name for tool in response.tools] == ["ls", "spawn_agent"]
    assert response.tool_choice == "auto" and response.reasoning.summary == "auto"


def test_encode_response_incomplete_and_hidden_summaries() -> None:
    request = request_for(
        reasoning={"effort": "high"}, tool_choice={"type": "function", "name": "ls"}, text={"format": {"type": "json_object"}}
    )
    body = responses.encode_response(answer("length"), request)
    response = Response.model_validate(body)
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    # No summary was asked for: the reasoning item keeps its signature but shows no text.
    assert response.output[0].summary == [] and response.output[0].encrypted_content == "SIG=="
    assert response.tool_choice.name == "ls" and response.text.format.type == "json_object"
    assert body["id"] == "resp_abc"
    assert responses.encode_response(c.Response("abc", "m", []), request)["id"] == "resp_abc"


def canonical_stream() -> list[c.Event]:
    """Thinking with a signature, text, two tool calls whose arguments arrive split and
    interleaved, then the finish with usage."""
    return [
        c.BlockStart(0, c.Thinking("")),
        c.ThinkingDelta(0, "thinking "),
        c.ThinkingDelta(0, "it over"),
        c.SignatureDelta(0, "SIG"),
        c.SignatureDelta(0, "=="),
        c.BlockStop(0),
        c.BlockStart(1, c.Text("")),
        c.TextDelta(1, "Here"),
        c.TextDelta(1, ": "),
        c.BlockStop(1),
        c.BlockStart(2, c.ToolCall("call_1", "ls")),
        c.ToolArgsDelta(2, '{"path":'),
        c.BlockStart(3, c.ToolCall("call_2", "multi_agent_v1__spawn_agent")),
        c.ToolArgsDelta(3, '{"task":'),
        c.ToolArgsDelta(2, '".","all":true}'),
        c.BlockStop(2),
        c.ToolArgsDelta(3, '"count"}'),
        c.BlockStop(3),
        c.BlockStart(4, c.Image("image/png", data="AAAA")),
        c.BlockStop(4),
        c.Finish("tool_calls", c.Usage(input_tokens=100, output_tokens=40, cached_tokens=60, reasoning_tokens=25)),
    ]


def parse_stream(data: bytes) -> list[Any]:
    """SSE bytes -> validated SDK event objects, checking the `event:` names and numbering."""
    parser = SSEParser()
    raw = parser.feed(data) + parser.close()
    events = []
    for sse_event in raw:
        payload = json.loads(sse_event.data)
        assert sse_event.event == payload["type"]
        events.append(STREAM_EVENT.validate_python(payload))
    assert [event.sequence_number for event in events] == list(range(len(events)))
    return events


def accumulate(events: list[Any]) -> ResponseStreamState[Any]:
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=openai.omit, text_format=openai.omit)
    for event in events:
        state.handle_event(event)
    return state


def encode_stream(request: c.Request, events: list[c.Event], one_by_one: bool = False) -> bytes:
    encoder = responses.stream_encoder(request, "resp_abc", "gemini-2.5-pro", 1_700_000_000)
    if one_by_one:
        return b"".join(encoder.encode([event]) for event in events)
    return encoder.encode(events)


def test_stream_through_the_sdk_accumulator() -> None:
    request = request_for()
    data = encode_stream(request, canonical_stream())
    events = parse_stream(data)
    types = [event.type for event in events]

    assert types[:2] == ["response.created", "response.in_progress"]
    assert events[0].response.status == "in_progress" and events[0].response.output == []
    assert types[2:8] == [
        "response.output_item.added",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.reasoning_summary_part.done",
    ]
    assert types[-1] == "response.completed"
    assert types.count("response.output_item.added") == types.count("response.output_item.done") == 5
    assert types.count("response.image_generation_call.completed") == 1
    assert types.count("response.function_call_arguments.delta") == 4

    state = accumulate(events)
    final = state._completed_response
    assert final is not None and final.status == "completed"
    assert final.output_text == "Here: "
    calls = [item for item in final.output if item.type == "function_call"]
    assert [(call.call_id, call.name, call.namespace, json.loads(call.arguments)) for call in calls] == [
        ("call_1", "ls", None, {"path": ".", "all": True}),
        ("call_2", "spawn_agent", "multi_agent_v1", {"task": "count"}),
    ]
    assert final.output[0].encrypted_content == "SIG==" and final.output[0].summary[0].text == "thinking it over"
    assert final.usage.total_tokens == 140

    # The streamed answer ends as the same response object as the unstreamed one.
    assembler = Assembler("resp_abc", "gemini-2.5-pro", created=1_700_000_000)
    assembler.extend(canonical_stream())
    completed = json.loads(SSEParser().feed(data)[-1].data)["response"]
    assert completed == responses.encode_response(assembler.response, request)

    # Deltas match what the done events and items say.
    text_deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text_deltas == next(e.text for e in events if e.type == "response.output_text.done")


def test_stream_is_the_same_however_events_are_batched() -> None:
    request = request_for()
    assert encode_stream(request, canonical_stream(), one_by_one=True) == encode_stream(request, canonical_stream())


def test_stream_without_summaries_and_with_an_argumentless_call() -> None:
    request = request_for(reasoning={"effort": "low"})
    events = parse_stream(
        encode_stream(
            request,
            [
                c.BlockStart(0, c.Thinking("")),
                c.ThinkingDelta(0, "hidden"),
                c.SignatureDelta(0, "S"),
                c.BlockStop(0),
                c.BlockStart(1, c.ToolCall("call_1", "ls")),
                c.Finish("tool_calls", c.Usage()),  # closes the open call
            ],
        )
    )
    assert not any(e.type.startswith("response.reasoning_summary") for e in events)
    final = accumulate(events)._completed_response
    assert final is not None
    assert final.output[0].summary == [] and final.output[0].encrypted_content == "S"
    assert final.output[1].arguments == "{}"


def test_stream_length_ends_incomplete() -> None:
    events = parse_stream(
        encode_stream(
            request_for(),
            [c.BlockStart(0, c.Text("")), c.TextDelta(0, "cut"), c.BlockStop(0), c.Finish("length", c.Usage(5, 7))],
        )
    )
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.status == "incomplete" and last.response.incomplete_details.reason == "max_output_tokens"
    assert last.response.output_text == "cut" and last.response.usage.output_tokens == 7
    accumulate(events)  # the accumulator accepts it


@pytest.mark.parametrize(("status", "code"), [(502, "server_error"), (429, "rate_limit_exceeded")])
def test_stream_error_becomes_response_failed(status: int, code: str) -> None:
    encoder = responses.stream_encoder(request_for(), "resp_abc", "m", 0)
    first = encoder.encode([c.BlockStart(0, c.Text("")), c.TextDelta(0, "par"), c.BlockStop(0), c.BlockStart(1, c.Text(""))])
    tail = encoder.encode([c.TextDelta(1, "x"), c.StreamError("upstream went away", status=status)])
    assert encoder.encode([c.Finish("stop", c.Usage())]) == b""
    events = parse_stream(first + tail)
    failed = events[-1]
    assert failed.type == "response.failed"
    assert failed.response.status == "failed"
    assert (failed.response.error.code, failed.response.error.message) == (code, "upstream went away")
    assert failed.response.output_text == "par"  # finished items only
    state = accumulate(events)
    assert state._completed_response is None


def test_redacted_thinking_and_start_signatures_survive_a_round_trip() -> None:
    """Anthropic's redacted thinking arrives whole in its BlockStart; it must come back redacted,
    or Anthropic rejects the next turn's "signature"."""
    request = request_for()
    events = parse_stream(
        encode_stream(
            request,
            [
                c.BlockStart(0, c.Thinking("", "OPAQUE", redacted=True)),
                c.BlockStop(0),
                c.BlockStart(1, c.Thinking("", "SIG-")),
                c.ThinkingDelta(1, "why"),
                c.SignatureDelta(1, "TAIL"),
                c.BlockStop(1),
                c.Finish("stop", c.Usage()),
            ],
        )
    )
    final = accumulate(events)._completed_response
    assert final is not None
    items = [item.to_dict() for item in final.output]
    assert items[0]["summary"] == [] and items[1]["encrypted_content"] == "SIG-TAIL"
    back = responses.decode_request({"model": "m", "input": items})
    assert back.messages == [c.Message("assistant", [c.Thinking("", "OPAQUE", redacted=True), c.Thinking("why", "SIG-TAIL")])]


def sdk_client(request: c.Request, events: list[c.Event]) -> openai.OpenAI:
    """The official client, answered in-process by the encoder (no network)."""

    def answer(http_request: httpx2.Request) -> httpx2.Response:
        if json.loads(http_request.content).get("stream"):
            data = responses.stream_encoder(request, "resp_abc", "gemini-2.5-pro", 1).encode(events)
            return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=data)
        assembler = Assembler("resp_abc", "gemini-2.5-pro", created=1)
        assembler.extend(events)
        return httpx2.Response(200, json=responses.encode_response(assembler.response, request))

    transport = httpx2.MockTransport(answer)
    return openai.OpenAI(api_key="k", base_url="http://gateway.test/v1", http_client=httpx2.Client(transport=transport))


def test_the_official_client_reads_streamed_and_whole_answers() -> None:
    client = sdk_client(request_for(), canonical_stream())
    with client.responses.stream(model="m", input="hi") as stream:
        kinds = [event.type for event in stream]
        streamed = stream.get_final_response()
    whole = client.responses.create(model="m", input="hi")
    assert kinds[-1] == "response.completed"
    seen = []
    for response in (streamed, whole):
        assert response.output_text == "Here: "
        assert [item.type for item in response.output] == [
            "reasoning", "message", "function_call", "function_call", "image_generation_call"]
        seen.append([(i.id, i.namespace, i.name, i.arguments) for i in response.output if i.type == "function_call"])
    assert seen[0] == seen[1]


def test_the_official_client_sees_a_failed_stream() -> None:
    client = sdk_client(request_for(), [c.BlockStart(0, c.Text("")), c.StreamError("upstream went away")])
    with client.responses.stream(model="m", input="hi") as stream:
        kinds = [event.type for event in stream]
        with pytest.raises(RuntimeError, match="response.completed"):
            stream.get_final_response()
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added", "response.content_part.added", "response.failed"]


def test_caller_shares_openai_error_and_model_list_shapes() -> None:
    caller = responses.caller
    assert caller.name == "openai_responses" and caller.stream_content_type == "text/event-stream"
    assert caller.error_body is openai_chat.error_body and caller.encode_model_list is openai_chat.encode_model_list
    assert caller.error_body(429, "slow down", "rate_limit")["error"]["message"] == "slow down"
    models = caller.encode_model_list([ModelInfo("gemini-2.5-pro", created=1)])
    assert models["data"][0]["id"] == "gemini-2.5-pro"
    assert isinstance(caller.stream_encoder(request_for(), "resp_1", "m", 0), responses.StreamEncoder)
