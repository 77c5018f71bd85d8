"""How each client connects to this gateway: base URL, key and a model the pool serves, as the
exact text to paste (the dashboard's Connect page). One entry per client in `CLIENTS`."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Snippet:
    title: str  # where it goes: "shell", "~/.codex/config.toml", ...
    language: str  # sh, toml, json, python
    text: str


@dataclass(frozen=True, slots=True)
class Setup:
    base_url: str  # http://127.0.0.1:8045, no trailing slash
    key: str
    models: Sequence[str]  # what the pool serves

    def model(self, *prefixes: str) -> str:
        """The first served model with one of the prefixes (in their order), else any."""
        for prefix in prefixes:
            for name in self.models:
                if name.startswith(prefix):
                    return name
        return self.models[0] if self.models else "gemini-2.5-flash"


def _openai_sdk(s: Setup) -> list[Snippet]:
    model = s.model("gpt-5", "gpt-4", "gemini-", "claude-")
    return [Snippet("python", "python", (
        "from openai import OpenAI\n\n"
        f'client = OpenAI(base_url="{s.base_url}/v1", api_key="{s.key}")\n'
        "answer = client.chat.completions.create(\n"
        f'    model="{model}", messages=[{{"role": "user", "content": "hi"}}]\n'
        ")\n"
        "print(answer.choices[0].message.content)\n"
    ))]


def _anthropic_sdk(s: Setup) -> list[Snippet]:
    model = s.model("claude-sonnet", "claude-", "gemini-")
    return [Snippet("python", "python", (
        "from anthropic import Anthropic\n\n"
        f'client = Anthropic(base_url="{s.base_url}", api_key="{s.key}")  # no /v1\n'
        "answer = client.messages.create(\n"
        f'    model="{model}", max_tokens=1024, messages=[{{"role": "user", "content": "hi"}}]\n'
        ")\n"
        "print(answer.content[0].text)\n"
    ))]


def _google_sdk(s: Setup) -> list[Snippet]:
    model = s.model("gemini-")
    return [Snippet("python", "python", (
        "from google import genai\n\n"
        f'client = genai.Client(api_key="{s.key}", http_options={{"base_url": "{s.base_url}"}})\n'
        f'print(client.models.generate_content(model="{model}", contents="hi").text)\n'
    ))]


def _claude_code(s: Setup) -> list[Snippet]:
    return [Snippet("shell", "sh", (
        f"export ANTHROPIC_BASE_URL={s.base_url}        # no /v1\n"
        f"export ANTHROPIC_API_KEY={s.key}\n"
        "export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1\n"
        'claude -p "your prompt"\n'
    ))]


def _codex(s: Setup) -> list[Snippet]:
    config = (
        f'model = "{s.model("gpt-5", "gpt-4", "gemini-")}"\n'
        'model_provider = "switchyard"\n'
        "check_for_update_on_startup = false\n\n"
        "[model_providers.switchyard]\n"
        'name = "Switchyard"\n'
        f'base_url = "{s.base_url}/v1"\n'
        'env_key = "SWITCHYARD_API_KEY"\n'
        'wire_api = "responses"\n\n'
        "[analytics]\nenabled = false\n"
    )
    return [
        Snippet("~/.codex/config.toml", "toml", config),
        Snippet("shell", "sh", f'SWITCHYARD_API_KEY={s.key} codex exec --skip-git-repo-check "your prompt"\n'),
    ]


def _gemini_cli(s: Setup) -> list[Snippet]:
    settings = {
        "security": {"auth": {"selectedType": "gemini-api-key"}},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
        "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
    }
    return [
        Snippet("~/.gemini/settings.json", "json", json.dumps(settings, indent=2) + "\n"),
        Snippet("shell", "sh", (
            f"GOOGLE_GEMINI_BASE_URL={s.base_url} GEMINI_API_KEY={s.key} "
            f'gemini -m {s.model("gemini-")} -p "your prompt"\n'
        )),
    ]


def _opencode(s: Setup) -> list[Snippet]:
    config = {
        "$schema": "https://opencode.ai/config.json",
        "provider": {
            "switchyard": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Switchyard",
                "options": {"baseURL": f"{s.base_url}/v1", "apiKey": s.key},
                "models": {name: {"name": name} for name in (s.models or [s.model()])},
            }
        },
    }
    return [Snippet("~/.config/opencode/opencode.json", "json", json.dumps(config, indent=2) + "\n")]


def _curl(s: Setup) -> list[Snippet]:
    body = json.dumps({"model": s.model("gemini-"), "messages": [{"role": "user", "content": "hi"}]})
    return [Snippet("shell", "sh", (
        f"curl {s.base_url}/v1/chat/completions \\\n"
        f'  -H "authorization: Bearer {s.key}" -H "content-type: application/json" \\\n'
        f"  -d '{body}'\n"
    ))]


# client id -> (its name, what it needs to know)
CLIENTS: dict[str, tuple[str, Callable[[Setup], list[Snippet]]]] = {
    "openai-sdk": ("OpenAI SDK", _openai_sdk),
    "anthropic-sdk": ("Anthropic SDK", _anthropic_sdk),
    "google-sdk": ("Google GenAI SDK", _google_sdk),
    "claude-code": ("Claude Code", _claude_code),
    "codex": ("Codex CLI", _codex),
    "gemini-cli": ("Gemini CLI", _gemini_cli),
    "opencode": ("opencode", _opencode),
    "curl": ("curl", _curl),
}


def setups(setup: Setup) -> list[dict[str, Any]]:
    return [
        {"id": client, "name": name, "snippets": [asdict(s) for s in make(setup)]}
        for client, (name, make) in CLIENTS.items()
    ]
