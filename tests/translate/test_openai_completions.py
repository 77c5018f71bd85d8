"""OpenAI legacy completions caller: decode, encode and stream, checked with the SDK's types."""

from __future__ import annotations

import json

import httpx2
import openai
import pytest
from openai.types import Completion

from addons.translate import canonical as c
from addons.translate import openai_chat, openai_completions
from addons.translate.protocol import ModelInfo

caller = openai_completions.caller

BODY = {
    "model": "gpt-3.5-turbo-instruct",
    "prompt": "def fib(n):",
    "max_tokens": 64,
    "temperature": 0,
    "top_p": 1,
    "n": 1,
    "stop": ["\n\n", "def "],
    "stream": True,
    "stream_options": {"include_usage": True},
    "echo": False,
    "logprobs": None,
    "suffix": None,
    "best_of": 1,
    "presence_penalty": 0,
    "frequency_penalty": 0.1,
    "seed": 3,
    "user": "someone",
}


def test_decode_request() -> None:
    request = caller.decode_request(dict(BODY))
    assert request.model == "gpt-3.5-turbo-instruct"
    assert request.messages == [c.Message("user", [c.Text("def fib(n):")])]
    assert request.system == [] and request.tools == []
    assert (request.max_tokens, request.temperature, request.top_p, request.stop) == (64, 0, 1, ["\n\n", "def "])
    assert (request.seed, request.presence_penalty, request.frequency_penalty) == (3, 0, 0.1)
    assert request.stream and request.include_usage and request.candidate_count is None


def test_decode_defaults_and_one_prompt_list() -> None:
    request = caller.decode_request({"model": "m", "prompt": ["Say hi"], "n": 3, "stop": "."})
    assert request.messages == [c.Message("user", [c.Text("Say hi")])]
    assert request.max_tokens == 16  # OpenAI's default for this endpoint
    assert request.candidate_count == 3 and request.stop == ["."]
    assert not request.stream and not request.include_usage


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [
        ("text", None, "JSON object"),
        ({"prompt": "x"}, "model", "non-empty string"),
        ({"model": "m"}, "prompt", "a string or an array of one string"),
        ({"model": "m", "prompt": []}, "prompt", "a string or an array of one string"),
        ({"model": "m", "prompt": {"text": "x"}}, "prompt", "a string or an array of one string"),
        ({"model": "m", "prompt": ["a", "b"]}, "prompt", "several prompts in one request are not supported"),
        ({"model": "m", "prompt": [1212, 318]}, "prompt", "token-array prompts are not supported"),
        ({"model": "m", "prompt": [[1212, 318]]}, "prompt", "token-array prompts are not supported"),
        ({"model": "m", "prompt": [[1], [2]]}, "prompt", "token-array prompts are not supported"),
        ({"model": "m", "prompt": "x", "suffix": "end"}, "suffix", "suffix is not supported"),
        ({"model": "m", "prompt": "x", "echo": True}, "echo", "echo is not supported"),
        ({"model": "m", "prompt": "x", "best_of": 3}, "best_of", "best_of is not supported"),
        ({"model": "m", "prompt": "x", "logprobs": 5}, "logprobs", "logprobs is not supported"),
        ({"model": "m", "prompt": "x", "max_tokens": -1}, "max_tokens", "integer >= 1"),
        ({"model": "m", "prompt": "x", "temperature": "0"}, "temperature", "must be a number"),
        ({"model": "m", "prompt": "x", "stop": 7}, "stop", "string or an array of strings"),
        ({"model": "m", "prompt": "x", "stream_options": []}, "stream_options", "must be an object"),
    ],
)
def test_decode_bad_requests(body: object, param: str | None, fragment: str) -> None:
    with pytest.raises(c.BadRequest) as caught:
        caller.decode_request(body)
    assert caught.value.param == param
    assert fragment in caught.value.message


USAGE = c.Usage(input_tokens=5, output_tokens=7, cached_tokens=0, reasoning_tokens=2)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [("stop", "stop"), ("length", "length"), ("content_filter", "content_filter"), ("tool_calls", "stop"),
     ("stop_sequence", "stop"), ("error", "stop")],
)
def test_encode_response(reason: c.FinishReason, expected: str) -> None:
    response = c.Response(
        id="cmpl-1", model="gpt-3.5-turbo-instruct", created=1700000000, finish_reason=reason, usage=USAGE,
        parts=[c.Thinking("hidden"), c.Text("\n    if n < 2:"), c.Text("\n        return n")],
    )
    request = caller.decode_request({"model": "m", "prompt": "def fib(n):"})
    body = caller.encode_response(response, request)
    parsed = Completion.model_validate(body)
    assert (parsed.id, parsed.object, parsed.created, parsed.model) == (
        "cmpl-1", "text_completion", 1700000000, "gpt-3.5-turbo-instruct")
    assert parsed.choices[0].text == "\n    if n < 2:\n        return n"
    assert parsed.choices[0].finish_reason == expected and parsed.choices[0].logprobs is None
    assert parsed.usage is not None and (parsed.usage.prompt_tokens, parsed.usage.total_tokens) == (5, 12)


EVENTS: list[c.Event] = [
    c.BlockStart(0, c.Thinking("")),
    c.ThinkingDelta(0, "hidden"),
    c.BlockStop(0),
    c.BlockStart(1, c.Text("")),
    c.TextDelta(1, "\n    if n < 2:"),
    c.TextDelta(1, ""),
    c.TextDelta(1, "\n        return n"),
    c.BlockStop(1),
    c.Finish("length", USAGE),
]


def _encode(include_usage: bool, events: list[c.Event]) -> list[str]:
    request = caller.decode_request({"model": "m", "prompt": "x", "stream": True,
                                     "stream_options": {"include_usage": include_usage}})
    encoder = caller.stream_encoder(request, "cmpl-9", "gpt-3.5-turbo-instruct", 1700000001)
    raw = b"".join(encoder.encode([event]) for event in events)
    assert encoder.encode([c.TextDelta(1, "late")]) == b""
    text = raw.decode()
    assert text.endswith("\n\n")
    return [event.removeprefix("data: ") for event in text[:-2].split("\n\n")]


def test_stream_encoder_with_usage() -> None:
    lines = _encode(True, EVENTS)
    assert lines[-1] == "[DONE]"
    # The SDK types finish_reason as required although the API streams null until the end, so
    # the open chunks are checked with that one field filled in.
    for line in lines[:-3]:
        assert json.loads(line)["choices"][0]["finish_reason"] is None
    chunks = [Completion.model_validate_json(line.replace('"finish_reason":null', '"finish_reason":"stop"'))
              for line in lines[:-3]]
    chunks += [Completion.model_validate_json(line) for line in lines[-3:-1]]
    assert all((ch.id, ch.object, ch.model, ch.created) == ("cmpl-9", "text_completion", "gpt-3.5-turbo-instruct",
                                                            1700000001) for ch in chunks)
    assert "".join(ch.choices[0].text for ch in chunks[:-1]) == "\n    if n < 2:\n        return n"
    assert chunks[-2].choices[0].finish_reason == "length" and chunks[-2].choices[0].text == ""
    assert all(json.loads(line)["usage"] is None for line in lines[:-2])
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 7


def test_stream_encoder_without_usage() -> None:
    lines = _encode(False, EVENTS)
    assert lines[-1] == "[DONE]" and len(lines) == 4
    assert all("usage" not in json.loads(line) for line in lines[:-1])


def test_stream_through_the_sdk_and_error() -> None:
    def client(lines: list[str]) -> openai.OpenAI:
        raw = "".join(f"data: {line}\n\n" for line in lines).encode()
        transport = httpx2.MockTransport(
            lambda request: httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=raw))
        return openai.OpenAI(api_key="k", base_url="http://gateway/v1", http_client=httpx2.Client(transport=transport))

    stream = client(_encode(True, EVENTS)).completions.create(model="m", prompt="x", stream=True)
    chunks = list(stream)
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == "\n    if n < 2:\n        return n"

    failing = [c.BlockStart(0, c.Text("")), c.TextDelta(0, "par"), c.StreamError("upstream went away", 503)]
    lines = _encode(False, failing)
    assert json.loads(lines[-2]) == {
        "error": {"message": "upstream went away", "type": "api_error", "param": None, "code": "upstream_error"}
    }
    with pytest.raises(openai.APIError, match="upstream went away"):
        list(client(lines).completions.create(model="m", prompt="x", stream=True))


def test_errors_and_model_list_are_openai_chats() -> None:
    assert caller.error_body is openai_chat.error_body or caller.error_body == openai_chat.error_body
    assert caller.error_body(429, "slow down", "insufficient_quota") == openai_chat.caller.error_body(
        429, "slow down", "insufficient_quota")
    models = [ModelInfo("m1")]
    assert caller.encode_model_list(models) == openai_chat.encode_model_list(models)
    assert caller.name == "openai_completions" and caller.stream_content_type == "text/event-stream"
