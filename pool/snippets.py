"""How each client connects to this gateway: base URL, key and a model the pool serves, as the
exact text to paste (the dashboard's Connect page). One entry per client in `CLIENTS`; the coding
CLIs show what `switchyard connect` prints for them (`pool/connect.py`), so the page and the
command never disagree."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from . import connect


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
    resolve: Callable[[str], str] = field(default=lambda name: name)  # a client's model name -> the served one
    background: bool = False  # [routing] background_model is set

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


def _cli(make: Callable[[connect.Gateway], connect.Setup]) -> Callable[[Setup], list[Snippet]]:
    """A coding CLI's set-up as `switchyard connect` prints it."""

    def snippets(s: Setup) -> list[Snippet]:
        gw = connect.Gateway(url=s.base_url, key=s.key, models=list(s.models), resolve=s.resolve, background=s.background)
        return [Snippet("set-up", "sh", make(gw).text + "\n")]

    return snippets


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
    "claude-code": ("Claude Code", _cli(connect.claude_code)),
    "codex": ("Codex CLI", _cli(connect.codex)),
    "gemini-cli": ("Gemini CLI", _cli(connect.gemini_cli)),
    "opencode": ("opencode", _cli(connect.opencode)),
    "curl": ("curl", _curl),
}


def setups(setup: Setup) -> list[dict[str, Any]]:
    return [
        {"id": client, "name": name, "snippets": [asdict(s) for s in make(setup)]}
        for client, (name, make) in CLIENTS.items()
    ]
