"""The types every part of the sim passes around: a request, a reply, who asked, what was said."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from .refusals import refuse
from .util import JSON, dumps


@dataclass(slots=True)
class Req:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json_object(self) -> dict[str, Any]:
        try:
            obj = json.loads(self.body or b"null")
        except (ValueError, UnicodeDecodeError) as e:
            raise refuse("invalid_json", error=e) from None
        if not isinstance(obj, dict):
            raise refuse("not_json_object")
        return obj

    def bearer(self) -> str | None:
        auth = self.headers.get("authorization", "")
        return (auth[7:].strip() or None) if auth[:7].lower() == "bearer " else None


@dataclass(slots=True)
class Reply:
    """What to send; the async writer applies the timing fields."""

    status: int
    body: bytes = b""
    ctype: str = "application/json; charset=UTF-8"
    headers: list[tuple[str, str]] = field(default_factory=list)
    events: list[bytes] | None = None  # a streamed body, one chunk per event
    latency: float = 0.0
    chunk_delay: float | None = None
    stall: float | None = None  # hold this long before answering (inf: until the client leaves)...
    hold_at: int | None = None  # ...or after the headers and this many events (a whole body: its headers)
    drop_after: int | None = None  # close abruptly after this many events (0: before any byte)
    reset_at: int | None = None  # reset the connection after the headers and this many events


def json_reply(obj: JSON, status: int = 200) -> Reply:
    return Reply(status, dumps(obj))


def sse_reply(events: list[bytes]) -> Reply:
    return Reply(200, ctype="text/event-stream; charset=utf-8", events=events)


class Who(NamedTuple):
    label: str  # what the log shows: an email, or a key's first 8 chars
    ids: frozenset[str]  # what a rule's "account" may name


@dataclass(slots=True)
class Ctx:
    """One request as the log and the rules see it."""

    kind: str
    path: str
    who: Who | None = None
    model: str | None = None
    stream: bool = False
    meta: bool = False  # housekeeping, not generation
    action: str | None = None
    sse: bool = False  # a Google stream asked for as SSE (?alt=sse), not as a JSON array
    session: str | None = None  # Cloud Code generation: request.sessionId
    request_type: str | None = None  # Cloud Code generation: the envelope's requestType


@dataclass(slots=True)
class Conv:
    """What the sim needs from any dialect's request to answer it."""

    texts: list[str] = field(default_factory=list)  # the last user turn's text
    images: list[str] = field(default_factory=list)  # "<mime> <n> bytes" per image of that turn
    results: list[str] | None = None  # tool results, when that turn answers tool calls
    tools: set[str] = field(default_factory=set)
    thinking: bool = False
    chars: int = 0  # all prompt text, for the token estimate
    image_count: int = 0
    turns: list[tuple[JSON, int]] = field(default_factory=list)  # (raw turn, its chars): prefix cache
    search: bool = False  # the model may search the web (googleSearch, web_search, web_search_options)
    draw: tuple[str, str] | None = None  # an image model answering with a picture: (aspect ratio, size)
    picture: tuple[str, str] = ("1:1", "1K")  # Gemini's generationConfig.imageConfig
    modalities: list[str] | None = None  # Gemini's generationConfig.responseModalities
    system: bool = False  # a system prompt was given

    def add_turn(self, raw: JSON, chars: int) -> None:
        self.turns.append((raw, chars))
        self.chars += chars


@dataclass(slots=True)
class Answer:
    text: str | None
    call: tuple[str, dict[str, Any]] | None
    thought: str | None
    prompt: int
    cached: int
    output: int
    thoughts: int
    search: str | None = None  # the query the model searched the web for (see util.search_answer)
    image: bytes | None = None  # a PNG the model drew
    image_tokens: int = 0
