"""Every caller protocol x every upstream dialect, end to end, through the official SDKs.

One real gateway with one account per upstream dialect (antigravity = a Google account, gemini /
openai / anthropic = an API key), each the only one to serve its models, in front of the
simulated upstream: the model a client asks for picks the dialect. One conversation driver per
caller protocol runs unchanged against all of them, handing the SDK's own answer objects back as
the next turn's history, as real clients do: what a translator drops or mangles (signatures,
call ids, reasoning items) shows as a refusal of the strict simulated upstream. Real clients'
first requests (tests/fixtures/clients, copied from the shared capture) are replayed too.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx
import httpx2
import openai
import pytest
from conftest import Gateway, prepare_gateway
from google.genai import errors as genai_errors
from google.genai import types

THOUGHT = "thinking about it"  # what the simulated model thinks when asked to
CALL_PROMPT = 'weather please [[call get_weather {"city": "Paris"}]]'
RESULT = {"temp_c": 18}
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(60))
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "a city name"}},
    "required": ["city"],
    "additionalProperties": False,  # Gemini refuses this keyword: the translator must clean it
}
# The same in Gemini's own OpenAPI form, as google-genai users write it (Gemini CLI's JSON Schema
# form, parametersJsonSchema, comes with its fixture below).
GEMINI_SCHEMA = types.Schema(
    type=types.Type.OBJECT,
    properties={"city": types.Schema(type=types.Type.STRING, description="a city name")},
    required=["city"],
)


@dataclass(frozen=True)
class Dialect:
    kind: str  # the kind of account that speaks it
    models: tuple[str, ...]  # what that account alone serves: a plain model, then signature-checking ones
    thinks: bool  # the simulated upstream can show thoughts in this dialect


DIALECTS: dict[str, Dialect] = {
    "antigravity": Dialect("google", ("gemini-2.5-flash", "gemini-3-flash", "claude-opus-4-6-thinking"), True),
    "gemini": Dialect("gemini", ("gemini-2.5-pro", "gemini-3-pro-preview"), True),
    "openai": Dialect("openai", ("gpt-4o",), False),
    "anthropic": Dialect("anthropic", ("claude-opus-4-5",), True),
}
# (dialect, model): the plain model of each dialect, and the ones that think and check signatures
# (or, for Anthropic, its one model), which stand for the plain ones where thinking is tested.
PLAIN_TARGETS = [(name, d.models[0]) for name, d in DIALECTS.items()]
THINKING_TARGETS = [
    (name, model) for name, d in DIALECTS.items() if d.thinks for model in (d.models[1:] or d.models)
]


def target_id(target: tuple[str, str]) -> str:
    return f"{target[0]}:{target[1]}"


def plain(dialect: str) -> tuple[str, str]:
    return dialect, DIALECTS[dialect].models[0]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


def listed_models(gateway: Gateway) -> set[str]:
    response = httpx.get(f"{gateway.url}/v1/models", headers=gateway.auth(), timeout=10)
    return {m["id"] for m in response.json()["data"]}


def new_gateway(sim, tmp_path_factory) -> Gateway:
    return prepare_gateway(sim, tmp_path_factory.mktemp("matrix"))


def add_account(gateway: Gateway, kind: str, models: tuple[str, ...]) -> str:
    """An account that serves exactly `models`: a Google account's own list (from its quota,
    once the gateway has read it), or a key's `--models`."""
    if kind == "google":
        return gateway.add_google(models={model: {} for model in models})
    return gateway.add_key(kind, "--models", ",".join(models))


class Clients:
    """The three SDKs' clients for one gateway, made once (each costs a TLS context, even for
    plain HTTP), and the x-switchyard-* headers of the last answer any of them got."""

    def __init__(self, gateway: Gateway) -> None:
        from google import genai

        self.served: dict[str, str] = {}
        hooks = {"response": [self._answered]}
        self._http = [httpx.Client(timeout=30, event_hooks=hooks), httpx2.Client(timeout=30, event_hooks=hooks)]
        self.openai = gateway.openai(http_client=self._http[0])
        self.anthropic = gateway.anthropic(http_client=self._http[1])  # the anthropic SDK's own fork of httpx
        options = types.HttpOptions(base_url=gateway.url, timeout=30_000, httpx_client=self._http[0])
        self.genai = genai.Client(api_key=gateway.api_key, http_options=options)

    def _answered(self, response: Any) -> None:
        self.served = {k: v for k, v in response.headers.items() if k.startswith("x-switchyard-")}

    def close(self) -> None:
        for client in self._http:
            client.close()


@dataclass
class Matrix:
    gateway: Gateway
    accounts: dict[str, str]  # dialect -> the id of its account
    clients: Clients

    def converse(self, target: tuple[str, str], protocol: str, **options: Any) -> Conversation:
        return PROTOCOLS[protocol](self.clients, target[1], **options)


@pytest.fixture(scope="module")
def matrix(sim, tmp_path_factory) -> Iterator[Matrix]:
    """One gateway, one account per dialect; the model asked for picks the dialect."""
    gateway = new_gateway(sim, tmp_path_factory)
    accounts = {name: add_account(gateway, d.kind, d.models) for name, d in DIALECTS.items()}
    gateway.start()
    # Until the Google account's quota is read, its default globs would claim gemini-2.5-pro too.
    google_only = DIALECTS["antigravity"].models[1]
    wait_until(lambda: google_only in listed_models(gateway), "the Google account's model list")
    clients = Clients(gateway)
    yield Matrix(gateway, accounts, clients)
    clients.close()
    gateway.stop()


# --- one conversation driver per caller protocol ------------------------------------------------


@dataclass
class Turn:
    """One answer, as the caller's SDK showed it."""

    text: str
    thoughts: list[str]  # visible thinking
    signatures: int  # thinking / call signatures the caller got to send back
    calls: list[tuple[str, dict[str, Any]]]
    finish: str | None
    served_by: dict[str, str] = field(default_factory=dict)  # x-switchyard-* headers


class Conversation:
    """A multi-turn conversation in one caller protocol, kept the way its SDK's users keep it."""

    protocol = ""
    images = True

    def __init__(self, clients: Clients, model: str, *, stream: bool, tools: bool = False, think: bool = False) -> None:
        self.clients, self.model, self.stream, self.tools, self.think = clients, model, stream, tools, think

    def say(self, text: str, image: bytes | None = None) -> Turn:
        raise NotImplementedError

    def answer_calls(self, result: dict[str, Any]) -> Turn:
        raise NotImplementedError

    def _turn(self, turn: Turn) -> Turn:
        turn.served_by = self.clients.served
        return turn


def _data_url(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode()


class ChatConversation(Conversation):
    protocol = "chat"
    TOOL = {
        "type": "function",
        "function": {"name": "get_weather", "description": "Current weather of a city", "parameters": WEATHER_SCHEMA},
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client = self.clients.openai
        self.messages: list[dict[str, Any]] = []

    def say(self, text: str, image: bytes | None = None) -> Turn:
        content: Any = text
        if image is not None:
            content = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": _data_url(image)}}]
        self.messages.append({"role": "user", "content": content})
        return self._send()

    def answer_calls(self, result: dict[str, Any]) -> Turn:
        for call in self._calls:
            self.messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)})
        return self._send()

    def _send(self) -> Turn:
        options: dict[str, Any] = {"model": self.model, "messages": self.messages}
        if self.tools:
            options["tools"] = [self.TOOL]
        if self.think:
            options["reasoning_effort"] = "low"
        if self.stream:
            options["stream_options"] = {"include_usage": True}
            with self.client.chat.completions.stream(**options) as stream:
                for _ in stream:
                    pass
                completion = stream.get_final_completion()
        else:
            completion = self.client.chat.completions.create(**options)
        assert completion.usage is not None and completion.usage.prompt_tokens > 0
        message = completion.choices[0].message
        self.messages.append(message.model_dump(exclude_none=True))
        self._calls = message.tool_calls or []
        reasoning = (message.model_extra or {}).get("reasoning_content")
        return self._turn(
            Turn(
                text=message.content or "",
                thoughts=[reasoning] if reasoning else [],
                signatures=0,
                calls=[(c.function.name, json.loads(c.function.arguments)) for c in self._calls],
                finish=completion.choices[0].finish_reason,
            )
        )


class CompletionsConversation(Conversation):
    """Legacy completions: one prompt, one answer; no tools, images or thinking."""

    protocol = "completions"
    images = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client = self.clients.openai

    def say(self, text: str, image: bytes | None = None) -> Turn:
        options = {"model": self.model, "prompt": text, "max_tokens": 256}
        if self.stream:
            usage_options = {"stream": True, "stream_options": {"include_usage": True}}
            chunks = list(self.client.completions.create(**options, **usage_options))
            usage = chunks[-1].usage
            answer = "".join(choice.text for chunk in chunks for choice in chunk.choices)
            finish = next(choice.finish_reason for chunk in chunks for choice in chunk.choices if choice.finish_reason)
        else:
            completion = self.client.completions.create(**options)
            usage, answer, finish = completion.usage, completion.choices[0].text, completion.choices[0].finish_reason
        assert usage is not None and usage.prompt_tokens > 0
        return self._turn(Turn(answer, [], 0, [], finish))


class ResponsesConversation(Conversation):
    """Stateless like Codex (store=false): every output item goes back as the next input."""

    protocol = "responses"
    stored = False
    TOOL = {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": WEATHER_SCHEMA,
        "strict": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client = self.clients.openai
        self.items: list[dict[str, Any]] = []
        self.sent = 0  # items before this one the gateway keeps under `previous`
        self.previous: str | None = None

    def say(self, text: str, image: bytes | None = None) -> Turn:
        content: list[dict[str, Any]] = [{"type": "input_text", "text": text}]
        if image is not None:
            content.append({"type": "input_image", "image_url": _data_url(image), "detail": "auto"})
        self.items.append({"type": "message", "role": "user", "content": content})
        return self._send()

    def answer_calls(self, result: dict[str, Any]) -> Turn:
        for call in self._calls:
            self.items.append({"type": "function_call_output", "call_id": call.call_id, "output": json.dumps(result)})
        return self._send()

    def _send(self) -> Turn:
        options: dict[str, Any] = {"model": self.model, "input": self.items, "store": self.stored}
        if self.stored and self.previous:
            options |= {"input": self.items[self.sent :], "previous_response_id": self.previous}
        if self.tools:
            options["tools"] = [self.TOOL]
        if self.think:
            options["reasoning"] = {"effort": "low", "summary": "auto"}
            options["include"] = ["reasoning.encrypted_content"]
        if self.stream:
            with self.client.responses.stream(**options) as stream:
                kinds = [event.type for event in stream]
                response = stream.get_final_response()
            assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
        else:
            response = self.client.responses.create(**options)
        assert response.status == "completed" and response.usage.input_tokens > 0
        self.items += [item.model_dump(exclude_none=True) for item in response.output]
        self.sent, self.previous = len(self.items), response.id
        self._calls = [item for item in response.output if item.type == "function_call"]
        reasoning = [item for item in response.output if item.type == "reasoning"]
        return self._turn(
            Turn(
                text=response.output_text,
                thoughts=[s.text for item in reasoning for s in item.summary],
                signatures=sum(1 for item in reasoning if item.encrypted_content),
                calls=[(c.name, json.loads(c.arguments)) for c in self._calls],
                finish="tool_calls" if self._calls else "stop",
            )
        )


class StoredResponsesConversation(ResponsesConversation):
    """Stateful: each request sends only what is new, with the previous response's id."""

    protocol = "responses-stored"
    stored = True


class AnthropicConversation(Conversation):
    protocol = "anthropic"
    TOOL = {"name": "get_weather", "description": "Current weather of a city", "input_schema": WEATHER_SCHEMA}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client = self.clients.anthropic
        self.messages: list[dict[str, Any]] = []

    def say(self, text: str, image: bytes | None = None) -> Turn:
        content: list[dict[str, Any]] = [{"type": "text", "text": text}]
        if image is not None:
            source = {"type": "base64", "media_type": "image/png", "data": base64.b64encode(image).decode()}
            content.append({"type": "image", "source": source})
        self.messages.append({"role": "user", "content": content})
        return self._send()

    def answer_calls(self, result: dict[str, Any]) -> Turn:
        results = [{"type": "tool_result", "tool_use_id": c.id, "content": json.dumps(result)} for c in self._calls]
        self.messages.append({"role": "user", "content": results})
        return self._send()

    def _send(self) -> Turn:
        options: dict[str, Any] = {"model": self.model, "max_tokens": 4096, "messages": self.messages}
        if self.tools:
            options["tools"] = [self.TOOL]
        if self.think:
            options["thinking"] = {"type": "enabled", "budget_tokens": 1024}
        if self.stream:
            with self.client.messages.stream(**options) as stream:
                for _ in stream:
                    pass
                message = stream.get_final_message()
        else:
            message = self.client.messages.create(**options)
        assert message.usage.input_tokens + (message.usage.cache_read_input_tokens or 0) > 0
        content = [block.model_dump(exclude_none=True) for block in message.content]
        self.messages.append({"role": "assistant", "content": content})
        self._calls = [b for b in message.content if b.type == "tool_use"]
        thinking = [b for b in message.content if b.type == "thinking"]
        return self._turn(
            Turn(
                text="".join(b.text for b in message.content if b.type == "text"),
                thoughts=[b.thinking for b in thinking],
                signatures=sum(1 for b in thinking if b.signature),
                calls=[(c.name, c.input) for c in self._calls],
                finish=message.stop_reason,
            )
        )


class GeminiConversation(Conversation):
    protocol = "gemini"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.client = self.clients.genai
        self.contents: list[types.Content] = []

    def say(self, text: str, image: bytes | None = None) -> Turn:
        parts = [types.Part(text=text)]
        if image is not None:
            parts.append(types.Part.from_bytes(data=image, mime_type="image/png"))
        self.contents.append(types.Content(role="user", parts=parts))
        return self._send()

    def answer_calls(self, result: dict[str, Any]) -> Turn:
        parts = [
            types.Part(function_response=types.FunctionResponse(id=c.id, name=c.name, response=result))
            for c in self._calls
        ]
        self.contents.append(types.Content(role="user", parts=parts))
        return self._send()

    def _send(self) -> Turn:
        config = types.GenerateContentConfig()
        if self.tools:
            declaration = types.FunctionDeclaration(
                name="get_weather", description="Current weather of a city", parameters=GEMINI_SCHEMA
            )
            config.tools = [types.Tool(function_declarations=[declaration])]
            config.automatic_function_calling = types.AutomaticFunctionCallingConfig(disable=True)
        if self.think:
            config.thinking_config = types.ThinkingConfig(include_thoughts=True)
        if self.stream:
            stream = self.client.models.generate_content_stream(model=self.model, contents=self.contents, config=config)
            chunks = list(stream)
            assert chunks, "an empty stream"
        else:
            chunks = [self.client.models.generate_content(model=self.model, contents=self.contents, config=config)]
        # A stream's last chunk may carry only the finishReason and usage, without content.
        contents = [chunk.candidates[0].content for chunk in chunks]
        parts = [p for content in contents if content is not None for p in content.parts or ()]
        usage = chunks[-1].usage_metadata
        assert usage is not None and usage.prompt_token_count > 0
        self.contents.append(types.Content(role="model", parts=parts))
        self._calls = [p.function_call for p in parts if p.function_call]
        return self._turn(
            Turn(
                text="".join(p.text for p in parts if p.text and not p.thought),
                # A stream sends a thought in pieces, as chunks of their own.
                thoughts=[t] if (t := "".join(p.text for p in parts if p.thought and p.text)) else [],
                signatures=sum(1 for p in parts if p.thought_signature),
                calls=[(c.name, dict(c.args or {})) for c in self._calls],
                finish=chunks[-1].candidates[0].finish_reason.name,
            )
        )


DRIVERS = (
    ChatConversation,
    CompletionsConversation,
    ResponsesConversation,
    StoredResponsesConversation,
    AnthropicConversation,
    GeminiConversation,
)
PROTOCOLS: dict[str, type[Conversation]] = {c.protocol: c for c in DRIVERS}
# One turn of the stored Responses flavour is the stateless one's: it counts only in conversations.
ONE_TURN = [name for name in PROTOCOLS if name != "responses-stored"]
MULTI_TURN = [name for name in PROTOCOLS if name != "completions"]
SEES_IMAGES = [name for name in ONE_TURN if PROTOCOLS[name].images]
STREAMS = pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])


# --- the matrix -------------------------------------------------------------------------------------


@STREAMS
@pytest.mark.parametrize("protocol", ONE_TURN)
@pytest.mark.parametrize("dialect", DIALECTS)
def test_text(matrix, dialect, protocol, stream):
    prompt = f"hello from {protocol} to {dialect}"
    turn = matrix.converse(plain(dialect), protocol, stream=stream).say(prompt)
    assert turn.text == f"echo: {prompt}"
    assert turn.finish in ("stop", "end_turn", "STOP")
    assert turn.served_by == {"x-switchyard-account": matrix.accounts[dialect], "x-switchyard-model": plain(dialect)[1]}


@STREAMS
@pytest.mark.parametrize("protocol", MULTI_TURN)
@pytest.mark.parametrize("target", PLAIN_TARGETS, ids=target_id)
def test_tool_conversation(matrix, target, protocol, stream):
    """call -> tool result -> answer -> one more turn; whatever the upstream needs back (call
    ids, Gemini's call signatures) must come back through the caller's protocol."""
    conversation = matrix.converse(target, protocol, stream=stream, tools=True)
    first = conversation.say(CALL_PROMPT)
    assert first.calls == [("get_weather", {"city": "Paris"})], first
    assert first.finish in ("tool_calls", "tool_use", "STOP")
    second = conversation.answer_calls(RESULT)
    assert second.text.startswith("tool result:") and "18" in second.text, second
    assert not second.calls
    assert second.served_by["x-switchyard-account"] == matrix.accounts[target[0]]
    assert conversation.say("thanks").text == "echo: thanks"


@pytest.mark.parametrize("protocol", SEES_IMAGES)
@pytest.mark.parametrize("dialect", DIALECTS)
def test_image_input(matrix, dialect, protocol):
    turn = matrix.converse(plain(dialect), protocol, stream=False).say("what is this", image=PNG)
    assert turn.text == f"echo: what is this\nimage: image/png {len(PNG)} bytes"


@STREAMS
@pytest.mark.parametrize("protocol", MULTI_TURN)
@pytest.mark.parametrize("target", THINKING_TARGETS, ids=target_id)
def test_thinking_tool_conversation(matrix, target, protocol, stream):
    """[[think]] makes the upstream think first: the caller sees the thought in its protocol's
    place for it (with a signature where the protocol can carry one), and the signed thought
    and call go back with the tool result and in every later turn."""
    conversation = matrix.converse(target, protocol, stream=stream, tools=True, think=True)
    first = conversation.say(f"[[think]] {CALL_PROMPT}")
    assert first.thoughts == [THOUGHT], first
    assert first.calls == [("get_weather", {"city": "Paris"})], first
    if protocol != "chat":  # chat has no place for a signature
        assert first.signatures >= 1, first
    second = conversation.answer_calls(RESULT)
    assert second.text.startswith("tool result:") and "18" in second.text, second
    third = conversation.say("[[think]] and tomorrow?")
    assert third.thoughts == [THOUGHT] and third.text == "echo: [[think]] and tomorrow?", third


# --- counting and listing ------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", DIALECTS)
def test_count_tokens(matrix, dialect):
    """Upstream countTokens where the account can, the gateway's estimate where not."""
    model = plain(dialect)[1]
    short, long = "count me", "count me " * 40
    counter = matrix.clients.anthropic
    counts = [
        counter.messages.count_tokens(model=model, messages=[{"role": "user", "content": text}]).input_tokens
        for text in (short, long)
    ]
    assert 0 < counts[0] < counts[1]
    genai = matrix.clients.genai
    totals = [genai.models.count_tokens(model=model, contents=text).total_tokens for text in (short, long)]
    assert 0 < totals[0] < totals[1]


def test_model_lists(matrix):
    every = {model for d in DIALECTS.values() for model in d.models}
    clients = matrix.clients
    assert every <= {m.name.removeprefix("models/") for m in clients.genai.models.list()}
    assert every <= {m.id for m in clients.openai.models.list()}
    assert every <= {m.id for m in clients.anthropic.models.list()}


# --- real clients' first requests, replayed ------------------------------------------------------------

CLIENT_REQUESTS = sorted((Path(__file__).parent / "fixtures" / "clients").glob("*.json"))


def sse_events(raw: bytes) -> list[tuple[str | None, Any]]:
    """(event name, parsed data) of each event of an SSE body."""
    events = []
    for block in raw.decode().replace("\r\n", "\n").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
        if "data" in fields:
            events.append((fields.get("event"), json.loads(fields["data"])))
    return events


def anthropic_stream_text(raw: bytes) -> str:
    """The text of a Messages stream, checked the way the SDK's accumulator relies on: one
    block open at a time, indexes counting from 0, every thinking block signed."""
    events = sse_events(raw)
    kinds = [data["type"] for _, data in events if data["type"] != "ping"]
    assert kinds[0] == "message_start" and kinds[-2:] == ["message_delta", "message_stop"], kinds
    assert all(name == data["type"] for name, data in events), "event names must match their data's type"
    text, open_block, opened, signed = "", None, 0, {}
    for _, data in events:
        match data["type"]:
            case "content_block_start":
                assert open_block is None and data["index"] == opened, data
                open_block, opened = data["index"], opened + 1
                if data["content_block"]["type"] == "thinking":
                    signed[open_block] = False
            case "content_block_delta":
                assert data["index"] == open_block, data
                delta = data["delta"]
                text += delta.get("text", "")
                if delta["type"] == "signature_delta" and delta["signature"]:
                    signed[open_block] = True
            case "content_block_stop":
                assert data["index"] == open_block, data
                open_block = None
    assert all(signed.values()), "a thinking block came without its signature"
    return text


def responses_stream_text(raw: bytes) -> str:
    events = [data for _, data in sse_events(raw)]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created" and events[-1]["type"] == "response.completed"
    return whole_text["responses"](events[-1]["response"])


def gemini_stream_text(raw: bytes) -> str:
    chunks = [data for _, data in sse_events(raw)]
    assert chunks and chunks[-1]["candidates"][0]["finishReason"] == "STOP", chunks[-1:]
    return "".join(whole_text["gemini"](chunk) for chunk in chunks)


whole_text: dict[str, Callable[[Any], str]] = {
    "anthropic": lambda body: "".join(b["text"] for b in body["content"] if b["type"] == "text"),
    "responses": lambda body: "".join(
        c["text"] for item in body["output"] if item["type"] == "message" for c in item["content"]
    ),
    "gemini": lambda body: "".join(
        p.get("text", "") for p in (body["candidates"][0].get("content") or {}).get("parts", ()) if not p.get("thought")
    ),
}
stream_text: dict[str, Callable[[bytes], str]] = {
    "anthropic": anthropic_stream_text,
    "responses": responses_stream_text,
    "gemini": gemini_stream_text,
}


def replay(gateway: Gateway, captured: dict[str, Any], model: str, stream: bool) -> tuple[str, httpx.Response, bytes]:
    """The captured request with the gateway's key for the redacted one, asking for `model`."""
    headers = {k: v for k, v in captured["headers"].items() if k.lower() != "content-length"}
    for name, value in headers.items():
        if value == "<redacted>":
            headers[name] = f"Bearer {gateway.api_key}" if name.lower() == "authorization" else gateway.api_key
    path, body = captured["path"], dict(captured["body"])
    if "/models/" in path:  # Gemini names the model, and whether to stream, in the path
        method = "streamGenerateContent?alt=sse" if stream else "generateContent"
        path, protocol = re.sub(r"/models/[^/]+$", f"/models/{model}:{method}", path.partition("?")[0]), "gemini"
    else:
        body["model"], body["stream"] = model, stream
        protocol = "anthropic" if "/messages" in path else "responses"
    url = gateway.url + path
    with httpx.stream(captured["method"], url, headers=headers, content=json.dumps(body), timeout=30) as response:
        return protocol, response, response.read()


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("captured", CLIENT_REQUESTS, ids=lambda path: path.stem)
def test_client_first_request(matrix, captured, dialect, stream):
    """Claude Code's, Codex's and Gemini CLI's real first requests (dozens of tools with rich
    schemas, betas, reasoning settings, built-in tools) against every upstream dialect."""
    protocol, response, raw = replay(matrix.gateway, json.loads(captured.read_text()), plain(dialect)[1], stream)
    assert response.status_code == 200, raw[:2000]
    assert response.headers["x-switchyard-account"] == matrix.accounts[dialect]
    if stream:
        assert response.headers["content-type"].startswith("text/event-stream")
        text = stream_text[protocol](raw)
    else:
        text = whole_text[protocol](json.loads(raw))
    assert text.startswith("echo: ") and len(text) > 20, text


# --- upstream refusals ------------------------------------------------------------------------------

ERRORS: dict[str, type[Exception]] = {
    "chat": openai.BadRequestError,
    "completions": openai.BadRequestError,
    "responses": openai.BadRequestError,
    "anthropic": anthropic.BadRequestError,
    "gemini": genai_errors.ClientError,
}


@pytest.mark.parametrize("protocol", ONE_TURN)
@pytest.mark.parametrize("dialect", DIALECTS)
def test_upstream_refusal_in_the_callers_shape(matrix, sim, dialect, protocol):
    """An upstream's 400, in its own error dialect, reaches the caller as a 400 its SDK raises,
    with the upstream's reason; and it does not cool the account down for the next request.
    (Streamed or not is the same path: the refusal comes before the first byte.)"""
    model = plain(dialect)[1]
    sim.behave("400", {"model": model}, times=1, message="simulated refusal")
    with pytest.raises(ERRORS[protocol]) as caught:
        matrix.converse(plain(dialect), protocol, stream=False).say("hi")
    status = getattr(caught.value, "status_code", None) or getattr(caught.value, "code", None)
    assert status == 400 and "simulated refusal" in str(caught.value), caught.value
    assert matrix.converse(plain(dialect), protocol, stream=False).say("again").text == "echo: again"
