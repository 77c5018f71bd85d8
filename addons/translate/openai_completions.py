"""OpenAI legacy Completions (`/v1/completions`), caller side only.

A prompt becomes one user message; the answer's text comes back as `text_completion` objects.
Framing, usage, errors and model lists are openai_chat's: the two formats differ only in their
choices. What needs the raw model (suffix, echo, best_of, logprobs, token arrays) is refused.
"""

from __future__ import annotations

from typing import Any, Final

from . import canonical as c
from .openai_chat import (
    ChunkStream,
    decode_options,
    encode_model_list,
    encode_usage,
    error_body,
    require_model,
    require_object,
)

DEFAULT_MAX_TOKENS: Final = 16  # what OpenAI assumes when max_tokens is absent

# Fields the gateway cannot honour, with the values that mean "not used".
_UNSUPPORTED: Final = (
    ("suffix", (None, "")),
    ("echo", (None, False)),
    ("best_of", (None, 1)),
    ("logprobs", (None, 0)),
)

# Completions have no tool calls, so the canonical reasons fold onto three.
_FINISH: Final[dict[str, str]] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "stop",
    "content_filter": "content_filter",
    "stop_sequence": "stop",
    "error": "stop",
}


def _prompt(prompt: Any) -> str:
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(item, str) for item in prompt):
        raise c.BadRequest("several prompts in one request are not supported; send one per request", "prompt")
    if isinstance(prompt, list) and prompt and all(isinstance(item, int | list) for item in prompt):
        raise c.BadRequest("token-array prompts are not supported; send the prompt as a string", "prompt")
    raise c.BadRequest("prompt must be a string or an array of one string", "prompt")


def decode_completion_request(body: Any, *, model: str | None = None) -> c.Request:
    body = require_object(body)
    name = require_model(body, model)
    text = _prompt(body.get("prompt"))
    for key, unused in _UNSUPPORTED:
        if body.get(key) not in unused:
            raise c.BadRequest(f"{key} is not supported by this gateway", key)
    options = decode_options(body)
    if options["max_tokens"] is None:
        options["max_tokens"] = DEFAULT_MAX_TOKENS
    return c.Request(model=name, messages=[c.Message("user", [c.Text(text)])], **options)


def _choice(text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}


def encode_completion_response(response: c.Response, request: c.Request) -> dict[str, Any]:
    text = "".join(p.text for p in response.parts if isinstance(p, c.Text))
    return {
        "id": response.id,
        "object": "text_completion",
        "created": response.created,
        "model": response.model,
        "choices": [_choice(text, _FINISH[response.finish_reason])],
        "usage": encode_usage(response.usage),
    }


class CompletionStreamEncoder:
    """Canonical events -> `text_completion` chunks; only text has a place in them."""

    __slots__ = ("_out", "_text")

    def __init__(self, request: c.Request, response_id: str, model: str, created: int) -> None:
        out = self._out = ChunkStream("text_completion", response_id, model, created, request.include_usage)
        self._text = out.template('{"text":', ',"index":0,"logprobs":null,"finish_reason":null}')

    def encode(self, events: list[c.Event]) -> bytes:
        out = self._out
        if out.done:
            return b""
        chunks: list[bytes] = []
        for event in events:
            match event:
                case c.TextDelta(text=text) if text:
                    chunks.append(out.fill(self._text, text))
                case c.Finish(reason=reason, usage=usage):
                    chunks.append(out.finish(_choice("", _FINISH[reason]), usage))
                    break
                case c.StreamError():
                    chunks.append(out.error(event))
                    break
        return b"".join(chunks)


class OpenAICompletionsCaller:
    name = "openai_completions"
    stream_content_type = "text/event-stream"

    decode_request = staticmethod(decode_completion_request)
    encode_response = staticmethod(encode_completion_response)
    stream_encoder = CompletionStreamEncoder
    error_body = staticmethod(error_body)
    encode_model_list = staticmethod(encode_model_list)


caller = OpenAICompletionsCaller()
