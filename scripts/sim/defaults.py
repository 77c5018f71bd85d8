"""The sim's defaults: settings, the models each account kind serves, the demo's accounts."""

from __future__ import annotations

from typing import Any

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
}

DEFAULT_GOOGLE_MODELS = (
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "gemini-3-pro-preview",
    "gemini-2.5-flash-lite",
    "claude-sonnet-4-5",
    "claude-opus-4-5-thinking",
)
DEFAULT_KEY_MODELS: dict[str, tuple[str, ...]] = {
    "gemini": ("gemini-2.5-flash", "gemini-2.5-pro", "gemini-2.5-flash-lite", "gemini-3-pro-preview"),
    "openai": ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "o3-mini"),
    "anthropic": ("claude-sonnet-4-5", "claude-opus-4-5", "claude-haiku-4-5"),
}

# Accounts `--demo` registers; scripts/demo imports this to configure the gateway.
DEMO: dict[str, list[dict[str, Any]]] = {
    "google": [
        {"refresh_token": "sim-demo-refresh-1", "email": "demo1@example.com", "project": "demo-project-1"},
        {"refresh_token": "sim-demo-refresh-2", "email": "demo2@example.com", "project": None},
    ],
    "keys": [
        {"key": "gemini-demo-key-1", "kind": "gemini"},
        {"key": "sk-openai-demo-1", "kind": "openai"},
        {"key": "sk-ant-demo-1", "kind": "anthropic"},
    ],
}
