"""`switchyard connect CLIENT [--key K] [--write]`: a client's configuration for this gateway.

Printed, it is what to paste; with `--write` it goes into the client's own config file, merged
into what is there (the user's other settings stay; a TOML file loses its comments, so a copy
of every file changed is kept beside it first, `NAME.bak-YYYYmmdd-HHMMSS`). Each client is one
function returning a `Setup`: the text to print and the file edits to make. The key is the one
given (`switchyard keys add` makes one per client), else the config's admin key.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from . import config as config_file
from .files import write_atomic
from .paths import Home
from .pool import Pool
from .transport import Transport


class ConnectError(Exception):
    """A client config that cannot be written as asked; the message says why and what to do."""


@dataclass(frozen=True, slots=True)
class Gateway:
    """What a client needs to know of the gateway."""

    url: str  # base URL without a path, e.g. http://127.0.0.1:8045
    key: str
    models: list[str]  # the model names the pool serves
    resolve: Callable[[str], str]  # a client's model name -> the model that will serve it
    background: bool = False  # [routing] background_model is set

    def pick(self, preferred: str) -> str:
        """The model to name in a client's config: `preferred` (a client's own default) as the
        gateway resolves it when the pool serves that, else a served one of its kind, else the
        pool's first model."""
        resolved = self.resolve(preferred)
        if resolved in self.models or not self.models:
            return resolved
        family = preferred.split("-", 1)[0] + "-"  # else one of its kind (a Gemini CLI wants a gemini)
        return next((name for name in self.models if name.startswith(family)), self.models[0])


@dataclass(slots=True)
class Edit:
    path: Path
    change: Callable[[str | None], str]  # the file's text (None: absent) -> its new text


@dataclass(slots=True)
class Setup:
    text: str
    edits: list[Edit] = field(default_factory=list)


# --- the clients ---------------------------------------------------------------------------------


def claude_code(gw: Gateway) -> Setup:
    """Claude Code reads its environment from settings.json's `env` block too. The key goes as
    ANTHROPIC_AUTH_TOKEN (a Bearer token), which the interactive CLI takes without asking.
    Its side requests (titles, ...) are cheap with a background_model; without one they are
    turned off."""
    env = {"ANTHROPIC_BASE_URL": gw.url, "ANTHROPIC_AUTH_TOKEN": gw.key}
    if not gw.background:
        env["CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC"] = "1"
    path = Path(os.environ.get("CLAUDE_CONFIG_DIR") or Path.home() / ".claude") / "settings.json"

    def change(text: str | None) -> str:
        settings = _json(path, text)
        settings["env"] = {**_table(settings, "env", path), **env}
        return json.dumps(settings, indent=2, ensure_ascii=False) + "\n"

    text = _exports(env) + [
        "claude",
        "",
        f"# models: Claude Code's own names resolve here: claude-opus-4-8 -> {gw.resolve('claude-opus-4-8')}, "
        f"claude-sonnet-4-6 -> {gw.resolve('claude-sonnet-4-6')}, claude-haiku-4-5 -> {gw.resolve('claude-haiku-4-5')}",
        f"# or write the env block into {path}: switchyard connect claude-code --write",
    ]
    return Setup("\n".join(text), [Edit(path, change)])


def codex(gw: Gateway) -> Setup:
    """Codex: a model provider in config.toml, on the Responses API, the key as a header."""
    path = Path(os.environ.get("CODEX_HOME") or Path.home() / ".codex") / "config.toml"
    provider = {
        "name": "Switchyard", "base_url": f"{gw.url}/v1", "wire_api": "responses",
        "http_headers": {"Authorization": f"Bearer {gw.key}"},
    }
    default_model = "gpt-5-codex"

    def change(text: str | None) -> str:
        try:
            settings = tomllib.loads(text or "")
        except tomllib.TOMLDecodeError as e:
            raise ConnectError(f"{path} is not valid TOML ({e}); fix it, or add the lines `switchyard connect codex` prints") from None
        settings.setdefault("model", default_model)
        settings["model_provider"] = "switchyard"
        settings["model_providers"] = {**_table(settings, "model_providers", path), "switchyard": provider}
        return tomli_w.dumps(settings)

    shown = {"model": default_model, "model_provider": "switchyard", "model_providers": {"switchyard": provider}}
    text = [
        f"# {path}",
        tomli_w.dumps(shown).rstrip(),
        "",
        f"# models: {default_model} -> {gw.resolve(default_model)} here; any name the gateway serves works: {_list(gw.models)}",
        f"# or merge it into {path}: switchyard connect codex --write",
    ]
    return Setup("\n".join(text), [Edit(path, change)])


def gemini_cli(gw: Gateway) -> Setup:
    """Gemini CLI: the API-key auth type and a model in settings.json, the key and base URL in
    its own .env (read in trusted folders; a folder you have not trusted asks first)."""
    folder = Path(os.environ.get("GEMINI_CLI_HOME") or Path.home()) / ".gemini"
    settings_path, env_path = folder / "settings.json", folder / ".env"
    env = {"GEMINI_API_KEY": gw.key, "GOOGLE_GEMINI_BASE_URL": gw.url}
    model = gw.pick("gemini-2.5-pro")

    def settings_change(text: str | None) -> str:
        settings = _json(settings_path, text)
        security = _table(settings, "security", settings_path)
        security["auth"] = {**_table(security, "auth", settings_path), "selectedType": "gemini-api-key"}
        settings["security"] = security
        chosen = _table(settings, "model", settings_path)
        chosen.setdefault("name", model)
        settings["model"] = chosen
        return json.dumps(settings, indent=2, ensure_ascii=False) + "\n"

    def env_change(text: str | None) -> str:
        return _dotenv(text, env)

    text = _exports(env) + [
        f"gemini -m {model}",
        "",
        f"# {settings_path} needs the API-key auth type (Gemini CLI refuses a base URL without it):",
        json.dumps({"security": {"auth": {"selectedType": "gemini-api-key"}}, "model": {"name": model}}),
        f"# models served: {_list(gw.models)}",
        f"# or write both into {folder}: switchyard connect gemini-cli --write",
    ]
    return Setup("\n".join(text), [Edit(settings_path, settings_change), Edit(env_path, env_change)])


def opencode(gw: Gateway) -> Setup:
    """opencode: an OpenAI-compatible provider listing the pool's models."""
    base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    path = base / "opencode" / "opencode.json"
    model = gw.pick("gemini-2.5-pro")
    provider = {
        "npm": "@ai-sdk/openai-compatible",
        "name": "Switchyard",
        "options": {"baseURL": f"{gw.url}/v1", "apiKey": gw.key},
        "models": {name: {"name": name} for name in (gw.models or [model])},
    }

    def change(text: str | None) -> str:
        settings = _json(path, text)
        settings.setdefault("$schema", "https://opencode.ai/config.json")
        settings["provider"] = {**_table(settings, "provider", path), "switchyard": provider}
        settings.setdefault("model", f"switchyard/{model}")
        return json.dumps(settings, indent=2, ensure_ascii=False) + "\n"

    shown = {"$schema": "https://opencode.ai/config.json", "provider": {"switchyard": provider}, "model": f"switchyard/{model}"}
    text = [f"# {path}", json.dumps(shown, indent=2), f"# or merge it into {path}: switchyard connect opencode --write"]
    return Setup("\n".join(text), [Edit(path, change)])


def env(gw: Gateway) -> Setup:
    """The SDKs' and CLIs' environment variables, for `eval "$(switchyard connect env)"`."""
    exports = {
        "OPENAI_BASE_URL": f"{gw.url}/v1", "OPENAI_API_KEY": gw.key,
        "ANTHROPIC_BASE_URL": gw.url, "ANTHROPIC_API_KEY": gw.key,
        "GOOGLE_GEMINI_BASE_URL": gw.url, "GEMINI_API_KEY": gw.key,
    }
    return Setup("\n".join(_exports(exports)))


CLIENTS: dict[str, Callable[[Gateway], Setup]] = {
    "claude-code": claude_code, "codex": codex, "gemini-cli": gemini_cli, "opencode": opencode, "env": env,
}


# --- writing ---------------------------------------------------------------------------------------


def write(setup: Setup, now: float | None = None) -> list[tuple[Path, Path | None]]:
    """Makes the setup's edits: (file, its backup or None when it was new) for each."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    done = []
    for edit in setup.edits:
        try:
            old = edit.path.read_text()
        except FileNotFoundError:
            old = None
        except (OSError, UnicodeDecodeError) as e:
            raise ConnectError(f"cannot read {edit.path}: {e}") from None
        new = edit.change(old)
        backup = None
        if old is not None:
            backup = edit.path.with_name(f"{edit.path.name}.bak-{stamp}")
            shutil.copy2(edit.path, backup)
        write_atomic(edit.path, new.encode())  # mode 0600: it holds a key now
        done.append((edit.path, backup))
    return done


def _json(path: Path, text: str | None) -> dict[str, Any]:
    if not (text or "").strip():
        return {}
    try:
        data = json.loads(text)  # type: ignore[arg-type]
    except ValueError as e:
        raise ConnectError(f"{path} is not plain JSON ({e}); fix it, or add what `switchyard connect` prints by hand") from None
    if not isinstance(data, dict):
        raise ConnectError(f"{path} holds no JSON object")
    return data


def _table(parent: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = parent.get(key, {})
    if not isinstance(value, dict):
        raise ConnectError(f"{path}: {key!r} is not an object; fix it first")
    return dict(value)


def _dotenv(text: str | None, values: dict[str, str]) -> str:
    """A .env file with `values` set: their old lines replaced in place, others kept."""
    lines, seen = [], set()
    for line in (text or "").splitlines():
        name = line.split("=", 1)[0].removeprefix("export ").strip()
        if "=" in line and name in values:
            if name not in seen:
                lines.append(f"{name}={values[name]}")
                seen.add(name)
            continue
        lines.append(line)
    lines += [f"{name}={value}" for name, value in values.items() if name not in seen]
    return "\n".join(lines) + "\n"


def _exports(values: dict[str, str]) -> list[str]:
    return [f"export {name}={shlex.quote(value)}" for name, value in values.items()]


def _list(models: list[str], most: int = 12) -> str:
    if not models:
        return "(none yet: add accounts)"
    return ", ".join(models[:most]) + (f" and {len(models) - most} more" if len(models) > most else "")


# --- the command -------------------------------------------------------------------------------------


def gateway(where: Home, key: str | None, url: str | None) -> Gateway:
    config = config_file.load(where.config_file)
    pool = Pool(config, where, Transport())
    chosen = key or config.proxy.api_key
    if not chosen:
        raise ConnectError("no key to connect with: give --key (from `switchyard keys add`), or set [proxy] api_key")
    return Gateway(
        url=(url or f"http://127.0.0.1:{config.proxy.port}").rstrip("/"), key=chosen, models=pool.servable_models(),
        resolve=pool.resolve, background=bool(config.routing.background_model),
    )


def cmd_connect(args: argparse.Namespace, where: Home) -> int:
    setup = CLIENTS[args.client](gateway(where, args.key, args.url))
    if not args.write:
        print(setup.text)
        return 0
    if not setup.edits:
        raise ConnectError(f"{args.client} has no config file to write: use eval \"$(switchyard connect {args.client})\"")
    for path, backup in write(setup):
        print(f"wrote {path}" + (f" (the old one is kept as {backup.name})" if backup else ""))
    return 0


def add_command(commands: Any) -> None:
    """Registers `switchyard connect` on the CLI's subcommands."""
    p = commands.add_parser(
        "connect", help="a client's configuration for this gateway, printed or written into its config",
        epilog="the key printed or written is --key, else the config's admin api_key",
    )
    p.add_argument("client", choices=list(CLIENTS))
    p.add_argument("--key", help="the key the client uses (make one per client with `switchyard keys add`)")
    p.add_argument("--url", help="the gateway's base URL as the client reaches it (default http://127.0.0.1:PORT)")
    p.add_argument("--write", action="store_true", help="merge it into the client's own config file (a backup is kept)")
    p.set_defaults(handler=cmd_connect)
