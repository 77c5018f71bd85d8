"""Protocol names -> modules: the only place that knows which protocols exist."""

from __future__ import annotations

from . import anthropic, gemini, openai_chat, openai_completions, openai_responses
from .protocol import CallerProtocol, UpstreamDialect

CALLERS: dict[str, CallerProtocol] = {
    "openai_chat": openai_chat.caller,
    "openai_completions": openai_completions.caller,
    "openai_responses": openai_responses.caller,
    "anthropic": anthropic.caller,
    "gemini": gemini.caller,
}

DIALECTS: dict[str, UpstreamDialect] = {
    "antigravity": gemini.antigravity,
    "gemini": gemini.upstream,
    "openai": openai_chat.upstream,
    "anthropic": anthropic.upstream,
}
