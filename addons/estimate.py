"""Token counts without an upstream: a documented estimate, and reading upstream counts.

The estimate is about 4 characters of text per token (the usual figure for English and code
with these tokenizers), 258 tokens per image (Gemini's fixed cost for an image up to 384 px),
and the JSON of tool declarations counted as text. It is an estimate: callers use it to budget
context, not to bill.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .translate import canonical as c

CHARS_PER_TOKEN = 4
TOKENS_PER_IMAGE = 258


def tokens(request: c.Request) -> int:
    chars, images = _measure(request.messages)
    chars += sum(len(s) for s in request.system)
    for tool in request.tools:
        chars += len(tool.name) + len(tool.description) + len(json.dumps(tool.parameters or {}))
    return math.ceil(chars / CHARS_PER_TOKEN) + images * TOKENS_PER_IMAGE + (1 if chars or images else 0)


def chars(messages: list[c.Message]) -> int:
    """Rough size of a conversation in characters (an image counts as its base64 length)."""
    return _measure(messages, image_chars=True)[0]


def _measure(messages: list[c.Message], *, image_chars: bool = False) -> tuple[int, int]:
    count = images = 0
    for message in messages:
        for part in message.parts:
            match part:
                case c.Text(text=text) | c.Thinking(text=text):
                    count += len(text)
                case c.Image(data=data):
                    images += 1
                    count += len(data or "") if image_chars else 0
                case c.ToolCall(name=name, arguments=arguments):
                    count += len(name) + len(json.dumps(arguments))
                case c.ToolResult(content=content):
                    inner, inner_images = _measure([c.Message("user", list(content))], image_chars=image_chars)
                    count += inner
                    images += inner_images
    return count, images


def read_count(body: Any) -> int:
    """The count in a Gemini/v1internal (`totalTokens`) or Anthropic (`input_tokens`) answer."""
    if isinstance(body, dict):
        for key in ("totalTokens", "input_tokens", "total_tokens"):
            if isinstance(body.get(key), int):
                return body[key]
        if isinstance(inner := body.get("response"), dict):
            return read_count(inner)
    raise ValueError("no token count in the upstream answer")
