"""The one form in the middle.

Every caller protocol decodes into these types and every upstream dialect encodes from them, so
a new protocol costs one module instead of one per pair. The shapes follow the richest protocol
on each point: content is a list of typed parts (as in Anthropic and Gemini), tool results are
parts of a user turn, and a stream is a sequence of blocks that start, grow and stop (as in
Anthropic's events), which the simpler stream formats can flatten without losing order.

Token counts use one convention: `input_tokens` includes cached tokens and `output_tokens`
includes reasoning tokens; `cached_tokens` and `reasoning_tokens` say how much of each.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["user", "assistant"]

# Why an answer ended. Each protocol maps its own vocabulary onto these.
FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "stop_sequence", "error"]


@dataclass(slots=True)
class Text:
    text: str
    # Gemini may sign a plain text part; kept so it can go back to the upstream that made it.
    signature: str | None = None


@dataclass(slots=True)
class Thinking:
    text: str
    signature: str | None = None
    # Anthropic's redacted_thinking: opaque data that only the upstream can read.
    redacted: bool = False


@dataclass(slots=True)
class Image:
    mime_type: str
    data: str | None = None  # base64, without a data: prefix
    url: str | None = None  # a remote image the caller only referenced


@dataclass(slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    # Gemini's thoughtSignature: the upstream refuses a later turn whose call lacks it.
    signature: str | None = None


@dataclass(slots=True)
class ToolResult:
    call_id: str
    name: str
    content: list[Text | Image] = field(default_factory=list)
    is_error: bool = False


Part = Text | Thinking | Image | ToolCall | ToolResult


@dataclass(slots=True)
class Message:
    role: Role
    parts: list[Part]


@dataclass(slots=True)
class Tool:
    name: str
    description: str = ""
    parameters: dict[str, Any] | None = None  # JSON schema of the arguments object


@dataclass(slots=True)
class ToolChoice:
    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None  # with mode "tool"


@dataclass(slots=True)
class ThinkingConfig:
    enabled: bool = True
    budget_tokens: int | None = None
    effort: Literal["minimal", "low", "medium", "high"] | None = None
    include_thoughts: bool = True


@dataclass(slots=True)
class ResponseFormat:
    type: Literal["text", "json_object", "json_schema"] = "text"
    schema: dict[str, Any] | None = None
    name: str | None = None


@dataclass(slots=True)
class WebSearch:
    """The caller let the model search the web (Anthropic `web_search_*`, OpenAI `web_search`,
    chat `web_search_options`, Gemini `googleSearch`, a `-online` model name)."""

    max_uses: int | None = None
    allowed_domains: list[str] = field(default_factory=list)
    blocked_domains: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Source:
    url: str
    title: str = ""


@dataclass(slots=True)
class Citation:
    """A span of the answer's text that rests on some sources. `start`/`end` are character
    offsets into the answer's text: every Text part of the answer, joined in order."""

    start: int
    end: int
    text: str
    sources: list[int]  # indexes into Grounding.sources


@dataclass(slots=True)
class Grounding:
    """What a search behind an answer found: the queries run, the sources read, the spans of
    the answer each backs (Gemini's groundingMetadata, Anthropic's search blocks and citations,
    OpenAI's url_citation annotations)."""

    queries: list[str] = field(default_factory=list)
    sources: list[Source] = field(default_factory=list)
    citations: list[Citation] = field(default_factory=list)


@dataclass(slots=True)
class Request:
    model: str
    messages: list[Message]
    system: list[str] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)
    tool_choice: ToolChoice | None = None
    stream: bool = False
    include_usage: bool = False  # OpenAI's stream_options.include_usage
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    candidate_count: int | None = None
    response_format: ResponseFormat | None = None
    thinking: ThinkingConfig | None = None
    search: WebSearch | None = None


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(slots=True)
class Response:
    id: str
    model: str
    parts: list[Part]
    finish_reason: FinishReason = "stop"
    usage: Usage = field(default_factory=Usage)
    created: int = 0
    grounding: Grounding | None = None


# --- stream events -----------------------------------------------------------------------------
# A stream is: BlockStart, deltas for that block, BlockStop, ... then exactly one Finish, or a
# StreamError when the upstream failed after the caller already had the first byte.


@dataclass(slots=True)
class BlockStart:
    index: int
    # Text(""), Thinking(""), ToolCall(id, name) with empty arguments, or a whole Image.
    part: Text | Thinking | ToolCall | Image


@dataclass(slots=True)
class TextDelta:
    index: int
    text: str


@dataclass(slots=True)
class ThinkingDelta:
    index: int
    text: str


@dataclass(slots=True)
class SignatureDelta:
    index: int
    signature: str


@dataclass(slots=True)
class ToolArgsDelta:
    index: int
    json: str  # a fragment of the arguments' JSON text


@dataclass(slots=True)
class BlockStop:
    index: int


@dataclass(slots=True)
class Finish:
    reason: FinishReason
    usage: Usage


@dataclass(slots=True)
class Grounded:
    """The search behind the answer, once the upstream has said what it found: before the
    Finish, while the text it cites may still be open."""

    grounding: Grounding


@dataclass(slots=True)
class StreamError:
    message: str
    status: int = 502
    kind: str = "upstream_error"


Event = (
    BlockStart | TextDelta | ThinkingDelta | SignatureDelta | ToolArgsDelta | BlockStop | Grounded | Finish | StreamError
)


def answer_text(parts: list[Part]) -> str:
    """The text citations count in: every Text part, joined in order."""
    return "".join(part.text for part in parts if isinstance(part, Text))


class BadRequest(Exception):
    """The caller's body cannot be understood; the message says what is wrong and where."""

    def __init__(self, message: str, param: str | None = None, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status


class BadUpstreamAnswer(Exception):
    """The upstream answered 2xx with something that is not its protocol."""
