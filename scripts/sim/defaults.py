"""The sim's defaults: settings, the models each account kind serves (Google's: the catalogue),
the demo's accounts."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .catalogue import DEFAULT_GOOGLE_MODELS

DEFAULT_SETTINGS: dict[str, Any] = {
    "chunk_delay": 0.0,  # seconds between stream events
    "latency": 0.0,  # seconds before any upstream answer
    "events": 3,  # text chunks in a streamed answer
    "client_id": "sim-client-id",
    "client_secret": "sim-client-secret",
    "fragment": False,  # split every stream event over two writes (parsers must buffer)
    "prefix_cache": True,  # report cached tokens for a prompt prefix seen before
    "echo_last_part": False,  # echo only the last text part of the last user turn (real CLIs put
                              # context before the prompt in the same turn)
    "min_client_version": "4.3.0",  # Cloud Code: the oldest Antigravity/<version> still served
    "outdated_reply": "text",  # Cloud Code generation from an older client: "text" (a 200 saying so) or "error"
}
SETTING_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "min_client_version": (lambda v: re.fullmatch(r"\d+\.\d+\.\d+", v) is not None, "a version like 4.3.0"),
    "outdated_reply": (lambda v: v in ("text", "error"), '"text" or "error"'),
}
FAMILIES = ("claude", "gemini", "openai")  # thought signatures belong to one of these

__all__ = ["DEFAULT_GOOGLE_MODELS", "DEFAULT_KEY_MODELS", "DEFAULT_SETTINGS", "DEMO", "FAMILIES", "SETTING_CHECKS"]
DEFAULT_KEY_MODELS: dict[str, tuple[str, ...]] = {
    "gemini": ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite", "gemini-3-pro-preview",
               "gemini-3-flash-preview", "gemini-2.5-flash-image", "gemini-embedding-001"),
    "openai": ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o3-mini", "gpt-image-1", "dall-e-3",
               "text-embedding-3-small", "text-embedding-3-large", "gpt-4o-search-preview"),
    "anthropic": ("claude-sonnet-4-5", "claude-opus-4-5", "claude-haiku-4-5"),
}

# Accounts `--demo` registers; scripts/demo imports this to configure the gateway.
DEMO: dict[str, list[dict[str, Any]]] = {
    "google": [
        {"refresh_token": "sim-demo-refresh-1", "email": "demo1@example.com", "project": "demo-project-1"},
        # Never onboarded: the gateway must onboard it (onboardUser answers "not done" once).
        {"refresh_token": "sim-demo-refresh-2", "email": "demo2@example.com", "project": None, "onboarded": False,
         "onboard_polls": 1},
    ],
    "keys": [
        {"key": "gemini-demo-key-1", "kind": "gemini"},
        {"key": "sk-openai-demo-1", "kind": "openai"},
        {"key": "sk-ant-demo-1", "kind": "anthropic"},
    ],
}
